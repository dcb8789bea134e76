//! EHR connections as the gateway uses them: a FHIR client per connection whose tokens
//! and rate budget come from the auth manager.

use async_trait::async_trait;
use medicodax_clock::SharedClock;
use medicodax_config::{ConnectionConfig, Vendor};
use medicodax_fhir::{Bearer, FhirBase, FhirClient, FhirConfig, RateLimited, SearchProfile, TokenError, TokenSource};
use medicodax_smart::{AuthError, AuthManager, RequestKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The auth manager seen by one connection's FHIR client.
pub struct ConnectionTokens {
    auth: Arc<AuthManager>,
    connection: String,
}

impl ConnectionTokens {
    /// The token source of `connection`.
    pub fn new(auth: Arc<AuthManager>, connection: &str) -> Self {
        ConnectionTokens { auth, connection: connection.to_owned() }
    }
}

/// Maps an auth-manager failure to what the FHIR client understands.
pub fn token_error(e: &AuthError) -> TokenError {
    match e {
        AuthError::RateLimited { retry_after, .. } => TokenError::RateLimited { retry_after: *retry_after },
        AuthError::Unavailable { retry_after, .. } => TokenError::Unavailable { detail: e.to_string(), retry_after: *retry_after },
        AuthError::Network { .. } | AuthError::Discovery { .. } => TokenError::Unavailable { detail: e.to_string(), retry_after: None },
        _ => TokenError::Misconfigured { detail: e.to_string() },
    }
}

#[async_trait]
impl TokenSource for ConnectionTokens {
    async fn bearer(&self) -> Result<Bearer, TokenError> {
        let handle = self.auth.token(&self.connection).await.map_err(|e| token_error(&e))?;
        Bearer::new(handle.access_token().expose_secret())
            .map(|b| b.with_tag(handle.generation()))
            .map_err(|e| TokenError::Misconfigured { detail: format!("the EHR issued an access token that cannot be sent: {e}") })
    }

    async fn invalidate(&self, rejected: &Bearer) {
        self.auth.invalidate_value(&self.connection, rejected.expose_secret());
    }

    async fn acquire_request(&self) -> Result<(), RateLimited> {
        match self.auth.try_acquire(&self.connection, RequestKind::Fhir) {
            Ok(()) => Ok(()),
            Err(AuthError::RateLimited { retry_after, .. }) => Err(RateLimited { retry_after }),
            Err(_) => Err(RateLimited { retry_after: Duration::from_secs(1) }),
        }
    }
}

/// One EHR connection.
pub struct Ehr {
    /// The connection name.
    pub name: String,
    /// Its vendor.
    pub vendor: Vendor,
    /// The FHIR base URL as configured.
    pub fhir_base: String,
    /// The FHIR client.
    pub fhir: FhirClient,
}

/// The search behaviour of a vendor.
pub fn search_profile(c: &ConnectionConfig) -> SearchProfile {
    match c.vendor {
        Vendor::Epic => {
            let p = SearchProfile::observation_needs_category();
            match &c.observation_categories {
                Some(cats) => p.with_category_split(medicodax_wire::ResourceType::Observation, cats.clone()),
                None => p,
            }
        }
        Vendor::Athena => SearchProfile::observation_by_subject(),
        _ => SearchProfile::generic(),
    }
}

/// Builds the FHIR clients for every configured connection.
pub fn build_ehrs(connections: &[ConnectionConfig], auth: &Arc<AuthManager>, clock: &SharedClock) -> Result<BTreeMap<String, Arc<Ehr>>, String> {
    let mut out = BTreeMap::new();
    for c in connections {
        let base = FhirBase::parse(&c.fhir_base).map_err(|e| format!("connection {:?}: fhir_base: {e}", c.name))?;
        let mut cfg = FhirConfig::new(base).with_profile(search_profile(c));
        if let Some(t) = c.timeout {
            cfg.request_timeout = Duration::from_secs(t.max(1));
        }
        if let Some(m) = c.max_retry_after {
            cfg.retry.retry_after_cap = Duration::from_secs(m);
        }
        let tokens = Arc::new(ConnectionTokens::new(Arc::clone(auth), &c.name));
        let fhir = FhirClient::new(cfg, tokens, Arc::clone(clock)).map_err(|e| format!("connection {:?}: {e}", c.name))?;
        out.insert(c.name.clone(), Arc::new(Ehr { name: c.name.clone(), vendor: c.vendor, fhir_base: c.fhir_base.clone(), fhir }));
    }
    Ok(out)
}
