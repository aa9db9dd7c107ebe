//! calibre's `ascii_text`: any text as ASCII, character by character, as calibre spells it in
//! the folder and file names of a library.
//!
//! calibre transliterates with its unidecode tables; here accented Latin letters decompose to
//! their base letters, and Latin ligatures/special letters, Greek, Cyrillic and common
//! punctuation use a table with unidecode's spellings. Other scripts (CJK, …) become `?` where
//! calibre would romanize: the folder name then differs from the one calibre would pick, which
//! calibre accepts (it reads `books.path`), and renames only if the book's title or author is
//! edited in calibre.

use super::text::py_space;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// unidecode's ASCII for characters that do not decompose to ASCII.
fn translit(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'Æ' => "AE",
        'æ' => "ae",
        'Ø' => "O",
        'ø' => "o",
        'Œ' => "OE",
        'œ' => "oe",
        'Þ' => "Th",
        'þ' => "th",
        'Ð' | 'Đ' => "D",
        'ð' | 'đ' => "d",
        'Ł' => "L",
        'ł' => "l",
        'Ħ' => "H",
        'ħ' => "h",
        'ı' => "i",
        'ĸ' => "q",
        'ſ' => "s",
        'Ŋ' => "NG",
        'ŋ' => "ng",
        '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' => "-",
        '\u{2014}' | '\u{2015}' => "--",
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' | '\u{2032}' => "'",
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' | '\u{2033}' => "\"",
        '«' => "<<",
        '»' => ">>",
        '‹' => "<",
        '›' => ">",
        '\u{2026}' => "...",
        '\u{2022}' => "*",
        '·' => "*",
        '×' => "x",
        '÷' => "/",
        '\u{2044}' => "/",
        '¿' => "?",
        '¡' => "!",
        '©' => "(c)",
        '®' => "(r)",
        '°' => "deg",
        '€' => "EUR",
        '£' => "PS",
        '¥' => "Y=",
        '§' => "SS",
        '¶' => "P",
        // Greek (after NFKD has dropped the accents).
        'Α' => "A",
        'α' => "a",
        'Β' => "B",
        'β' => "b",
        'Γ' => "G",
        'γ' => "g",
        'Δ' => "D",
        'δ' => "d",
        'Ε' => "E",
        'ε' => "e",
        'Ζ' => "Z",
        'ζ' => "z",
        'Η' => "E",
        'η' => "e",
        'Θ' => "Th",
        'θ' => "th",
        'Ι' => "I",
        'ι' => "i",
        'Κ' => "K",
        'κ' => "k",
        'Λ' => "L",
        'λ' => "l",
        'Μ' => "M",
        'μ' => "m",
        'Ν' => "N",
        'ν' => "n",
        'Ξ' => "Ks",
        'ξ' => "ks",
        'Ο' => "O",
        'ο' => "o",
        'Π' => "P",
        'π' => "p",
        'Ρ' => "R",
        'ρ' => "r",
        'Σ' => "S",
        'σ' | 'ς' => "s",
        'Τ' => "T",
        'τ' => "t",
        'Υ' => "U",
        'υ' => "u",
        'Φ' => "Ph",
        'φ' => "ph",
        'Χ' => "Kh",
        'χ' => "kh",
        'Ψ' => "Ps",
        'ψ' => "ps",
        'Ω' => "O",
        'ω' => "o",
        // Cyrillic.
        'А' => "A",
        'а' => "a",
        'Б' => "B",
        'б' => "b",
        'В' => "V",
        'в' => "v",
        'Г' => "G",
        'г' => "g",
        'Д' => "D",
        'д' => "d",
        'Е' => "Ie",
        'е' => "ie",
        'Ж' => "Zh",
        'ж' => "zh",
        'З' => "Z",
        'з' => "z",
        'И' => "I",
        'и' => "i",
        'Й' => "I",
        'й' => "i",
        'К' => "K",
        'к' => "k",
        'Л' => "L",
        'л' => "l",
        'М' => "M",
        'м' => "m",
        'Н' => "N",
        'н' => "n",
        'О' => "O",
        'о' => "o",
        'П' => "P",
        'п' => "p",
        'Р' => "R",
        'р' => "r",
        'С' => "S",
        'с' => "s",
        'Т' => "T",
        'т' => "t",
        'У' => "U",
        'у' => "u",
        'Ф' => "F",
        'ф' => "f",
        'Х' => "Kh",
        'х' => "kh",
        'Ц' => "Ts",
        'ц' => "ts",
        'Ч' => "Ch",
        'ч' => "ch",
        'Ш' => "Sh",
        'ш' => "sh",
        'Щ' => "Shch",
        'щ' => "shch",
        'Ъ' | 'ъ' => "'",
        'Ы' => "Y",
        'ы' => "y",
        'Ь' | 'ь' => "'",
        'Э' => "E",
        'э' => "e",
        'Ю' => "Iu",
        'ю' => "iu",
        'Я' => "Ia",
        'я' => "ia",
        'Ё' => "Io",
        'ё' => "io",
        'Є' => "Ie",
        'є' => "ie",
        'І' => "I",
        'і' => "i",
        'Ї' => "I",
        'ї' => "i",
        'Ґ' => "G",
        'ґ' => "g",
        'Ў' => "U",
        'ў' => "u",
        _ => return None,
    })
}

/// calibre's `ascii_text`: every character as ASCII (`?` where nothing fits).
pub fn ascii_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else if let Some(t) = translit(c) {
            out.push_str(t);
        } else {
            let mut any = false;
            for d in std::iter::once(c).nfkd() {
                if d.is_ascii() {
                    out.push(d);
                    any = true;
                } else if let Some(t) = translit(d) {
                    out.push_str(t);
                    any = true;
                } else if is_combining_mark(d) {
                    any = true;
                } else if py_space(d) {
                    out.push(' ');
                    any = true;
                }
            }
            if !any {
                out.push('?');
            }
        }
    }
    out
}
