//! The single writer: a dedicated thread that owns one connection and applies state transitions
//! in batched transactions (many rows per commit, each move with its `events` row), serves claim
//! requests, and keeps the run's heartbeat. Async code sends to it without blocking; it is the
//! only place the pipeline writes to SQLite.

use super::claim::claim_batch;
use super::rows::FileRow;
use super::runs::{self, RunCounters};
use super::{now_ms, Conn, Db, FileState, Result, StateError};
use crate::metadata::{Metadata, Origin};
use rusqlite::{params, TransactionBehavior};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages queued for the writer before senders wait (bounds memory if the state DB is slow).
const QUEUE: usize = 16_384;
/// The most transitions in one transaction.
const MAX_BATCH: usize = 2000;
/// The longest a transition waits for its commit.
const MAX_DELAY: Duration = Duration::from_millis(100);
const HEARTBEAT: Duration = Duration::from_secs(2);

/// One row's move from one state to another, with what the move learned.
#[derive(Debug, Clone, Default)]
pub struct Transition {
    pub file_id: i64,
    pub from: Option<FileState>,
    pub to: Option<FileState>,
    pub detail: Option<String>,
    pub sha1: Option<String>,
    pub blake3: Option<String>,
    pub metadata: Option<(Metadata, Origin)>,
    pub warnings: Option<String>,
    pub target_ref: Option<String>,
    pub duplicate_of: Option<i64>,
    pub skip_reason: Option<&'static str>,
    /// (error kind, one-line message naming the file).
    pub error: Option<(String, String)>,
    pub attempts: i64,
    /// Counted in the run's `files_hashed`.
    pub hashed: bool,
    pub bytes_read: u64,
    pub bytes_sent: u64,
    /// The target must flush what it wrote before this move is committed.
    pub needs_flush: bool,
}

impl Transition {
    pub fn new(file_id: i64, from: FileState, to: FileState) -> Transition {
        Transition {
            file_id,
            from: Some(from),
            to: Some(to),
            ..Default::default()
        }
    }
}

/// Called before committing a batch that holds moves with `needs_flush`.
pub type FlushHook = Box<dyn FnMut() -> std::io::Result<()> + Send>;

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
}

/// Cheap to clone; every clone sends to the same writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::SyncSender<Msg>,
    fatal: Arc<Mutex<Option<String>>>,
}

pub struct Writer {
    handle: WriterHandle,
    join: JoinHandle<WriterStats>,
}

impl Writer {
    pub fn start(db: &Db, run: i64, flush: Option<FlushHook>) -> Result<Writer> {
        let conn = db.conn()?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let fatal = Arc::new(Mutex::new(None));
        let fatal2 = fatal.clone();
        let join = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer_loop(conn, run, rx, flush, fatal2))
            .map_err(|e| StateError::WriterGone(e.to_string()))?;
        Ok(Writer {
            handle: WriterHandle { tx, fatal },
            join,
        })
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Commit everything sent so far and stop the thread.
    pub fn finish(self) -> (WriterStats, Option<String>) {
        let fatal = self.handle.fatal.clone();
        let _ = self.handle.tx.send(Msg::Shutdown);
        drop(self.handle);
        let stats = self.join.join().unwrap_or_default();
        let err = fatal.lock().map(|g| g.clone()).unwrap_or(None);
        (stats, err)
    }
}

impl WriterHandle {
    pub fn send(&self, t: Transition) {
        let _ = self.tx.send(Msg::Transition(Box::new(t)));
    }

    pub async fn claim(&self, after: i64, limit: usize) -> Result<Vec<FileRow>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Claim {
                after,
                limit,
                reply,
            })
            .map_err(|_| StateError::WriterGone("claim".into()))?;
        rx.await
            .map_err(|_| StateError::WriterGone(self.fatal().unwrap_or_default()))?
    }

    /// Wait until everything sent before is committed.
    pub async fn flush(&self) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// The error that stopped the writer (state DB disk full, target flush failed, …).
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|g| g.clone())
    }
}

struct LoopState {
    conn: Conn,
    run: i64,
    flush: Option<FlushHook>,
    fatal: Arc<Mutex<Option<String>>>,
    stats: WriterStats,
    dead: bool,
}

impl LoopState {
    fn commit(&mut self, pending: &mut Vec<Transition>) {
        if !pending.is_empty() && !self.dead {
            if let Err(e) = commit_batch(
                &mut self.conn,
                self.run,
                pending,
                &mut self.flush,
                &mut self.stats,
            ) {
                tracing::error!("state DB write failed: {e}");
                if let Ok(mut g) = self.fatal.lock() {
                    *g = Some(e);
                }
                self.dead = true;
            }
        }
        pending.clear();
    }
}

fn writer_loop(
    conn: Conn,
    run: i64,
    rx: mpsc::Receiver<Msg>,
    flush: Option<FlushHook>,
    fatal: Arc<Mutex<Option<String>>>,
) -> WriterStats {
    let mut st = LoopState {
        conn,
        run,
        flush,
        fatal,
        stats: WriterStats::default(),
        dead: false,
    };
    let mut pending: Vec<Transition> = Vec::new();
    let mut first_at = Instant::now();
    let mut last_beat = Instant::now();
    loop {
        let wait = if pending.is_empty() {
            HEARTBEAT
        } else {
            MAX_DELAY.saturating_sub(first_at.elapsed())
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Transition(t)) => {
                if pending.is_empty() {
                    first_at = Instant::now();
                }
                pending.push(*t);
                if pending.len() >= MAX_BATCH {
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
                        "the state DB writer stopped after an error".into(),
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
        if !st.dead && last_beat.elapsed() >= HEARTBEAT {
            let _ = runs::heartbeat(&st.conn, run);
            last_beat = Instant::now();
        }
    }
    st.stats
}

fn commit_batch(
    conn: &mut rusqlite::Connection,
    run: i64,
    batch: &[Transition],
    flush: &mut Option<FlushHook>,
    stats: &mut WriterStats,
) -> std::result::Result<(), String> {
    if batch.iter().any(|t| t.needs_flush) {
        if let Some(f) = flush.as_mut() {
            f().map_err(|e| format!("flushing the target before recording its files: {e}"))?;
        }
    }
    let mut counters = RunCounters::default();
    let mut conflicts = 0;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    {
        let mut update = tx
            .prepare_cached(
                "UPDATE files SET state = ?3,
                    sha1 = COALESCE(?5, sha1), blake3 = COALESCE(?6, blake3),
                    metadata = COALESCE(?7, metadata), metadata_origin = COALESCE(?8, metadata_origin),
                    warnings = COALESCE(?9, warnings), target_ref = COALESCE(?10, target_ref),
                    duplicate_of = COALESCE(?11, duplicate_of), skip_reason = COALESCE(?12, skip_reason),
                    error_kind = ?13, error = ?14,
                    failed_from = CASE WHEN ?3 = 'failed' THEN ?2 ELSE NULL END,
                    attempts = attempts + ?15, updated_at = ?16, state_changed_at = ?16
                 WHERE id = ?1 AND state = ?2 AND run_id = ?4",
            )
            .map_err(|e| e.to_string())?;
        let mut note = tx
            .prepare_cached(
                "UPDATE files SET warnings = COALESCE(?3, warnings), attempts = attempts + ?4,
                    updated_at = ?5 WHERE id = ?1 AND run_id = ?2",
            )
            .map_err(|e| e.to_string())?;
        let mut event = tx
            .prepare_cached(
                "INSERT INTO events (file_id, run_id, at, from_state, to_state, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|e| e.to_string())?;
        for t in batch {
            let (Some(from), Some(to)) = (t.from, t.to) else {
                // A note without a move (warnings, attempts).
                note.execute(params![t.file_id, run, t.warnings, t.attempts, now])
                    .map_err(|e| e.to_string())?;
                counters.bytes_read += t.bytes_read as i64;
                continue;
            };
            if !from.can_move_to(to) {
                tracing::error!(
                    "internal: refused move {from} → {to} for file {} (not on the diagram)",
                    t.file_id
                );
                conflicts += 1;
                continue;
            }
            let (md, origin) = match &t.metadata {
                Some((m, o)) => (serde_json::to_string(m).ok(), Some(o.as_str())),
                None => (None, None),
            };
            let (kind, msg) = match &t.error {
                Some((k, m)) => (Some(k.as_str()), Some(m.as_str())),
                None => (None, None),
            };
            let n = update
                .execute(params![
                    t.file_id,
                    from.as_str(),
                    to.as_str(),
                    run,
                    t.sha1,
                    t.blake3,
                    md,
                    origin,
                    t.warnings,
                    t.target_ref,
                    t.duplicate_of,
                    t.skip_reason,
                    kind,
                    msg,
                    t.attempts,
                    now
                ])
                .map_err(|e| e.to_string())?;
            if n == 0 {
                tracing::warn!(
                    "file {}: not in state {from} for this run; move to {to} dropped",
                    t.file_id
                );
                conflicts += 1;
                continue;
            }
            let detail = t.detail.clone().or_else(|| msg.map(str::to_string));
            event
                .execute(params![
                    t.file_id,
                    run,
                    now,
                    from.as_str(),
                    to.as_str(),
                    detail
                ])
                .map_err(|e| e.to_string())?;
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
    }
    runs::add_counters(&tx, run, &counters).map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    stats.committed += batch.len() as u64 - conflicts;
    stats.transactions += 1;
    stats.conflicts += conflicts;
    stats.counters.add(&counters);
    Ok(())
}
