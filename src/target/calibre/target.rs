//! The calibre library as a pipeline target: decides which calibre book each file belongs to,
//! writes its format file (outside the lock, so several copy at once), and records written
//! books in `metadata.db` from the state writer's flush hook — so a file is never `uploaded` in
//! the state DB before its book and `data` row are committed in the library.
//!
//! Which book a file goes to:
//! - a calibre source book keeps its uuid: every format of it goes to the book with that uuid;
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

use super::functions::fuzzy_title;
use super::opf::OpfBook;
use super::{
    book_id_of, make_book_dir, stored_identity, write_opfs, AddedFormat, CalibreError,
    CalibreLibrary, Candidate, CommittedBook, PlannedBook, RowsWriter, METADATA_DB, TEMP_PREFIX,
};
use crate::failure::{Failure, FailureKind};
use crate::hash;
use crate::metadata::{Metadata, Origin};
use crate::skip_reason::SkipReason;
use crate::target::folder::{write_new_file, LinkMode};
use crate::target::staged::Staging;
use crate::target::{NameQuery, Payload, Placed, Transferred, Unusable};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// How the calibre target places books.
#[derive(Debug, Clone)]
pub struct CalibreOptions {
    pub link: LinkMode,
    /// Add the formats a book already in the library lacks, instead of skipping the file.
    pub merge_formats: bool,
    /// Write even while a calibre program holds calibre's writer lock.
    pub ignore_calibre_lock: bool,
    /// Part of every derived uuid: books of this migration are told apart from all others.
    pub migration_key: String,
    /// A calibre source's book uuids: a target book with one of them is a copy of a source
    /// book, never to be taken for another source book.
    pub source_uuids: std::sync::Arc<HashSet<String>>,
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
    /// (lowercased file name, size) → path of a format file the library held at open.
    by_name: HashMap<(String, u64), String>,
    /// Where the hash task stages copies (see `staging`).
    staging: Option<Staging>,
}

/// The books this run is writing, behind one lock.
struct Books {
    lib: CalibreLibrary,
    /// Group key → the book its files go to.
    groups: HashMap<String, i64>,
    /// Books this run created (planned or committed).
    created: HashSet<i64>,
    /// Books found by calibre's duplicate rule: made by this migration (in any run) or not.
    ours: HashMap<i64, bool>,
    source_uuids: std::sync::Arc<HashSet<String>>,
    /// Created books not committed yet; `formats` holds the files written in full.
    planned: HashMap<i64, PlannedBook>,
    /// Committed books this run added to (or looked at).
    committed: HashMap<i64, CommittedBook>,
    /// book → (FORMAT, file name) being written now.
    writing: HashMap<i64, Vec<(String, String)>>,
    /// Formats written into committed books, not recorded yet.
    added: Vec<AddedFormat>,
    /// Planned books a commit is recording right now → how many of their formats it records
    /// (the first ones; later ones become additions once the book is recorded).
    committing: HashMap<i64, usize>,
    /// Planned books whose folder is not made yet.
    folders_to_make: HashMap<i64, FolderState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FolderState {
    /// No transfer has taken it on yet.
    Unclaimed,
    /// A transfer is making it.
    Making,
    /// Making it failed, with this error.
    Failed(String),
}

/// Where one file goes.
struct Slot {
    book_id: i64,
    format: String,
    path: PathBuf,
    rel_path: String,
    /// The book is new in this run and has no cover yet: this file may bring one.
    wants_cover: bool,
    new_book: bool,
    /// Written to a temp name, then renamed over this recorded file (a changed source file).
    replaces: Option<PathBuf>,
    /// The book's folder is still to be made: by this transfer (`Make`), or by another one
    /// that this one waits for (`Await`).
    folder: Folder,
}

/// Where a planned book's folder stands. It is made outside the lock by the transfer that
/// planned the book; another file of the book waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folder {
    Ready,
    Make,
    Await,
}

enum Decision {
    Write(Slot),
    /// The book has this format already (recorded, or written in this run): same bytes or not?
    Recorded {
        book_id: i64,
        rel_path: String,
    },
    Skip(SkipReason, String),
}

impl CalibreTarget {
    /// Open (or, when `root` is missing or empty, create) the library for writing.
    pub fn open(
        root: &Path,
        source_root: &Path,
        opts: CalibreOptions,
        dry_run: bool,
    ) -> Result<CalibreTarget, Unusable> {
        let unusable = |e: CalibreError| Unusable(format!("calibre library {e}"));
        let mut target = CalibreTarget {
            root: root.to_path_buf(),
            opts: opts.clone(),
            books: None,
            rows: None,
            uuid_seed: String::new(),
            root_dir: None,
            by_name: HashMap::new(),
            staging: None,
        };
        if dry_run {
            if root.join(METADATA_DB).is_file() {
                tracing::info!(
                    "dry run: {} is not opened; every file is shown as going to the library",
                    root.display()
                );
            }
            return Ok(target);
        }
        let lib = CalibreLibrary::open_with(root, opts.ignore_calibre_lock).map_err(unusable)?;
        if !lib.holds_calibre_lock() {
            tracing::warn!(
                "--ignore-calibre-lock: writing {} while a calibre program holds its writer lock",
                root.display()
            );
        }
        if matches!(opts.link, LinkMode::Hardlink | LinkMode::Reflink) {
            let dev = |p: &Path| fs::metadata(p).map(|m| m.dev());
            let (src, dst) = (dev(source_root), dev(root));
            if let (Ok(s), Ok(d)) = (src, dst) {
                if s != d {
                    return Err(Unusable(format!(
                        "--link {}: source {} and calibre library {} are on different filesystems; use --link copy or symlink",
                        opts.link.as_str(),
                        source_root.display(),
                        root.display()
                    )));
                }
            }
        }
        remove_staged_leftovers(root);
        for (rel, size) in lib.format_files().map_err(unusable)? {
            let name = rel.rsplit('/').next().unwrap_or(&rel).to_lowercase();
            target.by_name.insert((name, size), rel);
        }
        let uuid_seed = format!(
            "{}\0{}",
            lib.library_id().map_err(unusable)?,
            opts.migration_key
        );
        target.root_dir = Some(File::open(root).map_err(|e| {
            Unusable(format!(
                "calibre library {}: cannot open: {e}",
                root.display()
            ))
        })?);
        if opts.link == LinkMode::Copy && target.by_name.is_empty() {
            target.staging = Some(Staging::probe(root));
        }
        target.rows = Some(lib.rows_writer());
        target.uuid_seed = uuid_seed;
        target.books = Some(Mutex::new(Books {
            lib,
            groups: HashMap::new(),
            created: HashSet::new(),
            ours: HashMap::new(),
            source_uuids: opts.source_uuids.clone(),
            planned: HashMap::new(),
            committed: HashMap::new(),
            writing: HashMap::new(),
            added: Vec::new(),
            committing: HashMap::new(),
            folders_to_make: HashMap::new(),
        }));
        Ok(target)
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
            .filter(|n| {
                self.by_name
                    .contains_key(&(n.file_name.to_lowercase(), n.size))
            })
            .map(|n| n.key)
            .collect()
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
        let fail = |e: CalibreError| {
            let kind = match &e {
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
                .map_err(fail)?
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
            return Err(fail(e));
        }
        let written = self.write_format(p, &slot.path).and_then(|placed| {
            if let Some(dest) = &slot.replaces {
                fs::rename(&slot.path, dest)?;
            }
            Ok(placed)
        });
        let cover = match (&written, slot.wants_cover) {
            (Ok(_), true) => cover_of(p, slot.replaces.as_ref().unwrap_or(&slot.path)),
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
                placed.detail = Some(format!(
                    "→ calibre book #{}{how}: {}",
                    slot.book_id, slot.rel_path
                ));
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

    /// Make the slot's book folder (or wait until the transfer making it is done).
    fn folder_for(&self, slot: &Slot) -> Result<(), CalibreError> {
        match slot.folder {
            Folder::Ready => Ok(()),
            Folder::Make => {
                let rel_dir = slot
                    .rel_path
                    .rsplit_once('/')
                    .map_or("", |(d, _)| d)
                    .to_string();
                let made = make_book_dir(&self.root, &rel_dir, slot.book_id);
                let mut books = self.books().expect("open: checked above");
                match &made {
                    Ok(()) => books.folders_to_make.remove(&slot.book_id),
                    Err(e) => books
                        .folders_to_make
                        .insert(slot.book_id, FolderState::Failed(e.to_string())),
                };
                made
            }
            Folder::Await => loop {
                {
                    let books = self.books().expect("open: checked above");
                    match books.folders_to_make.get(&slot.book_id) {
                        None => return Ok(()),
                        Some(FolderState::Failed(e)) => {
                            return Err(CalibreError::Invalid {
                                path: self.root.join(&slot.rel_path),
                                cause: format!("the book's folder could not be made: {e}"),
                            })
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
    pub fn commit(&self) -> io::Result<()> {
        let Some(books) = &self.books else {
            return Ok(());
        };
        let lock = || books.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let snap = lock().snapshot().map_err(io::Error::other)?;
        if snap.is_empty() {
            return Ok(());
        }
        let snapped = started.elapsed();
        let opfs = write_opfs(&self.root, &snap.books, &snap.resolved).map_err(io::Error::other);
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
        res.map_err(io::Error::other)
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

impl Books {
    /// Which book the file goes to and the file's path there, or why it is not written.
    fn decide(
        &mut self,
        p: &Payload,
        opts: &CalibreOptions,
        uuid_seed: &str,
        known: Identified,
    ) -> Result<Decision, CalibreError> {
        if let Some(previous) = p.previous_ref.as_deref() {
            if let Some(slot) = self.replacement(previous, &p.format, p.row_id)? {
                return Ok(Decision::Write(slot));
            }
        }
        let Identified {
            group,
            uuid,
            candidate,
        } = known;
        let book_id = if let Some(id) = self.groups.get(&group) {
            *id
        } else if let Some(id) = self.lib.find_by_uuid(&uuid) {
            // This group's book, committed by an earlier run of this migration; or, for a
            // calibre source book, the book with its uuid.
            id
        } else {
            match self.lib.find_existing_candidate(&candidate) {
                // One of this migration's own books, of another title or author set: files
                // group strictly (by title and all authors), so the result does not depend
                // on which file comes first.
                Some(id) if self.is_ours(id, uuid_seed)? => self.plan(candidate),
                Some(id) if !opts.merge_formats => {
                    return Ok(Decision::Skip(
                        SkipReason::TargetHasBook,
                        format!(
                            "calibre already has this book as #{id} (same authors and title, or a shared identifier); --merge-formats adds missing formats to it"
                        ),
                    ));
                }
                Some(id) => id,
                None => self.plan(candidate),
            }
        };
        self.groups.insert(group, book_id);
        self.slot_in(book_id, &p.format)
    }

    fn plan(&mut self, candidate: Candidate) -> i64 {
        let book = self.lib.reserve_candidate(candidate);
        let id = book.book_id;
        self.created.insert(id);
        self.planned.insert(id, book);
        self.folders_to_make.insert(id, FolderState::Unclaimed);
        id
    }

    /// Whether book `id` is one of this migration's own: made in this run, or in an earlier one
    /// (its uuid is the one this migration derives from its stored title and authors), or a
    /// copy of a book of the calibre source (its uuid is a source book's).
    fn is_ours(&mut self, id: i64, uuid_seed: &str) -> Result<bool, CalibreError> {
        if self.created.contains(&id) {
            return Ok(true);
        }
        if let Some(known) = self.ours.get(&id) {
            return Ok(*known);
        }
        let ours = match self.lib.book_identity(id)? {
            Some((uuid, title, authors)) => {
                derived_uuid(uuid_seed, &group_of(&title, &authors)) == uuid
                    || self.source_uuids.contains(&uuid.to_lowercase())
            }
            None => false,
        };
        self.ours.insert(id, ours);
        Ok(ours)
    }

    /// Reserve the file of `format` in book `book_id`.
    fn slot_in(&mut self, book_id: i64, format: &str) -> Result<Decision, CalibreError> {
        let (rel_dir, stem, has, wants_cover, new_book) = match self.planned.get(&book_id) {
            Some(b) => (
                b.rel_dir.clone(),
                b.file_stem.clone(),
                b.formats.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
                !b.has_cover,
                true,
            ),
            None => {
                let book = match self.committed.get(&book_id) {
                    Some(b) => b.clone(),
                    None => {
                        let Some(b) = self.lib.committed_book(book_id)? else {
                            return Err(CalibreError::Invalid {
                                path: self.lib.root().to_path_buf(),
                                cause: format!("book #{book_id} vanished from the library"),
                            });
                        };
                        self.committed.insert(book_id, b.clone());
                        b
                    }
                };
                (book.rel_dir, book.file_stem, book.formats, false, false)
            }
        };
        let (fmt, name) = self.lib.format_file(&stem, format)?;
        let writing = self.writing.entry(book_id).or_default();
        let being_written = writing.iter().any(|(f, _)| *f == fmt);
        if writing.is_empty() {
            self.writing.remove(&book_id);
        }
        if has.contains(&fmt) && !being_written {
            // The file is there in full (recorded, or written in this run): same bytes or not?
            let recorded_name = format!("{stem}.{}", fmt.to_lowercase());
            return Ok(Decision::Recorded {
                book_id,
                rel_path: format!("{rel_dir}/{recorded_name}"),
            });
        }
        if being_written {
            return Ok(Decision::Skip(
                SkipReason::BookHasFormat,
                format!(
                    "calibre book #{book_id} is getting a {fmt} file from another source file at this moment"
                ),
            ));
        }
        let writing = self.writing.entry(book_id).or_default();
        writing.push((fmt.clone(), name.clone()));
        let wants_cover = wants_cover && writing.len() == 1;
        if !new_book || self.committing.contains_key(&book_id) {
            // A recorded folder, or one a commit may record before this file is done: name
            // the new file in its marker before it exists.
            let pending = self.pending_names(book_id);
            self.lib.mark_pending(&rel_dir, &pending)?;
        }
        Ok(Decision::Write(Slot {
            book_id,
            format: fmt,
            path: self.lib.root().join(&rel_dir).join(&name),
            rel_path: format!("{rel_dir}/{name}"),
            wants_cover,
            new_book,
            replaces: None,
            folder: self.folder_duty(book_id),
        }))
    }

    /// What a transfer into book `book_id` must do about its folder.
    fn folder_duty(&mut self, book_id: i64) -> Folder {
        match self.folders_to_make.get_mut(&book_id) {
            None => Folder::Ready,
            Some(state @ FolderState::Unclaimed) => {
                *state = FolderState::Making;
                Folder::Make
            }
            Some(_) => Folder::Await,
        }
    }

    /// A changed source file whose earlier version this migration put in a recorded book: its
    /// new bytes replace that file. `None` when `previous` is not such a file any more.
    fn replacement(
        &mut self,
        previous: &str,
        format: &str,
        row_id: i64,
    ) -> Result<Option<Slot>, CalibreError> {
        let Some(book_id) = previous
            .rsplit_once('/')
            .and_then(|(dir, _)| dir.rsplit('/').next())
            .and_then(book_id_of)
        else {
            return Ok(None);
        };
        if self.planned.contains_key(&book_id) {
            return Ok(None);
        }
        let book = match self.committed.get(&book_id) {
            Some(b) => b.clone(),
            None => match self.lib.committed_book(book_id)? {
                Some(b) => {
                    self.committed.insert(book_id, b.clone());
                    b
                }
                None => return Ok(None),
            },
        };
        let (fmt, name) = self.lib.format_file(&book.file_stem, format)?;
        let busy = self
            .writing
            .get(&book_id)
            .is_some_and(|w| w.iter().any(|(f, _)| *f == fmt));
        if format!("{}/{name}", book.rel_dir) != previous || !book.formats.contains(&fmt) || busy {
            return Ok(None);
        }
        let temp = format!("{TEMP_PREFIX}{}-{row_id}", std::process::id());
        self.writing
            .entry(book_id)
            .or_default()
            .push((fmt.clone(), temp.clone()));
        let pending = self.pending_names(book_id);
        self.lib.mark_pending(&book.rel_dir, &pending)?;
        let dir = self.lib.root().join(&book.rel_dir);
        Ok(Some(Slot {
            book_id,
            format: fmt,
            path: dir.join(&temp),
            rel_path: previous.to_string(),
            wants_cover: false,
            new_book: false,
            replaces: Some(dir.join(name)),
            folder: Folder::Ready,
        }))
    }

    /// Files of a book not recorded yet: being written, or written and awaiting the commit
    /// (for a book being committed: the formats written after the commit took its values).
    fn pending_names(&self, book_id: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .writing
            .get(&book_id)
            .map(|w| w.iter().map(|(_, n)| n.clone()).collect())
            .unwrap_or_default();
        names.extend(
            self.added
                .iter()
                .filter(|a| a.book_id == book_id)
                .map(|a| format!("{}.{}", a.file_stem, a.format.to_lowercase())),
        );
        if let (Some(&taken), Some(book)) =
            (self.committing.get(&book_id), self.planned.get(&book_id))
        {
            names.extend(
                book.formats
                    .iter()
                    .skip(taken)
                    .map(|(f, _)| format!("{}.{}", book.file_stem, f.to_lowercase())),
            );
        }
        names
    }

    fn put_cover(&mut self, book_id: i64, jpeg: &[u8]) -> Result<(), CalibreError> {
        // Only into a book not committed yet: `has_cover` goes in with its row (and a book
        // being committed has its row's values taken already).
        if self.committing.contains_key(&book_id) {
            return Ok(());
        }
        if let Some(book) = self.planned.get_mut(&book_id) {
            if !book.has_cover {
                self.lib.write_cover(book, jpeg)?;
            }
        }
        Ok(())
    }

    fn written(&mut self, slot: &Slot, size: u64) {
        self.stop_writing(slot);
        if let Some(book) = self.planned.get_mut(&slot.book_id) {
            book.formats.push((slot.format.clone(), size));
            return;
        }
        let replaced = slot.replaces.is_some();
        let Some(book) = self.committed.get_mut(&slot.book_id) else {
            return;
        };
        if !replaced {
            book.formats.push(slot.format.clone());
        }
        self.added.push(AddedFormat {
            book_id: slot.book_id,
            rel_dir: book.rel_dir.clone(),
            format: slot.format.clone(),
            file_stem: book.file_stem.clone(),
            size,
            replaced,
        });
    }

    fn not_written(&mut self, slot: &Slot) {
        self.stop_writing(slot);
        let empty = self
            .planned
            .get(&slot.book_id)
            .is_some_and(|b| b.formats.is_empty())
            && !self.writing.contains_key(&slot.book_id);
        if empty {
            self.abandon(slot.book_id);
        }
    }

    fn stop_writing(&mut self, slot: &Slot) {
        if let Some(w) = self.writing.get_mut(&slot.book_id) {
            w.retain(|(f, _)| *f != slot.format);
            if w.is_empty() {
                self.writing.remove(&slot.book_id);
            }
        }
    }

    fn abandon(&mut self, book_id: i64) {
        self.folders_to_make.remove(&book_id);
        if let Some(book) = self.planned.remove(&book_id) {
            self.created.remove(&book_id);
            self.groups.retain(|_, b| *b != book_id);
            if let Err(e) = self.lib.abandon(book) {
                tracing::warn!("{e}");
            }
        }
    }

    fn abandon_empty(&mut self) {
        let empty: Vec<i64> = self
            .planned
            .iter()
            .filter(|(id, b)| b.formats.is_empty() && !self.writing.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            self.abandon(id);
        }
    }

    /// What the next commit records: the planned books with a written format (copied, with
    /// the formats written so far) and their resolved values, and the formats added to
    /// recorded books so far. The books stay planned meanwhile, marked as committing (no cover
    /// is added to them: `has_cover` is taken now).
    fn snapshot(&mut self) -> Result<Snapshot, CalibreError> {
        let books: Vec<PlannedBook> = self
            .planned
            .values()
            .filter(|b| !b.formats.is_empty())
            .map(PlannedBook::clone)
            .collect();
        let resolved = self.lib.prepare(&books)?;
        self.committing = books.iter().map(|b| (b.book_id, b.formats.len())).collect();
        Ok(Snapshot {
            books,
            resolved,
            added: self.added.len(),
        })
    }

    /// A commit's third step begins, for a snapshot whose files are durable (`durable`; else
    /// the commit just ends: `None`): the books that will still have unrecorded files once
    /// their rows are in get those files named in their markers (a marker in a recorded book's
    /// folder names what is not recorded). Returns the additions the rows record. The books
    /// stay `committing` until [`Books::end_record`]: meanwhile a new file of one of them is
    /// named in its marker before it is written (see `slot_in`).
    fn begin_record(
        &mut self,
        snap: &Snapshot,
        durable: bool,
    ) -> Result<Option<Vec<AddedFormat>>, CalibreError> {
        if !durable {
            self.committing.clear();
            return Ok(None);
        }
        for b in &snap.books {
            let pending = self.pending_names(b.book_id);
            if !pending.is_empty() {
                if let Err(e) = self.lib.mark_pending(&b.rel_dir, &pending) {
                    self.committing.clear();
                    return Err(e);
                }
            }
        }
        Ok(Some(self.added[..snap.added].to_vec()))
    }

    /// A commit's last step, once its rows are written (`rows`; `None`: not durable, nothing
    /// written): the recorded books become committed, the formats written into them since the
    /// snapshot become additions to record next, and the markers of books with nothing left
    /// unrecorded go. When the rows failed, the books stay planned.
    fn end_record(
        &mut self,
        snap: Snapshot,
        added: &[AddedFormat],
        rows: Option<Result<(), CalibreError>>,
    ) -> Result<(), CalibreError> {
        self.committing.clear();
        let Some(rows) = rows else {
            return Ok(());
        };
        let mut later: Vec<AddedFormat> = Vec::new();
        for b in &snap.books {
            // The snapshot's copy of the book holds the formats the commit took.
            let now = &self.planned[&b.book_id];
            for (format, size) in now.formats.iter().skip(b.formats.len()) {
                later.push(AddedFormat {
                    book_id: b.book_id,
                    rel_dir: b.rel_dir.clone(),
                    format: format.clone(),
                    file_stem: b.file_stem.clone(),
                    size: *size,
                    replaced: false,
                });
            }
        }
        // Books with a file not recorded by these rows: being written, written after the
        // snapshot, or added to a recorded book after it. Their markers stay.
        let still_pending: HashSet<i64> = self
            .writing
            .keys()
            .copied()
            .chain(later.iter().map(|a| a.book_id))
            .chain(self.added[snap.added..].iter().map(|a| a.book_id))
            .collect();
        self.lib
            .recorded(&snap.books, added, &still_pending, rows)?;
        self.added.drain(..snap.added);
        for b in snap.books {
            let now = self.planned.remove(&b.book_id);
            let formats = now.map(|n| n.formats).unwrap_or_default();
            self.committed.insert(
                b.book_id,
                CommittedBook {
                    book_id: b.book_id,
                    rel_dir: b.rel_dir.clone(),
                    file_stem: b.file_stem.clone(),
                    formats: formats.into_iter().map(|(f, _)| f).collect(),
                },
            );
        }
        self.added.extend(later);
        Ok(())
    }
}

/// A commit's first step: what it records.
struct Snapshot {
    books: Vec<PlannedBook>,
    resolved: Vec<OpfBook>,
    /// How many of `Books::added` (the first ones) it records.
    added: usize,
}

impl Snapshot {
    fn is_empty(&self) -> bool {
        self.books.is_empty() && self.added == 0
    }
}

/// What a file's metadata says of the book it belongs to, worked out before the books lock.
struct Identified {
    /// The group its files go to (see [`identity`]).
    group: String,
    /// The uuid its book has or gets.
    uuid: String,
    /// Its values as calibre stores them (the derived uuid set).
    candidate: Candidate,
}

impl Identified {
    fn of(p: &Payload, uuid_seed: &str) -> Identified {
        let mut md = p.metadata.clone().unwrap_or_default();
        if md.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
            md.title = Some(file_title(&p.file_name));
        }
        let (group, uuid) = identity(p, &md, uuid_seed);
        md.uuid = Some(uuid.clone());
        Identified {
            group,
            uuid,
            candidate: Candidate::of(&md),
        }
    }
}

/// A file's group key and its book's uuid. A calibre source book is its own group and keeps
/// its uuid; any other file groups by calibre's fuzzy title and all its authors (as stored), and
/// its book gets a uuid derived from that group and `seed` (library id + migration key).
fn identity(p: &Payload, md: &Metadata, seed: &str) -> (String, String) {
    if p.origin == Some(Origin::Calibre) {
        if let Some(u) = md.uuid.as_deref().map(|u| u.trim().to_lowercase()) {
            if u.len() == 36 {
                return (format!("uuid:{u}"), u);
            }
        }
    }
    let (title, authors) = stored_identity(md);
    let group = group_of(&title, &authors);
    let group = if group.starts_with("book:\u{1f}") {
        // A title calibre's fuzzy match reduces to nothing: each file is its own book.
        format!("file:{}", p.source_rel)
    } else {
        group
    };
    let uuid = derived_uuid(seed, &group);
    (group, uuid)
}

/// The group of a book stored with this title and these authors.
fn group_of(title: &str, authors: &[String]) -> String {
    let mut authors: Vec<String> = authors.iter().map(|a| a.trim().to_lowercase()).collect();
    authors.sort();
    authors.dedup();
    format!(
        "book:{}\u{1f}{}",
        fuzzy_title(title),
        authors.join("\u{1e}")
    )
}

/// A version-4-shaped uuid that is the same for the same seed (library + migration) and group,
/// so the book a killed run committed is found again by the rerun, and a later migration's
/// books are not taken for this one's.
fn derived_uuid(seed: &str, group: &str) -> String {
    let h = blake3::hash(format!("bookferry-book\0{seed}\0{group}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A title from a file name when the file gave none: the name without its extension.
fn file_title(file_name: &str) -> String {
    let stem = file_name
        .strip_suffix(".fb2.zip")
        .or_else(|| file_name.rsplit_once('.').map(|(s, _)| s))
        .unwrap_or(file_name);
    if stem.trim().is_empty() {
        "Unknown".into()
    } else {
        stem.to_string()
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

/// The cover a file brings, as JPEG bytes: a calibre source book's `cover.jpg`, or an EPUB's
/// cover image (converted to JPEG as calibre stores it), from the bytes in memory or else the
/// copy just `written` (in the page cache: the source is not read again). `None` when there is
/// none or it cannot be read.
fn cover_of(p: &Payload, written: &Path) -> Option<Vec<u8>> {
    let md = p.metadata.as_ref()?;
    let cover = md.cover.as_deref()?;
    if p.origin == Some(Origin::Calibre) {
        let path = p.source_path.parent()?.join("cover.jpg");
        return fs::read(path).ok();
    }
    if !p.format.eq_ignore_ascii_case("epub") {
        return None;
    }
    let image = match &p.data {
        Some(data) => read_zip_member(io::Cursor::new(&data[..]), cover),
        // Buffered: the zip reader's many small reads of the central directory and the entry's
        // header are a few syscalls instead of one each.
        None => read_zip_member(
            io::BufReader::with_capacity(64 << 10, File::open(written).ok()?),
            cover,
        ),
    }?;
    to_jpeg(&image)
}

fn read_zip_member<R: Read + io::Seek>(r: R, name: &str) -> Option<Vec<u8>> {
    const MAX_COVER: u64 = 32 << 20;
    let mut zip = zip::ZipArchive::new(r).ok()?;
    let entry = zip.by_name(name).ok()?;
    if entry.size() > MAX_COVER {
        return None;
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry.take(MAX_COVER).read_to_end(&mut out).ok()?;
    Some(out)
}

/// JPEG bytes of an image: a JPEG as it is, a PNG re-encoded.
fn to_jpeg(image: &[u8]) -> Option<Vec<u8>> {
    if image.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(image.to_vec());
    }
    let rgb = image::load_from_memory(image).ok()?.to_rgb8();
    let (width, height) = (
        u16::try_from(rgb.width()).ok()?,
        u16::try_from(rgb.height()).ok()?,
    );
    let mut out = Vec::new();
    // jpeg-encoder: SIMD, several times faster than `image`'s own encoder (covers were ~8% of
    // a copy run's CPU with it).
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(rgb.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;
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
            migration_key: "test".into(),
            source_uuids: Arc::new(HashSet::new()),
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

    #[test]
    fn derived_uuids_are_stable_distinct_and_uuid4_shaped() {
        let a = derived_uuid("lib-1", "book:dune\u{1f}frank herbert");
        assert_eq!(a, derived_uuid("lib-1", "book:dune\u{1f}frank herbert"));
        assert_ne!(a, derived_uuid("lib-2", "book:dune\u{1f}frank herbert"));
        assert_ne!(a, derived_uuid("lib-1", "book:emma\u{1f}jane austen"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn titles_from_file_names() {
        assert_eq!(file_title("Dune.epub"), "Dune");
        assert_eq!(file_title("a.b.fb2.zip"), "a.b");
        assert_eq!(file_title(".epub"), "Unknown");
        assert_eq!(file_title("README"), "README");
    }

    #[test]
    fn covers_become_jpeg() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(6, 9, image::Rgb([200, 10, 10]))
            .write_to(&mut io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let jpeg = to_jpeg(&png).expect("converted");
        assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]));
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (6, 9));
        assert_eq!(to_jpeg(&jpeg).as_deref(), Some(jpeg.as_slice()));
        assert!(to_jpeg(b"not an image").is_none());
    }
}
