//! A file's title and authors when its embedded metadata lacks them, compared with what calibre
//! shows after `calibredb add` of the same bytes under the same name
//! (tests/data/filenames/expected.json, made by tests/data/filenames/make-expected.py), and
//! with calibre itself for a few names, so that fixture cannot drift from calibre.

use bookferry_metadata::extract;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../../tests/support/calibre_serial.rs"]
mod calibre_serial;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/filenames")
}

struct Row {
    name: String,
    template: String,
    title: String,
    /// As calibre lists them: `["Unknown"]` when it has none.
    authors: Vec<String>,
}

fn rows() -> Vec<Row> {
    let path = data_dir().join("expected.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("expected.json"))
        .expect("expected.json is JSON");
    doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| Row {
            name: r["name"].as_str().unwrap().to_string(),
            template: r["template"].as_str().unwrap().to_string(),
            title: r["title"].as_str().unwrap().to_string(),
            authors: r["authors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect(),
        })
        .collect()
}

/// bookferry's title and authors for `name` holding `template`'s bytes, in calibre's terms
/// (no author is calibre's "Unknown").
fn bookferry(name: &str, template: &str) -> (String, Vec<String>) {
    let data = std::fs::read(data_dir().join("templates").join(template)).expect("template");
    let format = name.rsplit_once('.').map_or("", |(_, e)| e).to_lowercase();
    let md = extract(&format, &data, name).metadata;
    let authors = if md.authors.is_empty() {
        vec!["Unknown".to_string()]
    } else {
        md.authors
    };
    (md.title.unwrap_or_else(|| "Unknown".into()), authors)
}

/// calibre's TXT reader titles a `.txt` by its raw stem, over the name pattern's title; bookferry
/// does not follow it (see `filename::guess`). The authors agree.
const TXT_TITLE: &str = "calibre titles a .txt by its raw stem";

/// Names where bookferry knowingly differs from calibre: (name, why, whether the authors agree).
const KNOWN_DIFFERENCES: &[(&str, &str, bool)] = &[
    ("Dune - Frank Herbert.txt", TXT_TITLE, true),
    ("Series 03 - Title.txt", TXT_TITLE, true),
    ("zoom_to_rect.txt", TXT_TITLE, true),
    ("Some_Title_-_Some_Author.txt", TXT_TITLE, true),
    ("A - B - C.txt", TXT_TITLE, true),
    ("Zola/Zola - Germinal.txt", TXT_TITLE, true),
    (
        "Olga Tokarczuk/Machine Paper 0 - Olga Tokarczuk.txt",
        TXT_TITLE,
        true,
    ),
    (
        "Two - Ann Smith; Bob Jones.pdf",
        "bookferry's author clean-up (normalize::authors) also splits one author on ';'",
        false,
    ),
];

#[test]
fn names_give_what_calibre_shows() {
    let rows = rows();
    assert!(rows.len() >= 50, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for r in &rows {
        let got = bookferry(&r.name, &r.template);
        let want = (r.title.clone(), r.authors.clone());
        let shown = format!(
            "{:?} ({}): calibre {:?} by {:?}, bookferry {:?} by {:?}",
            r.name, r.template, want.0, want.1, got.0, got.1
        );
        match KNOWN_DIFFERENCES.iter().find(|k| k.0 == r.name) {
            // Still different (or the entry must go), and only in what the entry says.
            Some((_, why, authors_agree)) => {
                if got == want {
                    wrong.push(format!(
                        "{shown}: agrees now, drop it from KNOWN_DIFFERENCES"
                    ));
                } else if (got.1 == want.1) != *authors_agree {
                    wrong.push(format!("{shown}: differs in more than {why:?}"));
                }
            }
            None if got != want => wrong.push(shown),
            None => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} names differ from calibre:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}

/// True when calibre is installed. Without it: a skip, said out loud — or a failure when
/// `BOOKFERRY_REQUIRE_CALIBRE` is set.
fn have_calibre() -> bool {
    let ok = Command::new("calibredb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("BOOKFERRY_REQUIRE_CALIBRE").is_none(),
            "calibredb is not installed but BOOKFERRY_REQUIRE_CALIBRE is set"
        );
        eprintln!("SKIPPED: calibredb is not installed (apt-get install -y calibre)");
    }
    ok
}

fn calibredb(config: &Path, lib: &Path, args: &[&str]) -> String {
    let out = Command::new("calibredb")
        .arg("--with-library")
        .arg(lib)
        .args(args)
        .env("CALIBRE_CONFIG_DIRECTORY", config)
        .output()
        .expect("run calibredb");
    assert!(
        out.status.success(),
        "calibredb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A few rows made again by calibre now: calibre still says what the fixture says (and so what
/// bookferry says, by the table test).
#[test]
fn fixture_matches_calibre_live() {
    if !have_calibre() {
        return;
    }
    let _serial = calibre_serial::serial();
    let picks = [
        "zoom_to_rect.pdf",
        "zoom_to_rect.txt",
        "Title_(Author).pdf",
        "Three - Ann Smith, Bob Jones and Cy Young.pdf",
        "A - B - C.pdf",
        "Whatever - Name Author.pdf",
    ];
    let rows = rows();
    let tmp = tempfile::tempdir().unwrap();
    let (config, lib) = (tmp.path().join("config"), tmp.path().join("lib"));
    for (i, pick) in picks.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| r.name == *pick)
            .unwrap_or_else(|| panic!("{pick} is not in expected.json"));
        let path = tmp.path().join(format!("in{i}")).join(&row.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(data_dir().join("templates").join(&row.template), &path).unwrap();
        let added = calibredb(&config, &lib, &["add", "-d", path.to_str().unwrap()]);
        let id: u64 = added
            .lines()
            .find_map(|l| l.strip_prefix("Added book ids:"))
            .unwrap_or_else(|| panic!("calibredb add printed no id: {added}"))
            .trim()
            .parse()
            .unwrap();
        let listed = calibredb(
            &config,
            &lib,
            &[
                "list",
                "--for-machine",
                "--fields",
                "title,authors",
                "--search",
                &format!("id:{id}"),
            ],
        );
        let books: Value = serde_json::from_str(&listed).expect("calibredb list JSON");
        let book = &books[0];
        let title = book["title"].as_str().unwrap();
        let authors: Vec<&str> = book["authors"].as_str().unwrap().split(" & ").collect();
        assert_eq!(
            (title, authors),
            (
                row.title.as_str(),
                row.authors.iter().map(String::as_str).collect()
            ),
            "{pick}: calibre now differs from expected.json (run make-expected.py)"
        );
        // The table test holds bookferry to this row (or to its known difference).
        if !KNOWN_DIFFERENCES.iter().any(|k| k.0 == row.name) {
            assert_eq!(
                bookferry(&row.name, &row.template),
                (row.title.clone(), row.authors.clone()),
                "{pick}: bookferry"
            );
        }
    }
}
