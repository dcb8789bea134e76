//! FHIR dates as time ranges, and the R4 date-search prefixes.
//!
//! A FHIR `date`, `dateTime` or `instant` denotes a range whose width is its precision:
//! `2020` is the whole year, `2020-04-27` the whole day, a dateTime with seconds one
//! millisecond (sub-millisecond digits are dropped). A `Period` is the range from its
//! start to its end, open where either is missing. Ranges are half-open, in Unix
//! milliseconds, `[start, end)`.
//!
//! Search comparison follows FHIR R4 §3.1.1.4.3 (prefix semantics against the target's
//! range). Nothing here panics on input: every step is checked and years are limited to
//! 0001–9999.

/// A half-open time range in Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    /// Inclusive start (`i64::MIN` when open).
    pub start: i64,
    /// Exclusive end (`i64::MAX` when open).
    pub end: i64,
}

impl Range {
    /// The range of a Period with optional bounds (each bound itself a range).
    pub fn period(start: Option<Range>, end: Option<Range>) -> Option<Range> {
        if start.is_none() && end.is_none() {
            return None;
        }
        let r = Range { start: start.map_or(i64::MIN, |s| s.start), end: end.map_or(i64::MAX, |e| e.end) };
        (r.start < r.end).then_some(r)
    }
}

/// A date-search prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefix {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Sa,
    Eb,
}

/// One parsed date-search value: a prefix and a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DateFilter {
    pub prefix: Prefix,
    pub range: Range,
}

impl DateFilter {
    /// Parses `[prefix]date`, e.g. `ge2020-01-01`, `lt2021`, `2020-04-27T10:00:00+00:00`.
    /// A `+` in the offset may arrive decoded as a space (form decoding) and is accepted.
    pub fn parse(value: &str) -> Option<DateFilter> {
        let (prefix, rest) = match value.get(..2).zip(value.get(2..)) {
            Some(("eq", rest)) => (Prefix::Eq, rest),
            Some(("ne", rest)) => (Prefix::Ne, rest),
            Some(("lt", rest)) => (Prefix::Lt, rest),
            Some(("le", rest)) => (Prefix::Le, rest),
            Some(("gt", rest)) => (Prefix::Gt, rest),
            Some(("ge", rest)) => (Prefix::Ge, rest),
            Some(("sa", rest)) => (Prefix::Sa, rest),
            Some(("eb", rest)) => (Prefix::Eb, rest),
            _ => (Prefix::Eq, value),
        };
        Some(DateFilter { prefix, range: parse_range(rest)? })
    }

    /// Whether a target range satisfies this filter.
    pub fn matches(&self, t: Range) -> bool {
        let s = self.range;
        let contained = s.start <= t.start && t.end <= s.end;
        match self.prefix {
            Prefix::Eq => contained,
            Prefix::Ne => !contained,
            Prefix::Gt => t.end > s.end,
            Prefix::Lt => t.start < s.start,
            Prefix::Ge => t.end > s.end || contained,
            Prefix::Le => t.start < s.start || contained,
            Prefix::Sa => t.start >= s.end,
            Prefix::Eb => t.end <= s.start,
        }
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Unix seconds as an RFC 3339 UTC instant, e.g. `2026-01-01T00:00:00Z`.
pub(crate) fn rfc3339(unix_secs: i64) -> String {
    let (days, secs) = (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn digits(s: &str, n: usize) -> Option<i64> {
    if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An optional two-digit part: `Some(None)` when absent, `None` when present but bad.
fn opt_digits(part: Option<&str>) -> Option<Option<i64>> {
    match part {
        None => Some(None),
        Some(p) => digits(p, 2).map(Some),
    }
}

/// Parses a FHIR date, dateTime or instant (any precision) into its range.
pub(crate) fn parse_range(s: &str) -> Option<Range> {
    if !s.is_ascii() || s.len() > 40 {
        return None;
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let y = digits(parts.next()?, 4)?;
    if y < 1 {
        return None;
    }
    let m = opt_digits(parts.next())?;
    let d = opt_digits(parts.next())?;
    if parts.next().is_some() {
        return None;
    }
    if let Some(m) = m
        && !(1..=12).contains(&m)
    {
        return None;
    }
    if let (Some(m), Some(d)) = (m, d)
        && !(1..=days_in_month(y, m)).contains(&d)
    {
        return None;
    }
    let Some(time) = time else {
        return Some(match (m, d) {
            (None, _) => Range { start: days_from_civil(y, 1, 1) * MS_PER_DAY, end: days_from_civil(y + 1, 1, 1) * MS_PER_DAY },
            (Some(m), None) => {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                Range { start: days_from_civil(y, m, 1) * MS_PER_DAY, end: days_from_civil(ny, nm, 1) * MS_PER_DAY }
            }
            (Some(m), Some(d)) => {
                let start = days_from_civil(y, m, d) * MS_PER_DAY;
                Range { start, end: start + MS_PER_DAY }
            }
        });
    };
    let (m, d) = (m?, d?);
    // Split the zone off: `Z`, `+hh:mm`, `-hh:mm` (or ` hh:mm`, a form-decoded `+`).
    let (clock, offset_min) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if time.len() > 6 {
        // infallible: the text is ASCII (checked above), so every index is a char
        // boundary, and it is longer than 6 bytes.
        let (c, z) = time.split_at(time.len() - 6);
        let (sign, hhmm) = match z.split_at(1) {
            ("+" | " ", rest) => (1, rest),
            ("-", rest) => (-1, rest),
            _ => return None,
        };
        let (hh, mm) = hhmm.split_once(':')?;
        let (hh, mm) = (digits(hh, 2)?, digits(mm, 2)?);
        if hh > 14 || mm > 59 {
            return None;
        }
        (c, sign * (hh * 60 + mm))
    } else {
        (time, 0)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (clock, None),
    };
    let mut hp = hms.split(':');
    let hh = digits(hp.next()?, 2)?;
    let mi = digits(hp.next()?, 2)?;
    let ss = opt_digits(hp.next())?;
    if hp.next().is_some() || hh > 23 || mi > 59 || ss.is_some_and(|s| s > 60) {
        return None;
    }
    let frac_ms = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<3}");
            padded.get(..3)?.parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    if frac.is_some() && ss.is_none() {
        return None;
    }
    let start = days_from_civil(y, m, d) * MS_PER_DAY + hh * 3_600_000 + mi * 60_000 + ss.unwrap_or(0) * 1000 + frac_ms
        - offset_min * 60_000;
    let width = match (ss, frac) {
        (None, _) => 60_000,
        (Some(_), None) => 1000,
        (Some(_), Some(_)) => 1,
    };
    Some(Range { start, end: start + width })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_2020_04_27: i64 = 1_587_945_600_000;

    #[test]
    fn precision_sets_the_width() {
        assert_eq!(parse_range("2020-04-27"), Some(Range { start: DAY_2020_04_27, end: DAY_2020_04_27 + MS_PER_DAY }));
        let y = parse_range("2020").unwrap();
        assert_eq!(y.start, 1_577_836_800_000);
        assert_eq!(y.end - y.start, 366 * MS_PER_DAY, "2020 is a leap year");
        let m = parse_range("2020-02").unwrap();
        assert_eq!(m.end - m.start, 29 * MS_PER_DAY);
        let dec = parse_range("2019-12").unwrap();
        assert_eq!(dec.end, 1_577_836_800_000);
        let t = parse_range("2020-04-27T10:59:40.341977+00:00").unwrap();
        assert_eq!(t, Range { start: DAY_2020_04_27 + 39_580_341, end: DAY_2020_04_27 + 39_580_342 });
        assert_eq!(parse_range("2020-04-27T10:59:40Z").unwrap().end - parse_range("2020-04-27T10:59:40Z").unwrap().start, 1000);
        assert_eq!(parse_range("2020-04-27T12:59:40+02:00").unwrap().start, parse_range("2020-04-27T10:59:40Z").unwrap().start);
        assert_eq!(parse_range("2020-04-27T12:59:40 02:00"), parse_range("2020-04-27T12:59:40+02:00"), "a form-decoded '+'");
        assert_eq!(parse_range("2020-04-27T10:59").unwrap().end - parse_range("2020-04-27T10:59").unwrap().start, 60_000);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for bad in [
            "", "20", "2020-13", "2020-02-30", "2020-4-27", "abcd", "2020-04-27T", "2020-04-27T25:00:00Z", "2020-04-27T10:00:00+99:00",
            "2020-04-27T10:00:00.Z", "0000", "2020-04-27T10:00:00.1234567890Z", "2020-04-27T10:00:00+0200", "é020", "2020-04-27-01",
            "2020-04-27T10:00:00+00:0é",
        ] {
            assert_eq!(parse_range(bad), None, "{bad:?}");
            let _ = DateFilter::parse(bad);
        }
        assert_eq!(DateFilter::parse("ge"), None);
        assert_eq!(parse_range("9999-12-31").map(|r| r.end > r.start), Some(true));
    }

    #[test]
    fn formats_instants() {
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_582_977_599), "2020-02-29T11:59:59Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        for secs in [0, 951_782_400, 1_587_945_600, 4_102_444_800] {
            assert_eq!(parse_range(&rfc3339(secs)).map(|r| r.start), Some(secs * 1000));
        }
    }

    #[test]
    fn prefixes_follow_r4_semantics() {
        let day = parse_range("2020-04-27").unwrap();
        let instant = parse_range("2020-04-27T10:59:40Z").unwrap();
        let f = |v: &str| DateFilter::parse(v).unwrap();
        assert!(f("2020-04-27").matches(instant), "eq: the day contains the instant");
        assert!(f("eq2020").matches(day));
        assert!(!f("eq2020-04-27T10:59:40Z").matches(day), "eq: an instant does not contain a day");
        assert!(f("ne2021").matches(day));
        assert!(f("gt2020-04-26").matches(instant));
        assert!(!f("gt2020-04-27").matches(instant));
        assert!(f("ge2020-04-27").matches(instant));
        assert!(f("lt2020-04-28").matches(instant));
        assert!(!f("lt2020-04-27").matches(instant));
        assert!(f("le2020-04-27").matches(instant));
        assert!(f("sa2020-04-26").matches(instant));
        assert!(!f("sa2020-04-27").matches(instant));
        assert!(f("eb2020-04-28").matches(instant));
        assert!(!f("eb2020-04-27").matches(instant));
        let open = Range::period(Some(day), None).unwrap();
        assert!(f("gt2030").matches(open), "an open end overlaps every later range");
        assert!(!f("eb2030").matches(open));
        assert_eq!(Range::period(None, None), None);
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in "\\PC{0,48}") {
            if let Some(f) = DateFilter::parse(&s) {
                proptest::prop_assert!(f.range.start < f.range.end);
            }
        }

        #[test]
        fn date_like_text_never_panics(s in "[0-9]{0,5}(-[0-9]{0,3}){0,3}(T[0-9:. +Z-]{0,20})?") {
            if let Some(r) = parse_range(&s) {
                proptest::prop_assert!(r.start < r.end);
            }
        }
    }
}
