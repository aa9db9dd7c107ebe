//! `retry-failed`: failed rows go back to the state they failed from (attempt counts kept), each
//! move recorded as an event, so the next run takes them up again.

use super::runs::active_list;
use super::{now_ms, Result};
use rusqlite::{params_from_iter, Connection, TransactionBehavior};
use std::collections::HashSet;

/// The rows `requeue_failed` put back.
#[derive(Debug, Default)]
pub struct Requeued {
    pub count: usize,
    /// Those that failed at placement (from `metadata_cached`, where they go back): past every
    /// check, content included, in the run they failed in.
    pub at_placement: HashSet<i64>,
}

/// Requeue failed rows (only the given kinds, if any).
pub fn requeue_failed(conn: &mut Connection, run: i64, kinds: &[String]) -> Result<Requeued> {
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
    let at_placement = tx
        .prepare(&format!(
            "SELECT id FROM files WHERE state = 'failed' AND failed_from = 'metadata_cached'{filter}"
        ))?
        .query_map(params_from_iter(kinds.iter()), |r| r.get(0))?
        .collect::<rusqlite::Result<HashSet<i64>>>()?;
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
    Ok(Requeued {
        count: n,
        at_placement,
    })
}
