//! Claiming rows for a run: an IMMEDIATE transaction that stamps a batch of active rows with the
//! run's id and returns them. Only rows no live run holds are taken (one process per DB, so any
//! other run id belongs to a dead run).

use super::rows::FileRow;
use super::runs::active_list;
use super::{now_ms, Result};
use rusqlite::{params, Connection, TransactionBehavior};

/// Claim up to `limit` active rows with `id > after`, in id order.
pub fn claim_batch(
    conn: &mut Connection,
    run: i64,
    after: i64,
    limit: usize,
) -> Result<Vec<FileRow>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut rows = {
        let mut st = tx.prepare_cached(&format!(
            "UPDATE files SET run_id = ?1, updated_at = ?4
             WHERE id IN (SELECT id FROM files
                          WHERE state IN ({active}) AND id > ?2 AND (run_id IS NULL OR run_id <> ?1)
                          ORDER BY id LIMIT ?3)
             RETURNING {cols}",
            active = active_list(),
            cols = FileRow::COLUMNS
        ))?;
        let rows = st
            .query_map(
                params![run, after, limit as i64, now_ms()],
                FileRow::from_sql,
            )?
            .collect::<rusqlite::Result<Vec<FileRow>>>()?;
        rows
    };
    tx.commit()?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}
