//! The ids of the library's item tables (authors, series, tags, publishers, languages) by name,
//! as a commit's rows need them: calibre reuses an item of the same name in any case. Kept as
//! 64-bit keys of the lowercased names ([`Keys`], 16 bytes an item, where maps of the names
//! took ~400 for an author), each match confirmed by reading the row back, with the names used
//! lately at hand.

use super::keys::{hashed, Keys};
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;

/// Names used lately, per table, before that cache starts again.
const RECENT_NAMES: usize = 4096;

/// The item tables' ids by name.
#[derive(Default)]
pub(super) struct Items {
    pub(super) authors: ItemIndex,
    pub(super) series: ItemIndex,
    pub(super) tags: ItemIndex,
    pub(super) publishers: ItemIndex,
    pub(super) languages: ItemIndex,
}

/// One item table's ids by name (`|` read as `,`, as calibre stores commas in names).
#[derive(Default)]
pub(super) struct ItemIndex {
    /// `SELECT name, extra FROM table WHERE id = ?1`: what confirms a match.
    row_sql: String,
    keys: Keys,
    /// Lowercased name → (id, extra) of names used lately.
    recent: HashMap<String, (i64, String)>,
}

fn name_key(lowercased: &str) -> u64 {
    hashed(&[lowercased])
}

/// A stored name as it is compared: `|` read as `,`, lowercased.
fn compared(stored: &str) -> String {
    stored.replace('|', ",").to_lowercase()
}

impl Items {
    /// Every item table's ids by name.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Items> {
        Ok(Items {
            authors: ItemIndex::load(conn, "authors", "name", "sort")?,
            series: ItemIndex::load(conn, "series", "name", "NULL")?,
            tags: ItemIndex::load(conn, "tags", "name", "NULL")?,
            publishers: ItemIndex::load(conn, "publishers", "name", "NULL")?,
            languages: ItemIndex::load(conn, "languages", "lang_code", "NULL")?,
        })
    }
}

impl ItemIndex {
    fn load(
        conn: &Connection,
        table: &str,
        column: &str,
        extra: &str,
    ) -> rusqlite::Result<ItemIndex> {
        let mut ix = ItemIndex {
            row_sql: format!("SELECT {column}, {extra} FROM {table} WHERE id = ?1"),
            ..ItemIndex::default()
        };
        let mut stmt = conn.prepare(&format!("SELECT id, {column} FROM {table}"))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, name) = row?;
            ix.keys.insert(name_key(&compared(&name)), id);
        }
        Ok(ix)
    }

    /// The (id, extra) of the item named `lowercased` (any case; `,` for `|`), the lowest id
    /// when several are.
    pub(super) fn find(
        &self,
        conn: &Connection,
        lowercased: &str,
    ) -> rusqlite::Result<Option<(i64, String)>> {
        if let Some(found) = self.recent.get(lowercased) {
            return Ok(Some(found.clone()));
        }
        for id in self.keys.ids(name_key(lowercased)) {
            let row: Option<(String, Option<String>)> = conn
                .prepare_cached(&self.row_sql)?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((name, extra)) = row {
                if compared(&name) == lowercased {
                    return Ok(Some((id, extra.unwrap_or_default())));
                }
            }
        }
        Ok(None)
    }

    /// Note an item: added to the table, or found and about to be used again.
    pub(super) fn remember(&mut self, lowercased: &str, id: i64, extra: String, added: bool) {
        if added {
            self.keys.insert(name_key(lowercased), id);
        }
        if self.recent.len() >= RECENT_NAMES {
            self.recent.clear();
        }
        self.recent.insert(lowercased.to_string(), (id, extra));
    }
}
