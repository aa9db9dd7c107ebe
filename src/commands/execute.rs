//! What `run` and `retry-failed` share: resolving the migration's options (recorded ones, with
//! the command line's overrides), checking the target, scanning, driving the pipeline with
//! signal handling and progress, and turning the outcome into an exit code.

use super::scan::scan_source;
use super::{CommandError, Session};
use crate::cli::{HttpArgs, TargetArgs, TuningArgs};
use crate::exit;
use crate::failure::FailureKind;
use crate::pipeline::progress::{human_bytes, Progress, Reporter};
use crate::pipeline::{self, Ctx, PipelineConfig, ScanFeed, ScanStatus};
use crate::source::formats::FormatSet;
use crate::source::SourceSpec;
use crate::state::migration_record::{RecordedOptions, OPTIONS_VERSION};
use crate::state::runs::active_list;
use crate::state::writer::Writer;
use crate::target::folder::LinkMode;
use crate::target::http::{HttpOptions, Token, Transfers};
use crate::target::layout::{Layout, DEFAULT_LAYOUT};
use crate::target::limit::parse_rate;
use crate::target::{OpenError, PlacementOptions, Target, TargetSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The options a migration is recorded with.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    pub formats: FormatSet,
    pub placement: PlacementOptions,
    pub keep_duplicates: bool,
}

impl MigrationOptions {
    /// Recorded options, overridden by what the command line gives again.
    pub fn resolve(
        recorded: Option<&RecordedOptions>,
        formats: Option<&str>,
        target: &TargetArgs,
    ) -> Result<MigrationOptions, CommandError> {
        let none = RecordedOptions::default();
        let rec = recorded.unwrap_or(&none);
        let formats = match formats.or(rec.formats.as_deref()) {
            Some(f) => FormatSet::parse(f).map_err(CommandError::usage)?,
            None => FormatSet::default(),
        };
        if let (Some(given), Some(old)) = (&target.layout, &rec.layout) {
            if given != old {
                tracing::warn!(
                    "--layout changed from {old:?}: files already placed stay where they are"
                );
            }
        }
        let layout_src = target.layout.as_deref().or(rec.layout.as_deref());
        let layout =
            Layout::parse(layout_src.unwrap_or(DEFAULT_LAYOUT)).map_err(CommandError::usage)?;
        let link = LinkMode::parse(
            target
                .link
                .as_deref()
                .or(rec.link.as_deref())
                .unwrap_or("copy"),
        )
        .map_err(CommandError::usage)?;
        let keep_duplicates = target.keep_duplicates || rec.keep_duplicates;
        let merge_formats = target.merge_formats || rec.merge_formats;
        Ok(MigrationOptions {
            formats,
            placement: PlacementOptions {
                layout,
                link,
                merge_formats,
                ignore_calibre_lock: target.ignore_calibre_lock,
                migration_key: String::new(),
            },
            keep_duplicates,
        })
    }

    /// The options as the state DB records them.
    pub fn to_recorded(&self) -> RecordedOptions {
        RecordedOptions {
            version: OPTIONS_VERSION,
            formats: Some(self.formats.to_spec()),
            layout: Some(self.placement.layout.template().to_string()),
            link: Some(self.placement.link.as_str().to_string()),
            keep_duplicates: self.keep_duplicates,
            merge_formats: self.placement.merge_formats,
        }
    }
}

/// One execution of a migration.
pub struct Execution<'a> {
    pub session: &'a Session,
    pub source: SourceSpec,
    pub target: TargetSpec,
    pub options: MigrationOptions,
    pub tuning: TuningArgs,
    pub http: HttpArgs,
    pub checksum: bool,
    pub dry_run: bool,
    pub quiet: bool,
}

impl Execution<'_> {
    /// Run to the end (or to a stop) and return the exit code; the run record is closed.
    pub fn execute(self) -> Result<i32, CommandError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .max_blocking_threads(self.blocking_threads())
            .build()
            .map_err(|e| CommandError::usage(format!("starting the runtime: {e}")))?;
        let res = rt.block_on(self.execute_async());
        rt.shutdown_timeout(Duration::from_secs(1));
        res
    }

    /// Threads for blocking work. A local target's whole run is CPU and local-disk work on
    /// blocking threads (the scan; hashing, at most `checkers` groups at once; placing), so a few
    /// more threads than hash groups keep the cores busy, and more only add thread switches
    /// (measured, 2 cores, 2,000 files: copy 560 ms with up to 64 threads, 537 ms with 5; the
    /// calibre target the same or better). An HTTP target reads the files it streams on blocking
    /// threads, one read per chunk of every upload in flight: those must not queue behind the
    /// hash groups.
    fn blocking_threads(&self) -> usize {
        match self.target {
            TargetSpec::Dir(_) | TargetSpec::Calibre(_) => {
                // The scan's thread, and one for the rest (content queries, placing).
                self.checkers() + 2
            }
            TargetSpec::Http(_) => 64,
        }
    }

    /// Hash groups at once: `--checkers`, else the pipeline's default.
    fn checkers(&self) -> usize {
        self.tuning
            .checkers
            .map_or_else(|| PipelineConfig::default().checkers, |n| n.max(1))
    }

    async fn execute_async(self) -> Result<i32, CommandError> {
        let session = self.session;
        let started = Instant::now();
        let cancel = Arc::new(AtomicBool::new(false));
        let signalled = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_signals(cancel.clone(), signalled.clone()));

        let http_opts = match http_options(&self.http, &self.tuning) {
            Ok(o) => o,
            Err(e) => {
                session.end(e.code, "usage");
                return Err(e);
            }
        };
        let mut placement = self.options.placement.clone();
        placement.migration_key = {
            let conn = session.db.conn()?;
            crate::state::migration_record::key(&conn)?
        };
        let target = match Target::open(
            &self.target,
            self.source.root(),
            &placement,
            &http_opts,
            self.dry_run,
        )
        .await
        {
            Ok(t) => {
                tracing::debug!("target open after {:?}", started.elapsed());
                Arc::new(t)
            }
            Err(OpenError::Unusable(m)) => {
                session.end(exit::NOTHING_DONE, "target unusable");
                return Err(CommandError::usage(m));
            }
            Err(OpenError::Auth(m)) => {
                session.end(exit::AUTH, "auth");
                return Err(CommandError {
                    code: exit::AUTH,
                    message: m,
                });
            }
        };

        let progress = Arc::new(Progress::default());
        let (total, total_bytes) = active_totals(session)?;
        progress.total.set(total);
        progress.total_bytes.set(total_bytes);

        let flush = if self.dry_run {
            None
        } else {
            target.flush_hook()
        };
        let writer = Writer::start(&session.db, session.run, flush)?;
        let cfg = PipelineConfig {
            checksum: self.checksum,
            dry_run: self.dry_run,
            keep_duplicates: self.options.keep_duplicates || target.dedups_by_book(),
            checkers: self.checkers(),
            ..Default::default()
        };
        let ctx = Arc::new(Ctx::new(
            session.db.clone(),
            writer.handle(),
            target,
            cfg,
            progress.clone(),
            cancel.clone(),
        ));
        let reporter = Reporter::start(progress.clone(), self.quiet, Duration::from_secs(5));

        // The scan and the pipeline run at once: the pipeline takes the scan's new rows as each
        // batch commits, and the rows recorded before once the scan is over.
        let last_old_id = last_row_id(session)?;
        let (status_tx, status_rx) = tokio::sync::watch::channel(ScanStatus::default());
        let scan = {
            let (db, run, quiet) = (session.db.clone(), session.run, self.quiet);
            let (source, formats) = (self.source.clone(), self.options.formats.clone());
            let (cancel, progress) = (cancel.clone(), progress.clone());
            tokio::task::spawn_blocking(move || {
                // Tells the pipeline the scan is over however it ends; unless it ended well, the
                // run stops (no row the scan has not seen may be claimed).
                let mut over = ScanOver {
                    status: &status_tx,
                    cancel: &cancel,
                    ok: false,
                };
                let res = scan_source(&db, run, &source, &formats, &cancel, &mut |added| {
                    progress.total.add(added.rows);
                    if added.bytes >= 0 {
                        progress.total_bytes.add(added.bytes as u64);
                    } else {
                        progress.total_bytes.sub(added.bytes.unsigned_abs());
                    }
                    over.status.send_modify(|s| s.batches += 1);
                });
                if let Ok(summary) = &res {
                    over.ok = true;
                    progress.total.sub(summary.vanished_failed as u64);
                    tracing::debug!("scan done after {:?}", started.elapsed());
                    if !quiet {
                        tracing::info!("{}", summary.describe());
                    }
                }
                res
            })
        };
        let feed = ScanFeed {
            last_old_id,
            status: status_rx,
        };
        tracing::debug!("pipeline starts after {:?}", started.elapsed());
        let mut pipeline = tokio::spawn(pipeline::run(ctx.clone(), Some(feed)));
        tokio::select! {
            _ = &mut pipeline => {}
            _ = grace_after_cancel(cancel.clone()) => {
                tracing::warn!("in-flight work did not finish within 10 s; the next run takes it up");
            }
        }
        reporter.stop();
        tracing::debug!("pipeline done after {:?}", started.elapsed());
        // Over by now, or stopping: the pipeline waits for it unless the run was cancelled.
        let scan = scan
            .await
            .unwrap_or_else(|e| Err(CommandError::usage(format!("internal: scan task: {e}"))));
        let stopped_by = ctx.stopped_by();
        drop(ctx);
        let (wstats, writer_fatal) = writer.finish();
        tracing::debug!("state writer done after {:?}", started.elapsed());
        if wstats.conflicts > 0 {
            tracing::warn!("{} state move(s) were refused as stale", wstats.conflicts);
        }

        if let Err(e) = scan {
            session.end(e.code, "scan failed");
            return Err(e);
        }
        let (code, outcome, message) = if let Some(e) = writer_fatal {
            (
                exit::STOPPED,
                "state_db_error",
                Some(format!("stopped: the state DB could not be written: {e}")),
            )
        } else if let Some(f) = stopped_by {
            let code = if f.kind == FailureKind::Auth {
                exit::AUTH
            } else {
                exit::STOPPED
            };
            (
                code,
                f.kind.as_str(),
                Some(format!("stopped: {}", f.message)),
            )
        } else if signalled.load(Ordering::SeqCst) {
            (
                exit::INTERRUPTED,
                "interrupted",
                Some("interrupted; run `bookferry run` again to continue".to_string()),
            )
        } else {
            let failed = count(session, "state = 'failed'")?;
            let left = count(session, &format!("state IN ({})", active_list()))?;
            if failed > 0 {
                (exit::FAILED_ROWS, "failed_rows", Some(format!("{failed} file(s) failed; see `bookferry status` and retry with `bookferry retry-failed`")))
            } else if left > 0 && !self.dry_run {
                (
                    exit::FAILED_ROWS,
                    "unfinished",
                    Some(format!("{left} file(s) were not finished; run again")),
                )
            } else {
                (exit::OK, "finished", None)
            }
        };
        session.end(code, outcome);
        if !self.quiet {
            let secs = started.elapsed().as_secs_f64();
            let p = &progress;
            if self.dry_run {
                tracing::info!(
                    "dry run: would send {} file(s) ({}), {} skipped, {} failed; nothing was written to the target",
                    p.would_send.get(),
                    human_bytes(p.would_send_bytes.get()),
                    p.skipped.get(),
                    p.failed.get()
                );
            } else {
                let c = &wstats.counters;
                tracing::info!(
                    "done in {secs:.1}s: {} uploaded ({} sent), {} skipped, {} failed; {} hashed, {} read from the source; state DB {}",
                    c.files_uploaded,
                    human_bytes(c.bytes_sent.max(0) as u64),
                    c.files_skipped,
                    c.files_failed,
                    c.files_hashed,
                    human_bytes(c.bytes_read.max(0) as u64),
                    session.db.path().display()
                );
            }
        }
        match message {
            Some(m)
                if code != exit::OK && code != exit::FAILED_ROWS && code != exit::INTERRUPTED =>
            {
                Err(CommandError { code, message: m })
            }
            Some(m) => {
                tracing::warn!("{m}");
                Ok(code)
            }
            None => Ok(code),
        }
    }
}

/// The HTTP target's options from the command line and the environment.
pub fn http_options(http: &HttpArgs, tuning: &TuningArgs) -> Result<HttpOptions, CommandError> {
    let transfers = match tuning.transfers.as_deref() {
        None | Some("auto") => Transfers::Auto,
        Some(n) => {
            Transfers::Fixed(n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                CommandError::usage(format!("--transfers {n:?}: a number above 0, or auto"))
            })?)
        }
    };
    let bwlimit = match &http.bwlimit {
        Some(r) => Some(parse_rate(r).map_err(CommandError::usage)?),
        None => None,
    };
    if http.tpslimit.is_some_and(|t| t <= 0.0) {
        return Err(CommandError::usage("--tpslimit must be more than 0"));
    }
    Ok(HttpOptions {
        token: load_token(http)?,
        ca_cert: http.ca_cert.clone(),
        insecure: http.insecure,
        retries: http.retries,
        stall_timeout: Duration::from_secs(http.stall_timeout.max(1)),
        bwlimit,
        tpslimit: http.tpslimit,
        transfers,
        ..HttpOptions::default()
    })
}

/// The token from `$BOOKFERRY_TOKEN`, else `--token-file` (warning if others can read it).
fn load_token(http: &HttpArgs) -> Result<Option<Token>, CommandError> {
    if let Ok(t) = std::env::var("BOOKFERRY_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Some(Token::new(t.trim().to_string())));
        }
    }
    let Some(path) = &http.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| CommandError::usage(format!("--token-file {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "--token-file {}: readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    m.permissions().mode() & 0o777
                );
            }
        }
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(CommandError::usage(format!(
            "--token-file {}: the file is empty",
            path.display()
        )));
    }
    Ok(Some(Token::new(token.to_string())))
}

fn active_totals(session: &Session) -> Result<(u64, u64), CommandError> {
    let conn = session.db.conn()?;
    let (n, b): (i64, i64) = conn
        .query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files WHERE state IN ({})",
                active_list()
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(crate::state::StateError::from)?;
    Ok((n as u64, b as u64))
}

/// The highest row id before the scan adds rows (ids only grow: rows are never deleted).
fn last_row_id(session: &Session) -> Result<i64, CommandError> {
    let conn = session.db.conn()?;
    let id: i64 = conn
        .query_row("SELECT COALESCE(MAX(id), 0) FROM files", [], |r| r.get(0))
        .map_err(crate::state::StateError::from)?;
    Ok(id)
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

fn count(session: &Session, cond: &str) -> Result<u64, CommandError> {
    let conn = session.db.conn()?;
    let n: i64 = conn
        .query_row(
            &format!("SELECT COUNT(*) FROM files WHERE {cond}"),
            [],
            |r| r.get(0),
        )
        .map_err(crate::state::StateError::from)?;
    Ok(n as u64)
}

/// Resolves 10 s after the run was asked to stop.
async fn grace_after_cancel(cancel: Arc<AtomicBool>) {
    while !cancel.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
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
