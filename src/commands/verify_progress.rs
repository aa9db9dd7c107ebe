//! How far `bookferry verify` has got: files and bytes checked of the total counted up front,
//! the rate, and an ETA (by bytes: reading is the cost) — a bar redrawn on a terminal, a log
//! line every `--stats` interval otherwise, as `run` reports. Fed by the verify loop after each
//! batch; no thread of its own.

use crate::pipeline::progress::human_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The default `--stats` interval when stderr is not a terminal.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

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
    /// `total`: the files and bytes this verify has to check. `quiet`: show nothing.
    pub fn start(total: (u64, u64), quiet: bool, interval: Option<Duration>) -> VerifyProgress {
        let shown = if quiet {
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
                interval: interval.unwrap_or(DEFAULT_INTERVAL),
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

/// A `--stats` value: a number with a unit (`500ms`, `30s`, `5m`, `1h`); a bare number is
/// seconds.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s, 5m or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: the unit is one of ms, s, m, h")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: the interval must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_their_units_and_nonsense_is_refused() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "0s", "5 minutes", "-1s", "1d"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(7440)), "2h04m");
    }
}
