//! The runner through the real `AgentClient` (sign, send, verify the receipt) against a
//! stand-in gateway on loopback: receipts verify, a 429's `Retry-After` header is
//! honoured, a 403 is a denial.

mod common;

use base64::Engine;
use common::{bundles, reference};
use medicodax_agent::AgentClient;
use medicodax_clock::{Clock, ManualClock, SystemClock};
use medicodax_coding::runner::{EncounterOutcome, RunOptions, run_worklist};
use medicodax_jose::{Alg, PrivateKey, jws};
use medicodax_wire::hash::sha256_hex;
use medicodax_wire::receipt::{Decision, RECEIPT_TYP, ReceiptClaims};
use medicodax_wire::{Problem, ProblemCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

struct Gateway {
    key: PrivateKey,
    bundles: HashMap<String, Vec<u8>>,
    seq: AtomicU64,
    limited_once: Mutex<bool>,
}

impl Respond for Gateway {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let call = String::from_utf8(req.body.clone()).unwrap();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(call.split('.').nth(1).unwrap()).unwrap();
        let claims: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(claims["tool"], "encounter.bundle");
        assert_eq!(claims["sub"], "coder");
        let enc = claims["args"]["encounter"].as_str().unwrap().to_owned();
        let (status, body, decision, retry) = if enc == "slow-1" && !std::mem::replace(&mut *self.limited_once.lock().unwrap(), true) {
            (429, serde_json::to_vec(&Problem::new(ProblemCode::RateLimited, "budget")).unwrap(), Decision::Denied, Some("2"))
        } else if enc == "denied-1" {
            (403, serde_json::to_vec(&Problem::new(ProblemCode::Denied, "denied")).unwrap(), Decision::Denied, None)
        } else {
            let key = if enc == "slow-1" { self.bundles.keys().min().unwrap().clone() } else { enc };
            (200, self.bundles[&key].clone(), Decision::Allowed, None)
        };
        let receipt = ReceiptClaims {
            iss: "http://gateway".into(),
            iat: 1,
            call_jti: claims["jti"].as_str().unwrap().into(),
            call_hash: sha256_hex(call.as_bytes()),
            result_hash: sha256_hex(&body),
            decision,
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            leaf_hash: "00".repeat(32),
        };
        let mut t = ResponseTemplate::new(status)
            .set_body_raw(body, if status == 200 { "application/json" } else { "application/problem+json" })
            .insert_header("medicodax-receipt", jws::sign(&self.key, RECEIPT_TYP, &receipt).unwrap());
        if let Some(r) = retry {
            t = t.insert_header("retry-after", r);
        }
        t
    }
}

#[tokio::test]
async fn the_runner_codes_through_signed_calls_with_verified_receipts() {
    let server = MockServer::start().await;
    let gw = PrivateKey::generate(Alg::ES384).unwrap();
    Mock::given(method("GET")).and(path("/.well-known/jwks.json")).respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": [gw.public_jwk()] }))).mount(&server).await;
    let picked: Vec<_> = bundles().iter().filter(|b| !b.conditions.is_empty()).take(3).collect();
    let ids: Vec<String> = picked.iter().map(|b| b.encounter["id"].as_str().unwrap().to_owned()).collect();
    let gateway = Gateway {
        key: gw,
        bundles: picked.iter().map(|b| (b.encounter["id"].as_str().unwrap().to_owned(), serde_json::to_vec(b).unwrap())).collect(),
        seq: AtomicU64::new(100),
        limited_once: Mutex::new(false),
    };
    Mock::given(method("POST")).and(path("/v1/calls")).respond_with(gateway).mount(&server).await;

    let agent = AgentClient::new("coding-agent", Arc::new(PrivateKey::generate(Alg::ES384).unwrap()), &server.uri(), "http://gateway", SystemClock::shared()).unwrap();
    let runner_clock = ManualClock::auto_advance(1_767_225_600);
    let mut worklist = ids.clone();
    worklist.push("denied-1".into());
    worklist.push("slow-1".into());
    let mut options = RunOptions::new("epic-sandbox", "coder");
    options.concurrency = 2;
    let report = run_worklist(&agent, &reference(), &runner_clock.shared(), &options, &worklist, |_| {}).await;
    let s = &report.summary;
    assert_eq!((s.coded, s.denials, s.failures, s.rate_limited, s.calls), (4, 1, 0, 1, 6), "{s:?}");
    assert!(matches!(report.results[3].outcome, EncounterOutcome::Denied { status: 403 }));
    assert_eq!(report.results[4].calls, 2, "the 429 was retried with a new call");
    for r in report.results.iter().filter(|r| r.encounter_id != "denied-1") {
        match &r.outcome {
            EncounterOutcome::Coded { worksheet, receipt_seq, .. } => {
                assert!(receipt_seq.is_some_and(|s| s >= 100), "a verified receipt came with it");
                assert!(!worksheet.diagnoses.is_empty());
            }
            other => panic!("{}: {other:?}", r.encounter_id),
        }
    }
    assert!(runner_clock.monotonic().0 >= std::time::Duration::from_secs(2), "Retry-After: 2 was waited out on the runner's clock");
}
