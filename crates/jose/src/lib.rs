//! Keys and JWS for MEDICODAX: the keys layer of `DESIGN.md`.
//!
//! Everything that signs or verifies goes through this crate; it knows nothing of HTTP
//! or FHIR. Crypto is `aws-lc-rs`; JWK types and RFC 7638 thumbprints are
//! `jsonwebtoken`'s. Key types:
//!
//! - [`PrivateKey`]: an RS384 or ES384 signing key loaded from PEM (PKCS#8, PKCS#1,
//!   SEC1; LF, CRLF or one-line) or generated; `kid` is its RFC 7638 thumbprint.
//! - [`jws::sign`] / [`jws::Compact`]: compact JWS signing with a held key, and strict
//!   parsing and verification against an explicit algorithm allow-list.
//! - [`VerifyingKey`] / [`Jwks`]: public keys and the rules for using a JWK to verify.
//! - [`TimeRules`]: `iat`/`nbf`/`exp` checks with an explicit leeway and lifetime cap.
//! - [`KeyRing`]: a job's keys with publish-before-use, retire-after-last-use rotation.

pub mod alg;
pub mod jwk;
pub mod jws;
pub mod key;
pub mod ring;
pub mod time;

pub use alg::{Alg, KeyFamily};
pub use jwk::{JwkError, Jwks, PublicJwk, VerifyingKey};
pub use jws::{Compact, HeaderRules, JwsError};
pub use key::{KeyError, PrivateKey};
pub use ring::{KeyRing, RingEvent, RotationPolicy};
pub use time::{TimeError, TimeRules};

/// Checks at startup that the JOSE crypto provider is available, so a misbuilt binary
/// fails here rather than at the first token.
pub fn init() -> Result<(), &'static str> {
    match jsonwebtoken::crypto::CryptoProvider::try_get_default() {
        Some(_) => Ok(()),
        None => Err("no JOSE crypto provider: the build must enable exactly one jsonwebtoken backend (aws_lc_rs)"),
    }
}
