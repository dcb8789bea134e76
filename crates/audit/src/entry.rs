//! How a record becomes a stored leaf, and how stored rows are read back.
//!
//! A leaf's bytes are `JCS(LogEntry { seq, record })`. Since RFC 8785 sorts members by
//! name and `"record" < "seq"`, those bytes are exactly
//! `{"record":` + `JCS(record)` + `,"seq":` + `seq` + `}`; so the record is canonicalised
//! by the appending task (in parallel), and the single writer only splices in the
//! sequence number and hashes. A test checks the splice against
//! `medicodax_wire::hash::canonical_json` of the whole entry.

use crate::error::AuditError;
use medicodax_wire::audit::{AuditRecord, LogEntry};
use medicodax_wire::hash::{Digest32, canonical_json};
use serde::Serialize;

/// The largest sequence number whose JCS form is a plain integer (2^53 - 1).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// The stored `kind` column of a record.
pub fn kind_of(record: &AuditRecord) -> &'static str {
    match record {
        AuditRecord::Intent(_) => "intent",
        AuditRecord::Outcome(_) => "outcome",
        AuditRecord::Event(_) => "event",
    }
}

/// The indexed columns stored beside a record: (kind, agent, user, jti, time_ms).
pub(crate) fn index_columns(record: &AuditRecord) -> (&'static str, Option<&str>, Option<&str>, Option<&str>, i64) {
    match record {
        AuditRecord::Intent(i) => ("intent", Some(&i.agent), Some(&i.user), Some(&i.jti), i.time_ms),
        AuditRecord::Outcome(o) => ("outcome", Some(&o.agent), Some(&o.user), Some(&o.jti), o.time_ms),
        AuditRecord::Event(e) => ("event", None, None, None, e.time_ms),
    }
}

/// A record canonicalised and ready for the writer.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub kind: &'static str,
    pub agent: Option<String>,
    pub user: Option<String>,
    pub jti: Option<String>,
    pub time_ms: i64,
    pub record_jcs: Vec<u8>,
}

impl Prepared {
    pub fn new(record: &AuditRecord) -> Result<Self, AuditError> {
        let (kind, agent, user, jti, time_ms) = index_columns(record);
        Ok(Prepared {
            kind,
            agent: agent.map(str::to_owned),
            user: user.map(str::to_owned),
            jti: jti.map(str::to_owned),
            time_ms,
            record_jcs: canonical_json(record)?,
        })
    }
}

/// The canonical bytes of `LogEntry { seq, record }` from the record's canonical bytes.
pub(crate) fn entry_bytes(seq: u64, record_jcs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record_jcs.len() + 40);
    out.extend_from_slice(b"{\"record\":");
    out.extend_from_slice(record_jcs);
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.push(b'}');
    out
}

/// One stored row as read, unchecked (verification looks at each column itself).
#[derive(Clone, Debug)]
pub(crate) struct RawEntry {
    pub seq: i64,
    pub kind: String,
    pub agent: Option<String>,
    pub user: Option<String>,
    pub jti: Option<String>,
    pub time_ms: i64,
    pub canonical: Vec<u8>,
    pub leaf_hash: Vec<u8>,
}

impl RawEntry {
    /// The stored leaf hash, if it has the right length.
    pub fn stored_leaf(&self) -> Option<Digest32> {
        <[u8; 32]>::try_from(self.leaf_hash.as_slice()).ok()
    }

    /// The entry decoded from its canonical bytes, or why not.
    pub fn decode(&self) -> Result<LogEntry, String> {
        serde_json::from_slice::<LogEntry>(&self.canonical).map_err(|e| format!("not a log entry: {}", e.classify_name()))
    }

    /// Decodes into a checked [`TailEntry`], or a corruption error.
    pub fn into_tail(self) -> Result<TailEntry, AuditError> {
        let corrupt = |reason: String| AuditError::Corrupt { what: "entry", at: self.seq, reason };
        let entry = self.decode().map_err(corrupt)?;
        let leaf = self.stored_leaf().ok_or_else(|| corrupt("leaf hash is not 32 bytes".into()))?;
        if crate::error::to_u64("entry", self.seq)? != entry.seq {
            return Err(corrupt("the record's seq differs from its row".into()));
        }
        Ok(TailEntry { seq: entry.seq, leaf_hash: hex::encode(leaf), entry })
    }
}

/// Names a serde_json error's class without echoing input.
trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// A log entry as `audit tail` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TailEntry {
    /// Its position.
    pub seq: u64,
    /// Its stored RFC 6962 leaf hash, hex.
    pub leaf_hash: String,
    /// The entry.
    pub entry: LogEntry,
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_wire::audit::{IntentRecord, OutcomeRecord, ResourceRef, SystemEvent, UpstreamRequest};
    use medicodax_wire::hash::leaf_hash;
    use medicodax_wire::Decision;
    use serde_json::json;

    fn records() -> Vec<AuditRecord> {
        vec![
            AuditRecord::Intent(IntentRecord {
                time_ms: 1_767_225_600_123,
                agent: "coding-agent".into(),
                user: "coder".into(),
                jti: "j-ü-1".into(),
                tool: "fhir.read".into(),
                purpose: "HOPERAT".into(),
                connection: Some("epic-sandbox".into()),
                call_hash: "ab".repeat(32),
                call_jws: "e30.e30.sig".into(),
                channel: "http".into(),
            }),
            AuditRecord::Outcome(OutcomeRecord {
                time_ms: 1_767_225_600_200,
                agent: "coding-agent".into(),
                user: "coder".into(),
                jti: "j-1".into(),
                intent_seq: 0,
                decision: Decision::Allowed,
                code: None,
                reason: None,
                connection: Some("epic-sandbox".into()),
                granted_scopes: vec!["system/Patient.rs".into()],
                upstream: vec![UpstreamRequest { method: "GET".into(), path: "Patient/pt-1001".into(), status: 200 }],
                resources: vec![ResourceRef { resource_type: "Patient".into(), id: "pt-1001".into(), version: Some("3".into()) }],
                patients: vec!["pt-1001".into()],
                warnings: vec![],
                result_hash: "cd".repeat(32),
                latency_ms: 12,
            }),
            AuditRecord::Event(SystemEvent {
                time_ms: 5,
                event: "key.rotation.started".into(),
                subject: "gateway".into(),
                detail: json!({"z": 1.5, "a": [1e21, "\u{1F600}", null], "é": true}),
            }),
        ]
    }

    #[test]
    fn spliced_bytes_equal_the_canonical_entry() {
        for r in records() {
            for seq in [0u64, 1, 9, 10, 12345, MAX_SEQ] {
                let p = Prepared::new(&r).unwrap();
                let whole = canonical_json(&LogEntry { seq, record: r.clone() }).unwrap();
                assert_eq!(String::from_utf8(entry_bytes(seq, &p.record_jcs)).unwrap(), String::from_utf8(whole).unwrap());
                assert_eq!(
                    medicodax_wire::hash::leaf_hash_bytes(&entry_bytes(seq, &p.record_jcs)),
                    leaf_hash(&LogEntry { seq, record: r.clone() }).unwrap()
                );
            }
        }
    }

    #[test]
    fn index_columns_follow_the_record() {
        let r = records();
        let p = Prepared::new(&r[0]).unwrap();
        assert_eq!((p.kind, p.agent.as_deref(), p.user.as_deref(), p.jti.as_deref()), ("intent", Some("coding-agent"), Some("coder"), Some("j-ü-1")));
        let p = Prepared::new(&r[2]).unwrap();
        assert_eq!((p.kind, p.agent, p.time_ms), ("event", None, 5));
    }
}
