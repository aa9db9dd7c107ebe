//! Agreement with `make-corpus.py`: generate the deterministic corpus (500 files, seed 7),
//! extract every file through `extract_from_file` (and `extract` on its bytes), and compare
//! with what the manifest says was embedded, per format and field. Fails below 99% for
//! EPUB, PDF, FB2 and CBZ on any field the format embeds.

use crate::normalize;
use crate::{extract, extract_from_file, Metadata, Origin};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIELDS: &[&str] = &[
    "title",
    "authors",
    "language",
    "series",
    "isbn",
    "publisher",
    "pubdate",
    "tags",
];
/// Fields that must reach 99% (the rest are reported only).
const GATED: &[&str] = &[
    "title",
    "authors",
    "language",
    "series",
    "isbn",
    "publisher",
];

/// What make-corpus embeds in a file of `format` for `field`, normalized like our output;
/// None when that format does not carry the field.
fn expected(format: &str, field: &str, m: &Value) -> Option<Value> {
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(normalize::text);
    let authors = || -> Vec<String> {
        m.get("authors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(normalize::text)
                    .collect()
            })
            .unwrap_or_default()
    };
    let series = || -> Value {
        match (s("series"), m.get("series_index").and_then(Value::as_f64)) {
            (Some(name), Some(i)) => serde_json::json!([name, i]),
            _ => Value::Null,
        }
    };
    let tags = || -> Vec<String> {
        m.get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(normalize::text)
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(match (format, field) {
        (_, "title") => s("title").into(),
        (_, "authors") => authors().into(),
        ("epub" | "fb2" | "cbz", "language") => {
            s("language").and_then(|l| normalize::language(&l)).into()
        }
        ("epub" | "fb2", "series") => series(),
        // ComicInfo always has a Series: the series, else the title; Number defaults to 1.
        ("cbz", "series") => {
            let name = s("series").or_else(|| s("title"));
            let idx = m.get("series_index").and_then(Value::as_f64).unwrap_or(1.0);
            serde_json::json!([name, idx])
        }
        ("epub" | "fb2", "isbn") => s("isbn").into(),
        ("epub" | "cbz", "publisher") => s("publisher").into(),
        ("epub", "pubdate") => s("pubdate").into(),
        ("epub" | "pdf", "tags") => tags().into(),
        ("fb2", "tags") => tags().into_iter().take(1).collect::<Vec<_>>().into(),
        _ => return None,
    })
}

fn actual(field: &str, md: &Metadata) -> Value {
    match field {
        "title" => md.title.clone().into(),
        "authors" => md.authors.clone().into(),
        "language" => md.language.clone().into(),
        "series" => match (&md.series, md.series_index) {
            (Some(s), Some(i)) => serde_json::json!([s, i]),
            (Some(s), None) => serde_json::json!([s, Value::Null]),
            _ => Value::Null,
        },
        "isbn" => {
            // Both places must agree.
            if md.isbn.as_ref() == md.identifiers.get("isbn") {
                md.isbn.clone().into()
            } else {
                Value::String("isbn field and identifiers[isbn] differ".into())
            }
        }
        "publisher" => md.publisher.clone().into(),
        "pubdate" => md.pubdate.clone().into(),
        "tags" => md.tags.clone().into(),
        _ => Value::Null,
    }
}

fn make_corpus(out: &Path) -> Option<PathBuf> {
    let script = super::repo_dir().join("tools").join("make-corpus.py");
    let lib = out.join("lib");
    let status = Command::new("python3")
        .arg(&script)
        .arg(&lib)
        .args(["--files", "500", "--seed", "7"])
        .status();
    match status {
        Ok(s) if s.success() => Some(out.join("lib.manifest.jsonl")),
        Ok(s) => panic!("make-corpus.py failed: {s}"),
        Err(e) => {
            assert!(
                std::env::var_os("BOOKFERRY_REQUIRE_PYTHON").is_none(),
                "cannot run python3 ({e}) and BOOKFERRY_REQUIRE_PYTHON is set"
            );
            eprintln!("SKIP corpus agreement: cannot run python3: {e}");
            None
        }
    }
}

#[test]
fn corpus_agreement() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(manifest) = make_corpus(tmp.path()) else {
        return;
    };
    let lib = tmp.path().join("lib");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    // (format, field) → (agree, total); per-format file count and bytes.
    let mut tally: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut files: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).expect("manifest row");
        let rel = row["path"].as_str().expect("path");
        let format = row["format"].as_str().expect("format");
        let size = row["size"].as_u64().expect("size");
        let path = lib.join(rel);
        let got = extract_from_file(format, &path, size, rel);
        let data = std::fs::read(&path).expect("file");
        let in_mem = extract(format, &data, rel);
        assert_eq!(
            got.metadata, in_mem.metadata,
            "{rel}: extract and extract_from_file differ"
        );
        let f = files.entry(format.to_string()).or_default();
        f.0 += 1;
        f.1 += size;
        f.2 += got.bytes_read;
        if format == "pdf" && size > 1 << 20 {
            assert!(
                got.bytes_read < size / 4,
                "{rel}: read {} of {size} bytes",
                got.bytes_read
            );
        }
        let m = &row["metadata"];
        if m.is_null() {
            assert_eq!(got.origin, Origin::Filename, "{rel}");
            continue;
        }
        assert_eq!(got.origin, Origin::Embedded, "{rel}: {:?}", got.warnings);
        for field in FIELDS {
            let Some(want) = expected(format, field, m) else {
                continue;
            };
            let have = actual(field, &got.metadata);
            let t = tally
                .entry((format.to_string(), field.to_string()))
                .or_default();
            t.1 += 1;
            if want == have {
                t.0 += 1;
            } else if misses.len() < 20 {
                misses.push(format!("{rel} {field}: want {want} got {have}"));
            }
        }
    }
    println!("corpus agreement (make-corpus --files 500 --seed 7):");
    println!(
        "{:<6} {:>5} {:>12} {:>12}",
        "format", "files", "bytes", "bytes read"
    );
    for (fmt, (n, size, read)) in &files {
        println!("{fmt:<6} {n:>5} {size:>12} {read:>12}");
    }
    let mut failed = Vec::new();
    for ((fmt, field), (ok, total)) in &tally {
        let pct = 100.0 * *ok as f64 / *total as f64;
        println!("{fmt:<6} {field:<10} {ok:>4}/{total:<4} {pct:6.2}%");
        let gated = matches!(fmt.as_str(), "epub" | "pdf" | "fb2" | "cbz")
            && GATED.contains(&field.as_str());
        if gated && pct < 99.0 {
            failed.push(format!("{fmt}.{field} {pct:.2}%"));
        }
    }
    for m in &misses {
        println!("miss: {m}");
    }
    assert!(failed.is_empty(), "below 99%: {failed:?}");
}
