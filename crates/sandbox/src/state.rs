//! The state shared by every request: registered clients, issued tokens, used `jti`s,
//! paging sessions, rate budgets, faults and the request log.

use crate::config::{ClientKeys, ClientRegistration, SandboxConfig, VendorSettings};
use crate::data::Dataset;
use crate::faults::{FaultState, RequestLog};
use crate::jwks::{JwksCache, parse_jwks};
use crate::vendor::{ResourceType, Vendor};
use jsonwebtoken::jwk::Jwk;
use medicodax_clock::{Mono, SharedClock};
use medicodax_policy::scope::{Context, ScopeSet};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

/// Locks a mutex, carrying on after a panic elsewhere (the data are plain values that a
/// panicking holder cannot leave half-written in a way that matters to a test server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a client registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The client id is empty, too long, or has characters other than visible ASCII.
    #[error("client id {0:?} must be 1 to 256 visible ASCII characters")]
    BadClientId(String),
    /// The JWKS URL is not an absolute http(s) URL.
    #[error("client {client_id}: the JWKS URL is not an absolute http or https URL")]
    BadJwksUrl {
        /// The client.
        client_id: String,
    },
    /// The inline JWKS is not a JWK Set.
    #[error("client {client_id}: the inline JWKS is not a JWK Set document")]
    BadInlineJwks {
        /// The client.
        client_id: String,
    },
    /// A registered scope does not parse, or is not a `system/` scope.
    #[error("client {client_id}: registered scope {scope:?} is not a valid system/ scope")]
    BadScope {
        /// The client.
        client_id: String,
        /// The scope as written.
        scope: String,
    },
}

/// A registration, checked and with its keys and scopes parsed.
#[derive(Debug)]
pub(crate) struct RegisteredClient {
    pub reg: ClientRegistration,
    pub scopes: ScopeSet,
    pub inline_keys: Option<Arc<Vec<Jwk>>>,
}

impl RegisteredClient {
    pub fn check(reg: ClientRegistration) -> Result<Self, RegistrationError> {
        let id = &reg.client_id;
        if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RegistrationError::BadClientId(id.chars().take(64).collect()));
        }
        let inline_keys = match &reg.keys {
            ClientKeys::JwksUrl(u) => {
                let ok = url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
                if !ok {
                    return Err(RegistrationError::BadJwksUrl { client_id: id.clone() });
                }
                None
            }
            ClientKeys::Inline(doc) => Some(Arc::new(parse_jwks(doc).map_err(|_| RegistrationError::BadInlineJwks { client_id: id.clone() })?)),
        };
        let scopes = ScopeSet::from_tokens(reg.scopes.iter().map(String::as_str));
        if let Some((bad, _)) = scopes.ignored.first() {
            return Err(RegistrationError::BadScope { client_id: id.clone(), scope: bad.clone() });
        }
        if let Some(s) = scopes.scopes.iter().find(|s| s.context != Context::System) {
            return Err(RegistrationError::BadScope { client_id: id.clone(), scope: s.to_v2() });
        }
        Ok(RegisteredClient { reg, scopes, inline_keys })
    }
}

/// An issued access token.
#[derive(Clone, Debug)]
pub(crate) struct IssuedToken {
    pub label: String,
    pub vendor: Vendor,
    pub client_id: String,
    pub scopes: Arc<ScopeSet>,
    /// Unix seconds (wall clock) at which it stops working.
    pub expires_at: i64,
    pub revoked: bool,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Missing,
    Unknown,
    Expired,
    Revoked,
}

impl TokenProblem {
    pub fn describe(self) -> &'static str {
        match self {
            TokenProblem::Missing => "no bearer token in the Authorization header",
            TokenProblem::Unknown => "the access token is not known to this server",
            TokenProblem::Expired => "the access token has expired",
            TokenProblem::Revoked => "the access token has been revoked",
        }
    }
}

#[derive(Default)]
pub(crate) struct TokenStore {
    tokens: HashMap<String, IssuedToken>,
    issued: [u64; 2],
}

impl TokenStore {
    pub fn issue(&mut self, vendor: Vendor, client_id: &str, scopes: ScopeSet, expires_at: i64, now: i64) -> (String, String) {
        if self.tokens.len() > 10_000 {
            self.tokens.retain(|_, t| t.expires_at > now);
        }
        self.issued[vendor.index()] += 1;
        let label = format!("{}-token-{}", vendor.prefix().trim_start_matches('/'), self.issued[vendor.index()]);
        let value = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        self.tokens.insert(
            value.clone(),
            IssuedToken { label: label.clone(), vendor, client_id: client_id.to_owned(), scopes: Arc::new(scopes), expires_at, revoked: false },
        );
        (value, label)
    }

    pub fn check(&self, vendor: Vendor, value: &str, now: i64) -> Result<&IssuedToken, (TokenProblem, Option<String>)> {
        let t = self.tokens.get(value).filter(|t| t.vendor == vendor).ok_or((TokenProblem::Unknown, None))?;
        if t.revoked {
            return Err((TokenProblem::Revoked, Some(t.label.clone())));
        }
        if now >= t.expires_at {
            return Err((TokenProblem::Expired, Some(t.label.clone())));
        }
        Ok(t)
    }

    pub fn revoke_all(&mut self, vendor: Vendor) -> usize {
        let mut n = 0;
        for t in self.tokens.values_mut().filter(|t| t.vendor == vendor && !t.revoked) {
            t.revoked = true;
            n += 1;
        }
        n
    }

    pub fn revoke_label(&mut self, label: &str) -> bool {
        self.tokens.values_mut().find(|t| t.label == label).is_some_and(|t| {
            t.revoked = true;
            true
        })
    }

    pub fn issued(&self, vendor: Vendor) -> u64 {
        self.issued[vendor.index()]
    }
}

/// An Epic paging session: the matches of one search, served page by page through
/// opaque links until it expires.
pub(crate) struct PagingSession {
    pub rtype: ResourceType,
    pub matches: Arc<Vec<u32>>,
    pub page_size: usize,
    pub expires: Mono,
    /// The opaque tokens of pages 2, 3, … in order.
    pub tokens: Vec<String>,
}

impl PagingSession {
    /// The token of 1-based page `page`, if there is such a page after the first.
    pub fn token_of(&self, page: usize) -> Option<&str> {
        page.checked_sub(2).and_then(|i| self.tokens.get(i)).map(String::as_str)
    }
}

#[derive(Default)]
pub(crate) struct SessionStore {
    /// Opaque page token → (session, 1-based page number).
    pages: HashMap<String, (Arc<PagingSession>, usize)>,
}

impl SessionStore {
    /// Opens a session over `matches` and gives it back with the tokens of pages 2.. .
    pub fn open(&mut self, rtype: ResourceType, matches: Arc<Vec<u32>>, page_size: usize, expires: Mono, now: Mono) -> Arc<PagingSession> {
        if self.pages.len() > 50_000 {
            self.pages.retain(|_, (s, _)| s.expires > now);
        }
        let pages = matches.len().div_ceil(page_size.max(1));
        let tokens: Vec<String> = (2..=pages).map(|_| format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())).collect();
        let session = Arc::new(PagingSession { rtype, matches, page_size, expires, tokens });
        for (i, t) in session.tokens.iter().enumerate() {
            self.pages.insert(t.clone(), (session.clone(), i + 2));
        }
        session
    }

    /// The session and page a token names, if it exists and has not expired.
    pub fn page(&self, token: &str, now: Mono) -> Option<(Arc<PagingSession>, usize)> {
        self.pages.get(token).filter(|(s, _)| now < s.expires).cloned()
    }
}

/// A fixed-window request budget (eClinicalWorks: 250 per minute per practice).
#[derive(Default)]
pub(crate) struct Budget {
    window_start: Option<Mono>,
    used: u32,
}

impl Budget {
    /// Counts one request; `Err(seconds left in the window)` when over the limit.
    pub fn take(&mut self, limit: u32, now: Mono) -> Result<(), u64> {
        const WINDOW: Duration = Duration::from_secs(60);
        match self.window_start {
            Some(start) if now.since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        self.used = self.used.saturating_add(1);
        if self.used > limit {
            let left = self.window_start.map_or(WINDOW, |s| s.add(WINDOW).0.saturating_sub(now.0));
            return Err(left.as_secs().max(1));
        }
        Ok(())
    }
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub clock: SharedClock,
    pub origin: String,
    pub data: &'static Dataset,
    pub settings: [VendorSettings; 2],
    pub clients: RwLock<HashMap<(Vendor, String), Arc<RegisteredClient>>>,
    pub tokens: Mutex<TokenStore>,
    /// (vendor, client id, jti) → the assertion's `exp`, until which the jti stays used.
    pub jtis: Mutex<HashMap<(Vendor, String, String), i64>>,
    pub jwks: JwksCache,
    pub sessions: Mutex<SessionStore>,
    pub budgets: [Mutex<Budget>; 2],
    pub faults: Mutex<FaultState>,
    pub log: Mutex<RequestLog>,
}

impl Shared {
    pub fn new(config: &SandboxConfig, origin: String, data: &'static Dataset, jwks: JwksCache) -> Self {
        Shared {
            clock: config.clock.clone(),
            origin,
            data,
            settings: [config.epic.clone(), config.ecw.clone()],
            clients: RwLock::new(HashMap::new()),
            tokens: Mutex::new(TokenStore::default()),
            jtis: Mutex::new(HashMap::new()),
            jwks,
            sessions: Mutex::new(SessionStore::default()),
            budgets: [Mutex::new(Budget::default()), Mutex::new(Budget::default())],
            faults: Mutex::new(FaultState::default()),
            log: Mutex::new(RequestLog::new(config.log_capacity)),
        }
    }

    pub fn settings(&self, vendor: Vendor) -> &VendorSettings {
        &self.settings[vendor.index()]
    }

    pub fn fhir_base(&self, vendor: Vendor) -> String {
        format!("{}{}", self.origin, vendor.fhir_path())
    }

    pub fn token_url(&self, vendor: Vendor) -> String {
        format!("{}{}", self.origin, vendor.token_path())
    }

    pub fn register(&self, reg: ClientRegistration) -> Result<(), RegistrationError> {
        let checked = RegisteredClient::check(reg)?;
        let key = (checked.reg.vendor, checked.reg.client_id.clone());
        self.clients.write().unwrap_or_else(PoisonError::into_inner).insert(key, Arc::new(checked));
        Ok(())
    }

    pub fn client(&self, vendor: Vendor, client_id: &str) -> Option<Arc<RegisteredClient>> {
        self.clients.read().unwrap_or_else(PoisonError::into_inner).get(&(vendor, client_id.to_owned())).cloned()
    }

    /// Marks a `jti` used until `exp`; `false` if it already was.
    pub fn use_jti(&self, vendor: Vendor, client_id: &str, jti: &str, exp: i64, now: i64) -> bool {
        let mut map = lock(&self.jtis);
        if map.len() > 10_000 {
            map.retain(|_, e| *e >= now);
        }
        let key = (vendor, client_id.to_owned(), jti.to_owned());
        if map.get(&key).is_some_and(|e| *e >= now) {
            return false;
        }
        map.insert(key, exp);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn budget_blocks_for_the_rest_of_the_window() {
        let mut b = Budget::default();
        let t0 = Mono(Duration::from_secs(100));
        for _ in 0..250 {
            assert!(b.take(250, t0).is_ok());
        }
        assert_eq!(b.take(250, t0.add(Duration::from_secs(20))), Err(40));
        assert!(b.take(250, t0.add(Duration::from_secs(59))).is_err());
        assert!(b.take(250, t0.add(Duration::from_secs(60))).is_ok(), "a new window");
    }

    #[test]
    fn registrations_are_checked() {
        let ok = ClientRegistration::new("c1", Vendor::Epic, ClientKeys::JwksUrl("http://127.0.0.1:9/jwks.json".into()));
        assert!(RegisteredClient::check(ok.clone()).is_ok());
        assert!(matches!(RegisteredClient::check(ClientRegistration { client_id: String::new(), ..ok.clone() }), Err(RegistrationError::BadClientId(_))));
        assert!(matches!(
            RegisteredClient::check(ClientRegistration { keys: ClientKeys::JwksUrl("file:///etc/passwd".into()), ..ok.clone() }),
            Err(RegistrationError::BadJwksUrl { .. })
        ));
        assert!(matches!(
            RegisteredClient::check(ClientRegistration { keys: ClientKeys::Inline(json!({"k": 1})), ..ok.clone() }),
            Err(RegistrationError::BadInlineJwks { .. })
        ));
        for bad in ["system/Patient.sr", "patient/Patient.rs", "system/Foo.read"] {
            assert!(matches!(RegisteredClient::check(ok.clone().with_scopes([bad])), Err(RegistrationError::BadScope { .. })), "{bad}");
        }
    }

    #[test]
    fn tokens_expire_and_revoke() {
        let mut s = TokenStore::default();
        let (v, label) = s.issue(Vendor::EClinicalWorks, "c", ScopeSet::parse("system/Patient.rs"), 1300, 1000);
        assert_eq!(label, "ecw-token-1");
        assert!(s.check(Vendor::EClinicalWorks, &v, 1299).is_ok());
        assert_eq!(s.check(Vendor::EClinicalWorks, &v, 1300).err().map(|e| e.0), Some(TokenProblem::Expired));
        assert_eq!(s.check(Vendor::Epic, &v, 1000).err().map(|e| e.0), Some(TokenProblem::Unknown), "one side's token is unknown to the other");
        assert_eq!(s.revoke_all(Vendor::EClinicalWorks), 1);
        assert_eq!(s.check(Vendor::EClinicalWorks, &v, 1000).err().map(|e| e.0), Some(TokenProblem::Revoked));
    }
}
