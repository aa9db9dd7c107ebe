//! calibre's text rules: Python's notion of whitespace, and calibre's title sort, author sort
//! and fuzzy title, with calibre's default tweaks and English articles (what calibre uses when
//! its interface language is English and no tweak is set). calibre's SQL functions
//! (`sql_functions`) and its duplicate rule are built on them.

/// Python's `str.isspace()` (what `str.strip()`, `str.split()` and `re`'s `\s` use): Unicode
/// White_Space plus the ASCII separators U+001C–U+001F.
pub fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Leading characters calibre's title sort ignores: quotes, curly quotes, primes.
fn ignore_start(c: char) -> bool {
    matches!(
        c,
        '\'' | '"' | '\u{2018}'..='\u{201d}' | '\u{2032}' | '\u{2033}'
    )
}

/// The articles of calibre's `per_language_title_sort_articles['eng']`.
const ARTICLES: &[&str] = &["A", "The", "An"];

/// The length in bytes of a leading article and the whitespace after it (`^(A|The|An)\s+`,
/// case-insensitive), if `s` starts with one.
fn leading_article(s: &str) -> Option<usize> {
    for art in ARTICLES {
        let Some(head) = s.get(..art.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(art) {
            continue;
        }
        let rest = &s[art.len()..];
        let ws: usize = rest
            .chars()
            .take_while(|c| py_space(*c))
            .map(char::len_utf8)
            .sum();
        if ws > 0 {
            return Some(art.len() + ws);
        }
    }
    None
}

/// calibre's `title_sort(title)`: "The Hobbit" → "Hobbit, The".
pub fn title_sort(title: &str) -> String {
    let mut t = py_strip(title);
    if let Some(c) = t.chars().next().filter(|c| ignore_start(*c)) {
        t = &t[c.len_utf8()..];
    }
    let mut out = t.to_string();
    if let Some(n) = leading_article(t) {
        let (prep, rest) = t.split_at(n);
        out = format!("{rest}, {prep}");
        if let Some(c) = out.chars().next().filter(|c| ignore_start(*c)) {
            out.drain(..c.len_utf8());
        }
    }
    py_strip(&out).to_string()
}

/// Text inside (), [] and {} removed, as calibre's `remove_bracketed_text`.
fn remove_bracketed_text(s: &str) -> String {
    let (mut round, mut square, mut curly) = (0u32, 0u32, 0u32);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '(' => round += 1,
            '[' => square += 1,
            '{' => curly += 1,
            ')' => round = round.saturating_sub(1),
            ']' => square = square.saturating_sub(1),
            '}' => curly = curly.saturating_sub(1),
            _ if round + square + curly == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

const COPYWORDS: &[&str] = &[
    "agency",
    "corporation",
    "company",
    "co.",
    "council",
    "committee",
    "inc.",
    "institute",
    "national",
    "society",
    "club",
    "team",
];
const NAME_PREFIXES: &[&str] = &["mr", "mrs", "ms", "dr", "prof"];
const NAME_SUFFIXES: &[&str] = &[
    "jr", "sr", "inc", "ph.d", "phd", "md", "m.d", "i", "ii", "iii", "iv", "junior", "senior",
];

fn in_list(token: &str, list: &[&str]) -> bool {
    let t = token.to_lowercase();
    let bare = t.strip_suffix('.').unwrap_or(&t);
    list.contains(&t.as_str()) || list.contains(&bare)
}

/// calibre's `author_to_author_sort(author)` with its default tweaks (method `comma`):
/// "Jane Q. Doe Jr." → "Doe, Jane Q. Jr."; names with a comma, one word or a company word are
/// kept as they are.
pub fn author_to_author_sort(author: &str) -> String {
    if author.is_empty() {
        return String::new();
    }
    let sauthor = remove_bracketed_text(author);
    let sauthor = py_strip(&sauthor);
    if sauthor.contains(',') {
        return author.to_string();
    }
    let tokens: Vec<&str> = sauthor.split(py_space).filter(|t| !t.is_empty()).collect();
    if tokens.len() < 2 {
        return author.to_string();
    }
    if tokens
        .iter()
        .any(|t| COPYWORDS.contains(&t.to_lowercase().as_str()))
    {
        return author.to_string();
    }
    let Some(first) = tokens.iter().position(|t| !in_list(t, NAME_PREFIXES)) else {
        return author.to_string();
    };
    let Some(last) = (first..tokens.len())
        .rev()
        .find(|&i| !in_list(tokens[i], NAME_SUFFIXES))
    else {
        return author.to_string();
    };
    let suffix = tokens[last + 1..].join(" ");
    let mut atokens: Vec<String> = std::iter::once(tokens[last])
        .chain(tokens[first..last].iter().copied())
        .map(str::to_string)
        .collect();
    let num_toks = atokens.len();
    if !suffix.is_empty() {
        atokens.push(suffix);
    }
    if num_toks > 1 {
        atokens[0].push(',');
    }
    atokens.join(" ")
}

/// The author sort calibre's SQL function gives a stored author name (`|` stands for `,`).
pub fn sql_author_to_author_sort(stored: &str) -> String {
    if stored.is_empty() {
        return String::new();
    }
    author_to_author_sort(&stored.replace('|', ","))
}

/// calibre's `fuzzy_title` (db/utils.py), used to find a book already in the library:
/// lowercased, brackets/quotes/punctuation dropped, a leading article dropped, `-._` as spaces,
/// runs of whitespace as one space.
pub fn fuzzy_title(title: &str) -> String {
    let lower = py_strip(title).to_lowercase();
    let kept: String = lower
        .chars()
        .filter(|c| !"[](){}<>'\";,:#".contains(*c))
        .collect();
    let rest = match leading_article(&kept) {
        Some(n) => &kept[n..],
        None => &kept[..],
    };
    let mut out = String::with_capacity(rest.len());
    let mut in_space = false;
    for c in rest.chars() {
        let c = if matches!(c, '-' | '.' | '_') { ' ' } else { c };
        if py_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// A book's identifiers as calibre stores them (`db/write.py`'s adapter): type lowercased
/// without `:` or `,`, value with `,` as `|`, both stripped, empty ones dropped, the first of
/// each type kept; the ISBN field last, as `isbn`.
pub fn calibre_identifiers(md: &crate::metadata::Metadata) -> Vec<(String, String)> {
    let mut identifiers: Vec<(String, String)> = Vec::new();
    let mut push = |typ: &str, val: &str| {
        let typ = py_strip(typ).to_lowercase().replace([':', ','], "");
        let val = py_strip(val).replace(',', "|");
        if !typ.is_empty() && !val.is_empty() && !identifiers.iter().any(|(t, _)| *t == typ) {
            identifiers.push((typ, val));
        }
    };
    for (t, v) in &md.identifiers {
        push(t, v);
    }
    if let Some(isbn) = &md.isbn {
        push("isbn", isbn);
    }
    identifiers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_sort_moves_english_articles() {
        assert_eq!(title_sort("The Hobbit"), "Hobbit, The");
        assert_eq!(title_sort("  a  Tale "), "Tale, a");
        assert_eq!(title_sort("An Apple"), "Apple, An");
        assert_eq!(title_sort("Anathem"), "Anathem");
        assert_eq!(title_sort("The"), "The");
        assert_eq!(
            title_sort("\u{201c}The Quote\u{201d}"),
            "Quote\u{201d}, The"
        );
        assert_eq!(title_sort("'Salem's Lot"), "Salem's Lot");
        assert_eq!(title_sort("Der Prozess"), "Der Prozess");
    }

    #[test]
    fn author_sort_follows_calibre() {
        assert_eq!(author_to_author_sort("Tomás Murakami"), "Murakami, Tomás");
        assert_eq!(author_to_author_sort("Jane Q. Doe Jr."), "Doe, Jane Q. Jr.");
        assert_eq!(author_to_author_sort("Dr. John Smith"), "Smith, John");
        assert_eq!(author_to_author_sort("Doe, Jane"), "Doe, Jane");
        assert_eq!(author_to_author_sort("Plato"), "Plato");
        assert_eq!(author_to_author_sort("Acme Company"), "Acme Company");
        assert_eq!(author_to_author_sort("Nnedi Ó Briain"), "Briain, Nnedi Ó");
        assert_eq!(author_to_author_sort("John Smith (editor)"), "Smith, John");
        assert_eq!(author_to_author_sort("Mr Jr"), "Mr Jr");
        assert_eq!(sql_author_to_author_sort("Doe| Jane"), "Doe, Jane");
    }

    #[test]
    fn fuzzy_titles_match_as_calibre_does() {
        assert_eq!(
            fuzzy_title("The Left Hand of Darkness"),
            "left hand of darkness"
        );
        assert_eq!(
            fuzzy_title("Left-Hand  of: Darkness"),
            "left hand of darkness"
        );
        assert_eq!(fuzzy_title("Dune (Part 1)"), "dune part 1");
    }
}
