//! A PDF's cover as calibre makes it: its first page rendered (calibre runs `pdftoppm -singlefile
//! -jpeg -cropbox`, 150 dpi), here with `hayro`, a pure-Rust rasterizer, in-process. Bounded in
//! memory: the page's pixel count is capped (a larger page is rendered at a smaller scale).
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
use hayro::{render, PixmapSettings, RenderCache, RenderSettings};

/// pdftoppm's default resolution, which calibre keeps.
const DPI: f32 = 150.0;
/// Most pixels a rendered page may have (a 150 dpi A3 page has 5.2 M).
const MAX_PIXELS: f32 = 6_000_000.0;

/// A rendered page: 8-bit RGB, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// The first page of the PDF in `data`, on white, at 150 dpi (less for a very large page).
pub fn render_first_page(data: Vec<u8>) -> Result<Rgb, CoverError> {
    let pdf = Pdf::new(data).map_err(|e| CoverError::Pdf(format!("{e:?}")))?;
    let page = pdf
        .pages()
        .first()
        .ok_or_else(|| CoverError::Pdf("no pages".into()))?;
    let (w, h) = page.render_dimensions();
    if !(w >= 1.0 && h >= 1.0) {
        return Err(CoverError::Pdf(format!("page size {w}×{h}")));
    }
    let fit = (MAX_PIXELS / (w * h)).sqrt() * 72.0;
    let limit = 65_535.0 / w.max(h) * 72.0;
    let scale = DPI.min(fit).min(limit) / 72.0;
    let settings = PixmapSettings {
        x_scale: scale,
        y_scale: scale,
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
    let (width, height) = (u32::from(pixmap.width()), u32::from(pixmap.height()));
    if width == 0 || height == 0 {
        return Err(CoverError::Pdf("empty page".into()));
    }
    // Opaque on a white background: premultiplied RGBA is RGBA.
    let pixels = pixmap
        .data_as_u8_slice()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Rgb {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_page_of_the_fixture() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/converted/sample.pdf"
        ))
        .expect("fixture");
        let page = render_first_page(data).expect("rendered");
        // pdftoppm's size for it at 150 dpi is 1275×1650 (Letter); the page is mostly white text.
        assert!(page.width.abs_diff(1275) <= 2, "{}", page.width);
        assert!(page.height.abs_diff(1650) <= 2, "{}", page.height);
        assert_eq!(page.pixels.len(), (page.width * page.height * 3) as usize);
        assert!(page.pixels.iter().any(|p| *p < 128), "nothing drawn");
    }

    #[test]
    fn broken_pdfs_are_errors() {
        assert!(render_first_page(b"%PDF-1.4\nnot really".to_vec()).is_err());
        assert!(render_first_page(Vec::new()).is_err());
    }
}
