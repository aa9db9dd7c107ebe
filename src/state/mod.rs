//! The SQLite state DB: the connection pool and its per-connection pragmas, schema migrations,
//! the single-process lock, and the row-level operations (scan upserts, claims, batched
//! transitions, run records). It knows no target and no network.

pub mod claim;
pub mod file_state;
pub mod lock;
pub mod migrate;
pub mod migration;
pub mod report;
pub mod retry;
pub mod rows;
pub mod runs;
pub mod scan_store;
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
    #[error("state DB {path} does not exist; run `bookferry scan` or `bookferry run` first")]
    Missing { path: PathBuf },
    #[error("state DB writer stopped: {0}")]
    WriterGone(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StateError>;
pub type Conn = PooledConnection<SqliteConnectionManager>;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Per-connection setup, applied by r2d2 to every connection it opens (the one place pragmas
/// are set).
#[derive(Debug)]
struct Pragmas {
    read_only: bool,
}

impl CustomizeConnection<Connection, rusqlite::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut Connection) -> std::result::Result<(), rusqlite::Error> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        if !self.read_only {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
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
            migrate::migrate(&mut conn, path)?;
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
        migrate::check_version(&*db.conn()?, path)?;
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
