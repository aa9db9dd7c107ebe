//! One place for cleaning what the parsers found: text (trim, NFC, collapsed whitespace),
//! author lists, language codes (ISO 639-1 where one exists), dates (ISO 8601) and ISBNs.
//! Parsers put raw values in `Metadata`; `finish` normalizes the whole record once.

use super::{lang, Metadata};
use unicode_normalization::UnicodeNormalization;

/// Trim, NFC, collapse runs of whitespace (incl. control characters) to one space.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.nfc() {
        if c.is_whitespace() || c.is_control() || c == '\u{FEFF}' {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// `text`, or None when nothing is left.
pub fn opt_text(s: &str) -> Option<String> {
    Some(text(s)).filter(|t| !t.is_empty())
}

/// Clean a list of author names: split a single creator string on ` & `, `;` or ` and `,
/// normalize each, drop empties, dedupe keeping the first occurrence.
pub fn authors(raw: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let split_one = raw.len() == 1;
    for r in raw {
        let r = text(r);
        let parts: Vec<String> = if split_one {
            split_authors(&r)
        } else {
            vec![r]
        };
        for p in parts {
            let p = text(&p);
            if !p.is_empty() && !names.iter().any(|n| n.eq_ignore_ascii_case(&p)) {
                names.push(p);
            }
        }
    }
    names
}

fn split_authors(s: &str) -> Vec<String> {
    let mut parts = vec![s.to_string()];
    for sep in [" & ", ";", " and "] {
        parts = parts
            .iter()
            .flat_map(|p| p.split(sep).map(str::to_string).collect::<Vec<_>>())
            .collect();
    }
    parts
}

/// Dedupe tags (case-insensitively), normalized, order kept.
pub fn tags(raw: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in raw {
        let t = text(t);
        if !t.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&t)) {
            out.push(t);
        }
    }
    out
}

/// A language tag to ISO 639-1 where possible: `eng` → `en`, `en-US` → `en`, `FR` → `fr`
/// (see `lang::iso639_1`). `und`, `zxx` and non-codes → None.
pub fn language(raw: &str) -> Option<String> {
    lang::iso639_1(&text(raw))
}

/// A date to ISO 8601 `YYYY`, `YYYY-MM` or `YYYY-MM-DD`: `D:19651124…` → `1965-11-24`,
/// `1965-11-24T00:00:00+00:00` → `1965-11-24`, `24.11.1965` → `1965-11-24`. calibre's
/// "unknown" (`0101-01-01…`, year < 1000) → None.
pub fn date(raw: &str) -> Option<String> {
    let t = text(raw);
    let t = t.strip_prefix("D:").unwrap_or(&t);
    let b = t.as_bytes();
    let num = |from: usize, n: usize| -> Option<u32> {
        let s = b.get(from..from + n)?;
        if s.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(s).ok()?.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = if num(0, 8).is_some() {
        // Compact PDF form: YYYYMMDD…
        (num(0, 4), num(4, 2), num(6, 2))
    } else if num(0, 4).is_some() {
        let month = num(5, 2).filter(|_| b.get(4) == Some(&b'-'));
        let day = num(8, 2).filter(|_| month.is_some() && b.get(7) == Some(&b'-'));
        (num(0, 4), month, day)
    } else if b.get(2) == Some(&b'.') && b.get(5) == Some(&b'.') {
        // FB2 / European form: DD.MM.YYYY
        (num(6, 4), num(3, 2), num(0, 2))
    } else {
        (None, None, None)
    };
    let year = year.filter(|y| *y >= 1000)?;
    match (
        month.filter(|m| (1..=12).contains(m)),
        day.filter(|d| (1..=31).contains(d)),
    ) {
        (Some(m), Some(d)) => Some(format!("{year:04}-{m:02}-{d:02}")),
        (Some(m), None) => Some(format!("{year:04}-{m:02}")),
        _ => Some(format!("{year:04}")),
    }
}

/// Digits (and a final X) of a 10- or 13-character ISBN, uppercase; None when the shape is wrong.
pub fn isbn_shape(raw: &str) -> Option<String> {
    let s: String = raw
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'x' || *c == 'X')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let x_ok = !s[..s.len().saturating_sub(1)].contains('X');
    match s.len() {
        10 if x_ok => Some(s),
        13 if !s.contains('X') => Some(s),
        _ => None,
    }
}

/// True when an ISBN-10/13 (as from `isbn_shape`) has a valid check digit.
pub fn isbn_checksum_ok(isbn: &str) -> bool {
    let v: Vec<u32> = isbn
        .chars()
        .map(|c| {
            if c == 'X' {
                10
            } else {
                c.to_digit(10).unwrap_or(0)
            }
        })
        .collect();
    match v.len() {
        10 => {
            v.iter()
                .enumerate()
                .map(|(i, d)| (10 - i as u32) * d)
                .sum::<u32>()
                % 11
                == 0
        }
        13 => {
            v.iter()
                .enumerate()
                .map(|(i, d)| if i % 2 == 0 { *d } else { 3 * d })
                .sum::<u32>()
                % 10
                == 0
        }
        _ => false,
    }
}

/// A value that is explicitly declared to be an ISBN (by scheme, `urn:isbn:`, an `<isbn>`
/// element, EXTH 104): the right shape is enough; a bad check digit only warns.
/// An undeclared value must also pass the checksum.
pub fn isbn(raw: &str, declared: bool, warnings: &mut Vec<String>) -> Option<String> {
    let s = isbn_shape(raw)?;
    if isbn_checksum_ok(&s) {
        Some(s)
    } else if declared {
        warnings.push(format!(
            "ISBN {s} has an invalid check digit (kept as declared)"
        ));
        Some(s)
    } else {
        None
    }
}

/// Parse a series index like `2`, `2.0`, `2.50`; None for junk or absurd values.
pub fn series_index(raw: &str) -> Option<f64> {
    let v: f64 = text(raw).replace(',', ".").parse().ok()?;
    (v.is_finite() && (0.0..=1.0e6).contains(&v)).then_some(v)
}

/// Normalize a whole record in place: every text field, authors, tags, languages, date,
/// identifiers (isbn mirrored into `identifiers["isbn"]`).
pub fn finish(md: &mut Metadata) {
    let opt = |o: &mut Option<String>| *o = o.as_deref().and_then(opt_text);
    opt(&mut md.title);
    opt(&mut md.author_sort);
    opt(&mut md.series);
    opt(&mut md.publisher);
    opt(&mut md.description);
    opt(&mut md.uuid);
    // A path inside a container: trimmed only, never rewritten.
    md.cover = md
        .cover
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    opt(&mut md.source);
    md.authors = authors(&md.authors);
    md.tags = tags(&md.tags);
    md.pubdate = md.pubdate.as_deref().and_then(date);
    let mut langs: Vec<String> = Vec::new();
    for l in md.language.iter().chain(md.languages.iter()) {
        if let Some(l) = language(l) {
            if !langs.contains(&l) {
                langs.push(l);
            }
        }
    }
    md.language = langs.first().cloned();
    md.languages = langs;
    if md.series.is_none() {
        md.series_index = None;
    }
    md.identifiers = std::mem::take(&mut md.identifiers)
        .into_iter()
        .filter_map(|(k, v)| {
            let k = text(&k).to_lowercase();
            let v = text(&v);
            (!k.is_empty() && !v.is_empty()).then_some((k, v))
        })
        .collect();
    if md.isbn.is_none() {
        md.isbn = md.identifiers.get("isbn").cloned();
    }
    if let Some(i) = &md.isbn {
        md.identifiers.insert("isbn".into(), i.clone());
    }
    if md.uuid.is_none() {
        md.uuid = md.identifiers.get("uuid").cloned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_nfc_collapsed() {
        assert_eq!(text("  Cafe\u{301}\n\t au   lait "), "Café au lait");
        assert_eq!(opt_text(" \n "), None);
    }

    #[test]
    fn authors_split_only_single_string() {
        let one = vec!["Ana Conversión & Bo Writer".to_string()];
        assert_eq!(authors(&one), vec!["Ana Conversión", "Bo Writer"]);
        let semi = vec!["A One; B Two and C Three".to_string()];
        assert_eq!(authors(&semi), vec!["A One", "B Two", "C Three"]);
        let many = vec![
            "Simon and Garfunkel".to_string(),
            "X".to_string(),
            "x".to_string(),
        ];
        assert_eq!(authors(&many), vec!["Simon and Garfunkel", "X"]);
    }

    #[test]
    fn languages() {
        for (a, b) in [
            ("eng", "en"),
            ("fre", "fr"),
            ("ger", "de"),
            ("deu", "de"),
            ("en-US", "en"),
            ("pt_BR", "pt"),
            ("JA", "ja"),
            ("chi", "zh"),
            // Beyond the few dozen codes of the old table: the full ISO 639 table.
            ("kaz", "kk"),
            ("Swedish", "sv"),
            ("wln", "wa"),
        ] {
            assert_eq!(language(a).as_deref(), Some(b), "{a}");
        }
        assert_eq!(language("und"), None);
        assert_eq!(language("mis"), None);
        assert_eq!(language("haw").as_deref(), Some("haw"));
        assert_eq!(language("1234"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(date("D:19651124000000Z").as_deref(), Some("1965-11-24"));
        assert_eq!(date("D:1965").as_deref(), Some("1965"));
        assert_eq!(date("1965").as_deref(), Some("1965"));
        assert_eq!(date("1965-11").as_deref(), Some("1965-11"));
        assert_eq!(
            date("1882-02-11T00:00:00+00:00").as_deref(),
            Some("1882-02-11")
        );
        assert_eq!(date("0101-01-01T00:00:00+00:00"), None);
        assert_eq!(date("28.11.2026").as_deref(), Some("2026-11-28"));
        assert_eq!(date("someday"), None);
        assert_eq!(date("1965-13-01").as_deref(), Some("1965"));
    }

    #[test]
    fn isbns() {
        let mut w = Vec::new();
        assert_eq!(
            isbn("978-0-306-40615-7", false, &mut w).as_deref(),
            Some("9780306406157")
        );
        assert_eq!(
            isbn("0-306-40615-2", false, &mut w).as_deref(),
            Some("0306406152")
        );
        assert_eq!(
            isbn("080442957x", false, &mut w).as_deref(),
            Some("080442957X")
        );
        assert_eq!(isbn("9780306406158", false, &mut w), None);
        assert!(w.is_empty());
        assert_eq!(
            isbn("9780306406158", true, &mut w).as_deref(),
            Some("9780306406158")
        );
        assert_eq!(w.len(), 1);
        assert_eq!(isbn("12345", true, &mut w), None);
        assert_eq!(isbn("X123456789", true, &mut w), None);
    }

    #[test]
    fn finish_mirrors_isbn_and_languages() {
        let mut md = Metadata {
            title: Some(" T ".into()),
            language: Some("eng".into()),
            languages: vec!["fre".into(), "en".into()],
            isbn: Some("9780306406157".into()),
            series_index: Some(1.0),
            ..Default::default()
        };
        finish(&mut md);
        assert_eq!(md.title.as_deref(), Some("T"));
        assert_eq!(md.language.as_deref(), Some("en"));
        assert_eq!(md.languages, vec!["en", "fr"]);
        assert_eq!(
            md.identifiers.get("isbn").map(String::as_str),
            Some("9780306406157")
        );
        assert_eq!(md.series_index, None);
    }
}
