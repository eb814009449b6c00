//! Everything Lianxin keeps on disk.
//!
//! The crate knows nothing of actors or sockets. Its API speaks of accounts, sessions, the county's
//! directory (communities, grids, addresses), petitions with their timelines, and per-account
//! event feeds; sled is an implementation detail behind [`Store`] so that another engine could
//! replace it without touching the callers.
//!
//! Module map:
//! - [`trees`]: every sled tree, declared in one list, the petition keyspace's prefixes and the
//!   big-endian key layout.
//! - [`records`]: the storage-only records (accounts with password hashes, sessions).
//! - [`accounts`]: accounts, logins and session tokens (stored only as hashes).
//! - [`audit`]: manual points entries of the audit log, and frozen appraisal reports.
//! - [`directory`]: communities, grids, their staff and the address → grid index.
//! - [`petitions`]: petitions, their timelines, read marks, indexes and the atomic [`Commit`].
//! - [`media`]: content-addressed media files beside the database and their metadata.
//! - [`feed`]: per-account ordered event feeds with cursors.
//! - [`behind`]: timeline and feed chunks written behind their group, its journal and replay.
//! - [`durability`]: the single writer: commits are applied in order, a group at a time, as one
//!   batch, and share one flush to disk.
//!
//! Durability: [`Store::commit_durable`] returns once the commit is on disk; other writes
//! (accounts, sessions, settings) are in memory until [`Store::durable`] returns. Callers
//! acknowledge a client only after that. See `docs/durability.md` for what sled's flush does and
//! does not promise.

pub mod accounts;
pub mod audit;
pub mod backup;
pub mod behind;
pub mod checkpoint;
pub mod directory;
pub mod durability;
pub mod feed;
pub mod media;
pub(crate) mod migrate;
mod packed;
pub mod petitions;
pub mod records;
pub mod trees;

use std::path::{Path, PathBuf};

pub use petitions::{Commit, CommitResult, FeedItem};
pub use records::{AccountRecord, SessionRecord};

/// The schema version this build writes and understands.
///
/// 1: first layout. 2: community indexes. 3: the trees a petition commit writes merged into one
/// keyspace tree (`trees::MERGED_IN_V3`), feed heads no longer stored. 4: a feed event announcing
/// a new timeline entry is stored as a reference to the entry (`feed::FeedRef`), not a copy.
/// 5: timelines, feeds and the audit log packed, 16 entries, 32 events or 16 audit records to a
/// key (`packed`), because sled's resting memory follows the number of keys. 6: a plain message
/// no longer rewrites its petition's record (readers take `last_seq` and `updated_at_ms` from the
/// newest entry, `petitions::catch_up`), and its client id lives only in its entry
/// (`petitions::IdScope::Entry`); a build before 6 would read those records as stale. A bad
/// review's webhook delivery is written with the rating (`ks::WEBHOOK`). 7: timeline and feed
/// chunks are written behind their group, which stores a journal record instead (`behind`); a
/// build before 7 would not replay those records.
pub const SCHEMA_VERSION: u64 = 7;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database open.
    #[error(
        "the data folder {path} is in use by another process (is another lianxin server running on it?)"
    )]
    Locked {
        /// The data folder.
        path: PathBuf,
    },
    /// The database was written by a newer version of Lianxin.
    #[error("the database has schema version {found}; this build understands up to {supported}")]
    SchemaTooNew {
        /// Version found on disk.
        found: u64,
        /// Newest version this build knows.
        supported: u64,
    },
    /// Stored bytes could not be decoded: the database is damaged.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The thing already exists (a login taken, an id reused).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database lacks writes that were on disk at its last checkpoint: sled's files were
    /// truncated, damaged or replaced, and sled recovered only an older state.
    #[error(
        "the database in {path} is missing data it had on disk: the checkpoint file says \
         checkpoint {expected}, the database holds {found}. sled's files were truncated, damaged \
         or replaced, and sled recovered only an older state. Refusing to start rather than serve \
         incomplete data: restore the latest backup (`lianxin restore`) into an empty folder, or \
         move this folder aside"
    )]
    LostWrites {
        /// The data folder.
        path: PathBuf,
        /// The checkpoint the file records.
        expected: u64,
        /// The checkpoint the database holds (0: none).
        found: u64,
    },
    /// A commit broke what storage requires of it (a bug in the caller); nothing was stored.
    #[error("commit refused: {0}")]
    BadCommit(String),
    /// The engine failed (I/O error, full disk, ...).
    #[error("storage engine error: {0}")]
    Engine(#[from] sled::Error),
}

impl From<prost::DecodeError> for StoreError {
    fn from(e: prost::DecodeError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Result of a storage operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder holding the database (created if missing).
    pub path: PathBuf,
    /// sled's page cache size in bytes (sled may use several times this; measure it).
    pub cache_capacity: u64,
    /// Node number put in the top 16 bits of every id, so that nodes never hand out the same id.
    pub node_id: u16,
    /// How long, on average, a timeline or feed chunk stays in the writer's memory behind its
    /// journal records before it is written (zero: every chunk is written with its group).
    pub write_behind: std::time::Duration,
}

impl StoreConfig {
    /// A configuration with defaults for the given folder.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            cache_capacity: 256 * 1024 * 1024,
            node_id: 0,
            write_behind: behind::WINDOW,
        }
    }
}

/// What one tree (or keyspace prefix) holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceUse {
    /// The tree's name, or `petition_keyspace/<prefix>`.
    pub name: String,
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// Counter naming the media folders of temporary stores.
static TEMP_STORES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The open database: cheap to clone, shared by every actor and session.
#[derive(Clone)]
pub struct Store {
    /// The sled database itself.
    db: sled::Db,
    /// Handles on every tree.
    trees: trees::Trees,
    /// The single writer of the petition keyspace, which also runs every flush.
    writer: durability::Writer,
    /// Node number for ids.
    node_id: u16,
    /// Added to sled's id counter: the highest id of the backup this database was restored from
    /// (sled's counter is not part of its trees), 0 otherwise.
    id_base: u64,
    /// Where the database lives.
    path: PathBuf,
    /// Where the media files live (`<path>/media`).
    media_dir: PathBuf,
    /// Serialises changes to media metadata and files, so a collection never deletes an item
    /// that a message is referencing or an upload is re-using at the same moment.
    media_lock: std::sync::Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store, checking the schema version. A lock still held by this
    /// process's previous handle (released as its last tasks end) is waited for up to 2 s; a lock
    /// held by another process is refused with [`StoreError::Locked`].
    pub fn open(config: &StoreConfig) -> Result<Store> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Self::open_once(config) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn open_once(config: &StoreConfig) -> Result<Store> {
        std::fs::create_dir_all(&config.path).map_err(|e| StoreError::Engine(e.into()))?;
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity)
            // Durability comes from explicit group-commit flushes; sled's own timer is a backstop.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: config.path.clone(),
                    }
                }
                other => StoreError::Engine(other),
            })?;
        let checkpoints = checkpoint::Checkpoints::open(&db, &config.path)?;
        Self::start(
            db,
            config.node_id,
            config.path.clone(),
            config.path.join("media"),
            Some(checkpoints),
            config.write_behind,
        )
    }

    /// Opens a throw-away store in a temporary folder (for tests and benchmarks).
    pub fn temporary() -> Result<Store> {
        Self::temporary_with(behind::WINDOW)
    }

    /// Opens a throw-away store whose chunks stay `write_behind` behind their journal.
    pub fn temporary_with(write_behind: std::time::Duration) -> Result<Store> {
        let db = sled::Config::new().temporary(true).open()?;
        let media_dir = std::env::temp_dir().join(format!(
            "lianxin-media-{}-{}",
            std::process::id(),
            TEMP_STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Self::start(db, 0, PathBuf::new(), media_dir, None, write_behind)
    }

    /// Checks and migrates the schema, then starts the writer.
    fn start(
        db: sled::Db,
        node_id: u16,
        path: PathBuf,
        media_dir: PathBuf,
        checkpoints: Option<checkpoint::Checkpoints>,
        write_behind: std::time::Duration,
    ) -> Result<Store> {
        let trees = trees::Trees::open(&db)?;
        check_schema(&db, &trees)?;
        let id_base = match trees.meta.get(trees::META_ID_BASE)? {
            Some(v) => trees::decode_u64(&v)?,
            None => 0,
        };
        Ok(Store {
            id_base,
            writer: durability::Writer::start(
                db.clone(),
                trees.petition_keyspace.clone(),
                checkpoints,
                write_behind,
            )?,
            db,
            trees,
            node_id,
            path,
            media_dir,
            media_lock: Default::default(),
        })
    }

    /// Whether writes are reaching the disk: the error of the last failed group flush, until a
    /// later flush succeeds (a full disk or a failing device; sled then refuses writes until the
    /// process restarts).
    pub fn write_failure(&self) -> Option<String> {
        self.writer.failure()
    }

    /// Keys and bytes (keys plus values) held in each tree, and in each prefix of the petition
    /// keyspace (named `petition_keyspace/<prefix>`): what the data itself weighs, before sled's
    /// own overhead. Reads the whole database.
    pub fn space(&self) -> Result<Vec<SpaceUse>> {
        let mut out = Vec::new();
        for name in trees::TREE_NAMES {
            let tree = self.db.open_tree(name)?;
            if *name == "petition_keyspace" {
                let mut by_prefix: std::collections::BTreeMap<u8, SpaceUse> = Default::default();
                for item in tree.iter() {
                    let (k, v) = item?;
                    let prefix = k.first().copied().unwrap_or(0);
                    let u = by_prefix.entry(prefix).or_insert_with(|| SpaceUse {
                        name: format!(
                            "petition_keyspace/{}",
                            trees::ks_name(prefix).unwrap_or("unknown")
                        ),
                        ..Default::default()
                    });
                    u.keys += 1;
                    u.bytes += (k.len() + v.len()) as u64;
                }
                out.extend(by_prefix.into_values());
            } else {
                let mut u = SpaceUse {
                    name: (*name).to_owned(),
                    ..Default::default()
                };
                for item in tree.iter() {
                    let (k, v) = item?;
                    u.keys += 1;
                    u.bytes += (k.len() + v.len()) as u64;
                }
                out.push(u);
            }
        }
        Ok(out)
    }

    /// The folder the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version stored on disk.
    pub fn schema_version(&self) -> Result<u64> {
        match self.trees.meta.get(trees::META_SCHEMA_VERSION)? {
            Some(v) => trees::decode_u64(&v),
            None => Ok(0),
        }
    }

    /// A new id, unique on this node across restarts, with the node number in the top 16 bits.
    pub fn next_id(&self) -> Result<u64> {
        // sled's ids start at 0; keep 0 free to mean "none" in the protocol.
        let raw = (self.db.generate_id()? + 1).saturating_add(self.id_base);
        Ok((u64::from(self.node_id) << 48) | (raw & 0x0000_ffff_ffff_ffff))
    }

    /// Waits until every write made before the call is on disk (one flush of the writer's,
    /// shared with every commit and caller in its group).
    pub async fn durable(&self) -> Result<()> {
        self.writer.durable().await
    }

    /// Writes every timeline and feed chunk held behind (`behind.rs`), flushes everything to
    /// disk and takes a checkpoint (`checkpoint.rs`); for a clean stop.
    pub async fn checkpoint(&self) -> Result<()> {
        self.writer.checkpoint().await
    }

    /// Writes out what the writer holds behind, as a clean stop does, blocking (for tests that
    /// look at the tree itself).
    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    pub(crate) fn write_out_now(&self) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.checkpoint())
            .unwrap();
    }

    /// Flushes everything to disk now, blocking the calling thread.
    pub fn flush_blocking(&self) -> Result<usize> {
        Ok(self.db.flush()?)
    }

    /// The petition keyspace tree.
    pub(crate) fn keyspace(&self) -> &sled::Tree {
        &self.trees.petition_keyspace
    }

    /// Timeline and feed chunks as they are, those not yet written included.
    pub(crate) fn chunks(&self) -> behind::Chunks<'_> {
        behind::Chunks {
            tree: self.keyspace(),
            overlay: self.writer.overlay(),
        }
    }

    /// Reads a flag or small value of the metadata tree.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.trees.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Writes a flag or small value of the metadata tree.
    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.trees.meta.insert(key.as_bytes(), value)?;
        Ok(())
    }

    /// Approximate size of the database on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Checks the schema version and migrates an older database, one step at a time.
fn check_schema(db: &sled::Db, trees: &trees::Trees) -> Result<()> {
    let meta = &trees.meta;
    let found = match meta.get(trees::META_SCHEMA_VERSION)? {
        None => {
            meta.insert(
                trees::META_SCHEMA_VERSION,
                &SCHEMA_VERSION.to_be_bytes()[..],
            )?;
            return Ok(());
        }
        Some(v) => trees::decode_u64(&v)?,
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 3 {
        let n = migrate::merge_v2_trees(db, &trees.petition_keyspace)?;
        tracing::info!(
            records = n,
            "schema 2 → 3: petition trees merged into one keyspace"
        );
    }
    if found < 2 {
        let n = petitions::rebuild_community_indexes(&trees.petition_keyspace)?;
        tracing::info!(petitions = n, "schema 1 → 2: community indexes built");
    }
    // 3 → 4 needs no rewrite: feeds written before keep whole events, which stay readable.
    if found < 5 {
        let (entries, events, audit) = migrate::pack_v4(&trees.petition_keyspace)?;
        tracing::info!(
            entries,
            events,
            audit,
            "schema 4 → 5: timelines, feeds and the audit log packed, 16 entries, 32 events or 16 \
             audit records to a key"
        );
    }
    // 5 → 6 needs no rewrite: records written before are exact, and entries always carried
    // their client ids. Message keys (`m/…`) under `ks::IDEMPOTENCY` stay, unread.
    // 6 → 7 needs no rewrite: a database before 7 holds no journal records.
    if found < SCHEMA_VERSION {
        meta.insert(
            trees::META_SCHEMA_VERSION,
            &SCHEMA_VERSION.to_be_bytes()[..],
        )?;
        db.flush()?;
    }
    // The old trees and keys go only once the new version is on disk (also after a crash in
    // between).
    migrate::drop_merged_trees(db)?;
    migrate::drop_v4_keys(db, &trees.petition_keyspace)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_folder_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let _first = Store::open(&config).unwrap();
        let err = Store::open(&config).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
    }

    #[test]
    fn space_counts_keys_and_bytes_per_tree_and_prefix() {
        let store = Store::temporary().unwrap();
        store.meta_set("k", b"value").unwrap();
        let space = store.space().unwrap();
        let meta = space.iter().find(|u| u.name == "meta").unwrap();
        // The schema version and "k".
        assert_eq!(meta.keys, 2);
        assert!(meta.bytes >= 6);
        assert!(
            !space
                .iter()
                .any(|u| u.name.starts_with("petition_keyspace/"))
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        {
            let store = Store::open(&config).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            store
                .trees
                .meta
                .insert(trees::META_SCHEMA_VERSION, &99u64.to_be_bytes()[..])
                .unwrap();
            store.flush_blocking().unwrap();
        }
        let err = Store::open(&config).err().unwrap();
        assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }));
    }

    #[test]
    fn ids_are_unique_and_carry_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path());
        config.node_id = 3;
        let store = Store::open(&config).unwrap();
        let a = store.next_id().unwrap();
        let b = store.next_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a >> 48, 3);
        assert!(a & 0xffff_ffff_ffff > 0);
    }

    #[test]
    fn ids_stay_unique_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let before = {
            let store = Store::open(&config).unwrap();
            (0..10).map(|_| store.next_id().unwrap()).max().unwrap()
        };
        let store = Store::open(&config).unwrap();
        assert!(store.next_id().unwrap() > before);
    }
}
