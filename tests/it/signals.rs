//! SIGTERM / SIGINT: the run stops claiming, finishes or releases what is in flight, records the
//! run as interrupted and exits 3; the next run completes the migration.

use crate::util::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn landed(ws: &Workspace) -> i64 {
    count_or_zero(
        &ws.state(),
        "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')",
    )
}

fn interrupt_mid_run(signal: i32) {
    let ws = Workspace::with_corpus_sized(2500, 61, 16);
    let mut child = ws
        .migrate_cmd(&["--transfers", "1", "--checkers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while landed(&ws) < 20
        && t0.elapsed() < Duration::from_secs(60)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if child.try_wait().unwrap().is_some() {
        panic!("the run ended before it could be interrupted; make the corpus larger");
    }
    // `status` reads the state DB from another process while the run writes it.
    let live = ws.status();
    assert_status_adds_up(&live);
    assert_eq!(live["run"]["running"], true, "{live}");
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let sent = Instant::now();
    let out_put = child.wait_with_output().unwrap();
    // Generous bound (CI is slow); the promise is "within 10 s" of in-flight work.
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "took {:?} to stop",
        sent.elapsed()
    );
    let code = out_put.status.code();
    eprintln!(
        "interrupted run exited with {code:?} after {} files",
        landed(&ws)
    );
    if code == Some(0) {
        // It finished all the work before the signal was handled: nothing to check but the end.
        assert_eq!(landed(&ws) as usize, ws.manifest.len());
        return;
    }
    assert_eq!(
        code,
        Some(3),
        "{}",
        String::from_utf8_lossy(&out_put.stderr)
    );
    let (exit_code, outcome): (i64, String) = ws
        .db()
        .query_row(
            "SELECT exit_code, outcome FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((exit_code, outcome.as_str()), (3, "interrupted"));
    assert_eq!(ws.count("SELECT COUNT(*) FROM files WHERE run_id IS NOT NULL AND state IN ('pending','checked','hashed','metadata_cached')"), 0, "rows left held by the interrupted run");
    assert!((landed(&ws) as usize) < ws.manifest.len());

    let again = ws.run(&["run"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(ws.target_files().len(), ws.unique_sha1s().len());
    assert_eq!(ws.count("SELECT COUNT(*) FROM (SELECT file_id FROM events WHERE to_state = 'hashed' GROUP BY file_id HAVING COUNT(*) > 1)"), 0);
    assert_event_histories_valid(&ws);
}

#[test]
fn sigterm_stops_cleanly_with_exit_3_and_the_next_run_finishes() {
    interrupt_mid_run(libc::SIGTERM);
}

#[test]
fn sigint_stops_cleanly_with_exit_3() {
    interrupt_mid_run(libc::SIGINT);
}
