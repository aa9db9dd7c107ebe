//! XMP metadata packets (as embedded in PDF): Dublin Core (`dc:title`, `dc:creator`,
//! `dc:description`, `dc:subject`, `dc:publisher`, `dc:language`, `dc:date`,
//! `dc:identifier`), `xmp:Identifier`, `prism:isbn`/`pdfx:isbn`, and calibre's
//! `calibre:series`/`calibreSI:series_index`, `calibre:rating`, `calibre:author_sort`.
//! Values found here override the PDF Info dictionary.

use super::xml::{self, Element};
use super::{ids, normalize, Metadata};

/// `rdf:li` items of a property (through rdf:Alt/Seq/Bag), or the property's own text.
/// For `rdf:Alt`, the `x-default` item comes first.
fn items(prop: &Element) -> Vec<String> {
    let lis = prop.descendants("li");
    if lis.is_empty() {
        return prop.text_opt().into_iter().collect();
    }
    let mut v: Vec<(bool, String)> = lis
        .iter()
        .filter_map(|li| {
            let text = li
                .child("value")
                .and_then(Element::text_opt)
                .or_else(|| li.text_opt())?;
            Some((li.attr("xml:lang") != Some("x-default"), text))
        })
        .collect();
    v.sort_by_key(|(not_default, _)| *not_default);
    v.into_iter().map(|(_, t)| t).collect()
}

/// True when the bytes look like an XMP packet (an encrypted or binary stream does not).
pub fn looks_like_xmp(b: &[u8]) -> bool {
    let head = &b[..b.len().min(4096)];
    [&b"<x:xmpmeta"[..], b"<rdf:RDF", b"<?xpacket", b"xmpmeta"]
        .iter()
        .any(|n| head.windows(n.len()).any(|w| w == *n))
}

pub fn read(packet: &[u8], md: &mut Metadata, warnings: &mut Vec<String>) {
    let (root, w) = xml::parse(packet, xml::Options::default());
    warnings.extend(w.into_iter().map(|w| format!("XMP: {w}")));
    let Some(root) = root else { return };
    let first = |name: &str, prefix: &str| -> Option<&Element> {
        root.descendants(name)
            .into_iter()
            .find(|e| e.name.starts_with(prefix))
    };
    let all = |name: &str, prefix: &str| -> Vec<String> {
        first(name, prefix).map(items).unwrap_or_default()
    };
    let one = |name: &str, prefix: &str| all(name, prefix).into_iter().next();

    if let Some(t) = one("title", "dc:") {
        md.title = Some(t);
    }
    let creators = all("creator", "dc:");
    if !creators.is_empty() {
        md.authors = creators;
    }
    if let Some(d) = one("description", "dc:") {
        md.description = Some(d);
    }
    let subjects = all("subject", "dc:");
    if !subjects.is_empty() {
        md.tags = subjects;
    }
    if let Some(p) = one("publisher", "dc:") {
        md.publisher = Some(p);
    }
    let langs = all("language", "dc:");
    if !langs.is_empty() {
        md.languages = langs;
    }
    if let Some(d) = one("date", "dc:") {
        md.pubdate = Some(d);
    }
    for id in all("identifier", "dc:") {
        ids::add_raw(md, None, &id, warnings);
    }
    if let Some(xid) = first("Identifier", "xmp:") {
        for li in xid.descendants("li") {
            let scheme = li.child("Scheme").and_then(Element::text_opt);
            let value = li
                .child("value")
                .and_then(Element::text_opt)
                .or_else(|| li.text_opt());
            if let Some(v) = value {
                ids::add_raw(md, scheme.as_deref(), &v, warnings);
            }
        }
    }
    // ISBN as an element or as an attribute shorthand on rdf:Description.
    let mut isbns: Vec<String> = ["prism:", "pdfx:"]
        .iter()
        .filter_map(|p| one("isbn", p))
        .collect();
    for d in root.descendants("Description") {
        isbns.extend(
            ["prism:isbn", "pdfx:isbn"]
                .iter()
                .filter_map(|a| d.attr(a).map(str::to_string)),
        );
    }
    for i in isbns {
        ids::add(md, "isbn", &i, warnings);
    }
    if let Some(s) = first("series", "calibre:") {
        let name = s.child("value").and_then(Element::text_opt).or_else(|| {
            // The element may also hold the name directly.
            s.children.iter().find_map(|n| match n {
                xml::Node::Text(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
                _ => None,
            })
        });
        if let Some(name) = name {
            md.series = Some(name);
            md.series_index = s
                .child("series_index")
                .and_then(Element::text_opt)
                .and_then(|i| normalize::series_index(&i))
                .or(Some(1.0));
        }
    }
    if let Some(r) = one("rating", "calibre:").and_then(|r| r.trim().parse::<f64>().ok()) {
        if r.is_finite() && (0.0..=10.0).contains(&r) {
            md.rating = Some(r);
        }
    }
    if let Some(a) = one("author_sort", "calibre:") {
        md.author_sort = Some(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibre_packet() {
        let p = br#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" rdf:about=""><dc:title><rdf:Alt><rdf:li xml:lang="fr">Le T</rdf:li><rdf:li xml:lang="x-default">T</rdf:li></rdf:Alt></dc:title>
<dc:creator><rdf:Seq><rdf:li>A</rdf:li><rdf:li>B</rdf:li></rdf:Seq></dc:creator><dc:language><rdf:Bag><rdf:li>en</rdf:li></rdf:Bag></dc:language></rdf:Description>
<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:xmpidq="http://ns.adobe.com/xmp/Identifier/qual/1.0/" rdf:about=""><xmp:Identifier><rdf:Bag>
<rdf:li rdf:parseType="Resource"><xmpidq:Scheme>goodreads</xmpidq:Scheme><rdf:value>42</rdf:value></rdf:li></rdf:Bag></xmp:Identifier></rdf:Description>
<rdf:Description xmlns:prism="p" rdf:about="" prism:isbn="978-0-306-40615-7"/>
<rdf:Description xmlns:calibre="c" xmlns:calibreSI="s" rdf:about=""><calibre:series rdf:parseType="Resource"><rdf:value>S</rdf:value><calibreSI:series_index>2.50</calibreSI:series_index></calibre:series></rdf:Description>
</rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#;
        assert!(looks_like_xmp(p));
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(p, &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("T"));
        assert_eq!(md.authors, vec!["A", "B"]);
        assert_eq!(md.languages, vec!["en"]);
        assert_eq!(
            md.identifiers.get("goodreads").map(String::as_str),
            Some("42")
        );
        assert_eq!(md.isbn.as_deref(), Some("9780306406157"));
        assert_eq!(md.series.as_deref(), Some("S"));
        assert_eq!(md.series_index, Some(2.5));
        assert!(w.is_empty(), "{w:?}");
    }
}
