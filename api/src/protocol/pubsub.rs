//! Publish/subscribe's part of the protocol: what `ListSubscriptions` answers, and the header
//! a publication carries.

use serde::{Deserialize, Serialize};

/// The header every publication carries, naming its topic (set by the publisher's manager).
pub const TOPIC_HEADER: &str = "hopmq.topic";

/// A manager's subscriptions, and the interest it knows of the others'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionListing {
    /// Durable subscriptions, by name.
    pub durable: Vec<DurableSubscription>,
    /// Transient subscriptions of the connected clients.
    pub transient: Vec<TransientSubscription>,
    /// The filters of every other manager this one has heard of, by manager.
    pub interest: Vec<Interest>,
}

/// A durable subscription: a local queue fed by a filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableSubscription {
    /// Its name, which is also its queue's.
    pub name: String,
    /// What it matches.
    pub filter: String,
    /// Publications waiting in it (leased ones excluded).
    pub depth: u64,
    /// Its depth limit; past it, publications go to the dead-letter queue.
    pub max_depth: u64,
}

/// A transient subscription: lives with its client's connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransientSubscription {
    /// What it matches.
    pub filter: String,
    /// Publications handed to its client.
    pub delivered: u64,
    /// Publications its client fell too far behind to be sent.
    pub missed: u64,
}

/// The filters another manager's subscriptions use, as its advertisement says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// The manager.
    pub manager: String,
    /// Its filters, sorted.
    pub filters: Vec<String>,
}
