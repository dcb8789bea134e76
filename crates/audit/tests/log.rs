//! The writer: group commit, replay atomicity, checkpoints on count, time, demand and
//! shutdown, failure and recovery, proofs and tail. Each test runs on SQLite and
//! PostgreSQL.

mod common;

use common::*;
use futures::StreamExt as _;
use medicodax_audit::merkle::{self, from_hex};
use medicodax_audit::{AuditError, AuditLog, ReplayKey, VerifyOptions, follow, prove, prove_consistency, tail, verify};
use medicodax_clock::{Clock as _, ManualClock};
use medicodax_wire::Decision;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let s = super::common::sqlite().await;
                super::$name(&s).await;
                s.cleanup().await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let s = super::common::postgres().await;
                super::$name(&s).await;
                s.cleanup().await;
            })*
        }
    };
}

on_both_stores!(
    concurrent_appends_are_batched_and_numbered_without_gaps,
    replay_is_atomic_with_the_intent,
    replay_expires_and_is_purged,
    checkpoints_every_n_records_on_demand_and_at_shutdown,
    checkpoint_after_sixty_seconds_on_the_injected_clock,
    a_failed_store_fails_the_append_and_the_writer_recovers,
    reopening_continues_the_log_and_refuses_a_tampered_one,
    inclusion_and_consistency_proofs_verify_offline,
    tail_and_follow_return_entries_in_order,
    numbered_outcomes_become_durable_or_fail,
);

fn replay(jti: &str, expires_at: i64) -> ReplayKey {
    ReplayKey { iss: "coding-agent".into(), jti: jti.into(), expires_at }
}

fn search_intent(jti: &str) -> medicodax_wire::audit::IntentRecord {
    intent(jti, "fhir.search", json!({"connection": "epic-sandbox", "type": "Condition", "params": [["patient", "pt-1001"]]}))
}

/// Waits (real time, bounded) for a condition the writer task makes true.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn concurrent_appends_are_batched_and_numbered_without_gaps(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 100_000).await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..25 {
                let i = search_intent(&format!("t{t}-{k}"));
                let a = log.append_intent(i, Some(replay(&format!("t{t}-{k}"), NOW + 150))).await.unwrap();
                got.push(a);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let seqs: BTreeSet<u64> = all.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (0..400).collect(), "[{}] every append got its own seq, none lost", s.label);
    let stats = log.stats();
    assert_eq!(stats.records, 400);
    assert!(stats.batches < 400, "[{}] 16 concurrent appenders share transactions: {} batches for 400 records", s.label, stats.batches);
    // Each appender's leaf hash is the stored one, and the head is the root of all of them.
    let mut by_seq = all.clone();
    by_seq.sort_by_key(|a| a.seq);
    let leaves: Vec<_> = by_seq.iter().map(|a| a.leaf_hash).collect();
    assert_eq!(log.head().root, merkle::to_hex(&merkle::root(&leaves)));
    assert_eq!(log.head().size, 400);
    let cp = log.checkpoint().await.unwrap();
    assert_eq!((cp.size, cp.root.clone()), (400, log.head().root));
    let r = verify(&s.db, &keys(), &VerifyOptions::default()).await.unwrap();
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.root, cp.root);
    log.shutdown().await.unwrap();
}

async fn replay_is_atomic_with_the_intent(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 100_000).await;
    let first = log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 150))).await.unwrap();
    assert_eq!(first.seq, 0);
    let again = log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 150))).await;
    assert!(matches!(again, Err(AuditError::Replayed)), "{again:?}");
    assert_eq!(s.db.size().await.unwrap(), 1, "a replay writes nothing");
    // Another issuer may use the same jti.
    let other = ReplayKey { iss: "other-agent".into(), jti: "j-1".into(), expires_at: NOW + 150 };
    assert_eq!(log.append_intent(search_intent("j-1"), Some(other)).await.unwrap().seq, 1);

    // Eight concurrent uses of one fresh pair: exactly one wins, and the seqs stay dense.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append_intent(search_intent("j-race"), Some(replay("j-race", NOW + 150))).await }));
    }
    let mut ok = 0;
    let mut replayed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                ok += 1;
                assert_eq!(a.seq, 2);
            }
            Err(AuditError::Replayed) => replayed += 1,
            Err(e) => panic!("[{}] {e}", s.label),
        }
    }
    assert_eq!((ok, replayed), (1, 7), "[{}]", s.label);
    assert_eq!(log.append_event(event("x", "y")).await.unwrap().seq, 3);
    log.shutdown().await.unwrap();
}

async fn replay_expires_and_is_purged(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 100_000).await;
    log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 150))).await.unwrap();
    log.append_intent(search_intent("j-2"), Some(replay("j-2", NOW + 400))).await.unwrap();
    clock.advance_secs(149);
    assert!(matches!(log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 300))).await, Err(AuditError::Replayed)));
    clock.advance_secs(1);
    // At expires_at the pair is free again (DESIGN.md: kept until exp + leeway).
    assert_eq!(log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 300))).await.unwrap().seq, 2);
    assert!(matches!(log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 300))).await, Err(AuditError::Replayed)), "re-used pair is held again");
    // Purging at NOW+300 removes j-1 (expires NOW+300) but keeps j-2 (NOW+400).
    assert_eq!(s.db.purge_expired_replays(NOW + 300).await.unwrap(), 1);
    assert_eq!(s.db.purge_expired_replays(NOW + 300).await.unwrap(), 0);
    clock.advance_secs(200);
    assert_eq!(log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 600))).await.unwrap().seq, 3);
    log.shutdown().await.unwrap();
}

async fn checkpoints_every_n_records_on_demand_and_at_shutdown(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 1000).await;
    // 1,000 records from 10 concurrent appenders: the batch that reaches 1,000 triggers one.
    let mut tasks = Vec::new();
    for t in 0..10 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..100 {
                log.append_event(event("test.tick", &format!("{t}-{k}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The writer answers the appenders first and signs right after.
    eventually("the 1,000-record checkpoint", async || log.stats().checkpoints == 1).await;
    let cps = s.db.checkpoints().await.unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), [1000], "[{}]", s.label);
    let claims = keys().verify(&cps[0].jws).unwrap();
    assert_eq!((claims.origin.as_str(), claims.size, claims.time), (ORIGIN, 1000, NOW));
    assert_eq!(claims.root, log.head().root);

    for _ in 0..5 {
        log.append_event(event("test.tick", "x")).await.unwrap();
    }
    let on_demand = log.checkpoint().await.unwrap();
    assert_eq!(on_demand.size, 1005);
    log.append_event(event("gateway.stop", "gateway")).await.unwrap();
    let last = log.shutdown().await.unwrap().expect("the log grew: a shutdown checkpoint");
    assert_eq!(last.size, 1006);
    assert_eq!(keys().verify(&last.jws).unwrap().root, last.root);
    assert!(matches!(log.append_event(event("late", "x")).await, Err(AuditError::Closed)));
    assert_eq!(s.db.checkpoints().await.unwrap().iter().map(|c| c.size).collect::<Vec<_>>(), [1000, 1005, 1006]);
}

async fn checkpoint_after_sixty_seconds_on_the_injected_clock(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 1000).await;
    log.append_event(event("gateway.start", "gateway")).await.unwrap();
    log.append_event(event("test.tick", "x")).await.unwrap();
    clock.advance_secs(59);
    // Give the writer a chance to (wrongly) act, then check it did not.
    log.append_event(event("test.tick", "y")).await.unwrap();
    assert!(s.db.checkpoints().await.unwrap().is_empty(), "[{}] no checkpoint before 60 s", s.label);
    clock.advance_secs(1);
    eventually("the 60 s checkpoint", async || !s.db.checkpoints().await.unwrap().is_empty()).await;
    let cps = s.db.checkpoints().await.unwrap();
    assert_eq!((cps[0].size, cps[0].time), (3, NOW + 60));
    // Sixty more seconds without records: no new checkpoint (nothing to sign), and the
    // interval restarts there.
    clock.advance_secs(61);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.db.checkpoints().await.unwrap().len(), 1);
    log.append_event(event("test.tick", "z")).await.unwrap();
    clock.advance_secs(59);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.db.checkpoints().await.unwrap().len(), 1, "the interval restarted at +121 s");
    clock.advance_secs(1);
    eventually("the second checkpoint", async || s.db.checkpoints().await.unwrap().len() == 2).await;
    let cps = s.db.checkpoints().await.unwrap();
    assert_eq!((cps[1].size, cps[1].time), (4, NOW + 181));
    log.shutdown().await.unwrap();
}

async fn a_failed_store_fails_the_append_and_the_writer_recovers(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 1000).await;
    log.append_event(event("gateway.start", "gateway")).await.unwrap();
    let head = log.head();
    s.exec("ALTER TABLE audit_entries RENAME TO audit_entries_away").await;
    let err = log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 150))).await.unwrap_err();
    assert!(matches!(&err, AuditError::Store { .. }), "[{}] {err}", s.label);
    assert_eq!(log.head(), head, "a failed batch does not move the head");
    s.exec("ALTER TABLE audit_entries_away RENAME TO audit_entries").await;
    // The replay key of the failed intent was rolled back with it: the call can be retried.
    let a = log.append_intent(search_intent("j-1"), Some(replay("j-1", NOW + 150))).await.unwrap();
    assert_eq!(a.seq, 1);
    log.checkpoint().await.unwrap();
    let r = verify(&s.db, &keys(), &VerifyOptions::default()).await.unwrap();
    assert!(r.ok, "{:?}", r.findings);
    log.shutdown().await.unwrap();
}

async fn reopening_continues_the_log_and_refuses_a_tampered_one(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 10).await;
    populate(&log).await;
    let head = log.head();
    log.shutdown().await.unwrap();
    let log = open_log(&s.db, &clock, 10).await;
    assert_eq!(log.head(), head);
    assert_eq!(log.append_event(event("gateway.start", "gateway")).await.unwrap().seq, 30);
    log.shutdown().await.unwrap();
    let r = verify(&s.db, &keys(), &VerifyOptions::default()).await.unwrap();
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!((r.size, r.latest_checkpoint.map(|c| c.size)), (31, Some(31)));

    // A record under the latest checkpoint changed with a fixed leaf hash: refuse to open.
    s.drop_guards().await;
    let mut e = s.entry(4).await;
    e.record = medicodax_wire::audit::AuditRecord::Event(event("forged", "x"));
    s.rewrite(4, &e).await;
    let err = AuditLog::open(s.db.clone(), gateway_key(), clock.shared(), config(10)).await.unwrap_err();
    assert!(matches!(err, AuditError::LogMismatch { size: 31 }), "{err}");
}

async fn inclusion_and_consistency_proofs_verify_offline(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 10).await;
    let appended = populate(&log).await;
    let old = s.db.checkpoints().await.unwrap()[0].clone();
    assert_eq!(old.size, 10);
    log.append_event(event("gateway.stop", "gateway")).await.unwrap();
    // Seq 30 is not under a checkpoint yet.
    assert!(matches!(prove(&s.db, &keys(), 30).await, Err(AuditError::NotCheckpointed { seq: 30, size: 30 })));
    log.shutdown().await.unwrap();
    for seq in [0u64, 7, 17, 30] {
        let p = prove(&s.db, &keys(), seq).await.unwrap();
        assert_eq!((p.seq, p.checkpoint.size), (seq, 31));
        if seq < 30 {
            assert_eq!(p.leaf_hash, appended[seq as usize].leaf_hash_hex(), "the proof is for the leaf the appender was given");
        }
        p.check(&keys()).unwrap();
        // The proof is the RFC 9162 one: it verifies with the bare Merkle functions too.
        let proof: Vec<_> = p.proof.iter().map(|h| from_hex(h).unwrap()).collect();
        merkle::verify_inclusion(seq, 31, &from_hex(&p.leaf_hash).unwrap(), &proof, &from_hex(&p.checkpoint.root).unwrap()).unwrap();
        // A changed entry no longer checks.
        let mut bad = p.clone();
        bad.entry.record = medicodax_wire::audit::AuditRecord::Event(event("forged", "x"));
        assert!(bad.check(&keys()).is_err());
    }
    assert!(matches!(prove(&s.db, &keys(), 31).await, Err(AuditError::NotCheckpointed { .. })));

    let c = prove_consistency(&s.db, &keys(), &old.jws).await.unwrap();
    assert_eq!((c.from.size, c.to.size), (10, 31));
    c.check(&keys()).unwrap();
    let mut bad = c.clone();
    bad.proof.swap(0, 1);
    assert!(bad.check(&keys()).is_err());
}

async fn tail_and_follow_return_entries_in_order(s: &TestStore) {
    let clock = ManualClock::auto_advance(NOW);
    let log = AuditLog::open(s.db.clone(), gateway_key(), ManualClock::new(NOW).shared(), config(1000)).await.unwrap();
    populate(&log).await;
    let last = tail(&s.db, 3).await.unwrap();
    assert_eq!(last.iter().map(|e| e.seq).collect::<Vec<_>>(), [27, 28, 29]);
    assert_eq!(last[0].entry.seq, 27);
    // Seq 28 is the outcome of the 14th call (index 13), whose decision cycles to denied.
    assert!(matches!(last[1].entry.record, medicodax_wire::audit::AuditRecord::Outcome(ref o) if o.decision == Decision::Denied && o.intent_seq == 27));

    let mut stream = Box::pin(follow(s.db.clone(), 28, Duration::from_secs(1), clock.shared()));
    assert_eq!(stream.next().await.unwrap().unwrap().seq, 28);
    assert_eq!(stream.next().await.unwrap().unwrap().seq, 29);
    let log2 = log.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log2.append_event(event("gateway.stop", "gateway")).await.unwrap()
    });
    let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("follow sees the new entry").unwrap().unwrap();
    assert_eq!(next.seq, writer.await.unwrap().seq);
    assert!(clock.now_unix() > NOW, "follow slept on the injected clock between polls");
    log.shutdown().await.unwrap();
}

/// `append_outcome_numbered` gives the seq and leaf hash before the commit, and
/// `durable()` confirms exactly those; when the store cannot be written, `durable()` (or
/// the numbering itself) fails, so nothing signed over the early numbers may leave.
async fn numbered_outcomes_become_durable_or_fail(s: &TestStore) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, 1000).await;
    log.append_event(event("gateway.start", "gateway")).await.unwrap();
    let n = log.append_outcome_numbered(outcome(&search_intent("j-9"), 0, Decision::Allowed)).await.unwrap();
    assert_eq!(n.appended.seq, 1, "[{}]", s.label);
    let early = n.appended;
    let durable = n.durable().await.unwrap();
    assert_eq!(durable, early);
    let stored = medicodax_audit::tail(&s.db, 1).await.unwrap();
    assert_eq!(stored[0].seq, 1);
    assert_eq!(stored[0].leaf_hash, early.leaf_hash_hex());
    s.exec("ALTER TABLE audit_entries RENAME TO audit_entries_away").await;
    let failed = match log.append_outcome_numbered(outcome(&search_intent("j-10"), 0, Decision::Allowed)).await {
        Ok(n) => n.durable().await.err(),
        Err(e) => Some(e),
    };
    assert!(matches!(failed, Some(AuditError::Store { .. })), "[{}] {failed:?}", s.label);
    s.exec("ALTER TABLE audit_entries_away RENAME TO audit_entries").await;
    log.shutdown().await.unwrap();
}
