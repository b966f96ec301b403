//! The 20 ms pacer, sans-IO: the one schedule every paced sender on the box
//! follows (a PCM endpoint's playout into a leg, the echo, a room's mixer).
//!
//! One frame is due every [`FRAME`] of the box's monotonic clock. A late wake-up
//! (a busy core) catches up with up to [`MAX_CATCH_UP`] frames at once, so audio
//! keeps real time instead of falling behind for good; later than that the
//! schedule restarts from `now` (the frames in between are skipped and the peer's
//! jitter buffer absorbs the gap). No clock inside: the caller passes `now`.

use std::time::{Duration, Instant};

/// One packet of audio (RFC 3551 §4.5: 20 ms is G.711's default packetization).
pub const FRAME: Duration = Duration::from_millis(20);

/// Frames produced at once to catch up after a late wake-up (100 ms).
pub const MAX_CATCH_UP: u32 = 5;

/// A frame produced later than this after its deadline is "late" (room stats).
pub const LATE: Duration = Duration::from_millis(5);

/// What a wake-up at `now` owes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// Frames to produce now (0 when woken early).
    pub frames: u32,
    /// Frames more than [`LATE`] behind their deadline, skipped ones included.
    pub late: u64,
    /// How late the most overdue of `frames` is.
    pub max_lateness: Duration,
    /// The schedule restarted from `now` (more than `MAX_CATCH_UP` behind).
    pub resynced: bool,
}

/// A 20 ms schedule.
#[derive(Debug, Clone)]
pub struct Pacer {
    next: Instant,
    resyncs: u64,
}

impl Pacer {
    /// The first frame is due one [`FRAME`] after `now`.
    pub fn new(now: Instant) -> Self {
        Self { next: now + FRAME, resyncs: 0 }
    }

    /// When the next frame is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Times the schedule restarted after falling more than 100 ms behind.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Advances the schedule to `now`: how many frames to produce.
    pub fn handle_timeout(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        while self.next <= now && due.frames < MAX_CATCH_UP {
            let lateness = now - self.next;
            due.late += u64::from(lateness > LATE);
            due.max_lateness = due.max_lateness.max(lateness);
            self.next += FRAME;
            due.frames += 1;
        }
        if self.next <= now {
            let skipped = (now - self.next).as_nanos() / FRAME.as_nanos() + 1;
            due.late += skipped as u64;
            due.resynced = true;
            self.resyncs += 1;
            self.next = now + FRAME;
        }
        due
    }

    /// Moves the schedule earlier by `by` (less than one [`FRAME`]): the next
    /// frame is due that much sooner, and every later one keeps the 20 ms spacing
    /// from it ([`Alignment`]). A shift of a frame or more is refused (that is
    /// catching up on a backlog, not a phase).
    pub fn shift_earlier(&mut self, by: Duration) {
        if by < FRAME {
            if let Some(next) = self.next.checked_sub(by) {
                self.next = next;
            }
        }
    }
}

/// Frames in one window of [`Alignment`] (1 s).
pub const ALIGN_WINDOW: u32 = 50;

/// What [`Alignment`] leaves between the latest arrival it saw in a window and
/// the tick that plays it: the worker's wake-up granularity (its timers are
/// whole milliseconds) plus a little of the stream's jitter.
pub const ALIGN_MARGIN: Duration = Duration::from_millis(3);

/// Shifts smaller than this are not worth a shorter packet interval.
pub const ALIGN_MIN_SHIFT: Duration = Duration::from_millis(2);

/// The phase of a paced sender's schedule against the audio it plays, sans-IO.
///
/// A voice agent's frames reach the box at a steady phase of the 20 ms period
/// (the caller's packet, plus the agent's turnaround), but the job's schedule
/// started at a random phase, so each frame waited 0–20 ms for its tick (10 ms
/// on average, up to a whole frame at p99). Over each window of
/// [`ALIGN_WINDOW`] frames this keeps the shortest wait between a frame's
/// arrival and the tick that took it; when even that wait was longer than
/// [`ALIGN_MARGIN`], every frame of the window would still have made its tick
/// with the schedule that much earlier, so [`Alignment::tick`] returns the shift
/// for [`Pacer::shift_earlier`]. This is an adaptive playout point (the
/// receiver-side practice of RFC 3550 §A.8's jitter estimate, applied to
/// the box's own sending): one packet goes out a few ms early, once, and then
/// the frames wait about the margin. A stream whose arrivals jitter keeps a
/// smaller shift by itself (its shortest wait is shorter).
#[derive(Debug, Clone, Default)]
pub struct Alignment {
    shortest: Option<Duration>,
    frames: u32,
    shifted: Duration,
}

impl Alignment {
    /// A frame of audio was taken by a tick `wait` after it arrived.
    pub fn arrived(&mut self, wait: Duration) {
        self.shortest = Some(self.shortest.map_or(wait, |s| s.min(wait)));
    }

    /// A tick played a frame; at the end of a window, how much earlier the
    /// schedule should run (`None`: leave it).
    pub fn tick(&mut self) -> Option<Duration> {
        self.frames += 1;
        if self.frames < ALIGN_WINDOW {
            return None;
        }
        let shortest = self.shortest.take();
        self.frames = 0;
        let by = shortest?.checked_sub(ALIGN_MARGIN)?;
        if by < ALIGN_MIN_SHIFT || by >= FRAME {
            return None;
        }
        self.shifted += by;
        Some(by)
    }

    /// The schedule was moved by this much in total (diagnostics).
    pub fn shifted(&self) -> Duration {
        self.shifted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_per_20_ms_on_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        assert_eq!(p.handle_timeout(t0 + Duration::from_millis(19)).frames, 0, "early: nothing");
        for i in 1..=50u32 {
            let now = t0 + FRAME * i;
            assert_eq!(p.poll_timeout(), now);
            let due = p.handle_timeout(now);
            assert_eq!((due.frames, due.late, due.resynced), (1, 0, false));
        }
    }

    /// Frames that arrive 6–8 ms into each period wait 12–14 ms for ticks at
    /// the period's end; after one window the schedule runs 9 ms earlier, and
    /// then stays put (they wait 3–5 ms: the margin).
    #[test]
    fn alignment_moves_the_schedule_to_the_arrivals() {
        let t0 = Instant::now();
        let arrival = |k: u32| t0 + FRAME * k + Duration::from_millis(6 + u64::from(k % 3));
        let mut p = Pacer::new(t0);
        let mut a = Alignment::default();
        let (mut shifts, mut waits, mut k) = (Vec::new(), Vec::new(), 0);
        for _ in 0..4 * ALIGN_WINDOW {
            let now = p.poll_timeout();
            while arrival(k) <= now {
                let wait = now - arrival(k);
                a.arrived(wait);
                waits.push(wait);
                k += 1;
            }
            assert_eq!(p.handle_timeout(now).frames, 1);
            if let Some(by) = a.tick() {
                shifts.push(by);
                p.shift_earlier(by);
            }
        }
        assert_eq!(shifts, vec![Duration::from_millis(9)], "12 ms shortest wait - 3 ms margin, once");
        assert_eq!(a.shifted(), Duration::from_millis(9));
        let after = &waits[waits.len() - ALIGN_WINDOW as usize..];
        assert!(after.iter().all(|w| (Duration::from_millis(3)..=Duration::from_millis(5)).contains(w)), "{after:?}");
        assert_eq!(k, 4 * ALIGN_WINDOW, "every frame taken by one tick");
    }

    /// A jittery stream (some frames arrive just before the tick), a window
    /// without audio, and a would-be shift of a whole frame leave the schedule.
    #[test]
    fn alignment_leaves_jitter_silence_and_backlogs_alone() {
        let mut a = Alignment::default();
        for i in 0..ALIGN_WINDOW {
            a.arrived(Duration::from_millis(if i == 17 { 4 } else { 15 }));
            let by = a.tick();
            assert_eq!(by, None, "shortest wait 4 ms: a 1 ms shift is not worth it");
        }
        for _ in 0..ALIGN_WINDOW {
            assert_eq!(a.tick(), None, "no audio: nothing to align to");
        }
        for _ in 0..ALIGN_WINDOW {
            a.arrived(Duration::from_millis(25));
            assert_eq!(a.tick(), None, "a frame standing a whole tick is a backlog (Playout::standing_surplus)");
        }
        let mut p = Pacer::new(Instant::now());
        let before = p.poll_timeout();
        p.shift_earlier(FRAME);
        assert_eq!(p.poll_timeout(), before);
    }

    #[test]
    fn a_late_wake_up_catches_up_then_resyncs() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0);
        // 70 ms late: the 20, 40 and 60 ms frames at once (two of them > 5 ms late).
        let due = p.handle_timeout(t0 + Duration::from_millis(70));
        assert_eq!((due.frames, due.late, due.resynced), (3, 3, false));
        assert_eq!(due.max_lateness, Duration::from_millis(50));
        assert_eq!(p.poll_timeout(), t0 + Duration::from_millis(80));
        // 300 ms behind: 5 frames, the rest skipped, schedule restarts from now.
        let now = t0 + Duration::from_millis(380);
        let due = p.handle_timeout(now);
        assert_eq!(due.frames, MAX_CATCH_UP);
        assert!(due.resynced);
        assert_eq!(due.late, 5 + 11, "5 late frames + 11 skipped (180..380 ms)");
        assert_eq!(p.poll_timeout(), now + FRAME);
        assert_eq!(p.resyncs(), 1);
    }
}
