//! The async client: one Unix-socket connection to the local manager, multiplexing every call an
//! application makes.
//!
//! Owns: the [`Client`] handle, its calls, and which connection is current. The connection
//! itself (its writer and reader tasks, and the routing table that maps request ids to waiting
//! calls and subscription ids to their event channels) is in `connection`; subscriptions and
//! notify handlers are in `subscription`, the prefetching consumer in `consumer`.
//!
//! How a call travels: the caller registers a oneshot under a fresh request id in the routing
//! table, hands the frame to the writer task through a bounded channel, and awaits the oneshot.
//! The reader task decodes [`ServerFrame`](crate::protocol::ServerFrame)s and completes the
//! oneshot whose id a [`ServerFrame::Reply`](crate::protocol::ServerFrame::Reply) carries, or
//! forwards a [`ServerFrame::Event`](crate::protocol::ServerFrame::Event) to its subscription.
//!
//! Invariants (of the whole client, children included):
//! - The routing table is the one piece of state callers and the reader share. It lives behind
//!   a mutex rather than inside a task because a reply can arrive before any registration
//!   message sent to such a task would have been read; the lock is never held across an
//!   `.await`.
//! - Once a connection is marked closed, nothing is registered on it again, and every call
//!   that was registered is answered with [`ClientError::ConnectionLost`]. A call in flight is
//!   never retried (a put might have been applied); the next call opens a fresh connection.
//! - A subscription is added to the table by the reader itself, before it reads the frame after
//!   [`Reply::Subscribed`], so no event for it can be missed.
//! - Nothing the manager sends makes this module panic: garbage closes the connection.
//!
//! Cancellation: the protocol has no way to withdraw a request. Dropping a call's future (in a
//! `select!` or a `timeout`) only stops waiting for its reply; the manager still carries the
//! call out, so a destructive get abandoned that way loses the messages it takes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::message::{Message, MessageId};
use crate::protocol::{
    BATCH_MESSAGES_MAX, FrameError, Operation, ReloadOutcome, Reply, Selector, Status, TopologyPlan,
};

mod connection;
mod consumer;
mod conversation;
mod operator;
mod pubsub;
mod subscription;
#[cfg(test)]
mod tests;

use connection::{Connection, lock};
pub use consumer::Consumer;
pub use subscription::{NotifyHandle, Publication, Subscription, TopicSubscription};

/// The environment variable that names the manager's socket.
pub const SOCKET_ENV: &str = "HOPMQ_SOCKET";

/// Where the manager's socket is when [`SOCKET_ENV`] is not set: the default data folder of a
/// manager started in the current directory.
pub const SOCKET_PATH_DEFAULT: &str = "./qmgr-data/qmgr.sock";

/// How long the manager has to answer the handshake; a listener that is not a manager must not
/// hang `connect` forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Events buffered per subscription before the reader waits for the application to take them.
/// While a subscription's buffer is full, the whole connection waits (replies included): events
/// are never dropped silently.
pub const SUBSCRIPTION_EVENTS_MAX: usize = 1024;

/// How long one prefetch request of a [`Consumer`] waits on the manager for a first message. It
/// only sets the cadence of an idle consumer's requests; a busy queue answers at once.
pub const CONSUMER_WAIT: Duration = Duration::from_secs(5);
/// Gets a consumer keeps in flight: one is served while the other waits for its removal to
/// be made durable.
pub const CONSUMER_GETS_IN_FLIGHT: usize = 2;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager's socket could not be reached.
    #[error("cannot connect to the manager at {path}: {error}")]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The manager refused the handshake (a protocol version mismatch names both versions).
    #[error("the manager refused the connection: {0}")]
    Handshake(ApiError),
    /// The manager did not answer the handshake within [`HANDSHAKE_TIMEOUT`].
    #[error("the manager did not answer the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The manager refused or failed the operation.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The manager sent something the protocol does not allow at that point.
    #[error("the manager broke the protocol: {0}")]
    Protocol(String),
    /// The connection ended while the call was in flight. Whether the manager carried it out is
    /// unknown; the next call reconnects.
    #[error("the connection to the manager was lost")]
    ConnectionLost,
    /// The manager answered with a reply of the wrong kind for the request.
    #[error("unexpected reply to {operation}: {reply}")]
    UnexpectedReply {
        /// The request's kind.
        operation: &'static str,
        /// What came back.
        reply: String,
    },
    /// The call's arguments are invalid; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A request's reply did not come within its timeout (a late one is dead-lettered).
    #[error("no reply within {0:?}")]
    NoReply(Duration),
}

/// The socket [`Client::connect`] uses: `$HOPMQ_SOCKET`, else [`SOCKET_PATH_DEFAULT`].
pub fn socket_path_default() -> PathBuf {
    socket_path_from(std::env::var_os(SOCKET_ENV))
}

/// The socket for a value of [`SOCKET_ENV`] (`None` when unset): the value unless empty, else
/// [`SOCKET_PATH_DEFAULT`].
fn socket_path_from(value: Option<std::ffi::OsString>) -> PathBuf {
    value
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SOCKET_PATH_DEFAULT))
}

/// Options of [`Client::get_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOptions {
    /// How long to wait for a first message; zero never waits.
    pub timeout: Duration,
    /// At most this many messages, 1 to [`BATCH_MESSAGES_MAX`]; fewer when their bodies and
    /// headers pass half of [`crate::protocol::FRAME_BYTES_MAX`] (a reply carries at least one
    /// message).
    pub max: u32,
    /// Only messages with this correlation id.
    pub correlation_id: Option<String>,
    /// Lease the messages for this long instead of removing them: each must be acked.
    pub lease: Option<Duration>,
}

impl Default for GetOptions {
    /// One message, no wait, any correlation id, removed for good.
    fn default() -> Self {
        Self {
            timeout: Duration::ZERO,
            max: 1,
            correlation_id: None,
            lease: None,
        }
    }
}

/// A connection to the local queue manager. Cheap to clone: clones share one connection, and
/// calls made concurrently on it are multiplexed. A call's request is sent when the call is
/// first polled, without waiting for room: puts to one queue started one after another on
/// one connection (each polled once, then awaited together) are stored in that order, as a
/// batch's messages are. Keeping many single puts in flight this way comes close to batches:
/// the manager syncs the puts that arrive together in one write.
///
/// If the connection drops (the manager restarts), calls in flight fail with
/// [`ClientError::ConnectionLost`] and the next call reconnects.
///
/// ```no_run
/// # async fn demo() -> Result<(), hopmq::ClientError> {
/// use std::time::Duration;
/// let client = hopmq::Client::connect().await?;
/// let id = client.put("orders", hopmq::Message::new("order 42")).await?;
/// if let Some(message) = client.get("orders", Duration::from_secs(1)).await? {
///     println!("{id}: {:?}", message.text());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    path: PathBuf,
    client_name: String,
    current: Mutex<Arc<Connection>>,
    /// Serialises reconnects so that concurrent callers share one new connection.
    reconnect: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects to the manager at [`socket_path_default`].
    pub async fn connect() -> Result<Self, ClientError> {
        Self::connect_to(socket_path_default()).await
    }

    /// Connects to the manager listening at `path`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), hopmq::ClientError> {
    /// let client = hopmq::Client::connect_to("/var/lib/hopmq/qmgr.sock").await?;
    /// println!("connected to {}", client.manager());
    /// # Ok(()) }
    /// ```
    pub async fn connect_to(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref().to_path_buf();
        let client_name = client_name();
        let connection = Connection::open(&path, &client_name).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                client_name,
                current: Mutex::new(Arc::new(connection)),
                reconnect: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The name of the manager of the current connection.
    pub fn manager(&self) -> String {
        lock(&self.shared.current).manager.clone()
    }

    /// The socket this client connects to.
    pub fn socket_path(&self) -> &Path {
        &self.shared.path
    }

    /// Puts `message` to `address` (`QUEUE` or `QUEUE@MANAGER`). Returns once the message is
    /// durable on the local manager (accepted in memory, if non-persistent).
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// let id = client.put("orders@charlie", hopmq::Message::new("order 42").priority(7)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put(&self, address: &str, message: Message) -> Result<MessageId, ClientError> {
        let operation = Operation::Put {
            address: address.to_string(),
            message: message.into_outgoing(),
        };
        match self.call(operation).await? {
            Reply::Put(ids) if ids.len() == 1 => Ok(ids[0]),
            reply => Err(unexpected("put", &reply)),
        }
    }

    /// Puts several messages atomically: all are stored, or none. Ids come back in order.
    pub async fn put_batch(
        &self,
        messages: Vec<(String, Message)>,
    ) -> Result<Vec<MessageId>, ClientError> {
        let count = messages.len();
        let operation = Operation::PutBatch {
            messages: messages
                .into_iter()
                .map(|(address, message)| (address, message.into_outgoing()))
                .collect(),
        };
        match self.call(operation).await? {
            Reply::Put(ids) if ids.len() == count => Ok(ids),
            reply => Err(unexpected("put_batch", &reply)),
        }
    }

    /// Puts `message` to `address` and returns only once it is durably in its destination
    /// manager (its queue there, or that manager's `DLQ`): an arrival receipt, where
    /// [`put`](Self::put) returns once the message is durable here. A message for a local
    /// queue has arrived once durable.
    ///
    /// Past `timeout` without the destination's confirmation the call fails with
    /// [`ApiError::NotArrived`](crate::ApiError::NotArrived): the message is durable here and
    /// still on its way (it arrives once; do not put it again).
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// let message = hopmq::Message::new("order 42");
    /// let id = client.put_arrived("orders@charlie", message, Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put_arrived(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<MessageId, ClientError> {
        let ids = self
            .put_batch_arrived(vec![(address.to_string(), message)], timeout)
            .await?;
        Ok(ids[0])
    }

    /// [`put_batch`](Self::put_batch) that returns once every message arrived, as
    /// [`put_arrived`](Self::put_arrived).
    pub async fn put_batch_arrived(
        &self,
        messages: Vec<(String, Message)>,
        timeout: Duration,
    ) -> Result<Vec<MessageId>, ClientError> {
        let count = messages.len();
        let operation = Operation::PutArrived {
            messages: messages
                .into_iter()
                .map(|(address, message)| (address, message.into_outgoing()))
                .collect(),
            timeout_ms: millis(timeout),
        };
        match self.call(operation).await? {
            Reply::Put(ids) if ids.len() == count && count > 0 => Ok(ids),
            reply => Err(unexpected("put_arrived", &reply)),
        }
    }

    /// Takes one message from local `queue`, waiting up to `timeout` for one; `None` if none
    /// came.
    ///
    /// Let the call finish rather than dropping its future: the manager cannot be told to
    /// withdraw it, and a message it takes after the future is dropped is lost. Bound the wait
    /// with `timeout` instead (or use [`get_leased`](Self::get_leased)).
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// while let Some(message) = client.get("orders", Duration::from_secs(5)).await? {
    ///     println!("{:?}", message.text());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> Result<Option<Message>, ClientError> {
        let options = GetOptions {
            timeout,
            ..GetOptions::default()
        };
        Ok(self.get_with(queue, options).await?.into_iter().next())
    }

    /// Takes one message from local `queue` if one is there; never waits.
    pub async fn poll(&self, queue: &str) -> Result<Option<Message>, ClientError> {
        self.get(queue, Duration::ZERO).await
    }

    /// Takes (or leases) up to `options.max` messages from local `queue`.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// let replies = client
    ///     .get_with("replies", hopmq::GetOptions {
    ///         timeout: Duration::from_secs(2),
    ///         max: 10,
    ///         correlation_id: Some("req-1".into()),
    ///         lease: None,
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_with(
        &self,
        queue: &str,
        options: GetOptions,
    ) -> Result<Vec<Message>, ClientError> {
        if options.max == 0 || options.max > BATCH_MESSAGES_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "max is {}; it must be 1 to {BATCH_MESSAGES_MAX}",
                options.max
            )));
        }
        let operation = Operation::Get {
            queue: queue.to_string(),
            timeout_ms: millis(options.timeout),
            max: options.max,
            selector: Selector {
                correlation_id: options.correlation_id,
            },
            lease_ms: options.lease.map(millis),
        };
        messages("get", self.call(operation).await?)
    }

    /// Leases one message from local `queue`, waiting up to `timeout`. The message's
    /// [`Message::lease`] must be [acked](Self::ack) within `lease`, or it returns to the queue
    /// (as it does if this connection drops).
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// let leased = client
    ///     .get_leased("orders", Duration::from_secs(1), Duration::from_secs(30))
    ///     .await?;
    /// if let Some(message) = leased {
    ///     // ... process, then settle:
    ///     client.ack(message.lease.into_iter().collect()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_leased(
        &self,
        queue: &str,
        timeout: Duration,
        lease: Duration,
    ) -> Result<Option<Message>, ClientError> {
        let options = GetOptions {
            timeout,
            lease: Some(lease),
            ..GetOptions::default()
        };
        Ok(self.get_with(queue, options).await?.into_iter().next())
    }

    /// Settles leased deliveries: they are removed for good.
    pub async fn ack(&self, leases: Vec<u64>) -> Result<(), ClientError> {
        done("ack", self.call(Operation::Ack { leases }).await?)
    }

    /// Returns leased deliveries to their queue at once.
    pub async fn nack(&self, leases: Vec<u64>) -> Result<(), ClientError> {
        done("nack", self.call(Operation::Nack { leases }).await?)
    }

    /// Copies of up to `max` messages of local `queue`, in delivery order; none is removed.
    pub async fn browse(&self, queue: &str, max: u32) -> Result<Vec<Message>, ClientError> {
        let operation = Operation::Browse {
            queue: queue.to_string(),
            max,
        };
        messages("browse", self.call(operation).await?)
    }

    /// Calls `handler` with a copy of every message put into local `queue` from now on (the
    /// message stays in its queue). The handler runs on its own task, one message at a time;
    /// hand slow work to another task. Dropping the handle, or [`NotifyHandle::cancel`], stops
    /// it. The notification ends if the connection drops; notify again after reconnecting.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// let handle = client.notify("orders", |message| println!("new: {:?}", message.text())).await?;
    /// // ...
    /// handle.cancel().await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify<F>(&self, queue: &str, handler: F) -> Result<NotifyHandle, ClientError>
    where
        F: FnMut(Message) + Send + 'static,
    {
        let subscription = self.subscribe(queue).await?;
        Ok(NotifyHandle::start(subscription, handler))
    }

    /// Like [`notify`](Self::notify), for applications that prefer pulling: the returned
    /// [`Subscription`] yields a copy of each message put into local `queue` from now on.
    ///
    /// Keep taking its messages: once [`SUBSCRIPTION_EVENTS_MAX`] are waiting, the whole
    /// connection waits (replies to other calls included) rather than drop a notification.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// let mut subscription = client.subscribe("orders").await?;
    /// while let Some(message) = subscription.next().await {
    ///     println!("new: {:?}", message.text());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, queue: &str) -> Result<Subscription, ClientError> {
        let connection = self.connection().await?;
        let (events, receiver) = mpsc::channel(SUBSCRIPTION_EVENTS_MAX);
        let operation = Operation::Subscribe {
            queue: queue.to_string(),
        };
        match connection.call(operation, Some(events)).await? {
            Reply::Subscribed(id) => Ok(Subscription::new(id, receiver, connection)),
            reply => Err(unexpected("subscribe", &reply)),
        }
    }

    /// A high-throughput consumer of local `queue` that keeps up to `prefetch` messages
    /// (clamped to 1..=[`BATCH_MESSAGES_MAX`]) fetched ahead of the application, with
    /// [`CONSUMER_GETS_IN_FLIGHT`] gets in flight that share that window; messages are handed
    /// out in queue order.
    ///
    /// Trade-off: prefetching uses destructive gets, so a fetched message is removed from the
    /// queue before [`Consumer::next`] hands it out. Messages fetched but not yet taken when the
    /// consumer is dropped, or when the process dies, are lost to the queue; so are those a
    /// prefetch request still in flight takes after the consumer is dropped. Use
    /// [`get_leased`](Self::get_leased) and [`ack`](Self::ack) where that matters more than
    /// throughput.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// let mut consumer = client.consumer("orders", 256);
    /// loop {
    ///     let message = consumer.next().await?;
    ///     println!("{:?}", message.text());
    /// }
    /// # }
    /// ```
    pub fn consumer(&self, queue: &str, prefetch: u32) -> Consumer {
        Consumer::new(self.clone(), queue, prefetch)
    }

    /// Creates local `queue` (idempotent), holding at most `max_depth` messages (`None`: the
    /// manager's default).
    pub async fn declare(&self, queue: &str, max_depth: Option<u64>) -> Result<(), ClientError> {
        let operation = Operation::Declare {
            queue: queue.to_string(),
            max_depth,
        };
        done("declare", self.call(operation).await?)
    }

    /// Deletes local `queue`, which must be empty.
    pub async fn delete(&self, queue: &str) -> Result<(), ClientError> {
        let operation = Operation::Delete {
            queue: queue.to_string(),
        };
        done("delete", self.call(operation).await?)
    }

    /// The manager's state.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// for queue in client.status().await?.queues {
    ///     println!("{}: {} waiting", queue.name, queue.depth);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<Status, ClientError> {
        match self.call(Operation::Status).await? {
            Reply::Status(status) => Ok(*status),
            reply => Err(unexpected("status", &reply)),
        }
    }

    /// Asks the manager to read its topology file again and apply it; an invalid file is
    /// refused ([`ApiError::BadRequest`] with file, line and reason) and the old one stays.
    pub async fn reload(&self) -> Result<ReloadOutcome, ClientError> {
        match self.call(Operation::Reload).await? {
            Reply::Reloaded(outcome) => Ok(outcome),
            reply => Err(unexpected("reload", &reply)),
        }
    }

    /// What applying `text` (the contents of the topology file `file`) would change at the
    /// manager, without applying it.
    pub async fn plan_topology(&self, file: &str, text: &str) -> Result<TopologyPlan, ClientError> {
        let operation = Operation::PlanTopology {
            file: file.to_owned(),
            text: text.to_owned(),
        };
        match self.call(operation).await? {
            Reply::Plan(plan) => Ok(plan),
            reply => Err(unexpected("plan", &reply)),
        }
    }

    /// Takes the link to `neighbour` out of service (`drained = true`) or back into it.
    pub async fn set_link(&self, neighbour: &str, drained: bool) -> Result<(), ClientError> {
        let operation = Operation::SetLink {
            neighbour: neighbour.to_owned(),
            drained,
        };
        match self.call(operation).await? {
            Reply::Done => Ok(()),
            reply => Err(unexpected("link", &reply)),
        }
    }

    async fn call(&self, operation: Operation) -> Result<Reply, ClientError> {
        self.connection().await?.call(operation, None).await
    }

    /// The current connection, or a new one if it has closed.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let current = lock(&self.shared.current).clone();
        if current.is_open() {
            return Ok(current);
        }
        let _reconnecting = self.shared.reconnect.lock().await;
        let current = lock(&self.shared.current).clone();
        if current.is_open() {
            return Ok(current);
        }
        let fresh = Arc::new(Connection::open(&self.shared.path, &self.shared.client_name).await?);
        *lock(&self.shared.current) = Arc::clone(&fresh);
        Ok(fresh)
    }
}

fn client_name() -> String {
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "hopmq-client".to_string());
    format!("{program}[{}]", std::process::id())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn messages(operation: &'static str, reply: Reply) -> Result<Vec<Message>, ClientError> {
    match reply {
        Reply::Messages(deliveries) => Ok(deliveries.into_iter().map(Message::from).collect()),
        reply => Err(unexpected(operation, &reply)),
    }
}

fn done(operation: &'static str, reply: Reply) -> Result<(), ClientError> {
    match reply {
        Reply::Done => Ok(()),
        reply => Err(unexpected(operation, &reply)),
    }
}

fn unexpected(operation: &'static str, reply: &Reply) -> ClientError {
    let reply = match reply {
        Reply::Put(ids) => format!("Put with {} ids", ids.len()),
        Reply::Messages(messages) => format!("Messages ({})", messages.len()),
        Reply::Subscribed(id) => format!("Subscribed({id})"),
        Reply::Done => "Done".to_string(),
        Reply::Status(_) => "Status".to_string(),
        Reply::Reloaded(_) => "Reloaded".to_string(),
        Reply::Plan(_) => "Plan".to_string(),
        Reply::Moved(_) => "Moved".to_string(),
        Reply::Listing(_) => "Listing".to_string(),
        Reply::Subscriptions(_) => "Subscriptions".to_string(),
    };
    ClientError::UnexpectedReply { operation, reply }
}
