//! The SQLite write path of the audit log: one connection on one OS thread.
//!
//! sqlx runs every SQLite statement on a worker thread and answers over a channel, so a
//! batch (BEGIN, upsert, insert, COMMIT) costs four round trips between threads on top
//! of its fsync. The audit writer is the only hot writer, so for a SQLite file it hands
//! the whole transaction to this thread instead: one hand-off there, one back, and the
//! statements run back to back on a connection with `synchronous=FULL` (a commit returns
//! once the WAL is fsynced). Reads and every other write keep using the sqlx pool; WAL
//! lets them run beside this connection, and `busy_timeout` orders writers.
//!
//! If a job panics the thread ends and every later job fails with
//! [`AuditError::Closed`], so the log fails closed.

use crate::error::AuditError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The writer thread and the way to reach it.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SqliteWriter {
    /// Opens a second connection to the (existing) database file at `path` and starts
    /// its thread.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<SqliteWriter, AuditError> {
        let connect = |e: rusqlite::Error| AuditError::Connect { backend: "sqlite", reason: e.to_string() };
        let conn = Connection::open(path).map_err(connect)?;
        conn.busy_timeout(busy_timeout).map_err(connect)?;
        // journal_mode is a property of the file (the pool set WAL); synchronous and
        // foreign_keys are per connection.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(connect)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(connect)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(connect)?;
        conn.set_prepared_statement_cache_capacity(16);
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("medicodax-audit-sqlite".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| AuditError::Connect { backend: "sqlite", reason: format!("starting the audit writer thread: {e}") })?;
        Ok(SqliteWriter { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Runs `job` on the writer's connection and returns its answer.
    pub async fn run<R: Send + 'static>(&self, job: impl FnOnce(&mut Connection) -> R + Send + 'static) -> Result<R, AuditError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.tx.lock().unwrap_or_else(PoisonError::into_inner).clone().ok_or(AuditError::Closed)?;
        sender
            .send(Box::new(move |c: &mut Connection| {
                let _ = reply.send(job(c));
            }))
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)
    }

    /// Stops the thread after the jobs already sent, and closes its connection.
    pub async fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(PoisonError::into_inner).take());
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// A rusqlite error as the store error of `op` (the driver's message: no values).
pub(crate) fn store_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> AuditError {
    move |e| AuditError::Store { op, reason: e.to_string() }
}
