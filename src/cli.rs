//! The command line (clap derive): every subcommand, flag, help text and environment variable.
//! Paths are taken as the bytes given (`OsString`/`PathBuf`), never required to be UTF-8.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "bookferry",
    version,
    about = "Move large ebook collections into the server or folder where they will live: fast, resumable, auditable.",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The state DB (SQLite): every file's state, hashes, metadata and history.
    /// Default: bookferry.db in the current folder.
    #[arg(long, global = true, env = "BOOKFERRY_STATE", value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also write the log (at debug level) to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record the source's files in the state DB (incremental: new, changed and vanished files).
    Scan(ScanArgs),
    /// Scan, then move every file to the target; without --from/--to, resume the recorded
    /// migration.
    Run(RunArgs),
    /// Counts and bytes per state, failures by kind, rate and ETA. Safe while a run is going.
    Status(StatusArgs),
    /// Put failed rows back where they failed and run them again.
    RetryFailed(RetryArgs),
    /// List files with their state, reason, source and target (default: the failed, the
    /// skipped and those with warnings). Safe while a run is going.
    Report(ReportArgs),
    /// Check that what was migrated is still there, intact: reads each placed file and compares
    /// it with the digests recorded when it was migrated. Never writes to the target; resumable.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The library: a folder (or dir:PATH), or a calibre library (calibre:PATH, or a folder
    /// holding metadata.db).
    #[arg(long, value_name = "SOURCE")]
    pub from: OsString,
    /// Formats to record, comma-separated (e.g. epub,pdf), or `all` for every file.
    /// Default: common ebook formats.
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The library to migrate (see `scan --from`). Default: the recorded source.
    #[arg(long, value_name = "SOURCE")]
    pub from: Option<OsString>,
    /// Where the files go: a folder (dir:PATH or a plain path), or a server speaking the upload
    /// protocol (http(s)://HOST[:PORT][/PREFIX]). Default: the recorded target.
    #[arg(long, value_name = "TARGET")]
    pub to: Option<OsString>,
    /// Formats to migrate (see `scan --formats`).
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Hash every file, even those the target already has by name and size.
    #[arg(long)]
    pub checksum: bool,
    /// Scan, check and hash, but write nothing to the target; report what would be sent.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub tuning: TuningArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TuningArgs {
    /// Transfers in flight at once: a number, or `auto` (default) to start small and adapt to
    /// the server (raised while throughput rises and latency holds, cut on 429/503/timeouts).
    /// Folder targets use 8 for `auto`.
    #[arg(long, value_name = "N|auto")]
    pub transfers: Option<String>,
    /// Files hashed and parsed at once (default: one per CPU, plus one).
    #[arg(long, value_name = "N")]
    pub checkers: Option<usize>,
    /// Memory for files read whole (hashed, parsed and written from one read), e.g. 64M or 1G
    /// (K, M, G as --bwlimit). Default: 1/16 of the machine's memory, at most 256M. Files up
    /// to 8 MiB (less with a small budget) are read so; larger ones are read twice.
    #[arg(long, value_name = "SIZE")]
    pub buffer_memory: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// How files get into a target folder: copy (default), hardlink, symlink or reflink.
    /// Hardlinks share the file with the source: editing the copy in the target (e.g. a
    /// server that writes metadata into books) changes the source file too.
    #[arg(long, value_name = "MODE")]
    pub link: Option<String>,
    /// Where files go inside a target folder. Fields: {author} {authors} {title} {series}
    /// {series_index} {language} {publisher} {year} {ext} {name} {source_path}.
    /// The file name must end with `.{ext}` and no folder may be `..`: other templates are
    /// refused (exit 2), never adjusted. Every field is sanitized (no `/`, control, bidi or
    /// zero-width characters). Default: {author}/{title}/{title} - {author}.{ext}
    #[arg(long, value_name = "TEMPLATE")]
    pub layout: Option<String>,
    /// Copy content duplicates too, instead of skipping them.
    #[arg(long)]
    pub keep_duplicates: bool,
    /// calibre target: when the library already has a book (calibre's rule: same authors and
    /// title, or a shared identifier), add the formats it lacks instead of skipping the file.
    #[arg(long)]
    pub merge_formats: bool,
    /// calibre target: write even while a calibre program (calibre, calibre-server,
    /// calibredb) holds calibre's writer lock. Only when it surely does not use this library.
    #[arg(long)]
    pub ignore_calibre_lock: bool,
}

/// Options of the HTTP target. The token is read from $BOOKFERRY_TOKEN or --token-file, never
/// from the command line.
#[derive(Debug, Args, Clone, Default)]
pub struct HttpArgs {
    /// File holding the server's bearer token (should be mode 0600). Or set $BOOKFERRY_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file to trust instead of the system's CAs: the server's own certificate (trusted
    /// when presented exactly, whatever its names and dates) or its CA's (full checks).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate (dangerous: prefer --ca-cert).
    #[arg(long)]
    pub insecure: bool,
    /// Retries per file per run for transient errors (5xx, timeouts, resets, 429/503).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Upload bandwidth limit, e.g. 500K, 20M, 1G (bytes per second).
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// At most N requests per second.
    #[arg(long, value_name = "N")]
    pub tpslimit: Option<f64>,
    /// Give up on a request when its upload makes no progress (and no reply comes) for this long.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stall_timeout: u64,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output (see README for the keys).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Only failures of this kind (repeatable), e.g. --kind target_write.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    #[command(flatten)]
    pub tuning: TuningArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Files that failed, with the error.
    #[arg(long)]
    pub failed: bool,
    /// Files skipped, with the reason.
    #[arg(long)]
    pub skipped: bool,
    /// Content duplicates, each with the file it duplicates (grouped by that file).
    #[arg(long)]
    pub duplicates: bool,
    /// Files migrated (or not) with warnings: problems met reading them.
    #[arg(long)]
    pub warnings: bool,
    /// Files migrated, with where they went.
    #[arg(long)]
    pub uploaded: bool,
    /// Every file, whatever its state.
    #[arg(long)]
    pub all: bool,
    /// Only files with this failure kind or skip reason (repeatable), e.g. --reason duplicate.
    #[arg(long, value_name = "REASON")]
    pub reason: Vec<String>,
    /// Only files that run N moved (`bookferry status` shows the runs).
    #[arg(long, value_name = "N")]
    pub run: Option<i64>,
    /// table (for a terminal), csv or json (for scripts; the columns and keys are in README), or
    /// html (one page about the whole migration, charts and lists; with --output FILE).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
    /// One self-contained page about the whole migration (needs --output unless piped).
    Html,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also check the source files: changed or gone since they were migrated (folder targets).
    #[arg(long)]
    pub source: bool,
    /// Put the files found missing (or changed) at the target back to be migrated by the next
    /// run (repeatable). Never destroys: a changed file stays, the new copy goes beside it.
    #[arg(long, value_enum, value_name = "KIND")]
    pub repair: Vec<RepairKind>,
    /// With --repair: do not ask (needed when not on a terminal).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepairKind {
    Missing,
    Changed,
}
