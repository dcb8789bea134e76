//! A key ring for one job (a connection's assertion key, or the gateway key), with
//! rotation that never lets a verifier see a `kid` it cannot find.
//!
//! Rotation follows pitfalls case 9:
//! - a new key is *published* at once and starts *signing* only `publish_lead` later;
//! - the old key stays published until the last token it could have signed has expired
//!   (`successor activation + max_token_lifetime`) plus the consumers' JWKS cache time;
//! - the published set is never empty, and the signer is always in it;
//! - each step yields a [`RingEvent`] for the audit log.
//!
//! State is kept in `ring.json` next to one `0600` PEM file per key, so a restart picks
//! up a rotation where it was. Times are wall-clock Unix seconds (they must survive a
//! restart); the clock is injected by the caller.

use crate::alg::Alg;
use crate::jwk::{Jwks, PublicJwk};
use crate::key::{KeyError, PrivateKey, write_private_key};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How rotations are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Seconds between publishing a new key and signing with it.
    pub publish_lead: i64,
    /// How long consumers may cache our JWKS, in seconds.
    pub consumer_cache_ttl: i64,
    /// The longest lifetime of anything we sign with this ring, in seconds.
    pub max_token_lifetime: i64,
    /// The `Cache-Control: max-age` we publish (capped by `publish_lead`).
    pub jwks_max_age: i64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy { publish_lead: 24 * 3600, consumer_cache_ttl: 24 * 3600, max_token_lifetime: 300, jwks_max_age: 3600 }
    }
}

/// One key's place in the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingKey {
    /// The key id.
    pub kid: String,
    /// Its algorithm.
    pub alg: String,
    /// The PEM file name inside the ring folder.
    pub file: String,
    /// When it was first published.
    pub published_at: i64,
    /// When it starts signing.
    pub activates_at: i64,
    /// When it stops being published (set once a successor is activated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpublish_at: Option<i64>,
}

/// A step of a rotation, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RingEvent {
    /// `key.created`, `key.rotation.started`, `key.activated`, `key.unpublished`.
    pub event: &'static str,
    /// The ring's name.
    pub ring: String,
    /// The key concerned.
    pub kid: String,
    /// When (Unix seconds).
    pub at: i64,
    /// For `key.rotation.started`: when the new key will sign. For `key.activated`: the
    /// previous signer and when it will be unpublished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct RingFile {
    name: String,
    alg: String,
    policy: RotationPolicy,
    keys: Vec<RingKey>,
}

/// Errors of the key ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A key could not be loaded, generated or written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `ring.json` is unreadable or inconsistent.
    #[error("key ring {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A rotation is already under way.
    #[error("a rotation to key {0} is already under way; wait until it signs before rotating again")]
    RotationPending(String),
}

/// The keys of one job and their rotation schedule.
#[derive(Debug)]
pub struct KeyRing {
    name: String,
    alg: Alg,
    dir: Option<PathBuf>,
    policy: RotationPolicy,
    keys: Vec<(RingKey, Arc<PrivateKey>)>,
}

impl KeyRing {
    /// A ring holding one fixed key (a key file named in the configuration): no rotation state.
    pub fn single(name: &str, key: PrivateKey, policy: RotationPolicy) -> Self {
        let meta = RingKey { kid: key.kid().to_owned(), alg: key.alg().to_string(), file: String::new(), published_at: 0, activates_at: 0, unpublish_at: None };
        KeyRing { name: name.to_owned(), alg: key.alg(), dir: None, policy, keys: vec![(meta, Arc::new(key))] }
    }

    /// Opens the ring in `dir`, or creates it with a freshly generated key.
    /// Returns the ring and the events of anything created.
    pub fn open_or_create(dir: &Path, name: &str, alg: Alg, policy: RotationPolicy, now: i64) -> Result<(Self, Vec<RingEvent>), RingError> {
        let state_path = dir.join("ring.json");
        if state_path.exists() {
            let ring = Self::open(dir)?;
            if ring.alg != alg {
                return Err(RingError::State { path: state_path.display().to_string(), reason: format!("holds {} keys but {alg} is configured; move the folder aside to start a new ring", ring.alg) });
            }
            return Ok((ring, Vec::new()));
        }
        let key = PrivateKey::generate(alg)?;
        let file = format!("{}.pem", key.kid());
        write_private_key(&dir.join(&file), &key)?;
        let meta = RingKey { kid: key.kid().to_owned(), alg: alg.to_string(), file, published_at: now, activates_at: now, unpublish_at: None };
        let ring = KeyRing { name: name.to_owned(), alg, dir: Some(dir.to_owned()), policy, keys: vec![(meta, Arc::new(key))] };
        ring.save()?;
        let ev = RingEvent { event: "key.created", ring: name.to_owned(), kid: ring.keys[0].0.kid.clone(), at: now, detail: None };
        Ok((ring, vec![ev]))
    }

    /// Opens an existing ring.
    pub fn open(dir: &Path) -> Result<Self, RingError> {
        let state_path = dir.join("ring.json");
        let bad = |reason: String| RingError::State { path: state_path.display().to_string(), reason };
        let text = std::fs::read(&state_path).map_err(|e| bad(e.kind().to_string()))?;
        let f: RingFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let alg: Alg = f.alg.parse().map_err(|e: crate::alg::UnsupportedAlg| bad(e.to_string()))?;
        let mut keys = Vec::new();
        for k in f.keys {
            let key = PrivateKey::from_file(&dir.join(&k.file), alg)?.with_kid(k.kid.clone());
            keys.push((k, Arc::new(key)));
        }
        if keys.is_empty() {
            return Err(bad("holds no keys".into()));
        }
        Ok(KeyRing { name: f.name, alg, dir: Some(dir.to_owned()), policy: f.policy, keys })
    }

    fn save(&self) -> Result<(), RingError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let state_path = dir.join("ring.json");
        let f = RingFile { name: self.name.clone(), alg: self.alg.to_string(), policy: self.policy, keys: self.keys.iter().map(|(m, _)| m.clone()).collect() };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| RingError::State { path: state_path.display().to_string(), reason: e.to_string() })?;
        let tmp = dir.join("ring.json.tmp");
        let io = |e: std::io::Error| RingError::State { path: state_path.display().to_string(), reason: e.to_string() };
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &state_path).map_err(io)?;
        Ok(())
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rotation policy.
    pub fn policy(&self) -> RotationPolicy {
        self.policy
    }

    /// The key that signs at `now`: the newest key whose activation time has come.
    pub fn signer(&self, now: i64) -> Arc<PrivateKey> {
        let idx = self.signer_index(now);
        Arc::clone(&self.keys[idx].1)
    }

    fn signer_index(&self, now: i64) -> usize {
        self.keys
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| m.activates_at <= now)
            .max_by_key(|(_, (m, _))| m.activates_at)
            .map(|(i, _)| i)
            .unwrap_or(0)
    }

    /// The public keys published at `now`. Never empty; always holds the signer.
    pub fn published(&self, now: i64) -> Jwks {
        let signer = self.signer_index(now);
        let keys = self
            .keys
            .iter()
            .enumerate()
            .filter(|(i, (m, _))| *i == signer || (m.published_at <= now && m.unpublish_at.is_none_or(|u| now < u)))
            .map(|(_, (_, k))| k.public_jwk().clone())
            .collect();
        Jwks { keys }
    }

    /// Every public key in the ring, published or pending.
    pub fn all_public(&self) -> Vec<PublicJwk> {
        self.keys.iter().map(|(_, k)| k.public_jwk().clone()).collect()
    }

    /// The `Cache-Control` value for the published JWKS.
    pub fn cache_control(&self) -> String {
        format!("public, max-age={}", self.policy.jwks_max_age.min(self.policy.publish_lead).max(0))
    }

    /// The key metadata.
    pub fn keys(&self) -> impl Iterator<Item = &RingKey> {
        self.keys.iter().map(|(m, _)| m)
    }

    /// Starts a rotation: a new key, published now, signing after `publish_lead`.
    pub fn start_rotation(&mut self, now: i64) -> Result<RingEvent, RingError> {
        if let Some((m, _)) = self.keys.iter().find(|(m, _)| m.activates_at > now) {
            return Err(RingError::RotationPending(m.kid.clone()));
        }
        let key = PrivateKey::generate(self.alg)?;
        self.add_pending(key, now)
    }

    /// Starts a rotation to a given key (tests, or a key made elsewhere).
    pub fn add_pending(&mut self, key: PrivateKey, now: i64) -> Result<RingEvent, RingError> {
        let file = format!("{}.pem", key.kid());
        if let Some(dir) = &self.dir {
            write_private_key(&dir.join(&file), &key)?;
        }
        let activates_at = now.saturating_add(self.policy.publish_lead);
        let meta = RingKey { kid: key.kid().to_owned(), alg: self.alg.to_string(), file, published_at: now, activates_at, unpublish_at: None };
        let ev = RingEvent {
            event: "key.rotation.started",
            ring: self.name.clone(),
            kid: meta.kid.clone(),
            at: now,
            detail: Some(serde_json::json!({"from": self.signer(now).kid(), "activates_at": activates_at})),
        };
        self.keys.push((meta, Arc::new(key)));
        self.save()?;
        Ok(ev)
    }

    /// Moves the schedule to `now`: marks superseded keys with their unpublish time and
    /// drops (and deletes) keys past it. Returns the steps taken.
    pub fn tick(&mut self, now: i64) -> Result<Vec<RingEvent>, RingError> {
        let mut events = Vec::new();
        let signer = self.signer_index(now);
        let signer_since = self.keys[signer].0.activates_at;
        let signer_kid = self.keys[signer].0.kid.clone();
        let hold = self.policy.max_token_lifetime.saturating_add(self.policy.consumer_cache_ttl);
        for (i, (m, _)) in self.keys.iter_mut().enumerate() {
            if i != signer && m.activates_at <= signer_since && m.unpublish_at.is_none() {
                let until = signer_since.saturating_add(hold);
                m.unpublish_at = Some(until);
                events.push(RingEvent {
                    event: "key.activated",
                    ring: self.name.clone(),
                    kid: signer_kid.clone(),
                    at: signer_since,
                    detail: Some(serde_json::json!({"previous": m.kid, "previous_unpublished_at": until})),
                });
            }
        }
        let mut kept = Vec::new();
        for (i, entry) in std::mem::take(&mut self.keys).into_iter().enumerate() {
            let gone = i != signer && entry.0.unpublish_at.is_some_and(|u| now >= u);
            if gone {
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_file(dir.join(&entry.0.file));
                }
                events.push(RingEvent { event: "key.unpublished", ring: self.name.clone(), kid: entry.0.kid.clone(), at: now, detail: None });
            } else {
                kept.push(entry);
            }
        }
        self.keys = kept;
        if !events.is_empty() {
            self.save()?;
        }
        Ok(events)
    }
}
