//! The cover image a file carries, found where calibre finds it (its metadata readers, which
//! `calibredb add` runs): a CBZ's first image in calibre's name order, an FB2's `<coverpage>`
//! binary, a MOBI/AZW3's EXTH 201 image record, a DOCX's first cover-shaped image, an EPUB's
//! OPF cover. The bytes come out as stored (JPEG, PNG, GIF, …); re-encoding and PDF rendering
//! are the caller's. Bounded: no image bigger than `MAX_IMAGE` is read.

use super::source::{FileSource, SliceSource};
use super::{archive, cbz, docx, epub, fb2, kind, mobi, Kind, Metadata};
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::Path;

/// The largest cover image read (a bigger one is refused, not truncated).
pub const MAX_IMAGE: u64 = 32 << 20;

/// Why a file's cover could not be read (a file without one is `Ok(None)`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CoverError {
    #[error("cannot read the file: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a readable ZIP container: {0}")]
    Container(String),
    #[error("MOBI: {0}")]
    Mobi(String),
    #[error("the cover image is larger than {MAX_IMAGE} bytes")]
    TooLarge,
    #[error("PDF cannot be rendered: {0}")]
    Pdf(String),
    #[error("the cover entry {0:?} is damaged")]
    Damaged(String),
}

/// The cover image of a file held in memory, `Ok(None)` when the format has none (or no
/// extractor: PDF is rendered by the caller).
pub fn embedded(format: &str, data: &[u8]) -> Result<Option<Vec<u8>>, CoverError> {
    match kind(format) {
        Kind::Mobi => mobi::cover(&mut SliceSource::new(data)).map_err(CoverError::Mobi),
        Kind::Fb2 => Ok(fb2::cover(data)),
        Kind::Epub | Kind::Cbz | Kind::Docx | Kind::Fb2Zip => {
            in_zip(kind(format), Cursor::new(data))
        }
        Kind::Pdf | Kind::Other => Ok(None),
    }
}

/// Like `embedded`, from the file at `path`: MOBI by range (header, record list, one image
/// record), FB2 read whole up to `WHOLE_FILE_LIMIT`, ZIP-based formats over their central
/// directory and one or two entries.
pub fn embedded_in_file(format: &str, path: &Path) -> Result<Option<Vec<u8>>, CoverError> {
    let k = kind(format);
    if matches!(k, Kind::Pdf | Kind::Other) {
        return Ok(None);
    }
    let file = File::open(path)?;
    match k {
        Kind::Mobi => {
            let size = file.metadata()?.len();
            mobi::cover(&mut FileSource::new(file, size)).map_err(CoverError::Mobi)
        }
        Kind::Fb2 => {
            let mut data = Vec::new();
            file.take(super::WHOLE_FILE_LIMIT).read_to_end(&mut data)?;
            Ok(fb2::cover(&data))
        }
        _ => in_zip(k, BufReader::with_capacity(64 << 10, file)),
    }
}

/// The cover of a ZIP-based format: the entry its metadata names (EPUB, CBZ, FB2.ZIP) or the
/// one calibre picks (DOCX).
fn in_zip<R: Read + Seek>(k: Kind, r: R) -> Result<Option<Vec<u8>>, CoverError> {
    let mut ar = archive::open(r).map_err(CoverError::Container)?;
    let mut md = Metadata::default();
    let mut w = Vec::new();
    let name = match k {
        Kind::Epub => {
            epub::read(&mut ar, &mut md, &mut w);
            md.cover
        }
        Kind::Cbz => cbz::cover_name(&archive::names(&ar)).cloned(),
        Kind::Docx => return Ok(docx::cover(&mut ar)),
        Kind::Fb2Zip => return Ok(fb2::read_zip_cover(&mut ar)),
        _ => None,
    };
    let Some(name) = name else { return Ok(None) };
    read_entry(&mut ar, &name).map(Some)
}

/// An entry read whole, refused when larger than `MAX_IMAGE` or damaged.
pub(crate) fn read_entry<R: Read + Seek>(
    ar: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Vec<u8>, CoverError> {
    let index = archive::find(ar, name).ok_or_else(|| CoverError::Damaged(name.into()))?;
    let mut w = Vec::new();
    // One byte past the cap: a longer entry comes back longer than the cap.
    let bytes = archive::read_capped(ar, index, MAX_IMAGE + 1, &mut w)
        .ok_or_else(|| CoverError::Damaged(name.into()))?;
    if bytes.len() as u64 > MAX_IMAGE {
        return Err(CoverError::TooLarge);
    }
    if !w.is_empty() {
        return Err(CoverError::Damaged(name.into()));
    }
    Ok(bytes)
}

/// An image's type, by its first bytes, among those calibre accepts as a cover.
pub fn image_type(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpeg")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("gif")
    } else if b.starts_with(b"BM") && b.len() > 26 {
        Some("bmp")
    } else if b.len() > 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

/// An image's width and height from its header (JPEG, PNG, GIF), without decoding it.
pub fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let be16 = |at: usize| {
        b.get(at..at + 2)
            .map(|s| u32::from(u16::from_be_bytes([s[0], s[1]])))
    };
    let le16 = |at: usize| {
        b.get(at..at + 2)
            .map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])))
    };
    let be32 = |at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    match image_type(b)? {
        "png" => Some((be32(16)?, be32(20)?)),
        "gif" => Some((le16(6)?, le16(8)?)),
        "jpeg" => {
            // Walk the segments to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
            let mut p = 2;
            while p + 4 <= b.len() {
                if b[p] != 0xff {
                    return None;
                }
                let marker = b[p + 1];
                if marker == 0xff {
                    p += 1;
                    continue;
                }
                let len = be16(p + 2)? as usize;
                if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
                    return Some((be16(p + 7)?, be16(p + 5)?));
                }
                p += 2 + len;
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A PNG header of the given size (enough for `dimensions`).
    pub fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0]);
        b
    }

    #[test]
    fn image_headers() {
        assert_eq!(dimensions(&png_header(600, 800)), Some((600, 800)));
        let gif = b"GIF89a\x58\x02\x20\x03rest";
        assert_eq!(dimensions(gif), Some((600, 800)));
        // SOI, an APP0 of 16 bytes, then SOF0: precision 8, height 800, width 600.
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0, 16];
        jpeg.extend_from_slice(&[0; 14]);
        jpeg.extend_from_slice(&[0xff, 0xc0, 0, 17, 8, 0x03, 0x20, 0x02, 0x58]);
        assert_eq!(dimensions(&jpeg), Some((600, 800)));
        assert_eq!(image_type(b"not an image"), None);
        assert_eq!(dimensions(b"\xff\xd8\xff\x00"), None);
    }
}
