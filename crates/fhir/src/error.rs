//! What can go wrong talking to an EHR, and how the gateway should answer it.
//!
//! Every error says what happened and what to do, and carries only ids, statuses,
//! content types and truncated vendor diagnostics: never a token or a resource body.
//! [`FhirError::problem_code`] maps each to the gateway's documented problem code.

use crate::link::NextLinkProblem;
use crate::outcome::{Issue, summarize};
use crate::search::InvalidSearch;
use crate::token::TokenError;
use medicodax_wire::{ProblemCode, ResourceType};
use std::time::Duration;

/// Who said "slow down".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// The EHR answered 429.
    Ehr,
    /// The connection's own request budget (the auth manager) refused the request.
    Budget,
}

/// An error from the FHIR client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// The EHR has no such resource (404 or 410 on a read).
    #[error("{resource_type}/{id} was not found at the EHR (HTTP {status}){}", issues_suffix(issues))]
    NotFound {
        /// The type read.
        resource_type: ResourceType,
        /// The id read.
        id: String,
        /// 404 or 410.
        status: u16,
        /// The OperationOutcome issues, if the EHR sent any.
        issues: Vec<Issue>,
    },
    /// The EHR refused the request with a 4xx/5xx and an OperationOutcome (for example a
    /// vendor-required parameter is missing). The diagnostics say why.
    #[error("the EHR refused the request with HTTP {status}: {}; check the search parameters against what this EHR requires", summarize(issues))]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The OperationOutcome issues.
        issues: Vec<Issue>,
    },
    /// The EHR answered with an error status and a body that is not an OperationOutcome
    /// (an HTML error page from a proxy, say).
    #[error("the EHR answered HTTP {status} with {content_type}: {snippet:?}; the EHR or a proxy in front of it failed, try again later")]
    HttpStatus {
        /// The HTTP status.
        status: u16,
        /// The `Content-Type` (printable, truncated).
        content_type: String,
        /// The start of the body, printable characters only, at most 200.
        snippet: String,
    },
    /// A 200 searchset held an OperationOutcome with `error` or `fatal` issues: the
    /// search failed even though the HTTP status said success.
    #[error("the EHR reported a failure inside a successful answer: {}", summarize(issues))]
    OutcomeFailure {
        /// The `error`/`fatal` issues.
        issues: Vec<Issue>,
    },
    /// The body is not JSON (XML, HTML or another type). Only FHIR JSON is supported.
    #[error("the EHR answered HTTP {status} with {content_type}, which is not FHIR JSON; this client sends Accept: application/fhir+json and supports only JSON")]
    UnsupportedFormat {
        /// The HTTP status.
        status: u16,
        /// The `Content-Type` (printable, truncated).
        content_type: String,
    },
    /// The body is JSON in a charset other than UTF-8.
    #[error("the EHR answered with JSON in charset {charset:?}; FHIR JSON must be UTF-8")]
    UnsupportedCharset {
        /// The HTTP status.
        status: u16,
        /// The charset named.
        charset: String,
    },
    /// The body is not a usable FHIR resource of the expected kind.
    #[error("the EHR's answer (HTTP {status}) is not usable: {detail}")]
    InvalidBody {
        /// The HTTP status.
        status: u16,
        /// What is wrong (never body text).
        detail: String,
    },
    /// The body is larger than the configured limit.
    #[error("the EHR's answer is larger than {limit} bytes; ask for smaller pages (_count)")]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`: the connection's
    /// registration does not grant this; a new token will not help.
    #[error("the EHR denied access for lack of scope{}; grant it to this connection's client registration", scope.as_ref().map(|s| format!(" {s}")).unwrap_or_default())]
    ScopeDenied {
        /// The scope the EHR says is needed, if it said.
        scope: Option<String>,
        /// The type requested.
        resource_type: ResourceType,
    },
    /// 403 for another reason (an unattached API, a user-security rule). Not retried.
    #[error("the EHR refused access to {resource_type} (HTTP 403){}; check the connection's grants at the EHR", issues_suffix(issues))]
    Forbidden {
        /// The type requested.
        resource_type: ResourceType,
        /// The OperationOutcome issues, if any.
        issues: Vec<Issue>,
    },
    /// 401 twice: the EHR refused a freshly obtained token too.
    #[error("the EHR refused a freshly obtained token (HTTP 401 twice); check the client registration and the token endpoint")]
    Unauthorized,
    /// Rate limited, by the EHR (429) or the connection's budget.
    #[error("rate limited by the {}{}; try again later", match origin { LimitSource::Ehr => "EHR", LimitSource::Budget => "connection's request budget" }, retry_suffix(*retry_after))]
    RateLimited {
        /// Who limited.
        origin: LimitSource,
        /// How long to wait, if known.
        retry_after: Option<Duration>,
    },
    /// The EHR is unavailable (503 after retries, or a `Retry-After` past the cap).
    #[error("the EHR is unavailable (HTTP {status}, {attempts} attempts){}", retry_suffix(*retry_after))]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// How long the EHR asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// Requests sent.
        attempts: u32,
    },
    /// No answer in time (our timeout, or the EHR's 504), after retries.
    #[error("the EHR did not answer in time ({attempts} attempts); try again later")]
    Timeout {
        /// Requests sent.
        attempts: u32,
    },
    /// The connection failed (DNS, TCP, TLS, a broken body), after retries.
    #[error("could not reach the EHR ({detail}, {attempts} attempts); check the network and the FHIR base URL")]
    Network {
        /// The transport error, without the URL.
        detail: String,
        /// Requests sent.
        attempts: u32,
    },
    /// The token source could not give a token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The search itself is malformed (typed parameters that do not fit the type).
    #[error(transparent)]
    InvalidSearch(#[from] InvalidSearch),
    /// A `next` link was not followed; the pages before it were kept.
    #[error("paging stopped after page {page}: {problem}")]
    InvalidNextLink {
        /// The page that carried the link.
        page: u32,
        /// Why it was not followed.
        problem: NextLinkProblem,
    },
    /// A `next` link pointed at a page already fetched in this walk.
    #[error("paging stopped after page {page}: its next link leads to a page already fetched (a paging loop at the EHR)")]
    PagingLoop {
        /// The page that carried the link.
        page: u32,
    },
    /// The walk reached the configured page limit.
    #[error("paging stopped after {limit} pages, the configured limit; narrow the search")]
    TooManyPages {
        /// The limit.
        limit: u32,
    },
    /// Page `page` (2 or later) failed; the pages before it were kept and the result is
    /// marked incomplete.
    #[error("page {page} of the search failed (HTTP {status}): {cause}; the result holds only the pages before it")]
    PageFetchFailed {
        /// The page that failed (1-based).
        page: u32,
        /// Its HTTP status, 0 if no answer came.
        status: u16,
        /// What went wrong.
        cause: Box<FhirError>,
    },
    /// One category of a split search failed (the others are kept).
    #[error("the {category:?} part of the search failed: {cause}")]
    CategoryFailed {
        /// The category.
        category: String,
        /// What went wrong.
        cause: Box<FhirError>,
    },
}

fn issues_suffix(issues: &[Issue]) -> String {
    if issues.is_empty() { String::new() } else { format!(": {}", summarize(issues)) }
}

fn retry_suffix(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("; retry after {} s", d.as_secs_f64().ceil() as u64),
        None => String::new(),
    }
}

impl FhirError {
    /// The gateway problem code for this error: not found → 404, EHR error → 502,
    /// unavailable → 503, rate limited → 429, timeout → 504, scope or access denied →
    /// 403, malformed search → 400.
    pub fn problem_code(&self) -> ProblemCode {
        match self {
            FhirError::NotFound { .. } => ProblemCode::NotFound,
            FhirError::Rejected { .. }
            | FhirError::HttpStatus { .. }
            | FhirError::OutcomeFailure { .. }
            | FhirError::UnsupportedFormat { .. }
            | FhirError::UnsupportedCharset { .. }
            | FhirError::InvalidBody { .. }
            | FhirError::ResponseTooLarge { .. }
            | FhirError::InvalidNextLink { .. }
            | FhirError::PagingLoop { .. }
            | FhirError::TooManyPages { .. } => ProblemCode::EhrError,
            FhirError::ScopeDenied { .. } | FhirError::Forbidden { .. } => ProblemCode::Denied,
            FhirError::Unauthorized | FhirError::Unavailable { .. } | FhirError::Network { .. } => ProblemCode::EhrUnavailable,
            FhirError::RateLimited { .. } => ProblemCode::RateLimited,
            FhirError::Timeout { .. } => ProblemCode::EhrTimeout,
            FhirError::Token(TokenError::RateLimited { .. }) => ProblemCode::RateLimited,
            FhirError::Token(_) => ProblemCode::EhrUnavailable,
            FhirError::InvalidSearch(_) => ProblemCode::BadArguments,
            FhirError::PageFetchFailed { cause, .. } | FhirError::CategoryFailed { cause, .. } => cause.problem_code(),
        }
    }

    /// How long the caller should wait before trying again, when known (for `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FhirError::RateLimited { retry_after, .. } | FhirError::Unavailable { retry_after, .. } => *retry_after,
            FhirError::Token(TokenError::RateLimited { retry_after }) => Some(*retry_after),
            FhirError::Token(TokenError::Unavailable { retry_after, .. }) => *retry_after,
            FhirError::PageFetchFailed { cause, .. } | FhirError::CategoryFailed { cause, .. } => cause.retry_after(),
            _ => None,
        }
    }

    /// True for scope denials and other 403s: in a multi-type job the type is withheld,
    /// not the whole job failed.
    pub fn is_access_denied(&self) -> bool {
        match self {
            FhirError::ScopeDenied { .. } | FhirError::Forbidden { .. } => true,
            FhirError::PageFetchFailed { cause, .. } | FhirError::CategoryFailed { cause, .. } => cause.is_access_denied(),
            _ => false,
        }
    }

    /// The HTTP status the EHR answered with, when this error came from an answer.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            FhirError::NotFound { status, .. }
            | FhirError::Rejected { status, .. }
            | FhirError::HttpStatus { status, .. }
            | FhirError::UnsupportedFormat { status, .. }
            | FhirError::UnsupportedCharset { status, .. }
            | FhirError::InvalidBody { status, .. }
            | FhirError::Unavailable { status, .. } => Some(*status),
            FhirError::OutcomeFailure { .. } => Some(200),
            FhirError::ScopeDenied { .. } | FhirError::Forbidden { .. } => Some(403),
            FhirError::Unauthorized => Some(401),
            FhirError::RateLimited { origin: LimitSource::Ehr, .. } => Some(429),
            FhirError::PageFetchFailed { cause, .. } | FhirError::CategoryFailed { cause, .. } => cause.upstream_status(),
            _ => None,
        }
    }

    /// The vendor's OperationOutcome issues carried by this error (the diagnostics the
    /// caller should see, pitfall 21 c).
    pub fn issues(&self) -> &[Issue] {
        match self {
            FhirError::NotFound { issues, .. }
            | FhirError::Rejected { issues, .. }
            | FhirError::OutcomeFailure { issues }
            | FhirError::Forbidden { issues, .. } => issues,
            FhirError::PageFetchFailed { cause, .. } | FhirError::CategoryFailed { cause, .. } => cause.issues(),
            _ => &[],
        }
    }

    /// A short stable code for warnings and metrics, e.g. `page-failed`, `scope-denied`.
    pub fn code(&self) -> &'static str {
        match self {
            FhirError::NotFound { .. } => "not-found",
            FhirError::Rejected { .. } => "ehr-rejected",
            FhirError::HttpStatus { .. } => "ehr-http-error",
            FhirError::OutcomeFailure { .. } => "operation-outcome-error",
            FhirError::UnsupportedFormat { .. } => "unsupported-format",
            FhirError::UnsupportedCharset { .. } => "unsupported-charset",
            FhirError::InvalidBody { .. } => "invalid-body",
            FhirError::ResponseTooLarge { .. } => "response-too-large",
            FhirError::ScopeDenied { .. } => "scope-denied",
            FhirError::Forbidden { .. } => "forbidden",
            FhirError::Unauthorized => "unauthorized",
            FhirError::RateLimited { .. } => "rate-limited",
            FhirError::Unavailable { .. } => "unavailable",
            FhirError::Timeout { .. } => "timeout",
            FhirError::Network { .. } => "network",
            FhirError::Token(_) => "token",
            FhirError::InvalidSearch(_) => "invalid-search",
            FhirError::InvalidNextLink { .. } => "invalid-next-link",
            FhirError::PagingLoop { .. } => "paging-loop",
            FhirError::TooManyPages { .. } => "too-many-pages",
            FhirError::PageFetchFailed { .. } => "page-failed",
            FhirError::CategoryFailed { .. } => "category-failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Severity;

    #[test]
    fn classification() {
        let nf = FhirError::NotFound { resource_type: ResourceType::Patient, id: "pt-1".into(), status: 404, issues: vec![] };
        assert_eq!(nf.problem_code(), ProblemCode::NotFound);
        assert_eq!(nf.to_string(), "Patient/pt-1 was not found at the EHR (HTTP 404)");
        let rl = FhirError::RateLimited { origin: LimitSource::Ehr, retry_after: Some(Duration::from_secs(120)) };
        assert_eq!(rl.problem_code(), ProblemCode::RateLimited);
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(rl.to_string(), "rate limited by the EHR; retry after 120 s; try again later");
        let sd = FhirError::ScopeDenied { scope: Some("system/Specimen.read".into()), resource_type: ResourceType::Observation };
        assert_eq!(sd.problem_code(), ProblemCode::Denied);
        assert!(sd.is_access_denied());
        assert!(sd.to_string().contains("system/Specimen.read"));
        assert_eq!(FhirError::Timeout { attempts: 4 }.problem_code(), ProblemCode::EhrTimeout);
        assert_eq!(FhirError::Unavailable { status: 503, retry_after: None, attempts: 4 }.problem_code(), ProblemCode::EhrUnavailable);
        let html = FhirError::HttpStatus { status: 502, content_type: "text/html".into(), snippet: "<html>Bad gateway</html>".into() };
        assert_eq!(html.problem_code(), ProblemCode::EhrError);
        let pf = FhirError::PageFetchFailed { page: 2, status: 404, cause: Box::new(html) };
        assert_eq!(pf.problem_code(), ProblemCode::EhrError);
        assert_eq!(pf.upstream_status(), Some(502));
        let issue = Issue { severity: Severity::Fatal, code: "required".into(), detail_code: None, diagnostics: Some("category is required".into()), expression: vec![] };
        let rj = FhirError::Rejected { status: 400, issues: vec![issue] };
        assert_eq!(rj.to_string(), "the EHR refused the request with HTTP 400: fatal required: category is required; check the search parameters against what this EHR requires");
        assert_eq!(FhirError::Token(TokenError::RateLimited { retry_after: Duration::from_secs(3) }).problem_code(), ProblemCode::RateLimited);
        assert_eq!(FhirError::Token(TokenError::Misconfigured { detail: "invalid_client".into() }).problem_code(), ProblemCode::EhrUnavailable);
    }
}
