//! bookferry's own lock on a calibre library, held for a whole run: a second bookferry writing
//! into the same library is refused, whatever flags it was given. (calibre's machine-wide
//! writer lock, `lock.rs`, keeps calibre's programs out and may be overridden with
//! `--ignore-calibre-lock`; this one may not: two runs into one library would each take the
//! other's unfinished books for a dead run's leftovers and remove them.)
//!
//! It is an `flock` on the library folder itself, so:
//! - nothing is added to the library (calibre's `check_library` reports any unknown file in the
//!   library's root as an invalid author, and Calibre-Web reads only `metadata.db`);
//! - SQLite's locks are not touched (they are POSIX locks on `metadata.db` and its journal; an
//!   `flock` on a folder never meets them, also on NFS, where `flock` on a *file* becomes a
//!   POSIX lock and would);
//! - the kernel drops it when the process dies: a `kill -9` leaves nothing stale.
//!
//! On a network filesystem (NFS, SMB/CIFS, Ceph, 9p, AFS) the lock on a folder is kept by this
//! machine's kernel only: another bookferry on this machine is refused, one on another machine
//! is not seen, and the run says so in a warning.

use super::CalibreError;
use std::fs::{File, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Held while a run writes into a calibre library; released when dropped (or the process dies).
#[derive(Debug)]
pub struct RunLock {
    _dir: File,
}

impl RunLock {
    /// Take the lock on the library folder `root` (which must exist). Refused with
    /// [`CalibreError::LibraryInUse`], naming the holder's pid when `/proc/locks` shows it,
    /// while another process holds it.
    pub fn acquire(root: &Path) -> Result<RunLock, CalibreError> {
        let io_error = |what: &'static str| {
            let path = root.to_path_buf();
            move |source: std::io::Error| CalibreError::Io { path, what, source }
        };
        let dir = File::open(root).map_err(io_error("cannot open the library folder"))?;
        match dir.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(CalibreError::LibraryInUse {
                    path: root.to_path_buf(),
                    holder: holder_of(&dir),
                })
            }
            Err(TryLockError::Error(e)) => {
                return Err(io_error("cannot lock the library folder")(e))
            }
        }
        if let Some(kind) = network_filesystem(&dir) {
            tracing::warn!(
                "{}: the calibre library is on {kind}: bookferry's lock on it keeps out other \
                 bookferry runs on this machine only; run no bookferry into it from another \
                 machine meanwhile",
                root.display()
            );
        }
        Ok(RunLock { _dir: dir })
    }
}

/// The pid of the process holding an `flock` on `dir`, from `/proc/locks`
/// (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`); `None` when it cannot be told.
fn holder_of(dir: &File) -> Option<u32> {
    let meta = dir.metadata().ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    holder_in(&std::fs::read_to_string("/proc/locks").ok()?, &id)
}

/// The pid of the `FLOCK` on the file `id` (`maj:min:inode`, as `/proc/locks` writes it).
fn holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // A lock someone waits for is listed as `N: -> FLOCK …`; it holds nothing.
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// The kind of network filesystem `dir` is on, if it is on one (by `statfs` magic).
fn network_filesystem(dir: &File) -> Option<&'static str> {
    const KINDS: &[(u64, &str)] = &[
        (0x6969, "NFS"),
        (0x517b, "SMB"),
        (0xff53_4d42, "SMB/CIFS"),
        (0xfe53_4d42, "SMB/CIFS"),
        (0x00c3_6400, "Ceph"),
        (0x0102_1997, "a 9p filesystem"),
        (0x5346_414f, "AFS"),
        (0x7375_7245, "Coda"),
    ];
    let magic = rustix::fs::fstatfs(dir).ok()?.f_type as u64 & 0xffff_ffff;
    KINDS.iter().find(|(m, _)| *m == magic).map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).expect("free at first");
        let err = RunLock::acquire(dir.path()).expect_err("held");
        match &err {
            CalibreError::LibraryInUse { holder, .. } => {
                assert_eq!(*holder, Some(std::process::id()), "{err}")
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("another bookferry"), "{err}");
        drop(first);
        RunLock::acquire(dir.path()).expect("free once dropped");
        let mut names = std::fs::read_dir(dir.path()).unwrap();
        assert!(
            names.next().is_none(),
            "the lock adds nothing to the folder"
        );
    }

    #[test]
    fn proc_locks_lines_are_read_for_the_holder() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 08:01:42 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 1234 08:01:42 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 999 08:01:42 0 EOF\n";
        assert_eq!(holder_in(locks, "08:01:42"), Some(1234));
        assert_eq!(holder_in(locks, "08:01:43"), None);
    }
}
