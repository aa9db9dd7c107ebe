//! Schema migrations by `PRAGMA user_version`, in the manner of cargo's `util/sqlite.rs`: a list
//! of migrations applied in order, each in its own transaction; an old one is never edited.

use super::{Result, StateError};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// Migration `i` brings the schema from version `i` to `i + 1`: `schema.sql` makes version 1,
/// each file of `migrations/` a later version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema.sql"),
    include_str!("migrations/2_verify.sql"),
    include_str!("migrations/3_planned_ref.sql"),
    include_str!("migrations/4_verify_content.sql"),
    include_str!("migrations/5_verify_calibre.sql"),
    include_str!("migrations/6_calibre_book_ids.sql"),
    include_str!("migrations/7_blake3_content.sql"),
    include_str!("migrations/8_read_indexes.sql"),
    include_str!("migrations/9_state_index.sql"),
    include_str!("migrations/10_verify_sidecars.sql"),
    include_str!("migrations/11_contents_placed.sql"),
    include_str!("migrations/12_contents_unplaced.sql"),
    include_str!("migrations/13_contents_prefix.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Refuse a DB from a newer bookferry.
pub fn check_version(conn: &Connection, path: &Path) -> Result<i64> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Bring the DB up to `SCHEMA_VERSION`.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let found = check_version(conn, path)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        if user_version(&tx)? > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
