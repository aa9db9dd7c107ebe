//! A calibre library as a migration source: reads the library's `metadata.db` (strictly
//! read-only, so calibre may keep running: `crate::calibre::read`) and lists every format file
//! of every book with the book's metadata as calibre shows it. This module owns only the reading
//! of calibre's database into bookferry's [`Metadata`]; stat-ing, hashing and uploading the
//! files is the caller's, and what a calibre library is belongs to `crate::calibre`.
//!
//! One query lists the formats (`data` joined to `books`); one query per link table (authors,
//! series, tags, identifiers, publishers, languages, comments, ratings) fills in the rest,
//! assembled in memory by book id (`books`). All of them run in one read transaction, so a
//! library that calibre changes meanwhile is still read as one consistent snapshot.

mod books;

#[cfg(test)]
mod tests;

pub use crate::calibre::read::DEFAULT_BUSY_TIMEOUT;
pub use crate::calibre::{book_uuids, is_calibre_library, ReadError as CalibreError, METADATA_DB};
/// calibre's language code (ISO 639-3, e.g. `eng`) → ISO 639-1 (`en`) where one exists, else
/// the code as found (lowercased).
pub fn to_iso639_1(code: &str) -> String {
    crate::metadata::lang::iso639_1(code).unwrap_or_else(|| code.trim().to_ascii_lowercase())
}

use crate::calibre::read::ReadOnlyDb;
use crate::metadata::Metadata;
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

/// Every format of every book in the calibre library at `root`, ordered by book id then by
/// calibre's order of formats. Waits up to [`DEFAULT_BUSY_TIMEOUT`] for a calibre write to end.
pub fn read_library(root: &Path) -> Result<Vec<CalibreFormat>, CalibreError> {
    read_library_with_timeout(root, DEFAULT_BUSY_TIMEOUT)
}

/// [`read_library`] with the time to wait for a writer's lock given.
pub fn read_library_with_timeout(
    root: &Path,
    busy_timeout: Duration,
) -> Result<Vec<CalibreFormat>, CalibreError> {
    let db = ReadOnlyDb::of_library(root, busy_timeout)?;
    let mut conn = db.open()?;
    // One deferred read transaction: a SHARED lock from the first SELECT to the end, never a
    // write lock. Dropping it (on error) rolls back, which for a reader only releases the lock.
    let tx = conn
        .transaction()
        .map_err(|e| db.error("beginning a read transaction", e))?;
    db.check_schema(&tx)?;
    let formats = books::read_formats(&db, &tx)?;
    tx.commit()
        .map_err(|e| db.error("ending the read transaction", e))?;
    Ok(formats)
}
