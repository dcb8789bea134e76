//! `medicodax mcp --agent ID --key PEM [--gateway URL] [--as USER]`: a local MCP server on
//! standard input/output for clients that cannot sign (desktop assistants, agent
//! frameworks). It holds the agent's key, signs each `tools/call` and forwards it to the
//! gateway's `POST /v1/calls` (see `medicodax_mcp_bridge::bridge`).
//!
//! Standard output carries the MCP protocol only; logs go to standard error.

use crate::CliError;
use crate::context::Context;
use medicodax_clock::SystemClock;
use medicodax_jose::PrivateKey;
use medicodax_mcp_bridge::{Bridge, BridgeConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `mcp`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The agent id (the calls' `iss`).
    #[arg(long, env = "MEDICODAX_AGENT")]
    agent: String,
    /// The agent's private key (PEM). It never leaves this process.
    #[arg(long, env = "MEDICODAX_AGENT_KEY", value_name = "PEM")]
    key: PathBuf,
    /// The user the agent acts for (the calls' `sub`); default: the agent itself.
    #[arg(long = "as", value_name = "USER")]
    sub: Option<String>,
    /// The gateway's base URL.
    #[arg(long, env = "MEDICODAX_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The gateway's audience; default: the gateway URL.
    #[arg(long)]
    audience: Option<String>,
}

/// Serves MCP on standard input/output until the client closes it.
pub async fn run(_ctx: &Context, a: Args) -> Result<(), CliError> {
    let key = PrivateKey::from_file_auto(&a.key).map_err(|e| CliError::Usage(format!("--key: {e}")))?;
    let gateway = a.gateway.trim_end_matches('/').to_owned();
    if !(gateway.starts_with("http://") || gateway.starts_with("https://")) {
        return Err(CliError::Usage(format!("--gateway {gateway:?} must be an http:// or https:// URL")));
    }
    let config = BridgeConfig {
        sub: a.sub.clone().unwrap_or_else(|| a.agent.clone()),
        audience: a.audience.clone().unwrap_or_else(|| gateway.clone()),
        agent: a.agent,
        gateway,
    };
    let bridge = Bridge::new(&config, Arc::new(key), SystemClock::shared()).map_err(|e| CliError::Failed(e.to_string()))?;
    tracing::info!(agent = %config.agent, user = %config.sub, gateway = %config.gateway, "MCP on standard input/output; each tools/call is signed and forwarded");
    medicodax_mcp_bridge::serve_stdio(bridge).await.map_err(|e| CliError::Failed(e.to_string()))
}
