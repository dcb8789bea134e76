//! The shape of a `tools/call` result, shared by the gateway's `/mcp` and the stdio bridge
//! (DESIGN.md §3.2).
//!
//! The gateway serialises a tool's answer once, to bytes B. Over MCP:
//!
//! - success: one text content item whose text is B exactly, `structuredContent` the
//!   same JSON parsed, `isError: false`;
//! - failure: one text content item whose text is the RFC 9457 problem document (the
//!   same bytes `POST /v1/calls` sends), `isError: true`, no `structuredContent`;
//! - `_meta`: `io.medicodax/receipt` (the receipt JWS, whose `result_hash` is the SHA-256
//!   of the text), `io.medicodax/status` (the status `POST /v1/calls` would answer) and,
//!   when there is one, `io.medicodax/retry-after` (seconds).
//!
//! Every call whose signature verified has a receipt, denials included; a call that did
//! not verify (or carried no signed call) has none.

use crate::catalog::{BRIDGE_ERROR_META_KEY, RECEIPT_META_KEY, RETRY_AFTER_META_KEY, STATUS_META_KEY};
use rmcp::model::{CallToolResult, ContentBlock, MetaObject};
use serde_json::Value;

/// One answer of the call pipeline, independent of the transport that carried the call.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// The HTTP status `POST /v1/calls` answers with.
    pub status: u16,
    /// The answer bytes B (the result, or a problem document).
    pub body: &'a [u8],
    /// The receipt JWS, when the call verified.
    pub receipt: Option<&'a str>,
    /// `Retry-After` seconds, when given.
    pub retry_after: Option<u64>,
}

impl Answer<'_> {
    /// Whether the status is a success (2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The MCP result for an answer.
pub fn call_result(a: &Answer<'_>) -> CallToolResult {
    // B is JSON written by serde_json, so it is UTF-8; a lossy decode only guards the type.
    let text = String::from_utf8_lossy(a.body).into_owned();
    let mut result = if a.is_success() {
        let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
        r.structured_content = serde_json::from_slice::<Value>(a.body).ok();
        r
    } else {
        CallToolResult::error(vec![ContentBlock::text(text)])
    };
    let mut meta = MetaObject::new();
    if let Some(r) = a.receipt {
        meta.0.insert(RECEIPT_META_KEY.into(), Value::String(r.to_owned()));
    }
    meta.0.insert(STATUS_META_KEY.into(), Value::from(a.status));
    if let Some(s) = a.retry_after {
        meta.0.insert(RETRY_AFTER_META_KEY.into(), Value::from(s));
    }
    result.meta = Some(meta);
    result
}

/// An error result for a failure of the bridge itself: `class` is a short stable name
/// (`unreachable`, `receipt`, `sign`), `message` says what happened and carries no
/// secret. No receipt: the gateway's answer, if any, is not passed on.
pub fn bridge_error(class: &'static str, message: &str) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message.to_owned())]);
    let mut meta = MetaObject::new();
    meta.0.insert(BRIDGE_ERROR_META_KEY.into(), Value::String(class.to_owned()));
    result.meta = Some(meta);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(r: &CallToolResult) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn success_carries_b_as_text_and_structured_content() {
        let body = br#"{"connections":[{"name":"epic-sandbox","status":"ok"}]}"#;
        let v = wire(&call_result(&Answer { status: 200, body, receipt: Some("r.e.s"), retry_after: None }));
        assert_eq!(v["content"], json!([{"type": "text", "text": std::str::from_utf8(body).unwrap()}]));
        assert_eq!(v["structuredContent"], serde_json::from_slice::<Value>(body).unwrap());
        assert_eq!(v["isError"], json!(false));
        assert_eq!(v["_meta"], json!({"io.medicodax/receipt": "r.e.s", "io.medicodax/status": 200}));
    }

    #[test]
    fn failure_carries_the_problem_and_no_structured_content() {
        let body = br#"{"type":"/v1/problems/rate-limited","title":"Rate limited","status":429,"detail":"wait","code":"rate-limited"}"#;
        let v = wire(&call_result(&Answer { status: 429, body, receipt: Some("r.e.s"), retry_after: Some(7) }));
        assert_eq!(v["content"][0]["text"], json!(std::str::from_utf8(body).unwrap()));
        assert_eq!(v["isError"], json!(true));
        assert!(v.get("structuredContent").is_none());
        assert_eq!(v["_meta"], json!({"io.medicodax/receipt": "r.e.s", "io.medicodax/status": 429, "io.medicodax/retry-after": 7}));
        let unverified = wire(&call_result(&Answer { status: 401, body, receipt: None, retry_after: None }));
        assert_eq!(unverified["_meta"], json!({"io.medicodax/status": 401}));
    }

    #[test]
    fn bridge_errors_name_their_class_and_carry_no_receipt() {
        let v = wire(&bridge_error("unreachable", "cannot reach the gateway"));
        assert_eq!(v["isError"], json!(true));
        assert_eq!(v["_meta"], json!({"io.medicodax/bridge-error": "unreachable"}));
        assert_eq!(v["content"][0]["text"], json!("cannot reach the gateway"));
    }
}
