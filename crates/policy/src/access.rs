//! A caller's effective access through one EHR connection, and the decisions on it.
//!
//! The effective permission for an interaction on a type is the intersection of the
//! agent's grant, the user's grant (unless the agent acts as itself) and the EHR's grant
//! (`system/` scopes only), each a union of that party's scopes; query constraints
//! intersect as described in [`crate::constraint`]. The first party lacking a grant,
//! checked in the order agent, user, EHR, is named in the denial reason. Extra search
//! parameters and connections intersect; patient lists intersect; redactions are a union.

use crate::constraint::{alternatives, intersect, Conjunction};
use crate::matching::{patient_element, reference_id, within, ResourceFilter};
use crate::params::{check_include, check_syntax, check_value, classify, modifier_allowed, param_elements, param_kind, ParamClass, ParamKind};
use crate::plan::{part_is_per_encounter, BundlePlan, PlannedQuery, ReadPlan, SearchPlan, BUNDLE_PARTS};
use crate::policy::{restrict, Caller, ROLE_CONTEXTS};
use crate::reason::{ArgumentError, DenyReason, Refusal};
use crate::redact::Redactor;
use crate::scope::{Context, Grant, Interaction, ScopeSet};
use medicodax_wire::{FhirId, ResourceType};
use std::collections::{BTreeMap, BTreeSet};

/// A caller's effective access through one connection. Build it with
/// [`Caller::on_connection`]; it is cheap to keep for the length of a call.
#[derive(Clone, Debug)]
pub struct Access {
    caller: Caller,
    connection: String,
    ehr: ScopeSet,
    patients: Option<BTreeSet<String>>,
    extra: BTreeSet<String>,
    redactor: Redactor,
}

fn letter(i: Interaction) -> char {
    match i {
        Interaction::Create => 'c',
        Interaction::Read => 'r',
        Interaction::Update => 'u',
        Interaction::Delete => 'd',
        Interaction::Search => 's',
    }
}

fn deny(r: DenyReason) -> Refusal {
    Refusal::Denied(r)
}

fn not_allowed(name: &str) -> Refusal {
    deny(DenyReason::ParamNotAllowed { name: name.to_owned() })
}

impl Access {
    pub(crate) fn new(caller: Caller, connection: &str, ehr: ScopeSet) -> Access {
        let agent = &caller.agent;
        let (patients, extra, redactor) = match &caller.user {
            None => (agent.patients.clone(), agent.extra.clone(), Redactor::new(&agent.redact)),
            Some(u) => (
                restrict(agent.patients.as_ref(), u.patients.as_ref()),
                agent.extra.intersection(&u.extra).cloned().collect(),
                Redactor::new(agent.redact.iter().chain(&u.redact)),
            ),
        };
        Access { caller, connection: connection.to_owned(), ehr, patients, extra, redactor }
    }

    /// The principals.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The connection this access is for.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// The redactions to apply to every resource returned (union of all parties' roles).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The patient list in force (intersection of every configured list), if any.
    pub fn patient_list(&self) -> Option<&BTreeSet<String>> {
        self.patients.as_ref()
    }

    /// The effective grant for `interaction` on `t`: `Full` or `Constrained` (normalised),
    /// or the reason naming the first party that lacks it.
    pub fn grant(&self, t: ResourceType, interaction: Interaction) -> Result<Grant, DenyReason> {
        let mut acc = Grant::Full;
        for (by, g) in self.caller.parties() {
            let pg = g.scopes.grant(ROLE_CONTEXTS, t.as_str(), interaction);
            if pg == Grant::None {
                return Err(DenyReason::ScopeNotGranted { resource_type: t, interaction, by });
            }
            acc = intersect(&acc, &pg).map_err(|_| DenyReason::ConstraintTooComplex)?;
        }
        let e = self.ehr.grant(&[Context::System], t.as_str(), interaction);
        if e == Grant::None {
            return Err(DenyReason::EhrScopeNotGranted { missing_scope: format!("system/{t}.{}", letter(interaction)) });
        }
        intersect(&acc, &e).map_err(|_| DenyReason::ConstraintTooComplex)
    }

    fn filter_for(&self, t: ResourceType, g: Grant) -> ResourceFilter {
        let constraints = match g {
            Grant::Constrained(c) => Some(c),
            Grant::None | Grant::Full => None,
        };
        ResourceFilter { resource_type: t, constraints, patients: self.patients.clone() }
    }

    /// Decides `fhir.read` of `t`/`id`. A Patient outside the patient list is refused
    /// here; for other types the plan's [`ReadPlan::check`] judges the returned resource.
    pub fn decide_read(&self, t: ResourceType, id: &FhirId) -> Result<ReadPlan, Refusal> {
        let g = self.grant(t, Interaction::Read)?;
        if t == ResourceType::Patient
            && let Some(list) = &self.patients
            && !list.contains(id.as_str())
        {
            return Err(deny(DenyReason::PatientNotInList));
        }
        Ok(ReadPlan { id: id.clone(), filter: self.filter_for(t, g) })
    }

    /// Decides `fhir.search` of `t` with `params`: syntax, the grant, the allow-list,
    /// the patient list, then narrowing by the grant's query constraints.
    pub fn decide_search(&self, t: ResourceType, params: &[(String, String)]) -> Result<SearchPlan, Refusal> {
        check_syntax(params)?;
        let grant = self.grant(t, Interaction::Search)?;
        let mut has_include = false;
        for (index, (name, value)) in params.iter().enumerate() {
            match classify(name) {
                ParamClass::Plain { base, modifier } => self.check_plain(t, index, name, base, modifier, value)?,
                ParamClass::Chained { reference, target, tail } => self.check_chain(t, name, reference, target, tail)?,
                ParamClass::Has { target, inner } => self.check_has(name, target, inner)?,
                ParamClass::Include { rev } => {
                    if !self.extra_grants(if rev { "_revinclude" } else { "_include" }, name) {
                        return Err(not_allowed(name));
                    }
                    check_include(index, name, rev, t, value)?;
                    has_include = true;
                }
                ParamClass::Special(base) => {
                    if !self.extra_grants(base, name) {
                        return Err(not_allowed(name));
                    }
                    if base == "_elements" && !alternatives(value).iter().all(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')) {
                        return Err(ArgumentError::BadValue { index, name: name.clone(), expected: "element names separated by commas" }.into());
                    }
                }
            }
        }
        let patient_params = self.check_patient_params(t, params)?;
        let filter = self.filter_for(t, grant.clone());
        let queries = narrow(t, params, &grant, &patient_params, &filter)?;
        let mut includes = BTreeMap::new();
        if has_include {
            for it in ResourceType::ALL {
                if let Ok(g) = self.grant(it, Interaction::Read) {
                    includes.insert(it, self.filter_for(it, g));
                }
            }
        }
        Ok(SearchPlan { queries, filter, includes })
    }

    /// Decides `encounter.bundle`: the encounter must be readable (else the call is
    /// denied); each other part is permitted or withheld, decided before any request and
    /// without regard to whether data exists.
    pub fn decide_bundle(&self, encounter: &FhirId) -> Result<BundlePlan, Refusal> {
        let enc = self.decide_read(ResourceType::Encounter, encounter)?;
        let mut permitted = Vec::new();
        let mut withheld = Vec::new();
        for t in BUNDLE_PARTS {
            let i = if t == ResourceType::Patient { Interaction::Read } else { Interaction::Search };
            match self.grant(t, i) {
                Ok(_) => permitted.push(t),
                Err(r) => withheld.push((t, r)),
            }
        }
        Ok(BundlePlan { encounter: enc, permitted, withheld })
    }

    /// The search plan for one part of an encounter bundle, once the encounter (and so
    /// its patient) is known: `patient` and `encounter` for encounter-level parts,
    /// `patient` for allergies, immunizations and coverage, `_id` for Patient/Encounter.
    pub fn bundle_part(&self, t: ResourceType, patient: &FhirId, encounter: &FhirId) -> Result<SearchPlan, Refusal> {
        let p = |k: &str, v: &FhirId| (k.to_owned(), v.as_str().to_owned());
        let params = match t {
            ResourceType::Patient => vec![p("_id", patient)],
            ResourceType::Encounter => vec![p("_id", encounter), p("patient", patient)],
            _ if part_is_per_encounter(t) => vec![p("patient", patient), p("encounter", encounter)],
            _ => vec![p("patient", patient)],
        };
        self.decide_search(t, &params)
    }

    fn extra_grants(&self, family: &str, name: &str) -> bool {
        self.extra.contains(family) || self.extra.contains(name)
    }

    fn check_redacted(&self, t: ResourceType, param: &str, reported: &str) -> Result<(), Refusal> {
        let sub = (param_kind(t, param) == Some(ParamKind::Reference)).then_some("reference");
        if param_elements(t, param).iter().any(|e| self.redactor.redacts_element(t.as_str(), e, sub)) {
            return Err(deny(DenyReason::ParamTargetsRedactedElement { name: reported.to_owned() }));
        }
        Ok(())
    }

    fn check_plain(&self, t: ResourceType, index: usize, name: &str, base: &str, modifier: Option<&str>, value: &str) -> Result<(), Refusal> {
        match param_kind(t, base) {
            Some(kind) => {
                if let Some(m) = modifier
                    && !modifier_allowed(kind, m)
                    && !self.extra.contains(name)
                {
                    return Err(ArgumentError::BadModifier { index, name: name.to_owned() }.into());
                }
                check_value(index, name, kind, modifier, value)?;
                if kind == ParamKind::Sort {
                    for key in alternatives(value) {
                        let key = key.strip_prefix('-').unwrap_or(&key);
                        if param_kind(t, key).is_none() && !self.extra.contains(key) {
                            return Err(not_allowed(name));
                        }
                        self.check_redacted(t, key, name)?;
                    }
                }
                if kind == ParamKind::Reference && modifier == Some("identifier") {
                    self.check_redacted(ResourceType::Patient, "identifier", name)?;
                }
            }
            None => {
                if !self.extra_grants(base, name) {
                    return Err(not_allowed(name));
                }
                match modifier {
                    None => {}
                    Some("missing") => check_value(index, name, ParamKind::Token, modifier, value)?,
                    Some(_) if self.extra.contains(name) => {}
                    Some(_) => return Err(ArgumentError::BadModifier { index, name: name.to_owned() }.into()),
                }
            }
        }
        self.check_redacted(t, base, name)
    }

    /// A chained or reverse-chained search reads the target type: the caller needs an
    /// unconstrained search grant on it.
    fn require_full_search(&self, target: &str, name: &str) -> Result<ResourceType, Refusal> {
        let tt: ResourceType = target.parse().map_err(|_| not_allowed(name))?;
        match self.grant(tt, Interaction::Search)? {
            Grant::Full => Ok(tt),
            Grant::None | Grant::Constrained(_) => Err(not_allowed(name)),
        }
    }

    fn check_target_param(&self, tt: ResourceType, inner: &str, name: &str) -> Result<(), Refusal> {
        let inner_base = inner.split(':').next().unwrap_or(inner);
        if inner.contains('.') || inner_base.starts_with("_has") || (param_kind(tt, inner_base).is_none() && !self.extra.contains(inner_base)) {
            return Err(not_allowed(name));
        }
        self.check_redacted(tt, inner_base, name)
    }

    fn check_chain(&self, t: ResourceType, name: &str, reference: &str, target: Option<&str>, tail: &str) -> Result<(), Refusal> {
        if !self.extra.contains(name) || param_kind(t, reference) != Some(ParamKind::Reference) {
            return Err(not_allowed(name));
        }
        let target = match (target, reference) {
            (Some(x), _) => x,
            (None, "patient" | "subject") => "Patient",
            (None, "encounter") => "Encounter",
            (None, _) => return Err(not_allowed(name)),
        };
        let tt = self.require_full_search(target, name)?;
        self.check_redacted(t, reference, name)?;
        self.check_target_param(tt, tail, name)
    }

    fn check_has(&self, name: &str, target: &str, inner: &str) -> Result<(), Refusal> {
        if !self.extra_grants("_has", name) {
            return Err(not_allowed(name));
        }
        let tt = self.require_full_search(target, name)?;
        self.check_target_param(tt, inner, name)
    }

    /// Under a patient list: the search must name its patients by id, all in the list.
    /// Returns the names (as sent) that do so: they narrow access.
    fn check_patient_params(&self, t: ResourceType, params: &[(String, String)]) -> Result<BTreeSet<String>, Refusal> {
        let Some(list) = &self.patients else {
            return Ok(BTreeSet::new());
        };
        let names: &[&str] = match t {
            ResourceType::Patient => &["_id"],
            _ if patient_element(t) == Some("subject") => &["patient", "subject"],
            _ => &["patient"],
        };
        let mut used = BTreeSet::new();
        for (name, value) in params {
            let ParamClass::Plain { base, modifier } = classify(name) else {
                continue;
            };
            if !names.contains(&base) {
                continue;
            }
            if modifier.is_some_and(|m| m != "Patient") {
                return Err(deny(DenyReason::PatientParamRequired));
            }
            for alt in alternatives(value) {
                let id = if t == ResourceType::Patient { FhirId::new(&alt).ok().map(|_| alt.as_str()) } else { reference_id(&alt, "Patient", true) };
                if !id.is_some_and(|i| list.contains(i)) {
                    return Err(deny(DenyReason::PatientNotInList));
                }
            }
            used.insert(name.clone());
        }
        if used.is_empty() {
            return Err(deny(DenyReason::PatientParamRequired));
        }
        Ok(used)
    }
}

/// One query per constraint alternative the caller's parameters are compatible with.
fn narrow(t: ResourceType, params: &[(String, String)], grant: &Grant, patient_params: &BTreeSet<String>, filter: &ResourceFilter) -> Result<Vec<PlannedQuery>, Refusal> {
    let alts: Vec<Option<&Conjunction>> = match grant {
        Grant::Constrained(c) => c.iter().map(Some).collect(),
        Grant::None | Grant::Full => vec![None],
    };
    let mut conflict: Option<String> = None;
    let mut queries = Vec::new();
    'alt: for alt in alts {
        let mut q = PlannedQuery { params: params.to_vec(), added: BTreeSet::new(), narrowing: patient_params.clone() };
        for (k, v) in alt.into_iter().flatten() {
            let kb = k.split(':').next().unwrap_or(k);
            let uses: Vec<(Option<&str>, &str)> = params
                .iter()
                .filter_map(|(n, val)| match classify(n) {
                    ParamClass::Plain { base, modifier } if base == kb => Some((modifier, val.as_str())),
                    _ => None,
                })
                .collect();
            if uses.is_empty() {
                q.params.push((k.clone(), v.clone()));
                q.added.insert(k.clone());
                q.narrowing.insert(k.clone());
            } else if k == kb && uses.iter().all(|(m, val)| m.is_none() && value_within(t, k, val, v)) {
                q.narrowing.insert(k.clone());
            } else {
                conflict.get_or_insert_with(|| k.clone());
                continue 'alt;
            }
        }
        keep_filter_elements(&mut q.params, filter);
        queries.push(q);
    }
    if queries.is_empty() {
        return Err(deny(DenyReason::ConstraintConflict { name: conflict.unwrap_or_default() }));
    }
    Ok(queries)
}

/// Whether every alternative of the caller's value lies within some alternative of the
/// constraint's value.
fn value_within(t: ResourceType, name: &str, caller: &str, constraint: &str) -> bool {
    let outer = alternatives(constraint);
    alternatives(caller).iter().all(|a| outer.iter().any(|c| within(t, name, a, c)))
}

/// With `_elements`, the server returns only the named elements; add those the filter
/// reads so permitted resources are not dropped for lack of them.
fn keep_filter_elements(params: &mut [(String, String)], filter: &ResourceFilter) {
    let needed = filter.elements();
    if needed.is_empty() {
        return;
    }
    for (_, value) in params.iter_mut().filter(|(n, _)| n == "_elements") {
        let have: BTreeSet<String> = alternatives(value).into_iter().collect();
        for e in needed.difference(&have) {
            value.push(',');
            value.push_str(e);
        }
    }
}
