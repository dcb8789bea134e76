//! A connection's request budget: sliding one-minute windows on the monotonic clock.
//!
//! One budget per connection counts both token requests (drawn by the auth manager) and
//! FHIR requests (drawn by the FHIR client through [`crate::AuthManager::acquire`]), as
//! eClinicalWorks counts them together per practice. It enforces, each when configured:
//! a shared per-minute limit, a token-only per-minute limit (athenahealth), a least
//! interval between token requests (Oracle Health), and a block the server imposed with
//! a 429. A sliding window is stricter than a vendor's fixed minute, so staying inside it
//! keeps every fixed minute inside the limit too.

use medicodax_clock::Mono;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::profile::RateRule;

const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept for the dashboard's count when a window has no limit.
const UNLIMITED_KEEP: usize = 100_000;

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// A FHIR API request.
    Fhir,
    /// A token request.
    Token,
}

/// A request that does not fit the budget now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// When it would fit.
    pub retry_after: Duration,
    /// Which limit, for messages (`250 requests/min`).
    pub budget: &'static str,
}

/// The budget's state, for the dashboard and metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BudgetStatus {
    /// FHIR and token requests per minute allowed together.
    pub shared_per_minute: Option<u32>,
    /// Token requests per minute allowed.
    pub token_per_minute: Option<u32>,
    /// Least seconds between token requests.
    pub token_min_interval_secs: Option<u64>,
    /// Requests (FHIR and token) in the last minute.
    pub used_last_minute: u32,
    /// Token requests in the last minute.
    pub token_requests_last_minute: u32,
    /// Seconds left of a block the server imposed (429), if any.
    pub blocked_for_secs: Option<u64>,
}

#[derive(Default)]
struct State {
    all: VecDeque<Mono>,
    tokens: VecDeque<Mono>,
    last_token: Option<Mono>,
    blocked_until: Option<Mono>,
}

/// A per-connection request budget.
pub struct RateBudget {
    rule: RateRule,
    state: Mutex<State>,
}

impl std::fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateBudget").field("rule", &self.rule).finish_non_exhaustive()
    }
}

fn prune(q: &mut VecDeque<Mono>, now: Mono) {
    while q.front().is_some_and(|t| now.since(*t) >= WINDOW) {
        q.pop_front();
    }
}

fn window_wait(q: &VecDeque<Mono>, limit: u32, now: Mono) -> Option<Duration> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if q.len() < limit {
        return None;
    }
    // The request fits once the oldest entry that keeps the window full has aged out.
    let idx = q.len() - limit;
    q.get(idx).map(|t| now.until(t.add(WINDOW)))
}

impl RateBudget {
    /// A budget enforcing `rule`.
    pub fn new(rule: RateRule) -> Self {
        RateBudget { rule, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is counters and timestamps; a panic elsewhere cannot leave it unsafe to read.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one request of `kind` at `now` if it fits; otherwise says when it would.
    pub fn try_acquire(&self, kind: RequestKind, now: Mono) -> Result<(), Limited> {
        let mut st = self.lock();
        prune(&mut st.all, now);
        prune(&mut st.tokens, now);
        let mut wait: Option<Limited> = None;
        let mut consider = |d: Option<Duration>, budget: &'static str| {
            if let Some(d) = d
                && wait.is_none_or(|w| d > w.retry_after)
            {
                wait = Some(Limited { retry_after: d, budget });
            }
        };
        if let Some(b) = st.blocked_until
            && now < b
        {
            consider(Some(now.until(b)), "blocked by the server after HTTP 429");
        }
        if let Some(limit) = self.rule.shared_per_minute {
            consider(window_wait(&st.all, limit, now), "requests per minute, FHIR and token together");
        }
        if kind == RequestKind::Token {
            if let Some(limit) = self.rule.token_per_minute {
                consider(window_wait(&st.tokens, limit, now), "token requests per minute");
            }
            if let (Some(secs), Some(last)) = (self.rule.token_min_interval_secs, st.last_token) {
                let ready = last.add(Duration::from_secs(secs));
                consider((now < ready).then(|| now.until(ready)), "least interval between token requests");
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        if self.rule.shared_per_minute.is_some() || st.all.len() < UNLIMITED_KEEP {
            st.all.push_back(now);
        }
        if kind == RequestKind::Token {
            st.tokens.push_back(now);
            st.last_token = Some(now);
        }
        Ok(())
    }

    /// Records a block imposed by the server (a 429), until `now + d`.
    pub fn block_for(&self, now: Mono, d: Duration) {
        let mut st = self.lock();
        let until = now.add(d);
        if st.blocked_until.is_none_or(|b| b < until) {
            st.blocked_until = Some(until);
        }
    }

    /// The rule enforced.
    pub fn rule(&self) -> RateRule {
        self.rule
    }

    /// The state at `now`.
    pub fn status(&self, now: Mono) -> BudgetStatus {
        let mut st = self.lock();
        prune(&mut st.all, now);
        prune(&mut st.tokens, now);
        let count = |q: &VecDeque<Mono>| u32::try_from(q.len()).unwrap_or(u32::MAX);
        BudgetStatus {
            shared_per_minute: self.rule.shared_per_minute,
            token_per_minute: self.rule.token_per_minute,
            token_min_interval_secs: self.rule.token_min_interval_secs,
            used_last_minute: count(&st.all),
            token_requests_last_minute: count(&st.tokens),
            blocked_for_secs: st.blocked_until.filter(|b| now < *b).map(|b| now.until(b).as_secs_f64().ceil() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Mono {
        Mono(Duration::from_secs(s))
    }

    #[test]
    fn ecw_250_per_minute_shared_sliding() {
        let b = RateBudget::new(RateRule { shared_per_minute: Some(250), ..RateRule::default() });
        for i in 0..249 {
            b.try_acquire(RequestKind::Fhir, at(i / 10)).unwrap();
        }
        b.try_acquire(RequestKind::Token, at(30)).unwrap();
        let l = b.try_acquire(RequestKind::Fhir, at(30)).unwrap_err();
        assert_eq!(l.retry_after, Duration::from_secs(30), "the first request (t=0) ages out at t=60");
        assert_eq!(b.status(at(30)).used_last_minute, 250);
        assert_eq!(b.status(at(30)).token_requests_last_minute, 1);
        // At t=60 the ten requests of second 0 have aged out.
        for _ in 0..10 {
            b.try_acquire(RequestKind::Fhir, at(60)).unwrap();
        }
        assert!(b.try_acquire(RequestKind::Fhir, at(60)).is_err());
    }

    #[test]
    fn oracle_token_requests_at_least_60_s_apart() {
        let b = RateBudget::new(RateRule { token_min_interval_secs: Some(60), ..RateRule::default() });
        b.try_acquire(RequestKind::Token, at(100)).unwrap();
        let l = b.try_acquire(RequestKind::Token, at(130)).unwrap_err();
        assert_eq!(l, Limited { retry_after: Duration::from_secs(30), budget: "least interval between token requests" });
        b.try_acquire(RequestKind::Fhir, at(130)).unwrap();
        b.try_acquire(RequestKind::Token, at(160)).unwrap();
    }

    #[test]
    fn athena_50_token_requests_per_minute() {
        let b = RateBudget::new(RateRule { token_per_minute: Some(50), ..RateRule::default() });
        for _ in 0..50 {
            b.try_acquire(RequestKind::Token, at(5)).unwrap();
        }
        assert_eq!(b.try_acquire(RequestKind::Token, at(6)).unwrap_err().retry_after, Duration::from_secs(59));
        for _ in 0..1000 {
            b.try_acquire(RequestKind::Fhir, at(6)).unwrap();
        }
        b.try_acquire(RequestKind::Token, at(65)).unwrap();
    }

    #[test]
    fn a_server_block_stops_everything_until_it_ends() {
        let b = RateBudget::new(RateRule::default());
        b.block_for(at(10), Duration::from_secs(60));
        assert_eq!(b.try_acquire(RequestKind::Fhir, at(20)).unwrap_err().retry_after, Duration::from_secs(50));
        assert_eq!(b.status(at(20)).blocked_for_secs, Some(50));
        b.try_acquire(RequestKind::Token, at(70)).unwrap();
        assert_eq!(b.status(at(70)).blocked_for_secs, None);
    }

    #[test]
    fn a_refused_request_is_not_counted() {
        let b = RateBudget::new(RateRule { shared_per_minute: Some(1), ..RateRule::default() });
        b.try_acquire(RequestKind::Fhir, at(0)).unwrap();
        for _ in 0..5 {
            assert!(b.try_acquire(RequestKind::Fhir, at(1)).is_err());
        }
        assert_eq!(b.status(at(1)).used_last_minute, 1);
        b.try_acquire(RequestKind::Fhir, at(60)).unwrap();
    }
}
