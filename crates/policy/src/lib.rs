//! Access policy for MEDICODAX: the policy layer of `DESIGN.md`.
//!
//! Knows nothing of HTTP or storage. Modules:
//! - [`scope`]: the SMART v1/v2 scope grammar and matching (also used by the sandbox EHRs
//!   to judge our tokens the way a vendor would).
pub mod scope;

pub use scope::{Context, Grant, Interaction, Scope, ScopeError, ScopeSet};
