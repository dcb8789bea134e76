//! Responses: OperationOutcomes, FHIR JSON bodies, and what a handler tells the request
//! log about itself.

use crate::vendor::Vendor;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The media type of every FHIR body.
pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// The code system of Epic's OperationOutcome detail codes in its sandbox.
pub(crate) const EPIC_OO_SYSTEM: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369";

/// What a handler reports to the request log through response extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogInfo {
    /// The label of the access token used or issued (never the token itself).
    pub token: Option<String>,
    /// The client the request authenticated as, or claimed to be.
    pub client_id: Option<String>,
    /// The OAuth error code answered, if any.
    pub oauth_error: Option<&'static str>,
}

/// One OperationOutcome issue.
#[derive(Clone, Debug)]
pub(crate) struct Issue {
    pub severity: &'static str,
    pub code: &'static str,
    /// A vendor detail code (Epic's numeric codes), if any.
    pub detail: Option<(&'static str, &'static str)>,
    pub diagnostics: String,
    pub location: Option<String>,
}

impl Issue {
    pub fn new(severity: &'static str, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue { severity, code, detail: None, diagnostics: diagnostics.into(), location: None }
    }

    /// Adds an Epic detail code (only on the Epic side; eClinicalWorks has none).
    pub fn detail(mut self, vendor: Vendor, code: &'static str, display: &'static str) -> Self {
        if vendor == Vendor::Epic {
            self.detail = Some((code, display));
        }
        self
    }

    /// Names the offending HTTP parameter (`http.<name>`).
    pub fn at_param(mut self, name: &str) -> Self {
        self.location = Some(format!("http.{}", name.chars().take(64).collect::<String>()));
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics});
        if let Some((code, display)) = self.detail {
            v["details"] = json!({"coding": [{"system": EPIC_OO_SYSTEM, "code": code, "display": display}], "text": display});
        }
        if let Some(loc) = &self.location {
            v["location"] = json!([loc]);
        }
        v
    }
}

/// An OperationOutcome resource holding `issues`.
pub(crate) fn operation_outcome(issues: &[Issue]) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>()})
}

/// A FHIR JSON response.
pub(crate) fn fhir_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A response whose body is an OperationOutcome with one issue.
pub(crate) fn outcome_response(status: StatusCode, issue: Issue) -> Response {
    fhir_response(status, operation_outcome(&[issue]).to_string())
}

/// Adds log information to a response.
pub(crate) fn with_log(mut resp: Response, info: LogInfo) -> Response {
    resp.extensions_mut().insert(info);
    resp
}

/// A `WWW-Authenticate` challenge. Its parts are the sandbox's own fixed texts and type
/// names, never client input; should one ever not fit a header, a bare challenge is sent.
pub(crate) fn challenge(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epic_detail_codes_only_on_epic() {
        let e = Issue::new("fatal", "required", "x").detail(Vendor::Epic, "59108", "d").at_param("category").to_json();
        assert_eq!(e["details"]["coding"][0]["code"], "59108");
        assert_eq!(e["location"][0], "http.category");
        let c = Issue::new("fatal", "required", "x").detail(Vendor::EClinicalWorks, "59108", "d").to_json();
        assert!(c.get("details").is_none());
    }

    #[test]
    fn challenges_fall_back_rather_than_fail() {
        assert_eq!(challenge("Bearer realm=\"x\"").to_str().unwrap(), "Bearer realm=\"x\"");
        assert_eq!(challenge("bad\nvalue").to_str().unwrap(), "Bearer error=\"invalid_token\"");
    }
}
