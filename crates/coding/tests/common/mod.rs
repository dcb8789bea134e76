//! Shared test data: the bundled patients as encounter bundles, loaded once.
#![allow(dead_code)]

use medicodax_coding::{Reference, synthea};
use medicodax_wire::tools::EncounterBundle;
use std::path::PathBuf;
use std::sync::OnceLock;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/synthea-r4")
}

/// Every encounter of the 12 bundled patients, eClinicalWorks style (SNOMED CT only).
pub fn bundles() -> &'static [EncounterBundle] {
    static B: OnceLock<Vec<EncounterBundle>> = OnceLock::new();
    B.get_or_init(|| synthea::load_dir(&data_dir()).expect("bundled patients load"))
}

pub fn reference() -> Reference {
    Reference::embedded().expect("embedded reference data")
}

pub fn by_id(id: &str) -> EncounterBundle {
    bundles().iter().find(|b| b.encounter["id"] == id).cloned().unwrap_or_else(|| panic!("no encounter {id}"))
}

/// The first bundled encounter recording a SNOMED CT concept as a Condition.
pub fn recording(snomed: &str) -> EncounterBundle {
    bundles()
        .iter()
        .find(|b| b.conditions.iter().any(|c| c["code"]["coding"].as_array().is_some_and(|a| a.iter().any(|x| x["code"] == snomed))))
        .cloned()
        .unwrap_or_else(|| panic!("no encounter records {snomed}"))
}
