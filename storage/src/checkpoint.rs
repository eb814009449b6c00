//! The guard against a silently shortened database.
//!
//! sled recovers its log up to the first damaged or missing part and carries on from there
//! without an error: a truncated or damaged `db` file opens as an *older* database (measured: a
//! file cut from 316 KiB to 290 KiB opened with 14 of a petition's 32 entries; a `db` file cut to
//! nothing opened as a new, empty database). So that such a folder is refused instead of served,
//! the writer takes a **checkpoint** with every group that writes, at every open and at every
//! clean stop: it writes a counter `n` into the `meta` tree with the group, flushes, and only then
//! records `n` in the file `lianxin-checkpoint` beside sled's files. At open the database must
//! hold a counter at least as high as the file's; otherwise sled recovered a state older than one
//! that was on disk, and [`crate::StoreError::LostWrites`] stops the start.
//!
//! The file has two fixed slots, each with the counter and its checksum; counter `n` goes to slot
//! `n % 2`, so a torn write leaves the other slot (one counter lower) whole, and the file needs no
//! rename. It is written after every group's flush and `fsync`ed at open, at a forced checkpoint
//! and at most [`SYNC_EVERY`] apart: after a power loss the file may be a little behind the
//! database, never ahead, so the guard cannot refuse a good database. (Until 2026-11-27 the file
//! held a decimal counter written every 5 s; such a file is still read.)

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::trees::decode_u64;
use crate::{Result, StoreError};

/// The checkpoint file's name in the data folder.
pub const FILE: &str = "lianxin-checkpoint";

/// Metadata key of the database's checkpoint counter (u64, big-endian).
pub const META_CHECKPOINT: &[u8] = b"checkpoint";

/// The longest time between two `fsync`s of the checkpoint file while groups are committed.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The first bytes of each slot of the checkpoint file.
const MAGIC: &[u8; 8] = b"LXCKPT02";

/// Bytes of one slot: the magic, the counter (u64, big-endian), the CRC-32 of those 16 bytes
/// (big-endian) and 4 zero bytes.
const SLOT: usize = 24;

/// One slot of the checkpoint file holding `n`.
fn slot(n: u64) -> [u8; SLOT] {
    let mut out = [0u8; SLOT];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&n.to_be_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The counter a slot holds, if it is whole.
fn read_slot(bytes: &[u8]) -> Option<u64> {
    let bytes = bytes.get(..SLOT)?;
    let crc = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    if &bytes[..8] != MAGIC || crc32fast::hash(&bytes[..16]) != crc {
        return None;
    }
    Some(u64::from_be_bytes(bytes[8..16].try_into().ok()?))
}

/// The counter a checkpoint file's bytes record: the higher whole slot, or a decimal counter
/// (the format before 2026-11-27).
fn parse(bytes: &[u8]) -> Option<u64> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(n) = text.trim().parse()
    {
        return Some(n);
    }
    let slots = [bytes.get(..SLOT), bytes.get(SLOT..2 * SLOT)];
    slots.into_iter().flatten().filter_map(read_slot).max()
}

/// Writes a checkpoint counter into the `meta` tree (not yet flushed).
fn put_counter(meta: &sled::Tree, n: u64) -> Result<()> {
    meta.insert(META_CHECKPOINT, &n.to_be_bytes()[..])?;
    Ok(())
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Engine(sled::Error::Io(e))
}

/// The checkpoint counter of a database and its file.
pub struct Checkpoints {
    /// The `meta` tree, which holds the database's counter.
    meta: sled::Tree,
    /// The checkpoint file, open for writing its slots.
    file: std::fs::File,
    /// The next counter to take.
    next: u64,
    /// When the file was last `fsync`ed.
    synced: Instant,
}

/// The counter the checkpoint file of a data folder records (0 when there is none).
pub fn recorded(dir: &Path) -> Result<u64> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => parse(&bytes).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{} does not hold a checkpoint number",
                dir.join(FILE).display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(e)),
    }
}

impl Checkpoints {
    /// Checks the database against the folder's checkpoint file, then takes a checkpoint.
    pub(crate) fn open(db: &sled::Db, dir: &Path) -> Result<Checkpoints> {
        let meta = db.open_tree("meta")?;
        let expected = recorded(dir)?;
        let found = match meta.get(META_CHECKPOINT)? {
            Some(v) => decode_u64(&v)?,
            None => 0,
        };
        if found < expected {
            return Err(StoreError::LostWrites {
                path: dir.to_path_buf(),
                expected,
                found,
            });
        }
        let path = dir.join(FILE);
        let fresh = !matches!(std::fs::read(&path).map(|b| b.len()), Ok(n) if n == 2 * SLOT);
        let n = found.max(expected) + 1;
        put_counter(&meta, n)?;
        db.flush()?;
        if fresh {
            // A new file, or one in the old format: both slots written to a temporary file,
            // synced and renamed over it, so that a crash leaves the old file or the new one.
            let mut both = [0u8; 2 * SLOT];
            both[..SLOT].copy_from_slice(&slot(n));
            both[SLOT..].copy_from_slice(&slot(n));
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, both).map_err(io_err)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err)?;
            std::fs::rename(&tmp, &path).map_err(io_err)?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        let mut c = Checkpoints {
            meta,
            file,
            next: n + 1,
            synced: Instant::now(),
        };
        if !fresh {
            c.record(n, true)?;
        }
        Ok(c)
    }

    /// Whether the file is due an `fsync`.
    pub(crate) fn sync_due(&self) -> bool {
        self.synced.elapsed() >= SYNC_EVERY
    }

    /// Writes the next counter into the database (not yet flushed); returns it.
    pub(crate) fn mark(&mut self) -> Result<u64> {
        let n = self.next;
        put_counter(&self.meta, n)?;
        Ok(n)
    }

    /// Records in the file a counter whose mark is on disk, `fsync`ing it when `sync`.
    pub(crate) fn record(&mut self, n: u64, sync: bool) -> Result<()> {
        let offset = (n % 2) * SLOT as u64;
        self.file.write_all_at(&slot(n), offset).map_err(io_err)?;
        if sync {
            self.file.sync_data().map_err(io_err)?;
            self.synced = Instant::now();
        }
        self.next = n + 1;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::{Store, StoreConfig, StoreError};

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_database_than_the_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let old = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path().join("data"));
        {
            let store = Store::open(&config).unwrap();
            store.meta_set("a", b"1").unwrap();
            store.checkpoint().await.unwrap();
        }
        // An older state of sled's files, as a truncated log recovers to.
        copy_dir(&config.path, old.path());
        {
            let store = Store::open(&config).unwrap();
            store.meta_set("b", b"2").unwrap();
            store.checkpoint().await.unwrap();
        }
        for f in ["db", "conf"] {
            std::fs::copy(old.path().join(f), config.path.join(f)).unwrap();
        }
        let err = Store::open(&config).err().unwrap();
        assert!(matches!(err, StoreError::LostWrites { .. }), "{err}");
        assert!(err.to_string().contains("restore the latest backup"));
        // sled's files gone altogether: refused too, not opened as a new database.
        for e in std::fs::read_dir(&config.path).unwrap() {
            let e = e.unwrap();
            if e.file_name() == super::FILE {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                std::fs::remove_dir_all(e.path()).unwrap();
            } else {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let err = Store::open(&config).err().unwrap();
        assert!(
            matches!(err, StoreError::LostWrites { found: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_torn_slot_leaves_the_other_and_the_old_format_still_reads() {
        use super::{SLOT, parse, slot};
        let mut file = [0u8; 2 * SLOT];
        file[..SLOT].copy_from_slice(&slot(8));
        file[SLOT..].copy_from_slice(&slot(7));
        assert_eq!(parse(&file), Some(8));
        // Counter 9 torn while being written to slot 1: slot 0 still says 8.
        file[SLOT + 9] ^= 0xff;
        assert_eq!(parse(&file), Some(8));
        file[3] ^= 0x01;
        assert_eq!(parse(&file), None, "no whole slot");
        assert_eq!(parse(&file[..SLOT + 5]), None);
        assert_eq!(parse(b"12\n"), Some(12), "the decimal format before slots");
        assert_eq!(parse(b""), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_group_that_writes_advances_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        // A folder of the old format: its decimal counter is honoured and the file rewritten.
        std::fs::write(dir.path().join(super::FILE), "5\n").unwrap();
        let store = Store::open(&config);
        let err = store.err().unwrap();
        assert!(
            matches!(
                err,
                StoreError::LostWrites {
                    expected: 5,
                    found: 0,
                    ..
                }
            ),
            "{err}"
        );
        std::fs::remove_file(dir.path().join(super::FILE)).unwrap();
        let store = Store::open(&config).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(super::FILE)).unwrap().len(),
            2 * super::SLOT
        );
        let mut last = super::recorded(dir.path()).unwrap();
        for id in 1..=3u64 {
            // No checkpoint asked for: the group's own flush is recorded.
            store
                .commit(&crate::Commit {
                    petition: lianxin_protocol::v1::Petition {
                        id,
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .unwrap();
            let now = super::recorded(dir.path()).unwrap();
            assert!(now > last, "group {id}: {last} → {now}");
            last = now;
        }
        drop(store);
        let store = Store::open(&config).unwrap();
        assert!(super::recorded(dir.path()).unwrap() > last);
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_advance_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let first = {
            let store = Store::open(&config).unwrap();
            store.checkpoint().await.unwrap();
            super::recorded(dir.path()).unwrap()
        };
        assert!(first >= 2, "one at open, one asked for");
        let store = Store::open(&config).unwrap();
        assert!(super::recorded(dir.path()).unwrap() > first);
        drop(store);
    }
}
