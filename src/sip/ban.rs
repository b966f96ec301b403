//! Password guessing is cut off (issue 17; Kamailio's auth-failure bans, fail2ban):
//! per source IP, after `max_failures` failed digest attempts within `window`, the
//! source is banned for `ban_time`: the transport guard (`limit::Guard`) drops
//! everything it sends before parsing, so a guesser sees silence, not a 401 or
//! 403 it could learn from. A success clears the source's failures.
//!
//! Sans-IO ([`AuthBans`]: the caller passes `Instant`s) with a shared handle
//! ([`Bans`]) for the SIP layer and the guard. Memory is bounded: at most
//! [`MAX_TRACKED`] sources are tracked; past that, expired entries are swept and,
//! if still full, the oldest failure record is forgotten (bans are kept).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Sources tracked at most (failures and bans together).
pub const MAX_TRACKED: usize = 65_536;

/// When a source is banned: plain `[sip]` config data, defined in `config`.
pub use crate::config::BanPolicy;

#[derive(Debug, Clone, Copy)]
enum Entry {
    /// `count` failures since `first`.
    Failing { first: Instant, count: u32 },
    /// Dropped until this instant.
    Banned { until: Instant },
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the source may still try (`left` more failures before a ban).
    Counted {
        /// Failures left before the ban.
        left: u32,
    },
    /// This failure banned the source until the given instant.
    Banned(Instant),
}

/// Failed-authentication bookkeeping per source (sans-IO).
#[derive(Debug, Default)]
pub struct AuthBans {
    entries: HashMap<IpAddr, Entry>,
}

impl AuthBans {
    /// Records a failed digest attempt from `ip` at `now`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant, policy: BanPolicy) -> Failure {
        if policy.max_failures == 0 {
            return Failure::Counted { left: u32::MAX };
        }
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(&ip) {
            self.sweep(now, policy);
        }
        let entry = self.entries.entry(ip).or_insert(Entry::Failing { first: now, count: 0 });
        let count = match *entry {
            Entry::Banned { until } if until > now => return Failure::Banned(until),
            Entry::Failing { first, count } if now.saturating_duration_since(first) <= policy.window => count + 1,
            _ => {
                *entry = Entry::Failing { first: now, count: 0 };
                1
            }
        };
        if count >= policy.max_failures {
            let until = now + policy.ban_time;
            *entry = Entry::Banned { until };
            Failure::Banned(until)
        } else {
            if let Entry::Failing { count: c, .. } = entry {
                *c = count;
            }
            Failure::Counted { left: policy.max_failures - count }
        }
    }

    /// A successful authentication from `ip` clears its failures.
    pub fn succeeded(&mut self, ip: IpAddr) {
        if matches!(self.entries.get(&ip), Some(Entry::Failing { .. })) {
            self.entries.remove(&ip);
        }
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        matches!(self.entries.get(&ip), Some(Entry::Banned { until }) if *until > now)
    }

    /// Sources banned at `now`.
    pub fn banned(&self, now: Instant) -> usize {
        self.entries.values().filter(|e| matches!(e, Entry::Banned { until } if *until > now)).count()
    }

    /// Forgets expired bans and failure records older than the window; if still
    /// full, the failure records (never the bans).
    fn sweep(&mut self, now: Instant, policy: BanPolicy) {
        self.entries.retain(|_, e| match *e {
            Entry::Banned { until } => until > now,
            Entry::Failing { first, .. } => now.saturating_duration_since(first) <= policy.window,
        });
        if self.entries.len() >= MAX_TRACKED {
            self.entries.retain(|_, e| matches!(e, Entry::Banned { .. }));
        }
    }
}

/// The unit a ban applies to: the IPv4 address, or the IPv6 /64 (one host
/// usually holds a whole /64, so per-address bans would be trivially dodged).
pub fn ban_key(ip: IpAddr) -> IpAddr {
    match super::trunk::canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

/// The shared ban list: the SIP layer records failures, the transport guard asks
/// [`Bans::is_banned`] for every datagram and connection. Keys are [`ban_key`]s.
#[derive(Debug, Clone, Default)]
pub struct Bans(Arc<Mutex<AuthBans>>);

impl Bans {
    /// Records a failure (see [`AuthBans::failed`]); logs the ban once, at warn,
    /// and counts it in `/metrics`.
    pub fn failed(&self, ip: IpAddr, policy: BanPolicy) -> Failure {
        crate::security::SIP_AUTH_FAILURES.inc();
        let outcome = self.lock().failed(ban_key(ip), Instant::now(), policy);
        if let Failure::Banned(_) = outcome {
            crate::security::SIP_AUTH_BANS.inc();
            tracing::warn!(
                source = %ip,
                failures = policy.max_failures,
                ban = %humantime::format_duration(policy.ban_time),
                "too many failed digest authentications: source banned (its packets are dropped)"
            );
        }
        outcome
    }

    /// Clears `ip`'s failures after a success.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().succeeded(ban_key(ip));
    }

    /// Whether `ip` is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.lock().is_banned(ban_key(ip), Instant::now())
    }

    /// Sources banned now.
    pub fn banned(&self) -> usize {
        self.lock().banned(Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthBans> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    #[test]
    fn five_failures_in_the_window_ban_for_the_ban_time() {
        let p = BanPolicy::default();
        let t0 = Instant::now();
        let mut b = AuthBans::default();
        for i in 1..5u32 {
            assert_eq!(b.failed(ip(1), t0 + S * i, p), Failure::Counted { left: 5 - i });
            assert!(!b.is_banned(ip(1), t0 + S * i));
        }
        assert_eq!(b.failed(ip(1), t0 + S * 5, p), Failure::Banned(t0 + S * 5 + p.ban_time));
        assert!(b.is_banned(ip(1), t0 + S * 6));
        assert!(!b.is_banned(ip(2), t0 + S * 6), "other sources are not affected");
        assert_eq!(b.banned(t0 + S * 6), 1);
        // Still banned just before the end, free after it, with a clean slate.
        assert!(b.is_banned(ip(1), t0 + S * 5 + p.ban_time - S));
        assert!(!b.is_banned(ip(1), t0 + S * 5 + p.ban_time));
        assert_eq!(b.failed(ip(1), t0 + S * 5 + p.ban_time, p), Failure::Counted { left: 4 });
    }

    #[test]
    fn failures_outside_the_window_and_successes_reset_the_count() {
        let p = BanPolicy { max_failures: 3, window: S * 60, ban_time: S * 60 };
        let t0 = Instant::now();
        let mut b = AuthBans::default();
        b.failed(ip(1), t0, p);
        b.failed(ip(1), t0 + S, p);
        // The window has passed: counting starts again.
        assert_eq!(b.failed(ip(1), t0 + S * 61, p), Failure::Counted { left: 2 });
        b.failed(ip(1), t0 + S * 62, p);
        b.succeeded(ip(1));
        assert_eq!(b.failed(ip(1), t0 + S * 63, p), Failure::Counted { left: 2 });
        // A success does not lift a ban.
        b.failed(ip(1), t0 + S * 64, p);
        assert!(matches!(b.failed(ip(1), t0 + S * 65, p), Failure::Banned(_)));
        b.succeeded(ip(1));
        assert!(b.is_banned(ip(1), t0 + S * 66));
    }

    #[test]
    fn ipv6_sources_are_banned_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ban_key(a), ban_key(b));
        assert_ne!(ban_key(a), ban_key(c));
        let v4: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(ban_key(v4), IpAddr::from([192, 0, 2, 1]));
        let bans = Bans::default();
        let p = BanPolicy { max_failures: 1, ..BanPolicy::default() };
        bans.failed(a, p);
        assert!(bans.is_banned(b) && !bans.is_banned(c));
    }

    #[test]
    fn zero_disables_and_memory_is_bounded() {
        let t0 = Instant::now();
        let mut b = AuthBans::default();
        let off = BanPolicy { max_failures: 0, ..BanPolicy::default() };
        for _ in 0..10 {
            b.failed(ip(1), t0, off);
        }
        assert!(!b.is_banned(ip(1), t0));
        let p = BanPolicy::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            b.failed(IpAddr::from(i.to_be_bytes()), t0, p);
        }
        assert!(b.entries.len() <= MAX_TRACKED);
    }
}
