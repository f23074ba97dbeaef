//! Dynamic routing between real managers on loopback: a dead relay is routed around (and used
//! again when it returns), a failure a manager cannot see reaches it by flooding, edits of the
//! topology file reroute traffic without a restart, invalid edits are refused, and a plan
//! shows an edit's effect before it is made. Every message arrives exactly once, and no
//! dead-letter queue is touched.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hopmq::Message;
use support::network::{DELIVERY_DEADLINE, Network, Spec, link_of, receive};
use support::{SOON, wait_until};

/// The dead interval the tests run with: short, so failover is quick, and still four
/// heartbeats long.
const DEAD_INTERVAL_MS: &str = "2000";

fn start(spec: &Spec, env: &[(&str, &str)]) -> Network {
    let mut network = Network::prepare(spec);
    let topology = network.topology();
    let certs = network.certs();
    for name in spec.managers.clone() {
        network.start_manager_with(name, &topology, &certs, env);
    }
    network.wait_all_links_up(spec);
    network
}

/// Puts `count` messages `{prefix}-{i}` at `manager` for `address`, in one command.
fn put(network: &mut Network, manager: &str, address: &str, prefix: &str, count: usize) {
    let lines: String = (0..count).map(|i| format!("{prefix}-{i}\n")).collect();
    network
        .manager(manager)
        .cli_with_stdin(&["put", address], lines.as_bytes())
        .expect_code(0);
}

/// The relay a message went through between alpha and delta.
fn relay(message: &Message) -> String {
    let hops: Vec<&str> = message.trace.iter().map(|t| t.manager.as_str()).collect();
    assert_eq!(hops.len(), 3, "alpha, a relay, delta: {hops:?}");
    hops[1].to_owned()
}

fn body(message: &Message) -> String {
    String::from_utf8(message.body.clone()).unwrap()
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages.iter().map(body).collect()
}

/// Waits until nothing is on its way anywhere, then checks that delta's `orders` holds
/// nothing more: no duplicate is still coming.
#[track_caller]
fn assert_no_late_duplicate(network: &mut Network, consumer: &hopmq::blocking::Client) {
    network.wait_drained();
    let extra = consumer.poll("orders").unwrap();
    assert!(extra.is_none(), "a duplicate arrived: {extra:?}");
}

/// `manager`'s next hop to `destination`, from `qmgr routes --json`.
fn next_hop(network: &mut Network, manager: &str, destination: &str) -> Option<String> {
    let run = network.manager(manager).cli(&["routes", "--json"]);
    run.expect_code(0);
    let routes: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["destination"] == destination)
        .and_then(|r| r["next_hop"].as_str().map(str::to_owned))
}

#[track_caller]
fn wait_next_hop(network: &mut Network, manager: &str, destination: &str, hop: &str) {
    wait_until(
        &format!("{manager} routes {destination} via {hop}"),
        SOON,
        || next_hop(network, manager, destination).as_deref() == Some(hop),
    );
}

/// No dead-letter queue of the network holds anything: the hop limit was never the backstop.
#[track_caller]
fn assert_no_dead_letters(network: &mut Network, names: &[&str]) {
    for name in names {
        let manager = network.manager(name);
        if manager.is_running() {
            assert_eq!(manager.depth("DLQ").unwrap_or(0), 0, "DLQ at {name}");
        }
    }
}

#[track_caller]
fn assert_exactly_once(got: &[String], expected: impl IntoIterator<Item = String>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for body in got {
        *counts.entry(body).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    let expected: Vec<String> = expected.into_iter().collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !counts.contains_key(e.as_str()))
        .collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert_eq!(got.len(), expected.len());
}

/// Takes messages from delta's `orders` into `got` until every one of `wanted` is there.
#[track_caller]
fn receive_all(consumer: &hopmq::blocking::Client, got: &mut Vec<Message>, wanted: &[String]) {
    let mut last_progress = Instant::now();
    loop {
        let have: BTreeSet<String> = bodies(got).into_iter().collect();
        let missing = wanted.iter().filter(|b| !have.contains(*b)).count();
        if missing == 0 {
            return;
        }
        assert!(
            last_progress.elapsed() < DELIVERY_DEADLINE,
            "{missing} of {} messages never arrived",
            wanted.len()
        );
        let batch = consumer
            .get_with(
                "orders",
                hopmq::GetOptions {
                    max: 256,
                    timeout: Duration::from_millis(500),
                    ..Default::default()
                },
            )
            .expect("a get succeeds");
        if !batch.is_empty() {
            last_progress = Instant::now();
        }
        got.extend(batch);
    }
}

/// Puts `{prefix}-{i}` at alpha for `orders`, one message a put, until bravo is killed: once
/// alpha's status shows messages in flight to bravo. Returns the bodies put.
fn kill_bravo_under_traffic(network: &mut Network, prefix: &str) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let socket = network.manager("alpha").socket().to_owned();
        let (stop, prefix) = (Arc::clone(&stop), prefix.to_owned());
        std::thread::spawn(move || {
            let client = hopmq::blocking::Client::connect_to(&socket).expect("connects");
            let mut put = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let body = format!("{prefix}-{}", put.len());
                client
                    .put("orders", Message::new(body.as_str()))
                    .expect("a put");
                put.push(body);
            }
            put
        })
    };
    let alpha = network.manager("alpha");
    wait_until("messages in flight from alpha to bravo", SOON, || {
        link_of(&alpha.status(), "bravo")["in_flight"]
            .as_u64()
            .is_some_and(|n| n > 0)
    });
    network.manager("bravo").kill9();
    stop.store(true, Ordering::SeqCst);
    producer.join().expect("the producer finished")
}

/// While bravo is dead: messages put once alpha has stopped counting on it wait for it, and go
/// via charlie once it is declared dead. Returns their bodies.
fn fail_over(
    network: &mut Network,
    consumer: &hopmq::blocking::Client,
    got: &mut Vec<Message>,
    prefix: &str,
) -> Vec<String> {
    // Once alpha has not heard bravo for a while it gives bravo's channel nothing new, so
    // these wait at alpha for bravo until bravo is declared dead, then go via charlie.
    wait_until("alpha notices bravo's silence", SOON, || {
        link_of(&network.manager("alpha").status(), "bravo")["heard_ms_ago"]
            .as_u64()
            .is_some_and(|ms| ms >= 800)
    });
    let killed = Instant::now();
    put(network, "alpha", "orders", prefix, 100);
    let during: Vec<String> = (0..100).map(|i| format!("{prefix}-{i}")).collect();
    receive_all(consumer, got, &during);
    eprintln!(
        "failover: all 100 waiting messages delivered via charlie {:?} after",
        killed.elapsed()
    );
    let during_set: BTreeSet<&String> = during.iter().collect();
    let via: BTreeSet<String> = got
        .iter()
        .filter(|m| during_set.contains(&body(m)))
        .map(relay)
        .collect();
    assert_eq!(
        via,
        BTreeSet::from(["charlie".to_owned()]),
        "every one via charlie"
    );
    wait_next_hop(network, "alpha", "delta", "charlie");
    // delta may have declared bravo dead first, and flooded it: alpha's own verdict follows
    // within its dead interval.
    wait_until("alpha declares bravo dead", SOON, || {
        link_of(&network.manager("alpha").status(), "bravo")["routing"] == "down"
    });
    during
}

/// Kills bravo under traffic, fails over, restarts bravo and uses it again; all that was put
/// arrives in `got`. Returns the bodies put and how many of the traffic at the kill were
/// stranded with bravo: delivered through it after its restart.
fn outage(
    network: &mut Network,
    consumer: &hopmq::blocking::Client,
    got: &mut Vec<Message>,
    attempt: usize,
) -> (Vec<String>, usize) {
    let flowing = kill_bravo_under_traffic(network, &format!("flowing{attempt}"));
    let mut put_bodies = fail_over(network, consumer, got, &format!("during{attempt}"));
    let restarted_ms = support::wall_ms();
    network.manager("bravo").restart();
    wait_next_hop(network, "alpha", "delta", "bravo");
    let prefix = format!("after{attempt}");
    put(network, "alpha", "orders", &prefix, 50);
    let after: Vec<String> = (0..50).map(|i| format!("{prefix}-{i}")).collect();
    receive_all(consumer, got, &after);
    receive_all(consumer, got, &flowing);
    let of = |wanted: &[String]| -> Vec<&Message> {
        let wanted: BTreeSet<&String> = wanted.iter().collect();
        got.iter().filter(|m| wanted.contains(&body(m))).collect()
    };
    assert!(of(&after).into_iter().all(|m| relay(m) == "bravo"));
    // Not `relay`: bravo may restart with its link to alpha up before the one to delta, and
    // send what it held back through alpha and charlie (a passing loop of link-state routing;
    // each still arrives once).
    let stranded = of(&flowing)
        .into_iter()
        .filter(|m| m.trace.get(1).is_some_and(|hop| hop.manager == "bravo"))
        .filter(|m| m.trace.last().is_some_and(|hop| hop.at_ms >= restarted_ms))
        .count();
    eprintln!(
        "{stranded} of {} messages put as bravo died waited for it",
        flowing.len()
    );
    put_bodies.extend(flowing);
    put_bodies.extend(after);
    (put_bodies, stranded)
}

#[test]
fn a_killed_relay_is_routed_around_and_used_again_when_it_returns() {
    let spec = Spec::diamond();
    let mut network = start(&spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", DEAD_INTERVAL_MS)]);
    let consumer = network.manager("delta").client();
    put(&mut network, "alpha", "orders", "before", 50);
    let mut got = receive(&consumer, "orders", 50);
    assert!(got.iter().all(|m| relay(m) == "bravo"));
    let mut expected: Vec<String> = (0..50).map(|i| format!("before-{i}")).collect();
    // The kill must catch messages on their way through bravo: those alpha had not handed
    // over are sent around it at once, those bravo had taken wait for its return.
    for attempt in 0..3 {
        let (put_bodies, stranded) = outage(&mut network, &consumer, &mut got, attempt);
        expected.extend(put_bodies);
        let resent = network.manager("alpha").status()["messages_resent"]
            .as_u64()
            .unwrap();
        if stranded as u64 + resent > 0 {
            break;
        }
        assert!(
            attempt < 2,
            "three kills of bravo and none caught a message on its way"
        );
    }
    assert_exactly_once(&bodies(&got), expected);
    assert_no_late_duplicate(&mut network, &consumer);
    assert_no_dead_letters(&mut network, &spec.managers);
}

#[test]
fn a_drain_alpha_cannot_see_reaches_it_by_flooding() {
    let spec = Spec::diamond();
    let mut network = start(&spec, &[]);
    let consumer = network.manager("delta").client();
    wait_next_hop(&mut network, "alpha", "delta", "bravo");

    network
        .manager("bravo")
        .cli(&["link", "down", "delta"])
        .expect_code(0);
    // alpha's own links are all up: only bravo's advertisement tells it.
    wait_next_hop(&mut network, "alpha", "delta", "charlie");
    let status = network.manager("alpha").status();
    let link = network_link(&status, "bravo", "delta");
    assert_eq!(link["state"], "down", "{link}");
    assert_eq!(link["reported_by"], serde_json::json!(["bravo"]));
    let dot = network.manager("alpha").cli(&["topology", "dot", "--live"]);
    dot.expect_code(0);
    assert!(
        dot.stdout
            .lines()
            .any(|l| l.contains("\"bravo\" -- \"delta\"") && l.contains("dashed")),
        "{}",
        dot.stdout
    );
    let routes = network.manager("bravo").cli(&["routes"]);
    routes.expect_code(0);
    assert!(
        routes
            .stdout
            .lines()
            .any(|l| l.starts_with("bravo-delta") && l.contains("drained")),
        "{}",
        routes.stdout
    );

    put(&mut network, "alpha", "orders", "drained", 30);
    let drained = receive(&consumer, "orders", 30);
    assert!(drained.iter().all(|m| relay(m) == "charlie"));

    // A drain survives a restart of the manager that made it.
    network.manager("bravo").terminate();
    network.manager("bravo").restart();
    wait_until(
        "bravo's drain still advertised after its restart",
        SOON,
        || {
            let status = network.manager("bravo").status();
            link_of(&status, "delta")["routing"] == "drained"
        },
    );

    network
        .manager("bravo")
        .cli(&["link", "up", "delta"])
        .expect_code(0);
    wait_next_hop(&mut network, "alpha", "delta", "bravo");
    put(&mut network, "alpha", "orders", "restored", 30);
    let restored = receive(&consumer, "orders", 30);
    assert!(restored.iter().all(|m| relay(m) == "bravo"));

    let mut got = bodies(&drained);
    got.extend(bodies(&restored));
    let expected = (0..30)
        .map(|i| format!("drained-{i}"))
        .chain((0..30).map(|i| format!("restored-{i}")));
    assert_exactly_once(&got, expected);
    assert_no_dead_letters(&mut network, &spec.managers);

    // Draining a link that does not exist is an error.
    let run = network.manager("alpha").cli(&["link", "down", "delta"]);
    run.expect_code(1);
    assert!(run.stderr.contains("no link"), "{}", run.stderr);
}

/// The network's view of the link between `a` and `b` (in name order) in a parsed status.
#[track_caller]
fn network_link(status: &serde_json::Value, a: &str, b: &str) -> serde_json::Value {
    status["network"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["between"] == serde_json::json!([a, b]))
        .cloned()
        .unwrap_or_else(|| panic!("no link {a}-{b} in {status}"))
}

/// The managers each of `messages` went through.
fn paths(messages: &[Message]) -> BTreeSet<Vec<String>> {
    messages
        .iter()
        .map(|m| m.trace.iter().map(|t| t.manager.clone()).collect())
        .collect()
}

#[track_caller]
fn assert_path(messages: &[Message], path: &[&str]) {
    let expected: Vec<String> = path.iter().map(|&m| m.to_owned()).collect();
    assert_eq!(paths(messages), BTreeSet::from([expected]));
}

#[test]
fn a_relay_failure_alpha_cannot_see_reaches_it_by_flooding() {
    // alpha–bravo–charlie–delta costs 3, alpha–delta 5: traffic for delta goes via bravo and
    // charlie, and charlie is not alpha's neighbour.
    let spec = Spec {
        managers: vec!["alpha", "bravo", "charlie", "delta"],
        links: vec![
            ("alpha", "bravo", 1),
            ("bravo", "charlie", 1),
            ("charlie", "delta", 1),
            ("alpha", "delta", 5),
        ],
        queues: vec![("orders", "delta")],
    };
    let mut network = start(&spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", DEAD_INTERVAL_MS)]);
    let consumer = network.manager("delta").client();
    wait_next_hop(&mut network, "alpha", "delta", "bravo");

    network.manager("charlie").kill9();
    // alpha's own links stay up: only bravo's and delta's advertisements tell it.
    wait_next_hop(&mut network, "alpha", "delta", "delta");
    let status = network.manager("alpha").status();
    for neighbour in ["bravo", "delta"] {
        assert_eq!(link_of(&status, neighbour)["routing"], "up", "{status}");
    }
    let link = network_link(&status, "bravo", "charlie");
    assert_eq!(link["state"], "down", "{link}");
    assert_eq!(link["reported_by"], serde_json::json!(["bravo"]), "{link}");
    put(&mut network, "alpha", "orders", "around", 30);
    let around = receive(&consumer, "orders", 30);
    assert_path(&around, &["alpha", "delta"]);

    // charlie returns, and the way through it is taken again.
    network.manager("charlie").restart();
    wait_next_hop(&mut network, "alpha", "delta", "bravo");
    put(&mut network, "alpha", "orders", "back", 30);
    let back = receive(&consumer, "orders", 30);
    assert_path(&back, &["alpha", "bravo", "charlie", "delta"]);

    let mut got = bodies(&around);
    got.extend(bodies(&back));
    let expected = (0..30)
        .map(|i| format!("around-{i}"))
        .chain((0..30).map(|i| format!("back-{i}")));
    assert_exactly_once(&got, expected);
    assert_no_late_duplicate(&mut network, &consumer);
    assert_no_dead_letters(&mut network, &spec.managers);
}

#[test]
fn draining_a_link_moves_the_messages_already_waiting_for_it() {
    let spec = Spec::diamond();
    // A long dead interval: only the drain may move them, not the link-state machinery.
    let mut network = start(&spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", "600000")]);
    let consumer = network.manager("delta").client();
    // bravo stops: alpha still routes via bravo, and its messages wait for it.
    network.manager("bravo").terminate();
    wait_until("alpha's channel to bravo is down", SOON, || {
        link_of(&network.manager("alpha").status(), "bravo")["state"] == "down"
    });
    put(&mut network, "alpha", "orders", "waiting", 40);
    let status = network.manager("alpha").status();
    let link = link_of(&status, "bravo");
    assert_eq!(
        (
            link["transmission_depth"].as_u64(),
            link["in_flight"].as_u64()
        ),
        (Some(40), Some(0)),
        "{link}"
    );
    let rerouted = status["messages_rerouted"].as_u64().unwrap();

    network
        .manager("alpha")
        .cli(&["link", "down", "bravo"])
        .expect_code(0);
    let got = receive(&consumer, "orders", 40);
    assert!(got.iter().all(|m| relay(m) == "charlie"));
    assert_eq!(
        bodies(&got),
        (0..40).map(|i| format!("waiting-{i}")).collect::<Vec<_>>(),
        "in put order"
    );
    let status = network.manager("alpha").status();
    assert_eq!(status["messages_rerouted"].as_u64().unwrap() - rerouted, 40);
    assert_eq!(link_of(&status, "bravo")["transmission_depth"], 0);
    assert_no_late_duplicate(&mut network, &consumer);
    assert_no_dead_letters(&mut network, &["alpha", "charlie", "delta"]);
}

#[test]
fn editing_the_file_reroutes_new_and_waiting_messages_without_a_restart() {
    let mut spec = Spec::diamond();
    // A long dead interval: only the edit may reroute here, not the link-state machinery.
    let mut network = start(&spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", "600000")]);
    let consumer = network.manager("delta").client();

    // bravo stops: alpha's messages for delta wait in its transmission queue for bravo.
    network.manager("bravo").terminate();
    put(&mut network, "alpha", "orders", "waiting", 40);
    wait_until("40 messages wait at alpha for bravo", SOON, || {
        link_of(&network.manager("alpha").status(), "bravo")["transmission_depth"] == 40
    });

    // Raising bravo's cost moves them, and new ones, via charlie.
    spec.links[0].2 = 10;
    network.write_topology(&spec);
    let waiting = receive(&consumer, "orders", 40);
    assert!(waiting.iter().all(|m| relay(m) == "charlie"));
    put(&mut network, "alpha", "orders", "new", 10);
    let new = receive(&consumer, "orders", 10);
    assert!(new.iter().all(|m| relay(m) == "charlie"));
    let mut got = bodies(&waiting);
    got.extend(bodies(&new));
    assert_exactly_once(
        &got,
        (0..40)
            .map(|i| format!("waiting-{i}"))
            .chain((0..10).map(|i| format!("new-{i}"))),
    );
    let version = network.manager("alpha").status()["topology"]["version"].clone();

    // Moving the queue's home sends new messages to charlie; those at delta stay there.
    network.manager("bravo").restart();
    put(&mut network, "alpha", "orders", "kept", 5);
    wait_until("5 messages reach delta", SOON, || {
        network.manager("delta").depth("orders") == Some(5)
    });
    spec.queues = vec![("orders", "charlie")];
    network.write_topology(&spec);
    for name in ["alpha", "bravo", "charlie", "delta"] {
        wait_until(&format!("{name} applies the new home"), SOON, || {
            network.manager(name).status()["topology"]["version"] != version
        });
    }
    put(&mut network, "alpha", "orders", "moved", 10);
    let at_charlie = receive(&network.manager("charlie").client(), "orders", 10);
    assert_eq!(
        bodies(&at_charlie),
        (0..10).map(|i| format!("moved-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(network.manager("delta").depth("orders"), Some(5));
    assert_no_dead_letters(&mut network, &spec.managers);
}

#[test]
fn an_invalid_edit_is_refused_and_the_topology_in_force_stays() {
    let mut spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = start(&spec, &[]);
    let consumer = network.manager("bravo").client();
    let version = network.manager("alpha").status()["topology"]["version"].clone();

    // A link to a manager nobody declared.
    let text = network.topology_text(&spec) + "[[links]]\nbetween = [\"alpha\", \"zulu\"]\n";
    std::fs::write(network.topology(), &text).unwrap();
    wait_until("alpha refuses the edit", SOON, || {
        !network.manager("alpha").status()["topology"]["refused"].is_null()
    });
    let status = network.manager("alpha").status();
    let error = status["topology"]["refused"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("zulu"), "{error}");
    // `file:line:column: error: ...`, at the line that names zulu.
    let line = text.lines().position(|l| l.contains("zulu")).unwrap() + 1;
    let at = format!("{}:{line}:", network.topology().display());
    assert!(
        error.contains(&at),
        "names the file and line ({at}): {error}"
    );
    assert_eq!(
        status["topology"]["version"], version,
        "the old one is in force"
    );
    assert!(network.manager("alpha").log().contains("refused"));
    // `qmgr reload` says so too, with exit code 1.
    let run = network.manager("alpha").cli(&["reload"]);
    run.expect_code(1);
    assert!(run.stderr.contains("zulu"), "{}", run.stderr);

    // Traffic goes on under the old topology.
    put(&mut network, "alpha", "orders", "meanwhile", 10);
    assert_eq!(receive(&consumer, "orders", 10).len(), 10);

    // A later valid edit is applied, and clears the refusal.
    spec.links[0].2 = 3;
    network.write_topology(&spec);
    wait_until("alpha applies the valid edit", SOON, || {
        let status = network.manager("alpha").status();
        status["topology"]["version"] != version && status["topology"]["refused"].is_null()
    });
    let run = network.manager("alpha").cli(&["reload"]);
    run.expect_code(0);
    assert!(run.stdout.contains("no changes"), "{}", run.stdout);
    let routes = network.manager("alpha").cli(&["routes", "--json"]);
    let routes: serde_json::Value = serde_json::from_str(&routes.stdout).unwrap();
    assert_eq!(routes["routes"][0]["cost"], 3);
}

#[test]
fn a_plan_shows_what_an_edit_would_change_and_applies_nothing() {
    let spec = Spec {
        managers: vec!["alpha", "bravo", "charlie"],
        links: vec![("alpha", "bravo", 1), ("bravo", "charlie", 1)],
        queues: vec![("orders", "charlie")],
    };
    let mut network = start(&spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", "600000")]);
    network.manager("bravo").terminate();
    put(&mut network, "alpha", "orders", "waiting", 7);
    wait_until("7 messages wait at alpha for bravo", SOON, || {
        link_of(&network.manager("alpha").status(), "bravo")["transmission_depth"] == 7
    });

    // A direct alpha–charlie link: charlie's route changes and the waiting messages move.
    let mut direct = spec.clone();
    direct.links.push(("alpha", "charlie", 1));
    let planned = network.topology().with_file_name("planned.toml");
    std::fs::write(&planned, network.topology_text(&direct)).unwrap();
    let run = network
        .manager("alpha")
        .cli(&["topology", "plan", planned.to_str().unwrap()]);
    run.expect_code(0);
    let out = &run.stdout;
    assert!(out.contains("+ link alpha-charlie"), "{out}");
    assert!(
        out.contains("charlie: via bravo (cost 2) -> via charlie (cost 1)"),
        "{out}"
    );
    assert!(
        out.contains("7 hopmq.xmit.bravo -> hopmq.xmit.charlie"),
        "{out}"
    );

    // Without bravo–charlie, orders' home is out of reach.
    let mut cut = spec.clone();
    cut.links.pop();
    std::fs::write(&planned, network.topology_text(&cut)).unwrap();
    let run = network
        .manager("alpha")
        .cli(&["topology", "plan", planned.to_str().unwrap()]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("orders (home charlie): no route from `alpha` to `charlie`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("7 hopmq.xmit.bravo -> hopmq.held"),
        "{}",
        run.stdout
    );

    // Nothing was applied.
    assert_eq!(
        next_hop(&mut network, "alpha", "charlie").as_deref(),
        Some("bravo")
    );
    assert_eq!(
        link_of(&network.manager("alpha").status(), "bravo")["transmission_depth"],
        7
    );
    // A plan of a broken file is refused with its line.
    std::fs::write(&planned, "[managers.alpha\n").unwrap();
    let run = network
        .manager("alpha")
        .cli(&["topology", "plan", planned.to_str().unwrap()]);
    run.expect_code(1);
    assert!(run.stderr.contains("planned.toml"), "{}", run.stderr);
}

/// `qmgr reload` at a manager reading `file`, just rewritten: its outcome, or, if the watch of
/// the file applied the edit first (the reload then changes nothing), what the manager logged
/// as it applied it.
fn reload_outcome(manager: &mut support::Manager) -> String {
    let run = manager.cli(&["reload"]);
    run.expect_code(0);
    if run.stdout.contains("no changes") {
        eprintln!("the watch applied the edit before `qmgr reload`; its log says:");
        return manager.log();
    }
    run.stdout
}

#[test]
fn messages_in_flight_on_a_link_an_edit_removes_go_around_it_and_its_copies_are_dropped() {
    // alpha–bravo–charlie costs 2, alpha–charlie 5. alpha reads a copy of the file of its
    // own: only alpha takes the edits.
    let spec = Spec {
        managers: vec!["alpha", "bravo", "charlie"],
        links: vec![
            ("alpha", "bravo", 1),
            ("bravo", "charlie", 1),
            ("alpha", "charlie", 5),
        ],
        queues: vec![("orders", "charlie")],
    };
    let mut network = Network::prepare(&spec);
    let alpha_file = network.topology().with_file_name("alpha.toml");
    std::fs::write(&alpha_file, network.topology_text(&spec)).unwrap();
    let (topology, certs) = (network.topology(), network.certs());
    network.start_manager_with("alpha", &alpha_file, &certs, &[]);
    for name in ["bravo", "charlie"] {
        network.start_manager_with(name, &topology, &certs, &[]);
    }
    network.wait_all_links_up(&spec);
    wait_next_hop(&mut network, "alpha", "charlie", "bravo");
    // Ten in flight from alpha to a frozen bravo.
    let in_flight = network.hold_in_flight(("alpha", "bravo"), ("orders", "charlie"), "s");

    let mut cut = spec.clone();
    cut.links.remove(0);
    let cut_text = network.topology_text(&cut);
    let planned = network.topology().with_file_name("planned.toml");
    std::fs::write(&planned, &cut_text).unwrap();
    let alpha = network.manager("alpha");
    let plan = alpha.cli(&["topology", "plan", planned.to_str().unwrap()]);
    plan.expect_code(0);
    let expected = "10 messages in flight to bravo would be sent again along the new routes";
    assert!(plan.stdout.contains(expected), "{}", plan.stdout);
    std::fs::write(&alpha_file, &cut_text).unwrap();
    let outcome = reload_outcome(alpha);
    assert!(
        outcome.contains("10 messages in flight to bravo sent again along the new routes")
            || outcome.contains("neighbour=bravo in_flight=10"),
        "{outcome}"
    );
    // The ten go the other way at once, marked as sent again, and so do new messages.
    let consumer = network.manager("charlie").client();
    let around = receive(&consumer, "orders", 10);
    assert_eq!(bodies(&around), in_flight);
    assert_path(&around, &["alpha", "charlie"]);
    assert!(
        around
            .iter()
            .all(|m| m.headers.contains_key("hopmq.resent"))
    );
    put(&mut network, "alpha", "orders", "direct", 5);
    assert_path(&receive(&consumer, "orders", 5), &["alpha", "charlie"]);
    // alpha's channel to bravo still holds the originals.
    assert_eq!(
        link_of(&network.manager("alpha").status(), "bravo")["in_flight"],
        10
    );

    // The link returns (and bravo thaws): bravo passes the originals on, and charlie drops
    // every one of them as a second copy.
    std::fs::write(&alpha_file, network.topology_text(&spec)).unwrap();
    network.manager("bravo").thaw();
    wait_until("charlie drops the ten copies bravo brings", SOON, || {
        network.manager("charlie").status()["duplicates_dropped"] == 10
    });
    network.wait_drained();
    assert!(
        consumer.poll("orders").unwrap().is_none(),
        "a duplicate arrived"
    );
}

/// The messages waiting at the manager of `status` for `neighbour`.
fn waiting_for(status: &hopmq::protocol::Status, neighbour: &str) -> u64 {
    status
        .links
        .iter()
        .find(|l| l.neighbour == neighbour)
        .map_or(0, |l| l.transmission_depth)
}

/// Sets the cost of alpha–bravo (the first link of the diamond) and waits until alpha runs
/// with it.
fn set_alpha_bravo_cost(network: &mut Network, spec: &mut Spec, cost: u32) {
    let version = network.manager("alpha").status()["topology"]["version"].clone();
    spec.links[0].2 = cost;
    network.write_topology(spec);
    wait_until("alpha applies the new cost", SOON, || {
        network.manager("alpha").status()["topology"]["version"] != version
    });
}

/// With `count` messages waiting at alpha for a stopped bravo, an edit makes alpha–bravo
/// costly, and alpha is killed while it moves them to charlie's transmission queue, a pass of
/// 1,024 at a time: as soon as it runs with the edit and messages still wait for bravo.
/// Returns whether the kill came in time, as the restarted alpha shows: it moved what was
/// left.
fn kill_alpha_as_it_reroutes(network: &mut Network, spec: &mut Spec, count: u64) -> bool {
    let client = network.manager("alpha").client();
    let before = client.status().unwrap();
    assert_eq!(waiting_for(&before, "bravo"), count);
    // Each pass of the re-routing waits on a sync: a disk's, not memory's (the window).
    network
        .manager("alpha")
        .slow_syncs(Duration::from_millis(2));
    spec.links[0].2 = 10;
    network.write_topology(spec);
    // Polled without backing off: the re-routing may take well under a second.
    let start = Instant::now();
    let waiting = loop {
        let status = client.status().unwrap();
        if status.topology.version != before.topology.version {
            break waiting_for(&status, "bravo");
        }
        assert!(start.elapsed() < SOON, "alpha never applied the edit");
        std::thread::sleep(Duration::from_millis(1));
    };
    if waiting == 0 {
        network.manager("alpha").slow_syncs(Duration::ZERO);
        eprintln!("alpha moved all {count} before it could be killed");
        return false;
    }
    // A re-routing is in progress: alpha runs with the edit, messages still wait for bravo.
    let alpha = network.manager("alpha");
    alpha.kill9();
    alpha.slow_syncs(Duration::ZERO);
    alpha.restart();
    wait_until("the restarted alpha moves what was left", SOON, || {
        link_of(&alpha.status(), "bravo")["transmission_depth"] == 0
    });
    let moved = alpha.status()["messages_rerouted"].as_u64().unwrap();
    eprintln!("killed with {waiting} of {count} waiting; the restarted alpha moved {moved}");
    moved > 0
}

#[test]
fn a_manager_killed_as_it_reroutes_loses_and_duplicates_nothing() {
    const COUNT: usize = 20_000;
    let mut spec = Spec::diamond();
    let mut network = start(&spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", "600000")]);
    network.manager("bravo").terminate();
    let mut expected = Vec::new();
    for attempt in 0..3 {
        if attempt > 0 {
            // The last try moved everything before the kill: bravo cheap again, and again.
            set_alpha_bravo_cost(&mut network, &mut spec, 1);
        }
        let prefix = format!("moving{attempt}");
        put(&mut network, "alpha", "orders", &prefix, COUNT);
        expected.extend((0..COUNT).map(|i| format!("{prefix}-{i}")));
        if kill_alpha_as_it_reroutes(&mut network, &mut spec, COUNT as u64) {
            break;
        }
        assert!(
            attempt < 2,
            "three edits and alpha was never killed while re-routing"
        );
    }
    let consumer = network.manager("delta").client();
    let got = bodies(&receive(&consumer, "orders", expected.len()));
    assert_exactly_once(&got, expected);
    assert_no_late_duplicate(&mut network, &consumer);
    assert_no_dead_letters(&mut network, &["alpha", "charlie", "delta"]);
}

#[test]
fn a_neighbour_that_reaches_us_but_that_we_cannot_reach_attracts_no_traffic() {
    let spec = Spec::diamond();
    let mut network = Network::prepare(&spec);
    // alpha's copy of the file has bravo at a port nobody listens on: bravo dials alpha
    // fine, alpha never reaches bravo.
    let wrong = network.topology_text(&spec).replace(
        &format!("127.0.0.1:{}", network.port("bravo")),
        &format!("127.0.0.1:{}", support::network::free_udp_port()),
    );
    let alpha_file = network.topology().with_file_name("alpha.toml");
    std::fs::write(&alpha_file, wrong).unwrap();
    let (topology, certs) = (network.topology(), network.certs());
    let env = [("QMGR_LINK_DEAD_INTERVAL_MS", DEAD_INTERVAL_MS)];
    network.start_manager_with("alpha", &alpha_file, &certs, &env);
    for name in ["bravo", "charlie", "delta"] {
        network.start_manager_with(name, &topology, &certs, &env);
    }
    wait_until("bravo's channel to alpha up", SOON, || {
        link_of(&network.manager("bravo").status(), "alpha")["state"] == "up"
    });
    wait_next_hop(&mut network, "alpha", "delta", "charlie");
    let status = network.manager("alpha").status();
    assert_eq!(link_of(&status, "bravo")["routing"], "down", "{status}");
    assert_eq!(link_of(&status, "bravo")["inbound"], true, "{status}");

    put(&mut network, "alpha", "orders", "one-way", 20);
    let got = receive(&network.manager("delta").client(), "orders", 20);
    assert!(got.iter().all(|m| relay(m) == "charlie"));
    // bravo learns from alpha's advertisement not to send through alpha either.
    wait_until("bravo routes charlie around alpha", SOON, || {
        next_hop(&mut network, "bravo", "charlie").as_deref() == Some("delta")
    });
}

#[test]
fn held_messages_leave_as_soon_as_a_route_returns() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = start(&spec, &[]);
    // bravo drains its only way on: alpha has no route to charlie, so puts wait, held.
    network
        .manager("bravo")
        .cli(&["link", "down", "charlie"])
        .expect_code(0);
    wait_until("alpha has no route to charlie", SOON, || {
        next_hop(&mut network, "alpha", "charlie").is_none()
    });
    put(&mut network, "alpha", "orders", "held", 25);
    wait_until("25 messages held at alpha", SOON, || {
        network.manager("alpha").depth("hopmq.held") == Some(25)
    });

    network
        .manager("bravo")
        .cli(&["link", "up", "charlie"])
        .expect_code(0);
    let got = receive(&network.manager("charlie").client(), "orders", 25);
    assert_eq!(
        bodies(&got),
        (0..25).map(|i| format!("held-{i}")).collect::<Vec<_>>(),
        "in put order"
    );
    assert_eq!(network.manager("alpha").depth("hopmq.held"), Some(0));
    assert_no_dead_letters(&mut network, &spec.managers);
}

#[test]
fn a_link_removed_from_the_file_closes_and_traffic_takes_the_other_way() {
    let mut spec = Spec {
        managers: vec!["alpha", "bravo", "charlie"],
        links: vec![
            ("alpha", "charlie", 1),
            ("alpha", "bravo", 1),
            ("bravo", "charlie", 1),
        ],
        queues: vec![("orders", "charlie")],
    };
    let mut network = start(&spec, &[]);
    wait_next_hop(&mut network, "alpha", "charlie", "charlie");

    spec.links.remove(0);
    network.write_topology(&spec);
    wait_next_hop(&mut network, "alpha", "charlie", "bravo");
    wait_until("alpha's channel to charlie closed", SOON, || {
        let link = link_of(&network.manager("alpha").status(), "charlie");
        link["linked"] == false && link["state"] == "down" && link["inbound"] == false
    });
    assert!(
        network
            .manager("alpha")
            .log()
            .contains("link removed from the topology")
    );
    put(&mut network, "alpha", "orders", "around", 10);
    let got = receive(&network.manager("charlie").client(), "orders", 10);
    let hops: Vec<Vec<&str>> = got
        .iter()
        .map(|m| m.trace.iter().map(|t| t.manager.as_str()).collect())
        .collect();
    assert!(
        hops.iter().all(|h| *h == ["alpha", "bravo", "charlie"]),
        "{hops:?}"
    );
    // The removed link stays down: neither end dials the other any more.
    let status = network.manager("charlie").status();
    assert_ne!(link_of(&status, "alpha")["state"], "up", "{status}");
}
