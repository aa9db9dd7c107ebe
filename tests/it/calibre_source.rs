//! A calibre library as the source: every format of every book migrated with the metadata
//! calibre holds (no file opened to extract it), the library never touched, and a format whose
//! file is missing failed as `source_missing` while the rest goes on.

use crate::util::*;
use serde_json::Value;

fn library_workspace() -> Workspace {
    let ws = Workspace::empty();
    std::fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    ws
}

fn reference() -> Vec<Value> {
    let text =
        std::fs::read_to_string(repo().join("tests/data/calibre-library.calibredb.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_calibre_library_migrates_with_calibres_metadata_and_is_never_touched() {
    let ws = library_workspace();
    let before = tree_snapshot(&ws.lib());
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        tree_snapshot(&ws.lib()),
        before,
        "the calibre library changed"
    );
    for leftover in ["metadata.db-wal", "metadata.db-shm", "metadata.db-journal"] {
        assert!(
            !ws.lib().join(leftover).exists(),
            "{leftover} left in the library"
        );
    }

    let books = reference();
    let formats: usize = books
        .iter()
        .map(|b| b["formats"].as_array().unwrap().len())
        .sum();
    assert_eq!(ws.count("SELECT COUNT(*) FROM files"), formats as i64);
    assert_eq!(ws.count("SELECT COUNT(*) FROM files WHERE source_kind = 'calibre' AND metadata_origin = 'calibre'"), formats as i64);
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state NOT IN ('uploaded', 'skipped')"),
        0
    );

    // Each book's formats sit under calibre's title and first author, with calibre's metadata.
    let db = ws.db();
    for b in &books {
        let id = b["id"].as_i64().unwrap();
        let title = b["title"].as_str().unwrap();
        let first_author = b["authors"].as_str().unwrap().split(" & ").next().unwrap();
        let mut st = db
            .prepare("SELECT state, target_ref, metadata FROM files WHERE source_ref LIKE ?1")
            .unwrap();
        let rows: Vec<(String, Option<String>, String)> = st
            .query_map([format!("{id}/%")], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows.len(),
            b["formats"].as_array().unwrap().len(),
            "book {id}"
        );
        for (state, target_ref, md) in rows {
            let md: Value = serde_json::from_str(&md).unwrap();
            assert_eq!(md["title"], b["title"], "book {id}");
            assert_eq!(md["source"], format!("calibre:{id}"));
            let authors: Vec<&str> = md["authors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(
                authors.join(" & "),
                b["authors"].as_str().unwrap(),
                "book {id}"
            );
            if state == "uploaded" {
                let t = target_ref.unwrap();
                assert!(
                    t.starts_with(&format!("{first_author}/{title}/")),
                    "book {id} placed at {t}"
                );
            }
        }
    }
}

#[test]
fn a_missing_format_file_fails_as_source_missing_and_the_rest_goes_on() {
    let ws = library_workspace();
    let books = reference();
    let victim = books[0]["formats"][0]
        .as_str()
        .unwrap()
        .replace("/tmp/bookferry-ref/calibre-library/", "");
    std::fs::remove_file(ws.lib().join(&victim)).unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (kind, err): (String, String) = ws
        .db()
        .query_row(
            "SELECT error_kind, error FROM files WHERE state = 'failed'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(kind, "source_missing");
    let name = victim.rsplit('/').next().unwrap();
    assert!(err.contains(name), "{err}");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'failed'"),
        1
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')"),
        ws.count("SELECT COUNT(*) FROM files") - 1
    );
}

#[test]
fn a_calibre_library_locked_by_a_writer_or_corrupt_is_refused_clearly() {
    // A writer (calibre adding books) holds an exclusive lock: we wait, then say so.
    let ws = library_workspace();
    let writer = rusqlite::Connection::open(ws.lib().join("metadata.db")).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("metadata.db") && err.to_lowercase().contains("lock"),
        "{err}"
    );
    writer.execute_batch("ROLLBACK").unwrap();
    drop(writer);
    let out = ws.migrate(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "once the writer is done: {}",
        stderr(&out)
    );

    // A corrupt metadata.db: a clear error naming it, nothing migrated.
    let ws = library_workspace();
    std::fs::write(
        ws.lib().join("metadata.db"),
        b"this is not a database at all, just bytes",
    )
    .unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("metadata.db"), "{err}");
    assert!(!ws.out().exists() || ws.target_files().is_empty());
}
