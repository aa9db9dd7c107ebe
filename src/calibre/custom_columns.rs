//! calibre's custom columns, for both sides: a column's definition (a `custom_columns` row),
//! whether two libraries' columns of one label are the same column, the tables, indexes,
//! triggers and views calibre 6.13 makes for a new one (`db/backend.py`
//! `create_custom_column`, reproduced statement for statement), and each book's values read from
//! and written to those tables.
//!
//! How calibre stores a column numbered N: a normalized column (`text`, `series`, `enumeration`,
//! `rating`) keeps its distinct values in `custom_column_N` and links books to them in
//! `books_custom_column_N_link` (a series' index in the link's `extra`); any other (`comments`,
//! `int`, `float`, `bool`, `datetime`, `composite`) keeps one `(book, value)` row per book in
//! `custom_column_N` (a composite's stays empty: calibre computes it from its template).

use crate::metadata::CustomValue;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Transaction};
use std::collections::{BTreeMap, HashMap};

/// One `custom_columns` row.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    /// `id`: the N of its tables (differs between libraries).
    pub num: i64,
    pub label: String,
    pub name: String,
    pub datatype: String,
    pub is_multiple: bool,
    pub editable: bool,
    /// The `display` JSON as stored.
    pub display: String,
    pub normalized: bool,
}

/// Why a target's column of a label is not the source's column of that label: its values are
/// not written (`theirs`: the source's column; `ours`: the target's).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Difference {
    #[error("its type is {ours}, the source's is {theirs}")]
    Datatype { theirs: String, ours: String },
    #[error("it {} several values, the source's {}",
        if *.ours { "holds" } else { "does not hold" },
        if *.theirs { "does" } else { "does not" })]
    IsMultiple { theirs: bool, ours: bool },
    #[error("its enumeration values are {ours}, the source's are {theirs}")]
    EnumValues { theirs: String, ours: String },
    #[error("its template is {ours:?}, the source's is {theirs:?}")]
    Template { theirs: String, ours: String },
}

/// The datatypes calibre 6 knows (`CUSTOM_DATA_TYPES`).
const DATATYPES: &[&str] = &[
    "rating",
    "text",
    "comments",
    "datetime",
    "int",
    "float",
    "bool",
    "series",
    "composite",
    "enumeration",
];

impl ColumnDef {
    /// `custom_column_N` and `books_custom_column_N_link`.
    pub fn tables(&self) -> (String, String) {
        tables_of(self.num)
    }

    /// Why `target` (a column of the same label in another library) is not this column, if it
    /// is not: another datatype, `is_multiple`, enumeration values or composite template.
    pub fn difference(&self, target: &ColumnDef) -> Option<Difference> {
        if self.datatype != target.datatype {
            return Some(Difference::Datatype {
                theirs: self.datatype.clone(),
                ours: target.datatype.clone(),
            });
        }
        if self.is_multiple != target.is_multiple {
            return Some(Difference::IsMultiple {
                theirs: self.is_multiple,
                ours: target.is_multiple,
            });
        }
        let key = match self.datatype.as_str() {
            "enumeration" => "enum_values",
            "composite" => "composite_template",
            _ => return None,
        };
        let (s, t) = (
            display_key(&self.display, key),
            display_key(&target.display, key),
        );
        if s == t {
            return None;
        }
        let (source, target) = (s.to_string(), t.to_string());
        Some(if key == "enum_values" {
            Difference::EnumValues {
                theirs: source,
                ours: target,
            }
        } else {
            Difference::Template {
                theirs: s.as_str().unwrap_or_default().to_string(),
                ours: t.as_str().unwrap_or_default().to_string(),
            }
        })
    }

    /// The SQL calibre runs to make this column's tables, indexes, triggers and views, for
    /// a column numbered `num` (`create_custom_column`, after its `INSERT`).
    pub fn create_script(&self, num: i64) -> String {
        let dt = match self.datatype.as_str() {
            "rating" | "int" => "INT",
            "float" => "REAL",
            "datetime" => "timestamp",
            "bool" => "BOOL",
            _ => "TEXT",
        };
        let collate = if dt == "TEXT" { "COLLATE NOCASE" } else { "" };
        let (table, lt) = tables_of(num);
        let lines: Vec<String> = if self.normalized {
            let s_index = if self.datatype == "series" {
                "extra REAL,"
            } else {
                ""
            };
            vec![
                format!(
                    "                CREATE TABLE {table}(
                    id    INTEGER PRIMARY KEY AUTOINCREMENT,
                    value {dt} NOT NULL {collate},
                    UNIQUE(value));
                "
                ),
                format!("CREATE INDEX {table}_idx ON {table} (value {collate});"),
                format!(
                    "                CREATE TABLE {lt}(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    book INTEGER NOT NULL,
                    value INTEGER NOT NULL,
                    {s_index}
                    UNIQUE(book, value)
                    );"
                ),
                format!("CREATE INDEX {lt}_aidx ON {lt} (value);"),
                format!("CREATE INDEX {lt}_bidx ON {lt} (book);"),
                format!(
                    "                CREATE TRIGGER fkc_update_{lt}_a
                        BEFORE UPDATE OF book ON {lt}
                        BEGIN
                            SELECT CASE
                                WHEN (SELECT id from books WHERE id=NEW.book) IS NULL
                                THEN RAISE(ABORT, 'Foreign key violation: book not in books')
                            END;
                        END;
                CREATE TRIGGER fkc_update_{lt}_b
                        BEFORE UPDATE OF author ON {lt}
                        BEGIN
                            SELECT CASE
                                WHEN (SELECT id from {table} WHERE id=NEW.value) IS NULL
                                THEN RAISE(ABORT, 'Foreign key violation: value not in {table}')
                            END;
                        END;
                CREATE TRIGGER fkc_insert_{lt}
                        BEFORE INSERT ON {lt}
                        BEGIN
                            SELECT CASE
                                WHEN (SELECT id from books WHERE id=NEW.book) IS NULL
                                THEN RAISE(ABORT, 'Foreign key violation: book not in books')
                                WHEN (SELECT id from {table} WHERE id=NEW.value) IS NULL
                                THEN RAISE(ABORT, 'Foreign key violation: value not in {table}')
                            END;
                        END;
                CREATE TRIGGER fkc_delete_{lt}
                        AFTER DELETE ON {table}
                        BEGIN
                            DELETE FROM {lt} WHERE value=OLD.id;
                        END;

                CREATE VIEW tag_browser_{table} AS SELECT
                    id,
                    value,
                    (SELECT COUNT(id) FROM {lt} WHERE value={table}.id) count,
                    (SELECT AVG(r.rating)
                     FROM {lt},
                          books_ratings_link as bl,
                          ratings as r
                     WHERE {lt}.value={table}.id and bl.book={lt}.book and
                           r.id = bl.rating and r.rating <> 0) avg_rating,
                    value AS sort
                FROM {table};

                CREATE VIEW tag_browser_filtered_{table} AS SELECT
                    id,
                    value,
                    (SELECT COUNT({lt}.id) FROM {lt} WHERE value={table}.id AND
                    books_list_filter(book)) count,
                    (SELECT AVG(r.rating)
                     FROM {lt},
                          books_ratings_link as bl,
                          ratings as r
                     WHERE {lt}.value={table}.id AND bl.book={lt}.book AND
                           r.id = bl.rating AND r.rating <> 0 AND
                           books_list_filter(bl.book)) avg_rating,
                    value AS sort
                FROM {table};

                "
                ),
            ]
        } else {
            vec![
                format!(
                    "                CREATE TABLE {table}(
                    id    INTEGER PRIMARY KEY AUTOINCREMENT,
                    book  INTEGER,
                    value {dt} NOT NULL {collate},
                    UNIQUE(book));
                "
                ),
                format!("CREATE INDEX {table}_idx ON {table} (book);"),
                format!(
                    "                CREATE TRIGGER fkc_insert_{table}
                        BEFORE INSERT ON {table}
                        BEGIN
                            SELECT CASE
                                WHEN (SELECT id from books WHERE id=NEW.book) IS NULL
                                THEN RAISE(ABORT, 'Foreign key violation: book not in books')
                            END;
                        END;
                CREATE TRIGGER fkc_update_{table}
                        BEFORE UPDATE OF book ON {table}
                        BEGIN
                            SELECT CASE
                                WHEN (SELECT id from books WHERE id=NEW.book) IS NULL
                                THEN RAISE(ABORT, 'Foreign key violation: book not in books')
                            END;
                        END;
                "
                ),
            ]
        };
        lines.join(" \n")
    }
}

fn tables_of(num: i64) -> (String, String) {
    (
        format!("custom_column_{num}"),
        format!("books_custom_column_{num}_link"),
    )
}

/// `display[key]` of a `display` JSON text (`null` when absent or unreadable).
fn display_key(display: &str, key: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(display)
        .ok()
        .and_then(|v| v.get(key).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Every column of the library that calibre would load: not marked for deletion, of a datatype
/// calibre knows, its tables present (calibre drops a column whose tables are gone).
pub fn definitions(conn: &Connection) -> rusqlite::Result<Vec<ColumnDef>> {
    let mut tables = std::collections::HashSet::new();
    {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND
             (name GLOB 'custom_column_*' OR name GLOB 'books_custom_column_*')",
        )?;
        for name in stmt.query_map([], |r| r.get::<_, String>(0))? {
            tables.insert(name?);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT id, label, name, datatype, is_multiple, editable, display, normalized
         FROM custom_columns WHERE NOT mark_for_delete ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ColumnDef {
            num: r.get(0)?,
            label: r.get(1)?,
            name: r.get(2)?,
            datatype: r.get(3)?,
            is_multiple: r.get(4)?,
            editable: r.get(5)?,
            display: r
                .get::<_, Option<String>>(6)?
                .unwrap_or_else(|| "{}".into()),
            normalized: r.get(7)?,
        })
    })?;
    let mut defs = Vec::new();
    for d in rows {
        let d = d?;
        let (table, lt) = d.tables();
        if DATATYPES.contains(&d.datatype.as_str())
            && tables.contains(&table)
            && (!d.normalized || tables.contains(&lt))
        {
            defs.push(d);
        }
    }
    Ok(defs)
}

/// Create column `def` (another library's) in the library of `tx`, as calibre's
/// `create_custom_column` does, under `def`'s own number when the library has no trace of that
/// number (no row, not even one marked for deletion, no table), else under the next free one;
/// returns its number. (calibre also sets the preference
/// `update_all_last_mod_dates_on_start`, which makes its next start give every book a new
/// `last_modified`; not done here: the books' dates are carried as the source has them.)
pub fn create(tx: &Transaction<'_>, def: &ColumnDef) -> rusqlite::Result<i64> {
    let (table, lt) = def.tables();
    let taken: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM custom_columns WHERE id = ?1)
             OR EXISTS (SELECT 1 FROM sqlite_master WHERE name IN (?2, ?3))",
        rusqlite::params![def.num, table, lt],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO custom_columns(id,label,name,datatype,is_multiple,editable,display,normalized)
         VALUES (?,?,?,?,?,?,?,?)",
        rusqlite::params![
            (!taken).then_some(def.num),
            def.label,
            def.name,
            def.datatype,
            def.is_multiple,
            def.editable,
            def.display,
            def.normalized
        ],
    )?;
    let num = tx.last_insert_rowid();
    tx.execute_batch(&def.create_script(num))?;
    Ok(num)
}

/// Every value of every column in `defs` of the books `ids.0..=ids.1`: book id → label → value.
/// A composite has none (calibre computes it); a NULL or an odd stored type is no value.
pub fn read_values(
    conn: &Connection,
    defs: &[ColumnDef],
    ids: (i64, i64),
) -> rusqlite::Result<HashMap<i64, BTreeMap<String, CustomValue>>> {
    let mut out: HashMap<i64, BTreeMap<String, CustomValue>> = HashMap::new();
    for d in defs {
        let (table, lt) = d.tables();
        let sql = match (d.datatype.as_str(), d.normalized) {
            ("composite", _) => continue,
            ("series", true) => format!(
                "SELECT l.book, v.value, l.extra FROM {lt} l JOIN {table} v ON v.id = l.value
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id"
            ),
            (_, true) => format!(
                "SELECT l.book, v.value, NULL FROM {lt} l JOIN {table} v ON v.id = l.value
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id"
            ),
            (_, false) => format!(
                "SELECT book, value, NULL FROM {table} WHERE book BETWEEN ?1 AND ?2
                 ORDER BY book, id"
            ),
        };
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(ids)?;
        while let Some(row) = rows.next()? {
            let book: i64 = row.get(0)?;
            let values = out.entry(book).or_default();
            let value = row.get_ref(1)?;
            let new = match d.datatype.as_str() {
                "text" if d.is_multiple => {
                    let Some(t) = text(value) else { continue };
                    match values.get_mut(&d.label) {
                        Some(CustomValue::Texts(list)) => {
                            list.push(t);
                            continue;
                        }
                        _ => CustomValue::Texts(vec![t]),
                    }
                }
                "text" | "comments" | "enumeration" | "datetime" => match text(value) {
                    Some(t) => CustomValue::Text(t),
                    None => continue,
                },
                "int" | "rating" => match value {
                    ValueRef::Integer(i) => CustomValue::Int(i),
                    ValueRef::Real(f) => CustomValue::Int(f.round() as i64),
                    _ => continue,
                },
                "float" => match value {
                    ValueRef::Integer(i) => CustomValue::Float(i as f64),
                    ValueRef::Real(f) => CustomValue::Float(f),
                    _ => continue,
                },
                "bool" => match value {
                    ValueRef::Integer(i) => CustomValue::Bool(i != 0),
                    _ => continue,
                },
                "series" => match text(value) {
                    Some(name) => CustomValue::Series {
                        name,
                        index: row.get::<_, Option<f64>>(2)?.unwrap_or(1.0),
                    },
                    None => continue,
                },
                _ => continue,
            };
            values.insert(d.label.clone(), new);
        }
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    }
}

/// Write `value` as book `book`'s value in column `def` of the library of `tx` (a new book: it
/// has no value there yet). A value of another shape than the column's is not written.
pub fn insert_value(
    tx: &Transaction<'_>,
    def: &ColumnDef,
    book: i64,
    value: &CustomValue,
) -> rusqlite::Result<()> {
    let (table, lt) = def.tables();
    let link = |item: &dyn rusqlite::ToSql, extra: Option<f64>| -> rusqlite::Result<()> {
        let found: Option<i64> = tx
            .prepare_cached(&format!("SELECT id FROM {table} WHERE value = ?1"))?
            .query_row([item], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached(&format!("INSERT INTO {table} (value) VALUES (?1)"))?
                    .execute([item])?;
                tx.last_insert_rowid()
            }
        };
        if def.datatype == "series" {
            tx.prepare_cached(&format!(
                "INSERT OR IGNORE INTO {lt} (book, value, extra) VALUES (?1, ?2, ?3)"
            ))?
            .execute(rusqlite::params![book, id, extra])?;
        } else {
            tx.prepare_cached(&format!(
                "INSERT OR IGNORE INTO {lt} (book, value) VALUES (?1, ?2)"
            ))?
            .execute(rusqlite::params![book, id])?;
        }
        Ok(())
    };
    let single = |v: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
        tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {table} (book, value) VALUES (?1, ?2)"
        ))?
        .execute(rusqlite::params![book, v])?;
        Ok(())
    };
    match (def.datatype.as_str(), def.is_multiple, value) {
        ("text", true, CustomValue::Texts(list)) => {
            for t in list {
                link(t, None)?;
            }
        }
        ("text" | "enumeration", false, CustomValue::Text(t)) => link(t, None)?,
        ("rating", _, CustomValue::Int(i)) => link(i, None)?,
        ("series", _, CustomValue::Series { name, index }) => link(name, Some(*index))?,
        ("comments" | "datetime", _, CustomValue::Text(t)) => single(t)?,
        ("int", _, CustomValue::Int(i)) => single(i)?,
        ("float", _, CustomValue::Float(f)) => single(f)?,
        ("bool", _, CustomValue::Bool(b)) => single(b)?,
        _ => {}
    }
    Ok(())
}
