//! What bookferry knows of the server's library: its books as one `list` call gave them at
//! open (title, authors, languages, identifiers, formats), kept up to date with the books this
//! run adds. It answers calibre's duplicate rule (`Cache.find_identical_books`: every author of
//! the new book is one of the old one's, case-insensitively, the fuzzy titles are equal, the
//! languages agree when both are known; or a shared identifier) and which book is this
//! migration's, by the identifier `bookferry:<id>` each book it adds carries.

use crate::calibre::text::{fuzzy_title, py_strip as strip};
use crate::metadata::Metadata;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};

/// The identifier type that marks a book this migration added.
pub const MARK: &str = "bookferry";

/// One book of the server's library.
#[derive(Debug, Default, Clone)]
pub struct Book {
    fuzzy: String,
    languages: Vec<String>,
    /// Upper case.
    pub formats: HashSet<String>,
}

#[derive(Debug, Default)]
pub struct Library {
    books: HashMap<i64, Book>,
    by_author: HashMap<String, BTreeSet<i64>>,
    identifiers: HashMap<(String, String), i64>,
    /// `bookferry:` identifier value → book.
    marked: HashMap<String, i64>,
}

/// The `list` fields [`Library::from_list`] reads.
pub const LIST_FIELDS: [&str; 5] = ["title", "authors", "languages", "identifiers", "formats"];

impl Library {
    /// Read a `list` command's result (`{"book_ids": […], "data": {field: {id: value}}}`).
    pub fn from_list(result: &Value) -> Option<Library> {
        let data = result.get("data")?;
        let field = |name: &str, id: &str| data.get(name).and_then(|f| f.get(id));
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut lib = Library::default();
        for id in result.get("book_ids")?.as_array()? {
            let book = id.as_i64()?;
            let key = book.to_string();
            let title = field("title", &key).and_then(Value::as_str).unwrap_or("");
            let authors = strings(field("authors", &key));
            let languages = strings(field("languages", &key));
            let formats = strings(field("formats", &key));
            let identifiers: Vec<(String, String)> = field("identifiers", &key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(t, v)| Some((t.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            lib.add(book, title, &authors, &languages, &identifiers);
            lib.add_format(book, &formats.join(","));
        }
        Some(lib)
    }

    /// Record a book (read at open, or added by this run).
    pub fn add(
        &mut self,
        book: i64,
        title: &str,
        authors: &[String],
        languages: &[String],
        identifiers: &[(String, String)],
    ) {
        for a in authors {
            self.by_author
                .entry(a.trim().to_lowercase())
                .or_default()
                .insert(book);
        }
        for (t, v) in identifiers {
            if t == MARK {
                self.marked.insert(v.to_lowercase(), book);
            } else {
                self.identifiers
                    .entry((t.to_lowercase(), v.to_lowercase()))
                    .or_insert(book);
            }
        }
        let entry = self.books.entry(book).or_default();
        entry.fuzzy = fuzzy_title(title);
        entry.languages = languages.to_vec();
    }

    /// Note formats (comma-separated, any case) a book has now.
    pub fn add_format(&mut self, book: i64, formats: &str) {
        if let Some(b) = self.books.get_mut(&book) {
            b.formats.extend(
                formats
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_uppercase),
            );
        }
    }

    pub fn book(&self, id: i64) -> Option<&Book> {
        self.books.get(&id)
    }

    /// The book this migration added for `mark`, if the library has it.
    pub fn marked(&self, mark: &str) -> Option<i64> {
        self.marked.get(&mark.to_lowercase()).copied()
    }

    /// The lowest id of a book calibre's duplicate rule takes for `f`, among the books that
    /// hold a file. A book without any format cannot stand for a file: calibre-server killed
    /// while it added a book leaves one (its title and authors written, its identifiers — our
    /// mark among them — and formats not yet), and taking it for the book skipped the file as
    /// `target_has_book` and left the book without it. Such a book is left as it is, and the
    /// file gets a book of its own.
    pub fn identical(&self, f: &Fields) -> Option<i64> {
        let has_a_file = |id: &i64| self.books.get(id).is_some_and(|b| !b.formats.is_empty());
        let by_ident = f
            .identifiers
            .iter()
            .filter(|(t, _)| t != MARK)
            .filter_map(|(t, v)| {
                self.identifiers
                    .get(&(t.to_lowercase(), v.to_lowercase()))
                    .copied()
            })
            .filter(has_a_file)
            .min();
        if by_ident.is_some() {
            return by_ident;
        }
        let mut found: Option<BTreeSet<i64>> = None;
        for a in &f.authors {
            let books = self.by_author.get(&a.trim().to_lowercase())?;
            found = Some(match found {
                None => books.clone(),
                Some(prev) => prev.intersection(books).copied().collect(),
            });
        }
        let title = fuzzy_title(&f.title);
        found?.into_iter().find(|id| {
            has_a_file(id)
                && self.books.get(id).is_some_and(|b| {
                    b.fuzzy == title
                        && (f.languages.is_empty()
                            || b.languages.is_empty()
                            || b.languages == f.languages)
                })
        })
    }
}

/// A book's values as calibre stores them, from bookferry's metadata.
#[derive(Debug, Clone)]
pub struct Fields {
    pub title: String,
    pub authors: Vec<String>,
    pub languages: Vec<String>,
    pub identifiers: Vec<(String, String)>,
    md: Metadata,
}

impl Fields {
    /// `file_title`: the title when the metadata has none (the file's name without extension).
    pub fn of(md: Option<&Metadata>, file_title: &str) -> Fields {
        let md = md.cloned().unwrap_or_default();
        let title = md
            .title
            .as_deref()
            .map(strip)
            .filter(|t| !t.is_empty())
            .unwrap_or(file_title)
            .to_string();
        let mut authors = uniq(md.authors.iter().map(|a| strip(a).replace('&', ";")));
        if authors.is_empty() {
            authors.push("Unknown".into());
        }
        let mut langs = md.languages.clone();
        if langs.is_empty() {
            langs.extend(md.language.clone());
        }
        let languages = uniq(
            langs
                .iter()
                .filter_map(|l| crate::metadata::lang::canonicalize(l)),
        );
        // Our own mark is set by us, never carried from the source.
        let identifiers: Vec<(String, String)> = crate::calibre::text::calibre_identifiers(&md)
            .into_iter()
            .filter(|(t, _)| t != MARK)
            .collect();
        Fields {
            title,
            authors,
            languages,
            identifiers,
            md,
        }
    }

    /// calibre's `Metadata` object as its JSON decoder reads it (`calibre/utils/serialize.py`:
    /// `{CANARY: 2, "v": metadata_as_dict}`), carrying `bookferry:<mark>`.
    pub fn calibre_metadata(&self, mark: &str) -> Value {
        const CANARY: &str = "jPoAv3zOyHvQ5JFNYg4hJ9";
        let md = &self.md;
        let mut v = Map::new();
        v.insert("title".into(), json!(self.title));
        v.insert("authors".into(), json!(self.authors));
        let opt = |s: &Option<String>| {
            s.as_deref()
                .map(strip)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        if let Some(s) = opt(&md.author_sort) {
            v.insert("author_sort".into(), json!(s));
        }
        if let Some(s) = opt(&md.series) {
            v.insert("series".into(), json!(s));
            if let Some(i) = md.series_index.filter(|i| i.is_finite()) {
                v.insert("series_index".into(), json!(i));
            }
        }
        if let Some(s) = opt(&md.publisher) {
            v.insert("publisher".into(), json!(s));
        }
        let pubdate = crate::calibre::dates::pubdate(md.pubdate.as_deref());
        if !pubdate.starts_with("0101-") {
            let iso = crate::calibre::dates::opf_form(&pubdate);
            v.insert("pubdate".into(), json!({CANARY: 0, "v": iso}));
        }
        if !self.languages.is_empty() {
            v.insert("languages".into(), json!(self.languages));
        }
        let mut ids: Map<String, Value> = self
            .identifiers
            .iter()
            .map(|(t, x)| (t.clone(), json!(x)))
            .collect();
        ids.insert(MARK.into(), json!(mark));
        v.insert("identifiers".into(), Value::Object(ids));
        let tags = uniq(md.tags.iter().map(|t| strip(t).replace(',', ";")));
        if !tags.is_empty() {
            v.insert("tags".into(), json!(tags));
        }
        if let Some(d) = md.description.as_deref().filter(|d| !strip(d).is_empty()) {
            v.insert("comments".into(), json!(d));
        }
        if let Some(r) = md
            .rating
            .filter(|r| r.is_finite())
            .map(|r| (r * 2.0).round().clamp(0.0, 10.0) as i64)
            .filter(|r| *r > 0)
        {
            v.insert("rating".into(), json!(r));
        }
        json!({CANARY: 2, "v": Value::Object(v)})
    }
}

/// Case-insensitive de-duplication keeping the first spelling.
fn uniq(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items
        .into_iter()
        .filter(|s| !s.is_empty() && seen.insert(s.to_lowercase()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(title: &str, authors: &[&str]) -> Fields {
        let md = Metadata {
            title: Some(title.into()),
            authors: authors.iter().map(|a| a.to_string()).collect(),
            ..Metadata::default()
        };
        Fields::of(Some(&md), "x")
    }

    #[test]
    fn calibres_duplicate_rule_and_our_marks_are_read_from_a_list_reply() {
        let reply = json!({
            "book_ids": [3, 7],
            "data": {
                "title": {"3": "The Dune", "7": "Emma"},
                "authors": {"3": ["Frank Herbert"], "7": ["Jane Austen"]},
                "languages": {"3": [], "7": ["eng"]},
                "identifiers": {"3": {}, "7": {"bookferry": "ABC"}},
                "formats": {"3": ["EPUB"], "7": []}
            }
        });
        let lib = Library::from_list(&reply).unwrap();
        assert_eq!(lib.identical(&fields("Dune", &["frank herbert"])), Some(3));
        assert_eq!(lib.identical(&fields("Dune", &["Brian Herbert"])), None);
        assert_eq!(lib.marked("abc"), Some(7));
        assert!(lib.book(3).unwrap().formats.contains("EPUB"));
    }

    /// A book left half-made by a server killed mid-add (title and authors, no identifiers, no
    /// formats) is not the book: before, the next run skipped the file as `target_has_book`.
    #[test]
    fn a_book_without_formats_is_no_duplicate() {
        let reply = json!({
            "book_ids": [10],
            "data": {
                "title": {"10": "Labyrinth Tide"},
                "authors": {"10": ["Olga Wiśniewska"]},
                "languages": {"10": []},
                "identifiers": {"10": {}},
                "formats": {"10": []}
            }
        });
        let lib = Library::from_list(&reply).unwrap();
        assert_eq!(
            lib.identical(&fields("Labyrinth Tide", &["Olga Wiśniewska"])),
            None
        );
    }
}
