//! The content check, in batches: is this content (by BLAKE3, and by SHA-1 too where both rows
//! have one, see `hash::Digests::same_content`) already placed by this migration (another row,
//! of an earlier run by `state::placed_contents`, of this run by `contents` — the row becomes a
//! `skipped` duplicate of it), or already on
//! the target (a local one compares BLAKE3; an HTTP server is asked by SHA-1, as it knows it)?
//! Rows left in flight by a run that died (`metadata_cached`) are checked here too, so a
//! transfer whose reply was lost in a crash is not sent a second time.

use super::batch::next_batch;
use super::fault::{Cause, Fault, Stage};
use super::{tasks, Ctx, Item};
use crate::hash::Digests;
use crate::skip_reason::SkipReason;
use crate::state::placed_contents::{self, Placed};
use crate::state::FileState;
use crate::target::ContentQuery;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const BATCH: usize = 1000;
const WAIT: Duration = Duration::from_millis(50);

/// Before any claim, after the adoption of a dead run's placements: every row recorded
/// `uploaded` so far is in the index the look-up reads (`state::placed_contents`), as this
/// run's own book of contents knows only what this run places from here on.
pub async fn index_placed(ctx: &Ctx) {
    let db = ctx.db.clone();
    let merge = move || placed_contents::merge(&mut *db.conn()?);
    if let Some(Err(e)) = tasks::blocking(ctx, Stage::ContentCheck, merge).await {
        ctx.abort(Fault::new(Stage::ContentCheck, Cause::StateDb(e)));
    }
}

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
            // Placed by this run: the earlier runs' contents are all the state DB indexes.
            let landed_here = key
                .as_deref()
                .and_then(|k| ctx.contents.lock().ok()?.landed_by(k))
                .filter(|id| *id != item.row.id && !ctx.cfg.keep_duplicates);
            if let Some(first) = landed_here {
                ctx.skip(
                    &item,
                    SkipReason::Duplicate,
                    format!("same content as file #{first}, migrated in this run"),
                    Some(first),
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
            // Sent by a run that died before recording it: the target has it, so it is ours;
            // a later row of this content is its duplicate.
            if let (Some(key), Ok(mut contents)) = (item.content_key(), ctx.contents.lock()) {
                contents.land(&key, item.row.id);
            }
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
    let conn = db.conn()?;
    placed_contents::uploaded_with(&conn, blake3s, inject)
}
