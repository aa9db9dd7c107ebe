//! `retry-failed`: failed rows go back to the state they failed from (attempt counts kept), each
//! move recorded as an event, so the next run takes them up again.

use super::runs::active_list;
use super::{now_ms, Result};
use rusqlite::{params_from_iter, Connection, TransactionBehavior};

/// Requeue failed rows (only the given kinds, if any). Returns how many.
pub fn requeue_failed(conn: &mut Connection, run: i64, kinds: &[String]) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let filter = if kinds.is_empty() {
        String::new()
    } else {
        format!(" AND error_kind IN ({})", vec!["?"; kinds.len()].join(", "))
    };
    let back_to = format!(
        "CASE WHEN failed_from IN ({}) THEN failed_from ELSE 'pending' END",
        active_list()
    );
    tx.execute(
        &format!(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             SELECT id, {run}, {now}, 'failed', {back_to}, 'retry-failed (was ' || COALESCE(error_kind, '?') || ')'
             FROM files WHERE state = 'failed'{filter}"
        ),
        params_from_iter(kinds.iter()),
    )?;
    let n = tx.execute(
        &format!(
            "UPDATE files SET state = {back_to}, failed_from = NULL, run_id = NULL,
                 updated_at = {now}, state_changed_at = {now}
             WHERE state = 'failed'{filter}"
        ),
        params_from_iter(kinds.iter()),
    )?;
    tx.commit()?;
    Ok(n)
}
