//! Petitions, their timelines, read marks and indexes, and the one atomic write that changes them:
//! a [`Commit`] stores a petition's new state, its new timeline entries, the feed events of everyone
//! concerned and the sender's idempotency key together, or none of them.

use bytes::Bytes;
use lianxin_protocol::v1::{
    AuditRecord, Entry, Event, Petition, PetitionState, ReadMark, entry, event,
};
use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::trees::{commit_idx as ix, decode_u64, key_bytes, key1, key2, key3, second_u64};
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
}

/// A client's message id, remembered with the acknowledgement it got.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey {
    /// The sending account.
    pub account_id: u64,
    /// The client's own id for the message.
    pub client_msg_id: String,
    /// The acknowledgement, encoded; returned as it is for a resend.
    pub ack: Vec<u8>,
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

/// The creation-index key of a petition.
fn created_key(p: &Petition) -> [u8; 24] {
    key3(p.community_id, p.created_at_ms.max(0) as u64, p.id)
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

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

fn corrupt<T>(e: impl std::fmt::Display) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(StoreError::Corrupt(
        e.to_string(),
    )))
}

fn append_feed(
    feed: &TransactionalTree,
    heads: &TransactionalTree,
    account_id: u64,
    at_ms: i64,
    kind_bytes: &[u8],
) -> TxResult<FeedItem> {
    let head = match heads.get(key1(account_id))? {
        Some(v) => match decode_u64(&v) {
            Ok(h) => h,
            Err(e) => return corrupt(e),
        },
        None => 0,
    };
    let cursor = head + 1;
    // An Event is its cursor and time followed by its kind; protobuf fields may be concatenated,
    // so the kind is encoded once per commit and shared by every recipient.
    let mut bytes = Event {
        cursor,
        at_ms,
        kind: None,
    }
    .encode_to_vec();
    bytes.extend_from_slice(kind_bytes);
    feed.insert(&key2(account_id, cursor), bytes.as_slice())?;
    heads.insert(&key1(account_id), &cursor.to_be_bytes())?;
    Ok(FeedItem {
        account_id,
        cursor,
        event: Bytes::from(bytes),
    })
}

impl Store {
    /// Applies a commit atomically (see [`Commit`]).
    pub fn commit(&self, c: &Commit) -> Result<CommitResult> {
        let p = &c.petition;
        let petition_bytes = p.encode_to_vec();
        let entries: Vec<([u8; 16], Vec<u8>)> = c
            .entries
            .iter()
            .map(|e| (key2(p.id, e.seq), e.encode_to_vec()))
            .collect();
        let kinds: Vec<(u64, Vec<u8>)> = c
            .feed
            .iter()
            .map(|(account, kind)| {
                let bytes = Event {
                    cursor: 0,
                    at_ms: 0,
                    kind: Some(kind.clone()),
                }
                .encode_to_vec();
                (*account, bytes)
            })
            .collect();
        // Every state change, rating, transfer, escalation and supervision step goes to the audit log.
        let audit: Vec<([u8; 24], Vec<u8>)> = c
            .entries
            .iter()
            .filter(|e| {
                matches!(
                    e.body,
                    Some(entry::Body::Transition(_) | entry::Body::Supervision(_))
                )
            })
            .map(|e| {
                let record = audit_record(p, e);
                (
                    key3(e.at_ms.max(0) as u64, p.id, e.seq),
                    record.encode_to_vec(),
                )
            })
            .collect();
        let idem_key = c
            .idempotency
            .as_ref()
            .map(|k| key_bytes(k.account_id, k.client_msg_id.as_bytes()));
        let trees = self.trees.petition_commit_set();

        let outcome = trees.as_slice().transaction(|t| {
            if let (Some(key), Some(_)) = (&idem_key, &c.idempotency)
                && let Some(ack) = t[ix::IDEMPOTENCY].get(key)?
            {
                return Ok(CommitResult::Duplicate(ack.to_vec()));
            }
            let old = match t[ix::PETITION].get(key1(p.id))? {
                Some(v) => match Petition::decode(&*v) {
                    Ok(old) => Some(old),
                    Err(e) => return corrupt(e),
                },
                None => None,
            };
            t[ix::PETITION].insert(&key1(p.id), petition_bytes.as_slice())?;
            for (key, bytes) in &entries {
                t[ix::ENTRY].insert(&key[..], bytes.as_slice())?;
            }
            for (key, bytes) in &audit {
                t[ix::AUDIT].insert(&key[..], bytes.as_slice())?;
            }
            // Keep the assignee index in step with the petition.
            if let Some(old) = &old
                && needs_assignee(old.state)
                && old.assignee_id != 0
            {
                t[ix::ASSIGNEE_PETITION].remove(&key2(old.assignee_id, p.id))?;
            }
            if needs_assignee(p.state) && p.assignee_id != 0 {
                t[ix::ASSIGNEE_PETITION].insert(&key2(p.assignee_id, p.id), &[][..])?;
            }
            // And the deadline index with its next supervision step.
            if let Some(old) = &old
                && old.next_step_at_ms > 0
            {
                t[ix::STEP_AT].remove(&key2(old.next_step_at_ms as u64, p.id))?;
            }
            if p.next_step_at_ms > 0 {
                t[ix::STEP_AT].insert(&key2(p.next_step_at_ms as u64, p.id), &[][..])?;
            }
            // And the community indexes (a transfer may move a petition to another community).
            if let Some(old) = &old {
                t[ix::COMMUNITY_CREATED].remove(&created_key(old)[..])?;
                t[ix::COMMUNITY_OPEN].remove(&key2(old.community_id, p.id))?;
            }
            t[ix::COMMUNITY_CREATED].insert(&created_key(p)[..], &[][..])?;
            if is_open(p.state) {
                t[ix::COMMUNITY_OPEN].insert(&key2(p.community_id, p.id), &[][..])?;
            }
            for account in &c.add_participants {
                t[ix::ACCOUNT_PETITION].insert(&key2(*account, p.id), &[][..])?;
            }
            if let Some(mark) = &c.read_mark {
                t[ix::READMARK].insert(
                    &key2(mark.petition_id, mark.reader_id),
                    mark.encode_to_vec().as_slice(),
                )?;
            }
            let mut items = Vec::with_capacity(kinds.len());
            for (account, kind_bytes) in &kinds {
                items.push(append_feed(
                    &t[ix::FEED],
                    &t[ix::FEEDHEAD],
                    *account,
                    c.at_ms,
                    kind_bytes,
                )?);
            }
            if let (Some(key), Some(k)) = (&idem_key, &c.idempotency) {
                t[ix::IDEMPOTENCY].insert(key.as_slice(), k.ack.as_slice())?;
            }
            Ok(CommitResult::Done(items))
        });
        outcome.map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Engine(e),
        })
    }

    /// The petition with this id.
    pub fn petition(&self, id: u64) -> Result<Option<Petition>> {
        match self.trees.petitionid_petition.get(key1(id))? {
            Some(v) => Ok(Some(Petition::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` timeline entries of a petition with a sequence number above `after_seq`.
    pub fn entries(&self, petition_id: u64, after_seq: u64, limit: usize) -> Result<Vec<Entry>> {
        let start = key2(petition_id, after_seq.saturating_add(1));
        let end = key2(petition_id, u64::MAX);
        self.trees
            .petitionid_seq_entry
            .range(start..=end)
            .take(limit)
            .map(|item| Ok(Entry::decode(&*item?.1)?))
            .collect()
    }

    /// The read marks of every participant of a petition.
    pub fn read_marks(&self, petition_id: u64) -> Result<Vec<ReadMark>> {
        self.trees
            .petitionid_accountid_readmark
            .scan_prefix(key1(petition_id))
            .map(|item| Ok(ReadMark::decode(&*item?.1)?))
            .collect()
    }

    /// The acknowledgement stored for a client message id, if it was seen before.
    pub fn idempotent_ack(&self, account_id: u64, client_msg_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .trees
            .accountid_clientmsgid_ack
            .get(key_bytes(account_id, client_msg_id.as_bytes()))?
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
        let start = key2(account_id, 0);
        let end = key2(
            account_id,
            if before_id == 0 { u64::MAX } else { before_id },
        );
        let mut out = Vec::new();
        for item in self.trees.accountid_petitionid.range(start..end).rev() {
            let (k, _) = item?;
            let id = second_u64(&k)?;
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
        let mut out = Vec::new();
        for item in self
            .trees
            .assigneeid_petitionid
            .scan_prefix(key1(assignee_id))
        {
            let (k, _) = item?;
            if let Some(p) = self.petition(second_u64(&k)?)? {
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
        let end = key2(now_ms as u64, u64::MAX);
        self.trees
            .stepat_petitionid
            .range(..=end)
            .take(limit)
            .map(|item| {
                let (k, _) = item?;
                Ok((decode_u64(&k[..8])? as i64, second_u64(&k)?))
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
        let from = key3(community_id, from_ms.max(0) as u64, 0);
        let to = key3(community_id, to_ms.max(0) as u64, 0);
        let mut out = Vec::new();
        for item in self.trees.communityid_createdat_petitionid.range(from..to) {
            let (k, _) = item?;
            let id = k
                .get(16..24)
                .ok_or_else(|| StoreError::Corrupt("short creation key".into()))
                .and_then(decode_u64)?;
            if let Some(p) = self.petition(id)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The open petitions (not closed or withdrawn) of a community.
    pub fn open_petitions(&self, community_id: u64) -> Result<Vec<Petition>> {
        let mut out = Vec::new();
        for item in self
            .trees
            .communityid_open_petitionid
            .scan_prefix(key1(community_id))
        {
            let (k, _) = item?;
            if let Some(p) = self.petition(second_u64(&k)?)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Rebuilds the community indexes from the petitions (schema migration 1 → 2).
    pub(crate) fn rebuild_community_indexes(&self) -> Result<usize> {
        let mut n = 0;
        for item in self.trees.petitionid_petition.iter() {
            let (_, v) = item?;
            let p = Petition::decode(&*v)?;
            self.trees
                .communityid_createdat_petitionid
                .insert(&created_key(&p)[..], &[][..])?;
            if is_open(p.state) {
                self.trees
                    .communityid_open_petitionid
                    .insert(&key2(p.community_id, p.id)[..], &[][..])?;
            }
            n += 1;
        }
        Ok(n)
    }

    /// The audit log from `from_ms` (inclusive) to `to_ms` (exclusive), oldest first.
    pub fn audit_log(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AuditRecord>> {
        let from = key3(from_ms.max(0) as u64, 0, 0);
        let to = key3(to_ms.max(0) as u64, 0, 0);
        self.trees
            .atms_petitionid_seq_audit
            .range(from..to)
            .map(|item| {
                let (_, v) = item?;
                Ok(AuditRecord::decode(&*v)?)
            })
            .collect()
    }

    /// Number of petitions with a pending supervision step.
    pub fn pending_step_count(&self) -> usize {
        self.trees.stepat_petitionid.len()
    }

    /// Number of petitions stored.
    pub fn petition_count(&self) -> usize {
        self.trees.petitionid_petition.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{EntryAdded, TextBody, entry};

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
        store.rebuild_community_indexes().unwrap();
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
}
