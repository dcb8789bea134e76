//! `medicodax`: the one binary. Each subcommand lives in `cmd/`; this file parses the
//! command line, sets up logging, loads the configuration and maps errors to exit codes
//! (0 success, 1 a failed operation, 2 bad usage or configuration).

mod cmd;
mod context;
mod embedded;
mod out;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// The trust layer between AI agents and electronic health records.
#[derive(Parser, Debug)]
#[command(name = "medicodax", version, about, long_about = "MEDICODAX holds EHR credentials, speaks SMART Backend Services to each vendor, and lets AI agents reach FHIR R4 data only through signed, scoped and audited tool calls.\n\nWith no configuration file, `serve` and `demo` run the embedded sandbox EHRs (an Epic-like and an eClinicalWorks-like server over bundled synthetic patients).")]
struct Cli {
    /// Configuration file (TOML); every key can also be set as MEDICODAX_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "MEDICODAX_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder: keys, the SQLite store.
    #[arg(long, global = true, env = "MEDICODAX_DATA_DIR", default_value = "./medicodax-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Log format on standard error.
    #[arg(long, global = true, env = "MEDICODAX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole mission on the embedded sandbox; prints a summary.
    Demo(cmd::demo::Args),
    /// The gateway (no config file: the embedded sandbox default on 127.0.0.1:8080).
    Serve(cmd::serve::Args),
    /// The sandbox EHRs alone.
    Sandbox(cmd::serve::SandboxArgs),
    /// Our signing keys and the JWKS we publish.
    Keys(cmd::keys::Args),
    /// Fetch a token through the auth manager and show its metadata.
    Token(cmd::token::Args),
    /// FHIR through a connection (operator access: no agent policy).
    Fhir(cmd::fhir::Args),
    /// The coding pipeline (an agent like any other).
    Code(cmd::code::Args),
    /// The audit log: verify, prove, export, tail.
    Audit(cmd::audit::Args),
    /// One signed tool call: prints the result and checks the receipt.
    Call(cmd::call::Args),
    /// A local MCP server on stdin/stdout that signs each tool call with the agent's key and forwards it.
    Mcp(cmd::mcp::Args),
    /// Dashboard users: add, passwd, list.
    Users(cmd::users::Args),
}

/// How a command failed, which decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or configuration: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The operation failed: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl From<medicodax_config::ConfigError> for CliError {
    fn from(e: medicodax_config::ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::EnvFilter;
    use std::io::IsTerminal as _;
    let filter = match std::env::var("MEDICODAX_LOG") {
        Ok(v) => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("warning: MEDICODAX_LOG={v:?} is not a log filter ({e}); using {default:?}. Examples: info, medicodax_smart=debug");
            EnvFilter::new(default)
        }),
        Err(_) => EnvFilter::new(default),
    };
    // rmcp logs whole JSON-RPC messages (signed calls, resource bodies) at debug and trace,
    // and every client's details at info: only its warnings, whatever MEDICODAX_LOG says.
    let filter = match "rmcp=warn".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log their work; one-shot commands stay quiet unless MEDICODAX_LOG asks.
    let default_level = if matches!(cli.command, Command::Serve(_) | Command::Sandbox(_)) { "info" } else { "warn" };
    init_logging(cli.log_format, default_level);
    if let Err(e) = medicodax_jose::init() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let ctx = context::Context { config_path: cli.config.clone(), data_dir: cli.data_dir.clone() };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(a) => cmd::demo::run(&ctx, a).await,
            Command::Serve(a) => cmd::serve::run(&ctx, a).await,
            Command::Sandbox(a) => cmd::serve::run_sandbox(&ctx, a).await,
            Command::Keys(a) => cmd::keys::run(&ctx, a).await,
            Command::Token(a) => cmd::token::run(&ctx, a).await,
            Command::Fhir(a) => cmd::fhir::run(&ctx, a).await,
            Command::Code(a) => cmd::code::run(&ctx, a).await,
            Command::Audit(a) => cmd::audit::run(&ctx, a).await,
            Command::Call(a) => cmd::call::run(&ctx, a).await,
            Command::Mcp(a) => cmd::mcp::run(&ctx, a).await,
            Command::Users(a) => cmd::users::run(&ctx, a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}
