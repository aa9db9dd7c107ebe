//! The calibre target: filling a calibre library directly, so that calibre cannot tell the
//! books from ones it added itself. A new library gets calibre 6.13's exact schema and fresh
//! rows; an existing one is added to. Per book: calibre's rows (books, authors, series, tags,
//! publishers, languages, identifiers, comments, ratings, data and their links, reusing existing
//! items), the files at calibre's path (`Author/Title (id)/Title - Author.ext`), `metadata.opf`
//! and `cover.jpg`. calibre's triggers run unchanged on our connection, which registers
//! calibre's SQL functions; calibre's writer lock is held while the library is open.
//!
//! [`CalibreLibrary`] (`writer.rs`) is the library API: the plan → write files → commit protocol
//! and what a crash leaves. [`CalibreTarget`] (`target.rs`) is the pipeline's view: which book a
//! file goes to, and the commit run from the state writer's flush hook.

mod dates;
mod existing;
pub mod functions;
mod langs;
pub mod lock;
pub mod opf;
pub mod paths;
pub mod schema;
mod target;
mod writer;

#[cfg(test)]
mod tests;

pub use lock::{calibre_is_writing, running_calibre_programs, CalibreLock};
pub use target::{CalibreOptions, CalibreTarget};
pub use writer::{
    book_id_of, make_book_dir, stored_identity, write_opfs, AddedFormat, CalibreLibrary, Candidate,
    CommittedBook, PlannedBook, RowsWriter, METADATA_DB, PENDING_MARKER, TEMP_PREFIX,
};

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
