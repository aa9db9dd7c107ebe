//! The calibre-library target (`run --to calibre:PATH`), judged by real calibre: `calibredb list`
//! and `check_library` on what bookferry wrote, `calibredb add` after it, a real `calibre-server`
//! serving a book, real `kill -9` of bookferry mid-run.
//!
//! - a make-corpus library (with some books given a second format) into a new library: every
//!   book with its metadata and formats, one calibre book per source book, the library sound
//!   for calibre, which adds to it and serves it; a rerun changes nothing;
//! - the calibre fixture library round-trips field by field;
//! - `kill -9` at ≥ 20 moments, then a last run: the same library an uninterrupted run makes;
//! - SIGINT: what was recorded is whole; a rerun completes it;
//! - an existing library: a second migration adds nothing; `--merge-formats` adds what a book
//!   lacks, and without it the book is skipped;
//! - calibre's writer lock: a running calibre-server keeps bookferry out (exit 2, named) unless
//!   `--ignore-calibre-lock`; a dry run opens no library;
//! - `--link hardlink` / `symlink`: the library's files are the source's;
//! - hostile titles and authors, and symlinks planted in the library, never lead outside it.
//!
//! calibre's writer lock is one per user and machine (an abstract Unix socket), so every test here
//! that runs bookferry into a calibre library or runs a calibre program holds [`serial`] (a file
//! lock the unit tests take too) for its whole length. Without `calibredb` the tests are skipped, saying so — unless
//! `BOOKFERRY_REQUIRE_CALIBRE` is set (CI), where a missing calibre is a failure.

use crate::util::*;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

// ---------------------------------------------------------------------------------------------
// One test at a time; calibre or a skip

/// One calibre test at a time on this machine, across processes (shared with the unit tests).
#[path = "../support/calibre_serial.rs"]
mod calibre_serial;

/// Held for the whole of every test in this file: calibre's writer lock is machine-wide, so
/// these tests wait for every other calibre test, in this process or any other.
pub(crate) fn serial() -> calibre_serial::Serial {
    calibre_serial::serial()
}

/// True when calibre is installed. Without it: a skip, said out loud — or a failure when
/// `BOOKFERRY_REQUIRE_CALIBRE` is set.
pub(crate) fn have_calibre(test: &str) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Running bookferry and calibre

/// calibre programs keep their settings here, not in the user's home.
fn calibre_config(ws: &Workspace) -> PathBuf {
    ws.path().join("calibre-config")
}

/// `bookferry --state STATE run --from FROM --to calibre:LIB EXTRA…`, not yet run.
fn to_calibre_cmd(
    ws: &Workspace,
    state: &Path,
    from: &Path,
    lib: &Path,
    extra: &[&str],
) -> Command {
    let to = format!("calibre:{}", lib.display());
    let mut args = vec!["run", "--from", from.to_str().unwrap(), "--to", &to];
    args.extend_from_slice(extra);
    ws.cmd_with_state(state, &args)
}

pub(crate) fn to_calibre(
    ws: &Workspace,
    state: &Path,
    from: &Path,
    lib: &Path,
    extra: &[&str],
) -> Output {
    to_calibre_cmd(ws, state, from, lib, extra)
        .output()
        .expect("bookferry runs")
}

fn calibredb_raw(ws: &Workspace, lib: &Path, args: &[&str]) -> Output {
    Command::new("calibredb")
        .args(args)
        .arg("--with-library")
        .arg(lib)
        .env("CALIBRE_CONFIG_DIRECTORY", calibre_config(ws))
        .output()
        .expect("calibredb runs")
}

pub(crate) fn calibredb(ws: &Workspace, lib: &Path, args: &[&str]) -> String {
    let out = calibredb_raw(ws, lib, args);
    assert!(
        out.status.success(),
        "calibredb {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `calibredb list --for-machine --fields all`: every book as calibre sees it.
fn list(ws: &Workspace, lib: &Path) -> Vec<Value> {
    let raw = calibredb(ws, lib, &["list", "--for-machine", "--fields", "all"]);
    let v: Value = serde_json::from_str(&raw).expect("calibredb list prints JSON");
    v.as_array().expect("a JSON array").clone()
}

/// `check_library` prints its section headers always; any other line is a problem it found.
pub(crate) fn check_library_problems(ws: &Workspace, lib: &Path) -> Vec<String> {
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
    calibredb(ws, lib, &["check_library"])
        .lines()
        .filter(|l| !l.trim().is_empty() && !HEADERS.contains(&l.trim()))
        .map(String::from)
        .collect()
}

pub(crate) fn assert_check_library_clean(ws: &Workspace, lib: &Path, when: &str) {
    let problems = check_library_problems(ws, lib);
    assert!(problems.is_empty(), "check_library {when}: {problems:#?}");
}

/// A book's format file extensions, lower case, sorted.
fn format_exts(book: &Value) -> Vec<String> {
    let mut exts: Vec<String> = book["formats"]
        .as_array()
        .expect("formats")
        .iter()
        .map(|f| {
            let f = f.as_str().expect("path");
            f.rsplit('.').next().unwrap().to_lowercase()
        })
        .collect();
    exts.sort();
    exts
}

fn tags_of(book: &Value) -> BTreeSet<String> {
    book["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn identifiers_of(book: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(book["identifiers"].clone()).unwrap_or_default()
}

/// Book id → book.
fn by_id(books: &[Value]) -> BTreeMap<i64, Value> {
    books
        .iter()
        .map(|b| (b["id"].as_i64().expect("id"), b.clone()))
        .collect()
}

/// The `(id)` of a calibre book folder name `Title (id)`.
fn folder_book_id(name: &str) -> Option<i64> {
    let inner = name.strip_suffix(')')?;
    inner.rsplit_once(" (")?.1.parse().ok()
}

/// The book id in a `target_ref` (`Author/Title (id)/file.ext`).
fn ref_book_id(target_ref: &str) -> i64 {
    let dir = target_ref.split('/').nth(1).unwrap_or("");
    folder_book_id(dir).unwrap_or_else(|| panic!("no book id in target_ref {target_ref:?}"))
}

/// Every entry below `root` (files, folders, symlinks — links not followed), relative.
fn all_entries(root: &Path) -> BTreeMap<String, fs::FileType> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                stack.push(e.path());
            }
            out.insert(rel, ft);
        }
    }
    out
}

/// Leftovers of bookferry's crash protocol anywhere in the library: pending markers, temp
/// files, half-made databases.
fn bookferry_leftovers(lib: &Path) -> Vec<String> {
    all_entries(lib)
        .into_keys()
        .filter(|rel| {
            rel.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(".bookferry"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The state DB

/// One `files` row, with the detail of its last event.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    state: String,
    skip_reason: Option<String>,
    target_ref: Option<String>,
    /// `files.blake3` (a calibre target records no SHA-1).
    blake3: Option<String>,
    error: Option<String>,
    detail: Option<String>,
    duplicate_of: Option<i64>,
}

/// source_ref → row, from any state DB.
fn rows(state: &Path) -> BTreeMap<String, Row> {
    let db = Connection::open_with_flags(state, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut st = db
        .prepare(
            "SELECT f.source_ref, f.state, f.skip_reason, f.target_ref, f.blake3, f.error,
                    (SELECT e.detail FROM events e WHERE e.file_id = f.id ORDER BY e.id DESC LIMIT 1),
                    f.id, f.duplicate_of
             FROM files f",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Row {
                state: r.get(1)?,
                skip_reason: r.get(2)?,
                target_ref: r.get(3)?,
                blake3: r.get(4)?,
                error: r.get(5)?,
                detail: r.get(6)?,
                id: r.get(7)?,
                duplicate_of: r.get(8)?,
            },
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

// ---------------------------------------------------------------------------------------------
// What calibre should show for each source file

fn lang3(code: &str) -> String {
    match code {
        "en" => "eng",
        "fr" => "fra",
        "de" => "deu",
        "es" => "spa",
        "ja" => "jpn",
        "pl" => "pol",
        other => other,
    }
    .to_string()
}

/// The calibre book one source file should end up in, as far as that one file tells.
#[derive(Debug, Clone)]
struct Want {
    /// Files with the same key belong to one calibre book; different keys, different books.
    key: String,
    /// Titles the book may carry (a group's files may spell it differently).
    titles: Vec<String>,
    authors: Vec<String>,
    /// Checked only for books made of one source file (or of copies of it): a grouped book
    /// takes its metadata from whichever of its files comes first.
    fields: Option<Fields>,
}

#[derive(Debug, Clone)]
struct Fields {
    series: Option<(String, f64)>,
    tags: BTreeSet<String>,
    identifiers: BTreeMap<String, String>,
    languages: Vec<String>,
    publisher: Option<String>,
    /// `YYYY-MM-DD`, or None: calibre's undefined date.
    pubdate: Option<String>,
    cover: bool,
}

/// What each format of `tools/make-corpus.py` carries (see its makers) and so what calibre
/// must show: EPUB everything (and a PNG cover, stored as JPEG); PDF title, authors and
/// keywords as tags, its first page as the cover; FB2 title, authors, the first tag as genre,
/// series with an integer index, language and ISBN; CBZ title, writers, series (the title when
/// none) with an integer number, publisher and language, its first page as the cover; TXT
/// nothing — title and author come from the file name (`Title - Author.txt`,
/// `metadata/filename.rs`).
fn want_of(e: &Entry) -> Want {
    let m = &e.metadata;
    if e.format == "txt" || m.is_null() {
        let name = e.path.rsplit('/').next().unwrap();
        let stem = name.strip_suffix(".txt").unwrap_or(name);
        let (title, author) = stem
            .split_once(" - ")
            .expect("make-corpus names Title - Author");
        return single(title, &[author.to_string()], None);
    }
    let s = |k: &str| m[k].as_str().map(String::from);
    let title = s("title").unwrap();
    // calibre keeps an author once (make-corpus may name the same one twice).
    let mut authors: Vec<String> = Vec::new();
    for a in m["authors"].as_array().unwrap() {
        let a = a.as_str().unwrap();
        if !authors.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            authors.push(a.to_string());
        }
    }
    let tags: Vec<String> = m["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let series = s("series").map(|name| (name, m["series_index"].as_f64().unwrap()));
    let isbn = BTreeMap::from([("isbn".to_string(), s("isbn").unwrap())]);
    let lang = vec![lang3(&s("language").unwrap())];
    let fields = match e.format.as_str() {
        "epub" => Fields {
            series,
            tags: tags.into_iter().collect(),
            identifiers: isbn,
            languages: lang,
            publisher: s("publisher"),
            pubdate: s("pubdate"),
            cover: true,
        },
        "pdf" => Fields {
            series: None,
            tags: tags.into_iter().collect(),
            identifiers: BTreeMap::new(),
            languages: vec![],
            publisher: None,
            pubdate: None,
            cover: true,
        },
        "fb2" => Fields {
            series: series.map(|(n, i)| (n, i.trunc())),
            tags: tags.into_iter().take(1).collect(),
            identifiers: isbn,
            languages: lang,
            publisher: None,
            pubdate: None,
            cover: false,
        },
        "cbz" => Fields {
            series: Some(match series {
                Some((n, i)) => (n, i.trunc()),
                None => (title.clone(), 1.0),
            }),
            tags: BTreeSet::new(),
            identifiers: BTreeMap::new(),
            languages: lang,
            publisher: s("publisher"),
            pubdate: None,
            cover: true,
        },
        other => panic!("make-corpus made a {other}?"),
    };
    single(&title, &authors, Some(fields))
}

fn single(title: &str, authors: &[String], fields: Option<Fields>) -> Want {
    Want {
        key: format!(
            "{}\u{1f}{}",
            title.to_lowercase(),
            authors.join("&").to_lowercase()
        ),
        titles: vec![title.to_string()],
        authors: authors.to_vec(),
        fields,
    }
}

/// Files added to a corpus so some books have several formats.
struct Extras {
    /// (path relative to the source, the book it belongs to).
    files: Vec<(String, Want)>,
    /// (key, EPUB's source path) of the book whose second format names only its first author.
    first_author_only: Option<(String, String)>,
}

/// Make some corpus books multi-format:
/// - 4 one-author EPUBs get a `Title - Author.txt` beside them (title and author from the name);
/// - 3 PDFs get an FB2 whose title is `The <title>` (calibre's fuzzy title drops the article);
/// - 1 two-author EPUB gets a TXT that names only its first author, in a folder that sorts
///   after every other (`ω-late/`), so it is placed after the EPUB. Files of one migration
///   group strictly by title and all authors, whatever their order, so it is a book of its
///   own — although calibre's duplicate rule (every author of the new file is one of the
///   book's) matches it to the EPUB's book, which must not make it `target_has_book`.
fn add_format_siblings(ws: &Workspace) -> Extras {
    let mut files = Vec::new();
    let originals: Vec<&Entry> = ws
        .manifest
        .iter()
        .filter(|e| !e.path.starts_with("duplicates/"))
        .collect();
    let one_author = |e: &&&Entry| {
        e.metadata["authors"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    };
    for e in originals
        .iter()
        .filter(|e| e.format == "epub")
        .filter(one_author)
        .take(4)
    {
        let w = want_of(e);
        let txt = e.path.replace(".epub", ".txt");
        fs::write(
            ws.lib().join(&txt),
            format!("The text of {}.\n", w.titles[0]),
        )
        .unwrap();
        files.push((txt, Want { fields: None, ..w }));
    }
    for e in originals.iter().filter(|e| e.format == "pdf").take(3) {
        let w = want_of(e);
        let title = format!("The {}", w.titles[0]);
        let lang = e.metadata["language"].as_str().unwrap();
        let fb2 = e.path.replace(".pdf", " (fb2 edition).fb2");
        fs::write(ws.lib().join(&fb2), fb2_bytes(&title, &w.authors, lang)).unwrap();
        let mut titles = w.titles.clone();
        titles.push(title);
        files.push((
            fb2,
            Want {
                titles,
                fields: None,
                ..w
            },
        ));
    }
    let mut first_author_only = None;
    // The first in scan order, so a kill can land after its book is made, long before the TXT.
    if let Some(e) = originals
        .iter()
        .filter(|e| e.format == "epub" && want_of(e).authors.len() == 2)
        .min_by_key(|e| e.path.as_bytes())
    {
        let w = want_of(e);
        let dir = ws.lib().join("ω-late");
        fs::create_dir_all(&dir).unwrap();
        let rel = format!("ω-late/{} - {}.txt", w.titles[0], w.authors[0]);
        fs::write(
            ws.lib().join(&rel),
            "Only the first author is named here.\n",
        )
        .unwrap();
        first_author_only = Some((w.key.clone(), e.path.clone()));
        files.push((
            rel,
            Want {
                key: format!("{} (first author only)", w.key),
                authors: vec![w.authors[0].clone()],
                fields: None,
                ..w
            },
        ));
    }
    Extras {
        files,
        first_author_only,
    }
}

/// A small FB2 with this title, these authors and language.
fn fb2_bytes(title: &str, authors: &[String], lang: &str) -> Vec<u8> {
    let authors: String = authors
        .iter()
        .map(|a| {
            let (first, last) = a.split_once(' ').unwrap_or((a, ""));
            format!(
                "<author><first-name>{first}</first-name><last-name>{last}</last-name></author>"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0"><description><title-info><genre>prose</genre>{authors}<book-title>{title}</book-title><lang>{lang}</lang></title-info></description><body><section><p>The FB2 edition of {title}.</p></section></body></FictionBook>"#
    )
    .into_bytes()
}

/// Every source file (manifest and extras): source_ref → (SHA-1, want). Books that got extra
/// formats lose their per-file field checks.
fn expectations(ws: &Workspace, extras: &Extras) -> BTreeMap<String, (String, Want)> {
    let grouped: BTreeSet<&str> = extras.files.iter().map(|(_, w)| w.key.as_str()).collect();
    let mut out = BTreeMap::new();
    for e in &ws.manifest {
        let mut w = want_of(e);
        if grouped.contains(w.key.as_str()) {
            w.fields = None;
        }
        if let Some((_, extra)) = extras.files.iter().find(|(_, x)| x.key == w.key) {
            w.titles = extra.titles.clone();
        }
        out.insert(e.path.clone(), (e.sha1.clone(), w));
    }
    for (rel, w) in &extras.files {
        out.insert(rel.clone(), (sha1_file(&ws.lib().join(rel)), w.clone()));
    }
    out
}

/// Failed checks, gathered so one run reports all of them.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
    fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The library holds what the source held: every file's row final (`uploaded` with the file at
/// its `target_ref`, byte for byte, or `skipped` saying which book has those bytes), the files
/// of one source book in one calibre book and no other book for it, and calibre showing each
/// book's metadata. `new_library`: the library was empty before this migration, so no file
/// may be skipped as a book it already had.
fn judge_library(
    lib: &Path,
    books: &[Value],
    rows: &BTreeMap<String, Row>,
    want: &BTreeMap<String, (String, Want)>,
    new_library: bool,
    f: &mut Findings,
) {
    let books_by_id = by_id(books);
    // Every file in the library, by content.
    let mut lib_sha: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for b in books {
        let id = b["id"].as_i64().unwrap();
        for p in b["formats"].as_array().unwrap() {
            let p = Path::new(p.as_str().unwrap());
            f.check(p.is_file(), || {
                format!("book {id}: format file {} missing", p.display())
            });
            if p.is_file() {
                lib_sha.entry(sha1_file(p)).or_default().insert(id);
            }
        }
    }
    // Which book each group of source files went to.
    let mut book_of_key: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for (src, (sha, w)) in want {
        let Some(r) = rows.get(src) else {
            f.check(false, || format!("{src}: no row in the state DB"));
            continue;
        };
        match r.state.as_str() {
            "uploaded" => {
                let Some(t) = r.target_ref.as_deref() else {
                    f.check(false, || format!("{src}: uploaded without a target_ref"));
                    continue;
                };
                let p = lib.join(t);
                f.check(p.is_file() && sha1_file(&p) == *sha, || {
                    format!("{src}: its bytes are not at {t}")
                });
                let placed_blake3 = p.is_file().then(|| blake3_file(&p));
                f.check(r.blake3.is_some() && r.blake3 == placed_blake3, || {
                    format!("{src}: row blake3 {:?}, placed {placed_blake3:?}", r.blake3)
                });
                let id = ref_book_id(t);
                f.check(books_by_id.contains_key(&id), || {
                    format!("{src}: placed in book {id}, which calibre does not list")
                });
                book_of_key.entry(&w.key).or_default().insert(id);
            }
            "skipped" => {
                let reason = r.skip_reason.as_deref().unwrap_or("");
                let detail = r.detail.as_deref().unwrap_or("");
                let holders = lib_sha.get(sha).cloned().unwrap_or_default();
                match reason {
                    "book_has_format" | "target_has_book" | "target_has_content" => {
                        // The detail names the book: "calibre book #N …" / "… as #N …", or
                        // its file: "… at Author/Title (N)/file".
                        let named: Option<i64> = detail
                            .split('#')
                            .nth(1)
                            .and_then(|s| {
                                s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
                            })
                            .or_else(|| {
                                let (_, at) = detail.rsplit_once(" at ")?;
                                folder_book_id(at.split('/').nth(1)?)
                            });
                        f.check(named.is_some_and(|n| holders.contains(&n)), || {
                            format!(
                                "{src}: skipped {reason} ({detail}) but the book holding its bytes is {holders:?}"
                            )
                        });
                        if let Some(n) = named {
                            book_of_key.entry(&w.key).or_default().insert(n);
                        }
                        f.check(!(new_library && reason == "target_has_book"), || {
                            format!(
                                "{src}: skipped target_has_book ({detail}) in a migration into a new library: the library had no book before it"
                            )
                        });
                    }
                    "duplicate" => {
                        // Skipped as a copy of another row of this migration, which holds its
                        // bytes in the library.
                        let kept = rows.values().find(|k| Some(k.id) == r.duplicate_of);
                        f.check(
                            kept.is_some_and(|k| {
                                k.state == "uploaded"
                                    && k.target_ref.as_deref().is_some_and(|t| {
                                        sha1_file(&lib.join(t)) == *sha
                                            && k.blake3.as_deref()
                                                == Some(blake3_file(&lib.join(t)).as_str())
                                    })
                            }),
                            || {
                                format!(
                                    "{src}: skipped duplicate of {:?} ({detail}), which is not an uploaded row holding its bytes: {kept:?}",
                                    r.duplicate_of
                                )
                            },
                        );
                    }
                    "target_has_name_size" => {
                        f.check(!holders.is_empty(), || {
                            format!("{src}: skipped {reason} ({detail}) but its bytes are nowhere in the library")
                        });
                        for n in holders {
                            book_of_key.entry(&w.key).or_default().insert(n);
                        }
                    }
                    other => f.check(false, || format!("{src}: skipped as {other:?}: {detail}")),
                }
            }
            other => f.check(false, || {
                format!("{src}: ended {other}: {:?} {:?}", r.error, r.detail)
            }),
        }
    }
    // One book per source book, one source book per calibre book.
    let mut key_of_book: BTreeMap<i64, &str> = BTreeMap::new();
    for (key, ids) in &book_of_key {
        f.check(ids.len() == 1, || {
            format!(
                "source book {key:?} became {} calibre books: {ids:?}",
                ids.len()
            )
        });
        for id in ids {
            if let Some(other) = key_of_book.insert(*id, key) {
                f.check(false, || {
                    format!("calibre book {id} holds two source books: {other:?} and {key:?}")
                });
            }
        }
    }
    // calibre's view of each book.
    // (A file skipped as a duplicate is in its twin's book: its own name says nothing.)
    let mut formats_of_key: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (src, (_, w)) in want {
        if rows
            .get(src)
            .is_some_and(|r| r.skip_reason.as_deref() == Some("duplicate"))
        {
            continue;
        }
        let ext = src.rsplit('.').next().unwrap().to_lowercase();
        formats_of_key.entry(&w.key).or_default().insert(ext);
    }
    for (src, (_, w)) in want {
        let Some(id) = book_of_key
            .get(w.key.as_str())
            .and_then(|s| s.iter().next())
        else {
            continue;
        };
        let Some(b) = books_by_id.get(id) else {
            continue;
        };
        let title = b["title"].as_str().unwrap_or("");
        f.check(w.titles.iter().any(|t| t == title), || {
            format!(
                "{src}: book {id} is titled {title:?}, want one of {:?}",
                w.titles
            )
        });
        let authors = b["authors"].as_str().unwrap_or("");
        f.check(authors == w.authors.join(" & "), || {
            format!("{src}: book {id} is by {authors:?}, want {:?}", w.authors)
        });
        let want_formats: Vec<String> = formats_of_key[w.key.as_str()].iter().cloned().collect();
        f.check(format_exts(b) == want_formats, || {
            format!(
                "{src}: book {id} has formats {:?}, want {want_formats:?}",
                format_exts(b)
            )
        });
        let Some(fl) = &w.fields else { continue };
        let series = b["series"].as_str().map(|s| {
            (
                s.to_string(),
                b["series_index"].as_f64().unwrap_or(f64::NAN),
            )
        });
        f.check(series == fl.series, || {
            format!("{src}: book {id} series {series:?}, want {:?}", fl.series)
        });
        f.check(tags_of(b) == fl.tags, || {
            format!("{src}: book {id} tags {:?}, want {:?}", tags_of(b), fl.tags)
        });
        f.check(identifiers_of(b) == fl.identifiers, || {
            format!(
                "{src}: book {id} identifiers {:?}, want {:?}",
                identifiers_of(b),
                fl.identifiers
            )
        });
        let langs: Vec<String> = serde_json::from_value(b["languages"].clone()).unwrap_or_default();
        f.check(langs == fl.languages, || {
            format!(
                "{src}: book {id} languages {langs:?}, want {:?}",
                fl.languages
            )
        });
        let publisher = b["publisher"].as_str().map(String::from);
        f.check(publisher == fl.publisher, || {
            format!(
                "{src}: book {id} publisher {publisher:?}, want {:?}",
                fl.publisher
            )
        });
        let pubdate = b["pubdate"].as_str().unwrap_or("");
        let want_date = fl.pubdate.as_deref().unwrap_or("0101-01-01");
        f.check(pubdate.starts_with(want_date), || {
            format!("{src}: book {id} pubdate {pubdate:?}, want {want_date}")
        });
        f.check(b.get("cover").is_some() == fl.cover, || {
            format!(
                "{src}: book {id} cover {:?}, want {}",
                b.get("cover"),
                fl.cover
            )
        });
    }
    // No book calibre lists that the source did not make.
    let made: BTreeSet<i64> = book_of_key.values().flatten().copied().collect();
    for id in books_by_id.keys() {
        f.check(made.contains(id), || {
            format!(
                "calibre book {id} ({}) comes from no source file",
                books_by_id[id]["title"]
            )
        });
    }
    let uuids: BTreeSet<&str> = books.iter().filter_map(|b| b["uuid"].as_str()).collect();
    f.check(uuids.len() == books.len(), || {
        format!("{} books but {} distinct uuids", books.len(), uuids.len())
    });
}

/// Every `Author/Title (id)` folder is a book calibre lists at that path, and the other way
/// round; no crash leftovers anywhere.
fn judge_folders(lib: &Path, books: &[Value], f: &mut Findings) {
    let db = Connection::open_with_flags(lib.join("metadata.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let paths: BTreeMap<i64, String> = db
        .prepare("SELECT id, path FROM books")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    f.check(paths.len() == books.len(), || {
        format!("{} books rows, calibre lists {}", paths.len(), books.len())
    });
    for author in fs::read_dir(lib).unwrap().flatten() {
        if !author.file_type().unwrap().is_dir() {
            continue;
        }
        for book in fs::read_dir(author.path()).unwrap().flatten() {
            let name = book.file_name().to_string_lossy().into_owned();
            let rel = format!("{}/{name}", author.file_name().to_string_lossy());
            let id = folder_book_id(&name);
            f.check(id.is_some_and(|id| paths.get(&id) == Some(&rel)), || {
                format!("folder {rel} has no books row")
            });
        }
    }
    for (id, p) in &paths {
        f.check(lib.join(p).is_dir(), || {
            format!("book {id}: folder {p} missing")
        });
    }
    let left = bookferry_leftovers(lib);
    f.check(left.is_empty(), || {
        format!("bookferry's files left in the library: {left:?}")
    });
}

// ---------------------------------------------------------------------------------------------
// calibre-server

/// A `calibre-server` we started, in its own process group, killed (the group) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created for its own child.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `calibre-server` on `lib` and wait until it answers.
fn start_server(ws: &Workspace, lib: &Path) -> Server {
    let port = free_port();
    let log = fs::File::create(ws.path().join(format!("calibre-server-{port}.log"))).unwrap();
    let child = Command::new("calibre-server")
        .args(["--port", &port.to_string(), "--listen-on", "127.0.0.1"])
        .arg("--disable-use-bonjour")
        .arg(lib)
        .env("CALIBRE_CONFIG_DIRECTORY", calibre_config(ws))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("calibre-server starts");
    let mut server = Server { child, port };
    let t0 = Instant::now();
    loop {
        if let Ok((200, _, _)) = http_get(port, "/ajax/library-info") {
            return server;
        }
        if let Some(st) = server.child.try_wait().unwrap() {
            panic!(
                "calibre-server exited ({st}): {}",
                fs::read_to_string(ws.path().join(format!("calibre-server-{port}.log")))
                    .unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "calibre-server did not answer within 90 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET: (status, headers lower-cased, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, head, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// EPUBs with chosen metadata

const CONTAINER: &str = r#"<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"#;

/// A small valid EPUB whose dc:title and dc:creator are these strings, put into the XML as
/// they are (control characters included: the parser meets them raw).
fn epub_bytes(title: &str, author: &str, body: &str) -> Vec<u8> {
    let opf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title><dc:creator>{author}</dc:creator><dc:language>en</dc:language></metadata>
  <manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>
  <spine><itemref idref="c1"/></spine>
</package>"#
    );
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    z.start_file("mimetype", stored).unwrap();
    z.write_all(b"application/epub+zip").unwrap();
    z.start_file("META-INF/container.xml", deflated).unwrap();
    z.write_all(CONTAINER.as_bytes()).unwrap();
    z.start_file("OEBPS/content.opf", deflated).unwrap();
    z.write_all(opf.as_bytes()).unwrap();
    z.start_file("OEBPS/c1.xhtml", deflated).unwrap();
    z.write_all(
        format!("<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><p>{body}</p></body></html>")
            .as_bytes(),
    )
    .unwrap();
    z.finish().unwrap().into_inner()
}

// ---------------------------------------------------------------------------------------------
// 1. A corpus into a new library

#[test]
fn a_corpus_fills_a_new_library_that_calibre_reads_adds_to_and_serves() {
    let _s = serial();
    if !have_calibre("a_corpus_fills_a_new_library") {
        return;
    }
    let ws = Workspace::with_corpus(300, 61);
    let extras = add_format_siblings(&ws);
    let want = expectations(&ws, &extras);
    let lib = ws.path().join("Calibre Library");

    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Every row final; status adds up.
    let s = ws.status();
    assert_status_adds_up(&s);
    assert_eq!(s["total"], want.len(), "{s}");
    assert_eq!(s["states"]["failed"], 0, "{s}");
    assert_eq!(
        s["states"]["uploaded"].as_u64().unwrap() + s["states"]["skipped"].as_u64().unwrap(),
        want.len() as u64
    );
    assert_event_histories_valid(&ws);

    // calibre shows every book with its metadata; every file is where its row says.
    let books = list(&ws, &lib);
    let rows = rows(&ws.state());
    let mut f = Findings::default();
    judge_library(&lib, &books, &rows, &want, true, &mut f);
    judge_folders(&lib, &books, &mut f);
    f.assert_none("corpus → new library");
    // A content duplicate is one copy, in its twin's book: no book of its own.
    let keys: BTreeSet<&str> = want
        .iter()
        .filter(|(src, _)| rows[src.as_str()].skip_reason.as_deref() != Some("duplicate"))
        .map(|(_, (_, w))| w.key.as_str())
        .collect();
    assert_eq!(books.len(), keys.len(), "one calibre book per source book");
    assert!(
        books.iter().any(|b| format_exts(b).len() > 1),
        "some books have several formats"
    );
    if let Some((key, _)) = &extras.first_author_only {
        // Two books of one title: the EPUB's (two authors) and the TXT's (its first author).
        let (_, w) = want.values().find(|(_, w)| &w.key == key).unwrap();
        let mut same_title: Vec<Vec<String>> = books
            .iter()
            .filter(|b| b["title"] == w.titles[0].as_str())
            .map(format_exts)
            .collect();
        same_title.sort();
        assert_eq!(same_title, [vec!["epub"], vec!["txt"]], "{}", w.titles[0]);
    }
    assert_check_library_clean(&ws, &lib, "after bookferry");

    // Running the same migration again changes nothing.
    let before = tree_snapshot(&lib);
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut after = tree_snapshot(&lib);
    let mut before_wo_db = before.clone();
    before_wo_db.remove("metadata.db");
    after.remove("metadata.db");
    assert_eq!(after, before_wo_db, "a rerun changed the library's files");
    assert_eq!(list(&ws, &lib).len(), books.len());

    // calibre itself adds a book after ours, and the library stays clean.
    let extra = ws.path().join("added by calibre.txt");
    fs::write(&extra, "A book calibre adds itself.").unwrap();
    let out = calibredb(
        &ws,
        &lib,
        &[
            "add",
            extra.to_str().unwrap(),
            "--title",
            "Added By Calibre",
            "--authors",
            "Émile Zola",
        ],
    );
    assert!(out.contains("Added book ids"), "calibredb add: {out}");
    let after_add = list(&ws, &lib);
    assert_eq!(after_add.len(), books.len() + 1);
    let max_ours = books
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .max()
        .unwrap();
    let theirs = after_add
        .iter()
        .find(|b| b["title"] == "Added By Calibre")
        .expect("calibre's own book listed");
    assert!(theirs["id"].as_i64().unwrap() > max_ours, "{theirs}");
    assert_check_library_clean(&ws, &lib, "after calibredb add");

    // calibre-server serves a book's file byte for byte (PDF: calibre rewrites the metadata
    // inside EPUB/MOBI/AZW3 it sends, so those would differ on purpose).
    let (src, row) = rows
        .iter()
        .find(|(src, r)| r.state == "uploaded" && src.ends_with(".pdf"))
        .expect("a PDF was placed");
    let id = ref_book_id(row.target_ref.as_deref().unwrap());
    let source_bytes = fs::read(ws.lib().join(src)).unwrap();
    let server = start_server(&ws, &lib);
    let (code, _, info) = http_get(server.port, "/ajax/library-info").unwrap();
    assert_eq!(code, 200);
    let info: Value = serde_json::from_slice(&info).unwrap();
    let library_id = info["default_library"].as_str().unwrap().to_string();
    assert_eq!(library_id, "Calibre_Library", "{info}");
    let (code, head, body) = http_get(server.port, &format!("/get/PDF/{id}/{library_id}")).unwrap();
    assert_eq!(code, 200, "{head}");
    assert_eq!(body.len(), source_bytes.len(), "{head}");
    assert!(
        body == source_bytes,
        "calibre-server sent other bytes than {src}"
    );
    let (code, _, book) = http_get(server.port, &format!("/ajax/book/{id}/{library_id}")).unwrap();
    assert_eq!(code, 200);
    let book: Value = serde_json::from_slice(&book).unwrap();
    let by = by_id(&books);
    assert_eq!(book["title"], by[&id]["title"], "{book}");
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 2. calibre → bookferry → calibre

/// `--no-covers` spares the work of making covers from files; a calibre source's covers are
/// the user's (often set by hand) and cost a copy: they still come, the same bytes.
#[test]
fn a_calibre_sources_covers_come_with_no_covers_too() {
    let _s = serial();
    if !have_calibre("a_calibre_sources_covers_come_with_no_covers_too") {
        return;
    }
    let ws = Workspace::empty();
    fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    let lib = ws.path().join("copy");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &["--no-covers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let covers = |lib: &Path| -> BTreeMap<String, Option<String>> {
        list(&ws, lib)
            .into_iter()
            .map(|b| {
                let cover = b["cover"].as_str().map(|c| sha1_file(Path::new(c)));
                (b["uuid"].as_str().unwrap().to_string(), cover)
            })
            .collect()
    };
    let (src, dst) = (covers(&ws.lib()), covers(&lib));
    let with_cover = src.values().filter(|c| c.is_some()).count();
    assert!(
        with_cover >= 10,
        "only {with_cover} source books have a cover"
    );
    assert_eq!(src, dst, "each source book's cover, by uuid");
}

#[test]
fn a_calibre_library_round_trips_into_a_new_library() {
    let _s = serial();
    if !have_calibre("a_calibre_library_round_trips") {
        return;
    }
    let ws = Workspace::empty();
    fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    let lib = ws.path().join("copy");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'"),
        43,
        "every format placed"
    );

    let key = |b: &Value| b["uuid"].as_str().unwrap().to_string();
    let src: BTreeMap<String, Value> = list(&ws, &ws.lib())
        .into_iter()
        .map(|b| (key(&b), b))
        .collect();
    let dst: BTreeMap<String, Value> = list(&ws, &lib).into_iter().map(|b| (key(&b), b)).collect();
    assert_eq!(src.len(), 41);
    assert_eq!(
        src.keys().collect::<Vec<_>>(),
        dst.keys().collect::<Vec<_>>(),
        "the same books, by uuid"
    );
    // Books 38 and 39 hold the same bytes as 32 and 11 and the same title and authors, but
    // are books of their own in the source: they stay four books.
    for (a, b) in [(32, 38), (11, 39)] {
        let ua = src.values().find(|x| x["id"] == a).map(key).unwrap();
        let ub = src.values().find(|x| x["id"] == b).map(key).unwrap();
        assert_ne!(dst[&ua]["id"], dst[&ub]["id"]);
    }
    // Every field compared, keyed by uuid, except those that legitimately differ: `id` (a new
    // library numbers its books itself), `timestamp` (date added: now), `last_modified`, and
    // the paths in `formats` and `cover` (another library folder) — for those, the format
    // extensions and the cover's presence and bytes are compared instead.
    const DIFFER: &[&str] = &["id", "timestamp", "last_modified", "formats", "cover"];
    const MUST: &[&str] = &[
        "title",
        "authors",
        "author_sort",
        "series",
        "series_index",
        "tags",
        "identifiers",
        "isbn",
        "languages",
        "publisher",
        "pubdate",
        "comments",
        "size",
        "rating",
    ];
    let mut f = Findings::default();
    for (uuid, s) in &src {
        let d = &dst[uuid];
        let fields: BTreeSet<&String> = s
            .as_object()
            .unwrap()
            .keys()
            .chain(d.as_object().unwrap().keys())
            .collect();
        for k in fields {
            if DIFFER.contains(&k.as_str()) {
                continue;
            }
            f.check(s.get(k) == d.get(k), || {
                format!(
                    "{uuid} ({}): {k}: {:?} became {:?}",
                    s["title"],
                    s.get(k),
                    d.get(k)
                )
            });
        }
        for k in MUST {
            f.check(s.get(*k) == d.get(*k), || format!("{uuid}: {k} differs"));
        }
        f.check(format_exts(s) == format_exts(d), || {
            format!(
                "{uuid}: formats {:?} became {:?}",
                format_exts(s),
                format_exts(d)
            )
        });
        match (s["cover"].as_str(), d["cover"].as_str()) {
            (Some(a), Some(b)) => f
                .check(sha1_file(Path::new(a)) == sha1_file(Path::new(b)), || {
                    format!("{uuid}: the cover changed")
                }),
            (None, None) => {}
            (a, b) => f.check(false, || format!("{uuid}: cover {a:?} became {b:?}")),
        }
        // The format files themselves, byte for byte.
        let sha = |b: &Value| -> BTreeMap<String, String> {
            b["formats"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let p = Path::new(p.as_str().unwrap());
                    (
                        p.extension().unwrap().to_string_lossy().into_owned(),
                        sha1_file(p),
                    )
                })
                .collect()
        };
        f.check(sha(s) == sha(d), || format!("{uuid}: format bytes differ"));
    }
    f.assert_none("round trip");
    assert_check_library_clean(&ws, &lib, "of the copy");
}

// ---------------------------------------------------------------------------------------------
// 3. kill -9

#[test]
fn kill_9_during_a_calibre_run_leaves_a_clean_library_with_every_book_once() {
    let _s = serial();
    if !have_calibre("kill_9_during_a_calibre_run") {
        return;
    }
    let long = std::env::var_os("BOOKFERRY_LONG_TESTS").is_some();
    let kills_wanted = if long { 100 } else { 20 };
    // Big enough that 20 short runs cannot finish it: a kill must always find work to hit.
    // (4,000 files were enough until the pipeline got faster: locally 1,200-2,100 rows were
    // final when the kills ended, and one loaded CI run finished them all after 9 kills.)
    let ws = Workspace::with_corpus_sized(if long { 16000 } else { 8000 }, 73, 8);
    let extras = add_format_siblings(&ws);
    let want = expectations(&ws, &extras);
    let lib = ws.path().join("library");
    let final_now = || {
        count_or_zero(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state IN ('uploaded','skipped')",
        )
    };
    // One kill right after the two-author EPUB's book is committed (its row is final), long
    // before its first-author-only TXT (the last file in scan order) is reached: the rerun,
    // which has no memory of the books the killed run made, must still know that book as
    // this migration's (calibre's rule matches the TXT to it) and give the TXT its own book,
    // not skip it as `target_has_book`.
    let (mut kills, mut attempts) = (0, 0);
    let (_, epub) = extras.first_author_only.clone().expect("a two-author EPUB");
    let epub_final = || {
        let db = ws.state();
        count_or_zero(
            &db,
            &format!(
                "SELECT COUNT(*) FROM files WHERE source_ref = '{}' AND state IN ('uploaded','skipped')",
                epub.replace('\'', "''")
            ),
        ) == 1
    };
    let mut child = to_calibre_cmd(&ws, &ws.state(), &ws.lib(), &lib, &["-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !epub_final() && t0.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        kills += 1;
        attempts += 1;
    }
    child.wait().unwrap();
    assert!(epub_final(), "{epub} was not placed by the first run");
    let mut rng = Lcg(0xca1b);
    while kills < kills_wanted && attempts < kills_wanted * 3 {
        attempts += 1;
        let mut child = to_calibre_cmd(
            &ws,
            &ws.state(),
            &ws.lib(),
            &lib,
            &["--transfers", "2", "--checkers", "1", "-q"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        if attempts % 2 == 1 {
            // By time: early kills land in opening the library, the scan and hashing.
            std::thread::sleep(Duration::from_millis(5 + rng.next(120)));
        } else {
            // By progress: once k more rows are final, i.e. mid-transfer or mid-commit.
            let base = final_now();
            let k = 1 + rng.next(if long { 3 } else { 10 }) as i64;
            let t0 = Instant::now();
            while final_now() < base + k && t0.elapsed() < Duration::from_secs(30) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if final_now() as usize == want.len() {
            break;
        }
    }
    eprintln!(
        "calibre kill test: {kills} kills in {attempts} runs; {} of {} rows final before the last run",
        final_now(),
        want.len()
    );
    assert!(
        kills >= kills_wanted.min(10),
        "only {kills} kills landed while the run was working"
    );

    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "final run: {}", stderr(&out));

    let mut f = Findings::default();
    let problems = check_library_problems(&ws, &lib);
    f.check(problems.is_empty(), || {
        format!("check_library: {problems:?}")
    });
    let books = list(&ws, &lib);
    judge_library(&lib, &books, &rows(&ws.state()), &want, true, &mut f);
    judge_folders(&lib, &books, &mut f);
    let s = ws.status();
    assert_status_adds_up(&s);
    f.check(s["total"] == want.len(), || format!("status total: {s}"));
    f.check(s["states"]["failed"] == 0, || format!("failed rows: {s}"));
    f.check(
        ws.count("SELECT COUNT(*) FROM runs WHERE ended_at IS NULL") == 0,
        || "a killed run is not recorded as ended".into(),
    );
    f.assert_none(&format!("after {kills} kills"));
    assert_event_histories_valid(&ws);
}

// ---------------------------------------------------------------------------------------------
// 4. An existing library

/// A corpus migrated into a new library at `ws/library`, checked clean.
fn migrated(files: usize, seed: u64) -> (Workspace, PathBuf, Extras) {
    let ws = Workspace::with_corpus(files, seed);
    let extras = add_format_siblings(&ws);
    let lib = ws.path().join("library");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'failed'"),
        0
    );
    (ws, lib, extras)
}

/// The library's files (metadata.db aside: calibre and SQLite may rewrite it) and its books.
fn library_state(ws: &Workspace, lib: &Path) -> (BTreeMap<String, (String, i128)>, Vec<Value>) {
    let mut files = tree_snapshot(lib);
    files.remove("metadata.db");
    let mut books = list(ws, lib);
    for b in &mut books {
        b.as_object_mut().unwrap().remove("last_modified");
    }
    (files, books)
}

#[test]
fn a_second_migration_into_the_same_library_adds_nothing() {
    let _s = serial();
    if !have_calibre("a_second_migration_into_the_same_library") {
        return;
    }
    let (ws, lib, _) = migrated(200, 81);
    let before = library_state(&ws, &lib);
    let second = ws.path().join("second.db");
    let out = to_calibre(&ws, &second, &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(library_state(&ws, &lib), before, "the library changed");
    assert_check_library_clean(&ws, &lib, "after the second migration");
    // Every file is skipped, saying the library has it (by name and size, or the book).
    let rows = rows(&second);
    let not_skipped: Vec<String> = rows
        .iter()
        .filter(|(_, r)| {
            r.state != "skipped"
                || !matches!(
                    r.skip_reason.as_deref(),
                    Some("target_has_name_size" | "target_has_content" | "target_has_book")
                )
        })
        .map(|(src, r)| format!("{src}: {} {:?} — {:?}", r.state, r.skip_reason, r.detail))
        .collect();
    assert!(
        not_skipped.is_empty(),
        "{} of {} rows of a second migration into a library that has every book were not skipped as the library's:\n{}",
        not_skipped.len(),
        rows.len(),
        not_skipped.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// A book with an EPUB and a TXT (from `add_format_siblings`): (book id, its TXT's source).
fn epub_txt_book(ws: &Workspace, lib: &Path, extras: &Extras) -> (i64, String) {
    let books = list(ws, lib);
    let (txt, w) = extras
        .files
        .iter()
        .find(|(p, w)| p.ends_with(".txt") && !p.starts_with("ω-late") && w.authors.len() == 1)
        .unwrap();
    let b = books
        .iter()
        .find(|b| b["title"] == w.titles[0].as_str())
        .unwrap();
    assert_eq!(format_exts(b), ["epub", "txt"], "{b}");
    (b["id"].as_i64().unwrap(), txt.clone())
}

/// A book calibre itself adds (an EPUB), and a TXT of it put in the source afterwards:
/// (book id, the TXT's source path).
fn calibre_made_book(ws: &Workspace, lib: &Path) -> (i64, String) {
    let epub = ws.path().join("calibre made.epub");
    fs::write(
        &epub,
        epub_bytes("Calibre Made Book", "Carla Calibre", "by calibre"),
    )
    .unwrap();
    let out = calibredb(ws, lib, &["add", epub.to_str().unwrap()]);
    let id: i64 = out
        .rsplit("Added book ids:")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("calibredb add: {out}"));
    let txt = "Carla Calibre/Calibre Made Book - Carla Calibre.txt".to_string();
    fs::create_dir_all(ws.lib().join("Carla Calibre")).unwrap();
    fs::write(ws.lib().join(&txt), "The text of a book calibre added.").unwrap();
    (id, txt)
}

#[test]
fn merge_formats_gives_a_book_back_the_format_it_lost() {
    let _s = serial();
    if !have_calibre("merge_formats_gives_a_book_back") {
        return;
    }
    let (ws, lib, extras) = migrated(120, 82);
    // A book bookferry made loses its TXT; a book calibre made gets a TXT in the source.
    let (id, txt) = epub_txt_book(&ws, &lib, &extras);
    calibredb(&ws, &lib, &["remove_format", &id.to_string(), "TXT"]);
    assert_eq!(format_exts(&by_id(&list(&ws, &lib))[&id]), ["epub"]);
    let (cid, ctxt) = calibre_made_book(&ws, &lib);
    let n_books = list(&ws, &lib).len();
    let (files_before, _) = library_state(&ws, &lib);

    let merge = ws.path().join("merge.db");
    let out = to_calibre(&ws, &merge, &ws.lib(), &lib, &["--merge-formats"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let books = list(&ws, &lib);
    assert_eq!(books.len(), n_books, "no new book");
    let rows = rows(&merge);
    let (mut files_after, _) = library_state(&ws, &lib);
    let mut files_before = files_before;
    for (book, src) in [(id, &txt), (cid, &ctxt)] {
        let b = &by_id(&books)[&book];
        assert_eq!(
            format_exts(b),
            ["epub", "txt"],
            "{src}: the TXT is in book {book}: {b}"
        );
        let r = &rows[src];
        assert_eq!(r.state, "uploaded", "{r:?}");
        let t = r.target_ref.as_deref().unwrap();
        assert_eq!(ref_book_id(t), book);
        assert_eq!(sha1_file(&lib.join(t)), sha1_file(&ws.lib().join(src)));
        assert!(files_after.remove(t).is_some());
        // calibre rewrites a book's metadata.opf when its formats change (metadata_dirtied).
        let opf = format!("{}/metadata.opf", t.rsplit_once('/').unwrap().0);
        files_after.remove(&opf);
        files_before.remove(&opf);
    }
    // Nothing else was written: the library's files are those it had, plus the two TXTs.
    assert_eq!(files_after, files_before, "other files changed");
    for (src, r) in rows.iter().filter(|(s, _)| **s != txt && **s != ctxt) {
        assert!(
            matches!(r.state.as_str(), "skipped" | "uploaded"),
            "{src}: {r:?}"
        );
    }
    assert_check_library_clean(&ws, &lib, "after --merge-formats");
}

#[test]
fn without_merge_formats_a_book_the_library_had_is_skipped() {
    let _s = serial();
    if !have_calibre("without_merge_formats") {
        return;
    }
    let (ws, lib, extras) = migrated(120, 83);
    let (id, txt) = epub_txt_book(&ws, &lib, &extras);
    calibredb(&ws, &lib, &["remove_format", &id.to_string(), "TXT"]);
    let (cid, ctxt) = calibre_made_book(&ws, &lib);
    let before = library_state(&ws, &lib);
    let other = ws.path().join("other.db");
    let out = to_calibre(&ws, &other, &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = rows(&other);
    // The library had both books before this migration: without --merge-formats, skipped,
    // naming the book — whether calibre made it or an earlier migration did.
    for (book, src) in [(cid, &ctxt), (id, &txt)] {
        let r = &rows[src];
        assert_eq!(
            (r.state.as_str(), r.skip_reason.as_deref()),
            ("skipped", Some("target_has_book")),
            "{src}: book {book} was in the library before this migration; without --merge-formats it is skipped: {r:?}"
        );
        assert!(
            r.detail
                .as_deref()
                .unwrap_or("")
                .contains(&format!("#{book}")),
            "{r:?}"
        );
    }
    assert_eq!(library_state(&ws, &lib), before, "the library changed");
}

// ---------------------------------------------------------------------------------------------
// 5. calibre's writer lock

#[test]
fn a_running_calibre_server_keeps_bookferry_out_unless_told() {
    let _s = serial();
    if !have_calibre("a_running_calibre_server") {
        return;
    }
    let ws = Workspace::with_corpus(30, 91);
    let served = ws.path().join("served");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &served, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let n_books = list(&ws, &served).len();
    let server = start_server(&ws, &served);
    let before = tree_snapshot(&served);

    // Refused: exit 2, naming the server and its pid; nothing written, no state recorded.
    let fresh = ws.path().join("fresh");
    for (lib, state) in [
        (&served, ws.path().join("b.db")),
        (&fresh, ws.path().join("c.db")),
    ] {
        let out = to_calibre(&ws, &state, &ws.lib(), lib, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("calibre-server (pid {})", server.child.id())),
            "the refusal names the server: {err}"
        );
        assert!(err.contains("--ignore-calibre-lock"), "{err}");
        assert_eq!(count_or_zero(&state, "SELECT COUNT(*) FROM files"), 0);
    }
    assert_eq!(
        tree_snapshot(&served),
        before,
        "the served library was touched"
    );
    assert!(!fresh.exists(), "a refused run created {}", fresh.display());

    // --ignore-calibre-lock: it runs (into another library than the server's), warning.
    let state = ws.path().join("d.db");
    let out = to_calibre(&ws, &state, &ws.lib(), &fresh, &["--ignore-calibre-lock"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ignore-calibre-lock"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        count_or_zero(
            &state,
            "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')"
        ),
        30
    );
    // The server still runs and still serves its library; then it goes.
    assert_eq!(http_get(server.port, "/ajax/library-info").unwrap().0, 200);
    drop(server);
    assert_eq!(list(&ws, &fresh).len(), n_books);
    assert_check_library_clean(&ws, &fresh, "of the library written beside a server");
    assert_check_library_clean(&ws, &served, "of the served library");

    // With the server gone the lock is free again: a plain run works.
    let out = to_calibre(&ws, &ws.path().join("b.db"), &ws.lib(), &served, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_dry_run_opens_no_library() {
    let _s = serial();
    if !have_calibre("a_dry_run_opens_no_library") {
        return;
    }
    let ws = Workspace::with_corpus(20, 92);
    let lib = ws.path().join("never");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!lib.exists(), "a dry run created the library");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'"),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// 6. --link hardlink

#[test]
fn hardlinked_books_share_their_inodes_with_the_source() {
    let _s = serial();
    if !have_calibre("hardlinked_books") {
        return;
    }
    let ws = Workspace::with_corpus(150, 95);
    let extras = add_format_siblings(&ws);
    let want = expectations(&ws, &extras);
    let lib = ws.path().join("library");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &["--link", "hardlink"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = rows(&ws.state());
    let ino = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    // Source inodes by content, for rows placed as "already there" (a content duplicate whose
    // book already had its bytes).
    let mut inodes_of_sha: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for (src, r) in &rows {
        if let Some(sha) = r.blake3.as_deref() {
            inodes_of_sha
                .entry(sha)
                .or_default()
                .push(ino(&ws.lib().join(src)));
        }
    }
    let mut uploaded = 0;
    for (src, r) in rows.iter().filter(|(_, r)| r.state == "uploaded") {
        uploaded += 1;
        let t = lib.join(r.target_ref.as_deref().unwrap());
        let m = fs::symlink_metadata(&t).unwrap();
        assert!(
            m.file_type().is_file(),
            "{}: not a regular file",
            t.display()
        );
        let own = ino(&ws.lib().join(src));
        let same_content = &inodes_of_sha[r.blake3.as_deref().unwrap()];
        assert!(
            ino(&t) == own || same_content.contains(&ino(&t)),
            "{src}: {} is not a hard link of a source file with its bytes",
            t.display()
        );
        assert!(m.nlink() >= 2, "{}: nlink {}", t.display(), m.nlink());
    }
    assert!(uploaded > 100);
    // Every format calibre lists is one of the source's files.
    let books = list(&ws, &lib);
    let source_inodes: BTreeSet<(u64, u64)> = inodes_of_sha.values().flatten().copied().collect();
    for b in &books {
        for p in b["formats"].as_array().unwrap() {
            let p = Path::new(p.as_str().unwrap());
            assert!(source_inodes.contains(&ino(p)), "{} is a copy", p.display());
        }
    }
    let mut f = Findings::default();
    judge_library(&lib, &books, &rows, &want, true, &mut f);
    f.assert_none("hardlinked library");
    assert_check_library_clean(&ws, &lib, "of the hardlinked library");
}

#[test]
fn symlinked_books_point_at_their_source_files() {
    let _s = serial();
    if !have_calibre("symlinked_books") {
        return;
    }
    let ws = Workspace::with_corpus(60, 96);
    let lib = ws.path().join("library");
    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &["--link", "symlink"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = rows(&ws.state());
    let mut links = 0;
    for (src, r) in rows.iter().filter(|(_, r)| r.state == "uploaded") {
        let t = lib.join(r.target_ref.as_deref().unwrap());
        let m = fs::symlink_metadata(&t).unwrap();
        assert!(m.file_type().is_symlink(), "{}: not a link", t.display());
        let to = fs::canonicalize(&t).unwrap();
        if r.detail.as_deref().unwrap_or("").contains("identical") {
            // A content duplicate placed as "already there": the link of its twin.
            assert_eq!(blake3_file(&to), r.blake3.clone().unwrap(), "{src}");
            continue;
        }
        links += 1;
        assert_eq!(to, fs::canonicalize(ws.lib().join(src)).unwrap(), "{src}");
    }
    assert!(links > 40, "{links} links");
    assert_eq!(
        rows.values().filter(|r| r.state == "failed").count(),
        0,
        "{rows:?}"
    );
    assert_check_library_clean(&ws, &lib, "of the symlinked library");
}

// ---------------------------------------------------------------------------------------------
// SIGINT

#[test]
fn an_interrupted_calibre_run_leaves_a_library_calibre_finds_sound() {
    let _s = serial();
    if !have_calibre("an_interrupted_calibre_run") {
        return;
    }
    let ws = Workspace::with_corpus_sized(1500, 97, 8);
    let want = expectations(
        &ws,
        &Extras {
            files: vec![],
            first_author_only: None,
        },
    );
    let lib = ws.path().join("library");
    let landed = || {
        count_or_zero(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')",
        )
    };
    let mut child = to_calibre_cmd(
        &ws,
        &ws.state(),
        &ws.lib(),
        &lib,
        &["--transfers", "1", "--checkers", "1", "-q"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while landed() < 20
        && t0.elapsed() < Duration::from_secs(60)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be interrupted; make the corpus larger"
    );
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(3), "an interrupted run exits 3");
    // What was recorded is whole: calibre finds the library sound before any rerun, and
    // nothing of bookferry's is left in it.
    assert_check_library_clean(&ws, &lib, "after SIGINT");
    let left = bookferry_leftovers(&lib);
    assert!(left.is_empty(), "left after SIGINT: {left:?}");
    let books = list(&ws, &lib);
    assert!(!books.is_empty());
    for (src, r) in rows(&ws.state())
        .iter()
        .filter(|(_, r)| r.state == "uploaded")
    {
        let t = r.target_ref.as_deref().unwrap();
        assert!(
            books.iter().any(|b| b["id"] == ref_book_id(t)),
            "{src} is uploaded into book {t}, which the library does not record"
        );
    }

    let out = to_calibre(&ws, &ws.state(), &ws.lib(), &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut f = Findings::default();
    let books = list(&ws, &lib);
    judge_library(&lib, &books, &rows(&ws.state()), &want, true, &mut f);
    judge_folders(&lib, &books, &mut f);
    f.assert_none("after SIGINT and a rerun");
    assert_check_library_clean(&ws, &lib, "after the rerun");
}

// ---------------------------------------------------------------------------------------------
// Rescan: a changed source file

#[test]
fn a_changed_source_file_replaces_its_own_file_and_no_other() {
    let _s = serial();
    if !have_calibre("a_changed_source_file") {
        return;
    }
    let ws = Workspace::empty();
    let lib = ws.path().join("library");
    let src = ws.lib();
    fs::create_dir_all(src.join("A")).unwrap();
    fs::create_dir_all(src.join("dup")).unwrap();
    let emma = "A/Emma - Jane Author.epub";
    let dune = "A/Dune - Ann Author.epub";
    let copy = "dup/copy of Dune.epub";
    fs::write(src.join(emma), epub_bytes("Emma", "Jane Author", "first")).unwrap();
    fs::write(src.join(dune), epub_bytes("Dune", "Ann Author", "first")).unwrap();
    let run = || {
        let out = to_calibre(&ws, &ws.state(), &src, &lib, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    };
    run();
    // A later copy of Dune (same bytes): skipped as Dune's duplicate.
    fs::copy(src.join(dune), src.join(copy)).unwrap();
    run();
    // Both change: Emma (its own file), and the copy of Dune (whose row names Dune's file).
    fs::write(
        src.join(emma),
        epub_bytes("Emma", "Jane Author", "second, longer edition"),
    )
    .unwrap();
    fs::write(
        src.join(copy),
        epub_bytes("Dune", "Ann Author", "an edited copy, other bytes"),
    )
    .unwrap();
    run();

    let books = list(&ws, &lib);
    assert_eq!(books.len(), 2, "no new book: {books:#?}");
    let rows = rows(&ws.state());
    let r = &rows[emma];
    let t = r.target_ref.as_deref().unwrap();
    assert_eq!(r.state, "uploaded");
    assert_eq!(
        sha1_file(&lib.join(t)),
        sha1_file(&src.join(emma)),
        "Emma replaced"
    );
    let b = books.iter().find(|b| b["title"] == "Emma").unwrap();
    assert_eq!(
        b["size"].as_u64(),
        Some(fs::metadata(src.join(emma)).unwrap().len())
    );
    // Every uploaded row's file holds that row's bytes, which are its source's now: the
    // unchanged Dune is still in the library.
    for (s, r) in rows.iter().filter(|(_, r)| r.state == "uploaded") {
        let t = r.target_ref.as_deref().unwrap();
        let now = sha1_file(&src.join(s));
        assert_eq!(r.blake3, Some(blake3_file(&src.join(s))), "{s}: row blake3");
        assert_eq!(
            sha1_file(&lib.join(t)),
            now,
            "{s}: uploaded at {t}, which holds other bytes (overwritten by another row's change?): {r:?}"
        );
    }
    let dune_sha = sha1_file(&src.join(dune));
    assert!(
        books
            .iter()
            .flat_map(|b| b["formats"].as_array().unwrap().clone())
            .any(|p| sha1_file(Path::new(p.as_str().unwrap())) == dune_sha),
        "Dune's bytes are gone from the library"
    );
    assert_check_library_clean(&ws, &lib, "after changed files");
}

// ---------------------------------------------------------------------------------------------
// Content duplicates: one rule for every target

/// The two rows of a pair of copies: (kept, skipped) by their states.
fn kept_and_skipped<'a>(
    rows: &BTreeMap<String, Row>,
    a: &'a str,
    b: &'a str,
) -> (&'a str, &'a str) {
    match (rows[a].state.as_str(), rows[b].state.as_str()) {
        ("uploaded", "skipped") => (a, b),
        ("skipped", "uploaded") => (b, a),
        other => panic!("{a} and {b}: one is uploaded and the other skipped, not {other:?}"),
    }
}

#[test]
fn a_content_duplicate_from_a_folder_is_one_calibre_book_and_the_copy_its_skipped_duplicate() {
    let _s = serial();
    if !have_calibre("a_content_duplicate_from_a_folder") {
        return;
    }
    let ws = Workspace::empty();
    let lib = ws.path().join("library");
    let src = ws.lib();
    // The same bytes under two names (the second as a browser saves a file twice), and an
    // EPUB copied into another folder.
    let text = "Call me Ishmael. Some years ago - never mind how long precisely - ...";
    fs::write(src.join("Moby Dick.txt"), text).unwrap();
    fs::write(src.join("Moby Dick (1).txt"), text).unwrap();
    let emma = epub_bytes(
        "Emma",
        "Jane Austen",
        "Emma Woodhouse, handsome, clever, and rich",
    );
    fs::create_dir_all(src.join("copies")).unwrap();
    fs::write(src.join("Emma.epub"), &emma).unwrap();
    fs::write(src.join("copies/Emma (copy).epub"), &emma).unwrap();

    let out = to_calibre(&ws, &ws.state(), &src, &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let books = list(&ws, &lib);
    let rows = rows(&ws.state());
    let titles: Vec<&str> = books.iter().filter_map(|b| b["title"].as_str()).collect();
    assert_eq!(
        books.len(),
        2,
        "one calibre book per content, as a folder target keeps one file: {titles:?}"
    );
    let mut kept_txt = String::new();
    for (a, b) in [
        ("Moby Dick.txt", "Moby Dick (1).txt"),
        ("Emma.epub", "copies/Emma (copy).epub"),
    ] {
        let (kept, skipped) = kept_and_skipped(&rows, a, b);
        let (k, d) = (&rows[kept], &rows[skipped]);
        assert_eq!(
            d.skip_reason.as_deref(),
            Some("duplicate"),
            "{skipped}: {d:?}"
        );
        assert_eq!(d.duplicate_of, Some(k.id), "{skipped} names the copy kept");
        let t = k.target_ref.as_deref().unwrap();
        assert_eq!(
            sha1_file(&lib.join(t)),
            sha1_file(&src.join(kept)),
            "{kept}"
        );
        let ext = kept.rsplit('.').next().unwrap();
        assert_eq!(format_exts(&by_id(&books)[&ref_book_id(t)]), [ext]);
        if ext == "txt" {
            kept_txt = kept.to_string();
        }
    }
    // The kept copy's name decides the book (a TXT's title comes from its file name).
    let stem = kept_txt.strip_suffix(".txt").unwrap();
    assert!(titles.contains(&stem), "{kept_txt} was kept: {titles:?}");
    assert_check_library_clean(&ws, &lib, "after a source with duplicates");

    // A third copy, added later: a duplicate of the copy the first run placed, whatever its
    // name; the library is left as it was.
    let before = library_state(&ws, &lib);
    fs::write(src.join("Moby Dick (2).txt"), text).unwrap();
    let out = to_calibre(&ws, &ws.state(), &src, &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again = self::rows(&ws.state());
    let third = &again["Moby Dick (2).txt"];
    assert_eq!(
        (third.state.as_str(), third.skip_reason.as_deref()),
        ("skipped", Some("duplicate")),
        "{third:?}"
    );
    assert_eq!(third.duplicate_of, Some(rows[&kept_txt].id), "{third:?}");
    assert_eq!(library_state(&ws, &lib), before, "the library changed");
    // The README's duplicates query lists every copy skipped, with the one kept.
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files d JOIN files o ON o.id = d.duplicate_of"),
        3
    );

    // Another migration from the same folder (another state DB) finds every copy in the
    // library, under its own name or by its bytes, and adds nothing.
    let second = ws.path().join("second.db");
    let out = to_calibre(&ws, &second, &src, &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(library_state(&ws, &lib), before, "the library changed");
    for (s, r) in self::rows(&second) {
        assert!(
            r.state == "skipped"
                && matches!(
                    r.skip_reason.as_deref(),
                    Some("target_has_name_size" | "target_has_content" | "duplicate")
                ),
            "{s}: the library has its bytes: {r:?}"
        );
    }
}

#[test]
fn two_books_of_a_calibre_source_holding_the_same_bytes_stay_two_books() {
    let _s = serial();
    if !have_calibre("two_books_of_a_calibre_source") {
        return;
    }
    let ws = Workspace::empty();
    let source = ws.path().join("source library");
    // calibre itself adds one EPUB twice (two books), and a TXT to the second book.
    let epub = ws.path().join("Persuasion.epub");
    fs::write(
        &epub,
        epub_bytes(
            "Persuasion",
            "Jane Austen",
            "Sir Walter Elliot, of Kellynch Hall",
        ),
    )
    .unwrap();
    let txt = ws.path().join("Persuasion.txt");
    fs::write(
        &txt,
        "Sir Walter Elliot, of Kellynch Hall, in Somersetshire",
    )
    .unwrap();
    for _ in 0..2 {
        calibredb(
            &ws,
            &source,
            &["add", "--duplicates", epub.to_str().unwrap()],
        );
    }
    let ids: Vec<i64> = list(&ws, &source)
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let second = ids.iter().max().unwrap().to_string();
    calibredb(
        &ws,
        &source,
        &["add_format", &second, txt.to_str().unwrap()],
    );
    let source_books = list(&ws, &source);
    let epub_shas: BTreeSet<String> = source_books
        .iter()
        .flat_map(|b| b["formats"].as_array().unwrap().clone())
        .filter_map(|p| p.as_str().map(String::from))
        .filter(|p| p.ends_with(".epub"))
        .map(|p| sha1_file(Path::new(&p)))
        .collect();
    assert_eq!(
        epub_shas.len(),
        1,
        "the source's two EPUBs hold the same bytes"
    );

    let lib = ws.path().join("library");
    let out = to_calibre(&ws, &ws.state(), &source, &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The source's structure wins: two books, each with all its formats.
    let books = list(&ws, &lib);
    let mut formats: Vec<Vec<String>> = books.iter().map(format_exts).collect();
    formats.sort();
    assert_eq!(formats, [vec!["epub"], vec!["epub", "txt"]], "{books:#?}");
    let uuids = |bs: &[Value]| -> BTreeSet<String> {
        bs.iter()
            .map(|b| b["uuid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        uuids(&books),
        uuids(&source_books),
        "each book keeps its uuid"
    );
    let rows = rows(&ws.state());
    assert_eq!(rows.len(), 3);
    for (src, r) in &rows {
        assert_eq!(r.state, "uploaded", "{src}: {r:?}");
    }
    assert_check_library_clean(&ws, &lib, "after a calibre source with twin books");
}

// ---------------------------------------------------------------------------------------------
// bookferry's own lock on a library

/// Book folders of the library that hold a pending marker: books a run is writing.
fn books_in_progress(lib: &Path) -> BTreeSet<String> {
    all_entries(lib)
        .into_keys()
        .filter_map(|rel| rel.strip_suffix("/.bookferry-pending").map(String::from))
        .collect()
}

#[test]
fn a_second_bookferry_on_the_same_library_is_refused_whatever_the_flags() {
    let _s = serial();
    if !have_calibre("a_second_bookferry_on_the_same_library") {
        return;
    }
    let ws = Workspace::with_corpus_sized(1500, 98, 8);
    let want = expectations(
        &ws,
        &Extras {
            files: vec![],
            first_author_only: None,
        },
    );
    let lib = ws.path().join("library");
    // Another migration's source, into the same library.
    let other = ws.path().join("other source");
    fs::create_dir_all(&other).unwrap();
    for i in 0..3 {
        fs::write(
            other.join(format!("Second Runner {i}.epub")),
            epub_bytes(
                &format!("Second Runner {i}"),
                "Otto Other",
                "another migration",
            ),
        )
        .unwrap();
    }
    let landed = || {
        count_or_zero(
            &ws.state(),
            "SELECT COUNT(*) FROM files WHERE state IN ('uploaded', 'skipped')",
        )
    };
    let mut first = to_calibre_cmd(
        &ws,
        &ws.state(),
        &ws.lib(),
        &lib,
        &["--transfers", "1", "--checkers", "1", "-q"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while landed() < 20
        && t0.elapsed() < Duration::from_secs(60)
        && first.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(3));
    }
    // Paused: the first run can record nothing more, while it goes on writing books (each in
    // a marked folder) that it cannot commit yet.
    let hold = WriteHold::take(&ws.state());
    let t0 = Instant::now();
    while books_in_progress(&lib).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended before it could be paused; make the corpus larger"
    );
    let in_progress = books_in_progress(&lib);
    assert!(
        !in_progress.is_empty(),
        "the first run has no book in progress"
    );

    let mut f = Findings::default();
    for (i, flags) in [&["--ignore-calibre-lock"][..], &[][..]].iter().enumerate() {
        let state = ws.path().join(format!("second-{i}.db"));
        let out = to_calibre(&ws, &state, &other, &lib, flags);
        let err = stderr(&out);
        f.check(out.status.code() == Some(2), || {
            format!(
                "a second run {flags:?} exited {:?}, not 2: {err}",
                out.status.code()
            )
        });
        let named = format!("another bookferry run (pid {})", first.id());
        f.check(err.contains(&named), || {
            format!("a second run {flags:?}: the refusal names the first run ({named}): {err}")
        });
        f.check(
            count_or_zero(&state, "SELECT COUNT(*) FROM files") == 0,
            || format!("a second run {flags:?} recorded files"),
        );
    }
    // The first run's books in progress are all still there.
    for dir in &in_progress {
        f.check(lib.join(dir).is_dir(), || {
            format!("{dir}: a book the first run was writing is gone")
        });
    }
    drop(hold);
    let code = first.wait().unwrap().code();
    f.check(code == Some(0), || format!("the first run exited {code:?}"));
    let problems = check_library_problems(&ws, &lib);
    f.check(problems.is_empty(), || {
        format!("check_library: {problems:?}")
    });
    let books = list(&ws, &lib);
    f.check(!books.iter().any(|b| b["authors"] == "Otto Other"), || {
        "the refused run's books are in the library".into()
    });
    judge_library(&lib, &books, &rows(&ws.state()), &want, true, &mut f);
    judge_folders(&lib, &books, &mut f);
    f.assert_none("two bookferry runs on one library");
}

// ---------------------------------------------------------------------------------------------
// 7. Containment

/// Hostile (file name, dc:title, dc:creator): each would climb out of the library if used raw.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("Dotdot.epub", "../../etc/passwd", "../.."),
    ("Absolute.epub", "/abs", "/etc"),
    ("Reserved.epub", "CON", "NUL"),
    ("Nul.epub", "Nul\u{0}Byte", "Au\u{0}thor"),
    (
        "Newlines.epub",
        "Line\nBreak\r\nTitle",
        "Multi\nLine Author",
    ),
    ("Dots.epub", "..", "."),
    ("Backslash.epub", "..\\..\\win", "a\\b"),
    ("Slashes.epub", "a/../../b", "x/../../y"),
];

#[test]
fn hostile_titles_and_planted_symlinks_never_lead_outside_the_library() {
    let _s = serial();
    if !have_calibre("hostile_titles_and_planted_symlinks") {
        return;
    }
    let ws = Workspace::empty();
    let lib = ws.path().join("library");
    // A first migration makes the library and one book in it.
    let first = ws.path().join("first");
    fs::create_dir_all(first.join("Benign Author")).unwrap();
    fs::write(
        first.join("Benign Author/Benign Title - Benign Author.epub"),
        epub_bytes("Benign Title", "Benign Author", "benign"),
    )
    .unwrap();
    let out = to_calibre(&ws, &ws.path().join("first.db"), &first, &lib, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let benign_dir = rows(&ws.path().join("first.db"))
        ["Benign Author/Benign Title - Benign Author.epub"]
        .target_ref
        .clone()
        .unwrap()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_string();

    // Outside the library: a folder that looks like calibre's (a pending marker bookferry's
    // cleanup would delete, if it ever followed a link there).
    let outside = ws.path().join("outside");
    fs::create_dir_all(outside.join("Victim (3)")).unwrap();
    fs::write(outside.join("Victim (3)/.bookferry-pending"), "").unwrap();
    fs::write(outside.join("Victim (3)/keep.epub"), "keep").unwrap();
    fs::write(outside.join("passwd"), "root:x:0:0").unwrap();
    // Planted: the folder a new author's books would go in, and a committed book's folder,
    // both links to outside; plus a link that looks like a book folder.
    std::os::unix::fs::symlink(&outside, lib.join("Hostile Author")).unwrap();
    fs::rename(lib.join(&benign_dir), outside.join("moved book")).unwrap();
    std::os::unix::fs::symlink(outside.join("moved book"), lib.join(&benign_dir)).unwrap();
    std::os::unix::fs::symlink(
        outside.join("Victim (3)"),
        lib.join("Benign Author/Evil (77)"),
    )
    .unwrap();
    let src = ws.path().join("hostile");
    fs::create_dir_all(&src).unwrap();
    let outside_before = tree_snapshot(&outside);
    let outside_entries = all_entries(&outside).into_keys().collect::<Vec<_>>();
    let workspace_before: BTreeSet<String> = fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();

    for (i, (name, title, author)) in HOSTILE.iter().enumerate() {
        fs::write(
            src.join(name),
            epub_bytes(title, author, &format!("hostile {i}")),
        )
        .unwrap();
    }
    fs::write(
        src.join("Planted.epub"),
        epub_bytes("Planted Book", "Hostile Author", "p"),
    )
    .unwrap();
    fs::write(
        src.join("New\nLine - Name\rAuthor.txt"),
        "a name with control characters",
    )
    .unwrap();
    // Another format of the benign book, whose folder is now a link.
    fs::write(src.join("Benign Title - Benign Author.txt"), "benign text").unwrap();

    let state = ws.path().join("hostile.db");
    let out = to_calibre(&ws, &state, &src, &lib, &["--merge-formats"]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run finishes, with failed rows: {err}"
    );

    // Nothing outside changed or appeared.
    assert_eq!(tree_snapshot(&outside), outside_before, "outside/ changed");
    assert_eq!(
        all_entries(&outside).into_keys().collect::<Vec<_>>(),
        outside_entries
    );
    let workspace_after: BTreeSet<String> = fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("hostile.db"))
        .collect();
    assert_eq!(
        workspace_after, workspace_before,
        "something appeared beside the library"
    );

    let rows = rows(&state);
    let mut f = Findings::default();
    for (name, what) in [
        ("Planted.epub", "Hostile Author"),
        ("Benign Title - Benign Author.txt", "Benign Title"),
    ] {
        let r = &rows[name];
        let e = r.error.as_deref().unwrap_or("");
        f.check(
            r.state == "failed" && e.contains("symlink") && e.contains(what) && e.contains(name),
            || format!("{name}: should fail naming the link: {r:?}"),
        );
    }
    let lib_canon = lib.canonicalize().unwrap();
    for (src_ref, r) in rows.iter().filter(|(n, _)| {
        !matches!(
            n.as_str(),
            "Planted.epub" | "Benign Title - Benign Author.txt"
        )
    }) {
        f.check(r.state == "uploaded", || format!("{src_ref:?}: {r:?}"));
        let Some(t) = r.target_ref.as_deref() else {
            continue;
        };
        f.check(!t.starts_with('/'), || {
            format!("{src_ref:?}: absolute {t:?}")
        });
        for comp in t.split('/') {
            let stem = comp.split('.').next().unwrap_or("");
            f.check(
                !comp.is_empty()
                    && comp != "."
                    && comp != ".."
                    && !comp.contains('\\')
                    && !comp.chars().any(char::is_control)
                    && !["con", "nul"].contains(&stem.trim().to_lowercase().as_str()),
                || format!("{src_ref:?}: unsafe component {comp:?} in {t:?}"),
            );
        }
        match lib.join(t).canonicalize() {
            Ok(c) => f.check(c.starts_with(&lib_canon), || {
                format!("{src_ref:?} landed at {}", c.display())
            }),
            Err(e) => f.check(false, || format!("{src_ref:?}: {t:?}: {e}")),
        }
    }
    // The only links in the library are the three planted ones.
    let links: Vec<String> = all_entries(&lib)
        .into_iter()
        .filter(|(_, t)| t.is_symlink())
        .map(|(p, _)| p)
        .collect();
    f.check(links.len() == 3, || {
        format!("links in the library: {links:?}")
    });
    f.assert_none("hostile run");

    // Take the planted links away: calibre finds the library sound, hostile titles and all.
    fs::remove_file(lib.join("Hostile Author")).unwrap();
    fs::remove_file(lib.join("Benign Author/Evil (77)")).unwrap();
    fs::remove_file(lib.join(&benign_dir)).unwrap();
    fs::rename(outside.join("moved book"), lib.join(&benign_dir)).unwrap();
    let books = list(&ws, &lib);
    assert_eq!(books.len(), 1 + HOSTILE.len() + 1, "{books:#?}");
    assert_check_library_clean(&ws, &lib, "after hostile titles");
}

// ---------------------------------------------------------------------------------------------
// 8. Folder names as calibre spells them

/// (dc:title, dc:creator) in scripts calibre transliterates into its folder and file names.
const SCRIPTS: &[(&str, &str)] = &[
    ("ノルウェイの森", "村上春樹"),
    ("红楼梦", "曹雪芹"),
    ("홍길동전", "허균"),
    ("Мастер и Маргарита", "Михаил Булгаков"),
    ("Ὀδύσσεια", "Ὅμηρος"),
    ("Ýmir og Þór", "Snorri Sturluson"),
    ("L'Assommoir", "Émile Zola"),
    ("Sjálfstætt fólk — «Ærø» 5 €", "Halldór Laxness"),
];

/// `books.path` (its ` (id)` cut off) → `data.name` of every book of a library.
fn folder_names(lib: &Path) -> BTreeMap<String, String> {
    let db = Connection::open_with_flags(lib.join("metadata.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut stmt = db
        .prepare("SELECT b.path, d.name FROM books b JOIN data d ON d.book = b.id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    rows.map(|r| {
        let (path, name) = r.unwrap();
        let (dir, _id) = path.rsplit_once(" (").expect("`Title (id)`");
        (dir.to_string(), name)
    })
    .collect()
}

/// The same books, added by `calibredb add` to one library (in CI's locale: no `LANG`) and
/// migrated by bookferry into another, get the same folder and file names — CJK, Hangul,
/// Cyrillic, polytonic Greek and accented Latin alike — and calibre finds bookferry's sound.
#[test]
fn books_get_the_folder_and_file_names_calibre_gives_them() {
    let _s = serial();
    if !have_calibre("books_get_the_folder_and_file_names_calibre_gives_them") {
        return;
    }
    let ws = Workspace::empty();
    let src = ws.lib();
    let by_calibre = ws.path().join("by calibre");
    let by_bookferry = ws.path().join("by bookferry");
    for (i, (title, author)) in SCRIPTS.iter().enumerate() {
        let file = src.join(format!("book {i}.epub"));
        fs::write(&file, epub_bytes(title, author, &format!("book {i}"))).unwrap();
        let out = Command::new("calibredb")
            .args(["add", "--with-library"])
            .arg(&by_calibre)
            .arg(&file)
            .env("CALIBRE_CONFIG_DIRECTORY", calibre_config(&ws))
            .env_remove("LANG")
            .env_remove("LC_ALL")
            .env_remove("LANGUAGE")
            .output()
            .expect("calibredb runs");
        assert!(out.status.success(), "calibredb add: {}", stderr(&out));
    }
    let out = to_calibre(&ws, &ws.state(), &src, &by_bookferry, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let calibres = folder_names(&by_calibre);
    assert_eq!(calibres.len(), SCRIPTS.len(), "{calibres:#?}");
    assert!(
        calibres.contains_key("Cun Shang Chun Shu/noruueinoSen"),
        "calibre romanizes CJK: {calibres:#?}"
    );
    assert_eq!(folder_names(&by_bookferry), calibres);
    assert_check_library_clean(&ws, &by_bookferry, "with names in many scripts");
}
