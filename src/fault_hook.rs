//! The test hook `BOOKFERRY_FAULT=POINT:NAME` (debug builds only; a release build never reads
//! it): at `POINT`, a file whose source path contains `NAME` makes bookferry fail as the point
//! says. The pipeline's points (a panic, a state-DB error) are `pipeline::fault`'s; two points
//! kill the process (SIGKILL, as `kill -9` does) at a moment a test cannot hit from outside:
//! `sidecars-written` (a folder target's book whose sidecars are in place, the book not yet)
//! and `book-placed` (the book in place, not yet recorded). Any layer may call it.

use std::sync::LazyLock;

/// The point and file name `BOOKFERRY_FAULT` asks for (debug builds only).
static INJECT: LazyLock<Option<(String, String)>> = LazyLock::new(|| {
    if !cfg!(debug_assertions) {
        return None;
    }
    let spec = std::env::var("BOOKFERRY_FAULT").ok()?;
    let (point, name) = spec.split_once(':')?;
    Some((point.to_string(), name.to_string()))
});

/// Whether the test hook asks for a fault at `point` for the file at `source_ref`.
pub fn injected(point: &str, source_ref: &str) -> bool {
    cfg!(debug_assertions)
        && INJECT
            .as_ref()
            .is_some_and(|(p, name)| p == point && source_ref.contains(name.as_str()))
}

/// Kill this process (SIGKILL) here when the test hook asks for it.
pub fn kill_if_injected(point: &str, source_ref: &str) {
    if injected(point, source_ref) {
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    }
}
