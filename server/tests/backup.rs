//! Backup and restore through the real binary: `lianxin backup` takes a snapshot of a busy running
//! server (residents keep sending while it runs), `lianxin restore` loads it into an empty folder,
//! and a server started there serves every message and petition acknowledged before the backup
//! began, exactly once, with its media; new ids never repeat old ones; a damaged backup is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use lianxin_client::Wire;
use lianxin_client::v1::{Category, SubmitPetition};

/// Runs the `lianxin` binary with arguments; returns (success, stdout, stderr).
async fn lianxin(args: Vec<String>) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lianxin"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("runs lianxin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn submit(text: &str, client_msg_id: &str) -> SubmitPetition {
    SubmitPetition {
        category: Category::SituationReport as i32,
        title: text.chars().take(8).collect(),
        text: text.into(),
        client_msg_id: client_msg_id.into(),
        ..Default::default()
    }
}

/// One acknowledged message: petition, sequence number, when the acknowledgement arrived.
type Acked = BTreeMap<String, (u64, u64, Instant)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_servers_backup_restores_everything_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("data")).await;
    let admin = server
        .connect(Wire::Binary)
        .await
        .sign_in("admin", PW)
        .await
        .unwrap()
        .token;

    // A voice clip sent with a message before the backup.
    let resident = server.connect(Wire::Binary).await;
    let resident_token = resident.sign_in("resident-01-1a", PW).await.unwrap().token;
    let clip = lianxin_media::tone_wav(1_500, 16_000);
    let uploaded: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/media", server.addr))
        .bearer_auth(&resident_token)
        .body(clip.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_id = uploaded["id"].as_str().unwrap().to_owned();
    let with_media = resident
        .submit_petition(submit("带语音的诉求", "p-media"))
        .await
        .unwrap();
    resident
        .send_message_with_media(with_media.id, "听录音", "m-media", vec![media_id.clone()])
        .await
        .unwrap();

    // Busy: three residents stream messages, one also raises petitions, while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (n, login) in ["resident-01-1b", "resident-02-1a", "resident-03-2a"]
        .into_iter()
        .enumerate()
    {
        let client = server.sign_in(login, Wire::Binary).await;
        let (stop, total) = (stop.clone(), total.clone());
        senders.push(tokio::spawn(async move {
            let mut acked: Acked = BTreeMap::new();
            let mut petitions: BTreeMap<String, (u64, Instant)> = BTreeMap::new();
            let p = client
                .submit_petition(submit(&format!("第{n}件事"), &format!("p-{n}-0")))
                .await
                .unwrap();
            petitions.insert(format!("p-{n}-0"), (p.id, Instant::now()));
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                if n == 0 && i % 10 == 0 {
                    let cmid = format!("p-{n}-{i}");
                    let q = client
                        .submit_petition(submit(&format!("又一件事{i}"), &cmid))
                        .await
                        .unwrap();
                    petitions.insert(cmid, (q.id, Instant::now()));
                    continue;
                }
                let cmid = format!("m-{n}-{i}");
                let ack = client
                    .send_message(p.id, format!("消息{i}"), cmid.clone())
                    .await
                    .unwrap();
                acked.insert(cmid, (p.id, ack.seq, Instant::now()));
                total.fetch_add(1, Ordering::SeqCst);
            }
            (acked, petitions)
        }));
    }
    while total.load(Ordering::SeqCst) < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let backup_dir = dir.path().join("backup");
    let began = Instant::now();
    let before_backup = total.load(Ordering::SeqCst);
    let (ok, out, err) = lianxin(vec![
        "backup".into(),
        "--url".into(),
        server.url.clone(),
        format!("--token={admin}"),
        "--to".into(),
        s(&backup_dir),
    ])
    .await;
    assert!(ok, "backup failed: {out} {err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["media_files"], 1, "{summary}");
    // Load goes on a little after the backup, then stops.
    let after = total.load(Ordering::SeqCst);
    while total.load(Ordering::SeqCst) < after + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Acked::new();
    let mut petitions = BTreeMap::new();
    for s in senders {
        let (a, p) = s.await.unwrap();
        acked.extend(a);
        petitions.extend(p);
    }
    assert!(before_backup >= 60);
    assert!(
        acked.len() > after,
        "messages were acknowledged after the backup"
    );

    // Not a backup folder, or a non-empty target: refused.
    let (ok, _, err) = lianxin(vec![
        "backup".into(),
        "--url".into(),
        server.url.clone(),
        format!("--token={admin}"),
        "--to".into(),
        s(&backup_dir),
    ])
    .await;
    assert!(!ok && err.contains("not empty"), "{err}");
    let resident_token_refused = lianxin(vec![
        "backup".into(),
        "--url".into(),
        server.url.clone(),
        format!("--token={resident_token}"),
        "--to".into(),
        s(&dir.path().join("not-admin")),
    ])
    .await;
    assert!(
        !resident_token_refused.0 && resident_token_refused.2.contains("403"),
        "{}",
        resident_token_refused.2
    );
    let max_id_before = petitions.values().map(|(id, _)| *id).max().unwrap();
    server.stop().await;

    // Restore into an empty folder.
    let restored = dir.path().join("restored");
    let (ok, out, err) = lianxin(vec![
        "restore".into(),
        "--from".into(),
        s(&backup_dir),
        "--data-dir".into(),
        s(&restored),
    ])
    .await;
    assert!(ok, "restore failed: {out} {err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["media_files"], 1, "{summary}");
    // Never over an existing database.
    let (ok, _, err) = lianxin(vec![
        "restore".into(),
        "--from".into(),
        s(&backup_dir),
        "--data-dir".into(),
        s(&restored),
    ])
    .await;
    assert!(!ok && err.contains("not empty"), "{err}");

    let server = TestServer::start(&restored).await;
    let reader = server.sign_in("township", Wire::Binary).await;
    // Every petition acknowledged before the backup began is there.
    for (cmid, (id, at)) in &petitions {
        let got = reader.get_petition(*id).await;
        if *at < began {
            assert!(got.is_ok(), "petition {cmid} ({id}) lost: {got:?}");
        }
    }
    // Every message acknowledged before it began is there once, under its sequence number.
    let mut by_petition: BTreeMap<u64, Vec<(String, u64, Instant)>> = BTreeMap::new();
    for (cmid, (p, seq, at)) in &acked {
        by_petition
            .entry(*p)
            .or_default()
            .push((cmid.clone(), *seq, *at));
    }
    let mut checked = 0;
    for (p, msgs) in &by_petition {
        let mut entries = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = reader.get_history(*p, after_seq, 200).await.unwrap();
            entries.extend(page.entries);
            if page.next_after_seq == 0 {
                break;
            }
            after_seq = page.next_after_seq;
        }
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "no holes"
        );
        // No commit is in the backup in part: the petition's record matches its timeline.
        let record = reader.get_petition(*p).await.unwrap();
        assert_eq!(record.petition.unwrap().last_seq, seqs.len() as u64);
        for (cmid, seq, at) in msgs {
            let found: Vec<_> = entries
                .iter()
                .filter(|e| &e.client_msg_id == cmid)
                .collect();
            if *at < began {
                assert_eq!(found.len(), 1, "message {cmid} of petition {p}");
                assert_eq!(found[0].seq, *seq);
                checked += 1;
            } else {
                assert!(found.len() <= 1, "message {cmid} stored twice");
            }
        }
    }
    assert!(checked >= 60, "checked {checked}");
    // The media item is served from the restored folder, byte for byte, to its participant.
    let resident = server.connect(Wire::Binary).await;
    let token = resident.sign_in("resident-01-1a", PW).await.unwrap().token;
    let history = resident.get_history(with_media.id, 0, 10).await.unwrap();
    assert!(
        history
            .entries
            .iter()
            .any(|e| e.media.iter().any(|m| m.id == media_id))
    );
    let served = reqwest::Client::new()
        .get(format!("http://{}/media/{media_id}", server.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    let served = served.bytes().await.unwrap();
    assert_eq!(
        lianxin_storage::media::sha_hex(&lianxin_storage::media::sha256(&served)),
        media_id
    );
    // A resend of an acknowledged message is a duplicate, not a second copy.
    let ack = resident
        .send_message(with_media.id, "听录音", "m-media")
        .await
        .unwrap();
    assert!(ack.duplicate);
    // New ids never repeat one handed out before the backup.
    let fresh = resident
        .submit_petition(submit("恢复后的新诉求", "p-after"))
        .await
        .unwrap();
    assert!(fresh.id > max_id_before, "{} > {max_id_before}", fresh.id);
    server.stop().await;

    // A damaged file is caught by the manifest.
    let (ok, _, err) = lianxin(vec![
        "restore".into(),
        "--from".into(),
        s(&backup_dir),
        "--check".into(),
    ])
    .await;
    assert!(ok, "{err}");
    let media_file = std::fs::read_dir(backup_dir.join("media"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let media_file = std::fs::read_dir(media_file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&media_file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&media_file, bytes).unwrap();
    let (ok, _, err) = lianxin(vec![
        "restore".into(),
        "--from".into(),
        s(&backup_dir),
        "--data-dir".into(),
        s(&dir.path().join("again")),
    ])
    .await;
    assert!(!ok && err.contains("damaged"), "{err}");
    assert!(!dir.path().join("again").join("db").exists());
}
