//! Why a call was refused: typed reasons for the audit log, one uniform answer for the caller.
//!
//! A [`Refusal`] is either a denial ([`DenyReason`], answered with the one 403 body
//! [`Problem::denied`] whatever the rule) or malformed arguments ([`ArgumentError`],
//! answered with a 400 that says what to fix). Malformed-argument checks look only at the
//! arguments, never at data or grants, so a 400 reveals nothing a 403 would hide.
//!
//! Reasons carry rule names, resource type names, parameter *names*, role names and scope
//! strings; never parameter values, patient ids or resource content, so they can be
//! written to the audit log and to ordinary logs.

use crate::scope::Interaction;
use medicodax_wire::{Problem, ProblemCode, ResourceType, ToolName};
use serde::Serialize;
use std::fmt;

/// Which party to a call lacks a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Party {
    /// The calling agent, through its configured roles.
    Agent,
    /// The user the agent acts for (`sub`), through the roles the store gives them.
    User,
    /// The EHR connection, through the scopes its authorization server granted.
    Ehr,
}

impl Party {
    /// The lower-case name used in reasons.
    pub const fn as_str(self) -> &'static str {
        match self {
            Party::Agent => "agent",
            Party::User => "user",
            Party::Ehr => "ehr",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn interaction_str(i: Interaction) -> &'static str {
    match i {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

/// The policy rule that denied a call (internal: for the audit log, never for the caller).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum DenyReason {
    /// The `iss` is not a configured agent.
    #[error("unknown-agent")]
    UnknownAgent,
    /// `sub` names a user the store does not have (or the record given is for someone else).
    #[error("unknown-user")]
    UnknownUser,
    /// A role held by the agent or the user is not configured.
    #[error("unknown-role: {role} (held by {by})")]
    UnknownRole {
        /// The role name.
        role: String,
        /// Who holds it.
        by: Party,
    },
    /// The agent's `may_act_for` does not allow the user named in `sub`.
    #[error("act-for-not-allowed")]
    ActForNotAllowed,
    /// The tool is not granted to the agent or the user.
    #[error("tool-not-granted: {tool} (by {by})")]
    ToolNotGranted {
        /// The tool.
        tool: ToolName,
        /// The party lacking it.
        by: Party,
    },
    /// The connection is not granted to the agent or the user.
    #[error("connection-not-granted: {connection} (by {by})")]
    ConnectionNotGranted {
        /// The connection name.
        connection: String,
        /// The party lacking it.
        by: Party,
    },
    /// The tool needs a connection and the call named none.
    #[error("connection-required")]
    ConnectionRequired,
    /// The agent's or the user's roles grant no scope for this interaction on this type.
    #[error("scope-not-granted: {} {resource_type} (by {by})", interaction_str(*interaction))]
    ScopeNotGranted {
        /// The resource type.
        resource_type: ResourceType,
        /// The interaction.
        interaction: Interaction,
        /// The party lacking it.
        by: Party,
    },
    /// The EHR did not grant the scope this request needs (pitfall 16): refused locally.
    #[error("ehr-scope-not-granted: {missing_scope}")]
    EhrScopeNotGranted {
        /// The scope that would be needed, in v2 form (`system/Observation.s`).
        missing_scope: String,
    },
    /// A search parameter is neither on the type's allow-list nor granted as an extra.
    #[error("param-not-allowed: {name}")]
    ParamNotAllowed {
        /// The parameter name as sent (validated: 1-128 characters of `A-Za-z0-9_-.:`).
        name: String,
    },
    /// A search parameter targets an element the caller's roles redact.
    #[error("param-targets-redacted-element: {name}")]
    ParamTargetsRedactedElement {
        /// The parameter name.
        name: String,
    },
    /// The caller set a scope-constraint parameter to something outside every constraint.
    #[error("constraint-conflict: {name}")]
    ConstraintConflict {
        /// The constrained parameter's name.
        name: String,
    },
    /// The intersection of the parties' query constraints has too many alternatives.
    #[error("constraint-too-complex")]
    ConstraintTooComplex,
    /// A returned resource did not satisfy the query constraints of the grant.
    #[error("constraint-not-satisfied")]
    ConstraintNotSatisfied,
    /// A patient list applies and the search does not name its patients by id.
    #[error("patient-param-required")]
    PatientParamRequired,
    /// A patient list applies and the request or result concerns a patient outside it.
    #[error("patient-not-in-list")]
    PatientNotInList,
    /// The resource returned is not the type (or, for a read, the id) that was asked for.
    #[error("unexpected-resource")]
    UnexpectedResource,
}

impl DenyReason {
    /// The stable rule name (the text before any `:`), e.g. `ehr-scope-not-granted`.
    pub fn rule(&self) -> &'static str {
        match self {
            DenyReason::UnknownAgent => "unknown-agent",
            DenyReason::UnknownUser => "unknown-user",
            DenyReason::UnknownRole { .. } => "unknown-role",
            DenyReason::ActForNotAllowed => "act-for-not-allowed",
            DenyReason::ToolNotGranted { .. } => "tool-not-granted",
            DenyReason::ConnectionNotGranted { .. } => "connection-not-granted",
            DenyReason::ConnectionRequired => "connection-required",
            DenyReason::ScopeNotGranted { .. } => "scope-not-granted",
            DenyReason::EhrScopeNotGranted { .. } => "ehr-scope-not-granted",
            DenyReason::ParamNotAllowed { .. } => "param-not-allowed",
            DenyReason::ParamTargetsRedactedElement { .. } => "param-targets-redacted-element",
            DenyReason::ConstraintConflict { .. } => "constraint-conflict",
            DenyReason::ConstraintTooComplex => "constraint-too-complex",
            DenyReason::ConstraintNotSatisfied => "constraint-not-satisfied",
            DenyReason::PatientParamRequired => "patient-param-required",
            DenyReason::PatientNotInList => "patient-not-in-list",
            DenyReason::UnexpectedResource => "unexpected-resource",
        }
    }
}

/// Malformed search arguments (a 400 that says what to fix; never echoes values).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "kebab-case")]
pub enum ArgumentError {
    /// More parameters than [`crate::params::MAX_PARAMS`].
    #[error("too many search parameters: at most {max} are accepted")]
    TooManyParams {
        /// The limit.
        max: usize,
    },
    /// A parameter name is empty, too long, or has a character outside `A-Za-z0-9_-.:`.
    #[error("search parameter {index}: the name must be 1-{max} characters from A-Z a-z 0-9 _ - . :")]
    BadName {
        /// Position in `params`, from 0.
        index: usize,
        /// The length limit.
        max: usize,
    },
    /// A parameter value is empty or longer than the limit.
    #[error("search parameter {index}: the value must be 1-{max} bytes")]
    BadValueLength {
        /// Position in `params`, from 0.
        index: usize,
        /// The length limit.
        max: usize,
    },
    /// A parameter value holds a control character (tab, newline, NUL, ...).
    #[error("search parameter {index}: the value holds a control character")]
    ControlCharacter {
        /// Position in `params`, from 0.
        index: usize,
    },
    /// A value does not have the form its parameter needs.
    #[error("search parameter {index} ({name}): expected {expected}")]
    BadValue {
        /// Position in `params`, from 0.
        index: usize,
        /// The parameter name (validated).
        name: String,
        /// What the value should look like.
        expected: &'static str,
    },
    /// A modifier that this parameter does not take.
    #[error("search parameter {index} ({name}): this modifier is not supported here")]
    BadModifier {
        /// Position in `params`, from 0.
        index: usize,
        /// The parameter name (validated).
        name: String,
    },
}

/// Why a decision did not allow the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum Refusal {
    /// A policy denial: the caller gets [`Problem::denied`], the audit log gets the reason.
    #[error("denied: {0}")]
    Denied(DenyReason),
    /// Malformed arguments: the caller gets a 400 naming what to fix.
    #[error("bad arguments: {0}")]
    BadArguments(ArgumentError),
}

impl Refusal {
    /// The problem document to send. Every denial gives the same body.
    pub fn problem(&self) -> Problem {
        match self {
            Refusal::Denied(_) => Problem::denied(),
            Refusal::BadArguments(e) => Problem::new(ProblemCode::BadArguments, e.to_string()),
        }
    }

    /// The text for the outcome record's `reason` (never PHI).
    pub fn audit_reason(&self) -> String {
        self.to_string()
    }

    /// The denial reason, when this is a denial.
    pub fn deny_reason(&self) -> Option<&DenyReason> {
        match self {
            Refusal::Denied(r) => Some(r),
            Refusal::BadArguments(_) => None,
        }
    }
}

impl From<DenyReason> for Refusal {
    fn from(r: DenyReason) -> Self {
        Refusal::Denied(r)
    }
}

impl From<ArgumentError> for Refusal {
    fn from(e: ArgumentError) -> Self {
        Refusal::BadArguments(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_has_the_same_body_and_its_own_audit_reason() {
        let a = Refusal::Denied(DenyReason::EhrScopeNotGranted { missing_scope: "system/Observation.s".into() });
        let b = Refusal::Denied(DenyReason::PatientNotInList);
        assert_eq!(serde_json::to_vec(&a.problem()).unwrap(), serde_json::to_vec(&b.problem()).unwrap());
        assert_eq!(a.problem().status, 403);
        assert_eq!(a.audit_reason(), "denied: ehr-scope-not-granted: system/Observation.s");
        assert_eq!(b.audit_reason(), "denied: patient-not-in-list");
        let c = Refusal::Denied(DenyReason::ScopeNotGranted { resource_type: ResourceType::Procedure, interaction: Interaction::Search, by: Party::User });
        assert_eq!(c.audit_reason(), "denied: scope-not-granted: search Procedure (by user)");
        assert_eq!(c.deny_reason().map(DenyReason::rule), Some("scope-not-granted"));
    }

    #[test]
    fn bad_arguments_are_400_and_name_the_position_not_the_value() {
        let r = Refusal::BadArguments(ArgumentError::ControlCharacter { index: 2 });
        let p = r.problem();
        assert_eq!(p.status, 400);
        assert_eq!(p.detail, "search parameter 2: the value holds a control character");
        assert_eq!(r.deny_reason(), None);
    }

    #[test]
    fn reasons_serialise_with_their_rule() {
        let v = serde_json::to_value(DenyReason::ToolNotGranted { tool: ToolName::FhirSearch, by: Party::Agent }).unwrap();
        assert_eq!(v, serde_json::json!({"rule": "tool-not-granted", "tool": "fhir.search", "by": "agent"}));
    }
}
