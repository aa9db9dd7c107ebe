//! Which of the source's files move: `--include`, `--exclude`, `--exclude-from`, `--files-from`
//! (globs against the path relative to the source root), `--min-size`/`--max-size`, and for a
//! calibre source `--include-tag`/`--exclude-tag`. Recorded with the migration like
//! `--formats`; a file the filter leaves out is never recorded, and a row not yet final that a
//! changed filter leaves out ends `skipped`/`excluded`.
//!
//! Glob rules are rclone's and gitignore's: `*` and `?` never cross a `/`, `**` does; a
//! pattern with no `/` matches the file's name at any depth (`*.pdf`), one with a `/` matches
//! the whole relative path from the root (`comics/**`, a leading `/` allowed).

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The filter as given and recorded (the migration's options JSON; every field optional, so
/// a state DB recorded before filters existed reads as "everything").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// A file of exclude globs, one per line (`#` comments and blank lines ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_from: Option<PathBuf>,
    /// A file listing the only paths to take, one per line, relative to the source root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_from: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// calibre source: only books with one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_tag: Vec<String>,
    /// calibre source: no book with one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tag: Vec<String>,
}

/// Why a filter cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--{flag} {pattern:?}: {source}")]
    Glob {
        flag: &'static str,
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("--{flag} {}: {source}", .path.display())]
    ListFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--min-size {min} is above --max-size {max}: no file could move")]
    EmptySizeRange { min: u64, max: u64 },
}

/// A built filter, asked once per file.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<Globs>,
    exclude: Option<Globs>,
    files: Option<HashSet<String>>,
    ignore_case: bool,
    min_size: Option<u64>,
    max_size: Option<u64>,
    include_tag: Vec<String>,
    exclude_tag: Vec<String>,
}

impl FilterSpec {
    /// True when it lets every file through.
    pub fn is_everything(&self) -> bool {
        *self == FilterSpec::default()
    }

    pub fn build(&self) -> Result<Filter, FilterError> {
        if let (Some(min), Some(max)) = (self.min_size, self.max_size) {
            if min > max {
                return Err(FilterError::EmptySizeRange { min, max });
            }
        }
        let mut excludes = self.exclude.clone();
        if let Some(path) = &self.exclude_from {
            excludes.extend(read_list("exclude-from", path)?);
        }
        let files = match &self.files_from {
            Some(path) => Some(
                read_list("files-from", path)?
                    .into_iter()
                    .map(|l| normalize(l.trim_start_matches('/'), self.ignore_case))
                    .collect(),
            ),
            None => None,
        };
        Ok(Filter {
            include: glob_set("include", &self.include, self.ignore_case)?,
            exclude: glob_set("exclude", &excludes, self.ignore_case)?,
            files,
            ignore_case: self.ignore_case,
            min_size: self.min_size,
            max_size: self.max_size,
            include_tag: self.include_tag.iter().map(|t| t.to_lowercase()).collect(),
            exclude_tag: self.exclude_tag.iter().map(|t| t.to_lowercase()).collect(),
        })
    }
}

impl Filter {
    /// Whether the file at `rel` (relative to the source root, `/`-separated) of `size` bytes
    /// moves.
    pub fn takes(&self, rel: &str, size: u64) -> bool {
        if self.min_size.is_some_and(|min| size < min)
            || self.max_size.is_some_and(|max| size > max)
        {
            return false;
        }
        if let Some(files) = &self.files {
            if !files.contains(&normalize(rel, self.ignore_case)) {
                return false;
            }
        }
        if let Some(include) = &self.include {
            if !include.is_match(rel) {
                return false;
            }
        }
        !self.exclude.as_ref().is_some_and(|e| e.is_match(rel))
    }

    /// Whether a calibre book with these tags moves (tags compared case-insensitively, as
    /// calibre's search does).
    pub fn takes_tags(&self, tags: &[String]) -> bool {
        let has = |wanted: &[String]| tags.iter().any(|t| wanted.contains(&t.to_lowercase()));
        (self.include_tag.is_empty() || has(&self.include_tag)) && !has(&self.exclude_tag)
    }
}

/// Globs without a `/` are matched against the file's name, the others against its path
/// from the root.
#[derive(Debug, Clone)]
struct Globs {
    names: GlobSet,
    paths: GlobSet,
}

impl Globs {
    fn is_match(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.paths.is_match(rel) || self.names.is_match(name)
    }
}

fn glob_set(
    flag: &'static str,
    patterns: &[String],
    ignore_case: bool,
) -> Result<Option<Globs>, FilterError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
    for p in patterns {
        let glob = GlobBuilder::new(p.strip_prefix('/').unwrap_or(p))
            .literal_separator(true)
            .case_insensitive(ignore_case)
            .backslash_escape(true)
            .build()
            .map_err(|source| FilterError::Glob {
                flag,
                pattern: p.clone(),
                source,
            })?;
        if p.contains('/') {
            paths.add(glob);
        } else {
            names.add(glob);
        }
    }
    let build = |b: GlobSetBuilder| {
        b.build().map_err(|source| FilterError::Glob {
            flag,
            pattern: patterns.join(" "),
            source,
        })
    };
    Ok(Some(Globs {
        names: build(names)?,
        paths: build(paths)?,
    }))
}

/// The lines of a list file: trimmed of line ends, without blank lines and `#` comments.
fn read_list(flag: &'static str, path: &Path) -> Result<Vec<String>, FilterError> {
    let text = std::fs::read_to_string(path).map_err(|source| FilterError::ListFile {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn normalize(rel: &str, ignore_case: bool) -> String {
    if ignore_case {
        rel.to_lowercase()
    } else {
        rel.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FilterSpec {
        FilterSpec::default()
    }

    #[test]
    fn globs_without_a_slash_match_names_at_any_depth_and_star_never_crosses_a_folder() {
        let f = FilterSpec {
            include: vec!["*.pdf".into(), "comics/**".into()],
            exclude: vec!["drafts/*".into()],
            ..spec()
        }
        .build()
        .unwrap();
        assert!(f.takes("a.pdf", 1));
        assert!(f.takes("deep/er/a.pdf", 1));
        assert!(f.takes("comics/x/y.cbz", 1));
        assert!(!f.takes("a.epub", 1));
        assert!(!f.takes("drafts/a.pdf", 1), "excluded wins");
        assert!(
            f.takes("drafts/old/a.pdf", 1),
            "drafts/* does not reach a subfolder"
        );
        let anchored = FilterSpec {
            exclude: vec!["/top.pdf".into()],
            ..spec()
        }
        .build()
        .unwrap();
        assert!(!anchored.takes("top.pdf", 1));
        assert!(anchored.takes("sub/top.pdf", 1));
    }

    #[test]
    fn case_sizes_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "# wanted\nA/One.epub\r\n\n/b.pdf\n").unwrap();
        let f = FilterSpec {
            files_from: Some(list.clone()),
            ignore_case: true,
            min_size: Some(10),
            max_size: Some(100),
            ..spec()
        }
        .build()
        .unwrap();
        assert!(f.takes("a/one.EPUB", 50));
        assert!(f.takes("b.pdf", 10) && f.takes("b.pdf", 100));
        assert!(!f.takes("b.pdf", 9) && !f.takes("b.pdf", 101));
        assert!(!f.takes("c.pdf", 50));

        let exact = FilterSpec {
            include: vec!["*.PDF".into()],
            ..spec()
        }
        .build()
        .unwrap();
        assert!(
            !exact.takes("b.pdf", 1),
            "case matters without --ignore-case"
        );

        let bad = FilterSpec {
            exclude_from: Some(dir.path().join("missing")),
            ..spec()
        }
        .build()
        .unwrap_err()
        .to_string();
        assert!(
            bad.starts_with("--exclude-from ") && bad.contains("missing"),
            "{bad}"
        );
        assert!(matches!(
            FilterSpec {
                min_size: Some(2),
                max_size: Some(1),
                ..spec()
            }
            .build(),
            Err(FilterError::EmptySizeRange { .. })
        ));
        assert!(matches!(
            FilterSpec {
                include: vec!["a[".into()],
                ..spec()
            }
            .build(),
            Err(FilterError::Glob {
                flag: "include",
                ..
            })
        ));
    }

    #[test]
    fn tags_are_matched_case_insensitively() {
        let f = FilterSpec {
            include_tag: vec!["Fiction".into()],
            exclude_tag: vec!["DNF".into()],
            ..spec()
        }
        .build()
        .unwrap();
        assert!(f.takes_tags(&["fiction".into()]));
        assert!(!f.takes_tags(&["fiction".into(), "dnf".into()]));
        assert!(!f.takes_tags(&[]));
        assert!(spec().build().unwrap().takes_tags(&[]));
        assert!(spec().is_everything());
    }

    #[test]
    fn a_spec_recorded_before_filters_existed_reads_as_everything() {
        let s: FilterSpec = serde_json::from_str("{}").unwrap();
        assert!(s.is_everything());
        let s = FilterSpec {
            exclude: vec!["*.txt".into()],
            ..spec()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"exclude":["*.txt"]}"#);
        assert_eq!(serde_json::from_str::<FilterSpec>(&json).unwrap(), s);
    }
}
