//! Registered clients' JWK Sets: fetching from the registered URL, caching as the
//! response's `Cache-Control` allows, refetching on an unknown `kid` at most once per
//! cooldown, and choosing the one key an assertion names.
//!
//! Keys are only ever fetched from the URL in the client's registration, never from a
//! URL inside a token (a `jku` header must equal the registered URL or the assertion is
//! refused before anything is fetched).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use medicodax_clock::{Mono, SharedClock};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why keys could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("the registered JWKS URL could not be fetched ({0})")]
    Unreachable(String),
    #[error("the registered JWKS URL answered HTTP {0}")]
    Status(u16),
    #[error("the registered JWKS document is not a JWK Set")]
    Malformed,
}

/// Parses a JWK Set document, keeping the keys that parse and dropping the rest (so one
/// key of an unknown kind does not hide the others).
pub(crate) fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<Jwk>, JwksError> {
    let keys = doc.get("keys").and_then(serde_json::Value::as_array).ok_or(JwksError::Malformed)?;
    Ok(keys.iter().filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok()).collect())
}

#[derive(Default)]
struct Entry {
    keys: Option<Arc<Vec<Jwk>>>,
    fresh_until: Option<Mono>,
    last_fetch: Option<Mono>,
}

/// The JWKS cache, one entry per registered URL.
pub(crate) struct JwksCache {
    http: reqwest::Client,
    clock: SharedClock,
    cooldown: Duration,
    max_cache: Duration,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    fetches: Mutex<BTreeMap<String, u64>>,
}

/// Keys from the cache, and whether they were fetched for this request.
pub(crate) struct Keys {
    pub keys: Arc<Vec<Jwk>>,
    pub fetched_now: bool,
}

/// How long a response may be cached, from its `Cache-Control`.
pub(crate) fn freshness(cache_control: Option<&str>, max: Duration) -> Duration {
    let Some(cc) = cache_control else { return max };
    let mut max_age = None;
    for directive in cc.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            max_age = Some(v.trim_matches('"').parse::<u64>().map_or(Duration::ZERO, Duration::from_secs));
        }
    }
    max_age.map_or(max, |a| a.min(max))
}

impl JwksCache {
    pub fn new(clock: SharedClock, cooldown: Duration, max_cache: Duration, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(JwksCache { http, clock, cooldown, max_cache, entries: Mutex::new(HashMap::new()), fetches: Mutex::new(BTreeMap::new()) })
    }

    fn entry(&self, url: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(url.to_owned()).or_default().clone()
    }

    /// How many times each URL was fetched.
    pub fn fetch_counts(&self) -> BTreeMap<String, u64> {
        self.fetches.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn fetch(&self, url: &str, e: &mut Entry) -> Result<Arc<Vec<Jwk>>, JwksError> {
        let now = self.clock.monotonic();
        e.last_fetch = Some(now);
        *self.fetches.lock().unwrap_or_else(PoisonError::into_inner).entry(url.to_owned()).or_default() += 1;
        let resp = self.http.get(url).header("accept", "application/json").send().await.map_err(|err| JwksError::Unreachable(classify(&err)))?;
        if !resp.status().is_success() {
            return Err(JwksError::Status(resp.status().as_u16()));
        }
        let cc = resp.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.bytes().await.map_err(|err| JwksError::Unreachable(classify(&err)))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::Malformed);
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|_| JwksError::Malformed)?;
        let keys = Arc::new(parse_jwks(&doc)?);
        e.keys = Some(keys.clone());
        e.fresh_until = Some(now.add(freshness(cc.as_deref(), self.max_cache)));
        Ok(keys)
    }

    /// The keys for `url`: cached while fresh, fetched otherwise.
    pub async fn get(&self, url: &str) -> Result<Keys, JwksError> {
        let entry = self.entry(url);
        let mut e = entry.lock().await;
        let now = self.clock.monotonic();
        if let (Some(keys), Some(until)) = (&e.keys, e.fresh_until)
            && now < until
        {
            return Ok(Keys { keys: keys.clone(), fetched_now: false });
        }
        let keys = self.fetch(url, &mut e).await?;
        Ok(Keys { keys, fetched_now: true })
    }

    /// Fetches again after an unknown `kid` or a failed verification, unless the last
    /// fetch was within the cooldown; `None` when the cooldown forbids it.
    pub async fn refetch(&self, url: &str) -> Option<Result<Arc<Vec<Jwk>>, JwksError>> {
        let entry = self.entry(url);
        let mut e = entry.lock().await;
        let now = self.clock.monotonic();
        if e.last_fetch.is_some_and(|last| now.since(last) < self.cooldown) {
            return None;
        }
        Some(self.fetch(url, &mut e).await)
    }
}

fn classify(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connection refused or unreachable".into()
    } else if err.is_body() || err.is_decode() {
        "bad body".into()
    } else {
        "request failed".into()
    }
}

/// Why no key could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyChoice {
    /// No key has this `kid`.
    UnknownKid,
    /// Keys have this `kid` but none may verify this algorithm (wrong key type or
    /// curve, `use` not `sig`, `key_ops` without `verify`, or a different `alg`).
    Unusable,
    /// More than one usable key has this `kid`.
    Ambiguous,
    /// The RSA key is under 2048 bits.
    RsaTooSmall,
}

fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let kind_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        _ => false,
    };
    let use_ok = jwk.common.public_key_use.as_ref().is_none_or(|u| *u == PublicKeyUse::Signature);
    let ops_ok = jwk.common.key_operations.as_ref().is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    let alg_ok = jwk.common.key_algorithm.is_none_or(|ka| key_alg_name(ka) == Some(alg));
    kind_ok && use_ok && ops_ok && alg_ok
}

fn key_alg_name(ka: KeyAlgorithm) -> Option<Algorithm> {
    Some(match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        _ => return None,
    })
}

fn rsa_bits(jwk: &Jwk) -> Option<usize> {
    let AlgorithmParameters::RSA(p) = &jwk.algorithm else { return None };
    let n = B64.decode(p.n.trim_end_matches('=')).ok()?;
    let first = n.iter().position(|b| *b != 0)?;
    let lead = n.get(first)?.leading_zeros() as usize;
    Some((n.len() - first) * 8 - lead)
}

/// The single key with `kid` that may verify `alg` (SMART: filter by `kid` and key type,
/// fail on zero or several).
pub(crate) fn choose_key<'a>(keys: &'a [Jwk], kid: &str, alg: Algorithm) -> Result<&'a Jwk, KeyChoice> {
    let named: Vec<&Jwk> = keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid)).collect();
    if named.is_empty() {
        return Err(KeyChoice::UnknownKid);
    }
    let usable: Vec<&Jwk> = named.into_iter().filter(|k| fits(k, alg)).collect();
    match usable.as_slice() {
        [] => Err(KeyChoice::Unusable),
        [one] => {
            if rsa_bits(one).is_some_and(|b| b < 2048) {
                return Err(KeyChoice::RsaTooSmall);
            }
            Ok(one)
        }
        _ => Err(KeyChoice::Ambiguous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_control_decides_freshness() {
        let max = Duration::from_secs(29 * 3600);
        assert_eq!(freshness(None, max), max);
        assert_eq!(freshness(Some("public, max-age=60"), max), Duration::from_secs(60));
        assert_eq!(freshness(Some("max-age=999999999"), max), max, "capped");
        assert_eq!(freshness(Some("no-store"), max), Duration::ZERO);
        assert_eq!(freshness(Some("max-age=60, No-Cache"), max), Duration::ZERO);
        assert_eq!(freshness(Some("max-age=abc"), max), Duration::ZERO, "an unreadable max-age is not a licence to cache");
        assert_eq!(freshness(Some("public"), max), max);
    }

    fn rsa_jwk(kid: &str, n_bytes: usize) -> serde_json::Value {
        let mut n = vec![0xC5u8; n_bytes];
        n[n_bytes - 1] = 0x01;
        json!({"kty": "RSA", "kid": kid, "n": B64.encode(&n), "e": "AQAB"})
    }

    #[test]
    fn key_choice_by_kid_type_use_and_size() {
        let doc = json!({"keys": [
            rsa_jwk("a", 256),
            rsa_jwk("small", 128),
            {"kty": "EC", "kid": "ec", "crv": "P-384", "x": "AA", "y": "AA"},
            rsa_jwk("dup", 256), rsa_jwk("dup", 256),
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": B64.encode([0xC5u8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["sign"], "n": B64.encode([0xC5u8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "alg", "alg": "RS256", "n": B64.encode([0xC5u8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": 5, "n": "AQAB", "e": "AQAB"}
        ]});
        let keys = parse_jwks(&doc).unwrap();
        assert_eq!(keys.len(), 8, "the unparseable key is dropped, the rest kept");
        assert!(choose_key(&keys, "a", Algorithm::RS384).is_ok());
        assert_eq!(choose_key(&keys, "a", Algorithm::ES384).err(), Some(KeyChoice::Unusable), "RSA key for an EC alg");
        assert_eq!(choose_key(&keys, "ec", Algorithm::RS384).err(), Some(KeyChoice::Unusable), "EC key in the RS384 slot");
        assert_eq!(choose_key(&keys, "ec", Algorithm::ES256).err(), Some(KeyChoice::Unusable), "wrong curve");
        assert!(choose_key(&keys, "ec", Algorithm::ES384).is_ok());
        assert_eq!(choose_key(&keys, "nope", Algorithm::RS384).err(), Some(KeyChoice::UnknownKid));
        assert_eq!(choose_key(&keys, "dup", Algorithm::RS384).err(), Some(KeyChoice::Ambiguous));
        assert_eq!(choose_key(&keys, "small", Algorithm::RS384).err(), Some(KeyChoice::RsaTooSmall));
        assert_eq!(choose_key(&keys, "enc", Algorithm::RS384).err(), Some(KeyChoice::Unusable));
        assert_eq!(choose_key(&keys, "ops", Algorithm::RS384).err(), Some(KeyChoice::Unusable));
        assert_eq!(choose_key(&keys, "alg", Algorithm::RS384).err(), Some(KeyChoice::Unusable));
        assert!(choose_key(&keys, "alg", Algorithm::RS256).is_ok());
        assert_eq!(rsa_bits(&keys[0]), Some(2048));
        assert!(parse_jwks(&json!({"nokeys": []})).is_err());
    }
}
