//! `audit export --format fhir`: the log as FHIR R4 `AuditEvent`s following the IHE
//! Basic Audit Log Patterns (BALP) — one event per call, with the intent and outcome
//! records merged, and one per system event. NDJSON (one event per line) or a Bundle of
//! type `collection`.
//!
//! A call's event:
//! - `type` `audit-event-type#rest`; `subtype` the FHIR RESTful interaction(s)
//!   (`read`, `search-type`) and the tool name (`urn:medicodax:tool`); `action` `R` for
//!   `fhir.read`, `E` for searches and the other tools (BALP: queries are Execute);
//! - `period` from the intent to the outcome, `recorded` the outcome's time;
//! - `outcome` from the decision: allowed `0`, denied `4` (minor failure: the request was
//!   refused), failed `8` (serious failure: the EHR or the gateway failed), and `12`
//!   (major failure) for an intent with no outcome (a call cut short by a crash);
//! - `agent`: the user the AI agent acts for (`v3-ParticipationType#IRCP`, requestor,
//!   with the purpose of use), the AI agent (DICOM `110153` Source Role ID), and the
//!   gateway (DICOM `110152` Destination Role ID);
//! - `source`: the gateway (`security-source-type#4` Application Server);
//! - `entity`: each patient touched (`audit-entity-type#1` / `object-role#1`), each
//!   resource requested or returned as `Type/id[/_history/version]` (`#2` / `#4` Domain
//!   Resource), a search's query (`object-role#24`, base64 `Type?name=value&…`), and the
//!   call itself as the BALP transaction entity (`BasicAuditEntityType#XrequestId`, the
//!   `jti`) with the log's sequence numbers and hashes as details, so every event leads
//!   back to its Merkle leaves;
//! - `purposeOfEvent` the call's PurposeOfUse (`v3-ActReason`).

use crate::db::Db;
use crate::error::AuditError;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use medicodax_wire::Decision;
use medicodax_wire::audit::{AuditRecord, IntentRecord, LogEntry, OutcomeRecord, SystemEvent};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const BALP_ENTITY: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const TOOL_SYSTEM: &str = "urn:medicodax:tool";
const EVENT_SYSTEM: &str = "urn:medicodax:event";
const AGENT_SYSTEM: &str = "urn:medicodax:agent";
const USER_SYSTEM: &str = "urn:medicodax:user";
const JTI_SYSTEM: &str = "urn:medicodax:jti";
const SUBJECT_SYSTEM: &str = "urn:medicodax:subject";
const URI_SYSTEM: &str = "urn:ietf:rfc:3986";

/// NDJSON or a Bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One AuditEvent per line.
    Ndjson,
    /// One Bundle of type `collection`.
    Bundle,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The gateway's origin (its audience), named as source and destination.
    pub origin: String,
    /// The output format.
    pub format: ExportFormat,
    /// The first seq read.
    pub from_seq: u64,
    /// Stop before this seq (everything when `None`).
    pub to_seq: Option<u64>,
}

impl ExportOptions {
    /// The whole log, in `format`.
    pub fn new(origin: impl Into<String>, format: ExportFormat) -> Self {
        ExportOptions { origin: origin.into(), format, from_seq: 0, to_seq: None }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// AuditEvents written.
    pub events: u64,
    /// Of which calls.
    pub calls: u64,
    /// Of which calls with no outcome record (outcome `12`).
    pub calls_without_outcome: u64,
    /// Of which system events.
    pub system_events: u64,
    /// Rows that could not be decoded and were left out (run `audit verify`).
    pub skipped_rows: u64,
}

/// Unix milliseconds as a FHIR `instant` (UTC, milliseconds).
pub fn instant(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        // infallible for any time the gateway records; clamp anything absurd to the epoch
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

fn coding(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut c = json!({ "system": system, "code": code });
    if let Some(d) = display {
        c["display"] = json!(d);
    }
    c
}

/// Whether `s` is a valid FHIR `code` (no leading, trailing or doubled whitespace).
fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.starts_with(char::is_whitespace) && !s.ends_with(char::is_whitespace) && !s.contains("  ") && !s.contains(['\t', '\n', '\r'])
}

/// A CodeableConcept for a purpose of use: coded when it is a code, text otherwise.
fn purpose(p: &str) -> Value {
    if is_code(p) { json!({ "coding": [coding(ACT_REASON, p, None)] }) } else { json!({ "text": p.chars().take(256).collect::<String>() }) }
}

fn gateway_who(origin: &str) -> Value {
    json!({ "identifier": { "system": URI_SYSTEM, "value": origin }, "display": "MEDICODAX gateway" })
}

fn source(origin: &str) -> Value {
    json!({ "site": origin, "observer": gateway_who(origin), "type": [coding(SOURCE_TYPE, "4", Some("Application Server"))] })
}

/// The call's arguments, from the payload of the call JWS kept in the intent record.
fn call_args(intent: &IntentRecord) -> Option<Map<String, Value>> {
    let payload = intent.call_jws.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()?.get("args")? {
        Value::Object(m) => Some(m.clone()),
        _ => None,
    }
}

fn str_arg<'a>(args: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    args.get(k).and_then(Value::as_str)
}

/// Collects entities, one per resource (`Type/id`).
#[derive(Default)]
struct Entities {
    list: Vec<Value>,
    index: BTreeMap<String, usize>,
}

impl Entities {
    fn add(&mut self, key: String, reference: String, patient: bool) {
        let (ty, role) = if patient {
            (coding(ENTITY_TYPE, "1", Some("Person")), coding(OBJECT_ROLE, "1", Some("Patient")))
        } else {
            (coding(ENTITY_TYPE, "2", Some("System Object")), coding(OBJECT_ROLE, "4", Some("Domain Resource")))
        };
        match self.index.get(&key) {
            // A versioned reference (what came back) replaces the bare one (what was asked).
            Some(&i) if reference != key => self.list[i]["what"]["reference"] = json!(reference),
            Some(_) => {}
            None => {
                self.index.insert(key, self.list.len());
                self.list.push(json!({ "what": { "reference": reference }, "type": ty, "role": role }));
            }
        }
    }

    fn patient(&mut self, id: &str) {
        let id = id.strip_prefix("Patient/").unwrap_or(id);
        let key = format!("Patient/{id}");
        self.add(key.clone(), key, true);
    }

    fn resource(&mut self, rtype: &str, id: &str, version: Option<&str>) {
        let key = format!("{rtype}/{id}");
        let reference = match version {
            Some(v) => format!("{key}/_history/{v}"),
            None => key.clone(),
        };
        self.add(key, reference, rtype == "Patient");
    }
}

/// Characters kept as they are in a logged query (RFC 3986 unreserved).
const QUERY_KEEP: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The AuditEvent of one call: its intent (when in range) and outcome (when written).
pub fn call_event(origin: &str, intent: Option<(u64, &IntentRecord)>, outcome: Option<(u64, &OutcomeRecord)>) -> Option<Value> {
    let (agent, user, jti) = match (intent, outcome) {
        (Some((_, i)), _) => (i.agent.as_str(), i.user.as_str(), i.jti.as_str()),
        (None, Some((_, o))) => (o.agent.as_str(), o.user.as_str(), o.jti.as_str()),
        (None, None) => return None,
    };
    let id_seq = intent.map(|(s, _)| s).or_else(|| outcome.map(|(_, o)| o.intent_seq)).unwrap_or_default();
    let tool = intent.map(|(_, i)| i.tool.as_str());
    let args = intent.and_then(|(_, i)| call_args(i)).unwrap_or_default();

    let mut subtype = Vec::new();
    let action = match tool {
        Some("fhir.read") => {
            subtype.push(coding(RESTFUL, "read", Some("read")));
            "R"
        }
        Some("fhir.search") => {
            subtype.push(coding(RESTFUL, "search-type", Some("search-type")));
            "E"
        }
        Some("encounter.bundle") => {
            subtype.push(coding(RESTFUL, "read", Some("read")));
            subtype.push(coding(RESTFUL, "search-type", Some("search-type")));
            "E"
        }
        _ => "E",
    };
    if let Some(t) = tool.filter(|t| is_code(t)) {
        subtype.push(coding(TOOL_SYSTEM, t, None));
    }

    let (outcome_code, desc) = match outcome {
        None => ("12", "no outcome recorded: the call did not complete".to_owned()),
        Some((_, o)) => {
            let code = match o.decision {
                Decision::Allowed => "0",
                Decision::Denied => "4",
                Decision::Failed => "8",
            };
            let mut d = o.decision.as_str().to_owned();
            if let Some(c) = &o.code {
                d.push_str(": ");
                d.push_str(c);
            }
            if let Some(r) = &o.reason {
                d.push_str(" (");
                d.push_str(r);
                d.push(')');
            }
            (code, d)
        }
    };
    let purpose_of_use = intent.map(|(_, i)| purpose(&i.purpose));
    let mut user_agent = json!({
        "type": { "coding": [coding(PARTICIPATION, "IRCP", Some("information recipient"))] },
        "who": { "identifier": { "system": USER_SYSTEM, "value": user }, "display": user },
        "requestor": true,
    });
    if let Some(p) = &purpose_of_use {
        user_agent["purposeOfUse"] = json!([p]);
    }
    let agents = json!([
        user_agent,
        {
            "type": { "coding": [coding(DCM, "110153", Some("Source Role ID"))] },
            "who": { "identifier": { "system": AGENT_SYSTEM, "value": agent }, "display": agent },
            "requestor": false,
        },
        {
            "type": { "coding": [coding(DCM, "110152", Some("Destination Role ID"))] },
            "who": gateway_who(origin),
            "requestor": false,
            "network": { "address": origin, "type": "5" },
        },
    ]);

    let mut entities = Entities::default();
    // What was asked for, even when refused: a denial must still show what it was about.
    match (tool, str_arg(&args, "type"), str_arg(&args, "id"), str_arg(&args, "encounter")) {
        (Some("fhir.read"), Some(t), Some(id), _) => entities.resource(t, id, None),
        (Some("encounter.bundle"), _, _, Some(e)) => entities.resource("Encounter", e, None),
        _ => {}
    }
    if let Some((_, o)) = outcome {
        for p in &o.patients {
            entities.patient(p);
        }
        for r in &o.resources {
            entities.resource(&r.resource_type, &r.id, r.version.as_deref());
        }
    }
    let mut list = entities.list;
    if tool == Some("fhir.search")
        && let Some(t) = str_arg(&args, "type")
    {
        let mut q = format!("{t}?");
        if let Some(Value::Array(params)) = args.get("params") {
            let pairs: Vec<String> = params
                .iter()
                .filter_map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(n), Value::String(v)]) => Some(format!("{}={}", utf8_percent_encode(n, QUERY_KEEP), utf8_percent_encode(v, QUERY_KEEP))),
                    _ => None,
                })
                .collect();
            q.push_str(&pairs.join("&"));
        }
        list.push(json!({
            "type": coding(ENTITY_TYPE, "2", Some("System Object")),
            "role": coding(OBJECT_ROLE, "24", Some("Query")),
            "query": STANDARD.encode(q.as_bytes()),
        }));
    }
    let mut details = Vec::new();
    let mut detail = |t: &str, v: String| details.push(json!({ "type": t, "valueString": v }));
    if let Some((s, i)) = intent {
        detail("intent_seq", s.to_string());
        detail("call_hash", i.call_hash.clone());
        detail("channel", i.channel.clone());
    }
    if let Some((s, o)) = outcome {
        detail("outcome_seq", s.to_string());
        detail("result_hash", o.result_hash.clone());
        detail("latency_ms", o.latency_ms.to_string());
        for u in &o.upstream {
            detail("upstream", format!("{} {} {}", u.method, u.path, u.status));
        }
    }
    if let Some(c) = outcome.and_then(|(_, o)| o.connection.as_deref()).or_else(|| intent.and_then(|(_, i)| i.connection.as_deref())) {
        detail("connection", c.to_owned());
    }
    let mut transaction = json!({
        "what": { "identifier": { "system": JTI_SYSTEM, "value": jti } },
        "type": coding(BALP_ENTITY, "XrequestId", None),
    });
    if !details.is_empty() {
        transaction["detail"] = Value::Array(details);
    }
    list.push(transaction);

    let start = intent.map(|(_, i)| i.time_ms);
    let end = outcome.map(|(_, o)| o.time_ms);
    let recorded = end.or(start).unwrap_or_default();
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "id": format!("medicodax-{id_seq}"),
        "type": coding(AUDIT_EVENT_TYPE, "rest", Some("Restful Operation")),
        "action": action,
        "recorded": instant(recorded),
        "outcome": outcome_code,
        "outcomeDesc": desc,
        "agent": agents,
        "source": source(origin),
        "entity": list,
    });
    if !subtype.is_empty() {
        ev["subtype"] = Value::Array(subtype);
    }
    let mut period = Map::new();
    if let Some(s) = start {
        period.insert("start".into(), json!(instant(s)));
    }
    if let Some(e) = end {
        period.insert("end".into(), json!(instant(e)));
    }
    ev["period"] = Value::Object(period);
    if let Some(p) = purpose_of_use {
        ev["purposeOfEvent"] = json!([p]);
    }
    Some(ev)
}

/// The outcome code of a system event: `4` for names that report a failure
/// (`*.failed`, `*.error`, or containing `invalid`), `0` otherwise.
fn event_outcome(name: &str) -> &'static str {
    if name.ends_with(".failed") || name.ends_with(".error") || name.contains("invalid") { "4" } else { "0" }
}

/// The AuditEvent of a system event: DICOM Application Activity (`110100`) with
/// Application Start/Stop (`110120`/`110121`) for `gateway.start`/`gateway.stop`, and
/// Security Alert (`110113`) for everything else (key rotation, token-endpoint failures).
pub fn system_event(origin: &str, seq: u64, e: &SystemEvent) -> Value {
    let (ty, mut subtype) = match e.event.as_str() {
        "gateway.start" => (coding(DCM, "110100", Some("Application Activity")), vec![coding(DCM, "110120", Some("Application Start"))]),
        "gateway.stop" => (coding(DCM, "110100", Some("Application Activity")), vec![coding(DCM, "110121", Some("Application Stop"))]),
        _ => (coding(DCM, "110113", Some("Security Alert")), Vec::new()),
    };
    if is_code(&e.event) {
        subtype.push(coding(EVENT_SYSTEM, &e.event, None));
    }
    let mut entity = json!({
        "type": coding(ENTITY_TYPE, "2", Some("System Object")),
        "detail": [{ "type": "seq", "valueString": seq.to_string() }],
    });
    if !e.subject.trim().is_empty() {
        entity["what"] = json!({ "identifier": { "system": SUBJECT_SYSTEM, "value": e.subject.trim() } });
    }
    if !e.detail.is_null()
        && let Some(d) = entity["detail"].as_array_mut()
    {
        d.push(json!({ "type": "detail", "valueString": e.detail.to_string() }));
    }
    json!({
        "resourceType": "AuditEvent",
        "id": format!("medicodax-{seq}"),
        "type": ty,
        "subtype": subtype,
        "action": "E",
        "recorded": instant(e.time_ms),
        "outcome": event_outcome(&e.event),
        "agent": [{
            "type": { "coding": [coding(DCM, "110150", Some("Application"))] },
            "who": gateway_who(origin),
            "requestor": false,
        }],
        "source": source(origin),
        "entity": [entity],
    })
}

/// Turns entries (in seq order) into AuditEvents: a call's event is emitted when its
/// outcome is seen, calls still open at the end follow, in intent order.
pub struct EventBuilder {
    origin: String,
    open: BTreeMap<u64, IntentRecord>,
    summary: ExportSummary,
}

impl EventBuilder {
    /// A builder naming `origin` as the gateway.
    pub fn new(origin: impl Into<String>) -> Self {
        EventBuilder { origin: origin.into(), open: BTreeMap::new(), summary: ExportSummary::default() }
    }

    /// Feeds one entry; returns the event it completes, if any.
    pub fn push(&mut self, entry: LogEntry) -> Option<Value> {
        match entry.record {
            AuditRecord::Intent(i) => {
                self.open.insert(entry.seq, i);
                None
            }
            AuditRecord::Outcome(o) => {
                let intent = self.open.remove(&o.intent_seq).filter(|i| i.jti == o.jti && i.agent == o.agent);
                let ev = call_event(&self.origin, intent.as_ref().map(|i| (o.intent_seq, i)), Some((entry.seq, &o)));
                if ev.is_some() {
                    self.summary.calls += 1;
                    self.summary.events += 1;
                }
                ev
            }
            AuditRecord::Event(e) => {
                self.summary.system_events += 1;
                self.summary.events += 1;
                Some(system_event(&self.origin, entry.seq, &e))
            }
        }
    }

    /// The events of calls that never got an outcome, and the summary.
    pub fn finish(mut self) -> (Vec<Value>, ExportSummary) {
        let open = std::mem::take(&mut self.open);
        let mut out = Vec::with_capacity(open.len());
        for (seq, i) in &open {
            if let Some(ev) = call_event(&self.origin, Some((*seq, i)), None) {
                self.summary.calls += 1;
                self.summary.calls_without_outcome += 1;
                self.summary.events += 1;
                out.push(ev);
            }
        }
        (out, self.summary)
    }
}

/// All the AuditEvents of `entries` (in seq order).
pub fn audit_events(origin: &str, entries: impl IntoIterator<Item = LogEntry>) -> Vec<Value> {
    let mut b = EventBuilder::new(origin);
    let mut out: Vec<Value> = entries.into_iter().filter_map(|e| b.push(e)).collect();
    out.extend(b.finish().0);
    out
}

struct Sink<'w, W: Write> {
    out: &'w mut W,
    format: ExportFormat,
    first: bool,
}

impl<W: Write> Sink<'_, W> {
    fn write(&mut self, ev: &Value) -> Result<(), AuditError> {
        match self.format {
            ExportFormat::Ndjson => {
                serde_json::to_writer(&mut *self.out, ev).map_err(std::io::Error::from)?;
                self.out.write_all(b"\n")?;
            }
            ExportFormat::Bundle => {
                if !self.first {
                    self.out.write_all(b",")?;
                }
                self.out.write_all(b"{\"resource\":")?;
                serde_json::to_writer(&mut *self.out, ev).map_err(std::io::Error::from)?;
                self.out.write_all(b"}")?;
            }
        }
        self.first = false;
        Ok(())
    }
}

/// Writes the log (or `options`' range of it) as AuditEvents to `out`, streaming: memory
/// holds only the calls whose outcome has not been read yet. Rows that cannot be decoded
/// are left out and counted.
pub async fn export_fhir<W: Write + Send>(db: &Db, options: &ExportOptions, out: &mut W) -> Result<ExportSummary, AuditError> {
    let mut builder = EventBuilder::new(options.origin.clone());
    let mut skipped = 0u64;
    if options.format == ExportFormat::Bundle {
        out.write_all(b"{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[")?;
    }
    let mut sink = Sink { out, format: options.format, first: true };
    let mut after = options.from_seq.checked_sub(1).map(|a| crate::error::to_i64("seq", a)).transpose()?;
    'pages: loop {
        let page = db.raw_entries(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        let n = page.len();
        for row in page {
            if options.to_seq.is_some_and(|to| u64::try_from(row.seq).is_ok_and(|s| s >= to)) {
                break 'pages;
            }
            match row.decode() {
                Ok(entry) if u64::try_from(row.seq).ok() == Some(entry.seq) => {
                    if let Some(ev) = builder.push(entry) {
                        sink.write(&ev)?;
                    }
                }
                _ => skipped += 1,
            }
        }
        if n < 1000 {
            break;
        }
    }
    let (rest, mut summary) = builder.finish();
    for ev in &rest {
        sink.write(ev)?;
    }
    if options.format == ExportFormat::Bundle {
        sink.out.write_all(b"]}\n")?;
    }
    sink.out.flush()?;
    summary.skipped_rows = skipped;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_wire::audit::{ResourceRef, UpstreamRequest};

    fn jws_with_args(args: Value) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"iss": "a", "args": args})).unwrap());
        format!("e30.{payload}.c2ln")
    }

    fn intent(tool: &str, args: Value) -> IntentRecord {
        IntentRecord {
            time_ms: 1_767_225_600_000,
            agent: "coding-agent".into(),
            user: "coder".into(),
            jti: "j-1".into(),
            tool: tool.into(),
            purpose: "HOPERAT".into(),
            connection: Some("epic-sandbox".into()),
            call_hash: "aa".repeat(32),
            call_jws: jws_with_args(args),
            channel: "http".into(),
        }
    }

    fn outcome(decision: Decision, resources: Vec<ResourceRef>) -> OutcomeRecord {
        OutcomeRecord {
            time_ms: 1_767_225_600_250,
            agent: "coding-agent".into(),
            user: "coder".into(),
            jti: "j-1".into(),
            intent_seq: 4,
            decision,
            code: (decision != Decision::Allowed).then(|| "forbidden".into()),
            reason: None,
            connection: Some("epic-sandbox".into()),
            granted_scopes: vec![],
            upstream: vec![UpstreamRequest { method: "GET".into(), path: "Condition?patient=pt-1001".into(), status: 200 }],
            resources,
            patients: vec!["pt-1001".into()],
            warnings: vec![],
            result_hash: "bb".repeat(32),
            latency_ms: 250,
        }
    }

    #[test]
    fn instants_are_utc_with_milliseconds() {
        assert_eq!(instant(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn an_allowed_search_maps_to_balp_query() {
        let i = intent("fhir.search", json!({"connection":"epic-sandbox","type":"Condition","params":[["patient","pt-1001"],["code","a b"]]}));
        let o = outcome(Decision::Allowed, vec![ResourceRef { resource_type: "Condition".into(), id: "c1".into(), version: Some("2".into()) }]);
        let ev = call_event("http://127.0.0.1:8080", Some((4, &i)), Some((5, &o))).unwrap();
        assert_eq!(ev["id"], "medicodax-4");
        assert_eq!(ev["action"], "E");
        assert_eq!(ev["outcome"], "0");
        assert_eq!(ev["subtype"][0]["code"], "search-type");
        assert_eq!(ev["subtype"][1], json!({"system": "urn:medicodax:tool", "code": "fhir.search"}));
        assert_eq!(ev["recorded"], "2026-01-01T00:00:00.250Z");
        assert_eq!(ev["period"]["start"], "2026-01-01T00:00:00.000Z");
        assert_eq!(ev["agent"][0]["requestor"], true);
        assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], "coder");
        assert_eq!(ev["agent"][1]["who"]["identifier"]["value"], "coding-agent");
        assert_eq!(ev["agent"][1]["type"]["coding"][0]["code"], "110153");
        assert_eq!(ev["purposeOfEvent"][0]["coding"][0]["code"], "HOPERAT");
        let refs: Vec<&Value> = ev["entity"].as_array().unwrap().iter().map(|e| &e["what"]["reference"]).collect();
        assert_eq!(refs[..2], [&json!("Patient/pt-1001"), &json!("Condition/c1/_history/2")]);
        let query = ev["entity"].as_array().unwrap().iter().find(|e| e["role"]["code"] == "24").unwrap();
        let q = String::from_utf8(STANDARD.decode(query["query"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(q, "Condition?patient=pt-1001&code=a%20b");
        let tx = ev["entity"].as_array().unwrap().last().unwrap();
        assert_eq!(tx["type"]["code"], "XrequestId");
        assert_eq!(tx["what"]["identifier"]["value"], "j-1");
        assert!(tx["detail"].as_array().unwrap().contains(&json!({"type": "outcome_seq", "valueString": "5"})));
    }

    #[test]
    fn decisions_map_to_outcome_codes() {
        let i = intent("fhir.read", json!({"connection":"epic-sandbox","type":"Observation","id":"o-9"}));
        for (d, want) in [(Decision::Allowed, "0"), (Decision::Denied, "4"), (Decision::Failed, "8")] {
            let ev = call_event("o", Some((4, &i)), Some((5, &outcome(d, vec![])))).unwrap();
            assert_eq!(ev["outcome"], want, "{d:?}");
            assert_eq!(ev["action"], "R");
            // What was asked for is named even when nothing came back.
            assert!(ev["entity"].as_array().unwrap().iter().any(|e| e["what"]["reference"] == "Observation/o-9"));
        }
        let open = call_event("o", Some((4, &i)), None).unwrap();
        assert_eq!(open["outcome"], "12");
        assert_eq!(open["recorded"], "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_returned_version_replaces_the_requested_reference() {
        let i = intent("fhir.read", json!({"connection":"c","type":"Condition","id":"c1"}));
        let o = outcome(Decision::Allowed, vec![ResourceRef { resource_type: "Condition".into(), id: "c1".into(), version: Some("7".into()) }]);
        let ev = call_event("o", Some((4, &i)), Some((5, &o))).unwrap();
        let refs: Vec<String> = ev["entity"].as_array().unwrap().iter().filter_map(|e| e["what"]["reference"].as_str().map(str::to_owned)).collect();
        assert_eq!(refs, ["Condition/c1/_history/7", "Patient/pt-1001"]);
    }

    #[test]
    fn system_events_are_security_alerts_or_application_activity() {
        let e = SystemEvent { time_ms: 0, event: "token.invalid_client".into(), subject: "epic-prod".into(), detail: json!({"status": 400}) };
        let ev = system_event("o", 9, &e);
        assert_eq!((ev["type"]["code"].as_str(), ev["outcome"].as_str()), (Some("110113"), Some("4")));
        let s = system_event("o", 0, &SystemEvent { time_ms: 0, event: "gateway.start".into(), subject: "".into(), detail: Value::Null });
        assert_eq!((s["type"]["code"].as_str(), s["subtype"][0]["code"].as_str(), s["outcome"].as_str()), (Some("110100"), Some("110120"), Some("0")));
        assert!(s["entity"][0].get("what").is_none());
    }

    #[test]
    fn a_purpose_that_is_not_a_code_becomes_text() {
        assert_eq!(purpose("TREAT"), json!({"coding":[{"system": ACT_REASON, "code": "TREAT"}]}));
        assert_eq!(purpose(" two  spaces"), json!({"text": " two  spaces"}));
    }

    #[test]
    fn the_builder_merges_intent_and_outcome_and_closes_open_calls() {
        let i = intent("fhir.read", json!({"connection":"c","type":"Patient","id":"pt-1001"}));
        let mut o = outcome(Decision::Allowed, vec![]);
        o.intent_seq = 0;
        let mut i2 = i.clone();
        i2.jti = "j-2".into();
        let entries = vec![
            LogEntry { seq: 0, record: AuditRecord::Intent(i) },
            LogEntry { seq: 1, record: AuditRecord::Intent(i2) },
            LogEntry { seq: 2, record: AuditRecord::Outcome(o) },
        ];
        let evs = audit_events("o", entries);
        assert_eq!(evs.len(), 2);
        assert_eq!((evs[0]["id"].as_str(), evs[0]["outcome"].as_str()), (Some("medicodax-0"), Some("0")));
        assert_eq!((evs[1]["id"].as_str(), evs[1]["outcome"].as_str()), (Some("medicodax-1"), Some("12")));
    }
}
