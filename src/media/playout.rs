//! Playback queue of a bidirectional agent stream (PROTOCOLS.md §3, Telnyx
//! `stream_bidirectional_mode: "rtp"`): the agent sends `media` messages of any
//! length (20 ms up to many seconds), `mark` messages between them and `clear` for
//! barge-in; the box plays the audio into the call in real time, one 20 ms packet
//! at a time, and echoes each mark back once everything queued before it has been
//! played.
//!
//! Sans-IO: no clock, no socket. The media engine's PCM job calls
//! [`Playout::next_frame`] once per 20 ms tick (`media::pacer`), encodes the frame for the call leg, then drains
//! [`Playout::pop_reached`] and sends a `mark` event for each name. Time is counted
//! in samples at the queue's rate (8000 Hz; 16000 Hz for an L16/16000 agent, whose
//! shell asks for 320-sample frames). Audio is PCM16 mono, native endian, already converted from
//! the stream encoding by `media::transcode::FromStream`.
//!
//! Owns the queue and the mark bookkeeping only; it does not know the stream
//! encoding, the call's codec, or the WebSocket.

use std::collections::VecDeque;

/// Samples in one 20 ms packet at 8000 Hz (the call side's G.711 ptime).
pub const FRAME_SAMPLES: usize = 160;

/// Frames a standing backlog must last before [`Playout::standing_surplus`]
/// starts playing it out (200 ms of 20 ms frames).
pub const STANDING_WINDOW: u32 = 10;

/// The deepest backlog played out early, in frames (200 ms: what a phone's
/// jitter buffer holds). A deeper queue is left to play at its pace, so a burst
/// the caller's jitter buffer might not hold is never sent.
pub const MAX_STANDING_FRAMES: usize = 10;

/// How much the queue's depth may vary over the window, in frames, and still be a
/// backlog standing behind a real-time stream (its jitter), rather than audio
/// sent ahead of time draining.
pub const MAX_DEPTH_SWING_FRAMES: usize = 2;

/// Queue of agent audio (PCM16 mono, 8000 or 16000 Hz) waiting to be played into the call,
/// with the agent's marks placed between samples.
///
/// Positions are absolute sample counts since the queue was created: `played` is
/// how many samples have left the queue (played or cleared), and each pending mark
/// stores the position of the queue's end when it was added. A mark is reached
/// once `played` has caught up with its position. Memory is bounded by the cap
/// given to [`Playout::new`]; [`Playout::next_frame`] never allocates.
#[derive(Debug)]
pub struct Playout {
    /// Queued samples, oldest first.
    audio: VecDeque<i16>,
    /// Cap on `audio.len()`, in samples.
    max_samples: usize,
    /// Samples that have left the queue so far (played, or dropped by `clear`).
    played: u64,
    /// Marks not yet reached: (position of the end of the audio before it, name).
    pending: VecDeque<(u64, String)>,
    /// Marks reached by playback and not yet taken by `pop_reached`, oldest first.
    reached: VecDeque<String>,
    /// Samples refused by `push` because the queue was full.
    dropped: u64,
    /// Fewest / most samples left queued after a frame in the current window.
    window_min: usize,
    window_max: usize,
    /// Frames taken in the current window.
    window_frames: u32,
    /// Extra frames still to play, one per tick.
    catching_up: u32,
}

impl Playout {
    /// An empty queue holding at most `max_samples` samples of audio (8000 per
    /// second; e.g. `8000 * 60` for a minute, about 940 KiB at most). Audio pushed
    /// beyond the cap is dropped and counted in [`Playout::dropped_samples`], so a
    /// misbehaving agent cannot make the box use unbounded memory.
    pub fn new(max_samples: usize) -> Self {
        Playout {
            audio: VecDeque::new(),
            max_samples,
            played: 0,
            pending: VecDeque::new(),
            reached: VecDeque::new(),
            dropped: 0,
            window_min: usize::MAX,
            window_max: 0,
            window_frames: 0,
            catching_up: 0,
        }
    }

    /// Appends PCM16 mono samples at the queue's rate (one agent `media` message, after
    /// transcoding) to the end of the queue. If the queue would exceed its cap, the
    /// samples that do not fit (the end of `pcm`) are dropped and counted. May
    /// allocate while the queue grows towards its cap.
    pub fn push(&mut self, pcm: &[i16]) {
        let room = self.max_samples.saturating_sub(self.audio.len());
        let take = pcm.len().min(room);
        self.audio.extend(&pcm[..take]);
        self.dropped += (pcm.len() - take) as u64;
    }

    /// Places an agent `mark` named `name` at the current end of the queue: it is
    /// reached once every sample pushed before it has been played. A mark added when
    /// nothing is queued is reached by the next [`Playout::next_frame`] call.
    pub fn mark(&mut self, name: String) {
        let end = self.played + self.audio.len() as u64;
        self.pending.push_back((end, name));
    }

    /// Barge-in (agent `clear`): drops all queued audio at once and returns every
    /// mark not yet handed out, oldest first — reached ones not yet taken by
    /// [`Playout::pop_reached`] followed by the pending ones — so the shell can send
    /// them all back. The next frame is silence unless audio is pushed first.
    /// Dropped audio here is not counted in [`Playout::dropped_samples`].
    pub fn clear(&mut self) -> Vec<String> {
        self.played += self.audio.len() as u64;
        self.audio.clear();
        let mut marks: Vec<String> = self.reached.drain(..).collect();
        marks.extend(self.pending.drain(..).map(|(_, name)| name));
        self.restart_window();
        self.catching_up = 0;
        marks
    }

    /// Fills `out` with the next frame of audio: `out.len()` samples, i.e.
    /// [`FRAME_SAMPLES`] for 20 ms at 8000 Hz (twice that for a 16000 Hz queue),
    /// zero-padded after the end of the queue, and moves the marks whose audio has
    /// now been played to the reached list. Returns how many samples were real
    /// audio (0 = the frame is silence, `out.len()` = a full frame). Never allocates.
    pub fn next_frame(&mut self, out: &mut [i16]) -> usize {
        let n = self.audio.len().min(out.len());
        // Two slice copies (the ring's halves), then the front dropped in one
        // step: draining sample by sample was ~3 % of the agent path (perf,
        // 800 agent calls, issue 20).
        let (front, back) = self.audio.as_slices();
        let first = front.len().min(n);
        out[..first].copy_from_slice(&front[..first]);
        out[first..n].copy_from_slice(&back[..n - first]);
        self.audio.drain(..n);
        out[n..].fill(0);
        self.played += n as u64;
        self.window_min = self.window_min.min(self.audio.len());
        self.window_max = self.window_max.max(self.audio.len());
        self.window_frames = self.window_frames.saturating_add(1);
        while let Some((position, _)) = self.pending.front() {
            if *position > self.played {
                break;
            }
            if let Some((_, name)) = self.pending.pop_front() {
                self.reached.push_back(name);
            }
        }
        n
    }

    /// Takes the oldest mark reached by playback (as of the last
    /// [`Playout::next_frame`] call), to be sent back to the agent as a `mark`
    /// event; `None` when there is none.
    pub fn pop_reached(&mut self) -> Option<String> {
        self.reached.pop_front()
    }

    /// Whether to play one more frame this tick, beyond the tick's own, to take
    /// out a backlog that late audio left standing: call once per paced tick,
    /// after [`Playout::next_frame`]; `frame_len` is the frame size in samples.
    /// The caller plays the returned number of frames (0 or 1) at once; they are
    /// sent early, nothing is dropped.
    ///
    /// Why: an agent that answers the call's audio as it comes (a real-time
    /// stream) sends one frame per 20 ms. When its frames arrive after their tick
    /// (a busy core, a stall anywhere on the way), those ticks play silence and
    /// the late frames, and every frame after them, wait as many ticks more: the
    /// delay ratchets up with every late arrival for as long as the agent streams
    /// (measured: p50 60–80 ms, p99 85–98 ms at 800 agent calls on two cores,
    /// issue 20). Like a receiver's jitter buffer lowering its level: when, over
    /// the last [`STANDING_WINDOW`] frames, at least one whole frame stayed queued
    /// after every tick, the depth never swung by more than
    /// [`MAX_DEPTH_SWING_FRAMES`] (arrivals keep pace with playout: a real-time
    /// stream, not audio sent ahead draining) and never exceeded
    /// [`MAX_STANDING_FRAMES`], the frames that stood the whole window are
    /// played early, one per tick. A jittery stream keeps the frames its jitter
    /// needs, and TTS queued ahead of time (deeper, or draining) plays at its pace.
    pub fn standing_surplus(&mut self, frame_len: usize) -> u32 {
        let frame_len = frame_len.max(1);
        if self.catching_up == 0 && self.window_frames >= STANDING_WINDOW {
            let steady = self.window_max - self.window_min.min(self.window_max) <= MAX_DEPTH_SWING_FRAMES * frame_len;
            let small = self.window_max <= MAX_STANDING_FRAMES * frame_len;
            if steady && small {
                self.catching_up = (self.window_min / frame_len) as u32;
            }
            self.restart_window();
        }
        if self.catching_up == 0 {
            return 0;
        }
        if self.audio.len() < frame_len {
            // The backlog went by itself (the agent paused).
            self.catching_up = 0;
            return 0;
        }
        self.catching_up -= 1;
        if self.catching_up == 0 {
            self.restart_window();
        }
        1
    }

    /// Forgets the backlog seen in the current window (the queue waited while
    /// something else played).
    pub fn restart_window(&mut self) {
        self.window_min = usize::MAX;
        self.window_max = 0;
        self.window_frames = 0;
    }

    /// Samples of audio waiting to be played (divide by the rate for seconds).
    pub fn queued_samples(&self) -> usize {
        self.audio.len()
    }

    /// Marks not yet reached by playback.
    pub fn pending_marks(&self) -> usize {
        self.pending.len()
    }

    /// Samples dropped by [`Playout::push`] because the queue was at its cap, since
    /// creation.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped
    }

    /// True when nothing is queued and no mark is pending or waiting to be taken by
    /// [`Playout::pop_reached`]: the shell may stop ticking until the agent sends more.
    pub fn is_idle(&self) -> bool {
        self.audio.is_empty() && self.pending.is_empty() && self.reached.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, start: i16) -> Vec<i16> {
        (0..len).map(|i| start.wrapping_add(i as i16)).collect()
    }

    fn frame(p: &mut Playout) -> ([i16; FRAME_SAMPLES], usize) {
        let mut out = [7i16; FRAME_SAMPLES];
        let n = p.next_frame(&mut out);
        (out, n)
    }

    #[test]
    fn frames_come_out_in_order_across_the_ring_s_wrap() {
        // Pushes of odd sizes interleaved with frames taken make the queue's ring
        // wrap, so frames straddle its two halves: every sample comes out once,
        // in order, then silence.
        let mut p = Playout::new(8000);
        let mut next_in = 0i16;
        let mut next_out = 0i16;
        for round in 0..40 {
            let len = 97 + (round * 37) % 211;
            p.push(&ramp(len, next_in));
            next_in = next_in.wrapping_add(len as i16);
            let (out, n) = frame(&mut p);
            for &s in &out[..n] {
                assert_eq!(s, next_out);
                next_out = next_out.wrapping_add(1);
            }
            assert!(out[n..].iter().all(|&s| s == 0));
        }
        while p.queued_samples() > 0 {
            let (out, n) = frame(&mut p);
            for &s in &out[..n] {
                assert_eq!(s, next_out);
                next_out = next_out.wrapping_add(1);
            }
        }
        assert_eq!(next_out, next_in);
    }

    #[test]
    fn frames_play_audio_in_order_and_pad_the_last_one() {
        let mut p = Playout::new(8000);
        let audio = ramp(400, 1);
        p.push(&audio);
        assert_eq!(p.queued_samples(), 400);
        let (f1, n1) = frame(&mut p);
        let (f2, n2) = frame(&mut p);
        let (f3, n3) = frame(&mut p);
        assert_eq!((n1, n2, n3), (160, 160, 80));
        assert_eq!(&f1[..], &audio[..160]);
        assert_eq!(&f2[..], &audio[160..320]);
        assert_eq!(&f3[..80], &audio[320..]);
        assert!(f3[80..].iter().all(|&s| s == 0), "partial frame is zero-padded");
        let (f4, n4) = frame(&mut p);
        assert_eq!(n4, 0);
        assert!(f4.iter().all(|&s| s == 0));
        assert!(p.is_idle());
    }

    #[test]
    fn mark_is_reached_exactly_after_its_audio() {
        let mut p = Playout::new(8000);
        p.push(&ramp(400, 1)); // 50 ms
        p.mark("greeting".into());
        frame(&mut p);
        assert_eq!(p.pop_reached(), None, "not after the 1st frame");
        frame(&mut p);
        assert_eq!(p.pop_reached(), None, "not after the 2nd frame");
        assert!(!p.is_idle());
        frame(&mut p);
        assert_eq!(p.pop_reached().as_deref(), Some("greeting"));
        assert_eq!(p.pop_reached(), None);
        assert!(p.is_idle());
    }

    #[test]
    fn mark_on_a_frame_boundary_is_reached_with_that_frame() {
        let mut p = Playout::new(8000);
        p.push(&ramp(320, 1));
        p.mark("m".into());
        frame(&mut p);
        assert_eq!(p.pop_reached(), None);
        frame(&mut p);
        assert_eq!(p.pop_reached().as_deref(), Some("m"));
    }

    #[test]
    fn several_marks_are_reached_in_order() {
        let mut p = Playout::new(8000);
        p.push(&ramp(160, 1));
        p.mark("a".into());
        p.mark("b".into()); // same position as "a"
        p.push(&ramp(100, 1));
        p.mark("c".into());
        p.push(&ramp(300, 1));
        p.mark("d".into());
        assert_eq!(p.pending_marks(), 4);

        frame(&mut p); // played 160
        assert_eq!(p.pop_reached().as_deref(), Some("a"));
        assert_eq!(p.pop_reached().as_deref(), Some("b"));
        assert_eq!(p.pop_reached(), None);
        frame(&mut p); // played 320 ≥ 260
        assert_eq!(p.pop_reached().as_deref(), Some("c"));
        assert_eq!(p.pop_reached(), None);
        frame(&mut p); // played 480 < 560
        assert_eq!(p.pop_reached(), None);
        let (_, n) = frame(&mut p); // played 560
        assert_eq!(n, 80);
        assert_eq!(p.pop_reached().as_deref(), Some("d"));
        assert!(p.is_idle());
    }

    #[test]
    fn mark_with_nothing_queued_is_reached_on_the_next_frame() {
        let mut p = Playout::new(8000);
        p.mark("alone".into());
        assert_eq!(p.pop_reached(), None, "only after a next_frame call");
        assert!(!p.is_idle());
        let (f, n) = frame(&mut p);
        assert_eq!(n, 0);
        assert!(f.iter().all(|&s| s == 0));
        assert_eq!(p.pop_reached().as_deref(), Some("alone"));

        // Also after earlier audio has been fully played.
        p.push(&ramp(160, 1));
        frame(&mut p);
        p.mark("later".into());
        assert_eq!(p.pop_reached(), None);
        frame(&mut p);
        assert_eq!(p.pop_reached().as_deref(), Some("later"));
    }

    #[test]
    fn clear_drops_audio_and_returns_pending_marks_in_order() {
        let mut p = Playout::new(80_000);
        p.push(&ramp(1000, 1));
        p.mark("one".into());
        p.push(&ramp(8000, 1));
        p.mark("two".into());
        p.mark("three".into());
        frame(&mut p);
        assert_eq!(p.clear(), vec!["one", "two", "three"]);
        assert_eq!(p.queued_samples(), 0);
        assert_eq!(p.pending_marks(), 0);
        assert!(p.is_idle());
        let (f, n) = frame(&mut p);
        assert_eq!(n, 0);
        assert!(f.iter().all(|&s| s == 0), "next frame after clear is silence");
        assert_eq!(p.pop_reached(), None, "cleared marks are not reached again");
        assert_eq!(p.dropped_samples(), 0, "clear is not counted as dropped");

        // Audio and marks after a clear behave as on a fresh queue.
        p.push(&ramp(200, 1));
        p.mark("after".into());
        frame(&mut p);
        assert_eq!(p.pop_reached(), None);
        frame(&mut p);
        assert_eq!(p.pop_reached().as_deref(), Some("after"));
    }

    #[test]
    fn clear_also_returns_reached_marks_not_yet_taken() {
        let mut p = Playout::new(8000);
        p.push(&ramp(100, 1));
        p.mark("reached".into());
        p.push(&ramp(400, 1));
        p.mark("pending".into());
        frame(&mut p);
        assert_eq!(p.clear(), vec!["reached", "pending"]);
        assert_eq!(p.pop_reached(), None);
    }

    #[test]
    fn cap_drops_and_counts_excess_audio() {
        let mut p = Playout::new(500);
        p.push(&ramp(300, 1));
        p.push(&ramp(300, 301));
        assert_eq!(p.queued_samples(), 500);
        assert_eq!(p.dropped_samples(), 100);
        p.mark("end".into());
        p.push(&ramp(10, 1));
        assert_eq!(p.dropped_samples(), 110);

        // The kept audio is the head of the second message, and the mark follows it.
        let mut played = Vec::new();
        for _ in 0..4 {
            let (f, n) = frame(&mut p);
            played.extend_from_slice(&f[..n]);
        }
        assert_eq!(played, ramp(500, 1));
        assert_eq!(p.pop_reached().as_deref(), Some("end"));

        // Room frees up as the queue plays out.
        p.push(&ramp(500, 1));
        frame(&mut p);
        p.push(&ramp(200, 1));
        assert_eq!(p.queued_samples(), 500);
        assert_eq!(p.dropped_samples(), 150);
    }

    /// One agent frame per tick, as a real-time stream: during the ticks in `late`
    /// the agent's frames are held back and arrive together at the next tick not
    /// in it. Returns the queue's depth in frames after each tick, and the extra
    /// frames played (tick, frames).
    fn realtime(p: &mut Playout, ticks: usize, late: &[usize], catch_up: bool) -> (Vec<usize>, Vec<(usize, u32)>) {
        let (mut depth, mut extra, mut held) = (Vec::new(), Vec::new(), 0);
        for t in 0..ticks {
            held += 1;
            if !late.contains(&t) {
                p.push(&ramp(held * FRAME_SAMPLES, 1));
                held = 0;
            }
            frame(p);
            let more = p.standing_surplus(FRAME_SAMPLES);
            if catch_up && more > 0 {
                for _ in 0..more {
                    frame(p);
                }
                extra.push((t, more));
            }
            depth.push(p.queued_samples() / FRAME_SAMPLES);
        }
        (depth, extra)
    }

    #[test]
    fn a_late_frame_s_backlog_is_played_out_after_a_window() {
        // Without catch-up the queue keeps the worst lateness seen as delay.
        let late = [10, 100, 101];
        let (depth, _) = realtime(&mut Playout::new(80_000), 300, &late, false);
        assert_eq!((depth[50], depth[299]), (1, 2), "the delay ratchets up");
        // With it, each backlog stands for at most two windows and then goes.
        let (depth, extra) = realtime(&mut Playout::new(80_000), 300, &late, true);
        assert_eq!((depth[10], depth[11]), (0, 1), "a silent tick, then one frame standing");
        assert_eq!(extra.len(), 3, "one extra frame per late frame: {extra:?}");
        assert!(extra[0].0 <= 11 + 2 * STANDING_WINDOW as usize, "{extra:?}");
        assert!(depth[40..100].iter().all(|&d| d == 0), "{depth:?}");
        assert_eq!(depth[102], 2);
        assert_eq!(extra[2].0, extra[1].0 + 1, "on consecutive ticks: {extra:?}");
        assert!(extra[1].0 <= 102 + 2 * STANDING_WINDOW as usize, "{extra:?}");
        assert!(depth[130..].iter().all(|&d| d == 0), "{depth:?}");
        // A stall of 8 frames: all made up for.
        let late: Vec<usize> = (50..58).collect();
        let (depth, extra) = realtime(&mut Playout::new(80_000), 300, &late, true);
        assert_eq!(depth[58], 8);
        assert_eq!(extra.len(), 8, "{extra:?}");
        assert!(depth[120..].iter().all(|&d| d == 0), "{depth:?}");
        // A longer one leaves a backlog deeper than a phone's jitter buffer would
        // take as a burst: it stays.
        let late: Vec<usize> = (50..80).collect();
        let (depth, extra) = realtime(&mut Playout::new(80_000), 300, &late, true);
        assert!(extra.is_empty() && depth[299] == 30, "{extra:?}");
    }

    #[test]
    fn audio_sent_ahead_of_time_is_played_at_its_pace() {
        // 3 s of TTS at once, then real-time frames: the queue stays 3 s deep
        // (nothing was late), nothing is skipped or played early.
        let mut p = Playout::new(8000 * 10);
        p.push(&ramp(8000 * 3, 1));
        let (depth, extra) = realtime(&mut p, 200, &[], true);
        assert!(extra.is_empty(), "{extra:?}");
        assert_eq!(depth[199], 150);
        // TTS sent ahead and left to drain (no more audio): played at its pace.
        let mut p = Playout::new(8000 * 10);
        p.push(&ramp(8 * FRAME_SAMPLES, 1));
        for t in 0..20 {
            frame(&mut p);
            assert_eq!(p.standing_surplus(FRAME_SAMPLES), 0, "tick {t}");
        }
        // A pause in the agent's speech (silence, then real-time frames again)
        // owes nothing.
        let mut p = Playout::new(8000 * 10);
        let mut extra = 0;
        for t in 0..300 {
            if !(50..80).contains(&t) {
                p.push(&ramp(FRAME_SAMPLES, 1));
            }
            frame(&mut p);
            extra += p.standing_surplus(FRAME_SAMPLES);
        }
        assert_eq!(extra, 0);
    }

    #[test]
    fn a_jittery_stream_keeps_its_jitter_buffer() {
        // Frames arriving alternately 0 and 2 per tick never leave a whole frame
        // standing after every tick: nothing is played early.
        let late: Vec<usize> = (0..200).filter(|t| t % 2 == 0).collect();
        let (_, extra) = realtime(&mut Playout::new(80_000), 200, &late, true);
        assert!(extra.is_empty(), "{extra:?}");
    }

    #[test]
    fn next_frame_does_not_grow_memory() {
        let mut p = Playout::new(8000 * 60);
        p.push(&ramp(8000, 1));
        let capacity = p.audio.capacity();
        while p.queued_samples() > 0 {
            frame(&mut p);
        }
        assert_eq!(p.audio.capacity(), capacity);
    }
}
