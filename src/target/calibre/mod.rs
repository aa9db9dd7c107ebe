//! The calibre target: filling a calibre library directly, so that calibre cannot tell the
//! books from ones it added itself. A new library gets calibre 6.13's exact schema and fresh
//! rows; an existing one is added to. Per book: calibre's rows (books, authors, series, tags,
//! publishers, languages, identifiers, comments, ratings, data and their links, reusing existing
//! items), the files at calibre's path (`Author/Title (id)/Title - Author.ext`), `metadata.opf`
//! and `cover.jpg`. calibre's triggers run unchanged on our connection, which registers
//! calibre's SQL functions; calibre's writer lock is held while the library is open.
//!
//! Not wired into the pipeline yet: [`CalibreLibrary`] is the whole API (see `writer.rs` for the
//! plan → write files → commit protocol and what a crash leaves).

mod dates;
mod existing;
pub mod functions;
mod langs;
pub mod lock;
pub mod opf;
pub mod paths;
pub mod schema;
mod writer;

#[cfg(test)]
mod tests;

pub use lock::{calibre_is_writing, CalibreLock};
pub use writer::{CalibreLibrary, PlannedBook, METADATA_DB, PENDING_MARKER};

use std::path::PathBuf;

/// Why writing into a calibre library failed; each names the file or folder and the cause.
#[derive(Debug, thiserror::Error)]
pub enum CalibreError {
    #[error(
        "{}: a calibre program (calibre, calibre-server or calibredb) is running and holds \
         calibre's writer lock; close it and run again",
        .path.display()
    )]
    CalibreRunning { path: PathBuf },

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
