//! The pitfalls cases of issue 4's "Must show" list, end to end through one gateway
//! (`server::build`, the HTTP API on a loopback listener) in front of a wiremock EHR
//! (token endpoint and FHIR server on one mock), so every request that reaches the EHR
//! is counted and every answer is asserted byte for byte:
//!
//! - cases 16 and 29: a type the EHR did not grant is refused locally with the uniform
//!   403, whether or not data exists, and nothing reaches the FHIR server; a response
//!   without `scope` grants what was asked; `invalid_scope` is not retried;
//! - refused call tokens (cases 30, 31, 34 and friends): 401/413, no receipt, nothing
//!   audited, nothing sent to the EHR;
//! - case 20: an ignored narrowing parameter fails closed; an ignored parameter of the
//!   caller's own does not;
//! - case 3, the audit part: `invalid_client` leaves one redacted system event;
//! - case 9, the audit part: every key-rotation step is in the log, and receipts switch
//!   key only once the new key has been published for the publish lead.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medicodax_agent::{AgentClient, ReceiptError, SignedCall, VerifiedReceipt, verify_receipt};
use medicodax_audit::TailEntry;
use medicodax_clock::{Clock, ManualClock, SharedClock, SystemClock};
use medicodax_config::{AgentConfig, Config, ConnectionConfig, KeysConfig, RoleConfig, Vendor};
use medicodax_gateway::server::{self, Paths};
use medicodax_gateway::service::{Gateway, KeyRotationError};
use medicodax_jose::{Alg, Jwks, PrivateKey, VerifyingKey, jws};
use medicodax_wire::audit::{AuditRecord, OutcomeRecord, SystemEvent};
use medicodax_wire::{CALL_TYP, Decision, Problem, ToolName};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The pitfalls' fixed test clock (2026-01-01T00:00:00Z).
const NOW: i64 = 1_767_225_600;
const CONN: &str = "vendor-b";
const CLIENT_ID: &str = "cid-vendor-b-0001";
const AGENT: &str = "agent-runner-test";
/// The user the agent acts for; holds role [`ROLE`], as does the agent.
const USER: &str = "coder";
const ROLE: &str = "coder";
const DAY: i64 = 24 * 3600;
const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

struct Options {
    /// The scopes the connection requests.
    requested: Vec<&'static str>,
    /// The role's scopes (agent and user alike).
    role_scopes: Vec<&'static str>,
    /// The role's patient list.
    patients: Option<Vec<&'static str>>,
    clock: SharedClock,
    /// `keys.gateway_alg`.
    gateway_alg: &'static str,
}

impl Options {
    fn new(requested: &[&'static str], role_scopes: &[&'static str]) -> Self {
        Options { requested: requested.to_vec(), role_scopes: role_scopes.to_vec(), patients: None, clock: SystemClock::shared(), gateway_alg: "RS384" }
    }
}

struct Env {
    gw: Arc<Gateway>,
    url: String,
    http: reqwest::Client,
    agent: AgentClient,
    agent_key: Arc<PrivateKey>,
    /// The EHR: `/token` and the FHIR base `/fhir/r4`.
    ehr: MockServer,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A gateway built from a configuration as the binary builds it, serving the full router
/// on a loopback port (without the key ticker: tests step key schedules themselves).
async fn start(o: Options) -> Env {
    medicodax_jose::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ehr = MockServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let key = Arc::new(PrivateKey::generate(Alg::RS384).unwrap());
    let jwks = dir.path().join("agent.jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
    let mut config = Config::default();
    config.gateway.listen = addr.to_string();
    config.keys = KeysConfig { publish_lead: DAY, consumer_cache_ttl: DAY, jwks_max_age: 3600, gateway_alg: o.gateway_alg.into() };
    config.connections = vec![ConnectionConfig {
        scopes: o.requested.iter().map(|s| (*s).to_owned()).collect(),
        token_url: Some(format!("{}/token", ehr.uri())),
        ..ConnectionConfig::new(CONN, Vendor::Generic, &format!("{}/fhir/r4", ehr.uri()), CLIENT_ID)
    }];
    let tools = ToolName::ALL.map(|t| t.as_str().to_owned()).to_vec();
    let role = RoleConfig {
        scopes: o.role_scopes.iter().map(|s| (*s).to_owned()).collect(),
        tools,
        patients: o.patients.map(|p| p.iter().map(|s| (*s).to_owned()).collect()),
        ..RoleConfig::default()
    };
    config.roles.insert(ROLE.into(), role);
    config.agents = vec![AgentConfig { id: AGENT.into(), jwks: Some(jwks), jwks_url: None, roles: vec![ROLE.into()], may_act_for: vec![format!("role:{ROLE}")] }];
    config.validate().unwrap();

    let data_dir = dir.path().join("data");
    let paths = Paths { data_dir: data_dir.clone(), config_dir: dir.path().to_owned() };
    let (gw, _) = server::build(config, &paths, o.clock.clone()).await.unwrap();
    gw.users.add(USER, "correct horse battery staple", &[ROLE.to_owned()], gw.clock.now_unix_millis()).await.unwrap();
    let app = server::router(Arc::clone(&gw)).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}");
    let agent = AgentClient::new(AGENT, Arc::clone(&key), &url, gw.audience(), o.clock).unwrap();
    Env { gw, url, http: reqwest::Client::new(), agent, agent_key: key, ehr, data_dir, _dir: dir }
}

/// The token endpoint answers every request with `status` and `body`.
async fn token_endpoint(env: &Env, status: u16, body: Value) {
    Mock::given(method("POST")).and(path("/token")).respond_with(ResponseTemplate::new(status).set_body_json(body)).mount(&env.ehr).await;
}

/// A token response granting `scope`.
fn granted(scope: &str) -> Value {
    json!({"access_token": "at-B1", "token_type": "Bearer", "expires_in": 300, "scope": scope})
}

fn fhir_json(body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/fhir+json")
}

fn searchset(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}

fn match_entry(resource: Value) -> Value {
    let url = format!("https://fhir.vendor-b.example/fhir/r4/{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap());
    json!({"fullUrl": url, "search": {"mode": "match"}, "resource": resource})
}

fn outcome_entry(issue: Value) -> Value {
    json!({"search": {"mode": "outcome"}, "resource": {"resourceType": "OperationOutcome", "issue": [issue]}})
}

/// A laboratory Observation of `pt-1001`.
fn lab_observation(id: &str, text: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
           "code": {"text": text}, "subject": {"reference": "Patient/pt-1001"}})
}

/// What the gateway answered over HTTP.
struct Answer {
    status: u16,
    body: Vec<u8>,
    receipt: Option<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `POST /v1/calls` with `body` as an `application/jwt` call.
async fn post(env: &Env, body: impl Into<reqwest::Body>) -> Answer {
    let r = env.http.post(format!("{}/v1/calls", env.url)).header("content-type", "application/jwt").body(body).send().await.unwrap();
    let status = r.status().as_u16();
    let receipt = r.headers().get(medicodax_gateway::http::RECEIPT_HEADER).map(|v| v.to_str().unwrap().to_owned());
    Answer { status, body: r.bytes().await.unwrap().to_vec(), receipt }
}

fn sign(env: &Env, tool: &str, args: Value) -> SignedCall {
    let Value::Object(args) = args else { panic!("args must be an object") };
    env.agent.sign(USER, tool, args, None).unwrap()
}

/// Signs a call of `tool` with `args` as the agent and sends it.
async fn call(env: &Env, tool: &str, args: Value) -> (SignedCall, Answer) {
    let c = sign(env, tool, args);
    let a = post(env, c.jws.clone()).await;
    (c, a)
}

async fn search(env: &Env, t: &str, params: Value) -> (SignedCall, Answer) {
    call(env, "fhir.search", json!({"connection": CONN, "type": t, "params": params})).await
}

/// The gateway's published JWKS, fetched over HTTP.
async fn published(env: &Env) -> Jwks {
    let body = env.http.get(format!("{}/.well-known/jwks.json", env.url)).send().await.unwrap().bytes().await.unwrap();
    Jwks::from_json(&body).unwrap()
}

fn kids(set: &Jwks) -> BTreeSet<String> {
    set.keys.iter().filter_map(|k| k.kid().map(str::to_owned)).collect()
}

/// The answer's receipt checked against the JWKS published now, the call and the body.
async fn receipt(env: &Env, a: &Answer, c: &SignedCall) -> Result<VerifiedReceipt, ReceiptError> {
    let keys: Vec<VerifyingKey> = published(env).await.keys.iter().filter_map(|k| VerifyingKey::from_jwk(k).ok()).collect();
    verify_receipt(a.receipt.as_deref().expect("a receipt"), &keys, &c.jws, &c.claims.jti, &a.body)
}

/// The decoded JOSE header of a compact JWS.
fn jws_header(compact: &str) -> Value {
    serde_json::from_slice(&B64.decode(compact.split('.').next().unwrap()).unwrap()).unwrap()
}

async fn log(env: &Env) -> Vec<TailEntry> {
    medicodax_audit::tail(env.gw.audit.db(), 100_000).await.unwrap()
}

/// The one outcome record of `jti`.
async fn outcome(env: &Env, jti: &str) -> OutcomeRecord {
    let found: Vec<OutcomeRecord> = log(env)
        .await
        .into_iter()
        .filter_map(|e| match e.entry.record {
            AuditRecord::Outcome(o) if o.jti == jti => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one outcome for {jti}: {found:?}");
    found.into_iter().next().unwrap()
}

/// The system events of the log, in order.
async fn events(env: &Env) -> Vec<SystemEvent> {
    log(env)
        .await
        .into_iter()
        .filter_map(|e| match e.entry.record {
            AuditRecord::Event(ev) => Some(ev),
            _ => None,
        })
        .collect()
}

/// `(event, subject)` of the system events named `key.*`.
async fn key_events(env: &Env) -> Vec<(String, String)> {
    events(env).await.into_iter().filter(|e| e.event.starts_with("key.")).map(|e| (e.event, e.subject)).collect()
}

/// The stored canonical bytes of every audit entry.
async fn stored_entries(env: &Env) -> Vec<Vec<u8>> {
    medicodax_audit::with_pool!(env.gw.audit.db(), pool => sqlx::query_scalar::<_, Vec<u8>>("SELECT canonical FROM audit_entries ORDER BY seq").fetch_all(pool).await).unwrap()
}

/// Requests the EHR received whose path starts with `prefix`.
async fn ehr_requests(env: &Env, prefix: &str) -> Vec<wiremock::Request> {
    env.ehr.received_requests().await.unwrap_or_default().into_iter().filter(|r| r.url.path().starts_with(prefix)).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Cases 16 and 29

/// Case 16 (a): the EHR grants fewer scopes than requested. A search of a type it did not
/// grant is refused locally with the uniform 403, audited with the missing scope and
/// receipted, and reaches neither the FHIR server nor the token endpoint again; a granted
/// type goes through. Case 29: with AllergyIntolerance not granted, a patient with
/// allergies and one without get byte-identical 403s and no upstream request.
#[tokio::test]
async fn pitfalls_16_and_29_types_the_ehr_did_not_grant_are_refused_locally_and_uniformly() {
    let requested = ["system/Patient.read", "system/Observation.read", "system/Condition.read"];
    let env = start(Options::new(&requested, &["system/*.rs"])).await;
    token_endpoint(&env, 200, granted("system/Patient.read system/Condition.read")).await;
    let condition = json!({"resourceType": "Condition", "id": "cond-1", "subject": {"reference": "Patient/pt-1001"}, "code": {"text": "Asthma"}});
    Mock::given(method("GET")).and(path("/fhir/r4/Condition")).respond_with(fhir_json(&searchset(vec![match_entry(condition)]))).mount(&env.ehr).await;
    // The EHR has allergies for pt-1001 and none for pt-2002: whatever it holds, no request may reach it.
    let allergy = json!({"resourceType": "AllergyIntolerance", "id": "al-1", "patient": {"reference": "Patient/pt-1001"}, "code": {"text": "Penicillin"}});
    Mock::given(method("GET"))
        .and(path("/fhir/r4/AllergyIntolerance"))
        .and(query_param("patient", "pt-1001"))
        .respond_with(fhir_json(&searchset(vec![match_entry(allergy)])))
        .mount(&env.ehr)
        .await;
    Mock::given(method("GET")).and(path("/fhir/r4/AllergyIntolerance")).respond_with(fhir_json(&searchset(vec![]))).mount(&env.ehr).await;
    Mock::given(method("GET")).and(path("/fhir/r4/Observation")).respond_with(fhir_json(&searchset(vec![match_entry(lab_observation("obs-1", "Hb"))]))).mount(&env.ehr).await;
    let denied = serde_json::to_vec(&Problem::denied()).unwrap();

    // A granted type reaches the EHR: the counting below can see requests.
    let (c, a) = search(&env, "Condition", json!([["patient", "pt-1001"]])).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["resources"][0]["id"], json!("cond-1"));
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Allowed);
    assert_eq!(ehr_requests(&env, "/fhir/").await.len(), 1);
    assert_eq!(ehr_requests(&env, "/token").await.len(), 1);
    let o = outcome(&env, &c.claims.jti).await;
    assert_eq!(o.granted_scopes, ["system/Patient.read", "system/Condition.read"]);

    // Observation was requested but not granted.
    let (c, a) = search(&env, "Observation", json!([["patient", "pt-1001"]])).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body, denied, "the uniform denial, byte for byte");
    let r = receipt(&env, &a, &c).await.unwrap();
    assert_eq!(r.claims.decision, Decision::Denied);
    let o = outcome(&env, &c.claims.jti).await;
    assert_eq!((o.decision, o.code.as_deref()), (Decision::Denied, Some("denied")));
    assert_eq!(o.reason.as_deref(), Some("denied: ehr-scope-not-granted: system/Observation.s"), "the reason names the missing scope");
    assert_eq!(o.granted_scopes, ["system/Patient.read", "system/Condition.read"], "the grant the decision was made on");
    assert!(o.upstream.is_empty() && o.resources.is_empty(), "{o:?}");
    assert_eq!(r.claims.seq, log(&env).await.last().unwrap().seq, "the receipt names the outcome record");
    assert!(ehr_requests(&env, "/fhir/r4/Observation").await.is_empty(), "nothing reached the FHIR server");
    assert_eq!(ehr_requests(&env, "/fhir/").await.len(), 1);
    assert_eq!(ehr_requests(&env, "/token").await.len(), 1, "no token request for other scopes either");

    // Case 29: data or no data, the same 403 and no upstream request.
    let (c1, a1) = search(&env, "AllergyIntolerance", json!([["patient", "pt-1001"]])).await;
    let (c2, a2) = search(&env, "AllergyIntolerance", json!([["patient", "pt-2002"]])).await;
    assert_eq!((a1.status, a2.status), (403, 403));
    assert_eq!(a1.body, a2.body, "byte-identical answers");
    assert_eq!(a1.body, denied);
    for (c, a) in [(&c1, &a1), (&c2, &a2)] {
        assert_eq!(receipt(&env, a, c).await.unwrap().claims.decision, Decision::Denied);
        let o = outcome(&env, &c.claims.jti).await;
        assert_eq!(o.reason.as_deref(), Some("denied: ehr-scope-not-granted: system/AllergyIntolerance.s"));
        assert!(o.upstream.is_empty() && o.patients.is_empty());
    }
    assert!(ehr_requests(&env, "/fhir/r4/AllergyIntolerance").await.is_empty());
    assert_eq!(ehr_requests(&env, "/fhir/").await.len(), 1);
    assert_eq!(ehr_requests(&env, "/token").await.len(), 1);
}

/// Case 16 (b): a token response without `scope` grants what was requested (RFC 6749
/// §5.1), and the outcome record says so.
#[tokio::test]
async fn pitfall_16b_a_response_without_scope_grants_the_requested_scopes() {
    let env = start(Options::new(&["system/Patient.read", "system/Condition.read"], &["system/*.rs"])).await;
    token_endpoint(&env, 200, json!({"access_token": "at-B2", "token_type": "Bearer", "expires_in": 300})).await;
    Mock::given(method("GET")).and(path("/fhir/r4/Condition")).respond_with(fhir_json(&searchset(vec![]))).mount(&env.ehr).await;
    let (c, a) = search(&env, "Condition", json!([["patient", "pt-1001"]])).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(ehr_requests(&env, "/fhir/r4/Condition").await.len(), 1);
    assert_eq!(outcome(&env, &c.claims.jti).await.granted_scopes, ["system/Patient.read", "system/Condition.read"]);
    let (_, a) = search(&env, "Observation", json!([["patient", "pt-1001"]])).await;
    assert_eq!(a.status, 403, "not requested, so not granted");
}

/// Case 16 (c): `invalid_scope` is a configuration error naming the scopes asked for,
/// with no retry with other or broader scopes.
#[tokio::test]
async fn pitfall_16c_invalid_scope_names_the_scopes_and_is_not_retried_with_others() {
    let env = start(Options::new(&["system/Patient.read", "system/Observation.read"], &["system/*.rs"])).await;
    token_endpoint(&env, 400, json!({"error": "invalid_scope"})).await;
    for _ in 0..2 {
        let (c, a) = search(&env, "Patient", json!([["name", "Ann"]])).await;
        assert_eq!((a.status, a.json()["code"].clone()), (503, json!("ehr-unavailable")));
        assert_eq!(outcome(&env, &c.claims.jti).await.decision, Decision::Failed);
    }
    let sent = ehr_requests(&env, "/token").await;
    assert_eq!(sent.len(), 1, "one token request, no retry with other scopes");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&sent[0].body).into_owned().collect();
    assert!(form.contains(&("scope".to_owned(), "system/Patient.read system/Observation.read".to_owned())), "{form:?}");
    let found: Vec<SystemEvent> = events(&env).await.into_iter().filter(|e| e.event == "token.invalid_scope").collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].detail["requested_scope"], json!("system/Patient.read system/Observation.read"));
    assert!(ehr_requests(&env, "/fhir/").await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Refused call tokens

/// Claims of a well-formed call from the agent, at the gateway's `now`.
fn call_claims(env: &Env, jti: &str) -> Value {
    let now = env.gw.clock.now_unix();
    json!({"iss": AGENT, "sub": USER, "aud": env.gw.audience(), "iat": now, "exp": now + 120, "jti": jti,
           "tool": "fhir.search", "args": {"connection": CONN, "type": "Patient", "params": [["name", "Ann"]]}})
}

fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode(sig))
}

/// Every call token that does not verify is answered 401 (413 when too large) without a
/// receipt, writes nothing to the audit log, and makes no request at all: not to the
/// FHIR server, not to the token endpoint, not to a URL the token names. A good call
/// afterwards does reach the EHR, so the counters are live.
#[tokio::test]
async fn refused_call_tokens_make_no_request_write_nothing_and_get_no_receipt() {
    use aws_lc_rs::hmac;
    let env = start(Options::new(&["system/Patient.read"], &["system/*.rs"])).await;
    token_endpoint(&env, 200, granted("system/Patient.read")).await;
    let patient = json!({"resourceType": "Patient", "id": "pt-1001", "name": [{"given": ["Ann"]}]});
    Mock::given(method("GET")).and(path("/fhir/r4/Patient")).respond_with(fhir_json(&searchset(vec![match_entry(patient)]))).mount(&env.ehr).await;
    // A server a token could name (jku) to make us fetch keys from it.
    let attacker = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": []}))).mount(&attacker).await;

    let key = &env.agent_key;
    let kid = key.kid().to_owned();
    let good = |jti: &str| jws::sign(key, CALL_TYP, &call_claims(&env, jti)).unwrap();
    let header = |alg: &str| json!({"alg": alg, "typ": CALL_TYP, "kid": kid});
    let stranger = PrivateKey::generate(Alg::RS384).unwrap();
    let mut cases: Vec<(&str, String, u16)> = Vec::new();
    cases.push(("alg none", forge(&header("none"), &call_claims(&env, "j-none"), b""), 401));
    let hs_input = format!("{}.{}", B64.encode(header("HS256").to_string()), B64.encode(call_claims(&env, "j-hs256").to_string()));
    let hs_secret = serde_json::to_vec(key.public_jwk()).unwrap();
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &hs_secret), hs_input.as_bytes());
    cases.push(("HS256 keyed with our public key", format!("{hs_input}.{}", B64.encode(tag.as_ref())), 401));
    let mut expired = call_claims(&env, "j-expired");
    expired["iat"] = json!(env.gw.clock.now_unix() - 600);
    expired["exp"] = json!(env.gw.clock.now_unix() - 300);
    cases.push(("expired", jws::sign(key, CALL_TYP, &expired).unwrap(), 401));
    let mut wrong_aud = call_claims(&env, "j-aud");
    wrong_aud["aud"] = json!("https://gw-tools.other.example");
    cases.push(("wrong aud", jws::sign(key, CALL_TYP, &wrong_aud).unwrap(), 401));
    cases.push(("unknown kid", jws::sign(&stranger, CALL_TYP, &call_claims(&env, "j-kid")).unwrap(), 401));
    let jku = json!({"alg": "RS384", "typ": CALL_TYP, "kid": stranger.kid(), "jku": format!("{}/jwks.json", attacker.uri())});
    let jku_input = format!("{}.{}", B64.encode(jku.to_string()), B64.encode(call_claims(&env, "j-jku").to_string()));
    cases.push(("unknown kid with a jku", format!("{jku_input}.{}", B64.encode(b"not a signature")), 401));
    let mut unknown_iss = call_claims(&env, "j-iss");
    unknown_iss["iss"] = json!("agent-not-registered");
    cases.push(("unknown issuer", jws::sign(key, CALL_TYP, &unknown_iss).unwrap(), 401));
    // A good token whose payload is swapped for another (the search made wider).
    let parts: Vec<String> = good("j-tamper").split('.').map(str::to_owned).collect();
    let mut wider = call_claims(&env, "j-tamper");
    wider["args"]["params"] = json!([]);
    cases.push(("tampered payload", format!("{}.{}.{}", parts[0], B64.encode(wider.to_string()), parts[2]), 401));
    let mut flipped = parts[2].clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    cases.push(("tampered signature", format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(flipped).unwrap()), 401));
    let mut large = call_claims(&env, "j-large");
    large["args"]["params"] = json!([["name", "x".repeat(70_000)]]);
    cases.push(("too large", jws::sign(key, CALL_TYP, &large).unwrap(), 413));

    let size = env.gw.audit.head().size;
    let stored = stored_entries(&env).await.len();
    for (name, token, status) in &cases {
        let a = post(&env, token.clone()).await;
        assert_eq!(a.status, *status, "{name}: {}", String::from_utf8_lossy(&a.body));
        let p = a.json();
        assert_eq!(p["code"], json!(if *status == 413 { "too-large" } else { "invalid-call" }), "{name}: {p}");
        assert!(a.receipt.is_none(), "{name}: no receipt");
        assert_eq!(env.gw.audit.head().size, size, "{name}: nothing audited");
    }
    // The same, through the pipeline directly: no receipt, nothing audited.
    for (name, token, status) in &cases {
        let a = env.gw.handle_call(token.as_bytes(), medicodax_gateway::service::Channel::Http).await;
        assert_eq!((a.status, a.receipt.is_none(), a.decision), (*status, true, None), "{name}");
    }
    assert_eq!(env.gw.audit.head().size, size);
    assert_eq!(stored_entries(&env).await.len(), stored, "no row was written");
    assert!(env.ehr.received_requests().await.unwrap().is_empty(), "no request reached the EHR (token endpoint or FHIR)");
    assert!(attacker.received_requests().await.unwrap().is_empty(), "no URL named in a token was fetched");

    // A good call goes through and is counted: one token request, one search.
    let (c, a) = search(&env, "Patient", json!([["name", "Ann"]])).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Allowed);
    assert_eq!((ehr_requests(&env, "/token").await.len(), ehr_requests(&env, "/fhir/r4/Patient").await.len()), (1, 1));
    assert_eq!(env.gw.audit.head().size, size + 2, "intent and outcome");
}

// ---------------------------------------------------------------------------------------
// Case 20

/// A searchset with two results and an OperationOutcome entry saying `param` was ignored.
fn ignored_param_bundle(diagnostics: &str) -> Value {
    searchset(vec![
        match_entry(lab_observation("obs-1", "Hemoglobin")),
        outcome_entry(json!({"severity": "warning", "code": "not-supported", "diagnostics": diagnostics})),
        json!({"fullUrl": "https://fhir.vendor-b.example/fhir/r4/Observation/obs-2", "resource": lab_observation("obs-2", "Glucose")}),
    ])
}

/// Case 20 with a query-constrained scope: the gateway narrows the search with
/// `category=…|laboratory`; when the EHR says it ignored `category`, the answer holds no
/// resources, a `fail-closed` warning and `incomplete: true`, and so does the audit
/// record. When the EHR ignores a parameter of the caller's own (`date`) instead, the
/// results stand, with the notice as a warning.
#[tokio::test]
async fn pitfall_20_an_ignored_narrowing_parameter_fails_closed_and_a_callers_own_does_not() {
    let constrained = "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let env = start(Options::new(&["system/Observation.rs"], &[constrained])).await;
    token_endpoint(&env, 200, granted("system/Observation.rs")).await;
    Mock::given(method("GET"))
        .and(path("/fhir/r4/Observation"))
        .and(query_param("category", LAB))
        .and(query_param_is_missing("date"))
        .respond_with(fhir_json(&ignored_param_bundle("parameter category not understood, ignored")))
        .mount(&env.ehr)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/r4/Observation"))
        .and(query_param("category", LAB))
        .and(query_param("date", "ge2025-01-01"))
        .respond_with(fhir_json(&ignored_param_bundle("parameter date not understood, ignored")))
        .mount(&env.ehr)
        .await;

    let (c, a) = search(&env, "Observation", json!([["patient", "pt-1001"]])).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let body = a.json();
    assert_eq!(body["resources"], json!([]), "no results: they could be broader than the grant");
    assert_eq!(body["incomplete"], json!(true));
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["code"], json!("fail-closed"));
    assert!(warnings[0]["detail"].as_str().unwrap().contains("parameter category"), "{warnings:?}");
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Allowed);
    let sent = ehr_requests(&env, "/fhir/r4/Observation").await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0].url.query_pairs().any(|(k, v)| k == "category" && v == LAB), "the gateway added the narrowing: {}", sent[0].url);
    let o = outcome(&env, &c.claims.jti).await;
    assert_eq!(o.decision, Decision::Allowed);
    assert!(o.warnings.iter().any(|w| w.code == "fail-closed" && w.detail.contains("category")), "{:?}", o.warnings);
    assert!(o.resources.is_empty() && o.patients.is_empty(), "nothing was handed out: {o:?}");
    assert_eq!(o.upstream.len(), 1);

    // The caller's own parameter ignored: the results stand, the notice is a warning.
    let (c, a) = search(&env, "Observation", json!([["patient", "pt-1001"], ["date", "ge2025-01-01"]])).await;
    assert_eq!(a.status, 200);
    let body = a.json();
    let ids: Vec<&str> = body["resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["obs-1", "obs-2"], "an entry without a mode counts as a match; the OperationOutcome is not data");
    assert_eq!(body["incomplete"], json!(false));
    let codes: Vec<&str> = body["warnings"].as_array().unwrap().iter().map(|w| w["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["operation-outcome"], "{body}");
    // The agent sees the issue's severity and code, never the EHR's free text (it may name patients).
    assert_eq!(body["warnings"][0]["detail"], "warning not-supported", "{body}");
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Allowed);
    let o = outcome(&env, &c.claims.jti).await;
    assert!(o.warnings.iter().any(|w| w.code == "operation-outcome"), "{:?}", o.warnings);
    assert!(!o.warnings.iter().any(|w| w.code == "fail-closed"));
    let ids: Vec<&str> = o.resources.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["obs-1", "obs-2"]);
    assert_eq!(o.patients, ["pt-1001"]);
}

/// Case 20 with a patient list: `patient` keeps the search within the list, so an EHR
/// that says it ignored it (here in FHIR's `http.<name>` location form) gets no results
/// through.
#[tokio::test]
async fn pitfall_20_an_ignored_patient_parameter_under_a_patient_list_fails_closed() {
    let mut o = Options::new(&["system/Observation.rs"], &["system/Observation.rs"]);
    o.patients = Some(vec!["pt-1001"]);
    let env = start(o).await;
    token_endpoint(&env, 200, granted("system/Observation.rs")).await;
    let bundle = searchset(vec![
        match_entry(lab_observation("obs-1", "Hemoglobin")),
        outcome_entry(json!({"severity": "warning", "code": "processing", "details": {"coding": [{"code": "4122"}]}, "location": ["http.patient"]})),
    ]);
    Mock::given(method("GET")).and(path("/fhir/r4/Observation")).respond_with(fhir_json(&bundle)).mount(&env.ehr).await;

    let (c, a) = search(&env, "Observation", json!([["patient", "pt-1001"], ["code", "http://loinc.org|718-7"]])).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let body = a.json();
    assert_eq!((body["resources"].clone(), body["incomplete"].clone()), (json!([]), json!(true)));
    assert_eq!(body["warnings"][0]["code"], json!("fail-closed"));
    assert!(body["warnings"][0]["detail"].as_str().unwrap().contains("parameter patient"), "{body}");
    let o = outcome(&env, &c.claims.jti).await;
    assert!(o.warnings.iter().any(|w| w.code == "fail-closed" && w.detail.contains("patient")), "{:?}", o.warnings);
    assert!(o.resources.is_empty());
    assert_eq!(ehr_requests(&env, "/fhir/r4/Observation").await.len(), 1);

    // A patient outside the list is refused before any request.
    let (_, a) = search(&env, "Observation", json!([["patient", "pt-2002"]])).await;
    assert_eq!(a.body, serde_json::to_vec(&Problem::denied()).unwrap());
    assert_eq!(ehr_requests(&env, "/fhir/r4/Observation").await.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Case 3, the audit part

/// Case 3 (a): the token endpoint answers `400 invalid_client` with a null description.
/// The call fails with 503 `ehr-unavailable`; the log holds one `token.invalid_client`
/// event with the redacted account of what was sent (vendor, token URL, status, error,
/// JOSE header, claims, exp − iat) and nowhere (not in the log's stored bytes, not in
/// any file of the data folder, not in the answer) the assertion or its signature. A
/// second call fails fast, without another token request and without a second event
/// for the same refused request.
#[tokio::test]
async fn pitfall_3_invalid_client_is_audited_once_redacted_and_fails_the_call_fast() {
    let env = start(Options::new(&["system/Patient.read"], &["system/*.rs"])).await;
    token_endpoint(&env, 400, json!({"error": "invalid_client", "error_description": null})).await;
    let token_url = format!("{}/token", env.ehr.uri());

    let (c, a) = search(&env, "Patient", json!([["name", "Ann"]])).await;
    assert_eq!(a.status, 503, "{}", String::from_utf8_lossy(&a.body));
    let p = a.json();
    assert_eq!((p["code"].clone(), p["status"].clone()), (json!("ehr-unavailable"), json!(503)));
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Failed);
    let o = outcome(&env, &c.claims.jti).await;
    assert_eq!((o.decision, o.code.as_deref()), (Decision::Failed, Some("ehr-unavailable")));
    assert!(o.reason.as_deref().unwrap().starts_with("token: "), "{:?}", o.reason);

    // What we sent.
    let sent = ehr_requests(&env, "/token").await;
    assert_eq!(sent.len(), 1);
    assert!(ehr_requests(&env, "/fhir/").await.is_empty());
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&sent[0].body).into_owned().collect();
    let assertion = form.iter().find(|(k, _)| k == "client_assertion").map(|(_, v)| v.clone()).expect("a client assertion in the form");
    let segments: Vec<&str> = assertion.split('.').collect();
    assert_eq!(segments.len(), 3);
    let header = jws_header(&assertion);
    let claims: Value = serde_json::from_slice(&B64.decode(segments[1]).unwrap()).unwrap();

    // The event.
    let found: Vec<SystemEvent> = events(&env).await.into_iter().filter(|e| e.event == "token.invalid_client").collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let (e, d) = (&found[0], &found[0].detail);
    assert_eq!(e.subject, CONN);
    assert_eq!(d["vendor"], json!("generic"));
    assert_eq!(d["token_url"], json!(token_url));
    assert_eq!(d["http_status"], json!(400));
    assert_eq!(d["error"], json!("invalid_client"));
    assert_eq!(d["error_description"], Value::Null, "a JSON null description parses as absent");
    assert_eq!(d["request_content_type"], json!("application/x-www-form-urlencoded"));
    assert_eq!(d["requested_scope"], json!("system/Patient.read"));
    let h = &d["assertion"]["header"];
    assert_eq!((h["alg"].clone(), h["kid"].clone(), h["typ"].clone()), (header["alg"].clone(), header["kid"].clone(), header["typ"].clone()));
    assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("RS384"), Some("JWT")));
    let cl = &d["assertion"]["claims"];
    for k in ["iss", "sub", "aud", "jti"] {
        assert_eq!(cl[k], claims[k], "{k}");
    }
    assert_eq!((cl["iss"].as_str(), cl["aud"].as_str()), (Some(CLIENT_ID), Some(token_url.as_str())));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(d["assertion"]["exp_minus_iat"], json!(lifetime));
    assert!((1..=300).contains(&lifetime));

    // No JWS and no signature anywhere.
    let signature = segments[2].as_bytes();
    let whole = assertion.as_bytes();
    let rows = stored_entries(&env).await;
    assert!(rows.iter().any(|r| contains(r, b"token.invalid_client")), "the search below looks at the right rows");
    for r in &rows {
        assert!(!contains(r, signature) && !contains(r, whole), "a log entry holds the assertion: {}", String::from_utf8_lossy(r));
    }
    for f in files(&env.data_dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!contains(&bytes, signature), "{} holds the assertion's signature", f.display());
    }
    assert!(!contains(&a.body, signature) && !contains(&a.body, segments[1].as_bytes()), "the answer holds the assertion");

    // Fail fast: no second token request inside the slow-retry window, no second event.
    let (c2, a2) = search(&env, "Patient", json!([["name", "Ann"]])).await;
    assert_eq!(a2.status, 503);
    assert_eq!(a2.json()["code"], json!("ehr-unavailable"));
    assert_eq!(outcome(&env, &c2.claims.jti).await.decision, Decision::Failed);
    assert_eq!(ehr_requests(&env, "/token").await.len(), 1);
    assert_eq!(events(&env).await.iter().filter(|e| e.event == "token.invalid_client").count(), 1, "one refused request, one event");
}

// ---------------------------------------------------------------------------------------
// Case 9, the audit part

/// A gateway whose clock stands at [`NOW`] until the test moves it.
async fn start_on_manual_clock() -> (ManualClock, Env) {
    let clock = ManualClock::new(NOW);
    let mut o = Options::new(&["system/Patient.read"], &["system/*.rs"]);
    o.clock = clock.shared();
    (clock.clone(), start(o).await)
}

/// Case 9 on a manual clock: startup audits `key.created` for the gateway ring and the
/// connection ring. Starting rotations audits `key.rotation.started`; both old and new
/// keys are published at once and receipts keep the old key until the publish lead has
/// passed; the tick then audits `key.activated` and receipts carry the new kid. A
/// receipt signed before the rotation verifies against the published JWKS until
/// `activation + 300 s + consumer cache TTL`, when the tick audits `key.unpublished`
/// (a connection key's hold is its assertion lifetime plus the TTL).
#[tokio::test]
async fn pitfall_9_every_rotation_step_is_audited_and_receipts_switch_keys_only_when_published() {
    let (clock, env) = start_on_manual_clock().await;
    let gw = &env.gw;

    // Startup.
    let k1 = gw.keys.signer().kid().to_owned();
    let started = key_events(&env).await;
    assert!(started.contains(&("key.created".to_owned(), format!("gateway:{k1}"))), "{started:?}");
    // The connection's ring is named after the connection.
    let created_conn: Vec<&str> = started.iter().filter(|(e, _)| e == "key.created").filter_map(|(_, s)| s.strip_prefix(&format!("{CONN}:"))).collect();
    assert_eq!(created_conn.len(), 1, "{started:?}");
    let c1 = created_conn[0].to_owned();
    assert_eq!(kids(&published(&env).await), BTreeSet::from([k1.clone(), c1.clone()]));

    let (call0, before) = call(&env, "connections.list", json!({})).await;
    assert_eq!(before.status, 200);
    assert_eq!(jws_header(before.receipt.as_deref().unwrap())["kid"], json!(k1));

    // Start both rotations at T0.
    let size = gw.audit.head().size;
    let ev = gw.rotate_gateway_key().await.unwrap();
    assert_eq!((ev.event, ev.ring.as_str(), ev.at), ("key.rotation.started", "gateway", NOW));
    let k2 = ev.kid.clone();
    assert_ne!(k2, k1);
    assert_eq!(ev.detail, Some(json!({"from": k1, "activates_at": NOW + DAY})));
    let evc = gw.rotate_connection_key(CONN).await.unwrap();
    assert_eq!((evc.event, evc.ring.as_str()), ("key.rotation.started", CONN));
    let c2 = evc.kid.clone();
    assert_eq!(gw.audit.head().size, size + 2, "both starts are audited");
    let logged: Vec<SystemEvent> = events(&env).await.into_iter().rev().take(2).collect();
    assert_eq!((logged[1].event.as_str(), logged[1].subject.clone()), ("key.rotation.started", format!("gateway:{k2}")));
    assert_eq!(logged[1].detail["detail"]["from"], json!(k1));
    assert_eq!((logged[0].event.as_str(), logged[0].subject.clone()), ("key.rotation.started", format!("{CONN}:{c2}")));
    assert_eq!(logged[0].detail["detail"]["from"], json!(c1));
    // A second rotation while one is pending is refused and not audited.
    assert!(matches!(gw.rotate_gateway_key().await, Err(KeyRotationError::Gateway(_))));
    assert!(matches!(gw.rotate_connection_key("no-such-connection").await, Err(KeyRotationError::Connection(_))));
    assert_eq!(gw.audit.head().size, size + 2);
    // Published at once; still signing with the old key.
    assert_eq!(kids(&published(&env).await), BTreeSet::from([k1.clone(), k2.clone(), c1.clone(), c2.clone()]));
    let (_, a) = call(&env, "connections.list", json!({})).await;
    assert_eq!(jws_header(a.receipt.as_deref().unwrap())["kid"], json!(k1));
    assert!(gw.tick_keys().await.is_empty(), "nothing is due before the publish lead");

    // Just before the lead: still k1. Past it: the tick activates k2 and c2.
    clock.advance_secs(DAY as u64 - 1);
    let (_, a) = call(&env, "connections.list", json!({})).await;
    assert_eq!(jws_header(a.receipt.as_deref().unwrap())["kid"], json!(k1));
    clock.advance_secs(61);
    let size = gw.audit.head().size;
    let steps = gw.tick_keys().await;
    let mut got: Vec<String> = steps.iter().map(|e| format!("{} {}", e.event, e.kid)).collect();
    got.sort();
    let mut want = vec![format!("key.activated {k2}"), format!("key.activated {c2}")];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(gw.audit.head().size, size + 2, "both activations are audited");
    let activated: Vec<SystemEvent> = events(&env).await.into_iter().filter(|e| e.event == "key.activated").collect();
    let gw_step = activated.iter().find(|e| e.subject == format!("gateway:{k2}")).expect("the gateway key's activation is audited");
    let unpublish_at = NOW + DAY + 300 + DAY;
    assert_eq!(gw_step.detail["detail"], json!({"previous": k1, "previous_unpublished_at": unpublish_at}));
    assert!(activated.iter().any(|e| e.subject == format!("{CONN}:{c2}") && e.detail["detail"]["previous"] == json!(c1)), "{activated:?}");
    let (c, a) = call(&env, "connections.list", json!({})).await;
    assert_eq!(jws_header(a.receipt.as_deref().unwrap())["kid"], json!(k2), "receipts now use the new key");
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Allowed);
    assert_eq!(receipt(&env, &before, &call0).await.unwrap().claims.decision, Decision::Allowed, "the old receipt still verifies");
    assert_eq!(kids(&published(&env).await), BTreeSet::from([k1.clone(), k2.clone(), c1.clone(), c2.clone()]));

    // Each old key stays published until its last use can have expired and left every
    // consumer's cache: one second before, a tick does nothing; at that second it goes.
    // The connection's hold is its assertion lifetime plus the cache TTL, the gateway's
    // 300 s plus the cache TTL.
    let conn_step = activated.iter().find(|e| e.subject == format!("{CONN}:{c2}")).unwrap();
    let conn_unpublish_at = conn_step.detail["detail"]["previous_unpublished_at"].as_i64().unwrap();
    assert!((NOW + 2 * DAY..=unpublish_at).contains(&conn_unpublish_at), "{conn_unpublish_at}");
    let mut last_tick = clock.now_unix();
    for (at, kid, ring) in [(conn_unpublish_at, &c1, CONN), (unpublish_at, &k1, "gateway")] {
        if at - 1 > last_tick {
            clock.advance_secs((at - 1 - last_tick) as u64);
            let early = gw.tick_keys().await;
            assert!(early.is_empty(), "{early:?}");
            assert!(kids(&published(&env).await).contains(kid));
            if kid == &k1 {
                assert_eq!(receipt(&env, &before, &call0).await.unwrap().claims.decision, Decision::Allowed, "a second before, k1 is still published");
            }
        }
        clock.advance_secs((at - clock.now_unix()) as u64);
        last_tick = at;
        let size = gw.audit.head().size;
        let gone: Vec<String> = gw.tick_keys().await.into_iter().map(|e| format!("{} {}", e.event, e.kid)).collect();
        assert_eq!(gone, [format!("key.unpublished {kid}")]);
        assert_eq!(gw.audit.head().size, size + 1, "the unpublish step is audited");
        assert_eq!(key_events(&env).await.last(), Some(&("key.unpublished".to_owned(), format!("{ring}:{kid}"))));
        assert!(!kids(&published(&env).await).contains(kid));
    }
    assert_eq!(kids(&published(&env).await), BTreeSet::from([k2.clone(), c2.clone()]), "the JWKS is never empty and holds the signers");
    assert_eq!(receipt(&env, &before, &call0).await.unwrap_err(), ReceiptError::UnknownKid, "the old key is no longer published");
    let (c, a) = call(&env, "connections.list", json!({})).await;
    assert_eq!(receipt(&env, &a, &c).await.unwrap().claims.decision, Decision::Allowed, "new receipts verify");
}

/// The ticker `serve` runs calls [`Gateway::tick_keys`]: on a manual clock, a rotation
/// whose publish lead has passed is activated and audited without a test calling it.
#[tokio::test]
async fn the_key_ticker_audits_activation_on_its_own() {
    let (clock, env) = start_on_manual_clock().await;
    let k2 = env.gw.rotate_gateway_key().await.unwrap().kid;
    let ticker = server::spawn_key_ticker(Arc::clone(&env.gw));
    tokio::task::yield_now().await;
    // An hour in, the ticker has nothing to activate.
    clock.advance_secs(3600);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!key_events(&env).await.iter().any(|(e, _)| e == "key.activated"));
    // Past the lead it activates and audits; its next sleep may have begun after the
    // jump, so keep the clock moving a minute at a time until it has ticked.
    clock.advance_secs(DAY as u64);
    let want = ("key.activated".to_owned(), format!("gateway:{k2}"));
    let mut seen = false;
    for _ in 0..500 {
        if key_events(&env).await.contains(&want) {
            seen = true;
            break;
        }
        clock.advance_secs(60);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ticker.abort();
    assert!(seen, "the ticker audited {want:?}");
}

/// A slow EHR cannot hold a call past its own expiry plus leeway (two minutes at most):
/// the gateway answers 504 `ehr-timeout` with a receipt, and the outcome record says the
/// call ran out of time.
#[tokio::test]
async fn a_call_that_outlives_its_time_waiting_for_the_ehr_fails_with_504() {
    let (clock, env) = start_on_manual_clock().await;
    token_endpoint(&env, 200, granted("system/Patient.read")).await;
    let patient = json!({"resourceType": "Patient", "id": "pt-1001"});
    Mock::given(method("GET")).and(path("/fhir/r4/Patient/pt-1001")).respond_with(fhir_json(&patient).set_delay(Duration::from_secs(600))).mount(&env.ehr).await;
    let c = sign(&env, "fhir.read", json!({"connection": CONN, "type": "Patient", "id": "pt-1001"}));
    // Its own expiry plus the 30 s leeway, capped at two minutes.
    let budget = (c.claims.exp.0 + 30 - NOW).clamp(5, 120);
    let pending = tokio::spawn({
        let (http, url, jws) = (env.http.clone(), env.url.clone(), c.jws.clone());
        async move {
            let r = http.post(format!("{url}/v1/calls")).header("content-type", "application/jwt").body(jws).send().await.unwrap();
            let receipt = r.headers().get(medicodax_gateway::http::RECEIPT_HEADER).map(|v| v.to_str().unwrap().to_owned());
            Answer { status: r.status().as_u16(), receipt, body: r.bytes().await.unwrap().to_vec() }
        }
    });
    // Once the EHR holds the request, move the gateway's clock to one second short of the
    // deadline (nothing happens), then past it.
    while ehr_requests(&env, "/fhir/r4/Patient").await.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clock.advance(Duration::from_secs(u64::try_from(budget).unwrap() - 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    if pending.is_finished() {
        let a = pending.await.unwrap();
        panic!("the call should still wait within its time: {} {}", a.status, String::from_utf8_lossy(&a.body));
    }
    clock.advance(Duration::from_secs(2));
    let a = tokio::time::timeout(Duration::from_secs(20), pending).await.expect("answered once the deadline passed").unwrap();
    assert_eq!(a.status, 504, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["code"], "ehr-timeout");
    assert!(a.json()["detail"].as_str().unwrap().contains(&format!("({budget} s)")), "{}", a.json());
    assert!(receipt(&env, &a, &c).await.is_ok(), "a timed-out call still gets a receipt");
    let o = outcome(&env, &c.claims.jti).await;
    assert_eq!(o.decision, Decision::Failed);
    assert_eq!(o.reason.as_deref(), Some("ehr: call deadline"));
}

/// `keys.gateway_alg = "ES384"`: receipts and checkpoints are signed with a P-384 key that
/// the published JWKS carries, and both verify as RS384 ones do.
#[tokio::test]
async fn an_es384_gateway_key_signs_receipts_and_checkpoints() {
    let mut o = Options::new(&["system/Patient.read"], &["system/*.rs"]);
    o.gateway_alg = "ES384";
    let env = start(o).await;
    let (c, a) = call(&env, "connections.list", json!({})).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(jws_header(a.receipt.as_deref().unwrap())["alg"], "ES384");
    let r = receipt(&env, &a, &c).await.expect("the receipt verifies against the published JWKS");
    assert_eq!(r.claims.decision, Decision::Allowed);
    let jwks = published(&env).await;
    assert!(jwks.keys.iter().all(|k| k.kid().is_some()));
    let cp = env.gw.audit.checkpoint().await.unwrap();
    assert_eq!(jws_header(&cp.jws)["alg"], "ES384");
    let report = medicodax_audit::verify(env.gw.audit.db(), &medicodax_audit::CheckpointKeys::from_jwks(&jwks), &medicodax_audit::VerifyOptions { origin: Some(env.gw.audience().to_owned()), external_checkpoint: None }).await.unwrap();
    assert!(report.ok && report.latest_checkpoint.is_some(), "{report:?}");
}

/// `worksheet.submit` cannot plant a worksheet: the encounter must exist and be readable by
/// the agent, its subject must be the patient named, `pipeline_ms` is at most a day, and
/// the worksheet must have the shape the dashboard reads. Only the good one is stored.
#[tokio::test]
async fn worksheet_submit_checks_the_encounter_and_the_worksheet() {
    let env = start(Options::new(&["system/Encounter.read"], &["system/*.rs"])).await;
    token_endpoint(&env, 200, granted("system/Encounter.read")).await;
    let enc = json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/pt-1001"}});
    Mock::given(method("GET")).and(path("/fhir/r4/Encounter/e1")).respond_with(fhir_json(&enc)).mount(&env.ehr).await;
    let missing = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]});
    Mock::given(method("GET")).and(path("/fhir/r4/Encounter/nope")).respond_with(ResponseTemplate::new(404).set_body_raw(missing.to_string(), "application/fhir+json")).mount(&env.ehr).await;
    let ws = json!({"diagnoses": [{"condition_id": "c1", "suggestions": [{"code": "I10", "confidence": 0.9}]}]});
    let args = |encounter: &str, patient: &str, pipeline_ms: u64, worksheet: &Value| json!({"connection": CONN, "encounter": encounter, "patient": patient, "class": "AMB", "pipeline_ms": pipeline_ms, "worksheet": worksheet});
    let cases = [
        ("no such encounter", args("nope", "pt-1001", 1200, &ws), 404),
        ("another patient's encounter", args("e1", "pt-2002", 1200, &ws), 400),
        ("a patient id that only ends the same", args("e1", "1001", 1200, &ws), 400),
        ("pipeline_ms over a day", args("e1", "pt-1001", 99_999_999_999_999, &ws), 400),
        ("no diagnoses", args("e1", "pt-1001", 1200, &json!({})), 400),
        ("diagnoses not a list", args("e1", "pt-1001", 1200, &json!({"diagnoses": 5})), 400),
        ("a code that is not a string", args("e1", "pt-1001", 1200, &json!({"diagnoses": [{"suggestions": [{"code": 42}]}]})), 400),
    ];
    for (what, a, status) in cases {
        let (_, ans) = call(&env, "worksheet.submit", a).await;
        assert_eq!(ans.status, status, "{what}: {}", String::from_utf8_lossy(&ans.body));
    }
    assert!(env.gw.worksheets.list(100).await.unwrap().is_empty(), "nothing stored");
    let (c, ans) = call(&env, "worksheet.submit", args("e1", "pt-1001", 1200, &ws)).await;
    assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
    assert_eq!(ans.json()["status"], "pending");
    assert_eq!(env.gw.worksheets.list(100).await.unwrap().len(), 1);
    let o = outcome(&env, &c.claims.jti).await;
    assert_eq!(o.patients, ["pt-1001"]);
}
