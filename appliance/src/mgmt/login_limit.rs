//! Login rate limiting (docs/MANAGEMENT.md "Authentication"): after 5 failed logins for one user name
//! or one source address within 15 minutes, further attempts are refused for 15 minutes from the last
//! failure. The check runs before any password is looked at, so a flood of guesses costs no argon2
//! time. Refused attempts are not counted as failures: otherwise an attacker who keeps trying would
//! lock the real user out for ever instead of for 15 minutes.
//!
//! Memory is bounded: each map keeps at most `max_keys` names; when full, entries that can no longer
//! lock anything are dropped first, then the ones whose last failure is oldest.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest key kept: user names are at most 64 characters, IP addresses fewer; anything longer is an
/// invalid name, and truncating it keeps an attacker from storing megabytes per key.
const MAX_KEY_CHARS: usize = 64;

/// The limiter's thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Failures within `window` that lock a user name or source address.
    pub max_failures: usize,
    pub window: Duration,
    /// How long a lock lasts after the last failure.
    pub lockout: Duration,
    /// Most user names (and, separately, source addresses) remembered.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            max_keys: 10_000,
        }
    }
}

/// Recent failures of one key, oldest first; all within `window` of the newest, at most
/// `max_failures` of them.
#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<Instant>,
}

impl Failures {
    fn last(&self) -> Option<Instant> {
        self.times.back().copied()
    }

    fn locked_until(&self, limits: &Limits) -> Option<Instant> {
        if self.times.len() >= limits.max_failures {
            self.last().map(|last| last + limits.lockout)
        } else {
            None
        }
    }

    fn record(&mut self, now: Instant, limits: &Limits) {
        while let Some(&first) = self.times.front() {
            if now.saturating_duration_since(first) > limits.window {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        while self.times.len() > limits.max_failures {
            self.times.pop_front();
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<String, Failures>,
    sources: HashMap<String, Failures>,
}

/// Counts failed logins per user name and per source address.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: Limits,
    inner: Mutex<Inner>,
}

impl Default for LoginLimiter {
    fn default() -> LoginLimiter {
        LoginLimiter::new(Limits::default())
    }
}

/// The address part of a `source` ("ip:port", "[v6]:port", a bare address or "local").
pub fn source_key(source: &str) -> String {
    if let Ok(addr) = source.parse::<SocketAddr>() {
        return addr.ip().to_string();
    }
    if let Ok(ip) = source.parse::<IpAddr>() {
        return ip.to_string();
    }
    let host = match source.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => source,
    };
    clamp(host)
}

fn clamp(key: &str) -> String {
    key.chars().take(MAX_KEY_CHARS).collect()
}

fn retry_after_secs(until: Instant, now: Instant) -> u64 {
    let left = until.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.max(1)
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> LoginLimiter {
        LoginLimiter {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked: each update is a single insert/remove.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Err(retry_after_secs)` while `user` or `source` (already passed through [`source_key`]) is
    /// locked.
    pub fn check(&self, user: &str, source: &str, now: Instant) -> Result<(), u64> {
        let inner = self.lock();
        let until = [
            inner.users.get(&clamp(user)),
            inner.sources.get(&clamp(source)),
        ]
        .into_iter()
        .flatten()
        .filter_map(|f| f.locked_until(&self.limits))
        .filter(|until| *until > now)
        .max();
        match until {
            Some(until) => Err(retry_after_secs(until, now)),
            None => Ok(()),
        }
    }

    /// Counts one failed login of `user` from `source`.
    pub fn record_failure(&self, user: &str, source: &str, now: Instant) {
        let limits = self.limits;
        let mut inner = self.lock();
        record_in(&mut inner.users, clamp(user), now, &limits);
        record_in(&mut inner.sources, clamp(source), now, &limits);
    }

    /// Forgets the failures of `user` after a successful login (the source keeps its count, so one
    /// address cannot alternate a known password with guesses at other accounts).
    pub fn record_success(&self, user: &str) {
        self.lock().users.remove(&clamp(user));
    }

    /// How many user names and source addresses are remembered (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.users.len(), inner.sources.len())
    }
}

fn record_in(map: &mut HashMap<String, Failures>, key: String, now: Instant, limits: &Limits) {
    if !map.contains_key(&key) && map.len() >= limits.max_keys {
        evict(map, now, limits);
    }
    map.entry(key).or_default().record(now, limits);
}

/// Makes room for at least one new key.
fn evict(map: &mut HashMap<String, Failures>, now: Instant, limits: &Limits) {
    // An entry whose last failure is older than both the window and the lockout neither locks now
    // nor can add to a future lock.
    let useless_after = limits.window.max(limits.lockout);
    map.retain(|_, f| {
        f.last()
            .is_some_and(|last| now.saturating_duration_since(last) <= useless_after)
    });
    if map.len() < limits.max_keys {
        return;
    }
    // Still full of recent entries (a flood of names): drop the oldest tenth in one pass, so a
    // flood does not pay a full scan per attempt.
    let mut lasts: Vec<Instant> = map.values().filter_map(Failures::last).collect();
    if lasts.is_empty() {
        return;
    }
    let k = (lasts.len() / 10).min(lasts.len().saturating_sub(1));
    let (_, threshold, _) = lasts.select_nth_unstable(k);
    let threshold = *threshold;
    map.retain(|_, f| f.last().is_some_and(|last| last > threshold));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn locks_after_five_failures_for_fifteen_minutes_from_the_last() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..4 {
            limiter.record_failure("alice", "10.0.0.1", t0 + MIN * i);
            assert_eq!(limiter.check("alice", "10.0.0.1", t0 + MIN * i), Ok(()));
        }
        let last = t0 + MIN * 4;
        limiter.record_failure("alice", "10.0.0.1", last);
        assert_eq!(limiter.check("alice", "10.0.0.1", last), Err(900));
        // Locked by name from any address, and by address for any name.
        assert_eq!(limiter.check("alice", "10.9.9.9", last + MIN), Err(840));
        assert_eq!(limiter.check("bob", "10.0.0.1", last + MIN), Err(840));
        assert_eq!(limiter.check("bob", "10.9.9.9", last + MIN), Ok(()));
        assert_eq!(
            limiter.check("alice", "x", last + MIN * 15 - Duration::from_millis(1)),
            Err(1)
        );
        assert_eq!(limiter.check("alice", "x", last + MIN * 15), Ok(()));
        // After the lock, one more failure starts a fresh count.
        limiter.record_failure("alice", "10.0.0.1", last + MIN * 16);
        assert_eq!(limiter.check("alice", "10.0.0.1", last + MIN * 16), Ok(()));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_lock() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..10 {
            let at = t0 + MIN * 4 * i;
            limiter.record_failure("alice", "10.0.0.1", at);
            assert_eq!(
                limiter.check("alice", "10.0.0.1", at),
                Ok(()),
                "failure {i}"
            );
        }
    }

    #[test]
    fn success_clears_the_user_but_not_the_source() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            limiter.record_failure("alice", "10.0.0.1", t0);
        }
        limiter.record_success("alice");
        limiter.record_failure("alice", "10.0.0.2", t0);
        assert_eq!(limiter.check("alice", "10.0.0.2", t0), Ok(()));
        // 10.0.0.1 still has 4 failures: one more locks it.
        limiter.record_failure("carol", "10.0.0.1", t0);
        assert!(limiter.check("dave", "10.0.0.1", t0).is_err());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_names() {
        let limits = Limits {
            max_keys: 100,
            ..Limits::default()
        };
        let limiter = LoginLimiter::new(limits);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            limiter.record_failure(
                &format!("user{i}"),
                &format!("10.0.{}.{}", i / 256, i % 256),
                at,
            );
        }
        let (users, sources) = limiter.tracked();
        assert!(users <= 100 && sources <= 100, "{users} {sources}");
        // The newest entries survive eviction.
        for _ in 0..4 {
            limiter.record_failure("user999", "10.0.3.231", t0 + MIN);
        }
        assert!(limiter.check("user999", "elsewhere", t0 + MIN).is_err());
    }

    #[test]
    fn stale_entries_are_evicted_first() {
        let limiter = LoginLimiter::new(Limits {
            max_keys: 10,
            ..Limits::default()
        });
        let t0 = Instant::now();
        for i in 0..10 {
            limiter.record_failure(&format!("u{i}"), &format!("s{i}"), t0);
        }
        assert_eq!(limiter.tracked(), (10, 10));
        // Half an hour later none of them can lock anything any more: all go at once.
        limiter.record_failure("late", "late", t0 + MIN * 31);
        assert_eq!(limiter.tracked(), (1, 1));
    }

    #[test]
    fn over_long_keys_are_truncated() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        let long = "a".repeat(100_000);
        for i in 0..5 {
            limiter.record_failure(&format!("{long}{i}"), &format!("{i}"), t0);
        }
        // All five names share their first 64 characters: one key, locked.
        assert!(limiter.check(&long, "other", t0).is_err());
    }

    #[test]
    fn source_key_strips_ports() {
        assert_eq!(source_key("10.1.2.3:55000"), "10.1.2.3");
        assert_eq!(source_key("[::1]:8443"), "::1");
        assert_eq!(source_key("10.1.2.3"), "10.1.2.3");
        assert_eq!(source_key("local"), "local");
        assert_eq!(source_key("host.example:80"), "host.example");
        assert_eq!(source_key("weird:"), "weird:");
        assert_eq!(source_key(""), "");
        assert_eq!(source_key(&"x".repeat(1000)).len(), MAX_KEY_CHARS);
    }
}
