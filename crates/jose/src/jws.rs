//! Compact JWS: signing with a held key, and strict parsing and verification.
//!
//! Signing holds the parsed private key (see `crates.md`: `jsonwebtoken::encode`
//! re-parses the key on every call, 2.5x slower). Parsing is strict: exactly three
//! base64url segments without padding, a header that is a JSON object with no duplicate
//! members and only the members the caller allows, and an `alg` checked against an
//! explicit allow-list *and* the verifying key, never taken from the token alone.

use crate::alg::Alg;
use crate::jwk::VerifyingKey;
use crate::key::{PrivateKey, SignError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde_json::{Map, Value};

/// Header members beyond `alg`, `typ` and `kid` to put in a signed token.
#[derive(Clone, Debug, Default)]
pub struct HeaderExtras {
    /// `jku`, only when configured (SMART client assertions).
    pub jku: Option<String>,
}

/// Signs `claims` as a compact JWS with header `{"alg","typ","kid"}`.
pub fn sign<T: Serialize + ?Sized>(key: &PrivateKey, typ: &str, claims: &T) -> Result<String, SignError> {
    sign_with(key, typ, claims, &HeaderExtras::default())
}

/// Signs `claims` with extra header members.
pub fn sign_with<T: Serialize + ?Sized>(key: &PrivateKey, typ: &str, claims: &T, extras: &HeaderExtras) -> Result<String, SignError> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        typ: &'a str,
        kid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        jku: Option<&'a str>,
    }
    let header = serde_json::to_vec(&Header { alg: key.alg().as_str(), typ, kid: key.kid(), jku: extras.jku.as_deref() }).map_err(|_| SignError)?;
    let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
    let mut out = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 400);
    B64.encode_string(&header, &mut out);
    out.push('.');
    B64.encode_string(&payload, &mut out);
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    B64.encode_string(&sig, &mut out);
    Ok(out)
}

/// Why a compact JWS was refused. Messages say what was wrong, never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three dot-separated segments.
    #[error("not a compact JWS: expected three base64url segments separated by '.' (JWE, JSON serialization and nested tokens are not accepted)")]
    NotCompact,
    /// A segment is not base64url without padding.
    #[error("the {0} segment is not base64url without padding")]
    BadBase64(&'static str),
    /// The header is not a JSON object, or has duplicate members.
    #[error("the JOSE header is not a valid JSON object: {0}")]
    BadHeader(String),
    /// A header member that is not allowed here.
    #[error("the JOSE header member {0:?} is not accepted here")]
    ForbiddenHeader(String),
    /// `alg` missing or not a string.
    #[error("the JOSE header has no string \"alg\"")]
    MissingAlg,
    /// `alg` not in the allow-list (includes `none` in any case, and HS*).
    #[error("algorithm {0:?} is not accepted; accepted: {1}")]
    AlgNotAllowed(String, String),
    /// `typ` missing or not the expected one.
    #[error("the JOSE header typ must be {expected:?}")]
    WrongTyp {
        /// The required `typ`.
        expected: String,
    },
    /// `kid` missing or not a string.
    #[error("the JOSE header has no string \"kid\"")]
    MissingKid,
    /// The key found does not permit the token's algorithm.
    #[error("the registered key for this kid does not permit algorithm {0}")]
    AlgKeyMismatch(Alg),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The payload is not valid JSON (or has duplicate members).
    #[error("the payload is not a valid JSON object: {0}")]
    BadPayload(String),
}

/// A parsed (not yet verified) compact JWS.
#[derive(Debug, Clone)]
pub struct Compact<'a> {
    /// The header members.
    pub header: Map<String, Value>,
    /// `alg` as it appeared.
    pub alg_name: String,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Header rules for [`Compact::parse`].
#[derive(Clone, Copy, Debug)]
pub struct HeaderRules<'r> {
    /// Members allowed besides `alg` (anything else is refused).
    pub allowed: &'r [&'r str],
    /// When set, `typ` must be present and equal to this.
    pub typ: Option<&'r str>,
    /// Whether `kid` must be present.
    pub require_kid: bool,
}

fn strict_b64(seg: &str, what: &'static str) -> Result<Vec<u8>, JwsError> {
    if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(JwsError::BadBase64(what));
    }
    B64.decode(seg).map_err(|_| JwsError::BadBase64(what))
}

impl<'a> Compact<'a> {
    /// Splits and decodes a compact JWS and checks its header against `rules`.
    pub fn parse(token: &'a str, rules: HeaderRules<'_>) -> Result<Self, JwsError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwsError::NotCompact);
        };
        if h.is_empty() || p.is_empty() {
            return Err(JwsError::NotCompact);
        }
        let header_bytes = strict_b64(h, "header")?;
        let header = medicodax_wire::strict_json::object_from_slice(&header_bytes).map_err(|e| JwsError::BadHeader(e.to_string()))?;
        for name in header.keys() {
            if name != "alg" && !rules.allowed.contains(&name.as_str()) {
                return Err(JwsError::ForbiddenHeader(name.chars().take(32).collect()));
            }
        }
        let alg_name = match header.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => return Err(JwsError::MissingAlg),
        };
        if let Some(want) = rules.typ
            && header.get("typ").and_then(Value::as_str) != Some(want)
        {
            return Err(JwsError::WrongTyp { expected: want.to_owned() });
        }
        if rules.require_kid && !matches!(header.get("kid"), Some(Value::String(k)) if !k.is_empty()) {
            return Err(JwsError::MissingKid);
        }
        let payload = strict_b64(p, "payload")?;
        let signature = strict_b64(s, "signature")?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(Compact { header, alg_name, payload, signing_input, signature })
    }

    /// The `kid` header, if present and a string.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// The `typ` header, if present and a string.
    pub fn typ(&self) -> Option<&str> {
        self.header.get("typ").and_then(Value::as_str)
    }

    /// The algorithm, if it is in `allow`.
    pub fn alg_in(&self, allow: &[Alg]) -> Result<Alg, JwsError> {
        let listed = || allow.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
        match self.alg_name.parse::<Alg>() {
            Ok(a) if allow.contains(&a) => Ok(a),
            _ => Err(JwsError::AlgNotAllowed(self.alg_name.chars().take(16).collect(), listed())),
        }
    }

    /// Verifies the signature with `key`, the algorithm restricted to `allow` and to what
    /// the key permits.
    pub fn verify(&self, key: &VerifyingKey, allow: &[Alg]) -> Result<Alg, JwsError> {
        let alg = self.alg_in(allow)?;
        if !key.permits(alg) {
            return Err(JwsError::AlgKeyMismatch(alg));
        }
        if key.verify(alg, self.signing_input.as_bytes(), &self.signature) { Ok(alg) } else { Err(JwsError::BadSignature) }
    }

    /// The payload as a JSON object, duplicate members refused.
    pub fn payload_object(&self) -> Result<Map<String, Value>, JwsError> {
        medicodax_wire::strict_json::object_from_slice(&self.payload).map_err(|e| JwsError::BadPayload(e.to_string()))
    }
}

/// Parses and verifies a JWS we expect from a known key (receipts, checkpoints,
/// sessions), returning the payload object.
pub fn verify_with(token: &str, key: &VerifyingKey, typ: &str, allow: &[Alg]) -> Result<Map<String, Value>, JwsError> {
    let c = Compact::parse(token, HeaderRules { allowed: &["typ", "kid"], typ: Some(typ), require_kid: true })?;
    c.verify(key, allow)?;
    c.payload_object()
}
