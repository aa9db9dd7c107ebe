//! The contents this migration placed, by BLAKE3, for the content check's "already placed by an
//! earlier run" (schema version 11). A BLAKE3 is random: an index on `files.blake3` took a
//! random page for nearly every row a commit hashed, and a 100,000-file run wrote ~10× the state
//! DB's final size, half of it that index. Instead, a trigger notes each row that moves to
//! `uploaded` in `contents_unindexed` (keyed by the row's id: rows move in id order, so
//! neighbours share pages), and [`merge`] moves those into `contents_placed` (BLAKE3, id) in
//! BLAKE3 order, when a command opens the state DB (what a killed run left) and when a run ends:
//! each page of that table is then written once per merge, not once per row. A run finds its own
//! contents in `pipeline::contents`; this table answers for the runs before it. An entry whose
//! row left `uploaded` or holds other content since is not an answer: the look-up joins the row.
//! When a row's BLAKE3 changes or is cleared, a trigger deletes its entry by key (version 12), so
//! the merge only inserts. The key is the first 16 hex digits of the BLAKE3 (version 13): every
//! answer is confirmed against its row anyway, and the entry is a third of the size.

use super::Result;
use crate::hash::Digests;
use rusqlite::{Connection, TransactionBehavior};
use std::collections::HashMap;

/// Rows already `uploaded`, by BLAKE3: (their digests, id, where it went), lowest id first.
pub type Placed = HashMap<String, Vec<(Digests, i64, String)>>;

/// BLAKE3s asked in one query.
const CHUNK: usize = 500;

/// Hex digits of a BLAKE3 that key `contents_placed` (schema version 13): 64 bits.
const PREFIX_DIGITS: usize = 16;

/// `contents_placed`'s key for a BLAKE3 (its first [`PREFIX_DIGITS`] hex digits), as the
/// migration's `substr(blake3, 1, 16)` makes it.
fn prefix(blake3: &str) -> &str {
    blake3.get(..PREFIX_DIGITS).unwrap_or(blake3)
}

/// Index the contents of the rows moved to `uploaded` since the last merge; returns how many
/// rows it looked at. One IMMEDIATE transaction; nothing to do costs one read.
pub fn merge(conn: &mut Connection) -> Result<usize> {
    let waiting: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM contents_unindexed)",
        [],
        |r| r.get(0),
    )?;
    if !waiting {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT OR IGNORE INTO contents_placed (blake3_prefix, file_id)
         SELECT substr(f.blake3, 1, 16), f.id FROM contents_unindexed u JOIN files f ON f.id = u.file_id
         WHERE f.state = 'uploaded' AND f.blake3 IS NOT NULL AND f.blake3 <> ''
         ORDER BY 1, 2",
        [],
    )?;
    let n = tx.execute("DELETE FROM contents_unindexed", [])?;
    tx.commit()?;
    Ok(n)
}

/// Rows `uploaded` with one of these BLAKE3s, as far as merged (see the module's note).
/// `inject`: the test hook's fault, a query SQLite refuses.
pub fn uploaded_with(conn: &Connection, blake3s: &[String], inject: bool) -> Result<Placed> {
    let mut out = Placed::new();
    let asked: std::collections::BTreeSet<&str> = blake3s.iter().map(String::as_str).collect();
    let prefixes: std::collections::BTreeSet<&str> = asked.iter().map(|b| prefix(b)).collect();
    let prefixes: Vec<&str> = prefixes.into_iter().collect();
    for chunk in prefixes.chunks(CHUNK) {
        let mut st = conn.prepare(&uploaded_with_sql(chunk.len(), inject))?;
        let mut rows = st.query(rusqlite::params_from_iter(chunk.iter()))?;
        while let Some(r) = rows.next()? {
            let digests = Digests {
                sha1: r.get(0)?,
                blake3: r.get(1)?,
            };
            // Another content with the same first 64 bits: not asked.
            if !asked.contains(digests.blake3.as_str()) {
                continue;
            }
            out.entry(digests.blake3.clone())
                .or_default()
                .push((digests, r.get(2)?, r.get(3)?));
        }
    }
    Ok(out)
}

/// The look-up of `n` BLAKE3 prefixes: by `contents_placed`'s key, each entry confirmed against
/// its row (still `uploaded`, still the content of that entry; whether it is a content asked
/// for, the caller checks). `CROSS JOIN` keeps that order: left to itself
/// SQLite reads every uploaded row by `files_state` and looks each up in `contents_placed`.
fn uploaded_with_sql(n: usize, inject: bool) -> String {
    format!(
        "SELECT f.sha1, f.blake3, f.id, COALESCE(f.target_ref, f.source_ref)
         FROM {} p CROSS JOIN files f ON f.id = p.file_id
         WHERE p.blake3_prefix IN ({}) AND f.state = 'uploaded'
           AND substr(f.blake3, 1, 16) = p.blake3_prefix
         ORDER BY f.id",
        if inject {
            "no_such_table"
        } else {
            "contents_placed"
        },
        vec!["?"; n].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{scan_store, Db};

    fn rows(n: usize) -> (tempfile::TempDir, crate::state::Conn) {
        scan_store::test_db_of(n)
    }

    /// WAL frames written since the last checkpoint.
    fn wal_frames(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap()
    }

    fn checkpoint(conn: &Connection) {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }

    /// The 64-hex-digit digest the tests' SQL gives row `id` (`printf('%016x%048x', id, id)`):
    /// rows differ in the first 16 digits, as BLAKE3s do.
    fn digest(id: i64) -> String {
        format!("{id:016x}{id:048x}")
    }

    /// A random-looking 64-hex-digit digest of `id` (as a BLAKE3 is).
    const DIGEST: &str = "printf('%016x%016x%016x%016x', (id * 2654435761) % 4294967291,
        id * 40503, (id * 7919) % 100003, id)";

    /// `n` rows, of which rows 1..=`placed` are `uploaded` with random-looking BLAKE3s and
    /// merged into `contents_placed`.
    fn placed(n: usize, placed: i64) -> (tempfile::TempDir, crate::state::Conn) {
        let (dir, mut conn) = rows(n);
        conn.execute(
            &format!("UPDATE files SET state = 'uploaded', blake3 = {DIGEST} WHERE id <= ?1"),
            [placed],
        )
        .unwrap();
        merge(&mut conn).unwrap();
        (dir, conn)
    }

    /// The ids `uploaded_with` answers for `asked`, in order.
    fn placed_ids(conn: &Connection, asked: &[String]) -> Vec<i64> {
        let mut ids: Vec<i64> = uploaded_with(conn, asked, false)
            .unwrap()
            .into_values()
            .flatten()
            .map(|(_, id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    /// A commit of the writer moves neighbouring rows on: to `hashed` (each gets a random
    /// BLAKE3), then to `uploaded`. Either writes about the pages of those rows, not a page of
    /// a content index per row: an index on `files.blake3` (schema version 7) took ~1 random
    /// page per row, half of what a 100,000-file run wrote to its state DB.
    #[test]
    fn hashing_and_placing_neighbouring_rows_write_few_content_index_pages() {
        // Half the rows placed by an earlier run, and indexed.
        let (_dir, conn) = placed(20_000, 10_000);
        checkpoint(&conn);
        // The pages of 1,000 rows, rewritten without touching an index.
        conn.execute(
            "UPDATE files SET updated_at = updated_at + 1 WHERE id BETWEEN 12001 AND 13000",
            [],
        )
        .unwrap();
        let rows_alone = wal_frames(&conn);
        checkpoint(&conn);
        conn.execute(
            &format!(
                "UPDATE files SET state = 'hashed', blake3 = {DIGEST}, updated_at = updated_at + 1
                 WHERE id BETWEEN 14001 AND 15000"
            ),
            [],
        )
        .unwrap();
        let hashed = wal_frames(&conn);
        checkpoint(&conn);
        let place = |from: i64| {
            conn.execute(
                "UPDATE files SET state = 'uploaded', target_ref = source_ref,
                    updated_at = updated_at + 1
                 WHERE id BETWEEN ?1 AND ?1 + 999",
                [from],
            )
            .unwrap();
            let n = wal_frames(&conn);
            checkpoint(&conn);
            n
        };
        // Noting 1,000 rows in `contents_unindexed`: 19 pages measured.
        let uploaded = place(14001);
        // The same move of other rows without the trigger: what the rows and the state index
        // cost alone.
        conn.execute(
            "UPDATE files SET state = 'hashed', blake3 = id WHERE id BETWEEN 16001 AND 17000",
            [],
        )
        .unwrap();
        conn.execute_batch("DROP TRIGGER files_placed_content")
            .unwrap();
        checkpoint(&conn);
        let uploaded_alone = place(16001);
        assert!(rows_alone > 10, "{rows_alone} pages for 1,000 rows");
        // Their digests make the rows longer (some move to new pages), and each state's index
        // entries sit together: 60 pages measured. With the BLAKE3 index, 283.
        assert!(
            hashed <= 2 * rows_alone + 20,
            "hashing 1,000 neighbouring rows wrote {hashed} pages, their rows alone {rows_alone}"
        );
        assert!(
            uploaded <= uploaded_alone + 30,
            "placing 1,000 neighbouring rows wrote {uploaded} pages, without noting their \
             contents {uploaded_alone}"
        );
    }

    /// An entry of `contents_placed` is small: at 20,000 placed rows with random-looking
    /// BLAKE3s, the table takes at most 32 bytes per entry (keyed by the whole BLAKE3, as in
    /// version 11, it took ~84 bytes of a 100,000-file state DB's 1,405 per file).
    #[test]
    fn an_entry_of_the_placed_contents_takes_few_bytes() {
        let (_dir, conn) = placed(20_000, 20_000);
        let (entries, bytes): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM contents_placed),
                        (SELECT SUM(pgsize) FROM dbstat WHERE name = 'contents_placed')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(entries, 20_000);
        assert!(
            bytes <= 32 * 20_000,
            "{} bytes per entry of contents_placed",
            bytes / 20_000
        );
    }

    /// A placed content that shares its first 64 bits with an asked one (the table's key) is
    /// not an answer for it, and the asked one is still found.
    #[test]
    fn a_content_sharing_the_key_with_an_asked_one_is_not_an_answer() {
        let (_dir, mut conn) = rows(3);
        let same_key = |tail: &str| format!("{}{tail}", "ab".repeat(8));
        conn.execute(
            "UPDATE files SET state = 'uploaded', target_ref = id,
                 blake3 = CASE id WHEN 1 THEN ?1 WHEN 2 THEN ?2 ELSE ?3 END",
            [
                same_key(&"1".repeat(48)),
                same_key(&"2".repeat(48)),
                "c".repeat(64),
            ],
        )
        .unwrap();
        merge(&mut conn).unwrap();
        let asked = [same_key(&"2".repeat(48)), same_key(&"3".repeat(48))];
        let found = uploaded_with(&conn, &asked, false).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let ids: Vec<i64> = found[&asked[0]].iter().map(|(_, id, _)| *id).collect();
        assert_eq!(ids, [2]);
    }

    /// The look-up steps over the entries of the asked BLAKE3s only, however many rows were
    /// placed; it answers from what was merged, and only with rows still placed with that
    /// content.
    #[test]
    fn the_lookup_reads_only_the_merged_rows_still_placed_with_that_content() {
        let (_dir, mut conn) = rows(5000);
        conn.execute_batch(
            "UPDATE files SET state = 'uploaded', blake3 = printf('%016x%048x', id, id), target_ref = id",
        )
        .unwrap();
        let wanted = |ids: &[i64]| -> Vec<String> {
            let mut w: Vec<String> = (0..99).map(|i| digest(100_000 + i)).collect();
            w.extend(ids.iter().map(|&id| digest(id)));
            w
        };
        let found = |conn: &Connection, ids: &[i64]| placed_ids(conn, &wanted(ids));
        assert_eq!(found(&conn, &[4321]), Vec::<i64>::new(), "not merged yet");
        assert_eq!(merge(&mut conn).unwrap(), 5000);
        assert_eq!(merge(&mut conn).unwrap(), 0, "nothing left to merge");
        assert_eq!(found(&conn, &[4321, 17]), [17, 4321]);

        let asked = wanted(&[4321]);
        let keys: Vec<&str> = asked.iter().map(|b| prefix(b)).collect();
        let mut st = conn.prepare(&uploaded_with_sql(keys.len(), false)).unwrap();
        let n = st
            .query_map(rusqlite::params_from_iter(&keys), |r| r.get::<_, i64>(2))
            .unwrap()
            .count();
        assert_eq!(n, 1);
        let steps = st.get_status(rusqlite::StatementStatus::VmStep);
        assert!(steps < 2000, "{steps} VM steps to look 100 up among 5000");
        drop(st);

        // Row 17 goes back to be placed again (verify --repair), row 4321 is placed again with
        // other content (a changed source file): neither answers for its old content.
        conn.execute_batch(
            "UPDATE files SET state = 'checked' WHERE id = 17;
             UPDATE files SET state = 'hashed', blake3 = 'other' WHERE id = 4321;
             UPDATE files SET state = 'uploaded' WHERE id = 4321;",
        )
        .unwrap();
        assert_eq!(found(&conn, &[4321, 17]), Vec::<i64>::new());
        let old_entry = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM contents_placed
                 WHERE file_id = 4321 AND blake3_prefix = substr(?1, 1, 16)",
                [digest(4321)],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(old_entry(&conn), 0, "the old content's entry left with it");
        merge(&mut conn).unwrap();
        assert_eq!(found(&conn, &[4321, 17]), Vec::<i64>::new());
        let other = uploaded_with(&conn, &["other".to_string()], false).unwrap();
        assert_eq!(other["other"][0].1, 4321);
        let entries: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM contents_placed WHERE file_id = 4321",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(entries, 1, "the old content's entry is gone");
    }

    /// A state DB an earlier bookferry wrote (schema version 10: placed rows found by the index
    /// on `files.blake3`) keeps finding what its runs placed once migrated.
    #[test]
    fn a_version_10_db_finds_what_its_runs_placed_after_the_migration() {
        let (dir, conn) = rows(300);
        conn.execute_batch(
            "DROP TRIGGER files_placed_content;
             DROP TRIGGER files_unplaced_content;
             DROP TABLE contents_placed;
             DROP TABLE contents_unindexed;
             CREATE INDEX files_blake3 ON files(blake3) WHERE blake3 IS NOT NULL;
             CREATE INDEX files_sha1 ON files(sha1) WHERE sha1 IS NOT NULL;
             UPDATE files SET state = 'uploaded', blake3 = printf('%016x%048x', id, id), target_ref = id
                WHERE id <= 200;
             UPDATE files SET state = 'hashed', blake3 = printf('%016x%048x', id, id) WHERE id > 200;
             PRAGMA user_version = 10;",
        )
        .unwrap();
        drop(conn);
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let conn = db.conn().unwrap();
        let asked: Vec<String> = [7, 200, 201].iter().map(|&id| digest(id)).collect();
        let found = placed_ids(&conn, &asked);
        assert_eq!(found, [7, 200], "the placed rows, not the hashed one");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::state::schema_version::SCHEMA_VERSION);
    }

    /// A version-11 DB's entries for contents its rows no longer hold (rows rescanned since they
    /// were placed) go at the migration; the entries still true stay.
    #[test]
    fn a_version_11_db_loses_only_its_stale_entries_in_the_migration() {
        let (dir, conn) = rows(300);
        conn.execute_batch(
            "UPDATE files SET state = 'uploaded', blake3 = printf('%016x%048x', id, id), target_ref = id",
        )
        .unwrap();
        // Its `contents_placed` as version 11 made it: keyed by the whole BLAKE3.
        conn.execute_batch(
            "DROP TRIGGER files_unplaced_content;
             DROP TABLE contents_placed;
             CREATE TABLE contents_placed (
                 blake3  TEXT NOT NULL,
                 file_id INTEGER NOT NULL,
                 PRIMARY KEY (blake3, file_id)
             ) WITHOUT ROWID;
             INSERT INTO contents_placed SELECT blake3, id FROM files;
             DELETE FROM contents_unindexed;
             UPDATE files SET state = 'pending', blake3 = NULL WHERE id <= 10;
             UPDATE files SET blake3 = 'other' WHERE id = 11;
             PRAGMA user_version = 11;",
        )
        .unwrap();
        drop(conn);
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let conn = db.conn().unwrap();
        let entries: i64 = conn
            .query_row("SELECT COUNT(*) FROM contents_placed", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            entries, 289,
            "the 11 stale entries are gone, the 289 true ones kept"
        );
        // Version 13 keyed them by their first 16 hex digits: still found, the stale not.
        let asked: Vec<String> = [5, 11, 12, 300].iter().map(|&id| digest(id)).collect();
        let found = placed_ids(&conn, &asked);
        assert_eq!(found, [12, 300]);
    }
}
