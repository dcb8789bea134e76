//! `medicodax fhir read|search`: FHIR through a connection's client, as an operator (not
//! an agent: no policy, but every request is authenticated, rate-budgeted and audited:
//! an `operator.fhir.started` record before the first EHR request, an
//! `operator.fhir.finished` record, with the resources returned, before anything is printed).

use crate::CliError;
use crate::context::Context;
use medicodax_fhir::{Search, UpstreamLog};
use medicodax_wire::{FhirId, ResourceType};

/// Arguments of `fhir`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The connection.
    #[arg(long, global = true, default_value = "epic-sandbox")]
    connection: String,
    /// Output: `json` or `table`.
    #[arg(long, global = true, default_value = "json", value_parser = ["json", "table"])]
    format: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Read one resource: `fhir read Patient 123`.
    Read {
        /// The resource type (one of the eleven).
        #[arg(value_name = "TYPE")]
        resource_type: String,
        /// The id.
        id: String,
    },
    /// Search: `fhir search Observation patient=123 category=laboratory`.
    Search {
        /// The resource type (one of the eleven).
        #[arg(value_name = "TYPE")]
        resource_type: String,
        /// Parameters as name=value.
        #[arg(value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Stop after this many resources.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// Who is at the keyboard, as far as the operating system says.
fn operator() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user} (command line)")
}

async fn audit(env: &super::env::Env, event: &str, subject: &str, detail: serde_json::Value) -> Result<(), CliError> {
    let gw = &env.gateway;
    let e = medicodax_wire::audit::SystemEvent { time_ms: gw.clock.now_unix_millis(), event: event.into(), subject: subject.into(), detail };
    // If the log cannot be written, nothing is fetched or shown.
    gw.audit.append_event(e).await.map(|_| ()).map_err(|e| CliError::Failed(format!("the audit log cannot be written, so nothing was fetched or shown: {e}")))
}

/// The outcome record: each upstream request's method, path and status, and the
/// resources returned as type/id, or the error.
async fn finished<E: std::fmt::Display>(env: &super::env::Env, connection: &str, mut detail: serde_json::Value, log: &UpstreamLog, result: Result<&[serde_json::Value], &E>) -> Result<(), CliError> {
    detail["upstream"] = serde_json::to_value(log.snapshot()).unwrap_or_default();
    match result {
        Ok(resources) => {
            let refs: Vec<String> = resources.iter().map(|r| format!("{}/{}", r.get("resourceType").and_then(|v| v.as_str()).unwrap_or("?"), r.get("id").and_then(|v| v.as_str()).unwrap_or("?"))).collect();
            detail["resources"] = serde_json::json!(refs);
            detail["result"] = "ok".into();
        }
        Err(e) => {
            detail["result"] = "failed".into();
            detail["error"] = e.to_string().into();
        }
    }
    audit(env, "operator.fhir.finished", connection, detail).await
}

fn parse_type(t: &str) -> Result<ResourceType, CliError> {
    t.parse::<ResourceType>().map_err(|e| CliError::Usage(e.to_string()))
}

fn table(resources: &[serde_json::Value]) {
    crate::out::line(&format!("{:<20} {:<40} {:<12} {}", "TYPE", "ID", "STATUS", "DATE"));
    for r in resources {
        let get = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let date = ["effectiveDateTime", "issued", "recordedDate", "authoredOn", "date", "occurrenceDateTime", "onsetDateTime", "birthDate"]
            .iter()
            .find_map(|k| r.get(*k).and_then(|v| v.as_str()))
            .or_else(|| r.get("period").and_then(|p| p.get("start")).and_then(|v| v.as_str()))
            .unwrap_or("");
        crate::out::line(&format!("{:<20} {:<40} {:<12} {}", get("resourceType"), get("id"), get("status"), date));
    }
}

pub async fn run(ctx: &Context, a: Args) -> Result<(), CliError> {
    let env = super::env::Env::open(ctx).await?;
    let result = run_in(&env, &a).await;
    env.close().await;
    result
}

async fn run_in(env: &super::env::Env, a: &Args) -> Result<(), CliError> {
    let ehr = env.gateway.ehrs.get(&a.connection).ok_or_else(|| {
        CliError::Usage(format!("no connection named {:?}; configured: {}", a.connection, env.gateway.ehrs.keys().cloned().collect::<Vec<_>>().join(", ")))
    })?;
    let log = UpstreamLog::new();
    let operator = operator();
    match &a.action {
        Action::Read { resource_type, id } => {
            let t = parse_type(resource_type)?;
            let id = FhirId::new(id).map_err(|e| CliError::Usage(e.to_string()))?;
            let request = serde_json::json!({"action": "read", "connection": a.connection, "type": t.as_str(), "id": id.as_str(), "operator": operator});
            audit(env, "operator.fhir.started", &a.connection, request.clone()).await?;
            let r = ehr.fhir.read(t, &id, &log).await;
            finished(env, &a.connection, request, &log, r.as_ref().map(std::slice::from_ref)).await?;
            let r = r.map_err(|e| CliError::Failed(e.to_string()))?;
            if a.format == "table" { table(std::slice::from_ref(&r)) } else { crate::out::json(&r) }
        }
        Action::Search { resource_type, params, limit } => {
            let t = parse_type(resource_type)?;
            let mut pairs = Vec::new();
            for p in params {
                let (k, v) = p.split_once('=').ok_or_else(|| CliError::Usage(format!("{p:?} is not NAME=VALUE")))?;
                pairs.push((k.to_owned(), v.to_owned()));
            }
            let request = serde_json::json!({"action": "search", "connection": a.connection, "type": t.as_str(), "params": pairs, "limit": limit, "operator": operator});
            let mut s = Search::from_pairs(t, pairs);
            if let Some(l) = limit {
                s = s.limit(*l);
            }
            audit(env, "operator.fhir.started", &a.connection, request.clone()).await?;
            let out = ehr.fhir.search(&s, &log).await.map(|o| o.into_search_result());
            finished(env, &a.connection, request, &log, out.as_ref().map(|r| r.resources.as_slice())).await?;
            let result = out.map_err(|e| CliError::Failed(e.to_string()))?;
            for w in &result.warnings {
                eprintln!("warning: {}: {}", w.code, w.detail);
            }
            if a.format == "table" {
                table(&result.resources);
                eprintln!("{} resources{}{}", result.resources.len(), result.total.map(|t| format!(" (total {t})")).unwrap_or_default(), if result.incomplete { ", INCOMPLETE" } else { "" });
            } else {
                crate::out::json(&result);
            }
        }
    }
    eprintln!("{} upstream request(s)", log.len());
    Ok(())
}
