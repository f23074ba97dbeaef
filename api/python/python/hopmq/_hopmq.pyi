"""Type stubs of the extension module hopmq._hopmq (implemented in Rust, api/python/src)."""

import os
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Optional, Union, final

from hopmq._types import Body, PutOptions, Report, Reports, Seconds

__all__ = [
    "Client",
    "Message",
    "Trace",
    "MessageIterator",
    "Subscription",
    "NotifyHandle",
    "Error",
    "ConnectError",
    "HandshakeError",
    "ConnectionLost",
    "ProtocolError",
    "InvalidArgument",
    "NoReply",
    "ClientClosed",
    "ManagerError",
    "BadAddress",
    "NoRoute",
    "UnknownQueue",
    "QueueElsewhere",
    "NotLocal",
    "QueueFull",
    "MessageTooLarge",
    "BatchTooLarge",
    "UnknownLease",
    "UnknownSubscription",
    "QueueNotEmpty",
    "NotArrived",
    "DiskFull",
    "StorageError",
    "ShuttingDown",
    "BadRequest",
    "VersionMismatch",
    "TooManyConnections",
    "default_socket_path",
    "stop_notifications",
    "PRIORITY_DEFAULT",
    "PRIORITY_MAX",
    "__version__",
]

__version__: str
PRIORITY_DEFAULT: int
"""The priority of a message put without one: 4."""
PRIORITY_MAX: int
"""The highest priority: 9 (0 is the lowest)."""

def default_socket_path() -> str:
    """The socket Client() connects to without an argument: $HOPMQ_SOCKET, else
    ./qmgr-data/qmgr.sock (relative to the current directory)."""

def stop_notifications() -> None:
    """Stops every notify callback still running (registered with atexit by hopmq)."""

_Leases = Union["Message", int, Iterable[Union["Message", int]]]

@final
class Client:
    """A connection to the queue manager on this host.

    Connects at once; raises ConnectError if no manager listens on the socket. One client may
    be shared by threads: their calls are multiplexed on its one connection. Every call that
    talks to the manager releases the GIL. If the connection drops (the manager restarted),
    calls in flight raise ConnectionLost and the next call reconnects.

    Use it as a context manager to close it at the end of a block.
    """

    def __new__(cls, socket: Optional[Union[str, "os.PathLike[str]"]] = None) -> "Client":
        """Connects to the manager listening at `socket`; without one, at $HOPMQ_SOCKET, else
        ./qmgr-data/qmgr.sock."""

    @property
    def socket(self) -> str:
        """The socket this client connects to."""

    @property
    def manager(self) -> str:
        """The name of the manager of the current connection."""

    def put(
        self,
        address: str,
        body: Body,
        *,
        priority: int = 4,
        ttl: Optional[Seconds] = None,
        headers: Optional[Mapping[str, str]] = None,
        correlation_id: Optional[str] = None,
        reply_to: Optional[str] = None,
        persistent: bool = True,
        reports: Optional[Reports] = None,
    ) -> str:
        """Puts one message to `address` (QUEUE, or QUEUE@MANAGER) and returns its id (32 hex
        digits) once the manager has it on disk, or in memory if persistent=False.

        priority: 0 (lowest) to 9 (highest), default 4. ttl: seconds (or a timedelta) until it
        expires, default never. headers: str to str. correlation_id ties a reply to its
        request; reply_to says where replies go. persistent=False skips the disk: faster, but
        lost if the manager stops. reports ("arrival,delivery,exception" or a list of kinds)
        asks the managers to send reply_to a report when the message arrives in its queue,
        is taken from it, or is dead-lettered; each report's correlation_id is this id.
        """

    def put_arrived(
        self,
        address: str,
        body: Body,
        timeout: Optional[Seconds] = None,
        *,
        priority: int = 4,
        ttl: Optional[Seconds] = None,
        headers: Optional[Mapping[str, str]] = None,
        correlation_id: Optional[str] = None,
        reply_to: Optional[str] = None,
        persistent: bool = True,
        reports: Optional[Reports] = None,
    ) -> str:
        """Puts one message like put, but returns its id only once it is durably in its
        destination manager (its queue there, or that manager's DLQ), as confirmed back
        through custody; a message for a local queue has arrived once durable. Past `timeout`
        seconds (None: 30) it raises NotArrived: the message is durable here and still on its way (it
        arrives once; putting it again would make a second message).
        """

    def request(
        self,
        address: str,
        body: Body,
        timeout: Optional[Seconds] = None,
        *,
        priority: int = 4,
        ttl: Optional[Seconds] = None,
        headers: Optional[Mapping[str, str]] = None,
        correlation_id: Optional[str] = None,
        persistent: bool = True,
    ) -> Message:
        """Sends `body` to `address` as a request and returns its reply, waiting up to
        `timeout` seconds (None: 30); raises NoReply if none came (a reply that comes later is
        dead-lettered, never given to anyone). The manager sets the request's reply_to (this
        client's private reply queue) and its correlation id (unless given).
        """

    def request_many(
        self,
        topic: str,
        body: Body,
        timeout: Optional[Seconds] = None,
        max_replies: int = 100,
        *,
        priority: int = 4,
        ttl: Optional[Seconds] = None,
        headers: Optional[Mapping[str, str]] = None,
        correlation_id: Optional[str] = None,
        persistent: bool = True,
    ) -> list[Message]:
        """Publishes `body` to `topic` as one request to every subscriber and returns the
        replies that come within `timeout` seconds (None: 30), at most `max_replies`; returns
        as soon as that many came. Replies that come later are dead-lettered.
        """

    def reply(
        self,
        request: Message,
        body: Body,
        *,
        priority: int = 4,
        ttl: Optional[Seconds] = None,
        headers: Optional[Mapping[str, str]] = None,
        persistent: bool = True,
    ) -> str:
        """Replies to `request`. Leased (get with lease=): `body` goes to its reply_to with
        its correlation id and the request is acked, in one atomic write. Taken otherwise (a
        get, a subscription's publication): a put of `body` to its reply_to with that
        correlation id. Returns the reply's id.
        """

    def put_batch(
        self,
        messages: Iterable[Union[tuple[str, Body], tuple[str, Body, PutOptions]]],
    ) -> list[str]:
        """Puts several messages atomically: all are stored, or none. Each item is
        (address, body) or (address, body, options), options being put's keywords as a dict.
        Returns their ids in order."""

    def get(
        self,
        queue: str,
        timeout: Optional[Seconds] = None,
        *,
        correlation_id: Optional[str] = None,
        lease: Optional[Seconds] = None,
    ) -> Optional["Message"]:
        """Takes one message from local `queue`, waiting up to `timeout` seconds (None: until
        one comes); None if none came.

        correlation_id: only a message with that correlation id. lease: lease the message for
        that many seconds instead of removing it (see get_leased).
        """

    def poll(self, queue: str, *, correlation_id: Optional[str] = None) -> Optional["Message"]:
        """Takes one message from local `queue` if one is there; never waits."""

    def get_leased(
        self,
        queue: str,
        timeout: Optional[Seconds] = None,
        *,
        lease: Optional[Seconds] = None,
        correlation_id: Optional[str] = None,
    ) -> Optional["Message"]:
        """Leases one message from local `queue`, waiting up to `timeout` seconds (None: until
        one comes); None if none came.

        The message stays the queue's until acked (message.ack() or client.ack(message)). If
        it is not acked within `lease` seconds (default 30), or this client disconnects, it
        returns to the queue with delivery_count one higher; after the manager's
        max_deliveries it goes to the dead-letter queue DLQ. message.nack() returns it at once.
        """

    def get_many(
        self,
        queue: str,
        max: int,
        timeout: Optional[Seconds] = None,
        *,
        correlation_id: Optional[str] = None,
        lease: Optional[Seconds] = None,
    ) -> list["Message"]:
        """Takes (or, with `lease`, leases) up to `max` messages (1 to 4096) from local
        `queue`, waiting up to `timeout` seconds for a first one (None: until one comes); an
        empty list if none came."""

    def messages(
        self,
        queue: str,
        timeout: Optional[Seconds] = None,
        *,
        lease: Optional[Seconds] = None,
        correlation_id: Optional[str] = None,
        batch: int = 1,
    ) -> "MessageIterator":
        """Iterates over the messages of local `queue`, taking each one (or leasing it, with
        `lease`: ack each). The iteration ends once no message came for `timeout` seconds;
        with None it never ends.

        batch > 1 fetches up to that many messages per request: faster, but the messages
        fetched leave the queue (destructive gets) before the loop reaches them, and are lost
        if it stops early.
        """

    def ack(self, leases: _Leases) -> None:
        """Settles leased deliveries: they are removed for good. Takes a leased Message, a
        lease id, or an iterable of them."""

    def nack(self, leases: _Leases) -> None:
        """Returns leased deliveries to their queue at once. Takes a leased Message, a lease
        id, or an iterable of them."""

    def browse(self, queue: str, max: int = 100) -> list["Message"]:
        """Copies of up to `max` messages (1 to 4096) of local `queue`, in delivery order;
        none is removed."""

    def subscribe(self, queue: str) -> "Subscription":
        """A copy of each message put into local `queue` from now on (the messages stay in
        the queue). Iterate over it, or call recv(timeout); cancel() it when done (or use it
        as a context manager).

        Keep taking its messages: while 1024 wait unread, the whole connection waits."""

    def notify(self, queue: str, callback: Callable[["Message"], Any]) -> "NotifyHandle":
        """Calls `callback(message)` with a copy of each message put into local `queue` from
        now on (the messages stay in the queue), on a thread of the client's, one message at a
        time. An exception in the callback is reported through sys.unraisablehook and the
        next message still comes. The callback may call the client (to put a reply, say).

        Returns a handle: cancel() it, or use it as a context manager, to stop. The
        notification ends if the connection drops; notify again after reconnecting.
        """

    def publish(
        self,
        topic: str,
        body: Body,
        *,
        retain: bool = False,
        priority: int = 4,
        ttl: Optional[Seconds] = None,
        headers: Optional[Mapping[str, str]] = None,
        correlation_id: Optional[str] = None,
        reply_to: Optional[str] = None,
        persistent: bool = True,
    ) -> str:
        """Publishes one message to `topic` (dot-separated tokens, like "prices.eu.btc"): a
        copy goes to every subscription whose filter matches it, on any manager, and none if
        nobody subscribed. Returns its id once this manager has it on disk (in memory if
        persistent=False). With retain=True it is also kept as the topic's last publication,
        which subscriptions made later receive once."""

    def publish_batch(
        self,
        publications: Iterable[Union[tuple[str, Body], tuple[str, Body, PutOptions]]],
        *,
        retain: bool = False,
    ) -> list[str]:
        """Publishes several messages atomically: all or none. Each item is (topic, body) or
        (topic, body, options), options being publish's keywords as a dict. Returns their ids
        in order."""

    def subscribe_topic(self, filter: str) -> "TopicSubscription":
        """The publications matching `filter` from now on, while this client's connection
        lasts ("*" matches exactly one token, a final ">" one or more). Iterate over it, or
        call recv(timeout); cancel() it when done (or use it as a context manager). A
        subscriber that falls behind never holds publishers up: what it loses comes as a
        Missed in the stream, never silently."""

    def create_subscription(
        self, name: str, filter: str, max_depth: Optional[int] = None
    ) -> None:
        """Creates the durable subscription `name`: a local queue of that name fed with every
        publication matching `filter`, read with get, get_leased or messages like any queue.
        It keeps collecting while nobody reads it, survives restarts, and holds at most
        `max_depth` publications (None: the manager's default; past it they are
        dead-lettered)."""

    def delete_subscription(self, name: str) -> None:
        """Deletes the durable subscription `name` and its queue (UnknownSubscription if
        there is none)."""

    def list_subscriptions(self) -> dict[str, Any]:
        """This manager's subscriptions: durable (a list of dicts with name, filter, depth,
        max_depth), transient (filter, delivered, missed) and interest (the filters every
        other manager advertised, by manager)."""

    def declare(self, queue: str, max_depth: Optional[int] = None) -> None:
        """Creates local `queue` if it does not exist, holding at most `max_depth` messages
        (None: the manager's default)."""

    def delete(self, queue: str) -> None:
        """Deletes local `queue`, which must be empty (else QueueNotEmpty)."""

    def status(self) -> dict[str, Any]:
        """The manager's state: manager, version, uptime_secs, queues (a list of dicts with
        name, depth, leased, bytes, oldest_age_ms, max_depth), message counters, store, links,
        routes and topology."""

    def close(self) -> None:
        """Closes the client: its calls then raise ClientClosed. The connection itself ends
        once nothing made from the client (a leased message, a subscription) holds it."""

    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> Literal[False]: ...

@final
class Message:
    """A message received by get, poll, browse, a subscription or a notify callback. Not
    constructed directly: put takes a body and options."""

    @property
    def body(self) -> bytes:
        """The payload."""

    @property
    def text(self) -> str:
        """The body decoded as UTF-8; raises UnicodeDecodeError if it is not UTF-8."""

    @property
    def headers(self) -> dict[str, str]:
        """Application headers (a new dict on each access)."""

    @property
    def id(self) -> str:
        """The id the manager gave it at put: 32 hexadecimal digits."""

    @property
    def priority(self) -> int:
        """0 (lowest) to 9 (highest)."""

    @property
    def correlation_id(self) -> Optional[str]:
        """Ties a reply to its request."""

    @property
    def reply_to(self) -> Optional[str]:
        """Where replies should go."""

    @property
    def report(self) -> Optional[Report]:
        """The kind of delivery report this message is, or None for any other message."""

    @property
    def topic(self) -> Optional[str]:
        """The topic a publication was published to; None for a queue message."""

    @property
    def persistent(self) -> bool:
        """Whether it was stored on disk."""

    @property
    def expires_at_ms(self) -> Optional[int]:
        """When it expires, in milliseconds since the Unix epoch; None if never."""

    @property
    def origin(self) -> str:
        """The manager where it was first put."""

    @property
    def delivery_count(self) -> int:
        """How many times it has been handed out, this time included."""

    @property
    def trace(self) -> list["Trace"]:
        """The managers it passed through, and when it arrived at each, oldest first."""

    @property
    def lease(self) -> Optional[int]:
        """The lease id of a leased get, to ack or nack; None otherwise."""

    def ack(self) -> None:
        """Settles this leased message: removed for good. InvalidArgument if not leased."""

    def nack(self) -> None:
        """Returns this leased message to its queue at once. InvalidArgument if not leased."""

    def __bytes__(self) -> bytes: ...

@final
class Trace:
    """One hop of a message's journey."""

    @property
    def manager(self) -> str:
        """The manager."""

    @property
    def at_ms(self) -> int:
        """When the message arrived there, in milliseconds since the Unix epoch."""

@final
class MessageIterator(Iterator[Message]):
    """What Client.messages returns: each step takes (or leases) the next message."""

    def __iter__(self) -> "MessageIterator": ...
    def __next__(self) -> Message: ...

@final
class Subscription(Iterator[Message]):
    """Copies of the messages put into one queue, from Client.subscribe. Iterating waits for
    each next message and ends with the subscription."""

    @property
    def queue(self) -> str:
        """The queue subscribed to."""

    def recv(self, timeout: Optional[Seconds] = None) -> Optional[Message]:
        """The next message put into the queue, waiting up to `timeout` seconds (None: until
        one comes); None if none came. Raises ConnectionLost once the subscription has ended
        (cancelled, or its connection dropped)."""

    def cancel(self) -> None:
        """Unsubscribes and waits for the manager to confirm; idempotent."""

    def __iter__(self) -> "Subscription": ...
    def __next__(self) -> Message: ...
    def __enter__(self) -> "Subscription": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> Literal[False]: ...

@final
class Missed:
    """Publications a TopicSubscription lost, at this point of its stream, because its client
    fell behind."""

    def __init__(self, count: int) -> None: ...
    @property
    def count(self) -> int:
        """How many were lost here."""

@final
class TopicSubscription(Iterator[Union[Message, Missed]]):
    """The publications matching a filter, from Client.subscribe_topic. Iterating waits for
    each next publication (a Message, its topic in `topic`) or gap (a Missed) and ends with
    the subscription."""

    @property
    def filter(self) -> str:
        """The filter subscribed with."""

    def recv(self, timeout: Optional[Seconds] = None) -> Optional[Union[Message, Missed]]:
        """The next publication or gap, waiting up to `timeout` seconds (None: until one
        comes); None if none came. Raises ConnectionLost once the subscription has ended
        (cancelled, or its connection dropped)."""

    def cancel(self) -> None:
        """Unsubscribes and waits for the manager to confirm; idempotent."""

    def __iter__(self) -> "TopicSubscription": ...
    def __next__(self) -> Union[Message, Missed]: ...
    def __enter__(self) -> "TopicSubscription": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> Literal[False]: ...

@final
class NotifyHandle:
    """Stops a Client.notify callback: cancel(), or the end of its `with` block."""

    @property
    def queue(self) -> str:
        """The queue watched."""

    def cancel(self) -> None:
        """Stops the callback and waits until the manager has ended the subscription; a
        callback running now finishes first. Must not be called from the callback itself."""

    def is_finished(self) -> bool:
        """Whether the callback has stopped (cancelled, or its connection dropped)."""

    def __enter__(self) -> "NotifyHandle": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> Literal[False]: ...

class Error(Exception):
    """Base class of every error the hopmq client raises.

    Each has `kind` (the Rust error's variant in snake case, e.g. "queue_full") and the
    variant's fields as attributes (queue, max_depth, address, reason, ...)."""

    kind: str

class ConnectError(Error):
    """The manager's socket could not be reached: no manager runs there, or the path is
    wrong."""

    path: str
    errno: Optional[int]

class HandshakeError(Error):
    """The manager did not accept the connection: it refused the handshake or did not answer
    it."""

class VersionMismatch(HandshakeError):
    """The client and the manager share no protocol version."""

    client: int
    server: int

class TooManyConnections(HandshakeError):
    """The manager serves its maximum number of client connections (max_connections)."""

    limit: int

class ConnectionLost(Error):
    """The connection ended while the call was in flight; whether the manager carried it out
    is unknown. The next call reconnects."""

class ProtocolError(Error):
    """The manager sent something the protocol does not allow."""

class InvalidArgument(Error):
    """The call's arguments are invalid; nothing was sent."""

class NoReply(Error):
    """A request's reply did not come within its timeout (a late one is dead-lettered)."""

class ClientClosed(Error):
    """The client was closed (close(), or the end of its `with` block)."""

class ManagerError(Error):
    """The manager refused or failed the operation."""

class BadAddress(ManagerError):
    """The address is not QUEUE or QUEUE@MANAGER with valid names."""

    address: str
    reason: str

class NoRoute(ManagerError):
    """The address names a manager or queue the topology cannot resolve."""

    address: str
    reason: str

class UnknownQueue(ManagerError):
    """The queue does not exist on this manager."""

    queue: str

class QueueElsewhere(ManagerError):
    """The topology homes the queue on another manager: read it there."""

    queue: str
    home: str

class NotLocal(ManagerError):
    """A read named another manager's queue (`QUEUE@MANAGER`): reads are local to a manager."""

    queue: str
    manager: str

class QueueFull(ManagerError):
    """The queue holds its maximum number of messages."""

    queue: str
    max_depth: int

class MessageTooLarge(ManagerError):
    """The message body is over the size limit."""

    bytes: int
    limit: int

class BatchTooLarge(ManagerError):
    """The request holds more messages than one request may."""

    count: int
    limit: int

class UnknownLease(ManagerError):
    """No such lease is held by this connection (settled, expired, or never given)."""

    lease: int

class UnknownSubscription(ManagerError):
    """No such subscription exists on this connection."""

    subscription: int

class QueueNotEmpty(ManagerError):
    """A queue must be empty to be deleted."""

    queue: str
    depth: int

class NotArrived(ManagerError):
    """A put that waited for arrival: stored durably, not yet confirmed by its destination
    in time (it is still on its way)."""

    pending: int
    timeout_ms: int

class DiskFull(ManagerError):
    """The manager's disk (or journal quota) is full; retry once space returns."""

    detail: str

class StorageError(ManagerError):
    """The manager's store failed; nothing was stored."""

    detail: str

class ShuttingDown(ManagerError):
    """The manager is stopping; the operation was not carried out."""

class BadRequest(ManagerError):
    """The request is malformed (an invalid queue name, a zero max...)."""

    reason: str
