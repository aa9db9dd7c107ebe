//! The form of a calibre-server target: `calibre+http(s)://[USER@]HOST:PORT[/PREFIX][#LIBRARY_ID]`,
//! read as `calibredb --with-library http://HOST:PORT/PREFIX#LIBRARY_ID` reads its URL (no
//! `#LIBRARY_ID`: the server's default library). A username may be in the URL; a password never.

use std::fmt;

/// A calibre-server library as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// `http(s)://HOST:PORT[/PREFIX]`, no trailing `/`: where `/cdb/…` is appended.
    pub base: String,
    /// The library on the server (`#LIBRARY_ID`); `None`: the server's default one.
    pub library_id: Option<String>,
    /// The calibre-server user named in the URL (`USER@`), if any.
    pub username: Option<String>,
}

/// Why a `calibre+http(s)://…` target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("target {given}: {reason}")]
    Url { given: String, reason: String },
    #[error("target {0}: put no password in the URL; use --password-file or $BOOKFERRY_CALIBRE_PASSWORD")]
    Password(String),
    #[error("target {0}: no query, please (the library is named after `#`)")]
    Query(String),
    #[error("target {0}: `#` names no library; give its id (`#my_library`) or leave `#` out for the server's default library")]
    EmptyLibrary(String),
}

impl ServerSpec {
    /// Parse `calibre+http(s)://…` (the prefix case-insensitive).
    pub fn parse(given: &str) -> Result<ServerSpec, SpecError> {
        let rest = given
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("calibre+"))
            .map(|_| &given[8..])
            .ok_or_else(|| SpecError::Url {
                given: given.into(),
                reason: "not a calibre+http(s):// URL".into(),
            })?;
        let url = reqwest::Url::parse(rest).map_err(|e| SpecError::Url {
            given: given.into(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SpecError::Url {
                given: given.into(),
                reason: "needs http(s)://HOST:PORT".into(),
            });
        }
        if url.password().is_some() {
            return Err(SpecError::Password(redacted(&url)));
        }
        if url.query().is_some() {
            return Err(SpecError::Query(given.into()));
        }
        let library_id = match url.fragment() {
            None => None,
            Some("") => return Err(SpecError::EmptyLibrary(given.into())),
            Some(f) => Some(percent_decode(f).ok_or_else(|| SpecError::Url {
                given: given.into(),
                reason: "the library id is not UTF-8".into(),
            })?),
        };
        let username = (!url.username().is_empty())
            .then(|| percent_decode(url.username()))
            .flatten();
        let mut base = url.clone();
        base.set_fragment(None);
        let _ = base.set_username("");
        Ok(ServerSpec {
            base: base.as_str().trim_end_matches('/').to_string(),
            library_id,
            username,
        })
    }

    /// The canonical form recorded in the state DB (parses back to the same spec).
    pub fn to_spec(&self) -> String {
        let mut s = String::from("calibre+");
        match &self.username {
            Some(u) => {
                let (scheme, rest) = self.base.split_once("://").unwrap_or(("http", &self.base));
                s.push_str(&format!("{scheme}://{}@{rest}", percent_encode(u)));
            }
            None => s.push_str(&self.base),
        }
        if let Some(l) = &self.library_id {
            s.push('#');
            s.push_str(&percent_encode(l));
        }
        s
    }
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_spec())
    }
}

fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(Some("…"));
    format!("calibre+{u}")
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_calibredb_takes_are_read() {
        let s = ServerSpec::parse("calibre+http://127.0.0.1:8080").unwrap();
        assert_eq!(s.base, "http://127.0.0.1:8080");
        assert_eq!((s.library_id, s.username), (None, None));
        let s =
            ServerSpec::parse("Calibre+HTTPS://ann@books.lan:8443/calibre/#My%20Books").unwrap();
        assert_eq!(s.base, "https://books.lan:8443/calibre");
        assert_eq!(s.library_id.as_deref(), Some("My Books"));
        assert_eq!(s.username.as_deref(), Some("ann"));
        assert_eq!(ServerSpec::parse(&s.to_spec()).unwrap(), s);
        assert_eq!(
            s.to_spec(),
            "calibre+https://ann@books.lan:8443/calibre#My%20Books"
        );
    }

    #[test]
    fn passwords_queries_and_empty_library_ids_are_refused() {
        let e = ServerSpec::parse("calibre+http://ann:secret@h:8080").unwrap_err();
        assert!(matches!(e, SpecError::Password(_)));
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(matches!(
            ServerSpec::parse("calibre+http://h:8080/?x=1"),
            Err(SpecError::Query(_))
        ));
        assert!(matches!(
            ServerSpec::parse("calibre+http://h:8080#"),
            Err(SpecError::EmptyLibrary(_))
        ));
        assert!(matches!(
            ServerSpec::parse("calibre+ftp://h"),
            Err(SpecError::Url { .. })
        ));
    }
}
