//! State DB engine benchmark (`cargo bench --bench state_db`, `harness = false`).
//!
//! Measures, through the library API only (no files, no target):
//!   1. scan inserts: N rows written with `scan_store::write_batch` (1000 rows per batch) → rows/s;
//!   2. claims: every row claimed through the writer (`WriterHandle::claim`, 1000 per claim);
//!   3. transitions: pending → checked → hashed → metadata_cached → uploaded for every row
//!      (4·N moves, with hashes, metadata JSON and target path like a real run), sent through the
//!      `Writer` and timed until `Writer::finish` returns → transitions/s (goal ≥ 20k/s);
//!   4. peak RSS of the process (VmHWM from /proc/self/status).
//!
//! Prints figures only; it asserts nothing about time. N: env BENCH_STATE_ROWS (default 100000).

use bookferry::metadata::{Metadata, Origin};
use bookferry::state::rows::{ScannedFile, SourceKind};
use bookferry::state::scan_store::{self, ScanBatch};
use bookferry::state::writer::{Transition, Writer};
use bookferry::state::{runs, Db, FileState};
use bookferry::tuning::Tuning;
use std::path::PathBuf;
use std::time::Instant;

const SCAN_BATCH: usize = 1000;
const CLAIM_BATCH: usize = 1000;

fn main() {
    let n: usize = std::env::var("BENCH_STATE_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let db = Db::open(&path).expect("open state DB");
    println!("state_db bench: {n} rows, DB {}", path.display());

    // 1. Scan inserts.
    let started = Instant::now();
    {
        let mut conn = db.conn().expect("conn");
        let scan_run = runs::begin(&conn, "scan", &[]).expect("begin scan run");
        let mut next = 0;
        while next < n {
            let end = (next + SCAN_BATCH).min(n);
            let batch = ScanBatch {
                new: (next..end).map(scanned).collect(),
                ..Default::default()
            };
            scan_store::write_batch(&mut conn, scan_run, &batch).expect("write_batch");
            next = end;
        }
        runs::end(&mut conn, scan_run, 0, "finished").expect("end scan run");
    }
    let scan_s = started.elapsed().as_secs_f64();
    println!(
        "scan_store::write_batch: {n} rows in {scan_s:.2} s = {:.0} rows/s",
        n as f64 / scan_s
    );

    // 2 and 3. A run: claim every row through the writer, then move every row to uploaded.
    let run = runs::begin(&db.conn().expect("conn"), "run", &[]).expect("begin run");
    let flushes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let f2 = flushes.clone();
    let hook = Box::new(move || {
        f2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    let writer =
        Writer::start(&db, run, Some(hook), Tuning::detect().writer).expect("start writer");
    let handle = writer.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut claims = 0;
    rt.block_on(async {
        let mut after = 0;
        loop {
            let rows = handle.claim(after, CLAIM_BATCH).await.expect("claim");
            let Some(last) = rows.last() else { break };
            after = last.id;
            claims += 1;
            ids.extend(rows.iter().map(|r| r.id));
        }
    });
    let claim_s = started.elapsed().as_secs_f64();
    println!(
        "claim: {} rows in {claims} claims, {claim_s:.2} s = {:.0} rows/s",
        ids.len(),
        ids.len() as f64 / claim_s
    );

    let started = Instant::now();
    let stages = [
        FileState::Pending,
        FileState::Checked,
        FileState::Hashed,
        FileState::MetadataCached,
        FileState::Uploaded,
    ];
    // Stage by stage over claim-sized slices. After each slice (4000 moves = two full writer
    // batches, so no extra commits) wait for the writer to catch up: the writer's channel is
    // unbounded, and a real run's producers are held back by I/O; without this the bench would
    // measure a 400k-message queue in memory rather than the writer.
    let mut sent = 0u64;
    for chunk in ids.chunks(CLAIM_BATCH) {
        for w in stages.windows(2) {
            for &id in chunk {
                handle.blocking_send(transition(id, w[0], w[1]));
                sent += 1;
            }
        }
        rt.block_on(handle.flush());
    }
    let send_s = started.elapsed().as_secs_f64();
    drop(handle);
    let (stats, fatal) = writer.finish();
    let total_s = started.elapsed().as_secs_f64();
    if let Some(e) = fatal {
        eprintln!("writer error: {e}");
        std::process::exit(1);
    }
    println!(
        "transitions: {sent} sent (paced) in {send_s:.2} s; committed {} in {} transactions ({} conflicts, {} target flushes) by finish at {total_s:.2} s",
        stats.committed,
        stats.transactions,
        stats.conflicts,
        flushes.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "transitions/s: {:.0}  (goal >= 20000)",
        stats.committed as f64 / total_s
    );
    let db_mib = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    println!("state DB size: {db_mib:.1} MiB (plus WAL)");
    println!("peak RSS (VmHWM): {} KiB", vm_hwm_kib());
    println!(
        "SUMMARY rows={n} scan_rows_per_s={:.0} claim_rows_per_s={:.0} transitions_per_s={:.0} peak_rss_kib={}",
        n as f64 / scan_s,
        ids.len() as f64 / claim_s,
        stats.committed as f64 / total_s,
        vm_hwm_kib()
    );
}

/// A scanned file like a folder scan records it (nested author/title folders, an epub).
fn scanned(i: usize) -> ScannedFile {
    let source_ref = format!(
        "Author {:04}/Title {i:06}/Title {i:06} - Author.epub",
        i / 100
    );
    ScannedFile {
        source_kind: SourceKind::Dir,
        path: PathBuf::from("/library").join(&source_ref),
        source_ref,
        size: 300_000 + (i as u64 % 1000),
        mtime_ns: 1_700_000_000_000_000_000 + i as i64,
        format: "epub".into(),
        metadata: None,
    }
}

/// One move with what that stage of a real run learns.
fn transition(id: i64, from: FileState, to: FileState) -> Transition {
    let mut t = Transition::new(id, from, to);
    match to {
        FileState::Hashed => {
            t.sha1 = Some(format!("{id:040x}"));
            t.blake3 = Some(format!("{id:064x}"));
            t.hashed = true;
            t.bytes_read = 300_000;
        }
        FileState::MetadataCached => {
            let md = Metadata {
                title: Some(format!("Title {id:06}")),
                authors: vec![format!("Author {:04}", id / 100)],
                language: Some("en".into()),
                ..Default::default()
            };
            t.metadata = Some((md, Origin::Embedded));
        }
        FileState::Uploaded => {
            t.target_ref = Some(format!(
                "Author {:04}/Title {id:06}/Title {id:06} - Author {:04}.epub",
                id / 100,
                id / 100
            ));
            t.bytes_sent = 300_000;
            t.needs_flush = true;
        }
        _ => {}
    }
    t
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
