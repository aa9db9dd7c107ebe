//! `bookferry run`: check the target, scan (incrementally), and move every row to a final
//! state. Without `--from/--to` it resumes the migration recorded in the state DB.

use super::execute::{Ended, Execution};
use super::options::{self, MigrationOptions};
use super::{
    check_roots_apart, check_same_migration, check_state_location, recorded_migration, CmdResult,
    Session, UsageError,
};
use crate::cli::{GlobalArgs, RunArgs};
use crate::source::SourceSpec;
use crate::state::migration_record::{self, MigrationRecord};
use crate::state::rebind;
use crate::target::TargetSpec;

pub fn command(global: &GlobalArgs, args: &RunArgs) -> CmdResult {
    let state = super::state_path(global)?;
    let rec = recorded_migration(&state)?;
    let source = match (&args.from, &rec) {
        (Some(s), _) => SourceSpec::from_arg(s).map_err(UsageError::from)?,
        (None, Some(r)) => SourceSpec::parse(&r.source).map_err(UsageError::from)?,
        (None, None) => return Err(UsageError::NoMigration(state).into()),
    };
    let target = match (&args.to, rec.as_ref().and_then(|r| r.target.as_ref())) {
        (Some(t), _) => TargetSpec::from_arg(t).map_err(UsageError::from)?,
        (None, Some(t)) => TargetSpec::parse(t).map_err(UsageError::from)?,
        (None, None) => return Err(UsageError::NoTarget.into()),
    };
    // A target may still change while nothing was written to the old one (a typo corrected):
    // its outcomes are forgotten once the session is open.
    let mut rebind_from = None;
    if let Some(rec) = &rec {
        let (new_target, old_target) = (target.to_spec(), rec.target.as_deref());
        let other_target = old_target.is_some_and(|t| t != new_target);
        if other_target && rec.source == source.to_spec() && !super::target_written(&state)? {
            rebind_from = old_target.map(str::to_string);
        } else {
            check_same_migration(&state, rec, &source.to_spec(), Some(&new_target))?;
        }
    }
    let options = MigrationOptions::resolve(
        rec.as_ref().map(|r| &r.options),
        args.formats.as_deref(),
        Some(&args.filter),
        &args.target,
    )?;
    if options.placement.sidecars && !matches!(target, TargetSpec::Dir(_)) {
        return Err(UsageError::SidecarsNeedAFolder {
            target: target.to_spec(),
            recorded: !args.target.sidecars,
        }
        .into());
    }
    check_state_location(&state, source.root(), target.local_root())?;
    check_roots_apart(source.root(), target.local_root())?;
    let http_opts = options::http_options(&args.http, &args.tuning)?;
    let tuning = options::tuning(&args.tuning)?;
    let session = Session::open(&state, "run")?;
    if let Some(old) = &rebind_from {
        let new = target.to_spec();
        let n = rebind::forget_target_outcomes(&mut *session.db.conn()?, session.run, old, &new)?;
        tracing::info!(
            "nothing was written to {old} yet: the migration now goes to {new}; {n} file(s) judged against the old target will be judged again (digests and metadata kept)"
        );
    }
    migration_record::save(
        &*session.db.conn()?,
        &MigrationRecord {
            source: source.to_spec(),
            target: Some(target.to_spec()),
            options: options.to_recorded(),
        },
    )?;
    let ended = Execution {
        session: &session,
        source,
        target,
        options,
        tuning,
        http_opts,
        checksum: args.checksum,
        hash_sha1: args.hash == Some(crate::cli::ExtraDigest::Sha1),
        dry_run: args.dry_run,
        global,
        stats: args.stats,
        rows_first: false,
        failed_at_placement: Default::default(),
        max_duration: args.max_duration.filter(|d| !d.is_zero()),
    }
    .execute();
    let ended = session.finish(ended, |e| (e.exit_code(), e.outcome()))?;
    Ok(Ended::exit_code(ended))
}
