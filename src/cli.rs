//! The command line (clap derive): every subcommand, flag, help text and environment variable.
//! Paths are taken as the bytes given (`OsString`/`PathBuf`), never required to be UTF-8.

use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

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
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The state DB (SQLite): every file's state, hashes, metadata and history.
    /// Default: bookferry.db in the current folder.
    #[arg(long, global = true, env = "BOOKFERRY_STATE", value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Print nothing but errors (the --log-file still gets everything).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output. Default: the summary, each failure, and the first 5 warnings then
    /// their count. -v: also one line per file as it reaches its final state (source → target,
    /// or why it was skipped or failed) and every warning. -vv: debug (the stages). -vvv: trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also write the log to this file (appended), at debug level whatever -q or -v say.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// text, or json: one JSON object per line (time, level, message; a file's lines add
    /// file_id, source, state, reason, target), on standard error and in the --log-file.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record the source's files in the state DB (incremental: new, changed and vanished files).
    #[command(after_help = "Examples:
  bookferry scan --from ~/Books
  bookferry scan --from 'calibre:~/Calibre Library' --formats epub,pdf")]
    Scan(ScanArgs),
    /// Scan, then move every file to the target; without --from/--to, resume the recorded
    /// migration.
    #[command(after_help = "Examples:
  bookferry run --from ~/Books --to /srv/library
  bookferry run --from 'calibre:~/Calibre Library' --to calibre:/srv/calibre
  bookferry run --from ~/Comics --to /srv/komga --layout komga --include '*.cbz'
  BOOKFERRY_TOKEN=... bookferry run --from ~/Books --to https://books.example.org/api
  bookferry run          # resume the recorded migration")]
    Run(RunArgs),
    /// Counts and bytes per state, failures by kind, rate and ETA. Safe while a run is going.
    #[command(after_help = "Examples:
  bookferry status
  bookferry status --json | jq .counts")]
    Status(StatusArgs),
    /// Put failed rows back where they failed and run them again.
    #[command(after_help = "Examples:
  bookferry retry-failed
  bookferry retry-failed --kind transient_exhausted --kind target_write")]
    RetryFailed(RetryArgs),
    /// List files with their state, reason, source and target (default: the failed, the
    /// skipped and those with warnings). Safe while a run is going.
    #[command(after_help = "Examples:
  bookferry report --skipped --reason duplicate
  bookferry report --warnings --format csv -o warnings.csv
  bookferry report --all --format json | jq length")]
    Report(ReportArgs),
    /// Check that what was migrated is still there, intact: reads each placed file and compares
    /// it with the digests recorded when it was migrated. Never writes to the target; resumable.
    #[command(after_help = "Examples:
  bookferry verify
  bookferry verify --source -v
  bookferry verify --repair missing --yes && bookferry run")]
    Verify(VerifyArgs),
    /// Start over: rename the state DB to a dated backup beside it (its history kept), so the
    /// next run starts fresh. Never touches the source or the target.
    #[command(after_help = "Examples:
  bookferry forget
  bookferry --state other.db forget --yes")]
    Forget(ForgetArgs),
    /// Print the shell completion script (bash, zsh, fish, powershell, elvish); see README.
    #[command(after_help = "Example:
  bookferry completions bash > ~/.local/share/bash-completion/completions/bookferry")]
    Completions(CompletionsArgs),
    /// Print the man page (of bookferry, or of one subcommand: `bookferry man run`).
    #[command(after_help = "Example:
  bookferry man run | man -l -")]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// A subcommand whose page to print (e.g. run); none: bookferry's own page.
    pub subcommand: Option<String>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Do not ask (needed when not on a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The library: a folder (or dir:PATH), or a calibre library (calibre:PATH, or a folder
    /// holding metadata.db).
    #[arg(long, value_name = "SOURCE")]
    pub from: OsString,
    /// Formats to record, comma-separated (e.g. epub,pdf), or `all` for every file.
    /// Default: epub kepub pdf mobi azw azw3 kfx fb2 fb2.zip djvu cbz cbr cb7 txt rtf doc docx
    /// odt lit pdb chm htmlz.
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Which files move, beside `--formats` (recorded with the migration; given again, they
/// replace the recorded ones). Globs match the path relative to the source root: `*` and `?`
/// stay within a folder, `**` crosses folders, and a glob without `/` matches the file's name
/// at any depth (`*.pdf`); a file moves when it matches an --include (if any is given), no
/// --exclude, is listed by --files-from (if given), and its size is within the limits.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Only files matching this glob (repeatable), e.g. --include '*.epub' --include 'comics/**'.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// No file matching this glob (repeatable), e.g. --exclude 'drafts/**'.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Exclude the globs in this file, one per line (`#` comments).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Option<PathBuf>,
    /// Only the files listed in this file, one path per line, relative to the source root.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,
    /// Globs and --files-from ignore case.
    #[arg(long)]
    pub ignore_case: bool,
    /// Only files of at least this size (rclone's units: 100K, 1.5M, 2G; KiB without one).
    #[arg(long, value_name = "SIZE")]
    pub min_size: Option<String>,
    /// Only files of at most this size (as --min-size).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// calibre source: only books with this tag (repeatable; any of them).
    #[arg(long, value_name = "TAG")]
    pub include_tag: Vec<String>,
    /// calibre source: no book with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub exclude_tag: Vec<String>,
}

impl FilterArgs {
    /// Whether any filter flag was given.
    pub fn given(&self) -> bool {
        !self.include.is_empty()
            || !self.exclude.is_empty()
            || self.exclude_from.is_some()
            || self.files_from.is_some()
            || self.ignore_case
            || self.min_size.is_some()
            || self.max_size.is_some()
            || !self.include_tag.is_empty()
            || !self.exclude_tag.is_empty()
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The library to migrate (see `scan --from`). Default: the recorded source.
    #[arg(long, value_name = "SOURCE")]
    pub from: Option<OsString>,
    /// Where the files go: a folder (dir:PATH or a plain path), a calibre library
    /// (calibre:PATH), or a server speaking the upload protocol (http(s)://HOST[:PORT][/PREFIX]).
    /// Prefixes are case-insensitive; other `scheme://` and `name:` forms are refused.
    /// Default: the recorded target.
    #[arg(long, value_name = "TARGET")]
    pub to: Option<OsString>,
    /// Formats to migrate (see `scan --formats`).
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Hash every file, even those the target already has by name and size.
    #[arg(long)]
    pub checksum: bool,
    /// Also compute this digest of every file the run hashes, and record it in the state DB
    /// (`files.sha1`). BLAKE3 is always computed (duplicates and `verify` use it); SHA-1 only
    /// for an HTTP target, which knows content by it, or when asked here.
    #[arg(long, value_name = "DIGEST", value_enum)]
    pub hash: Option<ExtraDigest>,
    /// Scan, check and hash, but write nothing to the target; report what would be copied,
    /// linked, added or uploaded. Refuses what the real run would refuse at its start.
    #[arg(long)]
    pub dry_run: bool,
    /// Without a terminal, print a progress line this often, e.g. 30s, 5m, 1h (0: never).
    /// On a terminal the progress bars are drawn instead.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub stats: Duration,
    /// Stop cleanly (as on Ctrl-C: in-flight files finish, exit 3) once the run has gone on
    /// this long, e.g. 6h or 45m; the next run continues. For nightly windows.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// A digest `run --hash` adds to BLAKE3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExtraDigest {
    /// SHA-1 (40 hex digits in `files.sha1`).
    Sha1,
}

#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Tuning")]
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
#[command(next_help_heading = "Placement")]
pub struct TargetArgs {
    /// How files get into a target folder: copy (default), hardlink, symlink or reflink.
    /// Hardlinks share the file with the source: editing the copy in the target (e.g. a
    /// server that writes metadata into books) changes the source file too.
    #[arg(long, value_name = "MODE")]
    pub link: Option<String>,
    /// Where files go inside a target folder: a template, or a preset (kavita, komga,
    /// audiobookshelf). Fields: {author} {authors} {title} {series} {series_index} {language}
    /// {publisher} {year} {ext} {name} {source_path}; {field|fallback} when empty (e.g.
    /// {series|Standalone}), {field:02} pads a number (1.5 → 01.5), and {?…} disappears when a
    /// field inside is empty (e.g. {?{series}/}). The file name must end with `.{ext}` and no
    /// folder may be `..`: other templates are refused (exit 2), never adjusted. Every field is
    /// sanitized (no `/`, control, bidi or zero-width characters).
    /// Default: {author}/{title}/{title} - {author}.{ext}
    #[arg(long, value_name = "TEMPLATE|PRESET")]
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
    /// calibre target: give new books no cover made from the file (calibre's: a PDF's first
    /// page, the embedded cover image of other formats). A calibre source's covers still come.
    /// With --sidecars: no `<book>.jpg`.
    #[arg(long)]
    pub no_covers: bool,
    /// folder target: beside each book, the sidecars calibre's "save to disk" writes, read by
    /// Audiobookshelf, Komga and Jellyfin: `<book>.opf` (its metadata) and `<book>.jpg` (its
    /// cover, when it has one), `<book>` being the book file's name without its extension.
    #[arg(long)]
    pub sidecars: bool,
}

/// Options of the HTTP target. The token is read from $BOOKFERRY_TOKEN or --token-file, never
/// from the command line.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "HTTP target")]
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
    /// calibre-server target: the user to log in as (or USER@ in the URL).
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
    /// calibre-server target: file holding the user's password (should be mode 0600). Or set
    /// $BOOKFERRY_CALIBRE_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
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
    #[arg(long, value_name = "KIND", value_parser = failure_kinds())]
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
    /// Also check the source files: changed or gone since they were migrated (folder and
    /// calibre targets; an HTTP target's rows carry no path to compare).
    #[arg(long)]
    pub source: bool,
    /// Also look inside the files skipped because the target had a file of that name and
    /// size (`target_has_name_size`): same content, or other content (never migrated).
    #[arg(long)]
    pub content: bool,
    /// Put the files found missing (or changed) at the target back to be migrated by the next
    /// run (repeatable); `content`: the name-and-size skips with other content (--content).
    /// Never destroys: in a folder a changed file stays and the new copy goes beside it; in a
    /// calibre library a damaged file is first moved out to LIBRARY.bookferry-damaged/, and a
    /// format calibre itself rewrote is left alone.
    #[arg(long, value_enum, value_name = "KIND")]
    pub repair: Vec<RepairKind>,
    /// With --repair: do not ask (needed when not on a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Without a terminal, print a progress line this often, e.g. 30s, 5m (0: never). On a
    /// terminal a bar shows files, bytes and an ETA.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub stats: Duration,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RepairKind {
    /// Files gone from the target.
    Missing,
    /// Files whose content differs from what was placed (never a calibre rewrite).
    Changed,
    /// Name-and-size skips whose target file holds other content, or is gone (`--content`).
    Content,
    /// A folder migration with `--sidecars`: a book's `.opf` or `.jpg` missing, torn or not
    /// the cover, written again (never over a file that is not bookferry's).
    Sidecars,
}

/// A duration that is not one (e.g. `30s`, `5m`, `1h30m`, `500ms`, `0`).
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: a duration such as 30s, 5m, 1h30m, 500ms, or 0")]
pub struct BadDuration(String);

/// `30s`, `5m`, `1h30m`, `500ms` (humantime's forms), or a bare number of seconds (`90`, `0`).
pub fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    let text = s.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|_| BadDuration(s.to_string()))
}

/// `--kind`'s values: the failure kinds, listed in `--help`.
fn failure_kinds() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::failure::FailureKind::ALL.map(|k| k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_read_as_a_user_writes_them() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs()).ok();
        assert_eq!(secs("30s"), Some(30));
        assert_eq!(secs("5m"), Some(300));
        assert_eq!(secs("1h30m"), Some(5400));
        assert_eq!(secs("90"), Some(90));
        assert_eq!(secs("0"), Some(0));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        for bad in ["", "soon", "5x", "m", "10s5", "-1s"] {
            assert_eq!(secs(bad), None, "{bad}");
        }
    }

    fn help_of(sub: &str) -> String {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.find_subcommand_mut(sub)
            .expect("a subcommand")
            .render_long_help()
            .to_string()
    }

    /// `--help` names the default formats (those the scan uses), lists `--kind`'s values, and
    /// shows examples for every subcommand.
    #[test]
    fn help_shows_defaults_kinds_and_examples() {
        let flat = help_of("scan")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let defaults = crate::source::formats::DEFAULT_FORMATS.join(" ");
        assert!(flat.contains(&defaults), "{flat}");
        let run = help_of("run");
        assert!(
            run.contains("Global options:\n      --state <FILE>"),
            "{run}"
        );
        // Each group under its own heading: the run's own flags before the filters.
        let at = |s: &str| run.find(s).unwrap_or_else(|| panic!("{s} missing: {run}"));
        assert!(
            at("--dry-run") < at("Filters:") && at("Filters:") < at("--include"),
            "{run}"
        );
        assert!(at("Placement:") < at("--layout") && at("HTTP target:") < at("--token-file"));
        let retry = help_of("retry-failed");
        for k in crate::failure::FailureKind::ALL {
            assert!(retry.contains(k.as_str()), "{k:?} not listed: {retry}");
        }
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name().to_string();
            if name != "help" {
                assert!(help_of(&name).contains("Example"), "{name} has no example");
            }
        }
    }
}
