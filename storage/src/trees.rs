//! Every sled tree, declared in one list, and the key layout.
//!
//! Tree names say what maps to what (`login_accountid`: login → account id). Everything a petition
//! commit writes lives in one tree, `petition_keyspace`, under a one-byte prefix per kind of record
//! ([`ks`]; `ks::PETITION` is petition id → its current state), so that a whole
//! group of commits is one atomic `sled::Batch`. Integer key parts are big-endian, so range scans
//! run in numeric order.

use crate::{Result, StoreError};

/// Metadata key holding the schema version (u64, big-endian).
pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";

/// The name of the petition keyspace tree ([`Trees::petition_keyspace`]).
pub const PETITION_KEYSPACE: &str = "petition_keyspace";

/// Metadata key holding the id base of a restored database (u64, big-endian): new ids are
/// sled's counter plus this, so they stay above every id of the backup.
pub const META_ID_BASE: &[u8] = b"id_base";

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
    /// (community id or 0 for the township, account id) → (): supervisors by scope.
    communityid_supervisorid,
    /// The petition keyspace: everything a petition commit writes, under a one-byte prefix per
    /// kind of record ([`ks`]), so that one atomic batch on one tree stores a whole commit group.
    petition_keyspace,
    /// (time, fresh id) → `AuditRecord`: audit records that belong to no petition commit (manual
    /// points entries); read together with the keyspace's audit records.
    atms_id_audit,
    /// (period such as "2026-11", community id or 0) → `AppraisalReport`: reports issued, frozen.
    period_communityid_report,
    /// delivery id → JSON body: bad-review webhook deliveries not yet done, as versions before
    /// schema 6 kept them (now written with the rating, under `ks::WEBHOOK`); read and emptied.
    id_webhook,
    /// sha-256 of a media item's bytes → `MediaInfo`.
    sha_media,
    /// (uploader id, sha-256) → (): who uploaded which media bytes.
    uploaderid_sha,
    /// (sha-256, petition id) → (): the petitions whose messages reference a media item.
    sha_petitionid,
}

/// The one-byte prefixes of [`Trees::petition_keyspace`]: what follows each prefix, and what it
/// maps to. Schema version 2 kept each of these in a tree of its own ([`MERGED_IN_V3`]).
pub mod ks {
    /// petition id → `Petition` (its current state).
    pub const PETITION: u8 = 0x01;
    /// Schema 4 and older: (petition id, seq) → `Entry`, one key per entry. Schema 5 packs the
    /// timeline into [`TIMELINE`]; migration moves these keys there.
    pub const ENTRY: u8 = 0x02;
    /// (petition id, account id) → `ReadMark`.
    pub const READMARK: u8 = 0x03;
    /// (account id, petition id) → (): petitions an account takes part in.
    pub const ACCOUNT_PETITION: u8 = 0x04;
    /// (assignee id, petition id) → (): open petitions waiting for a worker to act.
    pub const ASSIGNEE_PETITION: u8 = 0x05;
    /// Schema 4 and older: (account id, cursor) → encoded `Event` or `FeedRef`, one key per
    /// event. Schema 5 packs feeds into [`FEED_PACK`]; migration moves these keys there.
    pub const FEED: u8 = 0x06;
    /// (account id, client message id bytes) → encoded acknowledgement, for dropping resends.
    pub const IDEMPOTENCY: u8 = 0x07;
    /// (time of the next supervision step, petition id) → (): the deadline index.
    pub const STEP_AT: u8 = 0x08;
    /// (community id, creation time, petition id) → (): every petition by community and age.
    pub const COMMUNITY_CREATED: u8 = 0x09;
    /// (community id, petition id) → (): the open petitions (not closed or withdrawn).
    pub const COMMUNITY_OPEN: u8 = 0x0a;
    /// Schema 4 and older: (time, petition id, seq) → `AuditRecord`, one key per record. Schema 5
    /// packs the audit log into [`AUDIT_PACK`]; migration moves these keys there.
    pub const AUDIT: u8 = 0x0b;
    /// (petition id, seq / `ENTRIES_PER_KEY`) → the encoded `Entry`s of those sequence numbers,
    /// packed (`crate::packed`): the petition's timeline, 16 entries to a key.
    pub const TIMELINE: u8 = 0x0c;
    /// (account id, cursor / `EVENTS_PER_KEY`) → the account's feed events of those cursors,
    /// packed (`crate::packed`), each an encoded `Event` or a `FeedRef`, 32 to a key. Cursors
    /// are dense from 1 and never deleted, so the last item of an account's last key is its head.
    pub const FEED_PACK: u8 = 0x0d;
    /// (time / `AUDIT_BUCKET_MS`, chunk number within that hour) → up to `AUDIT_PER_KEY`
    /// encoded `AuditRecord`s, packed (`crate::packed`): the append-only audit log.
    pub const AUDIT_PACK: u8 = 0x0e;
    /// delivery id → `petitions::PendingReview`: a bad review the webhook has not delivered yet,
    /// written with the rating's commit and removed once delivered or given up.
    pub const WEBHOOK: u8 = 0x0f;
    /// group number → the items one group commit placed into timeline and feed chunks, which
    /// are written behind it (`crate::behind`); deleted once those chunks are written.
    pub const JOURNAL: u8 = 0x10;
}

/// The trees of schema version 2 that version 3 merged into [`Trees::petition_keyspace`], with
/// the prefix their keys got there (keys are otherwise unchanged). `None`: not carried over
/// (`accountid_feedhead`: a feed's head is now the last key of its range).
pub const MERGED_IN_V3: &[(&str, Option<u8>)] = &[
    ("petitionid_petition", Some(ks::PETITION)),
    ("petitionid_seq_entry", Some(ks::ENTRY)),
    ("petitionid_accountid_readmark", Some(ks::READMARK)),
    ("accountid_petitionid", Some(ks::ACCOUNT_PETITION)),
    ("assigneeid_petitionid", Some(ks::ASSIGNEE_PETITION)),
    ("accountid_cursor_event", Some(ks::FEED)),
    ("accountid_feedhead", None),
    ("accountid_clientmsgid_ack", Some(ks::IDEMPOTENCY)),
    ("stepat_petitionid", Some(ks::STEP_AT)),
    (
        "communityid_createdat_petitionid",
        Some(ks::COMMUNITY_CREATED),
    ),
    ("communityid_open_petitionid", Some(ks::COMMUNITY_OPEN)),
    ("atms_petitionid_seq_audit", Some(ks::AUDIT)),
];

/// Keyspace key: a prefix and one big-endian u64.
pub fn pkey1(prefix: u8, a: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&a.to_be_bytes());
    k
}

/// Keyspace key: a prefix and two big-endian u64s.
pub fn pkey2(prefix: u8, a: u64, b: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k[9..].copy_from_slice(&b.to_be_bytes());
    k
}

/// Keyspace key: a prefix and three big-endian u64s.
pub fn pkey3(prefix: u8, a: u64, b: u64, c: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = prefix;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k[9..17].copy_from_slice(&b.to_be_bytes());
    k[17..].copy_from_slice(&c.to_be_bytes());
    k
}

/// Keyspace key: a prefix, a big-endian u64, then arbitrary bytes.
pub fn pkey_bytes(prefix: u8, a: u64, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.push(prefix);
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(rest);
    k
}

/// The `i`-th big-endian u64 of a keyspace key (counting from 0, after its prefix byte).
pub fn pkey_u64(key: &[u8], i: usize) -> Result<u64> {
    let at = 1 + 8 * i;
    key.get(at..at + 8)
        .ok_or_else(|| StoreError::Corrupt(format!("short key ({} bytes)", key.len())))
        .and_then(decode_u64)
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

/// The name of a keyspace prefix ([`ks`]) for reports; `None` for an unknown byte.
pub fn ks_name(prefix: u8) -> Option<&'static str> {
    Some(match prefix {
        ks::PETITION => "petition",
        ks::ENTRY => "entry",
        ks::READMARK => "readmark",
        ks::ACCOUNT_PETITION => "account_petition",
        ks::ASSIGNEE_PETITION => "assignee_petition",
        ks::FEED => "feed",
        ks::IDEMPOTENCY => "idempotency",
        ks::STEP_AT => "step_at",
        ks::COMMUNITY_CREATED => "community_created",
        ks::COMMUNITY_OPEN => "community_open",
        ks::AUDIT => "audit",
        ks::TIMELINE => "timeline",
        ks::FEED_PACK => "feed_pack",
        ks::WEBHOOK => "webhook",
        ks::AUDIT_PACK => "audit_pack",
        ks::JOURNAL => "journal",
        _ => return None,
    })
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

    #[test]
    fn keyspace_prefixes_are_unique_and_replace_the_merged_trees() {
        let mut prefixes: Vec<u8> = MERGED_IN_V3.iter().filter_map(|(_, p)| *p).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), MERGED_IN_V3.len() - 1);
        assert!(!prefixes.contains(&0));
        for (name, _) in MERGED_IN_V3 {
            assert!(!TREE_NAMES.contains(name), "{name} is still declared");
        }
    }

    proptest! {
        #[test]
        fn two_part_keys_sort_like_their_numbers(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
            prop_assert_eq!(key2(a, b).cmp(&key2(c, d)), (a, b).cmp(&(c, d)));
            prop_assert_eq!(second_u64(&key2(a, b)).unwrap(), b);
        }

        #[test]
        fn keyspace_keys_sort_like_their_numbers(p in 1u8..15, a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
            prop_assert_eq!(pkey2(p, a, b).cmp(&pkey2(p, c, d)), (a, b).cmp(&(c, d)));
            prop_assert_eq!(pkey_u64(&pkey2(p, a, b), 1).unwrap(), b);
            prop_assert_eq!(pkey_u64(&pkey3(p, a, b, c), 2).unwrap(), c);
            prop_assert!(pkey3(p, a, b, c)[..] < pkey1(p + 1, 0)[..]);
        }
    }
}
