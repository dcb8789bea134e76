//! Search parameters: per-type allow-lists, syntax checks and classification.
//!
//! The default allow-list of a type is its US Core 6.1 SHALL/SHOULD search parameters
//! together with what Epic and eClinicalWorks document for it (fact sheet §6), plus
//! `patient`/`subject` where FHIR defines them, and for every type `_id`, `_lastUpdated`,
//! `_count` and `_sort`. Vendor paging parameters (`page`) are not for agents: paging is
//! the FHIR client's job.
//!
//! Refused unless a role grants them through `extra_search_params` (the grant of every
//! party is needed): chained parameters (a `.` in the name, one hop only), `_has`,
//! `_include`, `_revinclude`, `_elements`, `_contained`, `_query`, `_filter`, any other
//! `_` parameter, and parameters not on the list. Extras are matched by exact name:
//! `_include` (also covers `_include:iterate`), `_has` (covers every `_has:…` name), a
//! chained name as written (`subject:Patient.name`), or a plain parameter name.
//!
//! Names are 1–128 characters of `A-Za-z0-9_-.:`; values 1–1024 bytes with no control
//! characters; at most 32 parameters. Values stay values: the FHIR client encodes them as
//! query values; nothing here builds a URL.

use crate::reason::ArgumentError;
use crate::scope::R4_RESOURCE_TYPES;
use medicodax_wire::{FhirId, ResourceType};

/// The most parameters one search may carry.
pub const MAX_PARAMS: usize = 32;
/// The longest parameter name.
pub const MAX_NAME_LEN: usize = 128;
/// The longest parameter value, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// The largest `_count` accepted.
pub const MAX_COUNT: u32 = 1000;

/// The FHIR search parameter type, which fixes the modifiers and value forms accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A coded value: `system|code`.
    Token,
    /// Text: `:exact`, `:contains`.
    String,
    /// A date with an optional prefix (`ge2024-01-01`).
    Date,
    /// A reference: `Type/id` or `id`.
    Reference,
    /// `_id`: FHIR ids.
    Id,
    /// `_count`: a positive integer.
    Count,
    /// `_sort`: allowed parameter names, `-` for descending.
    Sort,
}

use ParamKind::{Date, Reference, String as Str, Token};

const COMMON: &[(&str, ParamKind)] = &[("_id", ParamKind::Id), ("_lastUpdated", Date), ("_count", ParamKind::Count), ("_sort", ParamKind::Sort)];

/// Observation and DiagnosticReport: US Core's `patient`+`category`/`code`/`date`, plus
/// `status`, `encounter` and `identifier` (declared by eClinicalWorks; FHIR defines all).
const RESULT_PARAMS: &[(&str, ParamKind)] = &[
    ("patient", Reference),
    ("subject", Reference),
    ("category", Token),
    ("code", Token),
    ("date", Date),
    ("status", Token),
    ("encounter", Reference),
    ("identifier", Token),
];

/// The default allow-list of `t` (without the common `_id`, `_lastUpdated`, `_count`, `_sort`).
pub fn type_params(t: ResourceType) -> &'static [(&'static str, ParamKind)] {
    match t {
        ResourceType::Patient => &[("identifier", Token), ("name", Str), ("family", Str), ("given", Str), ("birthdate", Date), ("gender", Token), ("phone", Token)],
        ResourceType::Encounter => &[
            ("patient", Reference),
            ("subject", Reference),
            ("date", Date),
            ("status", Token),
            ("class", Token),
            ("type", Token),
            ("identifier", Token),
            ("location", Reference),
            ("practitioner", Reference),
        ],
        ResourceType::Condition => &[
            ("patient", Reference),
            ("subject", Reference),
            ("category", Token),
            ("clinical-status", Token),
            ("code", Token),
            ("encounter", Reference),
            ("onset-date", Date),
            ("recorded-date", Date),
            ("abatement-date", Date),
        ],
        ResourceType::Procedure => &[("patient", Reference), ("subject", Reference), ("date", Date), ("code", Token), ("encounter", Reference), ("status", Token)],
        ResourceType::Observation | ResourceType::DiagnosticReport => RESULT_PARAMS,
        ResourceType::MedicationRequest => &[
            ("patient", Reference),
            ("subject", Reference),
            ("intent", Token),
            ("status", Token),
            ("authoredon", Date),
            ("encounter", Reference),
            ("category", Token),
        ],
        ResourceType::AllergyIntolerance => &[("patient", Reference), ("clinical-status", Token), ("encounter", Reference)],
        ResourceType::DocumentReference => &[
            ("patient", Reference),
            ("subject", Reference),
            ("category", Token),
            ("type", Token),
            ("date", Date),
            ("status", Token),
            ("encounter", Reference),
            ("contenttype", Token),
        ],
        ResourceType::Immunization => &[("patient", Reference), ("date", Date), ("status", Token), ("encounter", Reference)],
        ResourceType::Coverage => &[("patient", Reference)],
    }
}

/// The kind of parameter `name` (no modifier) on `t`, when it is on the default allow-list.
pub fn param_kind(t: ResourceType, name: &str) -> Option<ParamKind> {
    COMMON.iter().chain(type_params(t)).find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// The top-level element(s) a parameter searches, for the redaction check: a parameter
/// may not search an element the caller's roles redact. Choice elements are named by
/// their prefix (`effective` for `effectiveDateTime`).
pub fn param_elements(t: ResourceType, name: &str) -> Vec<String> {
    use ResourceType as R;
    let fixed: &[&str] = match (t, name) {
        (_, "_id") => &["id"],
        (_, "_lastUpdated") => &["meta"],
        (R::Patient, "family" | "given" | "name") => &["name"],
        (R::Patient, "phone" | "email" | "telecom") => &["telecom"],
        (R::Patient, n) if n.starts_with("address") => &["address"],
        (R::Patient, "birthdate") => &["birthDate"],
        (R::Patient, "death-date" | "deceased") => &["deceased"],
        (R::Observation | R::DiagnosticReport, "date") => &["effective"],
        (R::Encounter, "date") => &["period"],
        (R::Procedure, "date") => &["performed"],
        (R::Immunization, "date") => &["occurrence"],
        (R::Condition, "onset-date") => &["onset"],
        (R::Condition, "abatement-date") => &["abatement"],
        (R::MedicationRequest, "authoredon") => &["authoredOn"],
        (R::MedicationRequest, "code") => &["medication"],
        (R::DocumentReference, "contenttype") => &["content"],
        (R::DocumentReference, "encounter") => &["context"],
        (R::Coverage, "patient") => &["beneficiary"],
        (R::AllergyIntolerance | R::Immunization, "patient") => &["patient"],
        (_, "patient") => &["subject"],
        _ => &[],
    };
    if fixed.is_empty() { vec![camel(name)] } else { fixed.iter().map(|s| (*s).to_owned()).collect() }
}

/// `clinical-status` → `clinicalStatus`.
pub(crate) fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        match c {
            '-' => upper = true,
            _ if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            _ => out.push(c),
        }
    }
    out
}

/// What a parameter name is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamClass<'a> {
    /// A plain parameter, with an optional `:modifier`.
    Plain {
        /// The name without modifier.
        base: &'a str,
        /// The modifier, if any.
        modifier: Option<&'a str>,
    },
    /// A chained parameter `ref.param` or `ref:Type.param`.
    Chained {
        /// The reference parameter.
        reference: &'a str,
        /// The explicit target type, if given.
        target: Option<&'a str>,
        /// The parameter searched on the target (may carry a modifier).
        tail: &'a str,
    },
    /// A reverse chain `_has:Type:ref:param`.
    Has {
        /// The type that refers to the searched one.
        target: &'a str,
        /// The parameter searched on that type (after the reference parameter).
        inner: &'a str,
    },
    /// `_include` / `_revinclude`, optionally `:iterate`.
    Include {
        /// `_revinclude`.
        rev: bool,
    },
    /// Any other parameter starting with `_` (result and special parameters).
    Special(&'a str),
}

/// Classifies a (syntactically valid) parameter name.
pub fn classify(name: &str) -> ParamClass<'_> {
    if let Some(rest) = name.strip_prefix("_has:") {
        let mut parts = rest.splitn(3, ':');
        let target = parts.next().unwrap_or("");
        let _reference = parts.next();
        let inner = parts.next().unwrap_or("");
        return ParamClass::Has { target, inner };
    }
    if name == "_include" || name == "_include:iterate" {
        return ParamClass::Include { rev: false };
    }
    if name == "_revinclude" || name == "_revinclude:iterate" {
        return ParamClass::Include { rev: true };
    }
    if let Some((head, tail)) = name.split_once('.') {
        let (reference, target) = match head.split_once(':') {
            Some((r, t)) => (r, Some(t)),
            None => (head, None),
        };
        return ParamClass::Chained { reference, target, tail };
    }
    let (base, modifier) = match name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    if base.starts_with('_') && !COMMON.iter().any(|(n, _)| *n == base) {
        return ParamClass::Special(base);
    }
    ParamClass::Plain { base, modifier }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Checks names and values of `params` for length, characters and count.
pub fn check_syntax(params: &[(String, String)]) -> Result<(), ArgumentError> {
    if params.len() > MAX_PARAMS {
        return Err(ArgumentError::TooManyParams { max: MAX_PARAMS });
    }
    for (index, (name, value)) in params.iter().enumerate() {
        if !valid_name(name) {
            return Err(ArgumentError::BadName { index, max: MAX_NAME_LEN });
        }
        if value.is_empty() || value.len() > MAX_VALUE_LEN {
            return Err(ArgumentError::BadValueLength { index, max: MAX_VALUE_LEN });
        }
        if value.chars().any(char::is_control) {
            return Err(ArgumentError::ControlCharacter { index });
        }
    }
    Ok(())
}

const DATE_PREFIXES: [&str; 9] = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

fn valid_date(v: &str) -> bool {
    let rest = DATE_PREFIXES.iter().find_map(|p| v.strip_prefix(p)).unwrap_or(v);
    rest.as_bytes().first().is_some_and(u8::is_ascii_digit) && rest.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'T' | b'Z' | b'+' | b'.'))
}

/// Whether `modifier` is accepted on a parameter of `kind`.
pub fn modifier_allowed(kind: ParamKind, modifier: &str) -> bool {
    match kind {
        ParamKind::Token => matches!(modifier, "missing" | "not" | "text" | "above" | "below" | "of-type"),
        ParamKind::String => matches!(modifier, "missing" | "exact" | "contains"),
        ParamKind::Date => modifier == "missing",
        ParamKind::Reference => modifier == "missing" || modifier == "identifier" || R4_RESOURCE_TYPES.binary_search(&modifier).is_ok(),
        ParamKind::Id | ParamKind::Count | ParamKind::Sort => false,
    }
}

/// Checks the value of a plain parameter of `kind` (`modifier` already accepted).
pub fn check_value(index: usize, name: &str, kind: ParamKind, modifier: Option<&str>, value: &str) -> Result<(), ArgumentError> {
    let bad = |expected: &'static str| ArgumentError::BadValue { index, name: name.to_owned(), expected };
    if modifier == Some("missing") {
        return if value == "true" || value == "false" { Ok(()) } else { Err(bad("true or false")) };
    }
    let alts = crate::constraint::alternatives(value);
    match kind {
        ParamKind::Date if !alts.iter().all(|a| valid_date(a)) => Err(bad("a date such as 2024-01-31 with an optional prefix eq, ne, gt, lt, ge, le, sa, eb or ap")),
        ParamKind::Id if !alts.iter().all(|a| FhirId::new(a).is_ok()) => Err(bad("FHIR ids separated by commas")),
        ParamKind::Count => match value.parse::<u32>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err(bad("an integer from 1 to 1000")),
        },
        ParamKind::Sort if !alts.iter().all(|a| valid_name(a.strip_prefix('-').unwrap_or(a)) && !a.contains([':', '.'])) => {
            Err(bad("parameter names separated by commas, each optionally prefixed with -"))
        }
        ParamKind::Token if alts.iter().any(|a| a.is_empty() || a == "|") => Err(bad("token values system|code, code, |code or system|")),
        _ => Ok(()),
    }
}

/// Checks an `_include`/`_revinclude` value: `*`, `Type:param` or `Type:param:Target`;
/// for `_include` the source type must be the searched one.
pub fn check_include(index: usize, name: &str, rev: bool, searched: ResourceType, value: &str) -> Result<(), ArgumentError> {
    let bad = |expected: &'static str| ArgumentError::BadValue { index, name: name.to_owned(), expected };
    if value == "*" {
        return Ok(());
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(*t)),
        _ => return Err(bad("*, Type:param or Type:param:TargetType")),
    };
    let well_formed = R4_RESOURCE_TYPES.binary_search(&source).is_ok()
        && valid_name(param)
        && !param.contains('.')
        && target.is_none_or(|t| R4_RESOURCE_TYPES.binary_search(&t).is_ok());
    if !well_formed {
        return Err(bad("*, Type:param or Type:param:TargetType"));
    }
    if !rev && source != searched.as_str() {
        return Err(bad("an include whose source type is the searched type"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_follow_us_core() {
        assert_eq!(param_kind(ResourceType::Observation, "category"), Some(Token));
        assert_eq!(param_kind(ResourceType::Observation, "date"), Some(Date));
        assert_eq!(param_kind(ResourceType::Coverage, "_count"), Some(ParamKind::Count));
        assert_eq!(param_kind(ResourceType::Coverage, "status"), None);
        assert_eq!(param_kind(ResourceType::AllergyIntolerance, "subject"), None, "AllergyIntolerance has no subject parameter");
        assert_eq!(param_kind(ResourceType::Patient, "page"), None, "paging is the client's");
        for t in ResourceType::ALL {
            assert_eq!(param_kind(t, "_id"), Some(ParamKind::Id));
            if t != ResourceType::Patient {
                assert_eq!(param_kind(t, "patient"), Some(Reference), "{t}");
            }
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify("code:text"), ParamClass::Plain { base: "code", modifier: Some("text") });
        assert_eq!(classify("subject.name"), ParamClass::Chained { reference: "subject", target: None, tail: "name" });
        assert_eq!(classify("subject:Patient.name"), ParamClass::Chained { reference: "subject", target: Some("Patient"), tail: "name" });
        assert_eq!(classify("_has:Observation:patient:code"), ParamClass::Has { target: "Observation", inner: "code" });
        assert_eq!(classify("_include"), ParamClass::Include { rev: false });
        assert_eq!(classify("_revinclude:iterate"), ParamClass::Include { rev: true });
        assert_eq!(classify("_elements"), ParamClass::Special("_elements"));
        assert_eq!(classify("_filter"), ParamClass::Special("_filter"));
        assert_eq!(classify("_lastUpdated"), ParamClass::Plain { base: "_lastUpdated", modifier: None });
    }

    #[test]
    fn syntax_limits() {
        let p = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert_eq!(check_syntax(&p("name", "Smith")), Ok(()));
        assert_eq!(check_syntax(&p("", "x")), Err(ArgumentError::BadName { index: 0, max: 128 }));
        assert_eq!(check_syntax(&p("na me", "x")), Err(ArgumentError::BadName { index: 0, max: 128 }));
        assert_eq!(check_syntax(&p("name&x", "x")), Err(ArgumentError::BadName { index: 0, max: 128 }));
        assert_eq!(check_syntax(&p(&"a".repeat(129), "x")), Err(ArgumentError::BadName { index: 0, max: 128 }));
        assert_eq!(check_syntax(&p("name", "")), Err(ArgumentError::BadValueLength { index: 0, max: 1024 }));
        assert_eq!(check_syntax(&p("name", &"x".repeat(1025))), Err(ArgumentError::BadValueLength { index: 0, max: 1024 }));
        assert_eq!(check_syntax(&p("name", "a\nb")), Err(ArgumentError::ControlCharacter { index: 0 }));
        assert_eq!(check_syntax(&p("name", "a&b=c#d")), Ok(()), "URL syntax in a value is just a value");
        let many: Vec<(String, String)> = (0..33).map(|i| ("name".to_owned(), i.to_string())).collect();
        assert_eq!(check_syntax(&many), Err(ArgumentError::TooManyParams { max: 32 }));
    }

    #[test]
    fn values_by_kind() {
        assert!(check_value(0, "date", Date, None, "ge2024-01-01").is_ok());
        assert!(check_value(0, "date", Date, None, "2024-01-01T10:00:00+02:00,le2025").is_ok());
        assert!(check_value(0, "date", Date, None, "xx2024").is_err());
        assert!(check_value(0, "date", Date, None, "ge").is_err());
        assert!(check_value(0, "_count", ParamKind::Count, None, "50").is_ok());
        assert!(check_value(0, "_count", ParamKind::Count, None, "0").is_err());
        assert!(check_value(0, "_count", ParamKind::Count, None, "+5").is_err());
        assert!(check_value(0, "_count", ParamKind::Count, None, "1001").is_err());
        assert!(check_value(0, "_id", ParamKind::Id, None, "a,b-1").is_ok());
        assert!(check_value(0, "_id", ParamKind::Id, None, "a/b").is_err());
        assert!(check_value(0, "_sort", ParamKind::Sort, None, "-date,code").is_ok());
        assert!(check_value(0, "_sort", ParamKind::Sort, None, "subject.name").is_err());
        assert!(check_value(0, "code", Token, Some("missing"), "maybe").is_err());
        assert!(check_value(0, "code", Token, None, "|").is_err());
        assert!(modifier_allowed(Str, "exact") && !modifier_allowed(Date, "exact") && modifier_allowed(Reference, "Patient"));
        assert!(!modifier_allowed(Reference, "patient"));
    }

    #[test]
    fn include_values() {
        let o = ResourceType::Observation;
        assert!(check_include(0, "_include", false, o, "Observation:subject").is_ok());
        assert!(check_include(0, "_include", false, o, "Observation:subject:Patient").is_ok());
        assert!(check_include(0, "_include", false, o, "Encounter:subject").is_err());
        assert!(check_include(0, "_revinclude", true, o, "Provenance:target").is_ok());
        assert!(check_include(0, "_include", false, o, "Observation").is_err());
        assert!(check_include(0, "_include", false, o, "Foo:bar").is_err());
    }

    #[test]
    fn parameters_name_the_elements_they_search() {
        assert_eq!(param_elements(ResourceType::Patient, "phone"), vec!["telecom"]);
        assert_eq!(param_elements(ResourceType::Patient, "address-city"), vec!["address"]);
        assert_eq!(param_elements(ResourceType::Patient, "family"), vec!["name"]);
        assert_eq!(param_elements(ResourceType::Condition, "clinical-status"), vec!["clinicalStatus"]);
        assert_eq!(param_elements(ResourceType::Observation, "patient"), vec!["subject"]);
    }
}
