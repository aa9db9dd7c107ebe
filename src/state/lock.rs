//! One process per state DB, whatever path reaches it: an advisory lock (`flock`) on the DB file
//! itself, so a second process that reaches the same DB through a hard link, a symlink or a bind
//! mount (the same device and inode) is refused too. Beside the path given, `<state>.lock`
//! holds the holder's pid and host so a second process can say who is in the way (and is locked
//! too, as older bookferry binaries lock only it). The kernel drops both locks when the holder
//! dies, so a killed run never leaves a stale lock behind.
//!
//! `flock` and SQLite's own locks (POSIX `fcntl` byte ranges) do not interact on a local
//! filesystem, so `status` and the run's own connections read and write as before. On NFS and
//! SMB they would: there `flock` is carried out as a whole-file `fcntl` lock (NFS) or a
//! mandatory byte-range lock (SMB), which would lock SQLite out of its own DB. There only
//! `<state>.lock` is locked, with a warning that another path to the same DB, or another host,
//! is not kept out (SQLite's WAL mode does not work across hosts either).

use super::{Result, StateError};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    /// The state DB itself, locked (not on a network filesystem).
    _db: Option<File>,
    pub path: PathBuf,
}

pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

impl StateLock {
    pub fn acquire(db: &Path) -> Result<StateLock> {
        let path = lock_path(db);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        let mut file = open_rw(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, host) = read_holder(&mut file).unwrap_or_default();
                return Err(held(db, pid, host));
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        // The DB itself (an empty file is a new SQLite DB: `Db::open` makes its schema).
        let db_file = open_rw(db).map_err(io(db))?;
        let db_lock = match network_filesystem(&db_file) {
            Some(kind) => {
                tracing::warn!(
                    "state DB {} is on {kind}: only this path is locked, so another bookferry reaching it by another path or from another host is not kept out (and SQLite's WAL mode does not work across hosts): keep the state DB on a local disk",
                    db.display()
                );
                None
            }
            None => match db_file.try_lock() {
                Ok(()) => Some(db_file),
                Err(TryLockError::WouldBlock) => {
                    // Reached by another path: the holder's lock file is beside that path.
                    let (pid, host) = holder_of(&db_file).unwrap_or_default();
                    return Err(held(db, pid, host));
                }
                Err(TryLockError::Error(e)) => return Err(io(db)(e)),
            },
        };
        file.set_len(0).map_err(io(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        writeln!(file, "{} {}", std::process::id(), hostname()).map_err(io(&path))?;
        Ok(StateLock {
            _file: file,
            _db: db_lock,
            path,
        })
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn held(db: &Path, pid: String, host: String) -> StateError {
    let unknown = |s: String| if s.is_empty() { "?".to_string() } else { s };
    StateError::Held {
        path: db.to_path_buf(),
        pid: unknown(pid),
        host: unknown(host),
    }
}

/// The pid and host the holder wrote into its lock file (it writes them just after taking the
/// lock: give it a moment).
fn read_holder(file: &mut File) -> Option<(String, String)> {
    let mut holder = String::new();
    for _ in 0..20 {
        holder.clear();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.read_to_string(&mut holder);
        if holder.ends_with('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut parts = holder.split_whitespace();
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

/// The pid holding the `flock` on `file`'s inode, from the kernel's `/proc/locks` (reached by
/// another path, the holder's lock file is not beside ours; and through a hard link SQLite
/// would not see the holder's WAL, so its run record cannot be read reliably). A `flock` is
/// always this machine's.
fn holder_of(file: &File) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok()?;
    let dev = m.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        m.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // `1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF`
    let pid = locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str())).then(|| f[4].to_string())
    })?;
    Some((pid, hostname()))
}

/// The network filesystem `file` is on, if it is one where `flock` turns into locks SQLite's
/// own would collide with.
fn network_filesystem(file: &File) -> Option<&'static str> {
    const SMB: i64 = 0x517B;
    const CIFS: i64 = 0xFF53_4D42;
    const SMB2: i64 = 0xFE53_4D42;
    // `f_type` is as wide as a C long: i64 here, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let (kind, nfs) = (
        rustix::fs::fstatfs(file).ok()?.f_type as i64,
        rustix::fs::NFS_SUPER_MAGIC as i64,
    );
    match kind {
        k if k == nfs => Some("NFS"),
        SMB | CIFS | SMB2 => Some("SMB/CIFS"),
        _ => None,
    }
}

/// This machine's name, for run records and lock messages.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
