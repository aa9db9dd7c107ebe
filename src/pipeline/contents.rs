//! The run's book of contents: for each content (BLAKE3) a row of this run went on to transfer
//! with, the first such row, and the row that landed it once one did. The content check asks it
//! which contents are already on their way (so the target is not asked about them again), the
//! transfer stage which have landed (so a later row with the same bytes becomes a duplicate of
//! it). One entry per distinct content of the run, keyed by the first 128 bits of its BLAKE3
//! (two contents of a run share them with a chance of about n²/2¹²⁹: nil), 32 bytes an entry in
//! a sorted vector (32 MB for a million-file run, where a hash map of full digests took ~100 MB
//! and half as much again while it grew, and the maps of hex strings before it ~250).

use crate::sorted::merge_in_place;
use std::collections::HashMap;
use std::num::NonZeroI64;

/// Contents of this run, by BLAKE3.
#[derive(Debug, Default)]
pub struct Contents {
    /// Sorted by key.
    merged: Vec<(u128, Entry)>,
    /// Added since the last merge.
    recent: HashMap<u128, Entry>,
}

/// Entries added before they are merged into the sorted vector (~3 MB).
const MERGE_AT: usize = 1 << 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first row that went on to transfer with this content.
    forwarded: i64,
    /// The row that landed it, once one did.
    landed: Option<NonZeroI64>,
}

/// A BLAKE3 in hex as the key; `None` for text that is not one (never recorded, never found:
/// such a row is asked about and sent as if its content were new to the run).
fn key(blake3_hex: &str) -> Option<u128> {
    crate::hash::blake3_key(blake3_hex)
}

impl Contents {
    fn get(&self, k: u128) -> Option<&Entry> {
        match self.merged.binary_search_by_key(&k, |(key, _)| *key) {
            Ok(at) => Some(&self.merged[at].1),
            Err(_) => self.recent.get(&k),
        }
    }

    /// The entry of `k`, made with `forwarded` when there is none.
    fn entry(&mut self, k: u128, forwarded: i64) -> &mut Entry {
        if let Ok(at) = self.merged.binary_search_by_key(&k, |(key, _)| *key) {
            return &mut self.merged[at].1;
        }
        if !self.recent.contains_key(&k) && self.recent.len() >= MERGE_AT {
            let mut recent: Vec<(u128, Entry)> = self.recent.drain().collect();
            recent.sort_unstable_by_key(|(key, _)| *key);
            merge_in_place(&mut self.merged, &recent, |(key, _)| *key);
        }
        self.recent.entry(k).or_insert(Entry {
            forwarded,
            landed: None,
        })
    }

    /// Note that row `id` goes on to transfer with this content, unless another row did first.
    pub fn forward(&mut self, blake3_hex: &str, id: i64) {
        if let Some(k) = key(blake3_hex) {
            self.entry(k, id);
        }
    }

    /// The first row that went on to transfer with this content.
    pub fn forwarded_by(&self, blake3_hex: &str) -> Option<i64> {
        Some(self.get(key(blake3_hex)?)?.forwarded)
    }

    /// Note that row `id` landed this content.
    pub fn land(&mut self, blake3_hex: &str, id: i64) {
        let (Some(k), Some(landed)) = (key(blake3_hex), NonZeroI64::new(id)) else {
            return;
        };
        self.entry(k, id).landed.get_or_insert(landed);
    }

    /// The row that landed this content in this run, if one did.
    pub fn landed_by(&self, blake3_hex: &str) -> Option<i64> {
        Some(self.get(key(blake3_hex)?)?.landed?.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(n: u8) -> String {
        blake3::hash(&[n]).to_hex().to_string()
    }

    #[test]
    fn the_first_row_forwarded_and_the_first_landed_are_kept() {
        let mut c = Contents::default();
        assert_eq!(c.forwarded_by(&hex(1)), None);
        c.forward(&hex(1), 10);
        c.forward(&hex(1), 11);
        assert_eq!(c.forwarded_by(&hex(1)), Some(10));
        assert_eq!(c.landed_by(&hex(1)), None, "forwarded is not landed");
        // The first forwarded row failed; the second landed it.
        c.land(&hex(1), 11);
        c.land(&hex(1), 12);
        assert_eq!(c.landed_by(&hex(1)), Some(11));
        assert_eq!(c.forwarded_by(&hex(1)), Some(10));
        // Landed without having been forwarded (a row the content check did not see).
        c.land(&hex(2), 20);
        assert_eq!(c.landed_by(&hex(2)), Some(20));
        assert_eq!(c.landed_by(&hex(3)), None);
    }

    #[test]
    fn text_that_is_no_blake3_is_never_found() {
        let mut c = Contents::default();
        c.forward("not a digest", 1);
        c.land("not a digest", 1);
        assert_eq!(c.forwarded_by("not a digest"), None);
        assert_eq!(c.landed_by("not a digest"), None);
    }

    #[test]
    fn an_entry_takes_32_bytes() {
        // What a million-file run's memory is sized by (see the module's doc).
        assert_eq!(std::mem::size_of::<(u128, Entry)>(), 32);
    }

    /// Entries merged into the sorted vector are found and updated as the recent ones are.
    #[test]
    fn merged_entries_answer_as_recent_ones() {
        let mut c = Contents::default();
        let n = MERGE_AT as i64 * 2 + 5;
        let hexes: Vec<String> = (0..n)
            .map(|i| blake3::hash(&i.to_le_bytes()).to_hex().to_string())
            .collect();
        for (i, h) in hexes.iter().enumerate() {
            c.forward(h, i as i64 + 1);
        }
        assert!(c.merged.len() >= MERGE_AT * 2, "two merges");
        assert!(
            c.merged.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no key twice"
        );
        c.land(&hexes[3], 99);
        c.land(&hexes[3], 100);
        c.forward(&hexes[3], 101);
        for (i, h) in hexes.iter().enumerate() {
            assert_eq!(c.forwarded_by(h), Some(i as i64 + 1), "entry {i}");
        }
        assert_eq!(c.landed_by(&hexes[3]), Some(99));
        assert_eq!(c.landed_by(&hexes[4]), None);
    }
}
