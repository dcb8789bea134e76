//! Property tests: intersection semantics against an independent oracle, order
//! independence, and no panics (or leaks) on arbitrary parameters and resources.

use medicodax_config::{AgentConfig, RoleConfig};
use medicodax_policy::scope::ScopeSet;
use medicodax_policy::{Access, Interaction, Policy, Refusal, UserRecord};
use medicodax_wire::{FhirId, ResourceType};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const CAT_SYS: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// The scopes the parties draw from. Constrained ones use four atoms (lab, vitals,
/// status=final, system|laboratory), so no intersection exceeds 15 alternatives.
const UNIVERSE: &[&str] = &[
    "system/*.rs",
    "system/*.r",
    "system/Observation.rs",
    "system/Observation.s",
    "system/Observation.r",
    "system/Observation.rs?category=laboratory",
    "system/Observation.rs?category=vital-signs",
    "system/Observation.r?status=final",
    "system/Observation.rs?category=laboratory&status=final",
    "system/Observation.s?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
    "user/Observation.rs",
    "user/*.r",
    "patient/*.read",
    "patient/Observation.rs",
    "system/Patient.r",
    "system/Condition.rs",
    "system/Observation.write",
];

/// Independent oracle: does `scope` let `party` do `interaction` on this Observation?
fn oracle_scope(scope: &str, contexts: &[&str], interaction: Interaction, category: &str, status: &str) -> bool {
    let (ctx, rest) = scope.split_once('/').unwrap();
    if !contexts.contains(&ctx) {
        return false;
    }
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (ty, perms) = body.split_once('.').unwrap();
    if ty != "*" && ty != "Observation" {
        return false;
    }
    let letters = match perms {
        "read" => "rs",
        "write" => "cud",
        other => other,
    };
    let needed = if interaction == Interaction::Read { 'r' } else { 's' };
    if !letters.contains(needed) {
        return false;
    }
    query.is_none_or(|q| {
        q.split('&').all(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            match k {
                "category" => match v.split_once('|') {
                    Some((sys, code)) => sys == CAT_SYS && code == category,
                    None => v == category,
                },
                "status" => v == status,
                _ => false,
            }
        })
    })
}

fn oracle_party(scopes: &[&str], contexts: &[&str], i: Interaction, category: &str, status: &str) -> bool {
    scopes.iter().any(|s| oracle_scope(s, contexts, i, category, status))
}

fn pick(mask: &[bool]) -> Vec<&'static str> {
    UNIVERSE.iter().zip(mask).filter(|(_, on)| **on).map(|(s, _)| *s).collect()
}

fn access_for(agent: &[&str], user: &[&str], ehr: &[&str]) -> Access {
    let role = |scopes: &[&str]| RoleConfig {
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        tools: vec!["fhir.read".into(), "fhir.search".into()],
        ..RoleConfig::default()
    };
    let roles: BTreeMap<String, RoleConfig> = [("a".to_owned(), role(agent)), ("u".to_owned(), role(user))].into();
    let agents = [AgentConfig { id: "ag".into(), jwks: None, jwks_url: None, roles: vec!["a".into()], may_act_for: vec!["role:u".into()] }];
    let policy = Policy::new(&roles, &agents);
    let u = UserRecord { name: "usr".into(), roles: vec!["u".into()], patients: None };
    policy.caller("ag", "usr", Some(&u)).unwrap().on_connection("c", &ScopeSet::from_tokens(ehr.iter().copied())).unwrap()
}

fn observation(category: &str, status: &str) -> Value {
    json!({"resourceType":"Observation","id":"obs-1","status":status,
        "category":[{"coding":[{"system":CAT_SYS,"code":category}]}],"subject":{"reference":"Patient/pt-1001"}})
}

/// Whether the policy lets the caller see this Observation by `interaction`.
fn allowed(a: &Access, i: Interaction, resource: &Value) -> bool {
    match i {
        Interaction::Read => a.decide_read(ResourceType::Observation, &FhirId::new("obs-1").unwrap()).is_ok_and(|p| p.check(resource).is_ok()),
        _ => a.decide_search(ResourceType::Observation, &[("patient".into(), "pt-1001".into())]).is_ok_and(|p| p.admit(resource)),
    }
}

fn mask() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), UNIVERSE.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The effective permission is exactly the intersection of the three parties'
    /// permissions (each a union of its scopes), for reads and searches, on resources
    /// inside and outside each party's query constraints; and adding a scope to one party
    /// never grants what another party lacks.
    #[test]
    fn effective_permission_is_the_intersection(
        am in mask(), um in mask(), em in mask(),
        extra in 0..UNIVERSE.len(), party in 0..3usize,
        category in prop::sample::select(vec!["laboratory", "vital-signs"]),
        status in prop::sample::select(vec!["final", "preliminary"]),
    ) {
        let (agent, user, ehr) = (pick(&am), pick(&um), pick(&em));
        let resource = observation(category, status);
        for i in [Interaction::Read, Interaction::Search] {
            let parties = [
                oracle_party(&agent, &["system", "user"], i, category, status),
                oracle_party(&user, &["system", "user"], i, category, status),
                oracle_party(&ehr, &["system"], i, category, status),
            ];
            let a = access_for(&agent, &user, &ehr);
            prop_assert_eq!(allowed(&a, i, &resource), parties.iter().all(|p| *p), "{:?} agent={:?} user={:?} ehr={:?}", i, agent, user, ehr);

            let mut grown = [agent.clone(), user.clone(), ehr.clone()];
            grown[party].push(UNIVERSE[extra]);
            let b = access_for(&grown[0], &grown[1], &grown[2]);
            if allowed(&b, i, &resource) {
                for (p, ok) in parties.iter().enumerate() {
                    prop_assert!(p == party || *ok, "adding {} to party {} granted what party {} lacks", UNIVERSE[extra], party, p);
                }
            }
        }
    }

    /// The order of granted scopes never changes a decision.
    #[test]
    fn scope_order_is_irrelevant(em in mask(), seed in any::<u64>()) {
        let ehr = pick(&em);
        let mut shuffled = ehr.clone();
        let n = shuffled.len();
        for k in (1..n).rev() {
            shuffled.swap(k, (seed as usize).wrapping_add(k * 7919) % (k + 1));
        }
        let a = access_for(&["system/*.rs"], &["system/*.rs"], &ehr);
        let b = access_for(&["system/*.rs"], &["system/*.rs"], &shuffled);
        for t in ResourceType::ALL {
            for i in [Interaction::Read, Interaction::Search] {
                prop_assert_eq!(a.grant(t, i), b.grant(t, i));
            }
        }
    }
}

// ---------------------------------------------------------------- arbitrary input

fn loaded_access() -> Access {
    let role = RoleConfig {
        scopes: vec![
            "system/*.rs".into(),
            "system/Observation.rs?category=laboratory".into(),
            "system/Observation.rs?category=vital-signs&status=final".into(),
        ],
        tools: vec!["fhir.search".into()],
        redact: vec!["Patient.telecom".into(), "Patient.address".into(), "Observation.subject.display".into()],
        extra_search_params: ["_include", "_revinclude", "_has", "_elements", "_contained", "_query", "_filter", "subject:Patient.name", "code:below"]
            .map(String::from)
            .to_vec(),
        patients: Some(vec!["pt-1001".into(), "pt-2002".into()]),
        ..RoleConfig::default()
    };
    let mut plain = role.clone();
    plain.scopes = vec!["system/*.rs".into()];
    plain.patients = None;
    let roles: BTreeMap<String, RoleConfig> = [("a".to_owned(), role), ("u".to_owned(), plain)].into();
    let agents = [AgentConfig { id: "ag".into(), jwks: None, jwks_url: None, roles: vec!["a".into()], may_act_for: vec!["role:u".into()] }];
    let u = UserRecord { name: "usr".into(), roles: vec!["u".into()], patients: None };
    Policy::new(&roles, &agents).caller("ag", "usr", Some(&u)).unwrap().on_connection("c", &ScopeSet::parse("system/*.rs")).unwrap()
}

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "patient", "subject", "category", "code", "status", "date", "_id", "_count", "_sort", "_include", "_revinclude", "_elements",
            "_has:Observation:patient:code", "subject:Patient.name", "subject.name", "patient:missing", "category:not", "code:below",
            "_lastUpdated", "name", "phone", "_contained", "encounter", "subject:Patient", "_has:Foo:x:y", "_has:", "a.b.c", "_",
        ])
        .prop_map(String::from),
        "[a-z_:.\\-]{0,12}",
        "\\PC{0,8}",
    ]
}

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "pt-1001", "Patient/pt-1001", "pt-1001,pt-2002", "pt-3003", "laboratory", "vital-signs", "http://x|laboratory", "|", "ge2024-01-01",
            "10", "0", "-date", "Observation:subject", "*", "true", "code,status", "\\,", ",", "Group/g",
        ])
        .prop_map(String::from),
        "\\PC{0,20}",
        ".{0,20}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec!["Patient", "Observation", "Patient/pt-1001", "Patient/pt-9", "laboratory", "final", CAT_SYS, "obs-1", "pt-1001"])
            .prop_map(Value::from),
        ".{0,10}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "resourceType", "id", "subject", "patient", "reference", "category", "coding", "system", "code", "status", "telecom", "_telecom",
            "contained", "text", "address", "display", "beneficiary", "entry", "resource",
        ])
        .prop_map(String::from),
        "[a-zA-Z_]{0,6}",
    ];
    leaf.prop_recursive(5, 96, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// No Patient object anywhere in `v` still has a redacted element or a narrative.
fn no_redacted_left(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(no_redacted_left),
        Value::Object(o) => {
            let is_patient = o.get("resourceType").and_then(Value::as_str) == Some("Patient");
            let clean = !is_patient || ["telecom", "_telecom", "address", "_address", "text"].iter().all(|k| !o.contains_key(*k));
            clean && o.values().all(no_redacted_left)
        }
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Arbitrary parameters never panic; an allowed plan keeps every caller parameter,
    /// sends every narrowing parameter, and names its patient parameter under the list.
    #[test]
    fn arbitrary_params_never_panic(t in prop::sample::select(ResourceType::ALL.to_vec()), ps in prop::collection::vec((param_name(), param_value()), 0..6)) {
        let a = loaded_access();
        match a.decide_search(t, &ps) {
            Ok(plan) => {
                prop_assert!(!plan.queries().is_empty());
                for q in plan.queries() {
                    for (n, _) in &ps {
                        prop_assert!(q.params().iter().any(|(m, _)| m == n), "caller parameter {} kept", n);
                    }
                    for n in q.narrowing_params() {
                        prop_assert!(q.params().iter().any(|(m, _)| m == n));
                    }
                    prop_assert!(
                        q.narrowing_params().any(|n| ["patient", "subject", "_id"].contains(&n.split(':').next().unwrap_or(n))),
                        "the patient list narrows every query"
                    );
                }
            }
            Err(Refusal::Denied(_)) => {}
            Err(Refusal::BadArguments(e)) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Arbitrary resources never panic the filter, the merge, patient_id or the redactor;
    /// merged results are exactly those the filter admits; redaction leaves no redacted
    /// element in any embedded Patient.
    #[test]
    fn arbitrary_resources_never_panic(mut v in json_value(), mut embedded in json_value()) {
        let a = loaded_access();
        let plan = a.decide_search(ResourceType::Observation, &[("patient".into(), "pt-1001".into())]).unwrap();
        let _ = medicodax_policy::patient_id(&v);
        let _ = plan.admit_included(&v);
        let merged = plan.merge(vec![vec![v.clone(), embedded.clone()]]);
        prop_assert!(merged.resources.iter().all(|r| plan.admit(r)));
        prop_assert_eq!(merged.resources.len() + merged.refused + merged.duplicates, 2);
        let read = a.decide_read(ResourceType::Observation, &FhirId::new("obs-1").unwrap()).unwrap();
        let _ = read.check(&v);
        if let Value::Object(o) = &mut embedded {
            o.insert("resourceType".into(), json!("Patient"));
        }
        if let Value::Object(o) = &mut v {
            o.insert("contained".into(), json!([embedded]));
        }
        a.redactor().apply(&mut v);
        prop_assert!(no_redacted_left(&v));
    }
}
