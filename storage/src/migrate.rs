//! Schema migrations that move data between trees (run at open, before the writer starts).

use crate::Result;
use crate::trees::MERGED_IN_V3;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lianxin_protocol::v1::{
        AuditRecord, Entry, EntryAdded, Event, Petition, PetitionState, ReadMark, TextBody, entry,
        event,
    };
    use prost::Message;

    use crate::trees::{MERGED_IN_V3, META_SCHEMA_VERSION, key_bytes, key1, key2, key3};
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
        assert_eq!(store.feed_head(100).unwrap(), 3);
    }
}
