//! Read-only questions for `status` and a run's start and end: counts and bytes per state,
//! failures by kind, the current or last run's rate, the work left. Works while a run is
//! writing (WAL readers never block the writer).

use super::{now_ms, FileState, Result};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct StateCounts {
    pub total: u64,
    /// In the order of `FileState::ALL`.
    pub by_state: Vec<(&'static str, (u64, u64))>,
    pub bytes_total: u64,
    pub bytes_done: u64,
}

pub fn state_counts(conn: &Connection) -> Result<StateCounts> {
    let mut c = StateCounts::default();
    let mut by_state: BTreeMap<FileState, (u64, u64)> = BTreeMap::new();
    let mut st =
        conn.prepare("SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM files GROUP BY state")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (state, n, bytes) = row?;
        let Some(s) = FileState::parse(&state) else {
            continue;
        };
        by_state.insert(s, (n as u64, bytes as u64));
        c.total += n as u64;
        c.bytes_total += bytes as u64;
        if matches!(s, FileState::Uploaded | FileState::Skipped) {
            c.bytes_done += bytes as u64;
        }
    }
    c.by_state = FileState::ALL
        .iter()
        .map(|s| (s.as_str(), by_state.get(s).copied().unwrap_or((0, 0))))
        .collect();
    Ok(c)
}

impl StateCounts {
    pub fn files_in(&self, state: FileState) -> u64 {
        self.by_state
            .iter()
            .find(|(k, _)| *k == state.as_str())
            .map_or(0, |(_, (n, _))| *n)
    }
}

pub fn failures_by_kind(conn: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut st = conn.prepare(
        "SELECT COALESCE(error_kind, 'unknown'), COUNT(*) FROM files WHERE state = 'failed' GROUP BY 1",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Skipped rows by `skip_reason` (`source_gone` among them: files that left the source).
pub fn skips_by_reason(conn: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut st = conn.prepare(
        "SELECT COALESCE(skip_reason, 'unknown'), COUNT(*) FROM files WHERE state = 'skipped' GROUP BY 1",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Files that met problems while being read (not fatal): `files.warnings` is not empty.
pub fn files_with_warnings(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM files WHERE COALESCE(warnings, '') <> ''",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// The newest `run`/`retry-failed` record, with its rate.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub id: i64,
    pub command: String,
    pub running: bool,
    pub pid: i64,
    pub host: String,
    pub seconds: f64,
    pub files_done: u64,
    pub files_per_sec: f64,
    pub bytes_sent: u64,
    pub outcome: Option<String>,
    pub exit_code: Option<i64>,
}

pub fn last_run(conn: &Connection) -> Result<Option<RunSummary>> {
    let now = now_ms();
    Ok(conn
        .query_row(
            "SELECT id, command, ended_at IS NULL AND heartbeat_at > ?1 - 15000, pid, host, started_at, COALESCE(ended_at, heartbeat_at),
                    files_uploaded + files_skipped + files_failed, bytes_sent, outcome, exit_code
             FROM runs WHERE command <> 'scan' ORDER BY id DESC LIMIT 1",
            [now],
            |r| {
                let running: bool = r.get(2)?;
                let started: i64 = r.get(5)?;
                let end: i64 = if running { now } else { r.get(6)? };
                let seconds = ((end - started).max(1)) as f64 / 1000.0;
                let files_done = r.get::<_, i64>(7)? as u64;
                Ok(RunSummary {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    running,
                    pid: r.get(3)?,
                    host: r.get(4)?,
                    seconds,
                    files_done,
                    files_per_sec: files_done as f64 / seconds,
                    bytes_sent: r.get::<_, i64>(8)? as u64,
                    outcome: r.get(9)?,
                    exit_code: r.get(10)?,
                })
            },
        )
        .optional()?)
}

/// Rows not yet final (the work a run has ahead) and their bytes.
pub fn active_totals(conn: &Connection) -> Result<(u64, u64)> {
    let (n, b): (i64, i64) = conn.query_row(
        &format!(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE state IN ({})",
            super::runs::active_list()
        ),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((n as u64, b as u64))
}

/// Rows `failed`.
pub fn failed_count(conn: &Connection) -> Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM files WHERE state = 'failed'",
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// The highest row id (ids only grow: rows are never deleted).
pub fn last_file_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM files", [], |r| r.get(0))?)
}
