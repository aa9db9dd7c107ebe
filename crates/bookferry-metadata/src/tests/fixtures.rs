//! Fixtures checked against calibre (`tests/data/converted/`, `tests/data/encodings/`): what we
//! extract must agree with what calibre reads back (`expected.json`), field by field.

use super::data_dir;
use crate::{extract, extract_from_file, Extracted, Origin};
use serde_json::Value;

fn check(name: &str, want: &serde_json::Map<String, Value>, got: &Extracted) -> Vec<String> {
    let md = &got.metadata;
    let mut bad = Vec::new();
    for (key, w) in want {
        let g: Value = match key.as_str() {
            "title" => md.title.clone().into(),
            "authors" => md.authors.clone().into(),
            "language" => md.language.clone().into(),
            "publisher" => md.publisher.clone().into(),
            "isbn" => md.isbn.clone().into(),
            "tags" => md.tags.clone().into(),
            "series" => md.series.clone().into(),
            "series_index" => md.series_index.into(),
            other => {
                bad.push(format!("{name}: no comparison for key {other}"));
                continue;
            }
        };
        if &g != w {
            bad.push(format!("{name}.{key}: expected {w}, got {g}"));
        }
    }
    if got.origin != Origin::Embedded {
        bad.push(format!("{name}: origin {:?}", got.origin));
    }
    bad
}

/// Extract every file `dir/expected.json` names (from its bytes and from disk) and compare with
/// the values there; returns how many files were checked and what disagreed.
fn agree(dir: &str) -> (usize, Vec<String>) {
    let dir = data_dir().join(dir);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json"))
            .expect("json");
    let mut bad = Vec::new();
    let mut checked = 0;
    for (name, want) in expected.as_object().expect("object") {
        let Some(want) = want.as_object() else {
            continue;
        };
        let format = name.rsplit('.').next().unwrap_or("");
        let path = dir.join(name);
        let data = std::fs::read(&path).expect("fixture");
        let got = extract(format, &data, name);
        println!("{name}: {:?} warnings={:?}", got.metadata, got.warnings);
        bad.extend(check(name, want, &got));
        let from_file = extract_from_file(format, &path, data.len() as u64, name);
        if from_file.metadata != got.metadata {
            bad.push(format!("{name}: extract_from_file differs from extract"));
        }
        checked += 1;
    }
    (checked, bad)
}

#[test]
fn calibre_fixtures_agree_with_expected_json() {
    let (checked, bad) = agree("converted");
    assert_eq!(checked, 5);
    assert!(bad.is_empty(), "{bad:#?}");
}

/// FB2 in KOI8-R, cp866 and ISO-8859-5 (`tests/data/encodings/`, written by Python's codecs
/// with the encoding named in the XML declaration): Cyrillic titles, authors and series read
/// as calibre reads them, not as U+FFFD.
#[test]
fn legacy_cyrillic_encodings_agree_with_calibre() {
    let (checked, bad) = agree("encodings");
    assert_eq!(checked, 3);
    assert!(bad.is_empty(), "{bad:#?}");
}
