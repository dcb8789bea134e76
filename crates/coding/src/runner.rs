//! The runner: codes a worklist of encounters through signed tool calls.
//!
//! [`run_worklist`] calls `encounter.bundle` for each encounter id (at most
//! [`RunOptions::concurrency`] at once), builds each worksheet, reports [`Progress`]
//! after each encounter and returns a [`RunReport`]. A `429` answer makes every worker
//! wait out its `Retry-After` (the gateway's budget is shared) and the call is retried
//! with a fresh signature; a denial (`403`) is recorded as a denial, never a crash.
//! [`build_worklist`] finds the finished encounters to code with `fhir.search`.
//!
//! Calls go through the [`ToolCaller`] trait, implemented by
//! [`AgentClient`] (sign, send, verify the receipt) and by
//! test fakes, so the logic is tested without a network. Logs carry ids, statuses and
//! counts only.

use crate::Reference;
use crate::time_saved::{Baselines, EncounterClass, TimeSaved, time_saved};
use crate::worksheet::{BuildOptions, SourceCounts, Worksheet, build_worksheet_with};
use futures::StreamExt;
use medicodax_agent::{AgentClient, AgentError, CallOutcome};
use medicodax_clock::{Mono, SharedClock};
use medicodax_wire::tools::{EncounterBundle, SearchResult};
use medicodax_wire::{FhirId, ToolName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// Something that makes a signed tool call and returns the gateway's answer.
pub trait ToolCaller: Send + Sync {
    /// Calls `tool` with `args`, acting for the user `sub`. Each call must be freshly
    /// signed (a retry is a new call with a new `jti`).
    fn call_tool(&self, sub: &str, tool: ToolName, args: Map<String, Value>) -> impl Future<Output = Result<CallOutcome, AgentError>> + Send;
}

impl ToolCaller for AgentClient {
    fn call_tool(&self, sub: &str, tool: ToolName, args: Map<String, Value>) -> impl Future<Output = Result<CallOutcome, AgentError>> + Send {
        self.call(sub, tool.as_str(), args)
    }
}

/// How a run behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// The EHR connection name (e.g. `epic-sandbox`).
    pub connection: String,
    /// The user the agent acts for (`sub`).
    pub sub: String,
    /// Calls in flight at once (at least 1; default 4).
    pub concurrency: usize,
    /// Attempts per call when rate limited (default 8).
    pub max_attempts: u32,
    /// Wait after a `429` without `Retry-After` (default 1 s).
    pub default_retry_after: Duration,
    /// Longest `Retry-After` honoured; longer ones are capped (default 120 s).
    pub max_retry_after: Duration,
    /// Manual baselines for time saved.
    pub baselines: Baselines,
    /// Worksheet builder options.
    pub build: BuildOptions,
}

impl RunOptions {
    /// Defaults for a connection and user.
    pub fn new(connection: &str, sub: &str) -> RunOptions {
        RunOptions {
            connection: connection.to_owned(),
            sub: sub.to_owned(),
            concurrency: 4,
            max_attempts: 8,
            default_retry_after: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(120),
            baselines: Baselines::default(),
            build: BuildOptions::default(),
        }
    }
}

/// Progress after each encounter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Encounters finished (coded, denied or failed).
    pub done: usize,
    /// Worklist size.
    pub total: usize,
    /// Coded so far.
    pub coded: usize,
    /// Denied so far.
    pub denied: usize,
    /// Failed so far.
    pub failed: usize,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Estimated time to finish at the rate so far (none before the first encounter).
    pub eta: Option<Duration>,
}

/// What happened to one encounter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum EncounterOutcome {
    /// A worksheet was built.
    Coded {
        /// The worksheet.
        worksheet: Box<Worksheet>,
        /// Time saved (review time not yet recorded).
        time: TimeSaved,
        /// The receipt's audit sequence number, when the answer had a receipt.
        receipt_seq: Option<u64>,
    },
    /// The gateway's policy refused the call.
    Denied {
        /// HTTP status (403).
        status: u16,
    },
    /// The call failed.
    Failed {
        /// HTTP status, when there was an answer.
        status: Option<u16>,
        /// The problem code or error class (never a body).
        reason: String,
    },
}

/// One encounter's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncounterResult {
    /// The encounter id.
    pub encounter_id: String,
    /// Calls made for it (retries included).
    pub calls: u32,
    /// What happened.
    #[serde(flatten)]
    pub outcome: EncounterOutcome,
}

/// Totals of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Worklist size.
    pub encounters: usize,
    /// Encounters coded.
    pub coded: usize,
    /// Coded encounters with at least one ICD-10-CM suggestion.
    pub with_icd_suggestion: usize,
    /// Suggestions by source.
    pub codes_by_source: SourceCounts,
    /// Tool calls made (retries included).
    pub calls: u64,
    /// Calls denied by policy.
    pub denials: u64,
    /// Encounters that failed (not denied).
    pub failures: u64,
    /// `429` answers met (each was waited out and retried).
    pub rate_limited: u64,
    /// Minutes saved over coded encounters (review time not yet recorded).
    pub minutes_saved: f64,
    /// Minutes saved by encounter class.
    pub minutes_saved_by_class: BTreeMap<EncounterClass, f64>,
    /// Coded encounters by class.
    pub coded_by_class: BTreeMap<EncounterClass, usize>,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Encounters finished per second of wall time.
    pub encounters_per_second: f64,
}

/// A run's summary and per-encounter results (in worklist order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Totals.
    pub summary: RunSummary,
    /// One per worklist entry, in worklist order.
    pub results: Vec<EncounterResult>,
}

/// A failure of a worklist search.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The gateway's policy refused the search.
    #[error("the gateway denied the encounter search (HTTP {status})")]
    Denied {
        /// HTTP status.
        status: u16,
    },
    /// The search failed.
    #[error("the encounter search failed (HTTP {status}, {code})")]
    Failed {
        /// HTTP status.
        status: u16,
        /// The problem code, or `unknown`.
        code: String,
    },
    /// The answer was not a search result.
    #[error("the encounter search answered with something that is not a search result")]
    BadResult,
    /// The call could not be made.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// The shared "not before" point set by `429` answers.
struct Gate {
    until: Mutex<Mono>,
}

impl Gate {
    fn new() -> Gate {
        Gate { until: Mutex::new(Mono::default()) }
    }

    fn until(&self) -> Mono {
        *self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, to: Mono) {
        let mut u = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if to > *u {
            *u = to;
        }
    }
}

/// A call with waiting on `429`: returns the last outcome, the attempts and the 429s met.
async fn call_with_retry<C: ToolCaller>(caller: &C, clock: &SharedClock, gate: &Gate, options: &RunOptions, tool: ToolName, args: &Map<String, Value>) -> (Result<CallOutcome, AgentError>, u32, u32) {
    let mut attempts = 0u32;
    let mut limited = 0u32;
    loop {
        let wait = clock.monotonic().until(gate.until());
        if !wait.is_zero() {
            clock.sleep(wait).await;
        }
        attempts += 1;
        let out = caller.call_tool(&options.sub, tool, args.clone()).await;
        match &out {
            Ok(o) if o.status == 429 && attempts < options.max_attempts.max(1) => {
                limited += 1;
                let after = o.retry_after.map_or(options.default_retry_after, Duration::from_secs).min(options.max_retry_after);
                tracing::debug!(tool = tool.as_str(), attempt = attempts, retry_after_ms = after.as_millis() as u64, "rate limited; waiting");
                gate.push(clock.monotonic().add(after));
            }
            Ok(o) => {
                limited += u32::from(o.status == 429);
                return (out, attempts, limited);
            }
            Err(_) => return (out, attempts, limited),
        }
    }
}

fn problem_code(o: &CallOutcome) -> String {
    o.problem.as_ref().map_or_else(|| "unknown".to_owned(), |p| p.code.as_str().to_owned())
}

struct Coded {
    index: usize,
    result: EncounterResult,
    limited: u32,
}

async fn code_one<C: ToolCaller>(caller: &C, reference: &Reference, clock: &SharedClock, gate: &Gate, options: &RunOptions, index: usize, encounter_id: &str) -> Coded {
    let started = clock.monotonic();
    let done = |calls: u32, limited: u32, outcome: EncounterOutcome| Coded { index, result: EncounterResult { encounter_id: encounter_id.to_owned(), calls, outcome }, limited };
    if FhirId::new(encounter_id).is_err() {
        return done(0, 0, EncounterOutcome::Failed { status: None, reason: "not a FHIR id".into() });
    }
    let mut args = Map::new();
    args.insert("connection".into(), json!(options.connection));
    args.insert("encounter".into(), json!(encounter_id));
    let (out, calls, limited) = call_with_retry(caller, clock, gate, options, ToolName::EncounterBundle, &args).await;
    let outcome = match out {
        Err(e) => {
            tracing::warn!(encounter = encounter_id, error = %e, "encounter.bundle call failed");
            EncounterOutcome::Failed { status: None, reason: e.to_string() }
        }
        Ok(o) if o.status == 403 => {
            tracing::info!(encounter = encounter_id, "encounter.bundle denied");
            EncounterOutcome::Denied { status: o.status }
        }
        Ok(o) if (200..300).contains(&o.status) => match o.result.map(serde_json::from_value::<EncounterBundle>) {
            Some(Ok(bundle)) => {
                let worksheet = build_worksheet_with(&bundle, reference, options.build);
                let time = time_saved(worksheet.encounter_class, &options.baselines, clock.monotonic().since(started), None);
                EncounterOutcome::Coded { worksheet: Box::new(worksheet), time, receipt_seq: o.receipt.map(|r| r.claims.seq) }
            }
            _ => EncounterOutcome::Failed { status: Some(o.status), reason: "the result is not an encounter bundle".into() },
        },
        Ok(o) => {
            let reason = problem_code(&o);
            tracing::info!(encounter = encounter_id, status = o.status, code = %reason, "encounter.bundle failed");
            EncounterOutcome::Failed { status: Some(o.status), reason }
        }
    };
    done(calls, limited, outcome)
}

/// Codes every encounter of `worklist` through `caller`, calling `progress` after each.
pub async fn run_worklist<C: ToolCaller>(caller: &C, reference: &Reference, clock: &SharedClock, options: &RunOptions, worklist: &[String], mut progress: impl FnMut(&Progress) + Send) -> RunReport {
    let gate = Gate::new();
    let started = clock.monotonic();
    let total = worklist.len();
    let mut summary = RunSummary { encounters: total, ..RunSummary::default() };
    let mut results: Vec<Option<EncounterResult>> = vec![None; total];
    let mut p = Progress { done: 0, total, coded: 0, denied: 0, failed: 0, elapsed: Duration::ZERO, eta: None };
    let gate_ref = &gate;
    let mut stream = futures::stream::iter(worklist.iter().enumerate())
        .map(|(i, id)| code_one(caller, reference, clock, gate_ref, options, i, id))
        .buffer_unordered(options.concurrency.max(1));
    while let Some(c) = stream.next().await {
        summary.calls += u64::from(c.result.calls);
        summary.rate_limited += u64::from(c.limited);
        match &c.result.outcome {
            EncounterOutcome::Coded { worksheet, time, .. } => {
                p.coded += 1;
                summary.codes_by_source.add(worksheet.codes_by_source());
                summary.with_icd_suggestion += usize::from(worksheet.has_icd_suggestion());
                summary.minutes_saved += time.saved_minutes;
                *summary.minutes_saved_by_class.entry(time.class).or_insert(0.0) += time.saved_minutes;
                *summary.coded_by_class.entry(time.class).or_insert(0) += 1;
            }
            EncounterOutcome::Denied { .. } => {
                p.denied += 1;
                summary.denials += 1;
            }
            EncounterOutcome::Failed { .. } => {
                p.failed += 1;
                summary.failures += 1;
            }
        }
        if let Some(slot) = results.get_mut(c.index) {
            *slot = Some(c.result);
        }
        p.done += 1;
        p.elapsed = clock.monotonic().since(started);
        p.eta = Duration::try_from_secs_f64(p.elapsed.as_secs_f64() * (total - p.done) as f64 / p.done as f64).ok();
        progress(&p);
    }
    drop(stream);
    summary.coded = p.coded;
    let elapsed = clock.monotonic().since(started);
    summary.elapsed_secs = elapsed.as_secs_f64();
    summary.encounters_per_second = if elapsed.is_zero() { 0.0 } else { total as f64 / elapsed.as_secs_f64() };
    tracing::info!(encounters = total, coded = summary.coded, denials = summary.denials, failures = summary.failures, calls = summary.calls, "coding run finished");
    RunReport { summary, results: results.into_iter().flatten().collect() }
}

/// Which encounters to code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorklistQuery {
    /// Every finished encounter the connection returns (`Encounter` with no parameter;
    /// some EHRs refuse unbounded searches, use a date range there).
    All,
    /// The finished encounters of one patient (`patient=`).
    Patient(String),
    /// Finished encounters in a date range (`date=ge…&date=le…`, ISO dates).
    DateRange {
        /// First day, e.g. `2020-01-01`.
        from: String,
        /// Last day, e.g. `2020-12-31`.
        to: String,
    },
}

/// One encounter on a worklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorklistEntry {
    /// The encounter id.
    pub encounter_id: String,
    /// Its patient's id.
    pub patient_id: Option<String>,
    /// Its class.
    pub class: EncounterClass,
    /// Its start.
    pub start: Option<String>,
}

/// The encounters found for a [`WorklistQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worklist {
    /// Finished encounters, by start time then id.
    pub entries: Vec<WorklistEntry>,
    /// Encounters left out because they are not finished.
    pub skipped_unfinished: usize,
    /// True when the search stopped before the last page.
    pub incomplete: bool,
    /// Calls made (retries included).
    pub calls: u32,
}

impl Worklist {
    /// The encounter ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.encounter_id.clone()).collect()
    }
}

/// Finds the finished encounters to code with `fhir.search` on `Encounter`. Status is
/// filtered here, not sent as a parameter, so a server that does not support `status`
/// cannot widen the list.
pub async fn build_worklist<C: ToolCaller>(caller: &C, clock: &SharedClock, options: &RunOptions, query: &WorklistQuery, max_results: Option<u32>) -> Result<Worklist, RunError> {
    let params: Vec<(String, String)> = match query {
        WorklistQuery::All => Vec::new(),
        WorklistQuery::Patient(p) => vec![("patient".into(), p.clone())],
        WorklistQuery::DateRange { from, to } => vec![("date".into(), format!("ge{from}")), ("date".into(), format!("le{to}"))],
    };
    let mut args = Map::new();
    args.insert("connection".into(), json!(options.connection));
    args.insert("type".into(), json!("Encounter"));
    args.insert("params".into(), json!(params));
    if let Some(m) = max_results {
        args.insert("max_results".into(), json!(m));
    }
    let gate = Gate::new();
    let (out, calls, _) = call_with_retry(caller, clock, &gate, options, ToolName::FhirSearch, &args).await;
    let out = out?;
    if out.status == 403 {
        return Err(RunError::Denied { status: out.status });
    }
    if !(200..300).contains(&out.status) {
        return Err(RunError::Failed { status: out.status, code: problem_code(&out) });
    }
    let result: SearchResult = out.result.map(serde_json::from_value).ok_or(RunError::BadResult)?.map_err(|_| RunError::BadResult)?;
    let mut skipped = 0;
    let mut entries: Vec<WorklistEntry> = Vec::new();
    for r in &result.resources {
        let Some(id) = crate::fhir::id(r) else { continue };
        if crate::fhir::str_at(r, "status") != Some("finished") {
            skipped += 1;
            continue;
        }
        if entries.iter().any(|e| e.encounter_id == id) {
            continue;
        }
        entries.push(WorklistEntry {
            encounter_id: id.to_owned(),
            patient_id: r.get("subject").and_then(crate::fhir::reference_id).map(str::to_owned),
            class: EncounterClass::of_encounter(r).0,
            start: r.get("period").and_then(|p| crate::fhir::str_at(p, "start")).map(str::to_owned),
        });
    }
    entries.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.encounter_id.cmp(&b.encounter_id)));
    Ok(Worklist { entries, skipped_unfinished: skipped, incomplete: result.incomplete, calls })
}
