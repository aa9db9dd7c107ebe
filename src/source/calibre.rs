//! A calibre library as a migration source: reads the library's `metadata.db` (strictly
//! read-only, so calibre may keep running) and lists every format file of every book with the
//! book's metadata as calibre shows it. This module owns only the reading of calibre's
//! database; stat-ing, hashing and uploading the files is the caller's.
//!
//! One query lists the formats (`data` joined to `books`); one query per link table (authors,
//! series, tags, identifiers, publishers, languages, comments, ratings) fills in the rest,
//! assembled in memory by book id. All of them run in one read transaction, so a library that
//! calibre changes meanwhile is still read as one consistent snapshot. Only plain SELECTs on
//! tables are used: calibre's triggers and views call SQL functions (`title_sort`, `uuid4`, …)
//! that only calibre registers, and nothing here needs them.

use crate::metadata::Metadata;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Row};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The file that makes a folder a calibre library.
pub const METADATA_DB: &str = "metadata.db";

/// How long `read_library` waits for calibre to finish a write before giving up with
/// [`CalibreError::Locked`]. calibre's writes are short; this only rides them out.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The tables read here; a database without them is not a calibre library.
pub const REQUIRED_TABLES: &[&str] = &[
    "books",
    "data",
    "authors",
    "books_authors_link",
    "series",
    "books_series_link",
    "tags",
    "books_tags_link",
    "identifiers",
    "publishers",
    "books_publishers_link",
    "languages",
    "books_languages_link",
    "comments",
    "ratings",
    "books_ratings_link",
];

/// One format file of one book (a book with EPUB and MOBI yields two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibreFormat {
    /// `books.id`.
    pub book_id: i64,
    /// Lowercase format, e.g. `epub`, `azw3`.
    pub format: String,
    /// Relative to the library root, `/`-separated: `{books.path}/{data.name}.{format}`.
    pub rel_path: String,
    /// The size calibre recorded (`data.uncompressed_size`); the file itself may differ or be
    /// missing: stat [`CalibreFormat::abs_path`].
    pub size: u64,
    /// The book's metadata as calibre shows it (shared by all formats of the book).
    pub metadata: Metadata,
    /// `{books.path}/cover.jpg` when calibre says the book has a cover.
    pub cover_path: Option<String>,
}

impl CalibreFormat {
    /// A stable key for this format in the state DB: `{book_id}/{format}`.
    pub fn source_ref(&self) -> String {
        format!("{}/{}", self.book_id, self.format)
    }

    /// Where the file should be, given the library root. It may not exist (calibre's database
    /// and its folders can disagree): the caller stats it.
    pub fn abs_path(&self, root: &Path) -> PathBuf {
        root.join(&self.rel_path)
    }

    /// Where the cover should be, when calibre says there is one.
    pub fn abs_cover_path(&self, root: &Path) -> Option<PathBuf> {
        self.cover_path.as_ref().map(|c| root.join(c))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalibreError {
    #[error("{}: not a calibre library (no {METADATA_DB} file)", .path.display())]
    NotALibrary { path: PathBuf },

    #[error("{}: cannot open read-only: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{}: locked by another program (calibre writing to it?) and still locked after \
         waiting {waited:?}: {source}",
        .path.display()
    )]
    Locked {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: rusqlite::Error,
    },

    #[error("{}: not a readable calibre database: {cause}", .path.display())]
    Corrupt { path: PathBuf, cause: String },

    #[error("{}: {what}: {source}", .path.display())]
    Query {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "{}: book {book_id} has an unsafe file path {rel_path:?} (absolute, empty part or \
         `..`); refusing to read outside the library",
        .path.display()
    )]
    UnsafePath {
        path: PathBuf,
        book_id: i64,
        rel_path: String,
    },
}

/// True when `root` holds a `metadata.db` file. A corrupt one still counts: reading it then
/// reports [`CalibreError::Corrupt`] instead of silently scanning the folder as plain files.
pub fn is_calibre_library(root: &Path) -> bool {
    root.join(METADATA_DB).is_file()
}

/// Every format of every book in the calibre library at `root`, ordered by book id then by
/// calibre's order of formats. Waits up to [`DEFAULT_BUSY_TIMEOUT`] for a calibre write to end.
pub fn read_library(root: &Path) -> Result<Vec<CalibreFormat>, CalibreError> {
    read_library_with_timeout(root, DEFAULT_BUSY_TIMEOUT)
}

/// [`read_library`] with the time to wait for a writer's lock given.
pub fn read_library_with_timeout(
    root: &Path,
    busy_timeout: Duration,
) -> Result<Vec<CalibreFormat>, CalibreError> {
    let db = root.join(METADATA_DB);
    if !db.is_file() {
        return Err(CalibreError::NotALibrary {
            path: root.to_path_buf(),
        });
    }
    let reader = Reader {
        db: &db,
        busy_timeout,
    };
    let mut conn = reader.open()?;
    // One deferred read transaction: a SHARED lock from the first SELECT to the end, never a
    // write lock. Dropping it (on error) rolls back, which for a reader only releases the lock.
    let tx = conn
        .transaction()
        .map_err(|e| reader.error("beginning a read transaction", e))?;
    reader.check_schema(&tx)?;
    let formats = reader.read_formats(&tx)?;
    tx.commit()
        .map_err(|e| reader.error("ending the read transaction", e))?;
    Ok(formats)
}

/// The uuids (lowercased) of every book in the calibre library at `root`.
pub fn book_uuids(root: &Path) -> Result<std::collections::HashSet<String>, CalibreError> {
    let db = root.join(METADATA_DB);
    let reader = Reader {
        db: &db,
        busy_timeout: DEFAULT_BUSY_TIMEOUT,
    };
    let conn = reader.open()?;
    let mut stmt = conn
        .prepare("SELECT uuid FROM books WHERE uuid IS NOT NULL")
        .map_err(|e| reader.error("reading book uuids", e))?;
    let uuids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.map(|u| u.map(|u| u.to_lowercase())).collect())
        .map_err(|e| reader.error("reading book uuids", e))?;
    Ok(uuids)
}

/// One row of `data` joined to its `books` row.
struct FormatRow {
    book_id: i64,
    format: String,
    name: String,
    size: u64,
    title: Option<String>,
    path: String,
    author_sort: Option<String>,
    series_index: Option<f64>,
    pubdate: Option<String>,
    uuid: Option<String>,
    has_cover: bool,
}

struct Reader<'a> {
    db: &'a Path,
    busy_timeout: Duration,
}

impl Reader<'_> {
    fn open(&self) -> Result<Connection, CalibreError> {
        let uri = sqlite_ro_uri(self.db, is_idle_wal_database(self.db));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&uri, flags).map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => CalibreError::Open {
                    path: self.db.to_path_buf(),
                    source: e,
                },
                _ => self.error("opening", e),
            })?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| self.error("setting the busy timeout", e))?;
        Ok(conn)
    }

    /// Sort an SQLite error into what the caller can act on.
    fn error(&self, what: &'static str, e: rusqlite::Error) -> CalibreError {
        let path = self.db.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => CalibreError::Locked {
                path,
                waited: self.busy_timeout,
                source: e,
            },
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => CalibreError::Corrupt {
                path,
                cause: e.to_string(),
            },
            // A read-only connection meets this when a crashed writer left a hot journal that
            // must be rolled back first; only a writer (calibre) may do that.
            Some(ErrorCode::ReadOnly) => CalibreError::Corrupt {
                path,
                cause: format!(
                    "{e} (an interrupted write left a journal to roll back: open the library in \
                     calibre once, then retry)"
                ),
            },
            _ => CalibreError::Query {
                path,
                what,
                source: e,
            },
        }
    }

    fn check_schema(&self, conn: &Connection) -> Result<(), CalibreError> {
        let what = "listing tables";
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .map_err(|e| self.error(what, e))?;
        let names = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.error(what, e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.error(what, e))?;
        let missing: Vec<&str> = REQUIRED_TABLES
            .iter()
            .copied()
            .filter(|t| !names.iter().any(|n| n.eq_ignore_ascii_case(t)))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CalibreError::Corrupt {
                path: self.db.to_path_buf(),
                cause: format!("missing calibre tables: {}", missing.join(", ")),
            })
        }
    }

    fn read_formats(&self, conn: &Connection) -> Result<Vec<CalibreFormat>, CalibreError> {
        let mut authors = self.text_links(
            conn,
            "reading authors",
            "SELECT l.book, a.name FROM books_authors_link l JOIN authors a ON a.id = l.author
             ORDER BY l.id",
        )?;
        let mut series = self.text_links(
            conn,
            "reading series",
            "SELECT l.book, s.name FROM books_series_link l JOIN series s ON s.id = l.series
             ORDER BY l.id",
        )?;
        let mut tags = self.text_links(
            conn,
            "reading tags",
            "SELECT l.book, t.name FROM books_tags_link l JOIN tags t ON t.id = l.tag
             ORDER BY l.id",
        )?;
        let mut publishers = self.text_links(
            conn,
            "reading publishers",
            "SELECT l.book, p.name FROM books_publishers_link l
             JOIN publishers p ON p.id = l.publisher ORDER BY l.id",
        )?;
        let mut languages = self.text_links(
            conn,
            "reading languages",
            "SELECT l.book, g.lang_code FROM books_languages_link l
             JOIN languages g ON g.id = l.lang_code ORDER BY l.book, l.item_order, l.id",
        )?;
        let mut comments = self.text_links(
            conn,
            "reading comments",
            "SELECT book, text FROM comments ORDER BY id",
        )?;
        let mut identifiers = self.identifiers(conn)?;
        let ratings = self.ratings(conn)?;

        let what = "reading books and formats";
        let mut stmt = conn
            .prepare(
                "SELECT d.book, d.format, d.name, d.uncompressed_size,
                        b.title, b.path, b.author_sort, b.series_index, b.pubdate, b.uuid,
                        b.has_cover
                 FROM data d JOIN books b ON b.id = d.book
                 ORDER BY d.book, d.id",
            )
            .map_err(|e| self.error(what, e))?;
        let mut rows = stmt.query([]).map_err(|e| self.error(what, e))?;
        let mut out = Vec::new();
        // Metadata is built once per book (its rows are adjacent) and cloned for its other
        // formats.
        let mut current: Option<(i64, Metadata)> = None;
        while let Some(row) = rows.next().map_err(|e| self.error(what, e))? {
            let row = read_format_row(row).map_err(|e| self.error(what, e))?;
            let book_id = row.book_id;
            let rel_path = format!("{}/{}.{}", row.path, row.name, row.format);
            if !is_safe_rel_path(&rel_path) || row.name.is_empty() || row.format.is_empty() {
                return Err(CalibreError::UnsafePath {
                    path: self.db.to_path_buf(),
                    book_id,
                    rel_path,
                });
            }
            let cover_path = row.has_cover.then(|| format!("{}/cover.jpg", row.path));
            let metadata = match &current {
                Some((id, md)) if *id == book_id => md.clone(),
                _ => {
                    let mut md = Metadata {
                        title: row.title,
                        author_sort: row.author_sort,
                        uuid: row.uuid,
                        pubdate: row.pubdate.as_deref().and_then(calibre_date),
                        cover: cover_path.clone(),
                        source: Some(format!("calibre:{book_id}")),
                        ..Metadata::default()
                    };
                    md.authors = take(&mut authors, book_id)
                        .into_iter()
                        .map(|a| a.replace('|', ","))
                        .collect();
                    md.series = take(&mut series, book_id).into_iter().next();
                    if md.series.is_some() {
                        md.series_index = row.series_index;
                    }
                    md.tags = take(&mut tags, book_id);
                    md.publisher = take(&mut publishers, book_id).into_iter().next();
                    md.languages = take(&mut languages, book_id)
                        .iter()
                        .map(|code| to_iso639_1(code))
                        .collect();
                    md.language = md.languages.first().cloned();
                    md.description = take(&mut comments, book_id).into_iter().next();
                    md.identifiers = identifiers.remove(&book_id).unwrap_or_default();
                    md.isbn = md.identifiers.get("isbn").cloned();
                    md.rating = ratings.get(&book_id).copied();
                    current = Some((book_id, md.clone()));
                    md
                }
            };
            out.push(CalibreFormat {
                book_id,
                format: row.format,
                rel_path,
                size: row.size,
                metadata,
                cover_path,
            });
        }
        Ok(out)
    }

    /// `(book, text)` rows grouped by book, in the query's order; NULL and blank texts dropped.
    fn text_links(
        &self,
        conn: &Connection,
        what: &'static str,
        sql: &str,
    ) -> Result<HashMap<i64, Vec<String>>, CalibreError> {
        let mut stmt = conn.prepare(sql).map_err(|e| self.error(what, e))?;
        let mut rows = stmt.query([]).map_err(|e| self.error(what, e))?;
        let mut by_book: HashMap<i64, Vec<String>> = HashMap::new();
        while let Some(row) = rows.next().map_err(|e| self.error(what, e))? {
            let book: i64 = row.get(0).map_err(|e| self.error(what, e))?;
            let text = text(row, 1).map_err(|e| self.error(what, e))?;
            if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
                by_book.entry(book).or_default().push(text);
            }
        }
        Ok(by_book)
    }

    /// Scheme (lowercased) → value, per book.
    fn identifiers(
        &self,
        conn: &Connection,
    ) -> Result<HashMap<i64, BTreeMap<String, String>>, CalibreError> {
        let what = "reading identifiers";
        let mut stmt = conn
            .prepare("SELECT book, type, val FROM identifiers ORDER BY id")
            .map_err(|e| self.error(what, e))?;
        let mut rows = stmt.query([]).map_err(|e| self.error(what, e))?;
        let mut by_book: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
        while let Some(row) = rows.next().map_err(|e| self.error(what, e))? {
            let book: i64 = row.get(0).map_err(|e| self.error(what, e))?;
            let scheme = text(row, 1).map_err(|e| self.error(what, e))?;
            let value = text(row, 2).map_err(|e| self.error(what, e))?;
            if let (Some(scheme), Some(value)) = (scheme, value) {
                by_book
                    .entry(book)
                    .or_default()
                    .insert(scheme.trim().to_lowercase(), value);
            }
        }
        Ok(by_book)
    }

    /// Stars as calibre shows them (its 0–10 value halved); 0 means unrated.
    fn ratings(&self, conn: &Connection) -> Result<HashMap<i64, f64>, CalibreError> {
        let what = "reading ratings";
        let mut stmt = conn
            .prepare(
                "SELECT l.book, r.rating FROM books_ratings_link l
                 JOIN ratings r ON r.id = l.rating ORDER BY l.id",
            )
            .map_err(|e| self.error(what, e))?;
        let mut rows = stmt.query([]).map_err(|e| self.error(what, e))?;
        let mut by_book = HashMap::new();
        while let Some(row) = rows.next().map_err(|e| self.error(what, e))? {
            let book: i64 = row.get(0).map_err(|e| self.error(what, e))?;
            let rating: Option<f64> = row.get(1).map_err(|e| self.error(what, e))?;
            if let Some(rating) = rating.filter(|r| *r > 0.0) {
                by_book.entry(book).or_insert(rating / 2.0);
            }
        }
        Ok(by_book)
    }
}

fn read_format_row(row: &Row) -> rusqlite::Result<FormatRow> {
    let size: Option<i64> = row.get(3)?;
    let has_cover = match row.get_ref(10)? {
        ValueRef::Integer(i) => i != 0,
        ValueRef::Real(f) => f != 0.0,
        ValueRef::Text(t) => !matches!(t, b"" | b"0"),
        ValueRef::Null | ValueRef::Blob(_) => false,
    };
    Ok(FormatRow {
        book_id: row.get(0)?,
        format: text(row, 1)?.unwrap_or_default().to_lowercase(),
        name: text(row, 2)?.unwrap_or_default(),
        size: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        title: text(row, 4)?.filter(|t| !t.trim().is_empty()),
        path: text(row, 5)?.unwrap_or_default(),
        author_sort: text(row, 6)?.filter(|t| !t.trim().is_empty()),
        series_index: row.get(7)?,
        pubdate: text(row, 8)?,
        uuid: text(row, 9)?.filter(|t| !t.is_empty()),
        has_cover,
    })
}

/// A text column that may hold NULL (→ None) or, in an odd database, a number.
fn text(row: &Row, idx: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Null => None,
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
    })
}

/// A book's entries, taken out of the map: each book is assembled once, as its formats come
/// together (`ORDER BY d.book`).
fn take(map: &mut HashMap<i64, Vec<String>>, book_id: i64) -> Vec<String> {
    map.remove(&book_id).unwrap_or_default()
}

/// `{books.path}/{name}.{format}`: relative and `/`-separated, each part one plain name for
/// this platform (no root, drive, `.`, `..`, empty part or embedded separator).
fn is_safe_rel_path(rel_path: &str) -> bool {
    rel_path.split('/').all(|part| {
        let mut components = Path::new(part).components();
        matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(name)), None) if name == part
        )
    })
}

/// True when `db`'s header says WAL mode and no `-wal` file is beside it: no writer is attached,
/// and a normal read-only open would still create `-wal`/`-shm` files in the library. calibre
/// itself uses a rollback journal; this guards databases a user switched to WAL.
fn is_idle_wal_database(db: &Path) -> bool {
    let mut header = [0u8; 20];
    let is_wal = File::open(db)
        .and_then(|mut f| f.read_exact(&mut header))
        .is_ok()
        && header.starts_with(b"SQLite format 3\0")
        && header[18] == 2
        && header[19] == 2;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    is_wal && !Path::new(&wal).exists()
}

/// calibre's timestamp (`1940-05-03 00:00:00+00:00`) → `1940-05-03`. calibre writes
/// `0101-01-01…` (any year ≤ 101) for "no date": None.
fn calibre_date(raw: &str) -> Option<String> {
    let date = raw.trim().get(..10)?;
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)) {
        return None;
    }
    let year: u32 = date[..4].parse().ok()?;
    (year > 101).then(|| date.to_string())
}

/// A `file:` URI for SQLite, every byte outside the unreserved set percent-encoded (so `?`, `#`,
/// `%` and spaces in the path are taken literally), opened with `mode=ro`: SQLite then never
/// writes, never takes a write lock and never creates a journal beside the database.
/// `immutable` also skips locking and the WAL index (only for an idle WAL database).
fn sqlite_ro_uri(db: &Path, immutable: bool) -> String {
    let abs = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
    let mut uri = String::from("file://");
    let bytes = abs.as_os_str().as_encoded_bytes();
    if cfg!(windows) && !bytes.starts_with(b"\\") && !bytes.starts_with(b"/") {
        uri.push('/'); // `C:\x` → `file:///C:/x`
    }
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(b as char)
            }
            b'\\' if cfg!(windows) => uri.push('/'),
            b':' if cfg!(windows) => uri.push(':'),
            _ => {
                let _ = write!(uri, "%{b:02X}");
            }
        }
    }
    uri.push_str("?mode=ro");
    if immutable {
        uri.push_str("&immutable=1");
    }
    uri
}

/// calibre's language code (ISO 639-3, e.g. `eng`) → ISO 639-1 (`en`) where one exists, else
/// the code as found (lowercased). Two-letter codes pass through.
pub fn to_iso639_1(code: &str) -> String {
    let code = code.trim().to_ascii_lowercase();
    match ISO_639_TO_1.binary_search_by(|(three, _)| three.cmp(&code.as_str())) {
        Ok(i) => ISO_639_TO_1[i].1.to_string(),
        Err(_) => code,
    }
}

/// ISO 639-3 codes (which are also the ISO 639-2/T ones) and the ISO 639-2/B variants (`fre`,
/// `ger`, …) that have an ISO 639-1 code, sorted for binary search. Generated from Debian's
/// iso-codes (`iso_639-3.json`, `iso_639-2.json`).
const ISO_639_TO_1: &[(&str, &str)] = &[
    ("aar", "aa"),
    ("abk", "ab"),
    ("afr", "af"),
    ("aka", "ak"),
    ("alb", "sq"),
    ("amh", "am"),
    ("ara", "ar"),
    ("arg", "an"),
    ("arm", "hy"),
    ("asm", "as"),
    ("ava", "av"),
    ("ave", "ae"),
    ("aym", "ay"),
    ("aze", "az"),
    ("bak", "ba"),
    ("bam", "bm"),
    ("baq", "eu"),
    ("bel", "be"),
    ("ben", "bn"),
    ("bih", "bh"),
    ("bis", "bi"),
    ("bod", "bo"),
    ("bos", "bs"),
    ("bre", "br"),
    ("bul", "bg"),
    ("bur", "my"),
    ("cat", "ca"),
    ("ces", "cs"),
    ("cha", "ch"),
    ("che", "ce"),
    ("chi", "zh"),
    ("chu", "cu"),
    ("chv", "cv"),
    ("cor", "kw"),
    ("cos", "co"),
    ("cre", "cr"),
    ("cym", "cy"),
    ("cze", "cs"),
    ("dan", "da"),
    ("deu", "de"),
    ("div", "dv"),
    ("dut", "nl"),
    ("dzo", "dz"),
    ("ell", "el"),
    ("eng", "en"),
    ("epo", "eo"),
    ("est", "et"),
    ("eus", "eu"),
    ("ewe", "ee"),
    ("fao", "fo"),
    ("fas", "fa"),
    ("fij", "fj"),
    ("fin", "fi"),
    ("fra", "fr"),
    ("fre", "fr"),
    ("fry", "fy"),
    ("ful", "ff"),
    ("geo", "ka"),
    ("ger", "de"),
    ("gla", "gd"),
    ("gle", "ga"),
    ("glg", "gl"),
    ("glv", "gv"),
    ("gre", "el"),
    ("grn", "gn"),
    ("guj", "gu"),
    ("hat", "ht"),
    ("hau", "ha"),
    ("hbs", "sh"),
    ("heb", "he"),
    ("her", "hz"),
    ("hin", "hi"),
    ("hmo", "ho"),
    ("hrv", "hr"),
    ("hun", "hu"),
    ("hye", "hy"),
    ("ibo", "ig"),
    ("ice", "is"),
    ("ido", "io"),
    ("iii", "ii"),
    ("iku", "iu"),
    ("ile", "ie"),
    ("ina", "ia"),
    ("ind", "id"),
    ("ipk", "ik"),
    ("isl", "is"),
    ("ita", "it"),
    ("jav", "jv"),
    ("jpn", "ja"),
    ("kal", "kl"),
    ("kan", "kn"),
    ("kas", "ks"),
    ("kat", "ka"),
    ("kau", "kr"),
    ("kaz", "kk"),
    ("khm", "km"),
    ("kik", "ki"),
    ("kin", "rw"),
    ("kir", "ky"),
    ("kom", "kv"),
    ("kon", "kg"),
    ("kor", "ko"),
    ("kua", "kj"),
    ("kur", "ku"),
    ("lao", "lo"),
    ("lat", "la"),
    ("lav", "lv"),
    ("lim", "li"),
    ("lin", "ln"),
    ("lit", "lt"),
    ("ltz", "lb"),
    ("lub", "lu"),
    ("lug", "lg"),
    ("mac", "mk"),
    ("mah", "mh"),
    ("mal", "ml"),
    ("mao", "mi"),
    ("mar", "mr"),
    ("may", "ms"),
    ("mkd", "mk"),
    ("mlg", "mg"),
    ("mlt", "mt"),
    ("mon", "mn"),
    ("mri", "mi"),
    ("msa", "ms"),
    ("mya", "my"),
    ("nau", "na"),
    ("nav", "nv"),
    ("nbl", "nr"),
    ("nde", "nd"),
    ("ndo", "ng"),
    ("nep", "ne"),
    ("nld", "nl"),
    ("nno", "nn"),
    ("nob", "nb"),
    ("nor", "no"),
    ("nya", "ny"),
    ("oci", "oc"),
    ("oji", "oj"),
    ("ori", "or"),
    ("orm", "om"),
    ("oss", "os"),
    ("pan", "pa"),
    ("per", "fa"),
    ("pli", "pi"),
    ("pol", "pl"),
    ("por", "pt"),
    ("pus", "ps"),
    ("que", "qu"),
    ("roh", "rm"),
    ("ron", "ro"),
    ("rum", "ro"),
    ("run", "rn"),
    ("rus", "ru"),
    ("sag", "sg"),
    ("san", "sa"),
    ("sin", "si"),
    ("slk", "sk"),
    ("slo", "sk"),
    ("slv", "sl"),
    ("sme", "se"),
    ("smo", "sm"),
    ("sna", "sn"),
    ("snd", "sd"),
    ("som", "so"),
    ("sot", "st"),
    ("spa", "es"),
    ("sqi", "sq"),
    ("srd", "sc"),
    ("srp", "sr"),
    ("ssw", "ss"),
    ("sun", "su"),
    ("swa", "sw"),
    ("swe", "sv"),
    ("tah", "ty"),
    ("tam", "ta"),
    ("tat", "tt"),
    ("tel", "te"),
    ("tgk", "tg"),
    ("tgl", "tl"),
    ("tha", "th"),
    ("tib", "bo"),
    ("tir", "ti"),
    ("ton", "to"),
    ("tsn", "tn"),
    ("tso", "ts"),
    ("tuk", "tk"),
    ("tur", "tr"),
    ("twi", "tw"),
    ("uig", "ug"),
    ("ukr", "uk"),
    ("urd", "ur"),
    ("uzb", "uz"),
    ("ven", "ve"),
    ("vie", "vi"),
    ("vol", "vo"),
    ("wel", "cy"),
    ("wln", "wa"),
    ("wol", "wo"),
    ("xho", "xh"),
    ("yid", "yi"),
    ("yor", "yo"),
    ("zha", "za"),
    ("zho", "zh"),
    ("zul", "zu"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Instant, SystemTime};

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/calibre-library");
    const CALIBREDB_JSON: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/calibre-library.calibredb.json"
    );
    /// Where the library copy lay when `calibredb list` wrote the reference JSON.
    const CALIBREDB_ROOT: &str = "/tmp/bookferry-ref/calibre-library/";

    /// A writable copy of the fixture in a temp dir, under a name that needs URI escaping.
    fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("my library #1 ?é%20");
        copy_dir(Path::new(FIXTURE), &root);
        (tmp, root)
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("create dir");
        for entry in fs::read_dir(from).expect("read fixture dir") {
            let entry = entry.expect("dir entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).expect("copy file");
                let mut perm = fs::metadata(&target).expect("stat").permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perm.set_readonly(false);
                fs::set_permissions(&target, perm).expect("chmod");
            }
        }
    }

    /// Every file under `root`: relative path → (bytes, mtime).
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).expect("read dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let mtime = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .expect("mtime");
                    let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                    out.insert(rel, (fs::read(&path).expect("read file"), mtime));
                }
            }
        }
        out
    }

    fn writer(root: &Path) -> Connection {
        Connection::open(root.join(METADATA_DB)).expect("open for writing")
    }

    #[test]
    fn reads_every_format_and_changes_nothing() {
        let (_tmp, root) = copy_fixture();
        assert!(is_calibre_library(&root));
        let before = snapshot(&root);

        let formats = read_library(&root).expect("read library");

        assert_eq!(formats.len(), 43, "formats");
        let books: std::collections::BTreeSet<i64> = formats.iter().map(|f| f.book_id).collect();
        assert_eq!(books.len(), 41, "books");
        let refs: std::collections::BTreeSet<String> =
            formats.iter().map(CalibreFormat::source_ref).collect();
        assert_eq!(refs.len(), 43, "source_ref is unique");
        for f in &formats {
            let abs = f.abs_path(&root);
            let meta = fs::metadata(&abs).unwrap_or_else(|e| panic!("{}: {e}", abs.display()));
            assert_eq!(meta.len(), f.size, "{}: size", f.rel_path);
            if let Some(cover) = f.abs_cover_path(&root) {
                assert!(cover.is_file(), "{}", cover.display());
            }
            assert_eq!(f.metadata.source, Some(format!("calibre:{}", f.book_id)));
            assert_eq!(f.metadata.cover, f.cover_path);
            assert!(f.metadata.has_title_and_author(), "{}", f.rel_path);
        }
        let mut kinds: Vec<&str> = formats.iter().map(|f| f.format.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds, ["azw3", "cbz", "epub", "fb2", "mobi", "pdf", "txt"]);

        let after = snapshot(&root);
        let new: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        assert!(new.is_empty(), "new files appeared: {new:?}");
        for (rel, (bytes, mtime)) in &before {
            let (bytes2, mtime2) = &after[rel];
            assert!(bytes == bytes2, "{} changed", rel.display());
            assert_eq!(mtime, mtime2, "{} mtime changed", rel.display());
        }
    }

    /// Compares every book with what `calibredb list --for-machine --fields all` printed for the
    /// same library (calibre 6.13), kept in tests/data so the test needs no calibre.
    #[test]
    fn matches_calibredb_reference() {
        let (_tmp, root) = copy_fixture();
        let formats = read_library(&root).expect("read library");
        let raw = fs::read_to_string(CALIBREDB_JSON).expect("reference json");
        let reference: Vec<serde_json::Value> = serde_json::from_str(&raw).expect("parse json");
        assert_eq!(reference.len(), 41);

        let mut mismatches: Vec<String> = Vec::new();
        let mut books_ok = 0;
        let mut formats_ok = 0;
        for want in &reference {
            let id = want["id"].as_i64().expect("id");
            let ours: Vec<&CalibreFormat> = formats.iter().filter(|f| f.book_id == id).collect();
            let Some(first) = ours.first() else {
                mismatches.push(format!("book {id}: not found"));
                continue;
            };
            let md = &first.metadata;
            let before = mismatches.len();
            let mut check = |field: &str, got: serde_json::Value, expected: serde_json::Value| {
                if got != expected {
                    mismatches.push(format!(
                        "book {id} {field}: ours {got} != calibredb {expected}"
                    ));
                }
            };
            let s = |v: &serde_json::Value| v.as_str().map(str::to_string);

            check("title", j(&md.title), j(&s(&want["title"])));
            let authors: Vec<String> = want["authors"]
                .as_str()
                .unwrap_or("")
                .split(" & ")
                .map(str::to_string)
                .collect();
            check("authors", j(&md.authors), j(&authors));
            check(
                "author_sort",
                j(&md.author_sort),
                j(&s(&want["author_sort"])),
            );
            check("series", j(&md.series), j(&s(&want["series"])));
            // calibre keeps a series_index (1.0) for every book; ours only with a series.
            let series_index = want["series"]
                .is_string()
                .then(|| want["series_index"].as_f64())
                .flatten();
            check("series_index", j(&md.series_index), j(&series_index));
            check("tags", j(&md.tags), want["tags"].clone());
            check(
                "identifiers",
                j(&md.identifiers),
                want["identifiers"].clone(),
            );
            let isbn = s(&want["isbn"]).filter(|i| !i.is_empty());
            check("isbn", j(&md.isbn), j(&isbn));
            check("publisher", j(&md.publisher), j(&s(&want["publisher"])));
            // calibredb prints `1940-05-03T00:00:00+00:00`, and `0101-01-01…` for no date.
            let pubdate = want["pubdate"]
                .as_str()
                .map(|p| p.get(..10).unwrap_or(p).to_string())
                .filter(|p| p.as_str() != "0101-01-01");
            check("pubdate", j(&md.pubdate), j(&pubdate));
            // calibredb prints calibre's ISO 639-3 codes; ours are ISO 639-1 (to_iso639_1 is
            // checked on its own in iso639_conversion).
            let languages: Vec<String> = want["languages"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str())
                        .map(to_iso639_1)
                        .collect()
                })
                .unwrap_or_default();
            check("languages", j(&md.languages), j(&languages));
            check("language", j(&md.language), j(&languages.first()));
            check("uuid", j(&md.uuid), j(&s(&want["uuid"])));
            // calibredb list prints calibre's 0–10 value; ours is stars (half of it).
            let rating = want["rating"]
                .as_f64()
                .filter(|r| *r > 0.0)
                .map(|r| r / 2.0);
            check("rating", j(&md.rating), j(&rating));
            check("description", j(&md.description), j(&s(&want["comments"])));
            let cover = s(&want["cover"]).map(|c| c.replace(CALIBREDB_ROOT, ""));
            check("cover", j(&md.cover), j(&cover));
            let mut want_formats: Vec<String> = want["formats"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str()).collect::<Vec<_>>())
                .unwrap_or_default()
                .iter()
                .map(|f| f.replace(CALIBREDB_ROOT, ""))
                .collect();
            want_formats.sort();
            let mut got_formats: Vec<String> = ours.iter().map(|f| f.rel_path.clone()).collect();
            got_formats.sort();
            check("formats", j(&got_formats), j(&want_formats));
            for f in &ours {
                if f.metadata != *md {
                    mismatches.push(format!("book {id}: formats carry different metadata"));
                }
            }
            if mismatches.len() == before {
                books_ok += 1;
                formats_ok += ours.len();
            }
        }
        eprintln!(
            "calibredb reference: {books_ok}/41 books, {formats_ok}/{} formats match",
            formats.len()
        );
        assert!(
            mismatches.is_empty(),
            "{} mismatches with calibredb:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
        assert_eq!((books_ok, formats_ok), (41, 43));
    }

    fn j<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).expect("serializable")
    }

    #[test]
    fn edge_cases_from_an_edited_copy() {
        let (_tmp, root) = copy_fixture();
        {
            // Plain writes to link tables only: `UPDATE books` would fire calibre's trigger,
            // which needs its `title_sort` SQL function.
            let w = writer(&root);
            w.execute_batch(
                "INSERT INTO authors (id, name, sort) VALUES (100, 'Гоголь| Николай', 'Гоголь');
                 INSERT INTO books_authors_link (id, book, author) VALUES (100, 2, 100);
                 INSERT INTO ratings (id, rating) VALUES (100, 7);
                 INSERT INTO books_ratings_link (book, rating) VALUES (2, 100);
                 INSERT INTO books_languages_link (book, lang_code, item_order) VALUES (2, 3, 1);
                 INSERT INTO books_languages_link (book, lang_code, item_order) VALUES (2, 1, 0);
                 INSERT INTO identifiers (book, type, val) VALUES (2, 'GoodReads', '12345');
                 INSERT INTO identifiers (book, type, val) VALUES (2, 'isbn', '9780000000002');
                 UPDATE comments SET text = '   ' WHERE book = 1;",
            )
            .expect("edit copy");
        }
        fs::remove_file(root.join(
            "Haruki Segura/Letters Glass Winter 32 (3)/Letters Glass Winter 32 - Haruki Segura.azw3",
        ))
        .expect("remove a format file");

        let formats = read_library(&root).expect("read library");
        assert_eq!(formats.len(), 43, "a missing file is still listed");
        let book2 = formats
            .iter()
            .find(|f| f.source_ref() == "2/mobi")
            .expect("2/mobi");
        let md = &book2.metadata;
        assert_eq!(md.authors, ["Haruki Segura", "Гоголь, Николай"]);
        assert_eq!(md.rating, Some(3.5));
        assert_eq!(md.languages, ["fr", "en"]);
        assert_eq!(md.language.as_deref(), Some("fr"));
        assert_eq!(
            md.identifiers.get("goodreads").map(String::as_str),
            Some("12345")
        );
        assert_eq!(md.isbn.as_deref(), Some("9780000000002"));
        assert_eq!(md.pubdate, None, "0101-01-01 is calibre's 'no date'");
        assert_eq!(md.series, None);
        assert_eq!(md.series_index, None);

        let azw3 = formats
            .iter()
            .find(|f| f.source_ref() == "3/azw3")
            .expect("3/azw3");
        assert!(!azw3.abs_path(&root).exists());
        assert_eq!(
            azw3.rel_path,
            "Haruki Segura/Letters Glass Winter 32 (3)/Letters Glass Winter 32 - Haruki Segura.azw3"
        );
        assert_eq!(azw3.cover_path, None, "book 3 has no cover");
        assert_eq!(azw3.metadata.cover, None);

        let book1 = formats.iter().find(|f| f.book_id == 1).expect("book 1");
        assert_eq!(book1.metadata.description, None, "blank comments");
        assert_eq!(book1.metadata.series.as_deref(), Some("Garden Cycle"));
        assert_eq!(book1.metadata.series_index, Some(7.0));
        assert_eq!(book1.metadata.language.as_deref(), Some("fr"));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let (_tmp, root) = copy_fixture();
        writer(&root)
            .execute("UPDATE data SET name = '../../escape' WHERE book = 5", [])
            .expect("edit copy");
        match read_library(&root) {
            Err(CalibreError::UnsafePath { book_id: 5, .. }) => {}
            other => panic!("expected UnsafePath for book 5, got {other:?}"),
        }
    }

    #[test]
    fn a_writer_holding_the_lock_gives_locked_in_bounded_time() {
        let (_tmp, root) = copy_fixture();
        let w = writer(&root);
        w.execute_batch("BEGIN EXCLUSIVE")
            .expect("take the write lock");
        let start = Instant::now();
        let result = read_library_with_timeout(&root, Duration::from_millis(300));
        let elapsed = start.elapsed();
        match &result {
            Err(e @ CalibreError::Locked { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("metadata.db") && msg.contains("locked"),
                    "{msg}"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(elapsed >= Duration::from_millis(250), "waited {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "waited {elapsed:?}");

        w.execute_batch("ROLLBACK").expect("release");
        assert_eq!(read_library(&root).expect("read after release").len(), 43);
    }

    /// calibre in the middle of a write transaction (RESERVED lock, change not yet committed):
    /// readers are not blocked, and see the committed state.
    #[test]
    fn a_pending_calibre_write_does_not_block_reading() {
        let (_tmp, root) = copy_fixture();
        let w = writer(&root);
        w.execute_batch("BEGIN IMMEDIATE; DELETE FROM data WHERE book = 1;")
            .expect("start a write");
        let formats = read_library_with_timeout(&root, Duration::from_millis(300))
            .expect("read during a write");
        assert_eq!(formats.len(), 43, "uncommitted delete not seen");
        w.execute_batch("ROLLBACK").expect("rollback");
    }

    #[test]
    fn corrupt_or_foreign_databases_are_corrupt() {
        let tmp = tempfile::tempdir().expect("temp dir");
        // Random bytes (a fixed LCG: no rand dependency).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let bytes: Vec<u8> = (0..16384)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        fs::write(tmp.path().join(METADATA_DB), &bytes).expect("write garbage");
        assert!(is_calibre_library(tmp.path()));
        match read_library_with_timeout(tmp.path(), Duration::from_millis(100)) {
            Err(e @ CalibreError::Corrupt { .. }) => {
                assert!(e.to_string().contains("metadata.db"), "{e}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }

        // A real SQLite file that is not calibre's.
        let other = tempfile::tempdir().expect("temp dir");
        Connection::open(other.path().join(METADATA_DB))
            .and_then(|c| c.execute_batch("CREATE TABLE books (id INTEGER PRIMARY KEY)"))
            .expect("make a foreign db");
        match read_library(other.path()) {
            Err(CalibreError::Corrupt { cause, .. }) => {
                assert!(cause.contains("data"), "{cause}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }

        // An empty file is an empty SQLite database: no calibre tables either.
        let empty = tempfile::tempdir().expect("temp dir");
        fs::write(empty.path().join(METADATA_DB), b"").expect("write empty");
        assert!(matches!(
            read_library(empty.path()),
            Err(CalibreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_folder_without_metadata_db_is_not_a_library() {
        let tmp = tempfile::tempdir().expect("temp dir");
        assert!(!is_calibre_library(tmp.path()));
        assert!(matches!(
            read_library(tmp.path()),
            Err(CalibreError::NotALibrary { .. })
        ));
    }

    #[test]
    fn iso639_conversion() {
        for (code, want) in [
            ("eng", "en"),
            ("fra", "fr"),
            ("fre", "fr"),
            ("deu", "de"),
            ("ger", "de"),
            ("spa", "es"),
            ("pol", "pl"),
            ("jpn", "ja"),
            ("zho", "zh"),
            ("ukr", "uk"),
            ("rus", "ru"),
            ("ENG", "en"),
            ("en", "en"),
            ("haw", "haw"),
            ("und", "und"),
        ] {
            assert_eq!(to_iso639_1(code), want, "{code}");
        }
        assert!(
            ISO_639_TO_1.windows(2).all(|w| w[0].0 < w[1].0),
            "table sorted"
        );
    }

    #[test]
    fn calibre_dates() {
        assert_eq!(
            calibre_date("1940-05-03 00:00:00+00:00").as_deref(),
            Some("1940-05-03")
        );
        assert_eq!(
            calibre_date("2001-02-03T12:00:00+00:00").as_deref(),
            Some("2001-02-03")
        );
        assert_eq!(calibre_date("0101-01-01 00:00:00+00:00"), None);
        assert_eq!(calibre_date("0100-12-31 23:00:00+00:00"), None);
        assert_eq!(calibre_date("garbage"), None);
        assert_eq!(calibre_date(""), None);
    }

    #[test]
    fn uri_escapes_the_path() {
        let uri = sqlite_ro_uri(Path::new("/a b/#1 ?é%/metadata.db"), false);
        assert_eq!(uri, "file:///a%20b/%231%20%3F%C3%A9%25/metadata.db?mode=ro");
        assert!(sqlite_ro_uri(Path::new("/l/metadata.db"), true).ends_with("?mode=ro&immutable=1"));
    }

    #[test]
    fn safe_rel_paths() {
        assert!(is_safe_rel_path(
            "Émile Segura/Night (15)/Night - Émile Segura.epub"
        ));
        for bad in [
            "/etc/passwd",
            "a/../b.epub",
            "a/./b.epub",
            "a//b.epub",
            "../b.epub",
            "",
        ] {
            assert!(!is_safe_rel_path(bad), "{bad:?}");
        }
    }

    /// A library whose database was switched to WAL: reading must not create `-wal`/`-shm`.
    #[test]
    fn an_idle_wal_database_is_read_without_new_files() {
        let (_tmp, root) = copy_fixture();
        {
            let w = writer(&root);
            let mode: String = w
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .expect("switch to WAL");
            assert_eq!(mode, "wal");
        } // the last connection closing removes -wal and -shm
        let before = snapshot(&root);
        assert!(is_idle_wal_database(&root.join(METADATA_DB)));
        assert_eq!(read_library(&root).expect("read WAL library").len(), 43);
        let after = snapshot(&root);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "no new files"
        );
    }
}
