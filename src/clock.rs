//! The one place that reads the system clock. Everything else takes `now` as a parameter
//! or holds an `Arc<dyn Clock>`, so tests can move time to the second. (The monotonic clock
//! systemd's notify protocol wants is read here too, by [`monotonic_usec`].)

use std::sync::Mutex;

use crate::model::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant, UTC.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// CLOCK_MONOTONIC now, in microseconds: what systemd expects in `MONOTONIC_USEC=` (the
/// notify protocol's reload timestamp). Not wall time; 0 if the clock can't be read.
pub fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => {
            let seconds = u64::try_from(now.tv_sec()).unwrap_or(0);
            let micros = u64::try_from(now.tv_nsec()).unwrap_or(0) / 1_000;
            seconds.saturating_mul(1_000_000).saturating_add(micros)
        }
        Err(_) => 0,
    }
}

/// A clock that only moves when told to; for tests of expiry edges.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock stopped at `now`.
    pub fn new(now: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(now),
        }
    }

    /// Sets the time.
    pub fn set(&self, now: Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Moves the time forward (or back, with a negative duration).
    pub fn advance(&self, by: chrono::Duration) {
        let mut guard = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *guard += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
