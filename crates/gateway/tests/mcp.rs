//! MCP at `/mcp`, end to end in one process: the sandbox EHRs, a gateway built from a
//! configuration with `server::build`, and raw JSON-RPC over HTTP, so every shape on the
//! wire is asserted as sent. Each test reads the audit log to show what was (and what was
//! not) recorded.

use medicodax_agent::{AgentClient, SignedCall, verify_receipt};
use medicodax_audit::TailEntry;
use medicodax_clock::SystemClock;
use medicodax_config::{AgentConfig, Config, ConnectionConfig, RoleConfig, Vendor};
use medicodax_gateway::server::{self, Paths};
use medicodax_gateway::service::Gateway;
use medicodax_jose::{Alg, Jwks, PrivateKey, VerifyingKey};
use medicodax_sandbox::{ClientKeys, ClientRegistration, Sandbox, SandboxConfig, SandboxHandle};
use medicodax_wire::audit::{AuditRecord, OutcomeRecord};
use medicodax_wire::hash::sha256_hex;
use medicodax_wire::{Decision, ToolName};
use serde_json::{Value, json};
use std::sync::Arc;

const EPIC_CLIENT: &str = "mcp-test-epic";
/// May act for users of role `coder` and call every tool.
const AGENT: &str = "mcp-agent";
const CODER: &str = "coder";
/// The protocol version of the handshake-era requests below.
const PROTOCOL: &str = "2025-11-25";

struct Env {
    gw: Arc<Gateway>,
    url: String,
    http: reqwest::Client,
    agent: AgentClient,
    _sandbox: SandboxHandle,
    _dir: tempfile::TempDir,
}

async fn start() -> Env {
    medicodax_jose::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = SystemClock::shared();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwks_url = format!("http://{addr}/.well-known/jwks.json");
    let sandbox = Sandbox::start(SandboxConfig {
        clients: vec![ClientRegistration::new(EPIC_CLIENT, medicodax_sandbox::Vendor::Epic, ClientKeys::JwksUrl(jwks_url))],
        clock: clock.clone(),
        ..SandboxConfig::default()
    })
    .await
    .unwrap();

    let key = PrivateKey::generate(Alg::RS384).unwrap();
    let jwks = dir.path().join("agent.jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.public_jwk()]}).to_string()).unwrap();
    let mut config = Config::default();
    config.gateway.listen = addr.to_string();
    config.connections = vec![ConnectionConfig {
        scopes: medicodax_sandbox::default_scopes(),
        ..ConnectionConfig::new("epic-sandbox", Vendor::Epic, &sandbox.epic_fhir_base(), EPIC_CLIENT)
    }];
    let tools = ToolName::ALL.map(|t| t.as_str().to_owned()).to_vec();
    config.roles.insert(CODER.into(), RoleConfig { scopes: vec!["system/*.rs".into()], tools, ..RoleConfig::default() });
    config.agents = vec![AgentConfig { id: AGENT.into(), jwks: Some(jwks), jwks_url: None, roles: vec![CODER.into()], may_act_for: vec![format!("role:{CODER}")] }];
    config.validate().unwrap();

    let paths = Paths { data_dir: dir.path().join("data"), config_dir: dir.path().to_owned() };
    let (gw, _) = server::build(config, &paths, clock.clone()).await.unwrap();
    gw.users.add(CODER, "correct horse battery staple", &[CODER.to_owned()], gw.clock.now_unix_millis()).await.unwrap();
    tokio::spawn(server::serve(Arc::clone(&gw), listener, std::future::pending()));
    let url = format!("http://{addr}");
    let agent = AgentClient::new(AGENT, Arc::new(key), &url, gw.audience(), clock).unwrap();
    Env { gw, url, http: reqwest::Client::new(), agent, _sandbox: sandbox, _dir: dir }
}

/// A JSON-RPC POST to `/mcp`, as a streamable-HTTP client sends it.
async fn post(env: &Env, body: &str) -> (u16, String) {
    let r = env
        .http
        .post(format!("{}/mcp", env.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A request whose answer must be a JSON-RPC result; returns `result`.
async fn rpc(env: &Env, method: &str, params: Value) -> Value {
    let (status, text) = post(env, &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], json!(1));
    assert!(v.get("error").is_none(), "{v}");
    v["result"].clone()
}

fn tool_call(name: &str, arguments: Value, meta: Option<Value>) -> Value {
    let mut params = json!({"name": name, "arguments": arguments});
    if let Some(m) = meta {
        params["_meta"] = m;
    }
    params
}

fn signed(env: &Env, sub: &str, tool: &str, args: Value) -> SignedCall {
    let Value::Object(args) = args else { panic!("args must be an object") };
    env.agent.sign(sub, tool, args, None).unwrap()
}

/// Calls `tools/call` with `call` in `_meta`, for `name` and `arguments`.
async fn call(env: &Env, call: &SignedCall, name: &str, arguments: Value) -> Value {
    rpc(env, "tools/call", tool_call(name, arguments, Some(json!({"io.medicodax/call": call.jws})))).await
}

async fn gateway_keys(env: &Env) -> Vec<VerifyingKey> {
    let body = env.http.get(format!("{}/.well-known/jwks.json", env.url)).send().await.unwrap().bytes().await.unwrap();
    Jwks::from_json(&body).unwrap().keys.iter().filter_map(|k| VerifyingKey::from_jwk(k).ok()).collect()
}

fn text(result: &Value) -> &str {
    let content = result["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "one content item: {result}");
    assert_eq!(content[0]["type"], json!("text"));
    content[0]["text"].as_str().unwrap()
}

/// The result's receipt, verified against the gateway's JWKS, the call and the text.
async fn receipt(env: &Env, result: &Value, call: &SignedCall) -> medicodax_agent::VerifiedReceipt {
    let r = result["_meta"]["io.medicodax/receipt"].as_str().unwrap_or_else(|| panic!("no receipt: {result}"));
    verify_receipt(r, &gateway_keys(env).await, &call.jws, &call.claims.jti, text(result).as_bytes()).unwrap()
}

async fn log(env: &Env) -> Vec<TailEntry> {
    medicodax_audit::tail(env.gw.audit.db(), 10_000).await.unwrap()
}

/// The intent and outcome records of `jti` with their seq, in log order.
async fn records_of(env: &Env, jti: &str) -> Vec<(u64, AuditRecord)> {
    log(env)
        .await
        .into_iter()
        .map(|e| (e.seq, e.entry.record))
        .filter(|(_, r)| match r {
            AuditRecord::Intent(i) => i.jti == jti,
            AuditRecord::Outcome(o) => o.jti == jti,
            AuditRecord::Event(_) => false,
        })
        .collect()
}

/// Exactly one intent (channel `mcp`) and one outcome for `jti`; returns the outcome and its seq.
async fn one_call_audited(env: &Env, jti: &str) -> (u64, OutcomeRecord) {
    let recs = records_of(env, jti).await;
    match recs.as_slice() {
        [(iseq, AuditRecord::Intent(i)), (seq, AuditRecord::Outcome(o))] => {
            assert_eq!((i.channel.as_str(), i.agent.as_str(), i.user.as_str()), ("mcp", AGENT, CODER));
            assert_eq!(o.intent_seq, *iseq);
            (*seq, o.clone())
        }
        other => panic!("expected an intent and an outcome, got {other:?}"),
    }
}

fn problem(result: &Value) -> Value {
    assert_eq!(result["isError"], json!(true), "{result}");
    assert!(result.get("structuredContent").is_none());
    serde_json::from_str(text(result)).unwrap()
}

#[tokio::test]
async fn initialize_and_tools_list_need_no_signature_and_write_nothing() {
    let env = start().await;
    let before = env.gw.audit.head().size;
    let init = rpc(&env, "initialize", json!({"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}})).await;
    assert_eq!(init["protocolVersion"], json!(PROTOCOL));
    assert_eq!(init["serverInfo"]["name"], json!("medicodax-gateway"));
    assert!(init["capabilities"]["tools"].is_object());
    assert!(init["instructions"].as_str().unwrap().contains("io.medicodax/call"));

    let list = rpc(&env, "tools/list", json!({})).await;
    let tools = list["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ToolName::ALL.map(|t| t.as_str()).to_vec());
    for t in tools {
        let tool: ToolName = t["name"].as_str().unwrap().parse().unwrap();
        assert_eq!(t["description"], json!(tool.description()));
        assert_eq!(t["inputSchema"]["type"], json!("object"));
        assert_eq!(t["inputSchema"]["additionalProperties"], json!(false));
    }
    let read = tools.iter().find(|t| t["name"] == "fhir.read").unwrap();
    assert_eq!(read["inputSchema"]["required"], json!(["connection", "type", "id"]));
    // Nothing about this deployment leaks: no connection or agent names.
    assert!(!list.to_string().contains("epic-sandbox") && !list.to_string().contains(AGENT));
    assert_eq!(env.gw.audit.head().size, before, "listing is not audited");
}

#[tokio::test]
async fn a_signed_call_succeeds_with_b_as_text_and_a_verifiable_receipt() {
    let env = start().await;
    let c = signed(&env, CODER, "connections.list", json!({}));
    let r = call(&env, &c, "connections.list", json!({})).await;
    assert_eq!(r["isError"], json!(false), "{r}");
    let b = text(&r);
    assert_eq!(serde_json::from_str::<Value>(b).unwrap(), r["structuredContent"]);
    assert_eq!(r["structuredContent"]["connections"][0]["name"], json!("epic-sandbox"));
    assert_eq!(r["_meta"]["io.medicodax/status"], json!(200));
    let v = receipt(&env, &r, &c).await;
    assert_eq!(v.claims.decision, Decision::Allowed);
    let (seq, o) = one_call_audited(&env, &c.claims.jti).await;
    assert_eq!((o.decision, seq), (Decision::Allowed, v.claims.seq));
    assert_eq!(o.result_hash, sha256_hex(b.as_bytes()));

    // Real EHR traffic through MCP: a search reaches the sandbox and its upstream request is audited.
    let args = json!({"connection": "epic-sandbox", "type": "Patient", "params": [["gender", "male"], ["birthdate", "ge1900-01-01"]], "max_results": 2});
    let c = signed(&env, CODER, "fhir.search", args.clone());
    let r = call(&env, &c, "fhir.search", args).await;
    assert_eq!(r["isError"], json!(false), "{r}");
    let patients = r["structuredContent"]["resources"].as_array().unwrap();
    assert_eq!(patients.len(), 2);
    assert!(patients.iter().all(|p| p["resourceType"] == "Patient" && p["gender"] == "male"), "{patients:?}");
    assert_eq!(receipt(&env, &r, &c).await.claims.decision, Decision::Allowed);
    let (_, o) = one_call_audited(&env, &c.claims.jti).await;
    assert_eq!(o.connection.as_deref(), Some("epic-sandbox"));
    assert!(!o.upstream.is_empty(), "the EHR request is in the outcome record");
}

#[tokio::test]
async fn a_tool_name_that_is_not_the_signed_tool_is_denied_audited_and_receipted() {
    let env = start().await;
    let c = signed(&env, CODER, "connections.list", json!({}));
    let r = call(&env, &c, "fhir.read", json!({})).await;
    let p = problem(&r);
    assert_eq!((p["status"].clone(), p["code"].clone()), (json!(400), json!("bad-arguments")));
    assert!(p["detail"].as_str().unwrap().contains("tool name"), "{p}");
    assert_eq!(r["_meta"]["io.medicodax/status"], json!(400));
    let v = receipt(&env, &r, &c).await;
    assert_eq!(v.claims.decision, Decision::Denied);
    let (seq, o) = one_call_audited(&env, &c.claims.jti).await;
    assert_eq!(seq, v.claims.seq);
    assert_eq!((o.decision, o.code.as_deref()), (Decision::Denied, Some("bad-arguments")));
    assert!(o.reason.as_deref().unwrap().contains("tool name"), "{:?}", o.reason);
    assert!(o.upstream.is_empty(), "nothing reached the EHR");
}

#[tokio::test]
async fn arguments_that_are_not_the_signed_args_are_denied_audited_and_receipted() {
    let env = start().await;
    let signed_args = json!({"connection": "epic-sandbox", "type": "Patient", "id": "a"});
    let c = signed(&env, CODER, "fhir.read", signed_args);
    let r = call(&env, &c, "fhir.read", json!({"connection": "epic-sandbox", "type": "Patient", "id": "b"})).await;
    let p = problem(&r);
    assert_eq!(p["code"], json!("bad-arguments"));
    assert!(p["detail"].as_str().unwrap().contains("RFC 8785"), "{p}");
    assert_eq!(receipt(&env, &r, &c).await.claims.decision, Decision::Denied);
    let (_, o) = one_call_audited(&env, &c.claims.jti).await;
    assert_eq!(o.decision, Decision::Denied);
    assert!(o.reason.as_deref().unwrap().contains("arguments differ"), "{:?}", o.reason);
    assert!(o.upstream.is_empty() && o.resources.is_empty());
}

#[tokio::test]
async fn arguments_equal_as_json_values_match_whatever_their_spelling() {
    let env = start().await;
    let c = signed(&env, CODER, "fhir.search", json!({"connection": "epic-sandbox", "type": "Patient", "params": [["gender", "male"], ["birthdate", "ge1900"]], "max_results": 2}));
    // Members in another order, 2 written as 2.0, a string with an escape: the same JSON values.
    let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"fhir.search","arguments":{"max_results":2.0,"params":[["gender","\u006dale"],["birthdate","ge1900"]],"type":"Patient","connection":"epic-sandbox"},"_meta":{"io.medicodax/call":"JWS"}}}"#;
    let (status, body) = post(&env, &raw.replace("JWS", &c.jws)).await;
    assert_eq!(status, 200);
    let r = serde_json::from_str::<Value>(&body).unwrap()["result"].clone();
    assert_eq!(r["isError"], json!(false), "{r}");
    assert_eq!(r["structuredContent"]["resources"].as_array().unwrap().len(), 2);
    assert_eq!(one_call_audited(&env, &c.claims.jti).await.1.decision, Decision::Allowed);
}

#[tokio::test]
async fn calls_without_a_usable_signed_call_get_no_receipt_and_are_not_audited() {
    let env = start().await;
    let before = env.gw.audit.head().size;
    let c = signed(&env, CODER, "connections.list", json!({}));
    let huge = "a".repeat(100 * 1024);
    let cases: Vec<(Option<Value>, u16, &str)> = vec![
        (None, 401, "params._meta"),
        (Some(json!({})), 401, "params._meta"),
        (Some(json!({"io.medicodax/call": 42})), 401, "must be a string"),
        (Some(json!({"io.medicodax/call": {"jws": c.jws}})), 401, "must be a string"),
        (Some(json!({"io.medicodax/call": "garbage"})), 401, "compact"),
        (Some(json!({"io.medicodax/call": format!("{}x", c.jws)})), 401, ""),
        (Some(json!({"io.medicodax/call": huge})), 413, "limit"),
        (Some(json!({"io.medicodax/call.other": c.jws})), 401, "params._meta"),
    ];
    for (meta, status, says) in cases {
        let r = rpc(&env, "tools/call", tool_call("connections.list", json!({}), meta.clone())).await;
        let p = problem(&r);
        assert_eq!(p["status"], json!(status), "{meta:?}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(says), "{meta:?}: {p}");
        assert_eq!(r["_meta"], json!({"io.medicodax/status": status}), "no receipt for {meta:?}");
    }
    assert_eq!(env.gw.audit.head().size, before, "nothing was audited");
    // The signed call itself is still unused, so it works afterwards.
    let r = call(&env, &c, "connections.list", json!({})).await;
    assert_eq!(r["isError"], json!(false), "{r}");
}

/// What rmcp 3.11 answers to messages that never reach a tool. Its choices are not all
/// the ones JSON-RPC suggests (a body that is not a JSON-RPC message is a 415, and
/// `tools/call` params of the wrong shape are -32601 rather than -32602), but none is a
/// result, none reaches the pipeline, and the server keeps serving.
#[tokio::test]
async fn garbage_json_rpc_and_wrong_types_are_refused_without_harm() {
    let env = start().await;
    let before = env.gw.audit.head().size;
    let call = |params: Value| json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string();
    let huge = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"name\":\"x\",\"_meta\":{{\"io.medicodax/call\":\"{}\"}}}}}}", "b".repeat(1 << 20));
    let cases: Vec<(String, u16, Option<i64>)> = vec![
        // Not JSON, a batch, not a JSON-RPC 2.0 object: 400 with the JSON-RPC error.
        ("{not json".to_owned(), 400, Some(-32700)),
        ("".to_owned(), 400, Some(-32700)),
        ("[]".to_owned(), 400, Some(-32600)),
        (format!("[{}]", json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})), 400, Some(-32600)),
        ("null".to_owned(), 400, Some(-32600)),
        (json!({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}).to_string(), 400, Some(-32600)),
        (json!({"jsonrpc": "2.0", "id": 1, "method": 5}).to_string(), 400, Some(-32600)),
        // Well-formed JSON-RPC whose params rmcp cannot read: rmcp's own 415.
        (call(json!({"name": "connections.list", "_meta": "x"})), 415, None),
        (call(json!({"name": 7})), 200, Some(-32601)),
        (call(json!({"name": "connections.list", "arguments": [1, 2]})), 200, Some(-32601)),
        (json!({"jsonrpc": "2.0", "id": 1, "method": "no/such/method", "params": {}}).to_string(), 200, Some(-32601)),
        (huge, 413, None),
    ];
    for (body, status, code) in &cases {
        let (got, text) = post(&env, body).await;
        assert_eq!(got, *status, "{}: {text}", &body[..body.len().min(80)]);
        if let Some(code) = code {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], json!(code), "{text}");
            assert!(v.get("result").is_none());
        }
    }
    assert_eq!(env.gw.audit.head().size, before);
    assert!(rpc(&env, "tools/list", json!({})).await["tools"].is_array(), "still serving");
}

#[tokio::test]
async fn a_replayed_call_is_a_409_with_a_receipt_and_both_intents_are_audited() {
    let env = start().await;
    let c = signed(&env, CODER, "connections.list", json!({}));
    let first = call(&env, &c, "connections.list", json!({})).await;
    assert_eq!(first["isError"], json!(false));
    let again = call(&env, &c, "connections.list", json!({})).await;
    let p = problem(&again);
    assert_eq!((p["status"].clone(), p["code"].clone(), p["type"].clone()), (json!(409), json!("replayed"), json!("/v1/problems/replayed")));
    assert_eq!(again["_meta"]["io.medicodax/status"], json!(409));
    let v = receipt(&env, &again, &c).await;
    assert_eq!(v.claims.decision, Decision::Denied);
    let recs = records_of(&env, &c.claims.jti).await;
    let kinds: Vec<&str> = recs
        .iter()
        .map(|(_, r)| match r {
            AuditRecord::Intent(_) => "intent",
            AuditRecord::Outcome(o) if o.decision == Decision::Allowed => "allowed",
            AuditRecord::Outcome(o) if o.code.as_deref() == Some("replayed") => "replayed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["intent", "allowed", "intent", "replayed"]);
    assert_eq!(recs[3].0, v.claims.seq);
}

#[tokio::test]
async fn acting_for_a_user_the_agent_may_not_act_for_is_a_uniform_denial() {
    let env = start().await;
    let args = json!({"connection": "epic-sandbox", "type": "Patient", "params": []});
    let c = signed(&env, "mallory", "fhir.search", args.clone());
    let r = call(&env, &c, "fhir.search", args).await;
    let p = problem(&r);
    assert_eq!(p, serde_json::to_value(medicodax_wire::Problem::denied()).unwrap());
    assert_eq!(receipt(&env, &r, &c).await.claims.decision, Decision::Denied);
    let recs = records_of(&env, &c.claims.jti).await;
    match recs.as_slice() {
        [(_, AuditRecord::Intent(i)), (_, AuditRecord::Outcome(o))] => {
            assert_eq!((i.user.as_str(), i.channel.as_str()), ("mallory", "mcp"));
            assert_eq!((o.decision, o.code.as_deref()), (Decision::Denied, Some("denied")));
            assert!(o.upstream.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn foreign_hosts_and_browser_origins_are_refused() {
    let env = start().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).to_string();
    let send = |extra: (&'static str, &'static str)| {
        env.http
            .post(format!("{}/mcp", env.url))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header(extra.0, extra.1)
            .body(init.clone())
            .send()
    };
    assert_eq!(send(("host", "evil.example")).await.unwrap().status().as_u16(), 403);
    assert_eq!(send(("origin", "https://evil.example")).await.unwrap().status().as_u16(), 403);
    assert_eq!(send(("x-nothing", "1")).await.unwrap().status().as_u16(), 200);
}
