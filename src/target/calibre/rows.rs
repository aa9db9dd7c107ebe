//! The rows of a commit: each book's rows as calibre's `create_book_entry` + `set_metadata` +
//! `add_format` write them (reusing the library's authors, series, tags, publishers and
//! languages by name), and the `data` rows of formats added to recorded books, all in one
//! transaction ([`RowsWriter`]).

use super::extras::FromSource;
use super::fields::{AddedFormat, PlannedBook};
use super::items::{ItemIndex, Items};
use super::CalibreError;
use crate::calibre::opf::OpfBook;
use rusqlite::{Connection, Transaction};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The library's database connection and the ids of its item tables (authors, series, …),
/// behind their own lock: a commit writes its rows holding only this, while the books side
/// (`CalibreLibrary`'s plans) goes on being used.
pub(super) struct LibraryDb {
    pub(super) conn: Connection,
    pub(super) items: Items,
    /// What a calibre source's books carry beyond their rows (`extras`).
    pub(super) extras: FromSource,
}

/// Writes a commit's rows (step 3 of a commit) without needing the [`CalibreLibrary`] itself:
/// see [`CalibreLibrary::rows_writer`].
pub struct RowsWriter {
    pub(super) db: Arc<Mutex<LibraryDb>>,
    pub(super) db_path: PathBuf,
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
                db.extras.write_book(&tx, b.book_id, &b.fields.carried)?;
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

/// The id of the item `name` in `table` (matched case-insensitively), inserting it if new.
fn item_id(
    tx: &Transaction<'_>,
    items: &mut ItemIndex,
    table: &str,
    column: &str,
    name: &str,
    stored: &str,
) -> rusqlite::Result<i64> {
    let key = name.to_lowercase();
    if let Some((id, extra)) = items.find(tx, &key)? {
        items.remember(&key, id, extra, false);
        return Ok(id);
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
    items.remember(&key, id, extra, true);
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
                          last_modified = ?6, sort = COALESCE(?8, sort) WHERE id = ?7",
    )?
    .execute(rusqlite::params![
        f.timestamp,
        f.pubdate,
        b.rel_dir,
        b.has_cover,
        f.uuid,
        f.last_modified,
        id,
        f.title_sort
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
