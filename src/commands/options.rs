//! What a run works with: the migration's options (recorded ones, with the command line's
//! overrides) and the HTTP target's options from the command line and the environment.

use super::UsageError;
use crate::cli::{FilterArgs, HttpArgs, TargetArgs, TuningArgs};
use crate::filter::{Filter, FilterSpec};
use crate::source::formats::FormatSet;
use crate::state::migration_record::{RecordedOptions, OPTIONS_VERSION};
use crate::target::folder::LinkMode;
use crate::target::http::{HttpOptions, Token, Transfers};
use crate::target::layout::{Layout, DEFAULT_LAYOUT};
use crate::target::limit::parse_rate;
use crate::target::tls::CaFile;
use crate::target::PlacementOptions;
use crate::tuning::{parse_size, Machine, Overrides, Tuning};
use std::time::Duration;

/// The options a migration is recorded with.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    pub formats: FormatSet,
    /// `--include`, `--exclude`, sizes and tags, as recorded.
    pub filter_spec: FilterSpec,
    /// The same, built.
    pub filter: Filter,
    pub placement: PlacementOptions,
    pub keep_duplicates: bool,
}

impl MigrationOptions {
    /// Recorded options, overridden by what the command line gives again.
    pub fn resolve(
        recorded: Option<&RecordedOptions>,
        formats: Option<&str>,
        filter: Option<&FilterArgs>,
        target: &TargetArgs,
    ) -> Result<MigrationOptions, UsageError> {
        let none = RecordedOptions::default();
        let rec = recorded.unwrap_or(&none);
        let filter_spec = match filter.filter(|f| f.given()) {
            Some(given) => filter_spec(given)?,
            None => rec.filter.clone(),
        };
        let filter = filter_spec.build()?;
        let formats = match formats.or(rec.formats.as_deref()) {
            Some(f) => FormatSet::parse(f)?,
            None => FormatSet::default(),
        };
        let layout_src = target.layout.as_deref().or(rec.layout.as_deref());
        let layout = Layout::parse(layout_src.unwrap_or(DEFAULT_LAYOUT))?;
        if let (Some(_), Some(old)) = (&target.layout, &rec.layout) {
            // A preset is recorded as its template: naming it again is no change.
            if layout.template() != old {
                tracing::warn!(
                    "--layout changed from {old:?}: files already placed stay where they are"
                );
            }
        }
        let link = LinkMode::parse(
            target
                .link
                .as_deref()
                .or(rec.link.as_deref())
                .unwrap_or("copy"),
        )?;
        let keep_duplicates = target.keep_duplicates || rec.keep_duplicates;
        let merge_formats = target.merge_formats || rec.merge_formats;
        Ok(MigrationOptions {
            formats,
            filter_spec,
            filter,
            placement: PlacementOptions {
                layout,
                link,
                merge_formats,
                ignore_calibre_lock: target.ignore_calibre_lock,
                covers: !(target.no_covers || rec.no_covers),
                migration_key: String::new(),
                calibre_book_ids: None,
                sidecars: target.sidecars || rec.sidecars,
            },
            keep_duplicates,
        })
    }

    /// The options as the state DB records them.
    pub fn to_recorded(&self) -> RecordedOptions {
        RecordedOptions {
            version: OPTIONS_VERSION,
            formats: Some(self.formats.to_spec()),
            layout: Some(self.placement.layout.template().to_string()),
            link: Some(self.placement.link.as_str().to_string()),
            keep_duplicates: self.keep_duplicates,
            merge_formats: self.placement.merge_formats,
            sidecars: self.placement.sidecars,
            no_covers: !self.placement.covers,
            filter: self.filter_spec.clone(),
        }
    }
}

/// The filter as given on the command line, its list files made absolute (the state DB
/// records it, and a later run may start elsewhere).
pub fn filter_spec(given: &FilterArgs) -> Result<FilterSpec, UsageError> {
    let size = |s: &Option<String>| -> Result<Option<u64>, UsageError> {
        s.as_deref()
            .map(|s| parse_size(s).map_err(UsageError::FilterSize))
            .transpose()
    };
    let absolute = |p: &Option<std::path::PathBuf>| -> Result<_, UsageError> {
        p.as_deref()
            .map(|p| crate::target::canonicalize_lenient(p).map_err(UsageError::StatePath))
            .transpose()
    };
    Ok(FilterSpec {
        include: given.include.clone(),
        exclude: given.exclude.clone(),
        exclude_from: absolute(&given.exclude_from)?,
        files_from: absolute(&given.files_from)?,
        ignore_case: given.ignore_case,
        min_size: size(&given.min_size)?,
        max_size: size(&given.max_size)?,
        include_tag: given.include_tag.clone(),
        exclude_tag: given.exclude_tag.clone(),
    })
}

/// The machine's tuning, with the command line's overrides.
pub fn tuning(args: &TuningArgs) -> Result<Tuning, UsageError> {
    let buffer_memory = match &args.buffer_memory {
        Some(s) => Some(parse_size(s).map_err(UsageError::BufferMemory)?),
        None => None,
    };
    let overrides = Overrides {
        checkers: args.checkers,
        buffer_memory,
    };
    Ok(Tuning::new(Machine::detect(), overrides))
}

/// The HTTP target's options from the command line and the environment.
pub fn http_options(http: &HttpArgs, tuning: &TuningArgs) -> Result<HttpOptions, UsageError> {
    let transfers = match tuning.transfers.as_deref() {
        None | Some("auto") => Transfers::Auto,
        Some(n) => Transfers::Fixed(
            n.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| UsageError::Transfers(n.into()))?,
        ),
    };
    let bwlimit = match &http.bwlimit {
        Some(r) => Some(parse_rate(r)?),
        None => None,
    };
    if http.tpslimit.is_some_and(|t| t <= 0.0) {
        return Err(UsageError::TpsLimit);
    }
    Ok(HttpOptions {
        token: load_token(http)?,
        username: http.username.clone(),
        password: load_password(http)?,
        ca_cert: http.ca_cert.as_deref().map(CaFile::load).transpose()?,
        insecure: http.insecure,
        retries: http.retries,
        stall_timeout: Duration::from_secs(http.stall_timeout.max(1)),
        bwlimit,
        tpslimit: http.tpslimit,
        transfers,
        ..HttpOptions::default()
    })
}

/// A file holding a secret (`flag` names it in the warning): its text, with a warning when
/// others may read it.
fn read_secret_file(path: &std::path::Path, flag: &str) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)?;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{flag} {}: readable by others (mode {:o}); chmod 600 it",
                path.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
    Ok(text)
}

/// A calibre-server password from `$BOOKFERRY_CALIBRE_PASSWORD`, else `--password-file`
/// (its first line; warning if others can read it).
fn load_password(http: &HttpArgs) -> Result<Option<Token>, UsageError> {
    if let Ok(p) = std::env::var("BOOKFERRY_CALIBRE_PASSWORD") {
        if !p.is_empty() {
            return Ok(Some(Token::new(p)));
        }
    }
    let Some(path) = &http.password_file else {
        return Ok(None);
    };
    let text =
        read_secret_file(path, "--password-file").map_err(|source| UsageError::PasswordFile {
            path: path.clone(),
            source,
        })?;
    let pw = text.lines().next().unwrap_or("");
    if pw.is_empty() {
        return Err(UsageError::EmptyPasswordFile(path.clone()));
    }
    Ok(Some(Token::new(pw.to_string())))
}

/// The token from `$BOOKFERRY_TOKEN`, else `--token-file` (warning if others can read it).
fn load_token(http: &HttpArgs) -> Result<Option<Token>, UsageError> {
    if let Ok(t) = std::env::var("BOOKFERRY_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Some(Token::new(t.trim().to_string())));
        }
    }
    let Some(path) = &http.token_file else {
        return Ok(None);
    };
    let text = read_secret_file(path, "--token-file").map_err(|source| UsageError::TokenFile {
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(UsageError::EmptyTokenFile(path.clone()));
    }
    Ok(Some(Token::new(token.to_string())))
}
