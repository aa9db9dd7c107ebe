//! The guard rails: one process at a time, one migration per DB, the state DB never inside the
//! source or target, never one from a newer bookferry; a target never in or around the source.

use crate::util::*;
use std::io::Write;

#[test]
fn a_second_process_is_refused_naming_the_holder() {
    let ws = Workspace::with_corpus(5, 51);
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(ws.path().join("state.db.lock"))
        .unwrap();
    lock.lock().unwrap();
    writeln!(lock, "4242 otherhost").unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pid 4242") && err.contains("otherhost"),
        "{err}"
    );
    drop(lock);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn two_real_processes_on_one_state_db() {
    let ws = Workspace::with_corpus(400, 52);
    let lib = ws.lib();
    let out_dir = ws.out();
    let mut first = ws
        .cmd(&[
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            out_dir.to_str().unwrap(),
            "--transfers",
            "1",
            "-q",
        ])
        .spawn()
        .unwrap();
    // Wait until the first holds the lock (its run record exists), then hold the state DB's
    // write lock: the first cannot end while the second starts.
    let t0 = std::time::Instant::now();
    while count_or_zero(&ws.state(), "SELECT COUNT(*) FROM runs") == 0 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before its run record could be seen"
        );
        assert!(t0.elapsed().as_secs() < 30, "the first run records nothing");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let hold = WriteHold::take(&ws.state());
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended before the second could start"
    );
    let second = ws.migrate(&[]);
    drop(hold);
    let first_status = first.wait().unwrap();
    assert_eq!(first_status.code(), Some(0));
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("pid {}", first.id())),
        "{}",
        stderr(&second)
    );
    assert_eq!(ws.target_files().len(), ws.unique_sha1s().len());
}

#[test]
fn a_state_db_inside_the_source_or_target_is_refused() {
    let ws = Workspace::with_corpus(5, 53);
    let (lib, out_dir) = (ws.lib(), ws.out());
    for (inside, what) in [
        (lib.join("state.db"), "inside the source"),
        (out_dir.join("x/state.db"), "inside the target"),
    ] {
        let out = ws
            .cmd_with_state(
                &inside,
                &[
                    "run",
                    "--from",
                    lib.to_str().unwrap(),
                    "--to",
                    out_dir.to_str().unwrap(),
                ],
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(what), "{}", stderr(&out));
        assert!(!inside.exists(), "the refused state DB was created {what}");
    }
}

#[test]
fn a_target_that_is_in_or_around_the_source_is_refused_and_the_source_left_alone() {
    let ws = Workspace::with_corpus(6, 57);
    let lib = ws.lib();
    let before = tree_snapshot(&lib);
    let inside = lib.join("migrated");
    let elsewhere = tempfile::tempdir().unwrap();
    let state = elsewhere.path().join("state.db");
    for (to, what) in [
        (lib.display().to_string(), "is the source"),
        (format!("calibre:{}", lib.display()), "is the source"),
        (inside.display().to_string(), "lies inside the source"),
        (
            format!("calibre:{}", inside.display()),
            "lies inside the source",
        ),
        (ws.path().display().to_string(), "holds the source"),
    ] {
        let out = ws
            .cmd_with_state(
                &state,
                &["run", "--from", lib.to_str().unwrap(), "--to", &to],
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--to {to}: {}", stderr(&out));
        assert!(stderr(&out).contains(what), "--to {to}: {}", stderr(&out));
        assert_eq!(tree_snapshot(&lib), before, "--to {to} changed the source");
    }
}

#[test]
fn a_state_db_belongs_to_one_migration() {
    let ws = Workspace::with_corpus(5, 54);
    assert_eq!(ws.migrate(&[]).status.code(), Some(0));
    let other = ws.path().join("elsewhere");
    let out = ws.run(&[
        "run",
        "--from",
        ws.lib().to_str().unwrap(),
        "--to",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("belongs to the migration") && err.contains("--state"),
        "{err}"
    );
    assert!(!other.exists());
}

#[test]
fn a_state_db_from_a_newer_bookferry_is_refused() {
    let ws = Workspace::with_corpus(5, 55);
    assert_eq!(ws.migrate(&[]).status.code(), Some(0));
    rusqlite::Connection::open(ws.state())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    for args in [vec!["run"], vec!["status"]] {
        let out = ws.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("newer bookferry"), "{}", stderr(&out));
    }
}
