//! `report --format html`: one self-contained page (CSS and script inline, no network, no
//! external asset) about the whole migration: the summary, throughput per run, failures by kind
//! and skips by reason as charts with the files behind each, duplicates grouped, warnings, the
//! runs. The page's data is one JSON block (`report_page.html` says where) with `<`, `>` and `&`
//! written as `\u003c` …, so no file name can end the block; the page's script inserts every
//! name as text, never as markup. The file lists share [`ROW_BUDGET`] rows (the page says when
//! a list is cut, and names the `report … --format csv` that lists it all).

use super::report::WriteError;
use crate::state::report_stats::{self, Capped, Duplicates, ReasonRow, RunRow, Throughput};
use crate::state::{migration_record, report, FileState};
use rusqlite::Connection;
use serde::Serialize;
use std::io::{self, Write};
use std::path::Path;

/// The page: markup, style and script, with [`DATA_MARK`] where the JSON goes.
const PAGE: &str = include_str!("report_page.html");
const DATA_MARK: &str = "/*BOOKFERRY_DATA*/";

/// At most this many rows of the four file lists (failures, skips, duplicates, warnings) go
/// into the page, shared out by [`shares`] (a row is 100–300 bytes of JSON): with every list
/// full the page stays near 10 MB; the realistic 200,000-row mix of bench/report_html.sh fits
/// whole. All rows: `report … --format csv`.
pub const ROW_BUDGET: usize = 40_000;

/// The rows each list may hold, given how many each has: a list within its fair share of what
/// is left is held whole, and the others share the rest evenly (so four lists of 5,000, 8,000,
/// 20,000 and 100,000 rows hold 5,000, 8,000, 13,500 and 13,500).
fn shares<const N: usize>(totals: [u64; N], budget: usize) -> [usize; N] {
    let mut order: Vec<usize> = (0..N).collect();
    order.sort_by_key(|&i| totals[i]);
    let mut caps = [0usize; N];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (N - k);
        caps[i] = usize::try_from(totals[i]).unwrap_or(usize::MAX).min(fair);
        left -= caps[i];
    }
    caps
}

#[derive(Serialize)]
struct PageData {
    generated_at: i64,
    version: &'static str,
    state_db: String,
    /// `bookferry`, with `--state` when one was given: the commands the page names start so.
    command: String,
    /// How to continue the migration, when rows are left to migrate.
    next_command: Option<String>,
    migration: Option<Migration>,
    /// `[state, files, bytes]`, in `FileState::ALL` order.
    states: Vec<(&'static str, u64, u64)>,
    failures: Failures,
    skipped: Skipped,
    duplicates: Duplicates,
    warnings: Capped<report_stats::WarningRow>,
    runs: Vec<RunRow>,
    throughput: Vec<Throughput>,
}

#[derive(Serialize)]
struct Migration {
    source: String,
    target: Option<String>,
    options: migration_record::RecordedOptions,
}

#[derive(Serialize)]
struct Failures {
    /// `[kind, files, what to do]`.
    kinds: Vec<(String, u64, String)>,
    files: Capped<ReasonRow>,
}

#[derive(Serialize)]
struct Skipped {
    /// `[reason, files]`.
    reasons: Vec<(String, u64)>,
    files: Capped<ReasonRow>,
}

/// Writes the page for the migration in `conn`; returns how many files the migration has.
/// `me` is the command prefix the page's advice uses (`bookferry --state …`).
pub fn write_page(
    conn: &Connection,
    state: &Path,
    me: &str,
    out: &mut dyn Write,
) -> Result<u64, WriteError> {
    let counts = report::state_counts(conn)?;
    let migration = migration_record::load(conn)?;
    let remaining: u64 = FileState::ACTIVE.iter().map(|s| counts.files_in(*s)).sum();
    let kinds = report::failures_by_kind(conn)?;
    let reasons = report::skips_by_reason(conn)?;
    let [failed_cap, skipped_cap, duplicates_cap, warned_cap] = shares(
        [
            counts.files_in(FileState::Failed),
            counts.files_in(FileState::Skipped),
            reasons.get("duplicate").copied().unwrap_or(0),
            report::files_with_warnings(conn)?,
        ],
        ROW_BUDGET,
    );
    let data = PageData {
        generated_at: crate::state::now_ms(),
        version: env!("CARGO_PKG_VERSION"),
        state_db: crate::path_text::escape(state.as_os_str()).into_owned(),
        command: me.to_string(),
        next_command: (remaining > 0).then(|| match &migration {
            Some(m) if m.target.is_some() => format!("{me} run"),
            _ => format!("{me} run --to TARGET"),
        }),
        states: counts
            .by_state
            .iter()
            .map(|(s, (n, b))| (*s, *n, *b))
            .collect(),
        failures: Failures {
            kinds: kinds
                .into_iter()
                .map(|(kind, n)| {
                    let advice = super::status::advice(&kind, me);
                    (kind, n, advice)
                })
                .collect(),
            files: report_stats::failed_files(conn, failed_cap)?,
        },
        skipped: Skipped {
            reasons: reasons.into_iter().collect(),
            files: report_stats::skipped_files(conn, skipped_cap)?,
        },
        duplicates: report_stats::duplicates(conn, duplicates_cap)?,
        warnings: report_stats::warned_files(conn, warned_cap)?,
        runs: report_stats::runs(conn)?,
        throughput: report_stats::throughput(conn)?,
        migration: migration.map(|m| Migration {
            source: m.source,
            target: m.target,
            options: m.options,
        }),
    };
    let (head, tail) = PAGE
        .split_once(DATA_MARK)
        .expect("the page template holds the data mark");
    out.write_all(head.as_bytes())?;
    serde_json::to_writer(ScriptSafe(&mut *out), &data)?;
    out.write_all(tail.as_bytes())?;
    Ok(counts.total)
}

/// Writes JSON so that it can sit inside a `<script>` element: `<`, `>` and `&` (which JSON
/// has only inside strings) become `\u003c`, `\u003e`, `\u0026`, so no `</script>` or `<!--`
/// from a file name can end the element or change how it is read.
struct ScriptSafe<W>(W);

impl<W: Write> Write for ScriptSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(escaped)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_for_a_script_element_has_no_markup_characters_and_reads_back_the_same() {
        let name = "x</script><img src=x onerror=alert(1)>&amp;<!--.epub";
        let mut out = Vec::new();
        serde_json::to_writer(ScriptSafe(&mut out), &[name]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(['<', '>', '&']), "{text}");
        let back: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, [name]);
    }

    #[test]
    fn small_lists_are_held_whole_and_large_ones_share_the_rest() {
        assert_eq!(
            shares([20_000, 5_000, 100_000, 8_000], 40_000),
            [13_500, 5_000, 13_500, 8_000]
        );
        assert_eq!(shares([1, 2, 3, 4], 40_000), [1, 2, 3, 4]);
        assert_eq!(shares([0, 0, 0, 200_000], 40_000), [0, 0, 0, 40_000]);
        assert_eq!(
            shares([200_000; 4], 40_000),
            [10_000, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn the_template_has_one_data_mark_inside_a_json_script_element() {
        assert_eq!(PAGE.matches(DATA_MARK).count(), 1);
        assert!(PAGE.contains(&format!(
            "<script type=\"application/json\" id=\"data\">{DATA_MARK}</script>"
        )));
        // Self-contained: nothing is fetched.
        for fetch in ["src=\"http", "href=\"http", "src=\"//", "@import", "url("] {
            assert!(!PAGE.contains(fetch), "{fetch}");
        }
    }
}
