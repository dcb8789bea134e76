//! Injectable time for every layer of MEDICODAX.
//!
//! Nothing in the product reads the system time directly: token expiry, assertion
//! `iat`/`exp`, replay windows, rate budgets and back-off all go through a [`Clock`].
//! Production code uses [`SystemClock`]; tests use [`ManualClock`], which only moves
//! when told to, so no test ever sleeps through an expiry.
//!
//! Two kinds of time are kept apart on purpose:
//! - wall time ([`Clock::now_unix`]) for values that leave the process (JWT claims,
//!   audit timestamps);
//! - monotonic time ([`Clock::monotonic`]) for deciding when something expires, so that
//!   a wall-clock step (NTP, a VM resume) never makes a token look fresher than it is.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point on a clock's monotonic time line (time since that clock's origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mono(pub Duration);

impl Mono {
    /// The later point `d` after this one.
    pub fn add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(d))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time from `self` until `later`, zero if `later` has passed.
    pub fn until(self, later: Mono) -> Duration {
        later.0.saturating_sub(self.0)
    }
}

/// A boxed future, as returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of wall and monotonic time, and of sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Wall-clock time as whole Unix seconds.
    fn now_unix(&self) -> i64 {
        self.now_unix_millis().div_euclid(1000)
    }

    /// Wall-clock time as Unix milliseconds.
    fn now_unix_millis(&self) -> i64;

    /// The current point on this clock's monotonic line.
    fn monotonic(&self) -> Mono;

    /// Waits until `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Sleep;
}

/// A clock shared between components.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock: `SystemTime` for wall time, `Instant` for monotonic time, tokio for sleeping.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A new system clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }

    /// A new system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_unix_millis(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn monotonic(&self) -> Mono {
        Mono(self.origin.elapsed())
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when a test tells it to.
///
/// In the default mode [`Clock::sleep`] waits until [`ManualClock::advance`] has moved
/// the clock far enough. In auto-advance mode ([`ManualClock::auto_advance`]) a sleep
/// moves the clock forward by its own duration and returns at once, which suits tests of
/// back-off and rate limits that would otherwise need a driver task.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    state: Mutex<ManualState>,
    tick: tokio::sync::watch::Sender<Duration>,
    auto: bool,
}

#[derive(Clone, Copy)]
struct ManualState {
    wall_millis: i64,
    mono: Duration,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("ManualClock")
            .field("wall_millis", &s.wall_millis)
            .field("mono", &s.mono)
            .field("auto", &self.inner.auto)
            .finish()
    }
}

impl ManualClock {
    /// A clock frozen at `unix_secs`, monotonic time zero; sleeps wait for [`advance`](Self::advance).
    pub fn new(unix_secs: i64) -> Self {
        Self::build(unix_secs, false)
    }

    /// A clock frozen at `unix_secs` whose sleeps advance it.
    pub fn auto_advance(unix_secs: i64) -> Self {
        Self::build(unix_secs, true)
    }

    fn build(unix_secs: i64, auto: bool) -> Self {
        let (tick, _) = tokio::sync::watch::channel(Duration::ZERO);
        Self {
            inner: Arc::new(ManualInner {
                state: Mutex::new(ManualState { wall_millis: unix_secs.saturating_mul(1000), mono: Duration::ZERO }),
                tick,
                auto,
            }),
        }
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    fn state(&self) -> ManualState {
        // A poisoned lock only means another test thread panicked; the data is plain numbers.
        *self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves wall and monotonic time forward by `d`, waking sleepers that are due.
    pub fn advance(&self, d: Duration) {
        let mono = {
            let mut s = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            s.mono = s.mono.saturating_add(d);
            s.wall_millis = s.wall_millis.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            s.mono
        };
        self.inner.tick.send_replace(mono);
    }

    /// Moves wall and monotonic time forward by whole seconds.
    pub fn advance_secs(&self, secs: u64) {
        self.advance(Duration::from_secs(secs));
    }

    /// Moves only the wall clock (by a signed number of seconds), as an NTP step would.
    pub fn step_wall(&self, secs: i64) {
        let mut s = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        s.wall_millis = s.wall_millis.saturating_add(secs.saturating_mul(1000));
    }
}

impl Clock for ManualClock {
    fn now_unix_millis(&self) -> i64 {
        self.state().wall_millis
    }

    fn monotonic(&self) -> Mono {
        Mono(self.state().mono)
    }

    fn sleep(&self, d: Duration) -> Sleep {
        if self.inner.auto {
            self.advance(d);
            return Box::pin(std::future::ready(()));
        }
        let target = self.state().mono.saturating_add(d);
        let mut rx = self.inner.tick.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone nobody can advance us,
            // so returning is the only way not to hang forever.
            let _ = rx.wait_for(|now| *now >= target).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(1_767_225_600);
        assert_eq!(c.now_unix(), 1_767_225_600);
        assert_eq!(c.monotonic(), Mono(Duration::ZERO));
        c.advance_secs(3540);
        assert_eq!(c.now_unix(), 1_767_229_140);
        assert_eq!(c.monotonic(), Mono(Duration::from_secs(3540)));
        c.step_wall(-100);
        assert_eq!(c.now_unix(), 1_767_229_040);
        assert_eq!(c.monotonic(), Mono(Duration::from_secs(3540)), "a wall step leaves monotonic time alone");
    }

    #[tokio::test]
    async fn manual_sleep_waits_for_advance() {
        let c = ManualClock::new(0);
        let sleeper = tokio::spawn({
            let c = c.clone();
            async move { c.sleep(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        c.advance_secs(9);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        c.advance_secs(1);
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.expect("woken").expect("joined");
    }

    #[tokio::test]
    async fn auto_advance_sleep_moves_clock() {
        let c = ManualClock::auto_advance(100);
        c.sleep(Duration::from_millis(2500)).await;
        assert_eq!(c.now_unix_millis(), 102_500);
        assert_eq!(c.monotonic().0, Duration::from_millis(2500));
    }

    #[test]
    fn mono_arithmetic_saturates() {
        let a = Mono(Duration::from_secs(5));
        let b = Mono(Duration::from_secs(8));
        assert_eq!(b.since(a), Duration::from_secs(3));
        assert_eq!(a.since(b), Duration::ZERO);
        assert_eq!(a.until(b), Duration::from_secs(3));
        assert_eq!(a.add(Duration::from_secs(1)), Mono(Duration::from_secs(6)));
    }
}
