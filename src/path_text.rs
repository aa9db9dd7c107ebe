//! Paths as text: how a path (any bytes, on Unix) is written where it is stored as text — a
//! source reference, the recorded migration's source and target, a run's arguments — and read
//! back. UTF-8 stays as it is; each byte that is not UTF-8 is written `\xFF` (two uppercase hex
//! digits), so two paths that differ only there stay apart.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// `path` as text: as it is when it is UTF-8; otherwise each byte that is not UTF-8 written
/// `\xFF`.
pub fn escape(path: &OsStr) -> Cow<'_, str> {
    if let Some(s) = path.to_str() {
        return s.into();
    }
    let mut out = String::new();
    for chunk in path.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out.into()
}

/// The bytes a text made by [`escape`] stands for: each `\xHH` written for a byte that is not
/// UTF-8 becomes that byte again. A text that [`escape`] could not have made from the decoded
/// bytes (a name that holds `\xC3\xA9` as text, say) is taken as it is, so every UTF-8 path
/// reads back unchanged. (Ambiguous only for a path whose own text spells out escapes of bytes
/// that are not UTF-8; those are read as the bytes.)
pub fn unescape(text: &str) -> OsString {
    if !text.contains("\\x") {
        return text.into();
    }
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let hex = tail
            .strip_prefix(b"x")
            .and_then(|t| t.get(..2))
            .filter(|h| {
                h.iter()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
            })
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match hex {
            Some(v) if b == b'\\' => {
                bytes.push(v);
                rest = &tail[3..];
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    let decoded = OsString::from_vec(bytes);
    if escape(&decoded) == text {
        decoded
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `escape` writes reads back as the same bytes; any UTF-8 text, including one that
    /// spells escapes of valid UTF-8 or lowercase hex, reads back as itself.
    #[test]
    fn escaped_paths_read_back_as_their_bytes() {
        for raw in [
            &b"/lib/Twin\xfe.epub"[..],
            b"/m\xff\xfe/a b/\xc3",
            "/lib/Łucja/Книга.fb2".as_bytes(),
            b"/plain",
        ] {
            let os = OsStr::from_bytes(raw);
            let text = escape(os);
            assert_eq!(unescape(&text), os, "{text}");
        }
        assert_eq!(
            escape(OsStr::from_bytes(b"Twin\xfe.epub")),
            "Twin\\xFE.epub"
        );
        for literal in [r"/a\xC3\xA9", r"/a\xff", r"/a\x4", r"/a\", r"\x41"] {
            assert_eq!(unescape(literal), OsStr::new(literal));
        }
    }
}
