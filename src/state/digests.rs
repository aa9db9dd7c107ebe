//! Which digests a row has: `files.blake3` always once hashed, `files.sha1` only where the target
//! needed it or `--hash sha1` asked (else NULL). A row still on its way that lacks a digest the
//! run needs goes back to `pending` here, to be hashed again; a final row keeps what it has.

use super::{now_ms, Result};
use crate::hash::DigestSet;
use rusqlite::{params, Connection, TransactionBehavior};

/// The rows on their way (`hashed`, `metadata_cached`) that lack a digest of `needs`.
fn lacking(needs: DigestSet) -> &'static str {
    if needs.has_sha1() {
        "state IN ('hashed', 'metadata_cached') AND (blake3 IS NULL OR blake3 = '' OR sha1 IS NULL)"
    } else {
        "state IN ('hashed', 'metadata_cached') AND (blake3 IS NULL OR blake3 = '')"
    }
}

/// Send the rows that lack a digest of `needs` back to `pending` in run `run`, each with an
/// `events` row saying why (their metadata stays; a placement claimed for them is dropped, as
/// the adoption of a dead run's placements ran before). Returns how many.
pub fn requeue_lacking(conn: &mut Connection, run: i64, needs: DigestSet) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let rows = lacking(needs);
    let detail = format!(
        "hashed without a digest this run needs ({}): hashed again",
        needs.describe()
    );
    tx.execute(
        &format!(
            "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
             SELECT id, ?1, ?2, state, 'pending', ?3 FROM files WHERE {rows}"
        ),
        params![run, now, detail],
    )?;
    let n = tx.execute(
        &format!(
            "UPDATE files SET state = 'pending', planned_ref = NULL, run_id = NULL,
                 updated_at = ?1, state_changed_at = ?1
             WHERE {rows}"
        ),
        params![now],
    )?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{runs, scan_store, Db};

    fn states(db: &Db) -> Vec<String> {
        let conn = db.conn().unwrap();
        let mut st = conn
            .prepare("SELECT source_ref || ' ' || state FROM files ORDER BY id")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn rows_on_their_way_without_a_needed_digest_go_back_to_pending() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let run = runs::begin(&db.conn().unwrap(), "run", &[]).unwrap();
        let names = [
            "both.epub",
            "blake3.epub",
            "none.epub",
            "done.epub",
            "cached.epub",
        ];
        scan_store::add_test_rows(&mut db.conn().unwrap(), run, &names);
        db.conn()
            .unwrap()
            .execute_batch(
                "UPDATE files SET state = 'hashed', sha1 = 's', blake3 = 'b' WHERE id = 1;
                 UPDATE files SET state = 'hashed', blake3 = 'b' WHERE id = 2;
                 UPDATE files SET state = 'hashed', sha1 = 's' WHERE id = 3;
                 UPDATE files SET state = 'uploaded', blake3 = 'b' WHERE id = 4;
                 UPDATE files SET state = 'metadata_cached', blake3 = 'b',
                     planned_ref = 'x' WHERE id = 5;",
            )
            .unwrap();
        let n = requeue_lacking(&mut db.conn().unwrap(), run, DigestSet::Blake3).unwrap();
        assert_eq!(n, 1, "only the row without BLAKE3");
        assert_eq!(
            states(&db),
            [
                "both.epub hashed",
                "blake3.epub hashed",
                "none.epub pending",
                "done.epub uploaded",
                "cached.epub metadata_cached"
            ]
        );
        let n = requeue_lacking(&mut db.conn().unwrap(), run, DigestSet::Blake3AndSha1).unwrap();
        assert_eq!(n, 2, "and, for SHA-1, the rows on their way without one");
        assert_eq!(
            states(&db),
            [
                "both.epub hashed",
                "blake3.epub pending",
                "none.epub pending",
                "done.epub uploaded",
                "cached.epub pending"
            ]
        );
        let conn = db.conn().unwrap();
        let (events, planned): (i64, Option<String>) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM events WHERE to_state = 'pending'
                         AND detail LIKE 'hashed without a digest%'),
                        (SELECT planned_ref FROM files WHERE id = 5)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((events, planned), (3, None));
    }
}
