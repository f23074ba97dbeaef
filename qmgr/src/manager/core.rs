//! The core's state and its handlers: one method per input (a command, a finished commit, the
//! clock), each running to completion without awaiting anything. Forwarding to and from
//! neighbours is in [`forward`]; the topology in force, link states and the route table are
//! in [`routes`].

mod commits;
mod forward;
mod payloads;
mod routes;
mod waiting;

pub use self::forward::{HELD_QUEUE, LinkWrite, TRANSMISSION_QUEUE_PREFIX, transmission_queue};
pub use self::routes::DRAINED_FILE;

use self::commits::Commits;
use self::payloads::Payloads;
use self::waiting::{Waiter, Waiters};

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use hopmq::protocol::{
    BATCH_MESSAGES_MAX, OutgoingMessage, QueueStatus, Reply, ServerFrame, Status, StoreStatus,
};
use hopmq::{Address, ApiError, ManagerName, MessageId, PRIORITY_MAX, QueueName};
use hopmq_routing::{DownLinks, Network, RouteTable, Topology};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::clock::Now;
use super::delivery::{self, DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER, Envelope};
use super::liveness::Liveness;
use super::outbox::{CONNECTION_BYTES_MAX, CONNECTION_FRAMES_MAX, Outbox, Refused};
use super::storage::{Durability, Storage};
use super::{ChannelDirection, Command, ToClient};
use crate::config::SyncMode;
use crate::mutation::{self, Mutation};
use crate::queue::lease::{Lease, Leases, Return, on_return};
use crate::queue::local::{BodyRef, Entry, LocalQueue, correlation_hash};
use crate::record::{self, Record};
use crate::store::{Location, StoreError};

/// The dead-letter queue every manager has.
pub const DEAD_LETTER_QUEUE: &str = "DLQ";
/// Queue names starting with this are the manager's own (transmission queues, held messages).
pub const SYSTEM_QUEUE_PREFIX: &str = "hopmq.";
/// Compact a segment when its live bytes are under 1/this of a segment.
const COMPACT_LIVE_FRACTION: u64 = 4;
/// ...and at least this many segments lie between it and the active one (so a segment that
/// its consumers are about to drain is left to die on its own).
const COMPACT_DISTANCE_MIN: u64 = 2;
/// ...and it has been the oldest live segment for this long. The front of a transmission queue
/// or a local queue that is draining frees its segment within moments; copying those messages
/// (a relay behind on a saturated line had 16k of them in one segment) is pure extra work, so
/// only messages that stay are copied.
pub(super) const COMPACT_AGE_MS: u64 = 2_000;
/// Expired messages removed per queue per maintenance tick, so a sweep never stalls the core.
const EXPIRY_SWEEP_MAX: usize = 4096;

/// The limits the core enforces.
#[derive(Debug, Clone)]
pub struct CoreLimits {
    pub max_message_bytes: u64,
    pub max_depth: u64,
    pub max_deliveries: u32,
    pub auto_create_queues: bool,
    pub cache_bytes: u64,
    pub sync: SyncMode,
    pub segment_bytes: u64,
    /// Hops a message may take; past it, it is dead-lettered.
    pub max_hops: u32,
}

/// The most stored bytes (bodies, headers, envelopes) one get or browse returns, at least one
/// message whatever its size: half a frame, so that a reply, which holds little more than the
/// records, always fits one. A get's reply that still does not fit is refused and its
/// messages stay queued.
const REPLY_RECORD_BYTES_MAX: u64 = (hopmq::protocol::FRAME_BYTES_MAX / 2) as u64;

/// A record is always within a reply's budget, so a single message is always a reply that fits.
const _: () = assert!(crate::store::format::RECORD_PAYLOAD_BYTES_MAX <= REPLY_RECORD_BYTES_MAX);

/// What to do once a commit is durable (or has failed).
#[derive(Debug)]
pub enum Continuation {
    /// Messages put: make them visible, then acknowledge.
    Put {
        connection: u64,
        request: u64,
        items: Vec<PutItem>,
        ids: Vec<MessageId>,
        handoffs: Vec<Handoff>,
        direct: Vec<forward::DirectLink>,
    },
    /// Messages got destructively: hand them over.
    Get {
        connection: u64,
        request: u64,
        queue: QueueName,
        entries: Vec<Entry>,
        /// The `Messages` reply, encoded.
        reply: Vec<u8>,
    },
    /// Leased messages acknowledged.
    Ack {
        connection: u64,
        request: u64,
        leases: Vec<Lease>,
    },
    /// Messages removed with nobody waiting (expired).
    Removed { entries: Vec<Entry> },
    /// A message moved to another queue (dead-lettered, or restored after a failed hand-over).
    /// `old` is the message's previous place (queue and entry); `None` when a removed message
    /// is written again.
    Moved {
        item: PutItem,
        old: Option<(QueueName, Entry)>,
    },
    /// A channel's write (sequence numbers assigned, a batch received).
    Link(LinkWrite),
    /// A live message's record copied to the journal's head by compaction.
    Relocated {
        seq: u64,
        /// For a message given to a channel: the neighbour and its channel sequence number.
        assigned: Option<(ManagerName, u64)>,
        old_segment: u64,
        old_len: u32,
    },
}

/// One message on its way into a queue.
#[derive(Debug)]
pub struct PutItem {
    pub queue: QueueName,
    pub entry: Entry,
    pub payload: Bytes,
    pub persistent: bool,
    /// The waiting get (an index into the put's hand-offs) this message goes straight to:
    /// its removal is written in the same commit as the put, so the hand-over costs one sync
    /// instead of two.
    pub handoff: Option<usize>,
    /// The channel sequence number it was given in the same commit (a message for an idle
    /// link goes straight to its sender; see [`forward::DirectLink`]).
    pub channel_seq: Option<u64>,
}

/// What [`Core::place`] leaves for [`Core::finish_placing`].
pub struct Placed {
    handed: Vec<(Handoff, Vec<PutItem>)>,
    touched: BTreeSet<QueueName>,
    direct: Vec<ManagerName>,
}

/// A waiting get claimed by a put; it takes up to `max` messages of that put.
#[derive(Debug)]
pub struct Handoff {
    connection: u64,
    request: u64,
    deadline_ms: u64,
    max: usize,
    correlation_id: Option<String>,
    taken: usize,
}

struct Slot {
    queue: LocalQueue,
    max_depth: u64,
    /// Puts accepted but not yet durable: they count against `max_depth`.
    pending: u64,
    /// Of those, the ones handed straight to a waiting get.
    pending_handoffs: u64,
    subscribers: Vec<(u64, u64)>,
}

impl Slot {
    fn new(max_depth: u64) -> Self {
        Self {
            queue: LocalQueue::default(),
            max_depth,
            pending: 0,
            pending_handoffs: 0,
            subscribers: Vec::new(),
        }
    }
}

struct Connection {
    frames: Outbox,
    subscriptions: FxHashMap<u64, QueueName>,
}

/// Unique message ids: the incarnation's entropy in the high half, a counter in the low half.
struct IdGenerator {
    high: u64,
    counter: u64,
}

impl IdGenerator {
    fn new(name: &ManagerName, entropy: u64) -> Self {
        // Two managers started with the same entropy still differ by name.
        Self {
            high: entropy ^ u64::from(crc32c::crc32c(name.as_str().as_bytes())) << 32,
            counter: 0,
        }
    }

    fn next(&mut self) -> MessageId {
        self.counter += 1;
        MessageId(u128::from(self.high) << 64 | u128::from(self.counter))
    }
}

/// The manager core. See the module documentation of [`super`].
pub struct Core {
    name: ManagerName,
    topology: Topology,
    /// This manager's routes under the topology in force, computed once: resolving a put must
    /// not run Dijkstra.
    routes: RouteTable,
    limits: CoreLimits,
    storage: Box<dyn Storage>,
    /// Fx-hashed: looked up several times per message.
    queues: FxHashMap<QueueName, Slot>,
    leases: Leases,
    waiters: Waiters,
    connections: FxHashMap<u64, Connection>,
    next_subscription: u64,
    payloads: Payloads,
    next_seq: u64,
    ids: IdGenerator,
    /// What to do when each commit in flight completes, and the segments they pin.
    commits: Commits<Continuation>,
    liveness: Liveness,
    /// Records of the compaction in progress not yet written; one compaction at a time.
    relocating: u64,
    /// The oldest live segment and since when (ms) it has been the oldest, for
    /// [`COMPACT_AGE_MS`].
    oldest_live_since: Option<(u64, u64)>,
    /// Every journal segment before this one has been deleted or kept as a spare.
    retired_below: u64,
    segment_bytes: u64,
    /// When this core started, on the monotonic clock (for uptime).
    started_ms: u64,
    /// The moment of the event being handled, for the few paths deep in a handler that act
    /// on their own (closing a connection that stopped reading).
    event_now: Now,
    /// Fresh channel epochs: seeded from the incarnation's entropy, so a simulation replays.
    epochs: forward::EpochSource,
    shutting_down: bool,
    messages_put: u64,
    messages_delivered: u64,
    /// One per neighbour (and per neighbour only the journal still knows).
    links: BTreeMap<ManagerName, forward::Link>,
    /// The driver's channel connections: which link, which way.
    channels: FxHashMap<u64, (ManagerName, ChannelDirection)>,
    messages_forwarded: u64,
    messages_expired: u64,
    /// Where `qmgr reload` requests go: the task that reads the topology file. `None` for a
    /// manager without a topology file.
    reloader: Option<mpsc::Sender<super::ReloadRequest>>,
    routing: routes::Routing,
}

fn api_error(error: &StoreError) -> ApiError {
    match error {
        StoreError::DiskFull { .. } => ApiError::DiskFull {
            detail: error.to_string(),
        },
        other => ApiError::Storage {
            detail: other.to_string(),
        },
    }
}

impl Core {
    /// A core over recovered state, writing to `storage`. `entropy` must differ between incarnations of a manager (production: the start time's
    /// nanoseconds; a simulation: its seed): message ids and channel epochs come from it.
    pub fn new(
        name: ManagerName,
        topology: Topology,
        limits: CoreLimits,
        recovered: super::Recovered,
        storage: Box<dyn Storage>,
        now: Now,
        entropy: u64,
    ) -> Self {
        let routes = Network::new(&topology)
            .routes_from(name.as_str(), &DownLinks::new())
            .unwrap_or_else(|| RouteTable {
                source: name.clone(),
                routes: Vec::new(),
            });
        let name_for_routing = name.clone();
        let mut core = Self {
            ids: IdGenerator::new(&name, entropy),
            epochs: forward::EpochSource::new(entropy),
            name,
            routes,
            payloads: Payloads::new(limits.cache_bytes),
            segment_bytes: limits.segment_bytes,
            limits,
            storage,
            queues: FxHashMap::default(),
            leases: Leases::default(),
            waiters: Waiters::default(),
            connections: FxHashMap::default(),
            next_subscription: 0,
            next_seq: recovered.next_seq,
            commits: Commits::default(),
            liveness: recovered.liveness,
            relocating: 0,
            oldest_live_since: None,
            retired_below: 0,
            started_ms: now.mono_ms,
            event_now: now,
            shutting_down: false,
            messages_put: 0,
            messages_delivered: 0,
            links: BTreeMap::new(),
            channels: FxHashMap::default(),
            messages_forwarded: 0,
            messages_expired: 0,
            reloader: None,
            routing: routes::Routing::new(&name_for_routing, &topology, now.wall_ms),
            topology,
        };
        core.declare_homed_queues();
        core.ensure_slot(&dead_letter_queue());
        for (queue, local) in recovered.queues {
            core.ensure_slot(&queue).queue = local;
        }
        core.restore_links(recovered.senders, recovered.receivers, now);
        core.reexamine_waiting(now);
        core
    }

    /// Routes `qmgr reload` requests to the task that reads the topology file.
    pub fn set_reloader(&mut self, reloader: mpsc::Sender<super::ReloadRequest>) {
        self.reloader = Some(reloader);
    }

    /// True once shutdown began.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// True once shutdown began and nothing is left in flight.
    pub fn finished(&self) -> bool {
        self.shutting_down && self.commits.in_flight() == 0
    }

    fn ensure_slot(&mut self, queue: &QueueName) -> &mut Slot {
        // Looked up first: this runs per message, and `entry` would clone the name each time.
        if !self.queues.contains_key(queue) {
            let max_depth = self
                .topology
                .queue(queue.as_str())
                .and_then(|q| q.max_depth)
                .unwrap_or(self.limits.max_depth);
            self.queues.insert(queue.clone(), Slot::new(max_depth));
        }
        self.queues
            .get_mut(queue)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// A local queue an application may use, created on first use when allowed.
    /// A local queue an application may take from, subscribe to or delete: not one of the
    /// manager's own (`hopmq.*`), whose messages are on their way elsewhere.
    fn app_queue(&mut self, name: &str) -> Result<QueueName, ApiError> {
        if name.starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(ApiError::BadRequest {
                reason: format!("queue `{name}` belongs to the manager; it can only be browsed"),
            });
        }
        self.local_queue(name)
    }

    /// A local queue, created on first use when allowed (never a `hopmq.*` one).
    fn local_queue(&mut self, name: &str) -> Result<QueueName, ApiError> {
        let queue = QueueName::new(name).map_err(|e| ApiError::BadRequest {
            reason: e.to_string(),
        })?;
        self.local_queue_named(queue)
    }

    /// `queue` if it exists here, or may be created (and then is).
    fn local_queue_named(&mut self, queue: QueueName) -> Result<QueueName, ApiError> {
        if self.queues.contains_key(&queue) {
            return Ok(queue);
        }
        if queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX) || !self.limits.auto_create_queues {
            return Err(ApiError::UnknownQueue {
                queue: queue.to_string(),
            });
        }
        self.ensure_slot(&queue);
        Ok(queue)
    }

    fn send(&mut self, connection: u64, frame: ServerFrame) -> bool {
        self.send_to(connection, ToClient::Frame(frame))
    }

    fn send_to(&mut self, connection: u64, frame: ToClient) -> bool {
        let Some(conn) = self.connections.get(&connection) else {
            return false;
        };
        match conn.frames.try_send(frame) {
            Ok(()) => true,
            Err(Refused::Stalled) => {
                warn!(
                    connection,
                    queued_bytes = conn.frames.queued_bytes(),
                    "closing a connection that stopped reading (past {CONNECTION_FRAMES_MAX} frames or {CONNECTION_BYTES_MAX} bytes queued)"
                );
                self.disconnect(connection, self.event_now);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    fn reply(&mut self, connection: u64, id: u64, result: Result<Reply, ApiError>) -> bool {
        self.send(connection, ServerFrame::Reply { id, result })
    }

    fn commit(&mut self, payloads: Vec<Bytes>, continuation: Continuation) {
        self.append(Durability::Synced, payloads, continuation);
    }

    /// Records that messages are gone: such a write may use the journal's reserve, so that a
    /// full disk can always be drained.
    fn commit_removal(&mut self, seqs: Vec<u64>, continuation: Continuation) {
        self.commit_freeing(
            vec![record::encode(&Record::Remove(seqs)).into()],
            continuation,
        );
    }

    /// A removal a crash may undo without harm (see [`Journal::append_deferred`]): no sync of
    /// its own.
    fn commit_deferred_removal(&mut self, seqs: Vec<u64>, continuation: Continuation) {
        let payloads = vec![Bytes::from(record::encode(&Record::Remove(seqs)))];
        self.append(Durability::Deferred, payloads, continuation);
    }

    /// A write that may use the journal's reserve: removals, and messages written back in
    /// place of a removal just made (so a full disk never turns a hand-over into a loss).
    fn commit_freeing(&mut self, payloads: Vec<Bytes>, continuation: Continuation) {
        self.append(Durability::Freeing, payloads, continuation);
    }

    fn append(&mut self, durability: Durability, payloads: Vec<Bytes>, continuation: Continuation) {
        // Read before the append: its records land in this segment or a later one.
        let segment = self.storage.active_segment();
        self.commits.made(continuation, segment);
        self.storage.append(durability, payloads);
    }

    // ---- commands -------------------------------------------------------------------------

    /// Handles one command from a connection.
    pub fn on_command(&mut self, command: Command, now: Now) {
        self.event_now = now;
        match command {
            Command::Connected {
                connection,
                frames,
                uid,
            } => {
                debug!(connection, ?uid, "client connected");
                self.connections.insert(
                    connection,
                    Connection {
                        frames,
                        subscriptions: FxHashMap::default(),
                    },
                );
            }
            Command::Disconnected { connection } => self.disconnect(connection, now),
            Command::ChannelOpened {
                neighbour,
                direction,
                channel,
            } => self.on_channel_opened(neighbour, direction, channel, now),
            Command::ChannelFrame { connection, frame } => {
                self.on_channel_frame(connection, frame, now);
            }
            Command::ChannelClosed { connection, reason } => {
                self.on_channel_closed(connection, &reason);
            }
            Command::Topology(update) => self.on_topology(update, now),
            Command::Snapshot { reply } => {
                let _ = reply.send(self.status(now));
            }
            Command::Request {
                connection,
                id,
                operation,
            } => {
                if !self.connections.contains_key(&connection) {
                    // The core closed this connection (it stopped reading); its requests in
                    // the channel are dropped, so nothing is leased to it.
                    return;
                }
                if self.shutting_down {
                    self.reply(connection, id, Err(ApiError::ShuttingDown));
                } else {
                    self.on_request(connection, id, operation, now);
                }
            }
        }
    }

    fn on_request(
        &mut self,
        connection: u64,
        id: u64,
        operation: hopmq::protocol::Operation,
        now: Now,
    ) {
        use hopmq::protocol::Operation as Op;
        let result = match operation {
            Op::Reload => self.request_reload(connection, id),
            Op::PlanTopology { file, text } => self.plan_topology(&file, &text).map(Some),
            Op::SetLink { neighbour, drained } => {
                self.set_link_drained(&neighbour, drained, now).map(Some)
            }
            Op::Put { address, message } => self.put(connection, id, vec![(address, message)], now),
            Op::PutBatch { messages } => self.put(connection, id, messages, now),
            Op::Get {
                queue,
                timeout_ms,
                max,
                selector,
                lease_ms,
            } => self.get(
                connection,
                id,
                &queue,
                timeout_ms,
                max,
                selector.correlation_id,
                lease_ms,
                now,
            ),
            Op::Ack { leases } => self.ack(connection, id, &leases, now),
            Op::Nack { leases } => self.nack(connection, &leases, now).map(Some),
            Op::Browse { queue, max } => self.browse(&queue, max, now).map(Some),
            Op::Subscribe { queue } => self.subscribe(connection, &queue).map(Some),
            Op::Unsubscribe { subscription } => {
                self.unsubscribe(connection, subscription).map(Some)
            }
            Op::Declare { queue, max_depth } => self.declare(&queue, max_depth).map(Some),
            Op::Delete { queue } => self.delete(&queue).map(Some),
            Op::Status => Ok(Some(Reply::Status(Box::new(self.status(now))))),
        };
        // `None`: the reply comes later (after a commit, or when a waiting get is served).
        match result {
            Ok(Some(reply)) => {
                self.reply(connection, id, Ok(reply));
            }
            Ok(None) => {}
            Err(error) => {
                self.reply(connection, id, Err(error));
            }
        }
    }

    /// Where a put to `address` goes: a local queue, or the queue of messages waiting to leave.
    fn resolve(&mut self, address: &str) -> Result<QueueName, ApiError> {
        // Remembered per address, as arrivals are: parsing it and finding its route was a
        // fifth of a put's work per message.
        match self.routing.puts.get(address) {
            Some(routes::PutPlace::Local(queue)) => return self.local_queue_named(queue.clone()),
            Some(routes::PutPlace::Waiting(queue)) => {
                let queue = queue.clone();
                self.ensure_slot(&queue);
                return Ok(queue);
            }
            None => {}
        }
        let bad = |reason: String| ApiError::BadAddress {
            address: address.to_owned(),
            reason,
        };
        let parsed: Address = address
            .parse()
            .map_err(|e: hopmq::NameError| bad(e.to_string()))?;
        if parsed.queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(bad(format!(
                "queue names starting with `{SYSTEM_QUEUE_PREFIX}` are reserved"
            )));
        }
        let home = match &parsed.manager {
            Some(manager) => manager.clone(),
            None => match self.topology.queue(parsed.queue.as_str()) {
                Some(queue) => queue.home.clone(),
                None => self.name.clone(),
            },
        };
        if home == self.name {
            let queue = self.local_queue_named(parsed.queue)?;
            self.routing
                .remember_put(address, routes::PutPlace::Local(queue.clone()));
            return Ok(queue);
        }
        // Store and forward: the message waits in the transmission queue of its next hop, or
        // with the held messages while no route exists, until a channel takes it.
        let queue = self.route_to(&home).ok_or_else(|| ApiError::NoRoute {
            address: address.to_owned(),
            reason: format!("no manager `{home}` in the topology"),
        })?;
        self.routing
            .remember_put(address, routes::PutPlace::Waiting(queue.clone()));
        Ok(queue)
    }

    fn put(
        &mut self,
        connection: u64,
        request: u64,
        messages: Vec<(String, OutgoingMessage)>,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        if messages.is_empty() || messages.len() > BATCH_MESSAGES_MAX as usize {
            return Err(ApiError::BatchTooLarge {
                count: messages.len() as u64,
                limit: u64::from(BATCH_MESSAGES_MAX),
            });
        }
        // Validate everything first: a batch is stored whole or not at all.
        let mut targets = Vec::with_capacity(messages.len());
        let mut added: FxHashMap<QueueName, u64> = FxHashMap::default();
        for (address, message) in &messages {
            let bytes = message.body.len() as u64;
            if bytes > self.limits.max_message_bytes {
                return Err(ApiError::MessageTooLarge {
                    bytes,
                    limit: self.limits.max_message_bytes,
                });
            }
            if message.priority > PRIORITY_MAX {
                return Err(ApiError::BadRequest {
                    reason: format!("priority {} is over {PRIORITY_MAX}", message.priority),
                });
            }
            let queue = self.resolve(address)?;
            if let Some(limit) = self
                .topology
                .queue(queue.as_str())
                .and_then(|q| q.max_message_bytes)
            {
                if bytes > limit {
                    return Err(ApiError::MessageTooLarge { bytes, limit });
                }
            }
            let count = added.entry(queue.clone()).or_default();
            *count += 1;
            let slot = &self.queues[&queue];
            let held = slot.queue.depth() + slot.pending + self.leases.leased(queue.as_str());
            if held + *count > slot.max_depth {
                return Err(ApiError::QueueFull {
                    queue: queue.to_string(),
                    max_depth: slot.max_depth,
                });
            }
            targets.push(queue);
        }
        let mut items = Vec::with_capacity(messages.len());
        let mut ids = Vec::with_capacity(messages.len());
        let mut journal_payloads = Vec::new();
        let mut handed_off = Vec::new();
        let mut handoffs: Vec<Handoff> = Vec::new();
        // Per queue, the hand-off still taking this put's messages.
        let mut open: FxHashMap<QueueName, usize> = FxHashMap::default();
        let mut direct = Vec::new();
        for ((address, message), queue) in messages.iter().zip(targets) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let id = self.ids.next();
            let envelope = Envelope {
                seq,
                queue: queue.as_str(),
                id,
                destination: address,
                origin: self.name.as_str(),
                put_at_ms: now.wall_ms,
            };
            let payload = Bytes::from(delivery::encode_put(&envelope, message));
            let entry = Entry {
                seq,
                body: BodyRef::Memory,
                bytes: message.body.len() as u32,
                priority: message.priority,
                expires_at_ms: message
                    .ttl_ms
                    .map_or(u64::MAX, |ttl| now.wall_ms.saturating_add(ttl)),
                put_at_ms: now.wall_ms,
                correlation: correlation_hash(message.correlation_id.as_deref()),
                delivery_count: 0,
            };
            // A message leaving this manager is always journaled: a channel sequence number
            // may only name a message that survives a crash (non-persistence ends here).
            let persistent = message.persistent || queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX);
            let handoff = if persistent {
                journal_payloads.push(payload.clone());
                self.hand_off(
                    &queue,
                    message.correlation_id.as_deref(),
                    &mut handoffs,
                    &mut open,
                )
            } else {
                None
            };
            if handoff.is_none() && !open.is_empty() {
                // A later message must not overtake this one through a hand-off.
                open.remove(&queue);
            }
            let channel_seq = if persistent {
                self.assign_direct(&queue, seq, id.0, &payload, &mut direct, now)
            } else {
                None
            };
            if let Some(slot) = self.queues.get_mut(&queue) {
                slot.pending += 1;
                slot.pending_handoffs += u64::from(handoff.is_some());
            }
            if handoff.is_some() {
                handed_off.push(seq);
            }
            items.push(PutItem {
                queue,
                entry,
                payload,
                persistent,
                handoff,
                channel_seq,
            });
            ids.push(id);
        }
        // Right after the messages, so the locations of both come first, in order.
        journal_payloads.extend(forward::direct_records(&direct));
        let continuation = Continuation::Put {
            connection,
            request,
            items,
            ids,
            handoffs,
            direct,
        };
        if mutation::active(Mutation::AckBeforeDurable) {
            if let Continuation::Put { ids, .. } = &continuation {
                self.reply(connection, request, Ok(Reply::Put(ids.clone())));
            }
        }
        if journal_payloads.is_empty() {
            self.apply(continuation, Ok(Vec::new()), now);
        } else {
            if !handed_off.is_empty() {
                // Last in the group, so the locations of the messages come first, in order.
                journal_payloads.push(record::encode(&Record::Remove(handed_off)).into());
            }
            self.commit(journal_payloads, continuation);
        }
        Ok(None)
    }

    /// The hand-off a message put to `queue` joins, if any: the one this put opened for the
    /// queue while it has room, else a newly claimed waiting get.
    fn hand_off(
        &mut self,
        queue: &QueueName,
        correlation_id: Option<&str>,
        handoffs: &mut Vec<Handoff>,
        open: &mut FxHashMap<QueueName, usize>,
    ) -> Option<usize> {
        if let Some(&index) = open.get(queue) {
            let handoff = &mut handoffs[index];
            let matches = handoff
                .correlation_id
                .as_deref()
                .is_none_or(|c| Some(c) == correlation_id);
            if handoff.taken < handoff.max && matches {
                handoff.taken += 1;
                return Some(index);
            }
        }
        let mut handoff = self.claim_waiter(queue, correlation_id)?;
        handoff.taken = 1;
        handoffs.push(handoff);
        open.insert(queue.clone(), handoffs.len() - 1);
        Some(handoffs.len() - 1)
    }

    /// The first waiting get that takes this message as it is put, if the queue is empty and
    /// nothing but other hand-offs is on its way into it (so put order is kept). Leased gets
    /// are served the usual way.
    fn claim_waiter(&mut self, queue: &QueueName, correlation_id: Option<&str>) -> Option<Handoff> {
        let slot = self.queues.get(queue)?;
        if slot.queue.depth() > 0 || slot.pending > slot.pending_handoffs {
            return None;
        }
        let waiter_id = self.waiters.first_in_line(queue, |w| {
            w.lease_ms.is_none()
                && w.correlation_id
                    .as_deref()
                    .is_none_or(|c| Some(c) == correlation_id)
        })?;
        let waiter = self.waiters.remove(waiter_id)?;
        Some(Handoff {
            connection: waiter.connection,
            request: waiter.request,
            deadline_ms: waiter.deadline_ms,
            max: waiter.max,
            correlation_id: waiter.correlation_id,
            taken: 0,
        })
    }

    /// Puts a waiting get claimed by a put that failed back at the head of its queue's line.
    fn unclaim(&mut self, queue: &QueueName, handoff: Handoff) {
        if !self.connections.contains_key(&handoff.connection) {
            return;
        }
        let waiter = Waiter {
            connection: handoff.connection,
            request: handoff.request,
            queue: queue.clone(),
            max: handoff.max,
            correlation_id: handoff.correlation_id,
            lease_ms: None,
            deadline_ms: handoff.deadline_ms,
        };
        self.waiters.add(waiter, true);
    }

    #[allow(clippy::too_many_arguments)]
    fn get(
        &mut self,
        connection: u64,
        request: u64,
        queue: &str,
        timeout_ms: u64,
        max: u32,
        correlation_id: Option<String>,
        lease_ms: Option<u64>,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        if max == 0 || max > BATCH_MESSAGES_MAX {
            return Err(ApiError::BadRequest {
                reason: format!("max must be 1 to {BATCH_MESSAGES_MAX}, not {max}"),
            });
        }
        let queue = self.app_queue(queue)?;
        let waiter = Waiter {
            connection,
            request,
            queue: queue.clone(),
            max: max as usize,
            correlation_id,
            lease_ms,
            deadline_ms: now.mono_ms.saturating_add(timeout_ms),
        };
        if self.try_serve(&waiter, now) {
            return Ok(None);
        }
        if timeout_ms == 0 {
            return Ok(Some(Reply::Messages(Vec::new())));
        }
        self.waiters.add(waiter, false);
        Ok(None)
    }

    /// Takes messages for `waiter` if any qualify, and starts handing them over.
    fn try_serve(&mut self, waiter: &Waiter, now: Now) -> bool {
        let correlation = waiter
            .correlation_id
            .as_deref()
            .map(|id| correlation_hash(Some(id)));
        let Some(slot) = self.queues.get_mut(&waiter.queue) else {
            return false;
        };
        let (payloads, journal) = (&self.payloads, &*self.storage);
        let taken = slot.queue.take_within(
            now.wall_ms,
            waiter.max,
            REPLY_RECORD_BYTES_MAX,
            |entry| payloads.record_bytes(entry),
            correlation,
            |entry| {
                payloads
                    .get(entry, journal)
                    .ok()
                    .and_then(|p| {
                        delivery::stored(&p)
                            .ok()
                            .map(|s| s.correlation_id == waiter.correlation_id.as_deref())
                    })
                    .unwrap_or(false)
            },
        );
        self.remove_expired(taken.expired);
        if taken.entries.is_empty() {
            return false;
        }
        self.hand_over(
            waiter.connection,
            waiter.request,
            waiter.queue.clone(),
            taken.entries,
            waiter.lease_ms,
            now,
        );
        true
    }

    fn hand_over(
        &mut self,
        connection: u64,
        request: u64,
        queue: QueueName,
        mut entries: Vec<Entry>,
        lease_ms: Option<u64>,
        now: Now,
    ) {
        for entry in &mut entries {
            entry.delivery_count += 1;
        }
        let reply = match self.get_reply(connection, request, &queue, &entries, lease_ms, now) {
            Ok(reply) => reply,
            Err(reason) => {
                error!(%queue, %reason, "cannot hand messages over to a getter");
                let error = ApiError::Storage { detail: reason };
                return self.hand_back(connection, request, &queue, entries, error);
            }
        };
        if lease_ms.is_some() {
            self.messages_delivered += entries.len() as u64;
            if mutation::active(Mutation::UnrecordedLease) {
                let seqs = entries.iter().map(|e| e.seq).collect();
                self.commit_deferred_removal(
                    seqs,
                    Continuation::Removed {
                        entries: Vec::new(),
                    },
                );
            }
            self.send_to(connection, ToClient::Encoded(reply));
            return;
        }
        let seqs: Vec<u64> = entries
            .iter()
            .filter(|e| !matches!(e.body, BodyRef::Memory))
            .map(|e| e.seq)
            .collect();
        let continuation = Continuation::Get {
            connection,
            request,
            queue,
            entries,
            reply,
        };
        if seqs.is_empty() {
            self.apply(continuation, Ok(Vec::new()), now);
        } else {
            self.commit_removal(seqs, continuation);
        }
    }

    /// The encoded reply handing `entries` to a getter, with their leases granted if
    /// `lease_ms` says so; on failure no lease is left granted.
    fn get_reply(
        &mut self,
        connection: u64,
        request: u64,
        queue: &QueueName,
        entries: &[Entry],
        lease_ms: Option<u64>,
        now: Now,
    ) -> Result<Vec<u8>, String> {
        let payloads = entries
            .iter()
            .map(|entry| {
                self.payloads
                    .get(entry, &*self.storage)
                    .map_err(|error| format!("cannot read message {} back: {error}", entry.seq))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leases: Vec<Option<u64>> = entries
            .iter()
            .map(|entry| {
                lease_ms.map(|lease_ms| {
                    self.leases
                        .grant(queue.clone(), *entry, connection, now.mono_ms, lease_ms)
                })
            })
            .collect();
        let messages: Vec<_> = payloads
            .iter()
            .zip(entries)
            .zip(&leases)
            .map(|((payload, entry), lease)| {
                (
                    &payload[..],
                    entry,
                    *lease,
                    !matches!(entry.body, BodyRef::Memory),
                )
            })
            .collect();
        delivery::messages_reply(request, &messages).map_err(|error| {
            for &lease in leases.iter().flatten() {
                let _ = self.leases.settle(lease, connection);
            }
            error.to_string()
        })
    }

    /// Puts messages taken for a get back in their queue, undelivered, and tells the getter
    /// why.
    fn hand_back(
        &mut self,
        connection: u64,
        request: u64,
        queue: &QueueName,
        entries: Vec<Entry>,
        error: ApiError,
    ) {
        for mut entry in entries {
            entry.delivery_count -= 1;
            self.insert(queue, entry);
        }
        self.reply(connection, request, Err(error));
    }

    fn ack(
        &mut self,
        connection: u64,
        request: u64,
        lease_ids: &[u64],
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let leases = self.settle(connection, lease_ids)?;
        let seqs: Vec<u64> = leases
            .iter()
            .filter(|l| !matches!(l.entry.body, BodyRef::Memory))
            .map(|l| l.entry.seq)
            .collect();
        let continuation = Continuation::Ack {
            connection,
            request,
            leases,
        };
        if seqs.is_empty() {
            self.apply(continuation, Ok(Vec::new()), now);
        } else {
            self.commit_removal(seqs, continuation);
        }
        Ok(None)
    }

    fn nack(&mut self, connection: u64, lease_ids: &[u64], now: Now) -> Result<Reply, ApiError> {
        for lease in self.settle(connection, lease_ids)? {
            self.give_back(lease.queue, lease.entry, now);
        }
        Ok(Reply::Done)
    }

    /// Ends the leases if all are held by `connection`; none otherwise.
    fn settle(&mut self, connection: u64, lease_ids: &[u64]) -> Result<Vec<Lease>, ApiError> {
        if let Some(&lease) = lease_ids
            .iter()
            .find(|&&id| !self.leases.held_by(id, connection))
        {
            return Err(ApiError::UnknownLease { lease });
        }
        let unique: BTreeSet<u64> = lease_ids.iter().copied().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| self.leases.settle(id, connection).ok())
            .collect())
    }

    /// A message whose lease ended unacknowledged: back to its queue, or dead-lettered.
    fn give_back(&mut self, queue: QueueName, entry: Entry, now: Now) {
        match on_return(entry, self.limits.max_deliveries) {
            Return::Requeue(entry) => {
                self.insert(&queue, entry);
                self.serve_waiters(&queue, now);
            }
            Return::DeadLetter(entry) => {
                let reason = format!(
                    "delivered {} times without an ack (max_deliveries)",
                    entry.delivery_count
                );
                self.dead_letter(&queue, entry, &reason, now);
            }
        }
    }

    fn dead_letter(&mut self, from: &QueueName, entry: Entry, reason: &str, now: Now) {
        warn!(queue = %from, seq = entry.seq, %reason, "message dead-lettered");
        self.move_message(
            from,
            entry,
            &dead_letter_queue(),
            &[
                (DEAD_LETTER_REASON_HEADER, reason),
                (DEAD_LETTER_QUEUE_HEADER, from.as_str()),
            ],
            now,
        );
    }

    /// Moves a message from `from` to `to` under a new seq, with extra headers: the copy and
    /// the removal of the original in one atomic group. If it cannot be read, it stays.
    fn move_message(
        &mut self,
        from: &QueueName,
        entry: Entry,
        to: &QueueName,
        extra_headers: &[(&str, &str)],
        now: Now,
    ) {
        let seq = self.next_seq;
        let moved = self
            .payloads
            .get(&entry, &*self.storage)
            .map_err(|e| e.to_string())
            .and_then(|payload| {
                delivery::encode_moved(&payload, to.as_str(), seq, extra_headers)
                    .map_err(|e| e.to_string())
            });
        let payload = match moved {
            Ok(payload) => Bytes::from(payload),
            Err(reason) => {
                error!(queue = %from, seq = entry.seq, %reason, "cannot move a message; it stays in its queue");
                self.insert(from, entry);
                return;
            }
        };
        self.next_seq += 1;
        let persistent = !matches!(entry.body, BodyRef::Memory);
        let new_entry = Entry {
            seq,
            body: BodyRef::Memory,
            delivery_count: 0,
            put_at_ms: now.wall_ms,
            ..entry
        };
        self.ensure_slot(to).pending += 1;
        let item = PutItem {
            queue: to.clone(),
            entry: new_entry,
            payload: payload.clone(),
            persistent,
            handoff: None,
            channel_seq: None,
        };
        let continuation = Continuation::Moved {
            item,
            old: Some((from.clone(), entry)),
        };
        if persistent {
            let remove = record::encode(&Record::Remove(vec![entry.seq]));
            self.commit(vec![payload, remove.into()], continuation);
        } else {
            self.apply(continuation, Ok(Vec::new()), now);
        }
    }

    fn browse(&mut self, queue: &str, max: u32, now: Now) -> Result<Reply, ApiError> {
        let queue = self.local_queue(queue)?;
        let payloads = &self.payloads;
        let entries = self.queues[&queue].queue.peek(
            now.wall_ms,
            max.min(BATCH_MESSAGES_MAX) as usize,
            REPLY_RECORD_BYTES_MAX,
            |entry| payloads.record_bytes(entry),
        );
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload =
                self.payloads
                    .get(&entry, &*self.storage)
                    .map_err(|e| ApiError::Storage {
                        detail: e.to_string(),
                    })?;
            let delivery = delivery::to_delivery(
                &payload,
                &entry,
                None,
                !matches!(entry.body, BodyRef::Memory),
            )
            .map_err(|e| ApiError::Storage {
                detail: e.to_string(),
            })?;
            deliveries.push(delivery);
        }
        Ok(Reply::Messages(deliveries))
    }

    fn subscribe(&mut self, connection: u64, queue: &str) -> Result<Reply, ApiError> {
        let queue = self.app_queue(queue)?;
        self.next_subscription += 1;
        let subscription = self.next_subscription;
        let Some(conn) = self.connections.get_mut(&connection) else {
            return Err(ApiError::ShuttingDown);
        };
        conn.subscriptions.insert(subscription, queue.clone());
        if let Some(slot) = self.queues.get_mut(&queue) {
            slot.subscribers.push((connection, subscription));
        }
        Ok(Reply::Subscribed(subscription))
    }

    fn unsubscribe(&mut self, connection: u64, subscription: u64) -> Result<Reply, ApiError> {
        let queue = self
            .connections
            .get_mut(&connection)
            .and_then(|conn| conn.subscriptions.remove(&subscription))
            .ok_or(ApiError::UnknownSubscription { subscription })?;
        if let Some(slot) = self.queues.get_mut(&queue) {
            slot.subscribers.retain(|&(_, s)| s != subscription);
        }
        Ok(Reply::Done)
    }

    fn declare(&mut self, queue: &str, max_depth: Option<u64>) -> Result<Reply, ApiError> {
        let queue = QueueName::new(queue).map_err(|e| ApiError::BadRequest {
            reason: e.to_string(),
        })?;
        if queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(ApiError::BadRequest {
                reason: format!("queue names starting with `{SYSTEM_QUEUE_PREFIX}` are reserved"),
            });
        }
        if max_depth == Some(0) {
            return Err(ApiError::BadRequest {
                reason: "max_depth must be at least 1".into(),
            });
        }
        let slot = self.ensure_slot(&queue);
        if let Some(max_depth) = max_depth {
            slot.max_depth = max_depth;
        }
        Ok(Reply::Done)
    }

    fn delete(&mut self, queue: &str) -> Result<Reply, ApiError> {
        let queue = self.app_queue(queue)?;
        let slot = &self.queues[&queue];
        let held = slot.queue.depth() + slot.pending + self.leases.leased(queue.as_str());
        if held > 0 {
            return Err(ApiError::QueueNotEmpty {
                queue: queue.to_string(),
                depth: held,
            });
        }
        if queue.as_str() == DEAD_LETTER_QUEUE {
            return Err(ApiError::BadRequest {
                reason: "the dead-letter queue cannot be deleted".into(),
            });
        }
        if let Some(slot) = self.queues.remove(&queue) {
            for waiter in self.waiters.line(&queue) {
                self.end_waiter(
                    waiter,
                    Err(ApiError::UnknownQueue {
                        queue: queue.to_string(),
                    }),
                );
            }
            for (connection, subscription) in slot.subscribers {
                if let Some(conn) = self.connections.get_mut(&connection) {
                    conn.subscriptions.remove(&subscription);
                }
            }
        }
        Ok(Reply::Done)
    }

    fn status(&self, now: Now) -> Status {
        let mut queues: Vec<QueueStatus> = self
            .queues
            .iter()
            .map(|(name, slot)| QueueStatus {
                name: name.to_string(),
                depth: slot.queue.depth(),
                leased: self.leases.leased(name.as_str()),
                bytes: slot.queue.bytes(),
                oldest_age_ms: slot
                    .queue
                    .oldest_put_at_ms()
                    .map(|at| now.wall_ms.saturating_sub(at)),
                max_depth: slot.max_depth,
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let stats = self.storage.stats();
        Status {
            manager: self.name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: now.mono_ms.saturating_sub(self.started_ms) / 1000,
            queues,
            messages_put: self.messages_put,
            messages_delivered: self.messages_delivered,
            store: StoreStatus {
                segments: stats.segments.len() as u64,
                bytes: stats.bytes_on_disk,
                last_batch_records: stats.batch_records_last,
                commits: stats.commits,
                sync: self.limits.sync.as_str().to_owned(),
            },
            links: self.link_status(now),
            routes: self.route_status(),
            messages_forwarded: self.messages_forwarded,
            messages_expired: self.messages_expired,
            topology: self.topology_status(),
            network: self.network_status(),
        }
    }

    fn disconnect(&mut self, connection: u64, now: Now) {
        let Some(conn) = self.connections.remove(&connection) else {
            return;
        };
        debug!(connection, "client disconnected");
        for waiter in self.waiters.of_connection(connection) {
            self.end_waiter(waiter, Ok(Reply::Messages(Vec::new())));
        }
        for (subscription, queue) in conn.subscriptions {
            if let Some(slot) = self.queues.get_mut(&queue) {
                slot.subscribers.retain(|&(_, s)| s != subscription);
            }
        }
        for lease in self.leases.release_connection(connection) {
            self.give_back(lease.queue, lease.entry, now);
        }
    }

    /// Removes a waiting get and answers it with `result` (if its connection is still there).
    fn end_waiter(&mut self, waiter_id: u64, result: Result<Reply, ApiError>) {
        if let Some(waiter) = self.waiters.remove(waiter_id) {
            self.reply(waiter.connection, waiter.request, result);
        }
    }

    fn insert(&mut self, queue: &QueueName, entry: Entry) {
        self.ensure_slot(queue).queue.insert(entry);
    }

    /// Serves the queue's waiting gets in arrival order while it has messages. One pass: a
    /// waiter nothing matches (a selective get) keeps its place and the next one is tried.
    /// A transmission queue has no waiting gets: its messages go to the link's sender.
    fn serve_waiters(&mut self, queue: &QueueName, now: Now) {
        if let Some(neighbour) = forward::transmission_neighbour(queue) {
            self.pump(&neighbour, now);
            return;
        }
        if !self.queues.contains_key(queue) {
            return;
        }
        for waiter_id in self.waiters.line(queue) {
            if self
                .queues
                .get(queue)
                .is_none_or(|slot| slot.queue.depth() == 0)
            {
                return;
            }
            let Some(waiter) = self.waiters.get(waiter_id).cloned() else {
                continue;
            };
            if self.try_serve(&waiter, now) {
                self.waiters.remove(waiter_id);
            }
        }
    }

    fn notify_subscribers(&mut self, item: &PutItem) {
        let Some(slot) = self.queues.get(&item.queue) else {
            return;
        };
        if slot.subscribers.is_empty() {
            return;
        }
        // Encoded once; every subscriber's frame shares the bytes.
        let message = delivery::to_delivery(&item.payload, &item.entry, None, item.persistent)
            .map_err(|e| e.to_string())
            .and_then(|delivery| postcard::to_allocvec(&delivery).map_err(|e| e.to_string()));
        let message = match message {
            Ok(message) => Bytes::from(message),
            Err(error) => {
                error!(%error, "cannot encode a message for its subscribers");
                return;
            }
        };
        for (connection, subscription) in slot.subscribers.clone() {
            let event = ToClient::Event {
                subscription,
                message: message.clone(),
            };
            self.send_to(connection, event);
        }
    }

    fn remove_expired(&mut self, expired: Vec<Entry>) {
        if expired.is_empty() {
            return;
        }
        debug!(count = expired.len(), "expired messages removed");
        let seqs: Vec<u64> = expired
            .iter()
            .filter(|e| !matches!(e.body, BodyRef::Memory))
            .map(|e| e.seq)
            .collect();
        if seqs.is_empty() {
            for entry in &expired {
                self.payloads.forget(entry);
            }
        } else {
            self.commit_removal(seqs, Continuation::Removed { entries: expired });
        }
    }

    // ---- commits ----------------------------------------------------------------------------

    /// Applies the outcome of the oldest commit in flight: commits complete in the order
    /// they were made.
    pub fn on_commit(&mut self, result: Result<Vec<Location>, StoreError>, now: Now) {
        self.event_now = now;
        let Some(continuation) = self.commits.completed() else {
            error!("a commit completed that the core did not make; ignored");
            return;
        };
        self.apply(continuation, result, now);
        self.after_commit(now);
        self.retire_dead_segments();
    }

    /// Makes a durable effect visible and acknowledges it; also the path of effects that
    /// needed no journal write.
    fn apply(
        &mut self,
        continuation: Continuation,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        match continuation {
            Continuation::Put {
                connection,
                request,
                items,
                ids,
                handoffs,
                direct,
            } => match result {
                Err(error) => {
                    warn!(%error, "put failed");
                    self.place_failed(items, handoffs, direct);
                    self.reply(connection, request, Err(api_error(&error)));
                }
                Ok(locations) => {
                    let placed =
                        self.place(items, &mut locations.into_iter(), handoffs, direct, now);
                    self.messages_put += ids.len() as u64;
                    if !mutation::active(Mutation::AckBeforeDurable) {
                        self.reply(connection, request, Ok(Reply::Put(ids)));
                    }
                    self.finish_placing(placed, now);
                }
            },
            Continuation::Get {
                connection,
                request,
                queue,
                entries,
                reply,
            } => match result {
                Ok(_) => {
                    let count = entries.len() as u64;
                    if self.send_to(connection, ToClient::Encoded(reply)) {
                        self.messages_delivered += count;
                        for entry in &entries {
                            self.forget(entry);
                        }
                    } else {
                        // The getter left while its removal was being written: nobody has these
                        // messages, so they are stored again, in place.
                        info!(%queue, count = entries.len(), "getter left before its messages were handed over; restoring them");
                        for mut entry in entries {
                            entry.delivery_count -= 1;
                            self.restore(&queue, entry, now);
                        }
                    }
                }
                Err(error) => {
                    self.hand_back(connection, request, &queue, entries, api_error(&error));
                    self.serve_waiters(&queue, now);
                }
            },
            Continuation::Ack {
                connection,
                request,
                leases,
            } => match result {
                Ok(_) => {
                    for lease in &leases {
                        self.forget(&lease.entry);
                    }
                    self.reply(connection, request, Ok(Reply::Done));
                }
                Err(error) => {
                    for lease in leases {
                        self.give_back(lease.queue, lease.entry, now);
                    }
                    self.reply(connection, request, Err(api_error(&error)));
                }
            },
            Continuation::Removed { entries } => {
                if let Err(error) = result {
                    // They stay in the journal and expire again after a restart.
                    warn!(%error, "recording expired messages failed");
                }
                for entry in &entries {
                    self.forget(entry);
                }
            }
            Continuation::Link(write) => self.on_link_write(write, result, now),
            Continuation::Relocated {
                seq,
                assigned,
                old_segment,
                old_len,
            } => {
                self.relocating -= 1;
                let location = match result {
                    Ok(locations) => match locations.first() {
                        Some(&location) => location,
                        None => return,
                    },
                    Err(error) => {
                        warn!(%error, "compaction write failed; the segment stays");
                        return;
                    }
                };
                // The copy counts only if the message is still queued: one taken meanwhile has
                // its removal written after this copy, so the copy is dead on replay too.
                let new_body = journal_ref(location);
                // A message given to a channel may have gone back to a queue meanwhile. One
                // queued then given to a channel keeps pointing at its old record, which stays
                // live: safe, only not compacted this time.
                let moved = assigned.is_some_and(|(neighbour, channel_seq)| {
                    self.relocate_assigned(&neighbour, channel_seq, seq, new_body)
                }) || self
                    .queues
                    .values_mut()
                    .any(|slot| slot.queue.relocate(seq, new_body));
                if moved {
                    self.liveness.remove(old_segment, old_len);
                    self.liveness.add(location.segment, location.len);
                }
            }
            Continuation::Moved { mut item, old } => {
                if let Some(slot) = self.queues.get_mut(&item.queue) {
                    slot.pending -= 1;
                }
                match result {
                    Ok(locations) => {
                        if let Some(&location) = locations.first() {
                            item.entry.body = journal_ref(location);
                            self.liveness.add(location.segment, location.len);
                        }
                        let moved = old.is_some();
                        if let Some((_, old)) = old {
                            self.forget(&old);
                        }
                        self.payloads.keep(&item.entry, item.payload.clone());
                        self.insert(&item.queue, item.entry);
                        // A message written back after a failed hand-over was announced already.
                        if moved {
                            self.notify_subscribers(&item);
                        }
                        self.serve_waiters(&item.queue, now);
                    }
                    Err(error) => match old {
                        Some((from, old)) => {
                            error!(%error, queue = %from, "moving a message failed; it stays where it was");
                            self.insert(&from, old);
                        }
                        None => {
                            // Its removal is durable and its copy could not be written: keep
                            // it in memory, where it is still delivered, rather than lose it.
                            error!(%error, queue = %item.queue, seq = item.entry.seq,
                                "writing a message back failed; it is kept in memory only until delivered");
                            let entry = Entry {
                                body: BodyRef::Memory,
                                ..item.entry
                            };
                            self.payloads.keep(&entry, item.payload);
                            self.insert(&item.queue, entry);
                            self.serve_waiters(&item.queue, now);
                        }
                    },
                }
            }
        }
    }

    /// Undoes the bookkeeping of messages whose write failed: nothing of them is stored.
    fn place_failed(
        &mut self,
        items: Vec<PutItem>,
        handoffs: Vec<Handoff>,
        direct: Vec<forward::DirectLink>,
    ) {
        let mut queues = vec![None; handoffs.len()];
        for item in items {
            if let Some(slot) = self.queues.get_mut(&item.queue) {
                slot.pending -= 1;
                slot.pending_handoffs -= u64::from(item.handoff.is_some());
            }
            if let Some(index) = item.handoff {
                queues[index] = Some(item.queue);
            }
        }
        // Back in line in reverse, each at the front: the original order.
        for (handoff, queue) in handoffs.into_iter().zip(queues).rev() {
            if let Some(queue) = queue {
                self.unclaim(&queue, handoff);
            }
        }
        self.direct_failed(direct);
    }

    /// Makes durable messages visible: into their queues, to the gets they were handed to, or
    /// to the link senders they were assigned to. `locations` yields the messages' records,
    /// then the direct assignments' records. Waiters are served by [`Core::finish_placing`],
    /// after the caller has acknowledged the write.
    fn place(
        &mut self,
        items: Vec<PutItem>,
        locations: &mut impl Iterator<Item = Location>,
        handoffs: Vec<Handoff>,
        direct: Vec<forward::DirectLink>,
        now: Now,
    ) -> Placed {
        let mut touched = BTreeSet::new();
        let mut handed: Vec<Vec<PutItem>> = handoffs.iter().map(|_| Vec::new()).collect();
        for mut item in items {
            if let Some(slot) = self.queues.get_mut(&item.queue) {
                slot.pending -= 1;
                slot.pending_handoffs -= u64::from(item.handoff.is_some());
            }
            self.notify_subscribers(&item);
            if let Some(index) = item.handoff {
                // Written and removed in one commit: never live in the journal.
                let _ = locations.next();
                item.entry.delivery_count = 1;
                handed[index].push(item);
                continue;
            }
            if item.persistent {
                if let Some(location) = locations.next() {
                    item.entry.body = journal_ref(location);
                    self.liveness.add(location.segment, location.len);
                }
            }
            self.payloads.keep(&item.entry, item.payload.clone());
            match item.channel_seq {
                Some(channel_seq) => {
                    self.place_assigned(item.queue, item.entry, channel_seq, now);
                }
                None => {
                    self.insert(&item.queue, item.entry);
                    touched.insert(item.queue);
                }
            }
        }
        let direct = self.direct_placed(direct, locations);
        Placed {
            handed: handoffs.into_iter().zip(handed).collect(),
            touched,
            direct,
        }
    }

    /// The rest of [`Core::place`]: answer hand-offs, serve waiters, let links send.
    fn finish_placing(&mut self, placed: Placed, now: Now) {
        for (handoff, items) in placed.handed {
            self.complete_handoff(handoff, items, now);
        }
        for queue in placed.touched {
            self.serve_waiters(&queue, now);
        }
        for neighbour in placed.direct {
            self.direct_finished(&neighbour, now);
        }
    }

    /// Answers the get a put's messages were handed to; if its getter left meanwhile, the
    /// messages are stored again, since nobody has them.
    fn complete_handoff(&mut self, handoff: Handoff, items: Vec<PutItem>, now: Now) {
        let messages: Vec<_> = items
            .iter()
            .map(|item| (&item.payload[..], &item.entry, None, true))
            .collect();
        let handed = match delivery::messages_reply(handoff.request, &messages) {
            Ok(reply) => self.send_to(handoff.connection, ToClient::Encoded(reply)),
            Err(error) => {
                error!(%error, "cannot hand messages over to a getter");
                self.reply(
                    handoff.connection,
                    handoff.request,
                    Err(ApiError::Storage {
                        detail: error.to_string(),
                    }),
                );
                false
            }
        };
        if handed {
            self.messages_delivered += items.len() as u64;
            return;
        }
        for item in items {
            let entry = Entry {
                delivery_count: 0,
                ..item.entry
            };
            self.rewrite(&item.queue, entry, item.payload, true, now);
        }
    }

    /// Stores a removed message again under its own seq (so it keeps its place).
    fn restore(&mut self, queue: &QueueName, entry: Entry, now: Now) {
        let payload = match self.payloads.get(&entry, &*self.storage) {
            Ok(payload) => payload,
            Err(error) => {
                error!(%error, %queue, seq = entry.seq, "cannot restore a message whose getter left");
                return;
            }
        };
        self.forget(&entry);
        let persistent = !matches!(entry.body, BodyRef::Memory);
        self.rewrite(queue, entry, payload, persistent, now);
    }

    /// Writes a message's record again, then puts the message back into `queue`.
    fn rewrite(
        &mut self,
        queue: &QueueName,
        mut entry: Entry,
        payload: Bytes,
        persistent: bool,
        now: Now,
    ) {
        self.ensure_slot(queue).pending += 1;
        if !persistent {
            entry.body = BodyRef::Memory;
        }
        let item = PutItem {
            queue: queue.clone(),
            entry,
            payload: payload.clone(),
            persistent,
            handoff: None,
            channel_seq: None,
        };
        if persistent {
            self.commit_freeing(vec![payload], Continuation::Moved { item, old: None });
        } else {
            self.apply(Continuation::Moved { item, old: None }, Ok(Vec::new()), now);
        }
    }

    /// Drops a message's payload and its claim on its segment.
    fn forget(&mut self, entry: &Entry) {
        self.payloads.forget(entry);
        if let Some(location) = entry.body.location() {
            self.liveness.remove(location.segment, location.len);
        }
    }

    // ---- time -------------------------------------------------------------------------------

    /// The next moment something is due (a waiting get's timeout, a lease's end).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let waiter = self.waiters.next_deadline_ms();
        let lease = self.leases.next_deadline_ms();
        waiter.into_iter().chain(lease).min()
    }

    /// Ends what is due at `now`.
    pub fn on_timer(&mut self, now: Now) {
        self.event_now = now;
        for waiter in self.waiters.due(now.mono_ms) {
            self.end_waiter(waiter, Ok(Reply::Messages(Vec::new())));
        }
        for lease in self.leases.expire(now.mono_ms) {
            debug!(lease = lease.id, queue = %lease.queue, "lease expired");
            self.give_back(lease.queue, lease.entry, now);
        }
    }

    /// Periodic work: sweep expired messages, delete journal segments nothing lives in.
    pub fn on_maintenance(&mut self, now: Now) {
        self.event_now = now;
        self.on_link_maintenance(now);
        self.on_routing_maintenance(now);
        let names: Vec<QueueName> = self.queues.keys().cloned().collect();
        for name in names {
            let expired = match self.queues.get_mut(&name) {
                Some(slot) => slot.queue.remove_expired(now.wall_ms, EXPIRY_SWEEP_MAX),
                None => continue,
            };
            if name.as_str().starts_with(SYSTEM_QUEUE_PREFIX) {
                self.messages_expired += expired.len() as u64;
            }
            self.remove_expired(expired);
        }
        let active = self.storage.active_segment();
        let oldest_live = self.oldest_live_segment();
        let since = match self.oldest_live_since {
            Some((segment, since)) if segment == oldest_live => since,
            _ => {
                self.oldest_live_since = Some((oldest_live, now.mono_ms));
                now.mono_ms
            }
        };
        if oldest_live < active && self.relocating == 0 && now.mono_ms - since >= COMPACT_AGE_MS {
            self.compact(oldest_live, active);
        }
        self.retire_dead_segments();
    }

    /// The oldest journal segment still needed. Only a prefix of the journal is ever deleted:
    /// removal records in a segment refer to messages in older ones, so a segment goes only
    /// once everything before it is gone; nor may a segment go that a commit still in flight
    /// may have written to (its records are durable but not yet counted as live).
    fn oldest_live_segment(&self) -> u64 {
        let active = self.storage.active_segment();
        let oldest_in_flight = self.commits.oldest_segment().unwrap_or(active);
        self.liveness
            .oldest()
            .unwrap_or(active)
            .min(active)
            .min(oldest_in_flight)
    }

    /// Deletes the segments before the oldest one needed, or keeps them as spares: as soon as
    /// a commit lets the oldest live segment move on, not only at the maintenance tick, so that
    /// the writer preparing its next segment finds a spare to recycle before it has written
    /// much of a file of zeros (a segment fills in well under a tick at full speed).
    fn retire_dead_segments(&mut self) {
        let oldest_live = self.oldest_live_segment();
        if oldest_live <= self.retired_below {
            return;
        }
        match self.storage.delete_segments_before(oldest_live) {
            Ok(()) => self.retired_below = oldest_live,
            Err(error) => warn!(%error, "deleting dead journal segments failed"),
        }
    }

    /// Rewrites the few live messages of `segment` at the journal's head when that frees a
    /// mostly dead segment, so that disk use follows the live data. Messages keep their seq,
    /// so order is unchanged, and stay in their queues while the copies are written.
    fn compact(&mut self, segment: u64, active: u64) {
        let live_bytes = self.liveness.bytes(segment);
        // Worth it only when the segment is mostly dead and not about to die on its own.
        if live_bytes > self.segment_bytes / COMPACT_LIVE_FRACTION
            || active - segment < COMPACT_DISTANCE_MIN
        {
            return;
        }
        let mut payloads = Vec::new();
        let mut moves = Vec::new();
        // Messages given to a channel and not yet acked count too: a neighbour down for long
        // must not pin the journal's oldest segment.
        let queued = self
            .queues
            .values()
            .flat_map(|slot| slot.queue.entries().map(|entry| (entry, None)));
        let assigned = self
            .assigned_entries()
            .map(|(entry, neighbour, channel_seq)| (entry, Some((neighbour, channel_seq))));
        for (entry, assigned) in queued.chain(assigned) {
            let Some(location) = entry.body.location() else {
                continue;
            };
            if location.segment != segment {
                continue;
            }
            match self.payloads.get(entry, &*self.storage) {
                Ok(payload) => {
                    let assignment = assigned.map(|(neighbour, channel_seq)| {
                        forward::assignment_record(neighbour, entry.seq, channel_seq)
                    });
                    payloads.push(std::iter::once(payload).chain(assignment).collect());
                    moves.push((
                        entry.seq,
                        assigned.map(|(neighbour, channel_seq)| (neighbour.clone(), channel_seq)),
                        location.len,
                    ));
                }
                Err(error) => {
                    warn!(%error, segment, seq = entry.seq, "cannot read a message to compact its segment");
                    return;
                }
            }
        }
        if payloads.is_empty() {
            return; // only leased or in-flight messages hold it: they will settle
        }
        info!(
            segment,
            messages = payloads.len(),
            live_bytes,
            "compacting a mostly dead journal segment"
        );
        // Relocated records stand alone (with their assignment, for a message given to a
        // channel); one group per record keeps each under the batch limit.
        for (group, (seq, assigned, len)) in payloads.into_iter().zip(moves) {
            self.relocating += 1;
            self.commit(
                group,
                Continuation::Relocated {
                    seq,
                    assigned,
                    old_segment: segment,
                    old_len: len,
                },
            );
        }
    }

    /// Stops taking requests: waiting gets are answered with `ShuttingDown`.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for waiter in self.waiters.all() {
            self.end_waiter(waiter, Err(ApiError::ShuttingDown));
        }
    }

    /// The storage, for tests and simulations that inspect it.
    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }
}

fn journal_ref(location: Location) -> BodyRef {
    BodyRef::journal(location)
}

fn dead_letter_queue() -> QueueName {
    QueueName::new(DEAD_LETTER_QUEUE).unwrap_or_else(|e| unreachable!("`DLQ` is a valid name: {e}"))
}
