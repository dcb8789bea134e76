//! Requested scope sets (the auth manager's cache key) and granted scopes.
//!
//! A [`ScopeSet`] keeps the order the scopes were configured in (that is the order sent
//! in the `scope` parameter) but compares and hashes as a set, so
//! `"a b"` and `"b a"` share one cached token. [`GrantedScopes`] is what the token
//! response says was granted, normalised to SMART strings: Epic returns its own style
//! (`Patient.read Patient.search`), which maps to SMART v2 (`system/Patient.r`,
//! `system/Patient.s`). Judging scopes (grammar, matching) is the policy layer's job;
//! this module only stores them.

use serde::Serialize;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A set of requested scopes: configured order kept, compared as a set.
#[derive(Clone)]
pub struct ScopeSet {
    ordered: Arc<[String]>,
    key: Arc<str>,
}

/// A scope token that RFC 6749 §3.3 does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {0:?} is not a valid scope token: scopes are printable ASCII without spaces, quotes or backslashes")]
pub struct BadScope(pub String);

fn valid_token(s: &str) -> bool {
    // scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl ScopeSet {
    /// A set from individual scope tokens (duplicates dropped, first position kept).
    pub fn new<I, S>(scopes: I) -> Result<Self, BadScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut ordered: Vec<String> = Vec::new();
        for s in scopes {
            let s = s.as_ref();
            if !valid_token(s) {
                return Err(BadScope(s.chars().take(80).collect()));
            }
            if !ordered.iter().any(|o| o == s) {
                ordered.push(s.to_owned());
            }
        }
        let mut sorted: Vec<&str> = ordered.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let key: Arc<str> = Arc::from(sorted.join(" "));
        Ok(ScopeSet { ordered: Arc::from(ordered), key })
    }

    /// A set from a space-separated scope string (empty tokens dropped).
    pub fn parse(s: &str) -> Result<Self, BadScope> {
        Self::new(s.split(' ').filter(|t| !t.is_empty()))
    }

    /// The empty set.
    pub fn empty() -> Self {
        ScopeSet { ordered: Arc::from(Vec::new()), key: Arc::from("") }
    }

    /// The scopes in configured order.
    pub fn as_slice(&self) -> &[String] {
        &self.ordered
    }

    /// The `scope` parameter value: the scopes joined by single spaces, in configured order.
    pub fn to_param(&self) -> String {
        self.ordered.join(" ")
    }

    /// The canonical (sorted) form used as the cache key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether there are no scopes.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}

impl PartialEq for ScopeSet {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for ScopeSet {}
impl Hash for ScopeSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ordered.iter()).finish()
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ordered.serialize(s)
    }
}

/// Where a token's granted scopes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantSource {
    /// The token response's `scope`.
    Response,
    /// No `scope` in the response: taken to equal the requested scopes (RFC 6749 §5.1).
    AssumedRequested,
    /// No `scope` in the response and none was sent (Epic): the connection's configured scopes.
    AssumedConfigured,
}

/// The scopes a token grants, as SMART strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GrantedScopes {
    /// The granted scopes; Epic-style ones mapped to SMART v2 (`system/Patient.r`).
    pub scopes: Vec<String>,
    /// The response's `scope` exactly as returned, when there was one.
    pub as_returned: Option<String>,
    /// Where `scopes` came from.
    pub source: GrantSource,
}

impl GrantedScopes {
    /// Granted scopes from a response's `scope` string: split on spaces, Epic-style
    /// tokens mapped to SMART v2, everything else kept as given (the policy layer judges it).
    pub fn from_response(scope: &str) -> Self {
        let mut scopes: Vec<String> = Vec::new();
        for token in scope.split(' ').filter(|t| !t.is_empty()) {
            let s = map_epic_scope(token).unwrap_or_else(|| token.to_owned());
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        GrantedScopes { scopes, as_returned: Some(scope.to_owned()), source: GrantSource::Response }
    }

    /// Granted scopes assumed when the response has no `scope`.
    pub fn assumed(scopes: &ScopeSet, source: GrantSource) -> Self {
        GrantedScopes { scopes: scopes.as_slice().to_vec(), as_returned: None, source }
    }
}

/// Maps an Epic-style scope (`Patient.read`, `Observation.search`) to the SMART v2 system
/// scope it grants (`system/Patient.r`, `system/Observation.s`). `None` for anything else.
pub fn map_epic_scope(token: &str) -> Option<String> {
    let (rtype, action) = token.split_once('.')?;
    let mut chars = rtype.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() || !chars.all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let letter = match action {
        "read" | "Read" => 'r',
        "search" | "Search" => 's',
        "create" | "Create" => 'c',
        "update" | "Update" => 'u',
        "delete" | "Delete" => 'd',
        _ => return None,
    };
    Some(format!("system/{rtype}.{letter}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_compare_by_content_and_keep_order() {
        let a = ScopeSet::new(["system/Patient.read", "system/Observation.read", "system/Patient.read"]).unwrap();
        let b = ScopeSet::parse("system/Observation.read  system/Patient.read").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_param(), "system/Patient.read system/Observation.read");
        assert_eq!(b.to_param(), "system/Observation.read system/Patient.read");
        assert_eq!(a.key(), "system/Observation.read system/Patient.read");
        assert_ne!(a, ScopeSet::parse("system/Patient.read").unwrap());
        assert!(ScopeSet::empty().is_empty());
    }

    #[test]
    fn bad_scope_tokens_are_refused() {
        for bad in ["a b", "a\tb", "quo\"te", "back\\slash", ""] {
            assert!(ScopeSet::new([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn epic_style_scopes_map_to_v2() {
        let g = GrantedScopes::from_response("Patient.read Patient.search Observation.search system/Condition.rs openid");
        assert_eq!(g.scopes, vec!["system/Patient.r", "system/Patient.s", "system/Observation.s", "system/Condition.rs", "openid"]);
        assert_eq!(g.source, GrantSource::Response);
        assert_eq!(g.as_returned.as_deref(), Some("Patient.read Patient.search Observation.search system/Condition.rs openid"));
        assert_eq!(map_epic_scope("AllergyIntolerance.read").as_deref(), Some("system/AllergyIntolerance.r"));
        assert_eq!(map_epic_scope("system/Patient.read"), None);
        assert_eq!(map_epic_scope("patient.read"), None);
        assert_eq!(map_epic_scope("Patient.rs"), None);
    }
}
