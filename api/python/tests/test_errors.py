"""Errors: what the manager refuses, what the client refuses before sending, a manager that is
not there or goes away, and the exception classes themselves."""

import errno
import socket
from pathlib import Path
from typing import Callable, List

import pytest

import hopmq
from conftest import DEADLINE, MAX_MESSAGE_BYTES, Manager, wait_until


def test_no_manager_running_is_a_clear_connect_error(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.sock"
    with pytest.raises(hopmq.ConnectError) as raised:
        hopmq.Client(str(missing))
    error = raised.value
    assert isinstance(error, hopmq.Error)
    assert error.kind == "connect"
    assert error.path == str(missing)
    assert error.errno == errno.ENOENT
    message = str(error)
    assert f"cannot connect to the manager at {missing}" in message
    assert "qmgr run" in message and "HOPMQ_SOCKET" in message


def test_a_stale_socket_file_is_a_connect_error(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the file stays, nobody listens
    with pytest.raises(hopmq.ConnectError) as raised:
        hopmq.Client(path)
    assert raised.value.errno == errno.ECONNREFUSED


def test_a_path_like_socket(manager: Manager) -> None:
    with hopmq.Client(Path(manager.socket)) as client:
        assert client.manager == "py"


def test_an_invalid_queue_name_is_a_clear_error(client: hopmq.Client) -> None:
    with pytest.raises(hopmq.BadRequest) as raised:
        client.get("no spaces allowed", timeout=0)
    assert raised.value.kind == "bad_request"
    assert "no spaces allowed" in str(raised.value) or "A-Z" in str(raised.value)
    assert raised.value.reason in str(raised.value)

    with pytest.raises(hopmq.BadAddress) as raised_put:
        client.put("no spaces allowed", "x")
    assert raised_put.value.address == "no spaces allowed"
    assert "bad address `no spaces allowed`" in str(raised_put.value)

    with pytest.raises(hopmq.BadAddress):
        client.put("orders@bad manager", "x")
    with pytest.raises(hopmq.BadAddress, match="reserved"):
        client.put("hopmq.mine", "x")
    with pytest.raises(hopmq.BadRequest):
        client.get("x" * 65, timeout=0)
    with pytest.raises(hopmq.BadRequest, match="belongs to the manager"):
        client.poll("hopmq.held")


def test_an_unknown_queue_without_auto_creation(start_manager: Callable[..., Manager]) -> None:
    manager = start_manager(QMGR_AUTO_CREATE_QUEUES="false")
    with hopmq.Client(manager.socket) as client:
        with pytest.raises(hopmq.UnknownQueue) as raised:
            client.get("nosuch", timeout=0)
        assert raised.value.queue == "nosuch"
        assert str(raised.value) == "no queue `nosuch` on this manager"
        with pytest.raises(hopmq.UnknownQueue):
            client.delete("nosuch")


def test_a_body_over_the_limit(client: hopmq.Client, queue: str) -> None:
    with pytest.raises(hopmq.MessageTooLarge) as raised:
        client.put(queue, b"x" * (MAX_MESSAGE_BYTES + 1))
    assert raised.value.bytes == MAX_MESSAGE_BYTES + 1
    assert raised.value.limit == MAX_MESSAGE_BYTES
    assert "max_message_bytes" in str(raised.value)


def test_put_arguments_are_checked(client: hopmq.Client, queue: str) -> None:
    with pytest.raises(ValueError, match="priority must be 0 to 9, not 10"):
        client.put(queue, "x", priority=10)
    with pytest.raises(ValueError, match="priority must be 0 to 9"):
        client.put(queue, "x", priority=-1)
    with pytest.raises(TypeError, match="priority must be an int, not str"):
        client.put(queue, "x", priority="high")  # type: ignore
    with pytest.raises(TypeError, match="body must be bytes or str"):
        client.put(queue, 42)  # type: ignore
    with pytest.raises(TypeError, match="body must be bytes or str"):
        client.put(queue, None)  # type: ignore
    with pytest.raises(ValueError, match="ttl must be zero or more seconds"):
        client.put(queue, "x", ttl=-5)
    with pytest.raises(TypeError, match="ttl must be a number of seconds"):
        client.put(queue, "x", ttl="1h")  # type: ignore
    with pytest.raises(TypeError, match="header `n` must be a str, not int"):
        client.put(queue, "x", headers={"n": 1})  # type: ignore
    with pytest.raises(TypeError, match="headers must be a mapping"):
        client.put(queue, "x", headers=["a"])  # type: ignore
    with pytest.raises(TypeError, match="correlation_id must be a str"):
        client.put(queue, "x", correlation_id=7)  # type: ignore
    with pytest.raises(TypeError, match="persistent must be a bool"):
        client.put(queue, "x", persistent="yes")  # type: ignore
    with pytest.raises(TypeError, match="unknown put option `priorty`"):
        client.put(queue, "x", priorty=3)  # type: ignore
    with pytest.raises(TypeError, match="each put_batch item"):
        client.put_batch(["just a string"])  # type: ignore
    with pytest.raises(TypeError, match="each put_batch item"):
        client.put_batch([(queue,)])  # type: ignore
    with pytest.raises(TypeError, match="options must be a dict"):
        client.put_batch([(queue, "x", ["priority"])])  # type: ignore
    with pytest.raises(TypeError, match="put_batch takes an iterable"):
        client.put_batch(5)  # type: ignore
    # Nothing of the refused calls reached the queue.
    assert client.poll(queue) is None


def test_get_arguments_are_checked(client: hopmq.Client, queue: str) -> None:
    with pytest.raises(ValueError, match="timeout must be zero or more seconds"):
        client.get(queue, timeout=-1)
    with pytest.raises(ValueError, match="timeout must be zero or more seconds"):
        client.get(queue, timeout=float("nan"))
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        client.get(queue, timeout="soon")  # type: ignore
    with pytest.raises(ValueError, match="too long"):
        client.get(queue, timeout=1e300)
    with pytest.raises(hopmq.InvalidArgument, match="max is 0; it must be 1 to 4096"):
        client.get_many(queue, 0)
    with pytest.raises(hopmq.InvalidArgument, match="max is 5000"):
        client.get_many(queue, 5000)
    with pytest.raises(hopmq.InvalidArgument, match="max is -1"):
        client.browse(queue, max=-1)
    with pytest.raises(hopmq.InvalidArgument):
        client.messages(queue, batch=0)
    with pytest.raises(ValueError, match="lease must be"):
        client.get_leased(queue, lease=-1)


def test_settling_needs_a_lease(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "not leased")
    message = client.get(queue, timeout=DEADLINE)
    assert message is not None and message.lease is None
    with pytest.raises(hopmq.InvalidArgument, match="is not leased"):
        message.ack()
    with pytest.raises(hopmq.InvalidArgument, match="is not leased"):
        client.nack(message)
    with pytest.raises(TypeError, match="expected a leased Message"):
        client.ack("lease")  # type: ignore
    with pytest.raises(TypeError, match="expected a leased Message"):
        client.ack([1.5])  # type: ignore
    with pytest.raises(hopmq.InvalidArgument, match="no lease has the id -3"):
        client.ack(-3)
    with pytest.raises(hopmq.UnknownLease):
        client.ack(123456789)


def test_a_manager_that_stops_and_comes_back(
    start_manager: Callable[..., Manager], queue: str
) -> None:
    manager = start_manager()
    client = hopmq.Client(manager.socket)
    client.put(queue, "before")
    manager.stop()
    with pytest.raises((hopmq.ConnectionLost, hopmq.ConnectError)) as raised:
        client.put(queue, "while down")
    assert isinstance(raised.value, hopmq.Error)
    manager.start()
    # The same client reconnects on its next call; the persistent message survived.
    client.put(queue, "after")
    texts = [message.text for message in client.messages(queue, timeout=0)]
    assert texts == ["before", "after"]
    client.close()


def test_the_exception_classes() -> None:
    assert issubclass(hopmq.Error, Exception)
    for name in [
        "ConnectError",
        "HandshakeError",
        "ConnectionLost",
        "ProtocolError",
        "InvalidArgument",
        "ClientClosed",
        "ManagerError",
    ]:
        assert issubclass(getattr(hopmq, name), hopmq.Error), name
    for name in [
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
    ]:
        assert issubclass(getattr(hopmq, name), hopmq.ManagerError), name
    assert issubclass(hopmq.VersionMismatch, hopmq.HandshakeError)
    assert issubclass(hopmq.TooManyConnections, hopmq.HandshakeError)
    assert hopmq.Error.__module__ == "hopmq"
    assert hopmq.QueueFull.__doc__
    assert set(hopmq.__all__) <= set(dir(hopmq))


def test_too_many_connections_is_a_handshake_error(start_manager: Callable[..., Manager]) -> None:
    manager = start_manager(QMGR_MAX_CONNECTIONS="1")
    first: List[hopmq.Client] = []

    def connect() -> bool:
        # The connection start_manager checked with may not be gone yet.
        try:
            first.append(hopmq.Client(manager.socket))
            return True
        except hopmq.TooManyConnections:
            return False

    wait_until("the manager has room for a connection", connect)
    with first[0]:
        with pytest.raises(hopmq.TooManyConnections) as raised:
            hopmq.Client(manager.socket)
    assert raised.value.limit == 1
    assert "refused the connection" in str(raised.value)
    assert "max_connections" in str(raised.value)
