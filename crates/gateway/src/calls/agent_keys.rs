//! Agents' registered public keys: a JWKS file, or a JWKS URL fetched and cached.
//!
//! Rules (pitfalls case 33):
//! - a `kid` is looked up only in the issuer's own registered set, by exact match; more
//!   than one match is refused;
//! - a token without `kid` is accepted only when the set holds exactly one usable key
//!   for its algorithm (no trying every key);
//! - an unknown `kid` triggers at most one refetch of the *configured* URL per cooldown;
//!   during the cooldown unknown kids are refused at once, so rejection latency never
//!   depends on the JWKS endpoint; nothing in a token names a URL we fetch;
//! - when the endpoint fails, the cached set keeps being used until `max_stale` after
//!   the last good fetch; after that the issuer fails closed;
//! - keys marked `use: enc`, without `verify` in `key_ops`, or of an unusable type are
//!   never used (they are skipped with a warning when the set is loaded).

use async_trait::async_trait;
use medicodax_clock::{Mono, SharedClock};
use medicodax_jose::{Alg, Jwks, VerifyingKey};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fetches a JWKS document from a configured URL.
#[async_trait]
pub trait JwksFetcher: Send + Sync + 'static {
    /// GETs `url`; returns the body and the `Cache-Control: max-age`, if any.
    async fn fetch(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String>;
}

/// The production fetcher: reqwest, no redirects, a timeout and a size cap.
pub struct HttpJwksFetcher {
    client: reqwest::Client,
}

/// The largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

impl HttpJwksFetcher {
    /// A fetcher with a 5 s timeout that never follows redirects.
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl JwksFetcher for HttpJwksFetcher {
    async fn fetch(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let resp = self.client.get(url).header("accept", "application/json").send().await.map_err(|e| format!("request failed: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        if resp.content_length().is_some_and(|l| l > MAX_JWKS_BYTES as u64) {
            return Err("JWKS document too large".into());
        }
        let body = resp.bytes().await.map_err(|e| format!("reading body failed: {}", e.without_url()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("JWKS document too large".into());
        }
        Ok((body.to_vec(), max_age))
    }
}

/// `max-age` from a `Cache-Control` value (`no-store`/`no-cache` give zero).
pub fn parse_max_age(v: &str) -> Option<Duration> {
    let mut out = None;
    for part in v.split(',') {
        let part = part.trim();
        if part.eq_ignore_ascii_case("no-store") || part.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if let Some(n) = part.strip_prefix("max-age=").or_else(|| part.strip_prefix("Max-Age=")) {
            out = n.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    out
}

/// Timing of an issuer's key cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheRules {
    /// Minimum time between fetches triggered by unknown kids.
    pub cooldown: Duration,
    /// After this long without a good fetch, the cached set is no longer trusted.
    pub max_stale: Duration,
    /// Refresh proactively once a good fetch is this old (capped by the server's max-age).
    pub refresh_after: Duration,
}

impl Default for CacheRules {
    fn default() -> Self {
        CacheRules { cooldown: Duration::from_secs(30), max_stale: Duration::from_secs(24 * 3600), refresh_after: Duration::from_secs(300) }
    }
}

/// Why no key could be found for a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLookupError {
    /// No key with that kid in the issuer's registered set.
    #[error("no key with this kid is registered for the issuer")]
    UnknownKid,
    /// Several keys carry the kid.
    #[error("more than one registered key carries this kid")]
    AmbiguousKid,
    /// No kid, and the set does not hold exactly one usable key for the algorithm.
    #[error("the call has no kid and the issuer's key set does not hold exactly one usable key for its algorithm")]
    NoKidAmbiguous,
    /// The issuer's keys are fetched from a URL that has failed for longer than allowed.
    #[error("the issuer's key set could not be refreshed for too long; the gateway refuses its calls until its JWKS URL answers")]
    Stale,
}

struct CacheState {
    keys: Vec<Arc<VerifyingKey>>,
    good_at: Option<Mono>,
    attempt_at: Option<Mono>,
    ttl: Duration,
    fetches: u64,
}

enum Source {
    Static,
    Remote { url: String, fetcher: Arc<dyn JwksFetcher> },
}

/// One agent's key set.
pub struct AgentKeys {
    agent: String,
    source: Source,
    rules: CacheRules,
    clock: SharedClock,
    state: Mutex<CacheState>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AgentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeys").field("agent", &self.agent).finish_non_exhaustive()
    }
}

/// Turns a JWKS document into usable verifying keys, skipping unusable ones with a warning.
pub fn usable_keys(agent: &str, doc: &[u8]) -> Result<Vec<Arc<VerifyingKey>>, String> {
    let set = Jwks::from_json(doc).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        match VerifyingKey::from_jwk(jwk) {
            Ok(k) => out.push(Arc::new(k)),
            Err(e) => tracing::warn!(agent, kid = jwk.kid().unwrap_or("-"), reason = %e, "skipping an unusable key in the agent's JWKS"),
        }
    }
    Ok(out)
}

impl AgentKeys {
    /// Keys from a JWKS file, read once.
    pub fn from_file(agent: &str, path: &Path, clock: SharedClock) -> Result<Self, String> {
        let doc = std::fs::read(path).map_err(|e| format!("cannot read JWKS file {}: {}", path.display(), e.kind()))?;
        let keys = usable_keys(agent, &doc).map_err(|e| format!("JWKS file {}: {e}", path.display()))?;
        if keys.is_empty() {
            return Err(format!("JWKS file {} holds no usable signing key (RSA ≥ 2048 bits or EC P-384, use sig)", path.display()));
        }
        Ok(Self::with_keys(agent, keys, clock))
    }

    /// Keys given directly (tests, embedded agents).
    pub fn with_keys(agent: &str, keys: Vec<Arc<VerifyingKey>>, clock: SharedClock) -> Self {
        let now = clock.monotonic();
        AgentKeys {
            agent: agent.to_owned(),
            source: Source::Static,
            rules: CacheRules::default(),
            clock,
            state: Mutex::new(CacheState { keys, good_at: Some(now), attempt_at: None, ttl: Duration::MAX, fetches: 0 }),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Keys fetched from `url` on first use and cached under `rules`.
    pub fn remote(agent: &str, url: &str, fetcher: Arc<dyn JwksFetcher>, rules: CacheRules, clock: SharedClock) -> Self {
        AgentKeys {
            agent: agent.to_owned(),
            source: Source::Remote { url: url.to_owned(), fetcher },
            rules,
            clock,
            state: Mutex::new(CacheState { keys: Vec::new(), good_at: None, attempt_at: None, ttl: rules.refresh_after, fetches: 0 }),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The `kid`s of the keys held now (for the dashboard), in the set's order; a key
    /// without a `kid` is listed as `(no kid)`.
    pub fn key_ids(&self) -> Vec<String> {
        self.lock().keys.iter().map(|k| k.kid().unwrap_or("(no kid)").to_owned()).collect()
    }

    /// The configured JWKS URL, when the keys are fetched (`None` for a file or fixed set).
    pub fn jwks_url(&self) -> Option<&str> {
        match &self.source {
            Source::Static => None,
            Source::Remote { url, .. } => Some(url),
        }
    }

    /// How many fetches have been made (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.lock().fetches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(keys: &[Arc<VerifyingKey>], kid: Option<&str>, alg: Alg) -> Result<Arc<VerifyingKey>, KeyLookupError> {
        match kid {
            Some(kid) => {
                let mut it = keys.iter().filter(|k| k.kid() == Some(kid));
                match (it.next(), it.next()) {
                    (Some(k), None) => Ok(Arc::clone(k)),
                    (Some(_), Some(_)) => Err(KeyLookupError::AmbiguousKid),
                    (None, _) => Err(KeyLookupError::UnknownKid),
                }
            }
            None => {
                let mut it = keys.iter().filter(|k| k.permits(alg));
                match (it.next(), it.next()) {
                    (Some(k), None) => Ok(Arc::clone(k)),
                    _ => Err(KeyLookupError::NoKidAmbiguous),
                }
            }
        }
    }

    /// The key to verify a call with `kid` (if any) and `alg`.
    pub async fn lookup(&self, kid: Option<&str>, alg: Alg) -> Result<Arc<VerifyingKey>, KeyLookupError> {
        let Source::Remote { url, fetcher } = &self.source else {
            return Self::find(&self.lock().keys, kid, alg);
        };
        let now = self.clock.monotonic();
        let (found, fresh, may_fetch, stale) = {
            let s = self.lock();
            let age = s.good_at.map(|g| now.since(g));
            let fresh = age.is_some_and(|a| a < s.ttl.min(self.rules.refresh_after));
            let stale = age.is_none_or(|a| a >= self.rules.max_stale);
            let may_fetch = s.attempt_at.is_none_or(|t| now.since(t) >= self.rules.cooldown);
            (Self::find(&s.keys, kid, alg), fresh, may_fetch, stale)
        };
        let need_fetch = match &found {
            Ok(_) => !fresh,
            Err(KeyLookupError::UnknownKid | KeyLookupError::NoKidAmbiguous) => true,
            Err(_) => false,
        };
        if need_fetch && may_fetch {
            self.refetch(url, fetcher.as_ref()).await;
            let s = self.lock();
            let still_stale = s.good_at.is_none_or(|g| self.clock.monotonic().since(g) >= self.rules.max_stale);
            if still_stale {
                return Err(KeyLookupError::Stale);
            }
            return Self::find(&s.keys, kid, alg);
        }
        if stale {
            return Err(KeyLookupError::Stale);
        }
        found
    }

    async fn refetch(&self, url: &str, fetcher: &dyn JwksFetcher) {
        let _single = self.fetch_lock.lock().await;
        let now = self.clock.monotonic();
        {
            let mut s = self.lock();
            // Another caller fetched while we waited.
            if s.attempt_at.is_some_and(|t| now.since(t) < self.rules.cooldown) {
                return;
            }
            s.attempt_at = Some(now);
            s.fetches += 1;
        }
        metrics::counter!("medicodax_agent_jwks_fetches_total").increment(1);
        match fetcher.fetch(url).await {
            Ok((doc, max_age)) => match usable_keys(&self.agent, &doc) {
                Ok(keys) => {
                    let mut s = self.lock();
                    s.keys = keys;
                    s.good_at = Some(self.clock.monotonic());
                    s.ttl = max_age.unwrap_or(self.rules.refresh_after);
                }
                Err(e) => tracing::warn!(agent = %self.agent, error = %e, "agent JWKS document rejected; keeping the cached set"),
            },
            Err(e) => {
                metrics::counter!("medicodax_agent_jwks_fetch_failures_total").increment(1);
                tracing::warn!(agent = %self.agent, error = %e, "agent JWKS fetch failed; keeping the cached set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
