//! `kill -9` at many moments (by time, so some land in the scan and hash stages, and by progress,
//! so they land mid-transfer), then runs to completion: nothing lost, nothing placed twice, no
//! finished row hashed again, every row's history valid; the files the killed runs placed are
//! recorded as placed (never as files the target already had), and a file the target did have
//! stays untouched. `BOOKFERRY_LONG_TESTS=1` kills 100 times.

use crate::util::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn uploaded_now(ws: &Workspace) -> i64 {
    count_or_zero(
        &ws.state(),
        "SELECT COUNT(*) FROM files WHERE state IN ('uploaded','skipped')",
    )
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_repeats_nothing() {
    let long = std::env::var_os("BOOKFERRY_LONG_TESTS").is_some();
    let kills_wanted = if long { 100 } else { 20 };
    // Big enough that 20 short runs cannot finish it (at 2,500 files, 65% were uploaded when
    // the kills ended once the pipeline got faster: too thin a margin on a loaded machine).
    let ws = Workspace::with_corpus_sized(
        if long { 20000 } else { 5000 },
        21,
        if long { 8 } else { 16 },
    );
    // A file the target held before the migration, with the bytes of one source file (under
    // another name): it must stay as it is, and that source file `target_has_content`.
    let planted_blake3 = blake3_file(&ws.lib().join(&ws.manifest[7].path));
    let planted = ws.out().join("kept/already here.bin");
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::copy(ws.lib().join(&ws.manifest[7].path), &planted).unwrap();
    let planted_before = inode_and_mtime(&planted);

    let mut rng = Lcg(0x5eed);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < kills_wanted && attempts < kills_wanted * 3 {
        attempts += 1;
        let mut child = ws
            .migrate_cmd(&["--transfers", "2", "--checkers", "1", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if attempts % 2 == 1 {
            // By time: early kills hit the scan and the hash stage.
            std::thread::sleep(Duration::from_millis(5 + rng.next(200)));
        } else {
            // By progress: wait until k more files have landed, then kill mid-transfer.
            let base = uploaded_now(&ws);
            let k = 1 + rng.next(if long { 3 } else { 10 }) as i64;
            let t0 = Instant::now();
            while uploaded_now(&ws) < base + k && t0.elapsed() < Duration::from_secs(30) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if uploaded_now(&ws) as usize == ws.manifest.len() {
            break;
        }
    }
    eprintln!(
        "kill test: {kills} kills in {attempts} runs; {} of {} files uploaded before the last run",
        uploaded_now(&ws),
        ws.manifest.len()
    );
    assert!(
        kills >= kills_wanted.min(10),
        "only {kills} kills landed while the run was working"
    );

    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "final run: {}", stderr(&out));

    // Every content exactly once in the target; every source file accounted for.
    let target = ws.target_files();
    let mut per_sha: BTreeMap<&str, usize> = BTreeMap::new();
    for sha in target.values() {
        *per_sha.entry(sha).or_default() += 1;
    }
    let twice: Vec<_> = per_sha.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "placed more than once: {twice:?}");
    assert_eq!(per_sha.len(), ws.unique_sha1s().len(), "contents lost");
    assert!(
        !target.keys().any(|k| k.contains(".bookferry-tmp")),
        "temp files left behind"
    );
    let s = ws.status();
    assert_status_adds_up(&s);
    assert_eq!(s["total"], ws.manifest.len());
    assert_eq!(
        s["states"]["uploaded"].as_u64().unwrap() + s["states"]["skipped"].as_u64().unwrap(),
        ws.manifest.len() as u64
    );

    // No row hashed twice, and none hashed after it was finished.
    assert_eq!(ws.count("SELECT COUNT(*) FROM (SELECT file_id FROM events WHERE to_state = 'hashed' GROUP BY file_id HAVING COUNT(*) > 1)"), 0);
    assert_eq!(
        ws.count(
            "SELECT COUNT(*) FROM events h JOIN events f ON f.file_id = h.file_id
             WHERE h.to_state = 'hashed' AND f.to_state IN ('uploaded', 'skipped') AND h.id > f.id"
        ),
        0
    );
    assert_eq!(
        ws.count("SELECT SUM(files_hashed) FROM runs"),
        ws.count("SELECT COUNT(*) FROM events WHERE to_state = 'hashed'")
    );
    assert_event_histories_valid(&ws);

    // What the killed runs placed is recorded as placed, where it is: every uploaded row's
    // file exists, and into this fresh target no row says the target had its content before
    // (but the rows of the planted file's content, which it did have, untouched).
    assert_uploaded_rows_point_at_their_files(&ws);
    let claimed_by_target: Vec<(String, String)> = ws
        .db()
        .prepare(
            "SELECT source_ref, blake3 FROM files
             WHERE state = 'skipped' AND skip_reason = 'target_has_content'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let wrongly: Vec<_> = claimed_by_target
        .iter()
        .filter(|(_, blake3)| *blake3 != planted_blake3)
        .collect();
    assert!(
        wrongly.is_empty(),
        "{} row(s) of a fresh target recorded as 'the target already had it', e.g. {:?}",
        wrongly.len(),
        &wrongly[..wrongly.len().min(5)]
    );
    assert!(
        claimed_by_target
            .iter()
            .any(|(_, blake3)| *blake3 == planted_blake3),
        "the file the target had beforehand was not recognised"
    );
    assert_eq!(
        inode_and_mtime(&planted),
        planted_before,
        "the file the target had beforehand was touched"
    );
    assert_eq!(
        ws.count("SELECT SUM(files_uploaded) FROM runs"),
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'"),
        "every uploaded row is counted in the totals of the run that recorded it"
    );
    // Runs that were killed are recorded as died, not left "running".
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM runs WHERE ended_at IS NULL"),
        0
    );
}

fn inode_and_mtime(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// Every `uploaded` row has a `target_ref`, and a file is there.
fn assert_uploaded_rows_point_at_their_files(ws: &Workspace) {
    let refs: Vec<(String, Option<String>)> = ws
        .db()
        .prepare("SELECT source_ref, target_ref FROM files WHERE state = 'uploaded'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (source, target) in refs {
        let target = target.unwrap_or_else(|| panic!("{source}: uploaded without a target_ref"));
        assert!(
            ws.out().join(&target).is_file(),
            "{source}: uploaded to {target}, which is not in the target"
        );
    }
}

/// Files in the target that no `uploaded` row names: placed by a killed run, not recorded.
fn unrecorded_placements(ws: &Workspace) -> Vec<String> {
    let recorded: std::collections::BTreeSet<String> = ws
        .db()
        .prepare("SELECT target_ref FROM files WHERE state = 'uploaded' AND target_ref IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ws.target_files()
        .into_keys()
        .filter(|k| !k.contains(".bookferry-tmp") && !recorded.contains(k))
        .collect()
}

/// A file a killed run placed without recording it is this migration's: the next run records
/// it as `uploaded` where it is, and a later change to its source file replaces it there (no
/// ` (2)` beside a stale copy).
#[test]
fn a_file_placed_by_a_killed_run_is_adopted_and_a_later_change_replaces_it_in_place() {
    let ws = Workspace::with_corpus_sized(3000, 33, 8);
    // Kill right after files appear in the target: the writer records them up to 100 ms later.
    let mut placed = Vec::new();
    for _ in 0..20 {
        let mut child = ws
            .migrate_cmd(&["--transfers", "2", "--checkers", "1", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = ws.target_files().len();
        let t0 = Instant::now();
        while ws.target_files().len() < base + 20 && t0.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        placed = unrecorded_placements(&ws);
        if !placed.is_empty() {
            break;
        }
    }
    assert!(!placed.is_empty(), "no kill left an unrecorded placement");
    // Each one's source file and the state its row was left in (by content: the layout names
    // files by their metadata).
    let target = ws.target_files();
    let state_of = |path: &str| -> String {
        ws.db()
            .query_row(
                "SELECT state FROM files WHERE source_ref = ?1",
                [path],
                |r| r.get(0),
            )
            .unwrap()
    };
    let left: Vec<(String, &Entry, String)> = placed
        .iter()
        .filter_map(|rel| {
            let sha = &target[rel];
            let mut same = ws.manifest.iter().filter(|e| &e.sha1 == sha);
            let e = same.next()?;
            same.next()
                .is_none()
                .then(|| (rel.clone(), e, state_of(&e.path)))
        })
        .collect();
    assert!(
        !left.is_empty(),
        "no unrecorded placement of a unique content"
    );
    eprintln!(
        "unrecorded placements, by the state their rows were left in: {:?}",
        left.iter().map(|(_, _, s)| s.as_str()).collect::<Vec<_>>()
    );

    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "rerun: {}", stderr(&out));
    assert_uploaded_rows_point_at_their_files(&ws);
    for (rel, e, _) in &left {
        let row: (String, Option<String>, Option<String>) = ws
            .db()
            .query_row(
                "SELECT state, skip_reason, target_ref FROM files WHERE source_ref = ?1",
                [&e.path],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (row.0.as_str(), row.1.as_deref(), row.2.as_deref()),
            ("uploaded", None, Some(rel.as_str())),
            "{}: placed at {rel} by the killed run",
            e.path
        );
    }
    // Preferably one whose row had not reached the transfer's state in the DB.
    let (rel, entry, _) = left
        .iter()
        .find(|(_, _, s)| s != "metadata_cached")
        .unwrap_or(&left[0])
        .clone();

    // The source file changes; the next run replaces the copy where it is.
    let src = ws.lib().join(&entry.path);
    let mut bytes = std::fs::read(&src).unwrap();
    bytes.extend_from_slice(b"\nrevised edition\n");
    std::fs::write(&src, &bytes).unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "run after the change: {}",
        stderr(&out)
    );
    let now = ws.target_files();
    let stem = rel
        .rsplit_once('.')
        .map_or(rel.as_str(), |(s, _)| s)
        .to_string();
    let beside: Vec<_> = now
        .keys()
        .filter(|k| k.starts_with(&format!("{stem} (")))
        .collect();
    assert!(
        beside.is_empty(),
        "{}: the changed file was placed beside the stale copy {rel}: {beside:?}",
        entry.path
    );
    assert_eq!(
        std::fs::read(ws.out().join(&rel)).unwrap(),
        bytes,
        "{rel}: not replaced by the changed source file"
    );
    let (state, target_ref): (String, Option<String>) = ws
        .db()
        .query_row(
            "SELECT state, target_ref FROM files WHERE source_ref = ?1",
            [&entry.path],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), target_ref.as_deref()),
        ("uploaded", Some(rel.as_str()))
    );
}

/// Uploads a killed run sent and the server stored, but whose move to `uploaded` the run did
/// not live to record, are this migration's: the next run records them `uploaded` (the server
/// is asked by SHA-1, as before, but now for every row the dead run was sending, whatever state
/// the DB had it in), never `skipped` as content the server already had; each stored once.
#[test]
fn uploads_a_killed_run_sent_without_recording_are_adopted_as_uploaded() {
    use crate::protocol_server::{Faults, ServerConfig, TestServer};
    let ws = Workspace::with_corpus_sized(600, 68, 16);
    // Every reply waits 15 ms after the upload was stored: kills land in between.
    let srv = TestServer::start(ServerConfig {
        faults: Faults {
            stall: Some(Duration::from_millis(15)),
            p_stall: 1.0,
            seed: 7,
            ..Default::default()
        },
        ..Default::default()
    });
    let lib = ws.lib();
    let args = |extra: &'static [&'static str]| {
        let mut a = vec![
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            &srv.base_url,
        ];
        a.extend_from_slice(extra);
        a
    };
    let mut lost = 0;
    for _ in 0..20 {
        let mut child = ws
            .cmd(&args(&["--transfers", "2", "-q"]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = srv.stats().stored_count_by_sha1.len();
        let t0 = Instant::now();
        while srv.stats().stored_count_by_sha1.len() < base + 8
            && t0.elapsed() < Duration::from_secs(60)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // Held by the server, not recorded as done.
        let done: std::collections::BTreeSet<String> = ws
            .db()
            .prepare("SELECT sha1 FROM files WHERE state IN ('uploaded', 'skipped') AND sha1 IS NOT NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        lost += srv
            .stats()
            .stored_count_by_sha1
            .keys()
            .filter(|s| !done.contains(*s))
            .count();
        if lost > 0 {
            break;
        }
    }
    assert!(lost > 0, "no kill left an upload unrecorded");
    let out = ws.cmd(&args(&[])).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "final run: {}", stderr(&out));
    let said_held: Vec<(String, String)> = ws
        .db()
        .prepare(
            "SELECT source_ref, skip_reason FROM files
             WHERE state = 'skipped' AND skip_reason <> 'duplicate'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        said_held.is_empty(),
        "{} row(s) sent by the killed run recorded as held by the server before, e.g. {:?}",
        said_held.len(),
        &said_held[..said_held.len().min(3)]
    );
    let s = srv.stats();
    assert!(s.stored_count_by_sha1.values().all(|&n| n == 1));
    assert_eq!(s.stored_count_by_sha1.len(), ws.unique_sha1s().len());
}

/// A killed run may leave a claim on a row whose content another row placed: claims are
/// recorded with the move to `metadata_cached`, before the transfer finds duplicates, and the
/// same book copied into two folders gets one name, so its twin's file sits at the claim. The
/// next run makes the row its twin's duplicate; it does not adopt the twin's file as its own
/// (two rows recorded for one file).
#[test]
fn a_claim_on_a_duplicate_does_not_adopt_the_file_its_twin_placed() {
    let ws = Workspace::empty();
    let out = ws.migrate(&twins(&ws));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (twin, at) = the_placed_twin(&ws, "target_ref");
    leave_the_duplicate_claimed(&ws, &at);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_one_placed_and_its_duplicate(&ws, twin);
    assert_eq!(ws.target_files().len(), 1);
}

/// The same for an upload: both rows claim the content's SHA-1, which the server holds from the
/// twin's upload; the row is the twin's duplicate, not a second upload recorded.
#[test]
fn a_claim_on_a_duplicate_upload_is_not_adopted_as_a_second_upload() {
    use crate::protocol_server::{ServerConfig, TestServer};
    let ws = Workspace::empty();
    twins(&ws);
    let srv = TestServer::start(ServerConfig::default());
    let run = || ws.migrate_to_cmd(&srv.base_url, &["-q"]).output().unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (twin, sha1) = the_placed_twin(&ws, "sha1");
    leave_the_duplicate_claimed(&ws, &format!("sha1:{sha1}"));
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_one_placed_and_its_duplicate(&ws, twin);
}

/// One book in two folders, with the same bytes and name; no extra arguments for `migrate`.
fn twins(ws: &Workspace) -> [&'static str; 0] {
    for dir in ["a", "b"] {
        std::fs::create_dir_all(ws.lib().join(dir)).unwrap();
        std::fs::write(
            ws.lib().join(dir).join("Dune - Frank Herbert.txt"),
            "the spice must flow\n",
        )
        .unwrap();
    }
    []
}

/// The duplicate's row as a run killed after claiming it (at `planned`) left it.
/// The one row `uploaded` of the twins: its id and `column`.
fn the_placed_twin(ws: &Workspace, column: &str) -> (i64, String) {
    ws.db()
        .query_row(
            &format!("SELECT id, {column} FROM files WHERE state = 'uploaded'"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

fn leave_the_duplicate_claimed(ws: &Workspace, planned: &str) {
    let db = rusqlite::Connection::open(ws.state()).unwrap();
    let changed = db
        .execute(
            "UPDATE files SET state = 'metadata_cached', planned_ref = ?1, run_id = NULL,
                skip_reason = NULL, duplicate_of = NULL
             WHERE state = 'skipped' AND skip_reason = 'duplicate'",
            [planned],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

fn assert_one_placed_and_its_duplicate(ws: &Workspace, twin: i64) {
    let rows: Vec<(String, Option<String>, Option<i64>)> = ws
        .db()
        .prepare("SELECT state, skip_reason, duplicate_of FROM files ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        rows.contains(&("skipped".into(), Some("duplicate".into()), Some(twin))),
        "{rows:?}"
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'"),
        1,
        "{rows:?}"
    );
}
