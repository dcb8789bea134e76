//! Retry-After (seconds or HTTP date) up to the cap, bounded exponential back-off with
//! jitter for 502/503/504 and network errors, the request budget; all on a manual clock.

mod common;

use common::*;
use medicodax_clock::{Clock, ManualClock};
use medicodax_fhir::{FhirError, LimitSource, RetryPolicy, SearchProfile, UpstreamLog};
use medicodax_wire::{FhirId, ProblemCode, ResourceType};
use std::sync::Mutex;
use std::time::Duration;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn pt() -> FhirId {
    FhirId::new("pt-1001").unwrap()
}

fn patient() -> ResponseTemplate {
    fhir_json(&serde_json::json!({"resourceType":"Patient","id":"pt-1001"}))
}

/// Answers the templates in order, then a Patient.
async fn sequence(answers: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    let queue = Mutex::new(answers.into_iter());
    Mock::given(any()).respond_with(move |_: &Request| queue.lock().unwrap().next().unwrap_or_else(patient)).mount(&server).await;
    server
}

async fn read_with(server: &MockServer, retry: RetryPolicy) -> (Result<serde_json::Value, FhirError>, ManualClock, usize) {
    let clock = ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    let client = client_with(&format!("{}/fhir/r4", server.uri()), SearchProfile::generic(), retry, &clock, tokens);
    let got = client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await;
    let n = server.received_requests().await.unwrap().len();
    (got, clock, n)
}

fn waited(clock: &ManualClock) -> Duration {
    clock.monotonic().0
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let server = sequence(vec![ResponseTemplate::new(429).insert_header("Retry-After", "10")]).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert!(got.is_ok());
    assert_eq!(n, 2);
    assert_eq!(waited(&clock), Duration::from_secs(10), "waited exactly Retry-After");
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(NOW as u64 + 25));
    let server = sequence(vec![ResponseTemplate::new(503).insert_header("Retry-After", date.as_str())]).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert!(got.is_ok());
    assert_eq!(n, 2);
    assert_eq!(waited(&clock), Duration::from_secs(25));
}

#[tokio::test]
async fn retry_after_past_the_cap_fails_at_once_carrying_the_wait() {
    let server = sequence(vec![ResponseTemplate::new(429).insert_header("Retry-After", "120")]).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    let err = got.unwrap_err();
    assert_eq!(err, FhirError::RateLimited { origin: LimitSource::Ehr, retry_after: Some(Duration::from_secs(120)) });
    assert_eq!(err.problem_code(), ProblemCode::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(n, 1);
    assert_eq!(waited(&clock), Duration::ZERO, "no waiting at all");

    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(NOW as u64 + 3600));
    let server = sequence(vec![ResponseTemplate::new(503).insert_header("Retry-After", date.as_str())]).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert_eq!(got.unwrap_err(), FhirError::Unavailable { status: 503, retry_after: Some(Duration::from_secs(3600)), attempts: 1 });
    assert_eq!((n, waited(&clock)), (1, Duration::ZERO));

    // The cap is configurable.
    let server = sequence(vec![ResponseTemplate::new(429).insert_header("Retry-After", "120")]).await;
    let (got, clock, _) = read_with(&server, RetryPolicy { retry_after_cap: Duration::from_secs(300), ..exact_retry() }).await;
    assert!(got.is_ok());
    assert_eq!(waited(&clock), Duration::from_secs(120));
}

#[tokio::test]
async fn retry_after_on_the_last_attempt_fails_with_the_wait() {
    let answers = (0..4).map(|_| ResponseTemplate::new(429).insert_header("Retry-After", "5")).collect();
    let server = sequence(answers).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert_eq!(got.unwrap_err(), FhirError::RateLimited { origin: LimitSource::Ehr, retry_after: Some(Duration::from_secs(5)) });
    assert_eq!(n, 4);
    assert_eq!(waited(&clock), Duration::from_secs(15), "three waits of 5 s, none after the last attempt");
}

#[tokio::test]
async fn exponential_backoff_for_503_without_retry_after() {
    let server = sequence((0..4).map(|_| ResponseTemplate::new(503)).collect()).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert_eq!(got.unwrap_err(), FhirError::Unavailable { status: 503, retry_after: None, attempts: 4 });
    assert_eq!(n, 4);
    assert_eq!(waited(&clock), Duration::from_millis(500 + 1000 + 2000));
}

#[tokio::test]
async fn backoff_is_jittered_within_bounds() {
    for _ in 0..5 {
        let server = sequence((0..4).map(|_| ResponseTemplate::new(502)).collect()).await;
        let (got, clock, n) = read_with(&server, RetryPolicy::default()).await;
        assert!(matches!(got.unwrap_err(), FhirError::HttpStatus { status: 502, .. }));
        assert_eq!(n, 4);
        let w = waited(&clock);
        assert!(w >= Duration::from_millis(1750) && w <= Duration::from_millis(3500), "{w:?}");
    }
}

#[tokio::test]
async fn transient_errors_then_success() {
    let server = sequence(vec![ResponseTemplate::new(502), ResponseTemplate::new(504), ResponseTemplate::new(503)]).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert!(got.is_ok());
    assert_eq!(n, 4);
    assert_eq!(waited(&clock), Duration::from_millis(3500));
    let server = sequence((0..4).map(|_| ResponseTemplate::new(504)).collect()).await;
    let (got, _, _) = read_with(&server, exact_retry()).await;
    let err = got.unwrap_err();
    assert_eq!(err, FhirError::Timeout { attempts: 4 });
    assert_eq!(err.problem_code(), ProblemCode::EhrTimeout);
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off() {
    let server = sequence(vec![ResponseTemplate::new(429), ResponseTemplate::new(429).insert_header("Retry-After", "garbage")]).await;
    let (got, clock, n) = read_with(&server, exact_retry()).await;
    assert!(got.is_ok());
    assert_eq!(n, 3);
    assert_eq!(waited(&clock), Duration::from_millis(1500));
}

#[tokio::test]
async fn other_statuses_are_not_retried() {
    for status in [400, 404, 409, 410, 500, 501] {
        let server = sequence(vec![ResponseTemplate::new(status)]).await;
        let (got, clock, n) = read_with(&server, exact_retry()).await;
        assert!(got.is_err(), "{status}");
        assert_eq!((n, waited(&clock)), (1, Duration::ZERO), "{status}");
    }
}

#[tokio::test]
async fn network_errors_back_off_then_fail() {
    // A port nothing listens on: take one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let clock = ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    let client = client_with(&format!("http://127.0.0.1:{port}/fhir/r4"), SearchProfile::generic(), exact_retry(), &clock, tokens.clone());
    let log = UpstreamLog::new();
    let err = client.read(ResourceType::Patient, &pt(), &log).await.unwrap_err();
    let FhirError::Network { detail, attempts } = &err else { panic!("{err:?}") };
    assert_eq!(*attempts, 4);
    assert!(detail.starts_with("connection failed"), "{detail}");
    assert!(!detail.contains("127.0.0.1") && !detail.contains("pt-1001"), "no URL in the error: {detail}");
    assert_eq!(err.problem_code(), ProblemCode::EhrUnavailable);
    assert_eq!(waited(&clock), Duration::from_millis(3500));
    assert_eq!(log.snapshot().iter().map(|u| u.status).collect::<Vec<_>>(), [0, 0, 0, 0], "status 0: no answer");
    assert_eq!(tokens.permits(), 4, "a permit per attempt");
}

#[tokio::test]
async fn the_request_budget_is_waited_for_up_to_the_cap() {
    let server = sequence(vec![]).await;
    let clock = ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    let client = client_with(&format!("{}/fhir/r4", server.uri()), SearchProfile::generic(), exact_retry(), &clock, tokens.clone());
    tokens.deny_permits(&[Duration::from_secs(2), Duration::from_secs(2)]);
    assert!(client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await.is_ok());
    assert_eq!(waited(&clock), Duration::from_secs(4));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    tokens.deny_permits(&[Duration::from_secs(120)]);
    let err = client.read(ResourceType::Patient, &pt(), &UpstreamLog::new()).await.unwrap_err();
    assert_eq!(err, FhirError::RateLimited { origin: LimitSource::Budget, retry_after: Some(Duration::from_secs(120)) });
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "nothing sent past the budget");
    assert_eq!(waited(&clock), Duration::from_secs(4));
}
