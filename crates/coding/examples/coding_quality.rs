//! Prints the measured quality and speed of the coding pipeline on the bundled patients
//! (see `medicodax_coding::eval`). `cargo run --release -p medicodax-coding --example
//! coding_quality [-- -v]`; `-v` lists every held-out miss, `--table ID` prints one
//! encounter's worksheet.
use medicodax_coding::crosswalk::Crosswalk;
use medicodax_coding::eval::{self, EvalReport};
use medicodax_coding::text::{MatchOptions, TitleIndex};
use medicodax_coding::{Reference, build_worksheet, codeset::CodeSet, render, synthea};
use medicodax_agent::{AgentError, CallOutcome};
use medicodax_clock::SystemClock;
use medicodax_coding::runner::{RunOptions, ToolCaller, run_worklist};
use medicodax_wire::ToolName;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let verbose = args.iter().any(|a| a == "-v");
    let t0 = Instant::now();
    let reference = Reference::embedded()?;
    println!("reference data parsed and indexed in {:.2} s", t0.elapsed().as_secs_f64());
    let codes = CodeSet::embedded()?;
    let cw = Crosswalk::embedded()?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4");
    let bundles = synthea::load_dir(&dir)?;

    if let Some(i) = args.iter().position(|a| a == "--table") {
        let id = args.get(i + 1).cloned().unwrap_or_default();
        for b in bundles.iter().filter(|b| b.encounter.get("id").and_then(|v| v.as_str()) == Some(id.as_str())) {
            print!("{}", render::to_table(&build_worksheet(b, &reference)));
        }
        return Ok(());
    }

    println!("\n## Text-match fallback on concepts held out from the crosswalk (k = 5)\n");
    println!("{}", EvalReport::table_header(5));
    let variants = [
        ("display only (product matcher)", MatchOptions::default()),
        ("display only, no synonyms", MatchOptions { synonyms: false, ..MatchOptions::default() }),
        ("display only, no stemming", MatchOptions { stemming: false, ..MatchOptions::default() }),
        ("display only, plain BM25", MatchOptions { rerank: false, ..MatchOptions::default() }),
    ];
    for (i, (label, opts)) in variants.into_iter().enumerate() {
        let idx = TitleIndex::build(codes, opts);
        let r = eval::held_out_by_display(label, &cw, &idx, 5);
        println!("{}", r.table_row());
        if verbose && i == 0 {
            for o in r.outcomes.iter().filter(|o| !o.exact_at_1()) {
                println!("   miss {:<60} want {:<9} got {:?}", o.display, o.expected, o.suggested);
            }
        }
    }
    let in_bundles = eval::held_out_in_bundles("display + note, whole worksheet builder", &reference, &bundles, 5);
    println!("{}", in_bundles.table_row());
    println!("\nprecision@1 by confidence band (display + note):");
    for (band, n, hits) in eval::precision_by_band(&in_bundles) {
        println!("  {band:<6} {n:>3} concepts, top suggestion exact {hits:>3} ({:.2})", if n == 0 { 0.0 } else { hits as f64 / n as f64 });
    }

    println!("\n## Worksheets on the bundled patients\n");
    let cov = eval::coverage(&reference, &bundles);
    println!("{}", serde_json::to_string_pretty(&cov)?);
    let mut epic_bundles = bundles.clone();
    for b in &mut epic_bundles {
        synthea::add_record_icd10cm(b, &cw);
    }
    let epic = eval::coverage(&reference, &epic_bundles);
    println!("with record ICD-10-CM codings (Epic style): codes by source {:?}", epic.codes_by_source);

    println!("\n## Speed of worksheet building (single thread, release)\n");
    let rounds = 5;
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for b in &bundles {
            std::hint::black_box(build_worksheet(b, &reference));
            n += 1;
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("{n} worksheets in {s:.3} s: {:.0} encounters/s", n as f64 / s);
    let held = Reference::embedded()?.with_crosswalk(Crosswalk::parse_tsv("snomed_code\tsnomed_display\ticd10cm_code\ticd10cm_title\tconfidence\tnote\n1\tx\tNONE\t\tlow\t\n", "empty")?);
    let t = Instant::now();
    for b in &bundles {
        std::hint::black_box(build_worksheet(b, &held));
    }
    let s = t.elapsed().as_secs_f64();
    println!("{} worksheets with every concept through the text matcher in {s:.3} s: {:.0} encounters/s", bundles.len(), bundles.len() as f64 / s);

    println!("\n## The runner with an in-process gateway stand-in (no network, no signing)\n");
    let served = Served(bundles.iter().map(|b| (b.encounter["id"].as_str().unwrap_or_default().to_owned(), serde_json::to_value(b).unwrap_or_default())).collect());
    let ids: Vec<String> = bundles.iter().map(|b| b.encounter["id"].as_str().unwrap_or_default().to_owned()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(run_worklist(&served, &reference, &SystemClock::shared(), &RunOptions::new("bench", "coder"), &ids, |_| {}));
    let s = &report.summary;
    println!(
        "{} encounters: {} coded, {} calls, codes by source {:?}, {:.0} minutes saved, {:.0} encounters/s",
        s.encounters, s.coded, s.calls, s.codes_by_source, s.minutes_saved, s.encounters_per_second
    );
    Ok(())
}

/// Serves encounter bundles from memory, as the gateway would answer `encounter.bundle`.
struct Served(std::collections::HashMap<String, serde_json::Value>);

impl ToolCaller for Served {
    async fn call_tool(&self, _sub: &str, _tool: ToolName, args: serde_json::Map<String, serde_json::Value>) -> Result<CallOutcome, AgentError> {
        let id = args.get("encounter").and_then(|v| v.as_str()).unwrap_or_default();
        let result = self.0.get(id).cloned();
        Ok(CallOutcome { status: if result.is_some() { 200 } else { 404 }, result, problem: None, receipt: None, retry_after: None })
    }
}
