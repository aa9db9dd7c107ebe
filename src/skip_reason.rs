//! Why a file was not sent: the reasons stored in `files.skip_reason` (their names are part of
//! the documented schema and never change).

use std::fmt;

/// The reasons recorded in `files.skip_reason` for a `skipped` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The target holds a file of this name and size (the cheap check).
    TargetHasNameSize,
    /// The target holds these bytes (the content check, or a calibre book with this format and
    /// these bytes).
    TargetHasContent,
    /// Another row of this migration has the same content (`duplicate_of` names it).
    Duplicate,
    /// calibre target: the library has this book already (calibre's duplicate rule).
    TargetHasBook,
    /// calibre target: the book has this format already, with other bytes.
    BookHasFormat,
    /// The file left the source (deleted, renamed, moved) before it was migrated: nothing to
    /// send. A scan that finds it again sends the row back to `pending`.
    SourceGone,
    /// A filter (`--include`, `--exclude`, sizes, tags) or a narrowed `--formats` leaves the
    /// file out now, before it was migrated. A scan that takes it again sends the row back to
    /// `pending`.
    Excluded,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::TargetHasNameSize,
        SkipReason::TargetHasContent,
        SkipReason::Duplicate,
        SkipReason::TargetHasBook,
        SkipReason::BookHasFormat,
        SkipReason::SourceGone,
        SkipReason::Excluded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TargetHasNameSize => "target_has_name_size",
            SkipReason::TargetHasContent => "target_has_content",
            SkipReason::Duplicate => "duplicate",
            SkipReason::TargetHasBook => "target_has_book",
            SkipReason::BookHasFormat => "book_has_format",
            SkipReason::SourceGone => "source_gone",
            SkipReason::Excluded => "excluded",
        }
    }

    pub fn parse(s: &str) -> Option<SkipReason> {
        SkipReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the documented `skip_reason` values of `schema.sql`.
    #[test]
    fn names_are_the_documented_ones_and_parse_back() {
        let schema = include_str!("../schema.sql");
        let documented = schema
            .lines()
            .find(|l| l.contains("skip_reason      TEXT"))
            .expect("schema.sql documents skip_reason");
        for r in SkipReason::ALL {
            assert!(documented.contains(r.as_str()), "{r} not in {documented}");
            assert_eq!(SkipReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(SkipReason::parse("target_has"), None);
    }
}
