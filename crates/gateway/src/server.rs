//! Building a gateway from a configuration, and serving it.
//!
//! [`build`] opens the store, the gateway key ring, the auth manager (one key ring per
//! connection), the FHIR clients, the policy, the agents' key sets, the audit log and the
//! user store; writes the startup events (keys created, policy warnings) to the audit
//! log; and creates the first `admin` with a random password when there are no users.
//! [`serve`] runs the HTTP server until the shutdown future completes, then signs a final
//! audit checkpoint.

use crate::calls::{AgentKeys, CacheRules, CallVerifier, HttpJwksFetcher};
use crate::keys::{GatewayKeys, PublishedKeys};
use crate::service::Gateway;
use crate::users::UserStore;
use medicodax_audit::{AuditLog, Db, LogConfig};
use medicodax_clock::SharedClock;
use medicodax_config::Config;
use medicodax_jose::{Alg, KeyRing, PublicJwk, RingEvent, RotationPolicy};
use medicodax_policy::Policy;
use medicodax_smart::AuthManager;
use medicodax_wire::audit::SystemEvent;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the gateway could not start. Configuration problems map to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot be used as written.
    #[error("{0}")]
    Config(String),
    /// Something at run time failed (store, keys, listener).
    #[error("{0}")]
    Runtime(String),
}

/// Where relative paths in the configuration are resolved, and where data lives.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The data folder (keys, SQLite).
    pub data_dir: PathBuf,
    /// The folder of the configuration file (relative `jwks` and `key` paths start here).
    pub config_dir: PathBuf,
}

impl Paths {
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_owned() } else { self.config_dir.join(p) }
    }
}

/// What a start produced besides the gateway.
#[derive(Debug, Default)]
pub struct Startup {
    /// The first admin's password, when it was just created (print it once).
    pub admin_password: Option<String>,
}

/// The auth manager's connection keys, published with ours.
struct ConnectionKeys(Arc<AuthManager>);

impl PublishedKeys for ConnectionKeys {
    fn public_keys(&self, _now: i64) -> Vec<PublicJwk> {
        self.0.jwks().keys
    }
}

/// Takes the data folder's exclusive lock (`gateway.lock`): one gateway per data folder,
/// since the audit log has one writer and key rings live there. Held until the returned
/// file is dropped; the operating system releases it if the process dies.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    let path = dir.join("gateway.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StartError::Runtime(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Config(format!(
            "another MEDICODAX gateway is running on the data folder {}; stop it, or use another --data-dir (key rotations: use the dashboard's Integrations page while it runs)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StartError::Runtime(format!("cannot lock {}: {e}", path.display()))),
    }
}

/// How the keys we publish rotate, from `[keys]` (everything we sign lives at most 300 s,
/// receipts and checkpoints aside, which are verified against retired keys too).
pub fn rotation_policy(config: &Config) -> RotationPolicy {
    RotationPolicy { publish_lead: config.keys.publish_lead, consumer_cache_ttl: config.keys.consumer_cache_ttl, max_token_lifetime: 300, jwks_max_age: config.keys.jwks_max_age }
}

/// The gateway key's algorithm, from `keys.gateway_alg` (validated: RS384 or ES384).
pub fn gateway_alg(config: &Config) -> Alg {
    if config.keys.gateway_alg == "ES384" { Alg::ES384 } else { Alg::RS384 }
}

/// The SQLite URL used when the configuration names no store.
pub fn default_store_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("medicodax.db").display())
}

/// The audit record of a key-ring step.
pub fn ring_event(e: &RingEvent, now_ms: i64) -> SystemEvent {
    SystemEvent {
        time_ms: now_ms,
        event: e.event.to_owned(),
        subject: format!("{}:{}", e.ring, e.kid),
        detail: serde_json::json!({"ring": e.ring, "kid": e.kid, "at": e.at, "detail": e.detail}),
    }
}

/// Builds a gateway from `config`.
pub async fn build(config: Config, paths: &Paths, clock: SharedClock) -> Result<(Arc<Gateway>, Startup), StartError> {
    let rt = |e: &dyn std::fmt::Display| StartError::Runtime(e.to_string());
    std::fs::create_dir_all(&paths.data_dir).map_err(|e| StartError::Config(format!("cannot create the data folder {}: {e}; pass a writable --data-dir", paths.data_dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&paths.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let lock = lock_data_dir(&paths.data_dir)?;
    // Install the metrics recorder now, so nothing counted before the first scrape is lost.
    let _ = crate::metrics::handle();
    let config = Arc::new(config);
    let audience = config.gateway.audience();
    let now = clock.now_unix();
    let rotation = rotation_policy(&config);

    // Keys.
    let (ring, mut ring_events) =
        KeyRing::open_or_create(&paths.data_dir.join("keys").join("gateway"), "gateway", gateway_alg(&config), rotation, now).map_err(|e| rt(&e))?;
    let keys = Arc::new(GatewayKeys::new(ring, Arc::clone(&clock)));
    let auth = Arc::new(AuthManager::from_config(&config, &paths.data_dir, Arc::clone(&clock)).map_err(|e| StartError::Config(e.to_string()))?);
    ring_events.extend(auth.take_startup_events());
    keys.publish_also(Arc::new(ConnectionKeys(Arc::clone(&auth))));
    let ehrs = crate::ehr::build_ehrs(&config.connections, &auth, &clock).map_err(StartError::Config)?;

    // Agents.
    let fetcher: Arc<HttpJwksFetcher> = Arc::new(HttpJwksFetcher::new().map_err(|e| rt(&e))?);
    let rules = CacheRules {
        cooldown: Duration::from_secs(config.gateway.jwks_refetch_cooldown_secs),
        max_stale: Duration::from_secs(config.gateway.jwks_max_stale_secs),
        ..CacheRules::default()
    };
    let mut agents = HashMap::new();
    for a in &config.agents {
        let keys = match (&a.jwks, &a.jwks_url) {
            (Some(file), _) => AgentKeys::from_file(&a.id, &paths.resolve(file), Arc::clone(&clock)).map_err(|e| StartError::Config(format!("agent {:?}: {e}", a.id)))?,
            (None, Some(url)) => AgentKeys::remote(&a.id, url, fetcher.clone(), rules, Arc::clone(&clock)),
            (None, None) => return Err(StartError::Config(format!("agent {:?} has neither jwks nor jwks_url", a.id))),
        };
        agents.insert(a.id.clone(), Arc::new(keys));
    }
    let verifier = CallVerifier::new(&audience, config.gateway.max_call_bytes, config.gateway.leeway_secs, agents, Arc::clone(&clock));
    let policy = Policy::from_config(&config);
    check_policy(&config, &policy)?;

    // Store, audit log, users.
    let url = config.store.url.clone().unwrap_or_else(|| default_store_url(&paths.data_dir));
    let db = Db::connect(&url).await.map_err(|e| rt(&e))?;
    let signer_keys = Arc::clone(&keys);
    // One log keeps one name in its checkpoints, even if the audience changes later
    // (another --listen address, a new hostname).
    let origin = match db.log_origin().await.map_err(|e| rt(&e))? {
        Some(o) => {
            if o != audience {
                tracing::info!(origin = %o, audience = %audience, "the audit log keeps its original name in checkpoints");
            }
            o
        }
        None => audience.clone(),
    };
    let audit = AuditLog::open(db.clone(), move |_now: i64| signer_keys.signer(), Arc::clone(&clock), LogConfig::new(origin)).await.map_err(|e| rt(&e))?;
    let users = UserStore::open(db.clone()).await.map_err(|e| rt(&e))?.with_cache(Duration::from_secs(5), Arc::clone(&clock));
    let worksheets = crate::worksheets::WorksheetStore::new(db);
    let mut startup = Startup::default();
    if users.is_empty().await.map_err(|e| rt(&e))? {
        let pw = crate::users::random_password().map_err(|e| rt(&e))?;
        users.add("admin", &pw, &["admin".to_owned()], clock.now_unix_millis()).await.map_err(|e| rt(&e))?;
        startup.admin_password = Some(pw);
        audit
            .append_event(SystemEvent { time_ms: clock.now_unix_millis(), event: "user.created".into(), subject: "admin".into(), detail: serde_json::json!({"roles": ["admin"]}) })
            .await
            .map_err(|e| rt(&e))?;
    }
    let now_ms = clock.now_unix_millis();
    for e in &ring_events {
        audit.append_event(ring_event(e, now_ms)).await.map_err(|e| rt(&e))?;
    }
    for w in policy.warnings() {
        let detail = serde_json::to_value(w).unwrap_or(serde_json::Value::Null);
        audit.append_event(SystemEvent { time_ms: now_ms, event: "policy.warning".into(), subject: "config".into(), detail }).await.map_err(|e| rt(&e))?;
    }
    let mut gw = Gateway::new(config, clock, verifier, policy, audit, auth, ehrs, keys, users, worksheets);
    gw.hold_lock(lock);
    let gw = Arc::new(gw);
    Ok((gw, startup))
}

/// Refuses at startup what the policy could not use as written: a mistyped scope, tool,
/// redaction path or patient id would otherwise fail open (a redaction that matches
/// nothing exposes the field) or silently grant nothing.
fn check_policy(config: &Config, policy: &Policy) -> Result<(), StartError> {
    use medicodax_policy::{PolicyWarning as W, ScopeError, scope::parse_scope};
    let mut problems = Vec::new();
    for (name, role) in &config.roles {
        for s in &role.scopes {
            if let Err(e) = parse_scope(s) {
                let why = if e == ScopeError::NotResourceScope { "is not a SMART resource scope such as system/Patient.rs".to_owned() } else { e.to_string() };
                problems.push(format!("roles.{name}.scopes: {s:?} {why}"));
            }
        }
    }
    for c in &config.connections {
        for s in &c.scopes {
            if let Err(e) = parse_scope(s) {
                problems.push(format!("connections[{:?}].scopes: {s:?}: {e}", c.name));
            }
        }
    }
    for w in policy.warnings() {
        match w {
            W::UnknownRedactionPath { role, path } => problems.push(format!("roles.{role}.redact: {path:?} is not an element of that FHIR R4 resource type (a misspelt redaction would expose the field)")),
            W::IgnoredRedactionPath { role, path, why } => problems.push(format!("roles.{role}.redact: {path:?}: {why}")),
            W::UnknownTool { role, tool } => problems.push(format!("roles.{role}.tools: unknown tool {tool:?}")),
            W::InvalidPatientId { role, index } => problems.push(format!("roles.{role}.patients[{index}] is not a FHIR id")),
            W::UnknownAgentRole { agent, role } => problems.push(format!("agents {agent:?}: no role named {role:?}")),
            W::IgnoredScope { .. } => {} // reported above with its path
            other => tracing::warn!(warning = ?other, "policy"),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StartError::Config(format!("the configuration has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))))
    }
}

/// Advances key rotation schedules once a minute and audits each step ([`Gateway::tick_keys`]).
pub fn spawn_key_ticker(gw: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            gw.clock.sleep(Duration::from_secs(60)).await;
            gw.tick_keys().await;
        }
    })
}

/// The full router: API, MCP and dashboard.
pub fn router(gw: Arc<Gateway>) -> axum::Router {
    crate::http::api_router(Arc::clone(&gw)).merge(crate::mcp::router(Arc::clone(&gw))).merge(crate::dashboard::router(gw))
}

/// Serves `gw` on `listener` until `shutdown` completes, then signs a last checkpoint.
pub async fn serve(gw: Arc<Gateway>, listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let ticker = spawn_key_ticker(Arc::clone(&gw));
    let app = router(Arc::clone(&gw));
    // Client addresses reach the handlers (the dashboard limits failed logins per address).
    let res = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(shutdown).await;
    ticker.abort();
    match gw.audit.shutdown().await {
        Ok(Some(cp)) => tracing::info!(size = cp.size, "signed the final audit checkpoint"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "could not sign the final audit checkpoint"),
    }
    res.map_err(|e| StartError::Runtime(format!("HTTP server failed: {e}")))
}
