//! The read budget: a token bucket of bytes per second, on an injectable clock.
//!
//! Hashing competes with the workload for disk and page cache. The bucket
//! holds at most `burst_bytes`; each byte read takes one token and tokens come
//! back at `bytes_per_sec`. A read may run the bucket into debt (a file is not
//! abandoned halfway, which would waste what was read); the debt is paid back
//! before anything else is admitted, so the long-run rate stays within budget.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time as the budget sees it. The hasher sleeps only through [`Clock::sleep`],
/// so tests drive it with [`ManualClock`] instead of waiting.
pub trait Clock: Send + Sync + Debug {
    /// Time elapsed since an arbitrary fixed origin; never goes back.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The monotonic clock and `thread::sleep`.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock that moves only when told to, or when something sleeps on it
/// (the sleep advances it at once). For tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
    slept: Mutex<Duration>,
}

impl ManualClock {
    pub fn advance(&self, d: Duration) {
        if let Ok(mut n) = self.now.lock() {
            *n += d;
        }
    }
    /// Total time spent in `sleep`.
    pub fn slept(&self) -> Duration {
        self.slept.lock().map(|s| *s).unwrap_or_default()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.now.lock().map(|n| *n).unwrap_or_default()
    }
    fn sleep(&self, d: Duration) {
        self.advance(d);
        if let Ok(mut s) = self.slept.lock() {
            *s += d;
        }
    }
}

/// How fast hashing may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBudget {
    /// Sustained read rate. Must be > 0.
    pub bytes_per_sec: u64,
    /// The most that can be read at once after a quiet period.
    pub burst_bytes: u64,
}

const NANOS: u128 = 1_000_000_000;

/// The bucket. Tokens are kept in byte·(1/s) units scaled by 10⁹ so refills
/// at any nanosecond granularity are exact integers (no drift, no lost remainders).
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: u128,
    burst: i128,
    /// Scaled tokens; negative while in debt.
    tokens: i128,
    last: Duration,
}

impl Bucket {
    /// Starts full: a sensor that has just started may hash at once.
    pub(crate) fn new(budget: ReadBudget, now: Duration) -> Bucket {
        let burst = i128::from(budget.burst_bytes).saturating_mul(NANOS as i128);
        Bucket {
            rate: u128::from(budget.bytes_per_sec.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last).as_nanos();
        self.last = self.last.max(now);
        let add = i128::try_from(elapsed.saturating_mul(self.rate)).unwrap_or(i128::MAX);
        self.tokens = self.tokens.saturating_add(add).min(self.burst);
    }

    /// Whether `bytes` may start being read now (a read larger than the burst
    /// needs only a full bucket); if not, how long until it may.
    pub(crate) fn admit(&mut self, bytes: u64, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        let need = i128::from(bytes)
            .saturating_mul(NANOS as i128)
            .min(self.burst);
        if self.tokens >= need {
            return Ok(());
        }
        let missing = u128::try_from(need.saturating_sub(self.tokens)).unwrap_or(u128::MAX);
        // Rounded up, so waiting exactly this long is always enough.
        let nanos = missing.div_ceil(self.rate);
        Err(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// Takes `bytes` tokens, into debt if need be.
    pub(crate) fn charge(&mut self, bytes: u64, now: Duration) {
        self.refill(now);
        self.tokens = self
            .tokens
            .saturating_sub(i128::from(bytes).saturating_mul(NANOS as i128));
    }
}
