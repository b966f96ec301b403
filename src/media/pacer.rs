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
