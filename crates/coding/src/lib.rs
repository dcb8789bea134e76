//! The reference coding agent: coding worksheets from signed tool calls only.
//!
//! (Crate documentation is completed below once every module exists.)

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
pub use worksheet::{Band, Diagnosis, Flag, FlagKind, Source, Suggestion, Worksheet, build_worksheet, build_worksheet_with};

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
