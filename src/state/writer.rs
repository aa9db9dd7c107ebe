//! The single writer: a dedicated thread that owns one connection and applies state transitions
//! in batched transactions (many rows per commit, each move with its `events` row), serves claim
//! requests, and keeps the run's heartbeat. Async code sends to it without blocking; it is the
//! only place the pipeline writes to SQLite.

use super::claim::claim_batch;
use super::file_log;
use super::placement;
use super::rows::FileRow;
use super::runs::{self, RunCounters};
use super::{now_ms, Conn, Db, FileState, Result, StateError};
use crate::failure::Failure;
use crate::metadata::{Metadata, Origin};
use crate::skip_reason::SkipReason;
use crate::tuning::WriterTuning;
use rusqlite::{params, TransactionBehavior};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// One row's move from one state to another, with what the move learned.
#[derive(Debug, Clone)]
pub struct Transition {
    pub file_id: i64,
    pub from: FileState,
    pub to: FileState,
    /// The source file, for the row's log lines (see `file_log`); set on the moves that log.
    pub source: Option<String>,
    pub detail: Option<String>,
    pub sha1: Option<String>,
    pub blake3: Option<String>,
    pub metadata: Option<(Metadata, Origin)>,
    pub warnings: Option<String>,
    pub target_ref: Option<String>,
    pub duplicate_of: Option<i64>,
    pub skip_reason: Option<SkipReason>,
    /// Why the row failed: its kind and one-line message naming the file.
    pub error: Option<Failure>,
    pub attempts: i64,
    /// Counted in the run's `files_hashed`.
    pub hashed: bool,
    pub bytes_read: u64,
    pub bytes_sent: u64,
    /// The target must flush what it wrote before this move is committed.
    pub needs_flush: bool,
    /// Where the row is about to be placed (`files.planned_ref`, see `state::placement`),
    /// recorded with this move: a folder target's destination, with the move to
    /// `metadata_cached`, so the transfer need not claim it in a transaction of its own.
    pub planned_ref: Option<String>,
    /// Told whether the commit recorded this move or dropped it (see [`Recorded`]).
    pub recorded: Option<Arc<Recorded>>,
}

/// Whether a move was recorded: a sender that must not act before its move is in the state DB
/// (the transfer, before placing a file claimed with its move to `metadata_cached`) looks here
/// after each commit ([`WriterHandle::commits`]). Every move sent ends recorded or dropped: a
/// row this run no longer holds, or a writer stopped by an error, drops it.
#[derive(Debug, Default)]
pub struct Recorded(AtomicU8);

/// See [`Recorded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedState {
    NotYet,
    Recorded,
    Dropped,
}

impl Recorded {
    pub fn state(&self) -> RecordedState {
        match self.0.load(Ordering::Acquire) {
            0 => RecordedState::NotYet,
            1 => RecordedState::Recorded,
            _ => RecordedState::Dropped,
        }
    }

    fn set(&self, to: RecordedState) {
        let v = match to {
            RecordedState::NotYet => 0,
            RecordedState::Recorded => 1,
            RecordedState::Dropped => 2,
        };
        // Once told, it stays so.
        let _ = self
            .0
            .compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Transition {
    pub fn new(file_id: i64, from: FileState, to: FileState) -> Transition {
        Transition {
            file_id,
            from,
            to,
            source: None,
            detail: None,
            sha1: None,
            blake3: None,
            metadata: None,
            warnings: None,
            target_ref: None,
            duplicate_of: None,
            skip_reason: None,
            error: None,
            attempts: 0,
            hashed: false,
            bytes_read: 0,
            bytes_sent: 0,
            needs_flush: false,
            planned_ref: None,
            recorded: None,
        }
    }
}

/// Called before committing a batch that holds moves with `needs_flush`: whoever starts the
/// writer decides what it does (the pipeline makes the target's placed files durable). The
/// writer knows nothing of targets; the hook's error is carried as it came.
pub type FlushHook = Box<dyn FnMut() -> std::result::Result<(), FlushError> + Send>;

/// Why the hook run before a commit failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlushError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Why the writer stopped: nothing after this was committed, and the run must stop.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("making the target's files durable before recording them: {0}")]
    Flush(#[source] FlushError),
    #[error("writing the state DB: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    State(#[source] Box<StateError>),
}

impl From<StateError> for WriterError {
    fn from(e: StateError) -> WriterError {
        WriterError::State(Box::new(e))
    }
}

enum Msg {
    Transition(Box<Transition>),
    Claim {
        after: i64,
        limit: usize,
        reply: tokio::sync::oneshot::Sender<Result<Vec<FileRow>>>,
    },
    Flush {
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// Commit what is pending and stop, even while other handles still exist.
    Shutdown,
}

/// What the writer did, for the run summary.
#[derive(Debug, Default, Clone)]
pub struct WriterStats {
    pub committed: u64,
    pub transactions: u64,
    /// Moves refused because the row was not where the mover thought (a bug if ever non-zero).
    pub conflicts: u64,
    pub counters: RunCounters,
    /// Warnings logged (one per line of a committed move's `warnings`).
    pub warnings: u64,
}

/// Cheap to clone; every clone sends to the same writer thread. The queue is bounded (memory
/// stays bounded while the state DB is slow): async code waits for room with `.await`, never
/// holding a runtime worker thread; a plain thread uses the `blocking_` forms.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Msg>,
    fatal: Fatal,
    /// How many times the writer committed (or dropped a batch); see [`Recorded`].
    commits: watch::Receiver<u64>,
    /// For the placement claims, which do not go through the writer thread (see `plan`).
    db: Db,
    run: i64,
}

/// The error that stopped the writer, once there is one.
type Fatal = Arc<Mutex<Option<Arc<WriterError>>>>;

pub struct Writer {
    handle: WriterHandle,
    join: JoinHandle<WriterStats>,
}

impl Writer {
    /// Start the writer thread of `run`; `tuning` sizes its queue and its transactions.
    pub fn start(
        db: &Db,
        run: i64,
        flush: Option<FlushHook>,
        tuning: WriterTuning,
    ) -> Result<Writer> {
        let conn = db.conn()?;
        let (tx, rx) = mpsc::channel(tuning.queue.max(1));
        let fatal = Arc::new(Mutex::new(None));
        let fatal2 = fatal.clone();
        let (commits_tx, commits) = watch::channel(0);
        let join = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer_loop(conn, run, rx, flush, fatal2, commits_tx, tuning))
            .map_err(StateError::WriterThread)?;
        Ok(Writer {
            handle: WriterHandle {
                tx,
                fatal,
                commits,
                db: db.clone(),
                run,
            },
            join,
        })
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Commit everything sent so far and stop the thread.
    pub fn finish(self) -> (WriterStats, Option<Arc<WriterError>>) {
        let fatal = self.handle.fatal.clone();
        let _ = self.handle.tx.blocking_send(Msg::Shutdown);
        drop(self.handle);
        let stats = self.join.join().unwrap_or_default();
        let err = fatal.lock().map(|g| g.clone()).unwrap_or(None);
        (stats, err)
    }
}

impl WriterHandle {
    /// Queue a move; waits (asynchronously) while the queue is full.
    pub async fn send(&self, t: Transition) {
        let _ = self.tx.send(Msg::Transition(Box::new(t))).await;
    }

    /// [`WriterHandle::send`] from a thread that is not running async code (it panics there).
    pub fn blocking_send(&self, t: Transition) {
        let _ = self.tx.blocking_send(Msg::Transition(Box::new(t)));
    }

    pub async fn claim(&self, after: i64, limit: usize) -> Result<Vec<FileRow>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Claim {
                after,
                limit,
                reply,
            })
            .await
            .map_err(|_| StateError::WriterGone(self.fatal()))?;
        rx.await.map_err(|_| StateError::WriterGone(self.fatal()))?
    }

    /// Changes after each commit (and after a batch the writer dropped): when to look at the
    /// [`Recorded`] of moves sent before.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    /// The run this writer records.
    pub fn run(&self) -> i64 {
        self.run
    }

    /// Record where each row is about to be placed (`files.planned_ref`, see
    /// `state::placement`), committed before this returns. Its own small transaction on a
    /// blocking thread, not a message to the writer thread: the writer's commits wait for the
    /// target's `syncfs`, and placements must not wait for that.
    pub async fn plan(&self, planned: Vec<(i64, String)>) -> Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        let (db, run) = (self.db.clone(), self.run);
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn()?;
            placement::claim(&mut conn, run, &planned)
        })
        .await
        .map_err(|_| StateError::WriterGone(self.fatal()))?
    }

    /// Wait until everything sent before is committed.
    pub async fn flush(&self) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The error that stopped the writer (state DB disk full, target flush failed, …).
    pub fn fatal(&self) -> Option<Arc<WriterError>> {
        self.fatal.lock().ok().and_then(|g| g.clone())
    }
}

struct LoopState {
    conn: Conn,
    run: i64,
    flush: Option<FlushHook>,
    fatal: Fatal,
    commits: watch::Sender<u64>,
    stats: WriterStats,
    dead: bool,
}

impl LoopState {
    fn commit(&mut self, pending: &mut Vec<Transition>) {
        if pending.is_empty() {
            return;
        }
        if !self.dead {
            if let Err(e) = commit_batch(
                &mut self.conn,
                self.run,
                pending,
                &mut self.flush,
                &mut self.stats,
            ) {
                tracing::error!("state DB write failed: {e}");
                if let Ok(mut g) = self.fatal.lock() {
                    *g = Some(Arc::new(e));
                }
                self.dead = true;
            }
        }
        // Whatever the commit did not record (all of it, when it failed) was dropped.
        for t in pending.iter() {
            if let Some(r) = &t.recorded {
                r.set(RecordedState::Dropped);
            }
        }
        pending.clear();
        self.commits.send_modify(|n| *n += 1);
    }
}

/// The writer thread's end of the queue: waits for the next message at most so long. The
/// senders are async (see [`WriterHandle`]); this thread waits on a timer of its own.
struct Inbox {
    rx: mpsc::Receiver<Msg>,
    timer: tokio::runtime::Runtime,
}

impl Inbox {
    fn new(rx: mpsc::Receiver<Msg>) -> std::io::Result<Inbox> {
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        Ok(Inbox { rx, timer })
    }

    fn recv_timeout(&mut self, wait: Duration) -> std::result::Result<Msg, RecvTimeoutError> {
        match self.rx.try_recv() {
            Ok(m) => return Ok(m),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                return Err(RecvTimeoutError::Disconnected)
            }
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let rx = &mut self.rx;
        match self
            .timer
            .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
        {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(RecvTimeoutError::Disconnected),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }
}

fn writer_loop(
    conn: Conn,
    run: i64,
    rx: mpsc::Receiver<Msg>,
    flush: Option<FlushHook>,
    fatal: Fatal,
    commits: watch::Sender<u64>,
    tuning: WriterTuning,
) -> WriterStats {
    let mut st = LoopState {
        conn,
        run,
        flush,
        fatal,
        commits,
        stats: WriterStats::default(),
        dead: false,
    };
    let mut pending: Vec<Transition> = Vec::new();
    let mut first_at = Instant::now();
    let mut last_beat = Instant::now();
    let mut inbox = match Inbox::new(rx) {
        Ok(inbox) => inbox,
        Err(e) => {
            let e = WriterError::from(StateError::WriterThread(e));
            tracing::error!("state writer: {e}");
            if let Ok(mut g) = st.fatal.lock() {
                *g = Some(Arc::new(e));
            }
            return st.stats;
        }
    };
    loop {
        let wait = if pending.is_empty() {
            tuning.heartbeat
        } else {
            tuning.max_delay.saturating_sub(first_at.elapsed())
        };
        match inbox.recv_timeout(wait) {
            Ok(Msg::Transition(t)) => {
                if pending.is_empty() {
                    first_at = Instant::now();
                }
                pending.push(*t);
                if pending.len() >= tuning.max_batch {
                    st.commit(&mut pending);
                }
            }
            Ok(Msg::Claim {
                after,
                limit,
                reply,
            }) => {
                let res = if st.dead {
                    Err(StateError::WriterGone(
                        st.fatal.lock().ok().and_then(|g| g.clone()),
                    ))
                } else {
                    // A claim is its own small transaction; the rows it takes are not touched by
                    // the pending moves (those belong to rows this run already holds).
                    claim_batch(&mut st.conn, run, after, limit)
                };
                let _ = reply.send(res);
            }
            Ok(Msg::Flush { reply }) => {
                st.commit(&mut pending);
                let _ = reply.send(());
            }
            Err(RecvTimeoutError::Timeout) => st.commit(&mut pending),
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                st.commit(&mut pending);
                break;
            }
        }
        if !st.dead && last_beat.elapsed() >= tuning.heartbeat {
            let _ = runs::heartbeat(&st.conn, run);
            last_beat = Instant::now();
        }
    }
    st.stats
}

/// The moves of one row that follow each other within a batch (`a → b`, `b → c`, …): written
/// with one `UPDATE` from the first state to the last (a file often passes through several
/// stages within one commit interval), each move still with its own `events` row.
struct Chain<'a> {
    moves: Vec<(&'a Transition, FileState, FileState)>,
}

impl<'a> Chain<'a> {
    fn first_from(&self) -> FileState {
        self.moves[0].1
    }

    fn last(&self) -> (&'a Transition, FileState, FileState) {
        self.moves[self.moves.len() - 1]
    }

    /// The latest value a move of the chain gives a column (as each `UPDATE` in turn would
    /// leave it: later moves override, a move without a value keeps the earlier one).
    fn latest<T>(&self, field: impl Fn(&'a Transition) -> Option<T>) -> Option<T> {
        self.moves.iter().rev().find_map(|(t, _, _)| field(t))
    }
}

/// Gather the batch's moves into per-row chains, in order (a move continues its row's open
/// chain when it starts where that chain ends; one that does not starts a new chain). Moves
/// that are not on the diagram are refused here (counted in `conflicts`).
fn plan_steps<'a>(batch: &'a [Transition], conflicts: &mut u64) -> Vec<Chain<'a>> {
    let mut steps: Vec<Chain<'a>> = Vec::with_capacity(batch.len());
    let mut open: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for t in batch {
        let (from, to) = (t.from, t.to);
        if !from.can_move_to(to) {
            tracing::error!(
                "internal: refused move {from} → {to} for file {} (not on the diagram)",
                t.file_id
            );
            *conflicts += 1;
            open.remove(&t.file_id);
            continue;
        }
        if let Some(&i) = open.get(&t.file_id) {
            let c = &mut steps[i];
            if c.last().2 == from {
                c.moves.push((t, from, to));
                continue;
            }
        }
        open.insert(t.file_id, steps.len());
        steps.push(Chain {
            moves: vec![(t, from, to)],
        });
    }
    steps
}

/// One `events` row of a batch (its run and time are the batch's).
struct Event<'a> {
    file_id: i64,
    from: FileState,
    to: FileState,
    detail: Option<&'a str>,
}

/// `events` rows written by one multi-row `INSERT`: one statement step for this many moves
/// instead of one each (the events are most of the rows a run writes).
const EVENTS_PER_INSERT: usize = 64;

/// `INSERT INTO events … VALUES (…), (…), …` for `rows` rows: `?1` is the run, `?2` the time,
/// and each row binds four more (file, from, to, detail).
fn events_insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail) VALUES ",
    );
    for i in 0..rows {
        let p = 3 + 4 * i;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(?{}, ?1, ?2, ?{}, ?{}, ?{})",
            p,
            p + 1,
            p + 2,
            p + 3
        ));
    }
    sql
}

/// Write a batch's `events` rows, in order, `EVENTS_PER_INSERT` to a statement.
fn insert_events(
    tx: &rusqlite::Transaction,
    run: i64,
    now: i64,
    events: &[Event],
) -> rusqlite::Result<()> {
    static MANY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| events_insert_sql(EVENTS_PER_INSERT));
    static ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| events_insert_sql(1));
    let mut chunks = events.chunks_exact(EVENTS_PER_INSERT);
    if chunks.len() > 0 {
        let mut stmt = tx.prepare_cached(&MANY)?;
        for chunk in &mut chunks {
            bind_events(&mut stmt, run, now, chunk)?;
        }
    }
    if !chunks.remainder().is_empty() {
        let mut stmt = tx.prepare_cached(&ONE)?;
        for e in chunks.remainder() {
            bind_events(&mut stmt, run, now, std::slice::from_ref(e))?;
        }
    }
    Ok(())
}

fn bind_events(
    stmt: &mut rusqlite::CachedStatement,
    run: i64,
    now: i64,
    rows: &[Event],
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, run)?;
    stmt.raw_bind_parameter(2, now)?;
    for (i, e) in rows.iter().enumerate() {
        let p = 3 + 4 * i;
        stmt.raw_bind_parameter(p, e.file_id)?;
        stmt.raw_bind_parameter(p + 1, e.from.as_str())?;
        stmt.raw_bind_parameter(p + 2, e.to.as_str())?;
        stmt.raw_bind_parameter(p + 3, e.detail)?;
    }
    stmt.raw_execute()?;
    Ok(())
}

fn commit_batch(
    conn: &mut rusqlite::Connection,
    run: i64,
    batch: &[Transition],
    flush: &mut Option<FlushHook>,
    stats: &mut WriterStats,
) -> std::result::Result<(), WriterError> {
    if batch.iter().any(|t| t.needs_flush) {
        if let Some(f) = flush.as_mut() {
            f().map_err(WriterError::Flush)?;
        }
    }
    let mut counters = RunCounters::default();
    let mut conflicts = 0;
    let steps = plan_steps(batch, &mut conflicts);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut events: Vec<Event> = Vec::with_capacity(batch.len());
    let mut update = tx.prepare_cached(UPDATE_ROW)?;
    // The moves to log once committed: every warning and failure; the other final states
    // when a log takes them.
    let log_final = file_log::wanted();
    let logs_final = |to: FileState| to == FileState::Failed || (log_final && to.is_final());
    let mut to_log: Vec<(&Transition, FileState)> = Vec::new();
    let mut recorded: Vec<&Recorded> = Vec::new();
    for chain in steps {
        if !update_row(&mut update, run, now, &chain)? {
            conflicts += chain.moves.len() as u64;
            continue;
        }
        recorded.extend(
            chain
                .moves
                .iter()
                .filter_map(|(t, _, _)| t.recorded.as_deref()),
        );
        for (t, from, to) in &chain.moves {
            if t.warnings.is_some() || logs_final(*to) {
                to_log.push((t, *to));
            }
            events.push(Event {
                file_id: t.file_id,
                from: *from,
                to: *to,
                detail: t
                    .detail
                    .as_deref()
                    .or_else(|| t.error.as_ref().map(|f| f.message.as_str())),
            });
            count_move(&mut counters, t, *to);
        }
    }
    drop(update);
    insert_events(&tx, run, now, &events)?;
    runs::add_counters(&tx, run, &counters)?;
    tx.commit()?;
    for r in recorded {
        r.set(RecordedState::Recorded);
    }
    for (t, to) in to_log {
        file_log::warnings(t, &mut stats.warnings);
        if logs_final(to) {
            file_log::final_state(t, to);
        }
    }
    stats.committed += batch.len() as u64 - conflicts;
    stats.transactions += 1;
    stats.conflicts += conflicts;
    stats.counters.add(&counters);
    Ok(())
}

/// One row's `UPDATE` from the first state of its chain to the last (see [`update_row`]).
const UPDATE_ROW: &str = "UPDATE files SET state = ?3,
            sha1 = COALESCE(?5, sha1), blake3 = COALESCE(?6, blake3),
            metadata = COALESCE(?7, metadata), metadata_origin = COALESCE(?8, metadata_origin),
            warnings = COALESCE(?9, warnings), target_ref = COALESCE(?10, target_ref),
            duplicate_of = COALESCE(?11, duplicate_of), skip_reason = COALESCE(?12, skip_reason),
            error_kind = ?13, error = ?14,
            planned_ref = CASE WHEN ?3 IN ('uploaded', 'skipped', 'failed') THEN NULL
                               ELSE COALESCE(?18, planned_ref) END,
            failed_from = CASE WHEN ?3 = 'failed' THEN ?17 ELSE NULL END,
            attempts = attempts + ?15, updated_at = ?16, state_changed_at = ?16
         WHERE id = ?1 AND state = ?2 AND run_id = ?4";

/// Apply a row's chain of moves with one `UPDATE` (`update`: [`UPDATE_ROW`], prepared once
/// per batch); false when the row was not where the chain starts (or not held by this run),
/// and nothing changed.
fn update_row(
    update: &mut rusqlite::CachedStatement,
    run: i64,
    now: i64,
    chain: &Chain,
) -> rusqlite::Result<bool> {
    let (last, last_from, to) = chain.last();
    let file_id = last.file_id;
    let (md, origin) = match chain.latest(|t| t.metadata.as_ref()) {
        Some((m, o)) => (serde_json::to_string(m).ok(), Some(o.as_str())),
        None => (None, None),
    };
    let (kind, msg) = match &last.error {
        Some(f) => (Some(f.kind.as_str()), Some(f.message.as_str())),
        None => (None, None),
    };
    let attempts: i64 = chain.moves.iter().map(|(t, _, _)| t.attempts).sum();
    let n = update.execute(params![
        file_id,
        chain.first_from().as_str(),
        to.as_str(),
        run,
        chain.latest(|t| t.sha1.as_deref()),
        chain.latest(|t| t.blake3.as_deref()),
        md,
        origin,
        chain.latest(|t| t.warnings.as_deref()),
        chain.latest(|t| t.target_ref.as_deref()),
        chain.latest(|t| t.duplicate_of),
        chain.latest(|t| t.skip_reason.map(SkipReason::as_str)),
        kind,
        msg,
        attempts,
        now,
        last_from.as_str(),
        chain.latest(|t| t.planned_ref.as_deref()),
    ])?;
    if n == 0 {
        tracing::warn!(
            "file {file_id}: not in state {} for this run; move to {to} dropped",
            chain.first_from()
        );
    }
    Ok(n > 0)
}

/// What one committed move adds to the run's counters.
fn count_move(counters: &mut RunCounters, t: &Transition, to: FileState) {
    if t.hashed {
        counters.files_hashed += 1;
    }
    match to {
        FileState::Uploaded => counters.files_uploaded += 1,
        FileState::Skipped => counters.files_skipped += 1,
        FileState::Failed => counters.files_failed += 1,
        _ => {}
    }
    counters.bytes_read += t.bytes_read as i64;
    counters.bytes_sent += t.bytes_sent as i64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::scan_store;

    fn mv(id: i64, from: FileState, to: FileState) -> Transition {
        Transition::new(id, from, to)
    }

    #[test]
    fn a_rows_consecutive_moves_form_one_chain_and_a_break_starts_another() {
        use FileState::*;
        let batch = vec![
            mv(1, Pending, Checked),
            mv(2, Pending, Checked),
            mv(1, Checked, Hashed),
            mv(2, Checked, Skipped),
            mv(1, Hashed, MetadataCached),
            mv(1, MetadataCached, Uploaded),
            // Not on the diagram: refused, and row 2's chain ends.
            mv(2, Skipped, Uploaded),
            // Does not start where row 3's chain ends: a chain of its own.
            mv(3, Pending, Checked),
            mv(3, Hashed, MetadataCached),
        ];
        let mut conflicts = 0;
        let steps = plan_steps(&batch, &mut conflicts);
        let shape: Vec<String> = steps
            .iter()
            .map(|c| {
                let states: Vec<&str> = std::iter::once(c.first_from().as_str())
                    .chain(c.moves.iter().map(|(_, _, to)| to.as_str()))
                    .collect();
                format!("{} {}", c.moves[0].0.file_id, states.join(">"))
            })
            .collect();
        assert_eq!(
            shape,
            [
                "1 pending>checked>hashed>metadata_cached>uploaded",
                "2 pending>checked>skipped",
                "3 pending>checked",
                "3 hashed>metadata_cached",
            ]
        );
        assert_eq!(conflicts, 1);
    }

    /// Rows for `names` recorded by a scan, then claimed through a writer of a new run:
    /// (temp dir holding the DB, the DB, the run, its writer, the rows' ids as claimed).
    fn claimed(names: &[&str]) -> (tempfile::TempDir, Db, i64, Writer, Vec<i64>) {
        claimed_with(names, crate::tuning::Tuning::detect().writer)
    }

    /// [`claimed`], with a writer sized by `tuning`.
    fn claimed_with(
        names: &[&str],
        tuning: WriterTuning,
    ) -> (tempfile::TempDir, Db, i64, Writer, Vec<i64>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).unwrap();
        let run = {
            let mut conn = db.conn().unwrap();
            let scan = runs::begin(&conn, "scan", &[]).unwrap();
            scan_store::add_test_rows(&mut conn, scan, names);
            runs::end(&mut conn, scan, 0, "finished").unwrap();
            runs::begin(&conn, "run", &[]).unwrap()
        };
        let writer = Writer::start(&db, run, None, tuning).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ids = rt
            .block_on(writer.handle().claim(0, names.len()))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        (dir, db, run, writer, ids)
    }

    /// A move that carries a placement claim records it with the move, and its sender is told
    /// once the commit is in (and `commits` changes); a move the run cannot record (the row is
    /// not where the move starts) is told it was dropped, so no sender waits for ever. The
    /// row's final move clears the claim.
    #[test]
    fn a_claim_sent_with_a_move_is_told_recorded_or_dropped_after_the_commit() {
        use FileState::*;
        let (_dir, db, _run, writer, ids) = claimed(&["a.epub", "b.epub"]);
        let (a, b) = (ids[0], ids[1]);
        let h = writer.handle();
        let mut commits = h.commits();
        let claim = |id: i64, from: FileState| {
            let mut t = mv(id, from, MetadataCached);
            t.planned_ref = Some(format!("Author/Title {id}.epub"));
            let r = Arc::new(Recorded::default());
            t.recorded = Some(r.clone());
            (t, r)
        };
        h.blocking_send(mv(a, Pending, Hashed));
        let (ta, ra) = claim(a, Hashed);
        // Row b is pending, not hashed: its move cannot be recorded.
        let (tb, rb) = claim(b, Hashed);
        assert_eq!(ra.state(), RecordedState::NotYet);
        h.blocking_send(ta);
        h.blocking_send(tb);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            while ra.state() == RecordedState::NotYet || rb.state() == RecordedState::NotYet {
                tokio::time::timeout(Duration::from_secs(10), commits.changed())
                    .await
                    .expect("a commit within 10 s")
                    .unwrap();
            }
        });
        assert_eq!(ra.state(), RecordedState::Recorded);
        assert_eq!(rb.state(), RecordedState::Dropped);
        let planned = |id: i64| -> Option<String> {
            db.conn()
                .unwrap()
                .query_row("SELECT planned_ref FROM files WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        assert_eq!(planned(a), Some(format!("Author/Title {a}.epub")));
        assert_eq!(planned(b), None);
        let mut up = mv(a, MetadataCached, Uploaded);
        up.target_ref = Some(format!("Author/Title {a}.epub"));
        h.blocking_send(up);
        drop(h);
        let (_, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
        assert_eq!(planned(a), None, "cleared by the final move");
    }

    /// More moves than one multi-row `INSERT` takes (three full ones and a rest, when they
    /// share a transaction): each move gets its own `events` row, in order, with its run, a
    /// time and its detail.
    #[test]
    fn a_batch_of_many_moves_writes_each_event_once_in_order() {
        use FileState::*;
        let rows = 3 * EVENTS_PER_INSERT / 2 + 5;
        let names: Vec<String> = (0..rows).map(|i| format!("b{i}.epub")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_dir, db, run, writer, ids) = claimed(&names);
        let h = writer.handle();
        assert_eq!(ids.len(), rows);
        for (i, &id) in ids.iter().enumerate() {
            let mut t = mv(id, Pending, Checked);
            t.detail = (i % 2 == 0).then(|| format!("note {i}"));
            h.blocking_send(t);
        }
        for &id in &ids {
            h.blocking_send(mv(id, Checked, Hashed));
        }
        drop(h);
        let (stats, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
        // One transaction unless the machine stalled past the commit delay while sending.
        assert_eq!(stats.committed, 2 * rows as u64);

        let conn = db.conn().unwrap();
        let mut st = conn
            .prepare(
                "SELECT file_id, run_id, at, from_state || '>' || to_state || COALESCE(' ' || detail, '')
                 FROM events WHERE run_id = ?1 ORDER BY id",
            )
            .unwrap();
        let got: Vec<(i64, i64, i64, String)> = st
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(got.windows(2).all(|w| w[0].2 <= w[1].2) && got[0].2 > 0);
        let got: Vec<(i64, i64, String)> = got.into_iter().map(|(f, r, _, t)| (f, r, t)).collect();
        let want: Vec<(i64, i64, String)> = ids
            .iter()
            .enumerate()
            .flat_map(|(i, &id)| {
                let first = match i % 2 {
                    0 => format!("pending>checked note {i}"),
                    _ => "pending>checked".to_string(),
                };
                [(id, run, first), (id, run, "checked>hashed".into())]
            })
            .collect();
        assert_eq!(got, want);
    }

    /// A stage never parks a runtime worker waiting for the writer: with the writer stuck in
    /// its flush hook (a slow disk, a calibre commit) and its queue full, the senders on a
    /// two-worker runtime wait without holding a worker, so a timer on the same runtime (as the
    /// HTTP stall watchdog is) keeps ticking; once the hook returns, every move is committed.
    #[test]
    fn senders_wait_for_a_stuck_writer_without_parking_the_runtime() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::time::Duration;
        let names: Vec<String> = (0..64).map(|i| format!("w{i}.epub")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let tuning = WriterTuning {
            queue: 2,
            max_batch: 1,
            ..crate::tuning::Tuning::detect().writer
        };
        let (_dir, db, run, writer, ids) = claimed_with(&names, tuning);
        // The rows are claimed by `run`; a second writer of that run has the stuck hook.
        let (_, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
        let (release, released) = std::sync::mpsc::channel::<()>();
        let entered = Arc::new(AtomicBool::new(false));
        let in_hook = entered.clone();
        let hook: FlushHook = Box::new(move || {
            in_hook.store(true, Ordering::SeqCst);
            // Blocks until `release` is dropped; returns at once from then on.
            let _ = released.recv();
            Ok(())
        });
        let writer = Writer::start(&db, run, Some(hook), tuning).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = ticks.clone();
            rt.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(10));
                loop {
                    every.tick().await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let senders: Vec<_> = ids
            .chunks(16)
            .map(|chunk| {
                let (h, chunk) = (writer.handle(), chunk.to_vec());
                rt.spawn(async move {
                    for id in chunk {
                        let mut t = mv(id, FileState::Pending, FileState::Checked);
                        t.needs_flush = true;
                        h.send(t).await;
                    }
                })
            })
            .collect();
        let t0 = std::time::Instant::now();
        while !entered.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(30), "the hook never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The writer is stuck and its queue full: the senders wait. The timer goes on.
        let before = ticks.load(Ordering::SeqCst);
        let t0 = std::time::Instant::now();
        while ticks.load(Ordering::SeqCst) < before + 5 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = ticks.load(Ordering::SeqCst);
        drop(release);
        assert!(
            after >= before + 5,
            "the runtime froze while the writer was stuck: {} tick(s) in {:?}",
            after - before,
            t0.elapsed()
        );
        rt.block_on(async {
            for s in senders {
                tokio::time::timeout(Duration::from_secs(60), s)
                    .await
                    .expect("the senders finish once the writer goes on")
                    .unwrap();
            }
        });
        ticker.abort();
        let (stats, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
        assert_eq!(stats.committed, 64);
    }

    /// The writer's transactions are as large as the tuning it was started with says: seven
    /// moves, at most three per transaction, commit in three (and none waits for the delay,
    /// set far beyond the test).
    #[test]
    fn the_writer_commits_at_most_its_tunings_batch_per_transaction() {
        let names = ["t0", "t1", "t2", "t3", "t4", "t5", "t6"];
        let tuning = WriterTuning {
            max_batch: 3,
            max_delay: std::time::Duration::from_secs(3600),
            ..crate::tuning::Tuning::detect().writer
        };
        let (_dir, _db, _run, writer, ids) = claimed_with(&names, tuning);
        let h = writer.handle();
        for &id in &ids {
            h.blocking_send(mv(id, FileState::Pending, FileState::Checked));
        }
        drop(h);
        let (stats, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
        assert_eq!((stats.committed, stats.transactions), (7, 3));
    }

    /// Two rows through a real writer on a real state DB: the merged writes leave each row
    /// where its last move put it, with every value a move carried, and one event per move.
    #[test]
    fn merged_moves_leave_the_same_rows_and_events_as_one_by_one() {
        use FileState::*;
        let (_dir, db, run, writer, ids) = claimed(&["b0.epub", "b1.epub", "b2.epub"]);
        let h = writer.handle();
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        h.blocking_send(mv(a, Pending, Checked));
        h.blocking_send(mv(b, Pending, Checked));
        let mut hashed = mv(a, Checked, Hashed);
        hashed.sha1 = Some("s1".into());
        hashed.blake3 = Some("b3".into());
        hashed.hashed = true;
        hashed.bytes_read = 10;
        h.blocking_send(hashed);
        let mut failed = mv(b, Checked, Failed);
        failed.error = Some(Failure::new(
            crate::failure::FailureKind::Unreadable,
            "b1.epub: cannot read",
        ));
        h.blocking_send(failed);
        h.blocking_send(mv(a, Hashed, MetadataCached));
        let mut up = mv(a, MetadataCached, Uploaded);
        up.target_ref = Some("x/b0.epub".into());
        up.attempts = 1;
        up.bytes_sent = 10;
        h.blocking_send(up);
        // Row c is pending, not checked: the whole chain is refused and c stays pending.
        h.blocking_send(mv(c, Checked, Hashed));
        h.blocking_send(mv(c, Hashed, MetadataCached));
        drop(h);
        let (stats, fatal) = writer.finish();
        assert!(fatal.is_none(), "{fatal:?}");
        assert_eq!(stats.conflicts, 2);
        assert_eq!(stats.counters.files_hashed, 1);
        assert_eq!(stats.counters.files_uploaded, 1);
        assert_eq!(stats.counters.files_failed, 1);
        assert_eq!(stats.counters.bytes_sent, 10);

        let conn = db.conn().unwrap();
        // One row's columns, `-` for NULL.
        let row = |id: i64| -> String {
            conn.query_row(
                "SELECT state || ' ' || COALESCE(sha1, '-') || ' ' || COALESCE(blake3, '-')
                    || ' ' || COALESCE(target_ref, '-') || ' ' || COALESCE(error_kind, '-')
                    || ' ' || COALESCE(failed_from, '-') || ' ' || attempts
                 FROM files WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(row(a), "uploaded s1 b3 x/b0.epub - - 1");
        assert_eq!(row(b), "failed - - - unreadable checked 0");
        assert_eq!(row(c), "pending - - - - - 0");
        let events = |id: i64| -> Vec<String> {
            let mut st = conn
                .prepare("SELECT from_state || '>' || to_state || COALESCE(' ' || detail, '') FROM events WHERE file_id = ?1 AND run_id = ?2 ORDER BY id")
                .unwrap();
            st.query_map(params![id, run], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(
            events(a),
            [
                "pending>checked",
                "checked>hashed",
                "hashed>metadata_cached",
                "metadata_cached>uploaded"
            ]
        );
        assert_eq!(
            events(b),
            ["pending>checked", "checked>failed b1.epub: cannot read"]
        );
        assert!(events(c).is_empty());
    }
}
