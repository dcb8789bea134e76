//! The call pipeline, shared by `POST /v1/calls` and MCP `tools/call`.
//!
//! ```text
//! verify ──✗──► 401/413, no receipt, not audited (counted in /metrics)
//!   │
//! intent record + replay key, one durable append ──✗ replayed──► intent + denied outcome, 409
//!   │                                               ──✗ store──► 503 audit-unavailable
//! claims = what the transport asked for (MCP name/arguments) ──✗──► 400 bad-arguments (denied outcome)
//!   │
//! tool + arguments ──✗──► 400 bad-arguments (denied outcome)
//!   │
//! policy (agent ∩ user ∩ EHR grants) ──✗──► uniform 403 (denied outcome)
//!   │
//! FHIR through the connection ──✗──► 404/429/502/503/504 (failed outcome)
//!   │
//! minimum-necessary filtering, redaction
//!   │
//! outcome record, durable ──✗──► 503 audit-unavailable, no data leaves
//!   │
//! answer bytes B + receipt (gateway key) over call_hash, result_hash = SHA-256(B), seq, leaf_hash
//! ```

use crate::calls::{CallVerifier, VerifiedCall, VerifyError};
use crate::ehr::Ehr;
use crate::keys::GatewayKeys;
use crate::problem::ApiProblem;
use crate::tools::{self, Failure, ToolContext};
use crate::users::UserStore;
use medicodax_audit::{AuditError, AuditLog, ReplayKey};
use medicodax_clock::SharedClock;
use medicodax_config::Config;
use medicodax_jose::RingEvent;
use medicodax_policy::Policy;
use medicodax_smart::{AuthManager, TokenFailureRecord};
use medicodax_wire::audit::{IntentRecord, OutcomeRecord};
use medicodax_wire::hash::sha256_hex;
use medicodax_wire::receipt::{Decision, RECEIPT_TYP, ReceiptClaims};
use medicodax_wire::ProblemCode;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a call arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// `POST /v1/calls`.
    Http,
    /// MCP `tools/call`.
    Mcp,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Http => "http",
            Channel::Mcp => "mcp",
        }
    }
}

/// The answer to a call, transport-neutral.
#[derive(Clone, Debug)]
pub struct CallAnswer {
    /// HTTP status.
    pub status: u16,
    /// The body bytes B (the result, or a problem document).
    pub body: Vec<u8>,
    /// `application/json` or `application/problem+json`.
    pub content_type: &'static str,
    /// The receipt JWS, for every call whose signature verified and whose outcome was logged.
    pub receipt: Option<String>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// The decision, when the call verified.
    pub decision: Option<Decision>,
    /// The verified call's claims, when it verified (for MCP's tool/args comparison).
    pub verified: Option<Arc<VerifiedCall>>,
}

impl CallAnswer {
    fn unverified(p: ApiProblem) -> Self {
        CallAnswer {
            status: p.problem.status,
            body: p.body(),
            content_type: crate::problem::PROBLEM_JSON,
            receipt: None,
            retry_after: p.retry_after,
            decision: None,
            verified: None,
        }
    }
}

/// What the transport that carried a call says it is for (MCP's `name` and `arguments`).
/// The verified claims must say the same, or the call is denied (audited, with a receipt).
#[derive(Clone, Debug)]
pub struct Expected {
    /// The tool the transport request names.
    pub tool: String,
    /// The arguments the transport request carries (an absent `arguments` is `{}`).
    pub args: serde_json::Map<String, serde_json::Value>,
}

impl Expected {
    /// The denial for claims that differ: `tool` must be equal, and `args` equal as JSON
    /// values (RFC 8785 canonical forms compared, so member order and number spelling
    /// do not matter). Names only which part differs, never argument values.
    fn mismatch(&self, claims: &medicodax_wire::CallClaims) -> Option<Failure> {
        let deny = |detail: String, reason: &str| Some(Failure::denied_with(ApiProblem::new(ProblemCode::BadArguments, detail), reason));
        if claims.tool != self.tool {
            let short = |t: &str| t.chars().take(64).collect::<String>();
            return deny(
                format!("the signed call's tool {:?} is not the request's tool name {:?}; sign the call you send", short(&claims.tool), short(&self.tool)),
                "bad-arguments: the transport's tool name differs from the signed call's tool",
            );
        }
        let canonical = medicodax_wire::hash::canonical_json;
        let same = matches!((canonical(&claims.args), canonical(&self.args)), (Ok(a), Ok(b)) if a == b);
        if !same {
            return deny(
                "the signed call's args are not the request's arguments (compared as RFC 8785 canonical JSON); sign the arguments you send".to_owned(),
                "bad-arguments: the transport's arguments differ from the signed call's args",
            );
        }
        None
    }
}

/// Everything a call needs, built once at startup.
pub struct Gateway {
    /// The configuration.
    pub config: Arc<Config>,
    /// The clock.
    pub clock: SharedClock,
    /// Call verification.
    pub verifier: CallVerifier,
    /// Policy.
    pub policy: Policy,
    /// The audit log.
    pub audit: AuditLog,
    /// The auth manager.
    pub auth: Arc<AuthManager>,
    /// EHR connections by name.
    pub ehrs: BTreeMap<String, Arc<Ehr>>,
    /// Our signing keys.
    pub keys: Arc<GatewayKeys>,
    /// Users.
    pub users: UserStore,
    /// Coding worksheets.
    pub worksheets: crate::worksheets::WorksheetStore,
    /// The exclusive lock on the data folder, held while this gateway runs.
    data_lock: Option<std::fs::File>,
    rejected_logged: AtomicU64,
    /// Per connection, the assertion `jti` of the latest refused token request audited.
    token_failures_logged: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("audience", &self.verifier.audience()).finish_non_exhaustive()
    }
}

/// The leeway added to a call's `exp` for how long its `jti` stays used.
fn replay_until(call: &VerifiedCall, leeway: i64) -> i64 {
    call.claims.exp.0.saturating_add(leeway)
}

impl Gateway {
    /// Assembles a gateway from its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        clock: SharedClock,
        verifier: CallVerifier,
        policy: Policy,
        audit: AuditLog,
        auth: Arc<AuthManager>,
        ehrs: BTreeMap<String, Arc<Ehr>>,
        keys: Arc<GatewayKeys>,
        users: UserStore,
        worksheets: crate::worksheets::WorksheetStore,
    ) -> Self {
        Gateway { config, clock, verifier, policy, audit, auth, ehrs, keys, users, worksheets, rejected_logged: AtomicU64::new(0), token_failures_logged: Mutex::new(HashMap::new()), data_lock: None }
    }

    /// Holds the data folder's lock for as long as this gateway lives.
    pub fn hold_lock(&mut self, lock: std::fs::File) {
        self.data_lock = Some(lock);
    }

    /// The audience calls must name.
    pub fn audience(&self) -> &str {
        self.verifier.audience()
    }

    fn note_rejected(&self, e: &VerifyError, channel: Channel) {
        metrics::counter!("medicodax_calls_rejected_total", "reason" => e.label(), "channel" => channel.as_str()).increment(1);
        // Logged, rate-limited, without content: the first 100, then every 1,000th.
        let n = self.rejected_logged.fetch_add(1, Ordering::Relaxed);
        if n < 100 || n % 1000 == 0 {
            tracing::info!(reason = e.label(), channel = channel.as_str(), count = n + 1, "call refused before verification completed");
        }
    }

    /// Handles one call body end to end.
    pub async fn handle_call(&self, body: &[u8], channel: Channel) -> CallAnswer {
        self.handle_call_expecting(body, channel, None).await
    }

    /// Handles one call body end to end; with `expected`, a verified call whose tool or
    /// arguments differ from it is denied after its intent record is written and before
    /// the tool runs (400 bad-arguments, outcome and receipt as for any denial).
    pub async fn handle_call_expecting(&self, body: &[u8], channel: Channel, expected: Option<&Expected>) -> CallAnswer {
        let started = self.clock.monotonic();
        let call = match self.verifier.verify(body).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.note_rejected(&e, channel);
                let code = if matches!(e, VerifyError::TooLarge { .. }) { ProblemCode::TooLarge } else { ProblemCode::InvalidCall };
                return CallAnswer::unverified(ApiProblem::new(code, e.to_string()));
            }
        };
        let claims = &call.claims;
        let connection = claims
            .args
            .get("connection")
            .and_then(|v| v.as_str())
            .filter(|c| medicodax_wire::tools::valid_connection_name(c))
            .map(str::to_owned);
        let intent = IntentRecord {
            time_ms: self.clock.now_unix_millis(),
            agent: claims.iss.clone(),
            user: claims.sub.clone(),
            jti: claims.jti.clone(),
            tool: claims.tool.chars().take(64).collect(),
            purpose: claims.purpose().chars().take(64).collect(),
            connection: connection.clone(),
            call_hash: call.call_hash.clone(),
            call_jws: call.jws.clone(),
            channel: channel.as_str().to_owned(),
        };
        let replay = ReplayKey { iss: claims.iss.clone(), jti: claims.jti.clone(), expires_at: replay_until(&call, self.config.gateway.leeway_secs) };
        let (intent_seq, result) = match self.audit.append_intent(intent.clone(), Some(replay)).await {
            Ok(a) => {
                let mut ctx = ToolContext::new(connection.clone());
                let r = match expected.and_then(|e| e.mismatch(claims)) {
                    Some(denied) => Err(denied),
                    None => {
                        // No call runs past its own expiry (plus leeway), nor past two minutes:
                        // a slow EHR must not hold an agent's call while retries pile up.
                        let left = claims.exp.0.saturating_add(self.config.gateway.leeway_secs).saturating_sub(self.clock.now_unix());
                        let budget = Duration::from_secs(u64::try_from(left).unwrap_or(0).clamp(5, 120));
                        tokio::select! {
                            r = tools::execute(self, &call, &mut ctx) => r,
                            _ = self.clock.sleep(budget) => Err(tools::Failure::out_of_time(budget)),
                        }
                    }
                };
                (a.seq, (r, ctx))
            }
            Err(AuditError::Replayed { .. }) => match self.audit.append_intent(intent, None).await {
                Ok(a) => {
                    let f = Failure::denied_with(ApiProblem::new(ProblemCode::Replayed, "this jti was already used by this agent; sign a new call"), "replayed: jti already used");
                    (a.seq, (Err(f), ToolContext::new(connection.clone())))
                }
                Err(e) => return self.audit_unavailable(&e),
            },
            Err(e) => return self.audit_unavailable(&e),
        };
        let (result, ctx) = result;
        let (status, body, content_type, decision, code, reason, retry_after) = match result {
            Ok(value) => match serde_json::to_vec(&value) {
                Ok(b) => (200, b, "application/json", Decision::Allowed, None, None, None),
                Err(_) => {
                    let p = ApiProblem::new(ProblemCode::Internal, "the result could not be serialised");
                    (500, p.body(), crate::problem::PROBLEM_JSON, Decision::Failed, Some(ProblemCode::Internal), Some("serialise".to_owned()), None)
                }
            },
            Err(f) => (f.problem.problem.status, f.problem.body(), crate::problem::PROBLEM_JSON, f.decision, Some(f.problem.problem.code), Some(f.reason), f.problem.retry_after),
        };
        let result_hash = sha256_hex(&body);
        let latency = self.clock.monotonic().since(started);
        let outcome = OutcomeRecord {
            time_ms: self.clock.now_unix_millis(),
            agent: claims.iss.clone(),
            user: claims.sub.clone(),
            jti: claims.jti.clone(),
            intent_seq,
            decision,
            code: code.map(|c| c.as_str().to_owned()),
            reason,
            connection: ctx.connection.clone(),
            granted_scopes: ctx.granted_scopes.clone(),
            upstream: ctx.log.take(),
            resources: ctx.resources,
            patients: ctx.patients.into_iter().collect(),
            warnings: ctx.warnings,
            result_hash: result_hash.clone(),
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        };
        // The receipt is signed while the outcome's commit is being made durable; neither
        // leaves before the commit succeeds.
        let numbered = match self.audit.append_outcome_numbered(outcome).await {
            Ok(n) => n,
            Err(e) => return self.audit_unavailable(&e),
        };
        let appended = numbered.appended;
        let receipt = ReceiptClaims {
            iss: self.audience().to_owned(),
            iat: self.clock.now_unix(),
            call_jti: claims.jti.clone(),
            call_hash: call.call_hash.clone(),
            result_hash,
            decision,
            seq: appended.seq,
            leaf_hash: appended.leaf_hash_hex(),
        };
        let receipt = self.keys.sign(RECEIPT_TYP, &receipt).ok();
        if receipt.is_none() {
            tracing::error!(seq = appended.seq, "the receipt could not be signed");
        }
        if let Err(e) = numbered.durable().await {
            return self.audit_unavailable(&e);
        }
        metrics::counter!("medicodax_calls_total", "tool" => tool_label(&claims.tool), "decision" => decision.as_str(), "channel" => channel.as_str()).increment(1);
        metrics::histogram!("medicodax_call_seconds", "tool" => tool_label(&claims.tool)).record(latency.as_secs_f64());
        CallAnswer { status, body, content_type, receipt, retry_after, decision: Some(decision), verified: Some(call) }
    }

    fn audit_unavailable(&self, e: &AuditError) -> CallAnswer {
        tracing::error!(error = %e, "the audit log cannot be written; failing the call");
        metrics::counter!("medicodax_audit_failures_total").increment(1);
        CallAnswer::unverified(ApiProblem::new(ProblemCode::AuditUnavailable, "the audit log cannot be written, so nothing was done; retry later").retry_after(5))
    }

    /// Whether the refused token request `r` still has to be audited, marking it as
    /// audited. The auth manager answers every call with the same record (the same
    /// assertion `jti`) until its slow retry, so the one request is logged once, not once
    /// per call that ran into it (pitfall 3).
    pub(crate) fn first_report(&self, r: &TokenFailureRecord) -> bool {
        let mut seen = self.token_failures_logged.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&r.connection) == Some(&r.assertion.claims.jti) {
            return false;
        }
        seen.insert(r.connection.clone(), r.assertion.claims.jti.clone());
        true
    }

    /// Undoes [`Gateway::first_report`] when the event could not be written, so a later
    /// call tries again.
    pub(crate) fn forget_report(&self, r: &TokenFailureRecord) {
        let mut seen = self.token_failures_logged.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&r.connection) == Some(&r.assertion.claims.jti) {
            seen.remove(&r.connection);
        }
    }

    /// Seconds until an EHR budget frees up, for `Retry-After`.
    pub fn retry_secs(d: Duration) -> u64 {
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }

    /// Starts a rotation of the gateway key (receipts, checkpoints, sessions) and audits
    /// it as `key.rotation.started` (pitfall 9): the new key is published now and signs
    /// after `keys.publish_lead`.
    pub async fn rotate_gateway_key(&self) -> Result<RingEvent, KeyRotationError> {
        let e = self.keys.start_rotation().map_err(KeyRotationError::Gateway)?;
        self.audit_ring_event(&e).await?;
        Ok(e)
    }

    /// Starts a rotation of a connection's managed assertion key and audits it as
    /// `key.rotation.started`.
    pub async fn rotate_connection_key(&self, connection: &str) -> Result<RingEvent, KeyRotationError> {
        let e = self.auth.rotate_key(connection).map_err(KeyRotationError::Connection)?;
        self.audit_ring_event(&e).await?;
        Ok(e)
    }

    /// Moves every key ring's rotation schedule (the gateway's and each connection's) to
    /// now and audits each step taken (`key.activated`, `key.unpublished`); returns the
    /// steps. A ring that cannot take its step is logged and tried again at the next
    /// tick; a step taken that the audit log cannot record is logged as an error.
    /// [`crate::server::spawn_key_ticker`] calls this once a minute.
    pub async fn tick_keys(&self) -> Vec<RingEvent> {
        let mut events = self.auth.tick_keys();
        match self.keys.tick() {
            Ok(mut e) => events.append(&mut e),
            Err(e) => tracing::warn!(error = %e, "gateway key ring schedule step failed"),
        }
        for e in &events {
            if let Err(err) = self.audit_ring_event(e).await {
                tracing::error!(error = %err, "could not audit a key rotation step");
            }
        }
        events
    }

    async fn audit_ring_event(&self, e: &RingEvent) -> Result<(), KeyRotationError> {
        match self.audit.append_event(crate::server::ring_event(e, self.clock.now_unix_millis())).await {
            Ok(_) => Ok(()),
            Err(source) => Err(KeyRotationError::Audit { event: e.event, kid: e.kid.clone(), source }),
        }
    }
}

/// Why a key rotation step was not done, or was done but not audited.
#[derive(Debug, thiserror::Error)]
pub enum KeyRotationError {
    /// The gateway key ring refused (a rotation already under way, or a key file that
    /// could not be written).
    #[error("gateway key ring: {0}")]
    Gateway(medicodax_jose::ring::RingError),
    /// The connection's key ring refused (unknown connection, a key file from the
    /// configuration, or a rotation already under way).
    #[error(transparent)]
    Connection(medicodax_smart::RotateError),
    /// The step was taken, but the audit log could not record it.
    #[error("{event} for key {kid} was done, but the audit log could not record it: {source}")]
    Audit {
        /// The step (`key.rotation.started`, ...).
        event: &'static str,
        /// The key concerned.
        kid: String,
        /// The audit failure.
        source: AuditError,
    },
}

fn tool_label(tool: &str) -> &'static str {
    match tool.parse::<medicodax_wire::ToolName>() {
        Ok(t) => t.as_str(),
        Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_wire::call::{Audience, CallClaims, NumericDate};
    use serde_json::{Value, json};

    fn claims(tool: &str, args: Value) -> CallClaims {
        let Value::Object(args) = args else { panic!("args must be an object") };
        CallClaims { iss: "a".into(), sub: "u".into(), aud: Audience::One("g".into()), iat: NumericDate(1), exp: NumericDate(2), nbf: None, jti: "j".into(), tool: tool.into(), args, purpose: None }
    }

    fn expected(tool: &str, args: Value) -> Expected {
        let Value::Object(args) = args else { panic!("args must be an object") };
        Expected { tool: tool.into(), args }
    }

    #[test]
    fn equal_json_values_match_whatever_their_spelling() {
        let signed = claims("fhir.search", json!({"connection": "c", "type": "Patient", "params": [["name", "Ann"]], "max_results": 10}));
        let sent = expected("fhir.search", serde_json::from_str(r#"{"max_results": 10.0, "params": [["name", "\u0041nn"]], "type": "Patient", "connection": "c"}"#).unwrap());
        assert!(sent.mismatch(&signed).is_none());
    }

    #[test]
    fn a_different_tool_or_argument_is_a_bad_arguments_denial_naming_the_part() {
        let signed = claims("fhir.read", json!({"connection": "c", "type": "Patient", "id": "p-1"}));
        let f = expected("fhir.search", json!({"connection": "c", "type": "Patient", "id": "p-1"})).mismatch(&signed).unwrap();
        assert_eq!((f.problem.problem.status, f.problem.problem.code, f.decision), (400, ProblemCode::BadArguments, Decision::Denied));
        assert!(f.reason.contains("tool name"), "{}", f.reason);
        assert!(f.problem.problem.detail.contains("\"fhir.read\"") && f.problem.problem.detail.contains("\"fhir.search\""));
        for other in [json!({"connection": "c", "type": "Patient", "id": "p-2"}), json!({"connection": "c", "type": "Patient"}), json!({"connection": "c", "type": "Patient", "id": "p-1", "x": null})] {
            let f = expected("fhir.read", other).mismatch(&signed).unwrap();
            assert_eq!(f.problem.problem.code, ProblemCode::BadArguments);
            assert!(f.reason.contains("arguments"), "{}", f.reason);
            assert!(!f.problem.problem.detail.contains("p-1"), "no argument values in the answer");
        }
    }
}
