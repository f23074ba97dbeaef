//! Power cuts: managers whose data lives on a crashfs, killed with `kill -9` and then the
//! filesystem crashed, so that whatever was written but not synced is gone, as after a power
//! cut. `kill -9` alone leaves the page cache intact and cannot tell a missing `fdatasync`
//! from a present one; these tests can. Where FUSE cannot be used they are skipped, loudly.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use hopmq::Message;
use support::network::{Network, Spec, link_of, receive};
use support::{Manager, SOON, drain, wait_until};

/// A manager started by `builder` whose `kill9` is a power cut, or `None` (the test then
/// returns) after a loud message where crashfs cannot be mounted.
fn on_crashfs(test: &str, builder: support::ManagerBuilder) -> Option<Manager> {
    let manager = builder.start();
    if manager.power_cuts() {
        Some(manager)
    } else {
        eprintln!("SKIPPED {test}: crashfs cannot be mounted here");
        None
    }
}

fn numbered(n: usize) -> Message {
    Message::new(format!("m{n}"))
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("m{n}")).collect()
}

#[test]
fn acknowledged_puts_and_gets_survive_a_power_cut() {
    // The data directory is one the manager creates itself: its own name must be made
    // durable too.
    let builder = Manager::builder().arg("--sync").arg("always");
    let Some(mut manager) = on_crashfs("acknowledged_puts_and_gets_survive_a_power_cut", builder)
    else {
        return;
    };
    let client = manager.client();
    for n in 0..300 {
        client.put("orders", numbered(n)).unwrap();
    }
    let taken = client
        .get_with(
            "orders",
            hopmq::GetOptions {
                max: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(bodies(&taken), expected(0..100));
    drop(client);
    manager.kill9();
    manager.restart();
    let left = drain(&manager.client(), "orders");
    assert_eq!(
        bodies(&left),
        expected(100..300),
        "every acknowledged put survives, and no acknowledged get comes back"
    );
}

#[test]
fn without_syncs_a_power_cut_loses_acknowledged_puts() {
    // The proof that the test above can fail: the same run with `sync = never` loses what it
    // acknowledged, which `kill -9` alone would never show.
    let builder = Manager::builder().arg("--sync").arg("never");
    let Some(mut manager) =
        on_crashfs("without_syncs_a_power_cut_loses_acknowledged_puts", builder)
    else {
        return;
    };
    let client = manager.client();
    for n in 0..300 {
        client.put("orders", numbered(n)).unwrap();
    }
    drop(client);
    manager.kill9();
    manager.restart_with(&["--salvage"]);
    let left = drain(&manager.client(), "orders");
    assert!(
        left.len() < 300,
        "crashfs forgot nothing: all 300 unsynced puts survived"
    );
}

#[test]
fn messages_a_neighbour_acknowledged_survive_its_power_cut() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::start(&spec);
    if !network.manager("bravo").power_cuts() {
        eprintln!("SKIPPED messages_a_neighbour_acknowledged_survive_its_power_cut: no crashfs");
        return;
    }
    network.wait_link_up("alpha", "bravo");
    let client = network.manager("alpha").client();
    for n in 0..500 {
        client.put("orders", numbered(n)).unwrap();
    }
    // Once bravo acknowledged everything, alpha has let go of it: only bravo's disk holds it.
    wait_until("bravo acknowledged all 500", SOON, || {
        let link = link_of(&network.manager("alpha").status(), "bravo");
        link["messages_acked"] == 500 && link["transmission_depth"] == 0
    });
    let bravo = network.manager("bravo");
    bravo.kill9();
    bravo.restart();
    let got = receive(&bravo.client(), "orders", 500);
    assert_eq!(bodies(&got), expected(0..500));
    assert!(drain(&bravo.client(), "orders").is_empty(), "no duplicate");
}
