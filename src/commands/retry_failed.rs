//! `bookferry retry-failed`: put failed rows back where they failed (attempts kept) and run the
//! recorded migration again, as `run` would, except that the rows put back (with any other row
//! left to do) go first, before the rescan of the source, so they start moving at once however
//! large the library; with nothing put back and nothing left to do it says so and ends there,
//! without a rescan.

use super::execute::{Ended, Execution};
use super::options::{self, MigrationOptions};
use super::{
    check_roots_apart, check_state_location, recorded_migration, CmdResult, Session, UsageError,
};
use crate::cli::{GlobalArgs, RetryArgs};
use crate::failure::FailureKind;
use crate::source::SourceSpec;
use crate::state::migration_record::{self, MigrationRecord};
use crate::state::{report, retry};
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
    let requeued = retry::requeue_failed(&mut *session.db.conn()?, session.run, &args.kind)?;
    let n = requeued.count;
    tracing::info!("retry-failed: {n} failed file(s) put back where they failed");
    if n == 0 {
        if let Some(ended) = nothing_to_do(&session, &super::command_prefix(global))? {
            let ended = session.finish(Ok(ended), |e| (e.exit_code(), e.outcome()))?;
            return Ok(Ended::exit_code(ended));
        }
    }
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
        rows_first: n > 0,
        failed_at_placement: std::sync::Arc::new(requeued.at_placement),
    }
    .execute();
    let ended = session.finish(ended, |e| (e.exit_code(), e.outcome()))?;
    Ok(Ended::exit_code(ended))
}

/// With no row put back: when no row is left to do either, how the command ends without a
/// rescan (exit 0, or 1 while rows of other kinds stay failed, as a run would end); `None`
/// when rows are left, which the run takes up as `run` would.
fn nothing_to_do(session: &Session, me: &str) -> Result<Option<Ended>, crate::state::StateError> {
    let conn = session.db.conn()?;
    let (left, _) = report::active_totals(&conn)?;
    if left > 0 {
        return Ok(None);
    }
    let failed = report::failed_count(&conn)?;
    tracing::info!(
        "retry-failed: nothing to retry and nothing left to migrate{}; files new or changed in the source are found by `{me} run`",
        if failed > 0 {
            format!(" ({failed} file(s) stay failed, of kinds not asked for)")
        } else {
            String::new()
        }
    );
    Ok(Some(if failed > 0 {
        Ended::FailedRows(failed)
    } else {
        Ended::Finished
    }))
}
