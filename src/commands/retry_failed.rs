//! `bookferry retry-failed`: put failed rows back where they failed (attempts kept) and run the
//! recorded migration again, exactly as `run` would.

use super::execute::{Ended, Execution};
use super::options::{self, MigrationOptions};
use super::{
    check_roots_apart, check_state_location, recorded_migration, CmdResult, Session, UsageError,
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
            return Err(UsageError::UnknownKind { given: k.clone() }.into());
        }
    }
    let Some(rec) = recorded_migration(&state)? else {
        return Err(UsageError::NothingToRetry(state).into());
    };
    let Some(target) = rec.target.clone() else {
        return Err(UsageError::NoTargetToRetry.into());
    };
    let source = SourceSpec::parse(&rec.source).map_err(UsageError::from)?;
    let target = TargetSpec::parse(&target).map_err(UsageError::from)?;
    let options = MigrationOptions::resolve(Some(&rec.options), None, None, &args.target)?;
    check_state_location(&state, source.root(), target.local_root())?;
    check_roots_apart(source.root(), target.local_root())?;
    let http_opts = options::http_options(&args.http, &args.tuning)?;
    let tuning = options::tuning(&args.tuning)?;
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
    let ended = Execution {
        session: &session,
        source,
        target,
        options,
        tuning,
        http_opts,
        checksum: false,
        hash_sha1: false,
        dry_run: false,
        global,
        stats: crate::pipeline::progress::DEFAULT_STATS,
        max_duration: None,
    }
    .execute();
    let ended = session.finish(ended, |e| (e.exit_code(), e.outcome()))?;
    Ok(Ended::exit_code(ended))
}
