//! Signed tool calls: the agents' keys and call verification.

pub mod agent_keys;
pub mod verify;

pub use agent_keys::{AgentKeys, CacheRules, HttpJwksFetcher, JwksFetcher, KeyLookupError};
pub use verify::{CALL_ALGS, CallVerifier, VerifiedCall, VerifyError};
