//! Audit (`/audit`, `/audit/entries/{seq}`, admin and auditor): the tamper-evident log.
//!
//! The log page lists entries newest first, filtered by agent, user, decision, tool,
//! connection, kind and a UTC date range, 50 to a page (keyset paging on `seq`). Agent,
//! user, kind and dates are narrowed in SQL on the indexed columns; tool, decision and
//! connection are read from the records themselves, scanning at most
//! [`MAX_SCAN`] entries per page, after which the page says where it stopped and links
//! on. Above the list: the chain and checkpoint verification
//! ([`medicodax_audit::verify`]), cached for a minute or run on demand, with the latest
//! verified checkpoint.
//!
//! One entry shows its record: for an intent, the call JWS kept verbatim, decoded (header
//! and claims, a submitted worksheet's body summarised rather than shown) and checked
//! again against the agent's registered keys; for an outcome, the decision and its
//! reason, the upstream requests, the resources and patients touched, and the receipt
//! claims the agent was given (`call_jti`, `call_hash`, `result_hash`, `decision`, `seq`,
//! `leaf_hash`), rebuilt from the log; for a system event, its name, subject and
//! detail. Auditors see audit metadata only: ids, hashes, decisions, never resource
//! bodies (the log holds none).

use super::{Dash, Nav, Page, PageError, PageResult, Viewer, fmt, form_pairs, form_value, render};
use crate::service::Gateway;
use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Redirect};
use bytes::Bytes;
use medicodax_audit::{CheckpointKeys, Finding, VerifyOptions, with_pool};
use medicodax_jose::jws::{Compact, HeaderRules};
use medicodax_wire::audit::{AuditRecord, IntentRecord, LogEntry, OutcomeRecord};
use serde_json::Value;
use sqlx::Row as _;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries per page.
pub const PAGE_SIZE: usize = 50;
/// The most entries read to fill one page.
pub const MAX_SCAN: usize = 2000;
/// Rows read per query.
const BATCH: i64 = 250;
/// How long a verification is reused.
const VERIFY_TTL_MS: i64 = 60_000;

/// The log page's filters, parsed from the query string. Values that do not parse are
/// dropped with a notice; nothing here fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Agent id.
    pub agent: String,
    /// User name.
    pub user: String,
    /// `allowed`, `denied`, `failed`.
    pub decision: String,
    /// Tool name.
    pub tool: String,
    /// Connection name.
    pub connection: String,
    /// `call` (intents and outcomes), `event`, or empty for both.
    pub kind: String,
    /// `YYYY-MM-DD`, inclusive.
    pub from: String,
    /// `YYYY-MM-DD`, inclusive.
    pub to: String,
    /// Show entries with a smaller seq only (paging).
    pub before: Option<i64>,
}

fn clean(v: Option<&str>) -> String {
    v.map(str::trim).filter(|v| v.len() <= 128 && v.chars().all(|c| !c.is_control())).unwrap_or("").to_owned()
}

impl AuditFilter {
    /// Parses a query string; returns the filter and notices about ignored values.
    pub fn parse(query: &str) -> (AuditFilter, Vec<String>) {
        let q = form_pairs(query.as_bytes());
        let mut notes = Vec::new();
        let mut f = AuditFilter {
            agent: clean(form_value(&q, "agent")),
            user: clean(form_value(&q, "user")),
            tool: clean(form_value(&q, "tool")),
            connection: clean(form_value(&q, "connection")),
            ..AuditFilter::default()
        };
        match form_value(&q, "decision").unwrap_or("") {
            "" => {}
            d @ ("allowed" | "denied" | "failed") => f.decision = d.to_owned(),
            _ => notes.push("the decision filter must be allowed, denied or failed; it was ignored".to_owned()),
        }
        match form_value(&q, "kind").unwrap_or("") {
            "" => {}
            k @ ("call" | "event") => f.kind = k.to_owned(),
            _ => notes.push("the kind filter must be call or event; it was ignored".to_owned()),
        }
        for (name, slot) in [("from", &mut f.from), ("to", &mut f.to)] {
            let v = form_value(&q, name).unwrap_or("").trim();
            if v.is_empty() {
                continue;
            }
            if fmt::parse_day(v).is_some() {
                *slot = v.to_owned();
            } else {
                notes.push(format!("the {name} date must be YYYY-MM-DD; it was ignored"));
            }
        }
        if let Some(b) = form_value(&q, "before").filter(|b| !b.is_empty()) {
            match b.parse::<i64>() {
                Ok(n) if n > 0 => f.before = Some(n),
                _ => notes.push("the page position was not a number; showing the newest entries".to_owned()),
            }
        }
        (f, notes)
    }

    /// The query string of this filter at another page position.
    pub fn query(&self, before: Option<i64>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("agent", &self.agent), ("user", &self.user), ("decision", &self.decision), ("tool", &self.tool), ("connection", &self.connection), ("kind", &self.kind), ("from", &self.from), ("to", &self.to)] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(b) = before {
            s.append_pair("before", &b.to_string());
        }
        s.finish()
    }

    fn start_ms(&self) -> Option<i64> {
        fmt::parse_day(&self.from)
    }

    fn end_ms(&self) -> Option<i64> {
        fmt::parse_day(&self.to).map(|d| d.saturating_add(86_400_000))
    }
}

/// One listed entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LogRow {
    /// Its seq.
    pub seq: i64,
    /// When.
    pub time: String,
    /// `intent`, `outcome`, `event`.
    pub kind: String,
    /// The agent.
    pub agent: String,
    /// The user.
    pub user: String,
    /// The tool.
    pub tool: String,
    /// The connection.
    pub connection: String,
    /// The decision (outcomes).
    pub decision: String,
    /// The problem code and reason (outcomes), or the event name and subject.
    pub detail: String,
}

/// One page of the log.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LogPage {
    /// The rows.
    pub rows: Vec<LogRow>,
    /// The `before` of the next (older) page, if there may be one.
    pub next_before: Option<i64>,
    /// Whether the scan limit stopped the search before the page filled.
    pub scan_limited: bool,
    /// Entries read.
    pub scanned: usize,
}

enum Bind {
    I(i64),
    S(String),
}

struct Raw {
    seq: i64,
    entry: Option<LogEntry>,
}

async fn read_batch(db: &medicodax_audit::Db, f: &AuditFilter, before: Option<i64>) -> Result<Vec<Raw>, sqlx::Error> {
    let mut sql = String::from("SELECT seq, canonical FROM audit_entries WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    let mut add = |clause: &str, b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        sql.push_str(&clause.replace('?', &format!("${}", binds.len())));
    };
    if let Some(b) = before {
        add(" AND seq < ?", Bind::I(b), &mut binds);
    }
    if !f.agent.is_empty() {
        add(" AND agent = ?", Bind::S(f.agent.clone()), &mut binds);
    }
    if !f.user.is_empty() {
        add(" AND acting_user = ?", Bind::S(f.user.clone()), &mut binds);
    }
    if let Some(from) = f.start_ms() {
        add(" AND time_ms >= ?", Bind::I(from), &mut binds);
    }
    if let Some(to) = f.end_ms() {
        add(" AND time_ms < ?", Bind::I(to), &mut binds);
    }
    if !f.decision.is_empty() {
        sql.push_str(" AND kind = 'outcome'");
    } else if f.kind == "call" || !f.tool.is_empty() {
        sql.push_str(" AND kind IN ('intent', 'outcome')");
    } else if f.kind == "event" {
        sql.push_str(" AND kind = 'event'");
    }
    binds.push(Bind::I(BATCH));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", binds.len()));
    with_pool!(db, pool => {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::I(i) => q.bind(i),
                Bind::S(s) => q.bind(s),
            };
        }
        let rows = q.fetch_all(pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let canonical: Vec<u8> = r.try_get("canonical")?;
            out.push(Raw { seq: r.try_get("seq")?, entry: serde_json::from_slice(&canonical).ok() });
        }
        Ok(out)
    })
}

async fn intents_by_seq(db: &medicodax_audit::Db, seqs: &[u64]) -> Result<HashMap<u64, IntentRecord>, sqlx::Error> {
    let mut out = HashMap::new();
    for chunk in seqs.chunks(200) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT canonical FROM audit_entries WHERE kind = 'intent' AND seq IN ({})", params.join(", "));
        let rows: Vec<Vec<u8>> = with_pool!(db, pool => {
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()));
            for s in chunk {
                q = q.bind(i64::try_from(*s).unwrap_or(i64::MAX));
            }
            q.fetch_all(pool).await
        })?;
        for c in rows {
            if let Ok(LogEntry { seq, record: AuditRecord::Intent(i) }) = serde_json::from_slice(&c) {
                out.insert(seq, i);
            }
        }
    }
    Ok(out)
}

fn matches(f: &AuditFilter, e: &LogEntry, intents: &HashMap<u64, IntentRecord>) -> bool {
    match &e.record {
        AuditRecord::Intent(i) => f.decision.is_empty() && (f.tool.is_empty() || i.tool == f.tool) && (f.connection.is_empty() || i.connection.as_deref() == Some(f.connection.as_str())),
        AuditRecord::Outcome(o) => {
            (f.decision.is_empty() || o.decision.as_str() == f.decision)
                && (f.tool.is_empty() || intents.get(&o.intent_seq).is_some_and(|i| i.tool == f.tool))
                && (f.connection.is_empty() || o.connection.as_deref() == Some(f.connection.as_str()))
        }
        AuditRecord::Event(ev) => f.decision.is_empty() && f.tool.is_empty() && (f.connection.is_empty() || ev.subject == f.connection),
    }
}

fn row(e: &LogEntry, intents: &HashMap<u64, IntentRecord>) -> LogRow {
    let seq = i64::try_from(e.seq).unwrap_or(i64::MAX);
    match &e.record {
        AuditRecord::Intent(i) => LogRow {
            seq,
            time: fmt::time_ms(i.time_ms),
            kind: "intent".into(),
            agent: i.agent.clone(),
            user: i.user.clone(),
            tool: i.tool.clone(),
            connection: i.connection.clone().unwrap_or_default(),
            decision: String::new(),
            detail: format!("purpose {} via {}", i.purpose, i.channel),
        },
        AuditRecord::Outcome(o) => LogRow {
            seq,
            time: fmt::time_ms(o.time_ms),
            kind: "outcome".into(),
            agent: o.agent.clone(),
            user: o.user.clone(),
            tool: intents.get(&o.intent_seq).map(|i| i.tool.clone()).unwrap_or_default(),
            connection: o.connection.clone().unwrap_or_default(),
            decision: o.decision.as_str().to_owned(),
            detail: [o.code.clone(), o.reason.clone()].into_iter().flatten().collect::<Vec<_>>().join(": "),
        },
        AuditRecord::Event(ev) => LogRow { seq, time: fmt::time_ms(ev.time_ms), kind: "event".into(), detail: format!("{} — {}", ev.event, ev.subject), ..LogRow::default() },
    }
}

/// Reads one page of the log under `f` (see the module documentation).
pub async fn query(gw: &Gateway, f: &AuditFilter) -> Result<LogPage, sqlx::Error> {
    let db = gw.audit.db();
    let mut page = LogPage::default();
    let mut before = f.before;
    loop {
        let batch = read_batch(db, f, before).await?;
        let full = batch.len() as i64 == BATCH;
        let outcome_intents: Vec<u64> = batch.iter().filter_map(|r| match &r.entry {
            Some(LogEntry { record: AuditRecord::Outcome(o), .. }) => Some(o.intent_seq),
            _ => None,
        }).collect();
        let intents = intents_by_seq(db, &outcome_intents).await?;
        for r in &batch {
            page.scanned += 1;
            before = Some(r.seq);
            let Some(e) = &r.entry else {
                // An entry that does not decode is shown as such (verification names it).
                if *f == (AuditFilter { before: f.before, ..AuditFilter::default() }) {
                    page.rows.push(LogRow { seq: r.seq, kind: "unreadable".into(), detail: "this entry does not decode; see the verification above".into(), ..LogRow::default() });
                }
                continue;
            };
            if matches(f, e, &intents) {
                page.rows.push(row(e, &intents));
                if page.rows.len() == PAGE_SIZE {
                    page.next_before = Some(r.seq);
                    return Ok(page);
                }
            }
        }
        if !full {
            return Ok(page);
        }
        if page.scanned >= MAX_SCAN {
            page.scan_limited = true;
            page.next_before = before;
            return Ok(page);
        }
    }
}

/// A verification result, for display.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyView {
    /// No findings.
    pub ok: bool,
    /// Entries.
    pub size: u64,
    /// The rebuilt root.
    pub root: String,
    /// Checkpoints examined.
    pub checkpoints_checked: u64,
    /// The latest verified checkpoint: size, time, root.
    pub latest: Option<(u64, String, String)>,
    /// Entries after it.
    pub unsigned_tail: u64,
    /// Intents without an outcome.
    pub open_intents: u64,
    /// The first findings, as JSON.
    pub findings: Vec<String>,
    /// All findings.
    pub findings_total: u64,
    /// When it ran (Unix ms).
    pub checked_at_ms: i64,
    /// When it ran.
    pub checked_at: String,
    /// Set when verification could not run.
    pub error: Option<String>,
}

/// The cached verification (one at a time; reused for a minute).
#[derive(Debug, Default)]
pub struct VerifyCache {
    inner: tokio::sync::Mutex<Option<Arc<VerifyView>>>,
}

/// Runs [`medicodax_audit::verify`] against the gateway's keys and origin.
pub async fn run_verify(gw: &Gateway) -> VerifyView {
    let now = gw.clock.now_unix_millis();
    let keys = CheckpointKeys::new(gw.keys.verifying_keys());
    let options = VerifyOptions { origin: Some(gw.audit.origin().to_owned()), external_checkpoint: None };
    match medicodax_audit::verify(gw.audit.db(), &keys, &options).await {
        Ok(r) => VerifyView {
            ok: r.ok,
            size: r.size,
            root: r.root,
            checkpoints_checked: r.checkpoints_checked,
            latest: r.latest_checkpoint.map(|c| (c.size, fmt::time_s(c.time), c.root)),
            unsigned_tail: r.unsigned_tail,
            open_intents: r.open_intents,
            findings: r.findings.iter().take(20).map(|f: &Finding| serde_json::to_string(f).unwrap_or_default()).collect(),
            findings_total: r.findings.len() as u64 + r.findings_dropped,
            checked_at_ms: now,
            checked_at: fmt::time_ms(now),
            error: None,
        },
        Err(e) => {
            tracing::error!(error = %e, "audit verification could not run");
            VerifyView {
                ok: false,
                size: 0,
                root: String::new(),
                checkpoints_checked: 0,
                latest: None,
                unsigned_tail: 0,
                open_intents: 0,
                findings: Vec::new(),
                findings_total: 0,
                checked_at_ms: now,
                checked_at: fmt::time_ms(now),
                error: Some("the audit store could not be read".into()),
            }
        }
    }
}

impl VerifyCache {
    /// The cached result if younger than a minute (and not `force`), else a new one.
    pub async fn get(&self, gw: &Gateway, force: bool) -> Arc<VerifyView> {
        let mut slot = self.inner.lock().await;
        let now = gw.clock.now_unix_millis();
        if !force && let Some(v) = slot.as_ref().filter(|v| now.saturating_sub(v.checked_at_ms) < VERIFY_TTL_MS) {
            return Arc::clone(v);
        }
        let v = Arc::new(run_verify(gw).await);
        *slot = Some(Arc::clone(&v));
        v
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    filter: AuditFilter,
    notes: Vec<String>,
    page: LogPage,
    verify: Arc<VerifyView>,
    next_query: String,
    first_query: String,
}

/// `GET /audit`.
pub async fn page(state: Dash, viewer: Viewer, RawQuery(q): RawQuery) -> PageResult {
    viewer.require(Page::Audit)?;
    let (filter, notes) = AuditFilter::parse(&q.unwrap_or_default());
    let page = query(&state.gw, &filter).await.map_err(|e| PageError::internal("audit log", &e))?;
    let verify = state.verification.get(&state.gw, false).await;
    let next_query = page.next_before.map(|b| filter.query(Some(b))).unwrap_or_default();
    let first_query = filter.query(None);
    Ok(render(&AuditPage { nav: viewer.nav(Page::Audit), filter, notes, page, verify, next_query, first_query }))
}

/// `POST /audit/verify`: verifies now (CSRF-checked), then shows the log page.
pub async fn verify_now(state: Dash, viewer: Viewer, body: Bytes) -> PageResult {
    viewer.require(Page::Audit)?;
    viewer.check_csrf(form_value(&form_pairs(&body), "csrf"))?;
    state.verification.get(&state.gw, true).await;
    Ok(Redirect::to("/audit").into_response())
}

/// A decoded call JWS.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DecodedCall {
    /// The header, pretty JSON.
    pub header: String,
    /// The claims, pretty JSON (a worksheet body summarised).
    pub claims: String,
    /// Whether and how the signature verifies now.
    pub signature: String,
    /// Whether it verified.
    pub verified: bool,
}

/// Decodes a call JWS from the log and checks it against the agent's registered keys.
pub async fn decode_call(gw: &Gateway, agent: &str, jws: &str) -> DecodedCall {
    let rules = HeaderRules { allowed: &["typ", "kid"], typ: None, require_kid: false };
    let c = match Compact::parse(jws, rules) {
        Ok(c) => c,
        Err(e) => return DecodedCall { signature: format!("the stored call is not a compact JWS: {e}"), ..DecodedCall::default() },
    };
    let header = serde_json::to_string_pretty(&c.header).unwrap_or_default();
    let claims = match c.payload_object() {
        Ok(mut m) => {
            if let Some(Value::Object(args)) = m.get_mut("args")
                && let Some(ws) = args.get_mut("worksheet")
            {
                let n = serde_json::to_vec(ws).map(|b| b.len()).unwrap_or(0);
                *ws = Value::String(format!("(a worksheet of {n} bytes: open it under Worksheets)"));
            }
            serde_json::to_string_pretty(&m).unwrap_or_default()
        }
        Err(e) => format!("(the payload is not a JSON object: {e})"),
    };
    let (signature, verified) = match (gw.verifier.agent_keys(agent), c.alg_in(crate::calls::CALL_ALGS)) {
        (None, _) => ("the agent is no longer registered; its key is not known to this gateway".to_owned(), false),
        (_, Err(e)) => (format!("does not verify: {e}"), false),
        (Some(keys), Ok(alg)) => match keys.lookup(c.kid(), alg).await {
            Err(e) => (format!("cannot be checked now: {e}"), false),
            Ok(key) => match c.verify(&key, crate::calls::CALL_ALGS) {
                Ok(a) => (format!("verifies ({a}) with the agent's registered key {}", key.kid().unwrap_or("(no kid)")), true),
                Err(e) => (format!("does not verify: {e}"), false),
            },
        },
    };
    DecodedCall { header, claims, signature, verified }
}

/// Receipt claims rebuilt from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptView {
    /// The receipt claims as pretty JSON.
    pub json: String,
}

/// The receipt claims the agent was given for `outcome` (at `seq`, with `leaf_hash`).
pub fn receipt_claims(gw: &Gateway, outcome: &OutcomeRecord, intent: Option<&IntentRecord>, seq: u64, leaf_hash: &str) -> Value {
    serde_json::json!({
        "iss": gw.audience(),
        "call_jti": outcome.jti,
        "call_hash": intent.map(|i| i.call_hash.as_str()).unwrap_or("(intent not found)"),
        "result_hash": outcome.result_hash,
        "decision": outcome.decision.as_str(),
        "seq": seq,
        "leaf_hash": leaf_hash,
    })
}

#[derive(Template)]
#[template(path = "audit_entry.html")]
struct EntryPage {
    nav: Nav,
    seq: u64,
    leaf_hash: String,
    kind: String,
    time: String,
    intent: Option<IntentRecord>,
    outcome: Option<OutcomeRecord>,
    event_name: String,
    event_subject: String,
    event_detail: String,
    call: Option<DecodedCall>,
    receipt: String,
    intent_seq: Option<u64>,
    outcome_seq: Option<i64>,
}

async fn outcome_seq_of(gw: &Gateway, agent: &str, jti: &str) -> Result<Option<i64>, sqlx::Error> {
    with_pool!(gw.audit.db(), pool => {
        sqlx::query_scalar("SELECT seq FROM audit_entries WHERE agent = $1 AND jti = $2 AND kind = 'outcome' ORDER BY seq LIMIT 1")
            .bind(agent).bind(jti).fetch_optional(pool).await
    })
}

/// `GET /audit/entries/{seq}`.
pub async fn entry_page(state: Dash, viewer: Viewer, Path(seq): Path<String>) -> PageResult {
    viewer.require(Page::Audit)?;
    let seq: u64 = seq.parse().ok().filter(|s| *s <= medicodax_audit::entry::MAX_SEQ).ok_or_else(|| PageError::NotFound("no such entry".into()))?;
    let gw = &state.gw;
    let entry = gw.audit.db().entry(seq).await.map_err(|e| PageError::internal("audit entry", &e))?.ok_or_else(|| PageError::NotFound("no such entry".into()))?;
    let mut page = EntryPage {
        nav: viewer.nav(Page::Audit),
        seq,
        leaf_hash: entry.leaf_hash.clone(),
        kind: String::new(),
        time: String::new(),
        intent: None,
        outcome: None,
        event_name: String::new(),
        event_subject: String::new(),
        event_detail: String::new(),
        call: None,
        receipt: String::new(),
        intent_seq: None,
        outcome_seq: None,
    };
    match entry.entry.record {
        AuditRecord::Intent(i) => {
            page.kind = "intent".into();
            page.time = fmt::time_ms(i.time_ms);
            page.call = Some(decode_call(gw, &i.agent, &i.call_jws).await);
            page.outcome_seq = outcome_seq_of(gw, &i.agent, &i.jti).await.map_err(|e| PageError::internal("audit entry", &e))?;
            page.intent = Some(i);
        }
        AuditRecord::Outcome(o) => {
            page.kind = "outcome".into();
            page.time = fmt::time_ms(o.time_ms);
            let intent = match gw.audit.db().entry(o.intent_seq).await.map_err(|e| PageError::internal("audit entry", &e))? {
                Some(medicodax_audit::TailEntry { entry: LogEntry { record: AuditRecord::Intent(i), .. }, .. }) => Some(i),
                _ => None,
            };
            page.receipt = serde_json::to_string_pretty(&receipt_claims(gw, &o, intent.as_ref(), seq, &entry.leaf_hash)).unwrap_or_default();
            page.intent_seq = Some(o.intent_seq);
            page.outcome = Some(o);
        }
        AuditRecord::Event(ev) => {
            page.kind = "event".into();
            page.time = fmt::time_ms(ev.time_ms);
            page.event_name = ev.event;
            page.event_subject = ev.subject;
            page.event_detail = serde_json::to_string_pretty(&ev.detail).unwrap_or_default();
        }
    }
    Ok(render(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_leniently_and_round_trip() {
        let (f, notes) = AuditFilter::parse("agent=coding-agent&decision=denied&from=2026-01-01&to=2026-01-31&tool=fhir.read&before=120&x=1");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((f.agent.as_str(), f.decision.as_str(), f.tool.as_str(), f.before), ("coding-agent", "denied", "fhir.read", Some(120)));
        assert_eq!(f.start_ms(), Some(1_767_225_600_000));
        assert_eq!(f.end_ms(), Some(1_767_225_600_000 + 31 * 86_400_000));
        let (g, _) = AuditFilter::parse(&f.query(Some(120)));
        assert_eq!(g, f);
        let (f, notes) = AuditFilter::parse("decision=maybe&from=yesterday&before=-3&kind=all&agent=%ZZ&user=%00x");
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert_eq!(f.decision, "");
        assert_eq!(f.before, None);
        assert_eq!(f.user, "", "control characters are dropped");
        let (f, _) = AuditFilter::parse(&"a".repeat(100_000));
        assert_eq!(f, AuditFilter::default());
    }
}
