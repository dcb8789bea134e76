//! A light, lenient view of a searchset `Bundle` page (pitfall 20).
//!
//! Only what the client acts on is typed: `resourceType`, `total`, `link` and each
//! entry's `search.mode`; every resource stays a `serde_json::Value` with all of its
//! elements. Entries are sorted into:
//!
//! - matches: `search.mode = match`, or no mode, with the searched type;
//! - included: `search.mode = include`, and entries of another type without a mode
//!   (servers that omit modes put `_include` results there);
//! - outcomes: `search.mode = outcome`, or any `OperationOutcome` resource. These are
//!   never data: warnings and information become [`Warning`]s, `error`/`fatal` issues
//!   fail the page.

use crate::outcome::{Issue, Outcome, truncate_chars};
use medicodax_wire::ResourceType;
use medicodax_wire::tools::Warning;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct RawBundle {
    #[serde(rename = "resourceType")]
    resource_type: Option<Value>,
    #[serde(default)]
    total: Option<Value>,
    #[serde(default)]
    link: Option<Value>,
    #[serde(default)]
    entry: Option<Vec<RawEntry>>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(default)]
    search: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
}

/// What one searchset page holds, sorted.
#[derive(Debug, Default)]
pub struct PageContent {
    /// `Bundle.total`, when given as a non-negative integer.
    pub total: Option<u64>,
    /// `link[relation = next].url`, verbatim.
    pub next: Option<String>,
    /// Matching resources of the searched type.
    pub matches: Vec<Value>,
    /// Included resources, kept apart from the matches.
    pub included: Vec<Value>,
    /// Warnings from outcome entries (and entries that were dropped).
    pub warnings: Vec<Warning>,
    /// Parameter names outcome entries say were ignored.
    pub ignored_parameters: Vec<String>,
    /// `error`/`fatal` issues from outcome entries: the page failed.
    pub failures: Vec<Issue>,
}

/// Why a body is not a usable searchset page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleProblem {
    /// Not JSON, or JSON of the wrong shape.
    NotJson(String),
    /// A resource other than a Bundle.
    NotABundle(String),
}

/// Parses and sorts one page of a search of `searched`.
pub fn parse_page(body: &[u8], searched: ResourceType) -> Result<PageContent, BundleProblem> {
    let raw: RawBundle = serde_json::from_slice(body).map_err(|e| BundleProblem::NotJson(describe_json_error(&e)))?;
    let rt = raw.resource_type.as_ref().and_then(Value::as_str).unwrap_or("");
    if rt != "Bundle" {
        return Err(BundleProblem::NotABundle(truncate_chars(rt, 64)));
    }
    let mut page = PageContent { total: raw.total.as_ref().and_then(Value::as_u64), next: next_link(raw.link.as_ref()), ..Default::default() };
    let mut dropped = 0usize;
    for entry in raw.entry.unwrap_or_default() {
        let mode = entry.search.as_ref().and_then(|s| s.get("mode")).and_then(Value::as_str).map(str::to_owned);
        let Some(resource) = entry.resource.filter(Value::is_object) else {
            dropped += 1;
            continue;
        };
        let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or("");
        if mode.as_deref() == Some("outcome") || rtype == "OperationOutcome" {
            match Outcome::from_resource(&resource) {
                Some(o) => absorb_outcome(&mut page, &o),
                None => page.warnings.push(Warning {
                    code: "operation-outcome".into(),
                    detail: format!("an outcome entry held a {} resource; it was dropped", truncate_chars(rtype, 64)),
                }),
            }
            continue;
        }
        match mode.as_deref() {
            Some("include") => page.included.push(resource),
            Some("match") | None if rtype == searched.as_str() => page.matches.push(resource),
            None => page.included.push(resource),
            Some("match") => {
                page.warnings.push(Warning {
                    code: "unexpected-type".into(),
                    detail: format!("a match entry of type {} in a {searched} search was kept with the included resources", truncate_chars(rtype, 64)),
                });
                page.included.push(resource);
            }
            Some(other) => {
                page.warnings.push(Warning {
                    code: "unknown-search-mode".into(),
                    detail: format!("an entry with search.mode {:?} was kept with the included resources", truncate_chars(other, 32)),
                });
                page.included.push(resource);
            }
        }
    }
    if dropped > 0 {
        page.warnings.push(Warning { code: "empty-entry".into(), detail: format!("{dropped} entries without a resource object were skipped") });
    }
    Ok(page)
}

fn absorb_outcome(page: &mut PageContent, o: &Outcome) {
    for issue in &o.issues {
        if issue.severity.is_failure() {
            page.failures.push(issue.clone());
        } else {
            page.warnings.push(Warning { code: "operation-outcome".into(), detail: issue.to_string() });
        }
    }
    for name in o.ignored_parameters() {
        if !page.ignored_parameters.contains(&name) {
            page.ignored_parameters.push(name);
        }
    }
}

fn next_link(link: Option<&Value>) -> Option<String> {
    link?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str).is_some_and(|r| r.eq_ignore_ascii_case("next")))
        .and_then(|l| l.get("url"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A JSON error's category and position, without any of the body's text.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pitfall_20_bundle_is_sorted() {
        let body = json!({"resourceType":"Bundle","type":"searchset","total":2,"entry":[
            {"fullUrl":"https://fhir.vendor-b.example/fhir/r4/Observation/obs-1","search":{"mode":"match"},
             "resource":{"resourceType":"Observation","id":"obs-1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pt-1001"}}},
            {"search":{"mode":"outcome"},
             "resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"not-supported","diagnostics":"parameter datee not understood, ignored"}]}},
            {"fullUrl":"https://fhir.vendor-b.example/fhir/r4/Observation/obs-2",
             "resource":{"resourceType":"Observation","id":"obs-2","status":"final","code":{"text":"Body weight"},"subject":{"reference":"Patient/pt-1001"}}}]});
        let p = parse_page(body.to_string().as_bytes(), ResourceType::Observation).unwrap();
        let ids: Vec<&str> = p.matches.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["obs-1", "obs-2"]);
        assert_eq!(p.total, Some(2));
        assert!(p.included.is_empty());
        assert!(p.failures.is_empty());
        assert_eq!(
            p.warnings,
            vec![Warning { code: "operation-outcome".into(), detail: "warning not-supported: parameter datee not understood, ignored".into() }]
        );
        assert_eq!(p.ignored_parameters, vec!["datee"]);
        assert_eq!(p.next, None);
    }

    #[test]
    fn include_and_unmoded_other_types_are_kept_apart() {
        let body = json!({"resourceType":"Bundle","link":[{"relation":"self","url":"a"},{"relation":"NEXT","url":"b?x=%7C"}],"entry":[
            {"search":{"mode":"include"},"resource":{"resourceType":"Patient","id":"pt-1"}},
            {"resource":{"resourceType":"Encounter","id":"e-1"}},
            {"search":{"mode":"match"},"resource":{"resourceType":"Encounter","id":"e-2"}},
            {"search":{"mode":"match"},"resource":{"resourceType":"Observation","id":"o-1","unknownElement":{"kept":[1,2]}}},
            {"search":{"mode":"outcome"},"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"processing","diagnostics":"4113 session expired"}]}},
            {"fullUrl":"x"}
        ]});
        let p = parse_page(body.to_string().as_bytes(), ResourceType::Observation).unwrap();
        assert_eq!(p.matches.len(), 1);
        assert_eq!(p.matches[0]["unknownElement"], json!({"kept":[1,2]}), "unknown elements pass through");
        assert_eq!(p.included.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["pt-1", "e-1", "e-2"]);
        assert_eq!(p.failures.len(), 1);
        assert_eq!(p.failures[0].diagnostics.as_deref(), Some("4113 session expired"));
        assert_eq!(p.next.as_deref(), Some("b?x=%7C"));
        let codes: Vec<&str> = p.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(codes, ["unexpected-type", "empty-entry"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&b""[..], b"<html>", b"{", b"[]", b"null", b"{\"resourceType\":5}", b"{\"entry\":7,\"resourceType\":\"Bundle\"}", &[0xff, 0xfe]] {
            assert!(parse_page(body, ResourceType::Patient).is_err(), "{body:?}");
        }
        assert_eq!(
            parse_page(br#"{"resourceType":"OperationOutcome"}"#, ResourceType::Patient).unwrap_err(),
            BundleProblem::NotABundle("OperationOutcome".into())
        );
        let p = parse_page(br#"{"resourceType":"Bundle","total":-3,"link":"x","entry":[{"resource":"str"}]}"#, ResourceType::Patient).unwrap();
        assert_eq!(p.total, None);
        assert_eq!(p.next, None);
        assert!(p.included.is_empty() && p.matches.is_empty());
        assert_eq!(p.warnings[0].code, "empty-entry");
    }
}
