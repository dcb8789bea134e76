//! Small HTTP helpers shared by discovery and token requests: a size-capped body read,
//! `Retry-After` parsing, and a redacted classification of transport errors.

use serde::Serialize;
use std::time::Duration;

/// The largest discovery or token response body read, in bytes.
pub const MAX_BODY: usize = 256 * 1024;

/// A response body that was too large, or a transport error while reading it.
#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads at most [`MAX_BODY`] bytes of a response body.
pub(crate) async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// What went wrong on the wire, without URLs or bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// The request timed out.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The connection failed while sending or receiving.
    Transfer,
}

impl NetworkKind {
    /// Classifies a `reqwest` error.
    pub fn of(e: &reqwest::Error) -> NetworkKind {
        if e.is_timeout() {
            NetworkKind::Timeout
        } else if e.is_connect() {
            NetworkKind::Connect
        } else {
            NetworkKind::Transfer
        }
    }

    /// A short description.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::Timeout => "timed out",
            NetworkKind::Connect => "could not connect",
            NetworkKind::Transfer => "connection failed during the exchange",
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (relative to `now_unix_millis`).
/// A date in the past gives zero; anything unparseable gives `None`.
pub fn parse_retry_after(value: &str, now_unix_millis: i64) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let at_millis = i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()?;
    let delta = at_millis.saturating_sub(now_unix_millis).max(0);
    Some(Duration::from_millis(u64::try_from(delta).unwrap_or(0)))
}

/// The `Retry-After` header of a response, parsed.
pub(crate) fn retry_after_of(headers: &reqwest::header::HeaderMap, now_unix_millis: i64) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now_unix_millis))
}

/// Keeps a server-provided text short and printable for errors and logs.
pub(crate) fn clean_text(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", now), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn clean_text_strips_controls_and_truncates() {
        assert_eq!(clean_text("a\nb\u{1b}[31mc", 100), "ab[31mc");
        assert_eq!(clean_text("abcdef", 3), "abc");
    }
}
