//! The queries that read one chunk of a library's books (a range of book ids) into
//! [`CalibreFormat`]s: one over `data` joined to `books`, and one per link table, whose rows are
//! grouped by book ([`Links`]) and taken as each book's formats come by. Every query is limited
//! to the chunk's ids through the `book` column's index (calibre indexes it in every table read
//! here), so a chunk costs its own rows, not the library's.

use super::{to_iso639_1, CalibreError, CalibreFormat};
use crate::calibre::custom_columns;
use crate::calibre::dates;
use crate::calibre::paths::{cover_rel_path, format_rel_path, is_safe_rel_path};
use crate::calibre::read::ReadOnlyDb;
use crate::metadata::{CustomValue, Metadata};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

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
    sort: Option<String>,
    timestamp: Option<String>,
    last_modified: Option<String>,
}

/// The id of the last book of the chunk of `books` books whose ids are `first` or more; `None`
/// when there is no such book.
pub(super) fn last_id_of_chunk(
    db: &ReadOnlyDb,
    conn: &Connection,
    first: i64,
    books: usize,
) -> Result<Option<i64>, CalibreError> {
    let what = "reading book ids";
    let limit = i64::try_from(books).unwrap_or(i64::MAX);
    conn.query_row(
        "SELECT MAX(id) FROM (SELECT id FROM books WHERE id >= ?1 ORDER BY id LIMIT ?2)",
        (first, limit),
        |r| r.get(0),
    )
    .map_err(|e| db.error(what, e))
}

/// Every format of the books whose ids are in `ids`, by book id then calibre's order of
/// formats.
pub(super) fn read_formats(
    db: &ReadOnlyDb,
    conn: &Connection,
    ids: RangeInclusive<i64>,
) -> Result<Vec<CalibreFormat>, CalibreError> {
    let ids = (*ids.start(), *ids.end());
    let mut links = Links::read(db, conn, ids)?;
    let mut custom = custom_column_values(db, conn, ids)?;
    let what = "reading books and formats";
    let mut stmt = conn
        .prepare(
            "SELECT d.book, d.format, d.name, d.uncompressed_size,
                    b.title, b.path, b.author_sort, b.series_index, b.pubdate, b.uuid,
                    b.has_cover, b.sort, b.timestamp, b.last_modified
             FROM data d JOIN books b ON b.id = d.book
             WHERE d.book BETWEEN ?1 AND ?2
             ORDER BY d.book, d.id",
        )
        .map_err(|e| db.error(what, e))?;
    let mut rows = stmt.query(ids).map_err(|e| db.error(what, e))?;
    let mut out = Vec::new();
    // Metadata is built once per book (its rows are adjacent) and cloned for its other
    // formats.
    let mut current: Option<(i64, Metadata)> = None;
    while let Some(row) = rows.next().map_err(|e| db.error(what, e))? {
        let row = read_format_row(row).map_err(|e| db.error(what, e))?;
        let book_id = row.book_id;
        let rel_path = format_rel_path(&row.path, &row.name, &row.format);
        if !is_safe_rel_path(&rel_path) || row.name.is_empty() || row.format.is_empty() {
            return Err(CalibreError::UnsafePath {
                path: db.path().to_path_buf(),
                book_id,
                rel_path,
            });
        }
        let cover_path = row.has_cover.then(|| cover_rel_path(&row.path));
        let metadata = match &current {
            Some((id, md)) if *id == book_id => md.clone(),
            _ => {
                let mut md = links.metadata_of(&row, cover_path.clone());
                md.custom_columns = custom.remove(&book_id).unwrap_or_default();
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

/// The custom column values of the books `ids`, by book (`crate::calibre::custom_columns`).
fn custom_column_values(
    db: &ReadOnlyDb,
    conn: &Connection,
    ids: (i64, i64),
) -> Result<HashMap<i64, BTreeMap<String, CustomValue>>, CalibreError> {
    let what = "reading custom columns";
    let defs = custom_columns::definitions(conn).map_err(|e| db.error(what, e))?;
    custom_columns::read_values(conn, &defs, ids).map_err(|e| db.error(what, e))
}

/// The link tables' rows of one chunk of books, by book.
struct Links {
    authors: HashMap<i64, Vec<String>>,
    series: HashMap<i64, Vec<String>>,
    tags: HashMap<i64, Vec<String>>,
    publishers: HashMap<i64, Vec<String>>,
    languages: HashMap<i64, Vec<String>>,
    comments: HashMap<i64, Vec<String>>,
    identifiers: HashMap<i64, BTreeMap<String, String>>,
    ratings: HashMap<i64, f64>,
}

impl Links {
    /// The rows of the books whose ids are `ids.0` to `ids.1`, each book's in the order of
    /// their ids (languages: in calibre's `item_order`). Ordered by book first, which the
    /// `book` index gives as it is read.
    fn read(db: &ReadOnlyDb, conn: &Connection, ids: (i64, i64)) -> Result<Links, CalibreError> {
        Ok(Links {
            authors: text_links(
                db,
                conn,
                ids,
                "reading authors",
                "SELECT l.book, a.name FROM books_authors_link l JOIN authors a ON a.id = l.author
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id",
            )?,
            series: text_links(
                db,
                conn,
                ids,
                "reading series",
                "SELECT l.book, s.name FROM books_series_link l JOIN series s ON s.id = l.series
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id",
            )?,
            tags: text_links(
                db,
                conn,
                ids,
                "reading tags",
                "SELECT l.book, t.name FROM books_tags_link l JOIN tags t ON t.id = l.tag
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id",
            )?,
            publishers: text_links(
                db,
                conn,
                ids,
                "reading publishers",
                "SELECT l.book, p.name FROM books_publishers_link l
                 JOIN publishers p ON p.id = l.publisher
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id",
            )?,
            languages: text_links(
                db,
                conn,
                ids,
                "reading languages",
                "SELECT l.book, g.lang_code FROM books_languages_link l
                 JOIN languages g ON g.id = l.lang_code
                 WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.item_order, l.id",
            )?,
            comments: text_links(
                db,
                conn,
                ids,
                "reading comments",
                "SELECT book, text FROM comments WHERE book BETWEEN ?1 AND ?2 ORDER BY book, id",
            )?,
            identifiers: identifiers(db, conn, ids)?,
            ratings: ratings(db, conn, ids)?,
        })
    }

    /// The metadata of the book of `row`, its link rows taken out (each book is assembled
    /// once, as its formats come together: `ORDER BY d.book`).
    fn metadata_of(&mut self, row: &FormatRow, cover_path: Option<String>) -> Metadata {
        let book_id = row.book_id;
        let mut md = Metadata {
            title: row.title.clone(),
            author_sort: row.author_sort.clone(),
            uuid: row.uuid.clone(),
            pubdate: row.pubdate.as_deref().and_then(dates::pubdate_of),
            title_sort: row.sort.clone(),
            timestamp: row.timestamp.as_deref().and_then(dates::rfc3339_of),
            last_modified: row.last_modified.as_deref().and_then(dates::rfc3339_of),
            cover: cover_path,
            source: Some(format!("calibre:{book_id}")),
            ..Metadata::default()
        };
        md.authors = take(&mut self.authors, book_id)
            .into_iter()
            .map(|a| a.replace('|', ","))
            .collect();
        md.series = take(&mut self.series, book_id).into_iter().next();
        if md.series.is_some() {
            md.series_index = row.series_index;
        }
        md.tags = take(&mut self.tags, book_id);
        md.publisher = take(&mut self.publishers, book_id).into_iter().next();
        md.languages = take(&mut self.languages, book_id)
            .iter()
            .map(|code| to_iso639_1(code))
            .collect();
        md.language = md.languages.first().cloned();
        md.description = take(&mut self.comments, book_id).into_iter().next();
        md.identifiers = self.identifiers.remove(&book_id).unwrap_or_default();
        md.isbn = md.identifiers.get("isbn").cloned();
        md.rating = self.ratings.get(&book_id).copied();
        md
    }
}

/// `(book, text)` rows of the books `ids` (`?1`, `?2` in `sql`) grouped by book, in the query's
/// order; NULL and blank texts dropped.
fn text_links(
    db: &ReadOnlyDb,
    conn: &Connection,
    ids: (i64, i64),
    what: &'static str,
    sql: &str,
) -> Result<HashMap<i64, Vec<String>>, CalibreError> {
    let mut stmt = conn.prepare(sql).map_err(|e| db.error(what, e))?;
    let mut rows = stmt.query(ids).map_err(|e| db.error(what, e))?;
    let mut by_book: HashMap<i64, Vec<String>> = HashMap::new();
    while let Some(row) = rows.next().map_err(|e| db.error(what, e))? {
        let book: i64 = row.get(0).map_err(|e| db.error(what, e))?;
        let text = text(row, 1).map_err(|e| db.error(what, e))?;
        if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
            by_book.entry(book).or_default().push(text);
        }
    }
    Ok(by_book)
}

/// Scheme (lowercased) → value, per book of `ids`.
fn identifiers(
    db: &ReadOnlyDb,
    conn: &Connection,
    ids: (i64, i64),
) -> Result<HashMap<i64, BTreeMap<String, String>>, CalibreError> {
    let what = "reading identifiers";
    let mut stmt = conn
        .prepare(
            "SELECT book, type, val FROM identifiers WHERE book BETWEEN ?1 AND ?2
             ORDER BY book, id",
        )
        .map_err(|e| db.error(what, e))?;
    let mut rows = stmt.query(ids).map_err(|e| db.error(what, e))?;
    let mut by_book: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    while let Some(row) = rows.next().map_err(|e| db.error(what, e))? {
        let book: i64 = row.get(0).map_err(|e| db.error(what, e))?;
        let scheme = text(row, 1).map_err(|e| db.error(what, e))?;
        let value = text(row, 2).map_err(|e| db.error(what, e))?;
        if let (Some(scheme), Some(value)) = (scheme, value) {
            by_book
                .entry(book)
                .or_default()
                .insert(scheme.trim().to_lowercase(), value);
        }
    }
    Ok(by_book)
}

/// Stars as calibre shows them (its 0–10 value halved), per book of `ids`; 0 means unrated.
fn ratings(
    db: &ReadOnlyDb,
    conn: &Connection,
    ids: (i64, i64),
) -> Result<HashMap<i64, f64>, CalibreError> {
    let what = "reading ratings";
    let mut stmt = conn
        .prepare(
            "SELECT l.book, r.rating FROM books_ratings_link l
             JOIN ratings r ON r.id = l.rating
             WHERE l.book BETWEEN ?1 AND ?2 ORDER BY l.book, l.id",
        )
        .map_err(|e| db.error(what, e))?;
    let mut rows = stmt.query(ids).map_err(|e| db.error(what, e))?;
    let mut by_book = HashMap::new();
    while let Some(row) = rows.next().map_err(|e| db.error(what, e))? {
        let book: i64 = row.get(0).map_err(|e| db.error(what, e))?;
        let rating: Option<f64> = row.get(1).map_err(|e| db.error(what, e))?;
        if let Some(rating) = rating.filter(|r| *r > 0.0) {
            by_book.entry(book).or_insert(rating / 2.0);
        }
    }
    Ok(by_book)
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
        sort: text(row, 11)?.filter(|t| !t.trim().is_empty()),
        timestamp: text(row, 12)?,
        last_modified: text(row, 13)?,
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

/// A book's entries, taken out of the map.
fn take(map: &mut HashMap<i64, Vec<String>>, book_id: i64) -> Vec<String> {
    map.remove(&book_id).unwrap_or_default()
}
