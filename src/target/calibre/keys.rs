//! 64-bit keys of names and values → the ids filed under them, ~16 bytes a pair: what the calibre
//! target keeps in memory of a library instead of the strings (a million books' uuids, titles
//! and authors). A key only says where to look: its users read the row back and compare the
//! values before they count it a match, so two values that share a key never make one.

use crate::sorted::merge_in_place;
use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The key of a value made of `parts` (the same in one process; never stored).
pub(super) fn hashed(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// (key, id) pairs: a sorted vector, and the pairs added since it was last merged.
#[derive(Debug, Default)]
pub(super) struct Keys {
    merged: Vec<(u64, i64)>,
    recent: BTreeSet<(u64, i64)>,
}

/// Pairs added before they are merged into the sorted vector (~1.5 MB).
const MERGE_AT: usize = 1 << 16;

impl Keys {
    pub(super) fn insert(&mut self, key: u64, id: i64) {
        self.recent.insert((key, id));
        if self.recent.len() >= MERGE_AT {
            self.merge();
        }
    }

    /// Merge the recent pairs into the sorted vector.
    fn merge(&mut self) {
        let recent: Vec<(u64, i64)> = std::mem::take(&mut self.recent).into_iter().collect();
        merge_in_place(&mut self.merged, &recent, |pair| *pair);
    }

    /// The ids filed under `key`, lowest first (an id may come twice).
    pub(super) fn ids(&self, key: u64) -> Vec<i64> {
        let from = self.merged.partition_point(|(k, _)| *k < key);
        let mut ids: Vec<i64> = self.merged[from..]
            .iter()
            .take_while(|(k, _)| *k == key)
            .map(|(_, id)| *id)
            .collect();
        ids.extend(
            self.recent
                .range((key, i64::MIN)..=(key, i64::MAX))
                .map(|(_, id)| *id),
        );
        ids.sort_unstable();
        ids
    }

    pub(super) fn remove(&mut self, key: u64, id: i64) {
        if !self.recent.remove(&(key, id)) {
            if let Ok(at) = self.merged.binary_search(&(key, id)) {
                self.merged.remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_and_recent_pairs_answer_alike() {
        let mut keys = Keys::default();
        let mut expected: Vec<(u64, i64)> = Vec::new();
        // Enough pairs for three merges, with keys shared between books.
        for id in 0..(MERGE_AT as i64 * 3 + 17) {
            let key = (id as u64 * 7919) % 50_000;
            keys.insert(key, id);
            expected.push((key, id));
        }
        assert!(keys.merged.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert!(!keys.recent.is_empty(), "some pairs are not merged yet");
        for probe in [0u64, 1, 7919, 49_999, 12_345] {
            let mut want: Vec<i64> = expected
                .iter()
                .filter(|(k, _)| *k == probe)
                .map(|(_, id)| *id)
                .collect();
            want.sort_unstable();
            assert_eq!(keys.ids(probe), want, "key {probe}");
        }
        let (key, id) = expected[5];
        keys.remove(key, id);
        assert!(!keys.ids(key).contains(&id));
        let (key, id) = *expected.last().expect("pairs");
        keys.remove(key, id);
        assert!(!keys.ids(key).contains(&id));
    }
}
