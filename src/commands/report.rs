//! `bookferry report`: lists files with their state, reason, source and target, as a table for
//! a terminal or as CSV/JSON for scripts. Reads the state DB read-only (safe during a run) and
//! streams the rows: one row in memory at a time, whatever the library's size. `--format html`
//! is the one page about the whole migration (`report_html.rs`).

use super::{CmdResult, UsageError};
use crate::cli::{GlobalArgs, ReportArgs, ReportFormat};
use crate::exit;
use crate::failure::FailureKind;
use crate::skip_reason::SkipReason;
use crate::state::listing::{each_listed, Listed, Selection};
use crate::state::{migration_record, Db};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

pub fn command(global: &GlobalArgs, args: &ReportArgs) -> CmdResult {
    let state = super::state_path(global)?;
    if args.format == ReportFormat::Html {
        return html(global, args, &state);
    }
    let selection = selection_of(args)?;
    let db = Db::open_read_only(&state)?;
    let conn = db.conn()?;
    if let Some(run) = selection.run {
        check_run_exists(&conn, run, &state)?;
    }
    let (sink, path) = open_output(args)?;
    let mut out = BufWriter::new(sink);
    let written = write_report(&conn, &selection, args.format, &mut out).and_then(|n| {
        out.flush()?;
        Ok(n)
    });
    if let Ok(n) = written {
        if args.output.is_some() || args.format != ReportFormat::Table {
            tracing::info!("{n} files listed");
        }
    }
    ended(written, path)
}

/// `--format html`: the page about the whole migration (README "Did it all arrive?"). It
/// takes no selection (the page has every kind, and a filter), and goes to `--output`, or to
/// standard output only when that is not a terminal.
fn html(global: &GlobalArgs, args: &ReportArgs, state: &Path) -> CmdResult {
    let selects = args.failed
        || args.skipped
        || args.duplicates
        || args.warnings
        || args.uploaded
        || args.all
        || !args.reason.is_empty()
        || args.run.is_some();
    if selects {
        return Err(UsageError::HtmlSelection.into());
    }
    if args.output.is_none() && io::stdout().is_terminal() {
        return Err(UsageError::HtmlNeedsOutput.into());
    }
    let db = Db::open_read_only(state)?;
    let conn = db.conn()?;
    let (sink, path) = open_output(args)?;
    let mut out = BufWriter::new(sink);
    let me = super::command_prefix(global);
    let written = super::report_html::write_page(&conn, state, &me, &mut out).and_then(|n| {
        out.flush()?;
        Ok(n)
    });
    if let Ok(n) = written {
        tracing::info!("{}: the page about {n} files", path.display());
    }
    ended(written, path)
}

/// `--output FILE`, else standard output; and its name for messages.
fn open_output(args: &ReportArgs) -> Result<(Box<dyn Write>, PathBuf), UsageError> {
    Ok(match &args.output {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|source| UsageError::ReportOutput {
                path: p.clone(),
                source,
            })?;
            (Box::new(f), p.clone())
        }
        None => (
            Box::new(io::stdout().lock()),
            PathBuf::from("standard output"),
        ),
    })
}

/// How a report command ends once it has written (or failed to write) to `path`.
fn ended(written: Result<u64, WriteError>, path: PathBuf) -> CmdResult {
    match written {
        Ok(_) => Ok(exit::OK),
        // `bookferry report | head`: the reader has what it wanted.
        Err(WriteError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::OK),
        Err(WriteError::Io(source)) => Err(UsageError::ReportOutput { path, source }.into()),
        Err(WriteError::State(e)) => Err(e.into()),
    }
}

/// The rows to list: the flags given, or by default what needs a look (failed, skipped,
/// warnings).
fn selection_of(args: &ReportArgs) -> Result<Selection, UsageError> {
    for r in &args.reason {
        if FailureKind::parse(r).is_none() && SkipReason::parse(r).is_none() {
            return Err(UsageError::UnknownReason { given: r.clone() });
        }
    }
    let mut s = Selection {
        failed: args.failed,
        skipped: args.skipped,
        duplicates: args.duplicates,
        warnings: args.warnings,
        uploaded: args.uploaded,
        all: args.all,
        reasons: args.reason.clone(),
        run: args.run,
    };
    if !s.lists_any_kind() {
        s = Selection {
            reasons: s.reasons,
            run: s.run,
            ..if args.reason.is_empty() && args.run.is_none() {
                Selection::problems()
            } else {
                Selection::all()
            }
        };
    }
    Ok(s)
}

fn check_run_exists(conn: &Connection, run: i64, state: &Path) -> Result<(), super::CommandError> {
    let (found, first, last): (i64, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM runs WHERE id = ?1), MIN(id), MAX(id) FROM runs",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(crate::state::StateError::from)?;
    if found > 0 {
        return Ok(());
    }
    Err(UsageError::NoSuchRun {
        given: run,
        state: state.to_path_buf(),
        known: first.zip(last).map(|(a, b)| format!("{a}–{b}")),
    }
    .into())
}

#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl From<csv::Error> for WriteError {
    fn from(e: csv::Error) -> WriteError {
        WriteError::Io(e.into())
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(e: serde_json::Error) -> WriteError {
        WriteError::Io(e.into())
    }
}

/// A listed row as the report gives it: with, for a calibre → calibre migration, the source
/// book's id and the id of the target book its files went to (README "Reports").
#[derive(Serialize)]
struct Reported<'a> {
    #[serde(flatten)]
    listed: &'a Listed,
    source_book: Option<i64>,
    target_book: Option<i64>,
}

/// The calibre book ids of the migration (empty unless calibre → calibre).
struct BookIds(HashMap<i64, i64>);

impl BookIds {
    fn of<'a>(&self, l: &'a Listed) -> Reported<'a> {
        let source = l
            .source
            .split_once('/')
            .and_then(|(id, _)| id.parse::<i64>().ok())
            .filter(|id| self.0.contains_key(id));
        Reported {
            listed: l,
            source_book: source,
            target_book: source.and_then(|id| self.0.get(&id).copied()),
        }
    }
}

/// Writes the listing; returns how many files it listed.
fn write_report(
    conn: &Connection,
    selection: &Selection,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<u64, WriteError> {
    let ids = BookIds(migration_record::calibre_book_id_map(conn)?);
    let mut n = 0u64;
    match format {
        ReportFormat::Table => {
            each_listed(conn, selection, |l| {
                n += 1;
                write_table_row(out, &ids.of(&l))
            })??;
            if n == 0 {
                writeln!(out, "no files match")?;
            } else {
                writeln!(out, "{n} files listed")?;
            }
        }
        ReportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(CSV_COLUMNS)?;
            each_listed(conn, selection, |l| {
                n += 1;
                w.write_record(csv_record(&ids.of(&l)))
            })??;
            w.flush()?;
        }
        ReportFormat::Json => {
            out.write_all(b"[")?;
            each_listed(conn, selection, |l| -> Result<(), WriteError> {
                out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
                n += 1;
                serde_json::to_writer(&mut *out, &ids.of(&l))?;
                Ok(())
            })??;
            out.write_all(b"\n]\n")?;
        }
        ReportFormat::Html => unreachable!("the page is written by html(), not as a listing"),
    }
    Ok(n)
}

/// The CSV header: `Reported`'s fields, in order (README "Reports").
const CSV_COLUMNS: [&str; 18] = [
    "id",
    "state",
    "reason",
    "source",
    "path",
    "target",
    "duplicate_of",
    "duplicate_of_source",
    "duplicate_of_target",
    "size",
    "format",
    "sha1",
    "message",
    "warnings",
    "run",
    "changed_at",
    "source_book",
    "target_book",
];

fn csv_record(r: &Reported) -> [String; 18] {
    let l = r.listed;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    [
        l.id.to_string(),
        l.state.clone(),
        opt(&l.reason),
        l.source.clone(),
        l.path.clone(),
        opt(&l.target),
        num(l.duplicate_of),
        opt(&l.duplicate_of_source),
        opt(&l.duplicate_of_target),
        l.size.to_string(),
        l.format.clone(),
        opt(&l.sha1),
        opt(&l.message),
        l.warnings.join("\n"),
        num(l.run),
        l.changed_at.clone(),
        num(r.source_book),
        num(r.target_book),
    ]
}

/// One file, one line (plus a line per warning): `#ID state reason source → target`, or
/// `source: message` when it did not arrive.
fn write_table_row(out: &mut dyn Write, r: &Reported) -> io::Result<()> {
    let l = r.listed;
    let reason = l.reason.as_deref().unwrap_or("");
    write!(
        out,
        "#{:<7} {:<15} {:<21} {}",
        l.id, l.state, reason, l.source
    )?;
    match (l.state.as_str(), &l.duplicate_of) {
        ("skipped", Some(first)) => write!(
            out,
            " — duplicate of #{first} {}{}",
            l.duplicate_of_source.as_deref().unwrap_or("?"),
            l.duplicate_of_target
                .as_deref()
                .map(|t| format!(" → {t}"))
                .unwrap_or_default()
        )?,
        ("uploaded", _) => write!(out, " → {}", l.target.as_deref().unwrap_or("?"))?,
        _ => {
            if let Some(m) = &l.message {
                write!(out, " — {m}")?;
            }
        }
    }
    if let (Some(s), Some(t)) = (r.source_book, r.target_book) {
        write!(out, " (calibre book #{s} → #{t})")?;
    }
    writeln!(out)?;
    for w in &l.warnings {
        writeln!(out, "{:>9} warning: {w}", "")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_header_names_every_field_of_a_listed_row_in_order() {
        let l = Listed {
            id: 1,
            state: "uploaded".into(),
            reason: None,
            source: "a".into(),
            path: "/a".into(),
            target: None,
            duplicate_of: None,
            duplicate_of_source: None,
            duplicate_of_target: None,
            size: 1,
            format: "epub".into(),
            sha1: None,
            message: None,
            warnings: vec![],
            run: None,
            changed_at: "t".into(),
        };
        let json = serde_json::to_value(BookIds(HashMap::new()).of(&l)).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected: Vec<&str> = CSV_COLUMNS.to_vec();
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
    }
}
