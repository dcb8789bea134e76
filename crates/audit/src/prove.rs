//! `audit prove`: inclusion proofs against the latest checkpoint, and consistency proofs
//! from an older checkpoint to it. Both come as serialisable reports that carry what a
//! third party needs to check them offline with the gateway's public key:
//! [`InclusionReport::check`] and [`ConsistencyReport::check`].

use crate::checkpoint::CheckpointKeys;
use crate::db::Db;
use crate::error::AuditError;
use crate::merkle::{Frontier, RangeRoots, consistency_ranges, from_hex, inclusion_ranges, to_hex, verify_consistency, verify_inclusion};
use medicodax_wire::audit::LogEntry;
use medicodax_wire::hash::{Digest32, canonical_json, leaf_hash_bytes};
use serde::Serialize;
use std::ops::Range;

/// A signed checkpoint as a proof refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProvedCheckpoint {
    /// Records covered.
    pub size: u64,
    /// Tree head, hex.
    pub root: String,
    /// Unix seconds.
    pub time: i64,
    /// The compact JWS, verifiable with the gateway's JWKS.
    pub jws: String,
}

/// Proof that one record is in the log signed by a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InclusionReport {
    /// The record's seq (its leaf index).
    pub seq: u64,
    /// Its leaf hash, hex: SHA-256(0x00 || JCS(entry)).
    pub leaf_hash: String,
    /// The record.
    pub entry: LogEntry,
    /// The checkpoint proved against.
    pub checkpoint: ProvedCheckpoint,
    /// The RFC 9162 inclusion proof (audit path), hex, leaf to root.
    pub proof: Vec<String>,
}

/// Proof that the log at a newer checkpoint extends an older one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsistencyReport {
    /// The older checkpoint (as given).
    pub from: ProvedCheckpoint,
    /// The newer checkpoint (the latest stored).
    pub to: ProvedCheckpoint,
    /// The RFC 9162 consistency proof, hex.
    pub proof: Vec<String>,
}

fn hashes(v: &[String]) -> Result<Vec<Digest32>, AuditError> {
    v.iter().map(|h| from_hex(h).map_err(AuditError::from)).collect()
}

/// Verifies a checkpoint JWS and returns it with its claims.
fn checked(keys: &CheckpointKeys, jws: &str) -> Result<(ProvedCheckpoint, Digest32), AuditError> {
    let c = keys.verify(jws)?;
    let r = from_hex(&c.root)?;
    Ok((ProvedCheckpoint { size: c.size, root: c.root, time: c.time, jws: jws.trim().to_owned() }, r))
}

/// The latest stored checkpoint, verified.
async fn latest(db: &Db, keys: &CheckpointKeys) -> Result<(ProvedCheckpoint, Digest32), AuditError> {
    let cp = db.latest_checkpoint().await?.ok_or(AuditError::NoCheckpoint)?;
    checked(keys, &cp.jws)
}

/// One pass over the leaves a checkpoint covers (O(log n) memory): checks them against
/// its root and returns the heads of `ranges` and the leaf at `want`, if asked.
async fn covered(db: &Db, cp: &ProvedCheckpoint, signed_root: &Digest32, ranges: Vec<Range<u64>>, want: Option<u64>) -> Result<(Vec<Digest32>, Option<Digest32>), AuditError> {
    let mut full = Frontier::new();
    let mut parts = RangeRoots::new(ranges);
    let mut found = None;
    db.each_leaf_hash(0, cp.size, |l| {
        let i = full.size();
        if want == Some(i) {
            found = Some(l);
        }
        parts.push(i, l);
        full.push(l);
    })
    .await
    .map_err(|e| match e {
        AuditError::Corrupt { .. } => AuditError::LogMismatch { size: cp.size },
        other => other,
    })?;
    if full.root() != *signed_root {
        return Err(AuditError::LogMismatch { size: cp.size });
    }
    Ok((parts.roots(), found))
}

/// An inclusion proof for record `seq` against the latest checkpoint.
///
/// Refused when there is no checkpoint, when `seq` is beyond it, or when the stored log
/// no longer matches it (then `verify` says what changed).
pub async fn prove(db: &Db, keys: &CheckpointKeys, seq: u64) -> Result<InclusionReport, AuditError> {
    let (cp, signed_root) = latest(db, keys).await?;
    if seq >= cp.size {
        return Err(AuditError::NotCheckpointed { seq, size: cp.size });
    }
    let (proof, stored_leaf) = covered(db, &cp, &signed_root, inclusion_ranges(seq, cp.size)?, Some(seq)).await?;
    let stored = db.entry(seq).await?.ok_or(AuditError::LogMismatch { size: cp.size })?;
    let leaf = leaf_hash_bytes(&canonical_json(&stored.entry)?);
    if stored_leaf != Some(leaf) {
        return Err(AuditError::LogMismatch { size: cp.size });
    }
    verify_inclusion(seq, cp.size, &leaf, &proof, &signed_root)?;
    Ok(InclusionReport { seq, leaf_hash: to_hex(&leaf), entry: stored.entry, checkpoint: cp, proof: proof.iter().map(to_hex).collect() })
}

/// A consistency proof from an older checkpoint (a JWS kept by an auditor) to the latest
/// stored checkpoint.
pub async fn prove_consistency(db: &Db, keys: &CheckpointKeys, older_jws: &str) -> Result<ConsistencyReport, AuditError> {
    let (from, from_root) = checked(keys, older_jws)?;
    let (to, to_root) = latest(db, keys).await?;
    if from.size > to.size {
        return Err(AuditError::Checkpoint(format!(
            "the given checkpoint (size {}) is newer than the latest stored one (size {}): the log may have been truncated; run `medicodax audit verify` with it",
            from.size, to.size
        )));
    }
    let (proof, _) = covered(db, &to, &to_root, consistency_ranges(from.size, to.size)?, None).await?;
    verify_consistency(from.size, to.size, &proof, &from_root, &to_root).map_err(|_| AuditError::LogMismatch { size: from.size })?;
    Ok(ConsistencyReport { from, to, proof: proof.iter().map(to_hex).collect() })
}

impl InclusionReport {
    /// Checks the report offline: the checkpoint's signature, the leaf hash of the entry,
    /// and the proof from it to the checkpoint's root.
    pub fn check(&self, keys: &CheckpointKeys) -> Result<(), AuditError> {
        let (cp, r) = checked(keys, &self.checkpoint.jws)?;
        if cp.size != self.checkpoint.size || cp.root != self.checkpoint.root || self.entry.seq != self.seq {
            return Err(AuditError::Checkpoint("the report's fields differ from its signed checkpoint".into()));
        }
        let leaf = leaf_hash_bytes(&canonical_json(&self.entry)?);
        if to_hex(&leaf) != self.leaf_hash {
            return Err(AuditError::Proof(crate::merkle::ProofError::RootMismatch));
        }
        verify_inclusion(self.seq, cp.size, &leaf, &hashes(&self.proof)?, &r)?;
        Ok(())
    }
}

impl ConsistencyReport {
    /// Checks the report offline: both signatures and the proof.
    pub fn check(&self, keys: &CheckpointKeys) -> Result<(), AuditError> {
        let (from, r1) = checked(keys, &self.from.jws)?;
        let (to, r2) = checked(keys, &self.to.jws)?;
        verify_consistency(from.size, to.size, &hashes(&self.proof)?, &r1, &r2)?;
        Ok(())
    }
}
