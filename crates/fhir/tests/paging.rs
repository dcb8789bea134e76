//! Pitfalls 17, 19 and 20: next links resolved per RFC 3986 and sent verbatim, kept on the
//! connection's origin and base; loops and late failures end the walk, marked
//! incomplete; OperationOutcome entries are warnings, never data.

mod common;

use common::*;
use futures::StreamExt;
use medicodax_fhir::{FhirBase, FhirError, NextLinkProblem, Search, SearchProfile, UpstreamLog};
use medicodax_wire::ResourceType;
use serde_json::{Value, json};
use std::sync::Arc;
use url::Url;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const R: &str = "https://fhir.vendor-b.example/fhir/r4/Observation?patient=pt-1001&_count=50";

fn vendor_b() -> FhirBase {
    FhirBase::parse("https://fhir.vendor-b.example/fhir/r4").unwrap()
}

#[test]
fn pitfall_17_resolution_against_the_request_url() {
    let b = vendor_b();
    let r = Url::parse(R).unwrap();
    let ok = |link: &str| b.resolve_next(&r, link).unwrap().to_string();
    // 1. relative to the host root
    assert_eq!(ok("/fhir/r4?_getpages=7c1e&_getpagesoffset=50&_count=50"), "https://fhir.vendor-b.example/fhir/r4?_getpages=7c1e&_getpagesoffset=50&_count=50");
    // 2. relative path
    assert_eq!(ok("Observation?patient=pt-1001&_count=50&_page=2"), "https://fhir.vendor-b.example/fhir/r4/Observation?patient=pt-1001&_count=50&_page=2");
    // 3. query only: the same as 2
    assert_eq!(ok("?patient=pt-1001&_count=50&_page=2"), "https://fhir.vendor-b.example/fhir/r4/Observation?patient=pt-1001&_count=50&_page=2");
    // 4. not a valid relative reference to a FHIR path
    assert_eq!(
        b.resolve_next(&r, "&search-offset=50&_count=50"),
        Err(NextLinkProblem::OutsideBase { path: "/fhir/r4/&search-offset=50&_count=50".into(), base_path: "/fhir/r4".into() })
    );
    // 5. the query kept byte for byte: %7C not re-encoded, nothing split at http://
    let u = b.resolve_next(&r, "Encounter?type=http://fhir.example.org/CodeSystem/kontakt%7Cstation&_page=2").unwrap();
    assert_eq!(u.as_str(), "https://fhir.vendor-b.example/fhir/r4/Encounter?type=http://fhir.example.org/CodeSystem/kontakt%7Cstation&_page=2");
    assert_eq!(u.query(), Some("type=http://fhir.example.org/CodeSystem/kontakt%7Cstation&_page=2"));
}

/// A server whose answers depend on the request target.
async fn serve(f: impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(f).mount(&server).await;
    server
}

fn obs_search() -> Search {
    Search::from_pairs(ResourceType::Observation, [("patient", "pt-1001"), ("_count", "50")])
}

/// Page 1 carries `next`; whatever the link resolves to answers with page 2 (no next).
async fn follow(next: &'static str) -> (Vec<String>, Result<medicodax_fhir::SearchOutcome, FhirError>) {
    let server = serve(move |r: &Request| {
        if r.url.path() == "/fhir/r4/Observation" && query_param(r, "_page").is_none() {
            fhir_json(&page(vec![obs("o-1")], Some(2), Some(next)))
        } else {
            fhir_json(&page(vec![obs("o-2")], None, None))
        }
    })
    .await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search(), &UpstreamLog::new()).await;
    let targets = server.received_requests().await.unwrap().iter().map(target_of).collect();
    (targets, out)
}

#[tokio::test]
async fn pitfall_17_links_are_followed_on_the_wire() {
    let (t, out) = follow("/fhir/r4?_getpages=7c1e&_getpagesoffset=50&_count=50").await;
    assert_eq!(t[1], "/fhir/r4?_getpages=7c1e&_getpagesoffset=50&_count=50");
    assert_eq!(out.unwrap().resources.len(), 2);

    for link in ["Observation?patient=pt-1001&_count=50&_page=2", "?patient=pt-1001&_count=50&_page=2"] {
        let (t, out) = follow(link).await;
        assert_eq!(t, ["/fhir/r4/Observation?patient=pt-1001&_count=50", "/fhir/r4/Observation?patient=pt-1001&_count=50&_page=2"], "{link}");
        let out = out.unwrap();
        assert!(!out.incomplete);
        assert_eq!(out.resources.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["o-1", "o-2"]);
    }

    let (t, out) = follow("Encounter?type=http://fhir.example.org/CodeSystem/kontakt%7Cstation&_page=2").await;
    assert_eq!(t[1], "/fhir/r4/Encounter?type=http://fhir.example.org/CodeSystem/kontakt%7Cstation&_page=2", "byte for byte");
    assert!(!out.unwrap().incomplete);
}

#[tokio::test]
async fn pitfall_17_case_4_stops_incomplete_and_requests_nothing() {
    let (t, out) = follow("&search-offset=50&_count=50").await;
    assert_eq!(t.len(), 1, "nothing is requested for the bad link");
    let out = out.unwrap();
    assert!(out.incomplete);
    assert_eq!(out.resources.len(), 1, "page 1 is kept");
    assert_eq!(
        out.errors,
        vec![FhirError::InvalidNextLink {
            page: 1,
            problem: NextLinkProblem::OutsideBase { path: "/fhir/r4/&search-offset=50&_count=50".into(), base_path: "/fhir/r4".into() }
        }]
    );
    let wire = out.into_search_result();
    assert!(wire.incomplete);
    assert_eq!(wire.warnings.last().unwrap().code, "invalid-next-link");
    assert!(wire.warnings.last().unwrap().detail.contains("not a FHIR path under the base"), "{:?}", wire.warnings);
}

#[tokio::test]
async fn pitfall_17_case_6_a_loop_stops_paging() {
    // page 1 → page 2 → page 1 again
    let server = serve(|r: &Request| {
        if query_param(r, "_page").is_none() {
            fhir_json(&page(vec![obs("o-1")], Some(2), Some("Observation?patient=pt-1001&_count=50&_page=2")))
        } else {
            fhir_json(&page(vec![obs("o-2")], Some(2), Some("Observation?patient=pt-1001&_count=50")))
        }
    })
    .await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(out.errors, vec![FhirError::PagingLoop { page: 2 }]);
    assert!(out.incomplete);
    assert_eq!(out.resources.len(), 2);
    // A page that links to itself is a loop too.
    let server = serve(|_: &Request| fhir_json(&page(vec![obs("o-1")], None, Some("Observation?patient=pt-1001&_count=50")))).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.errors, vec![FhirError::PagingLoop { page: 1 }]);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_token_never_leaves_the_origin() {
    let elsewhere = serve(|_: &Request| fhir_json(&page(vec![obs("stolen")], None, None))).await;
    let other = format!("{}/fhir/r4/Observation?page=2", elsewhere.uri());
    let server = serve(move |_: &Request| fhir_json(&page(vec![obs("o-1")], None, Some(&other)))).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap();
    assert!(elsewhere.received_requests().await.unwrap().is_empty(), "nothing, least of all the token, goes elsewhere");
    assert!(out.incomplete);
    let FhirError::InvalidNextLink { page: 1, problem: NextLinkProblem::OtherOrigin { origin, expected } } = &out.errors[0] else {
        panic!("{:?}", out.errors)
    };
    assert_eq!(origin, &format!("http://127.0.0.1:{}", elsewhere.address().port()));
    assert_eq!(expected, &format!("http://127.0.0.1:{}", server.address().port()));

    // Redirects are not followed either.
    let target = format!("{}/fhir/r4/Patient/pt-1001", elsewhere.uri());
    let redirecting = serve(move |_: &Request| ResponseTemplate::new(302).insert_header("Location", target.as_str())).await;
    let (client, _, _) = client_for(&redirecting, SearchProfile::generic());
    let err = client.read(ResourceType::Patient, &medicodax_wire::FhirId::new("pt-1001").unwrap(), &UpstreamLog::new()).await.unwrap_err();
    assert!(matches!(err, FhirError::HttpStatus { status: 302, .. }), "{err:?}");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}

/// 6,000 characters of continuation token with `%2B`, `%2F` and `%3D` in it.
fn long_token(len: usize) -> String {
    let unit = "Ab9%2Bx%2Fy%3Dz-";
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

async fn late_failure(token_len: usize, page2_status: u16) -> (Vec<String>, medicodax_fhir::SearchOutcome) {
    let token = long_token(token_len);
    let server = MockServer::start().await;
    let next = format!("{}/fhir/r4/Patient?name=Rivera&gender=female&ct={token}", server.uri());
    Mock::given(any())
        .respond_with(move |r: &Request| {
            if query_param(r, "ct").is_none() {
                fhir_json(&page(vec![json!({"resourceType":"Patient","id":"pt-1"}), json!({"resourceType":"Patient","id":"pt-2"})], Some(4), Some(&next)))
            } else if page2_status == 200 {
                fhir_json(&page(vec![json!({"resourceType":"Patient","id":"pt-3"})], Some(4), None))
            } else {
                ResponseTemplate::new(page2_status)
            }
        })
        .mount(&server)
        .await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let s = Search::from_pairs(ResourceType::Patient, [("name", "Rivera"), ("gender", "female")]);
    let out = client.search(&s, &UpstreamLog::new()).await.unwrap();
    (server.received_requests().await.unwrap().iter().map(target_of).collect(), out)
}

#[tokio::test]
async fn pitfall_19_long_next_links_are_sent_byte_identical() {
    for len in [6_000, 9_000] {
        let (t, out) = late_failure(len, 200).await;
        assert_eq!(t.len(), 2);
        assert_eq!(t[1], format!("/fhir/r4/Patient?name=Rivera&gender=female&ct={}", long_token(len)), "no decode, re-encode or truncation");
        assert!(t[1].len() > len, "a request target of {} bytes", t[1].len());
        assert!(!out.incomplete);
        assert_eq!(out.resources.len(), 3);
    }
}

#[tokio::test]
async fn pitfall_19_late_failures_return_what_was_fetched_marked_incomplete() {
    for status in [404, 414, 500] {
        let (t, out) = late_failure(6_000, status).await;
        assert_eq!(t.len(), 2, "HTTP {status}: not retried");
        assert!(out.incomplete, "never a silently complete result");
        assert_eq!(out.resources.len(), 2, "the pages fetched so far");
        assert_eq!(out.errors.len(), 1);
        let FhirError::PageFetchFailed { page, status: got, .. } = &out.errors[0] else { panic!("{:?}", out.errors) };
        assert_eq!((*page, *got), (2, status));
        let wire = out.into_search_result();
        assert!(wire.incomplete);
        assert_eq!(wire.resources.len(), 2);
        assert!(wire.warnings.iter().any(|w| w.code == "page-failed" && w.detail.starts_with(&format!("page 2 of the search failed (HTTP {status})"))), "{:?}", wire.warnings);
    }
}

#[tokio::test]
async fn a_5xx_late_in_the_walk_after_retries_is_a_page_failure() {
    let server = serve(|r: &Request| match query_param(r, "p").as_deref() {
        None => fhir_json(&page(vec![obs("o-1")], None, Some("Observation?p=2"))),
        Some("2") => fhir_json(&page(vec![obs("o-2")], None, Some("Observation?p=3"))),
        _ => ResponseTemplate::new(503),
    })
    .await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2 + 4, "page 3 tried 4 times");
    assert_eq!(out.resources.len(), 2);
    assert!(out.incomplete);
    assert!(matches!(&out.errors[0], FhirError::PageFetchFailed { page: 3, status: 503, cause } if matches!(**cause, FhirError::Unavailable { attempts: 4, .. })), "{:?}", out.errors);
}

#[tokio::test]
async fn a_first_page_failure_is_the_error() {
    let server = serve(|_: &Request| ResponseTemplate::new(404)).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let err = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap_err();
    assert!(matches!(err, FhirError::HttpStatus { status: 404, .. }), "{err:?}");
}

fn pitfall_20_bundle() -> Value {
    json!({"resourceType":"Bundle","type":"searchset","total":2,"entry":[
      {"fullUrl":"https://fhir.vendor-b.example/fhir/r4/Observation/obs-1","search":{"mode":"match"},
       "resource":{"resourceType":"Observation","id":"obs-1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pt-1001"}}},
      {"search":{"mode":"outcome"},
       "resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"not-supported","diagnostics":"parameter datee not understood, ignored"}]}},
      {"fullUrl":"https://fhir.vendor-b.example/fhir/r4/Observation/obs-2",
       "resource":{"resourceType":"Observation","id":"obs-2","status":"final","code":{"text":"Body weight"},"subject":{"reference":"Patient/pt-1001"}}}]})
}

#[tokio::test]
async fn pitfall_20_outcome_entries_are_warnings_never_data() {
    let server = serve(|_: &Request| fhir_json(&pitfall_20_bundle())).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let s = Search::from_pairs(ResourceType::Observation, [("patient", "pt-1001"), ("datee", "2024")]);
    let out = client.search(&s, &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["obs-1", "obs-2"]);
    assert!(out.included.is_empty());
    assert!(!out.incomplete);
    assert_eq!(out.ignored_parameters, vec!["datee"], "the gateway applies its fail-closed rule with this");
    let wire = out.into_search_result();
    assert!(wire.resources.iter().all(|r| r["resourceType"] == "Observation"), "no OperationOutcome handed over as data");
    assert_eq!(wire.total, Some(2));
    assert_eq!(wire.warnings.len(), 1);
    assert_eq!(wire.warnings[0].code, "operation-outcome");
    assert_eq!(wire.warnings[0].detail, "warning not-supported: parameter datee not understood, ignored");
}

#[tokio::test]
async fn pitfall_20_include_entries_are_kept_apart() {
    let mut b = pitfall_20_bundle();
    b["entry"].as_array_mut().unwrap().push(json!({"search":{"mode":"include"},"resource":{"resourceType":"Patient","id":"pt-1001"}}));
    let server = serve(move |_: &Request| fhir_json(&b)).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 2);
    assert_eq!(out.included.len(), 1);
    assert_eq!(out.included[0]["id"], "pt-1001");
}

#[tokio::test]
async fn pitfall_20_error_issues_inside_a_200_bundle_are_failures() {
    for severity in ["error", "fatal"] {
        let mut b = pitfall_20_bundle();
        b["entry"][1]["resource"]["issue"][0]["severity"] = json!(severity);
        b["entry"][1]["resource"]["issue"][0]["diagnostics"] = json!("4113 cached search session expired");
        let body = b.clone();
        let server = serve(move |_: &Request| fhir_json(&body)).await;
        let (client, _, _) = client_for(&server, SearchProfile::generic());
        let err = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap_err();
        let FhirError::OutcomeFailure { issues } = &err else { panic!("{err:?}") };
        assert_eq!(issues[0].diagnostics.as_deref(), Some("4113 cached search session expired"));
        assert_eq!(err.problem_code(), medicodax_wire::ProblemCode::EhrError);

        // On page 2 it ends the walk: page 1 kept, marked incomplete.
        let server = serve(move |r: &Request| {
            if query_param(r, "p").is_none() { fhir_json(&page(vec![obs("o-1")], None, Some("Observation?p=2"))) } else { fhir_json(&b) }
        })
        .await;
        let (client, _, _) = client_for(&server, SearchProfile::generic());
        let out = client.search(&obs_search(), &UpstreamLog::new()).await.unwrap();
        assert_eq!(out.resources.len(), 1, "the failed page's matches are not used");
        assert!(out.incomplete);
        assert!(matches!(&out.errors[0], FhirError::PageFetchFailed { page: 2, status: 200, .. }), "{:?}", out.errors);
    }
}

/// Three pages of 50 Observations.
async fn three_pages() -> MockServer {
    serve(|r: &Request| {
        let k: u32 = query_param(r, "p").map(|p| p.parse().unwrap()).unwrap_or(1);
        let res = (0..50).map(|i| obs(&format!("o-{k}-{i}"))).collect();
        let next = (k < 3).then(|| format!("Observation?p={}", k + 1));
        fhir_json(&page(res, Some(150), next.as_deref()))
    })
    .await
}

#[tokio::test]
async fn max_results_stops_early_and_says_so() {
    let server = three_pages().await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search().limit(120), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 120);
    assert!(out.limit_reached && out.incomplete);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    let wire = out.into_search_result();
    assert_eq!(wire.warnings.last().unwrap().code, "max-results");

    let server = three_pages().await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search().limit(100), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 100);
    assert!(out.incomplete, "a next link remained");
    assert_eq!(server.received_requests().await.unwrap().len(), 2, "page 3 is not fetched");

    let server = three_pages().await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&obs_search().limit(150), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 150);
    assert!(!out.incomplete, "exactly everything");
}

#[tokio::test]
async fn pages_stream_one_at_a_time() {
    let server = three_pages().await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let log = UpstreamLog::new();
    let mut stream = Box::pin(client.pages(&obs_search(), &log).unwrap().into_stream());
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.number, 1);
    assert_eq!(first.resources.len(), 50);
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "nothing fetched ahead");
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(rest.iter().map(|p| p.as_ref().unwrap().number).collect::<Vec<_>>(), [2, 3]);
    let paths: Vec<String> = log.snapshot().into_iter().map(|u| u.path).collect();
    assert_eq!(paths, ["Observation?patient=pt-1001&_count=50", "Observation?p=2", "Observation?p=3"]);
}

#[tokio::test]
async fn garbage_pages_are_errors_not_panics() {
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/fhir+json", b"{\"resourceType\":\"Bundle\",\"entry\":[".to_vec()),
        ("application/fhir+json", vec![0xff, 0x00, 0x13]),
        ("application/fhir+json", b"[1,2,3]".to_vec()),
        ("application/fhir+json", b"{\"resourceType\":\"Patient\",\"id\":\"x\"}".to_vec()),
        ("application/fhir+json", format!("{{\"resourceType\":\"Bundle\",\"link\":[{{\"relation\":\"next\",\"url\":\"{}\"}}]}}", "x".repeat(70_000)).into_bytes()),
    ];
    for (i, (ct, body)) in bodies.into_iter().enumerate() {
        let b = Arc::new(body);
        let server = serve(move |_: &Request| ResponseTemplate::new(200).set_body_raw(b.as_ref().clone(), ct)).await;
        let (client, _, _) = client_for(&server, SearchProfile::generic());
        let got = client.search(&obs_search(), &UpstreamLog::new()).await;
        match i {
            0..=3 => assert!(matches!(got, Err(FhirError::InvalidBody { status: 200, .. })), "{i}: {got:?}"),
            _ => {
                let out = got.unwrap();
                assert!(matches!(out.errors[0], FhirError::InvalidNextLink { problem: NextLinkProblem::TooLong { bytes: 70_000 }, .. }));
            }
        }
    }
}
