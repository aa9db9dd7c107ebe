//! The hash stage: one read of each file on a blocking thread gives the digests the run needs
//! (`PipelineConfig::digests`): BLAKE3 always, SHA-1 only for a target that knows content by it
//! (HTTP) or when `--hash sha1` asks; rows hashed earlier without one of them are sent back to
//! be hashed again before the run claims any (`requeue_lacking`). Small files are read into a buffer that travels on with the row (the transfer sends it), so
//! their bytes are read from disk once; their metadata is parsed from that buffer in the same
//! task, and recorded later by the metadata stage. For a local target in copy mode the same task
//! also writes them into the target, as a file without a name where it can (`target::staged`),
//! so the transfer only links the file into place and the buffer is free at once. Files queued
//! together are hashed as a group in one blocking task: a hand-off to a blocking thread (a
//! wake-up, a context switch) per file was a measurable share of a local copy's CPU.

use super::fault::{Cause, Fault, Stage};
use super::tasks::{self, Tasks};
use super::{metadata_stage, Ctx, Item};
use crate::failure::Failure;
use crate::hash::{self, DigestSet, Hashed};
use crate::metadata::{self, Extracted};
use crate::state::FileState;
use crate::target::staged::{Staged, Staging};
use crate::target::Target;
use crate::tuning;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

pub async fn stage(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Item>, out: mpsc::Sender<Item>) {
    let t = ctx.cfg.tuning;
    let slots = Arc::new(Semaphore::new(t.checkers.max(1)));
    let mut groups = Tasks::new(Stage::Hash);
    while let Some(first) = rx.recv().await {
        groups.reap(&ctx);
        // The group: this item, and what else is already queued (no waiting for more).
        let mut group = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if ctx.cancelled() {
                // Nothing new starts; the rows stay where they are.
            } else if item.row.state != FileState::Checked {
                if out.send(item).await.is_err() {
                    return;
                }
            } else {
                bytes += item.row.size;
                group.push(item);
            }
            if group.len() < t.hash_group_files && bytes < t.hash_group_bytes {
                next = rx.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        for item in &mut group {
            if item.row.size <= t.buffer_limit {
                let kib = tuning::buffer_kib(item.row.size) as u32;
                match ctx.buffers.clone().acquire_many_owned(kib).await {
                    Ok(p) => item._budget = Some(p),
                    Err(_) => return,
                }
            }
        }
        let ctx = ctx.clone();
        let out = out.clone();
        groups.spawn(async move {
            let jobs: Vec<Job> = group.iter().map(|item| Job::of(&ctx, item)).collect();
            let hash_all = move || jobs.into_iter().map(Job::run).collect::<Vec<_>>();
            // A panic is bookferry's fault, not the files': the run stops, the rows stay.
            let Some(results) = tasks::blocking(&ctx, Stage::Hash, hash_all).await else {
                return;
            };
            for (item, res) in group.into_iter().zip(results) {
                match res {
                    Ok(read) => {
                        let item = hashed(&ctx, item, read).await;
                        if out.send(item).await.is_err() {
                            return;
                        }
                    }
                    Err(f) => ctx.fail(&item, f, 0).await,
                }
            }
            // Held until the next stage took the group's rows: a slot freed when the hashing
            // ended let the stage hash on while the rows it had hashed waited in their tasks,
            // as many as the stages after it were slower (a resumed 300,000-file run: ~10,000
            // rows, 370 MiB).
            drop(slot);
        });
    }
    groups.join_all(&ctx).await;
}

/// Rows on their way (`hashed`, `metadata_cached`) that lack a digest this run needs — hashed
/// for another target before the state DB was re-pointed, by a run without `--hash sha1`, or by
/// a bookferry that kept no BLAKE3 — go back to `pending`, to be checked and hashed again (and
/// counted) by this run: none goes on without it. Before any claim; a state DB error stops the
/// run.
pub async fn requeue_lacking(ctx: &Ctx) {
    let db = ctx.db.clone();
    let run = ctx.writer.run();
    let needs = ctx.cfg.digests;
    let requeue = move || -> crate::state::Result<usize> {
        crate::state::digests::requeue_lacking(&mut *db.conn()?, run, needs)
    };
    match tasks::blocking(ctx, Stage::Hash, requeue).await {
        Some(Ok(0)) | None => {}
        Some(Ok(n)) => tracing::info!(
            "{n} file(s) were hashed without a digest this run needs ({}): they are hashed again",
            needs.describe()
        ),
        Some(Err(e)) => ctx.abort(Fault::new(Stage::Hash, Cause::StateDb(e))),
    }
}

/// What the blocking task needs of one item.
struct Job {
    row_id: i64,
    path: PathBuf,
    buffer_limit: u64,
    digests: DigestSet,
    /// Format and relative path, when the file's own metadata is to be parsed.
    parse: Option<(String, String)>,
    /// The target, asked where to stage the file's bytes once hashed (see `target::staged`)
    /// on the blocking thread: a folder target answers from what it held at the open, which
    /// it may have to read first.
    target: Arc<Target>,
    size: u64,
}

impl Job {
    fn of(ctx: &Ctx, item: &Item) -> Job {
        Job {
            row_id: item.row.id,
            path: item.row.path.clone(),
            buffer_limit: ctx.cfg.tuning.buffer_limit,
            digests: ctx.cfg.digests,
            parse: metadata_stage::needs_extraction(&item.row)
                .then(|| (item.row.format.clone(), item.row.source_ref.clone())),
            target: ctx.target.clone(),
            size: item.row.size,
        }
    }

    /// Read and hash the file; parse its metadata while its bytes are in memory, and stage
    /// them in the target if it takes them. Blocking.
    fn run(self) -> Result<Read, Failure> {
        super::fault::panic_if_injected("hash", &self.path.to_string_lossy());
        let stage_in = self.target.staging(self.size).cloned();
        // Opened and stat'ed once: its size now decides how it is read.
        let mut opened = hash::open_to_hash(&self.path)?;
        if let Some(staging) = &stage_in {
            if let Some(read) = self.read_large_into(staging, &mut opened)? {
                return Ok(read);
            }
        }
        let mut hashed = hash::hash_opened(&self.path, opened, self.buffer_limit, self.digests)?;
        let extracted = match (&hashed.data, self.parse) {
            (Some(data), Some((format, rel))) => Some(metadata::extract(&format, data, &rel)),
            _ => None,
        };
        let mut staged = None;
        if let (Some(staging), Some(data)) = (&stage_in, &hashed.data) {
            match Staged::write(staging, self.row_id, data) {
                Ok(s) => {
                    staged = Some(Arc::new(s));
                    hashed.data = None;
                }
                // The transfer writes the kept bytes instead, and reports what goes wrong.
                Err(e) => tracing::debug!("{}: not staged: {e}", self.path.display()),
            }
        }
        Ok(Read {
            hashed,
            extracted,
            staged,
        })
    }
}

impl Job {
    /// A file over the buffer limit, read once: hashed and written into its staged copy chunk
    /// by chunk (else the transfer would read it a second time to copy it). `None` when the
    /// file fits the buffer (read whole, as above) or no staged file could be made; a staged
    /// copy that could not be written whole is dropped, and the transfer copies the file.
    fn read_large_into(
        &self,
        staging: &Staging,
        opened: &mut hash::ToHash,
    ) -> Result<Option<Read>, Failure> {
        if opened.size() <= self.buffer_limit {
            return Ok(None);
        }
        let mut read = None;
        // `fill` runs only once a staged file is made; else `opened` is still unread.
        let staged = Staged::write_with(staging, self.row_id, |out| {
            let (r, written) = match hash::hash_opened_into(&self.path, opened, self.digests, out) {
                Ok((h, w)) => (Ok(h), w),
                Err(e) => (
                    Err(e),
                    Err(std::io::Error::other("the source could not be read")),
                ),
            };
            read = Some(r);
            written
        });
        let Some(hashed) = read else {
            // No staged file was made: hashed as any file, copied by the transfer.
            tracing::debug!("{}: not staged: {:?}", self.path.display(), staged.err());
            return Ok(None);
        };
        let hashed = hashed?;
        let staged = match staged {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::debug!("{}: not staged: {e}", self.path.display());
                None
            }
        };
        Ok(Some(Read {
            hashed,
            extracted: None,
            staged,
        }))
    }
}

/// What the blocking task gives back for one item.
struct Read {
    hashed: Hashed,
    extracted: Option<Extracted>,
    staged: Option<Arc<Staged>>,
}

/// Record the move to `hashed` and carry what the read gave on with the item.
async fn hashed(ctx: &Ctx, mut item: Item, read: Read) -> Item {
    let Read {
        hashed: h,
        extracted,
        staged,
    } = read;
    let mut t = item.to(FileState::Hashed);
    // A SHA-1 not computed is not written: the column keeps what it held (NULL, or the SHA-1 of
    // the same bytes from an earlier hash: a changed file's digests were cleared by the scan).
    t.sha1 = h.digests.sha1.clone();
    t.blake3 = Some(h.digests.blake3.clone());
    t.hashed = true;
    t.bytes_read = h.bytes_read;
    ctx.writer.send(t).await;
    ctx.progress.hashed.add(1);
    ctx.progress.hashed_bytes.add(h.bytes_read);
    ctx.progress.bytes_read.add(h.bytes_read);
    item.row.state = FileState::Hashed;
    item.row.sha1 = h.digests.sha1;
    item.row.blake3 = Some(h.digests.blake3);
    if h.size != item.row.size {
        item.warnings.push(format!(
            "size changed since scan: {} → {} bytes",
            item.row.size, h.size
        ));
        item.row.size = h.size;
    }
    item.data = h.data.map(Arc::new);
    item.staged = staged;
    if item.data.is_none() {
        item._budget = None;
    }
    item.extracted = extracted;
    item
}
