//! Sans-IO alignment of a recording's two channels to the call's wall clock.
//!
//! A [`Timeline`] is a per-recording sample clock that starts at an `Instant`
//! (answer or `record_start`) and runs at the recording's sample rate. Audio of
//! the caller's leg (`push_left`) and of the other side (`push_right`) is placed
//! at the sample position its arrival time implies; whatever never arrives (lost
//! packets, silence suppression, hold, a side that starts late) reads back as
//! silence. [`Timeline::poll_frames`] hands out interleaved frames up to
//! `now − LATENCY`, so the file grows with the wall clock even when one or both
//! sides are silent, and after [`Timeline::stop`] the total number of frames is
//! exactly the recorded span.
//!
//! Placement rules (per channel, each keeps a write cursor):
//! - a packet of `n` samples arriving at `at` is expected to start at
//!   `position(at) − n` (its last sample has just been received);
//! - a channel's first packet goes exactly where it belongs: it anchors the
//!   channel to the wall clock (pulling it back to the start of the recording
//!   would put the whole channel up to [`JITTER_TOLERANCE`] early against the
//!   other one); the part of it from before the recording started is cut;
//! - later, if the expected place is no more than [`JITTER_TOLERANCE`] past the
//!   cursor, the packet is written at the cursor (arrival jitter does not punch
//!   holes into the audio); otherwise silence fills the gap and the packet goes
//!   where it belongs;
//! - a channel never runs more than [`MAX_AHEAD`] past the wall clock (a sender
//!   whose clock is fast, or a burst after a stall): the excess is dropped.
//!
//! Hence each channel stays within `[−JITTER_TOLERANCE, +MAX_AHEAD]` of the wall
//! clock for the whole call, and left and right can never drift apart by more
//! than the sum, however long the call.
//!
//! Memory: two ring buffers of one second each, allocated in [`Timeline::new`];
//! nothing is allocated per packet. The caller must poll at least every
//! `RING − LATENCY − MAX_AHEAD` (0.74 s); audio that does not fit is dropped and
//! counted in [`TimelineStats::dropped_samples`].
//!
//! Pause ([`Timeline::pause`] / [`Timeline::resume`], Telnyx `record_pause` /
//! `record_resume`): while paused, pushes are dropped and frames are handed out
//! only up to the pause; on resume the clock's origin moves forward by the paused
//! time, so the paused span is left out of the file (no silence for it) and the
//! audio after it follows at once.
//!
//! This module does no I/O and reads no clock: the caller passes every `Instant`.

use std::time::{Duration, Instant};

use crate::config::Channels;

/// Arrival lateness absorbed without inserting silence (≈ three 20 ms packets).
pub const JITTER_TOLERANCE: Duration = Duration::from_millis(60);

/// How far a channel may run ahead of the wall clock before audio is dropped.
pub const MAX_AHEAD: Duration = Duration::from_millis(60);

/// Frames are handed out only up to `now − LATENCY`, so audio arriving up to
/// [`JITTER_TOLERANCE`] late still lands before its frames are written.
pub const LATENCY: Duration = Duration::from_millis(100);

/// Ring buffer length per channel (the most audio held in memory).
pub const RING: Duration = Duration::from_secs(1);

/// Counters of what the timeline had to repair, for logs and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TimelineStats {
    /// Silence inserted into the left channel because audio arrived late or not at all, in samples.
    pub left_gap_samples: u64,
    /// Silence inserted into the right channel, in samples.
    pub right_gap_samples: u64,
    /// Samples dropped: ahead of the wall clock, beyond the ring, or after `stop`.
    pub dropped_samples: u64,
}

/// One channel: a ring of PCM16 samples indexed by absolute sample position.
#[derive(Debug)]
struct Track {
    ring: Box<[i16]>,
    /// Absolute sample position of the next sample to write.
    cursor: u64,
    gap_samples: u64,
    /// Set by the first packet, which anchors the channel at its arrival time.
    anchored: bool,
}

impl Track {
    fn new(cap: usize) -> Self {
        Self { ring: vec![0; cap].into_boxed_slice(), cursor: 0, gap_samples: 0, anchored: false }
    }

    /// Copies `pcm` into the ring at absolute position `pos` (wrapping).
    fn write_at(&mut self, pos: u64, pcm: &[i16]) {
        let cap = self.ring.len();
        let idx = (pos % cap as u64) as usize;
        let first = pcm.len().min(cap - idx);
        self.ring[idx..idx + first].copy_from_slice(&pcm[..first]);
        let rest = pcm.len() - first;
        self.ring[..rest].copy_from_slice(&pcm[first..]);
    }
}

/// Per-recording alignment clock: see the module documentation.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    sample_rate_hz: u32,
    channels: Channels,
    /// Ring capacity in samples per channel.
    cap: u64,
    /// Absolute position of the next frame to hand out.
    emitted: u64,
    /// Set by `stop`: the last position (exclusive) the recording covers.
    end: Option<u64>,
    /// Set by `pause`: when, and the position frames are handed out up to.
    paused: Option<(Instant, u64)>,
    /// Set by `set_limit`: frames are never handed out beyond it (`max_length`).
    limit: Option<u64>,
    tolerance: u64,
    latency: u64,
    max_ahead: u64,
    left: Track,
    right: Track,
    dropped_samples: u64,
}

/// `d` in samples at `rate_hz`, rounded down.
fn samples(d: Duration, rate_hz: u32) -> u64 {
    (d.as_nanos() * u128::from(rate_hz) / 1_000_000_000) as u64
}

impl Timeline {
    /// A timeline whose sample 0 is at `start`, running at `sample_rate_hz`
    /// (8000, or 16000 for an L16/16000 agent stream). `channels`: `Dual` hands out
    /// stereo frames (L = caller's leg, R = other side), `Single` a saturating mono mix.
    /// Allocates the two one-second rings; nothing is allocated afterwards.
    pub fn new(start: Instant, sample_rate_hz: u32, channels: Channels) -> Self {
        let rate = sample_rate_hz.max(1);
        let cap = samples(RING, rate).max(1);
        Self {
            start,
            sample_rate_hz: rate,
            channels,
            cap,
            emitted: 0,
            end: None,
            paused: None,
            limit: None,
            tolerance: samples(JITTER_TOLERANCE, rate),
            latency: samples(LATENCY, rate),
            max_ahead: samples(MAX_AHEAD, rate),
            left: Track::new(cap as usize),
            right: Track::new(cap as usize),
            dropped_samples: 0,
        }
    }

    /// Sample rate of the output, in Hz.
    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// Samples per output frame: 2 for `Dual`, 1 for `Single`.
    pub fn channel_count(&self) -> u16 {
        match self.channels {
            Channels::Dual => 2,
            Channels::Single => 1,
        }
    }

    /// The `Instant` of sample 0.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Sample position (frames since `start`) of the wall-clock time `at`;
    /// 0 for times before `start`.
    pub fn position(&self, at: Instant) -> u64 {
        samples(at.saturating_duration_since(self.start), self.sample_rate_hz)
    }

    /// Frames handed out so far.
    pub fn frames_emitted(&self) -> u64 {
        self.emitted
    }

    /// Duration of the frames handed out so far.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos((u128::from(self.emitted) * 1_000_000_000 / u128::from(self.sample_rate_hz)) as u64)
    }

    /// Gap and drop counters.
    pub fn stats(&self) -> TimelineStats {
        TimelineStats {
            left_gap_samples: self.left.gap_samples,
            right_gap_samples: self.right.gap_samples,
            dropped_samples: self.dropped_samples,
        }
    }

    /// Audio received from the caller's leg: `pcm` is PCM16 mono, native endian,
    /// at the timeline's sample rate, whose last sample arrived at `at`.
    pub fn push_left(&mut self, pcm: &[i16], at: Instant) {
        self.push(true, pcm, at);
    }

    /// Audio sent to the caller (the other side): same shape as [`Self::push_left`].
    pub fn push_right(&mut self, pcm: &[i16], at: Instant) {
        self.push(false, pcm, at);
    }

    fn push(&mut self, left: bool, pcm: &[i16], at: Instant) {
        let len = pcm.len() as u64;
        if self.end.is_some() || self.paused.is_some() {
            self.dropped_samples += len;
            return;
        }
        let now_pos = self.position(at);
        let expected = now_pos.saturating_sub(len);
        let emitted = self.emitted;
        let horizon = (now_pos + self.max_ahead).min(emitted + self.cap);
        let tolerance = self.tolerance;
        let track = if left { &mut self.left } else { &mut self.right };
        let mut start = track.cursor.max(emitted);
        // Leading samples of the anchoring packet that belong before `start`.
        let mut skip = 0;
        if !track.anchored {
            track.anchored = true;
            let first = now_pos as i128 - i128::from(len);
            if first >= i128::from(start) {
                start = first as u64;
            } else {
                skip = (i128::from(start) - first).min(i128::from(len)) as u64;
            }
        } else if expected > start + tolerance {
            start = expected;
        }
        track.gap_samples += start - track.cursor;
        let take = horizon.saturating_sub(start).min(len - skip);
        track.write_at(start, &pcm[skip as usize..(skip + take) as usize]);
        track.cursor = start + take;
        self.dropped_samples += len - take;
    }

    /// Ends the recording at `end`: pushes after this are dropped, and
    /// [`Self::poll_frames`] hands out frames up to exactly `position(end)` (without
    /// the [`LATENCY`] lag), so the total is the recorded span. An `end` before
    /// frames already handed out ends at those.
    pub fn stop(&mut self, end: Instant) {
        if self.end.is_none() {
            let at = match self.paused {
                Some((_, pos)) => pos,
                None => self.position(end),
            };
            self.end = Some(at.max(self.emitted));
        }
    }

    /// Pauses at `at`: pushes are dropped until [`Self::resume`], and frames are
    /// handed out up to `position(at)` (without the [`LATENCY`] lag). No effect
    /// while paused or after `stop`.
    pub fn pause(&mut self, at: Instant) {
        if self.paused.is_none() && self.end.is_none() {
            self.paused = Some((at, self.position(at).max(self.emitted)));
        }
    }

    /// Resumes at `at`: the origin moves forward by the paused time, so
    /// `position(at)` is the pause's position and the next audio follows the
    /// audio before the pause. No effect unless paused.
    pub fn resume(&mut self, at: Instant) {
        if let Some((since, _)) = self.paused.take() {
            self.start += at.saturating_duration_since(since);
        }
    }

    /// True between `pause` and `resume`.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Never hands out more than `d` of audio in total (Telnyx `max_length`):
    /// however late the caller polls, the recording ends at exactly `d`.
    pub fn set_limit(&mut self, d: Duration) {
        self.limit = Some(samples(d, self.sample_rate_hz));
    }

    /// True once `stop` was called and every frame up to the end was handed out.
    pub fn is_drained(&self) -> bool {
        self.end.is_some_and(|e| self.emitted >= e)
    }

    /// Frames that `poll_frames(now, ..)` calls would still hand out in total.
    pub fn pending_frames(&self, now: Instant) -> u64 {
        self.target(now).saturating_sub(self.emitted)
    }

    fn target(&self, now: Instant) -> u64 {
        let t = match (self.end, self.paused) {
            (Some(end), _) => end,
            (None, Some((_, pos))) => pos,
            (None, None) => self.position(now).saturating_sub(self.latency),
        };
        self.limit.map_or(t, |l| t.min(l))
    }

    /// Appends to `out` the frames from the last one handed out up to
    /// `now − LATENCY` (up to the end after `stop`), at most one ring (one second)
    /// per call; returns the number of frames. Frames are interleaved PCM16
    /// `[L, R, L, R, ..]` for `Dual`, mixed `[M, M, ..]` for `Single`. A channel
    /// with nothing for a frame contributes silence. Call again while it returns
    /// the one-second maximum ([`Self::pending_frames`] says how many remain).
    pub fn poll_frames(&mut self, now: Instant, out: &mut Vec<i16>) -> usize {
        let n = self.pending_frames(now).min(self.cap) as usize;
        if n == 0 {
            return 0;
        }
        out.reserve(n * usize::from(self.channel_count()));
        let cap = self.cap as usize;
        let mut idx = (self.emitted % self.cap) as usize;
        let mut left_to_do = n;
        while left_to_do > 0 {
            let run = left_to_do.min(cap - idx);
            let l = &mut self.left.ring[idx..idx + run];
            let r = &mut self.right.ring[idx..idx + run];
            match self.channels {
                Channels::Dual => out.extend(l.iter().zip(r.iter()).flat_map(|(&a, &b)| [a, b])),
                Channels::Single => out.extend(l.iter().zip(r.iter()).map(|(&a, &b)| a.saturating_add(b))),
            }
            l.fill(0);
            r.fill(0);
            left_to_do -= run;
            idx = 0;
        }
        self.emitted += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;
    const PKT: usize = 160; // 20 ms at 8 kHz
    const MS: u64 = 8; // samples per ms at 8 kHz

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Packet `k` of a side: every sample carries `k + 1` (left) or `-(k + 1)` (right),
    /// so each output frame says which packet it came from.
    fn packet(k: u64, left: bool) -> [i16; PKT] {
        let v = (k % 30_000 + 1) as i16;
        [if left { v } else { -v }; PKT]
    }

    /// Drains everything after `stop(end)` and returns all frames of the recording.
    fn finish(t: &mut Timeline, end: Instant, out: &mut Vec<i16>) {
        t.stop(end);
        for _ in 0..10_000 {
            if t.poll_frames(end, out) == 0 {
                break;
            }
        }
        assert!(t.is_drained());
    }

    fn split(out: &[i16]) -> (Vec<i16>, Vec<i16>) {
        (out.iter().step_by(2).copied().collect(), out.iter().skip(1).step_by(2).copied().collect())
    }

    #[test]
    fn steady_call_is_exact_and_aligned() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..3000u64 {
            let at = t0 + ms(20 * (k + 1));
            t.push_left(&packet(k, true), at);
            t.push_right(&packet(k, false), at);
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(60_000), &mut out);
        assert_eq!(out.len(), 60 * 8000 * 2);
        assert_eq!(t.duration(), Duration::from_secs(60));
        let (l, r) = split(&out);
        for (f, (a, b)) in l.iter().zip(&r).enumerate() {
            let k = (f / PKT) as i16 + 1;
            assert_eq!((*a, *b), (k, -k), "frame {f}");
        }
        assert_eq!(t.stats(), TimelineStats::default());
    }

    #[test]
    fn burst_loss_becomes_silence_at_the_right_place() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..250u64 {
            let at = t0 + ms(20 * (k + 1));
            if !(100..105).contains(&k) {
                t.push_left(&packet(k, true), at);
            }
            t.push_right(&packet(k, false), at);
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(5000), &mut out);
        let (l, r) = split(&out);
        assert_eq!(l.len(), 40_000);
        // 100 ms lost: exactly packets 100..105 are silent; 105 is back in place.
        assert!(l[100 * PKT..105 * PKT].iter().all(|&s| s == 0));
        assert_eq!(l[105 * PKT], 106);
        assert_eq!(l[99 * PKT + PKT - 1], 100);
        assert_eq!(r[105 * PKT], -106);
        assert_eq!(t.stats().left_gap_samples, 5 * PKT as u64);
    }

    #[test]
    fn single_losses_shift_at_most_the_tolerance_and_keep_the_duration() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..1500u64 {
            let at = t0 + ms(20 * (k + 1));
            if k % 7 != 3 {
                t.push_left(&packet(k, true), at);
            }
            t.push_right(&packet(k, false), at);
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(30_000), &mut out);
        let (l, r) = split(&out);
        assert_eq!(l.len(), 30 * 8000);
        // Every left sample of packet k sits within 60 ms before its true place.
        for (f, &s) in l.iter().enumerate() {
            if s != 0 {
                let true_start = (s as u64 - 1) * PKT as u64;
                let f = f as u64;
                assert!(f + 60 * MS >= true_start && f < true_start + PKT as u64, "frame {f} packet {s}");
            }
        }
        // The right side is untouched.
        assert!(r.iter().enumerate().all(|(f, &s)| s == -((f / PKT) as i16 + 1)));
    }

    #[test]
    fn five_second_hold_is_five_seconds_of_silence() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        // 2 s of audio, 5 s of hold (nothing on either side, polled every 20 ms), 2 s of audio.
        for k in 0..450u64 {
            let at = t0 + ms(20 * (k + 1));
            if !(100..350).contains(&k) {
                t.push_left(&packet(k, true), at);
                t.push_right(&packet(k, false), at);
            }
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(9000), &mut out);
        let (l, r) = split(&out);
        assert_eq!(l.len(), 9 * 8000);
        assert!(l[2 * 8000..7 * 8000].iter().all(|&s| s == 0));
        assert!(r[2 * 8000..7 * 8000].iter().all(|&s| s == 0));
        assert_eq!((l[7 * 8000], r[7 * 8000]), (351, -351));
        assert_eq!((l[2 * 8000 - 1], r[2 * 8000 - 1]), (100, -100));
    }

    #[test]
    fn hold_without_polls_is_handed_out_in_one_second_chunks() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        t.push_left(&packet(0, true), t0 + ms(20));
        // Nothing for 5 s, not even polls: the next packet's caller polls first.
        let at = t0 + ms(5020);
        let mut calls = 0;
        for _ in 0..100 {
            if t.poll_frames(at, &mut out) == 0 {
                break;
            }
            calls += 1;
        }
        assert_eq!(calls, 5);
        t.push_left(&packet(250, true), at);
        finish(&mut t, at, &mut out);
        let (l, _) = split(&out);
        assert_eq!(l.len(), 5020 * MS as usize);
        assert_eq!(l[0], 1);
        assert_eq!(l[5000 * MS as usize], 251);
        assert!(l[PKT..5000 * MS as usize].iter().all(|&s| s == 0));
        assert_eq!(t.stats().dropped_samples, 0);
    }

    #[test]
    fn late_start_of_the_right_channel() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..250u64 {
            let at = t0 + ms(20 * (k + 1));
            t.push_left(&packet(k, true), at);
            if k >= 100 {
                t.push_right(&packet(k, false), at);
            }
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(5000), &mut out);
        let (l, r) = split(&out);
        assert!(r[..2 * 8000].iter().all(|&s| s == 0));
        for f in 2 * 8000..5 * 8000 {
            assert_eq!(l[f], -r[f], "frame {f}");
        }
        assert_eq!(t.stats().right_gap_samples, 2 * 8000);
    }

    #[test]
    fn the_first_packet_anchors_each_channel_at_its_arrival() {
        // The caller's first packet arrives 33 ms after the recording started
        // (within the jitter tolerance of sample 0), the echo of each packet
        // exactly 200 ms after it: the channels are 200 ms apart, to the sample.
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..200u64 {
            let at = t0 + ms(33 + 20 * k);
            t.push_left(&packet(k, true), at);
            t.push_right(&packet(k, false), at + ms(200));
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(4500), &mut out);
        let (l, r) = split(&out);
        let first_left = l.iter().position(|&s| s != 0).unwrap();
        let first_right = r.iter().position(|&s| s != 0).unwrap();
        assert_eq!(first_left, (33 - 20) * MS as usize);
        assert_eq!(first_right - first_left, 200 * MS as usize);
        for f in first_left..first_left + 199 * PKT {
            assert_eq!(l[f], -r[f + 200 * MS as usize], "frame {f}");
        }
        assert_eq!(t.stats().left_gap_samples, 13 * MS);

        // A first packet that began before the recording did (arriving 15 ms in):
        // its first 5 ms are cut, the rest is in place, and the next one follows.
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        let ramp: Vec<i16> = (1..=PKT as i16).collect();
        t.push_left(&ramp, t0 + ms(15));
        t.push_left(&packet(1, true), t0 + ms(35));
        finish(&mut t, t0 + ms(100), &mut out);
        let (l, _) = split(&out);
        assert_eq!(&l[..3], &[41, 42, 43]);
        assert_eq!(l[15 * MS as usize - 1], PKT as i16);
        assert!(l[15 * MS as usize..35 * MS as usize].iter().all(|&s| s == 2));
        assert_eq!(t.stats().dropped_samples, 5 * MS);
    }

    #[test]
    fn one_sided_call_still_advances() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..100u64 {
            let at = t0 + ms(20 * (k + 1));
            t.push_left(&packet(k, true), at);
            t.poll_frames(at, &mut out);
        }
        // Before stop, frames are handed out up to now − LATENCY.
        assert_eq!(t.frames_emitted(), (2000 - 100) * MS);
        finish(&mut t, t0 + ms(2000), &mut out);
        let (l, r) = split(&out);
        assert!(r.iter().all(|&s| s == 0));
        assert!(l.iter().enumerate().all(|(f, &s)| s == (f / PKT) as i16 + 1));
    }

    #[test]
    fn arrival_jitter_inserts_no_silence() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        // Deterministic jitter pattern up to 50 ms late; arrivals stay in order.
        let jitter = [0u64, 35, 50, 10, 45, 20, 50, 5, 30, 40];
        let mut last = t0;
        for k in 0..1000u64 {
            let at = (t0 + ms(20 * (k + 1) + jitter[(k % 10) as usize])).max(last);
            last = at;
            t.push_left(&packet(k, true), at);
            t.push_right(&packet(k, false), t0 + ms(20 * (k + 1)));
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(20_000), &mut out);
        let (l, _) = split(&out);
        assert_eq!(t.stats().left_gap_samples, 0);
        assert_eq!(t.stats().dropped_samples, 0);
        // All audio present, contiguous, in order, at its true place.
        assert!(l.iter().enumerate().all(|(f, &s)| s == (f / PKT) as i16 + 1));
    }

    #[test]
    fn fast_sender_is_trimmed_and_channels_never_drift() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        // Left sends 2% fast (a packet every 19.6 ms) for 60 s; right is exact.
        let mut k_left = 0u64;
        for tick in 0..3000u64 {
            let now = t0 + ms(20 * (tick + 1));
            for _ in 0..4 {
                let at = t0 + Duration::from_micros(19_600 * (k_left + 1));
                if at > now {
                    break;
                }
                t.push_left(&packet(k_left, true), at);
                k_left += 1;
            }
            t.push_right(&packet(tick, false), now);
            t.poll_frames(now, &mut out);
        }
        finish(&mut t, t0 + ms(60_000), &mut out);
        let (l, _) = split(&out);
        assert_eq!(l.len(), 60 * 8000);
        assert!(t.stats().dropped_samples > 0);
        // Each left sample sits no further than MAX_AHEAD + one packet from
        // where the wall clock puts it, at minute 1 as at second 1.
        for (f, &s) in l.iter().enumerate() {
            if s != 0 {
                let k = (s - 1) as u64;
                let arrival_pos = 19_600 * (k + 1) * 8 / 1000;
                let f = f as u64;
                assert!(f + (60 * MS + PKT as u64) >= arrival_pos, "frame {f} late");
                assert!(f <= arrival_pos + 60 * MS, "frame {f} ahead");
            }
        }
    }

    #[test]
    fn a_paused_span_is_left_out_and_the_audio_after_it_follows() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        let mut out = Vec::new();
        // 1 s of audio, paused for 3 s (audio keeps arriving: dropped), 1 s more.
        for k in 0..250u64 {
            let at = t0 + ms(20 * (k + 1));
            if k == 50 {
                t.pause(t0 + ms(1000));
                assert!(t.is_paused());
            }
            if k == 200 {
                t.resume(t0 + ms(4000));
            }
            t.push_left(&packet(k, true), at);
            t.push_right(&packet(k, false), at);
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(5000), &mut out);
        let (l, r) = split(&out);
        assert_eq!(l.len(), 2 * 8000, "the 3 paused seconds are not in the file");
        assert_eq!((l[8000 - 1], r[8000 - 1]), (50, -50));
        // Packet 200 (arriving 20 ms after the resume) follows packet 49 directly.
        assert!(l[8000..8000 + PKT].iter().all(|&s| s == 201), "{:?}", &l[8000..8010]);
        assert_eq!(l[8000 + PKT], 202);
        assert!(l.iter().all(|&s| !(52..=200).contains(&s)), "no paused audio in the file");
        assert_eq!(t.stats().dropped_samples, 150 * PKT as u64 * 2);
    }

    #[test]
    fn a_limit_caps_the_recording_however_late_it_is_polled() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Single);
        t.set_limit(ms(2000));
        let mut out = Vec::new();
        // Polled for the first time 3 s in (a stalled writer thread).
        for _ in 0..10 {
            t.poll_frames(t0 + ms(3000), &mut out);
        }
        assert_eq!(out.len(), 16_000);
        finish(&mut t, t0 + ms(2000), &mut out);
        assert_eq!(out.len(), 16_000);
    }

    #[test]
    fn stop_while_paused_ends_at_the_pause() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Single);
        let mut out = Vec::new();
        t.push_left(&[5; PKT], t0 + ms(20));
        t.pause(t0 + ms(500));
        finish(&mut t, t0 + ms(9000), &mut out);
        assert_eq!(out.len(), 500 * MS as usize);
    }

    #[test]
    fn mono_mix_saturates() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Single);
        let mut out = Vec::new();
        t.push_left(&[30_000; PKT], t0 + ms(20));
        t.push_right(&[30_000; PKT], t0 + ms(20));
        t.push_left(&[-30_000; PKT], t0 + ms(40));
        t.push_right(&[1000; PKT], t0 + ms(40));
        finish(&mut t, t0 + ms(40), &mut out);
        assert_eq!(out.len(), 2 * PKT);
        assert!(out[..PKT].iter().all(|&s| s == i16::MAX));
        assert!(out[PKT..].iter().all(|&s| s == -29_000));
    }

    #[test]
    fn without_polls_memory_stays_bounded_and_drops_are_counted() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, RATE, Channels::Dual);
        for k in 0..500u64 {
            t.push_left(&packet(k, true), t0 + ms(20 * (k + 1)));
        }
        assert_eq!(t.left.ring.len(), 8000);
        assert_eq!(t.stats().dropped_samples, 500 * PKT as u64 - 8000);
        let mut out = Vec::new();
        assert_eq!(t.poll_frames(t0 + ms(10_000), &mut out), 8000);
    }

    #[test]
    fn pushes_after_stop_are_dropped_and_the_span_is_exact_at_16k() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, 16_000, Channels::Dual);
        let mut out = Vec::new();
        for k in 0..50u64 {
            let at = t0 + ms(20 * (k + 1));
            t.push_left(&[1; 320], at);
            t.poll_frames(at, &mut out);
        }
        finish(&mut t, t0 + ms(1010), &mut out);
        t.push_left(&[1; 320], t0 + ms(1030));
        assert_eq!(t.poll_frames(t0 + ms(2000), &mut out), 0);
        assert_eq!(out.len(), 16_160 * 2);
        assert_eq!(t.duration(), ms(1010));
        assert_eq!(t.stats().dropped_samples, 320);
    }
}
