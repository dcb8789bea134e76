//! The access token as a value that cannot leak by accident.
//!
//! [`AccessToken`] keeps the bearer token and the ready-made `Authorization` header
//! (marked sensitive, so `http`'s own `Debug` hides it). Its `Debug` and `Display` print
//! a fixed placeholder, it does not implement `Serialize`, and the only way to read the
//! value is the explicitly named [`AccessToken::expose_secret`].

use reqwest::header::HeaderValue;
use std::fmt;
use std::sync::Arc;

/// The longest access token accepted, in bytes (Epic JWT-formatted tokens are a few KB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A bearer access token. Never shown by `Debug` or `Display`.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<str>,
    header: HeaderValue,
}

/// Why a token string cannot be used as a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// Empty string.
    #[error("access_token is empty")]
    Empty,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("access_token is longer than 16 KiB")]
    TooLong,
    /// Holds spaces, control characters or non-ASCII, so it cannot go in an HTTP header.
    #[error("access_token holds characters that cannot be sent in an Authorization header")]
    BadCharacters,
}

impl AccessToken {
    /// Wraps a token value; refuses one that cannot be sent as `Authorization: Bearer …`.
    pub fn new(value: String) -> Result<Self, InvalidToken> {
        if value.is_empty() {
            return Err(InvalidToken::Empty);
        }
        if value.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken::TooLong);
        }
        if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(InvalidToken::BadCharacters);
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {value}")).map_err(|_| InvalidToken::BadCharacters)?;
        header.set_sensitive(true);
        Ok(AccessToken { value: Arc::from(value), header })
    }

    /// The token value itself. Only for putting it on the wire (or `--show-token`).
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// The `Authorization: Bearer …` header value, marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether both hold the same token value.
    pub fn same_value(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.value, &other.value) || self.value == other.value
    }

    /// The token's length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Always false: an access token is never empty.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken([redacted; {} bytes])", self.value.len())
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted access token]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let t = AccessToken::new("at-SECRET-123".into()).unwrap();
        for shown in [format!("{t:?}"), format!("{t}"), format!("{:?}", t.authorization()), format!("{:#?}", Some(&t))] {
            assert!(!shown.contains("SECRET"), "{shown}");
        }
        assert_eq!(format!("{t:?}"), "AccessToken([redacted; 13 bytes])");
        assert_eq!(t.expose_secret(), "at-SECRET-123");
        assert_eq!(t.authorization().to_str().unwrap(), "Bearer at-SECRET-123");
        assert!(t.authorization().is_sensitive());
    }

    #[test]
    fn values_that_cannot_be_headers_are_refused() {
        assert_eq!(AccessToken::new(String::new()).unwrap_err(), InvalidToken::Empty);
        assert_eq!(AccessToken::new("a b".into()).unwrap_err(), InvalidToken::BadCharacters);
        assert_eq!(AccessToken::new("a\nb".into()).unwrap_err(), InvalidToken::BadCharacters);
        assert_eq!(AccessToken::new("é".into()).unwrap_err(), InvalidToken::BadCharacters);
        assert_eq!(AccessToken::new("x".repeat(MAX_TOKEN_LEN + 1)).unwrap_err(), InvalidToken::TooLong);
        assert!(AccessToken::new("eyJ.a-b_c~d+e/f==".into()).is_ok());
    }

    #[test]
    fn same_value_compares_contents() {
        let a = AccessToken::new("at-1".into()).unwrap();
        let b = AccessToken::new("at-1".into()).unwrap();
        let c = AccessToken::new("at-2".into()).unwrap();
        assert!(a.same_value(&b) && a.same_value(&a.clone()));
        assert!(!a.same_value(&c));
    }
}
