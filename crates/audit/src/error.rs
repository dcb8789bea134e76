//! The audit crate's error type.
//!
//! Messages say what failed and what to do about it. They carry sequence numbers, sizes,
//! ids and hashes, never record contents (which may hold PHI) and never key material.

use crate::merkle::ProofError;

/// Everything that can go wrong in the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The call's (`iss`, `jti`) was already used and has not expired: nothing was written.
    #[error("replayed call: jti already used by this issuer and not yet expired; nothing was written")]
    Replayed,
    /// The store URL names a database this crate does not speak.
    #[error("unsupported store URL scheme {scheme:?}: use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB")]
    UnsupportedUrl {
        /// The scheme found (no credentials).
        scheme: String,
    },
    /// Connecting to the store failed.
    #[error("cannot open the audit store ({backend}): {reason}; check the [store] url, that the server runs and that the path is writable")]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The driver's reason.
        reason: String,
    },
    /// A schema migration failed.
    #[error("migrating the {set} schema failed: {reason}")]
    Migrate {
        /// Which migration set.
        set: String,
        /// The driver's reason.
        reason: String,
    },
    /// A database operation failed; for appends this means the call must fail.
    #[error("audit store failed while {op}: {reason}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The driver's reason (no record contents).
        reason: String,
    },
    /// A record has no canonical JSON form (a non-finite number in an event's detail).
    #[error("the record cannot be put in RFC 8785 canonical form: {0}")]
    Canonical(#[from] medicodax_wire::hash::CanonicalError),
    /// A stored row is unreadable (a value out of range, a hash of the wrong length).
    #[error("stored {what} at seq/size {at} is corrupt: {reason}; run `medicodax audit verify` for a full report")]
    Corrupt {
        /// `entry` or `checkpoint`.
        what: &'static str,
        /// Its sequence number or size.
        at: i64,
        /// What is wrong.
        reason: String,
    },
    /// A value does not fit the store's integer range.
    #[error("{what} {value} is out of the store's range")]
    OutOfRange {
        /// What.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The audit writer has stopped (shut down, or its task ended).
    #[error("the audit writer has stopped; no record can be written until the gateway restarts")]
    Closed,
    /// Signing a checkpoint failed.
    #[error("signing the checkpoint with the gateway key failed")]
    Sign,
    /// A checkpoint does not verify.
    #[error("checkpoint refused: {0}")]
    Checkpoint(String),
    /// No checkpoint has been stored yet.
    #[error("the log has no checkpoint yet: make one (the gateway writes one every 1,000 records, every 60 s and at shutdown)")]
    NoCheckpoint,
    /// The record asked for is not covered by the latest checkpoint yet.
    #[error("seq {seq} is not covered by the latest checkpoint (size {size}); wait for the next checkpoint or make one on demand")]
    NotCheckpointed {
        /// The sequence number asked for.
        seq: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The stored log does not match its own checkpoint, so no proof can be given.
    #[error("the stored log does not match checkpoint size {size}: run `medicodax audit verify`")]
    LogMismatch {
        /// The checkpoint size.
        size: u64,
    },
    /// A Merkle proof could not be made or did not verify.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Writing an export failed.
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}

impl AuditError {
    /// Whether this is the typed replay refusal (the gateway answers 409).
    pub fn is_replayed(&self) -> bool {
        matches!(self, AuditError::Replayed)
    }

    pub(crate) fn store(op: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError {
        move |e| AuditError::Store { op, reason: e.to_string() }
    }
}

/// `u64` to the store's `i64`.
pub(crate) fn to_i64(what: &'static str, v: u64) -> Result<i64, AuditError> {
    i64::try_from(v).map_err(|_| AuditError::OutOfRange { what, value: v })
}

/// The store's `i64` back to `u64`.
pub(crate) fn to_u64(what: &'static str, v: i64) -> Result<u64, AuditError> {
    u64::try_from(v).map_err(|_| AuditError::Corrupt { what, at: v, reason: "negative value".into() })
}
