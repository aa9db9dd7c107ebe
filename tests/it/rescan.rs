//! Incremental scans: new files are added, changed files migrate again (replacing the copy this
//! migration placed), vanished files end `skipped` as `source_gone` or, if already migrated,
//! stay done with `source_gone` noted; a source that disappeared whole stops the run, touching
//! no row.

use crate::util::*;

#[test]
fn rescan_after_modifying_adding_and_deleting_source_files() {
    let ws = Workspace::with_corpus(40, 31);
    // A file recorded by a scan, then deleted before it is migrated.
    std::fs::write(ws.lib().join("Early Bird - Ann Author.txt"), "soon gone").unwrap();
    let out = ws.run(&["scan", "--from", ws.lib().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_file(ws.lib().join("Early Bird - Ann Author.txt")).unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a file removed from the source is no failure: {}",
        stderr(&out)
    );
    let (state, reason, gone): (String, String, i64) = ws
        .db()
        .query_row(
            "SELECT state, skip_reason, source_gone FROM files WHERE source_ref = 'Early Bird - Ann Author.txt'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str(), gone),
        ("skipped", "source_gone", 1)
    );

    // Modify one migrated file, delete another, add a new one.
    let pick = |i: usize| {
        ws.manifest
            .iter()
            .filter(|e| !e.path.starts_with("duplicates"))
            .nth(i)
            .unwrap()
            .clone()
    };
    let (modified, deleted) = (pick(0), pick(1));
    let target_of = |p: &str| -> String {
        ws.db()
            .query_row(
                "SELECT target_ref FROM files WHERE source_ref = ?1",
                [p],
                |r| r.get(0),
            )
            .unwrap()
    };
    let modified_target = target_of(&modified.path);
    let deleted_target = target_of(&deleted.path);
    let bytes = append_chapter(&ws.lib().join(&modified.path));
    std::fs::remove_file(ws.lib().join(&deleted.path)).unwrap();
    std::fs::write(ws.lib().join("Late Arrival - Bo Writer.txt"), "new book").unwrap();

    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The changed file migrated again, replacing our own copy in place.
    assert_eq!(target_of(&modified.path), modified_target);
    assert_eq!(
        sha1_file(&ws.out().join(&modified_target)),
        hex(&sha1_of(&bytes))
    );
    assert_eq!(ws.count(&format!("SELECT COUNT(*) FROM events e JOIN files f ON f.id = e.file_id WHERE f.source_ref = '{}' AND e.to_state = 'hashed'", modified.path.replace('\'', "''"))), 2);
    // Its history names the place of the copy it had; no `uploaded` event repeats the row's
    // `target_ref` (the row holds it).
    let again: String = ws
        .db()
        .query_row(
            "SELECT e.detail FROM events e JOIN files f ON f.id = e.file_id
             WHERE f.source_ref = ?1 AND e.from_state = 'uploaded'",
            [&modified.path],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        again,
        format!(
            "source file changed (size or mtime); migrating it again (placed at {modified_target})"
        )
    );
    assert_eq!(
        ws.count(
            "SELECT COUNT(*) FROM events e JOIN files f ON f.id = e.file_id
             WHERE e.to_state = 'uploaded' AND instr(e.detail, f.target_ref) > 0"
        ),
        0
    );
    // The deleted, already migrated file stays done, noted gone; its copy stays.
    let (state, gone): (String, i64) = ws
        .db()
        .query_row(
            "SELECT state, source_gone FROM files WHERE source_ref = ?1",
            [&deleted.path],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), gone), ("uploaded", 1));
    assert!(ws.out().join(&deleted_target).is_file());
    // The new file arrived.
    assert!(ws
        .out()
        .join("Bo Writer/Late Arrival/Late Arrival - Bo Writer.txt")
        .is_file());
    assert_event_histories_valid(&ws);
    assert_status_adds_up(&ws.status());
}

/// Rows a dry run left hashed (`metadata_cached`) whose files then change or vanish, while new
/// files arrive: the run's scan and pipeline go at once, yet a changed file is hashed again and
/// its new bytes migrate, and a vanished one is skipped (`source_gone`); no move is refused as
/// stale.
#[test]
fn rows_left_by_a_dry_run_whose_files_changed_migrate_their_new_bytes() {
    let ws = Workspace::with_corpus(30, 41);
    let out = ws.migrate(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = |sql: &str| -> String { ws.db().query_row(sql, [], |r| r.get(0)).unwrap() };
    // Rows of the lowest ids, which a claim in id order would take first.
    let cached = "SELECT source_ref FROM files WHERE state = 'metadata_cached' ORDER BY id LIMIT 1";
    let changed = first(cached);
    let vanished = first(&format!("{cached} OFFSET 1"));
    let bytes = append_chapter(&ws.lib().join(&changed));
    std::fs::remove_file(ws.lib().join(&vanished)).unwrap();
    // Enough new files that the scan commits several batches while the pipeline runs.
    let more = ws.path().join("more");
    make_corpus(&more, 400, 42, 4);
    std::fs::rename(&more, ws.lib().join("more")).unwrap();

    let out = ws.run(&["run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the vanished file is skipped: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("stale"), "{}", stderr(&out));
    let (state, blake3, target): (String, String, String) = ws
        .db()
        .query_row(
            "SELECT state, blake3, target_ref FROM files WHERE source_ref = ?1",
            [&changed],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(state, "uploaded");
    assert_eq!(blake3, blake3_of(&bytes));
    assert_eq!(blake3_file(&ws.out().join(&target)), blake3);
    let hashed = ws.count(&format!(
        "SELECT COUNT(*) FROM events e JOIN files f ON f.id = e.file_id
         WHERE f.source_ref = '{}' AND e.to_state = 'hashed'",
        changed.replace('\'', "''")
    ));
    assert_eq!(
        hashed, 2,
        "hashed by the dry run, then again after the change"
    );
    let (state, reason): (String, String) = ws
        .db()
        .query_row(
            "SELECT state, skip_reason FROM files WHERE source_ref = ?1",
            [&vanished],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("skipped", "source_gone")
    );
    assert!(ws.count("SELECT COUNT(*) FROM files WHERE source_ref LIKE 'more/%'") >= 400);
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state NOT IN ('uploaded', 'skipped', 'failed')"),
        0
    );
    assert_event_histories_valid(&ws);
    assert_status_adds_up(&ws.status());
}

fn sha1_of(b: &[u8]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    Sha1::digest(b).to_vec()
}

#[test]
fn a_scan_killed_half_way_resumes_past_the_folders_it_finished() {
    let ws = Workspace::with_corpus_sized(3000, 32, 4);
    let lib = ws.lib();
    let mut resumed = false;
    for _ in 0..5 {
        let mut child = ws
            .cmd(&["scan", "--from", lib.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let walked =
            |ws: &Workspace| count_or_zero(&ws.state(), "SELECT COUNT(*) FROM scan_progress");
        while walked(&ws) < 3 && t0.elapsed().as_secs() < 30 && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let killed = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        child.wait().unwrap();
        if killed && walked(&ws) > 0 {
            let out = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert!(stderr(&out).contains("resumed past"), "{}", stderr(&out));
            resumed = true;
            break;
        }
        std::fs::remove_file(ws.state()).ok();
    }
    assert!(resumed, "no kill landed during the scan in 5 tries");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files"),
        ws.manifest.len() as i64
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM scan_progress"),
        0,
        "a finished scan clears its progress"
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'failed'"),
        0,
        "resumed folders counted as seen"
    );
}

/// Change a source file (its size and mtime too): append a chapter. Returns its new bytes.
fn append_chapter(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes.extend_from_slice(b"\nan appended chapter\n");
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// One row per source file: (source_ref, state, skip_reason, error_kind).
fn row_states(ws: &Workspace) -> Vec<(String, String, Option<String>, Option<String>)> {
    ws.db()
        .prepare("SELECT source_ref, state, skip_reason, error_kind FROM files ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A file deleted, and one renamed, after the scan and before they were migrated; and a row a
/// run before left `failed`/`source_missing` (its file vanished under the hash stage). None of
/// them is a failure of the migration: the run ends `skipped`/`source_gone` for each (with an
/// `events` row), migrates the renamed file under its new name, exits 0, and `status` lists the
/// reason; `retry-failed` has nothing to do. A file that comes back is migrated. Before, the
/// rows went (or stayed) `failed`/`source_missing` and every later run exited 1.
#[test]
fn files_removed_or_renamed_before_migration_end_skipped_as_source_gone_and_the_run_exits_0() {
    let ws = Workspace::with_corpus(12, 57);
    let lib = ws.lib();
    for (name, text) in [
        ("Deleted - Ann Author.txt", "deleted"),
        ("Renamed - Bo Writer.txt", "renamed"),
        ("Under Hash - Cy Poet.txt", "under hash"),
    ] {
        std::fs::write(lib.join(name), text).unwrap();
    }
    let out = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A run before this one failed this row as the hash stage does when the file vanished.
    let db = rusqlite::Connection::open(ws.state()).unwrap();
    db.execute(
        "UPDATE files SET state = 'failed', failed_from = 'checked', error_kind = 'source_missing',
             error = 'Under Hash - Cy Poet.txt: source file vanished before it was migrated'
         WHERE source_ref = 'Under Hash - Cy Poet.txt'",
        [],
    )
    .unwrap();
    db.execute(
        "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
         SELECT id, NULL, 0, 'pending', 'failed', 'vanished' FROM files
         WHERE source_ref = 'Under Hash - Cy Poet.txt'",
        [],
    )
    .unwrap();
    drop(db);
    let deleted = std::fs::read(lib.join("Deleted - Ann Author.txt")).unwrap();
    std::fs::remove_file(lib.join("Deleted - Ann Author.txt")).unwrap();
    std::fs::remove_file(lib.join("Under Hash - Cy Poet.txt")).unwrap();
    std::fs::rename(
        lib.join("Renamed - Bo Writer.txt"),
        lib.join("Renamed Again - Bo Writer.txt"),
    )
    .unwrap();

    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = row_states(&ws);
    let gone = |r: &str| {
        (
            r.to_string(),
            "skipped".to_string(),
            Some("source_gone".to_string()),
            None,
        )
    };
    for r in [
        "Deleted - Ann Author.txt",
        "Renamed - Bo Writer.txt",
        "Under Hash - Cy Poet.txt",
    ] {
        assert!(rows.contains(&gone(r)), "{r}: {rows:?}");
        let events = ws.count(&format!(
            "SELECT COUNT(*) FROM events e JOIN files f ON f.id = e.file_id
             WHERE f.source_ref = '{r}' AND e.to_state = 'skipped' AND e.detail LIKE '%source_gone%'"
        ));
        assert_eq!(events, 1, "{r}: one events row");
    }
    assert!(ws
        .out()
        .join("Bo Writer/Renamed Again/Renamed Again - Bo Writer.txt")
        .is_file());
    let s = ws.status();
    assert_eq!(s["skips"]["source_gone"], 3, "{s}");
    assert_eq!(s["states"]["failed"], 0, "{s}");
    let text = ws.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("source_gone: 3"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let retry = ws.run(&["retry-failed"]);
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
    let again = ws.run(&["run"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));

    // The deleted file comes back as it was: it is migrated now.
    std::fs::write(lib.join("Deleted - Ann Author.txt"), &deleted).unwrap();
    let back = ws.run(&["run"]);
    assert_eq!(back.status.code(), Some(0), "{}", stderr(&back));
    let (state, reason, gone): (String, Option<String>, i64) = ws
        .db()
        .query_row(
            "SELECT state, skip_reason, source_gone FROM files WHERE source_ref = 'Deleted - Ann Author.txt'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), reason, gone), ("uploaded", None, 0));
    assert!(ws
        .out()
        .join("Ann Author/Deleted/Deleted - Ann Author.txt")
        .is_file());
    assert_event_histories_valid(&ws);
    assert_status_adds_up(&ws.status());
}

/// The whole source gone (a folder removed) or empty (a drive not mounted: an empty mount
/// point) is a hard error: exit 2, and no row, event or run counter of the migration changes,
/// whether the rows were still to do or already migrated. The first held before; the second
/// failed every row not yet migrated as `source_missing` (and flagged every migrated one).
#[test]
fn a_source_that_disappeared_whole_stops_with_exit_2_and_touches_no_row() {
    let ws = Workspace::with_corpus(10, 58);
    let lib = ws.lib();
    let hidden = ws.path().join("unmounted");
    let snapshot = |ws: &Workspace| {
        let rows: Vec<(i64, String, Option<String>, i64, i64)> = ws
            .db()
            .prepare("SELECT id, state, error_kind, source_gone, updated_at FROM files ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (rows, ws.count("SELECT COUNT(*) FROM events"))
    };
    let out = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for migrated in [false, true] {
        if migrated {
            let out = ws.migrate(&[]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        }
        let before = snapshot(&ws);
        assert!(!before.0.is_empty());
        // Removed whole.
        std::fs::rename(&lib, &hidden).unwrap();
        let out = ws.migrate(&[]);
        assert_eq!(out.status.code(), Some(2), "removed: {}", stderr(&out));
        assert_eq!(snapshot(&ws), before, "removed: rows changed");
        // An empty mount point.
        std::fs::create_dir(&lib).unwrap();
        let out = ws.migrate(&[]);
        assert_eq!(out.status.code(), Some(2), "empty: {}", stderr(&out));
        assert!(stderr(&out).contains("not mounted"), "{}", stderr(&out));
        assert_eq!(snapshot(&ws), before, "empty: rows changed");
        let out = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "scan, empty: {}", stderr(&out));
        assert_eq!(snapshot(&ws), before, "scan, empty: rows changed");
        std::fs::remove_dir(&lib).unwrap();
        std::fs::rename(&hidden, &lib).unwrap();
    }
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "back: {}", stderr(&out));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE source_gone = 1"),
        0
    );
}
