//! Benchmark clients for a server speaking the upload protocol v1
//! (`shared/upload-protocol.md`). A bench `#[path]`-includes this file.
//!
//! It owns two reference clients and nothing else:
//! - [`capacity`] / [`best_capacity`]: a load generator that only POSTs
//!   pre-built multipart bodies (`sha1`, `metadata`, `skip_extraction=true`,
//!   `file`) at a fixed concurrency, honouring `Retry-After` — the most a
//!   client could get out of the server.
//! - [`baseline`]: a "seed-shaped" client like the slow scripts people use:
//!   N workers, one file at a time each: read and hash the file, one check
//!   call by sha1 for that single file, then upload without metadata and
//!   without `skip_extraction` (so the server extracts).
//!
//! Both return files per minute. Neither is the product's client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use sha1::{Digest, Sha1};

/// Attempts per file before it counts as failed (503/429 waits included).
const MAX_ATTEMPTS: u32 = 50;

/// A file ready to upload: its multipart body can be built once and re-sent.
#[derive(Clone, Debug)]
pub struct PreparedFile {
    /// Base name, as sent in Content-Disposition.
    pub filename: String,
    /// 40 lowercase hex chars.
    pub sha1: String,
    /// JSON text with at least a title and one author.
    pub metadata_json: String,
    pub bytes: Bytes,
}

impl PreparedFile {
    /// Hash `bytes` and give it metadata `{"title": <stem>, "authors": ["Bench Author"], ...}`.
    pub fn new(filename: &str, bytes: Bytes) -> PreparedFile {
        let stem = Path::new(filename)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(filename);
        let metadata = serde_json::json!({
            "title": stem,
            "authors": ["Bench Author"],
            "language": "en",
            "source": "bench",
        });
        PreparedFile {
            filename: filename.to_string(),
            sha1: sha1_hex(&bytes),
            metadata_json: metadata.to_string(),
            bytes,
        }
    }
}

/// Read every regular file under `dir` (recursively, sorted by path) into a
/// [`PreparedFile`]. The filename is the base name.
pub fn prepare_folder(dir: &Path) -> std::io::Result<Vec<PreparedFile>> {
    let mut paths = Vec::new();
    collect_files(dir, &mut paths)?;
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let bytes = std::fs::read(&p)?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(PreparedFile::new(&name, Bytes::from(bytes)));
    }
    Ok(out)
}

/// Every regular file under `dir`, recursively (unsorted).
pub fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if ft.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Write `count` files of `size` bytes each (distinct, deterministic content
/// from `seed`) as `dir/book-NNNNN.epub`; returns their paths.
pub fn write_synthetic_library(
    dir: &Path,
    count: usize,
    size: usize,
    seed: u64,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        let mut state = seed ^ ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.truncate(size);
        let p = dir.join(format!("book-{i:05}.epub"));
        std::fs::write(&p, &data)?;
        paths.push(p);
    }
    Ok(paths)
}

pub fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Build the multipart body for `f` (parts `sha1`, `metadata`,
/// `skip_extraction=true`, `file`); returns (content type, body).
pub fn multipart_body(f: &PreparedFile) -> (String, Bytes) {
    // The boundary carries the file's hash, so it is vanishingly unlikely to occur in it;
    // still, make sure.
    let mut boundary = format!("bookferry-bench-{}", f.sha1);
    let mut n = 0;
    while contains(&f.bytes, boundary.as_bytes()) {
        n += 1;
        boundary = format!("bookferry-bench-{}-{n}", f.sha1);
    }
    let mut body = Vec::with_capacity(f.bytes.len() + f.metadata_json.len() + 512);
    let mut text_part = |name: &str, value: &[u8]| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    };
    text_part("sha1", f.sha1.as_bytes());
    text_part("metadata", f.metadata_json.as_bytes());
    text_part("skip_extraction", b"true");
    let escaped = f.filename.replace('\\', "\\\\").replace('"', "\\\"");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{escaped}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&f.bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Seconds from `Retry-After` (delta-seconds form), else 1 s.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
}

fn http_client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(1))
        .timeout(Duration::from_secs(600))
        .build()
        .expect("build reqwest client")
}

#[derive(Clone, Debug, Default)]
pub struct CapacityResult {
    pub concurrency: usize,
    pub files: usize,
    /// 201 answers.
    pub created: u64,
    /// 200 (duplicate) answers.
    pub duplicates: u64,
    /// Files given up on after [`MAX_ATTEMPTS`] or a permanent error.
    pub failed: u64,
    /// 503/429 answers that were waited out.
    pub busy_retries: u64,
    /// Transport errors and 5xx that were retried.
    pub error_retries: u64,
    pub wall: Duration,
    /// (created + duplicates) per minute of wall time.
    pub files_per_min: f64,
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    busy_retries: AtomicU64,
    error_retries: AtomicU64,
}

/// POST each prepared body once (retrying the same body after 503/429 per
/// `Retry-After`, and after transport errors/5xx with a short backoff) at
/// `concurrency`. Bodies are built before the clock starts.
pub async fn capacity(
    base_url: &str,
    token: Option<&str>,
    files: Vec<PreparedFile>,
    concurrency: usize,
) -> CapacityResult {
    let concurrency = concurrency.max(1);
    let bodies: Arc<Vec<(String, Bytes)>> = Arc::new(files.iter().map(multipart_body).collect());
    let url = format!("{}/api/upload", base_url.trim_end_matches('/'));
    let client = http_client(concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let bodies = bodies.clone();
        let next = next.clone();
        let counters = counters.clone();
        let client = client.clone();
        let url = url.clone();
        let token = token.map(str::to_string);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((ct, body)) = bodies.get(i) else {
                    return;
                };
                post_until_done(&client, &url, token.as_deref(), ct, body, &counters).await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let wall = started.elapsed();
    let created = counters.created.load(Ordering::SeqCst);
    let duplicates = counters.duplicates.load(Ordering::SeqCst);
    CapacityResult {
        concurrency,
        files: files.len(),
        created,
        duplicates,
        failed: counters.failed.load(Ordering::SeqCst),
        busy_retries: counters.busy_retries.load(Ordering::SeqCst),
        error_retries: counters.error_retries.load(Ordering::SeqCst),
        wall,
        files_per_min: per_min(created + duplicates, wall),
    }
}

fn per_min(n: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        n as f64 * 60.0 / secs
    }
}

async fn post_until_done(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: &Bytes,
    counters: &Counters,
) {
    for attempt in 0..MAX_ATTEMPTS {
        let mut req = client
            .post(url)
            .header(CONTENT_TYPE, content_type)
            .body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let wait = retry_after(resp.headers());
                let _ = resp.bytes().await;
                match status {
                    StatusCode::CREATED => {
                        counters.created.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    StatusCode::OK => {
                        counters.duplicates.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                        counters.busy_retries.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(wait).await;
                    }
                    s if s.is_server_error() => {
                        counters.error_retries.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    _ => {
                        counters.failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
            Err(_) => {
                counters.error_retries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    counters.failed.fetch_add(1, Ordering::SeqCst);
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.min(5))
}

/// Run [`capacity`] once per concurrency in `concurrencies` (e.g. `[2, 4, 8, 16]`),
/// each against fresh server state from `fresh_server`, which returns the base
/// URL and a guard kept alive for that run (e.g. the server itself). Returns the
/// best run by files/min, and all runs.
pub async fn best_capacity<F, G>(
    mut fresh_server: F,
    token: Option<&str>,
    files: Vec<PreparedFile>,
    concurrencies: &[usize],
) -> (CapacityResult, Vec<CapacityResult>)
where
    F: FnMut() -> (String, G),
{
    let mut runs = Vec::with_capacity(concurrencies.len());
    for &c in concurrencies {
        let (base_url, guard) = fresh_server();
        let r = capacity(&base_url, token, files.clone(), c).await;
        drop(guard);
        runs.push(r);
    }
    let best = runs
        .iter()
        .max_by(|a, b| a.files_per_min.total_cmp(&b.files_per_min))
        .cloned()
        .unwrap_or_default();
    (best, runs)
}

#[derive(Clone, Debug, Default)]
pub struct BaselineResult {
    pub workers: usize,
    pub files: usize,
    /// Uploaded (201 or 200 duplicate).
    pub uploaded: u64,
    /// The check said the server already had it.
    pub skipped: u64,
    pub failed: u64,
    pub wall: Duration,
    /// (uploaded + skipped) per minute of wall time.
    pub files_per_min: f64,
}

#[derive(Default)]
struct BaselineCounters {
    uploaded: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
}

/// The seed-shaped client: `workers` workers, each one file at a time: read the
/// whole file and hash it, one check call by sha1 for that file, then upload
/// it without metadata and without `skip_extraction`, honouring `Retry-After`.
/// Relative paths in `files` are taken from `root`.
pub async fn baseline(
    base_url: &str,
    token: Option<&str>,
    root: &Path,
    files: Vec<PathBuf>,
    workers: usize,
) -> BaselineResult {
    let workers = workers.max(1);
    let base = base_url.trim_end_matches('/').to_string();
    let client = http_client(workers);
    let paths: Arc<Vec<PathBuf>> = Arc::new(files.iter().map(|p| root.join(p)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(BaselineCounters::default());
    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let paths = paths.clone();
        let next = next.clone();
        let counters = counters.clone();
        let client = client.clone();
        let base = base.clone();
        let token = token.map(str::to_string);
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(path) = paths.get(i) else {
                    return;
                };
                match baseline_one(&client, &base, token.as_deref(), path).await {
                    Ok(true) => counters.uploaded.fetch_add(1, Ordering::SeqCst),
                    Ok(false) => counters.skipped.fetch_add(1, Ordering::SeqCst),
                    Err(_) => counters.failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let wall = started.elapsed();
    let uploaded = counters.uploaded.load(Ordering::SeqCst);
    let skipped = counters.skipped.load(Ordering::SeqCst);
    BaselineResult {
        workers,
        files: files.len(),
        uploaded,
        skipped,
        failed: counters.failed.load(Ordering::SeqCst),
        wall,
        files_per_min: per_min(uploaded + skipped, wall),
    }
}

/// One file the slow way. Ok(true) uploaded, Ok(false) already there.
async fn baseline_one(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    path: &Path,
) -> Result<bool, String> {
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let data = Bytes::from(data);
    let hash_input = data.clone();
    let sha1 = tokio::task::spawn_blocking(move || sha1_hex(&hash_input))
        .await
        .map_err(|e| e.to_string())?;
    let filename = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: no UTF-8 base name", path.display()))?
        .to_string();

    let check_body = serde_json::json!({"files": [
        {"key": "0", "filename": filename, "size": data.len(), "sha1": sha1}
    ]});
    let mut exists = None;
    for attempt in 0..MAX_ATTEMPTS {
        let mut req = client
            .post(format!("{base}/api/upload/check"))
            .json(&check_body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                let reply: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                let found = reply["files"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .any(|i| i["key"] == "0" && i["status"] == "exists")
                    })
                    .unwrap_or(false);
                exists = Some(found);
                break;
            }
            Ok(resp) if is_busy(resp.status()) => {
                tokio::time::sleep(retry_after(resp.headers())).await
            }
            Ok(resp) if resp.status().is_server_error() => {
                tokio::time::sleep(backoff(attempt)).await
            }
            Ok(resp) => return Err(format!("check: {}", resp.status())),
            Err(_) => tokio::time::sleep(backoff(attempt)).await,
        }
    }
    match exists {
        Some(true) => return Ok(false),
        Some(false) => {}
        None => return Err("check: gave up".into()),
    }

    for attempt in 0..MAX_ATTEMPTS {
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::from(data.clone()),
            data.len() as u64,
        )
        .file_name(filename.clone());
        let form = reqwest::multipart::Form::new()
            .text("sha1", sha1.clone())
            .part("file", part);
        let mut req = client.post(format!("{base}/api/upload")).multipart(form);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let wait = retry_after(resp.headers());
                let _ = resp.bytes().await;
                match status {
                    StatusCode::CREATED | StatusCode::OK => return Ok(true),
                    s if is_busy(s) => tokio::time::sleep(wait).await,
                    s if s.is_server_error() => tokio::time::sleep(backoff(attempt)).await,
                    s => return Err(format!("upload: {s}")),
                }
            }
            Err(_) => tokio::time::sleep(backoff(attempt)).await,
        }
    }
    Err("upload: gave up".into())
}

fn is_busy(s: StatusCode) -> bool {
    s == StatusCode::SERVICE_UNAVAILABLE || s == StatusCode::TOO_MANY_REQUESTS
}
