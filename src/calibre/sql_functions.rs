//! The SQL functions calibre registers on its connection (`title_sort`, `author_to_author_sort`,
//! `uuid4`, `books_list_filter` and the legacy aggregates its views use), so calibre's triggers
//! and views run unchanged on our connection.

use super::text::{sql_author_to_author_sort, title_sort};
use super::uuid4;
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// A value as Python's `str()` would show it, for the concatenating aggregates.
fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(r) => Some(format!("{r:?}")),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// `concat(x)`: non-NULL values joined by `,`.
struct Concatenate;
impl Aggregate<Vec<String>, Option<String>> for Concatenate {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<String>) -> rusqlite::Result<()> {
        acc.extend(text_of(ctx.get_raw(0)));
        Ok(())
    }
    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<Vec<String>>,
    ) -> rusqlite::Result<Option<String>> {
        Ok(acc.filter(|a| !a.is_empty()).map(|a| a.join(",")))
    }
}

/// Sort key of the index argument of the sorted aggregates.
fn index_key(v: ValueRef<'_>) -> i64 {
    match v {
        ValueRef::Integer(i) => i,
        ValueRef::Real(r) => r as i64,
        _ => text_of(v).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

/// `sortconcat(ndx, x)` (and `_bar`, `_amper`): values ordered by `ndx`, joined by `sep`.
struct SortedConcatenate(&'static str);
impl Aggregate<BTreeMap<i64, String>, Option<String>> for SortedConcatenate {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<BTreeMap<i64, String>> {
        Ok(BTreeMap::new())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut BTreeMap<i64, String>) -> rusqlite::Result<()> {
        if let Some(v) = text_of(ctx.get_raw(1)) {
            acc.insert(index_key(ctx.get_raw(0)), v);
        }
        Ok(())
    }
    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<BTreeMap<i64, String>>,
    ) -> rusqlite::Result<Option<String>> {
        Ok(join_in_order(acc, self.0))
    }
}

/// The values of an index-ordered accumulator joined by `sep`; NULL when there are none.
fn join_in_order(acc: Option<BTreeMap<i64, String>>, sep: &str) -> Option<String> {
    acc.filter(|a| !a.is_empty())
        .map(|a| a.into_values().collect::<Vec<_>>().join(sep))
}

/// `identifiers_concat(type, val)`: `type:val` joined by `,`.
struct IdentifiersConcat;
impl Aggregate<Vec<String>, String> for IdentifiersConcat {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<String>) -> rusqlite::Result<()> {
        let k = text_of(ctx.get_raw(0)).unwrap_or_else(|| "None".into());
        let v = text_of(ctx.get_raw(1)).unwrap_or_else(|| "None".into());
        acc.push(format!("{k}:{v}"));
        Ok(())
    }
    fn finalize(&self, _: &mut Context<'_>, acc: Option<Vec<String>>) -> rusqlite::Result<String> {
        Ok(acc.unwrap_or_default().join(","))
    }
}

/// `aum_sortconcat(ndx, author, sort, link)`: `author:::sort:::link` ordered by `ndx`, joined
/// by `:#:`.
struct AumSortedConcatenate;
impl Aggregate<BTreeMap<i64, String>, Option<String>> for AumSortedConcatenate {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<BTreeMap<i64, String>> {
        Ok(BTreeMap::new())
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut BTreeMap<i64, String>) -> rusqlite::Result<()> {
        if let Some(author) = text_of(ctx.get_raw(1)) {
            let sort = text_of(ctx.get_raw(2)).unwrap_or_default();
            let link = text_of(ctx.get_raw(3)).unwrap_or_default();
            acc.insert(
                index_key(ctx.get_raw(0)),
                format!("{author}:::{sort}:::{link}"),
            );
        }
        Ok(())
    }
    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<BTreeMap<i64, String>>,
    ) -> rusqlite::Result<Option<String>> {
        Ok(join_in_order(acc, ":#:"))
    }
}

/// Register calibre's functions on `conn` (calibre's `backend.Connection.__init__`).
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let det = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("title_sort", 1, det, |ctx| {
        Ok(text_of(ctx.get_raw(0)).map(|t| title_sort(&t)))
    })?;
    conn.create_scalar_function("author_to_author_sort", 1, det, |ctx| {
        Ok(text_of(ctx.get_raw(0))
            .map(|a| sql_author_to_author_sort(&a))
            .unwrap_or_default())
    })?;
    conn.create_scalar_function("uuid4", 0, FunctionFlags::SQLITE_UTF8, |_| Ok(uuid4()))?;
    conn.create_scalar_function("books_list_filter", 1, det, |_| Ok(1i64))?;
    conn.create_aggregate_function("sortconcat", 2, det, SortedConcatenate(","))?;
    conn.create_aggregate_function("sortconcat_bar", 2, det, SortedConcatenate("|"))?;
    conn.create_aggregate_function("sortconcat_amper", 2, det, SortedConcatenate("&"))?;
    conn.create_aggregate_function("identifiers_concat", 2, det, IdentifiersConcat)?;
    conn.create_aggregate_function("concat", 1, det, Concatenate)?;
    conn.create_aggregate_function("aum_sortconcat", 4, det, AumSortedConcatenate)?;
    Ok(())
}

/// Fail unless calibre's functions answer on `conn` (a connection someone forgot to
/// [`register`] on would make the first `INSERT INTO books` fail inside a trigger).
pub fn check_registered(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row(
        "SELECT title_sort('The x'), author_to_author_sort('a b'), uuid4(), books_list_filter(1)",
        [],
        |_| Ok(()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_functions_run_in_sql() {
        let conn = Connection::open_in_memory().expect("memory db");
        register(&conn).expect("register");
        check_registered(&conn).expect("check");
        let (t, a, c, s): (String, String, String, String) = conn
            .query_row(
                "WITH v(i, x) AS (VALUES (2, 'b'), (1, 'a'), (3, NULL))
                 SELECT title_sort('The End'), author_to_author_sort('Ann Lee'),
                        (SELECT concat(x) FROM v), (SELECT sortconcat(i, x) FROM v)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("query");
        assert_eq!(
            (t.as_str(), a.as_str(), c.as_str(), s.as_str()),
            ("End, The", "Lee, Ann", "b,a", "a,b")
        );
    }
}
