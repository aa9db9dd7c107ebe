//! The names a run made in a folder target before it read what the target held: left out of
//! that read, which is taken only when a row first asks (see `FolderTarget::held`), so that
//! this run's own placements are never taken for books the target already had.
//!
//! Names, not times: a file's ctime comes from a coarse clock (a kernel tick on ext4; 10 ms
//! on exFAT, 2 s on FAT), so a file made just before the open can carry the same time as one
//! made after it, and a rule by times leaves out files the target held.
//!
//! A placement holds [`MadeNames::making`] from before it makes its file until it recorded
//! the name; the read walks the tree without it and then takes all the names at once
//! ([`MadeNames::settle`]), which waits for the placements in flight: every file of this run
//! the walk saw has its name recorded by then. After that, nothing more is recorded.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

/// Past this many names made before the read, the caller reads what the target held at once
/// (a walk it would take at the first check anyway) rather than keep recording: about 100
/// bytes a name, so at most ~10 MB for a run that only places.
pub const MADE_NAMES_CAP: usize = 100_000;

#[derive(Default)]
pub struct MadeNames {
    gate: RwLock<()>,
    /// `Some` until settled: the names' keys (`NameRules::key` of the path under the root).
    names: Mutex<Option<HashSet<String>>>,
}

/// Held by a placement while it makes its file and records its name.
pub struct Making<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

impl MadeNames {
    pub fn new() -> MadeNames {
        MadeNames {
            gate: RwLock::new(()),
            names: Mutex::new(Some(HashSet::new())),
        }
    }

    /// Taken before making a file, kept until its name is recorded.
    pub fn making(&self) -> Making<'_> {
        Making(self.gate.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Record a name this run made (while [`Self::making`] is held).
    pub fn record(&self, _making: &Making<'_>, key: String) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = names.as_mut() {
            set.insert(key);
        }
    }

    /// Whether the names reached [`MADE_NAMES_CAP`] unsettled: the caller should read what the
    /// target held now (without holding [`Self::making`]).
    pub fn full(&self) -> bool {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names
            .as_ref()
            .is_some_and(|set| set.len() >= MADE_NAMES_CAP)
    }

    /// All the names recorded, once the placements in flight have recorded theirs; nothing is
    /// recorded after this.
    pub fn settle(&self) -> HashSet<String> {
        let _all = self.gate.write().unwrap_or_else(|e| e.into_inner());
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn settling_waits_for_a_placement_that_made_its_file_and_not_yet_its_record() {
        let made = Arc::new(MadeNames::new());
        let making = made.making();
        let settler = {
            let made = made.clone();
            std::thread::spawn(move || made.settle())
        };
        // The settler is waiting (had it not waited, it would have found no name).
        std::thread::sleep(Duration::from_millis(50));
        made.record(&making, "a/book.epub".into());
        drop(making);
        let names = settler.join().unwrap();
        assert!(names.contains("a/book.epub"), "{names:?}");
        // Settled: later names are not recorded (the walk is over).
        let making = made.making();
        made.record(&making, "b.epub".into());
        drop(making);
        assert!(made.settle().is_empty());
        assert!(!made.full());
    }

    #[test]
    fn the_cap_is_reported_when_reached() {
        let made = MadeNames::new();
        let making = made.making();
        for i in 0..MADE_NAMES_CAP - 1 {
            made.record(&making, format!("{i}"));
        }
        assert!(!made.full());
        made.record(&making, "last".into());
        assert!(made.full());
    }
}
