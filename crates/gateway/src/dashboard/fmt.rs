//! Formatting helpers shared by the pages: times in UTC, durations, minutes.

use time::OffsetDateTime;
use time::macros::format_description;

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC` (`-` when out of range).
pub fn time_ms(ms: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().and_then(|t| t.format(fmt).ok()).unwrap_or_else(|| "-".to_owned())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time_s(s: i64) -> String {
    time_ms(s.saturating_mul(1000))
}

/// The UTC day of Unix milliseconds, as days since 1970-01-01.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// A day number (days since 1970-01-01) as `YYYY-MM-DD`.
pub fn day_label(day: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]");
    OffsetDateTime::from_unix_timestamp(day.saturating_mul(86_400)).ok().and_then(|t| t.format(fmt).ok()).unwrap_or_else(|| "-".to_owned())
}

/// Parses `YYYY-MM-DD` as the Unix milliseconds of that day's start (UTC).
pub fn parse_day(s: &str) -> Option<i64> {
    let fmt = format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s.trim(), fmt).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp().saturating_mul(1000))
}

/// Seconds as a short duration: `45 s`, `3 min 05 s`, `2 h 04 min`.
pub fn secs(s: u64) -> String {
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// Milliseconds as a short duration (`1.2 s`, `3 min 05 s`).
pub fn millis(ms: i64) -> String {
    if ms < 0 {
        "-".to_owned()
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        secs(u64::try_from(ms / 1000).unwrap_or(0))
    }
}

/// Minutes with one decimal.
pub fn minutes(m: f64) -> String {
    format!("{m:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time_ms(1_767_225_600_123), "2026-01-01 00:00:00 UTC");
        assert_eq!(time_ms(i64::MAX), "-");
        assert_eq!(day_of(1_767_225_600_000 + 86_399_999), day_of(1_767_225_600_000));
        assert_eq!(day_label(day_of(1_767_225_600_000)), "2026-01-01");
        assert_eq!(parse_day("2026-01-01"), Some(1_767_225_600_000));
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("<script>"), None);
        assert_eq!(secs(59), "59 s");
        assert_eq!(secs(185), "3 min 05 s");
        assert_eq!(secs(7440), "2 h 04 min");
        assert_eq!(millis(1234), "1.2 s");
        assert_eq!(millis(-1), "-");
    }
}
