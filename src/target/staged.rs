//! Staged copies: for a local target in copy mode, the hash task writes a small file's bytes
//! to a temporary file in the target right after hashing them, while they are still in the
//! CPU's cache, and a large file's chunk by chunk as it reads and hashes them
//! (`Staged::write_with`), and the transfer later only links or renames that file into place.
//! The bytes are read once and written once, the buffer is freed at once instead of waiting in memory
//! for the transfer, and the transfer is one directory operation (two when it replaces an
//! earlier copy of ours).
//!
//! Where the filesystem can (Linux `O_TMPFILE`: ext4, XFS, btrfs, tmpfs, …; probed once when
//! the target opens, see [`Staging`]), the staged file has no name at all until the transfer
//! links it at its destination (`linkat` of the open file itself, `AT_EMPTY_PATH`, where the
//! kernel lets this process do so, else through `/proc/self/fd`; see [`LinkBy`]): nothing to
//! clean up when it is not placed (the row turned out a duplicate, failed, or the run stopped
//! or was killed: the kernel frees a file that has no name once it is closed), and no
//! temporary name to add to and remove from the target's root. Elsewhere, or once too many
//! unnamed files are open, it is a file under the temporary prefix in the target's root,
//! renamed into place; one that is not moved is removed when its last holder drops it, and
//! one left by a killed run is removed by the next run, like any other temporary file of
//! bookferry's.

use super::flusher::WriteCount;
use super::folder::{commit_temp, TEMP_PREFIX};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Distinguishes staged files of one process (a row may be staged again after a retry).
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// This process's id, asked once (a syscall per file otherwise).
static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
/// At most this many unnamed staged files open at once, and at most a quarter of the process's
/// file descriptors (raised at start, `fd_limit`): past it, staged files get a name instead,
/// so the run never runs short of descriptors. Between hashing and transfer the pipeline holds
/// up to ~4,100 small files (measured: 100,000 files of ~4 KiB, 2 cores); at the 256 this
/// was before, three in four got a name, and paid a second directory entry (the name in the
/// target's root, then the rename) and ~2× the CPU of staging one without a name.
const MAX_OPEN_UNNAMED: usize = 8192;

/// How a file without a name is given one. Linux 6.10 and later let a process link a file it
/// opened itself by the open file (`linkat(fd, "", …, AT_EMPTY_PATH)`; before, only with
/// `CAP_DAC_READ_SEARCH`); a link by the file's `/proc/self/fd/N` path works everywhere, and
/// costs a walk through procfs for each file (~3 µs more than a ~16 µs link on ext4, measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkBy {
    OpenFile,
    ProcPath,
}

/// Where a target takes staged copies: its folder, and whether files without a name work
/// there and how they are linked (probed once, when the target opens: `O_TMPFILE`, then a
/// link by the open file, else through `/proc`).
#[derive(Debug, Clone)]
pub struct Staging {
    /// Shared: each hash job holds a clone.
    dir: Arc<Path>,
    /// `None`: files without a name do not work here.
    unnamed: Option<LinkBy>,
    max_unnamed: usize,
    /// Unnamed staged files of this target open now (each holds a file descriptor).
    open_unnamed: Arc<AtomicUsize>,
    /// Where each staged copy is counted, so the target's flusher writes it back early.
    writes: Option<WriteCount>,
}

impl Staging {
    /// Staging into `dir`: unnamed where a probe file can be made without a name and then
    /// linked (and removed again), named otherwise.
    pub fn probe(dir: &Path) -> Staging {
        let unnamed = probe_unnamed(dir);
        if unnamed.is_none() {
            tracing::debug!(
                "{}: no files without a name here (O_TMPFILE and linkat): staged copies get a temporary name",
                dir.display()
            );
        }
        Staging {
            dir: Arc::from(dir),
            unnamed,
            max_unnamed: MAX_OPEN_UNNAMED.min(soft_fd_limit() / 4),
            open_unnamed: Arc::new(AtomicUsize::new(0)),
            writes: None,
        }
    }

    /// Count each staged copy in `writes` (the target's flusher starts writing it back).
    pub fn counting(mut self, writes: WriteCount) -> Staging {
        self.writes = Some(writes);
        self
    }

    /// This staging with unnamed files linked `by` (what `probe` finds on another kernel).
    #[cfg(test)]
    pub fn linking_by(mut self, by: LinkBy) -> Staging {
        self.unnamed = Some(by);
        self
    }

    /// Staging into `dir` with names only (what `probe` gives where unnamed files fail).
    #[cfg(test)]
    pub fn named(dir: &Path) -> Staging {
        Staging {
            dir: Arc::from(dir),
            unnamed: None,
            max_unnamed: 0,
            open_unnamed: Arc::default(),
            writes: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether staged copies here are files without a name.
    pub fn unnamed(&self) -> bool {
        self.unnamed.is_some()
    }

    /// How files without a name are linked here (`None`: staged copies get names).
    #[cfg(test)]
    pub fn link_by(&self) -> Option<LinkBy> {
        self.unnamed
    }

    /// Unnamed staged files of this staging open now.
    pub fn open_unnamed(&self) -> usize {
        self.open_unnamed.load(Ordering::Acquire)
    }
}

/// A file written into the target, waiting to be moved into place.
#[derive(Debug)]
pub struct Staged {
    backing: Backing,
    moved: AtomicBool,
}

#[derive(Debug)]
enum Backing {
    /// An `O_TMPFILE` file: no name until it is linked; closed once linked or dropped (then
    /// it no longer counts in `open`).
    Unnamed {
        file: Mutex<Option<File>>,
        open: Arc<AtomicUsize>,
        link_by: LinkBy,
    },
    /// A file under the temporary prefix, renamed into place.
    Named(PathBuf),
}

impl Staged {
    /// Write `bytes` to a new temporary file where `staging` says (never replacing one):
    /// without a name where it can, else under the temporary prefix. A partial file is
    /// removed on error.
    pub fn write(staging: &Staging, row_id: i64, bytes: &[u8]) -> io::Result<Staged> {
        Staged::write_with(staging, row_id, |out| out.write_all(bytes))
    }

    /// Like [`Staged::write`], with the bytes written by `fill` (a large file, written chunk
    /// by chunk as it is read and hashed). An error from `fill` removes the partial file.
    pub fn write_with(
        staging: &Staging,
        row_id: i64,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Staged> {
        let staged = Staged::write_where(staging, row_id, fill)?;
        if let Some(w) = &staging.writes {
            w.wrote();
        }
        Ok(staged)
    }

    fn write_where(
        staging: &Staging,
        row_id: i64,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Staged> {
        let open = &staging.open_unnamed;
        if let Some(link_by) = staging.unnamed {
            if open.fetch_add(1, Ordering::AcqRel) < staging.max_unnamed {
                match write_unnamed(&staging.dir, fill) {
                    Ok(file) => {
                        return Ok(Staged {
                            backing: Backing::Unnamed {
                                file: Mutex::new(Some(file)),
                                open: open.clone(),
                                link_by,
                            },
                            moved: AtomicBool::new(false),
                        })
                    }
                    Err(e) => {
                        open.fetch_sub(1, Ordering::AcqRel);
                        return Err(e);
                    }
                }
            }
            open.fetch_sub(1, Ordering::AcqRel);
        }
        Staged::write_named(&staging.dir, row_id, fill)
    }

    /// Write what `fill` writes to a new file under the temporary prefix in `dir` (removed
    /// again if the write fails; a file that was there already is left alone).
    fn write_named(
        dir: &Path,
        row_id: i64,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Staged> {
        let path = dir.join(temp_name(&format!("s{row_id}")));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = fill(&mut file) {
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
            Backing::Unnamed { .. } => None,
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
            Backing::Unnamed {
                file: slot,
                open,
                link_by,
            } => {
                let mut slot = slot.lock().map_err(|_| io::Error::other("poisoned"))?;
                let file = slot.as_ref().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the staged copy is gone")
                })?;
                if replace {
                    // Link under a temporary name beside `dest`, then rename over it: `dest`
                    // is never missing nor half written.
                    let temp = dest.with_file_name(temp_name("r"));
                    link_unnamed(file, &temp, *link_by)?;
                    if let Err(e) = fs::rename(&temp, dest) {
                        let _ = fs::remove_file(&temp);
                        return Err(e);
                    }
                } else {
                    link_unnamed(file, dest, *link_by)?;
                }
                // Placed: close it now rather than when the row's item is dropped.
                *slot = None;
                open.fetch_sub(1, Ordering::AcqRel);
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
            Backing::Unnamed { file, open, .. } => {
                let was_open = file.lock().map(|mut f| f.take().is_some()).unwrap_or(false);
                if was_open {
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

/// A temporary name of this process, unique within it: `.bookferry-tmp-<pid>-<tag>-<n>` (a
/// killed run's are swept by the next run).
pub(crate) fn temp_name(tag: &str) -> String {
    format!(
        "{TEMP_PREFIX}{}-{tag}-{}",
        PID.get_or_init(std::process::id),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The start of every temp name of this process (see [`temp_name`]): a read of the target
/// leaves these alone, as the run is writing them.
pub(crate) fn own_temp_prefix() -> &'static str {
    static OWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWN.get_or_init(|| format!("{TEMP_PREFIX}{}-", PID.get_or_init(std::process::id)))
}

/// `O_TMPFILE` as `OpenOptions::custom_flags` takes it (it fits: 0o20200000).
const O_TMPFILE: i32 = rustix::fs::OFlags::TMPFILE.bits() as i32;

/// A new unnamed file in `dir` holding what `fill` writes.
fn write_unnamed(
    dir: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(O_TMPFILE)
        .mode(0o666)
        .open(dir)?;
    fill(&mut file)?;
    Ok(file)
}

/// Whether a file without a name can be made in `dir` and then linked there, and how (by the
/// open file where the kernel allows it, else through `/proc`): the probe file is linked under
/// a temporary name and removed at once.
fn probe_unnamed(dir: &Path) -> Option<LinkBy> {
    let file = write_unnamed(dir, |_| Ok(())).ok()?;
    [LinkBy::OpenFile, LinkBy::ProcPath]
        .into_iter()
        .find(|&by| {
            let probe = dir.join(temp_name("probe"));
            let linked = link_unnamed(&file, &probe, by).is_ok();
            if linked {
                let _ = fs::remove_file(&probe);
            }
            linked
        })
}

/// The process's soft limit on open files.
fn soft_fd_limit() -> usize {
    use rustix::process::{getrlimit, Resource};
    // `None`: no limit.
    getrlimit(Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Give an unnamed file its name (see [`LinkBy`]); fails with `AlreadyExists` if `dest`
/// exists.
fn link_unnamed(file: &File, dest: &Path, by: LinkBy) -> io::Result<()> {
    use rustix::fs::{linkat, AtFlags, CWD};
    match by {
        LinkBy::OpenFile => Ok(linkat(file, "", CWD, dest, AtFlags::EMPTY_PATH)?),
        LinkBy::ProcPath => {
            let from = format!("/proc/self/fd/{}", file.as_raw_fd());
            Ok(linkat(CWD, from, CWD, dest, AtFlags::SYMLINK_FOLLOW)?)
        }
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

    /// Unnamed staging in `dir`: the machines the tests run on (ext4, tmpfs) have it.
    fn unnamed_staging(dir: &Path) -> Staging {
        let staging = Staging::probe(dir);
        assert!(
            staging.unnamed(),
            "no O_TMPFILE + linkat in {}",
            dir.display()
        );
        assert!(names_in(dir).is_empty(), "the probe file is removed");
        staging
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
        for by in [LinkBy::OpenFile, LinkBy::ProcPath] {
            let dir = tempfile::tempdir().expect("tmp");
            let staging = unnamed_staging(dir.path()).linking_by(by);
            let staged = Staged::write(&staging, 7, b"the bytes").expect("stage");
            assert!(staged.path().is_none(), "staged under a name: {staged:?}");
            assert!(names_in(dir.path()).is_empty());
            assert_eq!(staging.open_unnamed(), 1);
            moves_into_place_once_and_never_over_another(staged, dir.path());
            assert_eq!(staging.open_unnamed(), 0, "closed once placed ({by:?})");
        }
    }

    /// Where the kernel lets this process link a file it opened by the open file (Linux 6.10+,
    /// or with `CAP_DAC_READ_SEARCH`), the probe chooses that over the path through `/proc`.
    #[test]
    fn the_probe_links_by_the_open_file_where_the_kernel_allows_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = write_unnamed(dir.path(), |_| Ok(())).expect("O_TMPFILE");
        let allowed = rustix::fs::linkat(
            &file,
            "",
            rustix::fs::CWD,
            dir.path().join("try"),
            rustix::fs::AtFlags::EMPTY_PATH,
        )
        .is_ok();
        let _ = fs::remove_file(dir.path().join("try"));
        let chosen = unnamed_staging(dir.path()).link_by();
        if allowed {
            assert_eq!(chosen, Some(LinkBy::OpenFile));
        } else {
            assert_eq!(chosen, Some(LinkBy::ProcPath));
        }
    }

    #[test]
    fn a_named_staged_file_is_renamed_into_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let staged = Staged::write(&Staging::named(dir.path()), 7, b"the bytes").expect("stage");
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
        for staging in [
            unnamed_staging(dir.path()).linking_by(LinkBy::OpenFile),
            unnamed_staging(dir.path()).linking_by(LinkBy::ProcPath),
            Staging::named(dir.path()),
        ] {
            fs::write(&dest, b"an earlier copy").expect("write");
            let staged = Staged::write(&staging, 3, b"the new bytes").expect("stage");
            assert_eq!(staged.path().is_none(), staging.unnamed());
            staged.move_to(&dest, true).expect("replace");
            drop(staged);
            assert_eq!(fs::read(&dest).expect("read"), b"the new bytes");
            assert_eq!(names_in(dir.path()), ["book.epub"], "{staging:?}");
            assert_eq!(staging.open_unnamed(), 0);
        }
    }

    #[test]
    fn a_staged_file_never_moved_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let named = Staged::write(&Staging::named(dir.path()), 1, b"dup").expect("stage");
        let path = named.path().expect("named").to_path_buf();
        assert!(path.is_file());
        drop(named);
        assert!(!path.exists());

        let staging = unnamed_staging(dir.path());
        let unnamed = Staged::write(&staging, 2, b"dup").expect("stage");
        // A move that fails keeps the file open for another try; dropping it closes it.
        let missing = dir.path().join("no such folder").join("book.epub");
        assert!(unnamed.move_to(&missing, false).is_err());
        assert_eq!(staging.open_unnamed(), 1);
        drop(unnamed);
        assert_eq!(staging.open_unnamed(), 0);
        assert!(names_in(dir.path()).is_empty());
    }

    /// Past the cap on open unnamed files, a staged file gets a name: descriptors stay free
    /// for the sources.
    #[test]
    fn past_the_cap_staged_files_get_a_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let staging = Staging {
            max_unnamed: 2,
            ..unnamed_staging(dir.path())
        };
        let held: Vec<Staged> = (0..3)
            .map(|i| Staged::write(&staging, i, b"x").expect("stage"))
            .collect();
        let named: Vec<bool> = held.iter().map(|s| s.path().is_some()).collect();
        assert_eq!(named, [false, false, true]);
        assert_eq!(staging.open_unnamed(), 2);
        drop(held);
        assert_eq!(staging.open_unnamed(), 0);
        assert!(names_in(dir.path()).is_empty());
    }

    /// What the pipeline holds between hashing and transfer with many small files (~4,100
    /// measured at 100,000 files of ~4 KiB) is staged without names, with the process's limit
    /// of open files raised as `main` raises it: a named one costs a second directory entry
    /// and about twice the CPU.
    #[test]
    fn the_small_files_a_run_holds_are_staged_without_names() {
        crate::fd_limit::raise();
        let dir = tempfile::tempdir().expect("tmp");
        let staging = unnamed_staging(dir.path());
        let hold = 2_000.min(staging.max_unnamed);
        assert!(
            hold == 2_000 || soft_fd_limit() < 4 * 2_000,
            "cap {} with a soft limit of {}",
            staging.max_unnamed,
            soft_fd_limit()
        );
        let held: Vec<Staged> = (0..hold)
            .map(|i| Staged::write(&staging, i as i64, b"x").expect("stage"))
            .collect();
        let named = held.iter().filter(|s| s.path().is_some()).count();
        assert_eq!(named, 0, "of {hold} held");
        assert!(names_in(dir.path()).is_empty());
        drop(held);
        assert_eq!(staging.open_unnamed(), 0);
    }
}
