//! Pitfall 21: vendor-required search parameters, and a 403 on one type of a multi-type
//! job as a partial result.

mod common;

use common::*;
use medicodax_fhir::{DEFAULT_OBSERVATION_CATEGORIES, FhirError, Search, SearchProfile, UpstreamLog};
use medicodax_wire::{FhirId, ProblemCode, ResourceType};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn required_400() -> ResponseTemplate {
    outcome(400, "fatal", "required", "category is required")
}

fn all_observations() -> Search {
    Search::from_pairs(ResourceType::Observation, [("patient", "pt-1001")])
}

/// Epic-like: a bare Observation search is refused; per category some answers.
async fn epic_like(fail: &'static [&'static str]) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(move |r: &Request| match query_param(r, "category").as_deref() {
            None => required_400(),
            Some(c) if fail.contains(&c) && c == "exam" => outcome(400, "fatal", "value", "59111 invalid category exam"),
            Some(c) if fail.contains(&c) => ResponseTemplate::new(500),
            Some("laboratory") => fhir_json(&page(vec![obs("obs-1"), obs("obs-2")], Some(2), None)),
            Some("vital-signs") => fhir_json(&page(vec![obs("obs-2"), obs("obs-3")], Some(2), None)),
            Some("social-history") => fhir_json(&page(vec![obs("obs-4")], Some(1), None)),
            Some(_) => fhir_json(&page(vec![], Some(0), None)),
        })
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn pitfall_21a_epic_splits_per_category_merges_and_dedupes() {
    let server = epic_like(&[]).await;
    let (client, _, _) = client_for(&server, SearchProfile::observation_needs_category());
    let out = client.search(&all_observations(), &UpstreamLog::new()).await.unwrap();
    let ids: Vec<&str> = out.resources.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["obs-1", "obs-2", "obs-3", "obs-4"], "merged, obs-2 once");
    assert!(!out.incomplete);
    assert_eq!(out.total, None, "per-category totals overlap, so no total is claimed");
    let reqs = server.received_requests().await.unwrap();
    let cats: Vec<String> = reqs.iter().map(|r| query_param(r, "category").expect("the bare query is never sent")).collect();
    assert_eq!(cats, DEFAULT_OBSERVATION_CATEGORIES);
    assert_eq!(target_of(&reqs[0]), "/fhir/r4/Observation?patient=pt-1001&_count=50&category=laboratory");
}

#[tokio::test]
async fn pitfall_21a_each_category_failure_is_reported_separately() {
    let server = epic_like(&["social-history", "exam"]).await;
    let (client, _, _) = client_for(&server, SearchProfile::observation_needs_category());
    let out = client.search(&all_observations(), &UpstreamLog::new()).await.unwrap();
    let ids: Vec<&str> = out.resources.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["obs-1", "obs-2", "obs-3"]);
    assert!(out.incomplete);
    assert_eq!(out.errors.len(), 2);
    let FhirError::CategoryFailed { category, cause } = &out.errors[0] else { panic!("{:?}", out.errors) };
    assert_eq!(category, "social-history");
    assert!(matches!(**cause, FhirError::HttpStatus { status: 500, .. }), "{cause:?}");
    let FhirError::CategoryFailed { category, cause } = &out.errors[1] else { panic!("{:?}", out.errors) };
    assert_eq!(category, "exam");
    assert_eq!(cause.issues()[0].diagnostics.as_deref(), Some("59111 invalid category exam"));
    let wire = out.into_search_result();
    let failed: Vec<&str> = wire.warnings.iter().filter(|w| w.code == "category-failed").map(|w| w.detail.as_str()).collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0].starts_with("the \"social-history\" part of the search failed"), "{failed:?}");
    assert!(failed[1].contains("59111 invalid category exam"), "{failed:?}");
    assert!(server.received_requests().await.unwrap().iter().all(|r| query_param(r, "category").is_some()));
}

#[tokio::test]
async fn pitfall_21a_all_categories_failing_is_an_error_and_explicit_categories_are_not_split() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    let (client, _, _) = client_for(&server, SearchProfile::observation_needs_category());
    let err = client.search(&all_observations(), &UpstreamLog::new()).await.unwrap_err();
    assert!(matches!(&err, FhirError::CategoryFailed { category, .. } if category == "laboratory"), "{err:?}");

    let server = epic_like(&[]).await;
    let (client, _, _) = client_for(&server, SearchProfile::observation_needs_category());
    let out = client.search(&all_observations().param("category", "vital-signs"), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 2);
    assert_eq!(out.total, Some(2));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn pitfall_21b_athena_like_searches_observation_by_subject() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(|r: &Request| {
            if query_param(r, "patient").is_some() {
                outcome(400, "error", "business-rule", "patient is not supported; use subject or _id")
            } else {
                fhir_json(&page(vec![obs("obs-1")], Some(1), None))
            }
        })
        .mount(&server)
        .await;
    let (client, _, _) = client_for(&server, SearchProfile::observation_by_subject());
    let out = client.search(&all_observations(), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 1);
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(target_of(&reqs[0]), "/fhir/r4/Observation?subject=Patient/pt-1001");
}

#[tokio::test]
async fn pitfall_21c_unknown_vendor_diagnostics_reach_the_caller_and_other_types_continue() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(|r: &Request| match r.url.path() {
            "/fhir/r4/Observation" => required_400(),
            "/fhir/r4/Procedure" => ResponseTemplate::new(403).insert_header("WWW-Authenticate", r#"Bearer error="insufficient_scope", scope="system/Procedure.rs""#),
            _ => fhir_json(&page(vec![serde_json::json!({"resourceType":"Condition","id":"c-1"})], Some(1), None)),
        })
        .mount(&server)
        .await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let pt = FhirId::new("pt-1001").unwrap();
    let jobs = [
        Search::new(ResourceType::Observation).patient(&pt),
        Search::new(ResourceType::Condition).patient(&pt),
        Search::new(ResourceType::Procedure).patient(&pt),
    ];
    let log = UpstreamLog::new();
    let results = client.search_all(&jobs, 2, &log).await;
    assert_eq!(results.iter().map(|r| r.resource_type).collect::<Vec<_>>(), [ResourceType::Observation, ResourceType::Condition, ResourceType::Procedure]);

    let err = results[0].result.as_ref().unwrap_err();
    let FhirError::Rejected { status: 400, issues } = err else { panic!("{err:?}") };
    assert_eq!(issues[0].diagnostics.as_deref(), Some("category is required"));
    assert!(err.to_string().contains("category is required"), "{err}");
    assert_eq!(err.problem_code(), ProblemCode::EhrError);
    assert!(!results[0].withheld());

    assert_eq!(results[1].result.as_ref().unwrap().resources.len(), 1, "other types continue");
    assert!(results[2].withheld(), "a 403 withholds the type, it does not fail the job");
    assert_eq!(log.len(), 3);
}

#[tokio::test]
async fn search_all_bounds_concurrency() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let server = MockServer::start().await;
    let (f, p) = (in_flight.clone(), peak.clone());
    Mock::given(any())
        .respond_with(move |_: &Request| {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(30));
            f.fetch_sub(1, Ordering::SeqCst);
            fhir_json(&page(vec![], Some(0), None))
        })
        .mount(&server)
        .await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let jobs: Vec<Search> = ResourceType::ALL.iter().filter(|t| **t != ResourceType::Patient).map(|t| Search::new(*t).param("patient", "pt-1")).collect();
    let results = client.search_all(&jobs, 3, &UpstreamLog::new()).await;
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(|r| r.result.is_ok()));
    assert!(peak.load(Ordering::SeqCst) <= 3, "peak {}", peak.load(Ordering::SeqCst));
}
