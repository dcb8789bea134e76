//! The client for one EHR connection: configuration, one GET with its retry and token
//! rules, and `read`.

use crate::error::{FhirError, LimitSource};
use crate::link::FhirBase;
use crate::log::UpstreamLog;
use crate::media::{self, MediaKind};
use crate::outcome::{Outcome, truncate_chars};
use crate::profile::SearchProfile;
use crate::retry::{RetryPolicy, parse_retry_after};
use crate::token::{Bearer, TokenSource};
use crate::{bundle, challenge};
use medicodax_clock::SharedClock;
use medicodax_wire::{FhirId, ResourceType};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The media type asked for on every request.
pub const FHIR_JSON: &str = "application/fhir+json";

/// The most bytes of an error body read (to find an OperationOutcome or a snippet).
const MAX_ERROR_BODY_BYTES: usize = 256 * 1024;

/// The most characters of a non-FHIR error body repeated in an error.
const MAX_SNIPPET_CHARS: usize = 200;

/// Settings for one connection's FHIR client.
#[derive(Clone, Debug)]
pub struct FhirConfig {
    /// The connection's FHIR base URL.
    pub base: FhirBase,
    /// Vendor search behaviour.
    pub profile: SearchProfile,
    /// Retry and back-off settings.
    pub retry: RetryPolicy,
    /// Time allowed for one request, body included (real time, enforced by reqwest).
    pub request_timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// The largest successful response body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The most pages one walk follows.
    pub max_pages: u32,
}

impl FhirConfig {
    /// Defaults for `base`: generic profile, default retries, 60 s per request, 10 s to
    /// connect, 64 MiB per body, 10,000 pages per walk.
    pub fn new(base: FhirBase) -> Self {
        Self {
            base,
            profile: SearchProfile::generic(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024 * 1024,
            max_pages: 10_000,
        }
    }

    /// The same settings with `profile`.
    pub fn with_profile(mut self, profile: SearchProfile) -> Self {
        self.profile = profile;
        self
    }

    /// The same settings with `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// The HTTP client could not be built (a TLS backend problem).
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client for the FHIR connection: {0}")]
pub struct BuildError(String);

/// A FHIR R4 client for one EHR connection. Cheap to clone.
#[derive(Clone)]
pub struct FhirClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: FhirConfig,
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    clock: SharedClock,
}

impl fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirClient").field("base", &self.inner.config.base).finish_non_exhaustive()
    }
}

/// A 2xx answer whose media type is FHIR JSON.
pub(crate) struct JsonAnswer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// An answer as read off the wire.
struct RawAnswer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum SendError {
    Transport(reqwest::Error),
    /// A successful answer with a body over the limit (its status).
    TooLarge(u16),
}

/// What a request is for, to word its errors.
#[derive(Clone, Copy)]
pub(crate) struct Purpose<'a> {
    pub(crate) resource_type: ResourceType,
    pub(crate) read_id: Option<&'a FhirId>,
}

impl FhirClient {
    /// A client for `config`, taking tokens from `tokens` and time from `clock`.
    /// Redirects are never followed (a redirect is an error), so the token cannot be
    /// carried to another server.
    pub fn new(config: FhirConfig, tokens: Arc<dyn TokenSource>, clock: SharedClock) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("medicodax-fhir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError(e.without_url().to_string()))?;
        Ok(Self { inner: Arc::new(Inner { config, http, tokens, clock }) })
    }

    /// The connection's FHIR base.
    pub fn base(&self) -> &FhirBase {
        &self.inner.config.base
    }

    /// The connection's settings.
    pub fn config(&self) -> &FhirConfig {
        &self.inner.config
    }

    /// Reads `{type}/{id}`. The answer must be a resource of that type and id.
    pub async fn read(&self, resource_type: ResourceType, id: &FhirId, log: &UpstreamLog) -> Result<Value, FhirError> {
        let url = self
            .base()
            .join_str(&format!("{resource_type}/{id}"))
            .map_err(|e| FhirError::InvalidBody { status: 0, detail: format!("cannot form the read URL: {e}") })?;
        let answer = self.get(&url, log, Purpose { resource_type, read_id: Some(id) }).await?;
        let v: Value = serde_json::from_slice(strip_bom(&answer.body))
            .map_err(|e| FhirError::InvalidBody { status: answer.status, detail: bundle::describe_json_error(&e) })?;
        let got_type = v.get("resourceType").and_then(Value::as_str).unwrap_or("");
        if got_type != resource_type.as_str() {
            return Err(FhirError::InvalidBody {
                status: answer.status,
                detail: format!("expected a {resource_type}, got {:?}", truncate_chars(got_type, 64)),
            });
        }
        if v.get("id").and_then(Value::as_str) != Some(id.as_str()) {
            return Err(FhirError::InvalidBody { status: answer.status, detail: format!("the {resource_type} returned does not carry the id asked for") });
        }
        Ok(v)
    }

    /// One GET with every rule of the client: a permit and a token before each attempt,
    /// one renewal after a 401, none after a 403, `Retry-After` up to the cap, back-off
    /// for 502/503/504 and network errors, and the media type checked.
    pub(crate) async fn get(&self, url: &Url, log: &UpstreamLog, purpose: Purpose<'_>) -> Result<JsonAnswer, FhirError> {
        let cfg = &self.inner.config;
        let policy = &cfg.retry;
        let max_attempts = policy.max_attempts.max(1);
        let rel = cfg.base.relative(url);
        let mut retries = 0u32; // transient retries used
        let mut attempts = 0u32;
        let mut renewed = false;
        loop {
            self.acquire_permit().await?;
            let bearer = self.inner.tokens.bearer().await?;
            attempts += 1;
            let sent = self.send(url, &bearer).await;
            let answer = match sent {
                Err(SendError::TooLarge(status)) => {
                    log.record("GET", rel.clone(), status);
                    return Err(FhirError::ResponseTooLarge { limit: cfg.max_body_bytes });
                }
                Err(SendError::Transport(e)) => {
                    log.record("GET", rel.clone(), 0);
                    tracing::debug!(resource_type = %purpose.resource_type, attempt = attempts, timeout = e.is_timeout(), "FHIR request got no answer");
                    if retries + 1 < max_attempts {
                        self.inner.clock.sleep(policy.backoff(retries)).await;
                        retries += 1;
                        continue;
                    }
                    return Err(if e.is_timeout() {
                        FhirError::Timeout { attempts }
                    } else {
                        FhirError::Network { detail: transport_detail(&e), attempts }
                    });
                }
                Ok(a) => a,
            };
            let status = answer.status;
            log.record("GET", rel.clone(), status);
            tracing::debug!(resource_type = %purpose.resource_type, status, attempt = attempts, "FHIR request answered");
            match status {
                200..=299 => return self.accept_json(answer),
                401 if !renewed => {
                    self.inner.tokens.invalidate(&bearer).await;
                    renewed = true;
                }
                401 => return Err(FhirError::Unauthorized),
                403 => return Err(forbidden(&answer, purpose.resource_type)),
                429 | 503 => {
                    let wait = header_str(&answer.headers, RETRY_AFTER).and_then(|v| parse_retry_after(v, self.inner.clock.now_unix_millis()));
                    let give_up = |retry_after| {
                        if status == 429 {
                            FhirError::RateLimited { origin: LimitSource::Ehr, retry_after }
                        } else {
                            FhirError::Unavailable { status, retry_after, attempts }
                        }
                    };
                    if let Some(w) = wait
                        && w > policy.retry_after_cap
                    {
                        return Err(give_up(Some(w)));
                    }
                    if retries + 1 >= max_attempts {
                        return Err(give_up(wait));
                    }
                    self.inner.clock.sleep(wait.unwrap_or_else(|| policy.backoff(retries))).await;
                    retries += 1;
                }
                502 | 504 => {
                    if retries + 1 >= max_attempts {
                        return Err(if status == 504 { FhirError::Timeout { attempts } } else { error_from_answer(&answer, purpose) });
                    }
                    self.inner.clock.sleep(policy.backoff(retries)).await;
                    retries += 1;
                }
                _ => return Err(error_from_answer(&answer, purpose)),
            }
        }
    }

    /// Waits for the connection's request budget, up to the `Retry-After` cap.
    async fn acquire_permit(&self) -> Result<(), FhirError> {
        let policy = &self.inner.config.retry;
        let mut waits = 0u32;
        loop {
            match self.inner.tokens.acquire_request().await {
                Ok(()) => return Ok(()),
                Err(limited) => {
                    if limited.retry_after > policy.retry_after_cap || waits + 1 >= policy.max_attempts.max(1) {
                        return Err(FhirError::RateLimited { origin: LimitSource::Budget, retry_after: Some(limited.retry_after) });
                    }
                    self.inner.clock.sleep(limited.retry_after).await;
                    waits += 1;
                }
            }
        }
    }

    async fn send(&self, url: &Url, bearer: &Bearer) -> Result<RawAnswer, SendError> {
        let mut resp = self
            .inner
            .http
            .get(url.clone())
            .header(ACCEPT, HeaderValue::from_static(FHIR_JSON))
            .header(reqwest::header::AUTHORIZATION, bearer.authorization().clone())
            .send()
            .await
            .map_err(SendError::Transport)?;
        let status = resp.status().as_u16();
        let success = (200..300).contains(&status);
        let limit = if success { self.inner.config.max_body_bytes } else { MAX_ERROR_BODY_BYTES };
        if success && resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(SendError::TooLarge(status));
        }
        let headers = std::mem::take(resp.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(SendError::Transport)? {
            if body.len() + chunk.len() > limit {
                if success {
                    return Err(SendError::TooLarge(status));
                }
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawAnswer { status, headers, body })
    }

    fn accept_json(&self, answer: RawAnswer) -> Result<JsonAnswer, FhirError> {
        let ct = header_str(&answer.headers, CONTENT_TYPE);
        match media::classify(ct) {
            MediaKind::Json => Ok(JsonAnswer { status: answer.status, body: answer.body }),
            MediaKind::JsonWrongCharset(charset) => Err(FhirError::UnsupportedCharset { status: answer.status, charset }),
            MediaKind::Xml | MediaKind::Other => Err(FhirError::UnsupportedFormat { status: answer.status, content_type: media::printable(ct) }),
        }
    }
}

fn header_str(h: &HeaderMap, name: reqwest::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Skips a UTF-8 byte-order mark, which `serde_json` does not accept.
pub(crate) fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(b)
}

/// The transport error without the URL (which holds search values).
fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else if e.is_request() {
        "the request could not be sent"
    } else {
        "transport error"
    };
    let mut detail = kind.to_owned();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    // The innermost cause says the most (e.g. "Connection refused").
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(l) = last {
        detail.push_str(": ");
        detail.push_str(&truncate_chars(&l, 120));
    }
    detail
}

/// The OperationOutcome issues of a JSON error body, if it is one.
fn outcome_of(answer: &RawAnswer) -> Option<Outcome> {
    match media::classify(header_str(&answer.headers, CONTENT_TYPE)) {
        MediaKind::Json => serde_json::from_slice::<Value>(strip_bom(&answer.body)).ok().as_ref().and_then(Outcome::from_resource),
        _ => None,
    }
}

fn forbidden(answer: &RawAnswer, resource_type: ResourceType) -> FhirError {
    let challenge = answer
        .headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(challenge::parse_bearer_challenge);
    match challenge {
        Some(c) if c.error.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("insufficient_scope")) => {
            FhirError::ScopeDenied { scope: c.scope, resource_type }
        }
        _ => FhirError::Forbidden { resource_type, issues: outcome_of(answer).map(|o| o.issues).unwrap_or_default() },
    }
}

fn error_from_answer(answer: &RawAnswer, purpose: Purpose<'_>) -> FhirError {
    let status = answer.status;
    let outcome = outcome_of(answer);
    if let (404 | 410, Some(id)) = (status, purpose.read_id) {
        return FhirError::NotFound {
            resource_type: purpose.resource_type,
            id: id.as_str().to_owned(),
            status,
            issues: outcome.map(|o| o.issues).unwrap_or_default(),
        };
    }
    match outcome {
        Some(o) => FhirError::Rejected { status, issues: o.issues },
        None => {
            let ct = header_str(&answer.headers, CONTENT_TYPE);
            FhirError::HttpStatus { status, content_type: media::printable(ct), snippet: snippet(&answer.body) }
        }
    }
}

/// The start of a non-FHIR body: printable characters, whitespace collapsed, at most 200.
fn snippet(body: &[u8]) -> String {
    let head = &body[..body.len().min(MAX_SNIPPET_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_chars(&collapsed, MAX_SNIPPET_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_short_and_printable() {
        assert_eq!(snippet(b"<html>Bad gateway</html>"), "<html>Bad gateway</html>");
        assert_eq!(snippet(b"<html>\n  <body>\r\n\tx</body>"), "<html> <body> x</body>");
        let long = "y".repeat(10_000);
        assert_eq!(snippet(long.as_bytes()).chars().count(), MAX_SNIPPET_CHARS + 1);
        assert_eq!(snippet(&[0xff, 0xfe, b'a']), "\u{fffd}\u{fffd}a");
        assert_eq!(strip_bom(b"\xEF\xBB\xBF{}"), b"{}");
    }
}
