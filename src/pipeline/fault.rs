//! Faults of bookferry itself inside the pipeline: a stage's task that panicked, or a state-DB
//! read whose answer the stage cannot do without. Such a fault is no file's failure: it stops
//! the run (exit 5, the cause named) and leaves every row where it was (`Ctx::abort`).
//!
//! Also the test hook that injects them, `BOOKFERRY_FAULT=POINT:NAME` (debug builds only; a
//! release build never reads it): at `POINT`, a file whose source path contains `NAME` makes
//! the pipeline fail as named. Points: `name-check` (a panic asking the target about names),
//! `hash` (a panic in the hashing task), `content-db` (the content check's state-DB query
//! fails with a real SQLite error), `transfer` (a panic in a transfer task). The hook itself,
//! and the points that kill the process instead, are `crate::fault_hook`'s.

use crate::state::StateError;
use std::fmt;

/// Where in the pipeline a fault happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The pipeline's own coordinator.
    Pipeline,
    Claim,
    NameCheck,
    Hash,
    ContentCheck,
    Metadata,
    Transfer,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Pipeline => "pipeline",
            Stage::Claim => "claim of rows",
            Stage::NameCheck => "name check",
            Stage::Hash => "hashing",
            Stage::ContentCheck => "content check",
            Stage::Metadata => "metadata stage",
            Stage::Transfer => "transfer",
        })
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("a task panicked: {0}")]
    Panicked(String),
    #[error("a task was cancelled before it finished")]
    Cancelled,
    #[error("the state DB could not be read: {0}")]
    StateDb(#[source] StateError),
}

/// A fault that stops the run.
#[derive(Debug, thiserror::Error)]
#[error("the {stage} failed: {cause}")]
pub struct Fault {
    pub stage: Stage,
    #[source]
    pub cause: Cause,
}

impl Fault {
    pub fn new(stage: Stage, cause: Cause) -> Fault {
        Fault { stage, cause }
    }

    /// A task of `stage` that did not return: its panic's message, or its cancellation.
    pub fn joined(stage: Stage, e: tokio::task::JoinError) -> Fault {
        let cause = if e.is_panic() {
            Cause::Panicked(panic_message(e.into_panic()))
        } else {
            Cause::Cancelled
        };
        Fault::new(stage, cause)
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(no message)".to_string(),
        },
    }
}

pub use crate::fault_hook::injected;

/// Panic here when the test hook asks for it (see the module's doc).
pub fn panic_if_injected(point: &str, source_ref: &str) {
    if injected(point, source_ref) {
        panic!("fault injected at {point} for {source_ref}");
    }
}
