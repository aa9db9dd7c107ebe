//! Which form a `--from`/`--to` argument takes: `dir:PATH`, `calibre:PATH`, `http(s)://…`,
//! `calibre+http(s)://…` (prefixes case-insensitive) or a plain path. Any other `scheme://` or
//! rclone-style `name:` prefix is refused here, before anything is created, so that a typo such
//! as `ftp://x/y` or `nas:books` never becomes a local folder named after it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The forms a `--from`/`--to` argument may take, as listed in every refusal.
pub const ACCEPTED: &str =
    "PATH, dir:PATH, calibre:PATH, http://… or https://… (targets only), calibre+http(s)://… (targets only)";

/// What an argument's prefix says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form<'a> {
    /// No prefix: a plain path (the bytes as given).
    Plain(&'a [u8]),
    /// `dir:` and the path after it.
    Dir(&'a [u8]),
    /// `calibre:` and the path after it.
    Calibre(&'a [u8]),
    /// `http://` or `https://`: the whole argument.
    Http,
    /// `calibre+http://` or `calibre+https://`: the whole argument.
    CalibreServer,
}

/// Why an argument's prefix is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("{given}: `{scheme}://` is not a form bookferry knows; use one of: {ACCEPTED}")]
    UnknownScheme { given: String, scheme: String },
    #[error(
        "{given}: `{name}:` looks like a remote name (rclone style), which bookferry does not have; \
         use one of: {ACCEPTED}. A folder whose name has a colon is written dir:{given} or ./{given}"
    )]
    RemoteName { given: String, name: String },
}

/// Reads an argument's form. Prefixes are matched case-insensitively.
pub fn classify(arg: &OsStr) -> Result<Form<'_>, FormError> {
    let bytes = arg.as_bytes();
    if let Some(rest) = strip_prefix_ci(bytes, b"dir:") {
        return Ok(Form::Dir(rest));
    }
    if strip_prefix_ci(bytes, b"calibre+http://").is_some()
        || strip_prefix_ci(bytes, b"calibre+https://").is_some()
    {
        return Ok(Form::CalibreServer);
    }
    if let Some(rest) = strip_prefix_ci(bytes, b"calibre:") {
        return Ok(Form::Calibre(rest));
    }
    if strip_prefix_ci(bytes, b"http://").is_some() || strip_prefix_ci(bytes, b"https://").is_some()
    {
        return Ok(Form::Http);
    }
    if let Some(name) = scheme_like_prefix(bytes) {
        let given = crate::path_text::escape(arg).into_owned();
        let name = String::from_utf8_lossy(name).into_owned();
        return Err(if bytes[name.len() + 1..].starts_with(b"//") {
            FormError::UnknownScheme {
                given,
                scheme: name,
            }
        } else {
            FormError::RemoteName { given, name }
        });
    }
    Ok(Form::Plain(bytes))
}

/// `name` when the argument starts with `name:` and `name` has the shape of a URL scheme or an
/// rclone remote (a letter, then letters, digits, `+`, `-`, `.` or `_`).
fn scheme_like_prefix(bytes: &[u8]) -> Option<&[u8]> {
    let colon = bytes.iter().position(|&b| b == b':')?;
    let name = &bytes[..colon];
    let first = *name.first()?;
    let shaped = first.is_ascii_alphabetic()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'));
    shaped.then_some(name)
}

fn strip_prefix_ci<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &bytes[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Result<Form<'_>, FormError> {
        classify(OsStr::new(s))
    }

    #[test]
    fn documented_forms_are_read_case_insensitively() {
        assert_eq!(form("dir:/a"), Ok(Form::Dir(b"/a")));
        assert_eq!(form("DIR:/a"), Ok(Form::Dir(b"/a")));
        assert_eq!(form("Calibre:/lib"), Ok(Form::Calibre(b"/lib")));
        assert_eq!(form("calibre:"), Ok(Form::Calibre(b"")));
        assert_eq!(form("HTTPS://h/x"), Ok(Form::Http));
        assert_eq!(form("http://h"), Ok(Form::Http));
        assert_eq!(form("calibre+https://h:8080"), Ok(Form::CalibreServer));
        assert_eq!(form("Calibre+HTTP://h"), Ok(Form::CalibreServer));
    }

    #[test]
    fn plain_paths_stay_paths_even_with_a_colon_later() {
        assert_eq!(form("/srv/a:b"), Ok(Form::Plain(b"/srv/a:b")));
        assert_eq!(form("./nas:books"), Ok(Form::Plain(b"./nas:books")));
        assert_eq!(form("my books: vol 1"), Ok(Form::Plain(b"my books: vol 1")));
        assert_eq!(form("books"), Ok(Form::Plain(b"books")));
        assert_eq!(form("dir:nas:books"), Ok(Form::Dir(b"nas:books")));
        assert_eq!(form("1x:y"), Ok(Form::Plain(b"1x:y")));
    }

    #[test]
    fn other_schemes_and_remote_names_are_refused() {
        assert!(matches!(
            form("ftp://x/y"),
            Err(FormError::UnknownScheme { scheme, .. }) if scheme == "ftp"
        ));
        assert!(matches!(
            form("s3://bucket"),
            Err(FormError::UnknownScheme { .. })
        ));
        assert!(matches!(
            form("nas:books"),
            Err(FormError::RemoteName { name, .. }) if name == "nas"
        ));
        let e = form("nas:books").unwrap_err().to_string();
        assert!(
            e.contains("dir:nas:books") && e.contains("./nas:books"),
            "{e}"
        );
        assert!(e.contains("calibre:PATH"), "{e}");
    }
}
