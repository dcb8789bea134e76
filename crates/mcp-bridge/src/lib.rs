//! MCP for MEDICODAX (DESIGN.md §3.1, §3.2), on the official Rust SDK `rmcp`.
//!
//! Two MCP servers offer the gateway's tools: the gateway itself at `/mcp` (streamable
//! HTTP, for clients that sign their calls) and `medicodax mcp`, the stdio [`bridge`]
//! that runs on the agent's machine, holds the agent's key and signs for clients that
//! cannot. This crate holds what they share, so both list the same tools and answer in
//! the same shape, and the bridge itself:
//!
//! - [`catalog`]: the server identity, the tool list with a JSON Schema per tool, and the
//!   `_meta` keys;
//! - [`result`]: how an answer (status, bytes B, receipt) becomes a `tools/call` result;
//! - [`bridge`]: the stdio server (sign, `POST /v1/calls`, check the receipt, answer).
//!
//! ## The mapping
//!
//! `initialize` / `server/discover` and `tools/list` need no signature and reveal no data.
//! A `tools/call` to the gateway carries the signed call:
//!
//! ```json
//! {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
//!  "params": {"name": "fhir.read",
//!             "arguments": {"connection": "epic-sandbox", "type": "Patient", "id": "p-1"},
//!             "_meta": {"io.medicodax/call": "<compact JWS, typ medicodax-call+jwt>"}}}
//! ```
//!
//! The JWS's `tool` must equal `name` and its `args` must equal `arguments` (RFC 8785
//! canonical forms compared; an absent `arguments` is `{}`). The result:
//!
//! ```json
//! {"content": [{"type": "text", "text": "<B: the answer bytes>"}],
//!  "structuredContent": {"resourceType": "Patient", "id": "p-1"},
//!  "isError": false,
//!  "_meta": {"io.medicodax/receipt": "<receipt JWS>", "io.medicodax/status": 200}}
//! ```
//!
//! A failure has `isError: true`, the RFC 9457 problem document as the text and no
//! `structuredContent`; it has a receipt when the call verified (a denial, a replay, an
//! EHR failure), none when it did not (no or a bad signed call). `io.medicodax/status` is
//! the status `POST /v1/calls` answers with, `io.medicodax/retry-after` is added when the
//! gateway gives one.
//!
//! The gateway depends on this crate for [`catalog`] and [`result`]; this crate never
//! depends on the gateway (the bridge runs on the agent's machine).

pub mod bridge;
pub mod catalog;
pub mod result;

pub use bridge::{Bridge, BridgeConfig, BridgeError, serve_stdio};
pub use catalog::{CALL_META_KEY, RECEIPT_META_KEY};
pub use result::{Answer, call_result};
