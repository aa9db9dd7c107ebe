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

/// Files and bytes by state: read from the index `files_state` alone (schema version 9),
/// never from the rows (at 1,000,000 files, ~30 MB of index instead of ~900 MB of table).
const STATE_COUNTS: &str =
    "SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM files GROUP BY state";

/// Files with warnings: `warnings <> ''` is the condition of the partial index `files_warned`
/// (schema version 8), so the count reads those rows' index entries only (NULL and `''` are
/// "no warnings" either way).
const FILES_WITH_WARNINGS: &str = "SELECT COUNT(*) FROM files WHERE warnings <> ''";

pub fn state_counts(conn: &Connection) -> Result<StateCounts> {
    let mut c = StateCounts::default();
    let mut by_state: BTreeMap<FileState, (u64, u64)> = BTreeMap::new();
    let mut st = conn.prepare(STATE_COUNTS)?;
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
    Ok(conn.query_row(FILES_WITH_WARNINGS, [], |r| r.get::<_, i64>(0))? as u64)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::scan_store;

    /// A state DB of `n` scanned rows, every 500th with a warning; the temp dir must outlive
    /// the connection.
    fn rows(n: usize) -> (tempfile::TempDir, crate::state::Conn) {
        let (dir, conn) = scan_store::test_db_of(n);
        conn.execute(
            "UPDATE files SET warnings = 'odd bytes' WHERE id % 500 = 0",
            [],
        )
        .unwrap();
        (dir, conn)
    }

    /// The query plan of `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        steps.join("; ")
    }

    /// Pages in the WAL since the last checkpoint.
    fn wal_frames(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    /// A block of neighbouring rows that moves to its next state (what every commit of a run
    /// does) rewrites the pages holding those rows and hardly any other: the state index
    /// orders a state's rows by id, so the block's entries sit together. With the index by
    /// (state, size) of schema version 8, rows of random sizes had their entries all over the
    /// index, and each commit rewrote most of its pages (a 100,000-file run wrote 13.9× the
    /// state DB's final size; 10.1× with this index).
    #[test]
    fn rows_moving_state_together_rewrite_few_index_pages() {
        let (_dir, conn) = rows(20_000);
        conn.execute("UPDATE files SET size = (id * 7919) % 100003", [])
            .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        // The pages of 1,000 rows, rewritten without touching an index.
        conn.execute(
            "UPDATE files SET updated_at = updated_at + 1 WHERE id BETWEEN 5001 AND 6000",
            [],
        )
        .unwrap();
        let rows_alone = wal_frames(&conn);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        // 1,000 other rows moving on, as a commit of the writer moves them.
        conn.execute(
            "UPDATE files SET state = 'checked', updated_at = updated_at + 1
             WHERE id BETWEEN 10001 AND 11000",
            [],
        )
        .unwrap();
        let moved = wal_frames(&conn);
        assert!(rows_alone > 10, "{rows_alone} pages for 1,000 rows");
        // The block's entries fill ~4 index pages in each state (~14 with splits and parents);
        // with version 8's index by size they were on 121.
        assert!(
            moved <= rows_alone + 20,
            "moving 1,000 neighbouring rows wrote {moved} pages, their rows alone {rows_alone}"
        );
    }

    /// `status` (every 2 s from a watching script, while a run writes) reads no row of `files`
    /// for its counts: bytes by state come from a covering index, and the files with warnings
    /// from the partial index of those files. Before (schema version 7) both read all rows: at
    /// 1,000,000 files ~0.5 s each on an idle machine, up to 7.8 s for `status --json` under
    /// load.
    #[test]
    fn status_counts_read_indexes_not_rows() {
        let (_dir, conn) = rows(2000);
        let counts = plan(&conn, STATE_COUNTS);
        assert!(counts.contains("COVERING INDEX files_state"), "{counts}");
        let warned = plan(&conn, FILES_WITH_WARNINGS);
        assert!(warned.contains("INDEX files_warned"), "{warned}");

        // The partial index holds the 4 rows with warnings: the count steps over those.
        let mut st = conn.prepare(FILES_WITH_WARNINGS).unwrap();
        let n: i64 = st.query_row([], |r| r.get(0)).unwrap();
        assert_eq!(n, 4);
        assert_eq!(files_with_warnings(&conn).unwrap(), 4);
        let steps = st.get_status(rusqlite::StatementStatus::VmStep);
        assert!(steps < 100, "{steps} VM steps to count 4 rows among 2,000");
        let c = state_counts(&conn).unwrap();
        assert_eq!((c.total, c.bytes_total), (2000, 20_000));
        assert_eq!(c.files_in(FileState::Pending), 2000);
    }
}
