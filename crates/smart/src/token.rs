//! The token request and the reading of its answer.
//!
//! The request is exactly what SMART Backend Services defines (pitfalls case 2): a
//! form-encoded `POST` with `grant_type`, `scope` (only when the vendor takes one),
//! `client_assertion_type` and `client_assertion`, `Accept: application/json`, and no
//! `Authorization` header or client secret.
//!
//! Reading the answer is lenient where that is harmless and strict where it matters
//! (pitfalls case 10): `expires_in` may be a number, a numeric string or a float;
//! anything else counts as missing (with a warning); `token_type` is compared with
//! `bearer` case-insensitively and anything else is refused. Error answers are typed by
//! their RFC 6749 `error` code, each with a [`TokenFailureRecord`]: a redacted account
//! of what we sent, for the log and the audit record (pitfalls case 3).

use medicodax_config::Vendor;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

use crate::assertion::AssertionSummary;
use crate::error::AuthError;
use crate::http::clean_text;
use crate::secret::{AccessToken, InvalidToken};

/// `client_assertion_type` for a JWT client assertion (RFC 7523).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The Content-Type of the token request.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// The form fields of a token request, in order.
pub fn form_fields<'a>(scope: Option<&'a str>, assertion: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut f = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        f.push(("scope", s));
    }
    f.push(("client_assertion_type", ASSERTION_TYPE));
    f.push(("client_assertion", assertion));
    f
}

/// What the response said about the token's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpiresIn {
    /// A positive number of seconds (not yet capped).
    Seconds(u64),
    /// Absent or `null`.
    Missing,
    /// Present but not a number (`"3600s"`, `"abc"`, `true`); the value, shortened.
    Unusable(String),
    /// Zero or negative: the token must not be cached.
    NotPositive,
}

/// A successful token response.
#[derive(Clone, Debug)]
pub struct TokenResponse {
    /// The token.
    pub access_token: AccessToken,
    /// `token_type` as sent (`Bearer`, `bearer`), or `bearer` when absent.
    pub token_type: String,
    /// Whether `token_type` was absent.
    pub token_type_missing: bool,
    /// The lifetime.
    pub expires_in: ExpiresIn,
    /// `scope` as sent, when present and a string.
    pub scope: Option<String>,
}

/// Why a 2xx token response could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseProblem {
    /// Not a JSON object.
    #[error("the body is not a JSON object")]
    NotJson,
    /// No string `access_token`.
    #[error("there is no string access_token")]
    NoAccessToken,
    /// `access_token` unusable.
    #[error("{0}")]
    BadAccessToken(InvalidToken),
    /// `token_type` other than bearer.
    #[error("token_type {0:?} is not bearer; only bearer tokens are supported")]
    NotBearer(String),
}

fn parse_expires_in(v: Option<&Value>) -> ExpiresIn {
    let numeric = |f: f64| if f.is_finite() && f >= 1.0 { ExpiresIn::Seconds(f as u64) } else { ExpiresIn::NotPositive };
    match v {
        None | Some(Value::Null) => ExpiresIn::Missing,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(0), _) => ExpiresIn::NotPositive,
            (Some(u), _) => ExpiresIn::Seconds(u),
            (None, Some(f)) => numeric(f),
            (None, None) => ExpiresIn::Unusable(clean_text(&n.to_string(), 32)),
        },
        Some(Value::String(s)) => {
            let t = s.trim();
            let digits = t.strip_prefix('-').unwrap_or(t);
            let well_formed = match digits.split_once('.') {
                Some((i, f)) => !i.is_empty() && !f.is_empty() && i.bytes().chain(f.bytes()).all(|b| b.is_ascii_digit()),
                None => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
            };
            match t.parse::<f64>() {
                Ok(f) if well_formed => numeric(f),
                _ => ExpiresIn::Unusable(clean_text(s, 32)),
            }
        }
        Some(other) => ExpiresIn::Unusable(clean_text(&other.to_string(), 32)),
    }
}

/// Parses a 2xx token response body.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, ResponseProblem> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| ResponseProblem::NotJson)?;
    let obj = doc.as_object().ok_or(ResponseProblem::NotJson)?;
    let token = obj.get("access_token").and_then(Value::as_str).ok_or(ResponseProblem::NoAccessToken)?;
    let access_token = AccessToken::new(token.to_owned()).map_err(ResponseProblem::BadAccessToken)?;
    let (token_type, token_type_missing) = match obj.get("token_type") {
        None | Some(Value::Null) => ("bearer".to_owned(), true),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => (t.clone(), false),
        Some(Value::String(t)) => return Err(ResponseProblem::NotBearer(clean_text(t, 32))),
        Some(other) => return Err(ResponseProblem::NotBearer(clean_text(&other.to_string(), 32))),
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        token_type_missing,
        expires_in: parse_expires_in(obj.get("expires_in")),
        scope: obj.get("scope").and_then(Value::as_str).map(str::to_owned),
    })
}

/// An RFC 6749 §5.2 error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OAuthError {
    /// `error`.
    pub error: String,
    /// `error_description` (a JSON `null` is absent).
    pub error_description: Option<String>,
    /// `error_uri`.
    pub error_uri: Option<String>,
}

/// Parses an error body; `None` when it is not JSON or has no string `error`.
pub fn parse_error_body(body: &[u8]) -> Option<OAuthError> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let text = |k: &str, max: usize| doc.get(k).and_then(Value::as_str).map(|s| clean_text(s, max));
    Some(OAuthError { error: text("error", 64)?, error_description: text("error_description", 300), error_uri: text("error_uri", 300) })
}

/// A redacted account of a refused token request: what the server said and what we sent,
/// never the compact JWS, its signature or any key material (pitfalls case 3). The gateway
/// writes it to the audit log; the auth manager logs it and keeps the latest per connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenFailureRecord {
    /// The connection.
    pub connection: String,
    /// The vendor profile.
    pub vendor: Vendor,
    /// Where the request went.
    pub token_url: String,
    /// The HTTP status.
    pub http_status: u16,
    /// The OAuth `error` code.
    pub error: String,
    /// `error_description`, when sent.
    pub error_description: Option<String>,
    /// `error_uri`, when sent.
    pub error_uri: Option<String>,
    /// The request's Content-Type.
    pub request_content_type: &'static str,
    /// The `scope` sent, if any.
    pub requested_scope: Option<String>,
    /// Header and claims of the assertion we sent.
    pub assertion: AssertionSummary,
    /// When (wall clock, Unix seconds).
    pub at_unix: i64,
    /// What to do.
    pub hint: String,
}

impl TokenFailureRecord {
    /// One paragraph for an error message or a log line.
    pub fn explain(&self) -> String {
        let desc = self.error_description.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        let scope = self.requested_scope.as_deref().map(|s| format!(", scope {s:?}")).unwrap_or_default();
        let a = &self.assertion;
        format!(
            "connection {:?} ({}): the token endpoint {} refused the request with HTTP {} {}{}. We sent alg {}, kid {}, iss = sub = {:?}, aud = {:?}, exp - iat = {} s{scope}. {}",
            self.connection,
            self.vendor,
            self.token_url,
            self.http_status,
            self.error,
            desc,
            a.header.alg,
            a.header.kid,
            a.claims.iss,
            a.claims.aud,
            a.exp_minus_iat,
            self.hint
        )
    }
}

/// What the classification of an answer needs to know about the request.
pub(crate) struct RequestContext<'a> {
    pub connection: &'a str,
    pub vendor: Vendor,
    pub token_url: &'a str,
    pub scope: Option<&'a str>,
    pub assertion: &'a AssertionSummary,
    pub now_unix: i64,
}

fn hint(ctx: &RequestContext<'_>, error: &str) -> String {
    match (error, ctx.vendor) {
        ("invalid_client", _) => format!(
            "Check the client id, that the public key with kid {} is registered with the EHR (or published at the registered JWKS URL) and has had time to propagate, and that aud is exactly the token endpoint the EHR expects. One slow retry follows after 60 s; then requests fail until the configuration is fixed and the connection is reset.",
            ctx.assertion.header.kid
        ),
        ("unauthorized_client", Vendor::Epic) => "The Epic customer has not mapped this client id to a background user yet: their Epic security administrator must finish the backend-services user mapping for this client before tokens are issued.".to_owned(),
        ("unauthorized_client", _) => "The client is not allowed the client_credentials grant: ask the EHR (or the practice) to enable backend services for this client.".to_owned(),
        ("invalid_scope", _) => "Request only scopes registered for this client: no retry with other scopes is made.".to_owned(),
        _ => "This is not a transient error: fix the registration or the connection's settings, then reset the connection.".to_owned(),
    }
}

/// Turns a non-2xx answer into a typed error.
pub(crate) fn classify_error(ctx: &RequestContext<'_>, status: u16, retry_after: Option<Duration>, body: &[u8]) -> AuthError {
    let connection = ctx.connection.to_owned();
    if status == 429 || status >= 500 {
        return AuthError::Unavailable { connection, status, retry_after };
    }
    let Some(oauth) = parse_error_body(body) else {
        return AuthError::BadResponse { connection, status, problem: format!("HTTP {status} without an OAuth error body") };
    };
    let record = Arc::new(TokenFailureRecord {
        connection: connection.clone(),
        vendor: ctx.vendor,
        token_url: ctx.token_url.to_owned(),
        http_status: status,
        hint: hint(ctx, &oauth.error),
        error: oauth.error,
        error_description: oauth.error_description,
        error_uri: oauth.error_uri,
        request_content_type: FORM_CONTENT_TYPE,
        requested_scope: ctx.scope.map(str::to_owned),
        assertion: ctx.assertion.clone(),
        at_unix: ctx.now_unix,
    });
    match record.error.as_str() {
        "invalid_client" => AuthError::InvalidClient(record),
        "unauthorized_client" => AuthError::UnauthorizedClient(record),
        "invalid_scope" => AuthError::InvalidScope(record),
        _ => AuthError::Refused(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expires(body: &str) -> ExpiresIn {
        parse_token_response(body.as_bytes()).unwrap().expires_in
    }

    /// Pitfalls case 10, parsing lines (a)-(h).
    #[test]
    fn pitfall_10_parsing() {
        let a = parse_token_response(br#"{"access_token":"at-A1","token_type":"Bearer","expires_in":3600,"scope":"system/Patient.read"}"#).unwrap();
        assert_eq!((a.access_token.expose_secret(), a.token_type.as_str(), &a.expires_in, a.scope.as_deref()), ("at-A1", "Bearer", &ExpiresIn::Seconds(3600), Some("system/Patient.read")));
        assert_eq!(expires(r#"{"access_token":"at-A2","token_type":"bearer","expires_in":"3600"}"#), ExpiresIn::Seconds(3600));
        assert_eq!(expires(r#"{"access_token":"at-A3","token_type":"Bearer"}"#), ExpiresIn::Missing);
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":null}"#), ExpiresIn::Missing);
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":"3600s"}"#), ExpiresIn::Unusable("3600s".into()));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":"abc"}"#), ExpiresIn::Unusable("abc".into()));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":true}"#), ExpiresIn::Unusable("true".into()));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":" 1e3"}"#), ExpiresIn::Unusable(" 1e3".into()));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":"NaN"}"#), ExpiresIn::Unusable("NaN".into()));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":0}"#), ExpiresIn::NotPositive);
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":-5}"#), ExpiresIn::NotPositive);
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":"-5"}"#), ExpiresIn::NotPositive);
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":0.5}"#), ExpiresIn::NotPositive);
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":3600.0}"#), ExpiresIn::Seconds(3600));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":"3600.9"}"#), ExpiresIn::Seconds(3600));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":999999999}"#), ExpiresIn::Seconds(999_999_999));
        assert_eq!(expires(r#"{"access_token":"x","token_type":"Bearer","expires_in":1e30}"#), ExpiresIn::Seconds(u64::MAX));
        assert_eq!(parse_token_response(br#"{"access_token":"x","token_type":"mac"}"#).unwrap_err(), ResponseProblem::NotBearer("mac".into()));
        assert_eq!(parse_token_response(br#"{"access_token":"x","token_type":"DPoP"}"#).unwrap_err(), ResponseProblem::NotBearer("DPoP".into()));
        assert_eq!(parse_token_response(br#"{"access_token":"x","token_type":7}"#).unwrap_err(), ResponseProblem::NotBearer("7".into()));
        let missing_type = parse_token_response(br#"{"access_token":"x"}"#).unwrap();
        assert!(missing_type.token_type_missing);
    }

    #[test]
    fn unusable_bodies_are_typed() {
        assert_eq!(parse_token_response(b"<html>").unwrap_err(), ResponseProblem::NotJson);
        assert_eq!(parse_token_response(b"[]").unwrap_err(), ResponseProblem::NotJson);
        assert_eq!(parse_token_response(br#"{"token_type":"bearer"}"#).unwrap_err(), ResponseProblem::NoAccessToken);
        assert_eq!(parse_token_response(br#"{"access_token":12}"#).unwrap_err(), ResponseProblem::NoAccessToken);
        assert_eq!(parse_token_response(br#"{"access_token":"a b"}"#).unwrap_err(), ResponseProblem::BadAccessToken(InvalidToken::BadCharacters));
    }

    /// Pitfalls case 3: a JSON null description parses.
    #[test]
    fn error_bodies_with_nulls_parse() {
        assert_eq!(
            parse_error_body(br#"{"error":"invalid_client","error_description":null}"#),
            Some(OAuthError { error: "invalid_client".into(), error_description: None, error_uri: None })
        );
        let b = parse_error_body(br#"{"error":"invalid_client","error_uri":"https://auth.cerner-test.example/errors/x"}"#).unwrap();
        assert_eq!(b.error_uri.as_deref(), Some("https://auth.cerner-test.example/errors/x"));
        assert_eq!(parse_error_body(br#"{"error":null}"#), None);
        assert_eq!(parse_error_body(b"Bad gateway"), None);
    }

    #[test]
    fn form_fields_are_exactly_the_four() {
        let f = form_fields(Some("system/Patient.read system/Observation.read"), "J.W.S");
        assert_eq!(
            f,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.read system/Observation.read"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", "J.W.S"),
            ]
        );
        assert_eq!(form_fields(None, "J").iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec!["grant_type", "client_assertion_type", "client_assertion"]);
    }
}
