//! The coordinator: claims rows in batches and moves them through the stages (check → hash →
//! content check → metadata → transfer), each a task joined to the next by a bounded channel so
//! the stages run at once as a pipeline. Stages report every move to the single state writer;
//! a failure that concerns every file (auth, target full, target gone) stops the whole run, and
//! so does a fault of bookferry's own (a task that panicked, see `fault`), leaving the rows
//! where they were. Every task is joined (`tasks`): none can vanish and leave the run waiting.

pub(crate) mod adopt;
mod batch;
mod check;
mod content;
mod contents;
pub mod fault;
mod hash_stage;
mod metadata_stage;
pub mod progress;
pub mod scan;
mod tasks;
mod transfer;

use crate::failure::Failure;
use crate::hash::{DigestSet, Digests};
use crate::skip_reason::SkipReason;
use crate::state::rows::FileRow;
use crate::state::writer::{FlushError, FlushHook, Transition, WriterHandle};
use crate::state::{Db, FileState};
use crate::target::staged::Staged;
use crate::target::Target;
use crate::tuning::PipelineTuning;
use fault::{Fault, Stage};
use progress::Progress;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Hash every file, even when the target has its name and size.
    pub checksum: bool,
    /// The digests each file is hashed for: BLAKE3, and SHA-1 where the target needs it or
    /// `--hash sha1` asked for it.
    pub digests: DigestSet,
    /// Hash and check, but write nothing to the target.
    pub dry_run: bool,
    /// Place content duplicates too, instead of skipping them.
    pub keep_duplicates: bool,
    /// What placing a file is called in a dry run's lines ("would copy …"): copy, link, add,
    /// upload.
    pub place_verb: &'static str,
    /// Checkers, queue lengths, the claim batch and the buffer budget (see `crate::tuning`).
    pub tuning: PipelineTuning,
    /// Rows `retry-failed` put back after their placement failed (see
    /// `Target::asks_again_after_a_failed_placement`).
    pub failed_at_placement: Arc<std::collections::HashSet<i64>>,
}

impl PipelineConfig {
    /// Copy mode, duplicates skipped, sized by `tuning`.
    pub fn new(tuning: PipelineTuning) -> PipelineConfig {
        PipelineConfig {
            place_verb: "copy",
            checksum: false,
            digests: DigestSet::Blake3,
            dry_run: false,
            keep_duplicates: false,
            tuning,
            failed_at_placement: Default::default(),
        }
    }
}

/// A claimed row on its way through the stages.
pub struct Item {
    pub row: FileRow,
    /// The file's bytes, when small enough to keep from the hash stage to the transfer.
    pub data: Option<Arc<Vec<u8>>>,
    /// The file's bytes written into the target by the hash task, without a name or under a
    /// temporary one (see `target::staged`); freed when the item is dropped without the
    /// transfer moving it.
    pub staged: Option<Arc<Staged>>,
    pub warnings: Vec<String>,
    /// Metadata the hash stage already parsed from the file's bytes in memory (in the same
    /// blocking task); the metadata stage records it.
    pub extracted: Option<crate::metadata::Extracted>,
    /// The placement claimed with the row's move to `metadata_cached` (see the metadata
    /// stage): the transfer places the file once it is recorded.
    pub claim: Option<Arc<crate::state::writer::Recorded>>,
    /// The share of the buffer budget this item's bytes hold.
    _budget: Option<OwnedSemaphorePermit>,
}

impl Item {
    fn new(row: FileRow) -> Item {
        Item {
            row,
            data: None,
            staged: None,
            warnings: Vec::new(),
            extracted: None,
            claim: None,
            _budget: None,
        }
    }

    /// What identifies the row's content within a run (duplicates): its BLAKE3, once hashed.
    fn content_key(&self) -> Option<String> {
        self.row.blake3.clone().filter(|b| !b.is_empty())
    }

    /// The row's digests, once hashed: BLAKE3, and SHA-1 when it was computed.
    fn digests(&self) -> Option<Digests> {
        Some(Digests {
            sha1: self.row.sha1.clone(),
            blake3: self.content_key()?,
        })
    }

    /// A transition of this row from its current state (naming the source file on the moves
    /// that are logged: to a final state, and the one that records warnings, if any).
    fn to(&self, to: FileState) -> Transition {
        let mut t = Transition::new(self.row.id, self.row.state, to);
        let records_warnings = to == FileState::MetadataCached && !self.warnings.is_empty();
        if to.is_final() || records_warnings {
            t.source = Some(self.row.source_ref.clone());
        }
        t
    }
}

/// What every stage shares.
pub struct Ctx {
    pub db: Db,
    pub writer: WriterHandle,
    pub target: Arc<Target>,
    pub cfg: PipelineConfig,
    pub progress: Arc<Progress>,
    cancel: Arc<AtomicBool>,
    stop: Mutex<Option<Failure>>,
    fault: Mutex<Option<Fault>>,
    buffers: Arc<Semaphore>,
    /// The contents this run sent on, by BLAKE3 (SHA-1 alone has public collisions, and a
    /// migration must not take one such file for a duplicate of the other): the first row
    /// that went on to transfer with each, and the row that landed it.
    contents: Mutex<contents::Contents>,
}

impl Ctx {
    pub fn new(
        db: Db,
        writer: WriterHandle,
        target: Arc<Target>,
        cfg: PipelineConfig,
        progress: Arc<Progress>,
        cancel: Arc<AtomicBool>,
    ) -> Ctx {
        let kib =
            (cfg.tuning.buffer_budget / 1024).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        Ctx {
            db,
            writer,
            target,
            cfg,
            progress,
            cancel,
            stop: Mutex::new(None),
            fault: Mutex::new(None),
            buffers: Arc::new(Semaphore::new(kib)),
            contents: Mutex::new(Default::default()),
        }
    }

    /// True once a signal or a run-wide failure asked the run to stop: no new work starts.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.writer.fatal().is_some()
    }

    /// Stop the run for a failure that concerns every file; rows stay where they are.
    pub fn stop_run(&self, f: Failure) {
        if let Ok(mut g) = self.stop.lock() {
            if g.is_none() {
                tracing::error!("{f}");
                *g = Some(f);
            }
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn stopped_by(&self) -> Option<Failure> {
        self.stop.lock().ok().and_then(|g| g.clone())
    }

    /// Stop the run for a fault of bookferry's own: no row is given a fate for it (they stay
    /// where they were), nothing new starts, and the run ends with it (exit 5). The first fault
    /// is kept.
    pub fn abort(&self, f: Fault) {
        tracing::error!("internal error: {f}");
        if let Ok(mut g) = self.fault.lock() {
            g.get_or_insert(f);
        }
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The fault that stopped the run, if one did (taken once, by the run driver).
    pub fn take_fault(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|mut g| g.take())
    }

    /// Record a failure for one row (or stop the run, for a run-wide one).
    async fn fail(&self, item: &Item, f: Failure, attempts: i64) {
        if f.kind.stops_run() {
            self.stop_run(f);
            return;
        }
        // Logged by the state writer once committed (`state::file_log`).
        let mut t = item.to(FileState::Failed);
        t.attempts = attempts;
        t.error = Some(f);
        self.writer.send(t).await;
        self.progress.failed.add(1);
    }

    async fn skip(
        &self,
        item: &Item,
        reason: SkipReason,
        detail: String,
        duplicate_of: Option<i64>,
    ) {
        let mut t = item.to(FileState::Skipped);
        t.skip_reason = Some(reason);
        t.detail = Some(detail);
        t.duplicate_of = duplicate_of;
        self.writer.send(t).await;
        self.progress.skipped.add(1);
        self.progress.skipped_bytes.add(item.row.size);
    }
}

/// The state writer's hook before each commit that records placed files: the target's
/// durability barrier, so the state DB never claims more than the disk holds.
pub fn flush_hook(target: &Target) -> Option<FlushHook> {
    let mut barrier = target.durability_barrier()?;
    Some(Box::new(move || {
        barrier().map_err(|e| FlushError(Box::new(e)))
    }))
}

/// A scan that is still adding rows while the pipeline runs (see `commands::execute`). Rows
/// with an id above `last_old_id` are new rows of this scan, which never touches them again:
/// they are claimed as each scan batch commits. Older rows wait until the scan is over, since
/// it may still reset them (their file changed) or fail them (their file vanished).
pub struct ScanFeed {
    pub last_old_id: i64,
    pub status: watch::Receiver<ScanStatus>,
}

/// Where the scan feeding a pipeline is: each committed batch changes it.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStatus {
    pub batches: u64,
    /// The scan is over (finished, failed or interrupted): no more rows will come from it.
    pub done: bool,
}

/// Move every active row of the state DB as far as it goes, and those a running scan adds.
/// Returns when all are done, or when the run was stopped (then the rows not finished stay in
/// their last committed state).
pub async fn run(ctx: Arc<Ctx>, feed: Option<ScanFeed>) {
    // Before any claim: a dead run's unrecorded placements are recorded as this migration's,
    // then the rows hashed without a digest this run needs go back to be hashed again.
    adopt::placements(&ctx).await;
    content::index_placed(&ctx).await;
    hash_stage::requeue_lacking(&ctx).await;
    let t = &ctx.cfg.tuning;
    let (to_check, check_in) = mpsc::channel::<Item>(t.check_queue.max(1));
    let (to_hash, hash_in) = mpsc::channel::<Item>(t.check_queue.max(1));
    let (to_content, content_in) = mpsc::channel::<Item>(t.stage_queue.max(1));
    let (to_meta, meta_in) = mpsc::channel::<Item>(t.stage_queue.max(1));
    let (to_transfer, transfer_in) = mpsc::channel::<Item>(t.stage_queue.max(1));
    // A stage that panics stops the run; the others see it and drain what they hold.
    let mut stages = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    let mut spawn = |stage: Stage, task: StageTask| {
        names.insert(stages.spawn(task).id(), stage);
    };
    spawn(
        Stage::Claim,
        Box::pin(claim_loop(ctx.clone(), to_check, feed)),
    );
    spawn(
        Stage::NameCheck,
        Box::pin(check::stage(ctx.clone(), check_in, to_hash)),
    );
    spawn(
        Stage::Hash,
        Box::pin(hash_stage::stage(ctx.clone(), hash_in, to_content)),
    );
    spawn(
        Stage::ContentCheck,
        Box::pin(content::stage(ctx.clone(), content_in, to_meta)),
    );
    spawn(
        Stage::Metadata,
        Box::pin(metadata_stage::stage(ctx.clone(), meta_in, to_transfer)),
    );
    spawn(
        Stage::Transfer,
        Box::pin(transfer::stage(ctx.clone(), transfer_in)),
    );
    while let Some(res) = stages.join_next_with_id().await {
        if let Err(e) = res {
            let stage = names.get(&e.id()).copied().unwrap_or(Stage::Pipeline);
            ctx.abort(Fault::joined(stage, e));
        }
    }
}

/// One stage's task, as the coordinator spawns it.
type StageTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Claim batches of active rows (in id order) and feed them to the first stage: while a scan
/// runs, its new rows as it commits them; then every active row this run does not hold yet.
async fn claim_loop(ctx: Arc<Ctx>, out: mpsc::Sender<Item>, feed: Option<ScanFeed>) {
    if let Some(mut feed) = feed {
        let mut after = feed.last_old_id;
        loop {
            // Seen before claiming: a batch committed after this claim wakes the wait below.
            let done = feed.status.borrow_and_update().done;
            match claim_some(&ctx, &out, &mut after).await {
                Claimed::Rows => continue,
                Claimed::Stop => return,
                Claimed::None if done => break,
                Claimed::None => {}
            }
            if feed.status.changed().await.is_err() {
                // The scan's end always comes as a change first: it is gone without saying it
                // was over, and rows it may not have seen must not be claimed.
                return;
            }
        }
    }
    let mut after = 0;
    while let Claimed::Rows = claim_some(&ctx, &out, &mut after).await {}
}

enum Claimed {
    Rows,
    None,
    Stop,
}

/// Claim one batch of active rows with ids above `after` and send them on.
async fn claim_some(ctx: &Ctx, out: &mpsc::Sender<Item>, after: &mut i64) -> Claimed {
    if ctx.cancelled() {
        return Claimed::Stop;
    }
    let rows = match ctx.writer.claim(*after, ctx.cfg.tuning.claim_batch).await {
        Ok(rows) => rows,
        Err(e) => {
            ctx.stop_run(Failure::new(
                crate::failure::FailureKind::StateDb,
                format!("the state DB could not be written while claiming rows: {e}"),
            ));
            return Claimed::Stop;
        }
    };
    let Some(last) = rows.last() else {
        return Claimed::None;
    };
    *after = last.id;
    for row in rows {
        ctx.progress.claimed.add(1);
        if out.send(Item::new(row)).await.is_err() {
            return Claimed::Stop;
        }
    }
    Claimed::Rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::runs;
    use crate::state::scan_store;
    use crate::state::writer::Writer;
    use crate::target::{PlacementOptions, TargetSpec};
    use std::time::Duration;

    fn add_rows(db: &Db, run: i64, names: &[&str]) {
        scan_store::add_test_rows(&mut db.conn().unwrap(), run, names);
    }

    /// The next claimed row's source reference, or None once the claim loop has ended.
    async fn next(rx: &mut mpsc::Receiver<Item>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the claim loop sends or ends")
            .map(|item| item.row.source_ref)
    }

    /// A runtime, a state writer for `run` and the pipeline's context, into a folder target
    /// under `dir` (copy mode).
    fn pipeline_for(
        db: &Db,
        run: i64,
        dir: &std::path::Path,
    ) -> (tokio::runtime::Runtime, Writer, Arc<Ctx>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tuning = crate::tuning::Tuning::detect();
        let placement = PlacementOptions::copy_to_source_paths();
        let spec = TargetSpec::parse(dir.join("target").to_str().unwrap()).unwrap();
        let target = rt
            .block_on(Target::open(
                &spec,
                dir,
                &placement,
                &Default::default(),
                tuning.transfers,
                false,
            ))
            .expect("target opens");
        let writer = Writer::start(db, run, None, tuning.writer).unwrap();
        let ctx = Arc::new(Ctx::new(
            db.clone(),
            writer.handle(),
            Arc::new(target),
            PipelineConfig::new(tuning.pipeline),
            Arc::new(Progress::default()),
            Arc::new(AtomicBool::new(false)),
        ));
        (rt, writer, ctx)
    }

    /// While the next stage takes nothing, the hash stage takes from its queue no more rows
    /// than its slots hold (a group of files each) and the group waiting for a slot: a slot is held
    /// until the next stage took the group's rows. When a slot was freed as its hashing ended,
    /// the stage took and hashed every row it was given, and the rows waited in its tasks: a
    /// resumed 300,000-file run grew to 373 MiB.
    #[test]
    fn the_hash_stage_holds_no_more_rows_than_its_slots_while_the_next_stage_waits() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let run = runs::begin(&db.conn().unwrap(), "run", &[]).unwrap();
        let files = 400;
        let names: Vec<String> = (0..files).map(|i| format!("b{i:03}.txt")).collect();
        for n in &names {
            std::fs::write(lib.join(n), format!("book {n}\n")).unwrap();
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        add_rows(&db, run, &refs);
        db.conn()
            .unwrap()
            .execute(
                "UPDATE files SET path = ?1 || '/' || source_ref, size = length('book ' || source_ref) + 1, format = 'txt'",
                [lib.to_str().unwrap()],
            )
            .unwrap();
        let (rt, writer, ctx) = pipeline_for(&db, run, dir.path());
        let t = ctx.cfg.tuning;
        let taken = rt.block_on(async {
            let rows = ctx.writer.claim(0, files).await.unwrap();
            assert_eq!(rows.len(), files);
            let (to_hash, hash_in) = mpsc::channel::<Item>(files);
            // The next stage's queue holds one row and nobody takes it.
            let (out, _held) = mpsc::channel::<Item>(1);
            for row in rows {
                let mut item = Item::new(row);
                item.row.state = FileState::Checked;
                to_hash.send(item).await.unwrap();
            }
            let stage = tokio::spawn(hash_stage::stage(ctx.clone(), hash_in, out));
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            // The queue's free places: the rows the stage took.
            let taken = to_hash.capacity();
            ctx.cancel.store(true, Ordering::SeqCst);
            drop(to_hash);
            stage.abort();
            taken
        });
        let most = (t.checkers + 1) * t.hash_group_files;
        assert!(
            taken <= most,
            "the hash stage took {taken} of {files} rows while the next stage took one; at most \
             {most} ({} slots of a group of {} files, and the group waiting for a slot)",
            t.checkers,
            t.hash_group_files
        );
        drop(ctx);
        drop(rt);
        let _ = writer.finish();
    }

    /// While the scan runs, the claim loop takes the rows it adds as each batch commits, and
    /// leaves the rows recorded before alone (the scan may still reset or fail them); once the
    /// scan is over it takes those, then ends.
    #[test]
    fn while_a_scan_runs_only_the_rows_it_added_are_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let earlier = runs::begin(&db.conn().unwrap(), "scan", &[]).unwrap();
        add_rows(&db, earlier, &["old1.epub", "old2.epub"]);
        runs::end(&mut db.conn().unwrap(), earlier, 0, "finished").unwrap();
        let run = runs::begin(&db.conn().unwrap(), "run", &[]).unwrap();
        let last_old_id = 2;
        add_rows(&db, run, &["new1.epub", "new2.epub"]);

        let (rt, writer, ctx) = pipeline_for(&db, run, dir.path());
        let (status, status_rx) = watch::channel(ScanStatus {
            batches: 1,
            done: false,
        });
        let feed = ScanFeed {
            last_old_id,
            status: status_rx,
        };
        let held_by_run = |id: i64| -> bool {
            db.conn()
                .unwrap()
                .query_row(
                    "SELECT run_id IS NOT NULL FROM files WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel::<Item>(16);
            let claimer = tokio::spawn(claim_loop(ctx.clone(), tx, Some(feed)));
            assert_eq!(next(&mut rx).await.as_deref(), Some("new1.epub"));
            assert_eq!(next(&mut rx).await.as_deref(), Some("new2.epub"));
            // The scan goes on: the old rows are not taken meanwhile.
            let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
            assert!(
                quiet.is_err(),
                "nothing more is claimed while the scan runs"
            );
            assert!(!held_by_run(1) && !held_by_run(2));
            // A batch committed later is taken at once.
            add_rows(&db, run, &["new3.epub"]);
            status.send_modify(|s| s.batches += 1);
            assert_eq!(next(&mut rx).await.as_deref(), Some("new3.epub"));
            // The scan is over: the old rows follow, and the loop ends.
            status.send_modify(|s| s.done = true);
            assert_eq!(next(&mut rx).await.as_deref(), Some("old1.epub"));
            assert_eq!(next(&mut rx).await.as_deref(), Some("old2.epub"));
            assert_eq!(next(&mut rx).await, None);
            claimer.await.unwrap();
        });
        drop(ctx);
        let (_, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
    }
}
