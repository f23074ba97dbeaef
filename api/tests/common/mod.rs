//! An in-process fake manager: a tokio `UnixListener` that speaks the app⇄manager protocol
//! over a tiny in-memory store, and reports every frame it receives so tests can wait on it.
//!
//! It is lenient where the real manager is strict (queues spring into existence on first use)
//! and can misbehave on purpose (refuse, send garbage, send wrong replies).

#![allow(dead_code)]
// each test binary uses a different part
// Test scaffolding: a poisoned lock means a test already failed.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopmq::ApiError;
use hopmq::protocol::{
    self, ClientFrame, Delivery, Hello, Operation, PROTOCOL_VERSION, QueueStatus, Reply, Request,
    Selector, ServerFrame, Status, Welcome,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long a test waits for a condition before failing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// How the fake misbehaves.
#[derive(Debug, Clone)]
pub(crate) struct Behaviour {
    pub(crate) protocol_version: u32,
    /// Answer the Hello with bytes that are no frame.
    pub(crate) garbage_handshake: bool,
    /// Answer the first request with bytes that are no frame.
    pub(crate) garbage_after_welcome: bool,
    /// Answer every request with `Done`.
    pub(crate) wrong_replies: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            garbage_handshake: false,
            garbage_after_welcome: false,
            wrong_replies: false,
        }
    }
}

/// What the fake received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    Hello(Hello),
    Request(Operation),
}

pub(crate) struct FakeManager {
    pub(crate) path: PathBuf,
    seen: mpsc::UnboundedReceiver<Seen>,
    accept: JoinHandle<()>,
}

struct State {
    behaviour: Behaviour,
    queues: Mutex<HashMap<String, VecDeque<Delivery>>>,
    leased: Mutex<HashMap<u64, (String, Delivery)>>,
    subscriptions: Mutex<HashMap<u64, (String, mpsc::UnboundedSender<ServerFrame>)>>,
    put: Notify,
    next_id: AtomicU64,
    seen: mpsc::UnboundedSender<Seen>,
}

impl FakeManager {
    pub(crate) async fn start(dir: &Path) -> Self {
        Self::start_at(&dir.join("qmgr.sock"), Behaviour::default()).await
    }

    pub(crate) async fn start_at(path: &Path, behaviour: Behaviour) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the fake manager's socket");
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            behaviour,
            queues: Mutex::default(),
            leased: Mutex::default(),
            subscriptions: Mutex::default(),
            put: Notify::new(),
            next_id: AtomicU64::new(1),
            seen: seen_tx,
        });
        let accept = tokio::spawn(async move {
            // Dropping this set (when the accept task is aborted) closes every connection.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, Arc::clone(&state)));
            }
        });
        Self {
            path: path.to_path_buf(),
            seen,
            accept,
        }
    }

    /// Closes the listener and every connection, as a crashed manager would.
    pub(crate) async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }

    /// Waits for the first received frame `pick` accepts, skipping others.
    pub(crate) async fn expect<T>(&mut self, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let seen = self.seen.recv().await.expect("the fake manager stopped");
                if let Some(found) = pick(&seen) {
                    return found;
                }
            }
        })
        .await
        .expect("the fake manager did not see the expected frame in time")
    }
}

const GARBAGE: &[u8] = &[5, 0, 0, 0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe];

async fn serve(stream: UnixStream, state: Arc<State>) {
    let (mut reader, mut writer) = stream.into_split();
    let Ok(ClientFrame::Hello(hello)) = protocol::read_frame(&mut reader).await else {
        return;
    };
    let client_version = hello.protocol_version;
    let _ = state.seen.send(Seen::Hello(hello));
    if state.behaviour.garbage_handshake {
        let _ = writer.write_all(GARBAGE).await;
        return;
    }
    if client_version != state.behaviour.protocol_version {
        let refused = ServerFrame::Refused(ApiError::VersionMismatch {
            client: client_version,
            server: state.behaviour.protocol_version,
        });
        let _ = protocol::write_frame(&mut writer, &refused).await;
        return;
    }
    let welcome = ServerFrame::Welcome(Welcome {
        protocol_version: state.behaviour.protocol_version,
        manager: "fake".into(),
        server_version: "0".into(),
    });
    if protocol::write_frame(&mut writer, &welcome).await.is_err() {
        return;
    }

    if state.behaviour.garbage_after_welcome {
        if let Ok(ClientFrame::Request(request)) = protocol::read_frame(&mut reader).await {
            let _ = state.seen.send(Seen::Request(request.operation));
            let _ = writer.write_all(GARBAGE).await;
            // Stay open: the client, not the fake, must end the connection.
            let _ = protocol::read_frame::<ClientFrame, _>(&mut reader).await;
        }
        return;
    }

    // Dropping this set (when this task is aborted) ends the writer and every request.
    let mut tasks = JoinSet::new();
    let (out, mut outgoing) = mpsc::unbounded_channel::<ServerFrame>();
    tasks.spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if protocol::write_frame(&mut writer, &frame).await.is_err() {
                return;
            }
        }
    });
    while let Ok(ClientFrame::Request(Request { id, operation })) =
        protocol::read_frame(&mut reader).await
    {
        let _ = state.seen.send(Seen::Request(operation.clone()));
        let state = Arc::clone(&state);
        let out = out.clone();
        tasks.spawn(async move {
            let result = if state.behaviour.wrong_replies {
                Ok(Reply::Done)
            } else {
                handle(&state, operation, &out).await
            };
            let _ = out.send(ServerFrame::Reply { id, result });
        });
    }
}

fn queue_of(address: &str) -> String {
    address.split('@').next().unwrap_or(address).to_string()
}

async fn handle(
    state: &State,
    operation: Operation,
    out: &mpsc::UnboundedSender<ServerFrame>,
) -> Result<Reply, ApiError> {
    match operation {
        Operation::Put { address, message } => Ok(Reply::Put(vec![put(state, &address, message)])),
        // A fake of one manager: every queue is local, so a message has arrived once stored.
        Operation::PutBatch { messages } | Operation::PutArrived { messages, .. } => {
            Ok(Reply::Put(
                messages
                    .into_iter()
                    .map(|(address, message)| put(state, &address, message))
                    .collect(),
            ))
        }
        Operation::Get {
            queue,
            timeout_ms,
            max,
            selector,
            lease_ms,
        } => Ok(get(state, &queue, timeout_ms, max, &selector, lease_ms).await),
        Operation::Ack { leases } => ack(state, leases),
        Operation::Nack { leases } => nack(state, leases),
        Operation::Browse { queue, max } => {
            let queues = state.queues.lock().unwrap();
            let messages = queues
                .get(&queue)
                .map(|messages| messages.iter().take(max as usize).cloned().collect())
                .unwrap_or_default();
            Ok(Reply::Messages(messages))
        }
        Operation::Subscribe { queue } => {
            let subscription = state.next_id.fetch_add(1, Ordering::Relaxed);
            state
                .subscriptions
                .lock()
                .unwrap()
                .insert(subscription, (queue, out.clone()));
            Ok(Reply::Subscribed(subscription))
        }
        Operation::Unsubscribe { subscription } => {
            match state.subscriptions.lock().unwrap().remove(&subscription) {
                Some(_) => Ok(Reply::Done),
                None => Err(ApiError::UnknownSubscription { subscription }),
            }
        }
        Operation::Declare { queue, .. } => {
            state.queues.lock().unwrap().entry(queue).or_default();
            Ok(Reply::Done)
        }
        Operation::Delete { queue } => delete(state, queue),
        // A fake manager has no topology: what a standalone manager answers.
        Operation::Reload | Operation::PlanTopology { .. } | Operation::SetLink { .. } => {
            Err(ApiError::BadRequest {
                reason: "the fake manager has no topology".into(),
            })
        }
        Operation::Status => Ok(status(state)),
        Operation::RemoveMessages { .. }
        | Operation::MoveMessages(_)
        | Operation::ListMessages { .. } => Err(ApiError::BadRequest {
            reason: "the fake manager has no operator's commands".into(),
        }),
        Operation::Publish { .. }
        | Operation::SubscribeTopic { .. }
        | Operation::CreateSubscription { .. }
        | Operation::DeleteSubscription { .. }
        | Operation::ListSubscriptions => Err(ApiError::BadRequest {
            reason: "the fake manager has no publish/subscribe".into(),
        }),
        Operation::Request { .. }
        | Operation::Reply { .. }
        | Operation::RequestMany { .. }
        | Operation::Replies { .. } => Err(ApiError::BadRequest {
            reason: "the fake manager has no requests".into(),
        }),
    }
}

/// Waits until `queue` has messages for `selector` or the timeout passes, and takes up to
/// `max` of them, leased if `lease_ms` is given.
async fn get(
    state: &State,
    queue: &str,
    timeout_ms: u64,
    max: u32,
    selector: &Selector,
    lease_ms: Option<u64>,
) -> Reply {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let notified = state.put.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut taken = take(state, queue, max, selector);
        if lease_ms.is_some() {
            lease(state, queue, &mut taken);
        }
        if !taken.is_empty() || Instant::now() >= deadline {
            return Reply::Messages(taken);
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Removes up to `max` messages matching `selector` from the front of `queue`.
fn take(state: &State, queue: &str, max: u32, selector: &Selector) -> Vec<Delivery> {
    let mut taken = Vec::new();
    let mut queues = state.queues.lock().unwrap();
    let messages = queues.entry(queue.to_owned()).or_default();
    let mut index = 0;
    while index < messages.len() && taken.len() < max as usize {
        let wanted = selector.correlation_id.is_none()
            || messages[index].correlation_id == selector.correlation_id;
        if wanted {
            taken.extend(messages.remove(index));
        } else {
            index += 1;
        }
    }
    taken
}

/// Gives each taken delivery a lease, so it can be acked or nacked later.
fn lease(state: &State, queue: &str, taken: &mut [Delivery]) {
    let mut leased = state.leased.lock().unwrap();
    for delivery in taken {
        let lease = state.next_id.fetch_add(1, Ordering::Relaxed);
        delivery.lease = Some(lease);
        delivery.delivery_count += 1;
        leased.insert(lease, (queue.to_owned(), delivery.clone()));
    }
}

fn ack(state: &State, leases: Vec<u64>) -> Result<Reply, ApiError> {
    let mut leased = state.leased.lock().unwrap();
    for lease in leases {
        if leased.remove(&lease).is_none() {
            return Err(ApiError::UnknownLease { lease });
        }
    }
    Ok(Reply::Done)
}

/// Puts leased deliveries back at the front of their queues.
fn nack(state: &State, leases: Vec<u64>) -> Result<Reply, ApiError> {
    for lease in leases {
        let Some((queue, mut delivery)) = state.leased.lock().unwrap().remove(&lease) else {
            return Err(ApiError::UnknownLease { lease });
        };
        delivery.lease = None;
        let mut queues = state.queues.lock().unwrap();
        queues.entry(queue).or_default().push_front(delivery);
    }
    state.put.notify_waiters();
    Ok(Reply::Done)
}

fn delete(state: &State, queue: String) -> Result<Reply, ApiError> {
    let mut queues = state.queues.lock().unwrap();
    match queues.get(&queue).map(VecDeque::len) {
        None => Err(ApiError::UnknownQueue { queue }),
        Some(0) => {
            queues.remove(&queue);
            Ok(Reply::Done)
        }
        Some(depth) => Err(ApiError::QueueNotEmpty {
            queue,
            depth: depth as u64,
        }),
    }
}

/// The queues and their depths, under the name "fake"; nothing else.
fn status(state: &State) -> Reply {
    let queues = state.queues.lock().unwrap();
    let mut queues: Vec<QueueStatus> = queues
        .iter()
        .map(|(name, messages)| QueueStatus {
            name: name.clone(),
            depth: messages.len() as u64,
            ..QueueStatus::default()
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Reply::Status(Box::new(Status {
        manager: "fake".into(),
        queues,
        ..Status::default()
    }))
}

fn put(state: &State, address: &str, message: protocol::OutgoingMessage) -> hopmq::MessageId {
    let queue = queue_of(address);
    let id = hopmq::MessageId(u128::from(state.next_id.fetch_add(1, Ordering::Relaxed)));
    let delivery = Delivery {
        id,
        body: message.body,
        headers: message.headers,
        priority: message.priority,
        expires_at_ms: None,
        correlation_id: message.correlation_id,
        reply_to: message.reply_to,
        persistent: message.persistent,
        origin: "fake".into(),
        delivery_count: 0,
        trace: Vec::new(),
        lease: None,
    };
    state
        .queues
        .lock()
        .unwrap()
        .entry(queue.clone())
        .or_default()
        .push_back(delivery.clone());
    let mut subscriptions = state.subscriptions.lock().unwrap();
    subscriptions.retain(|subscription, (subscribed, out)| {
        *subscribed != queue
            || out
                .send(ServerFrame::Event {
                    subscription: *subscription,
                    message: delivery.clone(),
                })
                .is_ok()
    });
    state.put.notify_waiters();
    id
}
