//! JSON parsing that refuses duplicate member names at any depth.
//!
//! RFC 7515 §5.2 and RFC 8259 §4 leave duplicate members to the parser; two parsers
//! that pick different duplicates see different claims. We refuse them outright. The
//! parsing itself is serde_json's; this module only supplies a visitor that notices a
//! name seen twice in one object.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses `bytes` as JSON, failing if any object holds the same member name twice.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = StrictValue::deserialize_value(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parses `bytes` as a JSON object (duplicates refused), failing on any other JSON type.
pub fn object_from_slice(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    match from_slice(bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(de::Error::custom("expected a JSON object")),
    }
}

struct StrictValue;

impl StrictValue {
    fn deserialize_value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct Seed;

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize_value(d)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate member name {key:?}")));
            }
            let v = map.next_value_seed(Seed)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = from_slice(br#"{"a":1,"b":{"c":[1,2,{"d":null}]},"e":1.5}"#).unwrap();
        assert_eq!(v["b"]["c"][2]["d"], Value::Null);
        assert_eq!(v["e"], serde_json::json!(1.5));
    }

    #[test]
    fn refuses_duplicates_at_top_level_and_nested() {
        let e = from_slice(br#"{"alg":"RS384","alg":"none"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate member name \"alg\""), "{e}");
        assert!(from_slice(br#"{"args":{"id":"a","id":"b"}}"#).is_err());
        assert!(from_slice(br#"[{"x":1},{"x":2}]"#).is_ok(), "same name in different objects is fine");
    }

    #[test]
    fn refuses_trailing_garbage_and_non_objects() {
        assert!(from_slice(br#"{"a":1} x"#).is_err());
        assert!(object_from_slice(b"[1]").is_err());
    }

    #[test]
    fn keeps_big_numbers_as_numbers() {
        let v = from_slice(br#"{"exp":1e30}"#).unwrap();
        assert!(v["exp"].is_f64());
    }
}
