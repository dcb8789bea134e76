//! JWA algorithm names.

use std::fmt;
use std::str::FromStr;

/// A JWS algorithm this crate can name. Which ones are *accepted* is always decided by an
/// explicit allow-list at the call site, never by the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (the SMART baseline).
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384 (the SMART baseline).
    ES384,
}

impl Alg {
    /// Algorithms we can sign with.
    pub const SIGNING: [Alg; 2] = [Alg::RS384, Alg::ES384];

    /// The JWA name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    /// The key family the algorithm needs.
    pub const fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 => KeyFamily::Rsa,
            Alg::ES256 => KeyFamily::EcP256,
            Alg::ES384 => KeyFamily::EcP384,
        }
    }

    /// Whether we can produce signatures with it.
    pub fn can_sign(self) -> bool {
        Alg::SIGNING.contains(&self)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name we do not handle (matching is exact and case-sensitive, so `none`,
/// `None`, `HS256` and `PS384` all land here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported JWS algorithm {0:?}: expected one of RS256, RS384, RS512, ES256, ES384")]
pub struct UnsupportedAlg(pub String);

impl FromStr for Alg {
    type Err = UnsupportedAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            other => return Err(UnsupportedAlg(other.chars().take(32).collect())),
        })
    }
}

/// The kind of key an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// RSA, at least 2048 bits.
    Rsa,
    /// EC on P-256.
    EcP256,
    /// EC on P-384.
    EcP384,
}

impl fmt::Display for KeyFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFamily::Rsa => "RSA",
            KeyFamily::EcP256 => "EC P-256",
            KeyFamily::EcP384 => "EC P-384",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact() {
        for a in [Alg::RS256, Alg::RS384, Alg::RS512, Alg::ES256, Alg::ES384] {
            assert_eq!(a.as_str().parse::<Alg>().unwrap(), a);
        }
        for bad in ["none", "None", "NONE", "nOnE", "rs384", "HS256", "PS384", "RS364", ""] {
            assert!(bad.parse::<Alg>().is_err(), "{bad}");
        }
        assert!(Alg::RS384.can_sign() && Alg::ES384.can_sign());
        assert!(!Alg::RS256.can_sign());
    }
}
