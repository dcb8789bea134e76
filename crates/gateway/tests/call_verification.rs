//! Call verification against pitfalls cases 30, 31, 33 and 34, with zero fetches for
//! refused tokens where the case says so.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medicodax_clock::ManualClock;
use medicodax_gateway::calls::{AgentKeys, CacheRules, CallVerifier, JwksFetcher, KeyLookupError, VerifyError};
use medicodax_jose::jws::JwsError;
use medicodax_jose::{Alg, PrivateKey, TimeError, VerifyingKey, jws};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NOW: i64 = 1_767_225_600;
const ISS: &str = "agent-runner-test";
const AUD: &str = "gw-tools";
const TYP: &str = "medicodax-call+jwt";

fn claims() -> Value {
    json!({"iss": ISS, "sub": "agent-7", "aud": AUD, "iat": NOW, "exp": NOW + 120,
           "jti": "a1b2c3d4-0000-4000-8000-000000000001", "tool": "fhir.search",
           "args": {"connection": "epic-sandbox", "type": "Patient", "params": []}})
}

fn verifier_with(key: &PrivateKey, clock: &ManualClock) -> CallVerifier {
    let vk = Arc::new(VerifyingKey::from_jwk(key.public_jwk()).unwrap());
    let agents = HashMap::from([(ISS.to_owned(), Arc::new(AgentKeys::with_keys(ISS, vec![vk], clock.shared())))]);
    CallVerifier::new(AUD, 65536, 30, agents, clock.shared())
}

fn forge(header: Value, payload: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(payload.to_string()), B64.encode(sig))
}

#[tokio::test]
async fn a_good_call_verifies() {
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let v = verifier_with(&key, &clock);
    let token = jws::sign(&key, TYP, &claims()).unwrap();
    let call = v.verify(token.as_bytes()).await.unwrap();
    assert_eq!(call.claims.iss, ISS);
    assert_eq!(call.kid.as_deref(), Some(key.kid()));
    assert_eq!(call.call_hash, medicodax_wire::hash::sha256_hex(token.as_bytes()));
    // ES384 agents too.
    let ec = PrivateKey::generate(Alg::ES384).unwrap();
    let v = verifier_with(&ec, &clock);
    assert_eq!(v.verify(jws::sign(&ec, TYP, &claims()).unwrap().as_bytes()).await.unwrap().alg, Alg::ES384);
}

#[tokio::test]
async fn wrong_typ_and_other_jwt_kinds_are_refused() {
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let v = verifier_with(&key, &clock);
    for typ in ["JWT", "at+jwt", "medicodax-receipt+jwt"] {
        let token = jws::sign(&key, typ, &claims()).unwrap();
        assert!(matches!(v.verify(token.as_bytes()).await, Err(VerifyError::Jws(JwsError::WrongTyp { .. }))), "{typ}");
    }
}

/// Pitfall 30.
#[tokio::test]
async fn alg_none_variants_and_rs256_are_refused() {
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let v = verifier_with(&key, &clock);
    for alg in ["none", "None", "NONE", "nOnE"] {
        for sig in [&b""[..], b"junk"] {
            let t = forge(json!({"alg": alg, "typ": TYP, "kid": key.kid()}), &claims(), sig);
            assert!(matches!(v.verify(t.as_bytes()).await, Err(VerifyError::Jws(JwsError::AlgNotAllowed(..)))), "{alg}");
        }
    }
    // The literal token from the case (typ JWT, no kid) is refused too.
    let given = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJhZ2VudC1ydW5uZXItdGVzdCIsInN1YiI6ImFnZW50LTciLCJhdWQiOiJndy10b29scyIsImV4cCI6MTc2NzIyNTkwMCwiaWF0IjoxNzY3MjI1NjAwLCJqdGkiOiJhMWIyYzNkNC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ0b29sIjoiZmhpci5zZWFyY2gifQ.";
    assert!(v.verify(given.as_bytes()).await.is_err());
    // A correctly signed RS256 token.
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeyPair;
    let der = pem_der(&key);
    let raw = KeyPair::from_pkcs8(&der).unwrap();
    let input = format!("{}.{}", B64.encode(json!({"alg":"RS256","typ":TYP,"kid":key.kid()}).to_string()), B64.encode(claims().to_string()));
    let mut sig = vec![0; raw.public_modulus_len()];
    raw.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    let t = format!("{input}.{}", B64.encode(&sig));
    assert!(matches!(v.verify(t.as_bytes()).await, Err(VerifyError::Jws(JwsError::AlgNotAllowed(..)))));
}

fn pem_der(key: &PrivateKey) -> Vec<u8> {
    let pem = key.to_pkcs8_pem().unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// Pitfall 31: HS* with our public key as the secret.
#[tokio::test]
async fn hmac_confusion_is_refused() {
    use aws_lc_rs::hmac;
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let v = verifier_with(&key, &clock);
    let secrets = [serde_json::to_vec(key.public_jwk()).unwrap(), pem_der(&key), key.to_pkcs8_pem().unwrap().into_bytes()];
    for (name, algo) in [("HS256", hmac::HMAC_SHA256), ("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
        for secret in &secrets {
            let input = format!("{}.{}", B64.encode(json!({"alg":name,"typ":TYP,"kid":key.kid()}).to_string()), B64.encode(claims().to_string()));
            let tag = hmac::sign(&hmac::Key::new(algo, secret), input.as_bytes());
            let t = format!("{input}.{}", B64.encode(tag.as_ref()));
            assert!(matches!(v.verify(t.as_bytes()).await, Err(VerifyError::Jws(JwsError::AlgNotAllowed(..)))), "{name}");
        }
    }
}

/// Pitfall 34: every line of the matrix, through the whole verifier.
#[tokio::test]
async fn pitfall_34_claims_matrix() {
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let v = verifier_with(&key, &clock);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        jws::sign(&key, TYP, &c).unwrap()
    };
    let v = &v;
    let ok = |t: String| async move { v.verify(t.as_bytes()).await };
    assert!(ok(with(&|_| {})).await.is_ok());
    assert!(matches!(ok(with(&|c| { c["exp"] = json!(NOW - 31); c["iat"] = json!(NOW - 91); })).await, Err(VerifyError::Time(TimeError::Expired(31)))));
    assert!(ok(with(&|c| { c["exp"] = json!(NOW - 29); c["iat"] = json!(NOW - 89); })).await.is_ok());
    assert!(matches!(ok(with(&|c| c["nbf"] = json!(NOW + 120))).await, Err(VerifyError::Time(TimeError::NotYetValid(120)))));
    assert!(ok(with(&|c| c["nbf"] = json!(NOW + 20))).await.is_ok());
    assert!(ok(with(&|c| c["iat"] = json!(NOW + 20))).await.is_ok());
    assert!(matches!(ok(with(&|c| { c["iat"] = json!(NOW + 120); c["exp"] = json!(NOW + 200); })).await, Err(VerifyError::Time(TimeError::IssuedInFuture(120)))));
    assert!(matches!(ok(with(&|c| { c["iat"] = json!(NOW - 3600); c["exp"] = json!(NOW + 60); })).await, Err(VerifyError::Time(TimeError::TooLong(3660, 300)))));
    // exp types: string refused, float accepted (rounded down; documented), absent refused, 1e30 refused without overflow.
    assert!(matches!(ok(with(&|c| c["exp"] = json!("1767225720"))).await, Err(VerifyError::Claims(_))));
    assert!(ok(with(&|c| c["exp"] = json!(1767225720.5))).await.is_ok());
    assert!(matches!(ok(with(&|c| { c.as_object_mut().unwrap().remove("exp"); })).await, Err(VerifyError::Claims(_))));
    assert!(matches!(ok(with(&|c| c["exp"] = json!(1e30))).await, Err(VerifyError::Claims(_))));
    // aud forms.
    assert!(ok(with(&|c| c["aud"] = json!(AUD))).await.is_ok());
    assert!(ok(with(&|c| c["aud"] = json!([AUD, "other-service"]))).await.is_ok());
    assert!(matches!(ok(with(&|c| c["aud"] = json!(["other-service"]))).await, Err(VerifyError::Audience { .. })));
    assert!(matches!(ok(with(&|c| { c.as_object_mut().unwrap().remove("aud"); })).await, Err(VerifyError::Claims(_))));
    // jti bounds, unknown claims, unknown issuer.
    assert!(matches!(ok(with(&|c| c["jti"] = json!("x".repeat(129)))).await, Err(VerifyError::BadJti)));
    assert!(matches!(ok(with(&|c| c["jti"] = json!(""))).await, Err(VerifyError::BadJti)));
    for bad in ["a\u{0}b", "line\nbreak", "tab\there", "esc\u{1b}[31m", "rtl\u{202e}txt", "iso\u{2066}late"] {
        assert!(matches!(ok(with(&|c| c["jti"] = json!(bad))).await, Err(VerifyError::BadJti)), "{bad:?}");
    }
    assert!(ok(with(&|c| c["jti"] = json!("ünïcode-ok-7f3a"))).await.is_ok(), "printable non-ASCII is fine");
    assert!(matches!(ok(with(&|c| c["jku"] = json!("https://evil.example/jwks"))).await, Err(VerifyError::Claims(_))));
    assert!(matches!(ok(with(&|c| c["iss"] = json!("someone-else"))).await, Err(VerifyError::UnknownIssuer)));
}

#[tokio::test]
async fn size_limit_is_checked_before_decoding() {
    let clock = ManualClock::new(NOW);
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let v = verifier_with(&key, &clock);
    let big = vec![b'a'; 65537];
    assert_eq!(v.verify(&big).await.unwrap_err(), VerifyError::TooLarge { size: 65537, limit: 65536 });
    assert!(matches!(v.verify(&[0xff, 0xfe]).await, Err(VerifyError::NotText)));
    assert!(matches!(v.verify(b"").await, Err(VerifyError::Jws(JwsError::NotCompact))));
}

/// A stub JWKS endpoint whose key set, answer and counter the test controls.
#[derive(Default)]
struct StubJwks {
    doc: Mutex<Value>,
    fail: Mutex<bool>,
    fetches: AtomicU64,
}

#[async_trait]
impl JwksFetcher for StubJwks {
    async fn fetch(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        assert_eq!(url, "https://agents.example/jwks.json", "only the configured URL is ever fetched");
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if *self.fail.lock().unwrap() {
            return Err("HTTP 500".into());
        }
        Ok((self.doc.lock().unwrap().to_string().into_bytes(), None))
    }
}

fn remote_verifier(stub: &Arc<StubJwks>, clock: &ManualClock) -> (CallVerifier, Arc<AgentKeys>) {
    let keys = Arc::new(AgentKeys::remote(ISS, "https://agents.example/jwks.json", stub.clone(), CacheRules::default(), clock.shared()));
    let agents = HashMap::from([(ISS.to_owned(), keys.clone())]);
    (CallVerifier::new(AUD, 65536, 30, agents, clock.shared()), keys)
}

fn fresh_claims(clock: &ManualClock, n: usize) -> Value {
    let mut c = claims();
    c["iat"] = json!(clock.now_unix());
    c["exp"] = json!(clock.now_unix() + 120);
    c["jti"] = json!(format!("j-{n}"));
    c
}

use medicodax_clock::Clock as _;

/// Pitfall 33 (a)-(d).
#[tokio::test]
async fn pitfall_33_jwks_refresh_is_rate_limited_and_fails_closed_late() {
    let clock = ManualClock::new(NOW);
    let k1 = PrivateKey::generate(Alg::RS384).unwrap();
    let k2 = PrivateKey::generate(Alg::RS384).unwrap();
    let k3 = PrivateKey::generate(Alg::RS384).unwrap();
    let stub = Arc::new(StubJwks::default());
    *stub.doc.lock().unwrap() = json!({"keys": [k1.public_jwk()]});
    let (v, keys) = remote_verifier(&stub, &clock);
    assert!(v.verify(jws::sign(&k1, TYP, &fresh_claims(&clock, 0)).unwrap().as_bytes()).await.is_ok());
    assert_eq!(stub.fetches.load(Ordering::SeqCst), 1);

    // (a) the stub now serves {k1, k2}; a k2 token causes exactly one refetch, then is accepted.
    clock.advance_secs(31);
    *stub.doc.lock().unwrap() = json!({"keys": [k1.public_jwk(), k2.public_jwk()]});
    assert!(v.verify(jws::sign(&k2, TYP, &fresh_claims(&clock, 1)).unwrap().as_bytes()).await.is_ok());
    assert_eq!(stub.fetches.load(Ordering::SeqCst), 2);

    // (b) 1,000 tokens with random unknown kids within 10 s: at most one refetch, all refused.
    clock.advance_secs(31);
    let before = stub.fetches.load(Ordering::SeqCst);
    for i in 0..1000 {
        let t = jws::sign(&k1, TYP, &fresh_claims(&clock, 100 + i)).unwrap();
        let (_, rest) = t.split_once('.').unwrap();
        let header = json!({"alg":"RS384","typ":TYP,"kid":format!("unknown-{i}")});
        let t = format!("{}.{}", B64.encode(header.to_string()), rest);
        assert!(matches!(v.verify(t.as_bytes()).await, Err(VerifyError::Key(KeyLookupError::UnknownKid))));
        if i % 100 == 0 {
            clock.advance(Duration::from_millis(900));
        }
    }
    assert_eq!(stub.fetches.load(Ordering::SeqCst) - before, 1, "one refetch per cooldown");

    // (c) k3 arrives while unpublished; published 5 s later; refused until the cooldown ends.
    clock.advance_secs(31);
    let t3 = |clock: &ManualClock, n| jws::sign(&k3, TYP, &fresh_claims(clock, n)).unwrap();
    assert!(v.verify(t3(&clock, 2000).as_bytes()).await.is_err());
    clock.advance_secs(5);
    *stub.doc.lock().unwrap() = json!({"keys": [k1.public_jwk(), k2.public_jwk(), k3.public_jwk()]});
    assert!(v.verify(t3(&clock, 2001).as_bytes()).await.is_err(), "still in the cooldown");
    clock.advance_secs(26);
    assert!(v.verify(t3(&clock, 2002).as_bytes()).await.is_ok(), "accepted once the cooldown ended");

    // (d) the endpoint fails: the cached set keeps working until the hard max-age, then fails closed.
    *stub.fail.lock().unwrap() = true;
    clock.advance_secs(3600);
    assert!(v.verify(jws::sign(&k1, TYP, &fresh_claims(&clock, 3000)).unwrap().as_bytes()).await.is_ok());
    clock.advance_secs(23 * 3600);
    assert!(matches!(
        v.verify(jws::sign(&k1, TYP, &fresh_claims(&clock, 3001)).unwrap().as_bytes()).await,
        Err(VerifyError::Key(KeyLookupError::Stale))
    ));
    // When it answers again, calls are accepted again.
    *stub.fail.lock().unwrap() = false;
    clock.advance_secs(31);
    assert!(v.verify(jws::sign(&k1, TYP, &fresh_claims(&clock, 3002)).unwrap().as_bytes()).await.is_ok());
    assert_eq!(keys.fetch_count(), stub.fetches.load(Ordering::SeqCst));
}

/// Pitfall 33 (e): no kid — accepted with exactly one usable key, refused with two.
#[tokio::test]
async fn pitfall_33e_no_kid() {
    let clock = ManualClock::new(NOW);
    let k1 = PrivateKey::generate(Alg::RS384).unwrap();
    let k2 = PrivateKey::generate(Alg::RS384).unwrap();
    let no_kid = |key: &PrivateKey| {
        let t = jws::sign(key, TYP, &claims()).unwrap();
        let (_, rest) = t.split_once('.').unwrap();
        let input_payload = rest.split('.').next().unwrap().to_owned();
        let header = B64.encode(json!({"alg":"RS384","typ":TYP}).to_string());
        let input = format!("{header}.{input_payload}");
        let sig = key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig))
    };
    let one = verifier_with(&k1, &clock);
    assert!(one.verify(no_kid(&k1).as_bytes()).await.is_ok());
    let vks = vec![Arc::new(VerifyingKey::from_jwk(k1.public_jwk()).unwrap()), Arc::new(VerifyingKey::from_jwk(k2.public_jwk()).unwrap())];
    let agents = HashMap::from([(ISS.to_owned(), Arc::new(AgentKeys::with_keys(ISS, vks, clock.shared())))]);
    let two = CallVerifier::new(AUD, 65536, 30, agents, clock.shared());
    assert!(matches!(two.verify(no_kid(&k1).as_bytes()).await, Err(VerifyError::Key(KeyLookupError::NoKidAmbiguous))));
    assert!(two.verify(jws::sign(&k2, TYP, &claims()).unwrap().as_bytes()).await.is_ok(), "with a kid both work");
}

/// Pitfall 33 (f): a matching JWK marked for encryption is never used.
#[tokio::test]
async fn pitfall_33f_unusable_keys_are_skipped() {
    let clock = ManualClock::new(NOW);
    let k1 = PrivateKey::generate(Alg::RS384).unwrap();
    let stub = Arc::new(StubJwks::default());
    let mut enc = serde_json::to_value(k1.public_jwk()).unwrap();
    enc["use"] = json!("enc");
    *stub.doc.lock().unwrap() = json!({"keys": [enc]});
    let (v, _) = remote_verifier(&stub, &clock);
    assert!(matches!(v.verify(jws::sign(&k1, TYP, &claims()).unwrap().as_bytes()).await, Err(VerifyError::Key(KeyLookupError::UnknownKid))));
    let mut ops = serde_json::to_value(k1.public_jwk()).unwrap();
    ops["key_ops"] = json!(["encrypt"]);
    *stub.doc.lock().unwrap() = json!({"keys": [ops]});
    clock.advance_secs(31);
    assert!(v.verify(jws::sign(&k1, TYP, &claims_at(&clock)).unwrap().as_bytes()).await.is_err());
}

fn claims_at(clock: &ManualClock) -> Value {
    fresh_claims(clock, 9)
}
