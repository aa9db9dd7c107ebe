//! calibre's "save to disk" sidecars beside each book the folder target places (`run
//! --sidecars`): `<name>.opf`, the book's metadata as calibre saves it, and `<name>.jpg`, its
//! cover (the bytes the calibre target stores as `cover.jpg`), `<name>` being the book file's
//! name without its extension. Audiobookshelf, Komga and Jellyfin read them.
//!
//! They are written before the book, each under a temporary name then renamed into place, so
//! the flush that makes the book durable (the state writer's barrier: one `syncfs`) makes them
//! durable too: a book recorded `uploaded` has its sidecars, and a run killed in between leaves
//! sidecars the next run knows as its own. A sidecar never goes over a file that is not ours:
//! a `.opf` is ours when it names the book's uuid (the same for every format of one book), a
//! `.jpg` when it holds the cover's bytes or sits beside our `.opf`; any other file at a
//! sidecar's name takes the name as a file at the book's own name would (see [`Put::Taken`]).
//! What a crash leaves (sidecars of a book never placed, an adopted book's torn ones) and what
//! `verify` finds are `target::sidecar_state`'s.

use super::calibre::{cover_of, Candidate, NoCover};
use super::folder::commit_temp;
use super::staged::temp_name;
use super::Payload;
use crate::calibre::opf::{self, OpfBook};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Longest `.opf` read to tell whether it is ours (ours are a few KiB).
pub(super) const MAX_OPF: u64 = 1 << 20;

/// The sidecars of one file to place.
pub struct Sidecars<'a> {
    p: &'a Payload,
    book: OpfBook,
    calibre_id: String,
    /// Make a cover (`--no-covers`: none).
    covers: bool,
    /// The cover, made when first needed (a PDF's is rendered).
    cover: OnceLock<Option<Vec<u8>>>,
    /// Where the book's bytes are read to make the cover (else its source file).
    read_from: Option<PathBuf>,
}

/// What [`Sidecars::put`] did.
#[derive(Debug)]
pub enum Put {
    /// Written: these files are new (removed again by [`Put::undo`]).
    Written(Vec<PathBuf>),
    /// Ours were there already (another format of the book, or a killed run's): kept.
    Kept,
    /// A file that is not ours holds a sidecar's name: the book takes another name (` (2)`).
    Taken,
}

impl Put {
    /// Remove the sidecars this put made (the book could not take its name after all).
    pub fn undo(&self) {
        if let Put::Written(made) = self {
            for path in made {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// What stands at a sidecar's name.
#[derive(Debug, PartialEq, Eq)]
enum At {
    Free,
    Ours,
    Other,
}

impl<'a> Sidecars<'a> {
    /// The sidecars of `p` in the migration whose key is `seed` (its books' uuids derive from
    /// it, as the calibre target's do).
    pub fn of(p: &'a Payload, seed: &str, covers: bool) -> Sidecars<'a> {
        let (book, calibre_id) = Candidate::saved_opf(p, seed);
        Sidecars {
            p,
            book,
            calibre_id,
            covers,
            cover: OnceLock::new(),
            read_from: None,
        }
    }

    /// The same, making the cover from the book file at `path` (the placed copy, which verify
    /// has just found holding the recorded content) rather than from its source.
    pub fn reading_book_at(mut self, path: PathBuf) -> Sidecars<'a> {
        self.read_from = Some(path);
        self
    }

    /// The uuid the book's `.opf` names: what makes a `.opf` ours.
    pub(super) fn uuid(&self) -> &str {
        &self.book.uuid
    }

    /// The `.opf` text bookferry writes for the book, naming the cover `href` if any.
    pub(super) fn opf_text(&self, href: Option<&str>) -> String {
        opf::render_saved(&self.book, &self.calibre_id, href)
    }

    /// The cover's JPEG bytes, if the book has one (none with `--no-covers`).
    pub(super) fn cover_bytes(&self) -> Option<&[u8]> {
        self.cover()
    }

    /// The cover's JPEG bytes, if the file brings one (a warning when it cannot be made).
    fn cover(&self) -> Option<&[u8]> {
        self.cover
            .get_or_init(|| {
                self.make_cover().unwrap_or_else(|e| {
                    tracing::warn!("{}: sidecars without a cover: {e}", self.p.source_rel);
                    None
                })
            })
            .as_deref()
    }

    /// The cover the calibre target would store for the file (none with `--no-covers`).
    /// Before the book is placed: a file not kept in memory is read at its source.
    fn make_cover(&self) -> Result<Option<Vec<u8>>, NoCover> {
        if !self.covers {
            return Ok(None);
        }
        cover_of(
            self.p,
            self.read_from.as_deref().unwrap_or(&self.p.source_path),
        )
    }

    /// Put the sidecars of the book file `book_name` into `dir`, before the book goes there:
    /// each written under a temporary name and renamed to its name, never over a file that is
    /// not ours. `replace`: the book replaces our own earlier copy (its source changed), and
    /// so do its sidecars.
    pub fn put(&self, dir: &Path, book_name: &str, replace: bool) -> io::Result<Put> {
        let stem = stem_of(book_name);
        let jpg_name = format!("{stem}.jpg");
        let opf_path = dir.join(format!("{stem}.opf"));
        let jpg_path = dir.join(&jpg_name);
        let opf_at = self.opf_at(&opf_path)?;
        match opf_at {
            At::Other => return Ok(Put::Taken),
            At::Ours if !replace => return Ok(Put::Kept),
            At::Ours | At::Free => {}
        }
        let cover = self.cover();
        let jpg_at = match fs::symlink_metadata(&jpg_path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => At::Free,
            Err(e) => return Err(e),
            Ok(_) if opf_at == At::Ours => At::Ours,
            Ok(m) if m.is_file() && cover.is_some_and(|c| m.len() == c.len() as u64) => {
                if cover.is_some_and(|c| fs::read(&jpg_path).is_ok_and(|there| there == c)) {
                    At::Ours
                } else {
                    At::Other
                }
            }
            Ok(_) => At::Other,
        };
        if jpg_at == At::Other {
            return Ok(Put::Taken);
        }
        let mut made = Vec::new();
        let mut place = |bytes: &[u8], dest: &Path, at: &At| -> io::Result<bool> {
            let over = match at {
                At::Free => false,
                At::Ours if replace => true,
                // Ours with these very bytes (a killed run's), or beside our own `.opf`.
                At::Ours | At::Other => return Ok(true),
            };
            match write_into_place(dir, bytes, dest, over) {
                Ok(()) => {
                    if !over {
                        made.push(dest.to_path_buf());
                    }
                    Ok(true)
                }
                // Another process took the name since it was looked at.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        };
        let placed = (|| {
            if let Some(jpeg) = cover {
                if !place(jpeg, &jpg_path, &jpg_at)? {
                    return Ok(false);
                }
            }
            let href = cover.map(|_| jpg_name.as_str());
            let text = opf::render_saved(&self.book, &self.calibre_id, href);
            place(text.as_bytes(), &opf_path, &opf_at)
        })();
        let put = Put::Written(made);
        match placed {
            Ok(true) => Ok(put),
            Ok(false) => {
                put.undo();
                Ok(Put::Taken)
            }
            Err(e) => {
                put.undo();
                Err(e)
            }
        }
    }

    /// Whether the `.opf` at `path` is free, ours (it names this book's uuid) or another's.
    fn opf_at(&self, path: &Path) -> io::Result<At> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(At::Free),
            Err(e) => Err(e),
            Ok(m) if !m.is_file() => Ok(At::Other),
            Ok(_) => {
                let mut text = String::new();
                let read = File::open(path).and_then(|f| f.take(MAX_OPF).read_to_string(&mut text));
                match read {
                    Ok(_) if opf_uuid(&text) == Some(self.book.uuid.as_str()) => Ok(At::Ours),
                    // Not UTF-8, or not ours.
                    _ => Ok(At::Other),
                }
            }
        }
    }
}

/// Write `bytes` to a temporary file in `dir`, then rename it to `dest` (over it only when
/// `over`; else failing with `AlreadyExists` when the name is taken). Not synced: the target's
/// flush syncs everything at once.
pub(super) fn write_into_place(
    dir: &Path,
    bytes: &[u8],
    dest: &Path,
    over: bool,
) -> io::Result<()> {
    let temp = dir.join(temp_name("sidecar"));
    let res = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| commit_temp(&temp, dest, over));
    if res.is_err() {
        let _ = fs::remove_file(&temp);
    }
    res
}

/// The uuid an OPF names (`<dc:identifier … id="uuid_id">UUID</dc:identifier>`), as calibre
/// writes it.
pub(super) fn opf_uuid(text: &str) -> Option<&str> {
    let start = text.find("id=\"uuid_id\">")? + "id=\"uuid_id\">".len();
    let len = text[start..].find('<')?;
    Some(text[start..start + len].trim())
}

/// A book file's name without its extension (`Dune.fb2.zip` → `Dune`): its sidecars' name.
pub fn stem_of(name: &str) -> &str {
    if name.to_ascii_lowercase().ends_with(".fb2.zip") && name.len() > ".fb2.zip".len() {
        return &name[..name.len() - ".fb2.zip".len()];
    }
    match name.rfind('.').filter(|&i| i > 0) {
        Some(i) => &name[..i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_are_named_by_the_book_files_stem() {
        assert_eq!(stem_of("Title - Author.epub"), "Title - Author");
        assert_eq!(stem_of("Dune.FB2.zip"), "Dune");
        assert_eq!(stem_of("a.b.pdf"), "a.b");
        assert_eq!(stem_of("noext"), "noext");
    }

    #[test]
    fn the_uuid_of_an_opf_as_calibre_writes_it() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/sidecars/with-cover.opf"
        ))
        .unwrap();
        assert_eq!(
            opf_uuid(&text),
            Some("f1a50026-eb58-43e0-ac12-247f8b70b887")
        );
        assert_eq!(opf_uuid("<package/>"), None);
    }
}
