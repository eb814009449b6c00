//! Consistent dumps of the whole database for backups, and their restore into an empty folder.
//!
//! [`Store::dump_consistent`] does not stop the writer. Between two group commits it starts a
//! redo log: from then on every group the single writer applies to the petition keyspace also
//! appends its writes to a file beside the dump. Every tree is then copied while commits go on
//! (so the copy of the keyspace is fuzzy: each key as it was at some moment of the copy). Between
//! two later groups the log is stopped and appended to the dump. A restore loads the copy, then
//! replays the log in order; each key ends as the last write of the log left it, or as it was
//! copied when the log never touched it, which is the keyspace exactly as it was when the log
//! stopped. So every petition commit acknowledged before the backup ended is in it whole, and
//! none is in it in part. Other writes (accounts, sessions, media metadata) are copied as the copy
//! found them.
//!
//! Dump format (`db.lxdump`): [`DUMP_MAGIC`], then for every tree `b'T'`, the name's length
//! (u16, big-endian) and the name, its entries (`b'E'`, key length u32, key, value length u32,
//! value), `b'Z'`; then the redo log of the petition keyspace, `b'R'`, its writes in order (`b'P'`
//! key length, key, value length, value; `b'D'` key length, key: a removal), `b'Z'`; at the end
//! `b'.'`. Dumps of the first format (`LXDUMP1`, no redo log) are still restored. The id counter
//! of sled is not part of any tree: the dump records the highest id handed out when the log
//! stopped (`id_floor`) and a restore stores it as the id base of the new database, so new ids
//! never repeat an old one.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use lianxin_protocol::v1::MediaInfo;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::media::{Sha, parse_sha};
use crate::trees::{self, TREE_NAMES};
use crate::{Result, SCHEMA_VERSION, Store, StoreError};

/// The first bytes of a dump file.
pub const DUMP_MAGIC: &[u8; 8] = b"LXDUMP2\n";

/// The first bytes of a dump of the first format (no redo log), still restored.
const DUMP_MAGIC_V1: &[u8; 8] = b"LXDUMP1\n";

/// The largest key or value a dump may hold (a bigger length means the file is damaged).
const MAX_ITEM: usize = 256 * 1024 * 1024;

/// Entries written to sled in one batch while restoring.
const RESTORE_BATCH: usize = 10_000;

/// How many entries a tree had in a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeCount {
    /// The tree's name.
    pub name: String,
    /// Its entries.
    pub entries: u64,
}

/// What a dump holds.
#[derive(Debug, Clone)]
pub struct DumpInfo {
    /// The schema version of the dumped database.
    pub schema_version: u64,
    /// The highest id handed out before the dump (without the node number).
    pub id_floor: u64,
    /// Every tree and its entry count, in dump order.
    pub trees: Vec<TreeCount>,
    /// Media files (items and thumbnails) the dumped metadata refers to.
    pub media: Vec<Sha>,
    /// Writes to the petition keyspace made while the trees were copied (the redo log).
    pub redo_writes: u64,
    /// Size of the dump file in bytes.
    pub size: u64,
    /// Lower-case hex sha-256 of the dump file.
    pub sha256: String,
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Engine(sled::Error::Io(e))
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn len_u32(n: usize) -> Result<[u8; 4]> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("an item of {n} bytes is too large to dump")))
}

/// Appends a redo record of a write of `value` at `key`.
pub(crate) fn redo_put(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.push(b'P');
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Appends a redo record of the removal of `key`.
pub(crate) fn redo_delete(out: &mut Vec<u8>, key: &[u8]) {
    out.push(b'D');
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
}

/// A dump whose trees are copied, waiting for its redo log.
struct Copied {
    w: Hashing<BufWriter<std::fs::File>>,
    trees: Vec<TreeCount>,
    media: Vec<Sha>,
}

impl Store {
    /// Writes every tree to `out` (created, or truncated) as it was at one point between two
    /// group commits, and fsyncs it; commits go on meanwhile (see the module's documentation).
    pub async fn dump_consistent(&self, out: PathBuf) -> Result<DumpInfo> {
        let redo_path = out.with_extension("lxredo");
        let result = self.dump_with_redo(out, &redo_path).await;
        // Whatever happened, the writer stops logging and the log goes.
        let slot = self.writer.redo().clone();
        let _ = self
            .writer
            .exclusive(move || {
                slot.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                Ok(())
            })
            .await;
        let _ = std::fs::remove_file(&redo_path);
        result
    }

    async fn dump_with_redo(&self, out: PathBuf, redo_path: &Path) -> Result<DumpInfo> {
        self.begin_redo(redo_path).await?;
        let store = self.clone();
        let copied = tokio::task::spawn_blocking(move || store.copy_trees(&out))
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))??;
        let (_, redo_writes) = self.end_redo().await?;
        // Every id a dumped record holds was handed out before now.
        let id_floor = self.next_id()? & 0x0000_ffff_ffff_ffff;
        let schema_version = self.schema_version()?;
        let redo_path = redo_path.to_path_buf();
        let done = move || finish(copied, &redo_path, redo_writes, schema_version, id_floor);
        tokio::task::spawn_blocking(done)
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
    }

    /// Between two groups: every group from now on logs its writes to `path`.
    async fn begin_redo(&self, path: &Path) -> Result<()> {
        let slot = self.writer.redo().clone();
        let path = path.to_path_buf();
        self.writer
            .exclusive(move || {
                let file = std::fs::File::create(&path).map_err(io_err)?;
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(crate::durability::RedoLog {
                        file: BufWriter::with_capacity(256 * 1024, file),
                        groups: 0,
                        writes: 0,
                        error: None,
                    });
                Ok(())
            })
            .await
    }

    /// Between two groups: the log stops, and what it holds is written out; the number of
    /// groups and of writes it logged.
    async fn end_redo(&self) -> Result<(u64, u64)> {
        let slot = self.writer.redo().clone();
        self.writer
            .exclusive(move || {
                let log = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                let Some(mut log) = log else {
                    return Err(io_err(std::io::Error::other("the redo log was lost")));
                };
                if let Some(e) = log.error.take() {
                    return Err(io_err(e));
                }
                log.file.flush().map_err(io_err)?;
                Ok((log.groups, log.writes))
            })
            .await
    }

    /// Copies every tree into a new dump at `out`.
    fn copy_trees(&self, out: &Path) -> Result<Copied> {
        let file = std::fs::File::create(out).map_err(io_err)?;
        let mut w = Hashing {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let mut trees = Vec::with_capacity(TREE_NAMES.len());
        let mut media = Vec::new();
        w.write_all(DUMP_MAGIC).map_err(io_err)?;
        for name in TREE_NAMES {
            let tree = self.db.open_tree(name)?;
            w.write_all(b"T").map_err(io_err)?;
            w.write_all(&(name.len() as u16).to_be_bytes())
                .map_err(io_err)?;
            w.write_all(name.as_bytes()).map_err(io_err)?;
            let mut entries = 0u64;
            for item in tree.iter() {
                let (k, v) = item?;
                w.write_all(b"E").map_err(io_err)?;
                w.write_all(&len_u32(k.len())?).map_err(io_err)?;
                w.write_all(&k).map_err(io_err)?;
                w.write_all(&len_u32(v.len())?).map_err(io_err)?;
                w.write_all(&v).map_err(io_err)?;
                entries += 1;
                if *name == "sha_media" {
                    let info = MediaInfo::decode(&*v)?;
                    if let Some(m) = info.media {
                        media.extend(parse_sha(&m.id));
                        media.extend(parse_sha(&m.thumbnail_id));
                    }
                }
            }
            w.write_all(b"Z").map_err(io_err)?;
            trees.push(TreeCount {
                name: (*name).to_owned(),
                entries,
            });
        }
        Ok(Copied { w, trees, media })
    }
}

/// Appends the redo log to a copied dump, ends it and fsyncs it.
fn finish(
    copied: Copied,
    redo_path: &Path,
    redo_writes: u64,
    schema_version: u64,
    id_floor: u64,
) -> Result<DumpInfo> {
    let Copied {
        mut w,
        trees,
        mut media,
    } = copied;
    w.write_all(b"R").map_err(io_err)?;
    let mut redo = std::fs::File::open(redo_path).map_err(io_err)?;
    std::io::copy(&mut redo, &mut w).map_err(io_err)?;
    w.write_all(b"Z.").map_err(io_err)?;
    w.flush().map_err(io_err)?;
    let Hashing {
        inner,
        hasher,
        bytes,
    } = w;
    let file = inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    media.sort_unstable();
    media.dedup();
    Ok(DumpInfo {
        schema_version,
        id_floor,
        trees,
        media,
        redo_writes,
        size: bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Replays a dump's redo log onto `tree`, in order; the number of writes.
fn replay_redo(r: &mut impl Read, tree: &sled::Tree) -> Result<u64> {
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let mut n = 0u64;
    loop {
        match read_byte(r)? {
            b'Z' => break,
            b'P' => {
                let klen = read_len(r)?;
                let k = read_exact(r, klen)?;
                let vlen = read_len(r)?;
                batch.insert(k, read_exact(r, vlen)?);
            }
            b'D' => {
                let klen = read_len(r)?;
                batch.remove(read_exact(r, klen)?);
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected byte {other:#x} in the redo log"
                )));
            }
        }
        pending += 1;
        n += 1;
        // Batches are applied in order, and within one the last write of a key wins.
        if pending == RESTORE_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if pending > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(n)
}

fn read_exact(r: &mut impl Read, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            StoreError::Corrupt("the dump ends early".into())
        } else {
            io_err(e)
        }
    })?;
    Ok(buf)
}

fn read_byte(r: &mut impl Read) -> Result<u8> {
    Ok(read_exact(r, 1)?[0])
}

fn read_len(r: &mut impl Read) -> Result<usize> {
    let b = read_exact(r, 4)?;
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if n > MAX_ITEM {
        return Err(StoreError::Corrupt(format!(
            "an item of {n} bytes in the dump"
        )));
    }
    Ok(n)
}

/// Whether a folder already holds a sled database.
pub fn holds_database(path: &Path) -> bool {
    path.join("db").exists() || path.join("conf").exists()
}

/// Loads a dump into a new database at `path` (which must not hold one), records `id_floor` as
/// its id base, flushes, and returns every tree's entry count. The schema is not migrated here:
/// the next [`Store::open`] does that, as for any older database; only the one-key-per-record
/// timelines and feeds of a schema 4 dump are packed while they are written (as schema 5 lays
/// them out), so that the new database never holds them. A dump of a newer schema than this
/// build knows is refused.
pub fn restore_dump(
    path: &Path,
    input: impl Read,
    schema_version: u64,
    id_floor: u64,
) -> Result<Vec<TreeCount>> {
    if schema_version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    if holds_database(path) {
        return Err(StoreError::Conflict(format!(
            "{} already holds a database",
            path.display()
        )));
    }
    let mut r = BufReader::with_capacity(256 * 1024, input);
    let magic = read_exact(&mut r, DUMP_MAGIC.len())?;
    if magic != DUMP_MAGIC && magic != DUMP_MAGIC_V1 {
        return Err(StoreError::Corrupt("not a Lianxin dump".into()));
    }
    std::fs::create_dir_all(path).map_err(io_err)?;
    let db = sled::Config::new().path(path).open()?;
    let mut counts = Vec::new();
    loop {
        match read_byte(&mut r)? {
            b'.' => break,
            b'T' => {}
            b'R' if magic == DUMP_MAGIC => {
                let keyspace = db.open_tree(trees::PETITION_KEYSPACE)?;
                let n = replay_redo(&mut r, &keyspace)?;
                tracing::debug!(writes = n, "replayed the redo log of the dump");
                continue;
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unexpected byte {other:#x} between trees"
                )));
            }
        }
        let n = read_exact(&mut r, 2)?;
        let name = read_exact(&mut r, usize::from(u16::from_be_bytes([n[0], n[1]])))?;
        let name = String::from_utf8(name)
            .map_err(|_| StoreError::Corrupt("a tree name is not UTF-8".into()))?;
        let tree = db.open_tree(&name)?;
        // Schema 3 and 4 dumps: timelines and feeds are packed on the way in.
        let mut packer = (name == "petition_keyspace" && (3..5).contains(&schema_version))
            .then(crate::migrate::Packer::default);
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        let mut entries = 0u64;
        loop {
            match read_byte(&mut r)? {
                b'Z' => break,
                b'E' => {}
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unexpected byte {other:#x} in tree {name}"
                    )));
                }
            }
            let klen = read_len(&mut r)?;
            let k = read_exact(&mut r, klen)?;
            let vlen = read_len(&mut r)?;
            let v = read_exact(&mut r, vlen)?;
            entries += 1;
            match &mut packer {
                Some(packer) if crate::migrate::Packer::takes(&k) => match packer.add(&k, &v)? {
                    Some((key, value)) => batch.insert(key, value),
                    None => continue,
                },
                _ => batch.insert(k, v),
            }
            pending += 1;
            if pending == RESTORE_BATCH {
                tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        if let Some((key, value)) = packer.and_then(crate::migrate::Packer::finish) {
            batch.insert(key, value);
            pending += 1;
        }
        if pending > 0 {
            tree.apply_batch(batch)?;
        }
        counts.push(TreeCount { name, entries });
    }
    let meta = db.open_tree("meta")?;
    meta.insert(trees::META_ID_BASE, &id_floor.to_be_bytes()[..])?;
    db.flush()?;
    Ok(counts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dump_restores_every_tree_and_ids_stay_above_it() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(src.path())).unwrap();
        store.meta_set("greeting", "你好".as_bytes()).unwrap();
        let ids: Vec<u64> = (0..5).map(|_| store.next_id().unwrap()).collect();
        let file = src.path().join("db.lxdump");
        let info = store.dump_consistent(file.clone()).await.unwrap();
        assert_eq!(info.schema_version, SCHEMA_VERSION);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
        let target = dst.path().join("data");
        let counts = restore_dump(&target, &bytes[..], info.schema_version, info.id_floor).unwrap();
        assert_eq!(counts, info.trees);
        let restored = Store::open(&StoreConfig::new(&target)).unwrap();
        assert_eq!(
            restored.meta_get("greeting").unwrap().as_deref(),
            Some("你好".as_bytes())
        );
        assert!(restored.next_id().unwrap() > *ids.iter().max().unwrap());
        // A second restore into the same folder is refused.
        drop(restored);
        let again = restore_dump(&target, &bytes[..], info.schema_version, info.id_floor);
        assert!(matches!(again, Err(StoreError::Conflict(_))));
    }

    /// Every tree's name and entries.
    type Contents = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

    fn all_entries(db: &sled::Db) -> Contents {
        TREE_NAMES
            .iter()
            .map(|name| {
                let tree = db.open_tree(name).unwrap();
                let entries = tree
                    .iter()
                    .map(|i| i.unwrap())
                    // The id floor is restored on its own; the checkpoint counter belongs to
                    // its folder (a restored folder starts its own).
                    .filter(|(k, _)| {
                        !(*name == "meta"
                            && (&**k == trees::META_ID_BASE
                                || &**k == crate::checkpoint::META_CHECKPOINT))
                    })
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                ((*name).to_owned(), entries)
            })
            .collect()
    }

    fn message(petition: &Petition, seq: u64, text: &str) -> crate::Commit {
        use lianxin_protocol::v1::{Entry, EntryAdded, TextBody, entry, event};
        let entry = Entry {
            petition_id: petition.id,
            seq,
            author_id: petition.resident_id,
            body: Some(entry::Body::Text(TextBody { text: text.into() })),
            ..Default::default()
        };
        let added = |e: &Entry| {
            event::Kind::EntryAdded(EntryAdded {
                entry: Some(e.clone()),
                state: petition.state,
                assignee_id: petition.assignee_id,
            })
        };
        crate::Commit {
            petition: Petition {
                last_seq: seq,
                ..petition.clone()
            },
            entries: vec![entry.clone()],
            add_participants: vec![petition.resident_id, petition.assignee_id],
            feed: vec![
                (petition.resident_id, added(&entry)),
                (petition.assignee_id, added(&entry)),
            ],
            at_ms: 1_795_000_000_000 + seq as i64,
            ..Default::default()
        }
    }

    use lianxin_protocol::v1::{Petition, PetitionState};

    /// Petition 1 of resident 100, assigned to worker 7, just submitted.
    fn open_petition() -> Petition {
        Petition {
            id: 1,
            resident_id: 100,
            assignee_id: 7,
            community_id: 3,
            grid_id: 12,
            state: PetitionState::Submitted as i32,
            created_at_ms: 1_795_000_000_000,
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_made_while_the_trees_are_copied_reach_the_restore_through_the_redo_log() {
        assert!(TREE_NAMES.contains(&trees::PETITION_KEYSPACE));
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(src.path())).unwrap();
        let open = open_petition();
        store
            .commit(&message(&open, 1, "before the backup"))
            .unwrap();
        let out = src.path().join("db.lxdump");
        let redo = src.path().join("db.lxredo");
        store.begin_redo(&redo).await.unwrap();
        // Logged and copied.
        store.commit(&message(&open, 2, "while logging")).unwrap();
        let copied = store.copy_trees(&out).unwrap();
        // Logged only: a message, then the petition closes, which removes its open-index key.
        store.commit(&message(&open, 3, "after the copy")).unwrap();
        let closed = Petition {
            state: PetitionState::Closed as i32,
            closed_at_ms: 1_795_000_100_000,
            ..open.clone()
        };
        store.commit(&message(&closed, 4, "closed")).unwrap();
        let (groups, writes) = store.end_redo().await.unwrap();
        assert_eq!(groups, 3);
        // Each message writes its group's journal record (its chunks are written behind) and
        // its petition's record.
        assert!(writes >= 3 * 2, "{writes} writes");
        // Not logged: after the end.
        let expected = all_entries(&store.db);
        store.commit(&message(&closed, 5, "too late")).unwrap();
        let info = finish(copied, &redo, writes, SCHEMA_VERSION, 1_000).unwrap();
        assert_eq!(info.redo_writes, writes);

        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
        let target = dst.path().join("data");
        let counts = restore_dump(&target, &bytes[..], info.schema_version, info.id_floor).unwrap();
        assert_eq!(counts, info.trees);
        let restored = sled::open(&target).unwrap();
        // Exactly the database as it was when the log stopped: the copy alone lacks messages 3
        // and 4 and still has the open-index key.
        assert_eq!(all_entries(&restored), expected);
        drop(restored);
        let reopened = Store::open(&StoreConfig::new(&target)).unwrap();
        assert_eq!(reopened.petition(1).unwrap().unwrap().last_seq, 4);
        assert_eq!(reopened.entries(1, 0, 10).unwrap().len(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dump_does_not_hold_up_commits() {
        let src = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(src.path())).unwrap();
        let p = open_petition();
        store.commit(&message(&p, 1, "before")).unwrap();
        let redo = src.path().join("db.lxredo");
        store.begin_redo(&redo).await.unwrap();
        // While the log runs (as while the trees are copied), commits are served.
        let committed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            store.commit_durable(message(&p, 2, "during")),
        )
        .await;
        assert!(matches!(committed, Ok(Ok(crate::CommitResult::Done(_)))));
        assert_eq!(store.end_redo().await.unwrap().0, 1);
        // A failed dump leaves no log running and no log file.
        let err = store
            .dump_consistent(src.path().join("no-such-dir").join("db.lxdump"))
            .await;
        assert!(err.is_err());
        assert!(store.writer.redo().lock().unwrap().is_none());
        assert!(!src.path().join("no-such-dir").join("db.lxredo").exists());
    }

    #[test]
    fn a_schema_4_dump_restores_with_packed_timelines_and_feeds() {
        use crate::trees::{ks, pkey2};
        use lianxin_protocol::v1::{Entry, Event};
        // A dump of a schema 4 keyspace: 20 entries of petition 1, each announced to account 9.
        let mut dump = DUMP_MAGIC.to_vec();
        let mut put = |k: &[u8], v: &[u8]| {
            dump.push(b'E');
            dump.extend_from_slice(&len_u32(k.len()).unwrap());
            dump.extend_from_slice(k);
            dump.extend_from_slice(&len_u32(v.len()).unwrap());
            dump.extend_from_slice(v);
        };
        let name = b"petition_keyspace";
        let mut records = Vec::new();
        for seq in 1..=20u64 {
            let e = Entry {
                petition_id: 1,
                seq,
                at_ms: 1_000,
                ..Default::default()
            };
            let ev = Event {
                cursor: seq,
                ..Default::default()
            };
            records.push((pkey2(ks::ENTRY, 1, seq).to_vec(), e.encode_to_vec()));
            records.push((pkey2(ks::FEED, 9, seq).to_vec(), ev.encode_to_vec()));
        }
        records.sort();
        for (k, v) in &records {
            put(k, v);
        }
        let mut file = DUMP_MAGIC.to_vec();
        file.push(b'T');
        file.extend_from_slice(&(name.len() as u16).to_be_bytes());
        file.extend_from_slice(name);
        file.extend_from_slice(&dump[DUMP_MAGIC.len()..]);
        file.extend_from_slice(b"Z.");
        let dst = tempfile::tempdir().unwrap();
        let target = dst.path().join("data");
        let counts = restore_dump(&target, &file[..], 4, 0).unwrap();
        assert_eq!(counts[0].entries, 40);
        let store = Store::open(&StoreConfig::new(&target)).unwrap();
        let prefixes: Vec<u8> = store.keyspace().iter().map(|kv| kv.unwrap().0[0]).collect();
        // Two timeline chunks (seqs 0-15, 16-20) and one feed chunk, nothing unpacked.
        assert_eq!(prefixes, [ks::TIMELINE, ks::TIMELINE, ks::FEED_PACK]);
        assert_eq!(store.entries(1, 0, 100).unwrap().len(), 20);
        let feed = store.feed_after(9, 0, 100).unwrap();
        assert_eq!(feed.len(), 20);
        assert_eq!(Event::decode(&*feed[19].event).unwrap().cursor, 20);
    }

    #[test]
    fn a_damaged_dump_is_refused() {
        let dst = tempfile::tempdir().unwrap();
        let err = restore_dump(&dst.path().join("a"), &b"LXDUMP1\nT\x00"[..], 3, 0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let err = restore_dump(&dst.path().join("b"), &b"garbage!"[..], 3, 0).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let err = restore_dump(&dst.path().join("c"), &b""[..], 99, 0).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    }
}
