//! One local queue as the core holds it: its messages, its depth limit, and the puts accepted
//! for it whose commit is still in flight.
//!
//! Invariants: `pending` counts the puts accepted into this queue and not yet applied (durable
//! or failed), and `pending_handoffs` those of them promised to a waiting get, so
//! `pending_handoffs <= pending`; both count against `max_depth`, so a queue never holds more
//! than its limit once its commits land.

use crate::queue::local::LocalQueue;

pub(super) struct Slot {
    pub(super) queue: LocalQueue,
    max_depth: u64,
    pending: u64,
    pending_handoffs: u64,
}

impl Slot {
    pub(super) fn new(max_depth: u64) -> Self {
        Self {
            queue: LocalQueue::default(),
            max_depth,
            pending: 0,
            pending_handoffs: 0,
        }
    }

    pub(super) fn max_depth(&self) -> u64 {
        self.max_depth
    }

    pub(super) fn set_max_depth(&mut self, max_depth: u64) {
        self.max_depth = max_depth;
    }

    /// A put into this queue was accepted; `handoff`: it goes straight to a waiting get.
    pub(super) fn accept(&mut self, handoff: bool) {
        self.pending += 1;
        self.pending_handoffs += u64::from(handoff);
        debug_assert!(self.pending_handoffs <= self.pending);
    }

    /// An accepted put's commit completed (either way).
    pub(super) fn settle(&mut self, handoff: bool) {
        self.pending -= 1;
        self.pending_handoffs -= u64::from(handoff);
        debug_assert!(self.pending_handoffs <= self.pending);
    }

    /// Messages this queue holds or is about to: queued, accepted, and `leased` out.
    pub(super) fn held(&self, leased: u64) -> u64 {
        self.queue.depth() + self.pending + leased
    }

    /// Whether every message in or on its way to this queue is promised to a waiting get: a
    /// new waiting get may then be handed the next put directly, ahead of nobody.
    pub(super) fn all_claimed(&self) -> bool {
        self.queue.depth() == 0 && self.pending == self.pending_handoffs
    }

    /// Whether nothing is in or on its way to this queue.
    pub(super) fn is_idle(&self) -> bool {
        self.queue.depth() == 0 && self.pending == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_puts_count_until_settled_and_handoffs_are_claimed() {
        let mut slot = Slot::new(3);
        assert!(slot.is_idle() && slot.all_claimed());
        slot.accept(true);
        assert!(!slot.is_idle());
        assert!(
            slot.all_claimed(),
            "the only put is promised to a waiting get"
        );
        slot.accept(false);
        assert!(!slot.all_claimed());
        assert_eq!(slot.held(1), 3);
        slot.settle(false);
        slot.settle(true);
        assert!(slot.is_idle());
        assert_eq!(slot.held(0), 0);
    }
}
