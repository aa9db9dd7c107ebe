//! The calibre target: filling a calibre library directly, so that calibre cannot tell the
//! books from ones it added itself. A new library gets calibre 6.13's exact schema and fresh
//! rows; an existing one is added to. Per book: calibre's rows (books, authors, series, tags,
//! publishers, languages, identifiers, comments, ratings, data and their links, reusing existing
//! items), the files at calibre's path (`Author/Title (id)/Title - Author.ext`), `metadata.opf`
//! and `cover.jpg`. calibre's triggers run unchanged on our connection, which registers
//! calibre's SQL functions; calibre's writer lock and bookferry's own lock on the library
//! (`run_lock`) are held while the library is open.
//!
//! What a calibre library is — its files, schema, SQL functions, names and dates — is
//! `crate::calibre`'s; this module is how bookferry writes one. [`CalibreLibrary`] is the
//! library API (`library`: opening it, its books; `writer`: the plan → write files → commit
//! protocol, its rows in `rows`; `recovery`: what a crash leaves). [`CalibreTarget`] (`target`,
//! with `books`, `identity` and `cover`) is the pipeline's view: which book a file goes to, and
//! the commit run from the state writer's flush hook. From a calibre source, `extras` (with
//! `custom_columns`) brings what a book carries beyond its rows: custom column values,
//! annotations, its `data/` folder, and a new library's preferences. `verify` reads a library
//! for `bookferry verify`, read-only.

mod books;
mod cover;
mod custom_columns;
mod database;
mod existing;
mod extras;
mod fields;
mod id_ranges;
mod identity;
mod items;
mod keys;
mod library;
pub mod lock;
mod recovery;
mod rows;
mod run_lock;
mod target;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use fields::{stored_identity, AddedFormat, Candidate, CommittedBook, PlannedBook};
// The calibre-server target maps metadata to calibre's fields as this target does.
pub(crate) use fields::Fields as BookFields;
pub use library::{BookIds, CalibreLibrary};
pub use lock::{calibre_is_writing, running_calibre_programs, CalibreLock};
pub use recovery::{make_book_dir, PENDING_MARKER};
pub use rows::RowsWriter;
pub use run_lock::RunLock;
pub use target::{CalibreOptions, CalibreTarget};
pub use writer::write_opfs;
// The folder target's sidecars and the calibre-server target make the same cover.
pub(crate) use cover::{cover_of, NoCover};

use crate::calibre::METADATA_DB;
use database::MIN_USER_VERSION;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// Why writing into a calibre library failed; each names the file or folder and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CalibreError {
    #[error(
        "{}: {} holds calibre's writer lock, so calibre may be writing a library right now; \
         close it (or add books through the calibre-server it runs) and run again, or pass \
         --ignore-calibre-lock if it surely does not write to this library",
        .path.display(),
        if .programs.is_empty() { "a calibre program (calibre, calibre-server or calibredb)".to_string() } else { .programs.join(", ") }
    )]
    CalibreRunning {
        path: PathBuf,
        programs: Vec<String>,
    },

    /// Another process (another bookferry run) holds bookferry's lock on this library
    /// (`run_lock`); `holder` is its pid when the kernel's lock table names it.
    #[error(
        "{}: another bookferry run{} is writing into this calibre library; wait for it to end \
         (two runs into one library would remove each other's unfinished books, whatever \
         flags are given)",
        .path.display(),
        .holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    LibraryInUse { path: PathBuf, holder: Option<u32> },

    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {what}: {source}", .path.display())]
    Db {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{}: not a calibre library bookferry can write into: {cause}", .path.display())]
    NotCalibre {
        path: PathBuf,
        #[source]
        cause: Unwritable,
    },

    /// A format calibre cannot store (`data.format` is a file extension).
    #[error("{}: format {format:?} is not a file extension calibre can store", .path.display())]
    NotAFormat { path: PathBuf, format: String },

    /// A second file of one format for a planned book (`path` is the file).
    #[error("{}: book {book_id} already has a {format} file", .path.display())]
    FormatTwice {
        path: PathBuf,
        book_id: i64,
        format: String,
    },

    /// A commit of a book that is not planned (`path` is its folder).
    #[error(
        "{}: book {book_id} is not planned in this library (committed already?)",
        .path.display()
    )]
    NotPlanned { path: PathBuf, book_id: i64 },

    /// A book the library held when it was opened has no row any more.
    #[error("{}: book #{book_id} vanished from the library", .path.display())]
    BookGone { path: PathBuf, book_id: i64 },

    /// A recorded book's `books.path` leads out of the library (absolute, `..`, empty part).
    #[error(
        "{}: book #{book_id}'s path {rel_dir:?} does not stay inside the library",
        .path.display()
    )]
    PathOutside {
        path: PathBuf,
        book_id: i64,
        rel_dir: String,
    },

    /// A recorded book's folder, or a folder on its way, is a symlink or a file.
    #[error(
        "{}: book #{book_id}'s folder is a symlink or a file; bookferry does not write through \
         links",
        .path.display()
    )]
    FolderIsLink { path: PathBuf, book_id: i64 },

    /// An author folder to make a book's folder in is a file or a symlink.
    #[error("{}: exists and is not a folder (or is a symlink)", .path.display())]
    AuthorNotAFolder { path: PathBuf },

    /// A new book's folder is there already: someone else's, never written into.
    #[error(
        "{}: book {book_id}'s folder already exists and is not bookferry's to reuse",
        .path.display()
    )]
    FolderExists { path: PathBuf, book_id: i64 },

    /// The calibre source could not be read (its custom columns, preferences, annotations).
    #[error("the calibre source: {0}")]
    Source(#[from] crate::calibre::ReadError),

    /// Another file of a new book failed to make its folder (`path` is this file); `source`
    /// is that file's error, shared by every file of the book.
    #[error("{}: the book's folder could not be made: {source}", .path.display())]
    FolderNotMade {
        path: PathBuf,
        #[source]
        source: Arc<CalibreError>,
    },
}

/// Why a folder or database is not a calibre library bookferry can write into
/// ([`CalibreError::NotCalibre`]).
#[derive(Debug, thiserror::Error)]
pub enum Unwritable {
    /// A folder with files but no `metadata.db` (`first` is one of them): not made a library.
    #[error(
        "the folder holds files ({first:?}, …) but no {METADATA_DB}; give an empty or new \
         folder to create a library"
    )]
    FolderHoldsFiles { first: OsString },

    #[error("cannot read user_version: {0}")]
    UserVersion(#[source] rusqlite::Error),

    #[error("cannot list tables: {0}")]
    ListingTables(#[source] rusqlite::Error),

    /// Tables calibre has and the writer needs that are not there.
    #[error("missing tables: {}", .0.join(", "))]
    MissingTables(Vec<&'static str>),

    /// A schema older than `MIN_USER_VERSION` (21): calibre upgrades it when it opens it.
    #[error(
        "schema version {0} is older than calibre 6 writes ({MIN_USER_VERSION}+); open the \
         library in calibre once to upgrade it"
    )]
    OldSchema(i64),

    /// calibre's SQL functions, which its triggers call, do not run on the connection.
    #[error("SQL functions: {0}")]
    SqlFunctions(#[source] rusqlite::Error),
}
