//! sipbridge patch: bounds on accepted stream (TCP/TLS) connections.
//!
//! A listener built with [`StreamLimits`] admits a connection only while the
//! total of accepted connections and the count from its source address stay under
//! their caps, gives a TLS handshake a deadline, and serves the connection with a
//! deadline for its first complete SIP message, for completing any message it has
//! started, and for idling between messages. Peers the transport whitelist calls
//! trusted ([`TransportWhitelist::is_trusted`]) are neither counted nor refused by
//! the caps and keep the transport layer's ordinary idle timeout. Listeners built
//! without limits behave as upstream rsipstack does.
//!
//! The accounting ([`StreamAccounting`]) is sans-IO: a counter per source and a
//! total behind one lock, released by the [`ConnectionPermit`] a served
//! connection holds until its serve loop ends.
//!
//! [`TransportWhitelist::is_trusted`]: super::transport_layer::TransportWhitelist::is_trusted

use core::net::IpAddr;
use core::time::Duration;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Caps and deadlines for connections accepted by a TCP or TLS listener.
///
/// A zero count or duration disables that bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    /// Accepted connections from untrusted peers at one time, all listeners of the
    /// transport layer together (a connection counts from accept, so TLS
    /// handshakes in progress count too).
    pub max_connections: usize,
    /// Accepted connections from one untrusted source address at one time.
    pub max_connections_per_source: usize,
    /// Time from accept to a finished TLS handshake (TLS listeners only); applies
    /// to every peer, trusted or not.
    pub tls_handshake_timeout: Duration,
    /// Time from the start of serving (after the TLS handshake) to the first
    /// complete SIP message, and the time any later message may take to arrive
    /// completely once its first bytes have (untrusted peers only). RFC 5626
    /// keepalives do not count as a first message.
    pub first_message_timeout: Duration,
    /// Time an untrusted connection may stay without receiving a byte between
    /// messages; RFC 5626 §3.5.1 CRLF keepalives count as traffic.
    pub idle_timeout: Duration,
}

impl Default for StreamLimits {
    /// 1024 connections, 16 per source, 10 s handshake, 10 s to the first
    /// message, 180 s idle (above the 95–120 s TCP keepalive interval of RFC 5626
    /// §4.4.1).
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_source: 16,
            tls_handshake_timeout: Duration::from_secs(10),
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
        }
    }
}

/// Why a stream connection was refused at accept or closed by a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// [`StreamLimits::max_connections`] reached: refused at accept.
    TotalCap,
    /// [`StreamLimits::max_connections_per_source`] reached: refused at accept.
    SourceCap,
    /// No finished TLS handshake within [`StreamLimits::tls_handshake_timeout`].
    HandshakeTimeout,
    /// No complete first message within [`StreamLimits::first_message_timeout`].
    FirstMessageTimeout,
    /// A started message not completed within [`StreamLimits::first_message_timeout`].
    IncompleteMessageTimeout,
    /// Nothing received for [`StreamLimits::idle_timeout`].
    IdleTimeout,
}

impl core::fmt::Display for StreamRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StreamRefusal::TotalCap => "too many connections",
            StreamRefusal::SourceCap => "too many connections from this source",
            StreamRefusal::HandshakeTimeout => "TLS handshake timeout",
            StreamRefusal::FirstMessageTimeout => "no complete SIP message in time",
            StreamRefusal::IncompleteMessageTimeout => "SIP message not completed in time",
            StreamRefusal::IdleTimeout => "idle timeout",
        })
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Live accepted connections of untrusted peers: a total and a count per source
/// (IPv4-mapped IPv6 addresses count as their IPv4 address).
#[derive(Debug, Default)]
pub struct StreamAccounting {
    counts: Mutex<Counts>,
}

impl StreamAccounting {
    /// Takes a place for a connection from `ip` under `limits`, or says which
    /// cap refuses it. The place is given back when the permit drops.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &StreamLimits) -> Result<ConnectionPermit, StreamRefusal> {
        let ip = ip.to_canonical();
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if limits.max_connections > 0 && c.total >= limits.max_connections {
            return Err(StreamRefusal::TotalCap);
        }
        let from_source = c.per_source.get(&ip).copied().unwrap_or(0);
        if limits.max_connections_per_source > 0 && from_source >= limits.max_connections_per_source {
            return Err(StreamRefusal::SourceCap);
        }
        c.total += 1;
        c.per_source.insert(ip, from_source + 1);
        Ok(ConnectionPermit { accounting: Arc::clone(self), ip })
    }

    /// Accepted untrusted connections now (total).
    pub fn total(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Accepted untrusted connections from `ip` now.
    pub fn from_source(&self, ip: IpAddr) -> usize {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.per_source.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn release(&self, ip: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&ip);
            }
        }
    }
}

/// A connection's place in [`StreamAccounting`]; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionPermit {
    accounting: Arc<StreamAccounting>,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.accounting.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> StreamLimits {
        StreamLimits { max_connections: total, max_connections_per_source: per_source, ..StreamLimits::default() }
    }

    #[test]
    fn per_source_cap_refuses_the_next_and_frees_on_drop() {
        let acct = Arc::new(StreamAccounting::default());
        let l = limits(100, 2);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let p1 = acct.admit(a, &l).unwrap();
        let _p2 = acct.admit(a, &l).unwrap();
        assert_eq!(acct.admit(a, &l).unwrap_err(), StreamRefusal::SourceCap);
        assert!(acct.admit(b, &l).is_ok(), "another source is not affected");
        drop(p1);
        assert!(acct.admit(a, &l).is_ok(), "a closed connection frees its place");
    }

    #[test]
    fn total_cap_counts_all_sources_and_mapped_addresses_are_one_source() {
        let acct = Arc::new(StreamAccounting::default());
        let l = limits(3, 2);
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        let held: Vec<_> =
            [v4, "198.51.100.8".parse().unwrap()].into_iter().map(|ip| acct.admit(ip, &l).unwrap()).collect();
        let _third = acct.admit(mapped, &l).unwrap();
        assert_eq!(acct.from_source(v4), 2);
        assert_eq!(acct.admit("198.51.100.9".parse().unwrap(), &l).unwrap_err(), StreamRefusal::TotalCap);
        drop(held);
        assert_eq!(acct.total(), 1);
        assert_eq!(acct.from_source(v4), 1);
    }

    #[test]
    fn zero_means_unbounded() {
        let acct = Arc::new(StreamAccounting::default());
        let l = limits(0, 0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| acct.admit(ip, &l).unwrap()).collect();
        assert_eq!(acct.total(), held.len());
    }
}
