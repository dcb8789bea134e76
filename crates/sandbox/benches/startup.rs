//! Sandbox figures: how many resources are loaded, how long the first load and a start
//! take, and how fast both sides serve every resource through paged searches.
//!
//! Run: `cargo test -p medicodax-sandbox --release --bench startup` (or without
//! `--release` for debug figures). Prints one line per figure.

use medicodax_sandbox::{Dataset, ResourceType, Sandbox, SandboxConfig, Vendor};
use std::time::Instant;

fn main() {
    let t0 = Instant::now();
    let data = match Dataset::embedded() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("load failed: {e}");
            std::process::exit(1);
        }
    };
    let load = t0.elapsed();
    let s = data.stats();
    println!("bundles: {}, bundle entries: {}, resources served: {} (Epic {}, eClinicalWorks {})", s.bundles, s.bundle_entries, s.resources, s.resources_per_vendor[0], s.resources_per_vendor[1]);
    println!("ICD-10-CM codings added to Epic Conditions: {}", s.icd10cm_codings_added);
    for t in ResourceType::ALL {
        println!("  {t}: Epic {}, eClinicalWorks {}", data.count(Vendor::Epic, t, None), data.count(Vendor::EClinicalWorks, t, None));
    }
    println!("first load (decompress, parse, resolve, index): {:.1} ms", load.as_secs_f64() * 1000.0);

    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let t1 = Instant::now();
        let mut config = SandboxConfig::default();
        config.ecw.rate_limit_per_minute = None;
        let sandbox = match Sandbox::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("start failed: {e}");
                std::process::exit(1);
            }
        };
        println!("start with data loaded (bind, register, serve): {:.2} ms", t1.elapsed().as_secs_f64() * 1000.0);
        let http = reqwest::Client::new();
        let t2 = Instant::now();
        let (mut resources, mut bytes, mut requests) = (0usize, 0usize, 0usize);
        for vendor in Vendor::ALL {
            let token = sandbox.mint_test_token(vendor, "bench", "system/*.rs");
            for p in sandbox.patients(vendor) {
                for t in ResourceType::ALL.into_iter().filter(|t| *t != ResourceType::Patient) {
                    let extra = if vendor == Vendor::Epic && t == ResourceType::Observation { "&category=vital-signs,laboratory,social-history,exam,procedure,survey" } else { "" };
                    let mut url = format!("{}/{t}?patient={}&_count=50{extra}", sandbox.fhir_base(vendor), p.id);
                    loop {
                        let Ok(resp) = http.get(&url).bearer_auth(&token).send().await else { break };
                        let Ok(body) = resp.bytes().await else { break };
                        requests += 1;
                        bytes += body.len();
                        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else { break };
                        resources += v["entry"].as_array().map_or(0, |e| e.iter().filter(|x| x["search"]["mode"] == "match").count());
                        match v["link"].as_array().and_then(|l| l.iter().find(|l| l["relation"] == "next")).and_then(|l| l["url"].as_str()) {
                            Some(n) => url = n.to_owned(),
                            None => break,
                        }
                    }
                }
            }
        }
        let secs = t2.elapsed().as_secs_f64();
        println!(
            "served {resources} resources in {requests} pages of 50 ({:.1} MB) in {:.2} s: {:.0} resources/s, {:.0} pages/s (one client, sequential)",
            bytes as f64 / 1e6,
            secs,
            resources as f64 / secs,
            requests as f64 / secs
        );
        let _ = sandbox.shutdown().await;
    });
}
