//! Field redaction per role (minimum necessary).
//!
//! A path is `Type.element` or `Type.a.b…`: the first segment is a resource type, the
//! rest element names. Applying a path removes the element from every resource of that
//! type, stepping through arrays at every level (`Patient.name.given` removes `given`
//! from every `name`). An element name also removes its FHIR JSON companions: the
//! primitive extension `_element`, and for a choice element `value` every
//! `value[x]` form (`valueQuantity`, `valueString`, …).
//!
//! Embedded resources: redaction applies to every JSON object in the value that carries a
//! `resourceType` string, at any depth (contained resources, Bundle entries, anything
//! else that embeds a resource), each by its own type. When any path applies to a
//! resource's type, its narrative (`text`) is removed too, because generated narrative
//! repeats the structured data (a Patient's `text.div` holds the address).
//!
//! Paths on a type the resource is not do nothing. Unknown element names are accepted
//! (and reported once, at policy build time, as a warning); `Type.id` and
//! `Type.resourceType` are refused because filtering and the audit log need them.
//! Redaction runs after filtering and after the audit log has taken the resource
//! references and patients touched.

use medicodax_wire::ResourceType;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Nesting deeper than this is replaced by `null` (FHIR resources are far shallower;
/// `serde_json` itself refuses to parse more than 128 levels).
pub const MAX_DEPTH: usize = 100;

/// One parsed redaction path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedactPath {
    /// The resource type name (`Patient`).
    pub resource_type: String,
    /// The element path below it (`["telecom"]`, `["name", "given"]`).
    pub elements: Vec<String>,
}

/// Why a redaction path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedactPathError {
    /// Not `Type.element[.element…]` with names of letters and digits.
    #[error("expected Type.element or Type.element.child, names of letters and digits")]
    Malformed,
    /// `id` and `resourceType` cannot be redacted.
    #[error("id and resourceType cannot be redacted: filtering and the audit log need them")]
    Protected,
}

fn valid_segment(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl RedactPath {
    /// Parses `Type.element[.child…]`.
    pub fn parse(s: &str) -> Result<RedactPath, RedactPathError> {
        let mut segs = s.split('.');
        let ty = segs.next().unwrap_or("");
        let elements: Vec<String> = segs.map(str::to_owned).collect();
        if !ty.as_bytes().first().is_some_and(u8::is_ascii_uppercase) || !valid_segment(ty) || elements.is_empty() || !elements.iter().all(|e| valid_segment(e)) {
            return Err(RedactPathError::Malformed);
        }
        if let [only] = elements.as_slice()
            && (only == "id" || only == "resourceType")
        {
            return Err(RedactPathError::Protected);
        }
        Ok(RedactPath { resource_type: ty.to_owned(), elements })
    }

    /// Whether the type is one of the eleven and its first element is a known R4 element.
    pub fn is_known(&self) -> bool {
        let Ok(t) = self.resource_type.parse::<ResourceType>() else {
            return false;
        };
        let first = self.elements.first().map(String::as_str).unwrap_or("");
        let list = elements_of(t);
        DOMAIN_RESOURCE.iter().chain(list).any(|e| *e == first || choice_variant(first, e))
    }
}

impl std::fmt::Display for RedactPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.resource_type, self.elements.join("."))
    }
}

/// The FHIR data type names that end a choice element (`value` + `Quantity`).
const CHOICE_SUFFIXES: &[&str] = &[
    "Boolean", "Integer", "Decimal", "String", "DateTime", "Date", "Time", "Instant", "Uri", "Url", "Canonical", "Code", "Id", "Oid", "Uuid",
    "Markdown", "Base64Binary", "PositiveInt", "UnsignedInt", "Quantity", "Period", "Range", "Ratio", "SampledData", "Attachment", "Reference",
    "CodeableConcept", "Coding", "Identifier", "Age", "Duration", "Annotation", "Timing", "Address", "HumanName", "ContactPoint", "Signature",
    "Money", "Count", "Distance", "Expression", "Dosage", "Meta", "ContactDetail", "UsageContext", "RelatedArtifact", "TriggerDefinition",
    "DataRequirement", "ParameterDefinition",
];

/// Whether `key` is `base` followed by a data type name (`deceasedBoolean` for `deceased`).
fn choice_variant(key: &str, base: &str) -> bool {
    key.strip_prefix(base).is_some_and(|rest| CHOICE_SUFFIXES.contains(&rest))
}

const DOMAIN_RESOURCE: &[&str] = &["meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"];

/// The top-level elements of each of the eleven types (FHIR R4), choice elements by prefix.
fn elements_of(t: ResourceType) -> &'static [&'static str] {
    match t {
        ResourceType::Patient => &[
            "identifier", "active", "name", "telecom", "gender", "birthDate", "deceased", "address", "maritalStatus", "multipleBirth", "photo", "contact",
            "communication", "generalPractitioner", "managingOrganization", "link",
        ],
        ResourceType::Encounter => &[
            "identifier", "status", "statusHistory", "class", "classHistory", "type", "serviceType", "priority", "subject", "episodeOfCare", "basedOn",
            "participant", "appointment", "period", "length", "reasonCode", "reasonReference", "diagnosis", "account", "hospitalization", "location",
            "serviceProvider", "partOf",
        ],
        ResourceType::Condition => &[
            "identifier", "clinicalStatus", "verificationStatus", "category", "severity", "code", "bodySite", "subject", "encounter", "onset", "abatement",
            "recordedDate", "recorder", "asserter", "stage", "evidence", "note",
        ],
        ResourceType::Procedure => &[
            "identifier", "instantiatesCanonical", "instantiatesUri", "basedOn", "partOf", "status", "statusReason", "category", "code", "subject",
            "encounter", "performed", "recorder", "asserter", "performer", "location", "reasonCode", "reasonReference", "bodySite", "outcome", "report",
            "complication", "complicationDetail", "followUp", "note", "focalDevice", "usedReference", "usedCode",
        ],
        ResourceType::Observation => &[
            "identifier", "basedOn", "partOf", "status", "category", "code", "subject", "focus", "encounter", "effective", "issued", "performer", "value",
            "dataAbsentReason", "interpretation", "note", "bodySite", "method", "specimen", "device", "referenceRange", "hasMember", "derivedFrom",
            "component",
        ],
        ResourceType::MedicationRequest => &[
            "identifier", "status", "statusReason", "intent", "category", "priority", "doNotPerform", "reported", "medication", "subject", "encounter",
            "supportingInformation", "authoredOn", "requester", "performer", "performerType", "recorder", "reasonCode", "reasonReference",
            "instantiatesCanonical", "instantiatesUri", "basedOn", "groupIdentifier", "courseOfTherapyType", "insurance", "note", "dosageInstruction",
            "dispenseRequest", "substitution", "priorPrescription", "detectedIssue", "eventHistory",
        ],
        ResourceType::AllergyIntolerance => &[
            "identifier", "clinicalStatus", "verificationStatus", "type", "category", "criticality", "code", "patient", "encounter", "onset",
            "recordedDate", "recorder", "asserter", "lastOccurrence", "note", "reaction",
        ],
        ResourceType::DiagnosticReport => &[
            "identifier", "basedOn", "status", "category", "code", "subject", "encounter", "effective", "issued", "performer", "resultsInterpreter",
            "specimen", "result", "imagingStudy", "media", "conclusion", "conclusionCode", "presentedForm",
        ],
        ResourceType::DocumentReference => &[
            "masterIdentifier", "identifier", "status", "docStatus", "type", "category", "subject", "date", "author", "authenticator", "custodian",
            "relatesTo", "description", "securityLabel", "content", "context",
        ],
        ResourceType::Immunization => &[
            "identifier", "status", "statusReason", "vaccineCode", "patient", "encounter", "occurrence", "recorded", "primarySource", "reportOrigin",
            "location", "manufacturer", "lotNumber", "expirationDate", "site", "route", "doseQuantity", "performer", "note", "reasonCode",
            "reasonReference", "isSubpotent", "subpotentReason", "education", "programEligibility", "fundingSource", "reaction", "protocolApplied",
        ],
        ResourceType::Coverage => &[
            "identifier", "status", "type", "policyHolder", "subscriber", "subscriberId", "beneficiary", "dependent", "relationship", "period", "payor",
            "class", "order", "network", "costToBeneficiary", "subrogation", "contract",
        ],
    }
}

/// A set of redaction paths, applied to resources in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redactor {
    by_type: BTreeMap<String, Vec<Vec<String>>>,
}

impl Redactor {
    /// A redactor for `paths` (duplicates are kept once).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a RedactPath>) -> Redactor {
        let mut by_type: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        for p in paths {
            let list = by_type.entry(p.resource_type.clone()).or_default();
            if !list.contains(&p.elements) {
                list.push(p.elements.clone());
            }
        }
        Redactor { by_type }
    }

    /// Whether nothing is redacted.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// The paths, as `Type.a.b` strings.
    pub fn paths(&self) -> Vec<String> {
        self.by_type.iter().flat_map(|(t, ps)| ps.iter().map(move |p| format!("{t}.{}", p.join(".")))).collect()
    }

    /// Whether a path on `resource_type` covers what a search on top-level `element`
    /// reads: the path starts at `element` (or a choice form of it, or `element` is a
    /// choice form of the path's first element), and either removes it whole, or `sub`
    /// is `None` (the search reads the whole element), or the path's second segment is
    /// `sub` (a reference search reads only `reference`, so `Observation.subject.display`
    /// does not block searching by patient).
    pub fn redacts_element(&self, resource_type: &str, element: &str, sub: Option<&str>) -> bool {
        self.by_type.get(resource_type).is_some_and(|ps| {
            ps.iter().any(|p| match p.as_slice() {
                [] => false,
                [first, rest @ ..] => {
                    (first == element || choice_variant(first, element) || choice_variant(element, first))
                        && (rest.is_empty() || sub.is_none_or(|s| rest.first().is_some_and(|r| r == s)))
                }
            })
        })
    }

    /// Removes every redacted element from `value` and from every resource embedded in
    /// it. Returns how many elements were removed (narratives included).
    pub fn apply(&self, value: &mut Value) -> usize {
        if self.is_empty() {
            return 0;
        }
        self.walk(value, 0)
    }

    fn walk(&self, v: &mut Value, depth: usize) -> usize {
        if depth > MAX_DEPTH {
            *v = Value::Null;
            return 1;
        }
        match v {
            Value::Array(items) => items.iter_mut().map(|i| self.walk(i, depth + 1)).sum(),
            Value::Object(obj) => {
                let mut removed = 0;
                let paths = obj.get("resourceType").and_then(Value::as_str).and_then(|t| self.by_type.get(t));
                if let Some(paths) = paths {
                    for p in paths {
                        removed += remove_path(obj, p, depth);
                    }
                    if obj.remove("text").is_some() {
                        removed += 1;
                    }
                }
                for child in obj.values_mut() {
                    removed += self.walk(child, depth + 1);
                }
                removed
            }
            _ => 0,
        }
    }
}

fn remove_path(obj: &mut Map<String, Value>, path: &[String], depth: usize) -> usize {
    let Some((head, rest)) = path.split_first() else {
        return 0;
    };
    let keys: Vec<String> = obj.keys().filter(|k| *k == head || choice_variant(k, head) || k.strip_prefix('_').is_some_and(|b| b == head || choice_variant(b, head))).cloned().collect();
    let mut removed = 0;
    for k in keys {
        if rest.is_empty() {
            if obj.remove(&k).is_some() {
                removed += 1;
            }
        } else if let Some(child) = obj.get_mut(&k) {
            removed += remove_below(child, rest, depth + 1);
        }
    }
    removed
}

fn remove_below(v: &mut Value, path: &[String], depth: usize) -> usize {
    if depth > MAX_DEPTH {
        return 0;
    }
    match v {
        Value::Array(items) => items.iter_mut().map(|i| remove_below(i, path, depth + 1)).sum(),
        Value::Object(o) => remove_path(o, path, depth),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor(paths: &[&str]) -> Redactor {
        let ps: Vec<RedactPath> = paths.iter().map(|p| RedactPath::parse(p).unwrap()).collect();
        Redactor::new(&ps)
    }

    fn patient() -> Value {
        json!({"resourceType":"Patient","id":"pt-1001",
            "text":{"status":"generated","div":"<div>Jane Doe, 1 Main St</div>"},
            "identifier":[{"system":"urn:mrn","value":"42"}],
            "name":[{"family":"Doe","given":["Jane"]},{"family":"Roe","given":["J"],"_given":[{"extension":[]}]}],
            "telecom":[{"system":"phone","value":"555-0100"}],"_birthDate":{"extension":[]},"birthDate":"1970-01-01",
            "address":[{"line":["1 Main St"],"city":"Springfield"}],"deceasedBoolean":false,"gender":"female"})
    }

    #[test]
    fn paths_parse_and_protect_ids() {
        assert_eq!(RedactPath::parse("Patient.telecom").unwrap().elements, vec!["telecom"]);
        assert_eq!(RedactPath::parse("Patient.name.given").unwrap().elements, vec!["name", "given"]);
        for bad in ["Patient", "patient.telecom", "Patient.", ".telecom", "Patient..x", "Patient.tele com", "Patient.a-b", ""] {
            assert_eq!(RedactPath::parse(bad), Err(RedactPathError::Malformed), "{bad}");
        }
        assert_eq!(RedactPath::parse("Patient.id"), Err(RedactPathError::Protected));
        assert_eq!(RedactPath::parse("Observation.resourceType"), Err(RedactPathError::Protected));
        assert!(RedactPath::parse("Patient.telecom").unwrap().is_known());
        assert!(RedactPath::parse("Patient.deceasedBoolean").unwrap().is_known());
        assert!(RedactPath::parse("Observation.text").unwrap().is_known());
        assert!(!RedactPath::parse("Patient.telecoms").unwrap().is_known());
        assert!(!RedactPath::parse("Practitioner.telecom").unwrap().is_known(), "outside the eleven: accepted but reported");
    }

    #[test]
    fn top_level_elements_are_removed_with_their_companions_and_the_narrative() {
        let r = redactor(&["Patient.telecom", "Patient.address", "Patient.birthDate", "Patient.deceased"]);
        let mut p = patient();
        let n = r.apply(&mut p);
        assert_eq!(p.get("telecom"), None);
        assert_eq!(p.get("address"), None);
        assert_eq!(p.get("birthDate"), None);
        assert_eq!(p.get("_birthDate"), None);
        assert_eq!(p.get("deceasedBoolean"), None);
        assert_eq!(p.get("text"), None, "the narrative repeats redacted data");
        assert_eq!(p["gender"], "female");
        assert_eq!(p["name"][0]["family"], "Doe");
        assert_eq!(n, 6);
    }

    #[test]
    fn nested_paths_go_through_arrays() {
        let r = redactor(&["Patient.name.given"]);
        let mut p = patient();
        r.apply(&mut p);
        assert_eq!(p["name"], json!([{"family":"Doe"},{"family":"Roe"}]));
        assert_eq!(p["telecom"][0]["value"], "555-0100");
    }

    #[test]
    fn other_types_are_untouched_and_embedded_resources_are_redacted() {
        let r = redactor(&["Patient.telecom"]);
        let mut obs = json!({"resourceType":"Observation","id":"o","telecom":"not a real element","text":{"div":"x"},
            "contained":[{"resourceType":"Patient","id":"c1","telecom":[{"value":"555"}],"gender":"male"}]});
        let n = r.apply(&mut obs);
        assert_eq!(n, 1);
        assert_eq!(obs["telecom"], "not a real element");
        assert_eq!(obs["text"]["div"], "x", "an Observation's narrative is kept: no path applies to it");
        assert_eq!(obs["contained"][0], json!({"resourceType":"Patient","id":"c1","gender":"male"}));
        let mut bundle = json!({"resourceType":"Bundle","entry":[{"resource":patient()}]});
        r.apply(&mut bundle);
        assert_eq!(bundle["entry"][0]["resource"].get("telecom"), None);
    }

    #[test]
    fn choice_forms_are_exact() {
        let r = redactor(&["Encounter.class"]);
        let mut e = json!({"resourceType":"Encounter","id":"e","class":{"code":"AMB"},"classHistory":[{"class":{"code":"IMP"}}]});
        r.apply(&mut e);
        assert_eq!(e.get("class"), None);
        assert!(e.get("classHistory").is_some(), "classHistory is another element, not a choice form of class");
        assert!(r.redacts_element("Encounter", "class", None) && !r.redacts_element("Encounter", "classHistory", None));
        let v = redactor(&["Observation.value", "Observation.subject.display", "Patient.name.family"]);
        assert!(v.redacts_element("Observation", "valueQuantity", None));
        assert!(!v.redacts_element("Observation", "subject", Some("reference")), "a display redaction does not block a reference search");
        assert!(v.redacts_element("Observation", "subject", None));
        assert!(v.redacts_element("Patient", "name", None), "searching a name reads the family part");
    }

    #[test]
    fn excessive_depth_is_cut() {
        let r = redactor(&["Patient.telecom"]);
        let mut v = json!(null);
        for _ in 0..(MAX_DEPTH + 10) {
            v = json!([v]);
        }
        assert!(r.apply(&mut v) >= 1);
        assert_eq!(redactor(&[]).apply(&mut patient()), 0);
    }
}
