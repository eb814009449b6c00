//! Voice clips in the formats phones and browsers record, made by a real encoder (FFmpeg 5.1:
//! `ffmpeg -f lavfi -i sine=frequency=440:duration=1.5 -ac 1 -c:a <codec> tone-1500ms.<ext>`,
//! see fixtures/README.md): each is recognised from its bytes and its duration measured from the
//! audio within 50 ms of the true 1.5 s.
#![allow(clippy::unwrap_used, missing_docs)]

use lianxin_media::{Format, Limits, process};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(name: &str, format: Format) {
    let bytes = fixture(name);
    assert_eq!(lianxin_media::detect(&bytes), Some(format), "{name}");
    let p = process(&bytes, None, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(p.format, format, "{name}");
    assert!(
        (i64::from(p.duration_ms) - 1_500).abs() <= 50,
        "{name}: {} ms",
        p.duration_ms
    );
    assert!(p.thumbnail.is_none(), "{name}: no thumbnail for voice");
    assert_eq!(p.bytes, bytes, "{name}: voice is served as uploaded");
}

#[test]
fn opus_in_ogg_as_browsers_and_phones_record_it() {
    check("tone-1500ms.opus", Format::OggOpus);
}

#[test]
fn opus_in_webm_as_chromium_records_it() {
    check("tone-1500ms.webm", Format::Webm);
}

#[test]
fn aac_in_m4a_as_phones_record_it() {
    check("tone-1500ms.m4a", Format::M4a);
}

#[test]
fn mp3() {
    check("tone-1500ms.mp3", Format::Mp3);
}

#[test]
fn a_truncated_recording_is_refused_or_measured_shorter_never_longer() {
    for (name, format) in [
        ("tone-1500ms.opus", Format::OggOpus),
        ("tone-1500ms.m4a", Format::M4a),
        ("tone-1500ms.mp3", Format::Mp3),
    ] {
        let bytes = fixture(name);
        let half = &bytes[..bytes.len() / 2];
        if let Ok(p) = process(half, None, &Limits::default()) {
            assert_eq!(p.format, format);
            assert!(p.duration_ms <= 1_550, "{name}: {} ms", p.duration_ms);
        }
    }
}
