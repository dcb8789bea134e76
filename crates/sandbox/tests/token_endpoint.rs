//! The token endpoints judge client assertions as each vendor would: pitfalls cases 1-7,
//! and the accepting path.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use medicodax_sandbox::{ClientKeys, ClientRegistration, JWT_BEARER, RequestKind, Vendor};
use serde_json::json;
use std::time::Duration;

fn epic_scope_text() -> String {
    medicodax_sandbox::default_scopes().iter().map(|s| s.trim_start_matches("system/").trim_end_matches(".rs")).flat_map(|t| [format!("{t}.read"), format!("{t}.search")]).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn epic_accepts_a_correct_assertion_and_grants_the_registration_without_scope() {
    let env = env().await;
    let a = env.token(Vendor::Epic, &env.good_assertion(Vendor::Epic), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["token_type"], "bearer");
    assert_eq!(a.body["expires_in"], 3600);
    assert_eq!(a.body["scope"].as_str(), Some(epic_scope_text().as_str()));
    assert!(a.body["scope"].as_str().unwrap_or("").starts_with("Patient.read Patient.search Encounter.read"));
    assert!(a.body.get("refresh_token").is_none(), "Epic issues no refresh token to backend clients");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let token = a.body["access_token"].as_str().expect("token").to_owned();
    let hans = "cff45905-1e78-4259-a5ba-71052b953ca3";
    let read = env.fhir(Vendor::Epic, &format!("Patient/{hans}"), Some(&token)).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["name"][0]["family"], "Welch");
    let stats = env.sandbox.stats();
    assert_eq!(stats.tokens_issued(Vendor::Epic), 1);
    assert_eq!(stats.last(Vendor::Epic, RequestKind::Token).and_then(|r| r.client_id.as_deref()), Some(EPIC_URL_CLIENT));
    assert_eq!(stats.last(Vendor::Epic, RequestKind::Fhir).and_then(|r| r.token.as_deref()), Some("epic-token-1"));
    assert!(!format!("{stats:?}").contains(&token), "the log never holds a token value");
}

#[tokio::test]
async fn ecw_accepts_a_correct_assertion_and_grants_the_requested_registered_scopes() {
    let env = env().await;
    let a = env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), Some("system/Patient.read system/Observation.rs launch system/Group.read")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 300);
    assert_eq!(a.body["scope"], "system/Patient.read system/Observation.rs", "the intersection with the registration, as requested");
    let token = a.body["access_token"].as_str().expect("token");
    let sunny = "d255881c-a48f-4e97-9c02-47b7b8a85036";
    assert_eq!(env.fhir(Vendor::EClinicalWorks, &format!("Patient/{sunny}"), Some(token)).await.status, 200);
    let cond = env.fhir(Vendor::EClinicalWorks, &format!("Condition?patient={sunny}"), Some(token)).await;
    assert_eq!(cond.status, 403, "Condition was not granted");
}

#[tokio::test]
async fn discovery_names_the_exact_token_endpoint_and_vendor_algorithms() {
    let env = env().await;
    for (v, algs) in [(Vendor::Epic, json!(["RS256", "RS384", "RS512", "ES256", "ES384"])), (Vendor::EClinicalWorks, json!(["RS384"]))] {
        let a = answer(env.http.get(env.sandbox.smart_configuration_url(v)).send().await.expect("discovery")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["token_endpoint"].as_str(), Some(env.sandbox.token_url(v).as_str()));
        assert!(a.body["token_endpoint"].as_str().unwrap_or("").starts_with("http://127.0.0.1:"), "absolute");
        assert_eq!(a.body["token_endpoint_auth_signing_alg_values_supported"], algs);
        assert_eq!(a.body["token_endpoint_auth_methods_supported"], json!(["private_key_jwt"]));
        assert_eq!(a.body["grant_types_supported"], json!(["client_credentials"]));
        assert!(a.body["capabilities"].as_array().expect("caps").contains(&json!("client-confidential-asymmetric")));
        assert!(a.body["scopes_supported"].as_array().expect("scopes").contains(&json!("system/Observation.rs")));
    }
}

/// Pitfalls case 1: `aud` must be the token endpoint byte for byte.
#[tokio::test]
async fn pitfall_1_aud_must_match_exactly() {
    let env = env().await;
    for (v, client, status) in [(Vendor::Epic, EPIC_URL_CLIENT, 400), (Vendor::EClinicalWorks, ECW_CLIENT, 401)] {
        let url = env.sandbox.token_url(v);
        let port = env.sandbox.addr().port();
        let wrong = [
            format!("{url}/"),
            url.replacen("/oauth2", "//oauth2", 1),
            env.sandbox.fhir_base(v),
            url.replace("127.0.0.1", "localhost"),
            url.replace(&format!(":{port}"), &format!(":{port}/")),
            url.to_uppercase(),
        ];
        for aud in wrong {
            let a = env.token(v, &sign(rsa_key(), &claims(client, &aud, NOW)), Some("system/Patient.rs")).await;
            assert_eq!((a.status, a.error()), (status, "invalid_client"), "{v} aud {aud}");
            assert!(a.description().contains("aud must be exactly"), "{}", a.description());
        }
        let ok = env.token(v, &sign(rsa_key(), &claims(client, &url, NOW)), Some("system/Patient.rs")).await;
        assert_eq!(ok.status, 200, "{v}: {}", ok.text);
    }
}

/// Pitfalls case 2: the assertion goes in the form body, not an Authorization header;
/// and only a form-encoded POST without a query string is a token request.
#[tokio::test]
async fn pitfall_2_assertion_in_the_body_of_a_form_post_only() {
    let env = env().await;
    for (v, status) in [(Vendor::Epic, 400), (Vendor::EClinicalWorks, 401)] {
        let assertion = env.good_assertion(v);
        let url = env.sandbox.token_url(v);
        let header_only = env
            .http
            .post(&url)
            .bearer_auth(&assertion)
            .form(&[("grant_type", "client_credentials"), ("scope", "system/Patient.read system/Observation.read")])
            .send()
            .await
            .expect("post");
        let a = answer(header_only).await;
        assert_eq!((a.status, a.error()), (status, "invalid_client"), "{v}: {}", a.text);
        assert!(a.description().contains("Authorization header"));

        let both = answer(
            env.http
                .post(&url)
                .basic_auth("x", Some("y"))
                .form(&[("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER), ("client_assertion", &assertion), ("scope", "system/Patient.rs")])
                .send()
                .await
                .expect("post"),
        )
        .await;
        assert_eq!((both.status, both.error()), (400, "invalid_request"));

        let json_body = answer(
            env.http
                .post(&url)
                .json(&json!({"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER, "client_assertion": assertion}))
                .send()
                .await
                .expect("post"),
        )
        .await;
        assert_eq!((json_body.status, json_body.error()), (400, "invalid_request"), "JSON body");

        let query = answer(
            env.http
                .post(format!("{url}?grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={assertion}"))
                .form(&[("scope", "system/Patient.rs")])
                .send()
                .await
                .expect("post"),
        )
        .await;
        assert_eq!((query.status, query.error()), (400, "invalid_request"), "query parameters");
        let bare_q = answer(
            env.http
                .post(format!("{url}?"))
                .form(&[("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER), ("client_assertion", &env.good_assertion(v)), ("scope", "system/Patient.rs")])
                .send()
                .await
                .expect("post"),
        )
        .await;
        assert_eq!((bare_q.status, bare_q.error()), (400, "invalid_request"), "a '?' after /token");

        let get = answer(env.http.get(&url).send().await.expect("get")).await;
        assert_eq!((get.status, get.error()), (400, "invalid_request"), "GET");
        assert!(get.description().contains("POST"));
    }
    assert_eq!(env.sandbox.stats().tokens_issued(Vendor::Epic) + env.sandbox.stats().tokens_issued(Vendor::EClinicalWorks), 0);
}

/// Pitfalls case 3: every refusal names its error and says why (never a null description).
#[tokio::test]
async fn pitfall_3_refusals_carry_a_description() {
    let env = env().await;
    let bad = [
        env.token(Vendor::Epic, "not-a-jwt", None).await,
        env.token(Vendor::EClinicalWorks, "a.b.c", Some("system/Patient.rs")).await,
        env.token_form(Vendor::Epic, &[("grant_type", "password")]).await,
        env.token_form(Vendor::Epic, &[]).await,
    ];
    for a in bad {
        assert!(matches!(a.status, 400 | 401), "{}", a.text);
        assert!(!a.error().is_empty(), "{}", a.text);
        assert!(a.body["error_description"].is_string() && !a.description().is_empty(), "{}", a.text);
        assert!(a.header("content-type").unwrap_or("").starts_with("application/json"));
    }
    assert_eq!(env.token_form(Vendor::Epic, &[("grant_type", "password")]).await.error(), "unsupported_grant_type");
}

/// Pitfalls case 4: `iat` present, `exp − iat` ≤ 300, `exp` ≤ 5 minutes ahead,
/// `iat`/`nbf` not in the future.
#[tokio::test]
async fn pitfall_4_assertion_lifetime_rules() {
    let env = env().await;
    for (v, client, status) in [(Vendor::Epic, EPIC_URL_CLIENT, 400), (Vendor::EClinicalWorks, ECW_CLIENT, 401)] {
        let aud = env.sandbox.token_url(v);
        let refuse = [
            (json!({"iat": NOW, "exp": NOW + 301}), "more than 5 minutes"),
            (json!({"iat": null, "exp": NOW + 300}), "iat claim is required"),
            (json!({"iat": NOW - 60, "exp": NOW + 241}), "exp - iat"),
            (json!({"iat": NOW - 3600, "exp": NOW + 60}), "exp - iat"),
            (json!({"iat": NOW + 1, "exp": NOW + 200}), "iat is in the future"),
            (json!({"nbf": NOW + 20}), "nbf is in the future"),
            (json!({"iat": NOW - 300, "exp": NOW}), "expired"),
            (json!({"exp": "1767225840"}), "exp"),
            (json!({"exp": null}), "exp claim is required"),
        ];
        for (change, why) in refuse {
            let a = env.token(v, &sign(rsa_key(), &claims_with(client, &aud, NOW, change.clone())), Some("system/Patient.rs")).await;
            assert_eq!((a.status, a.error()), (status, "invalid_client"), "{v} {change}");
            assert!(a.description().contains(why), "{v} {change}: {}", a.description());
        }
        for ok in [json!({"iat": NOW, "exp": NOW + 300}), json!({"iat": NOW - 30, "exp": NOW + 240, "nbf": NOW - 30}), json!({})] {
            let a = env.token(v, &sign(rsa_key(), &claims_with(client, &aud, NOW, ok.clone())), Some("system/Patient.rs")).await;
            assert_eq!(a.status, 200, "{v} {ok}: {}", a.text);
        }
    }
}

/// Pitfalls case 5: a `jti` is single use; it must be a string of at most 151 characters.
#[tokio::test]
async fn pitfall_5_jti_single_use() {
    let env = env().await;
    for (v, client, status) in [(Vendor::Epic, EPIC_URL_CLIENT, 400), (Vendor::EClinicalWorks, ECW_CLIENT, 401)] {
        let aud = env.sandbox.token_url(v);
        let assertion = sign(rsa_key(), &claims(client, &aud, NOW));
        assert_eq!(env.token(v, &assertion, Some("system/Patient.rs")).await.status, 200);
        let replay = env.token(v, &assertion, Some("system/Patient.rs")).await;
        assert_eq!((replay.status, replay.error()), (status, "invalid_client"), "{v}");
        assert_eq!(replay.description(), "jti has already been used");
        let same_jti = sign(rsa_key(), &claims_with(client, &aud, NOW, json!({"jti": "fixed-jti", "iat": NOW - 10})));
        let again = sign(rsa_key(), &claims_with(client, &aud, NOW, json!({"jti": "fixed-jti", "iat": NOW - 20})));
        assert_eq!(env.token(v, &same_jti, Some("system/Patient.rs")).await.status, 200);
        assert_eq!(env.token(v, &again, Some("system/Patient.rs")).await.description(), "jti has already been used", "a new signature does not free the jti");
        assert_eq!(env.token(v, &env.good_assertion(v), Some("system/Patient.rs")).await.status, 200, "a fresh jti works");
        let long = sign(rsa_key(), &claims_with(client, &aud, NOW, json!({"jti": "j".repeat(152)})));
        assert!(env.token(v, &long, Some("system/Patient.rs")).await.description().contains("151"));
        let max = sign(rsa_key(), &claims_with(client, &aud, NOW, json!({"jti": "k".repeat(151)})));
        assert_eq!(env.token(v, &max, Some("system/Patient.rs")).await.status, 200);
        let number = sign(rsa_key(), &claims_with(client, &aud, NOW, json!({"jti": 12345})));
        assert_eq!(env.token(v, &number, Some("system/Patient.rs")).await.description(), "jti must be a string");
        let missing = sign(rsa_key(), &claims_with(client, &aud, NOW, json!({"jti": null})));
        assert_eq!(env.token(v, &missing, Some("system/Patient.rs")).await.error(), "invalid_client");
    }
}

/// Pitfalls case 6: algorithms per vendor, decided by an allow-list and the registration.
#[tokio::test]
async fn pitfall_6_algorithm_allow_lists() {
    let env = env().await;
    let epic_aud = env.sandbox.token_url(Vendor::Epic);
    let ecw_aud = env.sandbox.token_url(Vendor::EClinicalWorks);
    let rsa_kid = rsa_key().kid();

    let rs256_ecw = sign_other(Algorithm::RS256, rsa_kid, &claims(ECW_CLIENT, &ecw_aud, NOW), Some(rsa_key()), None);
    let a = env.token(Vendor::EClinicalWorks, &rs256_ecw, Some("system/Patient.rs")).await;
    assert_eq!((a.status, a.error()), (401, "invalid_client"));
    assert!(a.description().contains("RS256 is not accepted; accepted: RS384"), "{}", a.description());

    // Our JWK says alg RS384, which pins the key to RS384; a key without alg may verify
    // any RSA algorithm Epic accepts.
    let t = sign_other(Algorithm::RS256, rsa_kid, &claims(EPIC_URL_CLIENT, &epic_aud, NOW), Some(rsa_key()), None);
    assert!(env.token(Vendor::Epic, &t, None).await.description().contains("may not verify this algorithm"));
    let mut unpinned = jwk(rsa_key());
    unpinned.as_object_mut().expect("jwk").remove("alg");
    env.sandbox
        .register_client(ClientRegistration::new("epic-any-rsa", Vendor::Epic, ClientKeys::Inline(json!({"keys": [unpinned]}))))
        .expect("register");
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let t = sign_other(alg, rsa_kid, &claims("epic-any-rsa", &epic_aud, NOW), Some(rsa_key()), None);
        let a = env.token(Vendor::Epic, &t, None).await;
        assert_eq!(a.status, 200, "Epic accepts {alg:?}: {}", a.text);
    }

    let es_epic_url = sign(ec_key(), &claims(EPIC_URL_CLIENT, &epic_aud, NOW));
    assert_eq!(env.token(Vendor::Epic, &es_epic_url, None).await.status, 200, "ES384 with a JWKS URL");
    let es_epic_static = sign(ec_key(), &claims(EPIC_INLINE_CLIENT, &epic_aud, NOW));
    let a = env.token(Vendor::Epic, &es_epic_static, None).await;
    assert_eq!((a.status, a.error()), (400, "invalid_client"));
    assert!(a.description().contains("only from clients registered with a JWKS URL"), "{}", a.description());
    let rs_epic_static = sign(rsa_key(), &claims(EPIC_INLINE_CLIENT, &epic_aud, NOW));
    assert_eq!(env.token(Vendor::Epic, &rs_epic_static, None).await.status, 200, "RS384 with a static key");
    let es_ecw = sign(ec_key(), &claims(ECW_CLIENT, &ecw_aud, NOW));
    assert_eq!(env.token(Vendor::EClinicalWorks, &es_ecw, Some("system/Patient.rs")).await.error(), "invalid_client");

    // alg none (any case) and HS256 keyed with our public key are refused everywhere.
    for (v, client, aud) in [(Vendor::Epic, EPIC_URL_CLIENT, &epic_aud), (Vendor::EClinicalWorks, ECW_CLIENT, &ecw_aud)] {
        for none in ["none", "None", "NONE"] {
            let t = unsigned(none, rsa_kid, &claims(client, aud, NOW));
            assert_eq!(env.token(v, &t, Some("system/Patient.rs")).await.error(), "invalid_client", "{v} {none}");
        }
        let pem = rsa_key().public_jwk();
        for secret in [serde_json::to_vec(pem).expect("jwk"), rsa_kid.as_bytes().to_vec()] {
            for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let t = sign_other(alg, rsa_kid, &claims(client, aud, NOW), None, Some(&secret));
                let a = env.token(v, &t, Some("system/Patient.rs")).await;
                assert_eq!(a.error(), "invalid_client", "{v} {alg:?}");
                assert!(a.description().contains("is not accepted"), "{}", a.description());
            }
        }
    }
    assert_eq!(env.sandbox.stats().tokens_issued(Vendor::EClinicalWorks), 0);
}

/// Pitfalls case 7 on the verifying side: the key is found by `kid` in the registered
/// JWKS and must fit the algorithm; an unknown kid refetches once per cooldown; a wrong
/// key fails.
#[tokio::test]
async fn pitfall_7_key_lookup_by_kid_type_and_refetch() {
    let env = env_with("max-age=3600", |c| c.jwks_refetch_cooldown = Duration::from_secs(30)).await;
    let aud = env.sandbox.token_url(Vendor::Epic);
    assert_eq!(env.token(Vendor::Epic, &env.good_assertion(Vendor::Epic), None).await.status, 200);
    assert_eq!(env.jwks.hits(), 1);
    assert_eq!(env.sandbox.stats().jwks_fetches(&env.jwks.url), 1);

    // The EC key's kid with an RS384 signature: the key does not fit the algorithm.
    let ec_in_rsa_slot = sign(&rsa_key().clone_with_kid(ec_key().kid()), &claims(EPIC_URL_CLIENT, &aud, NOW));
    let a = env.token(Vendor::Epic, &ec_in_rsa_slot, None).await;
    assert_eq!(a.error(), "invalid_client");
    assert!(a.description().contains("may not verify this algorithm"), "{}", a.description());

    // The right kid, the wrong key: once the cooldown since the last fetch has passed,
    // a failed signature refetches once (the client may have rotated), then fails.
    env.clock.advance_secs(31);
    let mut now = NOW + 31;
    let wrong_key = sign(&rsa_key2().clone_with_kid(rsa_key().kid()), &claims(EPIC_URL_CLIENT, &aud, now));
    let a = env.token(Vendor::Epic, &wrong_key, None).await;
    assert_eq!(a.error(), "invalid_client");
    assert!(a.description().contains("signature does not verify"), "{}", a.description());
    assert_eq!(env.jwks.hits(), 2);

    // An unknown kid within the cooldown: no fetch, refused.
    let a = env.token(Vendor::Epic, &sign(rsa_key2(), &claims(EPIC_URL_CLIENT, &aud, now)), None).await;
    assert!(a.description().contains("no registered key has kid"), "{}", a.description());
    assert_eq!(env.jwks.hits(), 2, "cooldown: no refetch");

    // Published later: still refused within the cooldown; after it, one refetch finds it.
    env.jwks.set_keys(&[rsa_key(), ec_key(), rsa_key2()]);
    let a = env.token(Vendor::Epic, &sign(rsa_key2(), &claims(EPIC_URL_CLIENT, &aud, now)), None).await;
    assert_eq!(a.status, 400, "still within the cooldown");
    env.clock.advance_secs(31);
    now += 31;
    let a = env.token(Vendor::Epic, &sign(rsa_key2(), &claims(EPIC_URL_CLIENT, &aud, now)), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(env.jwks.hits(), 3);

    // A burst of unknown kids costs no fetch at all.
    for _ in 0..20 {
        let k = sign(&rsa_key2().clone_with_kid(&uuid::Uuid::new_v4().to_string()), &claims(EPIC_URL_CLIENT, &aud, now));
        assert_eq!(env.token(Vendor::Epic, &k, None).await.error(), "invalid_client");
    }
    assert_eq!(env.jwks.hits(), 3);

    // No kid at all, and a jku that is not the registered URL.
    let no_kid = unsigned_rs384_without_kid(&claims(EPIC_URL_CLIENT, &aud, now));
    assert!(env.token(Vendor::Epic, &no_kid, None).await.description().contains("kid header is required"));
    let jku = medicodax_jose::jws::sign_with(rsa_key(), "JWT", &claims(EPIC_URL_CLIENT, &aud, now), &medicodax_jose::jws::HeaderExtras { jku: Some("https://attacker.example/jwks".into()) })
        .expect("sign");
    assert!(env.token(Vendor::Epic, &jku, None).await.description().contains("jku"));
    let jku_ok = medicodax_jose::jws::sign_with(rsa_key(), "JWT", &claims(EPIC_URL_CLIENT, &aud, now), &medicodax_jose::jws::HeaderExtras { jku: Some(env.jwks.url.clone()) })
        .expect("sign");
    assert_eq!(env.token(Vendor::Epic, &jku_ok, None).await.status, 200, "the registered jku is fine");
}

fn unsigned_rs384_without_kid(claims: &serde_json::Value) -> String {
    let header = jsonwebtoken::Header::new(Algorithm::RS384);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(rsa_key().to_pkcs8_pem().expect("pem").as_bytes()).expect("key");
    jsonwebtoken::encode(&header, claims, &key).expect("encode")
}

trait CloneWithKid {
    fn clone_with_kid(&self, kid: &str) -> medicodax_jose::PrivateKey;
}

impl CloneWithKid for medicodax_jose::PrivateKey {
    fn clone_with_kid(&self, kid: &str) -> medicodax_jose::PrivateKey {
        medicodax_jose::PrivateKey::from_pem(&self.to_pkcs8_pem().expect("pem"), self.alg()).expect("reload").with_kid(kid)
    }
}

#[tokio::test]
async fn jwks_is_cached_as_cache_control_says() {
    let env = env_with("public, max-age=60", |_| {}).await;
    for _ in 0..3 {
        assert_eq!(env.token(Vendor::Epic, &env.good_assertion(Vendor::Epic), None).await.status, 200);
    }
    assert_eq!(env.jwks.hits(), 1, "fresh for 60 s");
    env.clock.advance_secs(61);
    let a = env.token(Vendor::Epic, &sign(rsa_key(), &claims(EPIC_URL_CLIENT, &env.sandbox.token_url(Vendor::Epic), NOW + 61)), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(env.jwks.hits(), 2, "stale after 60 s: fetched again");
    env.jwks.set_cache_control("no-store");
    env.clock.advance_secs(61);
    for _ in 0..2 {
        let a = env.token(Vendor::Epic, &sign(rsa_key(), &claims(EPIC_URL_CLIENT, &env.sandbox.token_url(Vendor::Epic), NOW + 122)), None).await;
        assert_eq!(a.status, 200);
    }
    assert_eq!(env.jwks.hits(), 4, "no-store: one fetch per assertion");
}

#[tokio::test]
async fn clients_and_scopes_as_each_vendor_judges_them() {
    let env = env().await;
    let epic_aud = env.sandbox.token_url(Vendor::Epic);
    let ecw_aud = env.sandbox.token_url(Vendor::EClinicalWorks);
    // A client known only at the other vendor, and an unknown one.
    let a = env.token(Vendor::EClinicalWorks, &sign(rsa_key(), &claims(EPIC_URL_CLIENT, &ecw_aud, NOW)), Some("system/Patient.rs")).await;
    assert_eq!((a.status, a.error()), (401, "invalid_client"));
    assert!(a.description().contains("unknown client_id"));
    // iss ≠ sub.
    let a = env.token(Vendor::Epic, &sign(rsa_key(), &claims_with(EPIC_URL_CLIENT, &epic_aud, NOW, json!({"sub": "someone-else"}))), None).await;
    assert!(a.description().contains("iss and sub"), "{}", a.description());
    // A form client_id that is not the assertion's iss.
    let a = env
        .token_form(
            Vendor::Epic,
            &[("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER), ("client_assertion", &env.good_assertion(Vendor::Epic)), ("client_id", "other")],
        )
        .await;
    assert!(a.description().contains("client_id does not match"));
    let a = env
        .token_form(Vendor::Epic, &[("grant_type", "client_credentials"), ("client_assertion_type", "urn:other"), ("client_assertion", &env.good_assertion(Vendor::Epic))])
        .await;
    assert_eq!(a.error(), "invalid_request");
    let a = env
        .token_form(Vendor::Epic, &[("grant_type", "client_credentials"), ("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER)])
        .await;
    assert!(a.description().contains("more than once"));

    // eClinicalWorks: scope required, system/ only, intersection with the registration.
    let a = env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), None).await;
    assert_eq!((a.status, a.error()), (400, "invalid_scope"));
    let a = env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), Some("patient/Patient.read user/Observation.rs system/Patient.write")).await;
    assert_eq!((a.status, a.error()), (400, "invalid_scope"));
    let a = env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), Some("system/Patient.rs\tsystem/Condition.rs")).await;
    assert_eq!(a.error(), "invalid_scope", "a tab is not a separator");

    // Epic: an unmapped background user is unauthorized_client.
    env.sandbox
        .register_client(ClientRegistration { backend_user_mapped: false, ..ClientRegistration::new("unmapped", Vendor::Epic, ClientKeys::JwksUrl(env.jwks.url.clone())) })
        .expect("register");
    let a = env.token(Vendor::Epic, &sign(rsa_key(), &claims("unmapped", &epic_aud, NOW)), None).await;
    assert_eq!((a.status, a.error()), (400, "unauthorized_client"));
    // Epic ignores a scope parameter and grants the registration.
    env.sandbox
        .register_client(ClientRegistration::new("narrow", Vendor::Epic, ClientKeys::JwksUrl(env.jwks.url.clone())).with_scopes(["system/Patient.rs", "system/Encounter.read"]))
        .expect("register");
    let a = env.token(Vendor::Epic, &sign(rsa_key(), &claims("narrow", &epic_aud, NOW)), Some("system/*.cruds")).await;
    assert_eq!(a.body["scope"], "Patient.read Patient.search Encounter.read Encounter.search");
}

#[tokio::test]
async fn token_endpoint_down_and_garbage_never_break_it() {
    let env = env().await;
    env.sandbox.faults().set_token_endpoint_down(Vendor::Epic, true);
    let a = env.token(Vendor::Epic, &env.good_assertion(Vendor::Epic), None).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("content-type"), Some("text/html"));
    assert_eq!(env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), Some("system/Patient.rs")).await.status, 200, "the other side is up");
    env.sandbox.faults().set_token_endpoint_down(Vendor::Epic, false);
    assert_eq!(env.token(Vendor::Epic, &env.good_assertion(Vendor::Epic), None).await.status, 200);

    let garbage = [
        "", ".", "..", "...", "a.b.c", "a.b.c.d.e", "eyJhbGciOiJSUzM4NCJ9.eyJ.x", "eyJ9.e30.", "\u{0}\u{1}", "é.é.é",
        "eyJhbGciOiJSUzM4NCIsImtpZCI6ImsifQ.W10.AA", // payload is an array
        "eyJhbGciOiJSUzM4NCIsImtpZCI6ImsiLCJjcml0IjpbIngiXX0.e30.AA", // crit
    ];
    for g in garbage {
        let a = env.token(Vendor::Epic, g, None).await;
        assert!(a.status == 400 && !a.error().is_empty(), "{g:?}: {} {}", a.status, a.text);
    }
    let huge = "x".repeat(200_000);
    let a = answer(env.http.post(env.sandbox.token_url(Vendor::Epic)).header("content-type", "application/x-www-form-urlencoded").body(huge).send().await.expect("post")).await;
    assert_eq!(a.status, 400);
    let bin: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let a = answer(env.http.post(env.sandbox.token_url(Vendor::EClinicalWorks)).header("content-type", "application/x-www-form-urlencoded").body(bin).send().await.expect("post")).await;
    assert!(matches!(a.status, 400 | 401), "{}", a.text);
    let stats = env.sandbox.stats();
    assert_eq!(stats.token_requests(Vendor::Epic), 2 + 12 + 1);
    assert!(stats.requests.iter().all(|r| r.status < 500 || r.status == 503));
}
