//! Error answers of the token endpoint: pitfalls case 3 (invalid_client diagnosis and the
//! config-error policy), case 16 (granted scopes, invalid_scope), unauthorized_client,
//! 429/5xx with Retry-After, network failures and unusable answers.

mod common;

use common::*;
use medicodax_clock::ManualClock;
use medicodax_smart::http::NetworkKind;
use medicodax_smart::{AuthError, ErrorClass, GrantSource};
use serde_json::json;
use std::time::Duration;
use wiremock::ResponseTemplate;

const CERNER: &str = "https://fhir.cerner-test.example/r4/tnt-0001";

/// Case 3 (a) and (b): `invalid_client` with a null description, and with only an
/// `error_uri`: typed, a redacted record with everything needed to debug, fail fast,
/// one slow retry after 60 s with a new assertion, then stuck until reset.
#[tokio::test]
async fn pitfall_3_invalid_client_is_a_config_error_with_a_redacted_record() {
    let error_uri = "https://auth.cerner-test.example/errors/urn%3Aexample%3Aclient-assertion%3Ainvalid-signature/instances/abc";
    for (status, body) in [
        (400, json!({"error": "invalid_client", "error_description": null})),
        (401, json!({"error": "invalid_client", "error_uri": error_uri})),
    ] {
        let logs = LogCapture::default();
        let _g = logs.install();
        let script = Script::new(vec![ResponseTemplate::new(status).set_body_json(body.clone()), ResponseTemplate::new(status).set_body_json(body), ok_token("at-1", json!(570))]);
        let (server, url) = token_server(script.clone()).await;
        let clock = ManualClock::new(NOW);
        let m = manager(&clock, vec![cfg("cerner", "oracle-health", CERNER, json!({"token_url": url, "client_id": "cid-cerner-0001", "token_min_interval": 0}))]);
        let err = m.token("cerner").await.unwrap_err();
        let AuthError::InvalidClient(rec) = &err else { panic!("expected InvalidClient, got {err:?}") };
        assert!(err.is_config());
        assert_eq!(rec.connection, "cerner");
        assert_eq!(rec.vendor.as_str(), "oracle-health");
        assert_eq!(rec.token_url, url);
        assert_eq!(rec.http_status, status);
        assert_eq!(rec.error, "invalid_client");
        assert_eq!(rec.error_description, None);
        assert_eq!(rec.error_uri.as_deref(), if status == 401 { Some(error_uri) } else { None });
        assert_eq!(rec.request_content_type, "application/x-www-form-urlencoded");
        assert_eq!(rec.requested_scope.as_deref(), Some("system/Patient.rs"));
        assert_eq!((rec.assertion.header.alg.as_str(), rec.assertion.header.typ.as_str()), ("RS384", "JWT"));
        assert_eq!(rec.assertion.header.kid, rsa_key().kid());
        assert_eq!((rec.assertion.claims.iss.as_str(), rec.assertion.claims.sub.as_str()), ("cid-cerner-0001", "cid-cerner-0001"));
        assert_eq!(rec.assertion.claims.aud, url);
        assert_eq!(rec.assertion.exp_minus_iat, 270);
        let sent = field(&token_posts(&server).await[0], "client_assertion").unwrap();
        assert_eq!(rec.assertion.claims.jti, decode(&sent).1["jti"].as_str().unwrap());
        // The record, the error and the logs never hold the JWS or its signature.
        let signature = sent.rsplit('.').next().unwrap();
        let record_json = serde_json::to_string(&**rec).unwrap();
        for shown in [record_json.clone(), err.to_string(), format!("{err:?}"), logs.text()] {
            assert!(!shown.contains(&sent) && !shown.contains(signature), "leaked: {shown}");
        }
        let v: serde_json::Value = serde_json::from_str(&record_json).unwrap();
        assert_eq!(v["assertion"]["header"], json!({"alg": "RS384", "kid": rsa_key().kid(), "typ": "JWT"}));
        assert_eq!(v["assertion"]["claims"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["aud", "iss", "jti", "sub"]);
        assert!(err.to_string().contains("kid") && err.to_string().contains("propagate"), "{err}");
        assert!(logs.text().contains("invalid_client"));

        // Waiting callers fail fast with the same typed error; no request is made.
        clock.advance_secs(59);
        assert!(matches!(m.token("cerner").await, Err(AuthError::InvalidClient(_))));
        assert_eq!(script.count(), 1);
        // One slow retry at 60 s, with a new assertion.
        clock.advance_secs(1);
        assert!(matches!(m.token("cerner").await, Err(AuthError::InvalidClient(_))));
        assert_eq!(script.count(), 2);
        let posts = token_posts(&server).await;
        assert_ne!(field(&posts[0], "client_assertion"), field(&posts[1], "client_assertion"));
        // Then it sticks: no tight loop, however long we wait.
        clock.advance_secs(3600);
        assert!(matches!(m.token("cerner").await, Err(AuthError::InvalidClient(_))));
        assert_eq!(script.count(), 2);
        let st = m.connection_status("cerner").unwrap();
        assert!(st.needs_attention);
        assert_eq!(st.last_failure.as_ref().map(|r| r.error.as_str()), Some("invalid_client"));
        assert_eq!(st.tokens[0].last_error, Some(ErrorClass::InvalidClient));
        // After the registration is fixed, a reset lets the next call through.
        m.reset("cerner").unwrap();
        assert_eq!(m.token("cerner").await.unwrap().access_token().expose_secret(), "at-1");
        assert_eq!(script.count(), 3);
    }
}

/// Case 5 (c) with the config-error policy: a "jti already used" rejection is followed
/// (after the slow-retry delay) by an attempt with a fresh jti, which succeeds.
#[tokio::test]
async fn a_replayed_jti_rejection_is_followed_by_a_fresh_assertion() {
    let script = Script::new(vec![
        ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client", "error_description": "jti already used"})),
        ok_token("at-1", json!(300)),
    ]);
    let (server, url) = token_server(script).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
    let err = m.token("e").await.unwrap_err();
    assert!(err.to_string().contains("jti already used"), "{err}");
    clock.advance_secs(60);
    assert_eq!(m.token("e").await.unwrap().access_token().expose_secret(), "at-1");
    let posts = token_posts(&server).await;
    let jti = |i: usize| decode(&field(&posts[i], "client_assertion").unwrap()).1["jti"].clone();
    assert_ne!(jti(0), jti(1));
}

/// Epic `unauthorized_client`: the message says the customer has not mapped the client.
#[tokio::test]
async fn epic_unauthorized_client_names_the_user_mapping() {
    let script = Script::new(vec![ResponseTemplate::new(400).set_body_json(json!({"error": "unauthorized_client"}))]);
    let (_server, url) = token_server(script.clone()).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url}))]);
    let err = m.token("epic").await.unwrap_err();
    assert!(matches!(err, AuthError::UnauthorizedClient(_)));
    assert!(err.is_config());
    let text = err.to_string();
    assert!(text.contains("has not mapped this client id to a background user"), "{text}");
    assert!(matches!(m.token("epic").await, Err(AuthError::UnauthorizedClient(_))), "fails fast");
    assert_eq!(script.count(), 1);
}

/// Case 16 (c): `invalid_scope` names the scopes; no retry with other scopes; the one
/// slow retry asks for the same scopes.
#[tokio::test]
async fn pitfall_16_invalid_scope_names_the_scopes_and_never_broadens() {
    let script = Script::new(vec![ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_scope"}))]);
    let (server, url) = token_server(script.clone()).await;
    let clock = ManualClock::new(NOW);
    let scopes = ["system/Patient.read", "system/Observation.read", "system/Condition.read"];
    let m = manager(&clock, vec![cfg("cerner", "oracle-health", CERNER, json!({"token_url": url, "scopes": scopes, "token_min_interval": 0}))]);
    let err = m.token("cerner").await.unwrap_err();
    let AuthError::InvalidScope(rec) = &err else { panic!("{err:?}") };
    assert_eq!(rec.requested_scope.as_deref(), Some("system/Patient.read system/Observation.read system/Condition.read"));
    assert!(err.to_string().contains("system/Patient.read system/Observation.read system/Condition.read"), "{err}");
    assert!(matches!(m.token("cerner").await, Err(AuthError::InvalidScope(_))));
    assert_eq!(script.count(), 1);
    clock.advance_secs(60);
    assert!(m.token("cerner").await.is_err());
    clock.advance_secs(600);
    assert!(m.token("cerner").await.is_err());
    let sent: Vec<String> = token_posts(&server).await.iter().map(|r| field(r, "scope").unwrap()).collect();
    assert_eq!(sent, vec!["system/Patient.read system/Observation.read system/Condition.read"; 2]);
}

/// Case 16 (a) and (b): granted scopes are stored from the response; when absent they
/// are taken to equal the requested ones, and that is logged.
#[tokio::test]
async fn pitfall_16_granted_scopes_are_kept() {
    let requested = ["system/Patient.read", "system/Observation.read", "system/Condition.read"];
    let stub = TokenStub::new(json!(300)).with("scope", json!("system/Patient.read system/Condition.read"));
    let (_s, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("cerner", "oracle-health", CERNER, json!({"token_url": url, "scopes": requested}))]);
    let t = m.token("cerner").await.unwrap();
    assert_eq!(t.granted_scopes().scopes, vec!["system/Patient.read", "system/Condition.read"]);
    assert_eq!(t.granted_scopes().source, GrantSource::Response);
    assert_eq!(m.granted_scopes("cerner").unwrap().scopes, vec!["system/Patient.read", "system/Condition.read"]);
    let st = m.connection_status("cerner").unwrap();
    assert_eq!(st.tokens[0].granted_scopes.as_ref().unwrap().scopes.len(), 2);

    let logs = LogCapture::default();
    let _g = logs.install();
    let (_s, url) = token_server(TokenStub::new(json!(300))).await;
    let m = manager(&clock, vec![cfg("cerner", "oracle-health", CERNER, json!({"token_url": url, "scopes": requested}))]);
    let g = m.token("cerner").await.unwrap().granted_scopes().clone();
    assert_eq!(g.scopes, requested);
    assert_eq!((g.source, g.as_returned.as_deref()), (GrantSource::AssumedRequested, None));
    assert!(logs.text().contains("granted scopes are taken to equal the requested scopes"), "{}", logs.text());
}

/// Epic returns Epic-style scopes, mapped to SMART v2; with none, the configured scopes.
#[tokio::test]
async fn epic_granted_scopes() {
    let stub = TokenStub::new(json!(3600)).with("scope", json!("Patient.read Patient.search"));
    let (_s, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url}))]);
    let g = m.token("epic").await.unwrap().granted_scopes().clone();
    assert_eq!(g.scopes, vec!["system/Patient.r", "system/Patient.s"]);
    assert_eq!(g.as_returned.as_deref(), Some("Patient.read Patient.search"));

    let (_s, url) = token_server(TokenStub::new(json!(3600))).await;
    let m = manager(&clock, vec![cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url, "scopes": ["system/Patient.rs", "system/Encounter.rs"]}))]);
    let g = m.token("epic").await.unwrap().granted_scopes().clone();
    assert_eq!((g.scopes.clone(), g.source), (vec!["system/Patient.rs".to_owned(), "system/Encounter.rs".to_owned()], GrantSource::AssumedConfigured));
}

/// 429 with Retry-After in seconds and as an HTTP date: callers fail fast for that long,
/// and the connection's budget is blocked.
#[tokio::test]
async fn retry_after_is_honoured() {
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(NOW as u64 + 90));
    for (header, expected) in [("120".to_owned(), 120u64), (date, 90)] {
        let script = Script::new(vec![ResponseTemplate::new(429).insert_header("Retry-After", header.as_str()), ok_token("at-1", json!(300))]);
        let (_s, url) = token_server(script.clone()).await;
        let clock = ManualClock::new(NOW);
        let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url}))]);
        let err = m.token("e").await.unwrap_err();
        assert!(matches!(&err, AuthError::Unavailable { status: 429, retry_after: Some(d), .. } if d.as_secs() == expected), "{err:?}");
        let again = m.token("e").await.unwrap_err();
        assert_eq!(again.retry_after(), Some(Duration::from_secs(expected)));
        assert!(matches!(again, AuthError::BackingOff { cause: ErrorClass::Unavailable, .. }));
        assert_eq!(m.connection_status("e").unwrap().budget.blocked_for_secs, Some(expected));
        assert!(m.try_acquire("e", medicodax_smart::RequestKind::Fhir).is_err(), "FHIR requests wait too");
        clock.advance_secs(expected);
        assert_eq!(m.token("e").await.unwrap().access_token().expose_secret(), "at-1");
        assert_eq!(script.count(), 2);
    }
}

/// Repeated transient failures back off exponentially (5, 10, 20 s …).
#[tokio::test]
async fn transient_failures_back_off() {
    let script = Script::new(vec![ResponseTemplate::new(502), ResponseTemplate::new(500), ResponseTemplate::new(504), ok_token("at-1", json!(300))]);
    let (_s, url) = token_server(script.clone()).await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("g", "generic", "https://f.example/r4", json!({"token_url": url}))]);
    for (status, pause) in [(502u16, 5u64), (500, 10), (504, 20)] {
        assert!(matches!(m.token("g").await, Err(AuthError::Unavailable { status: s, .. }) if s == status));
        assert_eq!(m.token("g").await.unwrap_err().retry_after(), Some(Duration::from_secs(pause)));
        clock.advance_secs(pause);
    }
    assert!(m.token("g").await.is_ok());
    assert_eq!(m.connection_status("g").unwrap().tokens[0].consecutive_failures, 0);
}

/// Network failures are typed; unusable answers are typed; nothing panics.
#[tokio::test]
async fn network_and_answer_failures_are_typed() {
    let clock = ManualClock::auto_advance(NOW);
    // Nothing listens on this port (bound then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let m = manager(&clock, vec![cfg("g", "generic", "https://f.example/r4", json!({"token_url": format!("http://127.0.0.1:{port}/token")}))]);
    let e = m.token("g").await.unwrap_err();
    assert!(matches!(e, AuthError::Network { kind: NetworkKind::Connect, .. }), "{e:?}");

    let cases = [
        (ResponseTemplate::new(200).set_body_string("<html>ok</html>"), "not a JSON object"),
        (ResponseTemplate::new(200).set_body_json(json!({"access_token": "x", "token_type": "mac"})), "\"mac\" is not bearer"),
        (ResponseTemplate::new(200).set_body_json(json!({"token_type": "bearer"})), "no string access_token"),
        (ResponseTemplate::new(302).insert_header("Location", "https://elsewhere.example/token"), "redirect"),
        (ResponseTemplate::new(404).set_body_string("Not Found"), "HTTP 404 without an OAuth error body"),
    ];
    for (resp, says) in cases {
        let (_s, url) = token_server(Script::new(vec![resp])).await;
        let m = manager(&clock, vec![cfg("g", "generic", "https://f.example/r4", json!({"token_url": url}))]);
        let e = m.token("g").await.unwrap_err();
        assert!(matches!(e, AuthError::BadResponse { .. }) && e.to_string().contains(says), "{e}");
    }
    // Discovery failures name the URL and the problem.
    let server = wiremock::MockServer::start().await;
    let m = manager(&clock, vec![cfg("d", "generic", &format!("{}/fhir", server.uri()), json!({}))]);
    let e = m.token("d").await.unwrap_err();
    assert!(matches!(&e, AuthError::Discovery { url, .. } if url.ends_with("/fhir/.well-known/smart-configuration")), "{e:?}");
    assert!(e.to_string().contains("HTTP 404"), "{e}");
    assert!(matches!(m.token("nope").await, Err(AuthError::UnknownConnection(_))));
}
