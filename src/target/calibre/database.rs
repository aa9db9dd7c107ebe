//! The library's `metadata.db` as bookferry writes it: a new one made whole or not at all
//! (calibre's schema and a fresh library's rows under a temporary name, then moved into place),
//! an existing one checked to be a calibre library bookferry can write into, and the connection
//! set up as calibre sets up its own (its SQL functions and temporary triggers).

use super::{CalibreError, Unwritable};
use crate::calibre::schema::{
    missing_tables, FRESH_PREFERENCES, REQUIRED_TABLES, SCHEMA, USER_VERSION,
};
use crate::calibre::{sql_functions, uuid4};
use crate::target::staged::temp_name;
use rusqlite::Connection;
use std::fs::{self, File};
use std::path::Path;
use std::time::Duration;

/// The oldest schema we write into: the version where calibre's tables reached their current
/// shape for everything we touch (annotations came with 24/25; we never write them).
pub const MIN_USER_VERSION: i64 = 21;

/// Tables the writer needs beyond those every calibre library has
/// ([`REQUIRED_TABLES`]); a database without them is not a library we can fill.
pub const REQUIRED_WRITE_TABLES: &[&str] = &["library_id", "preferences"];

/// Create a new library's `metadata.db` under a temporary name and move it into place, so a
/// crash never leaves a half-made database.
pub(super) fn create_database(root: &Path, db_path: &Path) -> Result<(), CalibreError> {
    let tmp = root.join(temp_name("metadata.db"));
    let db_err = |what: &'static str| {
        let path = tmp.clone();
        move |source: rusqlite::Error| CalibreError::Db { path, what, source }
    };
    {
        let mut conn = Connection::open(&tmp).map_err(db_err("cannot create"))?;
        sql_functions::register(&conn).map_err(db_err("registering calibre's SQL functions"))?;
        create(&mut conn, &tmp, &uuid4())?;
        conn.close().map_err(|(_, e)| db_err("closing")(e))?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| CalibreError::Io {
            path: tmp.clone(),
            what: "cannot sync",
            source,
        })?;
    fs::rename(&tmp, db_path).map_err(|source| CalibreError::Io {
        path: db_path.to_path_buf(),
        what: "cannot move the new database into place",
        source,
    })?;
    File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(|source| CalibreError::Io {
            path: root.to_path_buf(),
            what: "cannot sync",
            source,
        })
}

/// Create calibre's schema and the rows of a fresh library in an empty database, in one
/// transaction. `library_uuid` becomes `library_id.uuid`.
fn create(conn: &mut Connection, db: &Path, library_uuid: &str) -> Result<(), CalibreError> {
    let err = |what: &'static str| {
        move |e: rusqlite::Error| CalibreError::Db {
            path: db.to_path_buf(),
            what,
            source: e,
        }
    };
    let tx = conn
        .transaction()
        .map_err(err("starting the schema transaction"))?;
    tx.execute_batch(SCHEMA)
        .map_err(err("creating calibre's schema"))?;
    tx.execute("INSERT INTO library_id (uuid) VALUES (?1)", [library_uuid])
        .map_err(err("writing library_id"))?;
    for (key, val) in FRESH_PREFERENCES {
        tx.execute(
            "INSERT INTO preferences (key, val) VALUES (?1, ?2)",
            [key, val],
        )
        .map_err(err("writing preferences"))?;
    }
    tx.pragma_update(None, "user_version", USER_VERSION)
        .map_err(err("setting user_version"))?;
    tx.commit().map_err(err("committing the new library"))
}

/// A connection to the library's database set up for writing as calibre writes: calibre's SQL
/// functions registered, the database checked ([`check`]) and calibre's temporary triggers
/// created.
pub(super) fn connect(db_path: &Path) -> Result<Connection, CalibreError> {
    let db_err = |what: &'static str| {
        let path = db_path.to_path_buf();
        move |source: rusqlite::Error| CalibreError::Db { path, what, source }
    };
    let conn = Connection::open(db_path).map_err(db_err("cannot open"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(db_err("setting the busy timeout"))?;
    sql_functions::register(&conn).map_err(db_err("registering calibre's SQL functions"))?;
    // Every statement of a book's insertion stays prepared (calibre's triggers make them
    // costly to parse).
    conn.set_prepared_statement_cache_capacity(64);
    check(&conn, db_path)?;
    // calibre's own temporary triggers (backend.py): author sort filled in on insert.
    conn.execute_batch(
        "DROP TRIGGER IF EXISTS temp.author_insert_trg;
         CREATE TEMP TRIGGER author_insert_trg AFTER INSERT ON authors
         BEGIN
             UPDATE authors SET sort=author_to_author_sort(NEW.name) WHERE id=NEW.id;
         END;",
    )
    .map_err(db_err("creating calibre's temporary triggers"))?;
    Ok(conn)
}

/// The id the next new book gets: past every id calibre ever gave (`AUTOINCREMENT`'s
/// `sqlite_sequence`) and every row there is.
pub(super) fn next_book_id(conn: &Connection, db_path: &Path) -> Result<i64, CalibreError> {
    conn.query_row(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'books'), 0),
                    COALESCE((SELECT MAX(id) FROM books), 0)) + 1",
        [],
        |r| r.get(0),
    )
    .map_err(|source| CalibreError::Db {
        path: db_path.to_path_buf(),
        what: "reading the next book id",
        source,
    })
}

/// Check that `conn` is a calibre library we can write into: the tables we use exist and the
/// schema version is one calibre 6 would open without upgrading what we touch. Returns the
/// library's `user_version`.
pub fn check(conn: &Connection, db: &Path) -> Result<i64, CalibreError> {
    let unwritable = |cause: Unwritable| CalibreError::NotCalibre {
        path: db.to_path_buf(),
        cause,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| unwritable(Unwritable::UserVersion(e)))?;
    let required = REQUIRED_TABLES.iter().chain(REQUIRED_WRITE_TABLES).copied();
    let missing =
        missing_tables(conn, required).map_err(|e| unwritable(Unwritable::ListingTables(e)))?;
    if !missing.is_empty() {
        return Err(unwritable(Unwritable::MissingTables(missing)));
    }
    if version < MIN_USER_VERSION {
        return Err(unwritable(Unwritable::OldSchema(version)));
    }
    // The triggers call calibre's SQL functions: make sure ours are there before any write.
    sql_functions::check_registered(conn).map_err(|e| unwritable(Unwritable::SqlFunctions(e)))?;
    Ok(version)
}
