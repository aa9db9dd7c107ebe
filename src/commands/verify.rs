//! `bookferry verify`: compares what the state DB says was placed with what the target holds
//! now — missing, or changed (its content differs from the recorded digests) — and, with
//! `--source`, whether the source files changed since they were migrated. It never writes to
//! the target; it takes the state DB's lock like `run`, and records each verdict as it goes
//! (`state::verify_store`), so an interrupted verify continues where it stopped.
//!
//! Folder target: the file at `target_ref` is read once and hashed (SHA-1 and BLAKE3). HTTP
//! target: the server is asked by SHA-1 in batches (the protocol's check call), which can only
//! answer *present* or *missing*.

use super::{options, recorded_migration, CmdResult, Internal, Session, Stop, UsageError};
use crate::cli::{GlobalArgs, RepairKind, TuningArgs, VerifyArgs};
use crate::exit;
use crate::hash::{self, Digests};
use crate::state::verify_store::{self, Found, PassOptions, ToVerify, Verdict};
use crate::target::http::HttpTarget;
use crate::target::TargetSpec;
use std::path::{Path, PathBuf};

/// Rows read from the state DB, checked, and recorded at a time.
const BATCH: usize = 256;
/// Files listed without `-v`.
const LISTED: usize = 20;

pub fn command(global: &GlobalArgs, args: &VerifyArgs) -> CmdResult {
    let state = super::state_path(global)?;
    let Some(rec) = recorded_migration(&state)? else {
        return Err(UsageError::NoMigration(state).into());
    };
    let Some(target) = rec.target.clone() else {
        return Err(UsageError::NoTarget.into());
    };
    let target = TargetSpec::parse(&target).map_err(UsageError::from)?;
    let verbose = global.verbose > 0;
    let me = super::command_prefix(global);
    let (session, ended) = match &target {
        TargetSpec::Dir(root) => {
            let hardlinked = rec.options.link.as_deref() == Some("hardlink");
            let session = Session::open(&state, "verify")?;
            let ended = verify_folder(&session, root, args, hardlinked, verbose, &me);
            (session, ended)
        }
        TargetSpec::Http(base) => {
            if args.source {
                return Err(UsageError::VerifySourceOverHttp.into());
            }
            let no_tuning = TuningArgs::default();
            let http_opts = options::http_options(&args.http, &no_tuning)?;
            let tuning = options::tuning(&no_tuning)?;
            let session = Session::open(&state, "verify")?;
            let ended = verify_http(&session, args, base, &http_opts, &tuning, verbose, &me);
            (session, ended)
        }
        TargetSpec::Calibre(_) => {
            return Err(UsageError::VerifyUnsupported { kind: "a calibre" }.into())
        }
    };
    session.finish(ended, |code| {
        (
            code,
            if code == exit::OK {
                "finished"
            } else {
                "differs"
            },
        )
    })
}

fn verify_folder(
    session: &Session,
    root: &Path,
    args: &VerifyArgs,
    hardlinked: bool,
    verbose: bool,
    me: &str,
) -> CmdResult {
    let opts = PassOptions {
        source: args.source,
        content: false,
    };
    let mut conn = session.db.conn()?;
    let pass = verify_store::begin_pass(&mut conn, session.run, opts)?;
    if pass.already_checked > 0 {
        tracing::info!(
            "continuing the verify pass begun earlier: {} files checked already",
            pass.already_checked
        );
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut after = 0;
    loop {
        let rows = verify_store::unchecked(&conn, pass.id, opts.content, after, BATCH)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let verdicts = check_all(&rows, root, opts, hardlinked, workers);
        verify_store::record(&mut conn, pass.id, &verdicts)?;
    }
    verify_store::end_pass(&conn, pass.id)?;
    let code = print_outcome(
        &conn,
        pass.id,
        &root.display().to_string(),
        opts.source,
        verbose,
        Found::as_str,
    )?;
    repair(session, &mut conn, pass.id, args, hardlinked, me)?;
    Ok(code)
}

/// `--repair`: put the files found missing or changed (as chosen) back to be migrated, after
/// the list above and a yes (asked on a terminal; `--yes` otherwise). Never destroys: the rows
/// lose their `target_ref`, so the next run places a new copy and leaves a changed file as it
/// is.
fn repair(
    session: &Session,
    conn: &mut rusqlite::Connection,
    pass: i64,
    args: &VerifyArgs,
    hardlinked: bool,
    me: &str,
) -> Result<(), super::CommandError> {
    if args.repair.is_empty() {
        return Ok(());
    }
    let mut kinds: Vec<Found> = args
        .repair
        .iter()
        .map(|r| match r {
            RepairKind::Missing => Found::Missing,
            RepairKind::Changed => Found::Changed,
        })
        .collect();
    if hardlinked && kinds.contains(&Found::Changed) {
        println!(
            "not repairing changed files: the target's files are hard links to the source's, so \
             the source changed too (a new copy would carry the same bytes)"
        );
        kinds.retain(|k| *k != Found::Changed);
    }
    let (_, differs) = verify_store::outcome(conn, pass)?;
    let chosen = differs.iter().filter(|d| kinds.contains(&d.target)).count();
    if chosen == 0 {
        println!("nothing to repair");
        return Ok(());
    }
    if !args.yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(UsageError::RepairNeedsYes { files: chosen }.into());
        }
        print!("put these {chosen} files back to be migrated by the next run? [y/N] ");
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing repaired");
            return Ok(());
        }
    }
    let ids = verify_store::requeue(conn, session.run, pass, &kinds)?;
    println!(
        "{} files put back to be migrated; place them with `{me} run`",
        ids.len()
    );
    Ok(())
}

/// The summary (a line per side), the files that differ (the first `LISTED`, all with `-v`),
/// and the exit code. `name` says what a verdict is called for this target.
fn print_outcome(
    conn: &rusqlite::Connection,
    pass: i64,
    target: &str,
    source: bool,
    verbose: bool,
    name: fn(Found) -> &'static str,
) -> CmdResult {
    let (counts, differs) = verify_store::outcome(conn, pass)?;
    let by = |side: &[u64; 4]| {
        Found::ALL
            .iter()
            .filter(|f| side[**f as usize] > 0 || **f == Found::Ok)
            .map(|f| format!("{} {}", side[*f as usize], name(*f)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("verified {} files in {target}", counts.checked);
    println!("  target: {}", by(&counts.target));
    if source {
        println!("  source: {}", by(&counts.source));
    }
    let shown = if verbose { differs.len() } else { LISTED };
    for d in differs.iter().take(shown) {
        let mut what = Vec::new();
        if d.target != Found::Ok {
            what.push(format!("target {}", name(d.target)));
        }
        if let Some(s) = d.source.filter(|s| *s != Found::Ok) {
            what.push(format!("source {}", s.as_str()));
        }
        println!(
            "  #{} {} → {}: {}{}",
            d.file_id,
            d.source_ref,
            d.target_ref,
            what.join(", "),
            d.detail
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        );
    }
    if differs.len() > shown {
        println!("  … and {} more (-v lists them all)", differs.len() - shown);
    }
    Ok(if differs.is_empty() {
        exit::OK
    } else {
        exit::FAILED_ROWS
    })
}

/// An HTTP server can only say whether it holds a content: `ok` is "present" there.
fn http_name(f: Found) -> &'static str {
    match f {
        Found::Ok => "present",
        other => other.as_str(),
    }
}

/// Rows asked about in one check call (the protocol's limit).
const HTTP_BATCH: usize = 1000;

fn verify_http(
    session: &Session,
    args: &VerifyArgs,
    base: &str,
    http_opts: &crate::target::http::HttpOptions,
    tuning: &crate::tuning::Tuning,
    verbose: bool,
    me: &str,
) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Internal::Runtime)?;
    let target = runtime.block_on(HttpTarget::open(base, http_opts, &tuning.transfers))?;
    let mut conn = session.db.conn()?;
    let pass = verify_store::begin_pass(&mut conn, session.run, PassOptions::default())?;
    let mut after = 0;
    loop {
        let rows = verify_store::unchecked(&conn, pass.id, false, after, HTTP_BATCH)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let items: Vec<(i64, String, u64, Option<String>)> = rows
            .iter()
            .map(|r| {
                let name = Path::new(&r.path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (r.id, name, r.size, r.sha1.clone())
            })
            .collect();
        let present = runtime
            .block_on(target.check(&items))
            .map_err(Stop::Failure)?;
        let verdicts: Vec<Verdict> = rows
            .iter()
            .map(|r| Verdict {
                file_id: r.id,
                target: if present.contains(&r.id) {
                    Found::Ok
                } else {
                    Found::Missing
                },
                source: None,
                detail: None,
            })
            .collect();
        verify_store::record(&mut conn, pass.id, &verdicts)?;
    }
    verify_store::end_pass(&conn, pass.id)?;
    let code = print_outcome(&conn, pass.id, base, false, verbose, http_name)?;
    repair(session, &mut conn, pass.id, args, false, me)?;
    Ok(code)
}

/// Check a batch, `workers` files at a time; verdicts in the rows' order.
fn check_all(
    rows: &[ToVerify],
    root: &Path,
    opts: PassOptions,
    hardlinked: bool,
    workers: usize,
) -> Vec<Verdict> {
    let per = rows.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|r| check_one(r, root, opts, hardlinked))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a verify worker panicked"))
            .collect()
    })
}

/// The recorded content of a row, when it was hashed.
fn recorded(r: &ToVerify) -> Option<Digests> {
    Some(Digests {
        sha1: r.sha1.clone()?,
        blake3: r.blake3.clone().unwrap_or_default(),
    })
}

/// Open a file for reading without ever blocking on it: something planted in its place (a FIFO,
/// a device) is not read.
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// What a file looks like now, against what it should hold.
fn look_at(path: &Path, expected: Option<&Digests>) -> (Found, Option<Digests>, Option<String>) {
    match open_regular(path).and_then(hash::hash_reader) {
        Ok((digests, len)) => match expected {
            Some(e) if !e.same_content(&digests) => (
                Found::Changed,
                Some(digests),
                Some(format!("{} bytes, other content", len)),
            ),
            _ => (Found::Ok, Some(digests), None),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Found::Missing, None, None),
        Err(e) => (Found::Unreadable, None, Some(e.to_string())),
    }
}

fn check_one(r: &ToVerify, root: &Path, opts: PassOptions, hardlinked: bool) -> Verdict {
    let target_path: PathBuf = root.join(&r.target_ref);
    let mut expected = recorded(r);
    let mut notes = Vec::new();
    // A name-and-size skip was never hashed: the source says what the target should hold.
    let mut source = None;
    if expected.is_none() || opts.source {
        let (found, digests, detail) = look_at(Path::new(&r.path), recorded(r).as_ref());
        if expected.is_none() {
            expected = digests;
        }
        if opts.source {
            source = Some(found);
            if let Some(d) = detail.filter(|_| found != Found::Ok) {
                notes.push(format!("source: {d}"));
            }
        }
    }
    let (target, _, detail) = look_at(&target_path, expected.as_ref());
    if let Some(d) = detail {
        notes.push(d);
    }
    if target == Found::Changed && hardlinked {
        notes.push("hardlinked to the source: the source changed too".into());
    }
    if target == Found::Changed && r.state == "skipped" {
        notes.push("the target had a file of this name and size before".into());
    }
    Verdict {
        file_id: r.id,
        target,
        source,
        detail: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}
