//! The dashboard: server-rendered pages (askama templates in `templates/`, one small
//! stylesheet and script in `assets/`), usable without JavaScript.
//!
//! Who sees what ([`Page::roles`]; `admin` sees everything):
//!
//! | page | path | roles |
//! |---|---|---|
//! | Integrations | `/integrations` | admin |
//! | Time savings | `/savings` | admin, coder |
//! | Worksheets | `/worksheets`, `/worksheets/{connection}/{encounter}` | admin, coder |
//! | Audit | `/audit`, `/audit/entries/{seq}` | admin, auditor |
//! | Agents | `/agents` | admin, auditor |
//! | Users | `/users` | admin |
//! | Me | `/me` | every signed-in user |
//!
//! Sign-in is at `/login` (built-in users; see [`crate::sessions`]); `/logout` ends the
//! session. With `[auth.oidc]` configured, a request may instead carry
//! `Authorization: Bearer` with a JWT from that issuer ([`crate::oidc`]): its roles come
//! from the token, it needs no CSRF value (a browser never adds that header on its own),
//! and its first use is audited as `user.bearer`. A refused bearer token gets a 401 with
//! `WWW-Authenticate`, never a redirect.
//!
//! Every handler is thin: it checks the viewer's role, calls a small service function of
//! its page module, and renders a template. Pages that change something are
//! `POST` forms carrying the session's CSRF value. Responses carry a strict Content
//! Security Policy (scripts and styles only from `/assets/`), `X-Frame-Options: DENY`,
//! `nosniff` and `Cache-Control: no-store`.

pub mod agents;
pub mod audit;
pub mod auth;
pub mod fmt;
pub mod integrations;
pub mod me;
pub mod savings;
pub mod users;
pub mod worksheets;

use crate::calls::agent_keys::{CacheRules, HttpJwksFetcher};
use crate::oidc::OidcVerifier;
use crate::service::Gateway;
use crate::sessions::{SessionClaims, Sessions};
use crate::users::User;
use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;

/// The dashboard's stylesheet.
pub const STYLESHEET: &str = include_str!("../../assets/dashboard.css");
/// The dashboard's script (live refresh only; every page works without it).
pub const SCRIPT: &str = include_str!("../../assets/dashboard.js");

/// The largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The dashboard's state: the gateway, sessions, and the cached audit verification.
pub struct Dashboard {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// Sessions and login limits.
    pub sessions: Sessions,
    /// The latest audit verification (cached for a minute).
    pub verification: audit::VerifyCache,
    /// Bearer JWTs from `[auth.oidc]`, when configured.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// Bearer tokens already audited (by hash, until they expire).
    bearer_seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

impl Dashboard {
    /// The dashboard state of `gw`, with the default login limits.
    pub fn new(gw: Arc<Gateway>) -> Self {
        let sessions = Sessions::new(Arc::clone(&gw.keys), Arc::clone(&gw.clock), gw.audience(), gw.config.auth.session_secs, Default::default());
        let oidc = gw.config.auth.oidc.as_ref().and_then(|c| match HttpJwksFetcher::new() {
            Ok(f) => {
                let rules = CacheRules { cooldown: std::time::Duration::from_secs(gw.config.gateway.jwks_refetch_cooldown_secs), ..CacheRules::default() };
                Some(Arc::new(OidcVerifier::new(c, Arc::new(f), rules, Arc::clone(&gw.clock))))
            }
            Err(e) => {
                tracing::error!(error = %e, "bearer tokens cannot be checked; they will be refused");
                None
            }
        });
        Dashboard { gw, sessions, verification: audit::VerifyCache::default(), oidc, bearer_seen: Default::default() }
    }

    /// Whether this bearer token (by hash) is seen for the first time; remembers it until `exp`.
    fn first_bearer_use(&self, hash: &str, exp: i64, now: i64) -> bool {
        let mut seen = self.bearer_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= 10_000 {
            seen.retain(|_, e| *e >= now);
        }
        seen.insert(hash.to_owned(), exp).is_none()
    }
}

/// The dashboard routes over a new [`Dashboard`] state.
pub fn router(gw: Arc<Gateway>) -> Router {
    router_with(Arc::new(Dashboard::new(gw)))
}

/// The dashboard routes over `state` (tests keep a handle on the state).
pub fn router_with(state: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/dashboard.css", get(stylesheet))
        .route("/assets/dashboard.js", get(script))
        .route("/favicon.ico", get(favicon))
        .route("/integrations", get(integrations::page))
        .route("/integrations/rotate", post(integrations::rotate))
        .route("/savings", get(savings::page))
        .route("/worksheets", get(worksheets::list_page))
        .route("/worksheets/{connection}/{encounter}", get(worksheets::detail_page))
        .route("/worksheets/{connection}/{encounter}/review", post(worksheets::review))
        .route("/audit", get(audit::page))
        .route("/audit/verify", post(audit::verify_now))
        .route("/audit/entries/{seq}", get(audit::entry_page))
        .route("/agents", get(agents::page))
        .route("/me", get(me::page))
        .route("/users", get(users::page).post(users::add))
        .route("/users/{name}/password", post(users::set_password))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], STYLESHEET).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], SCRIPT).into_response()
}

/// The icon: a small SVG, so browsers do not ask for a missing `/favicon.ico`.
const FAVICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><rect width='16' height='16' rx='3' fill='#13294b'/><path d='M4 12V4l4 5 4-5v8' stroke='#fff' stroke-width='1.6' fill='none'/></svg>";

async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], FAVICON).into_response()
}

/// `/`: the first page the viewer may see.
async fn home(viewer: Viewer) -> Redirect {
    let first = Page::NAV.iter().find(|p| viewer.may_see(**p)).copied().unwrap_or(Page::Me);
    Redirect::to(first.href())
}

/// A dashboard page, for navigation and access checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// EHR connections, tokens, budgets, published keys.
    Integrations,
    /// Minutes saved.
    Savings,
    /// Coding worksheets and their review.
    Worksheets,
    /// The audit log.
    Audit,
    /// Registered agents.
    Agents,
    /// User management.
    Users,
    /// The signed-in user.
    Me,
}

impl Page {
    /// The pages in navigation order.
    pub const NAV: [Page; 7] = [Page::Integrations, Page::Savings, Page::Worksheets, Page::Audit, Page::Agents, Page::Users, Page::Me];

    /// The page's path.
    pub const fn href(self) -> &'static str {
        match self {
            Page::Integrations => "/integrations",
            Page::Savings => "/savings",
            Page::Worksheets => "/worksheets",
            Page::Audit => "/audit",
            Page::Agents => "/agents",
            Page::Users => "/users",
            Page::Me => "/me",
        }
    }

    /// The page's name.
    pub const fn label(self) -> &'static str {
        match self {
            Page::Integrations => "Integrations",
            Page::Savings => "Time savings",
            Page::Worksheets => "Worksheets",
            Page::Audit => "Audit",
            Page::Agents => "Agents",
            Page::Users => "Users",
            Page::Me => "Me",
        }
    }

    /// Roles that may see the page besides `admin`; empty: every signed-in user.
    pub const fn roles(self) -> &'static [&'static str] {
        match self {
            Page::Integrations | Page::Users => &[],
            Page::Savings | Page::Worksheets => &["coder"],
            Page::Audit | Page::Agents => &["auditor"],
            Page::Me => &["*"],
        }
    }
}

/// The signed-in user of a request: the verified session, and the user as stored now
/// (roles are read from the store on every request, so a removed role takes effect at
/// once).
#[derive(Clone, Debug)]
pub struct Viewer {
    /// The session's claims.
    pub session: SessionClaims,
    /// The user.
    pub user: User,
    /// Signed in by an `[auth.oidc]` bearer token (no cookie, no CSRF value).
    pub bearer: bool,
}

impl Viewer {
    /// Whether the viewer holds `role`.
    pub fn has(&self, role: &str) -> bool {
        self.user.has_role(role)
    }

    /// Whether the viewer may see `page`.
    pub fn may_see(&self, page: Page) -> bool {
        self.has("admin") || page.roles().iter().any(|r| *r == "*" || self.has(r))
    }

    /// `Ok` when the viewer may see `page`, else a 403.
    pub fn require(&self, page: Page) -> Result<(), PageError> {
        if self.may_see(page) { Ok(()) } else { Err(PageError::Forbidden) }
    }

    /// The navigation bar for this viewer, `current` highlighted.
    pub fn nav(&self, current: Page) -> Nav {
        Nav {
            user: self.user.name.clone(),
            roles: self.user.roles.join(", "),
            csrf: self.session.csrf.clone(),
            items: Page::NAV.iter().filter(|p| self.may_see(**p)).map(|p| NavItem { href: p.href(), label: p.label(), current: *p == current }).collect(),
        }
    }

    /// `Ok` when `submitted` is this session's CSRF value, else a 403.
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), PageError> {
        if self.bearer || Sessions::csrf_ok(&self.session, submitted) { Ok(()) } else { Err(PageError::Csrf) }
    }
}

impl FromRequestParts<Arc<Dashboard>> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Dashboard>) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            return bearer_viewer(state, auth).await;
        }
        let token = state.sessions.token_from(&parts.headers).ok_or(PageError::Unauthenticated)?;
        let session = state.sessions.verify(token).map_err(|_| PageError::Unauthenticated)?;
        let user = state.gw.users.get(&session.sub).await.map_err(|e| PageError::internal("user store", &e))?.ok_or(PageError::Unauthenticated)?;
        Ok(Viewer { session, user, bearer: false })
    }
}

/// The viewer named by an `Authorization: Bearer` JWT from `[auth.oidc]`.
async fn bearer_viewer(state: &Dashboard, auth: &HeaderValue) -> Result<Viewer, PageError> {
    let token = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim).unwrap_or("");
    let verified = match (&state.oidc, token.is_empty()) {
        (_, true) => Err(crate::oidc::OidcError::Claims("the Authorization header must be `Bearer <JWT>`".into())),
        (None, false) => Err(crate::oidc::OidcError::NotConfigured),
        (Some(v), false) => v.verify(token).await,
    };
    let id = match verified {
        Ok(id) => id,
        Err(e) => {
            // Not audited (that would let anyone fill the log): counted and logged without content.
            metrics::counter!("medicodax_dashboard_bearer_refused_total").increment(1);
            tracing::warn!(reason = %e, "dashboard bearer token refused");
            return Err(if e.is_forbidden() { PageError::Forbidden } else { PageError::Bearer(e.to_string()) });
        }
    };
    let now = state.gw.clock.now_unix();
    let hash = medicodax_wire::hash::sha256_hex(token.as_bytes());
    if state.first_bearer_use(&hash, id.exp, now) {
        let issuer = state.oidc.as_ref().map(|o| o.issuer().to_owned()).unwrap_or_default();
        audit_event(state, "user.bearer", &id.name, serde_json::json!({"issuer": issuer, "roles": id.roles, "expires": id.exp, "token_hash": &hash[..16]})).await?;
    }
    let session = SessionClaims { iss: state.oidc.as_ref().map(|o| o.issuer().to_owned()).unwrap_or_default(), sub: id.name.clone(), roles: id.roles.clone(), iat: id.iat, exp: id.exp, csrf: String::new(), jti: format!("bearer:{}", &hash[..16]) };
    Ok(Viewer { session, user: User { name: id.name, roles: id.roles, created_ms: 0 }, bearer: true })
}

/// The client's address (from the listener), or `unknown` when not served over TCP.
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        Ok(ClientAddr(addr.unwrap_or_else(|| "unknown".to_owned())))
    }
}

/// The navigation bar and the signed-in user, shown by every page.
#[derive(Clone, Debug, Default)]
pub struct Nav {
    /// The user's name (empty when nobody is signed in).
    pub user: String,
    /// The user's roles, comma-separated.
    pub roles: String,
    /// The session's CSRF value (for the logout form).
    pub csrf: String,
    /// The pages the user may open.
    pub items: Vec<NavItem>,
}

/// One navigation link.
#[derive(Clone, Debug)]
pub struct NavItem {
    /// Its path.
    pub href: &'static str,
    /// Its label.
    pub label: &'static str,
    /// Whether it is the page shown.
    pub current: bool,
}

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No valid session: redirect to the login page.
    #[error("sign in first")]
    Unauthenticated,
    /// The viewer's roles do not include the page.
    #[error("your roles do not include this page")]
    Forbidden,
    /// A form without this session's CSRF value.
    #[error("the form was not sent from this session's page; reload the page and try again")]
    Csrf,
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// Bad input.
    #[error("{0}")]
    BadRequest(String),
    /// The state changed meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// A fault on our side (the class is logged; the page says only that it failed).
    #[error("the page could not be produced; the gateway log has the details")]
    Internal,
    /// A bearer token that did not verify: 401 with `WWW-Authenticate`.
    #[error("{0}")]
    Bearer(String),
}

impl PageError {
    /// Logs a fault's class (never input or data) and returns [`PageError::Internal`].
    pub fn internal(what: &'static str, e: &dyn std::fmt::Display) -> PageError {
        tracing::error!(what, error = %e, "dashboard page failed");
        PageError::Internal
    }

    fn status(&self) -> StatusCode {
        match self {
            PageError::Unauthenticated => StatusCode::SEE_OTHER,
            PageError::Bearer(_) => StatusCode::UNAUTHORIZED,
            PageError::Forbidden | PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Conflict(_) => StatusCode::CONFLICT,
            PageError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    status: u16,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let PageError::Unauthenticated = self {
            return Redirect::to("/login").into_response();
        }
        let status = self.status();
        let page = ErrorPage { nav: Nav::default(), title: status.canonical_reason().unwrap_or("Error").to_owned(), status: status.as_u16(), message: self.to_string() };
        let mut resp = render(&page);
        *resp.status_mut() = status;
        if let PageError::Bearer(why) = &self {
            // RFC 6750 §3: the reason, quoted (our messages hold no quotes or token content).
            let v = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", why.replace(['"', '\\'], "'"));
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

/// Renders a template as an HTML response (a 500 if rendering fails).
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "the page could not be rendered\n").into_response()
        }
    }
}

/// The result type of page handlers.
pub type PageResult = Result<Response, PageError>;

/// The values of an `application/x-www-form-urlencoded` body or query, in order.
/// Never fails: malformed escapes are decoded lossily, as browsers do.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).take(10_000).collect()
}

/// The first value named `name`.
pub fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Writes a system event to the audit log (`subject` and `detail` never hold secrets or PHI).
pub async fn audit_event(state: &Dashboard, event: &str, subject: &str, detail: serde_json::Value) -> Result<(), PageError> {
    let e = medicodax_wire::audit::SystemEvent { time_ms: state.gw.clock.now_unix_millis(), event: event.to_owned(), subject: subject.to_owned(), detail };
    state.gw.audit.append_event(e).await.map(|_| ()).map_err(|e| PageError::internal("audit event", &e))
}

/// The state extractor used by handlers.
pub type Dash = State<Arc<Dashboard>>;
