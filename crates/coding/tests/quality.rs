//! The text-match fallback measured against the crosswalk on concepts held out from it.
//! The floors are the numbers measured when the matcher was written (README); a change
//! that makes any of them worse fails here. Raise them when the matcher improves.

mod common;

use common::{bundles, reference};
use medicodax_coding::codeset::CodeSet;
use medicodax_coding::eval::{self, EvalReport};
use medicodax_coding::text::{MatchOptions, TitleIndex};

/// Hits behind each measure: (exact@1, exact@5, category@1, category@5).
fn hits(r: &EvalReport) -> (usize, usize, usize, usize) {
    let round = |x: f64, of: usize| (x * of as f64).round() as usize;
    (round(r.precision_at_1, r.answered), round(r.recall_at_k, r.concepts), round(r.category_precision_at_1, r.answered), round(r.category_recall_at_k, r.concepts))
}

#[test]
fn held_out_by_display_does_not_get_worse() {
    let reference = reference();
    let r = eval::held_out_by_display("display", reference.crosswalk(), reference.index(), 5);
    assert_eq!(r.concepts, 84, "every crosswalk concept with a code is held out once");
    assert!(r.answered >= 83, "answered {}", r.answered);
    let (p1, r5, cp1, cr5) = hits(&r);
    assert!(p1 >= 53, "exact top-1 hits {p1} < 53 (P@1 {:.3})", r.precision_at_1);
    assert!(r5 >= 63, "exact top-5 hits {r5} < 63 (R@5 {:.3})", r.recall_at_k);
    assert!(cp1 >= 59, "category top-1 hits {cp1} < 59 ({:.3})", r.category_precision_at_1);
    assert!(cr5 >= 68, "category top-5 hits {cr5} < 68 ({:.3})", r.category_recall_at_k);
}

#[test]
fn held_out_through_the_worksheet_builder_does_not_get_worse() {
    let reference = reference();
    let r = eval::held_out_in_bundles("bundles", &reference, bundles(), 5);
    assert_eq!(r.concepts, 84);
    let (p1, r5, cp1, cr5) = hits(&r);
    assert!(p1 >= 53, "exact top-1 hits {p1} < 53 (P@1 {:.3})", r.precision_at_1);
    assert!(r5 >= 63, "exact top-5 hits {r5} < 63 (R@5 {:.3})", r.recall_at_k);
    assert!(cp1 >= 58, "category top-1 hits {cp1} < 58 ({:.3})", r.category_precision_at_1);
    assert!(cr5 >= 68, "category top-5 hits {cr5} < 68 ({:.3})", r.category_recall_at_k);
    // the confidence means something: medium-band answers are right more often than low
    let bands = eval::precision_by_band(&r);
    let rate = |b: &str| bands.iter().find(|x| x.0 == b).map(|x| x.2 as f64 / x.1.max(1) as f64).unwrap();
    assert!(rate("medium") > rate("low") + 0.2, "{bands:?}");
    assert_eq!(bands.iter().find(|x| x.0 == "high").unwrap().1, 0, "text matches never claim high confidence");
}

#[test]
fn re_ranking_beats_plain_bm25() {
    let reference = reference();
    let plain = TitleIndex::build(CodeSet::embedded().unwrap(), MatchOptions { rerank: false, ..MatchOptions::default() });
    let product = eval::held_out_by_display("product", reference.crosswalk(), reference.index(), 5);
    let bm25 = eval::held_out_by_display("bm25", reference.crosswalk(), &plain, 5);
    assert!(product.precision_at_1 > bm25.precision_at_1 + 0.2, "{} vs {}", product.precision_at_1, bm25.precision_at_1);
    assert!(product.recall_at_k > bm25.recall_at_k);
}

#[test]
fn the_share_of_encounters_with_a_suggestion_does_not_drop() {
    let reference = reference();
    let c = eval::coverage(&reference, bundles());
    assert_eq!(c.encounters, 1388);
    assert_eq!(c.codes_not_in_code_set, 0);
    // 773 encounters record a Condition; the others (mostly wellness visits) have none.
    assert_eq!(c.with_conditions, 773);
    assert!(c.with_icd_suggestion >= 516, "{} encounters with a suggestion", c.with_icd_suggestion);
    // those without are exactly the ones whose every Condition maps to NONE
    let none_only = bundles()
        .iter()
        .filter(|b| {
            !b.conditions.is_empty()
                && b.conditions.iter().all(|x| {
                    let code = x["code"]["coding"][0]["code"].as_str().unwrap();
                    reference.crosswalk().lookup(code).all(|r| r.icd10cm_code.is_none())
                })
        })
        .count();
    assert_eq!(c.with_conditions - c.with_icd_suggestion, none_only);
}
