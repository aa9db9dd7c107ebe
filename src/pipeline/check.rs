//! The cheap check: before any file is read, ask the target in one call per batch whether it
//! already holds a file of the same name and size. Those rows are `skipped` without hashing;
//! the rest become `checked`. With `--checksum` every row goes on to be hashed.

use super::batch::next_batch;
use super::{Ctx, Item};
use crate::skip_reason::SkipReason;
use crate::state::FileState;
use crate::target::NameQuery;
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
        let (pending, rest): (Vec<Item>, Vec<Item>) = batch
            .into_iter()
            .partition(|i| i.row.state == FileState::Pending);
        let mut forward = rest;
        if !pending.is_empty() {
            match check_batch(&ctx, pending).await {
                Some(checked) => forward.extend(checked),
                None => continue,
            }
        }
        for item in forward {
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// Check one batch of `pending` rows; returns the ones to hash (now `checked`).
async fn check_batch(ctx: &Ctx, pending: Vec<Item>) -> Option<Vec<Item>> {
    let exists = if ctx.cfg.checksum {
        Default::default()
    } else {
        for item in &pending {
            super::fault::panic_if_injected("name-check", &item.row.source_ref);
        }
        let queries = pending
            .iter()
            .map(|i| NameQuery {
                key: i.row.id,
                file_name: i.row.file_name(),
                size: i.row.size,
            })
            .collect();
        match ctx.target.check_names(queries).await {
            Ok(exists) => exists,
            Err(f) => {
                for item in &pending {
                    ctx.fail(item, f.clone(), 0).await;
                }
                return None;
            }
        }
    };
    let mut checked = Vec::with_capacity(pending.len());
    for mut item in pending {
        if exists.contains(&item.row.id) {
            ctx.skip(
                &item,
                SkipReason::TargetHasNameSize,
                format!(
                    "target already has a file named {:?} of {} bytes",
                    item.row.file_name(),
                    item.row.size
                ),
                None,
            )
            .await;
            ctx.progress.check_skipped.add(1);
            continue;
        }
        let mut t = item.to(FileState::Checked);
        if ctx.cfg.checksum {
            t.detail = Some("--checksum: hashed without a name+size check".into());
        }
        ctx.writer.send(t).await;
        item.row.state = FileState::Checked;
        ctx.progress.checked.add(1);
        checked.push(item);
    }
    Some(checked)
}
