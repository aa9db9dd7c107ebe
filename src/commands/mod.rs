//! One module per subcommand, plus what they share: the command error (with its exit code),
//! opening a session on the state DB (lock, migrate, run record, recovery of dead runs), and
//! resolving which migration a command works on.

pub mod execute;
pub mod retry_failed;
pub mod run;
pub mod scan;
pub mod status;

use crate::cli::GlobalArgs;
use crate::exit;
use crate::state::lock::StateLock;
use crate::state::migration_record::{self, MigrationRecord};
use crate::state::{runs, Db, StateError};
use std::path::{Path, PathBuf};

/// A command's failure: what to print (once, at the top) and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub code: i32,
    pub message: String,
}

impl CommandError {
    pub fn usage(message: impl Into<String>) -> CommandError {
        CommandError {
            code: exit::NOTHING_DONE,
            message: message.into(),
        }
    }
}

impl From<StateError> for CommandError {
    fn from(e: StateError) -> CommandError {
        CommandError::usage(e.to_string())
    }
}

pub type CmdResult = Result<i32, CommandError>;

/// The state DB path: `--state`, `BOOKFERRY_STATE`, or `bookferry.db` here; made absolute.
pub fn state_path(global: &GlobalArgs) -> Result<PathBuf, CommandError> {
    let p = global
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from("bookferry.db"));
    crate::target::canonicalize_lenient(&p).map_err(CommandError::usage)
}

/// Refuse a state DB inside the source or the target tree (it would be migrated, or changed
/// under the library's feet).
pub fn check_state_location(
    state: &Path,
    source: &Path,
    target: Option<&Path>,
) -> Result<(), CommandError> {
    for (what, root) in [("source", Some(source)), ("target", target)] {
        if let Some(root) = root {
            if state.starts_with(root) {
                return Err(CommandError::usage(format!(
                    "the state DB {} lies inside the {what} {}; put it elsewhere with --state",
                    state.display(),
                    root.display()
                )));
            }
        }
    }
    Ok(())
}

/// Refuse a target that is the source, lies inside it, or holds it: the migration would write
/// into the library it reads (which bookferry never modifies), or read back what it wrote.
pub fn check_roots_apart(source: &Path, target: Option<&Path>) -> Result<(), CommandError> {
    let Some(target) = target else { return Ok(()) };
    let clash = if target == source {
        Some("is the source")
    } else if target.starts_with(source) {
        Some("lies inside the source")
    } else if source.starts_with(target) {
        Some("holds the source")
    } else {
        None
    };
    match clash {
        Some(how) => Err(CommandError::usage(format!(
            "the target {} {how} {}: bookferry never writes into the library it reads; give a target elsewhere",
            target.display(),
            source.display()
        ))),
        None => Ok(()),
    }
}

/// The migration recorded in an existing state DB (read-only; none if there is no DB yet).
pub fn recorded_migration(state: &Path) -> Result<Option<MigrationRecord>, CommandError> {
    if !state.exists() {
        return Ok(None);
    }
    let db = Db::open_read_only(state)?;
    let conn = db.conn()?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StateError::from)?;
    if version == 0 {
        // Created a moment ago by another process that has not set it up yet.
        return Ok(None);
    }
    Ok(migration_record::load(&conn)?)
}

/// An open state DB with its lock held and this invocation's run record started.
pub struct Session {
    pub db: Db,
    pub run: i64,
    _lock: StateLock,
}

impl Session {
    pub fn open(state: &Path, command: &str) -> Result<Session, CommandError> {
        let lock = StateLock::acquire(state)?;
        let db = Db::open(state)?;
        let mut conn = db.conn()?;
        let run = runs::begin(&conn, command, &redacted_args())?;
        let rec = runs::recover_dead(&mut conn, run)?;
        if !rec.dead_runs.is_empty() {
            tracing::info!(
                "recovered from run(s) {:?} that did not finish: {} row(s) in flight taken back",
                rec.dead_runs,
                rec.rows_released
            );
        }
        Ok(Session {
            db,
            run,
            _lock: lock,
        })
    }

    /// Close the run record with its exit code.
    pub fn end(&self, code: i32, outcome: &str) {
        match self.db.conn() {
            Ok(mut conn) => {
                if let Err(e) = runs::end(&mut conn, self.run, code, outcome) {
                    tracing::error!("recording the end of run {}: {e}", self.run);
                }
            }
            Err(e) => tracing::error!("recording the end of run {}: {e}", self.run),
        }
    }
}

/// The command line as recorded in `runs.arguments`: values of secret-bearing options removed.
pub fn redacted_args() -> Vec<String> {
    const SECRET: &[&str] = &["--token", "--password"];
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in std::env::args() {
        if hide_next {
            out.push("<redacted>".into());
            hide_next = false;
        } else if let Some((k, _)) = a.split_once('=').filter(|(k, _)| SECRET.contains(k)) {
            out.push(format!("{k}=<redacted>"));
        } else {
            hide_next = SECRET.contains(&a.as_str());
            out.push(a);
        }
    }
    out
}

/// Check a given source/target against the recorded pair; a DB belongs to one migration.
pub fn check_same_migration(
    state: &Path,
    rec: &MigrationRecord,
    source: &str,
    target: Option<&str>,
) -> Result<(), CommandError> {
    let target_differs = matches!((rec.target.as_deref(), target), (Some(a), Some(b)) if a != b);
    if rec.source != source || target_differs {
        return Err(CommandError::usage(format!(
            "the state DB {} belongs to the migration {} → {}; this one is {} → {}. Use another --state for it",
            state.display(),
            rec.source,
            rec.target.as_deref().unwrap_or("(no target yet)"),
            source,
            target.unwrap_or("(no target)")
        )));
    }
    Ok(())
}
