//! Durable appends per second on SQLite (a file in WAL mode, `synchronous=FULL`: every
//! acknowledged append has been fsynced), with 1, 2, 8 and 64 concurrent appenders, each
//! append a realistic intent record (~1.3 KB with its signed call) plus its replay key.
//!
//! `cargo bench -p medicodax-audit --bench append` (optionally `-- SECONDS`). Reports
//! appends/s, the mean batch size (appends per transaction) and the latency percentiles
//! an appender sees. Also run with `MEDICODAX_BENCH_PG_URL=postgres://…` to measure
//! PostgreSQL.

use medicodax_audit::{AuditLog, Db, LogConfig, ReplayKey};
use medicodax_clock::SystemClock;
use medicodax_jose::{Alg, PrivateKey};
use medicodax_wire::CALL_TYP;
use medicodax_wire::audit::IntentRecord;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn intent(agent_key: &PrivateKey, jti: &str) -> IntentRecord {
    let claims = json!({
        "iss": "coding-agent", "sub": "coder", "aud": "http://127.0.0.1:8080", "iat": 1_767_225_600, "exp": 1_767_225_720,
        "jti": jti, "tool": "fhir.search", "purpose": "HOPERAT",
        "args": {"connection": "epic-sandbox", "type": "Observation", "params": [["patient", "pt-1001"], ["category", "laboratory"]]},
    });
    let jws = medicodax_jose::jws::sign(agent_key, CALL_TYP, &claims).expect("sign");
    IntentRecord {
        time_ms: 1_767_225_600_000,
        agent: "coding-agent".into(),
        user: "coder".into(),
        jti: jti.into(),
        tool: "fhir.search".into(),
        purpose: "HOPERAT".into(),
        connection: Some("epic-sandbox".into()),
        call_hash: medicodax_wire::hash::sha256_hex(jws.as_bytes()),
        call_jws: jws,
        channel: "http".into(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(url: &str, label: &str, concurrency: usize, seconds: u64, agent_key: Arc<PrivateKey>, gateway_key: Arc<PrivateKey>) {
    let db = Db::connect(url).await.expect("open store");
    let clock = SystemClock::shared();
    let log = AuditLog::open(db.clone(), gateway_key, clock.clone(), LogConfig::new("http://127.0.0.1:8080")).await.expect("open log");
    // Calls are made in advance, so the measurement is the log, not the signing.
    let per_task = 40_000usize;
    let mut tasks = Vec::new();
    let start = clock.monotonic();
    let deadline = start.add(Duration::from_secs(seconds));
    for t in 0..concurrency {
        let log = log.clone();
        let clock = clock.clone();
        let record = intent(&agent_key, &format!("{label}-{concurrency}-{t}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for k in 0..per_task {
                if clock.monotonic() >= deadline {
                    break;
                }
                let mut r = record.clone();
                r.jti = format!("{}-{k}", record.jti);
                let replay = ReplayKey { iss: r.agent.clone(), jti: r.jti.clone(), expires_at: 1_767_225_750 };
                let t0 = clock.monotonic();
                log.append_intent(r, Some(replay)).await.expect("append");
                latencies.push(clock.monotonic().since(t0));
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = clock.monotonic().since(start).as_secs_f64();
    all.sort();
    let stats = log.stats();
    log.shutdown().await.expect("shutdown");
    db.close().await;
    println!(
        "{label:8} appenders={concurrency:3}  appends/s={:8.0}  appends={:7}  batches={:6}  mean batch={:6.1}  p50={:>7.2?}  p99={:>7.2?}",
        all.len() as f64 / elapsed,
        all.len(),
        stats.batches,
        stats.records as f64 / stats.batches.max(1) as f64,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let agent_key = Arc::new(PrivateKey::generate(Alg::RS384).expect("keygen"));
    let gateway_key = Arc::new(PrivateKey::generate(Alg::RS384).expect("keygen"));
    let dir = tempfile::tempdir().expect("temp dir");
    for concurrency in [1usize, 2, 8, 64] {
        let url = format!("sqlite://{}", dir.path().join(format!("bench-{concurrency}.db")).display());
        run(&url, "sqlite", concurrency, seconds, agent_key.clone(), gateway_key.clone()).await;
    }
    if let Ok(pg) = std::env::var("MEDICODAX_BENCH_PG_URL") {
        for concurrency in [1usize, 8, 64] {
            // A fresh schema per run keeps the runs apart.
            let admin = sqlx::PgPool::connect(&pg).await.expect("connect postgres");
            let schema = format!("audit_bench_{concurrency}_{}", std::process::id());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))).execute(&admin).await.expect("schema");
            let sep = if pg.contains('?') { '&' } else { '?' };
            run(&format!("{pg}{sep}options[search_path]={schema}"), "postgres", concurrency, seconds, agent_key.clone(), gateway_key.clone()).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await.expect("drop schema");
        }
    }
}
