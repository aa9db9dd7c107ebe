//! Staged copies: for a local target in copy mode, the hash task writes a small file's bytes
//! to a temporary file in the target right after hashing them, while they are still in the
//! CPU's cache, and the transfer later only renames that file into place. The bytes are read
//! once and written once, the buffer is freed at once instead of waiting in
//! memory for the transfer, and the transfer is a rename. A staged file that is not moved
//! into place (the row turned out a duplicate, failed, or the run stopped) is removed when its
//! last holder drops it; one left by a killed run carries the temporary prefix and is removed
//! by the next run, like any other temporary file of bookferry's.

use super::folder::{commit_temp, TEMP_PREFIX};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Distinguishes staged files of one process (a row may be staged again after a retry).
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// This process's id, asked once (a syscall per file otherwise).
static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// A file written into the target under a temporary name, waiting to be moved into place.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    moved: AtomicBool,
}

impl Staged {
    /// Write `bytes` to a new temporary file in `dir` (never replacing one). A partial file is
    /// removed on error.
    pub fn write(dir: &Path, row_id: i64, bytes: &[u8]) -> io::Result<Staged> {
        let path = dir.join(format!(
            "{TEMP_PREFIX}{}-s{row_id}-{}",
            PID.get_or_init(std::process::id),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let staged = Staged {
            path,
            moved: AtomicBool::new(false),
        };
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged.path)?
            .write_all(bytes)?;
        Ok(staged)
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        commit_temp(&self.path, dest, replace)?;
        self.moved.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.moved.load(Ordering::Acquire) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_file_moves_into_place_once_and_never_over_another() {
        let dir = tempfile::tempdir().expect("tmp");
        let staged = Staged::write(dir.path(), 7, b"the bytes").expect("stage");
        assert!(staged
            .path()
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX)));
        let taken = dir.path().join("taken.epub");
        fs::write(&taken, b"someone else's").expect("write");
        let err = staged.move_to(&taken, false).expect_err("must not replace");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&taken).expect("read"), b"someone else's");
        let dest = dir.path().join("book.epub");
        staged.move_to(&dest, false).expect("move");
        assert!(staged.move_to(&dir.path().join("again"), false).is_err());
        drop(staged);
        assert_eq!(fs::read(&dest).expect("read"), b"the bytes");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 2);
    }

    #[test]
    fn a_staged_file_never_moved_is_removed_when_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let staged = Staged::write(dir.path(), 1, b"dup").expect("stage");
        let path = staged.path().to_path_buf();
        assert!(path.is_file());
        drop(staged);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
