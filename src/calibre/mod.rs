//! What a calibre library is, as both sides of bookferry need it: the calibre source reads one
//! (`source::calibre`) and the calibre target fills one (`target::calibre`); this module is the
//! one place that knows calibre's format, and imports neither side.
//!
//! - the files: `metadata.db` makes a folder a library; each book has a folder with its format
//!   files, `metadata.opf` and `cover.jpg` (`paths`: calibre's names, ASCII-fied by `translit`);
//! - the database: calibre 6.13's schema (`schema`), the SQL functions its triggers and views
//!   call (`sql_functions`, on `text`'s title sort, author sort and fuzzy title), its dates
//!   (`dates`) and uuids (`uuids`), read strictly read-only by `read`;
//! - `metadata.opf`, calibre's per-book metadata backup (`opf`);
//! - custom columns: their definitions, tables and values (`custom_columns`).

pub mod custom_columns;
pub mod dates;
pub mod opf;
pub mod paths;
pub mod read;
pub mod schema;
pub mod sql_functions;
pub mod text;
pub mod translit;
mod translit_table;
pub mod uuids;

pub use read::{book_uuids, max_book_id, ReadError};
pub use uuids::{looks_like_uuid, uuid4};

use std::path::Path;

/// The database file that makes a folder a calibre library.
pub const METADATA_DB: &str = "metadata.db";

/// The metadata backup calibre keeps in each book's folder.
pub const OPF_FILE: &str = "metadata.opf";

/// A book's cover in its folder (calibre always stores a JPEG).
pub const COVER_FILE: &str = "cover.jpg";

/// True when `root` holds a `metadata.db` file. A corrupt one still counts: reading it then
/// reports [`ReadError::Corrupt`] instead of silently taking the folder for plain files.
pub fn is_calibre_library(root: &Path) -> bool {
    root.join(METADATA_DB).is_file()
}
