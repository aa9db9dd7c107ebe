//! Incremental scans: new files are added, changed files migrate again (replacing the copy this
//! migration placed), vanished files fail (`source_missing`) or, if already migrated, stay done
//! with `source_gone` noted.

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
        Some(1),
        "a vanished file fails the run: {}",
        stderr(&out)
    );
    let (state, kind, err): (String, String, String) = ws
        .db()
        .query_row(
            "SELECT state, error_kind, error FROM files WHERE source_ref = 'Early Bird - Ann Author.txt'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), kind.as_str()),
        ("failed", "source_missing")
    );
    assert!(err.contains("Early Bird - Ann Author.txt"), "{err}");

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
    assert_eq!(
        out.status.code(),
        Some(1),
        "still the one failure: {}",
        stderr(&out)
    );
    // The changed file migrated again, replacing our own copy in place.
    assert_eq!(target_of(&modified.path), modified_target);
    assert_eq!(
        sha1_file(&ws.out().join(&modified_target)),
        hex(&sha1_of(&bytes))
    );
    assert_eq!(ws.count(&format!("SELECT COUNT(*) FROM events e JOIN files f ON f.id = e.file_id WHERE f.source_ref = '{}' AND e.to_state = 'hashed'", modified.path.replace('\'', "''"))), 2);
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
/// its new bytes migrate, and a vanished one fails; no move is refused as stale.
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
        Some(1),
        "the vanished file fails: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("stale"), "{}", stderr(&out));
    let (state, sha1, target): (String, String, String) = ws
        .db()
        .query_row(
            "SELECT state, sha1, target_ref FROM files WHERE source_ref = ?1",
            [&changed],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(state, "uploaded");
    assert_eq!(sha1, hex(&sha1_of(&bytes)));
    assert_eq!(sha1_file(&ws.out().join(&target)), sha1);
    let hashed = ws.count(&format!(
        "SELECT COUNT(*) FROM events e JOIN files f ON f.id = e.file_id
         WHERE f.source_ref = '{}' AND e.to_state = 'hashed'",
        changed.replace('\'', "''")
    ));
    assert_eq!(
        hashed, 2,
        "hashed by the dry run, then again after the change"
    );
    let (state, kind): (String, String) = ws
        .db()
        .query_row(
            "SELECT state, error_kind FROM files WHERE source_ref = ?1",
            [&vanished],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), kind.as_str()),
        ("failed", "source_missing")
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
