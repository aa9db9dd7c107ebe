//! `bookferry verify`: compares what the state DB says was placed with what the target holds
//! now — missing, or changed (its content differs from the recorded digests) — and, with
//! `--source`, whether the source files changed since they were migrated. It never writes to
//! the target; it takes the state DB's lock like `run`, and records each verdict as it goes
//! (`state::verify_store`), so an interrupted verify continues where it stopped.
//!
//! Folder target: the file at `target_ref` is read once and hashed (BLAKE3, compared with the
//! recorded one; SHA-1 too where the row has no BLAKE3). HTTP target: the server is asked by
//! SHA-1 in batches (the protocol's check call), which can only answer *present* or *missing*.
//!
//! `--content` also looks at the rows skipped because the target had a file of that name and
//! size (nothing read them when they were skipped): the source file is hashed and compared with
//! the target's files of that name and size (a folder), or the server is asked for its SHA-1
//! (HTTP). Other content there means the book was never migrated. Calibre target:
//! `verify_calibre`. A folder migration with `--sidecars`: the books' sidecars too
//! (`verify_sidecars`).

use super::stdout::outln;
use super::verify_progress::VerifyProgress;
use super::{options, recorded_migration, CmdResult, Internal, Session, Stop, UsageError};
use crate::cli::{GlobalArgs, RepairKind, TuningArgs, VerifyArgs};
use crate::exit;
use crate::hash::{self, Digests};
use crate::state::verify_store::{self, Found, NameSizeCheck, PassOptions, ToVerify, Verdict};
use crate::target::folder::TEMP_PREFIX;
use crate::target::http::HttpTarget;
use crate::target::TargetSpec;
use std::collections::HashMap;
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
    let has_sidecars = rec.options.sidecars && matches!(target, TargetSpec::Dir(_));
    if args.repair.contains(&RepairKind::Sidecars) && !has_sidecars {
        return Err(UsageError::RepairSidecarsWithout.into());
    }
    let content = args.content || args.repair.contains(&RepairKind::Content);
    let shared = Shared {
        args,
        opts: PassOptions {
            source: args.source,
            content,
        },
        verbose: global.verbose > 0,
        quiet: global.quiet,
        me: super::command_prefix(global),
    };
    let (session, ended) = match &target {
        TargetSpec::Dir(root) => {
            let hardlinked = rec.options.link.as_deref() == Some("hardlink");
            let session = Session::open(&state, "verify")?;
            let ended = verify_folder(&session, &shared, root, hardlinked, rec.options.sidecars);
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
            let ended = verify_http(&session, &shared, base, &http_opts, &tuning);
            (session, ended)
        }
        TargetSpec::CalibreServer(server) => {
            if content {
                return Err(UsageError::VerifyContentCalibre.into());
            }
            let no_tuning = TuningArgs::default();
            let http_opts = options::http_options(&args.http, &no_tuning)?;
            let session = Session::open(&state, "verify")?;
            let ended = super::verify_calibre_server::verify(
                &session,
                &shared,
                server,
                &http_opts,
                rec.options.merge_formats,
            );
            (session, ended)
        }
        TargetSpec::Calibre(root) => {
            if content {
                return Err(UsageError::VerifyContentCalibre.into());
            }
            let view = super::verify_calibre::open(root)?;
            let session = Session::open(&state, "verify")?;
            let ended = super::verify_calibre::verify(&session, &view, &shared, &rec.options);
            (session, ended)
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

/// What a verify of any kind of target is given.
pub(super) struct Shared<'a> {
    pub(super) args: &'a VerifyArgs,
    /// What the pass checks besides the placed files.
    pub(super) opts: PassOptions,
    pub(super) verbose: bool,
    quiet: bool,
    /// The command to paste, with `--state` when it is not the default.
    pub(super) me: String,
}

impl Shared<'_> {
    /// Progress shown for `total` (files, bytes) to check.
    pub(super) fn progress(&self, total: (u64, u64)) -> VerifyProgress {
        VerifyProgress::start(total, self.quiet, self.args.stats)
    }
}

/// The pass this verify works in: a new one, or the one an interrupted verify left (said so).
pub(super) fn begin_pass(
    conn: &mut rusqlite::Connection,
    run: i64,
    opts: PassOptions,
) -> Result<verify_store::Pass, super::CommandError> {
    let pass = verify_store::begin_pass(conn, run, opts)?;
    if pass.already_checked > 0 {
        tracing::info!(
            "continuing the verify pass begun earlier: {} files checked already",
            pass.already_checked
        );
    }
    Ok(pass)
}

fn verify_folder(
    session: &Session,
    shared: &Shared,
    root: &Path,
    hardlinked: bool,
    sidecars: bool,
) -> CmdResult {
    let (args, opts, verbose, me) = (shared.args, shared.opts, shared.verbose, &shared.me);
    let mut conn = session.db.conn()?;
    let pass = begin_pass(&mut conn, session.run, opts)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let names = if opts.content {
        NameIndex::of(root)
    } else {
        NameIndex::default()
    };
    let looker = match sidecars {
        true => Some(super::verify_sidecars::Looker::new(&conn, root)?),
        false => None,
    };
    let mut shown = shared.progress(verify_store::left_to_check(&conn, pass.id, opts.content)?);
    let mut after = 0;
    loop {
        let rows = verify_store::unchecked(&conn, pass.id, opts.content, after, BATCH)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let checked = check_all(&rows, root, opts, hardlinked, &names, workers);
        let (verdicts, compared): (Vec<Verdict>, Vec<Option<NameSizeCheck>>) =
            checked.into_iter().unzip();
        let compared: Vec<NameSizeCheck> = compared.into_iter().flatten().collect();
        // The sidecars of the books found whole (placed by bookferry, not name-and-size skips).
        let sidecar_verdicts = match &looker {
            Some(looker) => {
                let whole: Vec<i64> = rows
                    .iter()
                    .zip(&verdicts)
                    .filter(|(r, v)| !r.name_size_skip && v.target == Found::Ok)
                    .map(|(r, _)| r.id)
                    .collect();
                looker.look(&conn, &whole)?
            }
            None => Vec::new(),
        };
        verify_store::record_all(&mut conn, pass.id, &verdicts, &compared, &sidecar_verdicts)?;
        shown.add(rows.len() as u64, rows.iter().map(|r| r.size).sum());
    }
    shown.finish();
    verify_store::end_pass(&conn, pass.id)?;
    let mut code = print_outcome(
        &conn,
        pass.id,
        &root.display().to_string(),
        opts,
        verbose,
        Found::as_str,
    )?;
    let listed = if verbose { usize::MAX } else { LISTED };
    if sidecars && super::verify_sidecars::print(&conn, pass.id, listed)? {
        code = exit::FAILED_ROWS;
    }
    let kinds = placed_kinds_to_repair(args, hardlinked, "target");
    repair(session, &mut conn, pass.id, args, &kinds, me)?;
    if sidecars {
        super::verify_sidecars::repair(&conn, root, pass.id, args)?;
    }
    Ok(code)
}

/// `--repair`: put the files found missing or changed (as chosen) back to be migrated, after
/// the list above and a yes (asked on a terminal; `--yes` otherwise). Never destroys: the rows
/// lose their `target_ref`, so the next run places a new copy and leaves a changed file as it
/// is. `content`: the name-and-size skips found with other content (or gone) go back too; the
/// next run places each beside the target's file of that name.
/// `--repair`: put back the placed files whose verdict is one of `kinds` (see
/// [`placed_kinds_to_repair`]), and with `content` the name-and-size skips that differ.
pub(super) fn repair(
    session: &Session,
    conn: &mut rusqlite::Connection,
    pass: i64,
    args: &VerifyArgs,
    kinds: &[Found],
    me: &str,
) -> Result<(), super::CommandError> {
    if args.repair.iter().all(|k| *k == RepairKind::Sidecars) {
        return Ok(());
    }
    let content = args.repair.contains(&RepairKind::Content);
    let (_, differs) = verify_store::outcome(conn, pass)?;
    let chosen = differs
        .iter()
        .filter(|d| {
            if d.name_size_skip {
                content && matches!(d.target, Found::Changed | Found::Missing)
            } else {
                kinds.contains(&d.target)
            }
        })
        .count();
    if chosen == 0 {
        outln!("nothing to repair");
        return Ok(());
    }
    if !confirmed(args, chosen)? {
        return Ok(());
    }
    let mut ids = verify_store::requeue(conn, session.run, pass, kinds)?;
    if content {
        ids.extend(verify_store::requeue_name_size(conn, session.run, pass)?);
    }
    outln!(
        "{} files put back to be migrated; place them with `{me} run`",
        ids.len()
    );
    Ok(())
}

/// The verdicts on placed files that `--repair` chose (missing, changed). With `--link
/// hardlink` a changed file means the source changed too: said once (`what` is the target, or
/// the library), and not repaired.
pub(super) fn placed_kinds_to_repair(
    args: &VerifyArgs,
    hardlinked: bool,
    what: &str,
) -> Vec<Found> {
    let mut kinds: Vec<Found> = args
        .repair
        .iter()
        .filter_map(|r| match r {
            RepairKind::Missing => Some(Found::Missing),
            RepairKind::Changed => Some(Found::Changed),
            // Name-and-size skips, not placed files (`--repair content`).
            RepairKind::Content => None,
            // Not files to migrate again: written again by `verify_sidecars`.
            RepairKind::Sidecars => None,
        })
        .collect();
    if hardlinked && kinds.contains(&Found::Changed) {
        outln!(
            "not repairing changed files: the {what}'s files are hard links to the source's, so \
             the source changed too (a new copy would carry the same bytes)"
        );
        kinds.retain(|k| *k != Found::Changed);
    }
    kinds
}

/// `--yes`, or a yes asked on a terminal, to put `chosen` files back; an error without a
/// terminal to ask on.
pub(super) fn confirmed(args: &VerifyArgs, chosen: usize) -> Result<bool, super::CommandError> {
    use std::io::IsTerminal;
    if args.yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError::RepairNeedsYes { files: chosen }.into());
    }
    let yes = super::confirm::ask(
        &format!("put these {chosen} files back to be migrated by the next run?"),
        "--yes",
    )?;
    if !yes {
        outln!("nothing repaired");
    }
    Ok(yes)
}

/// The summary (a line per side), the files that differ (the first `LISTED`, all with `-v`),
/// and the exit code. `name` says what a verdict is called for this target.
pub(super) fn print_outcome(
    conn: &rusqlite::Connection,
    pass: i64,
    target: &str,
    opts: PassOptions,
    verbose: bool,
    name: fn(Found) -> &'static str,
) -> CmdResult {
    let (counts, differs) = verify_store::outcome(conn, pass)?;
    let by = |side: &[u64], name: fn(Found) -> &'static str| {
        Found::ALL
            .iter()
            .filter(|f| side[**f as usize] > 0 || **f == Found::Ok)
            .map(|f| format!("{} {}", side[*f as usize], name(*f)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    outln!("verified {} files in {target}", counts.checked);
    outln!("  target: {}", by(&counts.target, name));
    if opts.content {
        outln!(
            "  skipped for name and size: {}",
            by(&counts.name_size, name_size_name)
        );
    }
    if opts.source {
        outln!("  source: {}", by(&counts.source, Found::as_str));
    }
    let shown = if verbose { differs.len() } else { LISTED };
    for d in differs.iter().take(shown) {
        let mut what = Vec::new();
        if d.name_size_skip && d.target != Found::Ok {
            what.push(format!(
                "skipped for name and size, {}",
                name_size_name(d.target)
            ));
        } else if d.target != Found::Ok {
            what.push(format!("target {}", name(d.target)));
        }
        if let Some(s) = d.source.filter(|s| *s != Found::Ok) {
            what.push(format!("source {}", s.as_str()));
        }
        let target = match (&d.compared_ref, d.name_size_skip) {
            (Some(c), true) => c.as_str(),
            (None, true) => "(no file of this name and size)",
            (_, false) => d.target_ref.as_str(),
        };
        outln!(
            "  #{} {} → {}: {}{}",
            d.file_id,
            d.source_ref,
            target,
            what.join(", "),
            d.detail
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default()
        );
    }
    if differs.len() > shown {
        outln!("  … and {} more (-v lists them all)", differs.len() - shown);
    }
    Ok(if differs.iter().any(verify_store::Differs::fails) {
        exit::FAILED_ROWS
    } else {
        exit::OK
    })
}

/// What a name-and-size skip's comparison found (`--content`): `changed` means the target's
/// file of that name and size holds other bytes — the book was never migrated.
fn name_size_name(f: Found) -> &'static str {
    match f {
        Found::Ok => "same content",
        Found::Changed => "other content (never migrated)",
        Found::Missing => "gone from the target",
        _ => f.as_str(),
    }
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
    shared: &Shared,
    base: &str,
    http_opts: &crate::target::http::HttpOptions,
    tuning: &crate::tuning::Tuning,
) -> CmdResult {
    let (args, content, verbose, me) =
        (shared.args, shared.opts.content, shared.verbose, &shared.me);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Internal::Runtime)?;
    let target = runtime.block_on(HttpTarget::open(base, http_opts, &tuning.transfers))?;
    let mut conn = session.db.conn()?;
    let opts = PassOptions {
        source: false,
        content,
    };
    let pass = begin_pass(&mut conn, session.run, opts)?;
    let mut shown = shared.progress(verify_store::left_to_check(&conn, pass.id, content)?);
    let mut after = 0;
    loop {
        let rows = verify_store::unchecked(&conn, pass.id, content, after, HTTP_BATCH)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        // A name-and-size skip is asked about by its source's SHA-1 (hashed here): the server
        // said it had the name and size, never whether it had these bytes.
        let sources: HashMap<i64, (Found, Option<Digests>, Option<String>)> = rows
            .iter()
            .filter(|r| r.name_size_skip)
            .map(|r| (r.id, look_at(Path::new(&r.path), None)))
            .collect();
        let items: Vec<(i64, String, u64, Option<String>)> = rows
            .iter()
            .filter(|r| sources.get(&r.id).is_none_or(|(_, d, _)| d.is_some()))
            .map(|r| {
                let name = Path::new(&r.path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let sha1 = match sources.get(&r.id) {
                    Some((_, d, _)) => d.as_ref().and_then(|d| d.sha1.clone()),
                    None => r.sha1.clone(),
                };
                (r.id, name, r.size, sha1)
            })
            .collect();
        let present = runtime
            .block_on(target.check(&items))
            .map_err(Stop::Failure)?;
        let verdicts: Vec<Verdict> = rows
            .iter()
            .map(|r| {
                let here = present.contains(&r.id);
                match sources.get(&r.id) {
                    None => Verdict {
                        file_id: r.id,
                        target: if here { Found::Ok } else { Found::Missing },
                        source: None,
                        detail: None,
                    },
                    Some((found, None, detail)) => Verdict {
                        file_id: r.id,
                        target: Found::Unreadable,
                        source: Some(*found),
                        detail: Some(format!(
                            "the source file is {}: nothing to compare{}",
                            found.as_str(),
                            detail
                                .as_deref()
                                .map(|d| format!(" ({d})"))
                                .unwrap_or_default()
                        )),
                    },
                    Some((_, Some(_), _)) => Verdict {
                        file_id: r.id,
                        target: if here { Found::Ok } else { Found::Changed },
                        source: None,
                        detail: (!here).then(|| {
                            "the server had a file of this name and size, but not these bytes"
                                .to_string()
                        }),
                    },
                }
            })
            .collect();
        let compared: Vec<NameSizeCheck> = rows
            .iter()
            .filter(|r| r.name_size_skip)
            .map(|r| NameSizeCheck {
                file_id: r.id,
                compared_ref: None,
            })
            .collect();
        verify_store::record_all(&mut conn, pass.id, &verdicts, &compared, &[])?;
        shown.add(rows.len() as u64, rows.iter().map(|r| r.size).sum());
    }
    shown.finish();
    verify_store::end_pass(&conn, pass.id)?;
    let code = print_outcome(&conn, pass.id, base, opts, verbose, http_name)?;
    let kinds = placed_kinds_to_repair(args, false, "target");
    repair(session, &mut conn, pass.id, args, &kinds, me)?;
    Ok(code)
}

/// Check a batch, `workers` files at a time; verdicts in the rows' order.
fn check_all(
    rows: &[ToVerify],
    root: &Path,
    opts: PassOptions,
    hardlinked: bool,
    names: &NameIndex,
    workers: usize,
) -> Vec<(Verdict, Option<NameSizeCheck>)> {
    let per = rows.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|r| {
                            if r.name_size_skip {
                                let (v, c) = check_name_size(r, root, opts, names);
                                (v, Some(c))
                            } else {
                                (check_one(r, root, opts, hardlinked), None)
                            }
                        })
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

/// The recorded content of a row, when it was hashed: its BLAKE3, and its SHA-1 where one was
/// computed (a row of an older bookferry may have a SHA-1 alone).
pub(super) fn recorded(r: &ToVerify) -> Option<Digests> {
    if r.sha1.is_none() && r.blake3.is_none() {
        return None;
    }
    Some(Digests {
        sha1: r.sha1.clone(),
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

/// Which digests a check computes. BLAKE3 alone tells whether the content is what was recorded
/// (no collision is known for it); SHA-1 on top doubled verify's time (half of its CPU went to
/// SHA-1 on a warm 2,000-file pair), so both are computed only where the row has no BLAKE3 or
/// the SHA-1 itself is wanted (an HTTP server is asked by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Blake3,
    Both,
}

impl Need {
    /// What comparing with `expected` needs.
    fn to_compare(expected: Option<&Digests>) -> Need {
        match expected {
            Some(e) if !e.blake3.is_empty() => Need::Blake3,
            _ => Need::Both,
        }
    }
}

/// Hash a file read once, with a buffer kept per thread (a fresh 1 MiB one per file showed as
/// 5% of verify's CPU, zeroing it). With `Need::Blake3` the SHA-1 is left empty.
fn hash_file(mut file: std::fs::File, need: Need) -> std::io::Result<(Digests, u64)> {
    use std::io::Read;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut h = hash::Hasher::new(match need {
            Need::Both => hash::DigestSet::Blake3AndSha1,
            Need::Blake3 => hash::DigestSet::Blake3,
        });
        loop {
            let n = match file.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
        }
        let len = h.len();
        Ok((h.finish(), len))
    })
}

/// Whether `got` (hashed as [`Need::to_compare`] said) is the content `expected` records.
fn same_content(expected: &Digests, got: &Digests) -> bool {
    expected.same_content(got)
}

/// What a file looks like now, against what it should hold.
pub(super) fn look_at(
    path: &Path,
    expected: Option<&Digests>,
) -> (Found, Option<Digests>, Option<String>) {
    look_at_needing(path, expected, Need::to_compare(expected))
}

fn look_at_needing(
    path: &Path,
    expected: Option<&Digests>,
    need: Need,
) -> (Found, Option<Digests>, Option<String>) {
    match open_regular(path).and_then(|f| hash_file(f, need)) {
        Ok((digests, len)) => match expected {
            Some(e) if !same_content(e, &digests) => (
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
    Verdict {
        file_id: r.id,
        target,
        source,
        detail: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// The files a target folder holds, by name and size: where a name-and-size skip's file is
/// looked for. The run's cheap check matched a file's base name and size anywhere in the
/// target, comparing names as the target's filesystem does; verify (which writes nothing, so
/// probes nothing) compares them without case, and the content decides.
#[derive(Debug, Default)]
struct NameIndex(HashMap<(String, u64), Vec<String>>);

impl NameIndex {
    /// Walk the target once (bookferry's own temporary files left out).
    fn of(root: &Path) -> NameIndex {
        let mut index: HashMap<(String, u64), Vec<String>> = HashMap::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let child = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                if kind.is_dir() {
                    stack.push((entry.path(), child));
                } else if !name.starts_with(TEMP_PREFIX) {
                    if let Ok(m) = std::fs::metadata(entry.path()) {
                        index
                            .entry((name.to_lowercase(), m.len()))
                            .or_default()
                            .push(child);
                    }
                }
            }
        }
        for found in index.values_mut() {
            found.sort();
        }
        NameIndex(index)
    }

    fn get(&self, name: &str, size: u64) -> &[String] {
        self.0
            .get(&(name.to_lowercase(), size))
            .map_or(&[], |v| v.as_slice())
    }
}

/// `--content` on a row skipped because the target had a file of its name and size: hash the
/// source, then the target's files of that name and size until one holds the same bytes
/// (`ok`); other bytes in all of them is `changed` (the book was never migrated), none left is
/// `missing`.
fn check_name_size(
    r: &ToVerify,
    root: &Path,
    opts: PassOptions,
    names: &NameIndex,
) -> (Verdict, NameSizeCheck) {
    let name = Path::new(&r.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let candidates = names.get(&name, r.size);
    let verdict = |target, source, compared: Option<&String>, detail: Option<String>| {
        (
            Verdict {
                file_id: r.id,
                target,
                source,
                detail,
            },
            NameSizeCheck {
                file_id: r.id,
                compared_ref: compared.cloned(),
            },
        )
    };
    let (found, digests, detail) = look_at_needing(Path::new(&r.path), None, Need::Blake3);
    let source = opts.source.then_some(found);
    let Some(digests) = digests else {
        return verdict(
            Found::Unreadable,
            Some(found),
            None,
            Some(format!(
                "the source file is {}: nothing to compare{}",
                found.as_str(),
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            )),
        );
    };
    let mut other = None;
    let mut unreadable = None;
    for c in candidates {
        match look_at(&root.join(c), Some(&digests)) {
            (Found::Ok, _, _) => return verdict(Found::Ok, source, Some(c), None),
            (Found::Changed, _, _) => {
                other.get_or_insert(c);
            }
            (Found::Unreadable, _, d) => {
                unreadable.get_or_insert((c, d));
            }
            _ => {}
        }
    }
    match (other, unreadable) {
        (Some(c), _) => verdict(Found::Changed, source, Some(c), None),
        (None, Some((c, d))) => verdict(Found::Unreadable, source, Some(c), d),
        (None, None) => verdict(
            Found::Missing,
            source,
            None,
            Some("the target has no file of this name and size any more".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAKE3 alone (where the row has one) finds what both digests find, and agrees with the
    /// pipeline's hashing; without a recorded BLAKE3 both are computed.
    #[test]
    fn a_recorded_blake3_is_checked_alone_and_other_bytes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let (same, other) = (dir.path().join("same"), dir.path().join("other"));
        let bytes = vec![7u8; (1 << 20) + 3];
        std::fs::write(&same, &bytes).unwrap();
        let mut changed = bytes.clone();
        changed[1 << 20] ^= 1;
        std::fs::write(&other, &changed).unwrap();
        let recorded = hash::hash_bytes(&bytes);
        assert_eq!(Need::to_compare(Some(&recorded)), Need::Blake3);
        let (found, got, _) = look_at(&same, Some(&recorded));
        assert_eq!(found, Found::Ok);
        let got = got.unwrap();
        assert_eq!((got.sha1.as_deref(), &got.blake3), (None, &recorded.blake3));
        assert_eq!(look_at(&other, Some(&recorded)).0, Found::Changed);
        // No BLAKE3 recorded: SHA-1 too, and it decides.
        let sha1_only = Digests {
            blake3: String::new(),
            ..recorded.clone()
        };
        let (found, got, _) = look_at(&other, Some(&sha1_only));
        assert_eq!(found, Found::Changed);
        assert_eq!(got.unwrap(), hash::hash_bytes(&changed));
        assert_eq!(look_at(&same, Some(&sha1_only)).0, Found::Ok);
    }
}
