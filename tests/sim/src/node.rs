//! One simulated manager: its core (absent while crashed), its disk, its timers and its one
//! client, which puts, gets, acks and nacks as an application would (and subscribes and
//! publishes, see [`crate::pubsub`]).

use std::collections::BTreeMap;

use hopmq::ManagerName;
use hopmq::protocol::{Operation, OutgoingMessage, Reply, Selector, ServerFrame};
use qmgr::manager::CoreLimits;
use qmgr::manager::{Command, Core, MAINTENANCE_INTERVAL, Recovered, ToClient, TopologyUpdate};

use crate::Sim;
use crate::checker::{REPORT_QUEUE, is_conversation, is_publication};
use crate::disk::{self, Disk};
use crate::pubsub::Wanted;
use crate::shape::Shape;

/// Heartbeats, as the run loop ticks them.
const HEARTBEAT_MS: u64 = qmgr::channel::adjacency::HEARTBEAT_INTERVAL.as_millis() as u64;
/// Maintenance, as the run loop ticks it.
const MAINTENANCE_MS: u64 = MAINTENANCE_INTERVAL.as_millis() as u64;
/// A neighbour silent this long is routed around: the default setting.
const LINK_DEAD_INTERVAL: std::time::Duration =
    std::time::Duration::from_millis(qmgr::config::defaults::LINK_DEAD_INTERVAL_MS);
/// A deferred removal is synced within this long if no synced write carries it first.
const DEFERRED_SYNC_MS: u64 = 20;
/// Requests a client keeps outstanding at most.
const CLIENT_REQUESTS_MAX: usize = 16;

/// What a request in flight was.
#[derive(Debug)]
pub(crate) enum Request {
    Put(Vec<String>),
    Publish(Vec<String>),
    Subscribe(String),
    Get {
        queue: String,
    },
    /// The leases' (queue, key) pairs.
    Ack(Vec<(String, String)>),
    Other,
}

/// The one application connected to a manager.
#[derive(Debug)]
pub(crate) struct Client {
    connection: u64,
    frames: qmgr::manager::outbox::Outgoing,
    next_request: u64,
    requests: BTreeMap<u64, Request>,
    /// Leased messages not yet settled: (lease, queue, key).
    leases: Vec<(u64, String, String)>,
}

/// See the module documentation.
pub(crate) struct Node {
    pub(crate) name: ManagerName,
    /// Its copy of the topology file.
    pub(crate) shape: Shape,
    /// A newer file it reads at the given time: (when, the file, its edit number).
    pub(crate) rollout: Option<(u64, Shape, u64)>,
    pub(crate) core: Option<Core>,
    pub(crate) disk: Disk,
    client: Option<Client>,
    incarnation: u64,
    /// While crashed: when it restarts, and what its disk replays to.
    restart_at: Option<(u64, Recovered)>,
    next_heartbeat_ms: u64,
    next_maintenance_ms: u64,
    sync_at_ms: Option<u64>,
    /// The last client connection's id (requesters and servers take theirs from it too).
    pub(crate) next_connection: u64,
    /// Messages put here so far (for their keys).
    put_count: u64,
    /// Publications published here so far (for their keys).
    pub(crate) publish_count: u64,
    /// Durable subscriptions its client wants, and how many it ever made (for their names).
    pub(crate) subscriptions: Vec<Wanted>,
    pub(crate) subscription_count: u64,
    drained: Vec<ManagerName>,
}

fn limits() -> CoreLimits {
    CoreLimits {
        max_message_bytes: 64 * 1024,
        max_depth: 1_000_000,
        max_deliveries: 5,
        auto_create_queues: true,
        // Small: most gets and forwards read their message back from the disk.
        cache_bytes: 16 * 1024,
        sync: qmgr::config::SyncMode::Always,
        segment_bytes: disk::SEGMENT_BYTES,
        max_hops: 16,
    }
}

impl Node {
    pub(crate) fn new(name: ManagerName, shape: Shape) -> Self {
        Self {
            name,
            shape,
            rollout: None,
            core: None,
            disk: Disk::new(),
            client: None,
            incarnation: 0,
            restart_at: None,
            next_heartbeat_ms: 0,
            next_maintenance_ms: 0,
            sync_at_ms: None,
            next_connection: 0,
            put_count: 0,
            publish_count: 0,
            subscriptions: Vec::new(),
            subscription_count: 0,
            drained: Vec::new(),
        }
    }

    /// Whether its client is connected (its manager runs).
    pub(crate) fn serves(&self) -> bool {
        self.client.is_some()
    }
}

impl Sim {
    /// Starts (or restarts) manager `index` over what its disk holds.
    pub(crate) fn start(&mut self, index: usize) {
        let now = self.now();
        let incarnation = self.nodes[index].incarnation + 1;
        let entropy = self.entropy(index, incarnation);
        let node = &mut self.nodes[index];
        let recovered = match node.restart_at.take() {
            Some((_, recovered)) => recovered,
            None => qmgr::manager::Replay::default().finish(Default::default()),
        };
        node.incarnation = incarnation;
        let core = Core::new(
            node.name.clone(),
            node.shape.topology(),
            limits(),
            recovered,
            node.disk.storage(),
            now,
            entropy,
        );
        node.core = Some(core);
        // As `qmgr run` does: the drains the disk kept stay in force.
        let drained = node.disk.drained();
        if let Some(core) = node.core.as_mut() {
            core.set_routing(None, String::new(), LINK_DEAD_INTERVAL, drained, now);
        }
        node.next_heartbeat_ms = self.now_ms + HEARTBEAT_MS;
        node.next_maintenance_ms = self.now_ms + MAINTENANCE_MS;
        node.next_connection += 1;
        let connection = node.next_connection;
        let (frames, outgoing) = qmgr::manager::outbox::channel();
        node.client = Some(Client {
            connection,
            frames: outgoing,
            next_request: 0,
            requests: BTreeMap::new(),
            leases: Vec::new(),
        });
        self.digest.add(&format!("start {index} #{incarnation}"));
        self.handle(
            index,
            Command::Connected {
                connection,
                frames,
                uid: None,
            },
        );
    }

    /// Kills manager `index` at once (a `kill -9`, or a failed `fdatasync`, which ends the
    /// process the same way): unsynced writes are lost or kept at random.
    pub(crate) fn crash(&mut self, index: usize, failed_sync: bool) {
        let why = if failed_sync {
            "fdatasync failed"
        } else {
            "crash"
        };
        self.digest.add(&format!("{why} {index}"));
        self.checker.restarted(self.nodes[index].name.as_str());
        self.nodes[index].core = None;
        if let Some(client) = self.nodes[index].client.take() {
            for request in client.requests.into_values() {
                match request {
                    Request::Put(keys) => self.checker.put_unanswered(&keys),
                    Request::Publish(keys) => self.checker.publish_unanswered(&keys),
                    Request::Ack(leases) => {
                        let keys: Vec<String> = leases.into_iter().map(|(_, key)| key).collect();
                        self.checker.taken_unanswered(&keys);
                    }
                    Request::Get { queue } => self.checker.get_unanswered(&queue),
                    Request::Subscribe(name) => self.subscription_answered(index, &name, false),
                    _ => {}
                }
            }
        }
        self.conversations_crashed(index);
        let (disk, survived, recovered) = self.nodes[index].disk.crash(&mut self.rng);
        self.checker.crash(&disk.records(), &survived);
        let node = &mut self.nodes[index];
        node.disk = disk;
        node.sync_at_ms = None;
        let restart = self.now_ms + self.rng.between(10, 2_000);
        self.nodes[index].restart_at = Some((restart, recovered));
        let close_at = self.now_ms + self.rng.between(0, 3_000);
        self.network.crashed(index, close_at);
    }

    /// Kills manager `index` and destroys its disk: it restarts empty, as a new machine with
    /// the same name and certificate.
    pub(crate) fn lose_disk(&mut self, index: usize) {
        let name = self.nodes[index].name.as_str().to_owned();
        self.checker.disk_lost(&name);
        self.crash(index, false);
        self.digest.add(&format!("disk lost {index}"));
        let node = &mut self.nodes[index];
        node.disk = node.disk.replaced();
        // Its subscriptions went with the disk; it may make new ones.
        node.subscriptions.clear();
        if let Some((at, _)) = node.restart_at.take() {
            let empty = qmgr::manager::Replay::default().finish(Default::default());
            node.restart_at = Some((at, empty));
        }
    }

    /// Hands `command` to manager `index`'s core, if it runs.
    pub(crate) fn handle(&mut self, index: usize, command: Command) {
        let now = self.now();
        let _span = tracing::info_span!("m", i = index).entered();
        if let Some(core) = self.nodes[index].core.as_mut() {
            core.on_command(command, now);
            self.manager_steps += 1;
            self.schedule_sync(index);
        }
    }

    /// Plans the next `fdatasync` once something is pending: at once under a synced write
    /// (the writer commits whatever has queued), later if only deferred removals wait.
    fn schedule_sync(&mut self, index: usize) {
        let node = &self.nodes[index];
        if node.disk.pending() == 0 {
            return;
        }
        let delay = if node.disk.only_deferred() {
            DEFERRED_SYNC_MS
        } else {
            // Mostly fast; now and then a disk that stalls, as a busy one does.
            match self.rng.below(100) {
                0..=79 => self.rng.between(0, 2),
                80..=94 => self.rng.between(2, 30),
                _ => self.rng.between(30, 300),
            }
        };
        let at = self.now_ms + delay;
        let node = &mut self.nodes[index];
        node.sync_at_ms = Some(node.sync_at_ms.map_or(at, |s| s.min(at)));
    }

    /// Manager `index` reads its new topology file, if one came.
    fn roll_out(&mut self, index: usize) {
        let Some((at, shape, edit)) = self.nodes[index].rollout.take() else {
            return;
        };
        if at > self.now_ms {
            self.nodes[index].rollout = Some((at, shape, edit));
            return;
        }
        self.nodes[index].shape = shape.clone();
        if self.nodes[index].core.is_none() {
            return; // read at its start
        }
        self.digest.add(&format!("m{index} applies edit {edit}"));
        // As the QUIC driver does first: connections of links the file no longer has close.
        let gone: Vec<usize> = (0..self.nodes.len())
            .filter(|&other| other != index && !shape.linked(index, other))
            .collect();
        for other in gone {
            self.network.close_between(index, other, self.now_ms);
        }
        self.handle(
            index,
            Command::Topology(TopologyUpdate {
                file: "topology.toml".into(),
                version: format!("{edit:08x}"),
                result: Ok(shape.topology()),
                requested_by: None,
            }),
        );
    }

    /// Manager `index` reads the newest topology file at once (faults have stopped).
    pub(crate) fn roll_out_now(&mut self, index: usize) {
        if let Some((at, _, _)) = &mut self.nodes[index].rollout {
            *at = self.now_ms;
        }
        self.roll_out(index);
    }

    /// Everything due at manager `index`: a restart, its sync, its timers.
    pub(crate) fn due(&mut self, index: usize) {
        self.roll_out(index);
        if let Some((at, _)) = &self.nodes[index].restart_at {
            if *at <= self.now_ms {
                self.start(index);
            }
            return;
        }
        let now = self.now();
        let now_ms = self.now_ms;
        let _span = tracing::info_span!("m", i = index).entered();
        if self.nodes[index].sync_at_ms.is_some_and(|at| at <= now_ms) {
            self.nodes[index].sync_at_ms = None;
            let outcomes = self.nodes[index].disk.sync();
            for outcome in outcomes {
                if let Some(core) = self.nodes[index].core.as_mut() {
                    core.on_commit(outcome, now);
                    self.manager_steps += 1;
                }
            }
            self.schedule_sync(index);
        }
        let node = &mut self.nodes[index];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let mut handled = 0;
        if node.next_heartbeat_ms <= now_ms {
            node.next_heartbeat_ms = now_ms + HEARTBEAT_MS;
            core.on_heartbeat(now);
            handled += 1;
        }
        if node.next_maintenance_ms <= now_ms {
            node.next_maintenance_ms = now_ms + MAINTENANCE_MS;
            core.on_maintenance(now);
            handled += 1;
        }
        if core.next_deadline_ms().is_some_and(|at| at <= now.mono_ms) {
            core.on_timer(now);
            handled += 1;
        }
        self.manager_steps += handled;
        self.schedule_sync(index);
    }

    /// Sends a request from manager `index`'s client.
    pub(crate) fn request(&mut self, index: usize, operation: Operation, kind: Request) -> bool {
        let Some(client) = self.nodes[index].client.as_mut() else {
            return false;
        };
        // An operator's drain is not held back by the application's requests in flight.
        let operator = matches!(operation, Operation::SetLink { .. });
        if client.requests.len() >= CLIENT_REQUESTS_MAX && !operator {
            return false;
        }
        client.next_request += 1;
        let (id, connection) = (client.next_request, client.connection);
        client.requests.insert(id, kind);
        self.handle(
            index,
            Command::Request {
                connection,
                id,
                operation,
            },
        );
        true
    }

    /// A put of one to three messages from a random manager to a random queue.
    pub(crate) fn random_put(&mut self) {
        let index = self.rng.index(self.nodes.len());
        if self.nodes[index].client.is_none() {
            return;
        }
        let queues: Vec<String> = self.shape.queues().map(|(queue, _)| queue).collect();
        let queue = queues[self.rng.index(queues.len())].clone();
        let count = self.rng.between(1, 3);
        let priority = if self.rng.chance(100) { 5 } else { 0 };
        let mut messages = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..count {
            let node = &mut self.nodes[index];
            node.put_count += 1;
            let key = format!("{}/{}", node.name, node.put_count);
            let persistent = !self.rng.chance(50);
            let ttl_ms = self.rng.chance(30).then(|| self.rng.between(50, 3_000));
            self.checker.put(
                &key,
                (self.nodes[index].name.as_str(), &queue, priority),
                (persistent, ttl_ms.is_some()),
                (self.now_ms, self.homes_agree(&queue)),
            );
            let (headers, reply_to) = self.ask_reports(&key);
            messages.push((
                queue.clone(),
                OutgoingMessage {
                    body: key.clone().into_bytes(),
                    persistent,
                    priority,
                    ttl_ms,
                    headers,
                    reply_to,
                    ..OutgoingMessage::default()
                },
            ));
            keys.push(key);
        }
        self.digest.add(&format!("put {index} {queue} {keys:?}"));
        self.puts += keys.len() as u64;
        if keys.len() > 1 && self.rng.chance(300) {
            // Single calls queued together: the core writes them as one group.
            let singles = messages
                .into_iter()
                .zip(keys)
                .map(|((address, message), key)| {
                    (Operation::Put { address, message }, Request::Put(vec![key]))
                });
            self.requests_in_one_turn(index, singles.collect());
        } else if !self.request(
            index,
            Operation::PutBatch { messages },
            Request::Put(keys.clone()),
        ) {
            // Not sent: the client has too much outstanding.
            self.checker.put_answered(&keys, false);
        }
    }

    /// Sends several requests from manager `index`'s client that reach its core together, as
    /// requests queued while it was busy do.
    fn requests_in_one_turn(&mut self, index: usize, requests: Vec<(Operation, Request)>) {
        let mut commands = Vec::new();
        for (operation, kind) in requests {
            let client = self.nodes[index].client.as_mut();
            let Some(client) = client.filter(|c| c.requests.len() < CLIENT_REQUESTS_MAX) else {
                if let Request::Put(keys) = kind {
                    self.checker.put_answered(&keys, false);
                }
                continue;
            };
            client.next_request += 1;
            let (id, connection) = (client.next_request, client.connection);
            client.requests.insert(id, kind);
            commands.push(Command::Request {
                connection,
                id,
                operation,
            });
        }
        let now = self.now();
        let _span = tracing::info_span!("m", i = index).entered();
        if let Some(core) = self.nodes[index].core.as_mut() {
            core.on_commands(commands, now);
            self.manager_steps += 1;
            self.schedule_sync(index);
        }
    }

    /// Whether every manager's topology (or the one it will start with) homes `queue` where
    /// the newest edit does.
    fn homes_agree(&self, queue: &str) -> bool {
        let home = self.shape.home(queue);
        self.nodes.iter().all(|node| node.shape.home(queue) == home)
    }

    /// A get (destructive or leased) from a queue at a random manager, or its dead-letter
    /// queue.
    pub(crate) fn random_get(&mut self) {
        let index = self.rng.index(self.nodes.len());
        if self.rng.chance(200) {
            self.gets_in_one_turn(index);
        } else {
            self.get_at(index, 5);
        }
    }

    /// Destructive gets of up to three queues at manager `index` that reach its core together
    /// (the core writes their removals as one group).
    fn gets_in_one_turn(&mut self, index: usize) {
        let mut queues: Vec<String> = self.shape.queues().map(|(queue, _)| queue).collect();
        queues.push("DLQ".to_owned());
        let mut gets = Vec::new();
        for _ in 0..3 {
            if queues.is_empty() {
                break;
            }
            let queue = queues.swap_remove(self.rng.index(queues.len()));
            if self.getting(index, &queue) {
                continue;
            }
            let timeout_ms = if self.rng.chance(500) {
                0
            } else {
                self.rng.between(1, 500)
            };
            let max = self.rng.between(1, 5) as u32;
            self.digest
                .add(&format!("get {index} {queue} together {timeout_ms} {max}"));
            let operation = Operation::Get {
                queue: queue.clone(),
                timeout_ms,
                max,
                selector: Selector::default(),
                lease_ms: None,
            };
            gets.push((operation, Request::Get { queue }));
        }
        self.requests_in_one_turn(index, gets);
    }

    /// Whether manager `index`'s client has a get of `queue` outstanding. One get per queue at
    /// a time: answers then come in the order the queue handed its messages out (a
    /// destructive get answers after its commit, a leased one at once).
    fn getting(&self, index: usize, queue: &str) -> bool {
        self.nodes[index].client.as_ref().is_some_and(|c| {
            c.requests
                .values()
                .any(|r| matches!(r, Request::Get { queue: q } if q == queue))
        })
    }

    /// A get of at most `max_most` messages at manager `index`, from a random queue.
    pub(crate) fn get_at(&mut self, index: usize, max_most: u64) {
        // Every queue, not only those homed here now: a queue whose home moved keeps what
        // it held where it was.
        let subscriptions = self.nodes[index]
            .subscriptions
            .iter()
            .filter(|s| s.made == crate::pubsub::Made::Live)
            .map(|s| s.name.clone());
        let homed: Vec<String> = self
            .shape
            .queues()
            .map(|(queue, _)| queue)
            .chain(["DLQ".to_owned()])
            .chain(subscriptions)
            .chain(self.reports.then(|| REPORT_QUEUE.to_owned()))
            .collect();
        let queue = homed[self.rng.index(homed.len())].clone();
        if self.getting(index, &queue) {
            return;
        }
        // Dead letters and reports are taken for good: a nacked one would come back and
        // count twice.
        let leased = queue != "DLQ" && queue != REPORT_QUEUE && self.rng.chance(500);
        let lease_ms = leased.then(|| self.rng.between(100, 3_000));
        let timeout_ms = if self.rng.chance(500) {
            0
        } else {
            self.rng.between(1, 500)
        };
        let max = self.rng.between(1, max_most) as u32;
        self.digest.add(&format!(
            "get {index} {queue} {lease_ms:?} {timeout_ms} {max}"
        ));
        let operation = Operation::Get {
            queue: queue.clone(),
            timeout_ms,
            max,
            selector: Selector::default(),
            lease_ms,
        };
        self.request(index, operation, Request::Get { queue });
    }

    /// Acks or nacks some leases a random manager's client holds.
    pub(crate) fn random_settle(&mut self) {
        let index = self.rng.index(self.nodes.len());
        self.settle_at(index);
    }

    /// Acks or nacks some leases manager `index`'s client holds.
    pub(crate) fn settle_at(&mut self, index: usize) {
        let Some(client) = self.nodes[index].client.as_mut() else {
            return;
        };
        if client.leases.is_empty() {
            return;
        }
        let count = 1 + self.rng.index(client.leases.len());
        let settled: Vec<(u64, String, String)> = client.leases.drain(..count).collect();
        let leases: Vec<u64> = settled.iter().map(|(lease, _, _)| *lease).collect();
        let keys: Vec<(String, String)> = settled
            .into_iter()
            .map(|(_, queue, key)| (queue, key))
            .collect();
        if self.rng.chance(850) {
            self.digest.add(&format!("ack {index} {leases:?}"));
            self.request(index, Operation::Ack { leases }, Request::Ack(keys));
        } else {
            self.digest.add(&format!("nack {index} {leases:?}"));
            self.request(index, Operation::Nack { leases }, Request::Other);
        }
    }

    /// An operator drains a random link of a random manager, or returns one to service.
    pub(crate) fn drain_random(&mut self) {
        let index = self.rng.index(self.nodes.len());
        let neighbours: Vec<usize> = self.neighbours(index).into_iter().collect();
        if neighbours.is_empty() {
            return;
        }
        let neighbour = self.nodes[neighbours[self.rng.index(neighbours.len())]]
            .name
            .clone();
        let drained = !self.nodes[index].drained.contains(&neighbour);
        let operation = Operation::SetLink {
            neighbour: neighbour.to_string(),
            drained,
        };
        // Only a running manager takes the operator's command.
        if !self.request(index, operation, Request::Other) {
            return;
        }
        self.digest
            .add(&format!("drain {index} {neighbour} {drained}"));
        if drained {
            self.nodes[index].drained.push(neighbour);
        } else {
            self.nodes[index].drained.retain(|n| n != &neighbour);
        }
    }

    /// Returns every link manager `index` drained to service.
    pub(crate) fn undrain_all(&mut self, index: usize) {
        let drained = std::mem::take(&mut self.nodes[index].drained);
        for neighbour in drained {
            self.request(
                index,
                Operation::SetLink {
                    neighbour: neighbour.to_string(),
                    drained: false,
                },
                Request::Other,
            );
        }
    }

    /// Reads what manager `index`'s client was sent.
    pub(crate) fn read_client(&mut self, index: usize) {
        loop {
            let Some(client) = self.nodes[index].client.as_mut() else {
                return;
            };
            let Ok(item) = client.frames.try_recv() else {
                return;
            };
            // The simulated clients subscribe to nothing.
            let frame = match reply_frame(item) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(violation) => {
                    self.checker.violation(violation);
                    continue;
                }
            };
            let ServerFrame::Reply { id, result } = frame else {
                continue;
            };
            let Some(request) = client.requests.remove(&id) else {
                continue;
            };
            self.digest
                .add(&format!("reply {index} {id} {}", summary(&result)));
            self.on_reply(index, request, result);
        }
    }

    fn on_reply(&mut self, index: usize, request: Request, result: Result<Reply, hopmq::ApiError>) {
        match (request, result) {
            (Request::Put(keys), result) => {
                if let Ok(Reply::Put(ids)) = &result {
                    for (key, id) in keys.iter().zip(ids) {
                        self.checker.message_id(key, &id.to_string());
                    }
                }
                self.checker.put_answered(&keys, result.is_ok());
            }
            (Request::Publish(keys), result) => self.publish_answered(&keys, &result),
            (Request::Subscribe(name), result) => {
                let done = matches!(result, Ok(Reply::Done));
                self.subscription_answered(index, &name, done);
            }
            (Request::Get { queue }, Ok(Reply::Messages(deliveries))) => {
                for delivery in deliveries {
                    self.on_delivery(index, &queue, delivery);
                }
            }
            (Request::Ack(keys), Ok(Reply::Done)) => {
                for (queue, key) in &keys {
                    if is_publication(key) {
                        self.checker.publication_delivered(key, queue);
                    } else {
                        self.checker.delivered(key);
                    }
                }
            }
            _ => {}
        }
    }

    /// One message a get from `queue` at manager `index` handed out.
    fn on_delivery(&mut self, index: usize, queue: &str, delivery: hopmq::protocol::Delivery) {
        if self.report_delivery(queue, &delivery) {
            return;
        }
        let key = String::from_utf8_lossy(&delivery.body).into_owned();
        self.checker.message_id(&key, &delivery.id.to_string());
        let publication = is_publication(&key);
        if queue == "DLQ" {
            let reason = delivery.headers.get("hopmq.dead_letter_reason");
            let reason = reason.map(String::as_str);
            let unordered = delivery.headers.contains_key("hopmq.unordered");
            if is_conversation(&key) {
                self.checker.conversation_dead_letter(&key, reason);
            } else if publication {
                let from = delivery.headers.get("hopmq.dead_letter_queue");
                let from = from.map_or("", String::as_str);
                self.checker
                    .publication_dead_letter(&key, (reason, from), unordered);
            } else {
                self.checker.dead_letter(&key, reason, unordered);
                let manager = self.nodes[index].name.to_string();
                self.checker.report_dead_letter_at(&key, &manager);
            }
            return;
        }
        if publication {
            let unordered = delivery.headers.contains_key("hopmq.unordered");
            self.checker.publication_handed_out(&key, queue, unordered);
        } else {
            let unordered = delivery.headers.contains_key("hopmq.unordered");
            self.checker.handed_out(&key, unordered, self.now_ms);
        }
        match delivery.lease {
            Some(lease) => {
                if let Some(client) = self.nodes[index].client.as_mut() {
                    client.leases.push((lease, queue.to_owned(), key));
                }
            }
            None if publication => self.checker.publication_delivered(&key, queue),
            None => self.checker.delivered(&key),
        }
    }
}

fn summary(result: &Result<Reply, hopmq::ApiError>) -> String {
    match result {
        Ok(Reply::Messages(messages)) => {
            let keys: Vec<String> = messages
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect();
            format!("messages {keys:?}")
        }
        Ok(Reply::Put(ids)) => format!("put {}", ids.len()),
        Ok(other) => format!("{other:?}").chars().take(40).collect(),
        Err(error) => format!("error {error}"),
    }
}

/// The frame a simulated client reads in `item`: `None` for an event (they act on replies
/// only), or why it is a violation (bytes that do not decode).
pub(crate) fn reply_frame(item: ToClient) -> Result<Option<ServerFrame>, String> {
    match item {
        ToClient::Frame(frame) => Ok(Some(frame)),
        ToClient::Encoded(bytes) => hopmq::protocol::decode::<ServerFrame>(&bytes[4..])
            .map(Some)
            .map_err(|error| format!("a reply that does not decode: {error}")),
        ToClient::Event { .. } => Ok(None),
    }
}
