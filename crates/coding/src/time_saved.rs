//! Time saved per encounter (DESIGN.md §7): the manual baseline for the encounter's
//! class, minus the pipeline's time, minus the coder's review time when recorded.

use medicodax_config::CodingConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The classes baselines are set for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncounterClass {
    /// Inpatient stays: `IMP`, `ACUTE`, `NONAC`.
    Inpatient,
    /// Emergency: `EMER`.
    Emergency,
    /// Ambulatory and every other outpatient class (`AMB`, `VR`, `HH`, `FLD`, `OBSENC`,
    /// `PRENC`, `SS`), and any class not recognised.
    Outpatient,
}

impl EncounterClass {
    /// Classifies a v3 ActCode encounter class code (case-insensitive).
    pub fn from_code(code: &str) -> EncounterClass {
        match code.trim().to_ascii_uppercase().as_str() {
            "IMP" | "ACUTE" | "NONAC" => EncounterClass::Inpatient,
            "EMER" => EncounterClass::Emergency,
            _ => EncounterClass::Outpatient,
        }
    }

    /// The class of an Encounter resource and the code it was read from. R4 writes
    /// `class` as a Coding; an R5-style CodeableConcept (or a list of them) is read too.
    pub fn of_encounter(encounter: &Value) -> (EncounterClass, Option<String>) {
        let class = encounter.get("class");
        let code = class
            .and_then(|c| c.get("code").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| {
                let concepts: Vec<&Value> = match class {
                    Some(Value::Array(a)) => a.iter().collect(),
                    Some(other) => vec![other],
                    None => Vec::new(),
                };
                concepts.into_iter().flat_map(crate::fhir::codings).map(|c| c.code).next()
            });
        (code.as_deref().map_or(EncounterClass::Outpatient, EncounterClass::from_code), code)
    }

    /// `inpatient`, `emergency` or `outpatient`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EncounterClass::Inpatient => "inpatient",
            EncounterClass::Emergency => "emergency",
            EncounterClass::Outpatient => "outpatient",
        }
    }
}

/// Manual coding baselines in minutes per encounter class.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    /// Inpatient (default 20).
    pub inpatient_minutes: f64,
    /// Emergency (default 6).
    pub emergency_minutes: f64,
    /// Ambulatory and other outpatient (default 4).
    pub outpatient_minutes: f64,
}

impl Default for Baselines {
    fn default() -> Self {
        Baselines::from(&CodingConfig::default())
    }
}

impl From<&CodingConfig> for Baselines {
    fn from(c: &CodingConfig) -> Self {
        Baselines { inpatient_minutes: c.inpatient_minutes, emergency_minutes: c.emergency_minutes, outpatient_minutes: c.outpatient_minutes }
    }
}

impl Baselines {
    /// The baseline for a class, in minutes.
    pub fn minutes(&self, class: EncounterClass) -> f64 {
        match class {
            EncounterClass::Inpatient => self.inpatient_minutes,
            EncounterClass::Emergency => self.emergency_minutes,
            EncounterClass::Outpatient => self.outpatient_minutes,
        }
    }
}

/// The time saved on one encounter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeSaved {
    /// The encounter's class.
    pub class: EncounterClass,
    /// The manual baseline, minutes.
    pub baseline_minutes: f64,
    /// The pipeline's time for this encounter, minutes.
    pub pipeline_minutes: f64,
    /// The coder's review time, minutes, once recorded.
    pub review_minutes: Option<f64>,
    /// baseline − pipeline − review. Negative when a review took longer than coding by
    /// hand would have: reported as it is, not hidden.
    pub saved_minutes: f64,
}

/// Time saved = baseline(class) − pipeline time − review time (when recorded).
pub fn time_saved(class: EncounterClass, baselines: &Baselines, pipeline: Duration, review: Option<Duration>) -> TimeSaved {
    let baseline = baselines.minutes(class);
    let pipeline_minutes = pipeline.as_secs_f64() / 60.0;
    let review_minutes = review.map(|r| r.as_secs_f64() / 60.0);
    TimeSaved { class, baseline_minutes: baseline, pipeline_minutes, review_minutes, saved_minutes: baseline - pipeline_minutes - review_minutes.unwrap_or(0.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn class_codes_map_to_their_baseline_class() {
        for (code, class) in [
            ("IMP", EncounterClass::Inpatient),
            ("ACUTE", EncounterClass::Inpatient),
            ("nonac", EncounterClass::Inpatient),
            ("EMER", EncounterClass::Emergency),
            ("AMB", EncounterClass::Outpatient),
            ("VR", EncounterClass::Outpatient),
            ("HH", EncounterClass::Outpatient),
            ("FLD", EncounterClass::Outpatient),
            ("OBSENC", EncounterClass::Outpatient),
            ("PRENC", EncounterClass::Outpatient),
            ("SS", EncounterClass::Outpatient),
            ("", EncounterClass::Outpatient),
        ] {
            assert_eq!(EncounterClass::from_code(code), class, "{code}");
        }
    }

    #[test]
    fn class_is_read_from_a_coding_or_a_codeable_concept() {
        assert_eq!(EncounterClass::of_encounter(&json!({"class": {"code": "EMER"}})), (EncounterClass::Emergency, Some("EMER".into())));
        assert_eq!(EncounterClass::of_encounter(&json!({"class": [{"coding": [{"code": "IMP"}]}]})), (EncounterClass::Inpatient, Some("IMP".into())));
        assert_eq!(EncounterClass::of_encounter(&json!({"class": 3})), (EncounterClass::Outpatient, None));
        assert_eq!(EncounterClass::of_encounter(&json!({})), (EncounterClass::Outpatient, None));
    }

    #[test]
    fn saved_is_baseline_minus_pipeline_minus_review() {
        let b = Baselines::default();
        assert_eq!((b.inpatient_minutes, b.emergency_minutes, b.outpatient_minutes), (20.0, 6.0, 4.0));
        let t = time_saved(EncounterClass::Inpatient, &b, Duration::from_secs(30), Some(Duration::from_secs(240)));
        assert_eq!(t.saved_minutes, 20.0 - 0.5 - 4.0);
        let t = time_saved(EncounterClass::Emergency, &b, Duration::from_secs(6), None);
        assert!((t.saved_minutes - 5.9).abs() < 1e-9);
        assert_eq!(t.review_minutes, None);
        let custom = Baselines::from(&CodingConfig { inpatient_minutes: 30.0, emergency_minutes: 8.0, outpatient_minutes: 5.0 });
        assert_eq!(time_saved(EncounterClass::Outpatient, &custom, Duration::ZERO, None).saved_minutes, 5.0);
        let slow = time_saved(EncounterClass::Outpatient, &b, Duration::ZERO, Some(Duration::from_secs(600)));
        assert_eq!(slow.saved_minutes, -6.0, "a slow review shows as time lost");
    }
}
