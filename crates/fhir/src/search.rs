//! Search requests: a builder with typed parameters per resource type, and how a search
//! becomes one or more query strings under a connection's [`SearchProfile`].
//!
//! The gateway passes the agent's name/value pairs ([`Search::from_pairs`]); code in
//! this workspace can use the typed methods ([`Search::patient`], [`Search::category`],
//! [`Search::date`], …), which check that the parameter exists for the type and that the
//! value has the right shape. A `patient` parameter (typed, or a raw pair whose value is
//! `{id}` or `Patient/{id}`) is kept as a logical patient reference and written the way
//! the connection needs (`patient={id}`, `patient=Patient/{id}` or
//! `subject=Patient/{id}`).
//!
//! Values are percent-encoded for the query: `&`, `=`, `+`, `#`, `%`, `|`, spaces,
//! control and non-ASCII characters are escaped; `/`, `:` and `,` are kept readable.

use crate::profile::SearchProfile;
use medicodax_wire::{FhirId, ResourceType};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::fmt;

/// What is escaped in a query name or value (see the module documentation).
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Parameters every type accepts.
const COMMON: &[&str] = &["_id", "_count", "_lastUpdated", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total"];

/// The search parameters the client knows for `t` (US Core 6.1 plus what Epic and
/// eClinicalWorks declare), besides the common `_id`, `_count`, `_lastUpdated`, ….
pub fn known_parameters(t: ResourceType) -> &'static [&'static str] {
    match t {
        ResourceType::Patient => &[
            "identifier", "name", "family", "given", "birthdate", "gender", "phone", "email", "telecom", "address",
            "address-postalcode", "active", "death-date", "general-practitioner", "organization",
        ],
        ResourceType::Encounter => &[
            "patient", "subject", "date", "status", "class", "type", "identifier", "location", "practitioner", "participant",
            "reason-code", "service-provider", "account", "episode-of-care",
        ],
        ResourceType::Condition => &[
            "patient", "subject", "category", "clinical-status", "verification-status", "code", "encounter", "onset-date",
            "abatement-date", "recorded-date", "asserted-date", "severity",
        ],
        ResourceType::Procedure => &["patient", "subject", "date", "code", "status", "encounter", "category", "performer", "reason-code"],
        ResourceType::Observation => &[
            "patient", "subject", "category", "code", "date", "status", "encounter", "identifier", "value-quantity",
            "value-concept", "value-string", "combo-code", "component-code", "performer", "based-on", "_since",
        ],
        ResourceType::MedicationRequest => &[
            "patient", "subject", "intent", "status", "authoredon", "encounter", "category", "code", "medication",
            "intended-dispenser", "requester",
        ],
        ResourceType::AllergyIntolerance => &[
            "patient", "clinical-status", "verification-status", "encounter", "category", "code", "criticality", "date", "onset", "type",
        ],
        ResourceType::DiagnosticReport => &[
            "patient", "subject", "category", "code", "date", "status", "encounter", "issued", "result", "based-on", "performer",
        ],
        ResourceType::DocumentReference => &[
            "patient", "subject", "category", "type", "date", "status", "encounter", "period", "contenttype", "relatesto", "author",
        ],
        ResourceType::Immunization => &[
            "patient", "date", "status", "encounter", "vaccine-code", "lot-number", "target-disease", "performer", "location",
        ],
        ResourceType::Coverage => &["patient", "beneficiary", "subscriber", "payor", "status", "type", "identifier", "policy-holder"],
    }
}

/// True when `name` (without a `:modifier`) is a parameter the client knows for `t`.
pub fn is_known_parameter(t: ResourceType, name: &str) -> bool {
    let base = name.split(':').next().unwrap_or(name);
    COMMON.contains(&base) || known_parameters(t).contains(&base)
}

/// A date comparison prefix (FHIR search `date` and `_lastUpdated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatePrefix {
    /// Equal (no prefix is sent).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater or equal.
    Ge,
    /// Less or equal.
    Le,
    /// Starts after.
    Sa,
    /// Ends before.
    Eb,
}

impl DatePrefix {
    const fn as_str(self) -> &'static str {
        match self {
            DatePrefix::Eq => "",
            DatePrefix::Ne => "ne",
            DatePrefix::Gt => "gt",
            DatePrefix::Lt => "lt",
            DatePrefix::Ge => "ge",
            DatePrefix::Le => "le",
            DatePrefix::Sa => "sa",
            DatePrefix::Eb => "eb",
        }
    }
}

/// A token search value: `code` or `system|code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    system: Option<String>,
    code: String,
}

impl Token {
    /// A code in any system.
    pub fn code(code: &str) -> Self {
        Self { system: None, code: code.to_owned() }
    }

    /// A code in `system`.
    pub fn system_code(system: &str, code: &str) -> Self {
        Self { system: Some(system.to_owned()), code: code.to_owned() }
    }

    fn render(&self) -> String {
        match &self.system {
            Some(s) => format!("{s}|{}", self.code),
            None => self.code.clone(),
        }
    }
}

/// One parameter of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Param {
    /// The patient the search is about, written per profile.
    Patient(FhirId),
    /// Anything else, as given.
    Raw(String, String),
}

/// A search of one resource type, built from pairs or typed methods.
#[derive(Clone, PartialEq, Eq)]
pub struct Search {
    resource_type: ResourceType,
    params: Vec<Param>,
    max_results: Option<usize>,
    problems: Vec<String>,
}

/// A search built with a typed method that does not fit its type, or a bad value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {resource_type} search: {}", problems.join("; "))]
pub struct InvalidSearch {
    /// The searched type.
    pub resource_type: ResourceType,
    /// What is wrong, one entry per problem.
    pub problems: Vec<String>,
}

impl fmt::Debug for Search {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parameter values may name a person; only names are shown.
        let names: Vec<&str> = self
            .params
            .iter()
            .map(|p| match p {
                Param::Patient(_) => "patient",
                Param::Raw(n, _) => n.as_str(),
            })
            .collect();
        f.debug_struct("Search").field("type", &self.resource_type).field("params", &names).field("max_results", &self.max_results).finish()
    }
}

impl Search {
    /// An empty search of `t`.
    pub fn new(t: ResourceType) -> Self {
        Self { resource_type: t, params: Vec::new(), max_results: None, problems: Vec::new() }
    }

    /// A search of `t` with the agent's name/value pairs, in order (see [`Search::param`]).
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(t: ResourceType, pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        pairs.into_iter().fold(Self::new(t), |s, (n, v)| s.param(n.as_ref(), v.as_ref()))
    }

    /// The searched type.
    pub fn resource_type(&self) -> ResourceType {
        self.resource_type
    }

    /// The most matches collected (the walk stops there and reports itself incomplete if
    /// the server had more).
    pub fn max_results(&self) -> Option<usize> {
        self.max_results
    }

    /// Adds a parameter as given. A `patient` value that is `{id}` or `Patient/{id}` is
    /// kept as the logical patient parameter, written per the connection's profile.
    pub fn param(mut self, name: &str, value: &str) -> Self {
        if name == "patient" {
            let id = value.strip_prefix("Patient/").unwrap_or(value);
            if let Ok(id) = FhirId::new(id) {
                self.params.push(Param::Patient(id));
                return self;
            }
        }
        self.params.push(Param::Raw(name.to_owned(), value.to_owned()));
        self
    }

    fn typed(mut self, name: &str, value: String) -> Self {
        if !is_known_parameter(self.resource_type, name) {
            self.problems.push(format!("{} has no search parameter {name:?}", self.resource_type));
        }
        self.params.push(Param::Raw(name.to_owned(), value));
        self
    }

    /// The patient whose resources are searched (not for `Patient` itself: use [`Search::id`]).
    pub fn patient(mut self, id: &FhirId) -> Self {
        if !is_known_parameter(self.resource_type, "patient") {
            self.problems.push(format!("{} has no search parameter \"patient\"; use _id", self.resource_type));
        }
        self.params.push(Param::Patient(id.clone()));
        self
    }

    /// `_id={id}`.
    pub fn id(self, id: &FhirId) -> Self {
        self.typed("_id", id.as_str().to_owned())
    }

    /// `encounter=Encounter/{id}`.
    pub fn encounter(self, id: &FhirId) -> Self {
        self.typed("encounter", format!("Encounter/{id}"))
    }

    /// `category={token}`.
    pub fn category(self, token: &Token) -> Self {
        self.typed("category", token.render())
    }

    /// `code={token}`.
    pub fn code(self, token: &Token) -> Self {
        self.typed("code", token.render())
    }

    /// `type={token}` (Encounter, DocumentReference, Coverage, AllergyIntolerance).
    pub fn type_(self, token: &Token) -> Self {
        self.typed("type", token.render())
    }

    /// `status={code}`.
    pub fn status(self, code: &str) -> Self {
        self.typed("status", code.to_owned())
    }

    /// `clinical-status={code}` (Condition, AllergyIntolerance).
    pub fn clinical_status(self, code: &str) -> Self {
        self.typed("clinical-status", code.to_owned())
    }

    /// `intent={code}` (MedicationRequest).
    pub fn intent(self, code: &str) -> Self {
        self.typed("intent", code.to_owned())
    }

    /// `date={prefix}{value}`; `value` is a FHIR date or dateTime (`2024`, `2024-05-01`,
    /// `2024-05-01T10:00:00Z`).
    pub fn date(self, prefix: DatePrefix, value: &str) -> Self {
        self.date_param("date", prefix, value)
    }

    /// `_lastUpdated={prefix}{value}`.
    pub fn last_updated(self, prefix: DatePrefix, value: &str) -> Self {
        self.date_param("_lastUpdated", prefix, value)
    }

    fn date_param(mut self, name: &str, prefix: DatePrefix, value: &str) -> Self {
        if !looks_like_fhir_date(value) {
            self.problems.push(format!("{name} value is not a FHIR date or dateTime (expected e.g. 2024-05-01)"));
        }
        self.typed(name, format!("{}{value}", prefix.as_str()))
    }

    /// `_count={n}`: the page size asked of the server.
    pub fn count(mut self, n: u32) -> Self {
        if n == 0 {
            self.problems.push("_count must be at least 1".to_owned());
        }
        self.typed("_count", n.to_string())
    }

    /// Stops the walk after `n` matches.
    pub fn limit(mut self, n: usize) -> Self {
        self.max_results = Some(n);
        self
    }

    /// Problems found by the typed methods, if any.
    pub fn check(&self) -> Result<(), InvalidSearch> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidSearch { resource_type: self.resource_type, problems: self.problems.clone() })
        }
    }

    /// Names of parameters the client does not know for this type (for the gateway's
    /// allow-list; the client itself sends them as given).
    pub fn unknown_parameters(&self) -> Vec<String> {
        self.params
            .iter()
            .filter_map(|p| match p {
                Param::Raw(n, _) if !is_known_parameter(self.resource_type, n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// The query strings this search becomes under `profile`: one, or one per category
    /// when the profile splits this type and the search names no `category`, `code` or `_id`.
    pub fn plan(&self, profile: &SearchProfile) -> Vec<PlannedQuery> {
        let t = self.resource_type;
        let mut pairs: Vec<(String, String)> = self
            .params
            .iter()
            .map(|p| match p {
                Param::Patient(id) if profile.subject_instead_of_patient.contains(&t) => ("subject".to_owned(), format!("Patient/{id}")),
                Param::Patient(id) if profile.patient_as_reference => ("patient".to_owned(), format!("Patient/{id}")),
                Param::Patient(id) => ("patient".to_owned(), id.as_str().to_owned()),
                Param::Raw(n, v) => (n.clone(), v.clone()),
            })
            .collect();
        if let Some(n) = profile.page_size
            && !pairs.iter().any(|(name, _)| name == "_count")
        {
            pairs.push(("_count".to_owned(), n.to_string()));
        }
        let names_filter = pairs.iter().any(|(name, _)| {
            let base = name.split(':').next().unwrap_or(name);
            matches!(base, "category" | "code" | "_id")
        });
        match profile.split_for(t) {
            Some(categories) if !categories.is_empty() && !names_filter => categories
                .iter()
                .map(|c| {
                    let mut p = pairs.clone();
                    p.push(("category".to_owned(), c.clone()));
                    PlannedQuery { resource_type: t, category: Some(c.clone()), query: encode(&p) }
                })
                .collect(),
            _ => vec![PlannedQuery { resource_type: t, category: None, query: encode(&pairs) }],
        }
    }
}

/// One query to send: `{base}/{type}?{query}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedQuery {
    /// The searched type.
    pub resource_type: ResourceType,
    /// The category this query was split for, if it was.
    pub category: Option<String>,
    /// The encoded query string (without `?`).
    pub query: String,
}

impl PlannedQuery {
    /// `{type}?{query}` (or `{type}` with no parameters), relative to the base.
    pub fn relative(&self) -> String {
        if self.query.is_empty() { self.resource_type.as_str().to_owned() } else { format!("{}?{}", self.resource_type, self.query) }
    }
}

fn encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| format!("{}={}", utf8_percent_encode(n, QUERY_VALUE), utf8_percent_encode(v, QUERY_VALUE)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or a dateTime: four digits first, then only the
/// characters a FHIR dateTime uses.
fn looks_like_fhir_date(v: &str) -> bool {
    v.len() >= 4
        && v.len() <= 35
        && v.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && v.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'T' | b'Z' | b'+' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt() -> FhirId {
        FhirId::new("pt-1001").unwrap()
    }

    #[test]
    fn typed_parameters_render() {
        let s = Search::new(ResourceType::Observation)
            .patient(&pt())
            .category(&Token::system_code("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory"))
            .date(DatePrefix::Ge, "2024-01-01")
            .date(DatePrefix::Le, "2024-12-31T23:59:59+00:00")
            .count(50);
        assert!(s.check().is_ok());
        let q = s.plan(&SearchProfile::generic());
        assert_eq!(q.len(), 1);
        assert_eq!(
            q[0].relative(),
            "Observation?patient=pt-1001&category=http://terminology.hl7.org/CodeSystem/observation-category%7Claboratory&date=ge2024-01-01&date=le2024-12-31T23:59:59%2B00:00&_count=50"
        );
    }

    #[test]
    fn typed_parameters_are_checked_per_type() {
        let e = Search::new(ResourceType::Patient).patient(&pt()).category(&Token::code("x")).date(DatePrefix::Eq, "yesterday").check().unwrap_err();
        assert_eq!(e.resource_type, ResourceType::Patient);
        assert_eq!(e.problems.len(), 4, "{:?}", e.problems);
        assert!(e.problems[0].contains("no search parameter \"patient\""));
        assert!(e.problems[1].contains("\"category\""));
        assert!(e.problems[2].contains("not a FHIR date"));
        assert!(e.problems[3].contains("\"date\""));
        assert!(Search::new(ResourceType::Coverage).patient(&pt()).check().is_ok());
        assert!(Search::new(ResourceType::Condition).clinical_status("active").encounter(&pt()).check().is_ok());
        assert!(Search::new(ResourceType::Condition).intent("order").check().is_err());
        assert!(Search::new(ResourceType::Observation).count(0).check().is_err());
    }

    #[test]
    fn raw_pairs_are_encoded_not_injected() {
        let s = Search::from_pairs(ResourceType::Patient, [("name", "O'Brien & Co=1+2#x"), ("_id", "a,b")]);
        assert_eq!(s.plan(&SearchProfile::generic())[0].query, "name=O'Brien%20%26%20Co%3D1%2B2%23x&_id=a,b");
        let s = Search::from_pairs(ResourceType::Patient, [("name", "Muñoz")]);
        assert_eq!(s.plan(&SearchProfile::generic())[0].query, "name=Mu%C3%B1oz");
        assert_eq!(Search::new(ResourceType::Patient).plan(&SearchProfile::generic())[0].relative(), "Patient");
        assert_eq!(Search::from_pairs(ResourceType::Patient, [("foo", "1"), ("name:exact", "x")]).unknown_parameters(), vec!["foo"]);
    }

    #[test]
    fn patient_is_written_per_profile() {
        for raw in ["pt-1001", "Patient/pt-1001"] {
            let s = Search::from_pairs(ResourceType::Observation, [("patient", raw)]);
            assert_eq!(s.plan(&SearchProfile::generic())[0].query, "patient=pt-1001");
            assert_eq!(s.plan(&SearchProfile::generic().with_patient_as_reference())[0].query, "patient=Patient/pt-1001");
            assert_eq!(s.plan(&SearchProfile::observation_by_subject())[0].query, "subject=Patient/pt-1001");
        }
        // Only the configured types switch to subject.
        let c = Search::from_pairs(ResourceType::Condition, [("patient", "pt-1001")]);
        assert_eq!(c.plan(&SearchProfile::observation_by_subject())[0].query, "patient=pt-1001");
        // A value that is not a single patient id stays as given.
        let s = Search::from_pairs(ResourceType::Observation, [("patient", "pt-1,pt-2")]);
        assert_eq!(s.plan(&SearchProfile::observation_by_subject())[0].query, "patient=pt-1,pt-2");
    }

    #[test]
    fn category_split_only_without_category_code_or_id() {
        let p = SearchProfile::observation_needs_category();
        let bare = Search::new(ResourceType::Observation).patient(&pt()).plan(&p);
        assert_eq!(
            bare.iter().map(PlannedQuery::relative).collect::<Vec<_>>(),
            vec![
                "Observation?patient=pt-1001&_count=50&category=laboratory",
                "Observation?patient=pt-1001&_count=50&category=vital-signs",
                "Observation?patient=pt-1001&_count=50&category=social-history",
                "Observation?patient=pt-1001&_count=50&category=survey",
                "Observation?patient=pt-1001&_count=50&category=exam",
                "Observation?patient=pt-1001&_count=50&category=procedure",
                "Observation?patient=pt-1001&_count=50&category=imaging",
            ]
        );
        assert_eq!(bare[1].category.as_deref(), Some("vital-signs"));
        for (n, v) in [("category", "laboratory"), ("code", "http://loinc.org|8867-4"), ("code:text", "pulse"), ("_id", "obs-1")] {
            let q = Search::new(ResourceType::Observation).patient(&pt()).param(n, v).plan(&p);
            assert_eq!(q.len(), 1, "{n}");
            assert_eq!(q[0].category, None);
        }
        assert_eq!(Search::new(ResourceType::Condition).patient(&pt()).plan(&p).len(), 1);
        let own_count = Search::new(ResourceType::Observation).patient(&pt()).count(10).plan(&p);
        assert!(own_count[0].query.starts_with("patient=pt-1001&_count=10&category="));
    }

    #[test]
    fn debug_hides_values() {
        let s = Search::from_pairs(ResourceType::Patient, [("name", "Rivera")]);
        let d = format!("{s:?}");
        assert!(d.contains("name") && !d.contains("Rivera"), "{d}");
    }
}
