//! The calibre-server target (`--to calibre+http(s)://HOST:PORT[/PREFIX][#LIBRARY_ID]`): a
//! live library written through the running server's `/cdb/` API, as `calibredb
//! --with-library http://…` writes it, so calibre's machine-wide writer lock is never needed.
//! Each book is made in one `add empty` call with what the direct calibre target writes and
//! the server lets a client set: its fields as that target maps them (`library::Fields`, over
//! the direct target's own mapping), dates added and published and the sorts as given, the
//! cover the direct target would write (`cover`), and a calibre source's custom column values
//! for the server's columns of the same definition (`columns`); then each file is added to it
//! as a format (`add_format`; the server does not parse it). calibre's duplicate rule decides
//! which books the library already has, never taking this migration's own. Every book it
//! makes carries the identifier `bookferry:<tag><mark>` (the migration's tag, then a hash of
//! the migration and the book's group, as the calibre target derives its uuids), so a book
//! added by a run killed before it recorded it is found again (in the `list` read at open, or
//! by a search before a retried create) and never added twice. The row's `target_ref` is the
//! server's book id.

mod auth;
mod client;
mod columns;
mod cover;
mod library;
pub mod spec;
mod view;

pub use auth::Credentials;
pub use client::AuthRefused;
pub use spec::{ServerSpec, SpecError};
pub use view::{FormatsOf, ServerBook, ServerView};

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
use std::path::Path;
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
    /// The start of every mark this migration gives (see [`migration_tag`]).
    tag: String,
    /// Give each new book the cover the direct calibre target would (`--no-covers`: none but
    /// a calibre source book's own).
    covers: bool,
    /// The server's columns that take a calibre source's custom column values.
    columns: columns::Columns,
    /// The source is a calibre library: its books stay as they are, two that hold the same
    /// bytes too (as the direct calibre target keeps them).
    keeps_source_books: bool,
    /// The library's books read again before the run's first new book (see
    /// [`CalibreServerTarget::refresh_once`]).
    refreshed: tokio::sync::OnceCell<()>,
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
    /// Build the client, log in, and read the library's books (one `list` call); from a
    /// calibre source (`source_root`), match its custom columns to the server's.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        spec: &ServerSpec,
        creds: Option<Credentials>,
        opts: &HttpOptions,
        transfers: &TransferTuning,
        merge_formats: bool,
        covers: bool,
        migration_key: &str,
        source_root: &Path,
    ) -> Result<CalibreServerTarget, OpenError> {
        let client = connect(spec, creds, opts)?;
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
        let tag = migration_tag(migration_key);
        let library = match listed {
            Ok(r) => Library::from_list(&r, &tag).ok_or_else(|| {
                Unusable::Server(Failure::new(
                    FailureKind::BadServer,
                    format!("{spec}: the list of books is not calibre's"),
                ))
            })?,
            Err(CallError::Auth(a)) => return Err(OpenError::CalibreServerAuth(a)),
            Err(e) => return Err(Unusable::Server(failure(e, &spec.to_spec(), None)).into()),
        };
        let keeps_source_books = crate::calibre::is_calibre_library(source_root);
        let columns = if keeps_source_books {
            let theirs =
                columns::source_definitions(source_root).map_err(Unusable::SourceLibrary)?;
            if theirs.is_empty() {
                columns::Columns::default()
            } else {
                let map = client
                    .cmd("custom_columns", &json!([]))
                    .await
                    .map_err(|e| match e {
                        CallError::Auth(a) => OpenError::CalibreServerAuth(a),
                        e => Unusable::Server(failure(e, &spec.to_spec(), None)).into(),
                    })?;
                columns::Columns::matched(&theirs, &map, &spec.to_spec())
            }
        } else {
            columns::Columns::default()
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
            tag,
            covers,
            columns,
            keeps_source_books,
            refreshed: tokio::sync::OnceCell::new(),
        })
    }

    /// See [`Target::keeps_source_books`](super::Target::keeps_source_books).
    pub fn keeps_source_books(&self) -> bool {
        self.keeps_source_books
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
        let mut plan = self.plan(&mark, &fields, &format);
        if matches!(plan, Plan::Create) {
            self.refresh_once().await?;
            plan = self.plan(&mark, &fields, &format);
        }
        // Made before a slot is taken: a PDF's page may take a while to render.
        let cover = match plan {
            Plan::Create if self.wants_cover(&p) => cover::cover_for(&p).await,
            Plan::AddTo(book) if self.lacks_cover(book, &mark, &p) => cover::cover_for(&p).await,
            _ => None,
        };
        let _slot = self.limiter.acquire().await;
        let concurrency = self.limiter.in_flight();
        let started = Instant::now();
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
            Plan::AddTo(book) => {
                if let Some(jpeg) = &cover {
                    self.set_cover(book, jpeg, &p).await;
                }
                book
            }
            Plan::Create => {
                let user_metadata = self.columns.user_metadata(fields.custom_values());
                let md = fields.calibre_metadata(&mark, cover.as_deref(), user_metadata);
                let book = self.create(md, &mark, &p.file_name).await?;
                let f = &fields.stored;
                let mut ids = f.identifiers.clone();
                ids.push((MARK.into(), mark.clone()));
                let mut lib = self.library.lock().expect("library lock");
                lib.add(book, &f.title, &f.authors, &f.languages, &ids);
                if cover.is_some() {
                    lib.set_cover(book);
                }
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
        if !added && Self::marked(&self.library.lock().expect("library lock"), &mark) == Some(book)
        {
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
            detail: Some(format!("added as the book's {format}")),
            ..Placed::default()
        }))
    }

    /// Before the run's first new book, read the library's books again (one `list` call), so
    /// a book an earlier run had sent just before it was killed, which the server stored only
    /// after this run's `list` at open, is found by its mark and not made twice. Every later
    /// book this run makes was planned after that.
    async fn refresh_once(&self) -> Result<(), Failure> {
        self.refreshed
            .get_or_try_init(|| async {
                let args = json!([LIST_FIELDS, "id", true, "", -1]);
                let listed =
                    self.client.cmd("list", &args).await.map_err(|e| {
                        failure(e, &self.spec.to_spec(), Some(self.client.retries()))
                    })?;
                let new = self
                    .library
                    .lock()
                    .expect("library lock")
                    .read_list(&listed);
                match new {
                    Some(n) => {
                        tracing::debug!("{}: {n} books added since the run began", self.spec);
                        Ok(())
                    }
                    None => Err(Failure::new(
                        FailureKind::BadServer,
                        format!("{}: the list of books is not calibre's", self.spec),
                    )),
                }
            })
            .await
            .map(drop)
    }

    /// Whether `book`, to which the file goes, is this migration's and has no cover: it gets
    /// the one this file brings, if any (the direct target's new book takes the first cover
    /// one of its files brings).
    fn lacks_cover(&self, book: i64, mark: &str, p: &Payload) -> bool {
        let lib = self.library.lock().expect("library lock");
        self.wants_cover(p)
            && Self::marked(&lib, mark) == Some(book)
            && lib.book(book).is_some_and(|b| !b.cover)
    }

    /// Make `jpeg` book `book`'s cover; a failure is a warning (the file is added all the same).
    async fn set_cover(&self, book: i64, jpeg: &[u8], p: &Payload) {
        match self.client.set_cover(book, jpeg).await {
            Ok(()) => self.library.lock().expect("library lock").set_cover(book),
            Err(e) => tracing::warn!(
                "{}: the cover of book {book} was not set: {}",
                p.source_rel,
                failure(e, &p.source_rel, Some(self.client.retries())).message
            ),
        }
    }

    /// Whether the file's cover is wanted: a calibre source book's always, one made from the
    /// file unless `--no-covers`.
    fn wants_cover(&self, p: &Payload) -> bool {
        self.covers || p.origin == Some(Origin::Calibre)
    }

    /// The book of `mark`: its own, or (a book made by a bookferry before marks carried the
    /// migration's tag) the mark without the tag.
    fn marked(lib: &Library, mark: &str) -> Option<i64> {
        lib.marked(mark)
            .or_else(|| mark.get(TAG_LEN..).and_then(|legacy| lib.marked(legacy)))
    }

    fn plan(&self, mark: &str, fields: &Fields, format: &str) -> Plan {
        let lib = self.library.lock().expect("library lock");
        let has = |book: i64| lib.book(book).is_some_and(|b| b.formats.contains(format));
        if let Some(book) = Self::marked(&lib, mark) {
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
    async fn create(&self, md: Value, mark: &str, file: &str) -> Result<i64, Failure> {
        let args = json!(["empty", md]);
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

    /// The book's mark: this migration's tag, then this migration and the book's group (a
    /// calibre source book's uuid, or calibre's fuzzy title and the authors) hashed.
    fn mark_of(&self, p: &Payload, f: &Fields) -> String {
        let uuid = (p.origin == Some(Origin::Calibre))
            .then(|| p.metadata.as_ref().and_then(|m| m.uuid.clone()))
            .flatten()
            .map(|u| u.trim().to_lowercase())
            .filter(|u| u.len() == 36);
        let group = match uuid {
            Some(u) => format!("uuid:{u}"),
            None => {
                let fuzzy = crate::calibre::text::fuzzy_title(&f.stored.title);
                if fuzzy.is_empty() {
                    format!("file:{}", p.source_rel)
                } else {
                    let authors: Vec<String> =
                        f.stored.authors.iter().map(|a| a.to_lowercase()).collect();
                    format!("book:{fuzzy}\u{1f}{}", authors.join("&"))
                }
            }
        };
        let mut h = blake3::Hasher::new();
        h.update(self.migration_key.as_bytes());
        h.update(b"\0");
        h.update(group.as_bytes());
        format!("{}{}", self.tag, &h.finalize().to_hex()[..32])
    }

    fn group_lock(&self, mark: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut groups = self.groups.lock().expect("groups lock");
        groups.retain(|_, l| Arc::strong_count(l) > 1);
        groups.entry(mark.to_string()).or_default().clone()
    }
}

/// Hex digits of a migration's tag.
const TAG_LEN: usize = 8;

/// The migration's tag, which starts every mark it gives: its books are told apart from the
/// user's and from another migration's (calibre's duplicate rule never takes one of them for
/// the library's, as the direct calibre target never takes its own books).
fn migration_tag(migration_key: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"bookferry migration tag\0");
    h.update(migration_key.as_bytes());
    h.finalize().to_hex()[..TAG_LEN].to_string()
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
/// The login for the server at `spec`: the user from `--username` (else the URL's `USER@`)
/// with the password given; none without both.
pub fn credentials(spec: &ServerSpec, opts: &HttpOptions) -> Option<Credentials> {
    let user = opts.username.clone().or_else(|| spec.username.clone())?;
    let password = opts.password.as_ref()?;
    Some(Credentials::new(user, password.secret().to_string()))
}

/// The HTTP client for the server at `spec`, logging in with `creds` when it asks.
fn connect(
    spec: &ServerSpec,
    creds: Option<Credentials>,
    opts: &HttpOptions,
) -> Result<Client, Unusable> {
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
    Ok(Client::new(
        http,
        &spec.base,
        spec.library_id.clone(),
        creds,
        opts.retries,
        opts.stall_timeout,
    ))
}

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
