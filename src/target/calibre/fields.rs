//! A book's values as calibre stores them (calibre's `db/write.py` adapters: stripped,
//! de-duplicated, its language codes, a uuid), worked out from bookferry's [`Metadata`]; and
//! the books the writer hands out: planned (an id and a folder, no row yet), committed, and
//! formats added to committed books.

use super::existing::Key;
use super::extras::Carried;
use crate::calibre::dates;
use crate::calibre::opf::OpfBook;
use crate::calibre::text::py_strip as strip;
use crate::calibre::text::title_sort;
use crate::calibre::{looks_like_uuid, uuid4};
use crate::metadata::lang;
use crate::metadata::Metadata;
use std::collections::HashSet;

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
    pub(super) fields: Fields,
}

/// A book's values after calibre's own cleaning (`db/write.py` adapters): the one mapping
/// from [`Metadata`] to calibre's fields, for this target and the calibre-server target.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub(crate) title: String,
    pub(crate) authors: Vec<String>,
    pub(crate) author_sort: Option<String>,
    pub(crate) series: Option<String>,
    pub(crate) series_index: Option<f64>,
    pub(crate) publisher: Option<String>,
    pub(crate) pubdate: String,
    pub(crate) languages: Vec<String>,
    pub(crate) identifiers: Vec<(String, String)>,
    pub(crate) tags: Vec<String>,
    pub(crate) comments: Option<String>,
    pub(crate) rating: Option<i64>,
    pub(crate) uuid: String,
    /// `books.sort` when the metadata gives one (a calibre source's), else calibre's trigger
    /// makes it from the title.
    pub(crate) title_sort: Option<String>,
    /// Date added: a calibre source's, else now.
    pub(crate) timestamp: String,
    /// A calibre source's `last_modified`, else now.
    pub(crate) last_modified: String,
    /// Custom column values and the source book, from a calibre source (`extras`).
    pub(super) carried: Carried,
}

impl Fields {
    /// The book as `metadata.opf` states it, given the values that depend on where it is
    /// written (its id, its author sort and series index as the caller settles them).
    pub(crate) fn opf_book(&self, book_id: i64, author_sort: String, series_index: f64) -> OpfBook {
        OpfBook {
            book_id,
            uuid: self.uuid.clone(),
            title: self.title.clone(),
            title_sort: self
                .title_sort
                .clone()
                .unwrap_or_else(|| title_sort(&self.title)),
            authors: self.authors.clone(),
            author_sort,
            pubdate: dates::opf_form(&self.pubdate),
            timestamp: dates::opf_form(&self.timestamp),
            description: self.comments.clone(),
            publisher: self.publisher.clone(),
            identifiers: self.identifiers.clone(),
            languages: self.languages.clone(),
            tags: self.tags.clone(),
            series: self.series.clone(),
            series_index,
            rating: self.rating,
        }
    }
}

/// The id of the calibre source book `md` was read from (`Metadata::source`, `calibre:ID`).
fn calibre_source_id(md: &Metadata) -> Option<i64> {
    md.source
        .as_deref()
        .and_then(|s| s.strip_prefix("calibre:"))
        .and_then(|id| id.parse().ok())
}

/// Case-insensitive de-duplication keeping the first spelling.
fn uniq(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|s| !s.is_empty() && seen.insert(s.to_lowercase()))
        .collect()
}

/// A book's values as calibre would store them, worked out before any lock is taken (the
/// cleaning is most of the cost of deciding where a file goes): what
/// [`CalibreLibrary::find_existing_candidate`] and [`CalibreLibrary::reserve_candidate`] take.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub(super) fields: Fields,
    /// No author given ("Unknown" is not one to match on: calibre matches given authors).
    pub(super) no_authors: bool,
    /// The uuid the metadata gives, when it is one.
    pub(super) given_uuid: Option<String>,
    /// The id of the calibre source book it comes from (`Metadata::source`, `calibre:ID`).
    pub(super) source_id: Option<i64>,
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
            source_id: calibre_source_id(md),
        }
    }
}

impl Fields {
    pub(crate) fn from_metadata(md: &Metadata) -> Fields {
        let (title, authors) = stored_identity(md);
        let mut languages: Vec<String> = md.languages.clone();
        if languages.is_empty() {
            languages.extend(md.language.clone());
        }
        let identifiers = crate::calibre::text::calibre_identifiers(md);
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
            pubdate: if calibre_source_id(md).is_some() {
                dates::source_pubdate(md.pubdate.as_deref())
            } else {
                dates::pubdate(md.pubdate.as_deref())
            },
            languages: uniq(languages.iter().filter_map(|l| lang::canonicalize(l))),
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
            title_sort: md
                .title_sort
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(String::from),
            timestamp: md
                .timestamp
                .as_deref()
                .and_then(dates::db_form)
                .unwrap_or_else(dates::now),
            last_modified: md
                .last_modified
                .as_deref()
                .and_then(dates::db_form)
                .unwrap_or_else(dates::now),
            carried: Carried::of(md),
        }
    }

    pub(super) fn key(&self) -> Key<'_> {
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
