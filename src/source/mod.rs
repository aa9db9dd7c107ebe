//! Where files come from: a folder tree (`folder`), or a calibre library (`calibre`), and the
//! format set that decides which files are books (`formats`).

pub mod calibre;
pub mod folder;
pub mod formats;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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
    /// A source recorded in the state DB (`to_spec`'s text: bytes that are not UTF-8 written
    /// `\xFF`, see [`crate::path_text`]).
    pub fn parse(s: &str) -> Result<SourceSpec, SourceSpecError> {
        SourceSpec::from_arg(&crate::path_text::unescape(s))
    }

    /// `dir:PATH`, `calibre:PATH`, or a plain path (a calibre library when it holds
    /// `metadata.db`, else a folder), as given on the command line: any bytes.
    pub fn from_arg(s: &OsStr) -> Result<SourceSpec, SourceSpecError> {
        let bytes = s.as_bytes();
        let (kind, raw) = if let Some(r) = bytes.strip_prefix(b"dir:") {
            (Some("dir"), OsStr::from_bytes(r))
        } else if let Some(r) = bytes.strip_prefix(b"calibre:") {
            (Some("calibre"), OsStr::from_bytes(r))
        } else {
            (None, s)
        };
        let path =
            Path::new(raw)
                .canonicalize()
                .map_err(|source| SourceSpecError::Unresolvable {
                    given: crate::path_text::escape(raw).into_owned(),
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

    /// The canonical form recorded in the state DB (bytes that are not UTF-8 written `\xFF`,
    /// as in `files.source_ref`; [`SourceSpec::parse`] reads it back).
    pub fn to_spec(&self) -> String {
        match self {
            SourceSpec::Dir(p) => format!("dir:{}", crate::path_text::escape(p.as_os_str())),
            SourceSpec::Calibre(p) => {
                format!("calibre:{}", crate::path_text::escape(p.as_os_str()))
            }
        }
    }
}
