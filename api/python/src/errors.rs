//! The Python exception classes, and how each Rust client error becomes one.
//!
//! Owns: the hierarchy under `hopmq.Error` (one class per kind of [`ClientError`] and per
//! [`ApiError`] variant) and [`to_py`], the one place a Rust error crosses into Python. Each
//! raised exception carries `kind` (the variant in snake case) and the variant's fields as
//! attributes, so code can branch on them without parsing messages.

use hopmq::protocol::FrameError;
use hopmq::{ApiError, ClientError};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    hopmq,
    Error,
    PyException,
    "Base class of every error the hopmq client raises."
);
create_exception!(
    hopmq,
    ConnectError,
    Error,
    "The manager's socket could not be reached: no manager runs there, or the path is wrong."
);
create_exception!(
    hopmq,
    HandshakeError,
    Error,
    "The manager did not accept the connection: it refused the handshake or did not answer it."
);
create_exception!(
    hopmq,
    ConnectionLost,
    Error,
    "The connection ended while the call was in flight; whether the manager carried it out is \
     unknown. The next call reconnects."
);
create_exception!(
    hopmq,
    ProtocolError,
    Error,
    "The manager sent something the protocol does not allow."
);
create_exception!(
    hopmq,
    InvalidArgument,
    Error,
    "The call's arguments are invalid; nothing was sent."
);
create_exception!(
    hopmq,
    NoReply,
    Error,
    "A request's reply did not come within its timeout (a late one is dead-lettered)."
);
create_exception!(
    hopmq,
    ClientClosed,
    Error,
    "The client was closed (close(), or the end of its `with` block)."
);
create_exception!(
    hopmq,
    ManagerError,
    Error,
    "The manager refused or failed the operation."
);
create_exception!(
    hopmq,
    BadAddress,
    ManagerError,
    "The address is not QUEUE or QUEUE@MANAGER with valid names."
);
create_exception!(
    hopmq,
    NoRoute,
    ManagerError,
    "The address names a manager or queue the topology cannot resolve."
);
create_exception!(
    hopmq,
    UnknownQueue,
    ManagerError,
    "The queue does not exist on this manager."
);
create_exception!(
    hopmq,
    QueueElsewhere,
    ManagerError,
    "The topology homes the queue on another manager: read it there."
);
create_exception!(
    hopmq,
    NotLocal,
    ManagerError,
    "A read named another manager's queue (`QUEUE@MANAGER`): reads are local to a manager."
);
create_exception!(
    hopmq,
    QueueFull,
    ManagerError,
    "The queue holds its maximum number of messages."
);
create_exception!(
    hopmq,
    MessageTooLarge,
    ManagerError,
    "The message body is over the size limit."
);
create_exception!(
    hopmq,
    BatchTooLarge,
    ManagerError,
    "The request holds more messages than one request may."
);
create_exception!(
    hopmq,
    UnknownLease,
    ManagerError,
    "No such lease is held by this connection (settled, expired, or never given)."
);
create_exception!(
    hopmq,
    UnknownSubscription,
    ManagerError,
    "No such subscription exists on this connection."
);
create_exception!(
    hopmq,
    QueueNotEmpty,
    ManagerError,
    "A queue must be empty to be deleted."
);
create_exception!(
    hopmq,
    NotArrived,
    ManagerError,
    "A put that waited for arrival: stored durably, not yet confirmed by its destination in time (it is still on its way)."
);
create_exception!(
    hopmq,
    DiskFull,
    ManagerError,
    "The manager's disk (or journal quota) is full; retry once space returns."
);
create_exception!(
    hopmq,
    StorageError,
    ManagerError,
    "The manager's store failed; nothing was stored."
);
create_exception!(
    hopmq,
    ShuttingDown,
    ManagerError,
    "The manager is stopping; the operation was not carried out."
);
create_exception!(
    hopmq,
    BadRequest,
    ManagerError,
    "The request is malformed (an invalid queue name, a zero max...)."
);
create_exception!(
    hopmq,
    VersionMismatch,
    HandshakeError,
    "The client and the manager share no protocol version."
);
create_exception!(
    hopmq,
    TooManyConnections,
    HandshakeError,
    "The manager serves its maximum number of client connections (max_connections)."
);

/// Every exception class, for the module to export: (Python name, class).
pub(crate) fn classes(py: Python<'_>) -> Vec<(&'static str, Bound<'_, pyo3::types::PyType>)> {
    vec![
        ("Error", py.get_type::<Error>()),
        ("ConnectError", py.get_type::<ConnectError>()),
        ("HandshakeError", py.get_type::<HandshakeError>()),
        ("ConnectionLost", py.get_type::<ConnectionLost>()),
        ("ProtocolError", py.get_type::<ProtocolError>()),
        ("InvalidArgument", py.get_type::<InvalidArgument>()),
        ("NoReply", py.get_type::<NoReply>()),
        ("ClientClosed", py.get_type::<ClientClosed>()),
        ("ManagerError", py.get_type::<ManagerError>()),
        ("BadAddress", py.get_type::<BadAddress>()),
        ("NoRoute", py.get_type::<NoRoute>()),
        ("UnknownQueue", py.get_type::<UnknownQueue>()),
        ("QueueElsewhere", py.get_type::<QueueElsewhere>()),
        ("NotLocal", py.get_type::<NotLocal>()),
        ("QueueFull", py.get_type::<QueueFull>()),
        ("MessageTooLarge", py.get_type::<MessageTooLarge>()),
        ("BatchTooLarge", py.get_type::<BatchTooLarge>()),
        ("UnknownLease", py.get_type::<UnknownLease>()),
        ("UnknownSubscription", py.get_type::<UnknownSubscription>()),
        ("QueueNotEmpty", py.get_type::<QueueNotEmpty>()),
        ("NotArrived", py.get_type::<NotArrived>()),
        ("DiskFull", py.get_type::<DiskFull>()),
        ("StorageError", py.get_type::<StorageError>()),
        ("ShuttingDown", py.get_type::<ShuttingDown>()),
        ("BadRequest", py.get_type::<BadRequest>()),
        ("VersionMismatch", py.get_type::<VersionMismatch>()),
        ("TooManyConnections", py.get_type::<TooManyConnections>()),
    ]
}

/// An attribute value of a raised exception.
enum Field {
    Str(String),
    Int(u64),
    Float(f64),
    None,
}

/// A Python exception of class `class` with `message`, `kind` and `fields` as attributes.
fn raise(
    py: Python<'_>,
    class: Bound<'_, pyo3::types::PyType>,
    message: String,
    kind: &str,
    fields: Vec<(&str, Field)>,
) -> PyErr {
    let value = match class.call1((message.clone(),)) {
        Ok(value) => value,
        // Only a broken interpreter fails to make an exception; report that instead.
        Err(error) => return error,
    };
    let set = || -> PyResult<()> {
        value.setattr("kind", kind)?;
        for (name, field) in fields {
            match field {
                Field::Str(text) => value.setattr(name, text)?,
                Field::Int(number) => value.setattr(name, number)?,
                Field::Float(number) => value.setattr(name, number)?,
                Field::None => value.setattr(name, py.None())?,
            }
        }
        Ok(())
    };
    match set() {
        Ok(()) => PyErr::from_value(value),
        Err(error) => error,
    }
}

/// The exception for a failed call.
pub(crate) fn to_py(py: Python<'_>, error: ClientError) -> PyErr {
    match error {
        ClientError::Connect {
            ref path,
            error: ref cause,
        } => {
            let errno = cause.raw_os_error().map_or(Field::None, |n| {
                Field::Int(u64::try_from(n).unwrap_or_default())
            });
            // The Rust client's rule and default, named from its constants so the hint
            // cannot drift from what `Client()` does.
            let message = format!(
                "{error}. Is a manager (`qmgr run`) listening there? The socket is \
                 Client(socket=...), else ${}, else {}",
                hopmq::SOCKET_ENV,
                hopmq::SOCKET_PATH_DEFAULT,
            );
            let path = Field::Str(path.display().to_string());
            raise(
                py,
                py.get_type::<ConnectError>(),
                message,
                "connect",
                vec![("path", path), ("errno", errno)],
            )
        }
        ClientError::Handshake(ref api) => {
            let message = error.to_string();
            api_error(py, api, message)
        }
        ClientError::HandshakeTimeout(timeout) => raise(
            py,
            py.get_type::<HandshakeError>(),
            error.to_string(),
            "handshake_timeout",
            vec![("timeout", Field::Float(timeout.as_secs_f64()))],
        ),
        ClientError::Api(ref api) => api_error(py, api, api.to_string()),
        ClientError::Frame(FrameError::TooLarge { bytes, limit }) => raise(
            py,
            py.get_type::<MessageTooLarge>(),
            format!(
                "a request of {bytes} bytes exceeds the protocol's limit of {limit} bytes; \
                 nothing was sent"
            ),
            "message_too_large",
            vec![("bytes", count(bytes)), ("limit", count(limit))],
        ),
        ClientError::Frame(_) => simple::<ProtocolError>(py, &error, "frame"),
        ClientError::Protocol(_) => simple::<ProtocolError>(py, &error, "protocol"),
        ClientError::UnexpectedReply { .. } => {
            simple::<ProtocolError>(py, &error, "unexpected_reply")
        }
        ClientError::ConnectionLost => simple::<ConnectionLost>(py, &error, "connection_lost"),
        ClientError::InvalidArgument(_) => {
            simple::<InvalidArgument>(py, &error, "invalid_argument")
        }
        ClientError::NoReply(timeout) => raise(
            py,
            py.get_type::<NoReply>(),
            error.to_string(),
            "no_reply",
            vec![("timeout", Field::Float(timeout.as_secs_f64()))],
        ),
    }
}

fn simple<T: pyo3::PyTypeInfo>(py: Python<'_>, error: &ClientError, kind: &str) -> PyErr {
    raise(py, py.get_type::<T>(), error.to_string(), kind, Vec::new())
}

fn count(n: usize) -> Field {
    Field::Int(u64::try_from(n).unwrap_or(u64::MAX))
}

fn text(s: &str) -> Field {
    Field::Str(s.to_owned())
}

/// The exception for what the manager reported; `message` says it (with context for a
/// refused handshake).
/// A queue this manager does not have: unknown, or another manager's to read.
fn no_such_queue_here(py: Python<'_>, api: &ApiError, message: String) -> PyErr {
    match api {
        ApiError::UnknownQueue { queue } => raise(
            py,
            py.get_type::<UnknownQueue>(),
            message,
            "unknown_queue",
            vec![("queue", text(queue))],
        ),
        ApiError::QueueElsewhere { queue, home } => raise(
            py,
            py.get_type::<QueueElsewhere>(),
            message,
            "queue_elsewhere",
            vec![("queue", text(queue)), ("home", text(home))],
        ),
        ApiError::NotLocal { queue, manager } => raise(
            py,
            py.get_type::<NotLocal>(),
            message,
            "not_local",
            vec![("queue", text(queue)), ("manager", text(manager))],
        ),
        other => raise(
            py,
            py.get_type::<ManagerError>(),
            message,
            "manager",
            vec![("detail", text(&other.to_string()))],
        ),
    }
}

fn api_error(py: Python<'_>, api: &ApiError, message: String) -> PyErr {
    let (class, kind, fields) = match api {
        ApiError::VersionMismatch { .. }
        | ApiError::TooManyConnections { .. }
        | ApiError::NotArrived { .. } => return rest_api_error(py, api, message),
        ApiError::BadAddress { address, reason } => (
            py.get_type::<BadAddress>(),
            "bad_address",
            vec![("address", text(address)), ("reason", text(reason))],
        ),
        ApiError::NoRoute { address, reason } => (
            py.get_type::<NoRoute>(),
            "no_route",
            vec![("address", text(address)), ("reason", text(reason))],
        ),
        ApiError::UnknownQueue { .. }
        | ApiError::QueueElsewhere { .. }
        | ApiError::NotLocal { .. } => return no_such_queue_here(py, api, message),
        ApiError::QueueFull { queue, max_depth } => (
            py.get_type::<QueueFull>(),
            "queue_full",
            vec![
                ("queue", text(queue)),
                ("max_depth", Field::Int(*max_depth)),
            ],
        ),
        ApiError::MessageTooLarge { bytes, limit } => (
            py.get_type::<MessageTooLarge>(),
            "message_too_large",
            vec![("bytes", Field::Int(*bytes)), ("limit", Field::Int(*limit))],
        ),
        ApiError::BatchTooLarge { count, limit } => (
            py.get_type::<BatchTooLarge>(),
            "batch_too_large",
            vec![("count", Field::Int(*count)), ("limit", Field::Int(*limit))],
        ),
        ApiError::UnknownLease { lease } => (
            py.get_type::<UnknownLease>(),
            "unknown_lease",
            vec![("lease", Field::Int(*lease))],
        ),
        ApiError::UnknownSubscription { subscription } => (
            py.get_type::<UnknownSubscription>(),
            "unknown_subscription",
            vec![("subscription", Field::Int(*subscription))],
        ),
        ApiError::QueueNotEmpty { queue, depth } => (
            py.get_type::<QueueNotEmpty>(),
            "queue_not_empty",
            vec![("queue", text(queue)), ("depth", Field::Int(*depth))],
        ),
        ApiError::DiskFull { detail } => (
            py.get_type::<DiskFull>(),
            "disk_full",
            vec![("detail", text(detail))],
        ),
        ApiError::Storage { detail } => (
            py.get_type::<StorageError>(),
            "storage",
            vec![("detail", text(detail))],
        ),
        ApiError::ShuttingDown => (py.get_type::<ShuttingDown>(), "shutting_down", Vec::new()),
        ApiError::BadRequest { reason } => (
            py.get_type::<BadRequest>(),
            "bad_request",
            vec![("reason", text(reason))],
        ),
    };
    raise(py, class, message, kind, fields)
}

/// The handshake's errors, and a put's that waited for arrival.
fn rest_api_error(py: Python<'_>, api: &ApiError, message: String) -> PyErr {
    let (class, kind, fields) = match api {
        ApiError::VersionMismatch { client, server } => (
            py.get_type::<VersionMismatch>(),
            "version_mismatch",
            vec![
                ("client", Field::Int(u64::from(*client))),
                ("server", Field::Int(u64::from(*server))),
            ],
        ),
        ApiError::TooManyConnections { limit } => (
            py.get_type::<TooManyConnections>(),
            "too_many_connections",
            vec![("limit", Field::Int(*limit))],
        ),
        ApiError::NotArrived {
            pending,
            timeout_ms,
        } => (
            py.get_type::<NotArrived>(),
            "not_arrived",
            vec![
                ("pending", Field::Int(*pending)),
                ("timeout_ms", Field::Int(*timeout_ms)),
            ],
        ),
        other => (
            py.get_type::<ManagerError>(),
            "manager",
            vec![("detail", text(&other.to_string()))],
        ),
    };
    raise(py, class, message, kind, fields)
}

/// A client whose `close()` was called.
pub(crate) fn closed() -> PyErr {
    ClientClosed::new_err("the client is closed")
}
