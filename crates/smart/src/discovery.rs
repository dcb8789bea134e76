//! SMART discovery: `GET {fhir_base}/.well-known/smart-configuration`.
//!
//! The token endpoint is used byte for byte as advertised (pitfalls case 1): an absolute
//! URL is checked but never re-serialised, so no trailing slash, `//` or `:443` is added
//! or removed. A relative URL is resolved against the FHIR base taken as a directory.
//! The FHIR base may be configured with or without a trailing slash; both give the same
//! discovery URL. Advertised algorithms, auth methods and grant types are checked against
//! the connection, and each mismatch becomes a warning (logged, and kept for the
//! dashboard); a configured `token_url` skips discovery altogether.

use medicodax_jose::Alg;
use serde::Serialize;
use serde_json::Value;

use crate::http::{BodyError, NetworkKind, read_capped};
use crate::profile::is_loopback;

/// Where a connection's token endpoint came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum EndpointSource {
    /// `token_url` in the configuration.
    Configured,
    /// The smart-configuration document at `url`.
    Discovered {
        /// The discovery URL.
        url: String,
    },
}

/// The result of discovery (or of a configured token URL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// The token endpoint, exactly as advertised (or configured); also the assertion `aud`.
    pub token_endpoint: String,
    /// Where it came from.
    pub source: EndpointSource,
    /// `token_endpoint_auth_signing_alg_values_supported`, when advertised.
    pub signing_algs: Option<Vec<String>>,
    /// `token_endpoint_auth_methods_supported`, when advertised.
    pub auth_methods: Option<Vec<String>>,
    /// `grant_types_supported`, when advertised.
    pub grant_types: Option<Vec<String>>,
    /// `capabilities`, when advertised.
    pub capabilities: Option<Vec<String>>,
    /// Mismatches between what is advertised and what this connection will do.
    pub warnings: Vec<String>,
}

impl Discovery {
    /// A configured token endpoint: no discovery, no warnings.
    pub fn configured(token_url: &str) -> Self {
        Discovery {
            token_endpoint: token_url.to_owned(),
            source: EndpointSource::Configured,
            signing_algs: None,
            auth_methods: None,
            grant_types: None,
            capabilities: None,
            warnings: Vec::new(),
        }
    }
}

/// Why discovery failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The FHIR base is not a URL.
    #[error("the FHIR base is not a valid URL")]
    BadBase,
    /// Transport failure.
    #[error("the request {}", .0.as_str())]
    Network(NetworkKind),
    /// Not a 2xx answer.
    #[error("the server answered HTTP {0}; check fhir_base (discovery must be served under it), or set token_url")]
    Status(u16),
    /// Body over the size cap.
    #[error("the response is larger than 256 KiB")]
    TooLarge,
    /// Not a JSON object.
    #[error("the response is not a JSON object")]
    NotJson,
    /// No usable `token_endpoint`.
    #[error("the document has no string token_endpoint")]
    NoTokenEndpoint,
    /// `token_endpoint` is not a usable URL.
    #[error("token_endpoint is not usable: {0}")]
    BadTokenEndpoint(String),
}

/// The discovery URL for a FHIR base (a trailing slash on the base makes no difference).
pub fn well_known_url(fhir_base: &str) -> String {
    format!("{}/.well-known/smart-configuration", fhir_base.trim_end_matches('/'))
}

/// Resolves an advertised endpoint: an absolute URL is kept byte for byte; a relative one
/// is resolved against the FHIR base taken as a directory. Refuses a non-HTTP scheme,
/// credentials, a fragment, and a downgrade from an `https` base to plain `http` on a
/// non-loopback host.
pub fn resolve_endpoint(fhir_base: &str, endpoint: &str) -> Result<String, DiscoveryError> {
    let base = url::Url::parse(&format!("{}/", fhir_base.trim_end_matches('/'))).map_err(|_| DiscoveryError::BadBase)?;
    let bad = |m: &str| DiscoveryError::BadTokenEndpoint(m.to_owned());
    if endpoint.is_empty() || endpoint.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty, or holds whitespace"));
    }
    let (text, parsed) = match url::Url::parse(endpoint) {
        Ok(u) => (endpoint.to_owned(), u),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let u = base.join(endpoint).map_err(|e| bad(&e.to_string()))?;
            (u.to_string(), u)
        }
        Err(e) => return Err(bad(&e.to_string())),
    };
    if parsed.scheme() != "https" && parsed.scheme() != "http" {
        return Err(bad("must be an http(s) URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if parsed.fragment().is_some() {
        return Err(bad("must not have a #fragment"));
    }
    if base.scheme() == "https" && parsed.scheme() == "http" && !is_loopback(&parsed) {
        return Err(bad("plain http although the FHIR base is https; the assertion and token must not travel unencrypted"));
    }
    Ok(text)
}

fn strings(v: &Value, name: &str) -> Option<Vec<String>> {
    v.get(name)?.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
}

/// Parses a smart-configuration document for a connection signing with `alg`.
pub fn parse_smart_configuration(fhir_base: &str, body: &[u8], alg: Alg) -> Result<Discovery, DiscoveryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| DiscoveryError::NotJson)?;
    if !doc.is_object() {
        return Err(DiscoveryError::NotJson);
    }
    let endpoint = doc.get("token_endpoint").and_then(Value::as_str).ok_or(DiscoveryError::NoTokenEndpoint)?;
    let token_endpoint = resolve_endpoint(fhir_base, endpoint)?;
    let signing_algs = strings(&doc, "token_endpoint_auth_signing_alg_values_supported");
    let auth_methods = strings(&doc, "token_endpoint_auth_methods_supported");
    let grant_types = strings(&doc, "grant_types_supported");
    let capabilities = strings(&doc, "capabilities");
    let mut warnings = Vec::new();
    if let Some(algs) = &signing_algs
        && !algs.iter().any(|a| a == alg.as_str())
    {
        warnings.push(format!(
            "the server advertises token_endpoint_auth_signing_alg_values_supported {algs:?}, which does not include the configured {alg}; token requests will likely fail with invalid_client"
        ));
    }
    if let Some(m) = &auth_methods
        && !m.iter().any(|a| a == "private_key_jwt")
    {
        warnings.push(format!("the server advertises token_endpoint_auth_methods_supported {m:?} without private_key_jwt"));
    }
    if let Some(g) = &grant_types
        && !g.iter().any(|a| a == "client_credentials")
    {
        warnings.push(format!("the server advertises grant_types_supported {g:?} without client_credentials"));
    }
    Ok(Discovery {
        token_endpoint,
        source: EndpointSource::Discovered { url: well_known_url(fhir_base) },
        signing_algs,
        auth_methods,
        grant_types,
        capabilities,
        warnings,
    })
}

/// Fetches and parses `{fhir_base}/.well-known/smart-configuration`.
pub async fn discover(http: &reqwest::Client, fhir_base: &str, alg: Alg, timeout: std::time::Duration) -> Result<Discovery, DiscoveryError> {
    let url = well_known_url(fhir_base);
    let resp = http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| if e.is_builder() { DiscoveryError::BadBase } else { DiscoveryError::Network(NetworkKind::of(&e)) })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(DiscoveryError::Status(status.as_u16()));
    }
    let body = read_capped(resp).await.map_err(|e| match e {
        BodyError::TooLarge => DiscoveryError::TooLarge,
        BodyError::Transport(e) => DiscoveryError::Network(NetworkKind::of(&e)),
    })?;
    parse_smart_configuration(fhir_base, &body, alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_url_ignores_a_trailing_slash() {
        assert_eq!(well_known_url("https://f.example/r4"), "https://f.example/r4/.well-known/smart-configuration");
        assert_eq!(well_known_url("https://f.example/r4/"), "https://f.example/r4/.well-known/smart-configuration");
    }

    #[test]
    fn absolute_endpoints_are_kept_byte_for_byte() {
        for ep in ["https://host//token", "https://host:443/token", "https://host/token/", "https://h/t?x=%7C"] {
            assert_eq!(resolve_endpoint("https://f.example/r4", ep).unwrap(), ep);
        }
    }

    #[test]
    fn relative_endpoints_resolve_against_the_base_as_a_directory() {
        for base in ["https://f.example/fhir/r4", "https://f.example/fhir/r4/"] {
            assert_eq!(resolve_endpoint(base, "auth/token").unwrap(), "https://f.example/fhir/r4/auth/token");
            assert_eq!(resolve_endpoint(base, "/oauth2/token").unwrap(), "https://f.example/oauth2/token");
            assert_eq!(resolve_endpoint(base, "../token").unwrap(), "https://f.example/fhir/token");
        }
    }

    #[test]
    fn unusable_endpoints_are_refused() {
        for ep in ["", "ftp://h/token", "https://u:p@h/token", "https://h/token#x", "http://evil.example/token", "https://h/to ken"] {
            assert!(matches!(resolve_endpoint("https://f.example/r4", ep), Err(DiscoveryError::BadTokenEndpoint(_))), "{ep}");
        }
        assert!(resolve_endpoint("https://f.example/r4", "http://127.0.0.1:9/token").is_ok(), "loopback http allowed");
        assert!(resolve_endpoint("http://f.example/r4", "http://f.example/token").is_ok(), "http base may use http");
    }

    #[test]
    fn parsing_checks_types_and_warns() {
        let d = parse_smart_configuration(
            "https://f.example/r4",
            br#"{"token_endpoint":"https://a.example/token","token_endpoint_auth_signing_alg_values_supported":["ES384"],
                "token_endpoint_auth_methods_supported":["client_secret_basic"],"grant_types_supported":["authorization_code"],
                "capabilities":["permission-v2", 5]}"#,
            Alg::RS384,
        )
        .unwrap();
        assert_eq!(d.token_endpoint, "https://a.example/token");
        assert_eq!(d.capabilities, Some(vec!["permission-v2".to_owned()]));
        assert_eq!(d.warnings.len(), 3);
        assert!(d.warnings[0].contains("does not include the configured RS384"), "{}", d.warnings[0]);
        assert!(d.warnings[1].contains("private_key_jwt"));
        assert!(d.warnings[2].contains("client_credentials"));
        assert_eq!(parse_smart_configuration("https://f.example/r4", b"[1]", Alg::RS384), Err(DiscoveryError::NotJson));
        assert_eq!(parse_smart_configuration("https://f.example/r4", b"<html>", Alg::RS384), Err(DiscoveryError::NotJson));
        assert_eq!(parse_smart_configuration("https://f.example/r4", br#"{"token_endpoint":7}"#, Alg::RS384), Err(DiscoveryError::NoTokenEndpoint));
        let quiet = parse_smart_configuration("https://f.example/r4", br#"{"token_endpoint":"t"}"#, Alg::ES384).unwrap();
        assert!(quiet.warnings.is_empty());
        assert_eq!(quiet.token_endpoint, "https://f.example/r4/t");
    }
}
