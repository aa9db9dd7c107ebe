//! A server's reply: read bounded in time and size, and judged by what it proves (the upload
//! protocol's section 3, "What a client may trust (v1.1)"). Nothing here trusts the server:
//! a reply that stalls or never ends costs at most the stall timeout and a few hundred KiB.

use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// Most bytes of a JSON reply (an upload's proof, a check's list) read; a longer one is refused.
/// A check reply for 1000 items is about 40 KiB.
pub const JSON_CAP: usize = 256 * 1024;
/// Bytes of an error reply's body kept for the message; the rest is never read.
pub const ERROR_KEEP: usize = 4 * 1024;

/// Why a reply's body could not be read whole (a transient failure: worth another try).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the reply's body did not arrive within {}s", .0.as_secs_f64())]
    Stalled(Duration),
    #[error("the reply's body is larger than {} KiB", .0 / 1024)]
    TooLarge(usize),
    #[error("reading the reply: {0}")]
    Io(#[source] reqwest::Error),
}

/// The whole body of a reply meant to be JSON: at most [`JSON_CAP`] bytes, all within `stall`
/// (replies are small: no progress-based extension, so a trickle cannot hold a transfer).
pub async fn read_json(
    resp: &mut reqwest::Response,
    stall: Duration,
) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > JSON_CAP as u64) {
        return Err(ReadError::TooLarge(JSON_CAP));
    }
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(ReadError::Io)? {
            if body.len() + chunk.len() > JSON_CAP {
                return Err(ReadError::TooLarge(JSON_CAP));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(stall, read)
        .await
        .unwrap_or(Err(ReadError::Stalled(stall)))
}

/// The server's text of an error reply: its JSON `error`, else the start of the body; from at
/// most [`ERROR_KEEP`] bytes read within `stall` (what did not come by then is left unread; the
/// connection is then dropped, not reused).
pub async fn error_text(resp: &mut reqwest::Response, stall: Duration) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            let room = ERROR_KEEP - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() >= room {
                return true;
            }
        }
        false
    };
    // Cut: the kept bytes are full, or the rest did not come in time.
    let cut = tokio::time::timeout(stall, read).await.unwrap_or(true);
    if !cut {
        if let Some(text) = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        {
            return text;
        }
    }
    let whole = String::from_utf8_lossy(&body);
    let text: String = whole.chars().take(200).collect();
    if cut || text.len() < whole.len() {
        format!("{text}…")
    } else {
        text
    }
}

/// What a success reply to an upload must hold to prove the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub id: String,
    /// The server held these bytes already.
    pub duplicate: bool,
}

/// Why a reply proves nothing (the protocol's "bad reply").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unproven {
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    #[error("the JSON is not an object")]
    NotAnObject,
    #[error("no \"id\"")]
    NoId,
    #[error("\"id\" is {0}, not a non-empty string or a number")]
    BadId(String),
    #[error("no \"sha1\" echo")]
    NoSha1,
    #[error("its \"sha1\" {got:?} is not the {sent} sent")]
    OtherSha1 { sent: String, got: String },
    #[error("no \"files\" list")]
    NoFiles,
}

/// Judge a `200`/`201` reply to an upload whose `sha1` part was `sent`.
pub fn upload_proof(body: &[u8], sent: &str) -> Result<Proof, Unproven> {
    let v = parse_object(body)?;
    let id = match v.get("id") {
        None => return Err(Unproven::NoId),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(Unproven::BadId(other.to_string())),
    };
    match v.get("sha1") {
        None | Some(Value::Null) => return Err(Unproven::NoSha1),
        Some(Value::String(s)) if s == sent => {}
        Some(other) => {
            return Err(Unproven::OtherSha1 {
                sent: sent.to_string(),
                got: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
            })
        }
    }
    let duplicate = v.get("duplicate").and_then(Value::as_bool).unwrap_or(false);
    Ok(Proof { id, duplicate })
}

/// The keys a `200` check reply says exist. Items missing from the list, with another status
/// or with a key that is not ours, count as missing.
pub fn check_exists(body: &[u8]) -> Result<HashSet<i64>, Unproven> {
    let v = parse_object(body)?;
    let list = v
        .get("files")
        .and_then(Value::as_array)
        .ok_or(Unproven::NoFiles)?;
    let mut exists = HashSet::new();
    for f in list {
        if f.get("status").and_then(Value::as_str) != Some("exists") {
            continue;
        }
        let key = match f.get("key") {
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        exists.extend(key);
    }
    Ok(exists)
}

fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Unproven> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Unproven::NotAnObject),
        Err(e) => Err(Unproven::NotJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12";

    fn proof(body: &str) -> Result<Proof, Unproven> {
        upload_proof(body.as_bytes(), SHA)
    }

    #[test]
    fn an_upload_reply_proves_the_store_only_with_an_id_and_the_sha1_sent() {
        let ok = format!(r#"{{"id": "b-7", "sha1": "{SHA}", "duplicate": false}}"#);
        assert_eq!(
            proof(&ok),
            Ok(Proof {
                id: "b-7".into(),
                duplicate: false
            })
        );
        let numeric = format!(r#"{{"id": 42, "sha1": "{SHA}", "duplicate": true}}"#);
        assert_eq!(
            proof(&numeric),
            Ok(Proof {
                id: "42".into(),
                duplicate: true
            })
        );
        assert_eq!(
            proof(&format!(r#"{{"sha1": "{SHA}"}}"#)),
            Err(Unproven::NoId)
        );
        for bad_id in ["null", "\"\"", "\" \"", "{}", "true", "[1]"] {
            assert!(
                matches!(
                    proof(&format!(r#"{{"id": {bad_id}, "sha1": "{SHA}"}}"#)),
                    Err(Unproven::BadId(_))
                ),
                "id {bad_id} was taken as proof"
            );
        }
        assert_eq!(proof(r#"{"id": "b-7"}"#), Err(Unproven::NoSha1));
        assert_eq!(
            proof(r#"{"id": "b-7", "sha1": null}"#),
            Err(Unproven::NoSha1)
        );
        let other = "0000000000000000000000000000000000000000";
        assert_eq!(
            proof(&format!(r#"{{"id": "b-7", "sha1": "{other}"}}"#)),
            Err(Unproven::OtherSha1 {
                sent: SHA.into(),
                got: other.into()
            })
        );
        assert!(matches!(
            proof("<html>stored</html>"),
            Err(Unproven::NotJson(_))
        ));
        assert!(matches!(proof(""), Err(Unproven::NotJson(_))));
        assert_eq!(proof("[]"), Err(Unproven::NotAnObject));
    }

    #[test]
    fn a_check_reply_needs_its_files_list_and_only_exists_counts() {
        let body = br#"{"files": [{"key": "1", "status": "exists"}, {"key": 2, "status": "exists"},
            {"key": "3", "status": "missing"}, {"key": "x", "status": "exists"}, {"status": "exists"}]}"#;
        assert_eq!(check_exists(body), Ok(HashSet::from([1, 2])));
        assert_eq!(check_exists(br#"{"files": []}"#), Ok(HashSet::new()));
        assert_eq!(check_exists(br#"{"ok": true}"#), Err(Unproven::NoFiles));
        assert_eq!(check_exists(br#"{"files": null}"#), Err(Unproven::NoFiles));
        assert!(matches!(check_exists(b"OK"), Err(Unproven::NotJson(_))));
    }
}
