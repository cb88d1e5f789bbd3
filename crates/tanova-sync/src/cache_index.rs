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
                let mut from = 0;
                store.for_each_synced(&mut |checksum| {
                    from = index.mark_synced(&by_checksum, from, checksum)
                })
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

    /// Every entry with this checksum (copies of one file) is synced. The
    /// synced set comes in checksum order, so the search goes on from `from`,
    /// where the one before it ended: a merge of two sorted lists, not a
    /// binary search per checksum. A checksum out of that order is searched
    /// for from the start. Returns where the next search starts.
    fn mark_synced(&mut self, by_checksum: &[u32], from: usize, checksum: &[u8; 32]) -> usize {
        let key = |i: &u32| &self.entries[*i as usize].checksum;
        let first = match by_checksum.get(from.wrapping_sub(1)) {
            Some(before) if key(before) >= checksum => {
                by_checksum.partition_point(|i| key(i) < checksum)
            }
            _ => {
                let smaller = by_checksum[from..].iter().take_while(|i| key(i) < checksum);
                from + smaller.count()
            }
        };
        let copies = by_checksum[first..]
            .iter()
            .take_while(|i| key(i) == checksum)
            .count();
        for &i in &by_checksum[first..first + copies] {
            self.entries[i as usize].synced = true;
        }
        first + copies
    }

    /// A row of the path cache, not known to be synced until `mark_synced`.
    fn push(&mut self, stamp: &FileStamp, checksum: &[u8; 32]) {
        self.entries.push(Entry {
            dev: stamp.dev,
            ino: stamp.ino,
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            checksum: *checksum,
            synced: false,
        });
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
            checksum: crate::hash::to_hex(&entry.checksum),
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
        let ([one, two, three], missing) = ([[0x11; 32], [0x22; 32], [0x33; 32]], [0x44; 32]);
        index.push(&stamp(3, 10, 100), &three);
        index.push(&stamp(1, 10, 100), &one);
        index.push(&stamp(6, 10, 100), &one); // a copy of 1
        index.push(&stamp(2, 10, 100), &two);
        index.entries.sort_unstable_by_key(|e| (e.dev, e.ino));
        let order = index.by_checksum();
        let from = index.mark_synced(&order, 0, &one);
        index.mark_synced(&order, from, &missing); // synced, no file has it
        let hit = |sum: &[u8; 32], synced| {
            Some(Cached {
                checksum: hex::encode(sum),
                synced,
                hashed: false,
            })
        };
        let table: &[(FileStamp, Option<Cached>)] = &[
            (stamp(1, 10, 100), hit(&one, true)),
            (stamp(1, 10, 100), hit(&one, true)), // asked twice (a hard link)
            (stamp(6, 10, 100), hit(&one, true)),
            (stamp(2, 10, 100), hit(&two, false)),
            (stamp(3, 10, 100), hit(&three, false)),
            (stamp(2, 11, 100), None), // grew
            (stamp(3, 10, 101), None), // touched
            (stamp(4, 10, 100), None), // never seen
        ];
        for (asked, want) in table {
            assert_eq!(&index.get(asked), want, "{asked:?}");
        }
    }

    #[test]
    fn the_synced_set_marks_its_files_in_any_order() {
        // Files with checksums 1, 3 (twice), 5, 7; each order the synced set
        // may come in, with the files it must mark.
        let sums = |bytes: &[u8]| bytes.iter().map(|&b| [b; 32]).collect::<Vec<_>>();
        let table: &[(&[u8], &[u8])] = &[
            (&[1, 3, 5, 7], &[1, 3, 5, 7]), // in order, all present
            (&[0, 2, 3, 6, 8], &[3]),       // in order, most missing
            (&[7, 5, 3, 1], &[1, 3, 5, 7]), // backwards
            (&[3, 1, 4, 3, 7], &[1, 3, 7]), // out of order, one twice
            (&[2, 3, 3, 5], &[3, 5]),       // equal to the last one again
            (&[], &[]),
        ];
        for (synced, marked) in table {
            let mut index = CacheIndex::default();
            for (ino, sum) in (1..).zip(sums(&[7, 3, 1, 5, 3])) {
                index.push(&stamp(ino, 10, 100), &sum);
            }
            let order = index.by_checksum();
            let mut from = 0;
            for sum in sums(synced) {
                from = index.mark_synced(&order, from, &sum);
            }
            let mut got: Vec<u8> = index
                .entries
                .iter()
                .filter(|e| e.synced)
                .map(|e| e.checksum[0])
                .collect();
            got.sort_unstable();
            got.dedup();
            assert_eq!(got, *marked, "synced set {synced:?}");
            let copies_of_3 = index.entries.iter().filter(|e| e.checksum[0] == 3);
            assert!(copies_of_3.clone().all(|e| e.synced) || !marked.contains(&3));
        }
    }
}
