//! `medicodax mcp`: a local MCP server on standard input/output that holds one agent's
//! key, signs each `tools/call` and forwards it to the gateway's `POST /v1/calls`.
//!
//! For every `tools/call`:
//!
//! 1. sign a call with a fresh `jti`, `tool` = the request's `name` and `args` = its
//!    `arguments` (`{}` when absent), acting for the configured user
//!    ([`AgentClient::sign`]);
//! 2. post the JWS to `POST /v1/calls` and read status, `Medicodax-Receipt`,
//!    `Retry-After` and the body bytes B;
//! 3. check the receipt against the call sent and B ([`AgentClient::check_receipt`]:
//!    a key of the gateway's JWKS, `call_jti`, `call_hash`, `result_hash`). A success
//!    without a receipt, or a receipt that does not check out, is not passed on;
//! 4. answer in the same shape as the gateway's `/mcp` ([`crate::result`]).
//!
//! The key stays in this process: only signed calls leave it. Nothing is written to
//! standard output but MCP messages; logs go to standard error, without call bodies.
//!
//! Why not [`AgentClient::send`]: its [`medicodax_agent::CallOutcome`] holds the parsed
//! result, not the bytes B. Re-serialising could change the bytes, and the MCP text must
//! be B exactly so that whoever reads the result can check the receipt's `result_hash`
//! over it. So the bridge posts the JWS itself and uses `AgentClient` for signing and the
//! receipt check.

use crate::catalog;
use crate::result::{Answer, bridge_error, call_result};
use medicodax_agent::{AgentClient, SignedCall};
use medicodax_clock::SharedClock;
use medicodax_jose::PrivateKey;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, JsonObject, ListToolsResult, PaginatedRequestParams, ServerConfig};
use rmcp::service::{RequestContext, ServerInitializeError};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use std::sync::Arc;
use std::time::Duration;

/// How long one forwarded call may take, end to end.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the bridge could not start, or why one call could not be forwarded. Never holds
/// the key, a call or a result body.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// The call could not be signed.
    #[error("signing the call failed")]
    Sign,
    /// The gateway could not be reached, or the answer could not be read: the URL posted
    /// to and why.
    #[error("cannot reach the gateway at {0}")]
    Unreachable(String),
    /// The answer came without the receipt it needs, or the receipt does not check out.
    #[error("the gateway's answer ({status}) was not passed on: {reason}")]
    Receipt {
        /// The HTTP status of the answer.
        status: u16,
        /// Why.
        reason: String,
    },
    /// The MCP session on standard input/output could not start or ended in failure.
    #[error("the MCP session on standard input/output failed: {0}")]
    Stdio(&'static str),
}

impl BridgeError {
    /// A short stable name, sent as `_meta["io.medicodax/bridge-error"]`.
    pub fn class(&self) -> &'static str {
        match self {
            BridgeError::Setup(_) => "setup",
            BridgeError::Sign => "sign",
            BridgeError::Unreachable(_) => "unreachable",
            BridgeError::Receipt { .. } => "receipt",
            BridgeError::Stdio(_) => "stdio",
        }
    }
}

/// Who the bridge signs as, and where it forwards to.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The agent id (the calls' `iss`).
    pub agent: String,
    /// The user the agent acts for (the calls' `sub`).
    pub sub: String,
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    pub gateway: String,
    /// The gateway's audience (the calls' `aud`).
    pub audience: String,
}

/// The stdio MCP server of one agent.
pub struct Bridge {
    client: AgentClient,
    http: reqwest::Client,
    sub: String,
    calls_url: String,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("agent", &self.client.agent_id()).field("sub", &self.sub).field("calls_url", &self.calls_url).finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge signing with `key` as `config.agent` for `config.sub`.
    pub fn new(config: &BridgeConfig, key: Arc<PrivateKey>, clock: SharedClock) -> Result<Self, BridgeError> {
        let client = AgentClient::new(&config.agent, key, &config.gateway, &config.audience, clock).map_err(|e| BridgeError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder().timeout(CALL_TIMEOUT).build().map_err(|e| BridgeError::Setup(e.without_url().to_string()))?;
        let calls_url = format!("{}/v1/calls", client.gateway());
        Ok(Bridge { client, http, sub: config.sub.clone(), calls_url })
    }

    /// Signs a call of `tool` with `args`, forwards it and shapes the answer: the whole
    /// `tools/call`, without the MCP framing.
    pub async fn call(&self, tool: &str, args: JsonObject) -> CallToolResult {
        let signed = match self.client.sign(&self.sub, tool, args, None) {
            Ok(s) => s,
            Err(_) => return bridge_error(BridgeError::Sign.class(), &BridgeError::Sign.to_string()),
        };
        match self.forward(&signed).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(jti = %signed.claims.jti, class = e.class(), error = %e, "call not passed on");
                bridge_error(e.class(), &e.to_string())
            }
        }
    }

    async fn forward(&self, call: &SignedCall) -> Result<CallToolResult, BridgeError> {
        let unreachable = |reason: String| BridgeError::Unreachable(format!("{}: {reason}", self.calls_url));
        let resp = self
            .http
            .post(&self.calls_url)
            .header(reqwest::header::CONTENT_TYPE, "application/jwt")
            .body(call.jws.clone())
            .send()
            .await
            .map_err(|e| unreachable(medicodax_agent::send_error(e)))?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let receipt = header(medicodax_agent::RECEIPT_HEADER);
        let retry_after = header("retry-after").and_then(|v| v.parse().ok());
        let body = resp.bytes().await.map_err(|e| unreachable(e.without_url().to_string()))?;
        let answer = Answer { status, body: &body, receipt: receipt.as_deref(), retry_after };
        match &receipt {
            Some(r) => {
                let checked = self.client.check_receipt(r, &call.jws, &call.claims.jti, &body).await;
                let v = checked.map_err(|e| BridgeError::Receipt { status, reason: e.to_string() })?;
                tracing::info!(jti = %call.claims.jti, tool = %call.claims.tool, status, decision = v.claims.decision.as_str(), seq = v.claims.seq, "call forwarded; receipt verified");
            }
            // Data is only passed on with a receipt that covers it.
            None if answer.is_success() => return Err(BridgeError::Receipt { status, reason: "a success without a receipt".into() }),
            // Calls that do not verify, and calls the audit log could not take, have none.
            None => tracing::info!(jti = %call.claims.jti, tool = %call.claims.tool, status, "call refused without a receipt"),
        }
        Ok(call_result(&answer))
    }
}

/// What the bridge tells clients.
const BRIDGE_INSTRUCTIONS: &str = "This local MCP server holds a MEDICODAX agent key: it signs each tools/call for you and forwards it to the gateway, \
which checks policy and writes the audit log. Each result's text is the gateway's answer bytes; its signed receipt is in _meta[\"io.medicodax/receipt\"].";

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        catalog::server_config("medicodax-mcp-bridge").with_instructions(BRIDGE_INSTRUCTIONS)
    }

    async fn list_tools(&self, _request: Option<PaginatedRequestParams>, _context: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog::tools()))
    }

    async fn call_tool(&self, request: CallToolRequestParams, _context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        Ok(self.call(&request.name, request.arguments.unwrap_or_default()).await.into())
    }
}

/// Serves `bridge` on standard input/output until the client closes it.
pub async fn serve_stdio(bridge: Bridge) -> Result<(), BridgeError> {
    let running = bridge.serve(rmcp::transport::stdio()).await.map_err(|e| {
        // The error's Display can echo the client's first message (arguments): name the kind only.
        BridgeError::Stdio(match e {
            ServerInitializeError::ConnectionClosed(_) => "the client closed the connection before the session started",
            ServerInitializeError::TransportError { .. } => "reading or writing the standard streams failed",
            ServerInitializeError::Cancelled => "cancelled",
            _ => "the client did not start the session with initialize or a request carrying its protocol metadata",
        })
    })?;
    running.waiting().await.map_err(|_| BridgeError::Stdio("the session task failed"))?;
    Ok(())
}
