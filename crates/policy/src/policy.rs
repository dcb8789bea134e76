//! Roles, agents and principals: who is calling, for whom, and what each party may do.
//!
//! A [`Policy`] is built once from the configuration's `[roles]` and `[[agents]]`; what
//! it could not use is reported as [`PolicyWarning`]s (log them once at startup and
//! write them to the audit log as a system event). For each verified call the gateway
//! asks [`Policy::caller`] for a [`Caller`]: the agent, and unless the agent acts as
//! itself, the user named in `sub` (looked up by the gateway in its store and passed in
//! as a [`UserRecord`]).
//!
//! Within one party (the agent's roles, or the user's roles) grants are a union: scopes,
//! tools, connections, extra search parameters and redactions of all its roles. A patient
//! list is a restriction, not a grant, so within a party the lists of the roles that set
//! one intersect (a role without a list does not lift another role's list), and a user's
//! own list (from the store) intersects with them too. Across parties everything
//! intersects except redactions, which are a union ([`crate::Access`]).
//!
//! Role scopes count in the `system/` and `user/` contexts. A `patient/` scope in a role
//! grants nothing (restrict a role to patients with `patients = […]`) and is reported.

use crate::matching::verifiable;
use crate::reason::{DenyReason, Party, Refusal};
use crate::redact::RedactPath;
use crate::scope::{Context, ScopeError, ScopeSet};
use medicodax_config::{AgentConfig, Config, RoleConfig};
use medicodax_wire::{FhirId, ResourceType, ToolName};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The scope contexts a role's scopes count in.
pub const ROLE_CONTEXTS: &[Context] = &[Context::System, Context::User];

/// A user as the gateway's store knows them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UserRecord {
    /// The user name (what agents put in `sub`).
    pub name: String,
    /// Role names from `[roles]`.
    pub roles: Vec<String>,
    /// When the store keeps one: the only patient ids this user may touch.
    pub patients: Option<Vec<String>>,
}

/// Something in the configuration the policy could not use as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "warning", rename_all = "kebab-case")]
pub enum PolicyWarning {
    /// A role scope that does not parse (or names an unknown type): it grants nothing.
    IgnoredScope {
        /// The role.
        role: String,
        /// The scope as written (control characters escaped).
        scope: String,
        /// Why.
        error: ScopeError,
    },
    /// A `patient/` scope in a role grants nothing; use the role's `patients` list.
    PatientScopeInRole {
        /// The role.
        role: String,
        /// The scope.
        scope: String,
    },
    /// A query-constraint parameter the gateway cannot check on returned resources:
    /// resources under this scope are dropped unless they satisfy another alternative.
    UnverifiableConstraint {
        /// The role.
        role: String,
        /// The scope.
        scope: String,
        /// The parameter.
        param: String,
    },
    /// A tool name that is not one the gateway offers.
    UnknownTool {
        /// The role.
        role: String,
        /// The tool as written.
        tool: String,
    },
    /// A redaction path whose type or element is not a known FHIR R4 element of the
    /// eleven types. It is kept and applied as written.
    UnknownRedactionPath {
        /// The role.
        role: String,
        /// The path.
        path: String,
    },
    /// A redaction path that cannot be used.
    IgnoredRedactionPath {
        /// The role.
        role: String,
        /// The path as written.
        path: String,
        /// Why.
        why: String,
    },
    /// A patient id in a role's list that is not a FHIR id; it matches nothing.
    InvalidPatientId {
        /// The role.
        role: String,
        /// Position in the list.
        index: usize,
    },
    /// An agent names a role that is not configured: its calls are denied.
    UnknownAgentRole {
        /// The agent.
        agent: String,
        /// The role.
        role: String,
    },
    /// A `may_act_for` entry that can never match (empty, a wildcard, an unknown role).
    UnusableActFor {
        /// The agent.
        agent: String,
        /// The entry.
        entry: String,
    },
    /// An agent id registered more than once: the first one is used.
    DuplicateAgent {
        /// The agent.
        agent: String,
    },
}

/// One role, compiled.
#[derive(Clone, Debug, Default)]
struct Role {
    scopes: ScopeSet,
    tools: BTreeSet<ToolName>,
    connections: Option<BTreeSet<String>>,
    redact: Vec<RedactPath>,
    extra: BTreeSet<String>,
    patients: Option<BTreeSet<String>>,
}

/// What one party (the agent, or the user) is granted through its roles.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartyGrants {
    pub(crate) scopes: ScopeSet,
    pub(crate) tools: BTreeSet<ToolName>,
    /// `None`: every connection.
    pub(crate) connections: Option<BTreeSet<String>>,
    pub(crate) extra: BTreeSet<String>,
    /// `None`: no patient list.
    pub(crate) patients: Option<BTreeSet<String>>,
    pub(crate) redact: Vec<RedactPath>,
}

/// Intersects two optional restrictions (`None` = unrestricted).
pub(crate) fn restrict(a: Option<&BTreeSet<String>>, b: Option<&BTreeSet<String>>) -> Option<BTreeSet<String>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (Some(x), Some(y)) => Some(x.intersection(y).cloned().collect()),
    }
}

impl PartyGrants {
    fn merge<'a>(roles: impl IntoIterator<Item = &'a Role>) -> PartyGrants {
        let mut g = PartyGrants { connections: Some(BTreeSet::new()), ..PartyGrants::default() };
        for r in roles {
            g.scopes.scopes.extend(r.scopes.scopes.iter().cloned());
            g.tools.extend(r.tools.iter().copied());
            g.connections = match (g.connections.take(), &r.connections) {
                (Some(mut acc), Some(c)) => {
                    acc.extend(c.iter().cloned());
                    Some(acc)
                }
                _ => None,
            };
            g.extra.extend(r.extra.iter().cloned());
            g.patients = restrict(g.patients.as_ref(), r.patients.as_ref());
            g.redact.extend(r.redact.iter().cloned());
        }
        g
    }
}

/// A `may_act_for` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ActFor {
    Role(String),
    User(String),
}

#[derive(Clone, Debug)]
struct Agent {
    grants: Result<Arc<PartyGrants>, DenyReason>,
    may_act_for: Vec<ActFor>,
}

/// The compiled policy: roles and agents from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    roles: BTreeMap<String, Role>,
    agents: BTreeMap<String, Agent>,
    warnings: Vec<PolicyWarning>,
}

impl Policy {
    /// Builds the policy from a whole configuration.
    pub fn from_config(config: &Config) -> Policy {
        Policy::new(&config.roles, &config.agents)
    }

    /// Builds the policy from roles and agents. Never fails: what cannot be used grants
    /// nothing and is reported in [`Policy::warnings`].
    pub fn new(roles: &BTreeMap<String, RoleConfig>, agents: &[AgentConfig]) -> Policy {
        let mut warnings = Vec::new();
        let roles: BTreeMap<String, Role> = roles.iter().map(|(name, rc)| (name.clone(), compile_role(name, rc, &mut warnings))).collect();
        let mut compiled = BTreeMap::new();
        for a in agents {
            if compiled.contains_key(&a.id) {
                warnings.push(PolicyWarning::DuplicateAgent { agent: a.id.clone() });
                continue;
            }
            let mut held = Vec::new();
            let mut unknown = None;
            for r in &a.roles {
                match roles.get(r) {
                    Some(role) => held.push(role),
                    None => {
                        warnings.push(PolicyWarning::UnknownAgentRole { agent: a.id.clone(), role: r.clone() });
                        unknown.get_or_insert_with(|| r.clone());
                    }
                }
            }
            let grants = match unknown {
                Some(role) => Err(DenyReason::UnknownRole { role, by: Party::Agent }),
                None => Ok(Arc::new(PartyGrants::merge(held))),
            };
            let mut may_act_for = Vec::new();
            for entry in &a.may_act_for {
                let parsed = match entry.strip_prefix("role:") {
                    Some(r) if roles.contains_key(r) => Some(ActFor::Role(r.to_owned())),
                    Some(_) => None,
                    None => {
                        let name = entry.strip_prefix("user:").unwrap_or(entry);
                        (!name.is_empty() && !name.contains('*')).then(|| ActFor::User(name.to_owned()))
                    }
                };
                match parsed {
                    Some(p) => may_act_for.push(p),
                    None => warnings.push(PolicyWarning::UnusableActFor { agent: a.id.clone(), entry: entry.clone() }),
                }
            }
            compiled.insert(a.id.clone(), Agent { grants, may_act_for });
        }
        Policy { roles, agents: compiled, warnings }
    }

    /// What the configuration holds that could not be used as written.
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// Whether `agent` is configured.
    pub fn has_agent(&self, agent: &str) -> bool {
        self.agents.contains_key(agent)
    }

    /// Resolves the principals of a verified call: the agent (`iss`) and the user it acts
    /// for (`sub`). `user` is the store's record for `sub` (`None` when there is none);
    /// it is not consulted when the agent acts as itself (`sub` equals the agent id).
    ///
    /// Denies an unknown agent, an agent holding an unknown role, a `sub` with no user
    /// record, a user the agent's `may_act_for` does not allow (`role:NAME` the user
    /// holds that role; `user:NAME` or a bare `NAME` names the user), and a user holding
    /// an unknown role.
    pub fn caller(&self, agent_id: &str, sub: &str, user: Option<&UserRecord>) -> Result<Caller, Refusal> {
        let agent = self.agents.get(agent_id).ok_or(DenyReason::UnknownAgent)?;
        let agent_grants = agent.grants.clone()?;
        if sub == agent_id {
            return Ok(Caller { agent_id: agent_id.to_owned(), user_name: None, agent: agent_grants, user: None });
        }
        let user = user.filter(|u| u.name == sub).ok_or(DenyReason::UnknownUser)?;
        let allowed = agent.may_act_for.iter().any(|e| match e {
            ActFor::Role(r) => user.roles.contains(r),
            ActFor::User(n) => *n == user.name,
        });
        if !allowed {
            return Err(DenyReason::ActForNotAllowed.into());
        }
        let mut held = Vec::new();
        for r in &user.roles {
            held.push(self.roles.get(r).ok_or_else(|| DenyReason::UnknownRole { role: r.clone(), by: Party::User })?);
        }
        let mut grants = PartyGrants::merge(held);
        let own: Option<BTreeSet<String>> = user.patients.as_ref().map(|p| p.iter().cloned().collect());
        grants.patients = restrict(grants.patients.as_ref(), own.as_ref());
        Ok(Caller { agent_id: agent_id.to_owned(), user_name: Some(user.name.clone()), agent: agent_grants, user: Some(Arc::new(grants)) })
    }
}

fn compile_role(name: &str, rc: &RoleConfig, warnings: &mut Vec<PolicyWarning>) -> Role {
    let role = || name.to_owned();
    let parsed = ScopeSet::from_tokens(rc.scopes.iter().map(String::as_str));
    for (scope, error) in &parsed.ignored {
        warnings.push(PolicyWarning::IgnoredScope { role: role(), scope: scope.clone(), error: error.clone() });
    }
    let mut scopes = ScopeSet { ignored: parsed.ignored.clone(), ..ScopeSet::default() };
    for s in parsed.scopes {
        if s.context == Context::Patient {
            warnings.push(PolicyWarning::PatientScopeInRole { role: role(), scope: s.to_v2() });
            continue;
        }
        let types: Vec<ResourceType> = match s.resource.as_deref() {
            Some(t) => t.parse().into_iter().collect(),
            None => ResourceType::ALL.to_vec(),
        };
        for (k, _) in &s.query {
            if types.iter().any(|t| !verifiable(*t, k)) {
                warnings.push(PolicyWarning::UnverifiableConstraint { role: role(), scope: s.to_v2(), param: k.clone() });
            }
        }
        scopes.scopes.push(s);
    }
    let mut tools = BTreeSet::new();
    for t in &rc.tools {
        match t.parse::<ToolName>() {
            Ok(tool) => {
                tools.insert(tool);
            }
            Err(_) => warnings.push(PolicyWarning::UnknownTool { role: role(), tool: t.escape_default().to_string() }),
        }
    }
    let mut redact = Vec::new();
    for p in &rc.redact {
        match RedactPath::parse(p) {
            Ok(path) => {
                if !path.is_known() {
                    warnings.push(PolicyWarning::UnknownRedactionPath { role: role(), path: path.to_string() });
                }
                redact.push(path);
            }
            Err(e) => warnings.push(PolicyWarning::IgnoredRedactionPath { role: role(), path: p.escape_default().to_string(), why: e.to_string() }),
        }
    }
    let patients = rc.patients.as_ref().map(|list| {
        let mut set = BTreeSet::new();
        for (index, p) in list.iter().enumerate() {
            if FhirId::new(p).is_ok() {
                set.insert(p.clone());
            } else {
                warnings.push(PolicyWarning::InvalidPatientId { role: role(), index });
            }
        }
        set
    });
    Role {
        scopes,
        tools,
        connections: (!rc.connections.is_empty()).then(|| rc.connections.iter().cloned().collect()),
        redact,
        extra: rc.extra_search_params.iter().cloned().collect(),
        patients,
    }
}

/// The principals of one verified call, with their grants. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Caller {
    agent_id: String,
    user_name: Option<String>,
    pub(crate) agent: Arc<PartyGrants>,
    pub(crate) user: Option<Arc<PartyGrants>>,
}

impl Caller {
    /// The agent id.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The user acted for, or `None` when the agent acts as itself.
    pub fn user_name(&self) -> Option<&str> {
        self.user_name.as_deref()
    }

    pub(crate) fn parties(&self) -> impl Iterator<Item = (Party, &PartyGrants)> {
        std::iter::once((Party::Agent, &*self.agent)).chain(self.user.as_deref().map(|u| (Party::User, u)))
    }

    /// Whether the caller may use `tool`, on `connection` when the tool takes one
    /// (every tool but `connections.list`). Checks the agent first, then the user.
    pub fn decide_tool(&self, tool: ToolName, connection: Option<&str>) -> Result<(), Refusal> {
        for (by, g) in self.parties() {
            if !g.tools.contains(&tool) {
                return Err(DenyReason::ToolNotGranted { tool, by }.into());
            }
        }
        match connection {
            Some(c) => self.check_connection(c),
            None if tool == ToolName::ConnectionsList => Ok(()),
            None => Err(DenyReason::ConnectionRequired.into()),
        }
    }

    fn check_connection(&self, connection: &str) -> Result<(), Refusal> {
        for (by, g) in self.parties() {
            if g.connections.as_ref().is_some_and(|c| !c.contains(connection)) {
                // The name comes from the call's arguments: keep it out of the audit
                // text unless it has the shape of a connection name.
                let shown = if medicodax_wire::tools::valid_connection_name(connection) { connection } else { "(not a connection name)" };
                return Err(DenyReason::ConnectionNotGranted { connection: shown.to_owned(), by }.into());
            }
        }
        Ok(())
    }

    /// The connections of `names` this caller may use (for `connections.list`).
    pub fn visible_connections<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        names.into_iter().filter(|n| self.check_connection(n).is_ok()).collect()
    }

    /// The caller's access through `connection`, whose authorization server granted
    /// `ehr_granted` (parse the token response's `scope` with [`ScopeSet::parse`], or the
    /// configured scopes when the response had none, per pitfall 16(b)). Only `system/`
    /// scopes of the EHR count. Denies a connection the caller may not use.
    pub fn on_connection(&self, connection: &str, ehr_granted: &ScopeSet) -> Result<crate::Access, Refusal> {
        self.check_connection(connection)?;
        Ok(crate::Access::new(self.clone(), connection, ehr_granted.clone()))
    }
}
