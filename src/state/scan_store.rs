//! What a scan writes: new rows, rows reset because their file changed, rows whose file
//! vanished, and the folders already walked by a scan that has not finished (so an interrupted
//! scan resumes instead of walking everything again). Each batch is one transaction.

use super::rows::{path_to_sql, ScannedFile};
use super::runs::{self, RunCounters};
use super::{now_ms, FileState, Result};
use crate::skip_reason::SkipReason;
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::{HashMap, HashSet};

/// What the DB already knows of a source file.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: i64,
    pub size: u64,
    pub mtime_ns: i64,
    pub state: FileState,
    pub source_gone: bool,
    /// `skipped` as `source_gone` (the file had left the source before it was migrated) or
    /// as `excluded` (a filter left it out): found and taken again, it goes back to `pending`.
    pub skipped_as_gone: bool,
}

/// The recorded rows of these source references (those that have one): one query, by the
/// unique index on `source_ref`. A scan asks for the files it found a batch at a time, so it
/// never holds the whole table in memory.
pub fn known_rows(conn: &Connection, refs: &[&str]) -> Result<HashMap<String, Known>> {
    let mut known = HashMap::with_capacity(refs.len());
    if refs.is_empty() {
        return Ok(known);
    }
    let mut st = conn.prepare_cached(
        "SELECT source_ref, id, size, mtime_ns, state, source_gone,
             state = 'skipped' AND skip_reason IN ('source_gone', 'excluded') FROM files
         WHERE source_ref IN (SELECT value FROM json_each(?1))",
    )?;
    let list = serde_json::to_string(refs).expect("a list of strings serializes");
    let rows = st.query_map([list], |r| {
        let state: String = r.get(4)?;
        Ok((
            r.get::<_, String>(0)?,
            Known {
                id: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                mtime_ns: r.get(3)?,
                state: FileState::parse(&state).unwrap_or(FileState::Pending),
                source_gone: r.get::<_, i64>(5)? != 0,
                skipped_as_gone: r.get::<_, i64>(6)? != 0,
            },
        ))
    })?;
    for row in rows {
        let (k, v) = row?;
        known.insert(k, v);
    }
    Ok(known)
}

/// The recorded rows a scan found, one bit per row id up to the highest id when the scan
/// began (rows the scan adds are found by definition): 1,000,000 rows take 125 KB.
#[derive(Debug)]
pub struct FoundRows {
    max_id: i64,
    bits: Vec<u64>,
}

impl FoundRows {
    /// For the rows recorded now.
    pub fn new(conn: &Connection) -> Result<FoundRows> {
        let max_id: i64 =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM files", [], |r| r.get(0))?;
        Ok(FoundRows {
            max_id,
            bits: vec![0; (max_id as usize) / 64 + 1],
        })
    }

    pub fn insert(&mut self, id: i64) {
        if (0..=self.max_id).contains(&id) {
            self.bits[id as usize / 64] |= 1 << (id % 64);
        }
    }

    pub fn contains(&self, id: i64) -> bool {
        (0..=self.max_id).contains(&id) && self.bits[id as usize / 64] & (1 << (id % 64)) != 0
    }
}

/// Folders fully walked by the unfinished scan, if one was interrupted.
pub fn walked_dirs(conn: &Connection) -> Result<HashSet<String>> {
    let mut st = conn.prepare("SELECT dir FROM scan_progress")?;
    let dirs = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<HashSet<String>>>()?;
    Ok(dirs)
}

/// One batch of scan results, written in one transaction.
#[derive(Debug, Default)]
pub struct ScanBatch {
    pub new: Vec<ScannedFile>,
    /// Rows whose file changed (size or mtime): back to `pending`, hashes and metadata cleared.
    pub changed: Vec<(i64, FileState, ScannedFile)>,
    /// Rows marked `source_gone` earlier whose file is back.
    pub returned: Vec<i64>,
    /// Rows `skipped` as `source_gone` whose file is back: to `pending`, as a changed file.
    pub reappeared: Vec<(i64, ScannedFile)>,
    /// Folders whose whole subtree is in this or an earlier batch.
    pub dirs_done: Vec<String>,
}

impl ScanBatch {
    pub fn len(&self) -> usize {
        self.new.len()
            + self.changed.len()
            + self.dirs_done.len()
            + self.returned.len()
            + self.reappeared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn write_batch(conn: &mut Connection, run: i64, batch: &ScanBatch) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO files (source_kind, source_ref, path, size, mtime_ns, format, state,
                 metadata, metadata_origin, run_id, created_at, updated_at, state_changed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, NULL, ?10, ?10, ?10)",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
        )?;
        for f in &batch.new {
            let (md, origin) = metadata_columns(f);
            insert.execute(params![
                f.source_kind.as_str(),
                f.source_ref,
                path_to_sql(&f.path),
                f.size as i64,
                f.mtime_ns,
                f.format,
                md,
                origin,
                None::<i64>,
                now
            ])?;
            let id = tx.last_insert_rowid();
            event.execute(params![id, run, now, None::<String>, "scanned"])?;
        }
        let mut again_event = tx.prepare_cached(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             SELECT id, ?2, ?3, ?4, 'pending', ?5 || CASE WHEN state = 'uploaded'
                 AND target_ref IS NOT NULL THEN ' (placed at ' || target_ref || ')' ELSE '' END
             FROM files WHERE id = ?1",
        )?;
        let mut reset = tx.prepare_cached(
            "UPDATE files SET state = 'pending', path = ?2, size = ?3, mtime_ns = ?4,
                 sha1 = NULL, blake3 = NULL, metadata = ?5, metadata_origin = ?6, warnings = NULL,
                 duplicate_of = NULL, skip_reason = NULL, error = NULL, error_kind = NULL,
                 failed_from = NULL, source_gone = 0, run_id = NULL, updated_at = ?8,
                 state_changed_at = ?8
             WHERE id = ?1",
        )?;
        // A file to migrate again: back to `pending` with what the scan saw, and why.
        let mut migrate_again =
            |id: i64, f: &ScannedFile, from: FileState, why: &str| -> rusqlite::Result<()> {
                // Before the reset: an `uploaded` row's event names the place its copy had (the
                // `uploaded` event does not repeat the row's `target_ref`).
                again_event.execute(params![id, run, now, from.as_str(), why])?;
                let (md, origin) = metadata_columns(f);
                reset.execute(params![
                    id,
                    path_to_sql(&f.path),
                    f.size as i64,
                    f.mtime_ns,
                    md,
                    origin,
                    None::<i64>,
                    now
                ])?;
                Ok(())
            };
        for (id, old_state, f) in &batch.changed {
            migrate_again(
                *id,
                f,
                *old_state,
                "source file changed (size or mtime); migrating it again",
            )?;
        }
        for (id, f) in &batch.reappeared {
            migrate_again(
                *id,
                f,
                FileState::Skipped,
                "source file is back; migrating it",
            )?;
        }
        let mut back =
            tx.prepare_cached("UPDATE files SET source_gone = 0, updated_at = ?2 WHERE id = ?1")?;
        for id in &batch.returned {
            back.execute(params![id, now])?;
        }
        let mut dir = tx.prepare_cached("INSERT OR IGNORE INTO scan_progress (dir) VALUES (?1)")?;
        for d in &batch.dirs_done {
            dir.execute([d])?;
        }
    }
    runs::add_counters(
        &tx,
        run,
        &RunCounters {
            files_scanned: (batch.new.len() + batch.changed.len() + batch.reappeared.len()) as i64,
            ..Default::default()
        },
    )?;
    tx.commit()?;
    Ok(())
}

fn metadata_columns(f: &ScannedFile) -> (Option<String>, Option<&'static str>) {
    match &f.metadata {
        Some((md, origin)) => (serde_json::to_string(md).ok(), Some(origin.as_str())),
        None => (None, None),
    }
}

/// What a finished scan found missing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vanished {
    /// Not yet migrated (active): now `skipped` as `source_gone`.
    pub gone_before_migration: usize,
    /// `failed` (a file that vanished under the hash stage, or a failure of a file since
    /// removed): now `skipped` as `source_gone` too.
    pub failed_now_gone: usize,
    /// Already migrated: stay done, noted `source_gone`.
    pub gone_after_migration: usize,
    /// Not yet migrated (or `failed`) and left out by the filter or `--formats` now: `skipped`
    /// as `excluded`.
    pub excluded: usize,
    /// Of those, the rows that were still to do (not `failed`).
    pub excluded_active: usize,
}

/// A recorded row the scan did not find, as [`finish`] asks whether the filter left it out.
#[derive(Debug)]
pub struct Unfound {
    id: i64,
    pub source_ref: String,
    /// The file's absolute path.
    pub path: String,
    pub size: u64,
    pub format: String,
    /// The metadata JSON recorded with the row (a calibre source's, at scan).
    pub metadata: Option<String>,
    state: FileState,
    source_gone: bool,
}

/// Close a complete scan: recorded rows whose file it did not find (not in `found`, nor under
/// a folder in `walked_before`, which an interrupted pass of this scan walked) are handled as
/// vanished, and the scan's folder progress is cleared so the next scan walks everything again.
///
/// A file the user removed from the source is no failure of the migration: a row not yet
/// migrated (or `failed`) ends `skipped` with reason `source_gone` (one `events` row each,
/// counted in the run's `files_skipped`); a migrated one stays done, its `source_gone` flag set.
/// A row that `left_out` says the filter or `--formats` leaves out now (the scan passed over
/// its file, present or not) ends `skipped` as `excluded` instead; a migrated one stays as it is.
pub fn finish(
    conn: &mut Connection,
    run: i64,
    found: &FoundRows,
    walked_before: &HashSet<String>,
    left_out: &dyn Fn(&Unfound) -> bool,
) -> Result<Vanished> {
    // The rows not found, read first (a few, usually), written after.
    let mut missing = Vec::new();
    {
        // Only the columns every row is judged by: the rest (the metadata JSON, often on
        // overflow pages) is read for the rows not found alone, by id.
        let mut st = conn.prepare(
            "SELECT id, source_ref, state, source_gone FROM files WHERE id <= ?1 ORDER BY id",
        )?;
        let mut details =
            conn.prepare("SELECT path, size, format, metadata FROM files WHERE id = ?1")?;
        let mut rows = st.query([found.max_id])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            if found.contains(id) {
                continue;
            }
            let source_ref: String = r.get(1)?;
            if under_any(&source_ref, walked_before) {
                continue;
            }
            let state: String = r.get(2)?;
            let (path, size, format, metadata) = details.query_row([id], |d| {
                Ok((d.get(0)?, d.get::<_, i64>(1)? as u64, d.get(2)?, d.get(3)?))
            })?;
            missing.push(Unfound {
                id,
                source_ref,
                state: FileState::parse(&state).unwrap_or(FileState::Pending),
                source_gone: r.get::<_, i64>(3)? != 0,
                path,
                size,
                format,
                metadata,
            });
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut out = Vanished::default();
    // The rows ended `skipped` here, for their log lines once committed.
    let mut logged: Vec<(&Unfound, SkipReason)> = Vec::new();
    {
        let mut skip = tx.prepare_cached(
            "UPDATE files SET state = 'skipped', skip_reason = 'source_gone', source_gone = 1,
                 error = NULL, error_kind = NULL, failed_from = NULL, run_id = ?2,
                 updated_at = ?3, state_changed_at = ?3
             WHERE id = ?1 AND state = ?4",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             VALUES (?1, ?2, ?3, ?4, 'skipped', ?5)",
        )?;
        let mut gone = tx.prepare_cached(
            "UPDATE files SET source_gone = 1, updated_at = ?2 WHERE id = ?1 AND source_gone = 0",
        )?;
        let mut exclude = tx.prepare_cached(
            "UPDATE files SET state = 'skipped', skip_reason = 'excluded',
                 error = NULL, error_kind = NULL, failed_from = NULL, run_id = ?2,
                 updated_at = ?3, state_changed_at = ?3
             WHERE id = ?1 AND state = ?4",
        )?;
        for row in &missing {
            let finished = matches!(row.state, FileState::Uploaded | FileState::Skipped);
            if !finished && left_out(row) {
                let msg = format!(
                    "{}: left out by the filter or --formats (excluded)",
                    row.source_ref
                );
                if exclude.execute(params![row.id, run, now, row.state.as_str()])? > 0 {
                    event.execute(params![row.id, run, now, row.state.as_str(), msg])?;
                    logged.push((row, SkipReason::Excluded));
                    out.excluded += 1;
                    if row.state != FileState::Failed {
                        out.excluded_active += 1;
                    }
                }
                continue;
            }
            if finished {
                if !row.source_gone && gone.execute(params![row.id, now])? > 0 {
                    out.gone_after_migration += 1;
                }
                continue;
            }
            let msg = format!(
                "{}: gone from the source before it was migrated (source_gone)",
                row.source_ref
            );
            if skip.execute(params![row.id, run, now, row.state.as_str()])? > 0 {
                event.execute(params![row.id, run, now, row.state.as_str(), msg])?;
                logged.push((row, SkipReason::SourceGone));
                if row.state == FileState::Failed {
                    out.failed_now_gone += 1;
                } else {
                    out.gone_before_migration += 1;
                }
            }
        }
    }
    runs::add_counters(
        &tx,
        run,
        &RunCounters {
            files_skipped: (out.gone_before_migration + out.failed_now_gone + out.excluded) as i64,
            ..Default::default()
        },
    )?;
    tx.execute("DELETE FROM scan_progress", [])?;
    tx.commit()?;
    for (row, reason) in logged {
        super::file_log::skipped_by_scan(row.id, &row.source_ref, reason);
    }
    Ok(out)
}

/// A scan that stopped on its own verdict (nothing matched, the source is empty): the next
/// scan walks everything again.
pub fn abandon(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM scan_progress", [])?;
    Ok(())
}

/// Whether any row of a format `takes` accepts is still in the source as far as the state DB
/// knows (not `source_gone`): a scan that finds no file at all then finds a source that has
/// disappeared.
pub fn any_row_present(conn: &Connection, takes: &dyn Fn(&str) -> bool) -> Result<bool> {
    let mut st = conn.prepare("SELECT DISTINCT format FROM files WHERE source_gone = 0")?;
    let present = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(present.iter().any(|f| takes(f)))
}

/// Whether `source_ref` lies under one of `dirs` (relative folders).
fn under_any(source_ref: &str, dirs: &HashSet<String>) -> bool {
    let mut path = source_ref;
    while let Some((parent, _)) = path.rsplit_once('/') {
        if dirs.contains(parent) {
            return true;
        }
        path = parent;
    }
    false
}

/// A new state DB of `n` rows a scan recorded (`d{i % 7}/b{i}.epub`, see [`add_test_rows`]):
/// for tests. The temp dir must outlive the connection.
#[cfg(test)]
pub fn test_db_of(n: usize) -> (tempfile::TempDir, super::Conn) {
    let dir = tempfile::tempdir().unwrap();
    let db = super::Db::open(&dir.path().join("state.db")).unwrap();
    let mut conn = db.conn().unwrap();
    let run = super::runs::begin(&conn, "scan", &[]).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("d{}/b{i}.epub", i % 7)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    add_test_rows(&mut conn, run, &refs);
    (dir, conn)
}

/// Record a new row for each name (a 10-byte EPUB under `/lib`), as a scan would: for tests.
#[cfg(test)]
pub fn add_test_rows(conn: &mut Connection, run: i64, names: &[&str]) {
    let new = names
        .iter()
        .map(|n| ScannedFile {
            source_kind: super::rows::SourceKind::Dir,
            source_ref: n.to_string(),
            path: std::path::PathBuf::from(format!("/lib/{n}")),
            size: 10,
            mtime_ns: 1,
            format: "epub".into(),
            metadata: None,
        })
        .collect();
    let batch = ScanBatch {
        new,
        ..Default::default()
    };
    write_batch(conn, run, &batch).expect("test rows recorded");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{runs, Conn, Db};

    /// A new state DB with a row for each of `refs`, recorded by a scan run (whose id comes
    /// last); the temp dir must outlive the connection.
    fn scanned(refs: &[&str]) -> (tempfile::TempDir, Conn, i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let mut conn = db.conn().unwrap();
        let run = runs::begin(&conn, "scan", &[]).unwrap();
        add_test_rows(&mut conn, run, refs);
        (dir, conn, run)
    }

    /// Found rows are kept one bit per id, across word boundaries; ids recorded after the
    /// set was made (rows the scan itself adds) are never taken for found ones; and
    /// `known_rows` finds the rows of exactly the references asked for.
    #[test]
    fn found_rows_and_known_rows_answer_for_exactly_the_ids_and_refs_given() {
        let names: Vec<String> = (0..130).map(|i| format!("d/b{i}.epub")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_dir, conn, _) = scanned(&refs);
        let mut found = FoundRows::new(&conn).unwrap();
        assert_eq!(found.max_id, 130);
        for id in [1, 63, 64, 65, 127, 128, 130, 131, 500] {
            found.insert(id);
        }
        let present: Vec<i64> = (0..=200).filter(|&id| found.contains(id)).collect();
        assert_eq!(present, [1, 63, 64, 65, 127, 128, 130]);

        let known = known_rows(&conn, &["d/b0.epub", "d/b129.epub", "d/none.epub"]).unwrap();
        let mut ids: Vec<(&str, i64)> = known.iter().map(|(k, v)| (k.as_str(), v.id)).collect();
        ids.sort();
        assert_eq!(ids, [("d/b0.epub", 1), ("d/b129.epub", 130)]);
        assert!(known_rows(&conn, &[]).unwrap().is_empty());
    }

    /// References travel to SQLite as a JSON list: quotes, backslashes, escaped bytes and
    /// other scripts come back as they went.
    #[test]
    fn known_rows_finds_references_with_any_characters() {
        let refs = [
            "Ann \"Q\" O'Brien/Book.epub",
            "back\\slash/x.pdf",
            "bytes \\xFF here.txt",
            "Łucja/Книга 書.fb2",
        ];
        let (_dir, conn, _) = scanned(&refs);
        let known = known_rows(&conn, &refs).unwrap();
        let mut got: Vec<&str> = known.keys().map(String::as_str).collect();
        got.sort();
        let mut want = refs.to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    /// A finished scan: a row it did not find ends `skipped` as `source_gone` (a `failed` one
    /// too; a migrated one keeps its state, flagged), unless it lies under a folder an
    /// interrupted pass of the scan walked; found rows are left alone. Before, such a row went
    /// `failed`/`source_missing`, and every later run exited 1 for it.
    #[test]
    fn finish_skips_the_rows_not_found_as_source_gone_outside_folders_walked_before() {
        let (_dir, mut conn, run) = scanned(&[
            "a/x.epub",
            "b/c/y.epub",
            "z.epub",
            "failed.epub",
            "done.epub",
        ]);
        conn.execute_batch(
            "UPDATE files SET state = 'failed', failed_from = 'checked',
                 error_kind = 'source_missing', error = 'vanished' WHERE source_ref = 'failed.epub';
             UPDATE files SET state = 'uploaded', target_ref = 'done.epub'
                 WHERE source_ref = 'done.epub';",
        )
        .unwrap();
        let mut found = FoundRows::new(&conn).unwrap();
        found.insert(1);
        let walked = HashSet::from(["b".to_string()]);
        let v = finish(&mut conn, run, &found, &walked, &|_| false).unwrap();
        assert_eq!(
            v,
            Vanished {
                gone_before_migration: 1,
                failed_now_gone: 1,
                gone_after_migration: 1,
                ..Vanished::default()
            }
        );
        type Row = (String, String, Option<String>, Option<String>, i64);
        let rows: Vec<Row> = conn
            .prepare(
                "SELECT source_ref, state, skip_reason, error_kind, source_gone FROM files ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let row = |r: &str, st: &str, skip: Option<&str>, gone| {
            (
                r.to_string(),
                st.to_string(),
                skip.map(String::from),
                None,
                gone,
            )
        };
        let gone = Some("source_gone");
        assert_eq!(
            rows,
            [
                row("a/x.epub", "pending", None, 0),
                row("b/c/y.epub", "pending", None, 0),
                row("z.epub", "skipped", gone, 1),
                row("failed.epub", "skipped", gone, 1),
                row("done.epub", "uploaded", None, 1),
            ]
        );
        let events: Vec<(String, String)> = conn
            .prepare(
                "SELECT COALESCE(from_state, ''), detail FROM events WHERE to_state = 'skipped' ORDER BY id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].0, "pending");
        assert_eq!(events[1].0, "failed");
        assert!(events[0].1.contains("z.epub") && events[0].1.contains("source_gone"));
        let skipped: i64 = conn
            .query_row("SELECT files_skipped FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(skipped, 2);
    }
}
