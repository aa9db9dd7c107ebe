//! Walking a folder tree for book files: sorted, depth-first, following symlinks but never a
//! loop, skipping hidden and temporary files and bookferry's own files, reporting each folder
//! once its whole subtree is done (so an interrupted scan can resume by folder).

use super::formats::FormatSet;
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
        }
    }

    /// Walk everything, calling `emit` for each event. Stops early (returning false) when
    /// `emit` returns false.
    pub fn walk(&mut self, emit: &mut dyn FnMut(WalkEvent) -> bool) -> std::io::Result<bool> {
        let root = self.root.clone();
        let meta = fs::metadata(&root)?;
        self.visited.insert((meta.dev(), meta.ino()));
        self.walk_dir(&root, "", emit)
    }

    fn walk_dir(
        &mut self,
        abs: &Path,
        rel: &str,
        emit: &mut dyn FnMut(WalkEvent) -> bool,
    ) -> std::io::Result<bool> {
        let entries = match fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) if rel.is_empty() => return Err(e),
            Err(e) => {
                return Ok(emit(WalkEvent::Skipped(format!(
                    "{}: cannot read folder: {e}",
                    abs.display()
                ))));
            }
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let name_lossy = name_for_ref(&name);
            if is_ignored_name(&name_lossy) {
                continue;
            }
            let path = abs.join(&name);
            let child_rel = if rel.is_empty() {
                name_lossy.to_string()
            } else {
                format!("{rel}/{name_lossy}")
            };
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let what = match fs::symlink_metadata(&path) {
                        Ok(l) if l.file_type().is_symlink() => "dangling or looping symlink",
                        _ => "cannot stat",
                    };
                    if !emit(WalkEvent::Skipped(format!(
                        "{}: {what}: {e}",
                        path.display()
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
                if !self.visited.insert((meta.dev(), meta.ino())) {
                    if !emit(WalkEvent::Skipped(format!(
                        "{}: folder already walked through another path (symlink loop?)",
                        path.display()
                    ))) {
                        return Ok(false);
                    }
                    continue;
                }
                if !self.walk_dir(&path, &child_rel, emit)? {
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

    #[test]
    fn ignores_hidden_and_temp() {
        assert!(is_ignored_name(".DS_Store"));
        assert!(is_ignored_name("~$draft.docx"));
        assert!(is_ignored_name("Dune.epub.part"));
        assert!(!is_ignored_name("Dune.epub"));
    }
}
