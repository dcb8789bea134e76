//! A light, lenient view of FHIR `OperationOutcome`, used both for error bodies and for
//! `search.mode = outcome` entries inside searchsets (pitfall 20).
//!
//! Only what we act on is kept: each issue's severity, code, a truncated `diagnostics`
//! (or `details.text`), and its `expression`/`location` paths. Diagnostics are vendor
//! text and may be long, so they are cut to [`MAX_DIAGNOSTICS_CHARS`] characters.

use serde_json::Value;
use std::fmt;

/// The longest diagnostics text kept from an issue, in characters.
pub const MAX_DIAGNOSTICS_CHARS: usize = 300;

/// The most issues kept from one OperationOutcome.
pub const MAX_ISSUES: usize = 20;

/// `OperationOutcome.issue.severity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Informational only.
    Information,
    /// A warning: the request succeeded, perhaps not as asked.
    Warning,
    /// An error: the request failed.
    Error,
    /// A fatal error: the request failed and nothing was processed.
    Fatal,
}

impl Severity {
    /// Parses the FHIR code (case-insensitively); an unknown or missing severity counts
    /// as `error`, so that a garbled issue never passes as harmless.
    pub fn parse(s: Option<&str>) -> Severity {
        match s.map(str::to_ascii_lowercase).as_deref() {
            Some("information") => Severity::Information,
            Some("warning") => Severity::Warning,
            Some("fatal") => Severity::Fatal,
            _ => Severity::Error,
        }
    }

    /// The FHIR code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Information => "information",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }

    /// True for `error` and `fatal`.
    pub const fn is_failure(self) -> bool {
        matches!(self, Severity::Error | Severity::Fatal)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `OperationOutcome.issue`, reduced to what we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// The issue's severity.
    pub severity: Severity,
    /// `issue.code` (e.g. `required`, `not-supported`), `unknown` when absent.
    pub code: String,
    /// The first coding's code of `issue.details` (e.g. Epic's `4122`), when present.
    pub detail_code: Option<String>,
    /// `diagnostics`, else `details.text`, truncated to [`MAX_DIAGNOSTICS_CHARS`].
    pub diagnostics: Option<String>,
    /// `expression` and `location` entries (e.g. `http.category`).
    pub expression: Vec<String>,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.severity, self.code)?;
        if let Some(c) = &self.detail_code {
            write!(f, " ({c})")?;
        }
        if let Some(d) = &self.diagnostics {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// The issues of an OperationOutcome, at most [`MAX_ISSUES`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The issues, in document order.
    pub issues: Vec<Issue>,
}

impl Outcome {
    /// Reads an OperationOutcome resource; `None` if `v` is not one.
    pub fn from_resource(v: &Value) -> Option<Outcome> {
        if v.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
            return None;
        }
        let issues = v
            .get("issue")
            .and_then(Value::as_array)
            .map(|a| a.iter().take(MAX_ISSUES).map(issue_from).collect())
            .unwrap_or_default();
        Some(Outcome { issues })
    }

    /// True when any issue is `error` or `fatal`.
    pub fn has_failure(&self) -> bool {
        self.issues.iter().any(|i| i.severity.is_failure())
    }

    /// The issues of severity `error` or `fatal`.
    pub fn failures(&self) -> Vec<Issue> {
        self.issues.iter().filter(|i| i.severity.is_failure()).cloned().collect()
    }

    /// Names of search parameters the server says it ignored (see [`ignored_parameters`]).
    pub fn ignored_parameters(&self) -> Vec<String> {
        let mut out = Vec::new();
        for issue in &self.issues {
            for name in ignored_parameters(issue) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }
}

/// A one-line summary of issues for error messages: `"fatal required: category is required"`.
pub fn summarize(issues: &[Issue]) -> String {
    if issues.is_empty() {
        return "no issue given".to_owned();
    }
    issues.iter().map(Issue::to_string).collect::<Vec<_>>().join("; ")
}

fn issue_from(v: &Value) -> Issue {
    let severity = Severity::parse(v.get("severity").and_then(Value::as_str));
    let code = v.get("code").and_then(Value::as_str).map(|s| truncate_chars(s, 64)).unwrap_or_else(|| "unknown".to_owned());
    let details = v.get("details");
    let detail_code = details
        .and_then(|d| d.get("coding"))
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(|c| c.get("code").and_then(Value::as_str)))
        .map(|s| truncate_chars(s, 64));
    let diagnostics = v
        .get("diagnostics")
        .and_then(Value::as_str)
        .or_else(|| details.and_then(|d| d.get("text")).and_then(Value::as_str))
        .map(|s| truncate_chars(s, MAX_DIAGNOSTICS_CHARS));
    let mut expression = Vec::new();
    for key in ["expression", "location"] {
        if let Some(a) = v.get(key).and_then(Value::as_array) {
            expression.extend(a.iter().filter_map(Value::as_str).take(8).map(|s| truncate_chars(s, 128)));
        }
    }
    Issue { severity, code, detail_code, diagnostics, expression }
}

/// `s` cut to at most `max` characters, control characters replaced by spaces, with `…`
/// appended when something was cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Words in diagnostics that say a parameter was not applied.
const IGNORED_MARKERS: [&str; 9] =
    ["ignored", "not understood", "unknown", "not supported", "unsupported", "unrecognized", "unrecognised", "not recognized", "invalid"];

/// Names of search parameters that an issue says were not applied, for the gateway's
/// fail-closed rule (pitfall 20): it knows which parameters it added to narrow access.
///
/// Only `warning` and `information` issues count (an `error` fails the search anyway).
/// Two sources, both common in the field:
/// - `expression`/`location` entries of the form `http.<name>` (FHIR's convention for
///   HTTP parameters; Epic's 4122 uses it);
/// - diagnostics that contain a marker such as "ignored", "unknown", "not supported" and
///   name the parameter after the word `parameter`, e.g. `parameter datee not
///   understood, ignored` or `Unknown search parameter "datee"`.
pub fn ignored_parameters(issue: &Issue) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if issue.severity.is_failure() {
        return out;
    }
    let mut push = |name: &str| {
        if is_param_name(name) && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    };
    for e in &issue.expression {
        if let Some(name) = e.strip_prefix("http.") {
            push(name);
        }
    }
    if let Some(d) = &issue.diagnostics {
        let lower = d.to_ascii_lowercase();
        if IGNORED_MARKERS.iter().any(|m| lower.contains(m)) {
            let words: Vec<&str> = d.split_whitespace().collect();
            for pair in words.windows(2) {
                let w = pair[0].trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_ascii_lowercase();
                if w == "parameter" || w == "parameters" || w == "param" {
                    let name = pair[1].trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | ',' | ';' | ':' | '.' | '(' | ')' | '[' | ']'));
                    push(name);
                }
            }
        }
    }
    out
}

/// A plausible search parameter name: `[A-Za-z_][A-Za-z0-9_.:-]{0,63}`.
fn is_param_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_issues_leniently() {
        let v = json!({"resourceType":"OperationOutcome","issue":[
            {"severity":"warning","code":"not-supported","diagnostics":"parameter datee not understood, ignored"},
            {"severity":"FATAL","code":"required","details":{"coding":[{"system":"urn:oid:1.2","code":"59108"}],"text":"category is required"}},
            {"code":"processing"},
            "garbage"
        ]});
        let o = Outcome::from_resource(&v).unwrap();
        assert_eq!(o.issues.len(), 4);
        assert_eq!(o.issues[0].severity, Severity::Warning);
        assert_eq!(o.issues[1].severity, Severity::Fatal);
        assert_eq!(o.issues[1].detail_code.as_deref(), Some("59108"));
        assert_eq!(o.issues[1].diagnostics.as_deref(), Some("category is required"));
        assert_eq!(o.issues[2].severity, Severity::Error, "a missing severity counts as error");
        assert_eq!(o.issues[3].code, "unknown");
        assert!(o.has_failure());
        assert_eq!(o.failures().len(), 3);
        assert_eq!(o.issues[1].to_string(), "fatal required (59108): category is required");
        assert!(Outcome::from_resource(&json!({"resourceType":"Bundle"})).is_none());
        assert!(Outcome::from_resource(&json!("x")).is_none());
    }

    #[test]
    fn diagnostics_are_truncated() {
        let long = "x".repeat(5000);
        let v = json!({"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":long}]});
        let d = Outcome::from_resource(&v).unwrap().issues[0].diagnostics.clone().unwrap();
        assert_eq!(d.chars().count(), MAX_DIAGNOSTICS_CHARS + 1);
        assert!(d.ends_with('…'));
        assert_eq!(truncate_chars("a\nb", 10), "a b");
    }

    #[test]
    fn ignored_parameter_names_from_diagnostics_and_locations() {
        let v = json!({"resourceType":"OperationOutcome","issue":[
            {"severity":"warning","code":"not-supported","diagnostics":"parameter datee not understood, ignored"},
            {"severity":"warning","code":"processing","details":{"coding":[{"code":"4122"}]},"location":["http.category"]},
            {"severity":"information","code":"informational","diagnostics":"Unknown search parameter \"subject:Patient.name\" for resource type Observation"},
            {"severity":"warning","code":"informational","diagnostics":"Some results may be missing"},
            {"severity":"error","code":"not-supported","diagnostics":"parameter patient not supported"}
        ]});
        let o = Outcome::from_resource(&v).unwrap();
        assert_eq!(o.ignored_parameters(), vec!["datee", "category", "subject:Patient.name"]);
    }
}
