//! The queue manager daemon and its command-line tool, as a library so that every module is
//! reachable from the binary, the tests and the benchmarks alike.
//!
//! The binary (`main.rs`) is only the edge: everything it runs lives here.

pub mod allocator;
pub(crate) mod api_server;
pub mod certs;
pub mod channel;
pub mod cli;
pub mod config;
pub(crate) mod console;
pub mod custody;
pub mod daemon;
#[cfg(test)]
mod error_chains;
pub mod generate;
pub mod manager;
pub(crate) mod metrics;
pub mod mutation;
pub mod pubsub;
pub(crate) mod queue;
pub mod readiness;
pub mod record;
pub(crate) mod reload;
pub mod store;
pub mod tls;
