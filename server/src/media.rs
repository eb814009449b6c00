//! Media over HTTP: `POST /media` (upload), `GET /media/{id}` and `GET /media/{id}/thumbnail`
//! (single byte ranges, cache headers, ETag). See docs/media.md.
//!
//! Uploads are checked and processed by `lianxin-media` on a blocking thread, then stored
//! content-addressed by `lianxin-storage`. An item may be fetched by an account that uploaded it
//! or that may view a petition whose message references it; anyone else is told 404, as if it did
//! not exist.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lianxin_actors::county::caller_of;
use lianxin_actors::domain::access;
use lianxin_protocol::v1::{ErrorCode, MediaAttachment, MediaInfo};
use lianxin_storage::media::{Sha, parse_sha};
use lianxin_storage::{AccountRecord, Store};

use crate::http::{HttpState, bearer_account};

/// `Cache-Control` of every media response: content-addressed bytes never change.
pub const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// A refused media request: answered as `{"code": "ERROR_CODE_…", "message": "…"}` with a status.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The protocol's error code.
    pub code: ErrorCode,
    /// For humans.
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let error = lianxin_protocol::v1::Error {
            code: self.code as i32,
            message: self.message,
        };
        let body = serde_json::to_string(&error).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<lianxin_media::MediaError> for Refusal {
    fn from(e: lianxin_media::MediaError) -> Self {
        Refusal {
            status: status_of(e.code()),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<lianxin_storage::StoreError> for Refusal {
    fn from(e: lianxin_storage::StoreError) -> Self {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Unavailable,
            message: e.to_string(),
        }
    }
}

fn refuse(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    Refusal {
        status,
        code,
        message: message.into(),
    }
    .into_response()
}

/// The HTTP status of a media refusal.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MediaTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MediaUnsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::MediaRejected => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        e.to_string(),
    )
}

/// `POST /media` with `Authorization: Bearer <token>`; the body is the file (an image or a voice
/// clip; `Content-Type` is optional and only compared with what the bytes are). Answers the
/// stored item's `MediaAttachment` as proto3 JSON; an identical earlier upload gives the same id.
pub async fn upload(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let account = match bearer_account(&state, &headers) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let config = &state.app.config.media;
    let max = config.max_upload_bytes();
    // The body goes to a file as it arrives: waiting uploads hold disk, not memory.
    let incoming = match receive(&state, body, max).await {
        Ok(file) => file,
        Err(refusal) => return refusal,
    };
    let claimed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limits = config.limits();
    let county = state.app.county.clone();
    let store = county.store().clone();
    let now = county.clock().now_ms();
    let _slot = match state.app.media_slots.clone().acquire_owned().await {
        Ok(slot) => slot,
        Err(e) => return unavailable(e),
    };
    let result = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&incoming.0).map_err(|e| Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: ErrorCode::Unavailable,
            message: format!("reading the upload: {e}"),
        })?;
        drop(incoming);
        store_upload(&store, &bytes, claimed.as_deref(), &limits, account.id, now)
    })
    .await;
    let attachment = match result {
        Ok(Ok(a)) => a,
        Ok(Err(refusal)) => return refusal.into_response(),
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            );
        }
    };
    if let Err(e) = county.store().durable().await {
        return unavailable(e);
    }
    let body = serde_json::to_string(&attachment).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An uploaded body on disk (`<media>/incoming/`), deleted when dropped.
struct Incoming(std::path::PathBuf);

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes a request body to a new file under `<media>/incoming/`, refusing it (and deleting what
/// was written) as soon as it passes `max` bytes.
async fn receive(state: &HttpState, body: Body, max: u64) -> Result<Incoming, Response> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let dir = state.app.county.store().media_dir().join("incoming");
    tokio::fs::create_dir_all(&dir).await.map_err(unavailable)?;
    let name = format!("{:016x}", rand::random::<u64>());
    let incoming = Incoming(dir.join(name));
    let mut file = tokio::fs::File::create(&incoming.0)
        .await
        .map_err(unavailable)?;
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidArgument,
                format!("reading the body: {e}"),
            )
        })?;
        size = size.saturating_add(chunk.len() as u64);
        if size > max {
            return Err(too_large(size, max));
        }
        file.write_all(&chunk).await.map_err(unavailable)?;
    }
    file.flush().await.map_err(unavailable)?;
    Ok(incoming)
}

fn too_large(size: u64, limit: u64) -> Response {
    Refusal::from(lianxin_media::MediaError::TooLarge { size, limit }).into_response()
}

/// Checks, processes and stores one upload (blocking: decoding and file writes).
pub fn store_upload(
    store: &Store,
    bytes: &[u8],
    claimed: Option<&str>,
    limits: &lianxin_media::Limits,
    uploader_id: u64,
    now_ms: i64,
) -> Result<MediaAttachment, Refusal> {
    let processed = lianxin_media::process(bytes, claimed, limits)?;
    let info = MediaInfo {
        media: Some(MediaAttachment {
            kind: processed.format.kind() as i32,
            mime: processed.format.mime().into(),
            width: processed.width,
            height: processed.height,
            duration_ms: processed.duration_ms,
            thumbnail_width: processed.thumbnail_width,
            thumbnail_height: processed.thumbnail_height,
            ..Default::default()
        }),
        uploader_id,
        created_at_ms: now_ms,
        referenced: false,
    };
    let (stored, _) = store.media_put(&processed.bytes, processed.thumbnail.as_deref(), info)?;
    Ok(stored.media.unwrap_or_default())
}

/// Whether an account may fetch an item: it uploaded it, or it may view a petition whose message
/// references it.
pub fn may_fetch(
    store: &Store,
    account: &AccountRecord,
    sha: &Sha,
) -> lianxin_storage::Result<bool> {
    if store.media_is_owner(account.id, sha)? {
        return Ok(true);
    }
    let who = caller_of(account);
    for petition_id in store.media_petitions(sha)? {
        if let Some(p) = store.petition(petition_id)?
            && access::can_view(&p, &who.caller)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `GET /media/{id}`: the item's bytes (images re-encoded without metadata).
pub async fn fetch(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state, &id, &headers, false).await
}

/// `GET /media/{id}/thumbnail`: an image's JPEG thumbnail.
pub async fn fetch_thumbnail(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&state, &id, &headers, true).await
}

fn not_found() -> Response {
    refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such media")
}

async fn serve(state: &HttpState, id: &str, headers: &HeaderMap, thumbnail: bool) -> Response {
    let account = match bearer_account(state, headers) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let store = state.app.county.store();
    let Some(sha) = parse_sha(id) else {
        return not_found();
    };
    let media = match store.media_info(&sha) {
        Ok(Some(info)) => info.media.unwrap_or_default(),
        Ok(None) => return not_found(),
        Err(e) => return unavailable(e),
    };
    match may_fetch(store, &account, &sha) {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(e) => return unavailable(e),
    }
    let (file_sha, mime) = if thumbnail {
        match parse_sha(&media.thumbnail_id) {
            Some(t) => (t, "image/jpeg".to_owned()),
            None => return not_found(),
        }
    } else {
        (sha, media.mime.clone())
    };
    let etag = format!("\"{}\"", lianxin_storage::media::sha_hex(&file_sha));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return (StatusCode::NOT_MODIFIED, common_headers(&etag)).into_response();
    }
    let bytes = match tokio::fs::read(store.media_path(&file_sha)).await {
        Ok(b) => Bytes::from(b),
        Err(e) => return unavailable(e),
    };
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, len));
    let mut h = common_headers(&etag);
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    match range {
        None | Some(RangeAnswer::Whole) => (StatusCode::OK, h, bytes).into_response(),
        Some(RangeAnswer::Part(start, end)) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let part = bytes.slice(start as usize..=end as usize);
            (StatusCode::PARTIAL_CONTENT, h, part).into_response()
        }
        Some(RangeAnswer::Unsatisfiable) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response()
        }
    }
}

fn common_headers(etag: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h
}

/// What a `Range` header asks of a body of some length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Serve the whole body (no usable single byte range: other units, several ranges, bad syntax).
    Whole,
    /// Serve bytes `start..=end`.
    Part(u64, u64),
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range (`a-b`, `a-`, `-n`) against a body length.
pub fn parse_range(value: &str, len: u64) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeAnswer::Whole,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeAnswer::Unsatisfiable,
            Ok(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            Err(_) => return RangeAnswer::Whole,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeAnswer::Whole;
            };
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return RangeAnswer::Whole,
                }
            };
            (start, end)
        }
    };
    if len == 0 || parsed.0 >= len {
        RangeAnswer::Unsatisfiable
    } else {
        RangeAnswer::Part(parsed.0, parsed.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAnswer::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), RangeAnswer::Part(0, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeAnswer::Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAnswer::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeAnswer::Whole);
        assert_eq!(parse_range("bytes=9-3", 100), RangeAnswer::Whole);
    }
}
