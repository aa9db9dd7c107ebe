//! Walking a folder tree for book files: sorted, depth-first, following symlinks but never a
//! loop, skipping hidden and temporary files and bookferry's own files, reporting each folder
//! once its whole subtree is done (so an interrupted scan can resume by folder). On a network
//! or FUSE filesystem, threads list folders ahead of it (`listing`).

use super::formats::FormatSet;
use super::listing::{self, FolderKey, ListingPool};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A book file found by the walk.
#[derive(Debug, Clone)]
pub struct FoundFile {
    /// Relative to the root, `/`-separated (lossy where the name is not UTF-8).
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub format: String,
}

/// What the walk reports, in order.
#[derive(Debug)]
pub enum WalkEvent {
    File(FoundFile),
    /// Every entry under this folder (relative; `""` is the root) has been reported.
    DirDone(String),
    /// Not entered: a scan interrupted earlier already recorded this folder's whole subtree.
    AlreadyWalked(String),
    /// Something passed over, with a one-line reason naming it.
    Skipped(String),
}

pub struct Walker<'a> {
    pub root: PathBuf,
    pub formats: &'a FormatSet,
    /// Files never to record (the state DB and its companions), by (device, inode).
    pub exclude: HashSet<(u64, u64)>,
    /// Folders (relative) a previous, interrupted scan finished.
    pub walked: &'a HashSet<String>,
    /// Regular files the format set did not take, by format (`""`: no extension): what the
    /// source has when `--formats` matches nothing. At most [`UNMATCHED_KINDS`] formats.
    pub unmatched: BTreeMap<String, u64>,
    visited: HashSet<(u64, u64)>,
    /// Threads listing folders ahead of the walk (network and FUSE filesystems).
    pool: Option<ListingPool>,
    /// Threads for `pool`; `None`: as `listing::threads_for` decides for the root.
    threads: Option<usize>,
}

/// Formats counted in [`Walker::unmatched`], at most (a tree of odd names stays bounded).
pub const UNMATCHED_KINDS: usize = 1000;

impl<'a> Walker<'a> {
    pub fn new(
        root: PathBuf,
        formats: &'a FormatSet,
        exclude: HashSet<(u64, u64)>,
        walked: &'a HashSet<String>,
    ) -> Walker<'a> {
        Walker {
            root,
            formats,
            exclude,
            walked,
            unmatched: BTreeMap::new(),
            visited: HashSet::new(),
            pool: None,
            threads: None,
        }
    }

    /// List folders ahead of the walk on `threads` threads (0: none), whatever the filesystem.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Walk everything, calling `emit` for each event. Stops early (returning false) when
    /// `emit` returns false.
    pub fn walk(&mut self, emit: &mut dyn FnMut(WalkEvent) -> bool) -> std::io::Result<bool> {
        let root = self.root.clone();
        let meta = fs::metadata(&root)?;
        let key = (meta.dev(), meta.ino());
        self.visited.insert(key);
        let threads = self.threads.unwrap_or_else(|| listing::threads_for(&root));
        if threads > 0 {
            self.pool = Some(ListingPool::start(
                &root,
                key,
                self.walked.clone(),
                threads,
                listing::list_folder,
            )?);
        }
        let complete = self.walk_dir(&root, key, "", emit);
        self.pool = None;
        complete
    }

    fn walk_dir(
        &mut self,
        abs: &Path,
        key: FolderKey,
        rel: &str,
        emit: &mut dyn FnMut(WalkEvent) -> bool,
    ) -> std::io::Result<bool> {
        let listed = match &self.pool {
            Some(pool) => pool.take(key, abs, rel),
            None => listing::list_folder(abs),
        };
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) if rel.is_empty() => return Err(e),
            Err(e) => {
                return Ok(emit(WalkEvent::Skipped(format!(
                    "{}: cannot read folder: {e}",
                    abs.display()
                ))));
            }
        };
        for entry in entries {
            let name = entry.name;
            let name_lossy = name_for_ref(&name);
            let path = abs.join(&name);
            let child_rel = if rel.is_empty() {
                name_lossy.to_string()
            } else {
                format!("{rel}/{name_lossy}")
            };
            let meta = match entry.meta {
                Ok(m) => m,
                Err(e) => {
                    let what = if e.dangling_symlink {
                        "dangling or looping symlink"
                    } else {
                        "cannot stat"
                    };
                    if !emit(WalkEvent::Skipped(format!(
                        "{}: {what}: {}",
                        path.display(),
                        e.error
                    ))) {
                        return Ok(false);
                    }
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if self.walked.contains(&child_rel) {
                    if !emit(WalkEvent::AlreadyWalked(child_rel)) {
                        return Ok(false);
                    }
                    continue;
                }
                let child_key = (meta.dev(), meta.ino());
                if !self.visited.insert(child_key) {
                    if !emit(WalkEvent::Skipped(format!(
                        "{}: folder already walked through another path (symlink loop?)",
                        path.display()
                    ))) {
                        return Ok(false);
                    }
                    continue;
                }
                if !self.walk_dir(&path, child_key, &child_rel, emit)? {
                    return Ok(false);
                }
            } else if ft.is_file() {
                if self.exclude.contains(&(meta.dev(), meta.ino())) {
                    continue;
                }
                let Some(format) = self.formats.format_of(&name_lossy) else {
                    let other = super::formats::format_of(&name_lossy).unwrap_or_default();
                    if self.unmatched.len() < UNMATCHED_KINDS || self.unmatched.contains_key(&other)
                    {
                        *self.unmatched.entry(other).or_default() += 1;
                    }
                    continue;
                };
                let found = FoundFile {
                    rel: child_rel,
                    abs: path,
                    size: meta.len(),
                    mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    format,
                };
                if !emit(WalkEvent::File(found)) {
                    return Ok(false);
                }
            } else {
                let kind = if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else {
                    "a device"
                };
                if !emit(WalkEvent::Skipped(format!(
                    "{}: not a regular file ({kind}); not read",
                    path.display()
                ))) {
                    return Ok(false);
                }
            }
        }
        Ok(emit(WalkEvent::DirDone(rel.to_string())))
    }
}

/// A file name as it goes into a source reference: as it is when it is UTF-8; otherwise each
/// byte that is not UTF-8 written `\xFF`, so two names that differ only there stay apart (see
/// [`crate::path_text`]).
pub fn name_for_ref(name: &std::ffi::OsStr) -> std::borrow::Cow<'_, str> {
    crate::path_text::escape(name)
}

/// Hidden files, editors' and downloaders' temporary files, bookferry's own temp files.
pub fn is_ignored_name(name: &str) -> bool {
    let lower = name.to_lowercase();
    name.starts_with('.')
        || name.starts_with("~$")
        || name.ends_with('~')
        || lower.ends_with(".part")
        || lower.ends_with(".crdownload")
        || lower.ends_with(".tmp")
        || lower.ends_with(".partial")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_stay_apart() {
        use std::os::unix::ffi::OsStrExt;
        let a = name_for_ref(std::ffi::OsStr::from_bytes(b"Twin\xfe.epub"));
        let b = name_for_ref(std::ffi::OsStr::from_bytes(b"Twin\xff.epub"));
        assert_eq!(a, "Twin\\xFE.epub");
        assert_ne!(a, b);
        assert_eq!(name_for_ref(std::ffi::OsStr::new("Dune.epub")), "Dune.epub");
    }

    /// Every event of a walk of `root`, with `threads` listing ahead.
    fn events(root: &Path, walked: &HashSet<String>, threads: usize) -> Vec<String> {
        let formats = FormatSet::parse("epub,pdf").unwrap();
        let mut walker =
            Walker::new(root.to_path_buf(), &formats, HashSet::new(), walked).with_threads(threads);
        let mut out = Vec::new();
        walker
            .walk(&mut |ev| {
                out.push(format!("{ev:?}"));
                true
            })
            .unwrap();
        out.push(format!("{:?}", walker.unmatched));
        out
    }

    /// Listing ahead on threads changes nothing the walk reports: files, order, skipped
    /// entries (a symlink loop, a dangling symlink, a FIFO), folders done and passed over.
    #[test]
    fn threads_listing_ahead_change_nothing_the_walk_reports() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/x/deep", "a/y", "b", "c/z", "walked/inner"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "a/x/deep/1.epub",
            "a/x/2.pdf",
            "a/y/3.epub",
            "a/y/notes.txt",
            "b/4.epub",
            "b/.hidden.epub",
            "c/z/5.epub",
            "top.epub",
            "walked/inner/6.epub",
        ] {
            fs::write(root.join(f), f).unwrap();
        }
        symlink(root.join("a"), root.join("c/loop")).unwrap();
        symlink(root.join("a/x"), root.join("b/alias")).unwrap();
        symlink(root.join("missing"), root.join("b/dangling.epub")).unwrap();
        std::process::Command::new("mkfifo")
            .arg(root.join("c/pipe.epub"))
            .status()
            .unwrap();
        let walked: HashSet<String> = ["walked".to_string()].into();
        let alone = events(root, &walked, 0);
        assert!(
            alone.iter().any(|e| e.contains("symlink loop")),
            "{alone:#?}"
        );
        assert!(alone
            .iter()
            .any(|e| e.contains("AlreadyWalked(\"walked\")")));
        assert_eq!(alone.iter().filter(|e| e.starts_with("File")).count(), 6);
        for threads in [1, 4, 16] {
            assert_eq!(events(root, &walked, threads), alone, "{threads} threads");
        }
    }

    #[test]
    fn ignores_hidden_and_temp() {
        assert!(is_ignored_name(".DS_Store"));
        assert!(is_ignored_name("~$draft.docx"));
        assert!(is_ignored_name("Dune.epub.part"));
        assert!(!is_ignored_name("Dune.epub"));
    }
}
