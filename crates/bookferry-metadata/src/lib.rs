//! Book metadata: the one `Metadata` shape every source and target speaks, where it came from
//! (`Origin`), and the pure extractors that turn bytes into it. Nothing here knows the state DB,
//! the network or the CLI: bytes (or a file to range-read) in, `Extracted` out.
//!
//! A crate of its own (bookferry reaches it as `bookferry::metadata`) so the parsers build,
//! test and can be used without the rest of bookferry, and can never reach into it.

#![forbid(unsafe_code)]

pub mod archive;
mod cbz;
mod charset;
pub mod cover;
pub mod cover_pdf;
mod docx;
mod epub;
mod fb2;
pub mod filename;
mod ids;
pub mod jpeg;
pub mod lang;
mod mobi;
pub mod normalize;
mod pdf;
mod pdfobj;
mod source;
mod xml;
mod xmp;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use source::{Counting, FileSource, SliceSource, Source};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

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
    // A calibre source book's own values, kept so a calibre target writes them back unchanged
    // (absent for other sources: a new book is then sorted and dated as calibre would).
    /// The title as calibre sorts it (`books.sort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_sort: Option<String>,
    /// When the book was added to its library (`books.timestamp`), RFC 3339 in UTC, e.g.
    /// `2001-02-03T04:05:06.123456+00:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// When its metadata last changed (`books.last_modified`), in the same form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// A calibre source book's custom column values, by column label (without the `#`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_columns: BTreeMap<String, CustomValue>,
}

/// One book's value in one calibre custom column, typed as calibre stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomValue {
    /// `text`, `comments`, `enumeration`, and `datetime` (calibre's stored text).
    Text(String),
    /// `text` with `is_multiple`, in calibre's order.
    Texts(Vec<String>),
    /// `int`, and `rating` (calibre's 0–10).
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `series`: the name and the book's index in it.
    Series {
        name: String,
        index: f64,
    },
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
    /// Bytes of the file the extractor actually read (for `extract`, the bytes it looked at
    /// in the given slice), so a benchmark can show a large file is not read whole.
    pub bytes_read: u64,
}

/// Files up to this size are read whole by `extract_from_file` (non-PDF, non-MOBI formats).
pub const WHOLE_FILE_LIMIT: u64 = 64 << 20;

/// The formats with an embedded-metadata extractor, as lowercase format strings.
pub const FORMATS: &[&str] = &[
    "epub", "kepub", "pdf", "mobi", "azw", "azw3", "prc", "fb2", "fb2.zip", "cbz", "docx",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Epub,
    Pdf,
    Mobi,
    Fb2,
    Fb2Zip,
    Cbz,
    Docx,
    Other,
}

fn kind(format: &str) -> Kind {
    match format
        .trim()
        .trim_start_matches('.')
        .to_ascii_lowercase()
        .as_str()
    {
        "epub" | "kepub" | "kepub.epub" => Kind::Epub,
        "pdf" => Kind::Pdf,
        "mobi" | "azw" | "azw3" | "prc" | "azw4" => Kind::Mobi,
        "fb2" => Kind::Fb2,
        "fb2.zip" | "fbz" => Kind::Fb2Zip,
        "cbz" => Kind::Cbz,
        "docx" => Kind::Docx,
        _ => Kind::Other,
    }
}

/// Run a ZIP-based extractor over any seekable reader.
fn read_zip<R: Read + Seek>(k: Kind, r: R, md: &mut Metadata, w: &mut Vec<String>) -> Option<R> {
    let mut ar = match archive::open(r) {
        Ok(a) => a,
        Err(e) => {
            w.push(e);
            return None;
        }
    };
    match k {
        Kind::Epub => epub::read(&mut ar, md, w),
        Kind::Cbz => cbz::read(&mut ar, md, w),
        Kind::Docx => docx::read(&mut ar, md, w),
        Kind::Fb2Zip => fb2::read_zip(&mut ar, md, w),
        _ => {}
    }
    Some(ar.into_inner())
}

/// Extract what can be known of a file from its bytes (the whole file, already read by the hash
/// stage) and its path relative to the source root. Never panics; never fails: a broken file
/// yields what the file name tells plus a warning.
pub fn extract(format: &str, data: &[u8], rel_path: &str) -> Extracted {
    let k = kind(format);
    let mut md = Metadata::default();
    let mut w = Vec::new();
    let bytes_read = match k {
        Kind::Pdf | Kind::Mobi => {
            let mut src = SliceSource::new(data);
            if k == Kind::Pdf {
                pdf::read(&mut src, &mut md, &mut w);
            } else {
                mobi::read(&mut src, &mut md, &mut w);
            }
            src.bytes_read()
        }
        Kind::Fb2 => {
            fb2::read(data, &mut md, &mut w);
            data.len().min(fb2::DESCRIPTION_CAP) as u64
        }
        Kind::Epub | Kind::Cbz | Kind::Docx | Kind::Fb2Zip => {
            read_zip(k, Counting::new(Cursor::new(data)), &mut md, &mut w).map_or(0, |c| c.read)
        }
        Kind::Other => 0,
    };
    finish(k, md, w, rel_path, bytes_read)
}

/// Like `extract`, but reading the file at `path` (of `size` bytes) only as far as needed:
/// PDF and MOBI by range (tail, xref, the Info/XMP objects; header and record 0), FB2 by its
/// head, ZIP-based formats over their central directory and the few entries they need.
pub fn extract_from_file(format: &str, path: &Path, size: u64, rel_path: &str) -> Extracted {
    let k = kind(format);
    let mut md = Metadata::default();
    let mut w = Vec::new();
    if k == Kind::Other {
        return finish(k, md, w, rel_path, 0);
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            w.push(format!("cannot open {}: {e}", path.display()));
            return finish(k, md, w, rel_path, 0);
        }
    };
    let bytes_read = match k {
        Kind::Pdf | Kind::Mobi => {
            let mut src = FileSource::new(file, size);
            if k == Kind::Pdf {
                pdf::read(&mut src, &mut md, &mut w);
            } else {
                mobi::read(&mut src, &mut md, &mut w);
            }
            src.bytes_read()
        }
        Kind::Fb2 => {
            // Only the head holds the <description>.
            // Read a growing head until it holds `</description>` (usually within 64 KiB).
            let mut src = FileSource::new(file, size);
            let mut head: Vec<u8> = Vec::new();
            let mut want = 64 * 1024;
            loop {
                match src.read_at(head.len() as u64, want - head.len()) {
                    Ok(chunk) => {
                        let at_end = chunk.len() < want - head.len();
                        head.extend_from_slice(&chunk);
                        let found = head.windows(14).any(|w| w == b"</description>");
                        if at_end || found || head.len() >= fb2::DESCRIPTION_CAP {
                            break;
                        }
                        want = (want * 4).min(fb2::DESCRIPTION_CAP);
                    }
                    Err(e) => {
                        w.push(format!("read error: {e}"));
                        break;
                    }
                }
            }
            fb2::read(&head, &mut md, &mut w);
            src.bytes_read()
        }
        _ => {
            let r = BufReader::with_capacity(16 * 1024, Counting::new(file));
            read_zip(k, r, &mut md, &mut w).map_or(0, |b| b.into_inner().read)
        }
    };
    finish(k, md, w, rel_path, bytes_read)
}

/// Normalize, and fall back to the file name for a title or authors the file did not give.
fn finish(
    k: Kind,
    mut md: Metadata,
    mut warnings: Vec<String>,
    rel_path: &str,
    bytes_read: u64,
) -> Extracted {
    let has_extractor = k != Kind::Other;
    normalize::finish(&mut md);
    let origin = if md.title.is_some() {
        // As calibre: a file with a title but no author takes the author its name gives.
        if md.authors.is_empty() {
            md.authors = filename::guess(rel_path).authors;
            normalize::finish(&mut md);
        }
        Origin::Embedded
    } else {
        let guess = filename::guess(rel_path);
        md.title = guess.title;
        if md.authors.is_empty() {
            md.authors = guess.authors;
        }
        normalize::finish(&mut md);
        if has_extractor {
            warnings.push("no embedded title: title guessed from the file name".into());
        }
        Origin::Filename
    };
    warnings.dedup();
    warnings.truncate(32);
    Extracted {
        metadata: md,
        origin,
        warnings,
        bytes_read,
    }
}
