//! The operator's commands, run as an operator would: `purge`, `delete-message`, `move`,
//! `dlq list|replay|move` and leased gets (`get --lease` with `--exec` or `--then`), each
//! refusing clearly what it cannot do; and a power cut in the middle of a large purge, move or
//! replay, after which every message is in exactly one place.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use hopmq::Message;
use support::{Manager, SOON, drain, wait_until};

fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Puts `count` messages `m0`, `m1`, ... to `address` in batches.
fn put_numbered(manager: &Manager, address: &str, count: usize) {
    let client = manager.client();
    for start in (0..count).step_by(1000) {
        let batch = (start..count.min(start + 1000))
            .map(|n| (address.to_owned(), Message::new(format!("m{n}"))))
            .collect();
        client.put_batch(batch).unwrap();
    }
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("m{n}")).collect()
}

#[test]
fn purge_delete_message_and_move_say_what_they_did() {
    let manager = Manager::start();
    put_numbered(&manager, "orders", 5);
    // A consumer holds one under a lease: a purge leaves it alone, and says so.
    let consumer = manager.client();
    let leased = consumer
        .get_leased("orders", SOON, Duration::from_secs(600))
        .unwrap()
        .unwrap();
    let purge = manager.cli(&["purge", "orders"]);
    purge.expect_code(0);
    assert!(
        purge.stdout.contains("4 messages: purged from orders"),
        "{purge:?}"
    );
    assert!(purge.stdout.contains("1 message is leased"), "{purge:?}");
    let by_id = manager.cli(&["delete-message", "orders", &leased.id.to_string()]);
    by_id.expect_code(1);
    assert!(by_id.stdout.contains("leased"), "{by_id:?}");
    consumer.nack(vec![leased.lease.unwrap()]).unwrap();

    let kept = manager.cli(&["put", "orders", "kept"]);
    let kept_id = kept.stdout.trim().to_owned();
    let deleted = manager.cli(&["delete-message", "orders", &leased.id.to_string()]);
    deleted.expect_code(0);
    let missing = manager.cli(&["delete-message", "orders", &leased.id.to_string()]);
    missing.expect_code(1);
    assert!(missing.stdout.contains("no message"), "{missing:?}");

    let moved = manager.cli(&["move", "orders", "parked", "--json"]);
    moved.expect_code(0);
    assert_eq!(moved.json_lines()[0]["done"], 1);
    let parked = drain(&manager.client(), "parked");
    assert_eq!(bodies(&parked), ["kept"]);
    assert_eq!(
        parked[0].id.to_string(),
        kept_id,
        "a move keeps the message's id"
    );

    // What cannot be done is refused before anything moves, naming why.
    for (args, says) in [
        (&["move", "orders", "orders"][..], "already"),
        (&["move", "nothing", "x"][..], "no queue `nothing`"),
        (&["move", "hopmq.held", "x"][..], "belongs to the manager"),
        (&["move", "parked", "x@nowhere"][..], "nowhere"),
        (&["purge", "hopmq.held"][..], "belongs to the manager"),
        (&["purge", "nothing"][..], "no queue `nothing`"),
        (&["delete-message", "orders", "not-an-id"][..], "not-an-id"),
    ] {
        let run = manager.cli(args);
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
    }
}

#[test]
fn dead_letters_are_listed_replayed_and_parked() {
    let manager = Manager::builder().env("QMGR_MAX_DELIVERIES", 2).start();
    manager.cli(&["put", "orders", "poison"]).expect_code(0);
    manager.cli(&["put", "payments", "bad card"]).expect_code(0);
    // Looked at twice without an ack (`--then nack`): dead-lettered.
    for queue in ["orders", "orders", "payments", "payments"] {
        let look = manager.cli(&["get", queue, "--lease", "1m", "--then", "nack"]);
        look.expect_code(0);
    }
    let list = manager.cli(&["dlq", "list"]);
    list.expect_code(0);
    assert!(list.stdout.starts_with("2 dead letters"), "{list:?}");
    assert!(list.stdout.contains("max_deliveries"), "{list:?}");
    let json = manager.cli(&["dlq", "list", "--json"]);
    let listing = &json.json_lines()[0];
    assert_eq!(listing["selected"], 2);
    let payments_id = listing["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "payments")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let none = manager.cli(&["dlq", "replay"]);
    none.expect_code(2);
    let replay = manager.cli(&["dlq", "replay", "--id", &payments_id]);
    replay.expect_code(0);
    let back = drain(&manager.client(), "payments");
    assert_eq!(bodies(&back), ["bad card"]);
    assert_eq!(back[0].delivery_count, 1, "a fresh delivery");
    assert!(
        !back[0].headers.contains_key("hopmq.dead_letter_reason"),
        "{:?}",
        back[0].headers
    );

    let park = manager.cli(&[
        "dlq",
        "move",
        "--reason",
        "max_deliveries",
        "--to",
        "parked",
    ]);
    park.expect_code(0);
    let parked = drain(&manager.client(), "parked");
    assert_eq!(bodies(&parked), ["poison"]);
    assert!(parked[0].headers["hopmq.dead_letter_reason"].contains("max_deliveries"));
    let empty = manager.cli(&["dlq", "list"]);
    assert!(empty.stdout.starts_with("0 dead letters"), "{empty:?}");
}

#[test]
fn a_leased_get_acks_only_what_its_command_handled() {
    let manager = Manager::start();
    put_numbered(&manager, "work", 3);
    let scratch = manager.scratch().join("handled");
    let handler = format!(
        "read body; echo \"$body $HOPMQ_DELIVERY_COUNT\" >> {}; \
         [ \"$body\" != m1 ] || [ \"$HOPMQ_DELIVERY_COUNT\" -gt 1 ]",
        scratch.display()
    );
    let run = manager.cli(&[
        "get", "work", "--lease", "30s", "--count", "4", "--exec", &handler,
    ]);
    run.expect_code(1);
    assert!(run.stderr.contains("nacked"), "{run:?}");
    // m1's command failed the first time: nacked, it was back at once with its delivery
    // counted, and handled the second time.
    let handled = std::fs::read_to_string(&scratch).unwrap();
    assert_eq!(handled, "m0 1\nm1 1\nm1 2\nm2 1\n");
    assert_eq!(manager.depth("work"), Some(0));

    // A `qmgr get --lease` that dies while its command runs settles nothing: the message is
    // back in its queue.
    put_numbered(&manager, "work", 1);
    let started = manager.scratch().join("started");
    let slow = format!("touch {}; sleep 5", started.display());
    let mut getter = manager.spawn_cli(&["get", "work", "--lease", "10m", "--exec", &slow]);
    wait_until("the command runs", SOON, || started.exists());
    assert_eq!(manager.depth("work"), Some(0));
    getter.kill().unwrap();
    getter.wait().unwrap();
    wait_until("the message is back", SOON, || {
        manager.depth("work") == Some(1)
    });

    // Printed, then acked: gone for good.
    let printed = manager.cli(&["get", "work", "--lease", "30s"]);
    printed.expect_code(0);
    assert_eq!(printed.stdout, "m0\n");
    assert_eq!(manager.depth("work"), Some(0));
    let refused = manager.cli(&["get", "work", "--exec", "true"]);
    refused.expect_code(2);
}

/// Starts a manager whose `kill9` is a power cut, with syncs slow enough that a command over
/// many messages is still at work when the power goes; `None` (the test then returns) where
/// crashfs cannot be mounted.
fn on_crashfs(test: &str) -> Option<Manager> {
    let manager = Manager::start();
    if !manager.power_cuts() {
        eprintln!("SKIPPED {test}: crashfs cannot be mounted here");
        return None;
    }
    Some(manager)
}

/// Every body in `messages`, checking none is there twice.
#[track_caller]
fn once_each(messages: &[Message]) -> BTreeSet<String> {
    let all = bodies(messages);
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "a message is there twice");
    unique
}

const LARGE: usize = 40_000;

/// The depth of `queue` (0 if it does not exist), asked through the library: quick enough to
/// catch a command in the middle.
fn depth(client: &hopmq::blocking::Client, queue: &str) -> usize {
    let status = client.status().unwrap();
    status
        .queues
        .iter()
        .find(|q| q.name == queue)
        .map_or(0, |q| q.depth as usize)
}

/// Starts `args` against `manager` and cuts the power once `midway` says the command is in
/// the middle (syncs are slowed down so that a command over many messages takes a while),
/// and checks that it was: `midway` gives the messages still in the source queue once some
/// pass is durable. The command's own outcome does not matter (its connection dies with the
/// manager).
fn cut_power_midway(
    manager: &mut Manager,
    args: &[&str],
    midway: impl Fn(&hopmq::blocking::Client) -> Option<usize>,
) {
    manager.slow_syncs(Duration::from_millis(20));
    let client = manager.client();
    let mut command = manager.spawn_cli(args);
    let start = std::time::Instant::now();
    // A tight loop, not `wait_until`'s growing pauses: the window is short.
    let left = loop {
        if let Some(left) = midway(&client) {
            break left;
        }
        assert!(start.elapsed() < SOON, "the command never got half-way");
        std::thread::sleep(Duration::from_millis(1));
    };
    manager.kill9();
    eprintln!(
        "power cut after {:?}, {left} messages not yet taken",
        start.elapsed()
    );
    assert!(
        left > 0,
        "the command ended before the power cut: the test proves nothing"
    );
    let _ = command.wait();
    drop(client);
    manager.restart();
}

/// Midway through a move from `from` to `to`: a copy is visible in `to`, so a group is durable.
fn moving(
    from: &'static str,
    to: &'static str,
) -> impl Fn(&hopmq::blocking::Client) -> Option<usize> {
    move |client| (depth(client, to) > 0).then(|| depth(client, from))
}

#[test]
fn a_power_cut_during_a_large_move_loses_and_doubles_nothing() {
    let Some(mut manager) = on_crashfs("a_power_cut_during_a_large_move_loses_and_doubles_nothing")
    else {
        return;
    };
    put_numbered(&manager, "from", LARGE);
    cut_power_midway(&mut manager, &["move", "from", "to"], moving("from", "to"));
    let client = manager.client();
    let (from, to) = (drain(&client, "from"), drain(&client, "to"));
    eprintln!(
        "after the power cut: {} left, {} moved",
        from.len(),
        to.len()
    );
    let mut all = once_each(&from);
    let moved = once_each(&to);
    assert!(all.is_disjoint(&moved), "a message is in both queues");
    all.extend(moved);
    assert_eq!(all, numbered(0..LARGE).into_iter().collect());
    // Order holds on both sides: what moved is a prefix, in put order.
    assert_eq!(bodies(&to), numbered(0..to.len()));
    assert_eq!(bodies(&from), numbered(to.len()..LARGE));
}

#[test]
fn a_power_cut_during_a_large_purge_leaves_an_untouched_suffix() {
    let Some(mut manager) =
        on_crashfs("a_power_cut_during_a_large_purge_leaves_an_untouched_suffix")
    else {
        return;
    };
    put_numbered(&manager, "orders", LARGE);
    // Two passes taken (4,096 messages each): the first one's removal is durable.
    cut_power_midway(&mut manager, &["purge", "orders"], |client| {
        let left = depth(client, "orders");
        (left <= LARGE - 2 * 4096).then_some(left)
    });
    let left = drain(&manager.client(), "orders");
    eprintln!("after the power cut: {} left", left.len());
    once_each(&left);
    assert_eq!(bodies(&left), numbered(LARGE - left.len()..LARGE));
    // Run again, it finishes the job.
    put_numbered(&manager, "orders", 10);
    manager.cli(&["purge", "orders"]).expect_code(0);
    assert_eq!(manager.depth("orders"), Some(0));
}

#[test]
fn a_power_cut_during_a_large_replay_loses_and_doubles_nothing() {
    let Some(mut manager) =
        on_crashfs("a_power_cut_during_a_large_replay_loses_and_doubles_nothing")
    else {
        return;
    };
    put_numbered(&manager, "DLQ", LARGE);
    cut_power_midway(
        &mut manager,
        &["dlq", "replay", "--all", "--to", "retry"],
        moving("DLQ", "retry"),
    );
    let client = manager.client();
    let (dead, retried) = (depth(&client, "DLQ"), depth(&client, "retry"));
    eprintln!("after the power cut: {dead} dead, {retried} replayed");
    assert_eq!(dead + retried, LARGE, "a message lost or doubled");
    // Run again, it replays the rest: then every dead letter is in `retry`, once.
    manager
        .cli(&["dlq", "replay", "--all", "--to", "retry"])
        .expect_code(0);
    assert_eq!(depth(&client, "DLQ"), 0);
    let all = drain(&client, "retry");
    assert_eq!(once_each(&all), numbered(0..LARGE).into_iter().collect());
}

#[test]
fn a_move_to_another_manager_goes_the_way_a_put_does() {
    let spec = support::network::Spec::line(&["alpha", "bravo"], "orders");
    let mut network = support::network::Network::start(&spec);
    let alpha = network.manager("alpha");
    put_numbered(alpha, "parked", 100);
    // A queue at alpha moved to a queue at bravo: through alpha's transmission queue and the
    // channel, exactly once, in order.
    let run = alpha.cli(&["move", "parked", "orders@bravo"]);
    run.expect_code(0);
    assert!(run.stdout.contains("100 messages: moved"), "{run:?}");
    assert_eq!(alpha.depth("parked"), Some(0));
    // Dead letters replayed to `orders`, which the topology homes on bravo.
    let client = alpha.client();
    client
        .put_batch(
            (0..3)
                .map(|n| ("DLQ".to_owned(), Message::new(format!("late{n}"))))
                .collect(),
        )
        .unwrap();
    let replay = alpha.cli(&["dlq", "replay", "--all", "--to", "orders"]);
    replay.expect_code(0);
    let bravo = network.manager("bravo");
    let got = support::network::receive(&bravo.client(), "orders", 103);
    let mut expected = numbered(0..100);
    expected.extend(["late0", "late1", "late2"].map(String::from));
    assert_eq!(bodies(&got), expected);
    let hops: Vec<&str> = got[0]
        .trace
        .iter()
        .map(|hop| hop.manager.as_str())
        .collect();
    assert_eq!(hops, ["alpha", "bravo"]);
}
