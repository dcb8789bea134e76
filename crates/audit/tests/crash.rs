//! An acknowledged append survives the process being killed.
//!
//! The test re-runs this test binary as a child (`crash_child`, ignored unless asked for)
//! that appends from 8 concurrent tasks and prints each acknowledged `seq` and leaf hash.
//! After a few hundred acknowledgements the parent kills it with SIGKILL, mid-batch, then
//! checks that every acknowledged record is stored with the leaf hash its appender was
//! given, that `verify` finds nothing wrong, and that a new writer continues the log.

mod common;

use common::*;
use medicodax_audit::{AuditLog, Db, LogConfig, ReplayKey, VerifyOptions, verify, with_pool};
use medicodax_clock::SystemClock;
use sqlx::Row;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const CHILD_ENV: &str = "MEDICODAX_AUDIT_CRASH_URL";

/// The child: appends until it is killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by crash tests as a child process"]
async fn crash_child() {
    let url = std::env::var(CHILD_ENV).expect("run by the crash tests, which set MEDICODAX_AUDIT_CRASH_URL");
    let db = Db::connect(&url).await.unwrap();
    let log = AuditLog::open(db, gateway_key(), SystemClock::shared(), LogConfig::new(ORIGIN)).await.unwrap();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (log, out) = (log.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0.. {
                let jti = format!("crash-{t}-{k}");
                let a = log
                    .append_intent(intent(&jti, "fhir.read", serde_json::json!({"connection": "epic-sandbox", "type": "Patient", "id": "pt-1001"})), Some(ReplayKey { iss: "coding-agent".into(), jti, expires_at: NOW + 150 }))
                    .await
                    .unwrap();
                let mut o = out.lock().unwrap();
                writeln!(o, "ack {} {}", a.seq, a.leaf_hash_hex()).unwrap();
                o.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn killed_mid_stream_loses_no_acknowledged_record(store: TestStore) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &store.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acks: Vec<(u64, String)> = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while acks.len() < 300 {
        let Some(Ok(line)) = lines.next() else { panic!("[{}] the child stopped after {} acknowledgements", store.label, acks.len()) };
        if let Some(rest) = line.strip_prefix("ack ") {
            let (seq, leaf) = rest.split_once(' ').unwrap();
            acks.push((seq.parse().unwrap(), leaf.to_owned()));
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill and still in the pipe count too.
    for line in lines.map_while(Result::ok) {
        if let Some((seq, leaf)) = line.strip_prefix("ack ").and_then(|r| r.split_once(' ')) {
            acks.push((seq.parse().unwrap(), leaf.to_owned()));
        }
    }

    for (seq, leaf) in &acks {
        let stored: Result<Option<Vec<u8>>, sqlx::Error> = with_pool!(&store.db, pool => async {
            Ok(sqlx::query("SELECT leaf_hash FROM audit_entries WHERE seq = $1").bind(*seq as i64).fetch_optional(pool).await?.map(|r| r.get::<Vec<u8>, _>("leaf_hash")))
        }.await);
        assert_eq!(stored.unwrap().map(hex::encode).as_deref(), Some(leaf.as_str()), "[{}] acknowledged seq {seq} is lost or changed", store.label);
    }
    let r = verify(&store.db, &keys(), &VerifyOptions { origin: Some(ORIGIN.into()), external_checkpoint: None }).await.unwrap();
    assert!(r.ok, "[{}] {:?}", store.label, r.findings);
    let max = acks.iter().map(|(s, _)| *s).max().unwrap();
    assert!(r.size > max, "[{}] size {} after acknowledging seq {max}", store.label, r.size);

    let clock = medicodax_clock::ManualClock::new(NOW);
    let log = open_log(&store.db, &clock, 1000).await;
    assert_eq!(log.append_event(event("gateway.start", "gateway")).await.unwrap().seq, r.size);
    log.shutdown().await.unwrap();
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_killed_mid_stream_loses_no_acknowledged_record() {
    killed_mid_stream_loses_no_acknowledged_record(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_killed_mid_stream_loses_no_acknowledged_record() {
    killed_mid_stream_loses_no_acknowledged_record(postgres().await).await;
}
