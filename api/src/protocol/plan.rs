//! What a topology reload applied, and what a planned one would change.

use serde::{Deserialize, Serialize};

/// What a reload applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// The fingerprint now in force.
    pub version: String,
    /// One line per change (`+`, `-`, `~`); empty when the file had not changed.
    pub changes: Vec<String>,
    /// Waiting messages moved to a new place at once (a deep backlog goes on moving, a pass
    /// at a time, after the reply).
    pub moved: u64,
    /// Messages already handed to links the edit removed: they stay with those channels and
    /// are delivered if the link returns.
    pub stranded: Vec<StrandedMessages>,
}

/// Messages in flight on a link that is no longer in the topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrandedMessages {
    /// The neighbour at the other end.
    pub neighbour: String,
    /// How many.
    pub messages: u64,
}

/// What applying a topology would change at this manager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyPlan {
    /// The fingerprint of the planned contents.
    pub version: String,
    /// One line per change (`+`, `-`, `~`).
    pub changes: Vec<String>,
    /// Routes whose next hop or cost would change, by destination.
    pub routes: Vec<RouteChange>,
    /// Waiting messages that would move, per (from, to) queue.
    pub moves: Vec<PlannedMove>,
    /// Declared queues this manager could no longer reach.
    pub unreachable: Vec<UnreachableQueue>,
    /// Messages in flight on links the edit would remove (they would wait for the link).
    pub stranded: Vec<StrandedMessages>,
    /// Waiting messages the plan did not resolve (it looks at a bounded number), so `moves`
    /// counts only part of a deep backlog.
    pub not_examined: u64,
}

/// A route before and after.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChange {
    /// The destination manager.
    pub destination: String,
    /// Next hop now.
    pub old_next_hop: Option<String>,
    /// Next hop after.
    pub new_next_hop: Option<String>,
    /// Cost now.
    pub old_cost: Option<u64>,
    /// Cost after.
    pub new_cost: Option<u64>,
}

/// Waiting messages that would move from one queue to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// Where they wait now (a transmission queue or `hopmq.held`).
    pub from: String,
    /// Where they would wait (or `DLQ`).
    pub to: String,
    /// How many.
    pub messages: u64,
}

/// A declared queue out of this manager's reach under a planned topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableQueue {
    /// The queue.
    pub queue: String,
    /// Its home in the planned topology.
    pub home: String,
    /// Why it cannot be reached.
    pub reason: String,
}
