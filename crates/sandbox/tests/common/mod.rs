//! Shared test scaffolding: a tiny JWKS server (so the sandbox's fetch-by-URL path is
//! exercised), assertion builders, and HTTP helpers.
#![allow(dead_code)]

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use medicodax_clock::ManualClock;
use medicodax_jose::jws::{HeaderExtras, sign_with};
use medicodax_jose::{Alg, PrivateKey};
use medicodax_sandbox::{ClientKeys, ClientRegistration, JWT_BEARER, Sandbox, SandboxConfig, SandboxHandle, Vendor};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};

/// 2026-01-01T00:00:00Z, the pitfalls' fixed clock.
pub const NOW: i64 = 1_767_225_600;

pub const EPIC_URL_CLIENT: &str = "medicodax-epic-sandbox";
pub const EPIC_INLINE_CLIENT: &str = "epic-static-key-client";
pub const ECW_CLIENT: &str = "medicodax-ecw-sandbox";

struct JwksState {
    keys: Vec<Value>,
    cache_control: String,
    hits: u64,
}

/// A JWKS endpoint whose keys and `Cache-Control` a test can change, counting fetches.
pub struct JwksServer {
    pub url: String,
    state: Arc<Mutex<JwksState>>,
}

async fn serve_jwks(State(state): State<Arc<Mutex<JwksState>>>) -> impl IntoResponse {
    let (keys, cc) = {
        let mut s = state.lock().expect("jwks state");
        s.hits += 1;
        (s.keys.clone(), s.cache_control.clone())
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(&cc).expect("cache-control"));
    (headers, axum::Json(json!({ "keys": keys })))
}

impl JwksServer {
    pub async fn start(keys: &[&PrivateKey], cache_control: &str) -> JwksServer {
        let state = Arc::new(Mutex::new(JwksState { keys: keys.iter().map(|k| jwk(k)).collect(), cache_control: cache_control.to_owned(), hits: 0 }));
        let app = Router::new().route("/.well-known/jwks.json", get(serve_jwks)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind jwks");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { url: format!("http://{addr}/.well-known/jwks.json"), state }
    }

    pub fn set_keys(&self, keys: &[&PrivateKey]) {
        self.state.lock().expect("jwks state").keys = keys.iter().map(|k| jwk(k)).collect();
    }

    pub fn set_cache_control(&self, cc: &str) {
        self.state.lock().expect("jwks state").cache_control = cc.to_owned();
    }

    pub fn hits(&self) -> u64 {
        self.state.lock().expect("jwks state").hits
    }
}

/// The public JWK of a key, as our gateway publishes it.
pub fn jwk(key: &PrivateKey) -> Value {
    serde_json::to_value(key.public_jwk()).expect("jwk json")
}

/// Keys are slow to generate in debug builds: make each kind once per test binary.
pub fn rsa_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(Alg::RS384).expect("rsa key"))
}

pub fn rsa_key2() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(Alg::RS384).expect("rsa key 2"))
}

pub fn ec_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(Alg::ES384).expect("ec key"))
}

/// Claims as our SMART client makes them: iat = now − 30, exp = iat + 270, fresh jti.
pub fn claims(client_id: &str, aud: &str, now: i64) -> Value {
    json!({
        "iss": client_id, "sub": client_id, "aud": aud,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now - 30, "exp": now + 240,
    })
}

/// Claims with some members replaced (`null` removes one).
pub fn claims_with(client_id: &str, aud: &str, now: i64, changes: Value) -> Value {
    let mut c = claims(client_id, aud, now);
    if let (Some(obj), Value::Object(ch)) = (c.as_object_mut(), changes) {
        for (k, v) in ch {
            if v.is_null() {
                obj.remove(&k);
            } else {
                obj.insert(k, v);
            }
        }
    }
    c
}

/// A compact JWS signed by our keys layer (RS384 or ES384 by the key).
pub fn sign(key: &PrivateKey, claims: &Value) -> String {
    sign_with(key, "JWT", claims, &HeaderExtras::default()).expect("sign")
}

/// A JWS signed with jsonwebtoken in an algorithm our keys layer does not sign with
/// (RS256, RS512), or HS256 with `secret`.
pub fn sign_other(alg: jsonwebtoken::Algorithm, kid: &str, claims: &Value, rsa: Option<&PrivateKey>, secret: Option<&[u8]>) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    let key = match (rsa, secret) {
        (Some(k), _) => jsonwebtoken::EncodingKey::from_rsa_pem(k.to_pkcs8_pem().expect("pem").as_bytes()).expect("encoding key"),
        (None, Some(s)) => jsonwebtoken::EncodingKey::from_secret(s).expect("hmac key"),
        (None, None) => panic!("no key"),
    };
    jsonwebtoken::encode(&header, claims, &key).expect("encode")
}

/// An unsigned token (`alg` as given, empty signature).
pub fn unsigned(alg: &str, kid: &str, claims: &Value) -> String {
    let h = B64.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string());
    let p = B64.encode(claims.to_string());
    format!("{h}.{p}.")
}

pub struct Env {
    pub sandbox: SandboxHandle,
    pub clock: ManualClock,
    pub jwks: JwksServer,
    pub http: reqwest::Client,
}

/// A sandbox on a manual clock at NOW with three clients: Epic by JWKS URL, Epic with
/// an inline (static) JWKS, and eClinicalWorks by JWKS URL. The JWKS server serves the
/// RSA and EC keys with `cache_control`.
pub async fn env_with(cache_control: &str, tweak: impl FnOnce(&mut SandboxConfig)) -> Env {
    let clock = ManualClock::new(NOW);
    let jwks = JwksServer::start(&[rsa_key(), ec_key()], cache_control).await;
    let inline = json!({"keys": [jwk(rsa_key()), jwk(ec_key())]});
    let mut config = SandboxConfig {
        clients: vec![
            ClientRegistration::new(EPIC_URL_CLIENT, Vendor::Epic, ClientKeys::JwksUrl(jwks.url.clone())),
            ClientRegistration::new(EPIC_INLINE_CLIENT, Vendor::Epic, ClientKeys::Inline(inline)),
            ClientRegistration::new(ECW_CLIENT, Vendor::EClinicalWorks, ClientKeys::JwksUrl(jwks.url.clone())),
        ],
        clock: clock.shared(),
        ..SandboxConfig::default()
    };
    tweak(&mut config);
    let sandbox = Sandbox::start(config).await.expect("sandbox starts");
    Env { sandbox, clock, jwks, http: reqwest::Client::new() }
}

pub async fn env() -> Env {
    env_with("max-age=300", |_| {}).await
}

/// The answer of a request: status, headers, body as JSON (`Null` when not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or("")
    }
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, headers, body, text }
}

impl Env {
    /// POSTs a token request form to `vendor`'s token endpoint.
    pub async fn token_form(&self, vendor: Vendor, form: &[(&str, &str)]) -> Answer {
        answer(self.http.post(self.sandbox.token_url(vendor)).form(form).send().await.expect("token request")).await
    }

    /// A well-formed token request carrying `assertion` (and `scope` when given).
    pub async fn token(&self, vendor: Vendor, assertion: &str, scope: Option<&str>) -> Answer {
        let mut form = vec![("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER), ("client_assertion", assertion)];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.token_form(vendor, &form).await
    }

    /// A correct assertion for the standard client of `vendor`, signed by the RSA key.
    pub fn good_assertion(&self, vendor: Vendor) -> String {
        let client = match vendor {
            Vendor::Epic => EPIC_URL_CLIENT,
            Vendor::EClinicalWorks => ECW_CLIENT,
        };
        sign(rsa_key(), &claims(client, &self.sandbox.token_url(vendor), NOW))
    }

    /// GETs a FHIR URL (absolute, or relative to the side's base) with a bearer token.
    pub async fn fhir(&self, vendor: Vendor, path_or_url: &str, token: Option<&str>) -> Answer {
        let url = if path_or_url.starts_with("http") { path_or_url.to_owned() } else { format!("{}/{}", self.sandbox.fhir_base(vendor), path_or_url) };
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.expect("fhir request")).await
    }
}

/// The resources of the `match` entries of a searchset.
pub fn matches(bundle: &Value) -> Vec<&Value> {
    bundle["entry"].as_array().map(|es| es.iter().filter(|e| e["search"]["mode"] == "match").map(|e| &e["resource"]).collect()).unwrap_or_default()
}

/// The OperationOutcome resources of the `outcome` entries of a searchset.
pub fn outcomes(bundle: &Value) -> Vec<&Value> {
    bundle["entry"].as_array().map(|es| es.iter().filter(|e| e["search"]["mode"] == "outcome").map(|e| &e["resource"]).collect()).unwrap_or_default()
}

/// The `next` link of a Bundle.
pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == "next").and_then(|l| l["url"].as_str()).map(str::to_owned)
}
