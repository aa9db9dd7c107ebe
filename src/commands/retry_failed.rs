//! `bookferry retry-failed`: put failed rows back where they failed (attempts kept) and run the
//! recorded migration again, exactly as `run` would.

use super::execute::{Execution, MigrationOptions};
use super::{
    check_roots_apart, check_state_location, recorded_migration, CmdResult, CommandError, Session,
};
use crate::cli::{GlobalArgs, RetryArgs};
use crate::failure::FailureKind;
use crate::source::SourceSpec;
use crate::state::migration_record::{self, MigrationRecord};
use crate::state::retry;
use crate::target::TargetSpec;

pub fn command(global: &GlobalArgs, args: &RetryArgs) -> CmdResult {
    let state = super::state_path(global)?;
    for k in &args.kind {
        if FailureKind::parse(k).is_none() {
            let known: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(CommandError::usage(format!(
                "--kind {k:?}: unknown failure kind (known: {})",
                known.join(", ")
            )));
        }
    }
    let Some(rec) = recorded_migration(&state)? else {
        return Err(CommandError::usage(format!(
            "no migration recorded in {}; nothing to retry",
            state.display()
        )));
    };
    let Some(target) = rec.target.clone() else {
        return Err(CommandError::usage(
            "this state DB has no target yet; use `bookferry run --to TARGET`",
        ));
    };
    let source = SourceSpec::parse(&rec.source).map_err(CommandError::usage)?;
    let target = TargetSpec::parse(&target).map_err(CommandError::usage)?;
    let options = MigrationOptions::resolve(Some(&rec.options), None, &args.target)?;
    check_state_location(&state, source.root(), target.local_root())?;
    check_roots_apart(source.root(), target.local_root())?;
    let session = Session::open(&state, "retry-failed")?;
    migration_record::save(
        &*session.db.conn()?,
        &MigrationRecord {
            options: options.to_recorded(),
            ..rec
        },
    )?;
    let n = retry::requeue_failed(&mut *session.db.conn()?, session.run, &args.kind)?;
    tracing::info!("retry-failed: {n} failed file(s) put back where they failed");
    Execution {
        session: &session,
        source,
        target,
        options,
        tuning: args.tuning.clone(),
        http: args.http.clone(),
        checksum: false,
        dry_run: false,
        quiet: global.quiet,
    }
    .execute()
}
