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

use crate::crosswalk::{Crosswalk, CrosswalkRow};
use crate::text::TitleIndex;
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
