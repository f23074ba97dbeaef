//! Client connections and their subscriptions.
//!
//! One owner over two views of the subscriptions, so they can never disagree: per connection
//! (what ends when a client leaves or unsubscribes) and per queue in subscription order (who is
//! told of a message put there).
//!
//! Invariants: a subscription is in its connection's map if and only if it is in its queue's
//! list; a subscription's connection is connected; subscription ids are never reused within a
//! core's life. Frames to a client go through its bounded [`Outbox`]; this owner only reports
//! a client that stopped reading, and the core decides what that ends.

use hopmq::QueueName;
use rustc_hash::FxHashMap;

use crate::manager::ToClient;
use crate::manager::outbox::{Outbox, Refused};

struct Connection {
    frames: Outbox,
    /// Subscription id to its queue.
    subscriptions: FxHashMap<u64, QueueName>,
}

/// Why a frame did not reach a client's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undelivered {
    /// The connection is gone (closed, or never known).
    Gone,
    /// The client stopped reading: its outbox is full, with this many bytes queued.
    Stalled { queued_bytes: usize },
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Clients {
    connections: FxHashMap<u64, Connection>,
    /// Per queue: (connection, subscription), in subscription order.
    subscribers: FxHashMap<QueueName, Vec<(u64, u64)>>,
    next_subscription: u64,
}

impl Clients {
    pub(super) fn connect(&mut self, connection: u64, frames: Outbox) {
        let connection_state = Connection {
            frames,
            subscriptions: FxHashMap::default(),
        };
        if let Some(old) = self.connections.insert(connection, connection_state) {
            // Connection ids are never reused; if one were, its subscriptions must not survive.
            self.forget_subscriptions(connection, old);
        }
    }

    pub(super) fn is_connected(&self, connection: u64) -> bool {
        self.connections.contains_key(&connection)
    }

    /// Forgets a connection and its subscriptions; false if it was not connected.
    pub(super) fn disconnect(&mut self, connection: u64) -> bool {
        match self.connections.remove(&connection) {
            Some(old) => {
                self.forget_subscriptions(connection, old);
                true
            }
            None => false,
        }
    }

    fn forget_subscriptions(&mut self, connection: u64, old: Connection) {
        for (subscription, queue) in old.subscriptions {
            self.remove_subscriber(&queue, connection, subscription);
        }
    }

    fn remove_subscriber(&mut self, queue: &QueueName, connection: u64, subscription: u64) {
        if let Some(list) = self.subscribers.get_mut(queue) {
            list.retain(|&entry| entry != (connection, subscription));
            if list.is_empty() {
                self.subscribers.remove(queue);
            }
        }
    }

    /// Queues `frame` for `connection`.
    pub(super) fn send(&mut self, connection: u64, frame: ToClient) -> Result<(), Undelivered> {
        let Some(conn) = self.connections.get(&connection) else {
            return Err(Undelivered::Gone);
        };
        match conn.frames.try_send(frame) {
            Ok(()) => Ok(()),
            Err(Refused::Stalled) => Err(Undelivered::Stalled {
                queued_bytes: conn.frames.queued_bytes(),
            }),
            Err(Refused::Closed) => Err(Undelivered::Gone),
        }
    }

    /// A new subscription of `connection` to `queue`; `None` if the connection is gone.
    pub(super) fn subscribe(&mut self, connection: u64, queue: &QueueName) -> Option<u64> {
        let conn = self.connections.get_mut(&connection)?;
        self.next_subscription += 1;
        let subscription = self.next_subscription;
        conn.subscriptions.insert(subscription, queue.clone());
        self.subscribers
            .entry(queue.clone())
            .or_default()
            .push((connection, subscription));
        Some(subscription)
    }

    /// A new subscription id for `connection` that is not tied to a queue (a topic
    /// subscription, kept by the publish/subscribe registry); `None` if the connection is gone.
    pub(super) fn new_subscription_id(&mut self, connection: u64) -> Option<u64> {
        self.connections.get(&connection)?;
        self.next_subscription += 1;
        Some(self.next_subscription)
    }

    /// Bytes queued for `connection`'s writer; `None` if it is gone.
    pub(super) fn queued_bytes(&self, connection: u64) -> Option<usize> {
        Some(self.connections.get(&connection)?.frames.queued_bytes())
    }

    /// Ends one subscription of `connection`; false if it has no such subscription.
    pub(super) fn unsubscribe(&mut self, connection: u64, subscription: u64) -> bool {
        let Some(queue) = self
            .connections
            .get_mut(&connection)
            .and_then(|conn| conn.subscriptions.remove(&subscription))
        else {
            return false;
        };
        self.remove_subscriber(&queue, connection, subscription);
        true
    }

    /// Ends every subscription to `queue` (it was deleted).
    pub(super) fn queue_deleted(&mut self, queue: &QueueName) {
        for (connection, subscription) in self.subscribers.remove(queue).unwrap_or_default() {
            if let Some(conn) = self.connections.get_mut(&connection) {
                conn.subscriptions.remove(&subscription);
            }
        }
    }

    /// The subscriptions to `queue`, in subscription order: (connection, subscription).
    pub(super) fn subscribers(&self, queue: &QueueName) -> &[(u64, u64)] {
        self.subscribers.get(queue).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::outbox;

    fn queue(name: &str) -> QueueName {
        QueueName::new(name).unwrap()
    }

    fn connected(clients: &mut Clients, connection: u64) -> outbox::Outgoing {
        let (frames, outgoing) = outbox::channel();
        clients.connect(connection, frames);
        outgoing
    }

    #[test]
    fn both_views_agree_through_subscribe_unsubscribe_and_disconnect() {
        let mut clients = Clients::default();
        let _one = connected(&mut clients, 1);
        let _two = connected(&mut clients, 2);
        let a = clients.subscribe(1, &queue("a")).unwrap();
        let b = clients.subscribe(2, &queue("a")).unwrap();
        let c = clients.subscribe(1, &queue("b")).unwrap();
        assert_eq!(clients.subscribers(&queue("a")), &[(1, a), (2, b)]);

        assert!(clients.unsubscribe(1, a));
        assert!(
            !clients.unsubscribe(1, a),
            "an ended subscription ends once"
        );
        assert!(
            !clients.unsubscribe(2, c),
            "only its own connection ends a subscription"
        );
        assert_eq!(clients.subscribers(&queue("a")), &[(2, b)]);

        assert!(clients.disconnect(1));
        assert!(!clients.disconnect(1));
        assert!(clients.subscribers(&queue("b")).is_empty());
        assert_eq!(clients.subscribers(&queue("a")), &[(2, b)]);
        assert_eq!(
            clients.subscribe(1, &queue("a")),
            None,
            "a gone client cannot subscribe"
        );
    }

    #[test]
    fn a_deleted_queue_ends_its_subscriptions_in_both_views() {
        let mut clients = Clients::default();
        let _one = connected(&mut clients, 1);
        let a = clients.subscribe(1, &queue("a")).unwrap();
        clients.queue_deleted(&queue("a"));
        assert!(clients.subscribers(&queue("a")).is_empty());
        assert!(!clients.unsubscribe(1, a));
        let again = clients.subscribe(1, &queue("a")).unwrap();
        assert_ne!(again, a, "subscription ids are not reused");
    }

    #[test]
    fn a_client_that_stopped_reading_is_reported_with_its_backlog() {
        let mut clients = Clients::default();
        let (frames, _outgoing) = outbox::bounded(1, usize::MAX);
        clients.connect(7, frames);
        let frame = || ToClient::Event {
            subscription: 1,
            message: bytes::Bytes::from_static(b"body"),
        };
        assert_eq!(clients.send(7, frame()), Ok(()));
        assert!(matches!(
            clients.send(7, frame()),
            Err(Undelivered::Stalled { .. })
        ));
        assert_eq!(clients.send(8, frame()), Err(Undelivered::Gone));
    }
}
