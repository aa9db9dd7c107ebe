//! `bookferry verify`, end to end on a folder target: files deleted, truncated, rewritten or
//! replaced in the target are found, exactly those; `--source` finds changed and deleted source
//! files; an interrupted verify continues its pass.

use crate::protocol_server::{ServerConfig, TestServer};
use crate::util::*;
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) fn verify(ws: &Workspace, args: &[&str]) -> (Option<i32>, String) {
    let mut a = vec!["verify"];
    a.extend_from_slice(args);
    let o = ws.run(&a);
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The `verified` rows of the last pass: source_ref → (target, source) verdicts.
pub(crate) fn verdicts(
    ws: &Workspace,
) -> std::collections::BTreeMap<String, (String, Option<String>)> {
    let db = ws.db();
    let mut st = db
        .prepare(
            "SELECT f.source_ref, v.target, v.source FROM verified v JOIN files f ON f.id = v.file_id
             WHERE v.pass_id = (SELECT MAX(id) FROM verify_passes)",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn target_of(ws: &Workspace, source_ref: &str) -> std::path::PathBuf {
    let rel: String = ws
        .db()
        .query_row(
            "SELECT target_ref FROM files WHERE source_ref = ?1",
            [source_ref],
            |r| r.get(0),
        )
        .unwrap();
    ws.out().join(rel)
}

#[test]
fn verify_finds_exactly_the_files_deleted_truncated_rewritten_or_replaced() {
    let ws = Workspace::with_corpus(60, 11);
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let n = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("target: {n} ok")), "{out}");

    let names: Vec<String> = ws.manifest.iter().map(|e| e.path.clone()).collect();
    let uploaded = |n: &String| {
        ws.count(&format!(
            "SELECT COUNT(*) FROM files WHERE state = 'uploaded' AND source_ref = '{}'",
            n.replace('\'', "''")
        )) == 1
    };
    let picked: Vec<&String> = names.iter().filter(|n| uploaded(n)).take(4).collect();
    let (deleted, truncated, rewritten, fifo) = (picked[0], picked[1], picked[2], picked[3]);
    std::fs::remove_file(target_of(&ws, deleted)).unwrap();
    let t = target_of(&ws, truncated);
    let len = std::fs::metadata(&t).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Same size, other bytes: only the content tells.
    let r = target_of(&ws, rewritten);
    let mut bytes = std::fs::read(&r).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&r, bytes).unwrap();
    // Something that would block a reader: verify must not hang on it.
    let f = target_of(&ws, fifo);
    std::fs::remove_file(&f).unwrap();
    let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    let (code, out) = verify(&ws, &["-v"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "target: {} ok, 1 missing, 2 changed, 1 unreadable",
            n - 4
        )),
        "{out}"
    );
    let v = verdicts(&ws);
    assert_eq!(v.len() as i64, n);
    let differing: Vec<(&str, &str)> = v
        .iter()
        .filter(|(_, (t, _))| t != "ok")
        .map(|(k, (t, _))| (k.as_str(), t.as_str()))
        .collect();
    let mut expected = vec![
        (deleted.as_str(), "missing"),
        (truncated.as_str(), "changed"),
        (rewritten.as_str(), "changed"),
        (fifo.as_str(), "unreadable"),
    ];
    expected.sort();
    assert_eq!(differing, expected, "{out}");
    for name in [deleted, truncated, rewritten, fifo] {
        assert!(out.contains(name.as_str()), "{name} not listed:\n{out}");
    }
    // verify never writes to the target: the deleted file is still missing.
    assert!(!target_of(&ws, deleted).exists());
}

#[test]
fn verify_source_finds_changed_source_files() {
    let ws = Workspace::empty();
    std::fs::write(ws.lib().join("a.txt"), "alpha alpha\n").unwrap();
    std::fs::write(ws.lib().join("b.txt"), "bravo bravo\n").unwrap();
    std::fs::write(ws.lib().join("c.txt"), "charlie\n").unwrap();
    let o = ws.migrate(&["--layout", "{source_path}.{ext}"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Same size, other bytes; and one gone.
    std::fs::write(ws.lib().join("b.txt"), "bravo BRAVO\n").unwrap();
    std::fs::remove_file(ws.lib().join("c.txt")).unwrap();

    let (code, out) = verify(&ws, &[]);
    assert_eq!(
        code,
        Some(0),
        "without --source the target alone is checked: {out}"
    );
    let (code, out) = verify(&ws, &["--source"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("source: 1 ok, 1 missing, 1 changed"), "{out}");
    let v = verdicts(&ws);
    assert_eq!(v["a.txt"], ("ok".into(), Some("ok".into())), "{out}");
    assert_eq!(v["b.txt"], ("ok".into(), Some("changed".into())), "{out}");
    assert_eq!(v["c.txt"], ("ok".into(), Some("missing".into())), "{out}");
}

#[test]
fn an_interrupted_verify_continues_its_pass() {
    let ws = Workspace::with_corpus_sized(3000, 5, 8);
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let uploaded = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    let done_before = kill_a_verify_part_way(&ws);
    assert!(done_before > 0 && done_before < uploaded);
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("continuing the verify pass begun earlier"),
        "{out}"
    );
    assert!(out.contains(&format!("target: {uploaded} ok")), "{out}");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM verify_passes"),
        ws.count("SELECT COUNT(*) FROM verify_passes WHERE ended_at IS NOT NULL")
    );
}

/// An HTTP target: the server is asked by SHA-1; what it lost is reported missing, and only
/// that ("present" is all the protocol can say).
#[test]
fn verify_asks_an_http_server_and_finds_exactly_what_it_lost() {
    let ws = Workspace::with_corpus(40, 21);
    let server = TestServer::start(ServerConfig::default());
    let url = server.root_url();
    let o = ws
        .cmd(&["run", "--from", ws.lib().to_str().unwrap(), "--to", &url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let n = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("target: {n} present")), "{out}");

    let lost: Vec<(String, String)> = {
        let db = ws.db();
        let mut st = db
            .prepare(
                "SELECT source_ref, sha1 FROM files WHERE state = 'uploaded' ORDER BY id LIMIT 3",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for (_, sha1) in &lost {
        server.forget(sha1);
    }
    let (code, out) = verify(&ws, &["-v"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("target: {} present, 3 missing", n - 3)),
        "{out}"
    );
    let missing: Vec<String> = verdicts(&ws)
        .into_iter()
        .filter(|(_, (t, _))| t == "missing")
        .map(|(k, _)| k)
        .collect();
    let mut expected: Vec<String> = lost.into_iter().map(|(s, _)| s).collect();
    expected.sort();
    assert_eq!(missing, expected, "{out}");
    let (code, out) = verify(&ws, &["--source"]);
    assert_eq!(code, Some(2), "{out}");
}

/// `--repair missing --repair changed --yes`, then `run`: the deleted file is placed again and
/// the changed one gets a new copy beside it, never over it; a verify after that finds all
/// well. Without a terminal and without `--yes`, nothing is repaired (exit 2).
#[test]
fn repair_then_run_restores_what_was_lost_without_overwriting_anything() {
    let ws = Workspace::with_corpus(40, 13);
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let two: Vec<String> = {
        let db = ws.db();
        let mut st = db
            .prepare("SELECT source_ref FROM files WHERE state = 'uploaded' ORDER BY id LIMIT 2")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let (gone, changed) = (&two[0], &two[1]);
    let gone_path = target_of(&ws, gone);
    let changed_path = target_of(&ws, changed);
    let gone_bytes = std::fs::read(&gone_path).unwrap();
    std::fs::remove_file(&gone_path).unwrap();
    std::fs::write(&changed_path, b"edited by someone").unwrap();

    let o = ws
        .cmd(&["verify", "--repair", "missing"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("say --yes"), "{}", stderr(&o));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state <> 'uploaded' AND state <> 'skipped'"),
        0
    );

    let (code, out) = verify(
        &ws,
        &["--repair", "missing", "--repair", "changed", "--yes"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2 files put back to be migrated"), "{out}");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM events WHERE detail LIKE 'verify --repair:%'"),
        2
    );
    assert_eq!(std::fs::read(&changed_path).unwrap(), b"edited by someone");

    let o = ws.run(&["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&gone_path).unwrap(),
        gone_bytes,
        "placed again where it was"
    );
    assert_eq!(
        std::fs::read(&changed_path).unwrap(),
        b"edited by someone",
        "the changed file is never overwritten"
    );
    let new_copy = target_of(&ws, changed);
    assert_ne!(new_copy, changed_path, "the new copy goes beside it");
    let want = ws
        .manifest
        .iter()
        .find(|e| &e.path == changed)
        .unwrap()
        .sha1
        .clone();
    assert_eq!(sha1_file(&new_copy), want);
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_event_histories_valid(&ws);
}

/// `--content`: rows skipped because the target had a file of that name and size are looked
/// inside. Of two such files (one with the same bytes, one with other bytes of the same size)
/// exactly the second is reported — that book was never migrated — and `--repair content`
/// + `run` places it beside the target's file, which stays as it was.
#[test]
fn verify_content_finds_a_name_and_size_skip_with_other_bytes_and_repair_places_it_beside() {
    let ws = Workspace::empty();
    let out = ws.out();
    std::fs::create_dir_all(out.join("older")).unwrap();
    std::fs::write(ws.lib().join("same.txt"), "the same bytes here\n").unwrap();
    std::fs::write(ws.lib().join("diff.txt"), "the source's own text\n").unwrap();
    std::fs::write(ws.lib().join("other.txt"), "migrated as usual\n").unwrap();
    // The target had both names before, at the same size; one holds other bytes.
    std::fs::write(out.join("older/same.txt"), "the same bytes here\n").unwrap();
    let theirs = "ANOTHER book's text!!\n";
    assert_eq!(theirs.len(), "the source's own text\n".len());
    std::fs::write(out.join("diff.txt"), theirs).unwrap();
    let o = ws.migrate(&["--layout", "{source_path}.{ext}"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE skip_reason = 'target_has_name_size'"),
        2
    );

    let (code, out_text) = verify(&ws, &[]);
    assert_eq!(
        code,
        Some(0),
        "without --content the skips are not looked at: {out_text}"
    );
    let (code, out_text) = verify(&ws, &["--content", "-v"]);
    assert_eq!(code, Some(1), "{out_text}");
    assert!(
        out_text.contains("skipped for name and size: 1 same content, 1 other content"),
        "{out_text}"
    );
    assert!(out_text.contains("target: 1 ok"), "{out_text}");
    let v = verdicts(&ws);
    assert_eq!(v["same.txt"].0, "ok", "{out_text}");
    assert_eq!(v["diff.txt"].0, "changed", "{out_text}");
    assert!(
        out_text.contains("diff.txt → diff.txt"),
        "the file compared with is named: {out_text}"
    );
    // Where it was compared is recorded in the verify tables, never as the row's target_ref.
    let compared: Option<String> = ws
        .db()
        .query_row(
            "SELECT v.compared_ref FROM verified v JOIN files f ON f.id = v.file_id
             WHERE f.source_ref = 'diff.txt'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(compared.as_deref(), Some("diff.txt"));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'skipped' AND target_ref IS NOT NULL"),
        0
    );

    // `--repair changed` is about placed files: it leaves the skips alone.
    let (_, out_text) = verify(&ws, &["--content", "--repair", "changed", "--yes"]);
    assert!(out_text.contains("nothing to repair"), "{out_text}");
    let (code, out_text) = verify(&ws, &["--content", "--repair", "content", "--yes"]);
    assert_eq!(code, Some(1), "{out_text}");
    assert!(
        out_text.contains("1 files put back to be migrated"),
        "{out_text}"
    );
    assert_eq!(
        ws.count(
            "SELECT COUNT(*) FROM events WHERE from_state = 'skipped' AND to_state = 'checked'
             AND detail LIKE 'verify --repair content:%'"
        ),
        1
    );
    let o = ws.run(&["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("diff.txt")).unwrap(),
        theirs
    );
    assert_eq!(
        std::fs::read_to_string(out.join("older/same.txt")).unwrap(),
        "the same bytes here\n"
    );
    let placed = target_of(&ws, "diff.txt");
    assert_eq!(
        placed,
        out.join("diff (2).txt"),
        "beside the target's own file"
    );
    assert_eq!(
        std::fs::read_to_string(&placed).unwrap(),
        "the source's own text\n",
        "{}",
        placed.display()
    );
    let (code, out_text) = verify(&ws, &["--content"]);
    assert_eq!(code, Some(0), "{out_text}");
    assert!(out_text.contains("target: 2 ok"), "{out_text}");
    assert_event_histories_valid(&ws);
}

/// Without a terminal, verify says how far it has got every `--stats` interval (files of the
/// total counted up front, bytes, an ETA), then its summary.
#[test]
fn verify_without_a_terminal_prints_progress_lines_at_the_stats_interval() {
    let ws = Workspace::with_corpus(600, 17);
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let n = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    assert!(n > 256, "more than one batch: {n}");
    let (code, out) = verify(&ws, &["--stats", "1ms"]);
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("verify progress:"))
        .collect();
    assert!(!lines.is_empty(), "no progress line:\n{out}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("/{n} files")) && l.contains("eta")),
        "{out}"
    );
    assert!(out.contains(&format!("target: {n} ok")), "{out}");
    // The default interval (a minute) says nothing in a verify this short; -q never does.
    let (_, out) = verify(&ws, &[]);
    assert!(!out.contains("verify progress:"), "{out}");
    let (code, out) = verify(&ws, &["-q", "--stats", "1ms"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("verify progress:"), "{out}");
}

/// `--content` on an HTTP target: the server said it had a file of the name and size; asked
/// for the source's SHA-1 it tells whether it has these bytes.
#[test]
fn verify_content_asks_an_http_server_for_the_bytes_behind_a_name_and_size_skip() {
    let ws = Workspace::empty();
    let same = b"the same bytes here\n";
    let diff = b"the source's own text\n";
    std::fs::write(ws.lib().join("same.txt"), same).unwrap();
    std::fs::write(ws.lib().join("diff.txt"), diff).unwrap();
    let server = TestServer::start(ServerConfig::default());
    server.preload(&hex_sha1(same), "same.txt", same.len() as u64);
    server.preload(&hex_sha1(b"other"), "diff.txt", diff.len() as u64);
    let url = server.root_url();
    let o = ws
        .cmd(&["run", "--from", ws.lib().to_str().unwrap(), "--to", &url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE skip_reason = 'target_has_name_size'"),
        2
    );
    let (code, out) = verify(&ws, &["--content"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("skipped for name and size: 1 same content, 1 other content"),
        "{out}"
    );
    let v = verdicts(&ws);
    assert_eq!(v["same.txt"].0, "ok", "{out}");
    assert_eq!(v["diff.txt"].0, "changed", "{out}");
}

fn hex_sha1(bytes: &[u8]) -> String {
    use sha1::Digest;
    hex(&sha1::Sha1::digest(bytes))
}

/// Kills a `verify` once it has recorded some verdicts and before its pass ends (a fast machine
/// may finish first: then it tries again, with a new pass); the verdicts the killed pass had
/// recorded.
pub(crate) fn kill_a_verify_part_way(ws: &Workspace) -> i64 {
    let pass_rows = |db: &Path| {
        count_or_zero(
            db,
            "SELECT COUNT(*) FROM verified WHERE pass_id = (SELECT MAX(id) FROM verify_passes)",
        )
    };
    let pass_ended = |db: &Path| {
        count_or_zero(
            db,
            "SELECT COUNT(*) FROM verify_passes WHERE id = (SELECT MAX(id) FROM verify_passes) AND ended_at IS NOT NULL",
        ) == 1
    };
    // Kill a verify once it has recorded some verdicts and before it ends (a fast machine
    // may finish first: then try again, with a new pass).
    let mut interrupted_at = None;
    for _ in 0..5 {
        let mut child = ws.cmd(&["verify"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = pass_rows(&ws.state());
            if n > 0 && !pass_ended(&ws.state()) {
                child.kill().unwrap();
                child.wait().unwrap();
                if !pass_ended(&ws.state()) {
                    interrupted_at = Some(pass_rows(&ws.state()));
                }
                break;
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        if interrupted_at.is_some() {
            break;
        }
    }
    interrupted_at.expect("a verify killed part-way")
}
