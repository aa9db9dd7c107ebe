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
    if let Some(rec) = &rec {
        check_same_migration(&state, rec, &source.to_spec(), Some(&target.to_spec()))?;
    }
    let options = MigrationOptions::resolve(
        rec.as_ref().map(|r| &r.options),
        args.formats.as_deref(),
        Some(&args.filter),
        &args.target,
    )?;
    check_state_location(&state, source.root(), target.local_root())?;
    check_roots_apart(source.root(), target.local_root())?;
    let http_opts = options::http_options(&args.http, &args.tuning)?;
    let tuning = options::tuning(&args.tuning)?;
    let session = Session::open(&state, "run")?;
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
        dry_run: args.dry_run,
        global,
        stats: args.stats,
        max_duration: args.max_duration.filter(|d| !d.is_zero()),
    }
    .execute();
    let ended = session.finish(ended, |e| (e.exit_code(), e.outcome()))?;
    Ok(Ended::exit_code(ended))
}
