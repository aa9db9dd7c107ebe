//! CBZ comics: `ComicInfo.xml` (the ComicRack schema) inside the ZIP; the cover is the first
//! image in calibre's order (`calibre.libunzip.extract_cover_image`: names sorted by a numeric,
//! case-insensitive key of the name before its last dot, then of the extension).

use super::xml::{self, Element};
use super::{archive, normalize, Metadata};
use std::io::{Read, Seek};
use zip::ZipArchive;

/// The extensions calibre takes as comic pages (`libunzip.comic_exts`).
const IMAGE_EXT: &[&str] = &["png", "jpg", "jpeg", "gif", "webp"];

pub fn read<R: Read + Seek>(ar: &mut ZipArchive<R>, md: &mut Metadata, warnings: &mut Vec<String>) {
    let names = archive::names(ar);
    md.cover = cover_name(&names).cloned();
    // ComicInfo.xml at the root, else anywhere.
    let info = names
        .iter()
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            l == "comicinfo.xml" || l.ends_with("/comicinfo.xml")
        })
        .min_by_key(|n| n.matches('/').count());
    let Some(info) = info else { return };
    let Some(bytes) = archive::read_named(ar, info, warnings) else {
        return;
    };
    let (root, w) = xml::parse(&bytes, xml::Options::default());
    warnings.extend(w);
    if let Some(root) = root {
        read_comic_info(&root, md);
    }
}

/// The page calibre takes as the cover: the first image (not under `__MACOSX/`) in its order.
pub fn cover_name(names: &[String]) -> Option<&String> {
    names
        .iter()
        .filter(|n| {
            !n.starts_with("__MACOSX/")
                && n.rsplit_once('.')
                    .is_some_and(|(_, e)| IMAGE_EXT.iter().any(|x| e.eq_ignore_ascii_case(x)))
        })
        .min_by(|a, b| sort_key(a).cmp(&sort_key(b)).then_with(|| a.cmp(b)))
}

/// calibre's `libunzip.sort_key`: (name before the last dot, extension), each compared as
/// ICU's numeric collation does: runs of digits by value, other characters case-insensitively,
/// punctuation and spaces before digits before letters.
fn sort_key(name: &str) -> (Vec<Part>, Vec<Part>) {
    let (base, ext) = match name.rsplit_once('.') {
        Some(("", e)) => (e, ""),
        Some((b, e)) => (b, e),
        None => (name, ""),
    };
    (parts(base), parts(ext))
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Punct(char),
    /// Significant digits (no leading zeros): shorter is smaller, then by digits.
    Number(usize, String),
    Letter(String),
}

fn parts(s: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut digits = String::from(c);
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            let value = digits.trim_start_matches('0').to_string();
            out.push(Part::Number(value.len(), value));
        } else if c.is_alphanumeric() {
            out.push(Part::Letter(c.to_lowercase().collect()));
        } else {
            out.push(Part::Punct(c));
        }
    }
    out
}

pub fn read_comic_info(root: &Element, md: &mut Metadata) {
    let get = |n: &str| root.child(n).and_then(Element::text_opt);
    md.title = get("Title");
    md.series = get("Series");
    md.series_index = get("Number").and_then(|n| normalize::series_index(&n));
    if md.title.is_none() {
        // An untitled issue is known by its series and number.
        md.title = match (&md.series, get("Number")) {
            (Some(s), Some(n)) => Some(format!("{s} #{n}")),
            (Some(s), None) => Some(s.clone()),
            _ => None,
        };
    }
    if let Some(w) = get("Writer") {
        md.authors = w.split([',', ';']).map(str::to_string).collect();
    }
    md.publisher = get("Publisher");
    if let Some(l) = get("LanguageISO") {
        md.languages = vec![l];
    }
    md.description = get("Summary");
    for n in ["Genre", "Tags"] {
        if let Some(t) = get(n) {
            md.tags.extend(t.split(',').map(str::to_string));
        }
    }
    md.pubdate = get("Year").map(|y| match (get("Month"), get("Day")) {
        (Some(m), Some(d)) => format!("{y}-{:0>2}-{:0>2}", m, d),
        (Some(m), None) => format!("{y}-{:0>2}", m),
        _ => y,
    });
    if let Some(isbn) = get("GTIN") {
        let mut w = Vec::new();
        if let Some(i) = normalize::isbn(&isbn, false, &mut w) {
            md.isbn = Some(i);
        }
    }
    if let Some(r) = get("CommunityRating").and_then(|r| r.parse::<f64>().ok()) {
        if (0.0..=5.0).contains(&r) {
            md.rating = Some(r * 2.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::build;
    use std::io::Cursor;

    #[test]
    fn comic_info() {
        let ci = br#"<?xml version="1.0"?><ComicInfo><Title>The Arrival</Title><Series>Saga</Series><Number>7</Number>
<Writer>Brian K. Vaughan, Fiona Staples</Writer><Publisher>Image</Publisher><LanguageISO>en</LanguageISO>
<Year>2013</Year><Month>3</Month><Day>9</Day><Genre>SF, Fantasy</Genre><Summary>Space.</Summary></ComicInfo>"#;
        let z = build(&[("002.jpg", b"x"), ("001.JPG", b"x"), ("ComicInfo.xml", ci)]);
        let mut ar = archive::open(Cursor::new(z)).expect("zip");
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut ar, &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("The Arrival"));
        assert_eq!(md.series.as_deref(), Some("Saga"));
        assert_eq!(md.series_index, Some(7.0));
        assert_eq!(md.authors, vec!["Brian K. Vaughan", " Fiona Staples"]);
        assert_eq!(md.publisher.as_deref(), Some("Image"));
        assert_eq!(md.pubdate.as_deref(), Some("2013-03-09"));
        assert_eq!(md.tags, vec!["SF", " Fantasy"]);
        assert_eq!(md.cover.as_deref(), Some("001.JPG"));
        assert!(w.is_empty());
    }

    #[test]
    fn cover_is_calibres_first_page() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Numeric order, not byte order: page 2 comes before page 10.
        let n = names(&["p10.jpg", "p2.jpg", "ComicInfo.xml"]);
        assert_eq!(cover_name(&n).map(String::as_str), Some("p2.jpg"));
        // Case does not matter; macOS forks and non-pages are not covers.
        let n = names(&["__MACOSX/._A.jpg", "b.png", "A.JPG", "a.txt", "0.bmp"]);
        assert_eq!(cover_name(&n).map(String::as_str), Some("A.JPG"));
        // The name before the extension decides first: `x.png` before `x-1.jpg`.
        let n = names(&["x-1.jpg", "x.png"]);
        assert_eq!(cover_name(&n).map(String::as_str), Some("x.png"));
        assert_eq!(cover_name(&names(&["a.txt"])), None);
    }

    #[test]
    fn untitled_issue_uses_series() {
        let (root, _) = xml::parse(
            b"<ComicInfo><Series>Saga</Series><Number>2</Number></ComicInfo>",
            xml::Options::default(),
        );
        let mut md = Metadata::default();
        read_comic_info(&root.expect("root"), &mut md);
        assert_eq!(md.title.as_deref(), Some("Saga #2"));
    }
}
