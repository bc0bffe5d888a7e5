//! Time, injected: retention, expiry and grants read the clock through this
//! trait, so tests move time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since the Unix epoch.
    fn now_unix_ns(&self) -> i64;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ns(&self) -> i64 {
        crate::now_unix_ns()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_unix_ns: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_unix_ns))
    }

    /// Starts at the machine's present time.
    pub fn now() -> ManualClock {
        ManualClock::new(crate::now_unix_ns())
    }

    pub fn set(&self, now_unix_ns: i64) {
        self.0.store(now_unix_ns, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        let ns = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub(crate) const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;
