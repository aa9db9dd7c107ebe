//! How far `bookferry verify` has got: files and bytes checked of the total counted up front,
//! the rate, and an ETA (by bytes: reading is the cost) — a bar redrawn on a terminal, a log
//! line every `--stats` interval otherwise, as `run` reports. Fed by the verify loop after each
//! batch; no thread of its own.

use crate::pipeline::progress::human_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct VerifyProgress {
    total_files: u64,
    total_bytes: u64,
    files: u64,
    bytes: u64,
    started: Instant,
    shown: Shown,
}

enum Shown {
    Nothing,
    Bar(ProgressBar),
    /// Without a terminal: a line every `interval`, the last at `last`.
    Lines {
        interval: Duration,
        last: Instant,
    },
}

impl VerifyProgress {
    /// `total`: the files and bytes this verify has to check. `quiet`: show nothing;
    /// `interval`: `--stats` (zero: no progress lines without a terminal).
    pub fn start(total: (u64, u64), quiet: bool, interval: Duration) -> VerifyProgress {
        let lines_off = interval.is_zero() && !std::io::stderr().is_terminal();
        let shown = if quiet || lines_off {
            Shown::Nothing
        } else if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(total.0), ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(
                ProgressStyle::with_template("verify [{bar:30}] {pos}/{len} files {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            Shown::Bar(bar)
        } else {
            Shown::Lines {
                interval,
                last: Instant::now(),
            }
        };
        VerifyProgress {
            total_files: total.0,
            total_bytes: total.1,
            files: 0,
            bytes: 0,
            started: Instant::now(),
            shown,
        }
    }

    /// `files` more files, of `bytes`, checked.
    pub fn add(&mut self, files: u64, bytes: u64) {
        self.files += files;
        self.bytes += bytes;
        let what = self.describe_bytes();
        match &mut self.shown {
            Shown::Nothing => {}
            Shown::Bar(bar) => {
                bar.set_position(self.files);
                bar.set_message(what);
            }
            Shown::Lines { interval, last } => {
                if last.elapsed() >= *interval {
                    *last = Instant::now();
                    tracing::info!(
                        "verify progress: {}/{} files, {what}",
                        self.files,
                        self.total_files
                    );
                }
            }
        }
    }

    /// The bar is finished (a log line has nothing to finish).
    pub fn finish(self) {
        if let Shown::Bar(bar) = self.shown {
            bar.finish_and_clear();
        }
    }

    /// "1.2 GiB of 4.0 GiB, 95.0 MiB/s, eta 31s".
    fn describe_bytes(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes as f64 / secs;
        let eta = if rate > 0.0 && self.total_bytes > self.bytes {
            human_duration(Duration::from_secs_f64(
                (self.total_bytes - self.bytes) as f64 / rate,
            ))
        } else {
            "-".into()
        };
        format!(
            "{} of {}, {}/s, eta {eta}",
            human_bytes(self.bytes),
            human_bytes(self.total_bytes),
            human_bytes(rate as u64)
        )
    }
}

/// "45s", "3m05s", "2h04m".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_hours_minutes_and_seconds() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(7440)), "2h04m");
    }
}
