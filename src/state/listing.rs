//! Row listings for `bookferry report`: which files to list (`Selection`), and one `Listed`
//! row per file, read straight from the documented schema in one streaming query, so a
//! listing of 1M rows costs one pass over `files` and holds one row in memory at a time.

use super::Result;
use rusqlite::{params_from_iter, types::Value, Connection};
use serde::Serialize;

/// Which rows to list. The kinds are alternatives (a row listed by any one of them is
/// listed); `reasons` and `run` narrow whatever the kinds select.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub failed: bool,
    pub skipped: bool,
    pub duplicates: bool,
    pub warnings: bool,
    pub uploaded: bool,
    /// Every row, whatever its state (pending and in-flight rows too).
    pub all: bool,
    /// Only rows whose reason (failure kind or skip reason) is one of these.
    pub reasons: Vec<String>,
    /// Only rows that run moved (an `events` row of that run).
    pub run: Option<i64>,
}

impl Selection {
    /// Every row, of any state.
    pub fn all() -> Selection {
        Selection {
            all: true,
            ..Selection::default()
        }
    }

    /// What a user checking a migration wants first: failures, skips and warnings.
    pub fn problems() -> Selection {
        Selection {
            failed: true,
            skipped: true,
            warnings: true,
            ..Selection::default()
        }
    }

    /// Whether any kind is chosen (with none, nothing is listed).
    pub fn lists_any_kind(&self) -> bool {
        self.duplicates || self.lists_other_than_duplicates()
    }

    fn lists_other_than_duplicates(&self) -> bool {
        self.all || self.failed || self.skipped || self.warnings || self.uploaded
    }

    /// The WHERE clause (over `files AS f`) and its parameters.
    fn where_clause(&self) -> (String, Vec<Value>) {
        let mut kinds = Vec::new();
        if self.all {
            kinds.push("1");
        } else {
            if self.failed {
                kinds.push("f.state = 'failed'");
            }
            if self.skipped {
                kinds.push("f.state = 'skipped'");
            }
            if self.duplicates {
                kinds.push("(f.state = 'skipped' AND f.skip_reason = 'duplicate')");
            }
            if self.uploaded {
                kinds.push("f.state = 'uploaded'");
            }
            if self.warnings {
                kinds.push("COALESCE(f.warnings, '') <> ''");
            }
        }
        if !self.lists_any_kind() {
            kinds.push("0");
        }
        let mut clause = format!("({})", kinds.join(" OR "));
        let mut params = Vec::new();
        if !self.reasons.is_empty() {
            let marks = vec!["?"; self.reasons.len()].join(", ");
            clause.push_str(&format!(
                " AND CASE f.state WHEN 'failed' THEN f.error_kind WHEN 'skipped' THEN f.skip_reason END IN ({marks})"
            ));
            params.extend(self.reasons.iter().map(|r| Value::Text(r.clone())));
        }
        if let Some(run) = self.run {
            clause.push_str(" AND f.id IN (SELECT file_id FROM events WHERE run_id = ?)");
            params.push(Value::Integer(run));
        }
        (clause, params)
    }
}

/// One listed file. The field names are the CSV header and the JSON keys (a public interface:
/// README "Reports"; change only additively).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed {
    pub id: i64,
    pub state: String,
    /// The failure kind (`failed`) or the skip reason (`skipped`); empty otherwise.
    pub reason: Option<String>,
    /// The source file: relative path (folder) or `book_id/format` (calibre).
    pub source: String,
    /// The source file's absolute path.
    pub path: String,
    /// Where it went (uploaded), or where the target has it (skipped), when known.
    pub target: Option<String>,
    /// For a duplicate: the row it duplicates, and that row's source and target.
    pub duplicate_of: Option<i64>,
    pub duplicate_of_source: Option<String>,
    pub duplicate_of_target: Option<String>,
    pub size: i64,
    pub format: String,
    pub sha1: Option<String>,
    /// Failed: the error message; otherwise what the last state change said.
    pub message: Option<String>,
    /// Problems met reading the file (not fatal), one per element.
    pub warnings: Vec<String>,
    /// The run that holds or last held the row.
    pub run: Option<i64>,
    /// When the row last changed state (UTC, RFC 3339).
    pub changed_at: String,
}

const LISTING: &str = "
SELECT f.id, f.state,
       CASE f.state WHEN 'failed' THEN f.error_kind WHEN 'skipped' THEN f.skip_reason END,
       f.source_ref, f.path, f.target_ref, f.duplicate_of, d.source_ref, d.target_ref,
       f.size, f.format, f.sha1,
       CASE WHEN f.state = 'failed' THEN f.error
            ELSE (SELECT e.detail FROM events e WHERE e.file_id = f.id ORDER BY e.id DESC LIMIT 1)
       END,
       f.warnings, f.run_id,
       strftime('%Y-%m-%dT%H:%M:%SZ', f.state_changed_at / 1000, 'unixepoch')
FROM files f LEFT JOIN files d ON d.id = f.duplicate_of";

/// Calls `each` with every selected row in id order (duplicates: grouped under the row they
/// duplicate, in that row's id order). Stops at the first error `each` returns.
pub fn each_listed<E>(
    conn: &Connection,
    selection: &Selection,
    mut each: impl FnMut(Listed) -> std::result::Result<(), E>,
) -> Result<std::result::Result<(), E>> {
    let (clause, params) = selection.where_clause();
    let order = if selection.duplicates && !selection.lists_other_than_duplicates() {
        "f.duplicate_of, f.id"
    } else {
        "f.id"
    };
    let sql = format!("{LISTING} WHERE {clause} ORDER BY {order}");
    let mut st = conn.prepare(&sql)?;
    let mut rows = st.query(params_from_iter(params))?;
    while let Some(r) = rows.next()? {
        let warnings: Option<String> = r.get(13)?;
        let listed = Listed {
            id: r.get(0)?,
            state: r.get(1)?,
            reason: r.get(2)?,
            source: r.get(3)?,
            path: r.get(4)?,
            target: r.get(5)?,
            duplicate_of: r.get(6)?,
            duplicate_of_source: r.get(7)?,
            duplicate_of_target: r.get(8)?,
            size: r.get(9)?,
            format: r.get(10)?,
            sha1: r.get(11)?,
            message: r.get(12)?,
            warnings: warnings
                .iter()
                .flat_map(|w| w.lines())
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
            run: r.get(14)?,
            changed_at: r.get(15)?,
        };
        if let Err(e) = each(listed) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state DB with one row per case: uploaded clean, uploaded with a warning, failed,
    /// skipped by name and size, a duplicate of the first row, and one not migrated yet.
    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../schema.sql"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, command, started_at, heartbeat_at, pid, host, version, arguments)
               VALUES (1, 'run', 0, 0, 1, 'h', 'v', '[]'), (2, 'run', 0, 0, 1, 'h', 'v', '[]');
             INSERT INTO files (id, source_kind, source_ref, path, size, mtime_ns, format, state,
                                sha1, warnings, target_ref, duplicate_of, skip_reason, error,
                                error_kind, run_id, created_at, updated_at, state_changed_at)
             VALUES
              (1, 'dir', 'a.epub', '/s/a.epub', 10, 0, 'epub', 'uploaded', 'aa', NULL, 'A/a.epub', NULL, NULL, NULL, NULL, 1, 0, 0, 0),
              (2, 'dir', 'b.epub', '/s/b.epub', 20, 0, 'epub', 'uploaded', 'bb', 'unreadable ZIP container
metadata from the file name', 'B/b.epub', NULL, NULL, NULL, NULL, 1, 0, 0, 0),
              (3, 'dir', 'c.pdf', '/s/c.pdf', 0, 0, 'pdf', 'failed', NULL, NULL, NULL, NULL, NULL, 'c.pdf: the file is empty (0 bytes)', 'empty_file', 1, 0, 0, 0),
              (4, 'dir', 'd.txt', '/s/d.txt', 5, 0, 'txt', 'skipped', NULL, NULL, 'D/d.txt', NULL, 'target_has_name_size', NULL, NULL, 2, 0, 0, 1600000000000),
              (5, 'dir', 'a copy.epub', '/s/a copy.epub', 10, 0, 'epub', 'skipped', 'aa', NULL, NULL, 1, 'duplicate', NULL, NULL, 2, 0, 0, 0),
              (6, 'dir', 'e.epub', '/s/e.epub', 7, 0, 'epub', 'pending', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0);
             INSERT INTO events (file_id, run_id, at, from_state, to_state, detail) VALUES
              (4, 2, 0, 'checked', 'skipped', 'the target has D/d.txt with the same size'),
              (5, 1, 0, NULL, 'pending', NULL),
              (5, 2, 0, 'hashed', 'skipped', 'same content as file #1 (a.epub)');",
        )
        .unwrap();
        conn
    }

    fn ids(conn: &Connection, s: &Selection) -> Vec<i64> {
        let mut out = Vec::new();
        each_listed(conn, s, |l| {
            out.push(l.id);
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        out
    }

    #[test]
    fn each_kind_lists_exactly_its_rows() {
        let conn = db();
        let only = |f: fn(&mut Selection)| {
            let mut s = Selection::default();
            f(&mut s);
            s
        };
        assert_eq!(ids(&conn, &only(|s| s.failed = true)), [3]);
        assert_eq!(ids(&conn, &only(|s| s.skipped = true)), [4, 5]);
        assert_eq!(ids(&conn, &only(|s| s.duplicates = true)), [5]);
        assert_eq!(ids(&conn, &only(|s| s.warnings = true)), [2]);
        assert_eq!(ids(&conn, &only(|s| s.uploaded = true)), [1, 2]);
        assert_eq!(ids(&conn, &Selection::problems()), [2, 3, 4, 5]);
        assert_eq!(ids(&conn, &Selection::all()), [1, 2, 3, 4, 5, 6]);
        let mut every_final_kind = only(|s| s.uploaded = true);
        every_final_kind.failed = true;
        every_final_kind.skipped = true;
        assert_eq!(ids(&conn, &every_final_kind), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&conn, &Selection::default()), Vec::<i64>::new());
    }

    #[test]
    fn reasons_and_runs_narrow_the_kinds() {
        let conn = db();
        let mut s = Selection::all();
        s.reasons = vec!["empty_file".into(), "duplicate".into()];
        assert_eq!(ids(&conn, &s), [3, 5]);
        let mut s = Selection::all();
        s.run = Some(2);
        assert_eq!(ids(&conn, &s), [4, 5]);
        s.run = Some(1);
        assert_eq!(ids(&conn, &s), [5]);
    }

    #[test]
    fn a_listed_row_carries_its_reason_message_duplicate_and_warnings() {
        let conn = db();
        let mut rows = Vec::new();
        each_listed(&conn, &Selection::all(), |l| {
            rows.push(l);
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        let (warned, failed, skipped, dup) = (&rows[1], &rows[2], &rows[3], &rows[4]);
        assert_eq!(
            warned.warnings,
            ["unreadable ZIP container", "metadata from the file name"]
        );
        assert_eq!(failed.reason.as_deref(), Some("empty_file"));
        assert_eq!(
            failed.message.as_deref(),
            Some("c.pdf: the file is empty (0 bytes)")
        );
        assert_eq!(skipped.reason.as_deref(), Some("target_has_name_size"));
        assert_eq!(
            skipped.message.as_deref(),
            Some("the target has D/d.txt with the same size")
        );
        assert_eq!(skipped.changed_at, "2020-09-13T12:26:40Z");
        assert_eq!(dup.duplicate_of, Some(1));
        assert_eq!(dup.duplicate_of_source.as_deref(), Some("a.epub"));
        assert_eq!(dup.duplicate_of_target.as_deref(), Some("A/a.epub"));
        assert_eq!(
            dup.message.as_deref(),
            Some("same content as file #1 (a.epub)")
        );
        assert_eq!(rows[0].reason, None);
    }
}
