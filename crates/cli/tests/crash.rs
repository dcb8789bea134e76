//! The gateway killed with SIGKILL under load: after a restart, every call that got an
//! answer has its outcome record at the receipt's seq (with the receipt's leaf hash and
//! decision), and `medicodax audit verify` passes.

mod common;

use common::{BIN, Server};
use medicodax_agent::AgentClient;
use medicodax_audit::Db;
use medicodax_clock::SystemClock;
use medicodax_jose::PrivateKey;
use medicodax_wire::audit::AuditRecord;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answered_calls_survive_sigkill_and_the_log_verifies() {
    medicodax_jose::init().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let key = Arc::new(PrivateKey::from_file_auto(&server.agent_key()).unwrap());
    let patient = medicodax_sandbox::Dataset::embedded().unwrap().patients(medicodax_sandbox::Vendor::Epic)[0].id.clone();
    // The audience is the gateway URL in the embedded default.
    let agent = Arc::new(AgentClient::new("coding-agent", key, &server.url, &server.url, SystemClock::shared()).unwrap());

    // Eight agents call until the gateway dies; every answer with a receipt is kept.
    let answered: Arc<Mutex<Vec<(String, u64, String, &'static str)>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (agent, answered, patient) = (Arc::clone(&agent), Arc::clone(&answered), patient.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let (tool, args) = if (i + n) % 3 == 0 {
                    ("connections.list", json!({}))
                } else {
                    ("fhir.read", json!({"connection": "epic-sandbox", "type": "Patient", "id": patient}))
                };
                let serde_json::Value::Object(args) = args else { unreachable!() };
                let Ok(signed) = agent.sign("coder", tool, args, None) else { break };
                match agent.send(&signed).await {
                    Ok(out) => {
                        if let Some(r) = out.receipt {
                            answered.lock().unwrap().push((signed.claims.jti.clone(), r.claims.seq, r.claims.leaf_hash.clone(), r.claims.decision.as_str()));
                        }
                    }
                    Err(_) => break, // the gateway is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.kill();
    for t in tasks {
        let _ = t.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 20, "the load produced answers before the kill ({})", answered.len());

    // Restart on the same data folder: the log opens (no gap, matches its checkpoints).
    let server = Server::start(&data);
    let db = Db::connect_only(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
    for (jti, seq, leaf, decision) in &answered {
        let entry = db.entry(*seq).await.unwrap().unwrap_or_else(|| panic!("the outcome at seq {seq} for an answered call is missing"));
        assert_eq!(&entry.leaf_hash, leaf, "seq {seq}: stored leaf hash equals the receipt's");
        match &entry.entry.record {
            AuditRecord::Outcome(o) => {
                assert_eq!(&o.jti, jti);
                assert_eq!(o.decision.as_str(), *decision);
            }
            other => panic!("seq {seq} is not an outcome: {other:?}"),
        }
    }
    let out = std::process::Command::new(BIN).args(["--data-dir", &data.to_string_lossy(), "audit", "verify"]).output().unwrap();
    assert!(out.status.success(), "audit verify after the crash:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
    server.stop();
}
