//! MCP over streamable HTTP at `/mcp` (DESIGN.md §3.1, §3.2), on the official Rust SDK
//! `rmcp`. This is the only module of the gateway that uses `rmcp`.
//!
//! ## Mapping
//!
//! - `initialize`, `server/discover`, `tools/list`: no signature needed; they reveal no
//!   data. The tools and their input schemas are [`medicodax_mcp_bridge::catalog`]'s, the
//!   same list `medicodax mcp` offers.
//! - `tools/call`: `params._meta["io.medicodax/call"]` must hold the signed call (a
//!   compact JWS). It goes through the very pipeline of `POST /v1/calls`
//!   ([`Gateway::handle_call_expecting`], channel `mcp`), told what the MCP request asks
//!   for: a verified call whose `tool` is not the request's `name`, or whose `args` are
//!   not the request's `arguments` (RFC 8785 canonical forms compared; absent `arguments`
//!   is `{}`), is denied with `400 bad-arguments` after its intent record is written, so
//!   the mismatch is audited and receipted like any denial.
//! - The answer bytes B become the result as [`medicodax_mcp_bridge::result`] describes:
//!   B as the single text item (and `structuredContent` on success), `isError` on
//!   failure, the receipt in `_meta["io.medicodax/receipt"]`, the `/v1/calls` status in
//!   `_meta["io.medicodax/status"]`.
//! - A call without the `_meta` entry, with one that is not a string, or whose JWS does
//!   not verify, is an error result holding a `401 invalid-call` (or `413 too-large`)
//!   problem and no receipt; it is not audited (as on `/v1/calls`) but counted in
//!   `/metrics` as `medicodax_calls_rejected_total{channel="mcp"}`.
//! - Tool failures are results with `isError: true`, never JSON-RPC errors, so an agent's
//!   model sees the problem document. A JSON body that is not JSON, or a batch, or not a
//!   JSON-RPC 2.0 message object, is answered here with 400 and the JSON-RPC error
//!   (-32700, -32600) before rmcp sees it (rmcp would answer 415); other JSON-RPC errors
//!   are rmcp's: unknown methods, bad parameters, bad protocol headers.
//!
//! ## Transport settings
//!
//! Stateless (no `Mcp-Session-Id`; every POST stands alone, which suits calls that are
//! self-contained signed JWS) with plain JSON responses. `Host` must be one of
//! `gateway.allowed_hosts` (loopback by default, rmcp's DNS-rebinding guard); a request
//! carrying `Origin` must name one of `gateway.allowed_origins` (none by default, so
//! browsers cannot call `/mcp`; MCP clients send no `Origin`). Request bodies are limited
//! to a few times `gateway.max_call_bytes`, since a call carries its arguments twice.
//!
//! The pipeline of a `tools/call` runs on its own task: if the client goes away after
//! the intent record is written, the outcome record is still written.

use crate::problem::ApiProblem;
use crate::service::{CallAnswer, Channel, Expected, Gateway};
use medicodax_config::GatewayConfig;
use medicodax_mcp_bridge::catalog::{self, CALL_META_KEY};
use medicodax_mcp_bridge::result::{Answer, call_result};
use medicodax_wire::ProblemCode;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult, PaginatedRequestParams, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::Arc;

/// Where the endpoint is mounted.
pub const PATH: &str = "/mcp";

/// The MCP server of one gateway (one per request: rmcp's stateless mode builds a
/// handler for each POST).
#[derive(Clone)]
pub struct McpEndpoint {
    gw: Arc<Gateway>,
}

impl std::fmt::Debug for McpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpEndpoint").finish_non_exhaustive()
    }
}

/// Why a `tools/call` carries no usable signed call.
fn unsigned(detail: &str) -> CallToolResult {
    metrics::counter!("medicodax_calls_rejected_total", "reason" => "no_signed_call", "channel" => "mcp").increment(1);
    let p = ApiProblem::new(ProblemCode::InvalidCall, detail);
    call_result(&Answer { status: p.problem.status, body: &p.body(), receipt: None, retry_after: None })
}

fn answer_result(a: &CallAnswer) -> CallToolResult {
    call_result(&Answer { status: a.status, body: &a.body, receipt: a.receipt.as_deref(), retry_after: a.retry_after })
}

impl McpEndpoint {
    /// The endpoint for `gw`.
    pub fn new(gw: Arc<Gateway>) -> Self {
        McpEndpoint { gw }
    }

    /// One `tools/call`: the signed call in `meta`, checked against `request`.
    async fn call(&self, request: CallToolRequestParams, meta: &serde_json::Map<String, Value>) -> CallToolResult {
        let jws = match meta.get(CALL_META_KEY) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return unsigned("params._meta[\"io.medicodax/call\"] must be a string: the signed call as a compact JWS"),
            None => return unsigned("tools/call needs the signed call (a compact JWS, typ medicodax-call+jwt) in params._meta[\"io.medicodax/call\"]; use `medicodax mcp` if your client cannot sign"),
        };
        let expected = Expected { tool: request.name.into_owned(), args: request.arguments.unwrap_or_default() };
        let gw = Arc::clone(&self.gw);
        // Its own task, so that a client disconnect cannot cut the pipeline between the
        // intent and the outcome records.
        let task = tokio::spawn(async move { gw.handle_call_expecting(jws.as_bytes(), Channel::Mcp, Some(&expected)).await });
        match task.await {
            Ok(a) => answer_result(&a),
            Err(e) => {
                tracing::error!(error = %e, "an MCP call's pipeline task failed");
                let p = ApiProblem::new(ProblemCode::Internal, "the gateway failed; the audit log holds the call's intent");
                call_result(&Answer { status: p.problem.status, body: &p.body(), receipt: None, retry_after: None })
            }
        }
    }
}

impl ServerHandler for McpEndpoint {
    fn get_info(&self) -> ServerConfig {
        catalog::server_config("medicodax-gateway")
    }

    async fn list_tools(&self, _request: Option<PaginatedRequestParams>, _context: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog::tools()))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        // rmcp moves the request's `_meta` into the context.
        Ok(self.call(request, &context.meta.0.0).await.into())
    }
}

/// The transport configuration from `gateway.*`.
fn transport_config(g: &GatewayConfig) -> StreamableHttpServerConfig {
    let limit = g.max_call_bytes.saturating_mul(3).max(64 * 1024);
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(limit)
        .enforce_origin_validation();
    if !g.allowed_hosts.is_empty() {
        config = config.with_allowed_hosts(g.allowed_hosts.iter().cloned());
    }
    if !g.allowed_origins.is_empty() {
        config = config.with_allowed_origins(g.allowed_origins.iter().cloned());
    }
    config
}

/// The `/mcp` route.
pub fn router(gw: Arc<Gateway>) -> axum::Router {
    let config = transport_config(&gw.config.gateway);
    let limit = config.max_request_body_bytes;
    let service = StreamableHttpService::new(move || Ok(McpEndpoint::new(Arc::clone(&gw))), Arc::new(NeverSessionManager::default()), config);
    axum::Router::new().route_service(PATH, service).layer(axum::middleware::from_fn(move |req, next| json_rpc_shape(req, next, limit)))
}

/// A JSON-RPC error answer (HTTP 400) for a message that never reached rmcp.
fn json_rpc_error(code: i64, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (http::StatusCode::BAD_REQUEST, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Checks that a JSON POST body is one JSON-RPC 2.0 message object, answering -32700 or
/// -32600 if not; passes everything else (other methods, other media types) to rmcp.
async fn json_rpc_shape(req: axum::extract::Request, next: axum::middleware::Next, limit: usize) -> axum::response::Response {
    let is_json = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"));
    if req.method() != http::Method::POST || !is_json {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        use axum::response::IntoResponse as _;
        return (http::StatusCode::PAYLOAD_TOO_LARGE, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("the request body is larger than {limit} bytes\n")).into_response();
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Err(_) => return json_rpc_error(-32700, "Parse error: the body is not JSON"),
        Ok(Value::Array(_)) => return json_rpc_error(-32600, "Invalid Request: JSON-RPC batches are not supported (MCP removed them); send one message per POST"),
        Ok(Value::Object(m)) if m.get("jsonrpc").and_then(Value::as_str) == Some("2.0") && m.get("method").is_none_or(Value::is_string) => {}
        Ok(_) => return json_rpc_error(-32600, "Invalid Request: expected one JSON-RPC 2.0 message object (\"jsonrpc\": \"2.0\")"),
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_origins_and_body_limit_come_from_the_configuration() {
        let defaults = transport_config(&GatewayConfig::default());
        assert_eq!(defaults.allowed_hosts, ["localhost", "127.0.0.1", "::1"], "loopback unless configured");
        assert!(defaults.allowed_origins.is_empty());
        assert_eq!(defaults.max_request_body_bytes, 3 * 65536);
        assert!(!defaults.legacy_session_mode && defaults.json_response, "stateless, JSON answers");

        let g = GatewayConfig {
            allowed_hosts: vec!["gateway.example.org".into()],
            allowed_origins: vec!["https://app.example.org:443".into()],
            max_call_bytes: 1000,
            ..GatewayConfig::default()
        };
        let c = transport_config(&g);
        assert_eq!(c.allowed_hosts, ["gateway.example.org"]);
        assert_eq!(c.allowed_origins, ["https://app.example.org:443"]);
        assert_eq!(c.max_request_body_bytes, 64 * 1024, "never below 64 KiB");
    }
}
