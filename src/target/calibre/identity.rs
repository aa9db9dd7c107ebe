//! Which book a file belongs to, worked out from its metadata before any lock: a calibre
//! source book is its own group and keeps its uuid; any other file groups by calibre's fuzzy
//! title and all its authors, and its book gets a uuid derived from that group, the library's
//! id and the migration's key — so a rerun after a crash finds the book the earlier run
//! committed, and another migration's books are never taken for this one's.

use super::fields::{stored_identity, Candidate};
use crate::calibre::opf::OpfBook;
use crate::calibre::text::{author_to_author_sort, fuzzy_title};
use crate::metadata::{Metadata, Origin};
use crate::target::Payload;

/// What a file's metadata says of the book it belongs to, worked out before the books lock.
pub(super) struct Identified {
    /// The group its files go to (see [`identity`]).
    pub(super) group: String,
    /// The uuid its book has or gets.
    pub(super) uuid: String,
    /// Its values as calibre stores them (the derived uuid set).
    pub(super) candidate: Candidate,
}

impl Identified {
    pub(super) fn of(p: &Payload, uuid_seed: &str) -> Identified {
        let mut md = p.metadata.clone().unwrap_or_default();
        if md.title.as_deref().is_none_or(|t| t.trim().is_empty()) {
            md.title = Some(file_title(&p.file_name));
        }
        let (group, uuid) = identity(p, &md, uuid_seed);
        md.uuid = Some(uuid.clone());
        let mut candidate = Candidate::of(&md);
        if p.origin != Some(Origin::Calibre) {
            candidate.source_id = None;
        }
        Identified {
            group,
            uuid,
            candidate,
        }
    }
}

impl Candidate {
    /// What calibre's "save to disk" writes into the `.opf` beside the file `p` (see
    /// `calibre::opf::render_saved`), as if saved from a library this migration filled: the
    /// book's values as calibre stores them (author sort from the names when none is given,
    /// series index 1 when none is), its uuid as the calibre target gives it (a calibre source
    /// book's own, else derived from its title, authors and `seed`: the same for every format
    /// of the book), and its calibre id: a calibre source book's id, else that uuid (calibre
    /// names a book of no library by a uuid). Returns the book and its calibre id.
    pub fn saved_opf(p: &Payload, seed: &str) -> (OpfBook, String) {
        let Identified { candidate, .. } = Identified::of(p, seed);
        let f = &candidate.fields;
        let calibre_id = match candidate.source_id {
            Some(id) => id.to_string(),
            None => f.uuid.clone(),
        };
        let author_sort = f.author_sort.clone().unwrap_or_else(|| {
            let sorts: Vec<String> = f.authors.iter().map(|a| author_to_author_sort(a)).collect();
            sorts.join(" & ")
        });
        let book = f.opf_book(
            candidate.source_id.unwrap_or(0),
            author_sort,
            f.series_index.unwrap_or(1.0),
        );
        (book, calibre_id)
    }
}

/// A file's group key and its book's uuid. A calibre source book is its own group and keeps
/// its uuid; any other file groups by calibre's fuzzy title and all its authors (as stored), and
/// its book gets a uuid derived from that group and `seed` (library id + migration key).
fn identity(p: &Payload, md: &Metadata, seed: &str) -> (String, String) {
    if p.origin == Some(Origin::Calibre) {
        if let Some(u) = md.uuid.as_deref().map(|u| u.trim().to_lowercase()) {
            if u.len() == 36 {
                return (format!("uuid:{u}"), u);
            }
        }
    }
    let (title, authors) = stored_identity(md);
    let group = group_of(&title, &authors);
    let group = if group.starts_with("book:\u{1f}") {
        // A title calibre's fuzzy match reduces to nothing: each file is its own book.
        format!("file:{}", p.source_rel)
    } else {
        group
    };
    let uuid = derived_uuid(seed, &group);
    (group, uuid)
}

/// The group of a book stored with this title and these authors.
pub(super) fn group_of(title: &str, authors: &[String]) -> String {
    let mut authors: Vec<String> = authors.iter().map(|a| a.trim().to_lowercase()).collect();
    authors.sort();
    authors.dedup();
    format!(
        "book:{}\u{1f}{}",
        fuzzy_title(title),
        authors.join("\u{1e}")
    )
}

/// A version-4-shaped uuid that is the same for the same seed (library + migration) and group,
/// so the book a killed run committed is found again by the rerun, and a later migration's
/// books are not taken for this one's: the first 16 bytes of a BLAKE3 hash, with the version
/// and variant bits of a random uuid set.
pub(super) fn derived_uuid(seed: &str, group: &str) -> String {
    let h = blake3::hash(format!("bookferry-book\0{seed}\0{group}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.as_bytes()[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A title from a file name when the file gave none: the name without its extension.
fn file_title(file_name: &str) -> String {
    let stem = file_name
        .strip_suffix(".fb2.zip")
        .or_else(|| file_name.rsplit_once('.').map(|(s, _)| s))
        .unwrap_or(file_name);
    if stem.trim().is_empty() {
        "Unknown".into()
    } else {
        stem.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_distinct_and_uuid4_shaped() {
        let a = derived_uuid("lib-1", "book:dune\u{1f}frank herbert");
        assert_eq!(a, derived_uuid("lib-1", "book:dune\u{1f}frank herbert"));
        assert_ne!(a, derived_uuid("lib-2", "book:dune\u{1f}frank herbert"));
        assert_ne!(a, derived_uuid("lib-1", "book:emma\u{1f}jane austen"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn titles_from_file_names() {
        assert_eq!(file_title("Dune.epub"), "Dune");
        assert_eq!(file_title("a.b.fb2.zip"), "a.b");
        assert_eq!(file_title(".epub"), "Unknown");
        assert_eq!(file_title("README"), "README");
    }

    /// The uuid a book of this migration gets must stay what earlier versions derived: a
    /// rerun recognises the books a killed run committed only by it.
    #[test]
    fn a_derived_uuid_stays_what_it_was() {
        assert_eq!(
            derived_uuid(
                "library-id\0migration-key",
                &group_of("Dune", &["Frank Herbert".to_string()])
            ),
            "4057a524-5a0a-45c1-85f4-c16a0bd79842"
        );
    }
}
