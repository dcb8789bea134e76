//! Encounter bundles assembled offline from a FHIR transaction Bundle (the bundled
//! Synthea patients), in the shape the gateway's `encounter.bundle` tool returns.
//!
//! This is not a data path of the pipeline, which reads only signed tool results: it
//! exists so the worksheet builder, the quality evaluation and the benchmarks can run
//! on the real bundled patients without a gateway. `urn:uuid:` references are resolved
//! to `Type/id`, as a FHIR server serves them.

use crate::DataError;
use crate::fhir::{arr, reference_id, str_at};
use medicodax_wire::tools::EncounterBundle;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Reads a (possibly gzipped) JSON file.
pub fn read_json(path: &Path) -> Result<Value, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: name.clone(), reason: e.kind().to_string() })?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        crate::gunzip_utf8(&bytes, &name)?
    } else {
        String::from_utf8(bytes).map_err(|_| DataError::Decode { file: name.clone(), reason: "not UTF-8".into() })?
    };
    serde_json::from_str(&text).map_err(|e| DataError::Decode { file: name, reason: format!("not JSON: line {}", e.line()) })
}

/// Rewrites every `"reference": "urn:uuid:…"` to `Type/id` using the bundle's full URLs.
fn resolve(v: &mut Value, urls: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                    && let Some(to) = urls.get(s.as_str())
                {
                    *s = to.clone();
                    continue;
                }
                resolve(x, urls);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| resolve(x, urls)),
        _ => {}
    }
}

/// The encounter a resource belongs to (`encounter`, or `context.encounter[0]` for a
/// DocumentReference).
fn encounter_of(r: &Value) -> Option<String> {
    r.get("encounter")
        .and_then(reference_id)
        .or_else(|| r.get("context").map(|c| arr(c, "encounter")).and_then(|e| e.first()).and_then(reference_id))
        .map(str::to_owned)
}

/// One bundle per Encounter of a patient's transaction Bundle, in Bundle order.
pub fn encounter_bundles(transaction: &Value) -> Vec<EncounterBundle> {
    let mut urls = HashMap::new();
    for e in arr(transaction, "entry") {
        if let (Some(full), Some(r)) = (str_at(e, "fullUrl"), e.get("resource"))
            && let (Some(t), Some(id)) = (str_at(r, "resourceType"), str_at(r, "id"))
        {
            urls.insert(full.to_owned(), format!("{t}/{id}"));
        }
    }
    let mut resources: Vec<Value> = arr(transaction, "entry").iter().filter_map(|e| e.get("resource").cloned()).collect();
    for r in &mut resources {
        resolve(r, &urls);
    }
    let of_type = |t: &'static str| resources.iter().filter(move |r| str_at(r, "resourceType") == Some(t));
    let patient = of_type("Patient").next().cloned();
    let allergies: Vec<Value> = of_type("AllergyIntolerance").cloned().collect();
    let immunizations: Vec<Value> = of_type("Immunization").cloned().collect();
    let coverage: Vec<Value> = of_type("Coverage").cloned().collect();
    let mut by_encounter: HashMap<(String, &str), Vec<Value>> = HashMap::new();
    for r in &resources {
        let Some(t) = str_at(r, "resourceType") else { continue };
        if let Some(e) = encounter_of(r) {
            by_encounter.entry((e, t)).or_default().push(r.clone());
        }
    }
    let mut take = |id: &str, t: &'static str| by_encounter.remove(&(id.to_owned(), t)).unwrap_or_default();
    let encounters: Vec<Value> = of_type("Encounter").cloned().collect();
    encounters
        .into_iter()
        .map(|enc| {
            let id = str_at(&enc, "id").unwrap_or_default().to_owned();
            EncounterBundle {
                patient: patient.clone(),
                conditions: take(&id, "Condition"),
                procedures: take(&id, "Procedure"),
                observations: take(&id, "Observation"),
                medication_requests: take(&id, "MedicationRequest"),
                diagnostic_reports: take(&id, "DiagnosticReport"),
                documents: take(&id, "DocumentReference"),
                allergies: allergies.clone(),
                immunizations: immunizations.clone(),
                coverage: coverage.clone(),
                encounter: enc,
                withheld: Vec::new(),
                incomplete: false,
                warnings: Vec::new(),
            }
        })
        .collect()
}

/// The encounter bundles of every `*.json.gz` / `*.json` patient file in a folder,
/// files in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<EncounterBundle>, DataError> {
    let name = dir.display().to_string();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| DataError::Io { path: name.clone(), reason: e.kind().to_string() })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz") || p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(encounter_bundles(&read_json(&f)?));
    }
    Ok(out)
}

/// Adds the crosswalk's ICD-10-CM coding next to each mapped SNOMED CT coding of each
/// Condition, as the Epic-style sandbox does; returns how many were added.
pub fn add_record_icd10cm(bundle: &mut EncounterBundle, crosswalk: &crate::crosswalk::Crosswalk) -> usize {
    let mut n = 0;
    for c in &mut bundle.conditions {
        let Some(Value::Array(codings)) = c.pointer_mut("/code/coding") else { continue };
        let adds: Vec<Value> = codings
            .iter()
            .filter(|x| str_at(x, "system") == Some(crate::fhir::SNOMED))
            .filter_map(|x| str_at(x, "code"))
            .filter_map(|code| crosswalk.lookup(code).next())
            .filter_map(|row| row.icd10cm_code.as_ref().map(|code| serde_json::json!({"system": crate::fhir::ICD10CM, "code": code, "display": row.icd10cm_title})))
            .collect();
        n += adds.len();
        codings.extend(adds);
    }
    n
}
