//! The official MCP Python SDK (PyPI `mcp`) drives both MCP servers of a real
//! `medicodax serve` (the embedded sandbox default, in a temporary data folder):
//!
//! - `tests/interop/mcp/http_endpoint.py`: the streamable-HTTP endpoint `/mcp`, signing
//!   each call itself with PyJWT, in the SDK's `auto` (2026-07-28) and `legacy`
//!   (`initialize`) modes;
//! - `tests/interop/mcp/stdio_bridge.py`: `medicodax mcp` launched by the SDK as a stdio
//!   subprocess, which signs for the client.
//!
//! Each script lists the tools, makes a call that succeeds, one that is denied, and
//! checks every receipt with PyJWT against the gateway's JWKS; it prints the receipts'
//! `jti`, `seq` and decision. This test then reads the audit log with the audit crate's
//! `tail` and finds, for each, the outcome at that `seq` and its intent, with the right
//! channel, agent, user, tool and decision, and nothing for the calls that carried no
//! valid signed call.

mod common;

use common::{Server, interop_dir, python};
use medicodax_wire::audit::AuditRecord;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = "coding-agent";
const USER: &str = "coder";

/// Runs a script of `tests/interop/mcp` and returns its report (the last stdout line).
fn run_script(script: &str, args: &[&str]) -> Vec<Value> {
    let dir = interop_dir().join("mcp");
    let mut child = Command::new(python()).arg(script).args(args).current_dir(&dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{script} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{script} failed ({status}):\n{}\n{stdout}", stderr.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{script} printed no report ({e}): {stdout}"));
    report["calls"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_python_sdk_drives_the_endpoint_and_the_bridge_and_the_audit_log_agrees() {
    let python = python();
    assert!(python.exists());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let key = data.join("keys/agents/coding-agent.pem");
    let key = key.to_str().unwrap();
    let base = server.url.clone();
    let common = ["--gateway", &base, "--audience", &base, "--agent", AGENT, "--key", key, "--user", USER];

    let http = run_script("http_endpoint.py", &common);
    let mut bridge_args = vec!["--medicodax", env!("CARGO_BIN_EXE_medicodax")];
    bridge_args.extend_from_slice(&common);
    let bridge = run_script("stdio_bridge.py", &bridge_args);
    server.stop();

    let labels: Vec<&str> = http.iter().chain(&bridge).map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "auto:allowed", "auto:denied", "auto:mismatch", "auto:unsigned", "legacy:allowed", "legacy:denied", "legacy:mismatch", "legacy:unsigned",
            "bridge-auto:allowed", "bridge-auto:search", "bridge-legacy:allowed", "bridge-legacy:search", "bridge:denied",
        ]
    );

    let db = medicodax_audit::Db::connect(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
    let log = medicodax_audit::tail(&db, 100_000).await.unwrap();
    let at = |seq: u64| &log.iter().find(|e| e.seq == seq).unwrap_or_else(|| panic!("no entry {seq}")).entry.record;
    let mut receipted = 0;
    for call in http.iter().chain(&bridge) {
        let label = call["label"].as_str().unwrap();
        let Some(seq) = call["seq"].as_u64() else {
            assert!(label.ends_with(":unsigned"), "{label} has no receipt");
            continue;
        };
        receipted += 1;
        let AuditRecord::Outcome(o) = at(seq) else { panic!("{label}: entry {seq} is not an outcome") };
        assert_eq!(o.jti, call["jti"].as_str().unwrap(), "{label}");
        assert_eq!(o.decision.as_str(), call["decision"].as_str().unwrap(), "{label}");
        let want_code = match label.rsplit(':').next().unwrap() {
            "denied" => Some("denied"),
            "mismatch" => Some("bad-arguments"),
            _ => None,
        };
        assert_eq!(o.code.as_deref(), want_code, "{label}");
        let AuditRecord::Intent(i) = at(o.intent_seq) else { panic!("{label}: entry {} is not an intent", o.intent_seq) };
        assert_eq!(i.jti, o.jti, "{label}");
        assert_eq!(i.agent, AGENT, "{label}");
        assert_eq!(i.user, call["user"].as_str().unwrap(), "{label}");
        assert_eq!(i.tool, call["tool"].as_str().unwrap(), "{label}");
        assert_eq!(i.channel, call["channel"].as_str().unwrap(), "{label}");
        if want_code.is_none() && i.tool == "fhir.search" {
            assert!(!o.upstream.is_empty() && !o.patients.is_empty(), "{label}: the EHR request and the patients touched are recorded");
        }
        if want_code.is_some() {
            assert!(o.upstream.is_empty(), "{label}: a denial reaches no EHR");
        }
    }
    assert_eq!(receipted, 11);
    // Exactly one intent per receipted call and none for the unsigned ones: 6 over /mcp,
    // 5 forwarded by the bridge to /v1/calls.
    let intents = |channel: &str| log.iter().filter(|e| matches!(&e.entry.record, AuditRecord::Intent(i) if i.channel == channel)).count();
    assert_eq!((intents("mcp"), intents("http")), (6, 5));
}
