//! `bookferry verify` of a calibre target, judged with real calibre (`calibredb`): a book
//! removed, a format file truncated, a book renamed (its folder moves: not missing), a format
//! calibre itself rewrote (`embed_metadata`: changed by calibre, not damage); `--repair` then
//! `run` restore what was lost without overwriting anything, the damaged file kept outside the
//! library; an interrupted verify continues its pass. Every test here holds the calibre test
//! lock (`calibre_target::serial`).

use crate::calibre_target::{
    assert_check_library_clean, calibredb, have_calibre, serial, to_calibre,
};
use crate::util::*;
use crate::verify::{kill_a_verify_part_way, verdicts, verify};
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A placed row: (source_ref, target_ref, format).
type Placed = (String, String, String);

fn placed(ws: &Workspace) -> Vec<Placed> {
    let db = ws.db();
    let mut st = db
        .prepare(
            "SELECT source_ref, target_ref, format FROM files
             WHERE state = 'uploaded' ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The book id of a target_ref `Author/Title (id)/file.ext`.
fn book_of(target_ref: &str) -> i64 {
    let dir = target_ref.rsplit_once('/').unwrap().0;
    let name = dir.rsplit('/').next().unwrap();
    name.strip_suffix(')')
        .and_then(|n| n.rsplit_once(" ("))
        .and_then(|(_, id)| id.parse().ok())
        .unwrap_or_else(|| panic!("no book id in {target_ref:?}"))
}

/// The library's database, read-only.
fn library_db(lib: &Path) -> Connection {
    Connection::open_with_flags(lib.join("metadata.db"), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// Where book `id`'s file of `format` is now, relative to the library.
fn format_path(lib: &Path, id: i64, format: &str) -> String {
    library_db(lib)
        .query_row(
            "SELECT b.path || '/' || d.name || '.' || lower(d.format) FROM books b
             JOIN data d ON d.book = b.id WHERE b.id = ?1 AND d.format = upper(?2)",
            rusqlite::params![id, format],
            |r| r.get(0),
        )
        .unwrap()
}

fn sha1_of_source(ws: &Workspace, source_ref: &str) -> String {
    sha1_file(&ws.lib().join(source_ref))
}

fn damaged_folder(lib: &Path) -> PathBuf {
    let mut name = lib.file_name().unwrap().to_os_string();
    name.push(".bookferry-damaged");
    lib.with_file_name(name)
}

/// (a) a book removed with `calibredb remove`, (b) a format file truncated, (c) a book's title
/// changed in calibre (its folder and files move), (d) a format calibre rewrote with
/// `calibredb embed_metadata`, (e) a format file deleted behind calibre's back: verify reports
/// exactly (a) and (e) missing, (b) changed, (d) changed by calibre, and exits 1;
/// `--repair missing --repair changed --yes` moves (b)'s damaged file out of the library, then
/// `run` makes (a)'s book again and puts a good (b) and (e) into their own books, at their
/// places; (d) is left as calibre made it; calibre finds the library sound, and verify exits 0.
#[test]
fn verify_finds_what_happened_to_a_calibre_library_and_repair_restores_it() {
    let _s = serial();
    if !have_calibre("verify_finds_what_happened_to_a_calibre_library") {
        return;
    }
    let ws = Workspace::with_corpus(60, 31);
    let lib = ws.path().join("library");
    let o = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = placed(&ws);
    let n = rows.len();
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("target: {n} ok")), "{out}");

    // Books by id, with their rows.
    let mut books: BTreeMap<i64, Vec<&Placed>> = BTreeMap::new();
    for r in &rows {
        books.entry(book_of(&r.1)).or_default().push(r);
    }
    let with_cover: BTreeSet<i64> = {
        let db = library_db(&lib);
        let mut st = db.prepare("SELECT id FROM books WHERE has_cover").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // (d): a book with a cover (calibre 6.13 embeds only then) and an EPUB.
    let embedded_book = *books
        .iter()
        .find(|(id, rs)| with_cover.contains(id) && rs.iter().any(|r| r.2 == "epub"))
        .expect("a book with a cover and an EPUB")
        .0;
    let mut others = books.keys().copied().filter(|id| *id != embedded_book);
    let (removed_book, truncated_book, renamed_book, lost_file_book) = (
        others.next().unwrap(),
        others.next().unwrap(),
        others.next().unwrap(),
        others.next().unwrap(),
    );
    let removed: Vec<&Placed> = books[&removed_book].clone();
    let truncated = books[&truncated_book][0];
    let lost_file = books[&lost_file_book][0];
    let embedded = *books[&embedded_book]
        .iter()
        .find(|r| r.2 == "epub")
        .unwrap();

    // (a)
    calibredb(&ws, &lib, &["remove", &removed_book.to_string()]);
    // (b)
    let truncated_path = lib.join(&truncated.1);
    let len = std::fs::metadata(&truncated_path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated_path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let truncated_bytes = std::fs::read(&truncated_path).unwrap();
    // (c)
    calibredb(
        &ws,
        &lib,
        &[
            "set_metadata",
            &renamed_book.to_string(),
            "--field",
            "title:Renamed In Calibre",
        ],
    );
    for r in &books[&renamed_book] {
        assert!(!lib.join(&r.1).exists(), "{} did not move", r.1);
        let now = format_path(&lib, renamed_book, &r.2);
        assert!(now.contains("Renamed In Calibre"), "{now}");
        assert!(lib.join(&now).is_file(), "{now}");
    }
    // (e) a format file deleted behind calibre's back: its book still lists it.
    std::fs::remove_file(lib.join(&lost_file.1)).unwrap();
    // (d)
    let before = sha1_file(&lib.join(&embedded.1));
    calibredb(
        &ws,
        &lib,
        &[
            "embed_metadata",
            &embedded_book.to_string(),
            "--only-formats",
            "EPUB",
        ],
    );
    let embedded_path = lib.join(format_path(&lib, embedded_book, "epub"));
    let embedded_sha = sha1_file(&embedded_path);
    assert_ne!(embedded_sha, before, "calibre did not rewrite the EPUB");

    // verify only reads: every file of the library, metadata.db included, stays as it was
    // (bytes and mtime), and no journal appears beside it.
    let library_before = tree_snapshot(&lib);
    let (code, out) = verify(&ws, &["-v"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        tree_snapshot(&lib),
        library_before,
        "verify wrote to the library"
    );
    let m = removed.len();
    assert!(
        out.contains(&format!(
            "target: {} ok, {} missing, 1 changed, 1 changed by calibre",
            n - m - 3,
            m + 1
        )),
        "{out}"
    );
    let found: BTreeMap<String, String> = verdicts(&ws)
        .into_iter()
        .filter(|(_, (t, _))| t != "ok")
        .map(|(k, (t, _))| (k, t))
        .collect();
    let mut expected: BTreeMap<String, String> = removed
        .iter()
        .map(|r| (r.0.clone(), "missing".to_string()))
        .collect();
    expected.insert(truncated.0.clone(), "changed".into());
    expected.insert(lost_file.0.clone(), "missing".into());
    expected.insert(embedded.0.clone(), "changed_by_calibre".into());
    assert_eq!(found, expected, "{out}");
    assert_eq!(verdicts(&ws).len(), n);

    let (code, out) = verify(
        &ws,
        &["--repair", "missing", "--repair", "changed", "--yes"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("{} files put back to be migrated", m + 2)),
        "{out}"
    );
    assert!(
        out.contains("1 files calibre rewrote are left as they are"),
        "{out}"
    );
    let kept = damaged_folder(&lib).join(&truncated.1);
    assert!(
        out.contains(&kept.display().to_string()),
        "the damaged file's new place is named:\n{out}"
    );
    assert_eq!(std::fs::read(&kept).unwrap(), truncated_bytes);
    assert!(!truncated_path.exists(), "moved out of the library");

    let o = ws.run(&["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after: BTreeMap<String, String> = placed(&ws).into_iter().map(|(s, t, _)| (s, t)).collect();
    assert_eq!(after.len(), n);
    // (b) a good copy, in its own book at its own place; the damaged one stays outside.
    assert_eq!(after[&truncated.0], truncated.1);
    assert_eq!(
        sha1_file(&truncated_path),
        sha1_of_source(&ws, &truncated.0)
    );
    assert_eq!(std::fs::read(&kept).unwrap(), truncated_bytes);
    // (e) back in its book, at its place.
    assert_eq!(after[&lost_file.0], lost_file.1);
    assert_eq!(
        sha1_file(&lib.join(&lost_file.1)),
        sha1_of_source(&ws, &lost_file.0)
    );
    // (a) a new book, with every file of the removed one.
    for r in &removed {
        let t = &after[&r.0];
        assert_ne!(book_of(t), removed_book, "{t}");
        assert_eq!(sha1_file(&lib.join(t)), sha1_of_source(&ws, &r.0));
    }
    // (d) as calibre made it.
    assert_eq!(sha1_file(&embedded_path), embedded_sha);
    assert_check_library_clean(&ws, &lib, "after repair and run");

    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("target: {} ok, 1 changed by calibre", n - 1)),
        "{out}"
    );
}

/// A verify killed part-way continues its pass: the next one checks only what is left.
#[test]
fn an_interrupted_calibre_verify_continues_its_pass() {
    let _s = serial();
    if !have_calibre("an_interrupted_calibre_verify_continues_its_pass") {
        return;
    }
    let ws = Workspace::with_corpus_sized(1000, 32, 4);
    let lib = ws.path().join("library");
    let o = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let uploaded = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    let done_before = kill_a_verify_part_way(&ws);
    assert!(done_before > 0 && done_before < uploaded);
    let (code, out) = verify(&ws, &["--stats", "1ms"]);
    assert_eq!(code, Some(0), "{out}");
    // Progress as the folder verify shows it: lines without a terminal, of what was left.
    let left = uploaded - done_before;
    assert!(
        out.lines()
            .any(|l| l.contains("verify progress: ") && l.contains(&format!("/{left} files"))),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "continuing the verify pass begun earlier: {done_before} files checked already"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("target: {uploaded} ok")), "{out}");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM verify_passes"),
        ws.count("SELECT COUNT(*) FROM verify_passes WHERE ended_at IS NOT NULL")
    );
}

/// Set book `id`'s uuid in the library, as a restore or another program might leave it (the
/// `title_sort` calibre's update trigger calls is registered as the identity: titles stay).
fn set_uuid(lib: &Path, id: i64, uuid: &str) {
    let db = Connection::open(lib.join("metadata.db")).unwrap();
    db.create_scalar_function(
        "title_sort",
        1,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8,
        |ctx| ctx.get::<String>(0),
    )
    .unwrap();
    db.execute(
        "UPDATE books SET uuid = ?1 WHERE id = ?2",
        rusqlite::params![uuid, id],
    )
    .unwrap();
}

/// A book is this migration's by its id *and* its uuid: where the id now holds a book with
/// another uuid and the file differs, the book is missing, not changed; the file a book
/// still holds intact is there whatever its uuid says.
#[test]
fn a_book_id_that_holds_another_book_now_is_missing_not_changed() {
    let _s = serial();
    if !have_calibre("a_book_id_that_holds_another_book_now_is_missing") {
        return;
    }
    let ws = Workspace::with_corpus(30, 33);
    let lib = ws.path().join("library");
    let o = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = placed(&ws);
    let mut by_book: BTreeMap<i64, Vec<&Placed>> = BTreeMap::new();
    for r in &rows {
        by_book.entry(book_of(&r.1)).or_default().push(r);
    }
    let mut single = by_book.values().filter(|rs| rs.len() == 1).map(|rs| rs[0]);
    let (intact, other, damaged) = (
        single.next().unwrap(),
        single.next().unwrap(),
        single.next().unwrap(),
    );
    set_uuid(
        &lib,
        book_of(&intact.1),
        "00000000-0000-4000-8000-000000000001",
    );
    set_uuid(
        &lib,
        book_of(&other.1),
        "00000000-0000-4000-8000-000000000002",
    );
    for r in [other, damaged] {
        std::fs::write(lib.join(&r.1), b"other bytes").unwrap();
    }
    let (code, out) = verify(&ws, &["-v"]);
    assert_eq!(code, Some(1), "{out}");
    let found: BTreeMap<String, String> = verdicts(&ws)
        .into_iter()
        .filter(|(_, (t, _))| t != "ok")
        .map(|(k, (t, _))| (k, t))
        .collect();
    let expected: BTreeMap<String, String> = [
        (other.0.clone(), "missing".to_string()),
        (damaged.0.clone(), "changed".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, expected, "{out}");
    assert!(out.contains("is another book now"), "{out}");
}

/// From a calibre source, each book keeps its source's uuid: verify knows the books by it (a
/// truncated file is changed, not missing) and finds the whole library intact before.
#[test]
fn books_from_a_calibre_source_are_known_by_their_own_uuids() {
    let _s = serial();
    if !have_calibre("books_from_a_calibre_source_are_known_by_their_own_uuids") {
        return;
    }
    let ws = Workspace::empty();
    std::fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    let lib = ws.path().join("copy");
    let o = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = placed(&ws);
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("target: {} ok", rows.len())), "{out}");
    // The source library's files are read too with --source: none changed.
    let (code, out) = verify(&ws, &["--source"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("source: {} ok", rows.len())), "{out}");
    let victim = &rows[rows.len() / 2];
    let path = lib.join(&victim.1);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, Some(1), "{out}");
    let found: Vec<(String, String)> = verdicts(&ws)
        .into_iter()
        .filter(|(_, (t, _))| t != "ok")
        .map(|(k, (t, _))| (k, t))
        .collect();
    assert_eq!(found, [(victim.0.clone(), "changed".to_string())], "{out}");
    // A source file changed since it was migrated: --source says so, the target side not.
    let other = &rows[0];
    let src: String = ws
        .db()
        .query_row(
            "SELECT path FROM files WHERE source_ref = ?1",
            [&other.0],
            |r| r.get(0),
        )
        .unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&src).unwrap();
    std::io::Write::write_all(&mut f, b"appended").unwrap();
    let (code, out) = verify(&ws, &["--source"]);
    assert_eq!(code, Some(1), "{out}");
    let v = verdicts(&ws);
    assert_eq!(v[&other.0], ("ok".into(), Some("changed".into())), "{out}");
    assert_eq!(v[&victim.0].0, "changed", "{out}");
}
