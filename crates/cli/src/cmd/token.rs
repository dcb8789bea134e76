//! `medicodax token --connection NAME [--show-token] [--json]`: fetch a token through the
//! auth manager and show its metadata.

use crate::CliError;
use crate::context::Context;

/// Arguments of `token`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The connection (see [[connections]] in the configuration; embedded: epic-sandbox, ecw-sandbox).
    #[arg(long)]
    connection: String,
    /// Also print the access token itself (it is a secret: keep it out of logs and tickets).
    #[arg(long)]
    show_token: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, a: Args) -> Result<(), CliError> {
    let env = super::env::Env::open(ctx).await?;
    let result = medicodax_smart::token_report(&env.gateway.auth, &a.connection, a.show_token).await;
    env.close().await;
    let report = result.map_err(|e| match e {
        medicodax_smart::AuthError::UnknownConnection(_) => CliError::Usage(e.to_string()),
        other => CliError::Failed(other.to_string()),
    })?;
    if a.json {
        crate::out::json(&report);
    } else {
        crate::out::line(&report.to_string());
    }
    Ok(())
}
