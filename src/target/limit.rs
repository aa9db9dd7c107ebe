//! Pacing for a target: the concurrency limit on transfers (fixed, or adaptive: additive increase
//! while latency holds, multiplicative decrease on overload — 429/503/timeouts), and token
//! buckets for `--bwlimit` (bytes/s) and `--tpslimit` (requests/s).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How many transfers may be in flight.
///
/// Adaptive mode: slow start (one more slot per success) until the first sign of overload or
/// until latency grows past twice the best seen, then one more slot per round of successes —
/// but never more than one slot above the most requests that have succeeded together, so the
/// limit climbs one proven step at a time instead of racing ahead of the server's first answers
/// (a server taking 4 then sees one request too many, not five).
/// An overload answer (429/503/timeout) sets the limit to the requests in flight that were not
/// refused — the server's real capacity — and remembers it as a ceiling, probed again by one
/// slot only after a quiet spell, so a server that refuses rather than queues is not knocked
/// over again and again.
///
/// A server may also refuse at random, whatever the load (a proxy in front of it, workers shared
/// with other clients): a refusal of a request that started with no more of ours in flight than
/// the server took before cannot be ours to blame. After [`REFUSALS_WITHIN_CEILING`] such
/// refusals close together the limiter stops reading a refusal as the server's capacity (before, each one
/// lowered the limit by one and fixed it as the ceiling, down to a single transfer: 0.10× of
/// such a server's capacity): the ceiling goes, each success adds a slot again (still at most
/// one above what has succeeded together) and each refusal takes one away, so the limit settles
/// where refusals would be as many as successes — a server that really is full refuses more.
pub struct Limiter {
    adaptive: bool,
    max: usize,
    state: Mutex<LimitState>,
    in_flight: AtomicUsize,
    /// Transfers waiting for a slot: the work one more slot would have.
    waiting: AtomicUsize,
    released: Notify,
    /// Transfers holding no slot while they wait out a refusal (`Retry-After` or backoff): the
    /// pipeline hands the target more work while they rest (see [`Limiter::rest`]).
    resting: AtomicUsize,
    /// Woken when a transfer begins to rest.
    rests: Notify,
}

struct LimitState {
    limit: f64,
    /// The best latency seen lately (slowly forgotten), the yardstick for "latency holds".
    base_latency: Option<Duration>,
    /// Still doubling: no overload or latency growth seen yet.
    slow_start: bool,
    /// The capacity the server showed at its last overload answer.
    ceiling: Option<f64>,
    last_overload: Instant,
    successes_since_overload: u64,
    /// The most requests of ours in flight at once (counted when one started) that succeeded.
    proven: usize,
    /// What the server took at its last overload answer: the ceiling without its probes.
    took: Option<f64>,
    /// Refusals of requests that started with no more of ours in flight than `took`, counted
    /// while they come less than [`WITHIN_WINDOW`] successes apart.
    refused_within_ceiling: u32,
    successes_since_within: u64,
    /// The server refuses whatever the load: a refusal costs one slot, not the ceiling.
    refuses_at_random: bool,
}

/// Refusals within the ceiling, each less than [`WITHIN_WINDOW`] successes after the last, after
/// which the server is taken to refuse at random. One or two could be a server whose capacity
/// shrank for a moment (other clients) or requests that reached it in another order than they
/// started; a server that refuses only above its capacity sends no run of them (profile 1 of
/// `BENCH_UPLOAD_PROFILES=1 cargo bench --bench upload`: 50 ms per upload, 503 above 8).
const REFUSALS_WITHIN_CEILING: u32 = 3;
const WITHIN_WINDOW: u64 = 100;

/// A quiet spell after which one more slot above the ceiling is tried.
const PROBE_AFTER: Duration = Duration::from_secs(10);
/// … or after this many successes, but not sooner than `PROBE_MIN_INTERVAL`: a probe the server
/// refuses costs one transfer a `Retry-After` wait, and a fast server gives 500 successes in a
/// fraction of a second, so probes by count alone would keep it refusing (the 503 count that
/// `BENCH_UPLOAD_STORE_MS=0 cargo bench --bench upload` prints shows how often).
const PROBE_AFTER_SUCCESSES: u64 = 500;
const PROBE_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// One more in a count while alive (also when the future holding it is dropped).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn one_more(count: &'a AtomicUsize) -> Counted<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A transfer slot; given back on drop.
pub struct Slot {
    limiter: Arc<Limiter>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.limiter.released.notify_waiters();
    }
}

impl Limiter {
    pub fn fixed(n: usize) -> Arc<Limiter> {
        Limiter::new(false, n.max(1) as f64, n.max(1))
    }

    /// Start small and adapt to the server, up to `max`.
    pub fn adaptive(start: usize, max: usize) -> Arc<Limiter> {
        Limiter::new(true, start.max(1) as f64, max.max(1))
    }

    fn new(adaptive: bool, limit: f64, max: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            adaptive,
            max,
            state: Mutex::new(LimitState {
                limit,
                base_latency: None,
                slow_start: true,
                ceiling: None,
                last_overload: Instant::now(),
                successes_since_overload: 0,
                proven: 0,
                took: None,
                refused_within_ceiling: 0,
                successes_since_within: 0,
                refuses_at_random: false,
            }),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            released: Notify::new(),
            resting: AtomicUsize::new(0),
            rests: Notify::new(),
        })
    }

    pub fn current(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.limit as usize)
            .unwrap_or(1)
            .max(1)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Transfers resting now (see [`Limiter::rest`]).
    pub fn resting(&self) -> usize {
        self.resting.load(Ordering::SeqCst)
    }

    /// Wait `wait` before trying again, counted as resting meanwhile (also when the wait is
    /// dropped). A server that refuses at random with `Retry-After: 1` keeps a tenth of the
    /// transfers resting: if they counted against the pipeline's transfers in hand, those would
    /// hold back the ones the server takes (profile 3 of `BENCH_UPLOAD_PROFILES=1 cargo bench
    /// --bench upload`: 0.74× of capacity).
    pub async fn rest(&self, wait: Duration) {
        let _resting = Counted::one_more(&self.resting);
        self.rests.notify_waiters();
        tokio::time::sleep(wait).await;
    }

    /// Resolves when a transfer begins to rest after this call.
    pub async fn rested(&self) {
        self.rests.notified().await
    }

    /// Wait for a slot under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let _waiting = Counted::one_more(&self.waiting);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let limit = self.current();
            let n = self.in_flight.load(Ordering::SeqCst);
            if n < limit
                && self
                    .in_flight
                    .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Slot {
                    limiter: self.clone(),
                };
            }
            if n < limit {
                continue;
            }
            // Woken when a slot is given back or the limit rises (`on_success`); registered
            // before the limit and the count were read, so neither can slip by unseen.
            released.await;
        }
    }

    /// A request succeeded after `latency`; `concurrency` of ours were in flight when it
    /// started, itself included.
    pub fn on_success(&self, latency: Duration, concurrency: usize) {
        if !self.adaptive {
            return;
        }
        let before = self.current();
        self.grow(latency, concurrency);
        if self.current() > before {
            // More slots: the transfers waiting for one take them now.
            self.released.notify_waiters();
        }
    }

    fn grow(&self, latency: Duration, concurrency: usize) {
        let Ok(mut s) = self.state.lock() else { return };
        s.proven = s.proven.max(concurrency);
        let base = match s.base_latency {
            Some(b) if latency < b => latency,
            // Forget slowly, so a permanently slower server becomes the new normal.
            Some(b) => b.mul_f64(1.01).min(latency),
            None => latency,
        };
        s.base_latency = Some(base);
        s.successes_since_overload += 1;
        s.successes_since_within += 1;
        let latency_holds = latency <= base.mul_f64(2.0) + Duration::from_millis(20);
        if !latency_holds {
            s.slow_start = false;
            return;
        }
        if let Some(c) = s.ceiling {
            let since = s.last_overload.elapsed();
            let quiet = since >= PROBE_AFTER
                || (s.successes_since_overload >= PROBE_AFTER_SUCCESSES
                    && since >= PROBE_MIN_INTERVAL);
            // A probe costs the refused transfer a `Retry-After` wait: worth it only while
            // more work is queued than the slots take (not in a run's last files).
            let queued = self.waiting.load(Ordering::SeqCst) > s.limit as usize;
            if quiet && queued {
                // Try one more slot than the server took last time.
                s.ceiling = Some((c + 1.0).min(self.max as f64));
                s.successes_since_overload = 0;
                s.last_overload = Instant::now();
            }
        }
        let step = if s.slow_start || s.refuses_at_random {
            1.0
        } else {
            1.0 / s.limit.max(1.0)
        };
        let cap = s.ceiling.unwrap_or(self.max as f64).min(self.max as f64);
        let proven_step = (s.proven as f64 + 1.0).max(s.limit);
        s.limit = (s.limit + step).min(cap).min(proven_step);
    }

    /// The server refused for overload (429/503) or timed out, with `in_flight` requests of ours
    /// in flight when it answered (this one included): the others are what it could take.
    /// `started_with`: ours in flight when the refused request started, itself included (a
    /// request that started with no more in flight than the server took before was not refused
    /// for being one too many; counted when the answer came, others may have ended meanwhile).
    pub fn on_overload(&self, in_flight: usize, started_with: usize) {
        if !self.adaptive {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        if s.refuses_at_random {
            s.limit = (s.limit - 1.0).max(1.0);
            return;
        }
        if s.successes_since_within >= WITHIN_WINDOW {
            s.refused_within_ceiling = 0;
        }
        if s.took.is_some_and(|c| started_with as f64 <= c) {
            s.refused_within_ceiling += 1;
            s.successes_since_within = 0;
            if s.refused_within_ceiling >= REFUSALS_WITHIN_CEILING {
                tracing::debug!(
                    "the server refuses at random (refusals with no more in flight than it took before): the limit follows successes and refusals one by one"
                );
                s.refuses_at_random = true;
                s.ceiling = None;
            }
            return;
        }
        let took = (in_flight.saturating_sub(1)).max(1) as f64;
        s.limit = s.limit.min(took).max(1.0);
        s.ceiling = Some(s.limit);
        s.took = Some(s.limit);
        s.refused_within_ceiling = 0;
        s.slow_start = false;
        s.last_overload = Instant::now();
        s.successes_since_overload = 0;
    }
}

/// A token bucket: `take(n)` waits until `n` tokens are available at `rate` per second.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64) -> Arc<TokenBucket> {
        let burst = rate.max(1.0);
        Arc::new(TokenBucket {
            rate: rate.max(0.001),
            burst,
            state: Mutex::new((burst, Instant::now())),
        })
    }

    pub async fn take(&self, n: f64) {
        let wait = {
            let Ok(mut s) = self.state.lock() else { return };
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst);
            s.1 = now;
            s.0 -= n;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-s.0 / self.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why a `--bwlimit` rate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("--bwlimit {0:?}: expected a rate like 500K, 20M or 1G")]
    Malformed(String),
    #[error("--bwlimit {0:?}: must be more than 0")]
    NotPositive(String),
}

/// `20M` → 20 MiB/s: a size per second (see `tuning::parse_size`), as rclone's `--bwlimit`.
pub fn parse_rate(s: &str) -> Result<u64, RateError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(RateError::NotPositive(s.into()));
    }
    match crate::tuning::parse_size(t) {
        Ok(0) => Err(RateError::NotPositive(s.into())),
        Ok(v) => Ok(v),
        Err(_) => Err(RateError::Malformed(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("20M").unwrap(), 20 << 20);
        assert_eq!(parse_rate("512k").unwrap(), 512 << 10);
        assert_eq!(parse_rate("100").unwrap(), 100 << 10);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn the_limit_climbs_one_step_above_what_has_succeeded_together() {
        let l = Limiter::adaptive(2, 64);
        // Fast answers, but never more than 2 requests of ours in flight: the limit may offer
        // a third slot, no more (before, slow start raced to 64 on answers like these).
        for _ in 0..100 {
            l.on_success(Duration::from_millis(5), 2);
        }
        assert_eq!(l.current(), 3);
        // Once 3 succeed together, 4 is offered; and so on, a step per proven level.
        l.on_success(Duration::from_millis(5), 3);
        assert_eq!(l.current(), 4);
        for c in 4..10 {
            l.on_success(Duration::from_millis(5), c);
        }
        assert_eq!(l.current(), 10);
    }

    #[test]
    fn adaptive_limit_grows_on_success_and_shrinks_on_overload() {
        let l = Limiter::adaptive(2, 16);
        for _ in 0..100 {
            l.on_success(Duration::from_millis(10), l.current());
        }
        let grown = l.current();
        assert!(grown > 2, "{grown}");
        // The server refused with 5 of ours in flight: it took 4, and 4 becomes the ceiling.
        l.on_overload(5, 5);
        assert_eq!(l.current(), 4);
        for _ in 0..100 {
            l.on_success(Duration::from_millis(10), l.current());
        }
        assert_eq!(
            l.current(),
            4,
            "no climbing past the ceiling without a quiet spell"
        );
        for _ in 0..PROBE_AFTER_SUCCESSES {
            l.on_success(Duration::from_millis(10), l.current());
        }
        assert_eq!(
            l.current(),
            4,
            "no probe when no transfer waits for a slot (a run's last files)"
        );
        // Transfers queued for slots (as acquire() counts them): the probe is worth it, but
        // not within PROBE_MIN_INTERVAL of the overload, however many successes came.
        l.waiting.store(10, Ordering::SeqCst);
        for _ in 0..10 {
            l.on_success(Duration::from_millis(10), l.current());
        }
        assert_eq!(l.current(), 4, "no probe sooner than PROBE_MIN_INTERVAL");
        l.state.lock().unwrap().last_overload -= PROBE_MIN_INTERVAL;
        for _ in 0..10 {
            l.on_success(Duration::from_millis(10), l.current());
        }
        assert_eq!(l.current(), 5, "one probe slot after a quiet spell");
        // Latency growing past twice the best seen stops the growth.
        let q = Limiter::adaptive(2, 64);
        q.on_success(Duration::from_millis(10), q.current());
        let before = q.current();
        for _ in 0..50 {
            q.on_success(Duration::from_millis(100), q.current());
        }
        assert_eq!(q.current(), before);
        let f = Limiter::fixed(4);
        f.on_overload(9, 9);
        f.on_success(Duration::from_millis(1), 4);
        assert_eq!(f.current(), 4);
    }

    /// A server that refuses one request in ten whatever the load (profile 3 of
    /// `BENCH_UPLOAD_PROFILES=1 cargo bench --bench upload`): the limit climbs to the maximum
    /// anyway. Before, each refusal lowered it by one and fixed the ceiling there: it ended at 1.
    #[test]
    fn a_server_refusing_at_random_does_not_hold_the_limit_down() {
        let l = Limiter::adaptive(2, 64);
        for i in 0..1995 {
            let c = l.current();
            if i % 10 == 9 {
                l.on_overload(c, c);
            } else {
                l.on_success(Duration::from_millis(20), c);
            }
        }
        assert_eq!(l.current(), 64);
        // A server that refuses only above its capacity (8) keeps its ceiling.
        let h = Limiter::adaptive(2, 64);
        for _ in 0..2000 {
            let c = h.current();
            if c > 8 {
                h.on_overload(c, c);
            } else {
                h.on_success(Duration::from_millis(20), c);
            }
        }
        assert_eq!(h.current(), 8);
        // Its probes refused, answered when others of ours had ended (the count at the answer
        // is within what it took): the request started one too many, and the ceiling stays.
        let p = Limiter::adaptive(2, 64);
        p.waiting.store(100, Ordering::SeqCst);
        for _ in 0..20 {
            for _ in 0..600 {
                let c = p.current();
                if c > 8 {
                    p.on_overload(c - 2, c);
                } else {
                    p.on_success(Duration::from_millis(20), c);
                }
            }
            p.state.lock().unwrap().last_overload -= PROBE_AFTER;
        }
        assert!(!p.state.lock().unwrap().refuses_at_random);
        assert!(p.current() <= 9, "{}", p.current());
    }

    /// Paused time: the clock moves only when every task waits for a timer, so a waiter that
    /// polls shows as time passing, one woken by the raise as none.
    #[tokio::test(start_paused = true)]
    async fn a_rising_limit_wakes_a_waiter_at_once() {
        let l = Limiter::adaptive(1, 8);
        let _a = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "a slot beyond the limit of 1");
        let t0 = tokio::time::Instant::now();
        l.on_success(Duration::from_millis(5), 1);
        assert_eq!(l.current(), 2);
        let _b = waiter.await.unwrap();
        assert_eq!(l.in_flight(), 2);
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "the waiter took the new slot only after polling"
        );
    }

    #[tokio::test]
    async fn slots_are_bounded_by_the_limit() {
        let l = Limiter::fixed(2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        assert_eq!(l.in_flight(), 2);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let _c = waiter.await.unwrap();
        assert_eq!(l.in_flight(), 2);
    }

    /// A transfer resting after a refusal is counted while it waits, wakes whoever watches for
    /// rests, and is uncounted when the wait ends or is dropped (a cancelled run).
    #[tokio::test(start_paused = true)]
    async fn a_resting_transfer_is_counted_while_it_waits() {
        let l = Limiter::adaptive(2, 8);
        let watcher = {
            let l = l.clone();
            tokio::spawn(async move { l.rested().await })
        };
        tokio::task::yield_now().await;
        let resting = {
            let l = l.clone();
            tokio::spawn(async move { l.rest(Duration::from_secs(1)).await })
        };
        watcher.await.unwrap();
        assert_eq!(l.resting(), 1);
        resting.await.unwrap();
        assert_eq!(l.resting(), 0, "the wait is over");
        let dropped = {
            let l = l.clone();
            tokio::spawn(async move { l.rest(Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(l.resting(), 1);
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        assert_eq!(l.resting(), 0, "the wait was dropped");
    }
}
