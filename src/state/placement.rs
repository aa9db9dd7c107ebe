//! Placements claimed before they are made (`files.planned_ref`), and their adoption after a
//! crash. A folder target's row placed for the first time is claimed with its move to
//! `metadata_cached` (the writer records it; the transfer waits for that commit). Other rows
//! are claimed here: the transfer records where it is about to place a group of rows in one
//! small IMMEDIATE transaction of its own (not through the writer, whose commits wait for the
//! target's `syncfs`: a placement must not wait for that). The writer clears the claim with the
//! row's final move. A run killed in between leaves the claim: the next run looks there and
//! records a file it finds with the row's content as this row's placement (`uploaded`), so a
//! killed run's own files are never taken for files the target already had.

use super::runs::{self, active_list, RunCounters};
use super::{now_ms, FileState, Result};
use crate::hash::Digests;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::PathBuf;

/// Record that run `run` is about to place each row at its ref (a folder target: the path
/// relative to it, before any ` (N)` suffix; an HTTP target: [`sent_ref`]). Rows the run does
/// not hold are left alone.
pub fn claim(conn: &mut Connection, run: i64, planned: &[(i64, String)]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st =
            tx.prepare_cached("UPDATE files SET planned_ref = ?2 WHERE id = ?1 AND run_id = ?3")?;
        for (id, rel) in planned {
            st.execute(params![id, rel, run])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The planned ref of an upload of content `sha1` (an HTTP server knows content by SHA-1).
pub fn sent_ref(sha1: &str) -> String {
    format!("sha1:{sha1}")
}

/// The SHA-1 an upload was claimed for, if `planned` is an upload's ref.
pub fn sent_sha1(planned: &str) -> Option<&str> {
    planned.strip_prefix("sha1:")
}

/// A row a dead run claimed a placement for and did not record as finished.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub state: FileState,
    pub source_ref: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// The row's content, when its hashing was recorded.
    pub digests: Option<Digests>,
    pub planned_ref: String,
}

/// Rows with a placement claimed by a run that is gone: active, held by no run (call after
/// `runs::recover_dead`, before this run claims any row).
pub fn left_by_dead_runs(conn: &Connection) -> Result<Vec<Claimed>> {
    let mut st = conn.prepare(&format!(
        "SELECT id, state, source_ref, path, size, sha1, blake3, planned_ref, mtime_ns FROM files
         WHERE planned_ref IS NOT NULL AND run_id IS NULL AND state IN ({}) ORDER BY id",
        active_list()
    ))?;
    let rows = st
        .query_map([], |r| {
            let state: String = r.get(1)?;
            let sha1: Option<String> = r.get(5)?;
            let blake3: Option<String> = r.get(6)?;
            Ok(Claimed {
                id: r.get(0)?,
                state: FileState::parse(&state).unwrap_or(FileState::Pending),
                source_ref: r.get(2)?,
                path: super::rows::path_from_sql(r.get_ref(3)?),
                size: r.get::<_, i64>(4)? as u64,
                digests: blake3.map(|blake3| Digests { sha1, blake3 }),
                planned_ref: r.get(7)?,
                mtime_ns: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A claimed placement found in the target with the row's content.
#[derive(Debug, Clone)]
pub struct Adoption {
    /// The row as it was read ([`Claimed`]): adopted only if it is still so (a scan running
    /// meanwhile may have found the source file changed).
    pub id: i64,
    pub from: FileState,
    pub planned_ref: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Where the file is (the planned ref, or a ` (N)` name after it); `None` where the
    /// target does not say (an HTTP server's existence check gives no id).
    pub target_ref: Option<String>,
    /// The row's content, as the target's file holds it.
    pub digests: Digests,
}

/// Record each adoption as the row's move to `uploaded` by run `run` (one transaction, with its
/// `events` rows and the run's counters). A row that moved or was taken meanwhile is left
/// alone. Returns how many were adopted.
pub fn adopt(conn: &mut Connection, run: i64, adoptions: &[Adoption]) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut counters = RunCounters::default();
    let mut logged = Vec::new();
    {
        let mut update = tx.prepare_cached(
            "UPDATE files SET state = 'uploaded', target_ref = ?4, sha1 = COALESCE(?5, sha1), blake3 = ?6,
                planned_ref = NULL, run_id = ?7, skip_reason = NULL, duplicate_of = NULL,
                error_kind = NULL, error = NULL, failed_from = NULL,
                updated_at = ?8, state_changed_at = ?8
             WHERE id = ?1 AND state = ?2 AND planned_ref = ?3 AND run_id IS NULL
                AND size = ?9 AND mtime_ns = ?10
             RETURNING source_ref",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             VALUES (?1, ?2, ?3, ?4, 'uploaded', ?5)",
        )?;
        for a in adoptions {
            let source: Option<String> = update
                .query_row(
                    params![
                        a.id,
                        a.from.as_str(),
                        a.planned_ref,
                        a.target_ref,
                        a.digests.sha1,
                        a.digests.blake3,
                        run,
                        now,
                        a.size as i64,
                        a.mtime_ns,
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(source) = source else {
                continue;
            };
            logged.push((a.id, source, a.target_ref.clone()));
            event.execute(params![
                a.id,
                run,
                now,
                a.from.as_str(),
                match &a.target_ref {
                    Some(at) => format!("→ {at} (placed by a run that stopped before recording it)"),
                    None => "sent by a run that stopped before recording it; the target holds its content".to_string(),
                },
            ])?;
            counters.files_uploaded += 1;
        }
    }
    runs::add_counters(&tx, run, &counters)?;
    tx.commit()?;
    for (id, source, target) in &logged {
        super::file_log::adopted(*id, source, target.as_deref());
    }
    Ok(counters.files_uploaded as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::writer::{Transition, Writer};
    use crate::state::{runs, scan_store, Db};

    fn digests(s: &str) -> Digests {
        Digests {
            sha1: Some(format!("sha1-{s}")),
            blake3: format!("b3-{s}"),
        }
    }

    /// A placement claimed by a run is there until the row's final move is recorded, which
    /// clears it; one left by a run that died is found by the next run, which adopts it (once:
    /// a row changed or taken meanwhile is left alone), with an event and its run's count.
    #[test]
    fn a_claim_lasts_until_the_final_move_and_a_dead_runs_claim_is_adopted_once() {
        use FileState::*;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let mut conn = db.conn().unwrap();
        let scan = runs::begin(&conn, "scan", &[]).unwrap();
        scan_store::add_test_rows(&mut conn, scan, &["a.epub", "b.epub", "c.epub"]);
        runs::end(&mut conn, scan, 0, "finished").unwrap();

        let first = runs::begin(&conn, "run", &[]).unwrap();
        let tuning = crate::tuning::Tuning::detect().writer;
        let writer = Writer::start(&db, first, None, tuning).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let h = writer.handle();
        let ids: Vec<i64> = rt
            .block_on(h.claim(0, 3))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let planned: Vec<(i64, String)> =
            ids.iter().map(|&id| (id, format!("x/{id}.epub"))).collect();
        rt.block_on(h.plan(planned)).unwrap();
        // Row a is placed and recorded; b and c are placed but the run dies before recording.
        let mut up = Transition::new(a, Pending, Uploaded);
        up.target_ref = Some(format!("x/{a}.epub"));
        rt.block_on(h.send(up));
        drop(h);
        let (_, fatal) = writer.finish();
        assert!(fatal.is_none());
        let planned_of = |id: i64| -> Option<String> {
            conn.query_row("SELECT planned_ref FROM files WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(planned_of(a), None, "cleared by the final move");
        assert_eq!(planned_of(b), Some(format!("x/{b}.epub")));

        // The next run: the first is dead.
        let next = runs::begin(&conn, "run", &[]).unwrap();
        runs::recover_dead(&mut conn, next).unwrap();
        let left = left_by_dead_runs(&conn).unwrap();
        assert_eq!(left.iter().map(|c| c.id).collect::<Vec<_>>(), [b, c]);
        // Row c's source changed meanwhile (a scan recorded another size): not adopted.
        conn.execute("UPDATE files SET size = 11 WHERE id = ?1", [c])
            .unwrap();
        let adoptions: Vec<Adoption> = left
            .iter()
            .map(|l| Adoption {
                id: l.id,
                from: l.state,
                planned_ref: l.planned_ref.clone(),
                size: l.size,
                mtime_ns: l.mtime_ns,
                target_ref: Some(format!("x/{} (2).epub", l.id)),
                digests: digests(&l.source_ref),
            })
            .collect();
        assert_eq!(adopt(&mut conn, next, &adoptions).unwrap(), 1);
        assert_eq!(adopt(&mut conn, next, &adoptions).unwrap(), 0, "once");
        let row = |id: i64| -> String {
            conn.query_row(
                "SELECT state || ' ' || COALESCE(target_ref, '-') || ' ' || COALESCE(sha1, '-')
                    || ' ' || COALESCE(planned_ref, '-') || ' ' || COALESCE(run_id, '-')
                 FROM files WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(
            row(b),
            format!("uploaded x/{b} (2).epub sha1-b.epub - {next}")
        );
        assert_eq!(row(c), format!("pending - - x/{c}.epub -"));
        let (events, uploaded): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM events WHERE run_id = ?1 AND file_id = ?2
                         AND from_state = 'pending' AND to_state = 'uploaded'),
                        (SELECT files_uploaded FROM runs WHERE id = ?1)",
                params![next, b],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((events, uploaded), (1, 1));
    }
}
