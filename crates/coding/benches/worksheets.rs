//! Worksheet building speed on the bundled patients (encounters per second), with the
//! crosswalk and with every concept sent to the text matcher. `cargo bench -p
//! medicodax-coding`; CI only checks that it builds.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medicodax_coding::crosswalk::Crosswalk;
use medicodax_coding::{Reference, build_worksheet, synthea};
use std::hint::black_box;
use std::path::Path;

fn worksheets(c: &mut Criterion) {
    let reference = match Reference::embedded() {
        Ok(r) => r,
        Err(e) => panic!("embedded reference data: {e}"),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4");
    let bundles = match synthea::load_dir(&dir) {
        Ok(b) => b,
        Err(e) => panic!("bundled patients: {e}"),
    };
    let no_map = match Crosswalk::parse_tsv("snomed_code\tsnomed_display\ticd10cm_code\ticd10cm_title\tconfidence\tnote\n1\tx\tNONE\t\tlow\t\n", "empty") {
        Ok(c) => reference.clone().with_crosswalk(c),
        Err(e) => panic!("{e}"),
    };
    let mut g = c.benchmark_group("worksheets");
    g.throughput(Throughput::Elements(bundles.len() as u64));
    g.sample_size(10);
    g.bench_function("bundled encounters, crosswalk", |b| b.iter(|| bundles.iter().map(|x| build_worksheet(black_box(x), &reference).diagnoses.len()).sum::<usize>()));
    g.bench_function("bundled encounters, text matcher only", |b| b.iter(|| bundles.iter().map(|x| build_worksheet(black_box(x), &no_map).diagnoses.len()).sum::<usize>()));
    g.finish();
    c.bench_function("text matcher, one query", |b| b.iter(|| reference.index().search(black_box("Acute infective cystitis (disorder)"), 5).len()));
}

criterion_group!(benches, worksheets);
criterion_main!(benches);
