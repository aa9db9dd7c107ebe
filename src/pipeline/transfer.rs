//! The transfer stage: sends rows to the target with a bounded number in flight, and never two
//! rows with the same SHA-1 side by side — a second row with a SHA-1 already in flight waits,
//! and becomes a `skipped` duplicate once the first lands with the same content (both digests
//! equal), or goes next if the first failed or holds other bytes under the same SHA-1.

use super::{Ctx, Item};
use crate::failure::{Failure, FailureKind};
use crate::hash::Digests;
use crate::state::FileState;
use crate::target::{Payload, Transferred};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Transfers handed to the target at once (each waits there for a slot under its limit).
const MAX_QUEUED: usize = 128;

/// A finished transfer, reported back to the dispatcher.
struct Done {
    key: Option<Digests>,
    id: Option<i64>,
}

pub async fn stage(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Item>) {
    // Transfers waiting for (or holding) a target slot; the target's limiter decides how many
    // are really in flight.
    let queued = Arc::new(Semaphore::new(MAX_QUEUED));
    let limiter = ctx.target.limiter();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    // SHA-1 in flight → rows with that SHA-1 waiting for it (targets know content by SHA-1, so
    // two rows with one SHA-1 are never sent side by side).
    let mut in_flight: HashMap<String, VecDeque<Item>> = HashMap::new();
    // Content (both digests) → the row that landed it in this run.
    let mut landed: HashMap<Digests, i64> = HashMap::new();
    let mut running = 0usize;
    let mut input_open = true;
    let spawn = |item: Item, running: &mut usize| {
        *running += 1;
        let ctx = ctx.clone();
        let limiter = limiter.clone();
        let queued = queued.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let key = item.content_key();
            let permit = queued.acquire_owned().await;
            let id = if ctx.cancelled() || permit.is_err() {
                None
            } else {
                transfer_one(&ctx, item).await
            };
            ctx.progress.limit.set(limiter.current() as u64);
            ctx.progress.in_flight.set(limiter.in_flight() as u64);
            let _ = done_tx.send(Done { key, id });
        });
    };
    loop {
        if !input_open && running == 0 {
            break;
        }
        tokio::select! {
            next = rx.recv(), if input_open => {
                let Some(item) = next else {
                    input_open = false;
                    continue;
                };
                if ctx.cancelled() || item.row.state != FileState::MetadataCached {
                    continue;
                }
                let key = match item.content_key() {
                    Some(k) if !ctx.cfg.keep_duplicates => k,
                    _ => {
                        spawn(item, &mut running);
                        continue;
                    }
                };
                if let Some(first) = landed.get(&key) {
                    skip_duplicate(&ctx, &item, *first);
                } else if let Some(waiting) = in_flight.get_mut(&key.sha1) {
                    waiting.push_back(item);
                } else {
                    in_flight.insert(key.sha1, VecDeque::new());
                    spawn(item, &mut running);
                }
            }
            Some(done) = done_rx.recv(), if running > 0 => {
                running -= 1;
                let Some(key) = done.key.filter(|_| !ctx.cfg.keep_duplicates) else {
                    continue;
                };
                if let Some(id) = done.id {
                    landed.insert(key.clone(), id);
                }
                // The rows that waited: duplicates of what landed are skipped; the first other
                // one (the first failed, or a different content under the same SHA-1) goes next.
                let mut waiting = in_flight.remove(&key.sha1).unwrap_or_default();
                while let Some(item) = waiting.pop_front() {
                    let first = item.content_key().and_then(|k| landed.get(&k).copied());
                    match first {
                        Some(first) => skip_duplicate(&ctx, &item, first),
                        None => {
                            spawn(item, &mut running);
                            in_flight.insert(key.sha1.clone(), waiting);
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn skip_duplicate(ctx: &Ctx, item: &Item, first: i64) {
    ctx.skip(
        item,
        "duplicate",
        format!("same content as file #{first}, migrated in this run"),
        Some(first),
    );
}

/// Send one row; returns its id when it landed.
async fn transfer_one(ctx: &Ctx, item: Item) -> Option<i64> {
    let Some(payload) = payload_of(&item) else {
        ctx.fail(
            &item,
            Failure::new(
                FailureKind::Unreadable,
                format!("{}: no hash recorded", item.row.path.display()),
            ),
            0,
        );
        return None;
    };
    if ctx.cfg.dry_run {
        tracing::info!(
            "would send {} → {}",
            item.row.source_ref,
            ctx.target.describe(&payload)
        );
        ctx.progress.would_send.add(1);
        ctx.progress.would_send_bytes.add(item.row.size);
        return Some(item.row.id);
    }
    let res = ctx.target.transfer(payload).await;
    match res {
        Ok(Transferred::AlreadyThere { reason, detail }) => {
            ctx.skip(&item, reason, detail, None);
            None
        }
        Ok(Transferred::Placed(placed)) => {
            let mut t = item.to(FileState::Uploaded);
            t.attempts = 1;
            t.needs_flush = true;
            t.bytes_sent = placed.bytes_sent;
            t.bytes_read = placed.bytes_read;
            t.target_ref = Some(placed.target_ref.clone());
            t.detail = placed
                .detail
                .clone()
                .or_else(|| Some(format!("→ {}", placed.target_ref)));
            if let Some(Digests { sha1, blake3 }) = placed.new_digests {
                t.sha1 = Some(sha1);
                t.blake3 = Some(blake3);
            }
            ctx.writer.send(t);
            ctx.progress.uploaded.add(1);
            ctx.progress.uploaded_bytes.add(item.row.size);
            ctx.progress.bytes_read.add(placed.bytes_read);
            Some(item.row.id)
        }
        Err(f) => {
            ctx.fail(&item, f, 1);
            None
        }
    }
}

fn payload_of(item: &Item) -> Option<Payload> {
    Some(Payload {
        row_id: item.row.id,
        source_path: item.row.path.clone(),
        source_rel: item.row.source_ref.clone(),
        file_name: item.row.file_name(),
        size: item.row.size,
        format: item.row.format.clone(),
        digests: item.content_key()?,
        metadata: item.row.metadata.clone(),
        origin: item.row.metadata_origin,
        data: item.data.clone(),
        previous_ref: item.row.target_ref.clone(),
        staged: item.staged.clone(),
    })
}
