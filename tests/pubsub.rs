//! Publish/subscribe with real managers: filter semantics and durable subscriptions on one
//! manager (through a `kill -9`), a transient subscriber that stops reading, and a diamond
//! where publications reach durable subscriptions on two managers once each, in order, one
//! copy per link, through the `kill -9` of a subscriber's manager and of a relay, and in
//! publish order round a relay killed with what it held; and
//! non-persistent publications crossing the same diamond without a single journal write.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::time::Duration;

use hopmq::{Message, Publication};
use support::network::{Network, Spec, assert_in_put_order, kept_for, link_of, receive};
use support::{Manager, SOON, drain, wait_until};

fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.text().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn filters_match_once_per_subscription_and_durable_ones_outlive_their_manager() {
    let mut manager = Manager::start();
    let client = manager.client();
    client.create_subscription("one", "a.*", None).unwrap();
    client.create_subscription("rest", "a.>", None).unwrap();
    client.create_subscription("exact", "a.b", None).unwrap();
    // Idempotent with its filter; refused with another, and precise about bad filters.
    client.create_subscription("one", "a.*", None).unwrap();
    let other = client.create_subscription("one", "b.*", None).unwrap_err();
    assert!(
        other.to_string().contains("exists with filter `a.*`"),
        "{other}"
    );
    let bad = manager.cli(&["subscription", "create", "x", "a.>.b"]);
    bad.expect_code(1);
    assert!(
        bad.stderr.contains("may only be the last token"),
        "{}",
        bad.stderr
    );
    let bad = manager.cli(&["publish", "a.*", "x"]);
    bad.expect_code(1);
    assert!(bad.stderr.contains("wildcards"), "{}", bad.stderr);

    client.publish("a.b", Message::new("ab")).unwrap();
    client.publish("a.c", Message::new("ac")).unwrap();
    client.publish("a.b.c", Message::new("abc")).unwrap();
    client.publish("a", Message::new("a")).unwrap();
    client.publish("z.b", Message::new("zb")).unwrap();
    manager
        .cli_with_stdin(&["publish", "a.b"], b"line 1\nline 2\n")
        .expect_code(0);

    // Collected while nobody reads, and kept through a power cut.
    manager.kill9();
    manager.restart();
    let client = manager.client();
    let listing = client.list_subscriptions().unwrap();
    let names: Vec<&str> = listing.durable.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["exact", "one", "rest"]);
    assert_eq!(
        texts(&drain(&client, "one")),
        ["ab", "ac", "line 1", "line 2"]
    );
    assert_eq!(
        texts(&drain(&client, "rest")),
        ["ab", "ac", "abc", "line 1", "line 2"]
    );
    let exact = drain(&client, "exact");
    assert_eq!(texts(&exact), ["ab", "line 1", "line 2"]);
    assert_eq!(exact[0].topic(), Some("a.b"));

    // A deleted subscription takes its queue and stops collecting.
    client.publish("a.b", Message::new("late")).unwrap();
    manager
        .cli(&["subscription", "delete", "exact"])
        .expect_code(0);
    client.publish("a.b", Message::new("later")).unwrap();
    let listing = manager.cli(&["subscription", "list"]);
    assert!(!listing.stdout.contains("exact"), "{}", listing.stdout);
    assert_eq!(manager.depth("exact"), None);
    assert_eq!(texts(&drain(&client, "one")), ["late", "later"]);
}

#[test]
fn a_transient_subscriber_that_stops_reading_loses_counted_publications_only() {
    let manager = Manager::start();
    let subscriber = manager.client();
    let mut subscription = subscriber.subscribe_topic("load.>").unwrap();
    let publisher = manager.client();
    // Nothing reads the subscription: 128 MiB published must neither block the publisher nor
    // pile up in the manager beyond the subscriber's buffer (the client library itself holds
    // up to 1,024 of them, 64 MiB, before its socket stops being read).
    let body = vec![b'x'; 64 * 1024];
    let published = 2048;
    for batch in 0..published / 16 {
        let messages = (0..16)
            .map(|i| {
                let message = Message::new(body.clone()).header("n", (batch * 16 + i).to_string());
                ("load.data".to_owned(), message)
            })
            .collect();
        publisher.publish_batch(messages).unwrap();
    }
    let listing = publisher.list_subscriptions().unwrap();
    let transient = listing.transient[0].clone();
    assert_eq!(transient.filter, "load.>");
    assert!(transient.missed > 0, "{transient:?}");
    assert_eq!(transient.delivered + transient.missed, published);
    // Reading now: what was sent, in order, each loss reported as soon as the subscriber
    // could take a frame again; the last one with the next publication.
    let (mut received, mut missed, mut last) = (0, 0, None);
    while received < transient.delivered {
        match subscription.recv_timeout(SOON).unwrap().unwrap() {
            Publication::Message(message) => {
                let n: u64 = message.headers["n"].parse().unwrap();
                assert!(last.is_none_or(|last| n > last), "in order");
                last = Some(n);
                received += 1;
            }
            Publication::Missed(count) => missed += count,
        }
    }
    publisher
        .publish("load.data", Message::new("after"))
        .unwrap();
    loop {
        match subscription.recv_timeout(SOON).unwrap().unwrap() {
            Publication::Missed(count) => missed += count,
            Publication::Message(m) => {
                assert_eq!(m.text(), Some("after"));
                break;
            }
        }
    }
    assert_eq!(missed, transient.missed, "every loss reported, once");
    // Interest goes with the last subscriber.
    drop(subscription);
    wait_until("the transient subscription ends", SOON, || {
        publisher.list_subscriptions().unwrap().transient.is_empty()
    });
}

fn start(spec: &Spec) -> Network {
    // Dead only after long silence: a relay killed and restarted at once keeps its routes, so
    // what it took is delivered from its journal when it returns.
    start_with(spec, &[("QMGR_LINK_DEAD_INTERVAL_MS", "60000")])
}

fn start_with(spec: &Spec, env: &[(&str, &str)]) -> Network {
    let mut network = Network::prepare(spec);
    let topology = network.topology();
    let certs = network.certs();
    for name in spec.managers.clone() {
        network.start_manager_with(name, &topology, &certs, env);
    }
    network.wait_all_links_up(spec);
    network
}

/// Publishes `bodies` at `alpha` to `prices.eu.btc`, in batches.
fn publish(network: &mut Network, bodies: &[String]) {
    let client = network.manager("alpha").client();
    for chunk in bodies.chunks(250) {
        let batch = chunk
            .iter()
            .map(|body| ("prices.eu.btc".to_owned(), Message::new(body.as_str())))
            .collect();
        client.publish_batch(batch).unwrap();
    }
}

/// `manager`'s count of publications `sent` to or `received` from `neighbour`.
fn publications(network: &mut Network, manager: &str, neighbour: &str, way: &str) -> u64 {
    let status = network.manager(manager).status();
    link_of(&status, neighbour)[format!("publications_{way}")]
        .as_u64()
        .unwrap()
}

/// The one-copy-per-link counters of the diamond: alpha → bravo, alpha → charlie, and what
/// delta received from charlie.
fn diamond_counters(network: &mut Network) -> [u64; 3] {
    [
        publications(network, "alpha", "bravo", "sent"),
        publications(network, "alpha", "charlie", "sent"),
        publications(network, "delta", "charlie", "received"),
    ]
}

/// `subscription` on `manager` holds `bodies`, once each and in order, and nothing more.
fn assert_received(
    network: &mut Network,
    (manager, subscription): (&str, &str),
    bodies: &[String],
) {
    let consumer = network.manager(manager).client();
    let got = receive(&consumer, subscription, bodies.len());
    assert_eq!(
        texts(&got),
        bodies,
        "{subscription} on {manager}: once each, in order"
    );
    let more = consumer
        .get(subscription, Duration::from_millis(500))
        .unwrap();
    assert!(more.is_none(), "nothing more");
    if manager == "delta" {
        for message in &got {
            let path: Vec<&str> = message.trace.iter().map(|t| t.manager.as_str()).collect();
            assert_eq!(path, ["alpha", "bravo", "delta"]);
        }
    }
}

/// The diamond with durable subscriptions `eu` (`prices.eu.*`) on delta and `all`
/// (`prices.>`) on charlie, and a transient one (`prices.>`) on bravo, once alpha knows them.
fn diamond_with_subscribers() -> (Network, hopmq::blocking::TopicSubscription) {
    let mut network = start(&Spec::diamond());
    let delta = network.manager("delta").client();
    delta
        .create_subscription("eu", "prices.eu.*", None)
        .unwrap();
    let charlie = network.manager("charlie").client();
    charlie
        .create_subscription("all", "prices.>", None)
        .unwrap();
    let bravo = network.manager("bravo").client();
    let transient = bravo.subscribe_topic("prices.>").unwrap();
    let alpha = network.manager("alpha").client();
    wait_until("alpha knows every subscriber's interest", SOON, || {
        alpha.list_subscriptions().unwrap().interest.len() == 3
    });
    (network, transient)
}

/// Publishes `bodies` non-persistent at `alpha` to `prices.eu.btc`, in batches of `batch`.
fn publish_non_persistent(alpha: &hopmq::blocking::Client, bodies: &[String], batch: usize) {
    for chunk in bodies.chunks(batch) {
        let publications = chunk
            .iter()
            .map(|body| {
                let message = Message::new(body.as_str()).non_persistent();
                ("prices.eu.btc".to_owned(), message)
            })
            .collect();
        alpha.publish_batch(publications).unwrap();
    }
}

#[test]
fn the_diamond_delivers_each_publication_once_in_order_one_copy_per_link() {
    let (mut network, mut transient) = diamond_with_subscribers();
    // Counted from here: making a subscription sends a request for retained publications.
    let before = diamond_counters(&mut network);
    let resent_before = resent_at_alpha(&mut network);

    let bodies: Vec<String> = (0..5000).map(|i| format!("p{i:05}")).collect();
    publish(&mut network, &bodies[..1000]);
    // The transient subscriber on bravo, the relay towards delta, sees them.
    for body in &bodies[..1000] {
        match transient.recv_timeout(SOON).unwrap().unwrap() {
            Publication::Message(m) => assert_eq!(m.text(), Some(body.as_str())),
            Publication::Missed(n) => panic!("a reading subscriber missed {n}"),
        }
    }
    drop(transient);
    publish(&mut network, &bodies[1000..2000]);
    network.manager("charlie").kill9();
    publish(&mut network, &bodies[2000..3000]);
    network.manager("charlie").restart();
    publish(&mut network, &bodies[3000..4000]);
    network.manager("bravo").kill9();
    publish(&mut network, &bodies[4000..]);
    network.manager("bravo").restart();

    assert_received(&mut network, ("delta", "eu"), &bodies);
    assert_received(&mut network, ("charlie", "all"), &bodies);
    // One copy per link: alpha gave each publication once to bravo (for bravo and delta) and
    // once to charlie; nothing went round through charlie to delta. Except copies custody
    // made: a restarted manager's first advertisement can show its links down for a moment,
    // and alpha then sends the shares in flight on them around it (their destinations drop
    // the second copies, as the subscriptions above show). Each crosses at most two of these
    // links.
    let after = diamond_counters(&mut network);
    let carried: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let resent = resent_at_alpha(&mut network) - resent_before;
    let once = [5000, 5000, 0];
    let what = "alpha → bravo, alpha → charlie, charlie → delta";
    if resent == 0 {
        assert_eq!(carried, once, "{what}");
    } else {
        let extra: u64 = carried
            .iter()
            .zip(once)
            .map(|(c, o)| c.saturating_sub(o))
            .sum();
        assert!(
            carried.iter().zip(once).all(|(&c, o)| c >= o) && extra <= 2 * resent,
            "{what}: {carried:?} with {resent} copies sent again"
        );
    }
}

/// The diamond's relay bravo takes 2,000 publications for delta's subscription while delta is
/// frozen, and is killed with them; 2,000 more follow. Alpha sends the first 2,000 round bravo
/// once its way to delta broke, and the later ones go round it too: delta holds what comes
/// before its turn, so its subscription gets all 4,000 once each in publish order, none of
/// them marked unordered.
#[test]
fn publications_round_a_relay_lost_with_what_it_held_arrive_once_in_publish_order() {
    let spec = Spec::diamond();
    // Long enough for bravo to hold publications for a quiet delta without routing round it.
    let env = [
        ("QMGR_LINK_DEAD_INTERVAL_MS", "8000"),
        ("QMGR_CUSTODY_TIMEOUT_MS", "2000"),
    ];
    let mut network = start_with(&spec, &env);
    let delta = network.manager("delta").client();
    delta
        .create_subscription("eu", "prices.eu.*", None)
        .unwrap();
    let alpha = network.manager("alpha").client();
    wait_until("alpha knows delta's interest", SOON, || {
        alpha.list_subscriptions().unwrap().interest.len() == 1
    });
    let bodies: Vec<String> = (0..4000).map(|i| format!("p{i:05}")).collect();
    let (first, second) = bodies.split_at(2000);
    network.freeze_behind("delta", "bravo");
    publish(&mut network, first);
    let origin = network.manager("alpha");
    wait_until("bravo acknowledges the first 2,000", SOON, || {
        kept_for(&origin.status(), "delta") == first.len() as u64
    });
    network.manager("bravo").kill9();
    network.manager("delta").thaw();
    publish(&mut network, second);

    let got = receive(&delta, "eu", bodies.len());
    assert_in_put_order(&texts(&got), &bodies);
    let status = network.manager("delta").status();
    assert_eq!(status["messages_unordered"], 0, "{status}");
    let more = delta.get("eu", Duration::from_millis(500)).unwrap();
    assert!(more.is_none(), "nothing more");
}

/// The copies alpha's custody sent again since it started.
fn resent_at_alpha(network: &mut Network) -> u64 {
    let status = network.manager("alpha").client().status().unwrap();
    status.messages_resent
}

#[test]
fn retained_publications_reach_each_later_subscription_once() {
    let spec = Spec::diamond();
    let mut network = Network::start(&spec);
    let alpha = network.manager("alpha").client();
    alpha
        .publish_retained("prices.eu.btc", Message::new("1"))
        .unwrap();
    alpha
        .publish_retained("prices.eu.btc", Message::new("2"))
        .unwrap();
    alpha
        .publish_retained("prices.eu.eth", Message::new("e"))
        .unwrap();
    network
        .manager("alpha")
        .cli(&["publish", "--retain", "other.x", "o"])
        .expect_code(0);
    alpha
        .publish("prices.eu.btc", Message::new("not retained"))
        .unwrap();

    // A new durable subscription elsewhere gets the last retained of each matching topic.
    let delta = network.manager("delta").client();
    delta
        .create_subscription("eu", "prices.eu.*", None)
        .unwrap();
    let got = receive(&delta, "eu", 2);
    assert_eq!(texts(&got), ["2", "e"]);
    assert!(got.iter().all(|m| m.headers["hopmq.retained"] == "true"));
    // Another one gets its own; the first gets nothing more.
    delta
        .create_subscription("btc", "prices.eu.btc", None)
        .unwrap();
    assert_eq!(texts(&receive(&delta, "btc", 1)), ["2"]);
    assert!(
        delta
            .get("eu", Duration::from_millis(500))
            .unwrap()
            .is_none()
    );

    // A transient subscriber, and a subscription on the publisher's own manager.
    let charlie = network.manager("charlie").client();
    let mut transient = charlie.subscribe_topic("prices.>").unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        match transient.recv_timeout(SOON).unwrap().unwrap() {
            Publication::Message(m) => seen.push(m.text().unwrap().to_owned()),
            Publication::Missed(n) => panic!("missed {n}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["2", "e"]);
    alpha.create_subscription("mine", "other.*", None).unwrap();
    assert_eq!(texts(&receive(&alpha, "mine", 1)), ["o"]);

    // Retained publications outlive a power cut of their manager.
    network.manager("alpha").kill9();
    network.manager("alpha").restart();
    network.wait_all_links_up(&spec);
    delta
        .create_subscription("again", "prices.eu.*", None)
        .unwrap();
    assert_eq!(texts(&receive(&delta, "again", 2)), ["2", "e"]);
    assert!(
        delta
            .get("again", Duration::from_millis(500))
            .unwrap()
            .is_none()
    );
}

/// Records `manager` has made durable since it started.
fn records(network: &mut Network, manager: &str) -> u64 {
    network.manager(manager).status()["store"]["records"]
        .as_u64()
        .unwrap()
}

#[test]
fn non_persistent_publications_cross_the_diamond_without_a_journal_write() {
    let (mut network, mut transient) = diamond_with_subscribers();
    let alpha = network.manager("alpha").client();
    let managers = ["alpha", "bravo", "charlie", "delta"];
    let counters = diamond_counters(&mut network);
    let written = managers.map(|m| records(&mut network, m));

    // 1 KiB each: 2,000 of them journaled anywhere would be 2,000 records there.
    let bodies: Vec<String> = (0..2000)
        .map(|i| format!("v{i:05}{}", "x".repeat(1018)))
        .collect();
    publish_non_persistent(&alpha, &bodies, 250);
    for body in &bodies {
        match transient.recv_timeout(SOON).unwrap().unwrap() {
            Publication::Message(m) => {
                assert_eq!(m.text(), Some(body.as_str()));
                assert!(!m.persistent);
            }
            Publication::Missed(n) => panic!("a reading subscriber missed {n}"),
        }
    }
    for (manager, subscription) in [("delta", "eu"), ("charlie", "all")] {
        let got = receive(
            &network.manager(manager).client(),
            subscription,
            bodies.len(),
        );
        assert_eq!(texts(&got), bodies, "{subscription} on {manager}: in order");
        assert!(got.iter().all(|m| !m.persistent));
    }
    let after = diamond_counters(&mut network);
    let carried: Vec<u64> = after.iter().zip(counters).map(|(a, b)| a - b).collect();
    assert_eq!(
        carried,
        [2000, 2000, 0],
        "one copy per link, as persistent ones"
    );
    for (manager, before) in managers.into_iter().zip(written) {
        let status = network.manager(manager).status();
        assert_eq!(
            status["publications_dropped"], 0,
            "{manager}: every link was up"
        );
        let grew = records(&mut network, manager) - before;
        assert!(
            grew < 100,
            "{manager} wrote {grew} records for 2,000 non-persistent publications"
        );
    }

    // Their copies lived in memory only: a power cut of a subscriber's manager loses them,
    // where a persistent publication would survive it.
    publish_non_persistent(&alpha, &bodies[..100], 50);
    alpha
        .publish("prices.eu.btc", Message::new("kept"))
        .unwrap();
    wait_until("charlie holds all 101", SOON, || {
        network.manager("charlie").depth("all") == Some(101)
    });
    network.manager("charlie").kill9();
    network.manager("charlie").restart();
    assert_eq!(
        texts(&receive(&network.manager("charlie").client(), "all", 1)),
        ["kept"]
    );
    let more = network
        .manager("charlie")
        .client()
        .get("all", Duration::from_millis(500))
        .unwrap();
    assert!(more.is_none(), "nothing but the persistent one survived");
}

#[test]
fn copies_that_cannot_fit_one_journal_write_are_refused_or_dead_lettered_with_why() {
    // bravo's journal writes hold about 1 MiB: three copies of 400 KiB do not fit one.
    let spec = Spec::line(&["alpha", "bravo"], "orders");
    let mut network = Network::prepare(&spec);
    let (topology, certs) = (network.topology(), network.certs());
    network.start_manager_with("alpha", &topology, &certs, &[]);
    let small = [("QMGR_SEGMENT_BYTES", "1048576")];
    network.start_manager_with("bravo", &topology, &certs, &small);
    network.wait_all_links_up(&spec);
    let bravo = network.manager("bravo").client();
    for name in ["one", "two", "three"] {
        bravo.create_subscription(name, "big.>", None).unwrap();
    }
    let large = "x".repeat(400 * 1024);

    // Published at bravo itself: refused, with why, and nothing stored.
    let error = bravo
        .publish("big.one", Message::new(large.as_str()))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("more than one journal write holds"),
        "{error}"
    );
    assert!(
        bravo
            .get("one", Duration::from_millis(200))
            .unwrap()
            .is_none()
    );

    // Published at alpha, where it is one copy: bravo cannot store its three, so it goes to
    // bravo's DLQ with the reason, and the link goes on (it does not wedge on the resend).
    let alpha = network.manager("alpha").client();
    wait_until("alpha knows bravo's interest", SOON, || {
        !alpha.list_subscriptions().unwrap().interest.is_empty()
    });
    alpha
        .publish("big.one", Message::new(large.as_str()))
        .unwrap();
    alpha.publish("big.two", Message::new("small")).unwrap();
    let dead = receive(&bravo, "DLQ", 1);
    let reason = &dead[0].headers["hopmq.dead_letter_reason"];
    assert!(
        reason.contains("more than one journal write holds"),
        "{reason}"
    );
    assert_eq!(dead[0].body.len(), large.len(), "kept whole: nothing lost");
    for name in ["one", "two", "three"] {
        assert_eq!(texts(&receive(&bravo, name, 1)), ["small"], "{name}");
    }
}
