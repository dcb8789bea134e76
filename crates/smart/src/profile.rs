//! Vendor profiles (`DESIGN.md` §4) and their resolution against a connection's
//! configuration.
//!
//! A [`VendorProfile`] holds one vendor's defaults; [`ConnectionSettings::resolve`]
//! applies the connection's overrides and refuses, at startup, anything the vendor (or
//! SMART) would refuse later: an assertion algorithm the vendor does not take, an
//! assertion lifetime over 300 s, no scopes where the vendor requires them. Each problem
//! is a [`SetupError`] naming the connection and the setting.

use medicodax_config::{ConnectionConfig, Vendor};
use medicodax_jose::Alg;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

use crate::scopes::{GrantSource, ScopeSet};

/// Default back-date of the assertion `iat`, seconds (`DESIGN.md` §4).
pub const DEFAULT_ASSERTION_BACKDATE: u64 = 30;
/// Default assertion lifetime `exp − iat`, seconds.
pub const DEFAULT_ASSERTION_LIFETIME: u64 = 270;
/// The longest assertion lifetime SMART and Epic accept, seconds.
pub const MAX_ASSERTION_LIFETIME: u64 = 300;
/// The longest back-date accepted, seconds.
pub const MAX_ASSERTION_BACKDATE: u64 = 60;
/// The longest token lifetime ever believed, seconds (24 h).
pub const MAX_TOKEN_LIFETIME: u64 = 24 * 3600;
/// Least time between two token requests of one cache entry.
pub const MIN_MINT_INTERVAL: Duration = Duration::from_secs(5);
/// Wait before the one slow retry after a configuration error such as `invalid_client`.
pub const CONFIG_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Default HTTP timeout for one request, seconds.
pub const DEFAULT_TIMEOUT: u64 = 30;
/// Default longest `Retry-After` honoured (and longest wait for the rate budget), seconds.
pub const DEFAULT_MAX_RETRY_AFTER: u64 = 120;

/// A connection's request budget. All limits are per sliding minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RateRule {
    /// FHIR and token requests together (eClinicalWorks: 250 per practice).
    pub shared_per_minute: Option<u32>,
    /// Token requests alone (athenahealth: 50).
    pub token_per_minute: Option<u32>,
    /// Least seconds between token requests (Oracle Health: 60).
    pub token_min_interval_secs: Option<u64>,
}

/// One vendor's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VendorProfile {
    /// The vendor.
    pub vendor: Vendor,
    /// Assertion algorithm when none is configured.
    #[serde(serialize_with = "ser_alg")]
    pub default_alg: Alg,
    /// Assertion algorithms the vendor accepts.
    #[serde(serialize_with = "ser_algs")]
    pub accepted_algs: &'static [Alg],
    /// ES384 only when the registration uses a JWKS URL (`jku`): Epic.
    pub es384_needs_jku: bool,
    /// Token lifetime when the response has no usable `expires_in`, seconds.
    pub default_lifetime_secs: u64,
    /// Renewal buffer, seconds (the renewal point is `lifetime − min(buffer, lifetime / 5)`).
    pub renewal_buffer_secs: u64,
    /// Whether the token request carries `scope` (Epic: no, access comes from the registration).
    pub sends_scope: bool,
    /// The request budget.
    pub rate: RateRule,
    /// The longest lifetime believed, seconds.
    pub max_lifetime_secs: u64,
}

fn ser_alg<S: serde::Serializer>(a: &Alg, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.as_str())
}

fn ser_algs<S: serde::Serializer>(a: &&'static [Alg], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(a.iter().map(|x| x.as_str()))
}

const RS384_ONLY: &[Alg] = &[Alg::RS384];
const RS384_ES384: &[Alg] = &[Alg::RS384, Alg::ES384];

impl VendorProfile {
    /// The profile of `vendor` (`DESIGN.md` §4 table).
    pub const fn of(vendor: Vendor) -> VendorProfile {
        let base = VendorProfile {
            vendor,
            default_alg: Alg::RS384,
            accepted_algs: RS384_ONLY,
            es384_needs_jku: false,
            default_lifetime_secs: 300,
            renewal_buffer_secs: 60,
            sends_scope: true,
            rate: RateRule { shared_per_minute: None, token_per_minute: None, token_min_interval_secs: None },
            max_lifetime_secs: MAX_TOKEN_LIFETIME,
        };
        match vendor {
            Vendor::Epic => VendorProfile { accepted_algs: RS384_ES384, es384_needs_jku: true, default_lifetime_secs: 3600, sends_scope: false, ..base },
            Vendor::Eclinicalworks => VendorProfile { rate: RateRule { shared_per_minute: Some(250), ..base.rate }, ..base },
            Vendor::OracleHealth => {
                VendorProfile { default_lifetime_secs: 570, rate: RateRule { token_min_interval_secs: Some(60), ..base.rate }, ..base }
            }
            Vendor::Athena => VendorProfile { default_lifetime_secs: 3600, rate: RateRule { token_per_minute: Some(50), ..base.rate }, ..base },
            Vendor::Generic => VendorProfile { accepted_algs: RS384_ES384, ..base },
        }
    }
}

/// What is wrong with one setting of a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupProblem {
    /// The algorithm is not one the vendor accepts.
    #[error("{alg} is not accepted by {vendor}: use {accepted}")]
    AlgNotAccepted {
        /// The configured algorithm.
        alg: String,
        /// The vendor.
        vendor: Vendor,
        /// What the vendor accepts.
        accepted: String,
    },
    /// Epic takes ES384 only from a JWKS URL.
    #[error("Epic accepts ES384 only from a registered JWKS URL: set `jku` to that URL, or use RS384")]
    Es384NeedsJku,
    /// Assertion lifetime out of range.
    #[error("{0} s is refused: SMART Backend Services and Epic require exp - iat of at most 300 s (and more than the back-date)")]
    AssertionLifetime(u64),
    /// Back-date out of range.
    #[error("{0} s is refused: the back-date must be at most 60 s and shorter than the assertion lifetime")]
    AssertionBackdate(u64),
    /// A value that must be positive is zero.
    #[error("must be positive")]
    Zero,
    /// A value that must not be empty is.
    #[error("must not be empty")]
    Empty,
    /// A lifetime above the 24 h cap.
    #[error("{0} s is more than the 24 h cap")]
    TooLong(u64),
    /// Not a usable URL.
    #[error("{0}")]
    BadUrl(String),
    /// The vendor needs scopes in the token request and none are configured.
    #[error("{0} requires scopes in the token request: list the system scopes to request in `scopes`")]
    NoScopes(Vendor),
    /// A scope token is not valid.
    #[error("{0}")]
    BadScope(String),
    /// `kid` without `key`.
    #[error("kid can only be set together with `key`: a managed key ring names its keys by RFC 7638 thumbprint so a rotation never reuses a kid")]
    KidWithoutKey,
    /// No key file and no data folder for a managed ring.
    #[error("no assertion key: set `key` to a PEM file, or run with a data folder so a managed key ring can be created")]
    NoKey,
    /// The key could not be loaded.
    #[error("{0}")]
    Key(String),
    /// Two connections share a name.
    #[error("another connection already has this name")]
    Duplicate,
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0} (is a CA certificate store installed?)")]
    Http(String),
}

/// A connection setting that cannot be used, found at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection {connection:?}, setting `{setting}`: {problem}")]
pub struct SetupError {
    /// The connection's name.
    pub connection: String,
    /// The configuration key, e.g. `alg`.
    pub setting: &'static str,
    /// What is wrong and what to do.
    pub problem: SetupProblem,
}

/// Every problem found while setting up the auth manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SetupErrors(pub Vec<SetupError>);

impl fmt::Display for SetupErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} connection setting problem(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// A connection's settings: the vendor profile with the configuration's overrides applied
/// and checked.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionSettings {
    /// The connection's name.
    pub name: String,
    /// The vendor.
    pub vendor: Vendor,
    /// The FHIR base as configured.
    pub fhir_base: String,
    /// The client id (`iss` and `sub` of assertions).
    pub client_id: String,
    /// A configured token endpoint (skips discovery), byte for byte.
    pub token_url: Option<String>,
    /// The configured scopes: requested, or (vendors that take none) the registered ones.
    pub scopes: ScopeSet,
    /// Assertion algorithm.
    #[serde(serialize_with = "ser_alg")]
    pub alg: Alg,
    /// `jku` header, only when configured.
    pub jku: Option<String>,
    /// A configured `kid` (only with a configured key file).
    pub kid: Option<String>,
    /// Whether `scope` is sent in token requests.
    pub send_scope: bool,
    /// Token lifetime when `expires_in` is missing or unusable.
    pub default_lifetime: Duration,
    /// Renewal buffer.
    pub renewal_buffer: Duration,
    /// The longest lifetime believed.
    pub max_lifetime: Duration,
    /// Seconds `iat` is back-dated.
    pub assertion_backdate: u64,
    /// Assertion `exp − iat`, seconds.
    pub assertion_lifetime: u64,
    /// The request budget.
    pub rate: RateRule,
    /// HTTP timeout for one request.
    pub timeout: Duration,
    /// Longest `Retry-After` honoured, and longest wait for the rate budget.
    pub max_retry_after: Duration,
}

fn check_url(u: &str) -> Result<url::Url, String> {
    match url::Url::parse(u) {
        Ok(p) if p.scheme() == "https" || p.scheme() == "http" => {
            if !p.username().is_empty() || p.password().is_some() {
                Err("must not carry credentials".into())
            } else if p.fragment().is_some() {
                Err("must not have a #fragment".into())
            } else {
                Ok(p)
            }
        }
        Ok(_) => Err("must be an http:// or https:// URL".into()),
        Err(e) => Err(format!("is not a URL: {e}")),
    }
}

impl ConnectionSettings {
    /// The vendor profile of this connection.
    pub fn profile(&self) -> VendorProfile {
        VendorProfile::of(self.vendor)
    }

    /// How granted scopes are taken when a token response has none.
    pub fn grant_when_absent(&self) -> GrantSource {
        if self.send_scope { GrantSource::AssumedRequested } else { GrantSource::AssumedConfigured }
    }

    /// Applies `cfg`'s overrides to its vendor profile and checks the result.
    pub fn resolve(cfg: &ConnectionConfig) -> Result<Self, Vec<SetupError>> {
        let p = VendorProfile::of(cfg.vendor);
        let mut errors = Vec::new();
        let mut err = |setting: &'static str, problem: SetupProblem| errors.push(SetupError { connection: cfg.name.clone(), setting, problem });

        if let Err(e) = check_url(&cfg.fhir_base) {
            err("fhir_base", SetupProblem::BadUrl(e));
        }
        if let Some(t) = &cfg.token_url
            && let Err(e) = check_url(t)
        {
            err("token_url", SetupProblem::BadUrl(e));
        }
        if let Some(j) = &cfg.jku {
            match check_url(j) {
                Ok(u) if u.scheme() != "https" && !is_loopback(&u) => err("jku", SetupProblem::BadUrl("must be an https:// URL (SMART: a TLS URL)".into())),
                Ok(_) => {}
                Err(e) => err("jku", SetupProblem::BadUrl(e)),
            }
        }
        if cfg.client_id.trim().is_empty() {
            err("client_id", SetupProblem::Empty);
        }

        let accepted = || p.accepted_algs.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" or ");
        let alg = match cfg.alg.as_deref() {
            None => p.default_alg,
            Some(name) => match name.parse::<Alg>() {
                Ok(a) if p.accepted_algs.contains(&a) => a,
                _ => {
                    err("alg", SetupProblem::AlgNotAccepted { alg: name.chars().take(16).collect(), vendor: cfg.vendor, accepted: accepted() });
                    p.default_alg
                }
            },
        };
        if alg == Alg::ES384 && p.es384_needs_jku && cfg.jku.is_none() {
            err("alg", SetupProblem::Es384NeedsJku);
        }

        let assertion_lifetime = cfg.assertion_lifetime.unwrap_or(DEFAULT_ASSERTION_LIFETIME);
        let assertion_backdate = cfg.assertion_backdate.unwrap_or(DEFAULT_ASSERTION_BACKDATE);
        if !(1..=MAX_ASSERTION_LIFETIME).contains(&assertion_lifetime) || assertion_lifetime <= assertion_backdate {
            err("assertion_lifetime", SetupProblem::AssertionLifetime(assertion_lifetime));
        }
        if assertion_backdate > MAX_ASSERTION_BACKDATE {
            err("assertion_backdate", SetupProblem::AssertionBackdate(assertion_backdate));
        }

        let max_lifetime = cfg.max_lifetime.unwrap_or(p.max_lifetime_secs);
        if max_lifetime == 0 {
            err("max_lifetime", SetupProblem::Zero);
        } else if max_lifetime > MAX_TOKEN_LIFETIME {
            err("max_lifetime", SetupProblem::TooLong(max_lifetime));
        }
        let default_lifetime = cfg.lifetime.unwrap_or(p.default_lifetime_secs);
        if default_lifetime == 0 {
            err("lifetime", SetupProblem::Zero);
        } else if default_lifetime > max_lifetime {
            err("lifetime", SetupProblem::TooLong(default_lifetime));
        }
        let buffer = cfg.buffer.unwrap_or(p.renewal_buffer_secs);
        for (setting, v) in [("rate_per_minute", cfg.rate_per_minute), ("token_rate_per_minute", cfg.token_rate_per_minute)] {
            if v == Some(0) {
                err(setting, SetupProblem::Zero);
            }
        }
        if cfg.timeout == Some(0) {
            err("timeout", SetupProblem::Zero);
        }

        let scopes = match ScopeSet::new(&cfg.scopes) {
            Ok(s) => s,
            Err(e) => {
                err("scopes", SetupProblem::BadScope(e.to_string()));
                ScopeSet::empty()
            }
        };
        let send_scope = cfg.send_scope.unwrap_or(p.sends_scope);
        if send_scope && cfg.scopes.is_empty() {
            err("scopes", SetupProblem::NoScopes(cfg.vendor));
        }
        if cfg.kid.is_some() && cfg.key.is_none() {
            err("kid", SetupProblem::KidWithoutKey);
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ConnectionSettings {
            name: cfg.name.clone(),
            vendor: cfg.vendor,
            fhir_base: cfg.fhir_base.clone(),
            client_id: cfg.client_id.clone(),
            token_url: cfg.token_url.clone(),
            scopes,
            alg,
            jku: cfg.jku.clone(),
            kid: cfg.kid.clone(),
            send_scope,
            default_lifetime: Duration::from_secs(default_lifetime),
            renewal_buffer: Duration::from_secs(buffer),
            max_lifetime: Duration::from_secs(max_lifetime),
            assertion_backdate,
            assertion_lifetime,
            rate: RateRule {
                shared_per_minute: cfg.rate_per_minute.or(p.rate.shared_per_minute),
                token_per_minute: cfg.token_rate_per_minute.or(p.rate.token_per_minute),
                token_min_interval_secs: cfg.token_min_interval.or(p.rate.token_min_interval_secs).filter(|s| *s > 0),
            },
            timeout: Duration::from_secs(cfg.timeout.unwrap_or(DEFAULT_TIMEOUT)),
            max_retry_after: Duration::from_secs(cfg.max_retry_after.unwrap_or(DEFAULT_MAX_RETRY_AFTER)),
        })
    }
}

/// The renewal point of a token of `lifetime`, counted from when its request was sent:
/// `lifetime − min(buffer, lifetime / 5)`.
pub fn renewal_offset(lifetime: Duration, buffer: Duration) -> Duration {
    lifetime.saturating_sub(buffer.min(lifetime / 5))
}

pub(crate) fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_points_match_design() {
        let b = Duration::from_secs(60);
        assert_eq!(renewal_offset(Duration::from_secs(3600), b), Duration::from_secs(3540));
        assert_eq!(renewal_offset(Duration::from_secs(300), b), Duration::from_secs(240));
        assert_eq!(renewal_offset(Duration::from_secs(570), b), Duration::from_secs(510));
        assert_eq!(renewal_offset(Duration::from_secs(45), b), Duration::from_secs(36));
        assert_eq!(renewal_offset(Duration::from_secs(1), b), Duration::from_millis(800));
        assert_eq!(renewal_offset(Duration::ZERO, b), Duration::ZERO);
    }

    #[test]
    fn the_design_table() {
        let rows: Vec<(Vendor, u64, bool, RateRule)> = [Vendor::Epic, Vendor::Eclinicalworks, Vendor::OracleHealth, Vendor::Athena, Vendor::Generic]
            .into_iter()
            .map(|v| {
                let p = VendorProfile::of(v);
                assert_eq!(p.renewal_buffer_secs, 60);
                assert_eq!(p.max_lifetime_secs, 86_400);
                assert_eq!(p.default_alg, Alg::RS384);
                (v, p.default_lifetime_secs, p.sends_scope, p.rate)
            })
            .collect();
        let none = RateRule::default();
        assert_eq!(
            rows,
            vec![
                (Vendor::Epic, 3600, false, none),
                (Vendor::Eclinicalworks, 300, true, RateRule { shared_per_minute: Some(250), ..none }),
                (Vendor::OracleHealth, 570, true, RateRule { token_min_interval_secs: Some(60), ..none }),
                (Vendor::Athena, 3600, true, RateRule { token_per_minute: Some(50), ..none }),
                (Vendor::Generic, 300, true, none),
            ]
        );
        assert_eq!(VendorProfile::of(Vendor::Eclinicalworks).accepted_algs, &[Alg::RS384]);
        assert_eq!(VendorProfile::of(Vendor::Generic).accepted_algs, &[Alg::RS384, Alg::ES384]);
        assert!(VendorProfile::of(Vendor::Epic).es384_needs_jku);
    }
}
