//! The HTTP target against a real server speaking the upload protocol
//! (`tests/support/protocol_server.rs`): each content sent once, the cheap name+size check,
//! parts in order with `skip_extraction` only for trusted metadata, injected faults and 503s,
//! the bearer token (refused, accepted, never written anywhere), an unreachable server,
//! `kill -9` mid-upload, retry exhaustion and `retry-failed`, files the server rejects, and a
//! server slower than the stages before it (the rows waiting for it stay bounded).

use crate::hostile_server::spawn_measured;
use crate::protocol_server::{Faults, ServerConfig, Stats, StoredFile, TestServer};
use crate::util::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

static OUTPUT_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Run `cmd` to completion with a deadline (a hung client fails the test instead of hanging
/// CI). Its stdout/stderr go to files under `<workspace>/outputs/`, so they are also part of
/// what the token test scans.
fn exec(ws: &Workspace, mut cmd: Command, timeout: Duration) -> Out {
    let dir = ws.path().join("outputs");
    std::fs::create_dir_all(&dir).unwrap();
    let n = OUTPUT_SEQ.fetch_add(1, Ordering::SeqCst);
    let out_path = dir.join(format!("{n}.stdout"));
    let err_path = dir.join(format!("{n}.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("bookferry starts");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bookferry did not finish within {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

const LONG: Duration = Duration::from_secs(600);

/// `run --from lib --to URL extra...` with the default state DB.
fn run_http(ws: &Workspace, url: &str, extra: &[&str]) -> Out {
    run_http_with(ws, &ws.state(), url, &[], extra)
}

/// `[pre...] run --from lib --to URL extra...` with state DB `state`.
fn run_http_with(ws: &Workspace, state: &Path, url: &str, pre: &[&str], extra: &[&str]) -> Out {
    let lib = ws.lib();
    let mut args: Vec<&str> = pre.to_vec();
    args.extend(["run", "--from", lib.to_str().unwrap(), "--to", url]);
    args.extend_from_slice(extra);
    exec(ws, ws.cmd_with_state(state, &args), LONG)
}

fn server(cfg: ServerConfig) -> TestServer {
    TestServer::start(cfg)
}

/// One row of `files`.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    state: String,
    size: u64,
    sha1: Option<String>,
    target_ref: Option<String>,
    duplicate_of: Option<i64>,
    skip_reason: Option<String>,
    error_kind: Option<String>,
    error: Option<String>,
    metadata: Option<Value>,
    metadata_origin: Option<String>,
}

/// source_ref → row, from state DB `db`.
fn rows_of(db: &Path) -> BTreeMap<String, Row> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = c
        .prepare(
            "SELECT source_ref, id, state, size, sha1, target_ref, duplicate_of, skip_reason,
                    error_kind, error, metadata, metadata_origin FROM files",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| {
            let md: Option<String> = r.get(10)?;
            Ok((
                r.get::<_, String>(0)?,
                Row {
                    id: r.get(1)?,
                    state: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    sha1: r.get(4)?,
                    target_ref: r.get(5)?,
                    duplicate_of: r.get(6)?,
                    skip_reason: r.get(7)?,
                    error_kind: r.get(8)?,
                    error: r.get(9)?,
                    metadata: md.map(|s| serde_json::from_str(&s).expect("metadata is JSON")),
                    metadata_origin: r.get(11)?,
                },
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

fn basename(source_ref: &str) -> &str {
    source_ref.rsplit('/').next().unwrap()
}

/// SHA-1 → how many manifest entries have it.
fn sha_multiplicity(ws: &Workspace) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in &ws.manifest {
        *m.entry(e.sha1.clone()).or_insert(0) += 1;
    }
    m
}

fn total_upload_calls(s: &Stats) -> u64 {
    s.upload_calls_by_sha1.values().map(|&n| n as u64).sum()
}

/// Properties every finished migration to the server must have: each row final, each unique
/// content stored exactly once (and nothing else stored by uploads), every uploaded row's SHA-1
/// held by the server, duplicates pointing at a row of the same content, histories valid, and
/// the server never saw a malformed upload.
fn assert_complete(ws: &Workspace, srv: &TestServer) -> BTreeMap<String, Row> {
    let rows = rows_of(&ws.state());
    assert_eq!(rows.len(), ws.manifest.len(), "one row per source file");
    let by_id: HashMap<i64, &Row> = rows.values().map(|r| (r.id, r)).collect();
    let stored = srv.stored();
    for e in &ws.manifest {
        let r = &rows[&e.path];
        assert_eq!(r.size, e.size, "{}: size recorded", e.path);
        match r.state.as_str() {
            "uploaded" => {
                assert_eq!(r.sha1.as_deref(), Some(e.sha1.as_str()), "{}: sha1", e.path);
                assert!(
                    stored.contains_key(&e.sha1),
                    "{}: uploaded but not on the server",
                    e.path
                );
            }
            "skipped" => {
                if r.skip_reason.as_deref() == Some("duplicate") {
                    let orig = by_id[&r.duplicate_of.expect("duplicate without duplicate_of")];
                    assert_eq!(
                        orig.sha1.as_deref(),
                        Some(e.sha1.as_str()),
                        "{}: duplicate_of another content",
                        e.path
                    );
                }
                assert!(
                    stored.contains_key(&e.sha1),
                    "{}: skipped but the server lacks it",
                    e.path
                );
            }
            s => panic!(
                "{}: ended in {s} ({:?}: {:?})",
                e.path, r.error_kind, r.error
            ),
        }
    }
    let uploaded_keys: BTreeSet<String> = stored
        .iter()
        .filter(|(_, f)| !f.preloaded)
        .map(|(k, _)| k.clone())
        .collect();
    let all_keys: BTreeSet<String> = stored.keys().cloned().collect();
    assert!(
        ws.unique_sha1s().is_subset(&all_keys),
        "contents missing on the server: {:?}",
        ws.unique_sha1s().difference(&all_keys).collect::<Vec<_>>()
    );
    assert!(
        uploaded_keys.is_subset(&ws.unique_sha1s()),
        "the server holds contents that are not in the library"
    );
    let s = srv.stats();
    assert!(
        s.stored_count_by_sha1.values().all(|&n| n == 1),
        "a content stored twice: {:?}",
        s.stored_count_by_sha1
            .iter()
            .filter(|(_, &n)| n != 1)
            .collect::<Vec<_>>()
    );
    assert_eq!(s.part_order_violations, 0, "parts out of order");
    assert_eq!(
        s.filename_non_utf8_or_missing, 0,
        "file part without a UTF-8 filename"
    );
    assert_eq!(s.filename_with_dirs, 0, "file part named with folders");
    assert_eq!(
        s.skip_extraction_without_title_author, 0,
        "skip_extraction without title+author"
    );
    assert_eq!(
        s.sha1_mismatches, 0,
        "declared sha1 differs from the bytes sent"
    );
    assert_eq!(s.unrouted, 0, "requests to unknown endpoints");
    assert_event_histories_valid(ws);
    let st = ws.status();
    assert_status_adds_up(&st);
    assert_eq!(st["states"]["failed"], 0);
    rows
}

fn assert_no_400(s: &Stats) {
    assert_eq!(
        s.status_counts.get(&400),
        None,
        "the server answered 400 (malformed request): {:?}",
        s.status_counts
    );
}

/// A port on 127.0.0.1 nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    drop(l);
    p
}

fn write_token_file(path: &Path, token: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every regular file below `root` except those in `skip` and below `skip_dirs`.
fn files_below(root: &Path, skip: &[PathBuf], skip_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if skip_dirs.contains(&d) {
            continue;
        }
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && !skip.contains(&e.path()) {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// 1. The main job

#[test]
fn http_migrates_a_library_each_content_sent_once_with_trusted_metadata() {
    let ws = Workspace::with_corpus(320, 61);
    let srv = server(ServerConfig {
        path_prefix: Some("/library".into()),
        ..Default::default()
    });
    assert!(srv.base_url.ends_with("/library"));
    let out = run_http(&ws, &srv.base_url, &[]);
    assert_eq!(out.code, Some(0), "{}", out.both());

    let rows = assert_complete(&ws, &srv);
    let stored = srv.stored();
    let s = srv.stats();
    let unique = ws.unique_sha1s();
    assert!(
        unique.len() < ws.manifest.len(),
        "the corpus has duplicates"
    );

    // Each unique content stored once, and sent exactly once: no SHA-1 twice, duplicates never.
    let stored_keys: BTreeSet<String> = stored.keys().cloned().collect();
    assert_eq!(
        stored_keys, unique,
        "server holds exactly the library's contents"
    );
    let called: BTreeSet<String> = s.upload_calls_by_sha1.keys().cloned().collect();
    assert_eq!(
        called, unique,
        "upload calls cover exactly the unique contents"
    );
    let twice: Vec<_> = s
        .upload_calls_by_sha1
        .iter()
        .filter(|(_, &n)| n != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "SHA-1s sent more than once in a fault-free run: {twice:?}"
    );
    assert_eq!(s.uploads_total, unique.len() as u64);
    assert!(
        s.duplicate_uploads_by_sha1.is_empty(),
        "{:?}",
        s.duplicate_uploads_by_sha1
    );
    // Only successes: check calls 200, uploads 201 (no 400/413/422, no 200-duplicate).
    assert_eq!(
        s.status_counts.get(&201).copied(),
        Some(unique.len() as u64),
        "{:?}",
        s.status_counts
    );
    assert!(
        s.status_counts.keys().all(|&c| c == 200 || c == 201),
        "unexpected statuses: {:?}",
        s.status_counts
    );
    assert!(s.check_calls >= 1);
    assert_eq!(s.part_order_violations, 0);

    // Rows: one uploaded row per content, target_ref = the server's id; every other row of that
    // content is a duplicate of a row of the same content, never sent.
    let mut uploaded_per_sha: HashMap<&str, usize> = HashMap::new();
    let manifest: HashMap<&str, &Entry> =
        ws.manifest.iter().map(|e| (e.path.as_str(), e)).collect();
    for (path, r) in &rows {
        let e = manifest[path.as_str()];
        assert_eq!(
            r.sha1.as_deref(),
            Some(e.sha1.as_str()),
            "{path}: every row hashed"
        );
        match r.state.as_str() {
            "uploaded" => {
                *uploaded_per_sha.entry(&e.sha1).or_default() += 1;
                let f: &StoredFile = &stored[&e.sha1];
                assert_eq!(
                    r.target_ref.as_deref(),
                    Some(f.id.as_str()),
                    "{path}: target_ref = server id"
                );
                assert_eq!(f.filename, basename(path), "{path}: filename sent");
                assert_eq!(f.size, e.size, "{path}: size");
                // skip_extraction exactly when the metadata is trusted and has title + author.
                let md = r.metadata.as_ref();
                let has_title = md
                    .and_then(|m| m.get("title"))
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.trim().is_empty());
                let has_author = md
                    .and_then(|m| m.get("authors"))
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter()
                            .any(|x| x.as_str().is_some_and(|s| !s.trim().is_empty()))
                    });
                let trusted = matches!(r.metadata_origin.as_deref(), Some("embedded" | "calibre"));
                assert_eq!(
                    f.skip_extraction,
                    trusted && has_title && has_author,
                    "{path}: skip_extraction (origin {:?}, metadata {:?})",
                    r.metadata_origin,
                    r.metadata
                );
                match e.format.as_str() {
                    "epub" => {
                        assert!(
                            f.skip_extraction,
                            "{path}: EPUB sent without skip_extraction"
                        );
                        let sent = f.metadata.as_ref().expect("EPUB sent without metadata");
                        assert_eq!(sent["title"], e.metadata["title"], "{path}: title sent");
                        assert_eq!(
                            sent["authors"], e.metadata["authors"],
                            "{path}: authors sent"
                        );
                    }
                    "txt" => {
                        assert!(
                            !f.skip_extraction,
                            "{path}: TXT (metadata from its name) sent with skip_extraction"
                        );
                    }
                    _ => {}
                }
            }
            "skipped" => {
                assert_eq!(
                    r.skip_reason.as_deref(),
                    Some("duplicate"),
                    "{path}: skip reason"
                );
                assert!(
                    r.duplicate_of.is_some(),
                    "{path}: duplicate without duplicate_of"
                );
            }
            other => panic!("{path}: {other}"),
        }
    }
    assert_eq!(uploaded_per_sha.len(), unique.len());
    assert!(
        uploaded_per_sha.values().all(|&n| n == 1),
        "a content uploaded from two rows"
    );
    assert!(
        ws.manifest.iter().any(|e| e.format == "txt"),
        "corpus has TXT files"
    );
    assert_eq!(
        s.extraction_runs,
        stored.values().filter(|f| !f.skip_extraction).count() as u64
    );

    // The run's counters: every source byte read once; at least every uploaded byte sent.
    let total: i64 = ws.manifest.iter().map(|e| e.size as i64).sum();
    let unique_bytes: u64 = stored.values().map(|f| f.size).sum();
    assert_eq!(s.bytes_received, unique_bytes);
    let (read, sent) = ws.run_bytes();
    assert_eq!(read, total, "runs.bytes_read = the library's size");
    assert!(
        sent >= unique_bytes as i64,
        "runs.bytes_sent {sent} < bytes uploaded {unique_bytes}"
    );
}

// ---------------------------------------------------------------------------
// 2. Run again after completion: nothing sent

#[test]
fn http_rerun_after_completion_sends_nothing() {
    let ws = Workspace::with_corpus(60, 62);
    let srv = server(ServerConfig::default());
    let out = run_http(&ws, &srv.base_url, &[]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    let before = srv.stats();
    assert_eq!(total_upload_calls(&before), ws.unique_sha1s().len() as u64);

    // Resume the recorded migration, then name it again explicitly.
    let again = exec(&ws, ws.cmd(&["run"]), LONG);
    assert_eq!(again.code, Some(0), "{}", again.both());
    let explicit = run_http(&ws, &srv.base_url, &[]);
    assert_eq!(explicit.code, Some(0), "{}", explicit.both());

    let after = srv.stats();
    assert_eq!(
        after.upload_calls_by_sha1, before.upload_calls_by_sha1,
        "a rerun sent files"
    );
    assert_eq!(
        after.uploads_total, before.uploads_total,
        "a rerun made upload calls"
    );
    assert_eq!(
        ws.count("SELECT SUM(files_hashed + files_uploaded) FROM runs WHERE id > (SELECT MIN(id) FROM runs)"),
        0,
        "a rerun hashed or uploaded"
    );
    assert_complete(&ws, &srv);
}

// ---------------------------------------------------------------------------
// 3. The cheap name+size check, and --checksum

#[test]
fn http_name_and_size_on_server_skips_hashing_and_checksum_hashes_anyway() {
    let ws = Workspace::with_corpus(80, 63);
    let mult = sha_multiplicity(&ws);
    // Files whose content and (name, size) are unique in the library.
    let mut name_size: HashMap<(String, u64), usize> = HashMap::new();
    for e in &ws.manifest {
        *name_size
            .entry((basename(&e.path).to_string(), e.size))
            .or_default() += 1;
    }
    let pre: Vec<Entry> = ws
        .manifest
        .iter()
        .filter(|e| mult[&e.sha1] == 1 && name_size[&(basename(&e.path).to_string(), e.size)] == 1)
        .step_by(7)
        .take(6)
        .cloned()
        .collect();
    assert!(pre.len() >= 3, "enough files to preload");
    let srv = server(ServerConfig::default());
    for e in &pre {
        srv.preload(&e.sha1, basename(&e.path), e.size);
    }

    let out = run_http(&ws, &srv.base_url, &[]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    let rows = assert_complete(&ws, &srv);
    let s = srv.stats();
    for e in &pre {
        let r = &rows[&e.path];
        assert_eq!(
            (r.state.as_str(), r.skip_reason.as_deref()),
            ("skipped", Some("target_has_name_size")),
            "{}",
            e.path
        );
        assert_eq!(
            r.sha1, None,
            "{}: hashed although the server has its name and size",
            e.path
        );
        assert!(
            !s.upload_calls_by_sha1.contains_key(&e.sha1),
            "{}: uploaded anyway",
            e.path
        );
    }
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM events WHERE to_state = 'hashed'"),
        (ws.manifest.len() - pre.len()) as i64,
        "only files the server lacks by name+size are hashed"
    );
    let stored = srv.stored();
    for e in &pre {
        assert!(stored[&e.sha1].preloaded);
    }
    let calls_before = s.upload_calls_by_sha1.clone();

    // --checksum, fresh state DB, same server: everything hashed; the preloaded files are found
    // by content; nothing is sent (the server holds every content now).
    let second = ws.path().join("second.db");
    let out = run_http_with(&ws, &second, &srv.base_url, &[], &["--checksum"]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    let rows2 = rows_of(&second);
    assert_eq!(rows2.len(), ws.manifest.len());
    for e in &ws.manifest {
        let r = &rows2[&e.path];
        assert_eq!(
            r.sha1.as_deref(),
            Some(e.sha1.as_str()),
            "{}: --checksum hashes every file",
            e.path
        );
        assert_eq!(r.state, "skipped", "{}: the server has it", e.path);
    }
    for e in &pre {
        assert_eq!(
            rows2[&e.path].skip_reason.as_deref(),
            Some("target_has_content"),
            "{}",
            e.path
        );
    }
    let s2 = srv.stats();
    assert_eq!(
        s2.upload_calls_by_sha1, calls_before,
        "--checksum run sent files the server has"
    );
    assert!(
        s2.check_items_with_sha1 > s.check_items_with_sha1,
        "content checked by SHA-1"
    );
    assert_no_400(&s2);
}

// ---------------------------------------------------------------------------
// 4. Injected faults and overload

/// Uploads waiting out a `Retry-After` hold no place among the transfers the pipeline hands the
/// server (128): others are sent meanwhile. Before, a server refusing one upload in ten at
/// random with `Retry-After: 1` was sent at most 128 uploads per second (0.74× of its capacity
/// in `BENCH_UPLOAD_PROFILES=1 cargo bench --bench upload`, profile 3). Here every file's first
/// upload is refused with a 5 s wait: more than 128 different files must be tried before the
/// first of them is tried again.
#[test]
fn http_uploads_resting_after_a_refusal_do_not_hold_back_the_others() {
    let ws = Workspace::empty();
    let files = 300;
    for i in 0..files {
        std::fs::write(
            ws.lib().join(format!("book-{i:03}.txt")),
            format!("book {i}\n"),
        )
        .unwrap();
    }
    let srv = server(ServerConfig {
        faults: Faults {
            busy_first_try: true,
            ..Default::default()
        },
        retry_after_secs: 5,
        ..Default::default()
    });
    let out = run_http(&ws, &srv.base_url, &["-q"]);
    assert_eq!(out.code, Some(0), "{}", out.both());
    let s = srv.stats();
    assert_eq!(s.stored_count_by_sha1.len(), files, "every file stored");
    assert_eq!(s.injected_busy, files as u64, "each refused once");
    let tried = s.sha1s_before_first_retry.unwrap_or(0);
    eprintln!("{tried} files tried before the first retry");
    assert!(
        tried > 128,
        "only {tried} files were tried before the first retry: the uploads resting after a \
         refusal held back the rest"
    );
}

#[test]
fn http_faults_and_overload_end_with_each_content_stored_once() {
    let ws = Workspace::with_corpus(150, 64);
    let srv = server(ServerConfig {
        faults: Faults {
            p_500: 0.20,
            p_reset: 0.05,
            p_reply_lost: 0.05,
            // Replies (not 500s, resets or 503s) take 50 ms, so 8 transfers overrun the 4
            // admitted uploads and the server answers 503 + Retry-After.
            stall: Some(Duration::from_millis(50)),
            p_stall: 1.0,
            seed: 0xfa17,
            ..Default::default()
        },
        max_in_flight: Some(4),
        retry_after_secs: 1,
        ..Default::default()
    });
    let mut outs = Vec::new();
    let mut out = run_http(&ws, &srv.base_url, &["--transfers", "8"]);
    for _ in 0..6 {
        match out.code {
            Some(0) => break,
            // Rows that exhausted their retries: retry them.
            Some(1) => {
                outs.push(out);
                out = exec(&ws, ws.cmd(&["retry-failed", "--transfers", "8"]), LONG);
            }
            // Stopped part-way (the server looked gone): resume.
            Some(5) => {
                outs.push(out);
                out = exec(&ws, ws.cmd(&["run"]), LONG);
            }
            _ => panic!("unexpected exit: {}", out.both()),
        }
    }
    assert_eq!(
        out.code,
        Some(0),
        "still not done after retries: {}",
        out.both()
    );
    eprintln!("fault test: {} extra invocations", outs.len());

    let rows = assert_complete(&ws, &srv);
    let s = srv.stats();
    let unique = ws.unique_sha1s();
    let stored_keys: BTreeSet<String> = srv.stored().keys().cloned().collect();
    assert_eq!(stored_keys, unique);
    assert!(s.stored_count_by_sha1.values().all(|&n| n == 1));
    assert_eq!(s.stored_count_by_sha1.len(), unique.len());
    let stored = srv.stored();
    for (path, r) in &rows {
        if r.state == "uploaded" {
            if let Some(t) = &r.target_ref {
                let sha = r.sha1.as_ref().unwrap();
                assert_eq!(t, &stored[sha].id, "{path}: target_ref is the server's id");
            }
        }
    }
    // Excess calls are bounded by the faults that could cause them.
    let calls = total_upload_calls(&s);
    let faults = s.injected_500
        + s.injected_resets
        + s.injected_replies_lost
        + s.status_counts.get(&503).copied().unwrap_or(0);
    eprintln!(
        "fault test: {calls} upload calls for {} contents; injected 500 {} resets {} lost {} 503 {:?}",
        unique.len(),
        s.injected_500,
        s.injected_resets,
        s.injected_replies_lost,
        s.status_counts.get(&503)
    );
    assert!(
        calls - unique.len() as u64 <= faults,
        "{calls} upload calls for {} contents, but only {faults} faults could explain repeats",
        unique.len()
    );
    assert!(
        s.status_counts.get(&503).copied().unwrap_or(0) > 0,
        "no 503: the overload path was not exercised"
    );
    assert!(
        s.injected_500 + s.injected_resets + s.injected_replies_lost > 0,
        "faults were injected"
    );
    assert_no_400(&s);
}

// ---------------------------------------------------------------------------
// 5. The token: refused, accepted, never written anywhere

#[test]
fn http_token_refused_accepted_and_never_written_anywhere() {
    let token = "s3cret-Qx7vT2mLp9ZrW4kN8bYd";
    let wrong = "s3cret-WRONG-h5Jc1uE6oFa3";
    let ws = Workspace::with_corpus(30, 65);
    let srv = server(ServerConfig {
        token: Some(token.into()),
        ..Default::default()
    });
    let tokdir = ws.path().join("secrets");
    std::fs::create_dir_all(&tokdir).unwrap();
    let good_file = tokdir.join("good.token");
    let wrong_file = tokdir.join("wrong.token");
    let open_file = tokdir.join("open.token");
    write_token_file(&good_file, token, 0o600);
    write_token_file(&wrong_file, wrong, 0o600);
    write_token_file(&open_file, token, 0o644);
    // One log file per run (a run may truncate its log), all at trace level; every other run
    // logs as JSON (`--log-format json`).
    let logs: Vec<PathBuf> = (0..5)
        .map(|i| ws.path().join(format!("run{i}.log")))
        .collect();
    let format = |i: usize| if i.is_multiple_of(2) { "json" } else { "text" };
    let pre = |i: usize| {
        [
            "--log-file",
            logs[i].to_str().unwrap(),
            "-vvv",
            "--log-format",
            format(i),
        ]
    };
    let state = ws.state();

    // No token: refused, exit 4, the message says how to give one; nothing moved.
    let none = run_http_with(&ws, &state, &srv.base_url, &pre(0), &[]);
    assert_eq!(none.code, Some(4), "{}", none.both());
    assert!(
        none.stderr.contains("BOOKFERRY_TOKEN") || none.stderr.contains("--token-file"),
        "the message says what to fix: {}",
        none.stderr
    );
    assert!(srv.stats().auth_failures >= 1);
    assert_eq!(srv.stats().uploads_total, 0, "uploads sent without a token");
    assert_eq!(
        count_or_zero(
            &state,
            "SELECT COUNT(*) FROM files WHERE state <> 'pending'"
        ),
        0
    );

    // A wrong token: refused, exit 4.
    let bad = run_http_with(
        &ws,
        &state,
        &srv.base_url,
        &pre(1),
        &["--token-file", wrong_file.to_str().unwrap()],
    );
    assert_eq!(bad.code, Some(4), "{}", bad.both());
    assert!(srv.stored().is_empty());
    assert_eq!(
        count_or_zero(
            &state,
            "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'failed')"
        ),
        0
    );

    // The right token from a 0600 file: done, no warning about the file.
    let good = run_http_with(
        &ws,
        &state,
        &srv.base_url,
        &pre(2),
        &["--token-file", good_file.to_str().unwrap()],
    );
    assert_eq!(good.code, Some(0), "{}", good.both());
    assert!(
        !good.stderr.contains("readable by others") && !good.stderr.contains("chmod"),
        "warning about a 0600 token file: {}",
        good.stderr
    );
    assert_complete(&ws, &srv);
    assert_eq!(srv.stored().len(), ws.unique_sha1s().len());

    // The same token in a file others may read: it works, with a warning naming the file.
    let loose = ws.path().join("loose-token");
    std::fs::copy(&good_file, &loose).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let warned = run_http_with(
        &ws,
        &state,
        &srv.base_url,
        &pre(2),
        &["--token-file", loose.to_str().unwrap()],
    );
    assert_eq!(warned.code, Some(0), "{}", warned.both());
    assert!(
        warned.stderr.contains(&format!(
            "--token-file {}: readable by others (mode 644); chmod 600 it",
            loose.display()
        )),
        "{}",
        warned.stderr
    );
    std::fs::remove_file(&loose).unwrap();

    // The right token from the environment (fresh state DB: all found on the server).
    let env_state = ws.path().join("env.db");
    let lib = ws.lib();
    let mut cmd = ws.cmd_with_state(
        &env_state,
        &[
            "--log-file",
            logs[3].to_str().unwrap(),
            "-vvv",
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            &srv.base_url,
        ],
    );
    cmd.env("BOOKFERRY_TOKEN", token);
    let env_run = exec(&ws, cmd, LONG);
    assert_eq!(env_run.code, Some(0), "{}", env_run.both());

    // A token file others can read: works, with a warning naming the file.
    let open_state = ws.path().join("open.db");
    let open = run_http_with(
        &ws,
        &open_state,
        &srv.base_url,
        &pre(4),
        &["--token-file", open_file.to_str().unwrap()],
    );
    assert_eq!(open.code, Some(0), "{}", open.both());
    assert!(
        open.stderr.contains(open_file.to_str().unwrap())
            && (open.stderr.contains("644") || open.stderr.contains("readable")),
        "no warning about a 0644 token file: {}",
        open.stderr
    );

    // The token is nowhere: state DBs (main file, WAL, SHM, lock), the log file, every
    // stdout/stderr, and runs.arguments.
    for (i, l) in logs.iter().enumerate() {
        assert!(l.exists(), "--log-file {} was written", l.display());
        if format(i) == "json" {
            for line in std::fs::read_to_string(l).unwrap().lines() {
                assert!(
                    serde_json::from_str::<serde_json::Value>(line).is_ok(),
                    "{line}"
                );
            }
        }
    }
    let files = files_below(ws.path(), &[], &[tokdir.clone(), ws.lib()]);
    assert!(files.iter().any(|p| p.ends_with("state.db")), "{files:?}");
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        for t in [token, wrong] {
            assert!(
                !contains_bytes(&bytes, t.as_bytes()),
                "the token is in {}",
                p.display()
            );
            // Also not without its prefix (e.g. a log that strips "s3cret-").
            let tail = &t[7..];
            assert!(
                !contains_bytes(&bytes, tail.as_bytes()),
                "the token's tail is in {}",
                p.display()
            );
        }
    }
    for db in [&state, &env_state, &open_state] {
        let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mut st = c.prepare("SELECT arguments FROM runs").unwrap();
        let args: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!args.is_empty());
        for a in args {
            assert!(
                !a.contains(token) && !a.contains(wrong),
                "token in runs.arguments: {a}"
            );
        }
        let opts: String = c
            .query_row("SELECT options FROM migration", [], |r| r.get(0))
            .unwrap();
        assert!(!opts.contains(token), "token in migration.options");
    }
    for o in [&none, &bad, &good, &env_run, &open] {
        for t in [token, wrong] {
            assert!(
                !o.stdout.contains(t) && !o.stderr.contains(t),
                "token printed: {}",
                o.both()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Nothing listening at start

#[test]
fn http_unreachable_server_at_start_exits_2_without_work() {
    let ws = Workspace::with_corpus(10, 66);
    let port = dead_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = exec(
        &ws,
        {
            let lib = ws.lib();
            ws.cmd(&["run", "--from", lib.to_str().unwrap(), "--to", &url])
        },
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(2), "{}", out.both());
    assert!(
        out.stderr.contains(&port.to_string()),
        "the message names the server: {}",
        out.stderr
    );
    assert_eq!(
        count_or_zero(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state <> 'pending'"
        ),
        0,
        "rows moved although the server was unreachable"
    );
}

// ---------------------------------------------------------------------------
// 7. kill -9 during uploads

#[test]
fn http_kill_9_mid_upload_sends_nothing_the_server_already_holds() {
    // More than 1000 files, so check calls must be split (the server answers 400 above 1000).
    let ws = Workspace::with_corpus_sized(1100, 67, 16);
    let mult = sha_multiplicity(&ws);
    // Every reply waits 15 ms after the upload was stored: most kills land between the server
    // storing a file and the client hearing of it.
    let srv = server(ServerConfig {
        extraction_cost: Duration::from_millis(5),
        faults: Faults {
            stall: Some(Duration::from_millis(15)),
            p_stall: 1.0,
            seed: 7,
            ..Default::default()
        },
        ..Default::default()
    });
    let transfers = 2u64;
    let kills_wanted = 10;
    let mut rng = Lcg(0x4b1d);
    let mut kills = 0u64;
    let mut attempts = 0;
    // For each kill: the server's holdings and upload calls once the process was dead.
    let mut snapshots: Vec<(BTreeSet<String>, HashMap<String, u32>)> = Vec::new();
    let mut lost_replies = 0usize;
    let lib = ws.lib();
    let err_path = ws.path().join("kill-run.stderr");
    while kills < kills_wanted && attempts < 40 {
        attempts += 1;
        let mut child = ws
            .cmd(&[
                "run",
                "--from",
                lib.to_str().unwrap(),
                "--to",
                &srv.base_url,
                "--transfers",
                &transfers.to_string(),
                "-q",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        let base = srv.stats().stored_count_by_sha1.len();
        let k = 1 + rng.next(12) as usize;
        let t0 = Instant::now();
        while srv.stats().stored_count_by_sha1.len() < base + k
            && t0.elapsed() < Duration::from_secs(120)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
            child.wait().unwrap();
            let s = srv.stats();
            let held: BTreeSet<String> = s.stored_count_by_sha1.keys().cloned().collect();
            // Held by the server but not recorded as done: the reply was lost to the kill.
            let done: BTreeSet<String> = rows_of(&ws.state())
                .into_values()
                .filter(|r| r.state == "uploaded" || r.state == "skipped")
                .filter_map(|r| r.sha1)
                .collect();
            lost_replies += held.difference(&done).count();
            snapshots.push((held, s.upload_calls_by_sha1.clone()));
        } else {
            let st = child.wait().unwrap();
            assert!(
                st.code() == Some(0),
                "a run between kills failed ({st:?}): {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
            break; // finished on its own
        }
    }
    assert!(
        kills >= 5,
        "only {kills} kills landed while uploads were going"
    );
    let out = run_http(&ws, &srv.base_url, &["--transfers", "2"]);
    assert_eq!(out.code, Some(0), "final run: {}", out.both());
    eprintln!(
        "http kill test: {kills} kills in {attempts} runs, {lost_replies} stored uploads unrecorded at a kill"
    );
    assert!(
        lost_replies > 0,
        "no kill landed between the server storing a file and the state DB recording it: the test proved nothing"
    );

    assert_complete(&ws, &srv);
    let s = srv.stats();
    let unique = ws.unique_sha1s();
    let stored_keys: BTreeSet<String> = srv.stored().keys().cloned().collect();
    assert_eq!(stored_keys, unique);
    assert!(s.stored_count_by_sha1.values().all(|&n| n == 1));
    // A kill in the middle of a request body makes the server answer 400 (truncated multipart) to
    // a client that is gone; any other 400 (e.g. a check call over 1000 items) is a client bug.
    let bad = s.status_counts.get(&400).copied().unwrap_or(0);
    assert!(
        bad <= kills * transfers,
        "{bad} requests answered 400 with only {kills} kills: {:?}",
        s.status_counts
    );

    // A content the server held when a run died is never sent again (the row left in flight is
    // checked by SHA-1 first). Contents that appear under several names are left out: a second
    // row of one may legitimately be sent while the first is in flight elsewhere.
    for (i, (held, calls_then)) in snapshots.iter().enumerate() {
        for sha in held {
            if mult.get(sha) != Some(&1) {
                continue;
            }
            assert_eq!(
                s.upload_calls_by_sha1.get(sha),
                calls_then.get(sha),
                "{sha} was held by the server when run {i} was killed, and was sent again afterwards"
            );
        }
    }
    // At most one lost upload per transfer in flight per kill; never more than 2 sends of one.
    let over: Vec<_> = s
        .upload_calls_by_sha1
        .iter()
        .filter(|(_, &n)| n > 2)
        .collect();
    assert!(over.is_empty(), "contents sent more than twice: {over:?}");
    let resent = s.upload_calls_by_sha1.values().filter(|&&n| n == 2).count() as u64;
    assert!(
        resent <= kills * transfers,
        "{resent} contents sent twice after {kills} kills with {transfers} transfers"
    );

    // No row hashed twice; killed runs recorded as ended.
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM (SELECT file_id FROM events WHERE to_state = 'hashed' GROUP BY file_id HAVING COUNT(*) > 1)"),
        0,
        "a row was hashed twice"
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM runs WHERE ended_at IS NULL"),
        0
    );
}

// ---------------------------------------------------------------------------
// 8. Retries exhausted, then retry-failed

#[test]
fn http_retries_exhausted_fail_rows_and_retry_failed_completes_them() {
    let ws = Workspace::with_corpus(16, 68);
    let mult = sha_multiplicity(&ws);
    // Every upload answers 500 while the store folder is a plain file (the server cannot create
    // its temp file); check calls are unaffected. A real server-side 500, not an injected one.
    let store = ws.path().join("server-store");
    let srv = server(ServerConfig {
        store_dir: Some(store.clone()),
        ..Default::default()
    });
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::write(&store, "not a folder").unwrap();

    let out = run_http(&ws, &srv.base_url, &["--retries", "2", "--transfers", "8"]);
    assert_eq!(out.code, Some(1), "{}", out.both());
    let rows = rows_of(&ws.state());
    let s = srv.stats();
    assert!(srv.stored().is_empty());
    assert!(
        s.status_counts.get(&500).copied().unwrap_or(0) > 0,
        "{:?}",
        s.status_counts
    );
    let mut failed = 0;
    for (path, r) in &rows {
        match r.state.as_str() {
            "failed" => {
                failed += 1;
                assert_eq!(
                    r.error_kind.as_deref(),
                    Some("transient_exhausted"),
                    "{path}: {:?}",
                    r.error
                );
            }
            // A second row of a content may wait for the first and follow it.
            "skipped" => assert_eq!(r.skip_reason.as_deref(), Some("duplicate"), "{path}"),
            other => panic!("{path}: {other} although every upload failed"),
        }
    }
    assert!(
        failed >= ws.unique_sha1s().len(),
        "one failed row per content at least"
    );
    // --retries 2: at most 3 sends per row.
    for (sha, &n) in &s.upload_calls_by_sha1 {
        let rows_with = mult[sha] as u32;
        assert!(
            n >= 1 && n <= 3 * rows_with,
            "{sha}: {n} sends with --retries 2"
        );
        if rows_with == 1 {
            assert_eq!(n, 3, "{sha}: 1 try + 2 retries");
        }
    }

    // The server can store again: retry-failed finishes the job, each content once.
    std::fs::remove_file(&store).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    let calls_before = s.upload_calls_by_sha1.clone();
    let out = exec(&ws, ws.cmd(&["retry-failed"]), LONG);
    assert_eq!(out.code, Some(0), "{}", out.both());
    assert_complete(&ws, &srv);
    let s2 = srv.stats();
    let stored_keys: BTreeSet<String> = srv.stored().keys().cloned().collect();
    assert_eq!(stored_keys, ws.unique_sha1s());
    assert_eq!(
        s2.status_counts.get(&201).copied(),
        Some(ws.unique_sha1s().len() as u64)
    );
    for sha in ws.unique_sha1s() {
        let now = s2.upload_calls_by_sha1[&sha];
        let then = calls_before.get(&sha).copied().unwrap_or(0);
        assert_eq!(now - then, 1, "{sha}: sent once by retry-failed");
    }
    for sha in ws.unique_sha1s() {
        assert!(store.join(&sha).exists(), "{sha} in the server's store");
    }
}

// ---------------------------------------------------------------------------
// 9. Files the server refuses

#[test]
fn http_files_too_large_for_the_server_fail_as_rejected_with_its_message() {
    let ws = Workspace::with_corpus(40, 69);
    let mut sizes: Vec<u64> = ws.manifest.iter().map(|e| e.size).collect();
    sizes.sort();
    let max = sizes[sizes.len() / 2];
    assert!(sizes.iter().any(|&s| s > max) && sizes.iter().any(|&s| s <= max));
    let srv = server(ServerConfig {
        max_upload_bytes: Some(max),
        ..Default::default()
    });
    let out = run_http(&ws, &srv.base_url, &[]);
    assert_eq!(out.code, Some(1), "{}", out.both());
    let rows = rows_of(&ws.state());
    let stored = srv.stored();
    let server_text = format!("file larger than {max} bytes");
    for e in &ws.manifest {
        let r = &rows[&e.path];
        if e.size > max {
            assert_eq!(r.state, "failed", "{}: {} bytes > {max}", e.path, e.size);
            assert_eq!(r.error_kind.as_deref(), Some("rejected"), "{}", e.path);
            let err = r.error.as_deref().unwrap_or("");
            assert!(
                err.contains(&server_text),
                "{}: error lacks the server's text: {err}",
                e.path
            );
            assert!(!stored.contains_key(&e.sha1));
        } else {
            assert!(
                r.state == "uploaded"
                    || (r.state == "skipped" && r.skip_reason.as_deref() == Some("duplicate")),
                "{}: {} ({:?})",
                e.path,
                r.state,
                r.error
            );
            assert!(stored.contains_key(&e.sha1), "{}: not stored", e.path);
        }
    }
    let s = srv.stats();
    assert!(s.status_counts.get(&413).copied().unwrap_or(0) >= 1);
    // A permanent refusal is not retried within the run.
    let big: BTreeSet<&str> = ws
        .manifest
        .iter()
        .filter(|e| e.size > max)
        .map(|e| e.sha1.as_str())
        .collect();
    let mult = sha_multiplicity(&ws);
    for sha in big {
        let n = s.upload_calls_by_sha1.get(sha).copied().unwrap_or(0);
        assert!(
            n >= 1 && n as usize <= mult[sha],
            "{sha}: rejected content sent {n} times for {} rows",
            mult[sha]
        );
    }
    let st = ws.status();
    assert_status_adds_up(&st);
    assert_eq!(
        st["failures"]["rejected"].as_u64().unwrap(),
        ws.manifest.iter().filter(|e| e.size > max).count() as u64
    );
    assert_event_histories_valid(&ws);
}

/// A 1 GiB sparse file goes to the server streamed from disk (after one hashing read), with the
/// client's memory flat: its peak RSS stays far below the file's size. The peak is the client's
/// own (`hostile_server::spawn_measured`): `wait4`'s `ru_maxrss` counted the test process's
/// memory too, and passed 200 MiB when many tests ran at once.
#[test]
fn http_a_1_gib_sparse_file_is_streamed_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    let ws = Workspace::empty();
    let big = ws.lib().join("Huge Scan - Big Author.pdf");
    std::fs::File::create(&big).unwrap().set_len(GIB).unwrap();
    std::fs::write(
        ws.lib().join("Small Book - Some Author.txt"),
        "a small book",
    )
    .unwrap();
    let srv = server(ServerConfig::default());
    let lib = ws.lib();
    let mut cmd = ws.cmd(&[
        "run",
        "--from",
        lib.to_str().unwrap(),
        "--to",
        &srv.base_url,
        "-q",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (status, peak_mib) = spawn_measured(cmd, LONG, String::new);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    eprintln!("1 GiB upload: client peak RSS {peak_mib} MiB");
    assert!(
        peak_mib < 200,
        "peak RSS {peak_mib} MiB while sending a 1 GiB file"
    );

    let mut h = Sha1::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        h.update(&zeros);
    }
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let stored = srv.stored();
    let got = stored
        .get(&want)
        .expect("the 1 GiB file is stored under its SHA-1");
    assert_eq!(got.size, GIB);
    // Read twice (hash, then stream) plus the bounded prefix/suffix the PDF parser scans; sent
    // once.
    let (read, sent) = ws.run_bytes();
    let small = "a small book".len() as i64;
    assert_eq!(sent, GIB as i64 + small);
    let extra = read - (2 * GIB as i64 + small);
    assert!(
        (0..=32 << 20).contains(&extra),
        "read {read} bytes: {extra} beyond two reads"
    );
}

// ---------------------------------------------------------------------------
// 10. A server slower than the stages before it

#[test]
fn http_a_slow_server_holds_back_the_stages_before_it() {
    // 3000 tiny files hash in about a second; the server takes 2 ms a file, one at a time. The
    // transfer stage holds at most 128 rows it handed to the target and one group ready (see
    // `pipeline::transfer`), so the rows waiting for the server (`metadata_cached`, each with
    // its metadata, and its bytes while the buffer budget lasts) stay within the queue into
    // the stage (512) and those, however far the stages before it run ahead. A resumed 1M-file
    // run once held 175,000 of them (1.8 GB).
    let ws = Workspace::empty();
    let files = 3000;
    for i in 0..files {
        let dir = ws.lib().join(format!("d{:02}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("book-{i:04}.txt")), format!("book {i}\n")).unwrap();
    }
    let srv = server(ServerConfig {
        store_cost: Duration::from_millis(2),
        ..Default::default()
    });
    let lib = ws.lib();
    let mut child = ws
        .cmd(&[
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            &srv.base_url,
            "--transfers",
            "1",
            "-q",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = ws.state();
    let mut most_waiting = 0;
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed() < LONG {
        let waiting = count_or_zero(
            &state,
            "SELECT COUNT(*) FROM files WHERE state = 'metadata_cached'",
        );
        most_waiting = most_waiting.max(waiting);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let uploaded = count_or_zero(
        &state,
        "SELECT COUNT(*) FROM files WHERE state = 'uploaded'",
    );
    assert_eq!(uploaded, files as i64, "every file uploaded");
    eprintln!("slow server: at most {most_waiting} rows waited for the transfer at once");
    // 512 queued into the stage + 128 handed to the target + 8 ready, and the state writer's
    // uncommitted moves (at most 100 ms of 2 ms uploads): well under 1000.
    assert!(
        most_waiting <= 1000,
        "{most_waiting} rows waited for the transfer at once: the stage does not hold back \
         the stages before it"
    );
}
