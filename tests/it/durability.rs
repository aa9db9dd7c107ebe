//! The order of the system calls that make placed files durable, read from a syscall trace:
//! `kill -9` cannot test it (the page cache outlives the process), a trace can. For every file
//! the state DB records as placed in a folder target, `strace` must show a `syncfs` that started
//! after the file got its name (its `linkat`/`rename`/`renameat2` returned) and returned before
//! the row's move to `uploaded` was stamped (`events.at`, taken inside the transaction that
//! records it): the state DB never claims a file, or a directory entry, the disk may not hold.
//!
//! Needs `strace` (CI installs it; `BOOKFERRY_REQUIRE_STRACE` makes its absence a failure).

use crate::util::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// One traced system call: when it started and returned (µs since the epoch, the clock the
/// state DB's `events.at` uses), its name, the text of its arguments, and its result.
#[derive(Debug, Clone)]
struct Call {
    start_us: i64,
    end_us: i64,
    name: String,
    args: String,
    ok: bool,
}

fn have_strace() -> bool {
    let found = Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("BOOKFERRY_REQUIRE_STRACE").is_none(),
            "strace is not installed, and BOOKFERRY_REQUIRE_STRACE is set"
        );
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("SKIPPED: {test}: needs strace");
    }
    found
}

/// `1700000000.123456` as µs.
fn micros(ts: &str) -> i64 {
    let (s, frac) = ts.split_once('.').expect("strace -ttt time");
    s.parse::<i64>().unwrap() * 1_000_000 + format!("{frac:0<6}")[..6].parse::<i64>().unwrap()
}

/// `<0.000123>` at the end of a line (strace -T) as µs; `None` for `<unavailable>` (a call the
/// process ended in: `= ? <unavailable>`).
fn duration_us(line: &str) -> Option<i64> {
    let open = line.rfind('<').expect("strace -T duration");
    let secs = line[open + 1..line.len() - 1].trim();
    secs.contains('.').then(|| micros(secs))
}

/// The calls of an `strace -f -ttt -T -o` log, calls split by other threads' output
/// (`<unfinished ...>` … `<... name resumed>`) joined again.
fn parse_trace(log: &str) -> Vec<Call> {
    let mut open: HashMap<String, (i64, String, String)> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        // `PID TIME CALL…`, the pid padded with spaces to five places.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((ts, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let start_us = micros(ts);
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            let name = head.split('(').next().unwrap().to_string();
            open.insert(pid.to_string(), (start_us, name, head.to_string()));
            continue;
        }
        let (start_us, name, text) = if let Some(tail) = rest.strip_prefix("<... ") {
            let Some((began, name, head)) = open.remove(pid) else {
                continue;
            };
            let tail = tail.split_once(" resumed>").map(|(_, t)| t).unwrap_or("");
            (began, name, format!("{head}{tail}"))
        } else {
            let name = rest.split('(').next().unwrap().to_string();
            (start_us, name, rest.to_string())
        };
        if !text.ends_with('>') {
            continue; // a call that never returned (the process ended in it)
        }
        // `name(args) = 0 <dur>`; strace pads short calls: `syncfs(18)      = 0 <dur>`.
        let Some(eq) = text.rfind(" = ") else {
            continue;
        };
        let result = text[eq + 3..].split(' ').next().unwrap_or("");
        let Some(duration) = duration_us(&text) else {
            continue; // a call that never returned (the process ended in it)
        };
        calls.push(Call {
            start_us,
            end_us: start_us + duration,
            name,
            args: text[..eq].trim_end().to_string(),
            ok: result == "0",
        });
    }
    calls
}

/// The strings a call names (its quoted arguments as strace prints them, its escapes —
/// `\\303\\255` for a byte outside ASCII, `\\"`, `\\\\` — undone).
fn quoted(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut bytes = args.bytes().peekable();
    while let Some(b) = bytes.next() {
        if b != b'"' {
            continue;
        }
        let mut text = Vec::new();
        while let Some(b) = bytes.next() {
            match b {
                b'"' => break,
                b'\\' => match bytes.next() {
                    Some(d @ b'0'..=b'7') => {
                        let mut v = u32::from(d - b'0');
                        for _ in 0..2 {
                            match bytes.peek() {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    bytes.next();
                                }
                                _ => break,
                            }
                        }
                        text.push(v as u8);
                    }
                    Some(b'n') => text.push(b'\n'),
                    Some(b't') => text.push(b'\t'),
                    Some(other) => text.push(other),
                    None => break,
                },
                other => text.push(other),
            }
        }
        out.push(String::from_utf8_lossy(&text).into_owned());
    }
    out
}

/// Trace a run into the workspace's folder target; the trace's calls.
fn traced_run(ws: &Workspace, extra: &[&str]) -> Vec<Call> {
    let log = std::env::temp_dir().join("bookferry-durability-strace.log");
    let plain = ws.migrate_cmd(extra);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-ttt", "-T", "-qq", "-s", "4096", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=link,linkat,rename,renameat,renameat2,syncfs,fsync,fdatasync",
        ])
        .arg("--")
        .arg(plain.get_program())
        .args(plain.get_args())
        .current_dir(ws.path())
        .env_remove("BOOKFERRY_STATE")
        .env_remove("BOOKFERRY_TOKEN");
    let out = cmd.output().expect("strace runs");
    assert!(out.status.success(), "traced run failed: {}", stderr(&out));
    parse_trace(&std::fs::read_to_string(&log).unwrap())
}

/// A `syncfs` started after `named_us` and returned before a stamp of `at_ms` was taken (`at` is
/// milliseconds rounded down: the stamp was taken before `at_ms + 1` ms).
fn synced_between(syncs: &[&Call], named_us: i64, at_ms: i64) -> bool {
    syncs
        .iter()
        .any(|s| s.start_us > named_us && s.end_us <= (at_ms + 1) * 1000)
}

/// For every row recorded `uploaded`: the call that gave its file its final name, and a
/// `syncfs` between that call's return and the stamp of the move. Returns the rows checked.
fn assert_named_then_synced_then_recorded(ws: &Workspace, calls: &[Call]) -> usize {
    let out = ws.out();
    let mut named: HashMap<String, i64> = HashMap::new();
    for c in calls.iter().filter(|c| {
        c.ok && matches!(
            c.name.as_str(),
            "link" | "linkat" | "rename" | "renameat" | "renameat2"
        )
    }) {
        if let Some(dest) = quoted(&c.args).last() {
            if let Ok(rel) = Path::new(dest.as_str()).strip_prefix(&out) {
                // The last call naming a path is the one that left the file there.
                named.insert(rel.to_string_lossy().into_owned(), c.end_us);
            }
        }
    }
    let syncs: Vec<&Call> = calls
        .iter()
        .filter(|c| c.ok && c.name == "syncfs")
        .collect();
    assert!(!syncs.is_empty(), "no syncfs in the trace");
    let db = ws.db();
    let mut q = db
        .prepare(
            "SELECT f.target_ref, e.at FROM events e JOIN files f ON f.id = e.file_id \
             WHERE e.to_state = 'uploaded'",
        )
        .unwrap();
    let rows: Vec<(String, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty(), "nothing was recorded uploaded");
    for (target_ref, at_ms) in &rows {
        let named_us = *named.get(target_ref).unwrap_or_else(|| {
            panic!("{target_ref}: recorded uploaded, but no traced call named it")
        });
        assert!(
            synced_between(&syncs, named_us, *at_ms),
            "{target_ref}: named at {named_us} µs and recorded uploaded at {at_ms} ms, \
             with no syncfs started after the one and returned before the other \
             (syncfs calls around it: {:?})",
            syncs
                .iter()
                .filter(|s| (s.start_us - named_us).abs() < 500_000)
                .map(|s| (s.start_us, s.end_us))
                .collect::<Vec<_>>()
        );
    }
    rows.len()
}

#[test]
fn every_placed_file_is_made_durable_before_the_state_db_records_it() {
    if !have_strace() {
        return;
    }
    let ws = Workspace::with_corpus(300, 4141);
    let calls = traced_run(&ws, &["--transfers", "4", "-q"]);
    let checked = assert_named_then_synced_then_recorded(&ws, &calls);
    let placed = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    assert_eq!(checked as i64, placed);
    assert!(placed > 250, "only {placed} files placed");
}

#[test]
fn a_trace_with_the_record_before_the_sync_is_caught() {
    // The checker itself, on a hand-made trace: a file named at t=1 s, a syncfs that returns
    // only after the record's stamp, then one that starts before the file was named. strace
    // pads the pid column to five places (`3139  1.0…` on a machine whose pids are still
    // small, as a fresh CI machine's are).
    let log = "\
10    1.000000 linkat(AT_FDCWD, \"/proc/self/fd/7\", AT_FDCWD, \"/o/a.epub\", AT_SYMLINK_FOLLOW) = 0 <0.000010>
11    0.990000 syncfs(5)      = 0 <0.005000>
11 1.001000 syncfs(5 <unfinished ...>
10 1.001500 rename(\"/o/.t\", \"/o/Sof\\303\\255a \\\"b\\\".epub\") = 0 <0.000010>
11 1.001000 <... syncfs resumed>) = 0 <0.004000>
12 1.002000 syncfs(5 <unfinished ...>
12 1.003000 <... syncfs resumed>) = ? <unavailable>
";
    let calls = parse_trace(log);
    assert_eq!(calls.len(), 4, "{calls:?}");
    let sync = calls.iter().find(|c| c.start_us == 1_001_000).unwrap();
    assert_eq!(sync.end_us, 1_005_000);
    assert_eq!(quoted(&calls[0].args).last().unwrap(), "/o/a.epub");
    assert_eq!(
        quoted(&calls[2].args).last().unwrap(),
        "/o/Sofía \"b\".epub"
    );
    let syncs: Vec<&Call> = calls.iter().filter(|c| c.name == "syncfs").collect();
    // Recorded at 1.003 s: the only syncfs started after 1.00001 s returned at 1.005 s.
    assert!(!synced_between(&syncs, calls[0].end_us, 1003));
    // Recorded at 1.005 s: that syncfs counts.
    assert!(synced_between(&syncs, calls[0].end_us, 1005));
}
