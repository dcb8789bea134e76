//! Quality, measured: the text-match fallback against the crosswalk on concepts held
//! out from it.
//!
//! For every crosswalk concept with a code (not `NONE`) we pretend the crosswalk lacks
//! it, run the text matcher, and compare its suggestions with the crosswalk's code:
//!
//! - **precision@1**: of the concepts the matcher answered, the share whose first
//!   suggestion is the crosswalk code;
//! - **recall@k**: of all concepts, the share whose crosswalk code is among the first k;
//! - the same two at the level of the three-character category (`S06`), which is what
//!   a coder reviewing the worksheet needs to land in the right place of the Tabular.
//!
//! [`held_out_by_display`] queries with the concept's display alone.
//! [`held_out_in_bundles`] runs the whole worksheet builder on real encounters that
//! record the concept, with the concept removed from the crosswalk, so the fallback sees
//! what it sees in production: the condition's display and the clinical note.

use crate::Reference;
use crate::crosswalk::{Crosswalk, CrosswalkRow};
use crate::text::TitleIndex;
use crate::worksheet::{Band, BuildOptions, Source, SourceCounts, Suggestion, build_worksheet, build_worksheet_with};
use medicodax_wire::tools::EncounterBundle;
use serde::{Deserialize, Serialize};

/// The outcome for one held-out concept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConceptOutcome {
    /// SNOMED CT concept id.
    pub snomed_code: String,
    /// Its display.
    pub display: String,
    /// The crosswalk's code (the reference answer).
    pub expected: String,
    /// The matcher's suggestions, best first (at most k).
    pub suggested: Vec<String>,
    /// Confidence of the first suggestion.
    pub top_confidence: Option<f64>,
}

impl ConceptOutcome {
    fn hit(&self, k: usize, category: bool) -> bool {
        let key = |c: &str| if category { c.get(..3).unwrap_or(c).to_owned() } else { c.to_owned() };
        let want = key(&self.expected);
        self.suggested.iter().take(k).any(|s| key(s) == want)
    }

    /// True when the first suggestion is the crosswalk code.
    pub fn exact_at_1(&self) -> bool {
        self.hit(1, false)
    }
}

/// Precision and recall over a set of held-out concepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// What was measured (a short label).
    pub label: String,
    /// The k of recall@k.
    pub k: usize,
    /// Concepts evaluated.
    pub concepts: usize,
    /// Concepts for which the matcher suggested at least one code.
    pub answered: usize,
    /// Exact code: first suggestion correct, over answered concepts.
    pub precision_at_1: f64,
    /// Exact code among the first k, over all concepts.
    pub recall_at_k: f64,
    /// Category (3 characters): first suggestion in the right category, over answered.
    pub category_precision_at_1: f64,
    /// Category among the first k, over all concepts.
    pub category_recall_at_k: f64,
    /// Per concept.
    pub outcomes: Vec<ConceptOutcome>,
}

impl EvalReport {
    /// Computes the measures from per-concept outcomes.
    pub fn from_outcomes(label: &str, k: usize, outcomes: Vec<ConceptOutcome>) -> EvalReport {
        let n = outcomes.len();
        let answered = outcomes.iter().filter(|o| !o.suggested.is_empty()).count();
        let ratio = |hits: usize, of: usize| if of == 0 { 0.0 } else { hits as f64 / of as f64 };
        let count = |k: usize, cat: bool| outcomes.iter().filter(|o| o.hit(k, cat)).count();
        EvalReport {
            label: label.to_owned(),
            k,
            concepts: n,
            answered,
            precision_at_1: ratio(count(1, false), answered),
            recall_at_k: ratio(count(k, false), n),
            category_precision_at_1: ratio(count(1, true), answered),
            category_recall_at_k: ratio(count(k, true), n),
            outcomes,
        }
    }

    /// The report as a fixed-width table row (see [`EvalReport::table_header`]).
    pub fn table_row(&self) -> String {
        format!(
            "{:<44} {:>8} {:>8} {:>7} {:>9} {:>9} {:>12}",
            self.label,
            self.concepts,
            self.answered,
            format!("{:.3}", self.precision_at_1),
            format!("{:.3}", self.recall_at_k),
            format!("{:.3}", self.category_precision_at_1),
            format!("{:.3}", self.category_recall_at_k),
        )
    }

    /// The header for [`EvalReport::table_row`].
    pub fn table_header(k: usize) -> String {
        format!("{:<44} {:>8} {:>8} {:>7} {:>9} {:>9} {:>12}", "evaluation", "concepts", "answered", "P@1", format!("R@{k}"), "cat P@1", format!("cat R@{k}"))
    }
}

/// The crosswalk rows that have a code: the concepts an evaluation holds out.
pub fn coded_rows(crosswalk: &Crosswalk) -> Vec<&CrosswalkRow> {
    let mut seen = std::collections::HashSet::new();
    crosswalk.rows().iter().filter(|r| r.icd10cm_code.is_some() && seen.insert(r.snomed_code.as_str())).collect()
}

/// Held-out evaluation on the concept's display alone. The matcher never reads the
/// crosswalk, so each concept is held out by construction.
pub fn held_out_by_display(label: &str, crosswalk: &Crosswalk, index: &TitleIndex<'_>, k: usize) -> EvalReport {
    let outcomes = coded_rows(crosswalk)
        .into_iter()
        .map(|r| {
            let found = index.search(&r.snomed_display, k);
            ConceptOutcome {
                snomed_code: r.snomed_code.clone(),
                display: r.snomed_display.clone(),
                expected: r.icd10cm_code.clone().unwrap_or_default(),
                top_confidence: found.first().map(|c| c.confidence()),
                suggested: found.into_iter().map(|c| c.code.dotted.clone()).collect(),
            }
        })
        .collect();
    EvalReport::from_outcomes(label, k, outcomes)
}

/// Held-out evaluation through the whole worksheet builder: for each coded concept, the
/// first bundled encounter that records it is coded with a crosswalk that lacks the
/// concept, so its suggestions come from the text fallback (display plus the note's
/// qualifiers). Concepts no encounter records are queried by display alone. The
/// bundles must not carry record ICD-10-CM codings (eClinicalWorks style), or the
/// fallback would not run.
pub fn held_out_in_bundles(label: &str, reference: &Reference, bundles: &[EncounterBundle], k: usize) -> EvalReport {
    let crosswalk = reference.crosswalk_arc();
    let options = BuildOptions { text_candidates: k, ..BuildOptions::default() };
    let outcomes = coded_rows(&crosswalk)
        .into_iter()
        .map(|r| {
            let held = reference.clone().with_crosswalk(crosswalk.without(&[r.snomed_code.as_str()]));
            let records = |b: &&EncounterBundle| b.conditions.iter().any(|c| crate::fhir::codings(c.get("code").unwrap_or(&serde_json::Value::Null)).iter().any(|x| x.code == r.snomed_code));
            let (suggested, top_confidence) = match bundles.iter().find(|b| records(b) && !b.documents.is_empty()).or_else(|| bundles.iter().find(records)) {
                Some(b) => {
                    let w = build_worksheet_with(b, &held, options);
                    let d = w.diagnoses.iter().find(|d| d.snomed.as_deref() == Some(r.snomed_code.as_str()));
                    let texts: Vec<&Suggestion> = d.map(|d| d.suggestions.iter().filter(|s| s.source == Source::Text).collect()).unwrap_or_default();
                    (texts.iter().map(|s| s.code.clone()).collect(), texts.first().map(|s| s.confidence))
                }
                None => {
                    let found = reference.index().search(&r.snomed_display, k);
                    (found.iter().map(|c| c.code.dotted.clone()).collect(), found.first().map(|c| c.confidence()))
                }
            };
            ConceptOutcome { snomed_code: r.snomed_code.clone(), display: r.snomed_display.clone(), expected: r.icd10cm_code.clone().unwrap_or_default(), suggested, top_confidence }
        })
        .collect();
    EvalReport::from_outcomes(label, k, outcomes)
}

/// Precision@1 per confidence band of the first suggestion: (band, concepts, exact hits).
pub fn precision_by_band(report: &EvalReport) -> Vec<(&'static str, usize, usize)> {
    [Band::High, Band::Medium, Band::Low]
        .into_iter()
        .map(|band| {
            let in_band: Vec<&ConceptOutcome> = report.outcomes.iter().filter(|o| o.top_confidence.is_some_and(|c| Band::of(c) == band)).collect();
            (band.as_str(), in_band.len(), in_band.iter().filter(|o| o.exact_at_1()).count())
        })
        .collect()
}

/// What the worksheets of a set of encounters suggest, in aggregate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Encounters.
    pub encounters: usize,
    /// Encounters with at least one Condition.
    pub with_conditions: usize,
    /// Encounters with at least one ICD-10-CM suggestion from the code set.
    pub with_icd_suggestion: usize,
    /// `with_icd_suggestion / encounters`.
    pub share_with_icd_suggestion: f64,
    /// `with_icd_suggestion / with_conditions`.
    pub share_of_encounters_with_conditions: f64,
    /// Diagnoses (Conditions) seen.
    pub diagnoses: usize,
    /// Suggestions made, by source.
    pub codes_by_source: SourceCounts,
    /// Suggested codes that are not in the code set (must be 0 unless the record or a
    /// user's map holds such codes).
    pub codes_not_in_code_set: usize,
    /// Distinct codes suggested.
    pub distinct_codes: usize,
    /// Flags raised, by kind.
    pub flags: std::collections::BTreeMap<String, usize>,
}

/// Builds every worksheet and counts what they suggest.
pub fn coverage(reference: &Reference, bundles: &[EncounterBundle]) -> Coverage {
    let mut c = Coverage { encounters: bundles.len(), ..Coverage::default() };
    let mut distinct = std::collections::HashSet::new();
    for b in bundles {
        let w = build_worksheet(b, reference);
        c.with_conditions += usize::from(!w.diagnoses.is_empty());
        c.with_icd_suggestion += usize::from(w.has_icd_suggestion());
        c.diagnoses += w.diagnoses.len();
        c.codes_by_source.add(w.codes_by_source());
        for (_, s) in w.suggestions() {
            c.codes_not_in_code_set += usize::from(reference.codes().get(&s.code).is_none());
            distinct.insert(s.code.clone());
        }
        for f in &w.flags {
            let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            *c.flags.entry(kind).or_insert(0) += 1;
        }
    }
    c.distinct_codes = distinct.len();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    c.share_with_icd_suggestion = ratio(c.with_icd_suggestion, c.encounters);
    c.share_of_encounters_with_conditions = ratio(c.with_icd_suggestion, c.with_conditions);
    c
}
