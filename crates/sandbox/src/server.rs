//! The listener: routing, the gate every request passes (request log, eClinicalWorks'
//! rate budget, injected faults), starting and stopping.

use crate::config::{ClientRegistration, RateLimitRetryAfter, SandboxConfig};
use crate::data::{DataError, Dataset, PatientSummary};
use crate::faults::{FaultStatus, Faults, RequestKind, RequestRecord, RetryAfter, Stats};
use crate::fhir;
use crate::jwks::JwksCache;
use crate::oauth::{self, VendorCtx};
use crate::outcome::{Issue, LogInfo, outcome_response};
use crate::state::{RegistrationError, Shared, lock};
use crate::vendor::Vendor;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use medicodax_policy::scope::ScopeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest request target (path and query) served; longer ones get 414.
const MAX_URI_BYTES: usize = 32 * 1024;

/// Why a sandbox did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No JOSE crypto provider is compiled in (a build defect).
    #[error("no jsonwebtoken crypto provider: the build must enable exactly one backend (aws_lc_rs)")]
    Crypto,
    /// The embedded data did not load (a build defect).
    #[error("embedded data: {0}")]
    Data(#[from] DataError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        reason: String,
    },
    /// The HTTP client for JWKS fetches could not be built.
    #[error("cannot build the JWKS HTTP client: {0}")]
    HttpClient(String),
    /// A setting is out of range.
    #[error("invalid sandbox setting: {0}")]
    Config(String),
    /// A client registration was refused.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

/// Starts sandboxes.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox;

impl Sandbox {
    /// Loads the embedded patients (once per process), binds `config.listen`, registers
    /// the configured clients and serves both vendor sides until the handle is shut
    /// down or dropped. Must be called from within a Tokio runtime (the listener is a
    /// spawned task).
    pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, StartError> {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(StartError::Crypto);
        }
        for v in Vendor::ALL {
            let s = config.vendor(v);
            if s.default_page_size == 0 || s.max_page_size == 0 {
                return Err(StartError::Config(format!("{v}: page sizes must be at least 1")));
            }
        }
        let data = Dataset::embedded()?;
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| StartError::Bind { addr: config.listen, reason: e.to_string() })?;
        let addr = listener.local_addr().map_err(|e| StartError::Bind { addr: config.listen, reason: e.to_string() })?;
        let origin = config.public_origin.as_deref().map_or_else(|| format!("http://{addr}"), |o| o.trim_end_matches('/').to_owned());
        let jwks = JwksCache::new(config.clock.clone(), config.jwks_refetch_cooldown, config.jwks_max_cache, config.jwks_fetch_timeout)
            .map_err(|e| StartError::HttpClient(e.to_string()))?;
        let shared = Arc::new(Shared::new(&config, origin, data, jwks));
        for c in config.clients {
            shared.register(c)?;
        }
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        tracing::info!(%addr, "sandbox EHRs listening");
        Ok(SandboxHandle { shared, addr, stop: Some(tx), task: Some(task) })
    }
}

fn vendor_routes(shared: &Arc<Shared>, vendor: Vendor) -> Router {
    let base = vendor.fhir_path();
    Router::new()
        .route(vendor.token_path(), any(oauth::token_endpoint))
        .route(&format!("{base}/.well-known/smart-configuration"), get(oauth::smart_configuration))
        .route(&format!("{base}/metadata"), get(fhir::metadata))
        .route(&format!("{base}/{{type}}"), get(fhir::search_get))
        .route(&format!("{base}/{{type}}/_search"), post(fhir::search_post))
        .route(&format!("{base}/{{type}}/{{id}}"), get(fhir::read))
        .with_state(VendorCtx { vendor, shared: shared.clone() })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(vendor_routes(&shared, Vendor::Epic))
        .merge(vendor_routes(&shared, Vendor::EClinicalWorks))
        .fallback(|| async { outcome_response(StatusCode::NOT_FOUND, Issue::new("error", "not-found", "no such endpoint")) })
        .layer(middleware::from_fn_with_state(shared, gate))
}

fn classify(path: &str, vendor: Option<Vendor>) -> RequestKind {
    let Some(v) = vendor else { return RequestKind::Other };
    if path == v.token_path() {
        RequestKind::Token
    } else if path.ends_with("/.well-known/smart-configuration") {
        RequestKind::Discovery
    } else if path == format!("{}/metadata", v.fhir_path()) {
        RequestKind::Metadata
    } else if path.starts_with(&format!("{}/", v.fhir_path())) {
        RequestKind::Fhir
    } else {
        RequestKind::Other
    }
}

fn retry_after_value(shared: &Shared, ra: RetryAfter) -> HeaderValue {
    let text = match ra {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::HttpDateIn(s) => {
            let at = u64::try_from(shared.clock.now_unix()).unwrap_or(0).saturating_add(s);
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(at))
        }
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("1"))
}

fn error_for(kind: RequestKind, status: StatusCode, code: &'static str, text: &str) -> Response {
    if kind == RequestKind::Token {
        let body = serde_json::json!({"error": code, "error_description": text});
        (status, axum::Json(body)).into_response()
    } else {
        outcome_response(status, Issue::new("error", if status == StatusCode::TOO_MANY_REQUESTS { "throttled" } else { "transient" }, text))
    }
}

async fn gate(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let at_unix_ms = shared.clock.now_unix_millis();
    let method = req.method().to_string();
    let path: String = req.uri().path().chars().take(2000).collect();
    let query: Option<String> = req.uri().query().map(|q| q.chars().take(2000).collect());
    let vendor = Vendor::ALL.into_iter().find(|v| path == v.prefix() || path.starts_with(&format!("{}/", v.prefix())));
    let kind = classify(&path, vendor);
    let resp = admit(&shared, vendor, kind, req, next).await;
    let info = resp.extensions().get::<LogInfo>().cloned().unwrap_or_default();
    let status = resp.status().as_u16();
    tracing::debug!(%method, %path, status, token = info.token.as_deref(), "sandbox request");
    lock(&shared.log).push(RequestRecord {
        seq: 0,
        at_unix_ms,
        vendor,
        kind,
        method,
        path,
        query,
        status,
        token: info.token,
        client_id: info.client_id,
        oauth_error: info.oauth_error.map(str::to_owned),
    });
    resp
}

async fn admit(shared: &Shared, vendor: Option<Vendor>, kind: RequestKind, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path().len() + req.uri().query().map_or(0, str::len);
    if uri_len > MAX_URI_BYTES {
        return outcome_response(StatusCode::URI_TOO_LONG, Issue::new("error", "too-long", "the request target is longer than 32 KiB"));
    }
    let Some(v) = vendor else { return next.run(req).await };
    let settings = shared.settings(v);
    if let Some(limit) = settings.rate_limit_per_minute {
        let taken = lock(&shared.budgets[v.index()]).take(limit, shared.clock.monotonic());
        if let Err(left) = taken {
            let mut resp = error_for(kind, StatusCode::TOO_MANY_REQUESTS, "rate_limited", &format!("the practice's budget of {limit} requests per minute is spent"));
            let ra = match settings.rate_limit_retry_after {
                RateLimitRetryAfter::None => None,
                RateLimitRetryAfter::RestOfWindow => Some(RetryAfter::Seconds(left)),
                RateLimitRetryAfter::Seconds(s) => Some(RetryAfter::Seconds(s)),
            };
            if let Some(ra) = ra {
                resp.headers_mut().insert(header::RETRY_AFTER, retry_after_value(shared, ra));
            }
            return resp;
        }
    }
    let (latency, injected) = {
        let mut faults = lock(&shared.faults);
        let f = &mut faults.sides[v.index()];
        (f.latency, if kind == RequestKind::Fhir { f.injected.pop_front() } else { None })
    };
    if let Some(d) = latency {
        shared.clock.sleep(d).await;
    }
    if let Some((status, ra)) = injected {
        let (code, text) = match status {
            FaultStatus::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too many requests (injected fault)"),
            FaultStatus::ServiceUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "service unavailable (injected fault)"),
        };
        let mut resp = error_for(kind, code, "temporarily_unavailable", text);
        if let Some(ra) = ra {
            resp.headers_mut().insert(header::RETRY_AFTER, retry_after_value(shared, ra));
        }
        return resp;
    }
    next.run(req).await
}

/// A running sandbox. Dropping it stops the listener; [`SandboxHandle::shutdown`] also
/// waits for it to finish.
pub struct SandboxHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxHandle").field("addr", &self.addr).field("origin", &self.shared.origin).finish_non_exhaustive()
    }
}

impl SandboxHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The origin used in absolute URLs (`http://127.0.0.1:PORT` unless configured).
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// A side's FHIR base URL (no trailing slash).
    pub fn fhir_base(&self, vendor: Vendor) -> String {
        self.shared.fhir_base(vendor)
    }

    /// A side's token endpoint URL: the exact `aud` its assertions must carry.
    pub fn token_url(&self, vendor: Vendor) -> String {
        self.shared.token_url(vendor)
    }

    /// A side's SMART discovery URL.
    pub fn smart_configuration_url(&self, vendor: Vendor) -> String {
        format!("{}/.well-known/smart-configuration", self.shared.fhir_base(vendor))
    }

    /// `…/epic/api/FHIR/R4`.
    pub fn epic_fhir_base(&self) -> String {
        self.fhir_base(Vendor::Epic)
    }

    /// `…/ecw/fhir/r4/PRAC01`.
    pub fn ecw_fhir_base(&self) -> String {
        self.fhir_base(Vendor::EClinicalWorks)
    }

    /// `…/epic/oauth2/token`.
    pub fn epic_token_url(&self) -> String {
        self.token_url(Vendor::Epic)
    }

    /// `…/ecw/oauth2/token`.
    pub fn ecw_token_url(&self) -> String {
        self.token_url(Vendor::EClinicalWorks)
    }

    /// Registers (or replaces) a client while running, e.g. once the gateway's JWKS URL
    /// is known.
    pub fn register_client(&self, registration: ClientRegistration) -> Result<(), RegistrationError> {
        self.shared.register(registration)
    }

    /// The fault switches.
    pub fn faults(&self) -> Faults {
        Faults { shared: self.shared.clone() }
    }

    /// A snapshot of the request log and counters.
    pub fn stats(&self) -> Stats {
        let tokens = lock(&self.shared.tokens);
        Stats {
            requests: lock(&self.shared.log).snapshot(),
            tokens_issued: [tokens.issued(Vendor::Epic), tokens.issued(Vendor::EClinicalWorks)],
            jwks_fetches: self.shared.jwks.fetch_counts(),
        }
    }

    /// Empties the request log (counters of issued tokens and JWKS fetches stay).
    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
    }

    /// The embedded dataset.
    pub fn dataset(&self) -> &'static Dataset {
        self.shared.data
    }

    /// The patients a side serves (with their encounters, earliest first), for worklists.
    pub fn patients(&self, vendor: Vendor) -> &'static [PatientSummary] {
        self.shared.data.patients(vendor)
    }

    /// Issues an access token without a token request, for FHIR tests that are not about
    /// authentication. `scopes` are SMART scopes (`system/Observation.rs …`); the token
    /// lives as long as the side's normal tokens and is counted as issued. Returns the
    /// token value.
    pub fn mint_test_token(&self, vendor: Vendor, client_id: &str, scopes: &str) -> String {
        let lifetime = i64::try_from(self.shared.settings(vendor).token_lifetime.as_secs()).unwrap_or(i64::MAX);
        let now = self.shared.clock.now_unix();
        lock(&self.shared.tokens).issue(vendor, client_id, ScopeSet::parse(scopes), now.saturating_add(lifetime), now).0
    }

    /// Stops the listener and waits until it has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
