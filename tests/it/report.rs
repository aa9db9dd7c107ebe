//! `bookferry report`, end to end: a real migration with one file of each outcome (migrated,
//! migrated with warnings, failed, skipped by name and size, a content duplicate), listed as a
//! table, CSV and JSON, checked against the state DB row by row.

use crate::util::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;

/// A library whose second run has one row of every kind: `good.txt` (migrated in run 1),
/// `copy.txt` (its duplicate), `empty.epub` (failed), `broken.epub` (migrated with warnings),
/// `there.txt` (skipped: the target has a file of its name and size, placed by hand).
fn migrated() -> Workspace {
    let ws = Workspace::empty();
    let lib = ws.lib();
    std::fs::write(lib.join("good.txt"), "the same bytes\n").unwrap();
    std::fs::write(lib.join("empty.epub"), "").unwrap();
    std::fs::write(lib.join("broken.epub"), "not a zip\n").unwrap();
    let layout = ["--layout", "{source_path}.{ext}"];
    let first = ws.migrate(&layout);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    std::fs::write(lib.join("copy.txt"), "the same bytes\n").unwrap();
    std::fs::write(lib.join("there.txt"), "twelve bytes").unwrap();
    std::fs::write(ws.out().join("there.txt"), "12 bytes, eh").unwrap();
    let second = ws.migrate(&layout);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    ws
}

fn report(ws: &Workspace, args: &[&str]) -> std::process::Output {
    let mut a = vec!["report"];
    a.extend_from_slice(args);
    ws.run(&a)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_rows(ws: &Workspace, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["--format", "json"];
    a.extend_from_slice(args);
    let o = report(ws, &a);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&o)))
        .as_array()
        .unwrap()
        .clone()
}

fn sources(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["source"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn report_lists_each_kind_with_its_reason_source_and_target() {
    let ws = migrated();
    let id_of = |name: &str| -> i64 {
        ws.db()
            .query_row("SELECT id FROM files WHERE source_ref = ?1", [name], |r| {
                r.get(0)
            })
            .unwrap()
    };

    // The default: what needs a look — failed, skipped, warnings — in id order.
    let problems = json_rows(&ws, &[]);
    assert_eq!(
        sources(&problems),
        ["broken.epub", "empty.epub", "copy.txt", "there.txt"]
    );
    let by_source: BTreeMap<String, &Value> = problems
        .iter()
        .map(|r| (r["source"].as_str().unwrap().to_string(), r))
        .collect();
    let failed = by_source["empty.epub"];
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["reason"], "empty_file");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .ends_with("empty.epub: the file is empty (0 bytes)"),
        "{failed}"
    );
    let dup = by_source["copy.txt"];
    assert_eq!(dup["reason"], "duplicate");
    assert_eq!(dup["duplicate_of"], id_of("good.txt"));
    assert_eq!(dup["duplicate_of_source"], "good.txt");
    assert_eq!(dup["duplicate_of_target"], "good.txt");
    assert_eq!(by_source["there.txt"]["reason"], "target_has_name_size");
    let warned = by_source["broken.epub"];
    assert_eq!(warned["state"], "uploaded");
    assert_eq!(warned["target"], "broken.epub");
    assert!(
        warned["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("unreadable ZIP container"),
        "{warned}"
    );

    // Each kind alone, and narrowed by reason and by run.
    assert_eq!(sources(&json_rows(&ws, &["--failed"])), ["empty.epub"]);
    assert_eq!(
        sources(&json_rows(&ws, &["--skipped"])),
        ["copy.txt", "there.txt"]
    );
    assert_eq!(sources(&json_rows(&ws, &["--duplicates"])), ["copy.txt"]);
    assert_eq!(sources(&json_rows(&ws, &["--warnings"])), ["broken.epub"]);
    assert_eq!(
        sources(&json_rows(&ws, &["--uploaded"])),
        ["broken.epub", "good.txt"]
    );
    assert_eq!(json_rows(&ws, &["--all"]).len(), 5);
    assert_eq!(
        sources(&json_rows(&ws, &["--reason", "target_has_name_size"])),
        ["there.txt"]
    );
    assert_eq!(
        sources(&json_rows(&ws, &["--run", "2"])),
        ["copy.txt", "there.txt"]
    );

    // CSV: the same rows and fields, one record each, with a header.
    let csv = report(&ws, &["--all", "--format", "csv"]);
    assert_eq!(csv.status.code(), Some(0), "{}", stderr(&csv));
    let text = stdout(&csv);
    let header = text.lines().next().unwrap();
    assert_eq!(
        header,
        "id,state,reason,source,path,target,duplicate_of,duplicate_of_source,\
         duplicate_of_target,size,format,sha1,message,warnings,run,changed_at,source_book,target_book"
    );
    let all = json_rows(&ws, &["--all"]);
    for row in &all {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{},", row["id"])))
            .unwrap_or_else(|| panic!("no CSV record for {row}"));
        assert!(line.contains(&format!(",{},", row["state"].as_str().unwrap())));
    }

    // The table: one line per file, the reason and the message or target on it.
    let table = stdout(&report(&ws, &[]));
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} not in\n{table}"))
            .to_string()
    };
    assert!(line("empty.epub").contains("empty_file"), "{table}");
    assert!(
        line("copy.txt").contains(&format!(
            "duplicate of #{} good.txt → good.txt",
            id_of("good.txt")
        )),
        "{table}"
    );
    assert!(
        table.contains("warning: unreadable ZIP container"),
        "{table}"
    );
    assert!(table.ends_with("4 files listed\n"), "{table}");
}

#[test]
fn report_refuses_unknown_reasons_and_runs_and_writes_to_a_file() {
    let ws = migrated();
    let o = report(&ws, &["--reason", "duplicat"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--reason \"duplicat\": unknown reason"),
        "{}",
        stderr(&o)
    );
    let o = report(&ws, &["--run", "7"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--run 7: no such run") && stderr(&o).contains("runs: 1–2"),
        "{}",
        stderr(&o)
    );

    let file = ws.path().join("failed.csv");
    let o = report(
        &ws,
        &["--failed", "--format", "csv", "-o", file.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 2, "{written}");
    assert!(
        written.contains(",failed,empty_file,empty.epub,"),
        "{written}"
    );

    let o = report(&ws, &["-o", "/nonexistent-dir/r.csv"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent-dir/r.csv: cannot write the report"));
}

/// `bookferry report | head -1`: the reader closes the pipe early; that is not an error.
#[test]
fn report_into_a_closed_pipe_ends_quietly() {
    let ws = Workspace::with_corpus(300, 7);
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut child = ws
        .cmd(&["report", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

/// `bookferry status | head -1` and `bookferry verify | head -1`: standard output is a pipe whose
/// reader is gone before the command writes (closed before it starts, so the write always fails):
/// no panic, and each command still ends with its own exit code.
#[test]
fn status_and_verify_into_a_closed_pipe_end_quietly() {
    let ws = Workspace::with_corpus(20, 7);
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for args in [&["status"][..], &["status", "--json"], &["verify"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = ws
            .cmd(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
}

/// `status` explains itself: the migration, skips by reason, each failure kind with what to do,
/// the files with warnings, and the command that continues — with `--state` so it can be pasted.
#[test]
fn status_names_the_migration_the_next_steps_and_the_command_to_continue() {
    let ws = migrated();
    let s = ws.state().display().to_string();
    let o = ws.run(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let lib = ws.lib().display().to_string();
    assert!(
        text.contains(&format!("migration: dir:{lib} → dir:")),
        "{text}"
    );
    assert!(text.contains("  duplicate: 1\n"), "{text}");
    assert!(text.contains("  target_has_name_size: 1\n"), "{text}");
    assert!(
        text.contains("  empty_file: 1 — nothing to send: the files have no bytes"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "files with warnings: 1 (which and why: {} --state {s} report --warnings)",
            bin().display()
        )),
        "{text}"
    );
    assert!(
        !text.contains("to continue"),
        "nothing left to migrate: {text}"
    );

    let json = ws.status();
    assert_eq!(json["files_with_warnings"], 1, "{json}");
    assert_eq!(json["migration"]["source"], format!("dir:{lib}"), "{json}");
    assert_eq!(json["next_steps"][0]["kind"], "empty_file", "{json}");
    assert!(json["continue"].is_null(), "{json}");

    // A scan alone leaves rows to migrate and no target: say how to go on.
    let other = ws.path().join("other.db");
    let o = ws
        .cmd_with_state(&other, &["scan", "--from", &lib])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = ws.cmd_with_state(&other, &["status"]).output().unwrap();
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "files still to migrate; to continue: {} --state {} run --to TARGET",
            bin().display(),
            other.display()
        )),
        "{text}"
    );
}

/// `-q` quiets the terminal, never the `--log-file`: the file gets the scan's and the run's
/// summaries (and the debug lines) while standard error stays empty.
#[test]
fn quiet_keeps_the_terminal_silent_and_the_log_file_whole() {
    let ws = Workspace::with_corpus(20, 9);
    let log = ws.path().join("run.log");
    let o = ws.migrate(&["-q", "--log-file", log.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "-q printed: {}", stderr(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO") && text.contains("done in"), "{text}");
    assert!(text.contains("scan: "), "{text}");
    assert!(text.contains("DEBUG"), "{text}");
}
