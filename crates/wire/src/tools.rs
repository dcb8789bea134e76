//! Tool names, arguments and results (DESIGN.md §3.1).
//!
//! Arguments deserialise strictly (`deny_unknown_fields`, FHIR id grammar, the eleven
//! types) so a malformed call is refused with a message naming the field before any
//! policy or upstream work happens. Search parameters are name/value pairs, never a URL.

use crate::fhir::{FhirId, ResourceType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// The tools the gateway offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ToolName {
    /// Read one resource by type and id.
    #[serde(rename = "fhir.read")]
    FhirRead,
    /// Search one resource type with name/value parameters.
    #[serde(rename = "fhir.search")]
    FhirSearch,
    /// An encounter with everything a coder needs from it.
    #[serde(rename = "encounter.bundle")]
    EncounterBundle,
    /// The configured EHR connections and their status.
    #[serde(rename = "connections.list")]
    ConnectionsList,
    /// A coding worksheet handed to the dashboard for a coder's review.
    #[serde(rename = "worksheet.submit")]
    WorksheetSubmit,
}

impl ToolName {
    /// All tools.
    pub const ALL: [ToolName; 5] = [ToolName::FhirRead, ToolName::FhirSearch, ToolName::EncounterBundle, ToolName::ConnectionsList, ToolName::WorksheetSubmit];

    /// The wire name, e.g. `fhir.read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ToolName::FhirRead => "fhir.read",
            ToolName::FhirSearch => "fhir.search",
            ToolName::EncounterBundle => "encounter.bundle",
            ToolName::ConnectionsList => "connections.list",
            ToolName::WorksheetSubmit => "worksheet.submit",
        }
    }

    /// A one-line description for tool listings.
    pub const fn description(self) -> &'static str {
        match self {
            ToolName::FhirRead => "Read one FHIR R4 resource by type and id through an EHR connection.",
            ToolName::FhirSearch => "Search one FHIR R4 resource type with name/value parameters through an EHR connection.",
            ToolName::EncounterBundle => "An encounter with its patient, conditions, procedures, observations, medication requests, diagnostic reports, documents, allergies, immunizations and coverage.",
            ToolName::ConnectionsList => "The configured EHR connections with vendor and status (no secrets).",
            ToolName::WorksheetSubmit => "Submit a coding worksheet for an encounter, for review by a human coder in the dashboard (touches no EHR).",
        }
    }
}

impl fmt::Display for ToolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool name the gateway does not offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tool {0:?}: expected fhir.read, fhir.search, encounter.bundle, connections.list or worksheet.submit")]
pub struct UnknownTool(pub String);

impl FromStr for ToolName {
    type Err = UnknownTool;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ToolName::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownTool(s.chars().take(64).collect()))
    }
}

/// A connection name: 1 to 64 characters from `A-Za-z0-9-_.`.
pub fn valid_connection_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Arguments of `fhir.read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirReadArgs {
    /// The EHR connection name.
    pub connection: String,
    /// The resource type.
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// The resource id.
    pub id: FhirId,
}

/// The most results one `fhir.search` returns.
pub const MAX_SEARCH_RESULTS: u32 = 10_000;

/// Arguments of `fhir.search`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSearchArgs {
    /// The EHR connection name.
    pub connection: String,
    /// The resource type searched.
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// Search parameters as `[name, value]` pairs, in order.
    #[serde(default)]
    pub params: Vec<(String, String)>,
    /// Stop after this many results (default and maximum [`MAX_SEARCH_RESULTS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// Arguments of `encounter.bundle`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncounterBundleArgs {
    /// The EHR connection name.
    pub connection: String,
    /// The encounter id.
    pub encounter: FhirId,
}

/// Arguments of `connections.list` (none).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsListArgs {}

/// The largest worksheet accepted by `worksheet.submit`, in bytes of JSON.
pub const MAX_WORKSHEET_BYTES: usize = 48 * 1024;

/// Arguments of `worksheet.submit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorksheetSubmitArgs {
    /// The EHR connection the encounter came from.
    pub connection: String,
    /// The encounter coded.
    pub encounter: FhirId,
    /// Its patient.
    pub patient: FhirId,
    /// The encounter class code (`AMB`, `EMER`, `IMP`, …).
    pub class: String,
    /// Time the pipeline spent on the encounter, in milliseconds.
    pub pipeline_ms: u64,
    /// The worksheet (the coding pipeline's JSON), at most [`MAX_WORKSHEET_BYTES`].
    pub worksheet: serde_json::Map<String, Value>,
}

/// The result of `worksheet.submit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorksheetStored {
    /// The connection.
    pub connection: String,
    /// The encounter.
    pub encounter: String,
    /// `pending` (new or replaced) or the review status it already had.
    pub status: String,
}

/// Something the caller should know about a result that is not data: an ignored
/// parameter, a page that failed, a type that was withheld.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// A stable machine-readable code, e.g. `operation-outcome`, `page-failed`.
    pub code: String,
    /// A human-readable explanation (never PHI).
    pub detail: String,
}

/// The result of `fhir.search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The matching resources (include-mode entries and OperationOutcomes excluded).
    pub resources: Vec<Value>,
    /// `Bundle.total` from the first page, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// True when the walk stopped before the server's last page.
    pub incomplete: bool,
    /// Non-data notices.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// The result of `encounter.bundle`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncounterBundle {
    /// The encounter.
    pub encounter: Value,
    /// Its patient (absent if withheld).
    pub patient: Option<Value>,
    /// Conditions recorded at this encounter.
    pub conditions: Vec<Value>,
    /// Procedures at this encounter.
    pub procedures: Vec<Value>,
    /// Observations at this encounter.
    pub observations: Vec<Value>,
    /// Medication requests at this encounter.
    pub medication_requests: Vec<Value>,
    /// Diagnostic reports at this encounter.
    pub diagnostic_reports: Vec<Value>,
    /// Documents (clinical notes) of this encounter.
    pub documents: Vec<Value>,
    /// The patient's allergies.
    pub allergies: Vec<Value>,
    /// The patient's immunizations.
    pub immunizations: Vec<Value>,
    /// The patient's coverage.
    pub coverage: Vec<Value>,
    /// Types the caller may not see; listed here rather than failing the call.
    pub withheld: Vec<ResourceType>,
    /// True when some part could not be fetched completely.
    pub incomplete: bool,
    /// Non-data notices.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// One entry of `connections.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// The connection name.
    pub name: String,
    /// `epic`, `eclinicalworks`, `oracle-health`, `athena` or `generic`.
    pub vendor: String,
    /// The FHIR base URL.
    pub fhir_base: String,
    /// `ok`, `no-token-yet`, `failing`.
    pub status: String,
    /// The last error class, if any (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The result of `connections.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionsList {
    /// The connections the caller may use.
    pub connections: Vec<ConnectionInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_names_round_trip() {
        for t in ToolName::ALL {
            assert_eq!(t.as_str().parse::<ToolName>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert!("fhir.delete".parse::<ToolName>().is_err());
    }

    #[test]
    fn search_args_take_pairs_and_refuse_urls_as_fields() {
        let a: FhirSearchArgs = serde_json::from_value(json!({"connection":"c","type":"Observation",
            "params":[["patient","pt-1001"],["category","laboratory"]]})).unwrap();
        assert_eq!(a.params[1], ("category".into(), "laboratory".into()));
        assert!(serde_json::from_value::<FhirSearchArgs>(json!({"connection":"c","type":"Observation","url":"Observation?x"})).is_err());
        assert!(serde_json::from_value::<FhirSearchArgs>(json!({"connection":"c","type":"Observation","params":[["a"]]})).is_err());
        assert!(serde_json::from_value::<FhirSearchArgs>(json!({"connection":"c","type":"Specimen"})).is_err());
    }

    #[test]
    fn read_args_check_the_id() {
        assert!(serde_json::from_value::<FhirReadArgs>(json!({"connection":"c","type":"Patient","id":"../admin"})).is_err());
        let a: FhirReadArgs = serde_json::from_value(json!({"connection":"c","type":"Patient","id":"pt-1001"})).unwrap();
        assert_eq!(a.id.as_str(), "pt-1001");
    }

    #[test]
    fn connection_names() {
        assert!(valid_connection_name("epic-sandbox"));
        assert!(!valid_connection_name(""));
        assert!(!valid_connection_name("a/b"));
    }
}
