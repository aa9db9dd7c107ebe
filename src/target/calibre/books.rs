//! The books one run of the calibre target is writing, behind one lock ([`Books`]): which book
//! a file goes to ([`Books::decide`]: its group's book, the book this migration made with its
//! uuid, a book the library had by calibre's duplicate rule, or a new one), the file's slot in it, the formats
//! being written and written, and a commit's snapshot of them and its end.
//!
//! What it holds is bounded, not one entry per book of the run: a committed book that has no
//! file in flight is forgotten once more than [`KEPT_SETTLED`] are held (its group's next file
//! finds it again in the library by its uuid; its formats are read again from `metadata.db`),
//! and the books this run created are kept as ranges of ids ([`IdRanges`]).

use super::id_ranges::IdRanges;
use super::identity::{derived_uuid, group_of, Identified};
use super::{
    AddedFormat, CalibreError, CalibreLibrary, CalibreOptions, Candidate, CommittedBook,
    PlannedBook,
};
use crate::calibre::opf::OpfBook;
use crate::calibre::paths::{book_id_of, format_file_name};
use crate::skip_reason::SkipReason;
use crate::target::staged::temp_name;
use crate::target::Payload;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The books this run is writing, behind one lock.
pub(super) struct Books {
    lib: CalibreLibrary,
    /// Group key → the book its files go to (for a committed book: a cache, see
    /// [`Books::forget_settled`]).
    groups: HashMap<String, i64>,
    /// Books this run created (planned or committed).
    created: IdRanges,
    /// Books found by calibre's duplicate rule: made by this migration (in any run) or not (a
    /// cache of what the library says).
    ours: HashMap<i64, bool>,
    /// A calibre source's book uuids (see `CalibreOptions::source_uuids`).
    source_uuids: Arc<HashSet<String>>,
    /// The highest book id the library had when this migration first opened it
    /// (`BookIds::max_before`): a book at or below it is the user's, whatever its uuid.
    max_before: i64,
    /// Created books not committed yet; `formats` holds the files written in full.
    planned: HashMap<i64, PlannedBook>,
    /// Committed books this run added to (or looked at); those with nothing in flight are a
    /// cache of what `metadata.db` records.
    committed: HashMap<i64, CommittedBook>,
    /// book → (FORMAT, file name) being written now.
    writing: HashMap<i64, Vec<(String, String)>>,
    /// Formats written into committed books, not recorded yet.
    added: Vec<AddedFormat>,
    /// Planned books a commit is recording right now → how many of their formats it records
    /// (the first ones; later ones become additions once the book is recorded).
    committing: HashMap<i64, usize>,
    /// Planned books whose folder is not made yet.
    pub(super) folders_to_make: HashMap<i64, FolderState>,
}

/// Committed books (and groups leading to them) held with nothing in flight before they are
/// forgotten at the end of a commit: enough to spare the library's look-ups for the books the
/// files of one source folder go to, a few MB at most. The unit tests keep two, so every test
/// of the target forgets books as it goes.
const KEPT_SETTLED: usize = if cfg!(test) { 2 } else { 10_000 };

#[derive(Debug, Clone)]
pub(super) enum FolderState {
    /// No transfer has taken it on yet.
    Unclaimed,
    /// A transfer is making it.
    Making,
    /// Making it failed, with this error (the cause of every other file of the book).
    Failed(Arc<CalibreError>),
}

/// Where one file goes.
pub(super) struct Slot {
    pub(super) book_id: i64,
    pub(super) format: String,
    pub(super) path: PathBuf,
    pub(super) rel_path: String,
    /// The book is new in this run and has no cover yet: this file may bring one.
    pub(super) wants_cover: bool,
    pub(super) new_book: bool,
    /// Written to a temp name, then renamed over this recorded file (a changed source file).
    pub(super) replaces: Option<PathBuf>,
    /// The book's folder is still to be made: by this transfer (`Make`), or by another one
    /// that this one waits for (`Await`).
    pub(super) folder: Folder,
}

/// Where a planned book's folder stands. It is made outside the lock by the transfer that
/// planned the book; another file of the book waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Folder {
    Ready,
    Make,
    Await,
}

pub(super) enum Decision {
    Write(Slot),
    /// The book has this format already (recorded, or written in this run): same bytes or not?
    Recorded {
        book_id: i64,
        rel_path: String,
    },
    Skip(SkipReason, String),
}

impl Books {
    /// Nothing written yet into `lib`.
    pub(super) fn new(
        lib: CalibreLibrary,
        source_uuids: Arc<HashSet<String>>,
        max_before: i64,
    ) -> Books {
        Books {
            lib,
            groups: HashMap::new(),
            created: IdRanges::default(),
            ours: HashMap::new(),
            source_uuids,
            max_before,
            planned: HashMap::new(),
            committed: HashMap::new(),
            writing: HashMap::new(),
            added: Vec::new(),
            committing: HashMap::new(),
            folders_to_make: HashMap::new(),
        }
    }

    /// Which book the file goes to and the file's path there, or why it is not written.
    pub(super) fn decide(
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
            mut candidate,
        } = known;
        // A calibre source book's uuid on a book this migration did not make (the user's): the
        // book is matched by calibre's duplicate rule as any other, and a new one gets a uuid
        // of this migration's instead (derived, so a rerun finds it).
        let mut theirs = None;
        let book_id = if let Some(id) = self.groups.get(&group) {
            *id
        } else if let Some(id) = self.ours_by_uuid(&uuid, &group, uuid_seed, &mut theirs)? {
            // This group's book, committed by an earlier run of this migration; or, for a
            // calibre source book, the book this migration made with its uuid.
            id
        } else {
            if let Some(alt) = theirs {
                candidate.given_uuid = None;
                candidate.fields.uuid = alt;
            }
            match self.lib.find_existing_candidate(&candidate)? {
                // One of this migration's own books, of another title or author set: files
                // group strictly (by title and all authors), so the result does not depend
                // on which file comes first.
                Some(id) if self.is_ours(id, uuid_seed)? => self.plan(candidate)?,
                Some(id) if !opts.merge_formats => {
                    return Ok(Decision::Skip(
                        SkipReason::TargetHasBook,
                        format!(
                            "calibre already has this book as #{id} (same authors and title, or a shared identifier); --merge-formats adds missing formats to it"
                        ),
                    ));
                }
                Some(id) => id,
                None => self.plan(candidate)?,
            }
        };
        self.groups.insert(group, book_id);
        self.slot_in(book_id, &p.format)
    }

    /// The book this migration made for the file's group, found by its uuid (`uuid`; for a
    /// calibre source book whose uuid a book of the user's has, `theirs` is set to the uuid
    /// this migration gives it instead, and the book with that uuid is looked for).
    fn ours_by_uuid(
        &mut self,
        uuid: &str,
        group: &str,
        uuid_seed: &str,
        theirs: &mut Option<String>,
    ) -> Result<Option<i64>, CalibreError> {
        let Some(id) = self.lib.find_by_uuid(uuid)? else {
            return Ok(None);
        };
        if !group.starts_with("uuid:") || self.is_ours(id, uuid_seed)? {
            return Ok(Some(id));
        }
        let alt = derived_uuid(uuid_seed, group);
        let found = self.lib.find_by_uuid(&alt)?;
        *theirs = Some(alt);
        Ok(found)
    }

    fn plan(&mut self, candidate: Candidate) -> Result<i64, CalibreError> {
        let book = self.lib.reserve_candidate(candidate)?;
        let id = book.book_id;
        self.created.insert(id);
        self.planned.insert(id, book);
        self.folders_to_make.insert(id, FolderState::Unclaimed);
        Ok(id)
    }

    /// Whether book `id` is one of this migration's own: made in this run, or in an earlier one
    /// (its uuid is the one this migration derives from its stored title and authors), or a
    /// copy of a book of the calibre source (its uuid is a source book's).
    fn is_ours(&mut self, id: i64, uuid_seed: &str) -> Result<bool, CalibreError> {
        if self.created.contains(id) {
            return Ok(true);
        }
        if let Some(known) = self.ours.get(&id) {
            return Ok(*known);
        }
        let ours = match self.lib.recognized(id)? {
            Some(book) => {
                let authors: Vec<String> =
                    book.authors.iter().map(|a| a.replace('|', ",")).collect();
                derived_uuid(uuid_seed, &group_of(&book.title, &authors)) == book.uuid
                    || (id > self.max_before
                        && self.source_uuids.contains(&book.uuid.to_lowercase()))
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
                            return Err(CalibreError::BookGone {
                                path: self.lib.root().to_path_buf(),
                                book_id,
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
            let recorded_name = format_file_name(&stem, &fmt);
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
        let temp = temp_name(&row_id.to_string());
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
                .map(|a| format_file_name(&a.file_stem, &a.format)),
        );
        if let (Some(&taken), Some(book)) =
            (self.committing.get(&book_id), self.planned.get(&book_id))
        {
            names.extend(
                book.formats
                    .iter()
                    .skip(taken)
                    .map(|(f, _)| format_file_name(&book.file_stem, f)),
            );
        }
        names
    }

    pub(super) fn put_cover(&mut self, book_id: i64, jpeg: &[u8]) -> Result<(), CalibreError> {
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

    pub(super) fn written(&mut self, slot: &Slot, size: u64) {
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

    pub(super) fn not_written(&mut self, slot: &Slot) {
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
            self.created.remove(book_id);
            self.groups.retain(|_, b| *b != book_id);
            if let Err(e) = self.lib.abandon(book) {
                tracing::warn!("{e}");
            }
        }
    }

    pub(super) fn abandon_empty(&mut self) {
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
    pub(super) fn snapshot(&mut self) -> Result<Snapshot, CalibreError> {
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
    pub(super) fn begin_record(
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
    pub(super) fn end_record(
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
        self.forget_settled();
        Ok(())
    }

    /// Forget the committed books with nothing in flight, and the groups and duplicate-rule
    /// answers that lead to them, once more than [`KEPT_SETTLED`] are held: the library
    /// answers for them again (a group's book by the uuid this migration gave it, its formats
    /// from `metadata.db`). Books planned, being written into or with formats awaiting their
    /// record stay.
    fn forget_settled(&mut self) {
        if self.committed.len() <= KEPT_SETTLED
            && self.groups.len() <= KEPT_SETTLED
            && self.ours.len() <= KEPT_SETTLED
        {
            return;
        }
        let busy: HashSet<i64> = self
            .writing
            .keys()
            .copied()
            .chain(self.added.iter().map(|a| a.book_id))
            .chain(self.planned.keys().copied())
            .collect();
        self.committed.retain(|id, _| busy.contains(id));
        self.groups.retain(|_, id| busy.contains(id));
        self.ours.clear();
    }
}

/// A commit's first step: what it records.
pub(super) struct Snapshot {
    pub(super) books: Vec<PlannedBook>,
    pub(super) resolved: Vec<OpfBook>,
    /// How many of `Books::added` (the first ones) it records.
    pub(super) added: usize,
}

impl Snapshot {
    pub(super) fn is_empty(&self) -> bool {
        self.books.is_empty() && self.added == 0
    }
}
