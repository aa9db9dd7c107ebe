//! `bookferry forget`: the state DB becomes a dated backup beside it, the next run starts
//! fresh, the source and the target are never touched, and a DB in use is never forgotten.

use crate::util::*;
use std::io::Write;

fn backups(ws: &Workspace) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.to_string_lossy();
            // The DB itself; a `-wal`/`-shm` left beside it goes with it, under its name.
            name.contains("state.db.forgotten-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    found.sort();
    found
}

#[test]
fn forget_keeps_a_dated_backup_and_the_next_run_starts_fresh() {
    let ws = Workspace::with_corpus(6, 231);
    assert_eq!(ws.migrate(&[]).status.code(), Some(0));
    let (source, target) = (tree_sha1(&ws.lib()), tree_sha1(&ws.out()));

    // A mistyped second target is refused, and the refusal says how to start over.
    let other = ws.path().join("other");
    let refused = ws.run(&[
        "run",
        "--from",
        ws.lib().to_str().unwrap(),
        "--to",
        other.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let forget = format!(
        "{} --state {} forget`",
        bin().display(),
        ws.state().display()
    );
    assert!(stderr(&refused).contains(&forget), "{}", stderr(&refused));

    // Not on a terminal, forget needs --yes and changes nothing without it.
    let asked = ws.run(&["forget"]);
    assert_eq!(asked.status.code(), Some(2), "{}", stderr(&asked));
    assert!(stderr(&asked).contains("--yes"), "{}", stderr(&asked));
    assert!(ws.state().exists() && backups(&ws).is_empty());

    let out = ws.run(&["forget", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!ws.state().exists(), "the state DB is still there");
    let found = backups(&ws);
    assert_eq!(found.len(), 1, "{found:?}");
    let backup = rusqlite::Connection::open(&found[0]).unwrap();
    let uploaded: i64 = backup
        .query_row(
            "SELECT count(*) FROM files WHERE state = 'uploaded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(uploaded, 6, "the backup keeps the history");
    assert_eq!(tree_sha1(&ws.lib()), source, "the source changed");
    assert_eq!(tree_sha1(&ws.out()), target, "the target changed");

    let fresh = ws.run(&[
        "run",
        "--from",
        ws.lib().to_str().unwrap(),
        "--to",
        other.to_str().unwrap(),
    ]);
    assert_eq!(fresh.status.code(), Some(0), "{}", stderr(&fresh));
    assert_eq!(tree_sha1(&other).len(), 6);
}

#[test]
fn a_state_db_in_use_is_not_forgotten() {
    let ws = Workspace::with_corpus(3, 232);
    assert_eq!(ws.migrate(&[]).status.code(), Some(0));
    let mut lock = std::fs::OpenOptions::new()
        .write(true)
        .open(ws.path().join("state.db.lock"))
        .unwrap();
    lock.lock().unwrap();
    writeln!(lock, "4242 otherhost").unwrap();
    let out = ws.run(&["forget", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("pid 4242"), "{}", stderr(&out));
    assert!(ws.state().exists() && backups(&ws).is_empty());
}

#[test]
fn forget_without_a_state_db_says_so() {
    let ws = Workspace::empty();
    let out = ws.run(&["forget", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nothing to forget"),
        "{}",
        stderr(&out)
    );
}
