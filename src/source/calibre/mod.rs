//! A calibre library as a migration source: reads the library's `metadata.db` (strictly
//! read-only, so calibre may keep running: `crate::calibre::read`) and lists every format file
//! of every book with the book's metadata as calibre shows it. This module owns only the reading
//! of calibre's database into bookferry's [`Metadata`]; stat-ing, hashing and uploading the
//! files is the caller's, and what a calibre library is belongs to `crate::calibre`.
//!
//! The library is read a chunk of books at a time ([`LibraryReader`]), in book id order, so
//! memory holds one chunk's formats, never the library's. A chunk is the next N ids of `books`
//! after the last chunk's (`WHERE id >= ? ORDER BY id LIMIT N`: deleted ids make no empty
//! chunks); one query lists its formats (`data` joined to `books`) and one query per link table
//! (authors, series, tags, identifiers, publishers, languages, comments, ratings) its rows for
//! those ids, assembled in memory by book id (`books`).
//!
//! Each chunk is read in its own read transaction, so a book's formats and its metadata come
//! from one consistent state of the database, but the library as a whole is not one snapshot.
//! calibre's `metadata.db` uses a rollback journal (`PRAGMA journal_mode` is `delete` in a
//! library calibre 6.13 makes, in the fixture, and in what the calibre target writes), where a
//! reader's SHARED lock keeps every writer from committing until the reader's transaction
//! ends. One transaction for the whole scan would stall calibre's edits for as long as the scan
//! runs, and fail them past calibre's own busy timeout (10 s: `Connection.BUSY_TIMEOUT` in
//! calibre 6's `db/backend.py`); one per chunk holds the lock only while that chunk's queries
//! run, not while the caller stats or records its files. What calibre changes meanwhile is seen
//! as a folder walk sees a tree that changes: a book in a chunk not yet read is read as it then
//! is; a book added gets a new, greater id (`AUTOINCREMENT`), so a later chunk reads it; a
//! change to a book already read is seen by the next scan.

mod books;

#[cfg(test)]
pub(crate) mod tests;

pub use crate::calibre::read::DEFAULT_BUSY_TIMEOUT;
pub use crate::calibre::{book_uuids, is_calibre_library, ReadError as CalibreError, METADATA_DB};
/// calibre's language code (ISO 639-3, e.g. `eng`) → ISO 639-1 (`en`) where one exists, else
/// the code as found (lowercased).
pub fn to_iso639_1(code: &str) -> String {
    crate::metadata::lang::iso639_1(code).unwrap_or_else(|| code.trim().to_ascii_lowercase())
}

use crate::calibre::read::ReadOnlyDb;
use crate::metadata::Metadata;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One format file of one book (a book with EPUB and MOBI yields two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibreFormat {
    /// `books.id`.
    pub book_id: i64,
    /// Lowercase format, e.g. `epub`, `azw3`.
    pub format: String,
    /// Relative to the library root, `/`-separated: `{books.path}/{data.name}.{format}`.
    pub rel_path: String,
    /// The size calibre recorded (`data.uncompressed_size`); the file itself may differ or be
    /// missing: stat [`CalibreFormat::abs_path`].
    pub size: u64,
    /// The book's metadata as calibre shows it (shared by all formats of the book).
    pub metadata: Metadata,
    /// `{books.path}/cover.jpg` when calibre says the book has a cover.
    pub cover_path: Option<String>,
}

impl CalibreFormat {
    /// A stable key for this format in the state DB: `{book_id}/{format}`.
    pub fn source_ref(&self) -> String {
        format!("{}/{}", self.book_id, self.format)
    }

    /// Where the file should be, given the library root. It may not exist (calibre's database
    /// and its folders can disagree): the caller stats it.
    pub fn abs_path(&self, root: &Path) -> PathBuf {
        root.join(&self.rel_path)
    }

    /// Where the cover should be, when calibre says there is one.
    pub fn abs_cover_path(&self, root: &Path) -> Option<PathBuf> {
        self.cover_path.as_ref().map(|c| root.join(c))
    }
}

/// A calibre library being read a chunk of books at a time, in book id order: each
/// [`LibraryReader::next_chunk`] is one read transaction.
pub struct LibraryReader {
    db: ReadOnlyDb,
    conn: Connection,
    /// Books per chunk (at least 1).
    books_per_chunk: usize,
    /// The least book id the next chunk may hold; `None` once every book was read.
    next_id: Option<i64>,
}

impl LibraryReader {
    /// The calibre library at `root`, its schema checked, none of its books read yet. Each read
    /// waits up to `busy_timeout` for a calibre write to end ([`DEFAULT_BUSY_TIMEOUT`]).
    pub fn open(
        root: &Path,
        books_per_chunk: usize,
        busy_timeout: Duration,
    ) -> Result<LibraryReader, CalibreError> {
        let db = ReadOnlyDb::of_library(root, busy_timeout)?;
        let conn = db.open()?;
        db.check_schema(&conn)?;
        Ok(LibraryReader {
            db,
            conn,
            books_per_chunk: books_per_chunk.max(1),
            next_id: Some(i64::MIN),
        })
    }

    /// Every format of the next `books_per_chunk` books (by id; fewer at the end), ordered by
    /// book id then by calibre's order of formats; empty when those books have no formats.
    /// `None` when every book was read.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<CalibreFormat>>, CalibreError> {
        let Some(first) = self.next_id else {
            return Ok(None);
        };
        let db = &self.db;
        // A deferred read transaction: a SHARED lock from its first SELECT to its end, never a
        // write lock. Dropping it (on error) rolls back, which for a reader only releases the
        // lock.
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db.error("beginning a read transaction", e))?;
        let Some(last) = books::last_id_of_chunk(db, &tx, first, self.books_per_chunk)? else {
            self.next_id = None;
            return Ok(None);
        };
        let formats = books::read_formats(db, &tx, first..=last)?;
        tx.commit()
            .map_err(|e| db.error("ending the read transaction", e))?;
        self.next_id = last.checked_add(1);
        Ok(Some(formats))
    }
}
