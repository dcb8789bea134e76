//! The options every command that acts as an agent takes (`call`, `mcp`).

use crate::CliError;
use medicodax_agent::AgentClient;
use medicodax_clock::SharedClock;
use medicodax_jose::PrivateKey;
use std::path::PathBuf;
use std::sync::Arc;

/// Who signs, for whom, and which gateway receives the calls.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent id (the calls' `iss`).
    #[arg(long, env = "MEDICODAX_AGENT")]
    pub agent: String,
    /// The agent's private key (PEM). It never leaves this process.
    #[arg(long, env = "MEDICODAX_AGENT_KEY", value_name = "PEM")]
    pub key: PathBuf,
    /// The user the agent acts for (the calls' `sub`); default: the agent itself.
    #[arg(long = "as", value_name = "USER")]
    pub sub: Option<String>,
    /// The gateway's base URL.
    #[arg(long, env = "MEDICODAX_GATEWAY", default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// The gateway's audience; default: the gateway URL.
    #[arg(long)]
    pub audience: Option<String>,
}

impl AgentArgs {
    /// The gateway URL without a trailing slash, checked to be http(s).
    pub fn gateway_url(&self) -> Result<String, CliError> {
        let g = self.gateway.trim_end_matches('/').to_owned();
        if g.starts_with("http://") || g.starts_with("https://") { Ok(g) } else { Err(CliError::Usage(format!("--gateway {g:?} must be an http:// or https:// URL"))) }
    }

    /// The audience (the gateway URL unless given).
    pub fn audience(&self) -> Result<String, CliError> {
        match &self.audience {
            Some(a) => Ok(a.clone()),
            None => self.gateway_url(),
        }
    }

    /// The user acted for.
    pub fn sub(&self) -> String {
        self.sub.clone().unwrap_or_else(|| self.agent.clone())
    }

    /// The agent's key, its algorithm taken from the key (RSA: RS384, EC P-384: ES384).
    pub fn private_key(&self) -> Result<PrivateKey, CliError> {
        PrivateKey::from_file_auto(&self.key).map_err(|e| CliError::Usage(format!("--key: {e}")))
    }

    /// A client signing as this agent.
    pub fn client(&self, clock: SharedClock) -> Result<AgentClient, CliError> {
        AgentClient::new(&self.agent, Arc::new(self.private_key()?), &self.gateway_url()?, &self.audience()?, clock).map_err(|e| CliError::Failed(e.to_string()))
    }
}
