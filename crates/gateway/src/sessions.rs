//! Dashboard sessions: short-lived RS384 session JWTs in a cookie, CSRF values, logout
//! revocation and login rate limits.
//!
//! A login with a built-in user ([`crate::users::UserStore::authenticate`]) issues a
//! compact JWS signed by the gateway key (`typ` [`SESSION_TYP`]) with the claims of
//! [`SessionClaims`]: `iss` (the gateway's audience), `sub`, `roles`, `iat`, `exp`
//! (`auth.session_secs` later), a random `csrf` value and a random `jti`. It travels in
//! an `HttpOnly; SameSite=Strict; Path=/` cookie, `Secure` (and `__Host-` prefixed) when
//! the audience is `https`.
//!
//! Every request verifies the cookie: strict JWS shape, `typ`, a `kid` that names one of
//! the gateway ring's keys ([`crate::keys::GatewayKeys::verifying_keys`]), the signature
//! under the RS384/ES384 allow-list and the key, the claims (no unknown members), `iss`,
//! `exp`, and that its `jti` was not revoked by a logout. Forms that change anything
//! carry the session's `csrf` value in a hidden field, compared in constant time
//! ([`Sessions::csrf_ok`]); SameSite=Strict is the second line.
//!
//! Logout puts the session's `jti` on an in-memory denylist until its `exp` (a restart
//! forgets it; sessions are short). Failed logins are limited per user name and per
//! client address ([`LoginLimiter`]): once a limit is reached, logins are refused
//! without checking the password until the window has passed.

use crate::keys::GatewayKeys;
use medicodax_clock::SharedClock;
use medicodax_jose::Alg;
use medicodax_jose::jws::{Compact, HeaderRules};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The JOSE `typ` of a session token.
pub const SESSION_TYP: &str = "medicodax-session+jwt";

/// Algorithms a session may be signed with (the gateway key's).
const SESSION_ALGS: &[Alg] = &[Alg::RS384, Alg::ES384];

/// The largest session cookie value looked at.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `iat`, seconds.
const IAT_LEEWAY: i64 = 60;

/// The claims of a session token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionClaims {
    /// The gateway's audience.
    pub iss: String,
    /// The user name.
    pub sub: String,
    /// The user's roles when the session was issued.
    pub roles: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// The value every form of this session must carry.
    pub csrf: String,
    /// The session id (revoked by logout).
    pub jti: String,
}

impl std::fmt::Debug for SessionClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionClaims")
            .field("sub", &self.sub)
            .field("roles", &self.roles)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

/// Why a session token was refused. Messages never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No session cookie.
    #[error("no session")]
    Missing,
    /// Not a compact JWS of the right shape, or too long.
    #[error("the session token is malformed")]
    Malformed,
    /// The `typ` is not [`SESSION_TYP`] (another kind of token signed by us).
    #[error("the token is not a session token")]
    WrongTyp,
    /// The `kid` names no key of the gateway ring.
    #[error("the session was signed by a key this gateway does not hold")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the session signature does not verify")]
    BadSignature,
    /// The claims are not session claims, or name another gateway.
    #[error("the session claims are invalid")]
    BadClaims,
    /// Past `exp`, or issued in the future.
    #[error("the session has expired")]
    Expired,
    /// Logged out.
    #[error("the session was ended by a logout")]
    Revoked,
    /// Signing failed.
    #[error("the session could not be signed")]
    Sign,
    /// The system random generator failed.
    #[error("no randomness available")]
    Random,
}

/// Limits on failed logins.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// Failures allowed per user name *from one client address* within the window (so
    /// nobody can lock a user out from elsewhere by guessing wrong on purpose).
    pub per_user: usize,
    /// Failures allowed per client address within the window.
    pub per_addr: usize,
    /// The window, milliseconds.
    pub window_ms: i64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits { per_user: 5, per_addr: 20, window_ms: 15 * 60 * 1000 }
    }
}

fn user_key(user: &str, addr: &str) -> String {
    format!("{user}\u{0}{addr}")
}

/// The most keys a failure table holds before it is pruned of expired entries.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
struct Failures {
    by_user: HashMap<String, VecDeque<i64>>,
    by_addr: HashMap<String, VecDeque<i64>>,
}

/// Failed-login counting per user name and per client address (in memory).
pub struct LoginLimiter {
    limits: LoginLimits,
    state: Mutex<Failures>,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn prune(q: &mut VecDeque<i64>, now_ms: i64, window_ms: i64) {
    while q.front().is_some_and(|t| now_ms.saturating_sub(*t) >= window_ms) {
        q.pop_front();
    }
}

fn over(table: &mut HashMap<String, VecDeque<i64>>, key: &str, limit: usize, now_ms: i64, window_ms: i64) -> Option<i64> {
    let q = table.get_mut(key)?;
    prune(q, now_ms, window_ms);
    if q.len() >= limit { q.front().map(|first| first.saturating_add(window_ms).saturating_sub(now_ms).max(1)) } else { None }
}

fn push(table: &mut HashMap<String, VecDeque<i64>>, key: &str, now_ms: i64, window_ms: i64) {
    if table.len() >= MAX_TRACKED && !table.contains_key(key) {
        table.retain(|_, q| {
            prune(q, now_ms, window_ms);
            !q.is_empty()
        });
        if table.len() >= MAX_TRACKED {
            return;
        }
    }
    let q = table.entry(key.to_owned()).or_default();
    q.push_back(now_ms);
    // A key never holds more entries than any limit needs.
    while q.len() > 1000 {
        q.pop_front();
    }
}

impl LoginLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: LoginLimits) -> Self {
        LoginLimiter { limits, state: Mutex::new(Failures::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(ms)` when `user` or `addr` has used up its failures: try again in `ms`.
    pub fn check(&self, user: &str, addr: &str, now_ms: i64) -> Result<(), i64> {
        let l = self.limits;
        let mut s = self.lock();
        let u = over(&mut s.by_user, &user_key(user, addr), l.per_user, now_ms, l.window_ms);
        let a = over(&mut s.by_addr, addr, l.per_addr, now_ms, l.window_ms);
        match u.max(a) {
            Some(ms) => Err(ms),
            None => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn failed(&self, user: &str, addr: &str, now_ms: i64) {
        let w = self.limits.window_ms;
        let mut s = self.lock();
        push(&mut s.by_user, &user_key(user, addr), now_ms, w);
        push(&mut s.by_addr, addr, now_ms, w);
    }

    /// Forgets a user's failures from `addr` after a successful login (the address keeps its count).
    pub fn succeeded(&self, user: &str, addr: &str) {
        self.lock().by_user.remove(&user_key(user, addr));
    }
}

/// Issues and checks dashboard sessions.
pub struct Sessions {
    keys: Arc<GatewayKeys>,
    clock: SharedClock,
    issuer: String,
    lifetime: i64,
    secure: bool,
    denylist: Mutex<HashMap<String, i64>>,
    /// Failed-login limits.
    pub limiter: LoginLimiter,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("issuer", &self.issuer).field("lifetime", &self.lifetime).field("secure", &self.secure).finish_non_exhaustive()
    }
}

/// `n` random bytes as lowercase hex, from the system generator.
pub fn random_hex(n: usize) -> Result<String, SessionError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut b).map_err(|_| SessionError::Random)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Constant-time equality of two strings (lengths are not secret).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

impl Sessions {
    /// Sessions signed by `keys`, issued by `issuer` (the gateway's audience), lasting
    /// `lifetime_secs`; cookies are `Secure` when `issuer` is an https URL.
    pub fn new(keys: Arc<GatewayKeys>, clock: SharedClock, issuer: &str, lifetime_secs: i64, limits: LoginLimits) -> Self {
        Sessions {
            keys,
            clock,
            issuer: issuer.to_owned(),
            lifetime: lifetime_secs.max(60),
            secure: issuer.starts_with("https://"),
            denylist: Mutex::new(HashMap::new()),
            limiter: LoginLimiter::new(limits),
        }
    }

    /// The session cookie's name: `__Host-medicodax_session` over https, else `medicodax_session`.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure { "__Host-medicodax_session" } else { "medicodax_session" }
    }

    /// Whether cookies carry `Secure`.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Issues a session for `user` with `roles`: the token and its claims.
    pub fn issue(&self, user: &str, roles: &[String]) -> Result<(String, SessionClaims), SessionError> {
        let now = self.clock.now_unix();
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            sub: user.to_owned(),
            roles: roles.to_vec(),
            iat: now,
            exp: now.saturating_add(self.lifetime),
            csrf: random_hex(32)?,
            jti: random_hex(16)?,
        };
        let token = self.keys.sign(SESSION_TYP, &claims).map_err(|_| SessionError::Sign)?;
        Ok((token, claims))
    }

    /// Signs `claims` with the gateway key as a JWS of `typ` (session-bound records such
    /// as the worksheet review ticket).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, SessionError> {
        self.keys.sign(typ, claims).map_err(|_| SessionError::Sign)
    }

    /// Verifies a JWS of `typ` signed by one of the gateway ring's keys and parses its
    /// claims (unknown members refused when `T` says so). Time is the caller's to check.
    pub fn verify_signed<T: serde::de::DeserializeOwned>(&self, token: &str, typ: &str) -> Result<T, SessionError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(SessionError::Malformed);
        }
        let rules = HeaderRules { allowed: &["typ", "kid"], typ: Some(typ), require_kid: true };
        let compact = Compact::parse(token, rules).map_err(|e| match e {
            medicodax_jose::jws::JwsError::WrongTyp { .. } => SessionError::WrongTyp,
            _ => SessionError::Malformed,
        })?;
        let kid = compact.kid().ok_or(SessionError::Malformed)?;
        let keys = self.keys.verifying_keys();
        let key = keys.iter().find(|k| k.kid() == Some(kid)).ok_or(SessionError::UnknownKey)?;
        compact.verify(key, SESSION_ALGS).map_err(|_| SessionError::BadSignature)?;
        let payload = compact.payload_object().map_err(|_| SessionError::BadClaims)?;
        serde_json::from_value(serde_json::Value::Object(payload)).map_err(|_| SessionError::BadClaims)
    }

    /// Now, Unix seconds, on the sessions' clock.
    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// Verifies a session token; see the module documentation for the checks.
    pub fn verify(&self, token: &str) -> Result<SessionClaims, SessionError> {
        let claims: SessionClaims = self.verify_signed(token, SESSION_TYP)?;
        if claims.iss != self.issuer || claims.csrf.len() < 32 || claims.jti.is_empty() {
            return Err(SessionError::BadClaims);
        }
        let now = self.clock.now_unix();
        if now >= claims.exp || claims.iat > now.saturating_add(IAT_LEEWAY) || claims.exp.saturating_sub(claims.iat) > self.lifetime.saturating_add(IAT_LEEWAY) {
            return Err(SessionError::Expired);
        }
        if self.is_revoked(&claims.jti, now) {
            return Err(SessionError::Revoked);
        }
        Ok(claims)
    }

    fn is_revoked(&self, jti: &str, now: i64) -> bool {
        let d = self.denylist.lock().unwrap_or_else(|p| p.into_inner());
        d.get(jti).is_some_and(|exp| now < *exp)
    }

    /// Ends a session: its `jti` is refused until its `exp`.
    pub fn revoke(&self, claims: &SessionClaims) {
        let now = self.clock.now_unix();
        let mut d = self.denylist.lock().unwrap_or_else(|p| p.into_inner());
        d.retain(|_, exp| now < *exp);
        d.insert(claims.jti.clone(), claims.exp);
    }

    /// Whether a form's `csrf` value is the session's.
    pub fn csrf_ok(claims: &SessionClaims, submitted: Option<&str>) -> bool {
        submitted.is_some_and(|s| constant_time_eq(s, &claims.csrf))
    }

    fn cookie(&self, name: &str, value: &str, max_age: i64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
    }

    /// The `Set-Cookie` value carrying a session token.
    pub fn set_cookie(&self, token: &str, claims: &SessionClaims) -> String {
        self.cookie(self.cookie_name(), token, claims.exp.saturating_sub(self.clock.now_unix()).max(0))
    }

    /// The `Set-Cookie` value that clears the session cookie.
    pub fn clear_cookie(&self) -> String {
        self.cookie(self.cookie_name(), "", 0)
    }

    /// The `Set-Cookie` value of the login form's double-submit cookie (10 minutes).
    pub fn login_cookie(&self, value: &str) -> String {
        self.cookie(LOGIN_COOKIE, value, 600)
    }

    /// The `Set-Cookie` value clearing the login form's cookie.
    pub fn clear_login_cookie(&self) -> String {
        self.cookie(LOGIN_COOKIE, "", 0)
    }

    /// The session token from a request's `Cookie` headers.
    pub fn token_from<'h>(&self, headers: &'h http::HeaderMap) -> Option<&'h str> {
        cookie_value(headers, self.cookie_name())
    }
}

/// The login form's double-submit cookie (a login CSRF guard: no session exists yet).
pub const LOGIN_COOKIE: &str = "medicodax_login";

/// The value of cookie `name` in a request's `Cookie` headers (first match).
pub fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use medicodax_clock::{Clock, ManualClock};
    use medicodax_jose::{KeyRing, RotationPolicy};
    use std::time::Duration;

    fn setup(dir: &std::path::Path) -> (Sessions, Arc<ManualClock>, Arc<GatewayKeys>) {
        let clock = Arc::new(ManualClock::new(1_767_225_600));
        let shared: SharedClock = clock.clone();
        let policy = RotationPolicy { publish_lead: 3600, consumer_cache_ttl: 3600, max_token_lifetime: 300, jwks_max_age: 300 };
        let (ring, _) = KeyRing::open_or_create(dir, "gateway", Alg::RS384, policy, clock.now_unix()).unwrap();
        let keys = Arc::new(GatewayKeys::new(ring, shared.clone()));
        (Sessions::new(Arc::clone(&keys), shared, "http://127.0.0.1:8080", 3600, LoginLimits::default()), clock, keys)
    }

    #[test]
    fn a_session_round_trips_with_its_claims() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, _) = setup(dir.path());
        let (token, claims) = s.issue("alice", &["coder".into()]).unwrap();
        let back = s.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.sub, "alice");
        assert_eq!(back.exp - back.iat, 3600);
        assert_eq!(back.csrf.len(), 64);
        assert!(!format!("{back:?}").contains(&back.csrf), "Debug must not show the csrf value");
    }

    #[test]
    fn tampered_payload_or_signature_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, _) = setup(dir.path());
        let (token, _) = s.issue("alice", &["coder".into()]).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["admin"]);
        let forged = format!("{}.{}.{}", parts[0], b64.encode(serde_json::to_vec(&claims).unwrap()), parts[2]);
        assert_eq!(s.verify(&forged), Err(SessionError::BadSignature));
        let mut sig = b64.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        assert_eq!(s.verify(&format!("{}.{}.{}", parts[0], parts[1], b64.encode(sig))), Err(SessionError::BadSignature));
        for garbage in ["", "a.b", "a.b.c", "....", "%%%.%%%.%%%", &"x".repeat(10_000)] {
            assert_eq!(s.verify(garbage), Err(SessionError::Malformed), "{garbage:.20}");
        }
    }

    #[test]
    fn expired_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (s, clock, _) = setup(dir.path());
        let (token, _) = s.issue("alice", &[]).unwrap();
        clock.advance(Duration::from_secs(3599));
        assert!(s.verify(&token).is_ok());
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.verify(&token), Err(SessionError::Expired));
    }

    #[test]
    fn a_receipt_or_checkpoint_signed_by_the_same_key_is_not_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let (s, clock, keys) = setup(dir.path());
        let now = clock.now_unix();
        let claims = serde_json::json!({"iss": "http://127.0.0.1:8080", "sub": "admin", "roles": ["admin"], "iat": now, "exp": now + 60, "csrf": "a".repeat(64), "jti": "j"});
        let receipt = keys.sign(medicodax_wire::receipt::RECEIPT_TYP, &claims).unwrap();
        assert_eq!(s.verify(&receipt), Err(SessionError::WrongTyp));
        // The same claims with the session typ verify: only the typ differed.
        assert!(s.verify(&keys.sign(SESSION_TYP, &claims).unwrap()).is_ok());
    }

    #[test]
    fn a_session_from_another_key_or_gateway_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let (s, _, _) = setup(dir.path());
        let (s2, _, _) = setup(other.path());
        let (token, _) = s2.issue("alice", &[]).unwrap();
        assert_eq!(s.verify(&token), Err(SessionError::UnknownKey));
        let (s3, _, keys3) = setup(dir.path());
        let _ = s3;
        let elsewhere = Sessions::new(keys3, Arc::new(ManualClock::new(1_767_225_600)), "http://other:1", 3600, LoginLimits::default());
        let (token, _) = elsewhere.issue("alice", &[]).unwrap();
        assert_eq!(s.verify(&token), Err(SessionError::BadClaims));
    }

    #[test]
    fn logout_revokes_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, _) = setup(dir.path());
        let (a, ca) = s.issue("alice", &[]).unwrap();
        let (b, _) = s.issue("alice", &[]).unwrap();
        s.revoke(&ca);
        assert_eq!(s.verify(&a), Err(SessionError::Revoked));
        assert!(s.verify(&b).is_ok(), "another session of the same user stays valid");
    }

    #[test]
    fn csrf_is_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, _) = setup(dir.path());
        let (_, c) = s.issue("alice", &[]).unwrap();
        assert!(Sessions::csrf_ok(&c, Some(&c.csrf)));
        assert!(!Sessions::csrf_ok(&c, None));
        assert!(!Sessions::csrf_ok(&c, Some("")));
        assert!(!Sessions::csrf_ok(&c, Some(&c.csrf[1..])));
        let mut wrong = c.csrf.clone();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!Sessions::csrf_ok(&c, Some(&wrong)));
    }

    #[test]
    fn cookies_are_httponly_strict_and_secure_over_https() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, keys) = setup(dir.path());
        let (t, c) = s.issue("alice", &[]).unwrap();
        let v = s.set_cookie(&t, &c);
        assert!(v.starts_with("medicodax_session="), "{v}");
        assert!(v.contains("; HttpOnly") && v.contains("; SameSite=Strict") && v.contains("; Path=/") && v.contains("; Max-Age=3600"), "{v}");
        assert!(!v.contains("Secure"));
        let https = Sessions::new(keys, Arc::new(ManualClock::new(1_767_225_600)), "https://gw.example.org", 3600, LoginLimits::default());
        let (t, c) = https.issue("alice", &[]).unwrap();
        let v = https.set_cookie(&t, &c);
        assert!(v.starts_with("__Host-medicodax_session=") && v.ends_with("; Secure"), "{v}");
        assert!(s.clear_cookie().contains("Max-Age=0"));
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=b; medicodax_session=tok; c=d".parse().unwrap());
        assert_eq!(s.token_from(&h), Some("tok"));
        assert_eq!(cookie_value(&h, "zz"), None);
    }

    #[test]
    fn failed_logins_are_limited_per_user_and_address_and_per_address() {
        let l = LoginLimiter::new(LoginLimits { per_user: 3, per_addr: 5, window_ms: 60_000 });
        for i in 0..3 {
            assert_eq!(l.check("alice", "10.0.0.1", i), Ok(()));
            l.failed("alice", "10.0.0.1", i);
        }
        assert_eq!(l.check("alice", "10.0.0.1", 1000), Err(59_000), "alice is locked from that address");
        assert_eq!(l.check("alice", "10.0.0.9", 1000), Ok(()), "wrong guesses elsewhere cannot lock alice out");
        assert_eq!(l.check("bob", "10.0.0.1", 1000), Ok(()), "three failures are under the address limit");
        l.failed("bob", "10.0.0.1", 1000);
        l.failed("carol", "10.0.0.1", 1000);
        assert_eq!(l.check("dave", "10.0.0.1", 1000), Err(59_000), "the address is locked for every user");
        assert_eq!(l.check("alice", "10.0.0.1", 60_000), Ok(()), "the window passed");
        l.succeeded("alice", "10.0.0.1");
        assert_eq!(l.check("dave", "10.0.0.1", 61_000), Ok(()));
    }
}
