//! The calibre target: filling a calibre library directly, so that calibre cannot tell the
//! books from ones it added itself. A new library gets calibre 6.13's exact schema and fresh
//! rows; an existing one is added to. Per book: calibre's rows (books, authors, series, tags,
//! publishers, languages, identifiers, comments, ratings, data and their links, reusing existing
//! items), the files at calibre's path (`Author/Title (id)/Title - Author.ext`), `metadata.opf`
//! and `cover.jpg`. calibre's triggers run unchanged on our connection, which registers
//! calibre's SQL functions; calibre's writer lock is held while the library is open.
//!
//! What a calibre library is — its files, schema, SQL functions, names and dates — is
//! `crate::calibre`'s; this module is how bookferry writes one. [`CalibreLibrary`] is the
//! library API (`library`: opening it, its books; `writer`: the plan → write files → commit
//! protocol, its rows in `rows`; `recovery`: what a crash leaves). [`CalibreTarget`] (`target`,
//! with `books`, `identity` and `cover`) is the pipeline's view: which book a file goes to, and
//! the commit run from the state writer's flush hook.

mod books;
mod cover;
mod database;
mod existing;
mod fields;
mod identity;
mod library;
pub mod lock;
mod recovery;
mod rows;
mod target;
mod writer;

#[cfg(test)]
mod tests;

pub use fields::{stored_identity, AddedFormat, Candidate, CommittedBook, PlannedBook};
pub use library::CalibreLibrary;
pub use lock::{calibre_is_writing, running_calibre_programs, CalibreLock};
pub use recovery::{make_book_dir, PENDING_MARKER};
pub use rows::RowsWriter;
pub use target::{CalibreOptions, CalibreTarget};
pub use writer::write_opfs;

use std::path::PathBuf;

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
    NotCalibre { path: PathBuf, cause: String },

    #[error("{}: {cause}", .path.display())]
    Invalid { path: PathBuf, cause: String },
}
