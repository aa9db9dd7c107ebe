//! MOBI / AZW / AZW3 (KF8) / PRC: the PalmDB header, record 0's MOBI header (full name,
//! locale, text encoding) and its EXTH records (title, authors, publisher, description, ISBN,
//! subjects, date, language, ASIN). Reads only the header and record 0, by range; the cover
//! (`cover`) reads one image record more.

use super::source::Source;
use super::{charset, ids, Metadata};

const PALMDB_HEADER: usize = 78;
/// Most of record 0 (MOBI header + EXTH) we read.
const RECORD0_CAP: usize = 1 << 20;
const MAX_EXTH_RECORDS: u32 = 10_000;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Windows primary language ids (the MOBI locale's low byte) → ISO 639-1.
fn locale_language(locale: u32) -> Option<&'static str> {
    Some(match locale & 0xFF {
        0x01 => "ar",
        0x02 => "bg",
        0x03 => "ca",
        0x04 => "zh",
        0x05 => "cs",
        0x06 => "da",
        0x07 => "de",
        0x08 => "el",
        0x09 => "en",
        0x0A => "es",
        0x0B => "fi",
        0x0C => "fr",
        0x0D => "he",
        0x0E => "hu",
        0x0F => "is",
        0x10 => "it",
        0x11 => "ja",
        0x12 => "ko",
        0x13 => "nl",
        0x14 => "no",
        0x15 => "pl",
        0x16 => "pt",
        0x18 => "ro",
        0x19 => "ru",
        0x1A => "hr",
        0x1B => "sk",
        0x1D => "sv",
        0x1F => "tr",
        0x22 => "uk",
        0x24 => "sl",
        0x25 => "et",
        0x26 => "lv",
        0x27 => "lt",
        0x2A => "vi",
        0x39 => "hi",
        _ => return None,
    })
}

/// Why a file's MOBI header could not be read (a warning on the row, never fatal).
#[derive(Debug, thiserror::Error)]
enum MobiError {
    #[error("read error: {0}")]
    Read(#[source] std::io::Error),
    #[error("file too short for a PalmDB header")]
    TooShort,
    #[error("not a MOBI/PalmDOC file (type {0:?})")]
    NotMobi(String),
    #[error("no records")]
    NoRecords,
    #[error("truncated record list")]
    TruncatedRecordList,
    #[error("record 0 has no MOBI header")]
    NoMobiHeader,
    #[error("truncated MOBI header")]
    TruncatedHeader,
}

pub fn read(src: &mut dyn Source, md: &mut Metadata, warnings: &mut Vec<String>) {
    if let Err(e) = read_inner(src, md, warnings) {
        warnings.push(format!("MOBI: {e}"));
    }
}

fn read_inner(
    src: &mut dyn Source,
    md: &mut Metadata,
    warnings: &mut Vec<String>,
) -> Result<(), MobiError> {
    let head = src.read_at(0, PALMDB_HEADER).map_err(MobiError::Read)?;
    if head.len() < PALMDB_HEADER {
        return Err(MobiError::TooShort);
    }
    let kind = &head[60..68];
    if kind != b"BOOKMOBI" && kind != b"TEXtREAd" {
        return Err(MobiError::NotMobi(
            String::from_utf8_lossy(kind).into_owned(),
        ));
    }
    let n = usize::from(be16(&head, 76).unwrap_or(0));
    if n == 0 {
        return Err(MobiError::NoRecords);
    }
    let list = src
        .read_at(PALMDB_HEADER as u64, 16)
        .map_err(MobiError::Read)?;
    let r0 = u64::from(be32(&list, 0).ok_or(MobiError::TruncatedRecordList)?);
    let r1 = if n > 1 {
        be32(&list, 8).map(u64::from)
    } else {
        None
    };
    let end = r1.filter(|e| *e > r0).unwrap_or(src.len()).min(src.len());
    let len = usize::try_from(end.saturating_sub(r0))
        .unwrap_or(RECORD0_CAP)
        .min(RECORD0_CAP);
    let rec = src.read_at(r0, len).map_err(MobiError::Read)?;
    if rec.get(16..20) != Some(b"MOBI".as_slice()) {
        if kind == b"BOOKMOBI" {
            return Err(MobiError::NoMobiHeader);
        }
        return Ok(()); // plain PalmDOC: no metadata
    }
    let header_len = be32(&rec, 20).ok_or(MobiError::TruncatedHeader)? as usize;
    // 1252 or 65001 (UTF-8) in practice; any other code page is honoured, and one we cannot
    // decode is read as UTF-8.
    let encoding = be32(&rec, 28)
        .and_then(charset::for_code_page)
        .unwrap_or(charset::UTF_8);
    let decode = |b: &[u8]| charset::decode(b, encoding).into_owned();
    if let (Some(off), Some(l)) = (be32(&rec, 84), be32(&rec, 88)) {
        let (off, l) = (off as usize, l as usize);
        if let Some(name) = rec.get(off..off.saturating_add(l)) {
            md.title = Some(decode(name));
        }
    }
    let locale_lang = be32(&rec, 92).and_then(locale_language);
    let exth_flags = be32(&rec, 128).unwrap_or(0);
    let exth_at = 16usize.saturating_add(header_len);
    if exth_flags & 0x40 != 0 && rec.get(exth_at..exth_at + 4) == Some(b"EXTH".as_slice()) {
        read_exth(&rec, exth_at, &decode, md, warnings);
    }
    if md.languages.is_empty() {
        md.languages.extend(locale_lang.map(str::to_string));
    }
    Ok(())
}

/// The cover image, as calibre finds it (`ebooks/metadata/mobi.py`): the record at the MOBI
/// header's first image index plus EXTH 201 (CoverOffset), else the first image record; `None`
/// when that record is not an image.
pub fn cover(src: &mut dyn Source) -> Result<Option<Vec<u8>>, String> {
    let e = |e: MobiError| e.to_string();
    let head = src
        .read_at(0, PALMDB_HEADER)
        .map_err(|x| e(MobiError::Read(x)))?;
    if head.len() < PALMDB_HEADER || &head[60..68] != b"BOOKMOBI" {
        return Ok(None);
    }
    let n = u32::from(be16(&head, 76).unwrap_or(0));
    let list = src
        .read_at(PALMDB_HEADER as u64, n as usize * 8)
        .map_err(|x| e(MobiError::Read(x)))?;
    let offset = |i: u32| be32(&list, i as usize * 8).map(u64::from);
    let record = |src: &mut dyn Source, i: u32, cap: u64| -> Result<Option<Vec<u8>>, String> {
        let (Some(start), true) = (offset(i), i < n) else {
            return Ok(None);
        };
        let end = offset(i + 1).unwrap_or(src.len()).min(src.len());
        let len = end.saturating_sub(start);
        if len > cap {
            return Err(format!("record {i} is larger than {cap} bytes"));
        }
        let data = src
            .read_at(start, len as usize)
            .map_err(|x| e(MobiError::Read(x)))?;
        Ok(Some(data))
    };
    let Some(rec) = record(src, 0, RECORD0_CAP as u64)? else {
        return Ok(None);
    };
    if rec.get(16..20) != Some(b"MOBI".as_slice()) {
        return Ok(None);
    }
    let Some(first_image) = be32(&rec, 0x6c) else {
        return Ok(None);
    };
    let header_len = be32(&rec, 20).unwrap_or(0) as usize;
    let exth_at = 16usize.saturating_add(header_len);
    let mut cover_offset = None;
    if be32(&rec, 128).unwrap_or(0) & 0x40 != 0 && rec.get(exth_at..exth_at + 4) == Some(b"EXTH") {
        let count = be32(&rec, exth_at + 8).unwrap_or(0).min(MAX_EXTH_RECORDS);
        let mut p = exth_at + 12;
        for _ in 0..count {
            let (Some(kind), Some(len)) = (be32(&rec, p), be32(&rec, p + 4)) else {
                break;
            };
            if kind == 201 {
                // calibre ignores a NULL (0xffffffff) offset.
                cover_offset = be32(&rec, p + 8).filter(|o| *o != u32::MAX);
            }
            if len < 8 {
                break;
            }
            p = p.saturating_add(len as usize);
        }
    }
    let index = first_image.saturating_add(cover_offset.unwrap_or(0));
    let image = record(src, index, super::cover::MAX_IMAGE)?;
    Ok(image.filter(|i| super::cover::image_type(i).is_some()))
}

fn read_exth(
    rec: &[u8],
    at: usize,
    decode: &dyn Fn(&[u8]) -> String,
    md: &mut Metadata,
    warnings: &mut Vec<String>,
) {
    let count = be32(rec, at + 8).unwrap_or(0).min(MAX_EXTH_RECORDS);
    let mut p = at + 12;
    let mut title = None;
    for i in 0..count {
        let (Some(kind), Some(len)) = (be32(rec, p), be32(rec, p + 4)) else {
            warnings.push(format!(
                "MOBI: EXTH record {i} of {count} is cut off; the rest is ignored"
            ));
            break;
        };
        let len = len as usize;
        if len < 8 {
            warnings.push(format!(
                "MOBI: EXTH record {i} has a bad length ({len}); the rest is ignored"
            ));
            break;
        }
        let Some(data) = rec.get(p + 8..p.saturating_add(len)) else {
            warnings.push(format!("MOBI: EXTH record {i} has a bad length ({len}: past the end of record 0); the rest is ignored"));
            break;
        };
        p += len;
        let v = decode(data);
        match kind {
            100 => md.authors.push(v),
            101 => md.publisher = Some(v),
            103 => md.description = Some(v),
            104 => ids::add(md, "isbn", &v, warnings),
            105 => md.tags.push(v),
            106 => md.pubdate = Some(v),
            112 => {
                if let Some(u) = v.strip_prefix("calibre:").filter(|u| ids::is_uuid(u)) {
                    ids::add(md, "uuid", u, warnings);
                }
            }
            113 | 504 => {
                if ids::is_uuid(&v) {
                    ids::add(md, "uuid", &v, warnings);
                } else {
                    ids::add(md, "mobi-asin", &v, warnings);
                }
            }
            503 => title = Some(v),
            524 => md.languages.push(v),
            _ => {}
        }
    }
    if title.is_some() {
        md.title = title;
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::source::SliceSource;

    /// A minimal BOOKMOBI file with the given EXTH records, in UTF-8.
    pub fn build(full_name: &str, exth: &[(u32, &str)]) -> Vec<u8> {
        let exth: Vec<(u32, &[u8])> = exth.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        build_encoded(65001, full_name.as_bytes(), &exth)
    }

    /// A minimal BOOKMOBI file whose MOBI header names `code_page` as its text encoding.
    fn build_encoded(code_page: u32, full_name: &[u8], exth: &[(u32, &[u8])]) -> Vec<u8> {
        let mut ex = Vec::new();
        for (k, v) in exth {
            ex.extend_from_slice(&k.to_be_bytes());
            ex.extend_from_slice(&(v.len() as u32 + 8).to_be_bytes());
            ex.extend_from_slice(v);
        }
        let mut exth_block = b"EXTH".to_vec();
        exth_block.extend_from_slice(&(ex.len() as u32 + 12).to_be_bytes());
        exth_block.extend_from_slice(&(exth.len() as u32).to_be_bytes());
        exth_block.extend_from_slice(&ex);
        let header_len = 232u32;
        let mut rec = vec![0u8; 16 + header_len as usize];
        rec[16..20].copy_from_slice(b"MOBI");
        rec[20..24].copy_from_slice(&header_len.to_be_bytes());
        rec[28..32].copy_from_slice(&code_page.to_be_bytes());
        rec[92..96].copy_from_slice(&0x0Cu32.to_be_bytes());
        rec[128..132].copy_from_slice(&0x40u32.to_be_bytes());
        rec.extend_from_slice(&exth_block);
        let name_off = rec.len() as u32;
        rec[84..88].copy_from_slice(&name_off.to_be_bytes());
        rec[88..92].copy_from_slice(&(full_name.len() as u32).to_be_bytes());
        rec.extend_from_slice(full_name);
        let mut f = vec![0u8; 78];
        f[60..68].copy_from_slice(b"BOOKMOBI");
        f[76..78].copy_from_slice(&2u16.to_be_bytes());
        let r0 = 78 + 16 + 2;
        f.extend_from_slice(&(r0 as u32).to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&((r0 + rec.len()) as u32).to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&rec);
        f.extend_from_slice(b"text record");
        f
    }

    #[test]
    fn cover_is_the_exth_cover_record() {
        // ebook-convert's MOBI and AZW3 of one book: EXTH 201 (cover) = 0 and 202 (thumbnail)
        // = 1. The cover is the first image record: in the MOBI a 674-byte JPEG (the thumbnail
        // after it has 694), in the AZW3 a 180-byte PNG (its thumbnail is a JPEG) — 60×90 both,
        // as `ebook-meta --get-cover` gives them.
        for (name, kind, len) in [("sample.mobi", "jpeg", 674), ("sample.azw3", "png", 180)] {
            let path = format!(
                "{}/../../tests/data/converted/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let data = std::fs::read(path).expect("fixture");
            let image = cover(&mut SliceSource::new(&data))
                .expect("readable")
                .expect("a cover");
            assert_eq!(crate::cover::image_type(&image), Some(kind), "{name}");
            assert_eq!(crate::cover::dimensions(&image), Some((60, 90)), "{name}");
            assert_eq!(image.len(), len, "{name}");
        }
        // A file without image records has no cover.
        let plain = build("No images", &[(100, "A")]);
        assert_eq!(cover(&mut SliceSource::new(&plain)), Ok(None));
    }

    #[test]
    fn exth_records() {
        let f = build(
            "Full Name",
            &[
                (503, "Real Title"),
                (100, "A One"),
                (100, "B Two"),
                (101, "Pub"),
                (104, "9780306406157"),
                (105, "t1"),
                (106, "2001-02-03"),
                (113, "B000FC0SIM"),
            ],
        );
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut SliceSource::new(&f), &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Real Title"));
        assert_eq!(md.authors, vec!["A One", "B Two"]);
        assert_eq!(md.isbn.as_deref(), Some("9780306406157"));
        assert_eq!(
            md.identifiers.get("mobi-asin").map(String::as_str),
            Some("B000FC0SIM")
        );
        assert_eq!(md.languages, vec!["fr"]); // from the locale
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn code_pages() {
        // Windows-1252 (the other encoding MOBI names) and another Windows code page.
        let f = build_encoded(1252, b"Caf\xe9 \x93x\x94", &[(100, b"M\xfcller")]);
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut SliceSource::new(&f), &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Café \u{201C}x\u{201D}"));
        assert_eq!(md.authors, vec!["Müller"]);
        let f = build_encoded(
            1251,
            b"\xcf\xe8\xea\xed\xe8\xea",
            &[(100, b"\xc1\xf3\xed\xe8\xed")],
        );
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut SliceSource::new(&f), &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Пикник"));
        assert_eq!(md.authors, vec!["Бунин"]);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn broken_headers_are_typed_errors() {
        let err = |f: &[u8]| {
            read_inner(
                &mut SliceSource::new(f),
                &mut Metadata::default(),
                &mut Vec::new(),
            )
        };
        assert!(matches!(err(b"junk"), Err(MobiError::TooShort)));
        let good = build("x", &[]);
        let mut f = good.clone();
        f[60..68].copy_from_slice(b"BOOKPDF!");
        assert!(matches!(err(&f), Err(MobiError::NotMobi(t)) if t == "BOOKPDF!"));
        let mut f = good.clone();
        f[76..78].copy_from_slice(&[0, 0]);
        assert!(matches!(err(&f), Err(MobiError::NoRecords)));
        let mut f = good.clone();
        f[96 + 16..96 + 20].copy_from_slice(b"JUNK"); // record 0 starts at 96
        assert!(matches!(err(&f), Err(MobiError::NoMobiHeader)));
        // What the row's warning says.
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        f[60..68].copy_from_slice(b"BOOKPDF!");
        read(&mut SliceSource::new(&f), &mut md, &mut w);
        assert_eq!(
            w,
            vec![r#"MOBI: not a MOBI/PalmDOC file (type "BOOKPDF!")"#]
        );
    }

    #[test]
    fn full_name_when_no_503_and_garbage_is_an_error() {
        let f = build("Full Name", &[]);
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut SliceSource::new(&f), &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Full Name"));
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut SliceSource::new(b"junk"), &mut md, &mut w);
        assert_eq!(w.len(), 1);
    }
}
