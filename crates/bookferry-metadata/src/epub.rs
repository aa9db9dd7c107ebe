//! EPUB 2 and 3 (and Kobo KEPUB): `META-INF/container.xml` → the OPF package document →
//! Dublin Core metadata, calibre's `calibre:*` metas, EPUB 3 `refines` (role, file-as,
//! identifier-type, collections) and the cover image's path inside the container.

use super::xml::{self, Element};
use super::{archive, ids, Metadata};
use std::collections::HashMap;
use std::io::{Read, Seek};
use zip::ZipArchive;

/// Read the metadata of an EPUB opened as a ZIP archive.
pub fn read<R: Read + Seek>(ar: &mut ZipArchive<R>, md: &mut Metadata, warnings: &mut Vec<String>) {
    let Some(opf_path) = opf_path(ar, warnings) else {
        warnings.push("EPUB without a package document (OPF)".into());
        return;
    };
    let Some(bytes) = archive::read_named(ar, &opf_path, warnings) else {
        warnings.push(format!("EPUB package document {opf_path} missing"));
        return;
    };
    let (root, w) = xml::parse(&bytes, xml::Options::default());
    warnings.extend(w);
    let Some(package) = root else {
        warnings.push("EPUB package document is not XML".into());
        return;
    };
    read_package(&package, &opf_path, md, warnings);
    // Only report a cover that is really in the container.
    if let Some(c) = md.cover.take() {
        if let Some(i) = archive::find(ar, &c) {
            md.cover = archive::name(ar, i);
        } else {
            warnings.push(format!("EPUB cover {c} not in the container"));
        }
    }
}

fn opf_path<R: Read + Seek>(ar: &mut ZipArchive<R>, warnings: &mut Vec<String>) -> Option<String> {
    if let Some(bytes) = archive::read_named(ar, "META-INF/container.xml", warnings) {
        let (root, w) = xml::parse(&bytes, xml::Options::default());
        warnings.extend(w);
        let rootfiles = root.map(|r| {
            r.descendants("rootfile")
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        });
        let rootfiles = rootfiles.unwrap_or_default();
        let pick = rootfiles
            .iter()
            .find(|r| r.attr("media-type") == Some("application/oebps-package+xml"))
            .or_else(|| rootfiles.first())
            .and_then(|r| r.attr("full-path"));
        if let Some(p) = pick {
            return Some(p.to_string());
        }
        warnings.push("EPUB container.xml names no rootfile".into());
    } else {
        warnings.push("EPUB without META-INF/container.xml".into());
    }
    // Fall back to the first .opf in the archive.
    archive::names(ar)
        .into_iter()
        .find(|n| n.to_ascii_lowercase().ends_with(".opf"))
}

/// One `<meta refines="#id" property=… scheme=…>value</meta>`.
struct Refine {
    property: String,
    scheme: Option<String>,
    value: String,
}

/// The `refines` metas of an OPF, by the id they refine.
struct Refines(HashMap<String, Vec<Refine>>);

impl Refines {
    fn read(metas: &[&Element]) -> Refines {
        let mut refines: HashMap<String, Vec<Refine>> = HashMap::new();
        for m in metas {
            if let (Some(target), Some(property)) = (m.attr("refines"), m.attr("property")) {
                refines
                    .entry(target.trim_start_matches('#').to_string())
                    .or_default()
                    .push(Refine {
                        property: property.to_string(),
                        scheme: m.attr("scheme").map(str::to_string),
                        value: m.text().trim().to_string(),
                    });
            }
        }
        Refines(refines)
    }

    /// The refinement `prop` of element `e` (found by its `id`).
    fn of(&self, e: &Element, prop: &str) -> Option<&Refine> {
        let id = e.attr("id")?;
        self.0.get(id)?.iter().find(|r| r.property == prop)
    }
}

/// Fill `md` from a parsed OPF `package` element. `opf_path` resolves relative hrefs.
pub fn read_package(
    package: &Element,
    opf_path: &str,
    md: &mut Metadata,
    warnings: &mut Vec<String>,
) {
    let Some(meta) = package
        .child("metadata")
        .or_else(|| package.descendant("metadata"))
    else {
        warnings.push("OPF without <metadata>".into());
        return;
    };
    let metas = meta.descendants("meta");
    let refines = Refines::read(&metas);

    // Title: the one refined as title-type main, else the first.
    let titles = meta.descendants("title");
    let main = titles.iter().find(|t| {
        refines
            .of(t, "title-type")
            .is_some_and(|r| r.value == "main")
    });
    md.title = main.or(titles.first()).and_then(|t| t.text_opt());
    read_authors(meta, &refines, md);
    md.languages = meta
        .descendants("language")
        .iter()
        .filter_map(|l| l.text_opt())
        .collect();
    md.publisher = meta.descendant("publisher").and_then(Element::text_opt);
    md.description = meta.descendant("description").and_then(Element::text_opt);
    md.tags = meta
        .descendants("subject")
        .iter()
        .filter_map(|s| s.text_opt())
        .collect();
    let dates = meta.descendants("date");
    let publication = dates.iter().find(|d| {
        d.attr("event")
            .is_none_or(|e| e.eq_ignore_ascii_case("publication"))
    });
    md.pubdate = publication.or(dates.first()).and_then(|d| d.text_opt());
    read_identifiers(meta, &refines, md, warnings);

    // calibre metas (EPUB 2 `name`/`content`, also written by calibre into EPUB 3).
    let named = |n: &str| -> Option<&str> {
        metas
            .iter()
            .find(|m| m.attr("name") == Some(n))
            .and_then(|m| m.attr("content"))
    };
    read_series(&metas, &refines, &named, md);
    if let Some(r) = named("calibre:rating").and_then(|r| r.trim().parse::<f64>().ok()) {
        if r.is_finite() && (0.0..=10.0).contains(&r) {
            md.rating = Some(r);
        }
    }
    md.cover = cover_href(package, named("cover")).map(|h| archive::resolve(opf_path, h));
}

/// Authors: creators with role aut (attribute or refines) or no role at all; their `file-as`
/// values make the author sort.
fn read_authors(meta: &Element, refines: &Refines, md: &mut Metadata) {
    let mut sorts = Vec::new();
    for c in meta.descendants("creator") {
        let role = c
            .attr("role")
            .map(str::to_string)
            .or_else(|| refines.of(c, "role").map(|r| r.value.clone()));
        if role
            .as_deref()
            .is_some_and(|r| !r.eq_ignore_ascii_case("aut"))
        {
            continue;
        }
        let Some(name) = c.text_opt() else { continue };
        md.authors.push(name);
        if let Some(fa) = c
            .attr("file-as")
            .map(str::to_string)
            .or_else(|| refines.of(c, "file-as").map(|r| r.value.clone()))
        {
            sorts.push(fa);
        }
    }
    if !sorts.is_empty() {
        md.author_sort = Some(sorts.join(" & "));
    }
}

/// Identifiers, with their scheme from the attribute or an ONIX codelist 5 refinement.
fn read_identifiers(
    meta: &Element,
    refines: &Refines,
    md: &mut Metadata,
    warnings: &mut Vec<String>,
) {
    for i in meta.descendants("identifier") {
        let Some(value) = i.text_opt() else { continue };
        let scheme = i.attr("scheme").map(str::to_string).or_else(|| {
            refines.of(i, "identifier-type").and_then(|r| {
                match (r.scheme.as_deref(), r.value.as_str()) {
                    (Some(s), "02" | "15") if s.contains("codelist5") => Some("isbn".to_string()),
                    (Some(s), "22") if s.contains("codelist5") => Some("uri".to_string()),
                    (Some(s), _) if s.contains("codelist5") => None,
                    (_, v) => Some(v.to_string()),
                }
            })
        });
        ids::add_raw(md, scheme.as_deref(), &value, warnings);
    }
}

/// The series: calibre's metas, else an EPUB 3 collection of type series (or of no type).
fn read_series<'a>(
    metas: &[&'a Element],
    refines: &Refines,
    named: &dyn Fn(&str) -> Option<&'a str>,
    md: &mut Metadata,
) {
    if let Some(s) = named("calibre:series") {
        md.series = Some(s.to_string());
        md.series_index = named("calibre:series_index")
            .and_then(super::normalize::series_index)
            .or(Some(1.0));
        return;
    }
    // EPUB 3 collections: belongs-to-collection, refined by collection-type/group-position.
    for m in metas.iter().filter(|m| {
        m.attr("property") == Some("belongs-to-collection") && m.attr("refines").is_none()
    }) {
        let ctype = refines.of(m, "collection-type").map(|r| r.value.as_str());
        if ctype.is_some_and(|t| t != "series") {
            continue;
        }
        md.series = m.text_opt();
        md.series_index = refines
            .of(m, "group-position")
            .and_then(|r| super::normalize::series_index(&r.value));
        if md.series.is_some() {
            break;
        }
    }
}

/// The cover's href: the manifest item with the EPUB 3 `cover-image` property, else the item
/// the `cover` meta names (by id, else as an href itself).
fn cover_href<'a>(package: &'a Element, cover_meta: Option<&'a str>) -> Option<&'a str> {
    let items: Vec<&Element> = package
        .child("manifest")
        .map(|m| m.children_named("item").collect())
        .unwrap_or_default();
    let by_props = items.iter().find(|i| {
        i.attr("properties")
            .is_some_and(|p| p.split_whitespace().any(|p| p == "cover-image"))
    });
    let by_meta = cover_meta.and_then(|id| {
        items
            .iter()
            .find(|i| i.attr("id") == Some(id))
            .and_then(|i| i.attr("href"))
            .or(Some(id))
    });
    by_props.and_then(|i| i.attr("href")).or(by_meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::build;
    use std::io::Cursor;

    const CONTAINER: &[u8] = br#"<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OPS/book.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#;

    fn epub(opf: &str) -> (Metadata, Vec<String>) {
        let z = build(&[
            ("mimetype", b"application/epub+zip"),
            ("META-INF/container.xml", CONTAINER),
            ("OPS/book.opf", opf.as_bytes()),
            ("OPS/images/cover.jpg", b"\xff\xd8"),
        ]);
        let mut ar = archive::open(Cursor::new(z)).expect("zip");
        let mut md = Metadata::default();
        let mut w = Vec::new();
        read(&mut ar, &mut md, &mut w);
        (md, w)
    }

    #[test]
    fn epub2_calibre_style() {
        let (md, w) = epub(
            r#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="uuid_id">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf">
<dc:title>Dune</dc:title><dc:creator opf:role="aut" opf:file-as="Herbert, Frank">Frank Herbert</dc:creator>
<dc:creator opf:role="edt">Some Editor</dc:creator>
<dc:identifier opf:scheme="calibre" id="calibre_id">1234</dc:identifier>
<dc:identifier opf:scheme="uuid" id="uuid_id">49f9b5f5-c188-46cb-91c9-0b8fb3e29f11</dc:identifier>
<dc:identifier opf:scheme="ISBN">978-0-306-40615-7</dc:identifier>
<dc:date opf:event="modification">2020-01-01</dc:date><dc:date>1965-08-01T00:00:00+00:00</dc:date>
<dc:language>eng</dc:language><dc:publisher>Chilton</dc:publisher><dc:description>Spice.</dc:description>
<dc:subject>SF</dc:subject><dc:subject>Classic</dc:subject>
<meta name="calibre:series" content="Dune Chronicles"/><meta name="calibre:series_index" content="1.0"/>
<meta name="calibre:rating" content="8"/><meta name="cover" content="cov"/></metadata>
<manifest><item id="cov" href="images/cover.jpg" media-type="image/jpeg"/></manifest></package>"#,
        );
        assert_eq!(md.title.as_deref(), Some("Dune"));
        assert_eq!(md.authors, vec!["Frank Herbert"]);
        assert_eq!(md.author_sort.as_deref(), Some("Herbert, Frank"));
        assert_eq!(
            md.identifiers.get("calibre").map(String::as_str),
            Some("1234")
        );
        assert_eq!(
            md.uuid.as_deref(),
            Some("49f9b5f5-c188-46cb-91c9-0b8fb3e29f11")
        );
        assert_eq!(md.isbn.as_deref(), Some("9780306406157"));
        assert_eq!(md.pubdate.as_deref(), Some("1965-08-01T00:00:00+00:00"));
        assert_eq!(md.languages, vec!["eng"]);
        assert_eq!(md.series.as_deref(), Some("Dune Chronicles"));
        assert_eq!(md.series_index, Some(1.0));
        assert_eq!(md.rating, Some(8.0));
        assert_eq!(md.tags, vec!["SF", "Classic"]);
        assert_eq!(md.cover.as_deref(), Some("OPS/images/cover.jpg"));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn epub3_refines_and_collections() {
        let (md, _) = epub(
            r##"<package xmlns="http://www.idpf.org/2007/opf" version="3.0">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:title id="t2">Sub</dc:title><dc:title id="t1">Main Title</dc:title>
<meta refines="#t1" property="title-type">main</meta>
<dc:creator id="c1">Ursula K. Le Guin</dc:creator><meta refines="#c1" property="role" scheme="marc:relators">aut</meta>
<meta refines="#c1" property="file-as">Le Guin, Ursula K.</meta>
<dc:creator id="c2">An Illustrator</dc:creator><meta refines="#c2" property="role" scheme="marc:relators">ill</meta>
<dc:identifier id="pub-id">urn:uuid:49f9b5f5-c188-46cb-91c9-0b8fb3e29f11</dc:identifier>
<dc:identifier id="i2">9780306406157</dc:identifier><meta refines="#i2" property="identifier-type" scheme="onix:codelist5">15</meta>
<dc:identifier>calibre:77</dc:identifier>
<meta property="belongs-to-collection" id="s">Earthsea</meta>
<meta refines="#s" property="collection-type">series</meta><meta refines="#s" property="group-position">3</meta>
</metadata><manifest><item id="x" href="images/cover.jpg" properties="cover-image" media-type="image/jpeg"/></manifest></package>"##,
        );
        assert_eq!(md.title.as_deref(), Some("Main Title"));
        assert_eq!(md.authors, vec!["Ursula K. Le Guin"]);
        assert_eq!(md.author_sort.as_deref(), Some("Le Guin, Ursula K."));
        assert_eq!(md.isbn.as_deref(), Some("9780306406157"));
        assert_eq!(
            md.identifiers.get("calibre").map(String::as_str),
            Some("77")
        );
        assert_eq!(
            md.uuid.as_deref(),
            Some("49f9b5f5-c188-46cb-91c9-0b8fb3e29f11")
        );
        assert_eq!(md.series.as_deref(), Some("Earthsea"));
        assert_eq!(md.series_index, Some(3.0));
        assert_eq!(md.cover.as_deref(), Some("OPS/images/cover.jpg"));
    }

    #[test]
    fn missing_container_falls_back_to_any_opf() {
        let z = build(&[(
            "x/content.opf",
            br#"<package><metadata><dc:title>T</dc:title></metadata></package>"#,
        )]);
        let mut ar = archive::open(Cursor::new(z)).expect("zip");
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut ar, &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("T"));
        assert!(!w.is_empty());
    }
}
