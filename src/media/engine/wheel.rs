//! A hashed timer wheel (Varghese & Lauck), one per media worker: 1 ms slots,
//! a 1 024 ms horizon. Entries are (key, generation) pairs; the worker ignores
//! a fired entry whose job moved on (lazy cancellation), so re-arming never
//! searches. A deadline beyond the horizon fires at the horizon and its job
//! simply re-arms. Slot vectors keep their capacity: once warm, inserting and
//! expiring allocate nothing.

use std::time::{Duration, Instant};

const SLOTS: usize = 1024;
const RESOLUTION_NS: u128 = 1_000_000;

/// A timer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The job's slot.
    pub key: u32,
    /// The slot's generation when armed.
    pub generation: u32,
    /// The tick it was armed for.
    pub tick: u64,
}

/// The wheel.
#[derive(Debug)]
pub struct Wheel {
    origin: Instant,
    slots: Vec<Vec<Entry>>,
    /// The first tick not expired yet.
    current: u64,
    len: usize,
}

impl Wheel {
    /// An empty wheel whose tick 0 is `origin`.
    pub fn new(origin: Instant) -> Self {
        Self { origin, slots: (0..SLOTS).map(|_| Vec::new()).collect(), current: 0, len: 0 }
    }

    fn floor_tick(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / RESOLUTION_NS) as u64
    }

    /// The tick an entry for `at` goes to: never before `at`, never before the
    /// current tick, at most the horizon.
    pub fn tick_for(&self, at: Instant) -> u64 {
        let ns = at.saturating_duration_since(self.origin).as_nanos();
        let tick = ns.div_ceil(RESOLUTION_NS) as u64;
        tick.clamp(self.current, self.current + SLOTS as u64 - 1)
    }

    /// Arms `key`/`generation` for `at`; returns the tick used.
    pub fn insert(&mut self, at: Instant, key: u32, generation: u32) -> u64 {
        let tick = self.tick_for(at);
        self.slots[(tick % SLOTS as u64) as usize].push(Entry { key, generation, tick });
        self.len += 1;
        tick
    }

    /// Moves every entry due at `now` into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Entry>) {
        let now_tick = self.floor_tick(now);
        if now_tick < self.current {
            return;
        }
        let end = now_tick.min(self.current + SLOTS as u64 - 1);
        for tick in self.current..=end {
            let slot = &mut self.slots[(tick % SLOTS as u64) as usize];
            self.len -= slot.len();
            out.append(slot);
        }
        self.current = now_tick + 1;
    }

    /// Time from `now` until the earliest entry (zero if one is due), `None` when
    /// the wheel is empty.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let first = (self.current..self.current + SLOTS as u64)
            .find(|t| !self.slots[(t % SLOTS as u64) as usize].is_empty())?;
        let at = self.origin + Duration::from_nanos((first as u128 * RESOLUTION_NS) as u64);
        Some(at.saturating_duration_since(now))
    }

    /// Entries armed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No entry armed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn entries_fire_at_their_tick_never_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert(t0 + ms(20), 1, 0);
        w.insert(t0 + ms(20) + Duration::from_micros(300), 2, 0);
        w.insert(t0 + ms(250), 3, 7);
        assert_eq!(w.next_timeout(t0), Some(ms(20)));
        let mut out = Vec::new();
        w.expire(t0 + ms(19), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + ms(20), &mut out);
        assert_eq!(out.iter().map(|e| e.key).collect::<Vec<_>>(), [1], "20.3 ms rounds up to 21");
        w.expire(t0 + ms(21), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(w.next_timeout(t0 + ms(21)), Some(ms(229)));
        out.clear();
        w.expire(t0 + ms(400), &mut out);
        assert_eq!(out, [Entry { key: 3, generation: 7, tick: 250 }]);
        assert!(w.is_empty());
        assert_eq!(w.next_timeout(t0 + ms(400)), None);
    }

    #[test]
    fn past_deadlines_fire_next_and_far_ones_at_the_horizon() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut out = Vec::new();
        w.expire(t0 + ms(100), &mut out);
        w.insert(t0 + ms(50), 1, 0);
        assert_eq!(w.next_timeout(t0 + ms(100)), Some(ms(1)), "overdue: the next tick");
        w.insert(t0 + Duration::from_secs(60), 2, 0);
        w.expire(t0 + ms(101), &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        w.expire(t0 + ms(100 + 1024), &mut out);
        assert_eq!(out.iter().map(|e| e.key).collect::<Vec<_>>(), [2], "clamped to the horizon");
    }

    #[test]
    fn a_long_stall_expires_everything_once() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        for i in 0..100 {
            w.insert(t0 + ms(i * 7), i as u32, 0);
        }
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(10), &mut out);
        assert_eq!(out.len(), 100);
        assert!(w.is_empty());
        w.insert(t0 + Duration::from_secs(10), 5, 1);
        out.clear();
        w.expire(t0 + Duration::from_millis(10_001), &mut out);
        assert_eq!(out.len(), 1);
    }
}
