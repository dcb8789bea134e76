//! Error answers: RFC 9457 problem documents as axum responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medicodax_wire::{Problem, ProblemCode};

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem with an optional `Retry-After`, ready to send.
#[derive(Debug, Clone)]
pub struct ApiProblem {
    /// The document.
    pub problem: Problem,
    /// Seconds for `Retry-After` (429/503).
    pub retry_after: Option<u64>,
}

impl ApiProblem {
    /// A problem of `code` with `detail`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiProblem { problem: Problem::new(code, detail), retry_after: None }
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The serialised body (the bytes a receipt's `result_hash` covers).
    pub fn body(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&self.problem).unwrap_or_default()
    }
}

impl IntoResponse for ApiProblem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))], self.body()).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// The documentation page for a problem code (served at `/v1/problems/{code}`).
pub fn documentation(code: ProblemCode) -> &'static str {
    match code {
        ProblemCode::BadArguments => "The call verified, but its tool name or arguments are malformed. The detail names the field. Fix the arguments and sign a new call (a new jti).",
        ProblemCode::InvalidCall => "The call does not verify: its size, JWS structure, header, algorithm, key, signature, audience or time window is wrong. The detail says which. Calls that do not verify are not written to the audit log and get no receipt.",
        ProblemCode::Denied => "Policy refused the call. Every denial has the same body so that a denial never reveals whether data exists. The reason is in the audit log; ask an administrator to review the roles and scopes of the agent and user.",
        ProblemCode::NotFound => "The EHR has no resource with that type and id (policy allowed the read).",
        ProblemCode::Replayed => "The call's jti was already used by this agent. Sign a new call with a fresh jti.",
        ProblemCode::TooLarge => "The call is larger than gateway.max_call_bytes (64 KiB by default). It was refused before decoding.",
        ProblemCode::UnsupportedMediaType => "POST /v1/calls takes a compact JWS with Content-Type: application/jwt.",
        ProblemCode::RateLimited => "A rate budget (the EHR connection's, or the gateway's) is spent. Wait for Retry-After seconds and sign a new call.",
        ProblemCode::EhrError => "The EHR answered with an error; the detail carries its status and a short diagnostic.",
        ProblemCode::EhrUnavailable => "The EHR or its token endpoint is unavailable, or the connection's credentials are misconfigured (the detail says which). Retry after Retry-After when given.",
        ProblemCode::EhrTimeout => "The EHR did not answer in time.",
        ProblemCode::AuditUnavailable => "The audit log cannot be written, so the gateway did nothing. This is fail-closed by design.",
        ProblemCode::Internal => "A fault in the gateway itself. The audit log holds the call's intent; report the receipt's seq to an administrator.",
    }
}
