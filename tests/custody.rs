//! Custody between real managers on loopback: messages a relay took or was sending when it
//! died are sent around it by their origin, without waiting for its return, and arrive once
//! each and in put order.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use support::network::{Network, Spec, assert_in_put_order, kept_for, receive};

fn start(spec: &Spec) -> Network {
    start_with(spec, "2000")
}

fn start_with(spec: &Spec, dead_interval_ms: &str) -> Network {
    let mut network = Network::prepare(spec);
    let topology = network.topology();
    let certs = network.certs();
    for name in spec.managers.clone() {
        network.start_manager_with(
            name,
            &topology,
            &certs,
            &[
                ("QMGR_LINK_DEAD_INTERVAL_MS", dead_interval_ms),
                ("QMGR_CUSTODY_TIMEOUT_MS", "2000"),
            ],
        );
    }
    network.wait_all_links_up(spec);
    network
}

fn texts(messages: &[hopmq::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.text().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn messages_in_flight_to_a_relay_lost_for_good_go_around_it_once() {
    let spec = Spec::diamond();
    let mut network = start(&spec);
    // Sent to bravo and never acknowledged: bravo is stopped, then killed and never restarted.
    let held = network.hold_in_flight(("alpha", "bravo"), ("orders", "delta"), "held");
    network.manager("bravo").kill9();
    let consumer = network.manager("delta").client();
    let got = receive(&consumer, "orders", held.len());
    assert_eq!(texts(&got), held, "all of them, once, in put order");
    for message in &got {
        let path: Vec<&str> = message.trace.iter().map(|t| t.manager.as_str()).collect();
        assert_eq!(path, ["alpha", "charlie", "delta"], "around bravo");
        assert_eq!(
            message.headers.get("hopmq.resent").map(String::as_str),
            Some("1"),
            "marked as sent again"
        );
    }
    let alpha = network.manager("alpha").status();
    assert!(alpha["messages_resent"].as_u64().unwrap() >= held.len() as u64);
    // New messages take the new route too, and nothing more arrives.
    let after: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    let client = network.manager("alpha").client();
    for body in &after {
        client
            .put("orders", hopmq::Message::new(body.as_str()))
            .unwrap();
    }
    assert_eq!(texts(&receive(&consumer, "orders", after.len())), after);
    assert_nothing_more(&consumer, 500);
}

/// Freezes `destination`, puts `bodies` at `origin` for `orders` and waits until `relay` has
/// acknowledged them all: they wait at the relay for the frozen destination, and the origin
/// keeps them for its confirmation.
fn put_acknowledged_by(
    network: &mut Network,
    (origin, relay, destination): (&str, &str, &str),
    bodies: &[String],
) {
    network.freeze_behind(destination, relay);
    let client = network.manager(origin).client();
    for body in bodies {
        client
            .put("orders", hopmq::Message::new(body.as_str()))
            .unwrap();
    }
    let origin = network.manager(origin);
    support::wait_until(&format!("{relay} acknowledges them"), support::SOON, || {
        kept_for(&origin.status(), destination) == bodies.len() as u64
    });
    let link = support::network::link_of(&network.manager(relay).status(), destination);
    assert_eq!(link["in_flight"], 0, "{relay} sent nothing on: {link}");
}

/// Waits until `origin` keeps nothing more for `destination`: all confirmed.
fn wait_confirmed(network: &mut Network, origin: &str, destination: &str) {
    let origin = network.manager(origin);
    support::wait_until(
        &format!("{destination} confirms everything"),
        support::network::DELIVERY_DEADLINE,
        || kept_for(&origin.status(), destination) == 0,
    );
}

/// Fails if anything more is got from `orders` within `wait_ms`.
#[track_caller]
fn assert_nothing_more(consumer: &hopmq::blocking::Client, wait_ms: u64) {
    let more = consumer
        .get("orders", std::time::Duration::from_millis(wait_ms))
        .unwrap();
    assert!(more.is_none(), "delivered a second time: {more:?}");
}

#[test]
fn messages_a_relay_acknowledged_and_took_with_it_are_sent_again_by_their_origin() {
    let spec = Spec::diamond();
    // Long enough for bravo to hold messages for a quiet delta without routing around it.
    let mut network = start_with(&spec, "8000");
    // Unhindered, the destination confirms and the origin lets go.
    let before: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    let client = network.manager("alpha").client();
    for body in &before {
        client
            .put("orders", hopmq::Message::new(body.as_str()))
            .unwrap();
    }
    let consumer = network.manager("delta").client();
    assert_eq!(texts(&receive(&consumer, "orders", before.len())), before);
    let alpha = network.manager("alpha");
    support::wait_until("delta confirms the first five", support::SOON, || {
        let status = alpha.status();
        status["messages_confirmed"] == 5 && kept_for(&status, "delta") == 0
    });
    // Stored by bravo, which then dies with them for good.
    let bodies: Vec<String> = (0..10).map(|i| format!("m-{i}")).collect();
    put_acknowledged_by(&mut network, ("alpha", "bravo", "delta"), &bodies);
    network.manager("bravo").kill9();
    network.manager("delta").thaw();
    let got = receive(&consumer, "orders", bodies.len());
    assert_eq!(texts(&got), bodies, "all of them, once, in put order");
    for message in &got {
        let path: Vec<&str> = message.trace.iter().map(|t| t.manager.as_str()).collect();
        assert_eq!(path, ["alpha", "charlie", "delta"], "around bravo");
        assert_eq!(
            message.headers.get("hopmq.resent").map(String::as_str),
            Some("1")
        );
    }
    wait_confirmed(&mut network, "alpha", "delta");
    let status = network.manager("alpha").status();
    assert_eq!(status["messages_confirmed"], 15, "{status}");
    assert_nothing_more(&consumer, 500);
}

#[test]
fn an_origin_cut_off_while_it_keeps_messages_still_sees_each_arrive_once() {
    let spec = Spec::diamond();
    let mut network = start_with(&spec, "8000");
    let bodies: Vec<String> = (0..10).map(|i| format!("m-{i}")).collect();
    put_acknowledged_by(&mut network, ("alpha", "bravo", "delta"), &bodies);
    // A power cut at the origin: what it kept comes back from its journal, and goes again
    // after the custody timeout unless delta's confirmation comes first.
    network.manager("alpha").kill9();
    network.manager("alpha").restart();
    network.manager("delta").thaw();
    let consumer = network.manager("delta").client();
    assert_eq!(texts(&receive(&consumer, "orders", bodies.len())), bodies);
    wait_confirmed(&mut network, "alpha", "delta");
    assert_nothing_more(&consumer, 2_500);
}

#[test]
fn a_message_an_operator_moves_on_to_another_manager_arrives_there() {
    // Accepted at delta under alpha's stamp, then moved by delta's operator back to alpha: it
    // travels under a stamp of delta's, or delta would drop it as a copy it already has.
    let spec = Spec::line(&["alpha", "delta"], "orders");
    let mut network = start(&spec);
    let bodies: Vec<String> = (0..10).map(|i| format!("m-{i}")).collect();
    let client = network.manager("alpha").client();
    for body in &bodies {
        client
            .put("orders", hopmq::Message::new(body.as_str()))
            .unwrap();
    }
    let delta = network.manager("delta");
    support::wait_until("the ten reach delta", support::SOON, || {
        delta.depth("orders") == Some(10)
    });
    delta
        .cli(&["move", "orders", "returned@alpha"])
        .expect_code(0);
    let alpha = network.manager("alpha").client();
    assert_eq!(texts(&receive(&alpha, "returned", bodies.len())), bodies);
}

#[test]
fn a_put_that_waits_for_arrival_returns_once_the_destination_has_it() {
    let spec = Spec::line(&["alpha", "delta"], "orders");
    let mut network = start(&spec);
    let alpha = network.manager("alpha");
    let run = alpha.cli(&["put", "orders", "first", "--wait", "arrived"]);
    run.expect_code(0);
    assert!(!run.stdout.trim().is_empty(), "prints the id");
    // Arrived means durably in delta's queue already: no waiting here.
    assert_eq!(network.manager("delta").depth("orders"), Some(1));
    // From the client library, and for a local queue (there once durable).
    let client = network.manager("alpha").client();
    let timeout = std::time::Duration::from_secs(30);
    client
        .put_arrived("orders", hopmq::Message::new("second"), timeout)
        .unwrap();
    assert_eq!(network.manager("delta").depth("orders"), Some(2));
    client
        .put_arrived("scratch", hopmq::Message::new("here"), timeout)
        .unwrap();
    // A destination that does not confirm in time: a clear failure, and nothing lost.
    network.manager("delta").freeze();
    let run = network.manager("alpha").cli(&[
        "put",
        "orders",
        "third",
        "--wait",
        "arrived",
        "--timeout",
        "1s",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("not confirmed by their destination within 1000 ms")
            && run.stderr.contains("still on their way"),
        "{}",
        run.stderr
    );
    network.manager("delta").thaw();
    let consumer = network.manager("delta").client();
    assert_eq!(
        texts(&receive(&consumer, "orders", 3)),
        ["first", "second", "third"]
    );
}

/// What becomes of bravo after its `kill -9` in [`a_relay_lost_with_what_it_held`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Afterwards {
    /// Never restarted.
    Gone,
    /// Restarted once everything arrived: it still holds what it took, and sends it on.
    Restarted,
    /// Restarted at once with its data directory deleted (its disk lost).
    Wiped,
}

/// Puts `bodies` at `manager` for `orders`, in batches, in order.
fn put_in_batches(network: &mut Network, manager: &str, bodies: &[String]) {
    put_with(&network.manager(manager).client(), bodies, 100);
}

/// Puts `bodies` for `orders` through `client`, `size` at a time, in order.
fn put_with(client: &hopmq::blocking::Client, bodies: &[String], size: usize) {
    for batch in bodies.chunks(size) {
        let messages = batch
            .iter()
            .map(|body| ("orders".to_owned(), hopmq::Message::new(body.as_str())))
            .collect();
        client.put_batch(messages).unwrap();
    }
}

/// The README's diamond: 2,000 messages put at alpha for delta, all taken by bravo (delta
/// frozen meanwhile), then bravo's `kill -9`, then 2,000 more put at alpha: all 4,000 reach
/// delta once each and in put order, whatever becomes of bravo.
fn a_relay_lost_with_what_it_held(afterwards: Afterwards) {
    let spec = Spec::diamond();
    // Long enough for bravo to hold messages for a quiet delta without routing around it.
    let mut network = start_with(&spec, "8000");
    let first: Vec<String> = (0..2_000).map(|i| format!("m-{i:04}")).collect();
    let second: Vec<String> = (2_000..4_000).map(|i| format!("m-{i:04}")).collect();
    network.freeze_behind("delta", "bravo");
    put_in_batches(&mut network, "alpha", &first);
    let alpha = network.manager("alpha");
    support::wait_until("bravo acknowledges the first 2,000", support::SOON, || {
        kept_for(&alpha.status(), "delta") == first.len() as u64
    });
    if afterwards == Afterwards::Wiped {
        wipe(network.manager("bravo"));
    } else {
        network.manager("bravo").kill9();
    }
    network.manager("delta").thaw();
    // Given to bravo's channel until alpha finds it dead (or taken by the empty bravo).
    put_in_batches(&mut network, "alpha", &second);
    let consumer = network.manager("delta").client();
    let got = texts(&receive(&consumer, "orders", first.len() + second.len()));
    let expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_in_put_order(&got, &expected);
    let status = network.manager("delta").status();
    assert_eq!(status["messages_unordered"], 0, "{status}");
    if afterwards == Afterwards::Restarted {
        network.manager("bravo").restart();
        let delta = network.manager("delta");
        support::wait_until(
            "bravo's stale copies reach delta and are dropped",
            support::network::DELIVERY_DEADLINE,
            || delta.status()["duplicates_dropped"].as_u64() >= Some(first.len() as u64),
        );
    }
    wait_confirmed(&mut network, "alpha", "delta");
    assert_nothing_more(&consumer, 1_000);
}

#[test]
fn four_thousand_messages_round_a_relay_lost_for_good_arrive_once_in_put_order() {
    a_relay_lost_with_what_it_held(Afterwards::Gone);
}

#[test]
fn a_relay_that_returns_with_what_it_held_delivers_nothing_twice() {
    a_relay_lost_with_what_it_held(Afterwards::Restarted);
}

#[test]
fn a_relay_that_returns_with_its_disk_lost_loses_nothing() {
    a_relay_lost_with_what_it_held(Afterwards::Wiped);
}

/// `kill -9`, the data directory removed, and a restart.
fn wipe(manager: &mut support::Manager) {
    manager.kill9();
    std::fs::remove_dir_all(manager.data_dir()).unwrap();
    manager.restart();
}

#[test]
fn twenty_thousand_messages_through_a_relay_killed_and_wiped_arrive_once_in_put_order() {
    // alpha–bravo–charlie–delta costs 3, alpha–echo–delta costs 4.
    let spec = Spec {
        managers: vec!["alpha", "bravo", "charlie", "delta", "echo"],
        links: vec![
            ("alpha", "bravo", 1),
            ("bravo", "charlie", 1),
            ("charlie", "delta", 1),
            ("alpha", "echo", 2),
            ("echo", "delta", 2),
        ],
        queues: vec![("orders", "delta")],
    };
    let mut network = start(&spec);
    let bodies: Vec<String> = (0..20_000).map(|i| format!("m-{i:05}")).collect();
    let socket = network.manager("alpha").socket().to_owned();
    let producer = {
        let bodies = bodies.clone();
        std::thread::spawn(move || {
            let client = hopmq::blocking::Client::connect_to(&socket).unwrap();
            put_with(&client, &bodies, 50);
        })
    };
    let consumer = network.manager("delta").client();
    let mut got = texts(&receive(&consumer, "orders", 2_000));
    // Mid-flow: charlie holds some, has passed some on, and loses all it had.
    wipe(network.manager("charlie"));
    producer.join().unwrap();
    got.extend(texts(&receive(
        &consumer,
        "orders",
        bodies.len() - got.len(),
    )));
    assert_in_put_order(&got, &bodies);
    assert_nothing_more(&consumer, 1_000);
}

/// Publishes `bodies` to `topic` through `client`, 50 at a time, in order.
fn publish_all(client: &hopmq::blocking::Client, topic: &str, bodies: &[String]) {
    for chunk in bodies.chunks(50) {
        let batch = chunk
            .iter()
            .map(|body| (topic.to_owned(), hopmq::Message::new(body.as_str())))
            .collect();
        client.publish_batch(batch).unwrap();
    }
}

/// `subscription` on `manager` holds each of `bodies` once, in any order, and nothing more.
#[track_caller]
fn assert_each_once(
    network: &mut Network,
    (manager, subscription): (&str, &str),
    bodies: &[String],
) {
    let consumer = network.manager(manager).client();
    let mut got = texts(&receive(&consumer, subscription, bodies.len()));
    got.sort();
    assert_eq!(got, bodies, "{subscription} on {manager}: each once");
    let more = consumer
        .get(subscription, std::time::Duration::from_millis(500))
        .unwrap();
    assert!(more.is_none(), "delivered a second time: {more:?}");
}

/// Publications `bravo` acknowledged to their publisher `alpha` (delta, behind it, frozen
/// meanwhile) and then took with it: alpha keeps custody of each for every manager it was
/// for, so delta's subscription still gets each once, and charlie's, on the other branch, is
/// untouched.
fn publications_a_relay_took_with_it(afterwards: Afterwards) {
    let spec = Spec::diamond();
    let mut network = start_with(&spec, "8000");
    let delta = network.manager("delta").client();
    delta
        .create_subscription("eu", "prices.eu.*", None)
        .unwrap();
    let charlie = network.manager("charlie").client();
    charlie
        .create_subscription("all", "prices.>", None)
        .unwrap();
    let alpha = network.manager("alpha").client();
    support::wait_until("alpha knows both subscriptions", support::SOON, || {
        alpha.list_subscriptions().unwrap().interest.len() == 2
    });
    network.freeze_behind("delta", "bravo");
    let bodies: Vec<String> = (0..500).map(|i| format!("p{i:03}")).collect();
    publish_all(&alpha, "prices.eu.btc", &bodies);
    let origin = network.manager("alpha");
    support::wait_until("bravo acknowledges them all", support::SOON, || {
        kept_for(&origin.status(), "delta") == bodies.len() as u64
    });
    match afterwards {
        Afterwards::Wiped => wipe(network.manager("bravo")),
        _ => network.manager("bravo").kill9(),
    }
    network.manager("delta").thaw();
    for place in [("delta", "eu"), ("charlie", "all")] {
        assert_each_once(&mut network, place, &bodies);
    }
    wait_confirmed(&mut network, "alpha", "delta");
    wait_confirmed(&mut network, "alpha", "charlie");
    let status = network.manager("alpha").status();
    assert!(
        status["messages_resent"].as_u64().unwrap() >= bodies.len() as u64,
        "sent again for delta: {status}"
    );
}

#[test]
fn publications_a_relay_took_with_it_for_good_reach_every_subscriber_once() {
    publications_a_relay_took_with_it(Afterwards::Gone);
}

#[test]
fn publications_a_relay_lost_with_its_disk_reach_every_subscriber_once() {
    publications_a_relay_took_with_it(Afterwards::Wiped);
}

#[test]
fn one_share_for_two_subscribers_behind_a_lost_relay_reaches_each_once_across_its_publishers_restart()
 {
    // bravo is the way from alpha to both charlie and delta, echo the longer one: each
    // publication leaves alpha as one share for two managers, kept at alpha for both.
    let spec = Spec {
        managers: vec!["alpha", "bravo", "charlie", "delta", "echo"],
        links: vec![
            ("alpha", "bravo", 1),
            ("bravo", "charlie", 1),
            ("bravo", "delta", 1),
            ("alpha", "echo", 2),
            ("echo", "charlie", 2),
            ("echo", "delta", 2),
        ],
        queues: vec![("orders", "delta")],
    };
    let mut network = start_with(&spec, "8000");
    for (manager, subscription) in [("charlie", "c"), ("delta", "d")] {
        let client = network.manager(manager).client();
        client
            .create_subscription(subscription, "prices.>", None)
            .unwrap();
    }
    let alpha = network.manager("alpha").client();
    support::wait_until("alpha knows both subscriptions", support::SOON, || {
        alpha.list_subscriptions().unwrap().interest.len() == 2
    });
    network.freeze_behind("charlie", "bravo");
    network.freeze_behind("delta", "bravo");
    let bodies: Vec<String> = (0..300).map(|i| format!("p{i:03}")).collect();
    publish_all(&alpha, "prices.x", &bodies);
    let origin = network.manager("alpha");
    support::wait_until("bravo acknowledges them all", support::SOON, || {
        let status = origin.status();
        kept_for(&status, "charlie") == bodies.len() as u64
            && kept_for(&status, "delta") == bodies.len() as u64
    });
    // What alpha keeps comes back from its journal, a record kept for two destinations; bravo
    // loses everything it held.
    network.manager("alpha").kill9();
    network.manager("alpha").restart();
    wipe(network.manager("bravo"));
    network.manager("charlie").thaw();
    network.manager("delta").thaw();
    for place in [("charlie", "c"), ("delta", "d")] {
        assert_each_once(&mut network, place, &bodies);
    }
    wait_confirmed(&mut network, "alpha", "charlie");
    wait_confirmed(&mut network, "alpha", "delta");
    // Every record came back from alpha's journal kept for both managers, and each let it go.
    let status = network.manager("alpha").status();
    assert_eq!(
        status["messages_confirmed"].as_u64(),
        Some(2 * bodies.len() as u64),
        "{status}"
    );
    for destination in ["charlie", "delta"] {
        let resent = status["custody"]
            .as_array()
            .unwrap()
            .iter()
            .find(|kept| kept["destination"] == destination)
            .map_or(0, |kept| kept["resent"].as_u64().unwrap());
        assert!(resent > 0, "copies sent again for {destination}: {status}");
    }
}
