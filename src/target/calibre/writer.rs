//! Writing books into a calibre library, in three steps a crash cannot tear apart:
//!
//! 1. [`CalibreLibrary::plan`] gives a book its id and folder (`Author/Title (id)`), creates the
//!    folder and puts a `.bookferry-pending` marker in it;
//! 2. [`CalibreLibrary::write_format`] / [`CalibreLibrary::write_cover`] put files in it (no
//!    fsync per file);
//! 3. [`CalibreLibrary::commit`] writes each book's `metadata.opf`, makes every file durable with
//!    one `syncfs`, records all the books in one transaction, then removes their markers. (A
//!    caller that keeps placing files meanwhile takes the steps apart: `prepare`, `write_opfs`,
//!    [`RowsWriter::write_when_durable`] holding only the database's lock while its `syncfs`
//!    runs, then [`CalibreLibrary::recorded`].)
//!
//! A folder with a marker is bookferry's until its row is committed: [`CalibreLibrary::cleanup_orphans`]
//! (run by `open` too) removes marked folders that have no `books` row, and only the marker of
//! one that has (a crash between the commit and the marker's removal). Folders without a marker
//! are calibre's and never touched. Nothing foreign goes into `metadata.db`.
//!
//! The whole time a library is open we hold calibre's writer lock, so no calibre program writes
//! it meanwhile and the ids we hand out stay free.

use super::dates;
use super::existing::{ExistingIndex, Key};
use super::functions::{self, author_to_author_sort, title_sort, uuid4};
use super::langs;
use super::lock::CalibreLock;
use super::opf::{self, OpfBook};
use super::paths;
use super::schema;
use super::CalibreError;
use crate::metadata::Metadata;
use crate::target::flusher::syncfs;
use rusqlite::{Connection, OptionalExtension, Transaction};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The marker that makes a book folder bookferry's until its row is committed.
pub const PENDING_MARKER: &str = ".bookferry-pending";

/// The name prefix of a file being written to replace a book's format file.
pub const TEMP_PREFIX: &str = ".bookferry-tmp-";

/// The database file of a calibre library.
pub const METADATA_DB: &str = "metadata.db";

/// A book given an id and a folder, not yet recorded in `metadata.db`.
#[derive(Debug, Clone)]
pub struct PlannedBook {
    /// The `books.id` it will have.
    pub book_id: i64,
    /// `books.path`: `Author/Title (id)`, relative to the library.
    pub rel_dir: String,
    /// `data.name`: every format file is `{file_stem}.{ext}`.
    pub file_stem: String,
    /// (FORMAT, size) of the files written so far.
    pub formats: Vec<(String, u64)>,
    pub has_cover: bool,
    fields: Fields,
}

/// A book's values after calibre's own cleaning (`db/write.py` adapters).
#[derive(Debug, Clone)]
struct Fields {
    title: String,
    authors: Vec<String>,
    author_sort: Option<String>,
    series: Option<String>,
    series_index: Option<f64>,
    publisher: Option<String>,
    pubdate: String,
    languages: Vec<String>,
    identifiers: Vec<(String, String)>,
    tags: Vec<String>,
    comments: Option<String>,
    rating: Option<i64>,
    uuid: String,
    timestamp: String,
}

fn strip(s: &str) -> &str {
    functions::py_strip(s)
}

/// Case-insensitive de-duplication keeping the first spelling.
fn uniq(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|s| !s.is_empty() && seen.insert(s.to_lowercase()))
        .collect()
}

fn looks_like_uuid(u: &str) -> bool {
    u.len() == 36
        && u.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// A book's values as calibre would store them, worked out before any lock is taken (the
/// cleaning is most of the cost of deciding where a file goes): what
/// [`CalibreLibrary::find_existing_candidate`] and [`CalibreLibrary::reserve_candidate`] take.
#[derive(Debug, Clone)]
pub struct Candidate {
    fields: Fields,
    /// No author given ("Unknown" is not one to match on: calibre matches given authors).
    no_authors: bool,
    /// The uuid the metadata gives, when it is one.
    given_uuid: Option<String>,
}

impl Candidate {
    pub fn of(md: &Metadata) -> Candidate {
        Candidate {
            fields: Fields::from_metadata(md),
            no_authors: md.authors.iter().all(|a| strip(a).is_empty()),
            given_uuid: md
                .uuid
                .as_deref()
                .map(|u| u.trim().to_lowercase())
                .filter(|u| looks_like_uuid(u)),
        }
    }
}

impl Fields {
    fn from_metadata(md: &Metadata) -> Fields {
        let (title, authors) = stored_identity(md);
        let mut languages: Vec<String> = md.languages.clone();
        if languages.is_empty() {
            languages.extend(md.language.clone());
        }
        let mut identifiers: Vec<(String, String)> = Vec::new();
        let mut push_id = |typ: &str, val: &str| {
            let typ = strip(typ).to_lowercase().replace([':', ','], "");
            let val = strip(val).replace(',', "|");
            if !typ.is_empty() && !val.is_empty() && !identifiers.iter().any(|(t, _)| *t == typ) {
                identifiers.push((typ, val));
            }
        };
        for (t, v) in &md.identifiers {
            push_id(t, v);
        }
        if let Some(isbn) = &md.isbn {
            push_id("isbn", isbn);
        }
        Fields {
            title,
            authors,
            author_sort: md
                .author_sort
                .as_deref()
                .map(strip)
                .filter(|s| !s.is_empty())
                .map(String::from),
            series: md
                .series
                .as_deref()
                .map(strip)
                .filter(|s| !s.is_empty())
                .map(String::from),
            series_index: md.series_index.filter(|i| i.is_finite()),
            publisher: md
                .publisher
                .as_deref()
                .map(strip)
                .filter(|s| !s.is_empty())
                .map(String::from),
            pubdate: dates::pubdate(md.pubdate.as_deref()),
            languages: uniq(languages.iter().filter_map(|l| langs::canonicalize(l))),
            identifiers,
            tags: uniq(md.tags.iter().map(|t| strip(t).replace(',', ";"))),
            comments: md
                .description
                .as_deref()
                .filter(|d| !strip(d).is_empty())
                .map(String::from),
            rating: md
                .rating
                .filter(|r| r.is_finite())
                .map(|r| (r * 2.0).round().clamp(0.0, 10.0) as i64)
                .filter(|r| *r > 0),
            uuid: md
                .uuid
                .as_deref()
                .map(|u| u.trim().to_lowercase())
                .filter(|u| looks_like_uuid(u))
                .unwrap_or_else(uuid4),
            timestamp: dates::now(),
        }
    }

    fn key(&self) -> Key<'_> {
        Key {
            title: &self.title,
            authors: &self.authors,
            languages: &self.languages,
            identifiers: &self.identifiers,
            uuid: Some(&self.uuid),
        }
    }
}

/// A book already recorded in `metadata.db` (calibre's or committed by us).
#[derive(Debug, Clone)]
pub struct CommittedBook {
    pub book_id: i64,
    /// `books.path`.
    pub rel_dir: String,
    /// `data.name` of its formats (of its first one; or the name calibre would give a first).
    pub file_stem: String,
    /// Its formats, upper case.
    pub formats: Vec<String>,
}

/// A format file written into a committed book, to be recorded in `data` by the next commit.
#[derive(Debug, Clone)]
pub struct AddedFormat {
    pub book_id: i64,
    /// `books.path` of the book.
    pub rel_dir: String,
    pub format: String,
    pub file_stem: String,
    pub size: u64,
    /// The book had this format: its file was replaced (a changed source file), so only the
    /// recorded size changes.
    pub replaced: bool,
}

/// The title and authors a book made from `md` is stored with, after calibre's cleaning
/// (authors as the user sees them: `,` not `|`).
pub fn stored_identity(md: &Metadata) -> (String, Vec<String>) {
    let title = md
        .title
        .as_deref()
        .map(strip)
        .filter(|t| !t.is_empty())
        .unwrap_or("Unknown");
    let mut authors = uniq(md.authors.iter().map(|a| strip(a).replace('&', ";")));
    if authors.is_empty() {
        authors.push("Unknown".into());
    }
    (title.to_string(), authors)
}

/// Name → (id, extra) of a calibre item table, keyed by lowercased name.
type ItemMap = HashMap<String, (i64, String)>;

/// The library's database connection and the ids of its item tables (authors, series, …),
/// behind their own lock: a commit writes its rows holding only this, while the books side
/// (`CalibreLibrary`'s plans) goes on being used.
struct LibraryDb {
    conn: Connection,
    items: Items,
}

/// The item tables' ids by name, as the rows of a commit need them.
#[derive(Default)]
struct Items {
    authors: ItemMap,
    series: ItemMap,
    tags: ItemMap,
    publishers: ItemMap,
    languages: ItemMap,
}

/// Writes a commit's rows (step 3 of a commit) without needing the [`CalibreLibrary`] itself:
/// see [`CalibreLibrary::rows_writer`].
pub struct RowsWriter {
    db: Arc<Mutex<LibraryDb>>,
    db_path: PathBuf,
}

/// An open calibre library, locked against calibre's own writers while it is open.
pub struct CalibreLibrary {
    root: PathBuf,
    db_path: PathBuf,
    db: Arc<Mutex<LibraryDb>>,
    root_dir: File,
    next_id: i64,
    /// Books planned and not yet committed, with what identifies them.
    planned: HashMap<i64, Fields>,
    existing: ExistingIndex,
    created: bool,
    /// None only with `--ignore-calibre-lock` while a calibre program holds it.
    _lock: Option<CalibreLock>,
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
    /// empty folder. Takes calibre's writer lock (fails with [`CalibreError::CalibreRunning`]
    /// when a calibre program has it) and removes what an interrupted run left
    /// ([`CalibreLibrary::cleanup_orphans`]).
    pub fn open(root: &Path) -> Result<CalibreLibrary, CalibreError> {
        CalibreLibrary::open_with(root, false)
    }

    /// [`CalibreLibrary::open`], going on without calibre's writer lock when a calibre program
    /// holds it and `ignore_calibre_lock` (the user's `--ignore-calibre-lock`).
    pub fn open_with(
        root: &Path,
        ignore_calibre_lock: bool,
    ) -> Result<CalibreLibrary, CalibreError> {
        let io_err = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| CalibreError::Io { path, what, source }
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
                    cause: format!(
                        "the folder holds files ({:?}, …) but no {METADATA_DB}; give an empty or new folder to create a library",
                        name
                    ),
                });
            }
            create_database(root, &db_path)?;
            true
        };
        let db_err = |what: &'static str| {
            let path = db_path.clone();
            move |source: rusqlite::Error| CalibreError::Db { path, what, source }
        };
        let conn = Connection::open(&db_path).map_err(db_err("cannot open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_err("setting the busy timeout"))?;
        functions::register(&conn).map_err(db_err("registering calibre's SQL functions"))?;
        // Every statement of a book's insertion stays prepared (calibre's triggers make them
        // costly to parse).
        conn.set_prepared_statement_cache_capacity(64);
        schema::check(&conn, &db_path)?;
        // calibre's own temporary triggers (backend.py): author sort filled in on insert.
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS temp.author_insert_trg;
             CREATE TEMP TRIGGER author_insert_trg AFTER INSERT ON authors
             BEGIN
                 UPDATE authors SET sort=author_to_author_sort(NEW.name) WHERE id=NEW.id;
             END;",
        )
        .map_err(db_err("creating calibre's temporary triggers"))?;
        let next_id: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'books'), 0),
                            COALESCE((SELECT MAX(id) FROM books), 0)) + 1",
                [],
                |r| r.get(0),
            )
            .map_err(db_err("reading the next book id"))?;
        let root_dir = File::open(root).map_err(io_err("cannot open the library folder", root))?;
        let mut lib = CalibreLibrary {
            root: root.to_path_buf(),
            db_path,
            db: Arc::new(Mutex::new(LibraryDb {
                conn,
                items: Items::default(),
            })),
            root_dir,
            next_id,
            planned: HashMap::new(),
            existing: ExistingIndex::default(),
            created,
            _lock: lock,
        };
        lib.load_caches()?;
        lib.cleanup_orphans()?;
        Ok(lib)
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

    fn db(&self) -> MutexGuard<'_, LibraryDb> {
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

    fn db_error(&self, what: &'static str, source: rusqlite::Error) -> CalibreError {
        CalibreError::Db {
            path: self.db_path.clone(),
            what,
            source,
        }
    }

    fn io_error(&self, what: &'static str, path: &Path, source: io::Error) -> CalibreError {
        CalibreError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }

    fn load_caches(&mut self) -> Result<(), CalibreError> {
        let load = |conn: &Connection, sql: &str| -> rusqlite::Result<ItemMap> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            let mut map = HashMap::new();
            for row in rows {
                let (id, name, extra) = row?;
                map.entry(name.replace('|', ",").to_lowercase())
                    .or_insert((id, extra.unwrap_or_default()));
            }
            Ok(map)
        };
        let mut db = self.db();
        let c = &db.conn;
        let res = (|| {
            Ok::<_, rusqlite::Error>((
                load(c, "SELECT id, name, sort FROM authors")?,
                load(c, "SELECT id, name, NULL FROM series")?,
                load(c, "SELECT id, name, NULL FROM tags")?,
                load(c, "SELECT id, name, NULL FROM publishers")?,
                load(c, "SELECT id, lang_code, NULL FROM languages")?,
                ExistingIndex::load(c)?,
            ))
        })();
        let (a, s, t, p, l, e) = match res {
            Ok(r) => r,
            Err(e) => {
                drop(db);
                return Err(self.db_error("reading the library", e));
            }
        };
        db.items = Items {
            authors: a,
            series: s,
            tags: t,
            publishers: p,
            languages: l,
        };
        drop(db);
        self.existing = e;
        Ok(())
    }

    /// The id of a book already in the library (or planned in this session) that is the same
    /// as `md` by calibre's rule, if any.
    pub fn find_existing(&self, md: &Metadata) -> Option<i64> {
        self.find_existing_candidate(&Candidate::of(md))
    }

    /// [`CalibreLibrary::find_existing`] for a book's values computed beforehand.
    pub fn find_existing_candidate(&self, c: &Candidate) -> Option<i64> {
        let authors: &[String] = if c.no_authors { &[] } else { &c.fields.authors };
        self.existing.find(&Key {
            authors,
            uuid: c.given_uuid.as_deref(),
            ..c.fields.key()
        })
    }

    /// Give a book its id and folder: the folder is created with the pending marker in it.
    pub fn plan(&mut self, md: &Metadata) -> Result<PlannedBook, CalibreError> {
        let book = self.reserve(md);
        if let Err(e) = make_book_dir(&self.root, &book.rel_dir, book.book_id) {
            self.planned.remove(&book.book_id);
            self.existing.remove(book.book_id);
            return Err(e);
        }
        Ok(book)
    }

    /// Give a book its id and folder name, without touching the disk: the caller makes the
    /// folder with [`make_book_dir`] (outside any lock it holds) before writing into it.
    pub fn reserve(&mut self, md: &Metadata) -> PlannedBook {
        self.reserve_candidate(Candidate::of(md))
    }

    /// [`CalibreLibrary::reserve`] for a book's values computed beforehand.
    pub fn reserve_candidate(&mut self, c: Candidate) -> PlannedBook {
        let mut fields = c.fields;
        if self
            .existing
            .find(&Key {
                title: "",
                authors: &[],
                languages: &[],
                identifiers: &[],
                uuid: Some(&fields.uuid),
            })
            .is_some()
        {
            fields.uuid = uuid4();
        }
        let book_id = self.next_id;
        self.next_id += 1;
        let rel_dir = paths::book_dir(book_id, &fields.title, &fields.authors[0]);
        let file_stem = paths::file_stem(&fields.title, &fields.authors[0]);
        self.planned.insert(book_id, fields.clone());
        self.existing.add(book_id, &fields.key());
        PlannedBook {
            book_id,
            rel_dir,
            file_stem,
            formats: Vec::new(),
            has_cover: false,
            fields,
        }
    }

    /// The absolute folder of a planned book.
    pub fn dir_of(&self, book: &PlannedBook) -> PathBuf {
        self.root.join(&book.rel_dir)
    }

    /// The folder-relative file name calibre gives format `format` of a book named `stem`, with
    /// the format upper-cased as `data.format` holds it.
    pub fn format_file(&self, stem: &str, format: &str) -> Result<(String, String), CalibreError> {
        let fmt = format.trim().trim_start_matches('.').to_uppercase();
        if fmt.is_empty()
            || !fmt
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            || fmt.contains("..")
        {
            return Err(CalibreError::Invalid {
                path: self.root.clone(),
                cause: format!("format {format:?} is not a file extension calibre can store"),
            });
        }
        let name = format!("{stem}.{}", fmt.to_lowercase());
        Ok((fmt, name))
    }

    /// The id of the book (recorded, or planned in this session) with this calibre uuid.
    pub fn find_by_uuid(&self, uuid: &str) -> Option<i64> {
        self.existing.find(&Key {
            title: "",
            authors: &[],
            languages: &[],
            identifiers: &[],
            uuid: Some(uuid),
        })
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
                return Err(CalibreError::Invalid {
                    path: self.root.join(&rel_dir),
                    cause: format!(
                        "book #{book_id}'s path {rel_dir:?} does not stay inside the library"
                    ),
                });
            }
            dir.push(comp);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(CalibreError::Invalid {
                        path: dir,
                        cause: format!(
                            "book #{book_id}'s folder is a symlink or a file; bookferry does not write through links"
                        ),
                    })
                }
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

    /// A recorded book's uuid, title and authors (`,` not `|`), or `None` without such a row.
    pub fn book_identity(
        &self,
        book_id: i64,
    ) -> Result<Option<(String, String, Vec<String>)>, CalibreError> {
        let row: Option<(Option<String>, Option<String>)> = self
            .db()
            .conn
            .query_row(
                "SELECT uuid, title FROM books WHERE id = ?1",
                [book_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db_error("reading a book", e))?;
        let Some((uuid, title)) = row else {
            return Ok(None);
        };
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare_cached(
                "SELECT a.name FROM books_authors_link l JOIN authors a ON a.id = l.author
                 WHERE l.book = ?1 ORDER BY l.id",
            )
            .map_err(|e| self.db_error("reading a book's authors", e))?;
        let authors: Vec<String> = stmt
            .query_map([book_id], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error("reading a book's authors", e))?;
        Ok(Some((
            uuid.unwrap_or_default(),
            title.unwrap_or_default(),
            authors.into_iter().map(|a| a.replace('|', ",")).collect(),
        )))
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
                    format!("{dir}/{name}.{}", fmt.to_lowercase()),
                    size.max(0) as u64,
                )
            })
            .collect())
    }

    /// Put the pending marker in a book folder, naming the files in it that are not recorded
    /// yet: if the run dies, `cleanup_orphans` removes those (or the whole folder of a book
    /// with no row). Not synced: a marker matters after a crash of the process, and the files
    /// it names are made durable with it by the next `flush`.
    pub fn mark_pending(&self, rel_dir: &str, names: &[String]) -> Result<(), CalibreError> {
        let path = self.root.join(rel_dir).join(PENDING_MARKER);
        let mut text = String::new();
        for n in names {
            text.push_str(n);
            text.push('\n');
        }
        fs::write(&path, text).map_err(|e| self.io_error("cannot write", &path, e))
    }

    /// Write one format of a planned book (`{file_stem}.{format lowercased}`), copying `src`.
    /// Returns the bytes written. Not synced: `commit` syncs all files at once.
    pub fn write_format(
        &self,
        book: &mut PlannedBook,
        format: &str,
        src: &mut dyn Read,
    ) -> Result<u64, CalibreError> {
        let (fmt, name) = self.format_file(&book.file_stem, format)?;
        let path = self.dir_of(book).join(name);
        if book.formats.iter().any(|(f, _)| *f == fmt) {
            return Err(CalibreError::Invalid {
                path,
                cause: format!("book {} already has a {fmt} file", book.book_id),
            });
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| self.io_error("cannot create", &path, e))?;
        let size = io::copy(src, &mut out).map_err(|e| self.io_error("cannot write", &path, e))?;
        book.formats.push((fmt, size));
        Ok(size)
    }

    /// Write the book's `cover.jpg` (the bytes as given: pass a JPEG, as calibre stores).
    pub fn write_cover(&self, book: &mut PlannedBook, jpeg: &[u8]) -> Result<(), CalibreError> {
        let path = self.dir_of(book).join("cover.jpg");
        let mut f = File::create(&path).map_err(|e| self.io_error("cannot create", &path, e))?;
        f.write_all(jpeg)
            .map_err(|e| self.io_error("cannot write", &path, e))?;
        book.has_cover = true;
        Ok(())
    }

    /// Drop a planned book: its folder (and its author folder, if left empty) is removed.
    pub fn abandon(&mut self, book: PlannedBook) -> Result<(), CalibreError> {
        self.planned.remove(&book.book_id);
        self.existing.remove(book.book_id);
        let dir = self.dir_of(&book);
        self.remove_book_dir(&dir)
    }

    fn remove_book_dir(&self, dir: &Path) -> Result<(), CalibreError> {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_error("cannot remove", dir, e)),
        }
        if let Some(parent) = dir.parent().filter(|p| *p != self.root) {
            // Only when empty: remove_dir fails on a folder with other books in it.
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }

    /// Make every file written so far durable (one `syncfs` of the library's filesystem).
    pub fn flush(&self) -> Result<(), CalibreError> {
        syncfs(&self.root_dir).map_err(|e| self.io_error("syncfs failed", &self.root, e))
    }

    /// Record planned books whose files are written: their `metadata.opf` is written, all files
    /// are synced, then every row goes in one transaction; last, their markers are removed.
    /// On error nothing is recorded and the books stay planned (commit again, or `abandon`).
    pub fn commit(&mut self, books: &[PlannedBook]) -> Result<(), CalibreError> {
        self.commit_all(books, &[], &HashSet::new())
    }

    /// [`CalibreLibrary::commit`], also recording formats added to committed books (`data`
    /// rows, and the book marked for calibre to rewrite its `metadata.opf`). The markers of
    /// books in `still_pending` are left as they are (the caller keeps writing into them).
    pub fn commit_all(
        &mut self,
        books: &[PlannedBook],
        added: &[AddedFormat],
        still_pending: &HashSet<i64>,
    ) -> Result<(), CalibreError> {
        let resolved = self.prepare(books)?;
        self.write_opfs(books, &resolved)?;
        self.flush()?;
        self.record(books, &resolved, added, still_pending)
    }

    /// Step 1 of a commit: every value of these planned books as it will be stored (their
    /// series indexes resolved together).
    pub fn prepare(&self, books: &[PlannedBook]) -> Result<Vec<OpfBook>, CalibreError> {
        let mut resolved = Vec::with_capacity(books.len());
        let mut series_max: HashMap<String, f64> = HashMap::new();
        let db = self.db();
        for b in books {
            if !self.planned.contains_key(&b.book_id) {
                return Err(CalibreError::Invalid {
                    path: self.dir_of(b),
                    cause: format!(
                        "book {} is not planned in this library (committed already?)",
                        b.book_id
                    ),
                });
            }
            resolved.push(self.resolve(&db, b, &mut series_max)?);
        }
        Ok(resolved)
    }

    /// Step 2: each book's `metadata.opf` (needs no `&mut`: may run while the caller lets
    /// others use the library). Then the caller makes it durable, with `flush` or a `syncfs`.
    pub fn write_opfs(
        &self,
        books: &[PlannedBook],
        resolved: &[OpfBook],
    ) -> Result<(), CalibreError> {
        write_opfs(&self.root, books, resolved)
    }

    /// Step 3: every row of the books (`prepare`d, their files and `metadata.opf` durable) and
    /// of the added formats, in one transaction; then the markers of books not in
    /// `still_pending` are removed. On error nothing is recorded and the books stay planned.
    /// ([`RowsWriter::write`] then [`CalibreLibrary::recorded`], in one call.)
    pub fn record(
        &mut self,
        books: &[PlannedBook],
        resolved: &[OpfBook],
        added: &[AddedFormat],
        still_pending: &HashSet<i64>,
    ) -> Result<(), CalibreError> {
        let rows = self.rows_writer().write(books, resolved, added);
        self.recorded(books, added, still_pending, rows)
    }

    /// After [`RowsWriter::write`] of these books and formats: when it wrote them, they are
    /// committed (no longer planned) and the markers of books not in `still_pending` are
    /// removed; when it failed, the books stay planned and its error is returned.
    pub fn recorded(
        &mut self,
        books: &[PlannedBook],
        added: &[AddedFormat],
        still_pending: &HashSet<i64>,
        rows: Result<(), CalibreError>,
    ) -> Result<(), CalibreError> {
        if let Err(e) = rows {
            // The caches may name rows the rollback removed.
            self.load_caches()?;
            for (id, f) in &self.planned {
                self.existing.add(*id, &f.key());
            }
            return Err(e);
        }
        let mut done_dirs = Vec::new();
        for b in books {
            self.planned.remove(&b.book_id);
            if !still_pending.contains(&b.book_id) {
                done_dirs.push(self.dir_of(b));
            }
        }
        for a in added {
            if !still_pending.contains(&a.book_id) {
                done_dirs.push(self.root.join(&a.rel_dir));
            }
        }
        for dir in done_dirs {
            // A marker left behind is harmless: the next cleanup_orphans sees the rows and
            // removes it.
            let _ = fs::remove_file(dir.join(PENDING_MARKER));
        }
        Ok(())
    }

    /// Every value of a planned book as it will be stored.
    fn resolve(
        &self,
        db: &LibraryDb,
        b: &PlannedBook,
        series_max: &mut HashMap<String, f64>,
    ) -> Result<OpfBook, CalibreError> {
        let f = &b.fields;
        let author_sort = match &f.author_sort {
            Some(s) => s.clone(),
            None => f
                .authors
                .iter()
                .map(|a| match db.items.authors.get(&a.to_lowercase()) {
                    Some((_, sort)) if !sort.is_empty() => sort.clone(),
                    _ => author_to_author_sort(a),
                })
                .collect::<Vec<_>>()
                .join(" & "),
        };
        let series_index = match (&f.series, f.series_index) {
            (_, Some(i)) => i,
            (None, None) => 1.0,
            (Some(s), None) => {
                // calibre's default (`series_index_auto_increment = 'next'`): one past the
                // highest index in the series.
                let key = s.to_lowercase();
                let db_max: Option<f64> = match db.items.series.get(&key) {
                    Some((id, _)) => db
                        .conn
                        .query_row(
                            "SELECT MAX(b.series_index) FROM books b JOIN books_series_link l
                             ON l.book = b.id WHERE l.series = ?1",
                            [id],
                            |r| r.get(0),
                        )
                        .map_err(|e| self.db_error("reading series indexes", e))?,
                    None => None,
                };
                let max = db_max
                    .into_iter()
                    .chain(series_max.get(&key).copied())
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
                max.map_or(1.0, |m| m.floor() + 1.0)
            }
        };
        if let Some(s) = &f.series {
            let e = series_max.entry(s.to_lowercase()).or_insert(series_index);
            *e = e.max(series_index);
        }
        Ok(OpfBook {
            book_id: b.book_id,
            uuid: f.uuid.clone(),
            title: f.title.clone(),
            title_sort: title_sort(&f.title),
            authors: f.authors.clone(),
            author_sort,
            pubdate: dates::opf_form(&f.pubdate),
            timestamp: dates::opf_form(&f.timestamp),
            description: f.comments.clone(),
            publisher: f.publisher.clone(),
            identifiers: f.identifiers.clone(),
            languages: f.languages.clone(),
            tags: f.tags.clone(),
            series: f.series.clone(),
            series_index,
            rating: f.rating,
        })
    }

    /// Remove what an interrupted run left: marked book folders with no `books` row (and their
    /// author folder when it is left empty), and empty `Title (id)` folders with no row (a
    /// crash between creating a folder and marking it). A marked folder whose row exists only
    /// loses its marker. Books planned in this session are left alone. Returns the folders
    /// removed.
    pub fn cleanup_orphans(&mut self) -> Result<usize, CalibreError> {
        let mut removed = 0;
        let entries =
            fs::read_dir(&self.root).map_err(|e| self.io_error("cannot list", &self.root, e))?;
        for author in entries.flatten() {
            let is_dir = author.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if !is_dir || author.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(mut books) = fs::read_dir(author.path()) else {
                continue;
            };
            let mut books = match books.next() {
                // An empty author folder: made by a run killed before its book's folder.
                // (Removed only while empty: `remove_dir` refuses anything else.)
                None => {
                    let _ = fs::remove_dir(author.path());
                    continue;
                }
                Some(first) => std::iter::once(first).chain(books),
            };
            for book in books.by_ref().flatten() {
                if !book.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = book.file_name().to_string_lossy().into_owned();
                let Some(id) = book_id_of(&name) else {
                    continue;
                };
                if self.planned.contains_key(&id) {
                    continue;
                }
                let dir = book.path();
                let marked = dir.join(PENDING_MARKER).exists();
                let empty = fs::read_dir(&dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if !marked && !empty {
                    continue;
                }
                let rel = format!("{}/{}", author.file_name().to_string_lossy(), name);
                let row_path: Option<String> = self
                    .db()
                    .conn
                    .query_row("SELECT path FROM books WHERE id = ?1", [id], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.db_error("looking up a book folder", e))?;
                match row_path {
                    Some(p) if p == rel => {
                        if marked {
                            self.remove_unrecorded(id, &dir)?;
                        }
                    }
                    _ => {
                        self.remove_book_dir(&dir)?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

impl CalibreLibrary {
    /// In a recorded book's folder: remove the files its marker names that `data` does not
    /// record (written by a run that died before recording them), then the marker.
    fn remove_unrecorded(&self, book_id: i64, dir: &Path) -> Result<(), CalibreError> {
        let marker = dir.join(PENDING_MARKER);
        let listed = fs::read_to_string(&marker).unwrap_or_default();
        let db = self.db();
        let mut stmt = db
            .conn
            .prepare_cached("SELECT name, format FROM data WHERE book = ?1")
            .map_err(|e| self.db_error("reading a book's formats", e))?;
        let recorded: HashSet<String> = stmt
            .query_map([book_id], |r| {
                Ok(format!(
                    "{}.{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?.to_lowercase()
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.db_error("reading a book's formats", e))?;
        for name in listed.lines().map(str::trim).filter(|n| !n.is_empty()) {
            let ours = !name.starts_with('.') || name.starts_with(TEMP_PREFIX);
            if recorded.contains(name) || name.contains('/') || !ours {
                continue;
            }
            let file = dir.join(name);
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_error("cannot remove", &file, e)),
            }
        }
        fs::remove_file(&marker).map_err(|e| self.io_error("cannot remove", &marker, e))
    }
}

impl RowsWriter {
    /// The rows of a commit's books (`prepare`d, their files and `metadata.opf` durable) and of
    /// the formats added to recorded books, in one transaction. Holds only the database's
    /// lock: the library's books side stays free meanwhile. Pass the result to
    /// [`CalibreLibrary::recorded`].
    pub fn write(
        &self,
        books: &[PlannedBook],
        resolved: &[OpfBook],
        added: &[AddedFormat],
    ) -> Result<(), CalibreError> {
        self.write_when_durable(books, resolved, added, || Ok(()))
    }

    /// [`RowsWriter::write`] for files not yet known durable: the rows go into the open
    /// transaction while the caller makes the files durable (its `syncfs` runs meanwhile), and
    /// are committed only once `durable` — called after the last row — says they are. When it
    /// fails, nothing is recorded and its error is returned.
    pub fn write_when_durable(
        &self,
        books: &[PlannedBook],
        resolved: &[OpfBook],
        added: &[AddedFormat],
        durable: impl FnOnce() -> io::Result<()>,
    ) -> Result<(), CalibreError> {
        let db_error = |source| CalibreError::Db {
            path: self.db_path.clone(),
            what: "recording the books",
            source,
        };
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let db = &mut *guard;
        let tx = db.conn.transaction().map_err(db_error)?;
        let inserted = (|| {
            for (b, r) in books.iter().zip(resolved) {
                insert_book(&tx, &mut db.items, b, r)?;
            }
            for a in added {
                if a.replaced {
                    tx.prepare_cached(
                        "UPDATE data SET uncompressed_size = ?3 WHERE book = ?1 AND format = ?2",
                    )?
                    .execute(rusqlite::params![
                        a.book_id,
                        a.format,
                        a.size as i64
                    ])?;
                } else {
                    tx.prepare_cached(
                        "INSERT INTO data (book, format, uncompressed_size, name) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(rusqlite::params![a.book_id, a.format, a.size as i64, a.file_stem])?;
                }
                tx.prepare_cached("INSERT OR IGNORE INTO metadata_dirtied (book) VALUES (?1)")?
                    .execute([a.book_id])?;
            }
            Ok(())
        })();
        // Dropping the transaction without a commit rolls it back.
        inserted.map_err(db_error)?;
        durable().map_err(|source| CalibreError::Io {
            path: self.db_path.parent().unwrap_or(&self.db_path).to_path_buf(),
            what: "cannot make the files durable (syncfs)",
            source,
        })?;
        tx.commit().map_err(db_error)
    }
}

/// The id in a calibre book folder name `Title (id)`.
pub fn book_id_of(name: &str) -> Option<i64> {
    let inner = name.strip_suffix(')')?;
    let (_, id) = inner.rsplit_once(" (")?;
    id.parse().ok().filter(|id: &i64| *id > 0)
}

/// Make a reserved book's folder `root/rel_dir` (`Author/Title (id)`) with the pending marker
/// in it: the author folder is made if missing (never passed through if it is a symlink or a
/// file), the book folder must be new.
pub fn make_book_dir(root: &Path, rel_dir: &str, book_id: i64) -> Result<(), CalibreError> {
    let io_error = |what: &'static str, path: &Path, source: io::Error| CalibreError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let (author_rel, _) = rel_dir.split_once('/').unwrap_or((rel_dir, ""));
    let author_dir = root.join(author_rel);
    match fs::symlink_metadata(&author_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CalibreError::Invalid {
                path: author_dir,
                cause: "exists and is not a folder (or is a symlink)".into(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&author_dir) {
            Ok(()) => {}
            // Made a moment ago by another book of this author.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&author_dir).is_ok_and(|m| m.is_dir()) {
                    return Err(CalibreError::Invalid {
                        path: author_dir,
                        cause: "exists and is not a folder (or is a symlink)".into(),
                    });
                }
            }
            Err(e) => return Err(io_error("cannot create the author folder", &author_dir, e)),
        },
        Err(e) => return Err(io_error("cannot stat the author folder", &author_dir, e)),
    }
    let dir = root.join(rel_dir);
    if let Err(e) = fs::create_dir(&dir) {
        return Err(if e.kind() == io::ErrorKind::AlreadyExists {
            CalibreError::Invalid {
                path: dir,
                cause: format!(
                    "book {book_id}'s folder already exists and is not bookferry's to reuse"
                ),
            }
        } else {
            io_error("cannot create the book folder", &dir, e)
        });
    }
    let marker = dir.join(PENDING_MARKER);
    File::create(&marker)
        .map(drop)
        .map_err(|e| io_error("cannot create the pending marker", &marker, e))
}

/// Write each book's `metadata.opf` into its folder under `root`.
pub fn write_opfs(
    root: &Path,
    books: &[PlannedBook],
    resolved: &[OpfBook],
) -> Result<(), CalibreError> {
    for (b, r) in books.iter().zip(resolved) {
        let path = root.join(&b.rel_dir).join("metadata.opf");
        fs::write(&path, opf::render(r)).map_err(|source| CalibreError::Io {
            path: path.clone(),
            what: "cannot write",
            source,
        })?;
    }
    Ok(())
}

/// Create a new library's `metadata.db` under a temporary name and move it into place, so a
/// crash never leaves a half-made database.
fn create_database(root: &Path, db_path: &Path) -> Result<(), CalibreError> {
    let tmp = root.join(format!(".bookferry-new-{}.db", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let db_err = |what: &'static str| {
        let path = tmp.clone();
        move |source: rusqlite::Error| CalibreError::Db { path, what, source }
    };
    {
        let mut conn = Connection::open(&tmp).map_err(db_err("cannot create"))?;
        functions::register(&conn).map_err(db_err("registering calibre's SQL functions"))?;
        schema::create(&mut conn, &tmp, &uuid4())?;
        conn.close().map_err(|(_, e)| db_err("closing")(e))?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| CalibreError::Io {
            path: tmp.clone(),
            what: "cannot sync",
            source,
        })?;
    fs::rename(&tmp, db_path).map_err(|source| CalibreError::Io {
        path: db_path.to_path_buf(),
        what: "cannot move the new database into place",
        source,
    })?;
    File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(|source| CalibreError::Io {
            path: root.to_path_buf(),
            what: "cannot sync",
            source,
        })
}

/// The id of the item `name` in `table` (matched case-insensitively), inserting it if new.
fn item_id(
    tx: &Transaction<'_>,
    map: &mut ItemMap,
    table: &str,
    column: &str,
    name: &str,
    stored: &str,
) -> rusqlite::Result<i64> {
    let key = name.to_lowercase();
    if let Some((id, _)) = map.get(&key) {
        return Ok(*id);
    }
    tx.prepare_cached(&format!("INSERT INTO {table} ({column}) VALUES (?1)"))?
        .execute([stored])?;
    let id = tx.last_insert_rowid();
    let extra = if table == "authors" {
        tx.query_row("SELECT sort FROM authors WHERE id = ?1", [id], |r| {
            r.get::<_, Option<String>>(0)
        })?
        .unwrap_or_default()
    } else {
        String::new()
    };
    map.insert(key, (id, extra));
    Ok(id)
}

/// All rows of one book, as calibre's `create_book_entry` + `set_metadata` + `add_format`.
fn insert_book(
    tx: &Transaction<'_>,
    c: &mut Items,
    b: &PlannedBook,
    r: &OpfBook,
) -> rusqlite::Result<()> {
    let f = &b.fields;
    let id = b.book_id;
    tx.prepare_cached(
        "INSERT INTO books (id, title, series_index, author_sort) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(rusqlite::params![
        id,
        f.title,
        r.series_index,
        r.author_sort
    ])?;
    tx.prepare_cached(
        "UPDATE books SET timestamp = ?1, pubdate = ?2, path = ?3, has_cover = ?4, uuid = ?5,
                          last_modified = ?6 WHERE id = ?7",
    )?
    .execute(rusqlite::params![
        f.timestamp,
        f.pubdate,
        b.rel_dir,
        b.has_cover,
        f.uuid,
        dates::now(),
        id
    ])?;
    for a in &f.authors {
        let aid = item_id(
            tx,
            &mut c.authors,
            "authors",
            "name",
            a,
            &a.replace(',', "|"),
        )?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO books_authors_link (book, author) VALUES (?1, ?2)",
        )?
        .execute([id, aid])?;
    }
    if let Some(s) = &f.series {
        let sid = item_id(tx, &mut c.series, "series", "name", s, s)?;
        tx.prepare_cached("INSERT INTO books_series_link (book, series) VALUES (?1, ?2)")?
            .execute([id, sid])?;
    }
    for t in &f.tags {
        let tid = item_id(tx, &mut c.tags, "tags", "name", t, t)?;
        tx.prepare_cached("INSERT OR IGNORE INTO books_tags_link (book, tag) VALUES (?1, ?2)")?
            .execute([id, tid])?;
    }
    if let Some(p) = &f.publisher {
        let pid = item_id(tx, &mut c.publishers, "publishers", "name", p, p)?;
        tx.prepare_cached("INSERT INTO books_publishers_link (book, publisher) VALUES (?1, ?2)")?
            .execute([id, pid])?;
    }
    for (order, l) in f.languages.iter().enumerate() {
        let lid = item_id(tx, &mut c.languages, "languages", "lang_code", l, l)?;
        tx.prepare_cached("INSERT OR IGNORE INTO books_languages_link (book, lang_code, item_order) VALUES (?1, ?2, ?3)")?.execute([id, lid, order as i64])?;
    }
    for (typ, val) in &f.identifiers {
        tx.prepare_cached("INSERT INTO identifiers (book, type, val) VALUES (?1, ?2, ?3)")?
            .execute(rusqlite::params![id, typ, val])?;
    }
    if let Some(text) = &f.comments {
        tx.prepare_cached("INSERT INTO comments (book, text) VALUES (?1, ?2)")?
            .execute(rusqlite::params![id, text])?;
    }
    if let Some(rating) = f.rating {
        tx.prepare_cached("INSERT OR IGNORE INTO ratings (rating) VALUES (?1)")?
            .execute([rating])?;
        let rid: i64 = tx.query_row("SELECT id FROM ratings WHERE rating = ?1", [rating], |r| {
            r.get(0)
        })?;
        tx.prepare_cached("INSERT INTO books_ratings_link (book, rating) VALUES (?1, ?2)")?
            .execute([id, rid])?;
    }
    for (fmt, size) in &b.formats {
        tx.prepare_cached(
            "INSERT INTO data (book, format, uncompressed_size, name) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(rusqlite::params![id, fmt, *size as i64, b.file_stem])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::book_id_of;

    #[test]
    fn book_ids_from_folder_names() {
        assert_eq!(book_id_of("Title (12)"), Some(12));
        assert_eq!(book_id_of("A (b) (3)"), Some(3));
        assert_eq!(book_id_of("Title"), None);
        assert_eq!(book_id_of("Title (x)"), None);
        assert_eq!(book_id_of("Title (0)"), None);
    }
}
