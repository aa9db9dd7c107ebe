//! Title and authors guessed from a file's name, the way calibre guesses them when it adds a
//! file whose embedded metadata has none (`metadata_from_filename` with calibre's default
//! `filename_pattern`, `(?P<title>.+) - (?P<author>[^_]+)`, and `string_to_authors`), so a book
//! bookferry migrates reads as it would after `calibredb add`. Folders are not read: calibre
//! does not read them either. tests/data/filenames/expected.json holds what calibre itself
//! shows for many names; the crate's `names` test compares with it.

use super::Metadata;

/// Guess from a path relative to the source root (only its last part counts):
/// - the extension goes (the last one; `.fb2.zip` whole), `_` become spaces;
/// - `Title - Author` (the last ` - ` that leaves both sides non-empty) gives both, the author
///   part split as calibre splits author lists (`&`, ` and `, ` with `; `&&` is a literal `&`);
/// - anything else is the title, with no author.
///
/// One calibre quirk is not followed: calibre's TXT reader titles a `.txt` by its raw stem
/// (`Dune - Herbert.txt` is `Dune - Herbert` by `Herbert`; `zoom_to_rect.txt` keeps its
/// underscores), over the pattern's title. bookferry titles a `.txt` as any other file (the
/// authors agree): following it would turn every `Title - Author.txt` into a book titled
/// `Title - Author`, which merges with no other format of the same book.
pub fn guess(rel_path: &str) -> Metadata {
    let file = rel_path.rsplit('/').next().unwrap_or("");
    let stem = strip_extension(file);
    let name = stem.replace('_', " ");
    let mut md = Metadata::default();
    if let Some((title, author)) = split_title_author(&name) {
        md.title = Some(title.to_string());
        md.authors = string_to_authors(author);
    }
    // calibre treats a title of "Unknown" as none, and then the whole name is the title.
    if md
        .title
        .as_deref()
        .is_none_or(|t| t.is_empty() || t == "Unknown")
    {
        md.title = Some(name);
    }
    md.title = md.title.filter(|t| !t.trim().is_empty());
    md
}

/// `Dune.epub` → `Dune`; `Dune.fb2.zip` → `Dune`.
pub fn strip_extension(file: &str) -> &str {
    let lower = file.to_ascii_lowercase();
    if lower.ends_with(".fb2.zip") {
        return &file[..file.len() - ".fb2.zip".len()];
    }
    match file.rfind('.') {
        Some(i) if i > 0 => &file[..i],
        _ => file,
    }
}

/// calibre's default pattern, `(?P<title>.+) - (?P<author>[^_]+)`, searched in a name whose
/// underscores are already spaces: `.+` is greedy, so the title runs to the last ` - ` that
/// leaves at least one character on each side; the author is the rest.
fn split_title_author(name: &str) -> Option<(&str, &str)> {
    // `.` does not match a line break: the title is the last line's text before the dash.
    name.rmatch_indices(" - ")
        .map(|(i, _)| i)
        .find(|&i| i > 0 && i + 3 < name.len())
        .and_then(|i| {
            let line_start = name[..i].rfind('\n').map_or(0, |n| n + 1);
            (line_start < i).then(|| (&name[line_start..i], &name[i + 3..]))
        })
}

/// calibre's `string_to_authors` with its default `authors_split_regex`,
/// `(?i),?\s+(and|with)\s+`: `&&` is a literal `&`, ` and ` / ` with ` (any case, an optional
/// comma before) and `&` separate names; names are trimmed, empty ones dropped. A comma alone
/// does not split (`Herbert, Frank` is one name).
pub fn string_to_authors(raw: &str) -> Vec<String> {
    const LITERAL_AMP: char = '\u{FFFF}';
    let raw = raw.replace("&&", &LITERAL_AMP.to_string());
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < chars.len() {
        match separator_len(&chars[i..]) {
            Some(n) => {
                out.push('&');
                i += n;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out.split('&')
        .map(|a| a.trim().replace(LITERAL_AMP, "&"))
        .filter(|a| !a.is_empty())
        .collect()
}

/// Length in chars of a `,?\s+(and|with)\s+` match at the start of `s`.
fn separator_len(s: &[char]) -> Option<usize> {
    let mut i = usize::from(s.first() == Some(&','));
    let spaces = |from: usize| s[from..].iter().take_while(|c| c.is_whitespace()).count();
    let before = spaces(i);
    if before == 0 {
        return None;
    }
    i += before;
    let word = ["and", "with"].into_iter().find(|w| {
        let n = w.chars().count();
        s.len() >= i + n
            && s[i..i + n]
                .iter()
                .zip(w.chars())
                .all(|(a, b)| a.to_lowercase().eq(std::iter::once(b)))
    })?;
    i += word.len();
    let after = spaces(i);
    (after > 0).then_some(i + after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(rel: &str) -> (Option<String>, Vec<String>) {
        let m = guess(rel);
        (m.title, m.authors)
    }

    #[test]
    fn title_dash_author_and_folders_ignored() {
        let (t, a) = both("Olga Tokarczuk/Machine Paper 0 - Olga Tokarczuk.epub");
        assert_eq!(t.as_deref(), Some("Machine Paper 0"));
        assert_eq!(a, vec!["Olga Tokarczuk"]);
        // calibre reads the name only: the left side is the title, whatever the folder says.
        let (t, a) = both("Zola/Zola - Germinal.pdf");
        assert_eq!(t.as_deref(), Some("Zola"));
        assert_eq!(a, vec!["Germinal"]);
        let (t, a) = both("Jane Austen/Emma.fb2.zip");
        assert_eq!(t.as_deref(), Some("Emma"));
        assert!(a.is_empty());
    }

    #[test]
    fn underscores_and_last_dash() {
        assert_eq!(both("zoom_to_rect.pdf").0.as_deref(), Some("zoom to rect"));
        let (t, a) = both("A - B - C.pdf");
        assert_eq!((t.as_deref(), a), (Some("A - B"), vec!["C".to_string()]));
        let (t, a) = both("Title - .pdf");
        assert_eq!((t.as_deref(), a.len()), (Some("Title - "), 0));
        let (t, a) = both(" - Author.pdf");
        assert_eq!((t.as_deref(), a.len()), (Some(" - Author"), 0));
    }

    #[test]
    fn authors_split_like_calibre() {
        let s = |x: &str| string_to_authors(x);
        assert_eq!(s("A & B"), vec!["A", "B"]);
        assert_eq!(s("A&B"), vec!["A", "B"]);
        assert_eq!(s("A AND B"), vec!["A", "B"]);
        assert_eq!(s("A with B"), vec!["A", "B"]);
        assert_eq!(s("A, B and C"), vec!["A, B", "C"]);
        assert_eq!(s("A, B, and C"), vec!["A, B", "C"]);
        assert_eq!(s("Herbert, Frank"), vec!["Herbert, Frank"]);
        assert_eq!(s("A; B"), vec!["A; B"]);
        assert_eq!(s("Sand Anderson"), vec!["Sand Anderson"]);
        assert_eq!(s("Tom && Jerry"), vec!["Tom & Jerry"]);
        assert_eq!(s(" & "), Vec::<String>::new());
    }
}
