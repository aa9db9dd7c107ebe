//! Where files go. One enum over the targets (a folder, an HTTP server, a calibre library),
//! each in its own module, all answering the same questions: which of these does the target already have (by
//! name+size, by content), place this file, make what was placed durable. A target never touches
//! the state DB: it returns outcomes and the pipeline records them.

pub mod calibre;
pub mod calibre_server;
pub mod flusher;
pub mod folder;
pub mod held_files;
pub mod http;
pub mod layout;
pub mod limit;
pub mod made_names;
pub mod name_rules;
pub mod sidecar_state;
pub mod sidecars;
pub mod staged;
pub mod tls;

use crate::failure::Failure;
use crate::hash::{DigestSet, Digests};
use crate::metadata::{Metadata, Origin};
use crate::tuning::TransferTuning;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The target as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A folder (`dir:PATH` or a plain path).
    Dir(PathBuf),
    /// A server speaking the upload protocol (`http://…` or `https://…`, with an optional path
    /// prefix).
    Http(String),
    /// A calibre library (`calibre:PATH`), created when PATH is missing or empty.
    Calibre(PathBuf),
    /// A library of a running calibre-server (`calibre+http(s)://HOST:PORT[/PREFIX][#LIB]`).
    CalibreServer(calibre_server::ServerSpec),
}

impl TargetSpec {
    /// Parse and canonicalize (a folder that does not exist yet is resolved through its nearest
    /// existing ancestor).
    ///
    /// `s` is a target recorded in the state DB (`to_spec`'s text: bytes that are not UTF-8
    /// written `\xFF`); [`TargetSpec::from_arg`] takes one from the command line.
    pub fn parse(s: &str) -> Result<TargetSpec, TargetSpecError> {
        TargetSpec::from_arg(&crate::path_text::unescape(s))
    }

    /// A target as given on the command line: a path of any bytes, or a URL (UTF-8), in one of
    /// the forms [`crate::arg_form`] accepts (prefixes case-insensitive).
    pub fn from_arg(arg: &std::ffi::OsStr) -> Result<TargetSpec, TargetSpecError> {
        use crate::arg_form::{classify, Form};
        use std::os::unix::ffi::OsStrExt;
        let path_of = |raw: &[u8]| -> Result<PathBuf, TargetSpecError> {
            if raw.is_empty() {
                return Err(TargetSpecError::EmptyPath);
            }
            Ok(canonicalize_lenient(Path::new(
                std::ffi::OsStr::from_bytes(raw),
            ))?)
        };
        match classify(arg)? {
            Form::Plain(raw) | Form::Dir(raw) => Ok(TargetSpec::Dir(path_of(raw)?)),
            Form::Calibre(raw) => {
                if raw.is_empty() {
                    return Err(TargetSpecError::CalibreWithoutPath);
                }
                Ok(TargetSpec::Calibre(path_of(raw)?))
            }
            Form::CalibreServer => {
                let Some(s) = arg.to_str() else {
                    return Err(TargetSpecError::UrlNotUtf8(
                        crate::path_text::escape(arg).into_owned(),
                    ));
                };
                Ok(TargetSpec::CalibreServer(
                    calibre_server::ServerSpec::parse(s)?,
                ))
            }
            Form::Http => {
                let Some(s) = arg.to_str() else {
                    return Err(TargetSpecError::UrlNotUtf8(
                        crate::path_text::escape(arg).into_owned(),
                    ));
                };
                let url = reqwest::Url::parse(s).map_err(|source| TargetSpecError::Url {
                    given: s.into(),
                    source,
                })?;
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(TargetSpecError::Credentials);
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(TargetSpecError::QueryOrFragment(s.into()));
                }
                Ok(TargetSpec::Http(
                    url.as_str().trim_end_matches('/').to_string(),
                ))
            }
        }
    }

    /// The canonical form recorded in the state DB.
    pub fn to_spec(&self) -> String {
        match self {
            TargetSpec::Dir(p) => {
                format!("dir:{}", crate::path_text::escape(p.as_os_str()))
            }
            TargetSpec::Http(u) => u.clone(),
            TargetSpec::Calibre(p) => {
                format!("calibre:{}", crate::path_text::escape(p.as_os_str()))
            }
            TargetSpec::CalibreServer(s) => s.to_spec(),
        }
    }

    /// The local folder this target writes under, if any.
    pub fn local_root(&self) -> Option<&Path> {
        match self {
            TargetSpec::Dir(p) | TargetSpec::Calibre(p) => Some(p),
            TargetSpec::Http(_) | TargetSpec::CalibreServer(_) => None,
        }
    }
}

/// Why a target cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum TargetSpecError {
    #[error("target {given}: {source}")]
    Url {
        given: String,
        #[source]
        source: url::ParseError,
    },
    #[error("target: put no credentials in the URL; use BOOKFERRY_TOKEN or --token-file")]
    Credentials,
    #[error("target {0}: no query or fragment, please")]
    QueryOrFragment(String),
    #[error("target calibre: needs the library's folder, e.g. calibre:~/Calibre Library")]
    CalibreWithoutPath,
    #[error("target: empty path")]
    EmptyPath,
    #[error("target {0}: a URL must be UTF-8")]
    UrlNotUtf8(String),
    #[error(transparent)]
    CalibreServer(#[from] calibre_server::SpecError),
    #[error("target {0}")]
    Form(#[from] crate::arg_form::FormError),
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Why a path cannot be made absolute.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("current folder: {0}")]
    CurrentDir(#[source] std::io::Error),
    #[error("{}: cannot resolve this path", .0.display())]
    Unresolvable(PathBuf),
}

/// Canonicalize a path that may not exist yet: the existing ancestor is canonicalized and the
/// rest appended (with `.`/`..` refused).
pub fn canonicalize_lenient(p: &Path) -> Result<PathBuf, PathError> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(PathError::CurrentDir)?
            .join(p)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for comp in rest.iter().rev() {
                    out.push(comp);
                }
                return Ok(out);
            }
            Err(_) => {
                let Some(name) = existing.file_name() else {
                    return Err(PathError::Unresolvable(p.to_path_buf()));
                };
                rest.push(name.to_os_string());
                existing = existing
                    .parent()
                    .ok_or_else(|| PathError::Unresolvable(p.to_path_buf()))?;
            }
        }
    }
}

/// A question for the cheap check: does the target hold a file of this name and size?
#[derive(Debug, Clone)]
pub struct NameQuery {
    pub key: i64,
    pub file_name: String,
    pub size: u64,
}

/// A question for the content check: does the target hold these bytes? (A local target
/// compares BLAKE3, an HTTP server is asked by the SHA-1.)
#[derive(Debug, Clone)]
pub struct ContentQuery {
    pub key: i64,
    pub digests: Digests,
    pub file_name: String,
    pub size: u64,
}

/// One file to place or send.
#[derive(Debug, Clone)]
pub struct Payload {
    pub row_id: i64,
    pub source_path: PathBuf,
    pub source_rel: String,
    pub file_name: String,
    pub size: u64,
    pub format: String,
    pub digests: Digests,
    pub metadata: Option<Metadata>,
    pub origin: Option<Origin>,
    /// The file's bytes when the hash stage kept them (small files): sent without a second read.
    pub data: Option<Arc<Vec<u8>>>,
    /// The file's bytes already written into the target by the hash task, without a name or
    /// under a temporary one (local targets in copy mode): the transfer moves it into place.
    pub staged: Option<Arc<staged::Staged>>,
    /// Where this migration placed an earlier version of this file (rescan found it changed).
    pub previous_ref: Option<String>,
}

/// What a transfer did.
#[derive(Debug, Clone, Default)]
pub struct Placed {
    pub target_ref: String,
    pub bytes_sent: u64,
    pub bytes_read: u64,
    /// The target already held exactly these bytes (nothing new was written).
    pub already_present: bool,
    /// Set when the file changed since it was hashed: the digests of the bytes actually sent.
    pub new_digests: Option<Digests>,
    pub detail: Option<String>,
}

/// What a transfer ended in.
#[derive(Debug, Clone)]
pub enum Transferred {
    /// Placed or sent (or found there already, byte for byte).
    Placed(Placed),
    /// Not written: the target holds this book already in another form (`reason` is the
    /// row's `skip_reason`).
    AlreadyThere {
        reason: crate::skip_reason::SkipReason,
        detail: String,
    },
}

/// Why what a target placed could not be made durable (nothing of it may be recorded).
#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    #[error("syncing the target folder: {0}")]
    Folder(#[source] std::io::Error),
    #[error("committing the calibre library: {0}")]
    Calibre(#[source] calibre::CalibreError),
}

/// Makes what a local target placed durable (see [`Target::durability_barrier`]).
pub type DurabilityBarrier = Box<dyn FnMut() -> Result<(), DurabilityError> + Send>;

/// Why a target cannot be used at all (exit code 2); each names the target and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("target folder {}: {what}: {source}", .root.display())]
    FolderIo {
        root: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("target folder {}: exists and is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("source {}: {source}", .root.display())]
    SourceUnreadable {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--link {}: source {} and {} {} are on different filesystems; use --link copy or symlink",
        .mode.as_str(), .source_root.display(), .what, .target.display())]
    LinkAcrossFilesystems {
        mode: folder::LinkMode,
        source_root: PathBuf,
        /// "target" or "calibre library".
        what: &'static str,
        target: PathBuf,
    },
    #[error("--link reflink: the target filesystem at {} cannot clone files ({source}); use --link copy", .target.display())]
    NoReflink {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("calibre library {0}")]
    Calibre(#[source] calibre::CalibreError),
    #[error("calibre library {}: cannot open: {source}", .root.display())]
    CalibreIo {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The source library's book uuids cannot be read.
    #[error("{0}")]
    SourceLibrary(#[source] crate::calibre::ReadError),
    /// The TLS configuration for a `--ca-cert` file (read at usage time, see
    /// [`tls::CaFile::load`]) cannot be built.
    #[error("--ca-cert {}: cannot set up TLS with it: {source}", .path.display())]
    CaCertTls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The server answered the pre-flight check with a refusal, or could not be reached.
    #[error("{}", .0.message)]
    Server(Failure),
    #[error("internal: opening the target: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Why a target cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Unreachable, not writable, misconfigured: exit 2.
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// The server refused our credentials: exit 4.
    #[error(transparent)]
    Auth(#[from] http::AuthRefused),
    /// calibre-server refused our user or password: exit 4.
    #[error(transparent)]
    CalibreServerAuth(#[from] calibre_server::AuthRefused),
}
/// Options shared by folder-like targets.
#[derive(Debug, Clone)]
pub struct PlacementOptions {
    pub layout: layout::Layout,
    pub link: folder::LinkMode,
    /// calibre target: add missing formats to books the library already has.
    pub merge_formats: bool,
    /// calibre target: write even while a calibre program holds its writer lock.
    pub ignore_calibre_lock: bool,
    /// calibre target: make the cover calibre would for each new book (`--no-covers`: off).
    pub covers: bool,
    /// What tells this migration apart from others (`state::migration_record::key`): the calibre
    /// target derives its books' uuids from it, to know its own books in a later run.
    pub migration_key: String,
    /// calibre target: how this migration numbers its books, as recorded in the state DB when
    /// it first opened the library (`None`: not yet, decided at this open).
    pub calibre_book_ids: Option<calibre::BookIds>,
    /// folder target: calibre's "save to disk" sidecars beside each book (`target::sidecars`).
    pub sidecars: bool,
}

#[cfg(test)]
impl PlacementOptions {
    /// Copies under their source paths (`{source_path}.{ext}`), nothing else set: for tests.
    pub fn copy_to_source_paths() -> PlacementOptions {
        PlacementOptions {
            layout: layout::Layout::parse("{source_path}.{ext}").unwrap(),
            link: folder::LinkMode::Copy,
            merge_formats: false,
            ignore_calibre_lock: false,
            covers: true,
            migration_key: String::new(),
            calibre_book_ids: None,
            sidecars: false,
        }
    }
}

pub enum Target {
    Folder(Arc<folder::FolderTarget>, Arc<limit::Limiter>),
    Http(Arc<http::HttpTarget>),
    Calibre(Arc<calibre::CalibreTarget>, Arc<limit::Limiter>),
    CalibreServer(Arc<calibre_server::CalibreServerTarget>),
}

/// A local target's limit on transfers: `--transfers N`, else the tuning's for `auto`.
fn local_transfers(t: http::Transfers, auto: &TransferTuning) -> usize {
    match t {
        http::Transfers::Fixed(n) => n,
        http::Transfers::Auto => auto.local,
    }
}

impl Target {
    /// Check the target is usable and open it. `transfers` sizes its limit on transfers in
    /// flight when `--transfers` is `auto`.
    pub async fn open(
        spec: &TargetSpec,
        source_root: &Path,
        opts: &PlacementOptions,
        http_opts: &http::HttpOptions,
        transfers: TransferTuning,
        dry_run: bool,
    ) -> Result<Target, OpenError> {
        match spec {
            TargetSpec::Dir(root) => {
                let f = folder::FolderTarget::open(root, source_root, opts.clone(), dry_run)?;
                let n = local_transfers(http_opts.transfers, &transfers);
                Ok(Target::Folder(Arc::new(f), limit::Limiter::fixed(n)))
            }
            TargetSpec::Calibre(root) => {
                let from_library = crate::calibre::is_calibre_library(source_root);
                let copts = calibre::CalibreOptions {
                    link: opts.link,
                    merge_formats: opts.merge_formats,
                    ignore_calibre_lock: opts.ignore_calibre_lock,
                    covers: opts.covers,
                    migration_key: opts.migration_key.clone(),
                    source_uuids: Arc::new(if from_library {
                        crate::calibre::book_uuids(source_root).map_err(Unusable::SourceLibrary)?
                    } else {
                        HashSet::new()
                    }),
                    keep_source_books: from_library,
                    book_ids: opts.calibre_book_ids,
                    source_max_id: if from_library {
                        crate::calibre::max_book_id(source_root).map_err(Unusable::SourceLibrary)?
                    } else {
                        0
                    },
                };
                let (root, source_root) = (root.clone(), source_root.to_path_buf());
                let c = tokio::task::spawn_blocking(move || {
                    calibre::CalibreTarget::open(&root, &source_root, copts, dry_run)
                })
                .await
                .map_err(Unusable::Task)??;
                let n = local_transfers(http_opts.transfers, &transfers);
                Ok(Target::Calibre(Arc::new(c), limit::Limiter::fixed(n)))
            }
            TargetSpec::Http(base) => Ok(Target::Http(Arc::new(
                http::HttpTarget::open(base, http_opts, &transfers).await?,
            ))),
            TargetSpec::CalibreServer(server) => {
                let creds = calibre_server::credentials(server, http_opts);
                Ok(Target::CalibreServer(Arc::new(
                    calibre_server::CalibreServerTarget::open(
                        server,
                        creds,
                        http_opts,
                        &transfers,
                        opts.merge_formats,
                        opts.covers,
                        &opts.migration_key,
                        source_root,
                    )
                    .await?,
                )))
            }
        }
    }

    /// A calibre target's numbering of its books (see `calibre::CalibreTarget::book_ids`).
    pub fn calibre_book_ids(&self) -> Option<calibre::BookIds> {
        match self {
            Target::Calibre(c, _) => c.book_ids(),
            Target::Folder(..) | Target::Http(_) | Target::CalibreServer(_) => None,
        }
    }

    /// The limit on transfers in flight.
    pub fn limiter(&self) -> Arc<limit::Limiter> {
        match self {
            Target::Folder(_, l) | Target::Calibre(_, l) => l.clone(),
            Target::Http(h) => h.limiter(),
            Target::CalibreServer(c) => c.limiter(),
        }
    }

    /// Read what a folder target held at the open, if not read yet, on a blocking thread (the
    /// first name check waits for it; a run that checks no name never walks the target).
    async fn ready(&self) {
        if let Target::Folder(f, _) = self {
            if !f.has_read_held() {
                let f = f.clone();
                joined(tokio::task::spawn_blocking(move || {
                    f.held();
                }))
                .await;
            }
        }
    }

    /// Keys of the queries whose name and size the target already holds.
    pub async fn check_names(&self, q: Vec<NameQuery>) -> Result<HashSet<i64>, Failure> {
        self.ready().await;
        match self {
            Target::Folder(f, _) => Ok(f.check_names(&q)),
            Target::Calibre(c, _) => Ok(c.check_names(&q)),
            // The server knows books, not file names: every file is looked at.
            Target::CalibreServer(_) => Ok(HashSet::new()),
            Target::Http(h) => {
                let items: Vec<_> = q
                    .into_iter()
                    .map(|n| (n.key, n.file_name, n.size, None))
                    .collect();
                h.check(&items).await
            }
        }
    }

    /// Whether a row put back after its placement failed is asked about its content again. It
    /// passed the content check in the run it failed in; a folder keeps nothing of a failed
    /// placement, so the answer is the same, and asking would read the whole folder (347.6 s
    /// at 1,000,000 placed files). A server may have stored an upload whose reply was lost, and
    /// is asked.
    pub fn asks_again_after_a_failed_placement(&self) -> bool {
        !matches!(self, Target::Folder(..))
    }

    /// The queries whose content the target already holds, with where it is when known.
    pub async fn check_content(
        &self,
        q: Vec<ContentQuery>,
    ) -> Result<HashMap<i64, Option<String>>, Failure> {
        match self {
            // Content this migration placed is found in the state DB; here, files that were in
            // the folder before the run (placed by something else, or by a run that died).
            Target::Folder(f, _) => {
                let f = f.clone();
                Ok(joined(tokio::task::spawn_blocking(move || f.check_content(&q))).await)
            }
            // Format files the library held at open (from a calibre source, none: two books
            // may hold the same bytes; see `calibre/target.rs`).
            Target::Calibre(c, _) => {
                let c = c.clone();
                Ok(joined(tokio::task::spawn_blocking(move || c.check_content(&q))).await)
            }
            // Which book a file belongs to is decided by its metadata, at transfer.
            Target::CalibreServer(_) => Ok(HashMap::new()),
            Target::Http(h) => {
                // The server knows content by SHA-1 only: a row without one is not asked (by
                // name and size it would be another question); it is hashed before it is sent.
                let items: Vec<_> = q
                    .into_iter()
                    .filter_map(|c| Some((c.key, c.file_name, c.size, Some(c.digests.sha1?))))
                    .collect();
                if items.is_empty() {
                    return Ok(HashMap::new());
                }
                Ok(h.check(&items)
                    .await?
                    .into_iter()
                    .map(|k| (k, None))
                    .collect())
            }
        }
    }

    /// Where the hash task may write a file of `size` bytes into the target right after
    /// hashing it (see [`staged`]): local targets in copy mode; never in a dry run.
    pub fn staging(&self, size: u64) -> Option<&staged::Staging> {
        match self {
            Target::Folder(f, _) => f.staging(size),
            Target::Calibre(c, _) => c.staging(),
            Target::Http(_) | Target::CalibreServer(_) => None,
        }
    }

    /// The digests the target needs of every file besides BLAKE3 (which every target uses): an
    /// HTTP server knows content by SHA-1 (the upload protocol sends it, and is asked by it).
    pub fn digests_needed(&self) -> DigestSet {
        match self {
            Target::Http(_) => DigestSet::Blake3AndSha1,
            Target::Folder(..) | Target::Calibre(..) | Target::CalibreServer(_) => {
                DigestSet::Blake3
            }
        }
    }

    /// Whether the target places files from blocking threads (folder, calibre), so that files
    /// ready at once are best handed over together ([`Target::transfer_group`]).
    pub fn is_local(&self) -> bool {
        !matches!(self, Target::Http(_) | Target::CalibreServer(_))
    }

    /// Place or send a group of files; one result per payload, in order. An HTTP target sends
    /// them side by side, each waiting for a slot under its limit per attempt. A local target
    /// places them one after the other in one blocking task holding one slot of its limit (a
    /// hand-off to a blocking thread per file was a measurable share of a local copy's CPU
    /// once the bytes were staged).
    pub async fn transfer_group(&self, group: Vec<Payload>) -> Vec<Result<Transferred, Failure>> {
        type Place = Box<dyn Fn(&Payload) -> Result<Transferred, Failure> + Send>;
        let (limiter, place): (_, Place) = match self {
            Target::Http(h) => {
                let uploads = group
                    .into_iter()
                    .map(|p| async move { h.upload(p).await.map(Transferred::Placed) });
                return futures_util::future::join_all(uploads).await;
            }
            Target::CalibreServer(c) => {
                let adds = group.into_iter().map(|p| c.transfer(p));
                return futures_util::future::join_all(adds).await;
            }
            Target::Folder(f, limiter) => {
                let f = f.clone();
                (
                    limiter,
                    Box::new(move |p| f.place(p).map(Transferred::Placed)),
                )
            }
            Target::Calibre(c, limiter) => {
                let c = c.clone();
                (limiter, Box::new(move |p| c.transfer(p)))
            }
        };
        let _slot = limiter.acquire().await;
        joined(tokio::task::spawn_blocking(move || {
            group.iter().map(place).collect()
        }))
        .await
    }

    /// Whether content duplicates must all be placed, the pipeline skipping none by content:
    /// only a calibre library (or a calibre-server's) filled from a calibre library (a folder
    /// holding `metadata.db`, as `open` tells), where the source's books are the unit: two books holding the same
    /// bytes stay two books, and no book loses a format. From a folder source, every target
    /// keeps one copy of each content and skips the others as `duplicate` (unless
    /// `--keep-duplicates`).
    pub fn keeps_source_books(&self) -> bool {
        match self {
            Target::Calibre(c, _) => c.keeps_source_books(),
            Target::CalibreServer(c) => c.keeps_source_books(),
            Target::Folder(..) | Target::Http(_) => false,
        }
    }

    /// Where the file would go (for `--dry-run`).
    pub fn describe(&self, p: &Payload) -> String {
        match self {
            Target::Folder(f, _) => f.destination_of(p),
            Target::Http(h) => format!("{}/api/upload as {:?}", h.base(), p.file_name),
            Target::Calibre(c, _) => c.describe(p),
            Target::CalibreServer(c) => c.describe(p),
        }
    }

    /// What makes the placed files durable, for targets whose transfers must be made durable
    /// before they are recorded (the pipeline runs it before each commit that records them).
    pub fn durability_barrier(&self) -> Option<DurabilityBarrier> {
        match self {
            Target::Folder(f, _) => {
                let f = f.clone();
                Some(Box::new(move || f.flush().map_err(DurabilityError::Folder)))
            }
            // The library's commit syncs the files, then records their books.
            Target::Calibre(c, _) => {
                let c = c.clone();
                Some(Box::new(move || {
                    c.commit().map_err(DurabilityError::Calibre)
                }))
            }
            Target::Http(_) | Target::CalibreServer(_) => None,
        }
    }
}

/// A blocking task's result. Its panic goes on in the caller (the pipeline stops the run for
/// it, see `pipeline::fault`): never read as an answer ("nothing there") or as the files' fault.
async fn joined<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => std::panic::resume_unwind(Box::new(e.to_string())),
        },
    }
}
