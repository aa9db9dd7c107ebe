//! An open calibre library ([`CalibreLibrary`]): bookferry's own lock (`run_lock`) and
//! calibre's writer lock held while it is open, its database set up (`database`), and what the
//! writer knows of its books — the index of the books it holds (calibre's duplicate rule,
//! `existing`), the ids and folders handed to new books, and the recorded books' folders, names
//! and formats as `metadata.db` has them.

use super::database;
use super::existing::{ExistingIndex, Key, Recognized};
use super::fields::{Candidate, CommittedBook, Fields, PlannedBook};
use super::items::Items;
use super::lock::CalibreLock;
use super::recovery::make_book_dir;
use super::rows::{LibraryDb, RowsWriter};
use super::run_lock::RunLock;
use super::{CalibreError, Unwritable};
use crate::calibre::{paths, uuid4, METADATA_DB};
use crate::metadata::Metadata;
use rusqlite::OptionalExtension;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How a migration numbers the books it adds to a library: decided when the migration first
/// opens it ([`CalibreLibrary::book_ids_now`]), recorded in the state DB by the caller, and
/// given back to every later run, so a resumed run never changes its mind because the library
/// is no longer empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookIds {
    /// A calibre source book gets its own id: the library had no books (new, or emptied).
    /// Otherwise every new book gets the next free id, as calibre gives them.
    pub keep: bool,
    /// The highest book id the library had then (0: none). A book above it was made after the
    /// migration began; one at or below it is the user's, whatever uuid it carries.
    pub max_before: i64,
}

/// An open calibre library, locked against calibre's own writers while it is open.
pub struct CalibreLibrary {
    pub(super) root: PathBuf,
    db_path: PathBuf,
    db: Arc<Mutex<LibraryDb>>,
    pub(super) root_dir: File,
    next_id: i64,
    /// A calibre source book gets its own id when it is free (see [`BookIds`]).
    keep_ids: bool,
    /// Books planned and not yet committed, with what identifies them.
    pub(super) planned: HashMap<i64, Fields>,
    pub(super) existing: ExistingIndex,
    created: bool,
    /// None only with `--ignore-calibre-lock` while a calibre program holds it.
    _lock: Option<CalibreLock>,
    /// bookferry's own lock on this library: no other bookferry writes into it meanwhile, so
    /// what `cleanup_orphans` finds in progress was left by a run that is dead.
    _run_lock: RunLock,
}

impl std::fmt::Debug for CalibreLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalibreLibrary")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl CalibreLibrary {
    /// Open the library at `root` for writing, creating a new one when `root` is missing or an
    /// empty folder. Takes bookferry's own lock on the library (fails with
    /// [`CalibreError::LibraryInUse`] while another bookferry holds it) and calibre's writer
    /// lock (fails with [`CalibreError::CalibreRunning`] when a calibre program has it), then
    /// removes what an interrupted run left ([`CalibreLibrary::cleanup_orphans`]): with the
    /// lock held, whoever left it is dead.
    pub fn open(root: &Path) -> Result<CalibreLibrary, CalibreError> {
        CalibreLibrary::open_with(root, false)
    }

    /// [`CalibreLibrary::open`], going on without calibre's writer lock when a calibre program
    /// holds it and `ignore_calibre_lock` (the user's `--ignore-calibre-lock`).
    /// What [`CalibreLibrary::open_with`] would refuse, checked without writing anything (a
    /// dry run): another bookferry on the library, calibre's writer lock held (unless
    /// ignored), a folder that holds files but no `metadata.db`. Both locks are let go at once.
    pub fn preflight(root: &Path, ignore_calibre_lock: bool) -> Result<(), CalibreError> {
        let io_err = |what: &'static str| {
            let path = root.to_path_buf();
            move |source: io::Error| CalibreError::Io { path, what, source }
        };
        if root.is_dir() {
            drop(RunLock::acquire(root)?);
        }
        let lock =
            CalibreLock::try_acquire().map_err(io_err("cannot try calibre's writer lock"))?;
        if lock.is_none() && !ignore_calibre_lock {
            return Err(CalibreError::CalibreRunning {
                path: root.to_path_buf(),
                programs: super::lock::running_calibre_programs(),
            });
        }
        if root.is_dir() && !root.join(METADATA_DB).exists() {
            let mut entries = fs::read_dir(root).map_err(io_err("cannot list the folder"))?;
            if let Some(entry) = entries.next() {
                let name = entry
                    .map(|e| e.file_name())
                    .map_err(io_err("cannot list the folder"))?;
                return Err(CalibreError::NotCalibre {
                    path: root.to_path_buf(),
                    cause: Unwritable::FolderHoldsFiles { first: name },
                });
            }
        }
        Ok(())
    }

    pub fn open_with(
        root: &Path,
        ignore_calibre_lock: bool,
    ) -> Result<CalibreLibrary, CalibreError> {
        let io_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| CalibreError::Io { path, what, source }
        };
        // bookferry's own lock first, so another bookferry is named as such; a library still
        // to be made is locked once its folder exists (after calibre's lock allows making it).
        let run_lock = if root.is_dir() {
            Some(RunLock::acquire(root)?)
        } else {
            None
        };
        let lock =
            CalibreLock::try_acquire().map_err(io_err("cannot try calibre's writer lock", root))?;
        if lock.is_none() && !ignore_calibre_lock {
            return Err(CalibreError::CalibreRunning {
                path: root.to_path_buf(),
                programs: super::lock::running_calibre_programs(),
            });
        }
        fs::create_dir_all(root).map_err(io_err("cannot create the library folder", root))?;
        let run_lock = match run_lock {
            Some(l) => l,
            None => RunLock::acquire(root)?,
        };
        let db_path = root.join(METADATA_DB);
        let created = if db_path.exists() {
            false
        } else {
            let mut entries = fs::read_dir(root).map_err(io_err("cannot list the folder", root))?;
            if let Some(entry) = entries.next() {
                let name = entry
                    .map(|e| e.file_name())
                    .map_err(io_err("cannot list the folder", root))?;
                return Err(CalibreError::NotCalibre {
                    path: root.to_path_buf(),
                    cause: Unwritable::FolderHoldsFiles { first: name },
                });
            }
            database::create_database(root, &db_path)?;
            true
        };
        let conn = database::connect(&db_path)?;
        let next_id = database::next_book_id(&conn, &db_path)?;
        let root_dir = File::open(root).map_err(io_err("cannot open the library folder", root))?;
        let mut lib = CalibreLibrary {
            root: root.to_path_buf(),
            db_path,
            db: Arc::new(Mutex::new(LibraryDb {
                conn,
                items: Items::default(),
                extras: Default::default(),
            })),
            root_dir,
            next_id,
            keep_ids: false,
            planned: HashMap::new(),
            existing: ExistingIndex::default(),
            created,
            _lock: lock,
            _run_lock: run_lock,
        };
        lib.load_caches()?;
        lib.cleanup_orphans()?;
        Ok(lib)
    }

    /// What [`BookIds`] a migration opening the library for the first time decides now: keep a
    /// calibre source's ids (`from_calibre`) when the library has no books.
    pub fn book_ids_now(&self, from_calibre: bool) -> Result<BookIds, CalibreError> {
        let (count, max): (i64, Option<i64>) = self
            .db()
            .conn
            .query_row("SELECT COUNT(*), MAX(id) FROM books", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.db_error("counting the books", e))?;
        Ok(BookIds {
            keep: from_calibre && count == 0,
            max_before: max.unwrap_or(0),
        })
    }

    /// Number new books as `ids` says: with `ids.keep`, a book of a calibre source takes its
    /// own id when no book has it, and any other gets an id past `source_max_id` (and past
    /// every id in the library), so it never takes the id a later source book keeps.
    pub fn number_books(&mut self, ids: BookIds, source_max_id: i64) {
        self.keep_ids = ids.keep;
        if ids.keep {
            self.next_id = self.next_id.max(source_max_id.saturating_add(1));
        }
    }

    /// The library folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True while this process holds calibre's writer lock (false only when it was opened with
    /// `ignore_calibre_lock` while a calibre program held it).
    pub fn holds_calibre_lock(&self) -> bool {
        self._lock.is_some()
    }

    /// True when `open` created this library.
    pub fn was_created(&self) -> bool {
        self.created
    }

    pub(super) fn db(&self) -> MutexGuard<'_, LibraryDb> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What writes a commit's rows (step 3) while this library is free for other use: its
    /// caller keeps the books of the commit planned until [`CalibreLibrary::recorded`].
    pub fn rows_writer(&self) -> RowsWriter {
        RowsWriter {
            db: self.db.clone(),
            db_path: self.db_path.clone(),
        }
    }

    /// The library's `library_id.uuid`.
    pub fn library_id(&self) -> Result<String, CalibreError> {
        self.db()
            .conn
            .query_row("SELECT uuid FROM library_id", [], |r| r.get(0))
            .map_err(|e| self.db_error("reading library_id", e))
    }

    pub(super) fn db_error(&self, what: &'static str, source: rusqlite::Error) -> CalibreError {
        CalibreError::Db {
            path: self.db_path.clone(),
            what,
            source,
        }
    }

    pub(super) fn io_error(
        &self,
        what: &'static str,
        path: &Path,
        source: io::Error,
    ) -> CalibreError {
        CalibreError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }

    /// (Re)load the item tables' ids and the index of the library's books.
    pub(super) fn load_caches(&mut self) -> Result<(), CalibreError> {
        let mut db = self.db();
        let loaded = Items::load(&db.conn).and_then(|i| Ok((i, ExistingIndex::load(&db.conn)?)));
        let (items, existing) = match loaded {
            Ok(r) => r,
            Err(e) => {
                drop(db);
                return Err(self.db_error("reading the library", e));
            }
        };
        db.items = items;
        drop(db);
        self.existing = existing;
        Ok(())
    }

    /// The id of a book already in the library (or planned in this session) that is the same
    /// as `md` by calibre's rule, if any.
    pub fn find_existing(&self, md: &Metadata) -> Result<Option<i64>, CalibreError> {
        self.find_existing_candidate(&Candidate::of(md))
    }

    /// [`CalibreLibrary::find_existing`] for a book's values computed beforehand.
    pub fn find_existing_candidate(&self, c: &Candidate) -> Result<Option<i64>, CalibreError> {
        let authors: &[String] = if c.no_authors { &[] } else { &c.fields.authors };
        self.existing.find(
            &Key {
                authors,
                uuid: c.given_uuid.as_deref(),
                ..c.fields.key()
            },
            |id| self.recognized(id),
        )
    }

    /// The values calibre's duplicate rule compares of book `book_id`: a planned book's from
    /// its plan, a recorded one's from `metadata.db`; `None` when there is no such book.
    pub fn recognized(&self, book_id: i64) -> Result<Option<Recognized>, CalibreError> {
        if let Some(f) = self.planned.get(&book_id) {
            return Ok(Some(Recognized {
                uuid: f.uuid.clone(),
                title: f.title.clone(),
                authors: f.authors.clone(),
                languages: f.languages.clone(),
                identifiers: f.identifiers.clone(),
            }));
        }
        let db = self.db();
        let read = || -> rusqlite::Result<Option<Recognized>> {
            let row: Option<(Option<String>, Option<String>)> = db
                .conn
                .prepare_cached("SELECT uuid, title FROM books WHERE id = ?1")?
                .query_row([book_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((uuid, title)) = row else {
                return Ok(None);
            };
            let strings = |sql: &str| -> rusqlite::Result<Vec<String>> {
                db.conn
                    .prepare_cached(sql)?
                    .query_map([book_id], |r| r.get::<_, String>(0))?
                    .collect()
            };
            let authors = strings(
                "SELECT a.name FROM books_authors_link l JOIN authors a ON a.id = l.author
                 WHERE l.book = ?1 ORDER BY l.id",
            )?;
            let languages = strings(
                "SELECT g.lang_code FROM books_languages_link l JOIN languages g
                 ON g.id = l.lang_code WHERE l.book = ?1 ORDER BY l.item_order, l.id",
            )?;
            let identifiers = db
                .conn
                .prepare_cached("SELECT type, val FROM identifiers WHERE book = ?1")?
                .query_map([book_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(Recognized {
                uuid: uuid.unwrap_or_default(),
                title: title.unwrap_or_default(),
                authors,
                languages,
                identifiers,
            }))
        };
        let found = read();
        drop(db);
        found.map_err(|e| self.db_error("reading a book", e))
    }

    /// Give a book its id and folder: the folder is created with the pending marker in it.
    pub fn plan(&mut self, md: &Metadata) -> Result<PlannedBook, CalibreError> {
        let book = self.reserve(md)?;
        if let Err(e) = make_book_dir(&self.root, &book.rel_dir, book.book_id) {
            self.planned.remove(&book.book_id);
            self.existing.remove(book.book_id, &book.fields.key());
            return Err(e);
        }
        Ok(book)
    }

    /// Give a book its id and folder name, without touching the disk: the caller makes the
    /// folder with [`make_book_dir`] (outside any lock it holds) before writing into it.
    pub fn reserve(&mut self, md: &Metadata) -> Result<PlannedBook, CalibreError> {
        self.reserve_candidate(Candidate::of(md))
    }

    /// [`CalibreLibrary::reserve`] for a book's values computed beforehand.
    pub fn reserve_candidate(&mut self, c: Candidate) -> Result<PlannedBook, CalibreError> {
        let kept = c
            .source_id
            .filter(|id| self.keep_ids && *id > 0 && !self.existing.has_book(*id));
        let mut fields = c.fields;
        if self.find_by_uuid(&fields.uuid)?.is_some() {
            fields.uuid = uuid4();
        }
        let book_id = match kept {
            Some(id) => {
                self.next_id = self.next_id.max(id + 1);
                id
            }
            None => {
                let id = self.next_id;
                self.next_id += 1;
                id
            }
        };
        let rel_dir = paths::book_dir(book_id, &fields.title, &fields.authors[0]);
        let file_stem = paths::file_stem(&fields.title, &fields.authors[0]);
        self.planned.insert(book_id, fields.clone());
        self.existing.add(book_id, &fields.key());
        Ok(PlannedBook {
            book_id,
            rel_dir,
            file_stem,
            formats: Vec::new(),
            has_cover: false,
            fields,
        })
    }

    /// The absolute folder of a planned book.
    pub fn dir_of(&self, book: &PlannedBook) -> PathBuf {
        self.root.join(&book.rel_dir)
    }

    /// The folder-relative file name calibre gives format `format` of a book named `stem`, with
    /// the format upper-cased as `data.format` holds it.
    pub fn format_file(&self, stem: &str, format: &str) -> Result<(String, String), CalibreError> {
        let Some(fmt) = paths::format_name(format) else {
            return Err(CalibreError::NotAFormat {
                path: self.root.clone(),
                format: format.to_string(),
            });
        };
        let name = paths::format_file_name(stem, &fmt);
        Ok((fmt, name))
    }

    /// The id of the book (recorded, or planned in this session) with this calibre uuid.
    pub fn find_by_uuid(&self, uuid: &str) -> Result<Option<i64>, CalibreError> {
        self.existing.find(
            &Key {
                title: "",
                authors: &[],
                languages: &[],
                identifiers: &[],
                uuid: Some(uuid),
            },
            |id| self.recognized(id),
        )
    }

    /// True while `book_id` is planned and not yet committed.
    pub fn is_planned(&self, book_id: i64) -> bool {
        self.planned.contains_key(&book_id)
    }

    /// A recorded book's folder, file name and formats; `None` when there is no such row.
    pub fn committed_book(&self, book_id: i64) -> Result<Option<CommittedBook>, CalibreError> {
        let row: Option<(String, String, Option<String>)> = self
            .db()
            .conn
            .query_row(
                "SELECT path, title, (SELECT a.name FROM books_authors_link l
                     JOIN authors a ON a.id = l.author WHERE l.book = books.id
                     ORDER BY l.id LIMIT 1) FROM books WHERE id = ?1",
                [book_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.db_error("reading a book", e))?;
        let Some((rel_dir, title, author)) = row else {
            return Ok(None);
        };
        // We write into this folder: it must be a real folder inside the library, reached
        // through no symlink, whatever `books.path` says.
        let mut dir = self.root.clone();
        for comp in rel_dir.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." || comp.contains('\\') {
                return Err(CalibreError::PathOutside {
                    path: self.root.join(&rel_dir),
                    book_id,
                    rel_dir: rel_dir.clone(),
                });
            }
            dir.push(comp);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(CalibreError::FolderIsLink { path: dir, book_id }),
                Err(e) => return Err(self.io_error("cannot stat the book folder", &dir, e)),
            }
        }
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare_cached("SELECT format, name FROM data WHERE book = ?1 ORDER BY id")
            .map_err(|e| self.db_error("reading a book's formats", e))?;
        let formats: Vec<(String, String)> = stmt
            .query_map([book_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error("reading a book's formats", e))?;
        let author = author.unwrap_or_else(|| "Unknown".into()).replace('|', ",");
        let file_stem = formats
            .first()
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| paths::file_stem(&title, &author));
        Ok(Some(CommittedBook {
            book_id,
            rel_dir,
            file_stem,
            formats: formats.into_iter().map(|(f, _)| f.to_uppercase()).collect(),
        }))
    }

    /// Every format file the library records: (path relative to the library, `data` size).
    pub fn format_files(&self) -> Result<Vec<(String, u64)>, CalibreError> {
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare(
                "SELECT b.path, d.name, d.format, d.uncompressed_size FROM data d
                 JOIN books b ON b.id = d.book",
            )
            .map_err(|e| self.db_error("reading the formats", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.db_error("reading the formats", e))?;
        Ok(rows
            .into_iter()
            .map(|(dir, name, fmt, size)| {
                (
                    paths::format_rel_path(&dir, &name, &fmt),
                    size.max(0) as u64,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_source(id: i64, title: &str) -> Metadata {
        Metadata {
            title: Some(title.into()),
            authors: vec!["Ann Leckie".into()],
            source: Some(format!("calibre:{id}")),
            ..Metadata::default()
        }
    }

    /// A library without books keeps a calibre source's ids; an id already held (here by a
    /// planned book) goes past the source's highest id, never to an id a later source book
    /// keeps; a committed book makes the next first open decide for new ids.
    #[test]
    fn an_empty_library_keeps_source_ids_and_a_taken_one_goes_past_the_source() {
        let _s = super::super::tests::serial();
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("lib");
        let mut lib = CalibreLibrary::open(&root).expect("open");
        let ids = lib.book_ids_now(true).expect("decide");
        assert_eq!(
            ids,
            BookIds {
                keep: true,
                max_before: 0
            }
        );
        assert!(!lib.book_ids_now(false).expect("decide").keep);
        lib.number_books(ids, 10);
        let mut first = lib
            .plan(&from_source(3, "Ancillary Justice"))
            .expect("plan");
        assert_eq!(first.book_id, 3);
        assert_eq!(
            lib.reserve(&from_source(3, "Another"))
                .expect("reserve")
                .book_id,
            11
        );
        assert_eq!(
            lib.reserve(&from_source(7, "Ancillary Mercy"))
                .expect("reserve")
                .book_id,
            7
        );
        let no_source = Metadata {
            source: None,
            ..from_source(0, "Provenance")
        };
        assert_eq!(lib.reserve(&no_source).expect("reserve").book_id, 12);

        lib.write_format(&mut first, "epub", &mut &b"data"[..])
            .expect("write");
        lib.commit(&[first]).expect("commit");
        drop(lib);
        let lib = CalibreLibrary::open(&root).expect("open again");
        assert_eq!(
            lib.book_ids_now(true).expect("decide"),
            BookIds {
                keep: false,
                max_before: 3
            }
        );
    }

    /// Without kept ids a calibre source book gets the next id, as calibre gives them.
    #[test]
    fn without_kept_ids_a_source_book_gets_the_next_id() {
        let _s = super::super::tests::serial();
        let tmp = tempfile::tempdir().expect("tmp");
        let mut lib = CalibreLibrary::open(&tmp.path().join("lib")).expect("open");
        lib.number_books(
            BookIds {
                keep: false,
                max_before: 0,
            },
            10,
        );
        assert_eq!(
            lib.reserve(&from_source(3, "Ancillary Sword"))
                .expect("reserve")
                .book_id,
            1
        );
    }
}
