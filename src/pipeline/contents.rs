//! The run's book of contents: for each content (BLAKE3) a row of this run went on to transfer
//! with, the first such row, and the row that landed it once one did. The content check asks it
//! which contents are already on their way (so the target is not asked about them again), the
//! transfer stage which have landed (so a later row with the same bytes becomes a duplicate of
//! it). One entry per distinct content of the run, keyed by the digest's 32 bytes rather than
//! its hex text: 48 bytes an entry where the two maps of hex strings this replaced took ~250,
//! which is most of a million-file run's memory.

use std::collections::HashMap;
use std::num::NonZeroI64;

/// Contents of this run, by BLAKE3.
#[derive(Debug, Default)]
pub struct Contents {
    by_blake3: HashMap<blake3::Hash, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first row that went on to transfer with this content.
    forwarded: i64,
    /// The row that landed it, once one did.
    landed: Option<NonZeroI64>,
}

/// A BLAKE3 in hex as the key; `None` for text that is not one (never recorded, never found:
/// such a row is asked about and sent as if its content were new to the run).
fn key(blake3_hex: &str) -> Option<blake3::Hash> {
    blake3::Hash::from_hex(blake3_hex).ok()
}

impl Contents {
    /// Note that row `id` goes on to transfer with this content, unless another row did first.
    pub fn forward(&mut self, blake3_hex: &str, id: i64) {
        if let Some(k) = key(blake3_hex) {
            self.by_blake3.entry(k).or_insert(Entry {
                forwarded: id,
                landed: None,
            });
        }
    }

    /// The first row that went on to transfer with this content.
    pub fn forwarded_by(&self, blake3_hex: &str) -> Option<i64> {
        Some(self.by_blake3.get(&key(blake3_hex)?)?.forwarded)
    }

    /// Note that row `id` landed this content.
    pub fn land(&mut self, blake3_hex: &str, id: i64) {
        let (Some(k), Some(landed)) = (key(blake3_hex), NonZeroI64::new(id)) else {
            return;
        };
        self.by_blake3
            .entry(k)
            .or_insert(Entry {
                forwarded: id,
                landed: None,
            })
            .landed
            .get_or_insert(landed);
    }

    /// The row that landed this content in this run, if one did.
    pub fn landed_by(&self, blake3_hex: &str) -> Option<i64> {
        Some(self.by_blake3.get(&key(blake3_hex)?)?.landed?.get())
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
    fn an_entry_takes_48_bytes() {
        // What a million-file run's memory is sized by (see the module's doc).
        assert_eq!(std::mem::size_of::<(blake3::Hash, Entry)>(), 48);
    }
}
