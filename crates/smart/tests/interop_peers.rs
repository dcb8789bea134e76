//! Interop with code nobody on the team wrote (`peers/README.md`):
//! - node-oidc-provider and authlib, each as a token endpoint, accept a token request made
//!   by our `AuthManager` and refuse one signed with another key (and, through the harness
//!   hook, an assertion living longer than 5 minutes);
//! - PyJWT and panva `jose` verify our RS384 and ES384 assertions against the JWKS we
//!   publish, and reject tampered copies.
//!
//! The peers are installed by `scripts/test-deps.sh` into `tests/interop` (or the folder
//! named by `MEDICODAX_INTEROP_DIR`). If they are missing these tests fail: they never
//! pass silently.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use medicodax_clock::{Clock, ManualClock, SystemClock};
use medicodax_jose::{Alg, PrivateKey};
use medicodax_smart::assertion::{self, AssertionParams};
use medicodax_smart::{AuthError, AuthManager};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const CLIENT_ID: &str = "medicodax-interop-client";
const SCOPES: [&str; 2] = ["system/Patient.rs", "system/Observation.rs"];

fn interop_dir() -> PathBuf {
    let dir = std::env::var_os("MEDICODAX_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop"));
    let needed = ["node_modules/oidc-provider/package.json", "node_modules/jose/package.json", ".venv/bin/python", "smart/oidc-provider-server.mjs"];
    let missing: Vec<&str> = needed.into_iter().filter(|p| !dir.join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "the interop peers are not installed in {} (missing {missing:?}): run scripts/test-deps.sh, or set MEDICODAX_INTEROP_DIR",
        dir.display()
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is not on PATH: run scripts/test-deps.sh");
    dir
}

/// A peer process, killed when dropped; its stderr goes to a file for diagnosis.
struct Peer {
    _child: Child,
    stderr: PathBuf,
    token_endpoint: String,
}

impl Peer {
    async fn start(dir: &Path, program: &str, script: &str, jwks_file: &Path, work: &Path) -> Peer {
        let stderr = work.join(format!("{}.stderr", script.replace('/', "_")));
        let mut child = Command::new(program)
            .arg(script)
            .current_dir(dir)
            .env("SMART_JWKS_FILE", jwks_file)
            .env("SMART_CLIENT_ID", CLIENT_ID)
            .env("SMART_SCOPES", SCOPES.join(" "))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} {script}: {e}; run scripts/test-deps.sh"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let Ok(Ok(Some(line))) = line else {
            panic!("{script} printed no port: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        Peer { _child: child, stderr, token_endpoint: v["token_endpoint"].as_str().unwrap().to_owned() }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn peer_cfg(token_endpoint: &str) -> medicodax_config::ConnectionConfig {
    cfg("peer", "generic", "http://127.0.0.1:9/fhir", json!({"token_url": token_endpoint, "client_id": CLIENT_ID, "scopes": SCOPES}))
}

/// A clock whose wall time is now (the peers check exp against real time) and whose
/// sleeps move it forward (so the 5 s spacing does not wait in real time).
fn real_time_clock() -> ManualClock {
    ManualClock::auto_advance(SystemClock::new().now_unix())
}

/// Runs one authorization server through the whole judgement.
async fn judged_by(program: &str, script: &str, expected_lifetime: u64) {
    let dir = interop_dir();
    let work = tempfile::tempdir().unwrap();
    let clock = real_time_clock();
    // The JWKS we publish, exactly as the gateway would serve it.
    let published = AuthManager::builder(clock.shared()).connection_with_key(peer_cfg("http://127.0.0.1:9/token"), rsa_key()).build().unwrap().jwks();
    let jwks_file = work.path().join("jwks.json");
    std::fs::write(&jwks_file, serde_json::to_vec(&published).unwrap()).unwrap();
    let program = if program == "python" { dir.join(".venv/bin/python").display().to_string() } else { program.to_owned() };
    let peer = Peer::start(&dir, &program, script, &jwks_file, work.path()).await;

    // Accepted: a token through our AuthManager, and a second one (a new jti).
    let m = AuthManager::builder(clock.shared()).connection_with_key(peer_cfg(&peer.token_endpoint), rsa_key()).build().unwrap();
    let t = m.token("peer").await.unwrap_or_else(|e| panic!("{script} refused our assertion: {e}\npeer log:\n{}", peer.log()));
    assert!(!t.access_token().is_empty());
    assert_eq!(t.granted_scopes().scopes, SCOPES, "{script}");
    assert_eq!(t.lifetime(), Duration::from_secs(expected_lifetime), "{script}");
    assert!(m.invalidate(&t));
    let t2 = m.token("peer").await.unwrap_or_else(|e| panic!("{script} refused a second assertion: {e}\n{}", peer.log()));
    assert!(!t2.access_token().same_value(t.access_token()));

    // Refused: the same kid and client id, signed with another key.
    let impostor = AuthManager::builder(clock.shared())
        .connection_with_key(peer_cfg(&peer.token_endpoint), other_rsa_key().with_kid(rsa_key().kid()))
        .build()
        .unwrap();
    let e = impostor.token("peer").await.unwrap_err();
    assert!(matches!(e, AuthError::InvalidClient(_)), "{script}: expected invalid_client, got {e:?}");

    // Refused: a correctly signed assertion with exp − iat = 600 s (the harness's 5-minute cap).
    let now = SystemClock::new().now_unix();
    let p = AssertionParams { client_id: CLIENT_ID, token_endpoint: &peer.token_endpoint, jku: None, backdate_secs: 0, lifetime_secs: 600 };
    let long = assertion::mint(&rsa_key(), &p, now).unwrap();
    let resp = reqwest::Client::new()
        .post(&peer.token_endpoint)
        .form(&medicodax_smart::token::form_fields(Some(&SCOPES.join(" ")), long.expose_jws()))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(matches!(status, 400 | 401) && body["error"] == "invalid_client", "{script}: {status} {body}");
    assert!(peer.log().contains("5 minutes") || peer.log().contains("300 s"), "{script} log: {}", peer.log());
}

#[tokio::test]
async fn node_oidc_provider_judges_our_assertions() {
    judged_by("node", "smart/oidc-provider-server.mjs", 600).await;
}

#[tokio::test]
async fn authlib_judges_our_assertions() {
    judged_by("python", "smart/authlib_server.py", 300).await;
}

async fn run_checker(dir: &Path, program: &str, script: &str, input: &Value) -> Vec<Value> {
    let mut child = Command::new(program)
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} {script}: {e}; run scripts/test-deps.sh"));
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(input).unwrap()).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} output: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// PyJWT and `jose` verify our RS384 and ES384 assertions against our published JWKS and
/// reject a tampered copy and one signed by another key under our kid.
#[tokio::test]
async fn pyjwt_and_jose_verify_our_assertions_against_our_jwks() {
    let dir = interop_dir();
    let es_pem = PrivateKey::generate(Alg::ES384).unwrap().to_pkcs8_pem().unwrap();
    let es_key = || PrivateKey::from_pem(&es_pem, Alg::ES384).unwrap();
    let clock = real_time_clock();
    let m = AuthManager::builder(clock.shared())
        .connection_with_key(cfg("rs", "generic", "https://f.example/r4", json!({"client_id": CLIENT_ID})), rsa_key())
        .connection_with_key(cfg("es", "generic", "https://f.example/r4", json!({"client_id": CLIENT_ID, "alg": "ES384"})), es_key())
        .build()
        .unwrap();
    let jwks = serde_json::to_value(m.jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let aud = "https://auth.example/oauth2/token";
    let p = AssertionParams { client_id: CLIENT_ID, token_endpoint: aud, jku: None, backdate_secs: 30, lifetime_secs: 270 };
    let now = SystemClock::new().now_unix();
    let rs = assertion::mint(&rsa_key(), &p, now).unwrap();
    let es = assertion::mint(&es_key(), &p, now).unwrap();
    let tampered = {
        let parts: Vec<&str> = rs.expose_jws().split('.').collect();
        let mut claims = decode(rs.expose_jws()).1;
        claims["sub"] = json!("someone-else");
        format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&claims).unwrap()), parts[2])
    };
    let impostor = assertion::mint(&other_rsa_key().with_kid(rsa_key().kid()), &p, now).unwrap();
    let input = json!({
        "jwks": jwks, "audience": aud, "issuer": CLIENT_ID,
        "tokens": [rs.expose_jws(), es.expose_jws(), tampered, impostor.expose_jws()],
    });
    let python = dir.join(".venv/bin/python").display().to_string();
    for (program, script) in [(python.as_str(), "smart/verify_pyjwt.py"), ("node", "smart/verify-jose.mjs")] {
        let verdicts = run_checker(&dir, program, script, &input).await;
        let oks: Vec<bool> = verdicts.iter().map(|v| v["ok"] == true).collect();
        assert_eq!(oks, vec![true, true, false, false], "{script}: {verdicts:?}");
        let (_, ours) = decode(rs.expose_jws());
        assert_eq!(verdicts[0]["claims"], ours, "{script} read the claims we signed");
        assert_eq!(verdicts[0]["header"]["alg"], "RS384");
        assert_eq!(verdicts[1]["header"]["alg"], "ES384");
        assert_eq!(verdicts[1]["claims"]["jti"], json!(es.summary().claims.jti));
    }
}
