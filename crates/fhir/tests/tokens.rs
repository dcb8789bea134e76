//! Pitfalls 12 and 14: the token source is asked before every request; a 401 renews once
//! and retries once with the same URL; a 403 is never retried and never renews.

mod common;

use common::*;
use medicodax_clock::{Clock, ManualClock};
use medicodax_fhir::{FhirError, Search, SearchProfile, UpstreamLog};
use medicodax_wire::{FhirId, ProblemCode, ResourceType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// eCW-style pages: `Observation?patient=pt-1001&_count=50[&page=k]`, 12 pages of 50,
/// the stub taking 30 s (on the manual clock) before each answer.
struct TwelvePages {
    clock: ManualClock,
    fail_401_on: Option<u32>,
    hits: Mutex<HashMap<u32, u32>>,
    base: String,
}

impl Respond for TwelvePages {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.clock.advance_secs(30);
        let k: u32 = query_param(req, "page").map(|p| p.parse().unwrap()).unwrap_or(1);
        let hit = {
            let mut h = self.hits.lock().unwrap();
            let e = h.entry(k).or_default();
            *e += 1;
            *e
        };
        if self.fail_401_on == Some(k) && hit == 1 {
            return ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Bearer realm="fhir.ecw-test.example", error="invalid_token""#);
        }
        let resources = (0..50).map(|i| obs(&format!("obs-{k}-{i}"))).collect();
        let next = (k < 12).then(|| format!("{}/Observation?patient=pt-1001&_count=50&page={}", self.base, k + 1));
        fhir_json(&page(resources, Some(600), next.as_deref()))
    }
}

async fn twelve_pages(fail_401_on: Option<u32>) -> (Vec<Request>, Result<medicodax_fhir::SearchOutcome, FhirError>, Arc<FakeTokens>, UpstreamLog) {
    let server = MockServer::start().await;
    let clock = ManualClock::new(NOW);
    let tokens = FakeTokens::new(&clock, 300); // eCW: 300 s, renewed at 240 s
    let base = format!("{}/fhir/r4", server.uri());
    Mock::given(any())
        .respond_with(TwelvePages { clock: clock.clone(), fail_401_on, hits: Mutex::default(), base: base.clone() })
        .mount(&server)
        .await;
    let client = client_with(&base, SearchProfile::generic(), exact_retry(), &clock, tokens.clone());
    let log = UpstreamLog::new();
    let search = Search::from_pairs(ResourceType::Observation, [("patient", "pt-1001"), ("_count", "50")]);
    let out = client.search(&search, &log).await;
    (server.received_requests().await.unwrap(), out, tokens, log)
}

#[tokio::test]
async fn pitfall_12_token_renewed_between_pages_without_401s() {
    let (reqs, out, tokens, log) = twelve_pages(None).await;
    let out = out.unwrap();
    let used: Vec<String> = reqs.iter().map(token_of).collect();
    let mut expected = vec!["at-1".to_owned(); 8];
    expected.extend(vec!["at-2".to_owned(); 4]);
    assert_eq!(used, expected, "pages 1–8 carry at-1, pages 9–12 at-2 (renewed at t = 240 s)");
    assert_eq!(tokens.minted(), 2);
    assert!(tokens.invalidated().is_empty());
    assert!(log.snapshot().iter().all(|u| u.status == 200), "no 401s");
    assert_eq!(out.resources.len(), 600, "entry count = the sum over pages");
    assert_eq!(out.pages, 12);
    assert!(!out.incomplete);
    assert_eq!(out.total, Some(600));
    assert!(out.errors.is_empty());
}

#[tokio::test]
async fn pitfall_12_variant_401_on_page_6_renews_once_and_retries_the_same_url() {
    let (reqs, out, tokens, log) = twelve_pages(Some(6)).await;
    let out = out.unwrap();
    assert_eq!(reqs.len(), 13, "12 pages plus one retry");
    assert_eq!(target_of(&reqs[5]), target_of(&reqs[6]), "page 6 is retried with the same next URL");
    assert_eq!(target_of(&reqs[6]), "/fhir/r4/Observation?patient=pt-1001&_count=50&page=6");
    let used: Vec<String> = reqs.iter().map(token_of).collect();
    assert_eq!(&used[..6], &["at-1"; 6]);
    assert_eq!(&used[6..], &["at-2"; 7]);
    assert_eq!(tokens.invalidated(), vec!["at-1"], "exactly the rejected token is invalidated");
    assert_eq!(tokens.minted(), 2, "renewed once");
    let statuses: Vec<u16> = log.snapshot().iter().map(|u| u.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 1);
    assert_eq!(statuses[5], 401);
    assert_eq!(out.resources.len(), 600);
    assert!(!out.incomplete);
}

/// Answers 401 to the listed tokens and a Patient to anything else; `on_request` runs first.
struct ByToken {
    reject: Vec<&'static str>,
    on_request: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Respond for ByToken {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        if let Some(f) = &self.on_request {
            f();
        }
        if self.reject.contains(&token_of(req).as_str()) {
            ResponseTemplate::new(401).insert_header("WWW-Authenticate", r#"Bearer realm="fhir.epic-test.example", error="invalid_token""#)
        } else {
            fhir_json(&serde_json::json!({"resourceType":"Patient","id":"pt-1001"}))
        }
    }
}

fn pt() -> FhirId {
    FhirId::new("pt-1001").unwrap()
}

#[tokio::test]
async fn pitfall_14a_401_renews_once_and_retries_once() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ByToken { reject: vec!["at-1"], on_request: None }).mount(&server).await;
    let (client, tokens, _) = client_for(&server, SearchProfile::generic());
    let log = UpstreamLog::new();
    let p = client.read(ResourceType::Patient, &pt(), &log).await.unwrap();
    assert_eq!(p["id"], "pt-1001");
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.iter().map(token_of).collect::<Vec<_>>(), ["at-1", "at-2"]);
    assert_eq!(tokens.invalidated(), vec!["at-1"]);
    assert_eq!(tokens.minted(), 2);
    assert_eq!(log.snapshot().iter().map(|u| u.status).collect::<Vec<_>>(), [401, 200]);
}

#[tokio::test]
async fn pitfall_14b_second_401_is_an_error_after_exactly_two_requests() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ByToken { reject: vec!["at-1", "at-2", "at-3"], on_request: None }).mount(&server).await;
    let (client, tokens, _) = client_for(&server, SearchProfile::generic());
    let err = client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await.unwrap_err();
    assert_eq!(err, FhirError::Unauthorized);
    assert_eq!(err.problem_code(), ProblemCode::EhrUnavailable);
    assert_eq!(server.received_requests().await.unwrap().len(), 2, "exactly 2 FHIR requests");
    assert_eq!(tokens.minted(), 2, "exactly 1 mint after the first token");
    // Also for a search: the same single renewal, then the error.
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ByToken { reject: vec!["at-1", "at-2", "at-3"], on_request: None }).mount(&server).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let err = client.search(&Search::new(ResourceType::Patient).param("name", "x"), &UpstreamLog::new()).await.unwrap_err();
    assert_eq!(err, FhirError::Unauthorized);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn pitfall_14c_insufficient_scope_is_typed_not_retried_not_renewed() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(403).insert_header("WWW-Authenticate", r#"Bearer error="insufficient_scope", scope="system/Specimen.read""#))
        .mount(&server)
        .await;
    let (client, tokens, clock) = client_for(&server, SearchProfile::generic());
    let log = UpstreamLog::new();
    let err = client.search(&Search::new(ResourceType::Observation).param("patient", "pt-1001"), &log).await.unwrap_err();
    assert_eq!(err, FhirError::ScopeDenied { scope: Some("system/Specimen.read".into()), resource_type: ResourceType::Observation });
    assert_eq!(err.problem_code(), ProblemCode::Denied);
    assert!(err.to_string().contains("system/Specimen.read"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "no retry");
    assert_eq!(tokens.minted(), 1, "no renewal");
    assert!(tokens.invalidated().is_empty(), "403 never invalidates the token");
    assert_eq!(clock.monotonic().0, Duration::ZERO, "no back-off either");
    let audit = log.snapshot();
    assert_eq!(audit.len(), 1, "the request is there for the audit record");
    assert_eq!((audit[0].method.as_str(), audit[0].path.as_str(), audit[0].status), ("GET", "Observation?patient=pt-1001", 403));
}

#[tokio::test]
async fn plain_403_is_forbidden_with_its_outcome_and_never_retried() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(outcome(403, "error", "forbidden", "The authenticated user is not authorized to view the requested data"))
        .mount(&server)
        .await;
    let (client, tokens, _) = client_for(&server, SearchProfile::generic());
    let err = client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await.unwrap_err();
    let FhirError::Forbidden { resource_type, issues } = &err else { panic!("{err:?}") };
    assert_eq!(*resource_type, ResourceType::Patient);
    assert_eq!(issues[0].diagnostics.as_deref(), Some("The authenticated user is not authorized to view the requested data"));
    assert!(err.is_access_denied());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    assert!(tokens.invalidated().is_empty());
}

#[tokio::test]
async fn pitfall_14d_401_after_another_worker_renewed_mints_no_third_token() {
    let server = MockServer::start().await;
    let clock = ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    let t = tokens.clone();
    // While the at-1 request is in flight, another worker obtains at-2.
    let renew_once = Arc::new(std::sync::Once::new());
    let hook: Arc<dyn Fn() + Send + Sync> = Arc::new(move || renew_once.call_once(|| drop(t.renew_elsewhere())));
    Mock::given(any()).respond_with(ByToken { reject: vec!["at-1"], on_request: Some(hook) }).mount(&server).await;
    let client = client_with(&format!("{}/fhir/r4", server.uri()), SearchProfile::generic(), exact_retry(), &clock, tokens.clone());
    let p = client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await.unwrap();
    assert_eq!(p["resourceType"], "Patient");
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.iter().map(token_of).collect::<Vec<_>>(), ["at-1", "at-2"], "retried with the other worker's token");
    assert_eq!(tokens.minted(), 2, "no third token");
    assert_eq!(tokens.invalidated(), vec!["at-1"]);
}

#[tokio::test]
async fn token_source_failures_send_nothing() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let (client, tokens, _) = client_for(&server, SearchProfile::generic());
    tokens.fail_next_bearer(medicodax_fhir::TokenError::Misconfigured { detail: "invalid_client".into() });
    let err = client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await.unwrap_err();
    assert_eq!(err, FhirError::Token(medicodax_fhir::TokenError::Misconfigured { detail: "invalid_client".into() }));
    assert_eq!(err.problem_code(), ProblemCode::EhrUnavailable);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_request_sends_accept_and_the_token_never_appears_in_errors_or_logs() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ByToken { reject: vec!["at-1", "at-2"], on_request: None }).mount(&server).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let log = UpstreamLog::new();
    let err = client.read(ResourceType::Patient, &pt(), &log).await.unwrap_err();
    for r in server.received_requests().await.unwrap() {
        assert_eq!(r.headers.get("accept").unwrap(), "application/fhir+json");
    }
    let text = format!("{err} {err:?} {:?} {client:?}", log.snapshot());
    assert!(!text.contains("at-1") && !text.contains("at-2"), "{text}");
    assert!(!format!("{:?}", log.snapshot()).contains("127.0.0.1"), "the audit record has no host");
}
