//! The files a local target (a folder, a calibre library) held when it was opened, by size,
//! with the BLAKE3s of a size's files computed the first time that size is asked about: what the
//! content check answers from ("the target already has these bytes, there").

use super::ContentQuery;
use crate::hash::{self, DigestSet};
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct HeldFiles {
    root: PathBuf,
    /// Size → paths (relative to `root`) of the files of that size.
    by_size: HashMap<u64, Vec<String>>,
    /// For each size asked about so far: BLAKE3 → the first held file of that size with it
    /// (every file of the size read once, when the size is first asked about; an unreadable
    /// one is left out). A query is then one lookup, however many files share its size: a
    /// resumed run into a folder holding 300,000 files of a few sizes scanned them all for
    /// every file (~50 files/s).
    by_content: Mutex<HashMap<u64, HashMap<String, String>>>,
    /// Held files read and hashed so far.
    hashed: AtomicU64,
    /// Held files' BLAKE3s compared with a queried one so far (a lookup counts one).
    compared: AtomicU64,
}

impl HeldFiles {
    pub fn new(root: PathBuf) -> HeldFiles {
        HeldFiles {
            root,
            ..HeldFiles::default()
        }
    }

    pub fn add(&mut self, rel: String, size: u64) {
        self.by_size.entry(size).or_default().push(rel);
    }

    pub fn has_size(&self, size: u64) -> bool {
        self.by_size.contains_key(&size)
    }

    pub fn is_empty(&self) -> bool {
        self.by_size.is_empty()
    }

    /// Which queried contents are among the held files (same size and BLAKE3), and where.
    /// Blocking: reads each held file of a queried size once, the first time that size is
    /// queried.
    pub fn find(&self, q: &[ContentQuery]) -> HashMap<i64, Option<String>> {
        let mut found = HashMap::new();
        let mut by_content = self.by_content.lock().unwrap_or_else(|e| e.into_inner());
        for c in q {
            let Some(candidates) = self.by_size.get(&c.size) else {
                continue;
            };
            let of_size = by_content
                .entry(c.size)
                .or_insert_with(|| self.index(candidates));
            self.compared.fetch_add(1, Ordering::Relaxed);
            if let Some(rel) = of_size.get(&c.digests.blake3) {
                found.insert(c.key, Some(rel.clone()));
            }
        }
        found
    }

    /// BLAKE3 → path of `candidates` (the first with each BLAKE3), each read once.
    fn index(&self, candidates: &[String]) -> HashMap<String, String> {
        let mut index = HashMap::with_capacity(candidates.len());
        for rel in candidates {
            self.hashed.fetch_add(1, Ordering::Relaxed);
            let digest = File::open(self.root.join(rel))
                .and_then(|f| hash::hash_reader_with(f, DigestSet::Blake3));
            if let Ok((d, _)) = digest {
                index.entry(d.blake3).or_insert_with(|| rel.clone());
            }
        }
        index
    }

    /// Held files read and hashed so far.
    pub fn hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// Held files' BLAKE3s compared with a queried one so far.
    pub fn compared(&self) -> u64 {
        self.compared.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_held_file_by_size_and_blake3_and_reads_it_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"abc").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"xyz").unwrap();
        let mut held = HeldFiles::new(dir.path().to_path_buf());
        held.add("a.txt".into(), 3);
        held.add("b.txt".into(), 3);
        let q = |key, bytes: &[u8]| ContentQuery {
            key,
            digests: hash::hash_bytes_with(bytes, DigestSet::Blake3),
            file_name: "x".into(),
            size: bytes.len() as u64,
        };
        let found = held.find(&[q(1, b"xyz"), q(2, b"abd"), q(3, b"abcd")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&1].as_deref(), Some("b.txt"));
        // Hashed once: a change after the first look is not seen (the target at open).
        std::fs::write(dir.path().join("b.txt"), b"zzz").unwrap();
        assert_eq!(held.find(&[q(4, b"xyz")])[&4].as_deref(), Some("b.txt"));
        assert_eq!(held.hashed(), 2);
    }

    /// Many held files of one size (a resumed run into a folder of small books): asking about
    /// contents it does not hold compares against an index, not against every file each time.
    #[test]
    fn queries_cost_a_lookup_however_many_files_share_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = HeldFiles::new(dir.path().to_path_buf());
        for i in 0..2000 {
            let name = format!("{i:04}.txt");
            std::fs::write(dir.path().join(&name), format!("{i:04}")).unwrap();
            held.add(name, 4);
        }
        let q = |key, bytes: &[u8]| ContentQuery {
            key,
            digests: hash::hash_bytes_with(bytes, DigestSet::Blake3),
            file_name: "x".into(),
            size: bytes.len() as u64,
        };
        let queries: Vec<ContentQuery> = (0..500)
            .map(|i| q(i, format!("n{i:03}").as_bytes()))
            .chain([q(9999, b"1234")])
            .collect();
        let found = held.find(&queries);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&9999].as_deref(), Some("1234.txt"));
        assert_eq!(held.hashed(), 2000, "each held file read once");
        let steps = held.compared();
        assert!(steps <= 501, "{steps} comparisons for 501 queries");
    }
}
