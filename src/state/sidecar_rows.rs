//! The rows whose sidecars (`target::sidecar_state`) are looked at outside the transfer: those
//! a dead run claimed a placement for and left (the next run mends an adopted book's sidecars
//! and removes those of a book never placed), and the placed books `verify` looks at.

use super::rows::FileRow;
use super::Result;
use rusqlite::{params, Connection};

/// Every row a dead run claimed a folder placement for and did not record as finished (call
/// before this run claims any row), with its planned ref: those still to migrate (held by no
/// run: `state::placement::left_by_dead_runs`) and those settled since without the writer's
/// final move, which clears a claim (`skipped` by this run's filter, which holds them).
pub fn left_claims(conn: &Connection) -> Result<Vec<(FileRow, String)>> {
    let mut st = conn.prepare(&format!(
        "SELECT {}, planned_ref FROM files
         WHERE planned_ref IS NOT NULL AND planned_ref NOT LIKE 'sha1:%'
           AND (run_id IS NULL OR state IN ('skipped', 'failed'))
         ORDER BY id",
        FileRow::COLUMNS
    ))?;
    let rows = st
        .query_map([], |r| Ok((FileRow::from_sql(r)?, r.get(14)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Clear the claims [`left_claims`] gave of rows no run will place (settled: `skipped`,
/// `failed`), once their sidecars were looked at. Returns how many.
pub fn clear_settled(conn: &Connection) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE files SET planned_ref = NULL
         WHERE planned_ref IS NOT NULL AND state IN ('skipped', 'failed')",
        [],
    )?)
}

/// The placed books (`uploaded` with a target reference) among `ids`, in id order: one query
/// (the ids as a JSON array, as `scan_store` passes its lists).
pub fn placed_of(conn: &Connection, ids: &[i64]) -> Result<Vec<FileRow>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {} FROM files
         WHERE id IN (SELECT value FROM json_each(?1))
           AND state = 'uploaded' AND target_ref IS NOT NULL
         ORDER BY id",
        FileRow::COLUMNS
    ))?;
    let ids = serde_json::to_string(ids).expect("a list of integers is JSON");
    let rows = st
        .query_map(params![ids], FileRow::from_sql)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
