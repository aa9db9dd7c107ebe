//! The content check, in batches: is this content (by BLAKE3, and by SHA-1 too where both rows
//! have one, see `hash::Digests::same_content`) already placed by this migration (another row,
//! possibly from an earlier run — the row becomes a `skipped` duplicate of it), or already on
//! the target (a local one compares BLAKE3; an HTTP server is asked by SHA-1, as it knows it)?
//! Rows left in flight by a run that died (`metadata_cached`) are checked here too, so a
//! transfer whose reply was lost in a crash is not sent a second time.

use super::batch::next_batch;
use super::fault::{Cause, Fault, Stage};
use super::{tasks, Ctx, Item};
use crate::hash::Digests;
use crate::skip_reason::SkipReason;
use crate::state::FileState;
use crate::target::ContentQuery;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const BATCH: usize = 1000;
const WAIT: Duration = Duration::from_millis(50);

pub async fn stage(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Item>, out: mpsc::Sender<Item>) {
    while let Some(batch) = next_batch(&mut rx, BATCH, WAIT).await {
        if ctx.cancelled() {
            continue;
        }
        for item in check_batch(&ctx, batch).await {
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// Content this migration placed, of the batch's BLAKE3s (none asked with
/// `--keep-duplicates`). `None` when the state DB could not say: the run is stopped for it, as
/// an answer of "none" would send duplicates.
async fn placed_content(ctx: &Ctx, blake3s: Vec<String>, inject: bool) -> Option<Placed> {
    if ctx.cfg.keep_duplicates {
        return Some(HashMap::new());
    }
    let db = ctx.db.clone();
    let read = tasks::blocking(ctx, Stage::ContentCheck, move || {
        uploaded_with_content(&db, &blake3s, inject)
    });
    match read.await? {
        Ok(placed) => Some(placed),
        Err(e) => {
            ctx.abort(Fault::new(Stage::ContentCheck, Cause::StateDb(e)));
            None
        }
    }
}

/// Rows already `uploaded`, by BLAKE3: (their digests, id, where it went), lowest id first.
type Placed = HashMap<String, Vec<(Digests, i64, String)>>;

/// The first placed row with the same content as `d` (see `Digests::same_content`).
fn placed_as<'a>(placed: &'a Placed, d: &Digests) -> Option<&'a (Digests, i64, String)> {
    placed
        .get(&d.blake3)?
        .iter()
        .find(|(p, _, _)| p.same_content(d))
}

async fn check_batch(ctx: &Ctx, batch: Vec<Item>) -> Vec<Item> {
    let blake3s: Vec<String> = batch
        .iter()
        .filter(|i| matches!(i.row.state, FileState::Hashed | FileState::MetadataCached))
        .filter_map(|i| i.content_key())
        .collect();
    if blake3s.is_empty() {
        return batch;
    }
    let inject = batch
        .iter()
        .any(|i| super::fault::injected("content-db", &i.row.source_ref));
    let Some(placed) = placed_content(ctx, blake3s, inject).await else {
        // The run is stopping; the batch's rows stay where they are.
        return Vec::new();
    };
    let mut rest = Vec::with_capacity(batch.len());
    let mut queries = Vec::new();
    for item in batch {
        let digests = item.digests();
        let key = item.content_key();
        let checkable = matches!(
            item.row.state,
            FileState::Hashed | FileState::MetadataCached
        );
        if let (true, Some(digests)) = (checkable, digests) {
            let landed = placed_as(&placed, &digests).map(|(_, id, at)| (id, at));
            if let Some((first, first_ref)) = landed.filter(|(id, _)| **id != item.row.id) {
                ctx.skip(
                    &item,
                    SkipReason::Duplicate,
                    format!("same content as file #{first} ({first_ref})"),
                    Some(*first),
                )
                .await;
                continue;
            }
            // A content another row of this run already went on to transfer with is not asked
            // about: the transfer stage makes it a duplicate of that row (or sends it, if that
            // row fails).
            let forwarded_by = ctx
                .contents
                .lock()
                .ok()
                .and_then(|c| c.forwarded_by(key.as_deref()?));
            if forwarded_by.is_some_and(|id| id != item.row.id) && !ctx.cfg.keep_duplicates {
                rest.push(item);
                continue;
            }
            // Still checked against what this migration placed (above): a row with its
            // content may have been placed after this one failed.
            let failed_at_placement = item.row.state == FileState::MetadataCached
                && ctx.cfg.failed_at_placement.contains(&item.row.id);
            if failed_at_placement && !ctx.target.asks_again_after_a_failed_placement() {
                if let (Some(key), Ok(mut contents)) = (key.as_deref(), ctx.contents.lock()) {
                    contents.forward(key, item.row.id);
                }
                rest.push(item);
                continue;
            }
            queries.push(ContentQuery {
                key: item.row.id,
                digests,
                file_name: item.row.file_name(),
                size: item.row.size,
            });
        }
        rest.push(item);
    }
    if queries.is_empty() {
        return rest;
    }
    match ctx.target.check_content(queries).await {
        Ok(exists) => record_answers(ctx, rest, &exists).await,
        Err(f) => {
            for item in &rest {
                ctx.fail(item, f.clone(), 0).await;
            }
            Vec::new()
        }
    }
}

/// Skip the rows whose content the target has (`exists`: row id → where, when known); the
/// rest go on.
async fn record_answers(
    ctx: &Ctx,
    rest: Vec<Item>,
    exists: &HashMap<i64, Option<String>>,
) -> Vec<Item> {
    let mut forward = Vec::with_capacity(rest.len());
    for item in rest {
        let Some(found_at) = exists.get(&item.row.id) else {
            if let (Some(key), Ok(mut contents)) = (item.content_key(), ctx.contents.lock()) {
                contents.forward(&key, item.row.id);
            }
            forward.push(item);
            continue;
        };
        if item.row.state == FileState::MetadataCached {
            // Sent by a run that died before recording it: the target has it, so it is ours.
            let mut t = item.to(FileState::Uploaded);
            t.target_ref = found_at.clone();
            t.detail = Some("found on the target after an interrupted transfer".into());
            ctx.writer.send(t).await;
            ctx.progress.uploaded.add(1);
            ctx.progress.uploaded_bytes.add(item.row.size);
        } else {
            let at = found_at
                .as_deref()
                .map(|p| format!(" at {p}"))
                .unwrap_or_default();
            ctx.skip(
                &item,
                SkipReason::TargetHasContent,
                format!("target already has this content (same SHA-1){at}"),
                None,
            )
            .await;
        }
    }
    forward
}

/// Rows already `uploaded` with one of these BLAKE3s (see [`Placed`]). `inject`: the test
/// hook's fault, a query SQLite refuses.
fn uploaded_with_content(
    db: &crate::state::Db,
    blake3s: &[String],
    inject: bool,
) -> crate::state::Result<Placed> {
    // One query per chunk of BLAKE3s (not one per row); the lowest id wins, as it landed first.
    const CHUNK: usize = 500;
    let conn = db.conn()?;
    let mut out = Placed::new();
    let unique: std::collections::BTreeSet<&String> = blake3s.iter().collect();
    let unique: Vec<&String> = unique.into_iter().collect();
    for chunk in unique.chunks(CHUNK) {
        let mut st = conn.prepare(&uploaded_with_content_sql(chunk.len(), inject))?;
        let mut rows = st.query(rusqlite::params_from_iter(chunk.iter()))?;
        while let Some(r) = rows.next()? {
            let digests = Digests {
                sha1: r.get(0)?,
                blake3: r.get(1)?,
            };
            out.entry(digests.blake3.clone())
                .or_default()
                .push((digests, r.get(2)?, r.get(3)?));
        }
    }
    Ok(out)
}

/// The lookup of `n` BLAKE3s among the uploaded rows. Through the BLAKE3 index by name:
/// left to itself SQLite takes `files_state` (`state = 'uploaded'`), which reads every uploaded
/// row for every batch, so a run's content checks grew with the square of its files.
fn uploaded_with_content_sql(n: usize, inject: bool) -> String {
    format!(
        "SELECT sha1, blake3, id, COALESCE(target_ref, source_ref) FROM {}
         INDEXED BY files_blake3 WHERE state = 'uploaded' AND blake3 IN ({}) ORDER BY id",
        if inject { "no_such_table" } else { "files" },
        vec!["?"; n].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{runs, scan_store, Db};

    /// The cost of looking a batch's BLAKE3s up must not grow with the number of uploaded rows.
    #[test]
    fn the_content_lookup_reads_only_the_rows_with_that_content() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let run = runs::begin(&db.conn().unwrap(), "run", &[]).unwrap();
        let names: Vec<String> = (0..5000).map(|i| format!("{i}.epub")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        scan_store::add_test_rows(&mut db.conn().unwrap(), run, &names);
        db.conn()
            .unwrap()
            .execute_batch(
                "UPDATE files SET state = 'uploaded', blake3 = printf('%064x', id), target_ref = id",
            )
            .unwrap();
        let conn = db.conn().unwrap();
        // A batch's lookup: 100 BLAKE3s, of which one was placed.
        let mut wanted: Vec<String> = (0..99).map(|i| format!("{:064x}", 100_000 + i)).collect();
        wanted.push(format!("{:064x}", 4321));
        let mut st = conn
            .prepare(&uploaded_with_content_sql(wanted.len(), false))
            .unwrap();
        let found: Vec<i64> = st
            .query_map(rusqlite::params_from_iter(&wanted), |r| r.get(2))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(found, [4321]);
        let steps = st.get_status(rusqlite::StatementStatus::VmStep);
        assert!(steps < 2000, "{steps} VM steps to look 100 up among 5000");
    }
}
