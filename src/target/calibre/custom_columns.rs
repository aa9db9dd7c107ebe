//! A calibre source's custom columns in the target library: at open, each source column is
//! matched to the target's column of its label, or created in the target as calibre creates it
//! when the target has none; a target column of that label that is another column (another
//! type, `is_multiple`, enumeration values or template:
//! [`Difference`](crate::calibre::custom_columns::Difference)) gets none of the
//! source's values, and the run says so once, as a warning. Each new book's values (carried in
//! its [`Metadata::custom_columns`](crate::metadata::Metadata)) are written with its rows, in
//! the commit's transaction ([`Columns::write_book`]).

use super::library::CalibreLibrary;
use super::CalibreError;
use crate::calibre::custom_columns::{self, ColumnDef};
use crate::calibre::METADATA_DB;
use crate::metadata::CustomValue;
use rusqlite::{Connection, Transaction};
use std::collections::{BTreeMap, HashMap};

/// The target's columns that take a source column's values, by label.
#[derive(Debug, Default)]
pub(super) struct Columns {
    by_label: HashMap<String, ColumnDef>,
}

impl Columns {
    /// Book `book`'s values, each into the target column of its label (a label without one —
    /// a differing column — is left out).
    pub(super) fn write_book(
        &self,
        tx: &Transaction<'_>,
        book: i64,
        values: &BTreeMap<String, CustomValue>,
    ) -> rusqlite::Result<()> {
        for (label, value) in values {
            if let Some(def) = self.by_label.get(label) {
                custom_columns::insert_value(tx, def, book, value)?;
            }
        }
        Ok(())
    }
}

/// Match the source library's columns (`source`, read-only) to the target's (`lib`), creating
/// the missing ones in one transaction: the matches, for the books' rows. Warns once per
/// differing column.
pub(super) fn prepare(
    lib: &CalibreLibrary,
    source: &Connection,
    source_path: &std::path::Path,
) -> Result<Columns, CalibreError> {
    let theirs = custom_columns::definitions(source).map_err(|source| CalibreError::Db {
        path: source_path.to_path_buf(),
        what: "reading the source's custom columns",
        source,
    })?;
    let mut db = lib.db();
    let what = "creating custom columns";
    let db_path = lib.root().join(METADATA_DB);
    let db_error = |source| CalibreError::Db {
        path: db_path.clone(),
        what,
        source,
    };
    let ours = custom_columns::definitions(&db.conn).map_err(db_error)?;
    let mut columns = Columns::default();
    let tx = db.conn.transaction().map_err(db_error)?;
    for def in &theirs {
        match ours.iter().find(|o| o.label == def.label) {
            Some(o) => match def.difference(o) {
                None => {
                    columns.by_label.insert(def.label.clone(), o.clone());
                }
                Some(d) => {
                    tracing::warn!(
                        "{}: custom column #{} is not the source's column of that label ({d}): \
                         its values are not written",
                        lib.root().display(),
                        def.label
                    );
                }
            },
            None => {
                let num = custom_columns::create(&tx, def).map_err(db_error)?;
                columns
                    .by_label
                    .insert(def.label.clone(), ColumnDef { num, ..def.clone() });
            }
        }
    }
    tx.commit().map_err(db_error)?;
    Ok(columns)
}
