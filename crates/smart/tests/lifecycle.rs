//! Token lifecycle: renewal points (pitfalls case 11), single flight (case 13), the 401
//! policy on the manager's side (case 14), spacing between mints, and lifetimes from
//! `expires_in` (case 10's caching lines). Every test runs on a `ManualClock`.

mod common;

use common::*;
use medicodax_clock::{Clock, ManualClock, Mono};
use medicodax_smart::{AuthError, AuthManager, ErrorClass};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::ResponseTemplate;

fn secs(s: u64) -> Mono {
    Mono(Duration::from_secs(s))
}

async fn one_connection(vendor: &str, stub: TokenStub, extra: Value) -> (wiremock::MockServer, TokenStub, ManualClock, AuthManager) {
    let (server, url) = token_server(stub.clone()).await;
    let clock = ManualClock::new(NOW);
    let mut e = json!({"token_url": url});
    if let (Some(o), Value::Object(x)) = (e.as_object_mut(), extra) {
        o.extend(x);
    }
    let m = manager(&clock, vec![cfg("c", vendor, "https://fhir.example/r4", e)]);
    (server, stub, clock, m)
}

/// Case 11, Epic: the call at 3539 s reuses at-1, the call at 3540 s renews first.
#[tokio::test]
async fn epic_renews_at_3540_not_3539() {
    let (_s, stub, clock, m) = one_connection("epic", TokenStub::new(json!(3600)), json!({})).await;
    let t1 = m.token("c").await.unwrap();
    assert_eq!(t1.access_token().expose_secret(), "at-1");
    assert_eq!(t1.renew_at(), secs(3540));
    assert_eq!(t1.expires_at(), secs(3600));
    clock.advance_secs(3539);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-1");
    assert_eq!(stub.count(), 1);
    clock.advance_secs(1);
    let t2 = m.token("c").await.unwrap();
    assert_eq!(t2.access_token().expose_secret(), "at-2");
    assert_eq!(t2.generation(), 2);
    assert_eq!(t2.renew_at(), secs(3540 + 3540));
    assert_eq!(stub.count(), 2);
}

/// Case 11, eCW: a 300 s token renews at 240 s.
#[tokio::test]
async fn ecw_renews_at_240() {
    let (_s, stub, clock, m) = one_connection("eclinicalworks", TokenStub::new(json!(300)), json!({})).await;
    m.token("c").await.unwrap();
    clock.advance_secs(239);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-1");
    clock.advance_secs(1);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-2");
    assert_eq!(stub.count(), 2);
}

/// Case 11 edge: `expires_in` 45 (under the buffer) renews at 36 s, not at once.
#[tokio::test]
async fn a_45_s_token_renews_at_36() {
    let (_s, stub, clock, m) = one_connection("epic", TokenStub::new(json!(45)), json!({})).await;
    assert_eq!(m.token("c").await.unwrap().renew_at(), secs(36));
    clock.advance_secs(35);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-1");
    clock.advance_secs(1);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-2");
    assert_eq!(stub.count(), 2);
}

/// Expiry is counted from when the request was sent, not from when the answer arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_counts_from_the_send_time() {
    let (server, stub, clock, m) = one_connection("epic", TokenStub::new(json!(3600)).delay(Duration::from_millis(400)), json!({})).await;
    let pending = tokio::spawn({
        let m = m.clone();
        async move { m.token("c").await }
    });
    wait_for_requests(&server, 1).await;
    clock.advance_secs(10); // the answer "arrives" 10 s after the request left
    let t = pending.await.unwrap().unwrap();
    assert_eq!(t.sent_at(), secs(0));
    assert_eq!(t.renew_at(), secs(3540), "from the send time, not 3550");
    clock.advance_secs(3530);
    assert_eq!(m.token("c").await.unwrap().generation(), 2);
    assert_eq!(stub.count(), 2);
}

/// Lifetimes from `expires_in` first, the profile second (case 10 c, e, g).
#[tokio::test]
async fn lifetime_sources() {
    // (c) missing: the profile default, never "no expiry".
    for (vendor, default) in [("epic", 3600), ("eclinicalworks", 300), ("oracle-health", 570), ("athena", 3600), ("generic", 300)] {
        let (_s, _stub, _c, m) = one_connection(vendor, TokenStub::new(Value::Null), json!({})).await;
        assert_eq!(m.token("c").await.unwrap().lifetime(), Duration::from_secs(default), "{vendor}");
    }
    // A configured lifetime overrides the profile default.
    let (_s, _stub, _c, m) = one_connection("epic", TokenStub::new(Value::Null), json!({"lifetime": 1200})).await;
    assert_eq!(m.token("c").await.unwrap().lifetime(), Duration::from_secs(1200));
    // (d) "3600s" counts as missing.
    let (_s, _stub, _c, m) = one_connection("eclinicalworks", TokenStub::new(json!("3600s")), json!({})).await;
    assert_eq!(m.token("c").await.unwrap().lifetime(), Duration::from_secs(300));
    // (b) a numeric string and (f) a float are 3600.
    for v in [json!("3600"), json!(3600.0)] {
        let (_s, _stub, _c, m) = one_connection("eclinicalworks", TokenStub::new(v), json!({})).await;
        assert_eq!(m.token("c").await.unwrap().lifetime(), Duration::from_secs(3600));
    }
    // (g) 999999999 is capped at 24 h (and at a configured lower cap).
    let (_s, _stub, _c, m) = one_connection("epic", TokenStub::new(json!(999_999_999)), json!({})).await;
    let t = m.token("c").await.unwrap();
    assert_eq!(t.lifetime(), Duration::from_secs(86_400));
    assert_eq!(t.renew_at(), secs(86_340));
    let (_s, _stub, _c, m) = one_connection("epic", TokenStub::new(json!(999_999_999)), json!({"max_lifetime": 7200})).await;
    assert_eq!(m.token("c").await.unwrap().lifetime(), Duration::from_secs(7200));
}

/// Case 10 (e): `expires_in` 0 or negative is not cached; the token still serves the call
/// it was fetched for, and the next mint keeps the 5 s spacing.
#[tokio::test]
async fn non_positive_lifetimes_are_not_cached() {
    for v in [json!(0), json!(-5)] {
        let stub = TokenStub::new(v);
        let (server, url) = token_server(stub.clone()).await;
        let clock = ManualClock::auto_advance(NOW);
        let m = manager(&clock, vec![cfg("c", "epic", "https://fhir.example/r4", json!({"token_url": url}))]);
        let t = m.token("c").await.unwrap();
        assert_eq!(t.access_token().expose_secret(), "at-1");
        assert!(!t.is_cached());
        assert!(m.cached("c").is_none());
        let t2 = m.token("c").await.unwrap();
        assert_eq!(t2.access_token().expose_secret(), "at-2");
        assert_eq!(t2.sent_at(), secs(5), "the second mint waited for the 5 s spacing");
        assert_eq!(token_posts(&server).await.len(), 2);
    }
}

/// Case 11 edge: a token shorter than the spacing does not make a mint loop; mints stay
/// at least 5 s apart and the anomaly is logged.
#[tokio::test]
async fn mints_stay_5_s_apart_and_the_anomaly_is_logged() {
    let logs = LogCapture::default();
    let _g = logs.install();
    let stub = TokenStub::new(json!(2));
    let (_server, url) = token_server(stub.clone()).await;
    let clock = ManualClock::auto_advance(NOW);
    let m = manager(&clock, vec![cfg("c", "epic", "https://fhir.example/r4", json!({"token_url": url}))]);
    let mut sent = Vec::new();
    for _ in 0..4 {
        let t = m.token("c").await.unwrap();
        assert!(clock.monotonic() < t.renew_at(), "never handed out past its renewal point");
        sent.push(t.sent_at().0.as_secs());
        clock.advance(Duration::from_millis(1700)); // past the 1.6 s renewal point
    }
    assert_eq!(sent, vec![0, 5, 10, 15]);
    assert_eq!(stub.count(), 4);
    assert!(logs.text().contains("less than 5 s after the previous token request"), "{}", logs.text());
}

/// Case 13: 10,000 concurrent callers across an expiry make exactly one token request, and
/// all carry the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_callers_at_expiry_make_one_request() {
    let (_s, stub, clock, m) = one_connection("epic", TokenStub::new(json!(3600)).delay(Duration::from_millis(500)), json!({})).await;
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-1");
    clock.advance_secs(3545);
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.token("c").await.map(|t| t.access_token().expose_secret().to_owned()) })
        })
        .collect();
    let mut at2 = 0;
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "at-2");
        at2 += 1;
    }
    assert_eq!(at2, 10_000);
    assert_eq!(stub.count(), 2, "one initial request and exactly one renewal");
    // No second flight is parked behind the 5 s spacing either: past it, still no request.
    clock.advance_secs(6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.count(), 2, "no straggler token requests");
    let st = m.connection_status("c").unwrap();
    assert_eq!(st.tokens[0].renewal_count, 2);
    assert!(!st.tokens[0].in_flight);
}

/// Case 13 failure path: a 503 reaches every waiter, the in-flight slot is cleared, callers
/// fail fast during the pause, and the next call after it tries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_renewal_fails_every_waiter_and_nothing_sticks() {
    let script = Script::new(vec![
        ok_token("at-1", json!(3600)),
        ResponseTemplate::new(503).set_delay(Duration::from_millis(300)),
        ok_token("at-2", json!(3600)),
    ]);
    let (_server, url) = token_server(script.clone()).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("c", "epic", "https://fhir.example/r4", json!({"token_url": url}))]);
    m.token("c").await.unwrap();
    clock.advance_secs(3545);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move { m.token("c").await })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            Err(AuthError::Unavailable { status: 503, .. }) => {}
            other => panic!("expected the 503, got {other:?}"),
        }
    }
    assert_eq!(script.count(), 2, "one request for all 200 waiters");
    // Right away: a fail-fast pause, no request.
    let e = m.token("c").await.unwrap_err();
    assert!(matches!(e, AuthError::BackingOff { cause: ErrorClass::Unavailable, .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
    assert_eq!(script.count(), 2);
    let st = m.connection_status("c").unwrap();
    assert_eq!((st.tokens[0].failure_count, st.tokens[0].last_error, st.paused_for_secs), (1, Some(ErrorClass::Unavailable), Some(5)));
    // After the pause the next call tries again and succeeds: nothing was left stuck.
    clock.advance_secs(5);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-2");
    assert_eq!(script.count(), 3);
    assert_eq!(m.connection_status("c").unwrap().paused_for_secs, None);
}

/// Case 13: two tenants never share a token and renew in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_never_share_a_token_and_renew_in_parallel() {
    let slow = TokenStub::new(json!(300)).prefix("at-A").delay(Duration::from_secs(5));
    let fast = TokenStub::new(json!(300)).prefix("at-B");
    let (_sa, url_a) = token_server(slow.clone()).await;
    let (_sb, url_b) = token_server(fast.clone()).await;
    let clock = ManualClock::new(NOW);
    let m = manager(
        &clock,
        vec![
            cfg("prac-a", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRACAA", json!({"token_url": url_a})),
            cfg("prac-b", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRACBB", json!({"token_url": url_b})),
        ],
    );
    let a = tokio::spawn({
        let m = m.clone();
        async move { m.token("prac-a").await }
    });
    // prac-b gets its token while prac-a's request is still in flight.
    let b = tokio::time::timeout(Duration::from_secs(4), m.token("prac-b")).await.expect("prac-b not blocked by prac-a").unwrap();
    assert!(!a.is_finished(), "prac-a is still waiting for its slow endpoint");
    assert_eq!(b.access_token().expose_secret(), "at-B1");
    let a = a.await.unwrap().unwrap();
    assert_eq!(a.access_token().expose_secret(), "at-A1");
    assert_eq!((slow.count(), fast.count()), (1, 1));
    // Same token endpoint, different client ids: still separate tokens.
    let shared = TokenStub::new(json!(300));
    let (_s, url) = token_server(shared.clone()).await;
    let m = manager(
        &clock,
        vec![
            cfg("x", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRACXX", json!({"token_url": url})),
            cfg("y", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRACYY", json!({"token_url": url})),
        ],
    );
    let x = m.token("x").await.unwrap();
    let y = m.token("y").await.unwrap();
    assert!(!x.access_token().same_value(y.access_token()));
    assert_eq!(shared.count(), 2);
}

/// Different scope sets on one connection are separate cache entries; the same set in
/// another order is the same entry.
#[tokio::test]
async fn tokens_are_keyed_by_scope_set() {
    let (server, stub, _clock, m) = one_connection("generic", TokenStub::new(json!(300)), json!({})).await;
    let a = medicodax_smart::ScopeSet::parse("system/Patient.rs system/Condition.rs").unwrap();
    let b = medicodax_smart::ScopeSet::parse("system/Condition.rs system/Patient.rs").unwrap();
    let c = medicodax_smart::ScopeSet::parse("system/Observation.rs").unwrap();
    let ta = m.token_for("c", &a).await.unwrap();
    let tb = m.token_for("c", &b).await.unwrap();
    let tc = m.token_for("c", &c).await.unwrap();
    let td = m.token("c").await.unwrap();
    assert!(ta.access_token().same_value(tb.access_token()));
    assert!(!ta.access_token().same_value(tc.access_token()));
    assert!(!td.access_token().same_value(ta.access_token()) && !td.access_token().same_value(tc.access_token()));
    assert_eq!(stub.count(), 3);
    let scopes: Vec<String> = token_posts(&server).await.iter().map(|r| field(r, "scope").unwrap()).collect();
    assert_eq!(scopes, vec!["system/Patient.rs system/Condition.rs", "system/Observation.rs", "system/Patient.rs"]);
    assert!(matches!(m.token_for("c", &medicodax_smart::ScopeSet::empty()).await, Err(AuthError::NoScopes { .. })));
}

/// Case 14 (a): a 401 drops that token; one renewal; the retry gets the new one.
#[tokio::test]
async fn a_401_drops_that_token_and_renews_once() {
    let (_s, stub, clock, m) = one_connection("epic", TokenStub::new(json!(3600)), json!({})).await;
    let at1 = m.token("c").await.unwrap();
    clock.advance_secs(10);
    let at2 = m.renew_after_unauthorized(&at1).await.unwrap();
    assert_eq!(at2.access_token().expose_secret(), "at-2");
    assert_eq!(stub.count(), 2);
    assert_eq!(m.token("c").await.unwrap().access_token().expose_secret(), "at-2");
    assert_eq!(m.connection_status("c").unwrap().tokens[0].invalidations, 1);
}

/// Case 14 (b): a client that loops on 401s cannot make a mint loop: the next mint waits
/// out the 5 s spacing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_401s_are_spaced() {
    let (_s, stub, clock, m) = one_connection("epic", TokenStub::new(json!(3600)), json!({})).await;
    let at1 = m.token("c").await.unwrap();
    clock.advance_secs(10);
    let at2 = m.renew_after_unauthorized(&at1).await.unwrap();
    clock.advance_secs(1);
    let third = tokio::spawn({
        let m = m.clone();
        async move { m.renew_after_unauthorized(&at2).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished(), "waits for the 5 s spacing");
    assert_eq!(stub.count(), 2);
    clock.advance_secs(4);
    let at3 = third.await.unwrap().unwrap();
    assert_eq!(at3.access_token().expose_secret(), "at-3");
    assert_eq!(at3.sent_at(), secs(15));
}

/// Case 14 (d): a late 401 for at-1 after another worker already got at-2 mints nothing.
#[tokio::test]
async fn a_late_401_for_an_old_token_mints_nothing() {
    let (_s, stub, clock, m) = one_connection("epic", TokenStub::new(json!(3600)), json!({})).await;
    let at1 = m.token("c").await.unwrap();
    clock.advance_secs(3540);
    let at2 = m.token("c").await.unwrap();
    assert_eq!(at2.access_token().expose_secret(), "at-2");
    assert!(!m.invalidate(&at1), "at-1 is no longer cached");
    let retry = m.renew_after_unauthorized(&at1).await.unwrap();
    assert!(retry.access_token().same_value(at2.access_token()));
    assert_eq!(stub.count(), 2, "no third mint");
    // Invalidation by value (for adapters holding only the value) drops exactly at-2.
    assert!(!m.invalidate_value("c", "at-1"));
    assert!(m.invalidate_value("c", "at-2"));
    assert!(m.cached("c").is_none());
}

/// No request ever leaves with less than the buffer remaining, for any lifetime and call
/// pattern; and the renewal count is exactly what the renewal points imply.
#[test]
fn no_token_is_handed_out_past_its_renewal_point() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (vendor, lifetime, expected_mints) in [("epic", 3600u64, 4usize), ("eclinicalworks", 300, 45), ("generic", 45, 300)] {
        rt.block_on(async {
            let (_s, stub, clock, m) = one_connection(vendor, TokenStub::new(json!(lifetime)), json!({})).await;
            let buffer = Duration::from_secs(60).min(Duration::from_secs(lifetime) / 5);
            let horizon = 10_800; // three hours, one call per second
            for _ in 0..horizon {
                let t = m.token("c").await.unwrap();
                let now = clock.monotonic();
                assert!(now < t.renew_at());
                assert!(t.expires_at().since(now) > buffer, "{vendor}: {:?} left at {:?}", t.expires_at().since(now), now);
                clock.advance_secs(1);
            }
            assert_eq!(stub.count(), expected_mints, "{vendor}");
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn remaining_lifetime_is_never_under_the_buffer(lifetime in 7u64..5000, buffer in 0u64..600, steps in prop::collection::vec(1u64..400, 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_s, _stub, clock, m) = one_connection("generic", TokenStub::new(json!(lifetime)), json!({"buffer": buffer})).await;
            let eff = Duration::from_secs(buffer).min(Duration::from_secs(lifetime) / 5);
            for step in steps {
                let t = m.token("c").await.unwrap();
                let now = clock.monotonic();
                prop_assert!(now < t.renew_at());
                prop_assert!(t.expires_at().since(now) >= eff);
                prop_assert_eq!(t.renew_at().since(t.sent_at()), Duration::from_secs(lifetime) - eff);
                clock.advance_secs(step);
            }
            Ok(())
        })?;
    }
}
