//! The states a file's row moves through, as one documented enum. `docs/architecture.md` draws
//! the diagram; `FileState::can_move_to` is the same diagram in code, and the writer refuses any
//! move that is not on it.

use std::fmt;

/// Where one source file stands in the migration.
///
/// ```text
/// pending ─check─▶ checked ─hash─▶ hashed ─metadata─▶ metadata_cached ─transfer─▶ uploaded
///    │                │              │                      │
///    └──── skipped ◀──┴──────────────┴──────────────────────┘   (target has it / duplicate)
///    any non-final state ─▶ failed ─retry-failed─▶ the state it failed from
///    any state ─rescan finds the file changed─▶ pending
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileState {
    /// Recorded by a scan; nothing known but name, size and mtime (and, for calibre, metadata).
    Pending,
    /// The cheap check (name + size) found the target does not have it: worth hashing.
    Checked,
    /// SHA-1 and BLAKE3 computed from one read of the file.
    Hashed,
    /// Content check passed (not on the target, not a duplicate) and metadata is stored.
    MetadataCached,
    /// Placed or sent by this migration (or the target answered that it already held exactly
    /// these bytes when we sent them). Final.
    Uploaded,
    /// Not sent: the target already had it, or another row carries the same content
    /// (`duplicate_of` says which). Final.
    Skipped,
    /// Could not be migrated; `error_kind`, `error` and `failed_from` say why and where.
    /// Final until `retry-failed`.
    Failed,
}

impl FileState {
    pub const ALL: [FileState; 7] = [
        FileState::Pending,
        FileState::Checked,
        FileState::Hashed,
        FileState::MetadataCached,
        FileState::Uploaded,
        FileState::Skipped,
        FileState::Failed,
    ];

    /// States a run still has work to do on.
    pub const ACTIVE: [FileState; 4] = [
        FileState::Pending,
        FileState::Checked,
        FileState::Hashed,
        FileState::MetadataCached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Pending => "pending",
            FileState::Checked => "checked",
            FileState::Hashed => "hashed",
            FileState::MetadataCached => "metadata_cached",
            FileState::Uploaded => "uploaded",
            FileState::Skipped => "skipped",
            FileState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<FileState> {
        FileState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Uploaded, skipped and failed rows need nothing more from a run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            FileState::Uploaded | FileState::Skipped | FileState::Failed
        )
    }

    /// The state diagram. Forward moves may jump stages (a resumed row whose metadata came with
    /// the scan, or `--no-hash` targets), never go back, except the two explicit returns:
    /// `failed → where it failed` (retry-failed) and `any → pending` (rescan found it changed).
    pub fn can_move_to(self, to: FileState) -> bool {
        use FileState::*;
        match (self, to) {
            (a, b) if a == b => false,
            (_, Pending) => true,
            (Failed, Checked | Hashed | MetadataCached) => true,
            (Failed, _) => false,
            (Uploaded | Skipped, _) => false,
            (from, Failed | Skipped) => !from.is_final(),
            (from, to) => from.rank() < to.rank(),
        }
    }

    fn rank(self) -> u8 {
        match self {
            FileState::Pending => 0,
            FileState::Checked => 1,
            FileState::Hashed => 2,
            FileState::MetadataCached => 3,
            FileState::Uploaded => 4,
            FileState::Skipped => 4,
            FileState::Failed => 4,
        }
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FileState::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in FileState::ALL {
            assert_eq!(FileState::parse(s.as_str()), Some(s));
        }
        assert_eq!(FileState::parse("done"), None);
    }

    #[test]
    fn diagram_allows_forward_and_the_two_returns_only() {
        assert!(Pending.can_move_to(Checked));
        assert!(Checked.can_move_to(Hashed));
        assert!(Hashed.can_move_to(MetadataCached));
        assert!(MetadataCached.can_move_to(Uploaded));
        assert!(Pending.can_move_to(Skipped));
        assert!(Hashed.can_move_to(Failed));
        assert!(Failed.can_move_to(MetadataCached));
        assert!(Uploaded.can_move_to(Pending));
        assert!(!Hashed.can_move_to(Checked));
        assert!(!Uploaded.can_move_to(Skipped));
        assert!(!Skipped.can_move_to(Uploaded));
        assert!(!Failed.can_move_to(Uploaded));
        assert!(!Pending.can_move_to(Pending));
    }
}
