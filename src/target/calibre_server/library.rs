//! What bookferry knows of the server's library: its books as one `list` call gave them at
//! open (title, authors, languages, identifiers, formats, whether it has a cover), kept up to
//! date with the books this run adds. It answers calibre's duplicate rule
//! (`Cache.find_identical_books`: every author of the new book is one of the old one's,
//! case-insensitively, the fuzzy titles are equal, the languages agree when both are known; or
//! a shared identifier) among the books that are not this migration's, and which book is this
//! migration's, by the identifier `bookferry:<tag><mark>` each book it adds carries. A book's
//! values ([`Fields`]) are the direct calibre target's, as calibre's `Metadata` JSON.

use crate::calibre::text::{fuzzy_title, py_strip as strip};
use crate::metadata::Metadata;
use crate::target::calibre::BookFields;
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
    /// It has a cover.
    pub cover: bool,
}

#[derive(Debug, Default)]
pub struct Library {
    books: HashMap<i64, Book>,
    by_author: HashMap<String, BTreeSet<i64>>,
    identifiers: HashMap<(String, String), i64>,
    /// `bookferry:` identifier value → book.
    marked: HashMap<String, i64>,
    /// This migration's tag: the start of each mark it gives.
    tag: String,
    /// The books whose mark carries this migration's tag.
    ours: HashSet<i64>,
}

/// The `list` fields [`Library::from_list`] reads.
pub const LIST_FIELDS: [&str; 6] = [
    "title",
    "authors",
    "languages",
    "identifiers",
    "formats",
    "cover",
];

impl Library {
    /// Read a `list` command's result (`{"book_ids": […], "data": {field: {id: value}}}`);
    /// `tag` starts the marks of this migration's books.
    pub fn from_list(result: &Value, tag: &str) -> Option<Library> {
        let mut lib = Library {
            tag: tag.to_lowercase(),
            ..Library::default()
        };
        lib.read_list(result)?;
        Some(lib)
    }

    /// Record the books of a `list` result this library does not know yet (a book it knows
    /// keeps what this run knows of it); how many were new.
    pub fn read_list(&mut self, result: &Value) -> Option<usize> {
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
        let lib = self;
        let mut new = 0;
        for id in result.get("book_ids")?.as_array()? {
            let book = id.as_i64()?;
            if lib.books.contains_key(&book) {
                continue;
            }
            new += 1;
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
            if field("cover", &key).is_some_and(|c| !c.is_null()) {
                lib.set_cover(book);
            }
        }
        Some(new)
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
                let mark = v.to_lowercase();
                if !self.tag.is_empty() && mark.starts_with(&self.tag) {
                    self.ours.insert(book);
                }
                self.marked.insert(mark, book);
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

    /// Note that a book has a cover now.
    pub fn set_cover(&mut self, book: i64) {
        if let Some(b) = self.books.get_mut(&book) {
            b.cover = true;
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
    /// hold a file and are not this migration's (as the direct calibre target, a migration
    /// never takes its own book for the library's: two source books the rule calls the same
    /// stay two books). A book without any format cannot stand for a file: calibre-server killed
    /// while it added a book leaves one (its title and authors written, its identifiers — our
    /// mark among them — and formats not yet), and taking it for the book skipped the file as
    /// `target_has_book` and left the book without it. Such a book is left as it is, and the
    /// file gets a book of its own.
    pub fn identical(&self, f: &Fields) -> Option<i64> {
        let has_a_file = |id: &i64| self.books.get(id).is_some_and(|b| !b.formats.is_empty());
        let theirs = |id: &i64| !self.ours.contains(id);
        let f = &f.stored;
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
            .filter(theirs)
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
                && theirs(id)
                && self.books.get(id).is_some_and(|b| {
                    b.fuzzy == title
                        && (f.languages.is_empty()
                            || b.languages.is_empty()
                            || b.languages == f.languages)
                })
        })
    }
}

/// A book's values as calibre stores them, from bookferry's metadata: the direct calibre
/// target's own mapping ([`BookFields`]), so both targets make the same book.
#[derive(Debug, Clone)]
pub struct Fields {
    /// calibre's values, but for our mark (set by us, never carried from the source).
    pub stored: BookFields,
    md: Metadata,
}

impl Fields {
    /// `file_title`: the title when the metadata has none (the file's name without extension).
    pub fn of(md: Option<&Metadata>, file_title: &str) -> Fields {
        let mut md = md.cloned().unwrap_or_default();
        if md.title.as_deref().map(strip).is_none_or(str::is_empty) {
            md.title = Some(file_title.to_string());
        }
        let mut stored = BookFields::from_metadata(&md);
        stored.identifiers.retain(|(t, _)| t != MARK);
        Fields { stored, md }
    }

    /// The source book's custom column values (a calibre source's), by label.
    pub fn custom_values(
        &self,
    ) -> &std::collections::BTreeMap<String, crate::metadata::CustomValue> {
        &self.md.custom_columns
    }

    /// calibre's `Metadata` object as its JSON decoder reads it (`calibre/utils/serialize.py`:
    /// `{CANARY: 2, "v": metadata_as_dict}`), carrying `bookferry:<mark>`, the cover (JPEG) and
    /// the custom column values (`user_metadata`) when given. calibre's `add empty` stores it
    /// as `create_book_entry` + `set_metadata`: dates as given (a datetime is `{CANARY: 0}`),
    /// the sorts when given (else calibre's own, as the direct target's triggers make them).
    pub fn calibre_metadata(
        &self,
        mark: &str,
        cover: Option<&[u8]>,
        user_metadata: Map<String, Value>,
    ) -> Value {
        let f = &self.stored;
        let mut v = Map::new();
        v.insert("title".into(), json!(f.title));
        v.insert("authors".into(), json!(f.authors));
        if let Some(s) = &f.title_sort {
            v.insert("title_sort".into(), json!(s));
        }
        if let Some(s) = &f.author_sort {
            v.insert("author_sort".into(), json!(s));
        }
        if let Some(s) = &f.series {
            v.insert("series".into(), json!(s));
        }
        if let Some(i) = f.series_index {
            v.insert("series_index".into(), json!(i));
        }
        if let Some(s) = &f.publisher {
            v.insert("publisher".into(), json!(s));
        }
        v.insert("timestamp".into(), datetime(&f.timestamp));
        if !f.pubdate.starts_with("0101-") {
            v.insert("pubdate".into(), datetime(&f.pubdate));
        }
        if !f.languages.is_empty() {
            v.insert("languages".into(), json!(f.languages));
        }
        let mut ids: Map<String, Value> = f
            .identifiers
            .iter()
            .map(|(t, x)| (t.clone(), json!(x)))
            .collect();
        ids.insert(MARK.into(), json!(mark));
        v.insert("identifiers".into(), Value::Object(ids));
        if !f.tags.is_empty() {
            v.insert("tags".into(), json!(f.tags));
        }
        if let Some(d) = &f.comments {
            v.insert("comments".into(), json!(d));
        }
        if let Some(r) = f.rating {
            v.insert("rating".into(), json!(r));
        }
        if let Some(jpeg) = cover {
            v.insert(
                "cover_data".into(),
                json!(["jpeg", super::auth::base64(jpeg)]),
            );
        }
        if !user_metadata.is_empty() {
            v.insert("user_metadata".into(), Value::Object(user_metadata));
        }
        json!({CANARY: 2, "v": Value::Object(v)})
    }
}

/// calibre's JSON serializer's marker of a typed value.
pub const CANARY: &str = "jPoAv3zOyHvQ5JFNYg4hJ9";

/// A date and time in calibre's database form as calibre's JSON datetime
/// (`{CANARY: 0, "v": ISO 8601}`).
pub fn datetime(db_form: &str) -> Value {
    json!({CANARY: 0, "v": crate::calibre::dates::opf_form(db_form)})
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
        let lib = Library::from_list(&reply, "").unwrap();
        assert_eq!(lib.identical(&fields("Dune", &["frank herbert"])), Some(3));
        assert_eq!(lib.identical(&fields("Dune", &["Brian Herbert"])), None);
        assert_eq!(lib.marked("abc"), Some(7));
        assert!(lib.book(3).unwrap().formats.contains("EPUB"));
    }

    /// A calibre source book's date added, published date with its time, and sorts go as
    /// given, and so does its cover (base64 in calibre's JSON).
    #[test]
    fn dates_sorts_and_the_cover_are_sent_as_the_direct_target_writes_them() {
        let md = Metadata {
            title: Some("Dune".into()),
            authors: vec!["Frank Herbert".into()],
            title_sort: Some("Dune, The".into()),
            author_sort: Some("Herbert, Frank".into()),
            timestamp: Some("2001-02-03T04:05:06.123456+00:00".into()),
            pubdate: Some("1999-07-07T22:00:00+00:00".into()),
            source: Some("calibre:3".into()),
            ..Metadata::default()
        };
        let v = Fields::of(Some(&md), "x").calibre_metadata("m", Some(b"\xff\xd8\xff"), Map::new());
        let m = &v["v"];
        assert_eq!(m["title_sort"], "Dune, The");
        assert_eq!(m["author_sort"], "Herbert, Frank");
        assert_eq!(m["timestamp"]["v"], "2001-02-03T04:05:06.123456+00:00");
        assert_eq!(m["pubdate"]["v"], "1999-07-07T22:00:00+00:00");
        assert_eq!(m["cover_data"], json!(["jpeg", "/9j/"]));
        assert_eq!(m["identifiers"], json!({"bookferry": "m"}));
    }

    /// A book this migration made (its mark starts with the migration's tag) is never taken
    /// for the library's: two source books calibre's rule calls the same stay two books.
    #[test]
    fn this_migrations_books_are_no_duplicates() {
        let reply = json!({
            "book_ids": [3, 4],
            "data": {
                "title": {"3": "Dune", "4": "Dune"},
                "authors": {"3": ["Frank Herbert"], "4": ["Frank Herbert"]},
                "languages": {"3": [], "4": []},
                "identifiers": {"3": {"bookferry": "abcd1234ff"}, "4": {"bookferry": "0000ffff"}},
                "formats": {"3": ["EPUB"], "4": ["EPUB"]},
                "cover": {"3": null, "4": "/x/cover.jpg"}
            }
        });
        let lib = Library::from_list(&reply, "ABCD1234").unwrap();
        assert_eq!(lib.identical(&fields("Dune", &["Frank Herbert"])), Some(4));
        assert!(!lib.book(3).unwrap().cover && lib.book(4).unwrap().cover);
        let lib = Library::from_list(&reply, "").unwrap();
        assert_eq!(lib.identical(&fields("Dune", &["Frank Herbert"])), Some(3));
    }

    /// Books read again are added when new; a known book keeps what this run knows of it.
    #[test]
    fn a_second_list_adds_only_the_books_not_known() {
        let list = |ids: &[i64], formats: &str| {
            let per =
                |v: Value| -> Value { ids.iter().map(|i| (i.to_string(), v.clone())).collect() };
            json!({
                "book_ids": ids,
                "data": {
                    "title": per(json!("Dune")),
                    "authors": per(json!(["Frank Herbert"])),
                    "languages": per(json!([])),
                    "identifiers": ids.iter().map(|i| (i.to_string(), json!({"bookferry": format!("m{i}")}))).collect::<Map<String, Value>>(),
                    "formats": per(json!([formats]))
                }
            })
        };
        let mut lib = Library::from_list(&list(&[1], "EPUB"), "").unwrap();
        lib.add_format(1, "PDF");
        assert_eq!(lib.read_list(&list(&[1, 2], "EPUB")), Some(1));
        assert_eq!(lib.marked("m2"), Some(2));
        assert!(lib.book(1).unwrap().formats.contains("PDF"));
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
        let lib = Library::from_list(&reply, "").unwrap();
        assert_eq!(
            lib.identical(&fields("Labyrinth Tide", &["Olga Wiśniewska"])),
            None
        );
    }
}
