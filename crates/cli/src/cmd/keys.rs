//! `medicodax keys generate|rotate|jwks`.

use crate::CliError;
use crate::context::Context;
use medicodax_clock::{Clock, SystemClock};
use medicodax_jose::{Alg, KeyRing, PrivateKey};
use std::path::PathBuf;

/// Arguments of `keys`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Create the gateway key ring (if missing), or write a new standalone key with --out.
    Generate {
        /// Write a new private key to this file (mode 0600) instead, and print its public JWKS.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Algorithm of the key.
        #[arg(long, default_value = "RS384", value_parser = ["RS384", "ES384"])]
        alg: String,
    },
    /// Start a rotation: the new key is published now and signs after the publish lead
    /// (audited). While the gateway runs, rotate from the dashboard's Integrations page.
    Rotate {
        /// Rotate this connection's managed assertion key instead of the gateway key.
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
    },
    /// Print the JWKS we publish (the gateway key ring; connection keys are added by `serve`).
    Jwks,
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CliError> {
    let config = ctx.config()?;
    let clock = SystemClock::new();
    let now = clock.now_unix();
    let policy = medicodax_gateway::server::rotation_policy(&config);
    let fail = |e: &dyn std::fmt::Display| CliError::Failed(e.to_string());
    match args.action {
        Action::Generate { out: Some(path), alg } => {
            let alg: Alg = alg.parse().map_err(|e: medicodax_jose::alg::UnsupportedAlg| CliError::Usage(e.to_string()))?;
            if path.exists() {
                return Err(CliError::Usage(format!("{} exists; refusing to overwrite a key", path.display())));
            }
            let key = PrivateKey::generate(alg).map_err(|e| fail(&e))?;
            medicodax_jose::key::write_private_key(&path, &key).map_err(|e| fail(&e))?;
            let jwks = serde_json::json!({"keys": [key.public_jwk()]});
            crate::out::json(&jwks);
            eprintln!("wrote {} (kid {})", path.display(), key.kid());
        }
        Action::Generate { out: None, .. } => {
            let alg = medicodax_gateway::server::gateway_alg(&config);
            let (ring, events) = KeyRing::open_or_create(&ctx.gateway_key_dir(), "gateway", alg, policy, now).map_err(|e| fail(&e))?;
            if events.is_empty() {
                eprintln!("gateway key ring already exists in {}", ctx.gateway_key_dir().display());
            }
            for k in ring.keys() {
                crate::out::line(&format!("{}\t{}\tactivates_at={}", k.kid, k.alg, k.activates_at));
            }
        }
        Action::Rotate { connection } => {
            // One writer per data folder: refuse while a gateway runs on it.
            let _lock = super::offline_audit::lock(ctx, "rotate keys from the dashboard's Integrations page")?;
            let (ring_dir, name) = match &connection {
                None => (ctx.gateway_key_dir(), "gateway".to_owned()),
                Some(c) => {
                    if medicodax_wire::tools::valid_connection_name(c) {
                        (ctx.data_dir.join("keys").join("connections").join(c), c.clone())
                    } else {
                        return Err(CliError::Usage(format!("{c:?} is not a connection name")));
                    }
                }
            };
            if !ring_dir.join("ring.json").exists() {
                if let Some(c) = &connection {
                    let mut known: Vec<String> = config.connections.iter().map(|k| k.name.clone()).collect();
                    if ctx.config_path.is_none() {
                        known.extend(["epic-sandbox".to_owned(), "ecw-sandbox".to_owned()]);
                    }
                    if !known.contains(c) {
                        return Err(CliError::Usage(format!("no connection named {c:?}; configured: {}", if known.is_empty() { "none".to_owned() } else { known.join(", ") })));
                    }
                }
                return Err(CliError::Usage(format!("no managed key ring for {name} in {}: start the gateway once to create it (connections with a configured `key` file are rotated by replacing the file)", ring_dir.display())));
            }
            let mut ring = KeyRing::open(&ring_dir).map_err(|e| fail(&e))?;
            let ev = ring.start_rotation(now).map_err(|e| fail(&e))?;
            super::offline_audit::append(ctx, &config, medicodax_gateway::server::ring_event(&ev, 0)).await?;
            crate::out::json(&ev);
        }
        Action::Jwks => {
            // Printing keys never creates one.
            if !ctx.gateway_key_dir().join("ring.json").exists() {
                return Err(CliError::Usage(format!("no gateway key ring in {} yet: run `medicodax keys generate` or start the gateway once", ctx.gateway_key_dir().display())));
            }
            let ring = KeyRing::open(&ctx.gateway_key_dir()).map_err(|e| fail(&e))?;
            crate::out::json(&ring.published(now));
        }
    }
    Ok(())
}
