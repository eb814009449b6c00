//! Reading per-account event feeds. Feeds are written only by the single writer
//! ([`crate::Store::commit_durable`]).
//!
//! A reader sees a gap-free run of an account's events, and only events that are on disk: the
//! writer applies a group's events before its flush, so readers cap each feed at the last cursor
//! known to be flushed ([`crate::durability`]), and stop at the first missing cursor.

use bytes::Bytes;
use lianxin_protocol::v1::{Entry, EntryAdded, Event, event};
use prost::Message;
use prost::encoding::{decode_varint, encode_varint};

use crate::packed::{self, ENTRIES_PER_KEY, EVENTS_PER_KEY};
use crate::petitions::stored_head;
use crate::trees::ks;
use crate::{Result, Store, StoreError};

/// The first byte of a feed value stored as a [`FeedRef`]. An encoded `Event` never starts with
/// it (a protobuf key byte names a field number of at least 1, so it is at least 0x08).
const REF_TAG: u8 = 0x01;

/// An `EntryAdded` feed event stored as where its entry is: the entry itself lives once, in its
/// petition's timeline, instead of once per recipient (schema 4; older feeds hold whole events,
/// which stay readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedRef {
    /// The petition.
    pub petition_id: u64,
    /// The entry's sequence number in it.
    pub seq: u64,
    /// The petition's state after the entry.
    pub state: i32,
    /// Its assignee after the entry.
    pub assignee_id: u64,
}

impl FeedRef {
    /// The stored value: the tag, then varints of the time, petition, seq, state and assignee.
    pub(crate) fn encode(&self, at_ms: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(REF_TAG);
        for v in [
            at_ms as u64,
            self.petition_id,
            self.seq,
            self.state as u32 as u64,
            self.assignee_id,
        ] {
            encode_varint(v, &mut out);
        }
        out
    }

    /// Reads a stored value; `None` if it is not a reference (a whole event).
    fn decode(value: &[u8]) -> Result<Option<(i64, FeedRef)>> {
        let Some((&REF_TAG, mut rest)) = value.split_first() else {
            return Ok(None);
        };
        let mut next = || {
            decode_varint(&mut rest)
                .map_err(|e| StoreError::Corrupt(format!("feed reference: {e}")))
        };
        let at_ms = next()? as i64;
        let r = FeedRef {
            petition_id: next()?,
            seq: next()?,
            state: next()? as u32 as i32,
            assignee_id: next()?,
        };
        Ok(Some((at_ms, r)))
    }
}

/// One stored feed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its cursor in the account's feed.
    pub cursor: u64,
    /// The encoded `Event`.
    pub event: Bytes,
}

impl Store {
    /// The newest cursor of an account's feed that is on disk (0 when empty).
    pub fn feed_head(&self, account_id: u64) -> Result<u64> {
        let head = stored_head(self.chunks(), account_id)?;
        // Checked after reading: a floor set before the events were applied covers them.
        Ok(match self.writer.floors().cap(account_id) {
            Some(floor) => head.min(floor),
            None => head,
        })
    }

    /// Up to `limit` events of an account's feed after `after_cursor`, in order, without gaps,
    /// only those on disk.
    pub fn feed_after(
        &self,
        account_id: u64,
        after_cursor: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let first = after_cursor.saturating_add(1);
        let chunks = self.chunks();
        let mut out: Vec<StoredEvent> = Vec::new();
        // The timeline chunk read last: consecutive events mostly refer to the same petition.
        let mut timeline: Option<((u64, u64), sled::IVec)> = None;
        'chunks: for item in chunks.from(ks::FEED_PACK, account_id, first / EVENTS_PER_KEY) {
            let (chunk, v) = item?;
            for (pos, bytes) in (0u64..).zip(packed::items(&v)) {
                let bytes = bytes?;
                let cursor = chunk.saturating_mul(EVENTS_PER_KEY).saturating_add(pos);
                if cursor < first {
                    continue;
                }
                if out.len() >= limit {
                    break 'chunks;
                }
                // Cursors are dense, so a gap (an empty item, or a chunk that is missing or
                // short) is a group being applied right now; what follows it is read next time.
                if bytes.is_empty()
                    || after_cursor.checked_add(out.len() as u64 + 1) != Some(cursor)
                {
                    break 'chunks;
                }
                let event = match FeedRef::decode(bytes)? {
                    None => Bytes::copy_from_slice(bytes),
                    Some((at_ms, r)) => {
                        let (tchunk, tpos) = packed::locate(r.seq, ENTRIES_PER_KEY);
                        let at = (r.petition_id, tchunk);
                        let cached = match &timeline {
                            Some((key, value)) if *key == at => Some(value.clone()),
                            _ => chunks.get((ks::TIMELINE, at.0, at.1))?,
                        };
                        let stored = match &cached {
                            Some(value) => packed::get(value, tpos)?,
                            None => None,
                        }
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "feed of {account_id} at {cursor}: no entry {} of petition {}",
                                r.seq, r.petition_id
                            ))
                        })?;
                        let event = Event {
                            cursor,
                            at_ms,
                            kind: Some(event::Kind::EntryAdded(EntryAdded {
                                entry: Some(Entry::decode(stored)?),
                                state: r.state,
                                assignee_id: r.assignee_id,
                            })),
                        };
                        if let Some(value) = cached {
                            timeline = Some((at, value));
                        }
                        Bytes::from(event.encode_to_vec())
                    }
                };
                out.push(StoredEvent { cursor, event });
            }
        }
        // Checked after reading: a floor set before the events were applied covers them.
        if let Some(floor) = self.writer.floors().cap(account_id) {
            out.retain(|e| e.cursor <= floor);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use lianxin_protocol::v1::{ReadReceipt, event};

    use crate::trees::{ks, pkey2};
    use crate::{Commit, Store};

    /// A store whose account 100 has events 1 and 2, and a stray event 4 (a hole at 3).
    fn feed_with_a_hole() -> Store {
        let store = Store::temporary().unwrap();
        let receipt = event::Kind::ReadReceipt(ReadReceipt::default());
        let c = Commit {
            feed: vec![(100, receipt.clone()), (100, receipt)],
            ..Default::default()
        };
        store.commit(&c).unwrap();
        store.write_out_now();
        // Cursor 4 is in the same chunk as 1 and 2: the chunk gets a gap at 3.
        let chunk = pkey2(ks::FEED_PACK, 100, 0);
        let mut value = store.keyspace().get(chunk).unwrap().unwrap().to_vec();
        crate::packed::place(&mut value, 4, b"stray").unwrap();
        store.keyspace().insert(chunk, value).unwrap();
        store
    }

    #[test]
    fn a_reader_stops_at_the_first_missing_cursor() {
        let store = feed_with_a_hole();
        let cursors = |after| -> Vec<u64> {
            store
                .feed_after(100, after, 10)
                .unwrap()
                .iter()
                .map(|e| e.cursor)
                .collect()
        };
        assert_eq!(cursors(0), [1, 2]);
        assert_eq!(cursors(1), [2]);
        assert!(cursors(2).is_empty());
        assert_eq!(cursors(3), [4]);
        assert!(cursors(u64::MAX - 1).is_empty());
        assert!(cursors(u64::MAX).is_empty());
    }
}
