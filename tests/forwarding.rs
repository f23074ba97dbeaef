//! Forwarding between real managers over QUIC on loopback: a put at one end is got at the
//! other, through relays, exactly once and in order, across `kill -9`s and outages.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use hopmq::Message;
use support::network::{Network, Spec, link_of, receive};
use support::{SOON, wait_until};

#[test]
fn a_put_at_one_end_is_got_at_the_other_with_its_hops_traced() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::start(&spec);
    network
        .manager("alpha")
        .cli(&["put", "orders", "order 42", "-H", "customer=c-17"])
        .expect_code(0);
    let charlie = network.manager("charlie");
    let run = charlie.cli(&["get", "orders", "--json", "--timeout", "30s"]);
    run.expect_code(0);
    let got = run.json_lines();
    assert_eq!(got.len(), 1, "{}", run.stdout);
    assert_eq!(got[0]["body"], "order 42");
    assert_eq!(got[0]["origin"], "alpha");
    assert_eq!(got[0]["headers"]["customer"], "c-17");
    let hops: Vec<&str> = got[0]["trace"]
        .as_array()
        .expect("a trace")
        .iter()
        .map(|hop| hop["manager"].as_str().expect("a manager"))
        .collect();
    assert_eq!(hops, ["alpha", "bravo", "charlie"]);

    // Status shows the links and the routes in force.
    let alpha = network.manager("alpha").status();
    let link = link_of(&alpha, "bravo");
    assert_eq!(link["state"], "up");
    assert_eq!(link["messages_acked"], 1);
    assert_eq!(link["transmission_depth"], 0);
    assert!(link["rtt_us"].as_u64().is_some(), "{link}");
    let route = alpha["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["destination"] == "charlie")
        .cloned()
        .expect("a route to charlie");
    assert_eq!(route["next_hop"], "bravo");
    assert_eq!(route["cost"], 2);
    let text = network.manager("alpha").cli(&["status"]);
    assert!(
        text.stdout.contains("bravo") && text.stdout.contains("up"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_relay_killed_twice_mid_transfer_loses_and_duplicates_nothing() {
    const PRODUCERS: usize = 4;
    const EACH: usize = 5_000;
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::start(&spec);
    network.wait_all_links_up(&spec);
    let socket = network.manager("alpha").socket().to_owned();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let client =
                    hopmq::blocking::Client::connect_to(&socket).expect("a producer connects");
                for n in 0..EACH {
                    client
                        .put("orders@charlie", Message::new(format!("{producer}:{n}")))
                        .expect("a put at alpha succeeds");
                }
            })
        })
        .collect();
    let charlie = network.manager("charlie").client();
    let mut got = receive(&charlie, "orders", 2_000);
    for _ in 0..2 {
        network.manager("bravo").kill9();
        network.manager("bravo").restart();
        got.extend(receive(&charlie, "orders", 2_000));
    }
    for producer in producers {
        producer.join().expect("a producer finished");
    }
    got.extend(receive(&charlie, "orders", PRODUCERS * EACH - got.len()));
    // Nothing more comes: no duplicates are on their way.
    let extra = charlie
        .get("orders", Duration::from_secs(2))
        .expect("a get succeeds");
    assert!(
        extra.is_none(),
        "a duplicate arrived: {:?}",
        extra.map(|m| m.text().map(str::to_owned))
    );

    let mut next: BTreeMap<usize, usize> = BTreeMap::new();
    for message in &got {
        let text = message.text().expect("text bodies");
        let (producer, n) = text.split_once(':').expect("producer:n");
        let (producer, n): (usize, usize) = (producer.parse().unwrap(), n.parse().unwrap());
        let expected = next.entry(producer).or_default();
        assert_eq!(
            n, *expected,
            "producer {producer}: got {n}, expected {expected} (lost, duplicated or reordered)"
        );
        *expected += 1;
    }
    assert_eq!(next.values().sum::<usize>(), PRODUCERS * EACH);
    assert!(next.values().all(|&n| n == EACH));
}

#[test]
fn messages_wait_at_the_relay_while_the_destination_is_down_and_survive_restarts() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::start(&spec);
    network.wait_all_links_up(&spec);
    network.manager("charlie").kill9();
    let input: String = (0..100).map(|n| format!("m{n}\n")).collect();
    network
        .manager("alpha")
        .cli_with_stdin(&["put", "orders"], input.as_bytes())
        .expect_code(0);
    // They cross to bravo and wait there, visible in its status.
    {
        let bravo = network.manager("bravo");
        wait_until("100 messages wait at bravo for charlie", SOON, || {
            link_of(&bravo.status(), "charlie")["transmission_depth"] == 100
        });
        let text = bravo.cli(&["status"]);
        assert!(text.stdout.contains("charlie"), "{}", text.stdout);
    }
    // Alpha and bravo restart meanwhile, one of them without warning.
    network.manager("alpha").kill9();
    network.manager("alpha").restart();
    network.manager("bravo").terminate();
    network.manager("bravo").restart();
    assert_eq!(
        link_of(&network.manager("bravo").status(), "charlie")["transmission_depth"],
        100
    );
    network.manager("charlie").restart();
    let charlie = network.manager("charlie").client();
    let got = receive(&charlie, "orders", 100);
    let bodies: Vec<String> = got.iter().map(|m| m.text().unwrap().to_owned()).collect();
    let expected: Vec<String> = (0..100).map(|n| format!("m{n}")).collect();
    assert_eq!(bodies, expected);
    assert!(
        charlie
            .get("orders", Duration::from_secs(1))
            .unwrap()
            .is_none()
    );
    let bravo = network.manager("bravo");
    wait_until(
        "bravo's transmission queue for charlie empties",
        SOON,
        || link_of(&bravo.status(), "charlie")["transmission_depth"] == 0,
    );
}

#[test]
fn a_message_that_expires_while_its_next_hop_is_down_is_never_delivered() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::start(&spec);
    network.wait_all_links_up(&spec);
    network.manager("bravo").kill9();
    {
        let alpha = network.manager("alpha");
        wait_until("alpha sees its link to bravo down", SOON, || {
            link_of(&alpha.status(), "bravo")["state"] == "down"
        });
        alpha
            .cli(&["put", "orders", "short-lived", "--ttl", "1s"])
            .expect_code(0);
        alpha.cli(&["put", "orders", "lasting"]).expect_code(0);
        wait_until("alpha drops the expired message", SOON, || {
            alpha.status()["messages_expired"] == 1
        });
    }
    network.manager("bravo").restart();
    let bravo = network.manager("bravo").client();
    let got = receive(&bravo, "orders", 1);
    assert_eq!(got[0].text(), Some("lasting"));
    assert!(
        bravo
            .get("orders", Duration::from_secs(1))
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_put_with_no_route_waits_and_is_delivered_once_the_topology_gains_one() {
    // charlie is declared but linked to nobody yet.
    let mut spec = Spec::line(&["alpha", "bravo"], "orders");
    spec.managers.push("charlie");
    spec.queues = vec![("orders", "charlie")];
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    network.start_manager("bravo");
    network
        .manager("alpha")
        .cli(&["put", "orders", "patient"])
        .expect_code(0);
    assert_eq!(network.manager("alpha").depth("hopmq.held"), Some(1));

    spec.links.push(("bravo", "charlie", 1));
    network.write_topology(&spec);
    network.manager("alpha").terminate();
    network.manager("alpha").restart();
    network.manager("bravo").terminate();
    network.manager("bravo").restart();
    network.start_manager("charlie");
    let charlie = network.manager("charlie").client();
    let got = receive(&charlie, "orders", 1);
    assert_eq!(got[0].text(), Some("patient"));
    assert_eq!(network.manager("alpha").depth("hopmq.held"), Some(0));
}

#[test]
fn a_message_for_an_unknown_queue_at_its_home_is_dead_lettered_there() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    let (topology, certs) = (network.topology(), network.certs());
    // bravo does not create queues on first use.
    network.start_manager_with(
        "bravo",
        &topology,
        &certs,
        &[("QMGR_AUTO_CREATE_QUEUES", "false")],
    );
    network
        .manager("alpha")
        .cli(&["put", "nowhere@bravo", "lost?"])
        .expect_code(0);
    let bravo = network.manager("bravo").client();
    let got = receive(&bravo, "DLQ", 1);
    assert_eq!(got[0].text(), Some("lost?"));
    let reason = &got[0].headers["hopmq.dead_letter_reason"];
    assert!(reason.contains("unknown queue `nowhere`"), "{reason}");
}

/// Puts `count` messages `{tag}{n}` at `from` for `orders`.
fn put_numbered(network: &mut Network, from: &str, tag: &str, count: usize) {
    let input: String = (0..count).map(|n| format!("{tag}{n}\n")).collect();
    network
        .manager(from)
        .cli_with_stdin(&["put", "orders"], input.as_bytes())
        .expect_code(0);
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.text().expect("text").to_owned())
        .collect()
}

fn numbered(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{tag}{n}")).collect()
}

/// alpha - bravo after ten messages crossed; then `wiped` loses its data directory to a
/// `kill -9` and restarts; ten more cross, each once. Returns the network for its logs.
fn ten_more_after_wiping(wiped: &str) -> Network {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::start(&spec);
    put_numbered(&mut network, "alpha", "a", 10);
    let got = receive(&network.manager("bravo").client(), "orders", 10);
    assert_eq!(texts(&got), numbered("a", 10));
    // Acknowledged, so alpha holds nothing: a wiped receiver cannot recognise a message it
    // no longer remembers, so anything unacknowledged at the wipe would come again.
    wait_acked(&mut network);

    let manager = network.manager(wiped);
    manager.kill9();
    std::fs::remove_dir_all(manager.data_dir()).expect("the data directory is wiped");
    manager.restart();
    put_numbered(&mut network, "alpha", "b", 10);
    let bravo = network.manager("bravo").client();
    assert_eq!(texts(&receive(&bravo, "orders", 10)), numbered("b", 10));
    assert!(
        bravo
            .get("orders", Duration::from_secs(1))
            .unwrap()
            .is_none()
    );
    network
}

#[test]
fn a_receiver_with_a_wiped_data_directory_needs_no_manual_reset() {
    let mut network = ten_more_after_wiping("bravo");
    let alpha = network.manager("alpha").log();
    assert!(
        alpha.contains("receiver's channel state was rolled back"),
        "{alpha}"
    );
}

#[test]
fn a_sender_with_a_wiped_data_directory_needs_no_manual_reset() {
    let mut network = ten_more_after_wiping("alpha");
    let log = network.manager("bravo").log();
    assert!(log.contains("sender's channel state is new"), "{log}");
}

#[test]
fn a_receiver_restored_from_a_backup_resynchronises_without_duplicates() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::start(&spec);
    put_numbered(&mut network, "alpha", "a", 10);
    receive(&network.manager("bravo").client(), "orders", 10);
    wait_acked(&mut network);
    // A cold backup of bravo, then more traffic it will not remember.
    let backup = network.manager("bravo").scratch().join("backup");
    {
        let bravo = network.manager("bravo");
        bravo.terminate();
        copy_dir(bravo.data_dir(), &backup);
        bravo.restart();
    }
    put_numbered(&mut network, "alpha", "b", 20);
    receive(&network.manager("bravo").client(), "orders", 20);
    // (Restoring a backup loses what came after it; what alpha still held would come again.)
    wait_acked(&mut network);
    {
        let bravo = network.manager("bravo");
        bravo.terminate();
        std::fs::remove_dir_all(bravo.data_dir()).unwrap();
        copy_dir(&backup, bravo.data_dir());
        bravo.restart();
    }
    put_numbered(&mut network, "alpha", "c", 10);
    let client = network.manager("bravo").client();
    assert_eq!(texts(&receive(&client, "orders", 10)), numbered("c", 10));
    assert!(
        client
            .get("orders", Duration::from_secs(1))
            .unwrap()
            .is_none()
    );
    let alpha = network.manager("alpha").log();
    assert!(
        alpha.contains("receiver's channel state was rolled back"),
        "{alpha}"
    );
}

/// Waits until alpha holds nothing for bravo: every message it sent was acknowledged.
fn wait_acked(network: &mut Network) {
    let alpha = network.manager("alpha");
    wait_until("alpha has every ack from bravo", SOON, || {
        link_of(&alpha.status(), "bravo")["transmission_depth"] == 0
    });
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_message_past_the_hop_limit_is_dead_lettered_where_it_is_found() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::prepare(&spec);
    network.start_manager("alpha");
    network.start_manager("bravo");
    let (topology, certs) = (network.topology(), network.certs());
    // At charlie the message has taken 2 hops; charlie allows 1.
    network.start_manager_with("charlie", &topology, &certs, &[("QMGR_MAX_HOPS", "1")]);
    network
        .manager("alpha")
        .cli(&["put", "orders", "far"])
        .expect_code(0);
    let charlie = network.manager("charlie").client();
    let got = receive(&charlie, "DLQ", 1);
    assert_eq!(got[0].text(), Some("far"));
    let reason = &got[0].headers["hopmq.dead_letter_reason"];
    assert!(reason.contains("hop limit of 1 exceeded"), "{reason}");
    assert!(charlie.poll("orders").unwrap().is_none());
}

#[test]
fn metrics_show_each_link() {
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::prepare(&spec);
    let port = support::free_tcp_port();
    let (topology, certs) = (network.topology(), network.certs());
    let listen = format!("127.0.0.1:{port}");
    network.start_manager_with(
        "alpha",
        &topology,
        &certs,
        &[("QMGR_METRICS_LISTEN", listen.as_str())],
    );
    network.start_manager("bravo");
    network
        .manager("alpha")
        .cli(&["put", "orders", "m"])
        .expect_code(0);
    receive(&network.manager("bravo").client(), "orders", 1);
    let mut text = String::new();
    wait_until("the link's counters reach the metrics", SOON, || {
        text = support::scrape(port).unwrap_or_default();
        text.contains(r#"hopmq_link_messages_acked_total{manager="alpha",neighbour="bravo"} 1"#)
    });
    for expected in [
        r#"hopmq_link_up{manager="alpha",neighbour="bravo"} 1"#,
        r#"hopmq_link_routable{manager="alpha",neighbour="bravo"} 1"#,
        r#"hopmq_link_transmission_depth{manager="alpha",neighbour="bravo"} 0"#,
        r#"hopmq_messages_forwarded_total{manager="alpha"} 1"#,
        "hopmq_link_rtt_seconds{",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
}
