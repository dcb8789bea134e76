//! The MEDICODAX gateway: the top layer, wiring the others together.
//!
//! Request path of a tool call (`POST /v1/calls` or MCP `tools/call`):
//! [`calls::CallVerifier`] (size, JWS, key, signature, claims) → policy → audit intent
//! (atomic with the replay check) → FHIR client → minimum-necessary filtering → audit
//! outcome → signed receipt.

pub mod calls;
pub mod dashboard;
pub mod ehr;
pub mod http;
pub mod keys;
pub mod mcp;
pub mod metrics;
pub mod oidc;
pub mod problem;
pub mod server;
pub mod service;
pub mod sessions;
pub mod tools;
pub mod users;
pub mod worksheets;
