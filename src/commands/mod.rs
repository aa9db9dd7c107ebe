//! One module per subcommand, plus what they share: how a command ends (`error.rs`, with the
//! one mapping to exit codes), the options a run resolves (`options.rs`), the run driver
//! (`execute.rs`), opening a session on the state DB (lock, migrate, run record, recovery of
//! dead runs), and resolving which migration a command works on.

pub mod confirm;
pub mod error;
pub mod execute;
pub mod forget;
pub mod options;
pub mod report;
mod report_html;
pub mod retry_failed;
pub mod run;
pub mod scan;
pub mod shell_docs;
pub mod status;
pub mod stdout;
pub mod verify;
mod verify_calibre;
mod verify_calibre_server;
pub mod verify_progress;
mod verify_sidecars;

pub use error::{CommandError, Internal, Stop, UsageError};

use crate::cli::GlobalArgs;
use crate::exit;
use crate::state::lock::StateLock;
use crate::state::migration_record::{self, MigrationRecord};
use crate::state::{placed_contents, runs, Db, StateError};
use std::cell::Cell;
use std::path::{Path, PathBuf};

pub type CmdResult = Result<i32, CommandError>;

/// The state DB path: `--state`, `BOOKFERRY_STATE`, or `bookferry.db` here; made absolute.
pub fn state_path(global: &GlobalArgs) -> Result<PathBuf, CommandError> {
    let p = global
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from("bookferry.db"));
    Ok(crate::target::canonicalize_lenient(&p).map_err(UsageError::StatePath)?)
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
                return Err(UsageError::StateInsideRoot {
                    state: state.to_path_buf(),
                    what,
                    root: root.to_path_buf(),
                }
                .into());
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
        Some(how) => Err(UsageError::RootsOverlap {
            target: target.to_path_buf(),
            how,
            source_root: source.to_path_buf(),
        }
        .into()),
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

/// An open state DB with its lock held and this invocation's run record started. The record
/// is ended on every path: by [`Session::finish`] with the command's ending, or, should the
/// command leave any other way (a panic, an early return), when the session is dropped.
pub struct Session {
    pub db: Db,
    pub run: i64,
    ended: Cell<bool>,
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
        // What a killed run placed, in the index of placed contents before any check reads it.
        placed_contents::merge(&mut conn)?;
        Ok(Session {
            db,
            run,
            ended: Cell::new(false),
            _lock: lock,
        })
    }

    /// End the run record with how the command ended, and pass that on.
    pub fn finish<T: Copy>(
        &self,
        result: Result<T, CommandError>,
        ending: impl Fn(T) -> (i32, &'static str),
    ) -> Result<T, CommandError> {
        match &result {
            Ok(v) => {
                let (code, outcome) = ending(*v);
                self.end(code, outcome);
            }
            Err(e) => self.end(e.exit_code(), e.outcome()),
        }
        result
    }

    /// Close the run record with its exit code (once; later calls do nothing).
    fn end(&self, code: i32, outcome: &str) {
        if self.ended.replace(true) {
            return;
        }
        match self.db.conn() {
            Ok(mut conn) => {
                // What this run placed, indexed for the next (which does it itself if this fails).
                if let Err(e) = placed_contents::merge(&mut conn) {
                    tracing::warn!("indexing the contents run {} placed: {e}", self.run);
                }
                if let Err(e) = runs::end(&mut conn, self.run, code, outcome) {
                    tracing::error!("recording the end of run {}: {e}", self.run);
                }
            }
            Err(e) => tracing::error!("recording the end of run {}: {e}", self.run),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "panicked"
        } else {
            "aborted"
        };
        self.end(exit::STOPPED, outcome);
    }
}

/// The command line as recorded in `runs.arguments`: values of secret-bearing options removed;
/// bytes that are not UTF-8 (a path may hold any) written `\xFF`, as in `files.source_ref`.
pub fn redacted_args() -> Vec<String> {
    redact(std::env::args_os())
}

fn redact(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<String> {
    const SECRET: &[&str] = &["--token", "--password"];
    let mut out = Vec::new();
    let mut hide_next = false;
    for a in args {
        let a = crate::path_text::escape(&a).into_owned();
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

/// The command as the user invoked it, with `--state` when the state DB was given (so the
/// command can be pasted): see [`crate::invocation`].
pub fn command_prefix(global: &GlobalArgs) -> String {
    crate::invocation::prefix(
        std::env::args_os().next().as_deref(),
        global.state.as_deref(),
    )
}

/// Whether this migration ever wrote to its target (read-only; see [`crate::state::rebind`]).
pub fn target_written(state: &Path) -> Result<bool, CommandError> {
    let db = Db::open_read_only(state)?;
    let conn = db.conn()?;
    Ok(crate::state::rebind::is_bound(&conn)?)
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
        return Err(UsageError::OtherMigration {
            state: state.to_path_buf(),
            recorded_source: rec.source.clone(),
            recorded_target: rec.target.clone(),
            given_source: source.to_string(),
            target: target.map(str::to_string),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_run_end(db: &Db) -> (Option<i64>, Option<String>, Option<i64>) {
        db.conn()
            .unwrap()
            .query_row(
                "SELECT exit_code, outcome, ended_at FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }

    /// Before, a command that left by `?` after opening its session (a failed count, a panic,
    /// a writer that did not start) left its run record open, to be found "died" by the next
    /// run.
    #[test]
    fn a_session_left_without_finishing_still_ends_its_run_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let db = {
            let s = Session::open(&state, "run").unwrap();
            s.db.clone()
        };
        let (code, outcome, ended_at) = last_run_end(&db);
        assert_eq!(code, Some(i64::from(exit::STOPPED)));
        assert_eq!(outcome.as_deref(), Some("aborted"));
        assert!(ended_at.is_some());

        let panicked = std::panic::catch_unwind(|| {
            let _s = Session::open(&state, "run").unwrap();
            panic!("a fault inside the command");
        });
        assert!(panicked.is_err());
        assert_eq!(last_run_end(&db).1.as_deref(), Some("panicked"));
    }

    /// Before, any argument that was not UTF-8 panicked here (`std::env::args`).
    #[test]
    fn arguments_that_are_not_utf8_are_recorded_escaped_and_secrets_hidden() {
        use std::os::unix::ffi::OsStringExt;
        let args = [
            b"bookferry".to_vec(),
            b"--state".to_vec(),
            b"/tmp/st\xffate.db".to_vec(),
            b"--token".to_vec(),
            b"s\xfeecret".to_vec(),
            b"--password=hunter2".to_vec(),
        ]
        .map(std::ffi::OsString::from_vec);
        assert_eq!(
            redact(args),
            [
                "bookferry",
                "--state",
                "/tmp/st\\xFFate.db",
                "--token",
                "<redacted>",
                "--password=<redacted>"
            ]
        );
    }

    #[test]
    fn a_finished_session_records_its_ending_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Session::open(&dir.path().join("state.db"), "scan").unwrap();
        let db = s.db.clone();
        let out: Result<(), CommandError> = Err(UsageError::NoTarget.into());
        assert!(s.finish(out, |()| (exit::OK, "finished")).is_err());
        drop(s);
        let (code, outcome, _) = last_run_end(&db);
        assert_eq!(code, Some(i64::from(exit::NOTHING_DONE)));
        assert_eq!(outcome.as_deref(), Some("usage"));
    }
}
