//! The exit codes, named in one place. README "Exit codes" documents the same table.

/// Every row is `uploaded` or `skipped` (or, for `status`, the state DB could be read).
pub const OK: i32 = 0;
/// The run finished, with failed rows (see `bookferry status` or the `failures` view).
pub const FAILED_ROWS: i32 = 1;
/// Nothing was done: usage or configuration error, state DB held by another process or from a
/// newer bookferry, target unusable at start.
pub const NOTHING_DONE: i32 = 2;
/// Interrupted by Ctrl-C / SIGTERM; run again to continue.
pub const INTERRUPTED: i32 = 3;
/// The target refused our credentials.
pub const AUTH: i32 = 4;
/// Stopped part-way by a condition that affects every file (target disk full, target gone past
/// the retry budget, state DB cannot be written).
pub const STOPPED: i32 = 5;
