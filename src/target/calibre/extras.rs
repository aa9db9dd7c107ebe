//! What a calibre source carries into the target beyond the books' own rows and formats:
//! custom columns (`custom_columns`), annotations (highlights and bookmarks, calibre 5+), each
//! book's `data/` folder (calibre's per-book extra files), and — only into a library this run
//! created — the library's settings (`preferences`: saved searches, virtual libraries, column
//! layout …; not `library_id`, which names the new library).
//!
//! At open ([`from_calibre_source`]) the source's `metadata.db` is opened read-only and kept: a
//! new book's annotations are read from it when its rows are written, in the commit's
//! transaction ([`FromSource::write_book`]), with the book id remapped; calibre's triggers keep
//! `annotations_fts` in step. A book's `data/` folder is copied by the transfer that makes its
//! folder ([`copy_data_dir`]), before the book is recorded, so the commit's `syncfs` makes it
//! durable with the formats, and a crash leaves it in a folder `recovery` removes whole.

use super::custom_columns::{self, Columns};
use super::library::CalibreLibrary;
use super::CalibreError;
use crate::calibre::read::{ReadOnlyDb, DEFAULT_BUSY_TIMEOUT};
use crate::metadata::{CustomValue, Metadata};
use rusqlite::types::Value;
use rusqlite::{Connection, Transaction};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Preferences calibre does not copy into a new library made with another's settings
/// (`db/backend.py` `initialize_prefs`).
const PREFERENCES_NOT_COPIED: &[&str] = &["news_to_be_synced"];

/// The calibre folder of a book's extra files.
pub const DATA_DIR: &str = "data";

/// What a book brings from a calibre source besides its usual fields.
#[derive(Debug, Clone, Default)]
pub(super) struct Carried {
    /// The source book's id (its `calibre:ID`), for its annotations.
    source_book: Option<i64>,
    custom_columns: BTreeMap<String, CustomValue>,
}

impl Carried {
    pub(super) fn of(md: &Metadata) -> Carried {
        Carried {
            source_book: md
                .source
                .as_deref()
                .and_then(|s| s.strip_prefix("calibre:"))
                .and_then(|id| id.parse().ok()),
            custom_columns: md.custom_columns.clone(),
        }
    }
}

/// The source library as the rows of new books need it (empty unless the source is calibre).
#[derive(Default)]
pub(super) struct FromSource {
    columns: Columns,
    /// The source's `metadata.db`, read-only.
    source: Option<(Connection, PathBuf)>,
}

impl std::fmt::Debug for FromSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromSource")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl FromSource {
    /// Book `book`'s custom column values and its source book's annotations, in `tx`.
    pub(super) fn write_book(
        &self,
        tx: &Transaction<'_>,
        book: i64,
        carried: &Carried,
    ) -> rusqlite::Result<()> {
        self.columns.write_book(tx, book, &carried.custom_columns)?;
        if let (Some((src, _)), Some(source_book)) = (&self.source, carried.source_book) {
            copy_annotations(src, tx, source_book, book)?;
        }
        Ok(())
    }
}

/// The annotations of source book `from` as annotations of book `to` (calibre's columns as
/// `save_annotations_for_book` writes them; its triggers fill `annotations_fts`).
fn copy_annotations(
    src: &Connection,
    tx: &Transaction<'_>,
    from: i64,
    to: i64,
) -> rusqlite::Result<()> {
    let mut read = src.prepare_cached(
        "SELECT format, user_type, user, timestamp, annot_id, annot_type, annot_data,
                searchable_text FROM annotations WHERE book = ?1 ORDER BY id",
    )?;
    let mut rows = read.query([from])?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO annotations (book, format, user_type, user, timestamp, annot_id,
         annot_type, annot_data, searchable_text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    while let Some(r) = rows.next()? {
        insert.execute(rusqlite::params![
            to,
            r.get::<_, Value>(0)?,
            r.get::<_, Value>(1)?,
            r.get::<_, Value>(2)?,
            r.get::<_, Value>(3)?,
            r.get::<_, Value>(4)?,
            r.get::<_, Value>(5)?,
            r.get::<_, Value>(6)?,
            r.get::<_, Value>(7)?
        ])?;
    }
    Ok(())
}

/// Open the calibre library at `source_root` read-only for what its books carry: its custom
/// columns matched to (or created in) `lib`, and — when `lib` was created by this open — its
/// preferences copied in.
pub(super) fn from_calibre_source(
    lib: &CalibreLibrary,
    source_root: &Path,
) -> Result<(), CalibreError> {
    let ro = ReadOnlyDb::of_library(source_root, DEFAULT_BUSY_TIMEOUT)?;
    let src = ro.open()?;
    let src_path = ro.path().to_path_buf();
    let columns = custom_columns::prepare(lib, &src, &src_path)?;
    if lib.was_created() {
        copy_preferences(lib, &src, &src_path)?;
    }
    lib.db().extras = FromSource {
        columns,
        source: Some((src, src_path)),
    };
    Ok(())
}

/// Every `preferences` row of the source into a library just created (its fresh defaults
/// replaced by the user's settings), but for the ones calibre's own "new library with the same
/// settings" leaves out ([`PREFERENCES_NOT_COPIED`]).
fn copy_preferences(
    lib: &CalibreLibrary,
    src: &Connection,
    src_path: &Path,
) -> Result<(), CalibreError> {
    let rows: Vec<(String, String)> = src
        .prepare("SELECT key, val FROM preferences ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(|source| CalibreError::Db {
            path: src_path.to_path_buf(),
            what: "reading the source's preferences",
            source,
        })?;
    let mut db = lib.db();
    let db_error = |source| CalibreError::Db {
        path: lib.root().join(crate::calibre::METADATA_DB),
        what: "copying the preferences",
        source,
    };
    let tx = db.conn.transaction().map_err(db_error)?;
    for (key, val) in rows
        .iter()
        .filter(|(k, _)| !PREFERENCES_NOT_COPIED.contains(&k.as_str()))
    {
        tx.execute(
            "INSERT INTO preferences (key, val) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET val = excluded.val",
            [key, val],
        )
        .map_err(db_error)?;
    }
    tx.commit().map_err(db_error)
}

/// Copy the `data/` folder beside a calibre source book's format file `source_file` into the
/// book folder `book_dir` (nothing when the source book has none). Not synced: the commit's
/// `syncfs` makes it durable before the book is recorded.
pub fn copy_data_dir(source_file: &Path, book_dir: &Path) -> io::Result<()> {
    let Some(src) = source_file.parent().map(|d| d.join(DATA_DIR)) else {
        return Ok(());
    };
    match fs::symlink_metadata(&src) {
        Ok(m) if m.is_dir() => copy_tree(&src, &book_dir.join(DATA_DIR)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy a folder's files and folders (symlinks are not followed, nor copied).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
