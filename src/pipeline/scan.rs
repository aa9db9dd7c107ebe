//! The scan: walks a source (a folder tree, or a calibre library's `metadata.db`) and records
//! its files in the state DB, incrementally — new files are added, changed ones go back to
//! `pending`, vanished ones are noted; an interrupted scan of a folder resumes by skipping the
//! folders it had finished. Blocking; a run drives it beside the pipeline (the pipeline takes
//! each batch's new rows as it commits).

use crate::filter::Filter;
use crate::metadata::Origin;
use crate::source::folder::{WalkEvent, Walker};
use crate::source::formats::FormatSet;
use crate::source::{calibre, SourceSpec};
use crate::state::migration_record;
use crate::state::rows::{ScannedFile, SourceKind};
use crate::state::scan_store::{self, Known, ScanBatch};
use crate::state::{Db, StateError};
use crate::tuning::ScanTuning;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a scan stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The source folder cannot be walked (gone, unreadable).
    #[error("source {}: {source}", .root.display())]
    Source {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The calibre library's `metadata.db` cannot be read.
    #[error("{0}")]
    Calibre(#[from] calibre::CalibreError),
    /// The state DB cannot be read or written.
    #[error("scan: the state DB: {0}")]
    State(#[from] StateError),
    /// `--formats` matched no file at all (a usage error: nothing was recorded or changed).
    #[error("--formats {formats}: no file in the source is of {}; the source has {present}. Nothing was recorded{}",
        if .formats.contains(',') { "these formats" } else { "this format" },
        if *.forgot_migration { "; the state DB is bound to no migration" } else { "" })]
    NoMatchingFormats {
        formats: String,
        /// The formats the source does have, with counts (`epub (12), pdf (3)`).
        present: String,
        /// The migration this command had just recorded was forgotten again.
        forgot_migration: bool,
    },
    /// The source holds no file, yet the state DB records files from it: a drive not mounted,
    /// an empty mount point. No row is touched.
    #[error("source {}: holds no files, yet the state DB records files from it; is a drive not mounted? Nothing was changed", .root.display())]
    SourceEmpty { root: PathBuf },
    /// The filter left out every file the source has (a usage error: no row was touched).
    #[error("the filter (--include, --exclude, --files-from, sizes, tags) leaves out all {excluded} files of the source; nothing was changed")]
    FilterMatchesNothing { excluded: usize },
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanSummary {
    pub seen: usize,
    pub new: usize,
    pub changed: usize,
    /// Rows not yet migrated (or failed) whose file left the source: now `skipped`,
    /// `source_gone`.
    pub vanished_before_migration: usize,
    /// Of those, the rows that were still to do (not `failed`): work the run no longer has.
    pub vanished_active: usize,
    pub vanished_after_migration: usize,
    /// Rows `skipped` as `source_gone` whose file is back, to migrate now.
    pub reappeared: usize,
    pub skipped_entries: usize,
    pub resumed_dirs: usize,
    /// Files the filter (`--include`, `--exclude`, sizes, tags) left out: not recorded.
    pub excluded: usize,
    /// Rows not yet migrated (or failed) that the filter or `--formats` leaves out now:
    /// `skipped`, `excluded`.
    pub excluded_before_migration: usize,
    pub complete: bool,
}

impl ScanSummary {
    pub fn describe(&self) -> String {
        format!(
            "scan: {} files seen, {} new, {} changed, {} back, {} gone before migration (skipped, source_gone), {} gone after{}{}{}",
            self.seen,
            self.new,
            self.changed,
            self.reappeared,
            self.vanished_before_migration,
            self.vanished_after_migration,
            if self.resumed_dirs > 0 {
                format!(", resumed past {} finished folder(s)", self.resumed_dirs)
            } else {
                String::new()
            },
            if self.excluded + self.excluded_before_migration > 0 {
                format!(
                    ", {} left out by the filter ({} recorded before, now skipped, excluded)",
                    self.excluded, self.excluded_before_migration
                )
            } else {
                String::new()
            },
            if self.complete { "" } else { " (interrupted)" }
        )
    }
}

/// What a committed scan batch adds to the work left: rows that became active (new files, and
/// changed files whose rows had finished) and their bytes (with the size change of a changed
/// row that was still active).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub rows: u64,
    pub bytes: i64,
}

/// Scan a source into the state DB. Blocking. Stops early (complete = false) when `cancel` is set.
/// `committed` is called after each batch is committed, with what it added. `sizes` sizes the
/// transactions (small at first, so a run's pipeline starts on the first files found while the
/// walk goes on, then growing) and the lookups of found files.
#[allow(clippy::too_many_arguments)]
pub fn scan_source(
    db: &Db,
    run: i64,
    source: &SourceSpec,
    formats: &FormatSet,
    filter: &Filter,
    sizes: ScanTuning,
    cancel: &AtomicBool,
    committed: &mut dyn FnMut(Added),
) -> Result<ScanSummary, ScanError> {
    let conn = db.conn()?;
    let found_rows = scan_store::FoundRows::new(&conn)?;
    let mut scan = Scan {
        conn,
        run,
        filter,
        seen_formats: BTreeSet::new(),
        unmatched: BTreeMap::new(),
        committed,
        found_rows,
        waiting: Vec::new(),
        dirs_waiting: Vec::new(),
        batch: ScanBatch::default(),
        added: Added::default(),
        sizes,
        limit: sizes.first_batch,
        summary: ScanSummary::default(),
    };
    // Folders an interrupted pass of this scan finished, not entered again.
    let mut already_walked = HashSet::new();
    scan.summary.complete = match source {
        SourceSpec::Dir(root) => {
            let exclude = state_files(db);
            scan.walk_folder(root, formats, exclude, cancel, &mut already_walked)?
        }
        SourceSpec::Calibre(root) => scan.read_calibre(root, formats, cancel)?,
    };
    scan.compare_waiting()?;
    scan.flush()?;
    let mut summary = std::mem::take(&mut scan.summary);
    if summary.complete {
        scan.judge_matches(source, formats, &summary)?;
        let root = source.root();
        let calibre = matches!(source, SourceSpec::Calibre(_));
        let left_out = |row: &scan_store::Unfound| {
            let rel = Path::new(&row.path)
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| row.source_ref.clone());
            formats.format_of(&format!("x.{}", row.format)).is_none()
                || !filter.takes(&rel, row.size)
                || (calibre && !filter.takes_tags(&recorded_tags(row.metadata.as_deref())))
        };
        let v = scan_store::finish(
            &mut scan.conn,
            run,
            &scan.found_rows,
            &already_walked,
            &left_out,
        )?;
        summary.vanished_before_migration = v.gone_before_migration + v.failed_now_gone;
        summary.vanished_active = v.gone_before_migration + v.excluded_active;
        summary.vanished_after_migration = v.gone_after_migration;
        summary.excluded_before_migration = v.excluded;
    }
    Ok(summary)
}

/// A scan under way: files found and waiting to be compared with the DB, the batch of rows to
/// write, and what it has found so far.
struct Scan<'a> {
    conn: crate::state::Conn,
    run: i64,
    /// `--include`, `--exclude`, sizes and tags: files it leaves out are not recorded.
    filter: &'a Filter,
    /// The formats of the files found.
    seen_formats: BTreeSet<String>,
    /// Files passed over for their format, by format (`""`: no extension).
    unmatched: BTreeMap<String, u64>,
    committed: &'a mut dyn FnMut(Added),
    /// The recorded rows whose file this scan found.
    found_rows: scan_store::FoundRows,
    waiting: Vec<ScannedFile>,
    /// Folders walked whole since the last lookup: recorded with (after) their waiting files.
    dirs_waiting: Vec<String>,
    batch: ScanBatch,
    added: Added,
    sizes: ScanTuning,
    /// Rows in the next transaction, at most: grows from `sizes.first_batch` to `sizes.batch`.
    limit: usize,
    summary: ScanSummary,
}

impl Scan<'_> {
    /// Walk a folder tree, past the folders an interrupted scan finished (named in
    /// `already_walked`). True when the walk went to its end.
    fn walk_folder(
        &mut self,
        root: &Path,
        formats: &FormatSet,
        exclude: HashSet<(u64, u64)>,
        cancel: &AtomicBool,
        already_walked: &mut HashSet<String>,
    ) -> Result<bool, ScanError> {
        let walked = scan_store::walked_dirs(&self.conn)?;
        let mut walker = Walker::new(root.to_path_buf(), formats, exclude, &walked);
        let mut write_err = None;
        let complete = walker
            .walk(&mut |ev| {
                let step = match ev {
                    WalkEvent::File(f) if !self.filter.takes(&f.rel, f.size) => {
                        self.summary.excluded += 1;
                        Ok(())
                    }
                    WalkEvent::File(f) => self.found(ScannedFile {
                        source_kind: SourceKind::Dir,
                        source_ref: f.rel,
                        path: f.abs,
                        size: f.size,
                        mtime_ns: f.mtime_ns,
                        format: f.format,
                        metadata: None,
                    }),
                    WalkEvent::DirDone(d) => self.dir_done(d),
                    WalkEvent::AlreadyWalked(d) => {
                        self.summary.resumed_dirs += 1;
                        already_walked.insert(d);
                        Ok(())
                    }
                    WalkEvent::Skipped(msg) => {
                        self.summary.skipped_entries += 1;
                        tracing::warn!("{msg}");
                        Ok(())
                    }
                };
                if let Err(e) = step {
                    write_err = Some(e);
                    return false;
                }
                !cancel.load(Ordering::SeqCst)
            })
            .map_err(|source| ScanError::Source {
                root: root.to_path_buf(),
                source,
            })?;
        for (format, n) in std::mem::take(&mut walker.unmatched) {
            *self.unmatched.entry(format).or_default() += n;
        }
        match write_err {
            Some(e) => Err(ScanError::State(e)),
            None => Ok(complete),
        }
    }

    /// After a complete scan, before any row is judged vanished: when no file at all was found,
    /// stop (exit 2, no row touched) if `--formats` matched nothing the source has, or if the
    /// source is empty while the state DB records files from it; a format named in `--formats`
    /// that matches no file is warned about.
    fn judge_matches(
        &mut self,
        source: &SourceSpec,
        formats: &FormatSet,
        summary: &ScanSummary,
    ) -> Result<(), ScanError> {
        if summary.seen == 0 && summary.resumed_dirs == 0 {
            scan_store::abandon(&self.conn)?;
            if summary.excluded > 0 {
                return Err(ScanError::FilterMatchesNothing {
                    excluded: summary.excluded,
                });
            }
            if !self.unmatched.is_empty() {
                let forgot_migration = migration_record::forget_if_unused(&self.conn)?;
                return Err(ScanError::NoMatchingFormats {
                    formats: formats.to_spec(),
                    present: describe_formats(&self.unmatched),
                    forgot_migration,
                });
            }
            let takes = |f: &str| formats.format_of(&format!("x.{f}")).is_some();
            if scan_store::any_row_present(&self.conn, &takes)? {
                return Err(ScanError::SourceEmpty {
                    root: source.root().to_path_buf(),
                });
            }
            return Ok(());
        }
        let FormatSet::Only(asked) = formats else {
            return Ok(());
        };
        if *formats == FormatSet::default() {
            // Not named by the user: most libraries have few of the default formats.
            return Ok(());
        }
        for f in asked.difference(&self.seen_formats) {
            if !scan_store::any_row_present(&self.conn, &|r: &str| r == f)? {
                tracing::warn!(
                    "--formats: no file in the source is of format {f:?} (files of formats not asked for: {})",
                    describe_formats(&self.unmatched)
                );
            }
        }
        Ok(())
    }

    /// List a calibre library's formats (those `formats` takes) with their books' metadata,
    /// `sizes.calibre_books` books at a time, checking `cancel` before each chunk and each
    /// format. True when the list went to its end.
    fn read_calibre(
        &mut self,
        root: &Path,
        formats: &FormatSet,
        cancel: &AtomicBool,
    ) -> Result<bool, ScanError> {
        let mut library = calibre::LibraryReader::open(
            root,
            self.sizes.calibre_books,
            calibre::DEFAULT_BUSY_TIMEOUT,
        )?;
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let Some(chunk) = library.next_chunk()? else {
                return Ok(true);
            };
            for cf in chunk {
                if cancel.load(Ordering::SeqCst) {
                    return Ok(false);
                }
                if cf.format.starts_with("original_") {
                    continue;
                }
                if formats.format_of(&format!("x.{}", cf.format)).is_none() {
                    *self.unmatched.entry(cf.format).or_default() += 1;
                    continue;
                }
                self.found_calibre(root, cf)?;
            }
        }
    }

    /// One format of a calibre book: its file's size and mtime as found (calibre's size, and
    /// no mtime, when the file is missing).
    fn found_calibre(
        &mut self,
        root: &Path,
        cf: calibre::CalibreFormat,
    ) -> crate::state::Result<()> {
        let path = cf.abs_path(root);
        let (size, mtime_ns) = match std::fs::metadata(&path) {
            Ok(m) => (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            Err(_) => (cf.size, 0),
        };
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        if !self.filter.takes(&rel, size) || !self.filter.takes_tags(&cf.metadata.tags) {
            self.summary.excluded += 1;
            return Ok(());
        }
        self.found(ScannedFile {
            source_kind: SourceKind::Calibre,
            source_ref: cf.source_ref(),
            path,
            size,
            mtime_ns,
            format: cf.format,
            metadata: Some((cf.metadata, Origin::Calibre)),
        })
    }

    fn found(&mut self, f: ScannedFile) -> crate::state::Result<()> {
        if !self.seen_formats.contains(&f.format) {
            self.seen_formats.insert(f.format.clone());
        }
        self.waiting.push(f);
        // No later than the batch's room, so the first, small batches commit on time.
        let room = self.limit.saturating_sub(self.batch.len()).max(1);
        if self.waiting.len() >= self.sizes.lookup.min(room) {
            self.compare_waiting()?;
        }
        Ok(())
    }

    /// A folder's whole subtree was walked: it is recorded with the next lookup's files, so
    /// never before its own.
    fn dir_done(&mut self, dir: String) -> crate::state::Result<()> {
        self.dirs_waiting.push(dir);
        if self.dirs_waiting.len() >= self.sizes.lookup {
            self.compare_waiting()?;
        }
        Ok(())
    }

    /// Compare the waiting files with their recorded rows (one query) and queue what changes,
    /// then the folders finished meanwhile.
    fn compare_waiting(&mut self) -> crate::state::Result<()> {
        if !self.waiting.is_empty() {
            let refs: Vec<&str> = self.waiting.iter().map(|f| f.source_ref.as_str()).collect();
            let known = scan_store::known_rows(&self.conn, &refs)?;
            for f in std::mem::take(&mut self.waiting) {
                let k = known.get(&f.source_ref);
                if let Some(k) = k {
                    self.found_rows.insert(k.id);
                }
                consider(k, &mut self.summary, &mut self.added, f, &mut self.batch);
            }
        }
        self.batch.dirs_done.append(&mut self.dirs_waiting);
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> crate::state::Result<()> {
        if self.batch.len() >= self.limit {
            self.limit = (self.limit * 2).min(self.sizes.batch);
            self.flush()?;
        }
        Ok(())
    }

    /// Write the batch (one transaction) and report what it added.
    fn flush(&mut self) -> crate::state::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        scan_store::write_batch(&mut self.conn, self.run, &batch)?;
        (self.committed)(std::mem::take(&mut self.added));
        Ok(())
    }
}

/// The tags in a row's recorded metadata JSON (none when it has none).
fn recorded_tags(metadata: Option<&str>) -> Vec<String> {
    metadata
        .and_then(|m| serde_json::from_str::<crate::metadata::Metadata>(m).ok())
        .map(|m| m.tags)
        .unwrap_or_default()
}

/// Compare one found file with what the DB knows of it (`known`: its row, if it has one) and
/// queue what must change.
fn consider(
    known: Option<&Known>,
    summary: &mut ScanSummary,
    added: &mut Added,
    f: ScannedFile,
    batch: &mut ScanBatch,
) {
    summary.seen += 1;
    match known {
        Some(k) if k.skipped_as_gone => {
            summary.reappeared += 1;
            added.rows += 1;
            added.bytes += f.size as i64;
            batch.reappeared.push((k.id, f));
        }
        None => {
            summary.new += 1;
            added.rows += 1;
            added.bytes += f.size as i64;
            batch.new.push(f);
        }
        Some(k) if k.size != f.size || k.mtime_ns != f.mtime_ns => {
            summary.changed += 1;
            if k.state.is_final() {
                added.rows += 1;
                added.bytes += f.size as i64;
            } else {
                added.bytes += f.size as i64 - k.size as i64;
            }
            batch.changed.push((k.id, k.state, f));
        }
        Some(k) if k.source_gone => batch.returned.push(k.id),
        Some(_) => {}
    }
}

/// `epub (12), pdf (3), no extension (1)`, most common first (20 at most); `none` when empty.
fn describe_formats(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = v
        .iter()
        .take(20)
        .map(|(f, n)| match f.as_str() {
            "" => format!("no extension ({n})"),
            f => format!("{f} ({n})"),
        })
        .collect();
    let more = v.len().saturating_sub(20);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The state DB and its companions, never to be recorded as books.
fn state_files(db: &Db) -> HashSet<(u64, u64)> {
    let p = db.path();
    let mut names = vec![p.to_path_buf()];
    for suffix in ["-wal", "-shm", ".lock"] {
        let mut s = p.as_os_str().to_os_string();
        s.push(suffix);
        names.push(s.into());
    }
    names
        .iter()
        .filter_map(|n| std::fs::metadata(n).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::runs;

    fn everything() -> Filter {
        crate::filter::FilterSpec::default().build().unwrap()
    }

    fn scan(db: &Db, root: &std::path::Path) -> (ScanSummary, Added) {
        let run = runs::begin(&db.conn().unwrap(), "scan", &[]).unwrap();
        let mut total = Added::default();
        let summary = scan_source(
            db,
            run,
            &SourceSpec::Dir(root.to_path_buf()),
            &FormatSet::default(),
            &everything(),
            crate::tuning::Tuning::detect().scan,
            &AtomicBool::new(false),
            &mut |a| {
                total.rows += a.rows;
                total.bytes += a.bytes;
            },
        )
        .unwrap();
        runs::end(&mut db.conn().unwrap(), run, 0, "finished").unwrap();
        (summary, total)
    }

    /// What each committed batch reports adding is the work the run's progress counts: new
    /// files, changed files whose rows had finished, and the size change of a changed file
    /// whose row was still to do.
    #[test]
    fn a_scan_reports_the_rows_and_bytes_it_adds_to_the_work() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        for (name, len) in [("a.txt", 10), ("b.txt", 20), ("c.txt", 30)] {
            std::fs::write(lib.join(name), vec![b'x'; len]).unwrap();
        }
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let (summary, added) = scan(&db, &lib);
        assert_eq!(summary.new, 3);
        assert_eq!(added, Added { rows: 3, bytes: 60 });

        // a.txt was migrated; b.txt is still to do. Both change; c.txt does not.
        db.conn()
            .unwrap()
            .execute(
                "UPDATE files SET state = 'uploaded' WHERE source_ref = 'a.txt'",
                [],
            )
            .unwrap();
        std::fs::write(lib.join("a.txt"), vec![b'y'; 15]).unwrap();
        std::fs::write(lib.join("b.txt"), vec![b'y'; 12]).unwrap();
        let (summary, added) = scan(&db, &lib);
        assert_eq!((summary.new, summary.changed), (0, 2));
        assert_eq!(
            added,
            Added {
                rows: 1,
                bytes: 15 - 8
            }
        );
    }

    /// At every commit, each folder the scan has recorded as walked (what an interrupted scan
    /// skips when it resumes) has all its files recorded: a folder is never marked done while
    /// its files wait to be compared with the DB. Many small folders, so folders finish long
    /// before a lookup's worth of files is waiting. The scan is sized small here (what it is
    /// given, not the defaults): transactions of 4 rows growing to 16, lookups of 8.
    #[test]
    fn a_folder_is_recorded_as_walked_only_with_all_its_files() {
        let sizes = ScanTuning {
            first_batch: 4,
            batch: 16,
            lookup: 8,
            calibre_books: 512,
        };
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        let folders = 12 * sizes.batch;
        for i in 0..folders {
            let d = lib.join(format!("f{i:04}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("book.txt"), format!("book {i}")).unwrap();
        }
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let run = runs::begin(&db.conn().unwrap(), "scan", &[]).unwrap();
        let (mut commits, mut checked_folders, mut largest) = (0, 0, 0);
        let summary = scan_source(
            &db,
            run,
            &SourceSpec::Dir(lib.clone()),
            &FormatSet::default(),
            &everything(),
            sizes,
            &AtomicBool::new(false),
            &mut |added| {
                // The first batch is a small one (the pipeline starts on it); they grow to
                // the largest, no further.
                let most = if commits == 0 {
                    sizes.first_batch
                } else {
                    sizes.batch
                };
                assert!(added.rows <= most as u64, "batch {commits}: {added:?}");
                largest = largest.max(added.rows);
                commits += 1;
                let conn = db.conn().unwrap();
                let done: Vec<String> = conn
                    .prepare("SELECT dir FROM scan_progress WHERE dir != ''")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                for d in done {
                    let rows: i64 = conn
                        .query_row(
                            "SELECT COUNT(*) FROM files WHERE source_ref = ?1 || '/book.txt'",
                            [&d],
                            |r| r.get(0),
                        )
                        .unwrap();
                    assert_eq!(rows, 1, "folder {d} recorded as walked without its file");
                    checked_folders += 1;
                }
            },
        )
        .unwrap();
        assert!(summary.complete);
        assert_eq!(summary.new, folders);
        assert!(
            commits > 1 && checked_folders > 0,
            "{commits} {checked_folders}"
        );
        assert!(
            largest > sizes.first_batch as u64,
            "the batches grow: {largest}"
        );
    }

    /// The rows a scan recorded, in the order it recorded them: what a run then migrates.
    fn recorded(db: &Db) -> Vec<(String, String, i64, String, Option<String>)> {
        db.conn()
            .unwrap()
            .prepare("SELECT source_ref, path, size, format, metadata FROM files ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Scan the calibre library at `root` into a new state DB in `dir`, read `calibre_books`
    /// books at a time; `committed` may set `cancel`.
    fn scan_calibre(
        dir: &Path,
        root: &Path,
        calibre_books: usize,
        cancel: &AtomicBool,
        committed: &mut dyn FnMut(Added),
    ) -> (Db, ScanSummary) {
        let sizes = ScanTuning {
            first_batch: 2,
            batch: 8,
            lookup: 2,
            calibre_books,
        };
        let db = Db::open(&dir.join("state.db")).unwrap();
        let run = runs::begin(&db.conn().unwrap(), "scan", &[]).unwrap();
        let source = SourceSpec::Calibre(root.to_path_buf());
        let summary = scan_source(
            &db,
            run,
            &source,
            &FormatSet::default(),
            &everything(),
            sizes,
            cancel,
            committed,
        )
        .unwrap();
        runs::end(&mut db.conn().unwrap(), run, 0, "finished").unwrap();
        (db, summary)
    }

    /// A calibre library read 3 books at a time is recorded exactly as when read whole: the
    /// same rows (source_ref, path, size, format, calibre's metadata) in the same order.
    #[test]
    fn a_calibre_library_read_in_small_chunks_is_recorded_as_when_read_whole() {
        let (_lib, root) = crate::source::calibre::tests::copy_fixture();
        let (whole_dir, small_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let never = AtomicBool::new(false);
        let (whole, whole_summary) =
            scan_calibre(whole_dir.path(), &root, usize::MAX, &never, &mut |_| {});
        let (small, small_summary) = scan_calibre(small_dir.path(), &root, 3, &never, &mut |_| {});
        assert!(whole_summary.complete && small_summary.complete);
        assert_eq!(small_summary.seen, 43);
        assert_eq!(whole_summary.seen, 43);
        let rows = recorded(&small);
        assert_eq!(rows.len(), 43);
        assert!(
            rows.iter().all(|r| r.4.is_some()),
            "every row has calibre's metadata"
        );
        assert_eq!(rows, recorded(&whole));
    }

    /// Ctrl-C during the scan of a calibre library: the scan stops within the chunk of books it
    /// holds (3 here) instead of listing the rest, and says it did not finish. `cancel` is set
    /// at the first commit (of 2 rows). Book 40 has an unsafe path, which fails any read of
    /// the chunk that holds it: the scan never reads it.
    #[test]
    fn a_calibre_scan_stops_when_cancelled_without_reading_the_rest() {
        let (_lib, root) = crate::source::calibre::tests::copy_fixture();
        rusqlite::Connection::open(root.join("metadata.db"))
            .unwrap()
            .execute("UPDATE data SET name = '../../escape' WHERE book = 40", [])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        let mut commits = 0;
        let (db, summary) = scan_calibre(dir.path(), &root, 3, &cancel, &mut |_| {
            commits += 1;
            cancel.store(true, Ordering::SeqCst);
        });
        assert!(commits >= 1);
        assert!(!summary.complete, "{summary:?}");
        // The formats of the library's first 3 books, at most, were seen and recorded.
        let first_chunk: i64 = rusqlite::Connection::open(root.join("metadata.db"))
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM data
                 WHERE book IN (SELECT id FROM books ORDER BY id LIMIT 3)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let first_chunk = first_chunk as usize;
        assert!(first_chunk < 43);
        assert!(
            (1..=first_chunk).contains(&summary.seen),
            "seen {} of the first chunk's {first_chunk} formats",
            summary.seen
        );
        assert_eq!(recorded(&db).len(), summary.seen);
    }
}
