//! Signed checkpoints: the log's size and root at a time, as a compact JWS signed with
//! the gateway key (`typ` `medicodax-checkpoint+jwt`, claims
//! [`CheckpointClaims`]).
//!
//! Anyone holding an older checkpoint can later ask for a consistency proof to the
//! current log, which catches truncation and rewriting. Verification looks the signing
//! key up by `kid` in a [`CheckpointKeys`] set, so checkpoints signed before a gateway key
//! rotation still verify with the retired key's public half.

use crate::error::AuditError;
use medicodax_jose::jws::{Compact, HeaderRules};
use medicodax_jose::{Alg, Jwks, PrivateKey, VerifyingKey};
use medicodax_wire::{CHECKPOINT_TYP, CheckpointClaims};
use serde::Serialize;
use std::sync::Arc;

/// The algorithms a checkpoint may be signed with (the gateway key's).
pub const CHECKPOINT_ALGS: [Alg; 2] = [Alg::RS384, Alg::ES384];

/// A checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoredCheckpoint {
    /// Its row id.
    pub id: i64,
    /// Number of leaves.
    pub size: u64,
    /// Tree head, hex.
    pub root: String,
    /// Unix seconds.
    pub time: i64,
    /// The signing key's `kid`.
    pub kid: String,
    /// The compact JWS: the authoritative form.
    pub jws: String,
}

/// Where the writer gets the gateway key for a checkpoint (a fixed key, or the current
/// signer of the gateway's key ring).
pub trait CheckpointSigner: Send + Sync + 'static {
    /// The key to sign with at `now_unix`.
    fn signing_key(&self, now_unix: i64) -> Arc<PrivateKey>;
}

impl CheckpointSigner for Arc<PrivateKey> {
    fn signing_key(&self, _now_unix: i64) -> Arc<PrivateKey> {
        Arc::clone(self)
    }
}

impl<F> CheckpointSigner for F
where
    F: Fn(i64) -> Arc<PrivateKey> + Send + Sync + 'static,
{
    fn signing_key(&self, now_unix: i64) -> Arc<PrivateKey> {
        self(now_unix)
    }
}

/// Signs checkpoint claims.
pub fn sign_checkpoint(key: &PrivateKey, claims: &CheckpointClaims) -> Result<String, AuditError> {
    medicodax_jose::jws::sign(key, CHECKPOINT_TYP, claims).map_err(|_| AuditError::Sign)
}

/// The public keys checkpoints are verified with, found by `kid`.
#[derive(Debug, Default)]
pub struct CheckpointKeys {
    keys: Vec<VerifyingKey>,
}

impl From<VerifyingKey> for CheckpointKeys {
    fn from(k: VerifyingKey) -> Self {
        CheckpointKeys { keys: vec![k] }
    }
}

impl CheckpointKeys {
    /// A set of verifying keys.
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        CheckpointKeys { keys }
    }

    /// The usable signing keys of a JWKS (the gateway's published set, including keys
    /// kept after rotation); keys that cannot verify are skipped.
    pub fn from_jwks(jwks: &Jwks) -> Self {
        CheckpointKeys { keys: jwks.keys.iter().filter_map(|k| VerifyingKey::from_jwk(k).ok()).collect() }
    }

    /// The public half of a private key.
    pub fn from_private(key: &PrivateKey) -> Result<Self, AuditError> {
        VerifyingKey::from_jwk(key.public_jwk()).map(Self::from).map_err(|e| AuditError::Checkpoint(format!("the gateway key's public half is unusable: {e}")))
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a checkpoint JWS: header (`typ`, `kid`, nothing else), a key of this set
    /// found by `kid`, the signature, and claims of the right shape with a hex root.
    pub fn verify(&self, jws: &str) -> Result<CheckpointClaims, CheckpointFault> {
        let c = Compact::parse(jws.trim(), HeaderRules { allowed: &["typ", "kid"], typ: Some(CHECKPOINT_TYP), require_kid: true })
            .map_err(|e| CheckpointFault::Malformed(e.to_string()))?;
        let kid = c.kid().unwrap_or_default();
        let key = self
            .keys
            .iter()
            .find(|k| k.kid() == Some(kid))
            .or_else(|| match self.keys.as_slice() {
                [only] if only.kid().is_none() => Some(only),
                _ => None,
            })
            .ok_or_else(|| CheckpointFault::UnknownKey(kid.chars().take(64).collect()))?;
        c.verify(key, &CHECKPOINT_ALGS).map_err(|e| CheckpointFault::BadSignature(e.to_string()))?;
        let payload = c.payload_object().map_err(|e| CheckpointFault::Malformed(e.to_string()))?;
        let claims: CheckpointClaims =
            serde_json::from_value(serde_json::Value::Object(payload)).map_err(|e| CheckpointFault::Malformed(format!("claims: {e}")))?;
        crate::merkle::from_hex(&claims.root).map_err(|e| CheckpointFault::Malformed(e.to_string()))?;
        Ok(claims)
    }
}

/// Why a checkpoint JWS was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "fault", content = "detail", rename_all = "snake_case")]
pub enum CheckpointFault {
    /// Not a well-formed checkpoint JWS.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Signed with a key not in the set.
    #[error("signed with key {0:?}, which is not among the gateway keys given")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
}

impl From<CheckpointFault> for AuditError {
    fn from(f: CheckpointFault) -> Self {
        AuditError::Checkpoint(f.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> CheckpointClaims {
        CheckpointClaims { origin: "http://127.0.0.1:8080".into(), size: 3, root: "ab".repeat(32), time: 1_767_225_600 }
    }

    #[test]
    fn signed_checkpoints_verify_and_tampering_fails() {
        let key = PrivateKey::generate(Alg::ES384).unwrap();
        let keys = CheckpointKeys::from_private(&key).unwrap();
        let jws = sign_checkpoint(&key, &claims()).unwrap();
        assert_eq!(keys.verify(&jws).unwrap(), claims());

        // Change the payload (size 3 -> 4) keeping the signature.
        let parts: Vec<&str> = jws.split('.').collect();
        let mut c = claims();
        c.size = 4;
        use base64::Engine as _;
        let forged = format!("{}.{}.{}", parts[0], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap()), parts[2]);
        assert!(matches!(keys.verify(&forged), Err(CheckpointFault::BadSignature(_))));

        // Another key with another kid is unknown.
        let other = PrivateKey::generate(Alg::ES384).unwrap();
        let by_other = sign_checkpoint(&other, &claims()).unwrap();
        assert!(matches!(keys.verify(&by_other), Err(CheckpointFault::UnknownKey(k)) if k == other.kid()));

        // A receipt is not a checkpoint.
        let receipt = medicodax_jose::jws::sign(&key, medicodax_wire::RECEIPT_TYP, &claims()).unwrap();
        assert!(matches!(keys.verify(&receipt), Err(CheckpointFault::Malformed(_))));
    }

    #[test]
    fn keys_from_a_jwks_include_retired_ones() {
        let old = PrivateKey::generate(Alg::ES384).unwrap();
        let new = PrivateKey::generate(Alg::ES384).unwrap();
        let jwks = Jwks { keys: vec![old.public_jwk().clone(), new.public_jwk().clone()] };
        let keys = CheckpointKeys::from_jwks(&jwks);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.verify(&sign_checkpoint(&old, &claims()).unwrap()).unwrap().size, 3);
        assert_eq!(keys.verify(&sign_checkpoint(&new, &claims()).unwrap()).unwrap().size, 3);
    }

    #[test]
    fn a_root_that_is_not_hex_is_malformed() {
        let key = PrivateKey::generate(Alg::ES384).unwrap();
        let mut c = claims();
        c.root = "not-hex".into();
        let jws = sign_checkpoint(&key, &c).unwrap();
        assert!(matches!(CheckpointKeys::from_private(&key).unwrap().verify(&jws), Err(CheckpointFault::Malformed(_))));
    }
}

/// The `origin` claim of a checkpoint JWS, read without verifying it.
pub fn origin_of(jws: &str) -> Option<String> {
    let c = medicodax_jose::jws::Compact::parse(jws, medicodax_jose::jws::HeaderRules { allowed: &["typ", "kid"], typ: Some(medicodax_wire::CHECKPOINT_TYP), require_kid: true }).ok()?;
    c.payload_object().ok()?.get("origin")?.as_str().map(str::to_owned)
}
