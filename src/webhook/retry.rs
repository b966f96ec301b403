//! When and where the next POST of an event goes, sans-IO: exponential backoff
//! with jitter, failover after repeated failures, dead-lettering after `max_age`.
//! No clock and no randomness inside: callers pass `now` and a jitter sample.
//!
//! Schedule after the n-th consecutive failure (n ≥ 1): nominal delay
//! `retry_initial · 2^(n−1)`, capped at `retry_max`; the actual delay is uniform
//! in `[nominal/2, nominal]` ("equal jitter"), so boxes that lost their backend at
//! the same moment do not come back in lockstep. With the defaults (1 s, 5 min):
//! ≤1 s, ≤2 s, ≤4 s, … ≤256 s, then ≤300 s. POSTs 1..=`failover_after` go to
//! `url`; later ones to `failover_url` when set (Telnyx: "if the primary URL
//! fails, the webhook is sent to the failover URL"). An event whose age since it
//! was queued reaches `max_age` is dead-lettered instead of retried.

use std::time::{Duration, SystemTime};

use crate::config::Webhooks;

/// Retry and delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// Per-POST timeout (connect + response), `[webhooks].timeout`.
    pub timeout: Duration,
    /// Undelivered events older than this (since queued) are dead-lettered,
    /// `[webhooks].max_age`.
    pub max_age: Duration,
    /// Nominal delay after the first failure (default 1 s).
    pub retry_initial: Duration,
    /// Cap of the nominal delay (default 5 min).
    pub retry_max: Duration,
    /// POSTs to `url` before `failover_url` is used (default 3).
    pub failover_after: u32,
    /// Most POSTs in flight at once, over all calls (default 16).
    pub max_in_flight: usize,
    /// Longest the worker sleeps without looking at the outbox, so that events
    /// requeued by `sipbridge webhooks retry-dead` go out soon (default 5 s).
    pub idle_poll: Duration,
    /// Delivered events are deleted this long after delivery (default 7 days;
    /// `Duration::MAX`: never). Pending and dead events are never deleted.
    pub delivered_retention: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(86_400),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            failover_after: 3,
            max_in_flight: 16,
            idle_poll: Duration::from_secs(5),
            delivered_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Which configured URL a POST goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `[webhooks].url`.
    Primary,
    /// `[webhooks].failover_url`.
    Failover,
}

/// What to do after a failed POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time.
    RetryAt(SystemTime),
    /// Out of time: dead-letter the event.
    Dead,
}

impl DeliveryPolicy {
    /// The policy for a `[webhooks]` section (`timeout`, `max_age`,
    /// `retry_initial`, `retry_max`, `failover_after`, `max_in_flight`,
    /// `delivered_retention`; "forever" keeps delivered rows: [`Duration::MAX`]).
    pub fn from_config(w: &Webhooks) -> Self {
        Self {
            timeout: w.timeout,
            max_age: w.max_age,
            retry_initial: w.retry_initial,
            retry_max: w.retry_max,
            failover_after: w.failover_after,
            max_in_flight: w.max_in_flight.max(1),
            delivered_retention: w.delivered_retention.unwrap_or(Duration::MAX),
            ..Self::default()
        }
    }

    /// Target of the next POST of an event that has failed `failures` times
    /// since it was queued, when a failover URL `has_failover`.
    pub fn target(&self, failures: u32, has_failover: bool) -> Target {
        if has_failover && failures >= self.failover_after { Target::Failover } else { Target::Primary }
    }

    /// Nominal (pre-jitter) delay after the `failures`-th consecutive failure
    /// (`failures` ≥ 1; 0 is treated as 1).
    pub fn nominal_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let nanos = self.retry_initial.as_nanos().saturating_mul(u128::from(factor));
        let capped = nanos.min(self.retry_max.as_nanos());
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
    }

    /// Delay after the `failures`-th consecutive failure, with `jitter` a sample
    /// uniform in `[0, 1)`: in `[nominal/2, nominal]`.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let nominal = self.nominal_delay(failures);
        let half = nominal / 2;
        half + (nominal - half).mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// After a POST failed at `now`, leaving the event with `failures` failures
    /// since `queued_at`: retry (when) or dead-letter.
    pub fn after_failure(&self, failures: u32, queued_at: SystemTime, now: SystemTime, jitter: f64) -> Next {
        let age = now.duration_since(queued_at).unwrap_or(Duration::ZERO);
        if age >= self.max_age {
            return Next::Dead;
        }
        Next::RetryAt(now + self.delay(failures, jitter))
    }
}

/// A jitter sample in `[0, 1)` from 64 random bits.
pub fn jitter_from_bits(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + ms)
    }

    #[test]
    fn backoff_doubles_from_one_second_to_the_five_minute_cap() {
        let p = DeliveryPolicy::default();
        let nominal: Vec<u64> = (1..=12).map(|n| p.nominal_delay(n).as_secs()).collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(p.nominal_delay(1_000_000), Duration::from_secs(300), "no overflow");
        assert_eq!(p.nominal_delay(0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_half_to_full_nominal() {
        let p = DeliveryPolicy::default();
        for n in 1..=12 {
            let nominal = p.nominal_delay(n);
            assert_eq!(p.delay(n, 0.0), nominal / 2);
            assert_eq!(p.delay(n, 1.0), nominal);
            for bits in [0u64, 1, 0x5555_5555_5555_5555, u64::MAX / 3, u64::MAX] {
                let d = p.delay(n, jitter_from_bits(bits));
                assert!(d >= nominal / 2 && d <= nominal, "n={n}: {d:?} vs {nominal:?}");
            }
        }
        assert!(jitter_from_bits(u64::MAX) < 1.0);
        assert!(p.delay(3, 0.25) < p.delay(3, 0.75), "jitter spreads retries");
    }

    #[test]
    fn failover_after_three_failures_and_only_if_configured() {
        let p = DeliveryPolicy::default();
        let targets: Vec<Target> = (0..6).map(|f| p.target(f, true)).collect();
        use Target::*;
        assert_eq!(targets, [Primary, Primary, Primary, Failover, Failover, Failover]);
        assert!((0..10).all(|f| p.target(f, false) == Primary));
    }

    #[test]
    fn dead_letter_once_max_age_is_reached() {
        let p = DeliveryPolicy { max_age: Duration::from_secs(60), ..DeliveryPolicy::default() };
        let queued = at(0);
        // A fake clock walks a failing event through its life.
        let mut now = queued;
        let mut failures = 0;
        let mut retries = Vec::new();
        loop {
            failures += 1;
            match p.after_failure(failures, queued, now, 1.0) {
                Next::RetryAt(t) => {
                    retries.push(t.duration_since(now).unwrap().as_secs());
                    now = t;
                }
                Next::Dead => break,
            }
        }
        assert_eq!(retries, [1, 2, 4, 8, 16, 32], "retried at 1+2+4+8+16+32 = 63 s ≥ 60 s, then dead");
        assert_eq!(now.duration_since(queued).unwrap(), Duration::from_secs(63));
        assert_eq!(p.after_failure(1, queued, at(59_999), 0.0), Next::RetryAt(at(60_499)));
        assert_eq!(p.after_failure(1, queued, at(60_000), 0.0), Next::Dead);
        assert_eq!(p.after_failure(1, at(5_000), at(0), 0.0), Next::RetryAt(at(500)), "clock went back: not dead");
    }
}
