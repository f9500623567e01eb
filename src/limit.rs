//! Wrong tokens, counted per client, for nbidle's sign-in and for each
//! stopped notebook's Start: after a few, each further attempt must wait
//! twice as long as the last, up to a cap. A correct token clears the
//! count. The map is bounded: when full, quiet clients
//! are forgotten, and newcomers share one slot until there is room, so a
//! flood of addresses cannot take memory or free an attacker of its wait.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens before any wait.
const FREE_FAILURES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(300);
/// A client quiet this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(900);
const MAX_CLIENTS: usize = 10_000;
/// The slot newcomers share while the map is full.
const SHARED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn wait(&self) -> Duration {
        let over = self.count.saturating_sub(FREE_FAILURES);
        if self.count < FREE_FAILURES {
            return Duration::ZERO;
        }
        FIRST_WAIT
            .saturating_mul(1u32 << over.min(16))
            .min(MAX_WAIT)
    }
}

#[derive(Default)]
pub(crate) struct TokenLimiter {
    map: Mutex<HashMap<IpAddr, Failures>>,
}

impl TokenLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.map
            .lock()
            .expect("no panics while the limiter is held")
    }

    /// `Err(wait)` while `client` must still wait before another attempt.
    pub(crate) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.lock();
        let f = map.get(&client).or_else(|| map.get(&SHARED));
        match f {
            Some(f) if now < f.last + f.wait() => Err(f.last + f.wait() - now),
            _ => Ok(()),
        }
    }

    pub(crate) fn failed(&self, client: IpAddr, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_CLIENTS && !map.contains_key(&client) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        let slot = if map.len() >= MAX_CLIENTS && !map.contains_key(&client) {
            SHARED
        } else {
            client
        };
        let f = map.entry(slot).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    pub(crate) fn succeeded(&self, client: IpAddr) {
        self.lock().remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_wait_longer_each_time_and_success_clears() {
        let l = TokenLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(l.check(ip, t0).is_ok());
            l.failed(ip, t0);
        }
        assert_eq!(l.check(ip, t0), Err(FIRST_WAIT));
        assert!(l.check(other, t0).is_ok(), "another client does not wait");
        let t1 = t0 + FIRST_WAIT;
        assert!(l.check(ip, t1).is_ok());
        l.failed(ip, t1);
        assert_eq!(l.check(ip, t1), Err(FIRST_WAIT * 2));
        l.succeeded(ip);
        assert!(l.check(ip, t1).is_ok());
    }

    #[test]
    fn the_wait_is_capped() {
        let f = Failures {
            count: 1000,
            last: Instant::now(),
        };
        assert_eq!(f.wait(), MAX_WAIT);
    }
}
