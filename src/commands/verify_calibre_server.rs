//! `bookferry verify` of a calibre-server target: each book this migration added a file to is
//! asked of the running server, a batch of books at a time, for its formats and their sizes
//! (`target::calibre_server::ServerView`). The book gone, or without the row's format →
//! `missing`; the format there with another size → `changed`; a book that no longer carries
//! this migration's mark is another book now (`missing`), unless the migration merged formats
//! into the user's books. The bytes are not read back: the server hands out a copy with the
//! book's metadata written into it. The pass is recorded and resumed as every verify's.
//!
//! `--repair missing` puts those rows back, and the next run adds the format to the book again
//! (or makes the book again when it is gone). `--repair changed` is refused for this target:
//! the changed file would have to be deleted through the server first, which bookferry never
//! does to a library.

use super::stdout::outln;
use super::verify::{begin_pass, look_at, placed_kinds_to_repair, print_outcome, recorded, Shared};
use super::{CmdResult, Internal, Session, Stop};
use crate::state::migration_record;
use crate::state::rows::FileRow;
use crate::state::verify_store::{self, Found, PassOptions, ToVerify, Verdict};
use crate::target::calibre_server::{credentials, FormatsOf, ServerBook, ServerSpec, ServerView};
use crate::target::http::HttpOptions;
use std::collections::HashMap;
use std::path::Path;

/// Rows read, asked about (their books in one call) and recorded at a time.
const BATCH: usize = 200;

pub(super) fn verify(
    session: &Session,
    shared: &Shared,
    server: &ServerSpec,
    http_opts: &HttpOptions,
    merge_formats: bool,
) -> CmdResult {
    let (args, verbose, me) = (shared.args, shared.verbose, shared.me.as_str());
    let opts = PassOptions {
        source: args.source,
        content: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Internal::Runtime)?;
    let mut conn = session.db.conn()?;
    let key = migration_record::key(&conn)?;
    let creds = credentials(server, http_opts);
    let view = runtime.block_on(ServerView::open(server, creds, http_opts, &key))?;
    let pass = begin_pass(&mut conn, session.run, opts)?;
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
        let mut books: Vec<i64> = rows.iter().filter_map(book_of).collect();
        books.sort_unstable();
        books.dedup();
        let now = runtime
            .block_on(view.formats(&books))
            .map_err(Stop::Failure)?;
        let verdicts: Vec<Verdict> = rows
            .iter()
            .map(|r| judge(r, files.get(&r.id), &now, opts, merge_formats))
            .collect();
        verify_store::record(&mut conn, pass.id, &verdicts)?;
        shown.add(rows.len() as u64, rows.iter().map(|r| r.size).sum());
    }
    shown.finish();
    verify_store::end_pass(&conn, pass.id)?;
    let code = print_outcome(
        &conn,
        pass.id,
        &server.to_spec(),
        opts,
        verbose,
        Found::as_str,
    )?;
    let mut kinds = placed_kinds_to_repair(args, false, "server");
    if kinds.contains(&Found::Changed) {
        outln!(
            "not repairing changed files: a calibre-server library's file is replaced only by deleting it through the server, which bookferry never does; remove the format (calibredb remove_format --with-library …) and repair it as missing"
        );
        kinds.retain(|k| *k != Found::Changed);
    }
    super::verify::repair(session, &mut conn, pass.id, args, &kinds, me)?;
    Ok(code)
}

/// The server's book id a row was placed in (its `target_ref`).
fn book_of(r: &ToVerify) -> Option<i64> {
    r.target_ref.trim().parse().ok()
}

/// The verdict on one row, from what the server holds of its book now.
fn judge(
    r: &ToVerify,
    file: Option<&FileRow>,
    now: &FormatsOf,
    opts: PassOptions,
    merge_formats: bool,
) -> Verdict {
    let mut notes = Vec::new();
    let source = opts.source.then(|| {
        let (found, _, detail) = look_at(Path::new(&r.path), recorded(r).as_ref());
        if let Some(d) = detail.filter(|_| found != Found::Ok) {
            notes.push(format!("source: {d}"));
        }
        found
    });
    let target = match (book_of(r), file) {
        (Some(id), Some(f)) => match now.get(&id) {
            Some(Some(book)) => on_book(id, book, f, merge_formats, &mut notes),
            _ => {
                notes.push(format!("book #{id} is not in the library"));
                Found::Missing
            }
        },
        (None, _) => {
            notes.push("no calibre book id in the recorded target".into());
            Found::Unreadable
        }
        (_, None) => Found::Unreadable,
    };
    Verdict {
        file_id: r.id,
        target,
        source,
        detail: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

fn on_book(
    id: i64,
    book: &ServerBook,
    f: &FileRow,
    merge_formats: bool,
    notes: &mut Vec<String>,
) -> Found {
    let fmt = f.format.to_uppercase();
    if !book.ours && !merge_formats {
        notes.push(format!(
            "book #{id} is another book now (it carries no mark of this migration)"
        ));
        return Found::Missing;
    }
    match book.formats.get(&fmt) {
        None => {
            notes.push(format!("book #{id} has no {fmt} file"));
            Found::Missing
        }
        Some(size) if *size != f.size => {
            notes.push(format!(
                "book #{id}'s {fmt} file is {size} bytes, {} were placed",
                f.size
            ));
            Found::Changed
        }
        Some(_) => Found::Ok,
    }
}
