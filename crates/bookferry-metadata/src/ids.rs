//! Identifier strings as ebook formats write them (`urn:isbn:…`, `isbn:…`, `calibre:12`,
//! `urn:uuid:…`, a bare ISBN or UUID) turned into a (scheme, value) pair, and stored on
//! `Metadata` in one way for every format.

use super::{normalize, Metadata};

/// True for a canonical 8-4-4-4-12 hex UUID.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Split `value` into (scheme, value). `scheme` is a declared scheme (opf:scheme, XMP
/// xmpidq:Scheme) if any. Returns None when nothing sensible can be said.
pub fn classify(scheme: Option<&str>, value: &str) -> Option<(String, String)> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let lower = v.to_ascii_lowercase();
    // Prefixed forms: urn:isbn:…, urn:uuid:…, isbn:…, calibre:…, goodreads:…
    let (prefix_scheme, rest) = if let Some(r) = lower.strip_prefix("urn:") {
        match r.split_once(':') {
            Some((s, _)) => (Some(s.to_string()), &v[4 + s.len() + 1..]),
            None => (None, v),
        }
    } else {
        match lower.split_once(':') {
            Some((s, _))
                if !s.is_empty()
                    && s.len() <= 20
                    && !matches!(s, "http" | "https" | "ftp" | "tag" | "mailto" | "file")
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                (Some(s.to_string()), &v[s.len() + 1..])
            }
            _ => (None, v),
        }
    };
    let declared = scheme
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let (scheme, val) = match (declared, prefix_scheme) {
        (Some(d), Some(p)) if d == p => (d, rest.trim()),
        (Some(d), _) if d == "isbn" || d == "uuid" || d == "calibre" => {
            let r = if lower.starts_with("urn:") || lower.starts_with(&format!("{d}:")) {
                rest
            } else {
                v
            };
            (d, r.trim())
        }
        (Some(d), _) => (d, v),
        (None, Some(p)) => (p, rest.trim()),
        (None, None) => {
            if is_uuid(v) {
                ("uuid".to_string(), v)
            } else if normalize::isbn_shape(v).is_some_and(|s| normalize::isbn_checksum_ok(&s)) {
                ("isbn".to_string(), v)
            } else {
                return None;
            }
        }
    };
    let scheme = match scheme.as_str() {
        "isbn13" | "isbn10" | "isbn-13" | "isbn-10" | "ean" => "isbn".to_string(),
        "asin" => "mobi-asin".to_string(),
        _ => scheme,
    };
    (!val.is_empty()).then(|| (scheme, val.to_string()))
}

/// Record one identifier on `md`: ISBNs are cleaned (and rejected when not ISBN-shaped),
/// UUIDs also fill `md.uuid`. The first value per scheme wins.
pub fn add(md: &mut Metadata, scheme: &str, value: &str, warnings: &mut Vec<String>) {
    let value = match scheme {
        "isbn" => match normalize::isbn(value, true, warnings) {
            Some(i) => i,
            None => {
                warnings.push(format!("identifier {value:?} declared as ISBN is not one"));
                return;
            }
        },
        "uuid" => value.to_ascii_lowercase(),
        _ => value.to_string(),
    };
    if scheme == "isbn" && md.isbn.is_none() {
        md.isbn = Some(value.clone());
    }
    if scheme == "uuid" && md.uuid.is_none() {
        md.uuid = Some(value.clone());
    }
    md.identifiers.entry(scheme.to_string()).or_insert(value);
}

/// `classify` then `add`.
pub fn add_raw(md: &mut Metadata, scheme: Option<&str>, value: &str, warnings: &mut Vec<String>) {
    if let Some((s, v)) = classify(scheme, value) {
        add(md, &s, &v, warnings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: Option<&str>, v: &str) -> Option<(String, String)> {
        classify(s, v)
    }

    #[test]
    fn forms() {
        let p = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            c(None, "urn:isbn:9780306406157"),
            p("isbn", "9780306406157")
        );
        assert_eq!(
            c(Some("ISBN"), "978-0-306-40615-7"),
            p("isbn", "978-0-306-40615-7")
        );
        assert_eq!(
            c(Some("ISBN"), "urn:isbn:9780306406157"),
            p("isbn", "9780306406157")
        );
        assert_eq!(c(None, "calibre:1234"), p("calibre", "1234"));
        assert_eq!(c(Some("calibre"), "1234"), p("calibre", "1234"));
        assert_eq!(
            c(
                Some("uuid"),
                "urn:uuid:49f9b5f5-c188-46cb-91c9-0b8fb3e29f11"
            ),
            p("uuid", "49f9b5f5-c188-46cb-91c9-0b8fb3e29f11")
        );
        assert_eq!(
            c(None, "49F9B5F5-c188-46cb-91c9-0b8fb3e29f11"),
            p("uuid", "49F9B5F5-c188-46cb-91c9-0b8fb3e29f11")
        );
        assert_eq!(c(None, "9780306406157"), p("isbn", "9780306406157"));
        assert_eq!(c(None, "9780306406158"), None);
        assert_eq!(c(None, "http://example.com/x"), None);
        assert_eq!(c(None, "goodreads:42"), p("goodreads", "42"));
        assert_eq!(c(Some("AMAZON"), "B00X"), p("amazon", "B00X"));
    }

    #[test]
    fn add_sets_isbn_and_uuid() {
        let mut md = Metadata::default();
        let mut w = Vec::new();
        add_raw(&mut md, None, "urn:isbn:978-0-306-40615-7", &mut w);
        add_raw(
            &mut md,
            Some("uuid"),
            "49F9B5F5-C188-46CB-91C9-0B8FB3E29F11",
            &mut w,
        );
        add_raw(&mut md, Some("isbn"), "not an isbn", &mut w);
        assert_eq!(md.isbn.as_deref(), Some("9780306406157"));
        assert_eq!(
            md.uuid.as_deref(),
            Some("49f9b5f5-c188-46cb-91c9-0b8fb3e29f11")
        );
        assert_eq!(w.len(), 1);
    }
}
