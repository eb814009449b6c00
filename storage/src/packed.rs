//! Several small records packed into one sled value (schema 5).
//!
//! sled 0.34 keeps a page-table entry of about 300 bytes in memory for every node of the tree, from
//! the moment the database is opened, and splits a leaf node once it holds more than 16 keys,
//! whatever their size: its resting memory follows the number of keys, not the bytes. Records
//! that are only ever appended and read in runs (a petition's timeline, an account's feed) are
//! therefore stored `per_key` to a key: the record numbered `n` lives in the value of chunk
//! `n / per_key`, at position `n % per_key`.
//!
//! A chunk's value is a run of items, each a varint length and that many bytes. An empty item is
//! a gap (no record with that number, such as number 0, which neither timelines nor feeds use).
//!
//! The audit log is packed by time instead: the records of one hour share keys numbered from 0
//! within the hour, 16 records to a key in the order the writer stored them.

use prost::encoding::{decode_varint, encode_varint};

use crate::{Result, StoreError};

/// Timeline entries per key of `ks::TIMELINE`.
pub const ENTRIES_PER_KEY: u64 = 16;

/// Feed events per key of `ks::FEED_PACK`.
pub const EVENTS_PER_KEY: u64 = 32;

/// Audit records per key of `ks::AUDIT_PACK`.
pub const AUDIT_PER_KEY: usize = 16;

/// The span of time whose audit records share the keys of `ks::AUDIT_PACK` (one hour).
pub const AUDIT_BUCKET_MS: u64 = 3_600_000;

/// The chunk number and position of record `n`.
pub(crate) fn locate(n: u64, per_key: u64) -> (u64, usize) {
    (n / per_key, (n % per_key) as usize)
}

/// The items of a chunk, in order (empty items included, as empty slices).
pub(crate) fn items(value: &[u8]) -> Items<'_> {
    Items { rest: value }
}

/// Iterator over the items of a chunk.
pub(crate) struct Items<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut cur = self.rest;
        let item = decode_varint(&mut cur)
            .map_err(|e| StoreError::Corrupt(format!("packed item length: {e}")))
            .and_then(|len| {
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= cur.len())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "packed item of {len} bytes in {} remaining",
                            cur.len()
                        ))
                    })?;
                let (item, rest) = cur.split_at(len);
                cur = rest;
                Ok(item)
            });
        match item {
            Ok(item) => {
                self.rest = cur;
                Some(Ok(item))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// The number of items (gaps included) in a chunk.
pub(crate) fn count(value: &[u8]) -> Result<usize> {
    let mut n = 0;
    for item in items(value) {
        item?;
        n += 1;
    }
    Ok(n)
}

/// The item at `pos`, if the chunk holds one there and it is not a gap.
pub(crate) fn get(value: &[u8], pos: usize) -> Result<Option<&[u8]>> {
    match items(value).nth(pos) {
        Some(item) => Ok(Some(item?).filter(|i| !i.is_empty())),
        None => Ok(None),
    }
}

fn push(value: &mut Vec<u8>, item: &[u8]) {
    encode_varint(item.len() as u64, value);
    value.extend_from_slice(item);
}

/// Puts `item` at `pos`: appended after gaps when the chunk is shorter, replacing what is there
/// otherwise (the common case, an append at the end, copies nothing).
pub(crate) fn place(value: &mut Vec<u8>, pos: usize, item: &[u8]) -> Result<()> {
    let n = count(value)?;
    place_counted(value, n, pos, item).map(|_| ())
}

/// [`place`] into a chunk known to hold `n` items; returns how many it holds after.
pub(crate) fn place_counted(
    value: &mut Vec<u8>,
    n: usize,
    pos: usize,
    item: &[u8],
) -> Result<usize> {
    if pos >= n {
        for _ in n..pos {
            push(value, &[]);
        }
        push(value, item);
        return Ok(pos + 1);
    }
    let mut out = Vec::with_capacity(value.len() + item.len());
    for (i, old) in items(value).enumerate() {
        push(&mut out, if i == pos { item } else { old? });
    }
    *value = out;
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn places_append_fill_gaps_and_replace() {
        let mut v = Vec::new();
        place(&mut v, 1, b"one").unwrap();
        place(&mut v, 2, b"two").unwrap();
        place(&mut v, 4, b"four").unwrap();
        assert_eq!(count(&v).unwrap(), 5);
        assert_eq!(get(&v, 0).unwrap(), None);
        assert_eq!(get(&v, 2).unwrap(), Some(&b"two"[..]));
        assert_eq!(get(&v, 3).unwrap(), None);
        assert_eq!(get(&v, 9).unwrap(), None);
        place(&mut v, 2, b"TWO!").unwrap();
        let all: Vec<&[u8]> = items(&v).map(|i| i.unwrap()).collect();
        assert_eq!(all, [&b""[..], b"one", b"TWO!", b"", b"four"]);
    }

    #[test]
    fn a_damaged_chunk_is_an_error_not_a_panic() {
        let mut v = Vec::new();
        place(&mut v, 0, b"hello").unwrap();
        v.truncate(3);
        assert!(count(&v).is_err());
        assert!(count(&[0xff]).is_err());
    }

    proptest! {
        #[test]
        fn every_record_reads_back_where_it_was_put(lens in proptest::collection::vec(0usize..300, 1..40)) {
            let mut v = Vec::new();
            for (pos, len) in lens.iter().enumerate() {
                place(&mut v, pos, &vec![pos as u8; *len]).unwrap();
            }
            for (pos, len) in lens.iter().enumerate() {
                let got = get(&v, pos).unwrap().map(<[u8]>::len).unwrap_or(0);
                prop_assert_eq!(got, *len);
            }
        }

        #[test]
        fn a_counted_place_keeps_the_count_and_the_bytes_of_a_counting_one(
            puts in proptest::collection::vec((0usize..40, 0usize..50), 1..60),
        ) {
            let (mut counted, mut n, mut plain) = (Vec::new(), 0, Vec::new());
            for (pos, len) in puts {
                let item = vec![len as u8; len];
                n = place_counted(&mut counted, n, pos, &item).unwrap();
                place(&mut plain, pos, &item).unwrap();
                prop_assert_eq!(n, count(&counted).unwrap());
                prop_assert_eq!(&counted, &plain);
            }
        }
    }
}
