//! The audit writer: durable group commit, the in-memory tree head, and checkpoints.
//!
//! One writer task owns the tail of the log. Appenders canonicalise their record on
//! their own task, send it over a bounded channel and wait for their reply. The writer
//! takes everything queued (up to [`LogConfig::max_batch`]), writes it in one
//! transaction (one fsync), and only then answers each appender with its `seq` and leaf
//! hash. While one batch is being made durable the next one queues up, so throughput
//! grows with concurrency while each append still returns only once it is durable.
//!
//! The tree head is kept as a [`Frontier`] (O(log n) per append). If a batch fails, every
//! appender of it gets the error (the gateway then fails the call) and the writer
//! re-reads the log's tail from the store before the next batch, so its state never runs
//! ahead of or behind what is stored.
//!
//! Checkpoints are signed every [`LogConfig::checkpoint_every`] records or
//! [`LogConfig::checkpoint_interval`] (whichever comes first, on the injected clock's
//! monotonic time, and only if the log grew), on demand ([`AuditLog::checkpoint`]), and
//! at shutdown ([`AuditLog::shutdown`], or when the last handle is dropped). The writer
//! also purges expired call ids every [`LogConfig::purge_interval`].

use crate::checkpoint::{CheckpointSigner, StoredCheckpoint, sign_checkpoint};
use crate::db::Db;
use crate::entry::Prepared;
use crate::error::AuditError;
use crate::merkle::{Frontier, to_hex};
use crate::store::{BatchItem, ItemResult, ReplayKey};
use medicodax_clock::{Mono, SharedClock};
use medicodax_wire::CheckpointClaims;
use medicodax_wire::audit::{AuditRecord, IntentRecord, OutcomeRecord, SystemEvent};
use medicodax_wire::hash::Digest32;
use serde::Serialize;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How the writer batches and when it signs checkpoints.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Names the log in checkpoints (the gateway's audience).
    pub origin: String,
    /// Sign a checkpoint after this many new records.
    pub checkpoint_every: u64,
    /// Sign a checkpoint when this much time has passed since the last one (if the log grew).
    pub checkpoint_interval: Duration,
    /// Delete expired call ids this often.
    pub purge_interval: Duration,
    /// The most records written in one transaction.
    pub max_batch: usize,
    /// How many appends may wait for the writer before appenders wait to enqueue.
    pub queue: usize,
}

impl LogConfig {
    /// DESIGN.md §3.3 defaults: a checkpoint every 1,000 records or 60 s.
    pub fn new(origin: impl Into<String>) -> Self {
        LogConfig {
            origin: origin.into(),
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            purge_interval: Duration::from_secs(60),
            max_batch: 1024,
            queue: 8192,
        }
    }
}

/// Where an append landed: what a receipt carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The record's sequence number.
    pub seq: u64,
    /// Its RFC 6962 leaf hash.
    pub leaf_hash: Digest32,
}

impl Appended {
    /// The leaf hash in lowercase hex, as receipts carry it.
    pub fn leaf_hash_hex(&self) -> String {
        to_hex(&self.leaf_hash)
    }
}

/// The current size and root of the log (durable records only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TreeHead {
    /// Number of records.
    pub size: u64,
    /// The RFC 6962 tree head, hex.
    pub root: String,
}

enum Cmd {
    Append { prepared: Prepared, replay: Option<ReplayKey>, early: Option<oneshot::Sender<Appended>>, reply: oneshot::Sender<Result<Appended, AuditError>> },
    Checkpoint { reply: oneshot::Sender<Result<StoredCheckpoint, AuditError>> },
    Shutdown { reply: oneshot::Sender<Result<Option<StoredCheckpoint>, AuditError>> },
}

/// Counters of the writer, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    /// Transactions committed.
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Intents refused as replays.
    pub replays: u64,
    /// Batches that failed (their appends failed).
    pub failed_batches: u64,
    /// Checkpoints signed.
    pub checkpoints: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    replays: AtomicU64,
    failed_batches: AtomicU64,
    checkpoints: AtomicU64,
}

/// A handle on the audit log. Cheap to clone; every clone talks to the same writer.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Cmd>,
    head: watch::Receiver<TreeHead>,
    counters: Arc<Counters>,
    db: Db,
    origin: Arc<str>,
}

impl AuditLog {
    /// Opens the log on `db` (whose audit schema [`Db::connect`] has set up) and starts
    /// its writer task on the current tokio runtime.
    ///
    /// The tail is loaded from the stored leaf hashes. Opening is refused (fail closed)
    /// when the stored log has a gap, or no longer matches its latest checkpoint's size
    /// or root: run `medicodax audit verify` to see what changed.
    pub async fn open(db: Db, signer: impl CheckpointSigner, clock: SharedClock, config: LogConfig) -> Result<AuditLog, AuditError> {
        let size = db.size().await?;
        let latest = db.latest_checkpoint().await?;
        let mut frontier = Frontier::new();
        let mut matches_checkpoint = true;
        db.each_leaf_hash(0, size, |l| {
            if let Some(cp) = &latest
                && cp.size == frontier.size()
                && to_hex(&frontier.root()) != cp.root
            {
                matches_checkpoint = false;
            }
            frontier.push(l);
        })
        .await?;
        if let Some(cp) = &latest
            && (!matches_checkpoint || cp.size > size || (cp.size == size && to_hex(&frontier.root()) != cp.root))
        {
            return Err(AuditError::LogMismatch { size: cp.size });
        }
        let origin: Arc<str> = Arc::from(config.origin.as_str());
        let (head_tx, head_rx) = watch::channel(TreeHead { size: frontier.size(), root: to_hex(&frontier.root()) });
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let now = clock.monotonic();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            counters: Arc::clone(&counters),
            db: db.clone(),
            clock,
            signer: Arc::new(signer),
            config,
            frontier,
            last_cp_size: latest.map(|c| c.size),
            last_cp_at: now,
            last_purge_at: now,
            dirty: false,
            head: head_tx,
        };
        tokio::spawn(writer.run(rx));
        Ok(AuditLog { tx, head: head_rx, counters, db, origin })
    }

    /// The log's name, as its checkpoints carry it (`origin`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends a record durably; returns its `seq` and leaf hash once it is committed.
    pub async fn append(&self, record: &AuditRecord) -> Result<Appended, AuditError> {
        self.send_append(Prepared::new(record)?, None).await
    }

    /// Appends an intent record, consuming the call's (`iss`, `jti`) in the same
    /// transaction. Fails with [`AuditError::Replayed`], writing nothing, if the pair is
    /// already used and unexpired.
    pub async fn append_intent(&self, intent: IntentRecord, replay: Option<ReplayKey>) -> Result<Appended, AuditError> {
        self.send_append(Prepared::new(&AuditRecord::Intent(intent))?, replay).await
    }

    /// Appends an outcome record.
    pub async fn append_outcome(&self, outcome: OutcomeRecord) -> Result<Appended, AuditError> {
        self.send_append(Prepared::new(&AuditRecord::Outcome(outcome))?, None).await
    }

    /// Appends a system event.
    pub async fn append_event(&self, event: SystemEvent) -> Result<Appended, AuditError> {
        self.send_append(Prepared::new(&AuditRecord::Event(event))?, None).await
    }

    async fn send_append(&self, prepared: Prepared, replay: Option<ReplayKey>) -> Result<Appended, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Append { prepared, replay, early: None, reply }).await.map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Appends an outcome record and returns as soon as it is numbered, before it is
    /// durable: the caller can sign what depends on its `seq` and leaf hash while the
    /// commit's fsync runs, and must then await [`Numbered::durable`] before anything
    /// based on it leaves. If the batch fails, `durable` returns the error (and the seq
    /// may be given to a later record).
    pub async fn append_outcome_numbered(&self, outcome: OutcomeRecord) -> Result<Numbered, AuditError> {
        let prepared = Prepared::new(&AuditRecord::Outcome(outcome))?;
        let (early_tx, early_rx) = oneshot::channel();
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Append { prepared, replay: None, early: Some(early_tx), reply }).await.map_err(|_| AuditError::Closed)?;
        match early_rx.await {
            Ok(appended) => Ok(Numbered { appended, durable: rx }),
            // Never numbered: the batch failed before that; its answer says why.
            Err(_) => Err(rx.await.map_err(|_| AuditError::Closed)?.err().unwrap_or(AuditError::Closed)),
        }
    }

    /// Signs and stores a checkpoint of the log as it is now (after everything queued
    /// before this call).
    pub async fn checkpoint(&self) -> Result<StoredCheckpoint, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Checkpoint { reply }).await.map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Writes everything queued before this call, signs a final checkpoint if the log
    /// grew since the last one, and stops the writer. Later appends fail with
    /// [`AuditError::Closed`].
    pub async fn shutdown(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Shutdown { reply }).await.map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// The size and root of the durable log.
    pub fn head(&self) -> TreeHead {
        self.head.borrow().clone()
    }

    /// The writer's counters since the log was opened.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            batches: c.batches.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            replays: c.replays.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// A record numbered but perhaps not yet durable (see [`AuditLog::append_outcome_numbered`]).
#[derive(Debug)]
pub struct Numbered {
    /// Its seq and leaf hash.
    pub appended: Appended,
    durable: oneshot::Receiver<Result<Appended, AuditError>>,
}

impl Numbered {
    /// Waits until the record is durable; fails if its batch did not commit.
    pub async fn durable(self) -> Result<Appended, AuditError> {
        let done = self.durable.await.map_err(|_| AuditError::Closed)??;
        if done != self.appended {
            // The writer renumbered after a failure; the early numbers must not be used.
            return Err(AuditError::Store { op: "committing audit records", reason: "the record was renumbered".into() });
        }
        Ok(done)
    }
}

struct PendingAppend {
    prepared: Prepared,
    replay: Option<ReplayKey>,
    early: Option<oneshot::Sender<Appended>>,
    reply: oneshot::Sender<Result<Appended, AuditError>>,
}

struct Writer {
    counters: Arc<Counters>,
    db: Db,
    clock: SharedClock,
    signer: Arc<dyn CheckpointSigner>,
    config: LogConfig,
    frontier: Frontier,
    last_cp_size: Option<u64>,
    last_cp_at: Mono,
    last_purge_at: Mono,
    /// A batch failed: re-read the tail from the store before writing again.
    dirty: bool,
    head: watch::Sender<TreeHead>,
}

/// The same error again, for each appender of a failed batch.
fn duplicate(e: &AuditError) -> AuditError {
    match e {
        AuditError::Store { op, reason } => AuditError::Store { op, reason: reason.clone() },
        AuditError::OutOfRange { what, value } => AuditError::OutOfRange { what, value: *value },
        AuditError::Closed => AuditError::Closed,
        other => AuditError::Store { op: "writing a batch", reason: other.to_string() },
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            let sleep = self.clock.sleep(self.until_timer());
            tokio::select! {
                biased;
                cmd = rx.recv() => {
                    let Some(first) = cmd else {
                        // Every handle is gone: close the log with a checkpoint.
                        let _ = self.final_checkpoint().await;
                        return;
                    };
                    let mut batch = vec![first];
                    // Let the appenders answered by the last batch queue their next record
                    // first, so it joins this transaction instead of waiting a whole fsync
                    // for the next one (with 8 appenders the mean batch goes from about 4
                    // to about 8). It costs a few microseconds when no other task is ready.
                    tokio::task::yield_now().await;
                    while batch.len() < self.config.max_batch.max(1) {
                        match rx.try_recv() {
                            Ok(c) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    if self.handle(batch).await.is_break() {
                        return;
                    }
                }
                () = sleep => self.on_timer().await,
            }
        }
    }

    fn until_timer(&self) -> Duration {
        let now = self.clock.monotonic();
        let cp = self.last_cp_at.add(self.config.checkpoint_interval);
        let purge = self.last_purge_at.add(self.config.purge_interval);
        now.until(cp.min(purge))
    }

    async fn handle(&mut self, batch: Vec<Cmd>) -> ControlFlow<()> {
        enum Control {
            Checkpoint(oneshot::Sender<Result<StoredCheckpoint, AuditError>>),
            Shutdown(oneshot::Sender<Result<Option<StoredCheckpoint>, AuditError>>),
        }
        let mut appends = Vec::with_capacity(batch.len());
        let mut controls = Vec::new();
        for c in batch {
            match c {
                Cmd::Append { prepared, replay, early, reply } => appends.push(PendingAppend { prepared, replay, early, reply }),
                Cmd::Checkpoint { reply } => controls.push(Control::Checkpoint(reply)),
                Cmd::Shutdown { reply } => controls.push(Control::Shutdown(reply)),
            }
        }
        if !appends.is_empty() {
            self.write(appends).await;
            if self.frontier.size() >= self.last_cp_size.unwrap_or(0).saturating_add(self.config.checkpoint_every) {
                self.try_checkpoint("count").await;
            }
        }
        for c in controls {
            match c {
                Control::Checkpoint(reply) => {
                    let _ = reply.send(self.checkpoint().await);
                }
                Control::Shutdown(reply) => {
                    let _ = reply.send(self.final_checkpoint().await);
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    }

    async fn write(&mut self, appends: Vec<PendingAppend>) {
        if self.dirty
            && let Err(e) = self.resync().await
        {
            tracing::error!(error = %e, "audit store unavailable; failing {} appends", appends.len());
            for a in appends {
                let _ = a.reply.send(Err(duplicate(&e)));
            }
            return;
        }
        let mut early = Vec::with_capacity(appends.len());
        let mut items = Vec::with_capacity(appends.len());
        let mut replies = Vec::with_capacity(appends.len());
        for a in appends {
            early.push(a.early);
            items.push(BatchItem { prepared: a.prepared, replay: a.replay });
            replies.push(a.reply);
        }
        let numbered = move |results: &[ItemResult]| {
            for (tx, r) in early.into_iter().zip(results) {
                if let (Some(tx), ItemResult::Written { seq, leaf }) = (tx, r) {
                    let _ = tx.send(Appended { seq: *seq, leaf_hash: *leaf });
                }
            }
        };
        let n = items.len();
        let result = self.db.commit_batch(self.frontier.size(), self.clock.now_unix(), items, numbered).await;
        match result {
            Ok(results) => {
                let mut written = 0;
                for r in &results {
                    if let ItemResult::Written { leaf, .. } = r {
                        self.frontier.push(*leaf);
                        written += 1;
                    }
                }
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.records.fetch_add(written, Ordering::Relaxed);
                self.counters.replays.fetch_add(results.len() as u64 - written, Ordering::Relaxed);
                self.publish_head();
                for (reply, r) in replies.into_iter().zip(results) {
                    let answer = match r {
                        ItemResult::Written { seq, leaf } => Ok(Appended { seq, leaf_hash: leaf }),
                        ItemResult::Replayed => Err(AuditError::Replayed),
                    };
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                self.dirty = true;
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "audit batch failed; the calls fail");
                for reply in replies {
                    let _ = reply.send(Err(duplicate(&e)));
                }
            }
        }
    }

    /// Brings the frontier in line with the store after a failed batch (whose commit
    /// may or may not have happened).
    async fn resync(&mut self) -> Result<(), AuditError> {
        let size = self.db.size().await?;
        let have = self.frontier.size();
        if size > have {
            let frontier = &mut self.frontier;
            self.db.each_leaf_hash(have, size, |l| frontier.push(l)).await?;
            tracing::warn!(have, size, "audit batch reported failed but was committed; tail re-read");
        } else if size < have {
            tracing::error!(have, size, "audit log shrank under the writer; rebuilding the tail from the store");
            let mut rebuilt = Frontier::new();
            self.db.each_leaf_hash(0, size, |l| rebuilt.push(l)).await?;
            self.frontier = rebuilt;
        }
        self.dirty = false;
        self.publish_head();
        Ok(())
    }

    fn publish_head(&self) {
        self.head.send_replace(TreeHead { size: self.frontier.size(), root: to_hex(&self.frontier.root()) });
    }

    async fn checkpoint(&mut self) -> Result<StoredCheckpoint, AuditError> {
        if self.dirty {
            self.resync().await?;
        }
        let now = self.clock.now_unix();
        let claims = CheckpointClaims { origin: self.config.origin.clone(), size: self.frontier.size(), root: to_hex(&self.frontier.root()), time: now };
        let key = self.signer.signing_key(now);
        let jws = sign_checkpoint(&key, &claims)?;
        let id = self.db.insert_checkpoint(claims.size, &claims.root, now, key.kid(), &jws).await?;
        self.last_cp_size = Some(claims.size);
        self.last_cp_at = self.clock.monotonic();
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::info!(size = claims.size, root = %claims.root, "audit checkpoint signed");
        Ok(StoredCheckpoint { id, size: claims.size, root: claims.root, time: now, kid: key.kid().to_owned(), jws })
    }

    async fn try_checkpoint(&mut self, why: &'static str) {
        if let Err(e) = self.checkpoint().await {
            // The records are durable; the next trigger tries again.
            self.last_cp_at = self.clock.monotonic();
            tracing::error!(error = %e, trigger = why, "audit checkpoint failed");
        }
    }

    fn grew(&self) -> bool {
        self.frontier.size() > 0 && self.last_cp_size != Some(self.frontier.size())
    }

    async fn final_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, AuditError> {
        if self.dirty {
            self.resync().await?;
        }
        if self.grew() { self.checkpoint().await.map(Some) } else { Ok(None) }
    }

    async fn on_timer(&mut self) {
        let now = self.clock.monotonic();
        if now >= self.last_cp_at.add(self.config.checkpoint_interval) {
            if self.grew() {
                self.try_checkpoint("interval").await;
            } else {
                self.last_cp_at = now;
            }
        }
        if now >= self.last_purge_at.add(self.config.purge_interval) {
            self.last_purge_at = now;
            match self.db.purge_expired_replays(self.clock.now_unix()).await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "expired call ids purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired call ids failed"),
            }
        }
    }
}
