//! The `metadata.opf` calibre keeps beside each book's files (its metadata backup, read by
//! "Restore database"), in calibre's own OPF 2 layout (`opf2.metadata_to_opf`): the same
//! elements, order, attributes and indentation calibre 6.13 writes.

/// What goes into one book's `metadata.opf`; every value as stored in `metadata.db`.
#[derive(Debug, Clone, Default)]
pub struct OpfBook {
    pub book_id: i64,
    pub uuid: String,
    pub title: String,
    pub title_sort: String,
    pub authors: Vec<String>,
    pub author_sort: String,
    /// calibre's ISO form, `1940-05-03T00:00:00+00:00` (calibre writes its "undefined" date
    /// `0101-01-01T00:00:00+00:00` too).
    pub pubdate: String,
    pub timestamp: String,
    pub description: Option<String>,
    pub publisher: Option<String>,
    /// (type, value), type lowercase as stored.
    pub identifiers: Vec<(String, String)>,
    /// ISO 639-2/3 codes as stored; when empty calibre writes its interface language (`en`).
    pub languages: Vec<String>,
    pub tags: Vec<String>,
    pub series: Option<String>,
    pub series_index: f64,
    /// calibre's 0–10 rating.
    pub rating: Option<i64>,
}

/// The calibre version calibre writes as the book producer.
pub const PRODUCER: &str = "calibre (6.13.0) [https://calibre-ebook.com]";

fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            // Characters XML 1.0 cannot hold are dropped, as calibre's clean_xml_chars does.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n') => {}
            '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// calibre's `fmt_sidx`: `7` for 7.0, `1.5` for 1.5, `2.25` for 2.25.
pub fn format_series_index(i: f64) -> String {
    if i.fract() == 0.0 && i.abs() < 1e15 {
        return format!("{}", i as i64);
    }
    let s = format!("{i:.2}");
    s.strip_suffix('0').map(str::to_string).unwrap_or(s)
}

/// Python's `json.dumps({author: "" …}, ensure_ascii=False)`.
fn author_link_map(authors: &[String]) -> String {
    let items: Vec<String> = authors
        .iter()
        .map(|a| {
            let key = serde_json::to_string(a).unwrap_or_else(|_| "\"\"".into());
            format!("{key}: \"\"")
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// The OPF document calibre would write for `b` as the book's `metadata.opf` in its library.
pub fn render(b: &OpfBook) -> String {
    document(b, &b.book_id.to_string(), Some(crate::calibre::COVER_FILE))
}

/// The OPF calibre's "save to disk" writes beside a saved book (`<name>.opf`): the same
/// metadata, `calibre_id` naming the book (its library id, or for a book of no library a uuid,
/// as calibre gives one), and the guide naming the cover saved beside it (`<name>.jpg`), or
/// empty (`<guide/>`) when none was. Its dates are to the second, as calibre saves them.
pub fn render_saved(b: &OpfBook, calibre_id: &str, cover: Option<&str>) -> String {
    let saved = OpfBook {
        pubdate: to_the_second(&b.pubdate),
        timestamp: to_the_second(&b.timestamp),
        ..b.clone()
    };
    document(&saved, calibre_id, cover)
}

/// `2026-11-28T22:10:32.292116+00:00` → `2026-11-28T22:10:32+00:00`.
fn to_the_second(date: &str) -> String {
    match date.split_once('.') {
        Some((whole, rest)) => {
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{whole}{zone}")
        }
        None => date.to_string(),
    }
}

/// calibre's `metadata_to_opf` of `b`, its calibre id and its cover file.
fn document(b: &OpfBook, calibre_id: &str, cover: Option<&str>) -> String {
    let mut m = String::new();
    let mut el = |tag: &str, attrs: &[(&str, &str)], text: Option<&str>| {
        m.push_str("        <");
        m.push_str(tag);
        for (k, v) in attrs {
            m.push_str(&format!(" {k}=\"{}\"", escape(v, true)));
        }
        match text.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => m.push_str(&format!(">{}</{tag}>\n", escape(t, false))),
            None => m.push_str("/>\n"),
        }
    };
    el(
        "dc:identifier",
        &[("opf:scheme", "calibre"), ("id", "calibre_id")],
        Some(calibre_id),
    );
    el(
        "dc:identifier",
        &[("opf:scheme", "uuid"), ("id", "uuid_id")],
        Some(&b.uuid),
    );
    el("dc:title", &[], Some(&b.title));
    for a in &b.authors {
        let mut attrs = Vec::new();
        if !b.author_sort.is_empty() {
            attrs.push(("opf:file-as", b.author_sort.as_str()));
        }
        attrs.push(("opf:role", "aut"));
        el("dc:creator", &attrs, Some(a));
    }
    el(
        "dc:contributor",
        &[("opf:file-as", "calibre"), ("opf:role", "bkp")],
        Some(PRODUCER),
    );
    el("dc:date", &[], Some(&b.pubdate));
    if let Some(d) = b.description.as_deref().filter(|d| !d.trim().is_empty()) {
        el("dc:description", &[], Some(d));
    }
    if let Some(p) = b.publisher.as_deref().filter(|p| !p.is_empty()) {
        el("dc:publisher", &[], Some(p));
    }
    for (typ, val) in &b.identifiers {
        let scheme = typ.to_uppercase();
        el(
            "dc:identifier",
            &[("opf:scheme", scheme.as_str())],
            Some(val),
        );
    }
    if b.languages.is_empty() {
        el("dc:language", &[], Some("en"));
    }
    for l in &b.languages {
        el("dc:language", &[], Some(l));
    }
    for t in &b.tags {
        el("dc:subject", &[], Some(t));
    }
    let mut meta = |name: &str, content: &str| {
        el(
            "meta",
            &[("name", &format!("calibre:{name}")), ("content", content)],
            None,
        )
    };
    meta("author_link_map", &author_link_map(&b.authors));
    if let Some(s) = b.series.as_deref() {
        meta("series", s);
        meta("series_index", &format_series_index(b.series_index));
    }
    if let Some(r) = b.rating {
        meta("rating", &r.to_string());
    }
    meta("timestamp", &b.timestamp);
    meta("title_sort", &b.title_sort);
    let body = m.trim_end_matches('\n');
    let guide = match cover {
        Some(href) => format!(
            "<guide>\n        <reference type=\"cover\" title=\"Cover\" href=\"{}\"/>\n    </guide>",
            escape(href, true)
        ),
        None => "<guide/>".to_string(),
    };
    format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <package xmlns=\"http://www.idpf.org/2007/opf\" unique-identifier=\"uuid_id\" version=\"2.0\">\n    \
         <metadata xmlns:dc=\"http://purl.org/dc/elements/1.1/\" xmlns:opf=\"http://www.idpf.org/2007/opf\">\n\
         {body}\n    \
         </metadata>\n    \
         {guide}\n\
         </package>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture library's book 1.
    fn book_1() -> OpfBook {
        OpfBook {
            book_id: 1,
            uuid: "f1a50026-eb58-43e0-ac12-247f8b70b887".into(),
            title: "Empire Silence Paper 3".into(),
            title_sort: "Empire Silence Paper 3".into(),
            authors: vec!["Tomás Murakami".into(), "Olga Okorafor".into()],
            author_sort: "Murakami, Tomás & Okorafor, Olga".into(),
            pubdate: "1940-05-03T00:00:00+00:00".into(),
            timestamp: "2026-11-28T22:10:32.292116+00:00".into(),
            description: Some("rs signal salt signal atlas signal ember labyrinth signal comet night letters atlas comet river empire harbor paper gard".into()),
            publisher: Some("Suhrkamp".into()),
            identifiers: vec![("isbn".into(), "9788475465797".into())],
            languages: vec!["fra".into()],
            tags: vec!["winter".into(), "letters".into()],
            series: Some("Garden Cycle".into()),
            series_index: 7.0,
            rating: None,
        }
    }

    /// The fixture library's book 1, as calibre 6.13 wrote it.
    #[test]
    fn renders_like_calibre() {
        let b = book_1();
        let want = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/calibre-library/Tomas Murakami/Empire Silence Paper 3 (1)/metadata.opf"
        ))
        .expect("fixture opf");
        assert_eq!(render(&b), want);
    }

    /// The same book as `calibredb export` (calibre's "save to disk") wrote it beside the
    /// book, with its cover (`tests/data/sidecars/with-cover.opf`) and with
    /// `--dont-save-cover` (`without-cover.opf`).
    #[test]
    fn renders_saved_like_calibres_save_to_disk() {
        let fixture = |name: &str| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sidecars/");
            std::fs::read_to_string(format!("{dir}{name}")).expect("fixture opf")
        };
        let cover = "Empire Silence Paper 3 - Tomas Murakami & Olga Okorafor.jpg";
        assert_eq!(
            render_saved(&book_1(), "1", Some(cover)),
            fixture("with-cover.opf")
        );
        assert_eq!(
            render_saved(&book_1(), "1", None),
            fixture("without-cover.opf")
        );
        assert_eq!(
            to_the_second("1940-05-03T00:00:00+00:00"),
            "1940-05-03T00:00:00+00:00"
        );
    }

    #[test]
    fn series_index_like_calibre() {
        assert_eq!(format_series_index(7.0), "7");
        assert_eq!(format_series_index(1.5), "1.5");
        assert_eq!(format_series_index(2.25), "2.25");
    }
}
