//! FHIR R4 REST for the eleven types: read, search (GET and `POST _search`), paging,
//! `metadata`, and the bearer-token and scope checks in front of them.
//!
//! Order of checks: the bearer token (401 `invalid_token`), the type (404
//! `not-supported`), the token's scopes (403 `insufficient_scope`), then the request
//! itself (400 with an OperationOutcome). Scope grants constrained by a query (`system/
//! Condition.rs?category=…`) narrow what is returned: Epic drops the rest and says so
//! with warning 59204, eClinicalWorks drops it silently; a read outside them is 403.
//!
//! Epic-side quirks: a search needs `patient` (or `_id`); Observation needs `category`
//! or `code` (400, severity fatal, code required, 59108); categories of Observation,
//! Condition and DocumentReference are checked (they select Epic's sub-APIs); ignored
//! parameters and empty results are reported as OperationOutcome entries with
//! `search.mode = outcome`; pages after the first are opaque links that expire (4113).
//! eClinicalWorks pages with a `page` parameter and caps `_count` at its page size.

use crate::data::Record;
use crate::index::{patient_link, specs};
use crate::oauth::VendorCtx;
use crate::outcome::{Issue, LogInfo, challenge, fhir_response, operation_outcome, outcome_response, with_log};
use crate::search::{self, EPIC_PAGE_PARAM, ECW_PAGE_PARAM, FilterValue, SearchRequest};
use crate::state::{PagingSession, lock};
use crate::vendor::{ResourceType, TypeIndex, Vendor};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use medicodax_policy::scope::{Context, Grant, Interaction, ScopeSet};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

const OBSERVATION_CATEGORIES: &[&str] = &["vital-signs", "laboratory", "social-history", "exam", "procedure", "survey", "imaging", "therapy", "activity"];
const CONDITION_CATEGORIES: &[&str] = &["problem-list-item", "encounter-diagnosis", "health-concern"];
const DOCUMENT_CATEGORIES: &[&str] = &["clinical-note", "imaging-result", "clinical-reference"];

/// A request whose bearer token passed.
struct Authorized {
    label: String,
    client_id: String,
    scopes: Arc<ScopeSet>,
}

fn log_token(resp: Response, label: Option<&str>) -> Response {
    with_log(resp, LogInfo { token: label.map(str::to_owned), ..LogInfo::default() })
}

fn log_auth(resp: Response, auth: &Authorized) -> Response {
    with_log(resp, LogInfo { token: Some(auth.label.clone()), client_id: Some(auth.client_id.clone()), oauth_error: None })
}

fn unauthorized(vendor: Vendor, description: &str, label: Option<&str>) -> Response {
    let mut resp = outcome_response(StatusCode::UNAUTHORIZED, Issue::new("error", "login", description));
    let text = format!("Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"", vendor.realm(), description);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge(&text));
    log_token(resp, label)
}

fn authenticate(ctx: &VendorCtx, headers: &HeaderMap) -> Result<Authorized, Box<Response>> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    let Some(value) = value else {
        return Err(Box::new(unauthorized(ctx.vendor, crate::state::TokenProblem::Missing.describe(), None)));
    };
    let now = ctx.shared.clock.now_unix();
    let tokens = lock(&ctx.shared.tokens);
    match tokens.check(ctx.vendor, value, now) {
        Ok(t) => Ok(Authorized { label: t.label.clone(), client_id: t.client_id.clone(), scopes: t.scopes.clone() }),
        Err((problem, label)) => Err(Box::new(unauthorized(ctx.vendor, problem.describe(), label.as_deref()))),
    }
}

/// The scope a 403 names, in the vendor's style.
fn needed_scope(vendor: Vendor, rtype: ResourceType, i: Interaction) -> String {
    match (vendor, i) {
        (Vendor::Epic, Interaction::Search) => format!("{rtype}.search"),
        (Vendor::Epic, _) => format!("{rtype}.read"),
        (Vendor::EClinicalWorks, Interaction::Search) => format!("system/{rtype}.s"),
        (Vendor::EClinicalWorks, _) => format!("system/{rtype}.r"),
    }
}

fn forbidden(vendor: Vendor, scope: &str, label: &str) -> Response {
    let mut resp = outcome_response(StatusCode::FORBIDDEN, Issue::new("error", "forbidden", format!("the access token does not grant {scope}")));
    let text = format!("Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"", vendor.realm(), scope);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge(&text));
    log_token(resp, Some(label))
}

/// What the token's scopes allow for one type and interaction: everything, or only
/// resources matching one of these searches.
enum Allowed {
    All,
    Only(Vec<SearchRequest>),
}

impl Allowed {
    fn admits(&self, rec: &Record) -> bool {
        match self {
            Allowed::All => true,
            Allowed::Only(reqs) => reqs.iter().any(|r| search::matches(rec, r)),
        }
    }
}

fn permit(ctx: &VendorCtx, auth: &Authorized, rtype: ResourceType, i: Interaction) -> Result<Allowed, Box<Response>> {
    match auth.scopes.grant(&[Context::System], rtype.as_str(), i) {
        Grant::Full => Ok(Allowed::All),
        Grant::Constrained(list) => Ok(Allowed::Only(list.iter().filter_map(|pairs| search::parse(rtype, pairs).ok().filter(|r| r.ignored.is_empty())).collect())),
        Grant::None => Err(Box::new(forbidden(ctx.vendor, &needed_scope(ctx.vendor, rtype, i), &auth.label))),
    }
}

fn unknown_type(name: &str, label: &str) -> Response {
    let shown: String = name.chars().take(64).collect();
    log_token(outcome_response(StatusCode::NOT_FOUND, Issue::new("error", "not-supported", format!("resource type {shown:?} is not supported by this server"))), Some(label))
}

/// A failed 401-on-page fault check consumes the fault.
fn page_fault(ctx: &VendorCtx, page: usize) -> bool {
    let mut faults = lock(&ctx.shared.faults);
    let pages = &mut faults.sides[ctx.vendor.index()].unauthorized_pages;
    match pages.iter().position(|p| *p == page) {
        Some(i) => {
            pages.remove(i);
            true
        }
        None => false,
    }
}

/// `GET {base}/{type}/{id}`.
pub(crate) async fn read(State(ctx): State<VendorCtx>, Path((type_name, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let auth = match authenticate(&ctx, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(rtype) = crate::vendor::parse_type(&type_name) else { return unknown_type(&type_name, &auth.label) };
    let allowed = match permit(&ctx, &auth, rtype, Interaction::Read) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let shown: String = id.chars().take(64).collect();
    let Some(rec) = ctx.shared.data.record(ctx.vendor, rtype, &id) else {
        let issue = Issue::new("error", "not-found", format!("{rtype}/{shown} is not known")).detail(ctx.vendor, "4102", "The read resource request contained an invalid ID.");
        return log_token(outcome_response(StatusCode::NOT_FOUND, issue), Some(&auth.label));
    };
    if !allowed.admits(rec) {
        return forbidden(ctx.vendor, &needed_scope(ctx.vendor, rtype, Interaction::Read), &auth.label);
    }
    log_auth(fhir_response(StatusCode::OK, rec.json.get().to_owned()), &auth)
}

/// `GET {base}/{type}?…`.
pub(crate) async fn search_get(State(ctx): State<VendorCtx>, Path(type_name): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let pairs: Vec<(String, String)> = query.as_deref().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    search(&ctx, &type_name, pairs, &headers).await
}

/// `POST {base}/{type}/_search` with a form body.
pub(crate) async fn search_post(State(ctx): State<VendorCtx>, Path(type_name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    search(&ctx, &type_name, pairs, &headers).await
}

fn bad_request(issue: Issue, label: &str) -> Response {
    log_token(outcome_response(StatusCode::BAD_REQUEST, issue), Some(label))
}

fn category_codes(req: &SearchRequest) -> Vec<&str> {
    req.filters_named("category")
        .flat_map(|f| f.values.iter())
        .filter_map(|v| match v {
            FilterValue::Token { code: Some(c), .. } => Some(c.as_str()),
            _ => None,
        })
        .collect()
}

/// Epic's required parameters and sub-API categories.
fn epic_rules(rtype: ResourceType, req: &SearchRequest) -> Result<(), Issue> {
    let v = Vendor::Epic;
    if rtype == ResourceType::Patient {
        let has = |n: &str| req.filters_named(n).next().is_some();
        let demographic = usize::from(has("name") || has("family") || has("given")) + usize::from(has("birthdate")) + usize::from(has("gender"));
        if req.ids.is_empty() && !has("identifier") && demographic < 2 {
            return Err(Issue::new("fatal", "required", "Patient search needs _id, identifier, or two of name, birthdate and gender")
                .detail(v, "4110", "No search criteria given or the minimum data set was not met."));
        }
        return Ok(());
    }
    if req.patients.is_empty() && req.ids.is_empty() {
        return Err(Issue::new("fatal", "required", "patient is required")
            .detail(v, "4111", "A required parameter is missing: patient.")
            .at_param("patient"));
    }
    let codes = category_codes(req);
    let allowed = match rtype {
        ResourceType::Observation => {
            if req.ids.is_empty() && req.filters_named("category").next().is_none() && req.filters_named("code").next().is_none() {
                return Err(Issue::new("fatal", "required", "category or code is required for Observation search")
                    .detail(v, "59108", "Either a category or a code must be specified.")
                    .at_param("category"));
            }
            Some((OBSERVATION_CATEGORIES, "59111"))
        }
        ResourceType::Condition => Some((CONDITION_CATEGORIES, "4115")),
        ResourceType::DocumentReference => Some((DOCUMENT_CATEGORIES, "4115")),
        _ => None,
    };
    if let Some((known, code)) = allowed
        && let Some(bad) = codes.iter().find(|c| !known.contains(c))
    {
        let shown: String = bad.chars().take(64).collect();
        return Err(Issue::new("fatal", "value", format!("category {shown:?} is not valid for {rtype}; valid: {}", known.join(", ")))
            .detail(v, code, "A required parameter has an invalid value: category.")
            .at_param("category"));
    }
    Ok(())
}

#[derive(Serialize)]
struct Link {
    relation: &'static str,
    url: String,
}

#[derive(Serialize)]
struct SearchMode {
    mode: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EntryResource<'a> {
    Stored(&'a RawValue),
    Built(Value),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    resource: EntryResource<'a>,
    search: SearchMode,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    last_updated: String,
}

#[derive(Serialize)]
struct Bundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: Meta,
    #[serde(rename = "type")]
    kind: &'static str,
    total: usize,
    link: Vec<Link>,
    entry: Vec<Entry<'a>>,
}

struct Page<'a> {
    rtype: ResourceType,
    total: usize,
    records: Vec<&'a Record>,
    self_url: String,
    next_url: Option<String>,
    outcomes: Vec<Issue>,
}

fn bundle_response(ctx: &VendorCtx, page: Page<'_>, auth: &Authorized) -> Response {
    let base = ctx.shared.fhir_base(ctx.vendor);
    let mut entry: Vec<Entry<'_>> = page
        .records
        .iter()
        .map(|r| Entry { full_url: Some(format!("{base}/{}/{}", page.rtype, r.id)), resource: EntryResource::Stored(&r.json), search: SearchMode { mode: "match" } })
        .collect();
    if !page.outcomes.is_empty() {
        entry.push(Entry { full_url: None, resource: EntryResource::Built(operation_outcome(&page.outcomes)), search: SearchMode { mode: "outcome" } });
    }
    let mut link = vec![Link { relation: "self", url: page.self_url }];
    if let Some(next) = page.next_url {
        link.push(Link { relation: "next", url: next });
    }
    let b = Bundle {
        resource_type: "Bundle",
        id: uuid::Uuid::new_v4().to_string(),
        meta: Meta { last_updated: crate::date::rfc3339(ctx.shared.clock.now_unix()) },
        kind: "searchset",
        total: page.total,
        link,
        entry,
    };
    match serde_json::to_string(&b) {
        Ok(body) => log_auth(fhir_response(StatusCode::OK, body), auth),
        Err(_) => log_auth(outcome_response(StatusCode::INTERNAL_SERVER_ERROR, Issue::new("fatal", "exception", "the Bundle could not be written")), auth),
    }
}

fn query_string(pairs: &[(String, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

async fn search(ctx: &VendorCtx, type_name: &str, pairs: Vec<(String, String)>, headers: &HeaderMap) -> Response {
    let auth = match authenticate(ctx, headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(rtype) = crate::vendor::parse_type(type_name) else { return unknown_type(type_name, &auth.label) };
    let allowed = match permit(ctx, &auth, rtype, Interaction::Search) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let vendor = ctx.vendor;
    let mut req = match search::parse(rtype, &pairs) {
        Ok(r) => r,
        Err(e) => {
            let issue = Issue::new("error", "invalid", e.to_string()).detail(vendor, "4115", "A parameter has an invalid value.").at_param(&e.param);
            return bad_request(issue, &auth.label);
        }
    };
    match vendor {
        Vendor::Epic => {
            if let Some(token) = req.page_token.take() {
                return epic_page(ctx, &auth, rtype, &token);
            }
            if req.page.take().is_some() {
                req.ignored.push(ECW_PAGE_PARAM.to_owned());
            }
            if let Err(issue) = epic_rules(rtype, &req) {
                return bad_request(issue, &auth.label);
            }
        }
        Vendor::EClinicalWorks => {
            if req.page_token.take().is_some() {
                req.ignored.push(EPIC_PAGE_PARAM.to_owned());
            }
        }
    }
    let page_no = req.page.unwrap_or(1);
    if page_fault(ctx, page_no) {
        return unauthorized(vendor, "the access token is not valid for this page", Some(&auth.label));
    }

    let data = ctx.shared.data;
    let side = data.side(vendor);
    let found = search::run(side, rtype, &req);
    let before = found.len();
    let records = &side.types[rtype.index()].records;
    let matches: Vec<u32> = found.into_iter().filter(|&i| records.get(i as usize).is_some_and(|r| allowed.admits(r))).collect();
    let narrowed = matches.len() < before;

    let settings = ctx.shared.settings(vendor);
    let page_size = req.count.unwrap_or(settings.default_page_size).min(settings.max_page_size);
    let base = ctx.shared.fhir_base(vendor);
    let self_url = if pairs.is_empty() { format!("{base}/{rtype}") } else { format!("{base}/{rtype}?{}", query_string(&pairs)) };
    let total = matches.len();

    let mut outcomes = Vec::new();
    if vendor == Vendor::Epic {
        for name in &req.ignored {
            outcomes.push(
                Issue::new("warning", "not-supported", format!("parameter {name} is not supported and was ignored"))
                    .detail(vendor, "4122", "A search parameter was not recognized and was ignored.")
                    .at_param(name),
            );
        }
        if narrowed {
            outcomes.push(Issue::new("warning", "suppressed", format!("Client not authorized for part of {rtype}: results outside the granted scope are not returned")).detail(
                vendor,
                "59204",
                "The authenticated client's search request applies to a sub-resource that the client is not authorized for. Results of this sub-type will not be returned.",
            ));
        }
        if total == 0 {
            outcomes.push(Issue::new("warning", "informational", "no resources match the search").detail(vendor, "4101", "Resource request returns no results."));
        }
    }

    let (start, next_url) = match vendor {
        Vendor::Epic => {
            let mut next = None;
            if page_size > 0 && total > page_size {
                let now = ctx.shared.clock.monotonic();
                let expires = now.add(settings.page_link_ttl);
                let session = lock(&ctx.shared.sessions).open(rtype, Arc::new(matches.clone()), page_size, expires, now);
                next = session.token_of(2).map(|t| format!("{base}/{rtype}?{EPIC_PAGE_PARAM}={t}"));
            }
            (0, next)
        }
        Vendor::EClinicalWorks => {
            let start = page_no.saturating_sub(1).saturating_mul(page_size);
            let next = (page_size > 0 && start.saturating_add(page_size) < total).then(|| {
                let mut next_pairs: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != ECW_PAGE_PARAM).cloned().collect();
                next_pairs.push((ECW_PAGE_PARAM.to_owned(), (page_no + 1).to_string()));
                format!("{base}/{rtype}?{}", query_string(&next_pairs))
            });
            (start, next)
        }
    };
    let page_records: Vec<&Record> = matches.iter().skip(start).take(page_size).filter_map(|&i| records.get(i as usize)).collect();
    bundle_response(ctx, Page { rtype, total, records: page_records, self_url, next_url, outcomes }, &auth)
}

/// An Epic page after the first, named by its opaque token.
fn epic_page(ctx: &VendorCtx, auth: &Authorized, rtype: ResourceType, token: &str) -> Response {
    let now = ctx.shared.clock.monotonic();
    let found = lock(&ctx.shared.sessions).page(token, now);
    let Some((session, page_no)) = found.filter(|(s, _)| s.rtype == rtype) else {
        let issue = Issue::new("fatal", "processing", "the paging session has expired or does not exist; run the search again")
            .detail(Vendor::Epic, "4113", "The cached search session has expired.")
            .at_param(EPIC_PAGE_PARAM);
        return bad_request(issue, &auth.label);
    };
    if page_fault(ctx, page_no) {
        return unauthorized(ctx.vendor, "the access token is not valid for this page", Some(&auth.label));
    }
    let base = ctx.shared.fhir_base(ctx.vendor);
    let records = &ctx.shared.data.side(ctx.vendor).types[rtype.index()].records;
    let PagingSession { matches, page_size, .. } = &*session;
    let page_records: Vec<&Record> = matches.iter().skip(page_no.saturating_sub(1).saturating_mul(*page_size)).take(*page_size).filter_map(|&i| records.get(i as usize)).collect();
    let next_url = session.token_of(page_no + 1).map(|t| format!("{base}/{rtype}?{EPIC_PAGE_PARAM}={t}"));
    let self_url = format!("{base}/{rtype}?{EPIC_PAGE_PARAM}={token}");
    bundle_response(ctx, Page { rtype, total: matches.len(), records: page_records, self_url, next_url, outcomes: Vec::new() }, auth)
}

/// `GET {base}/metadata`: a CapabilityStatement naming the eleven types, their search
/// parameters and the token endpoint (no token needed).
pub(crate) async fn metadata(State(ctx): State<VendorCtx>) -> Response {
    let vendor = ctx.vendor;
    let resources: Vec<Value> = ResourceType::ALL
        .iter()
        .map(|t| {
            let mut params: Vec<Value> = vec![serde_json::json!({"name": "_id", "type": "token"})];
            if let Some((_, names)) = patient_link(*t) {
                params.extend(names.iter().map(|n| serde_json::json!({"name": n, "type": "reference"})));
            }
            for spec in specs(*t) {
                let ty = match spec.kind {
                    crate::index::Kind::Token => "token",
                    crate::index::Kind::Date => "date",
                    crate::index::Kind::Reference => "reference",
                    crate::index::Kind::Str => "string",
                };
                params.extend(spec.names.iter().map(|n| serde_json::json!({"name": n, "type": ty})));
            }
            serde_json::json!({"type": t.as_str(), "interaction": [{"code": "read"}, {"code": "search-type"}], "searchParam": params})
        })
        .collect();
    let software = match vendor {
        Vendor::Epic => "MEDICODAX sandbox (Epic-like)",
        Vendor::EClinicalWorks => "MEDICODAX sandbox (eClinicalWorks-like)",
    };
    let body = serde_json::json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": crate::date::rfc3339(ctx.shared.clock.now_unix()),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "software": {"name": software},
        "implementation": {"description": software, "url": ctx.shared.fhir_base(vendor)},
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris", "extension": [{"url": "token", "valueUri": ctx.shared.token_url(vendor)}]}]
            },
            "resource": resources
        }]
    });
    fhir_response(StatusCode::OK, body.to_string())
}
