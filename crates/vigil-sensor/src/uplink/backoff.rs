//! How long to wait before reconnecting: exponential backoff with full jitter,
//! and the server's retry hint as a floor.
//!
//! Plain doubling makes every sensor cut off at the same moment (a server
//! restart) come back at the same moments too: 250 ms, 750 ms, 1.75 s, … after
//! the cut, all at once. Full jitter draws each wait uniformly from zero to
//! the doubling ceiling, so those sensors spread over the whole interval and
//! the server sees a steady trickle instead of waves. A server that says when
//! to come back (`retry-after-ms` on `RESOURCE_EXHAUSTED` or `UNAVAILABLE`) is
//! obeyed as a floor, with jitter of as much again on top, so that the
//! sensors it refused together do not return together either.

use std::time::Duration;

/// The first ceiling: the wait after a session that ended is at most this.
pub const BASE: Duration = Duration::from_millis(250);
/// The largest ceiling; also the largest hint honoured (a larger one counts
/// as this much: a server cannot park a sensor for longer).
pub const CAP: Duration = Duration::from_secs(60);

/// The metadata key a server's retry hint comes in: milliseconds, ASCII digits.
pub const RETRY_AFTER_KEY: &str = "retry-after-ms";

/// The retry hint a status carries, if any (and if well formed).
pub fn retry_hint(status: &tonic::Status) -> Option<Duration> {
    let ms = status.metadata().get(RETRY_AFTER_KEY)?.to_str().ok()?;
    ms.trim().parse::<u64>().ok().map(Duration::from_millis)
}

/// One reconnect schedule: a sensor keeps one per stream it holds open.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failed attempts since the last reset: the ceiling is `base · 2^attempt`.
    attempt: u32,
    rng: fastrand::Rng,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// `BASE` to `CAP`, seeded from the operating system: two sensors never
    /// share a schedule.
    pub fn new() -> Backoff {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            // No entropy source: the clock and the process still differ between sensors.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        });
        Backoff::with_seed(BASE, CAP, seed)
    }

    /// A schedule from `base` to `cap` with a fixed seed (tests, simulations).
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The ceiling of the next wait: `base · 2^attempt`, at most `cap`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before the next attempt, and one more attempt counted.
    /// Without a hint: uniform in `[0, ceiling]`. With one (at most `cap`):
    /// the hint plus uniform in `[0, max(ceiling, hint)]`.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        // Once at the cap, the count stops mattering; it must not overflow.
        if ceiling < self.cap {
            self.attempt += 1;
        }
        match hint {
            None => self.uniform(ceiling),
            Some(h) => {
                let h = h.min(self.cap);
                h + self.uniform(ceiling.max(h))
            }
        }
    }

    /// After a session that worked: the next wait is short again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Uniform in `[0, max]`, to the nanosecond.
    fn uniform(&mut self, max: Duration) -> Duration {
        let span = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=span))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seeded(seed: u64) -> Backoff {
        Backoff::with_seed(BASE, CAP, seed)
    }

    #[test]
    fn every_wait_stays_under_a_ceiling_that_doubles_up_to_the_cap() {
        for seed in 0..200 {
            let mut b = seeded(seed);
            let mut ceiling = BASE;
            for _ in 0..40 {
                assert_eq!(b.ceiling(), ceiling);
                let d = b.next_delay(None);
                assert!(d <= ceiling, "{d:?} > {ceiling:?}");
                ceiling = (ceiling * 2).min(CAP);
            }
            assert_eq!(b.ceiling(), CAP);
        }
    }

    #[test]
    fn a_thousand_sensors_cut_at_once_spread_over_the_first_interval() {
        // One first wait per sensor, each with its own seed, counted per 25 ms.
        let mut buckets = [0u32; 11];
        for seed in 0..1000u64 {
            let d = seeded(seed.wrapping_mul(0x2545_f491_4f6c_dd1d)).next_delay(None);
            buckets[(d.as_millis() / 25) as usize] += 1;
        }
        // Ten buckets of 25 ms in 250 ms (the last one holds exactly 250 ms
        // only): about 100 each; plain doubling put all 1,000 in one.
        for (i, n) in buckets[..10].iter().enumerate() {
            assert!(
                (50..=150).contains(n),
                "bucket {i}: {n} of 1000: {buckets:?}"
            );
        }
        assert!(buckets[10] <= 5, "{buckets:?}");
    }

    #[test]
    fn waits_at_one_attempt_cover_the_interval_evenly() {
        let mut b = seeded(7);
        for _ in 0..4 {
            b.next_delay(None);
        }
        // The ceiling is now 4 s: sample it (without advancing) 10,000 times.
        let ceiling = b.ceiling();
        assert_eq!(ceiling, Duration::from_secs(4));
        let mut deciles = [0u32; 10];
        let mut sum = Duration::ZERO;
        for _ in 0..10_000 {
            let d = b.uniform(ceiling);
            sum += d;
            deciles[((d.as_secs_f64() / ceiling.as_secs_f64() * 10.0) as usize).min(9)] += 1;
        }
        let mean = sum / 10_000;
        assert!(
            (1900 * MS..=2100 * MS).contains(&mean),
            "mean {mean:?} of U(0, 4 s)"
        );
        for (i, n) in deciles.iter().enumerate() {
            assert!((850..=1150).contains(n), "decile {i}: {n}: {deciles:?}");
        }
    }

    #[test]
    fn a_hint_is_a_floor_with_jitter_of_as_much_again() {
        for seed in 0..500 {
            let mut b = seeded(seed);
            let hint = Duration::from_secs(2);
            let d = b.next_delay(Some(hint));
            // Ceiling 250 ms < hint: jitter is up to the hint itself.
            assert!(d >= hint && d <= hint * 2, "{d:?}");
        }
        // Once the ceiling passes the hint, the jitter follows the ceiling.
        let mut b = seeded(3);
        for _ in 0..8 {
            b.next_delay(None);
        }
        let ceiling = b.ceiling();
        assert_eq!(ceiling, Duration::from_secs(60));
        let d = b.next_delay(Some(Duration::from_secs(1)));
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(61));
        // Hinted waits from many sensors do not all land on the hint.
        let mut distinct: Vec<u128> = (0..100)
            .map(|s| seeded(s).next_delay(Some(500 * MS)).as_millis() / 50)
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 9, "{distinct:?}");
    }

    #[test]
    fn a_hint_past_the_cap_counts_as_the_cap() {
        let mut b = seeded(11);
        let d = b.next_delay(Some(Duration::from_secs(86_400)));
        assert!(d >= CAP && d <= CAP * 2, "{d:?}");
    }

    #[test]
    fn reset_starts_the_schedule_again() {
        let mut b = seeded(5);
        for _ in 0..10 {
            b.next_delay(None);
        }
        assert_eq!(b.ceiling(), CAP);
        b.reset();
        assert_eq!(b.ceiling(), BASE);
        assert!(b.next_delay(None) <= BASE);
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_others_differ() {
        let schedule = |seed| {
            let mut b = seeded(seed);
            (0..12).map(|_| b.next_delay(None)).collect::<Vec<_>>()
        };
        assert_eq!(schedule(42), schedule(42));
        assert_ne!(schedule(42), schedule(43));
    }

    #[test]
    fn a_hint_is_read_from_status_metadata() {
        let mut s = tonic::Status::resource_exhausted("busy");
        assert_eq!(retry_hint(&s), None);
        s.metadata_mut()
            .insert(RETRY_AFTER_KEY, "1500".parse().unwrap());
        assert_eq!(retry_hint(&s), Some(Duration::from_millis(1500)));
        let mut bad = tonic::Status::unavailable("down");
        bad.metadata_mut()
            .insert(RETRY_AFTER_KEY, "soon".parse().unwrap());
        assert_eq!(retry_hint(&bad), None);
    }
}
