//! The one migration a state DB belongs to: its source, its target and the options it was
//! started with, so `run` without arguments can resume it and a different pair is refused.
//!
//! The options are a versioned JSON object ([`RecordedOptions`]). Version 0 is the shape the
//! first binaries wrote (the same keys, no `version`); a value that does not parse, or comes
//! from a newer bookferry, is an error that says so — never silently the defaults.

use super::{now_ms, Result, StateError};
use crate::filter::FilterSpec;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The options version this binary writes: 4 with `no_covers`, else 3 with `sidecars`, else 2
/// with a filter, else 1 (so a migration without them stays readable by the binaries before
/// them, and one with them is refused by those as newer, never resumed without them).
pub const OPTIONS_VERSION: u32 = 4;
/// The version of options with sidecars and without `no_covers`.
const OPTIONS_VERSION_SIDECARS: u32 = 3;
/// The version of options with a filter and without sidecars.
const OPTIONS_VERSION_FILTER: u32 = 2;
/// The version of options without a filter or sidecars.
const OPTIONS_VERSION_NO_FILTER: u32 = 1;

/// The options a migration was recorded with (`migration.options`). Every field may be
/// missing: a state DB made by `scan` alone records only its formats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedOptions {
    /// Absent in version 0.
    #[serde(default)]
    pub version: u32,
    /// `--formats` as given (`epub,pdf` or `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<String>,
    /// `--layout`'s template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// `--link`'s mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default)]
    pub keep_duplicates: bool,
    #[serde(default)]
    pub merge_formats: bool,
    /// `--include`, `--exclude`, sizes and tags (version 2; absent: every file).
    #[serde(default, skip_serializing_if = "FilterSpec::is_everything")]
    pub filter: FilterSpec,
    /// `--sidecars` (version 3; absent: none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sidecars: bool,
    /// `--no-covers` (version 4; absent: covers are made).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_covers: bool,
}

impl RecordedOptions {
    /// Read `migration.options`.
    pub fn parse(json: &str) -> Result<RecordedOptions> {
        let bad = |source| StateError::BadOptions {
            json: json.chars().take(200).collect(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(json).map_err(bad)?;
        // A newer binary may have added fields: say "newer", not "does not parse".
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if let Some(found) = version.filter(|v| *v > u64::from(OPTIONS_VERSION)) {
            return Err(StateError::OptionsTooNew {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: OPTIONS_VERSION,
            });
        }
        serde_json::from_value(value).map_err(bad)
    }

    /// The JSON stored in `migration.options` (always the current version).
    pub fn to_json(&self) -> String {
        let version = if self.no_covers {
            OPTIONS_VERSION
        } else if self.sidecars {
            OPTIONS_VERSION_SIDECARS
        } else if !self.filter.is_everything() {
            OPTIONS_VERSION_FILTER
        } else {
            OPTIONS_VERSION_NO_FILTER
        };
        let current = RecordedOptions {
            version,
            ..self.clone()
        };
        serde_json::to_string(&current).expect("options serialize")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRecord {
    pub source: String,
    pub target: Option<String>,
    pub options: RecordedOptions,
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
    let Some((source, target, options)) = row else {
        return Ok(None);
    };
    Ok(Some(MigrationRecord {
        source,
        target: Some(target).filter(|t| !t.is_empty()),
        options: RecordedOptions::parse(&options)?,
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

/// Record (or update) the migration. Another target forgets the calibre book ids decided for
/// the old one ([`calibre_book_ids`]).
pub fn save(conn: &Connection, rec: &MigrationRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO migration (id, source, target, options, created_at) VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET source = ?1, target = ?2, options = ?3,
             calibre_keep_ids = CASE WHEN target = ?2 THEN calibre_keep_ids END,
             calibre_max_id_before = CASE WHEN target = ?2 THEN calibre_max_id_before END",
        params![
            rec.source,
            rec.target.clone().unwrap_or_default(),
            rec.options.to_json(),
            now_ms()
        ],
    )?;
    Ok(())
}

/// How the migration numbers the books it adds to its calibre target, as decided when it
/// first opened the library: (keep a calibre source's ids, the highest book id the library had
/// then). `None` until then (and with no migration recorded).
pub fn calibre_book_ids(conn: &Connection) -> Result<Option<(bool, i64)>> {
    let row: Option<(Option<bool>, Option<i64>)> = conn
        .query_row(
            "SELECT calibre_keep_ids, calibre_max_id_before FROM migration WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((Some(keep), Some(max_before))) => Some((keep, max_before)),
        _ => None,
    })
}

/// [`calibre_book_ids`], settling a migration an older bookferry (before schema version 6)
/// began: it decided nothing, and every book of the target carrying a source book's uuid was
/// taken for that book. When nothing is recorded but something was already placed (an
/// `events` row to `uploaded`), `(false, 0)` is recorded and returned: new ids, and no book
/// counts as one the library had before — as that bookferry saw it. `None` when the first open
/// is still to come.
pub fn settled_calibre_book_ids(conn: &Connection) -> Result<Option<(bool, i64)>> {
    if let Some(ids) = calibre_book_ids(conn)? {
        return Ok(Some(ids));
    }
    let placed: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM events WHERE to_state = 'uploaded')",
        [],
        |r| r.get(0),
    )?;
    if !placed {
        return Ok(None);
    }
    save_calibre_book_ids(conn, false, 0)?;
    calibre_book_ids(conn)
}

/// Record how the migration numbers its calibre target's books (see [`calibre_book_ids`]):
/// once, when it first opens the library; a decision already recorded is kept.
pub fn save_calibre_book_ids(conn: &Connection, keep: bool, max_before: i64) -> Result<()> {
    conn.execute(
        "UPDATE migration SET calibre_keep_ids = ?1, calibre_max_id_before = ?2
         WHERE id = 1 AND calibre_keep_ids IS NULL",
        params![keep, max_before],
    )?;
    Ok(())
}

/// calibre source book id → calibre target book id, from the `calibre_book_ids` view (empty
/// unless the migration is calibre → calibre; and for a state DB opened read-only before it
/// was brought to schema version 6, which has no such view). Any other migration is answered
/// without the view: it reads every placed row and trims its `target_ref` before it asks
/// what the target is (`report --failed` of a 1,000,000-file folder migration: 2.7 s of it).
pub fn calibre_book_id_map(conn: &Connection) -> Result<HashMap<i64, i64>> {
    let has_view: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = 'calibre_book_ids')
            AND EXISTS (SELECT 1 FROM migration
                        WHERE id = 1 AND source LIKE 'calibre:%' AND target LIKE 'calibre:%')",
        [],
        |r| r.get(0),
    )?;
    if !has_view {
        return Ok(HashMap::new());
    }
    let mut stmt = conn.prepare("SELECT source_id, target_id FROM calibre_book_ids")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Forget the recorded migration while no file was ever recorded for it: a command that
/// stopped on a usage error found by its scan (`--formats` matching nothing) leaves the state
/// DB bound to no migration, as if it had never run (its `runs` record stays).
pub fn forget_if_unused(conn: &Connection) -> Result<bool> {
    let n = conn.execute(
        "DELETE FROM migration WHERE NOT EXISTS (SELECT 1 FROM files)",
        [],
    )?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calibre book ids of a folder migration are none, found without the view: it would
    /// trim the `target_ref` of every placed row (counted here by an `rtrim` of our own, which
    /// the view calls twice per row) before asking what the target is. A calibre → calibre
    /// migration still gets its ids from the view.
    #[test]
    fn a_folder_migration_has_no_calibre_book_ids_and_reads_no_row_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::state::Db::open(&dir.path().join("state.db")).unwrap();
        let mut conn = db.conn().unwrap();
        let run = crate::state::runs::begin(&conn, "run", &[]).unwrap();
        let names: Vec<String> = (0..300).map(|i| format!("{i}/epub")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        crate::state::scan_store::add_test_rows(&mut conn, run, &refs);
        conn.execute_batch(
            "UPDATE files SET state = 'uploaded', target_ref = 'A/B (' || (id + 1000) || ')/B - A.epub';
             INSERT INTO migration (id, source, target, options, created_at)
                 VALUES (1, 'dir:/lib', 'dir:/out', '{}', 0);",
        )
        .unwrap();
        let trimmed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = trimmed.clone();
        conn.create_scalar_function(
            "rtrim",
            2,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8,
            move |ctx| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (s, chars): (String, String) = (ctx.get(0)?, ctx.get(1)?);
                Ok(s.trim_end_matches(|c| chars.contains(c)).to_string())
            },
        )
        .unwrap();
        let trims = || trimmed.load(std::sync::atomic::Ordering::Relaxed);
        assert!(calibre_book_id_map(&conn).unwrap().is_empty());
        assert_eq!(trims(), 0, "rows trimmed for a folder migration");

        conn.execute(
            "UPDATE migration SET source = 'calibre:/lib', target = 'calibre:/out'",
            [],
        )
        .unwrap();
        let ids = calibre_book_id_map(&conn).unwrap();
        assert_eq!(ids.len(), 300);
        assert_eq!(ids[&0], 1001);
        assert!(trims() >= 300);
    }

    /// What the binaries before options had a version wrote (commit dd8ada3, `run`), and what
    /// `scan` alone wrote.
    #[test]
    fn version_0_options_read_as_they_were_written() {
        let run = RecordedOptions::parse(
            r#"{"formats":"epub,pdf","layout":"{author}/{title}.{ext}","link":"copy","keep_duplicates":true,"merge_formats":false}"#,
        )
        .unwrap();
        assert_eq!(
            run,
            RecordedOptions {
                version: 0,
                formats: Some("epub,pdf".into()),
                layout: Some("{author}/{title}.{ext}".into()),
                link: Some("copy".into()),
                keep_duplicates: true,
                merge_formats: false,
                filter: Default::default(),
                sidecars: false,
                no_covers: false,
            }
        );
        let scan = RecordedOptions::parse(r#"{"formats":"epub"}"#).unwrap();
        assert_eq!(scan.formats.as_deref(), Some("epub"));
        assert_eq!(scan.layout, None);
    }

    #[test]
    fn options_written_now_carry_the_version_and_read_back_equal() {
        let opts = RecordedOptions {
            layout: Some("{title}.{ext}".into()),
            merge_formats: true,
            ..Default::default()
        };
        let json = opts.to_json();
        assert!(json.contains(r#""version":1"#), "{json}");
        let back = RecordedOptions::parse(&json).unwrap();
        assert_eq!(
            back.version, 1,
            "without a filter the binaries before filters read it"
        );
        assert_eq!(
            (back.layout, back.merge_formats),
            (opts.layout.clone(), true)
        );

        let filtered = RecordedOptions {
            filter: crate::filter::FilterSpec {
                exclude: vec!["*.txt".into()],
                ..Default::default()
            },
            ..opts
        };
        let json = filtered.to_json();
        assert!(json.contains(r#""version":2"#), "{json}");
        let back = RecordedOptions::parse(&json).unwrap();
        assert_eq!(
            (back.version, &back.filter),
            (OPTIONS_VERSION_FILTER, &filtered.filter)
        );

        let with_sidecars = RecordedOptions {
            sidecars: true,
            ..filtered
        };
        let json = with_sidecars.to_json();
        assert!(json.contains(r#""version":3"#), "{json}");
        assert!(json.contains(r#""sidecars":true"#), "{json}");
        let back = RecordedOptions::parse(&json).unwrap();
        assert_eq!(
            (back.version, back.sidecars),
            (OPTIONS_VERSION_SIDECARS, true)
        );
        assert!(!back.no_covers);

        let without_covers = RecordedOptions {
            no_covers: true,
            ..with_sidecars
        };
        let json = without_covers.to_json();
        assert!(json.contains(r#""version":4"#), "{json}");
        assert!(json.contains(r#""no_covers":true"#), "{json}");
        let back = RecordedOptions::parse(&json).unwrap();
        assert_eq!(
            (back.version, back.sidecars, back.no_covers),
            (OPTIONS_VERSION, true, true)
        );
        // What the binaries before sidecars wrote reads as none.
        let old = RecordedOptions::parse(r#"{"version":2,"layout":"{title}.{ext}"}"#).unwrap();
        assert!(!old.sidecars);
    }

    /// A corrupt value was read as "no options" before, and the run resumed with the default
    /// layout: now it is an error naming the value.
    #[test]
    fn options_that_do_not_parse_are_an_error_not_the_defaults() {
        for bad in [
            "",
            "{",
            "null",
            r#"{"layout": 3}"#,
            r#"{"keep_duplicates": "yes"}"#,
            r#"{"lay_out": "{title}.{ext}"}"#,
        ] {
            let e = RecordedOptions::parse(bad).unwrap_err();
            assert!(matches!(e, StateError::BadOptions { .. }), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("options"), "{e}");
        }
        let newer = RecordedOptions::parse(r#"{"version": 99}"#).unwrap_err();
        assert!(matches!(newer, StateError::OptionsTooNew { found: 99, .. }));
    }
}
