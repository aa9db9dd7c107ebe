//! Which files are books: the format set (`--formats`) and the format of a file name.

use std::collections::BTreeSet;

/// The formats recorded by default.
pub const DEFAULT_FORMATS: &[&str] = &[
    "epub", "kepub", "pdf", "mobi", "azw", "azw3", "kfx", "fb2", "fb2.zip", "djvu", "cbz", "cbr",
    "cb7", "txt", "rtf", "doc", "docx", "odt", "lit", "pdb", "chm", "htmlz",
];

/// The set of formats a scan records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatSet {
    /// Every regular file (`--formats all`).
    All,
    Only(BTreeSet<String>),
}

impl Default for FormatSet {
    fn default() -> FormatSet {
        FormatSet::Only(DEFAULT_FORMATS.iter().map(|s| s.to_string()).collect())
    }
}

/// A `--formats` list that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--formats {0:?}: name at least one format, or `all`")]
pub struct NoFormats(pub String);

impl FormatSet {
    /// Parse `epub,pdf` or `all`. Leading dots and case are ignored.
    pub fn parse(list: &str) -> Result<FormatSet, NoFormats> {
        if list.trim().eq_ignore_ascii_case("all") {
            return Ok(FormatSet::All);
        }
        let set: BTreeSet<String> = list
            .split(',')
            .map(|s| s.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if set.is_empty() {
            return Err(NoFormats(list.into()));
        }
        Ok(FormatSet::Only(set))
    }

    /// The format of `file_name` if this set records it.
    pub fn format_of(&self, file_name: &str) -> Option<String> {
        let f = format_of(file_name);
        match self {
            FormatSet::All => Some(f.unwrap_or_default()),
            FormatSet::Only(set) => f.filter(|f| set.contains(f)),
        }
    }

    /// The set as recorded in the migration's options.
    pub fn to_spec(&self) -> String {
        match self {
            FormatSet::All => "all".into(),
            FormatSet::Only(s) => s.iter().cloned().collect::<Vec<_>>().join(","),
        }
    }
}

/// Lowercase extension, with `fb2.zip` as one format.
pub fn format_of(file_name: &str) -> Option<String> {
    let lower = file_name.to_lowercase();
    if lower.ends_with(".fb2.zip") && lower.len() > ".fb2.zip".len() {
        return Some("fb2.zip".into());
    }
    let (stem, ext) = lower.rsplit_once('.')?;
    if stem.is_empty() || ext.is_empty() {
        return None;
    }
    Some(ext.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        assert_eq!(format_of("Dune.EPUB").as_deref(), Some("epub"));
        assert_eq!(format_of("a.fb2.zip").as_deref(), Some("fb2.zip"));
        assert_eq!(format_of(".hidden"), None);
        assert_eq!(format_of("README"), None);
        let set = FormatSet::parse("epub, .PDF").unwrap();
        assert_eq!(set.format_of("x.pdf").as_deref(), Some("pdf"));
        assert_eq!(set.format_of("x.txt"), None);
        assert_eq!(
            FormatSet::default().format_of("x.txt").as_deref(),
            Some("txt")
        );
        assert_eq!(FormatSet::All.format_of("README").as_deref(), Some(""));
        assert!(FormatSet::parse(" , ").is_err());
    }
}
