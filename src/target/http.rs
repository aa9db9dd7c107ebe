//! The HTTP target: the upload protocol of `docs/upload-protocol.md` (v1.1). Batched existence
//! checks (by name+size, then by SHA-1), multipart uploads with the parts in protocol order and
//! the file streamed from disk or sent from the hash stage's buffer, error classification with
//! retries (exponential backoff with jitter, `Retry-After` honoured), 422 → re-hash, a stall
//! timeout on upload progress and on every reply, and pacing (`--bwlimit`, `--tpslimit`,
//! adaptive concurrency). It trusts nothing the server did not prove (`reply`): no redirect is
//! followed, and an upload counts as stored only when the reply echoes an id and the SHA-1 sent.
//! The token lives only in memory, is never printed, and goes to the base URL's host only.

mod reply;

use super::limit::{Limiter, TokenBucket};
use super::{OpenError, Payload, Placed, Unusable};
use crate::failure::{Failure, FailureKind};
use crate::hash::{DigestSet, Digests};
use crate::tuning::TransferTuning;
use bytes::Bytes;
use futures_util::StreamExt;
use reply::{Proof, Unproven};
use reqwest::{multipart, Client, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Items per check call (the protocol's maximum).
pub const CHECK_BATCH: usize = 1000;
const CHUNK: usize = 256 * 1024;
/// Upload replies in a row that proved no store before the run stops (`bad_server`).
const BAD_REPLIES_TO_STOP: u32 = 5;

/// A bearer token that never shows itself in `Debug` or `Display`.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(s: String) -> Token {
        Token(s)
    }

    /// The secret itself, for a target that must compute with it (calibre-server's digest).
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How many transfers may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfers {
    Fixed(usize),
    Auto,
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub token: Option<Token>,
    /// calibre-server target: the user (`--username`; else the one in the URL).
    pub username: Option<String>,
    /// calibre-server target: the password (`--password-file` or `$BOOKFERRY_CALIBRE_PASSWORD`).
    pub password: Option<Token>,
    pub ca_cert: Option<super::tls::CaFile>,
    pub insecure: bool,
    pub retries: u32,
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    pub bwlimit: Option<u64>,
    pub tpslimit: Option<f64>,
    pub transfers: Transfers,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            token: None,
            username: None,
            password: None,
            ca_cert: None,
            insecure: false,
            retries: 5,
            stall_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            bwlimit: None,
            tpslimit: None,
            transfers: Transfers::Auto,
        }
    }
}

pub struct HttpTarget {
    base: String,
    client: Client,
    token: Option<Token>,
    retries: u32,
    stall: Duration,
    bw: Option<Arc<TokenBucket>>,
    tps: Option<Arc<TokenBucket>>,
    limiter: Arc<Limiter>,
    /// Source bytes streamed from disk (files not in the hash stage's buffer).
    pub bytes_streamed: AtomicU64,
    /// Upload replies in a row that proved no store (reset by one that does).
    bad_replies: AtomicU32,
}

/// One try's outcome, before retries.
enum Attempt<T> {
    Done(T),
    Permanent(Failure),
    Auth(AuthRefused),
    Transient(Transient),
}

/// How the server answered an upload it did not refuse.
enum UploadReply {
    Stored(Placed),
    /// The server saw other bytes than the SHA-1 we sent (422): re-hash the file and try again.
    Rehash,
    /// A `200`/`201` whose body does not prove the store.
    Unproven(Unproven),
}

/// Why an upload's body could not be made.
enum BodyError {
    Unreadable(Failure),
    /// The file's size is no longer the one hashed.
    SizeChanged,
}

/// The server refused our credentials (401/403): every file would be refused.
#[derive(Debug, thiserror::Error)]
#[error("{server} refused our credentials ({status}): set the right token in BOOKFERRY_TOKEN or --token-file")]
pub struct AuthRefused {
    pub server: String,
    pub status: StatusCode,
}

/// A failure worth another try.
struct Transient {
    message: String,
    /// The server's `Retry-After`, if it gave one.
    retry_after: Option<Duration>,
    /// 429/503/timeout: the server is overloaded (the limiter cuts).
    overload: bool,
    /// The server could not be reached at all.
    unreachable: bool,
}

impl HttpTarget {
    /// Build the client and make the pre-flight check call: reachable, token accepted.
    /// `transfers` bounds the adaptive limit of `--transfers auto`.
    pub async fn open(
        base: &str,
        opts: &HttpOptions,
        transfers: &TransferTuning,
    ) -> Result<HttpTarget, OpenError> {
        let mut builder = Client::builder()
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("bookferry/", env!("CARGO_PKG_VERSION")))
            // The protocol has no redirects: a 3xx is an answer (see `redirect_failure`), and
            // the token never goes anywhere but the base URL.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &opts.ca_cert {
            // The file's pins and CAs replace the system's roots (see target/tls.rs);
            // `--insecure` verifies nothing, so it wins.
            if !opts.insecure && !base.starts_with("http://") {
                let tls = ca.client_config().map_err(|source| Unusable::CaCertTls {
                    path: ca.path().to_path_buf(),
                    source,
                })?;
                builder = builder.tls_backend_preconfigured(tls);
            }
        }
        if base.starts_with("http://") {
            // Plain HTTP: no need to load the system's CA store.
            builder = builder.tls_certs_only(Vec::new());
        }
        if opts.insecure {
            tracing::warn!("--insecure: the server's TLS certificate is NOT verified; anyone on the path can read the token and the books");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(Unusable::HttpClient)?;
        let limiter = match opts.transfers {
            Transfers::Fixed(n) => Limiter::fixed(n),
            Transfers::Auto => Limiter::adaptive(transfers.http_start, transfers.http_max),
        };
        let target = HttpTarget {
            base: base.trim_end_matches('/').to_string(),
            client,
            token: opts.token.clone(),
            retries: opts.retries,
            stall: opts.stall_timeout,
            bw: opts.bwlimit.map(|r| TokenBucket::new(r as f64)),
            tps: opts.tpslimit.map(TokenBucket::new),
            limiter,
            bytes_streamed: AtomicU64::new(0),
            bad_replies: AtomicU32::new(0),
        };
        // Pre-flight: one check call. A server that cannot be reached at all is reported at
        // once; other transient answers (5xx, 503, resets) get the usual retries.
        let mut tries = 0;
        loop {
            match target.check_once(&[]).await {
                Attempt::Done(_) => return Ok(target),
                Attempt::Auth(a) => return Err(OpenError::Auth(a)),
                Attempt::Permanent(f) => return Err(Unusable::Server(f).into()),
                Attempt::Transient(t) => {
                    tries += 1;
                    if t.unreachable || tries > target.retries {
                        let gone = Failure::new(FailureKind::TargetGone, t.message);
                        return Err(Unusable::Server(gone).into());
                    }
                    tokio::time::sleep(t.retry_after.unwrap_or_else(|| backoff(tries))).await;
                }
            }
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn limiter(&self) -> Arc<Limiter> {
        self.limiter.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(&t.0),
            None => req,
        }
    }

    /// Keys of the items the server says exist. Items are (key, filename, size, sha1).
    pub async fn check(
        &self,
        items: &[(i64, String, u64, Option<String>)],
    ) -> Result<HashSet<i64>, Failure> {
        let mut exists = HashSet::new();
        for chunk in items.chunks(CHECK_BATCH) {
            let found = self
                .with_retries("check call", || self.check_once(chunk))
                .await?;
            exists.extend(found);
        }
        Ok(exists)
    }

    async fn check_once(
        &self,
        items: &[(i64, String, u64, Option<String>)],
    ) -> Attempt<HashSet<i64>> {
        let files: Vec<Value> = items
            .iter()
            .map(|(key, name, size, sha1)| {
                let mut v = json!({"key": key.to_string(), "filename": name, "size": size});
                if let Some(s) = sha1 {
                    v["sha1"] = json!(s);
                }
                v
            })
            .collect();
        if let Some(tps) = &self.tps {
            tps.take(1.0).await;
        }
        let req = self
            .authorize(self.client.post(self.url("/api/upload/check")))
            .timeout(self.stall)
            .json(&json!({ "files": files }));
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return transient_of(&self.base, "check call", e),
        };
        let status = resp.status();
        if status != StatusCode::OK {
            return self.classify_status("check call", status, resp, "").await;
        }
        let body = match reply::read_json(&mut resp, self.stall).await {
            Ok(b) => b,
            Err(e) => return self.unread_reply("check call", e),
        };
        match reply::check_exists(&body) {
            Ok(exists) => Attempt::Done(exists),
            Err(why) => Attempt::Permanent(Failure::new(
                FailureKind::BadReply,
                format!(
                    "{}: the check call's reply is not the protocol's: {why}",
                    self.base
                ),
            )),
        }
    }

    /// Upload one file (retrying what is transient, re-hashing on 422).
    pub async fn upload(&self, p: Payload) -> Result<Placed, Failure> {
        let mut p = p;
        let mut new_digests: Option<Digests> = None;
        let mut rehashes = 0;
        let name = p.file_name.clone();
        let mut tries = 0u32;
        loop {
            // A slot per attempt: a refused upload gives its slot back before it waits.
            let slot = self.limiter.acquire().await;
            let concurrency = self.limiter.in_flight();
            let started = Instant::now();
            let outcome = self.upload_once(&p).await;
            let in_flight = self.limiter.in_flight();
            drop(slot);
            match outcome {
                Attempt::Done(UploadReply::Stored(mut placed)) => {
                    self.bad_replies.store(0, Ordering::Relaxed);
                    self.limiter.on_success(started.elapsed(), concurrency);
                    placed.new_digests = new_digests;
                    if placed.new_digests.is_some() {
                        placed.detail = Some(format!(
                            "source changed since hashing; re-hashed and sent as {}",
                            placed.target_ref
                        ));
                    }
                    return Ok(placed);
                }
                Attempt::Done(UploadReply::Rehash) if rehashes < 2 => {
                    rehashes += 1;
                    let path = p.source_path.clone();
                    let fresh = tokio::task::spawn_blocking(move || {
                        crate::hash::hash_file(&path, 8 << 20, DigestSet::Blake3AndSha1)
                    })
                    .await
                    .map_err(|e| {
                        Failure::new(
                            FailureKind::Unreadable,
                            format!("{name}: re-hash failed: {e}"),
                        )
                    })??;
                    tracing::info!(
                        "{}: the server saw other bytes than we hashed; re-hashed",
                        p.source_path.display()
                    );
                    p.size = fresh.size;
                    p.data = fresh.data.map(Arc::new);
                    if fresh.digests != p.digests {
                        p.digests = fresh.digests.clone();
                        new_digests = Some(fresh.digests);
                    }
                }
                Attempt::Done(UploadReply::Rehash) => {
                    return Err(Failure::new(
                        FailureKind::TransientExhausted,
                        format!("{name}: the server kept seeing other bytes than we sent (422), even after re-hashing"),
                    ));
                }
                Attempt::Done(UploadReply::Unproven(why)) => return Err(self.bad_reply(&name, why)),
                Attempt::Permanent(f) => return Err(f),
                Attempt::Auth(a) => return Err(Failure::new(FailureKind::Auth, a.to_string())),
                Attempt::Transient(t) => {
                    self.retry_later(&name, &mut tries, t, (in_flight, concurrency))
                        .await?
                }
            }
        }
    }

    /// An upload whose success reply proved no store: the row fails `bad_reply`; after
    /// [`BAD_REPLIES_TO_STOP`] in a row the server is taken for one that does not follow the
    /// protocol at all, and the run stops.
    fn bad_reply(&self, name: &str, why: Unproven) -> Failure {
        let in_a_row = self.bad_replies.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= BAD_REPLIES_TO_STOP {
            return Failure::new(
                FailureKind::BadServer,
                format!(
                    "{}: {in_a_row} uploads in a row got a success reply that proves no store (last: {name}: {why}); the server does not follow the upload protocol (v1.1: a reply carries the file's id and the sha1 sent)",
                    self.base
                ),
            );
        }
        Failure::new(
            FailureKind::BadReply,
            format!("{name}: the server answered success, but its reply proves no store: {why}; not taken as uploaded"),
        )
    }

    /// A reply whose body could not be read whole: transient (a stalled reply also tells the
    /// limiter the server is overloaded).
    fn unread_reply<T>(&self, what: &str, e: reply::ReadError) -> Attempt<T> {
        if let reply::ReadError::Io(e) = e {
            return transient_of(&self.base, what, e);
        }
        Attempt::Transient(Transient {
            overload: matches!(e, reply::ReadError::Stalled(_)),
            message: format!("{what}: {e}"),
            retry_after: None,
            unreachable: false,
        })
    }

    /// One more try after a transient failure: tell the limiter about overload, wait (the
    /// server's `Retry-After`, or jittered backoff), or give up once `--retries` are spent.
    /// `in_flight` counts our requests in flight when the answer came and when the request
    /// started, this one included in each.
    async fn retry_later(
        &self,
        what: &str,
        tries: &mut u32,
        t: Transient,
        (in_flight, started_with): (usize, usize),
    ) -> Result<(), Failure> {
        if t.overload {
            self.limiter.on_overload(in_flight, started_with);
        }
        *tries += 1;
        if *tries > self.retries {
            return Err(self.exhausted(what, *tries, &t.message, t.unreachable));
        }
        tracing::debug!("{what}: {}; retry {tries}/{}", t.message, self.retries);
        self.limiter
            .rest(t.retry_after.unwrap_or_else(|| backoff(*tries)))
            .await;
        Ok(())
    }

    fn exhausted(&self, what: &str, tries: u32, message: &str, unreachable: bool) -> Failure {
        if unreachable {
            // A whole retry budget without reaching the server at all: it is gone, not flaky.
            // Stop the run (rows stay where they are) rather than fail file after file.
            return Failure::new(
                FailureKind::TargetGone,
                format!(
                    "{}: the server cannot be reached ({message}); stopped after {tries} tries",
                    self.base
                ),
            );
        }
        Failure::new(
            FailureKind::TransientExhausted,
            format!("{what}: gave up after {tries} tries: {message}"),
        )
    }

    async fn with_retries<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let mut tries = 0u32;
        loop {
            match attempt().await {
                Attempt::Done(v) => {
                    return Ok(v);
                }
                Attempt::Permanent(f) => return Err(f),
                Attempt::Auth(a) => return Err(Failure::new(FailureKind::Auth, a.to_string())),
                Attempt::Transient(t) => {
                    let in_flight = self.limiter.in_flight() + 1;
                    self.retry_later(what, &mut tries, t, (in_flight, in_flight))
                        .await?
                }
            }
        }
    }

    async fn upload_once(&self, p: &Payload) -> Attempt<UploadReply> {
        if let Some(tps) = &self.tps {
            tps.take(1.0).await;
        }
        let progress = Arc::new(Progress::new());
        let (body, streamed) = match self.file_body(p, progress.clone()).await {
            Ok(b) => b,
            Err(BodyError::Unreadable(f)) => return Attempt::Permanent(f),
            Err(BodyError::SizeChanged) => return Attempt::Done(UploadReply::Rehash),
        };
        // The protocol knows content by SHA-1: never sent without it (the pipeline hashes for
        // it; see `Target::digests_needed`).
        let Some(sha1) = p.digests.sha1.clone() else {
            return Attempt::Permanent(Failure::new(
                FailureKind::Unreadable,
                format!("{}: no SHA-1 to send with it", p.file_name),
            ));
        };
        let mut form = multipart::Form::new().text("sha1", sha1.clone());
        if let Some(md) = &p.metadata {
            let json = serde_json::to_string(md).unwrap_or_else(|_| "{}".into());
            let part = multipart::Part::text(json)
                .mime_str("application/json")
                .expect("static mime type");
            form = form.part("metadata", part);
            if p.origin.is_some_and(|o| o.is_trusted()) && md.has_title_and_author() {
                form = form.text("skip_extraction", "true");
            }
        }
        let file_part = multipart::Part::stream_with_length(body, p.size)
            .file_name(p.file_name.clone())
            .mime_str("application/octet-stream")
            .expect("static mime type");
        form = form.part("file", file_part);
        let req = self
            .authorize(self.client.post(self.url("/api/upload")))
            .multipart(form);
        let send = req.send();
        let resp = tokio::select! {
            r = send => r,
            _ = stall_watch(progress, self.stall) => {
                return Attempt::Transient(Transient {
                    message: format!("upload of {} stalled for {}s", p.file_name, self.stall.as_secs()),
                    retry_after: None,
                    overload: true,
                    unreachable: false,
                });
            }
        };
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => return transient_of(&self.base, &format!("upload of {}", p.file_name), e),
        };
        let status = resp.status();
        if status == StatusCode::OK || status == StatusCode::CREATED {
            let what = format!("upload of {}", p.file_name);
            let body = match reply::read_json(&mut resp, self.stall).await {
                Ok(b) => b,
                Err(e) => return self.unread_reply(&what, e),
            };
            let Proof { id, duplicate } = match reply::upload_proof(&body, &sha1) {
                Ok(proof) => proof,
                Err(why) => return Attempt::Done(UploadReply::Unproven(why)),
            };
            if streamed {
                self.bytes_streamed.fetch_add(p.size, Ordering::Relaxed);
            }
            return Attempt::Done(UploadReply::Stored(Placed {
                target_ref: id.clone(),
                bytes_sent: p.size,
                bytes_read: if streamed { p.size } else { 0 },
                already_present: duplicate,
                new_digests: None,
                // The id is the row's `target_ref`; the event notes only a duplicate.
                detail: duplicate.then(|| "the server already held it".to_string()),
            }));
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            return Attempt::Done(UploadReply::Rehash);
        }
        self.classify_status(
            &format!("upload of {}", p.file_name),
            status,
            resp,
            &p.source_path.display().to_string(),
        )
        .await
    }

    /// The file part's body: the hash stage's buffer, or the file streamed from disk; in chunks
    /// that honour `--bwlimit` and mark progress for the stall timeout.
    async fn file_body(
        &self,
        p: &Payload,
        progress: Arc<Progress>,
    ) -> Result<(reqwest::Body, bool), BodyError> {
        let bw = self.bw.clone();
        let pace = move |chunk: Bytes| {
            let bw = bw.clone();
            let progress = progress.clone();
            async move {
                if let Some(bw) = bw {
                    bw.take(chunk.len() as f64).await;
                }
                progress.mark();
                Ok::<Bytes, std::io::Error>(chunk)
            }
        };
        if let Some(data) = &p.data {
            let bytes = Bytes::from_owner(Shared(data.clone()));
            let chunks: Vec<Bytes> = (0..bytes.len())
                .step_by(CHUNK)
                .map(|i| bytes.slice(i..(i + CHUNK).min(bytes.len())))
                .collect();
            let stream = futures_util::stream::iter(chunks).then(pace);
            return Ok((reqwest::Body::wrap_stream(stream), false));
        }
        let file = tokio::fs::File::open(&p.source_path).await.map_err(|e| {
            BodyError::Unreadable(Failure::new(
                FailureKind::of_source_io(&e),
                format!("{}: cannot open: {e}", p.source_path.display()),
            ))
        })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        if len != p.size {
            // Changed since hashing: re-hash it as on a 422 rather than send a wrong length.
            return Err(BodyError::SizeChanged);
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).then(move |r| {
            let pace = pace.clone();
            async move {
                match r {
                    Ok(b) => pace(b).await,
                    Err(e) => Err(e),
                }
            }
        });
        Ok((reqwest::Body::wrap_stream(stream), true))
    }
}

struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// When a request last moved (a body chunk sent), on the monotonic clock: a wall clock
/// stepped back or forward neither suspends nor fires the stall timeout.
struct Progress {
    base: Instant,
    /// Milliseconds after `base`.
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Resolves when nothing moved (no body chunk sent, no reply) for `stall`.
async fn stall_watch(progress: Arc<Progress>, stall: Duration) {
    loop {
        let due = progress.last() + stall;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Exponential backoff with full jitter: up to 0.5 s, 1 s, 2 s, … capped at 30 s.
fn backoff(try_no: u32) -> Duration {
    let cap = (500u64 << try_no.min(6).saturating_sub(1)).min(30_000);
    let jitter = rand::random_range(cap / 2..=cap);
    Duration::from_millis(jitter)
}

fn transient_of<T>(base: &str, what: &str, e: reqwest::Error) -> Attempt<T> {
    let unreachable = e.is_connect();
    let timeout = e.is_timeout();
    // The whole chain of causes (reqwest's text names the URL, never the headers: no token).
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    let cause = if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    let hint = super::tls::certificate_hint(&cause);
    let message = if unreachable {
        format!("{what}: cannot connect to {base}: {cause}{hint}")
    } else if timeout {
        format!("{what}: timed out")
    } else {
        format!("{what}: {cause}{hint}")
    };
    Attempt::Transient(Transient {
        message,
        retry_after: None,
        overload: timeout,
        unreachable,
    })
}

impl HttpTarget {
    /// The attempt's outcome for a reply other than the expected success; an error body is read
    /// only in part (`reply::error_text`).
    async fn classify_status<T>(
        &self,
        what: &str,
        status: StatusCode,
        mut resp: reqwest::Response,
        file: &str,
    ) -> Attempt<T> {
        let base = &self.base;
        if status.is_redirection() {
            return Attempt::Permanent(redirect_failure(base, what, status, &resp));
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(600)));
        let server_error = reply::error_text(&mut resp, self.stall).await;
        let who = if file.is_empty() {
            what.to_string()
        } else {
            file.to_string()
        };
        match status.as_u16() {
            401 | 403 => Attempt::Auth(AuthRefused {
                server: base.to_string(),
                status,
            }),
            400 => Attempt::Permanent(Failure::new(
                FailureKind::Rejected,
                format!("{who}: the server rejected it (400): {server_error}"),
            )),
            413 => Attempt::Permanent(Failure::new(
                FailureKind::Rejected,
                format!("{who}: too large for this server (413): {server_error}"),
            )),
            429 | 503 => Attempt::Transient(Transient {
                message: format!("{what}: server overloaded ({status})"),
                retry_after,
                overload: true,
                unreachable: false,
            }),
            s if s >= 500 => Attempt::Transient(Transient {
                message: format!("{what}: server error {status}: {server_error}"),
                retry_after,
                overload: false,
                unreachable: false,
            }),
            _ => Attempt::Permanent(Failure::new(
                FailureKind::Rejected,
                format!("{who}: unexpected answer {status}: {server_error}"),
            )),
        }
    }
}

/// A `3xx`: the protocol has none, so the base URL is wrong (at the pre-flight check) or the
/// server changed (later); either way no file can go on. Names where it points, and says so when
/// it is the common case: `http://` sent to `https://` on the same host.
fn redirect_failure(
    base: &str,
    what: &str,
    status: StatusCode,
    resp: &reqwest::Response,
) -> Failure {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(location) = location else {
        return Failure::new(
            FailureKind::BadServer,
            format!("{what}: {base} answered {status} without a Location; the upload protocol has no redirects"),
        );
    };
    let target = resp.url().join(&location).ok();
    let to_https = target.as_ref().and_then(|t| {
        let from = reqwest::Url::parse(base).ok()?;
        (from.scheme() == "http" && t.scheme() == "https" && from.host() == t.host()).then(|| {
            let mut https = from.clone();
            let _ = https.set_scheme("https");
            let _ = https.set_port(t.port());
            https.as_str().trim_end_matches('/').to_string()
        })
    });
    let shown = target.map_or(location, |t| t.to_string());
    let advice = match to_https {
        Some(https) => format!("the server redirects http:// to https://; use --to {https}"),
        None => "the upload protocol has no redirects: the --to URL is not the one the server serves (a missing path prefix?), or the server changed since the run began".to_string(),
    };
    Failure::new(
        FailureKind::BadServer,
        format!("{what}: {base} answered {status} redirecting to {shown}; not followed: {advice}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchdog fires once nothing moved for the stall timeout, never while chunks keep
    /// coming. (Its clock is `Instant`, the monotonic one: a wall clock stepped back no longer
    /// suspends it, nor does one stepped forward fire it. No test steps the machine's clock.)
    #[tokio::test]
    async fn the_stall_watchdog_fires_after_the_stall_and_not_while_chunks_move() {
        let stall = Duration::from_secs(2);
        let progress = Arc::new(Progress::new());
        let watch = tokio::spawn(stall_watch(progress.clone(), stall));
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress.mark();
        }
        assert!(!watch.is_finished(), "fired while chunks kept moving");
        let last = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), watch)
            .await
            .expect("the watchdog never fired")
            .unwrap();
        assert!(last.elapsed() >= stall - Duration::from_millis(100));
    }

    #[test]
    fn progress_is_measured_from_its_last_mark() {
        let p = Progress::new();
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        p.mark();
        assert!(p.last() >= before + Duration::from_millis(19));
        assert!(p.last() <= Instant::now());
    }
}
