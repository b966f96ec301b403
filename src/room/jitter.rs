//! Per-participant jitter buffer of a room: audio arrives as RTP payloads
//! (decoded to PCM16) whenever the network delivers them — late, early, reordered,
//! twice or never — and leaves as one frame per 20 ms room tick, in RTP timestamp
//! order (RFC 3550 §5.1: the timestamp is the sampling instant of the first
//! sample, in clock-rate units: 8000 Hz for G.711).
//!
//! Sans-IO: no clock and no socket. The room job calls [`JitterBuffer::push`]
//! for every packet it receives and [`JitterBuffer::pop_frame`] once per tick.
//! Storage is a ring of samples indexed by timestamp (256 ms, a power of two),
//! allocated once in [`JitterBuffer::new`]; neither call allocates.
//!
//! **Target delay: fixed, 40 ms by default** ([`DEFAULT_TARGET_DELAY`]). The first
//! packet anchors the read position (`head`) that far behind its timestamp, so
//! each packet has 40 ms after its expected arrival to show up. The room drains
//! packets once per tick, so a packet waits up to 20 ms for the tick anyway: 40 ms
//! covers that tick phase plus ~20 ms of network jitter, which is what a trunk on
//! a wired link shows (Telnyx's own media reports single-digit ms jitter); each
//! extra 20 ms is heard as delay by everyone in the room. Not adaptive: a fixed
//! delay is predictable and leaves the room's mouth-to-ear delay constant; a
//! participant on a bad link gets gaps (concealed, below) rather than making
//! the buffer grow.
//!
//! Rules for a packet with timestamp `ts` and `n` samples:
//! * it fits between `head` and `head + capacity`: its samples are stored (a
//!   packet already stored counts as a duplicate and changes nothing);
//! * it is older than `head` and no newer than audio already received (a packet
//!   reordered past its playout time, or a duplicate of one played): the part
//!   still ahead of `head` is stored, the rest dropped (counted `late`);
//! * it is behind `head` but newer than everything received (the sender was
//!   paused or its clock runs slow; a new talkspurt with a timestamp that did not
//!   advance), more than 1 s away from `head` either way (a new SSRC, a
//!   re-INVITE, a sender restart), or too far ahead to fit: the buffer
//!   **re-anchors** on it (`head = ts − target`, buffered audio dropped, counted
//!   `resyncs`). A re-INVITE that changes the stream can also call
//!   [`JitterBuffer::reset`].
//!
//! Timestamps wrap at 2³²: every comparison is a wrapping difference.
//!
//! **Loss concealment**: a frame with no audio at all, when the previous frame
//! was complete and later audio has already arrived (so it is a loss, not the
//! end of a talkspurt), replays the previous frame at half amplitude, then once
//! more at a quarter; after that, silence. Partly missing frames have silence in
//! the gaps. Simple, cheap, and enough for one or two lost packets in speech.

/// Default target delay between a packet's timestamp and its playout.
pub const DEFAULT_TARGET_DELAY: std::time::Duration = std::time::Duration::from_millis(40);

/// Ring capacity in milliseconds (rounded up to a power of two samples).
const CAPACITY_MS: u32 = 256;

/// A timestamp this far from `head` (either way) is a new stream, not jitter.
const JUMP_MS: u32 = 1000;

/// Largest frame [`JitterBuffer::pop_frame`] conceals (20 ms at 16000 Hz).
const MAX_FRAME: usize = 320;

/// Frames of attenuated repetition before silence.
const MAX_CONCEALED_FRAMES: u8 = 2;

/// What happened to packets and frames since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets (or their parts) dropped because their playout time had passed.
    pub late: u64,
    /// Packets whose every sample was already stored.
    pub duplicates: u64,
    /// Re-anchorings on a new stream, a paused or slow sender, or an overflow.
    pub resyncs: u64,
    /// Frames filled by concealment.
    pub concealed_frames: u64,
    /// Frames popped that had at least one missing sample while the stream was
    /// running (samples were due and had not arrived).
    pub incomplete_frames: u64,
}

/// A jitter buffer for one participant's RTP audio, PCM16 mono at `clock_rate`.
#[derive(Debug)]
pub struct JitterBuffer {
    /// Samples by timestamp (`ts & mask`).
    samples: Box<[i16]>,
    /// Whether `samples[i]` holds audio not yet played.
    present: Box<[bool]>,
    /// `capacity − 1` (capacity is a power of two).
    mask: u32,
    /// Timestamp of the next sample to play.
    head: u32,
    /// False until the first packet (and after a reset).
    anchored: bool,
    /// One past the newest timestamp received.
    newest_end: u32,
    /// Target delay in samples.
    target: u32,
    /// A timestamp jump, in samples.
    jump: u32,
    /// The last frame played (for concealment) and its length.
    last_frame: [i16; MAX_FRAME],
    last_len: usize,
    /// Whether the last frame was complete real audio (or concealment of it).
    last_real: bool,
    /// Concealed frames in a row.
    concealed_run: u8,
    /// True once a frame of the current anchoring had audio (the silence of the
    /// target delay before it is not loss).
    playing: bool,
    stats: JitterStats,
}

/// Wrapping difference `a − b` as a signed distance.
fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

impl JitterBuffer {
    /// A buffer for a stream with RTP clock `clock_rate_hz` (8000 for G.711, at
    /// most 48000) holding audio `target_delay` behind its timestamps (clamped to
    /// 0..=200 ms). Allocates the 256 ms ring (2048 samples at 8000 Hz).
    pub fn new(clock_rate_hz: u32, target_delay: std::time::Duration) -> Self {
        let clock = clock_rate_hz.clamp(8000, 48_000);
        let capacity = (clock * CAPACITY_MS / 1000).next_power_of_two();
        let target_ms = target_delay.as_millis().min(200) as u32;
        JitterBuffer {
            samples: vec![0; capacity as usize].into_boxed_slice(),
            present: vec![false; capacity as usize].into_boxed_slice(),
            mask: capacity - 1,
            head: 0,
            anchored: false,
            newest_end: 0,
            target: clock * target_ms / 1000,
            jump: clock * JUMP_MS / 1000,
            last_frame: [0; MAX_FRAME],
            last_len: 0,
            last_real: false,
            concealed_run: 0,
            playing: false,
            stats: JitterStats::default(),
        }
    }

    /// Ring capacity in samples.
    fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Forgets all buffered audio; the next packet anchors the buffer again (a
    /// re-INVITE that changes the stream, a participant taken off hold).
    pub fn reset(&mut self) {
        self.present.fill(false);
        self.anchored = false;
        self.last_real = false;
        self.concealed_run = 0;
    }

    fn anchor(&mut self, ts: u32) {
        self.present.fill(false);
        self.head = ts.wrapping_sub(self.target);
        self.newest_end = ts;
        self.anchored = true;
        self.playing = false;
    }

    /// Stores one packet's audio: `pcm` is PCM16 mono at the clock rate (decoded
    /// G.711: one sample per payload byte), `rtp_timestamp` the packet's RTP
    /// timestamp. At most the ring's capacity is kept of an oversized packet.
    /// Never allocates.
    pub fn push(&mut self, rtp_timestamp: u32, pcm: &[i16]) {
        if pcm.is_empty() {
            return;
        }
        self.stats.packets += 1;
        let len = pcm.len().min(self.capacity() as usize);
        let pcm = &pcm[..len];
        let end = rtp_timestamp.wrapping_add(len as u32);
        if !self.anchored {
            self.anchor(rtp_timestamp);
        }
        let offset = diff(rtp_timestamp, self.head);
        let far = offset.unsigned_abs() > self.jump;
        let overflow = offset >= 0 && offset as u32 + len as u32 > self.capacity();
        let behind_but_new = offset < 0 && diff(rtp_timestamp, self.newest_end) >= 0;
        if far || overflow || behind_but_new {
            self.stats.resyncs += 1;
            self.anchor(rtp_timestamp);
        }
        // Skip the part already behind the head.
        let offset = diff(rtp_timestamp, self.head);
        let skip = if offset < 0 { offset.unsigned_abs() as usize } else { 0 };
        if skip > 0 {
            self.stats.late += 1;
            if skip >= len {
                return;
            }
        }
        let mut stored_new = false;
        for (i, &sample) in pcm.iter().enumerate().skip(skip) {
            let idx = (rtp_timestamp.wrapping_add(i as u32) & self.mask) as usize;
            stored_new |= !self.present[idx];
            self.samples[idx] = sample;
            self.present[idx] = true;
        }
        if !stored_new && skip == 0 {
            self.stats.duplicates += 1;
        }
        if diff(end, self.newest_end) > 0 {
            self.newest_end = end;
        }
    }

    /// Fills `out` with the next `out.len()` samples in timestamp order (one tick:
    /// 160 at 8000 Hz) and advances the read position; missing samples are silence
    /// or concealment (module docs). Returns how many samples were received audio
    /// (0 = nothing arrived for this frame). Before the first packet, returns
    /// silence without advancing. Never allocates.
    pub fn pop_frame(&mut self, out: &mut [i16]) -> usize {
        if !self.anchored {
            out.fill(0);
            self.last_real = false;
            return 0;
        }
        let mut real = 0;
        for (i, o) in out.iter_mut().enumerate() {
            let idx = (self.head.wrapping_add(i as u32) & self.mask) as usize;
            if self.present[idx] {
                *o = self.samples[idx];
                self.present[idx] = false;
                real += 1;
            } else {
                *o = 0;
            }
        }
        self.head = self.head.wrapping_add(out.len() as u32);
        // Audio after this frame has arrived: whatever was missing here was lost.
        self.playing |= real > 0;
        let running = self.playing && diff(self.newest_end, self.head) > 0;
        if real < out.len() && running {
            self.stats.incomplete_frames += 1;
        }
        let n = out.len().min(MAX_FRAME);
        if real == 0
            && running
            && self.last_real
            && self.last_len == out.len()
            && self.concealed_run < MAX_CONCEALED_FRAMES
        {
            for (o, l) in out[..n].iter_mut().zip(self.last_frame.iter_mut()) {
                *l /= 2;
                *o = *l;
            }
            self.concealed_run += 1;
            self.stats.concealed_frames += 1;
            return 0;
        }
        self.concealed_run = 0;
        self.last_real = real == out.len();
        self.last_len = out.len();
        self.last_frame[..n].copy_from_slice(&out[..n]);
        real
    }

    /// Samples received and waiting to be played ahead of the read position
    /// (newest timestamp − read position; 0 when drained or not yet started).
    pub fn buffered_samples(&self) -> u32 {
        if self.anchored { diff(self.newest_end, self.head).max(0) as u32 } else { 0 }
    }

    /// Target delay in samples at the clock rate (320 = 40 ms at 8000 Hz).
    pub fn target_samples(&self) -> u32 {
        self.target
    }

    /// Counters since creation.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const F: usize = 160;

    /// A 20 ms packet whose samples encode their own timestamp (ts/8 + 1, never 0).
    fn packet(ts: u32) -> Vec<i16> {
        (0..F as u32).map(|i| (((ts.wrapping_add(i)) / 8) % 30000 + 1) as i16).collect()
    }

    fn pop(jb: &mut JitterBuffer) -> ([i16; F], usize) {
        let mut out = [7i16; F];
        let n = jb.pop_frame(&mut out);
        (out, n)
    }

    fn jb() -> JitterBuffer {
        JitterBuffer::new(8000, DEFAULT_TARGET_DELAY)
    }

    #[test]
    fn in_order_packets_play_after_the_target_delay() {
        let mut jb = jb();
        assert_eq!(jb.target_samples(), 320);
        let (silent, n) = pop(&mut jb);
        assert_eq!(n, 0);
        assert!(silent.iter().all(|&s| s == 0), "silence before the first packet");
        let base = 1000u32;
        // Real time: one packet in, one frame out per tick.
        let mut played = Vec::new();
        for k in 0..10u32 {
            jb.push(base + k * F as u32, &packet(base + k * F as u32));
            let (f, n) = pop(&mut jb);
            played.push((f, n));
        }
        // Two frames (40 ms) of silence, then the packets in order.
        assert_eq!(played[0].1, 0);
        assert_eq!(played[1].1, 0);
        for (k, (f, n)) in played[2..].iter().enumerate() {
            assert_eq!(*n, F);
            assert_eq!(&f[..], &packet(base + k as u32 * F as u32)[..], "frame {k}");
        }
        assert_eq!(jb.buffered_samples(), 2 * F as u32);
        assert_eq!(jb.stats().late + jb.stats().resyncs + jb.stats().duplicates, 0);
    }

    #[test]
    fn reordered_packets_play_in_timestamp_order() {
        let mut jb = jb();
        let order = [0u32, 2, 1, 4, 3, 5, 7, 6, 8, 9];
        for &k in &order {
            jb.push(k * F as u32, &packet(k * F as u32));
        }
        let mut out = Vec::new();
        for _ in 0..12 {
            let (f, n) = pop(&mut jb);
            if n > 0 {
                out.push(f);
            }
        }
        assert_eq!(out.len(), 10);
        for (k, f) in out.iter().enumerate() {
            assert_eq!(&f[..], &packet(k as u32 * F as u32)[..], "frame {k}");
        }
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn duplicates_are_counted_and_played_once() {
        let mut jb = jb();
        jb.push(0, &packet(0));
        jb.push(0, &packet(0));
        jb.push(F as u32, &packet(F as u32));
        jb.push(0, &packet(0));
        assert_eq!(jb.stats().duplicates, 2);
        let frames: Vec<_> = (0..5).map(|_| pop(&mut jb)).collect();
        let real: Vec<_> = frames.iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(real.len(), 2, "each packet played once");
        // A duplicate of a packet already played is late, not replayed.
        jb.push(0, &packet(0));
        assert_eq!(jb.stats().late, 1);
        let (_, n) = pop(&mut jb);
        assert_eq!(n, 0);
    }

    #[test]
    fn a_packet_later_than_its_playout_is_dropped() {
        let mut jb = jb();
        for k in 0..3u32 {
            jb.push(k * F as u32, &packet(k * F as u32));
        }
        jb.push(4 * F as u32, &packet(4 * F as u32)); // packet 3 is late
        for _ in 0..5 {
            pop(&mut jb); // plays silence, silence, 0, 1, 2: head now at packet 3
        }
        let (f, n) = pop(&mut jb); // packet 3's slot: lost, concealed
        assert_eq!(n, 0);
        assert!(f.iter().zip(packet(2 * F as u32)).all(|(&c, p)| c == p / 2), "half of packet 2 repeated");
        jb.push(3 * F as u32, &packet(3 * F as u32)); // arrives too late
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().resyncs, 0, "old audio does not re-anchor");
        let (f, n) = pop(&mut jb);
        assert_eq!(n, F);
        assert_eq!(&f[..], &packet(4 * F as u32)[..]);
    }

    #[test]
    fn loss_is_concealed_twice_then_silent_and_end_of_talkspurt_is_not() {
        let mut jb = jb();
        for k in 0..3u32 {
            jb.push(k * F as u32, &packet(k * F as u32));
        }
        // Packets 3, 4, 5 lost; 6 arrived.
        jb.push(6 * F as u32, &packet(6 * F as u32));
        let frames: Vec<_> = (0..9).map(|_| pop(&mut jb)).collect();
        let last = packet(2 * F as u32);
        assert_eq!(frames[4].1, F);
        assert!(frames[5].0.iter().zip(&last).all(|(&c, &p)| c == p / 2));
        assert!(frames[6].0.iter().zip(&last).all(|(&c, &p)| c == p / 2 / 2));
        assert!(frames[7].0.iter().all(|&s| s == 0), "third lost frame is silence");
        assert_eq!(frames[8].1, F, "packet 6 plays on time");
        assert_eq!(jb.stats().concealed_frames, 2);
        assert_eq!(jb.stats().incomplete_frames, 3);

        // The stream stops (end of talkspurt): no concealment, silence.
        let (f, n) = pop(&mut jb);
        assert_eq!(n, 0);
        assert!(f.iter().all(|&s| s == 0));
        assert_eq!(jb.stats().concealed_frames, 2);
    }

    #[test]
    fn timestamps_wrap_around() {
        let mut jb = jb();
        let start = u32::MAX - 2 * F as u32 + 1; // packets straddle 2^32
        let mut played = Vec::new();
        for k in 0..8u32 {
            let ts = start.wrapping_add(k * F as u32);
            jb.push(ts, &packet(ts));
            let (f, n) = pop(&mut jb);
            if n > 0 {
                played.push(f);
            }
        }
        assert_eq!(played.len(), 6);
        for (k, f) in played.iter().enumerate() {
            assert_eq!(&f[..], &packet(start.wrapping_add(k as u32 * F as u32))[..]);
        }
        assert_eq!(jb.stats().resyncs + jb.stats().late, 0);
    }

    #[test]
    fn a_timestamp_jump_either_way_re_anchors() {
        for jump in [3_000_000u32, 0u32.wrapping_sub(3_000_000)] {
            let mut jb = jb();
            for k in 0..4u32 {
                jb.push(k * F as u32, &packet(k * F as u32));
                pop(&mut jb);
            }
            // New SSRC (or a re-INVITE) with an unrelated timestamp.
            let base = 4 * F as u32 + jump;
            let mut played = Vec::new();
            for k in 0..6u32 {
                let ts = base.wrapping_add(k * F as u32);
                jb.push(ts, &packet(ts));
                let (f, n) = pop(&mut jb);
                played.push((f, n));
            }
            assert_eq!(jb.stats().resyncs, 1, "jump {jump}");
            // The two buffered frames of the old stream were dropped; the new one
            // plays after the target delay, in order.
            assert_eq!(played[0].1, 0);
            assert_eq!(played[1].1, 0);
            for (k, (f, n)) in played[2..].iter().enumerate() {
                assert_eq!(*n, F);
                assert_eq!(&f[..], &packet(base.wrapping_add(k as u32 * F as u32))[..]);
            }
        }
    }

    #[test]
    fn a_new_talkspurt_behind_the_head_re_anchors_and_a_paused_one_fits() {
        let mut jb = jb();
        for k in 0..3u32 {
            jb.push(k * F as u32, &packet(k * F as u32));
            pop(&mut jb);
        }
        for _ in 0..20 {
            pop(&mut jb); // 400 ms: the sender is silent, the head moves on
        }
        // RTP timestamps kept real time during the pause (RFC 3550 §5.1): fits.
        let ts = 23 * F as u32;
        jb.push(ts, &packet(ts));
        assert_eq!(jb.stats().resyncs, 0);
        // A sender whose timestamp did not advance during a pause: re-anchors
        // instead of dropping the whole talkspurt as late.
        let mut jb2 = JitterBuffer::new(8000, Duration::from_millis(40));
        for k in 0..3u32 {
            jb2.push(k * F as u32, &packet(k * F as u32));
            pop(&mut jb2);
        }
        for _ in 0..20 {
            pop(&mut jb2);
        }
        jb2.push(3 * F as u32, &packet(3 * F as u32));
        assert_eq!(jb2.stats().resyncs, 1);
        assert_eq!(jb2.stats().late, 0);
        pop(&mut jb2);
        let (f, n) = pop(&mut jb2);
        assert_eq!(n, 0);
        assert!(f.iter().all(|&s| s == 0));
        let (f, n) = pop(&mut jb2);
        assert_eq!(n, F);
        assert_eq!(&f[..], &packet(3 * F as u32)[..]);
    }

    #[test]
    fn a_burst_beyond_the_ring_re_anchors_and_depth_stays_bounded() {
        let mut jb = jb();
        // 1 s of audio at once (a stalled network delivering its backlog).
        for k in 0..50u32 {
            jb.push(k * F as u32, &packet(k * F as u32));
            assert!(jb.buffered_samples() <= jb.capacity(), "depth bounded");
        }
        assert!(jb.stats().resyncs >= 1);
        // The newest audio plays after the target delay.
        pop(&mut jb);
        pop(&mut jb);
        let (f, n) = pop(&mut jb);
        let _ = f;
        assert!(n > 0);
    }

    #[test]
    fn reset_forgets_audio_and_re_anchors() {
        let mut jb = jb();
        jb.push(0, &packet(0));
        jb.reset();
        let (_, n) = pop(&mut jb);
        assert_eq!(n, 0);
        jb.push(5000, &packet(5000));
        pop(&mut jb);
        pop(&mut jb);
        let (f, n) = pop(&mut jb);
        assert_eq!(n, F);
        assert_eq!(&f[..], &packet(5000)[..]);
        assert_eq!(jb.stats().resyncs, 0, "reset is not a resync");
    }

    #[test]
    fn split_and_odd_sized_packets_fill_frames_exactly() {
        let mut jb = jb();
        // 30 ms + 10 ms packets: frames are still 20 ms of consecutive samples.
        let audio: Vec<i16> = (1..=1280).map(|i| i as i16).collect();
        jb.push(0, &audio[..240]);
        jb.push(240, &audio[240..320]);
        jb.push(320, &audio[320..800]);
        jb.push(800, &audio[800..1280]);
        let mut played = Vec::new();
        for _ in 0..10 {
            let (f, n) = pop(&mut jb);
            if n > 0 {
                played.extend_from_slice(&f[..n]);
            }
        }
        assert_eq!(played, audio);
    }
}
