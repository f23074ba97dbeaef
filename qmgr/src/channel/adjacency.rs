//! Whether a neighbour is alive, as routing sees it: a plain state machine, time passed in.
//!
//! Each end of a link sends a heartbeat ([`HEARTBEAT_INTERVAL`]) on the connection the other
//! end dialled, and any frame on a manager's own (outgoing) connection counts as hearing the
//! neighbour: it proves this manager can send to it, which is what routing needs. A neighbour not heard for the *dead
//! interval* is dead: routes leave the link out until it is heard again. A neighbour is
//! presumed alive when the link is created (at start or when a topology edit adds it), so a
//! network that starts together routes along its declared links at once instead of holding
//! everything until each channel connects; one that never answers is dead a dead interval
//! later.
//!
//! The heartbeat interval is fixed network-wide, not configurable, so two managers with
//! different dead intervals still agree on how often they hear each other.

use std::time::{Duration, Instant};

/// How often each end sends a heartbeat on the connection its neighbour dialled.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);

/// Messages are given to a channel only while its neighbour was heard this recently, so a
/// neighbour that just died takes few messages with it into a window that only its return can
/// settle: within this, its heartbeats are all but certain to have arrived.
pub const FRESH_INTERVAL: Duration = Duration::from_millis(3 * 250);

/// The shortest dead interval allowed: four heartbeats must be missed first.
pub const DEAD_INTERVAL_MIN: Duration = Duration::from_millis(4 * 250);

const _: () = assert!(HEARTBEAT_INTERVAL.as_millis() * 4 == DEAD_INTERVAL_MIN.as_millis());
const _: () = assert!(FRESH_INTERVAL.as_millis() < DEAD_INTERVAL_MIN.as_millis());

/// One neighbour's liveness.
#[derive(Debug, Clone, Copy)]
pub struct Adjacency {
    heard: Instant,
    alive: bool,
    heard_ever: bool,
}

/// A change of liveness, for the caller to act on (advertise, reroute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The neighbour was dead and has been heard.
    Alive,
    /// The neighbour has been silent for the dead interval.
    Dead,
}

impl Adjacency {
    /// A neighbour presumed alive from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            heard: now,
            alive: true,
            heard_ever: false,
        }
    }

    /// A neighbour not counted on until it is heard: a link a topology edit adds, whose far
    /// end may not have the edit yet.
    pub fn unheard(now: Instant) -> Self {
        Self {
            heard: now,
            alive: false,
            heard_ever: false,
        }
    }

    /// Something arrived from the neighbour.
    pub fn heard(&mut self, now: Instant) -> Option<Change> {
        self.heard = self.heard.max(now);
        self.heard_ever = true;
        if self.alive {
            return None;
        }
        self.alive = true;
        Some(Change::Alive)
    }

    /// Time passed: a neighbour silent for `dead_interval` dies.
    pub fn check(&mut self, now: Instant, dead_interval: Duration) -> Option<Change> {
        if self.alive && now.saturating_duration_since(self.heard) >= dead_interval {
            self.alive = false;
            return Some(Change::Dead);
        }
        None
    }

    /// Whether routing may use the link.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// Whether the neighbour was heard within [`FRESH_INTERVAL`] (or has not been heard yet:
    /// a channel only carries messages once its handshake was heard anyway).
    pub fn is_fresh(&self, now: Instant) -> bool {
        self.alive
            && (!self.heard_ever || now.saturating_duration_since(self.heard) < FRESH_INTERVAL)
    }

    /// How long ago the neighbour was last heard; `None` if never.
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        self.heard_ever
            .then(|| now.saturating_duration_since(self.heard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(1);

    #[test]
    fn presumed_alive_until_silent_for_the_dead_interval() {
        let start = Instant::now();
        let mut adjacency = Adjacency::new(start);
        assert!(adjacency.is_alive());
        assert_eq!(adjacency.silent_for(start), None);
        assert_eq!(
            adjacency.check(start + DEAD - Duration::from_millis(1), DEAD),
            None
        );
        assert_eq!(adjacency.check(start + DEAD, DEAD), Some(Change::Dead));
        assert!(!adjacency.is_alive());
        // Reported once.
        assert_eq!(adjacency.check(start + DEAD * 2, DEAD), None);
    }

    #[test]
    fn hearing_keeps_it_alive_and_revives_it() {
        let start = Instant::now();
        let mut adjacency = Adjacency::new(start);
        let mut now = start;
        for _ in 0..10 {
            now += HEARTBEAT_INTERVAL;
            assert_eq!(adjacency.heard(now), None);
            assert_eq!(adjacency.check(now, DEAD), None);
        }
        assert_eq!(adjacency.silent_for(now), Some(Duration::ZERO));
        assert!(adjacency.is_fresh(now));
        assert!(!adjacency.is_fresh(now + FRESH_INTERVAL));
        assert_eq!(adjacency.check(now + DEAD, DEAD), Some(Change::Dead));
        assert_eq!(adjacency.heard(now + DEAD * 3), Some(Change::Alive));
        assert!(adjacency.is_alive());
        assert_eq!(adjacency.check(now + DEAD * 3, DEAD), None);
    }

    #[test]
    fn an_unheard_neighbour_counts_once_heard() {
        let start = Instant::now();
        let mut adjacency = Adjacency::unheard(start);
        assert!(!adjacency.is_alive());
        assert_eq!(adjacency.check(start + DEAD * 2, DEAD), None);
        assert_eq!(adjacency.heard(start + DEAD * 2), Some(Change::Alive));
        assert!(adjacency.is_alive());
    }

    #[test]
    fn a_late_timestamp_never_moves_hearing_back() {
        let start = Instant::now();
        let mut adjacency = Adjacency::new(start + DEAD);
        adjacency.heard(start);
        assert_eq!(adjacency.check(start + DEAD, DEAD), None);
    }
}
