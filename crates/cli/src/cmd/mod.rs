//! One module per subcommand.

pub mod call;
pub mod keys;
pub mod mcp;
pub mod offline_audit;
pub mod serve;
pub mod users;
pub mod agent_args;
pub mod audit;
pub mod code;
pub mod demo;
pub mod env;
pub mod fhir;
pub mod token;
