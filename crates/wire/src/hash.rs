//! Hashes as the wire formats use them: lowercase hex SHA-256, RFC 8785 canonical JSON,
//! and RFC 6962 leaf hashes (`SHA-256(0x00 || canonical JSON)`).

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Digest32 = [u8; 32];

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// RFC 8785 (JCS) canonical JSON bytes of a value.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    serde_jcs::to_vec(value).map_err(|e| CanonicalError(e.to_string()))
}

/// RFC 6962 leaf hash of a record: `SHA-256(0x00 || JCS(record))`.
pub fn leaf_hash<T: Serialize + ?Sized>(record: &T) -> Result<Digest32, CanonicalError> {
    let body = canonical_json(record)?;
    Ok(leaf_hash_bytes(&body))
}

/// RFC 6962 leaf hash of already canonical bytes.
pub fn leaf_hash_bytes(canonical: &[u8]) -> Digest32 {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(canonical);
    h.finalize().into()
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest32, right: &Digest32) -> Digest32 {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A value could not be put in canonical form (for example a non-finite number).
#[derive(Debug, thiserror::Error)]
#[error("value has no RFC 8785 canonical form: {0}")]
pub struct CanonicalError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_is_the_known_value() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn canonical_json_sorts_members_and_drops_whitespace() {
        let v: serde_json::Value = serde_json::from_str(r#"{ "b": 1, "a": [true, null, "x"] }"#).unwrap();
        assert_eq!(canonical_json(&v).unwrap(), br#"{"a":[true,null,"x"],"b":1}"#.to_vec());
    }

    #[test]
    fn leaf_hash_uses_zero_prefix() {
        // RFC 6962: the hash of an empty leaf is SHA-256(0x00).
        assert_eq!(hex::encode(leaf_hash_bytes(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    }
}
