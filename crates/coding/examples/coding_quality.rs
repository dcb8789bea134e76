//! Prints the measured quality of the coding pipeline (see `medicodax_coding::eval`).
use medicodax_coding::codeset::CodeSet;
use medicodax_coding::crosswalk::Crosswalk;
use medicodax_coding::eval::{EvalReport, held_out_by_display};
use medicodax_coding::text::{MatchOptions, TitleIndex};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let codes = CodeSet::embedded()?;
    let cw = Crosswalk::embedded()?;
    let verbose = std::env::args().any(|a| a == "-v");
    println!("{}", EvalReport::table_header(5));
    let variants = [
        ("display, product matcher", MatchOptions::default()),
        ("display, no synonyms", MatchOptions { synonyms: false, ..MatchOptions::default() }),
        ("display, no stemming", MatchOptions { stemming: false, ..MatchOptions::default() }),
        ("display, plain BM25 (no re-ranking)", MatchOptions { rerank: false, ..MatchOptions::default() }),
    ];
    for (i, (label, opts)) in variants.into_iter().enumerate() {
        let idx = TitleIndex::build(codes, opts);
        let r = held_out_by_display(label, &cw, &idx, 5);
        println!("{}", r.table_row());
        if verbose && i == 0 {
            for o in &r.outcomes {
                if !o.exact_at_1() {
                    println!("   miss {:<60} want {:<9} got {:?}", o.display, o.expected, o.suggested);
                }
            }
        }
    }
    Ok(())
}
