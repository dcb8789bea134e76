//! Shared test fixtures: a fake token source with the auth manager's renewal rule, and
//! helpers to build clients and searchset pages.
#![allow(dead_code)]

use async_trait::async_trait;
use medicodax_clock::{Clock, ManualClock, Mono};
use medicodax_fhir::{
    Bearer, FhirBase, FhirClient, FhirConfig, Jitter, RateLimited, RetryPolicy, SearchProfile, TokenError, TokenSource,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::{MockServer, Request};

/// The pitfalls' fixed test clock: 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600;

#[derive(Default)]
struct State {
    current: Option<(Bearer, Mono)>,
    minted: u32,
    invalidated: Vec<String>,
    permits: u32,
    denials: VecDeque<Duration>,
    fail_next_bearer: Option<TokenError>,
}

/// Mints `at-1`, `at-2`, … and renews at `sent_at + lifetime − min(buffer, lifetime/5)`
/// on the clock's monotonic line, like the auth manager (DESIGN.md §4).
pub struct FakeTokens {
    clock: ManualClock,
    lifetime: Duration,
    buffer: Duration,
    state: Mutex<State>,
}

impl FakeTokens {
    pub fn new(clock: &ManualClock, lifetime_secs: u64) -> Arc<Self> {
        Arc::new(Self { clock: clock.clone(), lifetime: Duration::from_secs(lifetime_secs), buffer: Duration::from_secs(60), state: Mutex::default() })
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn mint(&self, st: &mut State) -> Bearer {
        st.minted += 1;
        let b = Bearer::new(&format!("at-{}", st.minted)).unwrap().with_tag(st.minted.into());
        let renew = self.lifetime - self.buffer.min(self.lifetime / 5);
        st.current = Some((b.clone(), self.clock.monotonic().add(renew)));
        b
    }

    /// Another worker renews now (pitfall 14 d).
    pub fn renew_elsewhere(&self) -> Bearer {
        let mut st = self.st();
        self.mint(&mut st)
    }

    pub fn minted(&self) -> u32 {
        self.st().minted
    }

    pub fn invalidated(&self) -> Vec<String> {
        self.st().invalidated.clone()
    }

    pub fn permits(&self) -> u32 {
        self.st().permits
    }

    /// The next permits are refused with these waits, in order.
    pub fn deny_permits(&self, waits: &[Duration]) {
        self.st().denials.extend(waits.iter().copied());
    }

    /// The next `bearer()` fails with `e`.
    pub fn fail_next_bearer(&self, e: TokenError) {
        self.st().fail_next_bearer = Some(e);
    }
}

#[async_trait]
impl TokenSource for FakeTokens {
    async fn bearer(&self) -> Result<Bearer, TokenError> {
        let mut st = self.st();
        if let Some(e) = st.fail_next_bearer.take() {
            return Err(e);
        }
        let now = self.clock.monotonic();
        match &st.current {
            Some((b, renew_at)) if now < *renew_at => Ok(b.clone()),
            _ => Ok(self.mint(&mut st)),
        }
    }

    async fn invalidate(&self, rejected: &Bearer) {
        let mut st = self.st();
        st.invalidated.push(rejected.expose_secret().to_owned());
        if st.current.as_ref().is_some_and(|(b, _)| b == rejected) {
            st.current = None;
        }
    }

    async fn acquire_request(&self) -> Result<(), RateLimited> {
        let mut st = self.st();
        if let Some(d) = st.denials.pop_front() {
            return Err(RateLimited { retry_after: d });
        }
        st.permits += 1;
        Ok(())
    }
}

/// Retries with exact delays, so tests can assert the clock.
pub fn exact_retry() -> RetryPolicy {
    RetryPolicy { jitter: Jitter::None, ..RetryPolicy::default() }
}

/// A client for `{server}/fhir/r4` with `profile`, exact retries, and an auto-advancing clock.
pub fn client_for(server: &MockServer, profile: SearchProfile) -> (FhirClient, Arc<FakeTokens>, ManualClock) {
    let clock = ManualClock::auto_advance(NOW);
    let tokens = FakeTokens::new(&clock, 3600);
    let client = client_with(&format!("{}/fhir/r4", server.uri()), profile, exact_retry(), &clock, tokens.clone());
    (client, tokens, clock)
}

pub fn client_with(base: &str, profile: SearchProfile, retry: RetryPolicy, clock: &ManualClock, tokens: Arc<FakeTokens>) -> FhirClient {
    let config = FhirConfig::new(FhirBase::parse(base).unwrap()).with_profile(profile).with_retry(retry);
    FhirClient::new(config, tokens, clock.shared()).unwrap()
}

/// A searchset page of `resources` with an optional next link.
pub fn page(resources: Vec<Value>, total: Option<u64>, next: Option<&str>) -> Value {
    let mut b = json!({"resourceType":"Bundle","type":"searchset",
        "entry": resources.into_iter().map(|r| json!({"search":{"mode":"match"},"resource":r})).collect::<Vec<_>>()});
    if let Some(t) = total {
        b["total"] = json!(t);
    }
    if let Some(n) = next {
        b["link"] = json!([{"relation":"self","url":"ignored"},{"relation":"next","url":n}]);
    }
    b
}

pub fn obs(id: &str) -> Value {
    json!({"resourceType":"Observation","id":id,"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pt-1001"}})
}

pub fn fhir_json(body: &Value) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/fhir+json")
}

pub fn outcome(status: u16, severity: &str, code: &str, diagnostics: &str) -> wiremock::ResponseTemplate {
    let oo = json!({"resourceType":"OperationOutcome","issue":[{"severity":severity,"code":code,"diagnostics":diagnostics}]});
    wiremock::ResponseTemplate::new(status).set_body_raw(oo.to_string(), "application/fhir+json")
}

/// The bearer token a request carried.
pub fn token_of(r: &Request) -> String {
    r.headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("").to_owned()
}

/// Path and query as the server received them.
pub fn target_of(r: &Request) -> String {
    match r.url.query() {
        Some(q) => format!("{}?{}", r.url.path(), q),
        None => r.url.path().to_owned(),
    }
}

/// A query parameter of a received request (decoded).
pub fn query_param(r: &Request, name: &str) -> Option<String> {
    r.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
