//! Which digests a run computes (issue 23): BLAKE3 for every file, SHA-1 only where the target
//! needs it (HTTP) or `--hash sha1` asks; a row hashed without a digest its run needs is hashed
//! again before it goes on; duplicates are still found. Real files, the real binary, the
//! upload-protocol test server (which answers 422 to a `sha1` that is not the bytes').

use crate::protocol_server::{ServerConfig, TestServer};
use crate::util::*;
use std::collections::BTreeMap;
use std::path::Path;

/// source_ref → (state, sha1, blake3) of every row.
fn digests_of(ws: &Workspace) -> BTreeMap<String, (String, Option<String>, Option<String>)> {
    let db = ws.db();
    let mut st = db
        .prepare("SELECT source_ref, state, sha1, blake3 FROM files ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// The manifest's SHA-1 of each source file.
fn manifest_sha1(ws: &Workspace) -> BTreeMap<String, String> {
    ws.manifest
        .iter()
        .map(|e| (e.path.clone(), e.sha1.clone()))
        .collect()
}

/// `files_hashed` of the newest `run` record.
fn last_run_hashed(ws: &Workspace) -> i64 {
    ws.count("SELECT files_hashed FROM runs WHERE command = 'run' ORDER BY id DESC LIMIT 1")
}

/// A folder run computes BLAKE3 alone: `files.sha1` stays NULL, every hashed row has the BLAKE3
/// of its file, duplicates are found by it, and `report`, `status --json` and `verify` work on
/// such rows.
#[test]
fn a_folder_run_records_blake3_and_no_sha1_and_still_finds_duplicates() {
    let ws = Workspace::with_corpus(40, 23);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = digests_of(&ws);
    assert_eq!(rows.len(), ws.manifest.len());
    for (rel, (state, sha1, blake3)) in &rows {
        assert_eq!(sha1, &None, "{rel} ({state}): no SHA-1 for a folder target");
        let want = blake3_file(&ws.lib().join(rel));
        assert_eq!(blake3.as_deref(), Some(want.as_str()), "{rel} ({state})");
    }
    // Duplicates: one copy of each content in the target, the others skipped as duplicates.
    let unique = ws.unique_sha1s().len();
    assert!(unique < ws.manifest.len(), "the corpus has duplicates");
    assert_eq!(ws.target_files().len(), unique);
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE skip_reason = 'duplicate' AND duplicate_of IS NOT NULL"),
        (ws.manifest.len() - unique) as i64
    );
    let status = ws.status();
    assert_status_adds_up(&status);
    let report = ws.run(&["report", "--all", "--format", "json"]);
    assert_eq!(report.status.code(), Some(0), "{}", stderr(&report));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let report = report.as_array().unwrap();
    assert_eq!(report.len(), ws.manifest.len());
    assert!(report.iter().all(|r| r["sha1"].is_null()));
    let verify = ws.run(&["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    // A placed file changed afterwards is found by its BLAKE3.
    let victim = walk_first_file(&ws.out());
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let verify = ws.run(&["verify"]);
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
}

fn walk_first_file(root: &Path) -> std::path::PathBuf {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                dirs.push(p);
            } else {
                return p;
            }
        }
    }
    panic!("no file under {}", root.display());
}

/// `--hash sha1` records both digests of every file the run hashes.
#[test]
fn hash_sha1_records_both_digests() {
    let ws = Workspace::with_corpus(20, 24);
    let out = ws.migrate(&["--hash", "sha1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sha1s = manifest_sha1(&ws);
    for (rel, (state, sha1, blake3)) in digests_of(&ws) {
        assert_eq!(sha1.as_ref(), Some(&sha1s[&rel]), "{rel} ({state})");
        assert_eq!(blake3, Some(blake3_file(&ws.lib().join(&rel))), "{rel}");
    }
}

/// Rows a dry run hashed for a folder (BLAKE3 alone, left `metadata_cached`) lack the SHA-1
/// that `--hash sha1` asks for: the next run sends them back to `pending` (an event each),
/// hashes them again (counted in its `files_hashed`) and places them with both digests.
#[test]
fn rows_hashed_without_a_needed_digest_are_hashed_again_and_counted() {
    let ws = Workspace::with_corpus(20, 25);
    let out = ws.migrate(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let waiting = ws.count("SELECT COUNT(*) FROM files WHERE state = 'metadata_cached'");
    assert!(waiting > 0, "a dry run leaves rows on their way");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE sha1 IS NOT NULL"),
        0
    );

    let out = ws.migrate(&["--hash", "sha1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.count(
            "SELECT COUNT(*) FROM events WHERE to_state = 'pending'
             AND detail LIKE 'hashed without a digest this run needs%'"
        ),
        waiting
    );
    assert_eq!(last_run_hashed(&ws), waiting);
    let sha1s = manifest_sha1(&ws);
    for (rel, (state, sha1, _)) in digests_of(&ws) {
        if state == "uploaded" {
            assert_eq!(sha1.as_ref(), Some(&sha1s[&rel]), "{rel}");
        }
    }
    assert_eq!(ws.target_files().len(), ws.unique_sha1s().len());
}

/// A state DB hashed for a folder (a dry run: nothing written, BLAKE3 alone) and then re-pointed
/// to an HTTP server: every file is hashed again with its SHA-1, and the server stores each
/// content under the right SHA-1 (it refuses a `sha1` that is not the bytes' with 422).
#[test]
fn a_db_hashed_for_a_folder_then_re_pointed_to_http_uploads_with_sha1() {
    let ws = Workspace::with_corpus(20, 26);
    let out = ws.migrate(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE sha1 IS NOT NULL"),
        0
    );
    // Rows on their way; the dry run's duplicates are final (`skipped`) and stay as they are.
    let hashed_for_folder = ws
        .count("SELECT COUNT(*) FROM files WHERE blake3 IS NOT NULL AND state = 'metadata_cached'");
    assert!(hashed_for_folder > 0);

    let srv = TestServer::start(ServerConfig::default());
    let lib = ws.lib();
    let out = ws
        .cmd(&[
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            &srv.base_url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(last_run_hashed(&ws), hashed_for_folder, "each hashed again");
    let stored: std::collections::BTreeSet<String> = srv.stored().into_keys().collect();
    assert_eq!(
        stored,
        ws.unique_sha1s(),
        "each content stored once, under its SHA-1"
    );
    let sha1s = manifest_sha1(&ws);
    for (rel, (state, sha1, blake3)) in digests_of(&ws) {
        if state == "skipped" {
            continue; // the dry run's duplicates: final, never sent
        }
        assert_eq!(sha1.as_ref(), Some(&sha1s[&rel]), "{rel} ({state})");
        assert_eq!(blake3, Some(blake3_file(&ws.lib().join(&rel))), "{rel}");
    }
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded' AND sha1 IS NULL"),
        0
    );
    assert_eq!(
        srv.stats().sha1_mismatches,
        0,
        "no upload sent with a wrong SHA-1"
    );
}

/// Three files over the in-memory limit (8 MiB) and five small ones in `ws.lib()`; returns the
/// library's size. (Text files: their metadata comes from the name, so nothing else reads them.)
fn large_and_small_library(ws: &Workspace) -> u64 {
    let mut total = 0u64;
    let mut rng = Lcg(23);
    for (i, mib) in [9u64, 12, 20].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..(mib << 20) + 7 * i as u64)
            .map(|_| rng.next(256) as u8)
            .collect();
        total += bytes.len() as u64;
        std::fs::write(
            ws.lib().join(format!("Large {i} - Some Author.txt")),
            &bytes,
        )
        .unwrap();
    }
    for i in 0..5 {
        let small = format!("a small book {i}");
        total += small.len() as u64;
        std::fs::write(ws.lib().join(format!("Small {i} - Some Author.txt")), small).unwrap();
    }
    total
}

/// Files over the in-memory limit (8 MiB) are read once too: hashed and written into their
/// staged copy from the same read, for a folder target (issue 23). The code's own count of
/// bytes read from the source (`runs.bytes_read`) is the library's size; before, each large
/// file was read a second time by the transfer to copy it.
#[test]
fn large_files_are_read_once_into_a_folder() {
    let ws = Workspace::empty();
    let total = large_and_small_library(&ws);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (read, sent) = ws.run_bytes();
    assert_eq!(
        (read as u64, sent as u64),
        (total, total),
        "bytes read from the source = bytes placed = the library's size"
    );
    // Every file whole at its place, its row's BLAKE3 its bytes'.
    let placed =
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded' AND target_ref IS NOT NULL");
    assert_eq!(placed, 8);
    for (rel, target, blake3) in ws
        .db()
        .prepare("SELECT source_ref, target_ref, blake3 FROM files")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
    {
        assert_eq!(blake3_file(&ws.lib().join(&rel)), blake3, "{rel}");
        assert_eq!(
            blake3_file(&ws.out().join(&target)),
            blake3,
            "{rel} at {target}"
        );
    }
    assert!(
        !walk_names(&ws.out())
            .iter()
            .any(|n| n.contains(".bookferry-tmp")),
        "no staged copy left behind"
    );
}

/// The same into a calibre library: each large file read once, every format file whole.
#[test]
fn large_files_are_read_once_into_a_calibre_library() {
    let _serial = crate::calibre_target::serial();
    let ws = Workspace::empty();
    let total = large_and_small_library(&ws);
    let library = ws.path().join("library");
    let out = crate::calibre_target::to_calibre(&ws, &ws.state(), &ws.lib(), &library, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (read, sent) = ws.run_bytes();
    assert_eq!(
        (read as u64, sent as u64),
        (total, total),
        "bytes read from the source = bytes placed = the library's size"
    );
    let mut placed: Vec<String> = walk_files(&library)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| blake3_file(&p))
        .collect();
    let mut want: Vec<String> = walk_files(&ws.lib())
        .iter()
        .map(|p| blake3_file(p))
        .collect();
    placed.sort();
    want.sort();
    assert_eq!(placed, want, "each file's bytes in the library, once");
}

fn walk_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}

fn walk_names(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            names.push(p.file_name().unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    names
}

/// A file added after a run, with the content of a file that run placed, is a `duplicate` of
/// that row in the next run — also when the run was killed before indexing what it placed (the
/// next command indexes it when it opens the state DB; `state::placed_contents`), not "the
/// target already has this content".
#[test]
fn a_later_copy_of_a_placed_content_is_its_duplicate_after_a_run_that_did_not_index_it() {
    let ws = Workspace::with_corpus(12, 31);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (first_id, first_rel): (i64, String) = ws
        .db()
        .query_row(
            "SELECT id, source_ref FROM files WHERE state = 'uploaded' ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // What a run killed before its end leaves: its placed rows noted, not indexed.
    let db = rusqlite::Connection::open(ws.state()).unwrap();
    db.execute_batch(
        "INSERT OR IGNORE INTO contents_unindexed SELECT id FROM files WHERE state = 'uploaded';
         DELETE FROM contents_placed;",
    )
    .unwrap();
    drop(db);
    let ext = Path::new(&first_rel).extension().unwrap().to_str().unwrap();
    let copy = format!("zz-later-copy.{ext}");
    std::fs::copy(ws.lib().join(&first_rel), ws.lib().join(&copy)).unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (state, reason, of): (String, Option<String>, Option<i64>) = ws
        .db()
        .query_row(
            "SELECT state, skip_reason, duplicate_of FROM files WHERE source_ref = ?1",
            [&copy],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_deref(), of),
        ("skipped", Some("duplicate"), Some(first_id))
    );
    assert_eq!(ws.count("SELECT COUNT(*) FROM contents_unindexed"), 0);
}
