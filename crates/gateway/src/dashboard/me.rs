//! Me (`/me`, every signed-in user): who the dashboard thinks you are.
//!
//! The user name, roles, session times, the dashboard pages the roles open, and the
//! effective grants an agent acting for this user works under: for each role, the
//! policy role of the same name in the configuration (`[roles.NAME]`: scopes, tools,
//! connections, redactions, patient restriction), and their union. A role with no
//! policy role grants agents nothing.

use super::{Dash, Nav, Page, PageResult, Viewer, fmt, render};
use askama::Template;
use medicodax_config::Config;
use std::collections::BTreeSet;

/// One role's grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGrant {
    /// The role.
    pub role: String,
    /// Whether `[roles.NAME]` exists.
    pub configured: bool,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Its tools.
    pub tools: Vec<String>,
    /// Its connections (`all` when unrestricted).
    pub connections: String,
    /// Fields removed from results.
    pub redact: Vec<String>,
    /// The patient restriction, if any.
    pub patients: String,
}

/// The effective grants of a set of roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    /// Per role.
    pub roles: Vec<RoleGrant>,
    /// The union of the roles' scopes.
    pub scopes: Vec<String>,
    /// The union of the roles' tools.
    pub tools: Vec<String>,
}

/// The grants `roles` carry under `config` (pure).
pub fn grants(config: &Config, roles: &[String]) -> Grants {
    let mut scopes = BTreeSet::new();
    let mut tools = BTreeSet::new();
    let per_role = roles
        .iter()
        .map(|r| match config.roles.get(r) {
            Some(rc) => {
                scopes.extend(rc.scopes.iter().cloned());
                tools.extend(rc.tools.iter().cloned());
                RoleGrant {
                    role: r.clone(),
                    configured: true,
                    scopes: rc.scopes.clone(),
                    tools: rc.tools.clone(),
                    connections: if rc.connections.is_empty() { "all".to_owned() } else { rc.connections.join(", ") },
                    redact: rc.redact.clone(),
                    patients: rc.patients.as_ref().map(|p| format!("{} patients", p.len())).unwrap_or_default(),
                }
            }
            None => RoleGrant { role: r.clone(), configured: false, scopes: vec![], tools: vec![], connections: String::new(), redact: vec![], patients: String::new() },
        })
        .collect();
    Grants { roles: per_role, scopes: scopes.into_iter().collect(), tools: tools.into_iter().collect() }
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    nav: Nav,
    name: String,
    roles: Vec<String>,
    created: String,
    signed_in: String,
    expires: String,
    pages: Vec<&'static str>,
    grants: Grants,
}

/// `GET /me`.
pub async fn page(state: Dash, viewer: Viewer) -> PageResult {
    viewer.require(Page::Me)?;
    let grants = grants(&state.gw.config, &viewer.user.roles);
    let pages = Page::NAV.iter().filter(|p| viewer.may_see(**p)).map(|p| p.label()).collect();
    Ok(render(&MePage {
        nav: viewer.nav(Page::Me),
        name: viewer.user.name.clone(),
        roles: viewer.user.roles.clone(),
        created: fmt::time_ms(viewer.user.created_ms),
        signed_in: fmt::time_s(viewer.session.iat),
        expires: fmt::time_s(viewer.session.exp),
        pages,
        grants,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_config::RoleConfig;

    #[test]
    fn grants_are_the_union_of_the_configured_roles() {
        let mut c = Config::default();
        c.roles.insert("coder".into(), RoleConfig { scopes: vec!["system/*.rs".into()], tools: vec!["fhir.read".into(), "encounter.bundle".into()], ..RoleConfig::default() });
        c.roles.insert("auditor".into(), RoleConfig { tools: vec!["connections.list".into(), "fhir.read".into()], connections: vec!["epic".into()], ..RoleConfig::default() });
        let g = grants(&c, &["coder".into(), "auditor".into(), "admin".into()]);
        assert_eq!(g.scopes, ["system/*.rs"]);
        assert_eq!(g.tools, ["connections.list", "encounter.bundle", "fhir.read"]);
        assert_eq!(g.roles.len(), 3);
        assert_eq!(g.roles[0].connections, "all");
        assert_eq!(g.roles[1].connections, "epic");
        assert!(!g.roles[2].configured, "admin has no policy role here");
    }
}
