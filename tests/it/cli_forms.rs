//! The forms `--from` and `--to` accept: exactly those documented, prefixes case-insensitive;
//! any other `scheme://` or `name:` is a usage error that creates nothing.

use crate::util::*;

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn unknown_schemes_and_remote_names_are_refused_and_create_nothing() {
    let ws = Workspace::with_corpus(3, 211);
    let before = listing(ws.path());
    for (from, to, says) in [
        ("lib", "ftp://x/y", "`ftp://` is not a form"),
        ("lib", "nas:books", "dir:nas:books"),
        ("lib", "s3://bucket/books", "calibre:PATH"),
        ("nas:lib", "out", "looks like a remote name"),
        ("http://127.0.0.1:9/lib", "out", "not a URL"),
    ] {
        let out = ws.run(&["run", "--from", from, "--to", to]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "--from {from} --to {to}: {err}");
        assert!(err.contains(says), "--from {from} --to {to}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(
            listing(ws.path()),
            before,
            "--from {from} --to {to} created something"
        );
    }
}

#[test]
fn prefixes_are_case_insensitive_and_dir_takes_a_name_with_a_colon() {
    let ws = Workspace::with_corpus(3, 212);
    let out = ws.run(&["run", "--from", "DIR:lib", "--to", "Dir:nas:books"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tree_sha1(&ws.path().join("nas:books")).len(), 3);

    let ws = Workspace::with_corpus(3, 213);
    let out = ws.run(&["run", "--from", "lib", "--to", "Calibre:books"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ws.path().join("books/metadata.db").is_file());
}
