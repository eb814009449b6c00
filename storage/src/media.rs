//! Content-addressed media files beside the database, and their metadata.
//!
//! A media item's bytes live in `<data folder>/media/<first 2 hex>/<sha-256 hex>`, written to a
//! temporary file in the same folder and renamed into place, so a crash or a refused upload never
//! leaves a partial file under a media name. Identical bytes are stored once. Metadata: the
//! `sha_media` tree (sha → `MediaInfo`), the owner index `uploaderid_sha` (every account that
//! uploaded the bytes) and `sha_petitionid` (the petitions whose messages reference it).

use std::io::Write;
use std::path::{Path, PathBuf};

use lianxin_protocol::v1::MediaInfo;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::trees::{key_bytes, second_u64};
use crate::{Result, Store, StoreError};

/// A sha-256 digest: the key of a media item.
pub type Sha = [u8; 32];

/// The sha-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> Sha {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of a digest: the media id clients see.
pub fn sha_hex(sha: &Sha) -> String {
    hex::encode(sha)
}

/// Parses a media id (64 hex digits); `None` if it is not one.
pub fn parse_sha(id: &str) -> Option<Sha> {
    if id.len() != 64 {
        return None;
    }
    let mut sha = [0u8; 32];
    hex::decode_to_slice(id, &mut sha).ok()?;
    Some(sha)
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError::Engine(sled::Error::Io(e))
}

/// Where the file of a digest lives under a media folder.
pub fn media_file(dir: &Path, sha: &Sha) -> PathBuf {
    let hex = sha_hex(sha);
    dir.join(&hex[..2]).join(hex)
}

/// Writes bytes under their digest's name atomically (temporary file, fsync, rename); an existing
/// file is kept. Returns the digest.
pub fn write_blob(dir: &Path, bytes: &[u8]) -> Result<Sha> {
    let sha = sha256(bytes);
    let path = media_file(dir, &sha);
    if path.exists() {
        return Ok(sha);
    }
    let folder = path
        .parent()
        .ok_or_else(|| StoreError::Corrupt("media path without folder".into()))?;
    std::fs::create_dir_all(folder).map_err(io_err)?;
    let mut tmp = tempfile_in(folder)?;
    let result = (|| {
        tmp.1.write_all(bytes)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp.0);
        return Err(io_err(e));
    }
    Ok(sha)
}

/// A new temporary file (`.tmp-<pid>-<n>`) in a folder.
fn tempfile_in(folder: &Path) -> Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = folder.join(format!(".tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
}

fn owner_key(account_id: u64, sha: &Sha) -> Vec<u8> {
    key_bytes(account_id, sha)
}

fn petition_key(sha: &Sha, petition_id: u64) -> Vec<u8> {
    let mut k = sha.to_vec();
    k.extend_from_slice(&petition_id.to_be_bytes());
    k
}

impl Store {
    /// The folder holding the media files.
    pub fn media_dir(&self) -> &Path {
        &self.media_dir
    }

    /// Where a media item's (or thumbnail's) bytes are.
    pub fn media_path(&self, sha: &Sha) -> PathBuf {
        media_file(&self.media_dir, sha)
    }

    /// Stores an item's bytes (and its thumbnail's, if any) and its metadata. `info` gives
    /// everything but the ids, which are computed here. Identical bytes are stored once: the
    /// existing metadata is returned and the uploader is added to the owners. Returns the stored
    /// metadata and whether the item is new.
    pub fn media_put(
        &self,
        bytes: &[u8],
        thumbnail: Option<&[u8]>,
        mut info: MediaInfo,
    ) -> Result<(MediaInfo, bool)> {
        let sha = sha256(bytes);
        let uploader = info.uploader_id;
        let _guard = self.lock_media();
        if let Some(existing) = self.media_info(&sha)? {
            self.trees
                .uploaderid_sha
                .insert(owner_key(uploader, &sha), &[][..])?;
            return Ok((existing, false));
        }
        if let Some(thumb) = thumbnail {
            let t = write_blob(&self.media_dir, thumb)?;
            info.media.get_or_insert_default().thumbnail_id = sha_hex(&t);
        }
        write_blob(&self.media_dir, bytes)?;
        let media = info.media.get_or_insert_default();
        media.id = sha_hex(&sha);
        media.size = bytes.len() as u64;
        let encoded = info.encode_to_vec();
        match self
            .trees
            .sha_media
            .compare_and_swap(sha, None as Option<&[u8]>, Some(encoded))?
        {
            Ok(()) => {}
            Err(existing) => {
                // A concurrent upload of the same bytes won: keep its record.
                if let Some(v) = existing.current {
                    info = MediaInfo::decode(&*v)?;
                }
            }
        }
        self.trees
            .uploaderid_sha
            .insert(owner_key(uploader, &sha), &[][..])?;
        Ok((info, true))
    }

    /// The metadata of a media item.
    pub fn media_info(&self, sha: &Sha) -> Result<Option<MediaInfo>> {
        match self.trees.sha_media.get(sha)? {
            Some(v) => Ok(Some(MediaInfo::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// Whether an account uploaded these bytes.
    pub fn media_is_owner(&self, account_id: u64, sha: &Sha) -> Result<bool> {
        Ok(self
            .trees
            .uploaderid_sha
            .contains_key(owner_key(account_id, sha))?)
    }

    /// Records that a message of a petition references the item, and marks it referenced; returns
    /// whether the petition did not reference it before, or `None` if the item no longer exists
    /// (collected meanwhile).
    pub fn media_reference(&self, sha: &Sha, petition_id: u64) -> Result<Option<bool>> {
        let _guard = self.lock_media();
        if !self.trees.sha_media.contains_key(sha)? {
            return Ok(None);
        }
        let old = self
            .trees
            .sha_petitionid
            .insert(petition_key(sha, petition_id), &[][..])?;
        self.set_referenced(sha, true)?;
        Ok(Some(old.is_none()))
    }

    /// Undoes a [`Store::media_reference`] whose message was not stored: forgets the petition and,
    /// when no petition references the item any more, makes it collectable again.
    pub fn media_unreference(&self, sha: &Sha, petition_id: u64) -> Result<()> {
        let _guard = self.lock_media();
        self.trees
            .sha_petitionid
            .remove(petition_key(sha, petition_id))?;
        if self.media_petitions(sha)?.is_empty() {
            self.set_referenced(sha, false)?;
        }
        Ok(())
    }

    fn set_referenced(&self, sha: &Sha, referenced: bool) -> Result<()> {
        self.trees.sha_media.fetch_and_update(sha, |old| {
            let mut info = MediaInfo::decode(old?).ok()?;
            info.referenced = referenced;
            Some(info.encode_to_vec())
        })?;
        Ok(())
    }

    /// The petitions whose messages reference the item.
    pub fn media_petitions(&self, sha: &Sha) -> Result<Vec<u64>> {
        self.trees
            .sha_petitionid
            .scan_prefix(sha)
            .map(|item| {
                let (k, _) = item?;
                // Key: 32 bytes of sha, then the petition id; read it as the "second u64" of
                // the last 16 bytes.
                let tail = k
                    .get(k.len().saturating_sub(16)..)
                    .ok_or_else(|| StoreError::Corrupt("short media key".into()))?;
                second_u64(tail)
            })
            .collect()
    }

    /// Items never referenced by a message and created before `before_ms`.
    pub fn media_unreferenced_before(&self, before_ms: i64) -> Result<Vec<MediaInfo>> {
        let mut out = Vec::new();
        for item in self.trees.sha_media.iter() {
            let (_, v) = item?;
            let info = MediaInfo::decode(&*v)?;
            if !info.referenced && info.created_at_ms < before_ms {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Deletes an unreferenced item: its metadata, owner entries and files (its thumbnail too).
    /// A referenced item is kept; returns whether it was deleted.
    pub fn media_delete_unreferenced(&self, sha: &Sha) -> Result<bool> {
        Ok(self.media_collect(std::slice::from_ref(sha))? == 1)
    }

    /// Deletes those of the given items that are (still) unreferenced: their metadata, owner
    /// entries, and every file no remaining item uses (as its bytes or its thumbnail). Returns how
    /// many items were deleted.
    pub fn media_collect(&self, candidates: &[Sha]) -> Result<usize> {
        let _guard = self.lock_media();
        let mut removed: std::collections::HashSet<Sha> = std::collections::HashSet::new();
        let mut files: Vec<Sha> = Vec::new();
        for sha in candidates {
            let Some(info) = self.media_info(sha)? else {
                continue;
            };
            if info.referenced || !self.media_petitions(sha)?.is_empty() {
                continue;
            }
            self.trees.sha_media.remove(sha)?;
            removed.insert(*sha);
            files.push(*sha);
            if let Some(t) = info.media.as_ref().and_then(|m| parse_sha(&m.thumbnail_id)) {
                files.push(t);
            }
        }
        if removed.is_empty() {
            return Ok(0);
        }
        let mut owners = Vec::new();
        for key in self.trees.uploaderid_sha.iter().keys() {
            let key = key?;
            if key
                .get(8..)
                .and_then(|s| <Sha>::try_from(s).ok())
                .is_some_and(|s| removed.contains(&s))
            {
                owners.push(key);
            }
        }
        for k in owners {
            self.trees.uploaderid_sha.remove(k)?;
        }
        // A file may also be another item's bytes or thumbnail (identical bytes are stored once).
        let mut in_use: std::collections::HashSet<Sha> = std::collections::HashSet::new();
        for item in self.trees.sha_media.iter() {
            let (k, v) = item?;
            if let Ok(sha) = <Sha>::try_from(&*k) {
                in_use.insert(sha);
            }
            let info = MediaInfo::decode(&*v)?;
            if let Some(t) = info.media.as_ref().and_then(|m| parse_sha(&m.thumbnail_id)) {
                in_use.insert(t);
            }
        }
        for file in files.iter().filter(|f| !in_use.contains(*f)) {
            match std::fs::remove_file(self.media_path(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(removed.len())
    }

    /// Holds the media lock; a poisoned lock is taken over (it guards no data of its own).
    fn lock_media(&self) -> std::sync::MutexGuard<'_, ()> {
        self.media_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lianxin_protocol::v1::{MediaAttachment, MediaKind};

    fn info(uploader: u64) -> MediaInfo {
        MediaInfo {
            media: Some(MediaAttachment {
                kind: MediaKind::Voice as i32,
                mime: "audio/wav".into(),
                ..Default::default()
            }),
            uploader_id: uploader,
            created_at_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn ids_round_trip_and_bad_ids_are_refused() {
        let sha = sha256(b"abc");
        assert_eq!(parse_sha(&sha_hex(&sha)), Some(sha));
        assert_eq!(parse_sha("zz"), None);
        assert_eq!(parse_sha(&"g".repeat(64)), None);
    }

    #[test]
    fn identical_uploads_are_stored_once_and_both_uploaders_own_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreConfig::new(dir.path())).unwrap();
        let (a, new_a) = store.media_put(b"voice", None, info(1)).unwrap();
        let (b, new_b) = store.media_put(b"voice", None, info(2)).unwrap();
        assert!(new_a && !new_b);
        assert_eq!(a.uploader_id, 1);
        let (a, b) = (a.media.unwrap(), b.media.unwrap());
        assert_eq!(a.id, b.id);
        assert_eq!(a.size, 5);
        let sha = parse_sha(&a.id).unwrap();
        assert!(store.media_is_owner(1, &sha).unwrap());
        assert!(store.media_is_owner(2, &sha).unwrap());
        assert!(!store.media_is_owner(3, &sha).unwrap());
        let path = store.media_path(&sha);
        assert!(path.starts_with(dir.path().join("media")));
        assert_eq!(std::fs::read(&path).unwrap(), b"voice");
        // Only the one file (and no temporary one) in its folder.
        let files: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn thumbnails_are_stored_beside_and_referencing_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreConfig::new(dir.path())).unwrap();
        let mut i = info(1);
        i.media.as_mut().unwrap().kind = MediaKind::Image as i32;
        let (stored, _) = store.media_put(b"image", Some(b"thumb"), i).unwrap();
        let stored = stored.media.unwrap();
        let sha = parse_sha(&stored.id).unwrap();
        let thumb = parse_sha(&stored.thumbnail_id).unwrap();
        assert_eq!(std::fs::read(store.media_path(&thumb)).unwrap(), b"thumb");
        assert_eq!(store.media_unreferenced_before(2000).unwrap().len(), 1);
        assert_eq!(store.media_reference(&sha, 42).unwrap(), Some(true));
        assert_eq!(store.media_reference(&sha, 7).unwrap(), Some(true));
        assert_eq!(
            store.media_reference(&sha, 7).unwrap(),
            Some(false),
            "not new the second time"
        );
        assert_eq!(store.media_petitions(&sha).unwrap(), vec![7, 42]);
        assert!(store.media_info(&sha).unwrap().unwrap().referenced);
        assert!(store.media_unreferenced_before(2000).unwrap().is_empty());
        assert!(!store.media_delete_unreferenced(&sha).unwrap());
    }

    #[test]
    fn an_undone_reference_makes_the_item_collectable_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreConfig::new(dir.path())).unwrap();
        let (stored, _) = store.media_put(b"clip", None, info(1)).unwrap();
        let sha = parse_sha(&stored.media.unwrap().id).unwrap();
        store.media_reference(&sha, 42).unwrap();
        store.media_reference(&sha, 7).unwrap();
        store.media_unreference(&sha, 7).unwrap();
        assert_eq!(store.media_petitions(&sha).unwrap(), vec![42]);
        assert!(store.media_info(&sha).unwrap().unwrap().referenced);
        store.media_unreference(&sha, 42).unwrap();
        assert!(store.media_petitions(&sha).unwrap().is_empty());
        assert!(!store.media_info(&sha).unwrap().unwrap().referenced);
        assert!(store.media_delete_unreferenced(&sha).unwrap());
    }

    #[test]
    fn unreferenced_items_are_deleted_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreConfig::new(dir.path())).unwrap();
        let (stored, _) = store.media_put(b"old", Some(b"t"), info(1)).unwrap();
        let stored = stored.media.unwrap();
        let sha = parse_sha(&stored.id).unwrap();
        assert!(store.media_delete_unreferenced(&sha).unwrap());
        assert!(store.media_info(&sha).unwrap().is_none());
        assert!(!store.media_is_owner(1, &sha).unwrap());
        assert!(!store.media_path(&sha).exists());
        assert_eq!(
            store.media_reference(&sha, 42).unwrap(),
            None,
            "a collected item cannot be referenced"
        );
        assert!(store.media_petitions(&sha).unwrap().is_empty());
    }

    #[test]
    fn files_another_item_still_uses_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreConfig::new(dir.path())).unwrap();
        // Two photos whose thumbnails came out byte-identical, and a third item whose bytes are
        // that thumbnail.
        let (a, _) = store
            .media_put(b"photo a", Some(b"thumb"), info(1))
            .unwrap();
        let (b, _) = store
            .media_put(b"photo b", Some(b"thumb"), info(1))
            .unwrap();
        let a = parse_sha(&a.media.unwrap().id).unwrap();
        let b = parse_sha(&b.media.unwrap().id).unwrap();
        let thumb = sha256(b"thumb");
        assert_eq!(store.media_collect(&[a]).unwrap(), 1);
        assert!(!store.media_path(&a).exists());
        assert!(store.media_path(&thumb).exists(), "b's thumbnail stays");
        let (t, _) = store.media_put(b"thumb", None, info(2)).unwrap();
        assert_eq!(parse_sha(&t.media.unwrap().id), Some(thumb));
        assert_eq!(store.media_collect(&[b]).unwrap(), 1);
        assert!(
            store.media_path(&thumb).exists(),
            "the third item's bytes stay"
        );
        assert!(store.media_is_owner(2, &thumb).unwrap());
        assert_eq!(store.media_collect(&[thumb, a]).unwrap(), 1);
        assert!(!store.media_path(&thumb).exists());
        let left: Vec<_> = walk(&dir.path().join("media"));
        assert!(left.is_empty(), "files left behind: {left:?}");
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn concurrent_references_and_collections_never_leave_a_referenced_item_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&crate::StoreConfig::new(dir.path())).unwrap();
        for round in 0..200u64 {
            let (m, _) = store
                .media_put(format!("clip {round}").as_bytes(), None, info(1))
                .unwrap();
            let sha = parse_sha(&m.media.unwrap().id).unwrap();
            let s2 = store.clone();
            let collector = std::thread::spawn(move || s2.media_collect(&[sha]).unwrap());
            let referenced = store.media_reference(&sha, round).unwrap();
            let deleted = collector.join().unwrap() == 1;
            match referenced {
                Some(_) => {
                    assert!(!deleted, "round {round}: a referenced item was deleted");
                    assert!(store.media_path(&sha).exists());
                    assert!(store.media_info(&sha).unwrap().unwrap().referenced);
                }
                None => {
                    assert!(deleted);
                    assert!(store.media_petitions(&sha).unwrap().is_empty());
                }
            }
        }
    }
}
