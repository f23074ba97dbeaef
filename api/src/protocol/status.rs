//! A manager's state as `qmgr status` shows it: [`Status`] and its parts.
//!
//! Fields are only ever appended (with `#[serde(default)]`), so an older manager's status
//! still decodes.

use serde::{Deserialize, Serialize};

/// A manager's state, as `qmgr status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The manager's name.
    pub manager: String,
    /// Its software version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Local queues, by name.
    pub queues: Vec<QueueStatus>,
    /// Messages put since start.
    pub messages_put: u64,
    /// Messages handed to applications since start (gets and leased gets).
    pub messages_delivered: u64,
    /// The journal.
    pub store: StoreStatus,
    /// The links to neighbours, by name.
    pub links: Vec<LinkStatus>,
    /// The routes in force, by destination.
    pub routes: Vec<RouteStatus>,
    /// Messages handed on to a neighbour and acknowledged by it, since start.
    pub messages_forwarded: u64,
    /// Messages dropped because they expired before reaching their queue, since start.
    pub messages_expired: u64,
    /// The topology in force, and the last one refused.
    pub topology: TopologyStatus,
    /// Every link of the topology, with its state as this manager knows it (its own links
    /// first-hand, the others from link-state advertisements).
    pub network: Vec<NetworkLinkStatus>,
    /// Waiting messages (in a transmission queue or `hopmq.held`) moved to another queue by
    /// re-routing since start: after a route change, a topology edit or a drain. Appended;
    /// absent from an older manager's status.
    #[serde(default)]
    pub messages_rerouted: u64,
    /// Gets waiting for a message (or for the put that creates their queue) right now.
    /// Appended; absent from an older manager's status.
    #[serde(default)]
    pub gets_waiting: u64,
    /// Copies of messages dropped by custody because the first copy had arrived (a resend
    /// around a failed relay, or a relay returning), since start. Appended.
    #[serde(default)]
    pub duplicates_dropped: u64,
    /// Messages in flight to a neighbour that the route moved away from, sent again along
    /// the new route, since start. Appended.
    #[serde(default)]
    pub messages_resent: u64,
    /// This manager's own messages that a neighbour acknowledged and their destination has
    /// not confirmed yet, per destination manager. Appended.
    #[serde(default)]
    pub custody: Vec<CustodyStatus>,
    /// This manager's own messages their destination confirmed, since start. Appended.
    #[serde(default)]
    pub messages_confirmed: u64,
    /// Arrivals held here, per origin, until an earlier message of the same origin, queue
    /// and priority arrives (it took a slower way round a failure). Appended.
    #[serde(default)]
    pub held_for_order: Vec<HeldStatus>,
    /// Held arrivals that went on without the earlier message, at the custody timeout, since
    /// start (each carries the `hopmq.unordered` header). Appended.
    #[serde(default)]
    pub messages_unordered: u64,
    /// Non-persistent publications (shares of one, for other managers) dropped here since
    /// start: no route, no connection taking them, or past the hop limit. Appended.
    #[serde(default)]
    pub publications_dropped: u64,
    /// Delivery reports this manager made (arrivals, deliveries and exceptions of messages
    /// that asked for them), since start. Appended.
    #[serde(default)]
    pub reports_made: u64,
}

/// What a destination holds for one origin, to keep its put order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldStatus {
    /// The manager that sent them (their custodian).
    pub origin: String,
    /// Messages held.
    pub messages: u64,
    /// How long the oldest has been held, in milliseconds.
    pub oldest_ms: u64,
}

/// What a manager keeps for one destination manager until it confirms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyStatus {
    /// The destination manager.
    pub destination: String,
    /// Messages kept for its confirmation.
    pub messages: u64,
    /// How long the oldest has waited, in milliseconds.
    pub oldest_ms: Option<u64>,
    /// Copies sent again to it since start (its way broke, or it answered without them).
    pub resent: u64,
}

/// The topology a manager runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyStatus {
    /// The file it was read from; `None` for a standalone manager.
    pub file: Option<String>,
    /// A fingerprint of the file's contents in force (CRC32C, hex).
    pub version: String,
    /// When it was applied, in milliseconds since the Unix epoch.
    pub applied_at_ms: u64,
    /// Every manager it declares, by name.
    pub managers: Vec<String>,
    /// The last edit refused since then, if any.
    pub refused: Option<RefusedTopology>,
}

/// A topology edit that was not applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedTopology {
    /// The fingerprint of the refused contents.
    pub version: String,
    /// Why, with file and line.
    pub error: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One link of the network as a manager sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLinkStatus {
    /// Its two ends, in name order.
    pub between: (String, String),
    /// Its cost.
    pub cost: u32,
    /// `up`, `down` (an end reports it dead) or `drained` (an end took it out of service).
    pub state: String,
    /// The ends that report it down or drained.
    pub reported_by: Vec<String>,
}

/// One link to a neighbour, as this manager sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The neighbour.
    pub neighbour: String,
    /// Whether the topology in force declares the link (a link only in the journal is not).
    pub linked: bool,
    /// The outgoing channel: `up`, `handshaking`, `down` or `broken`.
    pub state: String,
    /// Whether the neighbour's channel to this manager is connected.
    pub inbound: bool,
    /// The outgoing connection's smoothed round-trip time, in microseconds.
    pub rtt_us: Option<u64>,
    /// Messages waiting for this neighbour, in flight ones included.
    pub transmission_depth: u64,
    /// Age of the oldest of them, in milliseconds.
    pub transmission_oldest_age_ms: Option<u64>,
    /// Messages sent and not yet acknowledged.
    pub in_flight: u64,
    /// Messages sent since start (resends included, and non-persistent publications, which
    /// are never acknowledged).
    pub messages_sent: u64,
    /// Their body bytes.
    pub bytes_sent: u64,
    /// Messages the neighbour acknowledged since start.
    pub messages_acked: u64,
    /// Their body bytes.
    pub bytes_acked: u64,
    /// Messages received from the neighbour and stored, since start.
    pub messages_received: u64,
    /// Resent messages recognised by id and not stored again, since start.
    pub duplicates_dropped: u64,
    /// Outgoing connections made since start.
    pub connects: u64,
    /// Why the channel last closed, if it did.
    pub last_error: Option<String>,
    /// How routing sees the link: `up`, `down` (nothing heard within the dead interval) or
    /// `drained` (taken out of service here).
    pub routing: String,
    /// Milliseconds since anything was last heard from the neighbour.
    pub heard_ms_ago: Option<u64>,
    /// Publications received from the neighbour, since start (each is one copy, whatever
    /// the number of managers it goes on to). Appended.
    #[serde(default)]
    pub publications_received: u64,
    /// Copies of publications given to this link, since start: one per publication that
    /// needs it, whatever the number of managers beyond. Appended.
    #[serde(default)]
    pub publications_sent: u64,
    /// Batches from the neighbour taken from an early copy (a datagram that overtook the
    /// stream held up by a lost packet), since start. Appended.
    #[serde(default)]
    pub early_batches: u64,
}

/// One route in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The destination manager.
    pub destination: String,
    /// The neighbour messages for it go to; `None` when unreachable.
    pub next_hop: Option<String>,
    /// The path's cost.
    pub cost: Option<u64>,
}

/// One local queue's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Its name.
    pub name: String,
    /// Messages waiting (leased ones excluded).
    pub depth: u64,
    /// Messages handed out under a lease and not yet settled.
    pub leased: u64,
    /// Bytes of the waiting messages' bodies.
    pub bytes: u64,
    /// Age of the oldest waiting message, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// Its depth limit.
    pub max_depth: u64,
}

/// The journal's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Segment files on disk.
    pub segments: u64,
    /// Their total size.
    pub bytes: u64,
    /// Records in the last group commit.
    pub last_batch_records: u64,
    /// Group commits since start.
    pub commits: u64,
    /// Records made durable since start.
    pub records: u64,
    /// `always` or `never`.
    pub sync: String,
}
