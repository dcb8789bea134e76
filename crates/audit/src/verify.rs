//! `audit verify`: rebuild the tree from the stored entries and check everything that
//! can be checked.
//!
//! For each stored row, in `seq` order: `seq` continuity (a deleted row leaves a gap), the
//! stored leaf hash against `SHA-256(0x00 || canonical bytes)` (a changed record), the
//! bytes decode to a [`LogEntry`] whose own `seq` is the row's (a reordered or moved
//! record) and are in RFC 8785 form, the query columns agree with the record, and each
//! outcome names an earlier intent of the same call. For each stored checkpoint: its
//! signature against the gateway keys, its columns against its signed claims, its size
//! against the log (truncation) and its root against the root rebuilt at that size
//! (rewriting, or an insertion that renumbered records). Given an external checkpoint
//! (one exported earlier and kept elsewhere) the same checks are made, and a consistency
//! proof from it to the current log is produced and verified: this is what catches a
//! truncated or rewritten log even when the stored checkpoints were deleted or rewritten
//! with it.
//!
//! Tampering never makes `verify` fail: it is reported as [`Finding`]s, each naming the
//! `seq` (or checkpoint) where it was seen. Only a store that cannot be read is an error.

use crate::checkpoint::{CheckpointFault, CheckpointKeys};
use crate::db::{Backend, Db};
use crate::entry::{RawEntry, index_columns};
use crate::error::AuditError;
use crate::merkle::{Frontier, consistency_proof, empty_root, from_hex, to_hex, verify_consistency};
use crate::store::RawCheckpoint;
use medicodax_wire::CheckpointClaims;
use medicodax_wire::audit::{AuditRecord, LogEntry};
use medicodax_wire::hash::{Digest32, canonical_json, leaf_hash_bytes};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What to verify beyond the stored log.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The `origin` every checkpoint must name (the gateway's audience), if known.
    pub origin: Option<String>,
    /// An older checkpoint JWS kept outside the database, to prove the log still extends it.
    pub external_checkpoint: Option<String>,
}

/// The most findings kept in a report; the rest are only counted.
pub const MAX_FINDINGS: usize = 10_000;

/// Rows read per query.
const PAGE: i64 = 2000;

/// A problem found, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Rows are missing: the row after `expected - 1` has seq `found` (a deletion).
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found instead.
        found: u64,
    },
    /// A row's seq is negative.
    NegativeSeq {
        /// The stored value.
        seq: i64,
    },
    /// The stored leaf hash is not the hash of the stored bytes (the record was changed).
    LeafHashMismatch {
        /// The row.
        seq: u64,
    },
    /// The stored bytes are not a log entry.
    NotALogEntry {
        /// The row.
        seq: u64,
        /// Why (a class, not the content).
        reason: String,
    },
    /// The stored bytes are a log entry but not in RFC 8785 canonical form.
    NotCanonical {
        /// The row.
        seq: u64,
    },
    /// The record's own seq differs from its row's (a reordered or moved record).
    SeqMismatch {
        /// The row.
        seq: u64,
        /// The seq inside the record.
        record_seq: u64,
    },
    /// A query column disagrees with the record it indexes.
    ColumnMismatch {
        /// The row.
        seq: u64,
        /// The column.
        column: &'static str,
    },
    /// An outcome names an intent that is not an earlier record of the same call.
    OutcomeWithoutIntent {
        /// The outcome's seq.
        seq: u64,
        /// The intent seq it names.
        intent_seq: u64,
    },
    /// A stored checkpoint does not verify.
    CheckpointInvalid {
        /// Its row id.
        id: i64,
        /// Why.
        fault: CheckpointFault,
    },
    /// A stored checkpoint names another log.
    CheckpointOriginMismatch {
        /// Its row id.
        id: i64,
        /// The origin it names.
        origin: String,
    },
    /// A stored checkpoint's columns differ from its signed claims.
    CheckpointColumnsMismatch {
        /// Its row id.
        id: i64,
        /// The signed size.
        size: u64,
    },
    /// A stored checkpoint covers more records than the log holds (truncation).
    CheckpointBeyondLog {
        /// Its row id.
        id: i64,
        /// The signed size.
        size: u64,
        /// The records present.
        log_size: u64,
    },
    /// The first `size` records are not the ones a stored checkpoint signed (rewriting).
    CheckpointRootMismatch {
        /// Its row id.
        id: i64,
        /// The signed size.
        size: u64,
    },
    /// The external checkpoint does not verify.
    ExternalInvalid {
        /// Why.
        fault: CheckpointFault,
    },
    /// The external checkpoint names another log.
    ExternalOriginMismatch {
        /// The origin it names.
        origin: String,
    },
    /// The log is shorter than the external checkpoint (truncation).
    ExternalBeyondLog {
        /// The signed size.
        size: u64,
        /// The records present.
        log_size: u64,
    },
    /// The first `size` records are not the ones the external checkpoint signed.
    ExternalRootMismatch {
        /// The signed size.
        size: u64,
    },
}

impl Finding {
    /// The record's seq this finding is about, when it is about one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Finding::Gap { expected, .. } => Some(*expected),
            Finding::LeafHashMismatch { seq }
            | Finding::NotALogEntry { seq, .. }
            | Finding::NotCanonical { seq }
            | Finding::SeqMismatch { seq, .. }
            | Finding::ColumnMismatch { seq, .. }
            | Finding::OutcomeWithoutIntent { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// A checkpoint that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointSummary {
    /// Records covered.
    pub size: u64,
    /// Tree head, hex.
    pub root: String,
    /// Unix seconds.
    pub time: i64,
    /// The origin it names.
    pub origin: String,
}

impl From<&CheckpointClaims> for CheckpointSummary {
    fn from(c: &CheckpointClaims) -> Self {
        CheckpointSummary { size: c.size, root: c.root.clone(), time: c.time, origin: c.origin.clone() }
    }
}

/// The external checkpoint's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalResult {
    /// The checkpoint, when it verified.
    pub checkpoint: Option<CheckpointSummary>,
    /// Whether the current log extends it.
    pub consistent: bool,
    /// The RFC 9162 consistency proof from it to the current log (hex), when consistent.
    pub proof: Vec<String>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// No findings.
    pub ok: bool,
    /// Which store was read.
    pub backend: Backend,
    /// Rows read (the size of the rebuilt tree).
    pub size: u64,
    /// The rebuilt tree head, hex.
    pub root: String,
    /// Stored checkpoints examined.
    pub checkpoints_checked: u64,
    /// The largest stored checkpoint that verified and matches the log.
    pub latest_checkpoint: Option<CheckpointSummary>,
    /// Records after the latest matching checkpoint: present, but not yet covered by a
    /// signature (a change to them with a matching leaf hash cannot be detected yet).
    pub unsigned_tail: u64,
    /// Intents with no outcome (calls in flight, or cut short by a crash): not tampering.
    pub open_intents: u64,
    /// The external checkpoint's result, when one was given.
    pub external: Option<ExternalResult>,
    /// The lowest seq named by a finding.
    pub first_bad_seq: Option<u64>,
    /// What was found, in the order seen (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], counted only.
    pub findings_dropped: u64,
}

struct Collector {
    findings: Vec<Finding>,
    dropped: u64,
}

impl Collector {
    fn push(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        } else {
            self.dropped += 1;
        }
    }
}

/// A stored checkpoint after the signature check.
struct Checked {
    raw: RawCheckpoint,
    claims: Option<CheckpointClaims>,
}

/// Verifies the whole log; see the module documentation.
pub async fn verify(db: &Db, keys: &CheckpointKeys, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    let mut out = Collector { findings: Vec::new(), dropped: 0 };

    // Checkpoints first: each was stored after the records it covers, so every record a
    // checkpoint read here names is already in the table when the entries are read.
    let stored: Vec<Checked> = db
        .raw_checkpoints()
        .await?
        .into_iter()
        .map(|raw| {
            let claims = keys.verify(&raw.jws);
            match claims {
                Ok(c) => Checked { raw, claims: Some(c) },
                Err(fault) => {
                    out.push(Finding::CheckpointInvalid { id: raw.id, fault });
                    Checked { raw, claims: None }
                }
            }
        })
        .collect();
    let external = options.external_checkpoint.as_deref().map(|jws| keys.verify(jws));

    // The sizes at which the rebuilt root is needed.
    let mut roots_at: BTreeMap<u64, Option<Digest32>> = BTreeMap::new();
    for c in stored.iter().filter_map(|c| c.claims.as_ref()) {
        roots_at.insert(c.size, None);
    }
    if let Some(Ok(c)) = &external {
        roots_at.insert(c.size, None);
    }
    let keep_leaves = matches!(&external, Some(Ok(_)));

    // The entries.
    let mut frontier = Frontier::new();
    let mut leaves: Vec<Digest32> = Vec::new();
    let mut expected: u64 = 0;
    let mut open_intents: HashMap<u64, (String, String)> = HashMap::new();
    let mut after: Option<i64> = None;
    loop {
        let page = db.raw_entries(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        let full = page.len() as i64 == PAGE;
        for row in page {
            let leaf = check_row(&row, &mut expected, &mut open_intents, &mut out);
            if let Some(slot) = roots_at.get_mut(&frontier.size()) {
                *slot = Some(frontier.root());
            }
            frontier.push(leaf);
            if keep_leaves {
                leaves.push(leaf);
            }
        }
        if !full {
            break;
        }
    }
    let size = frontier.size();
    if let Some(slot) = roots_at.get_mut(&size) {
        *slot = Some(frontier.root());
    }
    let root_at = |s: u64| -> Option<Digest32> { if s == 0 { Some(empty_root()) } else { roots_at.get(&s).copied().flatten() } };

    // Stored checkpoints against the rebuilt tree.
    let mut latest: Option<CheckpointSummary> = None;
    for c in &stored {
        let Some(claims) = &c.claims else { continue };
        if let Some(origin) = &options.origin
            && &claims.origin != origin
        {
            out.push(Finding::CheckpointOriginMismatch { id: c.raw.id, origin: claims.origin.chars().take(200).collect() });
            continue;
        }
        if i64::try_from(claims.size).ok() != Some(c.raw.size) || c.raw.root != claims.root || c.raw.time != claims.time {
            out.push(Finding::CheckpointColumnsMismatch { id: c.raw.id, size: claims.size });
        }
        if claims.size > size {
            out.push(Finding::CheckpointBeyondLog { id: c.raw.id, size: claims.size, log_size: size });
            continue;
        }
        match (root_at(claims.size), from_hex(&claims.root)) {
            (Some(r), Ok(signed)) if r == signed => {
                if latest.as_ref().is_none_or(|l| l.size <= claims.size) {
                    latest = Some(claims.into());
                }
            }
            _ => out.push(Finding::CheckpointRootMismatch { id: c.raw.id, size: claims.size }),
        }
    }

    // The external checkpoint.
    let current_root = frontier.root();
    let external = external.map(|res| match res {
        Err(fault) => {
            out.push(Finding::ExternalInvalid { fault });
            ExternalResult { checkpoint: None, consistent: false, proof: Vec::new() }
        }
        Ok(claims) => {
            let summary = CheckpointSummary::from(&claims);
            let fail = |out: &mut Collector, f: Finding| {
                out.push(f);
                ExternalResult { checkpoint: Some(summary.clone()), consistent: false, proof: Vec::new() }
            };
            if let Some(origin) = &options.origin
                && &claims.origin != origin
            {
                return fail(&mut out, Finding::ExternalOriginMismatch { origin: claims.origin.chars().take(200).collect() });
            }
            if claims.size > size {
                return fail(&mut out, Finding::ExternalBeyondLog { size: claims.size, log_size: size });
            }
            let signed = from_hex(&claims.root).ok();
            let proof = consistency_proof(&leaves, claims.size).ok();
            match (signed, proof) {
                (Some(signed), Some(proof)) if verify_consistency(claims.size, size, &proof, &signed, &current_root).is_ok() => {
                    ExternalResult { checkpoint: Some(summary.clone()), consistent: true, proof: proof.iter().map(to_hex).collect() }
                }
                _ => fail(&mut out, Finding::ExternalRootMismatch { size: claims.size }),
            }
        }
    });

    let first_bad_seq = out.findings.iter().filter_map(Finding::seq).min();
    Ok(VerifyReport {
        ok: out.findings.is_empty() && out.dropped == 0,
        backend: db.backend(),
        size,
        root: to_hex(&current_root),
        checkpoints_checked: stored.len() as u64,
        unsigned_tail: size - latest.as_ref().map_or(0, |l| l.size),
        latest_checkpoint: latest,
        open_intents: open_intents.len() as u64,
        external,
        first_bad_seq,
        findings: out.findings,
        findings_dropped: out.dropped,
    })
}

/// Checks one row; returns the leaf hash of its stored bytes (what the tree is built from).
fn check_row(row: &RawEntry, expected: &mut u64, open: &mut HashMap<u64, (String, String)>, out: &mut Collector) -> Digest32 {
    let leaf = leaf_hash_bytes(&row.canonical);
    let Ok(seq) = u64::try_from(row.seq) else {
        out.push(Finding::NegativeSeq { seq: row.seq });
        return leaf;
    };
    if seq != *expected {
        out.push(Finding::Gap { expected: *expected, found: seq });
    }
    *expected = seq.saturating_add(1);
    if row.stored_leaf() != Some(leaf) {
        out.push(Finding::LeafHashMismatch { seq });
    }
    let entry: LogEntry = match row.decode() {
        Ok(e) => e,
        Err(reason) => {
            out.push(Finding::NotALogEntry { seq, reason });
            return leaf;
        }
    };
    if entry.seq != seq {
        out.push(Finding::SeqMismatch { seq, record_seq: entry.seq });
    }
    if canonical_json(&entry).ok().as_deref() != Some(row.canonical.as_slice()) {
        out.push(Finding::NotCanonical { seq });
    }
    let (kind, agent, user, jti, time_ms) = index_columns(&entry.record);
    let mismatch = if row.kind != kind {
        Some("kind")
    } else if row.agent.as_deref() != agent {
        Some("agent")
    } else if row.user.as_deref() != user {
        Some("acting_user")
    } else if row.jti.as_deref() != jti {
        Some("jti")
    } else if row.time_ms != time_ms {
        Some("time_ms")
    } else {
        None
    };
    if let Some(column) = mismatch {
        out.push(Finding::ColumnMismatch { seq, column });
    }
    match &entry.record {
        AuditRecord::Intent(i) => {
            open.insert(entry.seq, (i.agent.clone(), i.jti.clone()));
        }
        AuditRecord::Outcome(o) => {
            let linked = o.intent_seq < entry.seq && open.get(&o.intent_seq).is_some_and(|(a, j)| *a == o.agent && *j == o.jti);
            if linked {
                open.remove(&o.intent_seq);
            } else {
                out.push(Finding::OutcomeWithoutIntent { seq, intent_seq: o.intent_seq });
            }
        }
        AuditRecord::Event(_) => {}
    }
    leaf
}
