//! Faults and security, end to end with the real binary: an upload server that stalls or goes
//! down mid-run (briefly, and past the retry budget), a target folder and the state DB's own
//! disk filling up, a state DB made by a bare `sqlite3` (user_version 0), a symlink planted in
//! the target folder and metadata that tries to climb out of it, TLS certificate checks against
//! a self-signed HTTPS server, and a read-only source that must come out of a run untouched.
//!
//! The disk-full tests mount small tmpfs filesystems, so they need root (as in CI); elsewhere
//! they say so and pass without doing anything. `BOOKFERRY_LONG_TESTS=1` makes the mid-run
//! outage last 30 s instead of 3 s.

use crate::protocol_server::{Faults, ServerConfig, TestServer};
use crate::util::*;
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A spawned bookferry whose output goes to files under `<workspace>/outputs/`.
struct Running {
    child: Child,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Running {
    fn start(ws: &Workspace, mut cmd: Command) -> Running {
        let dir = ws.path().join("outputs");
        std::fs::create_dir_all(&dir).unwrap();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let out_path = dir.join(format!("{n}.stdout"));
        let err_path = dir.join(format!("{n}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("bookferry starts");
        Running {
            child,
            out_path,
            err_path,
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the end, with a deadline (a hung client fails the test instead of hanging CI).
    fn wait(mut self, timeout: Duration) -> Out {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "bookferry did not finish within {timeout:?}; stderr:\n{}",
                    std::fs::read_to_string(&self.err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Out {
            code: status.code(),
            stdout: std::fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err_path).unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Only reached with the child still running when a test panics: do not leave it behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const DEADLINE: Duration = Duration::from_secs(300);

fn exec(ws: &Workspace, cmd: Command) -> Out {
    Running::start(ws, cmd).wait(DEADLINE)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `[pre...] run --from lib --to TO extra...` with state DB `state`.
fn run_cmd(ws: &Workspace, state: &Path, pre: &[&str], to: &str, extra: &[&str]) -> Command {
    let lib = ws.lib();
    let mut args: Vec<&str> = pre.to_vec();
    args.extend(["run", "--from", s(&lib), "--to", to]);
    args.extend_from_slice(extra);
    ws.cmd_with_state(state, &args)
}

fn long_tests() -> bool {
    std::env::var_os("BOOKFERRY_LONG_TESTS").is_some()
}

/// One row of `files`, with the first author of its cached metadata.
#[derive(Debug, Clone)]
struct Row {
    state: String,
    error_kind: Option<String>,
    error: Option<String>,
    target_ref: Option<String>,
    /// Recorded for an HTTP target only (a folder needs none).
    sha1: Option<String>,
    blake3: Option<String>,
    author: Option<String>,
}

fn rows_of(db: &Path) -> BTreeMap<String, Row> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = c
        .prepare(
            "SELECT source_ref, state, error_kind, error, target_ref, sha1,
                    json_extract(metadata, '$.authors[0]'), blake3 FROM files",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Row {
                    state: r.get(1)?,
                    error_kind: r.get(2)?,
                    error: r.get(3)?,
                    target_ref: r.get(4)?,
                    sha1: r.get(5)?,
                    blake3: r.get(7)?,
                    author: r.get(6)?,
                },
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// `PRAGMA integrity_check` of a state DB (read-only: the check must not repair anything).
fn integrity(db: &Path) -> String {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = c.prepare("PRAGMA integrity_check").unwrap();
    let lines: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    lines.join("\n")
}

fn one_i64(db: &Path, sql: &str) -> i64 {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn one_text(db: &Path, sql: &str) -> Option<String> {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// A migration to the upload server is complete: every row final, each of the library's
/// contents held by the server and stored exactly once, nothing malformed sent, histories valid.
fn assert_http_complete(ws: &Workspace, state: &Path, srv: &TestServer) {
    let rows = rows_of(state);
    assert_eq!(rows.len(), ws.manifest.len(), "one row per source file");
    let stored = srv.stored();
    for e in &ws.manifest {
        let r = &rows[&e.path];
        assert!(
            r.state == "uploaded" || r.state == "skipped",
            "{}: ended in {} ({:?}: {:?})",
            e.path,
            r.state,
            r.error_kind,
            r.error
        );
        assert!(
            stored.contains_key(&e.sha1),
            "{}: not on the server",
            e.path
        );
    }
    let held: BTreeSet<String> = stored.keys().cloned().collect();
    assert_eq!(
        held,
        ws.unique_sha1s(),
        "the server holds exactly the library"
    );
    let st = srv.stats();
    let twice: Vec<_> = st
        .stored_count_by_sha1
        .iter()
        .filter(|(_, &n)| n != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "contents stored more than once: {twice:?}"
    );
    assert_eq!(
        st.status_counts.get(&400),
        None,
        "malformed requests: {:?}",
        st.status_counts
    );
    assert_eq!(st.sha1_mismatches, 0);
    assert_eq!(st.part_order_violations, 0);
    if state == ws.state() {
        assert_event_histories_valid(ws);
        let status = ws.status();
        assert_status_adds_up(&status);
        assert_eq!(status["states"]["failed"], 0);
    }
}

/// A migration to `out/` is complete: every row final, each content of the library in the
/// target exactly once (and nothing else, no temp file), every uploaded row's bytes at its
/// target_ref.
fn assert_folder_complete(ws: &Workspace, state: &Path) {
    let rows = rows_of(state);
    assert_eq!(rows.len(), ws.manifest.len(), "one row per source file");
    for e in &ws.manifest {
        let r = &rows[&e.path];
        match r.state.as_str() {
            "uploaded" => {
                let t = ws.out().join(r.target_ref.as_deref().expect("target_ref"));
                assert_eq!(
                    sha1_file(&t),
                    e.sha1,
                    "{}: bytes at {}",
                    e.path,
                    t.display()
                );
            }
            "skipped" => {}
            other => panic!("{}: ended in {other} ({:?})", e.path, r.error),
        }
    }
    let target = ws.target_files();
    assert!(
        !target.keys().any(|k| k.contains(".bookferry-tmp")),
        "temp files left: {target:?}"
    );
    let mut per_sha: BTreeMap<&str, usize> = BTreeMap::new();
    for sha in target.values() {
        *per_sha.entry(sha).or_default() += 1;
    }
    let twice: Vec<_> = per_sha.iter().filter(|(_, &n)| n != 1).collect();
    if !twice.is_empty() {
        // Say where each copy is and which rows hold that content, with their histories.
        let db = Connection::open_with_flags(state, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut report = String::new();
        for (sha, _) in &twice {
            let paths: Vec<_> = target
                .iter()
                .filter(|(_, v)| v == *sha)
                .map(|(k, _)| k)
                .collect();
            report.push_str(&format!("\n{sha} at {paths:?}"));
            let mut st = db
                .prepare(
                    "SELECT f.id, f.source_ref, f.state, f.target_ref, e.run_id, e.from_state,
                            e.to_state, e.detail
                     FROM files f JOIN events e ON e.file_id = f.id WHERE f.sha1 = ?1
                     ORDER BY f.id, e.id",
                )
                .unwrap();
            let lines: Vec<String> = st
                .query_map([sha], |r| {
                    Ok(format!(
                        "\n  #{} {} [{}] {:?}: run {} {:?} → {} ({:?})",
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<String>>(7)?
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            report.push_str(&lines.concat());
        }
        panic!("contents placed more than once:{report}");
    }
    let placed: BTreeSet<String> = per_sha.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        placed,
        ws.unique_sha1s(),
        "the target holds exactly the library"
    );
}

/// Every row the state DB calls `uploaded` is really in `out/` with its bytes: the DB never
/// claims more than the target holds.
fn assert_recorded_files_present(ws: &Workspace, state: &Path) {
    for (path, r) in rows_of(state) {
        if r.state == "uploaded" {
            let t = ws.out().join(r.target_ref.as_deref().expect("target_ref"));
            assert!(
                t.is_file(),
                "{path}: recorded at {} but absent",
                t.display()
            );
            assert_eq!(
                Some(blake3_file(&t)),
                r.blake3,
                "{path}: bytes at {}",
                t.display()
            );
        }
    }
}

/// Run, then `retry-failed` while rows fail with `transient_exhausted`, until exit 0.
/// Exit 5 (the server looked gone) is never expected here.
fn run_until_done(ws: &Workspace, first: Command, retry_extra: &[&str]) -> usize {
    let mut out = exec(ws, first);
    let mut extra_runs = 0;
    while out.code == Some(1) && extra_runs < 5 {
        for (path, r) in rows_of(&ws.state()) {
            if r.state == "failed" {
                assert_eq!(
                    r.error_kind.as_deref(),
                    Some("transient_exhausted"),
                    "{path}: {:?}",
                    r.error
                );
            }
        }
        extra_runs += 1;
        let mut args = vec!["retry-failed"];
        args.extend_from_slice(retry_extra);
        out = exec(ws, ws.cmd(&args));
    }
    assert_eq!(out.code, Some(0), "not done: {}", out.both());
    extra_runs
}

/// A small tmpfs mounted on a folder for the length of a test; unmounted on drop (also when
/// the test panics). `None` when not root (mounting needs it): the caller skips, unless
/// `BOOKFERRY_REQUIRE_ROOT` is set (see [`have_root`]).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        if !have_root(&format!("mounting a tmpfs on {}", dir.display())) {
            return None;
        }
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(st.success(), "mount -t tmpfs on {} failed", dir.display());
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    /// Grow (or shrink) it in place, keeping its files.
    fn resize(&self, size: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("mount runs");
        assert!(st.success(), "remount of {} failed", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Every entry below `root` (folders, files, links): kind, mode, size, mtime, link target.
/// With [`tree_snapshot`] (bytes and mtimes of files) it proves a tree was not touched: no file
/// added, removed, renamed, rewritten or re-moded, no folder changed.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let link = std::fs::read_link(&p).ok();
            out.insert(
                rel,
                format!(
                    "{:o} {} {}.{} {:?}",
                    m.mode(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec(),
                    link
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    let m = std::fs::metadata(root).unwrap();
    out.insert(
        ".".into(),
        format!("{:o} {}.{}", m.mode(), m.mtime(), m.mtime_nsec()),
    );
    out
}

/// `chmod -R a-w` on drop-reversible terms: gives write back (to the owner) when dropped, so
/// the temp folder can be removed by a non-root user too.
struct ReadOnlyTree(PathBuf);

impl ReadOnlyTree {
    fn new(root: &Path) -> ReadOnlyTree {
        let st = Command::new("chmod")
            .arg("-R")
            .arg("a-w")
            .arg(root)
            .status()
            .unwrap();
        assert!(st.success());
        ReadOnlyTree(root.to_path_buf())
    }
}

impl Drop for ReadOnlyTree {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&self.0)
            .status();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Upload target: stalls longer than --stall-timeout

#[test]
fn http_stalls_past_the_stall_timeout_are_abandoned_retried_and_each_content_stored_once() {
    let ws = Workspace::with_corpus_sized(40, 81, 16);
    // A quarter of the requests sleep 3 s before replying (an upload: after storing it), longer
    // than --stall-timeout 2: the client must give up on them and try again.
    let srv = TestServer::start(ServerConfig {
        faults: Faults {
            stall: Some(Duration::from_secs(3)),
            p_stall: 0.25,
            seed: 0x57a11,
            ..Default::default()
        },
        ..Default::default()
    });
    let state = ws.state();
    let first = run_cmd(
        &ws,
        &state,
        &["-v"],
        &srv.base_url,
        &["--stall-timeout", "2", "--transfers", "4"],
    );
    let extra = run_until_done(&ws, first, &["--stall-timeout", "2", "--transfers", "4"]);
    eprintln!("stall test: {extra} retry-failed run(s)");

    assert_http_complete(&ws, &state, &srv);
    let st = srv.stats();
    assert!(st.injected_stalls > 0, "no stall was injected");
    // An upload stalls after the server stored it: the client gave up waiting for the reply,
    // sent it again, and the server answered "duplicate" instead of storing it twice.
    assert!(
        !st.duplicate_uploads_by_sha1.is_empty(),
        "no stalled upload was abandoned and sent again: {st:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Upload target: the server goes down mid-run

/// Start a run (2 transfers, `-vv`: debug, where refused connections are logged) and take the
/// server down once it has stored `after` contents, while the run is still going.
fn start_run_and_take_server_down(
    ws: &Workspace,
    srv: &TestServer,
    extra: &[&str],
    after: usize,
) -> Running {
    let mut args = vec!["--transfers", "2"];
    args.extend_from_slice(extra);
    let mut run = Running::start(ws, run_cmd(ws, &ws.state(), &["-vv"], &srv.base_url, &args));
    let t0 = Instant::now();
    while srv.stats().stored_count_by_sha1.len() < after {
        assert!(
            run.running(),
            "the run ended before {after} files were stored"
        );
        assert!(t0.elapsed() < DEADLINE, "no progress");
        std::thread::sleep(Duration::from_millis(3));
    }
    srv.set_down(true);
    assert!(
        run.running(),
        "the run finished before the server went down: the test proves nothing"
    );
    run
}

/// A server whose replies take 40 ms, so a run of 80 files is still going when it is taken
/// down after 10.
fn slow_server() -> TestServer {
    TestServer::start(ServerConfig {
        faults: Faults {
            stall: Some(Duration::from_millis(40)),
            p_stall: 1.0,
            seed: 1,
            ..Default::default()
        },
        ..Default::default()
    })
}

#[test]
fn http_server_down_for_a_while_mid_run_the_run_waits_and_completes() {
    // CI: 3 s, well inside the retry budget (with --retries 5 a file backs off at least 7.75 s
    // in all). Long: 30 s, with --retries 8 (at least 45 s of backoff).
    let (outage, retries) = if long_tests() {
        (Duration::from_secs(30), "8")
    } else {
        (Duration::from_secs(3), "5")
    };
    let ws = Workspace::with_corpus_sized(80, 82, 16);
    let srv = slow_server();
    let run = start_run_and_take_server_down(&ws, &srv, &["--retries", retries], 10);
    let held_when_down = srv.stats().stored_count_by_sha1.len();
    std::thread::sleep(outage);
    srv.set_down(false);
    let out = run.wait(DEADLINE);
    assert_eq!(
        out.code,
        Some(0),
        "a {outage:?} outage within the retry budget: {}",
        out.both()
    );
    assert!(
        held_when_down < ws.unique_sha1s().len(),
        "everything was stored before the outage"
    );
    // The run met the outage: requests refused while the server was down (logged at debug).
    assert!(
        out.stderr.contains("cannot connect"),
        "no connection error logged during the outage: {}",
        out.both()
    );
    assert_http_complete(&ws, &ws.state(), &srv);
    assert_eq!(one_i64(&ws.state(), "SELECT COUNT(*) FROM runs"), 1);
}

/// The server goes down mid-run and stays down: the run stops with exit 5 (`target_gone`);
/// once the server is back, a rerun finishes the job. With `strict`, the plain rerun must exit
/// 0; without, rows the stopped run left `failed` (`transient_exhausted`, could not connect) are
/// tolerated and taken up with `retry-failed` (see the report on the unreachable streak).
fn server_down_past_the_retry_budget(strict: bool) {
    let ws = Workspace::with_corpus_sized(80, 83, 16);
    let srv = slow_server();
    // --retries 2: a file gives up after about a second of refused connections, so the run
    // meets "several files in a row cannot reach the server" quickly.
    let run = start_run_and_take_server_down(&ws, &srv, &["--retries", "2"], 10);
    let out = run.wait(DEADLINE);
    assert_eq!(out.code, Some(5), "server gone: {}", out.both());
    let port = srv.addr.port().to_string();
    assert!(
        out.stderr.contains("cannot be reached") && out.stderr.contains(&port),
        "the message says the server cannot be reached and names it: {}",
        out.stderr
    );
    assert_eq!(
        one_text(
            &ws.state(),
            "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1"
        )
        .as_deref(),
        Some("target_gone")
    );
    assert_eq!(integrity(&ws.state()), "ok");
    let rows = rows_of(&ws.state());
    let stored = srv.stored();
    let left = rows
        .values()
        .filter(|r| r.state != "uploaded" && r.state != "skipped")
        .count();
    assert!(left > 0, "nothing left to do after the stop");
    for (path, r) in &rows {
        if r.state == "uploaded" {
            assert!(
                stored.contains_key(r.sha1.as_ref().unwrap()),
                "{path}: recorded as uploaded but the server lacks it"
            );
        }
    }
    let failed: Vec<_> = rows
        .iter()
        .filter(|(_, r)| r.state == "failed")
        .map(|(p, r)| (p.clone(), r.error_kind.clone(), r.error.clone()))
        .collect();

    // The server is back: a plain rerun finishes the job, each content stored once.
    srv.set_down(false);
    let mut again = exec(&ws, ws.cmd(&["run"]));
    if !strict && again.code == Some(1) {
        // Today: the first rows of the unreachable streak are left failed. Only those.
        for (path, kind, err) in &failed {
            assert_eq!(
                kind.as_deref(),
                Some("transient_exhausted"),
                "{path}: {err:?}"
            );
            assert!(
                err.as_deref().unwrap_or("").contains("cannot connect"),
                "{path}: {err:?}"
            );
        }
        assert_eq!(
            one_i64(
                &ws.state(),
                "SELECT COUNT(*) FROM files WHERE state = 'failed'"
            ),
            failed.len() as i64,
            "the rerun failed other rows: {}",
            again.both()
        );
        again = exec(&ws, ws.cmd(&["retry-failed"]));
    }
    assert_eq!(
        again.code,
        Some(0),
        "rerun after the server came back ({} row(s) were left failed by the stopped run: {failed:?}): {}",
        failed.len(),
        again.both()
    );
    assert_http_complete(&ws, &ws.state(), &srv);
}

#[test]
fn http_server_down_past_the_retry_budget_stops_with_exit_5_and_resumes_once_back() {
    server_down_past_the_retry_budget(false);
}

#[test]
fn http_server_down_past_the_retry_budget_a_plain_rerun_completes() {
    server_down_past_the_retry_budget(true);
}

// ---------------------------------------------------------------------------
// 3. Disk full: the target folder, then the state DB's own disk

#[test]
fn target_folder_disk_full_stops_with_exit_5_and_resumes_when_space_returns() {
    let ws = Workspace::with_corpus_sized(60, 84, 24);
    let unique_bytes: u64 = {
        let mut seen = BTreeSet::new();
        ws.manifest
            .iter()
            .filter(|e| seen.insert(e.sha1.clone()))
            .map(|e| e.size)
            .sum()
    };
    // Room for about a third of the library.
    let Some(fs) = Tmpfs::mount(&ws.out(), (unique_bytes / 3).max(64 * 1024)) else {
        return;
    };
    let out = exec(&ws, run_cmd(&ws, &ws.state(), &[], s(&ws.out()), &[]));
    assert_eq!(out.code, Some(5), "target full: {}", out.both());
    assert!(
        out.stderr.contains("No space left") && out.stderr.contains(s(&ws.out())),
        "the message says the target is full and where: {}",
        out.stderr
    );
    assert_eq!(
        one_text(
            &ws.state(),
            "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1"
        )
        .as_deref(),
        Some("target_full")
    );
    assert_eq!(integrity(&ws.state()), "ok");
    // No row failed for it (the condition concerns every file), none claims a missing file,
    // no temp file or partial copy is left under a final name.
    assert_eq!(
        one_i64(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state = 'failed'"
        ),
        0
    );
    assert_recorded_files_present(&ws, &ws.state());
    let unique = ws.unique_sha1s();
    for (rel, sha) in ws.target_files() {
        assert!(!rel.contains(".bookferry-tmp"), "temp file left: {rel}");
        assert!(unique.contains(&sha), "{rel}: a partial or foreign file");
    }
    let done = one_i64(
        &ws.state(),
        "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')",
    );
    assert!(
        (done as usize) < ws.manifest.len(),
        "everything fit: the test proves nothing"
    );

    // Space returns: the rerun completes, each content once.
    fs.resize(64 << 20);
    let again = exec(&ws, ws.cmd(&["run"]));
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert_folder_complete(&ws, &ws.state());
    assert_eq!(integrity(&ws.state()), "ok");
    assert_event_histories_valid(&ws);
}

#[test]
fn state_db_disk_full_stops_with_exit_5_keeps_the_db_sound_and_resumes() {
    let ws = Workspace::with_corpus_sized(1000, 85, 4);
    let statefs = ws.path().join("statefs");
    let Some(fs) = Tmpfs::mount(&statefs, 16 << 20) else {
        return;
    };
    let state = statefs.join("state.db");
    // A layout whose file names never equal a source file's name: with the default one, a TXT
    // placed but not recorded is found again by the cheap name+size check and skipped without
    // a hash, and then a byte-identical copy of it elsewhere in the library is placed a second
    // time (a bug of its own, reproduced by the ignored test
    // `a_copy_of_a_file_the_target_already_holds_by_name_and_size_is_not_placed_again`).
    let layout = ["--layout", "{author}/{title}/{title}.{ext}"];
    let mut run = Running::start(
        &ws,
        run_cmd(
            &ws,
            &state,
            &[],
            s(&ws.out()),
            &[&layout[..], &["--checkers", "1", "--transfers", "1"]].concat(),
        ),
    );
    // Once the run has recorded some files, fill the state DB's disk to the last byte.
    let done = |db: &Path| {
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while done(&state) < 20 {
        assert!(run.running(), "the run ended before recording 20 files");
        assert!(t0.elapsed() < DEADLINE, "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Hold the state DB's write lock while filling its disk: the run cannot finish meanwhile.
    let hold = WriteHold::take(&state);
    let recorded = hold.count("SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')");
    assert!(
        run.running() && (recorded as usize) < ws.manifest.len(),
        "the run finished before the disk could be filled"
    );
    let filler = statefs.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [vec![0x5au8; 64 << 10], vec![0x5au8; 512]] {
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
    }
    drop(hold);
    let out = run.wait(DEADLINE);
    assert_eq!(out.code, Some(5), "state DB disk full: {}", out.both());
    assert!(
        out.stderr.contains("state DB") && out.stderr.contains("full"),
        "the message says the state DB could not be written because its disk is full: {}",
        out.stderr
    );
    assert_eq!(
        integrity(&state),
        "ok",
        "the state DB is sound after the stop"
    );
    assert_recorded_files_present(&ws, &state);
    let recorded = one_i64(
        &state,
        "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')",
    );
    assert!(
        recorded >= 20,
        "work recorded before the disk filled was lost"
    );
    assert!(
        (recorded as usize) < ws.manifest.len(),
        "the run finished although the state DB's disk was full"
    );

    // Space returns: the rerun completes; files placed but not recorded are adopted, not copied
    // a second time.
    std::fs::remove_file(&filler).unwrap();
    let again = exec(&ws, ws.cmd_with_state(&state, &["run"]));
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert_eq!(integrity(&state), "ok");
    assert_folder_complete(&ws, &state);
    drop(fs);
}

#[test]
fn a_copy_of_a_file_the_target_already_holds_by_name_and_size_is_not_placed_again() {
    // What a stop that lost the record of placed files leaves behind (state DB disk full,
    // kill -9 between placing and committing): the target holds a TXT under its own name (a
    // TXT's layout name is its source name), and the library holds a byte-identical copy of it
    // under another name.
    let ws = Workspace::empty();
    let text = "It was a dark and stormy night; the rest is silence.\n".repeat(40);
    for rel in ["a/Night - Ann Smith.txt", "b/copy of Night - Ann Smith.txt"] {
        let p = ws.lib().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &text).unwrap();
    }
    let held = ws.out().join("Ann Smith/Night/Night - Ann Smith.txt");
    std::fs::create_dir_all(held.parent().unwrap()).unwrap();
    std::fs::write(&held, &text).unwrap();

    let out = exec(
        &ws,
        run_cmd(&ws, &ws.state(), &[], s(&ws.out()), &["--formats", "txt"]),
    );
    assert_eq!(out.code, Some(0), "{}", out.both());
    let target = ws.target_files();
    assert_eq!(
        target.len(),
        1,
        "the content is in the target once, and the copy is a skipped duplicate: {target:?}"
    );
}

// ---------------------------------------------------------------------------
// 4. A state DB from an older version

#[test]
fn an_empty_state_db_with_user_version_0_is_migrated_in_place() {
    // Version 0: a file a bare `sqlite3` made (no tables), or an empty file, is migrated through
    // every version. (A populated version 1 DB: `state_db::…dd8ada3…`.)
    let ws = Workspace::with_corpus_sized(12, 86, 8);
    let made_by_sqlite = ws.path().join("sqlite3-made.db");
    {
        let c = Connection::open(&made_by_sqlite).unwrap();
        c.execute_batch("CREATE TABLE t(x); DROP TABLE t; VACUUM;")
            .unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 0);
    }
    let empty_file = ws.path().join("empty.db");
    std::fs::write(&empty_file, b"").unwrap();
    for state in [&made_by_sqlite, &empty_file] {
        let out_dir = ws.path().join(format!(
            "out-{}",
            state.file_stem().unwrap().to_string_lossy()
        ));
        let out = exec(&ws, run_cmd(&ws, state, &[], s(&out_dir), &[]));
        assert_eq!(out.code, Some(0), "{}: {}", state.display(), out.both());
        let c = Connection::open_with_flags(state, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(
            v,
            bookferry::state::schema_version::SCHEMA_VERSION,
            "{}: migrated to the current schema",
            state.display()
        );
        assert_eq!(
            one_i64(
                state,
                "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')"
            ),
            ws.manifest.len() as i64
        );
        assert_eq!(integrity(state), "ok");
    }
}

// ---------------------------------------------------------------------------
// 5. The folder target never writes outside its root

/// An FB2 book with the given title and author (the format the corpus generator writes).
fn fb2_book(title: &str, author: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0">
<description><title-info><genre>prose</genre><author><first-name>{a}</first-name><last-name></last-name></author><book-title>{t}</book-title><lang>en</lang></title-info></description>
<body><section><p>{t} by {a}: a book whose metadata tries to leave the target.</p></section></body>
</FictionBook>
"#,
        a = esc(author),
        t = esc(title)
    )
}

#[test]
fn folder_target_never_writes_outside_its_root_not_through_a_planted_symlink_nor_by_metadata() {
    let ws = Workspace::with_corpus_sized(60, 87, 8);
    let ascii = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
    // The most common plain-ASCII first author (its folder name is the name itself).
    let mut by_author: BTreeMap<String, usize> = BTreeMap::new();
    for e in &ws.manifest {
        if let Some(a) = e.metadata["authors"][0].as_str() {
            if ascii(a) && e.format != "txt" {
                *by_author.entry(a.to_string()).or_default() += 1;
            }
        }
    }
    let author = by_author
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(a, _)| a.clone())
        .expect("an ASCII author");
    // Another book, by someone else, whose exact destination file is predictable.
    let victim_entry = ws
        .manifest
        .iter()
        .find(|e| {
            let a = e.metadata["authors"][0].as_str().unwrap_or("");
            let t = e.metadata["title"].as_str().unwrap_or("");
            e.format == "epub"
                && a != author
                && ascii(a)
                && ascii(t)
                && ws.manifest.iter().filter(|x| x.sha1 == e.sha1).count() == 1
        })
        .expect("an EPUB by another ASCII author")
        .clone();
    let (va, vt) = (
        victim_entry.metadata["authors"][0]
            .as_str()
            .unwrap()
            .to_string(),
        victim_entry.metadata["title"].as_str().unwrap().to_string(),
    );

    let outside = ws.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(ws.out()).unwrap();
    // out/<author> → outside: every book of that author would land outside through it.
    let author_link = ws.out().join(&author);
    std::os::unix::fs::symlink(&outside, &author_link).unwrap();
    // out/<va>/<vt>/<vt> - <va>.epub → outside/victim.epub (dangling): placing that book must
    // not create the file the link points to.
    let victim_dir = ws.out().join(&va).join(&vt);
    std::fs::create_dir_all(&victim_dir).unwrap();
    let victim_link = victim_dir.join(format!("{vt} - {va}.epub"));
    let victim_target = outside.join("victim.epub");
    std::os::unix::fs::symlink(&victim_target, &victim_link).unwrap();
    // Books whose metadata tries to climb out of the target.
    let escape = format!("escape-{}", std::process::id());
    let hostile = ws.lib().join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    std::fs::write(
        hostile.join("climb.fb2"),
        fb2_book(&format!("../../../../../../../{escape}"), "../../.."),
    )
    .unwrap();
    std::fs::write(
        hostile.join("absolute.fb2"),
        fb2_book(&format!("/tmp/{escape}"), "/"),
    )
    .unwrap();

    let out = exec(&ws, run_cmd(&ws, &ws.state(), &[], s(&ws.out()), &[]));
    assert_eq!(out.code, Some(1), "rows failed: {}", out.both());

    // Nothing outside the target.
    let leaked: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(leaked.is_empty(), "written outside the target: {leaked:?}");
    assert!(
        !victim_target.exists(),
        "written through the planted file link"
    );
    let mut dir = ws.out();
    while let Some(parent) = dir.parent() {
        assert!(
            !parent.join(&escape).exists(),
            "metadata led a write to {}",
            parent.display()
        );
        dir = parent.to_path_buf();
    }
    assert!(!Path::new("/tmp").join(&escape).exists());
    // The links are still the links that were planted.
    assert_eq!(std::fs::read_link(&author_link).unwrap(), outside);
    assert_eq!(std::fs::read_link(&victim_link).unwrap(), victim_target);

    let rows = rows_of(&ws.state());
    let mut failed = 0;
    for (path, r) in &rows {
        if r.author.as_deref() == Some(author.as_str()) && r.state != "skipped" {
            failed += 1;
            assert_eq!(
                r.state, "failed",
                "{path}: by {author}, placed through the link?"
            );
            assert_eq!(r.error_kind.as_deref(), Some("target_write"), "{path}");
            let err = r.error.as_deref().unwrap_or("");
            assert!(
                err.contains(s(&author_link)) && err.contains("symlink"),
                "{path}: the error names the symlink: {err}"
            );
        } else {
            assert!(
                r.state == "uploaded" || r.state == "skipped",
                "{path}: {} ({:?})",
                r.state,
                r.error
            );
        }
        if let Some(t) = &r.target_ref {
            assert!(
                !t.starts_with('/') && !t.split('/').any(|c| c == ".." || c == "." || c.is_empty()),
                "{path}: target_ref {t:?} leaves the root"
            );
        }
    }
    assert!(failed > 0, "no book of {author} met the link");
    // The book whose destination was a link went next to it, under a new name.
    let v = &rows[&victim_entry.path];
    assert_eq!(v.state, "uploaded", "{}: {:?}", victim_entry.path, v.error);
    assert_eq!(
        v.target_ref.as_deref(),
        Some(format!("{va}/{vt}/{vt} - {va} (2).epub").as_str()),
        "placed beside the planted link"
    );
    // The hostile books are inside the root.
    for name in ["hostile/climb.fb2", "hostile/absolute.fb2"] {
        let r = rows
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("{name} recorded: {rows:?}"))
            .1;
        assert_eq!(r.state, "uploaded", "{name}: {:?}", r.error);
        let t = ws.out().join(r.target_ref.as_ref().unwrap());
        assert!(
            std::fs::canonicalize(&t)
                .unwrap()
                .starts_with(std::fs::canonicalize(ws.out()).unwrap()),
            "{name} placed at {}",
            t.display()
        );
    }

    // The link removed, retry-failed places that author's books inside the target.
    std::fs::remove_file(&author_link).unwrap();
    let again = exec(&ws, ws.cmd(&["retry-failed", "--kind", "target_write"]));
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    assert!(!victim_target.exists());
    assert_eq!(
        one_i64(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state NOT IN ('uploaded', 'skipped')"
        ),
        0
    );
    assert_event_histories_valid(&ws);
}

// ---------------------------------------------------------------------------
// 6. TLS: certificates verified unless told otherwise

fn self_signed() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("rcgen makes a certificate");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

#[test]
fn tls_certificates_are_verified_unless_a_ca_is_given_or_insecure_is_asked_for() {
    let ws = Workspace::with_corpus_sized(20, 88, 8);
    let (cert, key) = self_signed();
    let srv = TestServer::start(ServerConfig {
        tls: Some((cert.clone(), key)),
        ..Default::default()
    });
    assert!(
        srv.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        srv.base_url
    );
    let cert_file = ws.path().join("server.pem");
    std::fs::write(&cert_file, &cert).unwrap();
    let (other_cert, _) = self_signed();
    let other_file = ws.path().join("other.pem");
    std::fs::write(&other_file, &other_cert).unwrap();

    // Not trusted by default: nothing done, exit 2, the message is about the certificate.
    let refused = exec(&ws, run_cmd(&ws, &ws.state(), &[], &srv.base_url, &[]));
    assert_eq!(refused.code, Some(2), "{}", refused.both());
    assert!(
        refused
            .stderr
            .lines()
            .any(|l| l.starts_with("bookferry: error:")
                && l.contains("certificate")
                && l.contains("--ca-cert")),
        "the message says the certificate is not trusted: {}",
        refused.stderr
    );
    // The server sees the refused handshake a moment after the client hung up.
    let t0 = Instant::now();
    while srv.stats().tls_handshake_failures == 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(srv.stats().tls_handshake_failures >= 1, "{:?}", srv.stats());
    assert_eq!(srv.stats().check_calls + srv.stats().uploads_total, 0);

    // Another CA than the server's: still refused.
    let wrong_ca = exec(
        &ws,
        run_cmd(
            &ws,
            &ws.state(),
            &[],
            &srv.base_url,
            &["--ca-cert", s(&other_file)],
        ),
    );
    assert_eq!(wrong_ca.code, Some(2), "{}", wrong_ca.both());
    assert_eq!(srv.stats().uploads_total, 0);
    assert_eq!(
        one_i64(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state <> 'pending'"
        ),
        0,
        "rows moved although the server was not trusted"
    );

    // --ca-cert with the server's certificate: done, no warning.
    let trusted = exec(
        &ws,
        run_cmd(
            &ws,
            &ws.state(),
            &[],
            &srv.base_url,
            &["--ca-cert", s(&cert_file)],
        ),
    );
    assert_eq!(trusted.code, Some(0), "{}", trusted.both());
    assert!(!trusted.stderr.contains("--insecure"), "{}", trusted.stderr);
    assert_http_complete(&ws, &ws.state(), &srv);

    // --insecure, against a fresh server: done, with a warning that nothing is verified.
    let (cert2, key2) = self_signed();
    let srv2 = TestServer::start(ServerConfig {
        tls: Some((cert2, key2)),
        ..Default::default()
    });
    let insecure_state = ws.path().join("insecure.db");
    let insecure = exec(
        &ws,
        run_cmd(&ws, &insecure_state, &[], &srv2.base_url, &["--insecure"]),
    );
    assert_eq!(insecure.code, Some(0), "{}", insecure.both());
    assert!(
        insecure.stderr.contains("--insecure") && insecure.stderr.contains("NOT verified"),
        "no warning about --insecure: {}",
        insecure.stderr
    );
    assert_http_complete(&ws, &insecure_state, &srv2);
}

// ---------------------------------------------------------------------------
// 7. Tokens: never on the command line

#[test]
fn a_token_on_the_command_line_is_refused() {
    // The file-permission warning, the environment variable and "never written anywhere" are
    // covered in http.rs; here: there is no option to pass a token in argv (where `ps` shows it).
    let ws = Workspace::with_corpus_sized(3, 89, 4);
    let srv = TestServer::start(ServerConfig {
        token: Some("argv-token-Zq81".into()),
        ..Default::default()
    });
    for flag in [
        vec!["--token", "argv-token-Zq81"],
        vec!["--token=argv-token-Zq81"],
        vec!["--bearer", "argv-token-Zq81"],
    ] {
        let out = exec(&ws, run_cmd(&ws, &ws.state(), &[], &srv.base_url, &flag));
        assert_eq!(out.code, Some(2), "{flag:?}: {}", out.both());
        assert_eq!(srv.stats().check_calls + srv.stats().uploads_total, 0);
    }
    assert!(!ws.state().exists() || one_i64(&ws.state(), "SELECT COUNT(*) FROM files") == 0);
}

// ---------------------------------------------------------------------------
// 8. The source is only ever read

#[test]
fn a_read_only_source_is_migrated_and_left_exactly_as_it_was() {
    // As root the permission bits stop nothing, so the proof is the snapshot: every file's bytes
    // and mtime, every entry's mode, size and mtime, the same before and after.
    let folder = Workspace::with_corpus_sized(40, 90, 8);
    let calibre = Workspace::empty();
    std::fs::remove_dir_all(calibre.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &calibre.lib());
    for (ws, what) in [(&folder, "folder"), (&calibre, "calibre library")] {
        let _ro = ReadOnlyTree::new(&ws.lib());
        let files_before = tree_snapshot(&ws.lib());
        let listing_before = listing(&ws.lib());
        assert!(!files_before.is_empty());
        let out = exec(ws, run_cmd(ws, &ws.state(), &[], s(&ws.out()), &[]));
        assert_eq!(out.code, Some(0), "{what}: {}", out.both());
        assert_eq!(
            tree_snapshot(&ws.lib()),
            files_before,
            "{what}: a source file changed"
        );
        assert_eq!(
            listing(&ws.lib()),
            listing_before,
            "{what}: the source tree changed"
        );
        assert!(
            one_i64(
                &ws.state(),
                "SELECT COUNT(*) FROM files WHERE state = 'uploaded'"
            ) > 0,
            "{what}: nothing migrated"
        );
        assert_eq!(
            one_i64(
                &ws.state(),
                "SELECT COUNT(*) FROM files WHERE state NOT IN ('uploaded', 'skipped')"
            ),
            0,
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------
// 9. Faults of bookferry's own stop the run; they never read as a file's fate
//
// A panic cannot be made to happen from outside, so these use the debug build's test hook
// `BOOKFERRY_FAULT=POINT:NAME` (`pipeline::fault`): at POINT, the file whose path contains NAME
// makes the pipeline fail.

/// Longest a run with an injected fault may take: it must stop, never hang.
const FAULT_DEADLINE: Duration = Duration::from_secs(90);

/// A file of the library whose content no other file has.
fn lone_file(ws: &Workspace) -> Entry {
    ws.manifest
        .iter()
        .find(|e| ws.manifest.iter().filter(|x| x.sha1 == e.sha1).count() == 1)
        .expect("a file with unique content")
        .clone()
}

/// `run` into the target folder with the fault `point` injected for the file `name`.
fn run_with_fault(ws: &Workspace, point: &str, name: &str) -> Out {
    let mut cmd = run_cmd(ws, &ws.state(), &[], s(&ws.out()), &[]);
    cmd.env("BOOKFERRY_FAULT", format!("{point}:{name}"));
    Running::start(ws, cmd).wait(FAULT_DEADLINE)
}

/// The run stopped with exit 5 naming the fault, and no row was given a fate for it.
fn assert_stopped_by_fault(ws: &Workspace, out: &Out, stage: &str, victim: &str) {
    assert_eq!(out.code, Some(5), "{}", out.both());
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("bookferry: error: internal error")
                && l.contains(&format!("the {stage} failed"))),
        "the error names the fault in the {stage}: {}",
        out.stderr
    );
    let rows = rows_of(&ws.state());
    let v = &rows[victim];
    assert!(
        ["pending", "checked", "hashed", "metadata_cached"].contains(&v.state.as_str())
            && v.error_kind.is_none(),
        "{victim}: left where it was, not {} ({:?}: {:?})",
        v.state,
        v.error_kind,
        v.error
    );
    let failed: Vec<_> = rows.iter().filter(|(_, r)| r.state == "failed").collect();
    assert!(failed.is_empty(), "rows failed for the fault: {failed:?}");
}

/// Without the fault, the next run completes the migration.
fn assert_next_run_completes(ws: &Workspace) {
    let again = exec(ws, run_cmd(ws, &ws.state(), &[], s(&ws.out()), &[]));
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert_folder_complete(ws, &ws.state());
    assert_event_histories_valid(ws);
}

#[test]
fn a_panic_in_the_name_check_stops_the_run_with_exit_5_and_moves_no_row() {
    let ws = Workspace::with_corpus_sized(30, 91, 8);
    let victim = lone_file(&ws);
    let out = run_with_fault(&ws, "name-check", &victim.path);
    assert_stopped_by_fault(&ws, &out, "name check", &victim.path);
    assert_next_run_completes(&ws);
}

#[test]
fn a_panic_while_hashing_stops_the_run_and_is_not_recorded_as_an_unreadable_file() {
    let ws = Workspace::with_corpus_sized(30, 92, 8);
    let victim = lone_file(&ws);
    let out = run_with_fault(&ws, "hash", &victim.path);
    assert_stopped_by_fault(&ws, &out, "hashing", &victim.path);
    assert_next_run_completes(&ws);
}

#[test]
fn a_panic_in_a_transfer_task_stops_the_run_instead_of_hanging_it() {
    let ws = Workspace::with_corpus_sized(30, 93, 8);
    let victim = lone_file(&ws);
    let out = run_with_fault(&ws, "transfer", &victim.path);
    assert_stopped_by_fault(&ws, &out, "transfer", &victim.path);
    assert_next_run_completes(&ws);
}

#[test]
fn a_state_db_error_in_the_content_check_stops_the_run_and_sends_no_duplicate() {
    let ws = Workspace::with_corpus_sized(20, 94, 8);
    let first = exec(&ws, run_cmd(&ws, &ws.state(), &[], s(&ws.out()), &[]));
    assert_eq!(first.code, Some(0), "{}", first.both());
    // A copy of a migrated file under another name: only the state DB knows it is a duplicate
    // of a row this migration placed.
    let original = lone_file(&ws);
    let copy = "copy-of-a-migrated-book.epub";
    std::fs::copy(ws.lib().join(&original.path), ws.lib().join(copy)).unwrap();
    let target_before = ws.target_files();

    let out = run_with_fault(&ws, "content-db", copy);
    assert_stopped_by_fault(&ws, &out, "content check", copy);
    assert!(
        out.stderr.contains("state DB") && out.stderr.contains("no_such_table"),
        "the cause is the state DB's error: {}",
        out.stderr
    );
    assert_eq!(ws.target_files(), target_before, "nothing placed");

    // Without the fault it is the duplicate it is.
    let again = exec(&ws, run_cmd(&ws, &ws.state(), &[], s(&ws.out()), &[]));
    assert_eq!(again.code, Some(0), "{}", again.both());
    assert_eq!(
        ws.target_files(),
        target_before,
        "the duplicate was not placed"
    );
    let original_id = one_i64(
        &ws.state(),
        &format!(
            "SELECT id FROM files WHERE source_ref = '{}'",
            original.path.replace('\'', "''")
        ),
    );
    assert_eq!(
        one_text(
            &ws.state(),
            &format!(
                "SELECT state || '/' || skip_reason || '/' || duplicate_of FROM files
                 WHERE source_ref = '{copy}'"
            )
        ),
        Some(format!("skipped/duplicate/{original_id}"))
    );
}
