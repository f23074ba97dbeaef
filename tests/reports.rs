//! Delivery reports with real managers: arrival and delivery reports come back across two
//! hops exactly once per message through the `kill -9` of the destination's manager, each
//! naming the message by its id; exception reports say where and why a message was
//! dead-lettered (past the hop limit, at a full queue); a put that cannot be reported on is
//! refused.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::collections::{BTreeMap, BTreeSet};

use hopmq::report::{
    REPORT_HEADER, REPORT_MANAGER_HEADER, REPORT_QUEUE_HEADER, REPORT_REASON_HEADER,
};
use hopmq::{Message, Report, Reports};
use support::SOON;
use support::network::{Network, Spec, receive};

/// Reports in `queue` of `client`, taken once `count` are there: by kind, the correlation ids.
fn take_reports(
    client: &hopmq::blocking::Client,
    queue: &str,
    count: usize,
) -> BTreeMap<String, Vec<String>> {
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for report in receive(client, queue, count) {
        assert!(report.body.is_empty(), "{report:?}");
        let kind = report.headers[REPORT_HEADER].clone();
        by_kind
            .entry(kind)
            .or_default()
            .push(report.correlation_id.unwrap());
    }
    by_kind
}

#[test]
fn arrival_and_delivery_reports_come_back_once_each_through_a_kill_of_the_destination() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::start(&spec);
    network.wait_link_up("alpha", "bravo");
    network.wait_link_up("bravo", "charlie");
    let alpha = network.manager("alpha").client();
    let asking = Reports::of(&[Report::Arrival, Report::Delivery, Report::Exception]);
    let mut ids = Vec::new();
    for n in 0..40 {
        let message = Message::new(format!("m{n}"))
            .reply_to("acks@alpha")
            .reports(asking);
        ids.push(alpha.put("orders", message).unwrap().to_string());
    }
    // Taken at charlie with leased gets, each acked; charlie dies holding one leased and
    // unacked (its lease ends with the crash: it is delivered again, and reported once), with
    // reports still on their way back and messages still on theirs.
    let lease = std::time::Duration::from_secs(60);
    let take_one = |charlie: &hopmq::blocking::Client, acked: &mut BTreeSet<String>| {
        let message = charlie.get_leased("orders", SOON, lease).unwrap().unwrap();
        charlie.ack(vec![message.lease.unwrap()]).unwrap();
        assert!(
            acked.insert(message.text().unwrap().to_owned()),
            "acked once"
        );
    };
    let mut acked = BTreeSet::new();
    let charlie = network.manager("charlie").client();
    for _ in 0..10 {
        take_one(&charlie, &mut acked);
    }
    let held = charlie.get_leased("orders", SOON, lease).unwrap().unwrap();
    network.manager("charlie").kill9();
    network.manager("charlie").restart();
    let charlie = network.manager("charlie").client();
    while acked.len() < 40 {
        take_one(&charlie, &mut acked);
    }
    assert!(
        acked.contains(held.text().unwrap()),
        "the unacked one came again"
    );

    let alpha = network.manager("alpha").client();
    let mut reports = take_reports(&alpha, "acks", 80);
    ids.sort();
    for kind in ["arrival", "delivery"] {
        let mut named = reports.remove(kind).unwrap_or_default();
        named.sort();
        assert_eq!(named, ids, "one {kind} report per message, by its id");
    }
    assert!(reports.is_empty(), "nothing else: {reports:?}");
    network.wait_drained();
    assert!(alpha.poll("acks").unwrap().is_none(), "no report twice");

    // What a report says besides the id.
    let message = Message::new("one more")
        .reply_to("acks@alpha")
        .reports(Reports::of(&[Report::Arrival]));
    let id = alpha.put("orders", message).unwrap();
    let report = &receive(&alpha, "acks", 1)[0];
    assert_eq!(report.report(), Some(Report::Arrival));
    assert_eq!(report.correlation_id, Some(id.to_string()));
    assert_eq!(report.headers[REPORT_MANAGER_HEADER], "charlie");
    assert_eq!(report.headers[REPORT_QUEUE_HEADER], "orders");
    assert_eq!(report.origin, "charlie");
}

#[test]
fn exception_reports_say_where_and_why_a_message_was_dead_lettered() {
    let spec = Spec {
        queues: vec![("orders", "charlie"), ("small", "bravo")],
        ..Spec::line(&["alpha", "bravo", "charlie"], "orders")
    };
    let mut network = Network::prepare(&spec);
    // `small` holds one message; charlie allows one hop, and orders takes two to get there.
    let text = network
        .topology_text(&spec)
        .replace("home = \"bravo\"", "home = \"bravo\"\nmax_depth = 1");
    assert!(text.contains("max_depth = 1"), "{text}");
    std::fs::write(network.topology(), text).unwrap();
    network.start_manager("alpha");
    network.start_manager("bravo");
    let (topology, certs) = (network.topology(), network.certs());
    network.start_manager_with("charlie", &topology, &certs, &[("QMGR_MAX_HOPS", "1")]);

    let alpha = network.manager("alpha");
    let far = alpha.cli(&[
        "put",
        "orders",
        "far",
        "--reply-to",
        "acks@alpha",
        "--report",
        "exception,arrival",
    ]);
    far.expect_code(0);
    let far_id = far.stdout.trim().to_owned();
    let asking = ["--reply-to", "acks@alpha", "--report", "exception"];
    let first = alpha.cli(&[&["put", "small", "first"][..], &asking].concat());
    first.expect_code(0);
    let second = alpha.cli(&[&["put", "small", "second"][..], &asking].concat());
    second.expect_code(0);
    let second_id = second.stdout.trim().to_owned();

    let mut reports: BTreeMap<String, Message> = receive(&alpha.client(), "acks", 2)
        .into_iter()
        .map(|r| (r.correlation_id.clone().unwrap(), r))
        .collect();
    let hop_limit = reports
        .remove(&far_id)
        .expect("a report for the far message");
    assert_eq!(hop_limit.report(), Some(Report::Exception));
    assert_eq!(hop_limit.headers[REPORT_MANAGER_HEADER], "charlie");
    assert_eq!(hop_limit.headers[REPORT_QUEUE_HEADER], "orders");
    let reason = &hop_limit.headers[REPORT_REASON_HEADER];
    assert!(reason.contains("hop limit of 1 exceeded"), "{reason}");
    let full = reports.remove(&second_id).expect("a report for the second");
    assert_eq!(full.report(), Some(Report::Exception));
    assert_eq!(full.headers[REPORT_MANAGER_HEADER], "bravo");
    let reason = &full.headers[REPORT_REASON_HEADER];
    assert!(
        reason.contains("queue `small` is full (max_depth 1)"),
        "{reason}"
    );
    // The first arrived and asked for no arrival report; the dead letters owe nothing more.
    network.wait_drained();
    let alpha = network.manager("alpha");
    assert!(alpha.client().poll("acks").unwrap().is_none());
    let dead = receive(&network.manager("bravo").client(), "DLQ", 1);
    assert_eq!(dead[0].text(), Some("second"));
    network.wait_drained();
    assert!(
        network
            .manager("alpha")
            .client()
            .poll("acks")
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_put_asking_for_reports_without_a_reply_to_or_with_an_unknown_kind_is_refused() {
    let manager = support::Manager::start();
    let run = manager.cli(&["put", "orders", "x", "--report", "arrival"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--reply-to"), "{}", run.stderr);
    let run = manager.cli(&[
        "put",
        "orders",
        "x",
        "--reply-to",
        "acks",
        "--report",
        "read",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("unknown report `read`"),
        "{}",
        run.stderr
    );
    let client = manager.client();
    let error = client
        .put(
            "orders",
            Message::new("x").reports(Reports::of(&[Report::Delivery])),
        )
        .unwrap_err();
    assert!(error.to_string().contains("needs a reply_to"), "{error}");
    assert_eq!(manager.depth("orders").unwrap_or(0), 0);
    let error = client
        .publish(
            "news",
            Message::new("x")
                .reply_to("acks")
                .reports(Reports::of(&[Report::Arrival])),
        )
        .unwrap_err();
    assert!(error.to_string().contains("not publications"), "{error}");
}
