//! calibre's machine-wide writer lock. On Linux every calibre program that may write a library
//! (the GUI, `calibredb`, `calibre-server`) first binds the abstract Unix socket
//! `\0calibre-singleinstance-<euid>-db` (calibre's `utils/lock.py`, `singleinstance('db')`) and
//! refuses to start when it is taken. Binding the same name keeps them out while we write, and
//! tells us when one of them is running.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// The abstract socket name calibre binds (without the leading NUL).
pub fn lock_name() -> String {
    format!(
        "calibre-singleinstance-{}-db",
        rustix::process::geteuid().as_raw()
    )
}

/// Holds calibre's writer lock until dropped: no calibre program can open a library for
/// writing meanwhile (they exit with "Another calibre program … is running").
#[derive(Debug)]
pub struct CalibreLock {
    /// Bound to the lock's name; closing it frees the name.
    _socket: UnixListener,
}

impl CalibreLock {
    /// Take the lock. `Ok(None)` when a calibre program (or another holder) has it.
    pub fn try_acquire() -> io::Result<Option<CalibreLock>> {
        // A stream socket, as calibre's: abstract names of different socket types do not
        // clash. (std also listens on it, which calibre does not; binding is what excludes.)
        let addr = SocketAddr::from_abstract_name(lock_name())?;
        match UnixListener::bind_addr(&addr) {
            Ok(socket) => Ok(Some(CalibreLock { _socket: socket })),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// True when a calibre program holds its writer lock right now (the GUI, `calibredb`,
/// `calibre-server`, or a bookferry writer). Takes the lock and releases it at once. A lock
/// that cannot even be tried (no Unix sockets) counts as held: writing is then not safe.
pub fn calibre_is_writing() -> bool {
    !matches!(CalibreLock::try_acquire(), Ok(Some(_)))
}

/// calibre programs (and other bookferry processes) of this user that are running now, as
/// "name (pid N)": what to tell the user to close when the writer lock is held. Read from
/// `/proc`; empty when none is found.
pub fn running_calibre_programs() -> Vec<String> {
    const PROGRAMS: &[&str] = &[
        "bookferry",
        "calibre",
        "calibre-server",
        "calibredb",
        "calibre-debug",
        "calibre-smtp",
        "ebook-edit",
        "ebook-viewer",
        "lrfviewer",
    ];
    let euid = rustix::process::geteuid().as_raw();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let owned = std::fs::read_to_string(p.path().join("status"))
            .ok()
            .and_then(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|u| u.split_whitespace().nth(1))
                    .and_then(|u| u.parse::<u32>().ok())
            })
            == Some(euid);
        if !owned {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        // calibre's launchers are Python scripts: the program is argv[0], or argv[1] after
        // the interpreter.
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .take(2)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let name = args.iter().find_map(|a| {
            let base = a.rsplit('/').next().unwrap_or(a);
            PROGRAMS.contains(&base).then(|| base.to_string())
        });
        if let Some(name) = name.filter(|_| pid != std::process::id()) {
            found.push(format!("{name} (pid {pid})"));
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let _serial = super::super::tests::serial();
        let held = CalibreLock::try_acquire()
            .expect("bind")
            .expect("free at first");
        assert!(calibre_is_writing());
        assert!(CalibreLock::try_acquire().expect("bind").is_none());
        drop(held);
        assert!(!calibre_is_writing());
    }
}
