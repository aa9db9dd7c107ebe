//! Book metadata: the one `Metadata` shape every source and target speaks, where it came from
//! (`Origin`), and the pure extractors that turn bytes into it. Nothing here knows the state DB,
//! the network or the CLI: bytes (or a file to range-read) in, `Extracted` out.

pub mod filename;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What we know about a book. Field names match the upload protocol's metadata JSON, so the
/// serialized form can be sent as it is; extra keys (author_sort, languages, uuid, …) are ignored
/// by servers that do not know them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_sort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_index: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// ISO 8601 date (`YYYY-MM-DD`, or `YYYY` / `YYYY-MM` when that is all that is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubdate: Option<String>,
    /// The primary language, ISO 639-1 where one exists (else ISO 639-2/3 as found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Every language, in order, same codes as `language`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isbn: Option<String>,
    /// Scheme (lowercase: isbn, goodreads, amazon, uuid, …) → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<f64>,
    /// Where a cover image can be found: a path inside the container (EPUB/CBZ) or a file path
    /// (calibre's `cover.jpg`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cover: Option<String>,
    /// Where this record came from, e.g. `calibre:1234` (the upload protocol's `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Metadata {
    /// True when there is a title and at least one author: enough for a server to trust it
    /// (`skip_extraction`) if the origin is trustworthy too.
    pub fn has_title_and_author(&self) -> bool {
        self.title.as_deref().is_some_and(|t| !t.trim().is_empty())
            && self.authors.iter().any(|a| !a.trim().is_empty())
    }
}

/// Where a `Metadata` record came from. Stored in the state DB as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The source's own database (a calibre `metadata.db`).
    Calibre,
    /// The file's embedded metadata (OPF, PDF Info/XMP, EXTH, FB2 title-info, ComicInfo).
    Embedded,
    /// Guessed from the file name and folders.
    Filename,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Calibre => "calibre",
            Origin::Embedded => "embedded",
            Origin::Filename => "filename",
        }
    }

    pub fn parse(s: &str) -> Option<Origin> {
        match s {
            "calibre" => Some(Origin::Calibre),
            "embedded" => Some(Origin::Embedded),
            "filename" => Some(Origin::Filename),
            _ => None,
        }
    }

    /// Whether a server may skip its own extraction on the strength of this origin.
    pub fn is_trusted(self) -> bool {
        matches!(self, Origin::Calibre | Origin::Embedded)
    }
}

/// The result of extracting metadata from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub metadata: Metadata,
    pub origin: Origin,
    /// Problems met on the way (malformed container, entity limits, …): recorded on the row,
    /// never fatal.
    pub warnings: Vec<String>,
}

/// Extract what can be known of a file from its bytes (the whole file, already read by the hash
/// stage) and its path relative to the source root. Never panics; never fails: a broken file
/// yields what the file name tells plus a warning.
pub fn extract(_format: &str, _data: &[u8], rel_path: &str) -> Extracted {
    Extracted {
        metadata: filename::guess(rel_path),
        origin: Origin::Filename,
        warnings: Vec::new(),
    }
}

/// Extract from a file on disk (files too large for the hash stage's buffer): reads only what
/// the format needs.
pub fn extract_from_file(
    _format: &str,
    _path: &std::path::Path,
    _size: u64,
    rel_path: &str,
) -> Extracted {
    Extracted {
        metadata: filename::guess(rel_path),
        origin: Origin::Filename,
        warnings: Vec::new(),
    }
}
