//! Nothing panics on input: odd FHIR shapes, missing fields, bad base64, non-UTF-8 notes.

mod common;

use base64::Engine;
use common::reference;
use medicodax_coding::build_worksheet;
use medicodax_coding::worksheet::FlagKind;
use medicodax_wire::tools::EncounterBundle;
use proptest::prelude::*;
use serde_json::{Value, json};

fn bundle(encounter: Value, conditions: Vec<Value>, procedures: Vec<Value>, documents: Vec<Value>) -> EncounterBundle {
    EncounterBundle {
        encounter,
        patient: None,
        conditions,
        procedures,
        observations: vec![],
        medication_requests: vec![],
        diagnostic_reports: vec![],
        documents,
        allergies: vec![],
        immunizations: vec![],
        coverage: vec![],
        withheld: vec![],
        incomplete: false,
        warnings: vec![],
    }
}

#[test]
fn odd_shapes_give_a_worksheet_with_flags() {
    let r = reference();
    let w = build_worksheet(
        &bundle(
            json!(null),
            vec![json!(1), json!("x"), json!({}), json!({"code": 5}), json!({"id": "c1", "code": {"coding": [{"system": "http://snomed.info/sct"}]}}), json!({"id": "c2", "encounter": "Encounter/x", "category": {"coding": []}})],
            vec![json!([]), json!({"id": "p", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}, "performedPeriod": {"start": "2020"}})],
            vec![json!({"content": [{"attachment": {"contentType": "text/plain", "data": 12}}]}), json!({"id": "d", "content": [{"attachment": {"data": "!!!"}}]})],
        ),
        &r,
    );
    assert_eq!(w.encounter_id, "(no id)");
    assert_eq!(w.diagnoses.len(), 6);
    assert!(w.diagnoses.iter().all(|d| d.suggestions.is_empty()));
    assert_eq!(w.flags.iter().filter(|f| f.kind == FlagKind::NoSuggestion).count(), 6);
    assert!(w.has_flag(FlagKind::UnreadableNote) && w.has_flag(FlagKind::NoClinicalNote));
    assert_eq!(w.procedures[1].performed.as_deref(), Some("2020"));
    assert_eq!(w.principal, None);
}

#[test]
fn a_non_utf8_note_is_read_lossily_and_still_documents() {
    let r = reference();
    let note = base64::engine::general_purpose::STANDARD.encode(b"Assessment: acute bronchitis \xff\xfe (disorder)\n");
    let cond = json!({"id": "c", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "10509002", "display": "Acute bronchitis (disorder)"}]}});
    let doc = json!({"id": "d", "content": [{"attachment": {"contentType": "text/plain", "data": note}}]});
    let w = build_worksheet(&bundle(json!({"id": "e", "status": "in-progress", "class": {"code": "EMER"}}), vec![cond], vec![], vec![doc]), &r);
    assert!(w.diagnoses[0].documented);
    assert_eq!(w.diagnoses[0].suggestions[0].code, "J20.9");
    assert!(w.flags.iter().any(|f| f.kind == FlagKind::UnreadableNote && f.message.contains("UTF-8")));
    assert!(w.has_flag(FlagKind::NotFinished));
}

#[test]
fn an_unmapped_concept_with_only_text_goes_to_the_text_matcher() {
    let r = reference();
    let cond = json!({"id": "c", "code": {"text": "Essential hypertension"}});
    let w = build_worksheet(&bundle(json!({"id": "e"}), vec![cond], vec![], vec![]), &r);
    assert_eq!(w.diagnoses[0].suggestions[0].code, "I10");
    assert_eq!(w.principal.as_ref().map(|p| p.code.as_str()), Some("I10"));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 /:.=+-]{0,24}".prop_map(Value::String),
        prop_oneof![Just("http://snomed.info/sct"), Just("http://hl7.org/fhir/sid/icd-10-cm"), Just("44465007"), Just("E88.81"), Just("Sprain of ankle")].prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("id"), Just("code"), Just("coding"), Just("system"), Just("display"), Just("text"), Just("encounter"), Just("reference"),
            Just("category"), Just("content"), Just("attachment"), Just("data"), Just("contentType"), Just("class"), Just("period"), Just("diagnosis"),
            Just("reasonCode"), Just("reasonReference"), Just("rank"), Just("onsetDateTime"), Just("status"), Just("clinicalStatus")
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_json_builds_a_worksheet_without_panicking(enc in arb_json(), conds in prop::collection::vec(arb_json(), 0..4), procs in prop::collection::vec(arb_json(), 0..2), docs in prop::collection::vec(arb_json(), 0..2)) {
        let r = reference();
        let w = build_worksheet(&bundle(enc, conds.clone(), procs, docs), &r);
        prop_assert_eq!(w.diagnoses.len(), conds.len());
        let _ = medicodax_coding::render::to_table(&w);
        prop_assert!(serde_json::to_string(&w).is_ok());
    }
}

#[test]
fn qualifiers_in_the_note_sharpen_a_text_match() {
    let r = reference();
    let cond = json!({"id": "c", "code": {"text": "Otitis media"}});
    let alone = build_worksheet(&bundle(json!({"id": "e"}), vec![cond.clone()], vec![], vec![]), &r);
    assert_eq!(alone.diagnoses[0].suggestions[0].code, "H66.90");
    let note = base64::engine::general_purpose::STANDARD.encode("# Assessment\nOtitis media, left, recurrent acute episode.\n");
    let doc = json!({"id": "d", "content": [{"attachment": {"contentType": "text/plain", "data": note}}]});
    let w = build_worksheet(&bundle(json!({"id": "e"}), vec![cond], vec![], vec![doc]), &r);
    let top = &w.diagnoses[0].suggestions[0];
    assert_ne!(top.code, "H66.90", "the note says left, recurrent, acute");
    assert!(r.codes().get(&top.code).unwrap().long_title.contains("left"), "{} {}", top.code, top.title);
    assert_eq!(top.evidence.note_lines[0].line, 2);
}
