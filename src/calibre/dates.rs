//! Dates as calibre stores them: `2026-11-28 22:10:32.292116+00:00` in `metadata.db` (Python's
//! `isoformat(' ')` of a UTC datetime), the same with `T` in `metadata.opf`, and
//! `0101-01-01 00:00:00+00:00` for "no date" (any year up to 101 reads as none).

use std::time::{SystemTime, UNIX_EPOCH};

/// calibre's "undefined" date, stored when a book has no publication date.
pub const UNDEFINED_DATE: &str = "0101-01-01 00:00:00+00:00";

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A UTC instant in calibre's database form.
pub fn db_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let micros = d.subsec_micros();
    let frac = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    format!(
        "{y:04}-{mo:02}-{da:02} {:02}:{:02}:{:02}{frac}+00:00",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Now, in calibre's database form.
pub fn now() -> String {
    db_timestamp(SystemTime::now())
}

/// A `Metadata::pubdate` (`YYYY-MM-DD`, `YYYY-MM` or `YYYY`) in calibre's database form. A
/// partial date gets day 2 of its first month, as calibre's `fix_only_date` keeps the month
/// and year right in every timezone; anything unparseable is calibre's undefined date.
pub fn pubdate(raw: Option<&str>) -> String {
    let Some(raw) = raw.map(str::trim) else {
        return UNDEFINED_DATE.into();
    };
    let mut parts = raw.get(..10.min(raw.len())).unwrap_or("").split('-');
    let num = |p: Option<&str>, len: usize| {
        p.filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let Some(year) = num(parts.next(), 4).filter(|y| *y > 101) else {
        return UNDEFINED_DATE.into();
    };
    let (month, day) = match (parts.next(), parts.next()) {
        (None, _) => (1, 2),
        (Some(m), None) => match num(Some(m), 2).filter(|m| (1..=12).contains(m)) {
            Some(m) => (m, 2),
            None => return UNDEFINED_DATE.into(),
        },
        (Some(m), Some(d)) => match (
            num(Some(m), 2).filter(|m| (1..=12).contains(m)),
            num(Some(d), 2).filter(|d| (1..=31).contains(d)),
        ) {
            (Some(m), Some(d)) => (m, d),
            _ => return UNDEFINED_DATE.into(),
        },
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > days_in_month {
        return UNDEFINED_DATE.into();
    }
    format!("{year:04}-{month:02}-{day:02} 00:00:00+00:00")
}

/// A calibre date and time, in its database form (`2001-02-03 04:05:06.123456+00:00`) or RFC
/// 3339 (`T` between date and time, `+00:00` or `Z`), as its parts: (date, time with its
/// fraction). `None` for anything else, and for calibre's "no date" (a year up to 101).
fn parts(raw: &str) -> Option<(&str, &str)> {
    let raw = raw.trim();
    let (date, rest) = (raw.get(..10)?, raw.get(10..)?);
    day_of(date)?;
    let rest = rest.strip_prefix([' ', 'T'])?;
    let time = rest
        .strip_suffix("+00:00")
        .or_else(|| rest.strip_suffix('Z'))?;
    let b = time.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let hms = b.len() >= 8 && digits(0..2) && b[2] == b':' && digits(3..5) && b[5] == b':';
    let frac = match time.get(8..) {
        Some("") => true,
        Some(f) => f.len() <= 7 && f.starts_with('.') && f[1..].bytes().all(|c| c.is_ascii_digit()),
        None => false,
    };
    (hms && digits(6..8) && frac).then_some((date, time))
}

/// A date and time calibre stored (`books.timestamp`, `last_modified`, `pubdate`) as RFC 3339
/// in UTC (`2001-02-03T04:05:06.123456+00:00`); `None` when it is not one (or "no date").
pub fn rfc3339_of(db: &str) -> Option<String> {
    parts(db).map(|(d, t)| format!("{d}T{t}+00:00"))
}

/// An RFC 3339 UTC date and time (see [`rfc3339_of`]) in calibre's database form; `None` when
/// it is not one.
pub fn db_form(rfc3339: &str) -> Option<String> {
    parts(rfc3339).map(|(d, t)| format!("{d} {t}+00:00"))
}

/// A calibre source book's `pubdate` as `Metadata` carries it: the day (`1940-05-03`) when it is
/// at midnight, as calibre stores a date it was given; else the whole UTC instant in RFC 3339
/// (a date set in another timezone), which [`source_pubdate`] writes back unchanged. `None` for "no
/// date".
pub fn pubdate_of(db: &str) -> Option<String> {
    match parts(db) {
        Some((d, "00:00:00")) => Some(d.to_string()),
        Some((d, t)) => Some(format!("{d}T{t}+00:00")),
        None => day_of(db),
    }
}

/// A calibre source book's `pubdate` (see [`pubdate_of`]) in calibre's database form: a whole
/// UTC instant kept as it is, a day as [`pubdate`] makes it.
pub fn source_pubdate(raw: Option<&str>) -> String {
    raw.and_then(db_form).unwrap_or_else(|| pubdate(raw))
}

/// The database form as calibre writes it in `metadata.opf` (`T` between date and time).
pub fn opf_form(db: &str) -> String {
    db.replacen(' ', "T", 1)
}

/// calibre's timestamp (`1940-05-03 00:00:00+00:00`) → `1940-05-03`. calibre writes
/// `0101-01-01…` (any year ≤ 101) for "no date": None.
pub fn day_of(raw: &str) -> Option<String> {
    let date = raw.trim().get(..10)?;
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10)) {
        return None;
    }
    let year: u32 = date[..4].parse().ok()?;
    (year > 101).then(|| date.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_python() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_817_432_292_116);
        assert_eq!(db_timestamp(t), "2026-11-27 22:10:32.292116+00:00");
        assert_eq!(db_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00+00:00");
        assert_eq!(pubdate(Some("1940-05-03")), "1940-05-03 00:00:00+00:00");
        assert_eq!(pubdate(Some("1999")), "1999-01-02 00:00:00+00:00");
        assert_eq!(pubdate(Some("1999-07")), "1999-07-02 00:00:00+00:00");
        assert_eq!(
            pubdate(Some("2001-02-28T10:00:00Z")),
            "2001-02-28 00:00:00+00:00"
        );
        assert_eq!(pubdate(Some("2001-02-30")), UNDEFINED_DATE);
        assert_eq!(pubdate(Some("junk")), UNDEFINED_DATE);
        assert_eq!(pubdate(None), UNDEFINED_DATE);
        assert_eq!(opf_form(UNDEFINED_DATE), "0101-01-01T00:00:00+00:00");
    }

    #[test]
    fn calibre_instants_go_to_rfc3339_and_back() {
        let db = "2001-02-03 04:05:06.123456+00:00";
        assert_eq!(
            rfc3339_of(db).as_deref(),
            Some("2001-02-03T04:05:06.123456+00:00")
        );
        assert_eq!(db_form(&rfc3339_of(db).unwrap()).as_deref(), Some(db));
        assert_eq!(
            db_form("2001-02-03T04:05:06Z").as_deref(),
            Some("2001-02-03 04:05:06+00:00")
        );
        for bad in [
            UNDEFINED_DATE,
            "2001-02-03",
            "2001-02-03 04:05:06+02:00",
            "2001-02-03 04:05+00:00",
            "2001-02-03 04:05:06.x+00:00",
            "junk",
        ] {
            assert_eq!(rfc3339_of(bad), None, "{bad}");
        }
        assert_eq!(
            pubdate_of("1999-07-08 00:00:00+00:00").as_deref(),
            Some("1999-07-08")
        );
        assert_eq!(
            pubdate_of("1999-07-07 22:00:00+00:00").as_deref(),
            Some("1999-07-07T22:00:00+00:00")
        );
        assert_eq!(pubdate_of(UNDEFINED_DATE), None);
        assert_eq!(
            source_pubdate(Some("1999-07-07T22:00:00+00:00")),
            "1999-07-07 22:00:00+00:00"
        );
        assert_eq!(
            source_pubdate(Some("1999-07-08")),
            "1999-07-08 00:00:00+00:00"
        );
        assert_eq!(source_pubdate(None), UNDEFINED_DATE);
        // From a file's own metadata only the day counts, as calibre takes it.
        assert_eq!(
            pubdate(Some("1999-07-07T22:00:00+00:00")),
            "1999-07-07 00:00:00+00:00"
        );
    }

    #[test]
    fn days_of_calibre_dates() {
        assert_eq!(
            day_of("1940-05-03 00:00:00+00:00").as_deref(),
            Some("1940-05-03")
        );
        assert_eq!(
            day_of("2001-02-03T12:00:00+00:00").as_deref(),
            Some("2001-02-03")
        );
        assert_eq!(day_of("0101-01-01 00:00:00+00:00"), None);
        assert_eq!(day_of("0100-12-31 23:00:00+00:00"), None);
        assert_eq!(day_of("garbage"), None);
        assert_eq!(day_of(""), None);
        assert_eq!(day_of(UNDEFINED_DATE), None);
    }
}
