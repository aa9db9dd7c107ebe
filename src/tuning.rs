//! Tuning: every number that sizes a run's threads, queues, batches and memory, in one place,
//! with defaults derived from the machine (its cores and memory) and the command line's
//! overrides. On a 2-core machine with 4 GiB or more, every default is the value the engine
//! was tuned with; each field says what its default is, why, and how it scales. Each layer gets
//! the part it needs (`state::writer::Writer::start` the writer's, `pipeline::scan::scan_source`
//! the scan's, the pipeline its own, `target::Target::open` the transfers'); this module knows
//! none of them.

use std::num::NonZeroUsize;
use std::time::Duration;

/// What the defaults are derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// CPUs this process may use (`std::thread::available_parallelism`, which heeds CPU
    /// affinity and cgroup quotas).
    pub cores: usize,
    /// Physical memory in bytes (`MemTotal` in `/proc/meminfo`), if it could be read.
    pub memory: Option<u64>,
}

impl Machine {
    /// This machine. Cores default to 2 when they cannot be known.
    pub fn detect() -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(2, NonZeroUsize::get),
            memory: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| mem_total(&text)),
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let value = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// What the command line sets instead of the machine's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--checkers`.
    pub checkers: Option<usize>,
    /// `--buffer-memory`, in bytes.
    pub buffer_memory: Option<u64>,
}

/// Every tunable number of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    pub threads: ThreadTuning,
    pub pipeline: PipelineTuning,
    pub scan: ScanTuning,
    pub writer: WriterTuning,
    pub transfers: TransferTuning,
}

/// The async runtime's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadTuning {
    /// Async worker threads: the stages' hand-offs, the claimer, an HTTP target's requests
    /// (TLS included). Default: one per core, at least 2 (2 on 2 cores). No file is read or
    /// hashed on them, so more than the cores would only add thread switches.
    pub workers: usize,
    /// The most blocking threads for a folder or calibre target, whose whole run is CPU and
    /// local-disk work on blocking threads: the scan, at most `checkers` hash groups at once,
    /// and one more for the rest (content queries, placing). Default: `checkers` + 2 (5 on 2
    /// cores); it scales with `checkers`. More only add thread switches (commit fc3643a timed
    /// the copy of bench/engine.sh with up to 64 threads against this; compare its copy rows,
    /// `bash bench/engine.sh`, built with this set higher).
    pub blocking_local: usize,
    /// The most blocking threads for an HTTP target, which reads the files it streams on
    /// blocking threads, one read per chunk of every upload in flight: those must not queue
    /// behind the hash groups. Default: one per upload the adaptive limit may allow
    /// (`transfers.http_max`, 64), and never fewer than a local target gets. It does not scale
    /// with the cores: the server decides how many uploads pay.
    pub blocking_http: usize,
}

/// The pipeline's concurrency, queues and buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineTuning {
    /// Hash groups (and large-file parses) at once, on blocking threads; `--checkers`.
    /// Default: one per core plus one (3 on 2 cores): a file's read waits on the disk while
    /// another's hash runs. Commit fa70894 measured copy mode 0.66 s with 2 against 0.61 s
    /// with 3 on 2 cores; to compare on a machine, time
    /// `bookferry run --from LIB --to OUT --keep-duplicates -q --checkers N` on
    /// `python3 tools/make-corpus.py LIB --files 2000 --avg-kib 256 --seed 3` (bench/engine.sh's
    /// copy corpus), runs interleaved, page cache warm.
    pub checkers: usize,
    /// Rows taken per claim, one small transaction on the writer thread. Default 512, fixed:
    /// the cost it amortizes is per transaction, not per core, and rows claimed early are only
    /// held longer.
    pub claim_batch: usize,
    /// Items queued from the claimer to the check stage, and from the check stage to the hash
    /// stage. Default: four claims (2048): the check stage asks the target about up to 1000
    /// rows per call, so a whole call's worth waits while the claimer's next batch comes.
    /// These items hold no file bytes, so the queue costs little memory; fixed.
    pub check_queue: usize,
    /// Items queued between the later stages (hash → content check → metadata → transfer).
    /// Default: one claim (512), fixed. An item here may hold a file's bytes, but those are
    /// bounded by `buffer_budget`, not by this queue.
    pub stage_queue: usize,
    /// Files up to this size are read into memory once: hashed, parsed and written from that
    /// buffer (larger ones are hashed, then read again to be placed or sent). Default 8 MiB,
    /// lowered when the budget is small so that a hash group of such files fits in it (else a
    /// group could wait forever for budget it holds itself): at most `buffer_budget` /
    /// `hash_group_files`, less the KiB [`buffer_kib`] adds to each file's share.
    pub buffer_limit: u64,
    /// Bytes of such buffers alive at once; `--buffer-memory`. Default: 1/16 of the memory, at
    /// most 256 MiB (so 256 MiB from 4 GiB up; 256 MiB when the memory is unknown). Never
    /// below `hash_group_files` KiB.
    pub buffer_budget: u64,
    /// The most files, and about the most bytes, hashed in one blocking task: files already
    /// queued go together, as a hand-off to a blocking thread per file was a measurable share
    /// of a local copy's CPU. Defaults 8 and 8 MiB, fixed.
    pub hash_group_files: usize,
    pub hash_group_bytes: u64,
}

/// The scan's transactions and lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanTuning {
    /// Rows in the scan's first transaction; each next one may hold twice as many, up to
    /// `batch`. A run's pipeline starts on the first files found while the walk goes on, so
    /// the first batches are small. Default 128, fixed.
    pub first_batch: usize,
    /// Rows written per scan transaction, at most. Default 2000, fixed: it sizes SQLite
    /// transactions, not work for the cores.
    pub batch: usize,
    /// Found files are compared with their recorded rows in one query once this many wait
    /// (fewer while the batch has less room); folders finished meanwhile are recorded after
    /// them. Default 256, fixed.
    pub lookup: usize,
    /// Books read from a calibre library's `metadata.db` per read transaction: their formats,
    /// with their metadata, are what a calibre scan holds in memory at once, and calibre's
    /// writers wait for one such read at most (`source::calibre`). Default 512, fixed: it sizes
    /// SQLite reads, not work for the cores.
    pub calibre_books: usize,
}

/// The state writer's queue and commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterTuning {
    /// Messages queued for the writer before senders wait: bounds the memory a slow state DB
    /// lets pile up (a move is a few hundred bytes, more with metadata). Default 16384, fixed.
    pub queue: usize,
    /// The most moves in one transaction. Default 2000, fixed: it sizes SQLite commits.
    pub max_batch: usize,
    /// The longest a move waits for its commit (so `status`, and a run killed at any moment,
    /// lag the work by no more). Default 100 ms, fixed.
    pub max_delay: Duration,
    /// How often the run's `heartbeat_at` is written. Default 2 s, fixed: well inside the 15 s
    /// after which `status` no longer calls a run alive.
    pub heartbeat: Duration,
}

/// Transfers in flight when `--transfers` is `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferTuning {
    /// A folder or calibre target's fixed limit. Default 8, fixed: the disk bounds it, not the
    /// cores, and local disks gain little past a few writers at once.
    pub local: usize,
    /// Where an HTTP target's adaptive limit starts (it climbs as the server takes more; see
    /// `target::limit`). Default 2, fixed.
    pub http_start: usize,
    /// The most an HTTP target's adaptive limit reaches. Default 64, fixed: a ceiling the
    /// server's answers keep the limit under; the server, not this machine, decides how many
    /// uploads at once pay.
    pub http_max: usize,
}

/// The share of the memory the buffer budget takes by default: 1/16.
const BUFFER_SHARE: u64 = 16;
/// The most the default buffer budget takes.
const BUFFER_BUDGET_CAP: u64 = 256 << 20;
/// The most a file read into memory may be.
const BUFFER_LIMIT_CAP: u64 = 8 << 20;

/// The buffer budget is counted in KiB: a file of `size` bytes read into memory holds this
/// many of them (its whole KiB, plus one).
pub fn buffer_kib(size: u64) -> u64 {
    size / 1024 + 1
}

impl Tuning {
    /// This machine's defaults, without overrides.
    pub fn detect() -> Tuning {
        Tuning::new(Machine::detect(), Overrides::default())
    }

    /// The defaults for `machine`, with the command line's `overrides`.
    pub fn new(machine: Machine, overrides: Overrides) -> Tuning {
        let cores = machine.cores.max(1);
        let checkers = overrides.checkers.map_or(cores + 1, |n| n.max(1));
        let transfers = TransferTuning {
            local: 8,
            http_start: 2,
            http_max: 64,
        };
        let blocking_local = checkers + 2;
        let claim_batch = 512;
        let hash_group_files = 8;
        let budget = overrides
            .buffer_memory
            .unwrap_or_else(|| default_buffer_budget(machine.memory))
            .max(hash_group_files as u64 * 1024);
        Tuning {
            threads: ThreadTuning {
                workers: cores.max(2),
                blocking_local,
                blocking_http: transfers.http_max.max(blocking_local),
            },
            pipeline: PipelineTuning {
                checkers,
                claim_batch,
                check_queue: 4 * claim_batch,
                stage_queue: claim_batch,
                buffer_limit: buffer_limit(budget, hash_group_files),
                buffer_budget: budget,
                hash_group_files,
                hash_group_bytes: 8 << 20,
            },
            scan: ScanTuning {
                first_batch: 128,
                batch: 2000,
                lookup: 256,
                calibre_books: 512,
            },
            writer: WriterTuning {
                queue: 16_384,
                max_batch: 2000,
                max_delay: Duration::from_millis(100),
                heartbeat: Duration::from_secs(2),
            },
            transfers,
        }
    }
}

/// 1/16 of the memory, at most 256 MiB; 256 MiB when the memory is unknown.
fn default_buffer_budget(memory: Option<u64>) -> u64 {
    memory.map_or(BUFFER_BUDGET_CAP, |m| {
        (m / BUFFER_SHARE).min(BUFFER_BUDGET_CAP)
    })
}

/// The largest file read into memory: 8 MiB, or less so that `group_files` files of this size
/// (each holding [`buffer_kib`] of it) fit in `budget`.
fn buffer_limit(budget: u64, group_files: usize) -> u64 {
    let kib_per_file = budget / 1024 / group_files.max(1) as u64;
    (kib_per_file.saturating_sub(1) * 1024).min(BUFFER_LIMIT_CAP)
}

/// A size on the command line that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected a size like 512K, 64M or 1G")]
pub struct BadSize(pub String);

/// `64M` → 64 MiB: a number (a fraction too) with a suffix B, K, M or G, powers of 1024, and
/// KiB without one (as rclone's sizes). `--bwlimit` and `--buffer-memory` are written so.
pub fn parse_size(s: &str) -> Result<u64, BadSize> {
    let t = s.trim();
    let (num, unit) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('B') => (&t[..t.len() - 1], 1u64),
        Some('K') => (&t[..t.len() - 1], 1 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1 << 10),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * unit as f64) as u64),
        _ => Err(BadSize(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn on(cores: usize, memory: Option<u64>) -> Tuning {
        Tuning::new(Machine { cores, memory }, Overrides::default())
    }

    /// The machine the engine was tuned on (2 cores, 24 GiB) gets exactly the values that were
    /// constants before they were gathered here, so its benchmarks do not move.
    #[test]
    fn two_cores_and_24_gib_get_the_values_the_engine_was_tuned_with() {
        let t = on(2, Some(24 * GIB));
        assert_eq!(
            t,
            Tuning {
                threads: ThreadTuning {
                    workers: 2,
                    blocking_local: 5,
                    blocking_http: 64,
                },
                pipeline: PipelineTuning {
                    checkers: 3,
                    claim_batch: 512,
                    check_queue: 2048,
                    stage_queue: 512,
                    buffer_limit: 8 * MIB,
                    buffer_budget: 256 * MIB,
                    hash_group_files: 8,
                    hash_group_bytes: 8 * MIB,
                },
                scan: ScanTuning {
                    first_batch: 128,
                    batch: 2000,
                    lookup: 256,
                    calibre_books: 512,
                },
                writer: WriterTuning {
                    queue: 16_384,
                    max_batch: 2000,
                    max_delay: Duration::from_millis(100),
                    heartbeat: Duration::from_secs(2),
                },
                transfers: TransferTuning {
                    local: 8,
                    http_start: 2,
                    http_max: 64,
                },
            }
        );
        // Any 2-core machine from 4 GiB up, or whose memory is unknown, is the same.
        assert_eq!(on(2, Some(4 * GIB)), t);
        assert_eq!(on(2, None), t);
    }

    /// Threads and checkers follow the cores; the buffer budget follows the memory below
    /// 4 GiB; what sizes SQLite work, the disk or the server does not move.
    #[test]
    fn defaults_scale_with_cores_and_memory_as_documented() {
        let base = on(2, Some(24 * GIB));
        let t = on(8, Some(2 * GIB));
        assert_eq!(t.threads.workers, 8);
        assert_eq!(t.pipeline.checkers, 9);
        assert_eq!(t.threads.blocking_local, 11);
        assert_eq!(t.threads.blocking_http, 64);
        assert_eq!(t.pipeline.buffer_budget, 128 * MIB);
        assert_eq!(t.pipeline.buffer_limit, 8 * MIB);
        assert_eq!(
            (t.scan, t.writer, t.transfers),
            (base.scan, base.writer, base.transfers)
        );
        let fixed = |p: PipelineTuning| {
            (
                p.claim_batch,
                p.check_queue,
                p.stage_queue,
                p.hash_group_files,
                p.hash_group_bytes,
            )
        };
        assert_eq!(fixed(t.pipeline), fixed(base.pipeline));

        // One core still gets two workers (as before); checkers are one more than the cores.
        let one = on(1, Some(24 * GIB));
        assert_eq!((one.threads.workers, one.pipeline.checkers), (2, 2));
        assert_eq!(one.threads.blocking_local, 4);

        // A small machine: the budget shrinks, and so does the largest file read whole, so a
        // hash group of them still fits.
        let small = on(2, Some(512 * MIB));
        assert_eq!(small.pipeline.buffer_budget, 32 * MIB);
        assert_eq!(small.pipeline.buffer_limit, 4 * MIB - 1024);

        // So many hash groups that a local target would get more blocking threads than an
        // HTTP target's 64: the HTTP target gets as many.
        let big = on(96, Some(256 * GIB));
        assert_eq!(big.threads.blocking_http, big.threads.blocking_local);
        assert_eq!(big.threads.blocking_local, 99);
        assert_eq!(big.pipeline.buffer_budget, 256 * MIB);
    }

    #[test]
    fn the_command_line_overrides_checkers_and_the_buffer_budget() {
        let t = Tuning::new(
            Machine {
                cores: 2,
                memory: Some(24 * GIB),
            },
            Overrides {
                checkers: Some(6),
                buffer_memory: Some(MIB),
            },
        );
        assert_eq!(t.pipeline.checkers, 6);
        assert_eq!(t.threads.blocking_local, 8);
        assert_eq!(t.pipeline.buffer_budget, MIB);
        assert_eq!(t.pipeline.buffer_limit, 127 * 1024);
        // No buffer memory at all: only empty files are held, and a group of them fits.
        let none = Tuning::new(
            Machine {
                cores: 2,
                memory: None,
            },
            Overrides {
                checkers: Some(0),
                buffer_memory: Some(0),
            },
        );
        assert_eq!(none.pipeline.checkers, 1);
        assert_eq!(none.pipeline.buffer_budget, 8 * 1024);
        assert_eq!(none.pipeline.buffer_limit, 0);
    }

    #[test]
    fn sizes_are_powers_of_1024_and_kib_without_a_suffix() {
        assert_eq!(parse_size("256M"), Ok(256 * MIB));
        assert_eq!(parse_size("1g"), Ok(GIB));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("100"), Ok(100 * 1024));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in ["", "M", "lots", "-1M", "inf", "NaN"] {
            assert_eq!(parse_size(bad), Err(BadSize(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683568 kB\nMemFree:          476024 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_683_568 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots\n"), None);
    }

    proptest! {
        /// Whatever the budget, a hash group of files at the limit gets its share of the
        /// budget (which counts KiB, at least one): the group never waits for budget that only
        /// its own files hold.
        #[test]
        fn a_hash_group_at_the_limit_fits_in_any_budget(
            memory in 0u64..(64 * GIB),
            given in proptest::option::of(0u64..(2 * GIB)),
            cores in 1usize..256,
        ) {
            let t = Tuning::new(
                Machine { cores, memory: Some(memory) },
                Overrides { checkers: None, buffer_memory: given },
            );
            let p = t.pipeline;
            let budget_kib = (p.buffer_budget / 1024).max(1);
            prop_assert!(p.hash_group_files as u64 * buffer_kib(p.buffer_limit) <= budget_kib);
            prop_assert!(p.buffer_limit <= 8 * MIB);
            prop_assert!(p.buffer_budget <= 256 * MIB || given.is_some());
        }
    }
}
