//! FHIR behaviour of both sides: reads, searches, paging, vendor quirks, 401/403, the
//! eClinicalWorks rate budget, faults, and garbage input.

mod common;

use common::*;
use medicodax_clock::{Clock, ManualClock};
use medicodax_sandbox::{RateLimitRetryAfter, RequestKind, ResourceType, RetryAfter, Sandbox, SandboxConfig, Vendor};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

const HANS: &str = "cff45905-1e78-4259-a5ba-71052b953ca3"; // Epic
const SUNNY: &str = "d255881c-a48f-4e97-9c02-47b7b8a85036"; // eClinicalWorks
const ALL_SCOPES: &str = "system/*.rs";
const OBS_CATEGORIES: &str = "vital-signs,laboratory,social-history,exam,procedure,survey,imaging,therapy,activity";

/// Follows `next` links from `first`; gives Bundle.total, the ids of every match entry,
/// and the number of pages.
async fn walk(env: &Env, vendor: Vendor, first: &str, token: &str) -> (u64, Vec<String>, usize) {
    let mut url = first.to_owned();
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut total = None;
    loop {
        let a = env.fhir(vendor, &url, Some(token)).await;
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        assert_eq!(a.body["resourceType"], "Bundle");
        assert_eq!(a.body["type"], "searchset");
        let t = a.body["total"].as_u64().expect("total");
        assert!(total.is_none_or(|x| x == t), "total is the same on every page");
        total = Some(t);
        ids.extend(matches(&a.body).iter().map(|r| r["id"].as_str().unwrap_or("").to_owned()));
        pages += 1;
        match next_link(&a.body) {
            Some(n) => url = n,
            None => break,
        }
        assert!(pages < 1000, "runaway paging");
    }
    (total.unwrap_or(0), ids, pages)
}

async fn unlimited() -> Env {
    env_with("max-age=300", |c| c.ecw.rate_limit_per_minute = None).await
}

#[tokio::test]
async fn paging_walks_exactly_the_resources_loaded_for_every_patient() {
    let env = unlimited().await;
    let data = env.sandbox.dataset();
    let mut walked = 0usize;
    for vendor in Vendor::ALL {
        let token = env.sandbox.mint_test_token(vendor, "tests", ALL_SCOPES);
        assert_eq!(env.sandbox.patients(vendor).len(), 6);
        for p in env.sandbox.patients(vendor) {
            for t in ResourceType::ALL {
                let query = match (vendor, t) {
                    (_, ResourceType::Patient) => format!("Patient?_id={}", p.id),
                    (Vendor::Epic, ResourceType::Observation) => format!("Observation?patient={}&category={OBS_CATEGORIES}&_count=100", p.id),
                    (Vendor::Epic, _) => format!("{t}?patient=Patient/{}&_count=100", p.id),
                    (Vendor::EClinicalWorks, _) => format!("{t}?patient={}", p.id),
                };
                let (total, ids, pages) = walk(&env, vendor, &query, &token).await;
                let loaded = data.count(vendor, t, Some(&p.id));
                assert_eq!(total as usize, loaded, "{vendor} {t} {}: Bundle.total", p.name);
                assert_eq!(ids.len(), loaded, "{vendor} {t} {}: entries walked", p.name);
                assert_eq!(ids.iter().collect::<HashSet<_>>().len(), loaded, "no duplicates across pages");
                let page_size = if vendor == Vendor::Epic { 100 } else { 50 };
                assert_eq!(pages, loaded.div_ceil(page_size).max(1), "{vendor} {t}: pages");
                assert_eq!(p.resource_counts.get(&t).copied().unwrap_or(0), loaded);
                walked += loaded;
            }
        }
    }
    assert_eq!(walked, data.stats().resources, "every served resource, once");
    assert_eq!(walked, 18_977);
}

#[tokio::test]
async fn known_counts_for_two_patients() {
    let env = unlimited().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    let total = |a: &Answer| a.body["total"].as_u64();
    for (cat, n) in [("vital-signs", 121), ("laboratory", 27), ("social-history", 8), ("survey", 0)] {
        let a = env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category={cat}"), Some(&epic)).await;
        assert_eq!(total(&a), Some(n), "Hans {cat}");
    }
    let sys = "http://terminology.hl7.org/CodeSystem/observation-category";
    let a = env.fhir(Vendor::Epic, &format!("Observation?subject=Patient/{HANS}&category={sys}|laboratory"), Some(&epic)).await;
    assert_eq!(total(&a), Some(27), "system|code");
    let a = env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category=http://other|laboratory"), Some(&epic)).await;
    assert_eq!(total(&a), Some(0), "a different system does not match");
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&code=8867-4"), Some(&epic)).await), Some(16), "heart rate by code alone");
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&code=http://loinc.org|8867-4,http://loinc.org|8302-2"), Some(&epic)).await), Some(32));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=lt2021"), Some(&epic)).await), Some(5));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=ge2021"), Some(&epic)).await), Some(5));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=ge2020-08-24&date=le2020-08-24"), Some(&epic)).await), Some(2));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=eq2020-08"), Some(&epic)).await), Some(2));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=sa2021-11-01"), Some(&epic)).await), Some(1));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=eb2020-05-01"), Some(&epic)).await), Some(1));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=ne2020-04-27"), Some(&epic)).await), Some(9));
    let first = "58a86989-8fe9-4f0a-bfe8-74943db09216";
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category={OBS_CATEGORIES}&encounter=Encounter/{first}"), Some(&epic)).await), Some(29));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Condition?patient={HANS}&encounter={first}"), Some(&epic)).await), Some(1));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category=laboratory&status=final"), Some(&epic)).await), Some(27));
    assert_eq!(total(&env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category=laboratory&status=amended"), Some(&epic)).await), Some(0));

    assert_eq!(total(&env.fhir(Vendor::EClinicalWorks, &format!("Observation?patient={SUNNY}"), Some(&ecw)).await), Some(952));
    assert_eq!(total(&env.fhir(Vendor::EClinicalWorks, &format!("Encounter?patient={SUNNY}&class=EMER"), Some(&ecw)).await), Some(57));
    assert_eq!(total(&env.fhir(Vendor::EClinicalWorks, &format!("Encounter?patient={SUNNY}&date=lt2021"), Some(&ecw)).await), Some(140));
    assert_eq!(total(&env.fhir(Vendor::EClinicalWorks, &format!("Condition?patient={SUNNY}&category=problem-list-item"), Some(&ecw)).await), Some(3));
    assert_eq!(total(&env.fhir(Vendor::EClinicalWorks, "Encounter?date=ge2100", Some(&ecw)).await), Some(0), "eCW searches the practice without a patient");
    let a = env.fhir(Vendor::EClinicalWorks, &format!("Observation?patient={SUNNY}&_count=500"), Some(&ecw)).await;
    assert_eq!(matches(&a.body).len(), 50, "eCW caps _count at its page size");
    let next = next_link(&a.body).expect("next");
    assert!(next.contains("page=2") && next.contains(&format!("patient={SUNNY}")), "{next}");
    let (_, ids, pages) = walk(&env, Vendor::EClinicalWorks, &format!("Observation?patient={SUNNY}"), &ecw).await;
    assert_eq!((ids.len(), pages), (952, 20));
    let beyond = env.fhir(Vendor::EClinicalWorks, &format!("Observation?patient={SUNNY}&page=99"), Some(&ecw)).await;
    assert_eq!((beyond.status, matches(&beyond.body).len(), next_link(&beyond.body)), (200, 0, None));
    let zero = env.fhir(Vendor::EClinicalWorks, &format!("Observation?patient={SUNNY}&_count=0"), Some(&ecw)).await;
    assert_eq!((total(&zero), matches(&zero.body).len()), (Some(952), 0), "_count=0 gives the total only");
}

#[tokio::test]
async fn reads_pass_resources_through_with_fhir_json() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let a = env.fhir(Vendor::Epic, &format!("Patient/{HANS}"), Some(&epic)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/fhir+json; charset=utf-8"));
    assert_eq!(a.body["address"][0]["extension"][0]["url"], "http://hl7.org/fhir/StructureDefinition/geolocation", "nested extensions survive");
    assert_eq!(Some(&a.body), env.sandbox.dataset().resource(Vendor::Epic, ResourceType::Patient, HANS).as_ref());
    let cond = env.fhir(Vendor::Epic, "Condition/41cf4a95-face-4230-a3dc-f7a521d784e6", Some(&epic)).await;
    assert_eq!(cond.body["subject"]["reference"], format!("Patient/{HANS}"), "urn:uuid resolved");
    assert_eq!(cond.body["encounter"]["reference"], "Encounter/58a86989-8fe9-4f0a-bfe8-74943db09216");
    let enc = env.fhir(Vendor::Epic, "Encounter/58a86989-8fe9-4f0a-bfe8-74943db09216", Some(&epic)).await;
    assert!(enc.body["serviceProvider"]["reference"].as_str().unwrap_or("").starts_with("Organization/"), "references to unserved types resolve too");

    let missing = env.fhir(Vendor::Epic, "Patient/no-such-patient", Some(&epic)).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["resourceType"], "OperationOutcome");
    assert_eq!(missing.body["issue"][0]["code"], "not-found");
    assert_eq!(env.fhir(Vendor::Epic, &format!("Patient/{SUNNY}"), Some(&epic)).await.status, 404, "Sunny lives on the eCW side");
    let unknown = env.fhir(Vendor::Epic, "Practitioner/x", Some(&epic)).await;
    assert_eq!((unknown.status, unknown.body["issue"][0]["code"].as_str()), (404, Some("not-supported")));
    let meta = answer(env.http.get(format!("{}/metadata", env.sandbox.epic_fhir_base())).send().await.expect("metadata")).await;
    assert_eq!(meta.body["resourceType"], "CapabilityStatement");
    assert_eq!(meta.body["rest"][0]["resource"].as_array().map(Vec::len), Some(11));
    assert_eq!(meta.body["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"].as_str(), Some(env.sandbox.epic_token_url().as_str()));
}

#[tokio::test]
async fn epic_adds_icd10cm_and_ecw_serves_snomed_alone() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    let a = env.fhir(Vendor::Epic, &format!("Condition?patient={HANS}&code=http://hl7.org/fhir/sid/icd-10-cm|H66.90"), Some(&epic)).await;
    assert_eq!(a.body["total"], 1);
    let codings = &matches(&a.body)[0]["code"]["coding"];
    assert_eq!(codings, &json!([
        {"system": "http://snomed.info/sct", "code": "65363002", "display": "Otitis media (disorder)"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "H66.90", "display": "Otitis media, unspecified, unspecified ear"}
    ]));
    let a = env.fhir(Vendor::Epic, &format!("Condition?patient={HANS}&code=http://snomed.info/sct|314529007"), Some(&epic)).await;
    assert_eq!(a.body["total"], 9);
    assert!(matches(&a.body).iter().all(|c| c["code"]["coding"].as_array().map(Vec::len) == Some(1)), "a NONE row adds nothing");
    let b = env.fhir(Vendor::EClinicalWorks, &format!("Condition?patient={SUNNY}&code=http://hl7.org/fhir/sid/icd-10-cm|"), Some(&ecw)).await;
    assert_eq!(b.body["total"], 0);
    let all = env.fhir(Vendor::EClinicalWorks, &format!("Condition?patient={SUNNY}&_count=50"), Some(&ecw)).await;
    assert!(matches(&all.body).iter().all(|c| c["code"]["coding"].as_array().is_some_and(|cs| cs.iter().all(|x| x["system"] == "http://snomed.info/sct"))));
}

/// Pitfalls case 21a: Epic refuses an Observation search without category or code.
#[tokio::test]
async fn epic_observation_needs_category_or_code_and_other_required_parameters() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let a = env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&_count=100"), Some(&epic)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["resourceType"], "OperationOutcome");
    assert_eq!(a.body["issue"][0]["severity"], "fatal");
    assert_eq!(a.body["issue"][0]["code"], "required");
    assert_eq!(a.body["issue"][0]["details"]["coding"][0]["code"], "59108");
    let refused = [
        ("Condition?code=x".to_owned(), "required", "4111"),
        (format!("Observation?patient={HANS}&category=labresults"), "value", "59111"),
        (format!("Condition?patient={HANS}&category=diagnosis"), "value", "4115"),
        (format!("DocumentReference?patient={HANS}&category=notes"), "value", "4115"),
        ("Patient?gender=male".to_owned(), "required", "4110"),
        (format!("Encounter?patient={HANS}&date=yesterday"), "invalid", "4115"),
    ];
    for (q, code, detail) in refused {
        let a = env.fhir(Vendor::Epic, &q, Some(&epic)).await;
        assert_eq!(a.status, 400, "{q}");
        assert_eq!(a.body["issue"][0]["code"], code, "{q}");
        assert_eq!(a.body["issue"][0]["details"]["coding"][0]["code"], detail, "{q}");
    }
    for (q, n) in [
        (format!("Condition?patient={HANS}&category=problem-list-item"), 1),
        (format!("Condition?patient={HANS}&category=encounter-diagnosis"), 10),
        (format!("DocumentReference?patient={HANS}&category=clinical-note"), 10),
        ("Patient?family=welch&birthdate=2020-03-23".to_owned(), 1),
        ("Patient?identifier=http://hospital.smarthealthit.org|4818460".to_owned(), 1),
        ("Observation?_id=fd7c711c-20dd-4d3b-a6ad-929acd109561".to_owned(), 1),
    ] {
        let a = env.fhir(Vendor::Epic, &q, Some(&epic)).await;
        assert_eq!((a.status, a.body["total"].as_u64()), (200, Some(n)), "{q}: {}", a.text);
    }
    // The same bare Observation search is fine on eClinicalWorks.
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    assert_eq!(env.fhir(Vendor::EClinicalWorks, &format!("Observation?patient={SUNNY}"), Some(&ecw)).await.status, 200);
}

/// Pitfalls case 20: Epic reports ignored parameters and empty results as OperationOutcome
/// entries with search.mode = outcome; they do not count in the total.
#[tokio::test]
async fn epic_searchsets_carry_outcome_entries() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let a = env.fhir(Vendor::Epic, &format!("Condition?patient={HANS}&datee=2020&_include=Condition:subject"), Some(&epic)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["total"], 11, "ignored parameters do not filter");
    assert_eq!(matches(&a.body).len(), 11);
    let oo = outcomes(&a.body);
    assert_eq!(oo.len(), 1);
    let issues = oo[0]["issue"].as_array().expect("issues");
    assert_eq!(issues.len(), 2);
    assert_eq!(issues[0]["severity"], "warning");
    assert_eq!(issues[0]["location"], json!(["http.datee"]));
    assert_eq!(issues[0]["details"]["coding"][0]["code"], "4122");
    assert_eq!(issues[0]["details"]["coding"][0]["system"], "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369");
    assert_eq!(issues[1]["location"], json!(["http._include"]));
    assert!(a.body["entry"].as_array().expect("entries").iter().filter(|e| e["search"]["mode"] == "outcome").all(|e| e.get("fullUrl").is_none()));
    let empty = env.fhir(Vendor::Epic, &format!("Condition?patient={HANS}&code=nothing"), Some(&epic)).await;
    assert_eq!(empty.body["total"], 0);
    assert_eq!(outcomes(&empty.body)[0]["issue"][0]["details"]["coding"][0]["code"], "4101");
    // eClinicalWorks ignores silently.
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    let b = env.fhir(Vendor::EClinicalWorks, &format!("Condition?patient={SUNNY}&datee=2020"), Some(&ecw)).await;
    assert_eq!((b.body["total"].as_u64(), outcomes(&b.body).len()), (Some(141), 0));
}

#[tokio::test]
async fn epic_paging_links_are_opaque_and_expire() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let a = env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category=vital-signs&_count=50"), Some(&epic)).await;
    assert_eq!((a.body["total"].as_u64(), matches(&a.body).len()), (Some(121), 50));
    let page2 = next_link(&a.body).expect("next");
    assert!(page2.starts_with(&format!("{}/Observation?sessionID=", env.sandbox.epic_fhir_base())), "{page2}");
    assert!(!page2.contains(HANS) && !page2.contains("category"), "opaque: {page2}");
    let b = env.fhir(Vendor::Epic, &page2, Some(&epic)).await;
    assert_eq!((b.status, matches(&b.body).len(), b.body["total"].as_u64()), (200, 50, Some(121)));
    let page3 = next_link(&b.body).expect("page 3");
    let again = env.fhir(Vendor::Epic, &page2, Some(&epic)).await;
    assert_eq!(matches(&again.body).len(), 50, "a page link can be followed again while the session lives");
    let wrong_type = env.fhir(Vendor::Epic, &page3.replace("/Observation?", "/Condition?"), Some(&epic)).await;
    assert_eq!(wrong_type.status, 400);
    env.clock.advance_secs(601);
    let late = env.fhir(Vendor::Epic, &page3, Some(&epic)).await;
    assert_eq!(late.status, 400, "{}", late.text);
    assert_eq!(late.body["issue"][0]["severity"], "fatal");
    assert_eq!(late.body["issue"][0]["details"]["coding"][0]["code"], "4113");
    let fresh = env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category=vital-signs&_count=50"), Some(&epic)).await;
    let (_, ids, pages) = walk(&env, Vendor::Epic, &format!("{}/Observation?patient={HANS}&category=vital-signs&_count=50", env.sandbox.epic_fhir_base()), &epic).await;
    assert_eq!((fresh.status, ids.len(), pages), (200, 121, 3));
}

#[tokio::test]
async fn bearer_tokens_missing_wrong_expired_or_revoked_get_401() {
    let env = env().await;
    let path = format!("Patient/{HANS}");
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    let check = |a: &Answer, why: &str| {
        assert_eq!(a.status, 401, "{why}");
        let challenge = a.header("www-authenticate").unwrap_or("");
        assert!(challenge.starts_with("Bearer realm=\"epic-sandbox\", error=\"invalid_token\""), "{why}: {challenge}");
        assert_eq!(a.body["resourceType"], "OperationOutcome");
    };
    check(&env.fhir(Vendor::Epic, &path, None).await, "missing");
    check(&env.fhir(Vendor::Epic, &path, Some("not-a-token")).await, "unknown");
    check(&env.fhir(Vendor::Epic, &path, Some(&ecw)).await, "another side's token");
    let basic = answer(env.http.get(format!("{}/{path}", env.sandbox.epic_fhir_base())).basic_auth("u", Some("p")).send().await.expect("get")).await;
    check(&basic, "basic auth");
    assert_eq!(env.fhir(Vendor::Epic, &path, Some(&epic)).await.status, 200);
    env.clock.advance_secs(3599);
    assert_eq!(env.fhir(Vendor::Epic, &path, Some(&epic)).await.status, 200, "valid for 3600 s");
    env.clock.advance_secs(1);
    let expired = env.fhir(Vendor::Epic, &path, Some(&epic)).await;
    check(&expired, "expired");
    assert!(expired.header("www-authenticate").unwrap_or("").contains("expired"));

    let fresh = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    assert_eq!(env.fhir(Vendor::Epic, &path, Some(&fresh)).await.status, 200);
    assert_eq!(env.sandbox.faults().revoke_tokens(Vendor::Epic), 2, "both Epic tokens, the expired one too");
    let revoked = env.fhir(Vendor::Epic, &path, Some(&fresh)).await;
    check(&revoked, "revoked");
    assert!(revoked.header("www-authenticate").unwrap_or("").contains("revoked"));
    let log = env.sandbox.stats();
    assert_eq!(log.last(Vendor::Epic, RequestKind::Fhir).and_then(|r| r.token.as_deref()), Some("epic-token-2"));
    let sunny = env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&ecw)).await;
    assert_eq!(sunny.status, 401, "eCW tokens last 300 s and 3600 s have passed");
}

#[tokio::test]
async fn scopes_that_do_not_cover_the_type_or_interaction_get_403() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", "system/Patient.r");
    assert_eq!(env.fhir(Vendor::Epic, &format!("Patient/{HANS}"), Some(&epic)).await.status, 200);
    for (q, scope) in [(format!("Patient?_id={HANS}"), "Patient.search"), (format!("Observation?patient={HANS}&category=laboratory"), "Observation.search"), ("Condition/41cf4a95-face-4230-a3dc-f7a521d784e6".to_owned(), "Condition.read")] {
        let a = env.fhir(Vendor::Epic, &q, Some(&epic)).await;
        assert_eq!(a.status, 403, "{q}");
        assert_eq!(a.header("www-authenticate"), Some(format!("Bearer realm=\"epic-sandbox\", error=\"insufficient_scope\", scope=\"{scope}\"").as_str()));
        assert_eq!(a.body["issue"][0]["code"], "forbidden");
    }
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", "system/Patient.rs system/Encounter.s");
    let a = env.fhir(Vendor::EClinicalWorks, &format!("AllergyIntolerance?patient={SUNNY}"), Some(&ecw)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"ecw-sandbox\", error=\"insufficient_scope\", scope=\"system/AllergyIntolerance.s\""));
    let b = env.fhir(Vendor::EClinicalWorks, "Encounter/97b4b39a-8996-4d15-9a05-cfa604c22a2a", Some(&ecw)).await;
    assert_eq!((b.status, b.header("www-authenticate").map(|h| h.contains("system/Encounter.r"))), (403, Some(true)));
    assert_eq!(env.fhir(Vendor::EClinicalWorks, &format!("Encounter?patient={SUNNY}"), Some(&ecw)).await.status, 200);
    // The same 403 whether or not the patient has data of that type (no existence leak).
    let none = env.fhir(Vendor::EClinicalWorks, "AllergyIntolerance?patient=no-such-patient", Some(&ecw)).await;
    assert_eq!((none.status, none.text.clone()), (403, a.text.clone()));
}

#[tokio::test]
async fn constrained_scopes_narrow_results() {
    let env = env().await;
    let scope = "system/Patient.rs system/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item";
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", scope);
    let a = env.fhir(Vendor::Epic, &format!("Condition?patient={HANS}"), Some(&epic)).await;
    assert_eq!(a.body["total"], 1, "only the problem-list item");
    assert_eq!(matches(&a.body)[0]["category"][0]["coding"][0]["code"], "problem-list-item");
    assert_eq!(outcomes(&a.body)[0]["issue"][0]["details"]["coding"][0]["code"], "59204");
    let read = env.fhir(Vendor::Epic, "Condition/41cf4a95-face-4230-a3dc-f7a521d784e6", Some(&epic)).await;
    assert_eq!(read.status, 403, "an encounter diagnosis is outside the grant");
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", scope);
    let b = env.fhir(Vendor::EClinicalWorks, &format!("Condition?patient={SUNNY}"), Some(&ecw)).await;
    assert_eq!((b.body["total"].as_u64(), outcomes(&b.body).len()), (Some(3), 0), "eCW narrows silently");
}

#[tokio::test]
async fn ecw_answers_429_after_250_requests_in_a_minute_and_recovers() {
    let env = env().await;
    // One token request plus 249 FHIR requests spend the budget of 250.
    let t = env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), Some("system/Patient.rs system/Observation.rs")).await;
    assert_eq!(t.status, 200);
    let token = t.body["access_token"].as_str().expect("token").to_owned();
    for i in 0..249 {
        let a = env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&token)).await;
        assert_eq!(a.status, 200, "request {}", i + 2);
    }
    let over = env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&token)).await;
    assert_eq!(over.status, 429);
    assert_eq!(over.header("retry-after"), None, "eCW sends no Retry-After");
    assert_eq!(over.body["issue"][0]["code"], "throttled");
    let tok = env.token(Vendor::EClinicalWorks, &env.good_assertion(Vendor::EClinicalWorks), Some("system/Patient.rs")).await;
    assert_eq!(tok.status, 429, "token requests share the budget");
    // Epic has no such budget.
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    assert_eq!(env.fhir(Vendor::Epic, &format!("Patient/{HANS}"), Some(&epic)).await.status, 200);
    env.clock.advance_secs(59);
    assert_eq!(env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&token)).await.status, 429, "blocked for the rest of the minute");
    env.clock.advance_secs(1);
    assert_eq!(env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&token)).await.status, 200, "a new minute");
    let stats = env.sandbox.stats();
    assert_eq!(stats.requests.iter().filter(|r| r.vendor == Some(Vendor::EClinicalWorks) && r.status == 429).count(), 3);
    assert_eq!(stats.token_requests(Vendor::EClinicalWorks), 2);
}

#[tokio::test]
async fn rate_limit_retry_after_is_configurable() {
    let env = env_with("max-age=300", |c| {
        c.ecw.rate_limit_per_minute = Some(3);
        c.ecw.rate_limit_retry_after = RateLimitRetryAfter::RestOfWindow;
    })
    .await;
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    for _ in 0..3 {
        assert_eq!(env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&ecw)).await.status, 200);
    }
    env.clock.advance_secs(15);
    let a = env.fhir(Vendor::EClinicalWorks, &format!("Patient/{SUNNY}"), Some(&ecw)).await;
    assert_eq!((a.status, a.header("retry-after")), (429, Some("45")));
}

#[tokio::test]
async fn injected_faults() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let path = format!("Patient/{HANS}");
    let faults = env.sandbox.faults();
    faults.respond_503(Vendor::Epic, 1, Some(RetryAfter::Seconds(7)));
    faults.respond_429(Vendor::Epic, 1, Some(RetryAfter::HttpDateIn(120)));
    let a = env.fhir(Vendor::Epic, &path, Some(&epic)).await;
    assert_eq!((a.status, a.header("retry-after")), (503, Some("7")));
    let b = env.fhir(Vendor::Epic, &path, Some(&epic)).await;
    assert_eq!((b.status, b.header("retry-after")), (429, Some("Thu, 01 Jan 2026 00:02:00 GMT")));
    assert_eq!(env.fhir(Vendor::Epic, &path, Some(&epic)).await.status, 200, "each injected answer is used once");
    let disc = answer(env.http.get(env.sandbox.smart_configuration_url(Vendor::Epic)).send().await.expect("get")).await;
    assert_eq!(disc.status, 200);

    // 401 on page 2, once.
    faults.unauthorized_on_page(Vendor::Epic, 2);
    let first = env.fhir(Vendor::Epic, &format!("Observation?patient={HANS}&category=vital-signs&_count=50"), Some(&epic)).await;
    let page2 = next_link(&first.body).expect("next");
    let denied = env.fhir(Vendor::Epic, &page2, Some(&epic)).await;
    assert_eq!(denied.status, 401);
    assert!(denied.header("www-authenticate").unwrap_or("").contains("invalid_token"));
    assert_eq!(env.fhir(Vendor::Epic, &page2, Some(&epic)).await.status, 200, "the retry with the same link works");
    faults.clear();
}

/// Pitfalls case 12's setting: with 30 s per page, a 300-s eClinicalWorks token runs out
/// in the middle of a walk. An auto-advancing clock turns the added latency into time.
#[tokio::test]
async fn latency_moves_the_clock_and_tokens_expire_mid_walk() {
    let clock = ManualClock::auto_advance(NOW);
    let mut config = SandboxConfig { clock: clock.shared(), ..SandboxConfig::default() };
    config.ecw.rate_limit_per_minute = None;
    let sandbox = Sandbox::start(config).await.expect("start");
    let token = sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    sandbox.faults().set_latency(Vendor::EClinicalWorks, Some(Duration::from_secs(30)));
    let http = reqwest::Client::new();
    let mut url = format!("{}/Observation?patient={SUNNY}", sandbox.ecw_fhir_base());
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let a = answer(http.get(&url).bearer_auth(&token).send().await.expect("get")).await;
        statuses.push(a.status);
        if a.status != 200 {
            break;
        }
        url = next_link(&a.body).expect("next");
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 200, 200, 200, 200, 401], "the 10th request arrives at t = 300 s");
    assert_eq!(clock.now_unix(), NOW + 300);
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn post_search_matches_get() {
    let env = env().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let url = format!("{}/Observation/_search", env.sandbox.epic_fhir_base());
    let a = answer(env.http.post(url).bearer_auth(&epic).form(&[("patient", HANS), ("category", "laboratory")]).send().await.expect("post")).await;
    assert_eq!((a.status, a.body["total"].as_u64()), (200, Some(27)));
}

#[tokio::test]
async fn worklist_helpers_match_the_server() {
    let env = unlimited().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let patients = env.sandbox.patients(Vendor::Epic);
    let hans = patients.iter().find(|p| p.id == HANS).expect("hans");
    assert_eq!(hans.encounters.len(), 10);
    assert_eq!(hans.encounters[0].id, "58a86989-8fe9-4f0a-bfe8-74943db09216");
    assert_eq!(hans.encounters[0].class_code.as_deref(), Some("AMB"));
    assert_eq!(hans.birth_date.as_deref(), Some("2020-03-23"));
    for p in patients {
        let a = env.fhir(Vendor::Epic, &format!("Encounter?patient={}&_count=1000", p.id), Some(&epic)).await;
        let ids: HashSet<String> = matches(&a.body).iter().map(|e| e["id"].as_str().unwrap_or("").to_owned()).collect();
        assert_eq!(ids, p.encounters.iter().map(|e| e.id.clone()).collect::<HashSet<_>>(), "{}", p.name);
    }
    let ecw_names: Vec<&str> = env.sandbox.patients(Vendor::EClinicalWorks).iter().map(|p| p.name.as_str()).collect();
    assert!(ecw_names.contains(&"Sunny Streich"));
    assert!(!ecw_names.contains(&"Hans Welch"));
    assert_eq!(env.sandbox.dataset().vendor_of(SUNNY), Some(Vendor::EClinicalWorks));
}

#[tokio::test]
async fn garbage_requests_never_get_a_5xx() {
    let env = unlimited().await;
    let epic = env.sandbox.mint_test_token(Vendor::Epic, "tests", ALL_SCOPES);
    let ecw = env.sandbox.mint_test_token(Vendor::EClinicalWorks, "tests", ALL_SCOPES);
    let long = "x".repeat(40_000);
    let queries = [
        "Observation?patient=&category=laboratory".to_owned(),
        format!("Observation?patient={HANS}&category=laboratory&date=ge"),
        format!("Observation?patient={HANS}&category=laboratory&date=2020-02-30"),
        format!("Observation?patient={HANS}&category=laboratory&date=9999999999"),
        format!("Observation?patient={HANS}&category=laboratory&_count=abc"),
        format!("Observation?patient={HANS}&category=laboratory&_count=99999999999999999999999"),
        format!("Observation?patient={HANS}&category=%FF%FE&code=%00"),
        format!("Observation?patient={HANS}&category=laboratory&&&==&=x&x="),
        format!("Observation?patient={HANS}&category=,,,"),
        format!("Observation?patient={HANS}&category=laboratory&sessionID="),
        "Observation?sessionID=nonsense".to_owned(),
        format!("Observation?patient={HANS}&category=laboratory&page=-1"),
        "Patient/%2e%2e%2f%2e%2e".to_owned(),
        "Patient/".to_owned(),
        "%00/x".to_owned(),
        "Observation/_search".to_owned(),
        format!("Observation?patient={long}&category=laboratory"),
        format!("Encounter?patient={HANS}&date=ge2020-01-01T00:00:00+00:00"),
        format!("Encounter?patient={HANS}&date=ge2020-01-01T00:00:00%2B00:00"),
    ];
    for vendor in Vendor::ALL {
        let token = if vendor == Vendor::Epic { &epic } else { &ecw };
        for q in &queries {
            let a = env.fhir(vendor, q, Some(token)).await;
            assert!((200..500).contains(&a.status), "{vendor} {q}: {}", a.status);
            assert!(!a.text.is_empty() || a.status == 405, "{vendor} {q}: a body");
        }
        let huge = format!("Observation?patient={HANS}&category={}", "y".repeat(60_000));
        let a = env.fhir(vendor, &huge, Some(token)).await;
        assert_eq!(a.status, 414, "{vendor}");
    }
    let a = env.fhir(Vendor::Epic, &format!("Encounter?patient={HANS}&date=ge2020-08-24T00:00:00+00:00&date=lt2020-08-25"), Some(&epic)).await;
    assert_eq!(a.body["total"], 2, "a '+' decoded to a space in the offset is still understood");
    let unknown = answer(env.http.get(format!("{}/nothing/here", env.sandbox.origin())).send().await.expect("get")).await;
    assert_eq!(unknown.status, 404);
    assert!(env.sandbox.stats().requests.iter().all(|r| r.status < 500), "no request was answered with a 5xx");
}
