//! Live progress of a run: counters the stages bump, and a reporter that shows them as bars on a
//! terminal or, otherwise, as a plain line every `--stats` interval (default a minute).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a progress line comes without a terminal, unless `--stats` says otherwise.
pub const DEFAULT_STATS: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Never below zero.
    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// What the stages have done in this run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Active rows at the start (files this run has to finish) and their bytes.
    pub total: Counter,
    pub total_bytes: Counter,
    pub claimed: Counter,
    pub checked: Counter,
    /// Rows the check stage skipped (the target had a file of their name and size).
    pub check_skipped: Counter,
    pub hashed: Counter,
    pub hashed_bytes: Counter,
    pub metadata: Counter,
    pub uploaded: Counter,
    pub uploaded_bytes: Counter,
    pub skipped: Counter,
    pub skipped_bytes: Counter,
    pub failed: Counter,
    pub in_flight: Counter,
    /// The current limit on transfers in flight.
    pub limit: Counter,
    pub would_send: Counter,
    pub would_send_bytes: Counter,
    /// Bytes read from source files (hashing, streaming, comparing).
    pub bytes_read: Counter,
}

impl Progress {
    pub fn finished(&self) -> u64 {
        self.uploaded.get() + self.skipped.get() + self.failed.get() + self.would_send.get()
    }
}

/// How often the bars are drawn, and how often the line reporter looks at the clock.
const BARS_TICK: Duration = Duration::from_millis(200);
const LINES_TICK: Duration = Duration::from_millis(100);

/// Shows progress until stopped.
pub struct Reporter {
    stop: Arc<Stop>,
    join: Option<std::thread::JoinHandle<()>>,
}

/// The reporter's stop signal: its thread waits on it between ticks, so a stop ends the wait at
/// once. (It slept a whole tick instead, and every run's end waited for that: up to 100 ms
/// without a terminal, 200 ms with bars.)
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn set(&self) {
        if let Ok(mut s) = self.stopped.lock() {
            *s = true;
        }
        self.wake.notify_all();
    }

    /// Wait up to `tick`; whether the reporter was stopped.
    fn wait(&self, tick: Duration) -> bool {
        let Ok(s) = self.stopped.lock() else {
            return true;
        };
        match self.wake.wait_timeout_while(s, tick, |stopped| !*stopped) {
            Ok((s, _)) => *s,
            Err(_) => true,
        }
    }
}

impl Reporter {
    /// On a terminal, unless `quiet`: bars. Otherwise a log line every `interval` (none when
    /// it is zero): under `quiet` it reaches the `--log-file` only (-q quiets the terminal,
    /// never the log file).
    pub fn start(progress: Arc<Progress>, quiet: bool, interval: Duration) -> Reporter {
        let bars_here = std::io::stderr().is_terminal() && !quiet;
        Reporter::start_with(progress, bars_here, interval, LINES_TICK)
    }

    fn start_with(
        progress: Arc<Progress>,
        bars_here: bool,
        interval: Duration,
        lines_tick: Duration,
    ) -> Reporter {
        let stop = Arc::new(Stop::default());
        if !bars_here && interval.is_zero() {
            return Reporter { stop, join: None };
        }
        let stop2 = stop.clone();
        let join = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                if bars_here {
                    bars(&progress, &stop2)
                } else {
                    lines(&progress, &stop2, interval, lines_tick)
                }
            })
            .ok();
        Reporter { stop, join }
    }

    pub fn stop(mut self) {
        self.stop.set();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The bars being drawn, if any: a log line for the terminal is written with them put aside
/// ([`TerminalWriter`]), so no line tears a bar.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Standard error for log lines: while bars are drawn, each write is made with the bars
/// suspended (cleared, then drawn again below the line).
pub struct TerminalWriter;

impl Write for TerminalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bars = BARS.lock().ok().and_then(|b| b.clone());
        match bars {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn bars(p: &Progress, stop: &Stop) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    if let Ok(mut bars) = BARS.lock() {
        *bars = Some(multi.clone());
    }
    // `wide_msg` takes what the terminal's width leaves, cut to fit: a bar never wraps into a
    // second line that a redraw would leave behind.
    let style = ProgressStyle::with_template(
        "{prefix:>9} [{bar:25}] {pos}/{len} files, eta {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let make = |name: &str| {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(style.clone());
        b.set_prefix(name.to_string());
        b
    };
    let check = make("check");
    let hash = make("hash");
    let transfer = make("transfer");
    let started = Instant::now();
    let draw = || {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let total = p.total.get();
        for b in [&check, &hash, &transfer] {
            b.set_length(total);
        }
        // Never above the total: a row is counted once per bar (a row skipped by the content
        // check was checked first, so `skipped` is not added here).
        check.set_position((p.checked.get() + p.check_skipped.get()).min(total));
        hash.set_position(p.hashed.get().min(total));
        hash.set_message(format!(
            "{}, {}/s",
            human_bytes(p.hashed_bytes.get()),
            human_bytes((p.hashed_bytes.get() as f64 / secs) as u64)
        ));
        transfer.set_position(p.finished().min(total));
        transfer.set_message(format!(
            "{:.0} files/s, {} sent, {} skipped, {} failed, {}/{} in flight",
            p.finished() as f64 / secs,
            human_bytes(p.uploaded_bytes.get()),
            p.skipped.get(),
            p.failed.get(),
            p.in_flight.get(),
            p.limit.get()
        ));
    };
    loop {
        draw();
        if stop.wait(BARS_TICK) {
            break;
        }
    }
    draw();
    // Left where they are: a run that stopped early never shows a bar at 100%.
    for b in [&check, &hash, &transfer] {
        b.abandon();
    }
    if let Ok(mut bars) = BARS.lock() {
        *bars = None;
    }
}

fn lines(p: &Progress, stop: &Stop, interval: Duration, tick: Duration) {
    let started = Instant::now();
    let mut last = Instant::now();
    while !stop.wait(tick) {
        if last.elapsed() < interval {
            continue;
        }
        last = Instant::now();
        let done = p.finished();
        let total = p.total.get();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 && total > done {
            format!("{:.0}s", (total - done) as f64 / rate)
        } else {
            "-".into()
        };
        tracing::info!(
            "progress: {done}/{total} files done ({} uploaded, {} skipped, {} failed), {} hashed, {:.1} files/s, {}/{} transfers in flight, eta {eta}",
            p.uploaded.get(),
            p.skipped.get(),
            p.failed.get(),
            human_bytes(p.hashed_bytes.get()),
            rate,
            p.in_flight.get(),
            p.limit.get()
        );
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stopping the reporter does not wait out its tick: a run's end waited up to 100 ms for
    /// it (200 ms on a terminal). With a tick of two minutes, a stop that waited for it would
    /// take those minutes; it must take well under one.
    #[test]
    fn stopping_the_reporter_does_not_wait_for_its_tick() {
        let progress = Arc::new(Progress::default());
        let r = Reporter::start_with(
            progress,
            false,
            Duration::from_secs(3600),
            Duration::from_secs(120),
        );
        assert!(r.join.is_some(), "a line reporter thread runs");
        let t0 = Instant::now();
        r.stop();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(60), "stop took {took:?}");
    }
}
