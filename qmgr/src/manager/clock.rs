//! Time as the core sees it: given to every handler, never read by it.
//!
//! Two clocks, kept apart on purpose. Deadlines, leases, timers, liveness and ages are
//! measured on the monotonic clock, so a step of the wall clock (NTP, an operator's `date`)
//! neither stretches a blocked get nor expires every lease at once. The wall clock is used
//! only where a timestamp is stored or shown to users: a message's put time, expiry and trace.
//!
//! Invariant: within one manager's life `Now::mono_ms` and `Now::instant` never go back;
//! `wall_ms` may.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One moment, as both clocks read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic, for the channel state machines (which take an [`Instant`]).
    pub instant: Instant,
    /// Monotonic milliseconds since the manager's clock began: deadlines and leases.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch: only for what is stored (put time, expiry, trace).
    pub wall_ms: u64,
}

impl Now {
    /// A moment `elapsed` after `origin`, with the wall clock reading `wall_ms`: for
    /// simulations and tests, which drive both clocks themselves.
    pub fn at(origin: Instant, elapsed: Duration, wall_ms: u64) -> Self {
        Self {
            instant: origin + elapsed,
            mono_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            wall_ms,
        }
    }

    /// This moment plus `elapsed` on both clocks.
    pub fn after(self, elapsed: Duration) -> Self {
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        Self {
            instant: self.instant + elapsed,
            mono_ms: self.mono_ms.saturating_add(ms),
            wall_ms: self.wall_ms.saturating_add(ms),
        }
    }
}

/// The operating system's clocks, read by the run loop only.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose monotonic milliseconds start now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The current moment.
    pub fn now(&self) -> Now {
        Now::at(self.origin, self.origin.elapsed(), wall_ms())
    }

    /// The instant a monotonic deadline falls at.
    pub fn instant_at(&self, mono_ms: u64) -> Instant {
        self.origin + Duration::from_millis(mono_ms)
    }
}

/// Current time in milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What differs between two incarnations of a manager: the start time's nanoseconds, mixed
/// with a per-process hash seed. Only the run loop's caller reads it; the core is given it.
pub(crate) fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_moves_both_clocks_and_at_counts_from_the_origin() {
        let origin = Instant::now();
        let now = Now::at(origin, Duration::from_millis(1_500), 10_000);
        assert_eq!(now.mono_ms, 1_500);
        let later = now.after(Duration::from_millis(250));
        assert_eq!((later.mono_ms, later.wall_ms), (1_750, 10_250));
        assert_eq!(later.instant - origin, Duration::from_millis(1_750));
    }
}
