//! The manager core: the one owner of every local queue, lease, waiting get and subscription.
//!
//! Connection tasks send it [`Command`]s over a bounded channel; it answers through each
//! connection's frame channel. A write is handed to the journal, and the run loop awaits the
//! oldest commit in flight beside everything else, so completions are applied in the order the
//! commits were made (journal order, hence put order), with no task between the journal and the
//! core. The core waits for the disk only when it looked idle (no command queued, the journal's
//! thread asleep, the disk quiet for 500 µs): it then makes an event's commit itself, which at
//! a light load saves the two thread hand-overs a commit otherwise costs; a command arriving
//! during that write waits for it.
//!
//! Persist, then acknowledge: a put is visible and acknowledged only once its record is
//! durable; a destructive get answers only once the removal is durable, so a message that was
//! got never comes back after a crash.

pub(crate) mod clock;
pub(crate) mod core;
pub(crate) mod delivery;
pub(crate) mod liveness;
pub mod outbox;
pub(crate) mod recovery;
pub(crate) mod storage;

#[cfg(test)]
mod effect_tests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use hopmq::protocol::{Operation, ServerFrame};
use tokio::sync::mpsc;

use crate::store::{Commit, Journal};

pub use self::clock::{Clock, Now};
pub use self::core::{Core, CoreLimits, DEAD_LETTER_QUEUE, SYSTEM_QUEUE_PREFIX};
pub use self::recovery::{Recovered, Replay, recover};
pub use self::storage::{Durability, JournalStorage, JournalWork, Storage};

/// How many commands may wait for the core before connections feel backpressure.
pub const COMMANDS_MAX: usize = 16 * 1024;
/// How many journal commits may be in flight at once.
pub const COMMITS_IN_FLIGHT_MAX: usize = 64 * 1024;
/// Commands the run loop takes in one turn at most: enough that a client's queued single
/// puts share a journal group, few enough that heartbeats and completed commits wait little.
const COMMANDS_PER_TURN_MAX: usize = 256;
/// How often expired messages are swept from queue heads and the journal is tidied.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);

/// A frame for a client's connection: most are encoded by the connection's writer, but the
/// core encodes message replies itself, straight from the stored payloads it holds.
#[derive(Debug)]
pub enum ToClient {
    /// To be encoded.
    Frame(ServerFrame),
    /// One whole frame, length prefix included.
    Encoded(Vec<u8>),
    /// A notification: the message was encoded once and its bytes are shared by every
    /// subscriber's frame.
    Event {
        /// The subscription.
        subscription: u64,
        /// The `Delivery`, postcard-encoded.
        message: bytes::Bytes,
    },
}

impl ToClient {
    /// The frame, decoded back if it came encoded: for tests that read what a client got.
    #[cfg(test)]
    pub fn into_frame(self) -> ServerFrame {
        match self {
            Self::Frame(frame) => frame,
            Self::Encoded(bytes) => hopmq::protocol::decode(&bytes[4..])
                .expect("the core encodes only frames that decode"),
            Self::Event {
                subscription,
                message,
            } => {
                let mut bytes = Vec::new();
                hopmq::protocol::encode_event_into(subscription, &message, &mut bytes)
                    .expect("an event encodes");
                hopmq::protocol::decode(&bytes[4..]).expect("an event decodes")
            }
        }
    }
}

/// What connection tasks ask of the core.
#[derive(Debug)]
pub enum Command {
    /// A new connection after its handshake, with the channel its frames go out on.
    Connected {
        /// Its id, unique for the manager's life.
        connection: u64,
        /// Its outgoing frames.
        frames: outbox::Outbox,
        /// The peer's uid, for logs.
        uid: Option<u32>,
    },
    /// One request of a connection.
    Request {
        /// The connection.
        connection: u64,
        /// The request id, echoed in the reply.
        id: u64,
        /// What to do.
        operation: Operation,
    },
    /// The connection closed: its leases return, its waiting gets and subscriptions end.
    Disconnected {
        /// The connection.
        connection: u64,
    },
    /// The QUIC driver opened (and, inbound, admitted) a channel connection.
    ChannelOpened {
        /// The neighbour at the other end.
        neighbour: hopmq::ManagerName,
        /// Which way messages flow on it.
        direction: ChannelDirection,
        /// Its frames out, and its handle.
        channel: crate::channel::connection::Channel,
    },
    /// A frame from a channel connection, in arrival order.
    ChannelFrame {
        /// The driver's id of the connection.
        connection: u64,
        /// The frame.
        frame: crate::channel::frame::ChannelFrame,
    },
    /// An early copy of a batch (a datagram beside the connection's stream), taken only if it
    /// follows on from what the stream brought.
    EarlyBatch {
        /// The driver's id of the connection.
        connection: u64,
        /// The batch.
        batch: crate::channel::frame::Batch,
    },
    /// A channel connection ended.
    ChannelClosed {
        /// The driver's id of the connection.
        connection: u64,
        /// Why, for the log and status.
        reason: String,
    },
    /// The topology file was read again (it changed, SIGHUP, or `qmgr reload`): apply it, or
    /// record why it was refused.
    Topology(TopologyUpdate),
    /// The manager's state, for metrics.
    Snapshot {
        /// Where to send it.
        reply: tokio::sync::oneshot::Sender<hopmq::protocol::Status>,
    },
    /// A read of the web console (`crate::console`); never changes anything.
    Console(ConsoleQuery),
}

/// What the web console asks the core: reads only, answered at once.
#[derive(Debug)]
pub enum ConsoleQuery {
    /// Each local queue's counters of messages in and out, by name.
    QueueCounters {
        /// Where to send them.
        reply: tokio::sync::oneshot::Sender<Vec<QueueCounters>>,
    },
    /// Copies of up to `max` messages of a local queue in delivery order, as
    /// [`Operation::Browse`] answers them (at most one reply's worth of bytes).
    Browse {
        /// The queue.
        queue: String,
        /// At most this many.
        max: u32,
        /// Where to send them, or why not (an invalid queue name).
        reply:
            tokio::sync::oneshot::Sender<Result<Vec<hopmq::protocol::Delivery>, hopmq::ApiError>>,
    },
    /// What every other manager last advertised it holds (its queues and their depth), by
    /// name: for the map.
    Loads {
        /// Where to send them.
        reply: tokio::sync::oneshot::Sender<
            std::collections::BTreeMap<String, hopmq_routing::linkstate::Load>,
        >,
    },
}

/// One local queue's counters since the manager started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCounters {
    /// The queue.
    pub name: String,
    /// Messages that entered it: puts, arrivals, lease returns.
    pub entered: u64,
    /// Messages handed out by gets.
    pub taken: u64,
}

/// A topology file read again by [`crate::reload`].
#[derive(Debug)]
pub struct TopologyUpdate {
    /// The file, as configured.
    pub file: String,
    /// A fingerprint of the contents read (CRC32C, hex).
    pub version: String,
    /// The checked topology (already applied to the QUIC driver), or why it is refused, with
    /// file, line and reason.
    pub result: Result<hopmq_routing::Topology, String>,
    /// The `qmgr reload` request that asked for it (connection, request id), answered once it
    /// is applied or refused.
    pub requested_by: Option<ReloadRequest>,
}

/// A client's `qmgr reload`, passed by the core to [`crate::reload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadRequest {
    /// The client connection.
    pub connection: u64,
    /// Its request id.
    pub id: u64,
}

pub use crate::channel::connection::ChannelDirection;

impl From<crate::channel::connection::Event> for Command {
    fn from(event: crate::channel::connection::Event) -> Self {
        use crate::channel::connection::Event;
        match event {
            Event::Opened {
                neighbour,
                direction,
                channel,
            } => Command::ChannelOpened {
                neighbour,
                direction,
                channel,
            },
            Event::Frame { connection, frame } => Command::ChannelFrame { connection, frame },
            Event::EarlyBatch { connection, batch } => Command::EarlyBatch { connection, batch },
            Event::Closed { connection, reason } => Command::ChannelClosed { connection, reason },
        }
    }
}

/// Drives the core until `shutdown` fires and everything in flight has finished.
/// `commits` carries the commits the core makes in `journal` (through [`JournalStorage`]), in
/// the order it makes them.
pub async fn run(
    mut core: Core,
    mut commands: mpsc::Receiver<Command>,
    mut work: JournalWork,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    clock: Clock,
    journal: Journal,
) -> Core {
    let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(crate::channel::adjacency::HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded by COMMITS_IN_FLIGHT_MAX through the journal's request queue.
    let mut in_flight: VecDeque<Commit> = VecDeque::new();
    let mut batch = Vec::with_capacity(COMMANDS_PER_TURN_MAX);
    loop {
        while let Some(commit) = work.next_commit() {
            in_flight.push_back(commit);
        }
        let wake = core
            .next_deadline_ms()
            .map(|at| tokio::time::Instant::from_std(clock.instant_at(at)));
        let event = tokio::select! {
            biased;
            // First: cheap, and a core saturated by commits and commands must still tell its
            // neighbours it is alive, or they route around it and the load flaps.
            _ = heartbeat.tick() => Event::Heartbeat,
            result = oldest(&mut in_flight), if !in_flight.is_empty() => Event::Committed(result),
            command = commands.recv() => Event::Command(command),
            () = sleep_until(wake) => Event::Timer,
            _ = maintenance.tick() => Event::Maintenance,
            changed = shutdown.changed(), if !core.shutting_down() => {
                Event::Shutdown(changed.is_err() || *shutdown.borrow())
            }
        };
        // The (first few) appends this event makes are committed once it is handled: here, on
        // this thread, when nothing else waits for the core and the writer thread is idle
        // (a lone commit then skips two thread hand-overs), else by the writer thread.
        journal.hold();
        let now = clock.now();
        match event {
            Event::Heartbeat => core.on_heartbeat(now),
            Event::Committed(result) => {
                in_flight.pop_front();
                core.on_commit(result, now);
            }
            Event::Command(Some(command)) => {
                // Whatever else is queued is handled in the same turn, so runs of puts share
                // journal groups (see `Core::on_commands`).
                batch.push(command);
                while batch.len() < COMMANDS_PER_TURN_MAX {
                    match commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
                core.on_commands(batch.drain(..), now);
            }
            Event::Command(None) => core.begin_shutdown(),
            Event::Timer => core.on_timer(now),
            Event::Maintenance => core.on_maintenance(now),
            Event::Shutdown(true) => core.begin_shutdown(),
            Event::Shutdown(false) => {}
        }
        journal.release(commands.is_empty());
        if core.finished() {
            return core;
        }
    }
}

/// What woke the run loop.
enum Event {
    Heartbeat,
    Committed(Result<Vec<crate::store::Location>, crate::store::StoreError>),
    Command(Option<Command>),
    Timer,
    Maintenance,
    Shutdown(bool),
}

/// The outcome of the oldest commit in flight (which stays queued until the caller pops it).
async fn oldest(
    in_flight: &mut VecDeque<Commit>,
) -> Result<Vec<crate::store::Location>, crate::store::StoreError> {
    match in_flight.front_mut() {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
