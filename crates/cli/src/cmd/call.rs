//! `medicodax call TOOL --args JSON --agent ID --key PEM [--gateway URL]`.

use crate::CliError;
use crate::context::Context;
use medicodax_agent::AgentClient;
use medicodax_clock::SystemClock;
use medicodax_jose::PrivateKey;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `call`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tool: fhir.read, fhir.search, encounter.bundle or connections.list.
    tool: String,
    /// The tool's arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// The agent id (the call's `iss`).
    #[arg(long, env = "MEDICODAX_AGENT")]
    agent: String,
    /// The agent's private key (PEM).
    #[arg(long, env = "MEDICODAX_AGENT_KEY", value_name = "PEM")]
    key: PathBuf,
    /// The user the agent acts for (the call's `sub`); default: the agent itself.
    #[arg(long = "as", value_name = "USER")]
    sub: Option<String>,
    /// The gateway's base URL.
    #[arg(long, env = "MEDICODAX_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The gateway's audience; default: the gateway URL.
    #[arg(long)]
    audience: Option<String>,
}

pub async fn run(_ctx: &Context, a: Args) -> Result<(), CliError> {
    let args: serde_json::Value = serde_json::from_str(&a.args).map_err(|e| CliError::Usage(format!("--args is not JSON: {e}")))?;
    let serde_json::Value::Object(args) = args else {
        return Err(CliError::Usage("--args must be a JSON object".into()));
    };
    let key = PrivateKey::from_file_auto(&a.key).map_err(|e| CliError::Usage(format!("--key: {e}")))?;
    let audience = a.audience.clone().unwrap_or_else(|| a.gateway.trim_end_matches('/').to_owned());
    let client = AgentClient::new(&a.agent, Arc::new(key), &a.gateway, &audience, SystemClock::shared()).map_err(|e| CliError::Failed(e.to_string()))?;
    let sub = a.sub.clone().unwrap_or_else(|| a.agent.clone());
    let out = client.call(&sub, &a.tool, args).await.map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(r) = &out.receipt {
        eprintln!("receipt verified: decision={} seq={} leaf={}", r.claims.decision.as_str(), r.claims.seq, r.claims.leaf_hash.chars().take(16).collect::<String>());
    }
    match (out.result, out.problem) {
        (Some(result), _) => {
            crate::out::json(&result);
            Ok(())
        }
        (None, Some(p)) => Err(CliError::Failed(format!("{} {}: {}", p.status, p.code, p.detail))),
        (None, None) => Err(CliError::Failed(format!("the gateway answered {}", out.status))),
    }
}
