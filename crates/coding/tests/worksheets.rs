//! Worksheets built from the real bundled patients.

mod common;

use common::{bundles, by_id, recording, reference};
use medicodax_coding::crosswalk::MapConfidence;
use medicodax_coding::worksheet::{FlagKind, Source};
use medicodax_coding::{EncounterClass, Worksheet, build_worksheet, eval, render, synthea};
use serde_json::json;

#[test]
fn the_bundles_assemble_into_every_encounter_with_its_resources() {
    let b = bundles();
    assert_eq!(b.len(), 1388, "the 12 patients have 1,388 encounters");
    let conditions: usize = b.iter().map(|x| x.conditions.len()).sum();
    assert_eq!(conditions, 1196, "1,196 of the 1,246 Conditions name an encounter");
    assert!(b.iter().all(|x| x.documents.len() == 1), "every encounter has its note");
    assert!(b.iter().all(|x| x.patient.is_some()));
    let r = &b[0].conditions.first().or(b.iter().flat_map(|x| x.conditions.first()).next()).unwrap()["encounter"]["reference"];
    assert!(r.as_str().unwrap().starts_with("Encounter/"), "urn:uuid references are resolved: {r}");
}

#[test]
fn every_suggested_code_is_in_the_code_set_and_billable() {
    let reference = reference();
    let mut suggestions = 0;
    let mut epic = bundles().to_vec();
    for b in &mut epic {
        synthea::add_record_icd10cm(b, reference.crosswalk());
    }
    for b in bundles().iter().chain(&epic) {
        let w = build_worksheet(b, &reference);
        for (_, s) in w.suggestions() {
            let code = reference.codes().get(&s.code).unwrap_or_else(|| panic!("{} is not in the code set", s.code));
            assert!(code.billable && s.billable && s.in_code_set, "{}", s.code);
            assert_eq!(s.title, code.long_title);
            suggestions += 1;
        }
        assert!(!w.has_flag(FlagKind::CodeNotInCodeSet) && !w.has_flag(FlagKind::NonBillableCode));
    }
    assert!(suggestions > 1000, "{suggestions}");
    // and in the held-out evaluation, where every suggestion is a text match
    let report = eval::held_out_in_bundles("t", &reference, bundles(), 5);
    for code in report.outcomes.iter().flat_map(|o| &o.suggested) {
        assert!(reference.codes().get(code).is_some_and(|c| c.billable), "{code}");
    }
}

#[test]
fn without_record_codes_every_mapped_condition_gets_exactly_the_crosswalk_code() {
    let reference = reference();
    let cw = reference.crosswalk();
    let mut checked = 0;
    for b in bundles() {
        let w = build_worksheet(b, &reference);
        for d in &w.diagnoses {
            let row = cw.lookup(d.snomed.as_deref().unwrap()).next().expect("the crosswalk covers every bundled concept");
            match &row.icd10cm_code {
                Some(code) => {
                    assert_eq!(d.suggestions.len(), 1);
                    let s = &d.suggestions[0];
                    assert_eq!((s.code.as_str(), s.source, s.rank), (code.as_str(), Source::Crosswalk, 1));
                    let want = match row.confidence {
                        MapConfidence::High => 0.9,
                        MapConfidence::Medium => 0.7,
                        MapConfidence::Low => 0.4,
                    };
                    assert_eq!(s.confidence, want);
                    assert_eq!(s.evidence.resource_id, d.condition_id);
                    assert!(!s.evidence.note_lines.is_empty(), "Synthea notes mention every diagnosis");
                }
                None => {
                    assert!(d.suggestions.is_empty());
                    let res = format!("Condition/{}", d.condition_id);
                    assert!(w.flags.iter().any(|f| f.kind == FlagKind::NoIcdEquivalent && f.resource.as_deref() == Some(res.as_str())));
                }
            }
            checked += 1;
        }
        assert_eq!(w.codes_by_source().text, 0, "the crosswalk covers the bundled concepts, so no text fallback");
    }
    assert_eq!(checked, 1196);
}

#[test]
fn record_codes_come_first_and_the_crosswalk_is_merged_into_them() {
    let reference = reference();
    let mut b = by_id("bdf7c340-9cdf-4c0e-bd6d-3b35bf105f46");
    let plain = build_worksheet(&b, &reference);
    assert_eq!(synthea::add_record_icd10cm(&mut b, reference.crosswalk()), 3);
    let w = build_worksheet(&b, &reference);
    for (d, p) in w.diagnoses.iter().zip(&plain.diagnoses) {
        assert_eq!(d.suggestions.len(), 1);
        assert_eq!(d.suggestions[0].source, Source::Record);
        assert_eq!(d.suggestions[0].also_from, vec![Source::Crosswalk]);
        assert_eq!(d.suggestions[0].code, p.suggestions[0].code);
        assert_eq!(d.suggestions[0].confidence, 0.95);
    }
    assert_eq!(w.codes_by_source().record, plain.codes_by_source().crosswalk);
    // a record code that differs from the crosswalk is kept first and flagged
    b.conditions[0]["code"]["coding"][1]["code"] = json!("G89.4");
    let w = build_worksheet(&b, &reference);
    let codes: Vec<(&str, Source)> = w.diagnoses[0].suggestions.iter().map(|s| (s.code.as_str(), s.source)).collect();
    assert_eq!(codes[0], ("G89.4", Source::Record));
    assert_eq!(codes[1].1, Source::Crosswalk);
    assert!(w.has_flag(FlagKind::RecordDiffersFromCrosswalk));
}

#[test]
fn a_concept_the_crosswalk_lacks_gets_ranked_text_candidates_with_note_lines() {
    let full = reference();
    let b = recording("44465007"); // Sprain of ankle
    let held = full.clone().with_crosswalk(full.crosswalk().without(&["44465007"]));
    let w = build_worksheet(&b, &held);
    let d = w.diagnoses.iter().find(|d| d.snomed.as_deref() == Some("44465007")).unwrap();
    assert_eq!(d.suggestions.len(), 5);
    assert!(d.suggestions.iter().all(|s| s.source == Source::Text));
    assert_eq!(d.suggestions.iter().map(|s| s.rank).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(d.suggestions[0].code, "S93.409A", "the crosswalk's own answer, found from text alone");
    let top = &d.suggestions[0];
    assert!(top.confidence > 0.0 && top.confidence <= 0.75);
    assert!(top.evidence.detail.as_deref().unwrap().contains("ankl"));
    assert!(!top.evidence.note_lines.is_empty());
    for l in &top.evidence.note_lines {
        let t = l.text.to_lowercase();
        assert!(t.contains("sprain") && t.contains("ankle"), "line {} does not support it: {t}", l.line);
        assert_eq!(l.document, b.documents[0]["id"].as_str().unwrap());
    }
    // the other diagnoses still come from the crosswalk
    assert!(w.diagnoses.iter().filter(|x| x.snomed.as_deref() != Some("44465007")).all(|x| x.suggestions.iter().all(|s| s.source == Source::Crosswalk)));
}

#[test]
fn the_principal_diagnosis_follows_the_documented_heuristic() {
    let reference = reference();
    // emergency sprain: "Sprain_Injury" names both; the specific disease/injury code with
    // the higher confidence wins over the residual T14.8XXA
    let b = recording("44465007");
    let w = build_worksheet(&b, &reference);
    assert_eq!(w.encounter_class, EncounterClass::Emergency);
    let p = w.principal.as_ref().unwrap();
    assert_eq!(p.code, "S93.409A");
    assert_eq!(p.reasons[0], "the Encounter's reason text names it");
    // an Encounter.diagnosis rank outranks everything
    let mut ranked = b.clone();
    let sprain_nos = ranked.conditions.iter().find(|c| c["code"]["coding"][0]["code"] == "384709000").unwrap()["id"].as_str().unwrap().to_owned();
    ranked.encounter["diagnosis"] = json!([{ "condition": { "reference": format!("Condition/{sprain_nos}") }, "rank": 1 }]);
    let p = build_worksheet(&ranked, &reference).principal.unwrap();
    assert_eq!((p.condition_id.as_str(), p.code.as_str()), (sprain_nos.as_str(), "T14.8XXA"));
    assert!(p.reasons[0].starts_with("named by the Encounter"));
    // a disease outranks a factor code when nothing names either
    let mut plain = by_id("5a60b87f-b1d6-4c22-bb6b-66a0c7b116d6"); // stress, refugee, gingivitis, …
    plain.encounter["reasonCode"] = json!([]);
    let p = build_worksheet(&plain, &reference).principal.unwrap();
    assert_eq!(p.code, "K05.10", "gingivitis (a disease) over Z codes");
    // nothing codable, no principal
    let first = &bundles()[0];
    let w = build_worksheet(first, &reference);
    assert!(w.diagnoses.iter().all(|d| d.suggestions.is_empty()));
    assert_eq!(w.principal, None);
}

#[test]
fn undocumented_diagnoses_are_flagged() {
    let reference = reference();
    let mut b = recording("44465007");
    let note = "2020-01-01\n\n# Assessment and Plan\nPatient is presenting with sprain (morphologic abnormality).\n";
    use base64::Engine;
    b.documents[0]["content"][0]["attachment"]["data"] = json!(base64::engine::general_purpose::STANDARD.encode(note));
    let w = build_worksheet(&b, &reference);
    let undocumented: Vec<&str> = w.diagnoses.iter().filter(|d| !d.documented).map(|d| d.snomed.as_deref().unwrap()).collect();
    assert_eq!(undocumented, vec!["44465007"], "the note names the sprain but not the ankle");
    assert_eq!(w.flags.iter().filter(|f| f.kind == FlagKind::Undocumented).count(), 1);
    b.documents.clear();
    let w = build_worksheet(&b, &reference);
    assert!(w.has_flag(FlagKind::NoClinicalNote));
    assert_eq!(w.flags.iter().filter(|f| f.kind == FlagKind::Undocumented).count(), w.diagnoses.len());
}

#[test]
fn withheld_types_incomplete_bundles_and_bad_record_codes_are_flagged() {
    let reference = reference();
    let mut b = recording("44465007");
    b.withheld = vec![medicodax_wire::ResourceType::DocumentReference];
    b.incomplete = true;
    b.warnings = vec![medicodax_wire::tools::Warning { code: "page-failed".into(), detail: "x".into() }];
    b.conditions[0]["code"]["coding"].as_array_mut().unwrap().push(json!({ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E88.81" }));
    b.conditions[1]["code"]["coding"].as_array_mut().unwrap().push(json!({ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z99.999", "display": "made up" }));
    let w = build_worksheet(&b, &reference);
    for k in [FlagKind::Withheld, FlagKind::IncompleteBundle, FlagKind::NonBillableCode, FlagKind::CodeNotInCodeSet] {
        assert!(w.has_flag(k), "{k:?}");
    }
    let bad = &w.diagnoses[1].suggestions[0];
    assert_eq!((bad.code.as_str(), bad.in_code_set, bad.title.as_str()), ("Z99.999", false, "made up"));
    assert!(bad.confidence < 0.5);
    let header = &w.diagnoses[0].suggestions[0];
    assert_eq!((header.code.as_str(), header.billable, header.in_code_set), ("E88.81", false, true));
    assert!(w.flags.iter().find(|f| f.kind == FlagKind::Withheld).unwrap().message.contains("DocumentReference"));
}

#[test]
fn worksheets_round_trip_as_json_and_render_as_a_table() {
    let reference = reference();
    let w = build_worksheet(&recording("44465007"), &reference);
    let v = serde_json::to_value(&w).unwrap();
    assert_eq!(v["encounter_class"], "emergency");
    assert_eq!(v["diagnoses"][0]["suggestions"][0]["source"], "crosswalk");
    assert!(v["diagnoses"][0]["suggestions"][0]["band"].is_string());
    let back: Worksheet = serde_json::from_value(v).unwrap();
    assert_eq!(back, w);
    let table = render::to_table(&w);
    assert!(table.contains("S93.409A") && table.contains("Sprain of unspecified ligament of unspecified ankle"));
    assert!(table.contains("Principal: S93.409A"));
    assert!(table.contains("[no-icd-equivalent]") || !w.has_flag(FlagKind::NoIcdEquivalent));
    for line in table.lines() {
        assert!(!line.contains("Steven") && !line.contains("Daniel"), "no patient names in the table");
    }
}

/// Every bundled encounter's worksheet fits the `worksheet.submit` limit once shortened;
/// shortening keeps the first three codes of every diagnosis, and says so with a flag.
#[test]
fn every_worksheet_fits_a_signed_call_after_fitting() {
    let reference = reference();
    let limit = medicodax_wire::tools::MAX_WORKSHEET_BYTES;
    let codes = |w: &Worksheet| w.diagnoses.iter().flat_map(|d| d.suggestions.iter().take(3).map(|s| s.code.clone())).collect::<Vec<_>>();
    let mut sizes = Vec::new();
    for bundle in bundles() {
        let w = build_worksheet(bundle, &reference);
        let fitted = medicodax_coding::fit_for_submission(&w, limit).expect("every bundled worksheet fits once shortened");
        assert!(serde_json::to_vec(&fitted).unwrap().len() <= limit);
        if fitted != w {
            assert!(fitted.has_flag(FlagKind::Trimmed));
            assert_eq!(codes(&fitted), codes(&w));
        }
        sizes.push((serde_json::to_vec(&w).unwrap().len(), w));
    }
    // The largest worksheet, squeezed below its own size, is shortened and keeps its codes.
    sizes.sort_by_key(|(n, _)| *n);
    let (n, big) = sizes.pop().unwrap();
    let squeezed = medicodax_coding::fit_for_submission(&big, n - 1).expect("shortening frees at least one byte");
    assert!(serde_json::to_vec(&squeezed).unwrap().len() < n);
    assert!(squeezed.has_flag(FlagKind::Trimmed));
    assert_eq!(codes(&squeezed), codes(&big));
}
