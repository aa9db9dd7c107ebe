//! Title and author guessed from a file's name and folders, for formats that carry no
//! metadata of their own (TXT, DJVU, …) or files whose embedded metadata is unreadable.

use super::Metadata;

/// Guess from a path relative to the source root, e.g. `Author/Title - Author.txt`,
/// `Author - Title.txt` under a folder named for the author, or a bare `Title.txt`.
pub fn guess(rel_path: &str) -> Metadata {
    let mut parts: Vec<&str> = rel_path.split('/').filter(|p| !p.is_empty()).collect();
    let file = parts.pop().unwrap_or("");
    let stem = strip_extension(file);
    let folder_author = parts.first().map(|s| s.trim()).filter(|s| !s.is_empty());
    let mut md = Metadata::default();
    if let Some((left, right)) = stem.split_once(" - ") {
        let (left, right) = (left.trim(), right.trim());
        // With a folder that names the author, whichever side matches it is the author.
        let (title, author) = match folder_author {
            Some(a) if a.eq_ignore_ascii_case(left) => (right, left),
            _ => (left, right),
        };
        md.title = Some(title.to_string()).filter(|s| !s.is_empty());
        if !author.is_empty() {
            md.authors = vec![author.to_string()];
        }
    } else {
        md.title = Some(stem.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(a) = folder_author {
            md.authors = vec![a.to_string()];
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_dash_author_in_author_folder() {
        let m = guess("Olga Tokarczuk/Machine Paper 0 - Olga Tokarczuk.txt");
        assert_eq!(m.title.as_deref(), Some("Machine Paper 0"));
        assert_eq!(m.authors, vec!["Olga Tokarczuk"]);
    }

    #[test]
    fn author_dash_title_in_author_folder() {
        let m = guess("Zola/Zola - Germinal.txt");
        assert_eq!(m.title.as_deref(), Some("Germinal"));
        assert_eq!(m.authors, vec!["Zola"]);
    }

    #[test]
    fn bare_name_takes_folder_as_author() {
        let m = guess("Jane Austen/Emma.fb2.zip");
        assert_eq!(m.title.as_deref(), Some("Emma"));
        assert_eq!(m.authors, vec!["Jane Austen"]);
    }
}
