//! Verified and audited calls per second, and the gateway's added latency over a direct
//! request to the same sandbox EHR, measured side by side in one run.
//!
//! `cargo bench -p medicodax-gateway --bench calls` (release). Everything runs in one
//! process on loopback: the Epic-like sandbox, the gateway with a durable SQLite audit log
//! (`synchronous=FULL`) and a signed receipt on every answer, and the load generator.
//! Calls are signed in advance so signing does not compete with the gateway for the CPU.
//!
//! - latency: one agent, `fhir.read` of a Patient, sequentially, N times through the
//!   gateway; and the same read sent directly to the sandbox with a bearer token,
//!   interleaved in the same run; p50 and p99 of each, and the difference;
//! - throughput: 8 concurrent agents sending pre-signed `fhir.read` calls; calls/s, with
//!   the direct read at the same concurrency as the baseline.
//!
//! Both in turn for each gateway key algorithm (`keys.gateway_alg`): RS384, the default,
//! then ES384, which signs receipts at about a quarter of the cost.
//!
//! Under `cargo test` (no `--bench` argument) it runs a few calls only, as a smoke test.

use medicodax_agent::{AgentClient, SignedCall};
use medicodax_clock::SystemClock;
use medicodax_config::{AgentConfig, Config, ConnectionConfig, RoleConfig, Vendor};
use medicodax_gateway::server::{self, Paths};
use medicodax_jose::{Alg, PrivateKey};
use medicodax_sandbox::{ClientKeys, ClientRegistration, Sandbox, SandboxConfig};
use medicodax_wire::ToolName;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT: &str = "bench-epic";
const AGENT: &str = "bench-agent";
const USER: &str = "coder";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (latency_n, throughput_n, concurrency) = if full { (2000, 16000, 8) } else { (20, 80, 8) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    for gateway_alg in ["RS384", "ES384"] {
        rt.block_on(run(latency_n, throughput_n, concurrency, gateway_alg));
    }
}

async fn run(latency_n: usize, throughput_n: usize, concurrency: usize, gateway_alg: &str) {
    medicodax_jose::init().expect("crypto provider");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SystemClock::shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sandbox = Sandbox::start(SandboxConfig {
        clients: vec![ClientRegistration::new(CLIENT, medicodax_sandbox::Vendor::Epic, ClientKeys::JwksUrl(format!("http://{addr}/.well-known/jwks.json")))],
        clock: clock.clone(),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let patient = sandbox.patients(medicodax_sandbox::Vendor::Epic)[0].id.clone();

    let key = PrivateKey::generate(Alg::RS384).expect("key");
    let jwks = dir.path().join("agent.jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.public_jwk()]}).to_string()).expect("jwks");
    let mut config = Config::default();
    config.gateway.listen = addr.to_string();
    config.keys.gateway_alg = gateway_alg.into();
    config.connections = vec![ConnectionConfig { scopes: medicodax_sandbox::default_scopes(), ..ConnectionConfig::new("epic", Vendor::Epic, &sandbox.epic_fhir_base(), CLIENT) }];
    config.roles.insert(USER.into(), RoleConfig { scopes: vec!["system/*.rs".into()], tools: vec!["fhir.read".into()], ..RoleConfig::default() });
    config.agents = vec![AgentConfig { id: AGENT.into(), jwks: Some(jwks), jwks_url: None, roles: vec![USER.into()], may_act_for: vec![format!("role:{USER}")] }];
    let paths = Paths { data_dir: dir.path().join("data"), config_dir: dir.path().to_owned() };
    let (gw, _) = server::build(config, &paths, clock.clone()).await.expect("gateway");
    gw.users.add(USER, "correct horse battery staple", &[USER.to_owned()], 0).await.expect("user");
    tokio::spawn(server::serve(Arc::clone(&gw), listener, std::future::pending()));
    let url = format!("http://{addr}");
    let agent = AgentClient::new(AGENT, Arc::new(key), &url, gw.audience(), clock.clone()).expect("agent");
    let args = json!({"connection": "epic", "type": "Patient", "id": patient});
    let sign = |n: usize| -> Vec<SignedCall> { (0..n).map(|_| agent.sign_tool(USER, ToolName::FhirRead, &args).expect("sign")).collect() };

    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
    let direct_url = format!("{}/Patient/{patient}", sandbox.epic_fhir_base());
    let token = sandbox.mint_test_token(medicodax_sandbox::Vendor::Epic, CLIENT, "system/Patient.rs");
    let direct = |http: reqwest::Client, url: String, token: String| async move {
        let r = http.get(&url).bearer_auth(&token).header("accept", "application/fhir+json").send().await.expect("direct");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    };
    let via_gateway = |http: reqwest::Client, url: String, jws: String| async move {
        let r = http.post(format!("{url}/v1/calls")).header("content-type", "application/jwt").body(jws).send().await.expect("call");
        assert_eq!(r.status(), 200, "gateway answered {}", r.status());
        assert!(r.headers().contains_key("medicodax-receipt"));
        r.bytes().await.expect("body");
    };

    // Every call is signed before anything is measured.
    let latency_calls = sign(latency_n);
    let throughput_calls = sign(throughput_n);
    eprintln!("signed {} calls in advance", latency_n + throughput_n);

    // Warm up: token, connection pools, caches.
    for c in sign(20) {
        via_gateway(http.clone(), url.clone(), c.jws).await;
        direct(http.clone(), direct_url.clone(), token.clone()).await;
    }

    // Latency, one agent, interleaved so both see the same machine load.
    let calls = latency_calls;
    let mut d_lat = Vec::with_capacity(latency_n);
    let mut g_lat = Vec::with_capacity(latency_n);
    for c in calls {
        let t = Instant::now();
        direct(http.clone(), direct_url.clone(), token.clone()).await;
        d_lat.push(t.elapsed());
        let t = Instant::now();
        via_gateway(http.clone(), url.clone(), c.jws).await;
        g_lat.push(t.elapsed());
    }
    d_lat.sort();
    g_lat.sort();

    // Throughput, `concurrency` agents, pre-signed calls.
    let calls = throughput_calls;
    let per = throughput_n / concurrency;
    let mut chunks: Vec<Vec<SignedCall>> = Vec::new();
    let mut it = calls.into_iter();
    for _ in 0..concurrency {
        chunks.push(it.by_ref().take(per).collect());
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for c in chunk {
                via_gateway(http.clone(), url.clone(), c.jws).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("agent task");
    }
    let g_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, u, tok) = (http.clone(), direct_url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                direct(http.clone(), u.clone(), tok.clone()).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("direct task");
    }
    let d_secs = t.elapsed().as_secs_f64();
    let done = per * concurrency;

    let stats = gw.audit.stats();
    println!("gateway calls benchmark, {gateway_alg} gateway key ({latency_n} calls latency, {done} calls throughput)");
    println!("  latency, one agent, fhir.read Patient   p50        p99");
    println!("    direct to the sandbox                 {:>7.3} ms {:>7.3} ms", ms(percentile(&d_lat, 0.5)), ms(percentile(&d_lat, 0.99)));
    println!("    through the gateway                   {:>7.3} ms {:>7.3} ms", ms(percentile(&g_lat, 0.5)), ms(percentile(&g_lat, 0.99)));
    println!(
        "    added by the gateway                  {:>7.3} ms {:>7.3} ms",
        ms(percentile(&g_lat, 0.5)) - ms(percentile(&d_lat, 0.5)),
        ms(percentile(&g_lat, 0.99)) - ms(percentile(&d_lat, 0.99))
    );
    println!("  throughput, {concurrency} agents");
    println!("    through the gateway                   {:>9.0} calls/s (verified, audited twice durably, receipt signed)", done as f64 / g_secs);
    println!("    direct to the sandbox                 {:>9.0} reads/s", done as f64 / d_secs);
    println!("  audit: {} records in {} transactions ({:.1} per fsync)", stats.records, stats.batches, stats.records as f64 / stats.batches.max(1) as f64);
    let _ = gw.audit.shutdown().await;
    drop(sandbox);
}
