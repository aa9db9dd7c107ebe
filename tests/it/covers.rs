//! Covers in the calibre target, judged against calibre's own: every PDF, CBZ, FB2, MOBI and
//! AZW3 of the fixtures (`tests/data/converted`, a CBZ made here, a make-corpus sample) is added
//! once with `calibredb add` and once migrated by bookferry, and the two `cover.jpg` must be the
//! same picture: a 64-bit difference hash (dHash) within `EMBEDDED_DISTANCE` bits for an
//! embedded image (the same pixels, re-encoded) and `PDF_DISTANCE` for a PDF's first page
//! (poppler's render against hayro's); a cover calibre keeps though it does not decode (the
//! corpus's comic pages are noise after a JPEG header) must be the same bytes. `--no-covers` gives none; a PDF that cannot be rendered
//! is still added, with a warning naming it.

use crate::calibre_target::{calibredb, have_calibre, serial, to_calibre};
use crate::util::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Bits of 64 two dHashes of the same embedded image may differ by (JPEG re-encoding).
const EMBEDDED_DISTANCE: u32 = 2;
/// Bits of 64 a PDF's first page may differ by between poppler's and hayro's renders.
const PDF_DISTANCE: u32 = 6;

/// A 64-bit difference hash: the image in grey at 9×8, one bit per horizontal neighbours.
/// `None` when the image does not decode.
fn dhash(jpeg: &[u8]) -> Option<u64> {
    let img = image::load_from_memory(jpeg).ok()?.to_luma8();
    let small = image::imageops::resize(&img, 9, 8, image::imageops::FilterType::Triangle);
    let mut h = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            h = (h << 1) | u64::from(small.get_pixel(x, y)[0] < small.get_pixel(x + 1, y)[0]);
        }
    }
    Some(h)
}

/// A CBZ whose first page in calibre's (numeric) order is `page2.png`, not `page10.png`.
fn comic(path: &Path) {
    let png = |f: &dyn Fn(u32, u32) -> image::Rgb<u8>| {
        let img = image::RgbImage::from_fn(300, 450, f);
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let across = png(&|x, _| image::Rgb([(x * 255 / 300) as u8, 40, 90]));
    let down = png(&|_, y| image::Rgb([200, (y * 255 / 450) as u8, 10]));
    let mut z = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let o = zip::write::SimpleFileOptions::default();
    for (name, data) in [("page10.png", &down), ("page2.png", &across)] {
        z.start_file(name, o).unwrap();
        std::io::Write::write_all(&mut z, data).unwrap();
    }
    z.finish().unwrap();
}

/// The source: the converted fixtures, a comic, a few make-corpus books of each kind.
fn source(ws: &Workspace) -> PathBuf {
    let src = ws.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for ext in ["pdf", "mobi", "azw3", "fb2"] {
        let from = repo().join(format!("tests/data/converted/sample.{ext}"));
        fs::copy(from, src.join(format!("sample.{ext}"))).unwrap();
    }
    comic(&src.join("Pages.cbz"));
    let corpus = ws.path().join("corpus");
    make_corpus(&corpus, 40, 2222, 16);
    let mut taken = BTreeMap::new();
    for e in walk(&corpus) {
        let ext = e
            .extension()
            .and_then(|x| x.to_str())
            .unwrap_or("")
            .to_string();
        let n = taken.entry(ext.clone()).or_insert(0);
        if ["pdf", "fb2", "cbz"].contains(&ext.as_str()) && *n < 2 {
            *n += 1;
            fs::copy(&e, src.join(format!("corpus{n}.{ext}"))).unwrap();
        }
    }
    src
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// `calibredb ARGS --with-library LIB`, waiting out (up to ~2 min) a calibre program another
/// test or user runs outside the test lock (calibre's writer lock is machine-wide).
fn calibredb_patient(ws: &Workspace, lib: &Path, args: &[&str]) -> String {
    for _ in 0..60 {
        let out = std::process::Command::new("calibredb")
            .args(args)
            .arg("--with-library")
            .arg(lib)
            .env("CALIBRE_CONFIG_DIRECTORY", ws.path().join("calibre-config"))
            .output()
            .expect("calibredb runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return text;
        }
        if !String::from_utf8_lossy(&out.stderr).contains("Another calibre program") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    calibredb(ws, lib, args)
}

/// Each source file's cover in calibre's own library: `calibredb add` of it alone.
fn calibres_covers(ws: &Workspace, src: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let lib = ws.path().join("calibre-made");
    let mut out = BTreeMap::new();
    for f in walk(src) {
        let added = calibredb_patient(ws, &lib, &["add", "--duplicates", f.to_str().unwrap()]);
        let id = added
            .rsplit("Added book ids:")
            .next()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or_else(|| panic!("calibredb add {f:?}: {added}"));
        let listed = calibredb_patient(
            ws,
            &lib,
            &[
                "list",
                "--fields",
                "cover",
                "--for-machine",
                "--search",
                &format!("id:{id}"),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let cover = v[0]["cover"].as_str().map(|p| fs::read(p).unwrap());
        out.insert(f.file_name().unwrap().to_string_lossy().into_owned(), cover);
    }
    out
}

/// Each source file's cover in the library bookferry made (by its row's `target_ref`).
fn bookferrys_covers(state: &Path, lib: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let db = rusqlite::Connection::open(state).unwrap();
    let mut stmt = db
        .prepare("SELECT source_ref, target_ref FROM files WHERE target_ref IS NOT NULL")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.into_iter()
        .map(|(src, tref)| {
            let dir = lib.join(tref).parent().unwrap().join("cover.jpg");
            (src, fs::read(dir).ok())
        })
        .collect()
}

#[test]
fn every_format_gets_calibres_cover() {
    let _serial = serial();
    if !have_calibre("every_format_gets_calibres_cover") {
        return;
    }
    let ws = Workspace::empty();
    let src = source(&ws);
    let want = calibres_covers(&ws, &src);
    let (state, lib) = (ws.path().join("state.db"), ws.path().join("lib"));
    let run = to_calibre(&ws, &state, &src, &lib, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = bookferrys_covers(&state, &lib);
    assert_eq!(got.len(), want.len(), "every file placed: {got:?}");
    let mut report = Vec::new();
    let mut bad = Vec::new();
    for (name, calibre) in &want {
        let (calibre, ours) = match (calibre, got[name].as_ref()) {
            (Some(c), Some(o)) => (c, o),
            (None, None) => {
                // The corpus's FB2s have no <coverpage>: no cover from either.
                report.push(format!("{name}: no cover from calibre nor from bookferry"));
                continue;
            }
            (c, o) => {
                bad.push(format!(
                    "{name}: calibre made {} cover, bookferry {}",
                    if c.is_some() { "a" } else { "no" },
                    if o.is_some() { "one" } else { "none" }
                ));
                continue;
            }
        };
        let Some(theirs) = dhash(calibre) else {
            // calibre keeps a comic's first page as it is, even when it does not decode (the
            // corpus's pages are a JPEG header and noise): the same bytes are expected.
            report.push(format!(
                "{name}: not an image, same bytes: {}",
                calibre == ours
            ));
            if calibre != ours {
                bad.push(format!("{name}: calibre's undecodable cover, ours differs"));
            }
            continue;
        };
        let Some(d) = dhash(ours).map(|h| (h ^ theirs).count_ones()) else {
            bad.push(format!("{name}: our cover does not decode"));
            continue;
        };
        let limit = if name.ends_with(".pdf") {
            PDF_DISTANCE
        } else {
            EMBEDDED_DISTANCE
        };
        report.push(format!("{name}: distance {d} (limit {limit})"));
        if d > limit {
            bad.push(format!("{name}: distance {d} > {limit}"));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        bad.is_empty(),
        "covers unlike calibre's:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_covers_gives_none_and_a_broken_pdf_is_added_with_a_warning() {
    let _serial = serial();
    if !have_calibre("no_covers_gives_none_and_a_broken_pdf_is_added_with_a_warning") {
        return;
    }
    let ws = Workspace::empty();
    let src = ws.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for ext in ["pdf", "mobi", "fb2"] {
        let from = repo().join(format!("tests/data/converted/sample.{ext}"));
        fs::copy(from, src.join(format!("sample.{ext}"))).unwrap();
    }
    // No cover without covers.
    let (state, lib) = (ws.path().join("state.db"), ws.path().join("lib"));
    let run = to_calibre(&ws, &state, &src, &lib, &["--no-covers"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = bookferrys_covers(&state, &lib);
    assert_eq!(got.len(), 3);
    assert!(got.values().all(Option::is_none), "--no-covers made covers");
    let listed = calibredb(&ws, &lib, &["list", "--fields", "cover", "--for-machine"]);
    assert!(!listed.contains("cover.jpg"), "{listed}");

    // A PDF whose pages cannot be rendered: added, with a warning naming it.
    let broken = ws.path().join("broken");
    fs::create_dir_all(&broken).unwrap();
    fs::write(
        broken.join("Broken Scan.pdf"),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    )
    .unwrap();
    let (state2, lib2) = (ws.path().join("state2.db"), ws.path().join("lib2"));
    let run = to_calibre(&ws, &state2, &broken, &lib2, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = bookferrys_covers(&state2, &lib2);
    assert_eq!(got.len(), 1, "the broken PDF is added: {got:?}");
    assert!(got.values().all(Option::is_none));
    let err = stderr(&run);
    assert!(
        err.contains("Broken Scan.pdf") && err.contains("without a cover"),
        "no warning naming the file: {err}"
    );
    // calibre sees a sound library with the book in it.
    let listed = calibredb(
        &ws,
        &lib2,
        &["list", "--fields", "title,formats", "--for-machine"],
    );
    assert!(listed.contains("Broken Scan"), "{listed}");
}
