//! Search parameters per resource type, and the values each resource is indexed under.
//!
//! Every served resource is indexed once at load time: for each search parameter of its
//! type, the token, date, reference or string values found at the parameter's paths.
//! Searches then match on these values only, so the resource JSON is never parsed again.

use crate::date::{Range, parse_range};
use crate::vendor::ResourceType;
use serde_json::Value;

/// How a parameter's values are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `system|code` against Coding, CodeableConcept, Identifier or a bare code.
    Token,
    /// Prefix and range against date, dateTime, instant or Period.
    Date,
    /// `Type/id` or `id` against a Reference.
    Reference,
    /// Case-insensitive starts-with against strings and HumanName parts.
    Str,
}

/// One search parameter of a type.
#[derive(Debug)]
pub(crate) struct ParamSpec {
    /// The names it answers to (the first is canonical).
    pub names: &'static [&'static str],
    /// How values compare.
    pub kind: Kind,
    /// Dotted paths into the resource; arrays are walked through.
    pub paths: &'static [&'static str],
}

const fn p(names: &'static [&'static str], kind: Kind, paths: &'static [&'static str]) -> ParamSpec {
    ParamSpec { names, kind, paths }
}

use Kind::{Date, Reference, Str, Token};

const PATIENT: &[ParamSpec] = &[
    p(&["identifier"], Token, &["identifier"]),
    p(&["name"], Str, &["name.family", "name.given", "name.text"]),
    p(&["family"], Str, &["name.family"]),
    p(&["given"], Str, &["name.given"]),
    p(&["birthdate"], Date, &["birthDate"]),
    p(&["gender"], Token, &["gender"]),
];
const ENCOUNTER: &[ParamSpec] = &[
    p(&["date"], Date, &["period"]),
    p(&["status"], Token, &["status"]),
    p(&["class"], Token, &["class"]),
    p(&["type"], Token, &["type"]),
];
const CONDITION: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["encounter"]),
    p(&["category"], Token, &["category"]),
    p(&["code"], Token, &["code"]),
    p(&["clinical-status"], Token, &["clinicalStatus"]),
    p(&["verification-status"], Token, &["verificationStatus"]),
    p(&["onset-date", "date"], Date, &["onsetDateTime", "onsetPeriod"]),
    p(&["recorded-date"], Date, &["recordedDate"]),
];
const PROCEDURE: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["encounter"]),
    p(&["code"], Token, &["code"]),
    p(&["status"], Token, &["status"]),
    p(&["date"], Date, &["performedDateTime", "performedPeriod"]),
];
const OBSERVATION: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["encounter"]),
    p(&["category"], Token, &["category"]),
    p(&["code"], Token, &["code"]),
    p(&["status"], Token, &["status"]),
    p(&["date"], Date, &["effectiveDateTime", "effectivePeriod", "effectiveInstant"]),
];
const MEDICATION_REQUEST: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["encounter"]),
    p(&["status"], Token, &["status"]),
    p(&["intent"], Token, &["intent"]),
    p(&["category"], Token, &["category"]),
    p(&["code"], Token, &["medicationCodeableConcept"]),
    p(&["authoredon", "date"], Date, &["authoredOn"]),
];
const ALLERGY_INTOLERANCE: &[ParamSpec] = &[
    p(&["clinical-status"], Token, &["clinicalStatus"]),
    p(&["verification-status"], Token, &["verificationStatus"]),
    p(&["category"], Token, &["category"]),
    p(&["code"], Token, &["code"]),
    p(&["type"], Token, &["type"]),
    p(&["date"], Date, &["recordedDate"]),
];
const DIAGNOSTIC_REPORT: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["encounter"]),
    p(&["category"], Token, &["category"]),
    p(&["code"], Token, &["code"]),
    p(&["status"], Token, &["status"]),
    p(&["date"], Date, &["effectiveDateTime", "effectivePeriod"]),
];
const DOCUMENT_REFERENCE: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["context.encounter"]),
    p(&["category"], Token, &["category"]),
    p(&["type"], Token, &["type"]),
    p(&["status"], Token, &["status"]),
    p(&["date"], Date, &["date"]),
    p(&["period"], Date, &["context.period"]),
];
const IMMUNIZATION: &[ParamSpec] = &[
    p(&["encounter"], Reference, &["encounter"]),
    p(&["status"], Token, &["status"]),
    p(&["vaccine-code"], Token, &["vaccineCode"]),
    p(&["date"], Date, &["occurrenceDateTime"]),
];
const COVERAGE: &[ParamSpec] = &[
    p(&["status"], Token, &["status"]),
    p(&["type"], Token, &["type"]),
    p(&["date"], Date, &["period"]),
];

/// The search parameters of `t` (besides `_id` and the patient parameters).
pub(crate) fn specs(t: ResourceType) -> &'static [ParamSpec] {
    match t {
        ResourceType::Patient => PATIENT,
        ResourceType::Encounter => ENCOUNTER,
        ResourceType::Condition => CONDITION,
        ResourceType::Procedure => PROCEDURE,
        ResourceType::Observation => OBSERVATION,
        ResourceType::MedicationRequest => MEDICATION_REQUEST,
        ResourceType::AllergyIntolerance => ALLERGY_INTOLERANCE,
        ResourceType::DiagnosticReport => DIAGNOSTIC_REPORT,
        ResourceType::DocumentReference => DOCUMENT_REFERENCE,
        ResourceType::Immunization => IMMUNIZATION,
        ResourceType::Coverage => COVERAGE,
    }
}

/// Where a resource of type `t` names its patient, and the search parameter names that
/// select by it. `None` for Patient itself.
pub(crate) fn patient_link(t: ResourceType) -> Option<(&'static str, &'static [&'static str])> {
    match t {
        ResourceType::Patient => None,
        ResourceType::AllergyIntolerance | ResourceType::Immunization => Some(("patient", &["patient"])),
        ResourceType::Coverage => Some(("beneficiary", &["patient", "beneficiary"])),
        _ => Some(("subject", &["patient", "subject"])),
    }
}

/// One indexed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IndexValue {
    /// A code with its system, if any.
    Token { system: Option<Box<str>>, code: Box<str> },
    /// A time range.
    Date(Range),
    /// A reference, `Type/id` as written after urn:uuid resolution.
    Ref(Box<str>),
    /// A string, lower-cased.
    Str(Box<str>),
}

/// The values of `resource` for each of `specs`, as `(spec index, value)` pairs.
pub(crate) fn index_resource(resource: &Value, specs: &[ParamSpec]) -> Vec<(u8, IndexValue)> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let Ok(i) = u8::try_from(i) else { break };
        for path in spec.paths {
            let mut found = Vec::new();
            walk(resource, path, &mut found);
            for v in found {
                extract(v, spec.kind, &mut |iv| out.push((i, iv)));
            }
        }
    }
    out
}

/// Collects the values at a dotted path, walking through arrays.
pub(crate) fn walk<'a>(v: &'a Value, path: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => {
            for item in items {
                walk(item, path, out);
            }
        }
        Value::Object(map) => {
            let (head, rest) = match path.split_once('.') {
                Some((h, r)) => (h, Some(r)),
                None => (path, None),
            };
            if let Some(next) = map.get(head) {
                match rest {
                    Some(r) => walk(next, r, out),
                    None => match next {
                        Value::Array(items) => out.extend(items.iter()),
                        other => out.push(other),
                    },
                }
            }
        }
        _ => {}
    }
}

fn extract(v: &Value, kind: Kind, push: &mut dyn FnMut(IndexValue)) {
    match kind {
        Kind::Token => match v {
            Value::String(code) => push(IndexValue::Token { system: None, code: code.as_str().into() }),
            Value::Object(map) => {
                if let Some(Value::Array(codings)) = map.get("coding") {
                    for c in codings {
                        extract(c, kind, push);
                    }
                } else if let Some(Value::String(code)) = map.get("code").or_else(|| map.get("value")) {
                    let system = map.get("system").and_then(Value::as_str).map(Into::into);
                    push(IndexValue::Token { system, code: code.as_str().into() });
                }
            }
            _ => {}
        },
        Kind::Date => match v {
            Value::String(s) => {
                if let Some(r) = parse_range(s) {
                    push(IndexValue::Date(r));
                }
            }
            Value::Object(map) => {
                let bound = |k: &str| map.get(k).and_then(Value::as_str).and_then(parse_range);
                if let Some(r) = Range::period(bound("start"), bound("end")) {
                    push(IndexValue::Date(r));
                }
            }
            _ => {}
        },
        Kind::Reference => {
            if let Some(r) = v.get("reference").and_then(Value::as_str) {
                push(IndexValue::Ref(r.into()));
            }
        }
        Kind::Str => {
            if let Value::String(s) = v {
                push(IndexValue::Str(s.to_lowercase().into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_names_are_unique_per_type() {
        for t in ResourceType::ALL {
            let mut names: Vec<&str> = specs(t).iter().flat_map(|s| s.names.iter().copied()).collect();
            if let Some((_, pnames)) = patient_link(t) {
                names.extend(pnames.iter().copied());
            }
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "{t} has a parameter name twice");
            assert!(specs(t).len() < 256);
        }
    }

    #[test]
    fn indexes_codings_periods_references_and_names() {
        let obs = json!({
            "resourceType": "Observation",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
            "status": "final",
            "encounter": {"reference": "Encounter/e1"},
            "effectivePeriod": {"start": "2020-01-01"},
            "unknownElement": {"kept": true}
        });
        let idx = index_resource(&obs, specs(ResourceType::Observation));
        assert!(idx.contains(&(0, IndexValue::Ref("Encounter/e1".into()))));
        assert!(idx.contains(&(1, IndexValue::Token { system: Some("http://terminology.hl7.org/CodeSystem/observation-category".into()), code: "vital-signs".into() })));
        assert!(idx.contains(&(2, IndexValue::Token { system: Some("http://loinc.org".into()), code: "8867-4".into() })));
        assert!(idx.contains(&(3, IndexValue::Token { system: None, code: "final".into() })));
        assert!(matches!(idx.iter().find(|(i, _)| *i == 4), Some((_, IndexValue::Date(r))) if r.end == i64::MAX));
        let pat = json!({"name": [{"family": "Welch", "given": ["Hans", "H"]}], "identifier": [{"system": "urn:x", "value": "42"}]});
        let idx = index_resource(&pat, specs(ResourceType::Patient));
        assert!(idx.contains(&(0, IndexValue::Token { system: Some("urn:x".into()), code: "42".into() })));
        assert!(idx.contains(&(1, IndexValue::Str("welch".into()))));
        assert!(idx.contains(&(3, IndexValue::Str("h".into()))));
        let allergy = json!({"category": ["medication"]});
        let idx = index_resource(&allergy, specs(ResourceType::AllergyIntolerance));
        assert_eq!(idx, vec![(2, IndexValue::Token { system: None, code: "medication".into() })]);
    }
}
