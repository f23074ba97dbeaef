//! Publish/subscribe's stream: `Client.subscribe_topic` returns a `TopicSubscription`, the
//! publications matching a filter while the client's connection lasts, and `Missed` is the gap
//! it reports when its client fell too far behind (the manager never lets a slow subscriber
//! hold a publisher up). The calls that publish and manage durable subscriptions are
//! `Client`'s.
//!
//! Invariant: no gap is silent: a `Missed` comes in the stream where publications were lost,
//! before the next one received.

use std::sync::Mutex;

use hopmq::{ClientError, Publication, blocking};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::client::lock;
use crate::convert;
use crate::errors;
use crate::message::PyMessage;
use crate::streams::cancel_once;
use crate::wait;

/// Publications a topic subscription did not receive because its client fell behind.
#[pyclass(frozen, eq, module = "hopmq", name = "Missed")]
#[derive(PartialEq, Eq)]
pub(crate) struct PyMissed {
    count: u64,
}

#[pymethods]
impl PyMissed {
    #[new]
    fn new(count: u64) -> Self {
        Self { count }
    }

    /// How many publications were lost at this point of the stream.
    #[getter]
    fn count(&self) -> u64 {
        self.count
    }

    fn __repr__(&self) -> String {
        format!("Missed(count={})", self.count)
    }
}

/// The publications matching a filter, from `Client.subscribe_topic`.
#[pyclass(frozen, module = "hopmq", name = "TopicSubscription")]
pub(crate) struct PyTopicSubscription {
    filter: String,
    /// `None` once cancelled.
    inner: Mutex<Option<blocking::TopicSubscription>>,
}

impl PyTopicSubscription {
    pub(crate) fn new(filter: &str, subscription: blocking::TopicSubscription) -> Self {
        Self {
            filter: filter.to_owned(),
            inner: Mutex::new(Some(subscription)),
        }
    }

    /// The next publication or gap within `timeout` (`None`: however long it takes);
    /// `Ok(None)` if none came; `Err(ClientError::ConnectionLost)` once the subscription has
    /// ended.
    fn next_within(
        &self,
        py: Python<'_>,
        timeout: Option<std::time::Duration>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let got = wait::sliced(py, timeout, |wait| match &mut *lock(&self.inner) {
            Some(subscription) => subscription.recv_timeout(wait),
            None => Err(ClientError::ConnectionLost),
        })?;
        let Some(publication) = got else {
            return Ok(None);
        };
        let object = match publication {
            Publication::Message(message) => PyMessage::new(py, *message, None)?
                .into_bound(py)
                .into_any(),
            Publication::Missed(count) => {
                Py::new(py, PyMissed { count })?.into_bound(py).into_any()
            }
        };
        Ok(Some(object.unbind()))
    }
}

#[pymethods]
impl PyTopicSubscription {
    /// The filter subscribed with.
    #[getter]
    fn filter(&self) -> &str {
        &self.filter
    }

    /// The next publication (a Message, its topic in `topic`) or gap (a Missed), waiting up
    /// to `timeout` seconds (None: until one comes); None if none came. Raises ConnectionLost
    /// once the subscription has ended (cancelled, or its connection dropped).
    #[pyo3(signature = (timeout=None))]
    fn recv(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let timeout = convert::optional_duration(timeout, "timeout")?;
        self.next_within(py, timeout)
    }

    /// Unsubscribes and waits for the manager to confirm; idempotent.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        cancel_once(py, &self.inner, blocking::TopicSubscription::cancel)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next publication or gap; the iteration ends with the subscription.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
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
        format!("TopicSubscription(filter='{}')", self.filter)
    }
}
