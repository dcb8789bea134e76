//! Where the FHIR client gets its bearer tokens and its permission to send a request.
//!
//! The client does not mint or cache tokens itself: the auth manager (`medicodax-smart`)
//! does, and implements [`TokenSource`] through a small adapter. The client asks the
//! source for a token before **every** request (every page of a walk, every retry), so
//! the source alone decides when a token is renewed (pitfall 12). After a 401 the client
//! hands the rejected token back through [`TokenSource::invalidate`] and asks again once;
//! the source decides whether that means a new mint or a token another worker already
//! obtained (pitfall 14 d).

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The longest bearer token accepted, in bytes (JWT-formatted Epic tokens are a few KB).
pub const MAX_BEARER_LEN: usize = 16 * 1024;

/// A bearer access token. `Debug` prints a placeholder; there is no `Display` and no
/// `Serialize`, so the value never reaches a log, an error or an audit record by accident.
#[derive(Clone)]
pub struct Bearer {
    value: Arc<str>,
    header: HeaderValue,
    tag: u64,
}

/// Why a string cannot be used as a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBearer {
    /// The token is empty.
    #[error("the access token is empty")]
    Empty,
    /// The token is longer than [`MAX_BEARER_LEN`].
    #[error("the access token is longer than 16 KiB")]
    TooLong,
    /// The token holds spaces, control characters or non-ASCII.
    #[error("the access token holds characters that cannot be sent in an Authorization header")]
    BadCharacters,
}

impl Bearer {
    /// Wraps a token value; refuses one that cannot be sent as `Authorization: Bearer …`.
    pub fn new(value: &str) -> Result<Self, InvalidBearer> {
        if value.is_empty() {
            return Err(InvalidBearer::Empty);
        }
        if value.len() > MAX_BEARER_LEN {
            return Err(InvalidBearer::TooLong);
        }
        if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(InvalidBearer::BadCharacters);
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {value}")).map_err(|_| InvalidBearer::BadCharacters)?;
        header.set_sensitive(true);
        Ok(Self { value: Arc::from(value), header, tag: 0 })
    }

    /// The same token carrying `tag`: an opaque number the token source may use to
    /// recognise its own token when it comes back through [`TokenSource::invalidate`]
    /// (for example the auth manager's token generation).
    pub fn with_tag(mut self, tag: u64) -> Self {
        self.tag = tag;
        self
    }

    /// The tag set by [`Bearer::with_tag`] (0 when none was set).
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The token value itself, for putting it on the wire or comparing it in a token source.
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// The `Authorization` header value, marked sensitive.
    pub(crate) fn authorization(&self) -> &HeaderValue {
        &self.header
    }
}

impl PartialEq for Bearer {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Bearer {}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bearer(<redacted>, tag {})", self.tag)
    }
}

/// Why the token source could not give a token. Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint is down or answered with a server error; try again later.
    #[error("the EHR token endpoint is unavailable: {detail}")]
    Unavailable {
        /// What went wrong (no secrets).
        detail: String,
        /// When to try again, if known.
        retry_after: Option<Duration>,
    },
    /// The token endpoint refused our credentials (`invalid_client`, `unauthorized_client`,
    /// `invalid_scope`): retrying will not help until the connection is fixed.
    #[error("the EHR refused this connection's credentials: {detail}")]
    Misconfigured {
        /// What the token endpoint said (no secrets).
        detail: String,
    },
    /// The connection's rate budget does not allow a token request now.
    #[error("the token request budget is spent; retry after {} s", retry_after.as_secs())]
    RateLimited {
        /// When the budget allows the next request.
        retry_after: Duration,
    },
}

/// The connection's request budget is spent for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection's request budget is spent; retry after {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// When the budget allows the next request.
    pub retry_after: Duration,
}

/// Supplies bearer tokens and request permits for one EHR connection.
///
/// Implemented by the auth manager's adapter in production and by fakes in tests. All
/// methods may be called concurrently from several walks.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A token good for the request about to be sent. Called before every request,
    /// including each page of a walk and each retry; renewing ahead of expiry is the
    /// source's decision.
    async fn bearer(&self) -> Result<Bearer, TokenError>;

    /// The EHR answered 401 to a request made with `rejected`. The source should drop
    /// that exact token if it is still the cached one (and do nothing if it has already
    /// been replaced), so the next [`bearer`](Self::bearer) returns a different token.
    async fn invalidate(&self, rejected: &Bearer);

    /// Permission to send one FHIR request under the connection's rate budget.
    async fn acquire_request(&self) -> Result<(), RateLimited>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_redacted_and_validated() {
        let b = Bearer::new("at-1.secret").unwrap().with_tag(7);
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert_eq!(dbg, "Bearer(<redacted>, tag 7)");
        assert_eq!(b.expose_secret(), "at-1.secret");
        assert!(b.authorization().is_sensitive());
        assert_eq!(b.authorization().to_str().unwrap(), "Bearer at-1.secret");
        assert_eq!(Bearer::new(""), Err(InvalidBearer::Empty));
        assert_eq!(Bearer::new("a b"), Err(InvalidBearer::BadCharacters));
        assert_eq!(Bearer::new("tök"), Err(InvalidBearer::BadCharacters));
        assert_eq!(Bearer::new(&"a".repeat(MAX_BEARER_LEN + 1)), Err(InvalidBearer::TooLong));
        assert!(Bearer::new(&"a".repeat(MAX_BEARER_LEN)).is_ok());
    }
}
