//! The `runs` table: one record per invocation that changes rows, with its counters, plus the
//! recovery of runs that died (their in-flight rows are taken back by the next run).

use super::{now_ms, FileState, Result};
use rusqlite::{params, Connection, TransactionBehavior};

/// Counter increments applied to a run's record (in the writer's batch transaction).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunCounters {
    pub files_scanned: i64,
    pub files_hashed: i64,
    pub files_uploaded: i64,
    pub files_skipped: i64,
    pub files_failed: i64,
    pub bytes_read: i64,
    pub bytes_sent: i64,
}

impl RunCounters {
    pub fn is_zero(&self) -> bool {
        *self == RunCounters::default()
    }

    pub fn add(&mut self, o: &RunCounters) {
        self.files_scanned += o.files_scanned;
        self.files_hashed += o.files_hashed;
        self.files_uploaded += o.files_uploaded;
        self.files_skipped += o.files_skipped;
        self.files_failed += o.files_failed;
        self.bytes_read += o.bytes_read;
        self.bytes_sent += o.bytes_sent;
    }
}

/// Start a run record.
pub fn begin(conn: &Connection, command: &str, arguments: &[String]) -> Result<i64> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO runs (command, started_at, heartbeat_at, pid, host, version, arguments)
         VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6)",
        params![
            command,
            now,
            std::process::id(),
            super::lock::hostname(),
            env!("CARGO_PKG_VERSION"),
            serde_json::to_string(arguments).unwrap_or_default(),
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// What recovery took back from runs that died.
#[derive(Debug, Default)]
pub struct Recovered {
    pub dead_runs: Vec<i64>,
    pub rows_released: usize,
}

/// Called with the state lock held: every other unfinished run is dead. Mark them so and
/// release the rows they held in flight, so this run claims them again (their committed states,
/// hashes and metadata stay).
pub fn recover_dead(conn: &mut Connection, me: i64) -> Result<Recovered> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let dead_runs: Vec<i64> = {
        let mut st = tx.prepare("SELECT id FROM runs WHERE ended_at IS NULL AND id <> ?1")?;
        let ids = st
            .query_map([me], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        ids
    };
    tx.execute(
        "UPDATE runs SET outcome = 'died', ended_at = heartbeat_at
         WHERE ended_at IS NULL AND id <> ?1",
        [me],
    )?;
    let rows_released = tx.execute(
        &format!(
            "UPDATE files SET run_id = NULL WHERE run_id IS NOT NULL AND run_id <> ?1 AND state IN ({})",
            active_list()
        ),
        [me],
    )?;
    tx.commit()?;
    Ok(Recovered {
        dead_runs,
        rows_released,
    })
}

pub fn heartbeat(conn: &Connection, run: i64) -> Result<()> {
    conn.execute(
        "UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1",
        params![run, now_ms()],
    )?;
    Ok(())
}

pub fn add_counters(conn: &Connection, run: i64, c: &RunCounters) -> Result<()> {
    if c.is_zero() {
        return Ok(());
    }
    conn.execute(
        "UPDATE runs SET files_scanned = files_scanned + ?2, files_hashed = files_hashed + ?3,
            files_uploaded = files_uploaded + ?4, files_skipped = files_skipped + ?5,
            files_failed = files_failed + ?6, bytes_read = bytes_read + ?7,
            bytes_sent = bytes_sent + ?8, heartbeat_at = ?9
         WHERE id = ?1",
        params![
            run,
            c.files_scanned,
            c.files_hashed,
            c.files_uploaded,
            c.files_skipped,
            c.files_failed,
            c.bytes_read,
            c.bytes_sent,
            now_ms()
        ],
    )?;
    Ok(())
}

/// Close a run: record how it ended and release the rows it still holds.
pub fn end(conn: &mut Connection, run: i64, exit_code: i32, outcome: &str) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        &format!(
            "UPDATE files SET run_id = NULL WHERE run_id = ?1 AND state IN ({})",
            active_list()
        ),
        [run],
    )?;
    let now = now_ms();
    tx.execute(
        "UPDATE runs SET ended_at = ?2, heartbeat_at = ?2, exit_code = ?3, outcome = ?4 WHERE id = ?1",
        params![run, now, exit_code, outcome],
    )?;
    tx.commit()?;
    Ok(())
}

/// `'pending', 'checked', 'hashed', 'metadata_cached'` for SQL `IN (…)`.
pub fn active_list() -> String {
    FileState::ACTIVE
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
