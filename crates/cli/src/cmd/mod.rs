//! One module per subcommand.

pub mod call;
pub mod keys;
pub mod mcp;
pub mod serve;
pub mod users;
