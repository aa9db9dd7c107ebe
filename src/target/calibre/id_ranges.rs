//! A set of book ids kept as runs of consecutive ids: the books one run created are numbered one
//! after another, so a million of them take a few ranges, not a million hash entries.

use std::collections::BTreeMap;

/// Book ids, as ranges `start → end` (end exclusive), none touching another.
#[derive(Debug, Default)]
pub(super) struct IdRanges {
    ranges: BTreeMap<i64, i64>,
}

impl IdRanges {
    /// The range holding `id`, if any.
    fn around(&self, id: i64) -> Option<(i64, i64)> {
        let (&start, &end) = self.ranges.range(..=id).next_back()?;
        (id < end).then_some((start, end))
    }

    pub(super) fn contains(&self, id: i64) -> bool {
        self.around(id).is_some()
    }

    pub(super) fn insert(&mut self, id: i64) {
        if self.contains(id) {
            return;
        }
        let mut start = id;
        let mut end = id + 1;
        if let Some((&s, &e)) = self.ranges.range(..id).next_back() {
            if e == id {
                start = s;
            }
        }
        if let Some(next_end) = self.ranges.get(&end).copied() {
            self.ranges.remove(&end);
            end = next_end;
        }
        self.ranges.insert(start, end);
    }

    pub(super) fn remove(&mut self, id: i64) {
        let Some((start, end)) = self.around(id) else {
            return;
        };
        self.ranges.remove(&start);
        if start < id {
            self.ranges.insert(start, id);
        }
        if id + 1 < end {
            self.ranges.insert(id + 1, end);
        }
    }

    #[cfg(test)]
    fn runs(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ranges_hold_the_same_ids_as_a_set() {
        let mut ranges = IdRanges::default();
        let mut set = HashSet::new();
        // Inserts and removals in an order that merges, splits and extends runs both ways.
        let ops: &[(bool, i64)] = &[
            (true, 5),
            (true, 7),
            (true, 6),
            (true, 4),
            (true, 9),
            (false, 6),
            (true, 8),
            (false, 4),
            (false, 100),
            (true, 6),
            (true, 6),
            (false, 9),
            (true, 1),
        ];
        for &(insert, id) in ops {
            if insert {
                ranges.insert(id);
                set.insert(id);
            } else {
                ranges.remove(id);
                set.remove(&id);
            }
            for probe in 0..12 {
                assert_eq!(
                    ranges.contains(probe),
                    set.contains(&probe),
                    "{probe} after {id}"
                );
            }
        }
        assert_eq!(ranges.runs(), 2, "1 and 5..=8");
    }

    #[test]
    fn consecutive_ids_are_one_run() {
        let mut ranges = IdRanges::default();
        for id in 1..=100_000 {
            ranges.insert(id);
        }
        assert_eq!(ranges.runs(), 1);
        assert!(ranges.contains(1) && ranges.contains(100_000) && !ranges.contains(100_001));
    }
}
