//! The headline promise: a put that returned survives `kill -9` of the manager at any moment,
//! exactly once and in order, and nothing that was taken comes back.
//!
//! Producers put sequentially numbered messages as fast as they can while the manager is
//! killed under them; after the restart every acknowledged put is checked against what the
//! queue holds.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hopmq::{GetOptions, Message};
use support::{Manager, SOON, wait_until};

const QUEUE: &str = "ledger";
const PRODUCERS: u32 = 4;
/// Acknowledged puts (over all producers) before the kill: enough that the kill lands in the
/// middle of a busy stream, few enough to stay fast on a slow machine.
const ACKED_BEFORE_KILL: u64 = 500;

/// What producers were told: per producer, how many puts returned Ok (sequence numbers
/// `0..acked`), and whether one more was in flight when the manager died (it may or may not
/// have been stored: either is fine, twice is not).
#[derive(Debug, Default)]
struct Ledger {
    acked: BTreeMap<u32, u64>,
    in_flight: BTreeSet<(u32, u64)>,
    /// Bodies taken for good before a crash: they must never come back.
    taken: BTreeSet<String>,
}

fn body(producer: u32, seq: u64) -> String {
    format!("client-{producer}-seq-{seq}")
}

fn parse(body: &[u8]) -> (u32, u64) {
    let text = std::str::from_utf8(body).unwrap();
    let rest = text
        .strip_prefix("client-")
        .unwrap_or_else(|| panic!("{text}"));
    let (producer, seq) = rest.split_once("-seq-").unwrap_or_else(|| panic!("{text}"));
    (producer.parse().unwrap(), seq.parse().unwrap())
}

/// Runs producers `first..first + PRODUCERS` against `manager` and kills it with SIGKILL once
/// `ACKED_BEFORE_KILL` of their puts have returned; records the outcome in `ledger`.
fn put_until_killed(manager: &mut Manager, first: u32, ledger: &mut Ledger) {
    let acked_total = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (first..first + PRODUCERS)
        .map(|producer| {
            let client = manager.client();
            let acked_total = Arc::clone(&acked_total);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                loop {
                    match client.put(QUEUE, Message::new(body(producer, seq))) {
                        Ok(_) => {
                            seq += 1;
                            acked_total.fetch_add(1, Ordering::SeqCst);
                        }
                        // The manager is gone; the put's outcome is unknown.
                        Err(_) => return (producer, seq),
                    }
                }
            })
        })
        .collect();
    wait_until(
        "enough puts are acknowledged",
        Duration::from_secs(120),
        || acked_total.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL,
    );
    manager.kill9();
    for producer in producers {
        let (id, acked) = producer.join().unwrap();
        ledger.acked.insert(id, acked);
        ledger.in_flight.insert((id, acked));
    }
}

/// Checks what the queue holds against the ledger: every acknowledged put not taken is there
/// exactly once, nothing taken or never put is, and each producer's messages are in order.
fn check(survivors: &[Message], ledger: &Ledger) {
    let mut seen = BTreeSet::new();
    let mut last_per_producer: BTreeMap<u32, u64> = BTreeMap::new();
    for message in survivors {
        let text = String::from_utf8_lossy(&message.body).into_owned();
        let (producer, seq) = parse(&message.body);
        assert!(seen.insert(text.clone()), "{text} is there twice");
        assert!(
            !ledger.taken.contains(&text),
            "{text} was taken, yet came back"
        );
        let acked = ledger.acked.get(&producer).copied();
        let known =
            acked.is_some_and(|acked| seq < acked) || ledger.in_flight.contains(&(producer, seq));
        assert!(known, "{text} was never put");
        if let Some(last) = last_per_producer.insert(producer, seq) {
            assert!(last < seq, "{text} comes after seq {last} of its producer");
        }
    }
    for (&producer, &acked) in &ledger.acked {
        for seq in 0..acked {
            let text = body(producer, seq);
            assert!(
                seen.contains(&text) || ledger.taken.contains(&text),
                "acknowledged put {text} is lost"
            );
        }
    }
}

#[test]
fn acknowledged_puts_survive_kill_9_exactly_once_and_in_order() {
    let mut manager = Manager::builder().arg("--sync").arg("always").start();
    let mut ledger = Ledger::default();

    // Round 1: kill -9 in the middle of four put streams.
    put_until_killed(&mut manager, 0, &mut ledger);
    manager.restart();
    let client = manager.client();
    let survivors = client
        .browse(QUEUE, hopmq::protocol::BATCH_MESSAGES_MAX)
        .unwrap();
    assert!(
        (survivors.len() as u32) < hopmq::protocol::BATCH_MESSAGES_MAX,
        "browse saw everything"
    );
    check(&survivors, &ledger);

    // Take some for good, lease some more and hold them unacked through the next crash.
    let taken = client
        .get_with(
            QUEUE,
            GetOptions {
                max: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(taken.len(), 100);
    ledger.taken.extend(
        taken
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
    );
    let holder = manager.client();
    let leased = holder
        .get_with(
            QUEUE,
            GetOptions {
                max: 50,
                lease: Some(Duration::from_secs(600)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(leased.len(), 50);
    drop(client);

    // Round 2: new producers, and another kill -9 while the leases are held.
    put_until_killed(&mut manager, PRODUCERS, &mut ledger);
    drop(holder);
    manager.restart();
    let client = manager.client();
    let survivors = support::drain(&client, QUEUE);
    check(&survivors, &ledger);
    let bodies: BTreeSet<&[u8]> = survivors.iter().map(|m| m.body.as_slice()).collect();
    for message in &leased {
        assert!(
            bodies.contains(message.body.as_slice()),
            "leased, unacked {} did not come back",
            String::from_utf8_lossy(&message.body)
        );
    }
    // And what was drained stays drained.
    manager.kill9();
    manager.restart();
    let client = manager.client();
    assert!(
        client
            .get(QUEUE, Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    assert_eq!(manager.depth(QUEUE).unwrap_or(0), 0);
}

#[test]
fn sigterm_ends_waiting_gets_with_an_error_exits_0_and_keeps_every_message() {
    let mut manager = Manager::start();
    let client = manager.client();
    let ids: Vec<_> = (0..3)
        .map(|n| {
            client
                .put("kept", Message::new(format!("kept-{n}")))
                .unwrap()
        })
        .collect();

    let waiter = manager.client();
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = result_tx.send(waiter.get("idle", Duration::from_secs(600)));
    });
    let mut cli_get = manager.spawn_cli(&["get", "idle-cli", "--timeout", "600s"]);
    // A get on an undeclared queue creates it in the step that makes it wait (see
    // local_queues.rs): once status lists both queues, both gets are waiting.
    wait_until("both gets are waiting", SOON, || {
        manager.depth("idle").is_some() && manager.depth("idle-cli").is_some()
    });

    let status = manager.terminate();
    assert!(
        status.success(),
        "qmgr run exited with {status}:\n{}",
        manager.log()
    );
    let result = result_rx
        .recv_timeout(SOON)
        .expect("the waiting get returned instead of hanging");
    assert!(result.is_err(), "{result:?}");
    let cli_status = support::wait_exit(&mut cli_get, "the waiting qmgr get", SOON);
    let output = cli_get.wait_with_output().unwrap();
    assert_eq!(cli_status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(manager.log().contains("stopped"), "{}", manager.log());

    manager.restart();
    let client = manager.client();
    let kept = support::drain(&client, "kept");
    assert_eq!(kept.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
}
