//! Finding a book the library already holds, by calibre's rule (`Cache.find_identical_books`):
//! every author of the new book is an author of the old one (case-insensitively), the fuzzy
//! titles are equal, and the languages agree when both are known. A shared calibre uuid or
//! identifier (ISBN, …) also counts. Loaded once, updated as books are planned.
//!
//! The index holds 64-bit keys, not the values they stand for: each book is filed under its
//! uuid, each of its identifiers, and its fuzzy title with each of its authors, 16 bytes a key
//! (a library of a million books in ~50 MB, where maps of the strings took ~200). A key only
//! says where to look: every book found under one is checked against its stored values
//! ([`Recognized`], which the caller reads) before it counts, so two values that share a key
//! never make a false match.

use super::id_ranges::IdRanges;
use super::keys::{hashed, Keys};
use crate::calibre::text::fuzzy_title;
use rusqlite::Connection;

#[derive(Debug, Default)]
pub struct ExistingIndex {
    keys: Keys,
    /// Every book id the library has or a plan took.
    books: IdRanges,
}

/// What a book is recognized by, in the forms stored in `metadata.db`.
pub struct Key<'a> {
    pub title: &'a str,
    /// Author names as the user sees them (`,` not `|`).
    pub authors: &'a [String],
    /// calibre language codes.
    pub languages: &'a [String],
    /// (type, value) after calibre's cleaning.
    pub identifiers: &'a [(String, String)],
    pub uuid: Option<&'a str>,
}

/// A book's stored values that the rule compares, as the caller reads them for a book the index
/// points at (from `metadata.db`, or from the plan of a book not recorded yet).
#[derive(Debug, Default)]
pub struct Recognized {
    pub uuid: String,
    pub title: String,
    /// As stored (`|` or `,`), any case.
    pub authors: Vec<String>,
    pub languages: Vec<String>,
    pub identifiers: Vec<(String, String)>,
}

/// An author name as the rule compares it.
fn author_form(name: &str) -> String {
    name.replace('|', ",").trim().to_lowercase()
}

fn uuid_key(uuid: &str) -> u64 {
    hashed(&["uuid", &uuid.to_lowercase()])
}

fn identifier_key(typ: &str, val: &str) -> u64 {
    hashed(&["id", &typ.to_lowercase(), &val.to_lowercase()])
}

/// The key of a fuzzy title (already fuzzy) with one author (already in [`author_form`]).
fn title_key(fuzzy: &str, author: &str) -> u64 {
    hashed(&["title", fuzzy, author])
}

impl ExistingIndex {
    /// Read what the index needs from the library (one query per kind of key).
    pub fn load(conn: &Connection) -> rusqlite::Result<ExistingIndex> {
        let mut ix = ExistingIndex::default();
        let mut stmt = conn.prepare("SELECT id, uuid FROM books")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        for row in rows {
            let (book, uuid) = row?;
            ix.books.insert(book);
            if let Some(u) = uuid {
                ix.keys.insert(uuid_key(&u), book);
            }
        }
        let mut stmt = conn.prepare(
            "SELECT l.book, b.title, a.name FROM books_authors_link l
             JOIN books b ON b.id = l.book JOIN authors a ON a.id = l.author
             ORDER BY l.book",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut fuzzy: Option<(i64, String)> = None;
        for row in rows {
            let (book, title, author) = row?;
            if fuzzy.as_ref().is_none_or(|(b, _)| *b != book) {
                fuzzy = Some((book, fuzzy_title(title.as_deref().unwrap_or(""))));
            }
            let title = fuzzy.as_ref().map(|(_, t)| t.as_str()).unwrap_or("");
            ix.keys
                .insert(title_key(title, &author_form(&author)), book);
        }
        let mut stmt = conn.prepare("SELECT book, type, val FROM identifiers")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (book, typ, val) = row?;
            ix.keys.insert(identifier_key(&typ, &val), book);
        }
        Ok(ix)
    }

    /// The lowest id of a book that is the same as `k`, if any. `recognized` reads a book's
    /// stored values (`None`: no such book any more).
    pub fn find<E>(
        &self,
        k: &Key<'_>,
        mut recognized: impl FnMut(i64) -> Result<Option<Recognized>, E>,
    ) -> Result<Option<i64>, E> {
        if let Some(u) = k.uuid {
            if let Some(id) = self.find_uuid(u, &mut recognized)? {
                return Ok(Some(id));
            }
        }
        let mut by_ident: Option<i64> = None;
        for (t, v) in k.identifiers {
            let found = if t.eq_ignore_ascii_case("uuid") {
                self.find_uuid(v, &mut recognized)?
            } else {
                self.first_of(identifier_key(t, v), &mut recognized, |r| {
                    r.identifiers.iter().any(|(rt, rv)| {
                        rt.eq_ignore_ascii_case(t) && rv.to_lowercase() == v.to_lowercase()
                    })
                })?
            };
            if let Some(id) = found {
                by_ident = Some(by_ident.map_or(id, |b| b.min(id)));
            }
        }
        if by_ident.is_some() {
            return Ok(by_ident);
        }
        if k.authors.is_empty() {
            return Ok(None);
        }
        let title = fuzzy_title(k.title);
        let authors: Vec<String> = k.authors.iter().map(|a| author_form(a)).collect();
        self.first_of(title_key(&title, &authors[0]), &mut recognized, |r| {
            let theirs: Vec<String> = r.authors.iter().map(|a| author_form(a)).collect();
            fuzzy_title(&r.title) == title
                && authors.iter().all(|a| theirs.contains(a))
                && (k.languages.is_empty() || r.languages.is_empty() || r.languages == k.languages)
        })
    }

    fn find_uuid<E>(
        &self,
        uuid: &str,
        recognized: &mut impl FnMut(i64) -> Result<Option<Recognized>, E>,
    ) -> Result<Option<i64>, E> {
        // A book filed under this uuid that is gone from the library is still the book: the
        // file that goes to it fails, naming it, rather than make it again unseen.
        for id in self.keys.ids(uuid_key(uuid)) {
            match recognized(id)? {
                Some(r) if r.uuid.eq_ignore_ascii_case(uuid) => return Ok(Some(id)),
                Some(_) => {}
                None => return Ok(Some(id)),
            }
        }
        Ok(None)
    }

    /// The lowest id filed under `key` whose stored values pass `is_it`.
    fn first_of<E>(
        &self,
        key: u64,
        recognized: &mut impl FnMut(i64) -> Result<Option<Recognized>, E>,
        is_it: impl Fn(&Recognized) -> bool,
    ) -> Result<Option<i64>, E> {
        for id in self.keys.ids(key) {
            if recognized(id)?.is_some_and(|r| is_it(&r)) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// True when the library has a book of this id, or one is planned with it.
    pub fn has_book(&self, book: i64) -> bool {
        self.books.contains(book)
    }

    /// Record a book (planned or committed) so later look-ups see it.
    pub fn add(&mut self, book: i64, k: &Key<'_>) {
        for key in keys_of(k) {
            self.keys.insert(key, book);
        }
        self.books.insert(book);
    }

    /// Forget a planned book that was abandoned (`k`: what it was added with).
    pub fn remove(&mut self, book: i64, k: &Key<'_>) {
        for key in keys_of(k) {
            self.keys.remove(key, book);
        }
        self.books.remove(book);
    }
}

/// Every key a book with these values is filed under.
fn keys_of(k: &Key<'_>) -> Vec<u64> {
    let title = fuzzy_title(k.title);
    let mut keys: Vec<u64> = k
        .authors
        .iter()
        .map(|a| title_key(&title, &author_form(a)))
        .collect();
    keys.extend(k.identifiers.iter().map(|(t, v)| identifier_key(t, v)));
    keys.extend(k.uuid.map(uuid_key));
    keys
}
