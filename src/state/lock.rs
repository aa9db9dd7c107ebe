//! One process per state DB: an advisory lock (`flock`) on `<state>.lock` beside it, holding the
//! holder's pid and host so a second process can say who is in the way. The kernel drops the
//! lock when the holder dies, so a killed run never leaves a stale lock behind.

use super::{Result, StateError};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
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
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder writes its name just after taking the lock: give it a moment.
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
                return Err(StateError::Held {
                    path: db.to_path_buf(),
                    pid: parts.next().unwrap_or("?").to_string(),
                    host: parts.next().unwrap_or("?").to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{} {}", std::process::id(), hostname()).map_err(io)?;
        Ok(StateLock { _file: file, path })
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
