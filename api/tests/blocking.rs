//! The blocking client against an in-process fake manager running on its own runtime.

mod common;

use std::time::Duration;

use common::{Behaviour, DEADLINE, FakeManager};
use hopmq::Message;
use hopmq::blocking::Client;

#[allow(clippy::unwrap_used)] // test scaffolding
fn fake_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn blocking_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = fake_runtime();
    let fake = runtime.block_on(FakeManager::start(dir.path()));

    let client = Client::connect_to(&fake.path).unwrap();
    assert_eq!(client.manager(), "fake");
    let id = client.put("orders", Message::new("hello")).unwrap();
    let message = client
        .get("orders", Duration::from_millis(10))
        .unwrap()
        .unwrap();
    assert_eq!(message.id, id);
    assert_eq!(message.text(), Some("hello"));
    assert!(client.poll("orders").unwrap().is_none());

    let mut consumer = client.consumer("orders", 4);
    client.put("orders", Message::new("next")).unwrap();
    assert_eq!(consumer.next().unwrap().text(), Some("next"));
}

#[test]
fn a_blocking_notify_handler_may_call_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = fake_runtime();
    let fake = runtime.block_on(FakeManager::start_at(
        &dir.path().join("q.sock"),
        Behaviour::default(),
    ));
    let client = Client::connect_to(&fake.path).unwrap();

    let replier = client.clone();
    let handle = client
        .notify("requests", move |request| {
            let reply = format!("re: {}", request.text().unwrap_or_default());
            replier.put("replies", Message::new(reply)).unwrap();
        })
        .unwrap();
    client.put("requests", Message::new("ping")).unwrap();
    let reply = client.get("replies", DEADLINE).unwrap().unwrap();
    assert_eq!(reply.text(), Some("re: ping"));
    handle.cancel().unwrap();

    let mut subscription = client.subscribe("feed").unwrap();
    client.put("feed", Message::new("x")).unwrap();
    let got = subscription.recv_timeout(DEADLINE).unwrap().unwrap();
    assert_eq!(got.text(), Some("x"));
    subscription.cancel().unwrap();
}
