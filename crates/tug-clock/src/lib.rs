//! The one clock of tug. Commit times (tug-git), job timestamps, retry times and lease expiry
//! (tug-store) all read it, so a test moves every one of them together, without waiting.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Where the time comes from. Every instance of a store (and every replica) compares lease times
/// written by the others, so their clocks must agree to well within a lease's ttl.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> jiff::Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<jiff::Timestamp>,
}

impl ManualClock {
    pub fn new(start: jiff::Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.saturating_add(by).unwrap_or(jiff::Timestamp::MAX);
    }

    pub fn set(&self, to: jiff::Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start =
            jiff::Timestamp::from_second(1_700_000_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().as_second(), start.as_second() + 90);
        clock.set(start);
        assert_eq!(clock.now(), start);
    }
}
