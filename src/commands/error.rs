//! What a command can end with, and the one mapping from an ending to its exit code (the codes
//! themselves are named in `exit.rs`). `main` prints a [`CommandError`] once, at the top.

use crate::exit;
use crate::failure::{Failure, FailureKind};
use crate::pipeline::fault::{Cause, Fault};
use crate::pipeline::scan::ScanError;
use crate::source::formats::NoFormats;
use crate::source::SourceSpecError;
use crate::state::writer::WriterError;
use crate::state::StateError;
use crate::target::folder::UnknownLinkMode;
use crate::target::layout::LayoutError;
use crate::target::limit::RateError;
use crate::target::{OpenError, PathError, TargetSpecError};
use crate::tuning::BadSize;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a command did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command line, or what the state DB records, does not allow this: nothing was done.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The state DB cannot be used (held by another process, from a newer bookferry,
    /// unreadable) before anything was done.
    #[error(transparent)]
    State(#[from] StateError),
    /// The target cannot be used at all (checked before anything is done), or refused our
    /// credentials.
    #[error(transparent)]
    Target(#[from] OpenError),
    /// The scan stopped: the source cannot be read (nothing was done), or the state DB could
    /// not be written.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The run stopped part-way for a reason that concerns every file.
    #[error("stopped: {0}")]
    Stopped(#[from] Stop),
    /// bookferry itself failed (a task panicked, a thread could not start). Work may have
    /// begun; what was committed stays.
    #[error("internal error: {0}")]
    Internal(#[from] Internal),
}

/// bookferry's own faults.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the {task} task failed: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A stage of the pipeline failed (a task panicked, a state-DB read it needed failed); the
    /// run stopped there and left the rows where they were.
    #[error("{0}")]
    Pipeline(#[from] Fault),
    #[error("writing to standard output: {0}")]
    Output(#[source] std::io::Error),
}

/// Why a run stopped part-way; rows not finished stay where they were.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// A failure that concerns every file (target full, gone, credentials refused).
    #[error("{}", .0.message)]
    Failure(Failure),
    /// The state writer stopped: the state DB, or the target's durability barrier, failed.
    #[error("{0}")]
    Writer(Arc<WriterError>),
    /// The state DB failed after the run began.
    #[error("{0}")]
    State(#[from] StateError),
    /// `verify` could no longer read the calibre library part-way (calibre held it locked
    /// past the wait, or it went away); the verdicts recorded so far stay.
    #[error("{0}")]
    CalibreRead(#[source] crate::calibre::ReadError),
    /// `verify --repair changed` could not move a damaged file out of the calibre library;
    /// that file's row, and those after it, were not put back.
    #[error("{}: cannot move the damaged file out of the library to {}: {source}", .from.display(), .to.display())]
    MoveOut {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CommandError {
    /// The exit code of this ending (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            CommandError::Usage(_) | CommandError::State(_) => exit::NOTHING_DONE,
            CommandError::Target(OpenError::Auth(_) | OpenError::CalibreServerAuth(_)) => {
                exit::AUTH
            }
            CommandError::Target(OpenError::Unusable(_)) => exit::NOTHING_DONE,
            CommandError::Scan(
                ScanError::Source { .. }
                | ScanError::Calibre(_)
                | ScanError::NoMatchingFormats { .. }
                | ScanError::SourceEmpty { .. }
                | ScanError::FilterMatchesNothing { .. },
            ) => exit::NOTHING_DONE,
            CommandError::Scan(ScanError::State(_)) => exit::STOPPED,
            CommandError::Stopped(Stop::Failure(f)) if f.kind == FailureKind::Auth => exit::AUTH,
            CommandError::Stopped(_) | CommandError::Internal(_) => exit::STOPPED,
        }
    }

    /// The run record's `outcome` for this ending.
    pub fn outcome(&self) -> &'static str {
        match self {
            CommandError::Usage(_) => "usage",
            CommandError::State(_) => "state_db_error",
            CommandError::Target(OpenError::Auth(_) | OpenError::CalibreServerAuth(_)) => "auth",
            CommandError::Target(OpenError::Unusable(_)) => "target unusable",
            CommandError::Scan(_) => "scan failed",
            CommandError::Stopped(Stop::Failure(f)) => f.kind.as_str(),
            CommandError::Stopped(Stop::Writer(_) | Stop::State(_)) => "state_db_error",
            CommandError::Stopped(Stop::CalibreRead(_)) => "target unreadable",
            CommandError::Stopped(Stop::MoveOut { .. }) => "repair failed",
            CommandError::Internal(Internal::Pipeline(Fault {
                cause: Cause::StateDb(_),
                ..
            })) => "state_db_error",
            CommandError::Internal(_) => "internal_error",
        }
    }
}

/// What the command line (or the recorded migration it resumes) gets wrong.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Source(#[from] SourceSpecError),
    #[error(transparent)]
    TargetSpec(#[from] TargetSpecError),
    #[error("--state: {0}")]
    StatePath(#[source] PathError),
    #[error(transparent)]
    Formats(#[from] NoFormats),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Link(#[from] UnknownLinkMode),
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error("--transfers {0:?}: a number above 0, or auto")]
    Transfers(String),
    #[error("--buffer-memory {0}")]
    BufferMemory(#[source] BadSize),
    #[error("--tpslimit must be more than 0")]
    TpsLimit,
    #[error(transparent)]
    CaCert(#[from] crate::target::tls::CaCertError),
    #[error("--token-file {}: {source}", .path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--token-file {}: the file is empty", .0.display())]
    EmptyTokenFile(PathBuf),
    #[error("--password-file {}: {source}", .path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--password-file {}: the file is empty", .0.display())]
    EmptyPasswordFile(PathBuf),
    #[error("--kind {given:?}: unknown failure kind (known: {})", FailureKind::ALL.map(FailureKind::as_str).join(", "))]
    UnknownKind { given: String },
    #[error("the state DB {} lies inside the {what} {}; put it elsewhere with --state", .state.display(), .root.display())]
    StateInsideRoot {
        state: PathBuf,
        what: &'static str,
        root: PathBuf,
    },
    #[error("the target {} {how} {}: bookferry never writes into the library it reads; give a target elsewhere", .target.display(), .source_root.display())]
    RootsOverlap {
        target: PathBuf,
        how: &'static str,
        source_root: PathBuf,
    },
    #[error("the state DB {} belongs to the migration {recorded_source} → {}; this one is {given_source} → {}. Use another --state for it, or `{} forget` to start this state DB over (it keeps a dated backup)",
        .state.display(),
        .recorded_target.as_deref().unwrap_or("(no target yet)"),
        .target.as_deref().unwrap_or("(no target)"),
        crate::invocation::me())]
    OtherMigration {
        state: PathBuf,
        recorded_source: String,
        recorded_target: Option<String>,
        given_source: String,
        target: Option<String>,
    },
    #[error("no migration recorded in {}: give --from SOURCE --to TARGET", .0.display())]
    NoMigration(PathBuf),
    /// `--sidecars` (given, or recorded with the migration) with a target that is no folder.
    #[error("--sidecars is for a folder target only; {target} is not a folder{}",
        if *.recorded { " (this migration was recorded with --sidecars)" } else { "" })]
    SidecarsNeedAFolder { target: String, recorded: bool },
    #[error("no target recorded: give --to TARGET")]
    NoTarget,
    #[error("no migration recorded in {}; nothing to retry", .0.display())]
    NothingToRetry(PathBuf),
    #[error("this state DB has no target yet; use `{me} run --to TARGET`", me = crate::invocation::me())]
    NoTargetToRetry,
    #[error("--reason {given:?}: unknown reason (failure kinds: {}; skip reasons: {})",
        FailureKind::ALL.map(FailureKind::as_str).join(", "),
        crate::skip_reason::SkipReason::ALL.map(crate::skip_reason::SkipReason::as_str).join(", "))]
    UnknownReason { given: String },
    #[error("--run {given}: no such run in {} (runs: {})", .state.display(), .known.as_deref().unwrap_or("none yet"))]
    NoSuchRun {
        given: i64,
        state: PathBuf,
        known: Option<String>,
    },
    /// The calibre library to verify cannot be read (nothing was checked).
    #[error("verify: {0}")]
    VerifyCalibre(#[source] crate::calibre::ReadError),
    #[error("verify --source is for folder and calibre targets (an HTTP target is verified by asking the server what it holds)")]
    VerifySourceOverHttp,
    #[error("verify --content and --repair content are for folder and HTTP targets (a calibre library's name-and-size skips are not looked inside yet)")]
    VerifyContentCalibre,
    /// `verify --repair sidecars` for a migration that has no sidecars (recorded without
    /// `--sidecars`, or not into a folder).
    #[error("verify --repair sidecars: this migration writes no sidecars (only a folder migration recorded with run --sidecars does)")]
    RepairSidecarsWithout,
    #[error("verify --repair: {files} files would be put back to be migrated; not on a terminal to ask, so say --yes")]
    RepairNeedsYes { files: usize },
    #[error("not on a terminal to ask: say {flag}")]
    NeedsYes { flag: &'static str },
    #[error("{}: no state DB here, nothing to forget (give --state for another)", .0.display())]
    NothingToForget(PathBuf),
    #[error("--min-size/--max-size {0}")]
    FilterSize(#[source] crate::tuning::BadSize),
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    #[error("bookferry man {0}: no such subcommand (see `{me} --help`)", me = crate::invocation::me())]
    NoSuchSubcommand(String),
    #[error("--format html makes one page about the whole migration (with a filter); --failed, --skipped, --duplicates, --warnings, --uploaded, --all, --reason and --run are for table, csv and json")]
    HtmlSelection,
    #[error("--format html: give --output FILE (the page is not for a terminal)")]
    HtmlNeedsOutput,
    #[error("{}: cannot write the report: {source}", .path.display())]
    ReportOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One table, checked against README's: a stop for every file is 5 (or 4 for
    /// credentials), never 2, which promises that nothing was done.
    #[test]
    fn every_ending_has_its_documented_exit_code() {
        let io = || std::io::Error::other("x");
        let cases: Vec<(CommandError, i32)> = vec![
            (UsageError::TpsLimit.into(), 2),
            (StateError::Missing { path: "s".into() }.into(), 2),
            (
                OpenError::from(crate::target::Unusable::NotAFolder("t".into())).into(),
                2,
            ),
            (
                OpenError::from(crate::target::http::AuthRefused {
                    server: "http://h".into(),
                    status: reqwest::StatusCode::UNAUTHORIZED,
                })
                .into(),
                4,
            ),
            (
                ScanError::Source {
                    root: "r".into(),
                    source: io(),
                }
                .into(),
                2,
            ),
            (
                ScanError::State(StateError::Io {
                    path: "s".into(),
                    source: io(),
                })
                .into(),
                5,
            ),
            (
                Stop::Failure(Failure::new(FailureKind::TargetFull, "full")).into(),
                5,
            ),
            (
                Stop::Failure(Failure::new(FailureKind::Auth, "401")).into(),
                4,
            ),
            (
                Stop::Failure(Failure::new(FailureKind::BadServer, "302")).into(),
                5,
            ),
            (
                Stop::State(StateError::Missing { path: "s".into() }).into(),
                5,
            ),
            (Internal::Runtime(io()).into(), 5),
            (
                UsageError::VerifyCalibre(crate::calibre::ReadError::NotALibrary {
                    path: "l".into(),
                })
                .into(),
                2,
            ),
            (
                Stop::CalibreRead(crate::calibre::ReadError::NotALibrary { path: "l".into() })
                    .into(),
                5,
            ),
            (
                Stop::MoveOut {
                    from: "a".into(),
                    to: "b".into(),
                    source: io(),
                }
                .into(),
                5,
            ),
            (
                Internal::Pipeline(Fault::new(
                    crate::pipeline::fault::Stage::Hash,
                    Cause::Panicked("x".into()),
                ))
                .into(),
                5,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }
}
