//! Rate limits: a token bucket, the per-connection request limit with its flood detector, and the
//! sign-in limits per account and per source address (docs/security.md).
//!
//! Every bucket takes the time as a parameter (milliseconds on any monotonic scale), so the logic
//! is tested with explicit times. Sessions measure their request rate on tokio's monotonic clock
//! (like their ping and idle timers); the sign-in limits use the server's [`Clock`]
//! (`lianxin_actors::clock`), which tests drive by hand.
//!
//! [`Clock`]: lianxin_actors::clock::Clock

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::config::Limits;

/// A token bucket: holds up to `capacity` tokens, refilled at a steady rate; each event takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_ms: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilled with `refill` tokens every `period_ms`.
    pub fn new(capacity: u32, refill: u32, period_ms: u64, now_ms: i64) -> Self {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            tokens: capacity,
            per_ms: f64::from(refill) / (period_ms.max(1) as f64),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        // A clock that steps back refills nothing (and does not drain either).
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0);
        self.tokens = (self.tokens + elapsed as f64 * self.per_ms).min(self.capacity);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Milliseconds until a token is there (0 when one is there now).
    pub fn ms_until_token(&mut self, now_ms: i64) -> i64 {
        self.refill(now_ms);
        if self.tokens >= 1.0 || self.per_ms <= 0.0 {
            0
        } else {
            ((1.0 - self.tokens) / self.per_ms).ceil() as i64
        }
    }

    /// Gives back a token taken earlier (capped at the capacity).
    pub fn give_back(&mut self, now_ms: i64) {
        self.refill(now_ms);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    /// Whether the bucket has filled up again (its owner can be forgotten).
    pub fn is_full(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens >= self.capacity
    }
}

/// What the request limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: carry it out.
    Allow,
    /// Over the limit: answer `RATE_LIMITED` without carrying it out.
    Refuse,
    /// A sustained flood: answer `RATE_LIMITED` and close the connection (4009).
    Close,
}

/// One connection's request limit: a token bucket, and a count of refusals in a row that closes
/// the connection once a flood is sustained.
#[derive(Debug, Clone)]
pub struct RequestLimit {
    bucket: TokenBucket,
    close_after: u32,
    refused: u32,
    last_refusal_ms: i64,
}

/// A pause of this long without a refusal ends a run of refusals.
const FLOOD_PAUSE_MS: i64 = 1_000;

impl RequestLimit {
    /// The limit `limits` sets, starting full at `now_ms`.
    pub fn new(limits: &Limits, now_ms: i64) -> Self {
        RequestLimit {
            bucket: TokenBucket::new(
                limits.request_burst,
                limits.requests_per_sec.max(1),
                1_000,
                now_ms,
            ),
            close_after: limits.flood_close_after,
            refused: 0,
            last_refusal_ms: i64::MIN,
        }
    }

    /// Judges a request arriving at `now_ms`.
    pub fn check(&mut self, now_ms: i64) -> Verdict {
        if self.bucket.try_take(now_ms) {
            return Verdict::Allow;
        }
        if now_ms.saturating_sub(self.last_refusal_ms) > FLOOD_PAUSE_MS {
            self.refused = 0;
        }
        self.refused = self.refused.saturating_add(1);
        self.last_refusal_ms = now_ms;
        if self.close_after > 0 && self.refused >= self.close_after {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }

    /// How long to stop reading after a refusal: until the next request could be allowed.
    pub fn pause_ms(&mut self, now_ms: i64) -> i64 {
        self.bucket.ms_until_token(now_ms)
    }
}

/// Buckets kept before full (idle) ones are swept out.
const SWEEP_ABOVE: usize = 4_096;

/// A source address as the sign-in limit counts it: IPv4 addresses one by one, IPv6 by /64 (one
/// customer's network), so that a client cannot dodge the limit by walking its own prefix.
fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64 | 1,
        },
    }
}

/// A sign-in attempt allowed to go on to the password check; give it back if the password was
/// right.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    account: Option<u64>,
    address: u128,
}

/// Limits on password checks: failed sign-ins per account and per source address, and all
/// password sign-ins per account. An attempt takes its tokens *before* the password is hashed,
/// so a client over a limit never costs an argon2 hash; a successful sign-in gives back its
/// failure tokens (not the one it took from the account's sign-ins).
#[derive(Debug)]
pub struct SignInLimiter {
    per_account: u32,
    per_address: u32,
    checks_per_account: u32,
    window_ms: u64,
    accounts: Mutex<HashMap<u64, TokenBucket>>,
    addresses: Mutex<HashMap<u128, TokenBucket>>,
    checks: Mutex<HashMap<u64, TokenBucket>>,
}

impl SignInLimiter {
    /// The limiter `limits` configures.
    pub fn new(limits: &Limits) -> Self {
        SignInLimiter {
            per_account: limits.sign_in_failures_per_account,
            per_address: limits.sign_in_failures_per_address,
            checks_per_account: limits.sign_ins_per_account,
            window_ms: limits.sign_in_window_secs.max(1).saturating_mul(1000),
            accounts: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
            checks: Mutex::new(HashMap::new()),
        }
    }

    fn take<K: std::hash::Hash + Eq + Copy>(
        map: &Mutex<HashMap<K, TokenBucket>>,
        key: K,
        capacity: u32,
        window_ms: u64,
        now_ms: i64,
    ) -> bool {
        if capacity == 0 {
            return true;
        }
        let mut map = map.lock();
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, b| !b.is_full(now_ms));
        }
        map.entry(key)
            .or_insert_with(|| TokenBucket::new(capacity, capacity, window_ms, now_ms))
            .try_take(now_ms)
    }

    fn give_back<K: std::hash::Hash + Eq>(
        map: &Mutex<HashMap<K, TokenBucket>>,
        key: &K,
        now_ms: i64,
    ) {
        if let Some(b) = map.lock().get_mut(key) {
            b.give_back(now_ms);
        }
    }

    /// Asks to check a password for `account` (None: no such login) from `ip`; None when either
    /// limit is used up.
    pub fn begin(&self, account: Option<u64>, ip: IpAddr, now_ms: i64) -> Option<Attempt> {
        let address = address_key(ip);
        if !Self::take(
            &self.addresses,
            address,
            self.per_address,
            self.window_ms,
            now_ms,
        ) {
            return None;
        }
        if let Some(id) = account {
            if !Self::take(&self.accounts, id, self.per_account, self.window_ms, now_ms) {
                Self::give_back(&self.addresses, &address, now_ms);
                return None;
            }
            let window = self.window_ms;
            if !Self::take(&self.checks, id, self.checks_per_account, window, now_ms) {
                Self::give_back(&self.addresses, &address, now_ms);
                Self::give_back(&self.accounts, &id, now_ms);
                return None;
            }
        }
        Some(Attempt { account, address })
    }

    /// The password was right: the attempt does not count.
    pub fn succeeded(&self, attempt: Attempt, now_ms: i64) {
        Self::give_back(&self.addresses, &attempt.address, now_ms);
        if let Some(id) = attempt.account {
            Self::give_back(&self.accounts, &id, now_ms);
        }
    }

    /// Counts a registration from `ip` (each costs a password hash); false when over the limit.
    pub fn register(&self, ip: IpAddr, now_ms: i64) -> bool {
        Self::take(
            &self.addresses,
            address_key(ip),
            self.per_address,
            self.window_ms,
            now_ms,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(3, 2, 1_000, 0);
        assert!(b.try_take(0) && b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0));
        // 2 per second: one token every 500 ms.
        assert!(!b.try_take(499));
        assert!(b.try_take(500));
        assert!(!b.try_take(500));
        // Never more than the capacity, however long the pause.
        assert!(b.is_full(1_000_000));
        assert!(b.try_take(1_000_000) && b.try_take(1_000_000) && b.try_take(1_000_000));
        assert!(!b.try_take(1_000_000));
    }

    #[test]
    fn a_clock_stepping_back_neither_refills_nor_panics() {
        let mut b = TokenBucket::new(1, 1, 1_000, 10_000);
        assert!(b.try_take(10_000));
        assert!(!b.try_take(0));
        assert!(!b.try_take(i64::MIN));
        assert!(b.try_take(11_000));
        let mut c = TokenBucket::new(1, 1, 1_000, i64::MIN);
        assert!(c.try_take(i64::MAX));
    }

    #[test]
    fn slow_refills_are_not_lost_to_rounding() {
        // 10 per 15 minutes, asked every millisecond: a token comes back every 90 s.
        let mut b = TokenBucket::new(10, 10, 900_000, 0);
        for _ in 0..10 {
            assert!(b.try_take(0));
        }
        let mut got = 0;
        for t in 1..=91_000 {
            if b.try_take(t) {
                got += 1;
            }
        }
        assert_eq!(got, 1);
    }

    fn limits(rate: u32, burst: u32, close_after: u32) -> Limits {
        Limits {
            requests_per_sec: rate,
            request_burst: burst,
            flood_close_after: close_after,
            ..Limits::default()
        }
    }

    #[test]
    fn a_sustained_flood_closes_and_a_burst_with_pauses_does_not() {
        let mut l = RequestLimit::new(&limits(10, 5, 4), 0);
        for _ in 0..5 {
            assert_eq!(l.check(0), Verdict::Allow);
        }
        assert_eq!(l.check(1), Verdict::Refuse);
        assert_eq!(l.check(2), Verdict::Refuse);
        assert_eq!(l.check(3), Verdict::Refuse);
        // A pause of more than a second starts the count again.
        for t in 1_100..1_105 {
            assert_eq!(l.check(t), Verdict::Allow);
        }
        assert_eq!(l.check(1_105), Verdict::Refuse);
        assert_eq!(l.check(1_106), Verdict::Refuse);
        assert_eq!(l.check(1_107), Verdict::Refuse);
        assert_eq!(l.check(1_108), Verdict::Close);
        // After a refusal, reading pauses until the next token: 100 ms at 10/s.
        let mut p = RequestLimit::new(&limits(10, 1, 0), 0);
        assert_eq!(p.check(0), Verdict::Allow);
        assert_eq!(p.check(0), Verdict::Refuse);
        assert_eq!(p.pause_ms(0), 100);
        assert_eq!(p.pause_ms(60), 40);
        assert_eq!(p.pause_ms(100), 0);
        assert_eq!(p.check(100), Verdict::Allow);
        // Zero: refuse, never close.
        let mut never = RequestLimit::new(&limits(1, 1, 0), 0);
        assert_eq!(never.check(0), Verdict::Allow);
        for t in 0..1_000 {
            assert_eq!(never.check(t / 100), Verdict::Refuse);
        }
    }

    fn sign_in_limits(account: u32, address: u32) -> Limits {
        Limits {
            sign_in_failures_per_account: account,
            sign_in_failures_per_address: address,
            sign_in_window_secs: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn failed_sign_ins_are_limited_per_account_and_successes_do_not_count() {
        let l = SignInLimiter::new(&sign_in_limits(3, 100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..10 {
            let ok = l.begin(Some(7), a, 0).unwrap();
            l.succeeded(ok, 0);
        }
        for ip in [a, b, a] {
            assert!(l.begin(Some(7), ip, 0).is_some());
        }
        // The account is locked from every address; another account is not.
        assert!(l.begin(Some(7), b, 0).is_none());
        assert!(l.begin(Some(8), b, 0).is_some());
        // One attempt comes back every 100 s / 3.
        assert!(l.begin(Some(7), a, 33_000).is_none());
        assert!(l.begin(Some(7), a, 34_000).is_some());
    }

    #[test]
    fn successful_sign_ins_are_limited_per_account_too() {
        let l = SignInLimiter::new(&Limits {
            sign_ins_per_account: 3,
            sign_in_window_secs: 300,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            let ok = l.begin(Some(7), a, 0).unwrap();
            l.succeeded(ok, 0);
        }
        assert!(l.begin(Some(7), a, 0).is_none());
        // Another account is not held up, and the refusal cost no failure token.
        assert!(l.begin(Some(8), a, 0).is_some());
        // One sign-in comes back every 300 s / 3.
        assert!(l.begin(Some(7), a, 99_000).is_none());
        assert!(l.begin(Some(7), a, 100_000).is_some());
        // Zero: no limit.
        let free = SignInLimiter::new(&Limits {
            sign_ins_per_account: 0,
            ..Limits::default()
        });
        for _ in 0..100 {
            let ok = free.begin(Some(7), a, 0).unwrap();
            free.succeeded(ok, 0);
        }
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_and_ipv6_per_64() {
        let l = SignInLimiter::new(&sign_in_limits(100, 2));
        let x: IpAddr = "2001:db8::1".parse().unwrap();
        let y: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let z: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(l.begin(None, x, 0).is_some());
        assert!(l.register(y, 0));
        assert!(l.begin(Some(1), x, 0).is_none());
        assert!(!l.register(x, 0));
        // A refused attempt took nothing from the account.
        let other = SignInLimiter::new(&sign_in_limits(1, 1));
        assert!(other.begin(Some(1), x, 0).is_some());
        assert!(other.begin(Some(2), x, 0).is_none());
        assert!(other.begin(Some(2), z, 0).is_some());
        // Another /64 is another address.
        assert!(l.begin(None, z, 0).is_some());
    }

    #[test]
    fn idle_buckets_are_swept() {
        let l = SignInLimiter::new(&sign_in_limits(5, 5));
        for i in 0..(SWEEP_ABOVE as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert!(l.begin(None, ip, 0).is_some());
        }
        assert!(l.addresses.lock().len() > SWEEP_ABOVE);
        let ip = IpAddr::from(std::net::Ipv4Addr::new(192, 168, 0, 1));
        assert!(l.begin(None, ip, 1_000_000).is_some());
        assert_eq!(l.addresses.lock().len(), 1);
    }
}
