//! The metadata stage: what the source already knows (calibre) is kept as it is; otherwise the
//! file's own metadata is extracted in-process and cached in the row (`metadata_cached`). A
//! small file's bytes were parsed by the hash stage in the same blocking task that read them;
//! a large file is parsed here, from the file.

use super::fault::Stage;
use super::tasks::{self, Tasks};
use super::{Ctx, Item};
use crate::metadata::{self, Origin};
use crate::state::rows::FileRow;
use crate::state::writer::Recorded;
use crate::state::FileState;
use crate::target::Target;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

pub async fn stage(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Item>, out: mpsc::Sender<Item>) {
    let slots = Arc::new(Semaphore::new(ctx.cfg.tuning.checkers.max(1)));
    let mut parses = Tasks::new(Stage::Metadata);
    while let Some(item) = rx.recv().await {
        parses.reap(&ctx);
        if ctx.cancelled() {
            continue;
        }
        if item.row.state != FileState::Hashed {
            if out.send(item).await.is_err() {
                return;
            }
            continue;
        }
        if !needs_parsing(&item) {
            // Known already (calibre, or parsed by the hash stage): recorded right here.
            let (item, read) = with_metadata(item);
            if out.send(cached(&ctx, item, read).await).await.is_err() {
                return;
            }
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let ctx = ctx.clone();
        let out = out.clone();
        parses.spawn(async move {
            let parse = move || with_metadata(item);
            let Some((item, read)) = tasks::blocking(&ctx, Stage::Metadata, parse).await else {
                return;
            };
            let item = cached(&ctx, item, read).await;
            let _ = out.send(item).await;
            // Held until the transfer took the row (see the hash stage's slots).
            drop(slot);
        });
    }
    parses.join_all(&ctx).await;
}

/// Whether the file's own metadata must be extracted for this row (not when the source's
/// database gave it).
pub fn needs_extraction(row: &FileRow) -> bool {
    !(row.metadata.is_some() && row.metadata_origin == Some(Origin::Calibre))
}

/// Whether filling the item's metadata still needs a parse (blocking work).
fn needs_parsing(item: &Item) -> bool {
    needs_extraction(&item.row) && item.extracted.is_none()
}

/// Record the move to `metadata_cached` with what the item now knows.
async fn cached(ctx: &Ctx, mut item: Item, read: u64) -> Item {
    let mut t = item.to(FileState::MetadataCached);
    t.bytes_read = read;
    ctx.progress.bytes_read.add(read);
    if let (Some(md), Some(origin)) = (&item.row.metadata, item.row.metadata_origin) {
        t.metadata = Some((md.clone(), origin));
    }
    if !item.warnings.is_empty() {
        t.warnings = Some(item.warnings.join("\n"));
    }
    if let Some(planned) = planned_with_metadata(ctx, &item) {
        let recorded = Arc::new(Recorded::default());
        t.planned_ref = Some(planned);
        t.recorded = Some(recorded.clone());
        item.claim = Some(recorded);
    }
    ctx.writer.send(t).await;
    ctx.progress.metadata.add(1);
    item.row.state = FileState::MetadataCached;
    item
}

/// A folder target's destination for a row placed for the first time, claimed with its move to
/// `metadata_cached` (`files.planned_ref`, see `state::placement`): the name comes from the
/// metadata recorded in the same move, and the transfer places the file only once that commit
/// is in, so it needs no claim of its own. `None` where the transfer claims it itself (a row
/// placed before, whose destination depends on whether its old file is still there; an HTTP
/// target's upload: claimed with this move, the uploads waited for its commit and measured no
/// faster, 0.70× of a server's capacity against 0.73×).
fn planned_with_metadata(ctx: &Ctx, item: &Item) -> Option<String> {
    let Target::Folder(folder, _) = &*ctx.target else {
        return None;
    };
    if ctx.cfg.dry_run || item.row.target_ref.is_some() {
        return None;
    }
    Some(folder.destination_of(&super::transfer::payload_of(item)?))
}

/// Fill the item's metadata (unless the source provided it): what the hash stage parsed, else
/// parsed here from the kept bytes or the file. Also returns the bytes read from disk for it
/// (none when parsed from the hash stage's buffer). Blocking when it parses.
fn with_metadata(mut item: Item) -> (Item, u64) {
    if !needs_extraction(&item.row) {
        return (item, 0);
    }
    // Parsed from disk only when neither the hash task nor the kept bytes had it.
    let from_disk = item.extracted.is_none() && item.data.is_none();
    if !item.row.name_is_utf8() {
        item.warnings.push(format!(
            "file name is not valid UTF-8; targets see it as {:?}",
            item.row.file_name()
        ));
    }
    let extracted = match (item.extracted.take(), &item.data) {
        (Some(done), _) => done,
        (None, Some(data)) => metadata::extract(&item.row.format, data, &item.row.source_ref),
        (None, None) => metadata::extract_from_file(
            &item.row.format,
            &item.row.path,
            item.row.size,
            &item.row.source_ref,
        ),
    };
    for w in &extracted.warnings {
        tracing::debug!("{}: {w}", item.row.path.display());
    }
    item.warnings.extend(extracted.warnings);
    item.row.metadata = Some(extracted.metadata);
    item.row.metadata_origin = Some(extracted.origin);
    let read = if from_disk { extracted.bytes_read } else { 0 };
    (item, read)
}
