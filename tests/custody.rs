//! Custody between real managers on loopback: messages in flight to a relay that dies are sent
//! around it along the new route at once, without waiting for the relay's return.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use support::network::{Network, Spec, receive};

fn start(spec: &Spec) -> Network {
    let mut network = Network::prepare(spec);
    let topology = network.topology();
    let certs = network.certs();
    for name in spec.managers.clone() {
        network.start_manager_with(
            name,
            &topology,
            &certs,
            &[("QMGR_LINK_DEAD_INTERVAL_MS", "2000")],
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
    assert!(
        consumer
            .get("orders", std::time::Duration::from_millis(500))
            .unwrap()
            .is_none()
    );
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
