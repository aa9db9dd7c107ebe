//! Tests of the whole writer: the schema against a library calibre 6.13 made, crash recovery,
//! and real calibre (`calibredb list`, `check_library`, `add`) judging libraries we wrote. Tests
//! that open a library take calibre's machine-wide lock, so they run one at a time on the
//! machine (`serial`, a file lock the integration tests take too);
//! the calibre ones are skipped, saying so, when `calibredb` is not installed.

use super::*;
use crate::calibre::{schema, METADATA_DB};
use crate::metadata::Metadata;
use rusqlite::Connection;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/calibre-library");

/// One calibre test at a time on this machine, across processes (shared with the integration
/// tests).
#[path = "../../../tests/support/calibre_serial.rs"]
mod calibre_serial;

/// One test at a time for everything that takes calibre's lock or runs calibre, in any process.
pub(super) fn serial() -> calibre_serial::Serial {
    calibre_serial::serial()
}

fn have_calibredb() -> bool {
    let ok = Command::new("calibredb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("BOOKFERRY_REQUIRE_CALIBRE").is_none(),
            "BOOKFERRY_REQUIRE_CALIBRE is set but calibredb does not run"
        );
        eprintln!("SKIPPED: calibredb is not installed (apt-get install -y calibre); not judged by calibre");
    }
    ok
}

fn calibredb(lib: &Path, args: &[&str]) -> String {
    let out = Command::new("calibredb")
        .args(args)
        .arg("--with-library")
        .arg(lib)
        .env(
            "CALIBRE_CONFIG_DIRECTORY",
            lib.parent().expect("parent").join("calibre-config"),
        )
        .output()
        .expect("run calibredb");
    assert!(
        out.status.success(),
        "calibredb {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `check_library` prints its section headers always; anything else is a problem.
fn check_library_problems(lib: &Path) -> Vec<String> {
    const HEADERS: &[&str] = &[
        "Vacuuming database...",
        "Invalid titles",
        "Extra titles",
        "Invalid authors",
        "Extra authors",
        "Missing book formats",
        "Extra book formats",
        "Unknown files in books",
        "Missing cover files",
        "Cover files not in database",
        "Folders raising exception",
    ];
    calibredb(lib, &["check_library"])
        .lines()
        .filter(|l| !l.trim().is_empty() && !HEADERS.contains(&l.trim()))
        .map(String::from)
        .collect()
}

fn list(lib: &Path) -> BTreeMap<i64, Value> {
    let raw = calibredb(lib, &["list", "--for-machine", "--fields", "all"]);
    let v: Value = serde_json::from_str(&raw).expect("calibredb list JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|b| (b["id"].as_i64().expect("id"), b.clone()))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
            let mut perm = fs::metadata(&dest).expect("stat").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(&dest, perm).expect("chmod");
        }
    }
}

fn cover_bytes() -> Vec<u8> {
    fs::read(Path::new(FIXTURE).join("Tomas Murakami/Empire Silence Paper 3 (1)/cover.jpg"))
        .expect("fixture cover")
}

/// A book to add, with the formats it gets.
struct Sample {
    md: Metadata,
    formats: Vec<&'static str>,
    cover: bool,
}

fn samples() -> Vec<Sample> {
    let authors = [
        "Nnedi Ó Briain",
        "Émile Zola",
        "Jürgen Straße",
        "Łucja Wiśniewska",
        "Фёдор Достоевский",
        "Ann Leckie",
        "Ursula K. Le Guin",
        "Dr. John Smith Jr.",
    ];
    let mut out = Vec::new();
    for i in 0..30usize {
        let mut md = Metadata {
            title: Some(format!("Book {i} of the Sample")),
            authors: vec![authors[i % authors.len()].to_string()],
            ..Default::default()
        };
        if i % 4 == 0 {
            md.authors
                .push(authors[(i + 3) % authors.len()].to_string());
        }
        if i % 3 == 0 {
            md.series = Some(format!("Cycle {}", i % 2));
            md.series_index = Some((i / 3) as f64 + if i % 2 == 0 { 0.5 } else { 0.0 });
        }
        if i % 2 == 0 {
            md.tags = vec!["Fiction".into(), format!("tag{}", i % 5)];
        }
        if i % 5 == 0 {
            md.identifiers
                .insert("isbn".into(), format!("97800000000{i:02}"));
            md.identifiers
                .insert("goodreads".into(), format!("{}", 1000 + i));
        }
        md.languages = match i % 4 {
            0 => vec!["en".into()],
            1 => vec!["fr".into(), "de".into()],
            2 => vec!["rus".into()],
            _ => vec![],
        };
        if i % 6 == 0 {
            md.publisher = Some("Tor".into());
            md.pubdate = Some("1999-07-04".into());
            md.description = Some(format!("<p>About book {i} &amp; more</p>"));
            md.rating = Some(4.0);
        }
        out.push(Sample {
            md,
            formats: vec!["epub"],
            cover: i % 3 != 2,
        });
    }
    out[1].formats = vec!["epub", "pdf", "mobi"];
    out[2].formats = vec!["azw3", "txt"];
    out[3].md.title = Some("AC/DC: Live / Loud".into());
    out[4].md.title = Some(format!("The {} Very Long Title", "Enormously ".repeat(20)));
    out[5].md.title = Some("The Left Hand of Darkness".into());
    out[6].md.authors = vec![];
    out[6].md.title = None;
    out
}

/// Add `samples` through the plan → write → commit protocol, in two batches.
fn add_all(lib: &mut CalibreLibrary, samples: &[Sample]) -> Vec<i64> {
    let cover = cover_bytes();
    let mut ids = Vec::new();
    for chunk in samples.chunks(16) {
        let mut batch = Vec::new();
        for s in chunk {
            let mut b = lib.plan(&s.md).expect("plan");
            for f in &s.formats {
                let body = format!("{f} bytes of book {}", b.book_id);
                lib.write_format(&mut b, f, &mut body.as_bytes())
                    .expect("write format");
            }
            if s.cover {
                lib.write_cover(&mut b, &cover).expect("cover");
            }
            ids.push(b.book_id);
            batch.push(b);
        }
        lib.commit(&batch).expect("commit");
    }
    ids
}

fn schema_of(db: &Path) -> Vec<(String, String, Option<String>)> {
    let c = Connection::open(db).expect("open");
    let mut stmt = c
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY rowid")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

#[test]
fn a_new_library_has_calibres_schema_and_rows() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("lib");
    let lib = CalibreLibrary::open(&root).expect("create");
    assert!(lib.was_created());
    let library_id = lib.library_id().expect("library_id");
    drop(lib);
    let db = root.join(METADATA_DB);
    assert_eq!(
        schema_of(&db),
        schema_of(&Path::new(FIXTURE).join(METADATA_DB))
    );
    let c = Connection::open(&db).expect("open");
    let prefs: Vec<(String, String)> = c
        .prepare("SELECT key, val FROM preferences ORDER BY id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    let want: Vec<(String, String)> = schema::FRESH_PREFERENCES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(prefs, want);
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(v, 25);
    let journal: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal");
    assert_eq!(journal, "delete");
    assert_eq!(library_id.len(), 36);
    let files: Vec<_> = fs::read_dir(&root)
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from(METADATA_DB)]);
}

#[test]
fn a_folder_with_other_files_is_refused() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    fs::write(tmp.path().join("notes.txt"), "x").expect("write");
    let err = CalibreLibrary::open(tmp.path()).expect_err("refused");
    assert!(
        matches!(&err, CalibreError::NotCalibre { cause: Unwritable::FolderHoldsFiles { first }, .. } if first == "notes.txt"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a calibre library bookferry can write into: the folder holds files \
             (\"notes.txt\", …) but no metadata.db; give an empty or new folder to create a \
             library",
            tmp.path().display()
        )
    );
}

/// The SQLite error an error's chain holds, if any.
fn sqlite_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rusqlite::Error> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(e) = c.downcast_ref::<rusqlite::Error>() {
            return Some(e);
        }
        cause = c.source();
    }
    None
}

/// A database bookferry cannot write into is refused before anything is written, saying why
/// in the words it always used; SQLite's error, when there is one, is kept as the cause.
#[test]
fn a_database_bookferry_cannot_write_into_is_refused_saying_why() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let refused = |root: &Path| CalibreLibrary::open(root).expect_err("refused");

    let foreign = tmp.path().join("foreign");
    fs::create_dir(&foreign).expect("mkdir");
    let db = foreign.join(METADATA_DB);
    Connection::open(&db)
        .and_then(|c| c.execute_batch("CREATE TABLE books (id INTEGER PRIMARY KEY)"))
        .expect("a database that is not calibre's");
    let err = refused(&foreign);
    assert!(
        matches!(&err, CalibreError::NotCalibre { cause: Unwritable::MissingTables(t), .. } if t.len() == 17 && t[0] == "data"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a calibre library bookferry can write into: missing tables: data, \
             authors, books_authors_link, series, books_series_link, tags, books_tags_link, \
             identifiers, publishers, books_publishers_link, languages, books_languages_link, \
             comments, ratings, books_ratings_link, library_id, preferences",
            db.display()
        )
    );

    let old = tmp.path().join("old");
    fs::create_dir(&old).expect("mkdir");
    let db = old.join(METADATA_DB);
    fs::copy(Path::new(FIXTURE).join(METADATA_DB), &db).expect("copy the fixture's database");
    Connection::open(&db)
        .and_then(|c| c.pragma_update(None, "user_version", 20))
        .expect("an older schema");
    let err = refused(&old);
    assert!(
        matches!(
            err,
            CalibreError::NotCalibre {
                cause: Unwritable::OldSchema(20),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a calibre library bookferry can write into: schema version 20 is older \
             than calibre 6 writes (21+); open the library in calibre once to upgrade it",
            db.display()
        )
    );

    // A connection without calibre's SQL functions, which its triggers call.
    let conn = Connection::open(Path::new(FIXTURE).join(METADATA_DB)).expect("open fixture");
    let err = database::check(&conn, &db).expect_err("no SQL functions");
    assert!(
        matches!(
            err,
            CalibreError::NotCalibre {
                cause: Unwritable::SqlFunctions(_),
                ..
            }
        ),
        "{err:?}"
    );
    let message = format!(
        "{}: not a calibre library bookferry can write into: SQL functions: no such function: \
         title_sort",
        db.display()
    );
    assert!(err.to_string().starts_with(&message), "{err}");
    let cause = sqlite_cause(&err).expect("SQLite's error is the cause");
    assert!(cause.to_string().contains("title_sort"), "{cause:?}");
}

/// What the library refuses to do to a book, each in the words it always used.
#[test]
fn a_book_the_library_cannot_write_says_why() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("lib");
    let mut lib = CalibreLibrary::open(&root).expect("open");
    let md = |t: &str| Metadata {
        title: Some(t.into()),
        authors: vec!["Ann Leckie".into()],
        ..Default::default()
    };

    let err = lib.format_file("Stem", "e/pub").expect_err("not a format");
    assert!(
        matches!(&err, CalibreError::NotAFormat { format, .. } if format == "e/pub"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: format \"e/pub\" is not a file extension calibre can store",
            root.display()
        )
    );

    let mut book = lib.plan(&md("Twice")).expect("plan");
    lib.write_format(&mut book, "epub", &mut &b"data"[..])
        .expect("write");
    let err = lib
        .write_format(&mut book, "EPUB", &mut &b"data"[..])
        .expect_err("a second EPUB");
    assert!(
        matches!(&err, CalibreError::FormatTwice { book_id, format, .. } if *book_id == book.book_id && format == "EPUB"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: book {} already has a EPUB file",
            lib.dir_of(&book).join("Twice - Ann Leckie.epub").display(),
            book.book_id
        )
    );

    lib.commit(std::slice::from_ref(&book)).expect("commit");
    let err = lib
        .commit(std::slice::from_ref(&book))
        .expect_err("committed already");
    assert!(
        matches!(err, CalibreError::NotPlanned { book_id, .. } if book_id == book.book_id),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: book {} is not planned in this library (committed already?)",
            lib.dir_of(&book).display(),
            book.book_id
        )
    );

    let id = book.book_id;
    let err = make_book_dir(&root, &book.rel_dir, id).expect_err("the folder is there");
    assert!(
        matches!(err, CalibreError::FolderExists { book_id, .. } if book_id == id),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: book {id}'s folder already exists and is not bookferry's to reuse",
            lib.dir_of(&book).display()
        )
    );

    fs::write(root.join("A File"), "x").expect("write");
    let err = make_book_dir(&root, "A File/Book (99)", 99).expect_err("the author is a file");
    assert!(
        matches!(err, CalibreError::AuthorNotAFolder { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: exists and is not a folder (or is a symlink)",
            root.join("A File").display()
        )
    );

    // The book's folder replaced by a link to elsewhere.
    let dir = lib.dir_of(&book);
    let elsewhere = tmp.path().join("elsewhere");
    fs::rename(&dir, &elsewhere).expect("move the folder away");
    std::os::unix::fs::symlink(&elsewhere, &dir).expect("symlink");
    let err = lib.committed_book(id).expect_err("a link");
    assert!(
        matches!(err, CalibreError::FolderIsLink { book_id, .. } if book_id == id),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: book #{id}'s folder is a symlink or a file; bookferry does not write through links",
            dir.display()
        )
    );

    // `books.path` leading out of the library.
    lib.db()
        .conn
        .execute("UPDATE books SET path = '../outside' WHERE id = ?1", [id])
        .expect("update");
    let err = lib.committed_book(id).expect_err("outside");
    assert!(
        matches!(&err, CalibreError::PathOutside { book_id, rel_dir, .. } if *book_id == id && rel_dir == "../outside"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: book #{id}'s path \"../outside\" does not stay inside the library",
            root.join("../outside").display()
        )
    );
}

#[test]
fn the_lock_keeps_a_second_writer_out() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let lib = CalibreLibrary::open(&tmp.path().join("a")).expect("open");
    assert!(calibre_is_writing());
    // Another library: calibre's lock (machine-wide) refuses it.
    let err = CalibreLibrary::open(&tmp.path().join("b")).expect_err("second writer");
    assert!(matches!(err, CalibreError::CalibreRunning { .. }), "{err}");
    // The same library: bookferry's own lock refuses it first, also when calibre's lock is
    // ignored, naming this process.
    for ignore_calibre_lock in [false, true] {
        let err = CalibreLibrary::open_with(&tmp.path().join("a"), ignore_calibre_lock)
            .expect_err("second writer of one library");
        assert!(
            matches!(err, CalibreError::LibraryInUse { holder: Some(pid), .. } if pid == std::process::id()),
            "{err}"
        );
    }
    drop(lib);
    assert!(!calibre_is_writing());
    drop(CalibreLibrary::open_with(&tmp.path().join("a"), false).expect("free again"));
}

#[test]
fn a_crash_leaves_nothing_a_rerun_does_not_clean_or_adopt() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("lib");
    let md = |t: &str| Metadata {
        title: Some(t.into()),
        authors: vec!["Ann Leckie".into()],
        ..Default::default()
    };
    // Crash before commit: files written, no row.
    let mut lib = CalibreLibrary::open(&root).expect("open");
    let mut lost = lib.plan(&md("Lost")).expect("plan");
    lib.write_format(&mut lost, "epub", &mut &b"data"[..])
        .expect("write");
    let lost_dir = lib.dir_of(&lost);
    // Crash after commit, before the marker went: simulated by putting it back.
    let mut kept = lib.plan(&md("Kept")).expect("plan");
    lib.write_format(&mut kept, "epub", &mut &b"data"[..])
        .expect("write");
    lib.commit(std::slice::from_ref(&kept)).expect("commit");
    let kept_dir = lib.dir_of(&kept);
    fs::write(kept_dir.join(PENDING_MARKER), "").expect("marker");
    // A folder calibre made without a marker is never touched.
    fs::create_dir_all(root.join("Someone/Theirs (999)")).expect("mkdir");
    fs::write(root.join("Someone/Theirs (999)/x.epub"), "x").expect("write");
    std::mem::forget(lost);
    drop(lib);

    let mut lib = CalibreLibrary::open(&root).expect("reopen cleans up");
    assert!(!lost_dir.exists(), "orphan folder removed");
    assert!(kept_dir.join("Kept - Ann Leckie.epub").exists());
    assert!(
        !kept_dir.join(PENDING_MARKER).exists(),
        "marker of a committed book removed"
    );
    assert!(root.join("Someone/Theirs (999)/x.epub").exists());
    assert_eq!(lib.cleanup_orphans().expect("cleanup"), 0);
    // The lost id is free again and the new book takes it.
    let again = lib.plan(&md("Again")).expect("plan");
    assert_eq!(again.book_id, kept.book_id + 1);
    assert_eq!(
        lib.find_existing(&md("kept")).expect("find"),
        Some(kept.book_id)
    );
    lib.abandon(again).expect("abandon");
}

/// A commit's rows go in while its `syncfs` runs; when the `syncfs` fails, nothing is recorded,
/// the books stay planned, and a later commit records them with rows that point at real items
/// (the author the failed transaction inserted was rolled back, and must not be reused).
#[test]
fn rows_are_committed_only_once_the_files_are_durable() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("lib");
    let mut lib = CalibreLibrary::open(&root).expect("open");
    let md = Metadata {
        title: Some("Ancillary Justice".into()),
        authors: vec!["Ann Leckie".into()],
        ..Default::default()
    };
    let mut book = lib.plan(&md).expect("plan");
    lib.write_format(&mut book, "epub", &mut &b"data"[..])
        .expect("write");
    let books = std::slice::from_ref(&book);
    let resolved = lib.prepare(books).expect("prepare");
    lib.write_opfs(books, &resolved).expect("opf");
    let writer = lib.rows_writer();
    let mut asked = false;
    let rows = writer.write_when_durable(books, &resolved, &[], || {
        asked = true;
        Err(std::io::Error::other("the disk went away"))
    });
    assert!(asked, "durability is asked for after the rows are in");
    let err = rows.expect_err("not durable, not recorded");
    assert!(err.to_string().contains("the disk went away"), "{err}");
    let err = lib
        .recorded(books, &[], &HashSet::new(), Err(err))
        .expect_err("the failure is passed on");
    assert!(err.to_string().contains("syncfs"), "{err}");
    let db = root.join(METADATA_DB);
    let count = |sql: &str| -> i64 {
        Connection::open(&db)
            .expect("open")
            .query_row(sql, [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(count("SELECT COUNT(*) FROM books"), 0);
    assert_eq!(count("SELECT COUNT(*) FROM authors"), 0);
    assert!(
        lib.is_planned(book.book_id),
        "the book waits for the next commit"
    );

    lib.commit(books).expect("the next commit records it");
    assert_eq!(count("SELECT COUNT(*) FROM books"), 1);
    assert_eq!(count("SELECT COUNT(*) FROM data"), 1);
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM books_authors_link l JOIN authors a ON a.id = l.author
             WHERE a.name = 'Ann Leckie'"
        ),
        1,
        "the book's author link points at a real author row"
    );
    assert!(!lib.dir_of(&book).join(PENDING_MARKER).exists());
}

#[test]
fn find_existing_follows_calibres_rule() {
    let _s = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("lib");
    copy_dir(Path::new(FIXTURE), &root);
    let lib = CalibreLibrary::open(&root).expect("open fixture");
    let md = |title: &str, authors: &[&str], langs: &[&str]| Metadata {
        title: Some(title.into()),
        authors: authors.iter().map(|a| a.to_string()).collect(),
        languages: langs.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    // Book 1: "Empire Silence Paper 3" by Tomás Murakami & Olga Okorafor, French.
    assert_eq!(
        lib.find_existing(&md("empire silence: paper-3", &["tomás murakami"], &[]))
            .expect("find"),
        Some(1)
    );
    assert_eq!(
        lib.find_existing(&md("Empire Silence Paper 3", &["Olga Okorafor"], &["fr"]))
            .expect("find"),
        Some(1)
    );
    assert_eq!(
        lib.find_existing(&md("Empire Silence Paper 3", &["Olga Okorafor"], &["de"]))
            .expect("find"),
        None
    );
    assert_eq!(
        lib.find_existing(&md("Empire Silence Paper 3", &["Someone Else"], &[]))
            .expect("find"),
        None
    );
    assert_eq!(
        lib.find_existing(&md("Empire Silence Paper 4", &["Olga Okorafor"], &[]))
            .expect("find"),
        None
    );
    let mut by_isbn = md("Other", &[], &[]);
    by_isbn
        .identifiers
        .insert("isbn".into(), "9788475465797".into());
    assert_eq!(lib.find_existing(&by_isbn).expect("find"), Some(1));
    let by_uuid = Metadata {
        uuid: Some("F1A50026-EB58-43E0-AC12-247F8B70B887".into()),
        ..md("x", &[], &[])
    };
    assert_eq!(lib.find_existing(&by_uuid).expect("find"), Some(1));
}

/// calibre's view of what we wrote: every book with its title, authors, series, tags,
/// identifiers, languages and formats.
fn assert_calibre_sees(lib_root: &Path, samples: &[Sample], ids: &[i64]) {
    let listed = list(lib_root);
    for (s, id) in samples.iter().zip(ids) {
        let b = listed
            .get(id)
            .unwrap_or_else(|| panic!("book {id} not listed by calibre"));
        let title = s.md.title.clone().unwrap_or_else(|| "Unknown".into());
        assert_eq!(b["title"], title.as_str(), "book {id}");
        let authors = if s.md.authors.is_empty() {
            "Unknown".to_string()
        } else {
            s.md.authors.join(" & ")
        };
        assert_eq!(b["authors"], authors.as_str(), "book {id}");
        match &s.md.series {
            Some(series) => {
                assert_eq!(b["series"], series.as_str(), "book {id}");
                assert_eq!(b["series_index"].as_f64(), s.md.series_index, "book {id}");
            }
            None => assert!(b.get("series").is_none(), "book {id}"),
        }
        let tags: Vec<&str> = b["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut want_tags: Vec<&str> = s.md.tags.iter().map(String::as_str).collect();
        let mut got_tags = tags.clone();
        want_tags.sort_unstable();
        got_tags.sort_unstable();
        assert_eq!(got_tags, want_tags, "book {id}");
        let idents: BTreeMap<String, String> =
            serde_json::from_value(b["identifiers"].clone()).expect("identifiers");
        assert_eq!(idents, s.md.identifiers, "book {id}");
        let langs: Vec<String> = serde_json::from_value(b["languages"].clone()).expect("languages");
        let want_langs: Vec<String> =
            s.md.languages
                .iter()
                .filter_map(|l| crate::metadata::lang::canonicalize(l))
                .collect();
        assert_eq!(langs, want_langs, "book {id}");
        let formats: Vec<String> = serde_json::from_value(b["formats"].clone()).expect("formats");
        let mut exts: Vec<String> = formats
            .iter()
            .map(|f| {
                assert!(Path::new(f).is_file(), "{f} exists");
                f.rsplit('.').next().expect("ext").to_string()
            })
            .collect();
        exts.sort();
        let mut want: Vec<String> = s.formats.iter().map(|f| f.to_string()).collect();
        want.sort();
        assert_eq!(exts, want, "book {id}");
        assert_eq!(b.get("cover").is_some(), s.cover, "book {id} cover");
        if s.md.rating.is_some() {
            assert_eq!(b["rating"].as_f64(), Some(8.0), "book {id} rating");
            assert_eq!(b["publisher"], "Tor");
            assert!(b["pubdate"]
                .as_str()
                .expect("pubdate")
                .starts_with("1999-07-04"));
        }
    }
}

#[test]
fn calibre_reads_a_library_we_created() {
    let _s = serial();
    if !have_calibredb() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("new library");
    let samples = samples();
    let mut lib = CalibreLibrary::open(&root).expect("create");
    let ids = add_all(&mut lib, &samples);
    // A second copy of a book is recognized.
    assert_eq!(
        lib.find_existing(&samples[5].md).expect("find"),
        Some(ids[5])
    );
    drop(lib);

    // Paths follow calibre's rules, ASCII-fied and cut as calibre cuts them.
    let c = Connection::open(root.join(METADATA_DB)).expect("open");
    let path: String = c
        .query_row("SELECT path FROM books WHERE id = ?1", [ids[0]], |r| {
            r.get(0)
        })
        .expect("path");
    assert_eq!(
        path,
        format!("Nnedi O Briain/Book 0 of the Sample ({})", ids[0])
    );
    let path: String = c
        .query_row("SELECT path FROM books WHERE id = ?1", [ids[3]], |r| {
            r.get(0)
        })
        .expect("path");
    assert_eq!(
        path,
        format!("Lucja Wisniewska/AC_DC_ Live _ Loud ({})", ids[3])
    );
    drop(c);

    assert_calibre_sees(&root, &samples, &ids);
    let problems = check_library_problems(&root);
    assert!(problems.is_empty(), "check_library: {problems:?}");

    // calibre itself still adds to the library, after our books.
    let extra = tmp.path().join("extra.txt");
    fs::write(&extra, "Just some text.").expect("write");
    let out = calibredb(
        &root,
        &[
            "add",
            extra.to_str().expect("utf-8"),
            "--title",
            "Added By Calibre",
            "--authors",
            "Émile Zola",
        ],
    );
    assert!(out.contains("Added book ids"), "calibredb add: {out}");
    let listed = list(&root);
    let added = listed
        .values()
        .find(|b| b["title"] == "Added By Calibre")
        .expect("calibre's book listed");
    assert!(added["id"].as_i64().expect("id") > *ids.last().expect("ids"));
    assert_eq!(listed.len(), samples.len() + 1);
    let problems = check_library_problems(&root);
    assert!(
        problems.is_empty(),
        "check_library after calibredb add: {problems:?}"
    );

    // And we can add again after calibre did.
    let mut lib = CalibreLibrary::open(&root).expect("reopen");
    let more = vec![Sample {
        md: Metadata {
            title: Some("After Calibre".into()),
            authors: vec!["Émile Zola".into()],
            ..Default::default()
        },
        formats: vec!["epub"],
        cover: false,
    }];
    let more_ids = add_all(&mut lib, &more);
    drop(lib);
    assert_calibre_sees(&root, &more, &more_ids);
    let c = Connection::open(root.join(METADATA_DB)).expect("open");
    let zolas: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM authors WHERE name = 'Émile Zola'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(zolas, 1, "existing author reused");
}

#[test]
fn calibre_reads_the_fixture_library_after_we_add_to_it() {
    let _s = serial();
    if !have_calibredb() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let root: PathBuf = tmp.path().join("lib");
    copy_dir(Path::new(FIXTURE), &root);
    let before = list(&root).len();
    let samples: Vec<Sample> = samples().into_iter().take(8).collect();
    let mut lib = CalibreLibrary::open(&root).expect("open fixture");
    assert!(!lib.was_created());
    let ids = add_all(&mut lib, &samples);
    assert!(ids[0] > 41, "ids continue after calibre's");
    drop(lib);
    assert_calibre_sees(&root, &samples, &ids);
    assert_eq!(list(&root).len(), before + samples.len());
    let problems = check_library_problems(&root);
    assert!(problems.is_empty(), "check_library: {problems:?}");
}
