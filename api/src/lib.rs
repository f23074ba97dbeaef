//! hopmq's application API: what an application links to talk to the queue manager on its
//! own host.
//!
//! So far this crate holds the address types an application names queues with; the local
//! protocol and the client join it with the durable local manager. It must never depend on
//! the daemon (`qmgr`).

#![warn(missing_docs)]

pub use hopmq_routing::names::{Address, ManagerName, NameError, QueueName};
