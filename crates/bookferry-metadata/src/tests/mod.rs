//! Cross-module tests of the extractors: calibre-written fixtures, the make-corpus
//! agreement run, and property tests (arbitrary and mutated inputs never panic or hang).

mod corpus;
mod fixtures;
mod props;

use std::path::PathBuf;

/// The bookferry repository this crate lives in (`crates/bookferry-metadata/../..`): its
/// `tests/data/` and `tools/` are shared with the main crate's tests, one copy of each file.
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
}

/// `tests/data/…` under the repository root.
pub fn data_dir() -> PathBuf {
    repo_dir().join("tests").join("data")
}
