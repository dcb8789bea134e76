//! The embedded default (DESIGN.md §2): with no configuration file, `serve` and `demo`
//! start the sandbox EHRs on loopback, point two connections at them (`epic-sandbox`,
//! `ecw-sandbox`), and register the reference coding agent (`coding-agent`, its key in the
//! data folder) acting for the sandbox user `coder`.
//!
//! The gateway's listener is bound first, so the sandbox can be told where our JWKS is:
//! it fetches our assertion keys from `/.well-known/jwks.json` exactly as a real EHR
//! fetches a registered JWKS URL.

use crate::CliError;
use medicodax_clock::SharedClock;
use medicodax_config::{AgentConfig, Config, ConnectionConfig, RoleConfig, Vendor};
use medicodax_jose::{Alg, PrivateKey};
use medicodax_sandbox::{ClientKeys, ClientRegistration, Sandbox, SandboxConfig, SandboxHandle};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The reference agent's id.
pub const CODING_AGENT: &str = "coding-agent";
/// The sandbox user the agent acts for.
pub const CODER: &str = "coder";
/// Client ids registered with the sandbox EHRs.
pub const EPIC_CLIENT: &str = "medicodax-epic-sandbox";
/// Client id at the eClinicalWorks-like sandbox.
pub const ECW_CLIENT: &str = "medicodax-ecw-sandbox";

/// The running embedded environment.
pub struct Embedded {
    /// The sandbox EHRs.
    pub sandbox: SandboxHandle,
    /// The configuration pointing at them.
    pub config: Config,
    /// The gateway's bound listener.
    pub listener: tokio::net::TcpListener,
    /// The gateway's address.
    pub addr: SocketAddr,
    /// The coding agent's private key file.
    pub agent_key: PathBuf,
}

/// Where the coding agent's key and JWKS live.
pub fn agent_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("keys").join("agents");
    (dir.join("coding-agent.pem"), dir.join("coding-agent.jwks.json"))
}

/// Creates the coding agent's key (RS384) and JWKS file if missing.
pub fn ensure_agent_key(data_dir: &Path) -> Result<PathBuf, CliError> {
    let (pem, jwks) = agent_paths(data_dir);
    let fail = |e: &dyn std::fmt::Display| CliError::Failed(format!("coding agent key: {e}"));
    let key = if pem.exists() {
        PrivateKey::from_file(&pem, Alg::RS384).map_err(|e| fail(&e))?
    } else {
        let k = PrivateKey::generate(Alg::RS384).map_err(|e| fail(&e))?;
        medicodax_jose::key::write_private_key(&pem, &k).map_err(|e| fail(&e))?;
        k
    };
    let doc = serde_json::json!({"keys": [key.public_jwk()]});
    std::fs::write(&jwks, serde_json::to_vec_pretty(&doc).map_err(|e| fail(&e))?).map_err(|e| fail(&e))?;
    Ok(pem)
}

/// Binds the gateway at `listen`, starts the sandbox, and builds the configuration on
/// `base` (the defaults with any `MEDICODAX_SECTION__KEY` overrides applied).
pub async fn start(base: Config, listen: &str, data_dir: &Path, clock: SharedClock) -> Result<Embedded, CliError> {
    std::fs::create_dir_all(data_dir).map_err(|e| CliError::Usage(format!("cannot create the data folder {}: {e}; pass a writable --data-dir", data_dir.display())))?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| CliError::Failed(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| CliError::Failed(e.to_string()))?;
    let jwks_url = format!("http://{addr}/.well-known/jwks.json");
    let sandbox = Sandbox::start(SandboxConfig {
        clients: vec![
            ClientRegistration::new(EPIC_CLIENT, medicodax_sandbox::Vendor::Epic, ClientKeys::JwksUrl(jwks_url.clone())),
            ClientRegistration::new(ECW_CLIENT, medicodax_sandbox::Vendor::EClinicalWorks, ClientKeys::JwksUrl(jwks_url)),
        ],
        clock: clock.clone(),
        ..SandboxConfig::default()
    })
    .await
    .map_err(|e| CliError::Failed(format!("cannot start the sandbox EHRs: {e}")))?;
    let agent_key = ensure_agent_key(data_dir)?;
    let config = config_for(base, &sandbox, addr, data_dir)?;
    Ok(Embedded { sandbox, config, listener, addr, agent_key })
}

fn connection(name: &str, vendor: Vendor, base: String, client: &str) -> ConnectionConfig {
    ConnectionConfig { scopes: medicodax_sandbox::default_scopes(), ..ConnectionConfig::new(name, vendor, &base, client) }
}

/// The embedded configuration: two sandbox connections, the `coder` and `auditor` roles and
/// the coding agent, on top of `base` (which keeps the store, keys, coding and gateway
/// settings the environment gave).
pub fn config_for(base: Config, sandbox: &SandboxHandle, addr: SocketAddr, data_dir: &Path) -> Result<Config, CliError> {
    let mut config = base;
    config.gateway.listen = addr.to_string();
    config.connections = vec![
        connection("epic-sandbox", Vendor::Epic, sandbox.epic_fhir_base(), EPIC_CLIENT),
        connection("ecw-sandbox", Vendor::Eclinicalworks, sandbox.ecw_fhir_base(), ECW_CLIENT),
    ];
    config.roles.insert(
        CODER.into(),
        RoleConfig {
            scopes: vec!["system/*.rs".into()],
            tools: ["fhir.read", "fhir.search", "encounter.bundle", "connections.list", "worksheet.submit"].map(str::to_owned).to_vec(),
            redact: ["Patient.telecom", "Patient.address", "Patient.identifier"].map(str::to_owned).to_vec(),
            ..RoleConfig::default()
        },
    );
    config.roles.insert("auditor".into(), RoleConfig { tools: vec!["connections.list".into()], ..RoleConfig::default() });
    let (_, jwks) = agent_paths(data_dir);
    config.agents = vec![AgentConfig { id: CODING_AGENT.into(), jwks: Some(jwks), jwks_url: None, roles: vec![CODER.into()], may_act_for: vec![format!("role:{CODER}")] }];
    config.validate().map_err(|e| CliError::Usage(format!("embedded configuration: {e}")))?;
    Ok(config)
}
