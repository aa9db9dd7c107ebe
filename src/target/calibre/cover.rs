//! The cover a file brings to a new book, as calibre stores covers (`cover.jpg`, a JPEG): a
//! calibre source book's own cover, else the one `calibredb add` would make from the file (the
//! metadata crate's `cover`: EPUB, CBZ, FB2, MOBI/AZW3, DOCX images, re-encoded to JPEG unless
//! one; a PDF's first page rendered and encoded as pdftoppm does, `cover_pdf`). Bounded: a PDF
//! is rendered on a thread of its own and waited for `RENDER_TIMEOUT` at most, only when it is
//! `MAX_PDF` or smaller, and never larger than calibre's largest cover (1650×2200 pixels).

use crate::calibre::COVER_FILE;
use crate::metadata::cover::{self as embedded, CoverError};
use crate::metadata::cover_pdf;
use crate::metadata::jpeg;
use crate::metadata::Origin;
use crate::target::Payload;
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Longest wait for a PDF's first page (a page that takes longer gets no cover).
const RENDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest PDF rendered: it is read whole into memory.
const MAX_PDF: u64 = 256 << 20;

/// Why a file that should have a cover gets none (a warning naming the file, never a failure).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoCover {
    #[error(transparent)]
    Extract(#[from] CoverError),
    #[error("cannot read the file: {0}")]
    Read(#[from] std::io::Error),
    #[error("PDF larger than {} MiB is not rendered", MAX_PDF >> 20)]
    PdfTooLarge,
    #[error("the first page was not rendered within {} s", RENDER_TIMEOUT.as_secs())]
    Timeout,
    #[error("the renderer stopped: {0}")]
    Panicked(String),
    #[error("the image cannot be decoded or re-encoded as JPEG")]
    Encode,
}

/// The cover a file brings, as JPEG bytes: a calibre source book's `cover.jpg`, or the one
/// calibre makes from the file, read from the bytes in memory or else the copy just `written`
/// (in the page cache: the source is not read again). `Ok(None)` when the file has none.
pub(crate) fn cover_of(p: &Payload, written: &Path) -> Result<Option<Vec<u8>>, NoCover> {
    if p.origin == Some(Origin::Calibre) {
        if p.metadata
            .as_ref()
            .and_then(|m| m.cover.as_deref())
            .is_none()
        {
            return Ok(None);
        }
        let path = p.source_path.parent().map(|d| d.join(COVER_FILE));
        return Ok(path.and_then(|path| fs::read(path).ok()));
    }
    if p.format.eq_ignore_ascii_case("pdf") {
        // The bytes in memory are shared with the renderer, not copied.
        let data = match &p.data {
            Some(data) => Arc::clone(data),
            None => Arc::new(read_capped(written, MAX_PDF)?),
        };
        return render_pdf(data).map(Some);
    }
    let image = match &p.data {
        Some(data) => embedded::embedded(&p.format, data)?,
        None => embedded::embedded_in_file(&p.format, written)?,
    };
    image
        .map(|i| to_jpeg(&i).ok_or(NoCover::Encode))
        .transpose()
}

/// A file read whole, refused when larger than `cap`.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, NoCover> {
    let mut data = Vec::new();
    File::open(path)?.take(cap + 1).read_to_end(&mut data)?;
    if data.len() as u64 > cap {
        return Err(NoCover::PdfTooLarge);
    }
    Ok(data)
}

/// A PDF's cover as calibre makes it (its first page as JPEG), rendered and encoded on a thread
/// of its own: one that takes longer than `RENDER_TIMEOUT` is given up (the thread ends on its
/// own when the render does; the page it renders is at most `cover_pdf::MAX_COVER` pixels).
fn render_pdf(data: Arc<Vec<u8>>) -> Result<Vec<u8>, NoCover> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("pdf-cover".into())
        .spawn(move || {
            let page = std::panic::catch_unwind(move || cover_pdf::cover_jpeg(data));
            let _ = tx.send(page);
        })?;
    match rx.recv_timeout(RENDER_TIMEOUT) {
        Ok(Ok(jpeg)) => Ok(jpeg?),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(NoCover::Panicked(what))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(NoCover::Timeout),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(NoCover::Panicked(String::new())),
    }
}

/// JPEG bytes of an image: a JPEG as it is, a PNG re-encoded.
fn to_jpeg(image: &[u8]) -> Option<Vec<u8>> {
    if image.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(image.to_vec());
    }
    let rgb = image::load_from_memory(image).ok()?.to_rgb8();
    encode_rgb(rgb.as_raw(), rgb.width(), rgb.height())
}

/// 8-bit RGB pixels as a JPEG of quality 90, 4:2:0 (calibre's `save_cover_data_to`, through
/// Qt's JPEG writer with libjpeg's defaults; a PDF's page is encoded as pdftoppm does instead:
/// `cover_pdf::cover_jpeg`).
fn encode_rgb(pixels: &[u8], width: u32, height: u32) -> Option<Vec<u8>> {
    jpeg::encode(pixels, width, height, jpeg::Pixels::Rgb, 90).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_become_jpeg() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(6, 9, image::Rgb([200, 10, 10]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let jpeg = to_jpeg(&png).expect("converted");
        assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]));
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (6, 9));
        assert_eq!(to_jpeg(&jpeg).as_deref(), Some(jpeg.as_slice()));
        assert!(to_jpeg(b"not an image").is_none());
    }
}
