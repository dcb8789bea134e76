//! The environment a command that talks to EHRs runs in: the configured gateway parts, or,
//! with no configuration file, the embedded sandbox and a gateway serving on loopback (so
//! the sandbox can fetch our keys as a real EHR fetches a registered JWKS URL).

use crate::CliError;
use crate::context::Context;
use crate::embedded;
use medicodax_clock::SystemClock;
use medicodax_gateway::server::{self, Paths};
use medicodax_gateway::service::Gateway;
use std::sync::Arc;

/// A running environment; [`Env::close`] stops what it started.
pub struct Env {
    /// The gateway (its auth manager and FHIR clients are what `token` and `fhir` use).
    pub gateway: Arc<Gateway>,
    /// The gateway's base URL when it is serving.
    pub url: Option<String>,
    /// The embedded coding agent's key, when embedded.
    pub agent_key: Option<std::path::PathBuf>,
    /// The embedded sandbox, when embedded.
    pub sandbox: Option<medicodax_sandbox::SandboxHandle>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), server::StartError>>>,
}

impl Env {
    /// Opens the configured parts, or starts the embedded default.
    pub async fn open(ctx: &Context) -> Result<Env, CliError> {
        let clock = SystemClock::shared();
        match &ctx.config_path {
            Some(path) => {
                let config = ctx.config()?;
                let paths = Paths { data_dir: ctx.data_dir.clone(), config_dir: path.parent().map(|p| p.to_owned()).unwrap_or_default() };
                let (gateway, _) = server::build(config, &paths, Arc::clone(&clock)).await.map_err(super::serve::start_error)?;
                Ok(Env { gateway, url: None, agent_key: None, sandbox: None, stop: None, server: None })
            }
            None => {
                let e = embedded::start(ctx.config()?, "127.0.0.1:0", &ctx.data_dir, Arc::clone(&clock)).await?;
                let paths = Paths { data_dir: ctx.data_dir.clone(), config_dir: std::env::current_dir().unwrap_or_default() };
                let (gateway, startup) = server::build(e.config, &paths, Arc::clone(&clock)).await.map_err(super::serve::start_error)?;
                super::serve::ensure_coder(&gateway).await?;
                if let Some(pw) = startup.admin_password {
                    eprintln!("created dashboard user `admin` with password: {pw}\n(shown once; to set a new one, with no gateway running: `medicodax users passwd admin --generate`)");
                }
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let server = tokio::spawn(server::serve(Arc::clone(&gateway), e.listener, async {
                    let _ = rx.await;
                }));
                Ok(Env { gateway, url: Some(format!("http://{}", e.addr)), agent_key: Some(e.agent_key), sandbox: Some(e.sandbox), stop: Some(tx), server: Some(server) })
            }
        }
    }

    /// Stops the server and sandbox this environment started, signing a last checkpoint.
    pub async fn close(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        } else {
            let _ = self.gateway.audit.shutdown().await;
        }
        if let Some(sb) = self.sandbox.take() {
            let _ = sb.shutdown().await;
        }
    }
}
