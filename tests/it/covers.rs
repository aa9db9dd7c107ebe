//! Covers in the calibre target, judged against calibre's own: every PDF, CBZ, FB2, MOBI and
//! AZW3 of the fixtures (`tests/data/converted`, a CBZ made here, a make-corpus sample) is added
//! once with `calibredb add` and once migrated by bookferry, and the two `cover.jpg` must be the
//! same picture: a 64-bit difference hash (dHash) within `EMBEDDED_DISTANCE` bits for an
//! embedded image (the same pixels, re-encoded) and `PDF_DISTANCE` for a PDF's first page
//! (poppler's render against hayro's), and every cover encoded as calibre's (size, quality,
//! subsampling); a cover calibre keeps though it does not decode (the
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

/// How a JPEG was encoded: its size, each component's sampling factors (0x22: 2×2) and its
/// quantization tables (their quality), from its header; `None` when not a baseline JPEG.
#[derive(Debug, PartialEq)]
struct Encoding {
    width: u32,
    height: u32,
    sampling: Vec<u8>,
    tables: Vec<Vec<u8>>,
}

fn encoding(b: &[u8]) -> Option<Encoding> {
    let be16 = |at: usize| {
        b.get(at..at + 2)
            .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
    };
    let (mut p, mut tables, mut frame) = (2, Vec::new(), None);
    while p + 4 <= b.len() && b[p] == 0xff {
        let (marker, len) = (b[p + 1], be16(p + 2)?);
        let body = b.get(p + 4..p + 2 + len)?;
        match marker {
            0xdb => tables.push(body.to_vec()),
            0xc0 => {
                let n = usize::from(body[5]);
                let sampling = (0..n).map(|i| body[7 + 3 * i]).collect();
                frame = Some((be16(p + 7)? as u32, be16(p + 5)? as u32, sampling));
            }
            0xda => break,
            _ => {}
        }
        p += 2 + len;
    }
    let (width, height, sampling) = frame?;
    Some(Encoding {
        width,
        height,
        sampling,
        tables,
    })
}

/// A one-page PDF of `w`×`h` points: a white page with a red band across its top third and a
/// blue square in its lower half, drawn to scale (the same picture at any size).
fn one_page_pdf(w: f64, h: f64) -> Vec<u8> {
    let content = format!(
        "1 0 0 rg 0 {} {w} {} re f 0 0 1 rg {} {} {} {} re f\n",
        h * 2.0 / 3.0,
        h / 3.0,
        w / 4.0,
        h / 8.0,
        w / 2.0,
        w / 2.0
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
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objs.len() + 1
        )
        .as_bytes(),
    );
    out
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
        // Encoded as calibre keeps it: the same size, quality (quantization tables) and chroma
        // subsampling — a PDF's cover is pdftoppm's JPEG, an image not a JPEG is re-encoded
        // by Qt's writer (quality 90, libjpeg's 4:2:0), a JPEG is kept as it is.
        if encoding(ours) != encoding(calibre) {
            bad.push(format!(
                "{name}: encoded as {:?}, calibre's as {:?}",
                encoding(ours).map(|e| (e.width, e.height, e.sampling, e.tables)),
                encoding(calibre).map(|e| (e.width, e.height, e.sampling, e.tables))
            ));
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

/// A page larger than calibre's largest cover (1650×2200) at 150 dpi: calibre scales pdftoppm's
/// render down to fit and re-encodes it; bookferry's cover is the same size, encoding and
/// picture. A hostile page (200×200 inches, 900 million pixels at 150 dpi) is rendered at that
/// size too, not at 150 dpi (calibre is not asked: pdftoppm would take 2.7 GB for it).
#[test]
fn a_large_page_gets_calibres_size() {
    let _serial = serial();
    if !have_calibre("a_large_page_gets_calibres_size") {
        return;
    }
    let ws = Workspace::empty();
    let src = ws.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // A2 (2481×3508 at 150 dpi) and a wide page (4167×1042).
    fs::write(src.join("Poster.pdf"), one_page_pdf(1190.55, 1683.78)).unwrap();
    fs::write(src.join("Banner.pdf"), one_page_pdf(2000.0, 500.0)).unwrap();
    let want = calibres_covers(&ws, &src);
    fs::write(src.join("Hostile.pdf"), one_page_pdf(14400.0, 14400.0)).unwrap();
    let (state, lib) = (ws.path().join("state.db"), ws.path().join("lib"));
    let run = to_calibre(&ws, &state, &src, &lib, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let got = bookferrys_covers(&state, &lib);
    for (name, calibre) in &want {
        let calibre = calibre.as_ref().expect("calibre made a cover");
        let ours = got[name]
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no cover"));
        let (theirs, mine) = (encoding(calibre).unwrap(), encoding(ours).unwrap());
        assert_eq!(mine, theirs, "{name}: ours, then calibre's");
        assert!(theirs.width <= 1650 && theirs.height <= 2200, "{theirs:?}");
        let d = (dhash(ours).unwrap() ^ dhash(calibre).unwrap()).count_ones();
        assert!(d <= PDF_DISTANCE, "{name}: distance {d}");
    }
    let hostile = got["Hostile.pdf"]
        .as_ref()
        .expect("the hostile page has a cover");
    let e = encoding(hostile).unwrap();
    assert_eq!((e.width, e.height), (1650, 1650), "{e:?}");
}
