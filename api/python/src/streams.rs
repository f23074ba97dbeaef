//! Messages as they come: `client.messages(...)` (an iterator of gets), `Subscription` (copies
//! of each message put, pulled) and `NotifyHandle` (copies pushed to a callback).
//!
//! Owns: those three classes, and the registry of running notify handlers that
//! [`stop_notifications`] stops when the interpreter exits (`atexit`, in `hopmq/__init__.py`):
//! a handler's thread must not try to enter an interpreter that is finalizing.
//!
//! Invariant: no lock here is taken while holding the GIL if its holder may wait on the
//! manager; such locks are taken inside `detach`, so a thread waiting for one never holds the
//! GIL that the holder needs.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use hopmq::{ClientError, blocking};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::client::{Take, lock, take, to_messages};
use crate::convert;
use crate::errors::{self, to_py};
use crate::message::PyMessage;
use crate::wait;

/// The iterator `Client.messages` returns: each step takes (or leases) the next message.
#[pyclass(frozen, module = "hopmq", name = "MessageIterator")]
pub(crate) struct MessageIterator {
    client: blocking::Client,
    take: Take,
    /// Fetched by a batch get, not yet handed out.
    fetched: Mutex<VecDeque<Py<PyMessage>>>,
}

impl MessageIterator {
    pub(crate) fn new(client: blocking::Client, take: Take) -> Self {
        Self {
            client,
            take,
            fetched: Mutex::new(VecDeque::new()),
        }
    }
}

#[pymethods]
impl MessageIterator {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyMessage>>> {
        if let Some(message) = lock(&self.fetched).pop_front() {
            return Ok(Some(message));
        }
        let messages = take(py, &self.client, &self.take)?;
        let mut messages = to_messages(py, messages, &self.client)?.into_iter();
        let first = messages.next();
        lock(&self.fetched).extend(messages);
        Ok(first)
    }
}

/// Copies of the messages put into one queue, from `Client.subscribe`.
#[pyclass(frozen, module = "hopmq", name = "Subscription")]
pub(crate) struct PySubscription {
    queue: String,
    /// `None` once cancelled.
    inner: Mutex<Option<blocking::Subscription>>,
}

impl PySubscription {
    pub(crate) fn new(queue: &str, subscription: blocking::Subscription) -> Self {
        Self {
            queue: queue.to_owned(),
            inner: Mutex::new(Some(subscription)),
        }
    }

    /// The next message within `timeout` (`None`: however long it takes); `Ok(None)` if none
    /// came; `Err(ClientError::ConnectionLost)` once the subscription has ended.
    fn next_within(
        &self,
        py: Python<'_>,
        timeout: Option<std::time::Duration>,
    ) -> PyResult<Option<Py<PyMessage>>> {
        let got = wait::sliced(py, timeout, |wait| match &mut *lock(&self.inner) {
            Some(subscription) => subscription.recv_timeout(wait),
            None => Err(ClientError::ConnectionLost),
        })?;
        got.map(|message| PyMessage::new(py, message, None))
            .transpose()
    }
}

#[pymethods]
impl PySubscription {
    /// The queue subscribed to.
    #[getter]
    fn queue(&self) -> &str {
        &self.queue
    }

    /// The next message put into the queue, waiting up to `timeout` seconds (None: until one
    /// comes); None if none came. Raises ConnectionLost once the subscription has ended
    /// (cancelled, or its connection dropped).
    #[pyo3(signature = (timeout=None))]
    fn recv(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyMessage>>> {
        let timeout = convert::optional_duration(timeout, "timeout")?;
        self.next_within(py, timeout)
    }

    /// Unsubscribes and waits for the manager to confirm; idempotent.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        cancel_once(py, &self.inner, blocking::Subscription::cancel)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next message; the iteration ends with the subscription.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyMessage>>> {
        match self.next_within(py, None) {
            Err(error) if error.is_instance_of::<errors::ConnectionLost>(py) => Ok(None),
            other => other,
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.cancel(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Subscription(queue='{}')", self.queue)
    }
}

/// Cancels the subscription in `inner` with `cancel`, if it was not cancelled already, with the
/// GIL released while the manager confirms; idempotent.
pub(crate) fn cancel_once<S: Send>(
    py: Python<'_>,
    inner: &Mutex<Option<S>>,
    cancel: impl FnOnce(S) -> Result<(), ClientError> + Send,
) -> PyResult<()> {
    py.detach(|| {
        // Taken out first: the lock is not held while the manager answers.
        let taken = lock(inner).take();
        taken.map_or(Ok(()), cancel)
    })
    .map_err(|error| to_py(py, error))
}

type SharedHandle = Arc<Mutex<Option<blocking::NotifyHandle>>>;

thread_local! {
    /// Which handler this thread is running a callback of (its handle's address), 0 if none:
    /// a callback that cancels its own handler would wait for itself forever.
    static CALLING: Cell<usize> = const { Cell::new(0) };
}

/// What identifies a handler in [`CALLING`].
fn handler_id(handle: &SharedHandle) -> usize {
    Arc::as_ptr(handle) as usize
}

/// Every notify handler started, to stop at exit; dead entries are pruned as new ones come.
static RUNNING: Mutex<Vec<Weak<Mutex<Option<blocking::NotifyHandle>>>>> = Mutex::new(Vec::new());

/// Stops a `Client.notify` callback: cancel(), or the end of its `with` block.
#[pyclass(frozen, module = "hopmq", name = "NotifyHandle")]
pub(crate) struct PyNotifyHandle {
    queue: String,
    handle: SharedHandle,
}

impl PyNotifyHandle {
    /// Subscribes to `queue` and runs `callback` on each message on the client's thread.
    pub(crate) fn start(
        py: Python<'_>,
        client: &blocking::Client,
        queue: &str,
        callback: Py<PyAny>,
    ) -> PyResult<Self> {
        let handle: SharedHandle = Arc::new(Mutex::new(None));
        let id = handler_id(&handle);
        let started = py
            .detach(|| {
                client.notify(queue, move |message| {
                    // `try_attach`: nothing to call once the interpreter is going away.
                    let _ = Python::try_attach(|py| {
                        CALLING.set(id);
                        let called = PyMessage::new(py, message, None)
                            .and_then(|message| callback.call1(py, (message,)));
                        CALLING.set(0);
                        // As for an exception in a thread's target: reported, and the
                        // next message still comes.
                        if let Err(error) = called {
                            error.write_unraisable(py, Some(callback.bind(py)));
                        }
                    });
                })
            })
            .map_err(|error| to_py(py, error))?;
        *lock(&handle) = Some(started);
        let mut running = lock(&RUNNING);
        running.retain(|entry| entry.strong_count() > 0);
        running.push(Arc::downgrade(&handle));
        Ok(Self {
            queue: queue.to_owned(),
            handle,
        })
    }
}

/// Stops the handler of `handle` and waits for it; idempotent.
fn cancel_handle(handle: &SharedHandle) -> Result<(), ClientError> {
    // Taken out first: `is_finished` on another thread must not wait, holding the GIL, for
    // the lock while this waits for a callback that needs the GIL.
    let taken = lock(handle).take();
    match taken {
        Some(handle) => handle.cancel(),
        None => Ok(()),
    }
}

#[pymethods]
impl PyNotifyHandle {
    /// The queue watched.
    #[getter]
    fn queue(&self) -> &str {
        &self.queue
    }

    /// Stops the callback and waits until the manager has ended the subscription; a callback
    /// running now finishes first. Must not be called from the callback itself.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        if CALLING.get() == handler_id(&self.handle) {
            return Err(errors::InvalidArgument::new_err(
                "a notify callback cannot cancel its own handler (it would wait for itself); \
                 cancel it from another thread",
            ));
        }
        py.detach(|| cancel_handle(&self.handle))
            .map_err(|error| to_py(py, error))
    }

    /// Whether the callback has stopped (cancelled, or its connection dropped).
    fn is_finished(&self) -> bool {
        lock(&self.handle)
            .as_ref()
            .is_none_or(blocking::NotifyHandle::is_finished)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.cancel(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("NotifyHandle(queue='{}')", self.queue)
    }
}

/// Stops every notify callback still running; `hopmq` registers it with `atexit`.
#[pyfunction]
pub(crate) fn stop_notifications(py: Python<'_>) {
    let running: Vec<SharedHandle> = lock(&RUNNING)
        .drain(..)
        .filter_map(|entry| entry.upgrade())
        .collect();
    py.detach(|| {
        for handle in &running {
            // At exit there is no one left to tell of a failed unsubscribe.
            let _ = cancel_handle(handle);
        }
    });
}
