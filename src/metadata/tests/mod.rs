//! Cross-module tests of the extractors: calibre-written fixtures, the make-corpus
//! agreement run, and property tests (arbitrary and mutated inputs never panic or hang).

mod corpus;
mod fixtures;
mod props;

use std::path::PathBuf;

/// `tests/data/…` under the crate root.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
}
