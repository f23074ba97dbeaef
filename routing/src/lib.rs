//! hopmq's routing: the topology model, its parsing and validation with precise errors, route
//! computation, structural warnings, diffs between two topologies and the link-state database.
//!
//! Pure: no I/O beyond reading a topology file, no knowledge of queues' contents. Every
//! manager of a network runs the same code on the same file, so everything here is
//! deterministic: results never depend on declaration order, hash seeds or the clock.

#![warn(missing_docs)]

#[cfg(feature = "topology")]
pub mod analysis;
#[cfg(feature = "topology")]
pub mod diagnostic;
#[cfg(feature = "topology")]
pub mod diff;
#[cfg(feature = "topology")]
pub mod linkstate;
pub mod names;
#[cfg(feature = "topology")]
pub mod network;
#[cfg(feature = "topology")]
pub mod parse;
pub mod topic;
#[cfg(feature = "topology")]
pub mod topology;

#[cfg(feature = "topology")]
pub use diagnostic::{Diagnostic, Severity, TopologyError};
#[cfg(feature = "topology")]
pub use diff::TopologyDiff;
#[cfg(feature = "topology")]
pub use linkstate::{LinkStateDb, Lsa, LsaError, Received};
pub use names::{Address, ManagerName, NameError, QueueName};
#[cfg(feature = "topology")]
pub use network::{DownLinks, Network, Path, Route, RouteTable};
#[cfg(feature = "topology")]
pub use parse::{Checked, load, parse};
pub use topic::{Filter, FilterTree, Topic, TopicError};
#[cfg(feature = "topology")]
pub use topology::{Link, LinkKey, Manager, PeerAddress, Queue, Topology};
