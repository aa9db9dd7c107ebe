//! The transfer stage: sends rows to the target with a bounded number in flight, and never two
//! rows with the same content key side by side (the SHA-1 for a target that knows content by
//! it, HTTP; else the BLAKE3) — a second row with a key already in flight waits, and becomes a
//! `skipped` duplicate once the first lands with the same content (the same BLAKE3), or goes
//! next if the first failed or holds other bytes under the same SHA-1. A local
//! target gets the rows ready at once in groups (up to 8, one blocking task and one slot each);
//! an HTTP target one upload per task.

use super::fault::Stage;
use super::tasks::Tasks;
use super::{Ctx, Item};
use crate::failure::{Failure, FailureKind};
use crate::hash::DigestSet;
use crate::skip_reason::SkipReason;
use crate::state::writer::RecordedState;
use crate::state::{placement, FileState};
use crate::target::{Payload, Target, Transferred};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Transfers handed to the target at once (each waits there for a slot under its limit).
const MAX_QUEUED: usize = 128;
/// Transfers resting after a refusal (`Limiter::rest`) are replaced by others, up to this many
/// of them: a server that refuses at random keeps rate × share refused × `Retry-After` resting
/// (1,000 files/s, 10%, 1 s: 100), and with `MAX_QUEUED` counting them too, uploads to such a
/// server reached 0.74× of its capacity. Their bytes are within the buffer budget.
const MAX_RESTING: usize = 512;
/// The most files a local target places in one blocking task.
const GROUP_FILES: usize = 8;
/// Rows taken in whose placement claim (recorded with their move to `metadata_cached`, see the
/// metadata stage) is not committed yet: twice what the target took in the last commit
/// interval, within these bounds (their bytes are bounded by the buffer budget, not by this).
const MAX_UNSETTLED: usize = 2048;

/// A finished transfer, reported back to the dispatcher.
struct Done {
    key: Option<Keys>,
    id: Option<i64>,
}

/// A row's content, as the dispatcher tells rows apart.
#[derive(Debug, Clone)]
struct Keys {
    /// What the target knows content by: the SHA-1 for an HTTP server (two rows with one SHA-1
    /// are never sent side by side), else the BLAKE3.
    flight: String,
    /// The content itself: its BLAKE3.
    content: String,
}

impl Keys {
    fn of(ctx: &Ctx, item: &Item) -> Option<Keys> {
        let content = item.content_key()?;
        let flight = match ctx.target.digests_needed() {
            DigestSet::Blake3AndSha1 => item.row.sha1.clone()?,
            DigestSet::Blake3 => content.clone(),
        };
        Some(Keys { flight, content })
    }
}

/// The dispatcher's books: which contents are in flight or landed, and what is ready to go.
#[derive(Default)]
struct Dispatch {
    /// Flight key (see [`Keys`]) → rows with that key waiting for the one in flight.
    in_flight: HashMap<String, VecDeque<Item>>,
    /// Rows cleared to go, not yet handed to a task.
    ready: Vec<Item>,
    /// Rows in `in_flight`'s queues.
    waiting: usize,
    /// Rows whose placement claim is not committed yet, in the order they came.
    unsettled: VecDeque<Item>,
    /// Rows handed to the target since the writer's last commit, and between the two before.
    launched: usize,
    per_commit: usize,
}

impl Dispatch {
    /// Whether the stage takes another row in: fewer than a group ready, and fewer than
    /// `MAX_QUEUED` waiting behind a key in flight.
    fn has_room(&self, group_size: usize) -> bool {
        self.ready.len() < group_size && self.waiting < MAX_QUEUED
    }

    /// Whether rows may still be taken in while others wait for their claims' commit: not when
    /// the first of them is settled and still waits (for room: the target is the slowest, and
    /// the stages before it are held back, see `launch`).
    fn takes_unsettled(&self) -> bool {
        // What the target took during the last commit interval, twice over: a slow target
        // holds back the stages before it, a fast one is not starved while the writer commits.
        let most = (2 * self.per_commit).clamp(MAX_QUEUED, MAX_UNSETTLED);
        self.unsettled.len() < most
            && self
                .unsettled
                .front()
                .is_none_or(|i| i.claim.as_ref().map(|c| c.state()) == Some(RecordedState::NotYet))
    }

    /// A row from the metadata stage: admitted at once, or once its claim is recorded.
    async fn take(&mut self, ctx: &Ctx, item: Item) {
        let claimed = item.claim.as_ref().map(|c| c.state());
        if claimed == Some(RecordedState::NotYet) || !self.unsettled.is_empty() {
            self.unsettled.push_back(item);
        } else {
            self.admit(ctx, item).await;
        }
    }

    /// The rows whose claims are now committed go on (in order, while there is room); a row
    /// whose move was dropped (not this run's any more, or the writer stopped) is not placed.
    async fn settle(&mut self, ctx: &Ctx, group_size: usize) {
        if ctx.cancelled() {
            self.unsettled.clear();
        }
        while self.has_room(group_size) {
            let Some(front) = self.unsettled.front() else {
                break;
            };
            match front.claim.as_ref().map(|c| c.state()) {
                Some(RecordedState::NotYet) => break,
                Some(RecordedState::Dropped) => {
                    self.unsettled.pop_front();
                }
                _ => {
                    if let Some(item) = self.unsettled.pop_front() {
                        self.admit(ctx, item).await;
                    }
                }
            }
        }
    }

    /// A row from the metadata stage: ready, waiting behind its SHA-1, or a duplicate.
    async fn admit(&mut self, ctx: &Ctx, item: Item) {
        if ctx.cancelled() || item.row.state != FileState::MetadataCached {
            return;
        }
        let key = match Keys::of(ctx, &item) {
            Some(k) if !ctx.cfg.keep_duplicates => k,
            _ => {
                self.ready.push(item);
                return;
            }
        };
        if let Some(first) = landed_by(ctx, &key.content) {
            skip_duplicate(ctx, &item, first).await;
        } else if let Some(waiting) = self.in_flight.get_mut(&key.flight) {
            waiting.push_back(item);
            self.waiting += 1;
        } else {
            self.in_flight.insert(key.flight, VecDeque::new());
            self.ready.push(item);
        }
    }

    /// A transfer ended: the rows that waited for its key are skipped as duplicates of what
    /// landed, and the first other one (the first failed, or a different content under the
    /// same SHA-1) is ready next.
    async fn finished(&mut self, ctx: &Ctx, done: Done) {
        let Some(key) = done.key.filter(|_| !ctx.cfg.keep_duplicates) else {
            return;
        };
        if let Some(id) = done.id {
            if let Ok(mut contents) = ctx.contents.lock() {
                contents.land(&key.content, id);
            }
        }
        let mut waiting = self.in_flight.remove(&key.flight).unwrap_or_default();
        while let Some(item) = waiting.pop_front() {
            self.waiting -= 1;
            let first = item.content_key().and_then(|k| landed_by(ctx, &k));
            match first {
                Some(first) => skip_duplicate(ctx, &item, first).await,
                None => {
                    self.ready.push(item);
                    self.in_flight.insert(key.flight.clone(), waiting);
                    break;
                }
            }
        }
    }
}

pub async fn stage(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Item>) {
    // Transfers waiting for (or holding) a target slot; the target's limiter decides how many
    // are really in flight.
    // A permit per row in a task; all of them only while `MAX_RESTING` transfers rest.
    let places = Arc::new(Semaphore::new(MAX_QUEUED + MAX_RESTING));
    let limiter = ctx.target.limiter();
    // Every transfer task is joined: one that panicked stops the run (it cannot leave the
    // stage waiting for its rows).
    let mut running = Tasks::<Vec<Done>>::new(Stage::Transfer);
    // A local target takes the rows ready at once in groups (one blocking task each); an HTTP
    // target one upload per task.
    let group_size = if ctx.target.is_local() && !ctx.cfg.dry_run {
        GROUP_FILES
    } else {
        1
    };
    let mut d = Dispatch::default();
    let mut input_open = true;
    // Each commit of the writer may have recorded claims that rows in `d.unsettled` wait for.
    let mut commits = ctx.writer.commits();
    let mut commits_seen = *commits.borrow();
    // A group is handed to a task only with room counted (here, not in the task): the rows
    // the stage holds are then at most `MAX_QUEUED` in tasks (and those resting after a
    // refusal, at most `MAX_RESTING` more), one group ready and the rows
    // waiting behind a key in flight, and the bounded queue into the stage holds back the
    // stages before it when the target is the slowest (else a resumed run, its early stages
    // with little left to do, piled up its rows here: 175,000 of them, 1.8 GB, at 1M files).
    let launch = |d: &mut Dispatch, running: &mut Tasks<Vec<Done>>| {
        while !d.ready.is_empty() {
            let in_tasks = MAX_QUEUED + MAX_RESTING - places.available_permits();
            let room = (MAX_QUEUED + limiter.resting().min(MAX_RESTING)).saturating_sub(in_tasks);
            let n = d.ready.len().min(group_size).min(room);
            let Some(permits) = (n > 0)
                .then(|| places.clone().try_acquire_many_owned(n as u32).ok())
                .flatten()
            else {
                break;
            };
            d.launched += n;
            let rest = d.ready.split_off(n);
            let group = std::mem::replace(&mut d.ready, rest);
            let ctx = ctx.clone();
            let limiter = limiter.clone();
            running.spawn(async move {
                let _slots = permits;
                let keys: Vec<_> = group.iter().map(|i| Keys::of(&ctx, i)).collect();
                let ids = if ctx.cancelled() {
                    vec![None; group.len()]
                } else {
                    transfer_group(&ctx, group).await
                };
                ctx.progress.limit.set(limiter.current() as u64);
                ctx.progress.in_flight.set(limiter.in_flight() as u64);
                keys.into_iter()
                    .zip(ids)
                    .map(|(key, id)| Done { key, id })
                    .collect()
            });
        }
    };
    loop {
        let commits_now = *commits.borrow();
        if commits_now != commits_seen {
            commits_seen = commits_now;
            d.per_commit = std::mem::take(&mut d.launched);
        }
        d.settle(&ctx, group_size).await;
        launch(&mut d, &mut running);
        if !input_open && running.is_empty() && d.ready.is_empty() && d.unsettled.is_empty() {
            break;
        }
        let room = |d: &Dispatch| d.has_room(group_size) && d.takes_unsettled();
        tokio::select! {
            // No more rows taken in while a group is ready without slots, or while many wait
            // behind their keys or their claims: the running tasks and the writer's commits
            // free them (see `launch`, `settle`).
            next = rx.recv(), if input_open && room(&d) => {
                match next {
                    Some(item) => {
                        d.take(&ctx, item).await;
                        // And whatever else is queued already (no waiting for more).
                        while room(&d) {
                            match rx.try_recv() {
                                Ok(item) => d.take(&ctx, item).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => input_open = false,
                }
            }
            changed = commits.changed(), if !d.unsettled.is_empty() => {
                if changed.is_err() {
                    // The writer is gone: nothing waiting will be recorded now.
                    d.unsettled.clear();
                }
            }
            // A transfer began to rest: others may take its place.
            _ = limiter.rested(), if !d.ready.is_empty() => {}
            Some(ended) = running.next(&ctx), if !running.is_empty() => {
                // A task that did not return stopped the run: its rows stay where they were.
                for done in ended.unwrap_or_default() {
                    d.finished(&ctx, done).await;
                }
            }
        }
    }
}

/// The row of this run that landed this content (BLAKE3), if one did.
fn landed_by(ctx: &Ctx, content: &str) -> Option<i64> {
    ctx.contents.lock().ok()?.landed_by(content)
}

async fn skip_duplicate(ctx: &Ctx, item: &Item, first: i64) {
    ctx.skip(
        item,
        SkipReason::Duplicate,
        format!("same content as file #{first}, migrated in this run"),
        Some(first),
    )
    .await;
}

/// Send a group of rows (one row, for HTTP; see `Target::transfer_group`); returns each row's
/// id when it landed, in order.
async fn transfer_group(ctx: &Ctx, group: Vec<Item>) -> Vec<Option<i64>> {
    for item in &group {
        super::fault::panic_if_injected("transfer", &item.row.source_ref);
    }
    let mut ids = vec![None; group.len()];
    let mut payloads = Vec::new();
    let mut sent = Vec::new();
    for (i, item) in group.iter().enumerate() {
        match prepare(ctx, item).await {
            Prepared::Finished(id) => ids[i] = id,
            Prepared::Send(p) => {
                payloads.push(*p);
                sent.push(i);
            }
        }
    }
    if !payloads.is_empty() {
        // Where each is about to go, committed first (`state::placement`): a file placed by a
        // run killed before recording it is then adopted by the next run, never taken for one
        // the target already had. Rows claimed with their metadata have that committed.
        let claimed: Vec<i64> = group
            .iter()
            .filter(|i| i.claim.as_ref().map(|c| c.state()) == Some(RecordedState::Recorded))
            .map(|i| i.row.id)
            .collect();
        let planned = planned_refs(ctx, &payloads)
            .into_iter()
            .filter(|(id, _)| !claimed.contains(id))
            .collect();
        if let Err(e) = ctx.writer.plan(planned).await {
            ctx.stop_run(Failure::new(
                FailureKind::StateDb,
                format!("the state DB could not be written before placing files: {e}"),
            ));
            return ids;
        }
        let results = ctx.target.transfer_group(payloads).await;
        for (i, res) in sent.into_iter().zip(results) {
            ids[i] = record(ctx, &group[i], res).await;
        }
    }
    ids
}

/// Where a folder target will place each payload (before any ` (N)` suffix), or which content
/// an HTTP target is sent; a calibre target claims nothing here (it marks its books in
/// progress itself, see `target::calibre`).
fn planned_refs(ctx: &Ctx, payloads: &[Payload]) -> Vec<(i64, String)> {
    match &*ctx.target {
        Target::Folder(f, _) => payloads
            .iter()
            .map(|p| (p.row_id, f.destination_of(p)))
            .collect(),
        Target::Http(_) => payloads
            .iter()
            .filter_map(|p| Some((p.row_id, placement::sent_ref(p.digests.sha1.as_deref()?))))
            .collect(),
        Target::Calibre(..) | Target::CalibreServer(_) => Vec::new(),
    }
}

/// What a row needs before the target: its payload, or nothing more (a dry run, or no hash).
enum Prepared {
    Finished(Option<i64>),
    Send(Box<Payload>),
}

async fn prepare(ctx: &Ctx, item: &Item) -> Prepared {
    let Some(payload) = payload_of(item) else {
        ctx.fail(
            item,
            Failure::new(
                FailureKind::Unreadable,
                format!("{}: no hash recorded", item.row.path.display()),
            ),
            0,
        )
        .await;
        return Prepared::Finished(None);
    };
    // Never sent without a digest the target needs (rows hashed without it were sent back to
    // be hashed again before the run claimed any, see `hash_stage::requeue_lacking`).
    if ctx.target.digests_needed().has_sha1() && payload.digests.sha1.is_none() {
        ctx.fail(
            item,
            Failure::new(
                FailureKind::Unreadable,
                format!(
                    "{}: no SHA-1 recorded, which the target needs; retry-failed hashes it again",
                    item.row.path.display()
                ),
            ),
            0,
        )
        .await;
        return Prepared::Finished(None);
    }
    if ctx.cfg.dry_run {
        tracing::info!(
            "would {} {} → {}",
            ctx.cfg.place_verb,
            item.row.source_ref,
            ctx.target.describe(&payload)
        );
        ctx.progress.would_send.add(1);
        ctx.progress.would_send_bytes.add(item.row.size);
        return Prepared::Finished(Some(item.row.id));
    }
    Prepared::Send(Box::new(payload))
}

/// Record what the target did with a row; returns its id when it landed.
async fn record(ctx: &Ctx, item: &Item, res: Result<Transferred, Failure>) -> Option<i64> {
    match res {
        Ok(Transferred::AlreadyThere { reason, detail }) => {
            ctx.skip(item, reason, detail, None).await;
            None
        }
        Ok(Transferred::Placed(placed)) => {
            let mut t = item.to(FileState::Uploaded);
            t.attempts = 1;
            t.needs_flush = true;
            t.bytes_sent = placed.bytes_sent;
            t.bytes_read = placed.bytes_read;
            t.target_ref = Some(placed.target_ref.clone());
            // Where it went is the row's `target_ref`; the event says only what that does not
            // (a calibre book's id, a file found there already). The scan's event that puts an
            // `uploaded` row back names the place it had.
            t.detail = placed.detail.clone();
            if let Some(new) = placed.new_digests {
                t.sha1 = new.sha1;
                t.blake3 = Some(new.blake3);
            }
            ctx.writer.send(t).await;
            ctx.progress.uploaded.add(1);
            ctx.progress.uploaded_bytes.add(item.row.size);
            ctx.progress.bytes_read.add(placed.bytes_read);
            Some(item.row.id)
        }
        Err(f) => {
            ctx.fail(item, f, 1).await;
            None
        }
    }
}

pub(super) fn payload_of(item: &Item) -> Option<Payload> {
    Some(Payload {
        row_id: item.row.id,
        source_path: item.row.path.clone(),
        source_rel: item.row.source_ref.clone(),
        file_name: item.row.file_name(),
        size: item.row.size,
        format: item.row.format.clone(),
        digests: item.digests()?,
        metadata: item.row.metadata.clone(),
        origin: item.row.metadata_origin,
        data: item.data.clone(),
        previous_ref: item.row.target_ref.clone(),
        staged: item.staged.clone(),
    })
}
