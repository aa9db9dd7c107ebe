//! Finding a book the library already holds, by calibre's rule (`Cache.find_identical_books`):
//! every author of the new book is an author of the old one (case-insensitively), the fuzzy
//! titles are equal, and the languages agree when both are known. A shared calibre uuid or
//! identifier (ISBN, …) also counts. Kept in memory, loaded once, updated as books are planned.

use crate::calibre::text::fuzzy_title;
use rusqlite::Connection;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct ExistingIndex {
    books_by_author: HashMap<String, BTreeSet<i64>>,
    titles: HashMap<i64, (String, Vec<String>)>,
    identifiers: HashMap<(String, String), i64>,
    uuids: HashMap<String, i64>,
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

impl ExistingIndex {
    /// Read what the index needs from the library (one query per table).
    pub fn load(conn: &Connection) -> rusqlite::Result<ExistingIndex> {
        let mut ix = ExistingIndex::default();
        let mut stmt = conn.prepare(
            "SELECT l.book, a.name FROM books_authors_link l JOIN authors a ON a.id = l.author",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (book, name) = row?;
            ix.books_by_author
                .entry(name.replace('|', ",").to_lowercase())
                .or_default()
                .insert(book);
        }
        let mut langs: HashMap<i64, Vec<String>> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT l.book, g.lang_code FROM books_languages_link l
             JOIN languages g ON g.id = l.lang_code ORDER BY l.book, l.item_order, l.id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (book, code) = row?;
            langs.entry(book).or_default().push(code);
        }
        let mut stmt = conn.prepare("SELECT id, title, uuid FROM books")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (book, title, uuid) = row?;
            let fuzzy = fuzzy_title(title.as_deref().unwrap_or(""));
            ix.titles
                .insert(book, (fuzzy, langs.remove(&book).unwrap_or_default()));
            if let Some(u) = uuid {
                ix.uuids.insert(u.to_lowercase(), book);
            }
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
            ix.identifiers
                .entry((typ.to_lowercase(), val.to_lowercase()))
                .or_insert(book);
        }
        Ok(ix)
    }

    /// The lowest id of a book that is the same as `k`, if any.
    pub fn find(&self, k: &Key<'_>) -> Option<i64> {
        if let Some(id) = k.uuid.and_then(|u| self.uuids.get(&u.to_lowercase())) {
            return Some(*id);
        }
        let by_ident = k
            .identifiers
            .iter()
            .filter_map(|(t, v)| {
                let (t, v) = (t.to_lowercase(), v.to_lowercase());
                if t == "uuid" {
                    return self.uuids.get(&v).copied();
                }
                self.identifiers.get(&(t, v)).copied()
            })
            .min();
        if by_ident.is_some() {
            return by_ident;
        }
        let mut found: Option<BTreeSet<i64>> = None;
        for a in k.authors {
            let books = self.books_by_author.get(&a.trim().to_lowercase())?;
            found = Some(match found {
                None => books.clone(),
                Some(f) => f.intersection(books).copied().collect(),
            });
            if found.as_ref().is_some_and(BTreeSet::is_empty) {
                return None;
            }
        }
        let title = fuzzy_title(k.title);
        found?.into_iter().find(|book| {
            self.titles.get(book).is_some_and(|(t, langs)| {
                *t == title && (k.languages.is_empty() || langs.is_empty() || langs == k.languages)
            })
        })
    }

    /// True when the library has a book of this id, or one is planned with it.
    pub fn has_book(&self, book: i64) -> bool {
        self.titles.contains_key(&book)
    }

    /// Record a book (planned or committed) so later look-ups see it.
    pub fn add(&mut self, book: i64, k: &Key<'_>) {
        for a in k.authors {
            self.books_by_author
                .entry(a.trim().to_lowercase())
                .or_default()
                .insert(book);
        }
        self.titles
            .insert(book, (fuzzy_title(k.title), k.languages.to_vec()));
        for (t, v) in k.identifiers {
            self.identifiers
                .entry((t.to_lowercase(), v.to_lowercase()))
                .or_insert(book);
        }
        if let Some(u) = k.uuid {
            self.uuids.insert(u.to_lowercase(), book);
        }
    }

    /// Forget a planned book that was abandoned.
    pub fn remove(&mut self, book: i64) {
        for books in self.books_by_author.values_mut() {
            books.remove(&book);
        }
        self.titles.remove(&book);
        self.identifiers.retain(|_, b| *b != book);
        self.uuids.retain(|_, b| *b != book);
    }
}
