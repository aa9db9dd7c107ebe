//! The calibre-server target (`run --to calibre+http://127.0.0.1:PORT[#LIB]`), against a real
//! `calibre-server` each test starts on a free port of 127.0.0.1, judged by what the server
//! lists (`calibredb list --with-library http://…`):
//!
//! - a run adds every book with the metadata the direct calibre target writes; a rerun adds
//!   nothing;
//! - `kill -9` of bookferry at several moments, then a last run: every book once;
//! - `kill -9` of the server mid-run: the run stops with a one-line reason, rows stay
//!   retryable, and a run against the restarted server completes with every book once;
//! - with authentication (calibre-server's user database, digest auth): the right password
//!   from `$BOOKFERRY_CALIBRE_PASSWORD` adds the books; a wrong one or none is refused with one
//!   line and exit 4, nothing recorded as uploaded, the password shown nowhere.
//!
//! Only one calibre program may hold calibre's writer lock per machine, so every test holds the
//! calibre test lock ([`crate::calibre_target::serial`]) for its whole length.

use crate::calibre_target::{calibredb, have_calibre, serial, to_calibre};
use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "ann";
const PASSWORD: &str = "s3cret-Pa55";

/// A `calibre-server` this test started, in its own process group, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    /// `--userdb` when authentication is on.
    userdb: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Server {
    fn kill9(&mut self) {
        // SAFETY: kill(2) on the process group this test created for its own child.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `--to` for bookferry.
    fn to(&self) -> String {
        match self.userdb {
            Some(_) => format!("calibre+http://{USER}@127.0.0.1:{}", self.port),
            None => format!("calibre+http://127.0.0.1:{}", self.port),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_dir(ws: &Workspace) -> PathBuf {
    ws.path().join("calibre-config")
}

/// A new, empty calibre library made by calibre itself.
fn new_library(ws: &Workspace, name: &str) -> PathBuf {
    let lib = ws.path().join(name);
    fs::create_dir_all(&lib).unwrap();
    let out = Command::new("calibredb")
        .arg("list")
        .arg("--with-library")
        .arg(&lib)
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws))
        .output()
        .unwrap();
    assert!(out.status.success(), "calibredb list: {}", stderr(&out));
    lib
}

/// A user database holding [`USER`] with [`PASSWORD`], made by calibre-server itself.
fn user_db(ws: &Workspace) -> PathBuf {
    let db = ws.path().join("users.sqlite");
    let out = Command::new("calibre-server")
        .arg("--userdb")
        .arg(&db)
        .args(["--manage-users", "--", "add", USER, PASSWORD])
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws))
        .output()
        .unwrap();
    assert!(
        out.status.success() && db.exists(),
        "calibre-server --manage-users: {}",
        stderr(&out)
    );
    db
}

/// Start `calibre-server` on `lib` at `port` (unauthenticated local writes, or the user
/// database) and wait until it answers.
fn start_server(ws: &Workspace, lib: &Path, port: u16, userdb: Option<&Path>) -> Server {
    start_server_tls(ws, lib, port, userdb, None)
}

/// As [`start_server`], over TLS with `(certificate, key)` PEM files when given.
fn start_server_tls(
    ws: &Workspace,
    lib: &Path,
    port: u16,
    userdb: Option<&Path>,
    tls: Option<(&Path, &Path)>,
) -> Server {
    let log = fs::File::create(ws.path().join(format!("calibre-server-{port}.log"))).unwrap();
    let mut cmd = Command::new("calibre-server");
    cmd.args(["--port", &port.to_string(), "--listen-on", "127.0.0.1"])
        .arg("--disable-use-bonjour");
    match userdb {
        Some(db) => {
            cmd.arg("--enable-auth").arg("--userdb").arg(db);
        }
        None => {
            cmd.arg("--enable-local-write");
        }
    }
    if let Some((cert, key)) = tls {
        cmd.arg("--ssl-certfile")
            .arg(cert)
            .arg("--ssl-keyfile")
            .arg(key);
    }
    let child = cmd
        .arg(lib)
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("calibre-server starts");
    let mut server = Server {
        child,
        port,
        userdb: userdb.map(Path::to_path_buf),
    };
    let t0 = Instant::now();
    let ready = |port| match tls {
        // Over TLS: the port takes connections (bookferry's first call waits for the rest).
        Some(_) => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        None => answers(port),
    };
    while !ready(port) {
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
    server
}

/// Whether an HTTP server answers at `port` (any status: with authentication on it is a 401).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!("GET /ajax/library-info HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// The server's books as `calibredb list --with-library http://… --for-machine` gives them.
fn server_books(ws: &Workspace, server: &Server) -> Vec<Value> {
    let mut cmd = Command::new("calibredb");
    cmd.args(["list", "--for-machine", "--fields"])
        .arg("title,authors,author_sort,formats,identifiers,tags,series,series_index,publisher,languages,rating,comments,pubdate")
        .arg("--with-library")
        .arg(server.url())
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws));
    if server.userdb.is_some() {
        cmd.args(["--username", USER, "--password", PASSWORD]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "calibredb list: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("calibredb list --for-machine is JSON")
}

/// A library's books as `calibredb list --for-machine` gives them (the server stopped).
fn library_books(ws: &Workspace, lib: &Path) -> Vec<Value> {
    let out = Command::new("calibredb")
        .args(["list", "--for-machine", "--fields"])
        .arg("title,authors,author_sort,formats,identifiers,tags,series,series_index,publisher,languages,rating,comments,pubdate")
        .arg("--with-library")
        .arg(lib)
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws))
        .output()
        .unwrap();
    assert!(out.status.success(), "calibredb list: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `run --from lib --to TO EXTRA…` with a state DB of its own, not yet run.
fn to_server_cmd(ws: &Workspace, state: &Path, to: &str, extra: &[&str]) -> Command {
    let lib = ws.lib();
    let mut args = vec!["run", "--from", lib.to_str().unwrap(), "--to", to];
    args.extend_from_slice(extra);
    let mut c = ws.cmd_with_state(state, &args);
    c.env_remove("BOOKFERRY_CALIBRE_PASSWORD")
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws));
    c
}

fn run_to(ws: &Workspace, state: &Path, to: &str, extra: &[&str]) -> Output {
    to_server_cmd(ws, state, to, extra).output().unwrap()
}

/// `run --from FROM --to TO EXTRA…` with the state DB `state`.
fn run_from(ws: &Workspace, state: &Path, from: &Path, to: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--from", from.to_str().unwrap(), "--to", to];
    args.extend_from_slice(extra);
    ws.cmd_with_state(state, &args)
        .env_remove("BOOKFERRY_CALIBRE_PASSWORD")
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws))
        .output()
        .unwrap()
}

/// What `calibredb list` does not show, by book id: the title sort (`books.sort`) and the
/// BLAKE3 of the book's `cover.jpg` (read-only: the server may be running).
fn sorts_and_covers(lib: &Path) -> BTreeMap<i64, (String, Option<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        lib.join("metadata.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT id, sort, path, has_cover FROM books")
        .unwrap();
    let rows: Vec<(i64, String, String, bool)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.into_iter()
        .map(|(id, sort, path, has_cover)| {
            let cover = fs::read(lib.join(&path).join("cover.jpg"))
                .ok()
                .map(|b| blake3::hash(&b).to_hex().to_string());
            assert_eq!(
                has_cover,
                cover.is_some(),
                "book {id}: has_cover and cover.jpg"
            );
            (id, (sort, cover))
        })
        .collect()
}

/// [`comparable`] with the title sort and the cover's digest of `extras` (see
/// [`sorts_and_covers`]), and the date added when `dated`.
fn comparable_with(
    b: &Value,
    extras: &BTreeMap<i64, (String, Option<String>)>,
    dated: bool,
) -> String {
    let mut b = b.clone();
    let id = b["id"].as_i64().unwrap();
    let (sort, cover) = extras[&id].clone();
    b["title_sort"] = Value::from(sort);
    b["cover_blake3"] = cover.map_or(Value::Null, Value::from);
    let timestamp = b.get("timestamp").cloned();
    let mut v: Value = serde_json::from_str(&comparable(&b)).unwrap();
    if let (true, Some(t)) = (dated, timestamp) {
        v["timestamp"] = t;
    }
    // Identifiers in one order (calibre lists them in the order they were stored).
    if let Some(ids) = v.get("identifiers").and_then(Value::as_object) {
        let sorted: BTreeMap<String, Value> = ids.clone().into_iter().collect();
        v["identifiers"] = serde_json::to_value(sorted).unwrap();
    }
    serde_json::to_string(&v).unwrap()
}

fn count(state: &Path, sql: &str) -> i64 {
    count_or_zero(state, sql)
}

/// A book's fields as compared between the two targets (the library-dependent ones left
/// out: ids, uuids, dates of adding, paths; our `bookferry` identifier is the server's only).
fn comparable(b: &Value) -> String {
    let mut b = b.clone();
    let o = b.as_object_mut().unwrap();
    for k in ["id", "uuid", "timestamp", "last_modified", "cover", "size"] {
        o.remove(k);
    }
    if let Some(ids) = o.get_mut("identifiers").and_then(Value::as_object_mut) {
        ids.remove("bookferry");
    }
    if let Some(f) = o.get_mut("formats").and_then(Value::as_array_mut) {
        // Paths on a local library, names over the server: compare the extensions.
        let mut exts: Vec<String> = f
            .iter()
            .filter_map(Value::as_str)
            .map(|p| p.rsplit('.').next().unwrap_or(p).to_uppercase())
            .collect();
        exts.sort();
        *f = exts.into_iter().map(Value::from).collect();
    }
    serde_json::to_string(&b).unwrap()
}

/// Every book carries one `bookferry` identifier, no two the same, and no two books have the
/// same title and authors (the corpus has none such): every book was added once.
fn assert_each_book_once(books: &[Value]) {
    let mut marks = BTreeSet::new();
    let mut names = BTreeMap::new();
    for b in books {
        let mark = b["identifiers"]["bookferry"]
            .as_str()
            .unwrap_or_else(|| panic!("a book without its bookferry identifier: {b}"));
        assert!(marks.insert(mark.to_string()), "two books marked {mark}");
        let key = format!("{} / {}", b["title"], b["authors"]);
        *names.entry(key).or_insert(0) += 1;
    }
    let twice: Vec<_> = names.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "books added twice: {twice:?}");
}

/// Every uploaded row's target_ref is a book the server has, with the row's format.
fn assert_rows_point_at_books(state: &Path, books: &[Value]) {
    let conn = rusqlite::Connection::open(state).unwrap();
    let mut stmt = conn
        .prepare("SELECT target_ref, source_ref FROM files WHERE state = 'uploaded'")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty());
    for (target_ref, source) in rows {
        let id: i64 = target_ref
            .parse()
            .unwrap_or_else(|_| panic!("{source}: target_ref {target_ref:?} is no book id"));
        let book = books
            .iter()
            .find(|b| b["id"].as_i64() == Some(id))
            .unwrap_or_else(|| panic!("{source}: book {id} is not on the server"));
        let ext = source.rsplit('.').next().unwrap().to_uppercase();
        let formats = comparable(book);
        assert!(
            formats.contains(&format!("\"{ext}\"")),
            "{source}: book {id} lacks its {ext}: {book}"
        );
    }
}

#[test]
fn a_run_adds_every_book_as_the_calibre_target_does_and_a_rerun_adds_nothing() {
    let _serial = serial();
    if !have_calibre("calibre_server::a_run_adds_every_book") {
        return;
    }
    let ws = Workspace::with_corpus(40, 2207);
    // One file above the hash stage's 8 MiB buffer: streamed from disk to the server.
    fs::write(
        ws.lib().join("Heavy Tome - Big Author.txt"),
        "All work and no play.\n".repeat(500_000),
    )
    .unwrap();
    // The direct calibre target, for comparison.
    let direct = ws.path().join("direct");
    let out = run_to(
        &ws,
        &ws.path().join("direct.db"),
        &format!("calibre:{}", direct.display()),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let direct_extras = sorts_and_covers(&direct);
    let want: BTreeSet<String> = library_books(&ws, &direct)
        .iter()
        .map(|b| comparable_with(b, &direct_extras, false))
        .collect();
    assert!(
        direct_extras.values().filter(|(_, c)| c.is_some()).count() > 10,
        "the direct target made covers: {direct_extras:?}"
    );
    assert!(
        want.len() > 20,
        "the direct target made {} books",
        want.len()
    );

    let lib = new_library(&ws, "served");
    let server = start_server(&ws, &lib, free_port(), None);
    let state = ws.state();
    let out = run_to(&ws, &state, &server.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let books = server_books(&ws, &server);
    assert_each_book_once(&books);
    assert_rows_point_at_books(&state, &books);
    let extras = sorts_and_covers(&lib);
    let got: BTreeSet<String> = books
        .iter()
        .map(|b| comparable_with(b, &extras, false))
        .collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the server's books differ from the direct target's:\nonly direct: {missing:#?}\nonly server: {extra:#?}"
    );
    assert_eq!(
        count(&state, "SELECT count(*) FROM files WHERE state = 'failed'"),
        0
    );

    // A rerun (new scan, same state DB) adds nothing.
    let out = run_to(&ws, &state, &server.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 added"), "{}", stderr(&out));
    assert_eq!(server_books(&ws, &server).len(), books.len());
}

/// A calibre source (dates, sorts, ratings, a published date with its time, covers calibre
/// made, two books calibre's duplicate rule calls the same) into a new library directly and
/// into a served one: calibre lists the same books, dates added included, with the same title
/// sorts and the same covers byte for byte.
#[test]
fn a_calibre_source_gives_the_server_the_direct_targets_books_dates_sorts_and_covers() {
    let _serial = serial();
    if !have_calibre("calibre_server::a_calibre_source_gives_the_server") {
        return;
    }
    let ws = Workspace::empty();
    let src = crate::calibre_fidelity::source_library(&ws);
    // Book 6: the same title and authors as book 1, a book of its own in the source.
    let pdf = crate::calibre_fidelity::sample("pdf");
    calibredb(&ws, &src, &["add", "--duplicates", pdf.to_str().unwrap()]);
    let direct = ws.path().join("direct");
    let out = to_calibre(&ws, &ws.path().join("direct.db"), &src, &direct, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let lib = new_library(&ws, "served");
    let server = start_server(&ws, &lib, free_port(), None);
    let state = ws.state();
    let out = run_from(&ws, &state, &src, &server.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM files WHERE state != 'uploaded'"
        ),
        0,
        "every file added, none skipped as the library's"
    );
    drop(server);

    let listed = |l: &Path| -> Vec<String> {
        let extras = sorts_and_covers(l);
        let raw = calibredb(&ws, l, &["list", "--for-machine", "--fields", "all"]);
        let books: Vec<Value> = serde_json::from_str(&raw).unwrap();
        let mut v: Vec<String> = books
            .iter()
            .map(|b| comparable_with(b, &extras, true))
            .collect();
        v.sort();
        v
    };
    let (want, got) = (listed(&direct), listed(&lib));
    assert_eq!(want.len(), 5, "{want:#?}");
    assert!(
        want.iter()
            .filter(|b| !b.contains("\"cover_blake3\":null"))
            .count()
            >= 4,
        "the source's covers came to the direct target: {want:#?}"
    );
    assert_eq!(got, want, "the server's books are the direct target's");
}

/// A calibre source's custom column values go into the server's columns of the same label and
/// definition, as the direct target writes them; a column the library lacks, or has as another
/// column (another type, other enumeration values), gets none, and the run warns once for each.
#[test]
fn custom_columns_go_to_the_servers_columns_of_the_same_definition_and_others_warn_once() {
    let _serial = serial();
    if !have_calibre("calibre_server::custom_columns") {
        return;
    }
    let ws = Workspace::empty();
    let src = crate::calibre_columns::source_library(&ws);
    let direct = ws.path().join("direct");
    let out = to_calibre(&ws, &ws.path().join("direct.db"), &src, &direct, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let lib = new_library(&ws, "served");
    // The source's columns, made first (calibre-server cannot make one), but for #myfloat
    // (missing), #mytext (another type) and #myenum (other values).
    for args in [
        &["mytext", "Theirs", "int"][..],
        &["mytags", "My Tags", "text", "--is-multiple"],
        &["mycomm", "Comm", "comments"],
        &["myseries", "Ser", "series"],
        &[
            "myenum",
            "Enum",
            "enumeration",
            "--display",
            r#"{"enum_values": ["a", "x"]}"#,
        ],
        &["myint", "Int", "int"],
        &["mybool", "Bool", "bool"],
        &["mydate", "Date", "datetime"],
        &["myrating", "Rating", "rating"],
        &[
            "mycomp",
            "Comp",
            "composite",
            "--display",
            r#"{"composite_template": "{title} by {authors}"}"#,
        ],
    ] {
        let mut a = vec!["add_custom_column"];
        a.extend_from_slice(args);
        calibredb(&ws, &lib, &a);
    }
    let server = start_server(&ws, &lib, free_port(), None);
    let out = run_from(&ws, &ws.state(), &src, &server.to(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for label in ["#myfloat", "#mytext", "#myenum"] {
        let warnings = err
            .lines()
            .filter(|l| l.contains(&format!("custom column {label}")))
            .count();
        assert_eq!(warnings, 1, "one warning for {label}:\n{err}");
    }
    assert!(!err.contains("custom column #myint"), "{err}");
    drop(server);

    let want = crate::calibre_columns::custom_values(&ws, &direct);
    let got = crate::calibre_columns::custom_values(&ws, &lib);
    assert_eq!(got.len(), 3, "{got:#?}");
    for (title, values) in &got {
        for (label, value) in &want[title] {
            match label.as_str() {
                "*mytext" | "*myenum" | "*myfloat" => {
                    assert!(
                        values.get(label).is_none_or(Value::is_null),
                        "{title}: no {label} value: {values:?}"
                    )
                }
                _ => assert_eq!(values.get(label), Some(value), "{title}: {label}"),
            }
        }
    }
}

/// `--no-covers` gives the server's books no cover made from their files; without it a PDF
/// whose page cannot be rendered is added all the same, with a warning naming it, and the
/// other files' books get the direct target's covers.
#[test]
fn no_covers_gives_none_and_a_broken_pdf_is_added_with_a_warning() {
    let _serial = serial();
    if !have_calibre("calibre_server::no_covers_gives_none") {
        return;
    }
    let ws = Workspace::empty();
    let src = ws.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for ext in ["pdf", "mobi", "fb2"] {
        fs::copy(
            crate::calibre_fidelity::sample(ext),
            src.join(format!("sample.{ext}")),
        )
        .unwrap();
    }
    fs::write(
        src.join("Broken Scan.pdf"),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    )
    .unwrap();
    let covers = |lib: &Path| -> Vec<Option<String>> {
        sorts_and_covers(lib)
            .into_values()
            .map(|(_, c)| c)
            .collect()
    };

    let lib = new_library(&ws, "no-covers");
    let server = start_server(&ws, &lib, free_port(), None);
    let out = run_from(
        &ws,
        &ws.path().join("a.db"),
        &src,
        &server.to(),
        &["--no-covers"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(server);
    let got = covers(&lib);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().all(Option::is_none), "--no-covers made covers");

    let direct = ws.path().join("direct");
    let out = to_calibre(&ws, &ws.path().join("direct.db"), &src, &direct, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lib = new_library(&ws, "covers");
    let server = start_server(&ws, &lib, free_port(), None);
    let out = run_from(&ws, &ws.path().join("b.db"), &src, &server.to(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    drop(server);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("without a cover"))
        .collect();
    assert!(
        warned.len() == 1 && warned[0].contains("Broken Scan.pdf"),
        "one warning naming the file: {err}"
    );
    let mut got = covers(&lib);
    let mut want = covers(&direct);
    got.sort();
    want.sort();
    assert_eq!(got.len(), 4, "the broken PDF is added: {got:?}");
    assert_eq!(got.iter().filter(|c| c.is_some()).count(), 3, "{got:?}");
    assert_eq!(got, want, "the direct target's covers");
}

/// With `--no-covers` a calibre source's books keep their own covers (only covers made from
/// files are turned off), into a library directly and over the server alike.
#[test]
fn with_no_covers_a_calibre_sources_covers_still_come_to_both_targets() {
    let _serial = serial();
    if !have_calibre("calibre_server::with_no_covers_a_calibre_source") {
        return;
    }
    let ws = Workspace::empty();
    let src = crate::calibre_fidelity::source_library(&ws);
    let covers = |lib: &Path| -> Vec<Option<String>> {
        let mut c: Vec<_> = sorts_and_covers(lib)
            .into_values()
            .map(|(_, c)| c)
            .collect();
        c.sort();
        c
    };
    let want = covers(&src);
    assert!(want.iter().filter(|c| c.is_some()).count() >= 3, "{want:?}");

    let direct = ws.path().join("direct");
    let out = to_calibre(
        &ws,
        &ws.path().join("direct.db"),
        &src,
        &direct,
        &["--no-covers"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        covers(&direct),
        want,
        "the direct target keeps the source's covers"
    );

    let lib = new_library(&ws, "served");
    let server = start_server(&ws, &lib, free_port(), None);
    let out = run_from(&ws, &ws.state(), &src, &server.to(), &["--no-covers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(server);
    assert_eq!(covers(&lib), want, "the server keeps the source's covers");
}

/// Start a run, wait until `uploaded` rows reach `at_least`, then `kill -9` it.
fn kill_when_uploaded(ws: &Workspace, state: &Path, to: &str, at_least: i64) {
    let mut child = to_server_cmd(ws, state, to, &["--transfers", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        let n = count(state, "SELECT count(*) FROM files WHERE state = 'uploaded'");
        if n >= at_least || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn kill_9_of_bookferry_mid_run_then_resume_adds_each_book_once() {
    let _serial = serial();
    if !have_calibre("calibre_server::kill_9_of_bookferry") {
        return;
    }
    let ws = Workspace::with_corpus(60, 3131);
    let lib = new_library(&ws, "served");
    let server = start_server(&ws, &lib, free_port(), None);
    let state = ws.state();
    for at in [1, 9, 20, 33] {
        kill_when_uploaded(&ws, &state, &server.to(), at);
    }
    let out = run_to(&ws, &state, &server.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let books = server_books(&ws, &server);
    assert_each_book_once(&books);
    assert_rows_point_at_books(&state, &books);
    // No book left without its file, none of ours taken for the user's.
    for b in &books {
        assert!(
            b["formats"].as_array().is_some_and(|f| !f.is_empty()),
            "{b}"
        );
    }
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM files WHERE state != 'uploaded' AND coalesce(skip_reason, '') != 'duplicate'"
        ),
        0
    );
    // As many books as one uninterrupted run makes into a new library.
    drop(server);
    let lib2 = new_library(&ws, "served2");
    let server2 = start_server(&ws, &lib2, free_port(), None);
    let out = run_to(&ws, &ws.path().join("clean.db"), &server2.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(books.len(), server_books(&ws, &server2).len());
}

#[test]
fn kill_9_of_the_server_mid_run_stops_with_one_line_and_a_later_run_completes() {
    let _serial = serial();
    if !have_calibre("calibre_server::kill_9_of_the_server") {
        return;
    }
    let ws = Workspace::with_corpus(60, 4242);
    let lib = new_library(&ws, "served");
    let port = free_port();
    let mut server = start_server(&ws, &lib, port, None);
    let state = ws.state();
    let child = to_server_cmd(&ws, &state, &server.to(), &["--retries", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while count(
        &state,
        "SELECT count(*) FROM files WHERE state = 'uploaded'",
    ) < 5
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no upload in 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("cannot connect to http://127.0.0.1:") && last.contains("Connection refused"),
        "the last line says the server is gone: {err}"
    );
    let not_done = count(
        &state,
        "SELECT count(*) FROM files WHERE state NOT IN ('uploaded', 'skipped')",
    );
    assert!(not_done > 0, "the run stopped before the end");
    // Every row left is retryable: not uploaded, and a later run takes it.
    let server = start_server(&ws, &lib, port, None);
    let out = run_to(&ws, &state, &server.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM files WHERE state NOT IN ('uploaded', 'skipped')"
        ),
        0
    );
    // calibre adds a book in several statements, not one transaction: a server killed in the
    // middle of one leaves a book with a title (and its authors, if they were written) but no
    // identifiers and no formats. It is calibre's, made without our mark, and the next run adds
    // the book anew, never taking it for the book (the file would be skipped and the book left
    // without it); at most the one being added when the server died.
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM files WHERE skip_reason = 'target_has_book'"
        ),
        0,
        "a file skipped for a book of the library (a half-made one?)"
    );
    let (half_made, books): (Vec<Value>, Vec<Value>) =
        server_books(&ws, &server).into_iter().partition(|b| {
            b["formats"].as_array().is_some_and(Vec::is_empty)
                && b["identifiers"].as_object().is_some_and(|i| i.is_empty())
        });
    assert!(half_made.len() <= 1, "{half_made:?}");
    assert_each_book_once(&books);
    assert_rows_point_at_books(&state, &books);
}

#[test]
fn with_authentication_the_right_password_adds_and_a_wrong_one_is_refused_with_exit_4() {
    let _serial = serial();
    if !have_calibre("calibre_server::with_authentication") {
        return;
    }
    let ws = Workspace::with_corpus(12, 5151);
    let lib = new_library(&ws, "served");
    let userdb = user_db(&ws);
    let server = start_server(&ws, &lib, free_port(), Some(&userdb));
    let state = ws.state();

    // No password.
    let out = run_to(&ws, &state, &server.to(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("asks for a calibre-server user"), "{err}");

    // A wrong one, from a file.
    let bad = ws.path().join("bad-password");
    fs::write(&bad, "not-it\n").unwrap();
    let out = run_to(
        &ws,
        &state,
        &server.to(),
        &["--password-file", bad.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(&format!("refused user \"{USER}\" (401)")),
        "one line naming the user: {err}"
    );
    assert!(!err.contains("not-it"), "the password is shown: {err}");
    assert_eq!(
        count(
            &state,
            "SELECT count(*) FROM files WHERE state = 'uploaded'"
        ),
        0
    );
    assert!(server_books(&ws, &server).is_empty());

    // The right one, from the environment.
    let out = to_server_cmd(&ws, &state, &server.to(), &[])
        .env("BOOKFERRY_CALIBRE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains(PASSWORD), "the password is shown: {err}");
    let books = server_books(&ws, &server);
    assert!(!books.is_empty());
    assert_each_book_once(&books);
    assert_rows_point_at_books(&state, &books);
    let args: String = rusqlite::Connection::open(&state)
        .unwrap()
        .query_row("SELECT group_concat(arguments, ' ') FROM runs", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        !args.contains(PASSWORD) && !args.contains("not-it"),
        "{args}"
    );
}

#[test]
fn a_server_that_cannot_be_reached_at_start_exits_2_without_work() {
    // No calibre program runs here: no lock needed.
    let ws = Workspace::with_corpus(5, 6161);
    let port = free_port();
    let started = Instant::now();
    // With 10 retries the backoff alone would take minutes: "at once" is well inside 60 s.
    let to = format!("calibre+http://127.0.0.1:{port}");
    let out = run_to(&ws, &ws.state(), &to, &["--retries", "10"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        count(
            &ws.state(),
            "SELECT count(*) FROM files WHERE state = 'uploaded'"
        ),
        0
    );
}

#[test]
fn over_tls_with_ca_cert_and_basic_auth_the_books_are_added() {
    let _serial = serial();
    if !have_calibre("calibre_server::over_tls") {
        return;
    }
    let ws = Workspace::with_corpus(8, 7171);
    let lib = new_library(&ws, "served");
    let userdb = user_db(&ws);
    // A self-signed certificate for 127.0.0.1: calibre-server over TLS asks for basic auth.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (ws.path().join("server.pem"), ws.path().join("server.key"));
    fs::write(&cert_file, cert.pem()).unwrap();
    fs::write(&key_file, key.serialize_pem()).unwrap();
    let port = free_port();
    let mut server = start_server_tls(
        &ws,
        &lib,
        port,
        Some(&userdb),
        Some((&cert_file, &key_file)),
    );
    let to = format!("calibre+https://{USER}@127.0.0.1:{port}");
    let state = ws.state();
    // Without --ca-cert the certificate is refused, nothing sent.
    let out = to_server_cmd(&ws, &state, &to, &[])
        .env("BOOKFERRY_CALIBRE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let ca = cert_file.to_str().unwrap();
    let out = to_server_cmd(&ws, &state, &to, &["--ca-cert", ca])
        .env("BOOKFERRY_CALIBRE_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let uploaded = count(
        &state,
        "SELECT count(*) FROM files WHERE state = 'uploaded'",
    );
    assert!(uploaded > 0, "{err}");
    server.kill9();
    let books = library_books(&ws, &lib);
    assert_each_book_once(&books);
    assert_rows_point_at_books(&state, &books);
}

/// `calibredb ARGS --with-library <server>` (unauthenticated), which must succeed.
fn calibredb_remote(ws: &Workspace, server: &Server, args: &[&str]) {
    let out = Command::new("calibredb")
        .args(args)
        .arg("--with-library")
        .arg(server.url())
        .env("CALIBRE_CONFIG_DIRECTORY", config_dir(ws))
        .output()
        .unwrap();
    assert!(out.status.success(), "calibredb {args:?}: {}", stderr(&out));
}

/// `verify` of a calibre-server migration asks the running server what its books hold: a
/// book removed and a format removed through the server are `missing`, a format replaced by
/// other bytes is `changed`; `--repair missing` puts those back and the next run adds them again
/// (the removed book made anew, the format into its book), while a changed format is left to
/// the user (bookferry deletes nothing through the server). Before, verify refused this target.
#[test]
fn verify_asks_the_server_and_repair_adds_what_went_missing_again() {
    let _serial = serial();
    if !have_calibre("calibre_server::verify_asks_the_server") {
        return;
    }
    let ws = Workspace::with_corpus(16, 2209);
    let lib = new_library(&ws, "served");
    let server = start_server(&ws, &lib, free_port(), None);
    let out = run_to(&ws, &ws.state(), &server.to(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed: Vec<(String, i64, String)> = {
        let db = ws.db();
        let mut st = db
            .prepare(
                "SELECT source_ref, CAST(target_ref AS INTEGER), upper(format) FROM files
                 WHERE state = 'uploaded' ORDER BY id",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let n = placed.len();
    assert!(n >= 10, "{n} placed");
    let (code, out) = crate::verify::verify(&ws, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("target: {n} ok")), "{out}");

    // Three different books: one removed, one loses a format, one has a format replaced.
    let mut books: Vec<i64> = Vec::new();
    for p in &placed {
        if !books.contains(&p.1) {
            books.push(p.1);
        }
    }
    let (removed_book, lost_book, changed_book) = (books[0], books[1], books[2]);
    let removed: Vec<&(String, i64, String)> =
        placed.iter().filter(|p| p.1 == removed_book).collect();
    let lost = placed.iter().find(|p| p.1 == lost_book).unwrap();
    let changed = placed.iter().find(|p| p.1 == changed_book).unwrap();
    calibredb_remote(&ws, &server, &["remove", &removed_book.to_string()]);
    calibredb_remote(
        &ws,
        &server,
        &["remove_format", &lost_book.to_string(), &lost.2],
    );
    let other = ws
        .path()
        .join(format!("other.{}", changed.2.to_lowercase()));
    fs::write(&other, b"other bytes, fewer of them").unwrap();
    calibredb_remote(
        &ws,
        &server,
        &[
            "add_format",
            &changed_book.to_string(),
            other.to_str().unwrap(),
        ],
    );

    let (code, out) = crate::verify::verify(&ws, &["-v"]);
    assert_eq!(code, Some(1), "{out}");
    let m = removed.len();
    assert!(
        out.contains(&format!(
            "target: {} ok, {} missing, 1 changed",
            n - m - 2,
            m + 1
        )),
        "{out}"
    );
    let found: BTreeMap<String, String> = crate::verify::verdicts(&ws)
        .into_iter()
        .filter(|(_, (t, _))| t != "ok")
        .map(|(k, (t, _))| (k, t))
        .collect();
    let mut expected: BTreeMap<String, String> = removed
        .iter()
        .map(|r| (r.0.clone(), "missing".to_string()))
        .collect();
    expected.insert(lost.0.clone(), "missing".into());
    expected.insert(changed.0.clone(), "changed".into());
    assert_eq!(found, expected, "{out}");
    assert!(
        out.contains(&format!("book #{lost_book} has no {} file", lost.2)),
        "{out}"
    );

    let (code, out) = crate::verify::verify(
        &ws,
        &["--repair", "missing", "--repair", "changed", "--yes"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not repairing changed files"), "{out}");
    assert!(
        out.contains(&format!("{} files put back to be migrated", m + 1)),
        "{out}"
    );
    let o = ws.run(&["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let books_now = server_books(&ws, &server);
    assert_each_book_once(&books_now);
    assert_rows_point_at_books(&ws.state(), &books_now);
    let (code, out) = crate::verify::verify(&ws, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("target: {} ok, 1 changed", n - 1)),
        "{out}"
    );
}
