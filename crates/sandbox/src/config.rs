//! What a sandbox is started with: the listener, the registered clients, the clock and
//! the per-vendor settings.

use crate::vendor::Vendor;
use medicodax_clock::{SharedClock, SystemClock};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a registered client's public keys are found.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientKeys {
    /// A JWKS URL the sandbox fetches (and caches as its `Cache-Control` says). Epic
    /// accepts ES256/ES384 assertions only from clients registered this way.
    JwksUrl(String),
    /// A JWK Set uploaded at registration (a JSON document `{"keys":[…]}`).
    Inline(serde_json::Value),
}

/// A client registered with one vendor side, as an EHR's app registration would hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRegistration {
    /// The `client_id`; assertions must carry it as both `iss` and `sub`.
    pub client_id: String,
    /// The vendor side the client is registered with (a client is unknown to the other).
    pub vendor: Vendor,
    /// Where its public keys come from.
    pub keys: ClientKeys,
    /// The scopes the registration grants, in SMART v1 or v2 syntax
    /// (`system/Patient.rs`, `system/*.read`, `system/Condition.rs?category=…`).
    /// Epic grants them all without a `scope` parameter (answering in Epic style,
    /// `Patient.read Patient.search`); eClinicalWorks grants the requested subset.
    pub scopes: Vec<String>,
    /// Epic: whether the customer mapped the client to a background user. When `false`
    /// every token request fails with `unauthorized_client` (Epic's sandbox maps one
    /// automatically, so the default is `true`). Ignored by eClinicalWorks.
    pub backend_user_mapped: bool,
}

impl ClientRegistration {
    /// A registration with read and search on all eleven types (`system/<Type>.rs`) and
    /// a mapped background user.
    pub fn new(client_id: impl Into<String>, vendor: Vendor, keys: ClientKeys) -> Self {
        ClientRegistration { client_id: client_id.into(), vendor, keys, scopes: default_scopes(), backend_user_mapped: true }
    }

    /// Replaces the registered scopes.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// `system/<Type>.rs` for each of the eleven types.
pub fn default_scopes() -> Vec<String> {
    crate::vendor::ResourceType::ALL.iter().map(|t| format!("system/{t}.rs")).collect()
}

/// The `Retry-After` a vendor sends with its rate-limit 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitRetryAfter {
    /// No header (what eClinicalWorks is reported to do).
    None,
    /// The seconds left in the current budget window.
    RestOfWindow,
    /// A fixed number of seconds.
    Seconds(u64),
}

/// Per-vendor behaviour that tests may want to change.
#[derive(Clone, Debug, PartialEq)]
pub struct VendorSettings {
    /// Access-token lifetime (`expires_in`): Epic 3600 s, eClinicalWorks 300 s.
    pub token_lifetime: Duration,
    /// Page size when the request has no `_count`.
    pub default_page_size: usize,
    /// The largest page served; a larger `_count` is clamped to it.
    pub max_page_size: usize,
    /// Requests per minute for the whole practice (token and FHIR together); `None` for
    /// no budget. eClinicalWorks: 250.
    pub rate_limit_per_minute: Option<u32>,
    /// What the rate-limit 429 says about retrying.
    pub rate_limit_retry_after: RateLimitRetryAfter,
    /// How long an opaque paging link stays valid (Epic); eClinicalWorks' `page` links
    /// are stateless and never expire.
    pub page_link_ttl: Duration,
}

impl VendorSettings {
    /// Epic's defaults: 3600 s tokens, pages of 50 (up to 1000), no rate budget,
    /// paging links valid 10 minutes.
    pub fn epic() -> Self {
        VendorSettings {
            token_lifetime: Duration::from_secs(3600),
            default_page_size: 50,
            max_page_size: 1000,
            rate_limit_per_minute: None,
            rate_limit_retry_after: RateLimitRetryAfter::None,
            page_link_ttl: Duration::from_secs(600),
        }
    }

    /// eClinicalWorks' defaults: 300 s tokens, pages of 50 (`_count` may only make them
    /// smaller), 250 requests per minute per practice, no `Retry-After`.
    pub fn eclinicalworks() -> Self {
        VendorSettings {
            token_lifetime: Duration::from_secs(300),
            default_page_size: 50,
            max_page_size: 50,
            rate_limit_per_minute: Some(250),
            rate_limit_retry_after: RateLimitRetryAfter::None,
            page_link_ttl: Duration::from_secs(600),
        }
    }

    /// The defaults for `vendor`.
    pub fn for_vendor(vendor: Vendor) -> Self {
        match vendor {
            Vendor::Epic => Self::epic(),
            Vendor::EClinicalWorks => Self::eclinicalworks(),
        }
    }
}

/// Everything [`crate::Sandbox::start`] needs.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where to listen; `127.0.0.1:0` (any free loopback port) by default.
    pub listen: SocketAddr,
    /// The origin used in absolute URLs (discovery, `aud`, paging links), e.g.
    /// `http://127.0.0.1:8081`. Default: `http://` + the bound address.
    pub public_origin: Option<String>,
    /// Registered clients (more can be added later with
    /// [`crate::SandboxHandle::register_client`]).
    pub clients: Vec<ClientRegistration>,
    /// The clock for every time decision (assertion times, token expiry, paging-link
    /// expiry, rate windows, JWKS cache ages, added latency).
    pub clock: SharedClock,
    /// Epic-side settings.
    pub epic: VendorSettings,
    /// eClinicalWorks-side settings.
    pub ecw: VendorSettings,
    /// Least time between two JWKS fetches triggered by an unknown `kid` (or a key that
    /// failed to verify) for the same URL.
    pub jwks_refetch_cooldown: Duration,
    /// The longest a fetched JWKS is cached, whatever its `Cache-Control` says (Epic: 29 h),
    /// and how long it is cached when the response has no `Cache-Control` max-age.
    pub jwks_max_cache: Duration,
    /// Network timeout of one JWKS fetch (real time: it bounds I/O, not a rule).
    pub jwks_fetch_timeout: Duration,
    /// How many request records the log keeps (oldest dropped first).
    pub log_capacity: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            public_origin: None,
            clients: Vec::new(),
            clock: SystemClock::shared(),
            epic: VendorSettings::epic(),
            ecw: VendorSettings::eclinicalworks(),
            jwks_refetch_cooldown: Duration::from_secs(10),
            jwks_max_cache: Duration::from_secs(29 * 3600),
            jwks_fetch_timeout: Duration::from_secs(5),
            log_capacity: 100_000,
        }
    }
}

impl SandboxConfig {
    /// The settings of one vendor side.
    pub fn vendor(&self, vendor: Vendor) -> &VendorSettings {
        match vendor {
            Vendor::Epic => &self.epic,
            Vendor::EClinicalWorks => &self.ecw,
        }
    }
}
