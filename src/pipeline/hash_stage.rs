//! The hash stage: one read of each file on a blocking thread gives SHA-1 and BLAKE3 together.
//! Small files are read into a buffer that travels on with the row (metadata is parsed from it
//! and the transfer sends it), so their bytes are read from disk once.

use super::{Ctx, Item};
use crate::failure::{Failure, FailureKind};
use crate::hash::{self, Digests};
use crate::state::FileState;
use std::fs::File;
use std::io::Read;
use std::path::Path;
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
            let res = tokio::task::spawn_blocking(move || hash_file(&path, limit))
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

/// What one read of a file gave.
pub struct Hashed {
    pub digests: Digests,
    pub size: u64,
    pub bytes_read: u64,
    /// The bytes, when the file fits the buffer limit.
    pub data: Option<Vec<u8>>,
}

/// Read a file once: hash it, and keep its bytes if it is small.
pub fn hash_file(path: &Path, buffer_limit: u64) -> Result<Hashed, Failure> {
    let io_fail = |what: &str, e: std::io::Error| {
        Failure::new(
            FailureKind::of_source_io(&e),
            format!("{}: {what}: {e}", path.display()),
        )
    };
    let mut file = File::open(path).map_err(|e| io_fail("cannot open", e))?;
    let meta = file.metadata().map_err(|e| io_fail("cannot stat", e))?;
    if !meta.is_file() {
        return Err(Failure::new(
            FailureKind::Unreadable,
            format!("{}: not a regular file", path.display()),
        ));
    }
    let size = meta.len();
    if size == 0 {
        return Err(Failure::new(
            FailureKind::EmptyFile,
            format!("{}: the file is empty (0 bytes)", path.display()),
        ));
    }
    if size <= buffer_limit {
        let mut data = Vec::with_capacity(size as usize + 1);
        file.read_to_end(&mut data)
            .map_err(|e| io_fail("cannot read", e))?;
        if data.is_empty() {
            return Err(Failure::new(
                FailureKind::EmptyFile,
                format!("{}: the file is empty (0 bytes)", path.display()),
            ));
        }
        let n = data.len() as u64;
        return Ok(Hashed {
            digests: hash::hash_bytes(&data),
            size: n,
            bytes_read: n,
            data: Some(data),
        });
    }
    let (digests, n) = hash::hash_reader(file).map_err(|e| io_fail("cannot read", e))?;
    Ok(Hashed {
        digests,
        size: n,
        bytes_read: n,
        data: None,
    })
}
