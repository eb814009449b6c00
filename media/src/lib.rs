//! Checks and processing of uploaded media, as pure functions of the bytes (no I/O, no storage).
//!
//! A crate of its own rather than a module of the server: the image and audio codecs it pulls in
//! (`image`, `symphonia`) are large, and kept here they compile in parallel with the rest and stay
//! out of the crates that do not need them; and being pure it is tested without a server.
//!
//! - [`detect`]: the type, from magic bytes only (the client's word is only compared with it).
//! - [`process`]: limits, then images are decoded (JPEG, PNG, WebP), turned upright, re-encoded
//!   from their pixels (which drops EXIF, GPS included, and every other metadata block) and given a
//!   JPEG thumbnail of [`THUMBNAIL_EDGE`] px on the long side; voice clips get their duration
//!   measured from the audio stream (symphonia for WAV, MP3, AAC/M4A, Ogg; container timestamps
//!   for Ogg Opus and WebM, which symphonia demuxes but cannot decode; frame headers for AMR-NB).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat};
use lianxin_protocol::v1::{ErrorCode, MediaKind};

/// Long side of a thumbnail, in pixels.
pub const THUMBNAIL_EDGE: u32 = 320;
/// Largest width or height of an image accepted (guards against decompression bombs).
pub const MAX_IMAGE_EDGE: u32 = 16_384;

/// A format recognised from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG image.
    Jpeg,
    /// PNG image.
    Png,
    /// WebP image.
    Webp,
    /// HEIC/HEIF or AVIF image (recognised, not accepted: no decoder crate serves it).
    Heic,
    /// WAV (RIFF/WAVE) audio.
    Wav,
    /// MP3 audio.
    Mp3,
    /// AAC in ADTS frames.
    Aac,
    /// AAC (or ALAC) in an MP4/M4A container.
    M4a,
    /// Vorbis in Ogg.
    OggVorbis,
    /// Opus in Ogg.
    OggOpus,
    /// WebM/Matroska (Opus or Vorbis audio).
    Webm,
    /// AMR narrow-band (`#!AMR` storage format).
    AmrNb,
}

impl Format {
    /// Image or voice.
    pub fn kind(self) -> MediaKind {
        match self {
            Format::Jpeg | Format::Png | Format::Webp | Format::Heic => MediaKind::Image,
            _ => MediaKind::Voice,
        }
    }

    /// The MIME type served for it.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Heic => "image/heic",
            Format::Wav => "audio/wav",
            Format::Mp3 => "audio/mpeg",
            Format::Aac => "audio/aac",
            Format::M4a => "audio/mp4",
            Format::OggVorbis | Format::OggOpus => "audio/ogg",
            Format::Webm => "audio/webm",
            Format::AmrNb => "audio/amr",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Mp3 => "mp3",
            Format::Aac => "aac",
            Format::M4a => "m4a",
            Format::OggVorbis | Format::OggOpus => "ogg",
            Format::Webm => "webm",
            _ => "",
        }
    }
}

/// Recognises a format from the first bytes; `None` if it is none of the accepted ones.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    let at = |i: usize, magic: &[u8]| bytes.get(i..i + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Some(Format::Webp);
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return Some(Format::Wav);
    }
    if at(4, b"ftyp") {
        let brand = bytes.get(8..12)?;
        return match brand {
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1"
            | b"avif" | b"avis" => Some(Format::Heic),
            _ => Some(Format::M4a),
        };
    }
    if at(0, b"OggS") {
        // The first page carries the codec's identification header.
        let window = bytes.get(..bytes.len().min(128))?;
        if window.windows(8).any(|w| w == b"OpusHead") {
            return Some(Format::OggOpus);
        }
        if window.windows(7).any(|w| w == b"\x01vorbis") {
            return Some(Format::OggVorbis);
        }
        return None;
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Format::Webm);
    }
    if at(0, b"#!AMR\n") {
        return Some(Format::AmrNb);
    }
    if at(0, b"ID3") {
        return Some(Format::Mp3);
    }
    match (bytes.first(), bytes.get(1)) {
        // ADTS: sync word 0xFFF, layer 00.
        (Some(0xFF), Some(b)) if b & 0xF6 == 0xF0 => Some(Format::Aac),
        // MPEG audio frame: sync 0xFFE, layer not reserved (III, II or I).
        (Some(0xFF), Some(b)) if b & 0xE0 == 0xE0 && b & 0x06 != 0 => Some(Format::Mp3),
        _ => None,
    }
}

/// Size and duration limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest image upload, in bytes.
    pub max_image_bytes: u64,
    /// Largest voice clip, in bytes.
    pub max_voice_bytes: u64,
    /// Longest voice clip, in milliseconds.
    pub max_voice_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_bytes: 10 * 1024 * 1024,
            max_voice_bytes: 2 * 1024 * 1024,
            max_voice_ms: 120_000,
        }
    }
}

/// Why an upload is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// The bytes are of no accepted format.
    #[error("not a recognised image or voice format")]
    Unrecognised,
    /// The client said one kind, the bytes are the other.
    #[error("the upload was declared {claimed} but its bytes are {found}")]
    Mismatch {
        /// What the client declared.
        claimed: String,
        /// What the bytes are.
        found: &'static str,
    },
    /// Larger than the limit of its kind.
    #[error("{size} bytes is more than the {limit} allowed")]
    TooLarge {
        /// Size of the upload.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A voice clip longer than the limit.
    #[error("the clip lasts {duration_ms} ms, more than the {limit_ms} ms allowed")]
    TooLong {
        /// Its duration.
        duration_ms: u64,
        /// The limit.
        limit_ms: u32,
    },
    /// The header says an accepted format but the content cannot be decoded.
    #[error("cannot decode the {format}: {reason}")]
    Undecodable {
        /// The detected format.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A recognised format that is not accepted.
    #[error("{0} is not accepted")]
    Unsupported(&'static str),
}

impl MediaError {
    /// The protocol's error code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            MediaError::TooLarge { .. } | MediaError::TooLong { .. } => ErrorCode::MediaTooLarge,
            MediaError::Unsupported(_) => ErrorCode::MediaUnsupported,
            _ => ErrorCode::MediaRejected,
        }
    }
}

/// A checked, processed upload, ready to store.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The detected format.
    pub format: Format,
    /// The bytes to store and serve (images: re-encoded, without metadata; voice: as uploaded).
    pub bytes: Vec<u8>,
    /// Images: the JPEG thumbnail.
    pub thumbnail: Option<Vec<u8>>,
    /// Images: width and height of the served image.
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Images: width and height of the thumbnail.
    pub thumbnail_width: u32,
    /// See `thumbnail_width`.
    pub thumbnail_height: u32,
    /// Voice: duration in milliseconds.
    pub duration_ms: u32,
}

/// The kind a declared MIME type names (`None`: no claim, e.g. `application/octet-stream`).
fn claimed_kind(claimed: &str) -> Option<MediaKind> {
    let c = claimed.trim().to_ascii_lowercase();
    if c.starts_with("image/") {
        Some(MediaKind::Image)
    } else if c.starts_with("audio/") {
        Some(MediaKind::Voice)
    } else {
        None
    }
}

/// Checks an upload against its declared type (if any) and the limits, and processes it.
pub fn process(
    bytes: &[u8],
    claimed: Option<&str>,
    limits: &Limits,
) -> Result<Processed, MediaError> {
    let format = detect(bytes).ok_or(MediaError::Unrecognised)?;
    if let Some(claimed) = claimed
        && let Some(kind) = claimed_kind(claimed)
        && kind != format.kind()
    {
        return Err(MediaError::Mismatch {
            claimed: claimed.to_owned(),
            found: format.mime(),
        });
    }
    let limit = match format.kind() {
        MediaKind::Image => limits.max_image_bytes,
        _ => limits.max_voice_bytes,
    };
    let size = bytes.len() as u64;
    if size > limit {
        return Err(MediaError::TooLarge { size, limit });
    }
    match format {
        Format::Heic => Err(MediaError::Unsupported("HEIC/HEIF")),
        Format::Jpeg | Format::Png | Format::Webp => process_image(bytes, format),
        _ => {
            let duration_ms = voice_duration_ms(bytes, format)?;
            if duration_ms > u64::from(limits.max_voice_ms) {
                return Err(MediaError::TooLong {
                    duration_ms,
                    limit_ms: limits.max_voice_ms,
                });
            }
            Ok(Processed {
                format,
                bytes: bytes.to_vec(),
                thumbnail: None,
                width: 0,
                height: 0,
                thumbnail_width: 0,
                thumbnail_height: 0,
                duration_ms: u32::try_from(duration_ms).unwrap_or(u32::MAX),
            })
        }
    }
}

fn undecodable(format: Format) -> impl Fn(image::ImageError) -> MediaError {
    move |e| MediaError::Undecodable {
        format: format.mime(),
        reason: e.to_string(),
    }
}

fn process_image(bytes: &[u8], format: Format) -> Result<Processed, MediaError> {
    let (image_format, err) = match format {
        Format::Jpeg => (ImageFormat::Jpeg, undecodable(format)),
        Format::Png => (ImageFormat::Png, undecodable(format)),
        _ => (ImageFormat::WebP, undecodable(format)),
    };
    let mut reader = image::ImageReader::new(Cursor::new(bytes));
    reader.set_format(image_format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_EDGE);
    limits.max_image_height = Some(MAX_IMAGE_EDGE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(&err)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(&err)?;
    // The served image loses its EXIF, orientation included: turn the pixels upright first.
    img.apply_orientation(orientation);
    let mut out = Vec::new();
    match format {
        Format::Jpeg => {
            let rgb = img.to_rgb8();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&rgb)
                .map_err(&err)?;
        }
        Format::Png => {
            img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .map_err(&err)?;
        }
        _ => {
            // image's WebP encoder is lossless and takes 8-bit RGB(A).
            DynamicImage::ImageRgba8(img.to_rgba8())
                .write_to(&mut Cursor::new(&mut out), ImageFormat::WebP)
                .map_err(&err)?;
        }
    }
    let thumb = if img.width().max(img.height()) > THUMBNAIL_EDGE {
        img.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE)
    } else {
        img.clone()
    };
    let mut thumb_bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut thumb_bytes, 80)
        .encode_image(&thumb.to_rgb8())
        .map_err(&err)?;
    Ok(Processed {
        format,
        bytes: out,
        thumbnail: Some(thumb_bytes),
        width: img.width(),
        height: img.height(),
        thumbnail_width: thumb.width(),
        thumbnail_height: thumb.height(),
        duration_ms: 0,
    })
}

/// Frame payload sizes of AMR-NB by frame type (0-7: speech modes, 8: SID, 15: no data).
const AMR_NB_FRAME_BYTES: [usize; 16] = [12, 13, 15, 17, 19, 20, 26, 31, 5, 0, 0, 0, 0, 0, 0, 0];

/// Duration of an AMR-NB file: 20 ms per frame, frames walked by their headers.
fn amr_nb_duration_ms(bytes: &[u8]) -> Result<u64, MediaError> {
    let bad = |reason: &str| MediaError::Undecodable {
        format: Format::AmrNb.mime(),
        reason: reason.to_owned(),
    };
    let mut pos = 6;
    let mut frames = 0u64;
    while pos < bytes.len() {
        let header = bytes[pos];
        let frame_type = usize::from((header >> 3) & 0x0F);
        if (9..15).contains(&frame_type) {
            return Err(bad("reserved frame type"));
        }
        pos += 1 + AMR_NB_FRAME_BYTES[frame_type];
        frames += 1;
    }
    if pos > bytes.len() {
        return Err(bad("truncated frame"));
    }
    if frames == 0 {
        return Err(bad("no audio frames"));
    }
    Ok(frames * 20)
}

/// Measures a voice clip's duration from its audio stream.
fn voice_duration_ms(bytes: &[u8], format: Format) -> Result<u64, MediaError> {
    use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
    use symphonia::core::errors::Error as SymError;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    if format == Format::AmrNb {
        return amr_nb_duration_ms(bytes);
    }
    let bad = |reason: String| MediaError::Undecodable {
        format: format.mime(),
        reason,
    };
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(format.extension());
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            source,
            // Gapless: encoder delay and padding (LAME header, MP4 edit lists) are not audio.
            &FormatOptions {
                enable_gapless: true,
                ..FormatOptions::default()
            },
            &MetadataOptions::default(),
        )
        .map_err(|e| match format {
            Format::Webm => MediaError::Unsupported("this WebM stream"),
            _ => bad(e.to_string()),
        })?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL && t.codec_params.sample_rate.is_some())
        .ok_or_else(|| bad("no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    // Opus (in Ogg or WebM) has no decoder in symphonia: its duration comes from the container's
    // timestamps alone. Every other codec must decode.
    let mut decoder =
        match symphonia::default::get_codecs().make(&params, &DecoderOptions::default()) {
            Ok(d) => Some(d),
            Err(_) if matches!(format, Format::OggOpus | Format::Webm) => None,
            Err(e) => return Err(bad(e.to_string())),
        };
    let mut end: u64 = 0;
    let mut packets = 0u64;
    let mut decoded = 0u32;
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(bad(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        packets += 1;
        end = end.max(packet.ts().saturating_add(packet.dur()));
        if let Some(d) = decoder.as_mut()
            && decoded < 8
        {
            match d.decode(&packet) {
                Ok(_) => decoded += 1,
                // A damaged packet is skipped by players; too many of them is not audio.
                Err(SymError::DecodeError(_)) if packets > 16 => {}
                Err(SymError::DecodeError(_)) => {}
                Err(e) => return Err(bad(e.to_string())),
            }
        }
    }
    if packets == 0 || (decoder.is_some() && decoded == 0) {
        return Err(bad("no decodable audio".into()));
    }
    let frames = params.n_frames.filter(|n| *n > 0).unwrap_or(end);
    let ms = if let Some(tb) = params.time_base {
        let t = tb.calc_time(frames);
        t.seconds * 1000 + (t.frac * 1000.0).round() as u64
    } else if let Some(rate) = params.sample_rate.filter(|r| *r > 0) {
        frames * 1000 / u64::from(rate)
    } else {
        return Err(bad("no time base".into()));
    };
    if ms == 0 {
        return Err(bad("empty clip".into()));
    }
    Ok(ms)
}

/// A mono 16-bit PCM WAV of `ms` milliseconds of a 440 Hz tone at `rate` Hz (for tests and demos).
pub fn tone_wav(ms: u32, rate: u32) -> Vec<u8> {
    let n = u32::try_from(u64::from(rate) * u64::from(ms) / 1000).unwrap_or(u32::MAX / 4);
    let data_len = n * 2;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        let s = (f64::from(i) * 440.0 * std::f64::consts::TAU / f64::from(rate)).sin();
        v.extend_from_slice(&((s * 12000.0) as i16).to_le_bytes());
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wav(ms: u32, rate: u32) -> Vec<u8> {
        tone_wav(ms, rate)
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 99]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn formats_are_told_by_their_bytes() {
        assert_eq!(detect(&png(2, 2)), Some(Format::Png));
        assert_eq!(detect(&wav(10, 8000)), Some(Format::Wav));
        assert_eq!(detect(b"#!AMR\n\x3c"), Some(Format::AmrNb));
        assert_eq!(detect(b"ID3\x04"), Some(Format::Mp3));
        assert_eq!(detect(&[0xFF, 0xFB, 0x90]), Some(Format::Mp3));
        assert_eq!(detect(&[0xFF, 0xF1, 0x50]), Some(Format::Aac));
        assert_eq!(detect(b"\0\0\0\x18ftypheic"), Some(Format::Heic));
        assert_eq!(detect(b"\0\0\0\x18ftypM4A "), Some(Format::M4a));
        assert_eq!(detect(b"hello"), None);
    }

    #[test]
    fn wav_duration_is_measured() {
        let p = process(&wav(1500, 16000), Some("audio/wav"), &Limits::default()).unwrap();
        assert_eq!(p.format, Format::Wav);
        assert!(
            (i64::from(p.duration_ms) - 1500).abs() <= 5,
            "{}",
            p.duration_ms
        );
    }

    #[test]
    fn images_get_a_thumbnail_of_320_on_the_long_side() {
        let p = process(&png(800, 400), None, &Limits::default()).unwrap();
        assert_eq!((p.width, p.height), (800, 400));
        assert_eq!((p.thumbnail_width, p.thumbnail_height), (320, 160));
        let t = image::load_from_memory(p.thumbnail.as_ref().unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (320, 160));
    }

    #[test]
    fn refusals_are_typed() {
        let limits = Limits {
            max_voice_ms: 1000,
            max_voice_bytes: 100_000,
            ..Limits::default()
        };
        assert_eq!(
            process(&wav(10, 8000), Some("image/jpeg"), &limits)
                .unwrap_err()
                .code(),
            ErrorCode::MediaRejected
        );
        assert!(matches!(
            process(&wav(1500, 8000), None, &limits),
            Err(MediaError::TooLong { .. })
        ));
        assert!(matches!(
            process(&wav(5000, 16000), None, &limits),
            Err(MediaError::TooLarge { .. })
        ));
        let mut broken = png(10, 10);
        broken.truncate(40);
        assert!(matches!(
            process(&broken, None, &limits),
            Err(MediaError::Undecodable { .. })
        ));
        assert_eq!(
            process(b"\0\0\0\x18ftypheic\0\0\0\0", None, &limits)
                .unwrap_err()
                .code(),
            ErrorCode::MediaUnsupported
        );
        assert_eq!(
            process(b"text", None, &limits).unwrap_err(),
            MediaError::Unrecognised
        );
    }

    #[test]
    fn amr_frames_are_counted() {
        let mut amr = b"#!AMR\n".to_vec();
        for _ in 0..50 {
            amr.push(7 << 3 | 0x04);
            amr.extend_from_slice(&[0u8; 31]);
        }
        let p = process(&amr, None, &Limits::default()).unwrap();
        assert_eq!(p.duration_ms, 1000);
    }
}
