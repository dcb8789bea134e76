//! Access policy for MEDICODAX: the policy layer of `DESIGN.md` (§1 step 2 and step 5).
//!
//! Pure decision logic: no HTTP, no storage, no clock, no logging. Inputs are the
//! configuration's roles and agents, the user record the gateway's store holds for
//! `sub`, the scopes the EHR granted for the connection, and the call's arguments.
//! Outputs are decisions with typed reasons, search plans, result filters and redactions.
//!
//! # The decision pipeline (how the gateway calls it)
//!
//! ```text
//! startup   Policy::from_config(&config)            → log/audit policy.warnings() once
//! per call  policy.caller(iss, sub, user_record)    → Caller   (agent, may_act_for, user, roles)
//!           caller.decide_tool(tool, connection)    → ()       (tool ∩, connection ∩)
//!           caller.visible_connections(names)                  (connections.list only)
//!           caller.on_connection(conn, &ehr_scopes) → Access   (the EHR's granted set)
//!           access.decide_read(type, id)            → ReadPlan
//!           access.decide_search(type, params)      → SearchPlan (one or more queries)
//!           access.decide_bundle(encounter)         → BundlePlan (withheld types),
//!             then access.decide_read(Patient, pid) and access.bundle_part(type, pid, eid)
//!           ── audit intent, then the upstream request(s) ──
//! results   read:   plan.check(&resource)   (a refusal is the same 403; if plan.restricted(),
//!                   an upstream 404 is answered with that 403 too)
//!           search: per query, query.on_ignored_params(names from OperationOutcomes):
//!                   FailClosed → no results for the whole search (pitfall 20);
//!                   plan.merge(per_query_results) → filtered, deduplicated resources;
//!                   plan.admit_included(&entry) for include-mode entries (pitfall 27(d));
//!                   pass Bundle.total on only if plan.total_is_reliable(&merged)
//!           then (after the audit log has taken ids and patients, see [`patient_id`])
//!                   access.redactor().apply(&mut resource) on everything returned
//! ```
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use medicodax_policy::{Policy, UserRecord, ScopeSet, IgnoredVerdict};
//! use medicodax_wire::{FhirId, Problem, ResourceType, ToolName};
//!
//! let config = medicodax_config::Config::from_toml(r#"
//!     [roles.coder]
//!     scopes = ["system/*.rs"]
//!     tools = ["fhir.read", "fhir.search"]
//!     redact = ["Patient.telecom"]
//!     [[agents]]
//!     id = "coding-agent"
//!     jwks = "keys/coding-agent.jwks.json"
//!     roles = ["coder"]
//!     may_act_for = ["role:coder"]
//! "#)?;
//! let policy = Policy::from_config(&config);
//! let coder = UserRecord { name: "coder".into(), roles: vec!["coder".into()], patients: None };
//! let caller = policy.caller("coding-agent", "coder", Some(&coder))?;
//! caller.decide_tool(ToolName::FhirSearch, Some("epic-sandbox"))?;
//! let granted = ScopeSet::parse("system/Patient.read system/Condition.read");
//! let access = caller.on_connection("epic-sandbox", &granted)?;
//!
//! // Observation was not granted by the EHR: refused locally, uniform 403.
//! let refused = access.decide_search(ResourceType::Observation, &[("patient".into(), "pt-1001".into())]).unwrap_err();
//! assert_eq!(refused.problem(), Problem::denied());
//! assert_eq!(refused.audit_reason(), "denied: ehr-scope-not-granted: system/Observation.s");
//!
//! let plan = access.decide_search(ResourceType::Condition, &[("patient".into(), "pt-1001".into())])?;
//! assert_eq!(plan.queries()[0].on_ignored_params(["datee"]), IgnoredVerdict::Proceed);
//! let mut patient = serde_json::json!({"resourceType": "Patient", "id": "pt-1001", "telecom": [{"value": "555"}]});
//! access.redactor().apply(&mut patient);
//! assert_eq!(patient, serde_json::json!({"resourceType": "Patient", "id": "pt-1001"}));
//! # Ok(()) }
//! ```
//!
//! Every `decide_*` returns `Result<_, Refusal>`. [`Refusal::Denied`] carries a
//! [`DenyReason`] for the outcome record (`refusal.audit_reason()`); the caller always
//! gets the same body, [`Refusal::problem`] = `Problem::denied()`. Denials on types or
//! scopes are decided before any upstream request and never depend on data, so a type
//! the EHR did not grant (pitfall 16) or the agent/user may not see (pitfall 29) gives
//! the same 403 whether or not the patient has such data. [`Refusal::BadArguments`] is a
//! 400 for malformed search parameters; it depends only on the arguments.
//!
//! # Key types
//!
//! - [`Policy`]: compiled roles and agents; [`PolicyWarning`] for what it could not use.
//! - [`Caller`]: agent and user, with each party's grants (union over its roles).
//! - [`Access`]: a caller on one connection: the effective grant is the intersection of
//!   agent, user and EHR grants ([`Access::grant`]); patient lists intersect; extra search
//!   parameters intersect; redactions union.
//! - [`ReadPlan`], [`SearchPlan`]/[`PlannedQuery`], [`BundlePlan`]: what to request and how
//!   to check what comes back ([`ResourceFilter`]).
//! - [`Redactor`]: minimum-necessary field removal.
//!
//! # Modules
//!
//! - [`scope`]: the SMART v1/v2 scope grammar and matching (also used by the sandbox EHRs
//!   to judge our tokens the way a vendor would).
//! - [`constraint`]: query-constraint algebra (normalise, intersect, token forms).
//! - [`params`]: search-parameter allow-lists and syntax.
//! - [`matching`]: checking returned resources against constraints and patient lists.
//! - [`redact`]: redaction paths and the redactor.
//! - [`policy`], [`access`], [`plan`]: principals, decisions and plans.
//! - [`reason`]: refusals and their reasons.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod access;
pub mod constraint;
pub mod matching;
pub mod params;
pub mod plan;
pub mod policy;
pub mod reason;
pub mod redact;
pub mod scope;

pub use access::Access;
pub use matching::{patient_id, ResourceFilter};
pub use plan::{BundlePlan, IgnoredVerdict, Merged, PlannedQuery, ReadPlan, SearchPlan};
pub use policy::{Caller, Policy, PolicyWarning, UserRecord};
pub use reason::{ArgumentError, DenyReason, Party, Refusal};
pub use redact::{RedactPath, Redactor};
pub use scope::{Context, Grant, Interaction, Scope, ScopeError, ScopeSet};
