//! Decision-level tests through the public Policy API: the pitfalls cases 16, 20, 26, 27
//! and 29, narrowing and filtering, patient lists, redaction, may_act_for and intersection.

use medicodax_config::Config;
use medicodax_policy::scope::ScopeSet;
use medicodax_policy::{
    Access, ArgumentError, Caller, DenyReason, IgnoredVerdict, Interaction, Party, Policy, PolicyWarning, Refusal, UserRecord,
};
use medicodax_wire::{FhirId, Problem, ResourceType, ToolName};
use serde_json::{json, Value};

use ResourceType::{AllergyIntolerance, Condition, Coverage, DocumentReference, Encounter, Observation, Patient, Procedure};

const LAB_SYS: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
const VITALS: &str = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";

/// A config with one agent `agent-runner-test` holding role `agent_role`, acting for
/// users with role `coder` or named `alice`.
fn policy_with(roles_toml: &str) -> Policy {
    let text = format!(
        r#"
{roles_toml}

[[agents]]
id = "agent-runner-test"
jwks = "keys/agent.jwks.json"
roles = ["agent_role"]
may_act_for = ["role:coder", "user:alice", "bob"]
"#
    );
    Policy::from_config(&Config::from_toml(&text).unwrap())
}

const OPEN_ROLES: &str = r#"
[roles.agent_role]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search", "encounter.bundle", "connections.list"]

[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search", "encounter.bundle", "connections.list"]
"#;

fn user(name: &str, roles: &[&str]) -> UserRecord {
    UserRecord { name: name.into(), roles: roles.iter().map(|r| (*r).into()).collect(), patients: None }
}

fn coder() -> UserRecord {
    user("coder", &["coder"])
}

fn access(p: &Policy, ehr: &str) -> Access {
    let caller = p.caller("agent-runner-test", "coder", Some(&coder())).unwrap();
    caller.on_connection("epic-sandbox", &ScopeSet::parse(ehr)).unwrap()
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn id(s: &str) -> FhirId {
    FhirId::new(s).unwrap()
}

fn denied(r: Result<impl std::fmt::Debug, Refusal>) -> DenyReason {
    match r {
        Err(Refusal::Denied(reason)) => reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn obs(id: &str, category: &str, patient: &str) -> Value {
    json!({"resourceType":"Observation","id":id,"status":"final",
        "category":[{"coding":[{"system":LAB_SYS,"code":category}]}],
        "code":{"text":"x"},"subject":{"reference":format!("Patient/{patient}")}})
}

// ---------------------------------------------------------------- pitfall 16 (policy part)

#[test]
fn pitfall_16a_a_type_the_ehr_did_not_grant_is_refused_locally_naming_the_scope() {
    let p = policy_with(OPEN_ROLES);
    // Requested Patient, Observation, Condition; granted only Patient and Condition.
    let a = access(&p, "system/Patient.read system/Condition.read");
    let r = a.decide_search(Observation, &params(&[("patient", "pt-1001")]));
    assert_eq!(denied(r.clone()), DenyReason::EhrScopeNotGranted { missing_scope: "system/Observation.s".into() });
    let refusal = r.unwrap_err();
    assert_eq!(refusal.problem(), Problem::denied());
    assert_eq!(refusal.audit_reason(), "denied: ehr-scope-not-granted: system/Observation.s");
    assert_eq!(denied(a.decide_read(Observation, &id("obs-1"))), DenyReason::EhrScopeNotGranted { missing_scope: "system/Observation.r".into() });
    assert!(a.decide_search(Condition, &params(&[("patient", "pt-1001")])).is_ok());
    assert!(a.decide_read(Patient, &id("pt-1001")).is_ok());
}

// ---------------------------------------------------------------- pitfall 26

#[test]
fn pitfall_26_ehr_grants_decide_read_and_search_separately() {
    let p = policy_with(OPEN_ROLES);
    let decide = |ehr: &str| {
        let a = access(&p, ehr);
        (a.decide_read(Patient, &id("pt-1001")).is_ok(), a.decide_search(Patient, &params(&[("name", "Doe")])).is_ok())
    };
    assert_eq!(decide("system/Patient.read"), (true, true));
    assert_eq!(decide("system/Patient.rs"), (true, true));
    assert_eq!(decide("system/Patient.r"), (true, false));
    assert_eq!(decide("system/Patient.s"), (false, true));
    assert_eq!(decide("system/Patient.cruds"), (true, true));
    assert_eq!(decide("system/Patient.*"), (true, true));
    assert_eq!(decide("system/Patient.write"), (false, false));
    for bad in ["system/Patient.sr", "system/Patient.rr", "system/Patient.rx", "system/Patient.", "system/Patient", "system/Patient.read.rs"] {
        assert_eq!(decide(bad), (false, false), "{bad}");
        assert_eq!(ScopeSet::parse(bad).ignored.len(), 1, "{bad} is reported for the audit log");
    }
    let a = access(&p, "system/Patient.r");
    assert_eq!(
        denied(a.decide_search(Patient, &params(&[("name", "Doe")]))),
        DenyReason::EhrScopeNotGranted { missing_scope: "system/Patient.s".into() }
    );
}

#[test]
fn pitfall_26_role_scopes_in_v1_and_v2_and_bad_ones_reported() {
    let p = policy_with(
        r#"
[roles.agent_role]
scopes = ["system/Patient.r", "system/Condition.read", "system/Procedure.sr", "patient/Observation.rs"]
tools = ["fhir.read", "fhir.search"]
[roles.coder]
scopes = ["user/*.rs"]
tools = ["fhir.read", "fhir.search"]
"#,
    );
    assert_eq!(
        p.warnings(),
        &[
            PolicyWarning::IgnoredScope { role: "agent_role".into(), scope: "system/Procedure.sr".into(), error: medicodax_policy::ScopeError::BadPermissions },
            PolicyWarning::PatientScopeInRole { role: "agent_role".into(), scope: "patient/Observation.rs".into() },
        ]
    );
    let a = access(&p, "system/*.rs");
    assert!(a.decide_read(Patient, &id("pt-1001")).is_ok());
    assert_eq!(
        denied(a.decide_search(Patient, &params(&[("name", "Doe")]))),
        DenyReason::ScopeNotGranted { resource_type: Patient, interaction: Interaction::Search, by: Party::Agent }
    );
    assert!(a.decide_search(Condition, &params(&[("patient", "pt-1001")])).is_ok());
    assert!(a.decide_search(Procedure, &params(&[("patient", "pt-1001")])).is_err(), "an invalid scope grants nothing");
    assert!(a.decide_read(Observation, &id("o")).is_err(), "a patient/ scope in a role grants nothing");
}

// ---------------------------------------------------------------- pitfall 27

#[test]
fn pitfall_27a_union_grants_nothing_extra() {
    let p = policy_with(OPEN_ROLES);
    let a = access(&p, "system/DocumentReference.read system/Patient.read");
    assert_eq!(
        denied(a.decide_search(Procedure, &params(&[("patient", "pt-1001")]))),
        DenyReason::EhrScopeNotGranted { missing_scope: "system/Procedure.s".into() }
    );
    assert!(a.decide_search(DocumentReference, &params(&[("patient", "pt-1001")])).is_ok());
}

#[test]
fn pitfall_27b_order_does_not_matter() {
    let p = policy_with(OPEN_ROLES);
    let x = access(&p, "patient/*.read system/*.read");
    let y = access(&p, "system/*.read patient/*.read");
    for t in ResourceType::ALL {
        for i in [Interaction::Read, Interaction::Search] {
            assert_eq!(x.grant(t, i), y.grant(t, i), "{t} {i:?}");
        }
    }
    assert!(x.decide_search(Observation, &params(&[("code", "http://loinc.org|2345-7")])).is_ok());
    let only_patient = access(&p, "patient/*.read");
    assert_eq!(
        denied(only_patient.decide_search(Observation, &params(&[("code", "2345-7")]))),
        DenyReason::EhrScopeNotGranted { missing_scope: "system/Observation.s".into() },
        "patient/ scopes from the EHR grant no system-level access"
    );
}

#[test]
fn pitfall_27c_wildcards_with_r_and_s() {
    let p = policy_with(OPEN_ROLES);
    let rs = access(&p, "system/*.rs");
    let r = access(&p, "system/*.r");
    for t in ResourceType::ALL {
        assert!(rs.decide_read(t, &id("x")).is_ok() && rs.grant(t, Interaction::Search).is_ok(), "{t}");
        assert!(r.decide_read(t, &id("x")).is_ok(), "{t}");
        assert_eq!(r.grant(t, Interaction::Search), Err(DenyReason::EhrScopeNotGranted { missing_scope: format!("system/{t}.s") }));
    }
}

const INCLUDE_ROLES: &str = r#"
[roles.agent_role]
scopes = ["system/*.rs"]
tools = ["fhir.search"]
extra_search_params = ["_include"]

[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.search"]
extra_search_params = ["_include", "_revinclude"]
"#;

#[test]
fn pitfall_27d_included_patients_are_dropped_unless_patient_is_permitted() {
    let p = policy_with(INCLUDE_ROLES);
    let q = params(&[("patient", "pt-1001"), ("_include", "Observation:subject")]);
    let a = access(&p, "system/Observation.rs");
    let plan = a.decide_search(Observation, &q).unwrap();
    let included_patient = json!({"resourceType":"Patient","id":"pt-1001","name":[{"family":"Doe"}]});
    assert!(!plan.admit_included(&included_patient), "no Patient data comes back");
    assert!(plan.admit_included(&obs("o2", "laboratory", "pt-1001")));
    assert!(!plan.admit_included(&json!({"resourceType":"Practitioner","id":"pr-1"})), "types outside the eleven are never admitted");
    assert!(plan.admit(&obs("o1", "laboratory", "pt-1001")));

    let with_patient = access(&p, "system/Observation.rs system/Patient.r");
    assert!(with_patient.decide_search(Observation, &q).unwrap().admit_included(&included_patient));

    // _revinclude is granted to the user but not the agent: extras intersect.
    let rev = params(&[("patient", "pt-1001"), ("_revinclude", "Provenance:target")]);
    assert_eq!(denied(a.decide_search(Observation, &rev)), DenyReason::ParamNotAllowed { name: "_revinclude".into() });
    // Without any grant, _include is refused.
    let open = policy_with(OPEN_ROLES);
    assert_eq!(denied(access(&open, "system/*.rs").decide_search(Observation, &q)), DenyReason::ParamNotAllowed { name: "_include".into() });
    // A malformed include is a 400.
    let bad = params(&[("_include", "Encounter:subject")]);
    assert!(matches!(a.decide_search(Observation, &bad), Err(Refusal::BadArguments(ArgumentError::BadValue { index: 0, .. }))));
}

// ---------------------------------------------------------------- pitfall 29

#[test]
fn pitfall_29_no_existence_leak_and_no_upstream_request() {
    let p = policy_with(OPEN_ROLES);
    let a = access(&p, "system/Patient.read");
    let with_data = a.decide_search(AllergyIntolerance, &params(&[("patient", "pt-1001")]));
    let without = a.decide_search(AllergyIntolerance, &params(&[("patient", "pt-2002")]));
    assert_eq!(with_data, without);
    assert_eq!(denied(with_data.clone()), DenyReason::EhrScopeNotGranted { missing_scope: "system/AllergyIntolerance.s".into() });
    let (x, y) = (with_data.unwrap_err().problem(), without.unwrap_err().problem());
    assert_eq!(serde_json::to_vec(&x).unwrap(), serde_json::to_vec(&y).unwrap());
    assert_eq!(x.status, 403);
}

#[test]
fn pitfall_29_case_unknown_types_and_separators_through_the_policy() {
    let p = policy_with(OPEN_ROLES);
    for ehr in ["system/allergyintolerance.read", "SYSTEM/AllergyIntolerance.read", "system/AllergyIntolerance.READ", "system/Foo.read"] {
        let set = ScopeSet::parse(ehr);
        assert_eq!(set.ignored.len(), 1, "{ehr} is reported");
        assert!(access(&p, ehr).decide_search(AllergyIntolerance, &params(&[("patient", "pt-1001")])).is_err(), "{ehr}");
    }
    assert!(access(&p, "system/AllergyIntolerance.read").decide_search(AllergyIntolerance, &params(&[("patient", "pt-1001")])).is_ok());
    assert!(access(&p, "system/Patient.read  system/AllergyIntolerance.read").decide_read(AllergyIntolerance, &id("a")).is_ok());
    assert!(access(&p, "system/Patient.read\tsystem/AllergyIntolerance.read").decide_read(Patient, &id("pt-1001")).is_err(), "a tab voids the whole string");

    let roles = policy_with(
        r#"
[roles.agent_role]
scopes = ["system/allergyintolerance.read", "system/Foo.read"]
tools = ["fhir.search"]
[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.search"]
"#,
    );
    assert_eq!(roles.warnings().len(), 2);
    assert!(matches!(&roles.warnings()[1], PolicyWarning::IgnoredScope { scope, error: medicodax_policy::ScopeError::UnknownType, .. } if scope == "system/Foo.read"));
    assert_eq!(
        denied(access(&roles, "system/*.rs").decide_search(AllergyIntolerance, &params(&[("patient", "pt-1001")]))),
        DenyReason::ScopeNotGranted { resource_type: AllergyIntolerance, interaction: Interaction::Search, by: Party::Agent }
    );
}

// ---------------------------------------------------------------- search parameters

#[test]
fn search_parameter_allow_lists_and_refused_families() {
    let p = policy_with(OPEN_ROLES);
    let a = access(&p, "system/*.rs");
    let ok = |t, q: &[(&str, &str)]| a.decide_search(t, &params(q));
    assert!(ok(Observation, &[("patient", "pt-1001"), ("category", "laboratory"), ("date", "ge2024-01-01"), ("date", "le2024-12-31"), ("_count", "50"), ("_sort", "-date")]).is_ok());
    assert!(ok(Patient, &[("name:exact", "Doe"), ("birthdate", "1970-01-01")]).is_ok());
    assert!(ok(Condition, &[("patient", "pt-1001"), ("code:missing", "false"), ("clinical-status:not", "resolved")]).is_ok());
    assert!(ok(Observation, &[("subject:Patient", "pt-1001")]).is_ok());
    for (t, name) in [
        (Observation, "subject.name"),
        (Observation, "subject:Patient.name"),
        (Patient, "_has:Observation:patient:code"),
        (Observation, "_revinclude"),
        (Observation, "_elements"),
        (Observation, "_contained"),
        (Observation, "_query"),
        (Observation, "_filter"),
        (Observation, "_summary"),
        (Coverage, "status"),
        (Patient, "page"),
    ] {
        assert_eq!(denied(ok(t, &[(name, "x")])), DenyReason::ParamNotAllowed { name: name.into() }, "{t} {name}");
    }
    assert_eq!(denied(ok(Observation, &[("_sort", "subject-name")])), DenyReason::ParamNotAllowed { name: "_sort".into() });
    assert!(matches!(ok(Patient, &[("name:contains2", "x")]), Err(Refusal::BadArguments(ArgumentError::BadModifier { index: 0, .. }))));
    assert!(matches!(ok(Observation, &[("date", "yesterday")]), Err(Refusal::BadArguments(ArgumentError::BadValue { .. }))));
    assert!(matches!(ok(Observation, &[("code", "a\u{0}b")]), Err(Refusal::BadArguments(ArgumentError::ControlCharacter { index: 0 }))));
    // Values stay values: URL syntax inside a value is passed through untouched as one value.
    let plan = ok(Patient, &[("name", "Doe&_include=*")]).unwrap();
    assert_eq!(plan.queries()[0].params(), &params(&[("name", "Doe&_include=*")])[..]);
}

#[test]
fn granted_chains_and_reverse_chains_need_full_search_on_the_target() {
    let p = policy_with(
        r#"
[roles.agent_role]
scopes = ["system/*.rs"]
tools = ["fhir.search"]
extra_search_params = ["subject:Patient.name", "_has"]
[roles.coder]
scopes = ["system/Observation.rs", "system/Patient.rs"]
tools = ["fhir.search"]
extra_search_params = ["subject:Patient.name", "_has"]
"#,
    );
    let a = access(&p, "system/*.rs");
    assert!(a.decide_search(Observation, &params(&[("subject:Patient.name", "Doe")])).is_ok());
    assert!(a.decide_search(Patient, &params(&[("_has:Observation:patient:code", "2345-7")])).is_ok());
    assert_eq!(
        denied(a.decide_search(Patient, &params(&[("_has:Condition:patient:code", "x")]))),
        DenyReason::ScopeNotGranted { resource_type: Condition, interaction: Interaction::Search, by: Party::User },
        "a reverse chain into a type the user may not search"
    );
    assert_eq!(denied(a.decide_search(Observation, &params(&[("subject.name", "Doe")]))), DenyReason::ParamNotAllowed { name: "subject.name".into() });
    let ehr_obs_only = access(&p, "system/Observation.rs");
    assert_eq!(
        denied(ehr_obs_only.decide_search(Observation, &params(&[("subject:Patient.name", "Doe")]))),
        DenyReason::EhrScopeNotGranted { missing_scope: "system/Patient.s".into() },
        "a chain reads the target type"
    );
}

// ---------------------------------------------------------------- narrowing and filtering

fn constrained_policy(agent_scopes: &str) -> Policy {
    policy_with(&format!(
        r#"
[roles.agent_role]
scopes = [{agent_scopes}]
tools = ["fhir.read", "fhir.search"]
extra_search_params = ["_elements"]
[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search"]
extra_search_params = ["_elements"]
"#
    ))
}

#[test]
fn query_constraint_is_added_to_the_query_and_checked_on_results() {
    let p = constrained_policy(&format!("\"system/Observation.rs?category={LAB}\""));
    assert_eq!(p.warnings(), &[]);
    let a = access(&p, "system/*.rs");
    let plan = a.decide_search(Observation, &params(&[("patient", "pt-1001")])).unwrap();
    assert_eq!(plan.queries().len(), 1);
    let q = &plan.queries()[0];
    assert_eq!(q.params(), &params(&[("patient", "pt-1001"), ("category", LAB)])[..]);
    assert_eq!(q.added_params().collect::<Vec<_>>(), vec!["category"]);
    assert_eq!(q.narrowing_params().collect::<Vec<_>>(), vec!["category"]);

    let merged = plan.merge(vec![vec![obs("o1", "laboratory", "pt-1001"), obs("o2", "vital-signs", "pt-1001"), obs("o1", "laboratory", "pt-1001")]]);
    assert_eq!(merged.resources.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), vec!["o1"]);
    assert_eq!((merged.refused, merged.duplicates), (1, 1));
    assert!(!plan.total_is_reliable(&merged), "a total counting a refused resource would leak it");
    let clean = plan.merge(vec![vec![obs("o1", "laboratory", "pt-1001")]]);
    assert!(plan.total_is_reliable(&clean));

    // The caller's own value within the constraint stands in for it.
    let own = a.decide_search(Observation, &params(&[("patient", "pt-1001"), ("category", LAB)])).unwrap();
    assert_eq!(own.queries()[0].params().len(), 2);
    assert_eq!(own.queries()[0].added_params().count(), 0);
    assert_eq!(own.queries()[0].narrowing_params().collect::<Vec<_>>(), vec!["category"]);

    // Outside the constraint: denied. A bare code is broader than system|code.
    for v in [VITALS, "laboratory", &format!("{LAB},{VITALS}")] {
        assert_eq!(denied(a.decide_search(Observation, &params(&[("category", v)]))), DenyReason::ConstraintConflict { name: "category".into() }, "{v}");
    }
    assert_eq!(denied(a.decide_search(Observation, &params(&[("category:not", LAB)]))), DenyReason::ConstraintConflict { name: "category".into() });

    // Reads are restricted and checked.
    let read = a.decide_read(Observation, &id("o1")).unwrap();
    assert!(read.restricted());
    assert_eq!(read.check(&obs("o1", "laboratory", "pt-1001")), Ok(()));
    assert_eq!(read.check(&obs("o1", "vital-signs", "pt-1001")), Err(Refusal::Denied(DenyReason::ConstraintNotSatisfied)));
    assert_eq!(read.check(&obs("o9", "laboratory", "pt-1001")), Err(Refusal::Denied(DenyReason::UnexpectedResource)));
    assert_eq!(
        denied(a.decide_read(Condition, &id("c1"))),
        DenyReason::ScopeNotGranted { resource_type: Condition, interaction: Interaction::Read, by: Party::Agent },
        "the agent's only scope is the constrained Observation one"
    );
}

#[test]
fn constraints_that_cannot_be_checked_on_results_are_reported_and_fail_closed() {
    let p = constrained_policy("\"system/Observation.rs?date=ge2024-01-01\"");
    assert_eq!(
        p.warnings(),
        &[PolicyWarning::UnverifiableConstraint { role: "agent_role".into(), scope: "system/Observation.rs?date=ge2024-01-01".into(), param: "date".into() }]
    );
    let a = access(&p, "system/*.rs");
    let plan = a.decide_search(Observation, &params(&[("patient", "pt-1001")])).unwrap();
    assert_eq!(plan.queries()[0].params(), &params(&[("patient", "pt-1001"), ("date", "ge2024-01-01")])[..]);
    assert!(!plan.admit(&obs("o1", "laboratory", "pt-1001")), "what cannot be verified is not returned");
    // Percent-encoded constraint values (as some servers grant them) mean the same.
    let enc = access(&policy_with(OPEN_ROLES), "system/Observation.rs?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory");
    let plan = enc.decide_search(Observation, &params(&[("patient", "pt-1001")])).unwrap();
    assert_eq!(plan.queries()[0].params(), &params(&[("patient", "pt-1001"), ("category", LAB)])[..]);
}

#[test]
fn or_ed_constraints_give_one_query_per_alternative() {
    let p = constrained_policy(&format!("\"system/Observation.rs?category={LAB}\", \"system/Observation.rs?category={VITALS}&status=final\""));
    let a = access(&p, "system/*.rs");
    let plan = a.decide_search(Observation, &params(&[("patient", "pt-1001")])).unwrap();
    let qs: Vec<Vec<(String, String)>> = plan.queries().iter().map(|q| q.params().to_vec()).collect();
    assert_eq!(
        qs,
        vec![params(&[("patient", "pt-1001"), ("category", LAB)]), params(&[("patient", "pt-1001"), ("category", VITALS), ("status", "final")])]
    );
    assert_eq!(plan.queries()[1].added_params().collect::<Vec<_>>(), vec!["category", "status"]);
    let mut prelim_vitals = obs("o3", "vital-signs", "pt-1001");
    prelim_vitals["status"] = json!("preliminary");
    let merged = plan.merge(vec![vec![obs("o1", "laboratory", "pt-1001")], vec![obs("o2", "vital-signs", "pt-1001"), prelim_vitals, obs("o1", "laboratory", "pt-1001")]]);
    assert_eq!(merged.resources.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), vec!["o1", "o2"]);
    assert_eq!((merged.refused, merged.duplicates), (1, 1));

    // A caller asking for vital signs only gets the compatible alternative.
    let v = a.decide_search(Observation, &params(&[("category", VITALS)])).unwrap();
    assert_eq!(v.queries().len(), 1);
    assert_eq!(v.queries()[0].params(), &params(&[("category", VITALS), ("status", "final")])[..]);
    assert_eq!(v.queries()[0].narrowing_params().collect::<Vec<_>>(), vec!["category", "status"]);
}

#[test]
fn constraints_of_two_parties_intersect_and_elements_keep_what_the_filter_needs() {
    let p = constrained_policy(&format!("\"system/Observation.rs?category={LAB}\""));
    let a = access(&p, "system/Observation.rs?status=final system/Patient.rs");
    let plan = a.decide_search(Observation, &params(&[("patient", "pt-1001"), ("_elements", "code,value")])).unwrap();
    assert_eq!(plan.queries()[0].params(), &params(&[("patient", "pt-1001"), ("_elements", "code,value,category,status"), ("category", LAB), ("status", "final")])[..]);
    let mut prelim = obs("o1", "laboratory", "pt-1001");
    assert!(plan.admit(&prelim));
    prelim["status"] = json!("preliminary");
    assert!(!plan.admit(&prelim), "the EHR's constraint is enforced too");
}

// ---------------------------------------------------------------- pitfall 20: fail closed

#[test]
fn pitfall_20_ignored_narrowing_parameter_fails_closed() {
    let p = constrained_policy(&format!("\"system/Observation.rs?category={LAB}\""));
    let a = access(&p, "system/*.rs");
    let plan = a.decide_search(Observation, &params(&[("patient", "pt-1001")])).unwrap();
    let q = &plan.queries()[0];
    assert_eq!(q.on_ignored_params(["datee"]), IgnoredVerdict::Proceed, "a caller parameter the server ignored: a warning only");
    assert_eq!(q.on_ignored_params(["datee", "category"]), IgnoredVerdict::FailClosed { param: "category".into() });
    assert_eq!(q.on_ignored_params(["category:text"]), IgnoredVerdict::FailClosed { param: "category".into() });
    assert_eq!(q.on_unnamed_ignored(), IgnoredVerdict::FailClosed { param: "category".into() });

    // Under a patient list, the patient parameter narrows access; subject stands for it.
    let listed = patient_list_policy();
    let a = access(&listed, "system/*.rs");
    let plan = a.decide_search(Observation, &params(&[("patient", "pt-1001"), ("code", "2345-7")])).unwrap();
    let q = &plan.queries()[0];
    assert_eq!(q.added_params().count(), 0);
    assert_eq!(q.on_ignored_params(["subject"]), IgnoredVerdict::FailClosed { param: "patient".into() });
    assert_eq!(q.on_ignored_params(["code"]), IgnoredVerdict::Proceed);

    // With neither constraint nor list, nothing narrows: ignoring is only a warning.
    let open = policy_with(OPEN_ROLES);
    let plain = access(&open, "system/*.rs").decide_search(Observation, &params(&[("patient", "pt-1001")])).unwrap();
    assert_eq!(plain.queries()[0].on_ignored_params(["patient"]), IgnoredVerdict::Proceed);
    assert_eq!(plain.queries()[0].on_unnamed_ignored(), IgnoredVerdict::Proceed);
}

// ---------------------------------------------------------------- patient lists

fn patient_list_policy() -> Policy {
    policy_with(
        r#"
[roles.agent_role]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search", "encounter.bundle"]
patients = ["pt-1001", "pt-3003"]
[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search", "encounter.bundle"]
"#,
    )
}

#[test]
fn patient_list_narrows_searches_and_filters_results() {
    let p = patient_list_policy();
    let a = access(&p, "system/*.rs");
    assert_eq!(denied(a.decide_search(Observation, &params(&[("code", "2345-7")]))), DenyReason::PatientParamRequired);
    assert_eq!(denied(a.decide_search(Observation, &params(&[("patient", "pt-2002")]))), DenyReason::PatientNotInList);
    assert_eq!(denied(a.decide_search(Observation, &params(&[("patient", "pt-1001,pt-2002")]))), DenyReason::PatientNotInList);
    assert_eq!(denied(a.decide_search(Observation, &params(&[("subject", "Group/g1")]))), DenyReason::PatientNotInList);
    assert_eq!(denied(a.decide_search(Observation, &params(&[("patient:identifier", "urn:mrn|42")]))), DenyReason::PatientParamRequired);
    assert_eq!(denied(a.decide_search(Patient, &params(&[("name", "Doe")]))), DenyReason::PatientParamRequired);
    assert!(a.decide_search(Patient, &params(&[("_id", "pt-1001,pt-3003")])).is_ok());
    assert!(a.decide_search(AllergyIntolerance, &params(&[("patient", "Patient/pt-1001")])).is_ok());
    assert_eq!(denied(a.decide_search(AllergyIntolerance, &params(&[("subject", "pt-1001")]))), DenyReason::ParamNotAllowed { name: "subject".into() });

    let plan = a.decide_search(Observation, &params(&[("subject", "Patient/pt-1001")])).unwrap();
    assert_eq!(plan.queries()[0].narrowing_params().collect::<Vec<_>>(), vec!["subject"]);
    let merged = plan.merge(vec![vec![obs("o1", "laboratory", "pt-1001"), obs("o2", "laboratory", "pt-2002")]]);
    assert_eq!(merged.resources.len(), 1);
    assert_eq!(merged.refused, 1);

    assert_eq!(denied(a.decide_read(Patient, &id("pt-2002"))), DenyReason::PatientNotInList, "refused before any request");
    assert!(a.decide_read(Patient, &id("pt-1001")).is_ok());
    let read = a.decide_read(Observation, &id("o2")).unwrap();
    assert!(read.restricted(), "an upstream 404 must give the same 403");
    assert_eq!(read.check(&obs("o2", "laboratory", "pt-2002")), Err(Refusal::Denied(DenyReason::PatientNotInList)));
}

#[test]
fn user_patient_lists_intersect_with_role_lists() {
    let p = patient_list_policy();
    let mut u = coder();
    u.patients = Some(vec!["pt-3003".into(), "pt-2002".into()]);
    let a = p.caller("agent-runner-test", "coder", Some(&u)).unwrap().on_connection("c", &ScopeSet::parse("system/*.rs")).unwrap();
    assert_eq!(a.patient_list().unwrap().iter().collect::<Vec<_>>(), vec!["pt-3003"]);
    assert!(a.decide_read(Patient, &id("pt-3003")).is_ok());
    assert_eq!(denied(a.decide_read(Patient, &id("pt-1001"))), DenyReason::PatientNotInList, "the agent's role allows it, the user's list does not");
    assert_eq!(denied(a.decide_read(Patient, &id("pt-2002"))), DenyReason::PatientNotInList, "the user's list allows it, the agent's role does not");
}

// ---------------------------------------------------------------- encounter bundle

#[test]
fn bundle_withholds_types_not_granted_whatever_the_data() {
    let p = policy_with(OPEN_ROLES);
    let a = access(&p, "system/Encounter.r system/Patient.r system/Condition.rs system/Procedure.rs system/Observation.rs system/MedicationRequest.rs system/DiagnosticReport.rs system/DocumentReference.rs system/Immunization.rs");
    let plan = a.decide_bundle(&id("enc-1")).unwrap();
    assert_eq!(plan.withheld(), vec![AllergyIntolerance, Coverage]);
    assert_eq!(plan.withheld_reasons()[0].1, DenyReason::EhrScopeNotGranted { missing_scope: "system/AllergyIntolerance.s".into() });
    assert_eq!(plan.permitted().len(), 8);
    assert_eq!(plan.encounter().id().as_str(), "enc-1");
    let cond = a.bundle_part(Condition, &id("pt-1001"), &id("enc-1")).unwrap();
    assert_eq!(cond.queries()[0].params(), &params(&[("patient", "pt-1001"), ("encounter", "enc-1")])[..]);
    let imm = a.bundle_part(ResourceType::Immunization, &id("pt-1001"), &id("enc-1")).unwrap();
    assert_eq!(imm.queries()[0].params(), &params(&[("patient", "pt-1001")])[..]);

    let no_encounter = access(&p, "system/Patient.rs");
    assert_eq!(denied(no_encounter.decide_bundle(&id("enc-1"))), DenyReason::EhrScopeNotGranted { missing_scope: "system/Encounter.r".into() });
}

#[test]
fn bundle_under_a_patient_list_checks_the_encounter_patient() {
    let p = patient_list_policy();
    let a = access(&p, "system/*.rs");
    let plan = a.decide_bundle(&id("enc-1")).unwrap();
    assert!(plan.withheld().is_empty());
    let enc = |pt: &str| json!({"resourceType":"Encounter","id":"enc-1","subject":{"reference":format!("Patient/{pt}")}});
    assert_eq!(plan.encounter().check(&enc("pt-1001")), Ok(()));
    assert_eq!(plan.encounter().check(&enc("pt-2002")), Err(Refusal::Denied(DenyReason::PatientNotInList)));
    assert_eq!(medicodax_policy::patient_id(&enc("pt-1001")).as_deref(), Some("pt-1001"));
    assert!(a.bundle_part(DocumentReference, &id("pt-1001"), &id("enc-1")).is_ok());
    assert_eq!(denied(a.bundle_part(DocumentReference, &id("pt-2002"), &id("enc-1"))), DenyReason::PatientNotInList);
}

// ---------------------------------------------------------------- redaction

#[test]
fn redactions_union_across_parties_and_block_searches_on_redacted_elements() {
    let p = policy_with(
        r#"
[roles.agent_role]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search"]
redact = ["Patient.telecom", "Patient.identifier", "Patient.telecoms"]
[roles.coder]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search"]
redact = ["Patient.address", "Patient.id", "Observation.subject.display"]
"#,
    );
    assert_eq!(
        p.warnings(),
        &[
            PolicyWarning::UnknownRedactionPath { role: "agent_role".into(), path: "Patient.telecoms".into() },
            PolicyWarning::IgnoredRedactionPath {
                role: "coder".into(),
                path: "Patient.id".into(),
                why: "id and resourceType cannot be redacted: filtering and the audit log need them".into()
            },
        ]
    );
    let a = access(&p, "system/*.rs");
    let mut pt = json!({"resourceType":"Patient","id":"pt-1001","telecom":[{"value":"555"}],"identifier":[{"value":"42"}],
        "address":[{"city":"X"}],"gender":"female","text":{"div":"<div>555, X</div>"}});
    a.redactor().apply(&mut pt);
    assert_eq!(pt, json!({"resourceType":"Patient","id":"pt-1001","gender":"female"}));
    let mut o = obs("o1", "laboratory", "pt-1001");
    o["subject"]["display"] = json!("Jane Doe");
    a.redactor().apply(&mut o);
    assert_eq!(o["subject"], json!({"reference":"Patient/pt-1001"}));

    // Searching by a redacted element would let the agent probe it.
    for (name, value) in [("phone", "555-0100"), ("identifier", "urn:mrn|42"), ("address-city", "X")] {
        let r = a.decide_search(Patient, &params(&[(name, value)]));
        assert!(matches!(denied(r), DenyReason::ParamTargetsRedactedElement { .. } | DenyReason::ParamNotAllowed { .. }), "{name}");
    }
    assert_eq!(denied(a.decide_search(Patient, &params(&[("phone", "555")]))), DenyReason::ParamTargetsRedactedElement { name: "phone".into() });
    assert_eq!(
        denied(a.decide_search(Observation, &params(&[("patient:identifier", "urn:mrn|42")]))),
        DenyReason::ParamTargetsRedactedElement { name: "patient:identifier".into() }
    );
    assert!(a.decide_search(Patient, &params(&[("name", "Doe")])).is_ok());
    assert!(
        a.decide_search(Observation, &params(&[("patient", "pt-1001")])).is_ok(),
        "redacting subject.display does not block searching by the subject's id"
    );
}

// ---------------------------------------------------------------- principals

#[test]
fn may_act_for_roles_users_and_self() {
    let p = policy_with(OPEN_ROLES);
    let ok = |sub: &str, u: Option<&UserRecord>| p.caller("agent-runner-test", sub, u);
    let c = ok("coder", Some(&coder())).unwrap();
    assert_eq!((c.agent_id(), c.user_name()), ("agent-runner-test", Some("coder")));
    assert!(ok("alice", Some(&user("alice", &[]))).is_ok(), "user:alice");
    assert!(ok("bob", Some(&user("bob", &[]))).is_ok(), "a bare name");
    assert_eq!(denied(ok("carol", Some(&user("carol", &[])))), DenyReason::ActForNotAllowed);
    assert_eq!(denied(ok("carol", None)), DenyReason::UnknownUser);
    assert_eq!(denied(ok("carol", Some(&coder()))), DenyReason::UnknownUser, "a record for someone else");
    assert_eq!(denied(ok("dave", Some(&user("dave", &["coder", "ghost"])))), DenyReason::UnknownRole { role: "ghost".into(), by: Party::User });
    let me = ok("agent-runner-test", None).unwrap();
    assert_eq!(me.user_name(), None, "an agent may always act as itself");
    assert!(me.on_connection("c", &ScopeSet::parse("system/*.rs")).unwrap().decide_read(Patient, &id("pt-1001")).is_ok());
    assert_eq!(denied(p.caller("stranger", "coder", Some(&coder()))), DenyReason::UnknownAgent);
}

#[test]
fn agents_with_unknown_roles_and_unusable_act_for_entries_are_reported_and_denied() {
    let roles = Config::from_toml(OPEN_ROLES).unwrap().roles;
    let agent = medicodax_config::AgentConfig {
        id: "a1".into(),
        jwks: None,
        jwks_url: None,
        roles: vec!["agent_role".into(), "ghost".into()],
        may_act_for: vec!["*".into(), "role:nope".into(), "".into(), "user:alice".into()],
    };
    let p = Policy::new(&roles, &[agent.clone(), agent]);
    assert_eq!(
        p.warnings(),
        &[
            PolicyWarning::UnknownAgentRole { agent: "a1".into(), role: "ghost".into() },
            PolicyWarning::UnusableActFor { agent: "a1".into(), entry: "*".into() },
            PolicyWarning::UnusableActFor { agent: "a1".into(), entry: "role:nope".into() },
            PolicyWarning::UnusableActFor { agent: "a1".into(), entry: "".into() },
            PolicyWarning::DuplicateAgent { agent: "a1".into() },
        ]
    );
    assert_eq!(denied(p.caller("a1", "a1", None)), DenyReason::UnknownRole { role: "ghost".into(), by: Party::Agent });
}

// ---------------------------------------------------------------- intersection of tools, connections, scopes

#[test]
fn tools_connections_and_scopes_intersect_across_parties() {
    let p = policy_with(
        r#"
[roles.agent_role]
scopes = ["system/*.rs"]
tools = ["fhir.read", "fhir.search", "connections.list"]
connections = ["epic-sandbox"]
[roles.coder]
scopes = ["system/Patient.rs", "system/Encounter.rs"]
tools = ["fhir.read", "encounter.bundle", "connections.list"]
[roles.auditor]
scopes = ["system/Observation.r"]
tools = ["fhir.search"]
connections = ["ecw-sandbox"]
"#,
    );
    let c = p.caller("agent-runner-test", "coder", Some(&coder())).unwrap();
    assert_eq!(c.decide_tool(ToolName::FhirRead, Some("epic-sandbox")), Ok(()));
    assert_eq!(denied(c.decide_tool(ToolName::FhirSearch, Some("epic-sandbox"))), DenyReason::ToolNotGranted { tool: ToolName::FhirSearch, by: Party::User });
    assert_eq!(denied(c.decide_tool(ToolName::EncounterBundle, Some("epic-sandbox"))), DenyReason::ToolNotGranted { tool: ToolName::EncounterBundle, by: Party::Agent });
    assert_eq!(
        denied(c.decide_tool(ToolName::FhirRead, Some("ecw-sandbox"))),
        DenyReason::ConnectionNotGranted { connection: "ecw-sandbox".into(), by: Party::Agent }
    );
    assert_eq!(denied(c.decide_tool(ToolName::FhirRead, None)), DenyReason::ConnectionRequired);
    assert_eq!(
        denied(c.decide_tool(ToolName::FhirRead, Some("Jane Doe, DOB 1970-01-01"))),
        DenyReason::ConnectionNotGranted { connection: "(not a connection name)".into(), by: Party::Agent },
        "free text from the arguments never reaches the audit reason"
    );
    assert_eq!(c.decide_tool(ToolName::ConnectionsList, None), Ok(()));
    assert_eq!(c.visible_connections(["epic-sandbox", "ecw-sandbox"]), vec!["epic-sandbox"]);
    assert!(c.on_connection("ecw-sandbox", &ScopeSet::parse("system/*.rs")).is_err());
    let a = c.on_connection("epic-sandbox", &ScopeSet::parse("system/*.rs")).unwrap();
    assert_eq!(
        denied(a.decide_read(Observation, &id("o1"))),
        DenyReason::ScopeNotGranted { resource_type: Observation, interaction: Interaction::Read, by: Party::User }
    );
    assert!(a.decide_read(Encounter, &id("e1")).is_ok());

    // Within one party, roles are a union: coder + auditor may read Observations and use both connections' union.
    let both = p.caller("agent-runner-test", "coder", Some(&user("coder", &["coder", "auditor"]))).unwrap();
    assert_eq!(both.decide_tool(ToolName::FhirSearch, Some("epic-sandbox")), Ok(()));
    let a = both.on_connection("epic-sandbox", &ScopeSet::parse("system/*.rs")).unwrap();
    assert!(a.decide_read(Observation, &id("o1")).is_ok());
    assert_eq!(
        denied(a.decide_search(Observation, &params(&[("patient", "pt-1001")]))),
        DenyReason::ScopeNotGranted { resource_type: Observation, interaction: Interaction::Search, by: Party::User }
    );
}

#[allow(dead_code)]
fn _caller_is_send_and_sync(c: Caller, a: Access) -> impl Send + Sync {
    (c, a)
}
