//! Commits in flight: what to do when each completes, and which journal segments they pin.
//!
//! Commits complete in the order they were made (the journal's order), so the continuations
//! wait in a queue and the oldest is the one a completion is for. A commit's records land in
//! the segment active when it was made or a later one; no segment from the oldest such one on
//! may be deleted while it is in flight.
//!
//! Invariants: `per_segment` counts exactly the commits in `in_flight` per segment, with no
//! zero entries; `done <= made`, and `made - done` is the number in flight.

use std::collections::{BTreeMap, VecDeque};

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Commits<C> {
    in_flight: VecDeque<(C, u64)>,
    per_segment: BTreeMap<u64, u64>,
    made: u64,
    done: u64,
}

impl<C> Default for Commits<C> {
    fn default() -> Self {
        Self {
            in_flight: VecDeque::new(),
            per_segment: BTreeMap::new(),
            made: 0,
            done: 0,
        }
    }
}

impl<C> Commits<C> {
    /// A commit was made while `segment` was active; `continuation` runs when it completes.
    pub(super) fn made(&mut self, continuation: C, segment: u64) {
        self.made += 1;
        *self.per_segment.entry(segment).or_default() += 1;
        self.in_flight.push_back((continuation, segment));
    }

    /// The oldest commit completed: its continuation (`None` if none was in flight).
    pub(super) fn completed(&mut self) -> Option<C> {
        let (continuation, segment) = self.in_flight.pop_front()?;
        self.done += 1;
        if let Some(count) = self.per_segment.get_mut(&segment) {
            *count -= 1;
            if *count == 0 {
                self.per_segment.remove(&segment);
            }
        }
        Some(continuation)
    }

    /// The oldest segment a commit in flight may write to.
    pub(super) fn oldest_segment(&self) -> Option<u64> {
        self.per_segment.keys().next().copied()
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Commits made since start: once [`Commits::done`] reaches a value this had, every commit
    /// made before that moment has been applied.
    pub(super) fn made_count(&self) -> u64 {
        self.made
    }

    /// Commits completed since start.
    pub(super) fn done(&self) -> u64 {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_come_in_order_and_release_their_segments() {
        let mut commits = Commits::default();
        commits.made("a", 3);
        commits.made("b", 3);
        commits.made("c", 4);
        assert_eq!(
            (commits.in_flight(), commits.oldest_segment()),
            (3, Some(3))
        );
        assert_eq!(commits.completed(), Some("a"));
        assert_eq!(commits.oldest_segment(), Some(3), "b still pins segment 3");
        assert_eq!(commits.completed(), Some("b"));
        assert_eq!(commits.oldest_segment(), Some(4));
        let made_before = commits.made_count();
        assert_eq!(commits.completed(), Some("c"));
        assert!(commits.done() >= made_before);
        assert_eq!(
            (commits.completed(), commits.oldest_segment()),
            (None, None)
        );
    }
}
