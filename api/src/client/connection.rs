//! One handshaken connection to the manager: the handshake, the writer and reader tasks, and
//! the routing table the reader uses to answer waiting calls and feed subscriptions. A
//! [`Connection`] is never reused once closed; the client opens a new one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::{ClientError, HANDSHAKE_TIMEOUT};
use crate::error::ApiError;
use crate::protocol::{
    self, ClientFrame, Delivery, FrameError, Hello, Operation, PROTOCOL_VERSION, Reply, Request,
    ServerFrame,
};

/// Frames the writer task takes from its channel per flush.
const WRITE_BATCH_FRAMES_MAX: usize = 256;

/// One handshaken connection and its two tasks.
pub(super) struct Connection {
    pub(super) manager: String,
    /// Unbounded, so that a request is queued when its call is first polled, without waiting:
    /// requests reach the manager in the order their calls started (a bounded queue wakes its
    /// waiting callers in order, but they push in whatever order the runtime polls them). Each
    /// queued frame belongs to a call awaiting its reply, which holds the message anyway.
    frames: mpsc::UnboundedSender<ClientFrame>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    pub(super) runtime: tokio::runtime::Handle,
    tasks: [AbortHandle; 2],
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("manager", &self.manager)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

/// Where the reader sends what arrives.
#[derive(Default)]
struct Routes {
    /// Set once; from then on the maps stay empty.
    closed: bool,
    pending: HashMap<u64, Pending>,
    subscriptions: HashMap<u64, mpsc::Sender<Event>>,
}

/// What a subscription's channel carries.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message (a queue's new one, or a publication).
    Message(Delivery),
    /// Publications a topic subscription lost (its client fell behind).
    Missed(u64),
}

struct Pending {
    reply: oneshot::Sender<Result<Reply, ApiError>>,
    /// For a subscribe: where the subscription's events go once the manager accepts it.
    events: Option<mpsc::Sender<Event>>,
}

impl Routes {
    /// Dropping the senders answers every waiting call with `ConnectionLost` and ends every
    /// subscription.
    fn close(&mut self) {
        self.closed = true;
        self.pending.clear();
        self.subscriptions.clear();
    }
}

impl Connection {
    pub(super) async fn open(path: &Path, client_name: &str) -> Result<Self, ClientError> {
        let handshake = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|error| ClientError::Connect {
                    path: path.to_path_buf(),
                    error,
                })?;
            let (reader, writer) = stream.into_split();
            // Buffered both ways: a busy connection reads and writes many frames per syscall.
            let mut reader = BufReader::with_capacity(protocol::SOCKET_BUFFER_BYTES, reader);
            let mut writer = BufWriter::with_capacity(protocol::SOCKET_BUFFER_BYTES, writer);
            let hello = ClientFrame::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: client_name.to_string(),
            });
            protocol::write_frame(&mut writer, &hello).await?;
            writer.flush().await.map_err(FrameError::Io)?;
            let welcome = protocol::read_frame::<ServerFrame, _>(&mut reader).await?;
            Ok::<_, ClientError>((reader, writer, welcome))
        };
        let (reader, writer, welcome) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                .await
                .map_err(|_| ClientError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;
        let manager = match welcome {
            ServerFrame::Welcome(welcome) if welcome.protocol_version == PROTOCOL_VERSION => {
                welcome.manager
            }
            ServerFrame::Welcome(welcome) => {
                return Err(ClientError::Handshake(ApiError::VersionMismatch {
                    client: PROTOCOL_VERSION,
                    server: welcome.protocol_version,
                }));
            }
            ServerFrame::Refused(error) => return Err(ClientError::Handshake(error)),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected Welcome or Refused, got {}",
                    frame_kind(&other)
                )));
            }
        };

        let routes = Arc::new(Mutex::new(Routes::default()));
        let (frames, outgoing) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(write_loop(writer, outgoing, Arc::clone(&routes)));
        let reader_task = tokio::spawn(read_loop(reader, Arc::clone(&routes)));
        Ok(Self {
            manager,
            frames,
            routes,
            next_id: AtomicU64::new(1),
            runtime: tokio::runtime::Handle::current(),
            tasks: [writer_task.abort_handle(), reader_task.abort_handle()],
        })
    }

    pub(super) fn is_open(&self) -> bool {
        !lock(&self.routes).closed
    }

    pub(super) async fn call(
        &self,
        operation: Operation,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Reply, ClientError> {
        self.send(operation, events).await?.wait().await
    }

    /// Sends the request; its reply is awaited separately, so a caller can have several
    /// requests in flight in a known order.
    pub(super) async fn send(
        &self,
        operation: Operation,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Sent, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut routes = lock(&self.routes);
            if routes.closed {
                return Err(ClientError::ConnectionLost);
            }
            routes.pending.insert(id, Pending { reply, events });
        }
        // If this call is abandoned, its entry must not linger until a reply that may never
        // come; after a reply the entry is already gone and this does nothing.
        let forget = ForgetOnDrop {
            routes: Arc::clone(&self.routes),
            id: Some(id),
        };
        let request = ClientFrame::Request(Request { id, operation });
        self.frames
            .send(request)
            .map_err(|_| ClientError::ConnectionLost)?;
        Ok(Sent { answer, forget })
    }
}

/// A request on the wire, waiting for its reply.
pub(super) struct Sent {
    answer: oneshot::Receiver<Result<Reply, ApiError>>,
    forget: ForgetOnDrop,
}

impl Sent {
    pub(super) async fn wait(mut self) -> Result<Reply, ClientError> {
        let answer = (&mut self.answer).await;
        // Answered (or the connection closed): the reader took the entry already.
        self.forget.id = None;
        answer
            .map_err(|_| ClientError::ConnectionLost)?
            .map_err(ClientError::Api)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct ForgetOnDrop {
    routes: Arc<Mutex<Routes>>,
    /// `None` once the call was answered: nothing is left to forget.
    id: Option<u64>,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.routes).pending.remove(&id);
        }
    }
}

async fn write_loop(
    mut writer: BufWriter<OwnedWriteHalf>,
    mut outgoing: mpsc::UnboundedReceiver<ClientFrame>,
    routes: Arc<Mutex<Routes>>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_FRAMES_MAX);
    // One buffer for every write, so encoding a frame does not grow a new one copy by copy.
    let mut buffer = Vec::new();
    while outgoing.recv_many(&mut batch, WRITE_BATCH_FRAMES_MAX).await > 0 {
        protocol::reset_write_buffer(&mut buffer);
        let mut written = batch
            .drain(..)
            .try_for_each(|frame| protocol::encode_into(&frame, &mut buffer));
        if written.is_ok() {
            written = writer.write_all(&buffer).await.map_err(FrameError::Io);
        }
        if written.is_ok() {
            written = writer.flush().await.map_err(FrameError::Io);
        }
        if written.is_err() {
            lock(&routes).close();
            return;
        }
    }
    // Every sender is gone: the connection was dropped.
    let _ = writer.shutdown().await;
}

async fn read_loop(mut reader: BufReader<OwnedReadHalf>, routes: Arc<Mutex<Routes>>) {
    // Any error ends the connection the same way: whatever was in flight is lost, and the
    // cause belongs to no single call.
    while let Ok(frame) = protocol::read_frame::<ServerFrame, _>(&mut reader).await {
        match frame {
            ServerFrame::Reply { id, result } => {
                let mut routes = lock(&routes);
                // Unknown ids belong to abandoned calls.
                if let Some(pending) = routes.pending.remove(&id) {
                    if let (Ok(Reply::Subscribed(subscription)), Some(events)) =
                        (&result, pending.events)
                    {
                        routes.subscriptions.insert(*subscription, events);
                    }
                    let _ = pending.reply.send(result);
                }
            }
            ServerFrame::Event {
                subscription,
                message,
            } => route_event(&routes, subscription, Event::Message(message)).await,
            ServerFrame::Missed {
                subscription,
                messages,
            } => route_event(&routes, subscription, Event::Missed(messages)).await,
            ServerFrame::Welcome(_) | ServerFrame::Refused(_) => break,
        }
    }
    lock(&routes).close();
}

async fn route_event(routes: &Mutex<Routes>, subscription: u64, event: Event) {
    let events = lock(routes).subscriptions.get(&subscription).cloned();
    // Events for a subscription ended on this side are stale, not an error.
    if let Some(events) = events {
        if events.send(event).await.is_err() {
            lock(routes).subscriptions.remove(&subscription);
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves no half-done state (each critical section is a
    // single map operation), so a poisoned lock is still safe to use.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn frame_kind(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "Welcome",
        ServerFrame::Refused(_) => "Refused",
        ServerFrame::Reply { .. } => "Reply",
        ServerFrame::Event { .. } => "Event",
        ServerFrame::Missed { .. } => "Missed",
    }
}
