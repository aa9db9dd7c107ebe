//! Logs a user can follow, end to end on the real binary: what the default level, `-v` and
//! `--log-format json` print (checked line by line against the state DB), what `--log-file`
//! receives under `-q`, how often `--stats` prints progress without a terminal, and what the
//! run summary says when a run is interrupted.

use crate::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// How many warnings the default level shows before it only counts them.
const FIRST_FEW: usize = 5;

/// A library with files of every fate: four migrated, one duplicate of them (skipped), eight
/// EPUBs that are not ZIPs (migrated with warnings) and an empty one (failed).
fn mixed() -> Workspace {
    let ws = Workspace::empty();
    let lib = ws.lib();
    for i in 0..4 {
        std::fs::write(lib.join(format!("good{i}.txt")), format!("good book {i}\n")).unwrap();
    }
    std::fs::write(lib.join("copy.txt"), "good book 0\n").unwrap();
    for i in 0..8 {
        std::fs::write(
            lib.join(format!("broken{i}.epub")),
            format!("not a zip {i}\n"),
        )
        .unwrap();
    }
    std::fs::write(lib.join("empty.epub"), "").unwrap();
    ws
}

/// A row: (id, source_ref, state, skip reason or failure kind, target_ref).
type Row = (i64, String, String, Option<String>, Option<String>);

/// Each row, in id order.
fn rows(ws: &Workspace) -> Vec<Row> {
    let db = ws.db();
    let mut st = db
        .prepare(
            "SELECT id, source_ref, state, COALESCE(skip_reason, error_kind), target_ref
             FROM files ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Every warning the state DB holds (one per line of `files.warnings`).
fn warnings_in_db(ws: &Workspace) -> usize {
    let db = ws.db();
    let mut st = db
        .prepare("SELECT warnings FROM files WHERE warnings IS NOT NULL")
        .unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|w| w.unwrap().lines().count())
        .sum()
}

/// The text per-file line of a row: `STATE SOURCE`, then the target or the reason.
fn file_line_key(state: &str, source: &str) -> String {
    format!("{state} {source}")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The default level: no line per file, each failure, the first few warnings and the count of
/// the rest, and a summary with the skips by reason, the failures by kind with the next step,
/// and where to see the warnings.
#[test]
fn the_default_level_shows_the_first_warnings_a_count_and_no_line_per_file() {
    let ws = mixed();
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let rows = rows(&ws);
    for (_, source, state, _, _) in &rows {
        if state != "failed" {
            assert!(
                !err.contains(&file_line_key(state, source)),
                "a line for {source} at the default level:\n{err}"
            );
        }
    }
    let shown = err
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("broken"))
        .count();
    assert_eq!(shown, FIRST_FEW, "the first warnings, no more:\n{err}");
    let total = warnings_in_db(&ws);
    assert!(total > FIRST_FEW, "{total}");
    let s = ws.state();
    let me = format!("{} --state {}", bin().display(), s.display());
    assert!(
        err.contains(&format!(
            "… and {} more warning(s); see `{me} report --warnings`",
            total - FIRST_FEW
        )),
        "{err}"
    );
    assert!(err.contains("8 file(s) with warnings"), "{err}");
    assert!(err.contains("skipped by reason: duplicate 1"), "{err}");
    assert!(
        err.contains("empty_file: 1 — nothing to send: the files have no bytes"),
        "{err}"
    );
    assert!(!err.contains("interrupted"), "{err}");
}

/// `-v`: exactly one line per file, when it reaches its final state, saying which.
#[test]
fn verbose_prints_one_line_per_file_with_its_final_state() {
    let ws = mixed();
    let o = ws.migrate(&["-v"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let rows = rows(&ws);
    assert_eq!(rows.len(), 14);
    for (_, source, state, reason, target) in &rows {
        let key = file_line_key(state, source);
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(&key)).collect();
        assert_eq!(lines.len(), 1, "{key}:\n{err}");
        match state.as_str() {
            "uploaded" => assert!(lines[0].contains(&format!("→ {}", target.as_ref().unwrap()))),
            _ => assert!(
                lines[0].contains(reason.as_deref().unwrap()),
                "{}",
                lines[0]
            ),
        }
    }
    // Every warning, none held back.
    let shown = err
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("broken"))
        .count();
    assert_eq!(shown, warnings_in_db(&ws), "{err}");
    assert!(!err.contains("more warning"), "{err}");
    // Not the stages: that is -vv.
    assert!(!err.contains("DEBUG"), "{err}");
}

/// `--log-format json`: every line a JSON object; one per file with its id, source, state,
/// reason and target, as the state DB has them.
#[test]
fn json_log_lines_parse_and_carry_each_files_fields() {
    let ws = mixed();
    let o = ws.migrate(&["-v", "--log-format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines = json_lines(&stderr(&o));
    for l in &lines {
        assert!(l["time"].is_string() && l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    let rows = rows(&ws);
    for (id, source, state, reason, target) in &rows {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["file_id"] == *id && l["state"].is_string())
            .collect();
        assert_eq!(mine.len(), 1, "file {id} ({source}): {mine:?}");
        let l = mine[0];
        assert_eq!(l["source"], source.as_str(), "{l}");
        assert_eq!(l["state"], state.as_str(), "{l}");
        assert_eq!(l["reason"].as_str(), reason.as_deref(), "{l}");
        assert_eq!(l["target"].as_str(), target.as_deref(), "{l}");
    }
    let warned = lines
        .iter()
        .filter(|l| l["level"] == "WARN" && l["file_id"].is_i64() && l["state"].is_null())
        .count();
    assert_eq!(warned, warnings_in_db(&ws));
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("8 file(s) with warnings")),
        "the summary is a JSON line too"
    );
}

/// `--log-file` gets everything at debug level whatever `-q` says: the stages, and a line per
/// file (in the chosen format), while the terminal stays silent.
#[test]
fn the_log_file_gets_debug_and_a_line_per_file_under_quiet() {
    let ws = mixed();
    for format in ["text", "json"] {
        let log = ws.path().join(format!("run-{format}.log"));
        let _ = std::fs::remove_dir_all(ws.out());
        let _ = std::fs::remove_file(ws.state());
        let o = ws.migrate(&[
            "-q",
            "--log-format",
            format,
            "--log-file",
            log.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(o.stderr.is_empty(), "-q printed: {}", stderr(&o));
        let text = std::fs::read_to_string(&log).unwrap();
        let rows = rows(&ws);
        if format == "json" {
            let lines = json_lines(&text);
            assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "{text}");
            for (id, ..) in &rows {
                let n = lines
                    .iter()
                    .filter(|l| l["file_id"] == *id && l["state"].is_string())
                    .count();
                assert_eq!(n, 1, "file {id}: {text}");
            }
        } else {
            assert!(text.contains("DEBUG"), "{text}");
            for (_, source, state, ..) in &rows {
                let key = file_line_key(state, source);
                assert_eq!(
                    text.lines().filter(|l| l.contains(&key)).count(),
                    1,
                    "{key}"
                );
            }
        }
    }
}

/// A run of `ws` (with `extra`) held up for 3 s mid-way by holding the state DB's write lock
/// (it can land nothing meanwhile): its exit code and what it printed on standard error.
fn held_up_run(ws: &Workspace, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["--transfers", "1", "--checkers", "1"];
    args.extend_from_slice(extra);
    let mut child = ws
        .migrate_cmd(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let printed = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let uploaded = "SELECT COUNT(*) FROM files WHERE state = 'uploaded'";
    let t0 = Instant::now();
    while count_or_zero(&ws.state(), uploaded) < 5 {
        assert!(child.try_wait().unwrap().is_none(), "ended before 5 files");
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let hold = WriteHold::take(&ws.state());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be held up"
    );
    std::thread::sleep(Duration::from_secs(3));
    drop(hold);
    let code = child.wait().unwrap().code();
    (code, printed.join().unwrap())
}

/// Without a terminal, progress lines come every `--stats` (here 1 s, over a run held up for
/// 3 s), also into the `--log-file` under `-q`; the default (a minute) prints none in a short
/// run.
#[test]
fn stats_sets_how_often_progress_lines_come_without_a_terminal() {
    let ws = Workspace::with_corpus_sized(1500, 71, 4);
    let (code, text) = held_up_run(&ws, &["--stats", "1s"]);
    assert_eq!(code, Some(0), "{text}");
    let progress = text.lines().filter(|l| l.contains("progress:")).count();
    assert!(progress >= 2, "{progress} progress line(s) in 3 s:\n{text}");

    // -q quiets the terminal, not the --log-file: the progress lines go there.
    std::fs::remove_dir_all(ws.out()).unwrap();
    std::fs::remove_file(ws.state()).unwrap();
    let log = ws.path().join("quiet.log");
    let (code, text) = held_up_run(
        &ws,
        &["-q", "--stats", "1s", "--log-file", log.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.is_empty(), "-q printed: {text}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let progress = logged.lines().filter(|l| l.contains("progress:")).count();
    assert!(
        progress >= 2,
        "{progress} progress line(s) in the log:\n{logged}"
    );

    let quick = Workspace::with_corpus_sized(20, 72, 8);
    let o: Output = quick.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("progress:"), "{}", stderr(&o));
    let off = Workspace::with_corpus_sized(5, 73, 8);
    let o = off.migrate(&["--stats", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bad = off.migrate(&["--stats", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

/// A run stopped by Ctrl-C says how far it got and the exact command that continues it, and
/// exits 3: never "done".
#[test]
fn an_interrupted_run_says_how_far_it_got_and_how_to_continue() {
    // As large as the signals tests' run: a smaller one may land whole between two looks.
    let ws = Workspace::with_corpus_sized(2500, 74, 16);
    let mut child = ws
        .migrate_cmd(&["--transfers", "1", "--checkers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let landed = "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped', 'failed')";
    let t0 = Instant::now();
    while count_or_zero(&ws.state(), landed) < 10 {
        assert!(child.try_wait().unwrap().is_none(), "ended before 10 files");
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Held so the run cannot end before it takes the signal in.
    let hold = WriteHold::take(&ws.state());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be interrupted"
    );
    // SAFETY: a signal to our own child, alive and not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut text = String::new();
    let t0 = Instant::now();
    while !text.contains("bookferry: stopping;") {
        assert!(t0.elapsed() < Duration::from_secs(30), "no stop: {text}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            text.push_str(&l);
            text.push('\n');
        }
    }
    drop(hold);
    let code = child.wait().unwrap().code();
    reader.join().unwrap();
    text.extend(rx.try_iter().map(|l| l + "\n"));
    assert_eq!(code, Some(3), "{text}");
    let done: i64 = ws.count(
        "SELECT files_uploaded + files_skipped + files_failed FROM runs ORDER BY id DESC LIMIT 1",
    );
    let total = ws.manifest.len();
    assert!((done as usize) < total, "{done} of {total}");
    let s = ws.state();
    assert!(
        text.contains(&format!(
            "interrupted after {done} of {total} files; run `{} --state {} run` to continue",
            bin().display(),
            s.display()
        )),
        "{text}"
    );
    assert!(!text.contains("done in"), "{text}");
}

/// `-v` has a line for the files a scan ends too: one gone from the source before it was
/// migrated, one the filter leaves out now. Before, the scan ended them with no line.
#[test]
fn verbose_names_the_files_a_scan_skips() {
    let ws = Workspace::with_corpus(6, 251);
    let lib = ws.lib();
    let scan = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));
    let (gone, left_out) = (&ws.manifest[0].path, &ws.manifest[1].path);
    std::fs::remove_file(lib.join(gone)).unwrap();
    let o = ws.migrate(&["-v", "--exclude", &format!("/{left_out}")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    for (source, reason) in [(gone, "source_gone"), (left_out, "excluded")] {
        let line = format!("{}: {reason}", file_line_key("skipped", source));
        assert_eq!(err.matches(&line).count(), 1, "{line}:\n{err}");
    }
}
