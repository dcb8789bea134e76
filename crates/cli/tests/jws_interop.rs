//! Every kind of JWS MEDICODAX emits — a signed tool call, a receipt, an audit checkpoint
//! and a dashboard session token (client assertions are covered by the SMART crate's
//! interop tests) — verified by three JOSE implementations we did not write (PyJWT,
//! jwcrypto, panva `jose`) against the JWKS the gateway publishes, and each rejects a
//! tampered copy.

mod common;

use common::{Server, interop_dir, python, require_node_modules};
use medicodax_agent::AgentClient;
use medicodax_audit::Db;
use medicodax_clock::SystemClock;
use medicodax_jose::PrivateKey;
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;

fn run(cmd: &mut Command, input: &Value) -> Value {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the checker");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "checker failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("checker output ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Logs in to the dashboard and returns the session cookie's value (a JWS).
async fn session_token(url: &str, password: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = http.get(format!("{url}/login")).send().await.unwrap();
    let login_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("medicodax_login=").map(|v| v.split(';').next().unwrap_or_default().to_owned()))
        .expect("the login page sets its form cookie");
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"login_csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("the login form carries its csrf value").to_owned();
    let resp = http
        .post(format!("{url}/login"))
        .header("cookie", format!("medicodax_login={login_cookie}"))
        .form(&[("login_csrf", csrf.as_str()), ("user", "admin"), ("password", password)])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "login answered {}", resp.status());
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("medicodax_session=").map(|v| v.split(';').next().unwrap_or_default().to_owned()))
        .expect("a session cookie")
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_receipts_checkpoints_and_sessions_verify_with_three_jose_libraries() {
    medicodax_jose::init().unwrap();
    let py = python();
    require_node_modules("jose");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    let key = Arc::new(PrivateKey::from_file_auto(&server.agent_key()).unwrap());
    let agent = AgentClient::new("coding-agent", key, &server.url, &server.url, SystemClock::shared()).unwrap();
    let call = agent.sign("coder", "connections.list", serde_json::Map::new(), None).unwrap();
    let out = agent.send(&call).await.unwrap();
    assert_eq!(out.status, 200);
    let receipt = out.receipt.expect("a receipt").jws;
    let session = session_token(&server.url, server.admin_password.as_deref().expect("fresh data folder")).await;
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", server.url)).await.unwrap().json().await.unwrap();
    // The agent's own key is not in the gateway's JWKS: its call is checked against the agent's registered JWKS.
    let agent_jwks: Value = serde_json::from_slice(&std::fs::read(data.join("keys/agents/coding-agent.jwks.json")).unwrap()).unwrap();
    server.stop(); // signs the final checkpoint
    let db = Db::connect_only(&medicodax_gateway::server::default_store_url(&data)).await.unwrap();
    let checkpoint = db.checkpoints().await.unwrap().into_iter().last().expect("a checkpoint at shutdown").jws;

    let mut all_keys = jwks["keys"].as_array().unwrap().clone();
    all_keys.extend(agent_jwks["keys"].as_array().unwrap().iter().cloned());
    let input = json!({
        "jwks": {"keys": all_keys},
        "tokens": [
            {"name": "call", "typ": "medicodax-call+jwt", "jws": call.jws},
            {"name": "receipt", "typ": "medicodax-receipt+jwt", "jws": receipt},
            {"name": "checkpoint", "typ": "medicodax-checkpoint+jwt", "jws": checkpoint},
            {"name": "session", "typ": "medicodax-session+jwt", "jws": session},
        ]
    });
    let dir = interop_dir().join("jws");
    let pyout = run(Command::new(&py).arg(dir.join("verify.py")), &input);
    let nodeout = run(Command::new("node").arg(dir.join("verify.mjs")).current_dir(interop_dir()), &input);
    for (p, n) in pyout.as_array().unwrap().iter().zip(nodeout.as_array().unwrap()) {
        let name = p["name"].as_str().unwrap();
        assert_eq!(p["pyjwt"], json!(true), "{name} with PyJWT: {}", p["pyjwt"]);
        assert_eq!(p["jwcrypto"], json!(true), "{name} with jwcrypto: {}", p["jwcrypto"]);
        assert_eq!(n["jose"], json!(true), "{name} with jose: {}", n["jose"]);
        assert_eq!(p["pyjwt_rejects_tampered"], json!(true), "{name}: PyJWT accepted a tampered copy");
        assert_eq!(p["jwcrypto_rejects_tampered"], json!(true), "{name}: jwcrypto accepted a tampered copy");
        assert_eq!(n["jose_rejects_tampered"], json!(true), "{name}: jose accepted a tampered copy");
    }
    assert_eq!(pyout.as_array().unwrap().len(), 4);
}
