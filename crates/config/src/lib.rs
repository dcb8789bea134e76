//! The MEDICODAX configuration file (`DESIGN.md` §2).
//!
//! One TOML file points the binary at real EHRs and a store; with no file the embedded
//! sandbox default applies. Every key can be overridden from the environment as
//! `MEDICODAX_` + the key path in upper case with `__` between levels
//! (`MEDICODAX_GATEWAY__LISTEN=0.0.0.0:8080`). Layers, lowest first: built-in defaults,
//! the file, the environment.
//!
//! This crate only describes and checks the file: unknown keys are refused (a typo is an
//! error, not a silently ignored setting), names and references are validated, and each
//! problem is reported with the key path and what to do. Vendor profile *values* (token
//! lifetimes, buffers, budgets) are resolved by the SMART client layer, which owns them;
//! here every one of them is an optional per-connection override.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variables that are command-line globals, not configuration keys.
pub const GLOBAL_ENV: [&str; 3] = ["CONFIG", "DATA_DIR", "LOG_FORMAT"];

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The gateway's listener and call limits.
    pub gateway: GatewayConfig,
    /// Where the audit log, replay store and users live.
    pub store: StoreConfig,
    /// EHR connections.
    pub connections: Vec<ConnectionConfig>,
    /// Roles by name.
    pub roles: BTreeMap<String, RoleConfig>,
    /// Registered agents.
    pub agents: Vec<AgentConfig>,
    /// Dashboard sign-in options.
    pub auth: AuthConfig,
    /// The coding pipeline's time baselines.
    pub coding: CodingConfig,
    /// Key rotation timing for the keys we publish.
    pub keys: KeysConfig,
}

/// `[gateway]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Listen address.
    pub listen: String,
    /// The `aud` agents must use; default `http://<listen>`.
    pub audience: Option<String>,
    /// Largest accepted call, in bytes, checked before decoding.
    pub max_call_bytes: usize,
    /// Clock-skew leeway for call `iat`/`nbf`/`exp`, seconds.
    pub leeway_secs: i64,
    /// Minimum seconds between refetches of an agent's JWKS URL on an unknown `kid`.
    pub jwks_refetch_cooldown_secs: u64,
    /// After this many seconds without a successful refetch, a cached agent JWKS is no longer trusted.
    pub jwks_max_stale_secs: u64,
    /// Hostnames the MCP endpoint accepts in `Host` (DNS-rebinding guard); loopback by default.
    pub allowed_hosts: Vec<String>,
    /// Origins the MCP endpoint accepts in `Origin`.
    pub allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:8080".into(),
            audience: None,
            max_call_bytes: 65536,
            leeway_secs: 30,
            jwks_refetch_cooldown_secs: 30,
            jwks_max_stale_secs: 24 * 3600,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// The audience agents must put in `aud`.
    pub fn audience(&self) -> String {
        self.audience.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://user@host/db`; default: SQLite in the data folder.
    pub url: Option<String>,
}

/// The EHR vendor a connection speaks to; selects a profile of defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// Epic.
    Epic,
    /// eClinicalWorks.
    Eclinicalworks,
    /// Oracle Health (Cerner Millennium).
    OracleHealth,
    /// athenahealth.
    Athena,
    /// Any other SMART Backend Services server.
    Generic,
}

impl Vendor {
    /// The configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Vendor::Epic => "epic",
            Vendor::Eclinicalworks => "eclinicalworks",
            Vendor::OracleHealth => "oracle-health",
            Vendor::Athena => "athena",
            Vendor::Generic => "generic",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[connections]]`: one EHR tenant. Every optional value overrides the vendor profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Unique name agents use (`epic-prod`).
    pub name: String,
    /// The vendor profile.
    pub vendor: Vendor,
    /// FHIR R4 base URL.
    pub fhir_base: String,
    /// The client id registered with the EHR.
    pub client_id: String,
    /// This connection's assertion key (PEM). Default: a managed key ring in the data folder.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Scopes to request (or, for vendors that take none, the registered ones).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Token endpoint; default: discovered from `{fhir_base}/.well-known/smart-configuration`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Token lifetime when the response has no `expires_in`, seconds.
    #[serde(default)]
    pub lifetime: Option<u64>,
    /// Renewal buffer, seconds.
    #[serde(default)]
    pub buffer: Option<u64>,
    /// Requests per minute (FHIR and token together) this connection may make.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Token requests per minute (athenahealth: 50), on top of `rate_per_minute`.
    #[serde(default)]
    pub token_rate_per_minute: Option<u32>,
    /// Least seconds between two token requests (Oracle Health: 60).
    #[serde(default)]
    pub token_min_interval: Option<u64>,
    /// Longest token lifetime believed, seconds, whatever `expires_in` says (default 24 h).
    #[serde(default)]
    pub max_lifetime: Option<u64>,
    /// Assertion algorithm (`RS384` or `ES384`).
    #[serde(default)]
    pub alg: Option<String>,
    /// Assertion `kid`; default: the RFC 7638 thumbprint.
    #[serde(default)]
    pub kid: Option<String>,
    /// `jku` header for assertions, only when the EHR registration uses one.
    #[serde(default)]
    pub jku: Option<String>,
    /// Seconds the assertion `iat` is back-dated.
    #[serde(default)]
    pub assertion_backdate: Option<u64>,
    /// Assertion lifetime `exp - iat`, seconds (at most 300).
    #[serde(default)]
    pub assertion_lifetime: Option<u64>,
    /// Whether to send `scope` in the token request; default from the vendor profile.
    #[serde(default)]
    pub send_scope: Option<bool>,
    /// Observation categories searched separately where the vendor requires one.
    #[serde(default)]
    pub observation_categories: Option<Vec<String>>,
    /// Longest wait honoured from a `Retry-After`, seconds.
    #[serde(default)]
    pub max_retry_after: Option<u64>,
    /// HTTP timeout for one upstream request, seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl ConnectionConfig {
    /// A connection with the given identity and every optional setting left to the vendor profile.
    pub fn new(name: &str, vendor: Vendor, fhir_base: &str, client_id: &str) -> Self {
        ConnectionConfig {
            name: name.into(),
            vendor,
            fhir_base: fhir_base.into(),
            client_id: client_id.into(),
            key: None,
            scopes: Vec::new(),
            token_url: None,
            lifetime: None,
            buffer: None,
            rate_per_minute: None,
            token_rate_per_minute: None,
            token_min_interval: None,
            max_lifetime: None,
            alg: None,
            kid: None,
            jku: None,
            assertion_backdate: None,
            assertion_lifetime: None,
            send_scope: None,
            observation_categories: None,
            max_retry_after: None,
            timeout: None,
        }
    }
}

/// `[roles.NAME]`: what holders of a role may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    /// SMART scopes (v2, v1 accepted), e.g. `system/*.rs`.
    pub scopes: Vec<String>,
    /// Tools the role may call.
    pub tools: Vec<String>,
    /// Connections the role may use; empty means all.
    pub connections: Vec<String>,
    /// Fields removed from results, `Type.element` (minimum necessary).
    pub redact: Vec<String>,
    /// Search parameters granted beyond the default allow-list (e.g. `_include`).
    pub extra_search_params: Vec<String>,
    /// When set, only these patient ids may be touched.
    pub patients: Option<Vec<String>>,
}

/// `[[agents]]`: a registered agent and its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent id (`iss` of its calls).
    pub id: String,
    /// A JWKS file with the agent's public keys.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// Or a JWKS URL, fetched and cached.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The agent's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Users (`user:NAME` or a bare name) or roles (`role:NAME`) the agent may act for.
    #[serde(default)]
    pub may_act_for: Vec<String>,
}

/// `[auth]`: dashboard sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Session lifetime, seconds.
    pub session_secs: i64,
    /// Optional external OIDC issuer whose bearer JWTs are accepted.
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { session_secs: 8 * 3600, oidc: None }
    }
}

/// `[auth.oidc]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// The issuer's JWKS URL.
    pub jwks_url: String,
    /// Claim holding role names.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// `[coding]`: manual baselines in minutes per encounter class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodingConfig {
    /// Inpatient (AHIMA: about 3 records per hour).
    pub inpatient_minutes: f64,
    /// Emergency.
    pub emergency_minutes: f64,
    /// Ambulatory and other outpatient (AHIMA: 5-20 records per hour by type).
    pub outpatient_minutes: f64,
}

impl Default for CodingConfig {
    fn default() -> Self {
        CodingConfig { inpatient_minutes: 20.0, emergency_minutes: 6.0, outpatient_minutes: 4.0 }
    }
}

/// `[keys]`: rotation timing of the keys we publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Seconds between publishing a new key and signing with it.
    pub publish_lead: i64,
    /// How long consumers may cache our JWKS, seconds (Epic: up to 29 h).
    pub consumer_cache_ttl: i64,
    /// `Cache-Control: max-age` of our JWKS, seconds (capped by `publish_lead`).
    pub jwks_max_age: i64,
    /// Algorithm of the gateway key that signs receipts, checkpoints and dashboard
    /// sessions: `RS384` (the default) or `ES384` (about a quarter of the signing cost).
    /// Fixed for a key ring's life: changing it needs a new ring (a new data folder, or
    /// `keys/gateway` moved aside).
    pub gateway_alg: String,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig { publish_lead: 24 * 3600, consumer_cache_ttl: 29 * 3600, jwks_max_age: 3600, gateway_alg: "RS384".into() }
    }
}

/// A problem with the configuration, with the key path it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key path, e.g. `connections[1].fhir_base`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Loading or checking the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(String),
    /// The configuration parsed but is not usable.
    #[error("configuration has {} problem(s):\n{}", .0.len(), .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

impl Config {
    /// Loads defaults, then `file` (if given), then `MEDICODAX_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, Env::prefixed("MEDICODAX_"))
    }

    /// Like [`Config::load`] with an explicit environment provider (for tests).
    pub fn load_with_env(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!("file {} does not exist; pass an existing file with --config or unset MEDICODAX_CONFIG", path.display())));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // Only `SECTION__KEY` names are configuration: every key lives in a section, so a
        // variable without `__` (MEDICODAX_LOG, MEDICODAX_DATA_DIR, MEDICODAX_AGENT_KEY, …)
        // belongs to the command line, not to the file.
        let env = env.ignore(&GLOBAL_ENV).filter(|k| k.as_str().contains("__")).split("__");
        fig = fig.merge(env);
        let cfg: Config = fig.extract().map_err(load_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (defaults applied, no environment), then validates.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(load_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks names, references and values; returns every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });

        if self.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
            issue("gateway.listen".into(), format!("{:?} is not an address:port such as 127.0.0.1:8080", self.gateway.listen));
        }
        if let Some(a) = &self.gateway.audience {
            let ok = url::Url::parse(a).is_ok_and(|u| matches!(u.scheme(), "https" | "http" | "urn") && u.fragment().is_none());
            if !ok {
                issue("gateway.audience".into(), format!("{a:?} is not an absolute https:// URL (or urn:) naming this gateway"));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.gateway.max_call_bytes) {
            issue("gateway.max_call_bytes".into(), "must be between 1024 and 16777216".into());
        }
        if !(0..=300).contains(&self.gateway.leeway_secs) {
            issue("gateway.leeway_secs".into(), "must be between 0 and 300".into());
        }
        if let Some(url) = &self.store.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            issue("store.url".into(), "must start with sqlite: or postgres://".into());
        }

        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.connections.iter().enumerate() {
            let p = |k: &str| format!("connections[{i}].{k}");
            if !valid_name(&c.name) {
                issue(p("name"), "must be 1-64 characters from A-Z a-z 0-9 - _ .".into());
            } else if !seen.insert(c.name.clone()) {
                issue(p("name"), format!("{:?} is used by another connection", c.name));
            }
            check_url(&c.fhir_base, &p("fhir_base"), &mut issue);
            if let Some(t) = &c.token_url {
                check_url(t, &p("token_url"), &mut issue);
            }
            if let Some(j) = &c.jku {
                check_url(j, &p("jku"), &mut issue);
            }
            if c.client_id.trim().is_empty() {
                issue(p("client_id"), "must not be empty".into());
            }
            if let Some(a) = &c.alg
                && a != "RS384"
                && a != "ES384"
            {
                issue(p("alg"), format!("{a:?} is not supported for client assertions: use RS384 (or ES384 where the vendor accepts it)"));
            }
            if c.vendor == Vendor::Eclinicalworks && c.alg.as_deref().is_some_and(|a| a != "RS384") {
                issue(p("alg"), "eClinicalWorks accepts only RS384 assertions".into());
            }
            if let Some(l) = c.assertion_lifetime
                && !(1..=300).contains(&l)
            {
                issue(p("assertion_lifetime"), format!("{l} s is refused: SMART Backend Services and Epic require exp - iat of at most 300 s"));
            }
            if let Some(b) = c.assertion_backdate
                && b > 60
            {
                issue(p("assertion_backdate"), "must be at most 60 s".into());
            }
            if c.lifetime == Some(0) {
                issue(p("lifetime"), "must be positive".into());
            }
            if c.rate_per_minute == Some(0) {
                issue(p("rate_per_minute"), "must be positive (omit it for no budget)".into());
            }
            if c.token_rate_per_minute == Some(0) {
                issue(p("token_rate_per_minute"), "must be positive (omit it for the vendor default)".into());
            }
            if let Some(m) = c.max_lifetime
                && !(1..=24 * 3600).contains(&m)
            {
                issue(p("max_lifetime"), format!("{m} s is refused: must be between 1 and 86400 (24 h)"));
            }
        }

        for (name, r) in &self.roles {
            if !valid_name(name) {
                issue(format!("roles.{name}"), "role names are 1-64 characters from A-Z a-z 0-9 - _ .".into());
            }
            for (j, t) in r.tools.iter().enumerate() {
                if t.parse::<medicodax_wire::ToolName>().is_err() {
                    issue(format!("roles.{name}.tools[{j}]"), format!("unknown tool {t:?}: expected one of {}", medicodax_wire::ToolName::ALL.map(|t| t.as_str()).join(", ")));
                }
            }
            for (j, c) in r.connections.iter().enumerate() {
                if !self.connections.is_empty() && !self.connections.iter().any(|x| &x.name == c) {
                    issue(format!("roles.{name}.connections[{j}]"), format!("no connection named {c:?}"));
                }
            }
        }

        let mut agent_ids = std::collections::BTreeSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let p = |k: &str| format!("agents[{i}].{k}");
            if !valid_name(&a.id) {
                issue(p("id"), "must be 1-64 characters from A-Z a-z 0-9 - _ .".into());
            } else if !agent_ids.insert(a.id.clone()) {
                issue(p("id"), format!("{:?} is registered twice", a.id));
            }
            match (&a.jwks, &a.jwks_url) {
                (None, None) => issue(p("jwks"), "set jwks (a file) or jwks_url".into()),
                (Some(_), Some(_)) => issue(p("jwks"), "set only one of jwks and jwks_url".into()),
                (None, Some(u)) => check_url(u, &p("jwks_url"), &mut issue),
                _ => {}
            }
            for (j, r) in a.roles.iter().enumerate() {
                if !self.roles.contains_key(r) {
                    issue(format!("agents[{i}].roles[{j}]"), format!("no role named {r:?} in [roles]"));
                }
            }
            for (j, m) in a.may_act_for.iter().enumerate() {
                if let Some(r) = m.strip_prefix("role:")
                    && !self.roles.contains_key(r)
                {
                    issue(format!("agents[{i}].may_act_for[{j}]"), format!("no role named {r:?} in [roles]"));
                }
            }
        }

        for (k, v) in [("coding.inpatient_minutes", self.coding.inpatient_minutes), ("coding.emergency_minutes", self.coding.emergency_minutes), ("coding.outpatient_minutes", self.coding.outpatient_minutes)] {
            if !(v.is_finite() && (0.0..=600.0).contains(&v)) {
                issue(k.into(), "must be between 0 and 600 minutes".into());
            }
        }
        if self.keys.publish_lead < 0 || self.keys.consumer_cache_ttl < 0 || self.keys.jwks_max_age < 0 {
            issue("keys".into(), "times must not be negative".into());
        }
        if let Some(o) = &self.auth.oidc {
            if o.issuer.trim().is_empty() {
                issue("auth.oidc.issuer".into(), "must be the issuer's identifier, exactly as its tokens' iss".into());
            }
            if o.audience.trim().is_empty() {
                issue("auth.oidc.audience".into(), "must be the aud the issuer puts in tokens meant for this dashboard (often its client id)".into());
            }
            check_url(&o.jwks_url, "auth.oidc.jwks_url", &mut issue);
            if o.roles_claim.is_empty() || o.roles_claim.split('.').any(str::is_empty) {
                issue("auth.oidc.roles_claim".into(), "must be a claim name or a dotted path such as realm_access.roles".into());
            }
        }
        if !matches!(self.keys.gateway_alg.as_str(), "RS384" | "ES384") {
            issue("keys.gateway_alg".into(), format!("{:?} is not supported for the gateway key: use RS384 or ES384", self.keys.gateway_alg));
        }
        if issues.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(issues)) }
    }

    /// The connection named `name`.
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == name)
    }
}

/// Figment's errors as a user reads them: the key path without figment's profile prefix,
/// where the value came from, and for an unknown key the keys that exist.
fn load_error(e: figment::Error) -> ConfigError {
    let msgs: Vec<String> = e
        .into_iter()
        .map(|e| {
            let what = match &e.kind {
                figment::error::Kind::UnknownField(found, expected) => format!("unknown key {found:?}; the keys here are {}", expected.join(", ")),
                other => other.to_string(),
            };
            let key = if e.path.is_empty() { String::new() } else { format!("{}: ", e.path.join(".")) };
            let from = e.metadata.as_ref().map(|m| match &m.source {
                Some(src) => format!(" (from {src})"),
                None => format!(" (from {})", m.name),
            });
            format!("{key}{what}{}", from.unwrap_or_default())
        })
        .collect();
    ConfigError::Load(msgs.join("; "))
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn valid_name(s: &str) -> bool {
    medicodax_wire::tools::valid_connection_name(s)
}

fn check_url(u: &str, path: &str, issue: &mut impl FnMut(String, String)) {
    match url::Url::parse(u) {
        Ok(parsed) if parsed.scheme() == "http" && !is_loopback(&parsed) => {
            issue(path.into(), "uses http:// to a host that is not this machine: tokens and client assertions would travel in clear text; use https://".into());
        }
        Ok(parsed) if parsed.scheme() == "https" || parsed.scheme() == "http" => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                issue(path.into(), "must not carry credentials".into());
            }
            if parsed.fragment().is_some() {
                issue(path.into(), "must not have a #fragment".into());
            }
        }
        Ok(_) => issue(path.into(), "must be an http:// or https:// URL".into()),
        Err(e) => issue(path.into(), format!("is not a URL: {e}")),
    }
}

