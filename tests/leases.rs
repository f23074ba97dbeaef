//! Leased gets through the client library: an unsettled delivery comes back (disconnect, lease
//! expiry, nack), too many deliveries dead-letter it, and an ack removes it for good.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::time::Duration;

use hopmq::{ApiError, ClientError, Message};
use support::{Manager, SOON};

/// Long enough never to end during a test, so only what the test does returns a message.
const LEASE_LONG: Duration = Duration::from_secs(600);

fn lease_of(message: &Message) -> u64 {
    message.lease.expect("a leased get gives a lease")
}

#[test]
fn a_disconnect_returns_the_leased_message() {
    let manager = Manager::start();
    let producer = manager.client();
    producer.put("work", Message::new("job-1")).unwrap();

    let worker = manager.client();
    let leased = worker
        .get_leased("work", SOON, LEASE_LONG)
        .unwrap()
        .expect("the job is there");
    assert_eq!(leased.body, b"job-1");
    assert_eq!(leased.delivery_count, 1);
    assert_eq!(manager.depth("work"), Some(0));
    drop(worker);

    // A blocking get: it is served when the manager has noticed the disconnect.
    let again = producer
        .get("work", SOON)
        .unwrap()
        .expect("the job came back");
    assert_eq!(again.body, b"job-1");
    assert_eq!(again.id, leased.id);
    assert_eq!(again.delivery_count, 2);
}

#[test]
fn an_expired_lease_returns_the_message_and_can_no_longer_be_acked() {
    let manager = Manager::start();
    let client = manager.client();
    client.put("work", Message::new("job-2")).unwrap();
    let leased = client
        .get_leased("work", SOON, Duration::from_millis(300))
        .unwrap()
        .unwrap();

    let other = manager.client();
    let again = other
        .get_leased("work", SOON, LEASE_LONG)
        .unwrap()
        .expect("the job came back when its lease ended");
    assert_eq!(again.id, leased.id);
    assert_eq!(again.delivery_count, 2);

    let late = client.ack(vec![lease_of(&leased)]).unwrap_err();
    assert!(
        matches!(late, ClientError::Api(ApiError::UnknownLease { lease }) if lease == lease_of(&leased)),
        "{late:?}"
    );
    other.ack(vec![lease_of(&again)]).unwrap();
    assert_eq!(manager.depth("work"), Some(0));
}

#[test]
fn a_nack_returns_the_message_at_once() {
    let manager = Manager::start();
    let client = manager.client();
    client.put("work", Message::new("job-3")).unwrap();
    let leased = client
        .get_leased("work", SOON, LEASE_LONG)
        .unwrap()
        .unwrap();
    let status = manager.status();
    let work = status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "work")
        .unwrap();
    assert_eq!(work["depth"], 0);
    assert_eq!(work["leased"], 1);

    client.nack(vec![lease_of(&leased)]).unwrap();
    let again = client.poll("work").unwrap().expect("back after the nack");
    assert_eq!(again.id, leased.id);
    assert_eq!(again.delivery_count, 2);
}

#[test]
fn too_many_deliveries_send_the_message_to_the_dead_letter_queue() {
    let mut manager = Manager::builder().env("QMGR_MAX_DELIVERIES", 2).start();
    let client = manager.client();
    let id = client
        .put("work", Message::new("poison").header("kind", "bad"))
        .unwrap();
    for delivery in 1..=2 {
        let leased = client
            .get_leased("work", SOON, LEASE_LONG)
            .unwrap()
            .expect("the message is in its queue");
        assert_eq!(leased.delivery_count, delivery);
        client.nack(vec![lease_of(&leased)]).unwrap();
    }
    assert!(client.poll("work").unwrap().is_none());
    let dead = client
        .get_leased("DLQ", SOON, LEASE_LONG)
        .unwrap()
        .expect("the message is in the dead-letter queue");
    assert_eq!(dead.id, id);
    assert_eq!(dead.body, b"poison");
    assert_eq!(dead.headers["kind"], "bad");
    let reason = &dead.headers["hopmq.dead_letter_reason"];
    assert!(reason.contains("max_deliveries"), "{reason}");
    client.nack(vec![lease_of(&dead)]).unwrap();

    // Dead-lettered is stored like any message: it survives a crash.
    drop(client);
    manager.kill9();
    manager.restart();
    let client = manager.client();
    let dead = client.poll("DLQ").unwrap().expect("still dead-lettered");
    assert_eq!(dead.id, id);
    assert!(dead.headers.contains_key("hopmq.dead_letter_reason"));
    assert!(client.poll("work").unwrap().is_none());
}

#[test]
fn an_ack_removes_the_message_for_good_and_unacked_ones_survive_a_crash() {
    let mut manager = Manager::start();
    let client = manager.client();
    for body in ["acked", "unacked"] {
        client.put("work", Message::new(body)).unwrap();
    }
    let first = client
        .get_leased("work", SOON, LEASE_LONG)
        .unwrap()
        .unwrap();
    let second = client
        .get_leased("work", SOON, LEASE_LONG)
        .unwrap()
        .unwrap();
    assert_eq!(first.body, b"acked");
    assert_eq!(second.body, b"unacked");
    client.ack(vec![lease_of(&first)]).unwrap();
    // Acking twice: the lease is gone.
    assert!(client.ack(vec![lease_of(&first)]).is_err());

    drop(client);
    manager.kill9();
    manager.restart();
    let client = manager.client();
    let left = support::drain(&client, "work");
    let bodies: Vec<&[u8]> = left.iter().map(|m| m.body.as_slice()).collect();
    assert_eq!(bodies, [b"unacked".as_slice()]);
    assert_eq!(left[0].id, second.id);
}
