//! `bookferry scan`: record the source's files in the state DB. Incremental: new files are
//! added, changed ones go back to `pending`, vanished ones are noted; an interrupted scan of a
//! folder resumes by skipping the folders it had finished.

use super::{
    check_same_migration, check_state_location, recorded_migration, CmdResult, Session, UsageError,
};
use crate::cli::{GlobalArgs, ScanArgs};
use crate::exit;
use crate::pipeline::scan::scan_source;
use crate::source::formats::FormatSet;
use crate::source::SourceSpec;
use crate::state::migration_record::{self, MigrationRecord, RecordedOptions};
use crate::tuning::Tuning;
use std::sync::atomic::AtomicBool;

pub fn command(global: &GlobalArgs, args: &ScanArgs) -> CmdResult {
    let state = super::state_path(global)?;
    let source = SourceSpec::from_arg(&args.from).map_err(UsageError::from)?;
    let formats = match &args.formats {
        Some(f) => FormatSet::parse(f).map_err(UsageError::from)?,
        None => FormatSet::default(),
    };
    let rec = recorded_migration(&state)?;
    if let Some(rec) = &rec {
        check_same_migration(&state, rec, &source.to_spec(), None)?;
    }
    let filter_spec = if args.filter.given() {
        super::options::filter_spec(&args.filter)?
    } else {
        rec.as_ref()
            .map(|r| r.options.filter.clone())
            .unwrap_or_default()
    };
    let filter = filter_spec.build().map_err(UsageError::from)?;
    check_state_location(&state, source.root(), None)?;
    let session = Session::open(&state, "scan")?;
    let record = MigrationRecord {
        source: source.to_spec(),
        target: rec.as_ref().and_then(|r| r.target.clone()),
        options: match rec {
            Some(r) => RecordedOptions {
                filter: filter_spec,
                ..r.options
            },
            None => RecordedOptions {
                formats: Some(formats.to_spec()),
                filter: filter_spec,
                ..RecordedOptions::default()
            },
        },
    };
    migration_record::save(&*session.db.conn()?, &record)?;
    let cancel = AtomicBool::new(false);
    let scanned = scan_source(
        &session.db,
        session.run,
        &source,
        &formats,
        &filter,
        Tuning::detect().scan,
        &cancel,
        &mut |_| {},
    )
    .map(|summary| tracing::info!("{}", summary.describe()))
    .map_err(Into::into);
    session.finish(scanned, |()| (exit::OK, "finished"))?;
    Ok(exit::OK)
}
