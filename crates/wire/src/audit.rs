//! Records of the tamper-evident audit log (DESIGN.md §3.3).
//!
//! A log entry is a [`LogEntry`]: its sequence number and one [`AuditRecord`]. The leaf
//! hash of an entry is `SHA-256(0x00 || JCS(entry))` ([`crate::hash::leaf_hash`]), so the
//! sequence number is covered by the hash and anyone holding the entries can rebuild the
//! RFC 6962 tree.

use crate::receipt::Decision;
use crate::tools::Warning;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One leaf of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// The record.
    pub record: AuditRecord,
}

/// What a log entry records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditRecord {
    /// Written durably before any EHR request of a verified call.
    Intent(IntentRecord),
    /// Written durably before the answer leaves.
    Outcome(OutcomeRecord),
    /// A system event: key rotation, a token-endpoint configuration failure, startup.
    Event(SystemEvent),
}

/// Who asked for what, and why, before anything is done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The agent (`iss`).
    pub agent: String,
    /// The user the agent acts for (`sub`).
    pub user: String,
    /// The call's `jti`.
    pub jti: String,
    /// The tool name as sent.
    pub tool: String,
    /// PurposeOfUse.
    pub purpose: String,
    /// The connection named in the arguments, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// SHA-256 hex of the call JWS bytes.
    pub call_hash: String,
    /// The call JWS verbatim, so it can be re-verified later.
    pub call_jws: String,
    /// How the call arrived: `http` or `mcp`.
    pub channel: String,
}

/// One request the gateway made to an EHR for a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query relative to the connection's FHIR base (no host, no token).
    pub path: String,
    /// HTTP status, or 0 when no answer came.
    pub status: u16,
}

/// A resource returned to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRef {
    /// FHIR type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// FHIR id.
    pub id: String,
    /// `meta.versionId`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What happened to a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// The agent (`iss`).
    pub agent: String,
    /// The user (`sub`).
    pub user: String,
    /// The call's `jti` (links to the intent).
    pub jti: String,
    /// Sequence number of the matching intent record.
    pub intent_seq: u64,
    /// The decision.
    pub decision: Decision,
    /// The problem code for a denial or failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why (policy rule, upstream error class). Never PHI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The EHR connection used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Scopes the EHR granted for the connection at the time, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,
    /// Each upstream request made.
    #[serde(default)]
    pub upstream: Vec<UpstreamRequest>,
    /// Resources returned, as type/id/version.
    #[serde(default)]
    pub resources: Vec<ResourceRef>,
    /// Patient ids touched.
    #[serde(default)]
    pub patients: Vec<String>,
    /// Non-data notices (OperationOutcome warnings, withheld types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// SHA-256 hex of the answer body.
    pub result_hash: String,
    /// Wall time from receipt of the call to this record, in milliseconds.
    pub latency_ms: u64,
}

/// A system event worth an audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemEvent {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// A stable event name, e.g. `key.rotation.started`, `token.invalid_client`.
    pub event: String,
    /// What it is about (a connection name, a key id).
    pub subject: String,
    /// Structured detail (never secrets or PHI).
    #[serde(default)]
    pub detail: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use serde_json::json;

    #[test]
    fn entries_round_trip_with_kind_tag() {
        let e = LogEntry {
            seq: 7,
            record: AuditRecord::Event(SystemEvent { time_ms: 1, event: "key.rotation.started".into(), subject: "k2".into(), detail: json!({"from":"k1"}) }),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["record"]["kind"], "event");
        let back: LogEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn leaf_hash_covers_the_sequence_number() {
        let rec = AuditRecord::Event(SystemEvent { time_ms: 1, event: "x".into(), subject: "y".into(), detail: Value::Null });
        let a = leaf_hash(&LogEntry { seq: 1, record: rec.clone() }).unwrap();
        let b = leaf_hash(&LogEntry { seq: 2, record: rec }).unwrap();
        assert_ne!(a, b);
    }
}
