//! Each connection's assertion key.
//!
//! A connection either names a PEM file (`key`, loaded with the connection's algorithm;
//! a configured `kid` replaces the thumbprint) or gets a managed [`KeyRing`] under
//! `<data_dir>/keys/connections/<name>/`, created on first start and rotated with
//! publish-before-use. Either way the key is loaded at startup, so a bad key stops the
//! process with a message naming the connection, never at the first token request.

use medicodax_jose::ring::RingError;
use medicodax_jose::{Jwks, KeyRing, PrivateKey, RingEvent, RotationPolicy};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::profile::{ConnectionSettings, SetupError, SetupProblem};

/// The folder of a connection's managed key ring.
pub fn ring_dir(data_dir: &Path, connection: &str) -> PathBuf {
    data_dir.join("keys").join("connections").join(connection)
}

pub(crate) struct ConnectionKeys {
    ring: RwLock<KeyRing>,
    managed: bool,
}

impl std::fmt::Debug for ConnectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionKeys").field("managed", &self.managed).finish_non_exhaustive()
    }
}

fn setup(s: &ConnectionSettings, setting: &'static str, problem: SetupProblem) -> SetupError {
    SetupError { connection: s.name.clone(), setting, problem }
}

impl ConnectionKeys {
    /// Loads the configured key file, or opens (creating if needed) the managed ring.
    pub(crate) fn load(
        s: &ConnectionSettings,
        key_path: Option<&Path>,
        data_dir: Option<&Path>,
        policy: RotationPolicy,
        now: i64,
    ) -> Result<(Self, Vec<RingEvent>), SetupError> {
        let policy = RotationPolicy { max_token_lifetime: i64::try_from(s.assertion_lifetime).unwrap_or(300), ..policy };
        if let Some(path) = key_path {
            let key = PrivateKey::from_file(path, s.alg).map_err(|e| setup(s, "key", SetupProblem::Key(format!("{}: {e}", path.display()))))?;
            let key = match &s.kid {
                Some(kid) => key.with_kid(kid.clone()),
                None => key,
            };
            return Ok((ConnectionKeys { ring: RwLock::new(KeyRing::single(&s.name, key, policy)), managed: false }, Vec::new()));
        }
        let Some(data_dir) = data_dir else {
            return Err(setup(s, "key", SetupProblem::NoKey));
        };
        if s.name == "." || s.name == ".." || s.name.contains(['/', '\\']) {
            return Err(setup(s, "name", SetupProblem::Key("this name cannot be used as a key folder name".into())));
        }
        let dir = ring_dir(data_dir, &s.name);
        let (ring, events) = KeyRing::open_or_create(&dir, &s.name, s.alg, policy, now).map_err(|e| setup(s, "key", SetupProblem::Key(e.to_string())))?;
        Ok((ConnectionKeys { ring: RwLock::new(ring), managed: true }, events))
    }

    /// A fixed key given by the program (tests, tools).
    pub(crate) fn provided(s: &ConnectionSettings, key: PrivateKey, policy: RotationPolicy) -> Result<Self, SetupError> {
        if key.alg() != s.alg {
            return Err(setup(s, "alg", SetupProblem::Key(format!("the key given signs {} but the connection uses {}", key.alg(), s.alg))));
        }
        Ok(ConnectionKeys { ring: RwLock::new(KeyRing::single(&s.name, key, policy)), managed: false })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyRing> {
        // A poisoned lock means a panic during a rotation step; the ring's state on disk
        // is written atomically, and the in-memory keys are still valid keys.
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key that signs at `now`.
    pub(crate) fn signer(&self, now: i64) -> Arc<PrivateKey> {
        self.read().signer(now)
    }

    /// The public keys published at `now`.
    pub(crate) fn published(&self, now: i64) -> Jwks {
        self.read().published(now)
    }

    /// The `Cache-Control` value for this ring's keys.
    pub(crate) fn cache_control_max_age(&self) -> i64 {
        let p = self.read().policy();
        p.jwks_max_age.min(p.publish_lead).max(0)
    }

    /// Whether this is a managed (rotatable) ring.
    pub(crate) fn managed(&self) -> bool {
        self.managed
    }

    /// Moves the rotation schedule to `now`.
    pub(crate) fn tick(&self, now: i64) -> Result<Vec<RingEvent>, RingError> {
        self.ring.write().unwrap_or_else(|p| p.into_inner()).tick(now)
    }

    /// Starts a rotation.
    pub(crate) fn rotate(&self, now: i64) -> Result<RingEvent, RingError> {
        self.ring.write().unwrap_or_else(|p| p.into_inner()).start_rotation(now)
    }
}
