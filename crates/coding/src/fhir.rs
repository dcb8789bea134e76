//! Tolerant readers for the FHIR R4 JSON the pipeline receives: every accessor returns
//! `None` or an empty list on an odd shape instead of failing, so no input can panic
//! the worksheet builder.

use serde_json::Value;

/// The ICD-10-CM code system URI.
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
/// The SNOMED CT code system URI.
pub const SNOMED: &str = "http://snomed.info/sct";

/// One coding, as plain strings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Coded {
    /// The code system URI (empty when absent).
    pub system: String,
    /// The code.
    pub code: String,
    /// The display, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// A string member.
pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// An array member (empty when absent or not an array).
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// The resource's `id`.
pub fn id(v: &Value) -> Option<&str> {
    str_at(v, "id")
}

/// The codings of a CodeableConcept.
pub fn codings(concept: &Value) -> Vec<Coded> {
    arr(concept, "coding")
        .iter()
        .filter_map(|c| {
            let code = str_at(c, "code")?.trim();
            (!code.is_empty()).then(|| Coded { system: str_at(c, "system").unwrap_or_default().to_owned(), code: code.to_owned(), display: str_at(c, "display").map(str::to_owned) })
        })
        .collect()
}

/// The best human text of a CodeableConcept: `text`, else the first coding display.
pub fn concept_text(concept: &Value) -> Option<String> {
    if let Some(t) = str_at(concept, "text").map(str::trim).filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    arr(concept, "coding").iter().filter_map(|c| str_at(c, "display")).map(str::trim).find(|d| !d.is_empty()).map(str::to_owned)
}

/// The id a reference points at: `Encounter/abc`, `urn:uuid:abc`, `https://…/Encounter/abc`
/// or `Encounter/abc/_history/2` all give `abc`.
pub fn reference_id(reference: &Value) -> Option<&str> {
    let r = str_at(reference, "reference")?.trim();
    if let Some(u) = r.strip_prefix("urn:uuid:") {
        return Some(u);
    }
    let r = r.split("/_history/").next().unwrap_or(r);
    r.rsplit('/').next().filter(|s| !s.is_empty())
}

/// True if `reference` (a Reference object) points at the resource with this id.
pub fn refers_to(reference: &Value, target_id: &str) -> bool {
    reference_id(reference).is_some_and(|r| r == target_id)
}

/// The first coding code of the codings under `key` (a CodeableConcept or an array of them).
pub fn first_code_of(v: &Value, key: &str, system: Option<&str>) -> Option<String> {
    let member = v.get(key)?;
    let concepts: Vec<&Value> = match member {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    concepts.into_iter().flat_map(codings).find(|c| system.is_none_or(|s| c.system == s)).map(|c| c.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_in_every_form_give_the_id() {
        for r in ["Encounter/e1", "urn:uuid:e1", "https://x.example/fhir/Encounter/e1", "Encounter/e1/_history/3"] {
            assert_eq!(reference_id(&json!({ "reference": r })), Some("e1"), "{r}");
        }
        assert_eq!(reference_id(&json!({ "display": "x" })), None);
        assert_eq!(reference_id(&json!({ "reference": 7 })), None);
        assert_eq!(reference_id(&json!("Encounter/e1")), None, "a bare string is not a Reference");
    }

    #[test]
    fn odd_shapes_give_nothing_instead_of_failing() {
        assert!(codings(&json!({ "coding": "x" })).is_empty());
        assert!(codings(&json!({ "coding": [{ "system": 1 }, { "code": "" }, 5] })).is_empty());
        assert_eq!(concept_text(&json!({ "text": "  ", "coding": [{ "display": "Fever" }] })).as_deref(), Some("Fever"));
        assert_eq!(concept_text(&json!(null)), None);
        assert_eq!(first_code_of(&json!({ "class": { "code": "AMB" } }), "class", None), None, "a Coding is not a CodeableConcept");
        assert_eq!(first_code_of(&json!({ "c": [{ "coding": [{ "system": "s", "code": "1" }] }] }), "c", Some("s")).as_deref(), Some("1"));
    }
}
