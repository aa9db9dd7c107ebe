//! The SQLite state DB: the connection pool and its per-connection pragmas, schema migrations,
//! the single-process lock, and the row-level operations (scan upserts, claims, batched
//! transitions, run records). It knows no target and no network.

pub mod claim;
pub mod digests;
pub mod file_log;
pub mod file_state;
pub mod listing;
pub mod lock;
pub mod migration_record;
pub mod placed_contents;
pub mod placement;
pub mod rebind;
pub mod report;
pub mod report_stats;
pub mod retry;
pub mod rows;
pub mod runs;
pub mod scan_store;
pub mod schema_version;
pub mod sidecar_rows;
pub mod verify_store;
pub mod writer;

pub use file_state::FileState;

use r2d2::{CustomizeConnection, Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors of the state DB, each naming the DB file where that helps the user.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state DB: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state DB: cannot open a connection ({0}); is its disk full or unwritable?")]
    Pool(#[from] r2d2::Error),
    #[error("state DB {path}: written by a newer bookferry (schema version {found}; this binary knows up to {supported}); upgrade bookferry or use another --state")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("state DB {path} is in use by another bookferry process (pid {pid} on {host}); wait for it to finish or stop it")]
    Held {
        path: PathBuf,
        pid: String,
        host: String,
    },
    #[error("state DB {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state DB {path} does not exist; run `{me} scan` or `{me} run` first", me = crate::invocation::me())]
    Missing { path: PathBuf },
    #[error("the state DB's recorded migration options do not parse ({json:?}): {source}; the DB was changed by hand or is damaged: fix the value or use another --state")]
    BadOptions {
        json: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the state DB's migration options are version {found}, from a newer bookferry (this binary knows up to {supported}); upgrade bookferry or use another --state")]
    OptionsTooNew { found: u32, supported: u32 },
    #[error("the state DB writer stopped{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    WriterGone(Option<std::sync::Arc<writer::WriterError>>),
    #[error("state DB: cannot start the writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, StateError>;
pub type Conn = PooledConnection<SqliteConnectionManager>;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause before retry `tries` (0, 1, …) of a statement that found the DB locked by another
/// connection: short at first, because the scan's batches and the writer's claims and commits
/// hold the write lock for a millisecond or two at a time. (SQLite's own busy handler sleeps
/// 1, 2, 5, 10, … ms: a claim that met the scan's first commits slept far longer than the lock
/// was held, while the cores waited for work.) Longer pauses follow for a lock held long.
fn lock_wait(tries: i32) -> Duration {
    match tries {
        ..SHORT_TRIES => Duration::from_micros(100),
        SHORT_TRIES..MEDIUM_TRIES => Duration::from_millis(1),
        _ => Duration::from_millis(10),
    }
}
const SHORT_TRIES: i32 = 50;
const MEDIUM_TRIES: i32 = 250;

/// The pauses before retry `tries`, added up.
fn waited_before(tries: i32) -> Duration {
    let t = tries.max(0) as u32;
    let short = t.min(SHORT_TRIES as u32);
    let medium = t.clamp(SHORT_TRIES as u32, MEDIUM_TRIES as u32) - SHORT_TRIES as u32;
    let long = t.saturating_sub(MEDIUM_TRIES as u32);
    Duration::from_micros(100) * short
        + Duration::from_millis(1) * medium
        + Duration::from_millis(10) * long
}

/// The busy handler of every connection: wait (see `lock_wait`) and retry until the pauses
/// add up to `BUSY_TIMEOUT`, then give up (the statement fails with "database is locked").
fn wait_for_lock(tries: i32) -> bool {
    if waited_before(tries) >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(lock_wait(tries));
    true
}

/// How long to wait for a pooled connection before giving up with the underlying error.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// r2d2 retries failing connections in the background; log those at debug level only (the
/// error reaches the user once, through the caller).
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<rusqlite::Error> for QuietErrors {
    fn handle_error(&self, e: rusqlite::Error) {
        tracing::debug!("state DB connection: {e}");
    }
}

/// WAL pages written before a commit copies them into the DB (SQLite's default is 1,000).
/// A run commits small batches often, rewriting the same pages (the state index, the
/// events' tail) in commit after commit; every checkpoint writes each changed page into the DB
/// once more, so rarer checkpoints write fewer bytes (a 100,000-file run measured 11.5× its
/// final DB size written at 1,000 pages, 9.7× at 10,000). The WAL grows to ~40 MiB at most.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// Per-connection setup, applied by r2d2 to every connection it opens (the one place pragmas
/// are set).
#[derive(Debug)]
struct Pragmas {
    read_only: bool,
}

impl CustomizeConnection<Connection, rusqlite::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut Connection) -> std::result::Result<(), rusqlite::Error> {
        conn.busy_handler(Some(wait_for_lock))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        if !self.read_only {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        }
        conn.set_prepared_statement_cache_capacity(64);
        Ok(())
    }
}

/// A handle on the state DB: a small pool of connections with the pragmas set.
#[derive(Clone)]
pub struct Db {
    pool: Pool<SqliteConnectionManager>,
    path: PathBuf,
}

impl Db {
    /// Open (creating if needed) and migrate the state DB for writing.
    pub fn open(path: &Path) -> Result<Db> {
        // Switch to WAL and migrate on one connection before the pool opens others, so no two
        // connections race to change the journal mode of a new file.
        {
            let mut conn = Connection::open(path)?;
            Pragmas { read_only: false }.on_acquire(&mut conn)?;
            schema_version::migrate(&mut conn, path)?;
        }
        let manager = SqliteConnectionManager::file(path);
        let pool = Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .connection_timeout(POOL_TIMEOUT)
            .error_handler(Box::new(QuietErrors))
            .connection_customizer(Box::new(Pragmas { read_only: false }))
            .build(manager)?;
        Ok(Db {
            pool,
            path: path.to_path_buf(),
        })
    }

    /// Open an existing state DB read-only (for `status`, while a run may be writing).
    pub fn open_read_only(path: &Path) -> Result<Db> {
        if !path.exists() {
            return Err(StateError::Missing {
                path: path.to_path_buf(),
            });
        }
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX);
        let pool = Pool::builder()
            .max_size(2)
            .min_idle(Some(1))
            .connection_timeout(POOL_TIMEOUT)
            .error_handler(Box::new(QuietErrors))
            .connection_customizer(Box::new(Pragmas { read_only: true }))
            .build(manager)?;
        let db = Db {
            pool,
            path: path.to_path_buf(),
        };
        schema_version::check_version(&*db.conn()?, path)?;
        Ok(db)
    }

    pub fn conn(&self) -> Result<Conn> {
        Ok(self.pool.get()?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Milliseconds since the Unix epoch: the unit of every time column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::TransactionBehavior;

    /// `.cargo/config.toml` builds the bundled SQLite without its global memory count and
    /// without shared page caches (each took a mutex on every allocation or page).
    #[test]
    fn sqlite_is_built_with_the_options_of_cargo_config() {
        let conn = Connection::open_in_memory().unwrap();
        let options: String = conn
            .query_row(
                "SELECT group_concat(compile_options, ' ') FROM pragma_compile_options",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let has = |o: &str| options.split(' ').any(|x| x == o);
        assert!(has("DEFAULT_MEMSTATUS=0"), "{options}");
        assert!(!has("ENABLE_MEMORY_MANAGEMENT"), "{options}");
    }

    /// Many small commits fill the WAL up to `WAL_AUTOCHECKPOINT_PAGES` before a checkpoint
    /// copies them (SQLite's default checkpoints every 1,000 pages, so its WAL stays ~4 MiB).
    #[test]
    fn small_commits_are_checkpointed_in_large_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = Db::open(&path).unwrap();
        let conn = db.conn().unwrap();
        conn.execute_batch("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
            .unwrap();
        // 3,000 commits of two pages or more each: past the default's 1,000 pages.
        for _ in 0..3000 {
            conn.execute("INSERT INTO filler (data) VALUES (zeroblob(5000))", [])
                .unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("state.db-wal"))
            .unwrap()
            .len();
        let page = 4096 + 24;
        assert!(
            wal > 2000 * page,
            "the WAL was checkpointed early: {wal} bytes"
        );
    }

    #[test]
    fn lock_waits_start_below_a_millisecond_and_add_up_to_the_busy_timeout() {
        // The first ten retries wait 1 ms in all (SQLite's own handler: 1+2+5+10+15+20+25+25+25+50
        // = 178 ms).
        assert_eq!(waited_before(10), Duration::from_millis(1));
        let summed: Duration = (0..4000).map(lock_wait).sum();
        assert_eq!(waited_before(4000), summed);
        // Retries go on until the pauses add up to the busy timeout, and no further.
        let last = (0..i32::MAX)
            .find(|&t| waited_before(t) >= BUSY_TIMEOUT)
            .unwrap();
        assert!(waited_before(last) - BUSY_TIMEOUT < lock_wait(last - 1));
        assert!(!wait_for_lock(last));
    }

    #[test]
    fn a_writer_that_finds_the_db_locked_waits_and_goes_on_once_the_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let mut holder = db.conn().unwrap();
        let tx = holder
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let other = db.clone();
        let waiter = std::thread::spawn(move || {
            let mut conn = other.conn().unwrap();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("INSERT INTO scan_progress (dir) VALUES ('b')", [])?;
            tx.commit()
        });
        std::thread::sleep(Duration::from_millis(50));
        // Still waiting for the lock, not failed with "database is locked".
        assert!(!waiter.is_finished());
        tx.execute("INSERT INTO scan_progress (dir) VALUES ('a')", [])
            .unwrap();
        tx.commit().unwrap();
        waiter.join().unwrap().unwrap();
        let dirs: i64 = holder
            .query_row("SELECT COUNT(*) FROM scan_progress", [], |r| r.get(0))
            .unwrap();
        assert_eq!(dirs, 2);
    }
}
