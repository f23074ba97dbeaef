//! Publications for transient subscribers: a persistent one is sent once the journal write
//! holding this manager's copies of it is durable (a publish whose write failed, repeated,
//! must not reach them twice), a non-persistent one at once. A subscriber whose connection is
//! past [`TRANSIENT_BUFFER_BYTES`] behind misses it, counted and reported before its next one.
//!
//! Invariants: a send waits for at most one write, the first one the event that made it
//! makes (its operation's own), and goes when that write is durable or is dropped with it if
//! it fails; a send no write of its event takes goes when the event ends (nothing of it
//! needed writing).

use std::collections::VecDeque;

use super::*;
use crate::pubsub::TRANSIENT_BUFFER_BYTES;
use crate::record::StoredMessage;

/// A publication, encoded for its subscribers, and the transient subscriptions it goes to.
type Send = (BTreeSet<(u64, u64)>, Bytes);

/// See the module documentation.
#[derive(Default)]
pub(super) struct TransientSends {
    /// Made during this event, for its next write.
    waiting: Vec<Send>,
    /// Per write in flight, by its number among the commits made, what it releases.
    after_write: VecDeque<(u64, Vec<Send>)>,
}

impl Core {
    /// Sends a publication to the transient subscriptions `keys`: once durable here, if
    /// `persistent`, else at once.
    pub(super) fn send_transient(
        &mut self,
        keys: &BTreeSet<(u64, u64)>,
        stored: &StoredMessage<'_>,
        persistent: bool,
    ) {
        if keys.is_empty() {
            return;
        }
        let mut delivery = delivery::delivery_of(stored, 1, None, persistent);
        delivery.trace.push(hopmq::Trace {
            manager: self.name.to_string(),
            at_ms: self.event_now.wall_ms,
        });
        let message = match postcard::to_allocvec(&delivery) {
            Ok(message) => Bytes::from(message),
            Err(error) => {
                error!(%error, "cannot encode a publication for its subscribers");
                return;
            }
        };
        if persistent {
            self.pubsub.transient.waiting.push((keys.clone(), message));
        } else {
            self.send_now(keys, &message);
        }
    }

    /// A write was just made: the sends waiting go when it is durable.
    pub(super) fn transient_with_write(&mut self) {
        if self.pubsub.transient.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.pubsub.transient.waiting);
        let number = self.commits.made_count();
        self.pubsub
            .transient
            .after_write
            .push_back((number, waiting));
    }

    /// Write `number` completed, durable if `durable`: its sends go, or are dropped with it.
    pub(super) fn transient_after_write(&mut self, number: u64, durable: bool) {
        while let Some((waited, _)) = self.pubsub.transient.after_write.front() {
            if *waited > number {
                break;
            }
            let Some((waited, sends)) = self.pubsub.transient.after_write.pop_front() else {
                break;
            };
            if waited == number && durable {
                for (keys, message) in sends {
                    self.send_now(&keys, &message);
                }
            }
        }
    }

    /// The event ends: sends that no write of it took go now.
    pub(super) fn transient_at_event_end(&mut self) {
        for (keys, message) in std::mem::take(&mut self.pubsub.transient.waiting) {
            self.send_now(&keys, &message);
        }
    }

    fn send_now(&mut self, keys: &BTreeSet<(u64, u64)>, message: &Bytes) {
        for &(connection, subscription) in keys {
            self.send_one_transient((connection, subscription), message);
        }
    }

    fn send_one_transient(&mut self, (connection, subscription): (u64, u64), message: &Bytes) {
        let behind = self
            .clients
            .queued_bytes(connection)
            .is_none_or(|bytes| bytes >= TRANSIENT_BUFFER_BYTES);
        let Some(transient) = self
            .pubsub
            .registry
            .transient_mut((connection, subscription))
        else {
            return;
        };
        if !behind && transient.unreported > 0 {
            let missed = ToClient::Frame(ServerFrame::Missed {
                subscription,
                messages: transient.unreported,
            });
            if self.clients.send(connection, missed).is_ok() {
                transient.unreported = 0;
            }
        }
        let event = ToClient::Event {
            subscription,
            message: message.clone(),
        };
        let sent =
            !behind && transient.unreported == 0 && self.clients.send(connection, event).is_ok();
        if sent {
            transient.delivered += 1;
            self.pubsub.totals.transient_delivered += 1;
        } else {
            transient.missed += 1;
            transient.unreported += 1;
            self.pubsub.totals.transient_missed += 1;
        }
    }
}
