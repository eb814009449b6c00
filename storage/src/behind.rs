//! Timeline and feed chunks written behind (schema 7).
//!
//! A plain message adds one entry to its petition's timeline and one event to each of three
//! feeds, and each of those lands in a packed chunk (`crate::packed`) that sled would rewrite
//! whole: four inserts a message, which was most of the writer's cost (`docs/performance.md`).
//! Instead, each group commit writes **one journal record** (`ks::JOURNAL`, numbered) holding
//! every item the group placed into timeline and feed chunks, in the same atomic batch as the
//! rest of the group. The chunks themselves stay in the writer's memory, *dirty*, and are written
//! later with everything they gathered meanwhile:
//! - as soon as they are full (they never change again);
//! - paced: each group writes the oldest dirty chunks at a rate that writes every dirty chunk
//!   once per write-behind window ([`crate::StoreConfig::write_behind`], [`WINDOW`] by default),
//!   so the writes spread evenly over the groups instead of falling due together (a zero window
//!   writes every chunk with its group);
//! - the oldest first whenever the dirty chunks pass [`MAX_DIRTY_BYTES`];
//! - all of them when the writer has been idle for a window, at a checkpoint, and when it stops.
//!
//! A journal record is deleted, in the batch that writes them, once no chunk it touched is dirty
//! any more. After a crash, [`recover`] replays the records still stored onto the stored chunks:
//! an item always goes to the same position with the same bytes, so replaying one that a
//! written chunk already holds changes nothing.
//!
//! Readers see the dirty chunks through the [`Overlay`], which the writer publishes after each
//! group is applied (before its flush, as the tree itself); [`Chunks`] reads a chunk from the
//! overlay first and from the tree otherwise. The overlay is always at least as new as the tree.
//!
//! Schema migrations run before the writer starts, so before the journal is replayed: a future
//! migration that rewrites timeline or feed chunks must replay it first (or write a folder's
//! chunks out with a checkpoint under the old build). None does today.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use prost::encoding::{decode_varint, encode_varint};

use crate::packed::{ENTRIES_PER_KEY, EVENTS_PER_KEY};
use crate::petitions::{Chunk, ChunkKey};
use crate::trees::{ks, pkey_u64, pkey1, pkey2};
use crate::{Result, StoreError};

/// The default write-behind window: how long, on average, a chunk stays dirty under a steady load.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Bytes of dirty chunks above which the writer writes the oldest ones, whatever their age.
pub const MAX_DIRTY_BYTES: usize = 16 << 20;

/// Whether chunks of this prefix are written behind.
pub(crate) fn is_behind(prefix: u8) -> bool {
    matches!(prefix, ks::TIMELINE | ks::FEED_PACK)
}

/// How many items a full chunk of a written-behind prefix holds.
pub(crate) fn capacity(prefix: u8) -> usize {
    match prefix {
        ks::TIMELINE => ENTRIES_PER_KEY as usize,
        _ => EVENTS_PER_KEY as usize,
    }
}

/// Appends one journal item: `item` placed at `pos` of chunk `key`.
pub(crate) fn journal_push(out: &mut Vec<u8>, key: ChunkKey, pos: usize, item: &[u8]) {
    out.push(key.0);
    for v in [key.1, key.2, pos as u64, item.len() as u64] {
        encode_varint(v, out);
    }
    out.extend_from_slice(item);
}

/// The items of a journal record, in the order they were placed.
pub(crate) fn journal_items(
    mut value: &[u8],
) -> impl Iterator<Item = Result<(ChunkKey, usize, &[u8])>> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("journal record: {what}"));
    std::iter::from_fn(move || {
        let (&prefix, mut rest) = value.split_first()?;
        let item = (|| {
            if !is_behind(prefix) {
                return Err(corrupt(&format!("prefix {prefix:#04x}")));
            }
            let mut fields = [0u64; 4];
            for f in &mut fields {
                *f = decode_varint(&mut rest).map_err(|e| corrupt(&e.to_string()))?;
            }
            let [id, chunk, pos, len] = fields;
            let pos = usize::try_from(pos)
                .ok()
                .filter(|&p| p < capacity(prefix))
                .ok_or_else(|| corrupt(&format!("position {pos}")))?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= rest.len())
                .ok_or_else(|| corrupt(&format!("item of {len} bytes")))?;
            let (item, after) = rest.split_at(len);
            Ok(((prefix, id, chunk), pos, item, after))
        })();
        match item {
            Ok((key, pos, item, after)) => {
                value = after;
                Some(Ok((key, pos, item)))
            }
            Err(e) => {
                value = &[];
                Some(Err(e))
            }
        }
    })
}

/// The key of journal record `n`.
pub(crate) fn journal_key(n: u64) -> [u8; 9] {
    pkey1(ks::JOURNAL, n)
}

/// (prefix, id) → its dirty chunks: (chunk number, bytes), sorted by number.
type OverlayMap = FxHashMap<(u8, u64), Vec<(u64, sled::IVec)>>;

/// The dirty chunks as readers may see them.
#[derive(Default)]
pub(crate) struct Overlay(RwLock<OverlayMap>);

impl Overlay {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, OverlayMap> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A dirty chunk's bytes.
    pub(crate) fn get(&self, key: ChunkKey) -> Option<sled::IVec> {
        let map = self.read();
        let chunks = map.get(&(key.0, key.1))?;
        chunks.iter().find(|c| c.0 == key.2).map(|c| c.1.clone())
    }

    /// The dirty chunks of one timeline or feed numbered `first` or above, in order.
    fn from(&self, prefix: u8, id: u64, first: u64) -> Vec<(u64, sled::IVec)> {
        let map = self.read();
        match map.get(&(prefix, id)) {
            Some(chunks) => chunks.iter().filter(|c| c.0 >= first).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The last dirty chunk of one timeline or feed.
    fn last(&self, prefix: u8, id: u64) -> Option<(u64, sled::IVec)> {
        self.read().get(&(prefix, id))?.last().cloned()
    }

    /// Sets (`Some`) or drops (`None`) chunks, all at once for readers.
    pub(crate) fn publish(&self, changes: Vec<(ChunkKey, Option<sled::IVec>)>) {
        if changes.is_empty() {
            return;
        }
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((prefix, id, chunk), value) in changes {
            let chunks = map.entry((prefix, id)).or_default();
            let at = chunks.binary_search_by_key(&chunk, |c| c.0);
            match (at, value) {
                (Ok(i), Some(v)) => chunks[i].1 = v,
                (Err(i), Some(v)) => chunks.insert(i, (chunk, v)),
                (Ok(i), None) => {
                    chunks.remove(i);
                }
                (Err(_), None) => {}
            }
            if chunks.is_empty() {
                map.remove(&(prefix, id));
            }
        }
    }

    /// Drops everything.
    fn clear(&self) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Number of chunks held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.read().values().map(Vec::len).sum()
    }
}

/// Timeline and feed chunks as they are: the overlay's dirty ones over the tree's.
#[derive(Clone, Copy)]
pub(crate) struct Chunks<'a> {
    /// The petition keyspace.
    pub(crate) tree: &'a sled::Tree,
    /// The dirty chunks.
    pub(crate) overlay: &'a Overlay,
}

impl<'a> Chunks<'a> {
    /// One chunk, if it has been written to.
    pub(crate) fn get(&self, key: ChunkKey) -> Result<Option<sled::IVec>> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(Some(v));
        }
        Ok(self.tree.get(pkey2(key.0, key.1, key.2))?)
    }

    /// The chunks of one timeline or feed numbered `first` or above, in order.
    pub(crate) fn from(&self, prefix: u8, id: u64, first: u64) -> Merged {
        // The overlay first: what the tree holds afterwards is at least as new.
        let over = self.overlay.from(prefix, id, first);
        let range = pkey2(prefix, id, first)..=pkey2(prefix, id, u64::MAX);
        Merged {
            tree: Some(self.tree.range(range)),
            next_tree: None,
            over: over.into_iter().peekable(),
        }
    }

    /// The last chunk of one timeline or feed.
    pub(crate) fn last(&self, prefix: u8, id: u64) -> Result<Option<(u64, sled::IVec)>> {
        let over = self.overlay.last(prefix, id);
        let range = pkey2(prefix, id, 0)..=pkey2(prefix, id, u64::MAX);
        let tree = match self.tree.range(range).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Some((pkey_u64(&k, 1)?, v))
            }
            None => None,
        };
        Ok(match (over, tree) {
            (Some(o), Some(t)) if t.0 > o.0 => Some(t),
            (Some(o), _) => Some(o),
            (None, t) => t,
        })
    }
}

/// The chunks of a [`Chunks::from`] range: the tree's, with the overlay's in their place.
pub(crate) struct Merged {
    tree: Option<sled::Iter>,
    next_tree: Option<(u64, sled::IVec)>,
    over: std::iter::Peekable<std::vec::IntoIter<(u64, sled::IVec)>>,
}

impl Iterator for Merged {
    type Item = Result<(u64, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_tree.is_none()
            && let Some(tree) = &mut self.tree
        {
            match tree.next() {
                None => self.tree = None,
                Some(item) => {
                    let read = item
                        .map_err(StoreError::from)
                        .and_then(|(k, v)| Ok((pkey_u64(&k, 1)?, v)));
                    match read {
                        Ok(next) => self.next_tree = Some(next),
                        Err(e) => {
                            self.tree = None;
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
        let tree_at = self.next_tree.as_ref().map(|t| t.0);
        match (tree_at, self.over.peek().map(|o| o.0)) {
            (None, None) => None,
            (Some(t), Some(o)) if o <= t => {
                if o == t {
                    self.next_tree = None;
                }
                self.over.next().map(Ok)
            }
            (Some(_), _) => self.next_tree.take().map(Ok),
            (None, Some(_)) => self.over.next().map(Ok),
        }
    }
}

/// A dirty chunk: the first journal record it needs, and its size.
#[derive(Debug, Clone, Copy)]
struct DirtyChunk {
    journal: u64,
    bytes: usize,
}

/// The writer's account of dirty chunks and stored journal records.
pub(crate) struct Dirty {
    chunks: FxHashMap<ChunkKey, DirtyChunk>,
    /// (chunk, journal) in the order chunks became dirty; entries whose chunk has since been
    /// written (or written and dirtied again) are stale and skipped.
    order: VecDeque<(ChunkKey, u64)>,
    /// The numbers of the journal records stored, in order.
    journals: VecDeque<u64>,
    /// The number of the next journal record.
    next_journal: u64,
    /// Bytes of the dirty chunks (as last marked).
    bytes: usize,
    /// Chunks the pace allows to write and not yet written.
    credit: f64,
    /// When the pace was last taken.
    paced: Option<Instant>,
    /// How long a chunk stays dirty, on average, under a steady load.
    pub(crate) window: Duration,
}

impl Default for Dirty {
    fn default() -> Self {
        Dirty {
            chunks: FxHashMap::default(),
            order: VecDeque::new(),
            journals: VecDeque::new(),
            next_journal: 1,
            bytes: 0,
            credit: 0.0,
            paced: None,
            window: WINDOW,
        }
    }
}

impl Dirty {
    /// Whether a chunk is dirty.
    pub(crate) fn contains(&self, key: &ChunkKey) -> bool {
        self.chunks.contains_key(key)
    }

    /// Number of dirty chunks.
    pub(crate) fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether nothing is dirty and no journal record is stored.
    pub(crate) fn is_clean(&self) -> bool {
        self.chunks.is_empty() && self.journals.is_empty()
    }

    /// Bytes of the dirty chunks.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The number the group's journal record takes, recorded as stored.
    pub(crate) fn take_journal(&mut self) -> u64 {
        let n = self.next_journal;
        self.next_journal += 1;
        self.journals.push_back(n);
        n
    }

    /// The number the next journal record will take.
    pub(crate) fn next_journal(&self) -> u64 {
        self.next_journal
    }

    /// A chunk of `bytes` bytes changed in the group of journal record `journal`.
    pub(crate) fn mark(&mut self, key: ChunkKey, journal: u64, bytes: usize) {
        match self.chunks.get_mut(&key) {
            Some(d) => {
                self.bytes = self.bytes - d.bytes + bytes;
                d.bytes = bytes;
            }
            None => {
                self.chunks.insert(key, DirtyChunk { journal, bytes });
                self.order.push_back((key, journal));
                self.bytes += bytes;
            }
        }
    }

    /// A chunk was written.
    pub(crate) fn clean(&mut self, key: &ChunkKey) {
        if let Some(d) = self.chunks.remove(key) {
            self.bytes -= d.bytes;
        }
    }

    /// Drops stale entries from the front of `order`.
    fn skip_stale(&mut self) {
        while let Some((key, journal)) = self.order.front() {
            if self.chunks.get(key).is_some_and(|d| d.journal == *journal) {
                return;
            }
            self.order.pop_front();
        }
    }

    /// How many of the oldest dirty chunks a group at `now` writes: as many as the time since
    /// the last group allows at one window per dirty chunk, or all of them.
    pub(crate) fn pace(&mut self, now: Instant, all: bool) -> usize {
        let elapsed = match self.paced.replace(now) {
            Some(last) => now.saturating_duration_since(last),
            None => Duration::ZERO,
        };
        let n = self.chunks.len();
        if all || self.window.is_zero() {
            self.credit = 0.0;
            return n;
        }
        let share = elapsed.as_secs_f64() / self.window.as_secs_f64();
        self.credit = (self.credit + share * n as f64).min(n as f64);
        // (The margin keeps float rounding from losing a chunk to 0.99999….)
        let due = (self.credit + 1e-9).floor();
        self.credit = (self.credit - due).max(0.0);
        due as usize
    }

    /// Takes the oldest dirty chunk off the order (the caller writes it, then [`Dirty::clean`]s
    /// it).
    pub(crate) fn oldest(&mut self) -> Option<ChunkKey> {
        self.skip_stale();
        self.order.pop_front().map(|(key, _)| key)
    }

    /// Whether the dirty chunks are over their bound.
    pub(crate) fn over_bound(&self) -> bool {
        self.bytes > MAX_DIRTY_BYTES
    }

    /// When an idle writer writes everything (none: nothing is dirty).
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        if self.chunks.is_empty() {
            return None;
        }
        Some(self.paced.unwrap_or_else(Instant::now) + self.window)
    }

    /// The journal records no dirty chunk needs any more, taken off the list (to be deleted).
    pub(crate) fn unneeded_journals(&mut self) -> Vec<u64> {
        self.skip_stale();
        let low = match self.order.front() {
            Some(&(_, journal)) => journal,
            None => self.next_journal,
        };
        let mut out = Vec::new();
        while let Some(&n) = self.journals.front() {
            if n >= low {
                break;
            }
            out.push(n);
            self.journals.pop_front();
        }
        out
    }
}

/// The dirty chunks and journal records a keyspace holds: every stored journal record replayed,
/// in order, onto the chunks as stored. Publishes the dirty chunks to `overlay` (replacing what
/// it held).
pub(crate) fn recover(
    tree: &sled::Tree,
    overlay: &Overlay,
    window: Duration,
) -> Result<(FxHashMap<ChunkKey, Chunk>, Dirty)> {
    let mut dirty = Dirty {
        window,
        ..Dirty::default()
    };
    let mut chunks: FxHashMap<ChunkKey, Chunk> = FxHashMap::default();
    for record in tree.scan_prefix([ks::JOURNAL]) {
        let (k, v) = record?;
        let n = pkey_u64(&k, 0)?;
        for item in journal_items(&v) {
            let (key, pos, bytes) = item?;
            let chunk = match chunks.entry(key) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let stored = match tree.get(pkey2(key.0, key.1, key.2))? {
                        Some(v) => Chunk::read(v.to_vec())
                            .map_err(|e| StoreError::Corrupt(format!("chunk {key:?}: {e}")))?,
                        None => Chunk::default(),
                    };
                    e.insert(stored)
                }
            };
            // An item a written chunk already holds changes nothing.
            if crate::packed::get(&chunk.bytes, pos)? == Some(bytes) {
                continue;
            }
            chunk.place(pos, bytes);
            if !dirty.contains(&key) {
                dirty.mark(key, n, 0);
            }
        }
        dirty.journals.push_back(n);
        dirty.next_journal = n + 1;
    }
    chunks.retain(|key, _| dirty.contains(key));
    let mut published = Vec::with_capacity(chunks.len());
    for (key, chunk) in &chunks {
        dirty.mark(*key, 0, chunk.bytes.len());
        published.push((*key, Some(sled::IVec::from(&chunk.bytes[..]))));
    }
    overlay.clear();
    overlay.publish(published);
    Ok((chunks, dirty))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key_strategy() -> impl Strategy<Value = ChunkKey> {
        (
            prop_oneof![Just(ks::TIMELINE), Just(ks::FEED_PACK)],
            any::<u64>(),
            any::<u64>(),
        )
    }

    proptest! {
        #[test]
        fn journal_records_read_back_as_written(
            items in proptest::collection::vec(
                (key_strategy(), 0usize..16, proptest::collection::vec(any::<u8>(), 0..300)),
                0..40,
            )
        ) {
            let mut record = Vec::new();
            for (key, pos, bytes) in &items {
                journal_push(&mut record, *key, *pos, bytes);
            }
            let read: Vec<(ChunkKey, usize, Vec<u8>)> = journal_items(&record)
                .map(|i| i.map(|(k, p, b)| (k, p, b.to_vec())))
                .collect::<Result<_>>()
                .unwrap();
            prop_assert_eq!(read, items);
        }

        #[test]
        fn damaged_journal_records_are_refused_or_read_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            // An error ends the record: the items read before it are whole.
            for (key, pos, _) in journal_items(&bytes).flatten() {
                prop_assert!(is_behind(key.0));
                prop_assert!(pos < capacity(key.0));
            }
        }
    }

    #[test]
    fn the_overlay_wins_over_the_tree_and_fills_its_gaps() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for chunk in [0u64, 1, 3] {
            tree.insert(
                pkey2(ks::TIMELINE, 7, chunk),
                format!("tree {chunk}").as_bytes(),
            )
            .unwrap();
        }
        // Another petition's chunks around it must not show.
        tree.insert(pkey2(ks::TIMELINE, 6, 9), &b"other"[..])
            .unwrap();
        tree.insert(pkey2(ks::TIMELINE, 8, 0), &b"other"[..])
            .unwrap();
        let overlay = Overlay::default();
        overlay.publish(vec![
            ((ks::TIMELINE, 7, 1), Some(b"over 1"[..].into())),
            ((ks::TIMELINE, 7, 2), Some(b"over 2"[..].into())),
            ((ks::TIMELINE, 7, 5), Some(b"over 5"[..].into())),
            ((ks::FEED_PACK, 7, 9), Some(b"feed"[..].into())),
        ]);
        let view = Chunks {
            tree: &tree,
            overlay: &overlay,
        };
        let read = |first| -> Vec<(u64, String)> {
            view.from(ks::TIMELINE, 7, first)
                .map(|c| {
                    let (n, v) = c.unwrap();
                    (n, String::from_utf8(v.to_vec()).unwrap())
                })
                .collect()
        };
        let all: Vec<(u64, String)> = [
            (0, "tree 0"),
            (1, "over 1"),
            (2, "over 2"),
            (3, "tree 3"),
            (5, "over 5"),
        ]
        .into_iter()
        .map(|(n, s)| (n, s.to_owned()))
        .collect();
        assert_eq!(read(0), all);
        assert_eq!(read(2), all[2..]);
        assert_eq!(read(4), all[4..]);
        assert!(read(6).is_empty());
        assert_eq!(view.last(ks::TIMELINE, 7).unwrap().unwrap().0, 5);
        assert_eq!(
            view.get((ks::TIMELINE, 7, 1)).unwrap().unwrap(),
            b"over 1"[..]
        );
        assert_eq!(
            view.get((ks::TIMELINE, 7, 0)).unwrap().unwrap(),
            b"tree 0"[..]
        );
        // Dropped from the overlay: the tree's again.
        overlay.publish(vec![((ks::TIMELINE, 7, 5), None)]);
        assert_eq!(view.last(ks::TIMELINE, 7).unwrap().unwrap().0, 3);
        assert_eq!(overlay.len(), 3);
    }

    #[test]
    fn journals_go_once_no_dirty_chunk_needs_them() {
        let mut d = Dirty::default();
        let (a, b) = ((ks::TIMELINE, 1, 0), (ks::FEED_PACK, 2, 0));
        let j1 = d.take_journal();
        d.mark(a, j1, 10);
        d.mark(b, j1, 10);
        let j2 = d.take_journal();
        d.mark(a, j2, 20); // already dirty since j1
        assert_eq!(d.bytes(), 30);
        assert!(d.unneeded_journals().is_empty());
        d.clean(&a);
        assert!(d.unneeded_journals().is_empty()); // b still needs j1
        d.clean(&b);
        assert_eq!(d.unneeded_journals(), [j1, j2]);
        assert!(d.is_clean());
        // Written, then dirty again: the stale entry does not hold journals back.
        let j3 = d.take_journal();
        d.mark(a, j3, 5);
        assert_eq!(d.oldest(), Some(a));
        d.clean(&a);
        assert_eq!(d.unneeded_journals(), [j3]);
    }

    #[test]
    fn the_pace_writes_each_dirty_chunk_once_a_window() {
        let t0 = Instant::now();
        let mut d = Dirty::default();
        for id in 0..100 {
            d.mark((ks::FEED_PACK, id, 0), 1, 10);
        }
        assert_eq!(d.pace(t0, false), 0);
        // A tenth of a window lets a tenth of them go, in pieces or at once alike.
        let ms = |n: u64| t0 + WINDOW.mul_f64(n as f64 / 1000.0);
        let pieces: usize = (1..=100).map(|i| d.pace(ms(i), false)).sum();
        assert_eq!(pieces, 10);
        assert_eq!(d.pace(ms(200), false), 10);
        // Never more than are dirty, however long the pause; all of them when asked.
        assert_eq!(d.pace(ms(100_000), false), 100);
        assert_eq!(d.pace(ms(100_001), true), 100);
        // The oldest first.
        assert_eq!(d.oldest(), Some((ks::FEED_PACK, 0, 0)));
    }

    #[test]
    fn an_idle_writer_writes_out_a_window_after_its_last_group() {
        let t0 = Instant::now();
        let mut d = Dirty::default();
        assert_eq!(d.idle_deadline(), None);
        d.mark((ks::TIMELINE, 1, 0), 1, 10);
        d.pace(t0, false);
        assert_eq!(d.idle_deadline(), Some(t0 + WINDOW));
        d.pace(t0 + WINDOW / 2, false);
        assert_eq!(d.idle_deadline(), Some(t0 + WINDOW / 2 + WINDOW));
        d.clean(&(ks::TIMELINE, 1, 0));
        assert_eq!(d.idle_deadline(), None);
    }
}
