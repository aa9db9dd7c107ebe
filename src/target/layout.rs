//! Where a book goes inside a target folder: the `--layout` template filled from metadata, with
//! every field sanitized so no title can climb out of the target root or make an invalid name.

use crate::metadata::Metadata;

pub const DEFAULT_LAYOUT: &str = "{author}/{title}/{title} - {author}.{ext}";
/// Longest file or folder name, in bytes (most filesystems' limit).
const MAX_NAME_BYTES: usize = 255;
/// Room kept in a name for a ` (NN)` collision suffix and bookferry's temp prefix.
const NAME_BUDGET: usize = MAX_NAME_BYTES - 40;

/// A parsed layout template. Fields: `{author}` (first author), `{authors}` (all, joined with
/// ` & `), `{title}`, `{series}`, `{series_index}`, `{language}`, `{publisher}`, `{year}`,
/// `{ext}` (the format), `{name}` (the source file name without its extension),
/// `{source_path}` (the source's relative path without its extension, folders kept).
///
/// A field may carry a number format and a fallback: `{series_index:02}` pads the integer part
/// to two digits and keeps a fraction (1.5 → `01.5`); `{series|Standalone}` is `Standalone` when
/// the book has no series (the fallback may hold fields: `{series|{title}}`). An optional part
/// `{?…}` disappears when any field inside it is empty: `{?{series}/}` is a folder only for books
/// in a series. None of these forms was accepted before, so a template recorded by an earlier
/// run keeps its meaning.
#[derive(Debug, Clone)]
pub struct Layout {
    template: String,
    parts: Vec<Part>,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// Text as written; its `/` separate folders.
    Text(String),
    Field {
        name: &'static str,
        /// `:0N`: the integer part of a number padded to N digits.
        pad: Option<usize>,
        /// `|…`: used when the field is empty.
        fallback: Option<Vec<Part>>,
    },
    /// `{?…}`: empty when any field inside is empty.
    Optional(Vec<Part>),
}

/// The layouts the servers people use ask for, by name (`--layout kavita`).
pub const PRESETS: &[(&str, &str)] = &[
    // Kavita: every series in a folder of its own, nothing at the library root; the volume in
    // the file name as `Vol. NN` (wiki.kavitareader.com, "Managing Files").
    (
        "kavita",
        "{series|{title}}/{?{series} Vol. {series_index:02} - }{title}.{ext}",
    ),
    // Komga: each folder is a series, its books are the files in it, sorted by name.
    (
        "komga",
        "{series|{title}}/{?{series_index:02} - }{title}.{ext}",
    ),
    // Audiobookshelf: `Author/Series/Vol N - Title/` or `Author/Title/`, every book in a folder
    // of its own (audiobookshelf.org, "Book Library Structure").
    (
        "audiobookshelf",
        "{author}/{?{series}/}{?Vol {series_index} - }{title}/{title}.{ext}",
    ),
];

const FIELDS: &[&str] = &[
    "author",
    "authors",
    "title",
    "series",
    "series_index",
    "language",
    "publisher",
    "year",
    "ext",
    "name",
    "source_path",
];

/// Why a `--layout` template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("--layout {template:?}: unclosed `{{`")]
    Unclosed { template: String },
    #[error("--layout {template:?}: unknown field {{{field}}} (known: {})", FIELDS.join(", "))]
    UnknownField { template: String, field: String },
    #[error("--layout {template:?}: format `:{format}` of {{{field}}} is not `:0N` (e.g. {{series_index:02}})")]
    BadFormat {
        template: String,
        field: String,
        format: String,
    },
    #[error("--layout is empty")]
    Empty,
    /// A literal `..` folder would put books outside the target.
    #[error("--layout {template:?}: a `..` folder would lead outside the target")]
    ParentDir { template: String },
    /// The file name part must end with `.{{ext}}`, or books would have no (or a wrong)
    /// extension.
    #[error("--layout {template:?}: the file name must end with `.{{ext}}` (e.g. `{{author}}/{{title}}.{{ext}}`)")]
    NoExtension { template: String },
    #[error(
        "--layout {given:?}: no such preset (a template has `{{field}}`s); presets: {}",
        preset_names()
    )]
    UnknownPreset { given: String },
}

fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Layout {
    /// A `--layout` value: a template, or without any `{` a preset's name (case-insensitive).
    pub fn parse(template: &str) -> Result<Layout, LayoutError> {
        if template.trim().is_empty() {
            return Err(LayoutError::Empty);
        }
        if !template.contains('{') {
            let name = template.trim();
            return match PRESETS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some((_, t)) => Layout::parse(t),
                None => Err(LayoutError::UnknownPreset {
                    given: template.into(),
                }),
            };
        }
        let mut parser = Parser {
            template,
            rest: template,
        };
        let parts = parser.parts(false)?;
        if template.split('/').any(|c| c.trim() == "..") {
            return Err(LayoutError::ParentDir {
                template: template.into(),
            });
        }
        if !template.ends_with(".{ext}") {
            return Err(LayoutError::NoExtension {
                template: template.into(),
            });
        }
        Ok(Layout {
            template: template.to_string(),
            parts,
        })
    }

    /// The template (a preset's, when a preset was named): what the state DB records.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The relative destination path (components joined with `/`), every component sanitized.
    /// Without a known title, the source's relative path is kept as it is (sanitized).
    pub fn render(&self, md: Option<&Metadata>, source_rel: &str, format: &str) -> String {
        let title = md
            .and_then(|m| m.title.as_deref())
            .map(str::trim)
            .unwrap_or("");
        if title.is_empty() {
            return sanitize_rel_path(source_rel);
        }
        let md = md.cloned().unwrap_or_default();
        let stem = source_rel
            .rsplit('/')
            .next()
            .map(crate::metadata::filename::strip_extension)
            .unwrap_or("");
        let source_path = crate::metadata::filename::strip_extension(source_rel);
        let author = md.authors.first().map(String::as_str).unwrap_or("Unknown");
        let value = |field: &str| -> String {
            match field {
                "author" => author.to_string(),
                "authors" => {
                    if md.authors.is_empty() {
                        "Unknown".into()
                    } else {
                        md.authors.join(" & ")
                    }
                }
                "title" => title.to_string(),
                "series" => md.series.clone().unwrap_or_default(),
                "series_index" => md
                    .series_index
                    .map(|i| {
                        if i.fract() == 0.0 {
                            format!("{}", i as i64)
                        } else {
                            format!("{i}")
                        }
                    })
                    .unwrap_or_default(),
                "language" => md.language.clone().unwrap_or_default(),
                "publisher" => md.publisher.clone().unwrap_or_default(),
                "year" => md
                    .pubdate
                    .as_deref()
                    .map(|d| d.chars().take(4).collect())
                    .unwrap_or_default(),
                "ext" => format.to_string(),
                "name" => stem.to_string(),
                "source_path" => source_path.to_string(),
                _ => String::new(),
            }
        };
        let (filled, _) = fill(&self.parts, &value);
        // The template's own `/` separate folders; a field's `/` never does (see `fill`).
        let parts: Vec<String> = filled
            .split('/')
            .map(sanitize_component)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return sanitize_rel_path(source_rel);
        }
        parts.join("/")
    }
}

/// Fills `parts`; the bool says whether every field met had a value (or a fallback that gave
/// one). A field's own `/` becomes `_`, but for `{source_path}`, whose folders are kept (each
/// sanitized on its own).
fn fill(parts: &[Part], value: &dyn Fn(&str) -> String) -> (String, bool) {
    let mut out = String::new();
    let mut complete = true;
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Field {
                name,
                pad,
                fallback,
            } => {
                let raw = value(name);
                if raw.trim().is_empty() {
                    match fallback {
                        Some(f) => {
                            let (text, ok) = fill(f, value);
                            complete &= ok && !text.trim().is_empty();
                            out.push_str(&text);
                        }
                        None => complete = false,
                    }
                    continue;
                }
                let raw = match pad {
                    Some(width) => pad_number(&raw, *width),
                    None => raw,
                };
                if *name == "source_path" {
                    out.push_str(&sanitize_rel_path(&raw));
                } else {
                    out.push_str(&raw.replace('/', "_"));
                }
            }
            Part::Optional(inner) => {
                let (text, ok) = fill(inner, value);
                if ok {
                    out.push_str(&text);
                }
            }
        }
    }
    (out, complete)
}

/// `1.5` padded to 2 is `01.5`; text that is not a number is left as it is.
fn pad_number(v: &str, width: usize) -> String {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (v, None),
    };
    let numeric = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return v.to_string();
    }
    match frac {
        Some(f) => format!("{int:0>width$}.{f}"),
        None => format!("{int:0>width$}"),
    }
}

/// Reads a template into [`Part`]s: text, `{field[:0N][|fallback]}` and `{?…}`.
struct Parser<'a> {
    template: &'a str,
    rest: &'a str,
}

impl Parser<'_> {
    /// Parts up to the end, or (`nested`) up to and past the `}` that closes them. At the top
    /// level a lone `}` is text, as it always was.
    fn parts(&mut self, nested: bool) -> Result<Vec<Part>, LayoutError> {
        let mut parts = Vec::new();
        loop {
            let stop = self.rest.find(|c| c == '{' || (nested && c == '}'));
            let Some(i) = stop else {
                if nested {
                    return Err(self.unclosed());
                }
                if !self.rest.is_empty() {
                    parts.push(Part::Text(self.rest.to_string()));
                }
                self.rest = "";
                return Ok(parts);
            };
            if i > 0 {
                parts.push(Part::Text(self.rest[..i].to_string()));
            }
            let at_close = self.rest[i..].starts_with('}');
            self.rest = &self.rest[i + 1..];
            if at_close {
                return Ok(parts);
            }
            parts.push(self.braced()?);
        }
    }

    /// What follows a `{`: an optional part or a field, through its closing `}`.
    fn braced(&mut self) -> Result<Part, LayoutError> {
        if let Some(rest) = self.rest.strip_prefix('?') {
            self.rest = rest;
            return Ok(Part::Optional(self.parts(true)?));
        }
        let end = self
            .rest
            .find(['}', ':', '|', '{'])
            .ok_or_else(|| self.unclosed())?;
        let given = &self.rest[..end];
        let Some(name) = FIELDS.iter().find(|f| **f == given) else {
            let field = self.rest[..self.rest.find('}').unwrap_or(self.rest.len())].to_string();
            return Err(LayoutError::UnknownField {
                template: self.template.into(),
                field,
            });
        };
        self.rest = &self.rest[end..];
        let mut pad = None;
        if let Some(rest) = self.rest.strip_prefix(':') {
            let end = rest.find(['}', '|']).ok_or_else(|| self.unclosed())?;
            let format = &rest[..end];
            let width = format
                .strip_prefix('0')
                .filter(|w| !w.is_empty() && w.len() <= 2)
                .and_then(|w| w.parse::<usize>().ok());
            let Some(width) = width else {
                return Err(LayoutError::BadFormat {
                    template: self.template.into(),
                    field: given.into(),
                    format: format.into(),
                });
            };
            pad = Some(width);
            self.rest = &rest[end..];
        }
        let mut fallback = None;
        if let Some(rest) = self.rest.strip_prefix('|') {
            self.rest = rest;
            fallback = Some(self.parts(true)?);
        } else if let Some(rest) = self.rest.strip_prefix('}') {
            self.rest = rest;
        } else {
            // `{` right after a field's name: `{title{`.
            return Err(LayoutError::UnknownField {
                template: self.template.into(),
                field: given.to_string() + "{",
            });
        }
        Ok(Part::Field {
            name,
            pad,
            fallback,
        })
    }

    fn unclosed(&self) -> LayoutError {
        LayoutError::Unclosed {
            template: self.template.into(),
        }
    }
}

/// Sanitize each component of a relative path; drops empty, `.` and `..` components.
pub fn sanitize_rel_path(rel: &str) -> String {
    let parts: Vec<String> = rel
        .split('/')
        .map(sanitize_component)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        "_".into()
    } else {
        parts.join("/")
    }
}

/// One file or folder name: no separators, no control characters, no bidi controls or
/// zero-width characters (they make a name read other than it is: `evil\u{202E}fdp.exe`), no
/// `.`/`..`, no leading or trailing dots and spaces, not a Windows reserved name, at most
/// `NAME_BUDGET` bytes (cut on a character boundary, the extension kept).
pub fn sanitize_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !is_invisible_format(*c))
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = out.trim_matches(|c: char| c == '.' || c == ' ');
    if trimmed.is_empty() {
        return String::new();
    }
    let mut out = trimmed.to_string();
    let upper = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    const RESERVED: &[&str] = &["CON", "PRN", "AUX", "NUL"];
    let is_reserved = RESERVED.contains(&upper.as_str())
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit());
    if is_reserved {
        out.insert(0, '_');
    }
    truncate_name(&out, NAME_BUDGET)
}

/// Bidi controls (LRM, RLM, ALM, the embeddings, overrides and isolates) and zero-width
/// characters (ZWSP, ZWNJ, ZWJ, word joiner, BOM): removed from every target name.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{061C}'
            | '\u{FEFF}'
    )
}

fn truncate_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if name.len() - i <= 12 && i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut cut = max.saturating_sub(ext.len());
    while cut > 0 && !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", stem[..cut].trim_end(), ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(title: &str, author: &str) -> Metadata {
        Metadata {
            title: Some(title.into()),
            authors: vec![author.into()],
            ..Default::default()
        }
    }

    #[test]
    fn default_layout() {
        let l = Layout::parse(DEFAULT_LAYOUT).unwrap();
        assert_eq!(
            l.render(Some(&md("Dune", "Frank Herbert")), "x/dune.epub", "epub"),
            "Frank Herbert/Dune/Dune - Frank Herbert.epub"
        );
    }

    #[test]
    fn hostile_titles_stay_inside() {
        let l = Layout::parse(DEFAULT_LAYOUT).unwrap();
        for t in ["../../etc/passwd", "/abs", "..", "a\0b\nc", "CON", "./."] {
            let p = l.render(Some(&md(t, "../..")), "src/f.epub", "epub");
            assert!(!p.starts_with('/'), "{t:?} gave {p:?}");
            for comp in p.split('/') {
                assert!(
                    comp != ".." && comp != "." && !comp.is_empty(),
                    "{t:?} gave {p:?}"
                );
                assert!(!comp.chars().any(|c| c.is_control()), "{t:?} gave {p:?}");
                assert!(!comp.eq_ignore_ascii_case("con"), "{t:?} gave {p:?}");
            }
        }
    }

    #[test]
    fn long_names_are_cut_on_char_boundaries() {
        let long = "é".repeat(300);
        let s = sanitize_component(&format!("{long}.epub"));
        assert!(s.len() <= NAME_BUDGET);
        assert!(s.ends_with(".epub"));
    }

    #[test]
    fn no_title_keeps_source_path() {
        let l = Layout::parse(DEFAULT_LAYOUT).unwrap();
        assert_eq!(l.render(None, "a/b/c.pdf", "pdf"), "a/b/c.pdf");
    }

    #[test]
    fn unknown_field_is_refused() {
        assert!(Layout::parse("{nope}.{ext}").is_err());
        assert!(Layout::parse("{title").is_err());
    }

    /// Before, `../{title}.{ext}` was accepted (and its `..` silently dropped), and `{title}`
    /// gave files without an extension.
    #[test]
    fn a_layout_leading_out_of_the_target_or_without_an_extension_is_refused() {
        for t in [
            "../{title}.{ext}",
            "{author}/../../{title}.{ext}",
            " .. /{title}.{ext}",
        ] {
            assert!(
                matches!(Layout::parse(t), Err(LayoutError::ParentDir { .. })),
                "{t:?}"
            );
        }
        for t in [
            "{author}/{title}",
            "{title}.epub",
            "{title} [{ext}]",
            "{ext}/{title}",
        ] {
            assert!(
                matches!(Layout::parse(t), Err(LayoutError::NoExtension { .. })),
                "{t:?}"
            );
        }
        for t in [
            DEFAULT_LAYOUT,
            "{source_path}.{ext}",
            "..{title}.{ext}",
            "{ext}/{title}.{ext}",
        ] {
            assert!(Layout::parse(t).is_ok(), "{t:?}");
        }
    }

    /// A title or author carrying bidi controls or zero-width characters reaches the target
    /// name without them (and so does a source path used when there is no title).
    #[test]
    fn bidi_controls_and_zero_width_characters_never_reach_a_name() {
        let invisible = [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}',
            '\u{202C}', '\u{202D}', '\u{202E}', '\u{2060}', '\u{2066}', '\u{2067}', '\u{2068}',
            '\u{2069}', '\u{061C}', '\u{FEFF}',
        ];
        let l = Layout::parse(DEFAULT_LAYOUT).unwrap();
        for c in invisible {
            let title = format!("Evil{c}fdp.exe");
            let p = l.render(Some(&md(&title, &format!("A{c}nn"))), "x.epub", "epub");
            assert_eq!(
                p, "Ann/Evilfdp.exe/Evilfdp.exe - Ann.epub",
                "U+{:04X}",
                c as u32
            );
            let p = l.render(None, &format!("d{c}ir/b{c}ook.epub"), "epub");
            assert_eq!(p, "dir/book.epub", "U+{:04X}", c as u32);
        }
        assert_eq!(sanitize_component("\u{202E}\u{200B}"), "");
        assert_eq!(sanitize_component("Łucja – Книга 書"), "Łucja – Книга 書");
    }

    fn in_series(title: &str, series: &str, index: f64) -> Metadata {
        Metadata {
            series: Some(series.into()),
            series_index: Some(index),
            ..md(title, "Ann Leckie")
        }
    }

    /// Before, `{series|Standalone}`, `{series_index:02}` and `{?…}` were refused as unknown
    /// fields, and a book without a series under `{series}/{series_index} - {title}` landed at
    /// the root as `- Title.epub`.
    #[test]
    fn fallbacks_number_formats_and_optional_parts() {
        let alone = md("Provenance", "Ann Leckie");
        let one = in_series("Ancillary Justice", "Imperial Radch", 1.0);
        let half = in_series("Night's Slice", "Imperial Radch", 1.5);
        let render =
            |t: &str, m: &Metadata| Layout::parse(t).unwrap().render(Some(m), "x.epub", "epub");

        // A template recorded before keeps its meaning, `- ` and all.
        let old = "{series}/{series_index} - {title}.{ext}";
        assert_eq!(render(old, &alone), "- Provenance.epub");

        let t = "{series|Standalone}/{?{series_index:02} - }{title}.{ext}";
        assert_eq!(render(t, &alone), "Standalone/Provenance.epub");
        assert_eq!(
            render(t, &one),
            "Imperial Radch/01 - Ancillary Justice.epub"
        );
        assert_eq!(render(t, &half), "Imperial Radch/01.5 - Night's Slice.epub");

        let t = "{author}/{?{series}/}{title}.{ext}";
        assert_eq!(render(t, &alone), "Ann Leckie/Provenance.epub");
        assert_eq!(
            render(t, &one),
            "Ann Leckie/Imperial Radch/Ancillary Justice.epub"
        );

        // A fallback may hold fields; its `/` in a value never makes a folder.
        let t = "{series|{title}}/{title}.{ext}";
        assert_eq!(render(t, &md("A/B", "X")), "A_B/A_B.epub");
        assert_eq!(pad_number("12", 3), "012");
        assert_eq!(pad_number("123", 2), "123");
        assert_eq!(pad_number("x1", 2), "x1");
    }

    #[test]
    fn bad_formats_and_unclosed_parts_are_refused() {
        for (t, want) in [
            ("{series_index:2}.{ext}", "BadFormat"),
            ("{series_index:0x}.{ext}", "BadFormat"),
            ("{?{series}/{title}.{ext}", "Unclosed"),
            ("{series|x.{ext}", "Unclosed"),
            ("{serie|x}/{title}.{ext}", "UnknownField"),
            ("nope", "UnknownPreset"),
        ] {
            let e = Layout::parse(t).unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{t:?}: {e:?}");
        }
        let e = Layout::parse("nope").unwrap_err().to_string();
        assert!(e.contains("kavita, komga, audiobookshelf"), "{e}");
    }

    /// Each preset, for a book in a series and one without: the structure its server's docs
    /// ask for, recorded as the full template.
    #[test]
    fn presets_give_each_servers_structure() {
        let alone = md("Provenance", "Ann Leckie");
        let one = in_series("Ancillary Justice", "Imperial Radch", 1.0);
        for (preset, with_series, without) in [
            (
                "kavita",
                "Imperial Radch/Imperial Radch Vol. 01 - Ancillary Justice.epub",
                "Provenance/Provenance.epub",
            ),
            (
                "Komga",
                "Imperial Radch/01 - Ancillary Justice.epub",
                "Provenance/Provenance.epub",
            ),
            (
                "audiobookshelf",
                "Ann Leckie/Imperial Radch/Vol 1 - Ancillary Justice/Ancillary Justice.epub",
                "Ann Leckie/Provenance/Provenance.epub",
            ),
        ] {
            let l = Layout::parse(preset).unwrap();
            assert!(l.template().contains("{title}"), "{preset}");
            assert_eq!(
                l.render(Some(&one), "x.epub", "epub"),
                with_series,
                "{preset}"
            );
            assert_eq!(
                l.render(Some(&alone), "x.epub", "epub"),
                without,
                "{preset}"
            );
        }
    }
}
