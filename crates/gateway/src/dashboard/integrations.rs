//! Integrations (`/integrations`, admin only): the health of each EHR connection.
//!
//! Per connection: vendor, FHIR base, token endpoint, an overall state (`ok`,
//! `no-token-yet`, `failing`), and for each cached token its time to expiry, the next
//! renewal, the last renewal, renewals, failures and the latest error class; the rate
//! budget used in the last minute against the vendor's limit; the latest refused token
//! request (OAuth error and hint, no secrets). Below, the key ids we publish at
//! `/.well-known/jwks.json` and whose key each is. Everything comes from the auth
//! manager's status report ([`medicodax_smart::AuthManager::status`]), which holds no
//! token or key material. The page refreshes itself every 15 s when scripts run.

use super::{Dash, Nav, Page, PageError, PageResult, Viewer, fmt, form_pairs, form_value, render};
use axum::body::Bytes;
use axum::response::{IntoResponse, Redirect};
use crate::service::Gateway;
use askama::Template;
use medicodax_smart::{ConnectionStatus, TokenStatus};

/// One cached token.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenView {
    /// The scope set it is cached under.
    pub scopes: String,
    /// Whether a token is held and before its renewal point.
    pub has_token: bool,
    /// Time to expiry, formatted.
    pub expires_in: String,
    /// Seconds to expiry.
    pub expires_in_secs: Option<u64>,
    /// When it expires.
    pub expires_at: String,
    /// Time to the next renewal, formatted.
    pub renews_in: String,
    /// When it will be renewed.
    pub next_renewal: String,
    /// When the latest token was requested.
    pub last_renewal: String,
    /// Successful token requests.
    pub renewals: u64,
    /// Failed token requests.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Tokens dropped after a 401.
    pub invalidations: u64,
    /// The latest failure's class and time.
    pub last_error: Option<String>,
    /// The scopes granted.
    pub granted: String,
}

/// The rate budget.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetView {
    /// Requests in the last minute.
    pub used: u32,
    /// The per-minute limit, if any.
    pub limit: Option<u32>,
    /// `used` as a share of `limit`, percent.
    pub percent: Option<u32>,
    /// Token requests in the last minute.
    pub token_used: u32,
    /// The token requests limit, if any.
    pub token_limit: Option<u32>,
    /// Least seconds between token requests, if any.
    pub token_min_interval: Option<u64>,
    /// Seconds left of a block the EHR imposed.
    pub blocked_for: Option<u64>,
}

/// One connection.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionView {
    /// Its name.
    pub name: String,
    /// Its vendor profile.
    pub vendor: String,
    /// Its FHIR base URL.
    pub fhir_base: String,
    /// Its token endpoint, once discovered.
    pub token_endpoint: String,
    /// `ok`, `no-token-yet` or `failing`.
    pub state: String,
    /// Cached tokens.
    pub tokens: Vec<TokenView>,
    /// Renewals over all tokens.
    pub renewals: u64,
    /// Failures over all tokens.
    pub failures: u64,
    /// The budget.
    pub budget: BudgetView,
    /// Seconds until token requests resume after a failure.
    pub paused_for: Option<u64>,
    /// A configuration error stopped token requests.
    pub needs_attention: bool,
    /// The latest refused token request, summarised.
    pub last_failure: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// Discovery warnings.
    pub warnings: Vec<String>,
}

/// One published key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyView {
    /// Its `kid`.
    pub kid: String,
    /// Key type.
    pub kty: String,
    /// Algorithm.
    pub alg: String,
    /// Whose key it is.
    pub owner: String,
}

/// Everything the page shows.
#[derive(Clone, Debug, PartialEq)]
pub struct IntegrationsView {
    /// The connections, in configuration order.
    pub connections: Vec<ConnectionView>,
    /// The keys we publish.
    pub keys: Vec<KeyView>,
}

fn opt_secs(s: Option<u64>) -> String {
    s.map(fmt::secs).unwrap_or_else(|| "-".to_owned())
}

fn opt_time(t: Option<i64>) -> String {
    t.map(fmt::time_s).unwrap_or_else(|| "never".to_owned())
}

fn token_view(t: &TokenStatus) -> TokenView {
    TokenView {
        scopes: if t.scopes.is_empty() { "(registered scopes)".to_owned() } else { t.scopes.join(" ") },
        has_token: t.has_token,
        expires_in: opt_secs(t.expires_in_secs),
        expires_in_secs: t.expires_in_secs,
        expires_at: t.expires_at_unix.map(fmt::time_s).unwrap_or_else(|| "-".to_owned()),
        renews_in: opt_secs(t.renews_in_secs),
        next_renewal: t.next_renewal_unix.map(fmt::time_s).unwrap_or_else(|| "-".to_owned()),
        last_renewal: opt_time(t.last_renewal_unix),
        renewals: t.renewal_count,
        failures: t.failure_count,
        consecutive_failures: t.consecutive_failures,
        invalidations: t.invalidations,
        last_error: t.last_error.map(|c| format!("{} at {}", crate::tools::error_class_name(c), opt_time(t.last_error_at_unix))),
        granted: t.granted_scopes.as_ref().map(|g| g.scopes.join(" ")).unwrap_or_default(),
    }
}

/// The view of one connection's status.
pub fn connection_view(s: &ConnectionStatus, fhir_base: &str) -> ConnectionView {
    let (state, _) = crate::tools::status_summary(s);
    let b = &s.budget;
    ConnectionView {
        name: s.connection.clone(),
        vendor: s.vendor.as_str().to_owned(),
        fhir_base: fhir_base.to_owned(),
        token_endpoint: s.token_endpoint.clone().unwrap_or_else(|| "(not discovered yet)".to_owned()),
        state,
        tokens: s.tokens.iter().map(token_view).collect(),
        renewals: s.tokens.iter().map(|t| t.renewal_count).sum(),
        failures: s.tokens.iter().map(|t| t.failure_count).sum(),
        budget: BudgetView {
            used: b.used_last_minute,
            limit: b.shared_per_minute,
            percent: b.shared_per_minute.filter(|l| *l > 0).map(|l| (u64::from(b.used_last_minute) * 100 / u64::from(l)).min(100) as u32),
            token_used: b.token_requests_last_minute,
            token_limit: b.token_per_minute,
            token_min_interval: b.token_min_interval_secs,
            blocked_for: b.blocked_for_secs,
        },
        paused_for: s.paused_for_secs,
        needs_attention: s.needs_attention,
        last_failure: s.last_failure.as_ref().map(|f| format!("HTTP {} {} at {}", f.http_status, f.error, fmt::time_s(f.at_unix))),
        hint: s.last_failure.as_ref().map(|f| f.hint.clone()),
        warnings: s.discovery_warnings.clone(),
    }
}

/// The page's data, from the gateway's state now.
pub fn view(gw: &Gateway) -> IntegrationsView {
    let connections = gw.auth.status().iter().map(|s| connection_view(s, gw.ehrs.get(&s.connection).map(|e| e.fhir_base.as_str()).unwrap_or("-"))).collect();
    let gateway_kids: Vec<String> = gw.keys.verifying_keys().iter().filter_map(|k| k.kid().map(str::to_owned)).collect();
    let (set, _) = gw.keys.jwks();
    let keys = set
        .keys
        .iter()
        .map(|k| {
            let v = serde_json::to_value(k).unwrap_or_default();
            let field = |n: &str| v.get(n).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
            let kid = k.kid().unwrap_or("-").to_owned();
            let owner = if gateway_kids.contains(&kid) { "gateway (receipts, checkpoints, sessions)".to_owned() } else { "EHR connection (client assertions)".to_owned() };
            KeyView { kid, kty: field("kty"), alg: field("alg"), owner }
        })
        .collect();
    IntegrationsView { connections, keys }
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct IntegrationsPage {
    nav: Nav,
    view: IntegrationsView,
    now: String,
}

/// `GET /integrations`.
pub async fn page(state: Dash, viewer: Viewer) -> PageResult {
    viewer.require(Page::Integrations)?;
    let view = view(&state.gw);
    Ok(render(&IntegrationsPage { nav: viewer.nav(Page::Integrations), view, now: fmt::time_ms(state.gw.clock.now_unix_millis()) }))
}

/// `POST /integrations/rotate` (admin): starts a rotation of the gateway key
/// (`target=gateway`) or of a connection's managed assertion key (`target=NAME`). The new
/// key is published at once and signs after the publish lead; the step is audited.
pub async fn rotate(state: Dash, viewer: Viewer, body: Bytes) -> PageResult {
    viewer.require(Page::Integrations)?;
    let pairs = form_pairs(&body);
    viewer.check_csrf(form_value(&pairs, "csrf"))?;
    let target = form_value(&pairs, "target").unwrap_or_default();
    let result = if target == "gateway" {
        state.gw.rotate_gateway_key().await
    } else if state.gw.ehrs.contains_key(target) {
        state.gw.rotate_connection_key(target).await
    } else {
        return Err(PageError::BadRequest("choose the gateway key or a configured connection".into()));
    };
    match result {
        Ok(e) => {
            tracing::info!(ring = %e.ring, kid = %e.kid, by = %viewer.session.sub, "key rotation started from the dashboard");
            Ok(Redirect::to("/integrations").into_response())
        }
        Err(e) => Err(PageError::Conflict(e.to_string())),
    }
}
