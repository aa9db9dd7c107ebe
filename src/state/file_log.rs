//! The log line of each file that reaches a final state, and of each warning a file was read
//! with: emitted by the state writer once the move is committed (never before), with
//! structured fields (`file_id`, `source`, `state`, `reason`, `target`) that `--log-format
//! json` prints as keys. Which verbosity shows which is set where logging starts (`logging`).

use super::writer::Transition;
use super::FileState;

/// A file's final state: `INFO` for uploaded and skipped (shown from `-v`), `WARN` for failed
/// (shown by default).
pub const FILE: &str = "bookferry::file";
/// The first [`FIRST_FEW`] warnings of a run (shown by default).
pub const WARNING: &str = "bookferry::warning";
/// The warnings after those (shown from `-v`; the run summary counts them by default).
pub const MORE_WARNINGS: &str = "bookferry::warning::more";
/// How many warnings the default level shows.
pub const FIRST_FEW: u64 = 5;
/// The structured fields of a file's lines (the text format leaves them out: its message
/// says the same).
pub const FIELDS: [&str; 5] = ["file_id", "source", "state", "reason", "target"];

/// Whether anything takes the lines of files that end well (`-v`, or a `--log-file`): when
/// nothing does, the writer does not gather them.
pub fn wanted() -> bool {
    tracing::enabled!(target: FILE, tracing::Level::INFO)
}

/// The line of a row that `t` moved to its final state `to` (committed).
pub fn final_state(t: &Transition, to: FileState) {
    let source = t.source.as_deref().unwrap_or("?");
    let id = t.file_id;
    match to {
        FileState::Uploaded => {
            let target = t.target_ref.as_deref().unwrap_or("?");
            tracing::info!(target: FILE, file_id = id, source, state = "uploaded", target,
                "uploaded {source} → {target}");
        }
        FileState::Skipped => {
            let reason = t.skip_reason.map_or("?", |r| r.as_str());
            match t.detail.as_deref() {
                Some(d) => tracing::info!(target: FILE, file_id = id, source, state = "skipped",
                    reason, "skipped {source}: {reason} ({d})"),
                None => tracing::info!(target: FILE, file_id = id, source, state = "skipped",
                    reason, "skipped {source}: {reason}"),
            }
        }
        FileState::Failed => {
            let (reason, message) = t
                .error
                .as_ref()
                .map_or(("?", ""), |f| (f.kind.as_str(), f.message.as_str()));
            tracing::warn!(target: FILE, file_id = id, source, state = "failed", reason,
                "failed {source}: {reason}: {message}");
        }
        _ => {}
    }
}

/// The line of a row a scan moved to `skipped` (its file gone from the source, or left out by
/// the filter), once that is committed: the scan records it, not the writer.
pub fn skipped_by_scan(file_id: i64, source: &str, reason: crate::skip_reason::SkipReason) {
    let reason = reason.as_str();
    tracing::info!(target: FILE, file_id, source, state = "skipped", reason,
        "skipped {source}: {reason}");
}

/// The line of a row recorded `uploaded` because a run that stopped before recording it had
/// placed it (`placement::adopt`), once that is committed.
pub fn adopted(file_id: i64, source: &str, target: Option<&str>) {
    let target = target.unwrap_or("(the server holds its content)");
    tracing::info!(target: FILE, file_id, source, state = "uploaded", target,
        "uploaded {source} → {target} (placed by a run that stopped before recording it)");
}

/// A line for each warning `t` recorded (committed); `seen` counts the run's warnings so far.
pub fn warnings(t: &Transition, seen: &mut u64) {
    let Some(all) = t.warnings.as_deref() else {
        return;
    };
    let source = t.source.as_deref().unwrap_or("?");
    for w in all.lines() {
        if *seen < FIRST_FEW {
            tracing::warn!(target: WARNING, file_id = t.file_id, source, "{source}: {w}");
        } else {
            tracing::warn!(target: MORE_WARNINGS, file_id = t.file_id, source, "{source}: {w}");
        }
        *seen += 1;
    }
}
