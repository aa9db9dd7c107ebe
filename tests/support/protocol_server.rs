//! A real HTTP server speaking the upload protocol v1
//! (`shared/upload-protocol.md`), for integration tests and benchmarks.
//!
//! This module owns the server side only: `POST {base}/api/upload/check` and
//! `POST {base}/api/upload`, strict validation of what the client sends, SHA-1
//! dedup, seeded fault injection (500, connection reset, reply lost after
//! storing, stalls, the whole server going down, redirects, success replies that lie), optional TLS (HTTPS with a
//! given certificate, e.g. a self-signed one), `503 + Retry-After` above a
//! concurrency limit, simulated server-side extraction, and counters a test can
//! assert on. It listens on 127.0.0.1 (port 0 unless told otherwise) and runs on
//! its own thread with its own tokio runtime, so it works from sync and async
//! tests alike.
//!
//! Uploaded bytes are hashed as they stream in. Without `store_dir` only the
//! hash and size are kept (a 1 GiB upload costs no memory); with `store_dir`
//! each new file is written to `store_dir/<sha1>`.
//!
//! Strictness: parts out of order, unknown parts, a bad `sha1`, metadata
//! without a `title`, `skip_extraction` other than `true` or without a title
//! and an author, and a `file` part without a UTF-8 `filename` are all answered
//! `400` (and counted), so a client bug fails loudly.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};

/// Most items one check call may carry.
pub const MAX_CHECK_ITEMS: usize = 1000;
/// Largest check request body read (bytes); above it: 413.
const MAX_CHECK_BODY: usize = 32 * 1024 * 1024;
/// Largest text part (`sha1`, `metadata`, `skip_extraction`) read (bytes).
const MAX_TEXT_PART: usize = 1024 * 1024;
/// When the server answers before reading a whole request body (401, 503,
/// 400, 413, injected 500), it first reads and discards up to this many bytes,
/// so a client that is still sending sees the status and not a broken pipe.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;

/// How the test server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// When set, new files are written to `store_dir/<sha1>`; else only hash and size are kept.
    pub store_dir: Option<PathBuf>,
    pub faults: Faults,
    /// Simulated server-side extraction per newly stored upload without `skip_extraction`.
    pub extraction_cost: Duration,
    /// Simulated cost of storing a new file whatever the request says (a real server's database
    /// insert, file move, thumbnail), spent while the upload holds its in-flight slot.
    pub store_cost: Duration,
    /// Uploads beyond this many in progress at once get `503` + `Retry-After`.
    pub max_in_flight: Option<usize>,
    /// Value of `Retry-After` (seconds) on 503.
    pub retry_after_secs: u64,
    /// Serve under this path prefix (e.g. `/library`): then only
    /// `/library/api/...` answers and `base_url` includes the prefix.
    pub path_prefix: Option<String>,
    /// File parts larger than this get `413`.
    pub max_upload_bytes: Option<u64>,
    /// Answer `400` to uploads whose parts break the order
    /// `sha1, metadata?, skip_extraction?, file` (always counted). Default true.
    pub strict_part_order: bool,
    /// Address to listen on. Default 127.0.0.1:0.
    pub addr: Option<SocketAddr>,
    /// Serve HTTPS with this (certificate chain PEM, private key PEM); `base_url` is then
    /// `https://…`. A client that refuses the certificate is counted in
    /// `Stats::tls_handshake_failures` and never reaches a handler.
    pub tls: Option<(String, String)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            store_dir: None,
            faults: Faults::default(),
            extraction_cost: Duration::ZERO,
            store_cost: Duration::ZERO,
            max_in_flight: None,
            retry_after_secs: 1,
            path_prefix: None,
            max_upload_bytes: None,
            strict_part_order: true,
            addr: None,
            tls: None,
        }
    }
}

/// Injected faults, drawn per request from an RNG seeded with `seed`.
/// One roll per request picks at most one of 500 / reset / reply-lost
/// (in that order of the probability ranges); a second roll decides a stall.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Reply 500 without doing anything (the upload is not stored).
    pub p_500: f64,
    /// Reply `503` + `Retry-After` at random, whatever the load: a server behind a proxy or
    /// sharing its workers with other clients (the upload is not stored).
    pub p_busy: f64,
    /// Close the connection abruptly (TCP RST) without a response, before processing.
    pub p_reset: f64,
    /// Process the request fully (the upload is stored), then reset the connection without replying.
    pub p_reply_lost: f64,
    /// Sleep this long before replying, on a fraction `p_stall` of requests.
    pub stall: Option<Duration>,
    pub p_stall: f64,
    /// Refuse connections (listener closed) and reset open ones.
    pub down: bool,
    pub seed: u64,
    /// Answer requests `302` with this `Location` instead of serving them.
    pub redirect_to: Option<String>,
    /// With `redirect_to`: redirect uploads only (check calls are served), as a server that
    /// starts redirecting once the pre-flight check has passed.
    pub redirect_uploads_only: bool,
    /// Store uploads as usual, but answer them with this success reply that proves nothing.
    pub lie: Option<Lie>,
    /// Answer each SHA-1's first upload `503` + `Retry-After` (a later one is served as
    /// usual), counted in `injected_busy`.
    pub busy_first_try: bool,
}

/// A success reply (`201`/`200`) that does not prove the store (protocol v1.1, section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// `"id": null`.
    NullId,
    /// The `sha1` echo is another SHA-1 than the one sent.
    OtherSha1,
    /// No `sha1` echo.
    NoSha1,
    /// A body that is not JSON.
    NotJson,
}

/// Snapshot of the server's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Every POST /api/upload whose `sha1` part was read, whatever the outcome.
    pub upload_calls_by_sha1: HashMap<String, u32>,
    /// How many times content was stored; never above 1 (dedup by SHA-1).
    pub stored_count_by_sha1: HashMap<String, u32>,
    /// Complete, verified uploads of a SHA-1 already held (answered 200 duplicate).
    pub duplicate_uploads_by_sha1: HashMap<String, u32>,
    pub check_calls: u64,
    pub check_items: u64,
    pub check_items_with_sha1: u64,
    /// POST /api/upload requests received (routed), whatever the outcome.
    pub uploads_total: u64,
    /// Most upload requests in progress at once (counted on arrival, before any 503).
    pub max_in_flight_seen: usize,
    /// Most uploads admitted (past the `max_in_flight` gate) at once.
    pub max_admitted_seen: usize,
    /// Every response status sent (resets and lost replies have none).
    pub status_counts: BTreeMap<u16, u64>,
    pub auth_failures: u64,
    /// Bytes of `file` parts received.
    pub bytes_received: u64,
    /// Uploads where the simulated extraction ran.
    pub extraction_runs: u64,
    /// Uploads whose parts were not in the order sha1, metadata?, skip_extraction?, file.
    pub part_order_violations: u64,
    /// `file` parts whose Content-Disposition had no filename, or one that is not UTF-8.
    pub filename_non_utf8_or_missing: u64,
    /// Filenames containing `/` or `\` (the protocol wants a base name).
    pub filename_with_dirs: u64,
    /// `skip_extraction` sent without metadata holding a title and at least one author.
    pub skip_extraction_without_title_author: u64,
    /// 422 answers.
    pub sha1_mismatches: u64,
    /// Injected faults that happened.
    pub injected_500: u64,
    pub injected_resets: u64,
    /// 503s drawn by `Faults::p_busy` or sent by `Faults::busy_first_try`.
    pub injected_busy: u64,
    /// How many SHA-1s had been sent when one was sent a second time (the first retry).
    pub sha1s_before_first_retry: Option<usize>,
    /// The most uploads admitted at once in each quarter second since the first upload was
    /// admitted (how a client's concurrency moved over time).
    pub admitted_by_quarter_second: Vec<usize>,
    pub injected_replies_lost: u64,
    pub injected_stalls: u64,
    /// Connections reset because the server was down.
    pub down_resets: u64,
    /// Requests that matched no route (404/405).
    pub unrouted: u64,
    /// TLS connections whose handshake failed (e.g. the client did not trust the certificate).
    pub tls_handshake_failures: u64,
    /// TLS connections whose handshake succeeded.
    pub tls_handshakes: u64,
    /// Every request that reached the server (before routing), and those of them carrying an
    /// `Authorization` header.
    pub requests_total: u64,
    pub requests_with_authorization: u64,
    /// Requests answered with a redirect (`Faults::redirect_to`).
    pub redirects_sent: u64,
}

/// What the server holds for one SHA-1.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFile {
    pub id: String,
    pub filename: String,
    pub size: u64,
    pub metadata: Option<Value>,
    pub skip_extraction: bool,
    /// Put there with [`TestServer::preload`], not uploaded.
    pub preloaded: bool,
}

/// A running server. Dropping it shuts it down.
pub struct TestServer {
    /// `http://127.0.0.1:PORT` plus the path prefix, if any.
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Start on its own thread and runtime; returns once listening.
    /// Panics if it cannot bind (a test setup failure).
    pub fn start(cfg: ServerConfig) -> TestServer {
        let addr = cfg
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let prefix = normalize_prefix(cfg.path_prefix.as_deref());
        let tls = cfg.tls.as_ref().map(|(cert, key)| {
            tls_acceptor(cert, key).unwrap_or_else(|e| panic!("test server TLS: {e}"))
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (down_tx, _) = watch::channel(cfg.faults.down);
        let shared = Arc::new(Shared {
            token: cfg.token.clone(),
            store_dir: cfg.store_dir.clone(),
            extraction_cost: cfg.extraction_cost,
            store_cost: cfg.store_cost,
            max_in_flight: cfg.max_in_flight,
            retry_after_secs: cfg.retry_after_secs,
            prefix: prefix.clone(),
            max_upload_bytes: cfg.max_upload_bytes,
            strict_part_order: cfg.strict_part_order,
            tls,
            faults: Mutex::new(cfg.faults.clone()),
            rng: Mutex::new(StdRng::seed_from_u64(cfg.faults.seed)),
            down_tx,
            listening: AtomicBool::new(false),
            in_flight_all: AtomicUsize::new(0),
            in_flight_admitted: AtomicUsize::new(0),
            timeline: Mutex::new((None, Vec::new())),
            max_all: AtomicUsize::new(0),
            max_admitted: AtomicUsize::new(0),
            bytes_received: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
        });
        if let Some(dir) = &cfg.store_dir {
            std::fs::create_dir_all(dir).expect("create store_dir");
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("protocol-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match bind(addr).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("bind {addr}: {e}")));
                            return;
                        }
                    };
                    let local = match listener.local_addr() {
                        Ok(a) => a,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("local_addr: {e}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(local));
                    accept_loop(thread_shared, listener, local, shutdown_rx).await;
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn server thread");
        let local = match ready_rx.recv() {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => panic!("test server failed to start: {e}"),
            Err(_) => panic!("test server thread died before listening"),
        };
        TestServer {
            base_url: format!("{scheme}://{local}{prefix}"),
            addr: local,
            shared,
            shutdown_tx,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS) without the prefix.
    pub fn root_url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Replace the faults (reseeds the RNG with `f.seed`; `f.down` applies too).
    pub fn set_faults(&self, f: Faults) {
        let down = f.down;
        *lock(&self.shared.rng) = StdRng::seed_from_u64(f.seed);
        *lock(&self.shared.faults) = f;
        self.set_down(down);
    }

    /// Down: the listener is closed (connections refused) and open
    /// connections are reset. Up again: listens on the same port.
    /// Returns once the listener is closed (down) or listening again (up).
    pub fn set_down(&self, down: bool) {
        lock(&self.shared.faults).down = down;
        self.shared.down_tx.send_replace(down);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.shared.listening.load(Ordering::SeqCst) == down
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = lock(&self.shared.state).stats.clone();
        s.bytes_received = self.shared.bytes_received.load(Ordering::SeqCst);
        s.max_in_flight_seen = self.shared.max_all.load(Ordering::SeqCst);
        s.max_admitted_seen = self.shared.max_admitted.load(Ordering::SeqCst);
        s.admitted_by_quarter_second = lock(&self.shared.timeline).1.clone();
        s
    }

    /// Everything held, by SHA-1 (uploads and preloads).
    pub fn stored(&self) -> HashMap<String, StoredFile> {
        lock(&self.shared.state).files.clone()
    }

    /// The server "already has" this file: check by sha1 or by (filename, size)
    /// answers `exists`, and an upload of it answers 200 duplicate.
    pub fn preload(&self, sha1: &str, filename: &str, size: u64) {
        let id = format!("pre-{}", self.shared.next_id.fetch_add(1, Ordering::SeqCst));
        let mut st = lock(&self.shared.state);
        if st.files.contains_key(sha1) {
            return;
        }
        st.files.insert(
            sha1.to_string(),
            StoredFile {
                id,
                filename: filename.to_string(),
                size,
                metadata: None,
                skip_extraction: false,
                preloaded: true,
            },
        );
        *st.by_name_size
            .entry((filename.to_string(), size))
            .or_insert(0) += 1;
    }

    /// The server loses one file (a disk problem, an admin's delete): asked about its SHA-1, it
    /// answers `missing`.
    #[allow(dead_code)] // used by the integration tests, not by the benchmark
    pub fn forget(&self, sha1: &str) {
        let mut st = lock(&self.shared.state);
        if let Some(f) = st.files.remove(sha1) {
            if let Some(n) = st.by_name_size.get_mut(&(f.filename.clone(), f.size)) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Forget all files and zero all counters (faults and down state are kept).
    pub fn reset_state(&self) {
        *lock(&self.shared.state) = State::default();
        self.shared.bytes_received.store(0, Ordering::SeqCst);
        self.shared.max_all.store(0, Ordering::SeqCst);
        self.shared.max_admitted.store(0, Ordering::SeqCst);
        *lock(&self.shared.timeline) = (None, Vec::new());
    }

    /// Stop the server and wait for its thread.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parse `--port N --token T --extraction-ms N --store-ms N --max-in-flight N
/// --retry-after N --store-dir DIR --prefix /p --max-upload-bytes N --busy-percent N` (N% of
/// requests answered `503` at random, as `Faults::p_busy`).
pub fn config_from_args(args: &[String]) -> Result<ServerConfig, String> {
    let mut cfg = ServerConfig::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .cloned()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--port" => {
                let port = u16::try_from(num()?).map_err(|e| format!("--port: {e}"))?;
                cfg.addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
            "--token" => cfg.token = Some(value),
            "--extraction-ms" => cfg.extraction_cost = Duration::from_millis(num()?),
            "--store-ms" => cfg.store_cost = Duration::from_millis(num()?),
            "--max-in-flight" => cfg.max_in_flight = Some(num()? as usize),
            "--retry-after" => cfg.retry_after_secs = num()?,
            "--store-dir" => cfg.store_dir = Some(PathBuf::from(value)),
            "--prefix" => cfg.path_prefix = Some(value),
            "--max-upload-bytes" => cfg.max_upload_bytes = Some(num()?),
            "--busy-percent" => cfg.faults.p_busy = num()? as f64 / 100.0,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(cfg)
}

/// Run a server on 127.0.0.1 until the process is killed, configured by
/// [`config_from_args`]. Prints `listening on <base_url>` on stdout once ready.
pub fn serve_forever_cli(args: &[String]) -> Result<(), String> {
    let server = TestServer::start(config_from_args(args)?);
    println!("listening on {}", server.base_url);
    loop {
        std::thread::park();
    }
}

// ---------------------------------------------------------------------------
// Shared state

struct Shared {
    token: Option<String>,
    store_dir: Option<PathBuf>,
    extraction_cost: Duration,
    store_cost: Duration,
    max_in_flight: Option<usize>,
    retry_after_secs: u64,
    prefix: String,
    max_upload_bytes: Option<u64>,
    strict_part_order: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    down_tx: watch::Sender<bool>,
    /// Whether the accept loop holds an open listener.
    listening: AtomicBool,
    in_flight_all: AtomicUsize,
    in_flight_admitted: AtomicUsize,
    /// When the first upload was admitted, and the most admitted at once per quarter second.
    timeline: Mutex<(Option<std::time::Instant>, Vec<usize>)>,
    max_all: AtomicUsize,
    max_admitted: AtomicUsize,
    bytes_received: AtomicU64,
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, StoredFile>,
    by_name_size: HashMap<(String, u64), u32>,
    stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn with_stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.state).stats);
    }

    fn is_down(&self) -> bool {
        *self.down_tx.borrow()
    }
}

fn normalize_prefix(p: Option<&str>) -> String {
    let p = p.unwrap_or("").trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("/{p}")
    }
}

// ---------------------------------------------------------------------------
// Listening and connections

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
    mut shutdown_rx: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    shared.listening.store(true, Ordering::SeqCst);
    let mut down_rx = shared.down_tx.subscribe();
    loop {
        if *shutdown_rx.borrow() {
            return;
        }
        let down = *down_rx.borrow_and_update();
        if down {
            // Close the listener: new connections are refused.
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            tokio::select! {
                _ = shutdown_rx.changed() => return,
                _ = down_rx.changed() => continue,
            }
        }
        let l = match &listener {
            Some(l) => l,
            None => match rebind(local, &mut shutdown_rx).await {
                Some(l) => {
                    shared.listening.store(true, Ordering::SeqCst);
                    listener.insert(l)
                }
                None => return,
            },
        };
        tokio::select! {
            _ = shutdown_rx.changed() => return,
            _ = down_rx.changed() => continue,
            accepted = l.accept() => {
                if let Ok((stream, _)) = accepted {
                    let s = shared.clone();
                    tokio::spawn(serve_connection(s, stream));
                }
            }
        }
    }
}

/// Listen again on the same address after being down.
async fn rebind(addr: SocketAddr, shutdown_rx: &mut watch::Receiver<bool>) -> Option<TcpListener> {
    loop {
        if let Ok(l) = bind(addr).await {
            return Some(l);
        }
        tokio::select! {
            _ = shutdown_rx.changed() => return None,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Per-connection handle given to the request handler: `abort()` makes the
/// connection task reset the TCP connection without writing a response.
#[derive(Clone)]
struct ConnCtx {
    abort: Arc<Notify>,
}

impl ConnCtx {
    /// Reset the connection and never return.
    async fn abort(&self) -> Response<Full<Bytes>> {
        self.abort.notify_one();
        std::future::pending().await
    }
}

/// A TLS acceptor for a certificate chain and key given as PEM (aws-lc-rs, like the client).
fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A connection's byte stream (plain TCP, or TLS over TCP) and the TCP socket under it, so a
/// fault can reset it.
trait ConnIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_tcp(self) -> TcpStream;
}

impl ConnIo for TcpStream {
    fn into_tcp(self) -> TcpStream {
        self
    }
}

impl ConnIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_tcp(self) -> TcpStream {
        self.into_inner().0
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let down_rx = {
        let mut rx = shared.down_tx.subscribe();
        if *rx.borrow_and_update() {
            shared.with_stats(|s| s.down_resets += 1);
            reset(stream);
            return;
        }
        rx
    };
    match shared.tls.clone() {
        None => serve_io(shared, stream, down_rx).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => {
                shared.with_stats(|s| s.tls_handshakes += 1);
                serve_io(shared, tls, down_rx).await
            }
            // The client refused our certificate (or spoke no TLS): nothing to serve.
            Err(_) => shared.with_stats(|s| s.tls_handshake_failures += 1),
        },
    }
}

async fn serve_io<S: ConnIo>(shared: Arc<Shared>, stream: S, mut down_rx: watch::Receiver<bool>) {
    let ctx = ConnCtx {
        abort: Arc::new(Notify::new()),
    };
    let handler_shared = shared.clone();
    let handler_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = handler_shared.clone();
        let ctx = handler_ctx.clone();
        async move { Ok::<_, Infallible>(handle(shared, ctx, req).await) }
    });
    let mut conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let went_down = async {
        loop {
            if down_rx.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            if *down_rx.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        _ = &mut conn => {}
        _ = ctx.abort.notified() => {
            reset(conn.into_parts().io.into_inner().into_tcp());
        }
        _ = went_down => {
            shared.with_stats(|s| s.down_resets += 1);
            reset(conn.into_parts().io.into_inner().into_tcp());
        }
    }
}

/// Close with SO_LINGER=0: the peer gets a TCP RST, not a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

// ---------------------------------------------------------------------------
// Requests

enum Route {
    Check,
    Upload,
}

enum FaultDraw {
    None,
    Fail500,
    Reset,
    ReplyLost,
    Busy,
}

struct Draw {
    fault: FaultDraw,
    stall: Option<Duration>,
}

impl Shared {
    fn draw_faults(&self) -> Draw {
        let f = lock(&self.faults).clone();
        let (roll, stall_roll) = {
            let mut rng = lock(&self.rng);
            (rng.random::<f64>(), rng.random::<f64>())
        };
        let fault = if roll < f.p_500 {
            FaultDraw::Fail500
        } else if roll < f.p_500 + f.p_reset {
            FaultDraw::Reset
        } else if roll < f.p_500 + f.p_reset + f.p_reply_lost {
            FaultDraw::ReplyLost
        } else if roll < f.p_500 + f.p_reset + f.p_reply_lost + f.p_busy {
            FaultDraw::Busy
        } else {
            FaultDraw::None
        };
        let stall = match f.stall {
            Some(d) if stall_roll < f.p_stall => Some(d),
            _ => None,
        };
        Draw { fault, stall }
    }

    /// Records the uploads admitted now in the current quarter second of the timeline.
    fn note_admitted(&self) {
        let now = self.in_flight_admitted.load(Ordering::SeqCst);
        let mut t = lock(&self.timeline);
        let start = *t.0.get_or_insert_with(std::time::Instant::now);
        let slot = (start.elapsed().as_millis() / 250) as usize;
        if t.1.len() <= slot {
            t.1.resize(slot + 1, 0);
        }
        t.1[slot] = t.1[slot].max(now);
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let expected = format!("Bearer {token}");
        req.headers()
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes() == expected.as_bytes())
            .unwrap_or(false)
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": msg }))
}

fn busy_response(retry_after_secs: u64) -> Response<Full<Bytes>> {
    let mut resp = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many uploads in progress",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(RETRY_AFTER, v);
    }
    resp
}

/// Finish a request: the injected fault/stall decides how the reply goes out.
async fn deliver(
    shared: &Shared,
    ctx: &ConnCtx,
    draw: &Draw,
    resp: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    if let Some(d) = draw.stall {
        shared.with_stats(|s| s.injected_stalls += 1);
        tokio::time::sleep(d).await;
    }
    if matches!(draw.fault, FaultDraw::ReplyLost) {
        shared.with_stats(|s| s.injected_replies_lost += 1);
        return ctx.abort().await;
    }
    resp
}

/// Answer one request; counts the status of every response actually sent
/// (an aborted request never gets here).
async fn handle(
    shared: Arc<Shared>,
    ctx: ConnCtx,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let with_auth = req.headers().contains_key(AUTHORIZATION);
    shared.with_stats(|s| {
        s.requests_total += 1;
        s.requests_with_authorization += u64::from(with_auth);
    });
    let resp = route(&shared, &ctx, req).await;
    let status = resp.status().as_u16();
    shared.with_stats(|s| *s.status_counts.entry(status).or_insert(0) += 1);
    resp
}

async fn route(shared: &Shared, ctx: &ConnCtx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if shared.is_down() {
        shared.with_stats(|s| s.down_resets += 1);
        return ctx.abort().await;
    }
    let path = req.uri().path();
    let rest = if shared.prefix.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(shared.prefix.as_str())
    };
    let route = match rest {
        Some("/api/upload/check") => Some(Route::Check),
        Some("/api/upload") => Some(Route::Upload),
        _ => None,
    };
    let Some(route) = route else {
        shared.with_stats(|s| s.unrouted += 1);
        drain(req.into_body(), DRAIN_CAP).await;
        return error_response(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let redirect = {
        let f = lock(&shared.faults);
        f.redirect_to
            .clone()
            .filter(|_| matches!(route, Route::Upload) || !f.redirect_uploads_only)
    };
    if let Some(location) = redirect {
        shared.with_stats(|s| s.redirects_sent += 1);
        drain(req.into_body(), DRAIN_CAP).await;
        let mut resp = error_response(StatusCode::FOUND, "moved");
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(hyper::header::LOCATION, v);
        }
        return resp;
    }
    if req.method() != Method::POST {
        shared.with_stats(|s| s.unrouted += 1);
        drain(req.into_body(), DRAIN_CAP).await;
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    match route {
        Route::Check => handle_check(shared, ctx, req).await,
        Route::Upload => handle_upload(shared, ctx, req).await,
    }
}

/// Read and discard up to `cap` bytes of a body.
async fn drain(mut body: Incoming, cap: u64) {
    let mut seen = 0u64;
    while seen < cap {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    seen += d.len() as u64;
                }
            }
            _ => return,
        }
    }
}

/// Read and discard the rest of a multipart stream (bounded).
async fn drain_multipart(mp: &mut multer::Multipart<'static>, mut budget: u64) {
    while let Ok(Some(mut field)) = mp.next_field().await {
        while let Ok(Some(c)) = field.chunk().await {
            let n = c.len() as u64;
            if n >= budget {
                return;
            }
            budget -= n;
        }
    }
}

// ---------------------------------------------------------------------------
// Check endpoint

#[derive(Deserialize)]
struct CheckRequest {
    files: Vec<CheckItem>,
}

#[derive(Deserialize)]
struct CheckItem {
    key: String,
    filename: String,
    size: u64,
    #[serde(default)]
    sha1: Option<String>,
}

async fn handle_check(
    shared: &Shared,
    ctx: &ConnCtx,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if !shared.authorized(&req) {
        shared.with_stats(|s| s.auth_failures += 1);
        drain(req.into_body(), DRAIN_CAP).await;
        return error_response(StatusCode::UNAUTHORIZED, "missing or bad bearer token");
    }
    let draw = shared.draw_faults();
    match draw.fault {
        FaultDraw::Reset => {
            shared.with_stats(|s| s.injected_resets += 1);
            return ctx.abort().await;
        }
        FaultDraw::Fail500 => {
            shared.with_stats(|s| s.injected_500 += 1);
            drain(req.into_body(), DRAIN_CAP).await;
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "injected fault");
        }
        FaultDraw::Busy => {
            shared.with_stats(|s| s.injected_busy += 1);
            drain(req.into_body(), DRAIN_CAP).await;
            return busy_response(shared.retry_after_secs);
        }
        FaultDraw::None | FaultDraw::ReplyLost => {}
    }
    let body = match Limited::new(req.into_body(), MAX_CHECK_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return error_response(status, &format!("could not read body: {e}"));
        }
    };
    let parsed: CheckRequest = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, &format!("bad check request: {e}"));
        }
    };
    if parsed.files.len() > MAX_CHECK_ITEMS {
        return error_response(
            StatusCode::BAD_REQUEST,
            &format!("at most {MAX_CHECK_ITEMS} items per check call"),
        );
    }
    for item in &parsed.files {
        if let Some(h) = &item.sha1 {
            if !is_sha1_hex(h) {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("item {:?}: sha1 must be 40 lowercase hex chars", item.key),
                );
            }
        }
    }
    let replies: Vec<Value> = {
        let mut st = lock(&shared.state);
        st.stats.check_calls += 1;
        st.stats.check_items += parsed.files.len() as u64;
        st.stats.check_items_with_sha1 +=
            parsed.files.iter().filter(|i| i.sha1.is_some()).count() as u64;
        parsed
            .files
            .iter()
            .map(|item| {
                let exists = match &item.sha1 {
                    Some(h) => st.files.contains_key(h),
                    None => st
                        .by_name_size
                        .contains_key(&(item.filename.clone(), item.size)),
                };
                let status = if exists { "exists" } else { "missing" };
                json!({ "key": item.key, "status": status })
            })
            .collect()
    };
    let resp = json_response(StatusCode::OK, json!({ "files": replies }));
    deliver(shared, ctx, &draw, resp).await
}

fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------
// Upload endpoint

/// Decrements a counter when dropped (also when the request is aborted).
struct CountGuard<'a>(&'a AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn enter<'a>(counter: &'a AtomicUsize, max: &AtomicUsize) -> CountGuard<'a> {
    let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(now, Ordering::SeqCst);
    CountGuard(counter)
}

/// Admit one more upload if fewer than `limit` are admitted.
fn try_admit<'a>(
    counter: &'a AtomicUsize,
    max: &AtomicUsize,
    limit: Option<usize>,
) -> Option<CountGuard<'a>> {
    let Some(limit) = limit else {
        return Some(enter(counter, max));
    };
    let mut cur = counter.load(Ordering::SeqCst);
    loop {
        if cur >= limit {
            return None;
        }
        match counter.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {
                max.fetch_max(cur + 1, Ordering::SeqCst);
                return Some(CountGuard(counter));
            }
            Err(actual) => cur = actual,
        }
    }
}

/// Why an upload was refused before it completed.
struct Refusal {
    status: StatusCode,
    msg: String,
}

fn refuse(status: StatusCode, msg: impl Into<String>) -> Refusal {
    Refusal {
        status,
        msg: msg.into(),
    }
}

async fn read_text_part(field: &mut multer::Field<'static>, name: &str) -> Result<String, Refusal> {
    let mut buf = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > MAX_TEXT_PART {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("part {name} is too large"),
                    ));
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("malformed multipart: {e}"),
                ))
            }
        }
    }
    String::from_utf8(buf)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("part {name} is not UTF-8")))
}

/// Position of each known part in the protocol's order.
fn part_rank(name: &str) -> Option<u8> {
    match name {
        "sha1" => Some(0),
        "metadata" => Some(1),
        "skip_extraction" => Some(2),
        "file" => Some(3),
        _ => None,
    }
}

/// Is this sequence of part names `sha1, metadata?, skip_extraction?, file`?
fn order_ok(names: &[String]) -> bool {
    let ranks: Option<Vec<u8>> = names.iter().map(|n| part_rank(n)).collect();
    let Some(ranks) = ranks else {
        return false;
    };
    ranks.first() == Some(&0) && ranks.last() == Some(&3) && ranks.windows(2).all(|w| w[0] < w[1])
}

struct ReceivedFile {
    filename: String,
    size: u64,
    sha1: String,
    temp_path: Option<PathBuf>,
}

async fn handle_upload(
    shared: &Shared,
    ctx: &ConnCtx,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    shared.with_stats(|s| s.uploads_total += 1);
    let _in_flight = enter(&shared.in_flight_all, &shared.max_all);
    let authorized = shared.authorized(&req);

    let boundary = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        if !authorized {
            shared.with_stats(|s| s.auth_failures += 1);
            drain(req.into_body(), DRAIN_CAP).await;
            return error_response(StatusCode::UNAUTHORIZED, "missing or bad bearer token");
        }
        drain(req.into_body(), DRAIN_CAP).await;
        return error_response(
            StatusCode::BAD_REQUEST,
            "expected multipart/form-data with a boundary",
        );
    };
    let mut mp = multer::Multipart::new(BodyDataStream::new(req.into_body()), boundary);

    // Read the first part; when it is `sha1`, record the call before anything else.
    let mut names: Vec<String> = Vec::new();
    let mut declared_sha1: Option<String> = None;
    let mut first_try = false;
    let mut first_err: Option<Refusal> = None;
    let mut pending_field: Option<multer::Field<'static>> = None;
    match mp.next_field().await {
        Ok(Some(mut field)) => {
            let name = field.name().unwrap_or("").to_string();
            if name == "sha1" {
                names.push(name);
                match read_text_part(&mut field, "sha1").await {
                    Ok(v) if is_sha1_hex(&v) => {
                        shared.with_stats(|s| {
                            let calls = s.upload_calls_by_sha1.entry(v.clone()).or_insert(0);
                            *calls += 1;
                            first_try = *calls == 1;
                            if !first_try && s.sha1s_before_first_retry.is_none() {
                                s.sha1s_before_first_retry = Some(s.upload_calls_by_sha1.len());
                            }
                        });
                        declared_sha1 = Some(v);
                    }
                    Ok(v) => {
                        first_err = Some(refuse(
                            StatusCode::BAD_REQUEST,
                            format!("sha1 must be 40 lowercase hex chars, got {v:?}"),
                        ))
                    }
                    Err(r) => first_err = Some(r),
                }
            } else {
                pending_field = Some(field);
            }
        }
        Ok(None) => first_err = Some(refuse(StatusCode::BAD_REQUEST, "empty multipart body")),
        Err(e) => {
            first_err = Some(refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed multipart: {e}"),
            ))
        }
    }

    if !authorized {
        shared.with_stats(|s| s.auth_failures += 1);
        drop(pending_field);
        drain_multipart(&mut mp, DRAIN_CAP).await;
        return error_response(StatusCode::UNAUTHORIZED, "missing or bad bearer token");
    }
    let draw = shared.draw_faults();
    if first_try && lock(&shared.faults).busy_first_try {
        shared.with_stats(|s| s.injected_busy += 1);
        drop(pending_field);
        drain_multipart(&mut mp, DRAIN_CAP).await;
        return busy_response(shared.retry_after_secs);
    }
    match draw.fault {
        FaultDraw::Reset => {
            shared.with_stats(|s| s.injected_resets += 1);
            return ctx.abort().await;
        }
        FaultDraw::Fail500 => {
            shared.with_stats(|s| s.injected_500 += 1);
            drop(pending_field);
            drain_multipart(&mut mp, DRAIN_CAP).await;
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "injected fault");
        }
        FaultDraw::Busy => {
            shared.with_stats(|s| s.injected_busy += 1);
            drop(pending_field);
            drain_multipart(&mut mp, DRAIN_CAP).await;
            return busy_response(shared.retry_after_secs);
        }
        FaultDraw::None | FaultDraw::ReplyLost => {}
    }
    let Some(_admitted) = try_admit(
        &shared.in_flight_admitted,
        &shared.max_admitted,
        shared.max_in_flight,
    ) else {
        drop(pending_field);
        drain_multipart(&mut mp, DRAIN_CAP).await;
        return busy_response(shared.retry_after_secs);
    };
    shared.note_admitted();

    let result = match first_err {
        Some(r) => Err(r),
        None => receive_parts(shared, &mut mp, pending_field, &mut names, declared_sha1).await,
    };
    let outcome = match result {
        Ok(o) => o,
        Err(r) => {
            drain_multipart(&mut mp, DRAIN_CAP).await;
            return error_response(r.status, &r.msg);
        }
    };
    let resp = finish_upload(shared, outcome).await;
    deliver(shared, ctx, &draw, resp).await
}

struct Upload {
    declared_sha1: String,
    metadata: Option<Value>,
    skip_extraction: bool,
    file: ReceivedFile,
}

/// Read the remaining parts, validating them; the file is hashed as it streams.
async fn receive_parts(
    shared: &Shared,
    mp: &mut multer::Multipart<'static>,
    mut pending: Option<multer::Field<'static>>,
    names: &mut Vec<String>,
    mut declared_sha1: Option<String>,
) -> Result<Upload, Refusal> {
    let mut metadata: Option<Value> = None;
    let mut skip_extraction = false;
    let mut file: Option<ReceivedFile> = None;
    let mut order_counted = false;
    loop {
        let mut field = match pending.take() {
            Some(f) => f,
            None => match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("malformed multipart: {e}"),
                    ))
                }
            },
        };
        let name = field.name().unwrap_or("").to_string();
        names.push(name.clone());
        if !order_counted && !order_prefix_ok(names) {
            order_counted = true;
            shared.with_stats(|s| s.part_order_violations += 1);
            if shared.strict_part_order {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("parts out of order or unknown: {names:?}; expected sha1, metadata?, skip_extraction?, file"),
                ));
            }
        }
        match name.as_str() {
            "sha1" => {
                let v = read_text_part(&mut field, "sha1").await?;
                if !is_sha1_hex(&v) {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "sha1 must be 40 lowercase hex chars",
                    ));
                }
                shared.with_stats(|s| *s.upload_calls_by_sha1.entry(v.clone()).or_insert(0) += 1);
                declared_sha1 = Some(v);
            }
            "metadata" => {
                let v = read_text_part(&mut field, "metadata").await?;
                let parsed: Value = serde_json::from_str(&v).map_err(|e| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        format!("metadata is not JSON: {e}"),
                    )
                })?;
                let title_ok = parsed
                    .get("title")
                    .and_then(Value::as_str)
                    .map(|t| !t.trim().is_empty())
                    .unwrap_or(false);
                if !parsed.is_object() || !title_ok {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        "metadata must be a JSON object with a non-empty string title",
                    ));
                }
                metadata = Some(parsed);
            }
            "skip_extraction" => {
                let v = read_text_part(&mut field, "skip_extraction").await?;
                if v != "true" {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("skip_extraction must be \"true\" or absent, got {v:?}"),
                    ));
                }
                skip_extraction = true;
            }
            "file" => {
                file = Some(receive_file(shared, &mut field).await?);
            }
            _ => {
                // Unknown part (only reached when not strict): skip it.
                while let Ok(Some(_)) = field.chunk().await {}
            }
        }
    }
    if !order_counted && !order_ok(names) {
        shared.with_stats(|s| s.part_order_violations += 1);
        if shared.strict_part_order {
            remove_temp(file.as_ref()).await;
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("parts {names:?}; expected sha1, metadata?, skip_extraction?, file"),
            ));
        }
    }
    let Some(file) = file else {
        return Err(refuse(StatusCode::BAD_REQUEST, "no file part"));
    };
    let Some(declared_sha1) = declared_sha1 else {
        remove_temp(Some(&file)).await;
        return Err(refuse(StatusCode::BAD_REQUEST, "no sha1 part"));
    };
    if skip_extraction {
        let has_author = metadata
            .as_ref()
            .and_then(|m| m.get("authors"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .any(|x| x.as_str().map(|s| !s.trim().is_empty()).unwrap_or(false))
            })
            .unwrap_or(false);
        if !has_author {
            shared.with_stats(|s| s.skip_extraction_without_title_author += 1);
            remove_temp(Some(&file)).await;
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "skip_extraction needs metadata with a title and at least one author",
            ));
        }
    }
    Ok(Upload {
        declared_sha1,
        metadata,
        skip_extraction,
        file,
    })
}

/// Could `names` still become a valid order (checked as each part arrives)?
fn order_prefix_ok(names: &[String]) -> bool {
    let ranks: Option<Vec<u8>> = names.iter().map(|n| part_rank(n)).collect();
    let Some(ranks) = ranks else {
        return false;
    };
    ranks.first() == Some(&0) && ranks.windows(2).all(|w| w[0] < w[1])
}

async fn remove_temp(file: Option<&ReceivedFile>) {
    if let Some(p) = file.and_then(|f| f.temp_path.as_ref()) {
        let _ = tokio::fs::remove_file(p).await;
    }
}

async fn receive_file(
    shared: &Shared,
    field: &mut multer::Field<'static>,
) -> Result<ReceivedFile, Refusal> {
    let filename = match field.file_name() {
        Some(f) if !f.is_empty() => f.to_string(),
        _ => {
            shared.with_stats(|s| s.filename_non_utf8_or_missing += 1);
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "file part needs a UTF-8 filename in Content-Disposition",
            ));
        }
    };
    if filename.contains('/') || filename.contains('\\') {
        shared.with_stats(|s| s.filename_with_dirs += 1);
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "filename must be a base name, without folders",
        ));
    }
    let mut temp: Option<(PathBuf, tokio::io::BufWriter<tokio::fs::File>)> = None;
    if let Some(dir) = &shared.store_dir {
        let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let path = dir.join(format!(".incoming-{n}"));
        let f = tokio::fs::File::create(&path)
            .await
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")))?;
        temp = Some((path, tokio::io::BufWriter::with_capacity(1 << 20, f)));
    }
    let mut hasher = Sha1::new();
    let mut size = 0u64;
    let result: Result<(), Refusal> = async {
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("malformed multipart: {e}"),
                    ))
                }
            };
            size += chunk.len() as u64;
            shared
                .bytes_received
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if let Some(max) = shared.max_upload_bytes {
                if size > max {
                    return Err(refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("file larger than {max} bytes"),
                    ));
                }
            }
            hasher.update(&chunk);
            if let Some((_, w)) = temp.as_mut() {
                w.write_all(&chunk).await.map_err(|e| {
                    refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"))
                })?;
            }
        }
    }
    .await;
    let temp_path = match temp {
        Some((path, mut w)) => {
            let flushed = w.flush().await;
            if result.is_err() || flushed.is_err() {
                let _ = tokio::fs::remove_file(&path).await;
            }
            if let Err(e) = flushed {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("store: {e}"),
                ));
            }
            Some(path)
        }
        None => None,
    };
    result?;
    Ok(ReceivedFile {
        filename,
        size,
        sha1: hex(&hasher.finalize()),
        temp_path,
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Verify the hash, dedup, store, run the simulated extraction.
async fn finish_upload(shared: &Shared, up: Upload) -> Response<Full<Bytes>> {
    let Upload {
        declared_sha1,
        metadata,
        skip_extraction,
        file,
    } = up;
    if file.sha1 != declared_sha1 {
        shared.with_stats(|s| s.sha1_mismatches += 1);
        remove_temp(Some(&file)).await;
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": "sha1 mismatch", "sha1": file.sha1, "declared_sha1": declared_sha1 }),
        );
    }
    let sha1 = file.sha1.clone();
    // Decide new vs duplicate atomically.
    let (id, duplicate) = {
        let mut st = lock(&shared.state);
        if let Some(existing) = st.files.get(&sha1) {
            let id = existing.id.clone();
            *st.stats
                .duplicate_uploads_by_sha1
                .entry(sha1.clone())
                .or_insert(0) += 1;
            (id, true)
        } else {
            let id = format!("book-{}", shared.next_id.fetch_add(1, Ordering::SeqCst));
            st.files.insert(
                sha1.clone(),
                StoredFile {
                    id: id.clone(),
                    filename: file.filename.clone(),
                    size: file.size,
                    metadata: metadata.clone(),
                    skip_extraction,
                    preloaded: false,
                },
            );
            *st.by_name_size
                .entry((file.filename.clone(), file.size))
                .or_insert(0) += 1;
            *st.stats
                .stored_count_by_sha1
                .entry(sha1.clone())
                .or_insert(0) += 1;
            (id, false)
        }
    };
    if let (Some(temp), Some(dir)) = (&file.temp_path, &shared.store_dir) {
        if duplicate {
            let _ = tokio::fs::remove_file(temp).await;
        } else if let Err(e) = tokio::fs::rename(temp, dir.join(&sha1)).await {
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, &format!("store: {e}"));
        }
    }
    if !duplicate && !shared.store_cost.is_zero() {
        tokio::time::sleep(shared.store_cost).await;
    }
    if !duplicate && !skip_extraction {
        shared.with_stats(|s| s.extraction_runs += 1);
        if !shared.extraction_cost.is_zero() {
            tokio::time::sleep(shared.extraction_cost).await;
        }
    }
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let lie = lock(&shared.faults).lie;
    let body = match lie {
        None => json!({ "id": id, "sha1": sha1, "duplicate": duplicate }),
        Some(Lie::NullId) => json!({ "id": null, "sha1": sha1, "duplicate": duplicate }),
        Some(Lie::OtherSha1) => {
            json!({ "id": id, "sha1": "0".repeat(40), "duplicate": duplicate })
        }
        Some(Lie::NoSha1) => json!({ "id": id, "duplicate": duplicate }),
        Some(Lie::NotJson) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"<html>Stored!</html>")));
            *resp.status_mut() = status;
            return resp;
        }
    };
    json_response(status, body)
}
