//! `medicodax fhir read|search`: FHIR through a connection's client, as an operator (not
//! an agent: no policy, but every request is authenticated, rate-budgeted and logged).

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
    match &a.action {
        Action::Read { resource_type, id } => {
            let t = parse_type(resource_type)?;
            let id = FhirId::new(id).map_err(|e| CliError::Usage(e.to_string()))?;
            let r = ehr.fhir.read(t, &id, &log).await.map_err(|e| CliError::Failed(e.to_string()))?;
            if a.format == "table" { table(std::slice::from_ref(&r)) } else { crate::out::json(&r) }
        }
        Action::Search { resource_type, params, limit } => {
            let t = parse_type(resource_type)?;
            let mut pairs = Vec::new();
            for p in params {
                let (k, v) = p.split_once('=').ok_or_else(|| CliError::Usage(format!("{p:?} is not NAME=VALUE")))?;
                pairs.push((k.to_owned(), v.to_owned()));
            }
            let mut s = Search::from_pairs(t, pairs);
            if let Some(l) = limit {
                s = s.limit(*l);
            }
            let out = ehr.fhir.search(&s, &log).await.map_err(|e| CliError::Failed(e.to_string()))?;
            let result = out.into_search_result();
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
