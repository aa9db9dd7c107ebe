//! One calibre test at a time on this machine. calibre's writer lock is one per user and
//! machine (an abstract Unix socket), so a test that opens a calibre library for writing or runs
//! a calibre program must not overlap with another one — in this process, in the other test
//! binary (unit and integration tests may run at once), or in a test runner that gives each
//! test its own process. A lock on a file in the system's temp folder serializes them all: each
//! `open` of the file is its own lock holder, so it serializes the threads of one process too.
//! The lock goes with the file when the guard is dropped, or when its process dies.
//!
//! Shared by the unit tests (`src/target/calibre/tests.rs`) and the integration tests
//! (`tests/it/calibre_target.rs`), each including this file by path.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;

/// The lock file every calibre test takes.
pub fn lock_path() -> PathBuf {
    std::env::temp_dir().join("bookferry-calibre-tests.lock")
}

/// Holds the lock until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct Serial {
    _file: File,
}

/// Wait until no other calibre test runs, on this machine, then hold the lock.
pub fn serial() -> Serial {
    let path = lock_path();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: cannot open the calibre test lock: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("{}: cannot take the calibre test lock: {e}", path.display()));
    Serial { _file: file }
}
