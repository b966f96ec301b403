//! Counters of what the box refused at its edges (issue 17), process-wide, for
//! `/metrics` and for an operator reading the journal: foreign RTP dropped by
//! latching, SIP sources banned for guessing passwords, requests from unknown
//! sources dropped, stream connections refused, dial strings refused, media
//! fetches refused. Every module that refuses network input bumps one of these;
//! only `api::ops` reads them. Plain relaxed atomics: no lock, no allocation, cheap
//! enough for the per-packet path.

use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter (Prometheus `counter`).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero (for `static`s).
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// RTP packets dropped because they came from a source other than the leg's
/// latched (or, with `[rtp] strict_source`, signalled) address.
pub static RTP_FOREIGN_DROPPED: Counter = Counter::new();
/// RTCP packets dropped for the same reason.
pub static RTCP_FOREIGN_DROPPED: Counter = Counter::new();
/// Times a leg re-latched to a new source (signalled change, or silence + SDP match).
pub static RTP_RELATCHED: Counter = Counter::new();
/// RTP audio packets dropped because the latched peer sent audio faster than
/// twice real time, beyond a 2 s burst (`media::leg::INBOUND_RATE`).
pub static RTP_OVER_RATE_DROPPED: Counter = Counter::new();

/// Digest authentication failures (wrong password, bad or replayed nonce).
pub static SIP_AUTH_FAILURES: Counter = Counter::new();
/// Sources banned after too many failed digest attempts.
pub static SIP_AUTH_BANS: Counter = Counter::new();
/// Messages dropped silently because their source is banned.
pub static SIP_BANNED_DROPPED: Counter = Counter::new();
/// Requests from sources that match no trunk, dropped (`[sip] unknown_source = "drop"`).
pub static SIP_UNKNOWN_SOURCE_DROPPED: Counter = Counter::new();
/// Requests from sources that match no trunk, answered 403 (`unknown_source = "reject"`).
pub static SIP_UNKNOWN_SOURCE_REJECTED: Counter = Counter::new();
/// Messages dropped by the per-source / shared flood limiter.
pub static SIP_FLOOD_DROPPED: Counter = Counter::new();
/// TCP/TLS connections refused or closed by the stream caps (per source, total,
/// handshake timeout, first-message timeout, idle timeout).
pub static SIP_STREAMS_REFUSED: Counter = Counter::new();
/// Malformed requests answered 400 or dropped.
pub static SIP_MALFORMED: Counter = Counter::new();
/// INVITEs whose dialled number is not a dial string (answered 484).
pub static SIP_DIAL_STRING_REFUSED: Counter = Counter::new();

/// Media fetches / file reads refused (path outside `[media] dir`, private
/// address, redirect, too large, timeout).
pub static MEDIA_FETCH_REFUSED: Counter = Counter::new();
/// Noise suppression directions not started because `[rtp]
/// max_suppressed_streams` already ran (each costs a share of a core).
pub static NOISE_SUPPRESSION_REFUSED: Counter = Counter::new();
/// HTTP API connections refused by the connection cap or closed by the
/// header-read timeout.
pub static API_CONNECTIONS_REFUSED: Counter = Counter::new();

/// Every counter with its Prometheus name and help text, for `/metrics`.
pub fn all() -> [(&'static str, &'static str, &'static Counter); 16] {
    [
        (
            "sipbridge_rtp_foreign_packets_dropped_total",
            "RTP packets from a source other than the latched one, dropped.",
            &RTP_FOREIGN_DROPPED,
        ),
        (
            "sipbridge_rtcp_foreign_packets_dropped_total",
            "RTCP packets from a source other than the latched one, dropped.",
            &RTCP_FOREIGN_DROPPED,
        ),
        ("sipbridge_rtp_relatched_total", "RTP legs that latched to a new source after the first.", &RTP_RELATCHED),
        (
            "sipbridge_rtp_over_rate_packets_dropped_total",
            "RTP audio packets beyond twice real time from the latched peer, dropped.",
            &RTP_OVER_RATE_DROPPED,
        ),
        ("sipbridge_sip_auth_failures_total", "Failed SIP digest authentications.", &SIP_AUTH_FAILURES),
        ("sipbridge_sip_auth_bans_total", "Sources banned after repeated digest failures.", &SIP_AUTH_BANS),
        ("sipbridge_sip_banned_dropped_total", "SIP messages from banned sources, dropped.", &SIP_BANNED_DROPPED),
        (
            "sipbridge_sip_unknown_source_dropped_total",
            "SIP requests from sources matching no trunk, dropped.",
            &SIP_UNKNOWN_SOURCE_DROPPED,
        ),
        (
            "sipbridge_sip_unknown_source_rejected_total",
            "SIP requests from sources matching no trunk, answered 403.",
            &SIP_UNKNOWN_SOURCE_REJECTED,
        ),
        ("sipbridge_sip_flood_dropped_total", "SIP messages dropped by the flood limiter.", &SIP_FLOOD_DROPPED),
        (
            "sipbridge_sip_streams_refused_total",
            "SIP TCP/TLS connections refused or closed by the stream limits.",
            &SIP_STREAMS_REFUSED,
        ),
        ("sipbridge_sip_malformed_total", "Malformed SIP requests answered 400 or dropped.", &SIP_MALFORMED),
        (
            "sipbridge_sip_dial_string_refused_total",
            "INVITEs whose dialled number is not a dial string (484).",
            &SIP_DIAL_STRING_REFUSED,
        ),
        ("sipbridge_media_fetch_refused_total", "Playback files or URLs refused.", &MEDIA_FETCH_REFUSED),
        (
            "sipbridge_noise_suppression_refused_total",
            "Noise suppression not started: [rtp] max_suppressed_streams already ran.",
            &NOISE_SUPPRESSION_REFUSED,
        ),
        (
            "sipbridge_api_connections_refused_total",
            "API connections refused by the cap or closed by the header timeout.",
            &API_CONNECTIONS_REFUSED,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_counters() {
        let all = all();
        let mut names: Vec<_> = all.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|n| n.starts_with("sipbridge_") && n.ends_with("_total")));
        let c = Counter::new();
        c.inc();
        c.add(2);
        assert_eq!(c.get(), 3);
    }
}
