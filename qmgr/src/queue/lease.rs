//! Leases: messages handed out by a leased get and not yet settled.
//!
//! Plain data, time passed in. A lease belongs to the connection that took it; it ends by
//! ack (the message is removed for good), by nack, by its deadline, or by its connection
//! closing (the message returns to its queue, or goes to the dead-letter queue once it has
//! been delivered `max_deliveries` times).
//!
//! Invariants: every lease is in `by_id` and `by_deadline` exactly once; lease ids are never
//! reused within a manager's life; `leased_per_queue` counts exactly the leases per queue.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hopmq::QueueName;

use super::local::Entry;

/// One leased message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Its id, given to the client.
    pub id: u64,
    /// The queue it came from and returns to.
    pub queue: QueueName,
    /// The message, with its delivery count including this delivery.
    pub entry: Entry,
    /// The connection holding it.
    pub connection: u64,
    /// When it returns by itself, in milliseconds since the epoch.
    pub deadline_ms: u64,
}

/// What becomes of a message whose lease ended without an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    /// Back into its queue, in put order.
    Requeue(Entry),
    /// Delivered too often: to the dead-letter queue.
    DeadLetter(Entry),
}

/// Decides a returned message's fate.
pub(crate) fn on_return(entry: Entry, max_deliveries: u32) -> Return {
    if entry.delivery_count >= max_deliveries {
        Return::DeadLetter(entry)
    } else {
        Return::Requeue(entry)
    }
}

/// Why a settle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no lease {0} is held by this connection")]
pub(crate) struct UnknownLease(pub u64);

/// All leases of one manager.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    next_id: u64,
    /// By id, in order: a closed connection's leases return in the order they were granted.
    by_id: BTreeMap<u64, Lease>,
    by_deadline: BTreeSet<(u64, u64)>,
    leased_per_queue: HashMap<QueueName, u64>,
}

impl Leases {
    /// Leases `entry` to `connection` until `now_ms + lease_ms`; returns the lease id.
    pub(crate) fn grant(
        &mut self,
        queue: QueueName,
        entry: Entry,
        connection: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let deadline_ms = now_ms.saturating_add(lease_ms);
        *self.leased_per_queue.entry(queue.clone()).or_default() += 1;
        self.by_deadline.insert((deadline_ms, id));
        self.by_id.insert(
            id,
            Lease {
                id,
                queue,
                entry,
                connection,
                deadline_ms,
            },
        );
        id
    }

    /// Ends lease `id` held by `connection` (for an ack or a nack).
    pub(crate) fn settle(&mut self, id: u64, connection: u64) -> Result<Lease, UnknownLease> {
        match self.by_id.get(&id) {
            Some(lease) if lease.connection == connection => Ok(self.remove(id)),
            _ => Err(UnknownLease(id)),
        }
    }

    /// Lease `id`, if `connection` holds it.
    pub(crate) fn held(&self, id: u64, connection: u64) -> Option<&Lease> {
        self.by_id
            .get(&id)
            .filter(|lease| lease.connection == connection)
    }

    /// Puts back a lease just settled, as it was (its id and deadline): what settled it did
    /// not happen after all.
    pub(crate) fn restore(&mut self, lease: Lease) {
        *self
            .leased_per_queue
            .entry(lease.queue.clone())
            .or_default() += 1;
        self.by_deadline.insert((lease.deadline_ms, lease.id));
        self.by_id.insert(lease.id, lease);
    }

    /// True if lease `id` exists and is held by `connection`.
    pub(crate) fn held_by(&self, id: u64, connection: u64) -> bool {
        self.by_id
            .get(&id)
            .is_some_and(|lease| lease.connection == connection)
    }

    /// Ends every lease whose deadline is at or before `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<Lease> {
        let due: Vec<u64> = self
            .by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|&(_, id)| id)
            .collect();
        due.into_iter().map(|id| self.remove(id)).collect()
    }

    /// Ends every lease of a closed connection.
    pub(crate) fn release_connection(&mut self, connection: u64) -> Vec<Lease> {
        let mine: Vec<u64> = self
            .by_id
            .values()
            .filter(|l| l.connection == connection)
            .map(|l| l.id)
            .collect();
        mine.into_iter().map(|id| self.remove(id)).collect()
    }

    /// The earliest deadline, for the driver's timer.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|&(at, _)| at)
    }

    /// The messages leased out of `queue`, in the order they were leased.
    pub(crate) fn entries_of(&self, queue: &str) -> Vec<Entry> {
        self.by_id
            .values()
            .filter(|lease| lease.queue.as_str() == queue)
            .map(|lease| lease.entry)
            .collect()
    }

    /// Leases held on `queue`.
    pub(crate) fn leased(&self, queue: &str) -> u64 {
        self.leased_per_queue.get(queue).copied().unwrap_or(0)
    }

    fn remove(&mut self, id: u64) -> Lease {
        let lease = self
            .by_id
            .remove(&id)
            .unwrap_or_else(|| unreachable!("lease {id} is known"));
        self.by_deadline.remove(&(lease.deadline_ms, id));
        if let Some(count) = self.leased_per_queue.get_mut(lease.queue.as_str()) {
            *count -= 1;
            if *count == 0 {
                self.leased_per_queue.remove(lease.queue.as_str());
            }
        }
        lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::local::BodyRef;

    fn entry(seq: u64, delivery_count: u32) -> Entry {
        Entry {
            seq,
            body: BodyRef::Memory,
            bytes: 1,
            priority: 4,
            reports: hopmq::Reports::NONE,
            expires_at_ms: u64::MAX,
            put_at_ms: 0,
            correlation: 0,
            delivery_count,
        }
    }

    fn q(name: &str) -> QueueName {
        name.parse().unwrap()
    }

    #[test]
    fn settle_only_by_the_holder() {
        let mut leases = Leases::default();
        let id = leases.grant(q("a"), entry(1, 1), 7, 1000, 500);
        assert_eq!(leases.leased("a"), 1);
        assert_eq!(leases.settle(id, 8), Err(UnknownLease(id)));
        assert_eq!(leases.settle(id, 7).unwrap().entry.seq, 1);
        assert_eq!(leases.settle(id, 7), Err(UnknownLease(id)));
        assert_eq!(leases.leased("a"), 0);
        assert_eq!(leases.next_deadline_ms(), None);
    }

    #[test]
    fn leases_expire_at_their_deadline() {
        let mut leases = Leases::default();
        let early = leases.grant(q("a"), entry(1, 1), 7, 1000, 100);
        let late = leases.grant(q("a"), entry(2, 1), 7, 1000, 300);
        assert_eq!(leases.next_deadline_ms(), Some(1100));
        assert!(leases.expire(1099).is_empty());
        assert_eq!(
            leases.expire(1100).iter().map(|l| l.id).collect::<Vec<_>>(),
            [early]
        );
        assert_eq!(leases.next_deadline_ms(), Some(1300));
        assert_eq!(
            leases.expire(5000).iter().map(|l| l.id).collect::<Vec<_>>(),
            [late]
        );
    }

    #[test]
    fn a_closed_connection_returns_its_leases_only() {
        let mut leases = Leases::default();
        leases.grant(q("a"), entry(1, 1), 1, 0, 100);
        leases.grant(q("b"), entry(2, 1), 2, 0, 100);
        leases.grant(q("a"), entry(3, 1), 1, 0, 100);
        let mut returned: Vec<u64> = leases
            .release_connection(1)
            .iter()
            .map(|l| l.entry.seq)
            .collect();
        returned.sort();
        assert_eq!(returned, [1, 3]);
        assert_eq!(leases.leased("a"), 0);
        assert_eq!(leases.leased("b"), 1);
    }

    #[test]
    fn too_many_deliveries_go_to_the_dead_letter_queue() {
        assert_eq!(on_return(entry(1, 2), 3), Return::Requeue(entry(1, 2)));
        assert_eq!(on_return(entry(1, 3), 3), Return::DeadLetter(entry(1, 3)));
    }
}
