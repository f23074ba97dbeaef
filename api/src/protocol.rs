//! The app⇄manager protocol: the frames that cross the local Unix socket, and their codec.
//!
//! A frame is a little-endian `u32` length followed by that many bytes of postcard. postcard is
//! not self-describing, so every frame is an enum whose variants are only ever appended, and the
//! first exchange is a handshake that fixes the protocol version: the client sends
//! [`ClientFrame::Hello`], the manager answers [`ServerFrame::Welcome`] or closes the connection
//! after a [`ServerFrame::Refused`].
//!
//! Requests carry ids chosen by the client, so one connection multiplexes concurrent blocking
//! gets, puts and notifications; every request gets exactly one [`ServerFrame::Reply`] with its
//! id, and notifications arrive as [`ServerFrame::Event`]s tagged with their subscription.
//!
//! Invariant: a decoder never allocates what a length field claims before checking it against
//! [`FRAME_BYTES_MAX`], and never panics on garbage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ApiError;
use crate::message::{MessageId, Trace};

mod operator;
mod plan;
mod pubsub;
mod status;

pub use operator::{
    DEAD_LETTER_QUEUE, DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER, LeftMessages, Listing,
    MessageSummary, MoveOutcome, MoveRequest, MoveTarget, Selection,
};
pub use plan::{
    PlannedMove, ReloadOutcome, RouteChange, StrandedMessages, TopologyPlan, UnreachableQueue,
};
pub use pubsub::{
    DurableSubscription, Interest, SubscriptionListing, TOPIC_HEADER, TransientSubscription,
};
pub use status::{
    CustodyStatus, HeldStatus, LinkStatus, NetworkLinkStatus, QueueStatus, RefusedTopology,
    RouteStatus, Status, StoreStatus, TopologyStatus,
};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 3;

/// The largest message body any manager accepts; a manager's `max_message_bytes` setting is
/// capped at this.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Room for a frame's envelope around one message body: headers, ids, addresses.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 1024 * 1024;

/// The largest frame either side sends or accepts.
pub const FRAME_BYTES_MAX: usize = MESSAGE_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX;

/// The most messages one request may put or take at once.
pub const BATCH_MESSAGES_MAX: u32 = 4096;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// Buffer size each way on a local API socket, client and manager alike: many small frames
/// per syscall under load.
pub const SOCKET_BUFFER_BYTES: usize = 64 * 1024;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The first frame on a connection.
    Hello(Hello),
    /// An operation; answered by one [`ServerFrame::Reply`] with the same id.
    Request(Request),
}

/// What a manager sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The handshake failed; the manager closes the connection after this frame.
    Refused(ApiError),
    /// The answer to the request with id `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// What happened.
        result: Result<Reply, ApiError>,
    },
    /// A notification for a subscription made with [`Operation::Subscribe`].
    Event {
        /// The subscription, as returned by [`Reply::Subscribed`].
        subscription: u64,
        /// A copy of the message that was put (it stays in its queue), or a publication
        /// for a subscription made with [`Operation::SubscribeTopic`].
        message: Delivery,
    },
    /// Publications a transient subscription lost because its client fell behind (see
    /// [`Operation::SubscribeTopic`]); sent before the next publication it receives.
    Missed {
        /// The subscription.
        subscription: u64,
        /// How many were lost since the last report.
        messages: u64,
    },
}

/// The client's side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the client.
    pub protocol_version: u32,
    /// A free-form name for logs (program name, pid).
    pub client_name: String,
}

/// The manager's side of the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version in force for this connection.
    pub protocol_version: u32,
    /// The manager's name.
    pub manager: String,
    /// The manager's software version.
    pub server_version: String,
}

/// One operation with the id its reply will carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, unique among its requests in flight on this connection.
    pub id: u64,
    /// What to do.
    pub operation: Operation,
}

/// Which messages of a queue a get may take.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Only a message with this correlation id.
    pub correlation_id: Option<String>,
}

/// Everything an application can ask of its manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Operation {
    /// Put one message. Reply: [`Reply::Put`] once durable (or accepted, if non-persistent).
    Put {
        /// `QUEUE` or `QUEUE@MANAGER`.
        address: String,
        /// The message.
        message: OutgoingMessage,
    },
    /// Put several messages atomically: all are stored or none. Reply: [`Reply::Put`].
    PutBatch {
        /// (address, message) pairs, at most [`BATCH_MESSAGES_MAX`].
        messages: Vec<(String, OutgoingMessage)>,
    },
    /// Take up to `max` messages, waiting up to `timeout_ms` for the first. With `lease_ms`,
    /// the messages are leased: each must be acked, or it returns to the queue when its lease
    /// ends or the connection closes. Reply: [`Reply::Messages`], empty on timeout.
    Get {
        /// A local queue.
        queue: String,
        /// How long to wait for a first message; 0 never waits (poll).
        timeout_ms: u64,
        /// At most this many messages, 1 to [`BATCH_MESSAGES_MAX`]; fewer when their bodies
        /// and headers pass half of [`FRAME_BYTES_MAX`] (a reply carries at least one
        /// message).
        max: u32,
        /// Which messages qualify.
        selector: Selector,
        /// Lease duration, for a leased get; `None` removes the messages for good.
        lease_ms: Option<u64>,
    },
    /// Settle leased deliveries: remove them for good. Reply: [`Reply::Done`].
    Ack {
        /// Lease ids from [`Delivery::lease`].
        leases: Vec<u64>,
    },
    /// Return leased deliveries to their queue at once. Reply: [`Reply::Done`].
    Nack {
        /// Lease ids from [`Delivery::lease`].
        leases: Vec<u64>,
    },
    /// Copies of up to `max` messages in delivery order, none removed. Reply:
    /// [`Reply::Messages`].
    Browse {
        /// A local queue.
        queue: String,
        /// At most this many.
        max: u32,
    },
    /// Be told of every message put into `queue` from now on. Reply: [`Reply::Subscribed`],
    /// then [`ServerFrame::Event`]s.
    Subscribe {
        /// A local queue.
        queue: String,
    },
    /// Stop a subscription. Reply: [`Reply::Done`].
    Unsubscribe {
        /// From [`Reply::Subscribed`].
        subscription: u64,
    },
    /// Create a local queue (idempotent). Reply: [`Reply::Done`].
    Declare {
        /// Its name.
        queue: String,
        /// The most messages it may hold; `None` for the manager's default.
        max_depth: Option<u64>,
    },
    /// Delete an empty local queue. Reply: [`Reply::Done`].
    Delete {
        /// Its name.
        queue: String,
    },
    /// The manager's state. Reply: [`Reply::Status`].
    Status,
    /// Read the topology file again and apply it if it is valid. Reply: [`Reply::Reloaded`];
    /// an invalid file is refused with its file, line and reason, the old topology staying.
    Reload,
    /// What applying `text` as the topology would change, without applying it. Reply:
    /// [`Reply::Plan`].
    PlanTopology {
        /// The file's name, for error messages.
        file: String,
        /// The file's contents.
        text: String,
    },
    /// Take the link to `neighbour` out of service (`drained`) or back into it. A drained link
    /// carries no new traffic (routes avoid it; messages in flight on it still finish) and
    /// stays drained across restarts. Reply: [`Reply::Done`].
    SetLink {
        /// The neighbour.
        neighbour: String,
        /// True to drain, false to return it to service.
        drained: bool,
    },
    /// Remove the selected messages of a local queue (leased ones excepted). Reply:
    /// [`Reply::Moved`].
    RemoveMessages {
        /// A local queue.
        queue: String,
        /// Which messages.
        selection: Selection,
    },
    /// Move the selected messages of a local queue to an address. Reply: [`Reply::Moved`].
    MoveMessages(MoveRequest),
    /// Summaries (no bodies) of the selected messages of a local queue. Reply:
    /// [`Reply::Listing`].
    ListMessages {
        /// A local queue.
        queue: String,
        /// Which messages.
        selection: Selection,
        /// At most this many summaries (all are counted).
        max: u32,
    },
    /// Put several messages atomically, as [`Operation::PutBatch`], and answer only once each
    /// is durably in its destination manager (confirmed back through custody; a message for a
    /// local queue is there once durable). Reply: [`Reply::Put`]; past `timeout_ms`,
    /// [`crate::ApiError::NotArrived`] (the messages are durable here and still on their way).
    PutArrived {
        /// (address, message) pairs, at most [`BATCH_MESSAGES_MAX`].
        messages: Vec<(String, OutgoingMessage)>,
        /// How long to wait for the confirmations.
        timeout_ms: u64,
    },
    /// Publish each message to its topic, atomically: every copy for this manager's
    /// subscriptions and for the managers with matching interest is stored, or none is.
    /// Reply: [`Reply::Put`] once durable here (or accepted, if non-persistent).
    Publish {
        /// (topic, message) pairs, at most [`BATCH_MESSAGES_MAX`].
        publications: Vec<(String, OutgoingMessage)>,
        /// Keep each as its topic's retained publication at this manager: every subscription
        /// made later, anywhere, whose filter matches the topic receives it once.
        retain: bool,
    },
    /// Receive the publications that match `filter` while this connection lasts. Reply:
    /// [`Reply::Subscribed`], then [`ServerFrame::Event`]s and, if the client falls behind,
    /// [`ServerFrame::Missed`]. Ended by [`Operation::Unsubscribe`].
    SubscribeTopic {
        /// A topic filter (`*` one token, `>` the rest).
        filter: String,
    },
    /// Create a durable subscription: a local queue `name` that receives the publications
    /// matching `filter` (idempotent with the same filter). Reply: [`Reply::Done`].
    CreateSubscription {
        /// Its name, also its queue's.
        name: String,
        /// A topic filter.
        filter: String,
        /// Its queue's depth limit; `None` for the manager's default.
        max_depth: Option<u64>,
    },
    /// Delete a durable subscription and its queue with what it holds. Reply:
    /// [`Reply::Done`].
    DeleteSubscription {
        /// Its name.
        name: String,
    },
    /// This manager's subscriptions and the interest it knows of. Reply:
    /// [`Reply::Subscriptions`].
    ListSubscriptions,
    /// Put `message` to `address` as a request and wait for its reply: the manager sets its
    /// `reply_to` to this connection's private reply queue (made on first use, removed when the
    /// connection ends) and its correlation id (unless given, its id), and answers with the
    /// message put back to that queue with that correlation id. Reply: [`Reply::Messages`]
    /// with the reply, or empty if none came within `timeout_ms` (a reply that comes later is
    /// dead-lettered, never delivered to anyone).
    Request {
        /// `QUEUE` or `QUEUE@MANAGER`.
        address: String,
        /// The request.
        message: OutgoingMessage,
        /// How long to wait for the reply, from now.
        timeout_ms: u64,
    },
    /// Reply to a request this connection holds leased: `message` goes to the request's
    /// `reply_to` with its correlation id, and the request is acknowledged, in one atomic
    /// write (both or neither). Reply: [`Reply::Put`].
    Reply {
        /// The request's lease, from [`Delivery::lease`].
        lease: u64,
        /// The reply.
        message: OutgoingMessage,
    },
    /// Publish `message` to `topic` as a request (scatter) and gather the replies of its
    /// subscribers for `timeout_ms` (gather): the manager sets its `reply_to` and correlation
    /// id as for [`Operation::Request`]. Reply: [`Reply::Messages`] with the first replies to
    /// come (at most `max_replies`), or empty if none came within `timeout_ms`; ask for the
    /// others with [`Operation::Replies`] until then. Replies that come after `timeout_ms`, or
    /// past `max_replies`, are dead-lettered with why.
    RequestMany {
        /// The topic its servers subscribe to.
        topic: String,
        /// The request.
        message: OutgoingMessage,
        /// How long replies are gathered, from now.
        timeout_ms: u64,
        /// The most replies wanted.
        max_replies: u32,
    },
    /// More replies to this connection's [`Operation::RequestMany`] with this correlation id,
    /// waiting up to `timeout_ms` (never past the request's own timeout). Reply:
    /// [`Reply::Messages`], empty once no more came or the gathering ended.
    Replies {
        /// The request's correlation id, as its replies carry it.
        correlation_id: String,
        /// How long to wait for one, from now.
        timeout_ms: u64,
        /// The most replies to take.
        max: u32,
    },
}

/// Queue names of private reply queues (see [`Operation::Request`]) start with this; the
/// queue's name follows, so a reply's address is `hopmq.reply.…@MANAGER`.
pub const REPLY_QUEUE_PREFIX: &str = "hopmq.reply.";

/// A request whose correlation id starts with this is a trace-route probe (`qmgr trace`): it
/// travels like a message, is never enqueued, and is answered by the manager where it arrives
/// or stops, with [`PROBE_RESULT_HEADER`], [`PROBE_REASON_HEADER`] and, as its body, one line
/// `MANAGER AT_MS` per manager it reached (milliseconds since the epoch), the answering one
/// last. Send it non-persistent.
pub const PROBE_CORRELATION_PREFIX: &str = "hopmq.probe.";

/// A probe's answer: `arrived` or `stopped`.
pub const PROBE_RESULT_HEADER: &str = "hopmq.probe_result";

/// A stopped probe's answer: where and why it stopped.
pub const PROBE_REASON_HEADER: &str = "hopmq.probe_reason";

/// A reply's header saying that its server failed the request, and how (`qmgr reply` sets it
/// when its command exits non-zero); the body is what the server had to say nonetheless.
pub const REPLY_ERROR_HEADER: &str = "hopmq.error";

/// A manager's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The ids assigned to the put messages, in request order.
    Put(Vec<MessageId>),
    /// Messages taken, leased or browsed; empty when a get timed out.
    Messages(Vec<Delivery>),
    /// The id of a new subscription.
    Subscribed(u64),
    /// The operation succeeded and has nothing to say.
    Done,
    /// The manager's state (boxed: it is much larger than the other replies).
    Status(Box<Status>),
    /// The outcome of a reload that was applied (possibly changing nothing).
    Reloaded(ReloadOutcome),
    /// What a topology would change.
    Plan(TopologyPlan),
    /// What a removal or a move of messages did.
    Moved(MoveOutcome),
    /// A queue's messages, without bodies.
    Listing(Listing),
    /// Subscriptions and interest.
    Subscriptions(SubscriptionListing),
}

/// A message as an application submits it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// Time to live from the put, in milliseconds; expired messages are never delivered.
    pub ttl_ms: Option<u64>,
    /// Ties a reply to its request.
    pub correlation_id: Option<String>,
    /// Where replies should go, as an address.
    pub reply_to: Option<String>,
    /// False: kept in memory only, lost if the manager stops.
    pub persistent: bool,
}

/// A message as a manager hands it out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Assigned at put; unique.
    pub id: MessageId,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Application headers, plus `hopmq.*` headers the managers added (a dead-letter reason).
    pub headers: BTreeMap<String, String>,
    /// 0 to 9.
    pub priority: u8,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
    /// As put.
    pub correlation_id: Option<String>,
    /// As put.
    pub reply_to: Option<String>,
    /// As put.
    pub persistent: bool,
    /// The manager where it was first put.
    pub origin: String,
    /// How many times it has been handed out, this delivery included.
    pub delivery_count: u32,
    /// The managers it passed through, with times.
    pub trace: Vec<Trace>,
    /// The lease to ack or nack, for a leased get.
    pub lease: Option<u64>,
}

/// A [`Delivery`] borrowed from where a manager keeps the message: it encodes to the bytes of
/// the `Delivery` with the same fields, so a manager answers a get without first copying each
/// body, origin and trace entry into owned values ([`encode_messages_reply`]).
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRef<'a> {
    /// See [`Delivery::id`].
    pub id: MessageId,
    /// See [`Delivery::body`].
    #[serde(with = "serde_bytes")]
    pub body: &'a [u8],
    /// See [`Delivery::headers`]: in key order without repeats, as the map would be.
    pub headers: &'a [(&'a str, &'a str)],
    /// See [`Delivery::priority`].
    pub priority: u8,
    /// See [`Delivery::expires_at_ms`].
    pub expires_at_ms: Option<u64>,
    /// See [`Delivery::correlation_id`].
    pub correlation_id: Option<&'a str>,
    /// See [`Delivery::reply_to`].
    pub reply_to: Option<&'a str>,
    /// See [`Delivery::persistent`].
    pub persistent: bool,
    /// See [`Delivery::origin`].
    pub origin: &'a str,
    /// See [`Delivery::delivery_count`].
    pub delivery_count: u32,
    /// See [`Delivery::trace`]: (manager, at_ms) pairs.
    pub trace: &'a [(&'a str, u64)],
    /// See [`Delivery::lease`].
    pub lease: Option<u64>,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// A length prefix over the limit; nothing was allocated for it.
    #[error("frame of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What the prefix claimed.
        bytes: usize,
        /// [`FRAME_BYTES_MAX`], or less where less is allowed (a handshake).
        limit: usize,
    },
    /// The bytes are not a valid frame.
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
    /// The connection failed, or ended inside a frame.
    #[error("connection error: {0}")]
    Io(std::io::Error),
}

// Not `#[from]`: that would also make the cause the error's `source`, and the message already
// states it, so a chain printed whole (anyhow's `{:#}`) would say it twice.
impl From<postcard::Error> for FrameError {
    fn from(error: postcard::Error) -> Self {
        Self::Malformed(error)
    }
}

impl From<std::io::Error> for FrameError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// Encodes `frame` with its length prefix.
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(frame, &mut out)?;
    Ok(out)
}

/// Appends `frame` with its length prefix to `out` (left as it was on an error): a writer
/// that reuses one buffer encodes without growing a new one, copy by copy, for every frame.
pub fn encode_into<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    // `to_io`: a Vec's `Write` copies a body with one memcpy, `Extend` byte by byte.
    if let Err(e) = postcard::to_io(frame, &mut *out) {
        out.truncate(start);
        return Err(e.into());
    }
    finish_frame(out, start)
}

/// The frame `ServerFrame::Reply { id, result: Ok(Reply::Messages(..)) }` of `deliveries`,
/// length prefix included: byte for byte what [`encode`] makes of the owned frame.
pub fn encode_messages_reply(
    id: u64,
    deliveries: &[DeliveryRef<'_>],
) -> Result<Vec<u8>, FrameError> {
    let mut out =
        Vec::with_capacity(64 + deliveries.iter().map(|d| d.body.len() + 128).sum::<usize>());
    encode_into(
        &ServerFrame::Reply {
            id,
            result: Ok(Reply::Messages(Vec::new())),
        },
        &mut out,
    )?;
    // The messages are the frame's last field, so its encoding ends with their count, 0 for
    // none (one byte): the deliveries, count first, take its place.
    if out.pop() != Some(0) {
        return Err(FrameError::Malformed(
            postcard::Error::SerializeSeqLengthUnknown,
        ));
    }
    postcard::to_io(deliveries, &mut out)?;
    let length = out.len() - 4;
    if length > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            bytes: length,
            limit: FRAME_BYTES_MAX,
        });
    }
    out[..4].copy_from_slice(&(length as u32).to_le_bytes());
    Ok(out)
}

/// Bytes of encoding buffer a writer keeps between writes; a larger one (after a very large
/// message) is let go.
pub const WRITE_BUFFER_KEPT_BYTES: usize = 1024 * 1024;

/// Empties a writer's encoding buffer for its next write, letting go of one grown past
/// [`WRITE_BUFFER_KEPT_BYTES`].
pub fn reset_write_buffer(buffer: &mut Vec<u8>) {
    buffer.clear();
    if buffer.capacity() > WRITE_BUFFER_KEPT_BYTES {
        *buffer = Vec::new();
    }
}

/// Decodes one frame's payload (without its length prefix).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

/// The largest frame a client may send before its handshake is done: a `Hello` is a version
/// and a name, so anything larger is refused before its bytes are read.
pub const HELLO_BYTES_MAX: usize = 64 * 1024;

/// Memory a frame being read takes ahead of its bytes: a peer that announces a large frame
/// and sends it slowly (or never) holds no more than this beyond what it actually sent.
const READ_AHEAD_BYTES_MAX: usize = 1024 * 1024;

/// Reads one frame. `Err(Closed)` when the peer closed cleanly between frames.
pub async fn read_frame<T, R>(reader: &mut R) -> Result<T, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    read_frame_within(reader, FRAME_BYTES_MAX).await
}

/// Reads one frame of at most `limit` bytes (checked before anything is allocated).
pub async fn read_frame_within<T, R>(reader: &mut R, limit: usize) -> Result<T, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let length = u32::from_le_bytes(prefix) as usize;
    let limit = limit.min(FRAME_BYTES_MAX);
    if length > limit {
        return Err(FrameError::TooLarge {
            bytes: length,
            limit,
        });
    }
    // Filled from the reader without being zeroed first: a frame's bytes are overwritten
    // anyway, and zeroing them was 7% of the first manager's instructions in a forwarding
    // bench and 13% of the client's (BENCHMARKS.md, session 12). Grown as bytes come, not
    // to the announced length at once.
    let mut payload = Vec::with_capacity(length.min(READ_AHEAD_BYTES_MAX));
    while payload.len() < length {
        // Limited to the frame's rest: the bytes after it are the next frame's.
        let rest = length - payload.len();
        payload.reserve(rest.min(READ_AHEAD_BYTES_MAX));
        if (&mut *reader)
            .take(rest as u64)
            .read_buf(&mut payload)
            .await?
            == 0
        {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    decode(&payload)
}

/// Writes the length prefix of the frame that starts at `start` of `out` (its four bytes
/// reserved), or takes the frame back out if it is over [`FRAME_BYTES_MAX`].
fn finish_frame(out: &mut Vec<u8>, start: usize) -> Result<(), FrameError> {
    let length = out.len() - start - 4;
    if length > FRAME_BYTES_MAX {
        out.truncate(start);
        return Err(FrameError::TooLarge {
            bytes: length,
            limit: FRAME_BYTES_MAX,
        });
    }
    out[start..start + 4].copy_from_slice(&(length as u32).to_le_bytes());
    Ok(())
}

/// `ServerFrame::Event`'s variant index: postcard writes it as a one-byte varint.
const EVENT_VARIANT: u8 = 3;

/// Appends the frame `ServerFrame::Event { subscription, message }` to `out`, length prefix
/// included, from `message` already encoded (`postcard::to_allocvec(&delivery)`): a manager
/// encodes a message once and sends its bytes to every subscriber. The bytes are exactly those
/// [`encode`] makes of the same frame.
pub fn encode_event_into(
    subscription: u64,
    message: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(EVENT_VARIANT);
    let mut varint = [0u8; 10];
    let varint = postcard::to_slice(&subscription, &mut varint)?;
    out.extend_from_slice(varint);
    out.extend_from_slice(message);
    finish_frame(out, start)
}

/// Writes one frame (not flushed: callers batch frames and flush once).
pub async fn write_frame<T, W>(writer: &mut W, frame: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&encode(frame)?).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
