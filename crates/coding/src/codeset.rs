//! The CMS ICD-10-CM code set (FY2025), embedded at build time and parsed once.

use crate::DataError;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The embedded code set file: `code, code_dot, billable, short_name, long_name`.
const ICD10CM_GZ: &[u8] = include_bytes!("../../../data/icd10cm-2025.tsv.gz");

/// One ICD-10-CM code with its titles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcdCode {
    /// The code without the dot, upper case (`S060X0A`).
    pub code: String,
    /// The code with the dot (`S06.0X0A`), as it is written on a worksheet.
    pub dotted: String,
    /// True for a code valid for billing; false for a header (category or subcategory).
    pub billable: bool,
    /// CMS short title.
    pub short_title: String,
    /// CMS long title.
    pub long_title: String,
}

impl IcdCode {
    /// The three-character category (`S06`).
    pub fn category(&self) -> &str {
        self.code.get(..3).unwrap_or(&self.code)
    }
}

/// The ICD-10-CM code set: every code and header, looked up with or without the dot.
#[derive(Debug)]
pub struct CodeSet {
    codes: Vec<IcdCode>,
    by_code: HashMap<String, usize>,
}

static EMBEDDED: LazyLock<Result<CodeSet, DataError>> = LazyLock::new(|| {
    let text = crate::gunzip_utf8(ICD10CM_GZ, "icd10cm-2025.tsv.gz")?;
    CodeSet::parse_tsv(&text, "icd10cm-2025.tsv.gz")
});

/// Normalises a written code for lookup: trims, drops the dot, upper-cases.
pub fn normalize_code(code: &str) -> String {
    code.trim().chars().filter(|c| *c != '.').map(|c| c.to_ascii_uppercase()).collect()
}

impl CodeSet {
    /// The code set shipped with the product (CMS FY2025), parsed on first use.
    pub fn embedded() -> Result<&'static CodeSet, DataError> {
        EMBEDDED.as_ref().map_err(Clone::clone)
    }

    /// Parses a code set TSV with a header naming at least `code`, `code_dot`, `billable`,
    /// `short_name` and `long_name` (in any order). `source` names the file in errors.
    pub fn parse_tsv(text: &str, source: &str) -> Result<CodeSet, DataError> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, h)| h).unwrap_or_default();
        let cols = crate::header_columns(header, &["code", "code_dot", "billable", "short_name", "long_name"], source)?;
        let mut codes = Vec::with_capacity(100_000);
        let mut by_code = HashMap::with_capacity(100_000);
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let field = |k: usize| f.get(cols[k]).copied().unwrap_or_default().trim();
            let code = normalize_code(field(0));
            if code.len() < 3 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(DataError::Row { file: source.to_owned(), line: i + 1, reason: "the code is not 3 to 7 letters and digits".into() });
            }
            let billable = match field(2) {
                "1" => true,
                "0" => false,
                _ => return Err(DataError::Row { file: source.to_owned(), line: i + 1, reason: "billable is not 0 or 1".into() }),
            };
            let dotted = if field(1).is_empty() { dotted_form(&code) } else { field(1).to_owned() };
            if by_code.insert(code.clone(), codes.len()).is_some() {
                return Err(DataError::Row { file: source.to_owned(), line: i + 1, reason: format!("code {code} appears twice") });
            }
            codes.push(IcdCode { code, dotted, billable, short_title: field(3).to_owned(), long_title: field(4).to_owned() });
        }
        if codes.is_empty() {
            return Err(DataError::Empty { file: source.to_owned() });
        }
        Ok(CodeSet { codes, by_code })
    }

    /// Looks a code up, written with or without the dot, in any case.
    pub fn get(&self, code: &str) -> Option<&IcdCode> {
        self.by_code.get(&normalize_code(code)).and_then(|&i| self.codes.get(i))
    }

    /// The code at a position of [`CodeSet::iter`] (the order of the file).
    pub fn at(&self, index: usize) -> Option<&IcdCode> {
        self.codes.get(index)
    }

    /// Every code and header, in the order of the file.
    pub fn iter(&self) -> impl Iterator<Item = &IcdCode> {
        self.codes.iter()
    }

    /// How many codes and headers there are.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// True if the set holds nothing (never for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

/// `S060X0A` → `S06.0X0A`; codes of three characters have no dot.
pub fn dotted_form(code: &str) -> String {
    match (code.get(..3), code.get(3..)) {
        (Some(head), Some(tail)) if !tail.is_empty() => format!("{head}.{tail}"),
        _ => code.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_set_has_the_cms_counts_and_lookups_ignore_the_dot() {
        let set = CodeSet::embedded().unwrap();
        assert_eq!(set.len(), 97_584);
        assert_eq!(set.iter().filter(|c| c.billable).count(), 74_260);
        let c = set.get("s06.0x0a").unwrap();
        assert_eq!(c.dotted, "S06.0X0A");
        assert!(c.billable);
        assert_eq!(c.long_title, "Concussion without loss of consciousness, initial encounter");
        assert_eq!(set.get("S060X0A").unwrap().code, "S060X0A");
        assert!(!set.get("E88.81").unwrap().billable, "E88.81 became a header in FY2025");
        assert!(set.get("E88.810").unwrap().billable);
        assert_eq!(set.get("I10").unwrap().category(), "I10");
        assert!(set.get("Z99.999").is_none());
    }

    #[test]
    fn parse_refuses_bad_rows_with_their_line() {
        let h = "code\tcode_dot\tbillable\tshort_name\tlong_name\n";
        let e = CodeSet::parse_tsv(&format!("{h}A00\tA00\t0\tx\tCholera\nA000\tA00.0\tyes\tx\ty\n"), "t.tsv").unwrap_err();
        assert_eq!(e, DataError::Row { file: "t.tsv".into(), line: 3, reason: "billable is not 0 or 1".into() });
        let e = CodeSet::parse_tsv("code\tbillable\n", "t.tsv").unwrap_err();
        assert!(matches!(e, DataError::Header { ref missing, .. } if missing == "code_dot"), "{e:?}");
        assert_eq!(CodeSet::parse_tsv(h, "t.tsv").unwrap_err(), DataError::Empty { file: "t.tsv".into() });
        let e = CodeSet::parse_tsv(&format!("{h}A00\t\t0\tx\tCholera\nA00\t\t0\tx\tCholera\n"), "t.tsv").unwrap_err();
        assert!(matches!(e, DataError::Row { line: 3, .. }));
        let ok = CodeSet::parse_tsv(&format!("{h}A000\t\t1\tx\tCholera due to Vibrio\n"), "t.tsv").unwrap();
        assert_eq!(ok.get("A00.0").unwrap().dotted, "A00.0", "a missing dotted form is derived");
    }
}
