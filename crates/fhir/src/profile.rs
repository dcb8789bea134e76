//! Per-connection search settings: the vendor quirks as plain values.
//!
//! The SMART crate owns vendor names and fills these in from its vendor profiles; this
//! crate only knows behaviours. See pitfall 21 and `DESIGN.md` §4 "search quirks".

use medicodax_wire::ResourceType;

/// Observation categories searched one by one when a server requires `category` or
/// `code` on Observation searches (Epic). The first three are what Epic's Observation
/// APIs are granted for most often (labs, vitals, social history); `survey`, `exam`,
/// `procedure` and `imaging` are the other US Core categories that Synthea-style records
/// use (the bundled patients have 14 `procedure` Observations, which a shorter list would
/// silently miss). A server that rejects one of them reports it as a per-category
/// failure, so a connection can trim the list (`observation_categories`).
pub const DEFAULT_OBSERVATION_CATEGORIES: [&str; 7] = ["laboratory", "vital-signs", "social-history", "survey", "exam", "procedure", "imaging"];

/// Searches of `resource_type` that name no `category`, `code` or `_id` are sent once per
/// category instead (the bare query is never sent) and merged, duplicates removed by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategorySplit {
    /// The type whose searches are split.
    pub resource_type: ResourceType,
    /// The `category` values searched, in order.
    pub categories: Vec<String>,
}

/// How the client shapes searches for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchProfile {
    /// Types whose searches must name a category (or code): split per category.
    pub category_split: Vec<CategorySplit>,
    /// Types searched by `subject=Patient/{id}` instead of `patient={id}` (athenahealth
    /// refuses `patient` on Observation).
    pub subject_instead_of_patient: Vec<ResourceType>,
    /// Send `patient=Patient/{id}` rather than `patient={id}` (Medplum matches only the
    /// reference form).
    pub patient_as_reference: bool,
    /// `_count` added to searches that do not set one (Epic clients send 50).
    pub page_size: Option<u32>,
}

impl Default for SearchProfile {
    fn default() -> Self {
        Self::generic()
    }
}

impl SearchProfile {
    /// A server without quirks: parameters are sent as given, no `_count` is added.
    pub fn generic() -> Self {
        Self { category_split: Vec::new(), subject_instead_of_patient: Vec::new(), patient_as_reference: false, page_size: None }
    }

    /// Observation searches need `category` or `code` (Epic): split over
    /// [`DEFAULT_OBSERVATION_CATEGORIES`], 50 per page.
    pub fn observation_needs_category() -> Self {
        Self::generic()
            .with_category_split(ResourceType::Observation, DEFAULT_OBSERVATION_CATEGORIES.iter().map(|s| (*s).to_owned()).collect())
            .with_page_size(50)
    }

    /// Observation is searched by `subject=Patient/{id}` (athenahealth).
    pub fn observation_by_subject() -> Self {
        Self { subject_instead_of_patient: vec![ResourceType::Observation], ..Self::generic() }
    }

    /// Splits searches of `t` over `categories` (replacing any earlier split for `t`).
    pub fn with_category_split(mut self, t: ResourceType, categories: Vec<String>) -> Self {
        self.category_split.retain(|s| s.resource_type != t);
        self.category_split.push(CategorySplit { resource_type: t, categories });
        self
    }

    /// Adds `_count={n}` to searches that set none.
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }

    /// Sends the patient parameter as a `Patient/{id}` reference.
    pub fn with_patient_as_reference(mut self) -> Self {
        self.patient_as_reference = true;
        self
    }

    /// The categories searches of `t` are split over, if any.
    pub fn split_for(&self, t: ResourceType) -> Option<&[String]> {
        self.category_split.iter().find(|s| s.resource_type == t).map(|s| s.categories.as_slice())
    }
}
