//! What stands at a placed book's sidecar names (`target::sidecars`) against what bookferry
//! writes there, and the two ways bookferry puts that right: [`check`] (what `verify` reports)
//! and [`mend`] (a book adopted after a crash, `verify --repair sidecars`) write a sidecar that
//! is missing or torn; [`remove_strays`] removes the sidecars a killed run wrote for a book it
//! never placed, when no book owns them.
//!
//! Only ours are ever written over or removed, by the rule `target::sidecars` places them by: a
//! `.opf` is ours when it names the book's uuid; a `.jpg` when it holds the cover's bytes or
//! sits beside our `.opf`. A torn sidecar (what a power loss leaves of a file renamed into place
//! before its bytes reached the disk: empty, all zero bytes, or cut short) is ours too when
//! what is there is a part of what bookferry writes. Anything else at a sidecar's name is
//! reported and left alone.

use super::sidecars::{opf_uuid, stem_of, write_into_place, Sidecars, MAX_OPF};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Longest `.jpg` read whole to tell whether it is whole (covers are at most a few MiB).
const MAX_JPG: u64 = 64 << 20;

/// What is wrong with one sidecar of a placed book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{0} is torn (empty, zeroed or cut short)")]
    Torn(String),
    #[error("{0} is not the cover bookferry writes for the book")]
    NotTheCover(String),
    #[error("{0} is not this book's (it names another book or none): left alone")]
    NotOurs(String),
    #[error("cannot be read: {0}")]
    Unreadable(String),
}

impl Finding {
    /// Whether [`mend`] writes the sidecar anew (never over a file that is not ours).
    pub fn mendable(&self) -> bool {
        !matches!(self, Finding::NotOurs(_) | Finding::Unreadable(_))
    }
}

/// How a sidecar's file compares with what bookferry writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Is {
    Right,
    Missing,
    Torn,
    /// Ours by the rule, other bytes (a `.jpg` beside our `.opf`).
    Other,
    NotOurs,
}

/// The look at one book's sidecars.
struct Look {
    opf: Is,
    /// `None`: no `.jpg` is expected (our `.opf` names none, or the book has no cover).
    jpg: Option<Is>,
}

/// The names of the sidecars of the book file `book_name`: (`.opf`, `.jpg`).
fn names_of(book_name: &str) -> (String, String) {
    let stem = stem_of(book_name);
    (format!("{stem}.opf"), format!("{stem}.jpg"))
}

/// What stands at a sidecar's name.
enum There {
    Nothing,
    /// A folder, a symlink, a FIFO…: never ours, never read.
    NotAFile,
    /// A regular file's first bytes.
    File(Vec<u8>),
}

/// Read up to `max` bytes of what stands at `path`.
fn read_file(path: &Path, max: u64) -> io::Result<There> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(There::Nothing),
        Err(e) => return Err(e),
        Ok(m) if !m.is_file() => return Ok(There::NotAFile),
        Ok(_) => {}
    }
    let mut bytes = Vec::new();
    File::open(path)?.take(max).read_to_end(&mut bytes)?;
    Ok(There::File(bytes))
}

/// Whether `there` is what a power loss can leave of `want` written and renamed into place:
/// empty, zero bytes, or a part of it (cut short, or with zeroed blocks).
fn torn(there: &[u8], want: &[u8]) -> bool {
    there.len() < want.len() && there.iter().zip(want).all(|(a, b)| a == b || *a == 0)
        || there.len() == want.len() && there != want && there.iter().all(|b| *b == 0)
}

/// Mean difference of grey level (of 255) two JPEGs of one picture may have: re-encoding, at
/// another quality or by another encoder, moves a page's pixels by about 1; another picture
/// of the same size by tens.
const SAME_PICTURE_MEAN: f64 = 4.0;

/// Whether `jpg` is the picture `cover` is, in other bytes: a cover an earlier bookferry wrote
/// with another JPEG encoder (or PDF renderer). Both decode, to the same size, and their grey
/// levels differ by at most [`SAME_PICTURE_MEAN`] on average.
fn same_picture(jpg: &[u8], cover: &[u8]) -> bool {
    let grey = |bytes: &[u8]| image::load_from_memory(bytes).ok().map(|i| i.to_luma8());
    let (Some(a), Some(b)) = (grey(jpg), grey(cover)) else {
        return false;
    };
    if a.dimensions() != b.dimensions() || a.as_raw().is_empty() {
        return false;
    }
    let diff: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    diff as f64 / a.as_raw().len() as f64 <= SAME_PICTURE_MEAN
}

/// How a `.jpg` of ours is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Against the cover's bytes, made again (for a PDF, its first page rendered).
    Compared,
    /// Whole (a JPEG from its start marker to its end marker, not zeroed) beside our `.opf`
    /// that names it is enough: all a crash can do to it is cut or zero it. Not made again.
    WholeIsEnough,
}

/// Whether `bytes` are a whole JPEG: SOI at the start, EOI at the end.
fn whole_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes.starts_with(&[0xFF, 0xD8]) && bytes.ends_with(&[0xFF, 0xD9])
}

fn look(s: &Sidecars, dir: &Path, book_name: &str, cover: Cover) -> io::Result<Look> {
    let (opf_name, jpg_name) = names_of(book_name);
    let (opf, opf_names_cover) = match read_file(&dir.join(&opf_name), MAX_OPF)? {
        There::Nothing => (Is::Missing, false),
        There::NotAFile => (Is::NotOurs, false),
        There::File(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            if opf_uuid(&text) == Some(s.uuid()) {
                (Is::Right, !text.contains("<guide/>"))
            } else {
                let href = s.cover_bytes().map(|_| jpg_name.as_str());
                let want = s.opf_text(href);
                if bytes.iter().all(|b| *b == 0) || torn(&bytes, want.as_bytes()) {
                    (Is::Torn, false)
                } else {
                    (Is::NotOurs, false)
                }
            }
        }
    };
    let jpg = match opf {
        // An `.opf` of ours that names no cover: the book has none (or `--no-covers`).
        Is::Right if !opf_names_cover => None,
        Is::Right
            if cover == Cover::WholeIsEnough
                && matches!(read_file(&dir.join(&jpg_name), MAX_JPG)?,
                    There::File(b) if whole_jpeg(&b)) =>
        {
            Some(Is::Right)
        }
        _ => match s.cover_bytes() {
            None => None,
            Some(cover) => {
                match read_file(&dir.join(&jpg_name), MAX_JPG)? {
                    There::Nothing => Some(Is::Missing),
                    There::NotAFile => Some(Is::NotOurs),
                    There::File(bytes) if bytes == cover => Some(Is::Right),
                    There::File(bytes) if torn(&bytes, cover) => Some(Is::Torn),
                    There::File(bytes) if same_picture(&bytes, cover) => Some(Is::Right),
                    // Beside our `.opf` (torn or whole): ours.
                    There::File(_) if matches!(opf, Is::Right | Is::Torn) => Some(Is::Other),
                    There::File(_) => Some(Is::NotOurs),
                }
            }
        },
    };
    Ok(Look { opf, jpg })
}

fn finding(is: Is, name: String) -> Option<Finding> {
    match is {
        Is::Right => None,
        Is::Missing => Some(Finding::Missing(name)),
        Is::Torn => Some(Finding::Torn(name)),
        Is::Other => Some(Finding::NotTheCover(name)),
        Is::NotOurs => Some(Finding::NotOurs(name)),
    }
}

/// What is wrong with the sidecars of the book file `book_name` in `dir` (nothing: they are
/// what bookferry writes). A `.opf` of ours is right when it names the book's uuid (its dates
/// are the run's, so its text is not compared); a `.jpg` when it holds the cover's bytes, or
/// the same picture in other bytes (`same_picture`: written by an earlier bookferry).
pub fn check(s: &Sidecars, dir: &Path, book_name: &str) -> io::Result<Vec<Finding>> {
    let (opf_name, jpg_name) = names_of(book_name);
    let l = look(s, dir, book_name, Cover::Compared)?;
    Ok([
        finding(l.opf, opf_name),
        l.jpg.and_then(|j| finding(j, jpg_name)),
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// Write the sidecars of the book file `book_name` in `dir` that are missing, torn or (a
/// `.jpg` beside our `.opf`) not the cover; never one at a name a file not ours holds. Not
/// synced: the caller's flush makes them durable. `cover`: how a `.jpg` there is judged.
/// Returns what was put right.
pub fn mend(s: &Sidecars, dir: &Path, book_name: &str, cover: Cover) -> io::Result<Vec<Finding>> {
    let (opf_name, jpg_name) = names_of(book_name);
    let l = look(s, dir, book_name, cover)?;
    let mut mended = Vec::new();
    let cover = s.cover_bytes();
    if let (Some(is), Some(cover)) = (l.jpg, cover) {
        if let Some(f) = finding(is, jpg_name.clone()).filter(Finding::mendable) {
            let over = is != Is::Missing;
            put(dir, cover, &jpg_name, over)?;
            mended.push(f);
        }
    }
    if let Some(f) = finding(l.opf, opf_name.clone()).filter(Finding::mendable) {
        // A cover is named when ours is there now (`NotOurs`: another's `.jpg`, not named).
        let cover_there = cover.is_some() && !matches!(l.jpg, Some(Is::NotOurs) | None);
        let text = s.opf_text(cover_there.then_some(jpg_name.as_str()));
        put(dir, text.as_bytes(), &opf_name, l.opf != Is::Missing)?;
        mended.push(f);
    }
    Ok(mended)
}

/// Write `bytes` as `name` in `dir`: over what is there when `over`, else only where nothing
/// is (a file that appeared meanwhile is left alone).
fn put(dir: &Path, bytes: &[u8], name: &str, over: bool) -> io::Result<()> {
    match write_into_place(dir, bytes, &dir.join(name), over) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        res => res,
    }
}

/// What [`remove_strays`] found at one name the transfer may have tried.
#[derive(Debug, PartialEq, Eq)]
pub enum Strays {
    /// The transfer would have put the book's sidecars here (and went no further): these were
    /// removed (or none were ours without a book).
    Here(Vec<PathBuf>),
    /// A file not ours holds a sidecar's name: the transfer went on to the next name.
    Passed,
}

/// The sidecars a killed run wrote for the book file `book_name` in `dir` without placing the
/// book (its name is free): removed when they are ours — the `.opf` names the book's uuid, the
/// `.jpg` holds its cover's bytes — and `owned` says no file there has their stem (another
/// format of the book, which shares them, or any other file of that name). Not synced: a
/// removal lost to a power loss is made again by the next run.
pub fn remove_strays(
    s: &Sidecars,
    dir: &Path,
    book_name: &str,
    owned: impl Fn(&str) -> bool,
) -> io::Result<Strays> {
    let (opf_name, jpg_name) = names_of(book_name);
    let (opf, jpg) = (dir.join(&opf_name), dir.join(&jpg_name));
    let opf_ours = match read_file(&opf, MAX_OPF)? {
        There::Nothing => None,
        There::NotAFile => Some(false),
        There::File(bytes) => Some(opf_uuid(&String::from_utf8_lossy(&bytes)) == Some(s.uuid())),
    };
    let jpg_there = fs::symlink_metadata(&jpg).is_ok();
    // (The cover is made only when a `.jpg` is there to compare.)
    let jpg_ours = match jpg_there.then(|| s.cover_bytes()).flatten() {
        Some(c) => matches!(read_file(&jpg, c.len() as u64 + 1)?, There::File(b) if b == c),
        None => false,
    };
    match opf_ours {
        Some(false) => return Ok(Strays::Passed),
        None if jpg_there && !jpg_ours => return Ok(Strays::Passed),
        _ => {}
    }
    let mut removed = Vec::new();
    if owned(stem_of(book_name)) {
        return Ok(Strays::Here(removed));
    }
    if jpg_ours {
        remove(&jpg, &mut removed)?;
    }
    if opf_ours == Some(true) {
        remove(&opf, &mut removed)?;
    }
    Ok(Strays::Here(removed))
}

fn remove(path: &Path, removed: &mut Vec<PathBuf>) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            removed.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Payload;

    /// A TXT book `Dune - Frank Herbert.txt` (no cover), its source in `dir`.
    fn dune(dir: &Path) -> Payload {
        let path = dir.join("Dune - Frank Herbert.txt");
        fs::write(&path, "spice ".repeat(50)).unwrap();
        let got = crate::metadata::extract_from_file("txt", &path, 300, "Dune - Frank Herbert.txt");
        Payload {
            row_id: 1,
            source_path: path,
            source_rel: "Dune - Frank Herbert.txt".into(),
            file_name: "Dune - Frank Herbert.txt".into(),
            size: 300,
            format: "txt".into(),
            digests: crate::hash::hash_bytes(&[]),
            metadata: Some(got.metadata),
            origin: Some(got.origin),
            data: None,
            staged: None,
            previous_ref: None,
        }
    }

    /// Strays are removed only when ours (the `.opf` names the book's uuid) and owned by no
    /// file of their stem; a `.opf` not ours is passed and left byte for byte.
    #[test]
    fn only_our_sidecars_that_no_file_owns_are_removed_as_strays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dune(dir.path());
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let s = Sidecars::of(&p, "seed", true);
        let book = "Dune - Frank Herbert.txt";
        let opf = out.join("Dune - Frank Herbert.opf");
        let nobody = |_: &str| false;

        s.put(&out, book, false).unwrap();
        assert!(opf.is_file());
        let removed = remove_strays(&s, &out, book, |_| true).unwrap();
        assert_eq!(removed, Strays::Here(vec![]), "owned: kept");
        assert!(opf.is_file());
        let removed = remove_strays(&s, &out, book, nobody).unwrap();
        assert_eq!(removed, Strays::Here(vec![opf.clone()]));
        assert!(!opf.exists());

        fs::write(&opf, "<package>another book's</package>").unwrap();
        assert_eq!(
            remove_strays(&s, &out, book, nobody).unwrap(),
            Strays::Passed
        );
        assert_eq!(
            fs::read_to_string(&opf).unwrap(),
            "<package>another book's</package>"
        );
        // And never written over by a mend: a finding, left alone.
        assert_eq!(
            mend(&s, &out, book, Cover::Compared).unwrap(),
            Vec::<Finding>::new(),
            "nothing of ours to mend"
        );
        assert_eq!(
            check(&s, &out, book).unwrap(),
            [Finding::NotOurs("Dune - Frank Herbert.opf".into())]
        );
        // Torn (empty): ours, written again.
        fs::write(&opf, "").unwrap();
        assert_eq!(
            mend(&s, &out, book, Cover::Compared).unwrap(),
            [Finding::Torn("Dune - Frank Herbert.opf".into())]
        );
        assert_eq!(check(&s, &out, book).unwrap(), Vec::<Finding>::new());
    }

    #[test]
    fn torn_is_a_part_of_what_bookferry_writes_and_a_whole_jpeg_has_both_markers() {
        let want = b"<package>uuid</package>";
        assert!(torn(b"", want));
        assert!(torn(b"<package>u", want));
        assert!(torn(&[0; 23], want));
        assert!(torn(b"<pack\0\0\0\0", want));
        assert!(!torn(want, want), "whole");
        assert!(!torn(b"<other/>", want));
        assert!(!torn(b"<package>uuid</package> and more", want));
        assert!(whole_jpeg(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(!whole_jpeg(&[0xFF, 0xD8, 1, 2]), "cut short");
        assert!(!whole_jpeg(&[0; 6]), "zeroed");
    }
}
