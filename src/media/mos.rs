//! MOS estimate by the E-model (ITU-T G.107), reduced to what varies on a G.711
//! call: R = R0 − Is − Id − Ie,eff + A, then R → MOS (G.107 Annex B).
//!
//! Owns only arithmetic: the inputs (loss ratio, burst ratio, jitter, delay) come
//! from `stats.rs` and RTCP. Simplifications, each a common and cited one:
//!
//! * R0 − Is with every G.107 default value (Table 3) and A = 0: the R of 93.2
//!   that G.107 gives for its defaults (R0 = 94.77, Is = 1.43, less the small Id of
//!   the default delays), taken here as the zero-delay base.
//! * Id from one-way mouth-to-ear delay d (ms) by the Cole–Rosenbluth fit of G.107
//!   with default values: Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3), H the step
//!   function (R. G. Cole, J. H. Rosenbluth, "Voice over IP performance
//!   monitoring", ACM SIGCOMM CCR 31(2), 2001). It is 0 at d = 0, hence 93.2 above.
//! * Effective delay from network delay and jitter, the approximation used by VoIP
//!   monitors: d = one-way delay + 2·jitter + 10 ms (a jitter buffer sized at twice
//!   the jitter, plus 10 ms of codec/processing time).
//! * Ie,eff = Ie + (95 − Ie)·Ppl / (Ppl/BurstR + Bpl) (G.107, Ppl in percent),
//!   G.711: Ie = 0, Bpl = 4.3 without packet-loss concealment, 25.1 with it
//!   (G.113 Appendix I).

use std::time::Duration;

/// R with all G.107 default values and no delay or loss impairment (R0 − Is − Id(0)).
pub const R_DEFAULT: f64 = 93.2;
/// G.711 equipment impairment factor Ie (G.113 Appendix I).
pub const G711_IE: f64 = 0.0;
/// G.711 packet-loss robustness factor Bpl without concealment (G.113 Appendix I).
pub const G711_BPL_NO_PLC: f64 = 4.3;
/// G.711 packet-loss robustness factor Bpl with G.711 Appendix I concealment.
pub const G711_BPL_PLC: f64 = 25.1;

/// What the E-model needs to know about one direction of a G.711 call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EModelInput {
    /// One-way network delay (RTCP round-trip time / 2 when known; zero otherwise).
    pub one_way_delay: Duration,
    /// Interarrival jitter (RFC 3550), e.g. the mean of the estimate over the call.
    pub jitter: Duration,
    /// Fraction of packets lost, 0.0–1.0.
    pub packet_loss_ratio: f64,
    /// G.107 BurstR: 1.0 for random loss, above 1 for bursty loss.
    pub burst_ratio: f64,
    /// Whether the receiver conceals lost packets (selects Bpl 25.1 over 4.3).
    pub plc: bool,
}

/// Effective one-way delay in ms: delay + 2·jitter + 10 ms (see module docs).
pub fn effective_delay_ms(one_way_delay: Duration, jitter: Duration) -> f64 {
    one_way_delay.as_secs_f64() * 1000.0 + 2.0 * jitter.as_secs_f64() * 1000.0 + 10.0
}

/// Delay impairment Id for a one-way delay of `delay_ms` (Cole–Rosenbluth fit of G.107).
pub fn delay_impairment(delay_ms: f64) -> f64 {
    let d = delay_ms.max(0.0);
    let mut id = 0.024 * d;
    if d > 177.3 {
        id += 0.11 * (d - 177.3);
    }
    id
}

/// Effective equipment impairment Ie,eff (G.107) for a codec with impairment
/// `ie` and robustness `bpl`, at `loss_percent` (Ppl, 0–100) and `burst_ratio`
/// (BurstR; values below 1 are taken as 1).
pub fn effective_equipment_impairment(ie: f64, bpl: f64, loss_percent: f64, burst_ratio: f64) -> f64 {
    let ppl = loss_percent.clamp(0.0, 100.0);
    let burst_r = burst_ratio.max(1.0);
    ie + (95.0 - ie) * ppl / (ppl / burst_r + bpl)
}

/// The rating factor R for a G.711 stream (module docs list the simplifications).
pub fn r_factor(input: &EModelInput) -> f64 {
    let id = delay_impairment(effective_delay_ms(input.one_way_delay, input.jitter));
    let bpl = if input.plc { G711_BPL_PLC } else { G711_BPL_NO_PLC };
    let loss_percent = if input.packet_loss_ratio.is_finite() { input.packet_loss_ratio * 100.0 } else { 0.0 };
    let burst_ratio = if input.burst_ratio.is_finite() { input.burst_ratio } else { 1.0 };
    let ie_eff = effective_equipment_impairment(G711_IE, bpl, loss_percent, burst_ratio);
    R_DEFAULT - id - ie_eff
}

/// R → MOS (conversational quality, G.107 Annex B), clamped to
/// 1.0–4.5: 1 for R < 0, 1 + 0.035R + R(R − 60)(100 − R)·7·10⁻⁶ for 0 ≤ R ≤ 100,
/// 4.5 above.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    let mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6;
    mos.clamp(1.0, 4.5)
}

/// MOS estimate for a G.711 stream: [`mos_from_r`] of [`r_factor`].
pub fn estimate_mos(input: &EModelInput) -> f64 {
    mos_from_r(r_factor(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(loss: f64, burst: f64, plc: bool, delay_ms: u64, jitter_ms: u64) -> EModelInput {
        EModelInput {
            one_way_delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            packet_loss_ratio: loss,
            burst_ratio: burst,
            plc,
        }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn r_to_mos_known_points() {
        assert!(close(mos_from_r(93.2), 4.41, 0.005), "{}", mos_from_r(93.2));
        assert!(close(mos_from_r(80.0), 4.02, 0.005), "{}", mos_from_r(80.0));
        assert!(close(mos_from_r(50.0), 2.575, 1e-9), "{}", mos_from_r(50.0));
        assert_eq!(mos_from_r(-3.0), 1.0);
        assert_eq!(mos_from_r(3.0), 1.0, "the cubic dips below 1 near R = 0: clamped");
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(130.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        let mut previous = 1.0;
        for r in 0..=100 {
            let m = mos_from_r(f64::from(r));
            assert!(m >= previous, "monotonic at R={r}");
            previous = m;
        }
    }

    #[test]
    fn delay_impairment_cole_rosenbluth() {
        assert_eq!(delay_impairment(0.0), 0.0);
        assert!(close(delay_impairment(100.0), 2.4, 1e-9));
        assert!(close(delay_impairment(177.3), 4.2552, 1e-9));
        assert!(close(delay_impairment(300.0), 7.2 + 0.11 * 122.7, 1e-9));
        assert!(close(effective_delay_ms(Duration::from_millis(40), Duration::from_millis(5)), 60.0, 1e-9));
    }

    #[test]
    fn equipment_impairment_g113_values() {
        assert_eq!(effective_equipment_impairment(0.0, G711_BPL_NO_PLC, 0.0, 1.0), 0.0);
        // 1 % random loss with PLC: 95·1/(1 + 25.1) = 3.64
        assert!(close(effective_equipment_impairment(0.0, G711_BPL_PLC, 1.0, 1.0), 3.6398, 1e-4));
        // 5 % random loss without PLC: 95·5/(5 + 4.3) = 51.08
        assert!(close(effective_equipment_impairment(0.0, G711_BPL_NO_PLC, 5.0, 1.0), 51.0753, 1e-4));
        // Bursty loss hurts more than random loss at the same ratio.
        let random = effective_equipment_impairment(0.0, G711_BPL_PLC, 5.0, 1.0);
        let bursty = effective_equipment_impairment(0.0, G711_BPL_PLC, 5.0, 2.0);
        assert!(bursty > random);
        assert_eq!(effective_equipment_impairment(0.0, G711_BPL_PLC, 5.0, 0.5), random, "BurstR < 1 taken as 1");
    }

    #[test]
    fn clean_call_is_about_4_4() {
        let mos = estimate_mos(&input(0.0, 1.0, false, 0, 0));
        // R = 93.2 − Id(10 ms) = 92.96
        assert!(close(r_factor(&input(0.0, 1.0, false, 0, 0)), 92.96, 1e-9));
        assert!(close(mos, 4.40, 0.01), "{mos}");
    }

    #[test]
    fn loss_delay_and_jitter_lower_the_score_in_the_expected_order() {
        let clean = estimate_mos(&input(0.0, 1.0, false, 20, 2));
        let loss5_plc = estimate_mos(&input(0.05, 1.0, true, 20, 2));
        let loss5 = estimate_mos(&input(0.05, 1.0, false, 20, 2));
        let loss5_bursty = estimate_mos(&input(0.05, 3.0, false, 20, 2));
        assert!(close(loss5_plc, 3.889, 0.001), "{loss5_plc}");
        assert!(close(loss5, 2.129, 0.001), "{loss5}");
        assert!(clean > loss5_plc && loss5_plc > loss5 && loss5 > loss5_bursty);
        let long_delay = estimate_mos(&input(0.0, 1.0, false, 300, 2));
        let jittery = estimate_mos(&input(0.0, 1.0, false, 20, 60));
        assert!(long_delay < clean && jittery < clean);
        assert!(close(long_delay, 3.626, 0.001), "{long_delay}");
        let total_loss = estimate_mos(&input(1.0, 1.0, false, 0, 0));
        assert_eq!(total_loss, 1.0);
        let garbage = estimate_mos(&input(f64::NAN, f64::INFINITY, false, 0, 0));
        assert!(close(garbage, 4.40, 0.01), "non-finite inputs treated as no loss: {garbage}");
    }
}
