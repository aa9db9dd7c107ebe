//! Durability barriers (`cargo bench --bench durability`, `harness = false`): what it costs to
//! make a batch of placed files durable before the commit that records them, two ways, side by
//! side on the same filesystem (BENCH_DIR, default the temp dir), each on an idle filesystem and
//! on a busy one (another process writing beside it without syncing, as a NAS's other services
//! do):
//!
//!   syncfs:  the flusher of today: `syncfs` at each commit (every BATCH files), which flushes the
//!            whole filesystem, other programs' dirty data included;
//!   scoped:  only what we wrote: each file's `fdatasync` handed to a pool of POOL threads as soon
//!            as it is written (its writeback starts at once, while the next files are written),
//!            and at each commit: wait for the batch's `fdatasync`s, then `fsync` each folder that
//!            got a new entry (std only: `File::sync_data`, `File::sync_all`).
//!
//! The workload is a calibre fill's: per book a new folder `Author/Title (id)/`, one file of
//! ~KIB KiB written and closed. Every run writes into a fresh tree (nothing deleted between timed
//! runs); ROUNDS interleaved rounds, medians; the spread (slowest / fastest) says how steady each
//! is. Prints figures only.
//!
//! Environment (defaults): BENCH_DUR_FILES=2000 BENCH_DUR_KIB=256 BENCH_DUR_BATCH=200
//!   BENCH_DUR_POOL=4 BENCH_DUR_ROUNDS=5 BENCH_DUR_BUSY_MIB=64 (the busy writer's chunk between
//!   pauses of 20 ms: ~1–3 GB/s of dirty data offered, the page cache's dirty limits decide)
//!   BENCH_DIR=$TMPDIR or /tmp

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Barrier {
    Syncfs,
    Scoped,
}

struct Config {
    files: usize,
    kib: usize,
    batch: usize,
    pool: usize,
}

/// A pool of threads calling `fdatasync` on the files handed to it.
struct SyncPool {
    tx: Option<mpsc::Sender<File>>,
    pending: Arc<(Mutex<usize>, std::sync::Condvar)>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SyncPool {
    fn new(n: usize) -> SyncPool {
        let (tx, rx) = mpsc::channel::<File>();
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        let threads = (0..n)
            .map(|_| {
                let (rx, pending) = (rx.clone(), pending.clone());
                std::thread::spawn(move || loop {
                    let f = match rx.lock().unwrap().recv() {
                        Ok(f) => f,
                        Err(_) => return,
                    };
                    f.sync_data().expect("fdatasync");
                    let (n, cv) = &*pending;
                    *n.lock().unwrap() -= 1;
                    cv.notify_all();
                })
            })
            .collect();
        SyncPool {
            tx: Some(tx),
            pending,
            threads,
        }
    }

    fn submit(&self, f: File) {
        *self.pending.0.lock().unwrap() += 1;
        self.tx.as_ref().unwrap().send(f).unwrap();
    }

    fn wait(&self) {
        let (n, cv) = &*self.pending;
        let mut g = n.lock().unwrap();
        while *g > 0 {
            g = cv.wait(g).unwrap();
        }
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One fill of `cfg.files` books into `root`, durable at each batch by `barrier`; wall time.
fn fill(root: &Path, cfg: &Config, barrier: Barrier, data: &[u8]) -> Duration {
    fs::create_dir_all(root).unwrap();
    let root_dir = File::open(root).unwrap();
    let pool = SyncPool::new(cfg.pool);
    let start = Instant::now();
    let mut new_dirs: Vec<PathBuf> = Vec::new();
    for i in 0..cfg.files {
        let author = root.join(format!("Author {}", i / 10));
        if i % 10 == 0 {
            fs::create_dir(&author).unwrap();
            new_dirs.push(root.to_path_buf());
        }
        let book = author.join(format!("Title {i} ({i})"));
        fs::create_dir(&book).unwrap();
        new_dirs.push(author.clone());
        new_dirs.push(book.clone());
        let mut f = File::create(book.join(format!("Title {i} - Author.epub"))).unwrap();
        f.write_all(data).unwrap();
        if barrier == Barrier::Scoped {
            pool.submit(f);
        }
        if (i + 1) % cfg.batch == 0 || i + 1 == cfg.files {
            match barrier {
                Barrier::Syncfs => rustix::fs::syncfs(&root_dir).unwrap(),
                Barrier::Scoped => {
                    pool.wait();
                    new_dirs.sort();
                    new_dirs.dedup();
                    for d in new_dirs.drain(..) {
                        File::open(&d).unwrap().sync_all().unwrap();
                    }
                }
            }
        }
    }
    start.elapsed()
}

/// Another program writing beside us without syncing, until stopped.
fn busy_writer(
    dir: &Path,
    chunk_mib: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let path = dir.join("busy-writer.bin");
    std::thread::spawn(move || {
        let chunk = vec![7u8; chunk_mib << 20];
        let mut written = 0u64;
        let mut f = File::create(&path).unwrap();
        while !stop.load(Ordering::Relaxed) {
            f.write_all(&chunk).unwrap();
            written += chunk.len() as u64;
            // Start over now and then, so the file stays a few GB at most.
            if written % (2 << 30) < chunk.len() as u64 {
                f = File::create(&path).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(f);
        let _ = fs::remove_file(&path);
        written
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let cfg = Config {
        files: env_num("BENCH_DUR_FILES", 2000),
        kib: env_num("BENCH_DUR_KIB", 256),
        batch: env_num("BENCH_DUR_BATCH", 200).max(1),
        pool: env_num("BENCH_DUR_POOL", 4).max(1),
    };
    let rounds: usize = env_num("BENCH_DUR_ROUNDS", 5).max(1);
    let busy_mib: usize = env_num("BENCH_DUR_BUSY_MIB", 64).max(1);
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("bookferry-durability.")
        .tempdir_in(&base)
        .unwrap();
    let data: Vec<u8> = (0..cfg.kib << 10).map(|i| (i * 31 % 251) as u8).collect();
    println!(
        "durability bench: {} books of {} KiB, a barrier every {} files, scoped pool of {} threads, {} rounds, in {}; load average {}",
        cfg.files,
        cfg.kib,
        cfg.batch,
        cfg.pool,
        rounds,
        work.path().display(),
        fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let mut n = 0;
    let mut summary = Vec::new();
    for busy in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = busy.then(|| busy_writer(work.path(), busy_mib, stop.clone()));
        if busy {
            std::thread::sleep(Duration::from_secs(2));
        }
        let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [Barrier::Syncfs, Barrier::Scoped]
            } else {
                [Barrier::Scoped, Barrier::Syncfs]
            };
            for b in order {
                n += 1;
                let t = fill(&work.path().join(format!("fill{n}")), &cfg, b, &data);
                times[(b == Barrier::Scoped) as usize].push(t.as_secs_f64());
            }
        }
        stop.store(true, Ordering::Relaxed);
        let busy_written = writer.map(|w| w.join().unwrap());
        let label = if busy {
            format!(
                "busy filesystem ({} MB written beside by another thread meanwhile)",
                busy_written.unwrap_or(0) >> 20
            )
        } else {
            "idle filesystem".to_string()
        };
        println!("\n== {label}");
        let mut meds = [0.0; 2];
        for (i, name) in ["syncfs", "scoped"].iter().enumerate() {
            let v = &times[i];
            let min = v.iter().copied().fold(f64::MAX, f64::min);
            let max = v.iter().copied().fold(0.0, f64::max);
            meds[i] = median(v.clone());
            println!(
                "  {name:<7} median {:.3} s (runs: {}) spread {:.2}×",
                meds[i],
                v.iter()
                    .map(|t| format!("{t:.3}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                max / min
            );
        }
        println!("  scoped / syncfs = {:.2}", meds[1] / meds[0]);
        summary.push((label, meds));
    }
    println!("\n== summary (median wall of a fill, s)");
    for (label, [s, c]) in summary {
        println!(
            "  {label:<70} syncfs {s:.3}  scoped {c:.3}  scoped/syncfs {:.2}",
            c / s
        );
    }
}
