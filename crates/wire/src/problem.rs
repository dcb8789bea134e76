//! RFC 9457 problem details and the documented list of error codes.
//!
//! Every error answer of the gateway is a [`Problem`]. `type` is a relative URI that the
//! gateway serves as documentation (`/v1/problems/{code}`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The documented error codes; each fixes an HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemCode {
    /// 400: the call verified but its tool or arguments are malformed.
    BadArguments,
    /// 401: the call does not verify (signature, key, algorithm, claims, time window).
    InvalidCall,
    /// 403: policy refused the call. The body is identical for every denial.
    Denied,
    /// 404: the EHR has no such resource (only after policy allowed the read).
    NotFound,
    /// 409: the call's `jti` was already used.
    Replayed,
    /// 413: the call is larger than `max_call_bytes`.
    TooLarge,
    /// 415: the body is not `application/jwt`.
    UnsupportedMediaType,
    /// 429: a rate budget is spent; see `Retry-After`.
    RateLimited,
    /// 502: the EHR answered with an error.
    EhrError,
    /// 503: the EHR (or its token endpoint) is unavailable, or its credentials are misconfigured.
    EhrUnavailable,
    /// 504: the EHR did not answer in time.
    EhrTimeout,
    /// 503: the audit log cannot be written, so nothing is done.
    AuditUnavailable,
    /// 500: a fault in the gateway itself.
    Internal,
}

impl ProblemCode {
    /// All codes, for documentation.
    pub const ALL: [ProblemCode; 13] = [
        ProblemCode::BadArguments,
        ProblemCode::InvalidCall,
        ProblemCode::Denied,
        ProblemCode::NotFound,
        ProblemCode::Replayed,
        ProblemCode::TooLarge,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::RateLimited,
        ProblemCode::EhrError,
        ProblemCode::EhrUnavailable,
        ProblemCode::EhrTimeout,
        ProblemCode::AuditUnavailable,
        ProblemCode::Internal,
    ];

    /// The HTTP status this code is sent with.
    pub const fn status(self) -> u16 {
        match self {
            ProblemCode::BadArguments => 400,
            ProblemCode::InvalidCall => 401,
            ProblemCode::Denied => 403,
            ProblemCode::NotFound => 404,
            ProblemCode::Replayed => 409,
            ProblemCode::TooLarge => 413,
            ProblemCode::UnsupportedMediaType => 415,
            ProblemCode::RateLimited => 429,
            ProblemCode::EhrError => 502,
            ProblemCode::EhrUnavailable | ProblemCode::AuditUnavailable => 503,
            ProblemCode::EhrTimeout => 504,
            ProblemCode::Internal => 500,
        }
    }

    /// The kebab-case code string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProblemCode::BadArguments => "bad-arguments",
            ProblemCode::InvalidCall => "invalid-call",
            ProblemCode::Denied => "denied",
            ProblemCode::NotFound => "not-found",
            ProblemCode::Replayed => "replayed",
            ProblemCode::TooLarge => "too-large",
            ProblemCode::UnsupportedMediaType => "unsupported-media-type",
            ProblemCode::RateLimited => "rate-limited",
            ProblemCode::EhrError => "ehr-error",
            ProblemCode::EhrUnavailable => "ehr-unavailable",
            ProblemCode::EhrTimeout => "ehr-timeout",
            ProblemCode::AuditUnavailable => "audit-unavailable",
            ProblemCode::Internal => "internal",
        }
    }

    /// The short, fixed title.
    pub const fn title(self) -> &'static str {
        match self {
            ProblemCode::BadArguments => "Bad tool arguments",
            ProblemCode::InvalidCall => "The call does not verify",
            ProblemCode::Denied => "Access denied",
            ProblemCode::NotFound => "Resource not found",
            ProblemCode::Replayed => "Call already used",
            ProblemCode::TooLarge => "Call too large",
            ProblemCode::UnsupportedMediaType => "Unsupported media type",
            ProblemCode::RateLimited => "Rate limited",
            ProblemCode::EhrError => "The EHR answered with an error",
            ProblemCode::EhrUnavailable => "The EHR is unavailable",
            ProblemCode::EhrTimeout => "The EHR did not answer in time",
            ProblemCode::AuditUnavailable => "The audit log cannot be written",
            ProblemCode::Internal => "Internal error",
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 9457 problem details document (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `/v1/problems/{code}`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The code's fixed title.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong and what to do (never secrets or PHI).
    pub detail: String,
    /// The machine-readable code.
    pub code: ProblemCode,
}

/// The one detail every denial carries, so a denial never reveals whether data exists.
pub const DENIED_DETAIL: &str = "The call is not permitted for this agent, user and connection. Ask an administrator to review the roles and scopes granted.";

impl Problem {
    /// A problem of `code` with `detail`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("/v1/problems/{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
        }
    }

    /// The uniform denial.
    pub fn denied() -> Self {
        Problem::new(ProblemCode::Denied, DENIED_DETAIL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_documented() {
        for c in ProblemCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::Value::String(c.as_str().into()));
        }
        let p = Problem::new(ProblemCode::Replayed, "jti used");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "/v1/problems/replayed");
        assert_eq!(v["status"], 409);
    }

    #[test]
    fn every_denial_is_byte_identical() {
        assert_eq!(serde_json::to_vec(&Problem::denied()).unwrap(), serde_json::to_vec(&Problem::denied()).unwrap());
    }
}
