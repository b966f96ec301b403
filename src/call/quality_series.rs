//! A call leg's jitter and loss over time (issue 24): the bounded series of
//! points the console plots per call and the call record keeps
//! (`calls.quality_samples`, `GET /v2/call_records`). Sans-IO: fed the leg's
//! cumulative receiver figures ([`QualitySample`]: one per RTCP report, about
//! every 5 s, the first 2.5 s after the media started, and a last one when the
//! media stops), it keeps per-interval points. No clock, no I/O; the shell
//! (`call::shell`) feeds it and puts [`QualitySeries::to_json`] beside the leg's
//! `call.hangup` (`RecordExtras`, never in the webhook).
//!
//! Bounded: at most [`MAX_POINTS`] points. When the series is full, neighbours
//! are merged pairwise (it halves) and from then on each new point spans twice
//! as many samples, so points stay evenly spaced and a 3-hour call (2160
//! samples) fits in 135 points. A merged point keeps the worse jitter of the two
//! and the exact loss of both (their lost and expected packets are added).
//!
//! JSON, as stored and served:
//!
//! ```json
//! {"interval": "rtcp",
//!  "points": [{"t_ms": 2500, "jitter_ms": 1.2, "loss_percent": 0.0, "packets": 125}, ...]}
//! ```
//!
//! `t_ms`: end of the point's interval, in ms since the leg's media started;
//! `jitter_ms`: the interarrival jitter (RFC 3550 §6.4.1) at the end of the
//! interval (the worst of the merged ones), 0.1 ms steps; `loss_percent`: packets
//! lost in the interval / packets expected in it (RFC 3550 A.3), 0–100, two
//! decimals, 0 when none were expected; `packets`: RTP packets received in the
//! interval. All of them are about what the box received from the leg's peer.

use std::time::Instant;

use serde_json::{Value, json};

use crate::media::leg::QualitySample;

/// Most points a series keeps (see the module docs for what happens beyond).
pub const MAX_POINTS: usize = 240;

/// One interval of the series. Counts are saturated at `u32::MAX` (a leg would
/// need 2^32 packets in one point, years of audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// End of the interval, ms since the leg's media started.
    pub t_ms: u32,
    /// Interarrival jitter at the end of the interval (the worse of merged
    /// points), in µs.
    pub jitter_us: u32,
    /// Packets expected in the interval (RFC 3550 A.3).
    pub expected: u32,
    /// Packets lost in the interval: expected − received, 0 when duplicates
    /// outnumber losses.
    pub lost: u32,
    /// Packets received in the interval.
    pub packets: u32,
}

impl Point {
    /// Loss in the interval, 0.0–100.0 % (0 when nothing was expected).
    pub fn loss_percent(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { (100.0 * f64::from(self.lost) / f64::from(self.expected)).min(100.0) }
    }

    /// This point and the `later` one as one interval ending where `later` ends.
    fn merge(self, later: Point) -> Point {
        Point {
            t_ms: later.t_ms,
            jitter_us: self.jitter_us.max(later.jitter_us),
            expected: self.expected.saturating_add(later.expected),
            lost: self.lost.saturating_add(later.lost),
            packets: self.packets.saturating_add(later.packets),
        }
    }

    fn json(&self) -> Value {
        json!({
            "t_ms": self.t_ms,
            "jitter_ms": (f64::from(self.jitter_us) / 100.0).round() / 10.0,
            "loss_percent": (self.loss_percent() * 100.0).round() / 100.0,
            "packets": self.packets,
        })
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One leg's series (see the module docs).
#[derive(Debug, Clone)]
pub struct QualitySeries {
    /// When the leg's media started: `t_ms` counts from here.
    origin: Instant,
    /// The previous sample's time and cumulative (received, expected).
    last: Option<(Instant, u64, u64)>,
    points: Vec<Point>,
    /// The point being filled while a point spans several samples.
    pending: Option<Point>,
    pending_samples: u32,
    /// Samples per point: 1, doubled at each halving.
    stride: u32,
}

impl QualitySeries {
    /// An empty series for a leg whose media started at `origin`.
    pub fn new(origin: Instant) -> Self {
        Self { origin, last: None, points: Vec::new(), pending: None, pending_samples: 0, stride: 1 }
    }

    /// Takes the next cumulative sample: the interval since the previous one
    /// (since the media started, for the first) becomes a point. A sample not
    /// later than the previous one is ignored (the last sample at the stop can
    /// fall on a report's instant).
    pub fn push(&mut self, s: QualitySample) {
        let (prev_at, prev_received, prev_expected) = self.last.unwrap_or((self.origin, 0, 0));
        if self.last.is_some() && s.at <= prev_at {
            return;
        }
        self.last = Some((s.at, s.received, s.expected));
        let expected = s.expected.saturating_sub(prev_expected);
        let received = s.received.saturating_sub(prev_received);
        let point = Point {
            t_ms: saturate(s.at.saturating_duration_since(self.origin).as_millis() as u64),
            jitter_us: saturate(s.jitter.as_micros() as u64),
            expected: saturate(expected),
            lost: saturate(expected.saturating_sub(received)),
            packets: saturate(received),
        };
        let point = match self.pending.take() {
            Some(p) => p.merge(point),
            None => point,
        };
        self.pending_samples += 1;
        if self.pending_samples < self.stride {
            self.pending = Some(point);
            return;
        }
        self.pending_samples = 0;
        self.points.push(point);
        if self.points.len() >= MAX_POINTS {
            self.halve();
        }
    }

    /// Merges neighbouring points in place; later points span twice as many
    /// samples.
    fn halve(&mut self) {
        let n = self.points.len();
        for i in 0..n.div_ceil(2) {
            let first = self.points[2 * i];
            self.points[i] = match self.points.get(2 * i + 1) {
                Some(second) => first.merge(*second),
                None => first,
            };
        }
        self.points.truncate(n.div_ceil(2));
        self.stride = self.stride.saturating_mul(2);
    }

    /// The points, oldest first, with the one being filled (a partial interval)
    /// last.
    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().chain(self.pending).collect()
    }

    /// RTCP samples per full point: 1, doubled at each halving.
    pub fn samples_per_point(&self) -> u32 {
        self.stride
    }

    /// The series as stored in the call record (module docs), `None` when it has
    /// no point (no media ran).
    pub fn to_json(&self) -> Option<Value> {
        let points = self.points();
        if points.is_empty() {
            return None;
        }
        Some(json!({"interval": "rtcp", "points": points.iter().map(Point::json).collect::<Vec<_>>()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Points kept after `samples` reports 5 s apart.
    fn points_for(samples: u32) -> usize {
        let origin = Instant::now();
        let mut s = QualitySeries::new(origin);
        for i in 1..=samples {
            s.push(sample(origin, u64::from(i) * 5000, u64::from(i) * 250, u64::from(i) * 250, 0));
        }
        s.points().len()
    }

    fn sample(origin: Instant, ms: u64, received: u64, expected: u64, jitter_us: u64) -> QualitySample {
        QualitySample {
            at: origin + Duration::from_millis(ms),
            received,
            expected,
            jitter: Duration::from_micros(jitter_us),
            sent: 0,
        }
    }

    /// Cumulative samples become per-interval points: loss is Δlost/Δexpected of
    /// each interval, not of the call so far.
    #[test]
    fn samples_become_intervals() {
        let o = Instant::now();
        let mut s = QualitySeries::new(o);
        assert_eq!(s.to_json(), None, "no media, no series");
        s.push(sample(o, 2500, 125, 125, 400));
        s.push(sample(o, 7500, 350, 375, 12_345)); // 25 lost of 250
        s.push(sample(o, 12_500, 600, 625, 2_000)); // none lost
        s.push(sample(o, 12_500, 600, 625, 2_000)); // the stop's sample on the same instant
        s.push(sample(o, 13_100, 630, 655, 2_000)); // the stop, 600 ms later
        let p = s.points();
        assert_eq!(p.len(), 4);
        assert_eq!(p[1], Point { t_ms: 7500, jitter_us: 12_345, expected: 250, lost: 25, packets: 225 });
        assert_eq!((p[1].loss_percent(), p[2].loss_percent()), (10.0, 0.0));
        assert_eq!(p[3].t_ms, 13_100);
        assert_eq!(
            s.to_json().unwrap(),
            json!({"interval": "rtcp", "points": [
                {"t_ms": 2500, "jitter_ms": 0.4, "loss_percent": 0.0, "packets": 125},
                {"t_ms": 7500, "jitter_ms": 12.3, "loss_percent": 10.0, "packets": 225},
                {"t_ms": 12500, "jitter_ms": 2.0, "loss_percent": 0.0, "packets": 250},
                {"t_ms": 13100, "jitter_ms": 2.0, "loss_percent": 0.0, "packets": 30},
            ]})
        );
    }

    /// Duplicates outnumbering losses (received > expected in an interval) are
    /// no negative loss; counters that go back (a new SSRC in probation) give an
    /// empty interval, not a wrap-around.
    #[test]
    fn odd_counters_never_make_negative_loss() {
        let o = Instant::now();
        let mut s = QualitySeries::new(o);
        s.push(sample(o, 2500, 130, 125, 0));
        s.push(sample(o, 7500, 100, 100, 0));
        let p = s.points();
        assert_eq!((p[0].lost, p[0].packets, p[0].loss_percent()), (0, 130, 0.0));
        assert_eq!((p[1].expected, p[1].lost, p[1].packets), (0, 0, 0));
        // Nothing expected in an interval (hold): 0 %, not NaN.
        assert_eq!(p[1].json()["loss_percent"], json!(0.0));
    }

    /// Full series halve: neighbours merge (worse jitter, summed loss), later
    /// points span as many samples, so spacing stays even and the count bounded.
    #[test]
    fn a_full_series_halves_and_keeps_even_spacing() {
        let o = Instant::now();
        let mut s = QualitySeries::new(o);
        let mut received = 0;
        for i in 1..=MAX_POINTS as u64 {
            // One lost packet in every odd interval; jitter i µs.
            received += if i % 2 == 1 { 249 } else { 250 };
            s.push(sample(o, i * 5000, received, i * 250, i));
        }
        let p = s.points();
        assert_eq!((p.len(), s.samples_per_point()), (MAX_POINTS / 2, 2));
        assert_eq!(p[0], Point { t_ms: 10_000, jitter_us: 2, expected: 500, lost: 1, packets: 499 });
        assert_eq!(p[0].loss_percent(), 0.2);
        // The next two samples make one point (one pending in between).
        received += 250;
        s.push(sample(o, 241 * 5000, received, 241 * 250, 7));
        assert_eq!(s.points().len(), MAX_POINTS / 2 + 1, "a partial point shows");
        assert_eq!(s.points().last().unwrap().t_ms, 241 * 5000);
        received += 250;
        s.push(sample(o, 242 * 5000, received, 242 * 250, 3));
        let p = s.points();
        assert_eq!(p.len(), MAX_POINTS / 2 + 1);
        assert_eq!(*p.last().unwrap(), Point { t_ms: 242 * 5000, jitter_us: 7, expected: 500, lost: 0, packets: 500 });
        let steps: Vec<u32> = p.windows(2).map(|w| w[1].t_ms - w[0].t_ms).collect();
        assert!(steps.iter().all(|d| *d == 10_000), "even spacing: {steps:?}");
        // Three hours of 5 s reports.
        assert_eq!(points_for(2160), 135);
        assert!(points_for(100_000) <= MAX_POINTS);
    }
}
