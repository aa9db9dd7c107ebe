//! Where files come from: a folder tree (`folder`), or a calibre library (`calibre`), and the
//! format set that decides which files are books (`formats`).

pub mod calibre;
pub mod folder;
pub mod formats;

use std::path::{Path, PathBuf};

/// The source as the user named it, canonicalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Dir(PathBuf),
    Calibre(PathBuf),
}

/// Why a source cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceSpecError {
    #[error("source {given}: {source}")]
    Unresolvable {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error("source {}: not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("source {}: no calibre metadata.db in this folder", .0.display())]
    NotCalibre(PathBuf),
}

impl SourceSpec {
    /// `dir:PATH`, `calibre:PATH`, or a plain path (a calibre library when it holds
    /// `metadata.db`, else a folder).
    pub fn parse(s: &str) -> Result<SourceSpec, SourceSpecError> {
        let (kind, raw) = if let Some(r) = s.strip_prefix("dir:") {
            (Some("dir"), r)
        } else if let Some(r) = s.strip_prefix("calibre:") {
            (Some("calibre"), r)
        } else {
            (None, s)
        };
        let path =
            Path::new(raw)
                .canonicalize()
                .map_err(|source| SourceSpecError::Unresolvable {
                    given: raw.into(),
                    source,
                })?;
        if !path.is_dir() {
            return Err(SourceSpecError::NotAFolder(path));
        }
        match kind {
            Some("dir") => Ok(SourceSpec::Dir(path)),
            Some(_) => {
                if !calibre::is_calibre_library(&path) {
                    return Err(SourceSpecError::NotCalibre(path));
                }
                Ok(SourceSpec::Calibre(path))
            }
            None if calibre::is_calibre_library(&path) => Ok(SourceSpec::Calibre(path)),
            None => Ok(SourceSpec::Dir(path)),
        }
    }

    pub fn root(&self) -> &Path {
        match self {
            SourceSpec::Dir(p) | SourceSpec::Calibre(p) => p,
        }
    }

    /// The canonical form recorded in the state DB.
    pub fn to_spec(&self) -> String {
        match self {
            SourceSpec::Dir(p) => format!("dir:{}", p.display()),
            SourceSpec::Calibre(p) => format!("calibre:{}", p.display()),
        }
    }
}
