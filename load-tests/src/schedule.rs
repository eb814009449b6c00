//! Open-loop rate scheduling: how many sends are due after a time at a rate, independent of how
//! fast earlier sends were answered.

use std::time::Duration;

/// The timer period of the send loop: 1 ms, or one period of the rate when that is longer.
pub fn tick_period(rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::from_secs(1);
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    period.clamp(Duration::from_millis(1), Duration::from_secs(1))
}

/// Sends due `elapsed` after the start at `rate` per second: ⌊elapsed × rate⌋.
///
/// The loop sends `due(now) - sent` on each tick, so a late tick catches up with a burst and
/// the average rate holds whatever the timer's resolution.
pub fn due(elapsed: Duration, rate: f64) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    // Computed in integer microseconds to avoid 0.1 + 0.2 surprises at exact boundaries.
    let micros = elapsed.as_micros() as f64;
    ((micros * rate) / 1_000_000.0 + 1e-9).floor() as u64
}

/// Sends due over a whole run of `secs` seconds.
pub fn total(secs: u64, rate: f64) -> u64 {
    due(Duration::from_secs(secs), rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_due_follow_the_rate() {
        assert_eq!(due(Duration::ZERO, 500.0), 0);
        assert_eq!(due(Duration::from_millis(1), 500.0), 0);
        assert_eq!(due(Duration::from_millis(2), 500.0), 1);
        assert_eq!(due(Duration::from_secs(1), 500.0), 500);
        assert_eq!(due(Duration::from_micros(1_500), 2000.0), 3);
        assert_eq!(due(Duration::from_secs(20), 5000.0), 100_000);
        assert_eq!(due(Duration::from_millis(100), 0.0), 0);
        assert_eq!(due(Duration::from_millis(333), 3.0), 0);
        assert_eq!(due(Duration::from_millis(334), 3.0), 1);
        assert_eq!(total(2, 50.0), 100);
        // A run cut into 1 ms ticks sends exactly the total.
        let mut sent = 0;
        for ms in 1..=2000 {
            sent += due(Duration::from_millis(ms), 2000.0) - sent;
        }
        assert_eq!(sent, 4000);
    }

    #[test]
    fn tick_periods() {
        assert_eq!(tick_period(5000.0), Duration::from_millis(1));
        assert_eq!(tick_period(100.0), Duration::from_millis(10));
        assert_eq!(tick_period(0.1), Duration::from_secs(1));
        assert_eq!(tick_period(0.0), Duration::from_secs(1));
    }
}
