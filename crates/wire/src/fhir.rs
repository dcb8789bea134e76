//! The eleven FHIR R4 resource types MEDICODAX serves, and the FHIR id grammar.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// One of the eleven FHIR R4 resource types behind the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// Demographics.
    Patient,
    /// A visit or admission.
    Encounter,
    /// A diagnosis or problem.
    Condition,
    /// A procedure performed.
    Procedure,
    /// A measurement, lab result, vital sign or finding.
    Observation,
    /// A prescription.
    MedicationRequest,
    /// An allergy or intolerance.
    AllergyIntolerance,
    /// A report grouping results.
    DiagnosticReport,
    /// A document, such as a clinical note.
    DocumentReference,
    /// A vaccination.
    Immunization,
    /// Insurance coverage.
    Coverage,
}

impl ResourceType {
    /// All eleven, in a stable order.
    pub const ALL: [ResourceType; 11] = [
        ResourceType::Patient,
        ResourceType::Encounter,
        ResourceType::Condition,
        ResourceType::Procedure,
        ResourceType::Observation,
        ResourceType::MedicationRequest,
        ResourceType::AllergyIntolerance,
        ResourceType::DiagnosticReport,
        ResourceType::DocumentReference,
        ResourceType::Immunization,
        ResourceType::Coverage,
    ];

    /// The FHIR type name, e.g. `"AllergyIntolerance"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceType::Patient => "Patient",
            ResourceType::Encounter => "Encounter",
            ResourceType::Condition => "Condition",
            ResourceType::Procedure => "Procedure",
            ResourceType::Observation => "Observation",
            ResourceType::MedicationRequest => "MedicationRequest",
            ResourceType::AllergyIntolerance => "AllergyIntolerance",
            ResourceType::DiagnosticReport => "DiagnosticReport",
            ResourceType::DocumentReference => "DocumentReference",
            ResourceType::Immunization => "Immunization",
            ResourceType::Coverage => "Coverage",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the eleven resource types (matching is case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource type {0:?}: expected one of Patient, Encounter, Condition, Procedure, Observation, MedicationRequest, AllergyIntolerance, DiagnosticReport, DocumentReference, Immunization, Coverage (case-sensitive)")]
pub struct UnknownResourceType(pub String);

impl FromStr for ResourceType {
    type Err = UnknownResourceType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResourceType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownResourceType(s.chars().take(64).collect()))
    }
}

/// A FHIR logical id: `[A-Za-z0-9\-.]{1,64}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FhirId(String);

/// A string that does not match the FHIR id grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FHIR id: {reason}; an id is 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'")]
pub struct InvalidFhirId {
    /// What was wrong.
    pub reason: &'static str,
}

impl FhirId {
    /// Checks `s` against the id grammar.
    pub fn new(s: &str) -> Result<Self, InvalidFhirId> {
        if s.is_empty() {
            return Err(InvalidFhirId { reason: "it is empty" });
        }
        if s.len() > 64 {
            return Err(InvalidFhirId { reason: "it is longer than 64 characters" });
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(InvalidFhirId { reason: "it holds a character outside the grammar" });
        }
        if s.bytes().all(|b| b == b'.') {
            // `.` and `..` are URL path segments: `Patient/..` would address the base.
            return Err(InvalidFhirId { reason: "it is only dots, which URLs read as path segments" });
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FhirId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for FhirId {
    type Err = InvalidFhirId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FhirId::new(s)
    }
}

impl<'de> Deserialize<'de> for FhirId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FhirId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_types_round_trip_and_are_case_sensitive() {
        for t in ResourceType::ALL {
            assert_eq!(t.as_str().parse::<ResourceType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::Value::String(t.as_str().into()));
        }
        assert!("allergyintolerance".parse::<ResourceType>().is_err());
        assert!("Specimen".parse::<ResourceType>().is_err());
    }

    #[test]
    fn fhir_id_grammar() {
        assert!(FhirId::new("pt-1001").is_ok());
        assert!(FhirId::new("1.2.840").is_ok(), "dots inside an id are fine");
        assert!(FhirId::new("769f1a0e-1e59-4a73-8263-1aef04848a27").is_ok());
        assert!(FhirId::new(&"a".repeat(64)).is_ok());
        assert_eq!(FhirId::new("").unwrap_err().reason, "it is empty");
        assert!(FhirId::new(&"a".repeat(65)).is_err());
        for bad in ["a/b", "a b", "../x", "a?b", "ä", "a_b", ".", "..", "..."] {
            assert!(FhirId::new(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<FhirId>(r#""x/y""#).is_err());
    }
}
