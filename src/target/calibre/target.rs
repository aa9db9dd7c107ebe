//! The calibre library as a pipeline target: decides which calibre book each file belongs to,
//! writes its format file (outside the lock, so several copy at once), and records written
//! books in `metadata.db` from the state writer's flush hook — so a file is never `uploaded` in
//! the state DB before its book and `data` row are committed in the library.
//!
//! Which book a file goes to (`books`, `identity`):
//! - a calibre source book keeps its uuid (and, into a library that had no books, its id): every
//!   format of it goes to the book this migration made with that uuid; a book the user had
//!   with it is matched by calibre's duplicate rule like any other;
//! - any other file is grouped by calibre's fuzzy title + authors, and its book gets a uuid
//!   derived from that group and the library's id, so a rerun after a crash finds the book the
//!   earlier run committed and adds the missing formats to it;
//! - a book the library held before (calibre's duplicate rule: same authors and fuzzy title,
//!   language when known, or a shared identifier) is `skipped`, unless `--merge-formats`,
//!   which adds the formats it lacks.
//!
//! A new book's folder carries a `.bookferry-pending` marker until its row is recorded; in a
//! recorded book's folder, the marker names each file not recorded yet. So a killed run leaves
//! nothing a rerun does not clean.

use super::books::{Books, Decision, Folder, FolderState, Slot};
use super::cover::cover_of;
use super::identity::Identified;
use super::{make_book_dir, write_opfs, BookIds, CalibreError, CalibreLibrary, RowsWriter};
use crate::calibre::METADATA_DB;
use crate::failure::{Failure, FailureKind};
use crate::hash;
use crate::skip_reason::SkipReason;
use crate::target::folder::{write_new_file, LinkMode, TEMP_PREFIX};
use crate::target::held_files::{HeldFiles, HeldFilesBuilder};
use crate::target::staged::Staging;
use crate::target::{ContentQuery, NameQuery, Payload, Placed, Transferred, Unusable};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How the calibre target places books.
#[derive(Debug, Clone)]
pub struct CalibreOptions {
    pub link: LinkMode,
    /// Add the formats a book already in the library lacks, instead of skipping the file.
    pub merge_formats: bool,
    /// Write even while a calibre program holds calibre's writer lock.
    pub ignore_calibre_lock: bool,
    /// Give each new book the cover calibre would (`--no-covers`: none, except a calibre
    /// source book's own).
    pub covers: bool,
    /// Part of every derived uuid: books of this migration are told apart from all others.
    pub migration_key: String,
    /// A calibre source's book uuids: a target book with one of them is a copy of a source
    /// book, never to be taken for another source book.
    pub source_uuids: std::sync::Arc<HashSet<String>>,
    /// The source is a calibre library: its books are kept as they are, two that hold the
    /// same bytes too, so content is never looked up across books ([`CalibreTarget::check_content`]
    /// answers nothing) and the pipeline skips no content duplicate.
    pub keep_source_books: bool,
    /// How this migration numbers its books in this library, as recorded when it first opened
    /// it; `None`: not decided yet (this is the first open), decided now
    /// ([`CalibreTarget::book_ids`] says what, for the caller to record).
    pub book_ids: Option<BookIds>,
    /// The highest book id of a calibre source (0 for a folder source).
    pub source_max_id: i64,
}

/// A calibre library being filled by one run.
pub struct CalibreTarget {
    root: PathBuf,
    opts: CalibreOptions,
    /// `None` in a dry run: nothing is opened for writing.
    books: Option<Mutex<Books>>,
    /// Writes a commit's rows without the books lock (`None` in a dry run).
    rows: Option<RowsWriter>,
    /// The library's id and the migration's key: what derived uuids are made from.
    uuid_seed: String,
    /// The library folder, for a `syncfs` that needs no lock.
    root_dir: Option<File>,
    /// The format files the library held at open: by (lowercased file name, size) for the
    /// name check, by content for the content check.
    held: HeldFiles,
    /// Where the hash task stages copies (see `staging`).
    staging: Option<Staging>,
    /// How books are numbered (`None` in a dry run).
    book_ids: Option<BookIds>,
}

impl CalibreTarget {
    /// Open (or, when `root` is missing or empty, create) the library for writing.
    pub fn open(
        root: &Path,
        source_root: &Path,
        opts: CalibreOptions,
        dry_run: bool,
    ) -> Result<CalibreTarget, Unusable> {
        let unusable = Unusable::Calibre;
        let mut target = CalibreTarget {
            root: root.to_path_buf(),
            opts: opts.clone(),
            books: None,
            rows: None,
            uuid_seed: String::new(),
            root_dir: None,
            held: HeldFiles::none(root.to_path_buf()),
            staging: None,
            book_ids: None,
        };
        if dry_run {
            // What the real run would refuse at open, checked without writing anything.
            CalibreLibrary::preflight(root, opts.ignore_calibre_lock).map_err(unusable)?;
            link_on_one_filesystem(&opts, source_root, root)?;
            if root.join(METADATA_DB).is_file() {
                tracing::info!(
                    "dry run: {} is not opened; every file is shown as going to the library",
                    root.display()
                );
            }
            return Ok(target);
        }
        let mut lib =
            CalibreLibrary::open_with(root, opts.ignore_calibre_lock).map_err(unusable)?;
        let book_ids = match opts.book_ids {
            Some(ids) => ids,
            None => lib.book_ids_now(opts.keep_source_books).map_err(unusable)?,
        };
        lib.number_books(book_ids, opts.source_max_id);
        target.book_ids = Some(book_ids);
        if !lib.holds_calibre_lock() {
            tracing::warn!(
                "--ignore-calibre-lock: writing {} while a calibre program holds its writer lock",
                root.display()
            );
        }
        link_on_one_filesystem(&opts, source_root, root)?;
        if opts.keep_source_books {
            super::extras::from_calibre_source(&lib, source_root).map_err(unusable)?;
        }
        remove_staged_leftovers(root);
        let mut held = HeldFilesBuilder::new(root.to_path_buf());
        for (rel, size) in lib.format_files().map_err(unusable)? {
            let name = rel.rsplit('/').next().unwrap_or(&rel).to_lowercase();
            held.add(&rel, size, &name);
        }
        target.held = held.build();
        let uuid_seed = format!(
            "{}\0{}",
            lib.library_id().map_err(unusable)?,
            opts.migration_key
        );
        target.root_dir = Some(File::open(root).map_err(|source| Unusable::CalibreIo {
            root: root.to_path_buf(),
            source,
        })?);
        if opts.link == LinkMode::Copy && target.held.is_empty() {
            target.staging = Some(Staging::probe(root));
        }
        target.rows = Some(lib.rows_writer());
        target.uuid_seed = uuid_seed;
        target.books = Some(Mutex::new(Books::new(
            lib,
            opts.source_uuids.clone(),
            book_ids.max_before,
        )));
        Ok(target)
    }

    /// How this migration numbers its books here: as recorded (`CalibreOptions::book_ids`), or
    /// as decided by this first open, for the caller to record before any book is written.
    /// `None` in a dry run.
    pub fn book_ids(&self) -> Option<BookIds> {
        self.book_ids
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn books(&self) -> Option<MutexGuard<'_, Books>> {
        self.books
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Keys whose file name and size a format file in the library has (a calibre source's
    /// files are named as calibre names them, so a rerun skips them without hashing).
    pub fn check_names(&self, q: &[NameQuery]) -> HashSet<i64> {
        q.iter()
            .filter(|n| self.held.has_name(&n.file_name.to_lowercase(), n.size))
            .map(|n| n.key)
            .collect()
    }

    /// Whether the source's books are kept as they are (a calibre source): no content
    /// duplicate is skipped (see [`CalibreOptions::keep_source_books`]).
    pub fn keeps_source_books(&self) -> bool {
        self.opts.keep_source_books
    }

    /// Queries whose bytes (BLAKE3) a format file the library held at open has, with its path:
    /// from a folder source a library is asked as a target folder is, each candidate of the
    /// right size hashed once. From a calibre source, nothing: two books may hold the same
    /// bytes. Blocking: reads files.
    pub fn check_content(&self, q: &[ContentQuery]) -> HashMap<i64, Option<String>> {
        if self.opts.keep_source_books {
            return HashMap::new();
        }
        self.held.find(q)
    }

    /// Where a file would go (for `--dry-run`).
    pub fn describe(&self, p: &Payload) -> String {
        let md = p.metadata.clone().unwrap_or_default();
        format!(
            "calibre library {}: {:?} by {} ({})",
            self.root.display(),
            md.title.as_deref().unwrap_or("Unknown"),
            if md.authors.is_empty() {
                "Unknown".to_string()
            } else {
                md.authors.join(" & ")
            },
            p.format.to_uppercase()
        )
    }

    /// Put one file into its book. Blocking: called on a blocking thread.
    pub fn transfer(&self, p: &Payload) -> Result<Transferred, Failure> {
        let fail = |e: &CalibreError| {
            let kind = match e {
                CalibreError::Io { source, .. } => FailureKind::of_target_io(source),
                _ => FailureKind::TargetWrite,
            };
            Failure::new(kind, format!("{}: {e}", p.source_rel))
        };
        // What the file's metadata says of its book, worked out before the lock.
        let known = Identified::of(p, &self.uuid_seed);
        let slot = {
            let Some(mut books) = self.books() else {
                return Err(Failure::new(
                    FailureKind::TargetWrite,
                    "internal: the calibre library is not open",
                ));
            };
            match books
                .decide(p, &self.opts, &self.uuid_seed, known)
                .map_err(|e| fail(&e))?
            {
                Decision::Skip(reason, detail) => {
                    return Ok(Transferred::AlreadyThere { reason, detail })
                }
                Decision::Recorded { book_id, rel_path } => {
                    return Ok(self.compare_recorded(p, book_id, rel_path))
                }
                Decision::Write(slot) => slot,
            }
        };
        if let Err(e) = self.folder_for(&slot) {
            let mut books = self.books().expect("open: checked above");
            books.not_written(&slot);
            return Err(fail(&e));
        }
        let written = self.write_format(p, &slot.path).and_then(|placed| {
            if let Some(dest) = &slot.replaces {
                fs::rename(&slot.path, dest)?;
            }
            if self.opts.keep_source_books && matches!(slot.folder, Folder::Make) {
                // The transfer that made a new book's folder brings its `data/` files.
                let dir = slot.path.parent().unwrap_or(&self.root);
                super::extras::copy_data_dir(&p.source_path, dir)?;
            }
            Ok(placed)
        });
        // `--no-covers` spares making covers from files; a calibre source's own cover (the
        // user's, a copy) comes all the same.
        let from_source = p.origin == Some(crate::metadata::Origin::Calibre);
        let cover = match (
            &written,
            slot.wants_cover && (self.opts.covers || from_source),
        ) {
            (Ok(_), true) => cover_of(p, slot.replaces.as_ref().unwrap_or(&slot.path))
                .unwrap_or_else(|e| {
                    tracing::warn!("{}: added without a cover: {e}", p.source_rel);
                    None
                }),
            _ => None,
        };
        let mut books = self.books().expect("open: checked above");
        match written {
            Ok(mut placed) => {
                if let Some(jpeg) = cover {
                    if let Err(e) = books.put_cover(slot.book_id, &jpeg) {
                        tracing::warn!("{}: cover not stored: {e}", p.source_rel);
                    }
                }
                books.written(&slot, p.size);
                placed.target_ref = slot.rel_path.clone();
                let how = if slot.new_book {
                    " (new)"
                } else if slot.replaces.is_some() {
                    " (file replaced: the source changed)"
                } else {
                    ""
                };
                placed.detail = Some(format!("→ calibre book #{}{how}", slot.book_id));
                Ok(Transferred::Placed(placed))
            }
            Err(e) => {
                let _ = fs::remove_file(&slot.path);
                books.not_written(&slot);
                Err(Failure::new(
                    FailureKind::of_target_io(&e),
                    format!(
                        "{}: cannot write {}: {e}",
                        p.source_rel,
                        slot.path.display()
                    ),
                ))
            }
        }
    }

    /// Make the slot's book folder (or wait until the transfer making it is done). The error
    /// is shared: a failure to make the folder is also the cause of every other file's.
    fn folder_for(&self, slot: &Slot) -> Result<(), Arc<CalibreError>> {
        match slot.folder {
            Folder::Ready => Ok(()),
            Folder::Make => {
                let rel_dir = slot
                    .rel_path
                    .rsplit_once('/')
                    .map_or("", |(d, _)| d)
                    .to_string();
                let made = make_book_dir(&self.root, &rel_dir, slot.book_id).map_err(Arc::new);
                let mut books = self.books().expect("open: checked above");
                match &made {
                    Ok(()) => books.folders_to_make.remove(&slot.book_id),
                    Err(e) => books
                        .folders_to_make
                        .insert(slot.book_id, FolderState::Failed(Arc::clone(e))),
                };
                made
            }
            Folder::Await => loop {
                {
                    let books = self.books().expect("open: checked above");
                    match books.folders_to_make.get(&slot.book_id) {
                        None => return Ok(()),
                        Some(FolderState::Failed(e)) => {
                            return Err(Arc::new(CalibreError::FolderNotMade {
                                path: self.root.join(&slot.rel_path),
                                source: Arc::clone(e),
                            }))
                        }
                        Some(_) => {}
                    }
                }
                // Another file of a brand-new book, a moment behind the first: rare and short.
                std::thread::sleep(std::time::Duration::from_millis(1));
            },
        }
    }

    /// The book already has a file of this format: the same bytes are `target_has_content`,
    /// other bytes `book_has_format`; either way the row's file is not written.
    fn compare_recorded(&self, p: &Payload, book_id: i64, rel_path: String) -> Transferred {
        // A file of another size holds other bytes: no need to read it.
        let existing = File::open(self.root.join(&rel_path)).and_then(|f| {
            if f.metadata()?.len() != p.size {
                return Err(io::Error::other("another size"));
            }
            hash::hash_reader(f)
        });
        match existing {
            Ok((d, _)) if d.same_content(&p.digests) => Transferred::AlreadyThere {
                reason: SkipReason::TargetHasContent,
                detail: format!("calibre book #{book_id} already has these bytes: {rel_path}"),
            },
            _ => Transferred::AlreadyThere {
                reason: SkipReason::BookHasFormat,
                detail: format!(
                    "calibre book #{book_id} already has a {} file ({rel_path}) with other content",
                    p.format.to_uppercase()
                ),
            },
        }
    }

    fn write_format(&self, p: &Payload, dest: &Path) -> io::Result<Placed> {
        match self.opts.link {
            LinkMode::Hardlink => {
                fs::hard_link(&p.source_path, dest)?;
                Ok(Placed::default())
            }
            LinkMode::Symlink => {
                std::os::unix::fs::symlink(&p.source_path, dest)?;
                Ok(Placed::default())
            }
            LinkMode::Copy | LinkMode::Reflink => {
                write_new_file(p, dest, self.opts.link == LinkMode::Reflink)
            }
        }
    }

    /// Where the hash task may stage a file of copy mode (see `target::staged`): the library's
    /// folder, when the library held no book files when the run started (a library that has
    /// some may already have the book, and a staged copy would be written for nothing).
    pub fn staging(&self) -> Option<&Staging> {
        self.staging.as_ref()
    }

    /// Record every book and format written so far (files synced first). The state writer
    /// calls this before it commits moves to `uploaded`. In steps, so transfers go on during
    /// the slow ones: under the books lock, the books to record (each with the formats written
    /// so far) and their `metadata.opf` texts; without it, those files; under it briefly, the
    /// markers of books still being written; without it (the database's own lock only), one
    /// `syncfs` while the rows go into one transaction, committed once the `syncfs` is done;
    /// under the books lock again, the books become recorded.
    pub fn commit(&self) -> Result<(), CalibreError> {
        let Some(books) = &self.books else {
            return Ok(());
        };
        let lock = || books.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let snap = lock().snapshot()?;
        if snap.is_empty() {
            return Ok(());
        }
        let snapped = started.elapsed();
        let opfs = write_opfs(&self.root, &snap.books, &snap.resolved);
        let opfs_written = started.elapsed();
        let books = snap.books.len();
        let mut synced = None;
        // (Bound first: a guard in the `match` head would live through every arm.)
        let begun = lock().begin_record(&snap, opfs.is_ok());
        let res = match begun {
            Err(e) => Err(e),
            Ok(None) => lock().end_record(snap, &[], None),
            Ok(Some(added)) => {
                let rows = self
                    .rows
                    .as_ref()
                    .expect("open: the rows writer comes with the books");
                // The rows go in while the files are synced; they are committed after.
                let recorded = std::thread::scope(|s| {
                    let sync = s.spawn(|| self.syncfs());
                    rows.write_when_durable(&snap.books, &snap.resolved, &added, || {
                        let r = sync.join().unwrap_or_else(|_| {
                            Err(io::Error::other("the syncfs thread panicked"))
                        });
                        synced = Some(started.elapsed());
                        r
                    })
                });
                lock().end_record(snap, &added, Some(recorded))
            }
        };
        // `-vv` shows where a commit's time goes (the state writer waits for it).
        tracing::debug!(
            "calibre commit of {books} book(s): {:?} (snapshot {snapped:?}, metadata.opf files by {opfs_written:?}, rows in and syncfs done by {synced:?}, then the commit and the books recorded)",
            started.elapsed()
        );
        opfs?;
        res
    }

    fn syncfs(&self) -> io::Result<()> {
        match &self.root_dir {
            Some(dir) => crate::target::flusher::syncfs(dir),
            None => Ok(()),
        }
    }
}

impl Drop for CalibreTarget {
    fn drop(&mut self) {
        // Books planned for files that all failed: their folders go now, not at the next run.
        if let Some(mut books) = self.books() {
            books.abandon_empty();
        }
    }
}

/// Remove the staged copies (`target::staged`) a killed run left in the library's folder: files
/// named with bookferry's temporary prefix, which only bookferry writes there.
fn remove_staged_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `--link hardlink|reflink` needs the source and the library on one filesystem (checked where
/// the library folder exists already).
fn link_on_one_filesystem(
    opts: &CalibreOptions,
    source_root: &Path,
    root: &Path,
) -> Result<(), Unusable> {
    if !matches!(opts.link, LinkMode::Hardlink | LinkMode::Reflink) {
        return Ok(());
    }
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev());
    if let (Ok(s), Ok(d)) = (dev(source_root), dev(root)) {
        if s != d {
            return Err(Unusable::LinkAcrossFilesystems {
                mode: opts.link,
                source_root: source_root.to_path_buf(),
                what: "calibre library",
                target: root.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;
    use crate::metadata::{Metadata, Origin};
    use crate::target::staged::Staged;
    use std::sync::Arc;

    fn payload(src: &Path, row_id: i64, name: &str, bytes: &[u8]) -> Payload {
        let path = src.join(name);
        fs::write(&path, bytes).unwrap();
        Payload {
            row_id,
            source_path: path,
            source_rel: name.into(),
            file_name: name.into(),
            size: bytes.len() as u64,
            format: name.rsplit_once('.').unwrap().1.into(),
            digests: hash_bytes(bytes),
            metadata: Some(Metadata {
                title: Some("Dune".into()),
                authors: vec!["Frank Herbert".into()],
                ..Metadata::default()
            }),
            origin: Some(Origin::Embedded),
            data: Some(Arc::new(bytes.to_vec())),
            previous_ref: None,
            staged: None,
        }
    }

    fn data_rows(lib: &Path) -> Vec<String> {
        let conn = rusqlite::Connection::open(lib.join(METADATA_DB)).unwrap();
        let mut stmt = conn
            .prepare("SELECT format FROM data ORDER BY format")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Copy mode into a library of its own, never waiting for calibre's lock.
    fn copy_options() -> CalibreOptions {
        CalibreOptions {
            link: LinkMode::Copy,
            merge_formats: false,
            ignore_calibre_lock: true,
            covers: true,
            migration_key: "test".into(),
            source_uuids: Arc::new(HashSet::new()),
            keep_source_books: false,
            book_ids: None,
            source_max_id: 0,
        }
    }

    /// A temp dir with a source folder `src` and a new library `lib` opened in copy mode.
    fn new_library() -> (tempfile::TempDir, PathBuf, PathBuf, CalibreTarget) {
        let dir = tempfile::tempdir().unwrap();
        let (src, lib) = (dir.path().join("src"), dir.path().join("lib"));
        fs::create_dir(&src).unwrap();
        let target = CalibreTarget::open(&lib, &src, copy_options(), false).expect("opened");
        (dir, src, lib, target)
    }

    /// A new library takes staged copies (`target::staged`): the transfer links one into its
    /// book's folder, without reading the source again. A named staged copy a killed run left
    /// in the library's folder is removed when the library is opened again; other dot-files
    /// are not touched. A library that already holds book files takes no staged copies.
    #[test]
    fn a_staged_copy_lands_in_its_book_folder_and_leftovers_go_at_open() {
        let _serial = super::super::tests::serial();
        let (_dir, src, lib, target) = new_library();
        let staging = target.staging().expect("a new library takes staged copies");
        assert_eq!(staging.dir(), lib.as_path());
        let mut epub = payload(&src, 1, "dune.epub", b"the epub's bytes");
        let staged = Arc::new(Staged::write(staging, 1, b"the epub's bytes").unwrap());
        let staged_path = staged.path().map(Path::to_path_buf);
        epub.data = None;
        epub.staged = Some(staged);
        // The source is not read again: the staged copy is all the transfer needs.
        fs::remove_file(&epub.source_path).unwrap();
        let Transferred::Placed(placed) = target.transfer(&epub).unwrap() else {
            panic!("the EPUB is written");
        };
        drop(epub);
        assert!(
            staged_path.is_none_or(|p| !p.exists()),
            "the staged copy was moved"
        );
        assert_eq!(
            fs::read(lib.join(&placed.target_ref)).unwrap(),
            b"the epub's bytes"
        );
        target.commit().unwrap();
        assert_eq!(data_rows(&lib), ["EPUB"]);
        drop(target);

        let leftover = lib.join(format!("{TEMP_PREFIX}4242-s9-0"));
        fs::write(&leftover, b"killed mid-run").unwrap();
        fs::write(lib.join(".user-notes"), b"not ours").unwrap();
        let target = CalibreTarget::open(&lib, &src, copy_options(), false).expect("reopened");
        assert!(!leftover.exists(), "a staged leftover stays in the library");
        assert!(lib.join(".user-notes").exists());
        assert!(target.staging().is_none(), "the library has books now");
    }

    /// A commit writes its rows without the books lock. A file of one of its books started
    /// meanwhile is not in those rows: it must be named in the book's marker before it exists,
    /// so that after a crash the rerun removes it (and the next commit records it otherwise).
    #[test]
    fn a_format_started_while_its_book_is_recorded_is_named_in_its_marker() {
        let _serial = super::super::tests::serial();
        let (_dir, src, lib, target) = new_library();
        let epub = payload(&src, 1, "dune.epub", b"the epub's bytes");
        let pdf = payload(&src, 2, "dune.pdf", b"the pdf's bytes");
        let Transferred::Placed(first) = target.transfer(&epub).unwrap() else {
            panic!("the EPUB is written");
        };
        let book_dir = lib.join(first.target_ref.rsplit_once('/').unwrap().0);
        let marker = book_dir.join(super::super::PENDING_MARKER);

        // A commit, step by step: its snapshot (the EPUB only), then its rows being written…
        let snap = target.books().unwrap().snapshot().unwrap();
        write_opfs(&lib, &snap.books, &snap.resolved).unwrap();
        let added = target
            .books()
            .unwrap()
            .begin_record(&snap, true)
            .unwrap()
            .unwrap();
        // …while the PDF of the same book is written.
        let Transferred::Placed(second) = target.transfer(&pdf).unwrap() else {
            panic!("the PDF is written");
        };
        let pdf_name = second.target_ref.rsplit_once('/').unwrap().1.to_string();
        assert!(book_dir.join(&pdf_name).is_file());
        let rows = target
            .rows
            .as_ref()
            .unwrap()
            .write(&snap.books, &snap.resolved, &added);
        target
            .books()
            .unwrap()
            .end_record(snap, &added, Some(rows))
            .unwrap();

        assert_eq!(
            data_rows(&lib),
            ["EPUB"],
            "the commit recorded what its snapshot took"
        );
        let named = fs::read_to_string(&marker).expect("the book keeps its marker");
        assert_eq!(named.lines().collect::<Vec<_>>(), [pdf_name.as_str()]);

        // Killed here, the rerun removes the unrecorded PDF and keeps the recorded EPUB.
        drop(target);
        drop(CalibreLibrary::open_with(&lib, true).expect("reopened"));
        assert!(
            !book_dir.join(&pdf_name).exists(),
            "the named file is cleaned"
        );
        assert!(!marker.exists());
        assert!(lib.join(&first.target_ref).is_file());
        assert_eq!(data_rows(&lib), ["EPUB"]);

        // Not killed: the next commit records the PDF and the marker goes.
        let target = CalibreTarget::open(&lib, &src, copy_options(), false).expect("opened again");
        assert!(matches!(
            target.transfer(&pdf).unwrap(),
            Transferred::Placed(_)
        ));
        target.commit().unwrap();
        assert_eq!(data_rows(&lib), ["EPUB", "PDF"]);
        assert!(!marker.exists(), "nothing left unrecorded");
    }

    /// A book whose folder could not be made: the file that was to make it fails saying why;
    /// another file of the book, waiting for the folder, fails too, that first error kept as
    /// its cause.
    #[test]
    fn a_book_folder_that_could_not_be_made_fails_its_other_files_with_the_cause() {
        let _serial = super::super::tests::serial();
        let (_dir, src, lib, target) = new_library();
        // The author's folder cannot be made: a file has its name.
        let author = lib.join("Frank Herbert");
        fs::write(&author, b"not a folder").unwrap();
        let why = format!(
            "{}: exists and is not a folder (or is a symlink)",
            author.display()
        );
        // Both files are given their book before either makes its folder: the first makes
        // it, the second waits for it.
        let decide = |p: &Payload| {
            let known = Identified::of(p, &target.uuid_seed);
            let mut books = target.books().unwrap();
            match books.decide(p, &target.opts, &target.uuid_seed, known) {
                Ok(Decision::Write(slot)) => slot,
                _ => panic!("{} is written", p.source_rel),
            }
        };
        let epub = decide(&payload(&src, 1, "dune.epub", b"the epub's bytes"));
        let pdf = decide(&payload(&src, 2, "dune.pdf", b"the pdf's bytes"));
        assert_eq!((epub.folder, pdf.folder), (Folder::Make, Folder::Await));
        let err = target.folder_for(&epub).expect_err("no author folder");
        assert_eq!(err.to_string(), why);

        let err = target
            .folder_for(&pdf)
            .expect_err("the folder is not there");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the book's folder could not be made: {why}",
                pdf.path.display()
            )
        );
        let cause = std::error::Error::source(&err).expect("the first error is kept");
        assert_eq!(cause.to_string(), why);
        let CalibreError::FolderNotMade { source, .. } = &*err else {
            panic!("expected FolderNotMade, got {err:?}");
        };
        assert!(
            matches!(&**source, CalibreError::AuthorNotAFolder { path } if *path == author),
            "{source:?}"
        );
    }

    /// A committed book that the target forgot (it keeps only a few with nothing in flight) is
    /// found again in the library: a later format of it goes into it, the same format again is
    /// not written twice, and a book of this run keeps being this run's own.
    #[test]
    fn a_forgotten_book_gets_its_later_formats_once() {
        let _serial = super::super::tests::serial();
        let (_dir, src, lib, target) = new_library();
        let place = |p: &Payload| match target.transfer(p).unwrap() {
            Transferred::Placed(placed) => placed.target_ref,
            Transferred::AlreadyThere { detail, .. } => panic!("{}: {detail}", p.file_name),
        };
        // Six other books, each committed: more than the target keeps settled.
        let six_others = |first_row: i64, name: &str| {
            for i in 0..6 {
                let mut other = payload(
                    &src,
                    first_row + i,
                    &format!("{name}{i}.epub"),
                    format!("{name}{i}").as_bytes(),
                );
                other.metadata.as_mut().unwrap().title = Some(format!("{name} {i}"));
                place(&other);
                target.commit().unwrap();
            }
        };
        let epub = place(&payload(&src, 1, "dune.epub", b"the epub's bytes"));
        target.commit().unwrap();
        six_others(10, "other");
        let pdf = place(&payload(&src, 2, "dune.pdf", b"the pdf's bytes"));
        assert_eq!(
            pdf.rsplit_once('/').unwrap().0,
            epub.rsplit_once('/').unwrap().0,
            "the PDF goes into the EPUB's book"
        );
        target.commit().unwrap();
        six_others(20, "more");
        let again = payload(&src, 3, "dune-again.pdf", b"other pdf bytes");
        match target.transfer(&again).unwrap() {
            Transferred::AlreadyThere { reason, .. } => {
                assert_eq!(reason, SkipReason::BookHasFormat)
            }
            Transferred::Placed(p) => panic!("a second PDF was placed: {}", p.target_ref),
        }
        target.commit().unwrap();
        let conn = rusqlite::Connection::open(lib.join(METADATA_DB)).unwrap();
        let dune: Vec<(i64, String)> = conn
            .prepare("SELECT b.id, d.format FROM books b JOIN data d ON d.book = b.id WHERE b.title = 'Dune' ORDER BY d.format")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(dune, vec![(1, "EPUB".to_string()), (1, "PDF".to_string())]);
        let books: i64 = conn
            .query_row("SELECT count(*) FROM books", [], |r| r.get(0))
            .unwrap();
        assert_eq!(books, 13);
    }

    /// A book the library held when it was opened, deleted since (by calibre, say): a file
    /// that goes to it fails, naming it.
    #[test]
    fn a_book_deleted_meanwhile_fails_its_file_naming_it() {
        let _serial = super::super::tests::serial();
        let (_dir, src, lib, target) = new_library();
        let epub = payload(&src, 1, "dune.epub", b"the epub's bytes");
        let Transferred::Placed(_) = target.transfer(&epub).unwrap() else {
            panic!("the EPUB is written");
        };
        target.commit().unwrap();
        drop(target);
        let target = CalibreTarget::open(&lib, &src, copy_options(), false).expect("reopened");
        let conn = rusqlite::Connection::open(lib.join(METADATA_DB)).unwrap();
        crate::calibre::sql_functions::register(&conn).unwrap();
        assert_eq!(conn.execute("DELETE FROM books", []).unwrap(), 1);

        let pdf = payload(&src, 2, "dune.pdf", b"the pdf's bytes");
        let failed = target.transfer(&pdf).expect_err("the book is gone");
        assert_eq!(
            failed.message,
            format!(
                "dune.pdf: {}: book #1 vanished from the library",
                lib.display()
            )
        );
    }

    /// A commit that cannot write a book's `metadata.opf` fails with the calibre error that
    /// says which file and why, its cause kept as its source; nothing is recorded.
    #[test]
    fn a_failed_commit_says_which_file_and_keeps_its_cause() {
        let _serial = super::super::tests::serial();
        let (_dir, src, lib, target) = new_library();
        let epub = payload(&src, 1, "dune.epub", b"the epub's bytes");
        let Transferred::Placed(placed) = target.transfer(&epub).unwrap() else {
            panic!("the EPUB is written");
        };
        let book_dir = lib.join(placed.target_ref.rsplit_once('/').unwrap().0);
        fs::remove_dir_all(&book_dir).unwrap();

        let err = target.commit().expect_err("no folder for metadata.opf");
        match &err {
            CalibreError::Io { path, source, .. } => {
                assert_eq!(path, &book_dir.join(crate::calibre::OPF_FILE));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected CalibreError::Io, got {other:?}"),
        }
        let cause = std::error::Error::source(&err).expect("the cause is kept");
        assert!(cause.downcast_ref::<io::Error>().is_some(), "{cause:?}");
        assert!(data_rows(&lib).is_empty(), "nothing recorded");
    }
}
