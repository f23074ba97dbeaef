//! hopmq's routing: the topology model, its parsing and validation with precise errors, route
//! computation, structural warnings, diffs between two topologies and the link-state database.
//!
//! Pure: no I/O beyond reading a topology file, no knowledge of queues' contents. Every
//! manager of a network runs the same code on the same file, so everything here is
//! deterministic: results never depend on declaration order, hash seeds or the clock.

#![warn(missing_docs)]

pub mod analysis;
pub mod diagnostic;
pub mod diff;
pub mod linkstate;
pub mod names;
pub mod network;
pub mod parse;
pub mod topology;

pub use diagnostic::{Diagnostic, Severity, TopologyError};
pub use diff::TopologyDiff;
pub use linkstate::{LinkStateDb, Lsa, LsaError, Received};
pub use names::{Address, ManagerName, NameError, QueueName};
pub use network::{DownLinks, Network, Path, Route, RouteTable};
pub use parse::{Checked, load, parse};
pub use topology::{Link, LinkKey, Manager, PeerAddress, Queue, Topology};
