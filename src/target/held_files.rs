//! The files a local target (a folder, a calibre library) held when it was opened, by size,
//! with each one's BLAKE3 computed on first ask: what the content check answers from ("the
//! target already has these bytes, there").

use super::ContentQuery;
use crate::hash::{self, DigestSet};
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct HeldFiles {
    root: PathBuf,
    /// Size → paths (relative to `root`) of the files of that size.
    by_size: HashMap<u64, Vec<String>>,
    /// Path → BLAKE3 of the files hashed so far (`None`: unreadable); each is read at most once.
    blake3_of: Mutex<HashMap<String, Option<String>>>,
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
    /// Blocking: reads each candidate file once, the first time it is a candidate.
    pub fn find(&self, q: &[ContentQuery]) -> HashMap<i64, Option<String>> {
        let mut found = HashMap::new();
        for c in q {
            let Some(candidates) = self.by_size.get(&c.size) else {
                continue;
            };
            if let Some(rel) = candidates
                .iter()
                .find(|rel| self.blake3(rel).is_some_and(|b| b == c.digests.blake3))
            {
                found.insert(c.key, Some(rel.clone()));
            }
        }
        found
    }

    fn blake3(&self, rel: &str) -> Option<String> {
        let known = self.blake3_of.lock().ok().and_then(|m| m.get(rel).cloned());
        if let Some(s) = known {
            return s;
        }
        let s = File::open(self.root.join(rel))
            .and_then(|f| hash::hash_reader_with(f, DigestSet::Blake3))
            .map(|(d, _)| d.blake3)
            .ok();
        if let Ok(mut m) = self.blake3_of.lock() {
            m.insert(rel.to_string(), s.clone());
        }
        s
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
    }
}
