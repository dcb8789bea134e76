//! Stress of the leader/follower writer: concurrent intents (with replayed call ids),
//! numbered outcomes, events and on-demand checkpoints, a third of the appenders aborted
//! at random points, and (in the `_fail` variants) batches failed by renaming the table
//! away and back; on both stores, on current-thread and multi-thread runtimes. Every run
//! must end dense, with the head equal to the store, `verify` passing and `Closed` after
//! shutdown; no appender may hang.

mod common;

use common::*;
use medicodax_audit::{AuditError, ReplayKey, VerifyOptions, verify};
use medicodax_clock::ManualClock;
use medicodax_wire::Decision;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn replay(jti: &str) -> ReplayKey {
    ReplayKey {
        iss: "coding-agent".into(),
        jti: jti.into(),
        expires_at: NOW + 600,
    }
}

fn note(oks: &std::sync::Mutex<Vec<u64>>, fail: bool, r: Result<medicodax_audit::Appended, AuditError>) {
    match r {
        Ok(a) => oks.lock().unwrap().push(a.seq),
        Err(AuditError::Replayed) => {}
        Err(e) if fail => {
            let _ = e;
        }
        Err(e) => panic!("{e}"),
    }
}

async fn stress(s: &TestStore, every: u64, fail: bool) {
    let clock = ManualClock::new(NOW);
    let log = open_log(&s.db, &clock, every).await;
    let oks = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let ctr = Arc::new(AtomicU64::new(0));
    for round in 0..40u64 {
        let mut tasks = Vec::new();
        for k in 0..12u64 {
            let log = log.clone();
            let oks = oks.clone();
            let ctr = ctr.clone();
            tasks.push(tokio::spawn(async move {
                let n = ctr.fetch_add(1, Ordering::Relaxed);
                match k % 4 {
                    0 => note(&oks, fail, log.append_event(event("t", &format!("{round}-{k}"))).await),
                    1 => {
                        let jti = format!("j{}", round * 100 + k / 8);
                        let i = intent(
                            &jti,
                            "fhir.search",
                            json!({"connection": "epic-sandbox", "type": "Condition", "params": [["patient", "pt-1001"]]}),
                        );
                        note(&oks, fail, log.append_intent(i, Some(replay(&jti))).await)
                    }
                    2 => {
                        let i = intent(
                            &format!("o{n}"),
                            "fhir.search",
                            json!({"connection": "epic-sandbox", "type": "Condition", "params": [["patient", "pt-1001"]]}),
                        );
                        match log.append_outcome_numbered(outcome(&i, 0, Decision::Allowed)).await {
                            Ok(num) => {
                                for _ in 0..(n % 3) {
                                    tokio::task::yield_now().await;
                                }
                                note(&oks, fail, num.durable().await)
                            }
                            Err(e) => note(&oks, fail, Err(e)),
                        }
                    }
                    _ => {
                        if n.is_multiple_of(5) {
                            let r = log.checkpoint().await;
                            if !fail {
                                r.unwrap();
                            }
                        } else {
                            note(&oks, fail, log.append_event(event("u", "x")).await)
                        }
                    }
                }
            }));
        }
        for _ in 0..(round % 4) {
            tokio::task::yield_now().await;
        }
        if fail && round % 5 == 1 {
            s.exec("ALTER TABLE audit_entries RENAME TO audit_entries_away").await;
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            s.exec("ALTER TABLE audit_entries_away RENAME TO audit_entries").await;
        }
        for t in tasks.iter().skip((round % 3) as usize).step_by(3) {
            t.abort();
        }
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(20), t).await {
                Err(_) => panic!("[{}] an appender hung in round {round}", s.label),
                Ok(Err(e)) if e.is_cancelled() => {}
                Ok(Err(e)) => panic!("[{}] panicked: {e}", s.label),
                Ok(Ok(())) => {}
            }
        }
    }
    eprintln!("[{}] stats {:?}", s.label, log.stats());
    let last = tokio::time::timeout(Duration::from_secs(20), log.append_event(event("end", "x")))
        .await
        .expect("hang")
        .unwrap();
    let size = s.db.size().await.unwrap();
    assert_eq!(size, last.seq + 1, "[{}]", s.label);
    let mut seen = BTreeSet::new();
    for q in oks.lock().unwrap().iter() {
        assert!(*q < size);
        assert!(seen.insert(*q), "dup seq {q}");
    }
    assert_eq!(log.head().size, size);
    log.checkpoint().await.unwrap();
    let r = verify(&s.db, &keys(), &VerifyOptions::default()).await.unwrap();
    let bad: Vec<String> = r
        .findings
        .iter()
        .map(|f| format!("{f:?}"))
        .filter(|f| !f.starts_with("OutcomeWithoutIntent"))
        .collect();
    assert!(bad.is_empty(), "[{}] {:?}", s.label, bad);
    log.shutdown().await.unwrap();
    assert!(matches!(log.append_event(event("late", "x")).await, Err(AuditError::Closed)));
}

macro_rules! t {
    ($name:ident, $store:ident, $flavor:tt, $every:expr, $fail:expr) => {
        #[tokio::test(flavor = $flavor)]
        async fn $name() {
            let s = $store().await;
            stress(&s, $every, $fail).await;
            s.cleanup().await;
        }
    };
}
t!(sqlite_ct, sqlite, "current_thread", 1000, false);
t!(sqlite_ct_cp, sqlite, "current_thread", 3, false);
t!(pg_ct, postgres, "current_thread", 1000, false);
t!(pg_ct_cp, postgres, "current_thread", 3, false);
t!(sqlite_mt, sqlite, "multi_thread", 1000, false);
t!(sqlite_mt_cp, sqlite, "multi_thread", 3, false);
t!(pg_mt, postgres, "multi_thread", 1000, false);
t!(pg_mt_cp, postgres, "multi_thread", 3, false);
t!(sqlite_ct_fail, sqlite, "current_thread", 3, true);
t!(pg_ct_fail, postgres, "current_thread", 3, true);
t!(sqlite_mt_fail, sqlite, "multi_thread", 3, true);
t!(pg_mt_fail, postgres, "multi_thread", 3, true);
