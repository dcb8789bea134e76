//! Verification of signed tool calls, cheapest check first (DESIGN.md §3.1).
//!
//! 1. size, before any decoding;
//! 2. compact JWS shape, strict base64url, a header that is a JSON object without
//!    duplicate members and with nothing but `alg`, `typ`, `kid` (`jku`, `x5u`, `jwk`,
//!    `x5c`, `zip`, `crit` and anything else are refused), `typ` = `medicodax-call+jwt`;
//! 3. `alg` on the allow-list (RS384, ES384);
//! 4. the payload parsed strictly into [`CallClaims`] (no duplicate members, no unknown
//!    claims, numeric dates only) — still untrusted;
//! 5. `iss` registered; the key found in *that* issuer's set by `kid`;
//! 6. the signature, with the algorithm also permitted by the key;
//! 7. `aud`, then `iat`/`nbf`/`exp` with an explicit leeway and a 300 s lifetime cap;
//!    `jti` length.
//!
//! Whether `sub` may be named, and replay, are decided after verification: the first is
//! policy (a denial, audited), the second is atomic with the intent record in the audit
//! store. A call that fails here is not audited (that would let anyone fill the log);
//! it is counted in `/metrics`.

use super::agent_keys::{AgentKeys, KeyLookupError};
use medicodax_clock::SharedClock;
use medicodax_jose::jws::{Compact, HeaderRules, JwsError};
use medicodax_jose::{Alg, TimeError, TimeRules};
use medicodax_wire::call::{CALL_TYP, CallClaims, MAX_JTI_LEN};
use medicodax_wire::hash::sha256_hex;
use std::collections::HashMap;
use std::sync::Arc;

/// The algorithms a call may be signed with.
pub const CALL_ALGS: &[Alg] = &[Alg::RS384, Alg::ES384];

/// Header members a call may carry besides `alg`.
const CALL_HEADER: HeaderRules<'static> = HeaderRules { allowed: &["typ", "kid"], typ: Some(CALL_TYP), require_kid: false };

/// Why a call does not verify (all 401 except [`VerifyError::TooLarge`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Larger than `max_call_bytes`.
    #[error("the call is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not UTF-8 text.
    #[error("the call is not a compact JWS (the body is not ASCII text)")]
    NotText,
    /// JWS structure, header or algorithm.
    #[error("{0}")]
    Jws(#[from] JwsError),
    /// The payload is not a valid call.
    #[error("the call's claims are invalid: {0}")]
    Claims(String),
    /// `iss` is not a registered agent.
    #[error("the issuer is not a registered agent")]
    UnknownIssuer,
    /// No key found.
    #[error("{0}")]
    Key(#[from] KeyLookupError),
    /// `aud` does not name this gateway.
    #[error("the audience does not name this gateway; use aud = {expected:?}")]
    Audience {
        /// What `aud` must be.
        expected: String,
    },
    /// Time window.
    #[error("{0}")]
    Time(#[from] TimeError),
    /// `jti` empty or too long.
    #[error("jti must be 1 to {MAX_JTI_LEN} characters, without control or direction-override characters")]
    BadJti,
}

impl VerifyError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            VerifyError::TooLarge { .. } => "too_large",
            VerifyError::NotText => "not_text",
            VerifyError::Jws(JwsError::AlgNotAllowed(..) | JwsError::AlgKeyMismatch(_)) => "algorithm",
            VerifyError::Jws(JwsError::BadSignature) => "signature",
            VerifyError::Jws(_) => "malformed",
            VerifyError::Claims(_) => "claims",
            VerifyError::UnknownIssuer => "unknown_issuer",
            VerifyError::Key(_) => "key",
            VerifyError::Audience { .. } => "audience",
            VerifyError::Time(_) => "time",
            VerifyError::BadJti => "jti",
        }
    }
}

/// A call whose signature and claims verified.
#[derive(Debug, Clone)]
pub struct VerifiedCall {
    /// The claims.
    pub claims: CallClaims,
    /// The compact JWS exactly as received.
    pub jws: String,
    /// SHA-256 hex of the JWS bytes.
    pub call_hash: String,
    /// The algorithm it was signed with.
    pub alg: Alg,
    /// The kid of the key that verified it.
    pub kid: Option<String>,
}

/// Verifies calls for a set of registered agents.
pub struct CallVerifier {
    audience: String,
    max_bytes: usize,
    rules: TimeRules,
    agents: HashMap<String, Arc<AgentKeys>>,
    clock: SharedClock,
}

impl CallVerifier {
    /// A verifier for `audience`, with the given size limit, leeway and agents' keys.
    pub fn new(audience: &str, max_bytes: usize, leeway: i64, agents: HashMap<String, Arc<AgentKeys>>, clock: SharedClock) -> Self {
        CallVerifier { audience: audience.to_owned(), max_bytes, rules: TimeRules { leeway, max_lifetime: 300 }, agents, clock }
    }

    /// The audience calls must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The registered agent ids.
    pub fn agent_ids(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }

    /// The key set registered for `agent`.
    pub fn agent_keys(&self, agent: &str) -> Option<&Arc<AgentKeys>> {
        self.agents.get(agent)
    }

    /// Verifies a call body.
    pub async fn verify(&self, body: &[u8]) -> Result<VerifiedCall, VerifyError> {
        if body.len() > self.max_bytes {
            return Err(VerifyError::TooLarge { size: body.len(), limit: self.max_bytes });
        }
        let text = std::str::from_utf8(body).map_err(|_| VerifyError::NotText)?;
        let text = text.trim_end_matches(['\r', '\n']);
        let compact = Compact::parse(text, CALL_HEADER)?;
        let alg = compact.alg_in(CALL_ALGS)?;
        let payload = compact.payload_object()?;
        let claims: CallClaims = serde_json::from_value(serde_json::Value::Object(payload)).map_err(|e| VerifyError::Claims(e.to_string()))?;
        let keys = self.agents.get(&claims.iss).ok_or(VerifyError::UnknownIssuer)?;
        let key = keys.lookup(compact.kid(), alg).await?;
        compact.verify(&key, CALL_ALGS)?;
        if !claims.aud.contains(&self.audience) {
            return Err(VerifyError::Audience { expected: self.audience.clone() });
        }
        self.rules.check(self.clock.now_unix(), claims.iat.0, claims.nbf.map(|n| n.0), claims.exp.0)?;
        if claims.jti.is_empty() || claims.jti.chars().count() > MAX_JTI_LEN || claims.jti.chars().any(|c| c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')) {
            return Err(VerifyError::BadJti);
        }
        Ok(VerifiedCall { call_hash: sha256_hex(text.as_bytes()), jws: text.to_owned(), alg, kid: key.kid().map(str::to_owned), claims })
    }
}
