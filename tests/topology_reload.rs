//! Live topology reloads of real managers: an edit of the topology file that every manager
//! reads is applied by the running ones without a restart.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use support::network::{Network, Spec};
use support::{SOON, wait_until};

/// alpha – bravo, then charlie joins beyond bravo.
fn specs() -> (Spec, Spec) {
    let before = Spec {
        managers: vec!["alpha", "bravo"],
        links: vec![("alpha", "bravo", 1)],
        queues: vec![("orders", "bravo")],
    };
    let after = Spec {
        managers: vec!["alpha", "bravo", "charlie"],
        links: vec![("alpha", "bravo", 1), ("bravo", "charlie", 1)],
        queues: vec![("orders", "bravo")],
    };
    (before, after)
}

#[test]
fn a_link_added_to_the_file_comes_up_without_a_restart() {
    let (before, after) = specs();
    let mut network = Network::start(&before);
    network.wait_all_links_up(&before);
    let bravo_pid = network.manager("bravo").pid();

    // Written in place, as `write_topology` does; certificates for charlie are issued too.
    network.write_topology(&after);
    let bravo = network.manager("bravo");
    wait_until("bravo to read the edited topology", SOON, || {
        bravo.log().contains("topology file read again")
    });
    network.start_manager("charlie");
    network.wait_link_up("bravo", "charlie");
    network.wait_link_up("charlie", "bravo");
    assert_eq!(
        network.manager("bravo").pid(),
        bravo_pid,
        "bravo was not restarted"
    );
    // The old link was not disturbed by the edit.
    network.wait_link_up("alpha", "bravo");
}
