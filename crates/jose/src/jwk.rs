//! Public JWKs and JWK Sets, and the verifying keys made from them.
//!
//! The JWK data types and the RFC 7638 thumbprint are `jsonwebtoken`'s; this module adds
//! the rules for *using* a JWK to verify: which algorithm it may verify (from its own
//! `alg` if it has one, otherwise from its key type), and that a key marked for
//! encryption (`use: enc`) or whose `key_ops` lack `verify` is never used.

use crate::alg::{Alg, KeyFamily};
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk, JwkSet,
    KeyAlgorithm, KeyOperations, PublicKeyUse, RSAKeyParameters, RSAKeyType, ThumbprintHash,
};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A public JWK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicJwk(pub Jwk);

impl PublicJwk {
    /// An RSA public key from big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        PublicJwk(Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::RSA(RSAKeyParameters { key_type: RSAKeyType::RSA, n: B64.encode(n), e: B64.encode(e) }),
        })
    }

    /// An EC P-384 public key from its uncompressed SEC1 point (`0x04 || x || y`).
    pub fn ec_p384_from_uncompressed(point: &[u8]) -> Option<Self> {
        if point.len() != 97 || point[0] != 4 {
            return None;
        }
        let (x, y) = point[1..].split_at(48);
        Some(PublicJwk(Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P384,
                x: B64.encode(x),
                y: B64.encode(y),
            }),
        }))
    }

    /// Sets `kid`.
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.0.common.key_id = Some(kid.to_owned());
        self
    }

    /// Sets `alg` and `use: sig`.
    pub fn with_alg(mut self, alg: Alg) -> Self {
        self.0.common.key_algorithm = Some(match alg {
            Alg::RS256 => KeyAlgorithm::RS256,
            Alg::RS384 => KeyAlgorithm::RS384,
            Alg::RS512 => KeyAlgorithm::RS512,
            Alg::ES256 => KeyAlgorithm::ES256,
            Alg::ES384 => KeyAlgorithm::ES384,
        });
        self.0.common.public_key_use = Some(PublicKeyUse::Signature);
        self
    }

    /// The `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.0.common.key_id.as_deref()
    }

    /// The RFC 7638 SHA-256 thumbprint (base64url).
    pub fn thumbprint(&self) -> String {
        // Only RSA and EC P-384 keys are ever built here, for which jsonwebtoken's
        // thumbprint cannot fail; fall back to an impossible-to-collide marker anyway.
        self.0.thumbprint(ThumbprintHash::SHA256).unwrap_or_else(|_| "invalid-thumbprint".to_owned())
    }
}

/// A JWK Set document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<PublicJwk>,
}

impl Jwks {
    /// Parses a JWKS document. Keys of kinds we cannot use are kept (and skipped when
    /// looked up), so a set mixing key types still loads.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JwkError> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwkError::Malformed(e.to_string()))?;
        Ok(Jwks { keys: set.keys.into_iter().map(PublicJwk).collect() })
    }

    /// The keys whose `kid` equals `kid` exactly.
    pub fn by_kid<'a>(&'a self, kid: &'a str) -> impl Iterator<Item = &'a PublicJwk> + 'a {
        self.keys.iter().filter(move |k| k.kid() == Some(kid))
    }
}

/// Why a JWK cannot be used to verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// Not valid JWK/JWKS JSON.
    #[error("malformed JWK set: {0}")]
    Malformed(String),
    /// A key type or curve we do not verify with.
    #[error("unsupported key type: {0}")]
    Unsupported(String),
    /// `use` is not `sig`.
    #[error("key is marked for use {0:?}, not \"sig\"")]
    NotForSignatures(String),
    /// `key_ops` present without `verify`.
    #[error("key_ops does not include \"verify\"")]
    NoVerifyOp,
    /// `alg` names an algorithm we do not accept, or one that does not fit the key.
    #[error("key alg {0} does not fit this key or is not supported")]
    BadAlg(String),
    /// Key members did not decode.
    #[error("key members are not valid base64url or do not form a valid key")]
    BadKey,
    /// RSA modulus under 2048 bits.
    #[error("RSA key smaller than 2048 bits")]
    RsaTooSmall,
}

/// A public key ready to verify signatures, with the algorithms it may verify.
pub struct VerifyingKey {
    kid: Option<String>,
    family: KeyFamily,
    pinned: Option<Alg>,
    rsa_bits: usize,
    parsed: Vec<(Alg, ParsedPublicKey)>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("family", &self.family).field("pinned", &self.pinned).finish()
    }
}

fn rsa_params(alg: Alg) -> &'static signature::RsaParameters {
    match alg {
        Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        _ => &signature::RSA_PKCS1_2048_8192_SHA384,
    }
}

impl VerifyingKey {
    /// Builds a verifying key from a JWK, applying the `use`/`key_ops`/`alg` rules.
    pub fn from_jwk(jwk: &PublicJwk) -> Result<Self, JwkError> {
        let c = &jwk.0.common;
        match &c.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(PublicKeyUse::Encryption) => return Err(JwkError::NotForSignatures("enc".into())),
            Some(PublicKeyUse::Other(o)) => return Err(JwkError::NotForSignatures(o.chars().take(16).collect())),
        }
        if let Some(ops) = &c.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err(JwkError::NoVerifyOp);
        }
        let pinned = match c.key_algorithm {
            None => None,
            Some(a) => Some(format!("{a:?}").parse::<Alg>().map_err(|_| JwkError::BadAlg(format!("{a:?}")))?),
        };
        let (family, rsa_n, rsa_e, mut parsed) = match &jwk.0.algorithm {
            AlgorithmParameters::RSA(p) => {
                let n = B64.decode(&p.n).map_err(|_| JwkError::BadKey)?;
                let e = B64.decode(&p.e).map_err(|_| JwkError::BadKey)?;
                let n_trim: &[u8] = { let i = n.iter().position(|b| *b != 0).unwrap_or(n.len()); &n[i..] };
                if n_trim.len() * 8 < 2048 {
                    return Err(JwkError::RsaTooSmall);
                }
                (KeyFamily::Rsa, n_trim.to_vec(), e, Vec::new())
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let (family, alg, size) = match p.curve {
                    EllipticCurve::P256 => (KeyFamily::EcP256, Alg::ES256, 32),
                    EllipticCurve::P384 => (KeyFamily::EcP384, Alg::ES384, 48),
                    ref other => return Err(JwkError::Unsupported(format!("EC curve {other:?}"))),
                };
                let x = B64.decode(&p.x).map_err(|_| JwkError::BadKey)?;
                let y = B64.decode(&p.y).map_err(|_| JwkError::BadKey)?;
                if x.len() != size || y.len() != size {
                    return Err(JwkError::BadKey);
                }
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let verify_alg: &'static signature::EcdsaVerificationAlgorithm =
                    if alg == Alg::ES256 { &signature::ECDSA_P256_SHA256_FIXED } else { &signature::ECDSA_P384_SHA384_FIXED };
                let pk = ParsedPublicKey::new(verify_alg, &point).map_err(|_| JwkError::BadKey)?;
                (family, Vec::new(), Vec::new(), vec![(alg, pk)])
            }
            AlgorithmParameters::OctetKey(_) => return Err(JwkError::Unsupported("symmetric (oct) key".into())),
            AlgorithmParameters::OctetKeyPair(_) => return Err(JwkError::Unsupported("OKP key".into())),
            _ => return Err(JwkError::Unsupported("unknown kty".into())),
        };
        if let Some(p) = pinned
            && p.family() != family
        {
            return Err(JwkError::BadAlg(p.to_string()));
        }
        if family == KeyFamily::Rsa {
            for alg in [Alg::RS256, Alg::RS384, Alg::RS512] {
                let comps = RsaPublicKeyComponents { n: &rsa_n, e: &rsa_e };
                let pk = comps.to_parsed_public_key(rsa_params(alg)).map_err(|_| JwkError::BadKey)?;
                parsed.push((alg, pk));
            }
        }
        Ok(VerifyingKey { kid: c.key_id.clone(), family, pinned, rsa_bits: rsa_n.len() * 8, parsed })
    }

    /// The `kid`, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key family.
    pub fn family(&self) -> KeyFamily {
        self.family
    }

    /// Whether this key may verify `alg`: the family fits, and the JWK's own `alg`, if
    /// present, is exactly `alg`.
    pub fn permits(&self, alg: Alg) -> bool {
        alg.family() == self.family && self.pinned.is_none_or(|p| p == alg)
    }

    /// Verifies `signature` over `message` with `alg`. Fails if the key does not permit `alg`.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.permits(alg) {
            return false;
        }
        self.parsed.iter().find(|(a, _)| *a == alg).is_some_and(|(_, pk)| pk.verify_sig(message, signature).is_ok())
    }

    /// The RSA modulus length in bits (0 for EC keys).
    pub fn rsa_bits(&self) -> usize {
        self.rsa_bits
    }
}
