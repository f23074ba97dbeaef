"""Publish/subscribe from Python against a real manager: durable subscriptions read as queues,
topic subscriptions as streams, filters, retained publications, atomic batches, and the gap a
slow topic subscriber is told of."""

from typing import List, Union

import pytest

import hopmq
from conftest import DEADLINE, Manager


@pytest.fixture
def token(queue: str) -> str:
    """A topic token no other test uses."""
    return queue.replace(".", "-")


def texts(client: hopmq.Client, queue: str) -> List[str]:
    return [message.text for message in client.messages(queue, timeout=0)]


def test_a_durable_subscription_collects_matching_publications_as_a_queue(
    client: hopmq.Client, token: str
) -> None:
    client.create_subscription(token, f"{token}.orders.*", max_depth=100)
    listed = client.list_subscriptions()
    mine = [s for s in listed["durable"] if s["name"] == token]
    assert mine == [{"name": token, "filter": f"{token}.orders.*", "depth": 0, "max_depth": 100}]

    first = client.publish(f"{token}.orders.eu", "one", headers={"k": "v"})
    assert isinstance(first, str) and len(first) == 32
    client.publish(f"{token}.orders.eu.late", "too deep: `*` is one token")
    client.publish(f"{token}.invoices.eu", "another topic")
    client.publish(f"{token}.orders.us", "two")

    message = client.get(token, timeout=DEADLINE)
    assert message is not None
    assert (message.text, message.topic, message.id) == ("one", f"{token}.orders.eu", first)
    assert message.headers["k"] == "v"
    assert texts(client, token) == ["two"]

    client.delete_subscription(token)
    with pytest.raises(hopmq.BadRequest, match="no subscription"):
        client.delete_subscription(token)


def test_a_topic_subscription_streams_what_matches_while_it_lasts(
    manager: Manager, client: hopmq.Client, token: str
) -> None:
    with hopmq.Client(manager.socket) as subscriber:
        with subscriber.subscribe_topic(f"{token}.>") as subscription:
            assert subscription.filter == f"{token}.>"
            assert "TopicSubscription" in repr(subscription)
            assert subscription.recv(timeout=0.1) is None
            client.publish(token, "not below the token: `>` needs one more")
            client.publish(f"{token}.a", "one")
            client.publish(f"{token}.a.b", "two", persistent=False)
            got = [subscription.recv(timeout=DEADLINE), next(iter(subscription))]
            assert all(isinstance(p, hopmq.Message) for p in got)
            assert [(p.text, p.topic) for p in got] == [  # type: ignore[union-attr]
                ("one", f"{token}.a"),
                ("two", f"{token}.a.b"),
            ]
            transient = client.list_subscriptions()["transient"]
            assert any(s["filter"] == f"{token}.>" for s in transient)
        with pytest.raises(hopmq.ConnectionLost):
            subscription.recv(timeout=0)
        assert list(subscription) == []
        subscription.cancel()


def test_a_retained_publication_reaches_a_later_subscription_once(
    client: hopmq.Client, token: str
) -> None:
    client.publish(f"{token}.price", "old", retain=True)
    client.publish(f"{token}.price", "last", retain=True)
    with client.subscribe_topic(f"{token}.*") as subscription:
        retained = subscription.recv(timeout=DEADLINE)
        assert isinstance(retained, hopmq.Message)
        assert retained.text == "last"
        assert retained.headers.get("hopmq.retained") == "true"
        assert subscription.recv(timeout=0.2) is None
    client.create_subscription(token, f"{token}.price")
    assert texts(client, token) == ["last"]
    client.delete_subscription(token)


def test_a_batch_is_published_whole_or_not_at_all(client: hopmq.Client, token: str) -> None:
    client.create_subscription(token, f"{token}.>")
    ids = client.publish_batch(
        [(f"{token}.a", "one"), (f"{token}.b", b"two", {"priority": 4})]
    )
    assert len(ids) == 2 and len(set(ids)) == 2
    with pytest.raises(hopmq.Error):
        client.publish_batch([(f"{token}.a", "three"), ("bad..topic", "four")])
    with pytest.raises(TypeError, match="publish_batch item"):
        client.publish_batch(["not a pair"])
    assert client.publish_batch([]) == []
    assert texts(client, token) == ["one", "two"]
    client.delete_subscription(token)


def test_bad_topics_and_filters_are_refused(client: hopmq.Client, token: str) -> None:
    with pytest.raises(hopmq.Error, match="topic|token"):
        client.publish("a..b", "x")
    with pytest.raises(hopmq.Error, match="filter|token|>"):
        client.subscribe_topic("a.>.b")
    with pytest.raises(hopmq.Error):
        client.create_subscription(token, "")


def test_a_topic_subscriber_that_falls_behind_is_told_what_it_missed(
    manager: Manager, client: hopmq.Client, token: str
) -> None:
    body = b"x" * 1024
    # About 32 MiB with their envelopes: far past what the manager queues for one slow
    # subscriber (8 MiB) and what the client buffers for it (1,024 publications).
    published = 30_000
    with hopmq.Client(manager.socket) as subscriber:
        with subscriber.subscribe_topic(f"{token}.*") as subscription:
            for _ in range(published // 250):
                client.publish_batch([(f"{token}.t", body, {"persistent": False})] * 250)
            received = 0
            missed = 0
            ended = False
            while not ended:
                got: Union[hopmq.Message, hopmq.Missed, None] = subscription.recv(timeout=0.5)
                if got is None:
                    # Drained: a gap is told before the next publication received, so one
                    # more is published for what was lost last to be said.
                    client.publish(f"{token}.t", "the end")
                    got = subscription.recv(timeout=DEADLINE)
                    assert got is not None, "the stream stalled"
                if isinstance(got, hopmq.Missed):
                    assert got.count > 0 and "Missed(count=" in repr(got)
                    missed += got.count
                elif got.body == b"the end":
                    ended = True
                else:
                    received += 1
    assert missed > 0, "the subscriber read nothing for 32 MiB and missed nothing?"
    assert received + missed == published
    assert hopmq.Missed(3) == hopmq.Missed(3)
