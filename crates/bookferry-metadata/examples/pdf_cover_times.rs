//! Render the first page of each PDF given (as the calibre target does for its cover) and print
//! the median, 90th percentile and slowest render time: `pdf_cover_times FILE…` (bench/calibre.sh).

use bookferry_metadata::cover_pdf::render_first_page;
use std::time::Instant;

fn main() {
    let mut ms = Vec::new();
    let mut failed = 0;
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).expect("readable");
        let t = Instant::now();
        match render_first_page(data) {
            Ok(_) => ms.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => {
                failed += 1;
                eprintln!("{path}: {e}");
            }
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    println!(
        "{} PDFs rendered ({failed} failed): median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms.len(),
        at(0.5).unwrap_or(0.0),
        at(0.9).unwrap_or(0.0),
        at(1.0).unwrap_or(0.0)
    );
}
