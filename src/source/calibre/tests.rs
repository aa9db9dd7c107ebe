//! Tests of the calibre source: a copy of the fixture library read whole and compared with
//! what `calibredb list` printed for it, read in chunks and compared with the whole read, edge
//! cases from edited copies, locks, and damaged databases.

use super::*;
use crate::calibre::read::{is_idle_wal_database, Unreadable};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/calibre-library");
const CALIBREDB_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/calibre-library.calibredb.json"
);
/// Where the library copy lay when `calibredb list` wrote the reference JSON.
const CALIBREDB_ROOT: &str = "/tmp/bookferry-ref/calibre-library/";

/// A writable copy of the fixture in a temp dir, under a name that needs URI escaping.
pub(crate) fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("my library #1 ?é%20");
    copy_dir(Path::new(FIXTURE), &root);
    (tmp, root)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy file");
            let mut perm = fs::metadata(&target).expect("stat").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(&target, perm).expect("chmod");
        }
    }
}

/// Every file under `root`: relative path → (bytes, mtime).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mtime = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .expect("mtime");
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, (fs::read(&path).expect("read file"), mtime));
            }
        }
    }
    out
}

/// Every format of every book in the library at `root`, read whole: one chunk of all its books,
/// in one read transaction.
fn read_library(root: &Path) -> Result<Vec<CalibreFormat>, CalibreError> {
    read_library_with_timeout(root, DEFAULT_BUSY_TIMEOUT)
}

/// [`read_library`] with the time to wait for a writer's lock given.
fn read_library_with_timeout(
    root: &Path,
    busy_timeout: Duration,
) -> Result<Vec<CalibreFormat>, CalibreError> {
    let chunks = read_chunks(root, usize::MAX, busy_timeout)?;
    assert!(chunks.len() <= 1, "one chunk, or none for no books");
    Ok(chunks.into_iter().flatten().collect())
}

/// The library at `root` read `books` books at a time, chunk by chunk.
fn read_chunks(
    root: &Path,
    books: usize,
    busy_timeout: Duration,
) -> Result<Vec<Vec<CalibreFormat>>, CalibreError> {
    let mut reader = LibraryReader::open(root, books, busy_timeout)?;
    let mut chunks = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        chunks.push(chunk);
    }
    Ok(chunks)
}

fn writer(root: &Path) -> Connection {
    Connection::open(root.join(METADATA_DB)).expect("open for writing")
}

#[test]
fn reads_every_format_and_changes_nothing() {
    let (_tmp, root) = copy_fixture();
    assert!(is_calibre_library(&root));
    let before = snapshot(&root);

    let formats = read_library(&root).expect("read library");

    assert_eq!(formats.len(), 43, "formats");
    let books: std::collections::BTreeSet<i64> = formats.iter().map(|f| f.book_id).collect();
    assert_eq!(books.len(), 41, "books");
    let refs: std::collections::BTreeSet<String> =
        formats.iter().map(CalibreFormat::source_ref).collect();
    assert_eq!(refs.len(), 43, "source_ref is unique");
    for f in &formats {
        let abs = f.abs_path(&root);
        let meta = fs::metadata(&abs).unwrap_or_else(|e| panic!("{}: {e}", abs.display()));
        assert_eq!(meta.len(), f.size, "{}: size", f.rel_path);
        if let Some(cover) = f.abs_cover_path(&root) {
            assert!(cover.is_file(), "{}", cover.display());
        }
        assert_eq!(f.metadata.source, Some(format!("calibre:{}", f.book_id)));
        assert_eq!(f.metadata.cover, f.cover_path);
        assert!(f.metadata.has_title_and_author(), "{}", f.rel_path);
    }
    let mut kinds: Vec<&str> = formats.iter().map(|f| f.format.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds, ["azw3", "cbz", "epub", "fb2", "mobi", "pdf", "txt"]);

    let after = snapshot(&root);
    let new: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(new.is_empty(), "new files appeared: {new:?}");
    for (rel, (bytes, mtime)) in &before {
        let (bytes2, mtime2) = &after[rel];
        assert!(bytes == bytes2, "{} changed", rel.display());
        assert_eq!(mtime, mtime2, "{} mtime changed", rel.display());
    }
}

/// Compares every book with what `calibredb list --for-machine --fields all` printed for the
/// same library (calibre 6.13), kept in tests/data so the test needs no calibre.
#[test]
fn matches_calibredb_reference() {
    let (_tmp, root) = copy_fixture();
    let formats = read_library(&root).expect("read library");
    let raw = fs::read_to_string(CALIBREDB_JSON).expect("reference json");
    let reference: Vec<serde_json::Value> = serde_json::from_str(&raw).expect("parse json");
    assert_eq!(reference.len(), 41);

    let mut mismatches: Vec<String> = Vec::new();
    let mut books_ok = 0;
    let mut formats_ok = 0;
    for want in &reference {
        let id = want["id"].as_i64().expect("id");
        let ours: Vec<&CalibreFormat> = formats.iter().filter(|f| f.book_id == id).collect();
        let Some(first) = ours.first() else {
            mismatches.push(format!("book {id}: not found"));
            continue;
        };
        let md = &first.metadata;
        let before = mismatches.len();
        let mut check = |field: &str, got: serde_json::Value, expected: serde_json::Value| {
            if got != expected {
                mismatches.push(format!(
                    "book {id} {field}: ours {got} != calibredb {expected}"
                ));
            }
        };
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);

        check("title", j(&md.title), j(&s(&want["title"])));
        let authors: Vec<String> = want["authors"]
            .as_str()
            .unwrap_or("")
            .split(" & ")
            .map(str::to_string)
            .collect();
        check("authors", j(&md.authors), j(&authors));
        check(
            "author_sort",
            j(&md.author_sort),
            j(&s(&want["author_sort"])),
        );
        check("series", j(&md.series), j(&s(&want["series"])));
        // calibre keeps a series_index (1.0) for every book; ours only with a series.
        let series_index = want["series"]
            .is_string()
            .then(|| want["series_index"].as_f64())
            .flatten();
        check("series_index", j(&md.series_index), j(&series_index));
        check("tags", j(&md.tags), want["tags"].clone());
        check(
            "identifiers",
            j(&md.identifiers),
            want["identifiers"].clone(),
        );
        let isbn = s(&want["isbn"]).filter(|i| !i.is_empty());
        check("isbn", j(&md.isbn), j(&isbn));
        check("publisher", j(&md.publisher), j(&s(&want["publisher"])));
        // calibredb prints `1940-05-03T00:00:00+00:00`, and `0101-01-01…` for no date.
        let pubdate = want["pubdate"]
            .as_str()
            .map(|p| p.get(..10).unwrap_or(p).to_string())
            .filter(|p| p.as_str() != "0101-01-01");
        check("pubdate", j(&md.pubdate), j(&pubdate));
        // calibredb prints calibre's ISO 639-3 codes; ours are ISO 639-1 (to_iso639_1 is
        // checked on its own in iso639_conversion).
        let languages: Vec<String> = want["languages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str())
                    .map(to_iso639_1)
                    .collect()
            })
            .unwrap_or_default();
        check("languages", j(&md.languages), j(&languages));
        check("language", j(&md.language), j(&languages.first()));
        check("uuid", j(&md.uuid), j(&s(&want["uuid"])));
        // calibredb list prints calibre's 0–10 value; ours is stars (half of it).
        let rating = want["rating"]
            .as_f64()
            .filter(|r| *r > 0.0)
            .map(|r| r / 2.0);
        check("rating", j(&md.rating), j(&rating));
        check("description", j(&md.description), j(&s(&want["comments"])));
        let cover = s(&want["cover"]).map(|c| c.replace(CALIBREDB_ROOT, ""));
        check("cover", j(&md.cover), j(&cover));
        let mut want_formats: Vec<String> = want["formats"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str()).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .map(|f| f.replace(CALIBREDB_ROOT, ""))
            .collect();
        want_formats.sort();
        let mut got_formats: Vec<String> = ours.iter().map(|f| f.rel_path.clone()).collect();
        got_formats.sort();
        check("formats", j(&got_formats), j(&want_formats));
        for f in &ours {
            if f.metadata != *md {
                mismatches.push(format!("book {id}: formats carry different metadata"));
            }
        }
        if mismatches.len() == before {
            books_ok += 1;
            formats_ok += ours.len();
        }
    }
    eprintln!(
        "calibredb reference: {books_ok}/41 books, {formats_ok}/{} formats match",
        formats.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches with calibredb:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!((books_ok, formats_ok), (41, 43));
}

fn j<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("serializable")
}

#[test]
fn edge_cases_from_an_edited_copy() {
    let (_tmp, root) = copy_fixture();
    {
        // Plain writes to link tables only: `UPDATE books` would fire calibre's trigger,
        // which needs its `title_sort` SQL function.
        let w = writer(&root);
        w.execute_batch(
            "INSERT INTO authors (id, name, sort) VALUES (100, 'Гоголь| Николай', 'Гоголь');
             INSERT INTO books_authors_link (id, book, author) VALUES (100, 2, 100);
             INSERT INTO ratings (id, rating) VALUES (100, 7);
             INSERT INTO books_ratings_link (book, rating) VALUES (2, 100);
             INSERT INTO books_languages_link (book, lang_code, item_order) VALUES (2, 3, 1);
             INSERT INTO books_languages_link (book, lang_code, item_order) VALUES (2, 1, 0);
             INSERT INTO identifiers (book, type, val) VALUES (2, 'GoodReads', '12345');
             INSERT INTO identifiers (book, type, val) VALUES (2, 'isbn', '9780000000002');
             UPDATE comments SET text = '   ' WHERE book = 1;",
        )
        .expect("edit copy");
    }
    fs::remove_file(root.join(
        "Haruki Segura/Letters Glass Winter 32 (3)/Letters Glass Winter 32 - Haruki Segura.azw3",
    ))
    .expect("remove a format file");

    let formats = read_library(&root).expect("read library");
    assert_eq!(formats.len(), 43, "a missing file is still listed");
    let book2 = formats
        .iter()
        .find(|f| f.source_ref() == "2/mobi")
        .expect("2/mobi");
    let md = &book2.metadata;
    assert_eq!(md.authors, ["Haruki Segura", "Гоголь, Николай"]);
    assert_eq!(md.rating, Some(3.5));
    assert_eq!(md.languages, ["fr", "en"]);
    assert_eq!(md.language.as_deref(), Some("fr"));
    assert_eq!(
        md.identifiers.get("goodreads").map(String::as_str),
        Some("12345")
    );
    assert_eq!(md.isbn.as_deref(), Some("9780000000002"));
    assert_eq!(md.pubdate, None, "0101-01-01 is calibre's 'no date'");
    assert_eq!(md.series, None);
    assert_eq!(md.series_index, None);

    let azw3 = formats
        .iter()
        .find(|f| f.source_ref() == "3/azw3")
        .expect("3/azw3");
    assert!(!azw3.abs_path(&root).exists());
    assert_eq!(
        azw3.rel_path,
        "Haruki Segura/Letters Glass Winter 32 (3)/Letters Glass Winter 32 - Haruki Segura.azw3"
    );
    assert_eq!(azw3.cover_path, None, "book 3 has no cover");
    assert_eq!(azw3.metadata.cover, None);

    let book1 = formats.iter().find(|f| f.book_id == 1).expect("book 1");
    assert_eq!(book1.metadata.description, None, "blank comments");
    assert_eq!(book1.metadata.series.as_deref(), Some("Garden Cycle"));
    assert_eq!(book1.metadata.series_index, Some(7.0));
    assert_eq!(book1.metadata.language.as_deref(), Some("fr"));
}

/// Read a few books at a time, the library gives exactly what it gives read whole (the same
/// formats, in the same order, with the same metadata), at every chunk size; on the fixture,
/// and on a copy with gaps in its book ids (deleted books), books without formats, and link
/// rows added out of book order.
#[test]
fn reading_in_chunks_gives_what_reading_whole_gives() {
    let (_tmp, root) = copy_fixture();
    let (_tmp2, gaps) = copy_fixture();
    writer(&gaps)
        .execute_batch(
            // calibre's delete trigger takes the books' link rows with them.
            "DELETE FROM books WHERE id IN (4, 5, 6, 7, 20);
             DELETE FROM data WHERE book IN (10, 11);
             INSERT INTO tags (id, name) VALUES (900, 'added later');
             INSERT INTO books_tags_link (book, tag) VALUES (41, 900), (1, 900), (22, 900);",
        )
        .expect("edit copy");
    for (lib, books_in_lib) in [(&root, 41_usize), (&gaps, 36)] {
        let whole = read_library(lib).expect("read whole");
        for books in [1, 2, 3, 7, 35, 36, 41, 42] {
            let chunks = read_chunks(lib, books, DEFAULT_BUSY_TIMEOUT).expect("read in chunks");
            assert_eq!(
                chunks.len(),
                books_in_lib.div_ceil(books),
                "{books} books per chunk"
            );
            let chunked: Vec<CalibreFormat> = chunks.into_iter().flatten().collect();
            assert_eq!(chunked, whole, "{books} books per chunk");
        }
    }
    let gapped = read_library(&gaps).expect("read whole");
    let ids: std::collections::BTreeSet<i64> = gapped.iter().map(|f| f.book_id).collect();
    assert_eq!(ids.len(), 34, "{ids:?}");
    let tagged: Vec<i64> = gapped
        .iter()
        .filter(|f| f.metadata.tags.iter().any(|t| t == "added later"))
        .map(|f| f.book_id)
        .collect();
    assert!(
        tagged.contains(&1) && tagged.contains(&22) && tagged.contains(&41),
        "{tagged:?}"
    );
}

/// What a chunk holds is bounded by the chunk, not the library: at most `books` books' formats,
/// the chunks in book id order and disjoint, together every format.
#[test]
fn a_chunk_holds_the_formats_of_its_books_only() {
    let (_tmp, root) = copy_fixture();
    let most_formats_of_a_book = {
        let w = writer(&root);
        w.query_row(
            "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM data GROUP BY book)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("count formats") as usize
    };
    for books in [1, 2, 3] {
        let mut reader =
            LibraryReader::open(&root, books, DEFAULT_BUSY_TIMEOUT).expect("open library");
        let (mut seen, mut chunks, mut last_book) = (0, 0, i64::MIN);
        while let Some(chunk) = reader.next_chunk().expect("read a chunk") {
            chunks += 1;
            let ids: std::collections::BTreeSet<i64> = chunk.iter().map(|f| f.book_id).collect();
            assert!(ids.len() <= books, "chunk {chunks}: books {ids:?}");
            assert!(
                chunk.len() <= books * most_formats_of_a_book,
                "chunk {chunks}: {} formats held at once",
                chunk.len()
            );
            assert!(
                ids.first().is_none_or(|first| *first > last_book),
                "chunk {chunks} goes back to book {ids:?} after book {last_book}"
            );
            last_book = ids.last().copied().unwrap_or(last_book);
            seen += chunk.len();
        }
        assert_eq!(chunks, 41_usize.div_ceil(books), "{books} books per chunk");
        assert_eq!(seen, 43, "{books} books per chunk");
        assert!(reader.next_chunk().expect("read past the end").is_none());
    }
}

#[test]
fn unsafe_paths_are_refused() {
    let (_tmp, root) = copy_fixture();
    writer(&root)
        .execute("UPDATE data SET name = '../../escape' WHERE book = 5", [])
        .expect("edit copy");
    match read_library(&root) {
        Err(CalibreError::UnsafePath { book_id: 5, .. }) => {}
        other => panic!("expected UnsafePath for book 5, got {other:?}"),
    }
}

#[test]
fn a_writer_holding_the_lock_gives_locked_in_bounded_time() {
    let (_tmp, root) = copy_fixture();
    let w = writer(&root);
    w.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let start = Instant::now();
    let result = read_library_with_timeout(&root, Duration::from_millis(300));
    let elapsed = start.elapsed();
    match &result {
        Err(e @ CalibreError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("metadata.db") && msg.contains("locked"),
                "{msg}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_millis(250), "waited {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "waited {elapsed:?}");

    w.execute_batch("ROLLBACK").expect("release");
    assert_eq!(read_library(&root).expect("read after release").len(), 43);
}

/// calibre in the middle of a write transaction (RESERVED lock, change not yet committed):
/// readers are not blocked, and see the committed state.
#[test]
fn a_pending_calibre_write_does_not_block_reading() {
    let (_tmp, root) = copy_fixture();
    let w = writer(&root);
    w.execute_batch("BEGIN IMMEDIATE; DELETE FROM data WHERE book = 1;")
        .expect("start a write");
    let formats =
        read_library_with_timeout(&root, Duration::from_millis(300)).expect("read during a write");
    assert_eq!(formats.len(), 43, "uncommitted delete not seen");
    w.execute_batch("ROLLBACK").expect("rollback");
}

#[test]
fn corrupt_or_foreign_databases_are_corrupt() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Random bytes (a fixed LCG: no rand dependency).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let bytes: Vec<u8> = (0..16384)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    fs::write(tmp.path().join(METADATA_DB), &bytes).expect("write garbage");
    assert!(is_calibre_library(tmp.path()));
    match read_library_with_timeout(tmp.path(), Duration::from_millis(100)) {
        Err(e @ CalibreError::Corrupt { .. }) => {
            assert!(e.to_string().contains("metadata.db"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // A real SQLite file that is not calibre's.
    let other = tempfile::tempdir().expect("temp dir");
    Connection::open(other.path().join(METADATA_DB))
        .and_then(|c| c.execute_batch("CREATE TABLE books (id INTEGER PRIMARY KEY)"))
        .expect("make a foreign db");
    match read_library(other.path()) {
        Err(CalibreError::Corrupt {
            cause: Unreadable::MissingTables(tables),
            ..
        }) => {
            assert!(tables.contains(&"data"), "{tables:?}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // An empty file is an empty SQLite database: no calibre tables either.
    let empty = tempfile::tempdir().expect("temp dir");
    fs::write(empty.path().join(METADATA_DB), b"").expect("write empty");
    assert!(matches!(
        read_library(empty.path()),
        Err(CalibreError::Corrupt { .. })
    ));
}

#[test]
fn a_folder_without_metadata_db_is_not_a_library() {
    let tmp = tempfile::tempdir().expect("temp dir");
    assert!(!is_calibre_library(tmp.path()));
    assert!(matches!(
        read_library(tmp.path()),
        Err(CalibreError::NotALibrary { .. })
    ));
}

/// A library whose database was switched to WAL: reading must not create `-wal`/`-shm`.
#[test]
fn an_idle_wal_database_is_read_without_new_files() {
    let (_tmp, root) = copy_fixture();
    {
        let w = writer(&root);
        let mode: String = w
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("switch to WAL");
        assert_eq!(mode, "wal");
    } // the last connection closing removes -wal and -shm
    let before = snapshot(&root);
    assert!(is_idle_wal_database(&root.join(METADATA_DB)));
    assert_eq!(read_library(&root).expect("read WAL library").len(), 43);
    let after = snapshot(&root);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "no new files"
    );
}

#[test]
fn iso639_conversion() {
    for (code, want) in [
        ("eng", "en"),
        ("fra", "fr"),
        ("fre", "fr"),
        ("deu", "de"),
        ("ger", "de"),
        ("spa", "es"),
        ("pol", "pl"),
        ("jpn", "ja"),
        ("zho", "zh"),
        ("ukr", "uk"),
        ("rus", "ru"),
        ("ENG", "en"),
        ("en", "en"),
        ("haw", "haw"),
        ("und", "und"),
    ] {
        assert_eq!(to_iso639_1(code), want, "{code}");
    }
}
