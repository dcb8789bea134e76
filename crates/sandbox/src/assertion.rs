//! Judging a client assertion (RFC 7523 `private_key_jwt`) the way each vendor does.
//!
//! The signature and the `aud`/`iss`/`sub` comparison are `jsonwebtoken::decode` with an
//! explicit [`Validation`] (one algorithm, leeway 0), an implementation independent of
//! the gateway's own JOSE code. Everything time-related is checked here against the
//! sandbox clock (jsonwebtoken would read the system time), together with the vendor
//! rules it does not know: the algorithm allow-list per vendor and registration, `typ`,
//! `jku`, the `kid` lookup, integer `exp`/`iat`/`nbf`, the 5-minute windows, and the
//! `jti` type, length and single use.

use crate::config::ClientKeys;
use crate::jwks::{KeyChoice, choose_key};
use crate::state::{RegisteredClient, Shared};
use crate::vendor::Vendor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The longest assertion looked at.
const MAX_ASSERTION_BYTES: usize = 16 * 1024;
/// The longest `jti` Epic accepts.
pub(crate) const MAX_JTI_CHARS: usize = 151;
/// The most `exp` may be ahead of now, and the most `exp − iat` (and `exp − nbf`) may be.
pub(crate) const MAX_LIFETIME_SECS: i64 = 300;

/// Why an assertion was refused; always answered as `invalid_client`. The text says
/// what was wrong and never echoes the assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub description: String,
    /// The client the assertion claimed to come from, when it was readable.
    pub client_id: Option<String>,
}

fn refuse(description: impl Into<String>) -> Refusal {
    Refusal { description: description.into(), client_id: None }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The algorithms `vendor` accepts from `client`.
pub(crate) fn allowed_algs(vendor: Vendor, client: &RegisteredClient) -> Vec<Algorithm> {
    match vendor {
        Vendor::EClinicalWorks => vec![Algorithm::RS384],
        Vendor::Epic => {
            let mut v = vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
            if matches!(client.reg.keys, ClientKeys::JwksUrl(_)) {
                v.extend([Algorithm::ES256, Algorithm::ES384]);
            }
            v
        }
    }
}

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

/// A failed key lookup or verification, and whether fetching the client's JWKS again
/// could change the answer (an unknown `kid`, or a signature the cached key rejects).
struct Failed {
    refetch_may_help: bool,
    refusal: Refusal,
}

impl From<Refusal> for Failed {
    fn from(refusal: Refusal) -> Self {
        Failed { refetch_may_help: false, refusal }
    }
}

/// Chooses the key by `kid` and verifies the signature and `aud`/`iss`/`sub` with jsonwebtoken.
fn verify_with_keys(keys: &[Jwk], kid: &str, assertion: &str, alg: Algorithm, token_url: &str, client_id: &str) -> Result<Map<String, Value>, Failed> {
    let jwk = choose_key(keys, kid, alg).map_err(|c| Failed { refetch_may_help: c == KeyChoice::UnknownKid, refusal: key_refusal(c, kid) })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| refuse("the registered key for this kid is not a usable public key"))?;
    let mut v = Validation::new(alg);
    v.leeway = 0;
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = true;
    v.aud = Some(HashSet::from([token_url.to_owned()]));
    v.iss = Some(HashSet::from([client_id.to_owned()]));
    v.sub = Some(client_id.to_owned());
    v.required_spec_claims = ["exp", "iss", "sub", "aud"].into_iter().map(str::to_owned).collect();
    match jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(Failed {
            refetch_may_help: matches!(e.kind(), ErrorKind::InvalidSignature),
            refusal: refuse(match e.kind() {
            ErrorKind::InvalidSignature => "the signature does not verify with the registered key".to_owned(),
            ErrorKind::InvalidAudience => format!("aud must be exactly the token endpoint URL {token_url}"),
            ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => "iss and sub must both be the client_id".to_owned(),
            ErrorKind::MissingRequiredClaim(c) => format!("the {} claim is required", short(c)),
            ErrorKind::InvalidClaimFormat(c) => format!("the {} claim has the wrong type", short(c)),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "the algorithm does not fit the registered key".to_owned(),
            ErrorKind::InvalidKeyFormat | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidEcdsaKey => "the registered key is not usable for this algorithm".to_owned(),
            _ => "the client_assertion is not a valid signed JWT".to_owned(),
            }),
        }),
    }
}

fn int_claim(claims: &Map<String, Value>, name: &str, required: bool) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(refuse(format!("the {name} claim is required"))),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| refuse(format!("{name} must be an integer NumericDate"))),
        Some(_) => Err(refuse(format!("{name} must be an integer NumericDate"))),
    }
}

/// The vendor's claim rules, checked against `now` (sandbox clock, Unix seconds).
fn check_claims(claims: &Map<String, Value>, token_url: &str, client_id: &str, now: i64) -> Result<(String, i64), Refusal> {
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == token_url,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(token_url)),
        _ => false,
    };
    if !aud_ok {
        return Err(refuse(format!("aud must be exactly the token endpoint URL {token_url}")));
    }
    for c in ["iss", "sub"] {
        if claims.get(c).and_then(Value::as_str) != Some(client_id) {
            return Err(refuse("iss and sub must both be the client_id"));
        }
    }
    let exp = int_claim(claims, "exp", true)?.unwrap_or_default();
    let iat = int_claim(claims, "iat", true)?.unwrap_or_default();
    let nbf = int_claim(claims, "nbf", false)?;
    if exp <= now {
        return Err(refuse("the assertion has expired (exp is not in the future)"));
    }
    if exp - now > MAX_LIFETIME_SECS {
        return Err(refuse("exp is more than 5 minutes in the future"));
    }
    if iat > now {
        return Err(refuse("iat is in the future"));
    }
    if exp <= iat || exp - iat > MAX_LIFETIME_SECS {
        return Err(refuse("exp - iat must be more than 0 and at most 300 seconds"));
    }
    if let Some(nbf) = nbf {
        if nbf > now {
            return Err(refuse("nbf is in the future"));
        }
        if nbf > exp || exp - nbf > MAX_LIFETIME_SECS {
            return Err(refuse("nbf must not be after exp, and exp - nbf must be at most 300 seconds"));
        }
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() => j,
        Some(Value::String(_)) | None => return Err(refuse("the jti claim is required")),
        Some(_) => return Err(refuse("jti must be a string")),
    };
    if jti.chars().count() > MAX_JTI_CHARS {
        return Err(refuse("jti must be at most 151 characters"));
    }
    Ok((jti.clone(), exp))
}

fn key_refusal(c: KeyChoice, kid: &str) -> Refusal {
    refuse(match c {
        KeyChoice::UnknownKid => format!("no registered key has kid {:?}", short(kid)),
        KeyChoice::Unusable => format!("the registered key {:?} may not verify this algorithm (key type, curve, use, key_ops or alg)", short(kid)),
        KeyChoice::Ambiguous => format!("more than one registered key has kid {:?}", short(kid)),
        KeyChoice::RsaTooSmall => format!("the registered RSA key {:?} is smaller than 2048 bits", short(kid)),
    })
}

/// Judges `assertion` posted to `vendor`'s token endpoint; the registered client on success.
pub(crate) async fn judge(shared: &Shared, vendor: Vendor, assertion: &str, form_client_id: Option<&str>) -> Result<Arc<RegisteredClient>, Refusal> {
    let token_url = shared.token_url(vendor);
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(refuse("the client_assertion is too large"));
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| refuse("the client_assertion is not a JWS with a supported alg (none and unknown algorithms are refused)"))?;
    let peek: Map<String, Value> =
        jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| refuse("the client_assertion payload is not a JSON object"))?;
    let iss = peek.get("iss").and_then(Value::as_str).ok_or_else(|| refuse("iss must be a string: the client_id"))?;
    if let Some(cid) = form_client_id
        && cid != iss
    {
        return Err(Refusal { description: "client_id does not match the assertion's iss".into(), client_id: Some(short(cid)) });
    }
    let with_client = |mut r: Refusal| {
        r.client_id = Some(short(iss));
        r
    };
    let client = shared.client(vendor, iss).ok_or_else(|| with_client(refuse("unknown client_id (not registered with this server)")))?;
    judge_registered(shared, vendor, &client, &header, assertion, &token_url).await.map_err(with_client)?;
    Ok(client)
}

async fn judge_registered(
    shared: &Shared,
    vendor: Vendor,
    client: &RegisteredClient,
    header: &jsonwebtoken::Header,
    assertion: &str,
    token_url: &str,
) -> Result<(), Refusal> {
    let client_id = client.reg.client_id.as_str();
    let alg = header.alg;
    let allowed = allowed_algs(vendor, client);
    if !allowed.contains(&alg) {
        let why = if vendor == Vendor::Epic && matches!(alg, Algorithm::ES256 | Algorithm::ES384) {
            "ES256/ES384 are accepted only from clients registered with a JWKS URL".to_owned()
        } else {
            format!("alg {} is not accepted; accepted: {}", alg_name(alg), allowed.iter().map(|a| alg_name(*a)).collect::<Vec<_>>().join(", "))
        };
        return Err(refuse(why));
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(refuse("typ, when present, must be JWT"));
    }
    let registered_url = match &client.reg.keys {
        ClientKeys::JwksUrl(u) => Some(u.as_str()),
        ClientKeys::Inline(_) => None,
    };
    if let Some(jku) = &header.jku
        && registered_url != Some(jku.as_str())
    {
        return Err(refuse("jku does not match the registered JWKS URL"));
    }
    let kid = header.kid.as_deref().filter(|k| !k.is_empty()).ok_or_else(|| refuse("the kid header is required"))?;

    let now = shared.clock.now_unix();
    let claims = match (registered_url, &client.inline_keys) {
        (None, Some(keys)) => verify_with_keys(keys, kid, assertion, alg, token_url, client_id).map_err(|f| f.refusal)?,
        (Some(url), _) => {
            let first = shared.jwks.get(url).await.map_err(|e| refuse(e.to_string()))?;
            match verify_with_keys(&first.keys, kid, assertion, alg, token_url, client_id) {
                Ok(c) => c,
                // The client may have rotated keys since the cached fetch: fetch again,
                // unless the cooldown since the last fetch forbids it.
                Err(f) if f.refetch_may_help && !first.fetched_now => match shared.jwks.refetch(url).await {
                    Some(Ok(keys)) => verify_with_keys(&keys, kid, assertion, alg, token_url, client_id).map_err(|f| f.refusal)?,
                    Some(Err(e)) => return Err(refuse(e.to_string())),
                    None => return Err(f.refusal),
                },
                Err(f) => return Err(f.refusal),
            }
        }
        (None, None) => return Err(refuse("the client has no registered keys")),
    };
    let (jti, exp) = check_claims(&claims, token_url, client_id, now)?;
    if !shared.use_jti(vendor, client_id, &jti, exp, now) {
        return Err(refuse("jti has already been used"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "http://127.0.0.1:1/epic/oauth2/token";
    const NOW: i64 = 1_767_225_600;

    fn claims(v: Value) -> Map<String, Value> {
        let mut base = json!({"iss": "c", "sub": "c", "aud": URL, "jti": "j1", "iat": NOW - 30, "exp": NOW + 240});
        if let (Some(b), Value::Object(o)) = (base.as_object_mut(), v) {
            for (k, val) in o {
                if val.is_null() {
                    b.remove(&k);
                } else {
                    b.insert(k, val);
                }
            }
        }
        base.as_object().cloned().unwrap_or_default()
    }

    fn check(v: Value) -> Result<(String, i64), String> {
        check_claims(&claims(v), URL, "c", NOW).map_err(|r| r.description)
    }

    #[test]
    fn claim_rules() {
        assert_eq!(check(json!({})), Ok(("j1".into(), NOW + 240)));
        assert_eq!(check(json!({"exp": NOW + 300, "iat": NOW})), Ok(("j1".into(), NOW + 300)), "exactly 5 minutes is fine");
        assert!(check(json!({"exp": NOW + 301, "iat": NOW})).unwrap_err().contains("more than 5 minutes"));
        assert!(check(json!({"iat": null})).unwrap_err().contains("iat claim is required"));
        assert!(check(json!({"iat": NOW - 61, "exp": NOW + 240})).unwrap_err().contains("exp - iat"));
        assert!(check(json!({"iat": NOW + 1})).unwrap_err().contains("iat is in the future"));
        assert!(check(json!({"nbf": NOW + 1})).unwrap_err().contains("nbf is in the future"));
        assert!(check(json!({"nbf": NOW - 30})).is_ok());
        assert!(check(json!({"nbf": NOW - 100})).unwrap_err().contains("exp - nbf"), "Epic: exp - nbf at most 5 minutes");
        assert!(check(json!({"exp": NOW})).unwrap_err().contains("expired"));
        assert!(check(json!({"exp": "1767225840"})).unwrap_err().contains("integer"));
        assert!(check(json!({"exp": 1767225840.5})).unwrap_err().contains("integer"));
        assert!(check(json!({"exp": 1e30})).unwrap_err().contains("integer"));
        assert!(check(json!({"jti": 42})).unwrap_err().contains("jti must be a string"));
        assert!(check(json!({"jti": null})).unwrap_err().contains("jti claim is required"));
        assert!(check(json!({"jti": "x".repeat(151)})).is_ok());
        assert!(check(json!({"jti": "x".repeat(152)})).unwrap_err().contains("151"));
        for aud in [json!(format!("{URL}/")), json!(URL.replace("/oauth2", "//oauth2")), json!(["other"]), json!(null)] {
            assert!(check(json!({"aud": aud})).unwrap_err().contains("aud must be exactly"), "{aud}");
        }
        assert!(check(json!({"aud": [URL]})).is_ok(), "an array holding the URL");
        assert!(check(json!({"sub": "d"})).unwrap_err().contains("iss and sub"));
    }
}
