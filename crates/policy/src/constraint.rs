//! Query constraints of SMART v2 scopes (`system/Observation.rs?category=…`) and their algebra.
//!
//! A [`Grant`] is `None`, `Full`, or `Constrained(alternatives)`: an OR of AND-sets of
//! `name=value` pairs. Within one party several scopes are a union (scope.rs); across
//! parties grants intersect: `(a1 ∨ a2) ∧ (b1 ∨ b2) = (a1∧b1) ∨ (a1∧b2) ∨ (a2∧b1) ∨ (a2∧b2)`.
//! [`normalize`] makes the result independent of scope order: values are percent-decoded,
//! each AND-set is sorted and deduplicated, the alternatives are sorted and deduplicated,
//! and an alternative that contains another one is dropped (`A ∨ (A∧B) = A`).
//!
//! Values use FHIR search syntax: a comma separates alternatives (`\,` is a literal
//! comma); token values are `system|code`, `code`, `|code` (no system) or `system|`
//! (any code of the system).

use crate::scope::Grant;

/// The most alternatives an intersection may have before it is refused as too complex.
pub const MAX_ALTERNATIVES: usize = 16;

/// One AND-set of constraint pairs.
pub type Conjunction = Vec<(String, String)>;

/// The intersection has more than [`MAX_ALTERNATIVES`] alternatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooComplex;

fn decode(v: &str) -> String {
    if !v.contains('%') {
        return v.to_owned();
    }
    match percent_encoding::percent_decode_str(v).decode_utf8() {
        Ok(d) if !d.chars().any(char::is_control) => d.into_owned(),
        _ => v.to_owned(),
    }
}

/// Puts a grant in canonical form (see the module documentation).
pub fn normalize(g: &Grant) -> Grant {
    match g {
        Grant::None => Grant::None,
        Grant::Full => Grant::Full,
        Grant::Constrained(alts) => {
            let mut out: Vec<Conjunction> = Vec::new();
            for alt in alts {
                let mut c: Conjunction = alt.iter().map(|(k, v)| (k.clone(), decode(v))).collect();
                c.sort();
                c.dedup();
                if c.is_empty() {
                    return Grant::Full;
                }
                out.push(c);
            }
            out.sort();
            out.dedup();
            let kept: Vec<Conjunction> = out
                .iter()
                .filter(|c| !out.iter().any(|o| o != *c && o.iter().all(|p| c.contains(p))))
                .cloned()
                .collect();
            Grant::Constrained(kept)
        }
    }
}

/// The intersection of two grants, normalised.
pub fn intersect(a: &Grant, b: &Grant) -> Result<Grant, TooComplex> {
    match (a, b) {
        (Grant::None, _) | (_, Grant::None) => Ok(Grant::None),
        (Grant::Full, x) | (x, Grant::Full) => Ok(normalize(x)),
        (Grant::Constrained(xa), Grant::Constrained(xb)) => {
            if xa.len().saturating_mul(xb.len()) > MAX_ALTERNATIVES * MAX_ALTERNATIVES {
                return Err(TooComplex);
            }
            let mut alts = Vec::new();
            for p in xa {
                for q in xb {
                    let mut c = p.clone();
                    c.extend(q.iter().cloned());
                    alts.push(c);
                }
            }
            let n = normalize(&Grant::Constrained(alts));
            match &n {
                Grant::Constrained(c) if c.len() > MAX_ALTERNATIVES => Err(TooComplex),
                _ => Ok(n),
            }
        }
    }
}

/// Splits a search value into its comma-separated alternatives (`\,` stays a comma).
pub fn alternatives(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The system part of a token value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSystem {
    /// `code`: any system (or none).
    Any,
    /// `|code`: explicitly no system.
    NoSystem,
    /// `system|…`.
    Is(String),
}

/// A parsed token value: `system|code`, `code`, `|code` or `system|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The system part.
    pub system: TokenSystem,
    /// The code, or `None` for `system|` (any code of that system).
    pub code: Option<String>,
}

impl Token {
    /// Parses one token alternative; `None` for the meaningless `|` or an empty value.
    pub fn parse(s: &str) -> Option<Token> {
        match s.split_once('|') {
            None if s.is_empty() => None,
            None => Some(Token { system: TokenSystem::Any, code: Some(s.to_owned()) }),
            Some(("", "")) => None,
            Some(("", c)) => Some(Token { system: TokenSystem::NoSystem, code: Some(c.to_owned()) }),
            Some((sys, "")) => Some(Token { system: TokenSystem::Is(sys.to_owned()), code: None }),
            Some((sys, c)) => Some(Token { system: TokenSystem::Is(sys.to_owned()), code: Some(c.to_owned()) }),
        }
    }

    /// Whether everything `self` selects is also selected by `outer`.
    pub fn within(&self, outer: &Token) -> bool {
        let system_ok = match &outer.system {
            TokenSystem::Any => true,
            s => *s == self.system,
        };
        let code_ok = match &outer.code {
            None => true,
            Some(c) => self.code.as_ref() == Some(c),
        };
        system_ok && code_ok
    }

    /// Whether a coded value with `system` (if any) and `code` matches this token.
    pub fn matches_coding(&self, system: Option<&str>, code: Option<&str>) -> bool {
        let system_ok = match &self.system {
            TokenSystem::Any => true,
            TokenSystem::NoSystem => system.is_none(),
            TokenSystem::Is(s) => system == Some(s.as_str()),
        };
        let code_ok = match &self.code {
            None => true,
            Some(c) => code == Some(c.as_str()),
        };
        system_ok && code_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pairs: &[(&str, &str)]) -> Conjunction {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn normalisation_is_order_independent_and_absorbs() {
        let a = Grant::Constrained(vec![c(&[("category", "lab")]), c(&[("category", "vital-signs")]), c(&[("status", "final"), ("category", "lab")])]);
        let b = Grant::Constrained(vec![c(&[("category", "vital-signs")]), c(&[("category", "lab")])]);
        assert_eq!(normalize(&a), normalize(&b));
        assert_eq!(normalize(&a), Grant::Constrained(vec![c(&[("category", "lab")]), c(&[("category", "vital-signs")])]));
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        let g = Grant::Constrained(vec![c(&[("category", "http://x.example/cs%7Claboratory")])]);
        assert_eq!(normalize(&g), Grant::Constrained(vec![c(&[("category", "http://x.example/cs|laboratory")])]));
        let bad = Grant::Constrained(vec![c(&[("category", "a%0Ab")])]);
        assert_eq!(normalize(&bad), bad, "a decoded control character keeps the raw value");
    }

    #[test]
    fn intersection_is_the_cross_product() {
        let a = Grant::Constrained(vec![c(&[("category", "lab")]), c(&[("category", "vital-signs")])]);
        let b = Grant::Constrained(vec![c(&[("status", "final")])]);
        assert_eq!(
            intersect(&a, &b),
            Ok(Grant::Constrained(vec![c(&[("category", "lab"), ("status", "final")]), c(&[("category", "vital-signs"), ("status", "final")])]))
        );
        assert_eq!(intersect(&a, &Grant::Full), Ok(normalize(&a)));
        assert_eq!(intersect(&Grant::None, &Grant::Full), Ok(Grant::None));
        assert_eq!(intersect(&Grant::Full, &Grant::Full), Ok(Grant::Full));
        let many = Grant::Constrained((0..5).map(|i| c(&[("code", &i.to_string())])).collect());
        let many2 = Grant::Constrained((0..5).map(|i| c(&[("status", &i.to_string())])).collect());
        assert_eq!(intersect(&many, &many2), Err(TooComplex));
    }

    #[test]
    fn alternatives_split_on_unescaped_commas() {
        assert_eq!(alternatives("a,b\\,c,"), vec!["a", "b,c", ""]);
        assert_eq!(alternatives("x"), vec!["x"]);
    }

    #[test]
    fn token_forms_and_containment() {
        let sc = Token::parse("http://s|c").unwrap();
        let any = Token::parse("c").unwrap();
        let none = Token::parse("|c").unwrap();
        let sys = Token::parse("http://s|").unwrap();
        assert_eq!(Token::parse("|"), None);
        assert!(sc.within(&any) && sc.within(&sys) && sc.within(&sc));
        assert!(!any.within(&sc), "a bare code is broader than system|code");
        assert!(!none.within(&sc) && none.within(&any));
        assert!(!sys.within(&sc));
        assert!(sc.matches_coding(Some("http://s"), Some("c")));
        assert!(!sc.matches_coding(None, Some("c")));
        assert!(any.matches_coding(None, Some("c")) && any.matches_coding(Some("x"), Some("c")));
        assert!(none.matches_coding(None, Some("c")) && !none.matches_coding(Some("x"), Some("c")));
        assert!(sys.matches_coding(Some("http://s"), Some("zzz")) && !sys.matches_coding(Some("http://t"), Some("c")));
    }
}
