//! Search requests: parsing the query into filters, and running them over a side's data.
//!
//! Supported: `_id`; the patient parameters (`patient`, `subject`, `beneficiary` as the
//! type has them; `Patient/x`, bare `x` or an absolute `…/Patient/x`); the type's token,
//! date, reference and string parameters from [`crate::index`]; comma-separated values
//! (OR) and repeated parameters (AND); `_count`; and the paging parameters. Anything
//! else is reported back as ignored so the vendor layer can decide what to do with it
//! (Epic adds an OperationOutcome entry, eClinicalWorks stays silent).

use crate::data::{Record, Side, TypeData};
use crate::date::DateFilter;
use crate::index::{IndexValue, Kind, patient_link, specs};
use crate::vendor::{ResourceType, TypeIndex};

/// Control parameters that are recognised but do not filter.
const IGNORED_QUIETLY: &[&str] = &["_format"];

/// The parameter carrying Epic's opaque paging token.
pub(crate) const EPIC_PAGE_PARAM: &str = "sessionID";
/// The parameter carrying eClinicalWorks' page number.
pub(crate) const ECW_PAGE_PARAM: &str = "page";

/// One value a filter accepts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FilterValue {
    /// `code`, `system|code`, `|code` (no system) or `system|` (any code).
    Token { system: Option<Option<String>>, code: Option<String> },
    Date(DateFilter),
    /// A reference as `Type/id`, or a bare id (matches any type).
    Ref(String),
    /// Lower-cased prefix.
    Str(String),
}

/// One parameter's condition: any of its values matches.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Filter {
    pub spec: u8,
    pub name: String,
    pub values: Vec<FilterValue>,
}

/// A parsed search.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SearchRequest {
    /// `_id` values (each repetition ANDed, values ORed).
    pub ids: Vec<Vec<String>>,
    /// Patient ids (each repetition ANDed, values ORed).
    pub patients: Vec<Vec<String>>,
    pub filters: Vec<Filter>,
    pub count: Option<usize>,
    /// eClinicalWorks `page` (1-based).
    pub page: Option<usize>,
    /// Epic opaque paging token.
    pub page_token: Option<String>,
    /// Names of parameters that were not understood and were ignored.
    pub ignored: Vec<String>,
}

impl SearchRequest {
    /// The filters whose parameter is `name` (canonical name).
    pub fn filters_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Filter> + 'a {
        self.filters.iter().filter(move |f| f.name == name)
    }
}

/// A search parameter value that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for search parameter {param}: {reason}")]
pub(crate) struct SearchError {
    pub param: String,
    pub reason: &'static str,
}

fn bad(param: &str, reason: &'static str) -> SearchError {
    SearchError { param: param.chars().take(64).collect(), reason }
}

/// Splits a parameter value on unescaped commas (`\,` is a literal comma).
fn split_values(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The patient id named by a reference parameter value, or `None` if it names another type.
fn patient_id(value: &str) -> Option<String> {
    let v = value.trim_end_matches('/');
    match v.rsplit_once('/') {
        None => Some(v.to_owned()),
        Some((head, id)) => {
            let ty = head.rsplit('/').next().unwrap_or(head);
            (ty == "Patient").then(|| id.to_owned())
        }
    }
}

fn parse_token(v: &str) -> FilterValue {
    match v.split_once('|') {
        None => FilterValue::Token { system: None, code: Some(v.to_owned()) },
        Some(("", code)) => FilterValue::Token { system: Some(None), code: Some(code.to_owned()) },
        Some((sys, "")) => FilterValue::Token { system: Some(Some(sys.to_owned())), code: None },
        Some((sys, code)) => FilterValue::Token { system: Some(Some(sys.to_owned())), code: Some(code.to_owned()) },
    }
}

/// Parses the query pairs of a search on `rtype`.
pub(crate) fn parse(rtype: ResourceType, pairs: &[(String, String)]) -> Result<SearchRequest, SearchError> {
    let mut req = SearchRequest::default();
    let type_specs = specs(rtype);
    let patient_names = patient_link(rtype).map_or(&[][..], |(_, names)| names);
    for (raw_name, value) in pairs {
        let (name, modifier) = match raw_name.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (raw_name.as_str(), None),
        };
        match name {
            "_count" if modifier.is_none() => {
                let n = value.trim().parse::<usize>().map_err(|_| bad(name, "expected a non-negative integer"))?;
                req.count = Some(n);
                continue;
            }
            ECW_PAGE_PARAM if modifier.is_none() => {
                let n = value.trim().parse::<usize>().map_err(|_| bad(name, "expected a page number from 1"))?;
                if n == 0 {
                    return Err(bad(name, "expected a page number from 1"));
                }
                req.page = Some(n);
                continue;
            }
            EPIC_PAGE_PARAM if modifier.is_none() => {
                req.page_token = Some(value.clone());
                continue;
            }
            "_id" if modifier.is_none() => {
                req.ids.push(split_values(value));
                continue;
            }
            n if IGNORED_QUIETLY.contains(&n) => continue,
            _ => {}
        }
        if value.is_empty() {
            return Err(bad(name, "empty value"));
        }
        if patient_names.contains(&name) && matches!(modifier, None | Some("Patient")) {
            let ids: Vec<String> = split_values(value).iter().map(|v| patient_id(v).unwrap_or_default()).collect();
            req.patients.push(ids);
            continue;
        }
        let Some((idx, spec)) = type_specs.iter().enumerate().find(|(_, s)| s.names.contains(&name)) else {
            req.ignored.push(raw_name.chars().take(64).collect());
            continue;
        };
        let modifier_ok = match (spec.kind, modifier) {
            (_, None) => true,
            (Kind::Str, Some("exact" | "contains")) => true,
            (Kind::Reference, Some(m)) => m.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
            _ => false,
        };
        if !modifier_ok {
            req.ignored.push(raw_name.chars().take(64).collect());
            continue;
        }
        let mut values = Vec::new();
        for v in split_values(value) {
            if v.is_empty() {
                return Err(bad(name, "empty value in a comma-separated list"));
            }
            values.push(match spec.kind {
                Kind::Token => parse_token(&v),
                Kind::Date => FilterValue::Date(DateFilter::parse(&v).ok_or_else(|| bad(name, "expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|±hh:mm]]]]"))?),
                Kind::Reference => FilterValue::Ref(v.trim_end_matches('/').rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/")),
                Kind::Str => FilterValue::Str(v.to_lowercase()),
            });
        }
        let Ok(spec_idx) = u8::try_from(idx) else { continue };
        req.filters.push(Filter { spec: spec_idx, name: spec.names.first().copied().unwrap_or(name).to_owned(), values });
    }
    Ok(req)
}

fn value_matches(fv: &FilterValue, iv: &IndexValue) -> bool {
    match (fv, iv) {
        (FilterValue::Token { system, code }, IndexValue::Token { system: isys, code: icode }) => {
            let sys_ok = match system {
                None => true,
                Some(None) => isys.is_none(),
                Some(Some(s)) => isys.as_deref() == Some(s.as_str()),
            };
            sys_ok && code.as_deref().is_none_or(|c| c == &**icode)
        }
        (FilterValue::Date(df), IndexValue::Date(r)) => df.matches(*r),
        (FilterValue::Ref(want), IndexValue::Ref(have)) => {
            if want.contains('/') {
                **have == **want
            } else {
                have.rsplit('/').next() == Some(want.as_str())
            }
        }
        (FilterValue::Str(prefix), IndexValue::Str(s)) => s.starts_with(prefix.as_str()),
        _ => false,
    }
}

/// Whether one record satisfies every condition of `req` (paging parameters aside).
pub(crate) fn matches(rec: &Record, req: &SearchRequest) -> bool {
    req.ids.iter().all(|ids| ids.iter().any(|id| **id == *rec.id))
        && req.patients.iter().all(|ps| rec.patient.as_deref().is_some_and(|p| ps.iter().any(|x| x == p)))
        && req.filters.iter().all(|f| rec.index.iter().filter(|(i, _)| *i == f.spec).any(|(_, iv)| f.values.iter().any(|fv| value_matches(fv, iv))))
}

/// Runs `req` over one type of a side, giving matching positions in load order.
pub(crate) fn run(side: &Side, rtype: ResourceType, req: &SearchRequest) -> Vec<u32> {
    let td: &TypeData = &side.types[rtype.index()];
    let candidates: Vec<u32> = match req.patients.first() {
        Some(first) => {
            let mut c: Vec<u32> = if rtype == ResourceType::Patient {
                Vec::new()
            } else {
                first.iter().filter_map(|p| td.by_patient.get(p.as_str())).flatten().copied().collect()
            };
            c.sort_unstable();
            c.dedup();
            c
        }
        None => (0..u32::try_from(td.records.len()).unwrap_or(u32::MAX)).collect(),
    };
    candidates.into_iter().filter(|&pos| td.records.get(pos as usize).is_some_and(|rec| matches(rec, req))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn patient_parameter_forms() {
        for v in ["Patient/p1", "p1", "http://h/epic/api/FHIR/R4/Patient/p1"] {
            let r = parse(ResourceType::Observation, &pairs(&[("patient", v)])).unwrap();
            assert_eq!(r.patients, vec![vec!["p1".to_owned()]], "{v}");
        }
        let r = parse(ResourceType::Observation, &pairs(&[("subject", "Group/g1")])).unwrap();
        assert_eq!(r.patients, vec![vec![String::new()]], "another type selects nothing");
        let r = parse(ResourceType::Coverage, &pairs(&[("beneficiary", "Patient/p2")])).unwrap();
        assert_eq!(r.patients, vec![vec!["p2".to_owned()]]);
        let r = parse(ResourceType::Immunization, &pairs(&[("subject", "p2")])).unwrap();
        assert_eq!(r.ignored, vec!["subject".to_owned()], "Immunization has no subject parameter");
    }

    #[test]
    fn tokens_dates_and_unknowns() {
        let r = parse(
            ResourceType::Observation,
            &pairs(&[("code", "http://loinc.org|8867-4,|x,sys|"), ("date", "ge2020-01-01"), ("datee", "2020"), ("_include", "Observation:subject"), ("_count", "10")]),
        )
        .unwrap();
        assert_eq!(r.count, Some(10));
        assert_eq!(r.ignored, vec!["datee".to_owned(), "_include".to_owned()]);
        assert_eq!(
            r.filters[0].values,
            vec![
                FilterValue::Token { system: Some(Some("http://loinc.org".into())), code: Some("8867-4".into()) },
                FilterValue::Token { system: Some(None), code: Some("x".into()) },
                FilterValue::Token { system: Some(Some("sys".into())), code: None },
            ]
        );
        assert!(parse(ResourceType::Observation, &pairs(&[("date", "yesterday")])).is_err());
        assert!(parse(ResourceType::Observation, &pairs(&[("_count", "-1")])).is_err());
        assert!(parse(ResourceType::Observation, &pairs(&[("page", "0")])).is_err());
        assert!(parse(ResourceType::Observation, &pairs(&[("code", "")])).is_err());
        let r = parse(ResourceType::Observation, &pairs(&[("code:text", "heart")])).unwrap();
        assert_eq!(r.ignored, vec!["code:text".to_owned()], "unsupported modifiers are ignored, not guessed");
    }

    #[test]
    fn escaped_commas_stay_in_the_value() {
        assert_eq!(split_values(r"a\,b,c"), vec!["a,b".to_owned(), "c".to_owned()]);
        assert_eq!(split_values("x"), vec!["x".to_owned()]);
        assert_eq!(split_values(r"trailing\"), vec![r"trailing\".to_owned()]);
    }

    proptest::proptest! {
        #[test]
        fn any_parameters_parse_or_are_refused_without_panicking(
            pairs in proptest::collection::vec(("[a-z_:-]{0,12}", "\\PC{0,40}"), 0..6),
            t in 0usize..11,
        ) {
            let rtype = ResourceType::ALL[t];
            if let Ok(req) = parse(rtype, &pairs) {
                let data = crate::data::Dataset::embedded().expect("dataset");
                let _ = run(data.side(crate::vendor::Vendor::EClinicalWorks), rtype, &req);
            }
        }
    }
}
