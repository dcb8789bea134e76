//! `medicodax mcp --agent ID --key PEM [--gateway URL] [--as USER]`: a local MCP server on
//! standard input/output for clients that cannot sign (desktop assistants, agent
//! frameworks). It holds the agent's key, signs each `tools/call` and forwards it to the
//! gateway's `POST /v1/calls` (see `medicodax_mcp_bridge::bridge`).
//!
//! Standard output carries the MCP protocol only; logs go to standard error.

use crate::CliError;
use crate::context::Context;
use medicodax_clock::SystemClock;
use medicodax_mcp_bridge::{Bridge, BridgeConfig};
use std::sync::Arc;

/// Arguments of `mcp`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Who signs, for whom, to which gateway.
    #[command(flatten)]
    agent: super::agent_args::AgentArgs,
}

/// Serves MCP on standard input/output until the client closes it.
pub async fn run(_ctx: &Context, a: Args) -> Result<(), CliError> {
    let key = a.agent.private_key()?;
    let gateway = a.agent.gateway_url()?;
    let config = BridgeConfig {
        sub: a.agent.sub(),
        audience: a.agent.audience()?,
        agent: a.agent.agent.clone(),
        gateway,
    };
    let bridge = Bridge::new(&config, Arc::new(key), SystemClock::shared()).map_err(|e| CliError::Failed(e.to_string()))?;
    tracing::info!(agent = %config.agent, user = %config.sub, gateway = %config.gateway, "MCP on standard input/output; each tools/call is signed and forwarded");
    medicodax_mcp_bridge::serve_stdio(bridge).await.map_err(|e| CliError::Failed(e.to_string()))
}
