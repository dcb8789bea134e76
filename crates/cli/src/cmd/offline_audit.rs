//! Audit records written by a command while no gateway runs on the data folder (it holds
//! the folder's lock, so the log keeps one writer): key rotations, user changes.

use crate::CliError;
use crate::context::Context;
use medicodax_audit::{AuditLog, Db, LogConfig};
use medicodax_clock::SystemClock;
use medicodax_config::Config;
use medicodax_jose::KeyRing;
use medicodax_wire::audit::SystemEvent;

/// Takes the data folder's lock (creating the folder), refusing while a gateway runs on
/// it; `what` says what to do instead (e.g. "add users from the dashboard's Users page").
pub fn lock(ctx: &Context, what: &str) -> Result<std::fs::File, CliError> {
    std::fs::create_dir_all(&ctx.data_dir).map_err(|e| CliError::Usage(format!("cannot create the data folder {}: {e}; pass a writable --data-dir", ctx.data_dir.display())))?;
    medicodax_gateway::server::lock_data_dir(&ctx.data_dir).map_err(|e| match e {
        // Exit 2, as for `fhir`, `token` and `demo` in the same situation.
        medicodax_gateway::server::StartError::Config(_) => CliError::Usage(format!("a gateway is running on the data folder {}: {what}, or stop it first (or use another --data-dir)", ctx.data_dir.display())),
        other => super::serve::start_error(other),
    })
}

/// Appends `event` to the audit log, signing the log's checkpoint with the gateway key.
pub async fn append(ctx: &Context, config: &Config, mut event: SystemEvent) -> Result<(), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::Failed(format!("the change was made but could not be audited: {e}"));
    let url = config.store.url.clone().unwrap_or_else(|| medicodax_gateway::server::default_store_url(&ctx.data_dir));
    let db = Db::connect(&url).await.map_err(|e| fail(&e))?;
    let origin = db.log_origin().await.map_err(|e| fail(&e))?.unwrap_or_else(|| config.gateway.audience());
    let clock = SystemClock::shared();
    // Before the gateway's first start there is no gateway key yet: make it as the gateway would.
    let policy = medicodax_gateway::server::rotation_policy(config);
    let alg = medicodax_gateway::server::gateway_alg(config);
    let (ring, created) = KeyRing::open_or_create(&ctx.gateway_key_dir(), "gateway", alg, policy, clock.now_unix()).map_err(|e| fail(&e))?;
    let signer = move |now: i64| ring.signer(now);
    let log = AuditLog::open(db, signer, clock.clone(), LogConfig::new(origin)).await.map_err(|e| fail(&e))?;
    let now_ms = clock.now_unix_millis();
    for e in &created {
        log.append_event(medicodax_gateway::server::ring_event(e, now_ms)).await.map_err(|e| fail(&e))?;
    }
    event.time_ms = now_ms;
    log.append_event(event).await.map_err(|e| fail(&e))?;
    log.shutdown().await.map_err(|e| fail(&e))?;
    Ok(())
}
