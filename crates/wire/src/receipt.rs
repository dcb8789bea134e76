//! The gateway's signed statements: receipts for calls, checkpoints of the audit log.

use serde::{Deserialize, Serialize};

/// JOSE `typ` of a receipt.
pub const RECEIPT_TYP: &str = "medicodax-receipt+jwt";
/// JOSE `typ` of an audit checkpoint.
pub const CHECKPOINT_TYP: &str = "medicodax-checkpoint+jwt";
/// JOSE `typ` of a dashboard session token.
pub const SESSION_TYP: &str = "medicodax-session+jwt";

/// What the gateway decided about a verified call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Policy allowed the call and it produced a result.
    Allowed,
    /// Policy refused the call (or its arguments were bad).
    Denied,
    /// Policy allowed the call but the EHR or the gateway failed.
    Failed,
}

impl Decision {
    /// The lowercase wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Failed => "failed",
        }
    }
}

/// Claims of a receipt (`typ` [`RECEIPT_TYP`]), signed by the gateway key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    /// The gateway's audience/origin.
    pub iss: String,
    /// When the receipt was made.
    pub iat: i64,
    /// The `jti` of the call.
    pub call_jti: String,
    /// SHA-256 hex of the call's compact JWS bytes.
    pub call_hash: String,
    /// SHA-256 hex of the answer body (the result, or the problem document).
    pub result_hash: String,
    /// The decision.
    pub decision: Decision,
    /// Sequence number of the outcome record in the audit log.
    pub seq: u64,
    /// RFC 6962 leaf hash (hex) of the outcome record.
    pub leaf_hash: String,
}

/// Claims of an audit checkpoint (`typ` [`CHECKPOINT_TYP`]): the log's size and root at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// Names the log (the gateway's audience).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 Merkle tree head, hex.
    pub root: String,
    /// Unix seconds.
    pub time: i64,
}
