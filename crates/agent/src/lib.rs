//! The agent side of MEDICODAX: sign a tool call, send it, check the receipt.
//!
//! An outside team can depend on this crate alone (it needs only the wire types, the
//! keys layer and an HTTP client) to make calls exactly as our coding pipeline does:
//!
//! - [`AgentClient::sign`] builds [`CallClaims`] (fresh UUIDv4 `jti`, `iat` now,
//!   `exp` = `iat` + 120 s) and signs them with the agent's key as a compact JWS of
//!   `typ` `medicodax-call+jwt`;
//! - [`AgentClient::send`] posts it to `POST /v1/calls` and returns the answer with its
//!   receipt *verified*: signed by a key in the gateway's published JWKS, `call_hash`
//!   equal to the hash of what we sent, `result_hash` equal to the hash of the body we
//!   got, `call_jti` our `jti`;
//! - [`verify_receipt`] does the receipt check on its own, for answers that arrive by
//!   another route (MCP).

use medicodax_clock::SharedClock;
use medicodax_jose::jws;
use medicodax_jose::{Alg, Jwks, PrivateKey, VerifyingKey};
use medicodax_wire::call::{Audience, CALL_TYP, CallClaims, NumericDate};
use medicodax_wire::hash::sha256_hex;
use medicodax_wire::receipt::{RECEIPT_TYP, ReceiptClaims};
use medicodax_wire::{Problem, ToolName};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header carrying the receipt.
pub const RECEIPT_HEADER: &str = "medicodax-receipt";

/// Lifetime of the calls we sign, seconds (the gateway accepts up to 300).
pub const CALL_LIFETIME: i64 = 120;

/// What went wrong on the agent side. Never holds the call, the key or result bodies.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Signing failed.
    #[error("signing the call failed")]
    Sign,
    /// The gateway could not be reached.
    #[error("cannot reach the gateway at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The gateway's JWKS could not be fetched or parsed.
    #[error("cannot load the gateway's published keys from {url}: {reason}")]
    GatewayKeys {
        /// The JWKS URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A receipt was expected and is missing or does not verify.
    #[error("receipt check failed: {0}")]
    Receipt(String),
    /// The answer body is not JSON.
    #[error("the gateway answered {status} with a body that is not JSON")]
    BadBody {
        /// HTTP status.
        status: u16,
    },
}

/// A call signed and ready to send.
#[derive(Clone, Debug)]
pub struct SignedCall {
    /// The compact JWS.
    pub jws: String,
    /// Its claims.
    pub claims: CallClaims,
}

/// A receipt that verified against the call and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The receipt's claims.
    pub claims: ReceiptClaims,
    /// The receipt JWS.
    pub jws: String,
}

/// The gateway's answer to a call.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    /// HTTP status.
    pub status: u16,
    /// The result on success.
    pub result: Option<Value>,
    /// The problem document on failure.
    pub problem: Option<Problem>,
    /// The verified receipt (every verified call has one; a call that did not verify has none).
    pub receipt: Option<VerifiedReceipt>,
    /// `Retry-After`, seconds, when the gateway sent one.
    pub retry_after: Option<u64>,
}

/// Signs calls for one agent and sends them to one gateway.
pub struct AgentClient {
    agent_id: String,
    key: Arc<PrivateKey>,
    gateway: String,
    audience: String,
    http: reqwest::Client,
    clock: SharedClock,
    gateway_keys: Mutex<Option<Arc<Vec<VerifyingKey>>>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").field("agent_id", &self.agent_id).field("gateway", &self.gateway).finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client for `agent_id` signing with `key`, talking to the gateway at `gateway`
    /// (e.g. `http://127.0.0.1:8080`) whose audience is `audience`.
    pub fn new(agent_id: &str, key: Arc<PrivateKey>, gateway: &str, audience: &str, clock: SharedClock) -> Result<Self, AgentError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| AgentError::Unreachable { url: gateway.to_owned(), reason: e.to_string() })?;
        Ok(AgentClient {
            agent_id: agent_id.to_owned(),
            key,
            gateway: gateway.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            http,
            clock,
            gateway_keys: Mutex::new(None),
        })
    }

    /// The agent id.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The gateway base URL.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Signs a call of `tool` with `args`, acting for `sub`.
    pub fn sign(&self, sub: &str, tool: &str, args: Map<String, Value>, purpose: Option<&str>) -> Result<SignedCall, AgentError> {
        let iat = self.clock.now_unix();
        let claims = CallClaims {
            iss: self.agent_id.clone(),
            sub: sub.to_owned(),
            aud: Audience::One(self.audience.clone()),
            iat: NumericDate(iat),
            exp: NumericDate(iat + CALL_LIFETIME),
            nbf: None,
            jti: uuid::Uuid::new_v4().to_string(),
            tool: tool.to_owned(),
            args,
            purpose: purpose.map(str::to_owned),
        };
        let jws = jws::sign(&self.key, CALL_TYP, &claims).map_err(|_| AgentError::Sign)?;
        Ok(SignedCall { jws, claims })
    }

    /// Signs a call of a known tool with arguments given as a serialisable value.
    pub fn sign_tool<A: serde::Serialize>(&self, sub: &str, tool: ToolName, args: &A) -> Result<SignedCall, AgentError> {
        let args = match serde_json::to_value(args).map_err(|_| AgentError::Sign)? {
            Value::Object(m) => m,
            _ => return Err(AgentError::Sign),
        };
        self.sign(sub, tool.as_str(), args, None)
    }

    /// Sends a signed call and checks the receipt.
    pub async fn send(&self, call: &SignedCall) -> Result<CallOutcome, AgentError> {
        let url = format!("{}/v1/calls", self.gateway);
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/jwt")
            .body(call.jws.clone())
            .send()
            .await
            .map_err(|e| AgentError::Unreachable { url: url.clone(), reason: send_error(e) })?;
        let status = resp.status().as_u16();
        let receipt = resp.headers().get(RECEIPT_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body = resp.bytes().await.map_err(|e| AgentError::Unreachable { url, reason: e.without_url().to_string() })?;
        let receipt = match receipt {
            Some(r) => Some(self.check_receipt(&r, &call.jws, &call.claims.jti, &body).await?),
            // Answers that legitimately carry no receipt: the call did not verify (401, 413,
            // 415), or the audit log could not be written, so nothing was done (503).
            None if status == 401 || status == 413 || status == 415 => None,
            None if status == 503 && serde_json::from_slice::<Problem>(&body).is_ok_and(|p| p.code == medicodax_wire::ProblemCode::AuditUnavailable) => None,
            None => return Err(AgentError::Receipt(format!("the gateway answered {status} without a receipt"))),
        };
        let (result, problem) = if (200..300).contains(&status) {
            (Some(serde_json::from_slice(&body).map_err(|_| AgentError::BadBody { status })?), None)
        } else {
            (None, serde_json::from_slice::<Problem>(&body).ok())
        };
        Ok(CallOutcome { status, result, problem, receipt, retry_after })
    }

    /// Signs and sends in one step.
    pub async fn call(&self, sub: &str, tool: &str, args: Map<String, Value>) -> Result<CallOutcome, AgentError> {
        let c = self.sign(sub, tool, args, None)?;
        self.send(&c).await
    }

    /// Checks a receipt against the call and the answer body, fetching the gateway's JWKS
    /// once (and again if the receipt names a kid we have not seen).
    pub async fn check_receipt(&self, receipt: &str, call_jws: &str, jti: &str, body: &[u8]) -> Result<VerifiedReceipt, AgentError> {
        let keys = self.gateway_keys(false).await?;
        match verify_receipt(receipt, &keys, call_jws, jti, body) {
            Err(ReceiptError::UnknownKid) => {
                let keys = self.gateway_keys(true).await?;
                verify_receipt(receipt, &keys, call_jws, jti, body).map_err(|e| AgentError::Receipt(e.to_string()))
            }
            other => other.map_err(|e| AgentError::Receipt(e.to_string())),
        }
    }

    async fn gateway_keys(&self, refresh: bool) -> Result<Arc<Vec<VerifyingKey>>, AgentError> {
        if !refresh && let Some(k) = self.gateway_keys.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(k);
        }
        let url = format!("{}/.well-known/jwks.json", self.gateway);
        let err = |reason: String| AgentError::GatewayKeys { url: url.clone(), reason };
        let resp = self.http.get(&url).send().await.map_err(|e| err(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status().as_u16())));
        }
        let body = resp.bytes().await.map_err(|e| err(e.without_url().to_string()))?;
        let set = Jwks::from_json(&body).map_err(|e| err(e.to_string()))?;
        let keys: Vec<VerifyingKey> = set.keys.iter().filter_map(|k| VerifyingKey::from_jwk(k).ok()).collect();
        let keys = Arc::new(keys);
        *self.gateway_keys.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&keys));
        Ok(keys)
    }
}

/// Why a receipt did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Its kid is not among the gateway's published keys.
    #[error("the receipt's kid is not among the gateway's published keys")]
    UnknownKid,
    /// Not a valid receipt JWS, or its signature does not verify.
    #[error("the receipt does not verify: {0}")]
    Jws(String),
    /// The claims do not match the call or the answer.
    #[error("the receipt does not match: {0}")]
    Mismatch(&'static str),
}

/// Verifies a receipt: signed by one of `gateway_keys` with typ `medicodax-receipt+jwt`,
/// `call_jti`/`call_hash` matching the call sent, `result_hash` matching `body`.
pub fn verify_receipt(receipt: &str, gateway_keys: &[VerifyingKey], call_jws: &str, jti: &str, body: &[u8]) -> Result<VerifiedReceipt, ReceiptError> {
    let c = jws::Compact::parse(receipt, jws::HeaderRules { allowed: &["typ", "kid"], typ: Some(RECEIPT_TYP), require_kid: true })
        .map_err(|e| ReceiptError::Jws(e.to_string()))?;
    let kid = c.kid().unwrap_or_default();
    let key = gateway_keys.iter().find(|k| k.kid() == Some(kid)).ok_or(ReceiptError::UnknownKid)?;
    c.verify(key, &[Alg::RS384, Alg::ES384]).map_err(|e| ReceiptError::Jws(e.to_string()))?;
    let payload = c.payload_object().map_err(|e| ReceiptError::Jws(e.to_string()))?;
    let claims: ReceiptClaims = serde_json::from_value(Value::Object(payload)).map_err(|e| ReceiptError::Jws(e.to_string()))?;
    if claims.call_jti != jti {
        return Err(ReceiptError::Mismatch("call_jti is not the jti of the call sent"));
    }
    if claims.call_hash != sha256_hex(call_jws.as_bytes()) {
        return Err(ReceiptError::Mismatch("call_hash is not the hash of the call sent"));
    }
    if claims.result_hash != sha256_hex(body) {
        return Err(ReceiptError::Mismatch("result_hash is not the hash of the answer received"));
    }
    Ok(VerifiedReceipt { claims, jws: receipt.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_wire::receipt::Decision;

    fn receipt_for(key: &PrivateKey, jti: &str, call: &str, body: &[u8]) -> String {
        let claims = ReceiptClaims {
            iss: "http://127.0.0.1:8080".into(),
            iat: 1,
            call_jti: jti.into(),
            call_hash: sha256_hex(call.as_bytes()),
            result_hash: sha256_hex(body),
            decision: Decision::Allowed,
            seq: 3,
            leaf_hash: "00".repeat(32),
        };
        jws::sign(key, RECEIPT_TYP, &claims).unwrap()
    }

    #[test]
    fn receipts_are_checked_against_call_and_body() {
        let gw = PrivateKey::generate(Alg::RS384).unwrap();
        let keys = vec![VerifyingKey::from_jwk(gw.public_jwk()).unwrap()];
        let r = receipt_for(&gw, "j1", "call.jws.x", b"{\"ok\":1}");
        assert_eq!(verify_receipt(&r, &keys, "call.jws.x", "j1", b"{\"ok\":1}").unwrap().claims.seq, 3);
        assert_eq!(verify_receipt(&r, &keys, "call.jws.y", "j1", b"{\"ok\":1}").unwrap_err(), ReceiptError::Mismatch("call_hash is not the hash of the call sent"));
        assert!(matches!(verify_receipt(&r, &keys, "call.jws.x", "j2", b"{\"ok\":1}"), Err(ReceiptError::Mismatch(_))));
        assert!(matches!(verify_receipt(&r, &keys, "call.jws.x", "j1", b"{\"ok\":2}"), Err(ReceiptError::Mismatch(_))));
        let other = PrivateKey::generate(Alg::RS384).unwrap();
        let forged = receipt_for(&other, "j1", "call.jws.x", b"{\"ok\":1}");
        assert_eq!(verify_receipt(&forged, &keys, "call.jws.x", "j1", b"{\"ok\":1}").unwrap_err(), ReceiptError::UnknownKid);
        let forged_same_kid = receipt_for(&other.with_kid(gw.kid()), "j1", "call.jws.x", b"{\"ok\":1}");
        assert!(matches!(verify_receipt(&forged_same_kid, &keys, "call.jws.x", "j1", b"{\"ok\":1}"), Err(ReceiptError::Jws(_))));
    }

    #[test]
    fn signed_calls_have_fresh_jtis_and_a_bounded_lifetime() {
        let clock = medicodax_clock::ManualClock::new(1_767_225_600);
        let key = Arc::new(PrivateKey::generate(Alg::ES384).unwrap());
        let c = AgentClient::new("coding-agent", key, "http://127.0.0.1:1", "http://127.0.0.1:1", clock.shared()).unwrap();
        let a = c.sign("coder", "fhir.read", Map::new(), None).unwrap();
        let b = c.sign("coder", "fhir.read", Map::new(), None).unwrap();
        assert_ne!(a.claims.jti, b.claims.jti);
        assert_eq!(a.claims.exp.0 - a.claims.iat.0, CALL_LIFETIME);
        assert_eq!(a.claims.iat.0, 1_767_225_600);
        let parsed = jws::Compact::parse(&a.jws, jws::HeaderRules { allowed: &["typ", "kid"], typ: Some(CALL_TYP), require_kid: true }).unwrap();
        assert_eq!(parsed.alg_name, "ES384");
    }
}

/// Why a request to the gateway got no answer, with its root cause and what to do (no URL:
/// the caller names it).
pub fn send_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut root: &dyn std::error::Error = &e;
    while let Some(next) = root.source() {
        root = next;
    }
    let cause = root.to_string();
    if e.is_connect() {
        format!("{cause}; is `medicodax serve` running there? (the gateway URL comes from --gateway or MEDICODAX_GATEWAY)")
    } else if e.is_timeout() {
        format!("no answer in time ({cause}); the gateway may be overloaded")
    } else {
        format!("{e}: {cause}")
    }
}
