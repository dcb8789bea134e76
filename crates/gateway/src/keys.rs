//! The gateway's own signing key (receipts, checkpoints, dashboard sessions) and the
//! JWKS document we publish at `/.well-known/jwks.json`.
//!
//! One JWKS holds every public key we sign with: the gateway key ring (current and
//! pending/retiring keys during a rotation) and each EHR connection's assertion keys
//! (supplied by the auth manager through [`PublishedKeys`]). Each has its own `kid`.

use medicodax_clock::SharedClock;
use medicodax_jose::jws;
use medicodax_jose::{Jwks, KeyRing, PrivateKey, PublicJwk, RingEvent, VerifyingKey};
use serde::Serialize;
use std::sync::{Arc, RwLock};

/// Something else whose public keys we publish (the EHR connections' assertion keys).
pub trait PublishedKeys: Send + Sync + 'static {
    /// The public keys to publish now.
    fn public_keys(&self, now: i64) -> Vec<PublicJwk>;
}

/// The gateway key ring and the JWKS we publish.
pub struct GatewayKeys {
    ring: RwLock<KeyRing>,
    others: RwLock<Vec<Arc<dyn PublishedKeys>>>,
    clock: SharedClock,
}

impl std::fmt::Debug for GatewayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKeys").finish_non_exhaustive()
    }
}

/// Signing failed in the crypto library.
#[derive(Debug, thiserror::Error)]
#[error("signing with the gateway key failed")]
pub struct GatewaySignError;

impl GatewayKeys {
    /// Wraps a key ring.
    pub fn new(ring: KeyRing, clock: SharedClock) -> Self {
        GatewayKeys { ring: RwLock::new(ring), others: RwLock::new(Vec::new()), clock }
    }

    /// Adds another publisher of public keys.
    pub fn publish_also(&self, other: Arc<dyn PublishedKeys>) {
        self.others.write().unwrap_or_else(|p| p.into_inner()).push(other);
    }

    /// The current signing key.
    pub fn signer(&self) -> Arc<PrivateKey> {
        let now = self.clock.now_unix();
        self.ring.read().unwrap_or_else(|p| p.into_inner()).signer(now)
    }

    /// Signs claims with the current gateway key as a JWS of `typ`.
    pub fn sign<T: Serialize + ?Sized>(&self, typ: &str, claims: &T) -> Result<String, GatewaySignError> {
        jws::sign(&self.signer(), typ, claims).map_err(|_| GatewaySignError)
    }

    /// Verifying keys for everything the gateway ring holds (for checking our own
    /// receipts, checkpoints and sessions).
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).all_public().iter().filter_map(|k| VerifyingKey::from_jwk(k).ok()).collect()
    }

    /// The JWKS we publish now, and its `Cache-Control`.
    pub fn jwks(&self) -> (Jwks, String) {
        let now = self.clock.now_unix();
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let mut set = ring.published(now);
        let cc = ring.cache_control();
        drop(ring);
        for o in self.others.read().unwrap_or_else(|p| p.into_inner()).iter() {
            for k in o.public_keys(now) {
                if !set.keys.iter().any(|e| e.kid() == k.kid()) {
                    set.keys.push(k);
                }
            }
        }
        (set, cc)
    }

    /// Starts a rotation of the gateway key.
    pub fn start_rotation(&self) -> Result<RingEvent, medicodax_jose::ring::RingError> {
        let now = self.clock.now_unix();
        self.ring.write().unwrap_or_else(|p| p.into_inner()).start_rotation(now)
    }

    /// Advances the rotation schedule; returns the steps taken (to be audited).
    pub fn tick(&self) -> Result<Vec<RingEvent>, medicodax_jose::ring::RingError> {
        let now = self.clock.now_unix();
        self.ring.write().unwrap_or_else(|p| p.into_inner()).tick(now)
    }
}
