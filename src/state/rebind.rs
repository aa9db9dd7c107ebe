//! A state DB is bound to its target only once something was written there: until a file has
//! been placed or sent (an `events` row to `uploaded`), a run may name another target (a typo
//! corrected, a dry run's target changed). Then every outcome that came from the old target is
//! forgotten — rows `checked`, `hashed` or `metadata_cached` against it, rows `skipped` because
//! it had the file, rows `failed` by it — each back to `pending` with an `events` row; digests
//! and metadata stay in the rows.

use super::{now_ms, Result};
use rusqlite::{params, Connection, TransactionBehavior};

/// Whether anything was ever written to the target for this migration.
pub fn is_bound(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM events WHERE to_state = 'uploaded')",
        [],
        |r| r.get(0),
    )?)
}

/// The rows whose state came from the target: judged against it, skipped because it had the
/// file, failed by it (the source-side failures and the duplicates stay).
const FROM_TARGET: &str = "state IN ('checked', 'hashed', 'metadata_cached')
    OR (state = 'skipped' AND skip_reason IN
        ('target_has_name_size', 'target_has_content', 'target_has_book', 'book_has_format'))
    OR (state = 'failed' AND COALESCE(error_kind, '') NOT IN
        ('source_missing', 'unreadable', 'empty_file'))";

/// Forget the old target's outcomes (see the module doc), in run `run`: returns how many rows
/// went back to `pending`.
pub fn forget_target_outcomes(
    conn: &mut Connection,
    run: i64,
    old_target: &str,
    new_target: &str,
) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let detail = format!(
        "the target changed from {old_target} to {new_target} before anything was written: \
         its outcome is forgotten (digests and metadata kept)"
    );
    tx.execute(
        &format!(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             SELECT id, ?1, ?2, state, 'pending', ?3 FROM files WHERE {FROM_TARGET}"
        ),
        params![run, now, detail],
    )?;
    let n = tx.execute(
        &format!(
            "UPDATE files SET state = 'pending', skip_reason = NULL, target_ref = NULL,
                 planned_ref = NULL, error = NULL, error_kind = NULL, failed_from = NULL,
                 run_id = NULL, updated_at = ?1, state_changed_at = ?1
             WHERE {FROM_TARGET}"
        ),
        params![now],
    )?;
    tx.commit()?;
    Ok(n)
}
