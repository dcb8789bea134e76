//! The claims of a signed tool call (DESIGN.md §3.1).
//!
//! A call is a compact JWS with header `typ` [`CALL_TYP`]. Its payload deserialises into
//! [`CallClaims`]. Deserialisation is strict where a lenient reading would be a hole:
//! unknown claims are refused, `exp`/`iat`/`nbf` must be JSON numbers within a sane range
//! (a string `exp` is refused; a fractional one is accepted and rounded down), and `aud`
//! may be a string or an array of strings. Time-window and replay rules are applied by
//! the verifier in the keys layer, not here.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The JOSE `typ` every tool call must carry, so no other kind of JWT can be replayed as a call.
pub const CALL_TYP: &str = "medicodax-call+jwt";

/// The longest `jti` accepted.
pub const MAX_JTI_LEN: usize = 128;

/// The longest permitted `exp - iat`, in seconds.
pub const MAX_CALL_LIFETIME_SECS: i64 = 300;

/// The default `purpose` (HL7 v3 PurposeOfUse: healthcare operations).
pub const DEFAULT_PURPOSE: &str = "HOPERAT";

/// A JWT NumericDate in whole seconds.
///
/// Accepted: a JSON integer or a finite fractional number between 0 and 253402300799
/// (the end of year 9999); a fraction is rounded down. Refused: strings, booleans,
/// negatives, non-finite or out-of-range numbers (such as `1e30`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NumericDate(pub i64);

/// The latest NumericDate accepted (9999-12-31T23:59:59Z).
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

impl NumericDate {
    /// Reads a NumericDate from a JSON value under the rules above.
    pub fn from_json(v: &Value) -> Result<Self, &'static str> {
        let Value::Number(n) = v else {
            return Err("must be a JSON number of seconds since the epoch");
        };
        if let Some(i) = n.as_i64() {
            if (0..=MAX_NUMERIC_DATE).contains(&i) {
                return Ok(NumericDate(i));
            }
            return Err("is out of range");
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&f) => Ok(NumericDate(f.floor() as i64)),
            _ => Err("is out of range"),
        }
    }
}

impl Serialize for NumericDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        NumericDate::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// The `aud` claim: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience string.
    One(String),
    /// An array of audience strings.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `expected` (exact string comparison).
    pub fn contains(&self, expected: &str) -> bool {
        match self {
            Audience::One(a) => a == expected,
            Audience::Many(v) => v.iter().any(|a| a == expected),
        }
    }
}

/// The payload of a signed tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallClaims {
    /// The agent's registered id.
    pub iss: String,
    /// The user the agent acts for (or the agent id itself).
    pub sub: String,
    /// The gateway's audience.
    pub aud: Audience,
    /// Issued at.
    pub iat: NumericDate,
    /// Expires at; `exp - iat` is at most 300 s.
    pub exp: NumericDate,
    /// Not before (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<NumericDate>,
    /// Single-use id, at most 128 characters.
    pub jti: String,
    /// The tool name, e.g. `fhir.read`.
    pub tool: String,
    /// The tool's arguments: a JSON object.
    pub args: Map<String, Value>,
    /// HL7 v3 PurposeOfUse code; `HOPERAT` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl CallClaims {
    /// The purpose of use, defaulted.
    pub fn purpose(&self) -> &str {
        self.purpose.as_deref().unwrap_or(DEFAULT_PURPOSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"iss":"coding-agent","sub":"coder","aud":"http://127.0.0.1:8080","iat":1767225600,"exp":1767225720,
               "jti":"j-1","tool":"fhir.read","args":{"connection":"epic-sandbox","type":"Patient","id":"pt-1001"}})
    }

    #[test]
    fn parses_a_well_formed_call() {
        let c: CallClaims = serde_json::from_value(base()).unwrap();
        assert_eq!(c.exp, NumericDate(1_767_225_720));
        assert_eq!(c.purpose(), "HOPERAT");
        assert!(c.aud.contains("http://127.0.0.1:8080"));
    }

    #[test]
    fn numeric_dates_are_strict() {
        let cases: [(Value, Result<i64, ()>); 8] = [
            (json!(1767225720), Ok(1767225720)),
            (json!(1767225720.5), Ok(1767225720)),
            (json!("1767225720"), Err(())),
            (json!(1e30), Err(())),
            (json!(-5), Err(())),
            (json!(true), Err(())),
            (json!(null), Err(())),
            (json!(u64::MAX), Err(())),
        ];
        for (v, want) in cases {
            let got = NumericDate::from_json(&v).map(|d| d.0).map_err(|_| ());
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn exp_as_string_or_absent_is_refused() {
        let mut v = base();
        v["exp"] = json!("1767225720");
        assert!(serde_json::from_value::<CallClaims>(v.clone()).is_err());
        v.as_object_mut().unwrap().remove("exp");
        assert!(serde_json::from_value::<CallClaims>(v).is_err());
    }

    #[test]
    fn audience_forms() {
        let mut v = base();
        v["aud"] = json!(["gw-tools", "other-service"]);
        let c: CallClaims = serde_json::from_value(v.clone()).unwrap();
        assert!(c.aud.contains("gw-tools"));
        assert!(!c.aud.contains("gw"));
        v["aud"] = json!(["other-service"]);
        let c: CallClaims = serde_json::from_value(v.clone()).unwrap();
        assert!(!c.aud.contains("gw-tools"));
        v.as_object_mut().unwrap().remove("aud");
        assert!(serde_json::from_value::<CallClaims>(v).is_err());
    }

    #[test]
    fn unknown_claims_and_non_object_args_are_refused() {
        let mut v = base();
        v["jku"] = json!("https://evil.example/jwks");
        assert!(serde_json::from_value::<CallClaims>(v).is_err());
        let mut v = base();
        v["args"] = json!([1, 2]);
        assert!(serde_json::from_value::<CallClaims>(v).is_err());
    }
}
