//! Dashboard access with bearer JWTs from an external OpenID Connect issuer
//! (`[auth.oidc]`): the issuer's JWKS served by a local mock, tokens signed RS256 (what
//! most issuers use) by the `jsonwebtoken` crate with keys generated at test time. A good token opens the pages its roles allow, needs no CSRF
//! value, and is audited once; every bad one is a 401 with `WWW-Authenticate` (never a
//! redirect, never audited); a token granting no dashboard role is a 403.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medicodax_clock::{Clock, ManualClock};
use medicodax_config::{Config, OidcConfig};
use medicodax_gateway::dashboard::{Dashboard, router_with};
use medicodax_gateway::server::{Paths, build};
use medicodax_gateway::service::Gateway;
use medicodax_gateway::worksheets::Submission;
use medicodax_jose::{Alg, PrivateKey};
use medicodax_wire::audit::AuditRecord;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt as _;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NOW: i64 = 1_767_225_600;
const ISSUER: &str = "https://idp.example.org/realms/clinic";
const AUDIENCE: &str = "medicodax-dashboard";

struct Env {
    gw: Arc<Gateway>,
    app: axum::Router,
    key: PrivateKey,
    idp: MockServer,
    _dir: tempfile::TempDir,
}

async fn env(oidc: bool) -> Env {
    medicodax_jose::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let idp = MockServer::start().await;
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let mut jwk = serde_json::to_value(key.public_jwk()).unwrap();
    jwk["alg"] = json!("RS256");
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk]})).insert_header("cache-control", "max-age=300"))
        .mount(&idp)
        .await;
    let mut config = Config::default();
    if oidc {
        config.auth.oidc = Some(OidcConfig { issuer: ISSUER.into(), audience: AUDIENCE.into(), jwks_url: format!("{}/jwks", idp.uri()), roles_claim: "realm_access.roles".into() });
    }
    config.validate().unwrap();
    let paths = Paths { data_dir: dir.path().join("data"), config_dir: dir.path().to_owned() };
    let (gw, _) = build(config, &paths, clock.shared()).await.unwrap();
    let body = json!({"diagnoses": [{"condition_id": "c1", "display": "Hypertension", "suggestions": [{"code": "I10", "confidence": 0.95, "source": "crosswalk"}]}]}).to_string();
    let now_ms = clock.now_unix_millis();
    gw.worksheets
        .submit(&Submission { connection: "epic", encounter: "e1", patient: "p1", class: "IMP", agent: "coding-agent", now_ms, pipeline_ms: 30_000, baseline_min: 20.0, body: &body })
        .await
        .unwrap();
    let app = router_with(Arc::new(Dashboard::new(Arc::clone(&gw))));
    Env { gw, app, key, idp, _dir: dir }
}

fn claims(roles: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": [AUDIENCE, "account"], "sub": "f3a9c2d0", "preferred_username": "dana",
           "iat": NOW - 10, "exp": NOW + 300, "realm_access": {"roles": roles}})
}

/// `claims` signed RS256 by `key`, with its `kid`, as an issuer would.
fn token(key: &PrivateKey, claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(key.kid().to_owned());
    let pem = key.to_pkcs8_pem().unwrap();
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
}

/// A token with `header` and `claims` and a meaningless signature.
fn forged(header: &Value, claims: &Value) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode([7u8; 256]))
}

struct Resp {
    status: StatusCode,
    www_authenticate: String,
    location: String,
    body: String,
}

async fn send(e: &Env, method: &str, uri: &str, authorization: &str, form: Option<&str>) -> Resp {
    let mut b = Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, authorization);
    if form.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let resp = e.app.clone().oneshot(b.body(Body::from(form.unwrap_or("").to_owned())).unwrap()).await.unwrap();
    let h = |n: header::HeaderName| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (status, www_authenticate, location) = (resp.status(), h(header::WWW_AUTHENTICATE), h(header::LOCATION));
    let body = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    Resp { status, www_authenticate, location, body }
}

async fn events(gw: &Gateway, name: &str) -> Vec<(String, Value)> {
    medicodax_audit::tail(gw.audit.db(), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.entry.record {
            AuditRecord::Event(ev) if ev.event == name => Some((ev.subject, ev.detail)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_good_bearer_token_opens_its_pages_is_audited_once_and_needs_no_csrf() {
    let e = env(true).await;
    let t = format!("Bearer {}", token(&e.key, &claims(&["coder", "offline_access"])));
    let me = send(&e, "GET", "/me", &t, None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert!(me.body.contains("oidc:dana") && me.body.contains("coder"), "{}", me.body);
    assert_eq!(send(&e, "GET", "/worksheets", &t, None).await.status, StatusCode::OK);
    assert_eq!(send(&e, "GET", "/users", &t, None).await.status, StatusCode::FORBIDDEN, "a coder token is no admin");
    assert_eq!(send(&e, "GET", "/audit", &t, None).await.status, StatusCode::FORBIDDEN);

    // A review with the bearer token: no CSRF value needed, the reviewer is the token's user.
    let page = send(&e, "GET", "/worksheets/epic/e1", &t, None).await;
    let marker = "name=\"ticket\" value=\"";
    let ticket = page.body[page.body.find(marker).expect("a review ticket") + marker.len()..].split('"').next().unwrap().to_owned();
    let r = send(&e, "POST", "/worksheets/epic/e1/review", &t, Some(&format!("action=accept&ticket={ticket}"))).await;
    assert_eq!((r.status, r.location.as_str()), (StatusCode::SEE_OTHER, "/worksheets/epic/e1"), "{}", r.body);
    assert_eq!(events(&e.gw, "worksheet.reviewed").await[0].1["reviewer"], "oidc:dana");

    // Six requests, one audit record of the token's first use, without the token.
    let used = events(&e.gw, "user.bearer").await;
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0].0, "oidc:dana");
    assert_eq!(used[0].1["issuer"], ISSUER);
    assert_eq!(used[0].1["roles"], json!(["coder"]));
    assert!(!used[0].1.to_string().contains(t.trim_start_matches("Bearer ")));
    assert_eq!(e.idp.received_requests().await.unwrap().len(), 1, "the issuer's JWKS is fetched once and cached");
}

#[tokio::test]
async fn bad_bearer_tokens_get_401_with_www_authenticate_and_are_not_audited() {
    let e = env(true).await;
    let other = PrivateKey::generate(Alg::RS384).unwrap();
    let mut wrong_iss = claims(&["admin"]);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = claims(&["admin"]);
    wrong_aud["aud"] = json!("someone-else");
    let mut expired = claims(&["admin"]);
    (expired["iat"], expired["exp"]) = (json!(NOW - 3600), json!(NOW - 60));
    let mut future = claims(&["admin"]);
    (future["iat"], future["exp"]) = (json!(NOW + 600), json!(NOW + 900));
    let mut no_exp = claims(&["admin"]);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut nobody = claims(&["admin"]);
    for k in ["sub", "preferred_username"] {
        nobody.as_object_mut().unwrap().remove(k);
    }
    let kid = e.key.kid().to_owned();
    // (what, why it must be refused, the Authorization header)
    let cases: Vec<(&str, &str, String)> = vec![
        ("signed by another key", "signing key was not found", format!("Bearer {}", token(&other, &claims(&["admin"])))),
        ("wrong iss", "iss is not the configured issuer", format!("Bearer {}", token(&e.key, &wrong_iss))),
        ("wrong aud", "aud does not include", format!("Bearer {}", token(&e.key, &wrong_aud))),
        ("expired", "expired 60 s ago", format!("Bearer {}", token(&e.key, &expired))),
        ("issued in the future", "600 s in the future", format!("Bearer {}", token(&e.key, &future))),
        ("no exp", "no exp", format!("Bearer {}", token(&e.key, &no_exp))),
        ("names nobody", "names nobody", format!("Bearer {}", token(&e.key, &nobody))),
        ("HS256", "'HS256' is not accepted", format!("Bearer {}", forged(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), &claims(&["admin"])))),
        ("alg none", "'none' is not accepted", format!("Bearer {}", forged(&json!({"alg": "none", "kid": kid}), &claims(&["admin"])))),
        ("jku", "'jku' is not accepted", format!("Bearer {}", forged(&json!({"alg": "RS256", "kid": kid, "jku": "https://evil.example/jwks"}), &claims(&["admin"])))),
        ("typ", "typ must be JWT", format!("Bearer {}", forged(&json!({"alg": "RS256", "kid": kid, "typ": "medicodax-call+jwt"}), &claims(&["admin"])))),
        ("tampered payload", "signature does not verify", {
            let good = token(&e.key, &claims(&["coder"]));
            let parts: Vec<&str> = good.split('.').collect();
            format!("Bearer {}.{}.{}", parts[0], B64.encode(claims(&["admin"]).to_string()), parts[2])
        }),
        ("garbage", "not base64url", "Bearer not.a.jwt".to_owned()),
        ("huge", "larger than 16384 bytes", format!("Bearer {}", "a".repeat(20_000))),
        ("empty", "must be `Bearer <JWT>`", "Bearer ".to_owned()),
        ("basic", "must be `Bearer <JWT>`", "Basic YWRtaW46cGFzc3dvcmQ=".to_owned()),
    ];
    for (what, why, auth) in &cases {
        let r = send(&e, "GET", "/me", auth, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
        assert!(r.www_authenticate.starts_with("Bearer error=\"invalid_token\""), "{what}: {:?}", r.www_authenticate);
        assert!(r.location.is_empty(), "{what}: no redirect for an API client");
        assert!(r.www_authenticate.contains(why), "{what}: refused for another reason: {}", r.www_authenticate);
    }
    // Verified, but no dashboard role: 403.
    let r = send(&e, "GET", "/me", &format!("Bearer {}", token(&e.key, &claims(&["offline_access"]))), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(events(&e.gw, "user.bearer").await.is_empty(), "refused tokens leave no audit record");
}

#[tokio::test]
async fn without_auth_oidc_bearer_tokens_are_refused() {
    let e = env(false).await;
    let r = send(&e, "GET", "/me", &format!("Bearer {}", token(&e.key, &claims(&["admin"]))), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.www_authenticate.contains("not configured"), "{}", r.www_authenticate);
    assert!(e.idp.received_requests().await.unwrap().is_empty());
}
