//! The auth manager: one per process, a token cache keyed by (connection, scope set).
//!
//! How a token is handed out ([`AuthManager::token`]):
//! - **Cache hit**: the cached token is returned while `now < renew_at`, where
//!   `renew_at = sent_at + lifetime − min(buffer, lifetime / 5)` on the monotonic clock and
//!   `sent_at` is when the token request was *sent* (Epic 3540 s, eCW 240 s, a 45 s token
//!   36 s). So no request leaves with a token past its renewal point.
//! - **Single flight**: otherwise the first caller starts one token request (a spawned
//!   task, so a cancelled caller cannot strand it) and every caller that arrives while it
//!   runs waits for the same outcome: N callers at expiry make one request; a failure
//!   reaches every waiter and clears the in-flight slot. The callers a token was fetched
//!   for always get it, even if it is (oddly) already past its renewal point.
//! - **Spacing and back-off**: token requests of one cache entry are at least 5 s apart
//!   (a caller that needs a new token sooner waits, and the anomaly is logged); after a
//!   transient failure (5xx, 429, network, discovery) requests pause for
//!   `max(5 s·2ⁿ⁻¹ capped at 60 s, Retry-After)` and callers fail fast meanwhile; after an
//!   OAuth error answer (`invalid_client`, `unauthorized_client`, `invalid_scope`, …)
//!   callers fail fast, one slow retry is made after 60 s with a new assertion, and a
//!   second failure sticks until [`AuthManager::reset`].
//! - **401**: [`AuthManager::invalidate`] drops the cached token only if it is the very
//!   token that got the 401 (compared by value), so a token another worker just fetched
//!   survives; [`AuthManager::renew_after_unauthorized`] does that and hands out the
//!   current token, minting at most once. Nothing here renews on 403.

use medicodax_clock::{Mono, SharedClock};
use medicodax_config::{Config, ConnectionConfig, Vendor};
use medicodax_jose::{Jwks, PrivateKey, RingEvent, RotationPolicy};
use reqwest::header::{ACCEPT, HeaderValue};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::assertion::{self, AssertionParams};
use crate::discovery::{self, Discovery};
use crate::error::{AuthError, ErrorClass};
use crate::http::{BodyError, NetworkKind, read_capped, retry_after_of};
use crate::keys::ConnectionKeys;
use crate::profile::{CONFIG_RETRY_DELAY, ConnectionSettings, MIN_MINT_INTERVAL, SetupError, SetupErrors, SetupProblem, renewal_offset};
use crate::rate::{BudgetStatus, RateBudget, RequestKind};
use crate::scopes::{GrantSource, GrantedScopes, ScopeSet};
use crate::secret::AccessToken;
use crate::token::{self, ExpiresIn, RequestContext, TokenFailureRecord};

/// Longest pause after repeated transient failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Block assumed after a 429 without `Retry-After` (eCW blocks for the rest of the minute).
const DEFAULT_429_BLOCK: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutex here guards plain state that each critical section leaves consistent
    // before any call that could panic; a poisoned lock still holds usable state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn unix_plus(unix: i64, d: Duration) -> i64 {
    unix.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------
// Token handles

struct HandleInner {
    connection: Arc<str>,
    scopes: ScopeSet,
    token: AccessToken,
    token_type: String,
    generation: u64,
    sent_at: Mono,
    lifetime: Duration,
    renew_at: Mono,
    sent_unix: i64,
    renew_offset: Duration,
    granted: Arc<GrantedScopes>,
    cached: bool,
}

/// A token handed out by the auth manager, with what the FHIR client needs to use it and,
/// after a 401, to invalidate exactly it. Cheap to clone; `Debug` never shows the token.
#[derive(Clone)]
pub struct TokenHandle(Arc<HandleInner>);

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.0;
        f.debug_struct("TokenHandle")
            .field("connection", &h.connection)
            .field("generation", &h.generation)
            .field("token", &h.token)
            .field("lifetime", &h.lifetime)
            .field("renew_at", &h.renew_at)
            .field("cached", &h.cached)
            .finish_non_exhaustive()
    }
}

impl TokenHandle {
    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.0.token
    }

    /// The `Authorization: Bearer …` header value (marked sensitive).
    pub fn authorization(&self) -> &HeaderValue {
        self.0.token.authorization()
    }

    /// The connection's name.
    pub fn connection(&self) -> &str {
        &self.0.connection
    }

    /// The scope set this token was requested for (the cache key).
    pub fn scopes(&self) -> &ScopeSet {
        &self.0.scopes
    }

    /// What the token grants.
    pub fn granted_scopes(&self) -> &Arc<GrantedScopes> {
        &self.0.granted
    }

    /// `token_type` as the server sent it.
    pub fn token_type(&self) -> &str {
        &self.0.token_type
    }

    /// Counts the tokens fetched for this cache entry; 1 is the first.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// When its token request was sent (monotonic).
    pub fn sent_at(&self) -> Mono {
        self.0.sent_at
    }

    /// When it expires (monotonic): `sent_at + lifetime`.
    pub fn expires_at(&self) -> Mono {
        self.0.sent_at.add(self.0.lifetime)
    }

    /// When it stops being handed out and a new one is fetched (monotonic).
    pub fn renew_at(&self) -> Mono {
        self.0.renew_at
    }

    /// The lifetime believed (after the profile default and the cap).
    pub fn lifetime(&self) -> Duration {
        self.0.lifetime
    }

    /// When it expires, wall clock (Unix seconds), for display.
    pub fn expires_at_unix(&self) -> i64 {
        unix_plus(self.0.sent_unix, self.0.lifetime)
    }

    /// When it will be renewed, wall clock (Unix seconds), for display.
    pub fn renew_at_unix(&self) -> i64 {
        unix_plus(self.0.sent_unix, self.0.renew_offset)
    }

    /// Whether it is cached (false for `expires_in` ≤ 0: good for the calls it was fetched for only).
    pub fn is_cached(&self) -> bool {
        self.0.cached
    }
}

// ---------------------------------------------------------------------------------------
// State

#[derive(Clone)]
struct Failure {
    error: AuthError,
    /// When another attempt may be made; `None`: not until [`AuthManager::reset`].
    retry_at: Option<Mono>,
}

impl Failure {
    /// `Err` while this failure blocks new token requests at `now`.
    fn check(&self, connection: &str, now: Mono) -> Result<(), AuthError> {
        match self.retry_at {
            None => Err(self.error.clone()),
            Some(t) if now < t => Err(if self.error.is_config() {
                self.error.clone()
            } else {
                AuthError::BackingOff { connection: connection.to_owned(), retry_after: now.until(t), cause: self.error.class() }
            }),
            Some(_) => Ok(()),
        }
    }
}

#[derive(Default)]
struct Gate {
    failure: Option<Failure>,
    consecutive_transient: u32,
    last_record: Option<Arc<TokenFailureRecord>>,
}

#[derive(Default, Clone)]
struct Stats {
    generation: u64,
    renewal_count: u64,
    failure_count: u64,
    consecutive_failures: u32,
    invalidations: u64,
    last_error: Option<ErrorClass>,
    last_error_at_unix: Option<i64>,
    last_renewal_unix: Option<i64>,
}

#[derive(Default)]
struct SlotState {
    current: Option<TokenHandle>,
    in_flight: bool,
    epoch: u64,
    last_result: Option<Result<TokenHandle, AuthError>>,
    last_sent: Option<Mono>,
    scope_failure: Option<Failure>,
    granted: Option<Arc<GrantedScopes>>,
    stats: Stats,
}

struct Slot {
    scopes: ScopeSet,
    state: Mutex<SlotState>,
    done: watch::Sender<u64>,
}

impl Slot {
    fn new(scopes: ScopeSet) -> Arc<Self> {
        let (done, _) = watch::channel(0);
        Arc::new(Slot { scopes, state: Mutex::new(SlotState::default()), done })
    }
}

struct Conn {
    s: ConnectionSettings,
    name: Arc<str>,
    keys: ConnectionKeys,
    budget: RateBudget,
    discovered: Mutex<Option<Arc<Discovery>>>,
    discovering: tokio::sync::Mutex<()>,
    gate: Mutex<Gate>,
    default_slot: Arc<Slot>,
    slots: RwLock<HashMap<ScopeSet, Arc<Slot>>>,
}

impl Conn {
    fn slot_for(&self, scopes: &ScopeSet) -> Result<Arc<Slot>, AuthError> {
        // A vendor that takes no scope gives the same token whatever is asked: one entry.
        if !self.s.send_scope || *scopes == self.default_slot.scopes {
            return Ok(Arc::clone(&self.default_slot));
        }
        if scopes.is_empty() {
            return Err(AuthError::NoScopes { connection: self.s.name.clone() });
        }
        if let Some(s) = self.slots.read().unwrap_or_else(|p| p.into_inner()).get(scopes) {
            return Ok(Arc::clone(s));
        }
        let mut map = self.slots.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(map.entry(scopes.clone()).or_insert_with(|| Slot::new(scopes.clone()))))
    }

    fn existing_slot(&self, scopes: &ScopeSet) -> Option<Arc<Slot>> {
        if !self.s.send_scope || *scopes == self.default_slot.scopes {
            return Some(Arc::clone(&self.default_slot));
        }
        self.slots.read().unwrap_or_else(|p| p.into_inner()).get(scopes).cloned()
    }

    fn all_slots(&self) -> Vec<Arc<Slot>> {
        let mut v = vec![Arc::clone(&self.default_slot)];
        v.extend(self.slots.read().unwrap_or_else(|p| p.into_inner()).values().cloned());
        v
    }
}

struct Inner {
    clock: SharedClock,
    http: reqwest::Client,
    conns: HashMap<String, Arc<Conn>>,
    order: Vec<Arc<Conn>>,
    startup_events: Mutex<Vec<RingEvent>>,
}

/// The central auth manager: tokens, rate budgets, keys and state for every EHR connection.
/// Cheap to clone (shared state).
#[derive(Clone)]
pub struct AuthManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for AuthManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthManager").field("connections", &self.inner.order.iter().map(|c| c.s.name.as_str()).collect::<Vec<_>>()).finish()
    }
}

// ---------------------------------------------------------------------------------------
// Construction

/// Builds an [`AuthManager`].
pub struct AuthManagerBuilder {
    clock: SharedClock,
    http: Option<reqwest::Client>,
    data_dir: Option<PathBuf>,
    rotation: RotationPolicy,
    connections: Vec<(ConnectionConfig, Option<PrivateKey>)>,
}

impl fmt::Debug for AuthManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthManagerBuilder").field("data_dir", &self.data_dir).field("connections", &self.connections.len()).finish_non_exhaustive()
    }
}

impl AuthManagerBuilder {
    /// The data folder (managed key rings live under `<data_dir>/keys/connections/`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The HTTP client to use (default: rustls, no redirects followed).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Rotation timing for managed key rings.
    pub fn rotation_policy(mut self, policy: RotationPolicy) -> Self {
        self.rotation = policy;
        self
    }

    /// Adds a connection; its key comes from `key` (a PEM file) or a managed ring.
    pub fn connection(mut self, cfg: ConnectionConfig) -> Self {
        self.connections.push((cfg, None));
        self
    }

    /// Adds a connection with a key held by the program.
    pub fn connection_with_key(mut self, cfg: ConnectionConfig, key: PrivateKey) -> Self {
        self.connections.push((cfg, Some(key)));
        self
    }

    /// Resolves every connection's profile and loads its key; reports every problem found.
    pub fn build(self) -> Result<AuthManager, SetupErrors> {
        let mut errors = Vec::new();
        let http = match self.http {
            Some(c) => Some(c),
            None => match reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("medicodax/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(SetupError { connection: "*".into(), setting: "http", problem: SetupProblem::Http(e.to_string()) });
                    None
                }
            },
        };
        let now_unix = self.clock.now_unix();
        let mut conns = HashMap::new();
        let mut order = Vec::new();
        let mut events = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (cfg, key) in self.connections {
            if !names.insert(cfg.name.clone()) {
                errors.push(SetupError { connection: cfg.name.clone(), setting: "name", problem: SetupProblem::Duplicate });
                continue;
            }
            let s = match ConnectionSettings::resolve(&cfg) {
                Ok(s) => s,
                Err(mut e) => {
                    errors.append(&mut e);
                    continue;
                }
            };
            let keys = match key {
                Some(k) => ConnectionKeys::provided(&s, k, self.rotation),
                None => ConnectionKeys::load(&s, cfg.key.as_deref(), self.data_dir.as_deref(), self.rotation, now_unix).map(|(k, mut ev)| {
                    events.append(&mut ev);
                    k
                }),
            };
            let keys = match keys {
                Ok(k) => k,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let conn = Arc::new(Conn {
                name: Arc::from(s.name.as_str()),
                budget: RateBudget::new(s.rate),
                default_slot: Slot::new(s.scopes.clone()),
                s,
                keys,
                discovered: Mutex::new(None),
                discovering: tokio::sync::Mutex::new(()),
                gate: Mutex::new(Gate::default()),
                slots: RwLock::new(HashMap::new()),
            });
            conns.insert(cfg.name.clone(), Arc::clone(&conn));
            order.push(conn);
        }
        match (errors.is_empty(), http) {
            (true, Some(http)) => {
                Ok(AuthManager { inner: Arc::new(Inner { clock: self.clock, http, conns, order, startup_events: Mutex::new(events) }) })
            }
            _ => Err(SetupErrors(errors)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Public API

/// Why a key rotation could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    /// No such connection.
    #[error("no connection named {0:?} is configured")]
    UnknownConnection(String),
    /// The connection uses a configured key file, which the program does not rotate.
    #[error("connection {0:?} uses a configured key file; rotate it by replacing the file (and its registration), or remove `key` to use a managed ring")]
    NotManaged(String),
    /// The ring refused.
    #[error("connection {0:?}: {1}")]
    Ring(String, String),
}

impl AuthManager {
    /// A builder using `clock` for all time.
    pub fn builder(clock: SharedClock) -> AuthManagerBuilder {
        AuthManagerBuilder { clock, http: None, data_dir: None, rotation: RotationPolicy::default(), connections: Vec::new() }
    }

    /// The manager for every connection of a loaded configuration.
    pub fn from_config(cfg: &Config, data_dir: &Path, clock: SharedClock) -> Result<Self, SetupErrors> {
        let rotation = RotationPolicy {
            publish_lead: cfg.keys.publish_lead,
            consumer_cache_ttl: cfg.keys.consumer_cache_ttl,
            jwks_max_age: cfg.keys.jwks_max_age,
            ..RotationPolicy::default()
        };
        cfg.connections.iter().cloned().fold(Self::builder(clock).data_dir(data_dir).rotation_policy(rotation), |b, c| b.connection(c)).build()
    }

    fn conn(&self, name: &str) -> Result<&Arc<Conn>, AuthError> {
        self.inner.conns.get(name).ok_or_else(|| AuthError::UnknownConnection(name.chars().take(64).collect()))
    }

    /// The clock this manager runs on.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The connection names, in configuration order.
    pub fn connections(&self) -> impl Iterator<Item = &str> {
        self.inner.order.iter().map(|c| c.s.name.as_str())
    }

    /// A connection's resolved settings.
    pub fn settings(&self, connection: &str) -> Option<&ConnectionSettings> {
        self.inner.conns.get(connection).map(|c| &c.s)
    }

    /// A token for the connection's configured scopes.
    pub async fn token(&self, connection: &str) -> Result<TokenHandle, AuthError> {
        let conn = self.conn(connection)?;
        self.inner.token_from(conn, &conn.default_slot).await
    }

    /// A token for a given scope set (for a vendor that takes no `scope`, the connection's token).
    pub async fn token_for(&self, connection: &str, scopes: &ScopeSet) -> Result<TokenHandle, AuthError> {
        let conn = self.conn(connection)?;
        let slot = conn.slot_for(scopes)?;
        self.inner.token_from(conn, &slot).await
    }

    /// The cached token for the connection's configured scopes if it is before its renewal
    /// point; never makes a request.
    pub fn cached(&self, connection: &str) -> Option<TokenHandle> {
        let conn = self.inner.conns.get(connection)?;
        let now = self.inner.clock.monotonic();
        lock(&conn.default_slot.state).current.as_ref().filter(|h| now < h.0.renew_at).cloned()
    }

    /// After a 401: drops the cached token if it is `stale` (compared by value). Returns
    /// whether it was dropped (false when another worker already replaced it).
    pub fn invalidate(&self, stale: &TokenHandle) -> bool {
        let Some(conn) = self.inner.conns.get(&*stale.0.connection) else { return false };
        let Some(slot) = conn.existing_slot(&stale.0.scopes) else { return false };
        let mut st = lock(&slot.state);
        let same = st.current.as_ref().is_some_and(|c| c.0.token.same_value(&stale.0.token));
        if same {
            st.current = None;
            st.stats.invalidations += 1;
            drop(st);
            metrics::counter!("medicodax_token_invalidations_total", "connection" => conn.s.name.clone()).increment(1);
            info!(connection = %conn.name, generation = stale.0.generation, "access token dropped after a 401 from the FHIR server");
        }
        same
    }

    /// After a 401, for callers that kept only the token value (an adapter behind another
    /// crate's token trait): drops the connection's cached token whose value is `value`.
    /// Returns whether one was dropped.
    pub fn invalidate_value(&self, connection: &str, value: &str) -> bool {
        let Some(conn) = self.inner.conns.get(connection) else { return false };
        let found = conn.all_slots().into_iter().find_map(|slot| lock(&slot.state).current.as_ref().filter(|c| c.0.token.expose_secret() == value).cloned());
        found.is_some_and(|h| self.invalidate(&h))
    }

    /// After a 401 with `stale`: invalidates exactly it and returns the token to retry
    /// with (a new one, or the one another worker already fetched). Call it once per
    /// request: retry once, and give a second 401 to the caller. Never call it on a 403.
    pub async fn renew_after_unauthorized(&self, stale: &TokenHandle) -> Result<TokenHandle, AuthError> {
        self.invalidate(stale);
        let conn = self.conn(&stale.0.connection)?;
        let slot = conn.slot_for(&stale.0.scopes)?;
        self.inner.token_from(conn, &slot).await
    }

    /// The scopes granted with the connection's latest token (configured scopes).
    pub fn granted_scopes(&self, connection: &str) -> Option<Arc<GrantedScopes>> {
        let conn = self.inner.conns.get(connection)?;
        lock(&conn.default_slot.state).granted.clone()
    }

    /// The discovery result (or configured token URL) once known.
    pub fn discovery(&self, connection: &str) -> Option<Arc<Discovery>> {
        lock(&self.inner.conns.get(connection)?.discovered).clone()
    }

    /// Runs discovery for every connection now (at startup), so advertised-algorithm
    /// warnings show before the first call. Returns each connection's outcome.
    pub async fn prepare(&self) -> Vec<(String, Result<Arc<Discovery>, AuthError>)> {
        let mut out = Vec::new();
        for c in &self.inner.order {
            out.push((c.s.name.clone(), self.inner.endpoint(c).await));
        }
        out
    }

    /// Clears a sticky configuration error (after the registration or settings were fixed)
    /// and any pause, so the next call tries again.
    pub fn reset(&self, connection: &str) -> Result<(), AuthError> {
        let conn = self.conn(connection)?;
        for slot in conn.all_slots() {
            lock(&slot.state).scope_failure = None;
        }
        let mut g = lock(&conn.gate);
        g.failure = None;
        g.consecutive_transient = 0;
        *lock(&conn.discovered) = None;
        info!(connection = %conn.name, "connection reset: the next call requests a token again");
        Ok(())
    }

    /// Takes one request of `kind` from the connection's budget, or says when one would fit.
    pub fn try_acquire(&self, connection: &str, kind: RequestKind) -> Result<(), AuthError> {
        let conn = self.conn(connection)?;
        self.inner.try_budget(conn, kind)
    }

    /// Takes one request of `kind` from the connection's budget, waiting (on the clock) up
    /// to the connection's `max_retry_after` for room; `RateLimited` when longer.
    pub async fn acquire(&self, connection: &str, kind: RequestKind) -> Result<(), AuthError> {
        let conn = self.conn(connection)?;
        self.inner.acquire_budget(conn, kind).await
    }

    /// Records a 429 seen by the FHIR client: the connection's budget is blocked for
    /// `retry_after`, or for a minute when the server gave none.
    pub fn note_rate_limited(&self, connection: &str, retry_after: Option<Duration>) -> Result<(), AuthError> {
        let conn = self.conn(connection)?;
        let d = retry_after.unwrap_or(DEFAULT_429_BLOCK).min(conn.s.max_retry_after);
        conn.budget.block_for(self.inner.clock.monotonic(), d);
        Ok(())
    }

    /// Every connection's state, for the dashboard.
    pub fn status(&self) -> Vec<ConnectionStatus> {
        self.inner.order.iter().map(|c| self.inner.status_of(c)).collect()
    }

    /// One connection's state.
    pub fn connection_status(&self, connection: &str) -> Option<ConnectionStatus> {
        self.inner.conns.get(connection).map(|c| self.inner.status_of(c))
    }

    /// Sets the gauges behind `/metrics` from the current state (call before rendering).
    pub fn record_metrics(&self) {
        for s in self.status() {
            let labels = [("connection", s.connection.clone())];
            metrics::gauge!("medicodax_rate_budget_used", &labels).set(f64::from(s.budget.used_last_minute));
            if let Some(t) = s.tokens.first() {
                metrics::gauge!("medicodax_token_valid", &labels).set(if t.has_token { 1.0 } else { 0.0 });
                metrics::gauge!("medicodax_token_renewals", &labels).set(t.renewal_count as f64);
                if let Some(e) = t.expires_at_unix {
                    metrics::gauge!("medicodax_token_expiry_timestamp_seconds", &labels).set(e as f64);
                }
            }
        }
    }

    /// The public JWKS of every connection's keys published now (for `/.well-known/jwks.json`).
    pub fn jwks(&self) -> Jwks {
        let now = self.inner.clock.now_unix();
        let mut out = Jwks::default();
        for c in &self.inner.order {
            for k in c.keys.published(now).keys {
                if !out.keys.iter().any(|o| o.kid().is_some() && o.kid() == k.kid()) {
                    out.keys.push(k);
                }
            }
        }
        out
    }

    /// The `Cache-Control` for [`AuthManager::jwks`]: the shortest of the rings' `max-age`.
    pub fn jwks_cache_control(&self) -> String {
        let age = self.inner.order.iter().map(|c| c.keys.cache_control_max_age()).min().unwrap_or(0);
        format!("public, max-age={age}")
    }

    /// Moves every managed ring's rotation schedule to now; returns the steps for the audit log.
    pub fn tick_keys(&self) -> Vec<RingEvent> {
        let now = self.inner.clock.now_unix();
        let mut out = Vec::new();
        for c in &self.inner.order {
            match c.keys.tick(now) {
                Ok(mut ev) => out.append(&mut ev),
                Err(e) => warn!(connection = %c.name, error = %e, "key ring schedule step failed"),
            }
        }
        out
    }

    /// Starts a rotation of a connection's managed key ring.
    pub fn rotate_key(&self, connection: &str) -> Result<RingEvent, RotateError> {
        let conn = self.inner.conns.get(connection).ok_or_else(|| RotateError::UnknownConnection(connection.chars().take(64).collect()))?;
        if !conn.keys.managed() {
            return Err(RotateError::NotManaged(conn.s.name.clone()));
        }
        conn.keys.rotate(self.inner.clock.now_unix()).map_err(|e| RotateError::Ring(conn.s.name.clone(), e.to_string()))
    }

    /// Key-ring steps taken while building the manager (`key.created`), for the audit log.
    pub fn take_startup_events(&self) -> Vec<RingEvent> {
        std::mem::take(&mut *lock(&self.inner.startup_events))
    }
}

// ---------------------------------------------------------------------------------------
// Status

/// One cache entry's state.
#[derive(Clone, Debug, Serialize)]
pub struct TokenStatus {
    /// The scope set (the cache key).
    pub scopes: Vec<String>,
    /// Whether a token is cached and before its renewal point.
    pub has_token: bool,
    /// Tokens fetched for this entry so far.
    pub generation: u64,
    /// When the cached token expires (Unix seconds).
    pub expires_at_unix: Option<i64>,
    /// When it will be renewed (Unix seconds).
    pub next_renewal_unix: Option<i64>,
    /// Seconds until it expires.
    pub expires_in_secs: Option<u64>,
    /// Seconds until it is renewed.
    pub renews_in_secs: Option<u64>,
    /// When the latest token was requested (Unix seconds).
    pub last_renewal_unix: Option<i64>,
    /// Successful token requests.
    pub renewal_count: u64,
    /// Failed token requests.
    pub failure_count: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Tokens dropped after a 401.
    pub invalidations: u64,
    /// The class of the latest failure.
    pub last_error: Option<ErrorClass>,
    /// When it happened (Unix seconds).
    pub last_error_at_unix: Option<i64>,
    /// The latest granted scopes.
    pub granted_scopes: Option<GrantedScopes>,
    /// Whether a token request is running.
    pub in_flight: bool,
}

/// A connection's state, for the dashboard and metrics. Holds no secret.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionStatus {
    /// The connection.
    pub connection: String,
    /// The vendor profile.
    pub vendor: Vendor,
    /// The token endpoint, once known.
    pub token_endpoint: Option<String>,
    /// Discovery warnings (e.g. the configured alg not advertised).
    pub discovery_warnings: Vec<String>,
    /// Each cache entry.
    pub tokens: Vec<TokenStatus>,
    /// The request budget.
    pub budget: BudgetStatus,
    /// Seconds until token requests may be made again after a failure, if paused.
    pub paused_for_secs: Option<u64>,
    /// A configuration error that stopped token requests until the connection is reset.
    pub needs_attention: bool,
    /// The latest refused token request (redacted), for diagnosis.
    pub last_failure: Option<TokenFailureRecord>,
}

// ---------------------------------------------------------------------------------------
// Internals

struct Flight<'a> {
    inner: &'a Inner,
    conn: &'a Conn,
    slot: &'a Slot,
    /// The attempt is the one slow retry after a configuration error.
    config_retry: bool,
    finished: bool,
}

impl Flight<'_> {
    fn finish(&mut self, result: Result<TokenHandle, AuthError>) {
        self.finished = true;
        self.inner.complete(self.conn, self.slot, result, self.config_retry);
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.complete(self.conn, self.slot, Err(AuthError::Abandoned { connection: self.conn.s.name.clone() }), self.config_retry);
        }
    }
}

impl Inner {
    async fn token_from(self: &Arc<Self>, conn: &Arc<Conn>, slot: &Arc<Slot>) -> Result<TokenHandle, AuthError> {
        let now = self.clock.monotonic();
        let e0 = {
            let mut st = lock(&slot.state);
            if let Some(h) = st.current.as_ref().filter(|h| now < h.0.renew_at) {
                return Ok(h.clone());
            }
            if !st.in_flight {
                let config_retry = Self::gate(conn, &st, now)?;
                let rt = tokio::runtime::Handle::try_current().map_err(|_| AuthError::Abandoned { connection: conn.s.name.clone() })?;
                st.in_flight = true;
                rt.spawn(run_flight(Arc::clone(self), Arc::clone(conn), Arc::clone(slot), config_retry));
            }
            st.epoch
        };
        let mut rx = slot.done.subscribe();
        if rx.wait_for(|e| *e > e0).await.is_err() {
            return Err(AuthError::Abandoned { connection: conn.s.name.clone() });
        }
        let st = lock(&slot.state);
        st.last_result.clone().unwrap_or_else(|| Err(AuthError::Abandoned { connection: conn.s.name.clone() }))
    }

    /// Whether a token request may start now; `Ok(true)` when it is the slow retry after a
    /// configuration error.
    fn gate(conn: &Conn, st: &SlotState, now: Mono) -> Result<bool, AuthError> {
        let mut retry = false;
        if let Some(f) = &st.scope_failure {
            f.check(&conn.s.name, now)?;
            retry = true;
        }
        let g = lock(&conn.gate);
        if let Some(f) = &g.failure {
            f.check(&conn.s.name, now)?;
            retry |= f.error.is_config();
        }
        Ok(retry)
    }

    fn try_budget(&self, conn: &Conn, kind: RequestKind) -> Result<(), AuthError> {
        conn.budget.try_acquire(kind, self.clock.monotonic()).map_err(|l| {
            metrics::counter!("medicodax_rate_limited_total", "connection" => conn.s.name.clone(), "kind" => if kind == RequestKind::Token { "token" } else { "fhir" }).increment(1);
            AuthError::RateLimited { connection: conn.s.name.clone(), retry_after: l.retry_after, budget: l.budget.to_owned() }
        })
    }

    async fn acquire_budget(&self, conn: &Conn, kind: RequestKind) -> Result<(), AuthError> {
        let deadline = self.clock.monotonic().add(conn.s.max_retry_after);
        loop {
            let now = self.clock.monotonic();
            match conn.budget.try_acquire(kind, now) {
                Ok(()) => return Ok(()),
                Err(l) if now.add(l.retry_after) <= deadline => {
                    info!(connection = %conn.name, wait_ms = l.retry_after.as_millis() as u64, budget = l.budget, "waiting for room in the request budget");
                    self.clock.sleep(l.retry_after).await;
                }
                Err(_) => return self.try_budget(conn, kind),
            }
        }
    }

    async fn endpoint(&self, conn: &Conn) -> Result<Arc<Discovery>, AuthError> {
        if let Some(d) = lock(&conn.discovered).clone() {
            return Ok(d);
        }
        let _one = conn.discovering.lock().await;
        if let Some(d) = lock(&conn.discovered).clone() {
            return Ok(d);
        }
        let d = match &conn.s.token_url {
            Some(u) => Discovery::configured(u),
            None => {
                self.acquire_budget(conn, RequestKind::Fhir).await?;
                discovery::discover(&self.http, &conn.s.fhir_base, conn.s.alg, conn.s.timeout).await.map_err(|problem| AuthError::Discovery {
                    connection: conn.s.name.clone(),
                    url: discovery::well_known_url(&conn.s.fhir_base),
                    problem,
                })?
            }
        };
        for w in &d.warnings {
            warn!(connection = %conn.name, vendor = %conn.s.vendor, "SMART discovery: {w}");
        }
        info!(connection = %conn.name, token_endpoint = %d.token_endpoint, "token endpoint known");
        let d = Arc::new(d);
        *lock(&conn.discovered) = Some(Arc::clone(&d));
        Ok(d)
    }

    /// Waits until the slot's previous token request is at least 5 s old.
    async fn keep_spacing(&self, conn: &Conn, slot: &Slot) {
        let last = lock(&slot.state).last_sent;
        if let Some(last) = last {
            let ready = last.add(MIN_MINT_INTERVAL);
            let now = self.clock.monotonic();
            if now < ready {
                warn!(
                    connection = %conn.name,
                    wait_ms = now.until(ready).as_millis() as u64,
                    "a new token is needed less than 5 s after the previous token request (a very short token lifetime, or repeated 401s); waiting so token requests stay at least 5 s apart"
                );
                self.clock.sleep(now.until(ready)).await;
            }
        }
    }

    async fn fetch(&self, conn: &Conn, slot: &Slot) -> Result<TokenHandle, AuthError> {
        self.keep_spacing(conn, slot).await;
        let disc = self.endpoint(conn).await?;
        let mut first = true;
        loop {
            self.acquire_budget(conn, RequestKind::Token).await?;
            match self.attempt(conn, slot, &disc).await {
                Err(AuthError::Network { kind, .. }) if first => {
                    // The request may have reached the server; the retry carries a new
                    // assertion with a new jti, never the same one.
                    warn!(connection = %conn.name, kind = kind.as_str(), "token request failed on the network; retrying once with a new assertion");
                    first = false;
                    self.keep_spacing(conn, slot).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, conn: &Conn, slot: &Slot, disc: &Discovery) -> Result<TokenHandle, AuthError> {
        let s = &conn.s;
        let now_unix = self.clock.now_unix();
        let key = conn.keys.signer(now_unix);
        let params = AssertionParams {
            client_id: &s.client_id,
            token_endpoint: &disc.token_endpoint,
            jku: s.jku.as_deref(),
            backdate_secs: s.assertion_backdate,
            lifetime_secs: s.assertion_lifetime,
        };
        let assertion = assertion::mint(&key, &params, now_unix).map_err(|_| AuthError::Signing { connection: s.name.clone() })?;
        let scope = s.send_scope.then(|| slot.scopes.to_param());
        let form = token::form_fields(scope.as_deref(), assertion.expose_jws());
        let sent_at = self.clock.monotonic();
        lock(&slot.state).last_sent = Some(sent_at);
        metrics::counter!("medicodax_token_requests_total", "connection" => s.name.clone()).increment(1);
        info!(connection = %conn.name, token_endpoint = %disc.token_endpoint, kid = %assertion.summary().header.kid, jti = %assertion.summary().claims.jti, "requesting an access token");
        let resp = self.http.post(&disc.token_endpoint).header(ACCEPT, "application/json").form(&form).timeout(s.timeout).send().await;
        drop(form);
        let net = |e: &reqwest::Error| AuthError::Network { connection: s.name.clone(), kind: NetworkKind::of(e) };
        let resp = resp.map_err(|e| net(&e))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after_of(resp.headers(), self.clock.now_unix_millis());
        let body = read_capped(resp).await.map_err(|e| match e {
            BodyError::TooLarge => AuthError::BadResponse { connection: s.name.clone(), status, problem: "the body is larger than 256 KiB".into() },
            BodyError::Transport(e) => net(&e),
        })?;
        if !(200..300).contains(&status) {
            let ctx = RequestContext {
                connection: &s.name,
                vendor: s.vendor,
                token_url: &disc.token_endpoint,
                scope: scope.as_deref(),
                assertion: assertion.summary(),
                now_unix: self.clock.now_unix(),
            };
            if (300..400).contains(&status) {
                return Err(AuthError::BadResponse {
                    connection: s.name.clone(),
                    status,
                    problem: "a redirect; token requests are never sent on through redirects: set token_url to the final token endpoint".into(),
                });
            }
            return Err(token::classify_error(&ctx, status, retry_after, &body));
        }
        let resp = token::parse_token_response(&body).map_err(|p| AuthError::BadResponse { connection: s.name.clone(), status, problem: p.to_string() })?;
        Ok(self.handle_from(conn, slot, resp, sent_at, now_unix))
    }

    fn handle_from(&self, conn: &Conn, slot: &Slot, resp: token::TokenResponse, sent_at: Mono, sent_unix: i64) -> TokenHandle {
        let s = &conn.s;
        let (lifetime, cached) = match resp.expires_in {
            ExpiresIn::Seconds(n) => {
                let d = Duration::from_secs(n);
                if d > s.max_lifetime {
                    warn!(connection = %conn.name, expires_in = n, cap_secs = s.max_lifetime.as_secs(), "expires_in is above the cap; the cap is used");
                    (s.max_lifetime, true)
                } else {
                    (d, true)
                }
            }
            ExpiresIn::Missing => {
                info!(connection = %conn.name, default_secs = s.default_lifetime.as_secs(), "the token response has no expires_in; using the profile's lifetime");
                (s.default_lifetime, true)
            }
            ExpiresIn::Unusable(v) => {
                warn!(connection = %conn.name, expires_in = %v, default_secs = s.default_lifetime.as_secs(), "expires_in is not a number; treated as missing and the profile's lifetime is used");
                (s.default_lifetime, true)
            }
            ExpiresIn::NotPositive => {
                warn!(connection = %conn.name, "expires_in is zero or negative: the token is used for the calls it was fetched for and not cached");
                (Duration::ZERO, false)
            }
        };
        if resp.token_type_missing {
            warn!(connection = %conn.name, "the token response has no token_type; taken as bearer");
        }
        let renew_offset = renewal_offset(lifetime, s.renewal_buffer);
        let granted = match resp.scope.as_deref() {
            Some(sc) => {
                let g = GrantedScopes::from_response(sc);
                if g.scopes.is_empty() {
                    warn!(connection = %conn.name, "the token response grants no scopes (empty scope)");
                }
                g
            }
            None => {
                let source = s.grant_when_absent();
                info!(connection = %conn.name, source = ?source, "the token response has no scope; granted scopes are taken to equal the {} scopes", if source == GrantSource::AssumedConfigured { "configured" } else { "requested" });
                GrantedScopes::assumed(&slot.scopes, source)
            }
        };
        let generation = {
            let mut st = lock(&slot.state);
            st.stats.generation += 1;
            st.stats.generation
        };
        info!(connection = %conn.name, generation, lifetime_secs = lifetime.as_secs(), renews_in_secs = renew_offset.as_secs(), granted = granted.scopes.len(), "access token obtained");
        TokenHandle(Arc::new(HandleInner {
            connection: Arc::clone(&conn.name),
            scopes: slot.scopes.clone(),
            token: resp.access_token,
            token_type: resp.token_type,
            generation,
            sent_at,
            lifetime,
            renew_at: sent_at.add(renew_offset),
            sent_unix,
            renew_offset,
            granted: Arc::new(granted),
            cached,
        }))
    }

    fn complete(&self, conn: &Conn, slot: &Slot, result: Result<TokenHandle, AuthError>, config_retry: bool) {
        let now = self.clock.monotonic();
        let now_unix = self.clock.now_unix();
        let label = || conn.s.name.clone();
        let mut st = lock(&slot.state);
        match &result {
            Ok(h) => {
                st.current = h.0.cached.then(|| h.clone());
                st.granted = Some(Arc::clone(&h.0.granted));
                st.stats.renewal_count += 1;
                st.stats.consecutive_failures = 0;
                st.stats.last_renewal_unix = Some(h.0.sent_unix);
                st.scope_failure = None;
                let mut g = lock(&conn.gate);
                g.failure = None;
                g.consecutive_transient = 0;
                metrics::gauge!("medicodax_token_expiry_timestamp_seconds", "connection" => label()).set(h.expires_at_unix() as f64);
            }
            Err(e) => {
                st.stats.failure_count += 1;
                st.stats.consecutive_failures = st.stats.consecutive_failures.saturating_add(1);
                st.stats.last_error = Some(e.class());
                st.stats.last_error_at_unix = Some(now_unix);
                metrics::counter!("medicodax_token_failures_total", "connection" => label(), "class" => e.class().as_str()).increment(1);
                let mut g = lock(&conn.gate);
                if let Some(r) = e.failure_record() {
                    g.last_record = Some(Arc::clone(r));
                    warn!(connection = %conn.name, record = ?r, "token request refused: {}", r.explain());
                }
                let config_failure = |prev_retry: bool| Failure { error: e.clone(), retry_at: (!prev_retry).then(|| now.add(CONFIG_RETRY_DELAY)) };
                match e {
                    AuthError::InvalidScope(_) => st.scope_failure = Some(config_failure(config_retry)),
                    e if e.is_config() => g.failure = Some(config_failure(config_retry)),
                    AuthError::Unavailable { .. } | AuthError::Network { .. } | AuthError::Discovery { .. } | AuthError::BadResponse { .. } | AuthError::Signing { .. } => {
                        g.consecutive_transient = g.consecutive_transient.saturating_add(1);
                        let exp = MIN_MINT_INTERVAL.saturating_mul(1u32 << g.consecutive_transient.saturating_sub(1).min(8)).min(MAX_BACKOFF);
                        let server = e.retry_after().map(|r| r.min(conn.s.max_retry_after)).unwrap_or_default();
                        let pause = exp.max(server);
                        if let AuthError::Unavailable { status: 429, retry_after, .. } = e {
                            conn.budget.block_for(now, retry_after.unwrap_or(DEFAULT_429_BLOCK).min(conn.s.max_retry_after));
                        }
                        warn!(connection = %conn.name, class = e.class().as_str(), pause_secs = secs_ceil(pause), "token request failed: {e}");
                        g.failure = Some(Failure { error: e.clone(), retry_at: Some(now.add(pause)) });
                    }
                    _ => warn!(connection = %conn.name, class = e.class().as_str(), "token request failed: {e}"),
                }
            }
        }
        st.epoch += 1;
        st.in_flight = false;
        let epoch = st.epoch;
        st.last_result = Some(result);
        drop(st);
        slot.done.send_replace(epoch);
    }

    fn status_of(&self, conn: &Conn) -> ConnectionStatus {
        let now = self.clock.monotonic();
        let disc = lock(&conn.discovered).clone();
        let tokens = conn
            .all_slots()
            .iter()
            .map(|slot| {
                let st = lock(&slot.state);
                let cur = st.current.as_ref().filter(|h| now < h.0.renew_at);
                TokenStatus {
                    scopes: slot.scopes.as_slice().to_vec(),
                    has_token: cur.is_some(),
                    generation: st.stats.generation,
                    expires_at_unix: cur.map(TokenHandle::expires_at_unix),
                    next_renewal_unix: cur.map(TokenHandle::renew_at_unix),
                    expires_in_secs: cur.map(|h| now.until(h.expires_at()).as_secs()),
                    renews_in_secs: cur.map(|h| now.until(h.renew_at()).as_secs()),
                    last_renewal_unix: st.stats.last_renewal_unix,
                    renewal_count: st.stats.renewal_count,
                    failure_count: st.stats.failure_count,
                    consecutive_failures: st.stats.consecutive_failures,
                    invalidations: st.stats.invalidations,
                    last_error: st.stats.last_error,
                    last_error_at_unix: st.stats.last_error_at_unix,
                    granted_scopes: st.granted.as_deref().cloned(),
                    in_flight: st.in_flight,
                }
            })
            .collect();
        let g = lock(&conn.gate);
        let paused_for_secs = g.failure.as_ref().and_then(|f| f.retry_at).filter(|t| now < *t).map(|t| secs_ceil(now.until(t)));
        ConnectionStatus {
            connection: conn.s.name.clone(),
            vendor: conn.s.vendor,
            token_endpoint: disc.as_ref().map(|d| d.token_endpoint.clone()),
            discovery_warnings: disc.as_ref().map(|d| d.warnings.clone()).unwrap_or_default(),
            tokens,
            budget: conn.budget.status(now),
            paused_for_secs,
            needs_attention: g.failure.as_ref().is_some_and(|f| f.retry_at.is_none()),
            last_failure: g.last_record.as_deref().cloned(),
        }
    }
}

async fn run_flight(inner: Arc<Inner>, conn: Arc<Conn>, slot: Arc<Slot>, config_retry: bool) {
    let mut flight = Flight { inner: &inner, conn: &conn, slot: &slot, config_retry, finished: false };
    let result = inner.fetch(&conn, &slot).await;
    flight.finish(result);
}
