//! Writing books into a calibre library, in three steps a crash cannot tear apart:
//!
//! 1. [`CalibreLibrary::plan`] gives a book its id and folder (`Author/Title (id)`), creates the
//!    folder and puts a `.bookferry-pending` marker in it;
//! 2. [`CalibreLibrary::write_format`] / [`CalibreLibrary::write_cover`] put files in it (no
//!    fsync per file);
//! 3. [`CalibreLibrary::commit`] writes each book's `metadata.opf`, makes every file durable with
//!    one `syncfs`, records all the books in one transaction (`rows`), then removes their
//!    markers. (A caller that keeps placing files meanwhile takes the steps apart: `prepare`,
//!    `write_opfs`, [`RowsWriter::write_when_durable`] holding only the database's lock while
//!    its `syncfs` runs, then [`CalibreLibrary::recorded`].)
//!
//! What a crash leaves is cleaned by `recovery`. Nothing foreign goes into `metadata.db`.

use super::fields::{AddedFormat, PlannedBook};
use super::library::CalibreLibrary;
use super::recovery::PENDING_MARKER;
use super::rows::LibraryDb;
use super::CalibreError;
use crate::calibre::opf::{self, OpfBook};
use crate::calibre::text::author_to_author_sort;
use crate::calibre::{COVER_FILE, OPF_FILE};
use crate::target::flusher::syncfs;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

impl CalibreLibrary {
    /// Put the pending marker in a book folder, naming the files in it that are not recorded
    /// yet: if the run dies, `cleanup_orphans` removes those (or the whole folder of a book
    /// with no row). Not synced: a marker matters after a crash of the process, and the files
    /// it names are made durable with it by the next `flush`.
    pub fn mark_pending(&self, rel_dir: &str, names: &[String]) -> Result<(), CalibreError> {
        let path = self.root.join(rel_dir).join(PENDING_MARKER);
        let mut text = String::new();
        for n in names {
            text.push_str(n);
            text.push('\n');
        }
        fs::write(&path, text).map_err(|e| self.io_error("cannot write", &path, e))
    }

    /// Write one format of a planned book (`{file_stem}.{format lowercased}`), copying `src`.
    /// Returns the bytes written. Not synced: `commit` syncs all files at once.
    pub fn write_format(
        &self,
        book: &mut PlannedBook,
        format: &str,
        src: &mut dyn Read,
    ) -> Result<u64, CalibreError> {
        let (fmt, name) = self.format_file(&book.file_stem, format)?;
        let path = self.dir_of(book).join(name);
        if book.formats.iter().any(|(f, _)| *f == fmt) {
            return Err(CalibreError::FormatTwice {
                path,
                book_id: book.book_id,
                format: fmt,
            });
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| self.io_error("cannot create", &path, e))?;
        let size = io::copy(src, &mut out).map_err(|e| self.io_error("cannot write", &path, e))?;
        book.formats.push((fmt, size));
        Ok(size)
    }

    /// Write the book's `cover.jpg` (the bytes as given: pass a JPEG, as calibre stores).
    pub fn write_cover(&self, book: &mut PlannedBook, jpeg: &[u8]) -> Result<(), CalibreError> {
        let path = self.dir_of(book).join(COVER_FILE);
        let mut f = File::create(&path).map_err(|e| self.io_error("cannot create", &path, e))?;
        f.write_all(jpeg)
            .map_err(|e| self.io_error("cannot write", &path, e))?;
        book.has_cover = true;
        Ok(())
    }

    /// Drop a planned book: its folder (and its author folder, if left empty) is removed.
    pub fn abandon(&mut self, book: PlannedBook) -> Result<(), CalibreError> {
        self.planned.remove(&book.book_id);
        self.existing.remove(book.book_id, &book.fields.key());
        let dir = self.dir_of(&book);
        self.remove_book_dir(&dir)
    }

    pub(super) fn remove_book_dir(&self, dir: &Path) -> Result<(), CalibreError> {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_error("cannot remove", dir, e)),
        }
        if let Some(parent) = dir.parent().filter(|p| *p != self.root) {
            // Only when empty: remove_dir fails on a folder with other books in it.
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }

    /// Make every file written so far durable (one `syncfs` of the library's filesystem).
    pub fn flush(&self) -> Result<(), CalibreError> {
        syncfs(&self.root_dir).map_err(|e| self.io_error("syncfs failed", &self.root, e))
    }

    /// Record planned books whose files are written: their `metadata.opf` is written, all files
    /// are synced, then every row goes in one transaction; last, their markers are removed.
    /// On error nothing is recorded and the books stay planned (commit again, or `abandon`).
    pub fn commit(&mut self, books: &[PlannedBook]) -> Result<(), CalibreError> {
        self.commit_all(books, &[], &HashSet::new())
    }

    /// [`CalibreLibrary::commit`], also recording formats added to committed books (`data`
    /// rows, and the book marked for calibre to rewrite its `metadata.opf`). The markers of
    /// books in `still_pending` are left as they are (the caller keeps writing into them).
    pub fn commit_all(
        &mut self,
        books: &[PlannedBook],
        added: &[AddedFormat],
        still_pending: &HashSet<i64>,
    ) -> Result<(), CalibreError> {
        let resolved = self.prepare(books)?;
        self.write_opfs(books, &resolved)?;
        self.flush()?;
        self.record(books, &resolved, added, still_pending)
    }

    /// Step 1 of a commit: every value of these planned books as it will be stored (their
    /// series indexes resolved together).
    pub fn prepare(&self, books: &[PlannedBook]) -> Result<Vec<OpfBook>, CalibreError> {
        let mut resolved = Vec::with_capacity(books.len());
        let mut series_max: HashMap<String, f64> = HashMap::new();
        let db = self.db();
        for b in books {
            if !self.planned.contains_key(&b.book_id) {
                return Err(CalibreError::NotPlanned {
                    path: self.dir_of(b),
                    book_id: b.book_id,
                });
            }
            resolved.push(self.resolve(&db, b, &mut series_max)?);
        }
        Ok(resolved)
    }

    /// Step 2: each book's `metadata.opf` (needs no `&mut`: may run while the caller lets
    /// others use the library). Then the caller makes it durable, with `flush` or a `syncfs`.
    pub fn write_opfs(
        &self,
        books: &[PlannedBook],
        resolved: &[OpfBook],
    ) -> Result<(), CalibreError> {
        write_opfs(&self.root, books, resolved)
    }

    /// Step 3: every row of the books (`prepare`d, their files and `metadata.opf` durable) and
    /// of the added formats, in one transaction; then the markers of books not in
    /// `still_pending` are removed. On error nothing is recorded and the books stay planned.
    /// ([`RowsWriter::write`] then [`CalibreLibrary::recorded`], in one call.)
    pub fn record(
        &mut self,
        books: &[PlannedBook],
        resolved: &[OpfBook],
        added: &[AddedFormat],
        still_pending: &HashSet<i64>,
    ) -> Result<(), CalibreError> {
        let rows = self.rows_writer().write(books, resolved, added);
        self.recorded(books, added, still_pending, rows)
    }

    /// After [`RowsWriter::write`] of these books and formats: when it wrote them, they are
    /// committed (no longer planned) and the markers of books not in `still_pending` are
    /// removed; when it failed, the books stay planned and its error is returned.
    pub fn recorded(
        &mut self,
        books: &[PlannedBook],
        added: &[AddedFormat],
        still_pending: &HashSet<i64>,
        rows: Result<(), CalibreError>,
    ) -> Result<(), CalibreError> {
        if let Err(e) = rows {
            // The caches may name rows the rollback removed.
            self.load_caches()?;
            for (id, f) in &self.planned {
                self.existing.add(*id, &f.key());
            }
            return Err(e);
        }
        let mut done_dirs = Vec::new();
        for b in books {
            self.planned.remove(&b.book_id);
            if !still_pending.contains(&b.book_id) {
                done_dirs.push(self.dir_of(b));
            }
        }
        for a in added {
            if !still_pending.contains(&a.book_id) {
                done_dirs.push(self.root.join(&a.rel_dir));
            }
        }
        for dir in done_dirs {
            // A marker left behind is harmless: the next cleanup_orphans sees the rows and
            // removes it.
            let _ = fs::remove_file(dir.join(PENDING_MARKER));
        }
        Ok(())
    }

    /// Every value of a planned book as it will be stored.
    fn resolve(
        &self,
        db: &LibraryDb,
        b: &PlannedBook,
        series_max: &mut HashMap<String, f64>,
    ) -> Result<OpfBook, CalibreError> {
        let f = &b.fields;
        let author_sort = match &f.author_sort {
            Some(s) => s.clone(),
            None => {
                let mut sorts = Vec::with_capacity(f.authors.len());
                for a in &f.authors {
                    let known = db
                        .items
                        .authors
                        .find(&db.conn, &a.to_lowercase())
                        .map_err(|e| self.db_error("reading the authors", e))?;
                    sorts.push(match known {
                        Some((_, sort)) if !sort.is_empty() => sort,
                        _ => author_to_author_sort(a),
                    });
                }
                sorts.join(" & ")
            }
        };
        let series_index = match (&f.series, f.series_index) {
            (_, Some(i)) => i,
            (None, None) => 1.0,
            (Some(s), None) => {
                // calibre's default (`series_index_auto_increment = 'next'`): one past the
                // highest index in the series.
                let key = s.to_lowercase();
                let series = db
                    .items
                    .series
                    .find(&db.conn, &key)
                    .map_err(|e| self.db_error("reading the series", e))?;
                let db_max: Option<f64> = match series {
                    Some((id, _)) => db
                        .conn
                        .query_row(
                            "SELECT MAX(b.series_index) FROM books b JOIN books_series_link l
                             ON l.book = b.id WHERE l.series = ?1",
                            [id],
                            |r| r.get(0),
                        )
                        .map_err(|e| self.db_error("reading series indexes", e))?,
                    None => None,
                };
                let max = db_max
                    .into_iter()
                    .chain(series_max.get(&key).copied())
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
                max.map_or(1.0, |m| m.floor() + 1.0)
            }
        };
        if let Some(s) = &f.series {
            let e = series_max.entry(s.to_lowercase()).or_insert(series_index);
            *e = e.max(series_index);
        }
        Ok(f.opf_book(b.book_id, author_sort, series_index))
    }
}

/// Write each book's `metadata.opf` into its folder under `root`.
pub fn write_opfs(
    root: &Path,
    books: &[PlannedBook],
    resolved: &[OpfBook],
) -> Result<(), CalibreError> {
    for (b, r) in books.iter().zip(resolved) {
        let path = root.join(&b.rel_dir).join(OPF_FILE);
        fs::write(&path, opf::render(r)).map_err(|source| CalibreError::Io {
            path: path.clone(),
            what: "cannot write",
            source,
        })?;
    }
    Ok(())
}
