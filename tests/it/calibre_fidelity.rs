//! calibre → calibre keeps what the user made (issue 22 §1), judged by calibre itself: a source
//! library made with `calibredb` (set dates, ratings, sorts, identifiers, languages, series,
//! tags, comments; a removed book leaving a gap in the ids) is migrated, and `calibredb list
//! --fields all --for-machine` of both libraries is compared once the library-dependent paths
//! (`formats`, `cover`) are made relative to their library.
//!
//! - into a new library: both listings are equal, ids included, and so is each `books.sort`;
//! - into a library with a book of its own: the ids map (the state DB's `calibre_book_ids`
//!   view and `report` say how), and every other field is equal per book;
//! - a run killed after its first commit into a new library, then resumed: the ids are still
//!   kept (the decision was recorded when the library was first opened);
//! - a book of the user's that carries a source book's uuid is not taken for it: the source
//!   book gets a book of its own, and the user's book gains no format.
//!
//! Every test holds the calibre test lock (`calibre_target::serial`) for its whole length.

use crate::calibre_target::{calibredb, have_calibre, serial, to_calibre};
use crate::util::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A fixture file converted by calibre (`tests/data/converted/sample.EXT`).
pub(crate) fn sample(ext: &str) -> PathBuf {
    repo()
        .join("tests/data/converted")
        .join(format!("sample.{ext}"))
}

/// Two books of the calibre fixture library, to be the target's own.
fn others() -> [PathBuf; 2] {
    let lib = repo().join("tests/data/calibre-library");
    [
        lib.join("Tomas Wisniewska/Paper Orchard 12 (9)/Paper Orchard 12 - Tomas Wisniewska.epub"),
        lib.join("Haruki Okorafor/Kingdom Harbor Machine 23 (6)/Kingdom Harbor Machine 23 - Haruki Okorafor.epub"),
    ]
}

/// `calibredb add` of `files` (each its own book); the ids calibre gave them.
fn add(ws: &Workspace, lib: &Path, files: &[PathBuf]) -> Vec<i64> {
    let mut args: Vec<&str> = vec!["add"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = calibredb(ws, lib, &args);
    let ids = out
        .lines()
        .find_map(|l| l.strip_prefix("Added book ids: "))
        .unwrap_or_else(|| panic!("calibredb add said: {out}"));
    ids.split(',').map(|i| i.trim().parse().unwrap()).collect()
}

/// `calibredb set_metadata ID --field F:V …`.
fn set_fields(ws: &Workspace, lib: &Path, id: i64, fields: &[&str]) {
    let id = id.to_string();
    let mut args = vec!["set_metadata", id.as_str()];
    for f in fields {
        args.extend(["--field", f]);
    }
    calibredb(ws, lib, &args);
}

/// A source library made by calibre: five converted samples added (ids 1–5), book 2
/// removed (a gap), and books 3 and 4 given every field a user sets.
pub(crate) fn source_library(ws: &Workspace) -> PathBuf {
    let src = ws.path().join("source");
    let ids = add(
        ws,
        &src,
        &["pdf", "fb2", "docx", "mobi", "azw3"].map(sample),
    );
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    calibredb(ws, &src, &["remove", "2"]);
    set_fields(
        ws,
        &src,
        3,
        &[
            "timestamp:2001-02-03T04:05:06+00:00",
            "pubdate:1999-07-08",
            "rating:7",
            "identifiers:isbn:9780306406157,goodreads:123",
            "languages:deu,eng",
            "series:The Long Shelf",
            "series_index:2.5",
            "tags:alpha,Beta,gamma delta",
            "comments:<p>A <b>user's</b> note.</p>",
            "author_sort:Zed, Ana & Writer, Bo",
            "sort:Docx, The Converted Sample",
            "publisher:Small Press",
            "title:The Converted Sample docx",
        ],
    );
    set_fields(
        ws,
        &src,
        4,
        &[
            "timestamp:2010-05-06T07:08:09+00:00",
            "pubdate:1999-07-07T22:00:00+00:00",
            "sort:Mobi, Converted Sample",
            "rating:4",
        ],
    );
    src
}

/// `calibredb list --fields all --for-machine`, by id, with `formats` and `cover` relative to
/// the library.
pub(crate) fn listing(ws: &Workspace, lib: &Path) -> BTreeMap<i64, Value> {
    let raw = calibredb(ws, lib, &["list", "--for-machine", "--fields", "all"]);
    let books: Vec<Value> = serde_json::from_str(&raw).expect("calibredb list prints JSON");
    let prefix = format!("{}/", lib.canonicalize().unwrap().display());
    let prefix2 = format!("{}/", lib.display());
    let rel = |v: &Value| {
        let s = v.as_str().unwrap();
        Value::from(
            s.strip_prefix(&prefix)
                .or_else(|| s.strip_prefix(&prefix2))
                .unwrap_or_else(|| panic!("{s} is not in {}", lib.display())),
        )
    };
    books
        .into_iter()
        .map(|mut b| {
            if let Some(f) = b.get_mut("formats") {
                *f = Value::Array(f.as_array().unwrap().iter().map(rel).collect());
            }
            if let Some(c) = b.get("cover").map(rel) {
                b["cover"] = c;
            }
            (b["id"].as_i64().unwrap(), b)
        })
        .collect()
}

/// `books.sort` (not in `calibredb list`) and `last_modified` as stored, by id.
fn stored(lib: &Path) -> BTreeMap<i64, (String, String)> {
    let conn =
        Connection::open_with_flags(lib.join("metadata.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT id, sort, last_modified FROM books")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// A book's listing without what depends on where it is: its id and its paths.
fn fields_of(b: &Value) -> Value {
    let mut b = b.clone();
    let o = b.as_object_mut().unwrap();
    for k in ["id", "formats", "cover"] {
        o.remove(k);
    }
    b
}

/// The state DB's `calibre_book_ids` view: source id → target id.
fn id_map(state: &Path) -> BTreeMap<i64, i64> {
    let conn = Connection::open_with_flags(state, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn
        .prepare("SELECT source_id, target_id FROM calibre_book_ids")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn a_calibre_library_into_a_new_library_is_the_same_library_ids_and_dates_included() {
    let _s = serial();
    if !have_calibre("a_calibre_library_into_a_new_library_is_the_same_library") {
        return;
    }
    let ws = Workspace::empty();
    let src = source_library(&ws);
    let dst = ws.path().join("new");
    let out = to_calibre(&ws, &ws.state(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (a, b) = (listing(&ws, &src), listing(&ws, &dst));
    assert_eq!(a.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4, 5]);
    for (id, s) in &a {
        assert_eq!(
            Some(s),
            b.get(id),
            "book {id}: the source's, then the copy's"
        );
    }
    assert_eq!(a, b, "calibredb list of the source and of the copy");
    assert_eq!(stored(&src), stored(&dst), "books.sort and last_modified");
    assert_eq!(
        id_map(&ws.state()),
        a.keys().map(|id| (*id, *id)).collect(),
        "the state DB maps each id to itself"
    );
}

#[test]
fn into_a_library_with_books_the_ids_map_and_every_other_field_is_kept() {
    let _s = serial();
    if !have_calibre("into_a_library_with_books_the_ids_map") {
        return;
    }
    let ws = Workspace::empty();
    let src = source_library(&ws);
    // The target has a book of its own (calibre's id 1) and a deleted one (id 2 used once).
    let dst = ws.path().join("lived-in");
    let theirs = add(&ws, &dst, &others());
    assert_eq!(theirs, vec![1, 2]);
    calibredb(&ws, &dst, &["remove", "2"]);
    let before = listing(&ws, &dst);

    let out = to_calibre(&ws, &ws.state(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let map = id_map(&ws.state());
    let (a, b) = (listing(&ws, &src), listing(&ws, &dst));
    assert_eq!(
        map.keys().copied().collect::<Vec<_>>(),
        a.keys().copied().collect::<Vec<_>>(),
        "every source book is mapped"
    );
    assert!(
        map.values().all(|t| *t > 2),
        "new ids, past every id calibre gave: {map:?}"
    );
    assert_eq!(b[&1], before[&1], "the library's own book is untouched");
    let (sa, sb) = (stored(&src), stored(&dst));
    for (s, t) in &map {
        assert_eq!(
            fields_of(&a[s]),
            fields_of(&b[t]),
            "source {s} → target {t}"
        );
        assert_eq!(
            sa[s], sb[t],
            "source {s} → target {t}: sort and last_modified"
        );
    }
    // `report` says the same, per file.
    let out = ws.run(&["report", "--all", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        let s = r["source_book"].as_i64().expect("source_book");
        assert_eq!(r["target_book"].as_i64(), Some(map[&s]), "{r}");
    }
    let out = ws.run(&["report", "--all", "--format", "csv"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with(",source_book,target_book"), "{header}");
}

#[test]
fn a_run_killed_after_its_first_commit_keeps_the_ids_when_resumed() {
    let _s = serial();
    if !have_calibre("a_run_killed_after_its_first_commit_keeps_the_ids") {
        return;
    }
    let ws = Workspace::with_corpus_sized(300, 2211, 4);
    let src = ws.path().join("source");
    calibredb(&ws, &src, &["add", "-r", ws.lib().to_str().unwrap()]);
    calibredb(&ws, &src, &["remove", "2,5"]);
    // Kill a run once it has committed books and before it ends. A fast machine may finish
    // first: then try again, into a new library with a new state DB.
    let mut killed = None;
    for attempt in 0..10 {
        let (state, dst) = (
            ws.path().join(format!("state-{attempt}.db")),
            ws.path().join(format!("new-{attempt}")),
        );
        let landed = || {
            count_or_zero(
                &state,
                "SELECT COUNT(*) FROM files WHERE state = 'uploaded'",
            )
        };
        let mut child = ws
            .cmd_with_state(
                &state,
                &[
                    "run",
                    "--from",
                    src.to_str().unwrap(),
                    "--to",
                    &format!("calibre:{}", dst.display()),
                    "--transfers",
                    "1",
                    "--checkers",
                    "1",
                    "-q",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while landed() == 0
            && t0.elapsed() < Duration::from_secs(120)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        // Killed, not ended on its own just before the kill.
        let status = child.wait().unwrap();
        // And with books left: a run whose last commit was in when the kill came is a finished
        // run, not an interrupted one.
        let rows = count_or_zero(&state, "SELECT COUNT(*) FROM files");
        let partway = landed() > 0 && landed() < rows;
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        eprintln!(
            "try {attempt}: signal {signal:?}, {} of {rows} rows landed",
            landed()
        );
        if signal == Some(9) && partway {
            killed = Some((state, dst));
            break;
        }
    }
    let (state, dst) = killed.expect("a run killed after its first commit, in 10 tries");
    let first = listing(&ws, &dst);
    assert!(!first.is_empty(), "the killed run committed books");

    let out = to_calibre(&ws, &state, &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (a, b) = (listing(&ws, &src), listing(&ws, &dst));
    assert!(
        a.len() > first.len(),
        "the resumed run had books left to add"
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "every book kept its id, those of the resumed run too"
    );
    for (id, s) in &a {
        assert_eq!(fields_of(s), fields_of(&b[id]), "book {id}");
    }
}

#[test]
fn a_users_book_with_a_source_books_uuid_is_not_taken_for_it() {
    let _s = serial();
    if !have_calibre("a_users_book_with_a_source_books_uuid") {
        return;
    }
    let ws = Workspace::empty();
    let src = source_library(&ws);
    let docx_uuid = listing(&ws, &src)[&3]["uuid"].as_str().unwrap().to_string();
    // The user's library has a book of another title that carries source book 3's uuid (as
    // a copy of an older copy of it would).
    let dst = ws.path().join("users");
    add(&ws, &dst, &others()[..1]);
    {
        let conn = Connection::open(dst.join("metadata.db")).unwrap();
        // calibre's triggers on `books` call its SQL functions: the update needs them to exist.
        conn.create_scalar_function(
            "title_sort",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8,
            |c| c.get::<String>(0),
        )
        .unwrap();
        conn.execute("UPDATE books SET uuid = ?1 WHERE id = 1", [&docx_uuid])
            .unwrap();
    }
    let before = listing(&ws, &dst);

    let out = to_calibre(&ws, &ws.state(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = listing(&ws, &dst);
    assert_eq!(
        after[&1], before[&1],
        "the user's book gained nothing from the source book with its uuid"
    );
    let a = listing(&ws, &src);
    let copy = after
        .values()
        .find(|b| b["title"] == a[&3]["title"])
        .expect("source book 3 has a book of its own");
    assert_ne!(copy["id"], 1);
    assert_ne!(copy["uuid"].as_str(), Some(docx_uuid.as_str()));
    let mut want = fields_of(&a[&3]);
    let mut got = fields_of(copy);
    for v in [&mut want, &mut got] {
        v.as_object_mut().unwrap().remove("uuid");
    }
    assert_eq!(want, got, "every other field is the source's");
    // `verify` knows that book as this migration's, by the uuid it gave it.
    let out = ws.run(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn a_migration_an_older_bookferry_began_keeps_its_books_as_its_own() {
    let _s = serial();
    if !have_calibre("a_migration_an_older_bookferry_began_keeps_its_books_as_its_own") {
        return;
    }
    let ws = Workspace::empty();
    let src = source_library(&ws);
    let dst = ws.path().join("new");
    let out = to_calibre(&ws, &ws.state(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The state DB as a bookferry before schema version 6 left it: no decision recorded (and
    // not the later versions' indexes, columns, tables and triggers either: 7's to 12's).
    Connection::open(ws.state())
        .unwrap()
        .execute_batch(
            "DROP VIEW calibre_book_ids;
             DROP TRIGGER files_placed_content;
             DROP TRIGGER files_unplaced_content;
             DROP TABLE contents_placed;
             DROP TABLE contents_unindexed;
             CREATE INDEX files_sha1 ON files(sha1) WHERE sha1 IS NOT NULL;
             DROP INDEX files_state;
             CREATE INDEX files_state ON files(state, id);
             DROP INDEX files_warned;
             ALTER TABLE migration DROP COLUMN calibre_keep_ids;
             ALTER TABLE migration DROP COLUMN calibre_max_id_before;
             ALTER TABLE verified DROP COLUMN sidecars;
             ALTER TABLE verified DROP COLUMN sidecars_detail;
             PRAGMA user_version = 5;",
        )
        .unwrap();
    // Source book 1 gains a format: the resumed migration must add it to its own book 1,
    // not take that book for one the library had before it began.
    calibredb(
        &ws,
        &src,
        &["add_format", "1", others()[0].to_str().unwrap()],
    );
    let out = to_calibre(&ws, &ws.state(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let state: String = ws
        .db()
        .query_row(
            "SELECT state || ' ' || COALESCE(skip_reason, '') FROM files WHERE source_ref = '1/epub'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(state, "uploaded ", "source book 1's EPUB");
    let (a, b) = (listing(&ws, &src), listing(&ws, &dst));
    assert_eq!(
        a[&1]["formats"], b[&1]["formats"],
        "book 1 has its EPUB too"
    );
}
