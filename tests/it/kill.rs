//! `kill -9` at many moments (by time, so some land in the scan and hash stages, and by progress,
//! so they land mid-transfer), then runs to completion: nothing lost, nothing placed twice, no
//! finished row hashed again, every row's history valid. `BOOKFERRY_LONG_TESTS=1` kills 100 times.

use crate::util::*;
use std::collections::BTreeMap;
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
    // Runs that were killed are recorded as died, not left "running".
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM runs WHERE ended_at IS NULL"),
        0
    );
}
