//! Reading a calibre library for `bookferry verify`, strictly read-only: `metadata.db` through
//! `crate::calibre::read`'s `mode=ro` connection (never a write, a write lock or a journal; a
//! calibre write in progress is waited out for a bounded time), one short read transaction per
//! batch of books. A book is found by its id — the `(id)` of the folder it was placed in — and
//! checked by its uuid, never by its path: calibre (and Calibre-Web) move a book's folder and
//! rename its files when its title or author is edited, so the format file is looked for where
//! `books.path` and `data.name` say it is now.
//!
//! Also here: the uuid this migration gave a file's book (the target's own derivation, see
//! `identity`), the rule that tells a format file calibre itself rewrote from a damaged one
//! ([`calibre_rewrote`]), and the one write `verify` ever makes, on request only: moving a
//! damaged file out of the library before `--repair changed` has a good copy put back
//! ([`move_out`]).

use super::identity::Identified;
use crate::calibre::paths::{book_id_of, format_name, format_rel_path, is_safe_rel_path};
use crate::calibre::read::{ReadOnlyDb, DEFAULT_BUSY_TIMEOUT};
use crate::calibre::ReadError;
use crate::hash::Digests;
use crate::metadata::archive;
use crate::metadata::{Metadata, Origin};
use crate::target::Payload;
use rusqlite::Connection;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A calibre library opened for reading by `verify`.
pub struct LibraryView {
    root: PathBuf,
    db: ReadOnlyDb,
    conn: Connection,
    library_id: String,
}

/// A book as `metadata.db` has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookNow {
    pub uuid: Option<String>,
    /// `books.path`: the book's folder, relative to the library.
    pub path: String,
    /// `data.format` (upper case) → its file.
    pub formats: HashMap<String, FormatNow>,
}

/// A format of a book as `data` has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatNow {
    /// `data.name`: the file's name without its extension.
    pub name: String,
    /// `data.uncompressed_size`: the size calibre recorded when it last wrote the file.
    pub recorded_size: u64,
}

/// Where a book's file of some format is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatAt {
    /// At this path relative to the library, with the size calibre recorded.
    File {
        rel_path: String,
        recorded_size: u64,
    },
    /// The book has no file of this format.
    NoFormat,
    /// `books.path` or `data.name` would lead out of the library: not read.
    Unsafe,
}

impl BookNow {
    /// Where this book's file of `format` (a row's lowercase extension) is now.
    pub fn format_at(&self, format: &str) -> FormatAt {
        let Some(fmt) = format_name(format) else {
            return FormatAt::NoFormat;
        };
        let Some(f) = self.formats.get(&fmt) else {
            return FormatAt::NoFormat;
        };
        if !is_safe_rel_path(&self.path) || !is_safe_rel_path(&f.name) {
            return FormatAt::Unsafe;
        }
        FormatAt::File {
            rel_path: format_rel_path(&self.path, &f.name, &fmt),
            recorded_size: f.recorded_size,
        }
    }
}

impl LibraryView {
    /// Open the library at `root` read-only; its schema checked and its id read.
    pub fn open(root: &Path) -> Result<LibraryView, ReadError> {
        let db = ReadOnlyDb::of_library(root, DEFAULT_BUSY_TIMEOUT)?;
        let conn = db.open()?;
        db.check_schema(&conn)?;
        let library_id = conn
            .query_row("SELECT uuid FROM library_id", [], |r| r.get(0))
            .map_err(|e| db.error("reading library_id", e))?;
        Ok(LibraryView {
            root: root.to_path_buf(),
            db,
            conn,
            library_id,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What derived uuids are made from for the migration with this key (as the target's).
    pub fn uuid_seed(&self, migration_key: &str) -> String {
        format!("{}\0{migration_key}", self.library_id)
    }

    /// The books with these ids that the library holds now, read in one read transaction (so
    /// a book's folder and formats agree).
    pub fn books(&self, ids: &[i64]) -> Result<HashMap<i64, BookNow>, ReadError> {
        let err = |what| move |e| self.db.error(what, e);
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let marks = vec!["?"; ids.len()].join(",");
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(err("beginning a read"))?;
        {
            let mut st = tx
                .prepare(&format!(
                    "SELECT id, uuid, path FROM books WHERE id IN ({marks})"
                ))
                .map_err(err("reading books"))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(ids), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(err("reading books"))?;
            for row in rows {
                let (id, uuid, path) = row.map_err(err("reading books"))?;
                out.insert(
                    id,
                    BookNow {
                        uuid,
                        path,
                        formats: HashMap::new(),
                    },
                );
            }
            let mut st = tx
                .prepare(&format!(
                    "SELECT book, format, name, uncompressed_size FROM data WHERE book IN ({marks})"
                ))
                .map_err(err("reading formats"))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(ids), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(err("reading formats"))?;
            for row in rows {
                let (book, format, name, size) = row.map_err(err("reading formats"))?;
                if let Some(b) = out.get_mut(&book) {
                    b.formats.insert(
                        format.to_uppercase(),
                        FormatNow {
                            name,
                            recorded_size: size.max(0) as u64,
                        },
                    );
                }
            }
        }
        tx.commit().map_err(err("ending a read"))?;
        Ok(out)
    }
}

/// The book id a calibre row's `target_ref` (`Author/Title (id)/file.ext`) was placed in.
pub fn placed_book_id(target_ref: &str) -> Option<i64> {
    let (dir, _) = target_ref.rsplit_once('/')?;
    book_id_of(dir.rsplit('/').next()?)
}

/// What `verify` knows of a migrated file, to work out its book's uuid.
pub struct MigratedFile<'a> {
    pub row_id: i64,
    pub source_path: &'a Path,
    pub source_rel: &'a str,
    pub file_name: String,
    pub size: u64,
    pub format: &'a str,
    pub metadata: Option<Metadata>,
    pub origin: Option<Origin>,
}

/// The uuid the book of this file got from this migration (`seed`: [`LibraryView::uuid_seed`]):
/// a calibre source book's own uuid, else the one derived from its group — worked out exactly
/// as the target did when it placed the file, from the metadata recorded in its row.
pub fn book_uuid(f: MigratedFile<'_>, seed: &str) -> String {
    let p = Payload {
        row_id: f.row_id,
        source_path: f.source_path.to_path_buf(),
        source_rel: f.source_rel.to_string(),
        file_name: f.file_name,
        size: f.size,
        format: f.format.to_string(),
        digests: Digests {
            sha1: None,
            blake3: String::new(),
        },
        metadata: f.metadata,
        origin: f.origin,
        data: None,
        staged: None,
        previous_ref: None,
    };
    Identified::of(&p, seed).uuid
}

/// Formats that are ZIP containers: a whole one is read to its end, every entry's CRC-32
/// checked, before a rewrite is put down to calibre.
const ZIP_FORMATS: &[&str] = &["epub", "kepub", "cbz", "docx", "odt", "htmlz", "fb2.zip"];

/// Whether a format file whose bytes are not the ones placed was rewritten by calibre itself
/// (metadata embedded on edit or download, a polish, a save from its editor) rather than
/// damaged. The rule, and why:
///
/// 1. calibre's own record accounts for the file: `data.uncompressed_size` (`recorded_size`) is
///    the file's size now, and not the size placed. calibre records the size of every format
///    file it writes (`update_fmt`, as `calibredb embed_metadata` does) and nothing else
///    does; a file truncated, copied over or garbled outside calibre leaves the record at the
///    size placed (bookferry recorded that size when it added the file).
/// 2. For a ZIP container (EPUB, CBZ, …): the file is a whole archive — every entry reads to
///    its end with its CRC-32 right — so a file damaged after calibre rewrote it is not taken
///    for calibre's.
///
/// A rewrite by calibre that happens to keep the size, or damage that keeps calibre's
/// recorded size in a format that is not a ZIP (PDF, AZW3), is beyond this rule: the first is
/// reported as a change (the safe side: nothing is repaired without being asked), the second
/// needs calibre's size record and the file's size to agree by chance.
pub fn calibre_rewrote(
    path: &Path,
    format: &str,
    size_now: u64,
    placed_size: u64,
    recorded_size: u64,
) -> bool {
    if size_now != recorded_size || size_now == placed_size {
        return false;
    }
    if ZIP_FORMATS.contains(&format.to_ascii_lowercase().as_str()) {
        return whole_zip(path);
    }
    true
}

/// Whether a ZIP archive reads whole: every entry to its end (where its CRC-32 is checked).
fn whole_zip(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let Ok(mut zip) = archive::open(io::BufReader::new(file)) else {
        return false;
    };
    (0..zip.len()).all(|i| {
        zip.by_index(i)
            .ok()
            .is_some_and(|mut entry| io::copy(&mut entry, &mut io::sink()).is_ok())
    })
}

/// Where `verify --repair changed` puts the damaged files of the library at `root`: a folder
/// beside it, `<library>.bookferry-damaged`, never inside it (calibre would list the files
/// there as unknown).
pub fn damaged_folder(root: &Path) -> PathBuf {
    let mut name = root
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".bookferry-damaged");
    root.with_file_name(name)
}

/// Move the file at `rel_path` in the library at `root` out of it, to the same path under
/// [`damaged_folder`] (` (2)`, ` (3)`, … before the extension when that name is taken): linked
/// at its new name (which never replaces a file), then unlinked from the library. Returns
/// where it went.
pub fn move_out(root: &Path, rel_path: &str) -> io::Result<PathBuf> {
    if !is_safe_rel_path(rel_path) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path leads out of the library",
        ));
    }
    let from = root.join(rel_path);
    let first = damaged_folder(root).join(rel_path);
    if let Some(dir) = first.parent() {
        fs::create_dir_all(dir)?;
    }
    let (stem, ext) = match first.file_name().and_then(|n| n.to_str()) {
        Some(n) => match n.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), format!(".{e}")),
            None => (n.to_string(), String::new()),
        },
        None => (String::new(), String::new()),
    };
    let mut to = first.clone();
    for n in 2.. {
        match fs::hard_link(&from, &to) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 10_000 => {
                to = first.with_file_name(format!("{stem} ({n}){ext}"));
            }
            Err(e) => return Err(e),
        }
    }
    fs::remove_file(&from)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn epub(body: &str) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("mimetype", opts).unwrap();
        z.write_all(b"application/epub+zip").unwrap();
        z.start_file("OEBPS/c1.xhtml", opts).unwrap();
        z.write_all(body.as_bytes()).unwrap();
        z.finish().unwrap().into_inner()
    }

    #[test]
    fn the_book_id_is_the_placed_folders() {
        assert_eq!(placed_book_id("A B/Dune (12)/Dune - A B.epub"), Some(12));
        assert_eq!(placed_book_id("A B/Dune (x)/Dune - A B.epub"), None);
        assert_eq!(placed_book_id("Dune - A B.epub"), None);
    }

    /// calibre's record must account for the new size; a ZIP must be whole.
    #[test]
    fn only_a_whole_file_of_the_size_calibre_recorded_is_calibres() {
        let dir = tempfile::tempdir().unwrap();
        let rewritten = dir.path().join("r.epub");
        let bytes = epub(&"calibre rewrote me ".repeat(200));
        fs::write(&rewritten, &bytes).unwrap();
        let n = bytes.len() as u64;
        assert!(calibre_rewrote(&rewritten, "epub", n, n - 100, n));
        // calibre's record still says the size placed: not calibre's doing.
        assert!(!calibre_rewrote(&rewritten, "epub", n, n - 100, n - 100));
        // The size placed: nothing calibre's record can tell.
        assert!(!calibre_rewrote(&rewritten, "epub", n, n, n));
        // Same size as calibre recorded, but garbled inside: damage.
        let mut garbled = bytes.clone();
        let at = garbled.len() / 2;
        garbled[at] ^= 0x55;
        let g = dir.path().join("g.epub");
        fs::write(&g, &garbled).unwrap();
        assert!(!calibre_rewrote(&g, "epub", n, n - 100, n));
        // A format that is no ZIP: calibre's record alone.
        assert!(calibre_rewrote(&g, "pdf", n, n - 100, n));
    }

    #[test]
    fn a_damaged_file_moves_beside_the_library_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("Library");
        fs::create_dir_all(lib.join("A/T (1)")).unwrap();
        fs::write(lib.join("A/T (1)/T - A.epub"), "first").unwrap();
        let to = move_out(&lib, "A/T (1)/T - A.epub").unwrap();
        assert_eq!(
            to,
            dir.path()
                .join("Library.bookferry-damaged/A/T (1)/T - A.epub")
        );
        assert!(!lib.join("A/T (1)/T - A.epub").exists());
        fs::write(lib.join("A/T (1)/T - A.epub"), "second").unwrap();
        let again = move_out(&lib, "A/T (1)/T - A.epub").unwrap();
        assert_eq!(again.file_name().unwrap(), "T - A (2).epub");
        assert_eq!(fs::read(&to).unwrap(), b"first");
        assert_eq!(fs::read(&again).unwrap(), b"second");
        assert!(move_out(&lib, "../x").is_err());
    }
}
