//! The one migration a state DB belongs to: its source, its target and the options it was
//! started with, so `run` without arguments can resume it and a different pair is refused.

use super::{now_ms, Result};
use rusqlite::{params, Connection, OptionalExtension};

#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRecord {
    pub source: String,
    pub target: Option<String>,
    pub options: serde_json::Value,
}

/// The recorded migration, if any. A DB made by `scan` alone has a source and no target yet
/// (stored as an empty string).
pub fn load(conn: &Connection) -> Result<Option<MigrationRecord>> {
    let row = conn
        .query_row(
            "SELECT source, target, options FROM migration WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .optional()?;
    Ok(row.map(|(source, target, options)| MigrationRecord {
        source,
        target: Some(target).filter(|t| !t.is_empty()),
        options: serde_json::from_str(&options).unwrap_or(serde_json::Value::Null),
    }))
}

/// What tells this migration apart from any other, stable for its life: when it was first
/// recorded, and its source. (The calibre target derives its books' uuids from it.)
pub fn key(conn: &Connection) -> Result<String> {
    let key = conn
        .query_row(
            "SELECT created_at || ':' || source FROM migration WHERE id = 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .optional()?;
    Ok(key.unwrap_or_default())
}

/// Record (or update) the migration.
pub fn save(conn: &Connection, rec: &MigrationRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO migration (id, source, target, options, created_at) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET source = ?1, target = ?2, options = ?3",
        params![
            rec.source,
            rec.target.clone().unwrap_or_default(),
            rec.options.to_string(),
            now_ms()
        ],
    )?;
    Ok(())
}
