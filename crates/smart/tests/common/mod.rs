//! Shared test helpers: connection configs, a cached test key, wiremock token endpoints,
//! JWS decoding, and a log capture.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medicodax_clock::ManualClock;
use medicodax_config::ConnectionConfig;
use medicodax_jose::{Alg, PrivateKey};
use medicodax_smart::AuthManager;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600;

/// A connection config from JSON (so new optional config fields never break the tests).
pub fn cfg(name: &str, vendor: &str, fhir_base: &str, extra: Value) -> ConnectionConfig {
    let mut v = json!({
        "name": name,
        "vendor": vendor,
        "fhir_base": fhir_base,
        "client_id": format!("cid-{name}"),
        "scopes": ["system/Patient.rs"],
    });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    serde_json::from_value(v).expect("valid connection config")
}

/// One RSA key per test process (generation is slow), loaded fresh each time.
pub fn rsa_key() -> PrivateKey {
    static PEM: OnceLock<String> = OnceLock::new();
    let pem = PEM.get_or_init(|| PrivateKey::generate(Alg::RS384).unwrap().to_pkcs8_pem().unwrap());
    PrivateKey::from_pem(pem, Alg::RS384).unwrap()
}

/// A second, different RSA key.
pub fn other_rsa_key() -> PrivateKey {
    static PEM: OnceLock<String> = OnceLock::new();
    let pem = PEM.get_or_init(|| PrivateKey::generate(Alg::RS384).unwrap().to_pkcs8_pem().unwrap());
    PrivateKey::from_pem(pem, Alg::RS384).unwrap()
}

/// A manager over `conns`, each signing with [`rsa_key`].
pub fn manager(clock: &ManualClock, conns: Vec<ConnectionConfig>) -> AuthManager {
    conns.into_iter().fold(AuthManager::builder(clock.shared()), |b, c| b.connection_with_key(c, rsa_key())).build().expect("manager builds")
}

/// A token endpoint that answers `at-1`, `at-2`, … (with `prefix`), counting requests.
#[derive(Clone)]
pub struct TokenStub {
    pub count: Arc<AtomicUsize>,
    pub prefix: String,
    pub body: Value,
    pub delay: Duration,
}

impl TokenStub {
    pub fn new(expires_in: Value) -> Self {
        let mut body = json!({"token_type": "Bearer"});
        if !expires_in.is_null() {
            body["expires_in"] = expires_in;
        }
        TokenStub { count: Arc::new(AtomicUsize::new(0)), prefix: "at-".into(), body, delay: Duration::ZERO }
    }
    pub fn prefix(mut self, p: &str) -> Self {
        self.prefix = p.into();
        self
    }
    pub fn with(mut self, k: &str, v: Value) -> Self {
        self.body[k] = v;
        self
    }
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Respond for TokenStub {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let mut body = self.body.clone();
        body["access_token"] = json!(format!("{}{n}", self.prefix));
        ResponseTemplate::new(200).set_body_json(body).set_delay(self.delay)
    }
}

/// Answers the scripted responses in order, repeating the last; counts requests.
#[derive(Clone)]
pub struct Script {
    pub count: Arc<AtomicUsize>,
    pub steps: Arc<Vec<ResponseTemplate>>,
}

impl Script {
    pub fn new(steps: Vec<ResponseTemplate>) -> Self {
        Script { count: Arc::new(AtomicUsize::new(0)), steps: Arc::new(steps) }
    }
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Respond for Script {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        self.steps[n.min(self.steps.len() - 1)].clone()
    }
}

/// A 200 token answer.
pub fn ok_token(token: &str, expires_in: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}))
}

/// A mock server with `responder` on `POST /token`; returns the server and the token URL.
pub async fn token_server<R: Respond + 'static>(responder: R) -> (MockServer, String) {
    let server = MockServer::start().await;
    Mock::given(method("POST")).and(path("/token")).respond_with(responder).mount(&server).await;
    let url = format!("{}/token", server.uri());
    (server, url)
}

/// The decoded form pairs of a request body.
pub fn form(req: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&req.body).into_owned().collect()
}

/// One form field.
pub fn field(req: &Request, name: &str) -> Option<String> {
    form(req).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Header and claims of a compact JWS (not verified).
pub fn decode(jws: &str) -> (Value, Value) {
    let mut it = jws.split('.');
    let h = B64.decode(it.next().unwrap()).unwrap();
    let p = B64.decode(it.next().unwrap()).unwrap();
    (serde_json::from_slice(&h).unwrap(), serde_json::from_slice(&p).unwrap())
}

/// The token POSTs a server received.
pub async fn token_posts(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default().into_iter().filter(|r| r.method.as_str() == "POST").collect()
}

/// Waits (real time, bounded) until `server` has received `n` requests.
pub async fn wait_for_requests(server: &MockServer, n: usize) {
    for _ in 0..500 {
        if server.received_requests().await.unwrap_or_default().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server did not receive {n} requests");
}

/// Captures every log line emitted on this thread while the guard from [`LogCapture::install`]
/// lives. One global subscriber serves the whole test binary and writes each line to the
/// capture active on the emitting thread (use a current-thread runtime), so tests running
/// in parallel never disturb each other's capture through tracing's callsite cache.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static ACTIVE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Stops capturing on this thread when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| *a.borrow_mut() = None);
    }
}

struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ACTIVE.with(|a| {
            if let Some(c) = &*a.borrow() {
                c.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// Starts capturing this thread's log lines.
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let sub = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_ansi(false).with_writer(|| ThreadWriter).finish();
            tracing::subscriber::set_global_default(sub).expect("the only global subscriber of this test binary");
        });
        ACTIVE.with(|a| *a.borrow_mut() = Some(self.clone()));
        CaptureGuard(())
    }
}
