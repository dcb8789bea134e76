//! `medicodax demo`: the whole mission in one process, on the embedded sandbox.
//!
//! 1. Start the sandbox EHRs (Epic-like and eClinicalWorks-like) and the gateway on
//!    loopback, exactly as `serve` does with no configuration file.
//! 2. The reference coding agent, with its own key, builds a worklist and codes it
//!    through signed tool calls only (`fhir.search`, `encounter.bundle`), under each
//!    vendor's real rate budget, and hands each worksheet to the dashboard
//!    (`worksheet.submit`).
//! 3. Show the trust layer refusing: a call acting for a user the agent may not act for
//!    (denied, audited, with a receipt), and a tampered call (refused before anything
//!    happens, not audited).
//! 4. Sign a checkpoint and verify the whole audit log.
//! 5. Print a summary: worklist and budgets, encounters, codes by source, calls,
//!    denials, minutes saved, audit verified.

use crate::CliError;
use crate::context::Context;
use crate::embedded::{self, CODER, CODING_AGENT};
use medicodax_agent::AgentClient;
use medicodax_clock::{SharedClock, SystemClock};
use medicodax_coding::runner::{RunOptions, RunReport};
use medicodax_coding::Reference;
use medicodax_gateway::server::{self, Paths};
use medicodax_jose::{Alg, PrivateKey};
use medicodax_sandbox::Vendor as SandboxVendor;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// Requests one encounter costs at an EHR (encounter and patient reads, nine part
/// searches, and a margin for paging), used to size the default worklist.
const REQUESTS_PER_ENCOUNTER: usize = 13;

/// The eClinicalWorks practice budget, requests per minute (token and FHIR together).
const ECW_BUDGET_PER_MINUTE: usize = 250;

/// Arguments of `demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Code every finished encounter of every bundled patient (long: eClinicalWorks'
    /// budget allows about 20 encounters a minute), with progress and an estimate.
    #[arg(long)]
    all: bool,
    /// Encounters per connection for the default worklist (default: what fits in about
    /// a minute under the eClinicalWorks budget).
    #[arg(long, value_name = "N", conflicts_with = "all")]
    per_connection: Option<usize>,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ConnectionRun {
    connection: String,
    vendor: &'static str,
    budget: String,
    worklist: usize,
    report: RunReport,
    worksheets_submitted: usize,
    ehr_requests: usize,
}

#[derive(Serialize)]
struct DemoSummary {
    gateway: String,
    connections: Vec<ConnectionSummary>,
    encounters: usize,
    coded: usize,
    with_icd10_suggestion: usize,
    codes_by_source: serde_json::Value,
    calls: u64,
    denials: u64,
    refused_unverified: u64,
    minutes_saved: f64,
    encounters_per_second: f64,
    audit: serde_json::Value,
    elapsed_secs: f64,
}

#[derive(Serialize)]
struct ConnectionSummary {
    connection: String,
    vendor: &'static str,
    budget: String,
    worklist: usize,
    coded: usize,
    denied: usize,
    failed: usize,
    rate_limited: u64,
    minutes_saved: f64,
    ehr_requests: usize,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

fn default_per_connection() -> usize {
    // Leave room for the worklist searches and token requests inside one minute.
    (ECW_BUDGET_PER_MINUTE - 40) / REQUESTS_PER_ENCOUNTER
}

async fn run_connection(agent: &AgentClient, reference: &Reference, clock: &SharedClock, sandbox: &medicodax_sandbox::SandboxHandle, connection: &str, vendor: SandboxVendor, limit: Option<usize>) -> Result<ConnectionRun, CliError> {
    let options = RunOptions::new(connection, CODER);
    let patients: Vec<String> = sandbox.patients(vendor).iter().map(|p| p.id.clone()).collect();
    let (mut entries, calls) = super::code::worklist_for_patients(agent, clock, &options, &patients).await?;
    // Most recent first: recent encounters carry the richest notes.
    entries.sort_by(|a, b| b.start.cmp(&a.start).then_with(|| a.encounter_id.cmp(&b.encounter_id)));
    if let Some(n) = limit {
        entries.truncate(n);
    }
    let run = super::code::code_entries(agent, reference, clock, &options, &entries, true, calls).await;
    let budget = match vendor {
        SandboxVendor::EClinicalWorks => format!("{ECW_BUDGET_PER_MINUTE} requests/minute per practice (token + FHIR)"),
        SandboxVendor::Epic => "no published request budget; tokens last 3600 s".to_owned(),
    };
    Ok(ConnectionRun {
        connection: connection.to_owned(),
        vendor: match vendor {
            SandboxVendor::Epic => "epic",
            SandboxVendor::EClinicalWorks => "eclinicalworks",
        },
        budget,
        worklist: run.worklist,
        report: run.report,
        worksheets_submitted: run.worksheets_submitted,
        ehr_requests: 0,
    })
}

/// Demonstrates refusals: a denial (audited, with a receipt) and a tampered call
/// (refused before verification completes, not audited). Returns (denials, refused).
async fn show_refusals(agent: &AgentClient) -> Result<(u64, u64), CliError> {
    let mut denials = 0;
    let out = agent.call("admin", "connections.list", serde_json::Map::new()).await.map_err(fail)?;
    if out.status == 403 && out.receipt.is_some() {
        denials += 1;
        eprintln!("refused as expected: the agent tried to act for `admin` (403, audited, receipt seq {})", out.receipt.as_ref().map(|r| r.claims.seq).unwrap_or_default());
    } else {
        return Err(CliError::Failed(format!("acting for admin should have been denied, got HTTP {}", out.status)));
    }
    let signed = agent.sign(CODER, "connections.list", serde_json::Map::new(), None).map_err(fail)?;
    let mut tampered = signed.clone();
    let parts: Vec<&str> = signed.jws.split('.').collect();
    if let [h, _, s] = parts.as_slice() {
        use base64::Engine as _;
        let mut claims = signed.claims.clone();
        claims.sub = "admin".into();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(fail)?);
        tampered.jws = format!("{h}.{payload}.{s}");
    }
    let out = agent.send(&tampered).await.map_err(fail)?;
    if out.status != 401 || out.receipt.is_some() {
        return Err(CliError::Failed(format!("a tampered call should be refused with 401 and no receipt, got HTTP {}", out.status)));
    }
    eprintln!("refused as expected: a tampered call (401, not audited, no receipt)");
    Ok((denials, 1))
}

pub async fn run(ctx: &Context, a: Args) -> Result<(), CliError> {
    if ctx.config_path.is_some() {
        return Err(CliError::Usage("demo always runs on the embedded sandbox; to code through a configured gateway use `medicodax code`".into()));
    }
    let started = Instant::now();
    let clock = SystemClock::shared();
    let embedded::Embedded { sandbox, config, listener, addr, agent_key } = embedded::start(ctx.config()?, "127.0.0.1:0", &ctx.data_dir, Arc::clone(&clock)).await?;
    let paths = Paths { data_dir: ctx.data_dir.clone(), config_dir: std::env::current_dir().unwrap_or_default() };
    let (gw, startup) = server::build(config, &paths, Arc::clone(&clock)).await.map_err(super::serve::start_error)?;
    super::serve::ensure_coder(&gw).await?;
    if let Some(pw) = &startup.admin_password {
        eprintln!("created dashboard user `admin` with password: {pw}\n(shown once; to set a new one, with no gateway running: `medicodax users passwd admin --generate`)");
    }
    let gateway_url = format!("http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(Arc::clone(&gw), listener, async {
        let _ = stop_rx.await;
    }));
    eprintln!("gateway on {gateway_url}; sandbox EHRs on {}", sandbox.origin());

    let key = PrivateKey::from_file(&agent_key, Alg::RS384).map_err(fail)?;
    let agent = AgentClient::new(CODING_AGENT, Arc::new(key), &gateway_url, gw.audience(), Arc::clone(&clock)).map_err(fail)?;
    let reference = Reference::embedded().map_err(fail)?;
    let limit = if a.all { None } else { Some(a.per_connection.unwrap_or_else(default_per_connection)) };
    eprintln!(
        "worklist: {} per connection, under each vendor's rate budget",
        limit.map_or_else(|| "every finished encounter".to_owned(), |n| format!("the {n} most recent finished encounters"))
    );

    let epic = run_connection(&agent, &reference, &clock, &sandbox, "epic-sandbox", SandboxVendor::Epic, limit);
    let ecw = run_connection(&agent, &reference, &clock, &sandbox, "ecw-sandbox", SandboxVendor::EClinicalWorks, limit);
    let (epic, ecw) = tokio::join!(epic, ecw);
    let mut runs = vec![epic?, ecw?];
    let stats = sandbox.stats();
    runs[0].ehr_requests = stats.requests.iter().filter(|r| r.vendor == Some(SandboxVendor::Epic)).count();
    runs[1].ehr_requests = stats.requests.iter().filter(|r| r.vendor == Some(SandboxVendor::EClinicalWorks)).count();
    let (denials, refused) = show_refusals(&agent).await?;

    // Sign a checkpoint now and verify the whole log.
    gw.audit.checkpoint().await.map_err(fail)?;
    let keys = medicodax_audit::CheckpointKeys::new(gw.keys.verifying_keys());
    let report = medicodax_audit::verify(gw.audit.db(), &keys, &medicodax_audit::VerifyOptions { origin: Some(gw.audit.origin().to_owned()), external_checkpoint: None })
        .await
        .map_err(fail)?;

    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = sandbox.shutdown().await;

    let summary = summarise(&runs, denials, refused, &report, &gateway_url, started.elapsed().as_secs_f64());
    if a.json {
        crate::out::json(&summary);
    } else {
        print_table(&summary, &runs);
    }
    if !report.ok {
        return Err(CliError::Failed("the audit log did not verify; run `medicodax audit verify` for the findings".into()));
    }
    Ok(())
}

fn summarise(runs: &[ConnectionRun], denials: u64, refused: u64, audit: &medicodax_audit::VerifyReport, gateway: &str, elapsed: f64) -> DemoSummary {
    let mut codes = serde_json::Map::new();
    let mut s = DemoSummary {
        gateway: gateway.to_owned(),
        connections: Vec::new(),
        encounters: 0,
        coded: 0,
        with_icd10_suggestion: 0,
        codes_by_source: serde_json::Value::Null,
        calls: 0,
        denials,
        refused_unverified: refused,
        minutes_saved: 0.0,
        encounters_per_second: 0.0,
        audit: serde_json::to_value(audit).unwrap_or_default(),
        elapsed_secs: elapsed,
    };
    for r in runs {
        let m = &r.report.summary;
        s.encounters += m.encounters;
        s.coded += m.coded;
        s.with_icd10_suggestion += m.with_icd_suggestion;
        s.calls += m.calls + r.worksheets_submitted as u64;
        s.denials += m.denials;
        s.minutes_saved += m.minutes_saved;
        if let Ok(serde_json::Value::Object(c)) = serde_json::to_value(&m.codes_by_source) {
            for (k, v) in c {
                let add = v.as_u64().unwrap_or(0);
                let cur = codes.get(&k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                codes.insert(k, json!(cur + add));
            }
        }
        s.connections.push(ConnectionSummary {
            connection: r.connection.clone(),
            vendor: r.vendor,
            budget: r.budget.clone(),
            worklist: r.worklist,
            coded: m.coded,
            denied: m.denials as usize,
            failed: m.failures as usize,
            rate_limited: m.rate_limited,
            minutes_saved: m.minutes_saved,
            ehr_requests: r.ehr_requests,
        });
    }
    s.calls += denials + refused;
    s.codes_by_source = serde_json::Value::Object(codes);
    s.encounters_per_second = if elapsed > 0.0 { s.coded as f64 / elapsed } else { 0.0 };
    s
}

fn print_table(s: &DemoSummary, runs: &[ConnectionRun]) {
    let _ = runs;
    crate::out::line("");
    crate::out::line("MEDICODAX demo summary");
    crate::out::line(&format!("  gateway                 {}", s.gateway));
    for c in &s.connections {
        crate::out::line(&format!("  {} ({}): worklist {}, coded {}, denied {}, failed {}; {} EHR requests, {} rate-limit waits; budget: {}", c.connection, c.vendor, c.worklist, c.coded, c.denied, c.failed, c.ehr_requests, c.rate_limited, c.budget));
    }
    crate::out::line(&format!("  encounters coded        {} of {} ({} with an ICD-10-CM suggestion)", s.coded, s.encounters, s.with_icd10_suggestion));
    let n = |k: &str| s.codes_by_source.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    crate::out::line(&format!("  codes suggested         {} from the record, {} from the SNOMED CT crosswalk, {} by text match", n("record"), n("crosswalk"), n("text")));
    crate::out::line(&format!("  signed calls            {} ({} denied by policy, {} refused unverified)", s.calls, s.denials, s.refused_unverified));
    crate::out::line(&format!("  minutes saved           {:.1} (before coder review)", s.minutes_saved));
    let ok = s.audit.get("ok").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let size = s.audit.get("size").and_then(serde_json::Value::as_u64).unwrap_or(0);
    crate::out::line(&format!("  audit log               {} records, {}", size, if ok { "verified (chain and signed checkpoints)" } else { "DID NOT VERIFY" }));
    crate::out::line(&format!("  elapsed                 {:.1} s ({:.2} encounters/s)", s.elapsed_secs, s.encounters_per_second));
}
