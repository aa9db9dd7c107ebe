//! What a killed run leaves in a calibre library, and how the next run cleans it. A folder
//! with a `.bookferry-pending` marker is bookferry's until its row is committed:
//! [`CalibreLibrary::cleanup_orphans`] (run by `open` too) removes marked folders that have no
//! `books` row, and in a recorded book's folder only the files its marker names that `data`
//! does not record, then the marker (a crash between the commit and the marker's removal).
//! Folders without a marker are calibre's and never touched. Cleaning runs only while this
//! process holds bookferry's lock on the library (`run_lock`), so no live bookferry run is
//! writing the marked folders it removes: whoever left them is dead.

use super::library::CalibreLibrary;
use super::CalibreError;
use crate::calibre::paths::{book_id_of, format_file_name};
use crate::target::folder::TEMP_PREFIX;
use rusqlite::OptionalExtension;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::Path;

/// The marker that makes a book folder bookferry's until its row is committed.
pub const PENDING_MARKER: &str = ".bookferry-pending";

/// Make a reserved book's folder `root/rel_dir` (`Author/Title (id)`) with the pending marker
/// in it: the author folder is made if missing (never passed through if it is a symlink or a
/// file), the book folder must be new.
pub fn make_book_dir(root: &Path, rel_dir: &str, book_id: i64) -> Result<(), CalibreError> {
    let io_error = |what: &'static str, path: &Path, source: io::Error| CalibreError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let (author_rel, _) = rel_dir.split_once('/').unwrap_or((rel_dir, ""));
    let author_dir = root.join(author_rel);
    match fs::symlink_metadata(&author_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(CalibreError::AuthorNotAFolder { path: author_dir }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&author_dir) {
            Ok(()) => {}
            // Made a moment ago by another book of this author.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&author_dir).is_ok_and(|m| m.is_dir()) {
                    return Err(CalibreError::AuthorNotAFolder { path: author_dir });
                }
            }
            Err(e) => return Err(io_error("cannot create the author folder", &author_dir, e)),
        },
        Err(e) => return Err(io_error("cannot stat the author folder", &author_dir, e)),
    }
    let dir = root.join(rel_dir);
    if let Err(e) = fs::create_dir(&dir) {
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            CalibreError::FolderExists { path: dir, book_id }
        } else {
            io_error("cannot create the book folder", &dir, e)
        });
    }
    let marker = dir.join(PENDING_MARKER);
    File::create(&marker)
        .map(drop)
        .map_err(|e| io_error("cannot create the pending marker", &marker, e))
}

impl CalibreLibrary {
    /// Remove what an interrupted run left: marked book folders with no `books` row (and their
    /// author folder when it is left empty), and empty `Title (id)` folders with no row (a
    /// crash between creating a folder and marking it). A marked folder whose row exists only
    /// loses its marker. Books planned in this session are left alone. Returns the folders
    /// removed.
    pub fn cleanup_orphans(&mut self) -> Result<usize, CalibreError> {
        let mut removed = 0;
        let entries =
            fs::read_dir(&self.root).map_err(|e| self.io_error("cannot list", &self.root, e))?;
        for author in entries.flatten() {
            let is_dir = author.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !is_dir || author.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(mut books) = fs::read_dir(author.path()) else {
                continue;
            };
            let mut books = match books.next() {
                // An empty author folder: made by a run killed before its book's folder.
                // (Removed only while empty: `remove_dir` refuses anything else.)
                None => {
                    let _ = fs::remove_dir(author.path());
                    continue;
                }
                Some(first) => std::iter::once(first).chain(books),
            };
            for book in books.by_ref().flatten() {
                if !book.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = book.file_name().to_string_lossy().into_owned();
                let Some(id) = book_id_of(&name) else {
                    continue;
                };
                if self.planned.contains_key(&id) {
                    continue;
                }
                let dir = book.path();
                let marked = dir.join(PENDING_MARKER).exists();
                let empty = fs::read_dir(&dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if !marked && !empty {
                    continue;
                }
                let rel = format!("{}/{}", author.file_name().to_string_lossy(), name);
                let row_path: Option<String> = self
                    .db()
                    .conn
                    .query_row("SELECT path FROM books WHERE id = ?1", [id], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.db_error("looking up a book folder", e))?;
                match row_path {
                    Some(p) if p == rel => {
                        if marked {
                            self.remove_unrecorded(id, &dir)?;
                        }
                    }
                    _ => {
                        self.remove_book_dir(&dir)?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// In a recorded book's folder: remove the files its marker names that `data` does not
    /// record (written by a run that died before recording them), then the marker.
    fn remove_unrecorded(&self, book_id: i64, dir: &Path) -> Result<(), CalibreError> {
        let marker = dir.join(PENDING_MARKER);
        let listed = fs::read_to_string(&marker).unwrap_or_default();
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare_cached("SELECT name, format FROM data WHERE book = ?1")
            .map_err(|e| self.db_error("reading a book's formats", e))?;
        let recorded: HashSet<String> = stmt
            .query_map([book_id], |r| {
                Ok(format_file_name(
                    &r.get::<_, String>(0)?,
                    &r.get::<_, String>(1)?,
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error("reading a book's formats", e))?;
        for name in listed.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let ours = !name.starts_with('.') || name.starts_with(TEMP_PREFIX);
            if recorded.contains(name) || name.contains('/') || !ours {
                continue;
            }
            let file = dir.join(name);
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("cannot remove", &file, e)),
            }
        }
        fs::remove_file(&marker).map_err(|e| self.io_error("cannot remove", &marker, e))
    }
}
