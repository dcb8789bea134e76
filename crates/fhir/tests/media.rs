//! Pitfall 23: Content-Type variants, XML, and non-FHIR error pages.

mod common;

use common::*;
use medicodax_fhir::{FhirError, Search, SearchProfile, UpstreamLog};
use medicodax_wire::{FhirId, ProblemCode, ResourceType};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn answer(t: ResponseTemplate) -> (MockServer, Result<medicodax_fhir::SearchOutcome, FhirError>) {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(t).mount(&server).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let out = client.search(&Search::from_pairs(ResourceType::Observation, [("patient", "pt-1001")]), &UpstreamLog::new()).await;
    (server, out)
}

#[tokio::test]
async fn pitfall_23_the_five_json_content_types_parse() {
    let body = page(vec![obs("obs-1")], Some(1), None).to_string();
    for ct in [
        "application/fhir+json",
        "application/fhir+json;charset=UTF-8",
        "application/fhir+json; charset=utf-8; fhirVersion=4.0",
        "application/json",
        "APPLICATION/FHIR+JSON",
    ] {
        let (server, out) = answer(ResponseTemplate::new(200).set_body_raw(body.clone(), ct)).await;
        let out = out.unwrap_or_else(|e| panic!("{ct}: {e}"));
        assert_eq!(out.resources[0]["id"], "obs-1", "{ct}");
        for r in server.received_requests().await.unwrap() {
            assert_eq!(r.headers.get("accept").unwrap(), "application/fhir+json");
        }
    }
}

#[tokio::test]
async fn pitfall_23_a_non_utf8_charset_is_refused() {
    let body = page(vec![obs("obs-1")], Some(1), None).to_string();
    let (_, out) = answer(ResponseTemplate::new(200).set_body_raw(body, "application/fhir+json; charset=ISO-8859-1")).await;
    assert_eq!(out.unwrap_err(), FhirError::UnsupportedCharset { status: 200, charset: "iso-8859-1".into() });
}

#[tokio::test]
async fn pitfall_23_xml_is_an_unsupported_format_error() {
    let xml = r#"<?xml version="1.0"?><Bundle xmlns="http://hl7.org/fhir"><type value="searchset"/></Bundle>"#;
    let (server, out) = answer(ResponseTemplate::new(200).set_body_raw(xml, "application/fhir+xml")).await;
    let err = out.unwrap_err();
    assert_eq!(err, FhirError::UnsupportedFormat { status: 200, content_type: "application/fhir+xml".into() });
    assert!(err.to_string().contains("application/fhir+xml") && err.to_string().contains("not FHIR JSON"), "{err}");
    assert_eq!(err.problem_code(), ProblemCode::EhrError);
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "not retried");
    // Also for a read.
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200).set_body_raw("<Patient/>", "application/xml; charset=utf-8")).mount(&server).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let err = client.read(ResourceType::Patient, &FhirId::new("pt-1001").unwrap(), &UpstreamLog::new()).await.unwrap_err();
    assert!(matches!(err, FhirError::UnsupportedFormat { status: 200, .. }), "{err:?}");
}

#[tokio::test]
async fn pitfall_23_an_html_502_carries_status_content_type_and_a_short_body() {
    let (server, out) = answer(ResponseTemplate::new(502).set_body_raw("<html>Bad gateway</html>", "text/html")).await;
    let err = out.unwrap_err();
    assert_eq!(err, FhirError::HttpStatus { status: 502, content_type: "text/html".into(), snippet: "<html>Bad gateway</html>".into() });
    assert_eq!(err.problem_code(), ProblemCode::EhrError);
    assert_eq!(server.received_requests().await.unwrap().len(), 4, "502 is retried with back-off first");

    let huge = format!("<html>{}</html>", "Bad gateway ".repeat(10_000));
    let (_, out) = answer(ResponseTemplate::new(502).set_body_raw(huge, "text/html; charset=utf-8")).await;
    let FhirError::HttpStatus { snippet, content_type, .. } = out.unwrap_err() else { panic!() };
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert_eq!(snippet.chars().count(), 201, "truncated to 200 characters and an ellipsis");
}

#[tokio::test]
async fn json_without_a_content_type_and_with_a_bom_is_read() {
    let body = format!("\u{feff}{}", page(vec![obs("obs-1")], Some(1), None));
    let (_, out) = answer(ResponseTemplate::new(200).set_body_bytes(body.into_bytes())).await;
    assert_eq!(out.unwrap().resources.len(), 1);
}

#[tokio::test]
async fn read_checks_type_and_id_and_maps_404() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::path("/fhir/r4/Patient/pt-1001"))
        .respond_with(fhir_json(&serde_json::json!({"resourceType":"Patient","id":"pt-1001","extension":[{"url":"x","valueString":"kept"}]})))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::path("/fhir/r4/Patient/pt-other"))
        .respond_with(fhir_json(&serde_json::json!({"resourceType":"Patient","id":"pt-1001"})))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::path("/fhir/r4/Encounter/e-1")).respond_with(fhir_json(&serde_json::json!({"resourceType":"Patient","id":"e-1"}))).mount(&server).await;
    Mock::given(wiremock::matchers::path("/fhir/r4/Patient/pt-gone")).respond_with(outcome(404, "error", "not-found", "Resource Patient/pt-gone not found")).mount(&server).await;
    let (client, _, _) = client_for(&server, SearchProfile::generic());
    let log = UpstreamLog::new();
    let id = |s: &str| FhirId::new(s).unwrap();
    let p = client.read(ResourceType::Patient, &id("pt-1001"), &log).await.unwrap();
    assert_eq!(p["extension"][0]["valueString"], "kept");
    let e = client.read(ResourceType::Patient, &id("pt-other"), &log).await.unwrap_err();
    assert!(matches!(e, FhirError::InvalidBody { status: 200, .. }), "{e:?}");
    let e = client.read(ResourceType::Encounter, &id("e-1"), &log).await.unwrap_err();
    assert!(e.to_string().contains("expected a Encounter, got \"Patient\""), "{e}");
    let e = client.read(ResourceType::Patient, &id("pt-gone"), &log).await.unwrap_err();
    let FhirError::NotFound { resource_type, id: got, status, issues } = &e else { panic!("{e:?}") };
    assert_eq!((*resource_type, got.as_str(), *status), (ResourceType::Patient, "pt-gone", 404));
    assert_eq!(issues[0].diagnostics.as_deref(), Some("Resource Patient/pt-gone not found"));
    assert_eq!(e.problem_code(), ProblemCode::NotFound);
    let paths: Vec<(String, u16)> = log.snapshot().into_iter().map(|u| (u.path, u.status)).collect();
    assert_eq!(
        paths,
        [("Patient/pt-1001".into(), 200), ("Patient/pt-other".into(), 200), ("Encounter/e-1".into(), 200), ("Patient/pt-gone".into(), 404)]
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(fhir_json(&page((0..2000).map(|i| obs(&format!("o-{i}"))).collect(), None, None))).mount(&server).await;
    let clock = medicodax_clock::ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    let mut config = medicodax_fhir::FhirConfig::new(medicodax_fhir::FhirBase::parse(&format!("{}/fhir/r4", server.uri())).unwrap());
    config.max_body_bytes = 10_000;
    let client = medicodax_fhir::FhirClient::new(config, tokens, clock.shared()).unwrap();
    let err = client.search(&Search::new(ResourceType::Observation), &UpstreamLog::new()).await.unwrap_err();
    assert_eq!(err, FhirError::ResponseTooLarge { limit: 10_000 });
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
