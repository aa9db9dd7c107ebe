//! calibre's `ascii_text`: any text as ASCII, character by character, as calibre spells it in
//! the folder and file names of a library (its `Unidecoder`, what calibre uses when its
//! interface language is not Japanese, Korean or Vietnamese — and what `calibredb` uses
//! without `LANG`).
//!
//! `deunicode` carries unidecode's tables, as calibre does; where its spelling differs from
//! calibre's in the scripts of titles and author names, calibre's own spelling is kept
//! (`translit_table`, which says where). Characters beyond the Basic Multilingual Plane (emoji,
//! rare Han) are `?`, as calibre's tables end there.

use super::translit_table::CALIBRE;

/// How calibre spells one character in ASCII (`?` where it has nothing).
pub fn ascii_char(c: char) -> &'static str {
    let cp = u32::from(c);
    if cp > 0xFFFF {
        return "?";
    }
    let i = CALIBRE.partition_point(|(_, last, _)| *last < cp);
    match CALIBRE.get(i) {
        Some((first, _, spelling)) if *first <= cp => spelling,
        _ => deunicode::deunicode_char(c).unwrap_or("?"),
    }
}

/// calibre's `ascii_text`: every character as ASCII (`?` where nothing fits).
pub fn ascii_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(ascii_char(c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::translit_table::RANGES;
    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;

    #[test]
    fn the_table_is_sorted_and_inside_its_ranges() {
        assert!(CALIBRE.iter().all(|(a, b, _)| a <= b));
        assert!(CALIBRE.windows(2).all(|w| w[0].1 < w[1].0), "sorted");
        for (a, b, _) in CALIBRE {
            assert!(
                RANGES.iter().any(|(lo, hi)| lo <= a && b <= hi),
                "{a:#x}..{b:#x} outside the covered ranges"
            );
        }
        assert!(CALIBRE.iter().all(|(_, _, s)| s.is_ascii()));
    }

    /// Spellings printed by calibre 6.13's `ascii_text`, where deunicode alone spells otherwise
    /// (the table's) and where it agrees (CJK, accents).
    #[test]
    fn spells_as_calibre() {
        for (input, want) in [
            ("村上春樹", "Cun Shang Chun Shu "),
            ("ノルウェイの森", "noruueinoSen "),
            ("Лев Толстой", "Liev Tolstoi"),
            ("Горький", "Gor'kii"),
            ("герой", "ghieroi"),
            ("Ὅμηρος", "Omeros"),
            ("허균", "heogyun"),
            ("Straße", "Strasse"),
            ("½ of it", "1/2 of it"),
            ("emoji 😀 x", "emoji ? x"),
            ("Tolstoy—War", "Tolstoy--War"),
            ("«x»", "<<x>>"),
            ("€5", "EU5"),
            ("Ærø", "AEro"),
            ("Ýmir", "Umir"),
            ("了", "Le "),
        ] {
            assert_eq!(ascii_text(input), want, "{input:?}");
        }
    }

    /// Every code point of the covered ranges, spelled by calibre itself (`calibre-debug`) and
    /// by us. Skipped, saying so, without calibre.
    #[test]
    fn agrees_with_calibre_over_every_covered_code_point() {
        let ranges: Vec<String> = RANGES.iter().map(|(a, b)| format!("({a},{b})")).collect();
        let script = format!(
            "import json, sys\n\
             from calibre.utils.filenames import get_udc\n\
             udc = get_udc()\n\
             out = {{}}\n\
             for a, b in [{}]:\n\
             \x20   for cp in range(a, b + 1):\n\
             \x20       out[cp] = udc.decode(chr(cp))\n\
             sys.stdout.write(json.dumps(out))\n",
            ranges.join(",")
        );
        let Ok(out) = Command::new("calibre-debug")
            .args(["-c", &script])
            .env_remove("LANG")
            .env_remove("LC_ALL")
            .env_remove("LANGUAGE")
            .output()
        else {
            assert!(
                std::env::var_os("BOOKFERRY_REQUIRE_CALIBRE").is_none(),
                "BOOKFERRY_REQUIRE_CALIBRE is set but calibre-debug does not run"
            );
            eprintln!("SKIPPED: calibre-debug is not installed; not judged by calibre");
            return;
        };
        assert!(
            out.status.success(),
            "calibre-debug failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calibre: BTreeMap<u32, String> =
            serde_json::from_slice(&out.stdout).expect("calibre-debug prints JSON");
        assert_eq!(
            calibre.len(),
            RANGES
                .iter()
                .map(|(a, b)| (b - a + 1) as usize)
                .sum::<usize>()
        );
        let wrong: Vec<String> = calibre
            .iter()
            .filter_map(|(cp, want)| {
                let c = char::from_u32(*cp)?;
                let got = ascii_text(&c.to_string());
                (got != *want).then(|| format!("U+{cp:04X} {c:?}: ours {got:?}, calibre {want:?}"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{} code points spelled otherwise than calibre does:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
