//! The four tools, each: arguments checked, policy decided, FHIR requested, results
//! filtered and redacted. Everything the audit record needs is gathered in
//! [`ToolContext`] on the way.

use crate::calls::VerifiedCall;
use crate::ehr::Ehr;
use crate::problem::ApiProblem;
use crate::service::Gateway;
use medicodax_fhir::{FhirError, Search, SearchOutcome, UpstreamLog};
use medicodax_policy::{Access, Caller, DenyReason, IgnoredVerdict, Refusal, ScopeSet, SearchPlan, UserRecord, patient_id};
use medicodax_smart::AuthError;
use medicodax_wire::audit::{ResourceRef, SystemEvent};
use medicodax_wire::receipt::Decision;
use medicodax_wire::tools::{
    ConnectionInfo, ConnectionsList, ConnectionsListArgs, EncounterBundle, EncounterBundleArgs, FhirReadArgs, FhirSearchArgs, MAX_SEARCH_RESULTS, MAX_WORKSHEET_BYTES,
    SearchResult, Warning, WorksheetStored, WorksheetSubmitArgs,
};
use medicodax_wire::{FhirId, ProblemCode, ResourceType, ToolName};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// How many searches of one encounter bundle run at once.
const BUNDLE_CONCURRENCY: usize = 4;

/// What a call gathered for its outcome record.
pub struct ToolContext {
    /// The connection used.
    pub connection: Option<String>,
    /// Scopes the EHR granted.
    pub granted_scopes: Vec<String>,
    /// Upstream requests.
    pub log: UpstreamLog,
    /// Resources returned.
    pub resources: Vec<ResourceRef>,
    /// Patients touched.
    pub patients: BTreeSet<String>,
    /// Notices for the audit record (a superset of what the agent sees).
    pub warnings: Vec<Warning>,
}

impl ToolContext {
    /// An empty context.
    pub fn new(connection: Option<String>) -> Self {
        ToolContext { connection, granted_scopes: Vec::new(), log: UpstreamLog::new(), resources: Vec::new(), patients: BTreeSet::new(), warnings: Vec::new() }
    }

    fn note(&mut self, r: &Value) {
        let t = r.get("resourceType").and_then(Value::as_str).unwrap_or_default();
        let id = r.get("id").and_then(Value::as_str).unwrap_or_default();
        let version = r.get("meta").and_then(|m| m.get("versionId")).and_then(Value::as_str).map(str::to_owned);
        self.resources.push(ResourceRef { resource_type: t.to_owned(), id: id.to_owned(), version });
        if let Some(p) = patient_id(r) {
            self.patients.insert(p);
        }
    }
}

/// Why a tool did not produce a result.
#[derive(Debug)]
pub struct Failure {
    /// What the caller gets.
    pub problem: ApiProblem,
    /// Denied (policy, arguments, replay) or failed (EHR, gateway).
    pub decision: Decision,
    /// For the audit record.
    pub reason: String,
}

impl Failure {
    /// A denial with a given problem.
    pub fn denied_with(problem: ApiProblem, reason: impl Into<String>) -> Self {
        Failure { problem, decision: Decision::Denied, reason: reason.into() }
    }

    fn refusal(r: Refusal) -> Self {
        let problem = r.problem();
        Failure { problem: ApiProblem { problem, retry_after: None }, decision: Decision::Denied, reason: r.audit_reason() }
    }

    fn bad_args(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Failure { reason: format!("bad-arguments: {detail}"), problem: ApiProblem::new(ProblemCode::BadArguments, detail), decision: Decision::Denied }
    }

    fn fhir(e: &FhirError) -> Self {
        tracing::debug!(code = e.code(), status = ?e.upstream_status(), "EHR request failed");
        let mut p = ApiProblem::new(e.problem_code(), ehr_error_detail(e));
        if let Some(d) = e.retry_after() {
            p = p.retry_after(Gateway::retry_secs(d));
        }
        Failure { problem: p, decision: Decision::Failed, reason: format!("ehr: {}", e.code()) }
    }

    /// The call's time ran out before the EHR answered.
    pub fn out_of_time(budget: std::time::Duration) -> Self {
        Failure {
            problem: ApiProblem::new(ProblemCode::EhrTimeout, format!("the EHR did not answer within the call's time ({} s); sign a new call to try again", budget.as_secs())),
            decision: Decision::Failed,
            reason: "ehr: call deadline".into(),
        }
    }

    fn internal(reason: impl Into<String>) -> Self {
        Failure { problem: ApiProblem::new(ProblemCode::Internal, "the gateway failed; the audit log holds the details"), decision: Decision::Failed, reason: reason.into() }
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::refusal(r)
    }
}

fn parse_args<T: DeserializeOwned>(call: &VerifiedCall) -> Result<T, Failure> {
    serde_json::from_value(Value::Object(call.claims.args.clone())).map_err(|e| Failure::bad_args(format!("args: {e}")))
}

/// Runs the call's tool.
pub async fn execute(gw: &Gateway, call: &VerifiedCall, ctx: &mut ToolContext) -> Result<Value, Failure> {
    let tool: ToolName = call.claims.tool.parse().map_err(|e: medicodax_wire::tools::UnknownTool| Failure::bad_args(e.to_string()))?;
    let user = gw.users.get(&call.claims.sub).await.map_err(|e| Failure::internal(format!("user store: {e}")))?;
    let record = user.map(|u| UserRecord { name: u.name, roles: u.roles, patients: None });
    let caller = gw.policy.caller(&call.claims.iss, &call.claims.sub, record.as_ref())?;
    let to_value = |v: Result<_, serde_json::Error>| v.map_err(|e| Failure::internal(format!("serialise: {e}")));
    match tool {
        ToolName::ConnectionsList => {
            let _: ConnectionsListArgs = parse_args(call)?;
            caller.decide_tool(tool, None)?;
            to_value(serde_json::to_value(connections_list(gw, &caller)))
        }
        ToolName::FhirRead => {
            let a: FhirReadArgs = parse_args(call)?;
            let (ehr, access) = open(gw, &caller, tool, &a.connection, ctx).await?;
            read(&ehr, &access, a.resource_type, &a.id, ctx).await
        }
        ToolName::FhirSearch => {
            let a: FhirSearchArgs = parse_args(call)?;
            let max = a.max_results.unwrap_or(MAX_SEARCH_RESULTS).clamp(1, MAX_SEARCH_RESULTS) as usize;
            let (ehr, access) = open(gw, &caller, tool, &a.connection, ctx).await?;
            let plan = access.decide_search(a.resource_type, &a.params)?;
            let result = search(&ehr, &access, &plan, Some(max), ctx).await?;
            to_value(serde_json::to_value(result))
        }
        ToolName::WorksheetSubmit => {
            let a: WorksheetSubmitArgs = parse_args(call)?;
            if a.class.is_empty() || a.class.len() > 16 || !a.class.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(Failure::bad_args("class must be an encounter class code such as AMB, EMER or IMP"));
            }
            if a.pipeline_ms > MAX_PIPELINE_MS {
                return Err(Failure::bad_args(format!("pipeline_ms is the time spent coding this one encounter, in milliseconds; at most {MAX_PIPELINE_MS} (a day)")));
            }
            check_worksheet_shape(&a.worksheet)?;
            let body = serde_json::to_string(&a.worksheet).map_err(|e| Failure::internal(format!("serialise: {e}")))?;
            if body.len() > MAX_WORKSHEET_BYTES {
                return Err(Failure::bad_args(format!("the worksheet is {} bytes; the limit is {MAX_WORKSHEET_BYTES}", body.len())));
            }
            // A worksheet is about an encounter this agent may read, of the patient it names:
            // nobody can plant one for an encounter that does not exist or is not theirs.
            let (ehr, access) = open(gw, &caller, tool, &a.connection, ctx).await?;
            let encounter = read(&ehr, &access, ResourceType::Encounter, &a.encounter, ctx).await?;
            let subject = encounter.pointer("/subject/reference").and_then(Value::as_str).unwrap_or("");
            if subject.strip_suffix(a.patient.as_str()).is_none_or(|head| !(head == "Patient/" || head.ends_with("/Patient/"))) {
                return Err(Failure::bad_args("the encounter's subject is not the patient named in the arguments"));
            }
            let submission = crate::worksheets::Submission {
                connection: &a.connection,
                encounter: a.encounter.as_str(),
                patient: a.patient.as_str(),
                class: &a.class,
                agent: &call.claims.iss,
                now_ms: gw.clock.now_unix_millis(),
                pipeline_ms: i64::try_from(a.pipeline_ms).unwrap_or(i64::MAX),
                baseline_min: crate::worksheets::baseline_minutes(&a.class, &gw.config.coding),
                body: &body,
            };
            let status = gw.worksheets.submit(&submission).await.map_err(|e| Failure::internal(e.to_string()))?;
            to_value(serde_json::to_value(WorksheetStored { connection: a.connection, encounter: a.encounter.as_str().to_owned(), status }))
        }
        ToolName::EncounterBundle => {
            let a: EncounterBundleArgs = parse_args(call)?;
            let (ehr, access) = open(gw, &caller, tool, &a.connection, ctx).await?;
            let b = encounter_bundle(&ehr, &access, &a.encounter, ctx).await?;
            to_value(serde_json::to_value(b))
        }
    }
}

/// The longest `pipeline_ms` accepted: a day.
pub const MAX_PIPELINE_MS: u64 = 24 * 3600 * 1000;

/// The worksheet must look like one: `diagnoses` a list of objects, each suggestion's
/// `code` (when present) a short string. Anything else the dashboard reads leniently.
fn check_worksheet_shape(w: &serde_json::Map<String, Value>) -> Result<(), Failure> {
    let Some(Value::Array(diagnoses)) = w.get("diagnoses") else {
        return Err(Failure::bad_args("worksheet.diagnoses must be a list (empty when nothing was found)"));
    };
    for (i, d) in diagnoses.iter().enumerate() {
        let Value::Object(d) = d else {
            return Err(Failure::bad_args(format!("worksheet.diagnoses[{i}] must be an object")));
        };
        match d.get("suggestions") {
            None => {}
            Some(Value::Array(s)) => {
                for (j, s) in s.iter().enumerate() {
                    let ok = s.as_object().is_some_and(|s| s.get("code").is_none_or(|c| c.as_str().is_some_and(|c| !c.is_empty() && c.len() <= 16)));
                    if !ok {
                        return Err(Failure::bad_args(format!("worksheet.diagnoses[{i}].suggestions[{j}] must be an object whose code is a string of 1 to 16 characters")));
                    }
                }
            }
            Some(_) => return Err(Failure::bad_args(format!("worksheet.diagnoses[{i}].suggestions must be a list"))),
        }
    }
    Ok(())
}

fn connections_list(gw: &Gateway, caller: &Caller) -> ConnectionsList {
    let names: Vec<&str> = gw.ehrs.keys().map(String::as_str).collect();
    let visible = caller.visible_connections(names);
    let connections = visible
        .into_iter()
        .filter_map(|n| gw.ehrs.get(n))
        .map(|e| {
            let st = gw.auth.connection_status(&e.name);
            let (status, last_error) = match &st {
                Some(s) => status_summary(s),
                None => ("unknown".to_owned(), None),
            };
            ConnectionInfo { name: e.name.clone(), vendor: e.vendor.as_str().to_owned(), fhir_base: e.fhir_base.clone(), status, last_error }
        })
        .collect();
    ConnectionsList { connections }
}

/// `ok`, `no-token-yet` or `failing`, and the latest error class.
pub fn status_summary(s: &medicodax_smart::ConnectionStatus) -> (String, Option<String>) {
    let last_error = s.tokens.iter().filter_map(|t| t.last_error.map(|c| (t.last_error_at_unix, c))).max_by_key(|(at, _)| *at).map(|(_, c)| error_class_name(c));
    let status = if s.needs_attention || s.tokens.iter().any(|t| t.consecutive_failures > 0) {
        "failing"
    } else if s.tokens.iter().any(|t| t.has_token) {
        "ok"
    } else {
        "no-token-yet"
    };
    (status.to_owned(), last_error)
}

/// The snake_case name of an auth error class.
pub fn error_class_name(c: medicodax_smart::ErrorClass) -> String {
    serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{c:?}"))
}

async fn open(gw: &Gateway, caller: &Caller, tool: ToolName, connection: &str, ctx: &mut ToolContext) -> Result<(Arc<Ehr>, Access), Failure> {
    caller.decide_tool(tool, Some(connection))?;
    let Some(ehr) = gw.ehrs.get(connection).cloned() else {
        // The same 403 as any denial: the caller learns nothing about which connections exist.
        return Err(Failure::refusal(Refusal::Denied(DenyReason::ConnectionNotGranted { connection: connection.to_owned(), by: medicodax_policy::Party::Agent })));
    };
    ctx.connection = Some(connection.to_owned());
    let handle = match gw.auth.token(connection).await {
        Ok(h) => h,
        Err(e) => return Err(auth_failure(gw, &e).await),
    };
    let granted = handle.granted_scopes();
    ctx.granted_scopes = granted.scopes.clone();
    let set = ScopeSet::from_tokens(granted.scopes.iter().map(String::as_str));
    let access = caller.on_connection(connection, &set)?;
    Ok((ehr, access))
}

/// Maps a token failure to an answer, and writes a configuration failure (pitfall 3) to
/// the audit log as a system event with the redacted account of what was sent.
async fn auth_failure(gw: &Gateway, e: &AuthError) -> Failure {
    let record = match e {
        AuthError::InvalidClient(r) | AuthError::UnauthorizedClient(r) | AuthError::InvalidScope(r) | AuthError::Refused(r) => Some(r),
        _ => None,
    };
    // Once per refused request: calls inside the slow-retry window get the same record.
    if let Some(r) = record
        && gw.first_report(r)
    {
        let event = SystemEvent {
            time_ms: gw.clock.now_unix_millis(),
            event: format!("token.{}", r.error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect::<String>()),
            subject: r.connection.clone(),
            detail: serde_json::to_value(r.as_ref()).unwrap_or(Value::Null),
        };
        if let Err(err) = gw.audit.append_event(event).await {
            tracing::error!(error = %err, "could not audit a token failure");
            gw.forget_report(r);
        }
    }
    let (code, retry) = match e {
        AuthError::RateLimited { retry_after, .. } => (ProblemCode::RateLimited, Some(*retry_after)),
        AuthError::Unavailable { retry_after, .. } => (ProblemCode::EhrUnavailable, *retry_after),
        _ => (ProblemCode::EhrUnavailable, None),
    };
    let mut p = ApiProblem::new(code, e.to_string());
    if let Some(d) = retry {
        p = p.retry_after(Gateway::retry_secs(d));
    }
    Failure { problem: p, decision: Decision::Failed, reason: format!("token: {}", error_class_name(e.class())) }
}

async fn read(ehr: &Ehr, access: &Access, t: ResourceType, id: &FhirId, ctx: &mut ToolContext) -> Result<Value, Failure> {
    let plan = access.decide_read(t, id)?;
    let mut r = match ehr.fhir.read(t, id, &ctx.log).await {
        Ok(r) => r,
        // Under a constrained grant a 404 would tell a missing resource from a refused one.
        Err(e) if e.problem_code() == ProblemCode::NotFound && plan.restricted() => {
            return Err(Failure::refusal(Refusal::Denied(DenyReason::ConstraintNotSatisfied)));
        }
        Err(e) => return Err(Failure::fhir(&e)),
    };
    plan.check(&r)?;
    ctx.note(&r);
    access.redactor().apply(&mut r);
    Ok(r)
}

/// One planned query's walk, and whether it must fail closed.
fn fail_closed(q: &medicodax_policy::PlannedQuery, out: &SearchOutcome) -> Option<String> {
    match q.on_ignored_params(out.ignored_parameters.iter().map(String::as_str)) {
        IgnoredVerdict::FailClosed { param } => Some(param),
        IgnoredVerdict::Proceed => None,
    }
}

/// What an agent is told about an EHR failure: the status, the OperationOutcome issue
/// codes and our error class — never the EHR's free text (diagnostics, HTML pages), which
/// may name patients and would bypass redaction and patient lists.
pub fn ehr_error_detail(e: &FhirError) -> String {
    let mut s = match (e.problem_code(), e.upstream_status()) {
        (ProblemCode::NotFound, _) => "the EHR has no such resource".to_owned(),
        (_, Some(status)) => format!("the EHR answered HTTP {status}"),
        (ProblemCode::EhrTimeout, None) => "the EHR did not answer in time".to_owned(),
        (ProblemCode::RateLimited, None) => "the connection's request budget is spent; retry after Retry-After".to_owned(),
        (_, None) => "the EHR request did not complete".to_owned(),
    };
    let issues: Vec<String> = e
        .issues()
        .iter()
        .take(5)
        .map(|i| match &i.detail_code {
            Some(d) => format!("{} {} ({d})", i.severity, i.code),
            None => format!("{} {}", i.severity, i.code),
        })
        .collect();
    if !issues.is_empty() {
        s.push_str(&format!("; issues: {}", issues.join(", ")));
    }
    s.push_str(&format!(" [{}]", e.code()));
    s
}

/// An OperationOutcome warning as an agent may see it: severity, code and detail code,
/// without the EHR's free text.
fn agent_warning(w: &Warning) -> Warning {
    if w.code == "operation-outcome" {
        let head = w.detail.split(": ").next().unwrap_or_default();
        Warning { code: w.code.clone(), detail: head.to_owned() }
    } else {
        w.clone()
    }
}

fn outcome_warnings(out: &SearchOutcome) -> Vec<Warning> {
    let mut w: Vec<Warning> = out.warnings.iter().map(agent_warning).collect();
    for e in &out.errors {
        w.push(Warning { code: e.code().to_owned(), detail: ehr_error_detail(e) });
    }
    if out.limit_reached {
        w.push(Warning { code: "max-results".into(), detail: format!("stopped at {} results, the limit asked for; the EHR may have more", out.resources.len()) });
    }
    w
}

/// Runs a search plan: each query walked, fail-closed checked, results merged, filtered,
/// noted for the audit record and redacted.
async fn search(ehr: &Ehr, access: &Access, plan: &SearchPlan, max: Option<usize>, ctx: &mut ToolContext) -> Result<SearchResult, Failure> {
    let t = plan.resource_type();
    let mut per_query = Vec::new();
    let mut included = Vec::new();
    let mut warnings = Vec::new();
    let mut incomplete = false;
    let mut total = None;
    for q in plan.queries() {
        let mut s = Search::from_pairs(t, q.params().iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(m) = max {
            s = s.limit(m);
        }
        let out = ehr.fhir.search(&s, &ctx.log).await.map_err(|e| Failure::fhir(&e))?;
        if let Some(param) = fail_closed(q, &out) {
            let w = Warning {
                code: "fail-closed".into(),
                detail: format!("the EHR ignored the parameter {param} that narrows access, so no results are returned: they could be broader than authorised"),
            };
            ctx.warnings.push(w.clone());
            return Ok(SearchResult { resources: Vec::new(), total: None, incomplete: true, warnings: vec![w] });
        }
        if total.is_none() {
            total = out.total;
        }
        incomplete |= out.incomplete;
        for w in outcome_warnings(&out) {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        included.extend(out.included.into_iter().filter(|r| plan.admit_included(r)));
        per_query.push(out.resources);
    }
    let merged = plan.merge(per_query);
    if merged.refused > 0 {
        // Audit-only: telling the agent would reveal that withheld data exists.
        ctx.warnings.push(Warning { code: "filtered".into(), detail: format!("{} {t} resources outside the grant were removed", merged.refused) });
    }
    let total = if plan.total_is_reliable(&merged) { total } else { None };
    let mut resources = merged.resources;
    resources.extend(included);
    for r in &mut resources {
        ctx.note(r);
        access.redactor().apply(r);
    }
    ctx.warnings.extend(warnings.iter().cloned());
    Ok(SearchResult { resources, total, incomplete, warnings })
}

async fn encounter_bundle(ehr: &Ehr, access: &Access, encounter: &FhirId, ctx: &mut ToolContext) -> Result<EncounterBundle, Failure> {
    let plan = access.decide_bundle(encounter)?;
    let mut enc = match ehr.fhir.read(ResourceType::Encounter, encounter, &ctx.log).await {
        Ok(r) => r,
        Err(e) if e.problem_code() == ProblemCode::NotFound && plan.encounter().restricted() => {
            return Err(Failure::refusal(Refusal::Denied(DenyReason::ConstraintNotSatisfied)));
        }
        Err(e) => return Err(Failure::fhir(&e)),
    };
    plan.encounter().check(&enc)?;
    let pid = patient_id(&enc)
        .and_then(|p| FhirId::new(&p).ok())
        .ok_or_else(|| Failure { problem: ApiProblem::new(ProblemCode::EhrError, "the encounter names no patient"), decision: Decision::Failed, reason: "ehr: encounter without patient".into() })?;
    ctx.note(&enc);

    let mut withheld: Vec<ResourceType> = plan.withheld();
    for (t, r) in plan.withheld_reasons() {
        ctx.warnings.push(Warning { code: "withheld".into(), detail: format!("{t}: {}", r.rule()) });
    }
    let mut warnings = Vec::new();
    let mut incomplete = false;

    // The patient.
    let mut patient = None;
    if plan.permitted().contains(&ResourceType::Patient) {
        match read(ehr, access, ResourceType::Patient, &pid, ctx).await {
            Ok(p) => patient = Some(p),
            Err(f) if f.decision == Decision::Denied || f.problem.problem.status == 403 => withheld.push(ResourceType::Patient),
            Err(f) => {
                incomplete = true;
                warnings.push(Warning { code: "patient-failed".into(), detail: f.problem.problem.detail.clone() });
            }
        }
    }

    // The other parts, searched concurrently.
    let mut parts: Vec<(ResourceType, SearchPlan)> = Vec::new();
    for t in plan.permitted().iter().copied().filter(|t| *t != ResourceType::Patient) {
        match access.bundle_part(t, &pid, encounter) {
            Ok(p) => parts.push((t, p)),
            Err(_) => withheld.push(t),
        }
    }
    let searches: Vec<(usize, usize, Search)> = parts
        .iter()
        .enumerate()
        .flat_map(|(i, (t, p))| p.queries().iter().enumerate().map(move |(j, q)| (i, j, Search::from_pairs(*t, q.params().iter().map(|(k, v)| (k.as_str(), v.as_str()))))))
        .collect();
    let results = run_concurrently(ehr, searches.iter().map(|(_, _, s)| s.clone()).collect(), &ctx.log).await;
    let mut per_part: Vec<Vec<Vec<Value>>> = vec![Vec::new(); parts.len()];
    let mut part_state: Vec<PartState> = vec![PartState::Ok; parts.len()];
    for ((i, j, _), tr) in searches.iter().zip(results) {
        let (t, p) = &parts[*i];
        let Some(tr) = tr else {
            incomplete = true;
            warnings.push(Warning { code: "internal".into(), detail: format!("{t}: the search task failed") });
            continue;
        };
        if tr.withheld() {
            part_state[*i] = PartState::Withheld;
            continue;
        }
        match tr.result {
            Ok(out) => {
                if let Some(param) = fail_closed(&p.queries()[*j], &out) {
                    part_state[*i] = PartState::FailClosed(param);
                    continue;
                }
                incomplete |= out.incomplete;
                for w in outcome_warnings(&out) {
                    warnings.push(Warning { code: w.code, detail: format!("{t}: {}", w.detail) });
                }
                per_part[*i].push(out.resources);
            }
            Err(e) => {
                incomplete = true;
                warnings.push(Warning { code: e.code().to_owned(), detail: format!("{t}: {}", ehr_error_detail(&e)) });
            }
        }
    }
    let mut out_parts: std::collections::BTreeMap<ResourceType, Vec<Value>> = std::collections::BTreeMap::new();
    for (i, (t, p)) in parts.iter().enumerate() {
        match &part_state[i] {
            PartState::Withheld => {
                withheld.push(*t);
                continue;
            }
            PartState::FailClosed(param) => {
                incomplete = true;
                warnings.push(Warning { code: "fail-closed".into(), detail: format!("{t}: the EHR ignored the narrowing parameter {param}; nothing of this type is returned") });
                continue;
            }
            PartState::Ok => {}
        }
        let merged = p.merge(std::mem::take(&mut per_part[i]));
        if merged.refused > 0 {
            ctx.warnings.push(Warning { code: "filtered".into(), detail: format!("{} {t} resources outside the grant were removed", merged.refused) });
        }
        let mut rs = merged.resources;
        for r in &mut rs {
            ctx.note(r);
            access.redactor().apply(r);
        }
        out_parts.insert(*t, rs);
    }
    access.redactor().apply(&mut enc);
    withheld.sort();
    withheld.dedup();
    ctx.warnings.extend(warnings.iter().cloned());
    let mut take = |t: ResourceType| out_parts.remove(&t).unwrap_or_default();
    Ok(EncounterBundle {
        encounter: enc,
        patient,
        conditions: take(ResourceType::Condition),
        procedures: take(ResourceType::Procedure),
        observations: take(ResourceType::Observation),
        medication_requests: take(ResourceType::MedicationRequest),
        diagnostic_reports: take(ResourceType::DiagnosticReport),
        documents: take(ResourceType::DocumentReference),
        allergies: take(ResourceType::AllergyIntolerance),
        immunizations: take(ResourceType::Immunization),
        coverage: take(ResourceType::Coverage),
        withheld,
        incomplete,
        warnings,
    })
}

/// Runs searches on their own tasks, at most [`BUNDLE_CONCURRENCY`] at once; one result
/// per search in order (`None` if its task failed).
async fn run_concurrently(ehr: &Ehr, searches: Vec<Search>, log: &UpstreamLog) -> Vec<Option<medicodax_fhir::TypeResult>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(BUNDLE_CONCURRENCY));
    let handles: Vec<_> = searches
        .into_iter()
        .map(|s| {
            let fhir = ehr.fhir.clone();
            let log = log.clone();
            let sem = Arc::clone(&sem);
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let result = fhir.search(&s, &log).await;
                medicodax_fhir::TypeResult { resource_type: s.resource_type(), result }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.ok());
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PartState {
    Ok,
    Withheld,
    FailClosed(String),
}
