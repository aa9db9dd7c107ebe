//! The cover a file brings to a new book, as calibre stores covers (`cover.jpg`, a JPEG): a
//! calibre source book's own cover, or an EPUB's cover image, re-encoded when it is a PNG.

use crate::calibre::COVER_FILE;
use crate::metadata::archive;
use crate::metadata::Origin;
use crate::target::Payload;
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::Path;

/// The cover a file brings, as JPEG bytes: a calibre source book's `cover.jpg`, or an EPUB's
/// cover image (converted to JPEG as calibre stores it), from the bytes in memory or else the
/// copy just `written` (in the page cache: the source is not read again). `None` when there is
/// none or it cannot be read.
pub(super) fn cover_of(p: &Payload, written: &Path) -> Option<Vec<u8>> {
    let md = p.metadata.as_ref()?;
    let cover = md.cover.as_deref()?;
    if p.origin == Some(Origin::Calibre) {
        let path = p.source_path.parent()?.join(COVER_FILE);
        return fs::read(path).ok();
    }
    if !p.format.eq_ignore_ascii_case("epub") {
        return None;
    }
    let image = match &p.data {
        Some(data) => read_zip_member(io::Cursor::new(&data[..]), cover),
        // Buffered: the zip reader's many small reads of the central directory and the entry's
        // header are a few syscalls instead of one each.
        None => read_zip_member(
            io::BufReader::with_capacity(64 << 10, File::open(written).ok()?),
            cover,
        ),
    }?;
    to_jpeg(&image)
}

/// An entry of a ZIP archive, `None` when it is missing, unreadable or bigger than a cover
/// may be.
fn read_zip_member<R: Read + Seek>(r: R, name: &str) -> Option<Vec<u8>> {
    const MAX_COVER: u64 = 32 << 20;
    let mut zip = archive::open(r).ok()?;
    let index = archive::find(&zip, name)?;
    let mut warnings = Vec::new();
    // One byte past the cap: a longer entry is truncated, and said so.
    let image = archive::read_capped(&mut zip, index, MAX_COVER + 1, &mut warnings)?;
    warnings.is_empty().then_some(image)
}

/// JPEG bytes of an image: a JPEG as it is, a PNG re-encoded.
fn to_jpeg(image: &[u8]) -> Option<Vec<u8>> {
    if image.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(image.to_vec());
    }
    let rgb = image::load_from_memory(image).ok()?.to_rgb8();
    let (width, height) = (
        u16::try_from(rgb.width()).ok()?,
        u16::try_from(rgb.height()).ok()?,
    );
    let mut out = Vec::new();
    // jpeg-encoder: SIMD, several times faster than `image`'s own encoder (covers were ~8% of
    // a copy run's CPU with it).
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(rgb.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_become_jpeg() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(6, 9, image::Rgb([200, 10, 10]))
            .write_to(&mut io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let jpeg = to_jpeg(&png).expect("converted");
        assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]));
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (6, 9));
        assert_eq!(to_jpeg(&jpeg).as_deref(), Some(jpeg.as_slice()));
        assert!(to_jpeg(b"not an image").is_none());
    }
}
