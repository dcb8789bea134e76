//! Signing and strict verification: round trips, tampering, and pitfalls cases 6, 30,
//! 31 and 33(e, f).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medicodax_jose::jws::{self, Compact, HeaderRules, JwsError};
use medicodax_jose::{Alg, Jwks, PrivateKey, PublicJwk, VerifyingKey};
use serde_json::json;

const ALLOW: &[Alg] = &[Alg::RS384, Alg::ES384];
const RULES: HeaderRules<'static> = HeaderRules { allowed: &["typ", "kid"], typ: Some("JWT"), require_kid: true };

fn claims() -> serde_json::Value {
    json!({"iss":"agent-runner-test","sub":"agent-7","aud":"gw-tools","exp":1767225900,"iat":1767225600,
           "jti":"a1b2c3d4-0000-4000-8000-000000000001","tool":"fhir.search"})
}

fn vk(key: &PrivateKey) -> VerifyingKey {
    VerifyingKey::from_jwk(key.public_jwk()).unwrap()
}

fn forge(header: serde_json::Value, payload: &serde_json::Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(payload.to_string()), B64.encode(sig))
}

#[test]
fn rs384_and_es384_round_trip() {
    for alg in [Alg::RS384, Alg::ES384] {
        let key = PrivateKey::generate(alg).unwrap();
        let token = jws::sign(&key, "JWT", &claims()).unwrap();
        let c = Compact::parse(&token, RULES).unwrap();
        assert_eq!(c.kid(), Some(key.kid()));
        assert_eq!(c.verify(&vk(&key), ALLOW).unwrap(), alg);
        assert_eq!(serde_json::Value::Object(c.payload_object().unwrap()), claims());
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": alg.as_str(), "typ": "JWT", "kid": key.kid()}));
    }
}

#[test]
fn tampered_payload_or_signature_or_other_key_fails() {
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let other = PrivateKey::generate(Alg::RS384).unwrap();
    let token = jws::sign(&key, "JWT", &claims()).unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut c2 = claims();
    c2["sub"] = json!("admin");
    parts[1] = B64.encode(c2.to_string());
    let tampered = parts.join(".");
    assert_eq!(Compact::parse(&tampered, RULES).unwrap().verify(&vk(&key), ALLOW), Err(JwsError::BadSignature));
    assert_eq!(Compact::parse(&token, RULES).unwrap().verify(&vk(&other), ALLOW), Err(JwsError::BadSignature));
    let mut sig = B64.decode(token.rsplit('.').next().unwrap()).unwrap();
    sig[10] ^= 1;
    let bad_sig = format!("{}.{}", token.rsplitn(2, '.').nth(1).unwrap(), B64.encode(&sig));
    assert_eq!(Compact::parse(&bad_sig, RULES).unwrap().verify(&vk(&key), ALLOW), Err(JwsError::BadSignature));
}

/// Pitfall 6: RS384 means RSASSA-PKCS1-v1_5 with SHA-384, not PSS.
#[test]
fn rs384_is_pkcs1_v1_5_not_pss() {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA384, RSA_PSS_2048_8192_SHA384, RsaPublicKeyComponents};
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let token = jws::sign(&key, "JWT", &claims()).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = B64.decode(sig).unwrap();
    let jwk = serde_json::to_value(key.public_jwk()).unwrap();
    let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = B64.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pk = RsaPublicKeyComponents { n: &n, e: &e };
    assert!(pk.verify(&RSA_PKCS1_2048_8192_SHA384, input.as_bytes(), &sig).is_ok());
    assert!(pk.verify(&RSA_PSS_2048_8192_SHA384, input.as_bytes(), &sig).is_err());
}

/// Pitfall 30: `alg: none` in any case, a junk signature, RS256 outside the allow-list.
#[test]
fn alg_none_in_every_spelling_is_refused() {
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let given = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJhZ2VudC1ydW5uZXItdGVzdCIsInN1YiI6ImFnZW50LTciLCJhdWQiOiJndy10b29scyIsImV4cCI6MTc2NzIyNTkwMCwiaWF0IjoxNzY3MjI1NjAwLCJqdGkiOiJhMWIyYzNkNC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ0b29sIjoiZmhpci5zZWFyY2gifQ.";
    let rules = HeaderRules { allowed: &["typ", "kid"], typ: None, require_kid: false };
    let c = Compact::parse(given, rules).unwrap();
    assert!(matches!(c.verify(&vk(&key), ALLOW), Err(JwsError::AlgNotAllowed(a, _)) if a == "none"));
    for spelling in ["none", "None", "NONE", "nOnE"] {
        let t = forge(json!({"alg": spelling, "typ": "JWT", "kid": key.kid()}), &claims(), b"");
        let c = Compact::parse(&t, RULES).unwrap();
        assert!(matches!(c.verify(&vk(&key), ALLOW), Err(JwsError::AlgNotAllowed(..))), "{spelling}");
        let t = forge(json!({"alg": spelling, "typ": "JWT", "kid": key.kid()}), &claims(), b"junk-signature");
        assert!(Compact::parse(&t, RULES).unwrap().verify(&vk(&key), ALLOW).is_err());
    }
}

#[test]
fn rs256_signed_token_is_refused_by_the_allow_list_and_the_meta_test_flips() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeyPair;
    use aws_lc_rs::signature::RSA_PKCS1_SHA256;
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let pkcs8 = key.to_pkcs8_pem().unwrap();
    let der = pem::parse(&pkcs8).unwrap().into_contents();
    let raw = KeyPair::from_pkcs8(&der).unwrap();
    let header = json!({"alg":"RS256","typ":"JWT","kid":key.kid()});
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims().to_string()));
    let mut sig = vec![0; raw.public_modulus_len()];
    raw.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    let token = format!("{input}.{}", B64.encode(&sig));
    // The key's JWK pins RS384, and RS256 is not on the list.
    let c = Compact::parse(&token, RULES).unwrap();
    assert!(matches!(c.verify(&vk(&key), ALLOW), Err(JwsError::AlgNotAllowed(..))));
    // Meta-test: with RS256 allowed and an un-pinned JWK the decision flips, proving the list is what decided.
    let mut unpinned = key.public_jwk().clone();
    unpinned.0.common.key_algorithm = None;
    let unpinned = VerifyingKey::from_jwk(&unpinned).unwrap();
    assert!(matches!(c.verify(&unpinned, ALLOW), Err(JwsError::AlgNotAllowed(..))));
    assert_eq!(c.verify(&unpinned, &[Alg::RS256, Alg::RS384]), Ok(Alg::RS256));
    // ...and a pinned JWK refuses RS256 even when the list allows it.
    assert_eq!(c.verify(&vk(&key), &[Alg::RS256, Alg::RS384]), Err(JwsError::AlgKeyMismatch(Alg::RS256)));
}

/// Pitfall 31: HS256/384/512 signed with our public key as the secret.
#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    use aws_lc_rs::hmac;
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let jwk_json = serde_json::to_string(key.public_jwk()).unwrap();
    let pem_text = "-----BEGIN PUBLIC KEY-----\nnot-needed-for-the-point\n-----END PUBLIC KEY-----\n";
    for (name, algo) in [("HS256", hmac::HMAC_SHA256), ("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
        for secret in [jwk_json.as_bytes(), pem_text.as_bytes()] {
            let header = json!({"alg": name, "typ": "JWT", "kid": key.kid()});
            let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims().to_string()));
            let tag = hmac::sign(&hmac::Key::new(algo, secret), input.as_bytes());
            let token = format!("{input}.{}", B64.encode(tag.as_ref()));
            let c = Compact::parse(&token, RULES).unwrap();
            assert!(matches!(c.verify(&vk(&key), ALLOW), Err(JwsError::AlgNotAllowed(..))), "{name}");
            assert!(c.verify(&vk(&key), &[Alg::RS256, Alg::RS384, Alg::RS512, Alg::ES256, Alg::ES384]).is_err());
        }
    }
}

#[test]
fn header_rules_refuse_forbidden_members_duplicates_and_wrong_typ() {
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    for member in ["jku", "x5u", "jwk", "x5c", "zip", "crit", "b64"] {
        let t = forge(json!({"alg":"RS384","typ":"JWT","kid":key.kid(), member: "x"}), &claims(), b"sig");
        assert_eq!(Compact::parse(&t, RULES).unwrap_err(), JwsError::ForbiddenHeader(member.into()));
    }
    let dup = format!("{}.{}.{}", B64.encode(br#"{"alg":"RS384","alg":"none","typ":"JWT","kid":"k"}"#), B64.encode(b"{}"), B64.encode(b"s"));
    assert!(matches!(Compact::parse(&dup, RULES).unwrap_err(), JwsError::BadHeader(m) if m.contains("duplicate")));
    let t = forge(json!({"alg":"RS384","typ":"at+jwt","kid":"k"}), &claims(), b"s");
    assert!(matches!(Compact::parse(&t, RULES).unwrap_err(), JwsError::WrongTyp { .. }));
    let t = forge(json!({"alg":"RS384","typ":"JWT"}), &claims(), b"s");
    assert_eq!(Compact::parse(&t, RULES).unwrap_err(), JwsError::MissingKid);
    for bad in ["a.b", "a.b.c.d", "a.b.c.d.e", "..", "eyJ=.e30.AA", "e30.e30.A A"] {
        assert!(Compact::parse(bad, RULES).is_err(), "{bad}");
    }
    // Duplicate claims in the payload are refused too.
    let token = jws::sign(&key, "JWT", &claims()).unwrap();
    let (h, _) = token.split_once('.').unwrap();
    let dup_payload = format!("{h}.{}.{}", B64.encode(br#"{"sub":"a","sub":"b"}"#), "AA");
    assert!(Compact::parse(&dup_payload, RULES).unwrap().payload_object().is_err());
}

/// Pitfall 33(f): a JWK marked for encryption, without `verify` in `key_ops`, or with a
/// different `alg` is never used for verification.
#[test]
fn unusable_jwks_are_refused() {
    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let mut v = serde_json::to_value(key.public_jwk()).unwrap();
    v["use"] = json!("enc");
    assert!(VerifyingKey::from_jwk(&serde_json::from_value::<PublicJwk>(v.clone()).unwrap()).is_err());
    v.as_object_mut().unwrap().remove("use");
    v["key_ops"] = json!(["encrypt"]);
    assert!(VerifyingKey::from_jwk(&serde_json::from_value::<PublicJwk>(v.clone()).unwrap()).is_err());
    v["key_ops"] = json!(["verify"]);
    assert!(VerifyingKey::from_jwk(&serde_json::from_value::<PublicJwk>(v.clone()).unwrap()).is_ok());
    v["alg"] = json!("ES384");
    assert!(VerifyingKey::from_jwk(&serde_json::from_value::<PublicJwk>(v.clone()).unwrap()).is_err());
    v["alg"] = json!("RS256");
    let rs256 = VerifyingKey::from_jwk(&serde_json::from_value::<PublicJwk>(v).unwrap()).unwrap();
    let token = jws::sign(&key, "JWT", &claims()).unwrap();
    assert_eq!(Compact::parse(&token, RULES).unwrap().verify(&rs256, ALLOW), Err(JwsError::AlgKeyMismatch(Alg::RS384)));
    // Symmetric keys are never usable.
    let oct: PublicJwk = serde_json::from_value(json!({"kty":"oct","k":"c2VjcmV0","kid":"h"})).unwrap();
    assert!(VerifyingKey::from_jwk(&oct).is_err());
}

#[test]
fn jwks_lookup_is_by_exact_kid() {
    let a = PrivateKey::generate(Alg::RS384).unwrap();
    let b = PrivateKey::generate(Alg::ES384).unwrap();
    let doc = json!({"keys":[a.public_jwk(), b.public_jwk(), {"kty":"oct","k":"eA","kid":"sym"}]}).to_string();
    let set = Jwks::from_json(doc.as_bytes()).unwrap();
    assert_eq!(set.by_kid(a.kid()).count(), 1);
    assert_eq!(set.by_kid(&a.kid().to_lowercase()).count(), usize::from(a.kid() == a.kid().to_lowercase()));
    assert_eq!(set.by_kid("missing").count(), 0);
    assert!(Jwks::from_json(b"{\"keys\": 5}").is_err());
}
