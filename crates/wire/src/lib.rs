//! Wire types of MEDICODAX: what crosses the trust boundary, as plain serde types.
//!
//! This crate is the lowest layer. The gateway, the audit log and every agent (our
//! coding pipeline, or an outside team's) depend on it; it depends on nothing of ours.
//! The formats are specified in `DESIGN.md` §3:
//!
//! - [`call`]: the claims of a signed tool call (`typ` `medicodax-call+jwt`);
//! - [`tools`]: tool names, their arguments and results;
//! - [`receipt`]: the gateway's signed receipt and audit checkpoint claims;
//! - [`audit`]: intent and outcome records of the tamper-evident log;
//! - [`problem`]: RFC 9457 problem details and the documented error codes;
//! - [`fhir`]: the eleven FHIR resource types and the id grammar;
//! - [`hash`]: SHA-256 hex, RFC 8785 canonical JSON and RFC 6962 leaf hashing;
//! - [`strict_json`]: JSON parsing that refuses duplicate member names.

pub mod audit;
pub mod call;
pub mod fhir;
pub mod hash;
pub mod problem;
pub mod receipt;
pub mod strict_json;
pub mod tools;

pub use call::{Audience, CallClaims, NumericDate, CALL_TYP};
pub use fhir::{FhirId, ResourceType};
pub use problem::{Problem, ProblemCode};
pub use receipt::{CheckpointClaims, Decision, ReceiptClaims, CHECKPOINT_TYP, RECEIPT_TYP};
pub use tools::ToolName;
