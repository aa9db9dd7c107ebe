//! `verify` of a folder migration recorded with `--sidecars`: each placed book's `.opf` and
//! `.jpg` against what bookferry writes (`target::sidecar_state::check`: the `.opf` there and
//! naming the book, the `.jpg` the cover's bytes, made again from the placed file), a line per
//! book with a finding, and with `--repair sidecars` those written again (`mend`: missing, torn,
//! not the cover; never over a file that is not ours). Not kept in the verify pass: a verify
//! looks at every book's sidecars again (a book whose file is missing is left to its own
//! verdict).

use super::stdout::outln;
use super::{CommandError, UsageError};
use crate::cli::{RepairKind, VerifyArgs};
use crate::pipeline::adopt::payload_of_row;
use crate::state::rows::FileRow;
use crate::state::{migration_record, sidecar_rows};
use crate::target::sidecar_state::{self, Cover, Finding};
use crate::target::sidecars::Sidecars;
use std::path::Path;

/// Books read from the state DB at a time.
const BATCH: usize = 256;

/// A placed book whose sidecars are not what bookferry writes.
pub(super) struct Book {
    row: FileRow,
    findings: Vec<Finding>,
}

/// What a look at every placed book's sidecars found.
pub(super) struct Outcome {
    checked: u64,
    books: Vec<Book>,
}

impl Outcome {
    /// Whether anything was found (verify's exit code for findings).
    pub(super) fn found(&self) -> bool {
        !self.books.is_empty()
    }
}

/// Look at the sidecars of every placed book under `root`, `workers` books at a time.
pub(super) fn check(conn: &rusqlite::Connection, root: &Path) -> Result<Outcome, CommandError> {
    let seed = migration_record::key(conn)?;
    let covers = makes_covers(conn)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut outcome = Outcome {
        checked: 0,
        books: Vec::new(),
    };
    let mut after = 0;
    loop {
        let rows = sidecar_rows::placed_after(conn, after, BATCH)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let per = rows.len().div_ceil(workers).max(1);
        let looked: Vec<(u64, Vec<Book>)> = std::thread::scope(|s| {
            let handles: Vec<_> = rows
                .chunks(per)
                .map(|chunk| s.spawn(|| look_at(chunk, root, &seed, covers)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a sidecar check panicked"))
                .collect()
        });
        for (checked, books) in looked {
            outcome.checked += checked;
            outcome.books.extend(books);
        }
    }
    Ok(outcome)
}

/// Whether the migration makes covers (it was not recorded with `--no-covers`).
fn makes_covers(conn: &rusqlite::Connection) -> Result<bool, CommandError> {
    Ok(!migration_record::load(conn)?.is_some_and(|r| r.options.no_covers))
}

/// The books of `rows` whose sidecars have findings, and how many were looked at.
fn look_at(rows: &[FileRow], root: &Path, seed: &str, covers: bool) -> (u64, Vec<Book>) {
    let mut checked = 0;
    let mut books = Vec::new();
    for row in rows {
        let target_ref = row.target_ref.as_deref().unwrap_or_default();
        let book = root.join(target_ref);
        if !book.is_file() {
            continue;
        }
        checked += 1;
        let (dir, name) = split(root, target_ref);
        // The placed copy holds the recorded content: the source may be gone.
        let p = payload_of_row(row, &book);
        let sidecars = Sidecars::of(&p, seed, covers).reading_book_at(book);
        let findings = match sidecar_state::check(&sidecars, &dir, name) {
            Ok(f) => f,
            Err(e) => vec![Finding::Unreadable(e.to_string())],
        };
        if !findings.is_empty() {
            books.push(Book {
                row: row.clone(),
                findings,
            });
        }
    }
    (checked, books)
}

/// The folder of the book at `target_ref`, and its file name.
fn split<'a>(root: &Path, target_ref: &'a str) -> (std::path::PathBuf, &'a str) {
    let (dir, name) = target_ref.rsplit_once('/').unwrap_or(("", target_ref));
    (root.join(dir), name)
}

/// The summary line and a line per book with findings (the first `listed`).
pub(super) fn print(outcome: &Outcome, listed: usize) {
    outln!(
        "  sidecars: {} books looked at, {} with sidecars not as bookferry writes them",
        outcome.checked,
        outcome.books.len()
    );
    for b in outcome.books.iter().take(listed) {
        let what: Vec<String> = b.findings.iter().map(|f| f.to_string()).collect();
        outln!(
            "  #{} {} → {}: sidecar {}",
            b.row.id,
            b.row.source_ref,
            b.row.target_ref.as_deref().unwrap_or_default(),
            what.join("; ")
        );
    }
    if outcome.books.len() > listed {
        outln!(
            "  … and {} more (-v lists them all)",
            outcome.books.len() - listed
        );
    }
}

/// `--repair sidecars`: after a yes (asked on a terminal; `--yes` otherwise), write again
/// each sidecar found missing, torn or not the cover; one not ours is left alone (said).
pub(super) fn repair(
    conn: &rusqlite::Connection,
    root: &Path,
    outcome: &Outcome,
    args: &VerifyArgs,
) -> Result<(), CommandError> {
    if !args.repair.contains(&RepairKind::Sidecars) {
        return Ok(());
    }
    let chosen: usize = outcome
        .books
        .iter()
        .map(|b| b.findings.iter().filter(|f| f.mendable()).count())
        .sum();
    if chosen == 0 {
        outln!("no sidecars to write again");
        return Ok(());
    }
    if !args.yes {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            return Err(UsageError::NeedsYes { flag: "--yes" }.into());
        }
        let question = format!("write these {chosen} sidecars again?");
        if !super::confirm::ask(&question, "--yes")? {
            outln!("nothing repaired");
            return Ok(());
        }
    }
    let seed = migration_record::key(conn)?;
    let covers = makes_covers(conn)?;
    let mut written = 0;
    for b in &outcome.books {
        let target_ref = b.row.target_ref.as_deref().unwrap_or_default();
        let (dir, name) = split(root, target_ref);
        let book = root.join(target_ref);
        let p = payload_of_row(&b.row, &book);
        let sidecars = Sidecars::of(&p, &seed, covers).reading_book_at(book);
        match sidecar_state::mend(&sidecars, &dir, name, Cover::Compared) {
            Ok(mended) => written += mended.len(),
            Err(e) => outln!("  {target_ref}: cannot write its sidecars: {e}"),
        }
    }
    outln!("{written} sidecars written again");
    Ok(())
}
