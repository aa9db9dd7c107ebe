//! DOCX (Office Open XML): `docProps/core.xml` (title, creator, language, subject, keywords,
//! description) and `docProps/app.xml` (Company → publisher, as calibre writes it).

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
