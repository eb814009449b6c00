//! Reading per-account event feeds. Feeds are written only by [`crate::Store::commit`].

use bytes::Bytes;

use crate::trees::{decode_u64, key1, key2, second_u64};
use crate::{Result, Store};

/// One stored feed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its cursor in the account's feed.
    pub cursor: u64,
    /// The encoded `Event`.
    pub event: Bytes,
}

impl Store {
    /// The newest cursor of an account's feed (0 when empty).
    pub fn feed_head(&self, account_id: u64) -> Result<u64> {
        match self.trees.accountid_feedhead.get(key1(account_id))? {
            Some(v) => decode_u64(&v),
            None => Ok(0),
        }
    }

    /// Up to `limit` events of an account's feed after `after_cursor`, in order.
    pub fn feed_after(
        &self,
        account_id: u64,
        after_cursor: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let start = key2(account_id, after_cursor.saturating_add(1));
        let end = key2(account_id, u64::MAX);
        self.trees
            .accountid_cursor_event
            .range(start..=end)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok(StoredEvent {
                    cursor: second_u64(&k)?,
                    event: Bytes::copy_from_slice(&v),
                })
            })
            .collect()
    }
}
