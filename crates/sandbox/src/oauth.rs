//! The token endpoints and SMART discovery.
//!
//! A token request must be a form-encoded `POST` with no query string (Epic answers a
//! JSON body, a query string or another verb with `invalid_request`), carry
//! `grant_type=client_credentials` and a `jwt-bearer` client assertion in the body (not in
//! an `Authorization` header), and the assertion must pass [`crate::assertion`]. Then:
//!
//! - Epic ignores any `scope` parameter and grants the registration, answering Epic-style
//!   scopes (`Patient.read Patient.search …`), `expires_in` 3600, no refresh token;
//!   an unmapped background user gives `unauthorized_client`.
//! - eClinicalWorks requires `system/` scopes and grants those the registration covers
//!   (`invalid_scope` if none), `expires_in` 300.

use crate::assertion::judge;
use crate::outcome::{LogInfo, with_log};
use crate::state::{Shared, lock};
use crate::vendor::{ResourceType, Vendor};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medicodax_policy::scope::{Context, Grant, Interaction, Scope, ScopeSet, parse_scope};
use serde_json::json;
use std::sync::Arc;

/// The only `client_assertion_type` accepted.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The largest token request body read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A vendor side's shared state, as handlers receive it.
#[derive(Clone)]
pub(crate) struct VendorCtx {
    pub vendor: Vendor,
    pub shared: Arc<Shared>,
}

/// An OAuth 2.0 error answer (RFC 6749 §5.2).
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub code: &'static str,
    pub description: String,
    pub client_id: Option<String>,
}

fn oauth(code: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError { code, description: description.into(), client_id: None }
}

impl OAuthError {
    fn into_response(self, vendor: Vendor) -> Response {
        // Epic answers every token error with 400; eClinicalWorks answers a failed
        // client authentication with 401, as RFC 6749 §5.2 allows.
        let status = match (vendor, self.code) {
            (Vendor::EClinicalWorks, "invalid_client") => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = json!({"error": self.code, "error_description": self.description});
        let mut resp = (status, axum::Json(body)).into_response();
        no_store(&mut resp);
        with_log(resp, LogInfo { token: None, client_id: self.client_id, oauth_error: Some(self.code) })
    }
}

fn no_store(resp: &mut Response) {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `POST {prefix}/oauth2/token`; any other verb reaches here too and is refused.
pub(crate) async fn token_endpoint(State(ctx): State<VendorCtx>, req: Request) -> Response {
    if lock(&ctx.shared.faults).sides[ctx.vendor.index()].token_endpoint_down {
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, "<html><body><h1>503 Service Unavailable</h1></body></html>").into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        return resp;
    }
    match issue(&ctx, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(ctx.vendor),
    }
}

fn form_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

async fn issue(ctx: &VendorCtx, req: Request<Body>) -> Result<Response, OAuthError> {
    let (parts, body) = req.into_parts();
    if parts.method != Method::POST {
        return Err(oauth("invalid_request", "the token endpoint accepts POST only"));
    }
    if parts.uri.query().is_some() {
        return Err(oauth("invalid_request", "parameters must be in the form body, not in the query string"));
    }
    if !form_content_type(&parts.headers) {
        return Err(oauth("invalid_request", "the body must be application/x-www-form-urlencoded"));
    }
    let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| oauth("invalid_request", "the body is too large or could not be read"))?;
    let mut form: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        if form.iter().any(|(seen, _)| *seen == k) {
            return Err(oauth("invalid_request", format!("parameter {} appears more than once", k.chars().take(40).collect::<String>())));
        }
        form.push((k.into_owned(), v.into_owned()));
    }
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let auth_header = parts.headers.contains_key(header::AUTHORIZATION);

    match get("grant_type") {
        None => return Err(oauth("invalid_request", "grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => return Err(oauth("unsupported_grant_type", "only grant_type=client_credentials is supported")),
    }
    if get("client_secret").is_some() {
        return Err(oauth("invalid_client", "client secrets are not accepted: authenticate with a private_key_jwt client_assertion"));
    }
    let assertion = match (get("client_assertion"), auth_header) {
        (None, true) => {
            return Err(oauth("invalid_client", "client authentication must be a client_assertion in the form body; an Authorization header is not accepted"));
        }
        (None, false) => return Err(oauth("invalid_request", "client_assertion is required")),
        (Some(_), true) => return Err(oauth("invalid_request", "more than one client authentication method (form assertion and Authorization header)")),
        (Some(a), false) => a,
    };
    match get("client_assertion_type") {
        Some(JWT_BEARER) => {}
        Some(_) => return Err(oauth("invalid_request", format!("client_assertion_type must be {JWT_BEARER}"))),
        None => return Err(oauth("invalid_request", "client_assertion_type is required")),
    }

    let vendor = ctx.vendor;
    let shared = &ctx.shared;
    let client = judge(shared, vendor, assertion, get("client_id"))
        .await
        .map_err(|r| OAuthError { code: "invalid_client", description: r.description, client_id: r.client_id })?;
    let client_id = client.reg.client_id.clone();
    let fail = |code: &'static str, d: &str| OAuthError { code, description: d.to_owned(), client_id: Some(client_id.clone()) };

    let (scopes, scope_text) = match vendor {
        Vendor::Epic => {
            if !client.reg.backend_user_mapped {
                return Err(fail("unauthorized_client", "the client is not mapped to a background user in this organization"));
            }
            let text = epic_scope_text(&client.scopes);
            if text.is_empty() {
                return Err(fail("invalid_scope", "the registration grants no API"));
            }
            (epic_scopes_to_smart(&text), text)
        }
        Vendor::EClinicalWorks => {
            let requested = get("scope").map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| fail("invalid_scope", "scope is required (system/ scopes)"))?;
            if requested.chars().any(char::is_control) {
                return Err(fail("invalid_scope", "scope must be separated by single spaces"));
            }
            let granted: Vec<&str> = requested.split(' ').filter(|t| parse_scope(t).is_ok_and(|s| covered(&client.scopes, &s))).collect();
            if granted.is_empty() {
                return Err(fail("invalid_scope", "none of the requested scopes is a system/ scope registered for this client"));
            }
            (ScopeSet::from_tokens(granted.iter().copied()), granted.join(" "))
        }
    };

    let lifetime = i64::try_from(shared.settings(vendor).token_lifetime.as_secs()).unwrap_or(i64::MAX);
    let now = shared.clock.now_unix();
    let (token, label) = lock(&shared.tokens).issue(vendor, &client_id, scopes, now.saturating_add(lifetime), now);
    let token_type = if vendor == Vendor::Epic { "bearer" } else { "Bearer" };
    let body = json!({"access_token": token, "token_type": token_type, "expires_in": lifetime, "scope": scope_text});
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    no_store(&mut resp);
    Ok(with_log(resp, LogInfo { token: Some(label), client_id: Some(client_id), oauth_error: None }))
}

/// Whether `registered` grants everything `requested` asks for (system context only).
pub(crate) fn covered(registered: &ScopeSet, requested: &Scope) -> bool {
    if requested.context != Context::System {
        return false;
    }
    let types: Vec<&str> = match &requested.resource {
        Some(t) => vec![t.as_str()],
        None => ResourceType::ALL.iter().map(|t| t.as_str()).collect(),
    };
    let p = requested.perms;
    let wanted: Vec<Interaction> = [(p.c, Interaction::Create), (p.r, Interaction::Read), (p.u, Interaction::Update), (p.d, Interaction::Delete), (p.s, Interaction::Search)]
        .into_iter()
        .filter_map(|(on, i)| on.then_some(i))
        .collect();
    types.iter().all(|t| {
        wanted.iter().all(|i| match registered.grant(&[Context::System], t, *i) {
            Grant::Full => true,
            Grant::Constrained(list) => !requested.query.is_empty() && list.contains(&requested.query),
            Grant::None => false,
        })
    })
}

/// Epic-style scope text for a registration: `Type.read` and `Type.search` per type.
pub(crate) fn epic_scope_text(registered: &ScopeSet) -> String {
    let mut out = Vec::new();
    for t in ResourceType::ALL {
        for (i, suffix) in [(Interaction::Read, "read"), (Interaction::Search, "search")] {
            if registered.permits(&[Context::System], t.as_str(), i) {
                out.push(format!("{t}.{suffix}"));
            }
        }
    }
    out.join(" ")
}

/// Maps Epic-style scopes to SMART v2 (`Patient.read` → `system/Patient.r`,
/// `Patient.search` → `system/Patient.s`); other tokens grant nothing.
pub(crate) fn epic_scopes_to_smart(text: &str) -> ScopeSet {
    let mapped: Vec<String> = text
        .split(' ')
        .filter_map(|t| match t.rsplit_once('.') {
            Some((ty, "read")) => Some(format!("system/{ty}.r")),
            Some((ty, "search")) => Some(format!("system/{ty}.s")),
            _ => None,
        })
        .collect();
    ScopeSet::from_tokens(mapped.iter().map(String::as_str))
}

/// `GET {base}/.well-known/smart-configuration`.
pub(crate) async fn smart_configuration(State(ctx): State<VendorCtx>) -> Response {
    let vendor = ctx.vendor;
    let algs: &[&str] = match vendor {
        Vendor::Epic => &["RS256", "RS384", "RS512", "ES256", "ES384"],
        Vendor::EClinicalWorks => &["RS384"],
    };
    let mut scopes = Vec::new();
    for t in ResourceType::ALL {
        scopes.push(format!("system/{t}.read"));
        scopes.push(format!("system/{t}.rs"));
        if vendor == Vendor::EClinicalWorks {
            scopes.push(format!("system/{t}.r"));
            scopes.push(format!("system/{t}.s"));
        }
    }
    let body = json!({
        "issuer": format!("{}{}", ctx.shared.origin, vendor.prefix()),
        "token_endpoint": ctx.shared.token_url(vendor),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "scopes_supported": scopes,
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epic_scopes_round_trip() {
        let reg = ScopeSet::parse("system/Patient.rs system/Observation.r system/Coverage.read");
        let text = epic_scope_text(&reg);
        assert_eq!(text, "Patient.read Patient.search Observation.read Coverage.read Coverage.search");
        let back = epic_scopes_to_smart(&text);
        assert!(back.permits(&[Context::System], "Observation", Interaction::Read));
        assert!(!back.permits(&[Context::System], "Observation", Interaction::Search));
        assert!(back.permits(&[Context::System], "Coverage", Interaction::Search));
        assert!(!back.permits(&[Context::System], "Encounter", Interaction::Read));
    }

    #[test]
    fn ecw_grants_only_covered_system_scopes() {
        let reg = ScopeSet::parse("system/Patient.rs system/Condition.rs?category=encounter-diagnosis system/Coverage.r");
        let ok = |s: &str| covered(&reg, &parse_scope(s).expect(s));
        assert!(ok("system/Patient.read"));
        assert!(ok("system/Patient.r"));
        assert!(!ok("patient/Patient.read"), "system context only");
        assert!(!ok("system/Patient.cruds"), "no write was registered");
        assert!(!ok("system/*.rs"), "a wildcard needs every type");
        assert!(ok("system/Coverage.r"));
        assert!(!ok("system/Coverage.rs"));
        assert!(!ok("system/Condition.rs"), "a constrained registration does not grant the whole type");
        assert!(ok("system/Condition.rs?category=encounter-diagnosis"));
        assert!(covered(&ScopeSet::parse("system/*.rs"), &parse_scope("system/*.read").expect("scope")));
    }
}
