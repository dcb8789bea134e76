//! The per-connection request budget through the auth manager: token requests and FHIR
//! requests drawn from one budget (eClinicalWorks 250/min per practice), Oracle Health's
//! 60 s between token requests, athenahealth's 50 token requests a minute, and a 429 block.

mod common;

use common::*;
use medicodax_clock::{Clock, ManualClock, Mono};
use medicodax_smart::{AuthError, RequestKind, ScopeSet};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn ecw_fhir_and_token_requests_share_250_a_minute() {
    let (_s, url) = token_server(TokenStub::new(json!(300))).await;
    let clock = ManualClock::auto_advance(NOW);
    let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
    for _ in 0..249 {
        m.try_acquire("e", RequestKind::Fhir).unwrap();
    }
    m.token("e").await.unwrap(); // the 250th request of the minute
    let st = m.connection_status("e").unwrap().budget;
    assert_eq!((st.shared_per_minute, st.used_last_minute, st.token_requests_last_minute), (Some(250), 250, 1));
    let e = m.try_acquire("e", RequestKind::Fhir).unwrap_err();
    assert!(matches!(&e, AuthError::RateLimited { retry_after, .. } if *retry_after == Duration::from_secs(60)), "{e:?}");
    assert!(e.to_string().contains("FHIR and token together"), "{e}");
    // `acquire` waits on the clock for room (within max_retry_after).
    m.acquire("e", RequestKind::Fhir).await.unwrap();
    assert_eq!(clock.monotonic(), Mono(Duration::from_secs(60)));
}

#[tokio::test]
async fn acquire_gives_up_when_the_wait_is_longer_than_allowed() {
    let (_s, url) = token_server(TokenStub::new(json!(300))).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("e", "generic", "https://f.example/r4", json!({"token_url": url, "rate_per_minute": 2, "max_retry_after": 10}))]);
    m.acquire("e", RequestKind::Fhir).await.unwrap();
    m.acquire("e", RequestKind::Fhir).await.unwrap();
    let e = m.acquire("e", RequestKind::Fhir).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    // A token request that cannot fit fails the same way, without a request.
    let e = m.token("e").await.unwrap_err();
    assert!(matches!(e, AuthError::RateLimited { .. }), "{e:?}");
    assert!(token_posts(&_s).await.is_empty());
}

#[tokio::test]
async fn oracle_token_requests_are_60_s_apart() {
    let stub = TokenStub::new(json!(570));
    let (_s, url) = token_server(stub.clone()).await;
    let clock = ManualClock::auto_advance(NOW);
    let m = manager(&clock, vec![cfg("o", "oracle-health", "https://fhir.cerner-test.example/r4/tnt-0001", json!({"token_url": url}))]);
    let t1 = m.token("o").await.unwrap();
    clock.advance_secs(10);
    let t2 = m.renew_after_unauthorized(&t1).await.unwrap();
    assert_eq!(t2.access_token().expose_secret(), "at-2");
    assert_eq!(t2.sent_at(), Mono(Duration::from_secs(60)), "waited for the 60 s interval");
}

#[tokio::test]
async fn athena_50_token_requests_a_minute() {
    let stub = TokenStub::new(json!(3600));
    let (_s, url) = token_server(stub.clone()).await;
    let clock = ManualClock::auto_advance(NOW);
    let m = manager(&clock, vec![cfg("a", "athena", "https://api.athena.example/fhir/r4", json!({"token_url": url}))]);
    let mut sent = Vec::new();
    for i in 0..51 {
        let scopes = ScopeSet::new(["system/Patient.rs".to_owned(), format!("system/Observation.rs?code=c{i}")]).unwrap();
        sent.push(m.token_for("a", &scopes).await.unwrap().sent_at().0.as_secs());
    }
    assert_eq!(&sent[..50], &[0; 50]);
    assert_eq!(sent[50], 60, "the 51st waited for the minute to roll");
    assert_eq!(stub.count(), 51);
}

#[tokio::test]
async fn a_429_seen_by_the_fhir_client_blocks_the_connection() {
    let (_s, url) = token_server(TokenStub::new(json!(300))).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
    m.note_rate_limited("e", None).unwrap();
    assert_eq!(m.try_acquire("e", RequestKind::Fhir).unwrap_err().retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(m.connection_status("e").unwrap().budget.blocked_for_secs, Some(60));
    m.note_rate_limited("e", Some(Duration::from_secs(5000))).unwrap();
    assert_eq!(m.connection_status("e").unwrap().budget.blocked_for_secs, Some(120), "capped by max_retry_after");
    clock.advance_secs(120);
    m.try_acquire("e", RequestKind::Fhir).unwrap();
    assert!(matches!(m.try_acquire("nope", RequestKind::Fhir), Err(AuthError::UnknownConnection(_))));
}
