//! What an allowed decision tells the gateway to do: the requests to make and the checks
//! to run on what comes back.
//!
//! # Search plans and OR-ed constraints
//!
//! A query-constrained grant is an OR of AND-sets (`category=laboratory` OR
//! `category=vital-signs`, possibly each with more conditions). FHIR search cannot express
//! an OR across different AND-sets in one query, so a [`SearchPlan`] holds one
//! [`PlannedQuery`] per AND-set the caller's own parameters are compatible with: each is
//! the caller's parameters plus that set's constraint parameters. The gateway runs every
//! query (each with the caller's `max_results`), then calls [`SearchPlan::merge`], which
//! keeps the first copy of each `type/id` and drops anything the filter refuses. A
//! single query is the common case (an unconstrained grant, or one constraint set).
//!
//! # Fail closed on ignored parameters (pitfall 20)
//!
//! [`PlannedQuery::narrowing_params`] are the names the plan relies on to keep results
//! within the grant: those the gateway added (constraint parameters) and those of the
//! caller that stand in for a restriction (a `patient` under a patient list, a
//! `category` within the constraint). If the server reports one of them as ignored
//! ([`PlannedQuery::on_ignored_params`]), the results may be broader than authorised and
//! the whole search must return no results.

use crate::matching::{resource_type_of, ResourceFilter};
use crate::reason::{DenyReason, Refusal};
use medicodax_wire::{FhirId, ResourceType};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// How to read one resource, and the check its result must pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    pub(crate) id: FhirId,
    pub(crate) filter: ResourceFilter,
}

impl ReadPlan {
    /// The type to read.
    pub fn resource_type(&self) -> ResourceType {
        self.filter.resource_type
    }

    /// The id to read.
    pub fn id(&self) -> &FhirId {
        &self.id
    }

    /// Whether the grant restricts which resources of the type may be seen (query
    /// constraints or a patient list). When it does, the gateway must answer an upstream
    /// 404 with the same denial as a refused resource, so the answer does not reveal
    /// whether the resource exists.
    pub fn restricted(&self) -> bool {
        self.filter.constraints.is_some() || self.filter.patients.is_some()
    }

    /// Checks the resource the EHR returned: its type and id, the grant's constraints and
    /// the patient list. A refusal here is a denial like any other.
    pub fn check(&self, resource: &Value) -> Result<(), Refusal> {
        self.filter.check(resource)?;
        if resource.get("id").and_then(Value::as_str) != Some(self.id.as_str()) {
            return Err(DenyReason::UnexpectedResource.into());
        }
        Ok(())
    }

    /// What the result is filtered against.
    pub fn filter(&self) -> &ResourceFilter {
        &self.filter
    }
}

/// One request of a search plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedQuery {
    pub(crate) params: Vec<(String, String)>,
    pub(crate) added: BTreeSet<String>,
    pub(crate) narrowing: BTreeSet<String>,
}

/// What to do after the server reported parameters it ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoredVerdict {
    /// No narrowing parameter was ignored: the results stand (surface the notice as a warning).
    Proceed,
    /// A narrowing parameter was ignored: return no results for the whole search.
    FailClosed {
        /// The narrowing parameter that was ignored (a name, never a value).
        param: String,
    },
}

fn base(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

fn same_param(a: &str, b: &str) -> bool {
    let (a, b) = (base(a), base(b));
    a == b || matches!((a, b), ("patient", "subject") | ("subject", "patient"))
}

impl PlannedQuery {
    /// The parameters to send, as name/value pairs (to be encoded as query values).
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The parameter names the gateway added to narrow access (not sent by the caller).
    pub fn added_params(&self) -> impl Iterator<Item = &str> {
        self.added.iter().map(String::as_str)
    }

    /// Every parameter name that keeps the results within the grant: those the gateway
    /// added, and the caller's own that stand in for a restriction.
    pub fn narrowing_params(&self) -> impl Iterator<Item = &str> {
        self.narrowing.iter().map(String::as_str)
    }

    /// Given the names of parameters the server said it ignored (from OperationOutcome
    /// issues in the searchset), whether the results may be used. Names compare without
    /// modifiers, and `patient` and `subject` stand for each other (vendor profiles
    /// rename one to the other).
    pub fn on_ignored_params<'a>(&self, ignored: impl IntoIterator<Item = &'a str>) -> IgnoredVerdict {
        for name in ignored {
            if let Some(p) = self.narrowing.iter().find(|n| same_param(n, name)) {
                return IgnoredVerdict::FailClosed { param: p.clone() };
            }
        }
        IgnoredVerdict::Proceed
    }

    /// The verdict when the server says it ignored parameters without naming them: fail
    /// closed whenever this query relies on any narrowing parameter.
    pub fn on_unnamed_ignored(&self) -> IgnoredVerdict {
        match self.narrowing.iter().next() {
            Some(p) => IgnoredVerdict::FailClosed { param: p.clone() },
            None => IgnoredVerdict::Proceed,
        }
    }
}

/// The outcome of merging and filtering a plan's results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    /// The resources to return, in query order, each `type/id` once.
    pub resources: Vec<Value>,
    /// How many the filter refused (a server that ignored or mis-applied narrowing).
    pub refused: usize,
    /// How many were repeats of a resource already kept.
    pub duplicates: usize,
}

/// How to run a search: the queries, and the checks results and included entries must pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPlan {
    pub(crate) queries: Vec<PlannedQuery>,
    pub(crate) filter: ResourceFilter,
    pub(crate) includes: BTreeMap<ResourceType, ResourceFilter>,
}

impl SearchPlan {
    /// The searched type.
    pub fn resource_type(&self) -> ResourceType {
        self.filter.resource_type
    }

    /// The queries to run (at least one).
    pub fn queries(&self) -> &[PlannedQuery] {
        &self.queries
    }

    /// Whether the server's `Bundle.total` may be passed on: only for a single query,
    /// and only if the filter refused nothing (else the count would reveal withheld data).
    pub fn total_is_reliable(&self, merged: &Merged) -> bool {
        self.queries.len() == 1 && merged.refused == 0
    }

    /// Whether a match-mode resource may be returned.
    pub fn admit(&self, resource: &Value) -> bool {
        self.filter.admits(resource)
    }

    /// Whether an include-mode entry may be returned: its type must be readable by every
    /// party (an include is a read by reference), within that grant's constraints and the
    /// patient list. Types outside the eleven are never admitted (pitfall 27(d)).
    pub fn admit_included(&self, resource: &Value) -> bool {
        resource_type_of(resource).and_then(|t| self.includes.get(&t)).is_some_and(|f| f.admits(resource))
    }

    /// The filter for match-mode results.
    pub fn filter(&self) -> &ResourceFilter {
        &self.filter
    }

    /// Merges the results of the queries (in plan order): drops what the filter refuses
    /// and repeats of a `type/id` already kept.
    pub fn merge(&self, per_query: impl IntoIterator<Item = Vec<Value>>) -> Merged {
        let mut out = Merged::default();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for results in per_query {
            for r in results {
                if !self.admit(&r) {
                    out.refused += 1;
                    continue;
                }
                let key = (
                    r.get("resourceType").and_then(Value::as_str).unwrap_or("").to_owned(),
                    r.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                );
                if !key.1.is_empty() && !seen.insert(key) {
                    out.duplicates += 1;
                    continue;
                }
                out.resources.push(r);
            }
        }
        out
    }
}

/// The parts of an encounter bundle, in the order of the `encounter.bundle` result.
pub const BUNDLE_PARTS: [ResourceType; 10] = [
    ResourceType::Patient,
    ResourceType::Condition,
    ResourceType::Procedure,
    ResourceType::Observation,
    ResourceType::MedicationRequest,
    ResourceType::DiagnosticReport,
    ResourceType::DocumentReference,
    ResourceType::AllergyIntolerance,
    ResourceType::Immunization,
    ResourceType::Coverage,
];

/// Whether a bundle part is found by encounter (else by patient: allergies,
/// immunizations, coverage).
pub fn part_is_per_encounter(t: ResourceType) -> bool {
    matches!(
        t,
        ResourceType::Condition
            | ResourceType::Procedure
            | ResourceType::Observation
            | ResourceType::MedicationRequest
            | ResourceType::DiagnosticReport
            | ResourceType::DocumentReference
    )
}

/// Which parts of an encounter bundle the caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundlePlan {
    pub(crate) encounter: ReadPlan,
    pub(crate) permitted: Vec<ResourceType>,
    pub(crate) withheld: Vec<(ResourceType, DenyReason)>,
}

impl BundlePlan {
    /// How to read the encounter itself (check it with [`ReadPlan::check`]).
    pub fn encounter(&self) -> &ReadPlan {
        &self.encounter
    }

    /// The parts to fetch (the Patient with [`crate::Access::decide_read`], the others with
    /// [`crate::Access::bundle_part`]).
    pub fn permitted(&self) -> &[ResourceType] {
        &self.permitted
    }

    /// The types for the result's `withheld` list. They are the same whether or not the
    /// patient has data of that type.
    pub fn withheld(&self) -> Vec<ResourceType> {
        self.withheld.iter().map(|(t, _)| *t).collect()
    }

    /// Each withheld type with the rule that withheld it (for the audit log).
    pub fn withheld_reasons(&self) -> &[(ResourceType, DenyReason)] {
        &self.withheld
    }
}
