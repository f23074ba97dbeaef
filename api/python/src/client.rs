//! `hopmq.Client`: one connection to the local manager, every call of the blocking Rust
//! client with Python arguments.
//!
//! Owns: [`PyClient`]. Every call that talks to the manager runs with the GIL released
//! (through [`wait::sliced`] when it may wait), so other Python threads go on; the client may
//! be shared by threads, whose calls are multiplexed on the one connection.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hopmq::protocol::BATCH_MESSAGES_MAX;
use hopmq::{GetOptions, blocking};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{self, type_name};
use crate::errors::{self, to_py};
use crate::message::PyMessage;
use crate::pubsub::PyTopicSubscription;
use crate::streams::{MessageIterator, PyNotifyHandle, PySubscription};
use crate::wait;

/// A lease's length when `get_leased` is not told one.
const LEASE_DEFAULT_SECS: f64 = 30.0;

/// A connection to the queue manager on this host.
#[pyclass(frozen, module = "hopmq", name = "Client")]
pub(crate) struct PyClient {
    /// `None` once closed.
    inner: Mutex<Option<blocking::Client>>,
    socket: PathBuf,
}

/// Locks `mutex`, whose data stays consistent even if a holder panicked (each holder only
/// moves a handle in or out).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `max` checked as the Rust client checks it, for any Python int.
fn batch_max(max: i64) -> PyResult<u32> {
    match u32::try_from(max) {
        Ok(max) if (1..=BATCH_MESSAGES_MAX).contains(&max) => Ok(max),
        _ => Err(errors::InvalidArgument::new_err(format!(
            "max is {max}; it must be 1 to {BATCH_MESSAGES_MAX}"
        ))),
    }
}

/// Received messages as Python objects; leased ones remember `client`.
pub(crate) fn to_messages(
    py: Python<'_>,
    messages: Vec<hopmq::Message>,
    client: &blocking::Client,
) -> PyResult<Vec<Py<PyMessage>>> {
    messages
        .into_iter()
        .map(|message| PyMessage::new(py, message, Some(client)))
        .collect()
}

/// What a get asks for, Python arguments checked.
pub(crate) struct Take {
    pub(crate) queue: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max: u32,
    pub(crate) correlation_id: Option<String>,
    pub(crate) lease: Option<Duration>,
}

/// Takes (or leases) up to `take.max` messages, waiting up to `take.timeout` for a first one;
/// empty if none came.
pub(crate) fn take(
    py: Python<'_>,
    client: &blocking::Client,
    take: &Take,
) -> PyResult<Vec<hopmq::Message>> {
    let got = wait::sliced(py, take.timeout, |wait| {
        let options = GetOptions {
            timeout: wait,
            max: take.max,
            correlation_id: take.correlation_id.clone(),
            lease: take.lease,
        };
        client
            .get_with(&take.queue, options)
            .map(|messages| (!messages.is_empty()).then_some(messages))
    })?;
    Ok(got.unwrap_or_default())
}

impl PyClient {
    /// The connection, unless closed.
    fn client(&self) -> PyResult<blocking::Client> {
        lock(&self.inner).clone().ok_or_else(errors::closed)
    }

    fn one(&self, py: Python<'_>, take_options: &Take) -> PyResult<Option<Py<PyMessage>>> {
        let client = self.client()?;
        let messages = take(py, &client, take_options)?;
        Ok(to_messages(py, messages, &client)?.into_iter().next())
    }

    fn settle(&self, py: Python<'_>, leases: &Bound<'_, PyAny>, ack: bool) -> PyResult<()> {
        let leases = convert::lease_ids(leases)?;
        if leases.is_empty() {
            return Ok(());
        }
        let client = self.client()?;
        py.detach(|| {
            if ack {
                client.ack(leases)
            } else {
                client.nack(leases)
            }
        })
        .map_err(|error| to_py(py, error))
    }
}

#[pymethods]
impl PyClient {
    /// Connects to the manager listening at `socket`; without one, at $HOPMQ_SOCKET, else
    /// ./qmgr-data/qmgr.sock (the Rust client's rule).
    #[new]
    #[pyo3(signature = (socket=None))]
    fn new(py: Python<'_>, socket: Option<PathBuf>) -> PyResult<Self> {
        let socket = socket.unwrap_or_else(hopmq::socket_path_default);
        let client = py
            .detach(|| blocking::Client::connect_to(&socket))
            .map_err(|error| to_py(py, error))?;
        Ok(Self {
            inner: Mutex::new(Some(client)),
            socket,
        })
    }

    /// The socket this client connects to.
    #[getter]
    fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    /// The name of the manager of the current connection.
    #[getter]
    fn manager(&self) -> PyResult<String> {
        Ok(self.client()?.manager())
    }

    /// Puts one message to `address` (QUEUE or QUEUE@MANAGER) and returns its id once the
    /// manager has it durably (in memory only if persistent=False).
    #[pyo3(signature = (address, body, **options))]
    #[pyo3(
        text_signature = "($self, address, body, *, priority=4, ttl=None, headers=None, \
                          correlation_id=None, reply_to=None, persistent=True)"
    )]
    fn put(
        &self,
        py: Python<'_>,
        address: &str,
        body: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let message = convert::outgoing(body, options)?;
        let client = self.client()?;
        py.detach(|| client.put(address, message))
            .map(|id| id.to_string())
            .map_err(|error| to_py(py, error))
    }

    /// Puts one message like put, but returns only once it is durably in its destination
    /// manager (confirmed back through custody), waiting up to `timeout` seconds (None: 30);
    /// past it, NotArrived (the message is durable here and still on its way: do not put it
    /// again).
    #[pyo3(signature = (address, body, timeout=None, **options))]
    #[pyo3(
        text_signature = "($self, address, body, timeout=None, *, priority=4, ttl=None, \
                          headers=None, correlation_id=None, reply_to=None, persistent=True)"
    )]
    fn put_arrived(
        &self,
        py: Python<'_>,
        address: &str,
        body: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let timeout =
            convert::optional_duration(timeout, "timeout")?.unwrap_or(Duration::from_secs(30));
        let message = convert::outgoing(body, options)?;
        let client = self.client()?;
        py.detach(|| client.put_arrived(address, message, timeout))
            .map(|id| id.to_string())
            .map_err(|error| to_py(py, error))
    }

    /// Sends `body` to `address` as a request and returns its reply (a Message), waiting up to
    /// `timeout` seconds (None: 30); NoReply if none came (a late reply is dead-lettered). The
    /// manager sets reply_to (this client's private reply queue) and the correlation id.
    #[pyo3(signature = (address, body, timeout=None, **options))]
    #[pyo3(
        text_signature = "($self, address, body, timeout=None, *, priority=4, ttl=None, \
                          headers=None, correlation_id=None, persistent=True)"
    )]
    fn request(
        &self,
        py: Python<'_>,
        address: &str,
        body: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyMessage>> {
        let timeout =
            convert::optional_duration(timeout, "timeout")?.unwrap_or(Duration::from_secs(30));
        let message = convert::outgoing(body, options)?;
        let client = self.client()?;
        let reply = py
            .detach(|| client.request(address, message, timeout))
            .map_err(|error| to_py(py, error))?;
        PyMessage::new(py, reply, Some(&client))
    }

    /// Publishes `body` to `topic` as one request to every subscriber and returns the replies
    /// (a list of Message) that come within `timeout` seconds (None: 30), at most
    /// `max_replies`: returns as soon as that many came. Later replies are dead-lettered.
    #[pyo3(signature = (topic, body, timeout=None, max_replies=100, **options))]
    #[pyo3(
        text_signature = "($self, topic, body, timeout=None, max_replies=100, *, priority=4, \
                          ttl=None, headers=None, correlation_id=None, persistent=True)"
    )]
    fn request_many(
        &self,
        py: Python<'_>,
        topic: &str,
        body: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        max_replies: u32,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Py<PyMessage>>> {
        let timeout =
            convert::optional_duration(timeout, "timeout")?.unwrap_or(Duration::from_secs(30));
        let message = convert::outgoing(body, options)?;
        let client = self.client()?;
        let replies = py
            .detach(|| client.request_many(topic, message, timeout, max_replies))
            .map_err(|error| to_py(py, error))?;
        replies
            .into_iter()
            .map(|reply| PyMessage::new(py, reply, Some(&client)))
            .collect()
    }

    /// Replies to `request`. If this client holds it leased, `body` goes to its reply_to
    /// with its correlation id, and the request is acked, in one atomic write; a request
    /// taken otherwise (a get, a subscription's publication) is answered by a put to its
    /// reply_to. Returns the reply's id.
    #[pyo3(signature = (request, body, **options))]
    fn reply(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyMessage>,
        body: &Bound<'_, PyAny>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let request = request.borrow().request()?;
        let message = convert::outgoing(body, options)?;
        let client = self.client()?;
        py.detach(|| client.reply(&request, message))
            .map(|id| id.to_string())
            .map_err(|error| to_py(py, error))
    }

    /// Puts several messages atomically (all or none); each item is (address, body) or
    /// (address, body, options) with the options of put as a dict. Returns their ids in order.
    fn put_batch(&self, py: Python<'_>, messages: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let Ok(items) = messages.try_iter() else {
            return Err(PyTypeError::new_err(format!(
                "put_batch takes an iterable of (address, body[, options]), not {}",
                type_name(messages)
            )));
        };
        let mut batch = Vec::new();
        for item in items {
            batch.push(convert::batch_item(&item?, ("put_batch", "address"))?);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client()?;
        py.detach(|| client.put_batch(batch))
            .map(|ids| ids.iter().map(ToString::to_string).collect())
            .map_err(|error| to_py(py, error))
    }

    /// Takes one message from local `queue`, waiting up to `timeout` seconds (None: until one
    /// comes); None if none came. With `lease` (seconds) the message is leased instead of
    /// removed, and must be acked within it.
    #[pyo3(signature = (queue, timeout=None, *, correlation_id=None, lease=None))]
    fn get(
        &self,
        py: Python<'_>,
        queue: String,
        timeout: Option<&Bound<'_, PyAny>>,
        correlation_id: Option<String>,
        lease: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyMessage>>> {
        let take = Take {
            queue,
            timeout: convert::optional_duration(timeout, "timeout")?,
            max: 1,
            correlation_id,
            lease: convert::optional_duration(lease, "lease")?,
        };
        self.one(py, &take)
    }

    /// Takes one message from local `queue` if one is there; never waits.
    #[pyo3(signature = (queue, *, correlation_id=None))]
    fn poll(
        &self,
        py: Python<'_>,
        queue: String,
        correlation_id: Option<String>,
    ) -> PyResult<Option<Py<PyMessage>>> {
        let take = Take {
            queue,
            timeout: Some(Duration::ZERO),
            max: 1,
            correlation_id,
            lease: None,
        };
        self.one(py, &take)
    }

    /// Leases one message from local `queue`, waiting up to `timeout` seconds (None: until one
    /// comes). Ack it (message.ack()) within `lease` seconds, or it returns to the queue, as
    /// it does if this client disconnects.
    #[pyo3(signature = (queue, timeout=None, *, lease=None, correlation_id=None))]
    fn get_leased(
        &self,
        py: Python<'_>,
        queue: String,
        timeout: Option<&Bound<'_, PyAny>>,
        lease: Option<&Bound<'_, PyAny>>,
        correlation_id: Option<String>,
    ) -> PyResult<Option<Py<PyMessage>>> {
        let lease = convert::optional_duration(lease, "lease")?
            .unwrap_or(Duration::from_secs_f64(LEASE_DEFAULT_SECS));
        let take = Take {
            queue,
            timeout: convert::optional_duration(timeout, "timeout")?,
            max: 1,
            correlation_id,
            lease: Some(lease),
        };
        self.one(py, &take)
    }

    /// Takes (or, with `lease`, leases) up to `max` messages from local `queue`, waiting up to
    /// `timeout` seconds for a first one (None: until one comes); an empty list if none came.
    #[pyo3(signature = (queue, max, timeout=None, *, correlation_id=None, lease=None))]
    fn get_many(
        &self,
        py: Python<'_>,
        queue: String,
        max: i64,
        timeout: Option<&Bound<'_, PyAny>>,
        correlation_id: Option<String>,
        lease: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Py<PyMessage>>> {
        let take_options = Take {
            queue,
            timeout: convert::optional_duration(timeout, "timeout")?,
            max: batch_max(max)?,
            correlation_id,
            lease: convert::optional_duration(lease, "lease")?,
        };
        let client = self.client()?;
        let messages = take(py, &client, &take_options)?;
        to_messages(py, messages, &client)
    }

    /// Iterates over the messages of local `queue`, taking each (or leasing it, with `lease`);
    /// ends once none came for `timeout` seconds (None: never ends). `batch` > 1 fetches up to
    /// that many per request: faster, but fetched messages leave the queue before the loop
    /// reaches them.
    #[pyo3(signature = (queue, timeout=None, *, lease=None, correlation_id=None, batch=1))]
    fn messages(
        &self,
        queue: String,
        timeout: Option<&Bound<'_, PyAny>>,
        lease: Option<&Bound<'_, PyAny>>,
        correlation_id: Option<String>,
        batch: i64,
    ) -> PyResult<MessageIterator> {
        let take = Take {
            queue,
            timeout: convert::optional_duration(timeout, "timeout")?,
            max: batch_max(batch)?,
            correlation_id,
            lease: convert::optional_duration(lease, "lease")?,
        };
        Ok(MessageIterator::new(self.client()?, take))
    }

    /// Settles leased deliveries for good: a leased Message, a lease id, or an iterable of
    /// them.
    fn ack(&self, py: Python<'_>, leases: &Bound<'_, PyAny>) -> PyResult<()> {
        self.settle(py, leases, true)
    }

    /// Returns leased deliveries to their queue at once: a leased Message, a lease id, or an
    /// iterable of them.
    fn nack(&self, py: Python<'_>, leases: &Bound<'_, PyAny>) -> PyResult<()> {
        self.settle(py, leases, false)
    }

    /// Copies of up to `max` messages of local `queue`, in delivery order; none is removed.
    #[pyo3(signature = (queue, max=100))]
    fn browse(&self, py: Python<'_>, queue: &str, max: i64) -> PyResult<Vec<Py<PyMessage>>> {
        let max = batch_max(max)?;
        let client = self.client()?;
        let messages = py
            .detach(|| client.browse(queue, max))
            .map_err(|error| to_py(py, error))?;
        to_messages(py, messages, &client)
    }

    /// A copy of each message put into local `queue` from now on, to iterate over or recv();
    /// the messages stay in the queue.
    fn subscribe(&self, py: Python<'_>, queue: &str) -> PyResult<PySubscription> {
        let client = self.client()?;
        let subscription = py
            .detach(|| client.subscribe(queue))
            .map_err(|error| to_py(py, error))?;
        Ok(PySubscription::new(queue, subscription))
    }

    /// Calls `callback(message)` with a copy of each message put into local `queue` from now
    /// on, on a thread of the client's, one message at a time; the messages stay in the queue.
    /// Returns a handle whose cancel() (or the end of its `with` block) stops it.
    fn notify(
        &self,
        py: Python<'_>,
        queue: &str,
        callback: Bound<'_, PyAny>,
    ) -> PyResult<PyNotifyHandle> {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "callback must be callable, not {}",
                type_name(&callback)
            )));
        }
        let client = self.client()?;
        PyNotifyHandle::start(py, &client, queue, callback.unbind())
    }

    /// Publishes `body` to `topic` (dot-separated tokens, like `prices.eu.btc`): a copy goes
    /// to every subscription whose filter matches it, on any manager. Returns its id once this
    /// manager has it durably (in memory only if persistent=False). With retain=True it is
    /// also kept as the topic's last publication, which subscriptions made later receive.
    #[pyo3(signature = (topic, body, *, retain=false, **options))]
    #[pyo3(
        text_signature = "($self, topic, body, *, retain=False, priority=4, ttl=None, \
                          headers=None, correlation_id=None, reply_to=None, persistent=True)"
    )]
    fn publish(
        &self,
        py: Python<'_>,
        topic: &str,
        body: &Bound<'_, PyAny>,
        retain: bool,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        let message = convert::outgoing(body, options)?;
        let client = self.client()?;
        py.detach(|| {
            if retain {
                client.publish_retained(topic, message)
            } else {
                client.publish(topic, message)
            }
        })
        .map(|id| id.to_string())
        .map_err(|error| to_py(py, error))
    }

    /// Publishes several publications atomically (all or none); each item is (topic, body)
    /// or (topic, body, options) with the options of publish as a dict. Returns their ids in
    /// order.
    #[pyo3(signature = (publications, *, retain=false))]
    fn publish_batch(
        &self,
        py: Python<'_>,
        publications: &Bound<'_, PyAny>,
        retain: bool,
    ) -> PyResult<Vec<String>> {
        let Ok(items) = publications.try_iter() else {
            return Err(PyTypeError::new_err(format!(
                "publish_batch takes an iterable of (topic, body[, options]), not {}",
                type_name(publications)
            )));
        };
        let mut batch = Vec::new();
        for item in items {
            batch.push(convert::batch_item(&item?, ("publish_batch", "topic"))?);
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client()?;
        py.detach(|| client.publish_with(batch, retain))
            .map(|ids| ids.iter().map(ToString::to_string).collect())
            .map_err(|error| to_py(py, error))
    }

    /// The publications matching `filter` (`*` matches one token, a final `>` the rest) from
    /// now on, while this client's connection lasts: a TopicSubscription to iterate over or
    /// recv() from. One that falls behind loses publications, and says so with a Missed.
    fn subscribe_topic(&self, py: Python<'_>, filter: &str) -> PyResult<PyTopicSubscription> {
        let client = self.client()?;
        let subscription = py
            .detach(|| client.subscribe_topic(filter))
            .map_err(|error| to_py(py, error))?;
        Ok(PyTopicSubscription::new(filter, subscription))
    }

    /// Creates the durable subscription `name`: a local queue of that name fed with every
    /// publication matching `filter`, read with get, get_leased or messages like any queue.
    /// It survives disconnects and restarts, holding at most `max_depth` publications (None:
    /// the manager's default).
    #[pyo3(signature = (name, filter, max_depth=None))]
    fn create_subscription(
        &self,
        py: Python<'_>,
        name: &str,
        filter: &str,
        max_depth: Option<u64>,
    ) -> PyResult<()> {
        let client = self.client()?;
        py.detach(|| client.create_subscription(name, filter, max_depth))
            .map_err(|error| to_py(py, error))
    }

    /// Deletes the durable subscription `name` and its queue.
    fn delete_subscription(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let client = self.client()?;
        py.detach(|| client.delete_subscription(name))
            .map_err(|error| to_py(py, error))
    }

    /// This manager's subscriptions as a dict: `durable` (name, filter, depth, max_depth),
    /// `transient` (filter, delivered, missed) and `interest` (the filters other managers
    /// advertised, by manager).
    fn list_subscriptions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let listing = py
            .detach(|| client.list_subscriptions())
            .map_err(|error| to_py(py, error))?;
        let value = serde_json::to_value(&listing).map_err(|error| {
            errors::ProtocolError::new_err(format!("the subscription list is not data: {error}"))
        })?;
        convert::json_to_py(py, &value)
    }

    /// Creates local `queue` (idempotent), holding at most `max_depth` messages (None: the
    /// manager's default).
    #[pyo3(signature = (queue, max_depth=None))]
    fn declare(&self, py: Python<'_>, queue: &str, max_depth: Option<u64>) -> PyResult<()> {
        let client = self.client()?;
        py.detach(|| client.declare(queue, max_depth))
            .map_err(|error| to_py(py, error))
    }

    /// Deletes local `queue`, which must be empty.
    fn delete(&self, py: Python<'_>, queue: &str) -> PyResult<()> {
        let client = self.client()?;
        py.detach(|| client.delete(queue))
            .map_err(|error| to_py(py, error))
    }

    /// The manager's state as a dict: its name, version, uptime, queues (name, depth, leased,
    /// ...), counters, links and routes.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let status = py
            .detach(|| client.status())
            .map_err(|error| to_py(py, error))?;
        let value = serde_json::to_value(&status).map_err(|error| {
            errors::ProtocolError::new_err(format!("the manager's status is not data: {error}"))
        })?;
        convert::json_to_py(py, &value)
    }

    /// Closes this client; its calls then raise ClientClosed. The connection ends once the
    /// messages and handles made from it are gone too (a leased message keeps it, to be
    /// acked).
    fn close(&self) {
        let closed = lock(&self.inner).take();
        drop(closed);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        let socket = self.socket.display();
        match &*lock(&self.inner) {
            Some(client) => format!("Client(socket='{socket}', manager='{}')", client.manager()),
            None => format!("Client(socket='{socket}', closed)"),
        }
    }
}
