//! Make the cover of each PDF given as the calibre target does (its first page rendered, then
//! encoded as JPEG at calibre's settings) and print the median, 90th percentile and slowest
//! time per PDF, the whole cover and the render alone: `pdf_cover_times FILE…`
//! (bench/calibre.sh). The files are read before the clock starts.

use bookferry_metadata::cover_pdf::{cover_jpeg, render_first_page};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let (mut cover, mut render) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for path in std::env::args().skip(1) {
        let data = Arc::new(std::fs::read(&path).expect("readable"));
        let t = Instant::now();
        if let Err(e) = render_first_page(Arc::clone(&data)) {
            failed += 1;
            eprintln!("{path}: {e}");
            continue;
        }
        render.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        if cover_jpeg(data).is_ok() {
            cover.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let at = |ms: &mut Vec<f64>, q: f64| {
        ms.sort_by(f64::total_cmp);
        ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{} PDF covers ({failed} failed): median {:.1} ms per PDF (render {:.1} ms), p90 {:.1} ms, max {:.1} ms",
        cover.len(),
        at(&mut cover, 0.5),
        at(&mut render, 0.5),
        at(&mut cover, 0.9),
        at(&mut cover, 1.0)
    );
}
