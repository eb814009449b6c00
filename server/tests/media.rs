//! Media through the real server: uploads over HTTP (a GPS-tagged JPEG drawn in the test, a WAV
//! synthesised in code), what is served (no EXIF, thumbnail size, duration, byte ranges, cache
//! headers), who may fetch it (404 for anyone else), dedup, and typed refusals that leave nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::Cursor;
use std::path::Path;

use common::*;
use lianxin_client::Wire;
use serde_json::Value;

/// A baseline JPEG of `w`×`h` with an EXIF APP1 segment carrying a GPS latitude.
fn gps_jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&img)
        .unwrap();
    // TIFF, little-endian: IFD0 with a GPS IFD pointer; the GPS IFD with latitude ref and value.
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes());
    let entry = |t: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&typ.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&value.to_le_bytes());
    };
    tiff.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut tiff, 0x8825, 4, 1, 26); // GPSInfo → offset 26
    tiff.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(tiff.len(), 26);
    tiff.extend_from_slice(&2u16.to_le_bytes());
    entry(&mut tiff, 0x0001, 2, 2, u32::from_le_bytes(*b"N\0\0\0")); // GPSLatitudeRef "N"
    entry(&mut tiff, 0x0002, 5, 3, 56); // GPSLatitude, 3 rationals at 56
    tiff.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(tiff.len(), 56);
    for (n, d) in [(30u32, 1u32), (15, 1), (0, 1)] {
        tiff.extend_from_slice(&n.to_le_bytes());
        tiff.extend_from_slice(&d.to_le_bytes());
    }
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn has_gps(bytes: &[u8]) -> bool {
    exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .ok()
        .and_then(|e| {
            e.get_field(exif::Tag::GPSLatitude, exif::In::PRIMARY)
                .map(|_| ())
        })
        .is_some()
}

use lianxin_media::tone_wav as wav;

async fn token(server: &TestServer, login: &str) -> String {
    let c = server.connect(Wire::Binary).await;
    c.sign_in(login, PW).await.unwrap().token
}

async fn post(server: &TestServer, token: &str, mime: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/media", server.addr))
        .bearer_auth(token)
        .body(body);
    if let Some(m) = mime {
        req = req.header("content-type", m);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn get(
    server: &TestServer,
    token: Option<&str>,
    path: &str,
    range: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("http://{}{path}", server.addr));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

/// Every file under the media folder (temporary ones included).
fn media_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(subs) = std::fs::read_dir(dir.join("media")) else {
        return out;
    };
    for sub in subs {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_and_voice_clips_are_checked_stripped_and_served_to_the_uploader_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let resident = token(&server, "resident-01-1a").await;
    let stranger = token(&server, "resident-01-1b").await;

    // A photo with GPS in its EXIF.
    let photo = gps_jpeg(800, 600);
    assert!(has_gps(&photo), "the test image carries GPS");
    let (status, image) = post(&server, &resident, Some("image/jpeg"), photo.clone()).await;
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["kind"], "MEDIA_KIND_IMAGE");
    assert_eq!(image["mime"], "image/jpeg");
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(800), Some(600))
    );
    let id = image["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);

    let served = get(&server, Some(&resident), &format!("/media/{id}"), None).await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.headers()["cache-control"],
        "private, max-age=31536000, immutable"
    );
    assert_eq!(served.headers()["etag"], format!("\"{id}\"").as_str());
    assert_eq!(served.headers()["content-type"], "image/jpeg");
    let bytes = served.bytes().await.unwrap();
    assert!(!has_gps(&bytes), "GPS is gone from what is served");
    assert!(
        !bytes.windows(6).any(|w| w == b"Exif\0\0"),
        "no EXIF block at all"
    );
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (800, 600));

    let thumb = get(
        &server,
        Some(&resident),
        &format!("/media/{id}/thumbnail"),
        None,
    )
    .await;
    assert_eq!(thumb.status(), 200);
    let t = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert_eq!((t.width(), t.height()), (320, 240));

    // A voice clip: its duration is measured from the audio.
    let clip = wav(2_500, 16_000);
    let (status, voice) = post(&server, &resident, Some("audio/wav"), clip.clone()).await;
    assert_eq!(status, 200, "{voice}");
    assert_eq!(voice["kind"], "MEDIA_KIND_VOICE");
    let duration = voice["durationMs"].as_i64().unwrap();
    assert!((duration - 2_500).abs() <= 50, "{duration}");
    let vid = voice["id"].as_str().unwrap().to_owned();

    // Byte ranges, for playback.
    let part = get(
        &server,
        Some(&resident),
        &format!("/media/{vid}"),
        Some("bytes=100-199"),
    )
    .await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", clip.len()).as_str()
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &clip[100..200]);
    let tail = get(
        &server,
        Some(&resident),
        &format!("/media/{vid}"),
        Some("bytes=-10"),
    )
    .await;
    assert_eq!(&tail.bytes().await.unwrap()[..], &clip[clip.len() - 10..]);
    let beyond = format!("bytes={}-", clip.len());
    let none = get(
        &server,
        Some(&resident),
        &format!("/media/{vid}"),
        Some(&beyond),
    )
    .await;
    assert_eq!(none.status(), 416);

    // Nobody else may fetch it, and they cannot tell it exists.
    let other = get(&server, Some(&stranger), &format!("/media/{id}"), None).await;
    assert_eq!(other.status(), 404);
    let other = get(
        &server,
        Some(&stranger),
        &format!("/media/{id}/thumbnail"),
        None,
    )
    .await;
    assert_eq!(other.status(), 404);
    assert_eq!(
        get(&server, None, &format!("/media/{id}"), None)
            .await
            .status(),
        401
    );
    let missing = "0".repeat(64);
    let nothing = get(&server, Some(&resident), &format!("/media/{missing}"), None).await;
    assert_eq!(nothing.status(), 404);

    // The same bytes again, by another account: the same id, stored once; both may fetch it.
    let files = media_files(dir.path());
    assert_eq!(files.len(), 3, "photo, thumbnail, clip: {files:?}");
    let (status, again) = post(&server, &stranger, None, clip.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"].as_str(), Some(vid.as_str()));
    assert_eq!(media_files(dir.path()), files);
    let theirs = get(&server, Some(&stranger), &format!("/media/{vid}"), None).await;
    assert_eq!(theirs.status(), 200);

    // Typed refusals, and nothing left behind.
    let (status, err) = post(&server, &resident, None, wav(70_000, 16_000)).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("ERROR_CODE_MEDIA_TOO_LARGE"))
    );
    let (status, err) = post(&server, &resident, Some("image/png"), wav(500, 8_000)).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (422, Some("ERROR_CODE_MEDIA_REJECTED"))
    );
    let mut broken = gps_jpeg(64, 64);
    broken.truncate(300);
    let (status, err) = post(&server, &resident, None, broken).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (422, Some("ERROR_CODE_MEDIA_REJECTED"))
    );
    let (status, err) = post(&server, &resident, None, b"just text".to_vec()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (422, Some("ERROR_CODE_MEDIA_REJECTED"))
    );
    assert_eq!(media_files(dir.path()), files);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_media_that_the_petitions_participants_may_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let rtoken = token(&server, "resident-01-1a").await;
    let wtoken = token(&server, "worker-01-1a").await;
    let stranger = token(&server, "resident-01-1b").await;
    let p = resident
        .submit_petition(complaint(worker_id, "楼道堆满杂物"))
        .await
        .unwrap();
    let mut worker = server.sign_in("worker-01-1a", Wire::Binary).await;
    worker.subscribe(0).await.unwrap();

    let (_, photo) = post(&server, &rtoken, None, gps_jpeg(640, 480)).await;
    let (_, clip) = post(&server, &rtoken, None, wav(1_000, 8_000)).await;
    let pid = photo["id"].as_str().unwrap().to_owned();
    let cid = clip["id"].as_str().unwrap().to_owned();
    // Before any message references it, the worker may not fetch the photo.
    let early = get(&server, Some(&wtoken), &format!("/media/{pid}"), None).await;
    assert_eq!(early.status(), 404);

    // A photo and a voice clip do not go together; someone else's upload is not found.
    let both = resident
        .send_message_with_media(p.id, "", "m-0", vec![pid.clone(), cid.clone()])
        .await;
    assert_eq!(
        code_of(both),
        lianxin_client::v1::ErrorCode::InvalidArgument
    );
    let (_, theirs) = post(&server, &stranger, None, wav(900, 8_000)).await;
    let foreign = resident
        .send_message_with_media(p.id, "", "m-1", vec![theirs["id"].as_str().unwrap().into()])
        .await;
    assert_eq!(code_of(foreign), lianxin_client::v1::ErrorCode::NotFound);

    resident
        .send_message_with_media(p.id, "看这里", "m-2", vec![pid.clone()])
        .await
        .unwrap();
    let e = expect_event(&mut worker, "the photo message", |e| {
        entry_added(e).is_some_and(|a| a.entry.as_ref().is_some_and(|x| !x.media.is_empty()))
    })
    .await;
    let entry = entry_added(&e).unwrap().entry.clone().unwrap();
    let m = &entry.media[0];
    assert_eq!((m.id.as_str(), m.width, m.height), (pid.as_str(), 640, 480));
    assert_eq!((m.thumbnail_width, m.thumbnail_height), (320, 240));
    assert_eq!(m.kind(), lianxin_client::v1::MediaKind::Image);

    // Now the worker (a participant) may fetch it; a stranger still may not.
    let ok = get(&server, Some(&wtoken), &format!("/media/{pid}"), None).await;
    assert_eq!(ok.status(), 200);
    let thumb = get(
        &server,
        Some(&wtoken),
        &format!("/media/{pid}/thumbnail"),
        None,
    )
    .await;
    assert_eq!(thumb.status(), 200);
    let no = get(&server, Some(&stranger), &format!("/media/{pid}"), None).await;
    assert_eq!(no.status(), 404);

    // A voice clip alone, with its duration.
    resident
        .send_message_with_media(p.id, "", "m-3", vec![cid.clone()])
        .await
        .unwrap();
    let e = expect_event(&mut worker, "the voice message", |e| {
        entry_added(e).is_some_and(|a| {
            a.entry
                .as_ref()
                .is_some_and(|x| x.media.first().is_some_and(|m| m.id == cid))
        })
    })
    .await;
    let entry = entry_added(&e).unwrap().entry.clone().unwrap();
    assert!((i64::from(entry.media[0].duration_ms) - 1_000).abs() <= 50);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_resume_after_a_dropped_connection() {
    use lianxin_client::UploadProgress;
    use lianxin_client::v1::{ErrorCode, MediaKind, UploadBegin};
    use sha2::Digest;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let clip = wav(1_000, 8_000);
    let begin = |id: &str, total: u64| UploadBegin {
        upload_id: id.into(),
        kind: MediaKind::Voice as i32,
        total_size: total,
        sha256: String::new(),
    };

    // Two chunks, then the client vanishes without a close frame.
    let first = server.sign_in("resident-01-1a", Wire::Binary).await;
    let s = first
        .upload_begin(begin("clip-1", clip.len() as u64))
        .await
        .unwrap();
    assert_eq!(s.offset, 0);
    for at in [0usize, 4_000] {
        let p = first
            .upload_chunk("clip-1", at as u64, clip[at..at + 4_000].to_vec())
            .await
            .unwrap();
        assert!(matches!(p, UploadProgress::At(ref s) if s.offset == at as u64 + 4_000));
    }
    drop(first);
    let partial = dir.path().join("media/partial");
    let account = server.account_id("resident-01-1a");
    let kept = std::fs::metadata(partial.join(format!("{account}-clip-1"))).unwrap();
    assert_eq!(kept.len(), 8_000, "the acknowledged bytes are on disk");

    // Reconnected: UploadBegin again tells where to continue; a wrong offset keeps nothing.
    let again = server.sign_in("resident-01-1a", Wire::Json).await;
    let s = again
        .upload_begin(begin("clip-1", clip.len() as u64))
        .await
        .unwrap();
    assert_eq!(s.offset, 8_000);
    let wrong = again
        .upload_chunk("clip-1", 7_000, clip[7_000..9_000].to_vec())
        .await;
    assert_eq!(code_of(wrong), ErrorCode::UploadOffset);
    let s = again
        .upload_begin(begin("clip-1", clip.len() as u64))
        .await
        .unwrap();
    assert_eq!(s.offset, 8_000);

    // The rest, through the resuming helper: the same id as the same bytes over HTTP.
    let stored = again
        .upload("clip-1", MediaKind::Voice, &clip, 3_000)
        .await
        .unwrap();
    assert_eq!(stored.kind(), MediaKind::Voice);
    assert!((i64::from(stored.duration_ms) - 1_000).abs() <= 50);
    let rtoken = token(&server, "resident-01-1a").await;
    let (status, http) = post(&server, &rtoken, None, clip.clone()).await;
    assert_eq!(status, 200, "{http}");
    assert_eq!(http["id"].as_str(), Some(stored.id.as_str()));
    assert_eq!(
        std::fs::read_dir(&partial).unwrap().count(),
        0,
        "no partial left"
    );
    let served = get(
        &server,
        Some(&rtoken),
        &format!("/media/{}", stored.id),
        None,
    )
    .await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), clip.as_slice());

    // Bytes of another kind than declared are refused before anything is stored.
    let other = wav(600, 8_000);
    let as_image = UploadBegin {
        kind: MediaKind::Image as i32,
        ..begin("not-a-photo", other.len() as u64)
    };
    again.upload_begin(as_image).await.unwrap();
    let refused = again.upload_chunk("not-a-photo", 0, other.clone()).await;
    assert_eq!(code_of(refused), ErrorCode::MediaRejected);
    let other_sha: [u8; 32] = sha2::Sha256::digest(&other).into();
    assert!(
        server
            .county
            .store()
            .media_info(&other_sha)
            .unwrap()
            .is_none()
    );

    // Oversize is refused up front (nothing is created); a declared sha-256 is checked.
    let max = server_config_max_voice();
    let big = again.upload_begin(begin("big", max + 1)).await;
    assert_eq!(code_of(big), ErrorCode::MediaTooLarge);
    assert!(!partial.join(format!("{account}-big")).exists());
    let mut lying = begin("liar", clip.len() as u64);
    lying.sha256 = "0".repeat(64);
    again.upload_begin(lying).await.unwrap();
    let bad = again.upload_chunk("liar", 0, clip.clone()).await;
    assert_eq!(code_of(bad), ErrorCode::MediaRejected);
    assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_uploaded_in_chunks_over_the_websocket_is_stripped_and_thumbnailed() {
    use lianxin_client::UploadProgress;
    use lianxin_client::v1::{MediaKind, UploadBegin};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let photo = gps_jpeg(1_000, 500);
    assert!(has_gps(&photo));
    let begin = UploadBegin {
        upload_id: "photo-1".into(),
        kind: MediaKind::Image as i32,
        total_size: photo.len() as u64,
        sha256: String::new(),
    };

    // Half of it, then the connection drops; the rest after reconnecting.
    let first = server.sign_in("resident-01-1a", Wire::Binary).await;
    first.upload_begin(begin.clone()).await.unwrap();
    let half = photo.len() / 2;
    let p = first
        .upload_chunk("photo-1", 0, photo[..half].to_vec())
        .await
        .unwrap();
    assert!(matches!(p, UploadProgress::At(ref s) if s.offset == half as u64));
    drop(first);
    let again = server.sign_in("resident-01-1a", Wire::Json).await;
    assert_eq!(again.upload_begin(begin).await.unwrap().offset, half as u64);
    let stored = again
        .upload("photo-1", MediaKind::Image, &photo, 16_000)
        .await
        .unwrap();
    assert_eq!(stored.kind(), MediaKind::Image);
    assert_eq!((stored.width, stored.height), (1_000, 500));
    assert_eq!(
        (stored.thumbnail_width, stored.thumbnail_height),
        (320, 160)
    );

    // The same photo over HTTP is the same item (the re-encoding is deterministic).
    let rtoken = token(&server, "resident-01-1a").await;
    let (status, http) = post(&server, &rtoken, Some("image/jpeg"), photo.clone()).await;
    assert_eq!(status, 200, "{http}");
    assert_eq!(http["id"].as_str(), Some(stored.id.as_str()));

    // What is served carries no GPS; the thumbnail is 320 px on its long side.
    let served = get(
        &server,
        Some(&rtoken),
        &format!("/media/{}", stored.id),
        None,
    )
    .await;
    assert_eq!(served.status(), 200);
    let bytes = served.bytes().await.unwrap();
    assert!(!has_gps(&bytes), "GPS must not be served");
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (1_000, 500));
    let thumb = get(
        &server,
        Some(&rtoken),
        &format!("/media/{}/thumbnail", stored.id),
        None,
    )
    .await;
    assert_eq!(thumb.status(), 200);
    let thumb = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 160));
    let files = media_files(dir.path());
    assert_eq!(files.len(), 2, "photo and thumbnail only: {files:?}");
    server.stop().await;
}

fn server_config_max_voice() -> u64 {
    lianxin_server::config::MediaConfig::default().max_voice_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_no_message_references_are_collected_after_the_ttl() {
    use lianxin_client::v1::{MediaKind, UploadBegin};
    use lianxin_server::collect::{Collected, collect_now};
    use lianxin_server::config::MediaConfig;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let config = MediaConfig::default();
    let worker_id = server.account_id("worker-01-1a");
    let resident = server.sign_in("resident-01-1a", Wire::Binary).await;
    let rtoken = token(&server, "resident-01-1a").await;
    let p = resident
        .submit_petition(complaint(worker_id, "路灯不亮"))
        .await
        .unwrap();
    let (_, unused) = post(&server, &rtoken, None, gps_jpeg(400, 300)).await;
    let (_, used) = post(&server, &rtoken, None, wav(800, 8_000)).await;
    let unused_id = unused["id"].as_str().unwrap().to_owned();
    let used_id = used["id"].as_str().unwrap().to_owned();
    resident
        .send_message_with_media(p.id, "", "m-1", vec![used_id.clone()])
        .await
        .unwrap();
    // A resend of that client_msg_id with other media is a duplicate: its media stays unreferenced.
    let (_, resent) = post(&server, &rtoken, None, wav(700, 8_000)).await;
    let resent_id = resent["id"].as_str().unwrap().to_owned();
    let dup = resident
        .send_message_with_media(p.id, "", "m-1", vec![resent_id.clone()])
        .await
        .unwrap();
    assert!(dup.duplicate);
    let store = server.county.store().clone();
    let resent_sha = lianxin_storage::media::parse_sha(&resent_id).unwrap();
    assert!(store.media_petitions(&resent_sha).unwrap().is_empty());
    assert!(!store.media_info(&resent_sha).unwrap().unwrap().referenced);
    resident
        .upload_begin(UploadBegin {
            upload_id: "left-behind".into(),
            kind: MediaKind::Voice as i32,
            total_size: 1_000,
            sha256: String::new(),
        })
        .await
        .unwrap();
    resident
        .upload_chunk("left-behind", 0, vec![0; 100])
        .await
        .unwrap();
    let file = |id: &str| store.media_path(&lianxin_storage::media::parse_sha(id).unwrap());
    let thumb = unused["thumbnailId"].as_str().unwrap().to_owned();
    assert!(file(&unused_id).exists() && file(&thumb).exists());

    // Within the TTL nothing goes.
    server
        .clock
        .advance(std::time::Duration::from_secs(23 * 3_600));
    assert_eq!(
        collect_now(&server.county, &config).unwrap(),
        Collected::default()
    );
    // Past it, the unreferenced photo (and its thumbnail), the clip of the duplicate and the
    // abandoned partial go.
    server
        .clock
        .advance(std::time::Duration::from_secs(2 * 3_600));
    assert_eq!(
        collect_now(&server.county, &config).unwrap(),
        Collected {
            media: 2,
            partials: 1
        }
    );
    let gone = get(&server, Some(&rtoken), &format!("/media/{unused_id}"), None).await;
    assert_eq!(gone.status(), 404);
    assert!(!file(&unused_id).exists() && !file(&thumb).exists());
    let kept = get(&server, Some(&rtoken), &format!("/media/{used_id}"), None).await;
    assert_eq!(kept.status(), 200);
    assert!(file(&used_id).exists());
    let partial = dir.path().join("media/partial");
    assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 0);
    let resumed = resident
        .upload_chunk("left-behind", 100, vec![0; 100])
        .await;
    assert_eq!(code_of(resumed), lianxin_client::v1::ErrorCode::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_upload_survives_a_restart() {
    use lianxin_client::v1::{ErrorCode, MediaKind, UploadBegin};

    let dir = tempfile::tempdir().unwrap();
    let clip = wav(500, 8_000);
    let begin = UploadBegin {
        upload_id: "across-restart".into(),
        kind: MediaKind::Voice as i32,
        total_size: clip.len() as u64,
        sha256: String::new(),
    };
    let server = TestServer::start(dir.path()).await;
    let c = server.sign_in("resident-01-1a", Wire::Binary).await;
    c.upload_begin(begin.clone()).await.unwrap();
    c.upload_chunk("across-restart", 0, clip[..3_000].to_vec())
        .await
        .unwrap();
    // Past the declared size: refused, nothing kept.
    let past = c
        .upload_chunk("across-restart", 3_000, clip[2_000..].to_vec())
        .await;
    assert_eq!(code_of(past), ErrorCode::InvalidArgument);
    drop(c);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let c = server.sign_in("resident-01-1a", Wire::Binary).await;
    assert_eq!(c.upload_begin(begin).await.unwrap().offset, 3_000);
    let stored = c
        .upload("across-restart", MediaKind::Voice, &clip, 4_096)
        .await
        .unwrap();
    assert_eq!(stored.size, clip.len() as u64);
    server.stop().await;
}
