//! What others see: no token or assertion in any log, `Debug`, status or error; the
//! dashboard status; Prometheus metrics; and the `medicodax token` report.

mod common;

use common::*;
use medicodax_clock::ManualClock;
use medicodax_smart::{AuthError, token_report};
use serde_json::json;
use wiremock::ResponseTemplate;

/// Token values and assertions never reach logs, `Debug`, `Display`, status or errors,
/// across a success, a renewal, a 401 invalidation and an `invalid_client` refusal.
#[tokio::test]
async fn secrets_never_reach_logs_debug_status_or_errors() {
    let logs = LogCapture::default();
    let _g = logs.install();
    let script = Script::new(vec![
        ok_token("at-SECRET-ONE-0001", json!(300)),
        ok_token("at-SECRET-TWO-0002", json!(300)),
        ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client", "error_description": null})),
    ]);
    let (server, url) = token_server(script).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
    let mut shown = Vec::new();
    let t1 = m.token("e").await.unwrap();
    shown.push(format!("{t1:?} {:?} {} {:?}", t1.access_token(), t1.access_token(), t1.authorization()));
    clock.advance_secs(30);
    let t2 = m.renew_after_unauthorized(&t1).await.unwrap();
    shown.push(format!("{t2:?} {m:?}"));
    clock.advance_secs(240);
    let err = m.token("e").await.unwrap_err();
    assert!(matches!(err, AuthError::InvalidClient(_)));
    shown.push(format!("{err} {err:?}"));
    shown.push(serde_json::to_string(&m.status()).unwrap());
    shown.push(format!("{:?}", m.status()));
    shown.push(logs.text());
    let report_err = token_report(&m, "e", false).await.unwrap_err();
    shown.push(format!("{report_err}"));
    let mut secrets = vec!["at-SECRET-ONE-0001".to_owned(), "at-SECRET-TWO-0002".to_owned()];
    for post in token_posts(&server).await {
        let jws = field(&post, "client_assertion").unwrap();
        secrets.push(jws.rsplit('.').next().unwrap().to_owned());
        secrets.push(jws);
    }
    assert_eq!(secrets.len(), 2 + 2 * 3);
    for s in &shown {
        for secret in &secrets {
            assert!(!s.contains(secret.as_str()), "leaked {secret:.20}… in {s}");
        }
    }
    assert!(logs.text().contains("access token obtained"), "the logs do describe the tokens");
}

/// The dashboard's view of a connection.
#[tokio::test]
async fn status_describes_each_connection() {
    let (_s, url) = token_server(TokenStub::new(json!(3600)).with("scope", json!("Patient.read"))).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url}))]);
    let before = m.connection_status("epic").unwrap();
    assert!(!before.tokens[0].has_token && before.token_endpoint.is_none());
    m.token("epic").await.unwrap();
    clock.advance_secs(100);
    let v = serde_json::to_value(m.connection_status("epic").unwrap()).unwrap();
    assert_eq!(v["connection"], "epic");
    assert_eq!(v["vendor"], "epic");
    assert_eq!(v["token_endpoint"], json!(url));
    let t = &v["tokens"][0];
    assert_eq!(t["has_token"], true);
    assert_eq!(t["expires_at_unix"], json!(NOW + 3600));
    assert_eq!(t["next_renewal_unix"], json!(NOW + 3540));
    assert_eq!(t["expires_in_secs"], 3500);
    assert_eq!(t["renews_in_secs"], 3440);
    assert_eq!(t["last_renewal_unix"], json!(NOW));
    assert_eq!(t["renewal_count"], 1);
    assert_eq!(t["failure_count"], 0);
    assert_eq!(t["last_error"], json!(null));
    assert_eq!(t["granted_scopes"]["scopes"], json!(["system/Patient.r"]));
    assert_eq!(v["budget"]["token_requests_last_minute"], 0, "the token request is over a minute old");
    assert_eq!(v["needs_attention"], false);
}

/// Counters and gauges reach a Prometheus recorder.
#[test]
fn metrics_are_recorded() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _g = metrics::set_default_local_recorder(&recorder);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let script = Script::new(vec![ok_token("at-1", json!(300)), ResponseTemplate::new(503)]);
        let (_s, url) = token_server(script).await;
        let clock = ManualClock::new(NOW);
        let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
        let t = m.token("e").await.unwrap();
        m.invalidate(&t);
        clock.advance_secs(10);
        m.token("e").await.unwrap_err();
        m.record_metrics();
    });
    let text = handle.render();
    for line in [
        "medicodax_token_requests_total{connection=\"e\"} 2",
        "medicodax_token_failures_total{connection=\"e\",class=\"unavailable\"} 1",
        "medicodax_token_invalidations_total{connection=\"e\"} 1",
        &format!("medicodax_token_expiry_timestamp_seconds{{connection=\"e\"}} {}", NOW + 300),
        "medicodax_token_valid{connection=\"e\"} 0",
        "medicodax_rate_budget_used{connection=\"e\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// `medicodax token --connection NAME`: metadata, and the token only when asked.
#[tokio::test]
async fn the_token_report() {
    let (_s, url) = token_server(TokenStub::new(json!(300)).with("scope", json!("system/Patient.rs"))).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
    let r = token_report(&m, "e", false).await.unwrap();
    assert_eq!((r.connection.as_str(), r.vendor.as_str(), r.token_endpoint.as_str()), ("e", "eclinicalworks", url.as_str()));
    assert_eq!(r.requested_scopes, Some(vec!["system/Patient.rs".to_owned()]));
    assert_eq!(r.granted_scopes, vec!["system/Patient.rs"]);
    assert_eq!((r.expires_in_secs, r.renews_in_secs, r.generation), (300, 240, 1));
    assert_eq!(r.access_token, None);
    let text = r.to_string();
    assert!(text.contains("expires in      300 s") && !text.contains("at-1"), "{text}");
    assert!(!serde_json::to_string(&r).unwrap().contains("access_token"));
    clock.advance_secs(40);
    let r = token_report(&m, "e", true).await.unwrap();
    assert_eq!(r.access_token.as_deref(), Some("at-1"), "the cached token");
    assert_eq!((r.expires_in_secs, r.renews_in_secs), (260, 200));
    assert!(r.to_string().contains("access token    at-1"));
    assert!(!format!("{r:?}").contains("at-1"));
    assert!(matches!(token_report(&m, "nope", false).await, Err(AuthError::UnknownConnection(_))));
}
