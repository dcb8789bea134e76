//! Benchmarks of the FHIR client's paging, against a tiny local axum FHIR server that
//! serves the bundled Synthea Observations replicated under new ids (`bench-{n}`):
//!
//! - `parse_page`: searchset pages parsed and sorted per second, no network;
//! - `walk`: Observations paged and parsed per second from the local server (10,000 per
//!   walk, pages of 100 and 1,000);
//! - peak memory: a child process walks 100,000 Observations page by page (and, for
//!   contrast, collects them all), reporting its `VmHWM` from `/proc/self/status`. The
//!   server runs in the parent, so the child's memory is the client's alone.
//!
//! `cargo bench -p medicodax-fhir --bench paging` runs everything and prints a summary;
//! under `cargo test` (no `--bench`) it only checks one small walk.

use async_trait::async_trait;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use criterion::{BenchmarkId, Criterion, Throughput};
use flate2::read::GzDecoder;
use futures::StreamExt;
use medicodax_clock::SystemClock;
use medicodax_fhir::{Bearer, FhirBase, FhirClient, FhirConfig, RateLimited, Search, TokenError, TokenSource, UpstreamLog};
use medicodax_wire::ResourceType;
use serde_json::Value;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const CHILD_ENV: &str = "MEDICODAX_FHIR_BENCH_CHILD";
const BASE_ENV: &str = "MEDICODAX_FHIR_BENCH_BASE";
const PEAK_N: usize = 100_000;
const PEAK_PAGE: usize = 100;

/// The bundled Observations as JSON text split around their id.
struct Templates {
    parts: Vec<(String, String)>,
    base: String,
}

fn load_templates() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4");
    let mut parts = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("data/synthea-r4").map(|e| e.expect("dir entry").path()).collect();
    files.sort();
    for f in files.iter().filter(|p| p.to_string_lossy().ends_with(".json.gz")) {
        let b: Value = serde_json::from_reader(GzDecoder::new(std::fs::File::open(f).expect("bundle"))).expect("bundle json");
        for e in b["entry"].as_array().expect("entries") {
            let mut r = e["resource"].clone();
            if r["resourceType"] == "Observation" {
                r["id"] = Value::String("\u{0}ID\u{0}".into());
                let text = r.to_string();
                let (a, z) = text.split_once("\\u0000ID\\u0000").expect("id placeholder");
                parts.push((a.to_owned(), z.to_owned()));
            }
        }
    }
    assert!(parts.len() > 10_000, "the bundled Observations");
    parts
}

/// `Observation?n={total}&_count={c}&_offset={o}`: entries o..o+c of `total` replicas.
async fn observations(State(t): State<Arc<Templates>>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let num = |k: &str, d: usize| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (total, count, offset) = (num("n", 1000), num("_count", 100), num("_offset", 0));
    let end = (offset + count).min(total);
    let mut body = String::with_capacity((end - offset.min(end)) * 2200 + 512);
    body.push_str(&format!("{{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":{total},\"link\":["));
    body.push_str(&format!("{{\"relation\":\"self\",\"url\":\"{}/Observation?n={total}&_count={count}&_offset={offset}\"}}", t.base));
    if end < total {
        body.push_str(&format!(",{{\"relation\":\"next\",\"url\":\"{}/Observation?n={total}&_count={count}&_offset={end}\"}}", t.base));
    }
    body.push_str("],\"entry\":[");
    for i in offset..end {
        if i > offset {
            body.push(',');
        }
        let (a, z) = &t.parts[i % t.parts.len()];
        body.push_str(&format!("{{\"fullUrl\":\"{}/Observation/bench-{i}\",\"search\":{{\"mode\":\"match\"}},\"resource\":{a}bench-{i}{z}}}", t.base));
    }
    body.push_str("]}");
    ([(axum::http::header::CONTENT_TYPE, "application/fhir+json")], body)
}

/// Starts the server on a background runtime; returns its FHIR base.
fn start_server() -> String {
    let parts = load_templates();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let base = format!("http://{}/fhir/R4", listener.local_addr().expect("addr"));
            let app = axum::Router::new().route("/fhir/R4/Observation", axum::routing::get(observations)).with_state(Arc::new(Templates { parts, base: base.clone() }));
            tx.send(base).expect("send base");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("server base")
}

struct StaticTokens(Bearer);

#[async_trait]
impl TokenSource for StaticTokens {
    async fn bearer(&self) -> Result<Bearer, TokenError> {
        Ok(self.0.clone())
    }
    async fn invalidate(&self, _: &Bearer) {}
    async fn acquire_request(&self) -> Result<(), RateLimited> {
        Ok(())
    }
}

fn client(base: &str) -> FhirClient {
    let tokens = Arc::new(StaticTokens(Bearer::new("bench-token").expect("token")));
    FhirClient::new(FhirConfig::new(FhirBase::parse(base).expect("base")), tokens, SystemClock::shared()).expect("client")
}

fn search(n: usize, page: usize) -> Search {
    Search::from_pairs(ResourceType::Observation, [("n", n.to_string()), ("_count", page.to_string())])
}

/// Walks `n` Observations page by page, keeping nothing; returns how many were seen.
async fn walk(c: &FhirClient, n: usize, page: usize) -> usize {
    let mut stream = Box::pin(c.pages(&search(n, page), &UpstreamLog::new()).expect("search").into_stream());
    let mut seen = 0;
    while let Some(p) = stream.next().await {
        let p = p.expect("page");
        seen += black_box(p.resources).len();
    }
    seen
}

fn proc_status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In the child: walk (or collect) 100,000 Observations and print memory figures.
fn child(mode: &str, base: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let c = client(base);
    rt.block_on(async {
        assert_eq!(walk(&c, 200, 100).await, 200); // warm up connections and allocator
    });
    let baseline = proc_status_kb("VmRSS:");
    let start = Instant::now();
    let n = rt.block_on(async {
        match mode {
            "pages" => walk(&c, PEAK_N, PEAK_PAGE).await,
            _ => c.search(&search(PEAK_N, PEAK_PAGE), &UpstreamLog::new()).await.expect("search").resources.len(),
        }
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, PEAK_N);
    println!("{{\"mode\":\"{mode}\",\"resources\":{n},\"secs\":{secs:.3},\"baseline_rss_kb\":{baseline},\"peak_hwm_kb\":{}}}", proc_status_kb("VmHWM:"));
}

fn run_child(mode: &str, base: &str) -> Value {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, mode)
        .env(BASE_ENV, base)
        .output()
        .expect("child");
    assert!(out.status.success(), "child {mode} failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
    serde_json::from_str(&line).expect("child output")
}

fn bench_parse(c: &mut Criterion, base: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let body = rt.block_on(async {
        reqwest::get(format!("{base}/Observation?n=100&_count=100")).await.expect("get").bytes().await.expect("body")
    });
    let mut g = c.benchmark_group("parse_page");
    g.throughput(Throughput::Elements(100));
    g.bench_function("100_observations", |b| {
        b.iter(|| {
            let p = medicodax_fhir::bundle::parse_page(black_box(&body), ResourceType::Observation).expect("page");
            assert_eq!(p.matches.len(), 100);
        })
    });
    g.finish();
}

fn bench_walk(c: &mut Criterion, base: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let fhir = client(base);
    let mut g = c.benchmark_group("walk");
    g.sample_size(10);
    let n = 10_000;
    g.throughput(Throughput::Elements(n as u64));
    for page in [100, 1000] {
        g.bench_with_input(BenchmarkId::new("observations_10k", format!("count_{page}")), &page, |b, &page| {
            b.iter(|| assert_eq!(rt.block_on(walk(&fhir, n, page)), n))
        });
    }
    g.finish();
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child(&mode, &std::env::var(BASE_ENV).expect("base"));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // no tests to list (cargo nextest)
    }
    let base = start_server();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test`: check that the benchmark works, quickly.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        assert_eq!(rt.block_on(walk(&client(&base), 2_000, 100)), 2_000);
        println!("paging bench: smoke walk of 2,000 Observations ok");
        return;
    }
    let pages = run_child("pages", &base);
    let collect = run_child("collect", &base);
    let mut c = Criterion::default().configure_from_args();
    bench_parse(&mut c, &base);
    bench_walk(&mut c, &base);
    c.final_summary();
    println!("\npeak memory, 100,000 Observations in pages of {PEAK_PAGE} (client process only):");
    for r in [&pages, &collect] {
        let base_mb = r["baseline_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0;
        let peak_mb = r["peak_hwm_kb"].as_f64().unwrap_or(0.0) / 1024.0;
        let secs = r["secs"].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:<8} VmHWM {peak_mb:7.1} MiB (RSS before the walk {base_mb:6.1} MiB), {:.0} resources/s over the whole walk",
            r["mode"].as_str().unwrap_or("?"),
            PEAK_N as f64 / secs
        );
    }
}
