//! Topology edits at run time: a file the reload task read again, applied as a diff (links,
//! costs, homes and limits, then routes and the waiting messages), or refused with its reason;
//! `qmgr reload` requests; and plans, which compute the same without applying anything.
//!
//! Invariant: a topology that reaches [`Core::on_topology`] as valid has already been applied
//! to the QUIC driver, so it is never refused here (the two would disagree).

use std::collections::BTreeSet;

use hopmq::protocol::{
    PlannedMove, RefusedTopology, ReloadOutcome, Reply, RouteChange, StrandedMessages,
    TopologyPlan, UnreachableQueue,
};
use hopmq::{ApiError, ManagerName, QueueName};
use hopmq_routing::{Network, RouteTable, Topology, TopologyDiff};
use tracing::{debug, info, warn};

use super::{PLAN_MESSAGES_MAX, Place, place};
use crate::manager::clock::Now;
use crate::manager::core::forward::transmission_queue;
use crate::manager::core::{Core, DEAD_LETTER_QUEUE, HELD_QUEUE};
use crate::manager::delivery;
use crate::manager::{ReloadRequest, TopologyUpdate};

impl Core {
    /// `qmgr reload`: handed to the task that reads the file, answered when it comes back.
    pub(in crate::manager::core) fn request_reload(
        &mut self,
        connection: u64,
        id: u64,
    ) -> Result<Option<Reply>, ApiError> {
        let Some(reloader) = &self.reloader else {
            return Err(ApiError::BadRequest {
                reason: "this manager runs without a topology file; there is nothing to reload"
                    .into(),
            });
        };
        reloader
            .try_send(ReloadRequest { connection, id })
            .map_err(|_| ApiError::BadRequest {
                reason: "a reload is already being read; try again".into(),
            })?;
        Ok(None)
    }

    /// The topology file was read again.
    pub(in crate::manager::core) fn on_topology(&mut self, update: TopologyUpdate, now: Now) {
        let TopologyUpdate {
            file,
            version,
            result,
            requested_by,
        } = update;
        let outcome = match result {
            Err(error) => {
                // The reload task has logged it (as a warning, with the reason).
                debug!(%file, %version, "topology edit refused; the topology in force stays");
                self.routing.refused = Some(RefusedTopology {
                    version,
                    error: error.clone(),
                    at_ms: now.wall_ms,
                });
                Err(ApiError::BadRequest { reason: error })
            }
            Ok(topology) => Ok(Reply::Reloaded(
                self.apply_topology(topology, file, version, now),
            )),
        };
        if let Some(request) = requested_by {
            self.reply(request.connection, request.id, outcome);
        }
    }

    /// Applies a valid topology as a diff: links added and removed, queue homes and limits,
    /// routes recomputed and every waiting message resolved again.
    fn apply_topology(
        &mut self,
        topology: Topology,
        file: String,
        version: String,
        now: Now,
    ) -> ReloadOutcome {
        let diff = TopologyDiff::between(&self.routing.topology, &topology);
        self.routing.file = Some(file);
        self.routing.refused = None;
        if diff.is_empty() {
            self.routing.version = version.clone();
            return ReloadOutcome {
                version,
                ..ReloadOutcome::default()
            };
        }
        let changes: Vec<String> = diff.to_string().lines().map(str::to_owned).collect();
        info!(%version, changes = ?changes, "topology edit applied");
        self.routing.topology = topology;
        self.routing.forget_places();
        self.routing.network = Network::new(&self.routing.topology);
        self.routing.version = version.clone();
        self.routing.applied_at_ms = now.wall_ms;
        self.declare_homed_queues();
        let neighbours: Vec<ManagerName> = self
            .routing
            .topology
            .neighbours(&self.name)
            .cloned()
            .collect();
        for neighbour in &neighbours {
            self.ensure_link(neighbour, now);
        }
        // A link the edit adds is not counted on until heard: its far end may not have the
        // edit yet (and one added back must not reuse what was heard before its removal).
        for (key, _) in &diff.links_added {
            let (a, b) = key.ends();
            let other = if *a == self.name { b } else { a };
            if *a == self.name || *b == self.name {
                if let Some(link) = self.links.get_mut(other) {
                    if link.outbound.is_none() {
                        link.adjacency = crate::channel::adjacency::Adjacency::unheard(now.instant);
                    }
                }
            }
        }
        for key in &diff.links_removed {
            let (a, b) = key.ends();
            let gone = if *a == self.name { b } else { a };
            if *a == self.name || *b == self.name {
                self.close_link(gone, "link removed from the topology");
            }
        }
        let usable: Vec<(ManagerName, bool)> = neighbours
            .iter()
            .map(|n| (n.clone(), self.link_usable(n)))
            .collect();
        self.routing
            .linkstate
            .set_topology(&self.routing.topology, usable);
        self.interest_topology_changed();
        let own = self.routing.linkstate.own();
        self.flood(&[own], None);
        let moved = self.recompute_routes(true, now);
        let stranded = self.stranded(&self.routing.topology);
        for s in &stranded {
            warn!(neighbour = %s.neighbour, in_flight = s.messages, "link removed with messages in flight on it; they are sent again along the new routes, and the link's copies wait for it");
        }
        ReloadOutcome {
            version,
            changes,
            moved,
            stranded,
        }
    }

    /// Makes a local queue of every queue the topology homes here, with its declared depth
    /// limit (or the manager's). Queues no longer declared here keep their messages.
    pub(in crate::manager::core) fn declare_homed_queues(&mut self) {
        let declared: Vec<(QueueName, Option<u64>)> = self
            .routing
            .topology
            .queues()
            .filter(|q| q.home == self.name)
            .map(|q| (q.name.clone(), q.max_depth))
            .collect();
        for (queue, max_depth) in declared {
            let max_depth = max_depth.unwrap_or(self.limits.max_depth);
            self.ensure_slot(&queue).set_max_depth(max_depth);
        }
    }

    /// The routes `table` would change, next hop or cost.
    fn route_changes_to(&self, table: &RouteTable) -> Vec<RouteChange> {
        let mut destinations: BTreeSet<&str> = self
            .routing
            .routes
            .routes
            .iter()
            .map(|r| r.destination.as_str())
            .collect();
        destinations.extend(table.routes.iter().map(|r| r.destination.as_str()));
        destinations
            .into_iter()
            .filter_map(|d| {
                let old = self.routing.routes.route(d);
                let new = table.route(d);
                let hop = |r: Option<&hopmq_routing::Route>| {
                    r.and_then(|r| r.next_hop.as_ref()).map(ToString::to_string)
                };
                let change = RouteChange {
                    destination: d.to_owned(),
                    old_next_hop: hop(old),
                    new_next_hop: hop(new),
                    old_cost: old.and_then(|r| r.cost),
                    new_cost: new.and_then(|r| r.cost),
                };
                (change.old_next_hop != change.new_next_hop || change.old_cost != change.new_cost)
                    .then_some(change)
            })
            .collect()
    }

    /// How many waiting messages `topology` (with `table`) would move, per pair of queues, and
    /// how many a plan left unexamined.
    fn planned_moves(&self, topology: &Topology, table: &RouteTable) -> (Vec<PlannedMove>, u64) {
        let mut moves: std::collections::BTreeMap<(String, String), u64> = Default::default();
        // Each examined message may be a disk read on the core: a plan looks at a sample of
        // a deep backlog, and says how much it left out.
        let mut budget = PLAN_MESSAGES_MAX;
        let mut not_examined = 0u64;
        for queue in self.waiting_queues() {
            let Some(slot) = self.queues.get(&queue) else {
                continue;
            };
            for entry in slot.queue.entries() {
                if budget == 0 {
                    not_examined += 1;
                    continue;
                }
                budget -= 1;
                let Ok(payload) = self.payloads.get(entry, &*self.storage) else {
                    continue;
                };
                let Ok(stored) = delivery::stored(&payload) else {
                    continue;
                };
                let to = match place(stored.destination, &self.name, topology, table) {
                    Place::Here(queue) => queue.to_string(),
                    Place::Via(hop) => transmission_queue(&hop).to_string(),
                    Place::Held(_) => HELD_QUEUE.to_owned(),
                    Place::Dead(_) => DEAD_LETTER_QUEUE.to_owned(),
                };
                if to != queue.as_str() {
                    *moves.entry((queue.to_string(), to)).or_default() += 1;
                }
            }
        }
        let moves = moves
            .into_iter()
            .map(|((from, to), messages)| PlannedMove { from, to, messages })
            .collect();
        (moves, not_examined)
    }

    /// What applying `text` would change here, computed without changing anything.
    pub(in crate::manager::core) fn plan_topology(
        &self,
        file: &str,
        text: &str,
    ) -> Result<Reply, ApiError> {
        let checked = hopmq_routing::parse(text, file).map_err(|e| ApiError::BadRequest {
            reason: e.to_string(),
        })?;
        let topology = checked.topology;
        if topology.manager(self.name.as_str()).is_none() {
            return Err(ApiError::BadRequest {
                reason: format!("{file}: manager `{}` is not declared", self.name),
            });
        }
        let down = self.routing.linkstate.down_links(&topology);
        let network = Network::new(&topology);
        let table = network
            .routes_from(self.name.as_str(), &down)
            .unwrap_or_else(|| RouteTable {
                source: self.name.clone(),
                routes: Vec::new(),
            });
        let routes = self.route_changes_to(&table);
        let (moves, not_examined) = self.planned_moves(&topology, &table);
        let unreachable = topology
            .queues()
            .filter(|q| q.home != self.name)
            .filter_map(|q| {
                let reachable = table
                    .route(q.home.as_str())
                    .is_some_and(|r| r.next_hop.is_some());
                (!reachable).then(|| UnreachableQueue {
                    queue: q.name.to_string(),
                    home: q.home.to_string(),
                    reason: format!("no route from `{}` to `{}`", self.name, q.home),
                })
            })
            .collect();
        let stranded = self.stranded(&topology);
        Ok(Reply::Plan(TopologyPlan {
            version: format!("{:08x}", crc32c::crc32c(text.as_bytes())),
            changes: TopologyDiff::between(&self.routing.topology, &topology)
                .to_string()
                .lines()
                .map(str::to_owned)
                .collect(),
            routes,
            moves,
            unreachable,
            stranded,
            not_examined,
        }))
    }

    /// Links with messages in flight that `topology` does not have.
    fn stranded(&self, topology: &Topology) -> Vec<StrandedMessages> {
        self.links
            .iter()
            .filter(|(neighbour, _)| topology.link(&self.name, neighbour).is_none())
            .filter_map(|(neighbour, link)| {
                let messages = link.in_flight() as u64;
                (messages > 0).then(|| StrandedMessages {
                    neighbour: neighbour.to_string(),
                    messages,
                })
            })
            .collect()
    }
}
