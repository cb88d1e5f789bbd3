//! The path cache held in memory for one whole walk: one sequential read of the state instead of one query per file.

use crate::engine::Batch;
use crate::scan::Found;
use crate::state::{Cached, FileStamp, Store};

/// What the cache knew, by file identity, when the walk began. The rows come
/// in the table's key order, (dev, ino), so they are kept in a vector found by
/// binary search, the checksum as its 32 bytes: 72 bytes a file (a million
/// files: 72 MB for the length of the walk; a hash map was twice that).
#[derive(Default)]
pub struct CacheIndex {
    entries: Vec<Entry>,
}

struct Entry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    checksum: [u8; 32],
    synced: bool,
}

impl CacheIndex {
    /// Read the whole path cache, then the synced set, each in one
    /// sequential read. (Asking "is it synced?" row by row was a random probe
    /// per file: 4.6 s of a million-file restart.) A state that cannot be
    /// read gives an empty index: every file is then hashed, which is safe.
    pub fn load(store: &dyn Store) -> Self {
        let mut index = CacheIndex::default();
        let loaded = store
            .for_each_cached(&mut |stamp, checksum| index.push(&stamp, checksum))
            .and_then(|()| {
                // In key order already unless the store changed its mind: then sort.
                if !index.entries.is_sorted_by_key(|e| (e.dev, e.ino)) {
                    index.entries.sort_unstable_by_key(|e| (e.dev, e.ino));
                }
                let by_checksum = index.by_checksum();
                store.for_each_synced(&mut |checksum| index.mark_synced(&by_checksum, checksum))
            });
        if let Err(e) = loaded {
            tracing::warn!("{e}");
            return CacheIndex::default();
        }
        index.entries.shrink_to_fit();
        index
    }

    /// The entries' positions in checksum order (4 bytes a file).
    fn by_checksum(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
        order.sort_unstable_by_key(|&i| self.entries[i as usize].checksum);
        order
    }

    /// Every entry with this checksum (copies of one file) is synced.
    fn mark_synced(&mut self, by_checksum: &[u32], checksum: &str) {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(checksum, &mut bytes).is_err() {
            return;
        }
        let key = |i: &u32| self.entries[*i as usize].checksum;
        let first = by_checksum.partition_point(|i| key(i) < bytes);
        let copies = by_checksum[first..]
            .iter()
            .take_while(|i| key(i) == bytes)
            .count();
        for &i in &by_checksum[first..first + copies] {
            self.entries[i as usize].synced = true;
        }
    }

    /// A row of the path cache, not known to be synced until `mark_synced`.
    fn push(&mut self, stamp: &FileStamp, checksum: &str) {
        let mut bytes = [0u8; 32];
        // A row that is not a SHA-256 is left out: that file is hashed again.
        if hex::decode_to_slice(checksum, &mut bytes).is_ok() {
            self.entries.push(Entry {
                dev: stamp.dev,
                ino: stamp.ino,
                size: stamp.size,
                mtime_ns: stamp.mtime_ns,
                checksum: bytes,
                synced: false,
            });
        }
    }

    /// Each found file with what the cache knows about it.
    pub fn attach(&self, found: Vec<Found>) -> Batch {
        found
            .into_iter()
            .map(|f| {
                let cached = match &f {
                    Found::File { stamp, .. } => self.get(stamp),
                    Found::Unreadable { .. } => None,
                };
                (f, cached)
            })
            .collect()
    }

    /// What the cache knows about this version of a file.
    pub fn get(&self, stamp: &FileStamp) -> Option<Cached> {
        let key = (stamp.dev, stamp.ino);
        let at = self
            .entries
            .binary_search_by_key(&key, |e| (e.dev, e.ino))
            .ok()?;
        let entry = &self.entries[at];
        if entry.size != stamp.size || entry.mtime_ns != stamp.mtime_ns {
            return None;
        }
        Some(Cached {
            checksum: hex::encode(entry.checksum),
            synced: entry.synced,
            hashed: false,
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
    fn a_hit_needs_the_same_identity_size_and_mtime() {
        let mut index = CacheIndex::default();
        let (one, two, three) = ("11".repeat(32), "22".repeat(32), "33".repeat(32));
        index.push(&stamp(3, 10, 100), &three);
        index.push(&stamp(1, 10, 100), &one);
        index.push(&stamp(6, 10, 100), &one); // a copy of 1
        index.push(&stamp(2, 10, 100), &two);
        index.push(&stamp(5, 10, 100), "not a checksum");
        index.entries.sort_unstable_by_key(|e| (e.dev, e.ino));
        let order = index.by_checksum();
        index.mark_synced(&order, &one);
        index.mark_synced(&order, &"44".repeat(32)); // synced, no file has it
        index.mark_synced(&order, "not a checksum");
        let hit = |sum: &str, synced| {
            Some(Cached {
                checksum: sum.to_string(),
                synced,
                hashed: false,
            })
        };
        let table: &[(FileStamp, Option<Cached>)] = &[
            (stamp(1, 10, 100), hit(&one, true)),
            (stamp(1, 10, 100), hit(&one, true)), // asked twice (a hard link)
            (stamp(6, 10, 100), hit(&one, true)),
            (stamp(2, 10, 100), hit(&two, false)),
            (stamp(2, 11, 100), None), // grew
            (stamp(3, 10, 101), None), // touched
            (stamp(4, 10, 100), None), // never seen
            (stamp(5, 10, 100), None), // a row that is not a checksum: hashed again
        ];
        for (asked, want) in table {
            assert_eq!(&index.get(asked), want, "{asked:?}");
        }
    }
}
