//! RFC 3550 receiver statistics for one direction of one call leg: sequence
//! tracking (Appendix A.1), loss (A.3), interarrival jitter (§6.4.1, A.8), loss
//! burstiness, and RTCP report-block values. `quality.rs` turns them into the
//! Telnyx `call_quality_stats` snapshot.
//!
//! The caller feeds each received RTP packet's SSRC, sequence number and timestamp
//! with its arrival [`Instant`]; nothing here reads a clock. Counters survive SSRC
//! changes and sequence restarts (a re-INVITE, a carrier's media server switch):
//! the per-source A.1 state restarts, the call totals keep counting.

use std::time::{Duration, Instant};

/// A.1 `MAX_DROPOUT`: a forward jump of fewer packets is a gap (loss), not a restart.
pub const MAX_DROPOUT: u16 = 3000;
/// A.1 `MAX_MISORDER`: a backward step of fewer packets is a late/duplicate packet.
pub const MAX_MISORDER: u16 = 100;
/// A.1 `MIN_SEQUENTIAL`: in-order packets needed before a new source counts.
pub const MIN_SEQUENTIAL: u8 = 2;

/// How many recent sequence numbers are remembered to tell a duplicate from a
/// late packet.
const HISTORY: u32 = 128;

/// What [`ReceiverStats::on_packet`] concluded about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketVerdict {
    /// Next in order, or ahead with a gap smaller than `MAX_DROPOUT` (the gap is loss).
    InOrder,
    /// Older than the highest sequence seen and not seen before (reordered).
    Late,
    /// A sequence number already received (within the last 128).
    Duplicate,
    /// Held back while a new source proves itself (`MIN_SEQUENTIAL`, A.1); counted
    /// once the source is validated.
    Probation,
    /// A jump of `MAX_DROPOUT` or more (or too far back): ignored until the next
    /// packet confirms the new sequence, then the source restarts (A.1 `bad_seq`).
    Discarded,
    /// Confirmed restart of the sequence (or a new SSRC validated): counting resumes.
    Restarted,
}

/// Values for an RTCP receiver report block (RFC 3550 §6.4.1), except LSR/DLSR,
/// which the RTCP layer fills from its sender-report bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the source being reported.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, 8-bit fixed point (/256).
    pub fraction_lost: u8,
    /// Cumulative packets lost, clamped to the 24-bit signed field; negative when
    /// duplicates outnumber losses (§6.4.1).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: cycles·65536 + highest seq.
    pub extended_highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
}

/// Appendix A.1 per-source sequence state.
#[derive(Clone, Copy, Debug)]
struct Source {
    ssrc: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    probation: u8,
    /// First sequence number of the probation run (counted once validated).
    probation_start: u16,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Bit i set: extended sequence `extended_max − i` was received.
    history: u128,
    /// Previous transit time (arrival − timestamp) in RTP units; None before the
    /// first jitter sample of this source.
    transit: Option<u32>,
    /// Jitter estimate ×16 in RTP units (the integer form of A.8).
    jitter_x16: u32,
}

impl Source {
    fn new(ssrc: u32, seq: u16) -> Source {
        let mut s = Source {
            ssrc,
            max_seq: seq.wrapping_sub(1),
            cycles: 0,
            base_seq: u32::from(seq),
            bad_seq: 1 << 16 | 1,
            probation: MIN_SEQUENTIAL,
            probation_start: seq,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            history: 0,
            transit: None,
            jitter_x16: 0,
        };
        s.init_seq(seq);
        s.max_seq = seq.wrapping_sub(1);
        s
    }

    /// A.1 `init_seq`.
    fn init_seq(&mut self, seq: u16) {
        self.base_seq = u32::from(seq);
        self.max_seq = seq;
        self.bad_seq = (1 << 16) + 1; // so seq == bad_seq is false
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
        self.history = 1;
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }
}

/// Receiver statistics for one direction of one leg (one RTP session as seen by
/// the receiver), RFC 3550 Appendix A.1/A.3/A.8.
#[derive(Clone, Debug)]
pub struct ReceiverStats {
    clock_rate_hz: u32,
    /// Arrival-time origin for converting `Instant`s to RTP units.
    epoch: Option<Instant>,
    source: Option<Source>,
    /// Totals of sources that ended (SSRC change, restart).
    closed_received: u64,
    closed_lost: i64,
    packets: u64,
    duplicates: u64,
    late: u64,
    jitter_samples: u64,
    jitter_sum_x16: u64,
    max_jitter_x16: u32,
    /// Number of gaps (loss bursts) seen, for the burst ratio.
    loss_bursts: u64,
    lost_in_bursts: u64,
}

impl ReceiverStats {
    /// New statistics for a stream whose RTP clock runs at `clock_rate_hz`
    /// (8000 for G.711 and telephone-event/8000).
    pub fn new(clock_rate_hz: u32) -> ReceiverStats {
        ReceiverStats {
            clock_rate_hz: clock_rate_hz.max(1),
            epoch: None,
            source: None,
            closed_received: 0,
            closed_lost: 0,
            packets: 0,
            duplicates: 0,
            late: 0,
            jitter_samples: 0,
            jitter_sum_x16: 0,
            max_jitter_x16: 0,
            loss_bursts: 0,
            lost_in_bursts: 0,
        }
    }

    /// Records one received audio packet; updates sequence state, loss and jitter.
    pub fn on_packet(&mut self, ssrc: u32, sequence_number: u16, timestamp: u32, arrival: Instant) -> PacketVerdict {
        self.record(ssrc, sequence_number, timestamp, arrival, true)
    }

    /// Records a packet that counts for sequence and loss but not for jitter:
    /// RFC 4733 telephone-event packets, whose timestamp stays at the event start
    /// while their arrival advances, which would read as jitter.
    pub fn on_packet_without_timing(&mut self, ssrc: u32, sequence_number: u16, arrival: Instant) -> PacketVerdict {
        self.record(ssrc, sequence_number, 0, arrival, false)
    }

    fn record(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: Instant, timing: bool) -> PacketVerdict {
        self.packets += 1;
        let epoch = *self.epoch.get_or_insert(arrival);
        let new_source = match &self.source {
            Some(s) => s.ssrc != ssrc,
            None => true,
        };
        if new_source {
            self.close_source();
            self.source = Some(Source::new(ssrc, seq));
        }
        let verdict = self.update_seq(seq);
        if timing && matches!(verdict, PacketVerdict::InOrder | PacketVerdict::Restarted) {
            let arrival_units = self.rtp_units_since(epoch, arrival);
            self.update_jitter(arrival_units, timestamp);
        }
        match verdict {
            PacketVerdict::Duplicate => self.duplicates += 1,
            PacketVerdict::Late => self.late += 1,
            _ => {}
        }
        verdict
    }

    /// Ends the current source, keeping its counts in the call totals.
    fn close_source(&mut self) {
        if let Some(s) = self.source.take().filter(|s| s.probation == 0) {
            self.closed_received += s.received;
            self.closed_lost += s.lost();
        }
    }

    /// RFC 3550 A.1 `update_seq`, with two additions: packets of a successful
    /// probation run are counted (A.1 counts only from the last one), and a
    /// 128-packet history separates duplicates from late packets.
    fn update_seq(&mut self, seq: u16) -> PacketVerdict {
        let Some(s) = self.source.as_mut() else { return PacketVerdict::Discarded };
        let udelta = seq.wrapping_sub(s.max_seq);
        if s.probation > 0 {
            if seq == s.max_seq.wrapping_add(1) {
                s.probation -= 1;
                s.max_seq = seq;
                if s.probation == 0 {
                    let start = s.probation_start;
                    s.init_seq(start);
                    let run = seq.wrapping_sub(start);
                    s.max_seq = seq;
                    s.received = u64::from(run) + 1;
                    s.history = if run >= 127 { u128::MAX } else { (1u128 << (run + 1)) - 1 };
                    return PacketVerdict::Restarted;
                }
            } else {
                s.probation = MIN_SEQUENTIAL - 1;
                s.probation_start = seq;
                s.max_seq = seq;
            }
            return PacketVerdict::Probation;
        }
        if udelta < MAX_DROPOUT {
            if udelta == 0 {
                s.received += 1;
                return PacketVerdict::Duplicate;
            }
            if seq < s.max_seq {
                s.cycles = s.cycles.wrapping_add(1 << 16);
            }
            s.max_seq = seq;
            s.history = if u32::from(udelta) >= HISTORY { 1 } else { (s.history << udelta) | 1 };
            if udelta > 1 {
                self.loss_bursts += 1;
                self.lost_in_bursts += u64::from(udelta - 1);
            }
            s.received += 1;
            PacketVerdict::InOrder
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A jump: restart only when the next packet follows it (A.1 bad_seq).
            if u32::from(seq) == s.bad_seq {
                // Keep what the old sequence counted, then start over.
                self.closed_received += s.received;
                self.closed_lost += s.lost();
                s.init_seq(seq);
                s.received = 1;
                s.transit = None;
                PacketVerdict::Restarted
            } else {
                s.bad_seq = u32::from(seq.wrapping_add(1));
                PacketVerdict::Discarded
            }
        } else {
            // Within MAX_MISORDER behind the highest sequence: late or duplicate.
            s.received += 1;
            let back = u32::from(s.max_seq.wrapping_sub(seq));
            if back < HISTORY {
                let bit = 1u128 << back;
                if s.history & bit != 0 {
                    return PacketVerdict::Duplicate;
                }
                s.history |= bit;
            }
            PacketVerdict::Late
        }
    }

    /// Arrival time in RTP clock units since the first packet (wrapping like RTP).
    fn rtp_units_since(&self, epoch: Instant, arrival: Instant) -> u32 {
        let elapsed = arrival.saturating_duration_since(epoch);
        let units = elapsed.as_nanos() * u128::from(self.clock_rate_hz) / 1_000_000_000;
        units as u32 // truncation = modulo 2^32, as RTP timestamps wrap
    }

    /// A.8: D = (Rj − Ri) − (Sj − Si); J += (|D| − J)/16, in integer ×16 form.
    fn update_jitter(&mut self, arrival_units: u32, timestamp: u32) {
        let Some(s) = self.source.as_mut() else { return };
        let transit = arrival_units.wrapping_sub(timestamp);
        if let Some(previous) = s.transit {
            let d = (transit.wrapping_sub(previous) as i32).unsigned_abs();
            // J·16 += |D| − (J·16)/16, rounded (A.8 integer version).
            s.jitter_x16 = s.jitter_x16.wrapping_add(d).wrapping_sub((s.jitter_x16 + 8) >> 4);
            self.jitter_samples += 1;
            self.jitter_sum_x16 += u64::from(s.jitter_x16);
            self.max_jitter_x16 = self.max_jitter_x16.max(s.jitter_x16);
        }
        s.transit = Some(transit);
    }

    /// Current interarrival jitter, RFC 3550 §6.4.1 / A.8, in RTP timestamp units
    /// (divide by the clock rate, 8000 for G.711, for seconds).
    pub fn jitter(&self) -> u32 {
        self.source.map_or(0, |s| s.jitter_x16 >> 4)
    }

    /// Current interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        self.units_to_duration(f64::from(self.source.map_or(0, |s| s.jitter_x16)) / 16.0)
    }

    /// Largest interarrival jitter seen during the call, as a duration.
    pub fn max_jitter(&self) -> Duration {
        self.units_to_duration(f64::from(self.max_jitter_x16) / 16.0)
    }

    /// Mean of the jitter estimate over all jitter samples, as a duration.
    pub fn mean_jitter(&self) -> Duration {
        if self.jitter_samples == 0 {
            return Duration::ZERO;
        }
        self.units_to_duration(self.jitter_sum_x16 as f64 / 16.0 / self.jitter_samples as f64)
    }

    fn units_to_duration(&self, units: f64) -> Duration {
        Duration::from_secs_f64(units / f64::from(self.clock_rate_hz))
    }

    /// Extended highest sequence number of the current source (A.1:
    /// cycles·65536 + max_seq); 0 before any validated packet.
    pub fn extended_highest_sequence(&self) -> u32 {
        self.source.filter(|s| s.probation == 0).map_or(0, |s| s.extended_max())
    }

    /// Every RTP packet handed in, whatever its verdict.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets that updated the jitter estimate: in-order packets fed with
    /// [`on_packet`](Self::on_packet) after the one that validated their source.
    pub fn jitter_samples(&self) -> u64 {
        self.jitter_samples
    }

    /// Packets counted as received by A.1 over the call (duplicates and late
    /// packets included, probation and discarded packets not).
    pub fn received(&self) -> u64 {
        self.closed_received + self.source.filter(|s| s.probation == 0).map_or(0, |s| s.received)
    }

    /// Packets expected over the call: Σ over sources of extended max − base + 1.
    pub fn expected(&self) -> u64 {
        let current = self.source.filter(|s| s.probation == 0).map_or(0, |s| s.expected());
        (self.closed_received as i64 + self.closed_lost) as u64 + current
    }

    /// Cumulative packets lost over the call, expected − received (RFC 3550
    /// §6.4.1); negative when duplicates outnumber losses.
    pub fn cumulative_lost(&self) -> i64 {
        self.closed_lost + self.source.filter(|s| s.probation == 0).map_or(0, |s| s.lost())
    }

    /// Packets whose sequence number had been received already.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a higher sequence number (reordered).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Loss ratio 0.0–1.0 over the call, clamped at 0.
    pub fn loss_ratio(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            return 0.0;
        }
        (self.cumulative_lost().max(0) as f64 / expected as f64).min(1.0)
    }

    /// G.107 BurstR estimate: observed mean loss-burst length divided by the
    /// mean length random (Bernoulli) loss of the same ratio would give,
    /// 1/(1 − Ppl). 1.0 when there is no loss; never below 1.0 (G.107 treats
    /// BurstR < 1 as random loss).
    pub fn burst_ratio(&self) -> f64 {
        if self.loss_bursts == 0 {
            return 1.0;
        }
        let mean_burst = self.lost_in_bursts as f64 / self.loss_bursts as f64;
        (mean_burst * (1.0 - self.loss_ratio())).max(1.0)
    }

    /// The RTCP receiver report block for the current source (A.3), advancing the
    /// "since the previous report" interval; None before a validated source.
    pub fn report_block(&mut self) -> Option<ReportBlock> {
        let s = self.source.as_mut().filter(|s| s.probation == 0)?;
        let expected = s.expected();
        let expected_interval = expected.saturating_sub(s.expected_prior);
        s.expected_prior = expected;
        let received_interval = s.received.saturating_sub(s.received_prior);
        s.received_prior = s.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        Some(ReportBlock {
            ssrc: s.ssrc,
            fraction_lost,
            cumulative_lost: s.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            extended_highest_sequence: s.extended_max(),
            jitter: s.jitter_x16 >> 4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234_5678;

    /// Feeds packets 20 ms apart in arrival time with matching timestamps (160 units).
    struct Feed {
        stats: ReceiverStats,
        start: Instant,
    }

    impl Feed {
        fn new() -> Feed {
            Feed { stats: ReceiverStats::new(8000), start: Instant::now() }
        }

        /// Packet `seq` sent at `seq·20 ms`, arriving `extra_ms` late.
        fn packet(&mut self, seq: u16, extra_ms: u64) -> PacketVerdict {
            self.packet_ssrc(SSRC, seq, extra_ms)
        }

        fn packet_ssrc(&mut self, ssrc: u32, seq: u16, extra_ms: u64) -> PacketVerdict {
            let at = self.start + Duration::from_millis(u64::from(seq) * 20 + extra_ms);
            self.stats.on_packet(ssrc, seq, u32::from(seq) * 160, at)
        }
    }

    #[test]
    fn clean_stream_counts_everything_and_has_no_jitter() {
        let mut f = Feed::new();
        assert_eq!(f.packet(100, 0), PacketVerdict::Probation);
        assert_eq!(f.packet(101, 0), PacketVerdict::Restarted);
        for seq in 102..1100 {
            assert_eq!(f.packet(seq, 0), PacketVerdict::InOrder);
        }
        let s = &f.stats;
        assert_eq!((s.packets(), s.received(), s.expected(), s.cumulative_lost()), (1000, 1000, 1000, 0));
        assert_eq!(s.extended_highest_sequence(), 1099);
        assert_eq!(s.jitter(), 0);
        let q = s.call_quality_stats(Duration::ZERO, false);
        assert_eq!((q.packet_count, q.skip_packet_count, q.jitter_packet_count), (1000, 0, 998));
        assert_eq!(q.jitter_max_variance, 0.0);
        assert!((q.mos - 4.40).abs() < 0.01, "{}", q.mos);
    }

    #[test]
    fn sequence_wrap_extends_the_highest_sequence() {
        let mut f = Feed::new();
        // Timestamps are derived from seq, so restart the clock math per segment:
        // only sequence handling matters here.
        for seq in 65530..=65535u16 {
            f.packet(seq, 0);
        }
        for seq in 0..10u16 {
            assert_eq!(f.packet(seq, 0), PacketVerdict::InOrder);
        }
        assert_eq!(f.stats.extended_highest_sequence(), 65536 + 9);
        assert_eq!(f.stats.expected(), 16);
        assert_eq!(f.stats.cumulative_lost(), 0);
    }

    #[test]
    fn gaps_are_loss_and_fraction_lost_is_per_report_interval() {
        let mut f = Feed::new();
        for seq in 0..100u16 {
            if seq % 10 != 5 {
                f.packet(seq, 0); // 10 % loss, one packet per gap
            }
        }
        assert_eq!(f.stats.cumulative_lost(), 10);
        let rb = f.stats.report_block().unwrap();
        assert_eq!(rb.ssrc, SSRC);
        assert_eq!(rb.cumulative_lost, 10);
        assert_eq!(rb.fraction_lost, (10 * 256 / 100) as u8);
        assert_eq!(rb.extended_highest_sequence, 99);
        for seq in 100..200u16 {
            f.packet(seq, 0);
        }
        let rb = f.stats.report_block().unwrap();
        assert_eq!(rb.fraction_lost, 0, "no loss since the previous report");
        assert_eq!(rb.cumulative_lost, 10);
        assert!((f.stats.loss_ratio() - 0.05).abs() < 1e-9);
        assert_eq!(f.stats.burst_ratio(), 1.0, "single-packet gaps at 5 % are random loss");
        let q = f.stats.call_quality_stats(Duration::ZERO, false);
        assert_eq!(q.skip_packet_count, 10);
        assert_eq!(q.packet_count, 190);
    }

    #[test]
    fn bursty_loss_raises_the_burst_ratio() {
        let mut f = Feed::new();
        for seq in 0..200u16 {
            if !(50..60).contains(&seq) {
                f.packet(seq, 0);
            }
        }
        // One burst of 10 at 5 % loss: BurstR = 10 · 0.95.
        assert!((f.stats.burst_ratio() - 9.5).abs() < 1e-9, "{}", f.stats.burst_ratio());
    }

    #[test]
    fn duplicates_and_late_packets_are_told_apart() {
        let mut f = Feed::new();
        for seq in 0..10u16 {
            f.packet(seq, 0);
        }
        assert_eq!(f.packet(12, 0), PacketVerdict::InOrder); // 10, 11 missing
        assert_eq!(f.packet(10, 45), PacketVerdict::Late);
        assert_eq!(f.packet(10, 46), PacketVerdict::Duplicate);
        assert_eq!(f.packet(12, 1), PacketVerdict::Duplicate);
        assert_eq!(f.stats.late(), 1);
        assert_eq!(f.stats.duplicates(), 2);
        // RFC 3550: received includes duplicates, so lost = 13 − 14 = −1 although 11
        // is missing: it may be negative (§6.4.1).
        assert_eq!(f.stats.expected(), 13);
        assert_eq!(f.stats.received(), 14);
        assert_eq!(f.stats.cumulative_lost(), -1);
        assert_eq!(f.packet(11, 60), PacketVerdict::Late);
        assert_eq!(f.stats.cumulative_lost(), -2);
        let q = f.stats.call_quality_stats(Duration::ZERO, false);
        assert_eq!(q.skip_packet_count, 0, "clamped for display");
        assert_eq!(q.packet_count, 15);
        assert_eq!(f.stats.report_block().unwrap().cumulative_lost, -2);
    }

    #[test]
    fn big_jump_restarts_only_when_confirmed() {
        let mut f = Feed::new();
        for seq in 0..50u16 {
            f.packet(seq, 0);
        }
        assert_eq!(f.packet(40_000, 0), PacketVerdict::Discarded, "a lone jump is ignored");
        assert_eq!(f.packet(50, 0), PacketVerdict::InOrder);
        assert_eq!(f.packet(30_000, 0), PacketVerdict::Discarded);
        assert_eq!(f.packet(30_001, 0), PacketVerdict::Restarted);
        assert_eq!(f.packet(30_002, 0), PacketVerdict::InOrder);
        assert_eq!(f.stats.extended_highest_sequence(), 30_002);
        // 51 from the first run + 2 from the restarted one; the discarded jumps are not received.
        assert_eq!(f.stats.received(), 53);
        assert_eq!(f.stats.expected(), 53);
        assert_eq!(f.stats.packets(), 55);
    }

    #[test]
    fn ssrc_change_starts_a_new_source_and_keeps_totals() {
        let mut f = Feed::new();
        for seq in 0..20u16 {
            if seq != 7 {
                f.packet(seq, 0);
            }
        }
        assert_eq!(f.packet_ssrc(0xbeef, 5000, 0), PacketVerdict::Probation);
        assert_eq!(f.packet_ssrc(0xbeef, 5001, 0), PacketVerdict::Restarted);
        assert_eq!(f.packet_ssrc(0xbeef, 5003, 0), PacketVerdict::InOrder);
        assert_eq!(f.stats.report_block().unwrap().ssrc, 0xbeef);
        assert_eq!(f.stats.received(), 19 + 3);
        assert_eq!(f.stats.cumulative_lost(), 1 + 1);
        assert_eq!(f.stats.extended_highest_sequence(), 5003);
    }

    #[test]
    fn probation_resets_on_misordered_start() {
        let mut f = Feed::new();
        assert_eq!(f.packet(10, 0), PacketVerdict::Probation);
        assert_eq!(f.packet(20, 0), PacketVerdict::Probation);
        assert_eq!(f.stats.report_block(), None);
        assert_eq!(f.packet(21, 0), PacketVerdict::Restarted);
        assert_eq!((f.stats.received(), f.stats.expected()), (2, 2));
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let mut f = Feed::new();
        // Alternate 0 and 10 ms of extra delay: |D| = 80 units every packet after the first pair.
        for seq in 0..400u16 {
            f.packet(seq, if seq % 2 == 0 { 0 } else { 10 });
        }
        // J converges to |D| = 80 units = 10 ms.
        let j = f.stats.jitter();
        assert!((78..=80).contains(&j), "{j}");
        assert!((f.stats.jitter_duration().as_secs_f64() * 1000.0 - 10.0).abs() < 0.3);
        let q = f.stats.call_quality_stats(Duration::ZERO, false);
        assert!((q.jitter_max_variance - 10.0).abs() < 0.3, "{}", q.jitter_max_variance);
        // One step by hand: first sample |D| = 80 → J = 80/16 = 5.
        let mut g = Feed::new();
        g.packet(0, 0);
        g.packet(1, 0);
        g.packet(2, 10);
        assert_eq!(g.stats.jitter(), 5);
    }

    #[test]
    fn jitter_handles_timestamp_wrap_and_event_packets() {
        let mut stats = ReceiverStats::new(8000);
        let start = Instant::now();
        let base = u32::MAX - 400;
        for i in 0..10u32 {
            let at = start + Duration::from_millis(u64::from(i) * 20);
            stats.on_packet(SSRC, i as u16, base.wrapping_add(i * 160), at);
        }
        assert_eq!(stats.jitter(), 0, "timestamp wrap is not jitter");
        // Telephone-event packets keep their timestamp: excluded from jitter.
        for i in 10..20u32 {
            let at = start + Duration::from_millis(u64::from(i) * 20);
            stats.on_packet_without_timing(SSRC, i as u16, at);
        }
        assert_eq!(stats.jitter(), 0);
        assert_eq!(stats.received(), 20);
    }
}
