//! A deterministic simulator of whole hopmq networks, after TigerBeetle's VOPR and
//! FoundationDB's simulation: the production manager core ([`qmgr::manager::Core`]), with its
//! channel sender, receiver and link-state code, driven over simulated disks ([`disk`]), a
//! simulated network and a simulated clock, under random workloads and faults, and checked by
//! [`checker`].
//!
//! Only I/O is simulated: every decision is the production code's. One seed gives one run;
//! the same seed always gives the same run (all randomness comes from [`rng::Rng`], every
//! collection the simulator walks is ordered, and the core reads no clock of its own), which
//! the digest of the run's event trace shows.
//!
//! A run: `steps` steps of workload and faults (puts from every manager to queues homed
//! anywhere, durable subscriptions and publications to them, destructive and leased gets,
//! acks, nacks, expiries, priorities, requests and their replies, delivery reports and the
//! queues they are sent to; crashes at any step with
//! unsynced writes lost or kept, failed syncs, disks lost whole, partitions, connection
//! drops, drains, topology edits),
//! then the faults stop and the run continues until every acknowledged message is delivered
//! or [`LIVENESS_MS`] of simulated time have passed.

pub mod checker;
pub mod disk;
pub mod rng;

mod network;
mod node;
mod pubsub;
mod reports;
mod requests;
mod shape;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use qmgr::manager::{Core, Now};

use crate::checker::Checker;
use crate::network::Network;
use crate::node::Node;
use crate::rng::Rng;
use crate::shape::Shape;

/// Simulated time allowed, once faults stop, for every acknowledged message to arrive.
pub const LIVENESS_MS: u64 = 120_000;
/// Simulated time within which every running manager applies a topology edit.
const ROLLOUT_MS: u64 = 2_000;
/// Simulated time a run goes on once everything arrived, for late duplicates to show.
const LATE_COPY_MS: u64 = 5_000;

/// How long after everything arrived the origins may still keep messages: a few custody
/// timeouts (twice the dead interval by default), for a lost confirmation to be asked again.
const CUSTODY_SETTLE_MS: u64 = 8 * qmgr::config::defaults::LINK_DEAD_INTERVAL_MS;

/// What one run simulates.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run's seed: everything random follows from it.
    pub seed: u64,
    /// Managers in the network.
    pub managers: usize,
    /// Steps of workload and faults before the faults stop.
    pub steps: u64,
    /// Print the event trace as it happens.
    pub trace: bool,
    /// Durable subscriptions and publications join the workload (and their promises the
    /// checks). Off, a seed runs as it did before publish/subscribe existed.
    pub pubsub: bool,
    /// Requesters and servers of a service queue join the workload (and request/reply's
    /// promises the checks). Off, a seed runs as it did before request/reply existed.
    pub requests: bool,
    /// Some puts ask for delivery reports, and each manager's client drains its report queue
    /// (and reports' promises join the checks). Off, a seed runs as it did before reports.
    pub reports: bool,
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// A digest of the whole event trace: equal seeds give equal digests.
    pub digest: u64,
    /// Broken guarantees; empty when the run passed.
    pub violations: Vec<String>,
    /// Messages put (requests sent).
    pub puts: u64,
    /// Publications published (requests sent).
    pub published: u64,
    /// Publication copies delivered for good, from any subscription.
    pub publications_delivered: u64,
    /// Messages delivered for good.
    pub delivered: u64,
    /// Dead letters got.
    pub dead_lettered: u64,
    /// Requests sent (with `--requests`).
    pub requests: u64,
    /// Replies delivered to their requesters.
    pub replies: u64,
    /// Delivery reports that turned up (with `--reports`).
    pub reports: u64,
    /// Crashes (failed syncs included).
    pub crashes: u64,
    /// Events handled by cores (commands, commits, timers).
    pub manager_steps: u64,
    /// Simulated time, in milliseconds.
    pub simulated_ms: u64,
}

/// Runs one simulation.
pub fn run(options: &Options) -> Outcome {
    let mut sim = Sim::new(options);
    for _ in 0..options.steps {
        sim.step(true);
        if !sim.checker.violations().is_empty() {
            break;
        }
    }
    sim.stop_faults();
    sim.conversations_quiet();
    sim.note_stranded();
    let liveness_deadline = sim.now_ms + LIVENESS_MS;
    let mut deadline = liveness_deadline;
    let mut settle_by = 0;
    let mut arrived = false;
    let mut arrived_at = 0;
    let mut kept = sim.kept();
    while sim.checker.violations().is_empty()
        && (sim.now_ms < deadline || (sim.now_ms < settle_by && sim.kept() > 0))
    {
        sim.step(false);
        if arrived && sim.kept() > kept {
            // Newly kept after everything arrived: a copy sent again before a restart or a
            // reconnection, acknowledged once more. Its confirmation may take a custody
            // timeout (the origin asks), so its settling time starts now.
            settle_by = settle_by.max(sim.now_ms + CUSTODY_SETTLE_MS);
        }
        kept = sim.kept();
        if arrived && sim.in_all(Core::held_messages) > 0 {
            // A copy sent again to a destination that lost its disk after confirming the one
            // before it waits there for that one until its hold times out (twice the custody
            // timeout), then is confirmed: settling counts from the hold, within a bound.
            let bound = arrived_at + 2 * CUSTODY_SETTLE_MS;
            settle_by = settle_by.max((sim.now_ms + CUSTODY_SETTLE_MS).min(bound));
        }
        if arrived && sim.checker.outstanding() > 0 {
            // Something owed again: a server answered a request that came late (its reply
            // must still turn up). Only request/reply owes anything new once faults stop.
            arrived = false;
            deadline = liveness_deadline;
        }
        if !arrived && sim.checker.outstanding() == 0 {
            // Everything arrived: a little longer, for a late second copy to show itself and
            // for the destinations' confirmations to reach the origins (a confirmation lost
            // with a connection comes when the origin asks, after its custody timeout).
            arrived = true;
            arrived_at = sim.now_ms;
            deadline = deadline.min(sim.now_ms + LATE_COPY_MS);
            settle_by = sim.now_ms + CUSTODY_SETTLE_MS;
        }
    }
    // Again, now that every disk synced what it was given.
    sim.note_stranded();
    if sim.checker.violations().is_empty() && arrived && sim.kept() > 0 {
        let kept = sim.kept();
        sim.checker.violation(format!(
            "custody never settled: {kept} message(s) still kept by their origins for a \
             confirmation once everything had arrived"
        ));
    }
    if options.trace {
        sim.dump();
    }
    let Sim {
        checker,
        digest,
        puts,
        crashes,
        manager_steps,
        now_ms,
        ..
    } = sim;
    let (delivered, dead_lettered) = (checker.delivered, checker.dead_lettered);
    let published = checker.publications_published();
    let publications_delivered = checker.publications_delivered();
    let (requests, replies) = checker.conversations_counted();
    let reports = checker.reports_received();
    Outcome {
        digest: digest.0,
        violations: checker.finish(),
        puts,
        published,
        publications_delivered,
        delivered,
        dead_lettered,
        requests,
        replies,
        reports,
        crashes,
        manager_steps,
        simulated_ms: now_ms,
    }
}

/// FNV-1a over the event trace (printed too, when tracing).
#[derive(Debug)]
pub(crate) struct Digest(u64, bool);

impl Digest {
    pub(crate) fn add(&mut self, event: &str) {
        if self.1 {
            println!("  {event}");
        }
        for byte in event.bytes().chain([0xff]) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
}

/// The whole simulated world.
pub(crate) struct Sim {
    pub(crate) rng: Rng,
    /// See [`Options::pubsub`].
    pubsub: bool,
    /// See [`Options::reports`].
    pub(crate) reports: bool,
    seed: u64,
    origin: Instant,
    pub(crate) now_ms: u64,
    /// The newest topology file, as the operator last edited it.
    pub(crate) shape: Shape,
    /// Edits made so far.
    edits: u64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) network: Network,
    pub(crate) checker: Checker,
    /// Requesters and servers (see [`requests`]).
    pub(crate) conversations: requests::Conversations,
    pub(crate) digest: Digest,
    pub(crate) puts: u64,
    crashes: u64,
    pub(crate) manager_steps: u64,
}

/// The wall clock at the simulation's start (2026-12-01): stored timestamps look real.
pub(crate) const WALL_START_MS: u64 = 1_796_083_200_000;

impl Sim {
    fn new(options: &Options) -> Self {
        let mut rng = Rng::new(options.seed);
        let managers = options.managers.max(2);
        let shape = Shape::random(&mut rng, managers);
        let mut sim = Sim {
            rng,
            pubsub: options.pubsub,
            reports: options.reports,
            seed: options.seed,
            origin: Instant::now(),
            now_ms: 0,
            nodes: Vec::new(),
            network: Network::default(),
            checker: Checker::default(),
            conversations: requests::Conversations::default(),
            digest: Digest(0xcbf2_9ce4_8422_2325, options.trace),
            puts: 0,
            crashes: 0,
            manager_steps: 0,
            edits: 0,
            shape: shape.clone(),
        };
        sim.note_homes();
        for index in 0..managers {
            let name = hopmq::ManagerName::new(format!("m{index}"))
                .unwrap_or_else(|e| unreachable!("a valid name: {e}"));
            sim.nodes.push(Node::new(name, shape.clone()));
        }
        for index in 0..sim.nodes.len() {
            if options.trace {
                sim.nodes[index].disk.keep_history();
            }
            sim.start(index);
        }
        // Early subscriptions, so that most publications have somewhere to go.
        for index in 0..sim.nodes.len() * usize::from(sim.pubsub) {
            for _ in 0..sim.rng.between(1, 2) {
                sim.subscribe_at(index);
            }
        }
        // Last, so that a seed without requests draws what it drew before.
        if options.requests {
            let home = sim.rng.index(managers);
            sim.conversations = requests::Conversations::new(home);
        }
        sim
    }

    pub(crate) fn now(&self) -> Now {
        Now::at(
            self.origin,
            Duration::from_millis(self.now_ms),
            WALL_START_MS + self.now_ms,
        )
    }

    /// The entropy of manager `index`'s next incarnation.
    fn entropy(&self, index: usize, incarnation: u64) -> u64 {
        self.seed ^ ((index as u64) << 48) ^ (incarnation << 32) ^ 0x5151_5151
    }

    /// One step: time moves on, everything due happens, then one random action.
    fn step(&mut self, faults: bool) {
        self.now_ms += match self.rng.below(100) {
            0..=79 => self.rng.below(3),
            80..=97 => self.rng.between(3, 40),
            _ => self.rng.between(40, 400),
        };
        if self.digest.1 {
            println!("t={}", self.now_ms);
        }
        for index in 0..self.nodes.len() {
            self.due(index);
        }
        self.move_frames();
        self.dial();
        for index in 0..self.nodes.len() {
            self.read_client(index);
        }
        // Every answer is read before anything is sent (see `requests`).
        self.converse(faults);
        if faults {
            self.random_action();
        } else {
            // Faults have stopped: every client takes and settles what is there, in bigger
            // bites, so that a backlog drains well within the liveness bound.
            for index in 0..self.nodes.len() {
                self.get_at(index, 32);
                self.settle_at(index);
            }
        }
    }

    /// One random action of the workload or a fault.
    fn random_action(&mut self) {
        if self.conversations.active() && self.rng.chance(250) {
            return self.random_conversation();
        }
        let action = self.rng.below(1000);
        if !self.pubsub {
            // The workload before publish/subscribe, so that earlier seeds replay as they did.
            match action {
                0..=399 => return self.random_put(),
                400..=749 => return self.random_get(),
                750..=899 => return self.random_settle(),
                900..=948 => {}
                _ => return,
            }
        }
        match action {
            0..=279 => self.random_put(),
            280..=499 => self.random_publish(),
            500..=779 => self.random_get(),
            780..=899 => self.random_settle(),
            900..=905 => self.crash_random(false),
            906..=907 => self.crash_random(true),
            908..=915 => self.partition_random(),
            916..=930 => self.heal_random(),
            931..=940 => self.drop_random_connection(),
            941..=944 => self.drain_random(),
            945..=947 => self.edit_topology(),
            948 => self.lose_random_disk(),
            949..=953 => self.random_subscribe(),
            _ => {}
        }
    }

    /// Prints every manager's queues and links, and where the disks last saw each missing
    /// message (the end of a traced run).
    fn dump(&mut self) {
        for key in self.checker.missing().iter().take(3) {
            println!("missing {key}:");
            for (index, node) in self.nodes.iter().enumerate() {
                let records = node.disk.history();
                let mut seqs = Vec::new();
                for payload in &records {
                    if let Ok(qmgr::record::Record::Enqueue(m)) = qmgr::record::decode(payload) {
                        if m.body == key.as_bytes() {
                            seqs.push(m.seq);
                            println!(
                                "  m{index}: enqueued in {} as seq {} for {}",
                                m.queue, m.seq, m.destination
                            );
                        }
                    }
                }
                for payload in &records {
                    match qmgr::record::decode(payload) {
                        Ok(qmgr::record::Record::Remove(removed)) => {
                            for seq in removed.iter().filter(|s| seqs.contains(s)) {
                                println!("  m{index}: seq {seq} removed");
                            }
                        }
                        Ok(qmgr::record::Record::ChannelSend(send)) => {
                            for seq in send.assigned.iter().filter(|s| seqs.contains(s)) {
                                println!(
                                    "  m{index}: seq {seq} assigned to {} (next {})",
                                    send.to, send.next_seq
                                );
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        for index in 0..self.nodes.len() {
            let (reply, mut status) = tokio::sync::oneshot::channel();
            self.handle(index, qmgr::manager::Command::Snapshot { reply });
            let Ok(status) = status.try_recv() else {
                println!("m{index}: down");
                continue;
            };
            println!("m{index}:");
            for queue in status.queues.iter().filter(|q| q.depth + q.leased > 0) {
                println!(
                    "  queue {} depth {} leased {}",
                    queue.name, queue.depth, queue.leased
                );
            }
            for link in &status.links {
                println!(
                    "  link {} {} routing {} waiting {} in flight {} sent {} acked {} error {:?}",
                    link.neighbour,
                    link.state,
                    link.routing,
                    link.transmission_depth,
                    link.in_flight,
                    link.messages_sent,
                    link.messages_acked,
                    link.last_error
                );
            }
            for route in &status.routes {
                println!("  route {} via {:?}", route.destination, route.next_hop);
            }
            for kept in &status.custody {
                println!(
                    "  custody: {} kept for {} (oldest {:?} ms), {} sent again",
                    kept.messages, kept.destination, kept.oldest_ms, kept.resent
                );
            }
        }
    }

    /// `count` summed over the running managers' cores.
    fn in_all(&self, count: fn(&Core) -> usize) -> usize {
        self.nodes
            .iter()
            .filter_map(|node| node.core.as_ref())
            .map(count)
            .sum()
    }

    /// Messages the origins still keep for a confirmation.
    fn kept(&self) -> usize {
        self.in_all(Core::kept_messages)
    }

    fn stop_faults(&mut self) {
        self.digest.add("faults stop");
        self.network.heal_all();
        for index in 0..self.nodes.len() {
            self.roll_out_now(index);
            if self.nodes[index].core.is_none() {
                self.start(index);
            }
            self.undrain_all(index);
        }
    }

    /// Tells the checker where the newest edit homes each queue.
    fn note_homes(&mut self) {
        for (queue, home) in self.shape.queues() {
            self.checker.homed(&queue, &format!("m{home}"));
        }
    }

    /// A manager's machine is lost with its disk, and replaced by an empty one.
    fn lose_random_disk(&mut self) {
        let index = self.rng.index(self.nodes.len());
        if self.nodes[index].core.is_some() {
            self.crashes += 1;
            self.lose_disk(index);
        }
    }

    fn crash_random(&mut self, failed_sync: bool) {
        let index = self.rng.index(self.nodes.len());
        if self.nodes[index].core.is_some() {
            self.crashes += 1;
            self.crash(index, failed_sync);
        }
    }

    /// The operator edits the topology file; each manager reads the new one a little later
    /// (a rollout host by host), or at its next start.
    fn edit_topology(&mut self) {
        let Some(what) = self.shape.edit(&mut self.rng) else {
            return;
        };
        self.edits += 1;
        self.digest.add(&format!("edit {}: {what}", self.edits));
        if what.contains(" moves to ") {
            self.checker.home_moved(self.now_ms);
            self.note_homes();
        }
        for index in 0..self.nodes.len() {
            let at = self.now_ms + self.rng.between(0, ROLLOUT_MS);
            self.nodes[index].rollout = Some((at, self.shape.clone(), self.edits));
        }
    }

    fn partition_random(&mut self) {
        let links: Vec<(usize, usize)> = self.shape.links().collect();
        if links.is_empty() {
            return;
        }
        let (a, b) = links[self.rng.index(links.len())];
        if self.network.block(a, b) {
            self.digest.add(&format!("partition {a}-{b}"));
            let close_at = self.now_ms + self.rng.between(0, 3_000);
            self.network.close_between(a, b, close_at);
        }
    }

    fn heal_random(&mut self) {
        let blocked: Vec<(usize, usize)> = self.network.blocked().collect();
        if blocked.is_empty() {
            return;
        }
        let (a, b) = blocked[self.rng.index(blocked.len())];
        self.network.unblock(a, b);
        self.digest.add(&format!("heal {a}-{b}"));
    }

    fn drop_random_connection(&mut self) {
        if let Some(id) = self.network.random_connection(&mut self.rng) {
            self.digest.add(&format!("drop connection {id}"));
            self.network.close(id, self.now_ms);
        }
    }

    /// Links of `index` in its own topology file, as neighbour indices.
    pub(crate) fn neighbours(&self, index: usize) -> BTreeSet<usize> {
        self.nodes[index]
            .shape
            .neighbours(index)
            .into_iter()
            .collect()
    }
}
