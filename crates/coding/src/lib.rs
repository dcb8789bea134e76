//! The reference coding agent: coding worksheets from signed tool calls only.
//!
//! The pipeline sits outside the trust boundary (DESIGN.md §7): it reaches EHR data only
//! through signed tool calls to the gateway (`medicodax-agent`), exactly as an outside
//! team's agent would, and depends on no gateway, sandbox or FHIR-client crate.
//!
//! # Architecture
//!
//! ```text
//! worklist ──fhir.search──► runner ──encounter.bundle (signed, 429-aware)──► EncounterBundle
//!                              │                                                  │
//!                              │                         build_worksheet (pure) ◄─┘
//!                              │                           ├─ record ICD-10-CM codings
//!                              │                           ├─ crosswalk (SNOMED CT → ICD-10-CM)
//!                              │                           └─ text matcher (BM25 over CMS titles)
//!                              ▼                                      for concepts the crosswalk lacks
//!                       RunReport { summary, results: Worksheet | denial | failure }
//! ```
//!
//! - [`Reference`]: the reference data, embedded at build time and parsed once per
//!   process: the CMS ICD-10-CM FY2025 [code set](codeset::CodeSet), the
//!   [crosswalk](crosswalk::Crosswalk) (replaceable by a user's licensed map with
//!   [`Crosswalk::load`](crosswalk::Crosswalk::load)) and the text matcher's
//!   [title index](text::TitleIndex).
//! - [`build_worksheet`]: a pure function from an
//!   [`EncounterBundle`](medicodax_wire::tools::EncounterBundle) to a [`Worksheet`]:
//!   [`Diagnosis`] lines with ranked [`Suggestion`]s (code, title, confidence and
//!   [`Band`], [`Source`], evidence with note line numbers), procedures with their
//!   recorded codes, a suggested principal diagnosis and [`Flag`]s. Serde for JSON;
//!   [`render::to_table`] for a plain-text table.
//! - [`time_saved()`]: baseline by [`EncounterClass`] − pipeline time − review time.
//! - [`runner`]: [`run_worklist`](runner::run_worklist) and
//!   [`build_worklist`](runner::build_worklist) over the
//!   [`ToolCaller`](runner::ToolCaller) trait, implemented by
//!   [`AgentClient`](medicodax_agent::AgentClient) and by test fakes.
//! - [`eval`]: quality measured on concepts held out from the crosswalk, and coverage of
//!   the bundled patients; [`synthea`] assembles encounter bundles from the bundled
//!   patient files for those measurements (never a data path of the pipeline).
//!
//! Nothing here panics on input: FHIR is read with tolerant accessors ([`fhir`]), notes
//! that are not base64, not text or not UTF-8 become flags ([`note`]). Logs carry ids,
//! statuses and counts, never note text or names; worksheets do carry evidence lines,
//! since they are the product's output to the coder.

pub mod codeset;
pub mod crosswalk;
pub mod eval;
pub mod fhir;
pub mod note;
pub mod render;
pub mod runner;
pub mod synthea;
pub mod text;
pub mod time_saved;
pub mod worksheet;

use codeset::CodeSet;
use crosswalk::Crosswalk;
use std::io::Read;
use std::sync::{Arc, LazyLock};
use text::{MatchOptions, TitleIndex};

pub use time_saved::{Baselines, EncounterClass, TimeSaved, time_saved};
pub use worksheet::{Band, Diagnosis, Flag, FlagKind, Source, Suggestion, Worksheet, build_worksheet, build_worksheet_with, fit_for_submission};

static INDEX: LazyLock<Result<TitleIndex<'static>, DataError>> = LazyLock::new(|| CodeSet::embedded().map(|c| TitleIndex::build(c, MatchOptions::default())));

/// The reference data a worksheet is built with: the ICD-10-CM code set, the title
/// index of the text matcher (both embedded, built once per process) and a crosswalk
/// (the embedded one, or a user's). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reference {
    codes: &'static CodeSet,
    index: &'static TitleIndex<'static>,
    crosswalk: Arc<Crosswalk>,
}

impl Reference {
    /// The shipped code set, title index and crosswalk (parsed and built on first use,
    /// about a second; later calls are free).
    pub fn embedded() -> Result<Reference, DataError> {
        let codes = CodeSet::embedded()?;
        let index = INDEX.as_ref().map_err(Clone::clone)?;
        Ok(Reference { codes, index, crosswalk: Crosswalk::embedded()? })
    }

    /// The same reference with another crosswalk (a user's licensed map).
    pub fn with_crosswalk(self, crosswalk: Crosswalk) -> Reference {
        Reference { crosswalk: Arc::new(crosswalk), ..self }
    }

    /// The ICD-10-CM code set.
    pub fn codes(&self) -> &'static CodeSet {
        self.codes
    }

    /// The text matcher's title index.
    pub fn index(&self) -> &'static TitleIndex<'static> {
        self.index
    }

    /// The crosswalk in use.
    pub fn crosswalk(&self) -> &Crosswalk {
        &self.crosswalk
    }

    /// The crosswalk in use, shared.
    pub fn crosswalk_arc(&self) -> Arc<Crosswalk> {
        Arc::clone(&self.crosswalk)
    }
}

/// A problem with shipped or user-supplied reference data (code set, crosswalk).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error kind.
        reason: String,
    },
    /// The bytes are not valid gzip or not UTF-8.
    #[error("cannot decode {file}: {reason}")]
    Decode {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The header row lacks a required column.
    #[error("{file}: the header has no column {missing:?}; expected tab-separated columns {expected}")]
    Header {
        /// The file.
        file: String,
        /// The first missing column.
        missing: String,
        /// The required columns.
        expected: String,
    },
    /// A data row is malformed.
    #[error("{file} line {line}: {reason}")]
    Row {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file has no data rows.
    #[error("{file} has no data rows")]
    Empty {
        /// The file.
        file: String,
    },
}

/// Reads a whole gzip member as UTF-8.
pub(crate) fn gunzip_utf8(bytes: &[u8], source: &str) -> Result<String, DataError> {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .map_err(|e| DataError::Decode { file: source.to_owned(), reason: e.to_string() })?;
    Ok(out)
}

/// Positions of the `required` columns in a tab-separated header (any order).
pub(crate) fn header_columns<const N: usize>(header: &str, required: &[&str; N], source: &str) -> Result<[usize; N], DataError> {
    let names: Vec<String> = header.split('\t').map(|h| h.trim().to_ascii_lowercase()).collect();
    let mut out = [0usize; N];
    for (slot, want) in out.iter_mut().zip(required) {
        *slot = names.iter().position(|n| n == want).ok_or_else(|| DataError::Header {
            file: source.to_owned(),
            missing: (*want).to_owned(),
            expected: required.join(", "),
        })?;
    }
    Ok(out)
}
