//! Client assertions (SMART App Launch 2.2 `client-confidential-asymmetric`, with
//! Epic's stricter rules).
//!
//! Header: `alg`, `typ` `JWT`, `kid`, and `jku` only when configured. Claims:
//! `iss` = `sub` = client id; `aud` = the token endpoint exactly as discovered or
//! configured; `iat` = now − back-date; `exp` = `iat` + lifetime (≤ 300 s); a fresh
//! UUIDv4 `jti`; no `nbf`. An assertion is minted for one request and never reused: the
//! auth manager mints a new one for every attempt, retries included.
//!
//! [`ClientAssertion`] holds the compact JWS (hidden from `Debug`) and an
//! [`AssertionSummary`] that is safe to log: header and claims, never the signature.

use medicodax_jose::jws::{self, HeaderExtras};
use medicodax_jose::key::SignError;
use medicodax_jose::PrivateKey;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `typ` of a client assertion.
pub const ASSERTION_TYP: &str = "JWT";

/// The claims of a client assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The client id.
    pub iss: String,
    /// The client id.
    pub sub: String,
    /// The token endpoint URL, byte for byte.
    pub aud: String,
    /// A fresh UUIDv4.
    pub jti: String,
    /// Issued at (back-dated), Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// What an assertion's JOSE header said (no signature, no key material).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderSummary {
    /// `alg`.
    pub alg: String,
    /// `kid`.
    pub kid: String,
    /// `typ`.
    pub typ: String,
    /// `jku`, when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jku: Option<String>,
}

/// The identifying claims of an assertion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClaimSummary {
    /// `iss`.
    pub iss: String,
    /// `sub`.
    pub sub: String,
    /// `aud`.
    pub aud: String,
    /// `jti`.
    pub jti: String,
}

/// A redacted account of an assertion: safe for logs and the audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AssertionSummary {
    /// The JOSE header.
    pub header: HeaderSummary,
    /// `iss`, `sub`, `aud`, `jti`.
    pub claims: ClaimSummary,
    /// `iat`.
    pub iat: i64,
    /// `exp`.
    pub exp: i64,
    /// `exp − iat`, seconds.
    pub exp_minus_iat: i64,
}

/// A signed client assertion for one token request.
pub struct ClientAssertion {
    jws: String,
    summary: AssertionSummary,
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertion").field("jws", &"[redacted]").field("summary", &self.summary).finish()
    }
}

impl ClientAssertion {
    /// The compact JWS, for the `client_assertion` form field only.
    pub fn expose_jws(&self) -> &str {
        &self.jws
    }

    /// The redacted account of what was signed.
    pub fn summary(&self) -> &AssertionSummary {
        &self.summary
    }
}

/// What goes into an assertion besides the key and the time.
#[derive(Clone, Copy, Debug)]
pub struct AssertionParams<'a> {
    /// The client id (`iss`, `sub`).
    pub client_id: &'a str,
    /// The token endpoint (`aud`), exactly as discovered or configured.
    pub token_endpoint: &'a str,
    /// `jku`, only when configured.
    pub jku: Option<&'a str>,
    /// Seconds `iat` is back-dated.
    pub backdate_secs: u64,
    /// `exp − iat`, seconds.
    pub lifetime_secs: u64,
}

/// Signs a fresh assertion at wall-clock time `now_unix`.
pub fn mint(key: &PrivateKey, p: &AssertionParams<'_>, now_unix: i64) -> Result<ClientAssertion, SignError> {
    let iat = now_unix.saturating_sub(i64::try_from(p.backdate_secs).unwrap_or(i64::MAX));
    let exp = iat.saturating_add(i64::try_from(p.lifetime_secs).unwrap_or(i64::MAX));
    let claims = AssertionClaims {
        iss: p.client_id.to_owned(),
        sub: p.client_id.to_owned(),
        aud: p.token_endpoint.to_owned(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat,
        exp,
    };
    let extras = HeaderExtras { jku: p.jku.map(str::to_owned) };
    let jws = jws::sign_with(key, ASSERTION_TYP, &claims, &extras)?;
    let summary = AssertionSummary {
        header: HeaderSummary { alg: key.alg().to_string(), kid: key.kid().to_owned(), typ: ASSERTION_TYP.to_owned(), jku: extras.jku },
        exp_minus_iat: exp - iat,
        iat,
        exp,
        claims: ClaimSummary { iss: claims.iss, sub: claims.sub, aud: claims.aud, jti: claims.jti },
    };
    Ok(ClientAssertion { jws, summary })
}
