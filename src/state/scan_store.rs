//! What a scan writes: new rows, rows reset because their file changed, rows whose file
//! vanished, and the folders already walked by a scan that has not finished (so an interrupted
//! scan resumes instead of walking everything again). Each batch is one transaction.

use super::rows::{path_to_sql, ScannedFile};
use super::runs::{self, RunCounters};
use super::{now_ms, FileState, Result};
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
        "SELECT source_ref, id, size, mtime_ns, state, source_gone FROM files
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
    /// Folders whose whole subtree is in this or an earlier batch.
    pub dirs_done: Vec<String>,
}

impl ScanBatch {
    pub fn len(&self) -> usize {
        self.new.len() + self.changed.len() + self.dirs_done.len() + self.returned.len()
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
        let mut reset = tx.prepare_cached(
            "UPDATE files SET state = 'pending', path = ?2, size = ?3, mtime_ns = ?4,
                 sha1 = NULL, blake3 = NULL, metadata = ?5, metadata_origin = ?6, warnings = NULL,
                 duplicate_of = NULL, skip_reason = NULL, error = NULL, error_kind = NULL,
                 failed_from = NULL, source_gone = 0, run_id = NULL, updated_at = ?8,
                 state_changed_at = ?8
             WHERE id = ?1",
        )?;
        for (id, old_state, f) in &batch.changed {
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
            event.execute(params![
                id,
                run,
                now,
                old_state.as_str(),
                "source file changed (size or mtime); migrating it again"
            ])?;
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
            files_scanned: (batch.new.len() + batch.changed.len()) as i64,
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
    /// Not yet migrated: now `failed` with kind `source_missing`.
    pub failed: usize,
    /// Already migrated: stay done, noted `source_gone`.
    pub gone_after_migration: usize,
}

/// Close a complete scan: recorded rows whose file it did not find (not in `found`, nor under
/// a folder in `walked_before`, which an interrupted pass of this scan walked) are handled as
/// vanished, and the scan's folder progress is cleared so the next scan walks everything again.
pub fn finish(
    conn: &mut Connection,
    run: i64,
    found: &FoundRows,
    walked_before: &HashSet<String>,
) -> Result<Vanished> {
    // The rows not found, read first (a few, usually), written after.
    let mut missing = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT id, source_ref, state, source_gone FROM files WHERE id <= ?1 ORDER BY id",
        )?;
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
            missing.push(Unfound {
                id,
                source_ref,
                state: FileState::parse(&state).unwrap_or(FileState::Pending),
                source_gone: r.get::<_, i64>(3)? != 0,
            });
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut out = Vanished::default();
    {
        let mut fail = tx.prepare_cached(
            "UPDATE files SET state = 'failed', failed_from = state, error_kind = 'source_missing',
                 error = ?2, run_id = ?3, updated_at = ?4, state_changed_at = ?4
             WHERE id = ?1 AND state = ?5",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut gone = tx.prepare_cached(
            "UPDATE files SET source_gone = 1, updated_at = ?2 WHERE id = ?1 AND source_gone = 0",
        )?;
        for row in &missing {
            if row.state.is_final() && row.state != FileState::Failed {
                if !row.source_gone && gone.execute(params![row.id, now])? > 0 {
                    out.gone_after_migration += 1;
                }
            } else if row.state != FileState::Failed {
                let msg = format!(
                    "{}: source file vanished before it was migrated",
                    row.source_ref
                );
                if fail.execute(params![row.id, msg, run, now, row.state.as_str()])? > 0 {
                    event.execute(params![row.id, run, now, row.state.as_str(), "failed", msg])?;
                    out.failed += 1;
                }
            }
        }
    }
    tx.execute("DELETE FROM scan_progress", [])?;
    tx.commit()?;
    Ok(out)
}

/// A recorded row whose file a finished scan did not find.
struct Unfound {
    id: i64,
    source_ref: String,
    state: FileState,
    source_gone: bool,
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

    /// A finished scan: a row it did not find goes `failed` (`source_missing`), unless it lies
    /// under a folder an interrupted pass of the scan walked; found rows are left alone.
    #[test]
    fn finish_fails_the_rows_not_found_outside_folders_walked_before() {
        let (_dir, mut conn, run) = scanned(&["a/x.epub", "b/c/y.epub", "z.epub"]);
        let mut found = FoundRows::new(&conn).unwrap();
        found.insert(1);
        let walked = HashSet::from(["b".to_string()]);
        let v = finish(&mut conn, run, &found, &walked).unwrap();
        assert_eq!(
            v,
            Vanished {
                failed: 1,
                gone_after_migration: 0
            }
        );
        let states: Vec<(String, String, Option<String>)> = conn
            .prepare("SELECT source_ref, state, error_kind FROM files ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let pending = |r: &str| (r.to_string(), "pending".to_string(), None);
        assert_eq!(
            states,
            [
                pending("a/x.epub"),
                pending("b/c/y.epub"),
                (
                    "z.epub".into(),
                    "failed".into(),
                    Some("source_missing".into())
                ),
            ]
        );
    }
}
