//! Wrong tokens, counted per client, for nbidle's sign-in and for each
//! stopped notebook's Start: after a few, each further attempt must wait
//! twice as long as the last, up to a cap. A correct token clears the
//! count. An IPv6 client is its /64. The map is bounded: when full, quiet
//! clients are forgotten, and newcomers share one slot while it is still
//! full, so a flood of addresses cannot take memory or free an attacker of
//! its wait; once there is room, each has its own again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens before any wait.
const FREE_FAILURES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(300);
/// A client quiet this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(900);
const MAX_CLIENTS: usize = 10_000;

/// Whose failures an entry counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Client(IpAddr),
    /// Newcomers' while the map is full.
    Shared,
}

/// The client a peer counts as: an IPv6 address by its /64, as one host
/// usually holds a whole /64 and could try each address in turn; an
/// IPv4-mapped one as its IPv4 address.
fn client_of(ip: IpAddr) -> Slot {
    Slot::Client(match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        },
    })
}

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

type Map = HashMap<Slot, Failures>;

#[derive(Default)]
pub(crate) struct TokenLimiter {
    map: Mutex<Map>,
}

/// Every client slot taken (the shared one aside).
fn full(map: &Map) -> bool {
    map.len() - usize::from(map.contains_key(&Slot::Shared)) >= MAX_CLIENTS
}

/// The slot `key`'s failures go to: its own unless it has none and the
/// map is full even once quiet clients are forgotten.
fn slot_for(map: &mut Map, key: Slot, now: Instant) -> Slot {
    if map.contains_key(&key) || !full(map) {
        return key;
    }
    map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
    if full(map) {
        Slot::Shared
    } else {
        key
    }
}

impl TokenLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map
            .lock()
            .expect("no panics while the limiter is held")
    }

    /// `Err(wait)` while `client` must still wait before another attempt.
    pub(crate) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let slot = slot_for(&mut map, client_of(client), now);
        match map.get(&slot) {
            Some(f) if now < f.last + f.wait() => Err(f.last + f.wait() - now),
            _ => Ok(()),
        }
    }

    pub(crate) fn failed(&self, client: IpAddr, now: Instant) {
        let mut map = self.lock();
        let slot = slot_for(&mut map, client_of(client), now);
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
        self.lock().remove(&client_of(client));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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

    fn held_back(l: &TokenLimiter, ip: IpAddr, now: Instant) {
        for _ in 0..=FREE_FAILURES {
            l.failed(ip, now);
        }
        assert!(l.check(ip, now).is_err(), "{ip} waits");
    }

    #[test]
    fn an_ipv6_client_is_counted_per_64() {
        let l = TokenLimiter::default();
        let t0 = Instant::now();
        held_back(&l, "2001:db8:0:7::1".parse().unwrap(), t0);
        for same in ["2001:db8:0:7::2", "2001:db8:0:7:ffff:1:2:3"] {
            assert!(l.check(same.parse().unwrap(), t0).is_err(), "{same}");
        }
        assert!(l.check("2001:db8:0:8::1".parse().unwrap(), t0).is_ok());
        l.succeeded("2001:db8:0:7::9".parse().unwrap());
        assert!(l.check("2001:db8:0:7::1".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn newcomers_share_one_slot_only_while_the_map_is_full() {
        let l = TokenLimiter::default();
        let t0 = Instant::now();
        let client = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_CLIENTS {
            l.failed(client(i), t0);
        }
        let (newcomer, next) = (client(MAX_CLIENTS), client(MAX_CLIENTS + 1));
        held_back(&l, newcomer, t0);
        assert!(
            l.check(next, t0).is_err(),
            "the map is full: the shared slot"
        );
        l.succeeded(client(0));
        assert!(l.check(next, t0).is_ok(), "room again: its own slot");
        l.failed(next, t0);
        assert!(l.check(next, t0).is_ok(), "one failure, its own count");
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
