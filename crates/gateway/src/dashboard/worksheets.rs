//! Worksheets (`/worksheets`, admin and coder): the coding worksheets agents handed in
//! with `worksheet.submit`, and their review.
//!
//! The list shows each worksheet's encounter, class, agent, when it was coded, how many
//! diagnoses and flags it has, and its review state. One worksheet shows its diagnoses
//! (each suggested ICD-10-CM code with its source, confidence and evidence: the FHIR
//! resource and the note lines), procedures with their recorded codes, the suggested
//! principal diagnosis and the flags; a pending one has a review form: **Accept**, or
//! **Save edits** after changing or removing codes (or adding some).
//!
//! Review time runs from when the coder opened the worksheet to the decision. The
//! opening time is carried in a *review ticket*: a JWS signed by the gateway key (`typ`
//! [`TICKET_TYP`]) naming the worksheet, the user, the session and the time the page
//! was rendered, so it cannot be set by the client. The review, reviewer and time are
//! stored atomically (the first review wins) and audited as `worksheet.reviewed`
//! (codes are kept in the store, not in the audit record). Worksheets are agent input:
//! the body is read leniently and every value is escaped by the templates.

use super::{Dash, Nav, Page, PageError, PageResult, Viewer, audit_event, fmt, form_pairs, form_value, render};
use crate::worksheets::{FinalCode, Review, ReviewResult, ReviewStatus, StoredWorksheet};
use askama::Template;
use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Redirect};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JOSE `typ` of a review ticket.
pub const TICKET_TYP: &str = "medicodax-review+jwt";

/// How many worksheets the list shows.
const LIST_LIMIT: i64 = 500;

/// The signed record of when a user opened a worksheet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewTicket {
    /// The user.
    pub sub: String,
    /// The session (`jti`) it was issued in.
    pub sid: String,
    /// The connection.
    pub connection: String,
    /// The encounter.
    pub encounter: String,
    /// When the page was rendered (Unix ms).
    pub opened_ms: i64,
    /// Not valid after (Unix seconds): the session's expiry.
    pub exp: i64,
}

/// One suggested code.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SuggestionView {
    /// The code.
    pub code: String,
    /// Its title.
    pub title: String,
    /// `0.92`.
    pub confidence: String,
    /// `high`, `medium`, `low`.
    pub band: String,
    /// `record`, `crosswalk`, `text`.
    pub source: String,
    /// Other sources that gave it.
    pub also_from: String,
    /// Billable.
    pub billable: bool,
    /// In the code set.
    pub in_code_set: bool,
    /// `Condition/…`.
    pub evidence: String,
    /// Supporting note lines: `document:line — text`.
    pub note_lines: Vec<String>,
    /// The crosswalk note or the matched words.
    pub detail: String,
}

/// One diagnosis.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DiagnosisView {
    /// Position in the worksheet (form field suffix).
    pub index: usize,
    /// The Condition id.
    pub condition_id: String,
    /// Its display.
    pub display: String,
    /// Its SNOMED CT code.
    pub snomed: String,
    /// Its category.
    pub category: String,
    /// A note mentions it.
    pub documented: bool,
    /// Suggestions, best first.
    pub suggestions: Vec<SuggestionView>,
    /// The top suggestion's code (the default of the edit field).
    pub top_code: String,
}

/// One procedure.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ProcedureView {
    /// The Procedure id.
    pub procedure_id: String,
    /// Its display.
    pub display: String,
    /// Its recorded codes.
    pub codes: String,
    /// Its status.
    pub status: String,
    /// When performed.
    pub performed: String,
}

/// One flag.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FlagView {
    /// What it is about.
    pub kind: String,
    /// The resource concerned.
    pub resource: String,
    /// The code concerned.
    pub code: String,
    /// The sentence for the coder.
    pub message: String,
}

/// A worksheet body, read leniently (any agent may submit any JSON object).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WorksheetView {
    /// The encounter type.
    pub encounter_type: String,
    /// The encounter period.
    pub period: String,
    /// Diagnoses.
    pub diagnoses: Vec<DiagnosisView>,
    /// Procedures.
    pub procedures: Vec<ProcedureView>,
    /// The principal diagnosis: `code title (Condition/id)`.
    pub principal: String,
    /// Why it was chosen.
    pub principal_reasons: Vec<String>,
    /// Flags.
    pub flags: Vec<FlagView>,
    /// The crosswalk used.
    pub crosswalk: String,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.chars().take(2000).collect(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.get(key).and_then(Value::as_array).into_iter().flatten().take(500)
}

fn suggestion(s: &Value) -> SuggestionView {
    let ev = s.get("evidence").cloned().unwrap_or(Value::Null);
    let note_lines = list(&ev, "note_lines").map(|l| format!("{}:{} — {}", text(l, "document"), text(l, "line"), text(l, "text"))).collect();
    SuggestionView {
        code: text(s, "code"),
        title: text(s, "title"),
        confidence: s.get("confidence").and_then(Value::as_f64).map(|c| format!("{c:.2}")).unwrap_or_default(),
        band: text(s, "band"),
        source: text(s, "source"),
        also_from: list(s, "also_from").filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        billable: s.get("billable").and_then(Value::as_bool).unwrap_or(false),
        in_code_set: s.get("in_code_set").and_then(Value::as_bool).unwrap_or(false),
        evidence: match (text(&ev, "resource_type"), text(&ev, "resource_id")) {
            (t, i) if !t.is_empty() || !i.is_empty() => format!("{t}/{i}"),
            _ => String::new(),
        },
        note_lines,
        detail: text(&ev, "detail"),
    }
}

/// Reads a worksheet body (the coding pipeline's JSON) for display; unknown shapes
/// give empty fields, never an error.
pub fn parse_worksheet(body: &str) -> WorksheetView {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let diagnoses = list(&v, "diagnoses")
        .enumerate()
        .map(|(index, d)| {
            let suggestions: Vec<SuggestionView> = list(d, "suggestions").map(suggestion).collect();
            DiagnosisView {
                index,
                condition_id: text(d, "condition_id"),
                display: text(d, "display"),
                snomed: text(d, "snomed"),
                category: text(d, "category"),
                documented: d.get("documented").and_then(Value::as_bool).unwrap_or(false),
                top_code: suggestions.first().map(|s| s.code.clone()).unwrap_or_default(),
                suggestions,
            }
        })
        .collect();
    let procedures = list(&v, "procedures")
        .map(|p| ProcedureView {
            procedure_id: text(p, "procedure_id"),
            display: text(p, "display"),
            codes: list(p, "codes").map(|c| format!("{} {}", text(c, "code"), text(c, "display")).trim().to_owned()).collect::<Vec<_>>().join("; "),
            status: text(p, "status"),
            performed: text(p, "performed"),
        })
        .collect();
    let flags = list(&v, "flags").map(|f| FlagView { kind: text(f, "kind"), resource: text(f, "resource"), code: text(f, "code"), message: text(f, "message") }).collect();
    let p = v.get("principal").cloned().unwrap_or(Value::Null);
    let principal = if p.is_object() { format!("{} {} (Condition/{})", text(&p, "code"), text(&p, "title"), text(&p, "condition_id")) } else { String::new() };
    let (start, end) = (text(&v, "start"), text(&v, "end"));
    WorksheetView {
        encounter_type: text(&v, "encounter_type"),
        period: if start.is_empty() && end.is_empty() { String::new() } else { format!("{start} – {end}") },
        diagnoses,
        procedures,
        principal,
        principal_reasons: list(&p, "reasons").filter_map(Value::as_str).map(str::to_owned).collect(),
        flags,
        crosswalk: text(&v, "crosswalk"),
    }
}

/// Normalises an ICD-10-CM code as typed (`e119` → `E11.9`); `None` if it is not one.
pub fn normalize_code(input: &str) -> Option<String> {
    let s: String = input.trim().to_ascii_uppercase().chars().filter(|c| *c != '.').collect();
    let b = s.as_bytes();
    let ok = (3..=7).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b[1].is_ascii_digit()
        && b[2].is_ascii_alphanumeric()
        && b[3..].iter().all(u8::is_ascii_alphanumeric);
    if !ok {
        return None;
    }
    Some(if b.len() > 3 { format!("{}.{}", &s[..3], &s[3..]) } else { s })
}

/// What a review form asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewDecision {
    /// Accepted as suggested, or edited.
    pub status: ReviewStatus,
    /// For an edit, the codes settled on.
    pub final_codes: Option<Vec<FinalCode>>,
    /// Diagnoses whose code was removed.
    pub removed: usize,
    /// Diagnoses whose code was changed.
    pub changed: usize,
    /// Codes added.
    pub added: usize,
}

/// Turns a review form into a decision against the worksheet's suggestions.
///
/// `accept` keeps every top suggestion. `edit` reads, for diagnosis `i`, the field
/// `code.i` (empty, or the box `remove.i` ticked, removes it) and the field `add`
/// (codes separated by commas or spaces); an edit that changes nothing is recorded as
/// accepted.
pub fn decide(view: &WorksheetView, form: &[(String, String)]) -> Result<ReviewDecision, String> {
    match form_value(form, "action") {
        Some("accept") => {
            // Any agent may submit a worksheet: accepting one as it stands must not record
            // something that is not a code.
            if let Some(bad) = view.diagnoses.iter().find(|d| !d.top_code.is_empty() && normalize_code(&d.top_code).as_deref() != Some(d.top_code.as_str())) {
                return Err(format!("{:?} is not an ICD-10-CM code: correct or remove it, then Save edits", bad.top_code.chars().take(16).collect::<String>()));
            }
            return Ok(ReviewDecision { status: ReviewStatus::Accepted, final_codes: None, removed: 0, changed: 0, added: 0 });
        }
        Some("edit") => {}
        _ => return Err("choose Accept or Save edits".into()),
    }
    let mut codes = Vec::new();
    let (mut removed, mut changed) = (0, 0);
    for d in &view.diagnoses {
        let typed = form_value(form, &format!("code.{}", d.index)).unwrap_or(&d.top_code).trim();
        let remove = form_value(form, &format!("remove.{}", d.index)).is_some();
        if remove || typed.is_empty() {
            removed += usize::from(!d.top_code.is_empty());
            continue;
        }
        let code = normalize_code(typed).ok_or_else(|| format!("{:?} is not an ICD-10-CM code (letter, two characters, then up to four after a dot, e.g. E11.9)", typed.chars().take(16).collect::<String>()))?;
        if code != d.top_code {
            changed += 1;
        }
        codes.push(FinalCode { condition_id: Some(d.condition_id.clone()), code });
    }
    let mut added = 0;
    for t in form_value(form, "add").unwrap_or("").split([',', ' ', ';', '\n', '\r', '\t']).filter(|t| !t.is_empty()).take(50) {
        let code = normalize_code(t).ok_or_else(|| format!("{:?} is not an ICD-10-CM code", t.chars().take(16).collect::<String>()))?;
        added += 1;
        codes.push(FinalCode { condition_id: None, code });
    }
    if removed == 0 && changed == 0 && added == 0 {
        return Ok(ReviewDecision { status: ReviewStatus::Accepted, final_codes: None, removed, changed, added });
    }
    Ok(ReviewDecision { status: ReviewStatus::Edited, final_codes: Some(codes), removed, changed, added })
}

/// One row of the list.
#[derive(Clone, Debug, PartialEq)]
pub struct ListRow {
    /// The connection.
    pub connection: String,
    /// The encounter.
    pub encounter: String,
    /// The class code.
    pub class: String,
    /// The agent.
    pub agent: String,
    /// When coded.
    pub coded: String,
    /// Diagnoses.
    pub diagnoses: usize,
    /// Flags.
    pub flags: usize,
    /// Review state.
    pub status: String,
    /// Reviewer.
    pub reviewer: String,
    /// Review time.
    pub review_time: String,
}

fn list_row(w: &StoredWorksheet) -> ListRow {
    let v = parse_worksheet(&w.body);
    ListRow {
        connection: w.connection.clone(),
        encounter: w.encounter.clone(),
        class: w.class.clone(),
        agent: w.agent.clone(),
        coded: fmt::time_ms(w.coded_ms),
        diagnoses: v.diagnoses.len(),
        flags: v.flags.len(),
        status: w.status.clone(),
        reviewer: w.reviewer.clone().unwrap_or_default(),
        review_time: w.review_ms.map(fmt::millis).unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "worksheets.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<ListRow>,
    filter: String,
    pending: usize,
    total: usize,
}

/// `GET /worksheets[?status=pending|accepted|edited]`.
pub async fn list_page(state: Dash, viewer: Viewer, RawQuery(q): RawQuery) -> PageResult {
    viewer.require(Page::Worksheets)?;
    let q = form_pairs(q.unwrap_or_default().as_bytes());
    let filter = match form_value(&q, "status") {
        Some(s @ ("pending" | "accepted" | "edited")) => s.to_owned(),
        _ => String::new(),
    };
    let all = state.gw.worksheets.list(LIST_LIMIT).await.map_err(|e| PageError::internal("worksheets", &e))?;
    let pending = all.iter().filter(|w| w.status == "pending").count();
    let rows = all.iter().filter(|w| filter.is_empty() || w.status == filter).map(list_row).collect();
    Ok(render(&ListPage { nav: viewer.nav(Page::Worksheets), rows, filter, pending, total: all.len() }))
}

#[derive(Template)]
#[template(path = "worksheet.html")]
struct DetailPage {
    nav: Nav,
    w: StoredWorksheet,
    view: WorksheetView,
    coded: String,
    pipeline: String,
    reviewed: String,
    review_time: String,
    final_codes: Vec<FinalCode>,
    ticket: String,
    error: Option<String>,
}

fn check_ids(connection: &str, encounter: &str) -> Result<(), PageError> {
    if medicodax_wire::tools::valid_connection_name(connection) && medicodax_wire::FhirId::new(encounter).is_ok() {
        Ok(())
    } else {
        Err(PageError::NotFound("no such worksheet".into()))
    }
}

async fn detail(state: &super::Dashboard, viewer: &Viewer, connection: &str, encounter: &str, error: Option<String>) -> PageResult {
    check_ids(connection, encounter)?;
    let w = state.gw.worksheets.get(connection, encounter).await.map_err(|e| PageError::internal("worksheets", &e))?.ok_or_else(|| PageError::NotFound("no such worksheet".into()))?;
    let ticket = if w.status == "pending" {
        let t = ReviewTicket {
            sub: viewer.user.name.clone(),
            sid: viewer.session.jti.clone(),
            connection: w.connection.clone(),
            encounter: w.encounter.clone(),
            opened_ms: state.gw.clock.now_unix_millis(),
            exp: viewer.session.exp,
        };
        state.sessions.sign(TICKET_TYP, &t).map_err(|e| PageError::internal("review ticket", &e))?
    } else {
        String::new()
    };
    let final_codes = w.final_codes.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    let page = DetailPage {
        nav: viewer.nav(Page::Worksheets),
        view: parse_worksheet(&w.body),
        coded: fmt::time_ms(w.coded_ms),
        pipeline: fmt::millis(w.pipeline_ms),
        reviewed: w.reviewed_at_ms.map(fmt::time_ms).unwrap_or_default(),
        review_time: w.review_ms.map(fmt::millis).unwrap_or_default(),
        final_codes,
        ticket,
        error: error.clone(),
        w,
    };
    let mut resp = render(&page);
    if error.is_some() {
        *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    Ok(resp)
}

/// `GET /worksheets/{connection}/{encounter}`.
pub async fn detail_page(state: Dash, viewer: Viewer, Path((connection, encounter)): Path<(String, String)>) -> PageResult {
    viewer.require(Page::Worksheets)?;
    detail(&state, &viewer, &connection, &encounter, None).await
}

/// Checks a review ticket against the viewer and the worksheet; returns the review time (ms).
pub fn ticket_review_ms(state: &super::Dashboard, viewer: &Viewer, connection: &str, encounter: &str, token: &str, now_ms: i64) -> Result<i64, PageError> {
    let stale = || PageError::Conflict("this review form is no longer valid (it was opened in another session or has expired); open the worksheet again".into());
    let t: ReviewTicket = state.sessions.verify_signed(token, TICKET_TYP).map_err(|_| stale())?;
    if t.sub != viewer.user.name || t.sid != viewer.session.jti || t.connection != connection || t.encounter != encounter || state.sessions.now() >= t.exp || t.opened_ms > now_ms {
        return Err(stale());
    }
    Ok(now_ms - t.opened_ms)
}

/// `POST /worksheets/{connection}/{encounter}/review`: Accept or Save edits.
pub async fn review(state: Dash, viewer: Viewer, Path((connection, encounter)): Path<(String, String)>, body: Bytes) -> PageResult {
    viewer.require(Page::Worksheets)?;
    let form = form_pairs(&body);
    viewer.check_csrf(form_value(&form, "csrf"))?;
    check_ids(&connection, &encounter)?;
    let now_ms = state.gw.clock.now_unix_millis();
    let review_ms = ticket_review_ms(&state, &viewer, &connection, &encounter, form_value(&form, "ticket").unwrap_or(""), now_ms)?;
    let w = state.gw.worksheets.get(&connection, &encounter).await.map_err(|e| PageError::internal("worksheets", &e))?.ok_or_else(|| PageError::NotFound("no such worksheet".into()))?;
    let view = parse_worksheet(&w.body);
    let decision = match decide(&view, &form) {
        Ok(d) => d,
        Err(msg) => return detail(&state, &viewer, &connection, &encounter, Some(msg)).await,
    };
    let r = Review { status: decision.status, reviewer: &viewer.user.name, review_ms, now_ms, final_codes: decision.final_codes.as_deref() };
    match state.gw.worksheets.review(&connection, &encounter, &r).await.map_err(|e| PageError::internal("worksheets", &e))? {
        ReviewResult::Recorded => {}
        ReviewResult::Missing => return Err(PageError::NotFound("no such worksheet".into())),
        ReviewResult::AlreadyReviewed(s) => return Err(PageError::Conflict(format!("this worksheet was already reviewed ({s})"))),
    }
    let detail = serde_json::json!({
        "reviewer": viewer.user.name,
        "status": decision.status.as_str(),
        "review_ms": review_ms,
        "changed": decision.changed,
        "removed": decision.removed,
        "added": decision.added,
    });
    audit_event(&state, "worksheet.reviewed", &format!("{connection}/{encounter}"), detail).await?;
    Ok(Redirect::to(&format!("/worksheets/{connection}/{encounter}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> String {
        serde_json::json!({
            "encounter_id": "e1", "encounter_type": "Encounter for check up",
            "diagnoses": [
                {"condition_id": "c1", "display": "Hypertension", "snomed": "38341003", "documented": true,
                 "suggestions": [{"code": "I10", "title": "Essential (primary) hypertension", "rank": 1, "confidence": 0.95, "band": "high", "source": "crosswalk", "billable": true, "in_code_set": true,
                                  "evidence": {"resource_type": "Condition", "resource_id": "c1", "note_lines": [{"document": "d1", "line": 3, "text": "BP high"}]}}]},
                {"condition_id": "c2", "display": "Prediabetes", "suggestions": [{"code": "R73.03", "title": "Prediabetes", "confidence": 0.9, "source": "record", "evidence": {}}]},
                {"condition_id": "c3", "display": "Odd", "suggestions": []}
            ],
            "procedures": [{"procedure_id": "p1", "display": "Screening", "codes": [{"system": "http://snomed.info/sct", "code": "123", "display": "Screening"}]}],
            "principal": {"condition_id": "c1", "code": "I10", "title": "Essential (primary) hypertension", "reasons": ["named by the encounter"]},
            "flags": [{"kind": "no-suggestion", "resource": "Condition/c3", "message": "no code"}]
        })
        .to_string()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn worksheet_bodies_are_read_leniently() {
        let v = parse_worksheet(&body());
        assert_eq!(v.diagnoses.len(), 3);
        assert_eq!(v.diagnoses[0].top_code, "I10");
        assert_eq!(v.diagnoses[0].suggestions[0].confidence, "0.95");
        assert_eq!(v.diagnoses[0].suggestions[0].evidence, "Condition/c1");
        assert_eq!(v.diagnoses[0].suggestions[0].note_lines, ["d1:3 — BP high"]);
        assert_eq!(v.procedures[0].codes, "123 Screening");
        assert_eq!(v.principal, "I10 Essential (primary) hypertension (Condition/c1)");
        assert_eq!(v.flags[0].kind, "no-suggestion");
        for garbage in ["", "null", "[]", "{\"diagnoses\": 5}", "{\"diagnoses\": [1, \"x\", null]}", "not json"] {
            let v = parse_worksheet(garbage);
            assert!(v.procedures.is_empty());
            assert!(v.diagnoses.iter().all(|d| d.suggestions.is_empty()));
        }
    }

    #[test]
    fn codes_are_normalised_or_refused() {
        assert_eq!(normalize_code("e119").as_deref(), Some("E11.9"));
        assert_eq!(normalize_code(" S06.0X0A ").as_deref(), Some("S06.0X0A"));
        assert_eq!(normalize_code("I10").as_deref(), Some("I10"));
        for bad in ["", "I1", "110", "II0", "E11.99999", "E1<script>", "E11-9"] {
            assert_eq!(normalize_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn review_decisions() {
        let v = parse_worksheet(&body());
        let d = decide(&v, &pairs(&[("action", "accept")])).unwrap();
        assert_eq!((d.status, d.final_codes), (ReviewStatus::Accepted, None));
        // Saving the suggested codes unchanged is an acceptance.
        let d = decide(&v, &pairs(&[("action", "edit"), ("code.0", "I10"), ("code.1", "r73.03"), ("code.2", "")])).unwrap();
        assert_eq!(d.status, ReviewStatus::Accepted);
        // Change one, remove one, add one.
        let d = decide(&v, &pairs(&[("action", "edit"), ("code.0", "I11.9"), ("code.1", "R73.03"), ("remove.1", "1"), ("add", "E66.9, Z68.30")])).unwrap();
        assert_eq!(d.status, ReviewStatus::Edited);
        assert_eq!((d.changed, d.removed, d.added), (1, 1, 2));
        let codes: Vec<(Option<&str>, &str)> = d.final_codes.as_ref().unwrap().iter().map(|c| (c.condition_id.as_deref(), c.code.as_str())).collect();
        assert_eq!(codes, [(Some("c1"), "I11.9"), (None, "E66.9"), (None, "Z68.30")]);
        assert!(decide(&v, &pairs(&[("action", "edit"), ("code.0", "nonsense")])).is_err());
        assert!(decide(&v, &pairs(&[("action", "edit"), ("add", "<b>")])).is_err());
        assert!(decide(&v, &pairs(&[("action", "delete")])).is_err());
        // A worksheet whose suggestion is not a code cannot be accepted as it stands.
        let odd = parse_worksheet(&serde_json::json!({"diagnoses": [{"condition_id": "c9", "display": "x", "suggestions": [{"code": "<b>99</b>"}]}]}).to_string());
        let err = decide(&odd, &pairs(&[("action", "accept")])).unwrap_err();
        assert!(err.contains("not an ICD-10-CM code"), "{err}");
        assert!(decide(&odd, &pairs(&[("action", "edit"), ("code.0", "R69")])).is_ok(), "correcting it is the way forward");
        assert!(decide(&v, &[]).is_err());
    }
}
