//! The SQLite write path of the audit log: one connection of its own, used in place.
//!
//! sqlx runs every SQLite statement on a worker thread and answers over a channel, so a
//! batch (BEGIN, upsert, insert, COMMIT) costs four round trips between threads on top
//! of its fsync, and on a virtual machine each wake of a parked thread costs tens of
//! microseconds. The audit log's batches are the only hot writes, so for a SQLite file
//! they run on this connection, on the thread of the task that leads the batch
//! ([`crate::log`]): no hand-off at all, and the statements run back to back on a
//! connection with `synchronous=FULL` (a commit returns once the WAL is fsynced).
//!
//! The batch blocks that thread for its statements and the commit's fsync, which is the
//! point: nothing may answer before it is durable. It never blocks waiting for another
//! connection's lock: this connection's `busy_timeout` is 0, the write transaction is
//! opened first with retries that yield the thread (`Db::begin_in_place`), and only then
//! is the batch taken from the queue. Reads and every other write use the sqlx pool,
//! beside this connection thanks to WAL, with the pool's own `busy_timeout`.

use crate::error::AuditError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The audit writer's connection to a SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    conn: Mutex<Option<Connection>>,
}

impl SqliteWriter {
    /// Opens a second connection to the (existing) database file at `path`.
    pub fn open(path: &Path) -> Result<SqliteWriter, AuditError> {
        let connect = |e: rusqlite::Error| AuditError::Connect { backend: "sqlite", reason: e.to_string() };
        let conn = Connection::open(path).map_err(connect)?;
        // Waiting for another connection's lock happens in `Db::begin_in_place`, between
        // attempts that never block the thread; here it would stall the async runtime.
        conn.busy_timeout(Duration::ZERO).map_err(connect)?;
        // journal_mode is a property of the file (the pool set WAL); synchronous and
        // foreign_keys are per connection.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(connect)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(connect)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(connect)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(SqliteWriter { conn: Mutex::new(Some(conn)) })
    }

    /// Runs `job` on the connection, on the calling thread (blocking it until `job`
    /// returns). Fails with [`AuditError::Closed`] once [`SqliteWriter::close`] ran.
    pub fn run_blocking<R>(&self, job: impl FnOnce(&mut Connection) -> R) -> Result<R, AuditError> {
        // A batch that panicked left its transaction open; its `InPlaceTxn`, dropped while
        // unwinding, rolls it back.
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = conn.as_mut().ok_or(AuditError::Closed)?;
        Ok(job(conn))
    }

    /// Tries to open a write transaction (`BEGIN IMMEDIATE`) without waiting: `false` when
    /// another connection holds the write lock.
    pub fn try_begin(&self) -> Result<bool, AuditError> {
        self.run_blocking(|c| {
            match c.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => Ok(true),
                Err(rusqlite::Error::SqliteFailure(e, _)) if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => Ok(false),
                Err(e) => Err(store_err("beginning a batch")(e)),
            }
        })?
    }

    /// Closes the connection; later jobs fail with [`AuditError::Closed`].
    pub fn close(&self) {
        drop(self.conn.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// A rusqlite error as the store error of `op` (the driver's message: no values).
pub(crate) fn store_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> AuditError {
    move |e| AuditError::Store { op, reason: e.to_string() }
}

/// Rolls back the open transaction, if any (errors ignored: the connection then has none).
pub(crate) fn rollback(conn: &mut Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}
