//! Logging in to calibre-server as it does it (`calibre/srv/auth.py`): a user of its user
//! database, by HTTP digest auth (MD5, `qop=auth`; its default without TLS) or basic auth (its
//! `--auth-mode basic`, and its default with TLS), whichever the server's challenge asks for.
//! The password lives in memory only and never shows in `Debug`, logs or errors.

use md5::{Digest, Md5};
use std::fmt;

/// A calibre-server user and password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: String, password: String) -> Credentials {
        Credentials { username, password }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

/// What the server's `WWW-Authenticate` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Digest {
        realm: String,
        nonce: String,
        opaque: Option<String>,
        /// `qop="auth"` offered (calibre always offers it).
        qop_auth: bool,
        /// `algorithm=MD5-sess`.
        sess: bool,
        /// The nonce we sent was too old (`stale=true`): the password was right.
        stale: bool,
    },
}

impl Challenge {
    /// Read a `WWW-Authenticate` header; `None` for schemes calibre-server does not use.
    pub fn parse(header: &str) -> Option<Challenge> {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let params = params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Digest {
            realm: get("realm")?,
            nonce: get("nonce")?,
            opaque: get("opaque"),
            qop_auth: get("qop")
                .is_some_and(|q| q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth"))),
            sess: get("algorithm").is_some_and(|a| a.eq_ignore_ascii_case("md5-sess")),
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The `Authorization` header for one request (`uri`: its path and query as sent). `nc` is
    /// the count of requests made with this nonce; `cnonce` a fresh client nonce.
    pub fn authorization(
        &self,
        c: &Credentials,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        match self {
            Challenge::Basic => {
                let raw = format!("{}:{}", c.username, c.password);
                format!("Basic {}", base64(raw.as_bytes()))
            }
            Challenge::Digest {
                realm,
                nonce,
                opaque,
                qop_auth,
                sess,
                ..
            } => {
                let mut ha1 = md5_hex(&format!("{}:{realm}:{}", c.username, c.password));
                if *sess {
                    ha1 = md5_hex(&format!("{ha1}:{nonce}:{cnonce}"));
                }
                let ha2 = md5_hex(&format!("{method}:{uri}"));
                let nc = format!("{nc:08x}");
                let response = if *qop_auth {
                    md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
                } else {
                    md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
                };
                let mut h = format!(
                    "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
                    quote(&c.username),
                    if *sess { "MD5-sess" } else { "MD5" }
                );
                if *qop_auth {
                    h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
                }
                if let Some(o) = opaque {
                    h.push_str(&format!(", opaque=\"{o}\""));
                }
                h
            }
        }
    }
}

/// Standard base64 with padding (RFC 4648), as Python's `b64encode`.
pub(super) fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `k=v, k="v, w"` → pairs (quotes removed).
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => v.push(ch),
                }
            }
            (v, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((k, v));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617's own example (section 3.5): the response a server checks.
    #[test]
    fn digest_response_is_rfc_2617s() {
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let c = Credentials::new("Mufasa".into(), "Circle Of Life".into());
        let h = ch.authorization(&c, "GET", "/dir/index.html", 1, "0a4f113b");
        assert!(
            h.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{h}"
        );
        assert!(
            h.contains("nc=00000001") && h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#)
        );
    }

    #[test]
    fn calibres_challenges_are_read_and_the_password_never_shows() {
        let ch = Challenge::parse(
            r#"Digest realm="calibre", nonce="a1:b2", algorithm="MD5", qop="auth", stale="true""#,
        )
        .unwrap();
        assert!(matches!(
            ch,
            Challenge::Digest {
                stale: true,
                qop_auth: true,
                sess: false,
                ..
            }
        ));
        assert_eq!(
            Challenge::parse(r#"Basic realm="calibre""#),
            Some(Challenge::Basic)
        );
        let c = Credentials::new("ann".into(), "s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            Challenge::Basic.authorization(&c, "POST", "/", 1, ""),
            "Basic YW5uOnMzY3JldA=="
        );
    }
}
