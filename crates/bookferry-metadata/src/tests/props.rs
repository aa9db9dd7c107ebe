//! Property tests: arbitrary bytes and mutated valid files (bytes flipped, inserted, or the
//! file truncated) never panic in any extractor and return quickly.

use crate::archive::tests::build as zip;
use crate::{extract, mobi, pdf, Origin};
use proptest::prelude::*;
use std::time::{Duration, Instant};

const FORMATS: &[&str] = &[
    "epub", "pdf", "mobi", "azw3", "fb2", "fb2.zip", "cbz", "docx", "txt",
];
/// Generous for debug builds on a slow machine; a hang would blow far past it.
const LIMIT: Duration = Duration::from_secs(5);

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let opf = br#"<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:opf="http://www.idpf.org/2007/opf"><dc:title>T</dc:title><dc:creator opf:role="aut">A B</dc:creator><dc:identifier opf:scheme="ISBN">9780306406157</dc:identifier><meta name="calibre:series" content="S"/><meta name="cover" content="c"/></metadata><manifest><item id="c" href="c.png" media-type="image/png"/></manifest></package>"#;
    let container = br#"<container><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#;
    let fb2 = br#"<?xml version="1.0" encoding="utf-8"?><FictionBook><description><title-info><genre>sf</genre><author><first-name>A</first-name><last-name>B</last-name></author><book-title>T</book-title><lang>en</lang><sequence name="S" number="2"/></title-info><publish-info><isbn>9780306406157</isbn></publish-info></description><body><p>x</p></body></FictionBook>"#;
    let ci = br#"<ComicInfo><Title>T</Title><Series>S</Series><Number>1</Number><Writer>A, B</Writer></ComicInfo>"#;
    vec![
        ("epub", zip(&[("mimetype", b"application/epub+zip"), ("META-INF/container.xml", container), ("OEBPS/content.opf", opf), ("OEBPS/c.png", b"png")])),
        ("pdf", pdf::tests::build(b"/Title (T) /Author (A B)", Some("<x:xmpmeta><rdf:RDF><rdf:Description><dc:title>T</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>"), 100)),
        ("mobi", mobi::tests::build("T", &[(503, "T"), (100, "A B"), (104, "9780306406157")])),
        ("fb2", fb2.to_vec()),
        ("fb2.zip", zip(&[("b.fb2", fb2)])),
        ("cbz", zip(&[("ComicInfo.xml", ci), ("001.jpg", b"jpg")])),
        ("docx", zip(&[("docProps/core.xml", b"<cp:coreProperties><dc:title>T</dc:title></cp:coreProperties>")])),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), 1..64usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    if data.is_empty() {
        return;
    }
    let len = data.len();
    match m {
        Mutation::Flip(i, x) => data[i % len] ^= x,
        Mutation::Insert(i, b) => {
            let at = i % (len + 1);
            data.splice(at..at, b.iter().copied());
        }
        Mutation::Truncate(i) => data.truncate(i % len),
        Mutation::Remove(i, n) => {
            let at = i % len;
            data.drain(at..(at + n).min(len));
        }
    }
}

/// 256 cases per property unless `PROPTEST_CASES` says otherwise (for a long local fuzz).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn timed(format: &str, data: &[u8]) {
    let t = Instant::now();
    let e = extract(format, data, "Author/Title.x");
    assert!(t.elapsed() < LIMIT, "{format}: took {:?}", t.elapsed());
    // Whatever happened, there is a title (embedded or from the file name).
    assert!(e.metadata.title.is_some());
    if e.origin == Origin::Filename {
        assert_eq!(e.metadata.title.as_deref(), Some("Title"));
    }
}

#[test]
fn samples_are_valid() {
    for (format, data) in samples() {
        let e = extract(format, &data, "x/y.z");
        assert_eq!(
            e.metadata.title.as_deref(),
            Some("T"),
            "{format}: {:?}",
            e.warnings
        );
        assert_eq!(e.origin, Origin::Embedded, "{format}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048), f in 0..FORMATS.len()) {
        timed(FORMATS[f], &data);
    }

    #[test]
    fn arbitrary_bytes_with_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..1024), f in 0..4usize) {
        let magic: &[u8] = [&b"%PDF-1.7\n"[..], b"PK\x03\x04", b"<?xml version=\"1.0\"?><FictionBook><description>", b"BOOKMOBI"][f];
        let mut data = magic.to_vec();
        if f == 3 {
            // BOOKMOBI sits at offset 60 of a PalmDB header.
            data = vec![0u8; 60];
            data.extend_from_slice(magic);
        }
        data.extend_from_slice(&tail);
        for format in ["pdf", "epub", "cbz", "fb2", "mobi"] {
            timed(format, &data);
        }
    }

    #[test]
    fn mutated_valid_files_never_panic(s in 0..7usize, muts in prop::collection::vec(mutation(), 1..6)) {
        let samples = samples();
        let (format, mut data) = samples[s % samples.len()].clone();
        for m in &muts {
            apply(&mut data, m);
        }
        timed(format, &data);
    }
}
