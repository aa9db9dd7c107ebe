//! DOCX (Office Open XML): `docProps/core.xml` (title, creator, language, subject, keywords,
//! description) and `docProps/app.xml` (Company → publisher, as calibre writes it). The
//! cover (`cover`) is calibre's: the first image of the document shaped like a cover.

use super::xml::{self, Element};
use super::{archive, Metadata};
use std::io::{Read, Seek};
use zip::ZipArchive;

pub fn read<R: Read + Seek>(ar: &mut ZipArchive<R>, md: &mut Metadata, warnings: &mut Vec<String>) {
    if let Some(bytes) = archive::read_named(ar, "docProps/core.xml", warnings) {
        let (root, w) = xml::parse(&bytes, xml::Options::default());
        warnings.extend(w);
        if let Some(core) = root {
            read_core(&core, md);
        }
    } else {
        warnings.push("DOCX without docProps/core.xml".into());
    }
    if let Some(bytes) = archive::read_named(ar, "docProps/app.xml", warnings) {
        let (root, w) = xml::parse(&bytes, xml::Options::default());
        warnings.extend(w);
        md.publisher = root.and_then(|r| r.child("Company").and_then(Element::text_opt));
    }
}

/// The document's cover as calibre picks it (`ebooks/metadata/docx.py`): in document order,
/// the first image of each drawing (`a:blip r:embed`, `v:imagedata r:id`) whose height/width
/// is within 0.8..=1.8 and whose area is at least 160,000 pixels. Not `docProps/thumbnail.*`:
/// calibre ignores it.
pub fn cover<R: Read + Seek>(ar: &mut ZipArchive<R>) -> Option<Vec<u8>> {
    let mut w = Vec::new();
    let doc = archive::read_named(ar, "word/document.xml", &mut w)?;
    let rels = archive::read_named(ar, "word/_rels/document.xml.rels", &mut w)?;
    let (rels, _) = xml::parse(&rels, xml::Options::default());
    let rels = rels?;
    let target = |id: &str| {
        rels.children_named("Relationship")
            .find(|r| r.attr("Id") == Some(id))
            .and_then(|r| r.attr("Target"))
            .map(|t| archive::resolve("word/document.xml", t))
    };
    for id in drawing_images(&doc) {
        let Some(path) = target(&id) else { continue };
        let Ok(image) = super::cover::read_entry(ar, &path) else {
            continue;
        };
        let Some((width, height)) = super::cover::dimensions(&image) else {
            continue;
        };
        let (w, h) = (f64::from(width), f64::from(height));
        if width > 0 && (0.8..=1.8).contains(&(h / w)) && w * h >= 160_000.0 {
            return Some(image);
        }
    }
    None
}

/// The relationship id of the first image inside each `w:drawing` / `w:pict`, in order.
fn drawing_images(doc: &[u8]) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(doc);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    // Depth inside the current drawing, and whether its image was taken.
    let mut inside: Option<(usize, bool)> = None;
    loop {
        let ev = match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) | Err(_) => break,
            Ok(ev) => ev,
        };
        let (start, empty) = match &ev {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(_) => {
                if let Some((depth, taken)) = inside {
                    inside = (depth > 0).then(|| (depth - 1, taken));
                }
                (None, false)
            }
            _ => (None, false),
        };
        let Some(e) = start else {
            buf.clear();
            continue;
        };
        let name = e.name();
        let name: &[u8] = name.as_ref().as_bytes();
        match &mut inside {
            None if (name == b"w:drawing" || name == b"w:pict") && !empty => {
                inside = Some((0, false));
            }
            Some((depth, taken)) => {
                let key: &[u8] = match name {
                    b"a:blip" => b"r:embed",
                    b"v:imagedata" => b"r:id",
                    _ => b"",
                };
                if !*taken && !key.is_empty() {
                    let id = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref().as_bytes() == key)
                        .map(|a| a.value.as_ref().to_string());
                    if let Some(id) = id {
                        out.push(id);
                        *taken = true;
                    }
                }
                if !empty {
                    *depth += 1;
                }
            }
            None => {}
        }
        buf.clear();
    }
    out
}

fn read_core(core: &Element, md: &mut Metadata) {
    let get = |n: &str| core.child(n).and_then(Element::text_opt);
    md.title = get("title");
    md.authors = get("creator").into_iter().collect();
    md.languages = get("language").into_iter().collect();
    md.description = get("description");
    // Keywords (and a subject line) are tags, comma or semicolon separated.
    for n in ["keywords", "subject"] {
        if let Some(k) = get(n) {
            md.tags.extend(k.split([',', ';']).map(str::to_string));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::build;
    use std::io::Cursor;

    #[test]
    fn cover_is_the_first_cover_shaped_image() {
        let png = crate::cover::tests::png_header;
        let doc = br#"<w:document><w:body>
<w:p><w:r><w:drawing><wp:inline><a:graphic><pic:pic><pic:blipFill><a:blip r:embed="rIdSmall"/></pic:blipFill></pic:pic></a:graphic></wp:inline></w:drawing></w:r></w:p>
<w:p><w:r><w:drawing><wp:inline><a:blip r:embed="rIdWide"/></wp:inline></w:drawing></w:r></w:p>
<w:p><w:r><w:pict><v:shape><v:imagedata r:id="rIdCover"/></v:shape></w:pict></w:r></w:p>
<w:p><w:r><w:drawing><a:blip r:embed="rIdLater"/></w:drawing></w:r></w:p>
</w:body></w:document>"#;
        let rels = br#"<Relationships><Relationship Id="rIdSmall" Target="media/small.png"/><Relationship Id="rIdWide" Target="media/wide.png"/><Relationship Id="rIdCover" Target="media/cover.png"/><Relationship Id="rIdLater" Target="/word/media/later.png"/></Relationships>"#;
        let (small, wide, cover_img, later) =
            (png(100, 150), png(1000, 500), png(600, 800), png(600, 800));
        let z = build(&[
            ("word/document.xml", doc),
            ("word/_rels/document.xml.rels", rels),
            ("word/media/small.png", &small),
            ("word/media/wide.png", &wide),
            ("word/media/cover.png", &cover_img),
            ("word/media/later.png", &later),
            ("docProps/thumbnail.jpeg", b"\xff\xd8\xff"),
        ]);
        let mut ar = archive::open(Cursor::new(z)).expect("zip");
        assert_eq!(cover(&mut ar), Some(cover_img));
        // A thumbnail alone is no cover (calibre does not read it).
        let z = build(&[
            ("word/document.xml", b"<w:document/>"),
            ("word/_rels/document.xml.rels", b"<Relationships/>"),
            ("docProps/thumbnail.jpeg", b"\xff\xd8\xff"),
        ]);
        let mut ar = archive::open(Cursor::new(z)).expect("zip");
        assert_eq!(cover(&mut ar), None);
    }

    #[test]
    fn core_and_app() {
        let core = br#"<cp:coreProperties xmlns:cp="x" xmlns:dc="y"><dc:title>Report</dc:title><dc:creator>A &amp; B</dc:creator><cp:keywords>k1, k2</cp:keywords><dc:language>en-GB</dc:language></cp:coreProperties>"#;
        let app = br#"<Properties><Company>ACME</Company></Properties>"#;
        let z = build(&[("docProps/core.xml", core), ("docProps/app.xml", app)]);
        let mut ar = archive::open(Cursor::new(z)).expect("zip");
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut ar, &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Report"));
        assert_eq!(md.authors, vec!["A & B"]);
        assert_eq!(md.tags, vec!["k1", " k2"]);
        assert_eq!(md.publisher.as_deref(), Some("ACME"));
        assert_eq!(md.languages, vec!["en-GB"]);
    }
}
