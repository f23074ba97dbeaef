//! Routing at run time: the topology in force, how this manager sees the network's links
//! (its own first-hand through heartbeats and operator drains, the others through flooded
//! link-state advertisements), the route table computed from them, and the re-routing of
//! waiting messages whenever that table changes. Topology edits and plans are in [`edits`].
//!
//! Invariants:
//! - the route table is always `routes_from(me)` over the topology in force minus the links
//!   the link-state database reports down; it is recomputed after every input that can change
//!   either (a topology edit, a neighbour dying or coming back, a drain, a new advertisement);
//! - when the table changes, the messages waiting to leave that it may concern (in the
//!   transmission queue of a next hop that lost a destination, or held for lack of a route) are
//!   resolved again, oldest first and [`REROUTE_PASS_MAX`] per pass, and moved atomically in
//!   the journal (`move_message`); a message already given a channel sequence number stays
//!   with its channel, which alone may still deliver it exactly once;
//! - those queues are examined once more when every commit made before the change has been
//!   applied (commits complete in order), which catches messages written to them with the old
//!   table; so is, at each maintenance tick, any transmission queue whose neighbour routing no
//!   longer uses;
//! - link-state advertisements are flooded: one that is new here goes to every other
//!   neighbour, one older than ours is answered with ours, a neighbour that connects gets the
//!   whole database. Flooding is idempotent (the database keeps the newest per origin), so
//!   duplicates and reordering are harmless; a malformed or oversized batch closes the
//!   connection it came on.

mod edits;
mod flooding;

use std::collections::BTreeSet;

use std::time::Duration;

use hopmq::protocol::{NetworkLinkStatus, RefusedTopology, Reply, TopologyStatus};
use hopmq::{Address, ApiError, ManagerName, QueueName};
use hopmq_routing::{DownLinks, LinkStateDb, Lsa, Network, Received, RouteTable, Topology};
use tracing::{error, info, warn};

use super::forward::{held_queue, transmission_neighbour, transmission_queue};
use super::{Core, SYSTEM_QUEUE_PREFIX, conversations, custody};
use crate::channel::adjacency::Change;
use crate::channel::frame::ChannelFrame;
use crate::manager::ChannelDirection;
use crate::manager::clock::Now;
use crate::manager::delivery;
use crate::queue::local::Entry;

/// The routing state the core keeps beside `Core::topology` and `Core::routes`.
pub(super) struct Routing {
    /// The topology in force.
    topology: Topology,
    /// This manager's routes under the topology in force and the down links, computed once:
    /// resolving a put must not run Dijkstra.
    routes: RouteTable,
    network: Network,
    linkstate: LinkStateDb,
    pub(super) dead_interval: Duration,
    drained: BTreeSet<ManagerName>,
    /// The drained links last asked to be saved, while that save is in flight.
    drained_asked: Option<BTreeSet<ManagerName>>,
    file: Option<String>,
    version: String,
    applied_at_ms: u64,
    refused: Option<RefusedTopology>,
    /// Waiting queues to examine again once every commit made before the route change that
    /// named them (`recheck_after`, a value of `Commits::made_count`) has been applied: those
    /// commits may put messages resolved with the old table into them.
    recheck: BTreeSet<QueueName>,
    recheck_after: u64,
    /// Re-routing in progress: per queue, the first seq not yet examined.
    rerouting: std::collections::BTreeMap<QueueName, u64>,
    /// Moved and dead-lettered by the re-routing in progress, logged when it ends.
    rerouted: (u64, u64),
    /// `place` per destination address of arrivals, for the topology and route table in
    /// force: emptied whenever either changes (`forget_places`), and when it reaches
    /// [`PLACES_MAX`], so a neighbour sending to many addresses cannot grow it without bound.
    places: rustc_hash::FxHashMap<Box<str>, Resolved>,
    /// The same for puts (`Core::resolve`): the local queue an address names, or the waiting
    /// queue of another manager's.
    pub(super) puts: rustc_hash::FxHashMap<Box<str>, PutPlace>,
    /// Where stamped messages for each destination manager go from here (see
    /// `Core::stamped_place`), remembered like `places`.
    towards: rustc_hash::FxHashMap<Box<str>, QueueName>,
    /// When this manager's load (its queues and their depth) is next renewed in its
    /// advertisement, monotonic ms.
    load_due_ms: u64,
}

/// How often a manager's advertised load may be renewed: each renewal floods the whole
/// network, and the console's map it is for refreshes every 2 s.
const LOAD_RENEW_MS: u64 = 5_000;

/// Where a put to an address goes, before any check of the moment (the local queue's
/// existence, depths).
#[derive(Debug, Clone)]
pub(super) enum PutPlace {
    /// A queue of this manager.
    Local(QueueName),
    /// A transmission queue, or the held messages, on the way to this manager.
    Waiting(QueueName, ManagerName),
}

impl Routing {
    /// Forgets every remembered resolution: the topology or the route table changed.
    fn forget_places(&mut self) {
        self.places.clear();
        self.puts.clear();
        self.towards.clear();
    }

    /// Where stamped messages for `manager` go, if remembered.
    pub(super) fn towards(&self, manager: &str) -> Option<&QueueName> {
        self.towards.get(manager)
    }

    /// Remembers where stamped messages for `manager` go.
    pub(super) fn remember_towards(&mut self, manager: &str, queue: QueueName) {
        remember(&mut self.towards, manager, queue);
    }

    /// Remembers where puts to `address` go.
    pub(super) fn remember_put(&mut self, address: &str, place: PutPlace) {
        remember(&mut self.puts, address, place);
    }
}

/// Remembers `value` for `address` in `map`, which is emptied first when it holds
/// [`PLACES_MAX`] addresses.
fn remember<V>(map: &mut rustc_hash::FxHashMap<Box<str>, V>, address: &str, value: V) {
    if map.len() >= PLACES_MAX {
        map.clear();
    }
    map.insert(address.into(), value);
}

/// Destinations whose resolution is remembered at most.
const PLACES_MAX: usize = 4096;

/// What `place` said of a destination, as the queue an arrival goes to.
#[derive(Debug, Clone)]
enum Resolved {
    /// A queue of this manager (which may still refuse it: unknown, or full).
    Here(QueueName),
    /// A transmission queue, or the held messages.
    Waiting(QueueName),
    /// The dead-letter queue, with why.
    Dead(String),
}

/// Messages a re-routing pass examines (and at most moves, each move one journal group): a
/// deep backlog is re-routed a pass at a time, between the core's other work, so heartbeats,
/// puts and acks never wait behind it and the journal's request queue never fills.
const REROUTE_PASS_MAX: usize = 1024;

/// Waiting messages a plan resolves at most.
const PLAN_MESSAGES_MAX: usize = 100_000;

impl Routing {
    pub(super) fn new(me: &ManagerName, topology: Topology, now_ms: u64) -> Self {
        let mut linkstate = LinkStateDb::new(me.clone(), now_ms);
        linkstate.set_topology(
            &topology,
            topology.neighbours(me).map(|n| (n.clone(), true)),
        );
        let network = Network::new(&topology);
        let routes = network
            .routes_from(me.as_str(), &DownLinks::new())
            .unwrap_or_else(|| RouteTable {
                source: me.clone(),
                routes: Vec::new(),
            });
        Self {
            topology,
            routes,
            network,
            linkstate,
            dead_interval: Duration::from_millis(crate::config::defaults::LINK_DEAD_INTERVAL_MS),
            drained: BTreeSet::new(),
            drained_asked: None,
            file: None,
            version: String::new(),
            applied_at_ms: now_ms,
            refused: None,
            recheck: BTreeSet::new(),
            recheck_after: 0,
            rerouting: std::collections::BTreeMap::new(),
            rerouted: (0, 0),
            places: rustc_hash::FxHashMap::default(),
            puts: rustc_hash::FxHashMap::default(),
            towards: rustc_hash::FxHashMap::default(),
            load_due_ms: 0,
        }
    }

    /// The topology in force.
    /// What every other manager last advertised it holds, by name.
    pub(super) fn loads(
        &self,
    ) -> std::collections::BTreeMap<String, hopmq_routing::linkstate::Load> {
        self.linkstate
            .loads()
            .map(|(name, load)| (name.to_string(), load))
            .collect()
    }

    /// Sets the filters this manager advertises: its new advertisement if they changed.
    pub(super) fn set_interest(
        &mut self,
        filters: Vec<hopmq_routing::topic::Filter>,
    ) -> Option<Lsa> {
        self.linkstate
            .set_interest(filters)
            .then(|| self.linkstate.own())
    }

    pub(super) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// This manager's route table.
    pub(super) fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The managers a message from `from` to `to` passes now, as this manager sees the
    /// network (`None`: unreachable).
    pub(super) fn path(&self, from: &str, to: &str) -> Option<Vec<ManagerName>> {
        let down = self.linkstate.down_links(&self.topology);
        self.network.path(from, to, &down).map(|path| path.hops)
    }
}

/// Where a message for a destination goes from here, before any local check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// A queue of this manager.
    Here(QueueName),
    /// The transmission queue of this neighbour.
    Via(ManagerName),
    /// The held messages, with why: no route now, or a destination this topology does not
    /// know (another manager's file may be newer: during a rollout, hold rather than drop).
    Held(String),
    /// The dead-letter queue, with why.
    Dead(String),
}

/// Late binding: resolves `destination` with `topology` and `routes`, as seen from `me`.
pub(super) fn place(
    destination: &str,
    me: &ManagerName,
    topology: &Topology,
    routes: &RouteTable,
) -> Place {
    let address: Address = match destination.parse() {
        Ok(address) => address,
        Err(e) => return Place::Dead(format!("bad destination `{destination}`: {e}")),
    };
    let home = match &address.manager {
        Some(manager) => manager.clone(),
        None => match topology.queue(address.queue.as_str()) {
            Some(queue) => queue.home.clone(),
            None => {
                return Place::Held(format!(
                    "queue `{}` has no home in the topology",
                    address.queue
                ));
            }
        },
    };
    if home == *me {
        if address.queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX)
            && !conversations::is_reply_queue(&address.queue)
        {
            return Place::Dead(format!("queue `{}` is reserved", address.queue));
        }
        return Place::Here(address.queue);
    }
    if topology.manager(home.as_str()).is_none() {
        return Place::Held(format!("no manager `{home}` in the topology"));
    }
    match routes.route(home.as_str()).and_then(|r| r.next_hop.clone()) {
        Some(next_hop) => Place::Via(next_hop),
        None => Place::Held(format!("no route to `{home}`")),
    }
}

/// Bytes of advertisements per `LinkState` frame, well inside the frame limit: a large
/// network's database (thousands of managers) goes in several frames.
const LINK_STATE_FRAME_BYTES: usize = 1024 * 1024;

/// `advertisements` cut into frames of at most [`LINK_STATE_FRAME_BYTES`] (estimated from the
/// names' lengths; one advertisement always fits, since a manager's links are bounded by
/// `MANAGERS_MAX` names of at most 64 bytes, and its interest by `INTEREST_BYTES_MAX`).
fn link_state_frames(advertisements: Vec<Lsa>) -> Vec<ChannelFrame> {
    // 16 for the sequence number and lengths, 20 for the load's two numbers.
    let size = |lsa: &Lsa| {
        36 + lsa.origin.as_str().len()
            + lsa
                .links
                .iter()
                .map(|(n, _)| 2 + n.as_str().len())
                .sum::<usize>()
            + lsa.interest.len() * 2
            + hopmq_routing::linkstate::interest_bytes(&lsa.interest)
    };
    let mut frames = Vec::new();
    let mut current: Vec<Lsa> = Vec::new();
    let mut bytes = 0;
    for lsa in advertisements {
        let lsa_bytes = size(&lsa);
        if !current.is_empty() && bytes + lsa_bytes > LINK_STATE_FRAME_BYTES {
            frames.push(ChannelFrame::LinkState(std::mem::take(&mut current)));
            bytes = 0;
        }
        bytes += lsa_bytes;
        current.push(lsa);
    }
    if !current.is_empty() {
        frames.push(ChannelFrame::LinkState(current));
    }
    frames
}

// The largest single advertisement, plus a full frame's worth before it, fits one frame.
const _: () = assert!(
    hopmq_routing::topology::MANAGERS_MAX * (2 + hopmq_routing::names::NAME_BYTES_MAX)
        + 3 * hopmq_routing::linkstate::INTEREST_BYTES_MAX
        + 2 * LINK_STATE_FRAME_BYTES
        < crate::channel::frame::CHANNEL_FRAME_BYTES_MAX
);

impl Core {
    /// Where the topology came from, its fingerprint, how long a silent neighbour stays
    /// alive, and the links an operator drained (kept by the storage: a drain survives
    /// restarts).
    pub fn set_routing(
        &mut self,
        file: Option<String>,
        version: String,
        dead_interval: Duration,
        drained: BTreeSet<ManagerName>,
        now: Now,
    ) {
        if !drained.is_empty() {
            let names: Vec<&str> = drained.iter().map(ManagerName::as_str).collect();
            info!(links = ?names, "links drained by an operator stay out of service");
        }
        self.routing.file = file;
        self.routing.version = version;
        self.routing.dead_interval = dead_interval;
        self.routing.drained = drained;
        self.refresh_routes(now);
    }

    /// Whether routing may use the link to `neighbour`: declared, not drained, and heard
    /// within the dead interval.
    pub(super) fn link_usable(&self, neighbour: &ManagerName) -> bool {
        self.routing.topology.link(&self.name, neighbour).is_some()
            && !self.routing.drained.contains(neighbour)
            && self
                .links
                .get(neighbour)
                .is_some_and(|l| l.adjacency.is_alive())
    }

    /// Whether `neighbour` may be given new messages: routes use its link, it was heard
    /// recently, and it acks what it was given (see [`super::forward::ACK_STALL_MAX`]). Runs
    /// per message: the usable bit is read from the own advertisement, which
    /// `refresh_routes` keeps equal to [`Core::link_usable`] after every change of its inputs.
    pub(super) fn link_takes_new(&self, neighbour: &ManagerName, now: Now) -> bool {
        let now = now.instant;
        self.routing.linkstate.usable(neighbour.as_str())
            && self
                .links
                .get(neighbour)
                .is_some_and(|l| l.adjacency.is_fresh(now) && !l.stalled(now))
    }

    /// Brings this manager's own advertisement up to date with its links; floods it and
    /// recomputes routes if it changed.
    fn refresh_routes(&mut self, now: Now) {
        let neighbours: Vec<(ManagerName, bool)> = self
            .routing
            .topology
            .neighbours(&self.name)
            .map(|n| (n.clone(), self.link_usable(n)))
            .collect();
        let mut changed = false;
        for (neighbour, usable) in &neighbours {
            changed |= self.routing.linkstate.set_local(neighbour, *usable);
        }
        if changed {
            let own = self.routing.linkstate.own();
            self.flood(&[own], None);
        }
        self.recompute_routes(false, now);
    }

    /// Recomputes the route table; if it changed (or `everything`, after a topology edit),
    /// re-resolves the waiting messages it may concern. Returns how many moved.
    fn recompute_routes(&mut self, everything: bool, now: Now) -> u64 {
        let down = self.routing.linkstate.down_links(&self.routing.topology);
        let table = self
            .routing
            .network
            .routes_from(self.name.as_str(), &down)
            .unwrap_or_else(|| RouteTable {
                source: self.name.clone(),
                routes: Vec::new(),
            });
        if table == self.routing.routes && !everything {
            return 0;
        }
        let mut affected: BTreeSet<QueueName> = BTreeSet::new();
        let mut changes = Vec::new();
        for route in &self.routing.routes.routes {
            let new = table.route(route.destination.as_str());
            let new_hop = new.and_then(|r| r.next_hop.as_ref());
            if route.next_hop.as_ref() != new_hop {
                affected.insert(match &route.next_hop {
                    Some(hop) => transmission_queue(hop),
                    None => held_queue(),
                });
                changes.push(format!(
                    "{}: {} -> {}",
                    route.destination,
                    route.next_hop.as_ref().map_or("none", |h| h.as_str()),
                    new_hop.map_or("none", |h| h.as_str()),
                ));
            }
        }
        if !changes.is_empty() {
            info!(changes = ?changes, "routes changed");
        }
        self.routing.routes = table;
        self.routing.forget_places();
        if everything {
            affected = self.waiting_queues();
        }
        self.routing.recheck_after = self.commits.made_count();
        let (moved, _) = self.reexamine(&affected, now);
        self.routing.recheck.extend(affected);
        self.resend_in_flight(now);
        self.resend_kept_off_links(now);
        moved
    }

    /// Every queue of messages waiting to leave.
    fn waiting_queues(&self) -> BTreeSet<QueueName> {
        self.queues
            .keys()
            .filter(|q| q.as_str() == super::HELD_QUEUE || transmission_neighbour(q).is_some())
            .cloned()
            .collect()
    }

    /// Every waiting message, at start: a restart with a new topology re-routes them.
    pub(super) fn reexamine_waiting(&mut self, now: Now) {
        let queues = self.waiting_queues();
        self.reexamine(&queues, now);
    }

    /// Resolves every message waiting in `queues` with the routes in force and moves those
    /// whose place changed, oldest first; a deep queue a pass at a time (see
    /// [`REROUTE_PASS_MAX`]), the rest in later passes. Messages already given to a channel are
    /// not in these queues: they stay with it (they must be resent under their sequence
    /// number). Returns what this first pass moved and dead-lettered.
    pub(super) fn reexamine(&mut self, queues: &BTreeSet<QueueName>, now: Now) -> (u64, u64) {
        for queue in queues {
            // From the start again: the routes changed since any pass in progress.
            self.routing.rerouting.insert(queue.clone(), 0);
        }
        self.continue_rerouting(now)
    }

    /// One pass of re-routing: at most [`REROUTE_PASS_MAX`] messages examined.
    pub(super) fn continue_rerouting(&mut self, now: Now) -> (u64, u64) {
        let mut budget = REROUTE_PASS_MAX;
        let (mut moved, mut dead) = (0u64, 0u64);
        while budget > 0 {
            let Some((queue, from)) = self.routing.rerouting.pop_first() else {
                break;
            };
            let mut entries: Vec<Entry> = match self.queues.get(&queue) {
                Some(slot) => slot
                    .queue
                    .entries()
                    .filter(|e| e.seq >= from)
                    .copied()
                    .collect(),
                None => continue,
            };
            entries.sort_unstable_by_key(|e| e.seq);
            if entries.len() > budget {
                entries.truncate(budget);
                if let Some(last) = entries.last() {
                    self.routing.rerouting.insert(queue.clone(), last.seq + 1);
                }
            }
            budget -= entries.len();
            for entry in entries {
                if let Some(fanned) = self.reroute_publication(&queue, &entry, now) {
                    moved += u64::from(fanned);
                    continue;
                }
                let (target, restamp) = match self.waiting_target(&entry) {
                    Ok(found) => found,
                    Err(reason) => {
                        error!(%queue, seq = entry.seq, %reason, "cannot read a waiting message to route it; it stays");
                        continue;
                    }
                };
                if target.as_ref().is_ok_and(|t| *t == queue) {
                    continue;
                }
                let Some(entry) = self
                    .queues
                    .get_mut(&queue)
                    .and_then(|s| s.queue.remove(entry.seq))
                else {
                    continue;
                };
                match target {
                    Ok(target) => {
                        moved += 1;
                        let headers: Vec<(&str, &str)> =
                            restamp.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        self.move_message(&queue, entry, &target, &headers, now);
                    }
                    Err(reason) => {
                        dead += 1;
                        self.dead_letter(&queue, entry, &reason, now);
                    }
                }
            }
        }
        self.routing.rerouted.0 += moved;
        self.routing.rerouted.1 += dead;
        self.totals.rerouted += moved;
        if self.routing.rerouting.is_empty() && self.routing.rerouted != (0, 0) {
            let (moved, dead) = std::mem::take(&mut self.routing.rerouted);
            info!(
                moved,
                dead_lettered = dead,
                "waiting messages re-routed with the routes in force"
            );
        }
        (moved, dead)
    }

    /// Where a waiting message goes with the routes in force, and the stamp it takes if this
    /// manager is its stamp's destination and it leaves for its queue's new home.
    fn waiting_target(
        &mut self,
        entry: &Entry,
    ) -> Result<(Result<QueueName, String>, custody::Restamp), String> {
        let payload = self
            .payloads
            .get(entry, &*self.storage)
            .map_err(|e| e.to_string())?;
        let stored = delivery::stored(&payload).map_err(|e| e.to_string())?;
        let stamp = crate::custody::stamp_among(&stored.headers, crate::custody::STAMP_HEADER);
        let target = self.stamped_place(stored.destination, stamp);
        let restamp = match (&target, stamp) {
            (Ok(target), Some(stamp))
                if stamp.destination == self.name.as_str() && !custody::stays(target) =>
            {
                self.handover_stamp(stored.destination, stored.priority, stored.expires_at_ms)
            }
            _ => None,
        };
        Ok((target, restamp))
    }

    /// After a commit: a re-routing in progress takes its next pass once the journal has
    /// room for it.
    pub(super) fn after_commit(&mut self, now: Now) {
        if !self.routing.rerouting.is_empty() && self.commits.in_flight() < REROUTE_PASS_MAX {
            self.continue_rerouting(now);
        }
    }

    /// Late binding at arrival (and when re-routing): the queue a message for `destination`
    /// goes to here, or why it can only be dead-lettered.
    pub(super) fn resolve_arrival(&mut self, destination: &str) -> Result<QueueName, String> {
        // Remembered per address: parsing it and looking up its home and route was a tenth of
        // a relay's work per message.
        let resolved = match self.routing.places.get(destination) {
            Some(resolved) => resolved.clone(),
            None => {
                let resolved = match place(
                    destination,
                    &self.name,
                    &self.routing.topology,
                    &self.routing.routes,
                ) {
                    Place::Here(queue) => Resolved::Here(queue),
                    Place::Via(next_hop) => Resolved::Waiting(transmission_queue(&next_hop)),
                    Place::Held(_) => Resolved::Waiting(held_queue()),
                    Place::Dead(reason) => Resolved::Dead(reason),
                };
                remember(&mut self.routing.places, destination, resolved.clone());
                resolved
            }
        };
        match resolved {
            Resolved::Here(queue) => self.local_arrival(queue),
            Resolved::Waiting(queue) => Ok(self.with_slot(queue)),
            Resolved::Dead(reason) => Err(reason),
        }
    }

    /// The local queue an arrival for `queue` goes to, if it may.
    fn local_arrival(&mut self, queue: QueueName) -> Result<QueueName, String> {
        // A reply queue takes every arrival: one nobody waits for is dead-lettered there with
        // why (see `core::conversations`).
        let made_here = conversations::is_reply_queue(&queue);
        if !self.queues.contains_key(&queue) && !self.limits.auto_create_queues && !made_here {
            return Err(format!(
                "unknown queue `{queue}` at its home `{}`",
                self.name
            ));
        }
        let slot = self.ensure_slot(&queue);
        let held = slot.held(0);
        if held >= slot.max_depth() {
            return Err(format!(
                "queue `{queue}` is full (max_depth {})",
                slot.max_depth()
            ));
        }
        Ok(queue)
    }

    /// The queue a message for another manager waits in: its next hop's transmission queue,
    /// or the held messages while there is no route. `None` if `home` is not in the topology.
    pub(super) fn route_to(&mut self, home: &ManagerName) -> Option<QueueName> {
        self.routing.topology.manager(home.as_str())?;
        let queue = match self
            .routing
            .routes
            .route(home.as_str())
            .and_then(|r| r.next_hop.as_ref())
        {
            Some(next_hop) => transmission_queue(next_hop),
            None => held_queue(),
        };
        Some(self.with_slot(queue))
    }

    /// `queue`, once it has a slot (a waiting queue is made on first use).
    fn with_slot(&mut self, queue: QueueName) -> QueueName {
        self.ensure_slot(&queue);
        queue
    }

    /// Periodic routing work: examine again the queues a route change concerned once the
    /// messages written to them with the old table have landed, and any transmission queue
    /// whose neighbour routing does not use.
    pub(super) fn on_routing_maintenance(&mut self, now: Now) {
        self.renew_load(now);
        let mut queues = if self.commits.done() >= self.routing.recheck_after {
            std::mem::take(&mut self.routing.recheck)
        } else {
            BTreeSet::new()
        };
        for queue in self.waiting_queues() {
            if let Some(neighbour) = transmission_neighbour(&queue) {
                let waiting = self.queues.get(&queue).is_some_and(|s| s.queue.depth() > 0);
                let used = self
                    .routing
                    .routes
                    .routes
                    .iter()
                    .any(|r| r.next_hop.as_ref() == Some(&neighbour));
                if waiting && !used && !self.routing.rerouting.contains_key(&queue) {
                    queues.insert(queue);
                }
            }
        }
        if !queues.is_empty() {
            self.reexamine(&queues, now);
        }
    }

    /// Renews this manager's advertised load when due and changed (flooding it), so the other
    /// managers' consoles show its queues within [`LOAD_RENEW_MS`] and a few hops.
    fn renew_load(&mut self, now: Now) {
        if now.mono_ms < self.routing.load_due_ms {
            return;
        }
        self.routing.load_due_ms = now.mono_ms + LOAD_RENEW_MS;
        let load = hopmq_routing::linkstate::Load {
            queues: self.queues.len() as u64,
            depth: self.queues.values().map(|slot| slot.queue.depth()).sum(),
        };
        if self.routing.linkstate.set_load(load) {
            let own = self.routing.linkstate.own();
            self.flood(&[own], None);
        }
    }

    /// The topology part of `qmgr status`.
    pub(super) fn topology_status(&self) -> TopologyStatus {
        TopologyStatus {
            file: self.routing.file.clone(),
            version: self.routing.version.clone(),
            applied_at_ms: self.routing.applied_at_ms,
            managers: self
                .routing
                .topology
                .managers()
                .map(|m| m.name.to_string())
                .collect(),
            refused: self.routing.refused.clone(),
        }
    }

    /// Every link of the topology with its state as this manager knows it.
    pub(super) fn network_status(&self) -> Vec<NetworkLinkStatus> {
        self.routing
            .linkstate
            .reporters(&self.routing.topology)
            .into_iter()
            .map(|(key, reporters)| {
                let (a, b) = key.ends();
                let cost = self.routing.topology.link(a, b).map_or(0, |l| l.cost);
                let mine = if *a == self.name {
                    Some(b)
                } else if *b == self.name {
                    Some(a)
                } else {
                    None
                };
                let state = if reporters.is_empty() {
                    "up"
                } else if mine.is_some_and(|n| self.routing.drained.contains(n)) {
                    "drained"
                } else {
                    "down"
                };
                NetworkLinkStatus {
                    between: (a.to_string(), b.to_string()),
                    cost,
                    state: state.to_owned(),
                    reported_by: reporters.iter().map(ToString::to_string).collect(),
                }
            })
            .collect()
    }

    /// How routing sees the link to `neighbour`, for `qmgr status`.
    pub(super) fn link_routing_state(&self, neighbour: &ManagerName) -> &'static str {
        if self.routing.drained.contains(neighbour) {
            "drained"
        } else if self.link_usable(neighbour) {
            "up"
        } else {
            "down"
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn topology() -> Topology {
        hopmq_routing::parse(
            r#"
            [managers.alpha]
            address = "127.0.0.1:1"
            [managers.bravo]
            address = "127.0.0.1:2"
            [managers.charlie]
            address = "127.0.0.1:3"
            [[links]]
            between = ["alpha", "bravo"]
            [queues.orders]
            home = "bravo"
            [queues.local]
            home = "alpha"
            "#,
            "t.toml",
        )
        .unwrap()
        .topology
    }

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    #[test]
    fn places_by_home_route_and_hold() {
        let topology = topology();
        let me = name("alpha");
        let routes = Network::new(&topology)
            .routes_from("alpha", &Default::default())
            .unwrap();
        let at = |d: &str| place(d, &me, &topology, &routes);
        assert_eq!(at("orders"), Place::Via(name("bravo")));
        assert_eq!(at("x@bravo"), Place::Via(name("bravo")));
        assert_eq!(at("local"), Place::Here(QueueName::new("local").unwrap()));
        assert_eq!(at("x@alpha"), Place::Here(QueueName::new("x").unwrap()));
        // Charlie has no link: no route, held.
        assert!(matches!(at("x@charlie"), Place::Held(_)));
        // Unknown to this topology (another manager's may be newer): held, not dropped.
        assert!(matches!(at("x@zulu"), Place::Held(_)));
        assert!(matches!(at("undeclared"), Place::Held(_)));
        assert!(matches!(at("hopmq.held@alpha"), Place::Dead(_)));
        assert!(matches!(at("bad name!"), Place::Dead(_)));
    }

    #[test]
    fn a_large_database_goes_in_frames_that_fit() {
        let lsa = |i: usize| Lsa {
            origin: name(&format!("m{i:05}")),
            seq: 1,
            links: (0..100)
                .map(|j| (name(&format!("n{j:060}")), true))
                .collect(),
            interest: Vec::new(),
            load: hopmq_routing::linkstate::Load {
                queues: u64::MAX,
                depth: u64::MAX,
            },
        };
        let advertisements: Vec<Lsa> = (0..1000).map(lsa).collect();
        let frames = link_state_frames(advertisements.clone());
        assert!(frames.len() > 1);
        let mut back = Vec::new();
        for frame in frames {
            let encoded = crate::channel::frame::encode(&frame).unwrap();
            assert!(
                encoded.len() <= 2 * LINK_STATE_FRAME_BYTES,
                "{}",
                encoded.len()
            );
            let ChannelFrame::LinkState(part) = frame else {
                unreachable!()
            };
            back.extend(part);
        }
        assert_eq!(back, advertisements);
        assert!(link_state_frames(Vec::new()).is_empty());
    }
}
