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
#[derive(Debug, Clone)]
pub struct Layout {
    template: String,
}

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
    #[error("--layout is empty")]
    Empty,
    /// A literal `..` folder would put books outside the target.
    #[error("--layout {template:?}: a `..` folder would lead outside the target")]
    ParentDir { template: String },
    /// The file name part must end with `.{{ext}}`, or books would have no (or a wrong)
    /// extension.
    #[error("--layout {template:?}: the file name must end with `.{{ext}}` (e.g. `{{author}}/{{title}}.{{ext}}`)")]
    NoExtension { template: String },
}

impl Layout {
    pub fn parse(template: &str) -> Result<Layout, LayoutError> {
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else {
                return Err(LayoutError::Unclosed {
                    template: template.into(),
                });
            };
            let field = &rest[i + 1..i + j];
            if !FIELDS.contains(&field) {
                return Err(LayoutError::UnknownField {
                    template: template.into(),
                    field: field.into(),
                });
            }
            rest = &rest[i + j + 1..];
        }
        if template.trim().is_empty() {
            return Err(LayoutError::Empty);
        }
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
        })
    }

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
        // Fill each path component separately, so a field's own `/` never makes a folder.
        let mut parts = Vec::new();
        for comp in self.template.split('/') {
            let mut out = String::new();
            let mut rest = comp;
            while let Some(i) = rest.find('{') {
                out.push_str(&rest[..i]);
                let j = rest[i..].find('}').map(|j| i + j).unwrap_or(rest.len() - 1);
                let field = &rest[i + 1..j];
                if field == "source_path" {
                    // The one field that may carry folders: each is sanitized on its own.
                    out.push_str(&sanitize_rel_path(&value(field)));
                } else {
                    out.push_str(&value(field).replace('/', "_"));
                }
                rest = &rest[j + 1..];
            }
            out.push_str(rest);
            for sub in out.split('/') {
                let name = sanitize_component(sub);
                if !name.is_empty() {
                    parts.push(name);
                }
            }
        }
        if parts.is_empty() {
            return sanitize_rel_path(source_rel);
        }
        parts.join("/")
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
}
