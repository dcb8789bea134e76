//! Benchmarks of the SMART client layer:
//! - `assertion_sign`: client assertions minted and signed per second (RS384, ES384);
//! - `token_cache_hit`: the auth manager's cache-hit path (`cached`, and the async
//!   `token` on a hit) against a plain `HashMap` lookup, measured in the same run; the
//!   ratios are printed at the end.
//!
//! Run with `cargo bench -p medicodax-smart`.

use criterion::Criterion;
use std::hint::black_box;
use medicodax_clock::SystemClock;
use medicodax_jose::{Alg, PrivateKey};
use medicodax_smart::AuthManager;
use medicodax_smart::assertion::{self, AssertionParams};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const NOW: i64 = 1_767_225_600;

fn bench_assertions(c: &mut Criterion) {
    let mut g = c.benchmark_group("assertion_sign");
    for alg in [Alg::RS384, Alg::ES384] {
        let key = PrivateKey::generate(alg).expect("key");
        let p = AssertionParams {
            client_id: "cid-epic-0001",
            token_endpoint: "https://fhir.epic-test.example/interconnect-fhir-oauth/oauth2/token",
            jku: None,
            backdate_secs: 30,
            lifetime_secs: 270,
        };
        g.bench_function(alg.as_str(), |b| b.iter(|| assertion::mint(black_box(&key), black_box(&p), NOW).expect("signed")));
    }
    g.finish();
}

fn manager_with_a_token(rt: &tokio::runtime::Runtime) -> (AuthManager, MockServer) {
    rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "at-bench", "token_type": "Bearer", "expires_in": 3600})))
            .mount(&server)
            .await;
        let cfg: medicodax_config::ConnectionConfig = serde_json::from_value(json!({
            "name": "epic", "vendor": "epic", "fhir_base": "https://fhir.epic-test.example/api/FHIR/R4",
            "client_id": "cid-epic-0001", "token_url": format!("{}/token", server.uri()),
        }))
        .expect("config");
        let m = AuthManager::builder(SystemClock::shared()).connection_with_key(cfg, PrivateKey::generate(Alg::RS384).expect("key")).build().expect("manager");
        m.token("epic").await.expect("first token");
        (m, server)
    })
}

fn bench_cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (m, _server) = manager_with_a_token(&rt);
    let mut map: HashMap<String, Arc<str>> = HashMap::new();
    for name in ["epic", "ecw-prac01", "oracle-tnt-0001", "athena", "generic"] {
        map.insert(name.to_owned(), Arc::from(format!("token-of-{name}")));
    }
    let mut g = c.benchmark_group("token_cache_hit");
    g.bench_function("hashmap_lookup", |b| b.iter(|| map.get(black_box("epic")).cloned().expect("present")));
    g.bench_function("auth_manager_cached", |b| b.iter(|| m.cached(black_box("epic")).expect("cached")));
    g.bench_function("auth_manager_token", |b| b.iter(|| futures::executor::block_on(m.token(black_box("epic"))).expect("hit")));
    g.finish();
}

fn mean_ns(dir: &std::path::Path, group: &str, function: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(group).join(function).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn print_summary() {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("criterion");
    let Some(map) = mean_ns(&dir, "token_cache_hit", "hashmap_lookup") else { return };
    println!("\nsummary (means from this run):");
    for (group, f) in [("assertion_sign", "RS384"), ("assertion_sign", "ES384")] {
        if let Some(ns) = mean_ns(&dir, group, f) {
            println!("  assertions signed per second, {f}: {:.0}", 1e9 / ns);
        }
    }
    println!("  HashMap<String, Arc<str>> lookup: {map:.1} ns");
    for f in ["auth_manager_cached", "auth_manager_token"] {
        if let Some(ns) = mean_ns(&dir, "token_cache_hit", f) {
            println!("  {f}: {ns:.1} ns = {:.1}x the HashMap lookup", ns / map);
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_assertions(&mut c);
    bench_cache(&mut c);
    c.final_summary();
    print_summary();
}
