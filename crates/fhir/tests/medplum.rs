//! Interop: our search and paging against Medplum's FHIR router (`@medplum/fhir-router`
//! 4.5.2 with a `MemoryRepository`), loaded with the bundled Synthea patients by
//! `tests/interop/medplum-fhir-server.mjs`. For each of the eleven types and six
//! patients, the resources walked must equal Medplum's `total` and the bundle's own count.
//!
//! Needs Node and `tests/interop/node_modules` (run `scripts/test-deps.sh` once); without
//! them this test fails and says so.

mod common;

use common::*;
use flate2::read::GzDecoder;
use medicodax_clock::ManualClock;
use medicodax_fhir::{FhirClient, Search, SearchProfile, UpstreamLog};
use medicodax_wire::{FhirId, ResourceType};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn interop_dir() -> PathBuf {
    std::env::var_os("MEDICODAX_INTEROP_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("tests/interop"))
}

fn bundles() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("data/synthea-r4"))
        .expect("data/synthea-r4")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    v.sort();
    v
}

/// The patient id of a bundle and how many resources of each of the eleven types it holds.
fn expected(path: &Path) -> (String, BTreeMap<ResourceType, usize>) {
    let b: Value = serde_json::from_reader(GzDecoder::new(std::fs::File::open(path).unwrap())).unwrap();
    let mut counts = BTreeMap::new();
    let mut patient = None;
    for e in b["entry"].as_array().unwrap() {
        let r = &e["resource"];
        if let Ok(t) = r["resourceType"].as_str().unwrap().parse::<ResourceType>() {
            *counts.entry(t).or_insert(0) += 1;
            if t == ResourceType::Patient {
                patient = Some(r["id"].as_str().unwrap().to_owned());
            }
        }
    }
    (patient.expect("a Patient in each bundle"), counts)
}

/// The Medplum server, killed when dropped.
struct Medplum {
    _child: tokio::process::Child,
    base: String,
    loaded: Value,
}

async fn start_medplum(paths: &[PathBuf]) -> Medplum {
    let dir = interop_dir();
    let script = dir.join("medplum-fhir-server.mjs");
    assert!(
        dir.join("node_modules/@medplum/fhir-router/package.json").is_file(),
        "Medplum is not installed in {}: run scripts/test-deps.sh once (it installs the Node peers of tests/interop), then run this test again",
        dir.display()
    );
    assert!(script.is_file(), "{} is missing", script.display());
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .args(paths)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node ({e}): install Node.js, or run scripts/test-deps.sh"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("Medplum did not start within 120 s")
        .unwrap()
        .expect("Medplum exited before listening (see its stderr above)");
    let info: Value = serde_json::from_str(&first).unwrap();
    Medplum { _child: child, base: info["base"].as_str().unwrap().to_owned(), loaded: info["loaded"].clone() }
}

/// How the client talks to Medplum: `patient=` only matches the reference form, and on
/// types whose `patient` parameter is `subject.where(resolve() is Patient)` Medplum's
/// MemoryRepository takes ~100× longer than for `subject=` (27 s against 0.3 s per page
/// of Observations with all twelve patients loaded), so those types are searched by
/// `subject=Patient/{id}`, the same quirk as the athena profile.
fn medplum_profile(page_size: u32) -> SearchProfile {
    let mut p = SearchProfile::generic().with_patient_as_reference().with_page_size(page_size);
    p.subject_instead_of_patient = vec![
        ResourceType::Encounter,
        ResourceType::Condition,
        ResourceType::Procedure,
        ResourceType::Observation,
        ResourceType::MedicationRequest,
        ResourceType::DiagnosticReport,
        ResourceType::DocumentReference,
    ];
    p
}

fn client(m: &Medplum, page_size: u32) -> FhirClient {
    let clock = ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    client_with(&m.base, medplum_profile(page_size), exact_retry(), &clock, tokens)
}

/// The patient a resource belongs to, by the element its `patient` search parameter uses.
fn patient_of(t: ResourceType, r: &Value) -> Option<&str> {
    let reference = match t {
        ResourceType::Patient => return r["id"].as_str(),
        ResourceType::Immunization | ResourceType::AllergyIntolerance => &r["patient"]["reference"],
        ResourceType::Coverage => &r["beneficiary"]["reference"],
        _ => &r["subject"]["reference"],
    };
    reference.as_str()?.strip_prefix("Patient/")
}

/// Page size for the full walk: an odd number, so last pages are partial.
const PAGE: u32 = 97;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_equal_medplum_totals_for_eleven_types_and_every_patient() {
    let all = bundles();
    assert_eq!(all.len(), 12, "the twelve bundled Synthea patients");
    // Six patients (every other bundle): enough to show the patient filter and paging,
    // and a quarter of the time of all twelve (Medplum scans every resource of the type
    // for each page).
    let paths: Vec<PathBuf> = all.into_iter().step_by(2).collect();
    let medplum = start_medplum(&paths).await;
    let fhir = client(&medplum, PAGE);
    let mut multi_page_walks = 0;
    let mut walked_total = 0usize;
    for path in &paths {
        let (patient, counts) = expected(path);
        let pid = FhirId::new(&patient).unwrap();
        for t in ResourceType::ALL {
            let search = if t == ResourceType::Patient { Search::new(t).id(&pid) } else { Search::new(t).patient(&pid) };
            let log = UpstreamLog::new();
            let out = fhir.search(&search, &log).await.unwrap_or_else(|e| panic!("{t} for {patient}: {e}"));
            let want = counts.get(&t).copied().unwrap_or(0);
            assert!(out.errors.is_empty() && !out.incomplete, "{t} for {patient}: {:?}", out.errors);
            assert_eq!(out.total, Some(want as u64), "Medplum's total for {t} of {patient}");
            assert_eq!(out.resources.len(), want, "resources walked for {t} of {patient} = Medplum's total");
            let ids: HashSet<&str> = out.resources.iter().map(|r| r["id"].as_str().unwrap()).collect();
            assert_eq!(ids.len(), want, "no resource walked twice for {t} of {patient}");
            for r in &out.resources {
                assert_eq!(r["resourceType"], t.as_str());
                assert_eq!(patient_of(t, r), Some(patient.as_str()), "{t} {} belongs to {patient}", r["id"]);
            }
            let pages = want.div_ceil(PAGE as usize).max(1);
            assert_eq!(out.pages as usize, pages, "{t} of {patient}: one request per page of {PAGE}");
            assert_eq!(log.len(), pages);
            if pages > 1 {
                multi_page_walks += 1;
                assert!(log.snapshot()[1].path.contains(&format!("_offset={PAGE}")), "{}", log.snapshot()[1].path);
            }
            walked_total += out.resources.len();
        }
    }
    let loaded_eleven: u64 = ResourceType::ALL.iter().map(|t| medplum.loaded[t.as_str()].as_u64().unwrap_or(0)).sum();
    assert_eq!(walked_total as u64, loaded_eleven, "every loaded resource of the eleven types was walked once");
    assert!(multi_page_walks >= 15, "paging was exercised: {multi_page_walks} multi-page walks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medplum_paging_with_max_results_streams_and_reads() {
    let paths = bundles();
    // A patient with over a thousand Observations (Bennie Leffler: 1,255).
    let bundle = paths.iter().find(|p| p.to_string_lossy().contains("Bennie_Leffler")).unwrap().clone();
    let medplum = start_medplum(std::slice::from_ref(&bundle)).await;
    let (patient, counts) = expected(&bundle);
    let pid = FhirId::new(&patient).unwrap();
    let fhir = client(&medplum, 100);
    let n_obs = counts[&ResourceType::Observation];
    assert!(n_obs > 1000);

    // max_results stops early and says so.
    let out = fhir.search(&Search::new(ResourceType::Observation).patient(&pid).limit(250), &UpstreamLog::new()).await.unwrap();
    assert_eq!(out.resources.len(), 250);
    assert!(out.incomplete && out.limit_reached);
    assert_eq!(out.pages, 3);

    // Page by page, the same resources as Medplum's total, in pages of 100.
    use futures::StreamExt;
    let mut stream = Box::pin(fhir.pages(&Search::new(ResourceType::Observation).patient(&pid), &UpstreamLog::new()).unwrap().into_stream());
    let mut seen = 0;
    let mut pages = 0;
    while let Some(p) = stream.next().await {
        let p = p.unwrap();
        pages += 1;
        assert_eq!(p.total, Some(n_obs as u64));
        assert!(p.resources.len() <= 100);
        seen += p.resources.len();
    }
    assert_eq!((seen, pages), (n_obs, n_obs.div_ceil(100)));

    // Typed parameters: a category that Medplum evaluates itself.
    let labs = fhir
        .search(
            &Search::new(ResourceType::Observation)
                .patient(&pid)
                .category(&medicodax_fhir::Token::system_code("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")),
            &UpstreamLog::new(),
        )
        .await
        .unwrap();
    assert_eq!(labs.total, Some(labs.resources.len() as u64));
    assert!(!labs.resources.is_empty() && labs.resources.len() < n_obs);
    assert!(labs.resources.iter().all(|r| r["category"].to_string().contains("laboratory")));

    // Read by id, and a 404 from Medplum.
    let p = fhir.read(ResourceType::Patient, &pid, &UpstreamLog::new()).await.unwrap();
    assert_eq!(p["id"], patient.as_str());
    let err = fhir.read(ResourceType::Patient, &FhirId::new("no-such-patient").unwrap(), &UpstreamLog::new()).await.unwrap_err();
    assert_eq!(err.problem_code(), medicodax_wire::ProblemCode::NotFound, "{err}");

    // The Epic-style category split, merged without duplicates, equals the plain search
    // restricted to those categories.
    let cats = ["laboratory", "vital-signs", "social-history", "survey", "exam"];
    let split = medplum_profile(100).with_category_split(
        ResourceType::Observation,
        cats.iter().map(|c| (*c).to_owned()).collect(),
    );
    let clock = ManualClock::auto_advance(NOW);
    let epicish = client_with(&medplum.base, split, exact_retry(), &clock, FakeTokens::new(&clock, 3600));
    let merged = epicish.search(&Search::new(ResourceType::Observation).patient(&pid), &UpstreamLog::new()).await.unwrap();
    assert!(!merged.incomplete);
    let want = fhir
        .search(&Search::new(ResourceType::Observation).patient(&pid), &UpstreamLog::new())
        .await
        .unwrap()
        .resources
        .iter()
        .filter(|r| cats.iter().any(|c| r["category"].to_string().contains(&format!("\"{c}\""))))
        .count();
    assert_eq!(merged.resources.len(), want);
}
