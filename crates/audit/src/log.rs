//! The audit writer: durable group commit, the in-memory tree head, and checkpoints.
//!
//! The tail of the log (the tree's [`Frontier`], checkpoint timing, counters) sits behind
//! one async mutex, and appends are committed by whichever appender holds it: the
//! *leader*. An appender canonicalises its record on its own task, puts it in the shared
//! queue and then waits for its answer or for the tail, whichever comes first. Holding
//! the tail it takes everything queued (up to [`LogConfig::max_batch`]), writes it in one
//! transaction (one fsync), answers every appender of the batch with its `seq` and leaf
//! hash, and lets go; appenders whose records came while it was committing find theirs
//! queued and the next of them leads. So one appender alone commits its own record with
//! no hand-off between threads, and throughput still grows with concurrency while each
//! append returns only once it is durable.
//!
//! For a SQLite file the batch runs on the writer's own connection on the leader's
//! thread, with no await between taking the batch and answering it, so a leader's task
//! being dropped cannot strand anyone's record. Through a pool (PostgreSQL, in-memory
//! SQLite) the leader's batch runs as a spawned task for the same reason.
//!
//! If a batch fails, every appender of it gets the error (the gateway then fails the
//! call) and the next leader re-reads the log's tail from the store first, so the head
//! never runs ahead of or behind what is stored.
//!
//! Checkpoints are signed every [`LogConfig::checkpoint_every`] records (by the leader
//! that crossed the mark, after it has answered its batch) or
//! [`LogConfig::checkpoint_interval`] (whichever comes first, on the injected clock's
//! monotonic time, and only if the log grew), on demand ([`AuditLog::checkpoint`]), and
//! at shutdown ([`AuditLog::shutdown`], or when the last handle is dropped). A background
//! task runs the timers and also purges expired call ids every
//! [`LogConfig::purge_interval`].

use crate::checkpoint::{CheckpointSigner, StoredCheckpoint, sign_checkpoint};
use crate::db::Db;
use crate::entry::Prepared;
use crate::error::AuditError;
use crate::merkle::{Frontier, to_hex};
use crate::store::{BatchItem, InPlaceTxn, ItemResult, ReplayKey};
use medicodax_clock::{Mono, SharedClock};
use medicodax_wire::CheckpointClaims;
use medicodax_wire::audit::{AuditRecord, IntentRecord, OutcomeRecord, SystemEvent};
use medicodax_wire::hash::Digest32;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, mpsc, oneshot, watch};

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

/// A handle on the audit log. Cheap to clone; every clone appends to the same tail.
#[derive(Clone, Debug)]
pub struct AuditLog {
    shared: Arc<Shared>,
    /// Held by every handle: when the last one is dropped the background task closes the
    /// log with a checkpoint.
    _alive: mpsc::Sender<()>,
    head: watch::Receiver<TreeHead>,
    counters: Arc<Counters>,
    db: Db,
    origin: Arc<str>,
}

/// What the appenders share: the queue of records waiting for a leader, and the tail.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Vec<PendingAppend>>,
    tail: Arc<AsyncMutex<Tail>>,
}

impl AuditLog {
    /// Opens the log on `db` (whose audit schema [`Db::connect`] has set up) and starts
    /// its background task (checkpoint and purge timers) on the current tokio runtime.
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
        let now = clock.monotonic();
        let counters = Arc::new(Counters::default());
        let tail = Tail {
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
            closed: false,
            head: head_tx,
        };
        let shared = Arc::new(Shared { queue: Mutex::new(Vec::new()), tail: Arc::new(AsyncMutex::new(tail)) });
        let (alive, gone) = mpsc::channel(1);
        tokio::spawn(background(Arc::clone(&shared), gone));
        Ok(AuditLog { shared, _alive: alive, head: head_rx, counters, db, origin })
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

    /// Queues a record for the next batch; its answer comes on the returned receiver.
    fn enqueue(&self, prepared: Prepared, replay: Option<ReplayKey>, early: Option<oneshot::Sender<Appended>>) -> oneshot::Receiver<Result<Appended, AuditError>> {
        let (reply, answer) = oneshot::channel();
        self.shared.queue.lock().unwrap_or_else(PoisonError::into_inner).push(PendingAppend { prepared, replay, early, reply });
        answer
    }

    async fn send_append(&self, prepared: Prepared, replay: Option<ReplayKey>) -> Result<Appended, AuditError> {
        let mut answer = self.enqueue(prepared, replay, None);
        self.shared.until_answered(&mut answer).await?
    }

    /// Appends an outcome record and returns as soon as it is numbered, before it is
    /// durable: the caller can sign what depends on its `seq` and leaf hash while the
    /// commit's fsync runs (when another appender leads the batch), and must then await
    /// [`Numbered::durable`] before anything based on it leaves. If the batch fails,
    /// `durable` returns the error (and the seq may be given to a later record).
    pub async fn append_outcome_numbered(&self, outcome: OutcomeRecord) -> Result<Numbered, AuditError> {
        let prepared = Prepared::new(&AuditRecord::Outcome(outcome))?;
        let (early_tx, mut early_rx) = oneshot::channel();
        let mut answer = self.enqueue(prepared, None, Some(early_tx));
        match self.shared.until_answered(&mut early_rx).await {
            Ok(appended) => Ok(Numbered { appended, durable: answer }),
            // Never numbered: the batch failed before that; its answer says why.
            Err(_) => Err(self.shared.until_answered(&mut answer).await?.err().unwrap_or(AuditError::Closed)),
        }
    }

    /// Signs and stores a checkpoint of the log as it is now (after everything queued
    /// before this call).
    pub async fn checkpoint(&self) -> Result<StoredCheckpoint, AuditError> {
        // In a task of its own, so a caller that stops waiting cannot cut it short.
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut tail = shared.tail.lock().await;
            tail.drain(&shared.queue).await;
            if tail.closed {
                return Err(AuditError::Closed);
            }
            tail.checkpoint().await
        })
        .await
        .map_err(|_| AuditError::Closed)?
    }

    /// Writes everything queued before this call, signs a final checkpoint if the log
    /// grew since the last one, and closes the log. Later appends fail with
    /// [`AuditError::Closed`].
    pub async fn shutdown(&self) -> Result<Option<StoredCheckpoint>, AuditError> {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move { shared.tail.lock().await.close(&shared.queue).await }).await.map_err(|_| AuditError::Closed)?
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

impl Shared {
    /// Waits for `answer`, leading a batch whenever the tail is free in the meantime.
    ///
    /// Whoever held the tail before has answered everything it took, so a record still
    /// unanswered when the tail is acquired is still queued, and this leader commits it.
    async fn until_answered<T>(self: &Arc<Self>, answer: &mut oneshot::Receiver<T>) -> Result<T, AuditError> {
        loop {
            tokio::select! {
                biased;
                r = &mut *answer => return r.map_err(|_| AuditError::Closed),
                tail = Arc::clone(&self.tail).lock_owned() => self.lead(tail).await,
            }
        }
    }

    /// Commits one batch of what is queued, holding the tail, and lets go (appenders
    /// whose records came meanwhile are waiting for the tail and lead the next one).
    async fn lead(self: &Arc<Self>, mut tail: OwnedMutexGuard<Tail>) {
        if tail.db.commits_in_place() {
            tail.run_batch(&self.queue).await;
        } else {
            // An await inside a batch: run it where the caller's cancellation cannot reach.
            let shared = Arc::clone(self);
            let _ = tokio::spawn(async move { tail.run_batch(&shared.queue).await }).await;
        }
    }
}

/// Runs the checkpoint and purge timers, and closes the log when every handle is gone.
async fn background(shared: Arc<Shared>, mut gone: mpsc::Receiver<()>) {
    loop {
        let (clock, wait) = {
            let tail = shared.tail.lock().await;
            if tail.closed {
                return;
            }
            (Arc::clone(&tail.clock), tail.until_timer())
        };
        tokio::select! {
            biased;
            _ = gone.recv() => {
                // Every handle is gone: close the log with a checkpoint.
                let _ = shared.tail.lock().await.close(&shared.queue).await;
                return;
            }
            () = clock.sleep(wait) => {
                let mut tail = shared.tail.lock().await;
                if !tail.closed {
                    tail.on_timer().await;
                }
            }
        }
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
    ///
    /// The batch that numbered the record is already being committed by its leader,
    /// which answers it whatever happens to the leader's own task.
    pub async fn durable(self) -> Result<Appended, AuditError> {
        let done = self.durable.await.map_err(|_| AuditError::Closed)??;
        if done != self.appended {
            // The writer renumbered after a failure; the early numbers must not be used.
            return Err(AuditError::Store { op: "committing audit records", reason: "the record was renumbered".into() });
        }
        Ok(done)
    }
}

#[derive(Debug)]
struct PendingAppend {
    prepared: Prepared,
    replay: Option<ReplayKey>,
    early: Option<oneshot::Sender<Appended>>,
    reply: oneshot::Sender<Result<Appended, AuditError>>,
}

/// The tail of the log: what the leader of a batch holds.
struct Tail {
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
    /// Shut down: every append fails with [`AuditError::Closed`].
    closed: bool,
    head: watch::Sender<TreeHead>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail").field("size", &self.frontier.size()).field("dirty", &self.dirty).field("closed", &self.closed).finish_non_exhaustive()
    }
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

/// Fails every append of `batch` with `e`.
fn fail(batch: Vec<PendingAppend>, what: &str, e: &AuditError) {
    tracing::error!(error = %e, "{what}; failing {} appends", batch.len());
    for a in batch {
        let _ = a.reply.send(Err(duplicate(e)));
    }
}

fn take_batch(queue: &Mutex<Vec<PendingAppend>>, max: usize) -> Vec<PendingAppend> {
    let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
    if q.len() <= max {
        std::mem::take(&mut *q)
    } else {
        q.drain(..max).collect()
    }
}

impl Tail {
    /// Commits one batch of what is queued (after re-reading the tail if the last batch
    /// failed); fails it once the log is closed.
    async fn run_batch(&mut self, queue: &Mutex<Vec<PendingAppend>>) {
        if self.closed {
            for a in take_batch(queue, usize::MAX) {
                let _ = a.reply.send(Err(AuditError::Closed));
            }
            return;
        }
        if self.dirty
            && let Err(e) = self.resync().await
        {
            fail(take_batch(queue, usize::MAX), "audit store unavailable", &e);
            return;
        }
        if queue.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
            return;
        }
        // A SQLite file: wait for the write lock before taking anything, so the wait can
        // be cancelled and never blocks the thread.
        let txn = match self.db.begin_in_place().await {
            Ok(t) => t,
            Err(e) => return fail(take_batch(queue, self.config.max_batch.max(1)), "audit store locked", &e),
        };
        // From here to the answers there is no await for a SQLite file (see `write`).
        let batch = take_batch(queue, self.config.max_batch.max(1));
        if batch.is_empty() {
            return;
        }
        self.write(batch, txn).await;
        if self.frontier.size() >= self.last_cp_size.unwrap_or(0).saturating_add(self.config.checkpoint_every) {
            self.try_checkpoint("count").await;
        }
    }

    /// Commits everything queued now (not what comes while it runs, so it ends under
    /// any load).
    async fn drain(&mut self, queue: &Mutex<Vec<PendingAppend>>) {
        let queued = queue.lock().unwrap_or_else(PoisonError::into_inner).len();
        for _ in 0..queued.div_ceil(self.config.max_batch.max(1)) {
            self.run_batch(queue).await;
        }
    }

    /// Commits what is queued, signs a final checkpoint if the log grew, and closes it.
    async fn close(&mut self, queue: &Mutex<Vec<PendingAppend>>) -> Result<Option<StoredCheckpoint>, AuditError> {
        if self.closed {
            return Ok(None);
        }
        self.drain(queue).await;
        self.closed = true;
        self.final_checkpoint().await
    }

    fn until_timer(&self) -> Duration {
        let now = self.clock.monotonic();
        let cp = self.last_cp_at.add(self.config.checkpoint_interval);
        let purge = self.last_purge_at.add(self.config.purge_interval);
        now.until(cp.min(purge))
    }

    /// Commits `appends` in `txn` (a SQLite file, no await) or through the pool.
    async fn write(&mut self, appends: Vec<PendingAppend>, txn: Option<InPlaceTxn>) {
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
        let (start, now) = (self.frontier.size(), self.clock.now_unix());
        let result = match txn {
            Some(txn) => txn.commit(start, now, &items, numbered),
            None => self.db.commit_batch(start, now, &items, numbered).await,
        };
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
                tracing::error!(error = %e, records = items.len(), "audit batch failed; the calls fail");
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
