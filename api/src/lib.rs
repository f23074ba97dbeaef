//! hopmq's application API: what an application links to talk to the queue manager on its
//! own host, over the manager's local Unix socket.
//!
//! - [`protocol`]: the frames and their codec, shared with the manager (`qmgr`).
//! - [`Message`], [`MessageId`]: messages as applications build and receive them.
//! - [`ApiError`]: the typed errors a manager reports.
//! - [`report`]: delivery reports a put may ask for.
//! - [`Client`]: the async client (tokio); [`blocking::Client`]: the same calls, blocking.
//!
//! This crate must never depend on the daemon (`qmgr`).

#![warn(missing_docs)]

pub mod blocking;
pub mod client;
pub mod error;
pub mod message;
pub mod protocol;
pub mod report;

pub use client::{
    Client, ClientError, Consumer, GetOptions, NotifyHandle, Publication, SOCKET_ENV,
    SOCKET_PATH_DEFAULT, Subscription, TopicSubscription, socket_path_default,
};
pub use error::ApiError;
pub use hopmq_routing::names::{Address, ManagerName, NameError, QueueName};
pub use message::{Message, MessageId, PRIORITY_DEFAULT, PRIORITY_MAX, Trace};
pub use report::{Report, Reports};

/// The crate README's code, compiled as a doctest so that the first lines a user copies keep
/// working.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
