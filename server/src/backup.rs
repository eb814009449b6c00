//! Backups of a running server and their restore (`docs/durability.md`, "Backup and restore").
//!
//! sled admits one process per database, so the running server makes the snapshot itself:
//! `POST /admin/backup` (an administrator's session token in `Authorization: Bearer`) dumps every
//! tree as it was at one point between two group commits of the storage writer, without holding
//! commits up ([`Store::dump_consistent`]), into a staging file beside the database, then streams
//! the dump,
//! every media file the dumped metadata refers to (checked against its content address on the
//! way) and a manifest (schema version, tree counts, size and sha-256 of every file). `lianxin
//! backup --to DIR` unpacks the stream into an empty folder and checks it against the manifest;
//! `lianxin restore --from DIR --data-dir D` checks the folder again and loads it into an empty
//! data folder.
//!
//! Stream format: [`STREAM_MAGIC`], then per file `b'F'`, the path's length (u16, big-endian),
//! the path, the size (u64, big-endian) and the bytes; `manifest.json` is the last file; `b'.'`
//! ends the stream.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lianxin_protocol::v1::Role;
use lianxin_storage::media::{media_file, sha_hex};
use lianxin_storage::{Store, StoreConfig, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::{HttpState, bearer_account};

/// The first bytes of a backup stream.
pub const STREAM_MAGIC: &[u8; 8] = b"LXBACK1\n";

/// The name of the manifest in a backup folder.
pub const MANIFEST: &str = "manifest.json";

/// The name of the database dump in a backup folder.
pub const DUMP_FILE: &str = "db.lxdump";

/// The `format` field of every manifest.
pub const FORMAT: &str = "lianxin-backup";

/// The manifest layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest manifest a client accepts.
const MAX_MANIFEST: u64 = 64 * 1024 * 1024;

/// Bytes per chunk of the stream.
const CHUNK: usize = 256 * 1024;

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Storage refused (dump, restore or opening the restored database).
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The server answered with an error or the connection failed.
    #[error("server: {0}")]
    Server(String),
    /// The backup does not match its manifest, or the stream or a file is damaged.
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    /// The target folder is not empty.
    #[error("{0} is not empty; a backup or restore goes into an empty folder")]
    NotEmpty(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// One tree of the dump and its entry count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTree {
    /// The tree's name.
    pub name: String,
    /// Its entries.
    pub entries: u64,
}

/// One file of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the backup folder (`/` separated).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha-256 of the bytes.
    pub sha256: String,
}

/// What a backup holds: `manifest.json` of the backup folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    /// When the snapshot was taken (the server's clock, ms since the epoch).
    pub created_at_ms: i64,
    /// The server's version.
    pub server_version: String,
    /// The database's schema version.
    pub schema_version: u64,
    /// The highest id handed out before the snapshot.
    pub id_floor: u64,
    /// Every tree and its entry count.
    pub trees: Vec<ManifestTree>,
    /// Every file but the manifest: the dump, then the media files.
    pub files: Vec<ManifestFile>,
    /// Media ids the database refers to whose file was gone when it was copied (collected as
    /// unused between the dump and the copy).
    pub media_missing: Vec<String>,
}

impl Manifest {
    /// Media files in the backup.
    pub fn media_files(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.path.starts_with("media/"))
            .count()
    }

    /// Entries of a tree (0 if absent).
    pub fn entries(&self, tree: &str) -> u64 {
        self.trees
            .iter()
            .find(|t| t.name == tree)
            .map_or(0, |t| t.entries)
    }
}

/// Counter naming staging files.
static STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn refusal(status: StatusCode, text: impl Into<String>) -> Response {
    (status, format!("{}\n", text.into())).into_response()
}

/// `POST /admin/backup`: an administrator's consistent snapshot of the running server, streamed
/// (see the module documentation). 401 without a valid token, 403 for anyone but an
/// administrator, 503 if the dump fails.
pub async fn route(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let account = match bearer_account(&state, &headers) {
        Ok(account) => account,
        Err(refusal) => return *refusal,
    };
    if account.role() != Role::Admin {
        return refusal(StatusCode::FORBIDDEN, "backups are for administrators");
    }
    let county = state.app.county.clone();
    let store = county.store().clone();
    let staging_dir = if store.path().as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        store.path().join("backup-staging")
    };
    if let Err(e) = std::fs::create_dir_all(&staging_dir) {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("creating {}: {e}", staging_dir.display()),
        );
    }
    let staging = staging_dir.join(format!(
        "db-{}-{}.lxdump",
        std::process::id(),
        STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let created_at_ms = county.clock().now_ms();
    let started = std::time::Instant::now();
    let dump = match store.dump_consistent(staging.clone()).await {
        Ok(dump) => dump,
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            tracing::error!(error = %e, "backup dump failed");
            return refusal(StatusCode::SERVICE_UNAVAILABLE, format!("dump failed: {e}"));
        }
    };
    tracing::info!(
        admin = account.id,
        bytes = dump.size,
        media = dump.media.len(),
        redo_writes = dump.redo_writes,
        dump_ms = started.elapsed().as_millis() as u64,
        "backup: database dumped"
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let result = produce(&store, &staging, &dump, created_at_ms, &tx);
        let _ = std::fs::remove_file(&staging);
        match result {
            Ok(()) => tracing::info!("backup: streamed"),
            Err(e) => {
                tracing::error!(error = %e, "backup stream failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-lianxin-backup")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A sender of stream chunks that fails once the client went away.
struct Sink<'a> {
    tx: &'a tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Sink<'_> {
    fn send(&self, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.tx
            .blocking_send(Ok(Bytes::from(bytes)))
            .map_err(|_| BackupError::Server("the client went away".into()))
    }

    fn header(&self, path: &str, size: u64) -> Result<(), BackupError> {
        let mut h = Vec::with_capacity(11 + path.len());
        h.push(b'F');
        h.extend_from_slice(&(path.len() as u16).to_be_bytes());
        h.extend_from_slice(path.as_bytes());
        h.extend_from_slice(&size.to_be_bytes());
        self.send(h)
    }

    /// Streams a file; returns its size and sha-256, or `None` if it does not exist.
    fn file(&self, path: &str, from: &Path) -> Result<Option<(u64, String)>, BackupError> {
        let mut f = match std::fs::File::open(from) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("opening {}", from.display()))(e)),
        };
        let size = f
            .metadata()
            .map_err(io(format!("reading {}", from.display())))?
            .len();
        self.header(path, size)?;
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            f.read_exact(&mut buf)
                .map_err(io(format!("reading {}", from.display())))?;
            hasher.update(&buf);
            left -= buf.len() as u64;
            self.send(buf)?;
        }
        Ok(Some((size, hex::encode(hasher.finalize()))))
    }
}

/// Streams the dump, the media files and the manifest.
fn produce(
    store: &Store,
    staging: &Path,
    dump: &lianxin_storage::backup::DumpInfo,
    created_at_ms: i64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), BackupError> {
    let sink = Sink { tx };
    sink.send(STREAM_MAGIC.to_vec())?;
    let mut files = Vec::with_capacity(dump.media.len() + 1);
    let (size, sha256) = sink
        .file(DUMP_FILE, staging)?
        .ok_or_else(|| BackupError::Damaged("the staged dump vanished".into()))?;
    if size != dump.size || sha256 != dump.sha256 {
        return Err(BackupError::Damaged(
            "the staged dump changed on disk".into(),
        ));
    }
    files.push(ManifestFile {
        path: DUMP_FILE.into(),
        size,
        sha256,
    });
    let mut media_missing = Vec::new();
    for sha in &dump.media {
        let hex = sha_hex(sha);
        let path = format!("media/{}/{hex}", &hex[..2]);
        match sink.file(&path, &media_file(store.media_dir(), sha))? {
            Some((size, sha256)) => {
                if sha256 != hex {
                    // Sent already; the client sees the stream fail and keeps nothing.
                    return Err(BackupError::Damaged(format!(
                        "media file {hex} does not match its content address"
                    )));
                }
                files.push(ManifestFile { path, size, sha256 });
            }
            None => {
                tracing::warn!(media = %hex, "backup: media file gone (collected?)");
                media_missing.push(hex);
            }
        }
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        created_at_ms,
        server_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: dump.schema_version,
        id_floor: dump.id_floor,
        trees: dump
            .trees
            .iter()
            .map(|t| ManifestTree {
                name: t.name.clone(),
                entries: t.entries,
            })
            .collect(),
        files,
        media_missing,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Server(format!("encoding the manifest: {e}")))?;
    sink.header(MANIFEST, json.len() as u64)?;
    sink.send(json)?;
    sink.send(b".".to_vec())
}

/// Whether a folder is absent or empty.
fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(format!("reading {}", dir.display()))(e)),
    }
}

/// A path of the stream, checked: relative, plain names only.
fn safe_path(path: &str) -> Result<PathBuf, BackupError> {
    let p = PathBuf::from(path);
    let plain = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if plain {
        Ok(p)
    } else {
        Err(BackupError::Damaged(format!(
            "unsafe path {path:?} in the stream"
        )))
    }
}

/// Where the unpacker is in the stream.
enum Step {
    /// Waiting for the magic.
    Magic,
    /// Waiting for a file header or the end.
    Header,
    /// Inside a file's bytes.
    Body {
        path: String,
        left: u64,
        size: u64,
        hasher: Sha256,
        out: Option<std::fs::File>,
        manifest: Option<Vec<u8>>,
    },
    /// After the end marker.
    End,
}

/// Unpacks a backup stream into a folder as it arrives.
struct Unpacker {
    dir: PathBuf,
    buf: Vec<u8>,
    step: Step,
    received: Vec<ManifestFile>,
    manifest: Option<Vec<u8>>,
}

impl Unpacker {
    /// Takes the next bytes of the stream.
    fn feed(&mut self, data: &[u8]) -> Result<(), BackupError> {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let outcome = self.consume(&mut pos);
        self.buf.drain(..pos);
        outcome
    }

    /// Consumes what it can of `buf` from `pos` on.
    fn consume(&mut self, pos: &mut usize) -> Result<(), BackupError> {
        loop {
            let avail = self.buf.len() - *pos;
            match &mut self.step {
                Step::Magic => {
                    if avail < STREAM_MAGIC.len() {
                        return Ok(());
                    }
                    if &self.buf[*pos..*pos + STREAM_MAGIC.len()] != STREAM_MAGIC {
                        return Err(BackupError::Damaged("not a Lianxin backup stream".into()));
                    }
                    *pos += STREAM_MAGIC.len();
                    self.step = Step::Header;
                }
                Step::End => {
                    if avail > 0 {
                        return Err(BackupError::Damaged(
                            "bytes after the end of the stream".into(),
                        ));
                    }
                    return Ok(());
                }
                Step::Header => {
                    let b = &self.buf[*pos..];
                    match b.first() {
                        None => return Ok(()),
                        Some(b'.') => {
                            *pos += 1;
                            self.step = Step::End;
                            continue;
                        }
                        Some(b'F') => {}
                        Some(other) => {
                            return Err(BackupError::Damaged(format!(
                                "unexpected byte {other:#x} in the stream"
                            )));
                        }
                    }
                    if b.len() < 3 {
                        return Ok(());
                    }
                    let plen = usize::from(u16::from_be_bytes([b[1], b[2]]));
                    if b.len() < 3 + plen + 8 {
                        return Ok(());
                    }
                    let path = String::from_utf8(b[3..3 + plen].to_vec())
                        .map_err(|_| BackupError::Damaged("a path is not UTF-8".into()))?;
                    let mut size = [0u8; 8];
                    size.copy_from_slice(&b[3 + plen..3 + plen + 8]);
                    let size = u64::from_be_bytes(size);
                    *pos += 3 + plen + 8;
                    let rel = safe_path(&path)?;
                    let (out, manifest) = if path == MANIFEST {
                        if size > MAX_MANIFEST {
                            return Err(BackupError::Damaged(format!(
                                "a manifest of {size} bytes"
                            )));
                        }
                        (None, Some(Vec::new()))
                    } else {
                        let target = self.dir.join(&rel);
                        if let Some(parent) = target.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(io(format!("creating {}", parent.display())))?;
                        }
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&target)
                            .map_err(io(format!("creating {}", target.display())))?;
                        (Some(f), None)
                    };
                    self.step = Step::Body {
                        path,
                        left: size,
                        size,
                        hasher: Sha256::new(),
                        out,
                        manifest,
                    };
                    if size == 0 {
                        self.finish_file()?;
                    }
                }
                Step::Body {
                    left,
                    hasher,
                    out,
                    manifest,
                    ..
                } => {
                    if avail == 0 {
                        return Ok(());
                    }
                    let n = (*left).min(avail as u64) as usize;
                    let now = &self.buf[*pos..*pos + n];
                    hasher.update(now);
                    if let Some(f) = out {
                        f.write_all(now).map_err(io("writing the backup"))?;
                    }
                    if let Some(m) = manifest {
                        m.extend_from_slice(now);
                    }
                    *left -= n as u64;
                    *pos += n;
                    if *left == 0 {
                        self.finish_file()?;
                    }
                }
            }
        }
    }

    fn finish_file(&mut self) -> Result<(), BackupError> {
        if let Step::Body {
            path,
            size,
            hasher,
            out,
            manifest,
            ..
        } = std::mem::replace(&mut self.step, Step::Header)
        {
            if let Some(f) = out {
                f.sync_all().map_err(io("syncing the backup"))?;
            }
            if let Some(m) = manifest {
                self.manifest = Some(m);
            } else {
                self.received.push(ManifestFile {
                    path,
                    size,
                    sha256: hex::encode(hasher.finalize()),
                });
            }
        }
        Ok(())
    }
}

/// The HTTP base URL (`http://host:port`) of a server's WebSocket URL (`ws://host:port/ws`).
pub fn http_base(ws_url: &str) -> String {
    let base = ws_url.trim_end_matches('/').trim_end_matches("/ws");
    if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_owned()
    }
}

/// Fetches a backup from a running server (`http_base`, an administrator's `token`) into the
/// empty or absent folder `to`, checks every file against the manifest and writes the manifest
/// last: a folder with `manifest.json` is a complete backup.
pub async fn fetch(http_base: &str, token: &str, to: &Path) -> Result<Manifest, BackupError> {
    if !is_empty_dir(to)? {
        return Err(BackupError::NotEmpty(to.to_path_buf()));
    }
    std::fs::create_dir_all(to).map_err(io(format!("creating {}", to.display())))?;
    let client = reqwest::Client::new();
    let mut response = client
        .post(format!("{http_base}/admin/backup"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| BackupError::Server(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(BackupError::Server(format!("{status}: {}", text.trim())));
    }
    let mut unpacker = Unpacker {
        dir: to.to_path_buf(),
        buf: Vec::new(),
        step: Step::Magic,
        received: Vec::new(),
        manifest: None,
    };
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => unpacker.feed(&chunk)?,
            Ok(None) => break,
            Err(e) => {
                return Err(BackupError::Server(format!(
                    "the stream broke off: {e} (the backup in {} is incomplete)",
                    to.display()
                )));
            }
        }
    }
    if !matches!(unpacker.step, Step::End) {
        return Err(BackupError::Damaged(
            "the stream ended before its end marker".into(),
        ));
    }
    let raw = unpacker
        .manifest
        .ok_or_else(|| BackupError::Damaged("the stream had no manifest".into()))?;
    let manifest: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| BackupError::Damaged(format!("the manifest: {e}")))?;
    check_manifest_header(&manifest)?;
    if manifest.files != unpacker.received {
        return Err(BackupError::Damaged(
            "the files received differ from the manifest".into(),
        ));
    }
    let path = to.join(MANIFEST);
    std::fs::write(&path, &raw).map_err(io(format!("writing {}", path.display())))?;
    Ok(manifest)
}

fn check_manifest_header(manifest: &Manifest) -> Result<(), BackupError> {
    if manifest.format != FORMAT || manifest.format_version > FORMAT_VERSION {
        return Err(BackupError::Damaged(format!(
            "unknown backup format {} version {}",
            manifest.format, manifest.format_version
        )));
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let size =
        std::io::copy(&mut f, &mut hasher).map_err(io(format!("reading {}", path.display())))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Reads a backup folder's manifest and checks every file it lists (size and sha-256).
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let raw = std::fs::read(&path).map_err(io(format!(
        "reading {} (a backup without a manifest is incomplete)",
        path.display()
    )))?;
    let manifest: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| BackupError::Damaged(format!("the manifest: {e}")))?;
    check_manifest_header(&manifest)?;
    if !manifest.files.iter().any(|f| f.path == DUMP_FILE) {
        return Err(BackupError::Damaged("the manifest lists no dump".into()));
    }
    for file in &manifest.files {
        let (size, sha) = sha256_file(&dir.join(safe_path(&file.path)?))?;
        if size != file.size || sha != file.sha256 {
            return Err(BackupError::Damaged(format!(
                "{} has {size} bytes with sha-256 {sha}; the manifest says {} bytes, {}",
                file.path, file.size, file.sha256
            )));
        }
    }
    Ok(manifest)
}

/// What a restore brought back.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// Entries restored, all trees together.
    pub entries: u64,
    /// Media files restored.
    pub media_files: usize,
    /// The schema version of the restored database (after any migration).
    pub schema_version: u64,
}

/// Restores the backup in `from` into the empty or absent data folder `data_dir`: checks every
/// file against the manifest, loads the dump, checks every tree's count, copies the media files
/// to their content addresses, and opens the result once (migrating an older schema).
pub fn restore(from: &Path, data_dir: &Path) -> Result<Restored, BackupError> {
    let manifest = verify(from)?;
    if !is_empty_dir(data_dir)? {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    let dump = std::fs::File::open(from.join(DUMP_FILE)).map_err(io("opening the dump"))?;
    let counts = lianxin_storage::backup::restore_dump(
        data_dir,
        dump,
        manifest.schema_version,
        manifest.id_floor,
    )?;
    let restored: Vec<ManifestTree> = counts
        .into_iter()
        .map(|t| ManifestTree {
            name: t.name,
            entries: t.entries,
        })
        .collect();
    if restored != manifest.trees {
        return Err(BackupError::Damaged(
            "the restored trees' counts differ from the manifest".into(),
        ));
    }
    let media_dir = data_dir.join("media");
    let mut media_files = 0;
    for file in manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("media/"))
    {
        let bytes = std::fs::read(from.join(safe_path(&file.path)?))
            .map_err(io(format!("reading {}", file.path)))?;
        let sha = lianxin_storage::media::write_blob(&media_dir, &bytes)?;
        if sha_hex(&sha) != file.sha256 || !file.path.ends_with(&file.sha256) {
            return Err(BackupError::Damaged(format!(
                "{} is not stored under its content address",
                file.path
            )));
        }
        media_files += 1;
    }
    let store = Store::open(&StoreConfig::new(data_dir))?;
    let schema_version = store.schema_version()?;
    store.flush_blocking()?;
    Ok(Restored {
        entries: manifest.trees.iter().map(|t| t.entries).sum(),
        media_files,
        schema_version,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_give_their_http_base() {
        assert_eq!(http_base("ws://127.0.0.1:8080/ws"), "http://127.0.0.1:8080");
        assert_eq!(http_base("wss://example.org/ws/"), "https://example.org");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_path("media/ab/abcdef").is_ok());
        for bad in ["../etc/passwd", "/etc/passwd", "media/../../x", "", "a b"] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_unpacks_in_any_chunking() {
        let mut stream = STREAM_MAGIC.to_vec();
        for (path, body) in [
            ("db.lxdump", &b"hello"[..]),
            ("empty", b""),
            (MANIFEST, b"{}"),
        ] {
            stream.push(b'F');
            stream.extend_from_slice(&(path.len() as u16).to_be_bytes());
            stream.extend_from_slice(path.as_bytes());
            stream.extend_from_slice(&(body.len() as u64).to_be_bytes());
            stream.extend_from_slice(body);
        }
        stream.push(b'.');
        for chunk in [1, 2, 3, 7, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let mut u = Unpacker {
                dir: dir.path().to_path_buf(),
                buf: Vec::new(),
                step: Step::Magic,
                received: Vec::new(),
                manifest: None,
            };
            for part in stream.chunks(chunk) {
                u.feed(part).unwrap();
            }
            assert!(matches!(u.step, Step::End), "chunk {chunk}");
            assert_eq!(u.manifest.as_deref(), Some(&b"{}"[..]));
            assert_eq!(u.received.len(), 2);
            assert_eq!(
                std::fs::read(dir.path().join("db.lxdump")).unwrap(),
                b"hello"
            );
        }
    }
}
