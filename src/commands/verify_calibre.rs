//! `bookferry verify` of a calibre target. Each file this migration placed is looked for in its
//! book — found by the book's id and checked by its uuid, never by its path, since calibre and
//! Calibre-Web move a book's folder when its title or author is edited — and its format file,
//! where `metadata.db` says it is now, is read once and hashed: gone → `missing` (so is a book
//! whose id is gone, or now holds another book), other bytes → `changed`, or
//! `changed_by_calibre` when calibre's own record accounts for them
//! (`target::calibre::verify::calibre_rewrote`), reported and not a failure. The library is
//! only read; the pass is recorded and resumed as the folder verify's.
//!
//! `--repair missing|changed`: a damaged file is first moved out of the library (to
//! `<library>.bookferry-damaged/`, named in the output), then its row goes back to be migrated
//! keeping the file's path in its book, so the next run puts a good copy into the same book
//! (calibre holds one file per format per book: the damaged one must leave first). A book that
//! is gone is made again by the next run. A file calibre rewrote is never repaired.

use super::stdout::outln;
use super::verify::{
    begin_pass, confirmed, look_at, placed_kinds_to_repair, print_outcome, recorded, Shared,
};
use super::{CmdResult, CommandError, Session, Stop, UsageError};
use crate::cli::VerifyArgs;
use crate::state::migration_record::{self, RecordedOptions};
use crate::state::rows::FileRow;
use crate::state::verify_store::{self, Found, PassOptions, PutBack, ToVerify, Verdict};
use crate::target::calibre::verify::{
    book_uuid, calibre_rewrote, damaged_folder, move_out, placed_book_id, BookNow, FormatAt,
    LibraryView, MigratedFile,
};
use std::collections::HashMap;
use std::path::Path;

/// Rows read from the state DB, checked, and recorded at a time.
const BATCH: usize = 256;

/// Open the library to verify (exit 2 when it cannot be read: nothing was checked).
pub(super) fn open(root: &Path) -> Result<LibraryView, CommandError> {
    LibraryView::open(root).map_err(|e| UsageError::VerifyCalibre(e).into())
}

pub(super) fn verify(
    session: &Session,
    view: &LibraryView,
    shared: &Shared,
    options: &RecordedOptions,
) -> CmdResult {
    let (args, verbose, me) = (shared.args, shared.verbose, shared.me.as_str());
    let opts = PassOptions {
        source: args.source,
        content: false,
    };
    let mut conn = session.db.conn()?;
    let seed = view.uuid_seed(&migration_record::key(&conn)?);
    let judge = Judge {
        root: view.root(),
        seed: &seed,
        opts,
        hardlinked: options.link.as_deref() == Some("hardlink"),
        merge_formats: options.merge_formats,
    };
    let pass = begin_pass(&mut conn, session.run, opts)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut shown = shared.progress(verify_store::left_to_check(&conn, pass.id, false)?);
    let mut after = 0;
    loop {
        let rows = verify_store::unchecked(&conn, pass.id, false, after, BATCH)?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let files: HashMap<i64, FileRow> = verify_store::file_rows(&conn, &ids)?
            .into_iter()
            .map(|f| (f.id, f))
            .collect();
        let books = view
            .books(&book_ids(rows.iter().map(|r| r.target_ref.as_str())))
            .map_err(Stop::CalibreRead)?;
        let verdicts = judge.all(&rows, &files, &books, workers);
        verify_store::record(&mut conn, pass.id, &verdicts)?;
        shown.add(rows.len() as u64, rows.iter().map(|r| r.size).sum());
    }
    shown.finish();
    verify_store::end_pass(&conn, pass.id)?;
    let code = print_outcome(
        &conn,
        pass.id,
        &view.root().display().to_string(),
        opts,
        verbose,
        calibre_name,
    )?;
    repair(session, &mut conn, view, &judge, pass.id, args, me)?;
    Ok(code)
}

/// What a verdict is called for a calibre target.
fn calibre_name(f: Found) -> &'static str {
    match f {
        Found::ChangedByCalibre => "changed by calibre",
        other => other.as_str(),
    }
}

/// The books these target refs were placed in, each once.
fn book_ids<'a>(refs: impl Iterator<Item = &'a str>) -> Vec<i64> {
    let mut ids: Vec<i64> = refs.filter_map(placed_book_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// What a verdict is judged by.
struct Judge<'a> {
    root: &'a Path,
    seed: &'a str,
    opts: PassOptions,
    hardlinked: bool,
    merge_formats: bool,
}

impl Judge<'_> {
    /// Judge a batch, `workers` files at a time; verdicts in the rows' order.
    fn all(
        &self,
        rows: &[ToVerify],
        files: &HashMap<i64, FileRow>,
        books: &HashMap<i64, BookNow>,
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
                            .map(|r| self.one(r, files.get(&r.id), books))
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

    fn one(&self, r: &ToVerify, file: Option<&FileRow>, books: &HashMap<i64, BookNow>) -> Verdict {
        let mut notes = Vec::new();
        let source = self.opts.source.then(|| {
            let (found, _, detail) = look_at(Path::new(&r.path), recorded(r).as_ref());
            if let Some(d) = detail.filter(|_| found != Found::Ok) {
                notes.push(format!("source: {d}"));
            }
            found
        });
        let target = match file {
            Some(f) => self.target(r, f, books, &mut notes),
            None => Found::Unreadable,
        };
        Verdict {
            file_id: r.id,
            target,
            source,
            detail: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }

    /// Whether `book` is the one this migration put `f` in: its uuid is the one the
    /// migration gave it. With `--merge-formats` a file may have gone into a book the library
    /// had before, whose uuid is its own: there the id alone says.
    fn is_ours(&self, f: &FileRow, book: &BookNow) -> bool {
        if self.merge_formats {
            return true;
        }
        let want = book_uuid(
            MigratedFile {
                row_id: f.id,
                source_path: &f.path,
                source_rel: &f.source_ref,
                file_name: f.file_name(),
                size: f.size,
                format: &f.format,
                metadata: f.metadata.clone(),
                origin: f.metadata_origin,
            },
            self.seed,
        );
        book.uuid
            .as_deref()
            .is_some_and(|u| u.trim().eq_ignore_ascii_case(&want))
    }

    fn target(
        &self,
        r: &ToVerify,
        f: &FileRow,
        books: &HashMap<i64, BookNow>,
        notes: &mut Vec<String>,
    ) -> Found {
        let Some(id) = placed_book_id(&r.target_ref) else {
            notes.push("no calibre book id in the recorded target".into());
            return Found::Unreadable;
        };
        let Some(book) = books.get(&id) else {
            notes.push(format!("book #{id} is not in the library"));
            return Found::Missing;
        };
        let another = |notes: &mut Vec<String>| {
            notes.push(format!(
                "book #{id} is another book now (uuid {})",
                book.uuid.as_deref().unwrap_or("none")
            ));
            Found::Missing
        };
        let fmt = f.format.to_uppercase();
        let (rel_path, recorded_size) = match book.format_at(&f.format) {
            FormatAt::File {
                rel_path,
                recorded_size,
            } => (rel_path, recorded_size),
            FormatAt::NoFormat if self.is_ours(f, book) => {
                notes.push(format!("book #{id} has no {fmt} file"));
                return Found::Missing;
            }
            FormatAt::NoFormat => return another(notes),
            FormatAt::Unsafe => {
                notes.push(format!(
                    "book #{id}'s path in metadata.db leads out of the library: not read"
                ));
                return Found::Unreadable;
            }
        };
        let path = self.root.join(&rel_path);
        let (found, _, detail) = look_at(&path, recorded(r).as_ref());
        let moved = rel_path != r.target_ref;
        let found = match found {
            Found::Changed | Found::Missing if !self.is_ours(f, book) => return another(notes),
            Found::Missing => {
                notes.push(format!("book #{id}'s {fmt} file is gone"));
                Found::Missing
            }
            Found::Changed => {
                let size_now = std::fs::metadata(&path).map_or(0, |m| m.len());
                if calibre_rewrote(&path, &f.format, size_now, r.size, recorded_size) {
                    notes.push(format!(
                        "calibre rewrote it: {size_now} bytes, as calibre recorded"
                    ));
                    Found::ChangedByCalibre
                } else {
                    notes.extend(detail);
                    notes.push(format!("calibre recorded {recorded_size} bytes"));
                    if self.hardlinked {
                        notes.push("hardlinked to the source: the source changed too".into());
                    }
                    Found::Changed
                }
            }
            other => {
                notes.extend(detail);
                other
            }
        };
        if moved {
            notes.push(format!("now at {rel_path}"));
        }
        found
    }
}

/// `--repair`: after the list above and a yes, move each damaged file out of the library,
/// then put the files found missing or changed (as chosen) back to be migrated — a file whose
/// book still lists its format keeps that path as its `target_ref`, so the next run puts the
/// good copy there (the place is empty: the file is gone or was moved out); the others get a
/// new book or format as a first run would.
fn repair(
    session: &Session,
    conn: &mut rusqlite::Connection,
    view: &LibraryView,
    judge: &Judge<'_>,
    pass: i64,
    args: &VerifyArgs,
    me: &str,
) -> Result<(), CommandError> {
    if args.repair.is_empty() {
        return Ok(());
    }
    let kinds = placed_kinds_to_repair(args, judge.hardlinked, "library");
    let (_, differs) = verify_store::outcome(conn, pass)?;
    let by_calibre = differs
        .iter()
        .filter(|d| d.target == Found::ChangedByCalibre)
        .count();
    if by_calibre > 0 {
        outln!("{by_calibre} files calibre rewrote are left as they are (never repaired)");
    }
    let chosen: HashMap<i64, Found> = differs
        .iter()
        .filter(|d| kinds.contains(&d.target))
        .map(|d| (d.file_id, d.target))
        .collect();
    if chosen.is_empty() {
        outln!("nothing to repair");
        return Ok(());
    }
    if !confirmed(args, chosen.len())? {
        return Ok(());
    }
    let mut ids: Vec<i64> = chosen.keys().copied().collect();
    ids.sort_unstable();
    let files = verify_store::file_rows(conn, &ids)?;
    // Where each file is now: the library is read again, as it is at this moment.
    let books = view
        .books(&book_ids(
            files.iter().filter_map(|f| f.target_ref.as_deref()),
        ))
        .map_err(Stop::CalibreRead)?;
    let root = view.root();
    let mut put = Vec::new();
    let mut moved = 0;
    for f in files
        .iter()
        .filter(|f| f.state == crate::state::file_state::FileState::Uploaded)
    {
        let found = chosen[&f.id];
        let place = f
            .target_ref
            .as_deref()
            .and_then(placed_book_id)
            .and_then(|id| books.get(&id))
            .filter(|book| judge.is_ours(f, book))
            .and_then(|book| match book.format_at(&f.format) {
                FormatAt::File { rel_path, .. } => Some(rel_path),
                _ => None,
            });
        let target_ref = match (found, place) {
            (Found::Changed, Some(rel)) if root.join(&rel).symlink_metadata().is_ok() => {
                let to = move_out(root, &rel).map_err(|source| Stop::MoveOut {
                    from: root.join(&rel),
                    to: damaged_folder(root).join(&rel),
                    source,
                })?;
                outln!(
                    "  #{}: the damaged file {rel} moved out of the library to {}",
                    f.id,
                    to.display()
                );
                moved += 1;
                Some(rel)
            }
            // The book still lists the format and its place is empty: the copy goes there.
            (_, Some(rel)) if root.join(&rel).symlink_metadata().is_err() => Some(rel),
            _ => None,
        };
        put.push(PutBack {
            file_id: f.id,
            found,
            target_ref,
        });
    }
    let done = verify_store::requeue_rows(conn, session.run, &put)?;
    if moved > 0 {
        outln!(
            "{moved} damaged files moved out of the library, to {}",
            damaged_folder(root).display()
        );
    }
    outln!(
        "{} files put back to be migrated; place them with `{me} run`",
        done.len()
    );
    Ok(())
}
