//! The path cache held in memory for one whole walk: one sequential read of the state instead of one query per file.

use std::collections::HashMap;

use crate::state::{Cached, FileStamp, Store};

/// What the cache knew, by file identity, when the walk began. About 80 bytes
/// a file (the checksum kept as its 32 bytes), so a million files cost about
/// 80 MB for the length of the walk; freed with it.
#[derive(Default)]
pub struct CacheIndex {
    by_identity: HashMap<(u64, u64), Entry>,
}

struct Entry {
    size: u64,
    mtime_ns: i64,
    checksum: [u8; 32],
    synced: bool,
}

impl CacheIndex {
    /// Read the whole path cache. A state that cannot be read gives an empty
    /// index: every file is then hashed, which is safe.
    pub fn load(store: &dyn Store) -> Self {
        let mut index = CacheIndex::default();
        let loaded = store.for_each_cached(&mut |stamp, checksum, synced| {
            let mut bytes = [0u8; 32];
            // A row that is not a SHA-256 is left out: that file is hashed again.
            if hex::decode_to_slice(checksum, &mut bytes).is_ok() {
                index.insert(&stamp, bytes, synced);
            }
        });
        if let Err(e) = loaded {
            tracing::warn!("{e}");
            index.by_identity.clear();
        }
        index
    }

    fn insert(&mut self, stamp: &FileStamp, checksum: [u8; 32], synced: bool) {
        let entry = Entry {
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            checksum,
            synced,
        };
        self.by_identity.insert((stamp.dev, stamp.ino), entry);
    }

    /// What the cache knows about this version of a file; each file is asked
    /// about once, so its entry is given up (the index shrinks as the walk goes).
    pub fn take(&mut self, stamp: &FileStamp) -> Option<Cached> {
        let entry = self.by_identity.remove(&(stamp.dev, stamp.ino))?;
        (entry.size == stamp.size && entry.mtime_ns == stamp.mtime_ns).then(|| Cached {
            checksum: hex::encode(entry.checksum),
            synced: entry.synced,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ino: u64, size: u64, mtime_ns: i64) -> FileStamp {
        FileStamp {
            dev: 1,
            ino,
            size,
            mtime_ns,
        }
    }

    #[test]
    fn a_hit_needs_the_same_identity_size_and_mtime_and_is_taken_once() {
        let sum = [7u8; 32];
        let mut index = CacheIndex::default();
        index.insert(&stamp(1, 10, 100), sum, true);
        index.insert(&stamp(2, 10, 100), sum, false);
        index.insert(&stamp(3, 10, 100), sum, false);
        let hex = hex::encode(sum);
        let table: &[(FileStamp, Option<Cached>)] = &[
            (
                stamp(1, 10, 100),
                Some(Cached {
                    checksum: hex.clone(),
                    synced: true,
                }),
            ),
            (stamp(1, 10, 100), None), // taken already
            (stamp(2, 11, 100), None), // grew
            (stamp(3, 10, 101), None), // touched
            (stamp(4, 10, 100), None), // never seen
        ];
        for (asked, want) in table {
            assert_eq!(&index.take(asked), want, "{asked:?}");
        }
        assert!(index.by_identity.is_empty());
    }
}
