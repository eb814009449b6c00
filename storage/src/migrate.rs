//! Schema migrations that move data between trees (run at open, before the writer starts).

use crate::Result;
use crate::packed::{self, AUDIT_BUCKET_MS, AUDIT_PER_KEY, ENTRIES_PER_KEY, EVENTS_PER_KEY};
use crate::trees::{MERGED_IN_V3, ks, pkey_u64, pkey2};

/// Keys copied per batch while migrating.
const KEYS_PER_BATCH: usize = 10_000;

/// The names of the trees the database holds.
fn tree_exists(db: &sled::Db, name: &str) -> bool {
    db.tree_names()
        .iter()
        .any(|n| n.as_ref() == name.as_bytes())
}

/// Schema 2 → 3: copies every record of the trees a petition commit wrote into the petition
/// keyspace under its prefix (keys and values unchanged otherwise). Copying again after a crash
/// rewrites the same keys; the old trees are dropped only after the new version is on disk.
pub(crate) fn merge_v2_trees(db: &sled::Db, keyspace: &sled::Tree) -> Result<usize> {
    let mut copied = 0;
    for &(name, prefix) in MERGED_IN_V3 {
        let Some(prefix) = prefix else { continue };
        if !tree_exists(db, name) {
            continue;
        }
        let old = db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in old.iter() {
            let (k, v) = item?;
            let mut key = Vec::with_capacity(1 + k.len());
            key.push(prefix);
            key.extend_from_slice(&k);
            batch.insert(key, v);
            in_batch += 1;
            if in_batch == KEYS_PER_BATCH {
                keyspace.apply_batch(std::mem::take(&mut batch))?;
                copied += in_batch;
                in_batch = 0;
            }
        }
        keyspace.apply_batch(batch)?;
        copied += in_batch;
        tracing::debug!(tree = name, "merged into the petition keyspace");
    }
    Ok(copied)
}

/// Drops the trees schema 3 merged, where they still exist.
pub(crate) fn drop_merged_trees(db: &sled::Db) -> Result<()> {
    let mut dropped = false;
    for &(name, _) in MERGED_IN_V3 {
        if tree_exists(db, name) {
            db.drop_tree(name)?;
            dropped = true;
        }
    }
    if dropped {
        db.flush()?;
    }
    Ok(())
}

/// Schema 4 → 5: copies every timeline entry (`ks::ENTRY`), feed event (`ks::FEED`) and audit
/// record (`ks::AUDIT`) into the packed chunks of `ks::TIMELINE`, `ks::FEED_PACK` and
/// `ks::AUDIT_PACK` (values unchanged, each at its place in its chunk). Reads in key order, so each chunk is built whole and written once; copying again
/// after a crash writes the same chunks. The old keys are deleted only once version 5 is on disk
/// ([`drop_v4_keys`]). Returns the entries and events copied.
pub(crate) fn pack_v4(keyspace: &sled::Tree) -> Result<(usize, usize, usize)> {
    let entries = pack_prefix(keyspace, ks::ENTRY)?;
    let events = pack_prefix(keyspace, ks::FEED)?;
    let audit = pack_prefix(keyspace, ks::AUDIT)?;
    Ok((entries, events, audit))
}

/// Packs the keys under `from` (`ks::ENTRY`, `ks::FEED` or `ks::AUDIT`) into their chunks.
fn pack_prefix(keyspace: &sled::Tree, from: u8) -> Result<usize> {
    let mut copied = 0;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    let mut packer = Packer::default();
    for item in keyspace.scan_prefix([from]) {
        let (k, v) = item?;
        if let Some((key, value)) = packer.add(&k, &v)? {
            batch.insert(key, value);
            in_batch += 1;
            if in_batch >= KEYS_PER_BATCH / 10 {
                keyspace.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        copied += 1;
    }
    if let Some((key, value)) = packer.finish() {
        batch.insert(key, value);
    }
    keyspace.apply_batch(batch)?;
    Ok(copied)
}

/// A chunk being built: its key and value.
type Chunk = (Vec<u8>, Vec<u8>);

/// Packs schema 4's one-key-per-record timeline entries (`ks::ENTRY`), feed events (`ks::FEED`)
/// and audit records (`ks::AUDIT`), fed in key order, into the chunks of schema 5
/// (`ks::TIMELINE`, `ks::FEED_PACK`, `ks::AUDIT_PACK`). Used by the migration and by a restore of an older dump, which thus writes
/// a packed database directly.
#[derive(Default)]
pub(crate) struct Packer {
    /// The chunk being filled: (prefix, id, chunk number) and its value.
    current: Option<((u8, u64, u64), Vec<u8>)>,
    /// Items in the current chunk.
    items: usize,
}

impl Packer {
    /// Whether a keyspace key of schema 4 is one the packer takes.
    pub(crate) fn takes(key: &[u8]) -> bool {
        matches!(key.first(), Some(&ks::ENTRY | &ks::FEED | &ks::AUDIT))
    }

    /// Adds a record (a key [`Packer::takes`]); returns the chunk it completed, if any.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Chunk>> {
        let (id, n) = (pkey_u64(key, 0)?, pkey_u64(key, 1)?);
        let (at, pos) = match key.first() {
            Some(&ks::ENTRY) => {
                let (chunk, pos) = packed::locate(n, ENTRIES_PER_KEY);
                ((ks::TIMELINE, id, chunk), pos)
            }
            Some(&ks::FEED) => {
                let (chunk, pos) = packed::locate(n, EVENTS_PER_KEY);
                ((ks::FEED_PACK, id, chunk), pos)
            }
            // (time, petition, seq): the hour's records in key order, 16 to a chunk.
            Some(&ks::AUDIT) => {
                let hour = id / AUDIT_BUCKET_MS;
                match self.current {
                    Some(((ks::AUDIT_PACK, h, chunk), _)) if h == hour => {
                        if self.items >= AUDIT_PER_KEY {
                            ((ks::AUDIT_PACK, hour, chunk + 1), 0)
                        } else {
                            ((ks::AUDIT_PACK, hour, chunk), self.items)
                        }
                    }
                    _ => ((ks::AUDIT_PACK, hour, 0), 0),
                }
            }
            _ => {
                return Err(crate::StoreError::Corrupt(format!(
                    "not a timeline, feed or audit key: {key:?}"
                )));
            }
        };
        let done = match &self.current {
            Some((cur, _)) if *cur != at => self.finish_current(),
            _ => None,
        };
        let (_, chunk_value) = self.current.get_or_insert_with(|| (at, Vec::new()));
        packed::place(chunk_value, pos, value)?;
        self.items = pos + 1;
        Ok(done)
    }

    fn finish_current(&mut self) -> Option<Chunk> {
        self.current
            .take()
            .map(|((to, id, chunk), value)| (pkey2(to, id, chunk).to_vec(), value))
    }

    /// The last chunk, once every record was added.
    pub(crate) fn finish(mut self) -> Option<Chunk> {
        self.finish_current()
    }
}

/// Deletes the one-key-per-record timelines and feeds of schema 4, where any are left.
pub(crate) fn drop_v4_keys(db: &sled::Db, keyspace: &sled::Tree) -> Result<()> {
    let mut dropped = 0usize;
    for prefix in [ks::ENTRY, ks::FEED, ks::AUDIT] {
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in keyspace.scan_prefix([prefix]).take(KEYS_PER_BATCH) {
                batch.remove(item?.0);
                n += 1;
            }
            if n == 0 {
                break;
            }
            keyspace.apply_batch(batch)?;
            dropped += n;
        }
    }
    if dropped > 0 {
        db.flush()?;
        tracing::info!(
            keys = dropped,
            "schema 5: the unpacked timelines and feeds deleted"
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lianxin_protocol::v1::{
        AuditRecord, Entry, EntryAdded, Event, Petition, PetitionState, ReadMark, TextBody, entry,
        event,
    };
    use prost::Message;

    use crate::trees::{
        MERGED_IN_V3, META_SCHEMA_VERSION, key_bytes, key1, key2, key3, ks, pkey2, pkey3,
    };
    use crate::{Commit, CommitResult, SCHEMA_VERSION, Store, StoreConfig};

    fn text(seq: u64, s: &str) -> Entry {
        Entry {
            petition_id: 1,
            seq,
            author_id: 100,
            at_ms: 1_000 + seq as i64,
            body: Some(entry::Body::Text(TextBody { text: s.into() })),
            ..Default::default()
        }
    }

    fn added(e: &Entry) -> event::Kind {
        event::Kind::EntryAdded(EntryAdded {
            entry: Some(e.clone()),
            state: PetitionState::Submitted as i32,
            assignee_id: 7,
        })
    }

    /// Writes a database exactly as schema version 2 laid it out: one tree per kind of record,
    /// keys without prefixes, feed heads in a tree of their own.
    fn write_v2(path: &std::path::Path) -> Petition {
        let db = sled::Config::new().path(path).open().unwrap();
        let tree = |name: &str| db.open_tree(name).unwrap();
        let mut p = Petition {
            id: 1,
            resident_id: 100,
            assignee_id: 7,
            community_id: 5,
            created_at_ms: 1_000,
            next_step_at_ms: 900,
            last_seq: 2,
            title: "路灯不亮".into(),
            ..Default::default()
        };
        p.set_state(PetitionState::Submitted);
        tree("petitionid_petition")
            .insert(key1(1), p.encode_to_vec())
            .unwrap();
        for (seq, s) in [(1, "路灯坏了"), (2, "还没修")] {
            let e = text(seq, s);
            tree("petitionid_seq_entry")
                .insert(key2(1, seq), e.encode_to_vec())
                .unwrap();
            let ev = Event {
                cursor: seq,
                at_ms: e.at_ms,
                kind: Some(added(&e)),
            };
            tree("accountid_cursor_event")
                .insert(key2(100, seq), ev.encode_to_vec())
                .unwrap();
        }
        tree("accountid_feedhead")
            .insert(key1(100), &2u64.to_be_bytes())
            .unwrap();
        tree("accountid_petitionid")
            .insert(key2(100, 1), &[][..])
            .unwrap();
        tree("assigneeid_petitionid")
            .insert(key2(7, 1), &[][..])
            .unwrap();
        tree("accountid_clientmsgid_ack")
            .insert(key_bytes(100, b"m/1/c-1"), &b"ack-1"[..])
            .unwrap();
        tree("stepat_petitionid")
            .insert(key2(900, 1), &[][..])
            .unwrap();
        tree("communityid_createdat_petitionid")
            .insert(key3(5, 1_000, 1), &[][..])
            .unwrap();
        tree("communityid_open_petitionid")
            .insert(key2(5, 1), &[][..])
            .unwrap();
        let audit = AuditRecord {
            at_ms: 1_000,
            petition_id: 1,
            community_id: 5,
            ..Default::default()
        };
        tree("atms_petitionid_seq_audit")
            .insert(key3(1_000, 1, 1), audit.encode_to_vec())
            .unwrap();
        let mark = ReadMark {
            petition_id: 1,
            reader_id: 7,
            seq: 2,
            ..Default::default()
        };
        tree("petitionid_accountid_readmark")
            .insert(key2(1, 7), mark.encode_to_vec())
            .unwrap();
        tree("meta")
            .insert(META_SCHEMA_VERSION, &2u64.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
        p
    }

    fn check(store: &Store, p: &Petition) {
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.petition(1).unwrap().as_ref(), Some(p));
        let texts: Vec<u64> = store
            .entries(1, 0, 2)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(texts, [1, 2]);
        assert_eq!(store.feed_after(100, 0, 2).unwrap().len(), 2);
        assert_eq!(store.petitions_of(100, 0, 10, |_| true).unwrap().len(), 1);
        assert_eq!(store.assigned_to(7).unwrap().len(), 1);
        assert_eq!(
            store.idempotent_ack(100, "m/1/c-1").unwrap(),
            Some(b"ack-1".to_vec())
        );
        assert_eq!(store.steps_due(1_000, 10).unwrap(), vec![(900, 1)]);
        assert_eq!(store.petitions_created(5, 0, 2_000).unwrap().len(), 1);
        assert_eq!(store.open_petitions(5).unwrap().len(), 1);
        assert_eq!(store.audit_log(0, 2_000).unwrap().len(), 1);
        assert_eq!(store.read_marks(1).unwrap().len(), 1);
    }

    /// Writes a schema 4 database: one key per timeline entry and per feed event (40 entries,
    /// each announced to account 100 by reference, and 40 whole events to account 101).
    fn write_v4(path: &std::path::Path) -> (Vec<Entry>, Vec<Vec<u8>>) {
        let db = sled::Config::new().path(path).open().unwrap();
        let ks_tree = db.open_tree("petition_keyspace").unwrap();
        let mut entries = Vec::new();
        let mut whole = Vec::new();
        for seq in 1..=40u64 {
            let e = text(seq, &format!("第{seq}条"));
            ks_tree
                .insert(pkey2(ks::ENTRY, 1, seq), e.encode_to_vec())
                .unwrap();
            let r = crate::feed::FeedRef {
                petition_id: 1,
                seq,
                state: PetitionState::Submitted as i32,
                assignee_id: 7,
            };
            ks_tree
                .insert(pkey2(ks::FEED, 100, seq), r.encode(e.at_ms))
                .unwrap();
            let ev = Event {
                cursor: seq,
                at_ms: e.at_ms,
                kind: Some(added(&e)),
            }
            .encode_to_vec();
            ks_tree
                .insert(pkey2(ks::FEED, 101, seq), ev.clone())
                .unwrap();
            entries.push(e);
            whole.push(ev);
        }
        // 40 audit records: 34 in one hour (three chunks), 6 in the next.
        for i in 0..40u64 {
            let at = 3_600_000 + if i < 34 { i } else { 3_600_000 + i };
            let r = AuditRecord {
                at_ms: at as i64,
                petition_id: 1,
                entry: Some(text(i + 1, "t")),
                ..Default::default()
            };
            ks_tree
                .insert(pkey3(ks::AUDIT, at, 1, i + 1), r.encode_to_vec())
                .unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .insert(META_SCHEMA_VERSION, &4u64.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
        (entries, whole)
    }

    fn old_keys(store: &Store) -> usize {
        [ks::ENTRY, ks::FEED, ks::AUDIT]
            .iter()
            .map(|p| store.keyspace().scan_prefix([*p]).count())
            .sum()
    }

    #[test]
    fn a_v4_database_opens_packed_with_every_entry_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let (entries, whole) = write_v4(dir.path());
        let config = StoreConfig::new(dir.path());
        let check = |store: &Store| {
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            assert_eq!(store.entries(1, 0, 100).unwrap(), entries);
            assert_eq!(store.entries(1, 17, 2).unwrap(), entries[17..19]);
            assert_eq!(store.feed_head(100).unwrap(), 40);
            assert_eq!(store.feed_head(101).unwrap(), 40);
            let by_ref = store.feed_after(100, 0, 100).unwrap();
            let stored_whole = store.feed_after(101, 0, 100).unwrap();
            assert_eq!(by_ref.len(), 40);
            for (i, (a, b)) in by_ref.iter().zip(&stored_whole).enumerate() {
                assert_eq!(a.cursor, i as u64 + 1);
                assert_eq!(
                    &a.event[..],
                    &whole[i][..],
                    "by reference, cursor {}",
                    a.cursor
                );
                assert_eq!(&b.event[..], &whole[i][..], "whole, cursor {}", b.cursor);
            }
            let audit = store.audit_log(0, i64::MAX).unwrap();
            let seqs: Vec<u64> = audit
                .iter()
                .map(|r| r.entry.as_ref().unwrap().seq)
                .collect();
            assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
            assert_eq!(store.audit_log(3_600_010, 7_200_035).unwrap().len(), 25);
            assert_eq!(old_keys(store), 0);
        };
        {
            let store = Store::open(&config).unwrap();
            check(&store);
            // 40 entries in 3 keys, 80 events in 4, 40 audit records in 3 + 1.
            let packed = |p: u8| store.keyspace().scan_prefix([p]).count();
            assert_eq!(
                (
                    packed(ks::TIMELINE),
                    packed(ks::FEED_PACK),
                    packed(ks::AUDIT_PACK)
                ),
                (3, 4, 4)
            );
            // The feed goes on from its head, in the chunk it ends in.
            let e = text(41, "续");
            let c = Commit {
                petition: Petition {
                    id: 1,
                    last_seq: 41,
                    ..Default::default()
                },
                entries: vec![e.clone()],
                feed: vec![(100, added(&e))],
                ..Default::default()
            };
            let CommitResult::Done(items) = store.commit(&c).unwrap() else {
                panic!("duplicate")
            };
            assert_eq!(items[0].cursor, 41);
            assert_eq!(store.entries(1, 40, 10).unwrap(), [e]);
        }
        let store = Store::open(&config).unwrap();
        assert_eq!(store.feed_head(100).unwrap(), 41);
        assert_eq!(store.entries(1, 0, 100).unwrap().len(), 41);
    }

    #[test]
    fn old_keys_left_by_a_crash_after_the_version_was_written_go_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let (entries, _) = write_v4(dir.path());
        {
            // As a crash would leave it: packed and version 5 on disk, old keys still there.
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let ks_tree = db.open_tree("petition_keyspace").unwrap();
            super::pack_v4(&ks_tree).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes()[..])
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        assert_eq!(old_keys(&store), 0);
        assert_eq!(store.entries(1, 0, 100).unwrap(), entries);
        assert_eq!(store.feed_after(100, 0, 100).unwrap().len(), 40);
    }

    #[test]
    fn a_v5_database_keeps_recognising_its_resends_and_its_progress() {
        use crate::petitions::{IdScope, IdempotencyKey};
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let mut p = Petition {
            id: 1,
            resident_id: 100,
            assignee_id: 7,
            ..Default::default()
        };
        p.set_state(PetitionState::Submitted);
        let sent = Entry {
            client_msg_id: "c-9".into(),
            ..text(3, "灯还没修")
        };
        {
            // As schema 5 wrote a message: the record with its progress, and a key for the id.
            let store = Store::open(&config).unwrap();
            for seq in 1..=2 {
                p.last_seq = seq;
                let e = text(seq, "开头");
                store
                    .commit(&Commit {
                        petition: p.clone(),
                        entries: vec![e],
                        ..Default::default()
                    })
                    .unwrap();
            }
            p.last_seq = 3;
            p.updated_at_ms = sent.at_ms;
            let ack = lianxin_protocol::v1::MessageAck {
                petition_id: 1,
                seq: 3,
                at_ms: sent.at_ms,
                duplicate: false,
            };
            store
                .commit(&Commit {
                    petition: p.clone(),
                    entries: vec![sent.clone()],
                    feed: vec![(100, added(&sent))],
                    idempotency: Some(IdempotencyKey {
                        account_id: 100,
                        client_msg_id: "m/1/c-9".into(),
                        scope: IdScope::Key,
                        ack: ack.encode_to_vec(),
                    }),
                    ..Default::default()
                })
                .unwrap();
            // Schema 5 rewrote the record with every message.
            store
                .keyspace()
                .insert(crate::trees::pkey1(ks::PETITION, 1), p.encode_to_vec())
                .unwrap();
            store
                .trees
                .meta
                .insert(META_SCHEMA_VERSION, &5u64.to_be_bytes()[..])
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(&config).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let stored = store.petition(1).unwrap().unwrap();
        assert_eq!((stored.last_seq, stored.updated_at_ms), (3, sent.at_ms));
        // The client resends after the upgrade (the actor numbered it 4): found in its entry.
        p.last_seq = 4;
        let resend = Commit {
            petition: p.clone(),
            entries: vec![Entry {
                seq: 4,
                ..sent.clone()
            }],
            idempotency: Some(IdempotencyKey {
                account_id: 100,
                client_msg_id: "c-9".into(),
                scope: IdScope::Entry,
                ack: Vec::new(),
            }),
            ..Default::default()
        };
        match store.commit(&resend).unwrap() {
            CommitResult::Duplicate(ack) => {
                let ack = lianxin_protocol::v1::MessageAck::decode(&ack[..]).unwrap();
                assert_eq!((ack.petition_id, ack.seq, ack.at_ms), (1, 3, sent.at_ms));
            }
            CommitResult::Done(_) => panic!("stored twice"),
        }
        assert_eq!(store.entries(1, 0, 10).unwrap().len(), 3);
    }

    #[test]
    fn a_v2_database_opens_migrated_with_all_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = write_v2(dir.path());
        let config = StoreConfig::new(dir.path());
        {
            let store = Store::open(&config).unwrap();
            check(&store, &p);
            assert_eq!(store.feed_head(100).unwrap(), 2);
            let names = store.db.tree_names();
            for (name, _) in MERGED_IN_V3 {
                assert!(
                    !names.iter().any(|n| n.as_ref() == name.as_bytes()),
                    "{name}"
                );
            }
            // The feed goes on from its stored head, and the old idempotency key still holds.
            p.last_seq = 3;
            let e = text(3, "修好了");
            let c = Commit {
                petition: p.clone(),
                entries: vec![e.clone()],
                feed: vec![(100, added(&e))],
                ..Default::default()
            };
            let CommitResult::Done(items) = store.commit(&c).unwrap() else {
                panic!("duplicate")
            };
            assert_eq!(items[0].cursor, 3);
            let resend = Commit {
                idempotency: Some(crate::petitions::IdempotencyKey {
                    account_id: 100,
                    client_msg_id: "m/1/c-1".into(),
                    scope: crate::petitions::IdScope::Key,
                    ack: b"other".to_vec(),
                }),
                ..c
            };
            assert!(matches!(
                store.commit(&resend).unwrap(),
                CommitResult::Duplicate(ack) if ack == b"ack-1"
            ));
        }
        // Opening the migrated database again changes nothing.
        let store = Store::open(&config).unwrap();
        check(&store, &p);
        assert_eq!(old_keys(&store), 0);
        assert_eq!(store.feed_head(100).unwrap(), 3);
    }
}
