//! A PDF's cover as calibre makes it: its first page rendered (calibre runs `pdftoppm -singlefile
//! -jpeg -cropbox`, 150 dpi, and keeps that JPEG unless it is larger than its maximum cover size,
//! 1650×2200, which it scales down to fit and re-encodes), here with `hayro`, a pure-Rust
//! rasterizer, in-process, and encoded as calibre keeps it (`jpeg`: libjpeg-turbo's bytes).
//! Bounded in memory: a page is rendered at the size of calibre's cover directly, never larger
//! than `MAX_COVER` (a hostile page of 200×200 inches is rendered at 1650×1650, not at 150
//! dpi's 30000×30000).
//!
//! Why hayro (measured on this 2-core machine, loaded): pure Rust with `forbid(unsafe_code)`,
//! MIT/Apache, in-process; a make-corpus PDF's first page in 1.4 ms median (30 ms the slowest
//! of 100), the converted fixture's in 25 ms, where a `pdftoppm` process (calibre's own tool,
//! which gives calibre's exact bytes) costs ~100 ms each, mostly starting up, and needs poppler
//! installed. Its cost: ~4 min of a clean release build of its own (about 90 crates, 2 cores)
//! and ~9 MB of binary (its embedded standard-14 fonts included, which PDFs that do not embed
//! Helvetica or Times need). pdfium and MuPDF bindings are C libraries behind unsafe FFI (and
//! MuPDF is AGPL): not taken.

use super::cover::CoverError;
use hayro::hayro_interpret::InterpreterSettings;
use hayro::hayro_syntax::Pdf;
use hayro::vello_cpu::color::palette::css::WHITE;
use hayro::vello_cpu::Pixmap;
use hayro::{render, PixmapSettings, RenderCache, RenderSettings};
use std::sync::Arc;

/// pdftoppm's default resolution, which calibre keeps.
const DPI: f64 = 150.0;
/// The largest cover calibre stores (its `maximum_cover_size` tweak, default 1650×2200): a
/// bigger image is scaled down to fit, keeping its aspect ratio. It bounds the render too: no
/// page is rendered with more pixels than this (3.6 M, 14.5 MB of RGBA), whatever its size.
pub const MAX_COVER: (u32, u32) = (1650, 2200);
/// The JPEG quality of pdftoppm's `-jpeg` (libjpeg's default), which calibre keeps as it is.
const PDFTOPPM_QUALITY: u8 = 75;
/// The JPEG quality calibre re-encodes a cover with when it scales it down (`save_cover_data_to`).
const CALIBRE_QUALITY: u8 = 90;

/// A rendered page: premultiplied RGBA on white (so opaque: RGB and 255), row by row.
pub struct Page {
    pixmap: Pixmap,
    /// calibre would have scaled pdftoppm's render down to fit `MAX_COVER` (and re-encoded it).
    pub scaled: bool,
}

impl Page {
    pub fn width(&self) -> u32 {
        u32::from(self.pixmap.width())
    }

    pub fn height(&self) -> u32 {
        u32::from(self.pixmap.height())
    }

    /// The pixels, 4 bytes each (R, G, B, 255).
    pub fn rgba(&self) -> &[u8] {
        self.pixmap.data_as_u8_slice()
    }
}

/// The size of calibre's cover of a page of `w`×`h` points: pdftoppm's at 150 dpi (rounded
/// up), then, when larger than `MAX_COVER`, calibre's `fit_image` of it; and whether calibre
/// scaled it.
pub fn cover_size(w: f64, h: f64) -> Option<(u32, u32, bool)> {
    // Computed as poppler does (points × dpi / 72) so that a Letter page is 1275×1650 exactly.
    let px = |pt: f64| (pt * DPI / 72.0).ceil();
    let (mut w, mut h) = (px(w), px(h));
    if !(w >= 1.0 && h >= 1.0 && w.is_finite() && h.is_finite()) {
        return None;
    }
    let (pw, ph) = (f64::from(MAX_COVER.0), f64::from(MAX_COVER.1));
    let scaled = w > pw || h > ph;
    // calibre.fit_image, step by step.
    if h > ph {
        (w, h) = ((ph / h * w).floor(), ph);
    }
    if w > pw {
        (w, h) = (pw, (pw / w * h).floor());
    }
    if h > ph {
        (w, h) = ((ph / h * w).floor(), ph);
    }
    if w < 1.0 || h < 1.0 {
        return None;
    }
    Some((w as u32, h as u32, scaled))
}

/// The first page of the PDF in `data`, on white, at calibre's cover size (`cover_size`:
/// 150 dpi, smaller for a page larger than `MAX_COVER` at 150 dpi). The bytes are shared, not
/// copied.
pub fn render_first_page(data: Arc<Vec<u8>>) -> Result<Page, CoverError> {
    let pdf = Pdf::new(data).map_err(|e| CoverError::Pdf(format!("{e:?}")))?;
    let page = pdf
        .pages()
        .first()
        .ok_or_else(|| CoverError::Pdf("no pages".into()))?;
    let (w, h) = page.render_dimensions();
    let (tw, th, scaled) = cover_size(f64::from(w), f64::from(h))
        .ok_or_else(|| CoverError::Pdf(format!("page size {w}×{h}")))?;
    // hayro sizes the pixmap as (points × scale) truncated: a quarter pixel more makes it the
    // size wanted exactly (a stretch of at most 0.25 px).
    let settings = PixmapSettings {
        x_scale: (tw as f32 + 0.25) / w,
        y_scale: (th as f32 + 0.25) / h,
        bg_color: WHITE,
    };
    let cache = RenderCache::new();
    let pixmap = render(
        page,
        &cache,
        &InterpreterSettings::default(),
        &RenderSettings::default(),
        &settings,
    );
    if pixmap.width() == 0 || pixmap.height() == 0 {
        return Err(CoverError::Pdf("empty page".into()));
    }
    Ok(Page { pixmap, scaled })
}

/// The cover calibre makes of the PDF in `data`, as JPEG: its first page rendered
/// (`render_first_page`) and encoded as calibre keeps it: pdftoppm's `-jpeg` (quality 75,
/// 4:2:0 chroma subsampling, baseline), or for a page calibre scaled down, its re-encoding
/// (quality 90, 4:2:0, as Qt's JPEG writer with libjpeg's defaults).
pub fn cover_jpeg(data: Arc<Vec<u8>>) -> Result<Vec<u8>, CoverError> {
    let page = render_first_page(data)?;
    let quality = if page.scaled {
        CALIBRE_QUALITY
    } else {
        PDFTOPPM_QUALITY
    };
    encode(&page, quality).map_err(|e| CoverError::Pdf(e.to_string()))
}

/// A page as a baseline JPEG of `quality`, 4:2:0 (libjpeg's default subsampling).
fn encode(page: &Page, quality: u8) -> Result<Vec<u8>, crate::jpeg::EncodeError> {
    let (w, h) = (page.width(), page.height());
    crate::jpeg::encode(page.rgba(), w, h, crate::jpeg::Pixels::Rgba, quality)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Arc<Vec<u8>> {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/converted/sample.pdf"
        ))
        .expect("fixture");
        Arc::new(data)
    }

    /// A one-page PDF of `w`×`h` points with a filled rectangle on it.
    fn one_page(w: f64, h: f64) -> Arc<Vec<u8>> {
        let content = format!(
            "0 0 1 rg {} {} {} {} re f\n",
            w / 4.0,
            h / 4.0,
            w / 2.0,
            h / 2.0
        );
        let objs = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
            format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents 4 0 R >>"),
            format!(
                "<< /Length {} >>\nstream\n{content}endstream",
                content.len()
            ),
        ];
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objs.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(b"xref\n0 5\n0000000000 65535 f \n");
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!("trailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").as_bytes(),
        );
        Arc::new(out)
    }

    #[test]
    fn first_page_of_the_fixture() {
        let page = render_first_page(fixture()).expect("rendered");
        // pdftoppm's size for it at 150 dpi is 1275×1650 (Letter); the page is mostly white text.
        assert_eq!(
            (page.width(), page.height(), page.scaled),
            (1275, 1650, false)
        );
        assert_eq!(
            page.rgba().len(),
            (page.width() * page.height() * 4) as usize
        );
        assert!(page.rgba().iter().any(|p| *p < 128), "nothing drawn");
    }

    #[test]
    fn sizes_are_calibres() {
        // pdftoppm rounds up (Letter, A4, A2 and the wide page checked with pdftoppm 22.12); calibre's fit_image
        // then brings anything larger than 1650×2200 within it.
        assert_eq!(cover_size(612.0, 792.0), Some((1275, 1650, false)));
        assert_eq!(cover_size(595.28, 841.89), Some((1241, 1754, false)));
        assert_eq!(cover_size(100.4, 50.2), Some((210, 105, false)));
        assert_eq!(cover_size(1190.55, 1683.78), Some((1555, 2200, true)));
        assert_eq!(cover_size(2000.0, 500.0), Some((1650, 412, true)));
        assert_eq!(cover_size(14400.0, 14400.0), Some((1650, 1650, true)));
        assert_eq!(cover_size(0.0, 792.0), None);
        assert_eq!(cover_size(f64::NAN, 792.0), None);
        assert_eq!(cover_size(14400.0, 0.1), None);
    }

    /// A page of 200×200 inches (900 M pixels at 150 dpi) is rendered at calibre's largest
    /// cover size directly: 1650×1650, 11 MB.
    #[test]
    fn a_huge_page_is_rendered_at_calibres_largest_size() {
        let page = render_first_page(one_page(14400.0, 14400.0)).expect("rendered");
        assert_eq!((page.width(), page.height()), (1650, 1650));
        assert!(page.scaled);
        // The rectangle is drawn to scale: blue in the middle, white at the corner.
        let at = |x: u32, y: u32| {
            let i = ((y * page.width() + x) * 4) as usize;
            page.rgba()[i..i + 3].to_vec()
        };
        assert_eq!(at(825, 825), [0, 0, 255]);
        assert_eq!(at(5, 5), [255, 255, 255]);
    }

    /// The JPEG's frame and tables: (width, height, sampling factors, the first 8 entries of
    /// the first quantization table).
    fn header(b: &[u8]) -> (u16, u16, Vec<u8>, Vec<u8>) {
        let be16 = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let (mut p, mut q, mut frame) = (2, Vec::new(), None);
        while b[p + 1] != 0xda {
            match b[p + 1] {
                0xdb if q.is_empty() => q = b[p + 5..p + 13].to_vec(),
                0xc0 => {
                    let s = (0..3).map(|i| b[p + 11 + 3 * i]).collect::<Vec<_>>();
                    frame = Some((be16(p + 7), be16(p + 5), s));
                }
                _ => {}
            }
            p += 2 + usize::from(be16(p + 2));
        }
        let (w, h, s) = frame.expect("a baseline frame");
        (w, h, s, q)
    }

    #[test]
    fn covers_are_encoded_as_calibre_keeps_them() {
        // pdftoppm -jpeg's cover of the fixture: baseline, 4:2:0, quality 75 (libjpeg's table
        // at 75 starts 8 6 6 7 6 5 8 7).
        let jpeg = cover_jpeg(fixture()).expect("encoded");
        let luma75 = vec![8, 6, 6, 7, 6, 5, 8, 7];
        assert_eq!(header(&jpeg), (1275, 1650, vec![0x22, 0x11, 0x11], luma75));
        // A page calibre scales down is re-encoded by it at quality 90 (table 3 2 2 3 2 2 3 3).
        let jpeg = cover_jpeg(one_page(1190.55, 1683.78)).expect("encoded");
        let luma90 = vec![3, 2, 2, 3, 2, 2, 3, 3];
        assert_eq!(header(&jpeg), (1555, 2200, vec![0x22, 0x11, 0x11], luma90));
    }

    #[test]
    fn broken_pdfs_are_errors() {
        assert!(render_first_page(Arc::new(b"%PDF-1.4\nnot really".to_vec())).is_err());
        assert!(render_first_page(Arc::new(Vec::new())).is_err());
    }
}
