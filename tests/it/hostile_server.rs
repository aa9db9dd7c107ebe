//! The HTTP target against servers that misbehave (protocol v1.1, section 3: what a client may
//! trust): a reply whose body stalls after its headers, an error body or a success body that
//! never ends, a check reply that never ends, redirects (at the pre-flight check, and once the
//! run is going), and success replies that lie (`"id": null`, another `sha1`). For each: no row
//! is ever `uploaded`, the run ends within its stall timeout and retries, the client's peak
//! memory stays under 200 MiB, no request (and so no token) reaches the host a redirect names,
//! and the exit code says what happened.
//!
//! The body stalls and endless bodies come from a small raw-TCP server written here (hyper in
//! the protocol server would not send a half reply); redirects and lies from the protocol
//! server's `Faults`.

use crate::protocol_server::{Faults, Lie, ServerConfig, TestServer};
use crate::util::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Peak memory allowed to a client facing a hostile server.
const PEAK_MIB: i64 = 200;
/// Bytes an "endless" body stops at (so that a client that reads it whole, as bookferry did,
/// shows it in its peak memory without taking the machine's).
const ENDLESS_CAP: u64 = 512 << 20;
const TOKEN: &str = "hostile-test-token-3f9a";

// ---------------------------------------------------------------------------
// A raw server that sends half replies and endless ones

#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Uploads: `201` headers and the start of the JSON body, then nothing.
    UploadBodyStalls,
    /// Uploads: `500` with a body that never ends.
    UploadEndlessErrorBody,
    /// Uploads: `201` with a JSON body that never ends.
    UploadEndlessJson,
    /// Check calls: `200` with a JSON body that never ends.
    CheckEndlessJson,
}

struct RawServer {
    url: String,
    stop: Arc<AtomicBool>,
    uploads: Arc<AtomicU64>,
}

impl RawServer {
    /// Check calls answer `{"files": []}` (every item missing) unless the misbehaviour is
    /// theirs.
    fn start(how: Misbehaviour) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let uploads = Arc::new(AtomicU64::new(0));
        let (stop2, uploads2) = (stop.clone(), uploads.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (stop, uploads) = (stop2.clone(), uploads2.clone());
                        std::thread::spawn(move || serve(s, how, &stop, &uploads));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        RawServer { url, stop, uploads }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One connection: requests one after the other (keep-alive) until one is answered badly.
fn serve(s: TcpStream, how: Misbehaviour, stop: &AtomicBool, uploads: &AtomicU64) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let Some((path, len)) = read_request(&mut r, stop) else {
            return;
        };
        let upload = path.ends_with("/api/upload");
        if upload {
            uploads.fetch_add(1, Ordering::SeqCst);
        }
        let bad = match how {
            Misbehaviour::CheckEndlessJson => !upload,
            _ => upload,
        };
        if !bad {
            let body = if upload {
                // Not reached: every misbehaviour but the check's is an upload's.
                r#"{"error": "no"}"#
            } else {
                r#"{"files": []}"#
            };
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = len;
            continue;
        }
        let _ = match how {
            Misbehaviour::UploadBodyStalls => {
                let _ = out.write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\": ",
                );
                // Hold the connection, sending nothing, until the client lets go.
                while !stop.load(Ordering::SeqCst) {
                    let mut b = [0u8; 1024];
                    match r.get_mut().read(&mut b) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
                Ok(())
            }
            Misbehaviour::UploadEndlessErrorBody => endless(
                &mut out,
                "500 Internal Server Error",
                "text/plain",
                b"",
                b'x',
                stop,
            ),
            Misbehaviour::UploadEndlessJson => endless(
                &mut out,
                "201 Created",
                "application/json",
                b"{\"id\": \"b-1\", \"padding\": \"",
                b'a',
                stop,
            ),
            Misbehaviour::CheckEndlessJson => endless(
                &mut out,
                "200 OK",
                "application/json",
                b"{\"files\": [],\"padding\": \"",
                b'a',
                stop,
            ),
        };
        return;
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A chunked body of `start` then `fill` bytes, up to [`ENDLESS_CAP`] (or until the client
/// hangs up).
fn endless(
    out: &mut TcpStream,
    status: &str,
    content_type: &str,
    start: &[u8],
    fill: u8,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    if !start.is_empty() {
        write!(out, "{:x}\r\n", start.len())?;
        out.write_all(start)?;
        out.write_all(b"\r\n")?;
    }
    let chunk = vec![fill; 64 << 10];
    let mut sent = 0u64;
    while sent < ENDLESS_CAP && !stop.load(Ordering::SeqCst) {
        write!(out, "{:x}\r\n", chunk.len())?;
        out.write_all(&chunk)?;
        out.write_all(b"\r\n")?;
        sent += chunk.len() as u64;
    }
    Ok(())
}

/// Read one request (head and body, by Content-Length or chunked); its path and body length.
fn read_request(r: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<(String, u64)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {
                if line == "\r\n" && !head.is_empty() {
                    break;
                }
                head.push(line);
            }
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                // A partial line stays in `line`: keep it.
                if !line.is_empty() {
                    head.push(line);
                }
            }
            Err(_) => return None,
        }
    }
    let path = head.first()?.split_whitespace().nth(1)?.to_string();
    let header = |name: &str| {
        head.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut n = 0u64;
    if let Some(len) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        n = discard(r, len, stop)?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
            let size = u64::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
            n += discard(r, size + 2, stop)?;
            if size == 0 {
                break;
            }
        }
    }
    Some((path, n))
}

fn discard(r: &mut BufReader<TcpStream>, mut left: u64, stop: &AtomicBool) -> Option<u64> {
    let total = left;
    let mut buf = vec![0u8; 64 << 10];
    while left > 0 {
        let want = buf.len().min(left as usize);
        match r.read(&mut buf[..want]) {
            Ok(0) => return None,
            Ok(k) => left -= k as u64,
            Err(e) if is_timeout(&e) && !stop.load(Ordering::SeqCst) => {}
            Err(_) => return None,
        }
    }
    Some(total)
}

// ---------------------------------------------------------------------------
// Running the client and judging what it did

/// How a run against a hostile server ended.
struct Ended {
    code: i32,
    peak_mib: i64,
    elapsed: Duration,
    stderr: String,
}

/// A library of `n` small text books, each of its own content.
fn library(n: usize) -> Workspace {
    let ws = Workspace::empty();
    for i in 0..n {
        std::fs::write(
            ws.lib().join(format!("Book {i:02} - Some Author.txt")),
            format!("the text of book {i}\n").repeat(50 + i),
        )
        .unwrap();
    }
    ws
}

/// `run --from lib --to url --stall-timeout 2 --retries 1 extra…` with a token, killed (and
/// the test failed) past `limit`; its exit code and peak RSS.
fn run_against(ws: &Workspace, url: &str, extra: &[&str], limit: Duration) -> Ended {
    let lib = ws.lib();
    let mut args = vec![
        "run",
        "--from",
        lib.to_str().unwrap(),
        "--to",
        url,
        "--stall-timeout",
        "2",
        "--retries",
        "1",
    ];
    args.extend_from_slice(extra);
    let err_path = ws.path().join("hostile.stderr");
    let mut cmd: Command = ws.cmd(&args);
    cmd.env("BOOKFERRY_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let t0 = Instant::now();
    let (status, peak_mib) = spawn_measured(cmd, limit, || {
        std::fs::read_to_string(&err_path).unwrap_or_default()
    });
    Ended {
        code: status.code().expect("exited, not killed by a signal"),
        peak_mib,
        elapsed: t0.elapsed(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Run `cmd` to its end and return how it ended and its peak RSS in MiB: the high-water mark
/// of its own memory (`VmHWM`, sampled every 10 ms while it runs). Not `wait4`'s `ru_maxrss`:
/// Linux folds into it the RSS of the address space the child had before `exec`, which for a
/// child spawned by a test is the whole test process's (every test running in parallel).
/// Killed, and the test failed with `what_it_said()`, past `limit`.
pub fn spawn_measured(
    mut cmd: Command,
    limit: Duration,
    what_it_said: impl Fn() -> String,
) -> (std::process::ExitStatus, i64) {
    let mut child = cmd.spawn().expect("bookferry starts");
    let status_file = format!("/proc/{}/status", child.id());
    let t0 = Instant::now();
    let mut peak_kib = 0i64;
    loop {
        // Read before asking whether it ended: the last sample is as late as can be.
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            let hwm = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
            peak_kib = peak_kib.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak_kib / 1024);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bookferry did not finish within {limit:?} (it hangs); stderr:\n{}",
                what_it_said()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (state, error_kind, error) of every row; none may be `uploaded`.
fn rows_never_uploaded(ws: &Workspace) -> Vec<(String, Option<String>, Option<String>)> {
    if !ws.state().exists() {
        return Vec::new();
    }
    let c = ws.db();
    let mut st = c
        .prepare("SELECT state, error_kind, error FROM files ORDER BY id")
        .unwrap();
    let rows: Vec<(String, Option<String>, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        rows.iter().all(|(s, _, _)| s != "uploaded"),
        "a row is uploaded though the server proved nothing: {rows:?}"
    );
    assert_eq!(
        count_or_zero(
            &ws.state(),
            "SELECT count(*) FROM files WHERE target_ref IS NOT NULL"
        ),
        0,
        "a row keeps a target_ref the server never proved"
    );
    rows
}

fn last_outcome(ws: &Workspace) -> String {
    ws.db()
        .query_row(
            "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn assert_flat(e: &Ended, what: &str) {
    assert!(
        e.peak_mib < PEAK_MIB,
        "{what}: peak RSS {} MiB (limit {PEAK_MIB}); stderr:\n{}",
        e.peak_mib,
        e.stderr
    );
}

// ---------------------------------------------------------------------------
// Replies bounded in time and size

/// `201` headers, then the body stalls: each try is abandoned after the stall timeout, the
/// retry too, and the rows fail `transient_exhausted` (exit 1). Before, the run hung forever:
/// the watchdog covered sending only.
#[test]
fn an_upload_reply_whose_body_stalls_is_abandoned_retried_and_failed_never_hung() {
    let ws = library(3);
    let srv = RawServer::start(Misbehaviour::UploadBodyStalls);
    let e = run_against(&ws, &srv.url, &[], Duration::from_secs(120));
    assert_eq!(e.code, 1, "{}", e.stderr);
    let rows = rows_never_uploaded(&ws);
    assert_eq!(rows.len(), 3);
    for (state, kind, error) in &rows {
        assert_eq!(state, "failed");
        assert_eq!(kind.as_deref(), Some("transient_exhausted"), "{error:?}");
        assert!(
            error
                .as_deref()
                .unwrap_or("")
                .contains("did not arrive within 2s"),
            "{error:?}"
        );
    }
    // Two tries of each file, each cut after 2 s; generous for a loaded machine.
    assert!(e.elapsed < Duration::from_secs(90), "took {:?}", e.elapsed);
    assert!(
        srv.uploads.load(Ordering::SeqCst) >= 6,
        "each file tried twice"
    );
    assert_flat(&e, "stalled reply body");
}

/// A `500` whose body never ends: only its first KiB are read (the message keeps them), the
/// rest never; memory stays flat. Before, `resp.text()` read it whole.
#[test]
fn an_endless_error_body_is_cut_to_its_first_kib_and_memory_stays_flat() {
    let ws = library(2);
    let srv = RawServer::start(Misbehaviour::UploadEndlessErrorBody);
    let e = run_against(
        &ws,
        &srv.url,
        &["--transfers", "1"],
        Duration::from_secs(120),
    );
    assert_flat(&e, "endless error body");
    assert_eq!(e.code, 1, "{}", e.stderr);
    for (state, kind, error) in rows_never_uploaded(&ws) {
        assert_eq!(state, "failed");
        assert_eq!(kind.as_deref(), Some("transient_exhausted"));
        let error = error.unwrap_or_default();
        assert!(error.contains("500") && error.contains("xxxx"), "{error}");
        assert!(
            error.len() < 1024,
            "the message keeps a short start: {error}"
        );
    }
}

/// A `201` whose JSON never ends is refused as too large (transient, retried, then
/// `transient_exhausted`), never read whole.
#[test]
fn an_endless_success_body_is_refused_as_too_large_with_memory_flat() {
    let ws = library(2);
    let srv = RawServer::start(Misbehaviour::UploadEndlessJson);
    let e = run_against(
        &ws,
        &srv.url,
        &["--transfers", "1"],
        Duration::from_secs(120),
    );
    assert_flat(&e, "endless success body");
    assert_eq!(e.code, 1, "{}", e.stderr);
    for (state, kind, error) in rows_never_uploaded(&ws) {
        assert_eq!(state, "failed");
        assert_eq!(kind.as_deref(), Some("transient_exhausted"));
        assert!(
            error.as_deref().unwrap_or("").contains("larger than"),
            "{error:?}"
        );
    }
}

/// The pre-flight check's reply never ends: refused as too large, the target is unusable
/// (exit 2), memory flat.
#[test]
fn an_endless_check_reply_at_the_pre_flight_check_exits_2_with_memory_flat() {
    let ws = library(2);
    let srv = RawServer::start(Misbehaviour::CheckEndlessJson);
    let e = run_against(&ws, &srv.url, &[], Duration::from_secs(120));
    assert_flat(&e, "endless check reply");
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(e.stderr.contains("larger than"), "{}", e.stderr);
    assert_eq!(srv.uploads.load(Ordering::SeqCst), 0);
    rows_never_uploaded(&ws);
}

// ---------------------------------------------------------------------------
// Redirects

/// A server that counts what reaches it: a redirect's destination.
fn elsewhere() -> TestServer {
    TestServer::start(ServerConfig::default())
}

fn assert_nothing_reached(other: &TestServer) {
    let s = other.stats();
    assert_eq!(
        (s.requests_total, s.requests_with_authorization),
        (0, 0),
        "requests (with a token: {}) reached the host the redirect named",
        s.requests_with_authorization
    );
}

/// A redirect at the pre-flight check: exit 2, naming the Location; nothing is sent there.
/// The common case, `http://` to `https://` on the same host, is said in so many words.
#[test]
fn a_redirect_at_the_pre_flight_check_exits_2_naming_where_and_follows_nothing() {
    let other = elsewhere();
    let ws = library(2);
    let srv = TestServer::start(ServerConfig {
        token: Some(TOKEN.into()),
        faults: Faults {
            redirect_to: Some(format!("{}/api/upload/check", other.base_url)),
            ..Default::default()
        },
        ..Default::default()
    });
    let e = run_against(&ws, &srv.base_url, &[], Duration::from_secs(60));
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(
        e.stderr
            .contains(&format!("{}/api/upload/check", other.base_url))
            && e.stderr.contains("302"),
        "{}",
        e.stderr
    );
    assert!(!e.stderr.contains(TOKEN));
    assert_nothing_reached(&other);
    assert_eq!(srv.stats().redirects_sent, 1);
    rows_never_uploaded(&ws);

    // http:// → https:// on the same host and port.
    let https = srv.base_url.replacen("http://", "https://", 1);
    srv.set_faults(Faults {
        redirect_to: Some(format!("{https}/api/upload/check")),
        ..Default::default()
    });
    let e = run_against(&ws, &srv.base_url, &[], Duration::from_secs(60));
    assert_eq!(e.code, 2, "{}", e.stderr);
    assert!(
        e.stderr.contains(&format!(
            "the server redirects http:// to https://; use --to {https}"
        )),
        "{}",
        e.stderr
    );
}

/// A server that starts redirecting uploads once the run is going has changed: the run stops
/// (exit 5, outcome `bad_server`) at the first redirect instead of failing every row; nothing
/// is sent where it points, no row is uploaded.
#[test]
fn a_server_that_starts_redirecting_uploads_stops_the_run_with_exit_5() {
    let other = elsewhere();
    let ws = library(8);
    let srv = TestServer::start(ServerConfig {
        token: Some(TOKEN.into()),
        faults: Faults {
            redirect_to: Some(format!("{}/api/upload", other.base_url)),
            redirect_uploads_only: true,
            ..Default::default()
        },
        ..Default::default()
    });
    let e = run_against(&ws, &srv.base_url, &[], Duration::from_secs(60));
    assert_eq!(e.code, 5, "{}", e.stderr);
    assert!(
        e.stderr.contains("302") && e.stderr.contains(&other.base_url),
        "{}",
        e.stderr
    );
    assert!(!e.stderr.contains(TOKEN));
    assert_nothing_reached(&other);
    assert_eq!(last_outcome(&ws), "bad_server");
    let rows = rows_never_uploaded(&ws);
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter().all(|(s, _, _)| s != "failed"),
        "rows were failed one by one: {rows:?}"
    );
    assert!(srv.stored().is_empty());
}

// ---------------------------------------------------------------------------
// Success replies must prove the store

/// `"id": null` or no `sha1` echo: each such row fails `bad_reply` naming what was wrong,
/// never `uploaded`; a rerun against a server that answers right completes.
#[test]
fn success_replies_without_an_id_or_the_sha1_echo_fail_rows_as_bad_reply() {
    for (lie, says) in [
        (Lie::NullId, "\"id\" is null"),
        (Lie::NoSha1, "no \"sha1\" echo"),
    ] {
        let ws = library(3);
        let srv = TestServer::start(ServerConfig {
            faults: Faults {
                lie: Some(lie),
                ..Default::default()
            },
            ..Default::default()
        });
        let e = run_against(&ws, &srv.base_url, &[], Duration::from_secs(60));
        assert_eq!(e.code, 1, "{lie:?}: {}", e.stderr);
        let rows = rows_never_uploaded(&ws);
        assert_eq!(rows.len(), 3);
        for (state, kind, error) in rows {
            assert_eq!(state, "failed", "{lie:?}");
            assert_eq!(kind.as_deref(), Some("bad_reply"), "{lie:?}");
            assert!(error.as_deref().unwrap_or("").contains(says), "{error:?}");
        }
        // The server, fixed: retry-failed completes the migration (the files the lying server
        // did store are found there by SHA-1 and skipped; none is stored twice).
        srv.set_faults(Faults::default());
        let mut retry = ws.cmd(&["retry-failed"]);
        retry.stdout(Stdio::null()).stderr(Stdio::null());
        let (status, _) = spawn_measured(retry, Duration::from_secs(60), String::new);
        assert_eq!(status.code(), Some(0), "{lie:?}: retry-failed");
        assert_eq!(
            ws.count("SELECT count(*) FROM files WHERE state IN ('uploaded', 'skipped')"),
            3
        );
        assert!(srv.stats().stored_count_by_sha1.values().all(|&n| n == 1));
    }
}

/// A server that answers every upload with another `sha1` (or a body that is not JSON): five
/// in a row stop the run (exit 5, `bad_server`, the cause named) instead of failing every row.
#[test]
fn a_server_whose_every_reply_proves_nothing_stops_the_run_after_five() {
    for (lie, says) in [(Lie::OtherSha1, "is not the"), (Lie::NotJson, "not JSON")] {
        let ws = library(12);
        let srv = TestServer::start(ServerConfig {
            faults: Faults {
                lie: Some(lie),
                ..Default::default()
            },
            ..Default::default()
        });
        let e = run_against(
            &ws,
            &srv.base_url,
            &["--transfers", "1"],
            Duration::from_secs(60),
        );
        assert_eq!(e.code, 5, "{lie:?}: {}", e.stderr);
        assert!(
            e.stderr.contains("5 uploads in a row") && e.stderr.contains(says),
            "{lie:?}: {}",
            e.stderr
        );
        assert_eq!(last_outcome(&ws), "bad_server");
        let rows = rows_never_uploaded(&ws);
        let failed = rows.iter().filter(|(s, _, _)| s == "failed").count();
        assert_eq!(
            failed, 4,
            "{lie:?}: four rows failed before the fifth stopped it: {rows:?}"
        );
        assert!(rows
            .iter()
            .filter(|(s, _, _)| s == "failed")
            .all(|(_, k, _)| k.as_deref() == Some("bad_reply")));
    }
}
