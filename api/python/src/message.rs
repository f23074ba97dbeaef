//! Received messages as Python sees them: `hopmq.Message` and the hops of its `trace`.
//!
//! Owns: [`PyMessage`], an immutable view of a [`hopmq::Message`] whose body is made a Python
//! `bytes` once, when it arrives; a leased message keeps a handle on the client that leased it,
//! so that `message.ack()` settles it on the same connection.

use hopmq::blocking;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::errors;

/// How much of a body `repr` shows.
const REPR_BODY_BYTES: usize = 64;

/// A message received by `get`, `poll`, `browse`, a subscription or a notify callback.
#[pyclass(frozen, module = "hopmq", name = "Message")]
pub(crate) struct PyMessage {
    body: Py<PyBytes>,
    /// Everything but the body, which lives in `body`.
    message: hopmq::Message,
    /// The client whose connection holds the lease; `None` unless leased.
    client: Option<blocking::Client>,
}

impl PyMessage {
    /// The Python form of `message`; `client` is the one that received it.
    pub(crate) fn new(
        py: Python<'_>,
        mut message: hopmq::Message,
        client: Option<&blocking::Client>,
    ) -> PyResult<Py<Self>> {
        let body = PyBytes::new(py, &message.body).unbind();
        message.body = Vec::new();
        let client = message.lease.and(client.cloned());
        Py::new(
            py,
            Self {
                body,
                message,
                client,
            },
        )
    }

    /// The message without its body, for a reply to it.
    pub(crate) fn request(&self) -> PyResult<hopmq::Message> {
        Ok(self.message.clone())
    }

    /// Its lease id, or `InvalidArgument` if it was not leased.
    pub(crate) fn lease_id(&self) -> PyResult<u64> {
        self.message.lease.ok_or_else(|| {
            errors::InvalidArgument::new_err(format!(
                "message {} is not leased: only messages of a leased get can be acked or nacked",
                self.message.id
            ))
        })
    }

    fn settle(&self, py: Python<'_>, ack: bool) -> PyResult<()> {
        let lease = self.lease_id()?;
        let Some(client) = &self.client else {
            return Err(errors::InvalidArgument::new_err(
                "this message's lease has no client to settle it on",
            ));
        };
        py.detach(|| {
            if ack {
                client.ack(vec![lease])
            } else {
                client.nack(vec![lease])
            }
        })
        .map_err(|error| errors::to_py(py, error))
    }
}

#[pymethods]
impl PyMessage {
    /// The payload.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// The body decoded as UTF-8 (raises UnicodeDecodeError if it is not).
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.body.bind(py).call_method1("decode", ("utf-8",))
    }

    /// Application headers (a new dict on each access).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let headers = PyDict::new(py);
        for (key, value) in &self.message.headers {
            headers.set_item(key, value)?;
        }
        Ok(headers)
    }

    /// The id the manager gave it at put: 32 hexadecimal digits.
    #[getter]
    fn id(&self) -> String {
        self.message.id.to_string()
    }

    /// 0 (lowest) to 9 (highest).
    #[getter]
    fn priority(&self) -> u8 {
        self.message.priority
    }

    /// Ties a reply to its request.
    #[getter]
    fn correlation_id(&self) -> Option<&str> {
        self.message.correlation_id.as_deref()
    }

    /// Where replies should go.
    #[getter]
    fn reply_to(&self) -> Option<&str> {
        self.message.reply_to.as_deref()
    }

    /// The kind of delivery report this message is (`"arrival"`, `"delivery"` or
    /// `"exception"`), or None for any other message.
    #[getter]
    fn report(&self) -> Option<&'static str> {
        self.message.report().map(hopmq::Report::as_str)
    }

    /// The topic a publication was published to; None for a queue message.
    #[getter]
    fn topic(&self) -> Option<&str> {
        self.message.topic()
    }

    /// Whether it was stored on disk (put persistent).
    #[getter]
    fn persistent(&self) -> bool {
        self.message.persistent
    }

    /// When it expires, in milliseconds since the Unix epoch; None if never.
    #[getter]
    fn expires_at_ms(&self) -> Option<u64> {
        self.message.expires_at_ms
    }

    /// The manager where it was first put.
    #[getter]
    fn origin(&self) -> &str {
        &self.message.origin
    }

    /// How many times it has been handed out, this time included.
    #[getter]
    fn delivery_count(&self) -> u32 {
        self.message.delivery_count
    }

    /// The managers it passed through, oldest first.
    #[getter]
    fn trace<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let hops = self.message.trace.iter().map(|hop| PyTrace {
            manager: hop.manager.clone(),
            at_ms: hop.at_ms,
        });
        PyList::new(py, hops)
    }

    /// The lease id of a leased get, to ack or nack; None otherwise.
    #[getter]
    fn lease(&self) -> Option<u64> {
        self.message.lease
    }

    /// Settles this leased message: it is removed for good.
    fn ack(&self, py: Python<'_>) -> PyResult<()> {
        self.settle(py, true)
    }

    /// Returns this leased message to its queue at once.
    fn nack(&self, py: Python<'_>) -> PyResult<()> {
        self.settle(py, false)
    }

    fn __bytes__(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let body = self.body.bind(py);
        let bytes = body.as_bytes();
        let shown = if bytes.len() > REPR_BODY_BYTES {
            let head = PyBytes::new(py, &bytes[..REPR_BODY_BYTES]).repr()?;
            format!("{head}... ({} bytes)", bytes.len())
        } else {
            body.repr()?.to_string()
        };
        let lease = match self.message.lease {
            Some(lease) => format!(", lease={lease}"),
            None => String::new(),
        };
        Ok(format!(
            "Message(id='{}', body={shown}, priority={}, delivery_count={}{lease})",
            self.message.id, self.message.priority, self.message.delivery_count
        ))
    }
}

/// One hop of a message's journey: the manager, and when the message arrived there.
#[pyclass(frozen, get_all, module = "hopmq", name = "Trace")]
pub(crate) struct PyTrace {
    /// The manager.
    manager: String,
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
}

#[pymethods]
impl PyTrace {
    fn __repr__(&self) -> String {
        // Manager names are `[A-Za-z0-9_.-]`: nothing to escape.
        format!("Trace(manager='{}', at_ms={})", self.manager, self.at_ms)
    }
}
