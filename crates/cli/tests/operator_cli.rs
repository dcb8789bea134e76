//! `medicodax fhir read|search` and `medicodax token` on the embedded sandbox, as an
//! operator: real resources out, exit codes (0 done, 1 failed, 2 bad usage), every access
//! in the audit log (a record before the EHR is asked, one with the resources returned
//! before anything is printed), and no token printed unless asked.

mod common;

use common::BIN;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn run(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--data-dir").arg(data).args(args).env_remove("MEDICODAX_CONFIG").output().unwrap()
}

fn ok(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The `operator.fhir.*` events of the log, as (event, detail).
fn operator_events(data: &Path) -> Vec<(String, Value)> {
    let o = run(data, &["audit", "tail", "-n", "1000"]);
    assert_eq!(o.status.code(), Some(0));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.pointer("/entry/record/event").and_then(Value::as_str).is_some_and(|e| e.starts_with("operator.fhir")))
        .map(|v| (v.pointer("/entry/record/event").unwrap().as_str().unwrap().to_owned(), v.pointer("/entry/record/detail").unwrap().clone()))
        .collect()
}

#[test]
fn fhir_and_token_commands_fetch_real_data_and_audit_every_access() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let found = ok(&run(&data, &["fhir", "--connection", "ecw-sandbox", "search", "Patient", "_count=3", "--limit", "3"]));
    let resources = found["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 3, "{found}");
    assert!(resources.iter().all(|r| r["resourceType"] == "Patient"));
    let id = resources[0]["id"].as_str().unwrap().to_owned();

    let read = ok(&run(&data, &["fhir", "--connection", "ecw-sandbox", "read", "Patient", &id]));
    assert_eq!((read["resourceType"].as_str(), read["id"].as_str()), (Some("Patient"), Some(id.as_str())));

    let missing = run(&data, &["fhir", "--connection", "ecw-sandbox", "read", "Patient", "no-such-patient"]);
    assert_eq!(missing.status.code(), Some(1), "{}", String::from_utf8_lossy(&missing.stderr));
    for bad in [&["fhir", "read", "Medication", "x"][..], &["fhir", "read", "Patient", "a/b"], &["fhir", "search", "Patient", "novalue"], &["fhir", "--connection", "nope", "read", "Patient", "x"]] {
        let o = run(&data, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&o.stderr));
    }

    // Three accesses reached the EHR, each audited before and after; bad usage reached nothing.
    let events = operator_events(&data);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["operator.fhir.started", "operator.fhir.finished"].repeat(3));
    let (_, search) = &events[1];
    let want: Vec<String> = resources.iter().map(|r| format!("Patient/{}", r["id"].as_str().unwrap())).collect();
    assert_eq!(search["resources"], serde_json::json!(want));
    assert_eq!(search["result"], "ok");
    assert!(search["upstream"].as_array().unwrap().iter().all(|u| u["status"] == 200 && u["method"] == "GET"), "{search}");
    assert!(search["operator"].as_str().unwrap().ends_with("(command line)"));
    assert_eq!(events[3].1["resources"], serde_json::json!([format!("Patient/{id}")]));
    assert_eq!(events[5].1["result"], "failed");
    assert_eq!(events[5].1["upstream"][0]["status"], 404);
    assert!(events.iter().all(|(_, d)| d.get("resource").is_none() && !d.to_string().contains("\"name\"")), "no resource bodies in the log");

    // `token` shows metadata, never the token unless asked.
    let t = run(&data, &["token", "--connection", "ecw-sandbox", "--json"]);
    let report = ok(&t);
    assert_eq!(report["connection"], "ecw-sandbox", "{report}");
    assert!(report.get("access_token").is_none_or(Value::is_null), "{report}");
    let shown = ok(&run(&data, &["token", "--connection", "ecw-sandbox", "--json", "--show-token"]));
    assert!(shown["access_token"].as_str().is_some_and(|t| t.len() > 16), "{shown}");

    let verify = run(&data, &["audit", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn keys_commands_print_without_creating_and_rotations_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let jwks = run(&data, &["keys", "jwks"]);
    assert_eq!(jwks.status.code(), Some(2), "{}", String::from_utf8_lossy(&jwks.stderr));
    assert!(!data.exists(), "printing keys created nothing");
    assert_eq!(run(&data, &["keys", "generate"]).status.code(), Some(0));
    let published = ok(&run(&data, &["keys", "jwks"]));
    assert_eq!(published["keys"].as_array().unwrap().len(), 1);
    let nope = run(&data, &["keys", "rotate", "--connection", "nope"]);
    assert_eq!(nope.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nope.stderr).contains("no connection named \"nope\""));
    let rotated = ok(&run(&data, &["keys", "rotate"]));
    let published = ok(&run(&data, &["keys", "jwks"]));
    assert_eq!(published["keys"].as_array().unwrap().len(), 2, "the next key is published before it signs: {rotated}");
    let tail = run(&data, &["audit", "tail", "-n", "20"]);
    assert!(String::from_utf8_lossy(&tail.stdout).contains("\"key.rotation.started\""));
}
