//! Every sled tree, declared in one list, and the key layout.
//!
//! Tree names say what maps to what (`petitionid_seq_entry`: petition id and sequence number →
//! timeline entry). Integer key parts are big-endian, so range scans run in numeric order.

use crate::{Result, StoreError};

/// Metadata key holding the schema version (u64, big-endian).
pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";

macro_rules! declare_trees {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Handles on every tree of the database.
        #[derive(Clone)]
        pub struct Trees {
            $($(#[doc = $doc])* pub $name: sled::Tree,)*
        }

        /// The names of every tree, in declaration order.
        pub const TREE_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Trees {
            /// Opens (creating if needed) every tree.
            pub fn open(db: &sled::Db) -> Result<Trees> {
                Ok(Trees { $($name: db.open_tree(stringify!($name))?,)* })
            }
        }
    };
}

declare_trees! {
    /// Schema version and other small settings.
    meta,
    /// account id → `AccountRecord`.
    accountid_account,
    /// login (lower-cased) → account id.
    login_accountid,
    /// (grid id, account id) → role byte: the grid's workers and head.
    gridid_accountid,
    /// sha-256 of a session token → `SessionRecord`.
    tokenhash_session,
    /// (account id, sha-256 of token) → (): an account's sessions, for sign-out everywhere.
    accountid_tokenhash,
    /// community id → `Community`.
    communityid_community,
    /// grid id → `Grid`.
    gridid_grid,
    /// normalised address → grid id.
    address_gridid,
    /// petition id → `Petition` (its current state).
    petitionid_petition,
    /// (petition id, seq) → `Entry`: the petition's timeline.
    petitionid_seq_entry,
    /// (petition id, account id) → `ReadMark`.
    petitionid_accountid_readmark,
    /// (account id, petition id) → (): petitions an account takes part in.
    accountid_petitionid,
    /// (assignee id, petition id) → (): open petitions assigned to a worker.
    assigneeid_petitionid,
    /// (account id, cursor) → encoded `Event`: the account's feed.
    accountid_cursor_event,
    /// account id → last cursor of its feed.
    accountid_feedhead,
    /// (account id, client message id) → encoded acknowledgement, for dropping resends.
    accountid_clientmsgid_ack,
    /// (time of the next supervision step, petition id) → (): the deadline index.
    stepat_petitionid,
    /// (community id or 0 for the township, account id) → (): supervisors by scope.
    communityid_supervisorid,
    /// (community id, creation time, petition id) → (): every petition by community and age.
    communityid_createdat_petitionid,
    /// (community id, petition id) → (): the open petitions (not closed or withdrawn) of a community.
    communityid_open_petitionid,
    /// (time, petition id, seq) → `AuditRecord`: the append-only audit log (petition id 0: manual
    /// points entries, keyed by a fresh id instead of seq).
    atms_petitionid_seq_audit,
    /// (period such as "2026-11", community id or 0) → `AppraisalReport`: reports issued, frozen.
    period_communityid_report,
    /// delivery id → JSON body: bad-review webhook deliveries not yet done.
    id_webhook,
    /// sha-256 of a media item's bytes → `MediaInfo`.
    sha_media,
    /// (uploader id, sha-256) → (): who uploaded which media bytes.
    uploaderid_sha,
    /// (sha-256, petition id) → (): the petitions whose messages reference a media item.
    sha_petitionid,
}

/// Index of each tree in [`Trees::petition_commit_set`]'s slice.
pub(crate) mod commit_idx {
    pub const PETITION: usize = 0;
    pub const ENTRY: usize = 1;
    pub const READMARK: usize = 2;
    pub const ACCOUNT_PETITION: usize = 3;
    pub const ASSIGNEE_PETITION: usize = 4;
    pub const FEED: usize = 5;
    pub const FEEDHEAD: usize = 6;
    pub const IDEMPOTENCY: usize = 7;
    pub const STEP_AT: usize = 8;
    pub const COMMUNITY_CREATED: usize = 9;
    pub const COMMUNITY_OPEN: usize = 10;
    pub const AUDIT: usize = 11;
}

impl Trees {
    /// The trees a petition commit writes, in [`commit_idx`] order.
    pub(crate) fn petition_commit_set(&self) -> [sled::Tree; 12] {
        [
            self.petitionid_petition.clone(),
            self.petitionid_seq_entry.clone(),
            self.petitionid_accountid_readmark.clone(),
            self.accountid_petitionid.clone(),
            self.assigneeid_petitionid.clone(),
            self.accountid_cursor_event.clone(),
            self.accountid_feedhead.clone(),
            self.accountid_clientmsgid_ack.clone(),
            self.stepat_petitionid.clone(),
            self.communityid_createdat_petitionid.clone(),
            self.communityid_open_petitionid.clone(),
            self.atms_petitionid_seq_audit.clone(),
        ]
    }
}

/// Key of one big-endian u64.
pub fn key1(a: u64) -> [u8; 8] {
    a.to_be_bytes()
}

/// Key of two big-endian u64s.
pub fn key2(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

/// Key of three big-endian u64s.
pub fn key3(a: u64, b: u64, c: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..16].copy_from_slice(&b.to_be_bytes());
    k[16..].copy_from_slice(&c.to_be_bytes());
    k
}

/// Key of a big-endian u64 followed by arbitrary bytes.
pub fn key_bytes(a: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + rest.len());
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// Decodes a big-endian u64 value.
pub fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// The second u64 of a two-part key.
pub fn second_u64(key: &[u8]) -> Result<u64> {
    key.get(8..16)
        .ok_or_else(|| StoreError::Corrupt("short key".into()))
        .and_then(decode_u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tree_names_are_unique() {
        let mut names = TREE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TREE_NAMES.len());
    }

    proptest! {
        #[test]
        fn two_part_keys_sort_like_their_numbers(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
            prop_assert_eq!(key2(a, b).cmp(&key2(c, d)), (a, b).cmp(&(c, d)));
            prop_assert_eq!(second_u64(&key2(a, b)).unwrap(), b);
        }
    }
}
