//! The coding worksheet: what the pipeline hands a coder for one encounter, built by a
//! pure function from the `encounter.bundle` tool result.
//!
//! For each Condition of the encounter, ICD-10-CM suggestions come from three sources,
//! in this order:
//!
//! 1. **record**: ICD-10-CM codings already on the Condition (system
//!    `http://hl7.org/fhir/sid/icd-10-cm`; Epic adds them, eClinicalWorks does not);
//! 2. **crosswalk**: the SNOMED CT coding mapped through the [`Crosswalk`](crate::crosswalk::Crosswalk);
//!    a code equal to a record code is merged into it (`also_from`);
//! 3. **text**: only when the crosswalk lacks the concept and the record holds no code
//!    from the code set, the [text matcher](crate::text) ranks CMS titles against the
//!    Condition's display, sharpened by qualifiers (acute, chronic, side, episode) that
//!    the note lines mentioning the concept add.
//!
//! Every suggestion carries its evidence: the Condition it came from and the note lines
//! (document id and line number) that mention the concept or, for text matches, the
//! matched words. Procedures are listed with their recorded codes (SNOMED CT; CPT is out
//! of scope).
//!
//! **Principal diagnosis.** Among the diagnoses recorded at this encounter that have a
//! suggestion from the code set, the pipeline picks the first by, in order: (1) named by
//! the Encounter (`diagnosis` with the lowest `rank`, `reasonReference`, or a
//! `reasonCode` with the same SNOMED CT code or sharing a word with the display); (2)
//! category `encounter-diagnosis` over `problem-list-item`; (3) acuity of the top code:
//! a disease or injury (ICD-10-CM chapters A–Q, S–U) over a symptom (R) over a factor
//! (Z); (4) onset during the encounter over a pre-existing condition; (5) the top
//! suggestion's confidence; (6) bundle order. The reasons are listed with the choice.

use crate::codeset::IcdCode;
use crate::crosswalk::MapConfidence;
use crate::fhir::{self, Coded, ICD10CM, SNOMED, arr, concept_text, str_at};
use crate::note::{NoteLine, NoteProblem, Notes};
use crate::text::{stem, strip_semantic_tag, terms, words};
use crate::time_saved::EncounterClass;
use crate::Reference;
use medicodax_wire::tools::EncounterBundle;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// Where a suggestion came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An ICD-10-CM coding present in the record.
    Record,
    /// The SNOMED CT → ICD-10-CM crosswalk.
    Crosswalk,
    /// The text matcher (display and note against CMS titles).
    Text,
}

impl Source {
    /// `record`, `crosswalk` or `text`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Record => "record",
            Source::Crosswalk => "crosswalk",
            Source::Text => "text",
        }
    }
}

/// A confidence band: `high` ≥ 0.8, `medium` ≥ 0.5, `low` below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// Below 0.5.
    Low,
    /// 0.5 to 0.8.
    Medium,
    /// 0.8 and above.
    High,
}

impl Band {
    /// The band of a confidence in 0-1.
    pub fn of(confidence: f64) -> Band {
        if confidence >= 0.8 {
            Band::High
        } else if confidence >= 0.5 {
            Band::Medium
        } else {
            Band::Low
        }
    }

    /// `high`, `medium` or `low`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Band::High => "high",
            Band::Medium => "medium",
            Band::Low => "low",
        }
    }
}

/// What supports a suggestion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The FHIR resource type it came from (`Condition`).
    pub resource_type: String,
    /// The resource id.
    pub resource_id: String,
    /// Note lines that support it (at most [`BuildOptions::max_evidence_lines`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub note_lines: Vec<NoteLine>,
    /// How many more supporting lines there were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_lines: usize,
    /// For crosswalk suggestions, the crosswalk's note; for text, the matched words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One suggested ICD-10-CM code for a diagnosis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// The code, dotted (`S06.0X0A`).
    pub code: String,
    /// The CMS long title (or the record's display when the code is not in the set).
    pub title: String,
    /// 1-based position among this diagnosis's suggestions.
    pub rank: usize,
    /// 0-1.
    pub confidence: f64,
    /// The confidence band.
    pub band: Band,
    /// Where it came from.
    pub source: Source,
    /// Other sources that gave the same code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_from: Vec<Source>,
    /// True when the code is in the code set and billable.
    pub billable: bool,
    /// True when the code is in the ICD-10-CM code set at all.
    pub in_code_set: bool,
    /// What supports it.
    pub evidence: Evidence,
}

/// A diagnosis (a Condition of the bundle) with its suggestions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The Condition id.
    pub condition_id: String,
    /// Its display (`code.text` or the first coding display).
    pub display: Option<String>,
    /// Its SNOMED CT code, if coded.
    pub snomed: Option<String>,
    /// `encounter-diagnosis`, `problem-list-item`, … when given.
    pub category: Option<String>,
    /// `active`, `resolved`, … when given.
    pub clinical_status: Option<String>,
    /// False when the Condition names a different encounter.
    pub this_encounter: bool,
    /// True when at least one note line mentions it.
    pub documented: bool,
    /// Suggestions, best first.
    pub suggestions: Vec<Suggestion>,
}

/// A procedure with its recorded codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcedureLine {
    /// The Procedure id.
    pub procedure_id: String,
    /// Its display.
    pub display: Option<String>,
    /// The codes recorded (SNOMED CT here; CPT is out of scope).
    pub codes: Vec<Coded>,
    /// `completed`, … when given.
    pub status: Option<String>,
    /// When it was performed (`performedDateTime` or the period start).
    pub performed: Option<String>,
}

/// The suggested principal diagnosis and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    /// The Condition id.
    pub condition_id: String,
    /// Its top code.
    pub code: String,
    /// The code's title.
    pub title: String,
    /// The heuristic's reasons, strongest first.
    pub reasons: Vec<String>,
}

/// What a flag is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagKind {
    /// A suggested code is a header (category or subcategory), not billable.
    NonBillableCode,
    /// A suggested code is not in the ICD-10-CM code set.
    CodeNotInCodeSet,
    /// No note line mentions the diagnosis.
    Undocumented,
    /// The crosswalk says the concept has no ICD-10-CM equivalent (a `NONE` row).
    NoIcdEquivalent,
    /// No ICD-10-CM suggestion could be made for a diagnosis.
    NoSuggestion,
    /// The record's ICD-10-CM code differs from the crosswalk's.
    RecordDiffersFromCrosswalk,
    /// The gateway withheld resource types from this caller.
    Withheld,
    /// Some part of the bundle could not be fetched completely.
    IncompleteBundle,
    /// The bundle has no readable clinical note.
    NoClinicalNote,
    /// A note attachment could not be read as it was.
    UnreadableNote,
    /// The encounter is not finished.
    NotFinished,
    /// Evidence was shortened so the worksheet fits in a signed call.
    Trimmed,
}

/// Something the coder should look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// What it is about.
    pub kind: FlagKind,
    /// The resource concerned (`Condition/…`, `DocumentReference/…`), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The code concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A sentence for the coder.
    pub message: String,
}

/// Counts of suggested codes by source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// From the record.
    pub record: usize,
    /// From the crosswalk.
    pub crosswalk: usize,
    /// From text matching.
    pub text: usize,
}

impl SourceCounts {
    /// Adds another count.
    pub fn add(&mut self, other: SourceCounts) {
        self.record += other.record;
        self.crosswalk += other.crosswalk;
        self.text += other.text;
    }

    /// The sum.
    pub fn total(&self) -> usize {
        self.record + self.crosswalk + self.text
    }
}

/// The coding worksheet of one encounter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Worksheet {
    /// The Encounter id.
    pub encounter_id: String,
    /// The Patient id (an id, never a name).
    pub patient_id: Option<String>,
    /// The encounter class used for the time baseline.
    pub encounter_class: EncounterClass,
    /// The class code it was read from (`AMB`, `EMER`, `IMP`, …).
    pub class_code: Option<String>,
    /// The encounter type's display.
    pub encounter_type: Option<String>,
    /// The encounter status.
    pub status: Option<String>,
    /// Period start.
    pub start: Option<String>,
    /// Period end.
    pub end: Option<String>,
    /// Diagnoses with suggestions.
    pub diagnoses: Vec<Diagnosis>,
    /// Procedures with their recorded codes.
    pub procedures: Vec<ProcedureLine>,
    /// The suggested principal diagnosis.
    pub principal: Option<Principal>,
    /// Flags for the coder.
    pub flags: Vec<Flag>,
    /// The crosswalk used (its source name).
    pub crosswalk: String,
}

impl Worksheet {
    /// Suggested codes by source (every suggestion counts once, under its own source).
    pub fn codes_by_source(&self) -> SourceCounts {
        let mut c = SourceCounts::default();
        for s in self.diagnoses.iter().flat_map(|d| &d.suggestions) {
            match s.source {
                Source::Record => c.record += 1,
                Source::Crosswalk => c.crosswalk += 1,
                Source::Text => c.text += 1,
            }
        }
        c
    }

    /// True when at least one diagnosis has an ICD-10-CM suggestion from the code set.
    pub fn has_icd_suggestion(&self) -> bool {
        self.diagnoses.iter().flat_map(|d| &d.suggestions).any(|s| s.in_code_set)
    }

    /// Every suggestion, with its diagnosis.
    pub fn suggestions(&self) -> impl Iterator<Item = (&Diagnosis, &Suggestion)> {
        self.diagnoses.iter().flat_map(|d| d.suggestions.iter().map(move |s| (d, s)))
    }

    /// True if a flag of this kind is present.
    pub fn has_flag(&self, kind: FlagKind) -> bool {
        self.flags.iter().any(|f| f.kind == kind)
    }
}

/// Knobs of the worksheet builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// How many text-match candidates a diagnosis gets (default 5).
    pub text_candidates: usize,
    /// How many note lines one piece of evidence lists (default 5).
    pub max_evidence_lines: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { text_candidates: 5, max_evidence_lines: 5 }
    }
}

/// Qualifiers a note may add to a concept's display (acuity, side, episode).
const QUALIFIERS: &[&str] = &[
    "acute", "chronic", "recurrent", "left", "right", "bilateral", "initial", "subsequent", "sequela", "intractable", "closed", "open", "mild", "moderate", "severe", "primary", "secondary",
];

/// Words that may stand with qualifiers in a segment that only qualifies a concept.
const FILLERS: &[&str] = &["side", "sided", "episode", "onset", "stage", "grade", "type", "with", "without"];

fn confidence_of(m: MapConfidence) -> f64 {
    match m {
        MapConfidence::High => 0.9,
        MapConfidence::Medium => 0.7,
        MapConfidence::Low => 0.4,
    }
}

struct Ctx<'a> {
    reference: &'a Reference,
    notes: &'a Notes,
    options: BuildOptions,
    flags: Vec<Flag>,
}

impl Ctx<'_> {
    fn flag(&mut self, kind: FlagKind, resource: Option<String>, code: Option<&str>, message: String) {
        self.flags.push(Flag { kind, resource, code: code.map(str::to_owned), message });
    }

    fn evidence(&self, condition_id: &str, lines: Vec<&NoteLine>, detail: Option<String>) -> Evidence {
        let more = lines.len().saturating_sub(self.options.max_evidence_lines);
        Evidence {
            resource_type: "Condition".into(),
            resource_id: condition_id.to_owned(),
            note_lines: lines.into_iter().take(self.options.max_evidence_lines).cloned().collect(),
            more_lines: more,
            detail,
        }
    }

    /// Checks a suggested code against the code set, flagging what is wrong.
    fn check_code(&mut self, condition_id: &str, code: &str) -> Option<&'static IcdCode> {
        match self.reference.codes().get(code) {
            None => {
                self.flag(FlagKind::CodeNotInCodeSet, Some(format!("Condition/{condition_id}")), Some(code), format!("{code} is not in the ICD-10-CM FY2025 code set"));
                None
            }
            Some(c) => {
                if !c.billable {
                    self.flag(
                        FlagKind::NonBillableCode,
                        Some(format!("Condition/{condition_id}")),
                        Some(&c.dotted),
                        format!("{} is a header, not a billable code: choose a more specific code under it", c.dotted),
                    );
                }
                Some(c)
            }
        }
    }

    fn diagnosis(&mut self, condition: &Value, encounter_id: &str) -> Diagnosis {
        let condition_id = fhir::id(condition).unwrap_or("(no id)").to_owned();
        let res = format!("Condition/{condition_id}");
        let code = condition.get("code").cloned().unwrap_or(Value::Null);
        let display = concept_text(&code);
        let all = fhir::codings(&code);
        let snomed = all.iter().find(|c| c.system == SNOMED).map(|c| c.code.clone());
        let this_encounter = condition.get("encounter").is_none_or(|r| fhir::reference_id(r).is_none_or(|id| id == encounter_id));
        let mentions: Vec<&NoteLine> = display.as_deref().map(|d| self.notes.mentions(d)).unwrap_or_default();
        let documented = !mentions.is_empty();
        let mut suggestions: Vec<Suggestion> = Vec::new();

        // 1. codes present in the record
        for rc in all.iter().filter(|c| c.system == ICD10CM) {
            let found = self.check_code(&condition_id, &rc.code);
            let (code, title, billable, conf) = match found {
                Some(c) => (c.dotted.clone(), c.long_title.clone(), c.billable, if c.billable { 0.95 } else { 0.6 }),
                None => (rc.code.clone(), rc.display.clone().unwrap_or_default(), false, 0.3),
            };
            if suggestions.iter().any(|s| s.code == code) {
                continue;
            }
            let ev = self.evidence(&condition_id, mentions.clone(), None);
            suggestions.push(Suggestion { code, title, rank: 0, confidence: conf, band: Band::of(conf), source: Source::Record, also_from: vec![], billable, in_code_set: found.is_some(), evidence: ev });
        }
        let record_valid = suggestions.iter().any(|s| s.in_code_set);

        // 2. the crosswalk
        let crosswalk = self.reference.crosswalk_arc();
        let rows: Vec<_> = snomed.as_deref().map(|s| crosswalk.lookup(s).collect()).unwrap_or_default();
        for row in &rows {
            let Some(target) = &row.icd10cm_code else {
                let note = if row.note.is_empty() { String::new() } else { format!(" ({})", row.note) };
                self.flag(FlagKind::NoIcdEquivalent, Some(res.clone()), None, format!("SNOMED CT {} has no ICD-10-CM equivalent in the crosswalk{note}", row.snomed_code));
                continue;
            };
            let found = self.check_code(&condition_id, target);
            let code = found.map_or_else(|| target.clone(), |c| c.dotted.clone());
            let mut conf = confidence_of(row.confidence);
            if found.is_none() {
                conf = conf.min(0.3);
            }
            if let Some(existing) = suggestions.iter_mut().find(|s| s.code == code) {
                if !existing.also_from.contains(&Source::Crosswalk) && existing.source != Source::Crosswalk {
                    existing.also_from.push(Source::Crosswalk);
                }
                continue;
            }
            if let Some(first) = suggestions.iter().find(|s| s.source == Source::Record && s.in_code_set) {
                let msg = format!("the record codes this as {} but the crosswalk maps SNOMED CT {} to {code}", first.code, row.snomed_code);
                self.flag(FlagKind::RecordDiffersFromCrosswalk, Some(res.clone()), Some(&code), msg);
            }
            let detail = (!row.note.is_empty()).then(|| format!("crosswalk ({}): {}", row.confidence.as_str(), row.note));
            let ev = self.evidence(&condition_id, mentions.clone(), detail);
            suggestions.push(Suggestion {
                code,
                title: found.map_or_else(|| row.icd10cm_title.clone(), |c| c.long_title.clone()),
                rank: 0,
                confidence: conf,
                band: Band::of(conf),
                source: Source::Crosswalk,
                also_from: vec![],
                billable: found.is_some_and(|c| c.billable),
                in_code_set: found.is_some(),
                evidence: ev,
            });
        }

        // 3. text, only for a concept the crosswalk lacks and the record does not code
        if rows.is_empty()
            && !record_valid
            && let Some(d) = &display
        {
            let query = self.query_with_qualifiers(d, &mentions);
            for cand in self.reference.index().search(&query, self.options.text_candidates) {
                let lines = self.notes.lines_with(&cand.matched);
                let conf = cand.confidence();
                let detail = Some(format!("matched: {}", cand.matched.join(", ")));
                let ev = self.evidence(&condition_id, lines, detail);
                suggestions.push(Suggestion {
                    code: cand.code.dotted.clone(),
                    title: cand.code.long_title.clone(),
                    rank: 0,
                    confidence: conf,
                    band: Band::of(conf),
                    source: Source::Text,
                    also_from: vec![],
                    billable: cand.code.billable,
                    in_code_set: true,
                    evidence: ev,
                });
            }
        }
        let none_row = rows.iter().any(|r| r.icd10cm_code.is_none());
        if suggestions.is_empty() && !none_row {
            let why = if display.is_none() { "it has no display text to match" } else { "nothing in the code set matched its text" };
            self.flag(FlagKind::NoSuggestion, Some(res.clone()), None, format!("no ICD-10-CM suggestion: {why}"));
        }
        if !documented {
            let why = if self.notes.is_empty() { "the bundle has no readable clinical note" } else { "no note line mentions it" };
            self.flag(FlagKind::Undocumented, Some(res.clone()), None, format!("diagnosis without supporting documentation: {why}"));
        }
        for (i, s) in suggestions.iter_mut().enumerate() {
            s.rank = i + 1;
        }
        let category = arr(condition, "category").iter().flat_map(fhir::codings).map(|c| c.code).next();
        let clinical_status = condition.get("clinicalStatus").and_then(|c| fhir::codings(c).into_iter().next()).map(|c| c.code);
        Diagnosis { condition_id, display, snomed, category, clinical_status, this_encounter, documented, suggestions }
    }

    /// The display plus the qualifiers that the note's mentions of it add.
    fn query_with_qualifiers(&self, display: &str, mentions: &[&NoteLine]) -> String {
        let own: HashSet<String> = words(strip_semantic_tag(display)).into_iter().collect();
        let want: Vec<String> = terms(strip_semantic_tag(display), true);
        let mut extra: Vec<&str> = Vec::new();
        for line in mentions {
            // the segment of the line that holds the concept, and the segments right
            // after it that only qualify it ("otitis media, left, recurrent")
            let mut in_concept = false;
            for seg in line.text.split([',', ';', '.', ':']) {
                let seg_words = words(seg);
                let stems: HashSet<String> = seg_words.iter().map(|w| stem(w)).collect();
                let holds = want.iter().all(|w| stems.contains(w));
                let only_qualifiers = !seg_words.is_empty() && seg_words.iter().all(|w| w.len() < 4 || QUALIFIERS.contains(&w.as_str()) || FILLERS.contains(&w.as_str()));
                in_concept = holds || (in_concept && only_qualifiers);
                if !in_concept {
                    continue;
                }
                for q in QUALIFIERS {
                    if seg_words.iter().any(|w| w == q) && !own.contains(*q) && !extra.contains(q) {
                        extra.push(q);
                    }
                }
            }
        }
        if extra.is_empty() { display.to_owned() } else { format!("{} {}", strip_semantic_tag(display), extra.join(" ")) }
    }
}

/// The acuity rank of a code for the principal heuristic: disease or injury 2, symptom
/// (R) 1, factor (Z) 0.
fn acuity(code: &str) -> u8 {
    match code.chars().next().map(|c| c.to_ascii_uppercase()) {
        Some('Z') => 0,
        Some('R') => 1,
        Some(_) => 2,
        None => 0,
    }
}

/// The principal heuristic's sort key, smallest first: (named by the encounter, not an
/// encounter diagnosis, acuity, not new here, 100 − confidence %, bundle order).
type PrincipalKey = (i64, u8, u8, u8, u8, i64);

fn principal(encounter: &Value, conditions: &[Value], diagnoses: &[Diagnosis], start: Option<&str>, end: Option<&str>) -> Option<Principal> {
    // Encounter.diagnosis ranks and reasonReference ids
    let mut named: Vec<(String, i64)> = Vec::new();
    for d in arr(encounter, "diagnosis") {
        if let Some(id) = d.get("condition").and_then(fhir::reference_id) {
            named.push((id.to_owned(), d.get("rank").and_then(Value::as_i64).unwrap_or(i64::MAX / 2)));
        }
    }
    for r in arr(encounter, "reasonReference") {
        if let Some(id) = fhir::reference_id(r) {
            named.push((id.to_owned(), i64::MAX / 2 + 1));
        }
    }
    let reason_codes: Vec<Coded> = arr(encounter, "reasonCode").iter().flat_map(fhir::codings).collect();
    let reason_words: HashSet<String> = arr(encounter, "reasonCode")
        .iter()
        .filter_map(concept_text)
        .flat_map(|t| terms(&t.replace('_', " "), true))
        .filter(|w| w.len() >= 4)
        .collect();
    let mut best: Option<(PrincipalKey, usize)> = None;
    for (i, d) in diagnoses.iter().enumerate() {
        let Some(top) = d.suggestions.iter().find(|s| s.in_code_set) else { continue };
        if !d.this_encounter {
            continue;
        }
        let by_encounter = named.iter().filter(|(id, _)| *id == d.condition_id).map(|(_, r)| *r).min();
        let by_reason_code = d.snomed.as_ref().is_some_and(|s| reason_codes.iter().any(|c| &c.code == s));
        let by_reason_text = d.display.as_deref().is_some_and(|t| terms(strip_semantic_tag(t), true).iter().any(|w| reason_words.contains(w)));
        let named_rank = match (by_encounter, by_reason_code, by_reason_text) {
            (Some(r), _, _) => -2_000_000 + r.clamp(0, 1_000_000),
            (None, true, _) => -1,
            (None, false, true) => 0,
            _ => 1,
        };
        let encounter_dx = u8::from(d.category.as_deref() != Some("encounter-diagnosis"));
        let acute = 2 - acuity(&top.code);
        let onset = conditions.get(i).and_then(|c| str_at(c, "onsetDateTime"));
        let new_here = match (onset, start, end) {
            (Some(o), Some(s), e) => u8::from(!(o >= s && e.is_none_or(|e| o <= e) || o.get(..10) == s.get(..10))),
            _ => 1,
        };
        let conf = (100.0 - top.confidence * 100.0).round().clamp(0.0, 100.0) as u8;
        let key = (named_rank, encounter_dx, acute, new_here, conf, i as i64);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, i));
        }
    }
    let ((named_rank, encounter_dx, acute, new_here, _, _), i) = best?;
    let d = diagnoses.get(i)?;
    let top = d.suggestions.iter().find(|s| s.in_code_set)?;
    let mut reasons = Vec::new();
    reasons.push(match named_rank {
        r if r < -1 => "named by the Encounter (diagnosis or reasonReference)".to_owned(),
        -1 => "its SNOMED CT code is the Encounter's reasonCode".to_owned(),
        0 => "the Encounter's reason text names it".to_owned(),
        _ => "no Encounter reason names a diagnosis".to_owned(),
    });
    if encounter_dx == 0 {
        reasons.push("an encounter diagnosis".into());
    }
    reasons.push(match acute {
        0 => "a disease or injury code".into(),
        1 => "a symptom code (no disease or injury diagnosis outranks it)".into(),
        _ => "a factor (Z) code (no disease, injury or symptom outranks it)".into(),
    });
    if new_here == 0 {
        reasons.push("onset during this encounter".into());
    }
    reasons.push(format!("top suggestion from the {} with confidence {:.2}", top.source.as_str(), top.confidence));
    Some(Principal { condition_id: d.condition_id.clone(), code: top.code.clone(), title: top.title.clone(), reasons })
}

/// Builds the worksheet of one encounter with the default options.
pub fn build_worksheet(bundle: &EncounterBundle, reference: &Reference) -> Worksheet {
    build_worksheet_with(bundle, reference, BuildOptions::default())
}

/// Builds the worksheet of one encounter. Pure: reads only the bundle and the reference
/// data; never fails (odd shapes become flags).
pub fn build_worksheet_with(bundle: &EncounterBundle, reference: &Reference, options: BuildOptions) -> Worksheet {
    let enc = &bundle.encounter;
    let encounter_id = fhir::id(enc).unwrap_or("(no id)").to_owned();
    let (encounter_class, class_code) = EncounterClass::of_encounter(enc);
    let notes = Notes::decode(&bundle.documents);
    let mut ctx = Ctx { reference, notes: &notes, options, flags: Vec::new() };
    let diagnoses: Vec<Diagnosis> = bundle.conditions.iter().map(|c| ctx.diagnosis(c, &encounter_id)).collect();
    let procedures = bundle
        .procedures
        .iter()
        .map(|p| {
            let code = p.get("code").cloned().unwrap_or(Value::Null);
            ProcedureLine {
                procedure_id: fhir::id(p).unwrap_or("(no id)").to_owned(),
                display: concept_text(&code),
                codes: fhir::codings(&code),
                status: str_at(p, "status").map(str::to_owned),
                performed: str_at(p, "performedDateTime").or_else(|| p.get("performedPeriod").and_then(|x| str_at(x, "start"))).map(str::to_owned),
            }
        })
        .collect();
    let period = enc.get("period").cloned().unwrap_or(Value::Null);
    let start = str_at(&period, "start").map(str::to_owned);
    let end = str_at(&period, "end").map(str::to_owned);
    let principal = principal(enc, &bundle.conditions, &diagnoses, start.as_deref(), end.as_deref());
    let status = str_at(enc, "status").map(str::to_owned);
    let mut flags = ctx.flags;
    if status.as_deref().is_some_and(|s| s != "finished") {
        flags.push(Flag { kind: FlagKind::NotFinished, resource: Some(format!("Encounter/{encounter_id}")), code: None, message: "the encounter is not finished; coding may be premature".into() });
    }
    if !bundle.withheld.is_empty() {
        let types: Vec<&str> = bundle.withheld.iter().map(|t| t.as_str()).collect();
        flags.push(Flag { kind: FlagKind::Withheld, resource: None, code: None, message: format!("withheld from this agent by policy: {}; the worksheet may miss diagnoses", types.join(", ")) });
    }
    if bundle.incomplete {
        let codes: Vec<&str> = bundle.warnings.iter().map(|w| w.code.as_str()).collect();
        flags.push(Flag { kind: FlagKind::IncompleteBundle, resource: None, code: None, message: format!("the bundle is incomplete ({})", if codes.is_empty() { "no detail".into() } else { codes.join(", ") }) });
    }
    for (doc, problem) in &notes.problems {
        let what = match problem {
            NoteProblem::BadBase64 => "its data is not valid base64; skipped",
            NoteProblem::NotText => "it is not a text attachment; skipped",
            NoteProblem::NotUtf8 => "it is not UTF-8; invalid bytes were replaced",
            NoteProblem::ByReference => "it is only a URL; not fetched",
            NoteProblem::Truncated => "it is longer than 1 MiB; the rest was ignored",
        };
        flags.push(Flag { kind: FlagKind::UnreadableNote, resource: Some(format!("DocumentReference/{doc}")), code: None, message: format!("note attachment: {what}") });
    }
    if notes.is_empty() {
        flags.push(Flag { kind: FlagKind::NoClinicalNote, resource: None, code: None, message: "no readable clinical note in the bundle".into() });
    }
    Worksheet {
        encounter_id,
        patient_id: bundle.patient.as_ref().and_then(fhir::id).map(str::to_owned).or_else(|| enc.get("subject").and_then(fhir::reference_id).map(str::to_owned)),
        encounter_class,
        class_code,
        encounter_type: arr(enc, "type").iter().find_map(concept_text),
        status,
        start,
        end,
        diagnoses,
        procedures,
        principal,
        flags,
        crosswalk: reference.crosswalk().source().to_owned(),
    }
}

/// A copy of `w` whose JSON is at most `max_bytes`, for handing in with a signed call
/// (`worksheet.submit` is bounded by the gateway's call size). Evidence is shortened in
/// steps until it fits: note lines beyond the first per suggestion, then candidates
/// beyond the first three per diagnosis, then procedures beyond the first fifty; each
/// step keeps counts of what it dropped where the worksheet has them, and a
/// [`FlagKind::Trimmed`] flag says so. Codes, sources and confidences of what remains
/// are untouched. Returns `None` if even the shortest form does not fit.
pub fn fit_for_submission(w: &Worksheet, max_bytes: usize) -> Option<Worksheet> {
    let size = |w: &Worksheet| serde_json::to_vec(w).map(|v| v.len()).unwrap_or(usize::MAX);
    if size(w) <= max_bytes {
        return Some(w.clone());
    }
    let mut t = w.clone();
    t.flags.push(Flag { kind: FlagKind::Trimmed, resource: None, code: None, message: "evidence was shortened to fit in a signed call; the full worksheet is in the pipeline's output".into() });
    for d in &mut t.diagnoses {
        for s in &mut d.suggestions {
            let e = &mut s.evidence;
            if e.note_lines.len() > 1 {
                e.more_lines += e.note_lines.len() - 1;
                e.note_lines.truncate(1);
            }
        }
    }
    if size(&t) <= max_bytes {
        return Some(t);
    }
    for d in &mut t.diagnoses {
        d.suggestions.truncate(3);
    }
    if size(&t) <= max_bytes {
        return Some(t);
    }
    t.procedures.truncate(50);
    if size(&t) <= max_bytes { Some(t) } else { None }
}
