//! Shared helpers: a temp workspace with a generated library, running the binary, reading the
//! state DB and the target tree.

#![allow(dead_code)]

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bookferry"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One file of a generated library, as its manifest lists it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub format: String,
    pub size: u64,
    pub sha1: String,
    pub metadata: Value,
}

/// A temp folder holding a source library `lib/`, a target `out/` and a state DB.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub manifest: Vec<Entry>,
}

impl Workspace {
    pub fn empty() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("bookferry-it-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        Workspace {
            dir,
            manifest: Vec::new(),
        }
    }

    /// A library made by the repo's corpus generator (`tools/make-corpus.py`).
    pub fn with_corpus(files: usize, seed: u64) -> Workspace {
        Workspace::with_corpus_sized(files, seed, 32)
    }

    pub fn with_corpus_sized(files: usize, seed: u64, avg_kib: u64) -> Workspace {
        let ws = Workspace::empty();
        std::fs::remove_dir_all(ws.lib()).unwrap();
        make_corpus(&ws.lib(), files, seed, avg_kib);
        let manifest = std::fs::read_to_string(ws.dir.path().join("lib.manifest.jsonl")).unwrap();
        let manifest = manifest
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Entry {
                    path: v["path"].as_str().unwrap().to_string(),
                    format: v["format"].as_str().unwrap().to_string(),
                    size: v["size"].as_u64().unwrap(),
                    sha1: v["sha1"].as_str().unwrap().to_string(),
                    metadata: v["metadata"].clone(),
                }
            })
            .collect();
        Workspace { manifest, ..ws }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn lib(&self) -> PathBuf {
        self.dir.path().join("lib")
    }
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// The binary with `--state` set, run in the workspace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with_state(&self.state(), args)
    }

    /// The binary with another state DB.
    pub fn cmd_with_state(&self, state: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(self.path())
            .arg("--state")
            .arg(state)
            .args(args)
            .env_remove("BOOKFERRY_STATE")
            .env_remove("BOOKFERRY_TOKEN");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("bookferry runs")
    }

    /// The command `run --from lib --to out` plus `extra`, to spawn.
    pub fn migrate_cmd(&self, extra: &[&str]) -> Command {
        self.migrate_to_cmd(self.out().to_str().unwrap(), extra)
    }

    /// The command `run --from lib --to TARGET` plus `extra`, to spawn.
    pub fn migrate_to_cmd(&self, target: &str, extra: &[&str]) -> Command {
        let lib = self.lib();
        let mut args = vec!["run", "--from", lib.to_str().unwrap(), "--to", target];
        args.extend_from_slice(extra);
        self.cmd(&args)
    }

    /// `run --from lib --to out` plus `extra`, to completion.
    pub fn migrate(&self, extra: &[&str]) -> Output {
        self.migrate_cmd(extra).output().expect("bookferry runs")
    }

    pub fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "status failed: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    pub fn db(&self) -> Connection {
        Connection::open_with_flags(self.state(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    /// `SELECT` a single integer.
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// (bytes_read, bytes_sent) of the newest `run` record.
    pub fn run_bytes(&self) -> (i64, i64) {
        self.db()
            .query_row(
                "SELECT bytes_read, bytes_sent FROM runs WHERE command = 'run' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    /// Every file under `out/`: relative path → SHA-1.
    pub fn target_files(&self) -> BTreeMap<String, String> {
        tree_sha1(&self.out())
    }

    /// Unique contents of the source manifest.
    pub fn unique_sha1s(&self) -> std::collections::BTreeSet<String> {
        self.manifest.iter().map(|e| e.sha1.clone()).collect()
    }
}

/// What one invocation of the binary printed and how it ended.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn both(&self) -> String {
        format!(
            "exit {:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.code, self.stderr, self.stdout
        )
    }
}

/// The state DB's write lock, taken from outside while a run works: until it is dropped the run
/// can record nothing (its writes wait, up to the state DB's 30 s busy timeout), so it can
/// neither finish a file nor end. A pause point the test controls, with no hook in the binary.
/// Take it only once the run has made the DB (opening it here would create an empty one).
pub struct WriteHold {
    conn: Connection,
}

impl WriteHold {
    pub fn take(db: &Path) -> WriteHold {
        assert!(db.exists(), "{}: no state DB to hold yet", db.display());
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
        // The run holds the lock a millisecond or two at a time: wait for it like it waits.
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteHold { conn }
    }

    /// `SELECT` a single integer, inside the hold (what the run has recorded so far).
    pub fn count(&self, sql: &str) -> i64 {
        self.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

impl Drop for WriteHold {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}

/// True when the tests run as root, which `what` needs (mounting a tmpfs, making a device node).
/// When not: a skip, said out loud — or a failure when `BOOKFERRY_REQUIRE_ROOT` is set, as CI
/// sets it.
pub fn have_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    assert!(
        std::env::var_os("BOOKFERRY_REQUIRE_ROOT").is_none(),
        "{what} needs root, but the tests run as uid {euid} and BOOKFERRY_REQUIRE_ROOT is set"
    );
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIPPED: {test}: {what} needs root");
    false
}

/// `SELECT` one integer from a state DB that may not exist (or have no tables) yet: 0 then.
/// For watching a run from outside while it writes.
pub fn count_or_zero(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(0)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn sha1_file(p: &Path) -> String {
    let data = std::fs::read(p).unwrap();
    hex(&Sha1::digest(&data))
}

/// The BLAKE3 (hex) of a file: what the state DB records of every hashed file (`files.blake3`).
pub fn blake3_file(p: &Path) -> String {
    blake3_of(&std::fs::read(p).unwrap())
}

pub fn blake3_of(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// relative path → SHA-1 of every regular file below `root` (following no links).
pub fn tree_sha1(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                // Listed while a bookferry runs, a temp file may be renamed or removed before
                // it is read: it is no longer in the tree. (A test polling the target of a run
                // that places files from its first second met this.)
                let data = match std::fs::read(e.path()) {
                    Ok(data) => data,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => panic!("{}: {err}", e.path().display()),
                };
                out.insert(rel, hex(&Sha1::digest(&data)));
            }
        }
    }
    out
}

/// relative path → (SHA-1, mtime ns) of every file: proof a tree was not touched.
pub fn tree_snapshot(root: &Path) -> BTreeMap<String, (String, i128)> {
    use std::os::unix::fs::MetadataExt;
    tree_sha1(root)
        .into_iter()
        .map(|(rel, sha)| {
            let m = std::fs::metadata(root.join(&rel)).unwrap();
            (
                rel,
                (
                    sha,
                    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                ),
            )
        })
        .collect()
}

/// Check `status --json` adds up: every row in exactly one state, bytes consistent.
pub fn assert_status_adds_up(s: &Value) {
    let states = s["states"].as_object().expect("states");
    let names: Vec<&str> = states.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "pending",
            "checked",
            "hashed",
            "metadata_cached",
            "uploaded",
            "skipped",
            "failed"
        ]
    );
    let sum: u64 = states.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        sum,
        s["total"].as_u64().unwrap(),
        "states add up to total: {s}"
    );
    let by_state = s["bytes_by_state"].as_object().unwrap();
    let bytes_sum: u64 = by_state.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(bytes_sum, s["bytes"]["total"].as_u64().unwrap());
    let done = by_state["uploaded"].as_u64().unwrap() + by_state["skipped"].as_u64().unwrap();
    assert_eq!(done, s["bytes"]["done"].as_u64().unwrap());
}

/// Every row's history in `events` is a valid path through the state diagram, ending at the
/// row's current state.
pub fn assert_event_histories_valid(ws: &Workspace) {
    let db = ws.db();
    let mut st = db
        .prepare("SELECT file_id, from_state, to_state FROM events ORDER BY file_id, id")
        .unwrap();
    let rows: Vec<(i64, Option<String>, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut current: BTreeMap<i64, String> = BTreeMap::new();
    for (id, from, to) in rows {
        let prev = current.get(&id).cloned();
        assert_eq!(
            prev, from,
            "file {id}: event from {from:?} but the row was in {prev:?}"
        );
        assert!(
            allowed(from.as_deref(), &to),
            "file {id}: {from:?} → {to} is not on the diagram"
        );
        current.insert(id, to);
    }
    let mut st = db.prepare("SELECT id, state FROM files").unwrap();
    let states: Vec<(i64, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, state) in states {
        assert_eq!(
            current.get(&id),
            Some(&state),
            "file {id}: events end elsewhere than its state"
        );
    }
}

fn allowed(from: Option<&str>, to: &str) -> bool {
    let rank = |s: &str| match s {
        "pending" => 0,
        "checked" => 1,
        "hashed" => 2,
        "metadata_cached" => 3,
        _ => 4,
    };
    match (from, to) {
        (None, "pending") => true,
        (None, _) => false,
        (Some(a), b) if a == b => false,
        (Some(_), "pending") => true,
        // A scan that finds a failed row's file gone skips it (`source_gone`).
        (Some("failed"), b) => matches!(b, "checked" | "hashed" | "metadata_cached" | "skipped"),
        // `verify --repair missing|changed` (an uploaded row) and `--repair content` (a row
        // skipped for name and size) put rows back to be migrated.
        (Some("uploaded" | "skipped"), "checked") => true,
        (Some("uploaded" | "skipped"), _) => false,
        (Some(_), "failed" | "skipped") => true,
        (Some(a), b) => rank(a) < rank(b),
    }
}

/// A small deterministic generator, so a failing sequence of kills can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Make a library at `out` with the repo's corpus generator (`tools/make-corpus.py`; it writes
/// its manifest beside `out`).
pub fn make_corpus(out: &Path, files: usize, seed: u64, avg_kib: u64) {
    let run = Command::new("python3")
        .arg(repo().join("tools/make-corpus.py"))
        .arg(out)
        .args(["--files", &files.to_string(), "--seed", &seed.to_string()])
        .args(["--avg-kib", &avg_kib.to_string()])
        .output()
        .expect("python3 runs tools/make-corpus.py");
    assert!(
        run.status.success(),
        "make-corpus failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Copies a folder tree (a fixture such as `tests/data/calibre-library`), every file writable.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            let mut perm = std::fs::metadata(&dest).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&dest, perm).unwrap();
        }
    }
}
