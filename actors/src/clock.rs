//! The source of "now", as milliseconds since the Unix epoch.
//!
//! Production code uses [`SystemClock`]; tests use [`ManualClock`] to control time. Code that needs
//! the time takes a [`SharedClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// A clock shared between components.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // A clock set before the epoch reads 0; one past year 292 million saturates.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, duration_ms)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Sets the time to `ms` (it may go backwards).
    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by` (saturating at `i64::MAX`).
    pub fn advance(&self, by: Duration) {
        let step = duration_ms(by);
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(step))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020_and_does_not_go_backwards() {
        let c = SystemClock;
        let a = c.now_ms();
        let b = c.now_ms();
        assert!(a > 1_577_836_800_000, "{a} is before 2020");
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_starts_where_told() {
        assert_eq!(ManualClock::new(42).now_ms(), 42);
        assert_eq!(ManualClock::default().now_ms(), 0);
    }

    #[test]
    fn manual_clock_set_and_advance() {
        let c = ManualClock::new(1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_250);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 3_250);
        c.set(10);
        assert_eq!(c.now_ms(), 10);
        // Sub-millisecond steps are dropped.
        c.advance(Duration::from_micros(999));
        assert_eq!(c.now_ms(), 10);
    }

    #[test]
    fn manual_clock_advance_saturates() {
        let c = ManualClock::new(i64::MAX - 5);
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now_ms(), i64::MAX);
        c.advance(Duration::MAX);
        assert_eq!(c.now_ms(), i64::MAX);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new(5);
        let b = a.clone();
        a.advance(Duration::from_millis(5));
        assert_eq!(b.now_ms(), 10);
        b.set(100);
        assert_eq!(a.now_ms(), 100);
    }

    #[test]
    fn shared_clock_works_through_the_trait_object() {
        let manual = ManualClock::new(7);
        let shared: SharedClock = Arc::new(manual.clone());
        manual.advance(Duration::from_millis(3));
        assert_eq!(shared.now_ms(), 10);
        let system: SharedClock = Arc::new(SystemClock);
        assert!(system.now_ms() > 0);
    }

    #[test]
    fn duration_ms_saturates() {
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
        assert_eq!(duration_ms(Duration::from_millis(12)), 12);
    }
}
