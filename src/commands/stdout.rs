//! A command's lines on standard output, for a reader that may stop reading: `bookferry status
//! | head` closes the pipe after ten lines. `println!` panics then ("failed printing to stdout");
//! [`outln!`] stops printing instead, and the command goes on to its own end and exit code (a
//! `verify` whose listing was cut still says by its exit code whether the target matched).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output failed: nothing more is printed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to standard output, unless an earlier write failed. A closed pipe is
/// silent (the reader has what it wanted); any other error is said once on standard error.
pub fn line(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("bookferry: cannot write to standard output: {e}");
        }
    }
}

/// `println!` for a command's output: see the module's notes.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::stdout::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
