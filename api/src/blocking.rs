//! The blocking client: the calls of the async [`crate::Client`], each a plain blocking
//! function, for applications without an async runtime.
//!
//! Owns: a small tokio runtime (one worker thread) that runs the async client's connection
//! tasks, shared by all clones of a [`Client`] and shut down when the last one is dropped.
//!
//! Invariants:
//! - A call blocks the calling thread on the runtime; calling from inside an async context
//!   panics (tokio forbids blocking there), so async code uses [`crate::Client`].
//! - A [`Client::notify`] handler runs on the runtime's blocking-thread pool, not on its worker:
//!   a handler may call this client (e.g. to put a reply) without stalling the connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{self, ClientError, GetOptions};

mod pubsub;

use crate::message::{Message, MessageId};
use crate::protocol::{Listing, MoveOutcome, MoveRequest, Selection, Status};
pub use pubsub::TopicSubscription;

/// A blocking connection to the local queue manager. Cheap to clone; clones share the
/// connection and its runtime. See [`crate::Client`] for what each call does.
///
/// ```no_run
/// use std::time::Duration;
/// let client = hopmq::blocking::Client::connect()?;
/// client.put("orders", hopmq::Message::new("order 42"))?;
/// if let Some(message) = client.get("orders", Duration::from_secs(1))? {
///     println!("{:?}", message.text());
/// }
/// # Ok::<(), hopmq::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    // Declared first so the connection drops while the runtime is still alive.
    inner: client::Client,
    runtime: Arc<OwnedRuntime>,
}

/// Shuts its runtime down without waiting, so that dropping the last client is fine anywhere.
#[derive(Debug)]
struct OwnedRuntime(Option<Runtime>);

impl OwnedRuntime {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match &self.0 {
            Some(runtime) => runtime.block_on(future),
            // Only `drop` takes the runtime, and no one holds `self` after that.
            None => unreachable!("the runtime is only taken when dropped"),
        }
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(Runtime::handle)
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Client {
    /// Connects to the manager at [`crate::socket_path_default`].
    pub fn connect() -> Result<Self, ClientError> {
        Self::connect_to(client::socket_path_default())
    }

    /// Connects to the manager listening at `path`.
    pub fn connect_to(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hopmq-client")
            .enable_all()
            .build()
            .map_err(|error| ClientError::Connect {
                path: path.as_ref().to_path_buf(),
                error,
            })?;
        let runtime = Arc::new(OwnedRuntime(Some(runtime)));
        let inner = runtime.block_on(client::Client::connect_to(path))?;
        Ok(Self { runtime, inner })
    }

    /// The name of the manager of the current connection.
    pub fn manager(&self) -> String {
        self.inner.manager()
    }

    /// See [`crate::Client::put`].
    pub fn put(&self, address: &str, message: Message) -> Result<MessageId, ClientError> {
        self.runtime.block_on(self.inner.put(address, message))
    }

    /// See [`crate::Client::put_batch`].
    pub fn put_batch(
        &self,
        messages: Vec<(String, Message)>,
    ) -> Result<Vec<MessageId>, ClientError> {
        self.runtime.block_on(self.inner.put_batch(messages))
    }

    /// See [`crate::Client::put_arrived`].
    pub fn put_arrived(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<MessageId, ClientError> {
        self.runtime
            .block_on(self.inner.put_arrived(address, message, timeout))
    }

    /// See [`crate::Client::put_batch_arrived`].
    pub fn put_batch_arrived(
        &self,
        messages: Vec<(String, Message)>,
        timeout: Duration,
    ) -> Result<Vec<MessageId>, ClientError> {
        self.runtime
            .block_on(self.inner.put_batch_arrived(messages, timeout))
    }

    /// See [`crate::Client::get`].
    pub fn get(&self, queue: &str, timeout: Duration) -> Result<Option<Message>, ClientError> {
        self.runtime.block_on(self.inner.get(queue, timeout))
    }

    /// See [`crate::Client::poll`].
    pub fn poll(&self, queue: &str) -> Result<Option<Message>, ClientError> {
        self.runtime.block_on(self.inner.poll(queue))
    }

    /// See [`crate::Client::get_with`].
    pub fn get_with(&self, queue: &str, options: GetOptions) -> Result<Vec<Message>, ClientError> {
        self.runtime.block_on(self.inner.get_with(queue, options))
    }

    /// See [`crate::Client::get_leased`].
    pub fn get_leased(
        &self,
        queue: &str,
        timeout: Duration,
        lease: Duration,
    ) -> Result<Option<Message>, ClientError> {
        self.runtime
            .block_on(self.inner.get_leased(queue, timeout, lease))
    }

    /// See [`crate::Client::ack`].
    pub fn ack(&self, leases: Vec<u64>) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.ack(leases))
    }

    /// See [`crate::Client::nack`].
    pub fn nack(&self, leases: Vec<u64>) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.nack(leases))
    }

    /// See [`crate::Client::request`]. Many requests at once need the async client (or one
    /// thread each).
    pub fn request(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        self.runtime
            .block_on(self.inner.request(address, message, timeout))
    }

    /// See [`crate::Client::request_many`].
    pub fn request_many(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
        max_replies: u32,
    ) -> Result<Vec<Message>, ClientError> {
        self.runtime.block_on(
            self.inner
                .request_many(topic, message, timeout, max_replies),
        )
    }

    /// See [`crate::Client::reply`].
    pub fn reply(&self, request: &Message, message: Message) -> Result<MessageId, ClientError> {
        self.runtime.block_on(self.inner.reply(request, message))
    }

    /// See [`crate::Client::browse`].
    pub fn browse(&self, queue: &str, max: u32) -> Result<Vec<Message>, ClientError> {
        self.runtime.block_on(self.inner.browse(queue, max))
    }

    /// See [`crate::Client::notify`]. The handler runs on a thread of the runtime's blocking
    /// pool and may call this client.
    ///
    /// ```no_run
    /// let client = hopmq::blocking::Client::connect()?;
    /// let replier = client.clone();
    /// let handle = client.notify("requests", move |request| {
    ///     if let Some(reply_to) = &request.reply_to {
    ///         let _ = replier.put(reply_to, hopmq::Message::new("ok"));
    ///     }
    /// })?;
    /// // ...
    /// handle.cancel()?;
    /// # Ok::<(), hopmq::ClientError>(())
    /// ```
    pub fn notify<F>(&self, queue: &str, mut handler: F) -> Result<NotifyHandle, ClientError>
    where
        F: FnMut(Message) + Send + 'static,
    {
        let mut subscription = self.runtime.block_on(self.inner.subscribe(queue))?;
        let (cancel, mut cancelled) = oneshot::channel::<()>();
        let Some(handle) = self.runtime.handle() else {
            return Err(ClientError::ConnectionLost);
        };
        let runtime = handle.clone();
        let task = handle.spawn_blocking(move || {
            loop {
                let next = runtime.block_on(async {
                    tokio::select! {
                        biased;
                        _ = &mut cancelled => None,
                        message = subscription.next() => Some(message),
                    }
                });
                match next {
                    None => return runtime.block_on(subscription.cancel()),
                    Some(None) => return Ok(()),
                    Some(Some(message)) => handler(message),
                }
            }
        });
        Ok(NotifyHandle {
            cancel: Some(cancel),
            task: Some(task),
            runtime: Arc::clone(&self.runtime),
        })
    }

    /// See [`crate::Client::subscribe`].
    pub fn subscribe(&self, queue: &str) -> Result<Subscription, ClientError> {
        let inner = self.runtime.block_on(self.inner.subscribe(queue))?;
        Ok(Subscription {
            inner,
            runtime: Arc::clone(&self.runtime),
        })
    }

    /// See [`crate::Client::consumer`], including its trade-off: prefetched messages are
    /// removed from the queue before [`Consumer::next`] hands them out.
    pub fn consumer(&self, queue: &str, prefetch: u32) -> Consumer {
        Consumer {
            inner: self.inner.consumer(queue, prefetch),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// See [`crate::Client::declare`].
    pub fn declare(&self, queue: &str, max_depth: Option<u64>) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.declare(queue, max_depth))
    }

    /// See [`crate::Client::delete`].
    pub fn delete(&self, queue: &str) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.delete(queue))
    }

    /// See [`crate::Client::status`].
    pub fn status(&self) -> Result<Status, ClientError> {
        self.runtime.block_on(self.inner.status())
    }

    /// See [`crate::Client::reload`].
    pub fn reload(&self) -> Result<crate::protocol::ReloadOutcome, ClientError> {
        self.runtime.block_on(self.inner.reload())
    }

    /// See [`crate::Client::plan_topology`].
    pub fn plan_topology(
        &self,
        file: &str,
        text: &str,
    ) -> Result<crate::protocol::TopologyPlan, ClientError> {
        self.runtime.block_on(self.inner.plan_topology(file, text))
    }

    /// See [`crate::Client::set_link`].
    pub fn set_link(&self, neighbour: &str, drained: bool) -> Result<(), ClientError> {
        self.runtime
            .block_on(self.inner.set_link(neighbour, drained))
    }

    /// See [`crate::Client::list_messages`].
    pub fn list_messages(
        &self,
        queue: &str,
        selection: Selection,
        max: u32,
    ) -> Result<Listing, ClientError> {
        self.runtime
            .block_on(self.inner.list_messages(queue, selection, max))
    }

    /// See [`crate::Client::remove_messages`].
    pub fn remove_messages(
        &self,
        queue: &str,
        selection: Selection,
    ) -> Result<MoveOutcome, ClientError> {
        self.runtime
            .block_on(self.inner.remove_messages(queue, selection))
    }

    /// See [`crate::Client::purge`].
    pub fn purge(&self, queue: &str) -> Result<MoveOutcome, ClientError> {
        self.runtime.block_on(self.inner.purge(queue))
    }

    /// See [`crate::Client::delete_message`].
    pub fn delete_message(&self, queue: &str, id: MessageId) -> Result<MoveOutcome, ClientError> {
        self.runtime.block_on(self.inner.delete_message(queue, id))
    }

    /// See [`crate::Client::move_messages`].
    pub fn move_messages(&self, request: MoveRequest) -> Result<MoveOutcome, ClientError> {
        self.runtime.block_on(self.inner.move_messages(request))
    }

    /// See [`crate::Client::replay_dead_letters`].
    pub fn replay_dead_letters(
        &self,
        selection: Selection,
        to: Option<&str>,
    ) -> Result<MoveOutcome, ClientError> {
        self.runtime
            .block_on(self.inner.replay_dead_letters(selection, to))
    }
}

/// Stops a [`Client::notify`] handler when dropped or cancelled.
#[derive(Debug)]
pub struct NotifyHandle {
    cancel: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ClientError>>>,
    runtime: Arc<OwnedRuntime>,
}

impl NotifyHandle {
    /// Stops the handler and waits until the manager has ended the subscription. Must not be
    /// called from the handler itself (it would wait for itself).
    pub fn cancel(mut self) -> Result<(), ClientError> {
        drop(self.cancel.take());
        match self.task.take() {
            Some(task) => self.runtime.block_on(task).unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Whether the handler has stopped (cancelled, or its connection dropped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for NotifyHandle {
    fn drop(&mut self) {
        // The handler's thread unsubscribes and ends on its own once `cancel` is gone.
        drop(self.cancel.take());
    }
}

/// See [`crate::Subscription`]; also an [`Iterator`] that ends with the subscription.
#[derive(Debug)]
pub struct Subscription {
    // Declared first so it drops (and unsubscribes) while the runtime is still alive.
    inner: client::Subscription,
    runtime: Arc<OwnedRuntime>,
}

impl Subscription {
    /// The next message put into the queue, waiting as long as it takes; `None` once the
    /// subscription has ended.
    pub fn recv(&mut self) -> Option<Message> {
        self.runtime.block_on(self.inner.next())
    }

    /// Like [`recv`](Self::recv), giving up after `timeout` (`Ok(None)`). `Err` once the
    /// subscription has ended.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.next()).await })
        {
            Ok(Some(message)) => Ok(Some(message)),
            Ok(None) => Err(ClientError::ConnectionLost),
            Err(_elapsed) => Ok(None),
        }
    }

    /// Unsubscribes and waits for the manager to confirm.
    pub fn cancel(self) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.cancel())
    }
}

impl Iterator for Subscription {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.recv()
    }
}

/// See [`crate::Consumer`].
#[derive(Debug)]
pub struct Consumer {
    inner: client::Consumer,
    runtime: Arc<OwnedRuntime>,
}

impl Consumer {
    /// The next message, waiting as long as it takes.
    // Named like the async `Consumer::next`; not an `Iterator`, which would suggest an end
    // this never reaches and hide errors inside items.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Message, ClientError> {
        self.runtime.block_on(self.inner.next())
    }
}
