//! Bearer JWTs from an external OpenID Connect issuer (`[auth.oidc]`), accepted by the
//! dashboard in place of a password session.
//!
//! A token is checked the way call tokens are, cheapest first: a size limit; a flat
//! compact JWS whose header holds nothing but `alg`, `typ`, `kid` and certificate
//! thumbprints (no `jku`, `x5u`, `jwk` or `crit`: nothing in a token makes the gateway
//! fetch a URL); `typ`, when present, `JWT` or `at+jwt`; an asymmetric `alg`; the key found
//! by `kid` in the issuer's JWKS, fetched from the configured URL and cached (refetched on
//! an unknown `kid` at most once per cooldown); then `iss` exactly, `aud` containing the
//! configured audience, and `iat`/`nbf`/`exp` with 30 s of leeway and at most a day of
//! lifetime. Roles come from the configured claim (a dotted path such as
//! `realm_access.roles`; an array of strings or one space-separated string); only the
//! dashboard's roles count, and a token granting none is refused.

use crate::calls::agent_keys::{AgentKeys, CacheRules, JwksFetcher, KeyLookupError};
use crate::users::DASHBOARD_ROLES;
use medicodax_clock::SharedClock;
use medicodax_config::OidcConfig;
use medicodax_jose::jws::{Compact, HeaderRules, JwsError};
use medicodax_jose::{Alg, TimeError, TimeRules};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The largest bearer token accepted, in bytes.
pub const MAX_BEARER_BYTES: usize = 16 * 1024;

/// The algorithms accepted from an OIDC issuer (asymmetric only; RS256 is what most
/// issuers sign with).
pub const OIDC_ALGS: &[Alg] = &[Alg::RS256, Alg::RS384, Alg::RS512, Alg::ES256, Alg::ES384];

/// Seconds of clock skew tolerated, and the longest lifetime accepted.
const RULES: TimeRules = TimeRules { leeway: 30, max_lifetime: 24 * 3600 };

/// Who a verified bearer token says is acting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcIdentity {
    /// `oidc:` followed by `preferred_username`, else `email`, else `sub`.
    pub name: String,
    /// The dashboard roles granted (a subset of [`DASHBOARD_ROLES`]).
    pub roles: Vec<String>,
    /// `iat`.
    pub iat: i64,
    /// `exp`.
    pub exp: i64,
}

/// Why a bearer token was refused (never containing the token).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// No `[auth.oidc]` is configured.
    #[error("this gateway accepts no bearer tokens ([auth.oidc] is not configured); sign in with a password")]
    NotConfigured,
    /// Over [`MAX_BEARER_BYTES`].
    #[error("the bearer token is larger than {MAX_BEARER_BYTES} bytes")]
    TooLarge,
    /// Not a JWS we accept.
    #[error("the bearer token is not an acceptable JWS: {0}")]
    Jws(#[from] JwsError),
    /// `typ` is neither `JWT` nor `at+jwt`.
    #[error("the bearer token's typ must be JWT or at+jwt")]
    Typ,
    /// The issuer's key could not be found.
    #[error("the issuer's signing key was not found: {0}")]
    Key(#[from] KeyLookupError),
    /// A claim is missing or wrong.
    #[error("{0}")]
    Claims(String),
    /// A time bound failed.
    #[error("{0}")]
    Time(#[from] TimeError),
    /// The token grants no dashboard role.
    #[error("the token grants none of the dashboard roles ({})", DASHBOARD_ROLES.join(", "))]
    NoRoles,
}

impl OidcError {
    /// Whether the token verified but grants nothing (a 403 rather than a 401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, OidcError::NoRoles)
    }
}

/// Verifies bearer JWTs from one configured issuer.
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    roles_claim: Vec<String>,
    keys: AgentKeys,
    clock: SharedClock,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier").field("issuer", &self.issuer).field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl OidcVerifier {
    /// A verifier for `config`, fetching the issuer's keys with `fetcher` under `rules`.
    pub fn new(config: &OidcConfig, fetcher: Arc<dyn JwksFetcher>, rules: CacheRules, clock: SharedClock) -> Self {
        OidcVerifier {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            roles_claim: config.roles_claim.split('.').map(str::to_owned).collect(),
            keys: AgentKeys::remote(&config.issuer, &config.jwks_url, fetcher, rules, Arc::clone(&clock)),
            clock,
        }
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Checks `token` and returns who it names.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, OidcError> {
        if token.len() > MAX_BEARER_BYTES {
            return Err(OidcError::TooLarge);
        }
        let c = Compact::parse(token, HeaderRules { allowed: &["typ", "kid", "x5t", "x5t#S256"], typ: None, require_kid: false })?;
        if let Some(t) = c.header.get("typ") {
            let t = t.as_str().ok_or(OidcError::Typ)?.to_ascii_lowercase();
            if !matches!(t.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Err(OidcError::Typ);
            }
        }
        let alg = c.alg_in(OIDC_ALGS)?;
        let key = self.keys.lookup(c.kid(), alg).await?;
        c.verify(&key, OIDC_ALGS)?;
        let claims = c.payload_object()?;
        let bad = |m: &str| OidcError::Claims(m.to_owned());
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(bad("the token's iss is not the configured issuer"));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(self.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(OidcError::Claims(format!("the token's aud does not include {:?}", self.audience)));
        }
        let int = |name: &str| -> Result<Option<i64>, OidcError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 1e12).map(|f| f as i64)).map(Some).ok_or_else(|| OidcError::Claims(format!("{name} must be a number of seconds"))),
            }
        };
        let exp = int("exp")?.ok_or_else(|| bad("the token has no exp"))?;
        let iat = int("iat")?.ok_or_else(|| bad("the token has no iat"))?;
        RULES.check(self.clock.now_unix(), iat, int("nbf")?, exp)?;
        let who = ["preferred_username", "email", "sub"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .ok_or_else(|| bad("the token names nobody (no preferred_username, email or sub)"))?;
        if who.chars().count() > 128 || who.chars().any(|c| c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')) {
            return Err(bad("the token's user name is too long or holds control characters"));
        }
        let roles = self.roles(&claims);
        if roles.is_empty() {
            return Err(OidcError::NoRoles);
        }
        Ok(OidcIdentity { name: format!("oidc:{who}"), roles, iat, exp })
    }

    /// The dashboard roles named by the configured claim, in [`DASHBOARD_ROLES`] order.
    fn roles(&self, claims: &Map<String, Value>) -> Vec<String> {
        let mut v: Option<&Value> = None;
        for (i, part) in self.roles_claim.iter().enumerate() {
            v = if i == 0 { claims.get(part) } else { v.and_then(|x| x.get(part)) };
        }
        let named: Vec<&str> = match v {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        DASHBOARD_ROLES.iter().filter(|r| named.contains(r)).map(|r| (*r).to_owned()).collect()
    }
}
