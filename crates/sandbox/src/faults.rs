//! Fault switches for tests, and the request log they inspect.
//!
//! Faults are per vendor side and take effect on the next request: added latency (slept
//! on the sandbox's clock, so an auto-advancing `ManualClock` moves time instead of
//! waiting), a number of 429 or 503 answers with an optional `Retry-After`, a token
//! endpoint that answers 503, a 401 on a given page of a paged search, and early
//! revocation of every token issued so far.

use crate::state::{Shared, lock};
use crate::vendor::Vendor;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// What a fault's `Retry-After` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date>`, that many seconds after the sandbox clock's now.
    HttpDateIn(u64),
}

/// A status a fault answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// 429 Too Many Requests.
    TooManyRequests,
    /// 503 Service Unavailable.
    ServiceUnavailable,
}

impl FaultStatus {
    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            FaultStatus::TooManyRequests => 429,
            FaultStatus::ServiceUnavailable => 503,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct VendorFaults {
    pub latency: Option<Duration>,
    /// Answers for the next FHIR requests, each used once.
    pub injected: VecDeque<(FaultStatus, Option<RetryAfter>)>,
    pub token_endpoint_down: bool,
    /// Pages (1-based, of any paged search) that answer 401 once.
    pub unauthorized_pages: Vec<usize>,
}

/// The fault switches of both sides.
#[derive(Clone, Debug, Default)]
pub(crate) struct FaultState {
    pub sides: [VendorFaults; 2],
}

/// What part of the sandbox a request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A token endpoint.
    Token,
    /// `.well-known/smart-configuration`.
    Discovery,
    /// `metadata` (CapabilityStatement).
    Metadata,
    /// A FHIR read, search or page.
    Fhir,
    /// Anything else (unknown paths).
    Other,
}

/// One request as the log keeps it: no token values, no bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// Sandbox clock time the request arrived, Unix milliseconds.
    pub at_unix_ms: i64,
    /// The vendor side, from the path prefix.
    pub vendor: Option<Vendor>,
    /// What was asked for.
    pub kind: RequestKind,
    /// The HTTP method.
    pub method: String,
    /// The path (no query).
    pub path: String,
    /// The raw query string, cut to 2,000 characters.
    pub query: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The label of the access token presented or issued (`epic-token-3`), never its value.
    pub token: Option<String>,
    /// The client id, for token requests.
    pub client_id: Option<String>,
    /// The OAuth error code answered, for refused token requests.
    pub oauth_error: Option<String>,
}

/// The bounded request log.
pub(crate) struct RequestLog {
    records: VecDeque<RequestRecord>,
    capacity: usize,
    next_seq: u64,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        RequestLog { records: VecDeque::new(), capacity: capacity.max(1), next_seq: 1 }
    }

    pub fn push(&mut self, mut r: RequestRecord) {
        r.seq = self.next_seq;
        self.next_seq += 1;
        if self.records.len() >= self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }
}

/// A snapshot of what the sandbox has seen.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// The request log, oldest first.
    pub requests: Vec<RequestRecord>,
    /// Access tokens issued per side, in [`Vendor::ALL`] order (test mints included).
    pub tokens_issued: [u64; 2],
    /// JWKS fetches per registered URL.
    pub jwks_fetches: BTreeMap<String, u64>,
}

impl Stats {
    /// Requests of `kind` to `vendor`.
    pub fn count(&self, vendor: Vendor, kind: RequestKind) -> usize {
        self.requests.iter().filter(|r| r.vendor == Some(vendor) && r.kind == kind).count()
    }

    /// Token endpoint requests to `vendor`, accepted or not.
    pub fn token_requests(&self, vendor: Vendor) -> usize {
        self.count(vendor, RequestKind::Token)
    }

    /// Access tokens issued by `vendor`.
    pub fn tokens_issued(&self, vendor: Vendor) -> u64 {
        self.tokens_issued[vendor.index()]
    }

    /// Times the JWKS at `url` was fetched.
    pub fn jwks_fetches(&self, url: &str) -> u64 {
        self.jwks_fetches.get(url).copied().unwrap_or(0)
    }

    /// The most recent request of `kind` to `vendor`.
    pub fn last(&self, vendor: Vendor, kind: RequestKind) -> Option<&RequestRecord> {
        self.requests.iter().rev().find(|r| r.vendor == Some(vendor) && r.kind == kind)
    }
}

/// The fault switches (a cheap handle; clones control the same sandbox).
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").field("state", &*lock(&self.shared.faults)).finish()
    }
}

impl Faults {
    fn with<R>(&self, vendor: Vendor, f: impl FnOnce(&mut VendorFaults) -> R) -> R {
        f(&mut lock(&self.shared.faults).sides[vendor.index()])
    }

    /// Adds `latency` before every answer of `vendor` (`None` removes it).
    pub fn set_latency(&self, vendor: Vendor, latency: Option<Duration>) {
        self.with(vendor, |v| v.latency = latency);
    }

    /// Answers the next `count` FHIR requests to `vendor` with `status`.
    pub fn fail_next(&self, vendor: Vendor, count: usize, status: FaultStatus, retry_after: Option<RetryAfter>) {
        self.with(vendor, |v| v.injected.extend(std::iter::repeat_n((status, retry_after), count)));
    }

    /// Answers the next `count` FHIR requests to `vendor` with 429.
    pub fn respond_429(&self, vendor: Vendor, count: usize, retry_after: Option<RetryAfter>) {
        self.fail_next(vendor, count, FaultStatus::TooManyRequests, retry_after);
    }

    /// Answers the next `count` FHIR requests to `vendor` with 503.
    pub fn respond_503(&self, vendor: Vendor, count: usize, retry_after: Option<RetryAfter>) {
        self.fail_next(vendor, count, FaultStatus::ServiceUnavailable, retry_after);
    }

    /// Makes `vendor`'s token endpoint answer 503 (an HTML error page) until turned off.
    pub fn set_token_endpoint_down(&self, vendor: Vendor, down: bool) {
        self.with(vendor, |v| v.token_endpoint_down = down);
    }

    /// Answers the next request for page `page` (1-based; page 1 is the search itself)
    /// of any paged search on `vendor` with 401 `invalid_token`, once. The token stays
    /// valid, so a retry succeeds.
    pub fn unauthorized_on_page(&self, vendor: Vendor, page: usize) {
        self.with(vendor, |v| v.unauthorized_pages.push(page));
    }

    /// Revokes every token `vendor` has issued so far (early revocation); returns how many.
    pub fn revoke_tokens(&self, vendor: Vendor) -> usize {
        lock(&self.shared.tokens).revoke_all(vendor)
    }

    /// Revokes the token with this label (as the request log shows it); `false` if none.
    pub fn revoke_token(&self, label: &str) -> bool {
        lock(&self.shared.tokens).revoke_label(label)
    }

    /// Turns every fault off (issued tokens stay revoked).
    pub fn clear(&self) {
        *lock(&self.shared.faults) = FaultState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> RequestRecord {
        RequestRecord {
            seq: 0,
            at_unix_ms: 0,
            vendor: Some(Vendor::Epic),
            kind: RequestKind::Fhir,
            method: "GET".into(),
            path: path.into(),
            query: None,
            status: 200,
            token: None,
            client_id: None,
            oauth_error: None,
        }
    }

    #[test]
    fn log_is_bounded_and_numbered() {
        let mut log = RequestLog::new(2);
        for p in ["/a", "/b", "/c"] {
            log.push(record(p));
        }
        let paths: Vec<(u64, &str)> = log.records.iter().map(|r| (r.seq, r.path.as_str())).collect();
        assert_eq!(paths, vec![(2, "/b"), (3, "/c")]);
    }
}
