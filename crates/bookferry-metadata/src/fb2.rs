//! FictionBook 2 (`.fb2`, and `.fb2.zip` holding one): `description/title-info` (title,
//! authors, language, series, genres, keywords, annotation, date) and `publish-info` (ISBN,
//! publisher, year). Only the `<description>` is parsed; the book body is never walked. The
//! cover is the `<binary>` its `<coverpage>` names (`cover`), found by a scan of the tags.

use super::xml::{self, Element};
use super::{archive, ids, normalize, Metadata};
use std::io::{Read, Seek};
use zip::ZipArchive;

/// Most of an FB2 file we look at for its `<description>`.
pub const DESCRIPTION_CAP: usize = 8 << 20;
const END: &[u8] = b"</description>";

pub fn read(data: &[u8], md: &mut Metadata, warnings: &mut Vec<String>) {
    // Cut after </description> (ASCII in every encoding FB2 uses but UTF-16, which is rare).
    let head = &data[..data.len().min(DESCRIPTION_CAP)];
    let cut = head
        .windows(END.len())
        .position(|w| w == END)
        .map_or(head.len(), |i| i + END.len());
    let (root, w) = xml::parse(
        &head[..cut],
        xml::Options {
            stop_after: Some("description"),
        },
    );
    warnings.extend(
        w.into_iter()
            .filter(|w| !w.contains("before all elements were closed")),
    );
    let Some(root) = root else {
        warnings.push("FB2 is not XML".into());
        return;
    };
    let Some(desc) = root.child("description") else {
        warnings.push("FB2 without <description>".into());
        return;
    };
    read_description(desc, md, warnings);
}

/// `.fb2.zip`: the first `.fb2` entry (else the first entry).
pub fn read_zip<R: Read + Seek>(
    ar: &mut ZipArchive<R>,
    md: &mut Metadata,
    warnings: &mut Vec<String>,
) {
    let names = archive::names(ar);
    let pick = names
        .iter()
        .find(|n| n.to_ascii_lowercase().ends_with(".fb2"))
        .or(names.first());
    let Some(i) = pick.and_then(|n| archive::find(ar, n)) else {
        warnings.push("FB2.ZIP is empty".into());
        return;
    };
    let mut w = Vec::new();
    if let Some(data) = archive::read_until(ar, i, DESCRIPTION_CAP as u64, Some(END), &mut w) {
        read(&data, md, warnings);
    }
    warnings.extend(w.into_iter().filter(|w| !w.contains("truncated")));
}

fn person(a: &Element) -> Option<String> {
    let part = |n: &str| a.child(n).and_then(Element::text_opt);
    let name: Vec<String> = ["first-name", "middle-name", "last-name"]
        .iter()
        .filter_map(|n| part(n))
        .collect();
    if name.is_empty() {
        part("nickname")
    } else {
        Some(name.join(" "))
    }
}

fn read_description(desc: &Element, md: &mut Metadata, warnings: &mut Vec<String>) {
    if let Some(ti) = desc.child("title-info") {
        md.title = ti.child("book-title").and_then(Element::text_opt);
        md.authors = ti.children_named("author").filter_map(person).collect();
        md.languages = ti
            .child("lang")
            .and_then(Element::text_opt)
            .into_iter()
            .collect();
        if let Some(seq) = ti.child("sequence") {
            md.series = seq.attr("name").map(str::to_string);
            md.series_index = seq.attr("number").and_then(normalize::series_index);
        }
        md.tags = ti
            .children_named("genre")
            .filter_map(Element::text_opt)
            .collect();
        if let Some(k) = ti.child("keywords").and_then(Element::text_opt) {
            md.tags.extend(k.split([',', ';']).map(str::to_string));
        }
        md.description = ti.child("annotation").and_then(Element::text_opt);
        md.pubdate = ti
            .child("date")
            .and_then(|d| d.attr("value").map(str::to_string).or_else(|| d.text_opt()));
        if let Some(img) = ti.path(&["coverpage", "image"]) {
            md.cover = img
                .attr("href")
                .map(|h| h.trim_start_matches('#').to_string());
        }
    } else {
        warnings.push("FB2 without <title-info>".into());
    }
    if let Some(pi) = desc.child("publish-info") {
        if let Some(isbn) = pi.child("isbn").and_then(Element::text_opt) {
            ids::add(md, "isbn", &isbn, warnings);
        }
        md.publisher = pi.child("publisher").and_then(Element::text_opt);
        if let Some(y) = pi.child("year").and_then(Element::text_opt) {
            md.pubdate = Some(y);
        }
    }
    if let Some(id) = desc
        .path(&["document-info", "id"])
        .and_then(Element::text_opt)
    {
        if ids::is_uuid(&id) {
            ids::add(md, "uuid", &id, warnings);
        }
    }
}

/// The image a file's `<coverpage>` names, decoded from its `<binary>` (base64), as calibre
/// reads it (`_parse_cover`). `None` without a coverpage, a matching binary, or an image in it.
pub fn cover(data: &[u8]) -> Option<Vec<u8>> {
    let mut md = Metadata::default();
    read(data, &mut md, &mut Vec::new());
    let id = md.cover?;
    // Every encoding FB2 uses but UTF-16 keeps ASCII as it is: tags, ids and base64 are found
    // in the bytes.
    let mut at = 0;
    while let Some(i) = find(&data[at..], b"<binary") {
        let start = at + i;
        let open_end = start + find(&data[start..], b">")?;
        let tag = &data[start..open_end];
        at = open_end + 1;
        if attr(tag, b"id").is_some_and(|v| v == id.as_bytes()) {
            let close = at + find(&data[at..], b"</")?;
            let image = base64(&data[at..close])?;
            return super::cover::image_type(&image).map(|_| image);
        }
    }
    None
}

/// `.fb2.zip`: the cover of its first `.fb2` entry (read whole, up to the cover image cap).
pub fn read_zip_cover<R: Read + Seek>(ar: &mut ZipArchive<R>) -> Option<Vec<u8>> {
    let names = archive::names(ar);
    let name = names
        .iter()
        .find(|n| n.to_ascii_lowercase().ends_with(".fb2"))
        .or(names.first())?;
    let data = super::cover::read_entry(ar, name).ok()?;
    cover(&data)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An attribute's value in a start tag's bytes (`id="x"` or `id='x'`, not `xid=`).
fn attr<'a>(tag: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut at = 0;
    while let Some(i) = find(&tag[at..], name) {
        let p = at + i;
        at = p + name.len();
        if !tag
            .get(p.wrapping_sub(1))
            .is_some_and(u8::is_ascii_whitespace)
        {
            continue;
        }
        let rest = &tag[at..];
        let eq = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        if rest[eq] != b'=' {
            continue;
        }
        let q = eq
            + 1
            + rest[eq + 1..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())?;
        let quote = rest[q];
        if quote != b'"' && quote != b'\'' {
            continue;
        }
        let end = q + 1 + rest[q + 1..].iter().position(|b| *b == quote)?;
        return Some(&rest[q + 1..end]);
    }
    None
}

/// Standard base64, whitespace ignored; `None` on any other character.
fn base64(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FB2: &str = r##"<?xml version="1.0" encoding="utf-8"?><FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0" xmlns:l="http://www.w3.org/1999/xlink">
<description><title-info><genre>sf</genre><author><first-name>Arkady</first-name><last-name>Strugatsky</last-name></author>
<author><nickname>anon</nickname></author><book-title>Roadside Picnic</book-title><annotation><p>One.</p><p>Two.</p></annotation>
<date value="1972-01-01">1972</date><coverpage><image l:href="#cover.jpg"/></coverpage><lang>ru</lang><sequence name="Noon" number="3"/></title-info>
<publish-info><publisher>Macmillan</publisher><year>1977</year><isbn>978-0-306-40615-7</isbn></publish-info></description>
<body><section><p>text</p></section></body></FictionBook>"##;

    #[test]
    fn title_info() {
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(FB2.as_bytes(), &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Roadside Picnic"));
        assert_eq!(md.authors, vec!["Arkady Strugatsky", "anon"]);
        assert_eq!(md.languages, vec!["ru"]);
        assert_eq!(md.series.as_deref(), Some("Noon"));
        assert_eq!(md.series_index, Some(3.0));
        assert_eq!(md.tags, vec!["sf"]);
        assert_eq!(md.isbn.as_deref(), Some("9780306406157"));
        assert_eq!(md.publisher.as_deref(), Some("Macmillan"));
        assert_eq!(md.pubdate.as_deref(), Some("1977"));
        assert_eq!(md.cover.as_deref(), Some("cover.jpg"));
        assert_eq!(
            md.description.map(|d| normalize::text(&d)).as_deref(),
            Some("One. Two.")
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn windows_1251_and_zip() {
        let mut raw = b"<?xml version=\"1.0\" encoding=\"windows-1251\"?><FictionBook><description><title-info><book-title>".to_vec();
        raw.extend_from_slice(b"\xcf\xe8\xea\xed\xe8\xea");
        raw.extend_from_slice(b"</book-title></title-info></description><body/></FictionBook>");
        let z = crate::archive::tests::build(&[("book.fb2", &raw)]);
        let mut ar = archive::open(std::io::Cursor::new(z)).expect("zip");
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read_zip(&mut ar, &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Пикник"));
    }

    #[test]
    fn coverpage_binary() {
        // A GIF header, base64 with line breaks; another binary first, with an id that
        // contains the cover's.
        let gif = "R0lGODlh\n AQABAA==";
        let doc = FB2.replace(
            "</FictionBook>",
            &format!("<binary id=\"xcover.jpg\" content-type=\"image/jpeg\">AAAA</binary><binary content-type='image/gif' id='cover.jpg'>{gif}</binary></FictionBook>"),
        );
        assert_eq!(
            cover(doc.as_bytes()).as_deref(),
            Some(&b"GIF89a\x01\x00\x01\x00"[..])
        );
        // No binary of that id, or not an image: no cover.
        assert_eq!(cover(FB2.as_bytes()), None);
        let doc = FB2.replace(
            "</FictionBook>",
            "<binary id=\"cover.jpg\">AAAA</binary></FictionBook>",
        );
        assert_eq!(cover(doc.as_bytes()), None);
        assert_eq!(base64(b"TWFu\nTWE="), Some(b"ManMa".to_vec()));
        assert_eq!(base64(b"TW*u"), None);
    }
}
