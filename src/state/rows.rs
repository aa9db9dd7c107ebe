//! Row types: what a scan records about a new file, and what a claim hands to the pipeline.

use super::FileState;
use crate::metadata::{Metadata, Origin};
use rusqlite::types::{Value, ValueRef};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Which kind of source a row came from (`files.source_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Dir,
    Calibre,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Dir => "dir",
            SourceKind::Calibre => "calibre",
        }
    }

    pub fn parse(s: &str) -> SourceKind {
        if s == "calibre" {
            SourceKind::Calibre
        } else {
            SourceKind::Dir
        }
    }
}

/// A file found by a scan.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    pub source_kind: SourceKind,
    /// Stable key: relative path (dir) or `book_id/format` (calibre).
    pub source_ref: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub format: String,
    /// Metadata the source already holds (calibre), stored at scan time.
    pub metadata: Option<(Metadata, Origin)>,
}

/// A row claimed by a run, as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: i64,
    pub source_kind: SourceKind,
    pub source_ref: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub format: String,
    pub state: FileState,
    pub sha1: Option<String>,
    pub blake3: Option<String>,
    pub metadata: Option<Metadata>,
    pub metadata_origin: Option<Origin>,
    pub target_ref: Option<String>,
    pub attempts: i64,
}

impl FileRow {
    /// The file's base name as it is on disk (the name a target sees).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Whether the on-disk name is valid UTF-8 (if not, targets see a lossy form).
    pub fn name_is_utf8(&self) -> bool {
        self.path.file_name().is_none_or(|n| n.to_str().is_some())
    }

    pub const COLUMNS: &'static str = "id, source_kind, source_ref, path, size, mtime_ns, format, \
         state, sha1, blake3, metadata, metadata_origin, target_ref, attempts";

    /// Read a row selected with `COLUMNS`.
    pub fn from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
        let state: String = r.get(7)?;
        let metadata: Option<String> = r.get(10)?;
        let origin: Option<String> = r.get(11)?;
        Ok(FileRow {
            id: r.get(0)?,
            source_kind: SourceKind::parse(&r.get::<_, String>(1)?),
            source_ref: r.get(2)?,
            path: path_from_sql(r.get_ref(3)?),
            size: r.get::<_, i64>(4)? as u64,
            mtime_ns: r.get(5)?,
            format: r.get(6)?,
            state: FileState::parse(&state).unwrap_or(FileState::Pending),
            sha1: r.get(8)?,
            blake3: r.get(9)?,
            metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
            metadata_origin: origin.as_deref().and_then(Origin::parse),
            target_ref: r.get(12)?,
            attempts: r.get(13)?,
        })
    }
}

/// A path as an SQL value: TEXT when it is UTF-8, else a BLOB of its raw bytes, so a file whose
/// name is not UTF-8 can still be opened exactly.
pub fn path_to_sql(p: &Path) -> Value {
    match p.to_str() {
        Some(s) => Value::Text(s.to_string()),
        None => Value::Blob(p.as_os_str().as_bytes().to_vec()),
    }
}

pub fn path_from_sql(v: ValueRef<'_>) -> PathBuf {
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            PathBuf::from(std::ffi::OsString::from_vec(t.to_vec()))
        }
        _ => PathBuf::new(),
    }
}
