//! Metadata extraction speed: files/s per format on a generated corpus (parsed from memory, as
//! the pipeline does for files that fit the one-read buffer), and bytes read per file when
//! extracting from disk — large PDFs must be range-read, never read whole.
//!
//! `cargo bench --bench metadata`; `BENCH_MD_FILES` (default 500) sets the corpus size.
//! Prints figures only; it asserts nothing about time.

use bookferry::metadata::{extract, extract_from_file, Origin};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn corpus(dir: &Path, files: usize, seed: u64, avg_kib: u64) -> Vec<(String, String)> {
    let lib = dir.join("lib");
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make-corpus.py"))
        .arg(&lib)
        .args(["--files", &files.to_string(), "--seed", &seed.to_string()])
        .args(["--avg-kib", &avg_kib.to_string()])
        .status()
        .expect("python3 runs tools/make-corpus.py");
    assert!(status.success());
    let manifest = std::fs::read_to_string(dir.join("lib.manifest.jsonl")).unwrap();
    manifest
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v["format"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[derive(Default)]
struct Row {
    files: u64,
    bytes: u64,
    read: u64,
    secs: f64,
    embedded: u64,
}

fn main() {
    let files: usize = std::env::var("BENCH_MD_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let tmp = tempfile::tempdir().unwrap();

    // 1. Parse from memory (the buffer the hash stage read), per format.
    let small = tmp.path().join("small");
    let entries = corpus(&small, files, 7, 256);
    let mut by_format: BTreeMap<String, Row> = BTreeMap::new();
    for (rel, fmt) in &entries {
        let data = std::fs::read(small.join("lib").join(rel)).unwrap();
        let rounds = 5;
        let t = Instant::now();
        let mut last = None;
        for _ in 0..rounds {
            last = Some(extract(fmt, &data, rel));
        }
        let secs = t.elapsed().as_secs_f64() / rounds as f64;
        let e = last.unwrap();
        let row = by_format.entry(fmt.clone()).or_default();
        row.files += 1;
        row.bytes += data.len() as u64;
        row.read += e.bytes_read;
        row.secs += secs;
        row.embedded += (e.origin == Origin::Embedded) as u64;
    }
    println!(
        "metadata extraction from memory ({files} files from tools/make-corpus.py --avg-kib 256)"
    );
    println!(
        "{:>8} {:>7} {:>12} {:>14} {:>16} {:>10}",
        "format", "files", "files/s", "MiB/s parsed", "bytes used/file", "embedded"
    );
    for (fmt, r) in &by_format {
        println!(
            "{fmt:>8} {:>7} {:>12.0} {:>14.1} {:>16.0} {:>9.0}%",
            r.files,
            r.files as f64 / r.secs,
            r.bytes as f64 / r.secs / (1 << 20) as f64,
            r.read as f64 / r.files as f64,
            100.0 * r.embedded as f64 / r.files as f64
        );
    }

    // 2. Extract from disk: bytes read per file, large files included.
    let large = tmp.path().join("large");
    let entries = corpus(&large, 30, 9, 24 * 1024);
    let mut by_format: BTreeMap<String, Row> = BTreeMap::new();
    for (rel, fmt) in &entries {
        let path = large.join("lib").join(rel);
        let size = std::fs::metadata(&path).unwrap().len();
        let t = Instant::now();
        let e = extract_from_file(fmt, &path, size, rel);
        let row = by_format.entry(fmt.clone()).or_default();
        row.secs += t.elapsed().as_secs_f64();
        row.files += 1;
        row.bytes += size;
        row.read += e.bytes_read;
        row.embedded += (e.origin == Origin::Embedded) as u64;
    }
    println!();
    println!("metadata extraction from disk (30 files, --avg-kib 24576: tens of MiB each)");
    println!(
        "{:>8} {:>7} {:>14} {:>16} {:>12} {:>12}",
        "format", "files", "avg size MiB", "avg read KiB", "read/size", "ms/file"
    );
    for (fmt, r) in &by_format {
        println!(
            "{fmt:>8} {:>7} {:>14.1} {:>16.1} {:>11.4}  {:>11.2}",
            r.files,
            r.bytes as f64 / r.files as f64 / (1 << 20) as f64,
            r.read as f64 / r.files as f64 / 1024.0,
            r.read as f64 / r.bytes as f64,
            1000.0 * r.secs / r.files as f64
        );
    }
}
