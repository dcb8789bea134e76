//! `medicodax code`: the coding pipeline, an agent like any other. It reaches data only
//! through signed tool calls to a gateway, and hands each worksheet in with
//! `worksheet.submit` for a coder's review in the dashboard.

use crate::CliError;
use crate::context::Context;
use crate::embedded::{CODER, CODING_AGENT};
use medicodax_agent::AgentClient;
use medicodax_clock::{SharedClock, SystemClock};
use medicodax_coding::Reference;
use medicodax_coding::runner::{EncounterOutcome, Progress, RunOptions, RunReport, WorklistEntry, WorklistQuery, build_worklist, run_worklist};
use medicodax_jose::PrivateKey;
use serde::Serialize;
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `code`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("worklist").required(true).args(["encounter", "patient", "since", "all"])))]
pub struct Args {
    /// Code one encounter.
    #[arg(long, value_name = "ID")]
    encounter: Option<String>,
    /// Code every finished encounter of a patient.
    #[arg(long, value_name = "ID")]
    patient: Option<String>,
    /// Code finished encounters starting on or after DATE (YYYY-MM-DD); with --until.
    #[arg(long, value_name = "DATE", requires = "until")]
    since: Option<String>,
    /// Last day of the range (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", requires = "since")]
    until: Option<String>,
    /// Code every finished encounter (embedded: of every bundled patient).
    #[arg(long)]
    all: bool,
    /// The EHR connection.
    #[arg(long, default_value = "epic-sandbox")]
    connection: String,
    /// The agent id (default: the embedded coding agent).
    #[arg(long, env = "MEDICODAX_AGENT", requires = "key")]
    agent: Option<String>,
    /// The agent's private key (PEM).
    #[arg(long, env = "MEDICODAX_AGENT_KEY", value_name = "PEM")]
    key: Option<PathBuf>,
    /// The gateway URL (default: start the embedded sandbox and gateway in this process).
    #[arg(long, env = "MEDICODAX_GATEWAY", requires = "agent")]
    gateway: Option<String>,
    /// The user the agent acts for.
    #[arg(long = "as", default_value = CODER, value_name = "USER")]
    sub: String,
    /// Do not hand worksheets to the dashboard.
    #[arg(long)]
    no_submit: bool,
    /// Print worksheets and the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// One connection's run: the worklist coded and the worksheets handed in.
#[derive(Serialize)]
pub struct ConnectionRun {
    /// The connection.
    pub connection: String,
    /// Worklist size.
    pub worklist: usize,
    /// The pipeline's report.
    pub report: RunReport,
    /// Worksheets accepted by `worksheet.submit`.
    pub worksheets_submitted: usize,
    /// Calls spent building the worklist.
    pub worklist_calls: u32,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// A progress line on standard error.
/// On a terminal the line is rewritten in place; otherwise a line is written every 10
/// encounters and at the end, so logs stay readable.
pub fn progress_line(conn: &str, p: &Progress) {
    use std::io::IsTerminal as _;
    let eta = p.eta.map(|d| format!(", about {} s left", d.as_secs())).unwrap_or_default();
    let text = format!("{conn}: {}/{} encounters ({} coded, {} denied, {} failed){eta}", p.done, p.total, p.coded, p.denied, p.failed);
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r{text}    ");
        if p.done == p.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    } else if p.done % 10 == 0 || p.done == p.total {
        let _ = writeln!(err, "{text}");
    }
}

/// Finds the worklist: the finished encounters of each patient, through signed searches.
pub async fn worklist_for_patients(agent: &AgentClient, clock: &SharedClock, options: &RunOptions, patients: &[String]) -> Result<(Vec<WorklistEntry>, u32), CliError> {
    let mut entries = Vec::new();
    let mut calls = 0;
    for p in patients {
        let wl = build_worklist(agent, clock, options, &WorklistQuery::Patient(p.clone()), None).await.map_err(fail)?;
        calls += wl.calls;
        entries.extend(wl.entries);
    }
    Ok((entries, calls))
}

/// Codes `entries` and, unless `submit` is false, hands each worksheet in.
pub async fn code_entries(agent: &AgentClient, reference: &Reference, clock: &SharedClock, options: &RunOptions, entries: &[WorklistEntry], submit: bool, worklist_calls: u32) -> ConnectionRun {
    let ids: Vec<String> = entries.iter().map(|x| x.encounter_id.clone()).collect();
    let conn = options.connection.clone();
    let report = run_worklist(agent, reference, clock, options, &ids, |p| progress_line(&conn, p)).await;
    let mut submitted = 0;
    if submit {
        for (entry, result) in entries.iter().zip(&report.results) {
            let EncounterOutcome::Coded { worksheet, time, .. } = &result.outcome else { continue };
            let Some(patient) = entry.patient_id.as_deref().or(worksheet.patient_id.as_deref()) else { continue };
            // The worksheet travels inside a signed call, bounded by the gateway's call size.
            let Some(worksheet) = medicodax_coding::fit_for_submission(worksheet, medicodax_wire::tools::MAX_WORKSHEET_BYTES) else {
                tracing::warn!(encounter = %entry.encounter_id, "the worksheet is too large to hand in, even shortened");
                continue;
            };
            let args = json!({
                "connection": options.connection,
                "encounter": entry.encounter_id,
                "patient": patient,
                "class": worksheet.class_code.clone().unwrap_or_else(|| "AMB".to_owned()),
                "pipeline_ms": (time.pipeline_minutes * 60_000.0).round().max(0.0) as u64,
                "worksheet": worksheet,
            });
            let serde_json::Value::Object(args) = args else { continue };
            match agent.call(&options.sub, "worksheet.submit", args).await {
                Ok(o) if o.status == 200 => submitted += 1,
                Ok(o) => tracing::warn!(encounter = %entry.encounter_id, status = o.status, code = ?o.problem.map(|p| p.code), "worksheet.submit was not accepted"),
                Err(err) => tracing::warn!(encounter = %entry.encounter_id, error = %err, "worksheet.submit failed"),
            }
        }
    }
    ConnectionRun { connection: options.connection.clone(), worklist: ids.len(), report, worksheets_submitted: submitted, worklist_calls }
}

/// The agent client for the embedded coding agent.
pub fn embedded_agent(key: &std::path::Path, gateway: &str, audience: &str, clock: SharedClock) -> Result<AgentClient, CliError> {
    let key = PrivateKey::from_file_auto(key).map_err(fail)?;
    AgentClient::new(CODING_AGENT, Arc::new(key), gateway, audience, clock).map_err(fail)
}

/// A `YYYY-MM-DD` calendar date, or a usage error naming the option.
fn date(option: &str, value: &str) -> Result<time::Date, CliError> {
    time::Date::parse(value, time::macros::format_description!("[year]-[month]-[day]")).map_err(|_| CliError::Usage(format!("{option} {value:?} is not a date (YYYY-MM-DD)")))
}

pub async fn run(ctx: &Context, a: Args) -> Result<(), CliError> {
    // Bad usage is refused before anything starts or any EHR is asked.
    if let (Some(since), Some(until)) = (&a.since, &a.until)
        && date("--since", since)? > date("--until", until)?
    {
        return Err(CliError::Usage(format!("--since {since} is after --until {until}")));
    }
    if let Some(e) = &a.encounter {
        medicodax_wire::FhirId::new(e).map_err(|err| CliError::Usage(format!("--encounter: {err}")))?;
    }
    if let Some(p) = &a.patient {
        medicodax_wire::FhirId::new(p).map_err(|err| CliError::Usage(format!("--patient: {err}")))?;
    }
    let clock = SystemClock::shared();
    let reference = Reference::embedded().map_err(fail)?;
    let mut env = None;
    let agent = match (&a.gateway, &a.agent, &a.key) {
        (Some(url), Some(id), Some(key)) => {
            let key = PrivateKey::from_file_auto(key).map_err(|e| CliError::Usage(format!("--key: {e}")))?;
            AgentClient::new(id, Arc::new(key), url, url.trim_end_matches('/'), Arc::clone(&clock)).map_err(fail)?
        }
        (None, _, _) => {
            let e = super::env::Env::open(ctx).await?;
            let (Some(url), Some(key)) = (e.url.clone(), e.agent_key.clone()) else {
                e.close().await;
                return Err(CliError::Usage("with a configuration file, pass --gateway, --agent and --key: the pipeline talks to a gateway like any agent".into()));
            };
            let agent = embedded_agent(&key, &url, e.gateway.audience(), Arc::clone(&clock))?;
            env = Some(e);
            agent
        }
        _ => return Err(CliError::Usage("--gateway needs --agent and --key".into())),
    };
    let options = RunOptions::new(&a.connection, &a.sub);
    let result = async {
        let (entries, calls) = if let Some(enc) = &a.encounter {
            let entry = WorklistEntry { encounter_id: enc.clone(), patient_id: None, class: medicodax_coding::EncounterClass::Outpatient, start: None };
            (vec![entry], 0)
        } else if let Some(p) = &a.patient {
            worklist_for_patients(&agent, &clock, &options, std::slice::from_ref(p)).await?
        } else if let (Some(from), Some(to)) = (&a.since, &a.until) {
            let wl = build_worklist(&agent, &clock, &options, &WorklistQuery::DateRange { from: from.clone(), to: to.clone() }, None).await.map_err(fail)?;
            (wl.entries, wl.calls)
        } else {
            match env.as_ref().and_then(|e| e.sandbox.as_ref()) {
                Some(sb) => {
                    let vendor = if a.connection.starts_with("ecw") { medicodax_sandbox::Vendor::EClinicalWorks } else { medicodax_sandbox::Vendor::Epic };
                    let patients: Vec<String> = sb.patients(vendor).iter().map(|p| p.id.clone()).collect();
                    worklist_for_patients(&agent, &clock, &options, &patients).await?
                }
                None => {
                    let wl = build_worklist(&agent, &clock, &options, &WorklistQuery::All, None).await.map_err(fail)?;
                    (wl.entries, wl.calls)
                }
            }
        };
        Ok::<_, CliError>(code_entries(&agent, &reference, &clock, &options, &entries, !a.no_submit, calls).await)
    }
    .await;
    if let Some(e) = env {
        e.close().await;
    }
    let run = result?;
    if a.json {
        crate::out::json(&run);
    } else {
        for r in &run.report.results {
            if let EncounterOutcome::Coded { worksheet, .. } = &r.outcome {
                crate::out::line(&medicodax_coding::render::to_table(worksheet));
            }
        }
        let s = &run.report.summary;
        crate::out::line(&format!(
            "{}: {} of {} encounters coded ({} with an ICD-10-CM suggestion), {} denied, {} failed, {} calls, {:.1} minutes saved before review, {} worksheets handed in",
            run.connection, s.coded, s.encounters, s.with_icd_suggestion, s.denials, s.failures, s.calls, s.minutes_saved, run.worksheets_submitted
        ));
    }
    // Every encounter not coded says why, and the exit code says that not all were.
    let mut missed = 0;
    for r in &run.report.results {
        let why = match &r.outcome {
            EncounterOutcome::Coded { .. } => continue,
            EncounterOutcome::Denied { status } => format!("denied by the gateway's policy (HTTP {status}); see the audit log"),
            EncounterOutcome::Failed { status, reason } => format!("failed{}: {reason}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()),
        };
        missed += 1;
        if !a.json {
            eprintln!("encounter {}: {why}", r.encounter_id);
        }
    }
    if missed > 0 {
        return Err(CliError::Failed(format!("{missed} of {} encounters were not coded", run.report.results.len())));
    }
    Ok(())
}
