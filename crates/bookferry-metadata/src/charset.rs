//! Bytes to text for the encodings ebook metadata comes in. Every encoding a label (XML
//! declaration, MOBI code page) or a BOM can name is decoded by encoding_rs; only
//! PDFDocEncoding, which encoding_rs does not know, is decoded here by hand. Lossy by design: a
//! bad byte becomes U+FFFD, never an error.

use encoding_rs::Encoding;
use std::borrow::Cow;

pub use encoding_rs::{UTF_16BE, UTF_16LE, UTF_8};

/// Labels older bookferry read that are not in the WHATWG list encoding_rs follows.
const EXTRA_LABELS: &[(&str, &Encoding)] = &[
    ("latin-1", encoding_rs::WINDOWS_1252),
    ("win-1251", encoding_rs::WINDOWS_1251),
    ("1252", encoding_rs::WINDOWS_1252),
];

/// The encoding a label names (`koi8-r`, `CP866`, `ISO-8859-5`, `windows-1251`, …: the WHATWG
/// labels, any case), None when it names none.
///
/// `iso-8859-1`, `latin1` and `us-ascii` name Windows-1252, as in WHATWG, and that is what we
/// want for metadata too: the two differ only in 0x80..=0x9F, which Latin-1 maps to C1 control
/// characters that no title or name contains, while files labelled Latin-1 that use those bytes
/// were written as Windows-1252 and mean its quotes, dashes and €. Read as Latin-1 they would
/// become invisible controls (and then spaces, after `normalize::text`).
///
/// ISO-2022-KR, ISO-2022-CN and HZ name encoding_rs's replacement encoding, which decodes
/// nothing (any input becomes one U+FFFD): callers refuse such text rather than guess.
pub fn for_label(label: &str) -> Option<&'static Encoding> {
    let label = label.trim();
    Encoding::for_label(label.as_bytes()).or_else(|| {
        EXTRA_LABELS
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(label))
            .map(|(_, e)| *e)
    })
}

/// The encoding a Windows code page number names (MOBI's text encoding field: 1252, 65001),
/// None when it names none we can decode.
pub fn for_code_page(code_page: u32) -> Option<&'static Encoding> {
    codepage::to_encoding_no_replacement(u16::try_from(code_page).ok()?)
}

/// `bytes` (with no BOM, or one to keep as text) in `encoding`. Borrows when `bytes` is valid
/// UTF-8 and the encoding is UTF-8.
pub fn decode<'a>(bytes: &'a [u8], encoding: &'static Encoding) -> Cow<'a, str> {
    encoding.decode_without_bom_handling(bytes).0
}

/// `bytes` in the encoding its BOM names (UTF-8, UTF-16BE, UTF-16LE), the BOM removed; None
/// when there is no BOM.
pub fn decode_bom(bytes: &[u8]) -> Option<Cow<'_, str>> {
    let (encoding, bom) = Encoding::for_bom(bytes)?;
    Some(decode(&bytes[bom..], encoding))
}

/// PDFDocEncoding 0x18..=0x1F and 0x80..=0x9F (0 = undefined); the rest is Latin-1.
const PDFDOC_LOW: [u16; 8] = [
    0x02D8, 0x02C7, 0x02C6, 0x02D9, 0x02DD, 0x02DB, 0x02DA, 0x02DC,
];
const PDFDOC_HIGH: [u16; 32] = [
    0x2022, 0x2020, 0x2021, 0x2026, 0x2014, 0x2013, 0x0192, 0x2044, 0x2039, 0x203A, 0x2212, 0x2030,
    0x201E, 0x201C, 0x201D, 0x2018, 0x2019, 0x201A, 0x2122, 0xFB01, 0xFB02, 0x0141, 0x0152, 0x0160,
    0x0178, 0x017D, 0x0131, 0x0142, 0x0153, 0x0161, 0x017E, 0,
];

fn from_u16(u: u16) -> char {
    if u == 0 {
        char::REPLACEMENT_CHARACTER
    } else {
        char::from_u32(u32::from(u)).unwrap_or(char::REPLACEMENT_CHARACTER)
    }
}

/// PDFDocEncoding (PDF 32000-1 annex D), the encoding of a PDF text string without a BOM.
pub fn pdfdoc(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x18..=0x1F => from_u16(PDFDOC_LOW[usize::from(b - 0x18)]),
            0x80..=0x9F => from_u16(PDFDOC_HIGH[usize::from(b - 0x80)]),
            0xA0 => '\u{20AC}',
            _ => char::from(b),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders() {
        let label = |l: &str| for_label(l).map(Encoding::name);
        assert_eq!(label(" KOI8-R "), Some("KOI8-R"));
        assert_eq!(label("cp866"), Some("IBM866"));
        assert_eq!(label("ISO-8859-1"), Some("windows-1252"));
        assert_eq!(label("Latin-1"), Some("windows-1252"));
        assert_eq!(label("win-1251"), Some("windows-1251"));
        assert_eq!(label("iso-2022-kr"), Some("replacement"));
        assert_eq!(label("no-such-encoding"), None);
        assert_eq!(for_code_page(65001), Some(UTF_8));
        assert_eq!(
            for_code_page(1252).map(Encoding::name),
            Some("windows-1252")
        );
        assert_eq!(for_code_page(50225), None); // ISO-2022-KR: replacement
        assert_eq!(for_code_page(70_000), None);
        assert_eq!(pdfdoc(b"a\x84b\xa0"), "a\u{2014}b€");
        assert_eq!(decode(&[0, 0x41, 0xD8], UTF_16BE), "A\u{FFFD}");
        assert_eq!(decode_bom(b"\xEF\xBB\xBF\xc3\xa9").as_deref(), Some("é"));
        assert_eq!(decode_bom(b"\xc3\xa9"), None);
    }
}
