//! Books whose files hold no title or author, migrated into a calibre library: calibre lists
//! each with the title and authors `calibredb add` gives the same file
//! (tests/data/filenames/expected.json, made by calibre), through the whole of bookferry
//! (scan, extraction, the calibre target's title and author rows).

use crate::util::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

// calibre_target.rs loads it too (privately); the lock is a file, so two copies of the code
// take the same lock.
#[allow(clippy::duplicate_mod)]
#[path = "../support/calibre_serial.rs"]
mod calibre_serial;

fn have_calibre(test: &str) -> bool {
    let ok = Command::new("calibredb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("BOOKFERRY_REQUIRE_CALIBRE").is_none(),
            "{test}: calibredb is not installed but BOOKFERRY_REQUIRE_CALIBRE is set"
        );
        eprintln!("SKIPPED: {test}: calibredb is not installed (apt-get install -y calibre)");
    }
    ok
}

/// (title, authors as calibre joins them).
type Book = (String, String);

#[test]
fn nameless_pdfs_reach_calibre_titled_as_calibredb_add_titles_them() {
    let _s = calibre_serial::serial();
    if !have_calibre("nameless_pdfs_reach_calibre") {
        return;
    }
    let data = repo().join("tests/data/filenames");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("expected.json")).unwrap())
            .unwrap();
    let ws = Workspace::empty();
    // The PDF rows (any template), one per calibre book: two names calibre's duplicate rule
    // reads as one book (its fuzzy title drops brackets and reads `-` as a space:
    // "Title (Author)" and "Title-Author") would be one book with a duplicate format here. Each file gets bytes of
    // its own (a PDF comment after %%EOF), or bookferry would keep one copy of equal files.
    let mut want: BTreeSet<Book> = BTreeSet::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, r) in doc["rows"].as_array().unwrap().iter().enumerate() {
        let name = r["name"].as_str().unwrap();
        // bookferry splits one author on ';', calibre does not (the metadata crate's `names`
        // test lists it among the known differences).
        if !name.ends_with(".pdf") || name == "Two - Ann Smith; Bob Jones.pdf" {
            continue;
        }
        let authors: Vec<&str> = r["authors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let book = (
            r["title"].as_str().unwrap().to_string(),
            authors.join(" & "),
        );
        if !seen.insert((fuzzy(&book.0), book.1.to_lowercase())) {
            continue;
        }
        want.insert(book);
        let mut bytes =
            std::fs::read(data.join("templates").join(r["template"].as_str().unwrap())).unwrap();
        bytes.extend_from_slice(format!("%bookferry names test {i}\n").as_bytes());
        // Each in a folder of its own, as the fixture was made (folders do not count).
        let path = ws.lib().join(format!("{i}")).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(want.len() >= 20, "{} PDF books", want.len());

    let lib = ws.path().join("Calibre Library");
    let to = format!("calibre:{}", lib.display());
    let out = ws.run(&["run", "--from", ws.lib().to_str().unwrap(), "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let listed = Command::new("calibredb")
        .args(["list", "--for-machine", "--fields", "title,authors"])
        .arg("--with-library")
        .arg(&lib)
        .env("CALIBRE_CONFIG_DIRECTORY", ws.path().join("calibre-config"))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let books: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let got: BTreeSet<Book> = books
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["title"].as_str().unwrap().to_string(),
                b["authors"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let missing: Vec<&Book> = want.difference(&got).collect();
    let extra: Vec<&Book> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "calibre after bookferry differs from calibredb add:\n  only calibredb add: {missing:?}\n  only bookferry: {extra:?}"
    );
    assert!(Path::new(&lib).join("metadata.db").exists());
}

/// Near enough calibre's fuzzy title (db/utils.py) for these names: lowercase, brackets and
/// quotes dropped (not what they hold), `-._` as spaces, whitespace runs as one space.
fn fuzzy(title: &str) -> String {
    let kept: String = title
        .to_lowercase()
        .chars()
        .filter(|c| !"[](){}<>'\";,:#".contains(*c))
        .map(|c| if matches!(c, '-' | '.' | '_') { ' ' } else { c })
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}
