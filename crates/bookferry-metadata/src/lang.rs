//! Language codes, one table for every part of bookferry: ISO 639-1 (what `Metadata` holds,
//! `normalize::language`) and calibre's ISO 639-2/T-or-3 codes (`languages.lang_code`, calibre's
//! `canonicalize_lang`). Both read the same input: a code of two or three letters, a
//! bibliographic variant (`fre`, `ger`, …), a regional tag (`en-US`, `pt_BR`) or one of a few
//! English names. Codes that mean "no language" (`und`, `zxx`, `mis`, `mul`) give None.

/// Codes that name no language: undetermined, no linguistic content, uncoded, multiple.
const NO_LANGUAGE: &[&str] = &["und", "zxx", "mis", "mul"];

/// The primary subtag of a lowercased tag: `en-us` → `en`, `pt_br` → `pt`.
fn primary(lower: &str) -> &str {
    lower.split(['-', '_']).next().unwrap_or("")
}

/// The 639-2/T code of a three-letter 639-2/B code (`fre` → `fra`), else the code itself.
fn terminology(code: &str) -> &str {
    BIBLIOGRAPHIC
        .iter()
        .find(|(b, _)| *b == code)
        .map_or(code, |(_, t)| t)
}

/// The three-letter code of an English language name (`english` → `eng`).
fn by_name(lower: &str) -> Option<&'static str> {
    NAMES.iter().find(|(n, _)| *n == lower).map(|(_, c)| *c)
}

/// calibre's code for `raw` (ISO 639-2/T, or 639-3 where 639-2 has none), or None when it
/// names no language calibre would store. Unknown two-letter codes and names give None;
/// an unknown three-letter code is kept as it is (639-3 has thousands this table lacks).
pub fn canonicalize(raw: &str) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let code = primary(&lower);
    let code = match code.len() {
        2 => ISO_639_1_TO_3
            .binary_search_by(|(two, _)| two.cmp(&code))
            .ok()
            .map(|i| ISO_639_1_TO_3[i].1.to_string())?,
        3 if code.bytes().all(|b| b.is_ascii_lowercase()) => terminology(code).to_string(),
        _ => by_name(&lower)?.to_string(),
    };
    (!NO_LANGUAGE.contains(&code.as_str())).then_some(code)
}

/// ISO 639-1 for `raw` where the language has a two-letter code (`eng`, `fre`, `en-US`,
/// `English` → `en`); else its three-letter code as found (`haw` → `haw`). A two-letter code
/// is kept as found even when this table lacks it. None for "no language" codes and for
/// anything that is not two or three letters or a known name.
pub fn iso639_1(raw: &str) -> Option<String> {
    let lower = raw.trim().to_ascii_lowercase();
    let code = primary(&lower).trim();
    if NO_LANGUAGE.contains(&code) {
        return None;
    }
    let letters = code.bytes().all(|b| b.is_ascii_lowercase());
    let three = match code.len() {
        2 if letters => return Some(code.to_string()),
        3 if letters => terminology(code),
        _ => by_name(code)?,
    };
    let two = ISO_639_1_TO_3.iter().find(|(_, t)| *t == three);
    Some(two.map_or(three, |(two, _)| two).to_string())
}

/// ISO 639-2/B codes → the 639-2/T (= 639-3) codes calibre uses.
const BIBLIOGRAPHIC: &[(&str, &str)] = &[
    ("alb", "sqi"),
    ("arm", "hye"),
    ("baq", "eus"),
    ("bur", "mya"),
    ("chi", "zho"),
    ("cze", "ces"),
    ("dut", "nld"),
    ("fre", "fra"),
    ("geo", "kat"),
    ("ger", "deu"),
    ("gre", "ell"),
    ("ice", "isl"),
    ("mac", "mkd"),
    ("mao", "mri"),
    ("may", "msa"),
    ("per", "fas"),
    ("rum", "ron"),
    ("slo", "slk"),
    ("tib", "bod"),
    ("wel", "cym"),
];

/// A few language names files carry instead of codes.
const NAMES: &[(&str, &str)] = &[
    ("english", "eng"),
    ("french", "fra"),
    ("german", "deu"),
    ("spanish", "spa"),
    ("italian", "ita"),
    ("portuguese", "por"),
    ("russian", "rus"),
    ("japanese", "jpn"),
    ("chinese", "zho"),
    ("dutch", "nld"),
    ("polish", "pol"),
    ("swedish", "swe"),
];

/// ISO 639-1 → ISO 639-2/T, sorted for binary search (from Debian's iso-codes).
const ISO_639_1_TO_3: &[(&str, &str)] = &[
    ("aa", "aar"),
    ("ab", "abk"),
    ("ae", "ave"),
    ("af", "afr"),
    ("ak", "aka"),
    ("am", "amh"),
    ("an", "arg"),
    ("ar", "ara"),
    ("as", "asm"),
    ("av", "ava"),
    ("ay", "aym"),
    ("az", "aze"),
    ("ba", "bak"),
    ("be", "bel"),
    ("bg", "bul"),
    ("bh", "bih"),
    ("bi", "bis"),
    ("bm", "bam"),
    ("bn", "ben"),
    ("bo", "bod"),
    ("br", "bre"),
    ("bs", "bos"),
    ("ca", "cat"),
    ("ce", "che"),
    ("ch", "cha"),
    ("co", "cos"),
    ("cr", "cre"),
    ("cs", "ces"),
    ("cu", "chu"),
    ("cv", "chv"),
    ("cy", "cym"),
    ("da", "dan"),
    ("de", "deu"),
    ("dv", "div"),
    ("dz", "dzo"),
    ("ee", "ewe"),
    ("el", "ell"),
    ("en", "eng"),
    ("eo", "epo"),
    ("es", "spa"),
    ("et", "est"),
    ("eu", "eus"),
    ("fa", "fas"),
    ("ff", "ful"),
    ("fi", "fin"),
    ("fj", "fij"),
    ("fo", "fao"),
    ("fr", "fra"),
    ("fy", "fry"),
    ("ga", "gle"),
    ("gd", "gla"),
    ("gl", "glg"),
    ("gn", "grn"),
    ("gu", "guj"),
    ("gv", "glv"),
    ("ha", "hau"),
    ("he", "heb"),
    ("hi", "hin"),
    ("ho", "hmo"),
    ("hr", "hrv"),
    ("ht", "hat"),
    ("hu", "hun"),
    ("hy", "hye"),
    ("hz", "her"),
    ("ia", "ina"),
    ("id", "ind"),
    ("ie", "ile"),
    ("ig", "ibo"),
    ("ii", "iii"),
    ("ik", "ipk"),
    ("io", "ido"),
    ("is", "isl"),
    ("it", "ita"),
    ("iu", "iku"),
    ("ja", "jpn"),
    ("jv", "jav"),
    ("ka", "kat"),
    ("kg", "kon"),
    ("ki", "kik"),
    ("kj", "kua"),
    ("kk", "kaz"),
    ("kl", "kal"),
    ("km", "khm"),
    ("kn", "kan"),
    ("ko", "kor"),
    ("kr", "kau"),
    ("ks", "kas"),
    ("ku", "kur"),
    ("kv", "kom"),
    ("kw", "cor"),
    ("ky", "kir"),
    ("la", "lat"),
    ("lb", "ltz"),
    ("lg", "lug"),
    ("li", "lim"),
    ("ln", "lin"),
    ("lo", "lao"),
    ("lt", "lit"),
    ("lu", "lub"),
    ("lv", "lav"),
    ("mg", "mlg"),
    ("mh", "mah"),
    ("mi", "mri"),
    ("mk", "mkd"),
    ("ml", "mal"),
    ("mn", "mon"),
    ("mr", "mar"),
    ("ms", "msa"),
    ("mt", "mlt"),
    ("my", "mya"),
    ("na", "nau"),
    ("nb", "nob"),
    ("nd", "nde"),
    ("ne", "nep"),
    ("ng", "ndo"),
    ("nl", "nld"),
    ("nn", "nno"),
    ("no", "nor"),
    ("nr", "nbl"),
    ("nv", "nav"),
    ("ny", "nya"),
    ("oc", "oci"),
    ("oj", "oji"),
    ("om", "orm"),
    ("or", "ori"),
    ("os", "oss"),
    ("pa", "pan"),
    ("pi", "pli"),
    ("pl", "pol"),
    ("ps", "pus"),
    ("pt", "por"),
    ("qu", "que"),
    ("rm", "roh"),
    ("rn", "run"),
    ("ro", "ron"),
    ("ru", "rus"),
    ("rw", "kin"),
    ("sa", "san"),
    ("sc", "srd"),
    ("sd", "snd"),
    ("se", "sme"),
    ("sg", "sag"),
    ("sh", "hbs"),
    ("si", "sin"),
    ("sk", "slk"),
    ("sl", "slv"),
    ("sm", "smo"),
    ("sn", "sna"),
    ("so", "som"),
    ("sq", "sqi"),
    ("sr", "srp"),
    ("ss", "ssw"),
    ("st", "sot"),
    ("su", "sun"),
    ("sv", "swe"),
    ("sw", "swa"),
    ("ta", "tam"),
    ("te", "tel"),
    ("tg", "tgk"),
    ("th", "tha"),
    ("ti", "tir"),
    ("tk", "tuk"),
    ("tl", "tgl"),
    ("tn", "tsn"),
    ("to", "ton"),
    ("tr", "tur"),
    ("ts", "tso"),
    ("tt", "tat"),
    ("tw", "twi"),
    ("ty", "tah"),
    ("ug", "uig"),
    ("uk", "ukr"),
    ("ur", "urd"),
    ("uz", "uzb"),
    ("ve", "ven"),
    ("vi", "vie"),
    ("vo", "vol"),
    ("wa", "wln"),
    ("wo", "wol"),
    ("xh", "xho"),
    ("yi", "yid"),
    ("yo", "yor"),
    ("za", "zha"),
    ("zh", "zho"),
    ("zu", "zul"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_calibres() {
        assert_eq!(canonicalize("en").as_deref(), Some("eng"));
        assert_eq!(canonicalize("en-US").as_deref(), Some("eng"));
        assert_eq!(canonicalize("fre").as_deref(), Some("fra"));
        assert_eq!(canonicalize("DEU").as_deref(), Some("deu"));
        assert_eq!(canonicalize("English").as_deref(), Some("eng"));
        assert_eq!(canonicalize("und"), None);
        assert_eq!(canonicalize("x"), None);
        assert_eq!(canonicalize("qq"), None);
    }

    #[test]
    fn codes_become_iso639_1() {
        for (raw, want) in [
            ("eng", "en"),
            ("fre", "fr"),
            ("ger", "de"),
            ("deu", "de"),
            ("en-US", "en"),
            ("pt_BR", "pt"),
            ("JA", "ja"),
            ("chi", "zh"),
            ("English", "en"),
            ("kaz", "kk"),
            ("hbs", "sh"),
            ("haw", "haw"),
            ("fil", "fil"),
        ] {
            assert_eq!(iso639_1(raw).as_deref(), Some(want), "{raw}");
        }
        for raw in ["und", "zxx", "mis", "mul", "x", "1234", "", "klingon"] {
            assert_eq!(iso639_1(raw), None, "{raw}");
        }
    }

    #[test]
    fn tables_are_consistent() {
        // Sorted and unique for the binary search; a 639-2/T code maps back to one 639-1 code.
        assert!(ISO_639_1_TO_3.windows(2).all(|w| w[0].0 < w[1].0));
        let mut three: Vec<&str> = ISO_639_1_TO_3.iter().map(|(_, t)| *t).collect();
        three.sort_unstable();
        three.dedup();
        assert_eq!(three.len(), ISO_639_1_TO_3.len());
        // Every code and name goes both ways through the same table.
        for (two, t) in ISO_639_1_TO_3 {
            assert_eq!(canonicalize(two).as_deref(), Some(*t));
            assert_eq!(iso639_1(t).as_deref(), Some(*two));
        }
        for (b, t) in BIBLIOGRAPHIC {
            assert_eq!(iso639_1(b), iso639_1(t), "{b}");
        }
        for (name, t) in NAMES {
            assert_eq!(canonicalize(name).as_deref(), Some(*t));
        }
    }
}
