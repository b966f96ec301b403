//! RTCP sender and receiver reports (RFC 3550 §6.4) for one leg, sans-IO: builds
//! the compound packet we send every interval (SR when we sent RTP since the last
//! report, else RR; always with an SDES CNAME, §6.1), and reads the peer's SR/RR to
//! learn the round-trip time (§6.4.1: RTT = arrival − LSR − DLSR).
//!
//! Times: NTP timestamps are taken from `SystemTime`; LSR/DLSR are in 1/65536 s.
//! The caller passes the time; no clock or socket inside.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::stats::ReportBlock;

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Minimum interval between our reports (RFC 3550 §6.2: 5 s).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// 64-bit NTP timestamp of `t`.
pub fn ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// What we report about our own sending.
#[derive(Debug, Clone, Copy, Default)]
pub struct SenderInfo {
    /// RTP timestamp that corresponds to the NTP time of the report.
    pub rtp_timestamp: u32,
    /// Packets sent since the start.
    pub packets: u32,
    /// Payload octets sent since the start.
    pub octets: u32,
}

/// Per-leg RTCP state.
#[derive(Debug)]
pub struct RtcpState {
    ssrc: u32,
    cname: String,
    /// Middle 32 bits of the NTP time of the last SR received, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// Round-trip time from the last RR/SR that reported on our stream.
    rtt: Option<Duration>,
    next_report: Instant,
    /// Reports received from the peer.
    pub received_reports: u64,
    /// Reports sent.
    pub sent_reports: u64,
}

impl RtcpState {
    /// State for our stream `ssrc` with CNAME `cname`; the first report is due
    /// half an interval from `now` (§6.2 suggests a randomized start).
    pub fn new(ssrc: u32, cname: &str, now: Instant) -> Self {
        Self {
            ssrc,
            cname: cname.chars().take(255).collect(),
            last_sr: None,
            rtt: None,
            next_report: now + REPORT_INTERVAL / 2,
            received_reports: 0,
            sent_reports: 0,
        }
    }

    /// When the next report is due.
    pub fn next_report(&self) -> Instant {
        self.next_report
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Writes our compound report into `out` (SR if `sender` is given, else RR; one
    /// report block when `block` is given; SDES CNAME) and schedules the next one.
    /// Returns its length, or 0 if `out` is too small.
    pub fn build(
        &mut self,
        out: &mut [u8],
        sender: Option<SenderInfo>,
        block: Option<ReportBlock>,
        now: Instant,
        wall: SystemTime,
    ) -> usize {
        self.next_report = now + REPORT_INTERVAL;
        let rc = u8::from(block.is_some());
        let mut w = Writer { buf: out, at: 0, ok: true };
        let pt = if sender.is_some() { 200 } else { 201 };
        let words = 1 + if sender.is_some() { 5 } else { 0 } + 6 * usize::from(rc);
        w.u8(0x80 | rc);
        w.u8(pt);
        w.u16(words as u16);
        w.u32(self.ssrc);
        if let Some(s) = sender {
            let n = ntp(wall);
            w.u32((n >> 32) as u32);
            w.u32(n as u32);
            w.u32(s.rtp_timestamp);
            w.u32(s.packets);
            w.u32(s.octets);
        }
        if let Some(b) = block {
            w.u32(b.ssrc);
            w.u32((u32::from(b.fraction_lost) << 24) | (b.cumulative_lost as u32 & 0x00ff_ffff));
            w.u32(b.extended_highest_sequence);
            w.u32(b.jitter);
            let (lsr, dlsr) = match self.last_sr {
                Some((lsr, at)) => (lsr, (now.saturating_duration_since(at).as_secs_f64() * 65536.0) as u32),
                None => (0, 0),
            };
            w.u32(lsr);
            w.u32(dlsr);
        }
        // SDES with one chunk: SSRC, CNAME item, end, padded to a 32-bit boundary.
        let name = self.cname.as_bytes();
        let chunk = 4 + 2 + name.len() + 1;
        let padded = chunk.div_ceil(4) * 4;
        w.u8(0x81);
        w.u8(202);
        w.u16((padded / 4) as u16);
        w.u32(self.ssrc);
        w.u8(1);
        w.u8(name.len() as u8);
        w.bytes(name);
        for _ in chunk - 1..padded {
            w.u8(0);
        }
        self.sent_reports += 1;
        if w.ok { w.at } else { 0 }
    }

    /// Reads a (compound) RTCP packet from the peer; learns LSR from an SR and the
    /// RTT from a report block about our SSRC. Malformed input is ignored.
    pub fn on_packet(&mut self, buf: &[u8], now: Instant, wall: SystemTime) {
        let mut off = 0;
        while off + 4 <= buf.len() {
            let b0 = buf[off];
            if b0 >> 6 != 2 {
                return;
            }
            let rc = usize::from(b0 & 0x1f);
            let pt = buf[off + 1];
            let len = (usize::from(u16::from_be_bytes([buf[off + 2], buf[off + 3]])) + 1) * 4;
            let Some(pkt) = buf.get(off..off + len) else { return };
            let blocks_at = match pt {
                200 if pkt.len() >= 28 => {
                    let mid = u32::from_be_bytes([pkt[10], pkt[11], pkt[12], pkt[13]]);
                    self.last_sr = Some((mid, now));
                    self.received_reports += 1;
                    Some(28)
                }
                201 if pkt.len() >= 8 => {
                    self.received_reports += 1;
                    Some(8)
                }
                _ => None,
            };
            if let Some(start) = blocks_at {
                for i in 0..rc {
                    let b = start + i * 24;
                    let Some(block) = pkt.get(b..b + 24) else { break };
                    let ssrc = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
                    let lsr = u32::from_be_bytes([block[16], block[17], block[18], block[19]]);
                    let dlsr = u32::from_be_bytes([block[20], block[21], block[22], block[23]]);
                    if ssrc == self.ssrc && lsr != 0 {
                        let arrival = (ntp(wall) >> 16) as u32;
                        let rtt = arrival.wrapping_sub(lsr).wrapping_sub(dlsr);
                        // Ignore nonsense (clock steps): keep RTTs under 10 s.
                        if rtt < 10 * 65536 {
                            self.rtt = Some(Duration::from_secs_f64(f64::from(rtt) / 65536.0));
                        }
                    }
                }
            }
            off += len;
        }
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
    ok: bool,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.at..self.at + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.ok = false,
        }
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 0xAABB_CCDD,
            fraction_lost: 13,
            cumulative_lost: 7,
            extended_highest_sequence: 70_000,
            jitter: 42,
        }
    }

    #[test]
    fn sr_with_a_block_and_sdes_has_the_rfc_layout() {
        let t0 = Instant::now();
        let mut s = RtcpState::new(0x1122_3344, "sipbridge@box", t0);
        let mut out = [0u8; 200];
        let n = s.build(
            &mut out,
            Some(SenderInfo { rtp_timestamp: 8000, packets: 50, octets: 8000 }),
            Some(block()),
            t0,
            SystemTime::now(),
        );
        // SR: 28 + 24 bytes; SDES: 4 + 4 + 2 + 13 + 1 = 24 → padded 24.
        assert_eq!(n, 52 + 24);
        assert_eq!((out[0], out[1]), (0x81, 200));
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 12, "length in words - 1");
        assert_eq!(&out[28..32], &0xAABB_CCDDu32.to_be_bytes());
        assert_eq!(out[32], 13, "fraction lost");
        assert_eq!(&out[33..36], &[0, 0, 7], "cumulative lost, 24 bits");
        assert_eq!((out[52], out[53]), (0x81, 202));
        assert_eq!(&out[62..75], b"sipbridge@box");
        assert!(crate::media::rtp::is_rtcp(&out[..n]));
        // RR without blocks when we did not send.
        let n = s.build(&mut out, None, None, t0, SystemTime::now());
        assert_eq!((out[0], out[1], n), (0x80, 201, 8 + 24));
    }

    #[test]
    fn round_trip_time_from_lsr_and_dlsr() {
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        let mut ours = RtcpState::new(1, "a", t0);
        let mut peer = RtcpState::new(2, "b", t0);
        // We send an SR; the peer receives it 40 ms later (one way).
        let mut buf = [0u8; 200];
        let n = ours.build(&mut buf, Some(SenderInfo::default()), None, t0, wall0);
        peer.on_packet(&buf[..n], t0 + Duration::from_millis(40), wall0 + Duration::from_millis(40));
        // The peer answers 1 s later with an RR about our SSRC, which takes 40 ms back.
        let b = ReportBlock { ssrc: 1, fraction_lost: 0, cumulative_lost: 0, extended_highest_sequence: 0, jitter: 0 };
        let n =
            peer.build(&mut buf, None, Some(b), t0 + Duration::from_millis(1040), wall0 + Duration::from_millis(1040));
        ours.on_packet(&buf[..n], t0 + Duration::from_millis(1080), wall0 + Duration::from_millis(1080));
        let rtt = ours.rtt().unwrap();
        assert!((rtt.as_secs_f64() - 0.080).abs() < 0.002, "{rtt:?}");
        assert_eq!(ours.received_reports, 1);
    }

    #[test]
    fn garbage_is_ignored_without_panics() {
        let mut s = RtcpState::new(1, "a", Instant::now());
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x81) as u8).collect();
            s.on_packet(&junk, Instant::now(), SystemTime::now());
        }
        s.on_packet(&[0x81, 201, 0xff, 0xff, 0, 0], Instant::now(), SystemTime::now());
        assert!(s.rtt().is_none());
    }
}
