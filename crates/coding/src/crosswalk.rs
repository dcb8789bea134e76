//! The SNOMED CT → ICD-10-CM crosswalk: the reference table the product ships, or a
//! user's licensed map in the same columns.
//!
//! Columns (tab-separated, one header row, any order, extra columns ignored):
//! `snomed_code`, `snomed_display`, `icd10cm_code` (dotted or not, or `NONE`),
//! `icd10cm_title`, `confidence` (`high`, `medium`, `low`), `note`. A concept may have
//! several rows; they are kept in file order, the first being the preferred target.

use crate::DataError;
use crate::codeset::{CodeSet, normalize_code};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

/// The embedded crosswalk (`data/snomed-icd10cm-crosswalk.tsv.gz`).
const CROSSWALK_GZ: &[u8] = include_bytes!("../../../data/snomed-icd10cm-crosswalk.tsv.gz");

/// How sure the crosswalk's author was of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapConfidence {
    /// No good equivalent (residual codes, every `NONE`).
    Low,
    /// A reasonable choice where another code could be argued.
    Medium,
    /// A direct, unambiguous match.
    High,
}

impl MapConfidence {
    /// `high`, `medium` or `low`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MapConfidence::High => "high",
            MapConfidence::Medium => "medium",
            MapConfidence::Low => "low",
        }
    }
}

/// One row of the crosswalk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrosswalkRow {
    /// SNOMED CT concept id.
    pub snomed_code: String,
    /// The concept's display.
    pub snomed_display: String,
    /// The ICD-10-CM target as written in the file (dotted), or `None` for a `NONE` row
    /// (the concept has no ICD-10-CM equivalent).
    pub icd10cm_code: Option<String>,
    /// The target's title as written in the file.
    pub icd10cm_title: String,
    /// The author's confidence.
    pub confidence: MapConfidence,
    /// The author's note (assumptions, the code to use with more documentation).
    pub note: String,
}

/// A SNOMED CT → ICD-10-CM map, looked up by concept id.
#[derive(Clone, Debug)]
pub struct Crosswalk {
    rows: Vec<CrosswalkRow>,
    by_snomed: HashMap<String, Vec<usize>>,
    source: String,
}

static EMBEDDED: LazyLock<Result<Arc<Crosswalk>, DataError>> = LazyLock::new(|| {
    let text = crate::gunzip_utf8(CROSSWALK_GZ, "snomed-icd10cm-crosswalk.tsv.gz")?;
    Crosswalk::parse_tsv(&text, "snomed-icd10cm-crosswalk.tsv.gz").map(Arc::new)
});

/// Something in a crosswalk that disagrees with the code set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrosswalkIssue {
    /// The SNOMED CT concept of the row.
    pub snomed_code: String,
    /// The ICD-10-CM code of the row.
    pub icd10cm_code: String,
    /// What is wrong.
    pub problem: String,
}

impl Crosswalk {
    /// The reference table shipped with the product, parsed on first use.
    pub fn embedded() -> Result<Arc<Crosswalk>, DataError> {
        EMBEDDED.as_ref().map(Arc::clone).map_err(Clone::clone)
    }

    /// Loads a user's map from a TSV file (plain or `.gz`) with the same columns.
    pub fn load(path: &Path) -> Result<Crosswalk, DataError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| DataError::Io { path: name.clone(), reason: e.kind().to_string() })?;
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            crate::gunzip_utf8(&bytes, &name)?
        } else {
            String::from_utf8(bytes).map_err(|_| DataError::Decode { file: name.clone(), reason: "the file is not UTF-8".into() })?
        };
        Crosswalk::parse_tsv(&text, &name)
    }

    /// Parses crosswalk TSV text; `source` names it in errors and in [`Crosswalk::source`].
    pub fn parse_tsv(text: &str, source: &str) -> Result<Crosswalk, DataError> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, h)| h.trim_start_matches('\u{feff}')).unwrap_or_default();
        let cols = crate::header_columns(header, &["snomed_code", "snomed_display", "icd10cm_code", "icd10cm_title", "confidence", "note"], source)?;
        let mut rows = Vec::new();
        let mut by_snomed: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let row_err = |reason: &str| DataError::Row { file: source.to_owned(), line: i + 1, reason: reason.to_owned() };
            let f: Vec<&str> = line.split('\t').collect();
            let field = |k: usize| f.get(cols[k]).copied().unwrap_or_default().trim();
            let snomed = field(0);
            if snomed.is_empty() || !snomed.bytes().all(|b| b.is_ascii_digit()) || snomed.len() > 18 {
                return Err(row_err("snomed_code is not a SNOMED CT concept id (6 to 18 digits)"));
            }
            let code = field(2);
            let icd = if code.eq_ignore_ascii_case("NONE") {
                None
            } else if code.is_empty() {
                return Err(row_err("icd10cm_code is empty; write NONE when there is no ICD-10-CM equivalent"));
            } else {
                let n = normalize_code(code);
                if n.len() < 3 || n.len() > 7 || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(row_err("icd10cm_code is not an ICD-10-CM code (3 to 7 letters and digits) or NONE"));
                }
                Some(crate::codeset::dotted_form(&n))
            };
            let confidence = match field(4).to_ascii_lowercase().as_str() {
                "high" => MapConfidence::High,
                "medium" => MapConfidence::Medium,
                "low" => MapConfidence::Low,
                _ => return Err(row_err("confidence is not high, medium or low")),
            };
            by_snomed.entry(snomed.to_owned()).or_default().push(rows.len());
            rows.push(CrosswalkRow {
                snomed_code: snomed.to_owned(),
                snomed_display: field(1).to_owned(),
                icd10cm_code: icd,
                icd10cm_title: field(3).to_owned(),
                confidence,
                note: field(5).to_owned(),
            });
        }
        if rows.is_empty() {
            return Err(DataError::Empty { file: source.to_owned() });
        }
        Ok(Crosswalk { rows, by_snomed, source: source.to_owned() })
    }

    /// The rows for a SNOMED CT concept, preferred first; empty if the map lacks it.
    pub fn lookup(&self, snomed_code: &str) -> impl Iterator<Item = &CrosswalkRow> {
        self.by_snomed.get(snomed_code.trim()).into_iter().flatten().filter_map(|&i| self.rows.get(i))
    }

    /// True if the map has at least one row for the concept.
    pub fn contains(&self, snomed_code: &str) -> bool {
        self.by_snomed.contains_key(snomed_code.trim())
    }

    /// Every row, in file order.
    pub fn rows(&self) -> &[CrosswalkRow] {
        &self.rows
    }

    /// Where the map came from (the file name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The same map without the rows of some concepts (to evaluate the fallback on
    /// concepts held out from the map).
    pub fn without(&self, snomed_codes: &[&str]) -> Crosswalk {
        let rows: Vec<CrosswalkRow> = self.rows.iter().filter(|r| !snomed_codes.contains(&r.snomed_code.as_str())).cloned().collect();
        let mut by_snomed: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_snomed.entry(r.snomed_code.clone()).or_default().push(i);
        }
        Crosswalk { rows, by_snomed, source: format!("{} (held out: {})", self.source, snomed_codes.len()) }
    }

    /// Checks every target against the code set: it must exist and be billable, and the
    /// title, when given, should be the CMS long title.
    pub fn validate(&self, codes: &CodeSet) -> Vec<CrosswalkIssue> {
        let mut issues = Vec::new();
        for r in &self.rows {
            let Some(code) = &r.icd10cm_code else { continue };
            let issue = |problem: String| CrosswalkIssue { snomed_code: r.snomed_code.clone(), icd10cm_code: code.clone(), problem };
            match codes.get(code) {
                None => issues.push(issue("not in the ICD-10-CM code set".into())),
                Some(c) => {
                    if !c.billable {
                        issues.push(issue("a header, not a billable code".into()));
                    }
                    if !r.icd10cm_title.is_empty() && r.icd10cm_title != c.long_title {
                        issues.push(issue(format!("title differs from the CMS long title {:?}", c.long_title)));
                    }
                }
            }
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "snomed_code\tsnomed_display\ticd10cm_code\ticd10cm_title\tconfidence\tnote\n";

    #[test]
    fn embedded_map_matches_its_documented_counts_and_the_code_set() {
        let cw = Crosswalk::embedded().unwrap();
        assert_eq!(cw.rows().len(), 90);
        assert_eq!(cw.rows().iter().filter(|r| r.icd10cm_code.is_none()).count(), 6);
        let coded: Vec<_> = cw.rows().iter().filter(|r| r.icd10cm_code.is_some()).collect();
        assert_eq!(coded.iter().filter(|r| r.confidence == MapConfidence::High).count(), 56);
        assert_eq!(coded.iter().filter(|r| r.confidence == MapConfidence::Medium).count(), 24);
        assert_eq!(coded.iter().filter(|r| r.confidence == MapConfidence::Low).count(), 4);
        assert_eq!(cw.validate(CodeSet::embedded().unwrap()), vec![]);
        let r = cw.lookup("62106007").next().unwrap();
        assert_eq!(r.icd10cm_code.as_deref(), Some("S06.0X0A"));
        assert!(cw.lookup("314529007").next().unwrap().icd10cm_code.is_none());
        assert!(!cw.contains("999999999"));
    }

    #[test]
    fn a_users_map_may_reorder_columns_repeat_concepts_and_be_gzipped() {
        let dir = tempfile::tempdir().unwrap();
        let text = "confidence\tsnomed_code\ticd10cm_code\textra\tsnomed_display\ticd10cm_title\tnote\n\
                    high\t59621000\tI10\tx\tEssential hypertension\tEssential (primary) hypertension\t\n\
                    low\t59621000\tI15.9\tx\tEssential hypertension\t\tsecond choice\n";
        let plain = dir.path().join("map.tsv");
        std::fs::write(&plain, text).unwrap();
        let cw = Crosswalk::load(&plain).unwrap();
        let codes: Vec<_> = cw.lookup("59621000").map(|r| r.icd10cm_code.clone().unwrap()).collect();
        assert_eq!(codes, vec!["I10", "I15.9"]);
        let gz = dir.path().join("map.tsv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(Crosswalk::load(&gz).unwrap().rows().len(), 2);
        let missing = Crosswalk::load(&dir.path().join("nope.tsv")).unwrap_err();
        assert!(matches!(missing, DataError::Io { .. }));
    }

    #[test]
    fn bad_rows_are_refused_with_their_line_and_validation_names_bad_targets() {
        let e = Crosswalk::parse_tsv(&format!("{HEADER}123456\tX\t\t\thigh\t\n"), "m").unwrap_err();
        assert!(matches!(e, DataError::Row { line: 2, ref reason, .. } if reason.contains("NONE")));
        let e = Crosswalk::parse_tsv(&format!("{HEADER}123456\tX\tI10\t\tsure\t\n"), "m").unwrap_err();
        assert!(matches!(e, DataError::Row { line: 2, ref reason, .. } if reason.contains("confidence")));
        let e = Crosswalk::parse_tsv(&format!("{HEADER}12ab\tX\tI10\t\thigh\t\n"), "m").unwrap_err();
        assert!(matches!(e, DataError::Row { line: 2, .. }));
        let cw = Crosswalk::parse_tsv(&format!("{HEADER}1\tA\tE88.81\t\thigh\t\n2\tB\tZ99.999\t\thigh\t\n3\tC\ti10\tHypertension\thigh\t\n"), "m").unwrap();
        let issues = cw.validate(CodeSet::embedded().unwrap());
        let problems: Vec<(&str, &str)> = issues.iter().map(|i| (i.snomed_code.as_str(), i.problem.as_str())).collect();
        assert_eq!(problems[0], ("1", "a header, not a billable code"));
        assert_eq!(problems[1], ("2", "not in the ICD-10-CM code set"));
        assert_eq!(problems[2].0, "3");
        assert!(problems[2].1.starts_with("title differs"));
        assert_eq!(cw.lookup("3").next().unwrap().icd10cm_code.as_deref(), Some("I10"));
    }

    #[test]
    fn without_holds_out_concepts() {
        let cw = Crosswalk::embedded().unwrap();
        let held = cw.without(&["59621000"]);
        assert!(!held.contains("59621000"));
        assert_eq!(held.rows().len(), 89);
        assert!(held.contains("9014002"));
    }
}
