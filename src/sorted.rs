//! Sorted vectors that take additions in batches: a million small entries in one allocation of
//! their own size, where a hash map takes twice to three times that (its table is a power of
//! two, and both tables live while it grows).

/// Merge `recent` (sorted by `key`) into `merged` (sorted by `key`), in place from the end: no
/// second copy of `merged` is made. Equal keys keep `merged`'s entries first.
pub fn merge_in_place<T: Copy, K: Ord>(merged: &mut Vec<T>, recent: &[T], key: impl Fn(&T) -> K) {
    let Some(&filler) = recent.first() else {
        return;
    };
    let mut i = merged.len();
    merged.reserve_exact(recent.len());
    merged.resize(i + recent.len(), filler);
    let mut k = merged.len();
    let mut j = recent.len();
    while j > 0 {
        k -= 1;
        if i > 0 && key(&merged[i - 1]) > key(&recent[j - 1]) {
            merged[k] = merged[i - 1];
            i -= 1;
        } else {
            merged[k] = recent[j - 1];
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_gives_what_sorting_both_gives() {
        let mut merged: Vec<(u32, u32)> = (0..50).map(|i| (i * 3 % 40, i)).collect();
        merged.sort_by_key(|e| e.0);
        let mut recent: Vec<(u32, u32)> = (0..30).map(|i| (i * 7 % 45, 100 + i)).collect();
        recent.sort_by_key(|e| e.0);
        let mut want = merged.clone();
        want.extend(&recent);
        want.sort_by_key(|e| e.0); // stable: merged's entries first among equal keys
        merge_in_place(&mut merged, &recent, |e| e.0);
        assert_eq!(merged, want);
        merge_in_place(&mut merged, &[], |e| e.0);
        assert_eq!(merged, want);
        let mut empty: Vec<(u32, u32)> = Vec::new();
        merge_in_place(&mut empty, &recent, |e| e.0);
        assert_eq!(empty, recent);
    }
}
