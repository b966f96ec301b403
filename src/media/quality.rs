//! The Telnyx `call_quality_stats` object for one direction of a call leg
//! (`inbound` / `outbound` in `call.hangup`, PROTOCOLS.md §2), computed from the
//! RFC 3550 receiver statistics of `stats.rs` and the MOS estimate of `mos.rs`.
//!
//! Telnyx fills these from its FreeSWITCH media servers; here each field has the
//! definition written on it, from standard RFC 3550 quantities.

use std::time::Duration;

use super::mos::{self, EModelInput};
use super::stats::ReceiverStats;

/// Telnyx `call_quality_stats.inbound` / `.outbound` for one direction, in our
/// definitions (Telnyx sends each as a string; see [`CallQualityStats::to_telnyx_json`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CallQualityStats {
    /// `packet_count`: RTP packets received in this direction, duplicates and late
    /// packets included, all SSRCs of the call.
    pub packet_count: u64,
    /// `skip_packet_count`: packets lost, expected − received (RFC 3550 §6.4.1)
    /// summed over sources, clamped at 0 (duplicates can make the RFC value negative).
    pub skip_packet_count: u64,
    /// `jitter_max_variance`: the largest value the RFC 3550 interarrival jitter
    /// estimate reached during the call, in milliseconds.
    pub jitter_max_variance: f64,
    /// `jitter_packet_count`: packets that updated the jitter estimate (every
    /// in-order audio packet after the one that validated its source; telephone-
    /// event packets and late, duplicate, probation or discarded packets do not).
    pub jitter_packet_count: u64,
    /// `mos`: E-model (ITU-T G.107) estimate, 1.0–4.5, from the call's loss ratio,
    /// burst ratio, mean jitter and the given one-way delay; see `mos.rs`.
    pub mos: f64,
}

impl CallQualityStats {
    /// The Telnyx webhook shape: every field a string, `mos` and
    /// `jitter_max_variance` with two decimals, e.g.
    /// `{"jitter_max_variance":"0.94","jitter_packet_count":"1499","mos":"4.39","packet_count":"1500","skip_packet_count":"0"}`.
    pub fn to_telnyx_json(&self) -> serde_json::Value {
        serde_json::json!({
            "jitter_max_variance": format!("{:.2}", self.jitter_max_variance),
            "jitter_packet_count": self.jitter_packet_count.to_string(),
            "mos": format!("{:.2}", self.mos),
            "packet_count": self.packet_count.to_string(),
            "skip_packet_count": self.skip_packet_count.to_string(),
        })
    }
}

impl ReceiverStats {
    /// The Telnyx `call_quality_stats` values for this direction. `one_way_delay`
    /// is the network delay estimate (RTCP round-trip / 2 when known, else zero);
    /// `plc` whether the receiving side conceals losses (G.113 Bpl 25.1 vs 4.3).
    pub fn call_quality_stats(&self, one_way_delay: Duration, plc: bool) -> CallQualityStats {
        let mos = mos::estimate_mos(&EModelInput {
            one_way_delay,
            jitter: self.mean_jitter(),
            packet_loss_ratio: self.loss_ratio(),
            burst_ratio: self.burst_ratio(),
            plc,
        });
        CallQualityStats {
            packet_count: self.packets(),
            skip_packet_count: self.cumulative_lost().max(0) as u64,
            jitter_max_variance: self.max_jitter().as_secs_f64() * 1000.0,
            jitter_packet_count: self.jitter_samples(),
            mos,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn telnyx_json_shape() {
        let q = CallQualityStats {
            packet_count: 1500,
            skip_packet_count: 3,
            jitter_max_variance: 0.9375,
            jitter_packet_count: 1497,
            mos: 4.3929,
        };
        assert_eq!(
            q.to_telnyx_json(),
            serde_json::json!({"jitter_max_variance":"0.94","jitter_packet_count":"1497","mos":"4.39",
                               "packet_count":"1500","skip_packet_count":"3"})
        );
    }

    #[test]
    fn quality_of_a_stream_with_loss_and_jitter() {
        let mut stats = ReceiverStats::new(8000);
        let start = Instant::now();
        for seq in 0..500u16 {
            if seq % 50 == 25 {
                continue; // 2 % random loss
            }
            // Every other packet 4 ms late: |D| = 32 units, the jitter estimate tends to 4 ms.
            let late_ms = if seq % 2 == 1 { 4 } else { 0 };
            let arrival = start + Duration::from_millis(u64::from(seq) * 20 + late_ms);
            stats.on_packet(7, seq, u32::from(seq) * 160, arrival);
        }
        let q = stats.call_quality_stats(Duration::from_millis(20), true);
        assert_eq!((q.packet_count, q.skip_packet_count), (490, 10));
        assert_eq!(q.jitter_packet_count, stats.jitter_samples());
        assert!(q.jitter_packet_count > 400 && q.jitter_packet_count < 490);
        assert!((q.jitter_max_variance - 4.0).abs() < 0.2, "{}", q.jitter_max_variance);
        // E-model: Ppl 2 %, BurstR 1, PLC → Ie,eff = 95·2/(2 + 25.1) = 7.0; delay
        // 20 + 2·(mean jitter ≈ 3.8) + 10 ms → Id ≈ 0.9; R ≈ 85.3 → MOS ≈ 4.21.
        assert!((q.mos - 4.21).abs() < 0.02, "{}", q.mos);
        let no_plc = stats.call_quality_stats(Duration::from_millis(20), false);
        assert!(no_plc.mos < q.mos - 0.5, "{}", no_plc.mos);
    }
}
