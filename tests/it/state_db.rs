//! State DBs written by earlier binaries (`tests/data/state-db/`) keep working: a migration
//! recorded by them resumes with the options it was recorded with, and a recorded value that
//! cannot be read is refused, never replaced by the defaults. One state DB, one process,
//! whatever path reaches it.

use crate::util::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

const FROM_DD8ADA3: &str = "tests/data/state-db/dd8ada3-run-epub-pdf.db";
const SAMPLE_EPUB: &str = "Chinua Segura/Silence Atlas 14 - Chinua Segura.epub";

/// A workspace whose state DB is `fixture`, re-pointed at the workspace's `lib/` (a copy of
/// `examples/library`, the fixture's source) and `out/`.
fn workspace_with_old_db(fixture: &str) -> Workspace {
    let ws = Workspace::empty();
    std::fs::remove_dir(ws.lib()).unwrap();
    let cp = Command::new("cp")
        .arg("-r")
        .arg(repo().join("examples/library"))
        .arg(ws.lib())
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::copy(repo().join(fixture), ws.state()).unwrap();
    let db = writable_db(&ws);
    db.execute(
        "UPDATE migration SET source = ?1, target = ?2",
        [
            format!("dir:{}", ws.lib().display()),
            format!("dir:{}", ws.out().display()),
        ],
    )
    .unwrap();
    // A checkout gives the files new times: give the rows their copies' times, so the
    // source reads as unchanged since the fixture was made.
    let refs: Vec<String> = db
        .prepare("SELECT source_ref FROM files")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for r in refs {
        let m = std::fs::metadata(ws.lib().join(&r)).unwrap();
        let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
        db.execute(
            "UPDATE files SET mtime_ns = ?1 WHERE source_ref = ?2",
            rusqlite::params![mtime_ns as i64, r],
        )
        .unwrap();
    }
    ws
}

fn writable_db(ws: &Workspace) -> rusqlite::Connection {
    rusqlite::Connection::open(ws.state()).unwrap()
}

fn recorded_options(ws: &Workspace) -> serde_json::Value {
    let json: String = ws
        .db()
        .query_row("SELECT options FROM migration", [], |r| r.get(0))
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

/// The fixture recorded `--formats epub,pdf`, `--layout '{author}/{title}.{ext}'` and
/// `--keep-duplicates`; `run` without arguments must go on with exactly those.
#[test]
fn a_migration_recorded_by_dd8ada3_resumes_with_its_recorded_options() {
    let ws = workspace_with_old_db(FROM_DD8ADA3);
    assert_eq!(
        recorded_options(&ws).get("version"),
        None,
        "a version-0 fixture"
    );
    // New since the fixture: a copy of a migrated EPUB (a content duplicate) and a text file.
    let copy = ws.lib().join("copy of Silence Atlas.epub");
    std::fs::copy(ws.lib().join(SAMPLE_EPUB), &copy).unwrap();
    std::fs::write(ws.lib().join("notes.txt"), "not an epub or a pdf\n").unwrap();

    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // --formats epub,pdf: the text file is not part of the migration.
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE source_ref LIKE '%.txt'"),
        0
    );
    // --keep-duplicates: the copy is placed, not skipped as a duplicate; --layout
    // '{author}/{title}.{ext}': one folder and the title (the default layout nests
    // `{title}/{title} - {author}.{ext}`).
    let (state, target_ref): (String, String) = ws
        .db()
        .query_row(
            "SELECT state, target_ref FROM files WHERE source_ref = 'copy of Silence Atlas.epub'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "uploaded");
    assert_eq!(target_ref, "Chinua Segura/Silence Atlas 14.epub");
    assert!(ws.out().join(&target_ref).is_file());
    // Nothing migrated before was sent again.
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM events WHERE to_state = 'uploaded' AND run_id > 1"),
        1
    );
    // Recorded again in the current shape, with the same meaning.
    let now = recorded_options(&ws);
    assert_eq!(now["version"], 1, "{now}");
    assert_eq!(now["layout"], "{author}/{title}.{ext}", "{now}");
    assert_eq!(now["formats"], "epub,pdf", "{now}");
    assert_eq!(now["keep_duplicates"], true, "{now}");
    // Migrated to the current schema in place (3: `files.planned_ref`, cleared once a row is
    // done).
    assert_eq!(
        ws.count("PRAGMA user_version"),
        bookferry::state::schema_version::SCHEMA_VERSION
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE planned_ref IS NOT NULL"),
        0
    );
}

/// Before, a recorded value that did not parse resumed silently with the default layout and
/// formats; now the run stops before doing anything and says what is wrong.
#[test]
fn recorded_options_that_do_not_parse_stop_the_run_before_anything_is_done() {
    let ws = workspace_with_old_db(FROM_DD8ADA3);
    std::fs::write(ws.lib().join("new.pdf"), b"%PDF-1.4\n%%EOF\n").unwrap();
    writable_db(&ws)
        .execute(
            "UPDATE migration SET options = '{\"layout\": \"{author}/{title}.{ext}\", \"formats\": 7}'",
            [],
        )
        .unwrap();
    let runs_before = ws.count("SELECT COUNT(*) FROM runs");
    for args in [&["run"][..], &["retry-failed"]] {
        let out = ws.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("options do not parse"), "{err}");
    }
    assert!(!Path::new(&ws.out()).exists(), "nothing may be written");
    assert_eq!(ws.count("SELECT COUNT(*) FROM runs"), runs_before);
}

/// A value the command line gets wrong is refused before the state DB is made or bound: the
/// corrected command then runs on a clean slate. (`--transfers` and `--buffer-memory` were
/// checked after the session opened, leaving a DB bound to the migration and a run record.)
#[test]
fn a_bad_option_on_a_first_run_creates_no_state_db() {
    let ws = Workspace::empty();
    std::fs::write(ws.lib().join("a.txt"), "a book\n").unwrap();
    for bad in [
        &["--transfers", "0"][..],
        &["--buffer-memory", "lots"],
        &["--bwlimit", "fast"],
    ] {
        let out = ws.migrate(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(!ws.state().exists(), "{bad:?} left a state DB");
        assert!(!ws.out().exists(), "{bad:?} created the target");
    }
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A second process reaching the running DB through a hard link (or a symlink) is refused as
/// one on the same path is, naming the holder; `status` works meanwhile, by either path.
/// (Before, the lock was `<path>.lock` beside the path given: the second process ran on the
/// same DB.)
#[test]
fn a_second_process_reaching_the_db_by_another_path_is_refused() {
    let ws = Workspace::with_corpus(400, 54);
    let hard = ws.path().join("elsewhere/hard.db");
    let soft = ws.path().join("elsewhere/soft.db");
    std::fs::create_dir_all(hard.parent().unwrap()).unwrap();
    let mut first = ws.migrate_cmd(&["--transfers", "1", "-q"]).spawn().unwrap();
    // Once the first holds the lock (its run record exists), hold the DB's write lock so the
    // first cannot end while the others start.
    let t0 = std::time::Instant::now();
    while count_or_zero(&ws.state(), "SELECT COUNT(*) FROM runs") == 0 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended early"
        );
        assert!(t0.elapsed().as_secs() < 30, "the first run records nothing");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A hard link reaches the DB file but not its `-wal` (named after the path): what `status`
    // reads through it is what was checkpointed. Checkpoint the schema and the run record now,
    // or under load the link may show a DB without tables yet.
    rusqlite::Connection::open(ws.state())
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .unwrap();
    std::fs::hard_link(ws.state(), &hard).unwrap();
    std::os::unix::fs::symlink(ws.state(), &soft).unwrap();
    let hold = WriteHold::take(&ws.state());
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended early"
    );
    let (lib, out) = (ws.lib(), ws.out());
    let mut refused = Vec::new();
    for other in [&hard, &soft] {
        let second = ws
            .cmd_with_state(
                other,
                &[
                    "run",
                    "--from",
                    lib.to_str().unwrap(),
                    "--to",
                    out.to_str().unwrap(),
                ],
            )
            .output()
            .unwrap();
        let status = ws
            .cmd_with_state(other, &["status", "--json"])
            .output()
            .unwrap();
        refused.push((other.clone(), second, status));
    }
    drop(hold);
    assert_eq!(first.wait().unwrap().code(), Some(0));
    for (other, second, status) in refused {
        assert_eq!(
            second.status.code(),
            Some(2),
            "{}: {}",
            other.display(),
            stderr(&second)
        );
        let err = stderr(&second);
        assert!(
            err.contains("in use by another bookferry process")
                && err.contains(&format!("pid {}", first.id())),
            "{}: {err}",
            other.display()
        );
        assert_eq!(status.status.code(), Some(0), "status: {}", stderr(&status));
    }
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM runs"),
        1,
        "only the first run was recorded"
    );
    assert_eq!(ws.target_files().len(), ws.unique_sha1s().len());
}
