//! The upload bandwidth limit: one token bucket shared by every pack upload, changeable at runtime.
//!
//! A pack takes its bytes from the bucket when it is about to be uploaded, even when that drives the
//! bucket into debt, and then waits until the debt is paid back at the limit's rate. So a pack larger than
//! one second's budget waits proportionally instead of waiting for a bucket that can never hold it
//! (no deadlock), and concurrent uploads queue behind each other's reservations.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Tokens are counted in nano-bytes (bytes x 1e9), so that refilling `rate` bytes/s for `n` ns adds exactly
/// `rate * n` tokens: integer arithmetic, no rounding drift.
const NANOS: i128 = 1_000_000_000;

/// The bucket's arithmetic, driven by an explicit clock so it can be tested with made-up times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    /// Nano-bytes available; negative while reservations are being paid back.
    tokens: i128,
    /// Clock reading (ns) of the last refill.
    last_ns: u64,
    /// Bumped by every limit change, so a waiting upload knows its reservation was forgiven.
    generation: u64,
}

impl Bucket {
    /// A bucket that starts full (one second's budget) at `now_ns`.
    pub fn new(rate: u64, now_ns: u64) -> Bucket {
        Bucket {
            rate,
            tokens: capacity(rate),
            last_ns: now_ns,
            generation: 0,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let added = i128::from(elapsed).saturating_mul(i128::from(self.rate));
        self.tokens = self.tokens.saturating_add(added).min(capacity(self.rate));
    }

    /// Takes `bytes` at `now_ns`; returns how long the caller must wait before sending them.
    pub fn reserve(&mut self, now_ns: u64, bytes: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now_ns);
        self.tokens = self
            .tokens
            .saturating_sub(i128::from(bytes).saturating_mul(NANOS));
        if self.tokens >= 0 {
            return Duration::ZERO;
        }
        // ceil(debt / rate) ns: the debt is paid back exactly when the wait ends.
        let rate = i128::from(self.rate);
        let wait_ns = (-self.tokens + rate - 1) / rate;
        let secs = u64::try_from(wait_ns / NANOS).unwrap_or(u64::MAX);
        Duration::new(secs, (wait_ns % NANOS) as u32)
    }

    /// Changes the rate at `now_ns`. Debt owed under the old rate is forgiven (the new limit applies from
    /// the next pack on); going from unlimited to a limit starts with a full bucket.
    pub fn set_rate(&mut self, rate: u64, now_ns: u64) {
        if self.rate != 0 {
            self.refill(now_ns);
        }
        let was_unlimited = self.rate == 0;
        self.rate = rate;
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = if was_unlimited {
            capacity(rate)
        } else {
            self.tokens.clamp(0, capacity(rate))
        };
        self.generation += 1;
    }
}

fn capacity(rate: u64) -> i128 {
    i128::from(rate).saturating_mul(NANOS)
}

/// The shared limiter the uploader waits on.
#[derive(Debug)]
pub struct UploadLimiter {
    bucket: Mutex<Bucket>,
    start: Instant,
    changed: watch::Sender<u64>,
}

impl Default for UploadLimiter {
    fn default() -> Self {
        UploadLimiter::new(0)
    }
}

impl UploadLimiter {
    /// `bytes_per_sec` 0 = unlimited.
    pub fn new(bytes_per_sec: u64) -> UploadLimiter {
        UploadLimiter {
            bucket: Mutex::new(Bucket::new(bytes_per_sec, 0)),
            start: Instant::now(),
            changed: watch::channel(0).0,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn limit(&self) -> u64 {
        self.bucket.lock().expect("limiter lock").rate()
    }

    /// Changes the limit; uploads waiting under the old one re-take their bytes under the new one.
    pub fn set_limit(&self, bytes_per_sec: u64) {
        let generation = {
            let mut b = self.bucket.lock().expect("limiter lock");
            b.set_rate(bytes_per_sec, self.now_ns());
            b.generation()
        };
        self.changed.send_replace(generation);
    }

    /// Waits until `bytes` may be uploaded under the current limit.
    pub async fn acquire(&self, bytes: u64) {
        let mut changed = self.changed.subscribe();
        'reserve: loop {
            let (wait, generation) = {
                let mut b = self.bucket.lock().expect("limiter lock");
                (b.reserve(self.now_ns(), bytes), b.generation())
            };
            if wait.is_zero() {
                return;
            }
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return,
                    res = changed.changed() => {
                        if res.is_err() {
                            // The limiter is being dropped: nothing left to wait for.
                            return;
                        }
                        // Only a change after our reservation forgave it; otherwise keep waiting it out.
                        if *changed.borrow_and_update() != generation {
                            continue 'reserve;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn unlimited_never_waits() {
        let mut b = Bucket::new(0, 0);
        assert_eq!(b.reserve(0, u64::MAX), Duration::ZERO);
        assert_eq!(b.reserve(0, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn one_seconds_budget_then_paced_at_the_rate() {
        let mut b = Bucket::new(1000, 0);
        // A full bucket: one second's worth passes at once.
        assert_eq!(b.reserve(0, 1000), Duration::ZERO);
        // The next 500 bytes are owed: half a second.
        assert_eq!(b.reserve(0, 500), Duration::from_millis(500));
        // A concurrent upload queues behind that reservation.
        assert_eq!(b.reserve(0, 500), Duration::from_secs(1));
        // Two seconds later the debt is paid and 1 s of budget has come back, not more (capacity).
        assert_eq!(b.reserve(2 * S, 1000), Duration::ZERO);
        assert_eq!(b.reserve(10 * S, 1000), Duration::ZERO);
        assert_eq!(b.reserve(10 * S, 1), Duration::from_millis(1));
    }

    #[test]
    fn a_pack_larger_than_the_bucket_waits_proportionally() {
        let mut b = Bucket::new(1 << 20, 0);
        assert_eq!(b.reserve(0, 1 << 20), Duration::ZERO);
        // 8 MiB at 1 MiB/s with an empty bucket: 8 s, not forever.
        assert_eq!(b.reserve(0, 8 << 20), Duration::from_secs(8));
        // Halfway through the wait, another pack queues behind the remaining 4 s.
        assert_eq!(b.reserve(4 * S, 1 << 20), Duration::from_secs(5));
    }

    #[test]
    fn waits_round_up_and_a_clock_going_back_is_ignored() {
        let mut b = Bucket::new(3, 0);
        assert_eq!(b.reserve(0, 3), Duration::ZERO);
        // 1 byte at 3 B/s: 333,333,333.3 ns, rounded up so the debt is surely paid.
        assert_eq!(b.reserve(0, 1), Duration::from_nanos(333_333_334));
        let before = b.clone();
        assert_eq!(b.reserve(0, 0), Duration::from_nanos(333_333_334));
        b.last_ns = 5 * S;
        b.tokens = before.tokens;
        assert_eq!(b.reserve(S, 0), Duration::from_nanos(333_333_334));
    }

    #[test]
    fn changing_the_limit_forgives_old_debt_and_applies_to_the_next_pack() {
        let mut b = Bucket::new(100, 0);
        assert_eq!(b.reserve(0, 10_100), Duration::from_secs(100));
        let g = b.generation();
        b.set_rate(1000, 0);
        assert_ne!(b.generation(), g);
        // The 100 s owed at the old rate are gone; the new rate paces from an empty bucket.
        assert_eq!(b.reserve(0, 500), Duration::from_millis(500));
        // Lowering the limit caps saved-up budget at the new, smaller bucket.
        let mut b = Bucket::new(1000, 0);
        b.set_rate(10, 0);
        assert_eq!(b.reserve(0, 20), Duration::from_secs(1));
        // From unlimited to a limit: a full bucket; back to unlimited: no waits at all.
        let mut b = Bucket::new(0, 0);
        b.set_rate(50, 7 * S);
        assert_eq!(b.reserve(7 * S, 50), Duration::ZERO);
        assert_eq!(b.reserve(7 * S, 50), Duration::from_secs(1));
        b.set_rate(0, 7 * S);
        assert_eq!(b.reserve(7 * S, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut b = Bucket::new(u64::MAX, 0);
        assert_eq!(b.reserve(u64::MAX, u64::MAX), Duration::ZERO);
        let mut b = Bucket::new(1, 0);
        let wait = b.reserve(0, u64::MAX);
        assert!(wait >= Duration::from_secs(u64::MAX / 2), "{wait:?}");
    }

    #[tokio::test]
    async fn a_waiting_upload_is_released_by_a_higher_limit() {
        let limiter = std::sync::Arc::new(UploadLimiter::new(1));
        limiter.acquire(1).await; // the full bucket
        let l = limiter.clone();
        // Owes 11 days at 1 B/s: only the limit change can end this wait within the test.
        let waiting = tokio::spawn(async move { l.acquire(1_000_000).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        limiter.set_limit(0);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("released by the change")
            .unwrap();
        assert_eq!(limiter.limit(), 0);
    }
}
