//! When to try a request again, and how long to wait first.
//!
//! - 429 and 503 with `Retry-After` (delta seconds or an HTTP date): wait that long if it
//!   is within [`RetryPolicy::retry_after_cap`], else fail at once carrying the wait.
//! - 502, 503 and 504 without `Retry-After`, 429 without it, and network errors or
//!   timeouts: bounded exponential back-off with jitter.
//! - Everything else is not retried here (401 has its own single renewal; 403 never).
//!
//! All waiting goes through the injected [`Clock`](medicodax_clock::Clock), so tests use
//! a manual clock and never sleep.

use rand::Rng;
use std::time::Duration;

/// How the back-off delay is randomised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: exactly the exponential delay (for tests and reproducible runs).
    None,
    /// "Equal jitter": half the exponential delay plus a random part up to the other half,
    /// so concurrent clients spread out but never retry immediately.
    Equal,
}

/// Retry settings for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request in total, including the first (at least 1).
    pub max_attempts: u32,
    /// The first back-off delay.
    pub base_delay: Duration,
    /// The longest single back-off delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` (or rate-budget wait) honoured by waiting; a longer one
    /// fails the request at once, carrying the wait for the caller.
    pub retry_after_cap: Duration,
    /// How back-off delays are randomised.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(30),
            jitter: Jitter::Equal,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The back-off before retry number `retry` (0 for the first retry):
    /// `min(max_delay, base_delay × 2^retry)`, jittered.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        match self.jitter {
            Jitter::None => capped,
            Jitter::Equal => {
                let half = capped / 2;
                let extra_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
                let r = if extra_ms == 0 { 0 } else { rand::rng().random_range(0..=extra_ms) };
                half + Duration::from_millis(r)
            }
        }
    }
}

/// Parses a `Retry-After` value: delta seconds, or an HTTP date (RFC 9110 §10.2.3)
/// measured against `now_unix_millis`. A date in the past means "now". Garbage gives `None`.
pub fn parse_retry_after(value: &str, now_unix_millis: i64) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Any number of digits: a huge value saturates rather than failing.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    let when_ms = match when.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => return Some(Duration::ZERO),
    };
    let delta = when_ms.saturating_sub(now_unix_millis);
    Some(Duration::from_millis(u64::try_from(delta).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120", NOW_MS), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", NOW_MS), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:00:45 GMT", NOW_MS), Some(Duration::from_secs(45)));
        assert_eq!(parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", NOW_MS), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", NOW_MS), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(parse_retry_after("-5", NOW_MS), None);
        assert_eq!(parse_retry_after("soon", NOW_MS), None);
        assert_eq!(parse_retry_after("", NOW_MS), None);
    }

    #[test]
    fn backoff_is_exponential_bounded_and_jittered() {
        let p = RetryPolicy { jitter: Jitter::None, ..RetryPolicy::default() };
        let d: Vec<u64> = (0..7).map(|i| p.backoff(i).as_millis() as u64).collect();
        assert_eq!(d, vec![500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(8));
        let j = RetryPolicy::default();
        for i in 0..6 {
            let full = p.backoff(i);
            for _ in 0..50 {
                let got = j.backoff(i);
                assert!(got >= full / 2 && got <= full, "retry {i}: {got:?} not within [{:?}, {full:?}]", full / 2);
            }
        }
    }
}
