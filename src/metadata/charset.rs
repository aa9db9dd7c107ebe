//! Byte-to-text decoders for the legacy encodings ebook metadata comes in: UTF-16 (BE/LE),
//! Windows-1252, Windows-1251, Latin-1 and PDFDocEncoding. Lossy by design: a bad byte becomes
//! U+FFFD, never an error.

/// Windows-1252 0x80..=0x9F (0 = undefined).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
    0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
];

/// Windows-1251 0x80..=0xBF (0xC0..=0xFF map to U+0410..=U+044F).
const CP1251_HIGH: [u16; 64] = [
    0x0402, 0x0403, 0x201A, 0x0453, 0x201E, 0x2026, 0x2020, 0x2021, 0x20AC, 0x2030, 0x0409, 0x2039,
    0x040A, 0x040C, 0x040B, 0x040F, 0x0452, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0, 0x2122, 0x0459, 0x203A, 0x045A, 0x045C, 0x045B, 0x045F, 0x00A0, 0x040E, 0x045E, 0x0408,
    0x00A4, 0x0490, 0x00A6, 0x00A7, 0x0401, 0x00A9, 0x0404, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x0407,
    0x00B0, 0x00B1, 0x0406, 0x0456, 0x0491, 0x00B5, 0x00B6, 0x00B7, 0x0451, 0x2116, 0x0454, 0x00BB,
    0x0458, 0x0405, 0x0455, 0x0457,
];

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

pub fn cp1252(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9F => from_u16(CP1252_HIGH[usize::from(b - 0x80)]),
            _ => char::from(b),
        })
        .collect()
}

pub fn cp1251(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0xBF => from_u16(CP1251_HIGH[usize::from(b - 0x80)]),
            0xC0..=0xFF => from_u16(0x0410 + u16::from(b - 0xC0)),
            _ => char::from(b),
        })
        .collect()
}

pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

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

pub fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Decode by a declared encoding label (XML `encoding=`, MOBI code page); unknown → UTF-8 lossy.
pub fn decode_labelled(bytes: &[u8], label: &str) -> String {
    match label.trim().to_ascii_lowercase().as_str() {
        "windows-1251" | "cp1251" | "win-1251" => cp1251(bytes),
        "windows-1252" | "cp1252" | "1252" => cp1252(bytes),
        "iso-8859-1" | "latin1" | "latin-1" | "iso8859-1" => latin1(bytes),
        "utf-16" | "utf-16le" => utf16(bytes, false),
        "utf-16be" => utf16(bytes, true),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders() {
        assert_eq!(cp1252(b"caf\xe9 \x80"), "café €");
        assert_eq!(cp1251(b"\xcf\xf3\xf8\xea\xe8\xed"), "Пушкин");
        assert_eq!(pdfdoc(b"a\x84b"), "a\u{2014}b");
        assert_eq!(utf16(&[0, 0x41, 0xD8], true), "A");
        assert_eq!(decode_labelled(b"\xc3\xa9", "UTF-8"), "é");
    }
}
