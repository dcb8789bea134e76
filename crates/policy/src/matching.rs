//! Matching returned resources against what was granted: query constraints and patient lists.
//!
//! The gateway narrows queries so the EHR returns only what is permitted, then checks
//! every returned resource again here (defence in depth against servers that ignore or
//! mis-apply a parameter). Anything this module cannot verify does not match: a
//! constraint on a parameter we cannot evaluate drops the resource, a resource without a
//! patient reference fails a patient list.
//!
//! Supported constraint parameters:
//! - token parameters (`category`, `code`, `status`, `clinical-status`, `type`, `class`,
//!   `intent`, `gender`, `identifier`, `vaccine-code`, …): the element named by the
//!   parameter in camelCase (with a few FHIR exceptions, e.g. MedicationRequest `code` is
//!   `medicationCodeableConcept`), matched as a code string, a Coding, an Identifier or a
//!   CodeableConcept (any coding), through arrays, in the forms `system|code`, `code`,
//!   `|code` and `system|`;
//! - reference parameters `patient`, `subject`, `encounter`: the reference's id;
//! - `_id`: the resource id.
//!
//! Date, string and quantity constraints cannot be verified and never match.

use crate::constraint::{alternatives, Conjunction, Token, TokenSystem};
use crate::params::{camel, param_kind, ParamKind};
use medicodax_wire::{FhirId, ResourceType};
use serde_json::Value;
use std::collections::BTreeSet;

/// The element of a resource that holds its patient reference (`None` for Patient itself).
pub fn patient_element(t: ResourceType) -> Option<&'static str> {
    match t {
        ResourceType::Patient => None,
        ResourceType::AllergyIntolerance | ResourceType::Immunization => Some("patient"),
        ResourceType::Coverage => Some("beneficiary"),
        _ => Some("subject"),
    }
}

/// The resource type named by `resource.resourceType`, if it is one of the eleven.
pub fn resource_type_of(resource: &Value) -> Option<ResourceType> {
    resource.get("resourceType")?.as_str()?.parse().ok()
}

/// The id at the end of a reference to `target` (`Patient/x`, `https://…/Patient/x`,
/// `Patient/x/_history/2`), or a bare id when `allow_bare`.
pub fn reference_id<'a>(reference: &'a str, target: &str, allow_bare: bool) -> Option<&'a str> {
    let mut rev = reference.rsplit('/');
    let last = rev.next()?;
    let (ty, id) = match rev.next() {
        None if allow_bare => return FhirId::new(reference).ok().map(|_| reference),
        None => return None,
        Some("_history") => {
            let id = rev.next()?;
            (rev.next()?, id)
        }
        Some(ty) => (ty, last),
    };
    if ty == target && FhirId::new(id).is_ok() { Some(id) } else { None }
}

/// The patient a resource belongs to: its id for a Patient, else the id of its patient
/// reference (`subject`, `patient` or `beneficiary`). `None` when there is none, or it
/// is not a `Patient/` reference (a Group subject, a contained `#ref`).
pub fn patient_id(resource: &Value) -> Option<String> {
    let t = resource_type_of(resource)?;
    match patient_element(t) {
        None => resource.get("id")?.as_str().filter(|i| FhirId::new(i).is_ok()).map(str::to_owned),
        Some(el) => {
            let r = resource.get(el)?.get("reference")?.as_str()?;
            reference_id(r, "Patient", false).map(str::to_owned)
        }
    }
}

/// The element path a token parameter searches on `t`.
fn token_element(t: ResourceType, param: &str) -> Vec<String> {
    match (t, param) {
        (ResourceType::MedicationRequest, "code") => vec!["medicationCodeableConcept".into()],
        (ResourceType::DocumentReference, "contenttype") => vec!["content".into(), "attachment".into(), "contentType".into()],
        _ => vec![camel(param)],
    }
}

/// The element path a reference parameter searches on `t`, and its target type.
fn reference_element(t: ResourceType, param: &str) -> Option<(Vec<&'static str>, Option<&'static str>)> {
    match param {
        "patient" => patient_element(t).map(|e| (vec![e], Some("Patient"))),
        "subject" if patient_element(t) == Some("subject") => Some((vec!["subject"], None)),
        "encounter" => match t {
            ResourceType::DocumentReference => Some((vec!["context", "encounter"], Some("Encounter"))),
            ResourceType::Patient | ResourceType::Encounter | ResourceType::Coverage => None,
            _ => Some((vec!["encounter"], Some("Encounter"))),
        },
        _ => None,
    }
}

/// The values at `path` in `v`, stepping through arrays.
fn collect<'a>(v: &'a Value, path: &[impl AsRef<str>], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect(i, path, out)),
        _ => match path.split_first() {
            None => out.push(v),
            Some((head, rest)) => {
                if let Some(next) = v.get(head.as_ref()) {
                    collect(next, rest, out);
                }
            }
        },
    }
}

fn token_matches_value(v: &Value, tok: &Token) -> bool {
    match v {
        Value::String(code) => tok.system == TokenSystem::Any && tok.code.as_deref() == Some(code.as_str()),
        Value::Bool(b) => tok.system == TokenSystem::Any && tok.code.as_deref() == Some(if *b { "true" } else { "false" }),
        Value::Array(items) => items.iter().any(|i| token_matches_value(i, tok)),
        Value::Object(o) => {
            if let Some(codings) = o.get("coding") {
                return match codings {
                    Value::Array(cs) => cs.iter().any(|c| c.is_object() && token_matches_value(c, tok)),
                    _ => false,
                };
            }
            let system = o.get("system").and_then(Value::as_str);
            let code = o.get("code").or_else(|| o.get("value")).and_then(Value::as_str);
            code.is_some() && tok.matches_coding(system, code)
        }
        _ => false,
    }
}

/// Whether `resource` (of type `t`) satisfies one `name=value` constraint.
pub fn satisfies(t: ResourceType, resource: &Value, name: &str, value: &str) -> bool {
    let alts = alternatives(value);
    if name == "_id" {
        let id = resource.get("id").and_then(Value::as_str);
        return id.is_some_and(|id| alts.iter().any(|a| a == id));
    }
    if let Some((path, target)) = reference_element(t, name) {
        let mut found = Vec::new();
        collect(resource, &path, &mut found);
        let refs: Vec<&str> = found.iter().filter_map(|v| v.get("reference").and_then(Value::as_str)).collect();
        return alts.iter().any(|a| {
            refs.iter().any(|r| match target {
                Some(ty) => match (reference_id(r, ty, false), reference_id(a, ty, true)) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                },
                None => !a.is_empty() && (*r == a.as_str() || r.ends_with(&format!("/{a}"))),
            })
        });
    }
    match param_kind(t, name) {
        Some(ParamKind::Token) | None => {
            let mut found = Vec::new();
            collect(resource, &token_element(t, name), &mut found);
            alts.iter().filter_map(|a| Token::parse(a)).any(|tok| found.iter().any(|v| token_matches_value(v, &tok)))
        }
        Some(_) => false,
    }
}

/// Whether one alternative of a caller's value selects only what one alternative of a
/// constraint's value selects (token containment, same referenced id, else equality).
pub fn within(t: ResourceType, name: &str, caller: &str, constraint: &str) -> bool {
    if name == "_id" {
        return caller == constraint;
    }
    if let Some((_, target)) = reference_element(t, name) {
        return match target {
            Some(ty) => matches!((reference_id(caller, ty, true), reference_id(constraint, ty, true)), (Some(a), Some(b)) if a == b),
            None => caller == constraint,
        };
    }
    match param_kind(t, name) {
        Some(ParamKind::Token) | None => match (Token::parse(caller), Token::parse(constraint)) {
            (Some(a), Some(b)) => a.within(&b),
            _ => false,
        },
        Some(_) => caller == constraint,
    }
}

/// Whether a constraint parameter can be verified on returned resources of type `t`.
pub fn verifiable(t: ResourceType, name: &str) -> bool {
    if name.contains([':', '.']) {
        return false;
    }
    name == "_id" || reference_element(t, name).is_some() || matches!(param_kind(t, name), Some(ParamKind::Token) | None)
}

/// What a returned resource must satisfy: its type, the grant's constraints and the
/// patient list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceFilter {
    /// The type the resource must be.
    pub resource_type: ResourceType,
    /// `None`: no constraint; else the resource must satisfy one alternative.
    pub constraints: Option<Vec<Conjunction>>,
    /// `None`: no patient list; else the resource's patient must be in it.
    pub patients: Option<BTreeSet<String>>,
}

impl ResourceFilter {
    /// Why `resource` is refused, or `Ok` when it passes.
    pub fn check(&self, resource: &Value) -> Result<(), crate::reason::DenyReason> {
        use crate::reason::DenyReason;
        if resource_type_of(resource) != Some(self.resource_type) {
            return Err(DenyReason::UnexpectedResource);
        }
        if let Some(list) = &self.patients {
            match patient_id(resource) {
                Some(p) if list.contains(&p) => {}
                _ => return Err(DenyReason::PatientNotInList),
            }
        }
        if let Some(alts) = &self.constraints
            && !alts.iter().any(|c| c.iter().all(|(k, v)| satisfies(self.resource_type, resource, k, v)))
        {
            return Err(DenyReason::ConstraintNotSatisfied);
        }
        Ok(())
    }

    /// Whether `resource` passes.
    pub fn admits(&self, resource: &Value) -> bool {
        self.check(resource).is_ok()
    }

    /// The top-level elements the filter reads (so `_elements` can keep them).
    pub fn elements(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if self.patients.is_some()
            && let Some(e) = patient_element(self.resource_type)
        {
            out.insert(e.to_owned());
        }
        for (k, _) in self.constraints.iter().flatten().flatten() {
            if let Some((path, _)) = reference_element(self.resource_type, k) {
                out.extend(path.first().map(|s| (*s).to_owned()));
            } else if k != "_id" {
                out.extend(token_element(self.resource_type, k).into_iter().next());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

    fn obs(category_code: &str, subject: &str) -> Value {
        json!({"resourceType":"Observation","id":"obs-1","status":"final",
            "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":category_code}]}],
            "code":{"coding":[{"system":"http://loinc.org","code":"2345-7"}]},
            "subject":{"reference":subject},"encounter":{"reference":"Encounter/enc-1"}})
    }

    #[test]
    fn references_resolve_to_ids() {
        assert_eq!(reference_id("Patient/pt-1001", "Patient", false), Some("pt-1001"));
        assert_eq!(reference_id("https://fhir.vendor-b.example/fhir/r4/Patient/pt-1001", "Patient", false), Some("pt-1001"));
        assert_eq!(reference_id("Patient/pt-1001/_history/3", "Patient", false), Some("pt-1001"));
        assert_eq!(reference_id("Group/g1", "Patient", false), None);
        assert_eq!(reference_id("pt-1001", "Patient", false), None);
        assert_eq!(reference_id("pt-1001", "Patient", true), Some("pt-1001"));
        assert_eq!(reference_id("#contained", "Patient", true), None);
        assert_eq!(reference_id("Patient/../x", "Patient", false), None);
    }

    #[test]
    fn patient_ids_per_type() {
        assert_eq!(patient_id(&obs("laboratory", "Patient/pt-1001")).as_deref(), Some("pt-1001"));
        assert_eq!(patient_id(&json!({"resourceType":"Patient","id":"pt-2002"})).as_deref(), Some("pt-2002"));
        assert_eq!(patient_id(&json!({"resourceType":"Coverage","id":"c","beneficiary":{"reference":"Patient/pt-1"}})).as_deref(), Some("pt-1"));
        assert_eq!(patient_id(&json!({"resourceType":"AllergyIntolerance","id":"a","patient":{"reference":"Patient/pt-9"}})).as_deref(), Some("pt-9"));
        assert_eq!(patient_id(&json!({"resourceType":"Observation","id":"o","subject":{"reference":"Group/g"}})), None);
        assert_eq!(patient_id(&json!({"resourceType":"Specimen","id":"s"})), None);
        assert_eq!(patient_id(&json!([1, 2])), None);
    }

    #[test]
    fn token_constraints_match_codeable_concepts_codings_and_codes() {
        let o = obs("laboratory", "Patient/pt-1001");
        let t = ResourceType::Observation;
        assert!(satisfies(t, &o, "category", LAB));
        assert!(satisfies(t, &o, "category", "laboratory"));
        assert!(!satisfies(t, &o, "category", "|laboratory"), "the coding has a system");
        assert!(satisfies(t, &o, "category", "http://terminology.hl7.org/CodeSystem/observation-category|"));
        assert!(!satisfies(t, &o, "category", "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"));
        assert!(satisfies(t, &o, "category", "vital-signs,laboratory"), "comma is OR");
        assert!(satisfies(t, &o, "status", "final"));
        assert!(!satisfies(t, &o, "status", "http://hl7.org/fhir/observation-status|final"), "a plain code has no known system");
        assert!(satisfies(t, &o, "code", "http://loinc.org|2345-7"));
        assert!(satisfies(t, &o, "encounter", "Encounter/enc-1") && satisfies(t, &o, "encounter", "enc-1"));
        assert!(satisfies(t, &o, "patient", "pt-1001") && !satisfies(t, &o, "patient", "pt-2002"));
        assert!(satisfies(t, &o, "_id", "obs-1"));
        assert!(!satisfies(t, &o, "date", "ge2020"), "dates cannot be verified: no match");
        let allergy = json!({"resourceType":"AllergyIntolerance","id":"a","category":["food"],"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"active"}]}});
        assert!(satisfies(ResourceType::AllergyIntolerance, &allergy, "category", "food"));
        assert!(!satisfies(ResourceType::AllergyIntolerance, &allergy, "category", "medication"));
        assert!(satisfies(ResourceType::AllergyIntolerance, &allergy, "clinical-status", "active"));
        let mr = json!({"resourceType":"MedicationRequest","id":"m","medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"123"}]}});
        assert!(satisfies(ResourceType::MedicationRequest, &mr, "code", "http://www.nlm.nih.gov/research/umls/rxnorm|123"));
        let pt = json!({"resourceType":"Patient","id":"p","identifier":[{"system":"urn:mrn","value":"42"}],"active":true});
        assert!(satisfies(ResourceType::Patient, &pt, "identifier", "urn:mrn|42") && satisfies(ResourceType::Patient, &pt, "active", "true"));
    }

    #[test]
    fn filter_checks_type_patients_and_constraints() {
        let f = ResourceFilter {
            resource_type: ResourceType::Observation,
            constraints: Some(vec![vec![("category".into(), LAB.into())]]),
            patients: Some(["pt-1001".to_owned()].into()),
        };
        use crate::reason::DenyReason;
        assert_eq!(f.check(&obs("laboratory", "Patient/pt-1001")), Ok(()));
        assert_eq!(f.check(&obs("vital-signs", "Patient/pt-1001")), Err(DenyReason::ConstraintNotSatisfied));
        assert_eq!(f.check(&obs("laboratory", "Patient/pt-2002")), Err(DenyReason::PatientNotInList));
        assert_eq!(f.check(&json!({"resourceType":"Patient","id":"pt-1001"})), Err(DenyReason::UnexpectedResource));
        assert_eq!(f.elements(), ["category".to_owned(), "subject".to_owned()].into());
    }
}
