//! What `bookferry verify` keeps in the state DB: its passes (`verify_passes`) and the latest
//! verdict on each file (`verified`). A pass that did not end is continued by the next verify
//! with the same options, so an interrupted check of 200,000 books goes on where it stopped.

use super::{now_ms, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// What a pass checks besides the placed files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassOptions {
    /// Source files are read too: changed or gone since they were migrated.
    pub source: bool,
    /// Rows skipped because the target had a file of that name and size are looked inside.
    pub content: bool,
}

/// A pass, new or continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub id: i64,
    /// Files this pass checked before (it is a continued pass).
    pub already_checked: u64,
}

/// Continue the last pass if it did not end and has these options; else begin a new one.
pub fn begin_pass(conn: &mut Connection, run: i64, opts: PassOptions) -> Result<Pass> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let open: Option<i64> = tx
        .query_row(
            "SELECT id FROM verify_passes WHERE ended_at IS NULL AND source = ?1 AND content = ?2
             AND id = (SELECT MAX(id) FROM verify_passes)",
            params![opts.source, opts.content],
            |r| r.get(0),
        )
        .optional()?;
    let pass = match open {
        Some(id) => {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM verified WHERE pass_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            Pass {
                id,
                already_checked: n as u64,
            }
        }
        None => {
            tx.execute(
                "UPDATE verify_passes SET ended_at = ?1 WHERE ended_at IS NULL",
                [now_ms()],
            )?;
            tx.execute(
                "INSERT INTO verify_passes (run_id, started_at, source, content)
                 VALUES (?1, ?2, ?3, ?4)",
                params![run, now_ms(), opts.source, opts.content],
            )?;
            Pass {
                id: tx.last_insert_rowid(),
                already_checked: 0,
            }
        }
    };
    tx.commit()?;
    Ok(pass)
}

pub fn end_pass(conn: &Connection, pass: i64) -> Result<()> {
    conn.execute(
        "UPDATE verify_passes SET ended_at = ?1 WHERE id = ?2",
        params![now_ms(), pass],
    )?;
    Ok(())
}

/// A row to check: where its file went, and what it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToVerify {
    pub id: i64,
    pub state: String,
    pub source_ref: String,
    pub path: String,
    pub target_ref: String,
    pub size: u64,
    pub sha1: Option<String>,
    pub blake3: Option<String>,
    /// A row skipped because the target had a file of its name and size (`--content`): never
    /// placed by bookferry, so `target_ref` is empty; the target is searched by name and size.
    pub name_size_skip: bool,
}

/// The rows this pass has still to check, after `after_id`, in id order: every `uploaded`
/// row with a target reference, and with `--content` the name-and-size skips.
pub fn unchecked(
    conn: &Connection,
    pass: i64,
    content: bool,
    after_id: i64,
    limit: usize,
) -> Result<Vec<ToVerify>> {
    let mut st = conn.prepare_cached(
        "SELECT f.id, f.state, f.source_ref, f.path, COALESCE(f.target_ref, ''), f.size, f.sha1,
                f.blake3, f.state = 'skipped'
         FROM files f
         WHERE f.id > ?1
           AND ((f.state = 'uploaded' AND f.target_ref IS NOT NULL)
                OR (?2 AND f.state = 'skipped' AND f.skip_reason = 'target_has_name_size'))
           AND NOT EXISTS (SELECT 1 FROM verified v WHERE v.file_id = f.id AND v.pass_id = ?3)
         ORDER BY f.id LIMIT ?4",
    )?;
    let rows = st.query_map(params![after_id, content, pass, limit as i64], |r| {
        Ok(ToVerify {
            id: r.get(0)?,
            state: r.get(1)?,
            source_ref: r.get(2)?,
            path: r.get(3)?,
            target_ref: r.get(4)?,
            size: r.get::<_, i64>(5)? as u64,
            sha1: r.get(6)?,
            blake3: r.get(7)?,
            name_size_skip: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many files, and bytes, this pass has still to check (the rows [`unchecked`] gives):
/// the total for the progress line.
pub fn left_to_check(conn: &Connection, pass: i64, content: bool) -> Result<(u64, u64)> {
    let (files, bytes): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(f.size), 0) FROM files f
         WHERE ((f.state = 'uploaded' AND f.target_ref IS NOT NULL)
                OR (?1 AND f.state = 'skipped' AND f.skip_reason = 'target_has_name_size'))
           AND NOT EXISTS (SELECT 1 FROM verified v WHERE v.file_id = f.id AND v.pass_id = ?2)",
        params![content, pass],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((files as u64, bytes as u64))
}

/// What one side of a file looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Ok,
    Missing,
    Changed,
    Unreadable,
    /// A calibre target's format file that calibre itself rewrote (metadata embedded on edit
    /// or download, a polish): other bytes, but calibre's own record accounts for them. Never
    /// repaired. (Schema version 5.)
    ChangedByCalibre,
}

impl Found {
    pub const ALL: [Found; 5] = [
        Found::Ok,
        Found::Missing,
        Found::Changed,
        Found::Unreadable,
        Found::ChangedByCalibre,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Found::Ok => "ok",
            Found::Missing => "missing",
            Found::Changed => "changed",
            Found::Unreadable => "unreadable",
            Found::ChangedByCalibre => "changed_by_calibre",
        }
    }

    pub fn parse(s: &str) -> Option<Found> {
        Found::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub file_id: i64,
    pub target: Found,
    /// `None` when the source was not checked.
    pub source: Option<Found>,
    pub detail: Option<String>,
}

/// A verdict on a name-and-size skip (`--content`): the target file it was compared with,
/// when one of that name and size was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSizeCheck {
    pub file_id: i64,
    pub compared_ref: Option<String>,
}

/// The verdict on a placed book's sidecars (a `--sidecars` folder migration; schema version
/// 10), kept in the pass beside the book's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarVerdict {
    pub file_id: i64,
    /// `None`: as bookferry writes them; else what was found, one line for people.
    pub findings: Option<String>,
}

/// Record a batch of verdicts in one transaction.
pub fn record(conn: &mut Connection, pass: i64, verdicts: &[Verdict]) -> Result<()> {
    record_all(conn, pass, verdicts, &[], &[])
}

/// Record a batch of verdicts in one transaction, `name_size` marking those of them that are
/// name-and-size skips (with what they were compared with), `sidecars` adding the verdicts on
/// their books' sidecars.
pub fn record_all(
    conn: &mut Connection,
    pass: i64,
    verdicts: &[Verdict],
    name_size: &[NameSizeCheck],
    sidecars: &[SidecarVerdict],
) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st = tx.prepare_cached(
            "INSERT OR REPLACE INTO verified (file_id, pass_id, target, source, detail, checked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let at = now_ms();
        for v in verdicts {
            st.execute(params![
                v.file_id,
                pass,
                v.target.as_str(),
                v.source.map(Found::as_str),
                v.detail,
                at
            ])?;
        }
        let mut mark = tx.prepare_cached(
            "UPDATE verified SET checked_as = 'name_size_skip', compared_ref = ?3
             WHERE file_id = ?1 AND pass_id = ?2",
        )?;
        for c in name_size {
            mark.execute(params![c.file_id, pass, c.compared_ref])?;
        }
        let mut sidecar = tx.prepare_cached(
            "UPDATE verified SET sidecars = ?3, sidecars_detail = ?4
             WHERE file_id = ?1 AND pass_id = ?2",
        )?;
        for v in sidecars {
            let verdict = match v.findings {
                None => "ok",
                Some(_) => "not_as_written",
            };
            sidecar.execute(params![v.file_id, pass, verdict, v.findings])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A placed book of a pass whose sidecars are not as bookferry writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarsDiffer {
    pub file_id: i64,
    pub source_ref: String,
    pub target_ref: String,
    /// What was found, one line (`sidecars_detail`).
    pub findings: String,
}

/// How many books this pass looked at the sidecars of, and those not as bookferry writes them,
/// in id order.
pub fn sidecar_outcome(conn: &Connection, pass: i64) -> Result<(u64, Vec<SidecarsDiffer>)> {
    let looked: i64 = conn.query_row(
        "SELECT COUNT(*) FROM verified WHERE pass_id = ?1 AND sidecars IS NOT NULL",
        [pass],
        |r| r.get(0),
    )?;
    let mut st = conn.prepare(
        "SELECT v.file_id, f.source_ref, COALESCE(f.target_ref, ''),
                COALESCE(v.sidecars_detail, '')
         FROM verified v JOIN files f ON f.id = v.file_id
         WHERE v.pass_id = ?1 AND v.sidecars = 'not_as_written' ORDER BY v.file_id",
    )?;
    let differ = st
        .query_map([pass], |r| {
            Ok(SidecarsDiffer {
                file_id: r.get(0)?,
                source_ref: r.get(1)?,
                target_ref: r.get(2)?,
                findings: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((looked as u64, differ))
}

/// A file of this pass that did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differs {
    pub file_id: i64,
    pub source_ref: String,
    pub target_ref: String,
    pub target: Found,
    pub source: Option<Found>,
    pub detail: Option<String>,
    /// A name-and-size skip (`--content`): `target` is what its comparison found.
    pub name_size_skip: bool,
    /// A name-and-size skip: the target file it was compared with.
    pub compared_ref: Option<String>,
}

impl Differs {
    /// Whether this file makes the verify fail (exit 1): anything but a format file calibre
    /// itself rewrote, which is reported and left as calibre wants it.
    pub fn fails(&self) -> bool {
        !matches!(self.target, Found::Ok | Found::ChangedByCalibre)
            || self.source.is_some_and(|s| s != Found::Ok)
    }
}

/// Counts of this pass by what was found (target side, then source side), and the files that
/// did not match, in id order.
pub fn outcome(conn: &Connection, pass: i64) -> Result<(PassCounts, Vec<Differs>)> {
    let mut counts = PassCounts::default();
    let mut st = conn.prepare(
        "SELECT v.file_id, f.source_ref, COALESCE(f.target_ref, ''), v.target, v.source, v.detail,
                v.checked_as = 'name_size_skip', v.compared_ref
         FROM verified v JOIN files f ON f.id = v.file_id
         WHERE v.pass_id = ?1 ORDER BY v.file_id",
    )?;
    let mut differs = Vec::new();
    let mut rows = st.query([pass])?;
    while let Some(r) = rows.next()? {
        let target = Found::parse(&r.get::<_, String>(3)?).unwrap_or(Found::Unreadable);
        let source = r
            .get::<_, Option<String>>(4)?
            .and_then(|s| Found::parse(&s));
        let name_size_skip: bool = r.get(6)?;
        counts.checked += 1;
        if name_size_skip {
            counts.name_size[target as usize] += 1;
        } else {
            counts.target[target as usize] += 1;
        }
        if let Some(s) = source {
            counts.source[s as usize] += 1;
        }
        if target != Found::Ok || source.is_some_and(|s| s != Found::Ok) {
            differs.push(Differs {
                file_id: r.get(0)?,
                source_ref: r.get(1)?,
                target_ref: r.get(2)?,
                target,
                source,
                detail: r.get(5)?,
                name_size_skip,
                compared_ref: r.get(7)?,
            });
        }
    }
    Ok((counts, differs))
}

/// How many files of a pass were found each way (indexed by `Found as usize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCounts {
    pub checked: u64,
    pub target: [u64; Found::ALL.len()],
    pub source: [u64; Found::ALL.len()],
    /// Name-and-size skips (`--content`), by what their comparison found (counted here, not
    /// in `target`).
    pub name_size: [u64; Found::ALL.len()],
}

/// Put the files this pass found `found` (missing or changed at the target) back to be
/// migrated: `checked` (hashed again, then placed), with no `target_ref`, so the next run places
/// a new copy and never writes over what is there now (a changed file stays as it is; the new
/// copy goes beside it). One `events` row each says why. Only `uploaded` rows move; returns
/// their ids.
pub fn requeue(conn: &mut Connection, run: i64, pass: i64, found: &[Found]) -> Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids = {
        // The rows to move, with the verdict that sends them back (one query for the pass).
        let mut chosen = Vec::new();
        let mut pick = tx.prepare(
            "SELECT f.id, v.target FROM verified v JOIN files f ON f.id = v.file_id
             WHERE v.pass_id = ?1 AND f.state = 'uploaded' AND v.checked_as = 'placed'
             ORDER BY f.id",
        )?;
        let rows = pick.query_map([pass], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, target) = row?;
            if let Some(f) = Found::parse(&target).filter(|f| found.contains(f)) {
                chosen.push(PutBack {
                    file_id: id,
                    found: f,
                    target_ref: None,
                });
            }
        }
        put_back(&tx, run, &chosen)?
    };
    tx.commit()?;
    Ok(ids)
}

/// `--repair content`: put the name-and-size skips this pass found with other content at the
/// target (`changed`: the book was never migrated) or with no file of that name and size any
/// more (`missing`) back to be migrated: `skipped` → `checked` (a documented edge), no
/// `skip_reason`, no `target_ref`, so the next run hashes and places them — beside the target's
/// file of that name (` (2)`), never over it. One `events` row each says why. Returns their ids.
pub fn requeue_name_size(conn: &mut Connection, run: i64, pass: i64) -> Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let ids: Vec<i64> = {
        let mut pick = tx.prepare(
            "SELECT f.id FROM verified v JOIN files f ON f.id = v.file_id
             WHERE v.pass_id = ?1 AND v.checked_as = 'name_size_skip'
               AND v.target IN ('changed', 'missing')
               AND f.state = 'skipped' AND f.skip_reason = 'target_has_name_size'
             ORDER BY f.id",
        )?;
        let rows = pick.query_map([pass], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    {
        let mut event = tx.prepare(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             SELECT v.file_id, ?2, ?3, 'skipped', 'checked',
                    'verify --repair content: ' || CASE v.target
                      WHEN 'changed' THEN 'the target''s ' || COALESCE(v.compared_ref, '?')
                                          || ' has this name and size but other content'
                      ELSE 'the target has no file of this name and size any more' END
             FROM verified v WHERE v.file_id = ?1",
        )?;
        let mut update = tx.prepare(
            "UPDATE files SET state = 'checked', skip_reason = NULL, target_ref = NULL,
                 run_id = NULL, updated_at = ?2, state_changed_at = ?2
             WHERE id = ?1 AND state = 'skipped'",
        )?;
        for id in &ids {
            event.execute(params![id, run, now])?;
            update.execute(params![id, now])?;
        }
    }
    tx.commit()?;
    Ok(ids)
}

/// A row `verify --repair` puts back, and the `target_ref` it keeps: `None` for a new copy
/// placed afresh; for a calibre target, the format file's path in its book when that place is
/// empty (the file gone, or moved out of the library first), so the next run puts the good
/// copy into the same book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutBack {
    pub file_id: i64,
    pub found: Found,
    pub target_ref: Option<String>,
}

/// Put these rows back to be migrated (`uploaded` → `checked`, an `events` row each), in one
/// transaction; returns the ids that moved (rows no longer `uploaded` do not).
pub fn requeue_rows(conn: &mut Connection, run: i64, rows: &[PutBack]) -> Result<Vec<i64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids = put_back(&tx, run, rows)?;
    tx.commit()?;
    Ok(ids)
}

fn put_back(tx: &rusqlite::Transaction<'_>, run: i64, rows: &[PutBack]) -> Result<Vec<i64>> {
    let now = now_ms();
    let mut event = tx.prepare(
        "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
         SELECT id, ?2, ?3, 'uploaded', 'checked',
                'verify --repair: ' || ?4 || ' at the target (was ' || COALESCE(target_ref, '?') || ')'
         FROM files WHERE id = ?1 AND state = 'uploaded'",
    )?;
    let mut update = tx.prepare(
        "UPDATE files SET state = 'checked', target_ref = ?3, run_id = NULL,
             updated_at = ?2, state_changed_at = ?2
         WHERE id = ?1 AND state = 'uploaded'",
    )?;
    let mut ids = Vec::new();
    for row in rows {
        event.execute(params![row.file_id, run, now, row.found.as_str()])?;
        if update.execute(params![row.file_id, now, row.target_ref])? == 1 {
            ids.push(row.file_id);
        }
    }
    Ok(ids)
}

/// The rows with these ids (those that exist), in id order: what a target's verify needs to
/// know of a file besides where it went (its metadata, for a calibre book's uuid).
pub fn file_rows(conn: &Connection, ids: &[i64]) -> Result<Vec<super::rows::FileRow>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {} FROM files WHERE id = ?1",
        super::rows::FileRow::COLUMNS
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = st
            .query_row([id], super::rows::FileRow::from_sql)
            .optional()?
        {
            out.push(row);
        }
    }
    out.sort_by_key(|r| r.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema_version::migrate(&mut conn, std::path::Path::new("mem")).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, command, started_at, heartbeat_at, pid, host, version, arguments)
               VALUES (1, 'verify', 0, 0, 1, 'h', 'v', '[]'), (2, 'verify', 0, 0, 1, 'h', 'v', '[]');
             INSERT INTO files (id, source_kind, source_ref, path, size, mtime_ns, format, state,
                                target_ref, skip_reason, created_at, updated_at, state_changed_at)
             VALUES (1, 'dir', 'a', '/s/a', 1, 0, 'txt', 'uploaded', 'A', NULL, 0, 0, 0),
                    (2, 'dir', 'b', '/s/b', 1, 0, 'txt', 'skipped', 'B', 'target_has_name_size', 0, 0, 0),
                    (3, 'dir', 'c', '/s/c', 1, 0, 'txt', 'uploaded', 'C', NULL, 0, 0, 0),
                    (4, 'dir', 'd', '/s/d', 1, 0, 'txt', 'failed', NULL, NULL, 0, 0, 0);",
        )
        .unwrap();
        conn
    }

    fn ids(rows: &[ToVerify]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn an_unfinished_pass_is_continued_and_a_finished_one_is_not() {
        let mut conn = db();
        let opts = PassOptions::default();
        let p = begin_pass(&mut conn, 1, opts).unwrap();
        assert_eq!(ids(&unchecked(&conn, p.id, false, 0, 10).unwrap()), [1, 3]);
        let ok = |id| Verdict {
            file_id: id,
            target: Found::Ok,
            source: None,
            detail: None,
        };
        record(&mut conn, p.id, &[ok(1)]).unwrap();
        // Interrupted here: the next verify continues with what is left.
        let again = begin_pass(&mut conn, 2, opts).unwrap();
        assert_eq!(
            again,
            Pass {
                id: p.id,
                already_checked: 1
            }
        );
        assert_eq!(ids(&unchecked(&conn, p.id, false, 0, 10).unwrap()), [3]);
        // Other options: a new pass, from the start.
        let other = begin_pass(
            &mut conn,
            2,
            PassOptions {
                content: true,
                source: false,
            },
        )
        .unwrap();
        assert_ne!(other.id, p.id);
        assert_eq!(
            ids(&unchecked(&conn, other.id, true, 0, 10).unwrap()),
            [1, 2, 3]
        );
        end_pass(&conn, other.id).unwrap();
        let next = begin_pass(
            &mut conn,
            2,
            PassOptions {
                content: true,
                source: false,
            },
        )
        .unwrap();
        assert_ne!(next.id, other.id);
        assert_eq!(next.already_checked, 0);
    }

    #[test]
    fn repair_puts_back_only_the_chosen_kinds_with_an_event_and_no_target_ref() {
        let mut conn = db();
        let p = begin_pass(&mut conn, 1, PassOptions::default()).unwrap();
        let v = |file_id, target| Verdict {
            file_id,
            target,
            source: None,
            detail: None,
        };
        record(
            &mut conn,
            p.id,
            &[v(1, Found::Missing), v(3, Found::Changed)],
        )
        .unwrap();
        assert_eq!(requeue(&mut conn, 2, p.id, &[Found::Missing]).unwrap(), [1]);
        let row = |id: i64| -> (String, Option<String>) {
            conn.query_row(
                "SELECT state, target_ref FROM files WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(row(1), ("checked".into(), None));
        assert_eq!(row(3), ("uploaded".into(), Some("C".into())));
        let detail: String = conn
            .query_row(
                "SELECT detail FROM events WHERE file_id = 1 AND run_id = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(detail, "verify --repair: missing at the target (was A)");
        // Asked again: nothing left to move.
        assert!(requeue(&mut conn, 2, p.id, &[Found::Missing])
            .unwrap()
            .is_empty());
        assert_eq!(requeue(&mut conn, 2, p.id, &[Found::Changed]).unwrap(), [3]);
    }

    /// A format file calibre rewrote is recorded (schema version 5 allows it), listed, and
    /// does not fail the pass; a damaged one does.
    #[test]
    fn a_file_calibre_rewrote_is_listed_but_does_not_fail_the_pass() {
        let mut conn = db();
        let p = begin_pass(&mut conn, 1, PassOptions::default()).unwrap();
        let v = |file_id, target| Verdict {
            file_id,
            target,
            source: None,
            detail: None,
        };
        record(&mut conn, p.id, &[v(1, Found::ChangedByCalibre)]).unwrap();
        let (counts, differs) = outcome(&conn, p.id).unwrap();
        assert_eq!(counts.target[Found::ChangedByCalibre as usize], 1);
        assert_eq!(differs.len(), 1);
        assert_eq!(differs[0].target, Found::ChangedByCalibre);
        assert!(!differs[0].fails());
        record(&mut conn, p.id, &[v(3, Found::Changed)]).unwrap();
        assert!(outcome(&conn, p.id).unwrap().1[1].fails());
        // Never put back by a repair of changed files.
        assert_eq!(requeue(&mut conn, 2, p.id, &[Found::Changed]).unwrap(), [3]);
    }

    /// Version 5 makes `verified` again with a wider CHECK: the verdicts a version 4 DB holds
    /// stay, with every column.
    #[test]
    fn migration_5_keeps_the_verdicts_recorded() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE files (id INTEGER PRIMARY KEY);
             CREATE TABLE verify_passes (id INTEGER PRIMARY KEY);
             INSERT INTO files VALUES (1), (2);
             INSERT INTO verify_passes VALUES (1);
             CREATE TABLE verified (file_id INTEGER PRIMARY KEY, pass_id INTEGER NOT NULL,
                 target TEXT NOT NULL CHECK (target IN ('ok', 'missing', 'changed', 'unreadable')),
                 source TEXT, detail TEXT, checked_at INTEGER NOT NULL,
                 checked_as TEXT NOT NULL DEFAULT 'placed', compared_ref TEXT);
             CREATE INDEX verified_pass ON verified(pass_id);
             INSERT INTO verified VALUES (1, 1, 'missing', 'ok', 'gone', 5, 'name_size_skip', 'a/b');",
        )
        .unwrap();
        let calibres = "INSERT INTO verified (file_id, pass_id, target, checked_at)
                        VALUES (2, 1, 'changed_by_calibre', 6)";
        assert!(conn.execute(calibres, []).is_err());
        conn.execute_batch(include_str!("migrations/5_verify_calibre.sql"))
            .unwrap();
        conn.execute(calibres, []).unwrap();
        let kept: (String, String, String, i64, String, String) = conn
            .query_row(
                "SELECT target, source, detail, checked_at, checked_as, compared_ref
                 FROM verified WHERE file_id = 1",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            kept,
            (
                "missing".into(),
                "ok".into(),
                "gone".into(),
                5,
                "name_size_skip".into(),
                "a/b".into()
            )
        );
    }

    #[test]
    fn the_outcome_counts_each_side_and_lists_what_differs() {
        let mut conn = db();
        let p = begin_pass(
            &mut conn,
            1,
            PassOptions {
                source: true,
                content: false,
            },
        )
        .unwrap();
        record(
            &mut conn,
            p.id,
            &[
                Verdict {
                    file_id: 1,
                    target: Found::Ok,
                    source: Some(Found::Changed),
                    detail: Some("source".into()),
                },
                Verdict {
                    file_id: 3,
                    target: Found::Missing,
                    source: Some(Found::Ok),
                    detail: None,
                },
            ],
        )
        .unwrap();
        let (counts, differs) = outcome(&conn, p.id).unwrap();
        assert_eq!(counts.checked, 2);
        assert_eq!(counts.target, [1, 1, 0, 0, 0]);
        assert_eq!(counts.source, [1, 0, 1, 0, 0]);
        assert_eq!(
            differs.iter().map(|d| d.file_id).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(differs[1].target_ref, "C");
    }
}
