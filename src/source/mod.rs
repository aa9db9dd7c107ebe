//! Where files come from: a folder tree (`folder`), or a calibre library (`calibre`), and the
//! format set that decides which files are books (`formats`).

pub mod calibre;
pub mod folder;
pub mod formats;
pub mod listing;

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
    #[error("source {0}: a source is a folder or a calibre library on this machine (PATH, dir:PATH or calibre:PATH), not a URL")]
    Url(String),
    #[error("source {0}")]
    Form(#[from] crate::arg_form::FormError),
}

impl SourceSpec {
    /// A source recorded in the state DB (`to_spec`'s text: bytes that are not UTF-8 written
    /// `\xFF`, see [`crate::path_text`]).
    pub fn parse(s: &str) -> Result<SourceSpec, SourceSpecError> {
        SourceSpec::from_arg(&crate::path_text::unescape(s))
    }

    /// `dir:PATH`, `calibre:PATH` (prefixes case-insensitive, see [`crate::arg_form`]), or a plain path (a calibre library when it holds
    /// `metadata.db`, else a folder), as given on the command line: any bytes.
    pub fn from_arg(s: &OsStr) -> Result<SourceSpec, SourceSpecError> {
        use crate::arg_form::{classify, Form};
        let (kind, raw) = match classify(s)? {
            Form::Dir(r) => (Some("dir"), OsStr::from_bytes(r)),
            Form::Calibre(r) => (Some("calibre"), OsStr::from_bytes(r)),
            Form::Plain(_) => (None, s),
            Form::Http | Form::CalibreServer => {
                return Err(SourceSpecError::Url(
                    crate::path_text::escape(s).into_owned(),
                ))
            }
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
