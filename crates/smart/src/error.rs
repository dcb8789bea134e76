//! The auth manager's errors, and their classes for the dashboard and metrics.
//!
//! Every error names the connection and says what to do. None carries a token, an
//! assertion or a response body: refused token requests carry a
//! [`TokenFailureRecord`], which holds only header and claim values we chose ourselves
//! plus the server's error code and description.

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

use crate::discovery::DiscoveryError;
use crate::http::NetworkKind;
use crate::token::TokenFailureRecord;

/// A short, stable name for an error's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// `invalid_client`: client authentication refused (configuration).
    InvalidClient,
    /// `unauthorized_client`: the client may not use this grant (configuration; Epic: user mapping).
    UnauthorizedClient,
    /// `invalid_scope` (configuration).
    InvalidScope,
    /// Another OAuth error code (configuration).
    OauthError,
    /// HTTP 5xx or 429 from the token endpoint (transient).
    Unavailable,
    /// Network failure (transient).
    Network,
    /// A token response we cannot use.
    BadResponse,
    /// Discovery failed.
    Discovery,
    /// Our own request budget is used up.
    RateLimited,
    /// Requests paused after a transient failure.
    BackingOff,
    /// Signing failed.
    Signing,
    /// The request was abandoned.
    Abandoned,
    /// No such connection.
    UnknownConnection,
    /// An empty scope set was asked of a vendor that needs scopes.
    NoScopes,
}

impl ErrorClass {
    /// The kebab-case name (as in metrics labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidClient => "invalid-client",
            ErrorClass::UnauthorizedClient => "unauthorized-client",
            ErrorClass::InvalidScope => "invalid-scope",
            ErrorClass::OauthError => "oauth-error",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Network => "network",
            ErrorClass::BadResponse => "bad-response",
            ErrorClass::Discovery => "discovery",
            ErrorClass::RateLimited => "rate-limited",
            ErrorClass::BackingOff => "backing-off",
            ErrorClass::Signing => "signing",
            ErrorClass::Abandoned => "abandoned",
            ErrorClass::UnknownConnection => "unknown-connection",
            ErrorClass::NoScopes => "no-scopes",
        }
    }
}

fn secs(d: &Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn retry_note(d: &Option<Duration>) -> String {
    d.map(|d| format!(" (Retry-After {} s)", secs(&d))).unwrap_or_default()
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No connection of that name.
    #[error("no connection named {0:?} is configured; check the name against [[connections]] in the configuration")]
    UnknownConnection(String),
    /// SMART discovery failed.
    #[error("connection {connection:?}: SMART discovery at {url} failed: {problem}")]
    Discovery {
        /// The connection.
        connection: String,
        /// The discovery URL.
        url: String,
        /// What went wrong.
        problem: DiscoveryError,
    },
    /// `invalid_client`: a configuration error, not a transient one.
    #[error("{}", .0.explain())]
    InvalidClient(Arc<TokenFailureRecord>),
    /// `unauthorized_client`.
    #[error("{}", .0.explain())]
    UnauthorizedClient(Arc<TokenFailureRecord>),
    /// `invalid_scope`: the requested scopes are named in the record.
    #[error("{}", .0.explain())]
    InvalidScope(Arc<TokenFailureRecord>),
    /// Another OAuth error code.
    #[error("{}", .0.explain())]
    Refused(Arc<TokenFailureRecord>),
    /// 5xx or 429 from the token endpoint.
    #[error("connection {connection:?}: the token endpoint answered HTTP {status}{}; token requests pause and then retry", retry_note(.retry_after))]
    Unavailable {
        /// The connection.
        connection: String,
        /// The HTTP status.
        status: u16,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Network failure talking to the token endpoint.
    #[error("connection {connection:?}: the token request {}; check that the token endpoint is reachable", .kind.as_str())]
    Network {
        /// The connection.
        connection: String,
        /// What failed.
        kind: NetworkKind,
    },
    /// A token answer we cannot use.
    #[error("connection {connection:?}: the token endpoint's HTTP {status} answer is unusable: {problem}")]
    BadResponse {
        /// The connection.
        connection: String,
        /// The HTTP status.
        status: u16,
        /// What is wrong with it.
        problem: String,
    },
    /// Our own per-connection request budget is used up.
    #[error("connection {connection:?}: the request budget ({budget}) is used up; retry in {} s", secs(.retry_after))]
    RateLimited {
        /// The connection.
        connection: String,
        /// When a request fits again.
        retry_after: Duration,
        /// Which budget.
        budget: String,
    },
    /// Token requests are paused after a transient failure.
    #[error("connection {connection:?}: token requests are paused for {} s after a {} failure; retry then", secs(.retry_after), .cause.as_str())]
    BackingOff {
        /// The connection.
        connection: String,
        /// When the next attempt may be made.
        retry_after: Duration,
        /// The failure that caused the pause.
        cause: ErrorClass,
    },
    /// The crypto library refused to sign.
    #[error("connection {connection:?}: signing the client assertion failed in the crypto library")]
    Signing {
        /// The connection.
        connection: String,
    },
    /// An empty scope set was asked of a vendor that needs scopes in the token request.
    #[error("connection {connection:?}: no scopes were asked for, but this vendor needs scopes in the token request")]
    NoScopes {
        /// The connection.
        connection: String,
    },
    /// The token request task ended without an answer.
    #[error("connection {connection:?}: the token request was abandoned before it finished; retry")]
    Abandoned {
        /// The connection.
        connection: String,
    },
}

impl AuthError {
    /// The error's class.
    pub fn class(&self) -> ErrorClass {
        match self {
            AuthError::UnknownConnection(_) => ErrorClass::UnknownConnection,
            AuthError::Discovery { .. } => ErrorClass::Discovery,
            AuthError::InvalidClient(_) => ErrorClass::InvalidClient,
            AuthError::UnauthorizedClient(_) => ErrorClass::UnauthorizedClient,
            AuthError::InvalidScope(_) => ErrorClass::InvalidScope,
            AuthError::Refused(_) => ErrorClass::OauthError,
            AuthError::Unavailable { .. } => ErrorClass::Unavailable,
            AuthError::Network { .. } => ErrorClass::Network,
            AuthError::BadResponse { .. } => ErrorClass::BadResponse,
            AuthError::RateLimited { .. } => ErrorClass::RateLimited,
            AuthError::BackingOff { .. } => ErrorClass::BackingOff,
            AuthError::Signing { .. } => ErrorClass::Signing,
            AuthError::Abandoned { .. } => ErrorClass::Abandoned,
            AuthError::NoScopes { .. } => ErrorClass::NoScopes,
        }
    }

    /// Whether this is a configuration error (an OAuth error answer): retrying soon will
    /// not help, so callers fail fast and only one slow retry is made.
    pub fn is_config(&self) -> bool {
        matches!(self, AuthError::InvalidClient(_) | AuthError::UnauthorizedClient(_) | AuthError::InvalidScope(_) | AuthError::Refused(_))
    }

    /// The redacted account of the refused request, for OAuth error answers.
    pub fn failure_record(&self) -> Option<&Arc<TokenFailureRecord>> {
        match self {
            AuthError::InvalidClient(r) | AuthError::UnauthorizedClient(r) | AuthError::InvalidScope(r) | AuthError::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// How long until a retry may help, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::Unavailable { retry_after, .. } => *retry_after,
            AuthError::RateLimited { retry_after, .. } | AuthError::BackingOff { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
