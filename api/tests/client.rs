//! The async client against an in-process fake manager.

mod common;

use std::time::Duration;

use common::{Behaviour, DEADLINE, FakeManager, Seen};
use hopmq::protocol::{Operation, PROTOCOL_VERSION};
use hopmq::{ApiError, Client, ClientError, GetOptions, Message};
use tokio::sync::mpsc;
use tokio::time::timeout;

async fn within<F: Future>(future: F) -> F::Output {
    timeout(DEADLINE, future).await.expect("timed out")
}

#[tokio::test]
async fn the_handshake_names_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    assert_eq!(client.manager(), "fake");
    let version = fake
        .expect(|seen| match seen {
            Seen::Hello(hello) => Some(hello.protocol_version),
            Seen::Request(_) => None,
        })
        .await;
    assert_eq!(version, PROTOCOL_VERSION);
}

#[tokio::test]
async fn a_version_mismatch_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let behaviour = Behaviour {
        protocol_version: 99,
        ..Behaviour::default()
    };
    let fake = FakeManager::start_at(&dir.path().join("q.sock"), behaviour).await;
    let error = Client::connect_to(&fake.path).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Handshake(ApiError::VersionMismatch { client, server: 99 })
                if client == PROTOCOL_VERSION
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!("client speaks {PROTOCOL_VERSION}")),
        "{text}"
    );
    assert!(text.contains("manager speaks 99"), "{text}");
}

#[tokio::test]
async fn a_missing_socket_is_a_connect_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let error = Client::connect_to(&path).await.unwrap_err();
    assert!(matches!(&error, ClientError::Connect { path: p, .. } if *p == path));
    assert!(error.to_string().contains("nobody.sock"));
}

#[tokio::test]
async fn put_get_poll_browse_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();

    client.declare("orders", Some(10)).await.unwrap();
    let id = client
        .put(
            "orders@fake",
            Message::new("one").header("k", "v").correlation_id("c1"),
        )
        .await
        .unwrap();
    let ids = client
        .put_batch(vec![
            ("orders".into(), Message::new("two")),
            ("orders".into(), Message::new("three")),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);

    let browsed = client.browse("orders", 10).await.unwrap();
    let bodies: Vec<_> = browsed.iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(bodies, ["one", "two", "three"]);

    let first = client.poll("orders").await.unwrap().unwrap();
    assert_eq!(first.id, id);
    assert_eq!(first.text(), Some("one"));
    assert_eq!(first.headers["k"], "v");
    assert_eq!(first.correlation_id.as_deref(), Some("c1"));

    let second = client
        .get("orders", Duration::from_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, ids[0]);
    let rest = client
        .get_with(
            "orders",
            GetOptions {
                max: 5,
                ..GetOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, ids[1]);

    assert!(client.poll("orders").await.unwrap().is_none());
    assert!(
        client
            .get("orders", Duration::from_millis(20))
            .await
            .unwrap()
            .is_none()
    );
    let status = client.status().await.unwrap();
    assert_eq!(status.manager, "fake");
    client.delete("orders").await.unwrap();
}

#[tokio::test]
async fn manager_errors_arrive_typed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    client.put("full", Message::new("x")).await.unwrap();
    let error = client.delete("full").await.unwrap_err();
    assert!(matches!(
        error,
        ClientError::Api(ApiError::QueueNotEmpty { depth: 1, .. })
    ));
    // The connection is still usable after an error reply.
    assert!(client.poll("full").await.unwrap().is_some());
}

#[tokio::test]
async fn a_max_out_of_range_is_refused_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let options = GetOptions {
        max: 0,
        ..GetOptions::default()
    };
    let error = client.get_with("q", options).await.unwrap_err();
    assert!(matches!(error, ClientError::InvalidArgument(_)));
}

#[tokio::test]
async fn leased_gets_are_acked_and_nacked() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    client.put("jobs", Message::new("a")).await.unwrap();
    let lease = Duration::from_secs(30);
    let leased = client
        .get_leased("jobs", Duration::ZERO, lease)
        .await
        .unwrap()
        .unwrap();
    let lease_id = leased.lease.expect("a leased get carries its lease");
    client.nack(vec![lease_id]).await.unwrap();
    let again = client
        .get_leased("jobs", Duration::ZERO, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, leased.id);
    client.ack(vec![again.lease.unwrap()]).await.unwrap();
    let error = client.ack(vec![again.lease.unwrap()]).await.unwrap_err();
    assert!(matches!(
        error,
        ClientError::Api(ApiError::UnknownLease { .. })
    ));
    assert!(client.poll("jobs").await.unwrap().is_none());
}

#[tokio::test]
async fn a_waiting_get_does_not_block_other_calls_on_the_same_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();

    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.get("slow", Duration::from_secs(60)).await }
    });
    fake.expect(|seen| matches!(seen, Seen::Request(Operation::Get { .. })).then_some(()))
        .await;

    // Served while the get is still waiting on the same connection.
    within(client.put("other", Message::new("fast")))
        .await
        .unwrap();
    assert!(!waiting.is_finished());
    let got = within(client.poll("other")).await.unwrap().unwrap();
    assert_eq!(got.text(), Some("fast"));

    let id = within(client.put("slow", Message::new("late")))
        .await
        .unwrap();
    let delivered = within(waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(delivered.id, id);
}

#[tokio::test]
async fn many_concurrent_calls_each_get_their_own_reply() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..200 {
        let client = client.clone();
        calls.spawn(async move {
            let queue = format!("q{n}");
            let id = client
                .put(&queue, Message::new(n.to_string()))
                .await
                .unwrap();
            let got = client.poll(&queue).await.unwrap().unwrap();
            assert_eq!(got.id, id);
            assert_eq!(got.text().unwrap(), n.to_string());
        });
    }
    within(async {
        while let Some(done) = calls.join_next().await {
            done.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn notify_calls_the_handler_once_per_event_and_stops_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();

    let (seen, mut handled) = mpsc::unbounded_channel();
    let handle = client
        .notify("events", move |message| {
            let _ = seen.send(message.text().unwrap_or_default().to_string());
        })
        .await
        .unwrap();
    fake.expect(|seen| match seen {
        Seen::Request(Operation::Subscribe { queue }) if queue == "events" => Some(()),
        _ => None,
    })
    .await;

    for body in ["a", "b", "c"] {
        client.put("events", Message::new(body)).await.unwrap();
    }
    for body in ["a", "b", "c"] {
        assert_eq!(within(handled.recv()).await.as_deref(), Some(body));
    }
    // Notifications are copies: the messages stay in the queue.
    assert_eq!(client.browse("events", 10).await.unwrap().len(), 3);

    drop(handle);
    fake.expect(|seen| matches!(seen, Seen::Request(Operation::Unsubscribe { .. })).then_some(()))
        .await;
    // The handler (and its sender) is gone, and it was not called again.
    assert_eq!(within(handled.recv()).await, None);
}

#[tokio::test]
async fn a_cancelled_notify_waits_for_the_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let handle = client.notify("events", |_| {}).await.unwrap();
    within(handle.cancel()).await.unwrap();
    fake.expect(|seen| matches!(seen, Seen::Request(Operation::Unsubscribe { .. })).then_some(()))
        .await;
}

#[tokio::test]
async fn a_subscription_yields_messages_as_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let mut subscription = client.subscribe("feed").await.unwrap();
    client.put("feed", Message::new("1")).await.unwrap();
    client.put("feed", Message::new("2")).await.unwrap();

    let first = within(subscription.next()).await.unwrap();
    assert_eq!(first.text(), Some("1"));
    let second = within(std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut subscription), cx)
    }))
    .await
    .unwrap();
    assert_eq!(second.text(), Some("2"));

    drop(subscription);
    fake.expect(|seen| matches!(seen, Seen::Request(Operation::Unsubscribe { .. })).then_some(()))
        .await;
}

#[tokio::test]
async fn a_consumer_prefetches_and_hands_out_every_message_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = FakeManager::start(dir.path()).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let batch = (0..50)
        .map(|n| ("stream".to_string(), Message::new(n.to_string())))
        .collect();
    client.put_batch(batch).await.unwrap();

    let mut consumer = client.consumer("stream", 8);
    for n in 0..50 {
        let message = within(consumer.next()).await.unwrap();
        assert_eq!(message.text().unwrap(), n.to_string());
    }
    // Gets never ask for more than the prefetch limit.
    let max = fake
        .expect(|seen| match seen {
            Seen::Request(Operation::Get { max, .. }) => Some(*max),
            _ => None,
        })
        .await;
    assert!((1..=8).contains(&max), "{max}");

    // A message put later is picked up by the waiting prefetch.
    client.put("stream", Message::new("late")).await.unwrap();
    assert_eq!(within(consumer.next()).await.unwrap().text(), Some("late"));
}

#[tokio::test]
async fn a_lost_connection_fails_calls_in_flight_and_the_next_call_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmgr.sock");
    let mut first = FakeManager::start_at(&path, Behaviour::default()).await;
    let client = Client::connect_to(&path).await.unwrap();
    let mut subscription = client.subscribe("feed").await.unwrap();

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get("q", Duration::from_secs(60)).await }
    });
    first
        .expect(|seen| matches!(seen, Seen::Request(Operation::Get { .. })).then_some(()))
        .await;
    first.stop().await;

    let error = within(in_flight).await.unwrap().unwrap_err();
    assert!(matches!(error, ClientError::ConnectionLost), "{error:?}");
    // Subscriptions end with their connection.
    assert!(within(subscription.next()).await.is_none());

    let mut second = FakeManager::start_at(&path, Behaviour::default()).await;
    let id = within(client.put("q", Message::new("after restart")))
        .await
        .unwrap();
    second
        .expect(|seen| matches!(seen, Seen::Hello(_)).then_some(()))
        .await;
    assert_eq!(client.poll("q").await.unwrap().unwrap().id, id);
}

#[tokio::test]
async fn a_call_while_the_manager_is_down_fails_and_a_later_one_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmgr.sock");
    let first = FakeManager::start_at(&path, Behaviour::default()).await;
    let client = Client::connect_to(&path).await.unwrap();
    first.stop().await;
    std::fs::remove_file(&path).unwrap();

    // The first call may see the dead connection or fail to reconnect; either way, no panic.
    let error = within(client.poll("q")).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::ConnectionLost | ClientError::Connect { .. }
        ),
        "{error:?}"
    );
    let error = within(client.poll("q")).await.unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");

    let _second = FakeManager::start_at(&path, Behaviour::default()).await;
    assert!(within(client.poll("q")).await.unwrap().is_none());
}

#[tokio::test]
async fn garbage_during_the_handshake_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let behaviour = Behaviour {
        garbage_handshake: true,
        ..Behaviour::default()
    };
    let fake = FakeManager::start_at(&dir.path().join("q.sock"), behaviour).await;
    let error = within(Client::connect_to(&fake.path)).await.unwrap_err();
    assert!(matches!(error, ClientError::Frame(_)), "{error:?}");
}

#[tokio::test]
async fn garbage_after_the_handshake_fails_the_call_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let behaviour = Behaviour {
        garbage_after_welcome: true,
        ..Behaviour::default()
    };
    let fake = FakeManager::start_at(&dir.path().join("q.sock"), behaviour).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let error = within(client.put("q", Message::new("x")))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::ConnectionLost), "{error:?}");
}

#[tokio::test]
async fn a_reply_of_the_wrong_kind_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let behaviour = Behaviour {
        wrong_replies: true,
        ..Behaviour::default()
    };
    let fake = FakeManager::start_at(&dir.path().join("q.sock"), behaviour).await;
    let client = Client::connect_to(&fake.path).await.unwrap();
    let error = client.put("q", Message::new("x")).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::UnexpectedReply {
                operation: "put",
                ..
            }
        ),
        "{error:?}"
    );
    let error = client.status().await.unwrap_err();
    assert!(matches!(error, ClientError::UnexpectedReply { .. }));
}

#[tokio::test]
async fn a_consumer_reports_a_lost_connection_then_resumes_on_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmgr.sock");
    let mut first = FakeManager::start_at(&path, Behaviour::default()).await;
    let client = Client::connect_to(&path).await.unwrap();
    let mut consumer = client.consumer("work", 4);
    let waiting = tokio::spawn(async move {
        let result = consumer.next().await;
        (consumer, result)
    });
    first
        .expect(|seen| matches!(seen, Seen::Request(Operation::Get { .. })).then_some(()))
        .await;
    first.stop().await;
    let (mut consumer, result) = within(waiting).await.unwrap();
    assert!(
        matches!(result, Err(ClientError::ConnectionLost)),
        "{result:?}"
    );

    let _second = FakeManager::start_at(&path, Behaviour::default()).await;
    client.put("work", Message::new("resumed")).await.unwrap();
    assert_eq!(
        within(consumer.next()).await.unwrap().text(),
        Some("resumed")
    );
}
