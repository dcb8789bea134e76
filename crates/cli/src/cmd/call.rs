//! `medicodax call TOOL --args JSON --agent ID --key PEM [--gateway URL]`.

use crate::CliError;
use crate::context::Context;
use medicodax_clock::SystemClock;

/// Arguments of `call`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tool: fhir.read, fhir.search, encounter.bundle, connections.list or worksheet.submit.
    tool: String,
    /// The tool's arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Who signs, for whom, to which gateway.
    #[command(flatten)]
    agent: super::agent_args::AgentArgs,
}

pub async fn run(_ctx: &Context, a: Args) -> Result<(), CliError> {
    let args: serde_json::Value = serde_json::from_str(&a.args).map_err(|e| CliError::Usage(format!("--args is not JSON: {e}")))?;
    let serde_json::Value::Object(args) = args else {
        return Err(CliError::Usage("--args must be a JSON object".into()));
    };
    let client = a.agent.client(SystemClock::shared())?;
    let sub = a.agent.sub();
    let out = client.call(&sub, &a.tool, args).await.map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(r) = &out.receipt {
        eprintln!("receipt verified: decision={} seq={} leaf={}", r.claims.decision.as_str(), r.claims.seq, r.claims.leaf_hash.chars().take(16).collect::<String>());
    }
    match (out.result, out.problem) {
        (Some(result), _) => {
            crate::out::json(&result);
            Ok(())
        }
        (None, Some(p)) => Err(CliError::Failed(format!("{} {}: {}", p.status, p.code, p.detail))),
        (None, None) => Err(CliError::Failed(format!("the gateway answered {}", out.status))),
    }
}
