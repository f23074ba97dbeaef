//! Waiting gets: the gets that found nothing and wait for a message or their deadline.
//!
//! One owner over four views of the same set, so they can never disagree: by id, by deadline
//! (for the timer), per queue in arrival order (who is served first), and per connection (what
//! ends when a client leaves).
//!
//! Invariants: a waiter is in all four views or in none; ids are never reused within a core's
//! life; each queue's line holds its waiters in the order they are to be served.

use std::collections::{BTreeSet, VecDeque};

use hopmq::QueueName;
use rustc_hash::{FxHashMap, FxHashSet};

/// One waiting get.
#[derive(Debug, Clone)]
pub(crate) struct Waiter {
    pub(super) connection: u64,
    pub(super) request: u64,
    pub(super) queue: QueueName,
    pub(super) max: usize,
    pub(super) correlation_id: Option<String>,
    pub(super) lease_ms: Option<u64>,
    /// On the monotonic clock.
    pub(super) deadline_ms: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    next_id: u64,
    by_id: FxHashMap<u64, Waiter>,
    by_deadline: BTreeSet<(u64, u64)>,
    lines: FxHashMap<QueueName, VecDeque<u64>>,
    by_connection: FxHashMap<u64, FxHashSet<u64>>,
}

impl Waiters {
    /// Adds `waiter` at the end of its queue's line (or at its head: a waiter handed back by a
    /// put that failed keeps its place); returns its id.
    pub(super) fn add(&mut self, waiter: Waiter, at_head: bool) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.by_deadline.insert((waiter.deadline_ms, id));
        self.by_connection
            .entry(waiter.connection)
            .or_default()
            .insert(id);
        let line = self.lines.entry(waiter.queue.clone()).or_default();
        if at_head {
            line.push_front(id);
        } else {
            line.push_back(id);
        }
        self.by_id.insert(id, waiter);
        id
    }

    pub(super) fn get(&self, id: u64) -> Option<&Waiter> {
        self.by_id.get(&id)
    }

    /// Removes waiter `id` from every view.
    pub(super) fn remove(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(waiter.deadline_ms, id));
        if let Some(line) = self.lines.get_mut(&waiter.queue) {
            line.retain(|&w| w != id);
            if line.is_empty() {
                self.lines.remove(&waiter.queue);
            }
        }
        if let Some(ids) = self.by_connection.get_mut(&waiter.connection) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_connection.remove(&waiter.connection);
            }
        }
        Some(waiter)
    }

    /// The waiters of `queue`, in the order they are to be served.
    pub(super) fn line(&self, queue: &QueueName) -> Vec<u64> {
        self.lines
            .get(queue)
            .map_or_else(Vec::new, |line| line.iter().copied().collect())
    }

    /// The first waiter of `queue`'s line that `accepts`.
    pub(super) fn first_in_line(
        &self,
        queue: &QueueName,
        accepts: impl Fn(&Waiter) -> bool,
    ) -> Option<u64> {
        self.lines
            .get(queue)?
            .iter()
            .copied()
            .find(|id| self.by_id.get(id).is_some_and(&accepts))
    }

    /// Waiters whose deadline is at or before `now_ms` (monotonic).
    pub(super) fn due(&self, now_ms: u64) -> Vec<u64> {
        self.by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|&(_, id)| id)
            .collect()
    }

    pub(super) fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|&(at, _)| at)
    }

    /// The waiters of `connection`, in id order.
    pub(super) fn of_connection(&self, connection: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .by_connection
            .get(&connection)
            .map_or_else(Vec::new, |ids| ids.iter().copied().collect());
        ids.sort_unstable();
        ids
    }

    /// How many gets wait.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every waiter, in id order.
    pub(super) fn all(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(connection: u64, queue: &str, deadline_ms: u64) -> Waiter {
        Waiter {
            connection,
            request: 1,
            queue: QueueName::new(queue).expect("name"),
            max: 1,
            correlation_id: None,
            lease_ms: None,
            deadline_ms,
        }
    }

    #[test]
    fn every_view_follows_adds_and_removals() {
        let mut waiters = Waiters::default();
        let q = QueueName::new("q").expect("name");
        let a = waiters.add(waiter(1, "q", 300), false);
        let b = waiters.add(waiter(2, "q", 100), false);
        let c = waiters.add(waiter(1, "q", 200), true);
        assert_eq!(waiters.line(&q), [c, a, b]);
        assert_eq!(waiters.due(200), [b, c]);
        assert_eq!(waiters.next_deadline_ms(), Some(100));
        assert_eq!(waiters.of_connection(1), [a, c]);
        assert_eq!(waiters.first_in_line(&q, |w| w.connection == 2), Some(b));
        assert_eq!(waiters.remove(c).map(|w| w.deadline_ms), Some(200));
        assert!(waiters.remove(c).is_none(), "gone from every view");
        assert_eq!(waiters.line(&q), [a, b]);
        assert_eq!(waiters.due(u64::MAX), [b, a]);
        assert_eq!(waiters.of_connection(1), [a]);
        waiters.remove(a);
        waiters.remove(b);
        assert!(waiters.all().is_empty() && waiters.line(&q).is_empty());
        assert_eq!(waiters.next_deadline_ms(), None);
        assert!(waiters.of_connection(1).is_empty());
    }
}
