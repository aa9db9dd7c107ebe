//! The files a local target (a folder, a calibre library) held when it was opened: by name and
//! size, for the cheap check ("a file of this name and size is there"), and by size, with the
//! BLAKE3s of a size's files computed the first time that size is asked about, for the content
//! check ("the target already has these bytes, there").
//!
//! Built once ([`HeldFilesBuilder`]), then only read: the paths in one buffer, the files and the
//! names' keys in sorted vectors, ~50 bytes a held file plus its path (a resumed run into a
//! folder of 300,000 books kept four strings a file, ~400 bytes). Names and contents are keyed
//! by 128 bits of BLAKE3: two among n share a key with a chance of about n²/2¹²⁹.

use super::ContentQuery;
use crate::hash::{self, blake3_key, DigestSet};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a target held, as it is added up at the open.
#[derive(Debug)]
pub struct HeldFilesBuilder {
    held: HeldFiles,
}

#[derive(Debug, Default)]
pub struct HeldFiles {
    root: PathBuf,
    /// Every held file's path relative to `root`, each ended by a NUL.
    paths: String,
    /// (size, start of its path in `paths`), sorted.
    files: Vec<(u64, usize)>,
    /// The key of each held file's (name key, size) (see [`name_key`]), sorted.
    names: Vec<u128>,
    /// The BLAKE3s of the files of each size asked about so far.
    by_content: Mutex<ByContent>,
    /// Held files read and hashed so far.
    hashed: AtomicU64,
    /// Queries answered from the index so far (a lookup counts one).
    compared: AtomicU64,
}

#[derive(Debug, Default)]
struct ByContent {
    /// Sizes whose files are hashed (every file of the size read once, when the size is first
    /// asked about; an unreadable one is left out). A query is then one lookup, however many
    /// files share its size: a resumed run into a folder holding 300,000 files of a few sizes
    /// scanned them all for every file (~50 files/s).
    sizes: HashSet<u64>,
    /// BLAKE3 key → index in `files` of the first held file with it.
    files: HashMap<u128, usize>,
}

/// The key of a file name (as the target compares names: its name key) with a size.
fn name_key(name_key: &str, size: u64) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(&size.to_le_bytes());
    h.update(name_key.as_bytes());
    hash::key128(&h.finalize())
}

impl HeldFilesBuilder {
    pub fn new(root: PathBuf) -> HeldFilesBuilder {
        HeldFilesBuilder {
            held: HeldFiles {
                root,
                ..HeldFiles::default()
            },
        }
    }

    /// A held file at `rel` of `size` bytes whose name compares as `name`.
    pub fn add(&mut self, rel: &str, size: u64, name: &str) {
        let h = &mut self.held;
        h.files.push((size, h.paths.len()));
        h.paths.push_str(rel);
        h.paths.push('\0');
        h.names.push(name_key(name, size));
    }

    /// The held files but those whose path `drop` says: files this run placed while the
    /// tree was read (their path bytes stay in the buffer, unreferenced).
    pub fn build_without(mut self, drop: impl Fn(&str) -> bool) -> HeldFiles {
        let h = &mut self.held;
        let kept: Vec<bool> = h.files.iter().map(|(_, at)| !drop(h.path(*at))).collect();
        let mut keep = kept.iter();
        h.files.retain(|_| *keep.next().unwrap_or(&true));
        let mut keep = kept.iter();
        h.names.retain(|_| *keep.next().unwrap_or(&true));
        self.build()
    }

    pub fn build(mut self) -> HeldFiles {
        let h = &mut self.held;
        h.files.sort_unstable();
        h.files.shrink_to_fit();
        h.names.sort_unstable();
        h.names.shrink_to_fit();
        h.paths.shrink_to_fit();
        self.held
    }
}

impl HeldFiles {
    /// A target that held nothing.
    pub fn none(root: PathBuf) -> HeldFiles {
        HeldFilesBuilder::new(root).build()
    }

    fn path(&self, start: usize) -> &str {
        let rest = &self.paths[start..];
        &rest[..rest.find('\0').unwrap_or(rest.len())]
    }

    /// The held files of `size`: a range of `files`.
    fn of_size(&self, size: u64) -> std::ops::Range<usize> {
        let from = self.files.partition_point(|(s, _)| *s < size);
        let to = self.files.partition_point(|(s, _)| *s <= size);
        from..to
    }

    pub fn has_size(&self, size: u64) -> bool {
        !self.of_size(size).is_empty()
    }

    /// Whether a held file's name compares as `name` and it has `size` bytes.
    pub fn has_name(&self, name: &str, size: u64) -> bool {
        self.names.binary_search(&name_key(name, size)).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// How many files were held.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Which queried contents are among the held files (same size and BLAKE3), and where.
    /// Blocking: reads each held file of a queried size once, the first time that size is
    /// queried.
    pub fn find(&self, q: &[ContentQuery]) -> HashMap<i64, Option<String>> {
        let mut found = HashMap::new();
        let mut by_content = self.by_content.lock().unwrap_or_else(|e| e.into_inner());
        for c in q {
            let candidates = self.of_size(c.size);
            if candidates.is_empty() {
                continue;
            }
            if by_content.sizes.insert(c.size) {
                self.index(candidates, &mut by_content.files);
            }
            self.compared.fetch_add(1, Ordering::Relaxed);
            let Some(key) = blake3_key(&c.digests.blake3) else {
                continue;
            };
            if let Some(&at) = by_content.files.get(&key) {
                if self.files[at].0 == c.size {
                    found.insert(c.key, Some(self.path(self.files[at].1).to_string()));
                }
            }
        }
        found
    }

    /// Hash the files at `candidates` (indexes in `files`), each read once, into `index`
    /// (the first with each BLAKE3).
    fn index(&self, candidates: std::ops::Range<usize>, index: &mut HashMap<u128, usize>) {
        for at in candidates {
            self.hashed.fetch_add(1, Ordering::Relaxed);
            let digest = File::open(self.root.join(self.path(self.files[at].1)))
                .and_then(|f| hash::hash_reader_with(f, DigestSet::Blake3));
            if let Ok((d, _)) = digest {
                if let Some(key) = blake3_key(&d.blake3) {
                    index.entry(key).or_insert(at);
                }
            }
        }
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

    /// A content query of `bytes` under `key`.
    fn q(key: i64, bytes: &[u8]) -> ContentQuery {
        ContentQuery {
            key,
            digests: hash::hash_bytes_with(bytes, DigestSet::Blake3),
            file_name: "x".into(),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn finds_a_held_file_by_size_and_blake3_and_reads_it_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"abc").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"xyz").unwrap();
        let mut held = HeldFilesBuilder::new(dir.path().to_path_buf());
        held.add("a.txt", 3, "a.txt");
        held.add("b.txt", 3, "b.txt");
        let held = held.build();
        assert!(held.has_name("b.txt", 3));
        assert!(!held.has_name("b.txt", 4), "another size");
        assert!(!held.has_name("c.txt", 3));
        let found = held.find(&[q(1, b"xyz"), q(2, b"abd"), q(3, b"abcd")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[&1].as_deref(), Some("b.txt"));
        // Hashed once: a change after the first look is not seen (the target at open).
        std::fs::write(dir.path().join("b.txt"), b"zzz").unwrap();
        assert_eq!(held.find(&[q(4, b"xyz")])[&4].as_deref(), Some("b.txt"));
        assert_eq!(held.hashed(), 2);
    }

    /// Files left out at the build (placed by this run while the tree was read) are neither
    /// held by name nor by content; the others still are, each at its own path.
    #[test]
    fn files_left_out_at_the_build_are_not_held() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("a.txt", b"abc"), ("b.txt", b"xyz"), ("c.txt", b"qrs")] {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let mut held = HeldFilesBuilder::new(dir.path().to_path_buf());
        for name in ["a.txt", "b.txt", "c.txt"] {
            held.add(name, 3, name);
        }
        let held = held.build_without(|rel| rel == "b.txt");
        assert_eq!(held.len(), 2);
        assert!(held.has_name("a.txt", 3) && held.has_name("c.txt", 3));
        assert!(!held.has_name("b.txt", 3));
        let found = held.find(&[q(1, b"abc"), q(2, b"xyz"), q(3, b"qrs")]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[&1].as_deref(), Some("a.txt"));
        assert_eq!(found[&3].as_deref(), Some("c.txt"));
    }

    /// Many held files of one size (a resumed run into a folder of small books): asking about
    /// contents it does not hold compares against an index, not against every file each time.
    #[test]
    fn queries_cost_a_lookup_however_many_files_share_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = HeldFilesBuilder::new(dir.path().to_path_buf());
        for i in (0..2000).rev() {
            let name = format!("{i:04}.txt");
            std::fs::write(dir.path().join(&name), format!("{i:04}")).unwrap();
            held.add(&name, 4, &name);
            // Other sizes between them, so the files of size 4 are found by their size.
            let other = format!("x{i:04}.txt");
            std::fs::write(dir.path().join(&other), format!("{i:05}")).unwrap();
            held.add(&other, 5, &other);
        }
        let held = held.build();
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
