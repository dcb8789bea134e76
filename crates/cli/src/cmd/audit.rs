//! `medicodax audit verify|prove|export|tail`: the audit log, read-only.
//!
//! Checkpoint signatures are checked with the gateway's public keys: by default those
//! of the key ring in the data folder, or, for an auditor who holds only what the gateway
//! publishes, a JWKS file (`--jwks`, e.g. saved from `/.well-known/jwks.json`).

use crate::CliError;
use crate::context::Context;
use futures::StreamExt as _;
use medicodax_audit::{CheckpointKeys, Db};
use medicodax_clock::SystemClock;
use medicodax_jose::{Jwks, KeyRing};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A JWKS file with the gateway's public keys (default: the key ring in the data folder).
    #[arg(long, global = true, value_name = "FILE")]
    jwks: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Rebuild the Merkle tree from every record and check leaf hashes, sequence, and the
    /// signed checkpoints; exit 1 if anything was changed, deleted, reordered, inserted or truncated.
    Verify {
        /// An older checkpoint JWS (a file) kept outside the database: prove the log still extends it.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An inclusion proof for record SEQ against the latest signed checkpoint.
    Prove {
        /// The record's sequence number.
        seq: u64,
    },
    /// Export as FHIR R4 AuditEvent (IHE Basic Audit Log Patterns) to standard output.
    Export {
        /// `ndjson` (one AuditEvent per line) or `bundle` (a collection Bundle).
        #[arg(long, default_value = "ndjson", value_parser = ["ndjson", "bundle"])]
        format: String,
        /// The first sequence number to export.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Print the last N records (one JSON object per line); --follow keeps printing new ones.
    Tail {
        /// How many of the latest records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing records as they are appended.
        #[arg(short, long)]
        follow: bool,
    },
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

async fn open_db(ctx: &Context) -> Result<(Db, String), CliError> {
    let config = ctx.config()?;
    let url = config.store.url.clone().unwrap_or_else(|| medicodax_gateway::server::default_store_url(&ctx.data_dir));
    if url.starts_with("sqlite://") {
        let path = url.trim_start_matches("sqlite://");
        if !std::path::Path::new(path).exists() {
            return Err(CliError::Usage(format!("no audit store at {path}: run `medicodax serve` or `medicodax demo` first, or pass --data-dir / --config")));
        }
    }
    let db = Db::connect_only(&url).await.map_err(fail)?;
    let origin = db.log_origin().await.map_err(fail)?.unwrap_or_else(|| config.gateway.audience());
    Ok((db, origin))
}

fn checkpoint_keys(ctx: &Context, jwks: Option<&PathBuf>) -> Result<CheckpointKeys, CliError> {
    match jwks {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| CliError::Usage(format!("--jwks {}: {e}", path.display())))?;
            let set = Jwks::from_json(&bytes).map_err(|e| CliError::Usage(format!("--jwks {}: {e}", path.display())))?;
            Ok(CheckpointKeys::from_jwks(&set))
        }
        None => {
            let dir = ctx.gateway_key_dir();
            let ring = KeyRing::open(&dir).map_err(|e| CliError::Usage(format!("cannot read the gateway keys in {}: {e}; pass --jwks with the gateway's published keys", dir.display())))?;
            Ok(CheckpointKeys::from_jwks(&Jwks { keys: ring.all_public() }))
        }
    }
}

pub async fn run(ctx: &Context, a: Args) -> Result<(), CliError> {
    let (db, origin) = open_db(ctx).await?;
    match a.action {
        Action::Verify { checkpoint, json } => {
            let keys = checkpoint_keys(ctx, a.jwks.as_ref())?;
            let external = match checkpoint {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| CliError::Usage(format!("--checkpoint {}: {e}", p.display())))?.trim().to_owned();
                    // A file that is not a checkpoint at all is a usage error, not tampering;
                    // one that is shaped like a checkpoint but does not verify is a finding.
                    let rules = medicodax_jose::HeaderRules { allowed: &["typ", "kid"], typ: Some(medicodax_wire::receipt::CHECKPOINT_TYP), require_kid: true };
                    medicodax_jose::Compact::parse(&text, rules).map_err(|e| {
                        CliError::Usage(format!("--checkpoint {} does not hold a checkpoint JWS ({e}); save one earlier, e.g. the checkpoint.jws of `audit prove`'s report", p.display()))
                    })?;
                    Some(text)
                }
                None => None,
            };
            let options = medicodax_audit::VerifyOptions { origin: Some(origin), external_checkpoint: external };
            let report = medicodax_audit::verify(&db, &keys, &options).await.map_err(fail)?;
            if json {
                crate::out::json(&report);
            } else {
                crate::out::line(&format!("records: {}  root: {}", report.size, report.root));
                match &report.latest_checkpoint {
                    Some(cp) => crate::out::line(&format!("latest checkpoint: {}", serde_json::to_string(cp).unwrap_or_default())),
                    None => crate::out::line("latest checkpoint: none yet"),
                }
                crate::out::line(&format!("checkpoints checked: {}  records after the latest checkpoint: {}", report.checkpoints_checked, report.unsigned_tail));
                if report.ok {
                    crate::out::line("verified: no record was changed, deleted, reordered, inserted or truncated");
                } else {
                    crate::out::line("FAILED:");
                    let findings = serde_json::to_value(&report).ok().and_then(|v| v.get("findings").cloned()).unwrap_or_default();
                    for f in findings.as_array().into_iter().flatten() {
                        let kind = f.get("kind").and_then(|k| k.as_str()).unwrap_or("finding");
                        let rest: serde_json::Map<String, serde_json::Value> = f.as_object().map(|o| o.iter().filter(|(k, _)| *k != "kind").map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
                        crate::out::line(&format!("  {kind}: {}", serde_json::Value::Object(rest)));
                    }
                }
            }
            if report.ok { Ok(()) } else { Err(CliError::Failed("the audit log does not verify".into())) }
        }
        Action::Prove { seq } => {
            let keys = checkpoint_keys(ctx, a.jwks.as_ref())?;
            let report = medicodax_audit::prove(&db, &keys, seq).await.map_err(fail)?;
            crate::out::json(&report);
            Ok(())
        }
        Action::Export { format, from } => {
            let format = if format == "bundle" { medicodax_audit::fhir::ExportFormat::Bundle } else { medicodax_audit::fhir::ExportFormat::Ndjson };
            let options = medicodax_audit::fhir::ExportOptions { from_seq: from, ..medicodax_audit::fhir::ExportOptions::new(origin, format) };
            let mut out = std::io::BufWriter::new(crate::out::PipeOut::new());
            let summary = medicodax_audit::export_fhir(&db, &options, &mut out).await.map_err(fail)?;
            drop(out);
            eprintln!("exported {} AuditEvents ({} calls)", summary.events, summary.calls);
            Ok(())
        }
        Action::Tail { lines, follow } => {
            let entries = medicodax_audit::tail(&db, lines).await.map_err(fail)?;
            let mut next = 0;
            for e in &entries {
                crate::out::line(&serde_json::to_string(e).map_err(fail)?);
                next = e.seq + 1;
            }
            if follow {
                if entries.is_empty() {
                    next = db.size().await.map_err(fail)?;
                }
                let mut stream = Box::pin(medicodax_audit::follow(db, next, Duration::from_millis(500), SystemClock::shared()));
                while let Some(item) = stream.next().await {
                    let e = item.map_err(fail)?;
                    crate::out::line(&serde_json::to_string(&e).map_err(fail)?);
                }
            }
            Ok(())
        }
    }
}
