//! The core's state and its handlers: one method per input (a command, a finished commit, the
//! clock), each running to completion without awaiting anything. The handlers are split by
//! concern: [`puts`], [`gets`] (and leases), [`requests`] (the rest of a client's), [`apply`]
//! (completed commits), [`upkeep`] (timers and the maintenance tick); forwarding to and from
//! neighbours is in [`forward`]; the topology in force, link states and the route table are
//! in [`routes`]; requests and their replies in [`conversations`]. Owners of one concern each: [`waiting`] (waiting gets), [`commits`]
//! (commits in flight), [`payloads`] (bodies kept in memory).

mod apply;
mod clients;
mod coalesce;
mod commits;
mod conversations;
mod custody;
mod forward;
mod gets;
mod ids;
mod operator;
mod payloads;
mod probe;
mod publish;
mod pubsub;
mod puts;
mod reports;
mod requests;
mod retained;
mod retention;
mod routes;
mod slot;
mod transient;
mod upkeep;
mod volatile;
mod waiting;

pub(crate) use self::forward::{HELD_QUEUE, LinkWrite, TRANSMISSION_QUEUE_PREFIX};
pub(crate) use self::reports::requested as reports_requested;

use self::clients::{Clients, Undelivered};
use self::commits::Commits;
use self::ids::IdGenerator;
use self::payloads::Payloads;
use self::puts::{AfterPut, PutAnswer, PutAsk, PutKind};
#[cfg(test)]
pub(super) use self::retention::COMPACT_AGE_MS;
use self::retention::{Head, Retention};
use self::slot::Slot;
use self::waiting::{Waiter, Waiters};

use std::collections::BTreeSet;

use bytes::Bytes;
use hopmq::protocol::{
    BATCH_MESSAGES_MAX, OutgoingMessage, QueueStatus, Reply, ServerFrame, Status, StoreStatus,
};
use hopmq::{Address, ApiError, ManagerName, MessageId, PRIORITY_MAX, QueueName};
use hopmq_routing::Topology;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::clock::Now;
use super::delivery::{self, DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER, Envelope};
use super::outbox::{CONNECTION_BYTES_MAX, CONNECTION_FRAMES_MAX};
use super::storage::{Durability, Storage};
use super::{Command, ToClient};
use crate::config::SyncMode;
use crate::mutation::{self, Mutation};
use crate::queue::lease::{Lease, Leases, Return, on_return};
use crate::queue::local::{BodyRef, Entry, correlation_hash};
use crate::record::{self, Record};
use crate::store::{Location, StoreError};

/// The dead-letter queue every manager has.
pub use hopmq::protocol::DEAD_LETTER_QUEUE;
/// Queue names starting with this are the manager's own (transmission queues, held messages).
pub const SYSTEM_QUEUE_PREFIX: &str = "hopmq.";
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
pub(crate) enum Continuation {
    /// Messages put: make them visible, then acknowledge.
    Put {
        /// The requests answered, with their messages' ids: several plain puts a group
        /// coalesced, or one request of any kind.
        answers: Vec<puts::PutAnswer>,
        items: Vec<PutItem>,
        handoffs: Vec<Handoff>,
        direct: Vec<forward::DirectLink>,
        /// What its commit leads to besides placing its messages.
        then: AfterPut,
    },
    /// Messages got destructively: hand them over.
    Get(gets::Taken),
    /// Several gets of one turn, their removals in one write (see `coalesce`).
    Gets(Vec<gets::Taken>),
    /// The custody record written at the head; `covered` are the segments whose stamped
    /// messages it covers, which may go once it is durable.
    Custody { covered: Vec<u64> },
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
    /// The links an operator drained, saved: they take effect and the request is answered.
    Drained {
        connection: u64,
        request: u64,
        drained: BTreeSet<ManagerName>,
    },
    /// A live message's record copied to the journal's head by compaction.
    Relocated {
        seq: u64,
        /// For a message given to a channel: the neighbour and its channel sequence number.
        assigned: Option<(ManagerName, u64)>,
        old_segment: u64,
        old_len: u32,
    },
    /// A pass of an operator's request (a removal or a move of messages) written.
    Operator(operator::OperatorBatch),
    /// The durable subscriptions written whole: these requests are answered, the queues of
    /// these deleted subscriptions go, and `items` (new subscriptions' retained publications
    /// and requests for the others', written in the same group) are placed.
    Subscriptions {
        answers: Vec<(u64, u64)>,
        deleted: Vec<QueueName>,
        items: Vec<PutItem>,
    },
    /// Publication copies this manager made on its own: a waiting one split again along new
    /// routes (with its old place and custody's admission of it here), retained ones for a
    /// new subscription.
    Fanned {
        items: Vec<PutItem>,
        old: Option<(QueueName, Entry)>,
        admitted: Vec<crate::custody::Admitted>,
    },
}

/// One message on its way into a queue.
#[derive(Debug)]
pub(crate) struct PutItem {
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
pub(crate) struct Placed {
    handed: Vec<(Handoff, Vec<PutItem>)>,
    touched: BTreeSet<QueueName>,
    direct: Vec<ManagerName>,
}

/// A waiting get claimed by a put; it takes up to `max` messages of that put.
#[derive(Debug)]
pub(crate) struct Handoff {
    connection: u64,
    request: u64,
    deadline_ms: u64,
    max: usize,
    correlation_id: Option<String>,
    taken: usize,
}

/// Messages counted since start, for status and metrics.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    put: u64,
    delivered: u64,
    /// Given to a neighbour and acknowledged by it.
    forwarded: u64,
    /// Expired on their way (in a transmission queue, or arriving expired).
    expired: u64,
    /// Waiting messages moved to another queue by re-routing.
    rerouted: u64,
    /// Messages sent again around a failure: in flight on a link the route left, or kept
    /// here and not confirmed by their destination.
    resent: u64,
    /// This manager's own messages its destinations confirmed.
    confirmed: u64,
}

/// The manager core. See the module documentation of [`super`].
pub struct Core {
    name: ManagerName,
    limits: CoreLimits,
    storage: Box<dyn Storage>,
    /// Fx-hashed: looked up several times per message.
    queues: FxHashMap<QueueName, Slot>,
    leases: Leases,
    waiters: Waiters,
    clients: Clients,
    payloads: Payloads,
    next_seq: u64,
    ids: IdGenerator,
    /// What to do when each commit in flight completes, and the segments they pin.
    commits: Commits<Continuation>,
    retention: Retention,
    /// When this core started, on the monotonic clock (for uptime).
    started_ms: u64,
    /// The moment of the event being handled, for the few paths deep in a handler that act
    /// on their own (closing a connection that stopped reading).
    event_now: Now,
    /// While a turn's run of destructive gets is handled: their removals, written together.
    staged_gets: Option<Vec<(Vec<u64>, gets::Taken)>>,
    /// A client was cut off with a large backlog: the next maintenance tick gives the freed
    /// memory back to the system.
    spike_freed: bool,
    shutting_down: bool,
    totals: Totals,
    /// One per neighbour (and per neighbour only the journal still knows), with their
    /// channel connections.
    links: forward::Links,
    /// Where `qmgr reload` requests go: the task that reads the topology file. `None` for a
    /// manager without a topology file.
    reloader: Option<mpsc::Sender<super::ReloadRequest>>,
    routing: routes::Routing,
    /// Custody: the stamps of what leaves, what arrived for good, and their journal record.
    custody: custody::CustodyState,
    /// Operators' requests on the messages of a queue, in progress.
    jobs: operator::OperatorJobs,
    /// Subscriptions, interest and publications' counters.
    pubsub: pubsub::PubSub,
    /// Each connection's private reply queue, for its requests.
    reply_queues: conversations::ReplyQueues,
    /// Delivery reports on their way into the journal.
    reporting: reports::Reporting,
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
        let name_for_routing = name.clone();
        let mut core = Self {
            ids: IdGenerator::new(&name, entropy),
            name,
            payloads: Payloads::new(limits.cache_bytes),
            retention: Retention::new(recovered.liveness, limits.segment_bytes),
            limits,
            storage,
            queues: FxHashMap::default(),
            leases: Leases::default(),
            waiters: Waiters::default(),
            clients: Clients::default(),
            next_seq: recovered.next_seq,
            commits: Commits::default(),
            started_ms: now.mono_ms,
            event_now: now,
            staged_gets: None,
            spike_freed: false,
            shutting_down: false,
            totals: Totals::default(),
            links: forward::Links::new(entropy),
            reloader: None,
            routing: routes::Routing::new(&name_for_routing, topology, now.wall_ms),
            custody: custody::CustodyState::new(
                &name_for_routing,
                recovered.custody,
                recovered.next_seq,
                now,
            ),
            jobs: operator::OperatorJobs::default(),
            pubsub: pubsub::PubSub::recovered(recovered.subscriptions),
            reply_queues: conversations::ReplyQueues::default(),
            reporting: reports::Reporting::default(),
        };
        core.declare_homed_queues();
        core.ensure_slot(&dead_letter_queue());
        for (queue, local) in recovered.queues {
            core.ensure_slot(&queue).queue = local;
        }
        core.restore_subscriptions();
        core.restore_retained();
        core.restore_links(recovered.senders, recovered.receivers, now);
        core.reexamine_waiting(now);
        // A restart with a topology that dropped a link (or a drained one) would leave what
        // was in flight on it there for good: no later change of the routes may come.
        core.resend_in_flight(now);
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
                .routing
                .topology()
                .queue(queue.as_str())
                .and_then(|q| q.max_depth)
                .unwrap_or(self.limits.max_depth);
            self.queues.insert(queue.clone(), Slot::new(max_depth));
        }
        self.queues
            .get_mut(queue)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// A local queue an application may take from or subscribe to: not one of the manager's
    /// own (`hopmq.*`), whose messages are on their way elsewhere. Never created here.
    fn app_queue(&self, name: &str) -> Result<QueueName, ApiError> {
        if name.starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(ApiError::BadRequest {
                reason: format!("queue `{name}` belongs to the manager; it can only be browsed"),
            });
        }
        self.read_queue(name)
    }

    /// The local queue a read (get, browse, watch) names. A read never creates a queue (puts
    /// and `declare` do), so the queue may not exist yet: a get then waits for a put to make
    /// it, a poll or a browse finds nothing. `QUEUE@MANAGER` is this manager's `QUEUE`, or
    /// refused if it names another (reads are local); a queue the topology homes elsewhere is
    /// refused naming its home, unless this manager holds one by that name (an old home keeps
    /// its messages).
    fn read_queue(&self, name: &str) -> Result<QueueName, ApiError> {
        let address: Address =
            name.parse()
                .map_err(|e: hopmq::NameError| ApiError::BadRequest {
                    reason: e.to_string(),
                })?;
        let named_here = match &address.manager {
            Some(manager) if *manager != self.name => {
                return Err(ApiError::NotLocal {
                    queue: address.queue.to_string(),
                    manager: manager.to_string(),
                });
            }
            Some(_) => true,
            None => false,
        };
        let queue = address.queue;
        if self.queues.contains_key(&queue) {
            return Ok(queue);
        }
        let home = self
            .routing
            .topology()
            .queue(queue.as_str())
            .map(|q| &q.home);
        if let Some(home) = home.filter(|home| !named_here && **home != self.name) {
            return Err(ApiError::QueueElsewhere {
                queue: queue.to_string(),
                home: home.to_string(),
            });
        }
        if queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX) || !self.limits.auto_create_queues {
            return Err(ApiError::UnknownQueue {
                queue: queue.to_string(),
            });
        }
        Ok(queue)
    }

    /// `queue` if it exists here, or may be created (and then is).
    fn local_queue_named(&mut self, queue: QueueName) -> Result<QueueName, ApiError> {
        // A reply queue takes every put: one nobody waits for is dead-lettered there with why.
        if self.queues.contains_key(&queue) || conversations::is_reply_queue(&queue) {
            self.ensure_slot(&queue);
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
        match self.clients.send(connection, frame) {
            Ok(()) => true,
            Err(Undelivered::Stalled { queued_bytes }) => {
                warn!(
                    connection,
                    queued_bytes,
                    "closing a connection that stopped reading (past {CONNECTION_FRAMES_MAX} frames or {CONNECTION_BYTES_MAX} bytes queued)"
                );
                self.disconnect(connection, self.event_now);
                self.spike_freed = true;
                false
            }
            Err(Undelivered::Gone) => false,
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

    fn append(
        &mut self,
        durability: Durability,
        mut payloads: Vec<Bytes>,
        continuation: Continuation,
    ) {
        // Staged removals go first: the reports they carry ride no other write.
        self.flush_staged_gets();
        if mutation::active(Mutation::ReportsAhead) && !payloads.is_empty() {
            // Broken on purpose: the reports go ahead of their event, in a write of their own.
            self.write_pending_reports();
        }
        let custody = matches!(continuation, Continuation::Custody { .. });
        // Broken on purpose (reports-behind): they wait for a write of their own after it.
        let behind = mutation::active(Mutation::ReportsBehind) && !payloads.is_empty();
        let reports = self.reporting.board(custody || behind, &mut payloads);
        // Read before the append: its records land in this segment or a later one.
        let segment = self.storage.active_segment();
        self.commits.made(continuation, segment);
        self.reporting.ride(self.commits.made_count(), reports);
        self.transient_with_write();
        self.storage.append(durability, payloads);
    }

    // ---- commands -------------------------------------------------------------------------

    /// Handles one command from a connection.
    pub fn on_command(&mut self, command: Command, now: Now) {
        self.command(command, now);
        self.end_event();
    }

    /// What every event ends with: what it queued for links and transient subscribers that
    /// waits for no write goes.
    pub(super) fn end_event(&mut self) {
        self.write_pending_reports();
        self.flush_volatile();
        self.transient_at_event_end();
    }

    fn command(&mut self, command: Command, now: Now) {
        self.event_now = now;
        match command {
            Command::Connected {
                connection,
                frames,
                uid,
            } => {
                debug!(connection, ?uid, "client connected");
                self.clients.connect(connection, frames);
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
            Command::EarlyBatch { connection, batch } => self.on_early(connection, batch, now),
            Command::ChannelClosed { connection, reason } => {
                self.on_channel_closed(connection, &reason);
            }
            Command::Topology(update) => self.on_topology(update, now),
            Command::Snapshot { reply } => self.snapshot(reply, now),
            Command::Console(query) => self.console(query, now),
            Command::Request {
                connection,
                id,
                operation,
            } => {
                if !self.clients.is_connected(connection) {
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
                self.set_link_drained((connection, id), &neighbour, drained)
            }
            Op::Put { address, message } => self.put(
                connection,
                id,
                vec![(address, message)],
                PutKind::Plain,
                now,
            ),
            Op::PutBatch { messages } => self.put(connection, id, messages, PutKind::Plain, now),
            Op::PutArrived {
                messages,
                timeout_ms,
            } => self.put(connection, id, messages, PutKind::Arrived(timeout_ms), now),
            op @ (Op::Request { .. }
            | Op::Reply { .. }
            | Op::RequestMany { .. }
            | Op::Replies { .. }) => self.conversation((connection, id), op, now),
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
            Op::RemoveMessages { queue, selection } => {
                self.remove_messages((connection, id), &queue, selection)
            }
            Op::MoveMessages(request) => self.move_messages((connection, id), request),
            Op::ListMessages {
                queue,
                selection,
                max,
            } => self.list_messages((connection, id), &queue, selection, max),
            op @ (Op::Publish { .. }
            | Op::SubscribeTopic { .. }
            | Op::CreateSubscription { .. }
            | Op::DeleteSubscription { .. }
            | Op::ListSubscriptions) => self.pubsub_request((connection, id), op, now),
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

    fn disconnect(&mut self, connection: u64, now: Now) {
        if !self.clients.disconnect(connection) {
            return;
        }
        debug!(connection, "client disconnected");
        for waiter in self.waiters.of_connection(connection) {
            self.end_waiter(waiter, Ok(Reply::Messages(Vec::new())));
        }
        for lease in self.leases.release_connection(connection) {
            self.give_back(lease.queue, lease.entry, now);
        }
        self.cancel_jobs(connection);
        self.custody.arrivals.disconnected(connection);
        self.topic_subscriber_left(connection);
        self.reply_queue_closed(connection, now);
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
        if conversations::is_reply_queue(queue) {
            self.dead_letter_unclaimed_replies(queue, now);
        }
    }

    fn notify_subscribers(&mut self, item: &PutItem) {
        if self.clients.subscribers(&item.queue).is_empty() {
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
        for (connection, subscription) in self.clients.subscribers(&item.queue).to_vec() {
            let event = ToClient::Event {
                subscription,
                message: message.clone(),
            };
            self.send_to(connection, event);
        }
    }

    fn remove_expired(&mut self, expired: Vec<Entry>) {
        if !expired.is_empty() {
            debug!(count = expired.len(), "expired messages removed");
        }
        self.remove_entries(expired);
    }

    /// Removes `entries` (out of every queue already) for good: a `Remove` of the journaled
    /// ones, the memory of the others.
    fn remove_entries(&mut self, expired: Vec<Entry>) {
        if expired.is_empty() {
            return;
        }
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

    /// Stops taking requests: waiting gets are answered with `ShuttingDown`.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        for waiter in self.waiters.all() {
            self.end_waiter(waiter, Err(ApiError::ShuttingDown));
        }
        self.stop_jobs();
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
