//! Why a file (or a whole run) could not go on: the error kinds stored in `files.error_kind`,
//! and whether a failure concerns one file or every file (which stops the run).

use std::fmt;

/// The kinds recorded in `files.error_kind`; `retry-failed --kind` takes these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The source file is gone (deleted, or missing from a calibre library).
    SourceMissing,
    /// The source file cannot be read (permissions, I/O error, not a regular file).
    Unreadable,
    /// The source file has no bytes.
    EmptyFile,
    /// The target could not write this file (a file where a folder must go, bad name, …).
    TargetWrite,
    /// The target is out of space. Stops the run.
    TargetFull,
    /// The target refused this file for good (HTTP 400 / 413).
    Rejected,
    /// Transient errors went on past the retry budget.
    TransientExhausted,
    /// The target refused our credentials. Stops the run.
    Auth,
    /// The target cannot be reached any more. Stops the run.
    TargetGone,
    /// The state DB cannot be written (disk full, I/O error). Stops the run; never a row's kind.
    StateDb,
    /// The server's reply does not prove what it claims (an upload's `200`/`201` without a
    /// non-empty `id` or without the `sha1` sent, a check reply without its `files` list).
    BadReply,
    /// The server stopped following the upload protocol for every file: it redirects, or it
    /// answered several uploads in a row with a bad reply. Stops the run; never a row's kind.
    BadServer,
}

impl FailureKind {
    pub const ALL: [FailureKind; 12] = [
        FailureKind::SourceMissing,
        FailureKind::Unreadable,
        FailureKind::EmptyFile,
        FailureKind::TargetWrite,
        FailureKind::TargetFull,
        FailureKind::Rejected,
        FailureKind::TransientExhausted,
        FailureKind::Auth,
        FailureKind::TargetGone,
        FailureKind::StateDb,
        FailureKind::BadReply,
        FailureKind::BadServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::SourceMissing => "source_missing",
            FailureKind::Unreadable => "unreadable",
            FailureKind::EmptyFile => "empty_file",
            FailureKind::TargetWrite => "target_write",
            FailureKind::TargetFull => "target_full",
            FailureKind::Rejected => "rejected",
            FailureKind::TransientExhausted => "transient_exhausted",
            FailureKind::Auth => "auth",
            FailureKind::TargetGone => "target_gone",
            FailureKind::StateDb => "state_db",
            FailureKind::BadReply => "bad_reply",
            FailureKind::BadServer => "bad_server",
        }
    }

    pub fn parse(s: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Failures that concern every file: the run stops instead of failing row after row.
    pub fn stops_run(self) -> bool {
        matches!(
            self,
            FailureKind::TargetFull
                | FailureKind::Auth
                | FailureKind::TargetGone
                | FailureKind::StateDb
                | FailureKind::BadServer
        )
    }

    /// Classify an I/O error met while reading a source file.
    pub fn of_source_io(e: &std::io::Error) -> FailureKind {
        match e.kind() {
            std::io::ErrorKind::NotFound => FailureKind::SourceMissing,
            _ => FailureKind::Unreadable,
        }
    }

    /// Classify an I/O error met while writing to a target folder.
    pub fn of_target_io(e: &std::io::Error) -> FailureKind {
        // ENOSPC and EDQUOT.
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                FailureKind::TargetFull
            }
            _ => FailureKind::TargetWrite,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::hash::HashError> for Failure {
    fn from(e: crate::hash::HashError) -> Failure {
        use crate::hash::HashError;
        let kind = match &e {
            HashError::Io { source, .. } => FailureKind::of_source_io(source),
            HashError::NotAFile(_) => FailureKind::Unreadable,
            HashError::Empty(_) => FailureKind::EmptyFile,
        };
        Failure::new(kind, e.to_string())
    }
}

/// A failure with its one-line message (which names the file and the cause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn a_full_disk_or_quota_is_target_full_and_other_write_errors_are_not() {
        let kind = |e: Errno| FailureKind::of_target_io(&std::io::Error::from(e));
        assert_eq!(kind(Errno::NOSPC), FailureKind::TargetFull);
        assert_eq!(kind(Errno::DQUOT), FailureKind::TargetFull);
        assert_eq!(kind(Errno::ROFS), FailureKind::TargetWrite);
        assert_eq!(kind(Errno::NOTDIR), FailureKind::TargetWrite);
    }
}
