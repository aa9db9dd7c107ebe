//! Calls to calibre-server's `/cdb/cmd/{which}/0` API, made as `calibredb --with-library
//! http://…` makes them (`calibre/db/cli/main.py`, `calibre/srv/cdb.py`): a POST whose body is
//! the command's arguments (JSON, or msgpack when they hold a file's bytes), the library as
//! `?library_id=…`, a JSON reply `{"result": …}` or `{"err": …}`. Logs in as the server asks
//! (`auth`), retries what is transient with jittered backoff, and says which failures mean the
//! server is gone, refused us, or refused one call.

use super::auth::{Challenge, Credentials};
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const JSON: &str = "application/json";
const MSGPACK: &str = "application/x-msgpack";
/// Read and send a file in pieces of this size.
const CHUNK: usize = 256 * 1024;

/// A request's body, made anew for each try: bytes in memory, or a file framed by bytes (the
/// msgpack around a format's contents), streamed from disk so a large book is never held whole.
#[derive(Clone)]
pub enum Body {
    Bytes(Bytes),
    Framed {
        head: Bytes,
        file: std::path::PathBuf,
        size: u64,
        tail: Bytes,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Framed {
                head, size, tail, ..
            } => (head.len() + tail.len()) as u64 + size,
        }
    }

    async fn make(&self) -> Result<reqwest::Body, CallError> {
        use futures_util::StreamExt;
        match self {
            Body::Bytes(b) => Ok(reqwest::Body::from(b.clone())),
            Body::Framed {
                head,
                file,
                size,
                tail,
            } => {
                let f = tokio::fs::File::open(file).await.map_err(|e| {
                    CallError::Source(format!("{}: cannot open: {e}", file.display()), e.kind())
                })?;
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                if len != *size {
                    return Err(CallError::Source(
                        format!(
                            "{}: changed since it was hashed ({len} bytes, was {size}); run again",
                            file.display()
                        ),
                        std::io::ErrorKind::InvalidData,
                    ));
                }
                let head = futures_util::stream::once(std::future::ready(Ok(head.clone())));
                let tail = futures_util::stream::once(std::future::ready(Ok(tail.clone())));
                let body = tokio_util::io::ReaderStream::with_capacity(f, CHUNK);
                Ok(reqwest::Body::wrap_stream(head.chain(body).chain(tail)))
            }
        }
    }
}

/// The server refused us: every call would be refused (exit 4).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthRefused {
    #[error("{server} asks for a calibre-server user: give --username (or USER@ in the URL) and the password in --password-file or $BOOKFERRY_CALIBRE_PASSWORD")]
    Needed { server: String },
    #[error("{server} refused user {user:?} (401): wrong username or password (from --password-file or $BOOKFERRY_CALIBRE_PASSWORD)")]
    Refused { server: String, user: String },
    #[error("{server} refused the call (403): {text}")]
    Forbidden { server: String, text: String },
}

/// Why one call did not succeed.
#[derive(Debug, Clone)]
pub enum CallError {
    Auth(AuthRefused),
    /// Worth another try. `unreachable`: the server was not reached at all (nothing was sent).
    Transient {
        message: String,
        unreachable: bool,
    },
    /// The server or calibre refused this call (a 4xx, or calibre's own error).
    Refused(String),
    /// The file to send cannot be read as it was hashed.
    Source(String, std::io::ErrorKind),
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    library_id: Option<String>,
    creds: Option<Credentials>,
    challenge: Mutex<Option<Challenge>>,
    nc: AtomicU32,
    retries: u32,
    stall: Duration,
}

impl Client {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        library_id: Option<String>,
        creds: Option<Credentials>,
        retries: u32,
        stall: Duration,
    ) -> Client {
        Client {
            http,
            base: base.to_string(),
            library_id,
            creds,
            challenge: Mutex::new(None),
            nc: AtomicU32::new(0),
            retries,
            stall,
        }
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// One `calibredb` command with JSON arguments, retried while transient (only for
    /// commands that change nothing, or change nothing twice).
    pub async fn cmd(&self, which: &str, args: &Value) -> Result<Value, CallError> {
        let body = Body::Bytes(Bytes::from(
            serde_json::to_vec(args).expect("JSON values serialize"),
        ));
        self.with_retries(|| self.cmd_once(which, JSON, &body))
            .await
    }

    /// One try of a command (for those the caller must check before trying again).
    pub async fn cmd_once(
        &self,
        which: &str,
        ctype: &str,
        body: &Body,
    ) -> Result<Value, CallError> {
        let mut path = format!("/cdb/cmd/{which}/0");
        if let Some(l) = &self.library_id {
            path.push_str("?library_id=");
            path.push_str(&query_escape(l));
        }
        let reply = self.post(&path, ctype, body).await?;
        if let Some(err) = reply.get("err") {
            let text = err
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            return Err(CallError::Refused(format!("calibre: {text}")));
        }
        match reply.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(CallError::Refused(format!(
                "{}: a reply without a result to {which}",
                self.base
            ))),
        }
    }

    /// `add_format` for book `book`: the file's bytes in msgpack, as calibredb sends them
    /// (from `data` when the hash stage kept them, else streamed from `path`); never replacing
    /// a format the book has. True when the format was added.
    pub async fn add_format(
        &self,
        book: i64,
        file_name: &str,
        format: &str,
        data: Option<&[u8]>,
        path: &std::path::Path,
        size: u64,
    ) -> Result<bool, CallError> {
        let (head, tail) = msgpack_add_format(book, file_name, format, size);
        let body = match data {
            Some(d) => Body::Bytes(Bytes::from([&head[..], d, &tail[..]].concat())),
            None => Body::Framed {
                head: Bytes::from(head),
                file: path.to_path_buf(),
                size,
                tail: Bytes::from(tail),
            },
        };
        let r = self
            .with_retries(|| self.cmd_once("add_format", MSGPACK, &body))
            .await?;
        Ok(r.as_bool().unwrap_or(false))
    }

    /// Make `jpeg` book `book`'s cover (`set_metadata`'s `fields` action with `cover`, the
    /// image's bytes in msgpack, as `calibredb set_metadata --field cover:…` sends them
    /// remotely). Setting the same cover twice is harmless, so it is retried.
    pub async fn set_cover(&self, book: i64, jpeg: &[u8]) -> Result<(), CallError> {
        let body = Body::Bytes(Bytes::from(msgpack_set_cover(book, jpeg)));
        self.with_retries(|| self.cmd_once("set_metadata", MSGPACK, &body))
            .await
            .map(drop)
    }

    pub async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let mut tries = 0u32;
        loop {
            match call().await {
                Err(CallError::Transient {
                    message,
                    unreachable,
                }) if tries < self.retries => {
                    tries += 1;
                    tracing::debug!("{message}; retry {tries}/{}", self.retries);
                    tokio::time::sleep(backoff(tries)).await;
                    let _ = unreachable;
                }
                other => return other,
            }
        }
    }

    /// A GET of one of the server's JSON endpoints (`path` with its query), retried while
    /// transient: it changes nothing.
    pub async fn get_json(&self, path: &str) -> Result<Value, CallError> {
        self.with_retries(|| self.call(reqwest::Method::GET, path, None))
            .await
    }

    /// A POST, logging in when the server asks (see [`Self::call`]).
    async fn post(&self, path: &str, ctype: &str, body: &Body) -> Result<Value, CallError> {
        self.call(reqwest::Method::POST, path, Some((ctype, body)))
            .await
    }

    /// A call with its body (a POST's), logging in when the server asks (a challenge, then at
    /// most one stale nonce).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, &Body)>,
    ) -> Result<Value, CallError> {
        // No progress watch on a body being sent: a call is given --stall-timeout, and one
        // second more per 256 KiB it sends (a link slower than that fails it as transient).
        let sent = body.map_or(0, |(_, b)| b.len());
        let timeout = self.stall + Duration::from_secs(sent / CHUNK as u64);
        let url = format!("{}{path}", self.base);
        let uri = reqwest::Url::parse(&url)
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .unwrap_or_else(|_| path.to_string());
        for _ in 0..3 {
            let sent_auth = self.challenge.lock().expect("challenge lock").clone();
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(timeout)
                .header(reqwest::header::ACCEPT, JSON);
            if let Some((ctype, body)) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, ctype)
                    .header(reqwest::header::CONTENT_LENGTH, body.len())
                    .body(body.make().await?);
            }
            if let (Some(ch), Some(c)) = (&sent_auth, &self.creds) {
                let nc = self.nc.fetch_add(1, Ordering::Relaxed) + 1;
                let cnonce = format!("{:016x}", rand::random::<u64>());
                req = req.header(
                    reqwest::header::AUTHORIZATION,
                    ch.authorization(c, method.as_str(), &uri, nc, &cnonce),
                );
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Err(self.transient(e)),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let Some(c) = &self.creds else {
                    return Err(CallError::Auth(AuthRefused::Needed {
                        server: self.base.clone(),
                    }));
                };
                let fresh = resp
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(Challenge::parse);
                let stale = matches!(fresh, Some(Challenge::Digest { stale: true, .. }));
                if sent_auth.is_some() && !stale {
                    return Err(CallError::Auth(AuthRefused::Refused {
                        server: self.base.clone(),
                        user: c.username.clone(),
                    }));
                }
                let Some(fresh) = fresh else {
                    return Err(CallError::Refused(format!(
                        "{}: 401 with an authentication scheme calibre-server does not use",
                        self.base
                    )));
                };
                *self.challenge.lock().expect("challenge lock") = Some(fresh);
                continue;
            }
            let text = match tokio::time::timeout(self.stall, resp.bytes()).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(self.transient(e)),
                Err(_) => {
                    return Err(CallError::Transient {
                        message: format!("{}: the reply stalled", self.base),
                        unreachable: false,
                    })
                }
            };
            let first_line = || {
                String::from_utf8_lossy(&text[..text.len().min(300)])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            };
            return match status.as_u16() {
                200 => serde_json::from_slice(&text).map_err(|e| {
                    CallError::Refused(format!("{}: a reply that is not JSON: {e}", self.base))
                }),
                403 => Err(CallError::Auth(AuthRefused::Forbidden {
                    server: self.base.clone(),
                    text: first_line(),
                })),
                s if s >= 500 || s == 429 => Err(CallError::Transient {
                    message: format!("{}: server error {status}: {}", self.base, first_line()),
                    unreachable: false,
                }),
                _ => Err(CallError::Refused(format!(
                    "{} answered {status}: {}",
                    self.base,
                    first_line()
                ))),
            };
        }
        Err(CallError::Refused(format!(
            "{}: kept asking to log in again",
            self.base
        )))
    }

    fn transient(&self, e: reqwest::Error) -> CallError {
        let unreachable = e.is_connect();
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let hint = crate::target::tls::certificate_hint(&cause);
        CallError::Transient {
            message: if unreachable {
                format!("cannot connect to {}: {cause}{hint}", self.base)
            } else if e.is_timeout() {
                format!("{}: no answer within {}s", self.base, self.stall.as_secs())
            } else {
                format!("{}: {cause}{hint}", self.base)
            },
            unreachable,
        }
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, … up to 30 s.
fn backoff(try_no: u32) -> Duration {
    let cap = (500u64 << try_no.min(6).saturating_sub(1)).min(30_000);
    Duration::from_millis(rand::random_range(cap / 2..=cap))
}

pub(super) fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `[book, [file_name, <size bytes>], format, false]` in msgpack, `add_format`'s arguments as
/// calibredb sends them remotely (`replace` false: an existing format is never overwritten):
/// the bytes before the file's contents and those after.
fn msgpack_add_format(book: i64, file_name: &str, format: &str, size: u64) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(file_name.len() + 32);
    head.push(0x94);
    head.push(0xd3);
    head.extend_from_slice(&book.to_be_bytes());
    head.push(0x92);
    msgpack_str(&mut head, file_name);
    msgpack_bin_head(&mut head, size);
    let mut tail = Vec::with_capacity(format.len() + 2);
    msgpack_str(&mut tail, format);
    tail.push(0xc2);
    (head, tail)
}

/// `["fields", book, [["cover", [None, <jpeg bytes>]]]]` in msgpack: `set_metadata`'s
/// arguments for a new cover as calibredb sends them remotely.
fn msgpack_set_cover(book: i64, jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(jpeg.len() + 40);
    out.push(0x93);
    msgpack_str(&mut out, "fields");
    out.push(0xd3);
    out.extend_from_slice(&book.to_be_bytes());
    out.extend_from_slice(&[0x91, 0x92]);
    msgpack_str(&mut out, "cover");
    out.extend_from_slice(&[0x92, 0xc0]);
    msgpack_bin_head(&mut out, jpeg.len() as u64);
    out.extend_from_slice(jpeg);
    out
}

/// The head of msgpack binary data of `size` bytes.
fn msgpack_bin_head(out: &mut Vec<u8>, size: u64) {
    if size < 256 {
        out.push(0xc4);
        out.push(size as u8);
    } else if size < 65536 {
        out.push(0xc5);
        out.extend_from_slice(&(size as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(size as u32).to_be_bytes());
    }
}

fn msgpack_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.push(0xd9);
        out.push(n as u8);
    } else if n < 65536 {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes Python's `msgpack.packb([2, ['x.epub', b'PK fake epub'], 'EPUB', False],
    /// use_bin_type=True)` gives, but for the int (we always send int64).
    #[test]
    fn add_format_arguments_are_calibredbs_msgpack() {
        let (head, tail) = msgpack_add_format(2, "x.epub", "EPUB", 12);
        let b = [&head[..], b"PK fake epub", &tail[..]].concat();
        let mut want = vec![0x94, 0xd3, 0, 0, 0, 0, 0, 0, 0, 2, 0x92, 0xa6];
        want.extend_from_slice(b"x.epub");
        want.extend_from_slice(&[0xc4, 12]);
        want.extend_from_slice(b"PK fake epub");
        want.push(0xa4);
        want.extend_from_slice(b"EPUB");
        want.push(0xc2);
        assert_eq!(b, want);
    }

    /// Python's `msgpack.packb(['fields', 7, [['cover', [None, b'JPG']]]], use_bin_type=True)`,
    /// but for the int (we always send int64).
    #[test]
    fn set_cover_arguments_are_calibredbs_msgpack() {
        let mut want = vec![0x93, 0xa6];
        want.extend_from_slice(b"fields");
        want.extend_from_slice(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 7, 0x91, 0x92, 0xa5]);
        want.extend_from_slice(b"cover");
        want.extend_from_slice(&[0x92, 0xc0, 0xc4, 3]);
        want.extend_from_slice(b"JPG");
        assert_eq!(msgpack_set_cover(7, b"JPG"), want);
    }
}
