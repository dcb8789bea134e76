//! Agents (`/agents`, admin and auditor): who may call the gateway.
//!
//! For each registered agent (`[[agents]]`): where its keys come from (a JWKS file or a
//! JWKS URL), the key ids it holds now, its roles, whom it may act for, and its last
//! call from the audit log (time, user, tool, and the decision when the outcome is
//! written). No key material is shown: key ids only.

use super::{Dash, Nav, Page, PageError, PageResult, Viewer, fmt, render};
use crate::service::Gateway;
use askama::Template;
use medicodax_audit::with_pool;
use medicodax_wire::audit::{AuditRecord, LogEntry};

/// One agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentView {
    /// Its id.
    pub id: String,
    /// `file NAME` or `url URL`.
    pub source: String,
    /// Key ids held now.
    pub key_ids: Vec<String>,
    /// Its roles.
    pub roles: Vec<String>,
    /// Whom it may act for.
    pub may_act_for: Vec<String>,
    /// Its last call, if any.
    pub last_call: Option<LastCall>,
}

/// An agent's most recent call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCall {
    /// The intent's seq.
    pub seq: u64,
    /// When.
    pub time: String,
    /// For whom.
    pub user: String,
    /// Which tool.
    pub tool: String,
    /// The outcome's decision (empty while in flight).
    pub decision: String,
}

async fn last_call(gw: &Gateway, agent: &str) -> Result<Option<LastCall>, sqlx::Error> {
    let rows: Vec<Vec<u8>> = with_pool!(gw.audit.db(), pool => {
        sqlx::query_scalar("SELECT canonical FROM audit_entries WHERE agent = $1 AND kind IN ('intent', 'outcome') ORDER BY seq DESC LIMIT 2")
            .bind(agent).fetch_all(pool).await
    })?;
    let entries: Vec<LogEntry> = rows.iter().filter_map(|c| serde_json::from_slice(c).ok()).collect();
    let Some((seq, intent)) = entries.iter().find_map(|e| match &e.record {
        AuditRecord::Intent(i) => Some((e.seq, i)),
        _ => None,
    }) else {
        return Ok(None);
    };
    let decision = entries
        .iter()
        .find_map(|e| match &e.record {
            AuditRecord::Outcome(o) if o.intent_seq == seq => Some(o.decision.as_str().to_owned()),
            _ => None,
        })
        .unwrap_or_default();
    Ok(Some(LastCall { seq, time: fmt::time_ms(intent.time_ms), user: intent.user.clone(), tool: intent.tool.clone(), decision }))
}

/// The registered agents, in configuration order.
pub async fn view(gw: &Gateway) -> Result<Vec<AgentView>, sqlx::Error> {
    let mut out = Vec::new();
    for a in &gw.config.agents {
        let keys = gw.verifier.agent_keys(&a.id);
        let source = match (&a.jwks, keys.and_then(|k| k.jwks_url())) {
            (Some(f), _) => format!("file {}", f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
            (None, Some(u)) => format!("url {u}"),
            (None, None) => a.jwks_url.as_deref().map(|u| format!("url {u}")).unwrap_or_default(),
        };
        out.push(AgentView {
            id: a.id.clone(),
            source,
            key_ids: keys.map(|k| k.key_ids()).unwrap_or_default(),
            roles: a.roles.clone(),
            may_act_for: a.may_act_for.clone(),
            last_call: last_call(gw, &a.id).await?,
        });
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    nav: Nav,
    agents: Vec<AgentView>,
}

/// `GET /agents`.
pub async fn page(state: Dash, viewer: Viewer) -> PageResult {
    viewer.require(Page::Agents)?;
    let agents = view(&state.gw).await.map_err(|e| PageError::internal("agents", &e))?;
    Ok(render(&AgentsPage { nav: viewer.nav(Page::Agents), agents }))
}
