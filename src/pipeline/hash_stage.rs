//! The hash stage: one read of each file on a blocking thread gives SHA-1 and BLAKE3 together.
//! Small files are read into a buffer that travels on with the row (metadata is parsed from it
//! and the transfer sends it), so their bytes are read from disk once.

use super::{Ctx, Item};
use crate::failure::{Failure, FailureKind};
use crate::hash;
use crate::state::FileState;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

pub async fn stage(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Item>, out: mpsc::Sender<Item>) {
    let slots = Arc::new(Semaphore::new(ctx.cfg.checkers.max(1)));
    while let Some(mut item) = rx.recv().await {
        if ctx.cancelled() {
            continue;
        }
        if item.row.state != FileState::Checked {
            if out.send(item).await.is_err() {
                return;
            }
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if item.row.size <= ctx.cfg.buffer_limit {
            let kib = (item.row.size / 1024 + 1) as u32;
            match ctx.buffers.clone().acquire_many_owned(kib).await {
                Ok(p) => item._budget = Some(p),
                Err(_) => return,
            }
        }
        let ctx = ctx.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let path = item.row.path.clone();
            let limit = ctx.cfg.buffer_limit;
            let res = tokio::task::spawn_blocking(move || hash::hash_file(&path, limit))
                .await
                .unwrap_or_else(|e| {
                    Err(Failure::new(
                        FailureKind::Unreadable,
                        format!("internal: hashing task failed: {e}"),
                    ))
                });
            drop(slot);
            match res {
                Ok(h) => {
                    let mut t = item.to(FileState::Hashed);
                    t.sha1 = Some(h.digests.sha1.clone());
                    t.blake3 = Some(h.digests.blake3.clone());
                    t.hashed = true;
                    t.bytes_read = h.bytes_read;
                    ctx.writer.send(t);
                    ctx.progress.hashed.add(1);
                    ctx.progress.hashed_bytes.add(h.bytes_read);
                    ctx.progress.bytes_read.add(h.bytes_read);
                    item.row.state = FileState::Hashed;
                    item.row.sha1 = Some(h.digests.sha1);
                    item.row.blake3 = Some(h.digests.blake3);
                    if h.size != item.row.size {
                        item.warnings.push(format!(
                            "size changed since scan: {} → {} bytes",
                            item.row.size, h.size
                        ));
                        item.row.size = h.size;
                    }
                    item.data = h.data.map(Arc::new);
                    if item.data.is_none() {
                        item._budget = None;
                    }
                    let _ = out.send(item).await;
                }
                Err(f) => ctx.fail(&item, f, 0),
            }
        });
    }
}
