//! Chunked, resumable media uploads over the WebSocket (`UploadBegin`, `UploadChunk`); see
//! docs/media.md.
//!
//! A partial upload is a file `<media dir>/partial/<account>-<upload_id>` holding the bytes
//! received so far (its length is the offset to continue from) next to
//! `<account>-<upload_id>.json`, what `UploadBegin` declared. Both survive a dropped connection
//! and a restart; abandoned ones are removed by [`collect_partials`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lianxin_media::{Limits, MediaError};
use lianxin_protocol::v1::{ErrorCode, MediaKind, UploadBegin, UploadChunk, UploadStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest client-chosen upload id.
pub const MAX_UPLOAD_ID: usize = 64;

/// Serialises partial-file changes, so two connections of one account cannot interleave chunks.
static FILES: Mutex<()> = Mutex::new(());

/// A refused upload request.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The upload id is empty, too long or has characters other than `A-Za-z0-9-_`.
    #[error("upload_id must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    BadId,
    /// The declared kind is neither image nor voice.
    #[error("kind must be MEDIA_KIND_IMAGE or MEDIA_KIND_VOICE")]
    BadKind,
    /// `total_size` is zero.
    #[error("total_size must be at least 1")]
    Empty,
    /// `sha256` is neither empty nor 64 lower-case hex digits.
    #[error("sha256 must be empty or 64 lower-case hex digits")]
    BadSha,
    /// No upload of this id is under way for the account.
    #[error("no upload {0:?} is under way: send UploadBegin")]
    Unknown(String),
    /// An upload of this id is under way with another kind, size or sha-256.
    #[error("upload {0:?} is under way with another kind, total_size or sha256")]
    Conflict(String),
    /// The chunk does not start at the upload's current offset; nothing of it was kept.
    #[error(
        "upload {id:?} continues at offset {current}, not {asked}; nothing of this chunk was kept"
    )]
    Offset {
        /// The upload id.
        id: String,
        /// The offset the upload continues from.
        current: u64,
        /// The chunk's offset.
        asked: u64,
    },
    /// The chunk would take the upload past its declared size.
    #[error("the chunk ends at {end}, past total_size {total}; nothing of it was kept")]
    PastEnd {
        /// Where the chunk would end.
        end: u64,
        /// The declared size.
        total: u64,
    },
    /// The finished bytes do not have the declared sha-256.
    #[error("the uploaded bytes have sha-256 {got}, not the declared {declared}")]
    ShaMismatch {
        /// The declared hash.
        declared: String,
        /// The hash of what arrived.
        got: String,
    },
    /// The media checks refused the bytes (or the declared size).
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Reading or writing the partial file failed.
    #[error("partial upload file: {0}")]
    Io(#[from] std::io::Error),
}

impl UploadError {
    /// The protocol error code of the refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            UploadError::BadId
            | UploadError::BadKind
            | UploadError::Empty
            | UploadError::BadSha
            | UploadError::PastEnd { .. } => ErrorCode::InvalidArgument,
            UploadError::Unknown(_) => ErrorCode::NotFound,
            UploadError::Conflict(_) => ErrorCode::Conflict,
            UploadError::Offset { .. } => ErrorCode::UploadOffset,
            UploadError::ShaMismatch { .. } => ErrorCode::MediaRejected,
            UploadError::Media(e) => e.code(),
            UploadError::Io(_) => ErrorCode::Unavailable,
        }
    }
}

/// What `UploadBegin` declared, kept next to the partial bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declared {
    /// `MediaKind` as its number.
    pub kind: i32,
    /// The whole file's size.
    pub total_size: u64,
    /// The expected sha-256 (hex), or empty.
    pub sha256: String,
    /// When the upload began (county clock).
    pub started_at_ms: i64,
}

/// A finished upload: its bytes and what was declared.
#[derive(Debug)]
pub struct Finished {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// What `UploadBegin` declared.
    pub declared: Declared,
}

/// What a chunk led to.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// More bytes are expected.
    Status(UploadStatus),
    /// The upload is complete: process and store it, then call [`remove`].
    Finished(Finished),
}

/// The folder of partial uploads under the media folder.
pub fn partial_dir(media_dir: &Path) -> PathBuf {
    media_dir.join("partial")
}

fn check_id(id: &str) -> Result<(), UploadError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_UPLOAD_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(UploadError::BadId) }
}

fn paths(dir: &Path, account_id: u64, id: &str) -> (PathBuf, PathBuf) {
    let name = format!("{account_id}-{id}");
    (dir.join(&name), dir.join(format!("{name}.json")))
}

fn read_declared(meta: &Path) -> Result<Option<Declared>, UploadError> {
    match std::fs::read(meta) {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn file_len(path: &Path) -> Result<u64, UploadError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Starts an upload, or answers the offset of the same account's upload of that id.
pub fn begin(
    dir: &Path,
    account_id: u64,
    req: &UploadBegin,
    limits: &Limits,
    now_ms: i64,
) -> Result<UploadStatus, UploadError> {
    check_id(&req.upload_id)?;
    let limit = match MediaKind::try_from(req.kind) {
        Ok(MediaKind::Image) => limits.max_image_bytes,
        Ok(MediaKind::Voice) => limits.max_voice_bytes,
        _ => return Err(UploadError::BadKind),
    };
    if req.total_size == 0 {
        return Err(UploadError::Empty);
    }
    if req.total_size > limit {
        return Err(MediaError::TooLarge {
            size: req.total_size,
            limit,
        }
        .into());
    }
    let sha_ok = req.sha256.is_empty()
        || (req.sha256.len() == 64
            && req
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if !sha_ok {
        return Err(UploadError::BadSha);
    }
    let _guard = FILES.lock().unwrap_or_else(|p| p.into_inner());
    let (data, meta) = paths(dir, account_id, &req.upload_id);
    if let Some(d) = read_declared(&meta)? {
        if d.kind != req.kind || d.total_size != req.total_size || d.sha256 != req.sha256 {
            return Err(UploadError::Conflict(req.upload_id.clone()));
        }
        return Ok(UploadStatus {
            upload_id: req.upload_id.clone(),
            offset: file_len(&data)?,
            total_size: d.total_size,
        });
    }
    std::fs::create_dir_all(dir)?;
    let declared = Declared {
        kind: req.kind,
        total_size: req.total_size,
        sha256: req.sha256.clone(),
        started_at_ms: now_ms,
    };
    std::fs::File::create(&data)?.sync_all()?;
    let json = serde_json::to_vec(&declared).map_err(std::io::Error::other)?;
    let tmp = meta.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &meta)?;
    Ok(UploadStatus {
        upload_id: req.upload_id.clone(),
        offset: 0,
        total_size: req.total_size,
    })
}

/// Appends a chunk at the upload's current offset; when the upload is complete, returns its bytes.
pub fn chunk(dir: &Path, account_id: u64, req: &UploadChunk) -> Result<ChunkOutcome, UploadError> {
    check_id(&req.upload_id)?;
    let _guard = FILES.lock().unwrap_or_else(|p| p.into_inner());
    let (data, meta) = paths(dir, account_id, &req.upload_id);
    let Some(declared) = read_declared(&meta)? else {
        return Err(UploadError::Unknown(req.upload_id.clone()));
    };
    let current = file_len(&data)?;
    if req.offset != current {
        return Err(UploadError::Offset {
            id: req.upload_id.clone(),
            current,
            asked: req.offset,
        });
    }
    let end = current.saturating_add(req.data.len() as u64);
    if end > declared.total_size {
        return Err(UploadError::PastEnd {
            end,
            total: declared.total_size,
        });
    }
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&data)?;
        f.write_all(&req.data)?;
        f.sync_data()?;
    }
    if end < declared.total_size {
        return Ok(ChunkOutcome::Status(UploadStatus {
            upload_id: req.upload_id.clone(),
            offset: end,
            total_size: declared.total_size,
        }));
    }
    let bytes = std::fs::read(&data)?;
    if !declared.sha256.is_empty() {
        let got = lianxin_storage::media::sha_hex(&Sha256::digest(&bytes).into());
        if got != declared.sha256 {
            drop(_guard);
            remove(dir, account_id, &req.upload_id);
            return Err(UploadError::ShaMismatch {
                declared: declared.sha256,
                got,
            });
        }
    }
    Ok(ChunkOutcome::Finished(Finished { bytes, declared }))
}

/// Deletes an upload's partial files (quietly: they may be gone already).
pub fn remove(dir: &Path, account_id: u64, upload_id: &str) {
    let _guard = FILES.lock().unwrap_or_else(|p| p.into_inner());
    let (data, meta) = paths(dir, account_id, upload_id);
    let _ = std::fs::remove_file(meta);
    let _ = std::fs::remove_file(data);
}

/// Deletes the partial uploads begun before `before_ms` (and stray files of unreadable ones);
/// returns how many uploads went.
pub fn collect_partials(dir: &Path, before_ms: i64) -> Result<usize, UploadError> {
    let _guard = FILES.lock().unwrap_or_else(|p| p.into_inner());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let stale = read_declared(&path)?.is_none_or(|d| d.started_at_ms < before_ms);
        if stale {
            let _ = std::fs::remove_file(path.with_extension(""));
            let _ = std::fs::remove_file(&path);
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("a-b_C9").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("../x").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
