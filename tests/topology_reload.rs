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
    assert_eq!(
        support::network::link_of(&network.manager("alpha").status(), "bravo")["connects"],
        1,
        "alpha's channel to bravo was not reconnected"
    );
    // Messages cross the new link: alpha learnt its route to charlie from its own file.
    network
        .manager("alpha")
        .cli(&["put", "inbox@charlie", "over the new link"])
        .expect_code(0);
    let run = network
        .manager("charlie")
        .cli(&["get", "inbox", "--timeout", "30s"]);
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "over the new link");
}

/// A manager whose file is changed where its folder watch cannot see it (it reads the file
/// through a symlink, as configuration tools lay files out) applies the edit on SIGHUP.
#[test]
fn sighup_reads_the_file_again() {
    let (before, _) = specs();
    let mut network = Network::prepare(&before);
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real.toml");
    std::fs::write(&real, network.topology_text(&before)).unwrap();
    let link = network.topology().with_file_name("alpha-topology.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let certs = network.certs();
    network.start_manager_with("alpha", &link, &certs, &[]);
    let topology = network.topology();
    network.start_manager_with("bravo", &topology, &certs, &[]);
    network.wait_all_links_up(&before);
    let version = network.manager("alpha").status()["topology"]["version"].clone();

    let mut edited = before.clone();
    edited.links[0].2 = 7;
    std::fs::write(&real, network.topology_text(&edited)).unwrap();
    let pid = network.manager("alpha").pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("alpha applies the edit after SIGHUP", SOON, || {
        network.manager("alpha").status()["topology"]["version"] != version
    });
    let status = network.manager("alpha").status();
    assert_eq!(status["routes"][0]["cost"], 7, "{status}");
    assert_eq!(network.manager("alpha").pid().to_string(), pid);
}
