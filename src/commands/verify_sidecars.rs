//! `verify` of a folder migration recorded with `--sidecars`: each placed book's `.opf` and
//! `.jpg` against what bookferry writes (`target::sidecar_state::check`: the `.opf` there and
//! naming the book, the `.jpg` the cover's bytes, made again from the placed file). Looked at
//! batch by batch after the books' own check, for the books found `ok` (one missing or changed
//! is left to its own verdict), and kept in the verify pass (`verified.sidecars`, schema version
//! 10), so an interrupted verify goes on with the books it had not looked at. A line per book
//! with a finding; with `--repair sidecars` those written again (`mend`: missing, torn, not the
//! cover; never over a file that is not ours), each book looked at once more first.

use super::stdout::outln;
use super::{CommandError, UsageError};
use crate::cli::{RepairKind, VerifyArgs};
use crate::pipeline::adopt::payload_of_row;
use crate::state::rows::FileRow;
use crate::state::verify_store::{self, SidecarVerdict};
use crate::state::{migration_record, sidecar_rows};
use crate::target::sidecar_state::{self, Cover, Finding};
use crate::target::sidecars::Sidecars;
use std::path::Path;

/// What every look at a migration's sidecars needs: where the books are, the migration's key
/// (a book's uuid is made from it) and whether it makes covers.
pub(super) struct Looker<'a> {
    root: &'a Path,
    seed: String,
    covers: bool,
    workers: usize,
}

impl<'a> Looker<'a> {
    pub(super) fn new(conn: &rusqlite::Connection, root: &'a Path) -> Result<Self, CommandError> {
        Ok(Looker {
            root,
            seed: migration_record::key(conn)?,
            covers: makes_covers(conn)?,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    /// The sidecar verdicts of the placed books among `ids`, `workers` books at a time; a
    /// book whose file is not there gets none.
    pub(super) fn look(
        &self,
        conn: &rusqlite::Connection,
        ids: &[i64],
    ) -> Result<Vec<SidecarVerdict>, CommandError> {
        let rows = sidecar_rows::placed_of(conn, ids)?;
        let per = rows.len().div_ceil(self.workers).max(1);
        let verdicts = std::thread::scope(|s| {
            let handles: Vec<_> = rows
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|row| {
                                let found = self.findings(row)?;
                                Some(SidecarVerdict {
                                    file_id: row.id,
                                    findings: (!found.is_empty()).then(|| one_line(&found)),
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a sidecar check panicked"))
                .collect()
        });
        Ok(verdicts)
    }

    /// What is wrong with the sidecars of `row`'s book; `None` when its file is not there.
    fn findings(&self, row: &FileRow) -> Option<Vec<Finding>> {
        let target_ref = row.target_ref.as_deref().unwrap_or_default();
        let book = self.root.join(target_ref);
        if !book.is_file() {
            return None;
        }
        Some(match self.with_sidecars(row, sidecar_state::check) {
            Ok(f) => f,
            Err(e) => vec![Finding::Unreadable(e.to_string())],
        })
    }

    /// `act` on what bookferry writes beside `row`'s book, in its folder under its name: the
    /// placed copy holds the recorded content (the source may be gone), so the cover is made
    /// from it.
    fn with_sidecars<R>(&self, row: &FileRow, act: impl FnOnce(&Sidecars, &Path, &str) -> R) -> R {
        let target_ref = row.target_ref.as_deref().unwrap_or_default();
        let book = self.root.join(target_ref);
        let (dir, name) = split(self.root, target_ref);
        let p = payload_of_row(row, &book);
        let sidecars = Sidecars::of(&p, &self.seed, self.covers).reading_book_at(book);
        act(&sidecars, &dir, name)
    }
}

/// Whether the migration makes covers (it was not recorded with `--no-covers`).
fn makes_covers(conn: &rusqlite::Connection) -> Result<bool, CommandError> {
    Ok(!migration_record::load(conn)?.is_some_and(|r| r.options.no_covers))
}

/// A book's findings as `sidecars_detail` keeps them and `verify` prints them.
fn one_line(found: &[Finding]) -> String {
    let what: Vec<String> = found.iter().map(|f| f.to_string()).collect();
    what.join("; ")
}

/// The folder of the book at `target_ref`, and its file name.
fn split<'a>(root: &Path, target_ref: &'a str) -> (std::path::PathBuf, &'a str) {
    let (dir, name) = target_ref.rsplit_once('/').unwrap_or(("", target_ref));
    (root.join(dir), name)
}

/// The summary line of `pass`'s sidecar verdicts and a line per book with findings (the first
/// `listed`); whether there were any (verify's exit code for findings).
pub(super) fn print(
    conn: &rusqlite::Connection,
    pass: i64,
    listed: usize,
) -> Result<bool, CommandError> {
    let (looked, differ) = verify_store::sidecar_outcome(conn, pass)?;
    outln!(
        "  sidecars: {looked} books looked at, {} with sidecars not as bookferry writes them",
        differ.len()
    );
    for b in differ.iter().take(listed) {
        outln!(
            "  #{} {} → {}: sidecar {}",
            b.file_id,
            b.source_ref,
            b.target_ref,
            b.findings
        );
    }
    if differ.len() > listed {
        outln!("  … and {} more (-v lists them all)", differ.len() - listed);
    }
    Ok(!differ.is_empty())
}

/// `--repair sidecars`: the books `pass` found with sidecars not as bookferry writes them are
/// looked at once more (what is there now is what is mended); after a yes (asked on a terminal;
/// `--yes` otherwise), each sidecar missing, torn or not the cover is written again; one not
/// ours is left alone (said).
pub(super) fn repair(
    conn: &rusqlite::Connection,
    root: &Path,
    pass: i64,
    args: &VerifyArgs,
) -> Result<(), CommandError> {
    if !args.repair.contains(&RepairKind::Sidecars) {
        return Ok(());
    }
    let looker = Looker::new(conn, root)?;
    let (_, differ) = verify_store::sidecar_outcome(conn, pass)?;
    let ids: Vec<i64> = differ.iter().map(|b| b.file_id).collect();
    let books: Vec<FileRow> = sidecar_rows::placed_of(conn, &ids)?;
    let chosen: usize = books
        .iter()
        .filter_map(|row| looker.findings(row))
        .map(|found| found.iter().filter(|f| f.mendable()).count())
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
    let mut written = 0;
    for row in &books {
        let mended = looker.with_sidecars(row, |s, dir, name| {
            sidecar_state::mend(s, dir, name, Cover::Compared)
        });
        match mended {
            Ok(mended) => written += mended.len(),
            Err(e) => outln!(
                "  {}: cannot write its sidecars: {e}",
                row.target_ref.as_deref().unwrap_or_default()
            ),
        }
    }
    outln!("{written} sidecars written again");
    Ok(())
}
