//! `run --sidecars` into a folder: beside each book, calibre's "save to disk" sidecars
//! `<book>.opf` and `<book>.jpg`. Their names and contents (the OPF read back, and by calibre's
//! `ebook-meta`; the cover the same bytes the calibre target stores for the file), no `.jpg`
//! for a book without a cover, a usage error with another target, a file not ours at a
//! sidecar's name never overwritten, `kill -9` then resume (every recorded book has its
//! sidecars, after every kill), and a dry run that writes none. Killed at a chosen moment (the
//! `BOOKFERRY_FAULT` hook's SIGKILL): sidecars written for a book the next run skips are removed,
//! and an adopted book's missing or torn sidecars written again. `verify` finds sidecars
//! missing, torn, not the cover or not ours, and `--repair sidecars` writes ours again.

use crate::calibre_target::{have_calibre, serial, to_calibre};
use crate::util::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (source_ref, target_ref, format) of every `uploaded` row of a state DB.
fn uploaded(state: &Path) -> Vec<(String, String, String)> {
    let db =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = db
        .prepare("SELECT source_ref, target_ref, format FROM files WHERE state = 'uploaded'")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// The sidecars of the book at `target_ref` under `out`: (`.opf`, `.jpg`).
fn sidecars_of(out: &Path, target_ref: &str) -> (PathBuf, PathBuf) {
    let book = out.join(target_ref);
    let name = book.file_name().unwrap().to_str().unwrap();
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap();
    let dir = book.parent().unwrap();
    (
        dir.join(format!("{stem}.opf")),
        dir.join(format!("{stem}.jpg")),
    )
}

/// An OPF read back by bookferry's own EPUB reader (wrapped in the smallest EPUB around it).
fn read_opf(text: &str) -> bookferry::metadata::Metadata {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default();
    zip.start_file("mimetype", o).unwrap();
    zip.write_all(b"application/epub+zip").unwrap();
    zip.start_file("META-INF/container.xml", o).unwrap();
    zip.write_all(
        br#"<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#,
    )
    .unwrap();
    zip.start_file("content.opf", o).unwrap();
    zip.write_all(text.as_bytes()).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let got = bookferry::metadata::extract("epub", &bytes, "sidecar.epub");
    // (The corpus's ISBNs are random: their check digits are warned about.)
    let problems: Vec<_> = got
        .warnings
        .iter()
        .filter(|w| !w.starts_with("ISBN"))
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    got.metadata
}

/// Every book of a corpus gets calibre's OPF and, when it has a cover, the cover the calibre
/// target would store for it (byte for byte), named after the book file; a TXT gets no `.jpg`
/// and its OPF names none. calibre's `ebook-meta` reads the OPF as the book's metadata.
#[test]
fn each_book_gets_calibres_opf_and_the_calibre_targets_cover_beside_it() {
    let _serial = serial();
    let ws = Workspace::with_corpus_sized(40, 2424, 8);
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The same library into a calibre library: the covers it stores.
    let (lib2, state2) = (ws.path().join("calibre"), ws.path().join("calibre.db"));
    let out = to_calibre(&ws, &state2, &ws.lib(), &lib2, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // By content: of two files with the same bytes, which one is placed (the other skipped as
    // its duplicate) may differ between the two runs.
    let blake3 = |state: &Path| -> BTreeMap<String, String> {
        let db = rusqlite::Connection::open(state).unwrap();
        let mut st = db
            .prepare("SELECT source_ref, blake3 FROM files WHERE blake3 IS NOT NULL")
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let calibre_content = blake3(&state2);
    let calibre_cover: BTreeMap<String, Option<Vec<u8>>> = uploaded(&state2)
        .into_iter()
        .map(|(source, target, _)| {
            let cover = lib2.join(&target).parent().unwrap().join("cover.jpg");
            (calibre_content[&source].clone(), fs::read(cover).ok())
        })
        .collect();
    let folder_content = blake3(&ws.state());
    let manifest: BTreeMap<&str, &Entry> =
        ws.manifest.iter().map(|e| (e.path.as_str(), e)).collect();

    let books = uploaded(&ws.state());
    assert!(books.len() >= 30, "{} books", books.len());
    let (mut covers, mut without) = (0, 0);
    for (source, target, format) in &books {
        let (opf_path, jpg_path) = sidecars_of(&ws.out(), target);
        let text = fs::read_to_string(&opf_path)
            .unwrap_or_else(|e| panic!("{target}: no {}: {e}", opf_path.display()));
        assert!(text.contains(r#"<dc:contributor opf:file-as="calibre" opf:role="bkp">"#));
        let md = read_opf(&text);
        if let Some(meta) = manifest[source.as_str()].metadata.as_object() {
            assert_eq!(md.title.as_deref(), meta["title"].as_str(), "{target}");
            let authors: Vec<&str> = meta["authors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(md.authors, authors, "{target}");
            if format == "epub" {
                // (The corpus's PDFs and FB2s carry no publisher.)
                let publisher = meta["publisher"].as_str();
                assert_eq!(md.publisher.as_deref(), publisher, "{target}");
                assert_eq!(md.isbn.as_deref(), meta["isbn"].as_str(), "{target}");
            }
        } else {
            assert!(md.title.is_some_and(|t| !t.is_empty()), "{target}");
        }
        assert!(
            md.uuid.as_deref().is_some_and(|u| u.len() == 36),
            "{target}"
        );
        let jpg_name = jpg_path.file_name().unwrap().to_str().unwrap().to_string();
        let want = calibre_cover[&folder_content[source]].as_ref();
        match fs::read(&jpg_path).ok() {
            Some(jpeg) => {
                covers += 1;
                assert_eq!(
                    Some(&jpeg),
                    want,
                    "{target}: not the calibre target's cover"
                );
                assert!(text.contains(&format!(r#"href="{jpg_name}""#)), "{text}");
            }
            None => {
                without += 1;
                assert_eq!(
                    want, None,
                    "{target}: the calibre target has a cover for it"
                );
                assert!(text.contains("<guide/>"), "{text}");
                assert!(!text.contains(".jpg"), "{text}");
            }
        }
        if format == "txt" {
            assert!(!jpg_path.exists(), "{target}: a TXT has no cover");
        }
        if format == "epub" {
            assert!(
                jpg_path.exists(),
                "{target}: an EPUB of the corpus has a cover"
            );
        }
    }
    assert!(
        covers > 20 && without > 0,
        "{covers} covers, {without} without"
    );
    // Nothing else was written: the books, and their sidecars.
    let files = ws.target_files();
    assert_eq!(files.len(), books.len() + books.len() + covers, "{files:?}");

    if have_calibre("sidecars") {
        let (_, target, _) = books.iter().find(|b| b.2 == "epub").unwrap();
        let (opf_path, _) = sidecars_of(&ws.out(), target);
        let meta = Command::new("ebook-meta").arg(&opf_path).output().unwrap();
        let said = String::from_utf8_lossy(&meta.stdout);
        let md = read_opf(&fs::read_to_string(&opf_path).unwrap());
        let title_line = said
            .lines()
            .find(|l| l.starts_with("Title "))
            .unwrap_or_else(|| panic!("ebook-meta said: {said}"));
        assert!(title_line.ends_with(md.title.as_deref().unwrap()), "{said}");
    }
}

/// `--sidecars` with a target that is not a folder: exit 2 with one line, nothing created.
#[test]
fn sidecars_with_a_target_that_is_no_folder_is_a_usage_error() {
    let ws = Workspace::with_corpus(3, 5);
    let lib = ws.path().join("library");
    for to in [
        format!("calibre:{}", lib.display()),
        "http://127.0.0.1:9/".to_string(),
    ] {
        let out = ws.run(&[
            "run",
            "--from",
            ws.lib().to_str().unwrap(),
            "--to",
            &to,
            "--sidecars",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{to}: {err}");
        assert!(
            err.contains("--sidecars is for a folder target only"),
            "{err}"
        );
        assert!(!lib.exists(), "{to}: the calibre library was created");
        assert_eq!(
            count_or_zero(&ws.state(), "SELECT COUNT(*) FROM migration"),
            0,
            "{to}: a migration was recorded"
        );
    }
}

/// A file that is not ours at a sidecar's name (a `.opf` of another book, a `.jpg`) is never
/// written over: the book takes the next name (` (2)`), as it does when its own name is taken.
/// A rerun writes nothing more.
#[test]
fn a_sidecar_name_held_by_a_file_not_ours_is_never_overwritten() {
    let ws = Workspace::empty();
    fs::write(
        ws.lib().join("Dune - Frank Herbert.txt"),
        "spice ".repeat(100),
    )
    .unwrap();
    fs::write(
        ws.lib().join("Emma - Jane Austen.txt"),
        "Highbury ".repeat(100),
    )
    .unwrap();
    let dune = ws.out().join("Frank Herbert/Dune");
    let emma = ws.out().join("Jane Austen/Emma");
    fs::create_dir_all(&dune).unwrap();
    fs::create_dir_all(&emma).unwrap();
    let theirs_opf = "<package>another book's metadata</package>";
    fs::write(dune.join("Dune - Frank Herbert.opf"), theirs_opf).unwrap();
    fs::write(emma.join("Emma - Jane Austen.jpg"), b"someone's picture").unwrap();

    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut placed: Vec<String> = uploaded(&ws.state()).into_iter().map(|r| r.1).collect();
    placed.sort();
    assert_eq!(
        placed,
        [
            "Frank Herbert/Dune/Dune - Frank Herbert (2).txt",
            "Jane Austen/Emma/Emma - Jane Austen (2).txt"
        ]
    );
    assert_eq!(
        fs::read_to_string(dune.join("Dune - Frank Herbert.opf")).unwrap(),
        theirs_opf
    );
    assert_eq!(
        fs::read(emma.join("Emma - Jane Austen.jpg")).unwrap(),
        b"someone's picture"
    );
    for (dir, stem, title) in [
        (&dune, "Dune - Frank Herbert (2)", "Dune"),
        (&emma, "Emma - Jane Austen (2)", "Emma"),
    ] {
        let md = read_opf(&fs::read_to_string(dir.join(format!("{stem}.opf"))).unwrap());
        assert_eq!(md.title.as_deref(), Some(title));
        assert!(
            !dir.join(format!("{stem}.jpg")).exists(),
            "a TXT has no cover"
        );
    }
    assert!(!dune.join("Dune - Frank Herbert.txt").exists());

    let before = tree_sha1(&ws.out());
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tree_sha1(&ws.out()), before, "a rerun changed the target");
}

/// Files recorded `uploaded` now.
fn uploaded_now(ws: &Workspace) -> i64 {
    count_or_zero(
        &ws.state(),
        "SELECT COUNT(*) FROM files WHERE state = 'uploaded'",
    )
}

/// Every `uploaded` book whose `.opf` is missing, or whose `.opf` names a `.jpg` that is not
/// there, or an EPUB (all of the corpus's have a cover) without its `.jpg`.
fn books_without_sidecars(ws: &Workspace) -> Vec<String> {
    let mut missing = Vec::new();
    for (_, target, format) in uploaded(&ws.state()) {
        let (opf, jpg) = sidecars_of(&ws.out(), &target);
        let Ok(text) = fs::read_to_string(&opf) else {
            missing.push(format!("{target}: no .opf"));
            continue;
        };
        let names_jpg = !text.contains("<guide/>");
        if (names_jpg || format == "epub") && !jpg.is_file() {
            missing.push(format!("{target}: no .jpg"));
        }
        if !names_jpg && format == "epub" {
            missing.push(format!("{target}: the .opf names no cover"));
        }
    }
    missing
}

/// `kill -9` again and again mid-run, then a resumed run (the option is recorded: it is not
/// given again): after every kill, every book recorded `uploaded` has its `.opf` (and its
/// `.jpg` when it has a cover); at the end, every book has them and no temp file is left. A
/// variant that wrote the sidecars after the book left books without them (the next run
/// adopts a book a killed run placed but did not record).
#[test]
fn kill_9_mid_run_then_resume_every_uploaded_book_has_its_sidecars() {
    let ws = Workspace::with_corpus_sized(600, 2525, 4);
    let mut rng = Lcg(0x51de);
    let mut kills = 0;
    for attempt in 0..40 {
        if kills >= 12 {
            break;
        }
        let extra: &[&str] = if attempt == 0 {
            &["--sidecars", "--transfers", "2", "--checkers", "1", "-q"]
        } else {
            &["--transfers", "2", "--checkers", "1", "-q"]
        };
        let mut child = ws
            .migrate_cmd(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = uploaded_now(&ws);
        let k = 5 + rng.next(40) as i64;
        let t0 = Instant::now();
        while uploaded_now(&ws) < base + k && t0.elapsed() < Duration::from_secs(30) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.next(20)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let missing = books_without_sidecars(&ws);
        assert!(
            missing.is_empty(),
            "after kill {kills}: {} recorded book(s) without their sidecars, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    assert!(
        kills >= 8,
        "only {kills} kills landed while the run was working"
    );
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "final run: {}", stderr(&out));
    let books = uploaded(&ws.state());
    assert!(books.len() > 500, "{} books", books.len());
    let missing = books_without_sidecars(&ws);
    assert!(
        missing.is_empty(),
        "{} book(s) without their sidecars, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let files = ws.target_files();
    assert!(
        !files.keys().any(|k| k.contains(".bookferry-tmp")),
        "temp files left behind"
    );
    // A book's sidecars at its name, and none that no book owns (a killed run's, for a book a
    // later run took for a duplicate of another file, are removed by the run after the kill).
    let opfs = files.keys().filter(|k| k.ends_with(".opf")).count();
    eprintln!("{opfs} .opf files for {} books", books.len());
    assert!(opfs >= books.len(), "one .opf per book");
    assert_eq!(
        stray_sidecars(&ws),
        Vec::<String>::new(),
        "sidecars no book owns"
    );
}

/// A dry run with `--sidecars` writes nothing at all.
#[test]
fn a_dry_run_writes_no_sidecars() {
    let ws = Workspace::with_corpus(20, 77);
    let out = ws.migrate(&["--sidecars", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !ws.out().exists() || tree_sha1(&ws.out()).is_empty(),
        "{:?}",
        tree_sha1(&ws.out())
    );
    // The real run then writes them.
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let books = uploaded(&ws.state());
    assert!(!books.is_empty());
    for (_, target, _) in books {
        assert!(sidecars_of(&ws.out(), &target).0.is_file(), "{target}");
    }
}

/// Two formats of one book (same title and authors) in one folder share one `.opf`; a book
/// placed again at its name (its file lost and repaired) finds its own `.opf` there and keeps
/// it, never taking ` (2)` for it.
#[test]
fn formats_of_one_book_share_its_sidecars_and_a_rerun_knows_them_as_its_own() {
    let ws = Workspace::empty();
    fs::write(
        ws.lib().join("Dune - Frank Herbert.txt"),
        "spice ".repeat(100),
    )
    .unwrap();
    fs::write(
        ws.lib().join("Dune - Frank Herbert.rtf"),
        format!("{{\\rtf1 {}}}", "arrakis ".repeat(100)),
    )
    .unwrap();
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = ws.out().join("Frank Herbert/Dune");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Dune - Frank Herbert.opf",
            "Dune - Frank Herbert.rtf",
            "Dune - Frank Herbert.txt"
        ]
    );
    let opf = fs::read_to_string(dir.join("Dune - Frank Herbert.opf")).unwrap();
    assert_eq!(read_opf(&opf).title.as_deref(), Some("Dune"));

    // The TXT is lost from the target and repaired: placed again at its own name.
    fs::remove_file(dir.join("Dune - Frank Herbert.txt")).unwrap();
    let out = ws.run(&["verify", "--repair", "missing", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut again: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    again.sort();
    assert_eq!(again, names);
    assert_eq!(
        fs::read_to_string(dir.join("Dune - Frank Herbert.opf")).unwrap(),
        opf
    );
}

/// `--no-covers` with `--sidecars`: every book gets its `.opf`, naming no cover, and no `.jpg`.
#[test]
fn no_covers_gives_opfs_without_jpgs() {
    let ws = Workspace::with_corpus(15, 99);
    let out = ws.migrate(&["--sidecars", "--no-covers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let books = uploaded(&ws.state());
    assert!(books.iter().any(|b| b.2 == "epub"), "{books:?}");
    for (_, target, _) in &books {
        let (opf, jpg) = sidecars_of(&ws.out(), target);
        let text = fs::read_to_string(&opf).unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(text.contains("<guide/>"), "{target}: {text}");
        assert!(!jpg.exists(), "{target}: a cover with --no-covers");
    }
}

#[test]
fn a_later_run_keeps_no_covers_as_the_migration_recorded_it() {
    // `--no-covers` is recorded with the migration, as `--sidecars` is: a later `run` without
    // it (a resume, or new files) makes no cover either, so one migration does not end with
    // covers for some of its books and not others.
    let ws = Workspace::with_corpus(15, 99);
    let aside = ws.path().join("aside");
    fs::create_dir_all(&aside).unwrap();
    // An epub whose bytes no other file has (else its copy is placed by the first run).
    let late = ws
        .manifest
        .iter()
        .find(|e| {
            e.format == "epub" && ws.manifest.iter().filter(|o| o.sha1 == e.sha1).count() == 1
        })
        .expect("an epub of its own bytes")
        .path
        .clone();
    let late_name = late.rsplit('/').next().unwrap().to_string();
    fs::rename(ws.lib().join(&late), aside.join(&late_name)).unwrap();
    let out = ws.migrate(&["--sidecars", "--no-covers"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    fs::rename(aside.join(&late_name), ws.lib().join(&late)).unwrap();
    let again = ws.run(&["run", "-q"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let books = uploaded(&ws.state());
    let (_, target, _) = books
        .iter()
        .find(|b| b.0 == late)
        .unwrap_or_else(|| panic!("{late} placed by the second run: {books:?}"));
    let (opf, jpg) = sidecars_of(&ws.out(), target);
    assert!(opf.exists(), "{target}: no .opf");
    assert!(
        !jpg.exists(),
        "{target}: the later run made a cover, though the migration was recorded with --no-covers"
    );
    // And verify's repair of a lost `.opf` writes no cover either.
    fs::remove_file(&opf).unwrap();
    let repair = ws.run(&["verify", "--repair", "sidecars", "--yes"]);
    assert!(
        opf.exists(),
        "{target}: .opf not written again: {}",
        stderr(&repair)
    );
    assert!(
        !jpg.exists(),
        "{target}: verify's repair made a cover, though the migration was recorded with \
         --no-covers"
    );
}

/// `run` with the test hook that kills the process (SIGKILL) at `point` for the file whose
/// source path contains `name` (see `pipeline::fault`): it must die there.
fn killed_at(ws: &Workspace, extra: &[&str], point: &str, name: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = ws
        .migrate_cmd(extra)
        .env("BOOKFERRY_FAULT", format!("{point}:{name}"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "not killed at {point}:{name}: {:?} {}",
        out.status,
        stderr(&out)
    );
}

/// Every `.opf` or `.jpg` in the target with no other file of its stem beside it: a sidecar no
/// book owns.
fn stray_sidecars(ws: &Workspace) -> Vec<String> {
    let files = ws.target_files();
    let stem = |k: &str| {
        let name = k.rsplit('/').next().unwrap();
        let dir = &k[..k.len() - name.len()];
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        format!("{dir}{stem}")
    };
    files
        .keys()
        .filter(|k| k.ends_with(".opf") || k.ends_with(".jpg"))
        .filter(|k| {
            !files.keys().any(|o| {
                o != *k && !o.ends_with(".opf") && !o.ends_with(".jpg") && stem(o) == stem(k)
            })
        })
        .cloned()
        .collect()
}

/// The state of the row of `source_ref`, and its target_ref and planned_ref.
fn row_of(ws: &Workspace, source_ref: &str) -> (String, Option<String>, Option<String>) {
    let db = rusqlite::Connection::open(ws.state()).unwrap();
    db.query_row(
        "SELECT state, target_ref, planned_ref FROM files WHERE source_ref = ?1",
        [source_ref],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

/// A run killed (SIGKILL) after writing a book's sidecars and before the book; the next run
/// does not place that book at that name: its file now holds the bytes of a book already
/// placed (skipped as that book's duplicate), or a filter leaves it out (`--exclude`). The
/// sidecars, which no book owns, are gone after that run; nothing else is removed (the other
/// book keeps its sidecars), and a rerun changes nothing.
#[test]
fn sidecars_a_killed_run_wrote_for_a_book_the_next_run_skips_are_removed() {
    for (variant, reason) in [("duplicate", "duplicate"), ("excluded", "excluded")] {
        let ws = Workspace::empty();
        let dune_bytes = "spice ".repeat(100);
        fs::write(ws.lib().join("Dune - Frank Herbert.txt"), &dune_bytes).unwrap();
        let out = ws.migrate(&["--sidecars"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let emma_file = ws.lib().join("Emma - Jane Austen.txt");
        fs::write(&emma_file, "Highbury ".repeat(100)).unwrap();
        killed_at(&ws, &[], "sidecars-written", "Emma");
        let emma = ws.out().join("Jane Austen/Emma");
        let emma_opf = emma.join("Emma - Jane Austen.opf");
        assert!(emma_opf.is_file(), "the killed run wrote Emma's .opf first");
        assert!(!emma.join("Emma - Jane Austen.txt").exists());

        let dune_opf = ws.out().join("Frank Herbert/Dune/Dune - Frank Herbert.opf");
        let before_dune = fs::read(&dune_opf).unwrap();
        let extra: &[&str] = if variant == "duplicate" {
            fs::write(&emma_file, &dune_bytes).unwrap();
            &[]
        } else {
            &["--exclude", "Emma*"]
        };
        let out = ws.migrate(extra);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let db = rusqlite::Connection::open(ws.state()).unwrap();
        let skip: (String, String) = db
            .query_row(
                "SELECT state, skip_reason FROM files WHERE source_ref = 'Emma - Jane Austen.txt'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(skip, ("skipped".to_string(), reason.to_string()));
        assert_eq!(
            stray_sidecars(&ws),
            Vec::<String>::new(),
            "{variant}: sidecars no book owns"
        );
        assert!(!emma_opf.exists());
        assert_eq!(fs::read(&dune_opf).unwrap(), before_dune);
        let before = tree_sha1(&ws.out());
        let out = ws.migrate(&[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(tree_sha1(&ws.out()), before, "a rerun changed the target");
    }
}

/// A run killed (SIGKILL) after placing a book and before recording it; then what a power loss
/// can leave of its sidecars (the renames kept, the bytes not: an empty `.opf` or none, a
/// `.jpg` gone or cut short). The next run adopts the book and writes its sidecars again: the `.opf` names the
/// book and its cover, the `.jpg` holds the cover's bytes.
#[test]
fn a_book_adopted_after_a_kill_gets_its_missing_or_torn_sidecars_written() {
    for n in 0..2 {
        let ws = Workspace::with_corpus(8, 2424);
        let source = &ws
            .manifest
            .iter()
            .find(|e| e.format == "epub")
            .expect("an EPUB")
            .path;
        killed_at(&ws, &["--sidecars"], "book-placed", source);
        let (state, _, planned) = row_of(&ws, source);
        assert_ne!(state, "uploaded", "{source}: recorded before the kill");
        let planned = planned.expect("the placement was claimed");
        assert!(ws.out().join(&planned).is_file(), "{planned}: not placed");
        let (opf, jpg) = sidecars_of(&ws.out(), &planned);
        let cover = fs::read(&jpg).expect("the killed run wrote the cover first");
        // The first: an empty `.opf` and no `.jpg`; the second: no `.opf` and a `.jpg` cut
        // short.
        if n == 0 {
            fs::write(&opf, b"").unwrap();
            fs::remove_file(&jpg).unwrap();
        } else {
            fs::remove_file(&opf).unwrap();
            fs::write(&jpg, &cover[..cover.len() / 2]).unwrap();
        }

        let out = ws.migrate(&[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let (state, target_ref, _) = row_of(&ws, source);
        assert_eq!(
            (state.as_str(), target_ref.as_deref()),
            ("uploaded", Some(planned.as_str())),
            "{source}: not adopted"
        );
        let text = fs::read_to_string(&opf).unwrap_or_default();
        let jpg_name = jpg.file_name().unwrap().to_str().unwrap();
        assert!(
            text.contains(&format!(r#"href="{jpg_name}""#)),
            "{planned}: its .opf after the adoption: {text:?}"
        );
        assert!(read_opf(&text).title.is_some_and(|t| !t.is_empty()));
        assert_eq!(
            fs::read(&jpg).ok().as_ref(),
            Some(&cover),
            "{planned}: its .jpg"
        );
        assert_eq!(books_without_sidecars(&ws), Vec::<String>::new());
    }
}

/// `verify` of a migration with `--sidecars` looks at each book's sidecars: a `.jpg` missing or
/// not the cover, a `.opf` torn (empty) or missing, and a `.opf` that names another book are
/// findings (a line each, exit 1); `--repair sidecars --yes` writes all but the last again
/// (not ours: left alone), and the next verify finds only that one.
#[test]
fn verify_finds_sidecars_missing_torn_or_not_ours_and_repair_writes_ours_again() {
    let ws = Workspace::with_corpus(16, 77);
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = ws.run(&["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let mut epubs: Vec<(String, PathBuf, PathBuf)> = uploaded(&ws.state())
        .into_iter()
        .filter(|b| b.2 == "epub")
        .map(|(_, target, _)| {
            let (opf, jpg) = sidecars_of(&ws.out(), &target);
            (target, opf, jpg)
        })
        .collect();
    epubs.sort();
    assert!(epubs.len() >= 5, "{} EPUBs", epubs.len());
    let saved: Vec<(Vec<u8>, Vec<u8>)> = epubs
        .iter()
        .map(|(_, opf, jpg)| (fs::read(opf).unwrap(), fs::read(jpg).unwrap()))
        .collect();
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| &epubs[i]);
    fs::remove_file(&a.2).unwrap();
    fs::write(&b.1, b"").unwrap();
    fs::write(&c.2, b"someone's picture").unwrap();
    fs::copy(&a.1, &d.1).unwrap(); // names a's book
    fs::remove_file(&e.1).unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let want = [
        (&a.0, format!("{} is missing", name(&a.2))),
        (&b.0, format!("{} is torn", name(&b.1))),
        (&c.0, format!("{} is not the cover", name(&c.2))),
        (&d.0, format!("{} is not this book's", name(&d.1))),
        (&e.0, format!("{} is missing", name(&e.1))),
    ];

    let out = ws.run(&["verify"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    for (target, finding) in &want {
        assert!(
            said.lines()
                .any(|l| l.contains(&format!("→ {target}: sidecar")) && l.contains(finding)),
            "no line for {target}: {finding}\n{said}"
        );
    }

    let out = ws.run(&["verify", "--repair", "sidecars", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("4 sidecars written again"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fs::read(&a.2).unwrap(), saved[0].1);
    assert_eq!(fs::read(&c.2).unwrap(), saved[2].1);
    assert_eq!(fs::read(&d.1).unwrap(), saved[0].0, "not ours: left alone");
    for (target, opf, _) in [b, e] {
        let text = fs::read_to_string(opf).unwrap();
        assert!(read_opf(&text).title.is_some(), "{target}: {text}");
    }
    let out = ws.run(&["verify"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let findings: Vec<&str> = said.lines().filter(|l| l.contains(": sidecar ")).collect();
    assert_eq!(findings.len(), 1, "{said}");
    assert!(findings[0].contains(&want[3].1), "{said}");
}

/// A verify killed part-way keeps the sidecar verdicts of the books it had looked at: the next
/// verify continues the pass and looks only at the rest (so a sidecar removed since from a book
/// already looked at is not found by it, one removed from a book not yet looked at is), and its
/// count is the whole pass's. A new pass looks at every book again and finds both.
#[test]
fn an_interrupted_verify_keeps_its_sidecar_verdicts_and_looks_only_at_the_rest() {
    let ws = Workspace::with_corpus_sized(700, 2727, 4);
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed = ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'");
    let done_before = crate::verify::kill_a_verify_part_way(&ws);
    assert!(
        done_before > 0 && done_before < placed,
        "{done_before} of {placed}"
    );
    let pass = "(SELECT MAX(id) FROM verify_passes)";
    let target_ref = |sql: &str| -> String {
        ws.db()
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let looked_at = target_ref(&format!(
        "SELECT f.target_ref FROM files f JOIN verified v ON v.file_id = f.id
         WHERE v.pass_id = {pass} ORDER BY f.id LIMIT 1"
    ));
    let not_yet = target_ref(&format!(
        "SELECT target_ref FROM files WHERE state = 'uploaded' AND id NOT IN
           (SELECT file_id FROM verified WHERE pass_id = {pass})
         ORDER BY id DESC LIMIT 1"
    ));
    for book in [&looked_at, &not_yet] {
        fs::remove_file(sidecars_of(&ws.out(), book).0).unwrap();
    }

    let out = ws.run(&["verify"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    let both = format!("{said}{}", stderr(&out));
    assert!(
        both.contains("continuing the verify pass begun earlier"),
        "{both}"
    );
    assert!(
        said.contains(&format!(
            "sidecars: {placed} books looked at, 1 with sidecars not as bookferry writes them"
        )),
        "{said}"
    );
    let findings: Vec<&str> = said.lines().filter(|l| l.contains(": sidecar ")).collect();
    assert_eq!(findings.len(), 1, "{said}");
    assert!(
        findings[0].contains(&format!("→ {not_yet}: sidecar ")),
        "{said}"
    );

    let out = ws.run(&["verify"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "sidecars: {placed} books looked at, 2 with sidecars not as bookferry writes them"
        )),
        "{said}"
    );
}

/// A `.jpg` holding the book's cover in other bytes — what an earlier bookferry wrote before
/// its JPEG encoder (or PDF renderer) changed — is the cover to `verify`, not a finding; a
/// picture of the same size that is not the cover is still "not the cover".
#[test]
fn verify_takes_the_cover_in_other_bytes_as_the_cover() {
    let ws = Workspace::with_corpus_sized(40, 2525, 8);
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut pdfs: Vec<String> = uploaded(&ws.state())
        .into_iter()
        .filter(|b| b.2 == "pdf")
        .map(|b| b.1)
        .collect();
    pdfs.sort();
    assert!(pdfs.len() >= 2, "{pdfs:?}");
    let (same, other) = (&pdfs[0], &pdfs[1]);
    let reencode = |img: &image::DynamicImage| {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
            .encode_image(img)
            .unwrap();
        bytes
    };
    let jpg = sidecars_of(&ws.out(), same).1;
    let cover = fs::read(&jpg).unwrap();
    let again = reencode(&image::load_from_memory(&cover).unwrap());
    assert_ne!(again, cover);
    fs::write(&jpg, &again).unwrap();
    let jpg = sidecars_of(&ws.out(), other).1;
    let mut img = image::load_from_memory(&fs::read(&jpg).unwrap()).unwrap();
    img.invert();
    fs::write(&jpg, reencode(&img)).unwrap();

    let out = ws.run(&["verify"]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    let findings: Vec<&str> = said.lines().filter(|l| l.contains(": sidecar ")).collect();
    assert_eq!(findings.len(), 1, "{said}");
    assert!(
        findings[0].contains(&format!("→ {other}: sidecar "))
            && findings[0].contains("is not the cover"),
        "{said}"
    );
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `verify --repair sidecars` for a migration recorded without `--sidecars`: exit 2, one line
/// saying it has none, nothing repaired.
#[test]
fn repair_sidecars_without_sidecars_is_a_usage_error() {
    let ws = Workspace::with_corpus(3, 5);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = tree_sha1(&ws.out());
    let out = ws.run(&["verify", "--repair", "sidecars", "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("this migration writes no sidecars"), "{err}");
    assert_eq!(tree_sha1(&ws.out()), before);
}

/// A book recorded without its metadata (as the next run records a book a killed run placed
/// before its `metadata_cached` move was committed) whose source is gone since: verify works
/// its sidecars out from the placed copy (the same bytes) and finds them right, not "not this
/// book's".
#[test]
fn verify_knows_the_sidecars_of_a_book_recorded_without_metadata_whose_source_is_gone() {
    let ws = Workspace::with_corpus(6, 2424);
    let out = ws.migrate(&["--sidecars"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (source, target, _) = uploaded(&ws.state())
        .into_iter()
        .find(|b| b.2 == "epub")
        .expect("an EPUB");
    let db = rusqlite::Connection::open(ws.state()).unwrap();
    db.execute(
        "UPDATE files SET metadata = NULL, metadata_origin = NULL WHERE source_ref = ?1",
        [&source],
    )
    .unwrap();
    drop(db);
    fs::remove_file(ws.lib().join(&source)).unwrap();
    let out = ws.run(&["verify"]);
    let said = stdout(&out);
    assert!(
        !said.contains(": sidecar "),
        "{target}: a finding for right sidecars\n{said}"
    );
    assert!(
        said.contains("0 with sidecars not as bookferry writes them"),
        "{said}"
    );
}
