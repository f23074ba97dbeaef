//! Publish/subscribe as plain state: which subscriptions this manager has, which managers want
//! which topics, and how a publication's remaining destinations split at a hop.
//!
//! A publication travels as one message per link. It carries, in its record's `destination`,
//! the managers it still has to reach (`#alpha,charlie`, see [`fanout`]); each manager it
//! reaches copies it into every matching local subscription and sends one copy per next hop
//! with that hop's share of the set. Routes are deterministic and every manager breaks ties the
//! same way, so the paths from one publisher to its destinations form a tree: no link carries a
//! publication twice while the managers agree on the network.
//!
//! Invariants: every filter in the registry and in the interest passed validation; the
//! advertised interest is exactly the set of filters of this manager's subscriptions, durable
//! and transient.

pub mod fanout;
pub mod interest;
pub mod recent;
pub mod registry;
pub mod retained;

pub use fanout::{Destinations, PUBLICATION_MARK};
pub use interest::Interest;
pub use registry::{Registry, SubscriptionDef, Transient};
pub use retained::{RETAINED_TOPICS_MAX, Retained};

/// The system queue holding this manager's retained publications.
pub const RETAINED_QUEUE: &str = "hopmq.retained";

/// On a retained publication sent to a new subscription: which one it is for (`d:NAME` for a
/// durable subscription, `t:CONNECTION:ID` for a transient one). Only that subscription gets it.
pub const RETAINED_FOR_HEADER: &str = "hopmq.retained_for";

/// On the request a subscriber's manager sends every other manager when a subscription is
/// made: the filter whose retained publications it asks for.
pub const RETAINED_REQUEST_HEADER: &str = "hopmq.retained_request";

/// On a retained publication as a subscriber receives it.
pub const RETAINED_HEADER: &str = "hopmq.retained";

/// Durable subscriptions one manager may hold.
pub const DURABLE_SUBSCRIPTIONS_MAX: usize = 1024;

/// Transient subscriptions one client connection may hold.
pub const TRANSIENT_PER_CONNECTION_MAX: usize = 256;

/// Distinct filters one manager advertises (its subscriptions' filters, durable and
/// transient); a subscription that would add one more is refused.
pub const FILTERS_MAX: usize = 1024;

/// Bytes of publications queued for one client connection past which its transient
/// subscriptions lose publications (counted and reported) instead of queueing more: a
/// subscriber that stops reading never blocks a publisher nor grows the manager's memory.
pub const TRANSIENT_BUFFER_BYTES: usize = 8 * 1024 * 1024;

const _: () = assert!(TRANSIENT_BUFFER_BYTES < crate::manager::outbox::CONNECTION_BYTES_MAX);
