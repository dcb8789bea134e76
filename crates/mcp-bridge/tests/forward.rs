//! The bridge against a stub gateway whose answers and receipts each test controls: what
//! it signs, what it passes on byte for byte, and what it refuses to pass on.

use medicodax_clock::ManualClock;
use medicodax_jose::{Alg, PrivateKey, jws};
use medicodax_mcp_bridge::{Bridge, BridgeConfig};
use medicodax_wire::hash::sha256_hex;
use medicodax_wire::receipt::{Decision, RECEIPT_TYP, ReceiptClaims};
use medicodax_wire::{CALL_TYP, CallClaims};
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const NOW: i64 = 1_767_225_600;

/// How the stub answers `POST /v1/calls`.
#[derive(Clone)]
struct Gateway {
    key: Arc<PrivateKey>,
    status: u16,
    body: &'static str,
    /// Whether to send a receipt; `tamper` makes its `result_hash` cover other bytes.
    receipt: bool,
    tamper: bool,
    retry_after: Option<u64>,
}

impl Respond for Gateway {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let call = String::from_utf8(req.body.clone()).unwrap();
        let claims = claims_of(&call);
        let covered = if self.tamper { "{\"other\":true}" } else { self.body };
        let decision = if self.status == 200 { Decision::Allowed } else { Decision::Denied };
        let receipt = ReceiptClaims {
            iss: "stub".into(),
            iat: NOW,
            call_jti: claims.jti,
            call_hash: sha256_hex(call.as_bytes()),
            result_hash: sha256_hex(covered.as_bytes()),
            decision,
            seq: 41,
            leaf_hash: "ab".repeat(32),
        };
        let mut t = ResponseTemplate::new(self.status).set_body_raw(self.body.as_bytes().to_vec(), "application/json");
        if self.receipt {
            t = t.insert_header("medicodax-receipt", jws::sign(&self.key, RECEIPT_TYP, &receipt).unwrap());
        }
        if let Some(s) = self.retry_after {
            t = t.insert_header("retry-after", s.to_string());
        }
        t
    }
}

fn claims_of(call: &str) -> CallClaims {
    let c = jws::Compact::parse(call, jws::HeaderRules { allowed: &["typ", "kid"], typ: Some(CALL_TYP), require_kid: true }).unwrap();
    serde_json::from_value(Value::Object(c.payload_object().unwrap())).unwrap()
}

struct Setup {
    server: MockServer,
    bridge: Bridge,
    gateway_key: Arc<PrivateKey>,
}

async fn setup() -> Setup {
    medicodax_jose::init().unwrap();
    let server = MockServer::start().await;
    let gateway_key = Arc::new(PrivateKey::generate(Alg::RS384).unwrap());
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [gateway_key.public_jwk()]})))
        .mount(&server)
        .await;
    let agent_key = Arc::new(PrivateKey::generate(Alg::ES384).unwrap());
    let config = BridgeConfig { agent: "coding-agent".into(), sub: "coder".into(), gateway: server.uri(), audience: "aud-1".into() };
    let bridge = Bridge::new(&config, agent_key, ManualClock::new(NOW).shared()).unwrap();
    Setup { server, bridge, gateway_key }
}

async fn answer_with(s: &Setup, g: Gateway) {
    Mock::given(method("POST")).and(path("/v1/calls")).and(header("content-type", "application/jwt")).respond_with(g).mount(&s.server).await;
}

fn gateway(s: &Setup, status: u16, body: &'static str) -> Gateway {
    Gateway { key: Arc::clone(&s.gateway_key), status, body, receipt: true, tamper: false, retry_after: None }
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn wire(r: &rmcp::model::CallToolResult) -> Value {
    serde_json::to_value(r).unwrap()
}

/// B with members out of order, spaces and a number JSON would print differently: the
/// text must still be B byte for byte, since the receipt's `result_hash` covers it.
const ODD_B: &str = "{\"z\": 1.50, \"a\": [\"\\u00e9\"]}";

#[tokio::test]
async fn a_call_is_signed_as_asked_and_b_passes_through_unchanged() {
    let s = setup().await;
    answer_with(&s, gateway(&s, 200, ODD_B)).await;
    let r = wire(&s.bridge.call("fhir.read", args(json!({"connection": "epic-sandbox", "type": "Patient", "id": "p-1"}))).await);
    assert_eq!(r["isError"], json!(false));
    assert_eq!(r["content"], json!([{"type": "text", "text": ODD_B}]));
    assert_eq!(r["structuredContent"], json!({"a": ["é"], "z": 1.5}));
    assert_eq!(r["_meta"]["io.medicodax/status"], json!(200));
    let receipt = r["_meta"]["io.medicodax/receipt"].as_str().unwrap();

    let sent = s.server.received_requests().await.unwrap().into_iter().filter(|q| q.url.path() == "/v1/calls").collect::<Vec<_>>();
    assert_eq!(sent.len(), 1);
    let call = String::from_utf8(sent[0].body.clone()).unwrap();
    let claims = claims_of(&call);
    assert_eq!((claims.iss.as_str(), claims.sub.as_str(), claims.tool.as_str()), ("coding-agent", "coder", "fhir.read"));
    assert_eq!(Value::Object(claims.args), json!({"connection": "epic-sandbox", "type": "Patient", "id": "p-1"}));
    assert!(claims.aud.contains("aud-1"));
    assert_eq!(claims.iat.0, NOW);
    // The receipt handed on is the gateway's, over this call and these bytes.
    let keys = vec![medicodax_jose::VerifyingKey::from_jwk(s.gateway_key.public_jwk()).unwrap()];
    let v = medicodax_agent::verify_receipt(receipt, &keys, &call, &claims.jti, ODD_B.as_bytes()).unwrap();
    assert_eq!(v.claims.seq, 41);
}

#[tokio::test]
async fn each_call_gets_a_fresh_jti_and_absent_arguments_are_an_empty_object() {
    let s = setup().await;
    answer_with(&s, gateway(&s, 200, "{\"connections\":[]}")).await;
    for _ in 0..2 {
        let r = wire(&s.bridge.call("connections.list", serde_json::Map::new()).await);
        assert_eq!(r["isError"], json!(false), "{r}");
    }
    let calls: Vec<CallClaims> = s
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.url.path() == "/v1/calls")
        .map(|q| claims_of(std::str::from_utf8(&q.body).unwrap()))
        .collect();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].jti, calls[1].jti);
    assert!(calls.iter().all(|c| c.args.is_empty() && c.tool == "connections.list"));
}

#[tokio::test]
async fn a_denial_is_an_error_result_with_its_receipt_and_retry_after() {
    let s = setup().await;
    let problem = "{\"type\":\"/v1/problems/denied\",\"title\":\"Access denied\",\"status\":403,\"detail\":\"no\",\"code\":\"denied\"}";
    answer_with(&s, Gateway { retry_after: Some(3), ..gateway(&s, 403, problem) }).await;
    let r = wire(&s.bridge.call("fhir.read", args(json!({"connection": "x", "type": "Patient", "id": "p"}))).await);
    assert_eq!(r["isError"], json!(true));
    assert_eq!(r["content"][0]["text"], json!(problem));
    assert!(r.get("structuredContent").is_none());
    assert_eq!(r["_meta"]["io.medicodax/status"], json!(403));
    assert_eq!(r["_meta"]["io.medicodax/retry-after"], json!(3));
    assert!(r["_meta"]["io.medicodax/receipt"].is_string());
}

#[tokio::test]
async fn an_unverified_call_is_an_error_without_a_receipt() {
    let s = setup().await;
    let problem = "{\"type\":\"/v1/problems/invalid-call\",\"title\":\"The call does not verify\",\"status\":401,\"detail\":\"bad\",\"code\":\"invalid-call\"}";
    answer_with(&s, Gateway { receipt: false, ..gateway(&s, 401, problem) }).await;
    let r = wire(&s.bridge.call("connections.list", serde_json::Map::new()).await);
    assert_eq!(r["isError"], json!(true));
    assert_eq!(r["content"][0]["text"], json!(problem));
    assert_eq!(r["_meta"], json!({"io.medicodax/status": 401}));
}

#[tokio::test]
async fn data_without_a_receipt_that_covers_it_is_not_passed_on() {
    for g in [|s: &Setup| Gateway { receipt: false, ..gateway(s, 200, "{\"secret\":1}") }, |s: &Setup| Gateway { tamper: true, ..gateway(s, 200, "{\"secret\":1}") }] {
        let s = setup().await;
        answer_with(&s, g(&s)).await;
        let r = wire(&s.bridge.call("connections.list", serde_json::Map::new()).await);
        assert_eq!(r["isError"], json!(true));
        assert_eq!(r["_meta"], json!({"io.medicodax/bridge-error": "receipt"}));
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("200"), "{text}");
    }
}

#[tokio::test]
async fn an_unreachable_gateway_is_a_bridge_error() {
    let config = BridgeConfig { agent: "a".into(), sub: "u".into(), gateway: "http://127.0.0.1:9".into(), audience: "aud".into() };
    let bridge = Bridge::new(&config, Arc::new(PrivateKey::generate(Alg::ES384).unwrap()), ManualClock::new(NOW).shared()).unwrap();
    let r = wire(&bridge.call("connections.list", serde_json::Map::new()).await);
    assert_eq!(r["isError"], json!(true));
    assert_eq!(r["_meta"], json!({"io.medicodax/bridge-error": "unreachable"}));
    assert!(r["content"][0]["text"].as_str().unwrap().starts_with("cannot reach the gateway at http://127.0.0.1:9/v1/calls"));
}
