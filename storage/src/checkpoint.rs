//! The guard against a silently shortened database.
//!
//! sled recovers its log up to the first damaged or missing part and carries on from there
//! without an error: a truncated or damaged `db` file opens as an *older* database (measured: a
//! file cut from 316 KiB to 290 KiB opened with 14 of a petition's 32 entries; a `db` file cut to
//! nothing opened as a new, empty database). So that such a folder is refused instead of served,
//! the writer takes a **checkpoint** every [`CHECKPOINT_EVERY`] (with a group flush), at every
//! open and at every clean stop: it writes a counter `n` into the `meta` tree, flushes, and only
//! then records `n` in the file `lianxin-checkpoint` beside sled's files (temporary file, fsync,
//! rename). At open the database must hold a counter at least as high as the file's; otherwise
//! sled recovered a state older than one that was on disk, and [`crate::StoreError::LostWrites`]
//! stops the start. Writes after the last checkpoint (at most a few seconds of them) are not
//! covered: a truncation that takes only those goes unnoticed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::trees::decode_u64;
use crate::{Result, StoreError};

/// The checkpoint file's name in the data folder.
pub const FILE: &str = "lianxin-checkpoint";

/// Metadata key of the database's checkpoint counter (u64, big-endian).
pub const META_CHECKPOINT: &[u8] = b"checkpoint";

/// How often the writer takes a checkpoint while groups are being committed.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Engine(sled::Error::Io(e))
}

/// The checkpoint counter of a database and its file.
pub struct Checkpoints {
    /// The `meta` tree, which holds the database's counter.
    meta: sled::Tree,
    /// The checkpoint file.
    file: PathBuf,
    /// The next counter to take.
    next: u64,
    /// When the last checkpoint was recorded.
    last: Instant,
}

/// The counter the checkpoint file of a data folder records (0 when there is none).
pub fn recorded(dir: &Path) -> Result<u64> {
    match std::fs::read_to_string(dir.join(FILE)) {
        Ok(text) => text.trim().parse().map_err(|_| {
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
        let mut c = Checkpoints {
            meta,
            file: dir.join(FILE),
            next: found.max(expected) + 1,
            last: Instant::now(),
        };
        let n = c.mark()?;
        db.flush()?;
        c.record(n)?;
        Ok(c)
    }

    /// Whether a checkpoint is due.
    pub(crate) fn due(&self) -> bool {
        self.last.elapsed() >= CHECKPOINT_EVERY
    }

    /// Writes the next counter into the database (not yet flushed); returns it.
    pub(crate) fn mark(&mut self) -> Result<u64> {
        let n = self.next;
        self.meta.insert(META_CHECKPOINT, &n.to_be_bytes()[..])?;
        Ok(n)
    }

    /// Records a counter whose mark is on disk in the file (atomically, fsynced).
    pub(crate) fn record(&mut self, n: u64) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
        f.write_all(format!("{n}\n").as_bytes()).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, &self.file).map_err(io_err)?;
        if let Some(dir) = self.file.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.next = n + 1;
        self.last = Instant::now();
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
