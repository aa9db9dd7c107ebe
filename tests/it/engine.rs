//! The main job end to end: a generated library migrated to a folder, byte-identical, each
//! content once, the source untouched, the state DB consistent; dry runs, link modes, the cheap
//! name+size check, layout collisions, and a target that cannot be used.

use crate::util::*;
use sha1::Digest;
use std::collections::BTreeMap;

/// state, target_ref, blake3, duplicate_of
type RowFacts = (String, Option<String>, Option<String>, Option<i64>);

#[test]
fn migrates_a_generated_library_byte_identical_and_each_content_once() {
    let ws = Workspace::with_corpus(320, 11);
    let before = tree_snapshot(&ws.lib());
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Every source file's row is final and its content is at its target path.
    let db = ws.db();
    let mut rows: BTreeMap<String, RowFacts> = BTreeMap::new();
    let mut st = db
        .prepare("SELECT source_ref, state, target_ref, blake3, duplicate_of FROM files")
        .unwrap();
    for r in st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
            ))
        })
        .unwrap()
    {
        let (k, v) = r.unwrap();
        rows.insert(k, v);
    }
    assert_eq!(rows.len(), ws.manifest.len());
    // A folder target needs no SHA-1: none is computed (issue 23).
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE sha1 IS NOT NULL"),
        0
    );
    let mut uploaded = 0;
    for e in &ws.manifest {
        let (state, target_ref, blake3, dup) = &rows[&e.path];
        assert_eq!(
            blake3.as_deref(),
            Some(blake3_file(&ws.lib().join(&e.path)).as_str()),
            "{}: recorded BLAKE3",
            e.path
        );
        match state.as_str() {
            "uploaded" => {
                uploaded += 1;
                let t = ws.out().join(target_ref.as_ref().unwrap());
                assert_eq!(
                    sha1_file(&t),
                    e.sha1,
                    "{}: bytes at {}",
                    e.path,
                    t.display()
                );
            }
            "skipped" => assert!(dup.is_some(), "{}: skipped without duplicate_of", e.path),
            s => panic!("{}: ended in {s}", e.path),
        }
    }
    // The target holds each distinct content exactly once, and nothing else.
    let target = ws.target_files();
    assert_eq!(target.len(), uploaded);
    let mut per_sha: BTreeMap<&str, usize> = BTreeMap::new();
    for sha in target.values() {
        *per_sha.entry(sha).or_default() += 1;
    }
    assert!(per_sha.values().all(|&n| n == 1), "a content placed twice");
    assert_eq!(per_sha.len(), ws.unique_sha1s().len());
    assert!(
        ws.unique_sha1s().len() < ws.manifest.len(),
        "the corpus has duplicates"
    );
    assert!(!target.keys().any(|k| k.contains(".bookferry-tmp")));

    // The source is untouched; the layout came from metadata.
    assert_eq!(tree_snapshot(&ws.lib()), before);
    assert!(
        target.keys().any(|k| k.matches('/').count() == 2),
        "{{author}}/{{title}}/file"
    );

    let s = ws.status();
    assert_status_adds_up(&s);
    assert_eq!(s["total"], ws.manifest.len());
    assert_eq!(s["states"]["failed"], 0);
    assert_event_histories_valid(&ws);
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM events WHERE to_state = 'hashed'"),
        ws.manifest.len() as i64
    );
    assert_eq!(
        ws.count("SELECT SUM(files_hashed) FROM runs"),
        ws.manifest.len() as i64
    );

    // Run again: nothing is hashed or sent.
    let again = ws.run(&["run"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        ws.count("SELECT files_hashed + files_uploaded FROM runs ORDER BY id DESC LIMIT 1"),
        0
    );
    assert_eq!(ws.target_files(), target);
}

#[test]
fn each_source_byte_is_read_once_for_small_files() {
    let ws = Workspace::with_corpus(60, 12);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let total: i64 = ws.manifest.iter().map(|e| e.size as i64).sum();
    let read = ws.count("SELECT bytes_read FROM runs WHERE command = 'run'");
    assert_eq!(
        read, total,
        "bytes read from the source = the library's size"
    );
}

/// `--buffer-memory` sizes the memory for files read whole: with 1M, only files up to 127 KiB
/// are (a hash group of eight such files fits in it, so no group waits forever for budget it
/// holds itself); larger ones are read again to be placed. The run still ends with every
/// content in the target.
#[test]
fn a_small_buffer_memory_reads_larger_files_again_and_the_run_ends() {
    let ws = Workspace::with_corpus_sized(40, 21, 256);
    let out = ws.migrate(&["--buffer-memory", "1M"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unique: std::collections::BTreeSet<String> = ws.target_files().into_values().collect();
    assert_eq!(unique, ws.unique_sha1s());
    let total: i64 = ws.manifest.iter().map(|e| e.size as i64).sum();
    let read = ws.count("SELECT bytes_read FROM runs WHERE command = 'run'");
    assert!(
        ws.manifest.iter().any(|e| e.size > 127 * 1024) && read > total,
        "read {read} bytes of a {total}-byte library"
    );

    let bad = Workspace::with_corpus(2, 22);
    let out = bad.migrate(&["--buffer-memory", "lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--buffer-memory \"lots\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_writes_nothing_and_keeps_its_hashes() {
    let ws = Workspace::with_corpus(40, 13);
    let out = ws.migrate(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!ws.out().exists(), "dry run created the target");
    assert!(stderr(&out).contains("would copy"), "{}", stderr(&out));
    let s = ws.status();
    assert_eq!(s["states"]["uploaded"], 0);
    assert!(s["states"]["metadata_cached"].as_u64().unwrap() > 0);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.count("SELECT files_hashed FROM runs ORDER BY id DESC LIMIT 1"),
        0
    );
    assert_eq!(ws.target_files().len(), ws.unique_sha1s().len());
}

#[test]
fn hardlink_mode_shares_inodes_with_the_source() {
    use std::os::unix::fs::MetadataExt;
    let ws = Workspace::with_corpus(30, 14);
    let out = ws.migrate(&["--link", "hardlink"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let db = ws.db();
    let mut st = db
        .prepare("SELECT path, target_ref FROM files WHERE state = 'uploaded'")
        .unwrap();
    let pairs: Vec<(String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!pairs.is_empty());
    for (src, tref) in pairs {
        let a = std::fs::metadata(&src).unwrap();
        let b = std::fs::metadata(ws.out().join(&tref)).unwrap();
        assert_eq!(
            (a.dev(), a.ino()),
            (b.dev(), b.ino()),
            "{tref} is not a hardlink of {src}"
        );
    }
}

#[test]
fn name_and_size_already_on_target_are_skipped_without_hashing() {
    let ws = Workspace::with_corpus(20, 15);
    let e = ws
        .manifest
        .iter()
        .find(|e| !e.path.starts_with("duplicates"))
        .unwrap()
        .clone();
    let name = e.path.rsplit('/').next().unwrap();
    let there = ws.out().join("already").join(name);
    std::fs::create_dir_all(there.parent().unwrap()).unwrap();
    std::fs::copy(ws.lib().join(&e.path), &there).unwrap();

    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (state, reason, blake3): (String, String, Option<String>) = ws
        .db()
        .query_row(
            "SELECT state, skip_reason, blake3 FROM files WHERE source_ref = ?1",
            [&e.path],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("skipped", "target_has_name_size")
    );
    assert_eq!(blake3, None, "a file the target has was hashed anyway");

    // --checksum hashes it even so (a fresh state DB over the same target).
    let out = ws
        .cmd_with_state(
            &ws.path().join("second.db"),
            &[
                "run",
                "--from",
                ws.lib().to_str().unwrap(),
                "--to",
                ws.out().to_str().unwrap(),
                "--checksum",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let db2 = rusqlite::Connection::open(ws.path().join("second.db")).unwrap();
    let blake3: Option<String> = db2
        .query_row(
            "SELECT blake3 FROM files WHERE source_ref = ?1",
            [&e.path],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blake3, Some(blake3_file(&ws.lib().join(&e.path))));
}

#[test]
fn colliding_layout_paths_get_a_suffix_never_an_overwrite() {
    let ws = Workspace::empty();
    for (dir, body) in [("a", "first book"), ("b", "second book, other bytes")] {
        let d = ws.lib().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("Same Title - Same Author.txt"), body).unwrap();
    }
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = ws.target_files();
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(
        t.contains_key("Same Author/Same Title/Same Title - Same Author.txt"),
        "{t:?}"
    );
    assert!(
        t.contains_key("Same Author/Same Title/Same Title - Same Author (2).txt"),
        "{t:?}"
    );
}

#[test]
fn a_target_that_cannot_be_used_stops_before_any_work_with_exit_2() {
    let ws = Workspace::with_corpus(5, 16);
    std::fs::write(ws.out(), "a file where the target folder should be").unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(ws.out().to_str().unwrap()) && err.contains("not a folder"),
        "{err}"
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files"),
        0,
        "nothing was scanned"
    );
}

#[test]
fn formats_narrow_what_is_recorded() {
    let ws = Workspace::with_corpus(40, 17);
    let out = ws.migrate(&["--formats", "epub,pdf"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = ws
        .manifest
        .iter()
        .filter(|e| e.format == "epub" || e.format == "pdf")
        .count() as i64;
    assert!(want > 0 && (want as usize) < ws.manifest.len());
    assert_eq!(ws.count("SELECT COUNT(*) FROM files"), want);
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE format NOT IN ('epub', 'pdf')"),
        0
    );
    // The recorded set is kept by a resumed run.
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(ws.count("SELECT COUNT(*) FROM files"), want);
}

#[test]
fn hidden_temp_and_special_files_and_symlink_loops_are_not_recorded() {
    let ws = Workspace::empty();
    let lib = ws.lib();
    std::fs::write(
        lib.join("Real Book - Some One.epub"),
        "not really an epub, still a book",
    )
    .unwrap();
    std::fs::write(lib.join(".hidden.epub"), "hidden").unwrap();
    std::fs::write(lib.join("download.epub.part"), "partial").unwrap();
    std::fs::write(lib.join("~$lock.docx"), "office lock").unwrap();
    std::fs::create_dir_all(lib.join("loop")).unwrap();
    std::os::unix::fs::symlink(&lib, lib.join("loop/back-to-top")).unwrap();
    std::os::unix::fs::symlink(lib.join("nowhere.epub"), lib.join("dangling.epub")).unwrap();
    let fifo = lib.join("pipe.epub");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let refs: Vec<String> = {
        let db = ws.db();
        let mut st = db.prepare("SELECT source_ref FROM files").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(refs, ["Real Book - Some One.epub"]);
    let err = stderr(&out);
    assert!(err.contains("pipe.epub") && err.contains("FIFO"), "{err}");
    assert!(err.contains("dangling.epub"), "{err}");
}

/// Two different files with one SHA-1 (the public SHAttered prefixes with a common tail): both
/// reach the target, and only a true copy is skipped as a duplicate — in the same run (the
/// transfer stage) and in a later one (the state DB's record of what was placed).
#[test]
fn files_sharing_a_sha1_but_not_their_bytes_are_both_migrated() {
    let ws = Workspace::empty();
    let data = repo().join("tests/data/sha1-collision");
    let tail: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    let with_tail = |prefix: &str| {
        let mut b = std::fs::read(data.join(prefix)).unwrap();
        b.extend_from_slice(&tail);
        b
    };
    let (one, two) = (
        with_tail("shattered-1.prefix"),
        with_tail("shattered-2.prefix"),
    );
    assert_eq!(
        hex(&sha1::Sha1::digest(&one)),
        hex(&sha1::Sha1::digest(&two)),
        "test data: the two files must share a SHA-1"
    );
    std::fs::create_dir_all(ws.lib().join("x")).unwrap();
    std::fs::write(ws.lib().join("x/one.pdf"), &one).unwrap();
    std::fs::write(ws.lib().join("x/two.pdf"), &two).unwrap();
    std::fs::write(ws.lib().join("x/one again.pdf"), &one).unwrap();

    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Which of the two contents each file in the target holds.
    let placed = |ws: &Workspace| -> Vec<&str> {
        let mut v: Vec<&str> = tree_sha1(&ws.out())
            .keys()
            .map(|rel| match std::fs::read(ws.out().join(rel)).unwrap() {
                b if b == one => "one",
                b if b == two => "two",
                _ => "other bytes",
            })
            .collect();
        v.sort();
        v
    };
    let expected = vec!["one", "two"];
    assert_eq!(placed(&ws), expected, "both contents, once each");
    let dup_of = |name: &str| -> (String, Option<String>) {
        ws.db()
            .query_row(
                "SELECT f.state, (SELECT source_ref FROM files o WHERE o.id = f.duplicate_of)
                 FROM files f WHERE f.source_ref = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(dup_of("x/two.pdf").0, "uploaded");
    // Of the two copies of the first file, one went (whichever was scanned first) and the
    // other is its duplicate.
    let mut ones = [dup_of("x/one.pdf"), dup_of("x/one again.pdf")];
    ones.sort();
    let copy_of = |name: &str| Some(name.to_string());
    assert!(
        ones == [
            ("skipped".into(), copy_of("x/one again.pdf")),
            ("uploaded".into(), None)
        ] || ones
            == [
                ("skipped".into(), copy_of("x/one.pdf")),
                ("uploaded".into(), None)
            ],
        "{ones:?}"
    );

    // A later run: a copy of the second file is a duplicate of it, not of the first.
    std::fs::write(ws.lib().join("x/two again.pdf"), &two).unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        dup_of("x/two again.pdf"),
        ("skipped".to_string(), Some("x/two.pdf".to_string()))
    );
    assert_eq!(placed(&ws), expected);
}
