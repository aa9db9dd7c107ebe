//! The calibre-server target (`--to calibre+http(s)://HOST:PORT[/PREFIX][#LIBRARY_ID]`): a
//! live library written through the running server's `/cdb/` API, as `calibredb
//! --with-library http://…` writes it, so calibre's machine-wide writer lock is never needed.
//! Each book is made with the metadata bookferry already has (`add empty`, no file for the
//! server to parse), then each file added to it as a format (`add_format`); calibre's
//! duplicate rule decides which books the library already has. Every book it makes carries the
//! identifier `bookferry:<mark>` (derived from the migration and the book's group, as the
//! calibre target derives its uuids), so a book added by a run killed before it recorded it is
//! found again (in the `list` read at open, or by a search before a retried create) and never
//! added twice. The row's `target_ref` is the server's book id.

mod auth;
mod client;
mod library;
pub mod spec;

pub use auth::Credentials;
pub use client::AuthRefused;
pub use spec::{ServerSpec, SpecError};

use super::http::{HttpOptions, Transfers};
use super::limit::Limiter;
use super::{OpenError, Payload, Placed, Transferred, Unusable};
use crate::failure::{Failure, FailureKind};
use crate::metadata::Origin;
use crate::skip_reason::SkipReason;
use crate::tuning::TransferTuning;
use client::{CallError, Client};
use library::{Fields, Library, LIST_FIELDS, MARK};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct CalibreServerTarget {
    spec: ServerSpec,
    client: Client,
    limiter: Arc<Limiter>,
    library: Mutex<Library>,
    /// One lock per book group: two files of one book never create it twice.
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// (book, FORMAT) added by this run.
    added: Mutex<HashSet<(i64, String)>>,
    merge_formats: bool,
    migration_key: String,
}

/// What to do with one file, decided from what the library holds.
enum Plan {
    Create,
    AddTo(i64),
    /// Our book has this format from a run that died before recording it.
    Present(i64),
    There(SkipReason, String),
}

impl CalibreServerTarget {
    /// Build the client, log in, and read the library's books (one `list` call).
    pub async fn open(
        spec: &ServerSpec,
        creds: Option<Credentials>,
        opts: &HttpOptions,
        transfers: &TransferTuning,
        merge_formats: bool,
        migration_key: &str,
    ) -> Result<CalibreServerTarget, OpenError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("bookferry/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        let https = spec.base.starts_with("https://");
        if let Some(ca) = opts.ca_cert.as_ref().filter(|_| https && !opts.insecure) {
            let tls = ca.client_config().map_err(|source| Unusable::CaCertTls {
                path: ca.path().to_path_buf(),
                source,
            })?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        if !https {
            builder = builder.tls_certs_only(Vec::new());
        }
        if opts.insecure {
            tracing::warn!("--insecure: the server's TLS certificate is NOT verified; anyone on the path can read the password and the books");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(Unusable::HttpClient)?;
        let client = Client::new(
            http,
            &spec.base,
            spec.library_id.clone(),
            creds,
            opts.retries,
            opts.stall_timeout,
        );
        let limiter = match opts.transfers {
            Transfers::Fixed(n) => Limiter::fixed(n),
            Transfers::Auto => Limiter::adaptive(transfers.http_start, transfers.http_max),
        };
        // One `list` call: reachable, logged in, and the library's books. A server that cannot
        // be reached at all is reported at once, as for the HTTP target.
        let args = json!([LIST_FIELDS, "id", true, "", -1]);
        let body = client::Body::Bytes(bytes::Bytes::from(args.to_string()));
        let listed = match client.cmd_once("list", "application/json", &body).await {
            Err(CallError::Transient {
                unreachable: false, ..
            }) => client.cmd("list", &args).await,
            other => other,
        };
        let library = match listed {
            Ok(r) => Library::from_list(&r).ok_or_else(|| {
                Unusable::Server(Failure::new(
                    FailureKind::BadServer,
                    format!("{spec}: the list of books is not calibre's"),
                ))
            })?,
            Err(CallError::Auth(a)) => return Err(OpenError::CalibreServerAuth(a)),
            Err(e) => return Err(Unusable::Server(failure(e, &spec.to_spec(), None)).into()),
        };
        Ok(CalibreServerTarget {
            spec: spec.clone(),
            client,
            limiter,
            library: Mutex::new(library),
            groups: Mutex::new(HashMap::new()),
            added: Mutex::new(HashSet::new()),
            merge_formats,
            migration_key: migration_key.to_string(),
        })
    }

    pub fn limiter(&self) -> Arc<Limiter> {
        self.limiter.clone()
    }

    pub fn describe(&self, p: &Payload) -> String {
        format!(
            "{} as a {} of {:?}",
            self.spec,
            p.format.to_uppercase(),
            title_of(p)
        )
    }

    /// Add one file: to this migration's book of its group, made first when missing, unless
    /// calibre's duplicate rule finds the library has the book (`target_has_book`; with
    /// `--merge-formats` the file is added to that book when it lacks the format).
    pub async fn transfer(&self, p: Payload) -> Result<Transferred, Failure> {
        let format = p.format.to_uppercase();
        let fields = Fields::of(p.metadata.as_ref(), &title_of(&p));
        let mark = self.mark_of(&p, &fields);
        let group = self.group_lock(&mark);
        let _group = group.lock().await;
        let _slot = self.limiter.acquire().await;
        let concurrency = self.limiter.in_flight();
        let started = Instant::now();
        let plan = self.plan(&mark, &fields, &format);
        let book = match plan {
            Plan::There(reason, detail) => return Ok(Transferred::AlreadyThere { reason, detail }),
            Plan::Present(book) => {
                return Ok(Transferred::Placed(Placed {
                    target_ref: book.to_string(),
                    already_present: true,
                    detail: Some(format!(
                        "book {book} has its {format}, added by an earlier run that stopped before recording it"
                    )),
                    ..Placed::default()
                }))
            }
            Plan::AddTo(book) => book,
            Plan::Create => {
                let book = self.create(&fields, &mark, &p.file_name).await?;
                let mut ids = fields.identifiers.clone();
                ids.push((MARK.into(), mark.clone()));
                self.library.lock().expect("library lock").add(
                    book,
                    &fields.title,
                    &fields.authors,
                    &fields.languages,
                    &ids,
                );
                book
            }
        };
        let added = self
            .client
            .add_format(
                book,
                &p.file_name,
                &format,
                p.data.as_deref().map(Vec::as_slice),
                &p.source_path,
                p.size,
            )
            .await
            .map_err(|e| {
                failure(
                    e,
                    &p.source_path.display().to_string(),
                    Some(self.client.retries()),
                )
            })?;
        if !added && self.library.lock().expect("library lock").marked(&mark) == Some(book) {
            // Our own book has it: our try whose reply was lost (the group is ours alone).
            return Ok(Transferred::Placed(Placed {
                target_ref: book.to_string(),
                already_present: true,
                detail: Some(format!(
                    "book {book} has its {format} already (a reply was lost)"
                )),
                ..Placed::default()
            }));
        }
        if !added {
            return Ok(Transferred::AlreadyThere {
                reason: SkipReason::BookHasFormat,
                detail: format!("book {book} of {} has a {format} already", self.spec),
            });
        }
        self.library
            .lock()
            .expect("library lock")
            .add_format(book, &format);
        self.added
            .lock()
            .expect("added lock")
            .insert((book, format.clone()));
        self.limiter.on_success(started.elapsed(), concurrency);
        Ok(Transferred::Placed(Placed {
            target_ref: book.to_string(),
            bytes_sent: p.size,
            bytes_read: if p.data.is_some() { 0 } else { p.size },
            detail: Some(format!("added to book {book} as its {format}")),
            ..Placed::default()
        }))
    }

    fn plan(&self, mark: &str, fields: &Fields, format: &str) -> Plan {
        let lib = self.library.lock().expect("library lock");
        let has = |book: i64| lib.book(book).is_some_and(|b| b.formats.contains(format));
        if let Some(book) = lib.marked(mark) {
            if !has(book) {
                return Plan::AddTo(book);
            }
            let ours_now = self
                .added
                .lock()
                .expect("added lock")
                .contains(&(book, format.to_string()));
            if ours_now {
                return Plan::There(
                    SkipReason::BookHasFormat,
                    format!("book {book} has a {format} already (another file of this book)"),
                );
            }
            return Plan::Present(book);
        }
        match lib.identical(fields) {
            None => Plan::Create,
            Some(book) if !self.merge_formats => Plan::There(
                SkipReason::TargetHasBook,
                format!("the library has this book as book {book} (calibre's duplicate rule); --merge-formats adds missing formats"),
            ),
            Some(book) if has(book) => Plan::There(
                SkipReason::BookHasFormat,
                format!("book {book} has a {format} already"),
            ),
            Some(book) => Plan::AddTo(book),
        }
    }

    /// Make the book (`add empty` with its metadata). A try that may have reached the server
    /// is followed by a search for the book's mark before the next, so a lost reply never
    /// makes a second book.
    async fn create(&self, fields: &Fields, mark: &str, file: &str) -> Result<i64, Failure> {
        let args = json!(["empty", fields.calibre_metadata(mark)]);
        let body = client::Body::Bytes(bytes::Bytes::from(
            serde_json::to_vec(&args).expect("JSON values serialize"),
        ));
        let mut tries = 0;
        loop {
            let outcome = self.client.cmd_once("add", "application/json", &body).await;
            let err = match outcome {
                Ok(r) => {
                    return r
                        .get(0)
                        .and_then(|ids| ids.get(0))
                        .and_then(Value::as_i64)
                        .ok_or_else(|| {
                            Failure::new(
                                FailureKind::BadReply,
                                format!("{file}: {} made no book: {r}", self.spec),
                            )
                        })
                }
                Err(e) => e,
            };
            let CallError::Transient { unreachable, .. } = &err else {
                return Err(failure(err, file, None));
            };
            if !unreachable {
                if let Some(book) = self
                    .find_marked(mark)
                    .await
                    .map_err(|e| failure(e, file, Some(self.client.retries())))?
                {
                    return Ok(book);
                }
            }
            tries += 1;
            if tries > self.client.retries() {
                return Err(failure(err, file, Some(tries - 1)));
            }
            tokio::time::sleep(Duration::from_millis(500 << tries.min(6))).await;
        }
    }

    async fn find_marked(&self, mark: &str) -> Result<Option<i64>, CallError> {
        let search = format!("identifiers:\"={MARK}:{mark}\"");
        let r = self.client.cmd("search", &json!([search])).await;
        match r {
            Ok(v) => Ok(v
                .as_array()
                .and_then(|a| a.iter().filter_map(Value::as_i64).min())),
            // calibre raises an error for a search that finds nothing.
            Err(CallError::Refused(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The book's mark: this migration and the book's group (a calibre source book's uuid, or
    /// calibre's fuzzy title and the authors), hashed.
    fn mark_of(&self, p: &Payload, f: &Fields) -> String {
        let uuid = (p.origin == Some(Origin::Calibre))
            .then(|| p.metadata.as_ref().and_then(|m| m.uuid.clone()))
            .flatten()
            .map(|u| u.trim().to_lowercase())
            .filter(|u| u.len() == 36);
        let group = match uuid {
            Some(u) => format!("uuid:{u}"),
            None => {
                let fuzzy = crate::calibre::text::fuzzy_title(&f.title);
                if fuzzy.is_empty() {
                    format!("file:{}", p.source_rel)
                } else {
                    let authors: Vec<String> = f.authors.iter().map(|a| a.to_lowercase()).collect();
                    format!("book:{fuzzy}\u{1f}{}", authors.join("&"))
                }
            }
        };
        let mut h = blake3::Hasher::new();
        h.update(self.migration_key.as_bytes());
        h.update(b"\0");
        h.update(group.as_bytes());
        h.finalize().to_hex()[..32].to_string()
    }

    fn group_lock(&self, mark: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut groups = self.groups.lock().expect("groups lock");
        groups.retain(|_, l| Arc::strong_count(l) > 1);
        groups.entry(mark.to_string()).or_default().clone()
    }
}

/// The file's name without its extension: the title calibre gives a file without one.
fn title_of(p: &Payload) -> String {
    p.metadata
        .as_ref()
        .and_then(|m| m.title.clone())
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| {
            std::path::Path::new(&p.file_name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

/// A call's error as the row's failure (`retried`: how many retries were spent on it).
fn failure(e: CallError, what: &str, retried: Option<u32>) -> Failure {
    let after = retried.map_or(String::new(), |n| format!(" (after {n} retries)"));
    match e {
        CallError::Auth(a) => Failure::new(FailureKind::Auth, a.to_string()),
        CallError::Transient {
            message,
            unreachable: true,
        } => Failure::new(FailureKind::TargetGone, format!("{message}{after}")),
        CallError::Transient { message, .. } => Failure::new(
            FailureKind::TransientExhausted,
            format!("{what}: {message}{after}"),
        ),
        CallError::Refused(m) => Failure::new(FailureKind::Rejected, format!("{what}: {m}")),
        CallError::Source(m, kind) => {
            Failure::new(FailureKind::of_source_io(&std::io::Error::from(kind)), m)
        }
    }
}
