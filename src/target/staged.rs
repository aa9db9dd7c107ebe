//! Staged copies: for a local target in copy mode, the hash task writes a small file's bytes
//! to a temporary file in the target right after hashing them, while they are still in the
//! CPU's cache, and the transfer later only links or renames that file into place. The bytes
//! are read once and written once, the buffer is freed at once instead of waiting in memory
//! for the transfer, and the transfer is one directory operation.
//!
//! Where the filesystem can (Linux `O_TMPFILE`: ext4, XFS, btrfs, tmpfs, …), the staged file
//! has no name at all until the transfer links it at its destination (`linkat`): nothing to
//! clean up when it is not placed (the row turned out a duplicate, failed, or the run stopped
//! or was killed: the kernel frees a file that has no name once it is closed), and no
//! temporary name to add to and remove from the target's root. Elsewhere, or once too many
//! unnamed files are open, it is a file under the temporary prefix in the target's root,
//! renamed into place; one that is not moved is removed when its last holder drops it, and
//! one left by a killed run is removed by the next run, like any other temporary file of
//! bookferry's.

use super::folder::{commit_temp, TEMP_PREFIX};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Distinguishes staged files of one process (a row may be staged again after a retry).
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// This process's id, asked once (a syscall per file otherwise).
static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
/// Unnamed staged files open now: each holds a file descriptor until it is placed or dropped.
static OPEN_UNNAMED: AtomicUsize = AtomicUsize::new(0);
/// At most this many unnamed staged files open at once (the pipeline holds a few hundred
/// rows between hashing and transfer); past it, staged files get a name instead, so the
/// process never runs short of file descriptors for its sources.
const MAX_OPEN_UNNAMED: usize = 256;
/// Whether an unnamed file can be given a name here: `linkat` through `/proc/self/fd` needs
/// `/proc`.
static CAN_LINK_UNNAMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A file written into the target, waiting to be moved into place.
#[derive(Debug)]
pub struct Staged {
    backing: Backing,
    moved: AtomicBool,
}

#[derive(Debug)]
enum Backing {
    /// An `O_TMPFILE` file: no name until it is linked; closed once linked or dropped.
    Unnamed(Mutex<Option<File>>),
    /// A file under the temporary prefix, renamed into place.
    Named(PathBuf),
}

impl Staged {
    /// Write `bytes` to a new temporary file in `dir` (never replacing one): without a name
    /// where the filesystem allows, else under the temporary prefix. A partial file is removed
    /// on error.
    pub fn write(dir: &Path, row_id: i64, bytes: &[u8]) -> io::Result<Staged> {
        let can_link = *CAN_LINK_UNNAMED.get_or_init(|| Path::new("/proc/self/fd").is_dir());
        if can_link && OPEN_UNNAMED.fetch_add(1, Ordering::AcqRel) < MAX_OPEN_UNNAMED {
            match write_unnamed(dir, bytes) {
                Ok(file) => {
                    return Ok(Staged {
                        backing: Backing::Unnamed(Mutex::new(Some(file))),
                        moved: AtomicBool::new(false),
                    })
                }
                Err(e) if !unnamed_unsupported(&e) => {
                    OPEN_UNNAMED.fetch_sub(1, Ordering::AcqRel);
                    return Err(e);
                }
                Err(_) => {}
            }
            OPEN_UNNAMED.fetch_sub(1, Ordering::AcqRel);
        } else if can_link {
            OPEN_UNNAMED.fetch_sub(1, Ordering::AcqRel);
        }
        Staged::write_named(dir, row_id, bytes)
    }

    /// Write `bytes` to a new file under the temporary prefix in `dir` (removed again if the
    /// write fails; a file that was there already is left alone).
    fn write_named(dir: &Path, row_id: i64, bytes: &[u8]) -> io::Result<Staged> {
        let path = dir.join(format!(
            "{TEMP_PREFIX}{}-s{row_id}-{}",
            PID.get_or_init(std::process::id),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = file.write_all(bytes) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Staged {
            backing: Backing::Named(path),
            moved: AtomicBool::new(false),
        })
    }

    /// The staged file's temporary name, if it has one.
    pub fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::Named(path) => Some(path),
            Backing::Unnamed(_) => None,
        }
    }

    /// Move the file to `dest`: never over an existing file (`AlreadyExists`), unless
    /// `replace`. Once moved, dropping this no longer removes anything.
    pub fn move_to(&self, dest: &Path, replace: bool) -> io::Result<()> {
        if self.moved.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the staged copy was already moved",
            ));
        }
        match &self.backing {
            Backing::Named(path) => commit_temp(path, dest, replace)?,
            Backing::Unnamed(slot) => {
                let mut slot = slot.lock().map_err(|_| io::Error::other("poisoned"))?;
                let file = slot.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the staged copy is gone")
                })?;
                if replace {
                    // Link under a temporary name beside `dest`, then rename over it: `dest`
                    // is never missing nor half written.
                    let temp = dest.with_file_name(format!(
                        "{TEMP_PREFIX}{}-r{}",
                        PID.get_or_init(std::process::id),
                        COUNTER.fetch_add(1, Ordering::Relaxed)
                    ));
                    link_unnamed(file, &temp)?;
                    if let Err(e) = fs::rename(&temp, dest) {
                        let _ = fs::remove_file(&temp);
                        return Err(e);
                    }
                } else {
                    link_unnamed(file, dest)?;
                }
                // Placed: close it now rather than when the row's item is dropped.
                *slot = None;
                OPEN_UNNAMED.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.moved.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        match &self.backing {
            Backing::Named(path) => {
                if !self.moved.load(Ordering::Acquire) {
                    let _ = fs::remove_file(path);
                }
            }
            Backing::Unnamed(slot) => {
                let open = slot.lock().map(|mut s| s.take().is_some()).unwrap_or(false);
                if open {
                    OPEN_UNNAMED.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

/// A new unnamed file in `dir` holding `bytes`.
fn write_unnamed(dir: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// Errors that say the filesystem (or kernel) has no `O_TMPFILE`.
fn unnamed_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
    )
}

/// Give an unnamed file its name: `linkat` through `/proc/self/fd`, which needs no privilege;
/// fails with `AlreadyExists` if `dest` exists.
fn link_unnamed(file: &File, dest: &Path) -> io::Result<()> {
    let from = format!("/proc/self/fd/{}\0", file.as_raw_fd());
    let to = std::ffi::CString::new(dest.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr().cast(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Both kinds of staged file: never over a file already there, once only, and the bytes
    /// land whole.
    fn moves_into_place_once_and_never_over_another(staged: Staged, dir: &Path) {
        let taken = dir.join("taken.epub");
        fs::write(&taken, b"someone else's").expect("write");
        let err = staged.move_to(&taken, false).expect_err("must not replace");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&taken).expect("read"), b"someone else's");
        let dest = dir.join("book.epub");
        staged.move_to(&dest, false).expect("move");
        assert!(staged.move_to(&dir.join("again"), false).is_err());
        drop(staged);
        assert_eq!(fs::read(&dest).expect("read"), b"the bytes");
        assert_eq!(names_in(dir), ["book.epub", "taken.epub"]);
    }

    #[test]
    fn an_unnamed_staged_file_has_no_name_until_it_is_linked_into_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let staged = Staged::write(dir.path(), 7, b"the bytes").expect("stage");
        // The machines this runs on (ext4, tmpfs) have O_TMPFILE: nothing shows in the folder.
        assert!(staged.path().is_none(), "staged under a name: {staged:?}");
        assert!(names_in(dir.path()).is_empty());
        moves_into_place_once_and_never_over_another(staged, dir.path());
    }

    #[test]
    fn a_named_staged_file_is_renamed_into_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let staged = Staged::write_named(dir.path(), 7, b"the bytes").expect("stage");
        assert!(staged
            .path()
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX)));
        moves_into_place_once_and_never_over_another(staged, dir.path());
    }

    #[test]
    fn a_staged_file_may_replace_our_own_earlier_copy() {
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("book.epub");
        for named in [false, true] {
            fs::write(&dest, b"an earlier copy").expect("write");
            let staged = if named {
                Staged::write_named(dir.path(), 3, b"the new bytes")
            } else {
                Staged::write(dir.path(), 3, b"the new bytes")
            }
            .expect("stage");
            staged.move_to(&dest, true).expect("replace");
            drop(staged);
            assert_eq!(fs::read(&dest).expect("read"), b"the new bytes");
            assert_eq!(names_in(dir.path()), ["book.epub"], "named: {named}");
        }
    }

    #[test]
    fn a_staged_file_never_moved_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let named = Staged::write_named(dir.path(), 1, b"dup").expect("stage");
        let path = named.path().expect("named").to_path_buf();
        assert!(path.is_file());
        drop(named);
        assert!(!path.exists());
        drop(Staged::write(dir.path(), 2, b"dup").expect("stage"));
        assert!(names_in(dir.path()).is_empty());
    }
}
