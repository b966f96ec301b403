//! Latency histogram: 1 µs buckets up to 1 s, one overflow bucket above.

/// Upper end of the exact range, µs.
pub const RANGE_US: usize = 1_000_000;

/// Counts of latencies in µs.
pub struct Histogram {
    buckets: Vec<u32>,
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: vec![0; RANGE_US + 1], count: 0, max_us: 0 }
    }
}

impl Histogram {
    /// Records one latency.
    #[inline]
    pub fn record(&mut self, us: u64) {
        let i = (us as usize).min(RANGE_US);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest recorded value, µs (exact, also above the range).
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The smallest value v such that more than `q`·count values are ≤ v (µs;
    /// values above the range report as [`RANGE_US`]). 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let want = (q * self.count as f64) as u64;
        let mut acc = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            acc += u64::from(c);
            if acc > want {
                return i as u64;
            }
        }
        RANGE_US as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), 0);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile_us(0.5), 51);
        assert_eq!(h.quantile_us(0.99), 100);
        assert_eq!(h.max_us(), 100);
        h.record(5_000_000);
        assert_eq!(h.quantile_us(0.9999), RANGE_US as u64);
        assert_eq!(h.max_us(), 5_000_000);
        assert_eq!(h.count(), 101);
    }
}
