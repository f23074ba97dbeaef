"""The client's calls against a real manager: put, get, poll, batches, browse, iteration,
leases, subscriptions, notify, queue management and status."""

import datetime
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest

import hopmq
from conftest import DEADLINE, MAX_DELIVERIES, Manager, qmgr_binary, wait_until


def depth(client: hopmq.Client, queue: str, what: str = "depth") -> int:
    """The queue's depth (messages waiting) from the manager's status, or another count."""
    for status in client.status()["queues"]:
        if status["name"] == queue:
            return int(status[what])
    return 0


def test_a_put_message_comes_back_with_every_field(client: hopmq.Client, queue: str) -> None:
    before_ms = time.time() * 1000
    message_id = client.put(
        queue,
        b"order 42",
        priority=7,
        ttl=60,
        headers={"customer": "c-17", "region": "eu"},
        correlation_id="req-1",
        reply_to="replies@elsewhere",
    )
    assert isinstance(message_id, str) and len(message_id) == 32
    int(message_id, 16)

    message = client.get(queue, timeout=DEADLINE)
    assert isinstance(message, hopmq.Message)
    assert message.body == b"order 42"
    assert bytes(message) == b"order 42"
    assert message.text == "order 42"
    assert message.id == message_id
    assert message.headers == {"customer": "c-17", "region": "eu"}
    assert message.priority == 7
    assert message.correlation_id == "req-1"
    assert message.reply_to == "replies@elsewhere"
    assert message.persistent is True
    assert message.origin == client.manager == "py"
    assert message.delivery_count == 1
    assert message.lease is None
    assert message.expires_at_ms is not None
    assert before_ms + 59_000 <= message.expires_at_ms <= time.time() * 1000 + 61_000
    hops = message.trace
    assert [hop.manager for hop in hops] == ["py"]
    assert isinstance(hops[0], hopmq.Trace) and hops[0].at_ms >= before_ms - 1000
    assert "order 42" in repr(message) and message_id in repr(message)
    assert "Trace(manager='py'" in repr(hops[0])


def test_defaults_of_a_plain_put(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "plain")
    message = client.poll(queue)
    assert message is not None
    assert message.priority == hopmq.PRIORITY_DEFAULT == 4
    assert message.headers == {}
    assert message.correlation_id is None and message.reply_to is None
    assert message.expires_at_ms is None


def test_bodies_of_every_bytes_like_kind(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "héllo ✓")
    client.put(queue, bytearray(b"\x00\x01"))
    client.put(queue, memoryview(b"view"))
    client.put(queue, b"")
    client.put(queue, b"\xff\xfe")
    bodies = [message.body for message in client.get_many(queue, 10, timeout=DEADLINE)]
    assert bodies == ["héllo ✓".encode(), b"\x00\x01", b"view", b"", b"\xff\xfe"]
    client.put(queue, b"\xff\xfe")
    message = client.poll(queue)
    assert message is not None
    with pytest.raises(UnicodeDecodeError):
        message.text


def test_a_get_on_an_empty_queue_waits_its_timeout(client: hopmq.Client, queue: str) -> None:
    start = time.monotonic()
    assert client.get(queue, timeout=0.3) is None
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    assert client.get(queue, timeout=datetime.timedelta(milliseconds=300)) is None
    assert time.monotonic() - start >= 0.3
    # Longer than one request's slice of a wait (0.5 s): still one get to the caller.
    start = time.monotonic()
    assert client.get(queue, timeout=1.2) is None
    assert time.monotonic() - start >= 1.2


def test_a_waiting_get_takes_a_message_put_meanwhile(client: hopmq.Client, queue: str) -> None:
    got: List[Optional[hopmq.Message]] = []
    getter = threading.Thread(target=lambda: got.append(client.get(queue)))
    getter.start()
    client.put(queue, "late")
    getter.join(DEADLINE)
    assert not getter.is_alive()
    assert [message.text for message in got if message] == ["late"]


def test_poll_never_waits(client: hopmq.Client, queue: str) -> None:
    start = time.monotonic()
    assert client.poll(queue) is None
    assert time.monotonic() - start < DEADLINE / 2
    client.put(queue, "here")
    message = client.poll(queue)
    assert message is not None and message.text == "here"


def test_higher_priorities_come_first(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "low", priority=0)
    client.put(queue, "normal")
    client.put(queue, "high", priority=hopmq.PRIORITY_MAX)
    texts = [message.text for message in client.messages(queue, timeout=0)]
    assert texts == ["high", "normal", "low"]


def test_a_non_persistent_put(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "fleeting", persistent=False)
    message = client.get(queue, timeout=DEADLINE)
    assert message is not None and message.persistent is False


def test_put_arrived_returns_once_the_message_is_in_its_queue(
    client: hopmq.Client, queue: str
) -> None:
    # A local queue: the message has arrived once it is durable here.
    message_id = client.put_arrived(queue, b"arrived", 10, priority=6)
    assert depth(client, queue) == 1
    message = client.get(queue, timeout=DEADLINE)
    assert message is not None
    assert message.id == message_id and message.body == b"arrived"
    assert message.priority == 6
    assert issubclass(hopmq.NotArrived, hopmq.ManagerError)


def test_put_batch_puts_all_in_order(client: hopmq.Client, queue: str) -> None:
    ids = client.put_batch(
        [
            (queue, "one"),
            (queue, b"two", {"headers": {"n": "2"}, "priority": 4}),
            (queue, "three", {"correlation_id": "c3", "ttl": None}),
        ]
    )
    assert len(ids) == 3 and len(set(ids)) == 3
    messages = client.get_many(queue, 10, timeout=DEADLINE)
    assert [message.id for message in messages] == ids
    assert [message.text for message in messages] == ["one", "two", "three"]
    assert messages[1].headers == {"n": "2"}
    assert messages[2].correlation_id == "c3"
    assert client.put_batch([]) == []


def test_get_many_takes_up_to_max(client: hopmq.Client, queue: str) -> None:
    for n in range(5):
        client.put(queue, str(n))
    first = client.get_many(queue, 3, timeout=DEADLINE)
    assert [message.text for message in first] == ["0", "1", "2"]
    rest = client.get_many(queue, 3, timeout=0)
    assert [message.text for message in rest] == ["3", "4"]
    assert client.get_many(queue, 3, timeout=0.1) == []


def test_a_correlation_id_selects_messages(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "for a", correlation_id="a")
    client.put(queue, "for b", correlation_id="b")
    message = client.get(queue, timeout=DEADLINE, correlation_id="b")
    assert message is not None and message.text == "for b"
    assert client.poll(queue, correlation_id="b") is None
    message = client.poll(queue)
    assert message is not None and message.text == "for a"


def test_browse_leaves_the_messages(client: hopmq.Client, queue: str) -> None:
    for text in ["x", "y", "z"]:
        client.put(queue, text)
    assert [message.text for message in client.browse(queue)] == ["x", "y", "z"]
    assert [message.text for message in client.browse(queue, max=2)] == ["x", "y"]
    assert depth(client, queue) == 3


def test_iterating_ends_after_a_quiet_timeout(client: hopmq.Client, queue: str) -> None:
    for n in range(3):
        client.put(queue, f"m{n}")
    texts = [message.text for message in client.messages(queue, timeout=0.2)]
    assert texts == ["m0", "m1", "m2"]
    assert depth(client, queue) == 0


def test_iterating_in_batches(client: hopmq.Client, queue: str) -> None:
    for n in range(7):
        client.put(queue, f"m{n}")
    iterator = client.messages(queue, timeout=0.2, batch=3)
    assert iter(iterator) is iterator
    assert [message.text for message in iterator] == [f"m{n}" for n in range(7)]


def test_an_iteration_without_timeout_waits_for_more(client: hopmq.Client, queue: str) -> None:
    seen: List[str] = []

    def consume() -> None:
        for message in client.messages(queue):
            seen.append(message.text)
            if message.text == "stop":
                return

    consumer = threading.Thread(target=consume)
    consumer.start()
    client.put(queue, "first")
    wait_until("the consumer took the first message", lambda: seen == ["first"])
    client.put(queue, "stop")
    consumer.join(DEADLINE)
    assert seen == ["first", "stop"]


def test_a_leased_message_is_gone_once_acked(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "work")
    message = client.get_leased(queue, timeout=DEADLINE, lease=30)
    assert message is not None
    assert isinstance(message.lease, int)
    assert "lease=" in repr(message)
    assert depth(client, queue, "leased") == 1
    assert depth(client, queue) == 0
    message.ack()
    assert depth(client, queue, "leased") == 0
    with pytest.raises(hopmq.UnknownLease) as raised:
        message.ack()
    assert raised.value.lease == message.lease
    assert raised.value.kind == "unknown_lease"


def test_a_nacked_message_is_delivered_again(client: hopmq.Client, queue: str) -> None:
    message_id = client.put(queue, "retry me")
    first = client.get(queue, timeout=DEADLINE, lease=30)
    assert first is not None and first.delivery_count == 1
    first.nack()
    second = client.get_leased(queue, timeout=DEADLINE)
    assert second is not None
    assert second.id == message_id and second.delivery_count == 2
    assert second.lease != first.lease
    client.ack(second)
    assert client.poll(queue) is None


def test_acks_and_nacks_by_lease_id_and_in_bulk(client: hopmq.Client, queue: str) -> None:
    for n in range(4):
        client.put(queue, str(n))
    leased = client.get_many(queue, 4, timeout=DEADLINE, lease=30)
    assert len(leased) == 4
    assert leased[1].lease is not None
    client.nack([leased[0], leased[1].lease])
    client.ack(leased[2:])
    client.ack([])
    again = client.get_many(queue, 4, timeout=DEADLINE, lease=30)
    assert sorted(message.text for message in again) == ["0", "1"]
    assert all(message.delivery_count == 2 for message in again)
    assert again[0].lease is not None
    client.ack(again[0].lease)
    client.ack(again[1])


def test_an_expired_lease_returns_the_message(client: hopmq.Client, queue: str) -> None:
    message_id = client.put(queue, "slow worker")
    leased = client.get_leased(queue, timeout=DEADLINE, lease=0.3)
    assert leased is not None
    again = client.get(queue, timeout=DEADLINE)
    assert again is not None
    assert again.id == message_id and again.delivery_count == 2


def test_a_disconnect_returns_leased_messages(manager: Manager, queue: str) -> None:
    with hopmq.Client(manager.socket) as other:
        message_id = other.put(queue, "held")
        leased = other.get_leased(queue, timeout=DEADLINE, lease=300)
        assert leased is not None
    # The leased message keeps the connection open, to be acked; without it, it closes.
    del leased
    with hopmq.Client(manager.socket) as client:
        again = client.get(queue, timeout=DEADLINE)
        assert again is not None and again.id == message_id and again.delivery_count == 2


def test_too_many_deliveries_dead_letter_a_message(client: hopmq.Client, queue: str) -> None:
    message_id = client.put(queue, "poison")
    for _ in range(MAX_DELIVERIES):
        message = client.get_leased(queue, timeout=DEADLINE)
        assert message is not None
        message.nack()
    assert client.poll(queue) is None
    dead: List[hopmq.Message] = []

    def dead_lettered() -> bool:
        # The move to DLQ becomes visible once its journal write completes, after the nack.
        dead[:] = [m for m in client.browse("DLQ", max=4096) if m.id == message_id]
        return len(dead) == 1

    wait_until("the message is in DLQ", dead_lettered)
    assert "hopmq.dead_letter_reason" in dead[0].headers
    assert dead[0].text == "poison"


def test_iterating_with_leases(client: hopmq.Client, queue: str) -> None:
    for n in range(3):
        client.put(queue, f"task {n}")
    done = []
    for message in client.messages(queue, timeout=0.2, lease=30):
        assert message.lease is not None
        done.append(message.text)
        message.ack()
    assert done == ["task 0", "task 1", "task 2"]
    assert depth(client, queue) == 0


def test_a_subscription_sees_copies_of_new_messages(client: hopmq.Client, queue: str) -> None:
    with client.subscribe(queue) as subscription:
        assert subscription.queue == queue
        assert "Subscription" in repr(subscription)
        assert subscription.recv(timeout=0.1) is None
        client.put(queue, "one")
        client.put(queue, "two")
        first = subscription.recv(timeout=DEADLINE)
        second = next(iter(subscription))
        assert first is not None and first.text == "one"
        assert second.text == "two"
    # Copies: the messages are still in the queue.
    assert [message.text for message in client.messages(queue, timeout=0)] == ["one", "two"]
    with pytest.raises(hopmq.ConnectionLost):
        subscription.recv(timeout=0)
    assert list(subscription) == []
    subscription.cancel()


def test_notify_calls_back_with_each_new_message(client: hopmq.Client, queue: str) -> None:
    seen: List[str] = []
    threads = set()

    def callback(message: hopmq.Message) -> None:
        threads.add(threading.get_ident())
        seen.append(message.text)

    handle = client.notify(queue, callback)
    assert handle.queue == queue and not handle.is_finished()
    for n in range(3):
        client.put(queue, f"n{n}")
    wait_until("three notifications came", lambda: len(seen) == 3)
    assert seen == ["n0", "n1", "n2"]
    assert threading.get_ident() not in threads
    handle.cancel()
    assert handle.is_finished()
    handle.cancel()
    assert depth(client, queue) == 3


def test_a_notify_callback_may_call_the_client(client: hopmq.Client, queue: str) -> None:
    replies = f"{queue}.replies"

    def answer(request: hopmq.Message) -> None:
        client.put(replies, f"re: {request.text}", correlation_id=request.id)

    with client.notify(queue, answer):
        request_id = client.put(queue, "ping")
        reply = client.get(replies, timeout=DEADLINE)
    assert reply is not None
    assert reply.text == "re: ping" and reply.correlation_id == request_id


def test_an_exception_in_a_callback_is_reported_and_the_next_message_still_comes(
    client: hopmq.Client, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: List[Any] = []
    monkeypatch.setattr("sys.unraisablehook", reported.append)
    seen: List[str] = []

    def callback(message: hopmq.Message) -> None:
        if message.text == "bad":
            raise RuntimeError("callback failed")
        seen.append(message.text)

    with client.notify(queue, callback):
        client.put(queue, "bad")
        client.put(queue, "good")
        wait_until("the message after the failing one came", lambda: seen == ["good"])
    assert len(reported) == 1
    assert isinstance(reported[0].exc_value, RuntimeError)


def test_a_callback_cannot_cancel_its_own_handler(client: hopmq.Client, queue: str) -> None:
    errors: List[BaseException] = []
    handles: List[hopmq.NotifyHandle] = []

    def callback(message: hopmq.Message) -> None:
        try:
            handles[0].cancel()
        except hopmq.InvalidArgument as error:
            errors.append(error)

    handles.append(client.notify(queue, callback))
    client.put(queue, "cancel yourself")
    wait_until("the callback ran", lambda: len(errors) == 1)
    assert "cannot cancel its own handler" in str(errors[0])
    assert not handles[0].is_finished()
    handles[0].cancel()
    assert handles[0].is_finished()


def test_notify_needs_a_callable(client: hopmq.Client, queue: str) -> None:
    with pytest.raises(TypeError, match="callable"):
        client.notify(queue, "not a function")  # type: ignore[arg-type]


def test_declare_delete_and_queue_limits(client: hopmq.Client, queue: str) -> None:
    client.declare(queue, max_depth=1)
    client.declare(queue, max_depth=1)
    assert any(q["name"] == queue and q["max_depth"] == 1 for q in client.status()["queues"])
    client.put(queue, "fits")
    with pytest.raises(hopmq.QueueFull) as full:
        client.put(queue, "does not")
    assert full.value.queue == queue and full.value.max_depth == 1
    assert full.value.kind == "queue_full"
    assert isinstance(full.value, hopmq.ManagerError)
    with pytest.raises(hopmq.QueueNotEmpty) as not_empty:
        client.delete(queue)
    assert not_empty.value.depth == 1 and queue in str(not_empty.value)
    assert client.poll(queue) is not None
    client.delete(queue)
    assert all(q["name"] != queue for q in client.status()["queues"])


def test_status_describes_the_manager(client: hopmq.Client, queue: str) -> None:
    client.put(queue, "counted")
    status = client.status()
    assert status["manager"] == "py"
    assert isinstance(status["uptime_secs"], int)
    assert status["messages_put"] >= 1
    [mine] = [q for q in status["queues"] if q["name"] == queue]
    assert mine["depth"] == 1 and mine["leased"] == 0


def test_a_closed_client_refuses_calls(manager: Manager, queue: str) -> None:
    with hopmq.Client(manager.socket) as client:
        assert repr(client) == f"Client(socket='{manager.socket}', manager='py')"
        assert client.socket == manager.socket
    assert "closed" in repr(client)
    with pytest.raises(hopmq.ClientClosed):
        client.put(queue, "late")
    with pytest.raises(hopmq.ClientClosed):
        client.manager
    client.close()


def test_the_socket_comes_from_the_environment(
    manager: Manager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, queue: str
) -> None:
    monkeypatch.setenv("HOPMQ_SOCKET", manager.socket)
    assert hopmq.default_socket_path() == manager.socket
    with hopmq.Client() as client:
        assert client.socket == manager.socket
        client.put(queue, "via the environment")
    monkeypatch.delenv("HOPMQ_SOCKET")
    monkeypatch.chdir(tmp_path)
    assert hopmq.default_socket_path() == "./qmgr-data/qmgr.sock"
    with pytest.raises(hopmq.ConnectError, match=r"\./qmgr-data/qmgr\.sock"):
        hopmq.Client()
    # An empty variable counts as unset, as for the Rust client.
    monkeypatch.setenv("HOPMQ_SOCKET", "")
    assert hopmq.default_socket_path() == "./qmgr-data/qmgr.sock"


def test_a_request_gets_the_reply_of_a_server_and_a_late_one_is_dead_lettered(
    manager: Manager, client: hopmq.Client, queue: str
) -> None:
    def serve() -> None:
        with hopmq.Client(manager.socket) as server:
            request = server.get(queue, timeout=DEADLINE, lease=30)
            assert request is not None
            assert request.reply_to is not None and request.reply_to.startswith("hopmq.reply.")
            server.reply(request, b"re: " + request.body, headers={"served-by": "test"})

    server = threading.Thread(target=serve)
    server.start()
    reply = client.request(queue, "question", timeout=DEADLINE)
    server.join()
    assert reply.body == b"re: question"
    assert reply.headers["served-by"] == "test"
    assert reply.correlation_id is not None
    assert client.get(queue, timeout=0) is None, "the request was acked with its reply"

    with pytest.raises(hopmq.NoReply) as raised:
        client.request(queue, "nobody answers", timeout=0.2)
    assert raised.value.kind == "no_reply"
    request = client.get(queue, timeout=DEADLINE, lease=30)
    assert request is not None
    client.reply(request, "too late")
    not_leased = client.put(queue, "plain")
    assert not_leased
    plain = client.get(queue, timeout=DEADLINE)
    assert plain is not None
    with pytest.raises(hopmq.InvalidArgument):
        client.reply(plain, "x")


def test_reports_tell_reply_to_of_the_arrival_and_delivery_of_a_message(
    client: hopmq.Client, queue: str
) -> None:
    acks = f"{queue}.acks"
    sent = client.put(queue, "watched", reply_to=acks, reports=["arrival", "delivery"])
    arrival = client.get(acks, timeout=DEADLINE)
    assert arrival is not None
    assert (arrival.report, arrival.correlation_id, arrival.body) == ("arrival", sent, b"")
    assert arrival.headers["hopmq.report_queue"] == queue
    assert client.get(acks, timeout=0) is None, "not delivered yet"
    taken = client.get(queue, timeout=DEADLINE)
    assert taken is not None and taken.id == sent
    delivery = client.get(acks, timeout=DEADLINE)
    assert delivery is not None
    assert (delivery.report, delivery.correlation_id) == ("delivery", sent)
    plain = client.put(queue, "unwatched", reply_to=acks)
    assert client.get(queue, timeout=DEADLINE) is not None
    assert client.get(acks, timeout=0) is None, f"{plain} asked for no report"

    with pytest.raises(hopmq.BadRequest, match="needs a reply_to"):
        client.put(queue, "x", reports="exception")
    with pytest.raises(ValueError, match="unknown report `read`"):
        client.put(queue, "x", reply_to=acks, reports="arrival,read")


def test_a_multicast_request_gathers_the_replies_of_a_topics_subscribers(
    manager: Manager, client: hopmq.Client, queue: str
) -> None:
    subscription = queue.replace(".", "-")
    create = [str(qmgr_binary()), "subscription", "create", subscription, f"{subscription}.*"]
    subprocess.run(create + ["--socket", manager.socket], check=True, capture_output=True)

    def serve() -> None:
        with hopmq.Client(manager.socket) as server:
            request = server.get(subscription, timeout=DEADLINE, lease=30)
            assert request is not None
            server.reply(request, b"here: " + request.body)

    server = threading.Thread(target=serve)
    server.start()
    replies = client.request_many(f"{subscription}.ask", "who?", timeout=DEADLINE, max_replies=1)
    server.join()
    assert [reply.body for reply in replies] == [b"here: who?"]
    nobody = client.request_many(f"{subscription}-none.ask", "who?", timeout=0.2)
    assert nobody == []
