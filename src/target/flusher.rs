//! The background flusher of a local target: a thread that keeps the target's filesystem writing
//! back what the run wrote (a `syncfs` at most every [`PAUSE`] while anything new was written),
//! so the device works while the CPU hashes instead of after, and that answers the state
//! writer's flush — "everything written before this call is durable" — with a `syncfs` that
//! started after the call.
//!
//! Durability never depends on the write count: it only decides whether an early `syncfs` is
//! worth starting (a `syncfs` of an idle filesystem can still cost a device cache flush). A
//! flush always waits for a fresh `syncfs`, which by then has little left to write.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shortest time between the starts of two background `syncfs` calls: short against the
/// state writer's commit delay (100 ms), as a flush only at each commit left the device idle
/// for the run's first commit interval while the CPU hashed. Commit 4051f9a measured it on a
/// 700 MB/s device; to compare values, run the copy rows of
/// `BENCH_WRITE_MBPS=700 bash bench/engine.sh` with this set to each.
pub const PAUSE: Duration = Duration::from_millis(20);

/// Make everything written to `dir`'s filesystem durable: one `syncfs`.
pub fn syncfs(dir: &File) -> io::Result<()> {
    Ok(rustix::fs::syncfs(dir)?)
}

/// Counts writes into the target; cheap to clone (each staging holds one).
#[derive(Debug, Clone, Default)]
pub struct WriteCount(Arc<AtomicU64>);

impl WriteCount {
    /// Note a write (a staged copy, a placement): the flusher starts writing it back soon.
    pub fn wrote(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes counted so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct State {
    /// `syncfs` calls started and finished; one at a time, in order.
    started: u64,
    finished: u64,
    /// A flush waits for a `syncfs` to start now rather than after the pause.
    wanted: bool,
    stop: bool,
    /// Set by the first failed `syncfs` (the data written before it may be lost): every later
    /// flush fails with it.
    failed: Option<(io::ErrorKind, String)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Flusher {
    shared: Arc<Shared>,
    writes: WriteCount,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Start the thread; `dir` is any open folder of the target's filesystem.
    pub fn start(dir: File) -> io::Result<Flusher> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let writes = WriteCount::default();
        let thread = {
            let (shared, writes) = (shared.clone(), writes.clone());
            std::thread::Builder::new()
                .name("target-flusher".into())
                .spawn(move || flush_loop(&dir, &shared, &writes))?
        };
        Ok(Flusher {
            shared,
            writes,
            thread: Some(thread),
        })
    }

    /// What writers into the target count their writes with.
    pub fn writes(&self) -> &WriteCount {
        &self.writes
    }

    /// Make everything written before this call durable: wait for a `syncfs` that starts
    /// after it. Fails if that one, or any before it, failed.
    pub fn flush(&self) -> io::Result<()> {
        let mut st = self.shared.lock();
        let need = st.started + 1;
        st.wanted = true;
        self.shared.changed.notify_all();
        loop {
            if let Some((kind, msg)) = &st.failed {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if st.finished >= need {
                return Ok(());
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Should the thread ever end by a panic, waiting flushes fail instead of waiting forever.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = self.0.lock();
            st.failed = Some((io::ErrorKind::Other, "the flusher thread stopped".into()));
            self.0.changed.notify_all();
        }
    }
}

fn flush_loop(dir: &File, shared: &Shared, writes: &WriteCount) {
    let _guard = PanicGuard(shared);
    let mut synced_writes = writes.count();
    let mut last_start = Instant::now();
    loop {
        let mut st = shared.lock();
        loop {
            if st.stop {
                return;
            }
            if st.wanted {
                break;
            }
            let since = last_start.elapsed();
            if writes.count() != synced_writes && since >= PAUSE {
                break;
            }
            // Writers do not wake this thread (no futex call per file): it looks again after
            // the pause.
            let wait = PAUSE.saturating_sub(since).max(Duration::from_millis(1));
            st = shared
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.wanted = false;
        st.started += 1;
        drop(st);
        synced_writes = writes.count();
        last_start = Instant::now();
        let res = syncfs(dir);
        let mut st = shared.lock();
        st.finished += 1;
        if let Err(e) = res {
            if st.failed.is_none() {
                tracing::debug!("syncfs of the target failed: {e}");
                st.failed = Some((e.kind(), e.to_string()));
            }
        }
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flush returns only after a `syncfs` that started after it was called; the background
    /// thread syncs on its own once something was written, and not while nothing was.
    #[test]
    fn a_flush_waits_for_a_syncfs_started_after_it_and_writes_start_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = Flusher::start(File::open(dir.path()).unwrap()).unwrap();
        let counts = || {
            let st = f.shared.lock();
            (st.started, st.finished)
        };
        // Nothing written: no background syncfs, however long we wait.
        std::thread::sleep(PAUSE * 5);
        assert_eq!(counts(), (0, 0));
        f.flush().unwrap();
        assert_eq!(counts(), (1, 1));
        f.flush().unwrap();
        assert_eq!(counts(), (2, 2), "each flush has a syncfs of its own");
        // A write: the thread syncs it without being asked.
        f.writes().wrote();
        let deadline = Instant::now() + Duration::from_secs(20);
        while counts().1 < 3 {
            assert!(
                Instant::now() < deadline,
                "no background syncfs after a write"
            );
            std::thread::sleep(PAUSE);
        }
    }

    /// Once a syncfs failed, every flush fails (what was written before may not be on disk).
    #[test]
    fn after_a_failed_syncfs_every_flush_fails() {
        let dir = tempfile::tempdir().unwrap();
        let f = Flusher::start(File::open(dir.path()).unwrap()).unwrap();
        f.shared.lock().failed = Some((io::ErrorKind::Other, "EIO".into()));
        assert!(f.flush().is_err());
        assert!(f.flush().is_err());
    }
}
