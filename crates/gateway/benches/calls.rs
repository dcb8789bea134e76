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
//! - throughput: 8 concurrent agents (`-- --agents N` for another number) sending
//!   pre-signed `fhir.read` calls; calls/s, with the direct read at the same concurrency
//!   as the baseline; and the process's CPU time (all threads, user and system) per call,
//!   which tells a shortfall in CPU from one in waiting: 2,500 calls/s on 2 cores leaves
//!   0.8 ms of CPU per call, for the gateway, the sandbox and the load generator together.
//!
//! Two gateways run side by side in front of the same sandbox, one per gateway key
//! algorithm (`keys.gateway_alg`): RS384, the default, and ES384, which signs receipts at
//! about a quarter of the cost. The latency phase interleaves direct, RS384 and ES384
//! requests; the throughput phase alternates rounds between the two gateways, so machine
//! load affects both alike.
//!
//! Under `cargo test` (no `--bench` argument) it runs a few calls only, as a smoke test.

use medicodax_agent::{AgentClient, SignedCall};
use medicodax_clock::SystemClock;
use medicodax_config::{AgentConfig, Config, ConnectionConfig, RoleConfig, Vendor};
use medicodax_gateway::server::{self, Paths};
use medicodax_gateway::service::Gateway;
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

/// CPU time used so far by this process, all threads, user and system.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed value we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    // `--agents N` after `--`: the throughput phase's concurrency (the aim is for 8).
    let agents = match args.iter().position(|a| a == "--agents") {
        None => 8,
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()).filter(|n| (1..=256).contains(n)) {
            Some(n) => n,
            None => {
                eprintln!("--agents takes a number of concurrent agents from 1 to 256");
                std::process::exit(2);
            }
        },
    };
    let (latency_n, throughput_n) = if full { (2000, 16000) } else { (20, 80) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(latency_n, throughput_n, agents));
}

/// One gateway under test, with its agent's calls signed in advance.
struct Under {
    alg: &'static str,
    gw: Arc<Gateway>,
    url: String,
    latency_calls: Vec<SignedCall>,
    throughput_calls: Vec<SignedCall>,
    lat: Vec<Duration>,
    busy: Duration,
    cpu: Duration,
    done: usize,
}

async fn start_gateway(alg: &'static str, dir: &std::path::Path, sandbox: &medicodax_sandbox::SandboxHandle, listener: tokio::net::TcpListener, client: &str, patient: &str, n: (usize, usize)) -> Under {
    let addr = listener.local_addr().expect("addr");
    let clock = SystemClock::shared();
    let key = PrivateKey::generate(Alg::RS384).expect("key");
    let jwks = dir.join(format!("agent-{alg}.jwks.json"));
    std::fs::write(&jwks, json!({"keys": [key.public_jwk()]}).to_string()).expect("jwks");
    let mut config = Config::default();
    config.gateway.listen = addr.to_string();
    config.keys.gateway_alg = alg.into();
    config.connections = vec![ConnectionConfig { scopes: medicodax_sandbox::default_scopes(), ..ConnectionConfig::new("epic", Vendor::Epic, &sandbox.epic_fhir_base(), client) }];
    config.roles.insert(USER.into(), RoleConfig { scopes: vec!["system/*.rs".into()], tools: vec!["fhir.read".into()], ..RoleConfig::default() });
    config.agents = vec![AgentConfig { id: AGENT.into(), jwks: Some(jwks), jwks_url: None, roles: vec![USER.into()], may_act_for: vec![format!("role:{USER}")] }];
    let paths = Paths { data_dir: dir.join(format!("data-{alg}")), config_dir: dir.to_owned() };
    let (gw, _) = server::build(config, &paths, clock.clone()).await.expect("gateway");
    gw.users.add(USER, "correct horse battery staple", &[USER.to_owned()], 0).await.expect("user");
    tokio::spawn(server::serve(Arc::clone(&gw), listener, std::future::pending()));
    let url = format!("http://{addr}");
    let agent = AgentClient::new(AGENT, Arc::new(key), &url, gw.audience(), clock).expect("agent");
    let args = json!({"connection": "epic", "type": "Patient", "id": patient});
    let sign = |n: usize| -> Vec<SignedCall> { (0..n).map(|_| agent.sign_tool(USER, ToolName::FhirRead, &args).expect("sign")).collect() };
    // 20 more for the warm-up.
    let (latency_calls, throughput_calls) = (sign(n.0 + 20), sign(n.1));
    Under { alg, gw, url, latency_calls, throughput_calls, lat: Vec::with_capacity(n.0), busy: Duration::ZERO, cpu: Duration::ZERO, done: 0 }
}

async fn via_gateway(http: &reqwest::Client, url: &str, jws: String) {
    let r = http.post(format!("{url}/v1/calls")).header("content-type", "application/jwt").body(jws).send().await.expect("call");
    assert_eq!(r.status(), 200, "gateway answered {}", r.status());
    assert!(r.headers().contains_key("medicodax-receipt"));
    r.bytes().await.expect("body");
}

async fn direct(http: &reqwest::Client, url: &str, token: &str) {
    let r = http.get(url).bearer_auth(token).header("accept", "application/fhir+json").send().await.expect("direct");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("body");
}

/// `concurrency` agents send `calls` through `url`; returns the wall time.
async fn burst(http: &reqwest::Client, url: &str, calls: Vec<SignedCall>, concurrency: usize) -> Duration {
    let per = calls.len().div_ceil(concurrency).max(1);
    let mut chunks: Vec<Vec<SignedCall>> = Vec::new();
    let mut it = calls.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    let t = Instant::now();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (http, url) = (http.clone(), url.to_owned());
            tokio::spawn(async move {
                for c in chunk {
                    via_gateway(&http, &url, c.jws).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("agent task");
    }
    t.elapsed()
}

async fn run(latency_n: usize, throughput_n: usize, concurrency: usize) {
    medicodax_jose::init().expect("crypto provider");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = SystemClock::shared();
    let algs = ["RS384", "ES384"];
    let mut listeners = Vec::new();
    let mut clients = Vec::new();
    for alg in algs {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        clients.push(ClientRegistration::new(&format!("{CLIENT}-{alg}"), medicodax_sandbox::Vendor::Epic, ClientKeys::JwksUrl(format!("http://{addr}/.well-known/jwks.json"))));
        listeners.push(l);
    }
    let sandbox = Sandbox::start(SandboxConfig { clients, clock: clock.clone(), ..SandboxConfig::default() }).await.expect("sandbox");
    let patient = sandbox.patients(medicodax_sandbox::Vendor::Epic)[0].id.clone();
    let mut unders = Vec::new();
    for (alg, l) in algs.into_iter().zip(listeners) {
        unders.push(start_gateway(alg, dir.path(), &sandbox, l, &format!("{CLIENT}-{alg}"), &patient, (latency_n, throughput_n)).await);
    }
    eprintln!("signed {} calls in advance", unders.len() * (latency_n + 20 + throughput_n));

    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
    let direct_url = format!("{}/Patient/{patient}", sandbox.epic_fhir_base());
    let token = sandbox.mint_test_token(medicodax_sandbox::Vendor::Epic, &format!("{CLIENT}-RS384"), "system/Patient.rs");

    // Warm up: tokens, connection pools, caches.
    for u in &mut unders {
        for c in u.latency_calls.drain(..20) {
            via_gateway(&http, &u.url, c.jws).await;
        }
    }
    for _ in 0..20 {
        direct(&http, &direct_url, &token).await;
    }

    // Latency, one agent: direct, RS384, ES384, interleaved so all see the same machine load.
    let mut d_lat = Vec::with_capacity(latency_n);
    let mut pending: Vec<std::vec::IntoIter<SignedCall>> = unders.iter_mut().map(|u| std::mem::take(&mut u.latency_calls).into_iter()).collect();
    for _ in 0..latency_n {
        let t = Instant::now();
        direct(&http, &direct_url, &token).await;
        d_lat.push(t.elapsed());
        for (u, calls) in unders.iter_mut().zip(pending.iter_mut()) {
            let c = calls.next().expect("a latency call");
            let t = Instant::now();
            via_gateway(&http, &u.url, c.jws).await;
            u.lat.push(t.elapsed());
        }
    }
    d_lat.sort();
    for u in &mut unders {
        u.lat.sort();
    }

    // Throughput, `concurrency` agents, pre-signed calls, in alternating rounds.
    let rounds = 8usize;
    let per_round = throughput_n / rounds;
    // Direct reads per agent and round (at least one, whatever the agent count).
    let direct_each = (per_round / concurrency).max(1);
    let mut direct_busy = Duration::ZERO;
    let mut direct_cpu = Duration::ZERO;
    let mut direct_done = 0;
    for _ in 0..rounds {
        for u in &mut unders {
            let calls: Vec<SignedCall> = u.throughput_calls.drain(..per_round.min(u.throughput_calls.len())).collect();
            u.done += calls.len();
            let cpu = cpu_time();
            u.busy += burst(&http, &u.url, calls, concurrency).await;
            u.cpu += cpu_time().saturating_sub(cpu);
        }
        let (t, cpu) = (Instant::now(), cpu_time());
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (http, url, tok) = (http.clone(), direct_url.clone(), token.clone());
                let n = direct_each;
                tokio::spawn(async move {
                    for _ in 0..n {
                        direct(&http, &url, &tok).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("direct task");
        }
        direct_busy += t.elapsed();
        direct_cpu += cpu_time().saturating_sub(cpu);
        direct_done += direct_each * concurrency;
    }

    println!("gateway calls benchmark ({latency_n} calls latency per gateway, {} calls throughput per gateway, {concurrency} agents)", unders[0].done);
    println!("  latency, one agent, fhir.read Patient   p50        p99");
    println!("    direct to the sandbox                 {:>7.3} ms {:>7.3} ms", ms(percentile(&d_lat, 0.5)), ms(percentile(&d_lat, 0.99)));
    for u in &unders {
        println!("    through the gateway, {} key        {:>7.3} ms {:>7.3} ms", u.alg, ms(percentile(&u.lat, 0.5)), ms(percentile(&u.lat, 0.99)));
        println!(
            "      added by the gateway                {:>7.3} ms {:>7.3} ms",
            ms(percentile(&u.lat, 0.5)) - ms(percentile(&d_lat, 0.5)),
            ms(percentile(&u.lat, 0.99)) - ms(percentile(&d_lat, 0.99))
        );
    }
    println!("  throughput, {concurrency} agents");
    for u in &unders {
        let stats = u.gw.audit.stats();
        println!(
            "    through the gateway, {} key        {:>9.0} calls/s, {:.3} ms CPU per call (verified, audited twice durably, receipt signed; {:.1} records per fsync)",
            u.alg,
            u.done as f64 / u.busy.as_secs_f64(),
            ms(u.cpu) / u.done.max(1) as f64,
            stats.records as f64 / stats.batches.max(1) as f64
        );
    }
    println!(
        "    direct to the sandbox                 {:>9.0} reads/s, {:.3} ms CPU per read",
        direct_done as f64 / direct_busy.as_secs_f64(),
        ms(direct_cpu) / direct_done.max(1) as f64
    );
    for u in &unders {
        let _ = u.gw.audit.shutdown().await;
    }
    drop(sandbox);
}
