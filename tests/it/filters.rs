//! Choosing what moves: `--include`, `--exclude`, `--files-from`, sizes and calibre tags at
//! scan; a changed filter or narrowed `--formats` on a later run ends the rows it leaves out
//! `skipped`/`excluded` (migrated rows stay), and widening it again migrates them.

use crate::util::*;

fn states(ws: &Workspace) -> Vec<(String, String, Option<String>)> {
    let db = ws.db();
    let mut st = db
        .prepare("SELECT source_ref, state, skip_reason FROM files ORDER BY source_ref")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn ext(p: &str) -> &str {
    p.rsplit('.').next().unwrap()
}

#[test]
fn include_and_exclude_choose_what_is_recorded_and_placed() {
    let ws = Workspace::with_corpus(20, 241);
    let epubs: Vec<&Entry> = ws.manifest.iter().filter(|e| e.format == "epub").collect();
    assert!(epubs.len() >= 2, "the corpus has epubs");
    let left_out = &epubs[0].path;
    let out = ws.migrate(&["--include", "*.epub", "--exclude", left_out]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = states(&ws);
    assert_eq!(rows.len(), epubs.len() - 1, "{rows:?}");
    assert!(rows
        .iter()
        .all(|(r, s, _)| ext(r) == "epub" && r != left_out && s == "uploaded"));
    assert_eq!(tree_sha1(&ws.out()).len(), epubs.len() - 1);
    assert!(
        stderr(&out).contains("left out by the filter"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_changed_filter_excludes_rows_not_yet_migrated_and_a_wider_one_takes_them_back() {
    let ws = Workspace::with_corpus(20, 242);
    let lib = ws.lib();
    let scan = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));
    let pdfs = ws.manifest.iter().filter(|e| e.format == "pdf").count();
    assert!(pdfs > 0);

    let out = ws.migrate(&["--exclude", "*.pdf"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (r, s, why) in states(&ws) {
        if ext(&r) == "pdf" {
            assert_eq!(
                (s.as_str(), why.as_deref()),
                ("skipped", Some("excluded")),
                "{r}"
            );
        } else {
            // Migrated (or skipped for another reason, a duplicate in the corpus).
            assert!(
                s == "uploaded" || why.as_deref() != Some("excluded"),
                "{r} {s}"
            );
        }
    }
    let events = ws.count(
        "SELECT count(*) FROM events WHERE to_state = 'skipped' AND detail LIKE '%(excluded)'",
    );
    assert_eq!(events as usize, pdfs);
    assert_eq!(ws.status()["skips"]["excluded"], pdfs, "{}", ws.status());

    // Now the other way round: the pdfs come back, the txt files stay migrated.
    let uploaded_before = ws.count("SELECT count(*) FROM files WHERE state = 'uploaded'");
    let out = ws.migrate(&["--exclude", "*.txt"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.count("SELECT count(*) FROM files WHERE skip_reason = 'excluded'"),
        0
    );
    let pdfs_uploaded =
        ws.count("SELECT count(*) FROM files WHERE state = 'uploaded' AND source_ref LIKE '%.pdf'");
    assert!(pdfs_uploaded > 0);
    assert_eq!(
        ws.count("SELECT count(*) FROM files WHERE state = 'uploaded'"),
        uploaded_before + pdfs_uploaded,
        "the txt files already migrated stay so"
    );
    assert_event_histories_valid(&ws);
}

#[test]
fn narrowed_formats_exclude_and_a_filter_matching_nothing_changes_nothing() {
    let ws = Workspace::with_corpus(12, 243);
    let lib = ws.lib();
    assert_eq!(
        ws.run(&["scan", "--from", lib.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = ws.migrate(&["--formats", "epub"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (r, s, why) in states(&ws) {
        if ext(&r) != "epub" {
            assert_eq!(why.as_deref(), Some("excluded"), "{r} {s}");
        }
    }

    let ws = Workspace::with_corpus(6, 244);
    let out = ws.migrate(&["--include", "*.nothing"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("leaves out all 6 files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_or_zero(&ws.state(), "SELECT count(*) FROM files"), 0);
}

#[test]
fn files_from_sizes_and_bad_filters() {
    let ws = Workspace::with_corpus(10, 245);
    let mut sizes: Vec<u64> = ws.manifest.iter().map(|e| e.size).collect();
    sizes.sort();
    let median = sizes[sizes.len() / 2];
    let list = ws.path().join("wanted.txt");
    let listed: Vec<&str> = ws
        .manifest
        .iter()
        .take(4)
        .map(|e| e.path.as_str())
        .collect();
    std::fs::write(&list, format!("# mine\n{}\n", listed.join("\n"))).unwrap();
    let out = ws.migrate(&[
        "--files-from",
        list.to_str().unwrap(),
        "--min-size",
        &format!("{median}B"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: Vec<String> = ws
        .manifest
        .iter()
        .take(4)
        .filter(|e| e.size >= median)
        .map(|e| e.path.clone())
        .collect();
    let got: Vec<String> = states(&ws).into_iter().map(|(r, _, _)| r).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted);

    let ws = Workspace::with_corpus(3, 246);
    for (args, says) in [
        (vec!["--include", "a["], "--include \"a[\""),
        (
            vec!["--exclude-from", "/nonexistent/list"],
            "--exclude-from /nonexistent/list",
        ),
        (
            vec!["--min-size", "2M", "--max-size", "1M"],
            "above --max-size",
        ),
        (vec!["--max-size", "lots"], "--min-size/--max-size"),
    ] {
        let out = ws.migrate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!ws.out().exists(), "{args:?} created the target");
    }
}

#[test]
fn calibre_tags_choose_books() {
    let ws = Workspace::empty();
    std::fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    let out = ws.migrate(&["--include-tag", "Ember", "--exclude-tag", "harbor"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lib = rusqlite::Connection::open(ws.lib().join("metadata.db")).unwrap();
    let expected: i64 = lib
        .query_row(
            "SELECT count(*) FROM data d WHERE d.book IN (
                 SELECT l.book FROM books_tags_link l JOIN tags t ON t.id = l.tag
                 WHERE lower(t.name) = 'ember')
             AND d.book NOT IN (
                 SELECT l.book FROM books_tags_link l JOIN tags t ON t.id = l.tag
                 WHERE lower(t.name) = 'harbor')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(expected > 0);
    assert_eq!(ws.count("SELECT count(*) FROM files"), expected);
}

/// A changed filter on a calibre source: books a new `--exclude-tag` leaves out before they
/// were migrated end `excluded` (their tags come from the metadata the scan recorded); the
/// others are migrated.
#[test]
fn a_changed_tag_filter_on_a_calibre_source_excludes_rows_not_yet_migrated() {
    let ws = Workspace::empty();
    std::fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    let lib = ws.lib();
    let scan = ws.run(&["scan", "--from", lib.to_str().unwrap()]);
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));
    let recorded = ws.count("SELECT COUNT(*) FROM files");
    let out = ws.migrate(&["--exclude-tag", "ember"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let library = rusqlite::Connection::open(lib.join("metadata.db")).unwrap();
    let tagged: i64 = library
        .query_row(
            "SELECT count(*) FROM data WHERE book IN (
                 SELECT l.book FROM books_tags_link l JOIN tags t ON t.id = l.tag
                 WHERE lower(t.name) = 'ember')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(tagged > 0);
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE skip_reason = 'excluded'"),
        tagged
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'")
            + ws.count("SELECT COUNT(*) FROM files WHERE state = 'skipped'"),
        recorded
    );
    assert_event_histories_valid(&ws);
}
