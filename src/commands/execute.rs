//! The run driver that `run` and `retry-failed` share: opens the target, runs the scan and the
//! pipeline at once with signal handling and progress, stops the state writer, and says how the
//! run ended: the summary (counts, skips by reason, failures by kind with the next step each,
//! warnings and where to see them; when interrupted, how far it got and the command that
//! continues). SQLite is read before the async runtime starts and after it ends, never from an
//! async task.

use super::error::{CommandError, Internal, Stop};
use super::options::MigrationOptions;
use super::Session;
use crate::cli::GlobalArgs;
use crate::exit;
use crate::hash::DigestSet;
use crate::pipeline::fault::{Fault, Stage};
use crate::pipeline::progress::{human_bytes, Progress, Reporter};
use crate::pipeline::scan::{scan_source, ScanError, ScanSummary};
use crate::pipeline::{self, Ctx, PipelineConfig, ScanFeed, ScanStatus};
use crate::source::SourceSpec;
use crate::state::writer::{Writer, WriterStats};
use crate::state::{file_log, migration_record, report};
use crate::target::http::HttpOptions;
use crate::target::{Target, TargetSpec};
use crate::tuning::Tuning;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a run that was not stopped by an error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every row is final and none failed (or, for a dry run, every row was looked at).
    Finished,
    /// Every row is final; some failed.
    FailedRows(u64),
    /// Some rows are not final (a transfer left them where they were).
    Unfinished(u64),
    /// A signal stopped it; in-flight work finished or was released.
    Interrupted,
}

impl Ended {
    pub fn exit_code(self) -> i32 {
        match self {
            Ended::Finished => exit::OK,
            Ended::FailedRows(_) | Ended::Unfinished(_) => exit::FAILED_ROWS,
            Ended::Interrupted => exit::INTERRUPTED,
        }
    }

    /// The run record's `outcome`.
    pub fn outcome(self) -> &'static str {
        match self {
            Ended::Finished => "finished",
            Ended::FailedRows(_) => "failed_rows",
            Ended::Unfinished(_) => "unfinished",
            Ended::Interrupted => "interrupted",
        }
    }
}

/// One execution of a migration.
pub struct Execution<'a> {
    pub session: &'a Session,
    pub source: SourceSpec,
    pub target: TargetSpec,
    pub options: MigrationOptions,
    /// Resolved before the session opens, so a bad value changes nothing.
    pub tuning: Tuning,
    pub http_opts: HttpOptions,
    pub checksum: bool,
    /// `--hash sha1`: SHA-1 of every file hashed, whatever the target needs.
    pub hash_sha1: bool,
    pub dry_run: bool,
    /// `-q`, `-v` and `--state` (for the command the summary tells to run).
    pub global: &'a GlobalArgs,
    /// How often a progress line comes without a terminal (`--stats`).
    pub stats: Duration,
    /// `--max-duration`: stop as on Ctrl-C once the run has gone on this long.
    pub max_duration: Option<Duration>,
    /// `retry-failed`: the rows left to do (the failed ones it put back among them) go through
    /// the pipeline first, as recorded, and the scan comes after them, so they start at once
    /// instead of after a rescan of the whole source.
    pub rows_first: bool,
    /// `retry-failed`: the rows it put back after their placement failed (see
    /// `PipelineConfig::failed_at_placement`).
    pub failed_at_placement: Arc<std::collections::HashSet<i64>>,
}

/// What the state DB says before the run starts.
struct Before {
    migration_key: String,
    /// A calibre target's numbering of its books, when an earlier run decided it.
    calibre_book_ids: Option<crate::target::calibre::BookIds>,
    /// Active rows and their bytes.
    totals: (u64, u64),
    /// Rows above this id are the scan's new rows (see [`ScanFeed`]).
    last_old_id: i64,
}

/// What the async part of a run leaves to judge it by.
struct Driven {
    scan: Result<ScanSummary, ScanError>,
    stopped_by: Option<crate::failure::Failure>,
    /// A fault of bookferry's own that stopped the pipeline.
    fault: Option<Fault>,
    writer: WriterStats,
    writer_fatal: Option<Arc<crate::state::writer::WriterError>>,
    signalled: bool,
    progress: Arc<Progress>,
    started: Instant,
}

impl Execution<'_> {
    /// Run to the end (or to a stop); the caller records how it ended.
    pub fn execute(self) -> Result<Ended, CommandError> {
        let (http_opts, tuning) = (&self.http_opts, &self.tuning);
        tracing::info!("{}", self.describe());
        tracing::debug!("{tuning:?}");
        let before = self.read_before()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(tuning.threads.workers)
            .max_blocking_threads(self.blocking_threads(tuning))
            .build()
            .map_err(Internal::Runtime)?;
        let driven = rt.block_on(self.drive(&before, http_opts, tuning));
        rt.shutdown_timeout(Duration::from_secs(1));
        let ended = self.judge(driven?)?;
        Ok(ended)
    }

    /// The one line a run starts with: what goes where, and how.
    fn describe(&self) -> String {
        let placement = &self.options.placement;
        let how = match &self.target {
            TargetSpec::Dir(_) => format!(
                " ({}, layout {})",
                placement.link.as_str(),
                placement.layout.template()
            ),
            TargetSpec::Calibre(_) => format!(" ({})", placement.link.as_str()),
            TargetSpec::Http(_) | TargetSpec::CalibreServer(_) => String::new(),
        };
        format!(
            "{}{} → {}{how}{}",
            if self.dry_run { "dry run: " } else { "" },
            self.source.to_spec(),
            self.target.to_spec(),
            if self.dry_run {
                "; nothing will be written"
            } else {
                ""
            }
        )
    }

    /// What placing a file is called in the summary (the state DB calls every placed file
    /// `uploaded`): copied or linked into a folder, added to a calibre library, uploaded to a
    /// server. (past, infinitive, what its bytes were).
    fn placed_verb(&self) -> (&'static str, &'static str, &'static str) {
        use crate::target::folder::LinkMode;
        let linked = self.options.placement.link != LinkMode::Copy;
        match &self.target {
            TargetSpec::Http(_) => ("uploaded", "upload", "sent"),
            TargetSpec::CalibreServer(_) => ("added to the library", "add", "sent"),
            TargetSpec::Calibre(_) if linked => ("added to the library", "add", "linked"),
            TargetSpec::Calibre(_) => ("added to the library", "add", "written"),
            TargetSpec::Dir(_) if linked => ("linked", "link", "linked"),
            TargetSpec::Dir(_) => ("copied", "copy", "written"),
        }
    }

    fn read_before(&self) -> Result<Before, CommandError> {
        let conn = self.session.db.conn()?;
        Ok(Before {
            migration_key: migration_record::key(&conn)?,
            calibre_book_ids: match self.target {
                TargetSpec::Calibre(_) => migration_record::settled_calibre_book_ids(&conn)?
                    .map(|(keep, max_before)| crate::target::calibre::BookIds { keep, max_before }),
                TargetSpec::Dir(_) | TargetSpec::Http(_) | TargetSpec::CalibreServer(_) => None,
            },
            totals: report::active_totals(&conn)?,
            last_old_id: report::last_file_id(&conn)?,
        })
    }

    /// Threads for blocking work: a local target's are set by its hash groups, an HTTP
    /// target's by its uploads (see `crate::tuning::ThreadTuning`).
    fn blocking_threads(&self, tuning: &Tuning) -> usize {
        match self.target {
            TargetSpec::Dir(_) | TargetSpec::Calibre(_) => tuning.threads.blocking_local,
            TargetSpec::Http(_) | TargetSpec::CalibreServer(_) => tuning.threads.blocking_http,
        }
    }

    async fn open_target(
        &self,
        before: &Before,
        http_opts: &HttpOptions,
        tuning: &Tuning,
    ) -> Result<Arc<Target>, CommandError> {
        let mut placement = self.options.placement.clone();
        placement.migration_key = before.migration_key.clone();
        placement.calibre_book_ids = before.calibre_book_ids;
        let target = Target::open(
            &self.target,
            self.source.root(),
            &placement,
            http_opts,
            tuning.transfers,
            self.dry_run,
        )
        .await?;
        Ok(Arc::new(target))
    }

    /// A calibre target this migration opened for the first time decided how it numbers its
    /// books: recorded before anything is written, so every later run keeps to it.
    async fn record_book_ids(&self, before: &Before, target: &Target) -> Result<(), CommandError> {
        let Some(ids) = target
            .calibre_book_ids()
            .filter(|_| before.calibre_book_ids.is_none())
        else {
            return Ok(());
        };
        let db = self.session.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = db.conn()?;
            migration_record::save_calibre_book_ids(&conn, ids.keep, ids.max_before)
        })
        .await
        .map_err(|source| Internal::Task {
            task: "recording the calibre book ids",
            source,
        })??;
        Ok(())
    }

    /// The async part: target, scan and pipeline at once, then the writer stopped.
    async fn drive(
        &self,
        before: &Before,
        http_opts: &HttpOptions,
        tuning: &Tuning,
    ) -> Result<Driven, CommandError> {
        let started = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let signalled = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_signals(cancel.clone(), signalled.clone()));
        if let Some(limit) = self.max_duration {
            tokio::spawn(stop_after(limit, cancel.clone(), signalled.clone()));
        }

        let target = self.open_target(before, http_opts, tuning).await?;
        self.record_book_ids(before, &target).await?;
        tracing::debug!("target open after {:?}", started.elapsed());
        let progress = Arc::new(Progress::default());
        progress.total.set(before.totals.0);
        progress.total_bytes.set(before.totals.1);

        let flush = if self.dry_run {
            None
        } else {
            pipeline::flush_hook(&target)
        };
        let writer = Writer::start(&self.session.db, self.session.run, flush, tuning.writer)?;
        let cfg = PipelineConfig {
            place_verb: self.placed_verb().1,
            checksum: self.checksum,
            digests: if self.hash_sha1 {
                DigestSet::Blake3AndSha1
            } else {
                target.digests_needed()
            },
            dry_run: self.dry_run,
            keep_duplicates: self.options.keep_duplicates || target.keeps_source_books(),
            tuning: tuning.pipeline,
            failed_at_placement: self.failed_at_placement.clone(),
        };
        let ctx = Arc::new(Ctx::new(
            self.session.db.clone(),
            writer.handle(),
            target,
            cfg,
            progress.clone(),
            cancel.clone(),
        ));
        let reporter = Reporter::start(progress.clone(), self.global.quiet, self.stats);

        if self.rows_first {
            // No scan runs meanwhile, so the pipeline may take any row it has (see `ScanFeed`).
            tracing::debug!("first pass starts after {:?}", started.elapsed());
            let first = tokio::spawn(pipeline::run(ctx.clone(), None));
            // Cancelled (or out of grace): the scan and the pipeline below stop at once.
            self.ran_to_its_end(first, &ctx, &cancel).await;
            // Their moves are committed before the scan reads (and may change) any row.
            ctx.writer.flush().await;
            tracing::debug!("first pass done after {:?}", started.elapsed());
        }
        // The scan and the pipeline run at once: the pipeline takes the scan's new rows as each
        // batch commits, and the rows recorded before once the scan is over.
        let (status_tx, status_rx) = tokio::sync::watch::channel(ScanStatus::default());
        let scan = self.spawn_scan(status_tx, tuning, &cancel, &progress, started);
        let feed = ScanFeed {
            last_old_id: before.last_old_id,
            status: status_rx,
        };
        tracing::debug!("pipeline starts after {:?}", started.elapsed());
        let pipeline = tokio::spawn(pipeline::run(ctx.clone(), Some(feed)));
        self.ran_to_its_end(pipeline, &ctx, &cancel).await;
        reporter.stop();
        tracing::debug!("pipeline done after {:?}", started.elapsed());
        // Over by now, or stopping: the pipeline waits for it unless the run was cancelled.
        let scan = scan.await;
        let stopped_by = ctx.stopped_by();
        let fault = ctx.take_fault();
        drop(ctx);
        // Joining the writer waits for its last commit: not on a runtime worker.
        let (writer, writer_fatal) = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|source| Internal::Task {
                task: "state writer",
                source,
            })?;
        tracing::debug!("state writer done after {:?}", started.elapsed());
        Ok(Driven {
            scan: scan.map_err(|source| Internal::Task {
                task: "scan",
                source,
            })?,
            stopped_by,
            fault,
            writer,
            writer_fatal,
            signalled: signalled.load(Ordering::SeqCst),
            progress,
            started,
        })
    }

    /// Wait for a pipeline to end, or, once the run is cancelled, for its in-flight work up to
    /// the grace period.
    async fn ran_to_its_end(
        &self,
        mut pipeline: tokio::task::JoinHandle<()>,
        ctx: &Ctx,
        cancel: &Arc<AtomicBool>,
    ) {
        tokio::select! {
            res = &mut pipeline => {
                if let Err(e) = res {
                    ctx.abort(Fault::joined(Stage::Pipeline, e));
                }
            }
            _ = grace_after_cancel(cancel.clone()) => {
                tracing::warn!("in-flight work did not finish within 10 s; the next run takes it up");
            }
        }
    }

    /// The scan, on a blocking thread; it tells the pipeline it is over however it ends, and
    /// unless it ended well the run stops (no row the scan has not seen may be claimed).
    fn spawn_scan(
        &self,
        status: tokio::sync::watch::Sender<ScanStatus>,
        tuning: &Tuning,
        cancel: &Arc<AtomicBool>,
        progress: &Arc<Progress>,
        started: Instant,
    ) -> tokio::task::JoinHandle<Result<ScanSummary, ScanError>> {
        let (db, run) = (self.session.db.clone(), self.session.run);
        let (source, formats) = (self.source.clone(), self.options.formats.clone());
        let filter = self.options.filter.clone();
        let sizes = tuning.scan;
        let (cancel, progress) = (cancel.clone(), progress.clone());
        tokio::task::spawn_blocking(move || {
            let mut over = ScanOver {
                status: &status,
                cancel: &cancel,
                ok: false,
            };
            let res = scan_source(
                &db,
                run,
                &source,
                &formats,
                &filter,
                sizes,
                &cancel,
                &mut |added| {
                    progress.total.add(added.rows);
                    if added.bytes >= 0 {
                        progress.total_bytes.add(added.bytes as u64);
                    } else {
                        progress.total_bytes.sub(added.bytes.unsigned_abs());
                    }
                    over.status.send_modify(|s| s.batches += 1);
                },
            );
            if let Ok(summary) = &res {
                over.ok = true;
                progress.total.sub(summary.vanished_active as u64);
                tracing::debug!("scan done after {:?}", started.elapsed());
                // Logged whatever -q says: -q quiets the terminal, never the --log-file.
                tracing::info!("{}", summary.describe());
            }
            res
        })
    }

    /// How the run ended, from the first reason there is: the scan, the writer, a fault of
    /// bookferry's own, a run-wide failure, a signal, then the rows themselves.
    fn judge(&self, d: Driven) -> Result<Ended, CommandError> {
        if d.writer.conflicts > 0 {
            tracing::warn!("{} state move(s) were refused as stale", d.writer.conflicts);
        }
        d.scan?;
        let ended = if let Some(e) = d.writer_fatal {
            Err(Stop::Writer(e).into())
        } else if let Some(f) = d.fault {
            Err(CommandError::Internal(Internal::Pipeline(f)))
        } else if let Some(f) = d.stopped_by {
            Err(Stop::Failure(f).into())
        } else if d.signalled {
            Ok(Ended::Interrupted)
        } else {
            self.rows_left().map_err(CommandError::from)
        };
        // Logged whatever -q says: -q quiets the terminal, never the --log-file.
        self.print_summary(
            &d.progress,
            &d.writer,
            d.started,
            ended.as_ref().ok().copied(),
        );
        ended
    }

    /// How a run that went to its end left the rows.
    fn rows_left(&self) -> Result<Ended, Stop> {
        let conn = self.session.db.conn()?;
        let failed = report::failed_count(&conn)?;
        let (left, _) = report::active_totals(&conn)?;
        Ok(if failed > 0 {
            Ended::FailedRows(failed)
        } else if left > 0 && !self.dry_run {
            Ended::Unfinished(left)
        } else {
            Ended::Finished
        })
    }

    /// The run summary; `ended` is none when the run stopped on an error (printed after it).
    fn print_summary(&self, p: &Progress, w: &WriterStats, started: Instant, ended: Option<Ended>) {
        let (placed, place, bytes) = self.placed_verb();
        if self.dry_run {
            tracing::info!(
                "dry run: would {place} {} file(s) ({}), {} skipped, {} failed; nothing was written to the target",
                p.would_send.get(),
                human_bytes(p.would_send_bytes.get()),
                p.skipped.get(),
                p.failed.get()
            );
            return;
        }
        let c = &w.counters;
        let me = super::command_prefix(self.global);
        let what = match ended {
            Some(Ended::Interrupted) => {
                let done = c.files_uploaded + c.files_skipped + c.files_failed;
                tracing::warn!(
                    "interrupted after {done} of {} files; run `{me} run` to continue",
                    p.total.get()
                );
                "interrupted"
            }
            None => "stopped",
            Some(_) => "done",
        };
        tracing::info!(
            "{what} in {:.1}s: {} {placed} ({} {bytes}), {} skipped, {} failed; {} hashed, {} read from the source; state DB {}",
            started.elapsed().as_secs_f64(),
            c.files_uploaded,
            human_bytes(c.bytes_sent.max(0) as u64),
            c.files_skipped,
            c.files_failed,
            c.files_hashed,
            human_bytes(c.bytes_read.max(0) as u64),
            self.session.db.path().display()
        );
        if let Err(e) = self.print_state(w, &me) {
            tracing::warn!("reading the state DB for the summary: {e}");
        }
        if let Some(Ended::Unfinished(n)) = ended {
            tracing::warn!("{n} file(s) were not finished; run `{me} run` again");
        }
    }

    /// What the migration's rows say now: skips by reason, failures by kind with the next step
    /// each (the advice `status` gives), and the files with warnings.
    fn print_state(&self, w: &WriterStats, me: &str) -> Result<(), crate::state::StateError> {
        let conn = self.session.db.conn()?;
        let skips = report::skips_by_reason(&conn)?;
        if !skips.is_empty() {
            let by: Vec<String> = skips.iter().map(|(k, n)| format!("{k} {n}")).collect();
            tracing::info!("skipped by reason: {}", by.join(", "));
        }
        let failures = report::failures_by_kind(&conn)?;
        if !failures.is_empty() {
            tracing::warn!("failures by kind, and what to do:");
            for (kind, n) in &failures {
                tracing::warn!("  {kind}: {n} — {}", super::status::advice(kind, me));
            }
            tracing::warn!("  (each file and its error: {me} report --failed)");
        }
        let warned = report::files_with_warnings(&conn)?;
        let held = if self.global.quiet || self.global.verbose > 0 {
            0
        } else {
            w.warnings.saturating_sub(file_log::FIRST_FEW)
        };
        if held > 0 {
            tracing::warn!(
                "{warned} file(s) with warnings: … and {held} more warning(s); see `{me} report --warnings`"
            );
        } else if warned > 0 {
            tracing::info!("{warned} file(s) with warnings; see `{me} report --warnings`");
        }
        Ok(())
    }
}

/// Marks the scan over when dropped, after stopping the run if the scan did not end well.
struct ScanOver<'a> {
    status: &'a tokio::sync::watch::Sender<ScanStatus>,
    cancel: &'a AtomicBool,
    ok: bool,
}

impl Drop for ScanOver<'_> {
    fn drop(&mut self) {
        if !self.ok {
            self.cancel.store(true, Ordering::SeqCst);
        }
        self.status.send_modify(|s| s.done = true);
    }
}

/// Resolves 10 s after the run was asked to stop.
async fn grace_after_cancel(cancel: Arc<AtomicBool>) {
    while !cancel.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// `--max-duration`: once the run has gone on `limit`, stop it as the first Ctrl-C does (stop
/// claiming, let in-flight work finish; the run ends interrupted, exit 3).
async fn stop_after(limit: Duration, cancel: Arc<AtomicBool>, signalled: Arc<AtomicBool>) {
    tokio::time::sleep(limit).await;
    if cancel.load(Ordering::SeqCst) {
        return;
    }
    signalled.store(true, Ordering::SeqCst);
    cancel.store(true, Ordering::SeqCst);
    eprintln!(
        "bookferry: stopping: --max-duration {} reached; finishing in-flight files",
        humantime::format_duration(limit)
    );
}

/// First Ctrl-C / SIGTERM: stop claiming, let in-flight work finish. Second: exit at once.
async fn watch_signals(cancel: Arc<AtomicBool>, signalled: Arc<AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    signalled.store(true, Ordering::SeqCst);
    cancel.store(true, Ordering::SeqCst);
    eprintln!("bookferry: stopping; finishing in-flight files (interrupt again to exit at once)");
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("bookferry: exiting now; the next run recovers");
    std::process::exit(exit::INTERRUPTED);
}
