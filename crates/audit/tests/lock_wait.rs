//! The SQLite writer never blocks the async runtime while waiting for another
//! connection's write lock, and a closed log stays closed.

mod common;

use common::*;
use medicodax_audit::{AuditError, AuditLog};
use medicodax_clock::ManualClock;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A SQLite store with a log of one record.
async fn started() -> (TestStore, AuditLog) {
    let s = sqlite().await;
    let log = open_log(&s.db, &ManualClock::new(NOW), 1000).await;
    assert_eq!(log.append_event(event("start", "x")).await.unwrap().seq, 0);
    (s, log)
}

/// A same-process sqlx transaction holds the write lock across an await when an append
/// leads a batch. On a current-thread runtime the append must wait without blocking the
/// only thread, so the transaction can reach its COMMIT and the append then succeeds
/// (blocking in `BEGIN IMMEDIATE` would fail it with "database is locked").
#[tokio::test(flavor = "current_thread")]
async fn an_append_waits_for_a_same_process_transaction_without_blocking_it() {
    let (s, log) = started().await;
    s.exec("CREATE TABLE scratch (x INTEGER)").await;
    let pool = s.db.as_sqlite().unwrap().clone();
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO scratch (x) VALUES (1)").execute(&mut *tx).await.unwrap();
        let _ = locked_tx.send(());
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.commit().await.unwrap();
    });
    locked_rx.await.unwrap();
    let r = log.append_event(event("during", "x")).await;
    holder.await.unwrap();
    assert_eq!(r.unwrap().seq, 1);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scratch")
        .fetch_one(s.db.as_sqlite().unwrap())
        .await
        .unwrap();
    assert_eq!(n, 1, "the other transaction committed");
    log.shutdown().await.unwrap();
    s.cleanup().await;
}

/// Another process (here a thread with its own connection) holds the write lock until a
/// task on the runtime tells it to let go, or 3 s pass. The append must leave the runtime
/// free to run that task while it waits: the lock is let go by the task, not the timeout.
#[tokio::test(flavor = "current_thread")]
async fn the_runtime_keeps_running_while_an_append_waits_for_another_process() {
    let (s, log) = started().await;
    let path = s.url.trim_start_matches("sqlite://").to_owned();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let by_task = release_rx.recv_timeout(Duration::from_secs(3)).is_ok();
        c.execute_batch("COMMIT").unwrap();
        by_task
    });
    locked_rx.recv().unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let releaser = {
        let started = Arc::clone(&started);
        tokio::spawn(async move {
            // Runs only once the appender yields the thread.
            while !started.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
            let _ = release_tx.send(());
        })
    };
    started.store(true, Ordering::SeqCst);
    let r = log.append_event(event("during", "x")).await;
    releaser.await.unwrap();
    let released_by_task = other.join().unwrap();
    assert!(released_by_task, "the append blocked the runtime until the other connection gave up");
    assert_eq!(r.unwrap().seq, 1);
    log.shutdown().await.unwrap();
    s.cleanup().await;
}

/// After shutdown every append fails with `Closed`, also when the last batch failed and
/// the store cannot be re-read.
#[tokio::test(flavor = "multi_thread")]
async fn appends_after_shutdown_fail_closed_even_when_the_last_batch_failed() {
    let (s, log) = started().await;
    s.exec("ALTER TABLE audit_entries RENAME TO audit_entries_away").await;
    assert!(log.append_event(event("fails", "x")).await.is_err());
    let _ = log.shutdown().await;
    let late = log.append_event(event("late", "x")).await;
    assert!(matches!(late, Err(AuditError::Closed)), "{late:?}");
    s.exec("ALTER TABLE audit_entries_away RENAME TO audit_entries").await;
    s.cleanup().await;
}
