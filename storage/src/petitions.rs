//! Petitions, their timelines, read marks and indexes, and the one atomic write that changes them:
//! a [`Commit`] stores a petition's new state, its new timeline entries, the feed events of everyone
//! concerned and the sender's idempotency key together, or none of them.

use bytes::Bytes;
use lianxin_protocol::v1::{
    AuditRecord, Entry, Petition, PetitionState, Rating, ReadMark, entry, event,
};
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::ops::ControlFlow;

use prost::Message;

use std::sync::Arc;

use crate::behind::{self, Chunks, Dirty, Overlay};
use crate::packed::{self, AUDIT_BUCKET_MS, AUDIT_PER_KEY, ENTRIES_PER_KEY, EVENTS_PER_KEY};
use crate::trees::{ks, pkey_bytes, pkey_u64, pkey1, pkey2, pkey3};
use crate::{Result, Store, StoreError};

/// Everything one change to a petition writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The petition after the change; `last_seq` must cover `entries`.
    pub petition: Petition,
    /// New timeline entries, numbered by the caller.
    pub entries: Vec<Entry>,
    /// Accounts that now take part in the petition (for their petition lists).
    pub add_participants: Vec<u64>,
    /// Feed events to append: (account, event). Cursors are assigned here.
    pub feed: Vec<(u64, event::Kind)>,
    /// Time stamped on the feed events.
    pub at_ms: i64,
    /// A read mark to store.
    pub read_mark: Option<ReadMark>,
    /// The sender's idempotency key and the acknowledgement to return for resends.
    pub idempotency: Option<IdempotencyKey>,
    /// A bad review for the webhook, kept with the rating until it is delivered.
    pub webhook: Option<WebhookDelivery>,
}

/// A bad review to hand to the webhook (`ks::WEBHOOK`), stored in the rating's own commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookDelivery {
    /// The delivery's id (the receiver's idempotency key).
    pub id: u64,
    /// The rating; the petition stored with it is the commit's.
    pub rating: Rating,
}

/// A stored bad review waiting for the webhook: what `ks::WEBHOOK` maps to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingReview {
    /// The petition just after the rating.
    #[prost(message, optional, tag = "1")]
    pub petition: Option<Petition>,
    /// The rating.
    #[prost(message, optional, tag = "2")]
    pub rating: Option<Rating>,
}

/// A client's message id, remembered with the acknowledgement it got.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey {
    /// The sending account.
    pub account_id: u64,
    /// The client's own id for the message.
    pub client_msg_id: String,
    /// Where the id is remembered.
    pub scope: IdScope,
    /// The acknowledgement, encoded; returned as it is for a resend (`IdScope::Key` only).
    pub ack: Vec<u8>,
}

/// Where a client message id is remembered, so that a resend is recognised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdScope {
    /// Under a key of its own, with the acknowledgement given.
    #[default]
    Key,
    /// In the commit's first entry, a message of the petition by `account_id` carrying
    /// `client_msg_id`: nothing more is written, and a resend is answered with a `MessageAck` of
    /// that entry. Ids are unique per sender within a petition, the petition's opening text
    /// included.
    Entry,
}

/// One appended feed event, for live delivery.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// The account whose feed it is.
    pub account_id: u64,
    /// Its cursor in that feed.
    pub cursor: u64,
    /// The encoded `Event` (protobuf).
    pub event: Bytes,
}

/// What a commit did.
#[derive(Debug, Clone)]
pub enum CommitResult {
    /// Stored; these feed events were appended.
    Done(Vec<FeedItem>),
    /// Nothing stored: the idempotency key was seen before; here is its acknowledgement.
    Duplicate(Vec<u8>),
}

/// Whether a petition in this state is still open (not closed or withdrawn).
fn is_open(state: i32) -> bool {
    !matches!(
        PetitionState::try_from(state),
        Ok(PetitionState::Closed | PetitionState::Withdrawn)
    )
}

/// The audit record of a timeline entry: the entry with the petition's context.
fn audit_record(p: &Petition, e: &Entry) -> AuditRecord {
    AuditRecord {
        at_ms: e.at_ms,
        petition_id: p.id,
        community_id: p.community_id,
        grid_id: p.grid_id,
        category: p.category,
        assignee_id: p.assignee_id,
        round: p.round.max(1),
        created_at_ms: p.created_at_ms,
        round_started_at_ms: p.round_started_at_ms,
        response_due_at_ms: p.response_due_at_ms,
        completion_due_at_ms: p.completion_due_at_ms,
        entry: Some(e.clone()),
        channel: p.channel,
        points: None,
    }
}

/// Whether a petition in this state waits for its assignee to act (and so is in their inbox).
fn needs_assignee(state: i32) -> bool {
    matches!(
        PetitionState::try_from(state),
        Ok(PetitionState::Submitted
            | PetitionState::Responded
            | PetitionState::Transferred
            | PetitionState::Escalated)
    )
}

/// The index keys a stored petition has, as far as they depend on the petition record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    /// `ks::ASSIGNEE_PETITION` key part: the assignee, when the petition waits for them.
    assignee: Option<u64>,
    /// `ks::STEP_AT` key part: the next supervision step, when there is one.
    step_at: Option<u64>,
    /// `ks::COMMUNITY_CREATED` key parts: community and creation time.
    created: (u64, u64),
    /// `ks::COMMUNITY_OPEN` key part: the community, while the petition is open.
    open_in: Option<u64>,
}

impl Facts {
    fn of(p: &Petition) -> Facts {
        Facts {
            assignee: (needs_assignee(p.state) && p.assignee_id != 0).then_some(p.assignee_id),
            step_at: (p.next_step_at_ms > 0).then_some(p.next_step_at_ms as u64),
            created: (p.community_id, p.created_at_ms.max(0) as u64),
            open_in: is_open(p.state).then_some(p.community_id),
        }
    }
}

/// What the writer knows of a stored petition.
#[derive(Debug, Clone)]
struct Known {
    /// Its index keys.
    facts: Facts,
    /// Its stored record as [`progress_cleared`] leaves it: a commit whose petition is the same
    /// but for its progress does not rewrite the record.
    record: Petition,
    /// `updated_at_ms` of the stored record.
    updated_at_ms: i64,
    /// Accounts known to be in `ks::ACCOUNT_PETITION` for it (not necessarily all of them).
    participants: Vec<u64>,
    /// [`client_id_hash`] → seq of its message entries that carry a client id, once read
    /// (`IdScope::Entry`).
    client_ids: Option<HashMap<u64, u64>>,
}

impl Known {
    fn of(stored: Petition) -> Known {
        Known {
            facts: Facts::of(&stored),
            updated_at_ms: stored.updated_at_ms,
            record: progress_cleared(stored),
            participants: Vec::new(),
            client_ids: None,
        }
    }
}

/// A petition record without what every message moves on (`last_seq`, `updated_at_ms`): a
/// record is rewritten only when something else changed, and readers take those two from the
/// newest timeline entry ([`Store::petition`]).
fn progress_cleared(mut p: Petition) -> Petition {
    p.last_seq = 0;
    p.updated_at_ms = 0;
    p
}

/// How many entries a petition's submission writes (the `Submit` transition, then the opening
/// text): a client id among them is the submission's, kept under its own key (`IdScope::Key`),
/// never a message's.
pub const SUBMISSION_ENTRIES: u64 = 2;

/// The fields of a stored entry that identify a client's send.
#[derive(Clone, PartialEq, prost::Message)]
struct EntryIdentity {
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(uint64, tag = "3")]
    author_id: u64,
    #[prost(int64, tag = "6")]
    at_ms: i64,
    #[prost(string, tag = "7")]
    client_msg_id: String,
}

/// The in-memory key of a client id within a petition (hashes are checked against the entry).
fn client_id_hash(author_id: u64, client_msg_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    author_id.hash(&mut h);
    client_msg_id.hash(&mut h);
    h.finish()
}

/// The acknowledgement of a stored message entry, as a resend gets it.
fn message_ack(petition_id: u64, seq: u64, at_ms: i64) -> Vec<u8> {
    lianxin_protocol::v1::MessageAck {
        petition_id,
        seq,
        at_ms,
        duplicate: false,
    }
    .encode_to_vec()
}

/// Visits the stored entries of a petition that carry a message's client id, in order, until
/// `visit` breaks.
fn visit_sent(
    chunks: Chunks<'_>,
    petition_id: u64,
    mut visit: impl FnMut(EntryIdentity) -> ControlFlow<()>,
) -> Result<()> {
    for item in chunks.from(ks::TIMELINE, petition_id, 0) {
        let (_, v) = item?;
        for bytes in packed::items(&v) {
            let bytes = bytes?;
            if bytes.is_empty() {
                continue;
            }
            let e = EntryIdentity::decode(bytes)?;
            if e.seq > SUBMISSION_ENTRIES && !e.client_msg_id.is_empty() && visit(e).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Every message client id stored in a petition's timeline: hash → seq.
fn stored_client_ids(chunks: Chunks<'_>, petition_id: u64) -> Result<HashMap<u64, u64>> {
    let mut ids = HashMap::new();
    visit_sent(chunks, petition_id, |e| {
        ids.entry(client_id_hash(e.author_id, &e.client_msg_id))
            .or_insert(e.seq);
        ControlFlow::Continue(())
    })?;
    Ok(ids)
}

/// Entries kept before the writer's caches are emptied (at a group's start).
const CACHED_PETITIONS: usize = 1 << 16;
/// Feed heads kept before the writer's caches are emptied (at a group's start).
const CACHED_HEADS: usize = 1 << 18;
/// Bytes of open timeline and feed chunks kept before that cache is emptied of all but the dirty
/// ones (at a group's start); twice `behind::MAX_DIRTY_BYTES`, so that it is not emptied every group.
const CACHED_CHUNK_BYTES: usize = 32 << 20;

/// What the single writer remembers between commits. It is the keyspace's only writer, so none of
/// this goes stale; entries missing are read from the tree.
pub(crate) struct WriterCache {
    /// The dirty timeline and feed chunks (their bytes are in `chunks`) and the journal records
    /// they need (`crate::behind`).
    dirty: Dirty,
    /// The dirty chunks as readers see them.
    overlay: Arc<Overlay>,
    /// account id → its newest feed cursor (staged or stored).
    heads: FxHashMap<u64, u64>,
    /// petition id → its stored (or staged) index keys and known participants.
    petitions: FxHashMap<u64, Known>,
    /// Timeline and feed chunks that are not full yet, as stored or dirty (dirty ones are kept
    /// until written).
    chunks: ChunkCache,
    /// Reused to encode values.
    scratch: Vec<u8>,
}

/// A group of commits staged into one batch.
#[derive(Default)]
pub(crate) struct Group {
    /// Every write of the group.
    pub(crate) batch: sled::Batch,
    /// Number of writes staged (a key written twice counts twice).
    pub(crate) writes: usize,
    /// Idempotency keys staged in this group, with their acknowledgements.
    idempotency: HashMap<Vec<u8>, Vec<u8>>,
    /// (account, newest cursor before this group) of every feed the group extends.
    pub(crate) floors: Vec<(u64, u64)>,
    /// While a backup runs: every write of the group as redo records (`crate::backup`).
    pub(crate) redo: Option<Vec<u8>>,
    /// The packed chunks (`ks::TIMELINE`, `ks::FEED_PACK`) this group has written, as staged:
    /// the next commit of the group appends to these, not to what the tree holds.
    pub(crate) chunks: FxHashMap<ChunkKey, Chunk>,
    /// hour → the audit chunk of that hour this group appends to (`ks::AUDIT_PACK`).
    audit_tails: FxHashMap<u64, u64>,
    /// The group's journal record: every item it placed into timeline and feed chunks.
    journal: Vec<u8>,
    /// Dirty chunks written by this group that it did not change.
    written: Vec<ChunkKey>,
}

/// A packed chunk: its prefix, the petition or account, the chunk number.
pub(crate) type ChunkKey = (u8, u64, u64);

/// A packed chunk's bytes and the number of items in them (counted once, when read).
#[derive(Debug, Clone, Default)]
pub(crate) struct Chunk {
    /// The value, as `crate::packed` lays it out.
    pub(crate) bytes: Vec<u8>,
    /// Items in it, gaps included.
    pub(crate) n: usize,
}

impl Chunk {
    /// A chunk read from storage, checked whole.
    pub(crate) fn read(bytes: Vec<u8>) -> Result<Chunk> {
        let n = packed::count(&bytes)?;
        Ok(Chunk { bytes, n })
    }

    /// Puts an item at `pos` (see [`packed::place`]).
    pub(crate) fn place(&mut self, pos: usize, item: &[u8]) {
        // Cannot fail: the bytes were checked when read, and built here since.
        if let Ok(n) = packed::place_counted(&mut self.bytes, self.n, pos, item) {
            self.n = n;
        }
    }
}

impl Group {
    fn put(&mut self, key: &[u8], value: impl Into<sled::IVec>) {
        let value = value.into();
        if let Some(redo) = &mut self.redo {
            crate::backup::redo_put(redo, key, &value);
        }
        self.batch.insert(key, value);
        self.writes += 1;
    }

    pub(crate) fn delete(&mut self, key: &[u8]) {
        if let Some(redo) = &mut self.redo {
            crate::backup::redo_delete(redo, key);
        }
        self.batch.remove(key);
        self.writes += 1;
    }

    /// Moves an index entry from `old` to `new` when they differ (both may be absent).
    fn move_key<K: AsRef<[u8]> + PartialEq>(&mut self, old: Option<K>, new: Option<K>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.delete(old.as_ref());
        }
        if let Some(new) = new {
            self.put(new.as_ref(), &[][..]);
        }
    }
}

/// The newest cursor stored in an account's feed (0 when empty): the last item of its last chunk.
pub(crate) fn stored_head(chunks: Chunks<'_>, account_id: u64) -> Result<u64> {
    match chunks.last(ks::FEED_PACK, account_id)? {
        Some((chunk, v)) => {
            let n = packed::count(&v)? as u64;
            Ok((chunk * EVENTS_PER_KEY + n).saturating_sub(1))
        }
        None => Ok(0),
    }
}

/// Whether an entry goes to the audit log: every state change, rating, transfer, escalation and
/// supervision step.
fn audited(e: &Entry) -> bool {
    matches!(
        e.body,
        Some(entry::Body::Transition(_) | entry::Body::Supervision(_))
    )
}

/// The hour of the audit log an entry's record belongs to.
fn audit_hour(e: &Entry) -> u64 {
    e.at_ms.max(0) as u64 / AUDIT_BUCKET_MS
}

/// The last audit chunk stored for an hour and its value, if the hour has one.
fn stored_audit_tail(tree: &sled::Tree, hour: u64) -> Result<Option<(u64, Vec<u8>)>> {
    let range = pkey2(ks::AUDIT_PACK, hour, 0)..=pkey2(ks::AUDIT_PACK, hour, u64::MAX);
    match tree.range(range).next_back() {
        Some(item) => {
            let (k, v) = item?;
            Ok(Some((pkey_u64(&k, 1)?, v.to_vec())))
        }
        None => Ok(None),
    }
}

/// The chunk `key` as the group left it, or as stored, or empty; looked up into `loaded` unless
/// the group or `loaded` already has it.
fn load_chunk(
    chunks: Chunks<'_>,
    cached: &mut ChunkCache,
    g: &Group,
    loaded: &mut Vec<(ChunkKey, Chunk)>,
    key: ChunkKey,
) -> Result<()> {
    if g.chunks.contains_key(&key) || loaded.iter().any(|(k, _)| *k == key) {
        return Ok(());
    }
    // Taken out of the cache: it goes back, as the group leaves it, once the group is applied.
    let chunk = match cached.take(&key) {
        Some(chunk) => chunk,
        // A damaged chunk is refused here, before anything is staged.
        None => match chunks.get(key)? {
            Some(v) => Chunk::read(v.to_vec())
                .map_err(|e| StoreError::Corrupt(format!("chunk {key:?}: {e}")))?,
            None => Chunk::default(),
        },
    };
    loaded.push((key, chunk));
    Ok(())
}

/// The open (not yet full) timeline and feed chunks as stored, kept by the writer between groups:
/// the next entry or event goes there, so it need not be read back from the tree.
#[derive(Default)]
struct ChunkCache {
    map: FxHashMap<ChunkKey, Chunk>,
    /// Bytes held in `map`.
    bytes: usize,
}

impl ChunkCache {
    /// Takes a chunk out (it comes back through [`ChunkCache::keep`] once its group is applied).
    fn take(&mut self, key: &ChunkKey) -> Option<Chunk> {
        let chunk = self.map.remove(key)?;
        self.bytes = self.bytes.saturating_sub(chunk.bytes.len());
        Some(chunk)
    }

    /// Keeps a chunk as it is now stored.
    fn keep(&mut self, key: ChunkKey, chunk: Chunk) {
        self.bytes += chunk.bytes.len();
        if let Some(old) = self.map.insert(key, chunk) {
            self.bytes = self.bytes.saturating_sub(old.bytes.len());
        }
    }

    /// Keeps only the chunks `keep` accepts.
    fn retain(&mut self, keep: impl Fn(&ChunkKey) -> bool) {
        self.map.retain(|key, _| keep(key));
        self.bytes = self.map.values().map(|c| c.bytes.len()).sum();
    }
}

/// The stored record of a petition as written (its progress may lag its timeline).
fn stored_record(tree: &sled::Tree, id: u64) -> Result<Option<Petition>> {
    match tree.get(pkey1(ks::PETITION, id))? {
        Some(v) => Ok(Some(Petition::decode(&*v)?)),
        None => Ok(None),
    }
}

/// Brings a stored record's progress (`last_seq`, `updated_at_ms`) up to its newest timeline
/// entry: a plain message writes its entry, not the record.
pub(crate) fn catch_up(chunks: Chunks<'_>, p: &mut Petition) -> Result<()> {
    let Some((_, v)) = chunks.last(ks::TIMELINE, p.id)? else {
        return Ok(());
    };
    if let Some(last) = packed::items(&v).last() {
        let last = last?;
        if !last.is_empty() {
            let e = EntryIdentity::decode(last)?;
            if e.seq > p.last_seq {
                p.last_seq = e.seq;
                p.updated_at_ms = p.updated_at_ms.max(e.at_ms);
            }
        }
    }
    Ok(())
}

/// The stored timeline entry `seq` of a petition, as the group left it or as stored.
fn entry_identity(
    chunks: Chunks<'_>,
    cached: &ChunkCache,
    g: &Group,
    petition_id: u64,
    seq: u64,
) -> Result<Option<EntryIdentity>> {
    let (chunk, pos) = packed::locate(seq, ENTRIES_PER_KEY);
    let key = (ks::TIMELINE, petition_id, chunk);
    let stored;
    let value: &[u8] = match g.chunks.get(&key).or_else(|| cached.map.get(&key)) {
        Some(c) => &c.bytes,
        None => match chunks.get(key)? {
            Some(v) => {
                stored = v;
                &stored
            }
            None => return Ok(None),
        },
    };
    match packed::get(value, pos)? {
        Some(bytes) => Ok(Some(EntryIdentity::decode(bytes)?)),
        None => Ok(None),
    }
}

/// A message encoded into `scratch` (reused between values) and copied into a stored value.
fn stored(scratch: &mut Vec<u8>, message: &impl Message) -> sled::IVec {
    scratch.clear();
    match message.encode(scratch) {
        Ok(()) => sled::IVec::from(&scratch[..]),
        // A Vec grows as needed, so this does not happen; encode afresh if it ever did.
        Err(_) => sled::IVec::from(message.encode_to_vec()),
    }
}

/// An encoded `Event`: its cursor and time, then its kind, already encoded (protobuf fields may
/// be concatenated, so the kind is encoded once per commit and shared by every recipient).
fn stored_event(scratch: &mut Vec<u8>, cursor: u64, at_ms: i64, kind: &[u8]) -> sled::IVec {
    use prost::encoding::{int64, uint64};
    scratch.clear();
    if cursor != 0 {
        uint64::encode(1, &cursor, scratch);
    }
    if at_ms != 0 {
        int64::encode(2, &at_ms, scratch);
    }
    scratch.extend_from_slice(kind);
    sled::IVec::from(&scratch[..])
}

/// The reference a feed event is stored as, when it is an `EntryAdded` of one of the commit's own
/// entries; `None` stores the whole event.
fn feed_ref(c: &Commit, kind: &event::Kind) -> Option<crate::feed::FeedRef> {
    let event::Kind::EntryAdded(added) = kind else {
        return None;
    };
    let entry = added.entry.as_ref()?;
    (entry.petition_id == c.petition.id && c.entries.iter().any(|e| e == entry)).then_some(
        crate::feed::FeedRef {
            petition_id: entry.petition_id,
            seq: entry.seq,
            state: added.state,
            assignee_id: added.assignee_id,
        },
    )
}

impl WriterCache {
    /// The writer's memory of a keyspace: its dirty chunks recovered from the journal records it
    /// holds (`crate::behind::recover`), published to `overlay`.
    pub(crate) fn recover(
        tree: &sled::Tree,
        overlay: Arc<Overlay>,
        window: std::time::Duration,
    ) -> Result<WriterCache> {
        let (chunks, dirty) = behind::recover(tree, &overlay, window)?;
        let mut cache = WriterCache {
            dirty,
            overlay,
            heads: FxHashMap::default(),
            petitions: FxHashMap::default(),
            chunks: ChunkCache::default(),
            scratch: Vec::new(),
        };
        for (key, chunk) in chunks {
            cache.chunks.keep(key, chunk);
        }
        Ok(cache)
    }

    /// Empties the caches if they grew past their bounds (dirty chunks stay).
    pub(crate) fn trim(&mut self) {
        if self.petitions.len() > CACHED_PETITIONS {
            self.petitions.clear();
        }
        if self.heads.len() > CACHED_HEADS {
            self.heads.clear();
        }
        if self.chunks.bytes > CACHED_CHUNK_BYTES {
            let dirty = &self.dirty;
            self.chunks.retain(|key| dirty.contains(key));
        }
    }

    /// Forgets everything and reads afresh what the tree holds, its journal records included
    /// (after a batch failed to apply, what was staged is not stored).
    pub(crate) fn forget(&mut self, tree: &sled::Tree) -> Result<()> {
        let window = self.dirty.window;
        *self = WriterCache::recover(tree, self.overlay.clone(), window)?;
        Ok(())
    }

    /// Whether nothing is dirty and no journal record is stored.
    pub(crate) fn is_clean(&self) -> bool {
        self.dirty.is_clean()
    }

    /// When an idle writer writes out every dirty chunk (none: nothing is dirty).
    pub(crate) fn idle_deadline(&self) -> Option<std::time::Instant> {
        self.dirty.idle_deadline()
    }

    /// Ends a group's staging: stores its journal record, writes the chunks that are due (full,
    /// the oldest as the pace allows, those over the bound, or every one with `all`) and deletes
    /// the journal records nothing needs any more.
    pub(crate) fn finish(&mut self, g: &mut Group, now: std::time::Instant, all: bool) {
        let journal = if g.journal.is_empty() {
            self.dirty.next_journal()
        } else {
            let n = self.dirty.take_journal();
            let record = std::mem::take(&mut g.journal);
            g.put(&behind::journal_key(n), record);
            n
        };
        let mut full = Vec::new();
        for (key, chunk) in &g.chunks {
            if !behind::is_behind(key.0) {
                continue;
            }
            if chunk.n >= behind::capacity(key.0) {
                full.push(*key);
            } else {
                self.dirty.mark(*key, journal, chunk.bytes.len());
            }
        }
        let mut written = 0usize;
        for key in full {
            if let Some(chunk) = g.chunks.get(&key) {
                let value = sled::IVec::from(&chunk.bytes[..]);
                g.put(&pkey2(key.0, key.1, key.2), value);
                self.dirty.clean(&key);
                written += 1;
            }
        }
        let mut paced = self.dirty.pace(now, all);
        while paced > 0 || self.dirty.over_bound() {
            let Some(key) = self.dirty.oldest() else {
                break;
            };
            paced = paced.saturating_sub(1);
            let value = match g.chunks.get(&key).or_else(|| self.chunks.map.get(&key)) {
                Some(chunk) => sled::IVec::from(&chunk.bytes[..]),
                None => match self.overlay.get(key) {
                    Some(v) => v,
                    None => {
                        // Dirty chunks are kept until written; never here.
                        tracing::error!(?key, "a dirty chunk was not in memory");
                        continue;
                    }
                },
            };
            g.put(&pkey2(key.0, key.1, key.2), value);
            self.dirty.clean(&key);
            if !g.chunks.contains_key(&key) {
                g.written.push(key);
            }
            written += 1;
        }
        for n in self.dirty.unneeded_journals() {
            g.delete(&behind::journal_key(n));
        }
        metrics::counter!("lianxin_write_behind_chunks_written_total").increment(written as u64);
        metrics::gauge!("lianxin_write_behind_dirty_chunks").set(self.dirty.len() as f64);
        metrics::gauge!("lianxin_write_behind_dirty_bytes").set(self.dirty.bytes() as f64);
    }

    /// Keeps the chunks an applied group wrote that are not full yet (and every dirty one), for
    /// the groups after it, and shows readers the dirty ones.
    pub(crate) fn applied(&mut self, g: &mut Group) {
        let mut published = Vec::new();
        // Only timeline and feed chunks are kept between groups (audit chunks are not).
        for (key, chunk) in g.chunks.drain() {
            if !behind::is_behind(key.0) {
                continue;
            }
            let dirty = self.dirty.contains(&key);
            published.push((key, dirty.then(|| sled::IVec::from(&chunk.bytes[..]))));
            if dirty || chunk.n < behind::capacity(key.0) {
                self.chunks.keep(key, chunk);
            }
        }
        for key in g.written.drain(..) {
            published.push((key, None));
        }
        self.overlay.publish(published);
    }

    /// The (seq, time) of a stored or staged message entry of this petition that carries the
    /// same sender and client id (`IdScope::Entry`); reads the petition's ids at first use.
    fn earlier_send(
        &mut self,
        tree: &sled::Tree,
        g: &Group,
        petition_id: u64,
        k: &IdempotencyKey,
    ) -> Result<Option<(u64, i64)>> {
        let Some(known) = self.petitions.get_mut(&petition_id) else {
            return Ok(None); // a new petition has no entries yet
        };
        // Read before anything of this petition is staged with a client id (every such commit
        // comes here first), so the tree holds all of them.
        let view = Chunks {
            tree,
            overlay: &self.overlay,
        };
        let ids = match &mut known.client_ids {
            Some(ids) => ids,
            none => none.insert(stored_client_ids(view, petition_id)?),
        };
        let Some(&seq) = ids.get(&client_id_hash(k.account_id, &k.client_msg_id)) else {
            return Ok(None);
        };
        if seq <= SUBMISSION_ENTRIES {
            return Ok(None);
        }
        // Hashes may collide: the entry itself decides.
        Ok(entry_identity(view, &self.chunks, g, petition_id, seq)?
            .filter(|e| e.author_id == k.account_id && e.client_msg_id == k.client_msg_id)
            .map(|e| (seq, e.at_ms)))
    }

    /// Stages one commit into the group: all of its writes or, on an error, none of them.
    pub(crate) fn stage(
        &mut self,
        tree: &sled::Tree,
        c: &Commit,
        g: &mut Group,
    ) -> Result<CommitResult> {
        let p = &c.petition;
        let overlay = self.overlay.clone();
        let view = Chunks {
            tree,
            overlay: &overlay,
        };
        // Reads first (they may fail); nothing is staged until they all succeeded. What is
        // cached is what the tree holds.
        if !self.petitions.contains_key(&p.id)
            && let Some(stored) = stored_record(tree, p.id)?
        {
            self.petitions.insert(p.id, Known::of(stored));
        }
        let idem = c.idempotency.as_ref();
        let idem_key = idem.map(|k| match k.scope {
            IdScope::Key => pkey_bytes(ks::IDEMPOTENCY, k.account_id, k.client_msg_id.as_bytes()),
            // Only ever in `g.idempotency`, never stored.
            IdScope::Entry => pkey_bytes(
                ks::TIMELINE,
                p.id,
                &[&k.account_id.to_be_bytes()[..], k.client_msg_id.as_bytes()].concat(),
            ),
        });
        if let (Some(key), Some(k)) = (&idem_key, idem) {
            if let Some(ack) = g.idempotency.get(key) {
                return Ok(CommitResult::Duplicate(ack.clone()));
            }
            match k.scope {
                IdScope::Key => {
                    if let Some(ack) = tree.get(key)? {
                        return Ok(CommitResult::Duplicate(ack.to_vec()));
                    }
                }
                IdScope::Entry => {
                    let first = c.entries.first();
                    if first.is_none_or(|e| {
                        e.author_id != k.account_id || e.client_msg_id != k.client_msg_id
                    }) {
                        return Err(StoreError::BadCommit(
                            "an id kept in its entry needs that entry first".into(),
                        ));
                    }
                    if let Some(seq) = self.earlier_send(tree, g, p.id, k)? {
                        return Ok(CommitResult::Duplicate(message_ack(p.id, seq.0, seq.1)));
                    }
                }
            }
        }
        // Whether the stored record is the commit's but for its progress: compared in place (the
        // kept copy takes the commit's progress for the comparison), not on a clone.
        let same_record = match self.petitions.get_mut(&p.id) {
            Some(k) => {
                k.record.last_seq = p.last_seq;
                k.record.updated_at_ms = p.updated_at_ms;
                let same = k.record == *p;
                k.record.last_seq = 0;
                k.record.updated_at_ms = 0;
                same
            }
            None => false,
        };
        let known = self.petitions.get(&p.id);
        let old = known.map(|k| k.facts);
        let known_participants = known.map(|k| k.participants.as_slice()).unwrap_or(&[]);
        let mut joining: Vec<(u64, bool)> = Vec::new();
        for &account in &c.add_participants {
            if known_participants.contains(&account) || joining.iter().any(|j| j.0 == account) {
                continue;
            }
            let stored = tree
                .get(pkey2(ks::ACCOUNT_PETITION, account, p.id))?
                .is_some();
            joining.push((account, stored));
        }
        let mut heads: Vec<(u64, u64)> = Vec::new();
        for &(account, _) in &c.feed {
            if heads.iter().any(|h| h.0 == account) {
                continue;
            }
            let head = match self.heads.get(&account) {
                Some(&head) => head,
                None => stored_head(view, account)?,
            };
            heads.push((account, head));
        }
        // The chunks the new entries and events go to, as they are now (usually one each).
        let mut loaded: Vec<(ChunkKey, Chunk)> = Vec::new();
        let mut audit_tails: Vec<(u64, u64)> = Vec::new();
        for e in &c.entries {
            let (chunk, _) = packed::locate(e.seq, ENTRIES_PER_KEY);
            load_chunk(
                view,
                &mut self.chunks,
                g,
                &mut loaded,
                (ks::TIMELINE, p.id, chunk),
            )?;
            let hour = audit_hour(e);
            if audited(e)
                && !g.audit_tails.contains_key(&hour)
                && !audit_tails.iter().any(|t| t.0 == hour)
            {
                let (chunk, value) = stored_audit_tail(tree, hour)?.unwrap_or_default();
                let value = Chunk::read(value)
                    .map_err(|e| StoreError::Corrupt(format!("audit chunk {hour}/{chunk}: {e}")))?;
                audit_tails.push((hour, chunk));
                loaded.push(((ks::AUDIT_PACK, hour, chunk), value));
            }
        }
        for &(account, head) in &heads {
            // Only the chunk of the next cursor can hold events already; later ones are new.
            let (chunk, pos) = packed::locate(head.saturating_add(1), EVENTS_PER_KEY);
            if head > 0 && pos > 0 {
                load_chunk(
                    view,
                    &mut self.chunks,
                    g,
                    &mut loaded,
                    (ks::FEED_PACK, account, chunk),
                )?;
            }
        }
        // Writes: from here on nothing fails (the chunks were checked as they were read).
        g.chunks.extend(loaded);
        g.audit_tails.extend(audit_tails);
        let mut touched: Vec<ChunkKey> = Vec::new();
        let scratch = &mut self.scratch;
        // A plain message moves only the petition's progress, which its entry records: the
        // record stays as it is.
        // Readers take the progress from the newest entry ([`catch_up`]), so the record is
        // left only when that gives exactly the commit's.
        let rewrite = match (known, c.entries.last()) {
            (Some(k), Some(e)) => {
                !same_record
                    || e.seq != p.last_seq
                    || e.at_ms != p.updated_at_ms
                    || k.updated_at_ms > e.at_ms
            }
            _ => true,
        };
        if rewrite {
            g.put(&pkey1(ks::PETITION, p.id), stored(scratch, p));
        }
        for e in &c.entries {
            let (chunk, pos) = packed::locate(e.seq, ENTRIES_PER_KEY);
            let key = (ks::TIMELINE, p.id, chunk);
            let bytes = stored(scratch, e);
            g.chunks.entry(key).or_default().place(pos, &bytes);
            behind::journal_push(&mut g.journal, key, pos, &bytes);
            if audited(e) {
                let hour = audit_hour(e);
                let mut chunk = g.audit_tails.get(&hour).copied().unwrap_or_default();
                let full = g
                    .chunks
                    .get(&(ks::AUDIT_PACK, hour, chunk))
                    .is_some_and(|c| c.n >= AUDIT_PER_KEY);
                if full {
                    chunk += 1;
                    g.audit_tails.insert(hour, chunk);
                }
                let key = (ks::AUDIT_PACK, hour, chunk);
                let value = g.chunks.entry(key).or_default();
                let bytes = stored(scratch, &audit_record(p, e));
                let n = value.n;
                value.place(n, &bytes);
                if !touched.contains(&key) {
                    touched.push(key);
                }
            }
        }
        // The indexes change only where the petition's index keys changed.
        let new = Facts::of(p);
        g.move_key(
            old.and_then(|f| f.assignee)
                .map(|a| pkey2(ks::ASSIGNEE_PETITION, a, p.id)),
            new.assignee.map(|a| pkey2(ks::ASSIGNEE_PETITION, a, p.id)),
        );
        g.move_key(
            old.and_then(|f| f.step_at)
                .map(|t| pkey2(ks::STEP_AT, t, p.id)),
            new.step_at.map(|t| pkey2(ks::STEP_AT, t, p.id)),
        );
        g.move_key(
            old.map(|f| pkey3(ks::COMMUNITY_CREATED, f.created.0, f.created.1, p.id)),
            Some(pkey3(
                ks::COMMUNITY_CREATED,
                new.created.0,
                new.created.1,
                p.id,
            )),
        );
        g.move_key(
            old.and_then(|f| f.open_in)
                .map(|c| pkey2(ks::COMMUNITY_OPEN, c, p.id)),
            new.open_in.map(|c| pkey2(ks::COMMUNITY_OPEN, c, p.id)),
        );
        for &(account, stored) in &joining {
            if !stored {
                g.put(&pkey2(ks::ACCOUNT_PETITION, account, p.id), &[][..]);
            }
        }
        if let Some(d) = &c.webhook {
            let review = PendingReview {
                petition: Some(p.clone()),
                rating: Some(d.rating.clone()),
            };
            g.put(&pkey1(ks::WEBHOOK, d.id), stored(scratch, &review));
        }
        if let Some(mark) = &c.read_mark {
            g.put(
                &pkey2(ks::READMARK, mark.petition_id, mark.reader_id),
                stored(scratch, mark),
            );
        }
        // Each distinct event kind is encoded once, however many feeds it goes to.
        let mut kinds: Vec<(&event::Kind, Vec<u8>)> = Vec::new();
        let mut items = Vec::with_capacity(c.feed.len());
        for (account, kind) in &c.feed {
            let at = match kinds.iter().position(|(k, _)| *k == kind) {
                Some(at) => at,
                None => {
                    let mut bytes = Vec::with_capacity(kind.encoded_len());
                    kind.encode(&mut bytes);
                    kinds.push((kind, bytes));
                    kinds.len() - 1
                }
            };
            let Some(head) = heads.iter_mut().find(|h| h.0 == *account) else {
                continue; // every feed account was looked up above
            };
            if !g.floors.iter().any(|f| f.0 == *account) {
                g.floors.push((*account, head.1));
            }
            head.1 += 1;
            let cursor = head.1;
            let value = stored_event(scratch, cursor, c.at_ms, &kinds[at].1);
            // A new entry of this very commit is stored by reference: the feed keeps where the
            // entry is (and the state after it), not another copy of it.
            let (chunk, pos) = packed::locate(cursor, EVENTS_PER_KEY);
            let key = (ks::FEED_PACK, *account, chunk);
            let staged = g.chunks.entry(key).or_default();
            let reference;
            let item: &[u8] = match feed_ref(c, kind) {
                Some(r) => {
                    reference = r.encode(c.at_ms);
                    &reference
                }
                None => &value,
            };
            staged.place(pos, item);
            behind::journal_push(&mut g.journal, key, pos, item);
            items.push(FeedItem {
                account_id: *account,
                cursor,
                event: Bytes::from_owner(value),
            });
        }
        // The audit chunks are written with their group; timeline and feed chunks behind it.
        for key in touched {
            if let Some(chunk) = g.chunks.get(&key) {
                let value = sled::IVec::from(&chunk.bytes[..]);
                g.put(&pkey2(key.0, key.1, key.2), value);
            }
        }
        let mut sent: Option<u64> = None;
        if let (Some(key), Some(k)) = (idem_key, idem) {
            match (k.scope, c.entries.first()) {
                (IdScope::Entry, Some(e)) => {
                    g.idempotency.insert(key, message_ack(p.id, e.seq, e.at_ms));
                    sent = Some(e.seq);
                }
                _ => {
                    g.put(&key, k.ack.as_slice());
                    g.idempotency.insert(key, k.ack.clone());
                }
            }
        }

        // What the writer now knows.
        for (account, head) in heads {
            self.heads.insert(account, head);
        }
        let known = self
            .petitions
            .entry(p.id)
            .or_insert_with(|| Known::of(p.clone()));
        known.facts = new;
        if !same_record {
            known.record = progress_cleared(p.clone());
        }
        if rewrite {
            known.updated_at_ms = p.updated_at_ms;
        }
        known
            .participants
            .extend(joining.into_iter().map(|(account, _)| account));
        if let (Some(seq), Some(ids), Some(k)) = (sent, &mut known.client_ids, idem) {
            ids.insert(client_id_hash(k.account_id, &k.client_msg_id), seq);
        }
        Ok(CommitResult::Done(items))
    }
}

/// Rebuilds the community indexes from the petitions (schema migration 1 → 2), before the writer
/// starts.
pub(crate) fn rebuild_community_indexes(keyspace: &sled::Tree) -> Result<usize> {
    let mut n = 0;
    let mut batch = sled::Batch::default();
    for item in keyspace.scan_prefix([ks::PETITION]) {
        let (_, v) = item?;
        let p = Petition::decode(&*v)?;
        let facts = Facts::of(&p);
        batch.insert(
            &pkey3(
                ks::COMMUNITY_CREATED,
                facts.created.0,
                facts.created.1,
                p.id,
            )[..],
            &[][..],
        );
        if let Some(community) = facts.open_in {
            batch.insert(&pkey2(ks::COMMUNITY_OPEN, community, p.id)[..], &[][..]);
        }
        n += 1;
    }
    keyspace.apply_batch(batch)?;
    Ok(n)
}

impl Store {
    /// Applies a commit atomically (see [`Commit`]) and returns once it is on disk. Commits are
    /// applied one after the other by a single writer, in the order they arrive, and many share
    /// one flush.
    pub async fn commit_durable(&self, commit: Commit) -> Result<CommitResult> {
        self.writer.commit_durable(commit).await
    }

    /// Like [`Store::commit_durable`], blocking the calling thread (for tests, tools and
    /// benchmarks; async code uses [`Store::commit_durable`]).
    pub fn commit(&self, commit: &Commit) -> Result<CommitResult> {
        self.writer.commit_blocking(commit.clone())
    }

    /// The petition with this id.
    pub fn petition(&self, id: u64) -> Result<Option<Petition>> {
        match stored_record(self.keyspace(), id)? {
            Some(mut p) => {
                catch_up(self.chunks(), &mut p)?;
                Ok(Some(p))
            }
            None => Ok(None),
        }
    }

    /// Up to `limit` timeline entries of a petition with a sequence number above `after_seq`.
    pub fn entries(&self, petition_id: u64, after_seq: u64, limit: usize) -> Result<Vec<Entry>> {
        let first = after_seq.saturating_add(1);
        let mut out = Vec::new();
        for item in self
            .chunks()
            .from(ks::TIMELINE, petition_id, first / ENTRIES_PER_KEY)
        {
            let (chunk, v) = item?;
            for (pos, bytes) in (0u64..).zip(packed::items(&v)) {
                let bytes = bytes?;
                let seq = chunk.saturating_mul(ENTRIES_PER_KEY).saturating_add(pos);
                if seq < first || bytes.is_empty() {
                    continue;
                }
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(Entry::decode(bytes)?);
            }
        }
        Ok(out)
    }

    /// The read marks of every participant of a petition.
    pub fn read_marks(&self, petition_id: u64) -> Result<Vec<ReadMark>> {
        self.keyspace()
            .scan_prefix(pkey1(ks::READMARK, petition_id))
            .map(|item| Ok(ReadMark::decode(&*item?.1)?))
            .collect()
    }

    /// The acknowledgement of a message stored with this sender's client id in this petition
    /// (`IdScope::Entry`), if there is one.
    pub fn message_ack(
        &self,
        petition_id: u64,
        account_id: u64,
        client_msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        visit_sent(self.chunks(), petition_id, |e| {
            if e.author_id == account_id && e.client_msg_id == client_msg_id {
                found = Some(message_ack(petition_id, e.seq, e.at_ms));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        Ok(found)
    }

    /// The acknowledgement stored for a client message id (`IdScope::Key`), if it was seen before.
    pub fn idempotent_ack(&self, account_id: u64, client_msg_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .keyspace()
            .get(pkey_bytes(
                ks::IDEMPOTENCY,
                account_id,
                client_msg_id.as_bytes(),
            ))?
            .map(|v| v.to_vec()))
    }

    /// Petitions an account takes part in, newest first, with ids below `before_id` (0: no bound),
    /// keeping those `keep` accepts, at most `limit`.
    pub fn petitions_of(
        &self,
        account_id: u64,
        before_id: u64,
        limit: usize,
        keep: impl Fn(&Petition) -> bool,
    ) -> Result<Vec<Petition>> {
        let start = pkey2(ks::ACCOUNT_PETITION, account_id, 0);
        let end = pkey2(
            ks::ACCOUNT_PETITION,
            account_id,
            if before_id == 0 { u64::MAX } else { before_id },
        );
        let mut out = Vec::new();
        for item in self.keyspace().range(start..end).rev() {
            let (k, _) = item?;
            let id = pkey_u64(&k, 1)?;
            if let Some(p) = self.petition(id)?
                && keep(&p)
            {
                out.push(p);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Petitions waiting for this worker to act (not resolved, closed or withdrawn).
    pub fn assigned_to(&self, assignee_id: u64) -> Result<Vec<Petition>> {
        self.petitions_indexed(&pkey1(ks::ASSIGNEE_PETITION, assignee_id))
    }

    /// The petitions whose ids end the keys under `prefix` (keys of two u64s after the prefix).
    fn petitions_indexed(&self, prefix: &[u8]) -> Result<Vec<Petition>> {
        let mut out = Vec::new();
        for item in self.keyspace().scan_prefix(prefix) {
            let (k, _) = item?;
            if let Some(p) = self.petition(pkey_u64(&k, 1)?)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Petitions whose next supervision step is due at or before `now_ms`, earliest first, at
    /// most `limit`: (due time, petition id).
    pub fn steps_due(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, u64)>> {
        if now_ms <= 0 {
            return Ok(Vec::new());
        }
        let start = pkey2(ks::STEP_AT, 0, 0);
        let end = pkey2(ks::STEP_AT, now_ms as u64, u64::MAX);
        self.keyspace()
            .range(start..=end)
            .take(limit)
            .map(|item| {
                let (k, _) = item?;
                Ok((pkey_u64(&k, 0)? as i64, pkey_u64(&k, 1)?))
            })
            .collect()
    }

    /// Petitions of a community created in `[from_ms, to_ms)`, oldest first.
    pub fn petitions_created(
        &self,
        community_id: u64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Petition>> {
        let from = pkey3(
            ks::COMMUNITY_CREATED,
            community_id,
            from_ms.max(0) as u64,
            0,
        );
        let to = pkey3(ks::COMMUNITY_CREATED, community_id, to_ms.max(0) as u64, 0);
        let mut out = Vec::new();
        for item in self.keyspace().range(from..to) {
            let (k, _) = item?;
            if let Some(p) = self.petition(pkey_u64(&k, 2)?)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The open petitions (not closed or withdrawn) of a community.
    pub fn open_petitions(&self, community_id: u64) -> Result<Vec<Petition>> {
        self.petitions_indexed(&pkey1(ks::COMMUNITY_OPEN, community_id))
    }

    /// The audit log from `from_ms` (inclusive) to `to_ms` (exclusive), oldest first.
    pub fn audit_log(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AuditRecord>> {
        let (from, to) = (from_ms.max(0) as u64, to_ms.max(0) as u64);
        let mut records = Vec::new();
        if from < to {
            let first = pkey2(ks::AUDIT_PACK, from / AUDIT_BUCKET_MS, 0);
            let last = pkey2(ks::AUDIT_PACK, (to - 1) / AUDIT_BUCKET_MS, u64::MAX);
            for item in self.keyspace().range(first..=last) {
                let (_, v) = item?;
                for bytes in packed::items(&v) {
                    let r = AuditRecord::decode(bytes?)?;
                    if (from..to).contains(&(r.at_ms.max(0) as u64)) {
                        records.push(r);
                    }
                }
            }
        }
        // Records of one instant in the order of the petition and its entry, as schema 4's keys
        // ordered them.
        records.sort_by_key(|r| {
            (
                r.at_ms,
                r.petition_id,
                r.entry.as_ref().map_or(0, |e| e.seq),
            )
        });
        // Records of no petition (manual points entries) live beside the writer's keyspace.
        let others = self
            .trees
            .atms_id_audit
            .range(crate::trees::key2(from, 0)..crate::trees::key2(to, 0));
        for item in others {
            let (_, v) = item?;
            records.push(AuditRecord::decode(&*v)?);
        }
        // Stable: records of one instant keep their order within each source.
        records.sort_by_key(|r| r.at_ms);
        Ok(records)
    }

    /// Number of petitions with a pending supervision step (counts the deadline index).
    pub fn pending_step_count(&self) -> usize {
        self.keyspace().scan_prefix([ks::STEP_AT]).count()
    }

    /// Number of petitions stored (counts them).
    pub fn petition_count(&self) -> usize {
        self.keyspace().scan_prefix([ks::PETITION]).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{EntryAdded, Event, TextBody, entry};

    fn petition(id: u64, assignee: u64, state: PetitionState, last_seq: u64) -> Petition {
        let mut p = Petition {
            id,
            resident_id: 100,
            assignee_id: assignee,
            last_seq,
            ..Default::default()
        };
        p.set_state(state);
        p
    }

    fn text(pid: u64, seq: u64, s: &str) -> Entry {
        Entry {
            petition_id: pid,
            seq,
            author_id: 100,
            body: Some(entry::Body::Text(TextBody { text: s.into() })),
            ..Default::default()
        }
    }

    fn added(e: &Entry) -> event::Kind {
        event::Kind::EntryAdded(EntryAdded {
            entry: Some(e.clone()),
            state: 1,
            assignee_id: 0,
        })
    }

    #[test]
    fn new_entries_reach_feeds_by_reference_and_read_back_whole() {
        let store = Store::temporary().unwrap();
        let e1 = text(1, 1, &"路灯坏了".repeat(20));
        // An EntryAdded of another petition's entry (not in this commit) is stored whole.
        let foreign = text(9, 3, "别处的");
        let c = Commit {
            petition: petition(1, 7, PetitionState::Submitted, 1),
            entries: vec![e1.clone()],
            add_participants: vec![100, 7],
            feed: vec![(100, added(&e1)), (7, added(&e1)), (7, added(&foreign))],
            at_ms: 1_795_000_000_123,
            ..Default::default()
        };
        let CommitResult::Done(items) = store.commit(&c).unwrap() else {
            panic!("duplicate")
        };
        store.write_out_now();
        let stored = |account, cursor: u64| {
            let (chunk, pos) = packed::locate(cursor, EVENTS_PER_KEY);
            let value = store
                .keyspace()
                .get(pkey2(ks::FEED_PACK, account, chunk))
                .unwrap()
                .unwrap();
            packed::get(&value, pos).unwrap().unwrap().to_vec()
        };
        assert_eq!(stored(100, 1)[0], 0x01, "a reference");
        assert!(stored(100, 1).len() < 24, "{} bytes", stored(100, 1).len());
        assert_ne!(stored(7, 2)[0], 0x01, "a foreign entry is stored whole");
        // What a reader gets back is exactly what was delivered live.
        for item in &items {
            let read = store
                .feed_after(item.account_id, item.cursor - 1, 1)
                .unwrap();
            assert_eq!(read[0].event, item.event, "account {}", item.account_id);
        }
    }

    #[test]
    fn long_timelines_and_feeds_span_chunks_and_read_back_in_pages() {
        let store = Store::temporary().unwrap();
        let mut all = Vec::new();
        // 71 entries: one at a time, then commits of three (crossing chunk boundaries).
        let mut seq = 0;
        while seq < 70 {
            let n = if seq < 20 { 1 } else { 3 };
            let entries: Vec<Entry> = (seq + 1..=seq + n).map(|s| text(1, s, "x")).collect();
            seq += n;
            let feed = entries.iter().map(|e| (100, added(e))).collect();
            store
                .commit(&Commit {
                    petition: petition(1, 7, PetitionState::Submitted, seq),
                    entries: entries.clone(),
                    feed,
                    ..Default::default()
                })
                .unwrap();
            all.extend(entries);
        }
        assert_eq!(all.len(), 71);
        assert_eq!(store.entries(1, 0, 1000).unwrap(), all);
        for (after, limit) in [
            (0, 5),
            (14, 3),
            (15, 1),
            (16, 20),
            (31, 40),
            (69, 5),
            (70, 5),
        ] {
            let want: Vec<Entry> = all.iter().skip(after).take(limit).cloned().collect();
            assert_eq!(
                store.entries(1, after as u64, limit).unwrap(),
                want,
                "{after} {limit}"
            );
        }
        assert_eq!(store.feed_head(100).unwrap(), 71);
        for (after, limit) in [(0, 100), (30, 3), (31, 2), (63, 10), (69, 5), (71, 5)] {
            let got = store.feed_after(100, after, limit).unwrap();
            let want: Vec<u64> = (after + 1..=71).take(limit).collect();
            let cursors: Vec<u64> = got.iter().map(|e| e.cursor).collect();
            assert_eq!(cursors, want, "{after} {limit}");
            for ev in got {
                let Some(event::Kind::EntryAdded(a)) = Event::decode(&*ev.event).unwrap().kind
                else {
                    panic!("not an entry")
                };
                // Cursor k announced entry k.
                assert_eq!(a.entry.unwrap().seq, ev.cursor);
            }
        }
    }

    #[test]
    fn the_audit_log_packs_by_hour_and_reads_back_in_order() {
        use lianxin_protocol::v1::Transition;
        let store = Store::temporary().unwrap();
        let hour = AUDIT_BUCKET_MS as i64;
        // 40 transitions of two petitions: 35 in the first hour (out of time order within it),
        // 5 in the third; committed one or two at a time.
        let at = |i: u64| {
            if i < 35 {
                hour + 35 - i as i64
            } else {
                3 * hour + i as i64
            }
        };
        let mut i = 0;
        while i < 40 {
            let n = if i % 3 == 0 { 2 } else { 1 };
            let pid = 1 + i % 2;
            let entries: Vec<Entry> = (i..(i + n).min(40))
                .map(|k| Entry {
                    petition_id: pid,
                    seq: k + 1,
                    at_ms: at(k),
                    body: Some(entry::Body::Transition(Transition::default())),
                    ..Default::default()
                })
                .collect();
            i += entries.len() as u64;
            store
                .commit(&Commit {
                    petition: petition(pid, 7, PetitionState::Submitted, i),
                    entries,
                    ..Default::default()
                })
                .unwrap();
        }
        // 35 records in 3 keys, 5 in 1.
        assert_eq!(store.keyspace().scan_prefix([ks::AUDIT_PACK]).count(), 4);
        let all = store.audit_log(0, i64::MAX).unwrap();
        assert_eq!(all.len(), 40);
        let mut times: Vec<i64> = (0..40).map(at).collect();
        times.sort_unstable();
        assert_eq!(all.iter().map(|r| r.at_ms).collect::<Vec<_>>(), times);
        assert_eq!(store.audit_log(hour + 1, hour + 11).unwrap().len(), 10);
        assert_eq!(store.audit_log(hour + 30, 3 * hour + 37).unwrap().len(), 8);
        assert!(store.audit_log(2 * hour, 3 * hour).unwrap().is_empty());
        assert!(store.audit_log(5, 5).unwrap().is_empty());
    }

    #[test]
    fn commit_stores_everything_and_numbers_feeds() {
        let store = Store::temporary().unwrap();
        let e1 = text(1, 1, "路灯坏了");
        let c = Commit {
            petition: petition(1, 7, PetitionState::Submitted, 1),
            entries: vec![e1.clone()],
            add_participants: vec![100, 7],
            feed: vec![(100, added(&e1)), (7, added(&e1))],
            at_ms: 5,
            ..Default::default()
        };
        let CommitResult::Done(items) = store.commit(&c).unwrap() else {
            panic!("duplicate")
        };
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(|i| i.cursor == 1));
        let ev = Event::decode(&*items[0].event).unwrap();
        assert_eq!(ev.cursor, 1);
        assert_eq!(ev.at_ms, 5);
        assert_eq!(ev.kind, Some(added(&e1)));

        let e2 = text(1, 2, "还没修");
        let c2 = Commit {
            petition: petition(1, 7, PetitionState::Submitted, 2),
            entries: vec![e2.clone()],
            feed: vec![(100, added(&e2))],
            ..Default::default()
        };
        store.commit(&c2).unwrap();
        assert_eq!(store.entries(1, 0, 10).unwrap(), vec![e1, e2.clone()]);
        assert_eq!(store.entries(1, 1, 10).unwrap(), vec![e2]);
        assert_eq!(store.feed_head(100).unwrap(), 2);
        assert_eq!(store.feed_head(7).unwrap(), 1);
        let feed = store.feed_after(100, 1, 10).unwrap();
        assert_eq!(feed.len(), 1);
        assert_eq!(feed[0].cursor, 2);
        assert_eq!(store.assigned_to(7).unwrap().len(), 1);
        assert_eq!(store.petitions_of(100, 0, 10, |_| true).unwrap().len(), 1);
    }

    #[test]
    fn community_indexes_follow_transfers_and_closing() {
        let store = Store::temporary().unwrap();
        let put = |p: &Petition| {
            store
                .commit(&Commit {
                    petition: p.clone(),
                    ..Default::default()
                })
                .unwrap();
        };
        let ids = |v: Vec<Petition>| v.iter().map(|p| p.id).collect::<Vec<_>>();
        for (id, at) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            let mut p = petition(id, 7, PetitionState::Submitted, 1);
            p.community_id = 5;
            p.created_at_ms = at;
            put(&p);
        }
        assert_eq!(
            ids(store.petitions_created(5, 1_000, 3_000).unwrap()),
            [1, 2]
        );
        assert_eq!(
            ids(store.petitions_created(5, 0, i64::MAX).unwrap()),
            [1, 2, 3]
        );
        assert_eq!(ids(store.open_petitions(5).unwrap()), [1, 2, 3]);

        // Petition 2 moves to community 6; petition 3 is closed.
        let mut moved = petition(2, 8, PetitionState::Transferred, 2);
        moved.community_id = 6;
        moved.created_at_ms = 2_000;
        put(&moved);
        let mut closed = petition(3, 7, PetitionState::Closed, 2);
        closed.community_id = 5;
        closed.created_at_ms = 3_000;
        put(&closed);
        assert_eq!(
            ids(store.petitions_created(5, 0, i64::MAX).unwrap()),
            [1, 3]
        );
        assert_eq!(ids(store.petitions_created(6, 0, i64::MAX).unwrap()), [2]);
        assert_eq!(ids(store.open_petitions(5).unwrap()), [1]);
        assert_eq!(ids(store.open_petitions(6).unwrap()), [2]);
        // A rebuild (the schema migration) finds the same.
        rebuild_community_indexes(store.keyspace()).unwrap();
        assert_eq!(ids(store.open_petitions(5).unwrap()), [1]);
    }

    #[test]
    fn resend_with_the_same_client_id_is_not_stored_twice() {
        let store = Store::temporary().unwrap();
        let e = text(1, 1, "hi");
        let mut c = Commit {
            petition: petition(1, 7, PetitionState::Submitted, 1),
            entries: vec![e.clone()],
            feed: vec![(100, added(&e))],
            idempotency: Some(IdempotencyKey {
                account_id: 100,
                client_msg_id: "m1".into(),
                scope: IdScope::Key,
                ack: b"ack-1".to_vec(),
            }),
            ..Default::default()
        };
        assert!(matches!(store.commit(&c).unwrap(), CommitResult::Done(_)));
        c.petition.last_seq = 2;
        c.entries[0].seq = 2;
        match store.commit(&c).unwrap() {
            CommitResult::Duplicate(ack) => assert_eq!(ack, b"ack-1"),
            CommitResult::Done(_) => panic!("stored twice"),
        }
        assert_eq!(store.entries(1, 0, 10).unwrap().len(), 1);
        assert_eq!(store.feed_head(100).unwrap(), 1);
        assert_eq!(store.petition(1).unwrap().unwrap().last_seq, 1);
    }

    /// A message as `actors` builds it: petition `1`, `seq`, by `author`, with client id `cid`
    /// kept in its entry.
    fn sent(seq: u64, author: u64, cid: &str, at_ms: i64) -> Commit {
        let mut p = petition(1, 7, PetitionState::Submitted, seq);
        p.updated_at_ms = at_ms;
        let e = Entry {
            author_id: author,
            at_ms,
            client_msg_id: cid.into(),
            ..text(1, seq, "路灯还是不亮")
        };
        Commit {
            petition: p,
            feed: vec![(100, added(&e)), (7, added(&e))],
            entries: vec![e],
            idempotency: Some(IdempotencyKey {
                account_id: author,
                client_msg_id: cid.into(),
                scope: IdScope::Entry,
                ack: Vec::new(),
            }),
            ..Default::default()
        }
    }

    /// A writer's memory of the tree as at a start.
    fn fresh_cache(tree: &sled::Tree) -> WriterCache {
        WriterCache::recover(tree, Arc::new(Overlay::default()), behind::WINDOW).unwrap()
    }

    /// Applies a staged group as the writer does; with `all`, writing out every chunk.
    fn apply(cache: &mut WriterCache, tree: &sled::Tree, g: &mut Group, all: bool) {
        cache.finish(g, std::time::Instant::now(), all);
        tree.apply_batch(std::mem::take(&mut g.batch)).unwrap();
        cache.applied(g);
    }

    fn ack_of(bytes: &[u8]) -> (u64, u64, i64) {
        let ack = lianxin_protocol::v1::MessageAck::decode(bytes).unwrap();
        (ack.petition_id, ack.seq, ack.at_ms)
    }

    #[test]
    fn a_resend_is_recognised_by_its_entry_alone() {
        let store = Store::temporary().unwrap();
        let tree = store.keyspace();
        // The submission's opening text (seq 2) carries "c-1" too: that id is the submission's.
        let mut opening = sent(2, 100, "c-1", 500);
        opening.idempotency = None;
        store.commit(&opening).unwrap();
        assert!(matches!(
            store.commit(&sent(3, 100, "c-1", 1_000)).unwrap(),
            CommitResult::Done(_)
        ));
        assert!(matches!(
            store.commit(&sent(4, 7, "c-1", 2_000)).unwrap(),
            CommitResult::Done(_)
        ));
        // No key of its own: the ids live in the entries.
        assert_eq!(tree.scan_prefix([ks::IDEMPOTENCY]).count(), 0);
        // The resident resends c-1 (the actor numbered it 5): the stored one's ack comes back.
        match store.commit(&sent(5, 100, "c-1", 3_000)).unwrap() {
            CommitResult::Duplicate(ack) => assert_eq!(ack_of(&ack), (1, 3, 1_000)),
            CommitResult::Done(_) => panic!("stored twice"),
        }
        assert_eq!(store.entries(1, 0, 10).unwrap().len(), 3);
        assert_eq!(store.feed_head(100).unwrap(), 3);
        // A writer that starts afresh (a restart) reads the ids back from the timeline.
        store.write_out_now();
        let mut cache = fresh_cache(tree);
        let mut g = Group::default();
        match cache
            .stage(tree, &sent(5, 7, "c-1", 3_000), &mut g)
            .unwrap()
        {
            CommitResult::Duplicate(ack) => assert_eq!(ack_of(&ack), (1, 4, 2_000)),
            CommitResult::Done(_) => panic!("stored twice"),
        }
        assert!(matches!(
            cache
                .stage(tree, &sent(5, 7, "c-2", 3_000), &mut g)
                .unwrap(),
            CommitResult::Done(_)
        ));
        // Within one group, the staged message answers its resend.
        match cache
            .stage(tree, &sent(6, 7, "c-2", 3_500), &mut g)
            .unwrap()
        {
            CommitResult::Duplicate(ack) => assert_eq!(ack_of(&ack), (1, 5, 3_000)),
            CommitResult::Done(_) => panic!("stored twice"),
        }
        apply(&mut cache, tree, &mut g, true);
        // ... and the next group finds it in the writer's ids.
        let mut g = Group::default();
        match cache
            .stage(tree, &sent(6, 7, "c-2", 4_000), &mut g)
            .unwrap()
        {
            CommitResult::Duplicate(ack) => assert_eq!(ack_of(&ack), (1, 5, 3_000)),
            CommitResult::Done(_) => panic!("stored twice"),
        }
        // The refused-message path finds the same acks by scanning the timeline.
        let found = store.message_ack(1, 7, "c-2").unwrap().unwrap();
        assert_eq!(ack_of(&found), (1, 5, 3_000));
        assert_eq!(store.message_ack(1, 100, "c-2").unwrap(), None);
        let found = store.message_ack(1, 100, "c-1").unwrap().unwrap();
        assert_eq!(ack_of(&found), (1, 3, 1_000));
        // An id kept in its entry needs that entry first in the commit.
        let mut bad = sent(6, 7, "c-3", 4_000);
        bad.entries[0].client_msg_id = "other".into();
        assert!(matches!(store.commit(&bad), Err(StoreError::BadCommit(_))));
    }

    #[test]
    fn a_plain_message_leaves_the_record_and_readers_see_its_progress() {
        let store = Store::temporary().unwrap();
        let tree = store.keyspace();
        let raw =
            || Petition::decode(&*tree.get(pkey1(ks::PETITION, 1)).unwrap().unwrap()).unwrap();
        store.commit(&sent(1, 100, "c-1", 1_000)).unwrap();
        // The writer that stored the first one knows the record: the next two leave it.
        for (seq, at) in [(2, 2_000), (3, 3_000)] {
            store
                .commit(&sent(seq, 7, &format!("c-{seq}"), at))
                .unwrap();
        }
        assert_eq!((raw().last_seq, raw().updated_at_ms), (1, 1_000));
        let p = store.petition(1).unwrap().unwrap();
        assert_eq!((p.last_seq, p.updated_at_ms), (3, 3_000));
        // Lists read through the same catch-up.
        let listed = store.assigned_to(7).unwrap();
        assert_eq!((listed[0].last_seq, listed[0].updated_at_ms), (3, 3_000));
        // A message that changes anything else (here the state) rewrites the record.
        let mut c = sent(4, 7, "c-4", 4_000);
        c.petition.set_state(PetitionState::Responded);
        store.commit(&c).unwrap();
        assert_eq!(raw().last_seq, 4);
        assert_eq!(raw().state, PetitionState::Responded as i32);
        // A plain message writes only its group's journal record.
        store.write_out_now();
        let mut cache = fresh_cache(tree);
        let mut g = Group::default();
        let mut c = sent(5, 100, "c-5", 5_000);
        c.petition.set_state(PetitionState::Responded);
        cache.stage(tree, &c, &mut g).unwrap();
        assert_eq!(g.writes, 0);
        cache.finish(&mut g, std::time::Instant::now(), false);
        assert_eq!(g.writes, 1);
        // A commit whose time does not come from its entry keeps the record exact.
        let mut g = Group::default();
        let mut c = sent(5, 100, "c-6", 5_000);
        c.petition.set_state(PetitionState::Responded);
        c.petition.updated_at_ms = 5_001;
        cache.stage(tree, &c, &mut g).unwrap();
        assert_eq!(g.writes, 1);
    }

    #[test]
    fn assignee_index_follows_transfer_and_resolution() {
        let store = Store::temporary().unwrap();
        let commit = |p: Petition| {
            store
                .commit(&Commit {
                    petition: p,
                    ..Default::default()
                })
                .unwrap()
        };
        commit(petition(1, 7, PetitionState::Submitted, 0));
        commit(petition(1, 8, PetitionState::Transferred, 0));
        assert!(store.assigned_to(7).unwrap().is_empty());
        assert_eq!(store.assigned_to(8).unwrap().len(), 1);
        commit(petition(1, 8, PetitionState::Resolved, 0));
        assert!(store.assigned_to(8).unwrap().is_empty());
    }

    #[test]
    fn deadline_index_follows_the_next_step() {
        let store = Store::temporary().unwrap();
        let commit = |id: u64, at: i64| {
            let mut p = petition(id, 7, PetitionState::Submitted, 0);
            p.next_step_at_ms = at;
            store
                .commit(&Commit {
                    petition: p,
                    ..Default::default()
                })
                .unwrap()
        };
        commit(1, 500);
        commit(2, 100);
        commit(3, 0);
        assert_eq!(store.steps_due(499, 10).unwrap(), vec![(100, 2)]);
        assert_eq!(store.steps_due(500, 10).unwrap(), vec![(100, 2), (500, 1)]);
        commit(2, 900);
        commit(1, 0);
        assert_eq!(store.steps_due(1000, 10).unwrap(), vec![(900, 2)]);
        assert_eq!(store.pending_step_count(), 1);
    }

    #[test]
    fn petitions_of_pages_newest_first() {
        let store = Store::temporary().unwrap();
        for id in 1..=5 {
            store
                .commit(&Commit {
                    petition: petition(id, 7, PetitionState::Submitted, 0),
                    add_participants: vec![100],
                    ..Default::default()
                })
                .unwrap();
        }
        let page: Vec<u64> = store
            .petitions_of(100, 0, 2, |_| true)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(page, vec![5, 4]);
        let next: Vec<u64> = store
            .petitions_of(100, 4, 10, |p| p.id % 2 == 1)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(next, vec![3, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_resends_in_one_group_are_stored_once() {
        let store = Store::temporary().unwrap();
        let e = text(1, 1, "hi");
        let c = Commit {
            petition: petition(1, 7, PetitionState::Submitted, 1),
            entries: vec![e.clone()],
            feed: vec![(100, added(&e)), (7, added(&e))],
            idempotency: Some(IdempotencyKey {
                account_id: 100,
                client_msg_id: "m1".into(),
                scope: IdScope::Key,
                ack: b"ack-1".to_vec(),
            }),
            ..Default::default()
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (s, c) = (store.clone(), c.clone());
                tokio::spawn(async move { s.commit_durable(c).await.unwrap() })
            })
            .collect();
        let mut done = 0;
        for t in tasks {
            match t.await.unwrap() {
                CommitResult::Done(_) => done += 1,
                CommitResult::Duplicate(ack) => assert_eq!(ack, b"ack-1"),
            }
        }
        assert_eq!(done, 1);
        assert_eq!(store.feed_head(100).unwrap(), 1);
        assert_eq!(store.feed_after(7, 0, 10).unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_committers_get_dense_ordered_cursors() {
        let store = Store::temporary().unwrap();
        // 16 petitions whose messages all go to the feeds of accounts 500 and 501.
        let tasks: Vec<_> = (1..=16u64)
            .map(|pid| {
                let s = store.clone();
                tokio::spawn(async move {
                    let mut cursors = Vec::new();
                    for seq in 1..=20 {
                        let e = text(pid, seq, "x");
                        let c = Commit {
                            petition: petition(pid, 7, PetitionState::Submitted, seq),
                            entries: vec![e.clone()],
                            add_participants: vec![100],
                            feed: vec![(500, added(&e)), (501, added(&e))],
                            ..Default::default()
                        };
                        let CommitResult::Done(items) = s.commit_durable(c).await.unwrap() else {
                            panic!("duplicate")
                        };
                        cursors.push(items[0].cursor);
                    }
                    cursors
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let cursors = t.await.unwrap();
            // Each committer's messages keep their order in the feed.
            assert!(cursors.windows(2).all(|w| w[0] < w[1]));
            all.extend(cursors);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=320).collect::<Vec<u64>>());
        for account in [500, 501] {
            let feed = store.feed_after(account, 0, 1000).unwrap();
            assert_eq!(feed.len(), 320);
            assert_eq!(store.feed_head(account).unwrap(), 320);
            for (i, ev) in feed.iter().enumerate() {
                assert_eq!(ev.cursor, i as u64 + 1);
                assert_eq!(Event::decode(&*ev.event).unwrap().cursor, ev.cursor);
            }
        }
        assert_eq!(store.petitions_of(100, 0, 100, |_| true).unwrap().len(), 16);
    }

    #[test]
    fn a_message_writes_only_what_changed() {
        let store = Store::temporary().unwrap();
        let mut p = petition(1, 7, PetitionState::Submitted, 1);
        p.community_id = 5;
        p.next_step_at_ms = 900;
        let message = |p: &Petition, participants: Vec<u64>| {
            let e = text(1, p.last_seq, "a");
            store
                .commit(&Commit {
                    petition: p.clone(),
                    entries: vec![e.clone()],
                    add_participants: participants,
                    feed: vec![(100, added(&e)), (7, added(&e))],
                    ..Default::default()
                })
                .unwrap();
        };
        message(&p, vec![100, 7]);
        store.write_out_now();
        let before = store.keyspace().len();
        p.last_seq = 2;
        message(&p, vec![100]);
        store.write_out_now();
        // No key more: the entry and both events join their chunks; the indexes and
        // participants are untouched.
        assert_eq!(store.keyspace().len(), before);
        assert_eq!(store.entries(1, 0, 10).unwrap().len(), 2);
        assert_eq!(store.feed_head(100).unwrap(), 2);
        assert_eq!(store.feed_head(7).unwrap(), 2);
        assert_eq!(store.steps_due(1000, 10).unwrap(), vec![(900, 1)]);
        assert_eq!(store.assigned_to(7).unwrap().len(), 1);
        assert_eq!(store.open_petitions(5).unwrap().len(), 1);
    }

    /// 20 messages to petition 1, each in a group of its own, staged and applied as the writer
    /// does (nothing past the write-behind window); returns the writer's memory.
    fn twenty_groups(tree: &sled::Tree) -> WriterCache {
        let mut cache = fresh_cache(tree);
        for seq in 1..=20u64 {
            let e = text(1, seq, "路灯");
            let mut g = Group::default();
            let result = cache
                .stage(
                    tree,
                    &Commit {
                        petition: petition(1, 7, PetitionState::Submitted, seq),
                        entries: vec![e.clone()],
                        feed: vec![(100, added(&e)), (7, added(&e))],
                        ..Default::default()
                    },
                    &mut g,
                )
                .unwrap();
            assert!(matches!(result, CommitResult::Done(_)));
            apply(&mut cache, tree, &mut g, false);
        }
        cache
    }

    /// What a view of the tree and this overlay reads back of petition 1 and feeds 100 and 7.
    fn read_back(tree: &sled::Tree, overlay: &Overlay) -> (Vec<u64>, u64, u64) {
        let view = Chunks { tree, overlay };
        let mut seqs = Vec::new();
        for chunk in view.from(ks::TIMELINE, 1, 0) {
            for item in packed::items(&chunk.unwrap().1) {
                let item = item.unwrap();
                if !item.is_empty() {
                    seqs.push(Entry::decode(item).unwrap().seq);
                }
            }
        }
        (
            seqs,
            stored_head(view, 100).unwrap(),
            stored_head(view, 7).unwrap(),
        )
    }

    #[test]
    fn chunks_are_written_when_full_or_written_out_and_their_journal_goes() {
        let store = Store::temporary().unwrap();
        let tree = store.keyspace();
        let mut cache = twenty_groups(tree);
        // Timeline chunk 0 (entries 0-15) filled up and was written; chunk 1 and both feeds'
        // chunk 0 are dirty: kept, shown to readers, and not in the tree.
        let mut kept: Vec<ChunkKey> = cache.chunks.map.keys().copied().collect();
        kept.sort_unstable();
        let dirty = vec![
            (ks::TIMELINE, 1, 1),
            (ks::FEED_PACK, 7, 0),
            (ks::FEED_PACK, 100, 0),
        ];
        assert_eq!(kept, dirty);
        assert_eq!(cache.dirty.len(), 3);
        assert_eq!(cache.overlay.len(), 3);
        assert!(tree.get(pkey2(ks::TIMELINE, 1, 0)).unwrap().is_some());
        for key in &dirty {
            assert!(tree.get(pkey2(key.0, key.1, key.2)).unwrap().is_none());
        }
        // Every group's record is still needed: each touched a chunk that is still dirty.
        assert_eq!(tree.scan_prefix([ks::JOURNAL]).count(), 20);
        let all: Vec<u64> = (1..=20).collect();
        assert_eq!(read_back(tree, &cache.overlay), (all.clone(), 20, 20));
        // Written out: the tree holds the kept chunks byte for byte, no journal is left, and
        // readers see the same without the overlay.
        apply(&mut cache, tree, &mut Group::default(), true);
        assert!(cache.is_clean());
        assert_eq!(cache.overlay.len(), 0);
        assert_eq!(tree.scan_prefix([ks::JOURNAL]).count(), 0);
        for (key, chunk) in &cache.chunks.map {
            let stored = tree.get(pkey2(key.0, key.1, key.2)).unwrap().unwrap();
            assert_eq!(&stored[..], &chunk.bytes[..], "{key:?}");
            assert_eq!(chunk.n, packed::count(&stored).unwrap(), "{key:?}");
        }
        let bytes: usize = cache.chunks.map.values().map(|c| c.bytes.len()).sum();
        assert_eq!(cache.chunks.bytes, bytes);
        assert_eq!(read_back(tree, &Overlay::default()), (all, 20, 20));
        cache.forget(tree).unwrap();
        assert!(cache.chunks.map.is_empty());
        assert_eq!(cache.chunks.bytes, 0);
    }

    /// Commits messages 1..=3 of petition 1 (feeds of accounts 100 and 7).
    fn three_messages(store: &Store) {
        for seq in 1..=3 {
            store
                .commit(&sent(seq, 100, &format!("c-{seq}"), 1_000 * seq as i64))
                .unwrap();
        }
    }

    /// Whether the tree alone (no writer memory) holds all of `three_messages` and no journal.
    fn written_out(tree: &sled::Tree) -> bool {
        tree.scan_prefix([ks::JOURNAL]).next().is_none()
            && read_back(tree, &Overlay::default()) == (vec![1, 2, 3], 3, 3)
    }

    #[test]
    fn with_no_write_behind_every_chunk_goes_with_its_group() {
        let store = Store::temporary_with(std::time::Duration::ZERO).unwrap();
        three_messages(&store);
        // Each commit returned durable, and nothing was left behind for later.
        assert!(written_out(store.keyspace()));
        assert_eq!(store.chunks().overlay.len(), 0);
    }

    #[test]
    fn an_idle_writer_writes_its_chunks_out_a_window_after_its_last_group() {
        let tree_has_all = |store: &Store| {
            // The writer works on its own thread: wait (bounded) for what it must do unasked.
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::time::Instant::now() < give_up {
                if written_out(store.keyspace()) {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            false
        };
        let store = Store::temporary_with(std::time::Duration::from_millis(20)).unwrap();
        three_messages(&store);
        assert!(
            tree_has_all(&store),
            "an idle writer left chunks or journal records behind"
        );
        assert_eq!(store.chunks().overlay.len(), 0);
        // With a long window the same three stay behind (readers see them through the overlay).
        let store = Store::temporary_with(std::time::Duration::from_secs(60)).unwrap();
        three_messages(&store);
        assert!(!written_out(store.keyspace()));
        assert_eq!(
            read_back(store.keyspace(), store.chunks().overlay),
            (vec![1, 2, 3], 3, 3)
        );
    }

    #[test]
    fn after_a_crash_the_journal_brings_back_every_unwritten_item() {
        let store = Store::temporary().unwrap();
        let tree = store.keyspace();
        // The writer's memory is lost with its dirty chunks (a crash).
        drop(twenty_groups(tree));
        let all: Vec<u64> = (1..=20).collect();
        // The tree alone lacks them ...
        let (seqs, head_100, _) = read_back(tree, &Overlay::default());
        assert_eq!((seqs.len(), head_100), (15, 0));
        // ... and a writer starting on it replays them from the journal records.
        let mut cache = fresh_cache(tree);
        assert_eq!(cache.dirty.len(), 3);
        assert_eq!(read_back(tree, &cache.overlay), (all.clone(), 20, 20));
        // It goes on from there: a message after the restart takes the next numbers.
        let e = text(1, 21, "修好了");
        let mut g = Group::default();
        let result = cache
            .stage(
                tree,
                &Commit {
                    petition: petition(1, 7, PetitionState::Submitted, 21),
                    entries: vec![e.clone()],
                    feed: vec![(100, added(&e))],
                    ..Default::default()
                },
                &mut g,
            )
            .unwrap();
        match result {
            CommitResult::Done(items) => assert_eq!(items[0].cursor, 21),
            CommitResult::Duplicate(_) => panic!("not a resend"),
        }
        apply(&mut cache, tree, &mut g, false);
        // A second crash before anything was written replays old and new records alike.
        drop(cache);
        let cache = fresh_cache(tree);
        let (seqs, head_100, head_7) = read_back(tree, &cache.overlay);
        assert_eq!(seqs, (1..=21).collect::<Vec<u64>>());
        assert_eq!((head_100, head_7), (21, 20));
    }
}
