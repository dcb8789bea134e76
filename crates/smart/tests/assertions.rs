//! Client assertions and the token request, pitfalls cases 1, 2, 4, 5 and 6.

mod common;

use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA384, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use medicodax_clock::ManualClock;
use medicodax_jose::{Alg, PrivateKey, VerifyingKey};
use medicodax_smart::assertion::{self, AssertionParams};
use medicodax_smart::{AuthManager, SetupProblem};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const CERNER_TOKEN_PATH: &str = "/tenants/tnt-0001/hosts/fhir.cerner-test.example/protocols/oauth2/profiles/smart-v1/token";

async fn cerner_server(token_path: &str) -> (MockServer, String) {
    let server = MockServer::start().await;
    let token_endpoint = format!("{}{token_path}", server.uri());
    Mock::given(method("GET"))
        .and(path("/r4/tnt-0001/.well-known/smart-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_endpoint": token_endpoint,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "grant_types_supported": ["client_credentials"],
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path(token_path)).respond_with(TokenStub::new(json!(570))).mount(&server).await;
    (server, token_endpoint)
}

/// Case 1: the POST goes to the discovered token endpoint, and `aud` is that string
/// exactly, whether or not the configured base ends with a slash.
#[tokio::test]
async fn pitfall_1_aud_is_the_discovered_token_endpoint_byte_for_byte() {
    for token_path in [CERNER_TOKEN_PATH, "/oauth2/token/"] {
        let mut auds = Vec::new();
        for suffix in ["", "/"] {
            let (server, token_endpoint) = cerner_server(token_path).await;
            let base = format!("{}/r4/tnt-0001{suffix}", server.uri());
            let clock = ManualClock::new(NOW);
            let m = manager(&clock, vec![cfg("cerner", "oracle-health", &base, json!({"client_id": "cid-cerner-0001"}))]);
            m.token("cerner").await.unwrap();
            let reqs = server.received_requests().await.unwrap();
            assert_eq!(reqs.len(), 2);
            assert_eq!(reqs[0].url.path(), "/r4/tnt-0001/.well-known/smart-configuration");
            assert_eq!(reqs[0].headers.get("accept").unwrap(), "application/json");
            assert_eq!(reqs[1].url.path(), token_path);
            let (_, claims) = decode(&field(&reqs[1], "client_assertion").unwrap());
            let aud = claims["aud"].as_str().unwrap().to_owned();
            assert!(aud == token_endpoint, "aud {aud:?} != discovered {token_endpoint:?}");
            assert_ne!(aud, base);
            assert_eq!(m.discovery("cerner").unwrap().token_endpoint, token_endpoint);
            auds.push(aud.trim_start_matches(&server.uri()).to_owned());
        }
        assert_eq!(auds[0], auds[1], "the same aud with and without a trailing slash on the base");
    }
}

/// Case 1: a configured `token_url` skips discovery and is the `aud` as written.
#[tokio::test]
async fn a_configured_token_url_skips_discovery() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/oauth2//token")).respond_with(TokenStub::new(json!(300))).mount(&server).await;
    let url = format!("{}/oauth2//token", server.uri());
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("g", "generic", "https://unreachable.example/r4", json!({"token_url": url}))]);
    m.token("g").await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1, "no discovery request");
    let (_, claims) = decode(&field(&reqs[0], "client_assertion").unwrap());
    assert_eq!(claims["aud"], json!(url));
}

/// Case 2: exactly the four form parameters in the body, no Authorization header, no secret.
#[tokio::test]
async fn pitfall_2_the_exact_token_request_shape() {
    let (server, _) = cerner_server(CERNER_TOKEN_PATH).await;
    let clock = ManualClock::new(NOW);
    let base = format!("{}/r4/tnt-0001", server.uri());
    let c = cfg("cerner", "oracle-health", &base, json!({"client_id": "cid-cerner-0001", "scopes": ["system/Patient.read", "system/Observation.read"]}));
    manager(&clock, vec![c]).token("cerner").await.unwrap();
    let post = token_posts(&server).await.remove(0);
    assert_eq!(post.url.path(), CERNER_TOKEN_PATH);
    assert_eq!(post.url.query(), None, "nothing in the query string");
    assert_eq!(post.headers.get("content-type").unwrap(), "application/x-www-form-urlencoded");
    assert_eq!(post.headers.get("accept").unwrap(), "application/json");
    assert!(post.headers.get("authorization").is_none());
    let pairs = form(&post);
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["grant_type", "scope", "client_assertion_type", "client_assertion"]);
    assert_eq!(pairs[0].1, "client_credentials");
    assert_eq!(pairs[1].1, "system/Patient.read system/Observation.read");
    assert_eq!(pairs[2].1, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(pairs[3].1.split('.').count(), 3);
    let raw = String::from_utf8(post.body.clone()).unwrap();
    assert!(raw.starts_with("grant_type=client_credentials&scope=system%2FPatient.read+system%2FObservation.read&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion="), "{raw}");
    assert!(!raw.contains("client_secret") && !raw.contains("client_id"));
}

/// Epic takes no `scope`: the body has exactly three parameters.
#[tokio::test]
async fn epic_sends_no_scope() {
    let stub = TokenStub::new(json!(3600));
    let (server, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    manager(&clock, vec![cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url}))]).token("epic").await.unwrap();
    let names: Vec<String> = form(&token_posts(&server).await[0]).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, vec!["grant_type", "client_assertion_type", "client_assertion"]);
}

/// Case 4: the claims at a frozen clock; `exp − iat` ≤ 300; no `nbf`; 600 s refused at startup.
#[tokio::test]
async fn pitfall_4_assertion_lifetime() {
    let stub = TokenStub::new(json!(3600));
    let (server, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    manager(&clock, vec![cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"token_url": url, "client_id": "cid-epic-0001"}))])
        .token("epic")
        .await
        .unwrap();
    let (_, claims) = decode(&field(&token_posts(&server).await[0], "client_assertion").unwrap());
    let obj = claims.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["aud", "exp", "iat", "iss", "jti", "sub"], "no nbf");
    assert_eq!(claims["iss"], "cid-epic-0001");
    assert_eq!(claims["sub"], "cid-epic-0001");
    assert_eq!(claims["aud"], json!(url));
    assert_eq!(claims["iat"], json!(NOW - 30), "iat back-dated 30 s");
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(exp, NOW + 240);
    assert!(NOW < exp && exp <= NOW + 300);
    assert_eq!(exp - claims["iat"].as_i64().unwrap(), 270);

    // Configured back-date and lifetime.
    let key = rsa_key();
    let p = AssertionParams { client_id: "c", token_endpoint: "https://a.example/token", jku: None, backdate_secs: 5, lifetime_secs: 300 };
    let a = assertion::mint(&key, &p, NOW).unwrap();
    assert_eq!((a.summary().iat, a.summary().exp, a.summary().exp_minus_iat), (NOW - 5, NOW + 295, 300));

    // 600 s refused at startup, naming the connection and the setting.
    let err = AuthManager::builder(clock.shared())
        .connection_with_key(cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"assertion_lifetime": 600})), rsa_key())
        .build()
        .unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!((err.0[0].connection.as_str(), err.0[0].setting), ("epic", "assertion_lifetime"));
    assert_eq!(err.0[0].problem, SetupProblem::AssertionLifetime(600));
    assert!(err.to_string().contains("at most 300 s"), "{err}");
    // A back-date not shorter than the lifetime would make exp lie in the past.
    let err = AuthManager::builder(clock.shared())
        .connection_with_key(cfg("g", "generic", "https://f.example/r4", json!({"assertion_lifetime": 30, "assertion_backdate": 30})), rsa_key())
        .build()
        .unwrap_err();
    assert_eq!(err.0[0].setting, "assertion_lifetime");
}

/// Case 5 (a): 10,000 assertions at a frozen clock all have different UUIDv4 `jti`s.
#[test]
fn pitfall_5_every_jti_is_fresh() {
    let key = rsa_key();
    let p = AssertionParams { client_id: "cid-epic-0001", token_endpoint: "https://a.example/token", jku: None, backdate_secs: 30, lifetime_secs: 270 };
    let mut jtis = HashSet::new();
    let mut jws = HashSet::new();
    for _ in 0..10_000 {
        let a = assertion::mint(&key, &p, NOW).unwrap();
        let u = uuid::Uuid::parse_str(&a.summary().claims.jti).unwrap();
        assert_eq!(u.get_version(), Some(uuid::Version::Random));
        jtis.insert(a.summary().claims.jti.clone());
        jws.insert(a.expose_jws().to_owned());
    }
    assert_eq!((jtis.len(), jws.len()), (10_000, 10_000));
}

/// A token endpoint that rejects a replayed `jti`, and holds its first answer past the
/// client's timeout (the request reached the server, the answer never came back).
#[derive(Clone, Default)]
struct ReplayGuard {
    seen: Arc<Mutex<Vec<(String, String)>>>,
    count: Arc<AtomicUsize>,
}

impl Respond for ReplayGuard {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let jws = field(req, "client_assertion").unwrap_or_default();
        let jti = decode(&jws).1["jti"].as_str().unwrap_or_default().to_owned();
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let mut seen = self.seen.lock().unwrap();
        if seen.iter().any(|(j, _)| *j == jti) {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client", "error_description": "jti already used"}));
        }
        seen.push((jti, jws));
        let ok = ResponseTemplate::new(200).set_body_json(json!({"access_token": format!("at-{}", n + 1), "token_type": "Bearer", "expires_in": 300}));
        if n == 0 { ok.set_delay(Duration::from_secs(3)) } else { ok }
    }
}

/// Case 5 (b, c): the first POST times out after reaching the server; the retry carries a
/// newly signed JWS with a new `jti`, which a replay-checking server accepts.
#[tokio::test]
async fn pitfall_5_a_retry_after_a_timeout_has_a_new_jti() {
    let guard = ReplayGuard::default();
    let (_server, url) = token_server(guard.clone()).await;
    let clock = ManualClock::auto_advance(NOW);
    let m = manager(&clock, vec![cfg("e", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url, "timeout": 1}))]);
    let t = m.token("e").await.unwrap();
    assert_eq!(t.access_token().expose_secret(), "at-2");
    let seen = guard.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].0, seen[1].0, "a new jti");
    assert_ne!(seen[0].1, seen[1].1, "a new compact JWS");
    assert!(t.sent_at().0 >= Duration::from_secs(5), "the retry kept the 5 s spacing");
}

/// Case 6: the eCW header is exactly {alg RS384, typ JWT, kid}; the signature is
/// RSASSA-PKCS1-v1_5 with SHA-384 (verified by an independent JWT library) and not PSS.
#[tokio::test]
async fn pitfall_6_rs384_header_and_signature() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("ecw.pem");
    medicodax_jose::key::write_private_key(&key_path, &rsa_key()).unwrap();
    let stub = TokenStub::new(json!(300));
    let (server, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    let c = cfg("ecw", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"token_url": url, "key": key_path, "kid": "gw-ecw-2026-01"}));
    let m = AuthManager::builder(clock.shared()).connection(c).build().unwrap();
    m.token("ecw").await.unwrap();
    let jws = field(&token_posts(&server).await[0], "client_assertion").unwrap();
    let (header, claims) = decode(&jws);
    assert_eq!(header, json!({"alg": "RS384", "typ": "JWT", "kid": "gw-ecw-2026-01"}));

    // The published JWK verifies it, with jsonwebtoken (not our verifier) ...
    let jwks = m.jwks();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].kid(), Some("gw-ecw-2026-01"));
    let dk = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0].0).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS384);
    v.set_audience(&[url.as_str()]);
    v.set_issuer(&["cid-ecw"]);
    v.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(&jws, &dk, &v).unwrap();
    assert_eq!(data.claims, claims);
    // ... and with ours; but not as PS384.
    let vk = VerifyingKey::from_jwk(&jwks.keys[0]).unwrap();
    let parts: Vec<&str> = jws.rsplitn(2, '.').collect();
    let (sig, input) = (B64.decode(parts[0]).unwrap(), parts[1]);
    assert!(vk.verify(Alg::RS384, input.as_bytes(), &sig));
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &jwks.keys[0].0.algorithm else { panic!("RSA key") };
    let der = rsa_public_der(&B64.decode(&rsa.n).unwrap(), &B64.decode(&rsa.e).unwrap());
    assert!(UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, &der).verify(input.as_bytes(), &sig).is_err(), "not PSS");
}

/// DER `RSAPublicKey` (PKCS#1) from modulus and exponent.
fn rsa_public_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn int(b: &[u8]) -> Vec<u8> {
        let mut v = if b[0] & 0x80 != 0 { vec![0] } else { vec![] };
        v.extend_from_slice(b);
        tlv(0x02, &v)
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 128 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(body);
        out
    }
    let mut body = int(n);
    body.extend(int(e));
    tlv(0x30, &body)
}

/// Case 6: a wrong algorithm for the vendor is refused at startup.
#[test]
fn pitfall_6_wrong_alg_refused_at_startup() {
    let clock = ManualClock::new(NOW);
    for alg in ["RS256", "ES256", "ES384", "PS384", "none"] {
        let err = AuthManager::builder(clock.shared())
            .connection_with_key(cfg("ecw", "eclinicalworks", "https://fhir.ecw-test.example/fhir/r4/PRAC01", json!({"alg": alg})), rsa_key())
            .build()
            .unwrap_err();
        assert_eq!((err.0[0].connection.as_str(), err.0[0].setting), ("ecw", "alg"), "{alg}");
        assert!(err.to_string().contains("not accepted by eclinicalworks: use RS384"), "{err}");
    }
    // Epic: ES384 only with a JWKS URL.
    let es = || PrivateKey::generate(Alg::ES384).unwrap();
    let err = AuthManager::builder(clock.shared())
        .connection_with_key(cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"alg": "ES384"})), es())
        .build()
        .unwrap_err();
    assert_eq!(err.0[0].problem, SetupProblem::Es384NeedsJku);
    AuthManager::builder(clock.shared())
        .connection_with_key(cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"alg": "ES384", "jku": "https://gw.example/.well-known/jwks.json"})), es())
        .build()
        .unwrap();
    // A key that does not fit the configured algorithm.
    let err = AuthManager::builder(clock.shared()).connection_with_key(cfg("g", "generic", "https://f.example/r4", json!({"alg": "ES384"})), rsa_key()).build().unwrap_err();
    assert_eq!(err.0[0].setting, "alg");
}

/// Case 6: an ES384 assertion for Epic carries the configured `jku`.
#[tokio::test]
async fn es384_with_jku_for_epic() {
    let stub = TokenStub::new(json!(3600));
    let (server, url) = token_server(stub).await;
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::ES384).unwrap();
    let kid = key.kid().to_owned();
    let jku = "https://gw.example/.well-known/jwks.json";
    let m = AuthManager::builder(clock.shared())
        .connection_with_key(cfg("epic", "epic", "https://fhir.epic-test.example/api/FHIR/R4", json!({"alg": "ES384", "jku": jku, "token_url": url})), key)
        .build()
        .unwrap();
    m.token("epic").await.unwrap();
    let (header, _) = decode(&field(&token_posts(&server).await[0], "client_assertion").unwrap());
    assert_eq!(header, json!({"alg": "ES384", "typ": "JWT", "kid": kid, "jku": jku}));
}

/// Case 6: an advertised algorithm list without the configured one gives a startup warning.
#[tokio::test]
async fn pitfall_6_advertised_algs_without_ours_warn() {
    let logs = LogCapture::default();
    let _g = logs.install();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/r4/.well-known/smart-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_endpoint": "token", "token_endpoint_auth_signing_alg_values_supported": ["ES384"]
        })))
        .mount(&server)
        .await;
    let clock = ManualClock::new(NOW);
    let m = manager(&clock, vec![cfg("vb", "generic", &format!("{}/fhir/r4", server.uri()), json!({}))]);
    let prepared = m.prepare().await;
    let d = prepared[0].1.as_ref().unwrap();
    assert_eq!(d.token_endpoint, format!("{}/fhir/r4/token", server.uri()), "relative URL resolved against the base");
    let st = m.connection_status("vb").unwrap();
    assert_eq!(st.discovery_warnings.len(), 1);
    assert!(st.discovery_warnings[0].contains("[\"ES384\"]") && st.discovery_warnings[0].contains("RS384"), "{:?}", st.discovery_warnings);
    let text = logs.text();
    assert!(text.contains("WARN") && text.contains("does not include the configured RS384") && text.contains("connection=vb"), "{text}");
}
