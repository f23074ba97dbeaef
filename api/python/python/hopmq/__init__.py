"""hopmq: put and get messages through the hopmq queue manager on this host.

Applications talk only to their own manager (``qmgr run``), over its Unix socket; the managers
forward messages to each other hop by hop. A minimal sender and receiver::

    import hopmq

    with hopmq.Client() as client:              # $HOPMQ_SOCKET, else ./qmgr-data/qmgr.sock
        client.put("hello", "Hello World!")
        message = client.get("hello", timeout=5)  # a Message, or None after 5 s
        if message is not None:
            print(message.text)

Every call that waits releases the GIL, so other threads run meanwhile, and hears Ctrl-C.
Errors are subclasses of ``hopmq.Error``. The classes are implemented in Rust (the extension
``hopmq._hopmq``) over the ``hopmq`` Rust crate's blocking client.
"""

import atexit

from . import _hopmq
from ._hopmq import (
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    BadAddress,
    BadRequest,
    BatchTooLarge,
    Client,
    ClientClosed,
    ConnectError,
    ConnectionLost,
    DiskFull,
    Error,
    HandshakeError,
    InvalidArgument,
    ManagerError,
    Message,
    MessageIterator,
    MessageTooLarge,
    Missed,
    NoReply,
    NoRoute,
    NotifyHandle,
    ProtocolError,
    QueueFull,
    QueueNotEmpty,
    NotArrived,
    ShuttingDown,
    StorageError,
    Subscription,
    TooManyConnections,
    TopicSubscription,
    Trace,
    UnknownLease,
    UnknownQueue,
    QueueElsewhere,
    NotLocal,
    UnknownSubscription,
    VersionMismatch,
    __version__,
    default_socket_path,
)
from ._types import Body, PutOptions, Report, Reports, Seconds

# A notify callback runs on a thread of the client's, which must not try to enter the
# interpreter while it shuts down: stop every callback still running before that.
atexit.register(_hopmq.stop_notifications)

__all__ = [
    "PRIORITY_DEFAULT",
    "PRIORITY_MAX",
    "BadAddress",
    "BadRequest",
    "BatchTooLarge",
    "Body",
    "Client",
    "ClientClosed",
    "ConnectError",
    "ConnectionLost",
    "DiskFull",
    "Error",
    "HandshakeError",
    "InvalidArgument",
    "ManagerError",
    "Message",
    "MessageIterator",
    "MessageTooLarge",
    "Missed",
    "NoReply",
    "NoRoute",
    "NotifyHandle",
    "ProtocolError",
    "PutOptions",
    "QueueFull",
    "QueueNotEmpty",
    "NotArrived",
    "Report",
    "Reports",
    "Seconds",
    "ShuttingDown",
    "StorageError",
    "Subscription",
    "TooManyConnections",
    "TopicSubscription",
    "Trace",
    "UnknownLease",
    "UnknownQueue",
    "QueueElsewhere",
    "NotLocal",
    "UnknownSubscription",
    "VersionMismatch",
    "__version__",
    "default_socket_path",
]
