//! `medicodax serve [--listen ADDR]` and `medicodax sandbox [--listen ADDR]`.

use crate::CliError;
use crate::context::Context;
use crate::embedded;
use medicodax_clock::SystemClock;
use medicodax_gateway::server::{self, Paths, StartError};
use std::sync::Arc;

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (overrides gateway.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

/// Maps a start failure to an exit code.
pub fn start_error(e: StartError) -> CliError {
    match e {
        StartError::Config(m) => CliError::Usage(m),
        StartError::Runtime(m) => CliError::Failed(m),
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Makes sure the sandbox user the coding agent acts for exists.
pub async fn ensure_coder(gw: &medicodax_gateway::service::Gateway) -> Result<(), CliError> {
    if gw.users.get(embedded::CODER).await.map_err(|e| CliError::Failed(e.to_string()))?.is_none() {
        let pw = medicodax_gateway::users::random_password().map_err(|e| CliError::Failed(e.to_string()))?;
        gw.users.add(embedded::CODER, &pw, &[embedded::CODER.to_owned()], gw.clock.now_unix_millis()).await.map_err(|e| CliError::Failed(e.to_string()))?;
    }
    Ok(())
}

pub async fn run(ctx: &Context, a: Args) -> Result<(), CliError> {
    let clock = SystemClock::shared();
    let (config, listener, sandbox, config_dir) = match &ctx.config_path {
        Some(path) => {
            let mut config = ctx.config()?;
            if let Some(l) = &a.listen {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    return Err(CliError::Usage(format!("--listen {l:?} is not an address:port such as 127.0.0.1:8080")));
                }
                config.gateway.listen = l.clone();
            }
            let listener = tokio::net::TcpListener::bind(&config.gateway.listen).await.map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", config.gateway.listen)))?;
            let dir = path.parent().map(|p| p.to_owned()).unwrap_or_default();
            (config, listener, None, dir)
        }
        None => {
            let base = ctx.config()?;
            let listen = a.listen.clone().unwrap_or_else(|| base.gateway.listen.clone());
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(CliError::Usage(format!("{listen:?} is not an address:port such as 127.0.0.1:8080")));
            }
            let e = embedded::start(base, &listen, &ctx.data_dir, Arc::clone(&clock)).await?;
            eprintln!("sandbox EHRs: Epic-like {}  eClinicalWorks-like {}", e.sandbox.epic_fhir_base(), e.sandbox.ecw_fhir_base());
            (e.config, e.listener, Some(e.sandbox), std::env::current_dir().unwrap_or_default())
        }
    };
    let paths = Paths { data_dir: ctx.data_dir.clone(), config_dir };
    let addr = listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?;
    let (gw, startup) = server::build(config, &paths, clock).await.map_err(start_error)?;
    if sandbox.is_some() {
        ensure_coder(&gw).await?;
    }
    if let Some(pw) = startup.admin_password {
        eprintln!("created dashboard user `admin` with password: {pw}\n(shown once; to set a new one, with no gateway running: `medicodax users passwd admin --generate`)");
    }
    eprintln!("gateway listening on http://{addr} (audience {})", gw.audience());
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: serving plain HTTP on {} beyond this machine: put TLS in front of it (a reverse proxy) and set gateway.audience to the public https:// URL agents use",
            addr.ip()
        );
    }
    server::serve(gw, listener, shutdown_signal()).await.map_err(start_error)?;
    if let Some(s) = sandbox {
        let _ = s.shutdown().await;
    }
    Ok(())
}

/// Arguments of `sandbox`.
#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR")]
    listen: String,
    /// The JWKS URL registered for both sandbox clients (our gateway's, by default).
    #[arg(long, default_value = "http://127.0.0.1:8080/.well-known/jwks.json", value_name = "URL")]
    jwks_url: String,
}

pub async fn run_sandbox(_ctx: &Context, a: SandboxArgs) -> Result<(), CliError> {
    use medicodax_sandbox::{ClientKeys, ClientRegistration, Sandbox, SandboxConfig, Vendor};
    let listen = a.listen.parse().map_err(|_| CliError::Usage(format!("--listen {:?} is not an address:port", a.listen)))?;
    let sandbox = Sandbox::start(SandboxConfig {
        listen,
        clients: vec![
            ClientRegistration::new(embedded::EPIC_CLIENT, Vendor::Epic, ClientKeys::JwksUrl(a.jwks_url.clone())),
            ClientRegistration::new(embedded::ECW_CLIENT, Vendor::EClinicalWorks, ClientKeys::JwksUrl(a.jwks_url.clone())),
        ],
        ..SandboxConfig::default()
    })
    .await
    .map_err(|e| CliError::Failed(format!("cannot start the sandbox: {e}")))?;
    crate::out::line(&format!("epic-sandbox  client_id={}  fhir_base={}", embedded::EPIC_CLIENT, sandbox.epic_fhir_base()));
    crate::out::line(&format!("ecw-sandbox   client_id={}  fhir_base={}", embedded::ECW_CLIENT, sandbox.ecw_fhir_base()));
    eprintln!("trusting client keys from {}; Ctrl-C to stop", a.jwks_url);
    shutdown_signal().await;
    sandbox.shutdown().await.map_err(|e| CliError::Failed(e.to_string()))
}
