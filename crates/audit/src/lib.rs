//! The tamper-evident audit log of MEDICODAX (DESIGN.md §3.3).
//!
//! Every verified call leaves two records, linked by `iss` + `jti`: an intent written
//! durably before any EHR request, and an outcome written durably before the answer
//! leaves. Each record is a leaf of an RFC 6962 / RFC 9162 Merkle tree
//! (`SHA-256(0x00 || JCS(LogEntry))`), and the gateway key signs checkpoints of the
//! tree's size and root, so a changed, deleted, reordered, inserted or truncated record
//! is caught by anyone holding a checkpoint.
//!
//! # Architecture
//!
//! ```text
//!  gateway handlers ──append_*()──► AuditLog: shared queue; the appender that gets
//!                                     the tail (async mutex) leads the batch
//!                                                                    │ one transaction + one fsync per batch
//!                                                                    │ Frontier: O(log n) tree head
//!                                                                    │ checkpoints: every 1,000 records / 60 s / on demand / shutdown
//!                                                                    ▼
//!                     Db (SQLite WAL + synchronous=FULL, batches on the audit log's own
//!                         connection in place; or PostgreSQL)
//!                                       audit_entries · audit_checkpoints · audit_replay
//!                                                                    ▲
//!  CLI `medicodax audit …` ── verify() · prove() · tail()/follow() · export_fhir()
//! ```
//!
//! - [`merkle`]: the tree (the only hand-written crypto construction), tested against
//!   published RFC 6962 vectors; [`Frontier`] keeps appends O(log n).
//! - [`Db`]: the store handle shared with the gateway (`connect(url)`, per-crate
//!   [`MigrationSet`]s, [`with_pool!`] for queries written once for both backends).
//! - [`AuditLog`]: durable group commit (leader/follower, no writer task).
//!   [`AuditLog::append_intent`] consumes the call's (`iss`, `jti`) in the same
//!   transaction as the intent ([`ReplayKey`]); a used pair fails with
//!   [`AuditError::Replayed`] and writes nothing. Appends return [`Appended`] (`seq`,
//!   leaf hash) only once durable; if the store cannot be written they fail, and the
//!   gateway fails the call.
//! - [`checkpoint`]: signed tree heads (`typ` `medicodax-checkpoint+jwt`), verified
//!   against [`CheckpointKeys`] (the gateway's current and retired public keys).
//! - [`verify()`]: rebuilds the tree and reports [`Finding`]s by seq; with an external
//!   checkpoint it also proves consistency. [`prove()`] and [`prove_consistency`] give
//!   offline-checkable proofs; [`tail()`] and [`follow`] read the log;
//!   [`export_fhir`] writes FHIR R4 AuditEvents (IHE BALP) as NDJSON or a Bundle.
//!
//! Every CLI-facing function takes a [`Db`] and the gateway's public keys and returns a
//! `Serialize` report. Time comes only from the injected [`medicodax_clock::Clock`].
//! Errors ([`AuditError`]) carry seqs, sizes, ids and hashes, never record contents.

pub mod checkpoint;
pub mod db;
pub mod entry;
pub mod error;
pub mod fhir;
pub mod log;
pub mod merkle;
pub mod prove;
mod sqlite_writer;
pub mod store;
pub mod tail;
pub mod verify;

pub use checkpoint::{CheckpointFault, CheckpointKeys, CheckpointSigner, StoredCheckpoint, sign_checkpoint};
pub use db::{AUDIT_MIGRATIONS, Backend, Db, MigrationSet, SqlMigration, SqliteStore};
pub use entry::TailEntry;
pub use error::AuditError;
pub use fhir::{ExportFormat, ExportOptions, ExportSummary, export_fhir};
pub use log::{Appended, AuditLog, LogConfig, LogStats, Numbered, TreeHead};
pub use merkle::{Frontier, ProofError};
pub use prove::{ConsistencyReport, InclusionReport, ProvedCheckpoint, prove, prove_consistency};
pub use store::ReplayKey;
pub use tail::{follow, tail};
pub use verify::{CheckpointSummary, ExternalResult, Finding, VerifyOptions, VerifyReport, verify};
