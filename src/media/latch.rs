//! RTP source latching, sans-IO: which source address a leg takes media from and
//! answers to (symmetric RTP, RFC 4961), so that a third party spraying packets at
//! the RTP port range neither injects audio into a call nor receives any of it
//! (issue 17; rtpengine's learning period and `strict-source`).
//!
//! The rule, per leg ([`Latch`]):
//!
//! - **Before any packet** the leg sends to the SDP address (`c=`/`m=` port).
//! - **Learning window** (`[rtp] learning_window`, opened when media starts after
//!   the answer and again on every re-INVITE/UPDATE answer): the first source of an
//!   accepted packet latches. A packet from the SDP address during the window
//!   takes the latch over from an earlier other source (the signalled address
//!   wins, as in rtpengine). If nothing arrived during the window, the first source
//!   after it latches (peers that stay silent after the answer).
//! - **Once latched**, packets from any other source are dropped
//!   ([`Verdict::Drop`]). The leg re-latches only on a signalled change (a new SDP
//!   address forgets the latch; an unchanged one keeps it and re-opens the window,
//!   so only the SDP address can take over), or when the latched source has been
//!   silent for `[rtp] relatch_after` and the new source is exactly the SDP address.
//! - **`[rtp] strict_source`**: only the SDP address is accepted and answered,
//!   whatever arrives (no NAT traversal).
//!
//! RTCP on its own port ([`RtcpLatch`]) follows the RTP latch: it accepts the first
//! RTCP source whose IP address is the RTP peer's (latched, else SDP), then only
//! that exact source until the RTP peer's address changes; strict mode accepts only
//! the SDP RTCP address. Multiplexed RTCP (RFC 5761) must come from the RTP
//! source itself ([`Latch::accepts_muxed_rtcp`]).
//!
//! No socket, no clock, no counter here: the caller passes `now`, counts the
//! verdicts (`crate::security`) and decides what to log.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The `[rtp]` latching settings a leg runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatchConfig {
    /// How long after the answer (and after each re-negotiation) a new source may
    /// still latch; the SDP address wins within it. Default 3 s.
    pub learning_window: Duration,
    /// How long the latched source must have been silent before the SDP address
    /// may take over. Default 2 s.
    pub relatch_after: Duration,
    /// Accept (and answer) only the SDP address. Default false.
    pub strict_source: bool,
}

impl Default for LatchConfig {
    fn default() -> Self {
        Self { learning_window: Duration::from_secs(3), relatch_after: Duration::from_secs(2), strict_source: false }
    }
}

impl From<&crate::config::Rtp> for LatchConfig {
    fn from(rtp: &crate::config::Rtp) -> Self {
        Self {
            learning_window: rtp.learning_window,
            relatch_after: rtp.relatch_after,
            strict_source: rtp.strict_source,
        }
    }
}

/// What to do with one received RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched source, or the first source, which is latched now.
    Accept,
    /// From a source the leg moved its latch to now, away from another one
    /// (counted in `sipbridge_rtp_relatched_total`).
    Relatched,
    /// From a foreign source: drop it (counted, never forwarded or answered).
    Drop,
}

/// The latching state of one RTP leg.
#[derive(Debug, Clone)]
pub struct Latch {
    config: LatchConfig,
    /// The signalled (SDP) RTP address.
    sdp: Option<SocketAddr>,
    /// The source media is taken from and sent to.
    latched: Option<SocketAddr>,
    /// End of the current learning window.
    learning_until: Instant,
    /// Last packet accepted from `latched`.
    last_seen: Instant,
    /// Packets dropped so far.
    dropped: u64,
}

impl Latch {
    /// A leg whose media starts at `now` towards the SDP address `sdp`; the
    /// learning window opens.
    pub fn new(config: LatchConfig, sdp: Option<SocketAddr>, now: Instant) -> Self {
        Self { config, sdp, latched: None, learning_until: now + config.learning_window, last_seen: now, dropped: 0 }
    }

    /// The settings in force.
    pub fn config(&self) -> LatchConfig {
        self.config
    }

    /// A new offer/answer (re-INVITE, UPDATE, the answer to our offer) signalled
    /// `sdp` at `now`: a changed address forgets the latch; the learning window
    /// opens again either way. Returns whether the latch was forgotten.
    pub fn signalled(&mut self, sdp: Option<SocketAddr>, now: Instant) -> bool {
        let changed = sdp != self.sdp;
        if changed {
            self.latched = None;
        }
        self.sdp = sdp;
        self.learning_until = now + self.config.learning_window;
        self.last_seen = now;
        changed
    }

    /// Judges an RTP packet from `from` arriving at `now` (module docs for the
    /// rule) and latches accordingly.
    pub fn on_packet(&mut self, from: SocketAddr, now: Instant) -> Verdict {
        if self.config.strict_source {
            return if Some(from) == self.sdp { Verdict::Accept } else { self.drop() };
        }
        match self.latched {
            Some(l) if l == from => {
                self.last_seen = now;
                Verdict::Accept
            }
            None => {
                self.latched = Some(from);
                self.last_seen = now;
                Verdict::Accept
            }
            Some(_) => {
                let learning = now < self.learning_until;
                let silent = now.saturating_duration_since(self.last_seen) >= self.config.relatch_after;
                if Some(from) == self.sdp && (learning || silent) {
                    self.latched = Some(from);
                    self.last_seen = now;
                    Verdict::Relatched
                } else {
                    self.drop()
                }
            }
        }
    }

    fn drop(&mut self) -> Verdict {
        self.dropped += 1;
        Verdict::Drop
    }

    /// Where media to the peer goes: the SDP address in strict mode, else the
    /// latched source, else (nothing latched yet) the SDP address.
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.config.strict_source { self.sdp } else { self.latched.or(self.sdp) }
    }

    /// The latched source, if any (never in strict mode).
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// RTP packets dropped by this latch so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether an RTCP packet multiplexed on the RTP port (RFC 5761) from `from`
    /// is the peer's: it must come from where RTP goes ([`Latch::destination`]).
    /// Never latches.
    pub fn accepts_muxed_rtcp(&self, from: SocketAddr) -> bool {
        self.destination() == Some(from)
    }
}

/// The latching state of one leg's RTCP port (RTCP not multiplexed), derived from
/// the leg's RTP [`Latch`] (module docs).
#[derive(Debug, Clone)]
pub struct RtcpLatch {
    /// The signalled RTCP address (`a=rtcp`, else RTP port + 1).
    sdp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    dropped: u64,
}

impl RtcpLatch {
    /// RTCP expected from `sdp`.
    pub fn new(sdp: Option<SocketAddr>) -> Self {
        Self { sdp, latched: None, dropped: 0 }
    }

    /// A new offer/answer signalled `sdp`: a changed address forgets the latch.
    pub fn signalled(&mut self, sdp: Option<SocketAddr>) {
        if sdp != self.sdp {
            self.latched = None;
        }
        self.sdp = sdp;
    }

    /// Whether an RTCP packet from `from` is the peer's, given the leg's RTP latch
    /// `rtp`; latches the first source on the RTP peer's IP address.
    pub fn on_packet(&mut self, from: SocketAddr, rtp: &Latch) -> bool {
        if rtp.config.strict_source {
            let ok = Some(from) == self.sdp;
            if !ok {
                self.dropped += 1;
            }
            return ok;
        }
        let peer_ip: Option<IpAddr> = rtp.destination().map(|a| a.ip());
        let current = self.latched.filter(|l| Some(l.ip()) == peer_ip);
        let ok = match current {
            Some(l) => l == from,
            None => Some(from.ip()) == peer_ip,
        };
        if ok {
            self.latched = Some(from);
        } else {
            self.dropped += 1;
        }
        ok
    }

    /// Where our RTCP reports go (RFC 3550 §11): the SDP RTCP address in strict
    /// mode; else the RTCP source latched on the RTP peer's IP; else, RTP latched
    /// to another source than the SDP address, its port + 1; else the SDP RTCP
    /// address.
    pub fn destination(&self, rtp: &Latch) -> Option<SocketAddr> {
        if rtp.config.strict_source {
            return self.sdp;
        }
        match (rtp.latched, self.latched) {
            (Some(r), Some(c)) if r.ip() == c.ip() => Some(c),
            (Some(r), _) if Some(r) == rtp.sdp => self.sdp,
            (Some(r), _) => Some(SocketAddr::new(r.ip(), r.port().wrapping_add(1))),
            (None, _) => self.sdp,
        }
    }

    /// RTCP packets dropped by this latch so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(3);
    const SILENCE: Duration = Duration::from_secs(2);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn latch(strict: bool, sdp: &str, t0: Instant) -> Latch {
        let config = LatchConfig { learning_window: WINDOW, relatch_after: SILENCE, strict_source: strict };
        Latch::new(config, Some(addr(sdp)), t0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sends_to_the_sdp_address_until_a_packet_latches() {
        let t0 = Instant::now();
        let mut l = latch(false, "192.0.2.1:4000", t0);
        assert_eq!(l.destination(), Some(addr("192.0.2.1:4000")));
        // A NATed peer: its first packet comes from elsewhere and latches.
        assert_eq!(l.on_packet(addr("198.51.100.7:31000"), t0 + ms(20)), Verdict::Accept);
        assert_eq!(l.destination(), Some(addr("198.51.100.7:31000")));
        assert_eq!(l.on_packet(addr("198.51.100.7:31000"), t0 + ms(40)), Verdict::Accept);
    }

    #[test]
    fn once_latched_other_sources_are_dropped_in_and_after_the_window() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.1:4000");
        let mut l = latch(false, "192.0.2.1:4000", t0);
        assert_eq!(l.on_packet(peer, t0), Verdict::Accept);
        let attacker = addr("203.0.113.9:5000");
        assert_eq!(l.on_packet(attacker, t0 + ms(100)), Verdict::Drop, "in the window");
        assert_eq!(l.on_packet(attacker, t0 + WINDOW + ms(100)), Verdict::Drop, "after the window");
        // Even after the peer has been silent for long: the attacker is not the SDP address.
        assert_eq!(l.on_packet(attacker, t0 + Duration::from_secs(60)), Verdict::Drop);
        assert_eq!(l.destination(), Some(peer));
        assert_eq!(l.dropped(), 3);
    }

    #[test]
    fn the_sdp_address_wins_over_an_earlier_source_in_the_window_only() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.1:4000");
        let attacker = addr("203.0.113.9:5000");
        let mut l = latch(false, "192.0.2.1:4000", t0);
        assert_eq!(l.on_packet(attacker, t0 + ms(10)), Verdict::Accept, "first source, latched for now");
        assert_eq!(l.on_packet(sdp, t0 + ms(30)), Verdict::Relatched, "the signalled address takes over");
        assert_eq!(l.destination(), Some(sdp));
        assert_eq!(l.on_packet(attacker, t0 + ms(50)), Verdict::Drop, "and the first source is foreign now");

        // After the window, a live latch is not taken over, even by the SDP address.
        let mut l = latch(false, "192.0.2.1:4000", t0);
        let nat = addr("198.51.100.7:31000");
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept);
        let mut t = t0;
        while t < t0 + WINDOW + ms(500) {
            t += ms(20);
            assert_eq!(l.on_packet(nat, t), Verdict::Accept);
        }
        assert_eq!(l.on_packet(sdp, t + ms(1)), Verdict::Drop, "the latched source is alive");
    }

    #[test]
    fn silence_then_the_sdp_address_relatches_but_no_other_source_does() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.1:4000");
        let nat = addr("198.51.100.7:31000");
        let other = addr("198.51.100.8:31000");
        let mut l = latch(false, "192.0.2.1:4000", t0);
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept);
        let last = t0 + Duration::from_secs(10);
        assert_eq!(l.on_packet(nat, last), Verdict::Accept);
        assert_eq!(l.on_packet(sdp, last + SILENCE - ms(1)), Verdict::Drop, "not silent long enough");
        assert_eq!(l.on_packet(other, last + SILENCE * 5), Verdict::Drop, "silent, but not the SDP address");
        assert_eq!(l.on_packet(sdp, last + SILENCE), Verdict::Relatched);
        assert_eq!(l.destination(), Some(sdp));
        assert_eq!(l.on_packet(nat, last + SILENCE + ms(20)), Verdict::Drop, "the old source is foreign now");
    }

    #[test]
    fn nothing_in_the_window_then_the_first_source_latches() {
        let t0 = Instant::now();
        let mut l = latch(false, "192.0.2.1:4000", t0);
        let nat = addr("198.51.100.7:31000");
        assert_eq!(l.on_packet(nat, t0 + WINDOW * 2), Verdict::Accept);
        assert_eq!(l.on_packet(addr("203.0.113.9:5000"), t0 + WINDOW * 2 + ms(20)), Verdict::Drop);
    }

    #[test]
    fn strict_mode_accepts_and_answers_only_the_sdp_address() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.1:4000");
        let mut l = latch(true, "192.0.2.1:4000", t0);
        assert_eq!(l.on_packet(addr("192.0.2.1:4002"), t0), Verdict::Drop, "same host, other port");
        assert_eq!(l.destination(), Some(sdp));
        assert_eq!(l.on_packet(sdp, t0 + ms(20)), Verdict::Accept);
        assert_eq!(l.on_packet(addr("203.0.113.9:5000"), t0 + ms(40)), Verdict::Drop);
        assert_eq!(l.on_packet(addr("192.0.2.1:4002"), t0 + Duration::from_secs(30)), Verdict::Drop);
        assert_eq!(l.latched(), None);
        // A re-INVITE moves the only accepted address.
        let moved = addr("192.0.2.1:4100");
        l.signalled(Some(moved), t0 + Duration::from_secs(40));
        assert_eq!(l.on_packet(sdp, t0 + Duration::from_secs(40)), Verdict::Drop);
        assert_eq!(l.on_packet(moved, t0 + Duration::from_secs(40)), Verdict::Accept);
        assert_eq!(l.destination(), Some(moved));
    }

    #[test]
    fn a_reinvite_reopens_learning() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.1:4000");
        let nat = addr("198.51.100.7:31000");
        let mut l = latch(false, "192.0.2.1:4000", t0);
        assert_eq!(l.on_packet(nat, t0), Verdict::Accept);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(l.on_packet(nat, t1), Verdict::Accept);
        assert_eq!(l.on_packet(sdp, t1 + ms(20)), Verdict::Drop, "no window, no silence");

        // Unchanged SDP: the latch stays, but the SDP address may take over in the new window.
        assert!(!l.signalled(Some(sdp), t1 + ms(40)));
        assert_eq!(l.destination(), Some(nat));
        assert_eq!(l.on_packet(addr("203.0.113.9:5000"), t1 + ms(50)), Verdict::Drop);
        assert_eq!(l.on_packet(sdp, t1 + ms(60)), Verdict::Relatched);

        // A new SDP address: the latch is forgotten; media goes there until a packet
        // latches, the first in the new window (the new SDP address still wins).
        let moved = addr("192.0.2.50:6000");
        let t2 = t1 + Duration::from_secs(60);
        assert!(l.signalled(Some(moved), t2));
        assert_eq!(l.destination(), Some(moved));
        let new_nat = addr("198.51.100.99:40000");
        assert_eq!(l.on_packet(new_nat, t2 + ms(10)), Verdict::Accept);
        assert_eq!(l.on_packet(sdp, t2 + ms(20)), Verdict::Drop, "the old SDP address is foreign now");
        assert_eq!(l.on_packet(moved, t2 + ms(30)), Verdict::Relatched);
        assert_eq!(l.on_packet(new_nat, t2 + WINDOW + ms(30)), Verdict::Drop);
    }

    #[test]
    fn muxed_rtcp_must_come_from_the_rtp_source() {
        let t0 = Instant::now();
        let nat = addr("198.51.100.7:31000");
        let mut l = latch(false, "192.0.2.1:4000", t0);
        assert!(l.accepts_muxed_rtcp(addr("192.0.2.1:4000")), "nothing latched: the SDP address");
        l.on_packet(nat, t0);
        assert!(l.accepts_muxed_rtcp(nat));
        assert!(!l.accepts_muxed_rtcp(addr("192.0.2.1:4000")));
        assert!(!l.accepts_muxed_rtcp(addr("198.51.100.7:31001")));
    }

    #[test]
    fn rtcp_follows_the_rtp_latch() {
        let t0 = Instant::now();
        let mut rtp = latch(false, "192.0.2.1:4000", t0);
        let mut rtcp = RtcpLatch::new(Some(addr("192.0.2.1:4001")));
        // Before RTP latches, only the SDP peer's IP may send RTCP.
        assert!(!rtcp.on_packet(addr("203.0.113.9:5001"), &rtp));
        rtp.on_packet(addr("198.51.100.7:31000"), t0);
        // The SDP RTCP address is not the latched peer's IP any more.
        assert!(!rtcp.on_packet(addr("192.0.2.1:4001"), &rtp));
        // The NAT's RTCP mapping (any port on the peer's IP) latches; then only it.
        assert!(rtcp.on_packet(addr("198.51.100.7:31077"), &rtp));
        assert!(rtcp.on_packet(addr("198.51.100.7:31077"), &rtp));
        assert!(!rtcp.on_packet(addr("198.51.100.7:31079"), &rtp));
        assert!(!rtcp.on_packet(addr("203.0.113.9:5001"), &rtp));
        assert_eq!(rtcp.dropped(), 4);
        // RTP relatches to the SDP address after silence: RTCP follows to its IP.
        assert_eq!(rtp.on_packet(addr("192.0.2.1:4000"), t0 + Duration::from_secs(30)), Verdict::Relatched);
        assert!(!rtcp.on_packet(addr("198.51.100.7:31077"), &rtp));
        assert!(rtcp.on_packet(addr("192.0.2.1:4001"), &rtp));
    }

    #[test]
    fn strict_rtcp_accepts_only_the_sdp_rtcp_address() {
        let t0 = Instant::now();
        let rtp = latch(true, "192.0.2.1:4000", t0);
        let mut rtcp = RtcpLatch::new(Some(addr("192.0.2.1:4001")));
        assert!(!rtcp.on_packet(addr("192.0.2.1:4003"), &rtp));
        assert!(rtcp.on_packet(addr("192.0.2.1:4001"), &rtp));
        rtcp.signalled(Some(addr("192.0.2.1:4005")));
        assert!(!rtcp.on_packet(addr("192.0.2.1:4001"), &rtp));
        assert!(rtcp.on_packet(addr("192.0.2.1:4005"), &rtp));
    }
}
