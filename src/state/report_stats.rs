//! The aggregations behind `report --format html`: failures by kind and skips by reason with
//! the files behind each, duplicates grouped by the file they duplicate, files with warnings,
//! the runs, and throughput over time from the `events` rows. Each is one query over the
//! documented schema (no query per row), so a page of a 1M-row migration costs a few passes
//! over `files` and one over `events`. File lists are capped (`Capped`): the page says how many
//! there are and shows the first ones.

use super::Result;
use rusqlite::{params, Connection};
use serde::Serialize;

/// A list of files cut to at most `cap` rows, and how many there are in all.
#[derive(Debug, Clone, Serialize)]
pub struct Capped<T> {
    pub total: u64,
    pub rows: Vec<T>,
}

/// A failed or skipped file: `[id, kind or reason, source, target or error message]` (an array
/// in the page's JSON: no key repeated 200,000 times).
pub type ReasonRow = (i64, String, String, Option<String>);

/// A duplicate with the file it duplicates: `[kept id, kept source, kept target, id, source]`.
pub type DuplicateRow = (i64, String, Option<String>, i64, String);

/// A file with warnings: `[id, state, source, target, warnings (newline-separated)]`.
pub type WarningRow = (i64, String, String, Option<String>, String);

/// `failed` rows, `[id, error_kind, source, error]` (the error without the `PATH: ` it starts
/// with: the source is beside it), spread over the kinds: with more than `cap`, every kind
/// keeps its first rows (by id) in turn, so a small kind is never cut away by a large one.
pub fn failed_files(conn: &Connection, cap: usize) -> Result<Capped<ReasonRow>> {
    reason_rows(
        conn,
        "SELECT id, COALESCE(error_kind, 'unknown') AS reason, source_ref,
                CASE WHEN substr(error, 1, length(path) + 2) = path || ': '
                     THEN substr(error, length(path) + 3) ELSE error END AS detail
         FROM files WHERE state = 'failed'",
        cap,
    )
}

/// `skipped` rows, `[id, skip_reason, source, target_ref]`, spread over the reasons as
/// [`failed_files`].
pub fn skipped_files(conn: &Connection, cap: usize) -> Result<Capped<ReasonRow>> {
    reason_rows(
        conn,
        "SELECT id, COALESCE(skip_reason, 'unknown') AS reason, source_ref, target_ref AS detail
         FROM files WHERE state = 'skipped'",
        cap,
    )
}

/// `rows` (`id, reason, source_ref, detail`) ranked within their reason, the first `cap` of that
/// ranking, in id order; and how many rows there are in all.
fn reason_rows(conn: &Connection, rows: &str, cap: usize) -> Result<Capped<ReasonRow>> {
    let total: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM ({rows})"), [], |r| r.get(0))?;
    let sql = format!(
        "SELECT id, reason, source_ref, detail FROM (
           SELECT id, reason, source_ref, detail,
                  ROW_NUMBER() OVER (PARTITION BY reason ORDER BY id) AS rank
           FROM ({rows})
           ORDER BY rank, id LIMIT ?1)
         ORDER BY id"
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st
        .query_map(params![cap as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<Vec<ReasonRow>>>()?;
    Ok(Capped {
        total: total as u64,
        rows,
    })
}

/// Content duplicates grouped under the file they duplicate (in that file's id order), the
/// first `cap`; `groups` is how many files have duplicates.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicates {
    pub groups: u64,
    #[serde(flatten)]
    pub files: Capped<DuplicateRow>,
}

pub fn duplicates(conn: &Connection, cap: usize) -> Result<Duplicates> {
    let (total, groups): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT duplicate_of) FROM files
         WHERE state = 'skipped' AND skip_reason = 'duplicate'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut st = conn.prepare(
        "SELECT k.id, k.source_ref, k.target_ref, f.id, f.source_ref
         FROM files f JOIN files k ON k.id = f.duplicate_of
         WHERE f.state = 'skipped' AND f.skip_reason = 'duplicate'
         ORDER BY f.duplicate_of, f.id LIMIT ?1",
    )?;
    let rows = st
        .query_map(params![cap as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<Vec<DuplicateRow>>>()?;
    Ok(Duplicates {
        groups: groups as u64,
        files: Capped {
            total: total as u64,
            rows,
        },
    })
}

/// Files whose reading met problems (`files.warnings` not empty), in id order, the first `cap`.
pub fn warned_files(conn: &Connection, cap: usize) -> Result<Capped<WarningRow>> {
    let total: i64 = conn.query_row(
        "SELECT COUNT(*) FROM files WHERE COALESCE(warnings, '') <> ''",
        [],
        |r| r.get(0),
    )?;
    let mut st = conn.prepare(
        "SELECT id, state, source_ref, target_ref, warnings FROM files
         WHERE COALESCE(warnings, '') <> '' ORDER BY id LIMIT ?1",
    )?;
    let rows = st
        .query_map(params![cap as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<Vec<WarningRow>>>()?;
    Ok(Capped {
        total: total as u64,
        rows,
    })
}

/// One `runs` row: what was run (its arguments, secrets removed), how it ended, what it did.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub command: String,
    pub started_at: i64,
    /// NULL while running or when the process died: the last heartbeat then.
    pub ended_at: Option<i64>,
    pub heartbeat_at: i64,
    pub exit_code: Option<i64>,
    pub outcome: Option<String>,
    /// The command line, as the JSON array `runs.arguments` holds.
    pub arguments: serde_json::Value,
    pub files_scanned: i64,
    pub files_uploaded: i64,
    pub files_skipped: i64,
    pub files_failed: i64,
    pub bytes_read: i64,
    pub bytes_sent: i64,
}

pub fn runs(conn: &Connection) -> Result<Vec<RunRow>> {
    let mut st = conn.prepare(
        "SELECT id, command, started_at, ended_at, heartbeat_at, exit_code, outcome, arguments,
                files_scanned, files_uploaded, files_skipped, files_failed, bytes_read, bytes_sent
         FROM runs ORDER BY id",
    )?;
    let rows = st.query_map([], |r| {
        let args: String = r.get(7)?;
        Ok(RunRow {
            id: r.get(0)?,
            command: r.get(1)?,
            started_at: r.get(2)?,
            ended_at: r.get(3)?,
            heartbeat_at: r.get(4)?,
            exit_code: r.get(5)?,
            outcome: r.get(6)?,
            arguments: serde_json::from_str(&args).unwrap_or(serde_json::Value::String(args)),
            files_scanned: r.get(8)?,
            files_uploaded: r.get(9)?,
            files_skipped: r.get(10)?,
            files_failed: r.get(11)?,
            bytes_read: r.get(12)?,
            bytes_sent: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A run's files reaching a final state over time, in buckets of `bucket_ms` from its start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    pub run: i64,
    pub bucket_ms: i64,
    /// `[bucket index, files that reached a final state, bytes of those uploaded]`, only the
    /// buckets that had any.
    pub points: Vec<(i64, u64, u64)>,
}

/// How many buckets a run's time is cut into (at least a second each).
const BUCKETS: i64 = 100;

/// Throughput of each run that moved rows to a final state: one pass over `events`.
pub fn throughput(conn: &Connection) -> Result<Vec<Throughput>> {
    let mut st = conn.prepare(
        "WITH r AS (
           SELECT id, started_at,
                  MAX(1000, (COALESCE(ended_at, heartbeat_at) - started_at + ?1 - 1) / ?1) AS w
           FROM runs)
         SELECT e.run_id, r.w, MAX(0, (e.at - r.started_at) / r.w) AS b, COUNT(*),
                COALESCE(SUM(CASE WHEN e.to_state = 'uploaded' THEN f.size END), 0)
         FROM events e JOIN r ON r.id = e.run_id JOIN files f ON f.id = e.file_id
         WHERE e.to_state IN ('uploaded', 'skipped', 'failed')
         GROUP BY e.run_id, b ORDER BY e.run_id, b",
    )?;
    let mut out: Vec<Throughput> = Vec::new();
    let mut rows = st.query(params![BUCKETS])?;
    while let Some(r) = rows.next()? {
        let (run, w, b, n, bytes): (i64, i64, i64, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        if out.last().is_none_or(|t| t.run != run) {
            out.push(Throughput {
                run,
                bucket_ms: w,
                points: Vec::new(),
            });
        }
        let last = out.last_mut().expect("pushed above");
        last.points.push((b, n as u64, bytes as u64));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runs: run 1 (100 s) placed 3 files and failed one of each of two kinds; run 2
    /// (1 s) skipped two duplicates of file 1, one of file 2, and one name-and-size match.
    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../schema.sql"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, command, started_at, ended_at, heartbeat_at, pid, host, version, arguments, exit_code, outcome)
               VALUES (1, 'run', 0, 100000, 0, 1, 'h', 'v', '[\"bookferry\",\"run\"]', 1, 'failed_rows'),
                      (2, 'run', 200000, 201000, 0, 1, 'h', 'v', 'not json', 0, 'finished');
             INSERT INTO files (id, source_kind, source_ref, path, size, mtime_ns, format, state,
                                warnings, target_ref, duplicate_of, skip_reason, error, error_kind,
                                created_at, updated_at, state_changed_at)
             VALUES
              (1, 'dir', 'a', '/a', 10, 0, 'txt', 'uploaded', NULL, 'A', NULL, NULL, NULL, NULL, 0, 0, 0),
              (2, 'dir', 'b', '/b', 20, 0, 'txt', 'uploaded', 'w1
w2', 'B', NULL, NULL, NULL, NULL, 0, 0, 0),
              (3, 'dir', 'c', '/c', 40, 0, 'txt', 'uploaded', NULL, 'C', NULL, NULL, NULL, NULL, 0, 0, 0),
              (4, 'dir', 'd', '/d', 1, 0, 'txt', 'failed', NULL, NULL, NULL, NULL, 'd: gone', 'source_missing', 0, 0, 0),
              (5, 'dir', 'e', '/e', 0, 0, 'txt', 'failed', 'w3', NULL, NULL, NULL, '/e: empty', 'empty_file', 0, 0, 0),
              (6, 'dir', 'a2', '/a2', 10, 0, 'txt', 'skipped', NULL, NULL, 1, 'duplicate', NULL, NULL, 0, 0, 0),
              (7, 'dir', 'b2', '/b2', 20, 0, 'txt', 'skipped', NULL, NULL, 2, 'duplicate', NULL, NULL, 0, 0, 0),
              (8, 'dir', 'a3', '/a3', 10, 0, 'txt', 'skipped', NULL, NULL, 1, 'duplicate', NULL, NULL, 0, 0, 0),
              (9, 'dir', 'n', '/n', 5, 0, 'txt', 'skipped', NULL, 'N', NULL, 'target_has_name_size', NULL, NULL, 0, 0, 0);
             INSERT INTO events (file_id, run_id, at, from_state, to_state) VALUES
              (1, 1, 500, 'pending', 'checked'),
              (1, 1, 500, 'metadata_cached', 'uploaded'),
              (2, 1, 900, 'metadata_cached', 'uploaded'),
              (3, 1, 2500, 'metadata_cached', 'uploaded'),
              (4, 1, 99999, 'pending', 'failed'),
              (5, 1, 99999, 'checked', 'failed'),
              (6, 2, 200100, 'hashed', 'skipped'),
              (7, 2, 200100, 'hashed', 'skipped'),
              (8, 2, 200100, 'hashed', 'skipped'),
              (9, 2, 200900, 'pending', 'skipped');",
        )
        .unwrap();
        conn
    }

    #[test]
    fn reason_lists_keep_every_kind_when_capped() {
        let conn = db();
        let failed = failed_files(&conn, 10).unwrap();
        assert_eq!(failed.total, 2);
        assert_eq!(
            failed.rows,
            [
                (
                    4,
                    "source_missing".into(),
                    "d".into(),
                    Some("d: gone".into())
                ),
                (5, "empty_file".into(), "e".into(), Some("empty".into())),
            ]
        );
        // Two of four skipped rows: the first duplicate and the one name-and-size match, not
        // the first two by id (both duplicates).
        let skipped = skipped_files(&conn, 2).unwrap();
        assert_eq!(skipped.total, 4);
        let ids: Vec<i64> = skipped.rows.iter().map(|r| r.0).collect();
        assert_eq!(ids, [6, 9]);
        assert_eq!(skipped.rows[1].3.as_deref(), Some("N"));
    }

    #[test]
    fn duplicates_come_grouped_under_the_file_they_duplicate() {
        let d = duplicates(&db(), 100).unwrap();
        assert_eq!((d.groups, d.files.total), (2, 3));
        let pairs: Vec<(i64, i64)> = d.files.rows.iter().map(|r| (r.0, r.3)).collect();
        assert_eq!(pairs, [(1, 6), (1, 8), (2, 7)]);
        assert_eq!(d.files.rows[0].2.as_deref(), Some("A"));
        assert_eq!(duplicates(&db(), 1).unwrap().files.rows.len(), 1);
    }

    #[test]
    fn warnings_and_runs_are_listed() {
        let conn = db();
        let w = warned_files(&conn, 1).unwrap();
        assert_eq!(w.total, 2);
        assert_eq!(
            w.rows,
            [(
                2,
                "uploaded".into(),
                "b".into(),
                Some("B".into()),
                "w1\nw2".into()
            )]
        );
        let runs = runs(&conn).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].arguments, serde_json::json!(["bookferry", "run"]));
        assert_eq!(runs[1].arguments, serde_json::json!("not json"));
        assert_eq!(runs[0].exit_code, Some(1));
    }

    #[test]
    fn throughput_counts_final_moves_per_bucket_of_each_run() {
        let t = throughput(&db()).unwrap();
        assert_eq!(
            t,
            [
                // 100 s in 100 buckets of 1 s: files 1 and 2 in the first, 3 in the third,
                // the two failures in the last.
                Throughput {
                    run: 1,
                    bucket_ms: 1000,
                    points: vec![(0, 2, 30), (2, 1, 40), (99, 2, 0)],
                },
                // 1 s: one bucket of at least a second.
                Throughput {
                    run: 2,
                    bucket_ms: 1000,
                    points: vec![(0, 4, 0)],
                },
            ]
        );
    }
}
