//! The runner against a fake gateway: bounded concurrency, 429 back-off, denials,
//! failures, progress and the summary, without a network.

mod common;

use common::{bundles, reference};
use medicodax_agent::{AgentError, CallOutcome};
use medicodax_clock::{Clock, ManualClock, SharedClock};
use medicodax_coding::runner::{EncounterOutcome, Progress, RunOptions, ToolCaller, WorklistQuery, build_worklist, run_worklist};
use medicodax_coding::EncounterClass;
use medicodax_wire::{Problem, ProblemCode, ToolName};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A call the fake saw: user, tool, arguments.
type Call = (String, ToolName, Map<String, Value>);

#[derive(Default)]
struct Fake {
    bundles: HashMap<String, Value>,
    deny: Vec<String>,
    fail: Vec<String>,
    /// answer 429 this many times (Retry-After 7 s) before serving
    limit_first: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: Mutex<Vec<Call>>,
    search: Option<Value>,
}

fn answer(status: u16, result: Option<Value>, code: Option<ProblemCode>, retry_after: Option<u64>) -> CallOutcome {
    CallOutcome { status, result, problem: code.map(|c| Problem::new(c, "x")), receipt: None, retry_after }
}

impl ToolCaller for Fake {
    async fn call_tool(&self, sub: &str, tool: ToolName, args: Map<String, Value>) -> Result<CallOutcome, AgentError> {
        self.calls.lock().unwrap().push((sub.to_owned(), tool, args.clone()));
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if tool == ToolName::FhirSearch {
            return Ok(answer(200, self.search.clone(), None, None));
        }
        let id = args["encounter"].as_str().unwrap().to_owned();
        if self.limit_first.load(Ordering::SeqCst) > 0 {
            self.limit_first.fetch_sub(1, Ordering::SeqCst);
            return Ok(answer(429, None, Some(ProblemCode::RateLimited), Some(7)));
        }
        if self.deny.contains(&id) {
            return Ok(answer(403, None, Some(ProblemCode::Denied), None));
        }
        if self.fail.contains(&id) {
            return Err(AgentError::Unreachable { url: "http://127.0.0.1:1/v1/calls".into(), reason: "connection refused".into() });
        }
        match self.bundles.get(&id) {
            Some(b) => Ok(answer(200, Some(b.clone()), None, None)),
            None => Ok(answer(404, None, Some(ProblemCode::NotFound), None)),
        }
    }
}

fn fake_with(n: usize) -> (Fake, Vec<String>) {
    let picked: Vec<_> = bundles().iter().take(n).collect();
    let ids: Vec<String> = picked.iter().map(|b| b.encounter["id"].as_str().unwrap().to_owned()).collect();
    let fake = Fake { bundles: picked.iter().map(|b| (b.encounter["id"].as_str().unwrap().to_owned(), serde_json::to_value(b).unwrap())).collect(), ..Fake::default() };
    (fake, ids)
}

#[tokio::test]
async fn a_worklist_is_coded_with_bounded_concurrency_and_a_full_summary() {
    let (mut fake, mut ids) = fake_with(30);
    fake.deny = vec![ids[3].clone()];
    fake.fail = vec![ids[5].clone()];
    ids.push("missing-encounter".into());
    ids.push("not/an/id".into());
    let clock = ManualClock::auto_advance(1_767_225_600);
    let shared: SharedClock = clock.shared();
    let mut options = RunOptions::new("ecw-sandbox", "coder");
    options.concurrency = 3;
    let mut seen: Vec<Progress> = Vec::new();
    let report = run_worklist(&fake, &reference(), &shared, &options, &ids, |p| seen.push(*p)).await;
    let s = &report.summary;
    assert_eq!(s.encounters, 32);
    assert_eq!((s.coded, s.denials, s.failures), (28, 1, 3));
    assert_eq!(s.calls, 31, "one call per encounter, none for the malformed id");
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 3, "at most 3 calls in flight, and the bound was used");
    assert_eq!(report.results.len(), 32);
    assert_eq!(report.results.iter().map(|r| r.encounter_id.as_str()).collect::<Vec<_>>(), ids.iter().map(String::as_str).collect::<Vec<_>>(), "results in worklist order");
    assert!(matches!(report.results[3].outcome, EncounterOutcome::Denied { status: 403 }));
    assert!(matches!(&report.results[5].outcome, EncounterOutcome::Failed { status: None, reason } if reason.contains("cannot reach")));
    assert!(matches!(&report.results[30].outcome, EncounterOutcome::Failed { status: Some(404), reason } if reason == "not-found"));
    assert!(matches!(&report.results[31].outcome, EncounterOutcome::Failed { status: None, .. }));
    // every call named the user, the connection and the tool
    for (sub, tool, args) in fake.calls.lock().unwrap().iter() {
        assert_eq!((sub.as_str(), *tool), ("coder", ToolName::EncounterBundle));
        assert_eq!(args["connection"], "ecw-sandbox");
    }
    // the summary adds up what the worksheets say
    let coded: Vec<_> = report.results.iter().filter_map(|r| match &r.outcome {
        EncounterOutcome::Coded { worksheet, time, .. } => Some((worksheet, time)),
        _ => None,
    }).collect();
    let crosswalk: usize = coded.iter().map(|(w, _)| w.codes_by_source().crosswalk).sum();
    assert_eq!(s.codes_by_source.crosswalk, crosswalk);
    assert!(crosswalk > 0);
    let saved: f64 = coded.iter().map(|(_, t)| t.saved_minutes).sum();
    assert!((s.minutes_saved - saved).abs() < 1e-9);
    let outpatient = coded.iter().filter(|(w, _)| w.encounter_class == EncounterClass::Outpatient).count();
    assert_eq!(s.coded_by_class.get(&EncounterClass::Outpatient).copied().unwrap_or(0), outpatient);
    // with a clock that does not move, the pipeline took no time: saved = baselines
    let baseline: f64 = coded.iter().map(|(_, t)| t.baseline_minutes).sum();
    assert_eq!(s.minutes_saved, baseline);
    // progress: once per encounter, monotone, ending at the total
    assert_eq!(seen.len(), 32);
    assert!(seen.windows(2).all(|w| w[1].done == w[0].done + 1));
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.total, last.coded, last.denied, last.failed), (32, 32, 28, 1, 3));
    assert_eq!(last.eta, Some(Duration::ZERO));
}

#[tokio::test]
async fn a_429_is_waited_out_and_retried_and_time_saved_subtracts_the_wait() {
    let (fake, ids) = fake_with(4);
    fake.limit_first.store(2, Ordering::SeqCst);
    let clock = ManualClock::auto_advance(1_767_225_600);
    let shared: SharedClock = clock.shared();
    let mut options = RunOptions::new("epic-sandbox", "coder");
    options.concurrency = 1;
    let mut etas = Vec::new();
    let report = run_worklist(&fake, &reference(), &shared, &options, &ids, |p| etas.push(p.eta)).await;
    let s = &report.summary;
    assert_eq!((s.coded, s.rate_limited, s.calls, s.failures), (4, 2, 6, 0));
    assert_eq!(clock.monotonic().0, Duration::from_secs(14), "two Retry-After: 7 waits");
    assert_eq!(report.results[0].calls, 3);
    match &report.results[0].outcome {
        EncounterOutcome::Coded { time, .. } => assert!((time.pipeline_minutes - 14.0 / 60.0).abs() < 1e-9, "{}", time.pipeline_minutes),
        other => panic!("{other:?}"),
    }
    assert_eq!(etas[0], Some(Duration::from_secs(42)), "14 s for the first of 4: 42 s to go");
    assert!((s.encounters_per_second - 4.0 / 14.0).abs() < 1e-9);
}

#[tokio::test]
async fn rate_limiting_that_never_ends_fails_the_encounter_after_the_attempt_budget() {
    let (fake, ids) = fake_with(1);
    fake.limit_first.store(100, Ordering::SeqCst);
    let clock = ManualClock::auto_advance(0);
    let mut options = RunOptions::new("c", "coder");
    options.max_attempts = 3;
    let report = run_worklist(&fake, &reference(), &clock.shared(), &options, &ids, |_| {}).await;
    assert_eq!((report.summary.failures, report.summary.calls, report.summary.rate_limited), (1, 3, 3));
    assert!(matches!(&report.results[0].outcome, EncounterOutcome::Failed { status: Some(429), reason } if reason == "rate-limited"));
}

#[tokio::test]
async fn worklists_keep_finished_encounters_in_start_order() {
    let resources = json!([
        { "resourceType": "Encounter", "id": "e2", "status": "finished", "class": { "code": "EMER" }, "subject": { "reference": "Patient/p1" }, "period": { "start": "2021-01-02" } },
        { "resourceType": "Encounter", "id": "e1", "status": "finished", "class": { "code": "IMP" }, "subject": { "reference": "Patient/p1" }, "period": { "start": "2020-05-01" } },
        { "resourceType": "Encounter", "id": "e3", "status": "in-progress", "class": { "code": "AMB" } },
        { "resourceType": "Encounter", "status": "finished" },
        { "resourceType": "Encounter", "id": "e1", "status": "finished", "period": { "start": "2020-05-01" } }
    ]);
    let fake = Fake { search: Some(json!({ "resources": resources, "incomplete": true, "warnings": [] })), ..Fake::default() };
    let clock = ManualClock::new(0);
    let options = RunOptions::new("epic-sandbox", "coder");
    let w = build_worklist(&fake, &clock.shared(), &options, &WorklistQuery::Patient("p1".into()), Some(500)).await.unwrap();
    assert_eq!(w.ids(), vec!["e1", "e2"]);
    assert_eq!((w.skipped_unfinished, w.incomplete, w.calls), (1, true, 1));
    assert_eq!(w.entries[0].class, EncounterClass::Inpatient);
    assert_eq!(w.entries[1].patient_id.as_deref(), Some("p1"));
    let (_, tool, args) = fake.calls.lock().unwrap()[0].clone();
    assert_eq!(tool, ToolName::FhirSearch);
    assert_eq!(args["type"], "Encounter");
    assert_eq!(args["params"], json!([["patient", "p1"]]));
    assert_eq!(args["max_results"], 500);
    let range = WorklistQuery::DateRange { from: "2020-01-01".into(), to: "2020-12-31".into() };
    build_worklist(&fake, &clock.shared(), &options, &range, None).await.unwrap();
    let calls = fake.calls.lock().unwrap();
    assert_eq!(calls[1].2["params"], json!([["date", "ge2020-01-01"], ["date", "le2020-12-31"]]));
    assert!(calls[1].2.get("max_results").is_none());
}

#[tokio::test]
async fn a_denied_worklist_search_is_a_typed_error() {
    struct Deny;
    impl ToolCaller for Deny {
        async fn call_tool(&self, _: &str, _: ToolName, _: Map<String, Value>) -> Result<CallOutcome, AgentError> {
            Ok(answer(403, None, Some(ProblemCode::Denied), None))
        }
    }
    let clock = ManualClock::new(0);
    let e = build_worklist(&Deny, &clock.shared(), &RunOptions::new("c", "u"), &WorklistQuery::All, None).await.unwrap_err();
    assert!(matches!(e, medicodax_coding::runner::RunError::Denied { status: 403 }), "{e}");
}
