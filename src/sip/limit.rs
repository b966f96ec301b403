//! Cheap flood protection before any SIP parsing: a token bucket per source IP for
//! sources that are not trunk addresses, plus one shared bucket for all of them, so
//! that a flood from unknown or spoofed sources cannot crowd out calls from the
//! trunks (whose addresses bypass the limiter). Hooked into rsipstack's transport
//! whitelist, which runs per UDP datagram, per accepted TCP/TLS connection and per
//! message on an untrusted stream (rsipstack sipbridge patch 12), before the message
//! is parsed. Sources banned for password guessing (`super::ban`) are dropped here
//! too, and the stream caps report their refusals through the same hook. Sans-IO core ([`SourceLimiter`]) + the hook ([`Guard`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::trunk::{TrunkTable, canonical};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token buckets for non-trunk sources (sans-IO: the caller passes the time).
#[derive(Debug)]
pub struct SourceLimiter {
    per_source: HashMap<IpAddr, Bucket>,
    shared: Bucket,
    /// Messages per second per source.
    pub rate: f64,
    /// Burst per source.
    pub burst: f64,
    /// Messages per second for all non-trunk sources together.
    pub shared_rate: f64,
    max_sources: usize,
    dropped: u64,
}

impl SourceLimiter {
    /// `rate`/`burst` per source, `shared_rate` (burst = 2 s of it) for all of them.
    pub fn new(rate: f64, burst: f64, shared_rate: f64, now: Instant) -> Self {
        Self {
            per_source: HashMap::new(),
            shared: Bucket { tokens: shared_rate * 2.0, last: now },
            rate,
            burst,
            shared_rate,
            max_sources: 65_536,
            dropped: 0,
        }
    }

    /// Whether a message from `ip` may be processed now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_source.len() >= self.max_sources && !self.per_source.contains_key(&ip) {
            // Forget sources whose bucket is full again (idle long enough).
            let (rate, burst) = (self.rate, self.burst);
            self.per_source
                .retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.per_source.entry(ip).or_insert(Bucket { tokens: burst, last: now });
        let ok = bucket.take(now, rate, burst) && self.shared.take(now, self.shared_rate, self.shared_rate * 2.0);
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    /// Messages refused so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The transport hook: trunk addresses pass; banned sources (password guessers,
/// `super::ban`) are dropped; others go through the limiter.
#[derive(Clone)]
pub struct Guard {
    trunks: Arc<TrunkTable>,
    limiter: Arc<Mutex<SourceLimiter>>,
    bans: super::ban::Bans,
}

impl Guard {
    /// A guard for these trunks and this ban list: 50 messages/s (burst 200) per
    /// unknown source, 2000/s for all unknown sources together.
    pub fn new(trunks: Arc<TrunkTable>, bans: super::ban::Bans) -> Self {
        Self { trunks, limiter: Arc::new(Mutex::new(SourceLimiter::new(50.0, 200.0, 2000.0, Instant::now()))), bans }
    }

    /// Whether to process a message or connection from `ip`.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.trunks.is_trunk_address(ip) {
            return true;
        }
        if self.bans.is_banned(ip) {
            crate::security::SIP_BANNED_DROPPED.inc();
            return false;
        }
        let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let ok = l.allow(ip, Instant::now());
        if !ok {
            crate::security::SIP_FLOOD_DROPPED.inc();
        }
        if !ok && l.dropped().is_power_of_two() {
            tracing::warn!(source = %ip, dropped_total = l.dropped(), "SIP flood from a non-trunk source: messages dropped");
        }
        ok
    }
}

#[async_trait::async_trait]
impl rsipstack::transport::transport_layer::TransportWhitelist for Guard {
    async fn allow(&self, ip: IpAddr) -> bool {
        Guard::allow(self, ip)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.is_trunk_source(ip)
    }

    fn stream_refused(&self, ip: IpAddr, why: rsipstack::transport::StreamRefusal) {
        self.count_stream_refusal(ip, why)
    }
}

/// Stream bounds (issue 17 point 7): which peers the TCP/TLS caps exempt, and the
/// count of what they refused.
impl Guard {
    /// Whether `ip` is a trunk address: its connections are not counted toward
    /// `[sip]` `max_connections` / `max_connections_per_source`, never refused by
    /// them, and not held to the first-message and idle timeouts.
    pub fn is_trunk_source(&self, ip: IpAddr) -> bool {
        self.trunks.is_trunk_address(canonical(ip))
    }

    /// Counts a stream connection refused at accept or closed by a deadline
    /// (`sipbridge_sip_streams_refused_total`); logs at warn on the 1st, 2nd,
    /// 4th, 8th ... refusal so a flood cannot flood the journal.
    pub fn count_stream_refusal(&self, ip: IpAddr, why: rsipstack::transport::StreamRefusal) {
        crate::security::SIP_STREAMS_REFUSED.inc();
        let n = crate::security::SIP_STREAMS_REFUSED.get();
        if n.is_power_of_two() {
            tracing::warn!(source = %ip, reason = %why, refused_total = n, "SIP stream connection refused or closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flooding_source_is_cut_to_its_rate_without_hurting_others() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(50.0, 200.0, 2000.0, t0);
        let flood: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        // 10 000 messages within one second from one source: burst + ~rate pass.
        let passed = (0..10_000).filter(|i| l.allow(flood, t0 + Duration::from_micros(*i * 100))).count();
        assert!((200..=260).contains(&passed), "{passed}");
        assert!(l.allow(other, t0 + Duration::from_secs(1)), "another source is not affected");
        assert_eq!(l.dropped() as usize, 10_000 - passed);
    }

    #[test]
    fn the_shared_budget_caps_many_sources() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(50.0, 200.0, 100.0, t0);
        let passed = (0..1000u32).filter(|i| l.allow(IpAddr::from(i.to_be_bytes()), t0)).count();
        assert_eq!(passed, 200, "2 s of the shared rate");
    }
}
