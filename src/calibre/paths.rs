//! calibre's rules for where a book's files live: `Author/Title (id)/Title - Author.ext`, built
//! from ASCII-fied (`translit`), sanitized names cut to calibre's length limits (calibre's
//! `DB.construct_path_name` / `construct_file_name` and `ascii_filename` /
//! `sanitize_file_name`, with Linux's `PATH_LIMIT` of 100); the names of a book's files in its
//! folder; and which `books.path` values stay inside the library.

use super::text::py_space;
use super::translit::ascii_text;
use std::path::{Component, Path};

/// calibre's `DB.PATH_LIMIT` on Linux and macOS.
pub const PATH_LIMIT: usize = 100;

const WINDOWS_RESERVED_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// calibre's `_filename_sanitize_unicode`: characters no file name may hold on any platform.
fn is_forbidden(c: char) -> bool {
    matches!(
        c,
        '\\' | '|' | '?' | '*' | '<' | '"' | ':' | '>' | '+' | '/'
    ) || (c as u32) < 32
}

/// Python's `os.path.splitext` for a name without separators: (stem, extension).
fn splitext(p: &str) -> (&str, &str) {
    if let Some(dot) = p.rfind('.') {
        if p[..dot].chars().any(|c| c != '.') {
            return (&p[..dot], &p[dot..]);
        }
    }
    (p, "")
}

/// calibre's `sanitize_file_name(name)` with `_` as the substitute.
pub fn sanitize_file_name(name: &str) -> String {
    let one: String = name
        .chars()
        .map(|c| {
            if is_forbidden(c) {
                '_'
            } else if py_space(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let one = one.trim_matches(py_space);
    let (bname, ext) = splitext(one);
    let bname = if !bname.is_empty() && bname.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        bname.replace("..", "_")
    };
    let mut one = bname + ext;
    if one.ends_with('.') || one.ends_with(' ') {
        one.pop();
        one.push('_');
    }
    if let Some(rest) = one.strip_prefix('.') {
        one = format!("_{rest}");
    }
    one
}

/// calibre's `ascii_filename(name)`.
pub fn ascii_filename(name: &str) -> String {
    let ascii = ascii_text(name).replace('?', "_");
    let cleaned: String = ascii
        .chars()
        .map(|c| if (c as u32) < 32 { '_' } else { c })
        .collect();
    sanitize_file_name(&cleaned)
}

/// The first `n` characters (the names are ASCII by now, so bytes and characters agree).
fn head(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The title part of a name: ASCII-fied, cut to `limit`, never empty.
fn title_part(title: &str, limit: usize) -> String {
    let t = ascii_filename(title.trim_start_matches(py_space));
    let t = head(&t, limit).trim_end_matches(py_space);
    if t.is_empty() {
        head("Unknown", limit).to_string()
    } else {
        t.to_string()
    }
}

/// calibre's `construct_path_name`: the book's folder relative to the library,
/// `Author/Title (id)`, from the title and the first author.
pub fn book_dir(book_id: i64, title: &str, first_author: &str) -> String {
    let suffix = format!(" ({book_id})");
    let limit = PATH_LIMIT - suffix.len() / 2 - 2;
    let author = ascii_filename(first_author);
    let mut author = head(&author, limit)
        .trim_end_matches([' ', '.'])
        .to_string();
    if author.is_empty() {
        author = ascii_filename("Unknown");
    }
    if WINDOWS_RESERVED_NAMES.contains(&author.to_uppercase().as_str()) {
        author.push('w');
    }
    format!("{author}/{}{suffix}", title_part(title, limit))
}

/// calibre's `construct_file_name`: the name (without extension) of every format file of the
/// book, `Title - Author`. calibre reserves 14 characters for the extension whatever it is.
pub fn file_stem(title: &str, first_author: &str) -> String {
    let extlen = 14;
    let limit = (PATH_LIMIT - extlen - 2) / 2;
    let author = ascii_filename(first_author);
    let name = format!("{} - {}", title_part(title, limit), head(&author, limit));
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        ascii_filename("Unknown")
    } else {
        name.to_string()
    }
}

/// The id in a calibre book folder name `Title (id)`.
pub fn book_id_of(name: &str) -> Option<i64> {
    let inner = name.strip_suffix(')')?;
    let (_, id) = inner.rsplit_once(" (")?;
    id.parse().ok().filter(|id: &i64| *id > 0)
}

/// A format as `data.format` holds it (upper case, no leading dot), or `None` when it is not a
/// file extension calibre can store.
pub fn format_name(format: &str) -> Option<String> {
    let fmt = format.trim().trim_start_matches('.').to_uppercase();
    let storable = !fmt.is_empty()
        && fmt
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !fmt.contains("..");
    storable.then_some(fmt)
}

/// The name of a format file in its book's folder: `{data.name}.{data.format lowercased}`.
pub fn format_file_name(name: &str, format: &str) -> String {
    format!("{name}.{}", format.to_lowercase())
}

/// A format file relative to the library, `/`-separated: `{books.path}/{data.name}.{format}`.
pub fn format_rel_path(book_path: &str, name: &str, format: &str) -> String {
    format!("{book_path}/{}", format_file_name(name, format))
}

/// A book's cover relative to the library: `{books.path}/cover.jpg`.
pub fn cover_rel_path(book_path: &str) -> String {
    format!("{book_path}/{}", super::COVER_FILE)
}

/// True when `rel_path` (from `books.path`, `data.name`) stays inside the library: relative,
/// `/`-separated, each part one plain name for this platform (no root, drive, `.`, `..`, empty
/// part or embedded separator).
pub fn is_safe_rel_path(rel_path: &str) -> bool {
    rel_path.split('/').all(|part| {
        let mut components = Path::new(part).components();
        matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(name)), None) if name == part
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs printed by calibre 6.13's own `ascii_filename`.
    #[test]
    fn ascii_filename_matches_calibre() {
        for (input, want) in [
            ("Nnedi Ó Briain", "Nnedi O Briain"),
            ("Émile Zola", "Emile Zola"),
            ("Straße", "Strasse"),
            ("Łódź", "Lodz"),
            ("Ærø", "AEro"),
            ("Œuvre", "OEuvre"),
            ("Þór", "Thor"),
            ("Đorđe", "Dorde"),
            ("ﬁnal", "final"),
            ("½ of it", "1_2 of it"),
            ("A/B: C?", "A_B_ C_"),
            ("Über*\"<>|", "Uber_____"),
            (" lead.", "lead_"),
            ("x..y", "x..y"),
            ("...", "_"),
            ("Tolstoy—War", "Tolstoy--War"),
            ("“Quoted”", "_Quoted_"),
            ("café\tbar", "cafe_bar"),
            ("Достоевский", "Dostoievskii"),
            ("Ελληνικά", "Ellenika"),
            ("naïve résumé", "naive resume"),
            ("emoji 😀 x", "emoji _ x"),
            ("trail. ", "trail_"),
        ] {
            assert_eq!(ascii_filename(input), want, "{input:?}");
        }
    }

    #[test]
    fn paths_follow_calibre_limits() {
        assert_eq!(
            book_dir(1, "Empire Silence Paper 3", "Tomás Murakami"),
            "Tomas Murakami/Empire Silence Paper 3 (1)"
        );
        assert_eq!(
            file_stem(
                "Machine Comet Signal Glass 13 - Émile Segura",
                "Émile Segura"
            ),
            "Machine Comet Signal Glass 13 - Emile Segu - Emile Segura"
        );
        assert_eq!(book_dir(7, "  ", ""), "Unknown/Unknown (7)");
        assert_eq!(book_dir(7, "T", "con"), "conw/T (7)");
        assert_eq!(book_dir(7, "T", "J. R. R."), "J. R. R_/T (7)");
        assert_eq!(book_dir(7, "T", "Ann ."), "Ann _/T (7)");
        let long = "x".repeat(300);
        let dir = book_dir(12345, &long, &long);
        let (a, t) = dir.split_once('/').expect("two parts");
        assert_eq!(a.len(), 100 - 4 - 2);
        assert_eq!(t.len(), 94 + " (12345)".len());
        assert_eq!(file_stem(&long, &long).len(), 42 + 3 + 42);
        assert_eq!(file_stem("Title.", "A."), "Title_ - A_");
        assert_eq!(file_stem("  ", ""), "Unknown - ");
    }

    /// Pairs printed by calibre 6.13's own `construct_path_name` / `construct_file_name`.
    #[test]
    fn paths_match_calibre() {
        let long = format!("The {}Very Long Title", "Enormously ".repeat(20));
        for (id, title, author, dir, stem) in [
            (7, "T", "J. R. R.", "J. R. R_/T (7)", "T - J. R. R_"),
            (7, "T", "Ann .", "Ann _/T (7)", "T - Ann _"),
            (7, "T", "con", "conw/T (7)", "T - con"),
            (4, "AC/DC: Live / Loud", "Łucja Wiśniewska", "Lucja Wisniewska/AC_DC_ Live _ Loud (4)", "AC_DC_ Live _ Loud - Lucja Wisniewska"),
            (5, long.as_str(), "Фёдор Достоевский",
             "Fiodor Dostoievskii/The Enormously Enormously Enormously Enormously Enormously Enormously Enormously Enormously Enor (5)",
             "The Enormously Enormously Enormously Enorm - Fiodor Dostoievskii"),
        ] {
            assert_eq!(book_dir(id, title, author), dir);
            assert_eq!(file_stem(title, author), stem);
        }
    }

    #[test]
    fn book_ids_from_folder_names() {
        assert_eq!(book_id_of("Title (12)"), Some(12));
        assert_eq!(book_id_of("A (b) (3)"), Some(3));
        assert_eq!(book_id_of("Title"), None);
        assert_eq!(book_id_of("Title (x)"), None);
        assert_eq!(book_id_of("Title (0)"), None);
    }

    #[test]
    fn safe_rel_paths() {
        assert!(is_safe_rel_path(
            "Émile Segura/Night (15)/Night - Émile Segura.epub"
        ));
        for bad in [
            "/etc/passwd",
            "a/../b.epub",
            "a/./b.epub",
            "a//b.epub",
            "../b.epub",
            "",
        ] {
            assert!(!is_safe_rel_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn format_names() {
        assert_eq!(format_name(" .epub ").as_deref(), Some("EPUB"));
        assert_eq!(
            format_name("original_epub").as_deref(),
            Some("ORIGINAL_EPUB")
        );
        assert_eq!(format_name("fb2.zip").as_deref(), Some("FB2.ZIP"));
        for bad in ["", ".", "a..b", "e/pub", "ep ub"] {
            assert_eq!(format_name(bad), None, "{bad:?}");
        }
        assert_eq!(
            format_rel_path("A/T (1)", "T - A", "EPUB"),
            "A/T (1)/T - A.epub"
        );
    }
}
