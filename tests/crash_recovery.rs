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
use std::time::{Duration, Instant};

use hopmq::{GetOptions, Message};
use support::network::{Network, Spec};
use support::{Manager, SOON, drain, wait_until};

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
    /// Bodies whose ack was in flight at a crash: gone or back, either is fine.
    maybe_taken: BTreeSet<String>,
    /// Messages a destructive get in flight at a crash may have taken without anyone seeing
    /// them (at most once: its removal may be durable and its answer lost): at most this many
    /// acknowledged puts may be missing unexplained.
    unanswered: usize,
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

/// Runs producers `first..first + PRODUCERS` against `manager`, each putting `batch`
/// messages per request (one `put`, or one atomic `put_batch`), and kills the manager with
/// SIGKILL once `ACKED_BEFORE_KILL` of their messages have been acknowledged and `ready` holds;
/// records the outcome in `ledger`.
fn put_until_killed(
    manager: &mut Manager,
    (first, batch): (u32, u64),
    ledger: &mut Ledger,
    ready: &dyn Fn() -> bool,
) {
    let acked_total = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (first..first + PRODUCERS)
        .map(|producer| {
            let client = manager.client();
            let acked_total = Arc::clone(&acked_total);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                loop {
                    let result = if batch == 1 {
                        client
                            .put(QUEUE, Message::new(body(producer, seq)))
                            .map(|_| ())
                    } else {
                        let messages = (seq..seq + batch)
                            .map(|n| (QUEUE.to_owned(), Message::new(body(producer, n))))
                            .collect();
                        client.put_batch(messages).map(|_| ())
                    };
                    match result {
                        Ok(()) => {
                            seq += batch;
                            acked_total.fetch_add(batch, Ordering::SeqCst);
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
        || acked_total.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL && ready(),
    );
    manager.kill9();
    for producer in producers {
        let (id, acked) = producer.join().unwrap();
        ledger.acked.insert(id, acked);
        ledger
            .in_flight
            .extend((acked..acked + batch).map(|seq| (id, seq)));
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
    let mut missing = Vec::new();
    for (&producer, &acked) in &ledger.acked {
        for seq in 0..acked {
            let text = body(producer, seq);
            if !(seen.contains(&text)
                || ledger.taken.contains(&text)
                || ledger.maybe_taken.contains(&text))
            {
                missing.push(text);
            }
        }
    }
    assert!(
        missing.len() <= ledger.unanswered,
        "acknowledged puts lost (beyond {} a get in flight may have taken): {missing:?}",
        ledger.unanswered
    );
    // A get takes from the head of the queue: what it took of a producer comes before all
    // that producer's survivors.
    let first_survivor: BTreeMap<u32, u64> = seen.iter().fold(BTreeMap::new(), |mut m, t| {
        let (producer, seq) = parse(t.as_bytes());
        let first = m.entry(producer).or_insert(seq);
        *first = (*first).min(seq);
        m
    });
    for text in &missing {
        let (producer, seq) = parse(text.as_bytes());
        assert!(
            first_survivor
                .get(&producer)
                .is_none_or(|&first| seq < first),
            "{text} is lost from the middle of the queue"
        );
    }
}

/// Messages a taker gets at most at once.
const TAKE_MAX: u32 = 16;

/// A consumer taking messages for good from `manager`'s queue, up to [`TAKE_MAX`] a get, as
/// fast as it can, until the manager dies. Counts what it took in `taken` and stamps each
/// answer in `answered_at` (milliseconds since `since`); returns the bodies of the answered
/// gets.
fn start_taker(
    manager: &Manager,
    taken: &Arc<AtomicU64>,
    (since, answered_at): (Instant, &Arc<AtomicU64>),
) -> std::thread::JoinHandle<Vec<String>> {
    let client = manager.client();
    let (taken, answered_at) = (Arc::clone(taken), Arc::clone(answered_at));
    std::thread::spawn(move || {
        let mut bodies = Vec::new();
        let options = GetOptions {
            max: TAKE_MAX,
            timeout: Duration::from_millis(50),
            ..Default::default()
        };
        // The get in flight when the manager dies ends in an error.
        while let Ok(batch) = client.get_with(QUEUE, options.clone()) {
            answered_at.store(since.elapsed().as_millis() as u64, Ordering::SeqCst);
            taken.fetch_add(batch.len() as u64, Ordering::SeqCst);
            bodies.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
        }
        bodies
    })
}

#[test]
fn acknowledged_puts_survive_kill_9_exactly_once_and_in_order() {
    let mut manager = Manager::builder().arg("--sync").arg("always").start();
    let mut ledger = Ledger::default();

    // Round 1: kill -9 in the middle of four put streams.
    put_until_killed(&mut manager, (0, 1), &mut ledger, &|| true);
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
    let taken_before = client
        .get_with(
            QUEUE,
            GetOptions {
                max: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(taken_before.len(), 100);
    ledger.taken.extend(
        taken_before
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

    // Round 2: new producers and a consumer taking for good, and another kill -9 while the
    // leases are held, as gets are answered: none answered may come back.
    let taken = Arc::new(AtomicU64::new(0));
    let (since, answered_at) = (Instant::now(), Arc::new(AtomicU64::new(0)));
    let taker = start_taker(&manager, &taken, (since, &answered_at));
    let answering = || {
        let last = Duration::from_millis(answered_at.load(Ordering::SeqCst));
        taken.load(Ordering::SeqCst) >= 100 && since.elapsed() < last + Duration::from_millis(200)
    };
    put_until_killed(&mut manager, (PRODUCERS, 1), &mut ledger, &answering);
    ledger.taken.extend(taker.join().unwrap());
    ledger.unanswered = TAKE_MAX as usize;
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
fn a_batch_survives_kill_9_whole_or_not_at_all() {
    const BATCH: u64 = 16;
    /// Kills at most, to land one between a batch's write and its answer.
    const KILLS_MAX: u32 = 8;
    let mut manager = Manager::start();
    for kill in 0..KILLS_MAX {
        let mut ledger = Ledger::default();
        put_until_killed(
            &mut manager,
            (kill * PRODUCERS, BATCH),
            &mut ledger,
            &|| true,
        );
        manager.restart();
        let survivors = support::drain(&manager.client(), QUEUE);
        check(&survivors, &ledger);
        // The batches in flight at the kill (one per producer): all of one or none of it.
        let mut in_flight_stored: BTreeMap<u32, u64> = BTreeMap::new();
        for message in &survivors {
            let (producer, seq) = parse(&message.body);
            if ledger.in_flight.contains(&(producer, seq)) {
                *in_flight_stored.entry(producer).or_default() += 1;
            }
        }
        for (&producer, &stored) in &in_flight_stored {
            assert_eq!(stored, BATCH, "producer {producer}'s last batch is torn");
        }
        // Only a batch that was in flight and stored anyway shows the kill came after it was
        // written: until one did, the kill proved nothing about tearing.
        if !in_flight_stored.is_empty() {
            eprintln!(
                "kill {}: in-flight batches stored whole: {in_flight_stored:?}",
                kill + 1
            );
            return;
        }
    }
    panic!("in {KILLS_MAX} kills, no batch in flight had been stored: none landed after a write");
}

#[test]
fn a_second_manager_on_the_same_data_directory_is_refused() {
    let manager = Manager::start();
    let socket = manager.scratch().join("second.sock");
    let mut second = std::process::Command::new(support::qmgr_path())
        .arg("run")
        .arg("--data-dir")
        .arg(manager.data_dir())
        .arg("--socket")
        .arg(&socket)
        .current_dir(manager.scratch())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // If it were not refused it would run: give up after a deadline rather than hang.
    let exited = support::wait_exit(&mut second, "the second manager", SOON);
    let second = support::Run::from(second.wait_with_output().unwrap());
    assert!(!exited.success());
    second.expect_code(1);
    assert!(
        second.stderr.contains("is in use by another manager"),
        "{}",
        second.stderr
    );
    // The first one is unaffected.
    let client = manager.client();
    client.put("still", Message::new("mine")).unwrap();
    assert_eq!(client.poll("still").unwrap().unwrap().body, b"mine");
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
    wait_until("both gets are waiting", SOON, || {
        manager.status()["gets_waiting"] == 2
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
    // After the note that it waits for a put to create its queue.
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("error: ")),
        "{stderr}"
    );
    assert!(manager.log().contains("stopped"), "{}", manager.log());

    manager.restart();
    let client = manager.client();
    let kept = support::drain(&client, "kept");
    assert_eq!(kept.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
}

#[test]
fn a_client_carries_on_after_its_manager_restarts() {
    let mut manager = Manager::start();
    let client = manager.client();
    client.put("q", Message::new("before")).expect("put");
    manager.kill9();
    // The connection is gone: a call now fails cleanly, it does not hang.
    assert!(client.put("q", Message::new("while down")).is_err());
    manager.restart();
    // The next call reconnects on its own.
    client
        .put("q", Message::new("after"))
        .expect("put after the restart");
    let texts: Vec<String> = drain(&client, "q")
        .iter()
        .map(|m| m.text().expect("text").to_owned())
        .collect();
    assert_eq!(texts, ["before", "after"]);
}

/// Puts `body` padded by a 2 KB header: a 1 MiB segment holds a few hundred of these.
fn put_padded(client: &hopmq::blocking::Client, body: String) -> Result<(), hopmq::ClientError> {
    client
        .put(QUEUE, Message::new(body).header("pad", "p".repeat(2000)))
        .map(|_| ())
}

/// The highest segment id in `manager`'s journal, and whether a dead segment waits there as a
/// spare to be recycled.
fn newest_segment(manager: &Manager) -> (u64, bool) {
    let mut newest = 0;
    let mut spare = false;
    for entry in std::fs::read_dir(manager.data_dir().join("journal")).unwrap() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().into_string().unwrap();
        spare |= name.ends_with(".seg.spare");
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|id| id.parse::<u64>().ok())
        {
            newest = newest.max(id);
        }
    }
    (newest, spare)
}

#[test]
fn kill_9_while_dead_segments_are_recycled_loses_and_takes_back_nothing() {
    // Small segments, drained as fast as they fill: new segments are recycled dead ones, so
    // each restart reads segments holding a dead segment's bytes past their data.
    let mut manager = Manager::builder()
        .arg("--sync")
        .arg("always")
        .env("QMGR_SEGMENT_BYTES", 1024 * 1024)
        .start();
    let mut ledger = Ledger::default();
    for round in 0..2u32 {
        let acked_total = Arc::new(AtomicU64::new(0));
        let producer = {
            let client = manager.client();
            let acked_total = Arc::clone(&acked_total);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while put_padded(&client, body(round, seq)).is_ok() {
                    seq += 1;
                    acked_total.fetch_add(1, Ordering::SeqCst);
                }
                seq
            })
        };
        let consumer = {
            let client = manager.client();
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                loop {
                    let options = GetOptions {
                        max: 32,
                        timeout: Duration::from_millis(50),
                        lease: Some(Duration::from_secs(600)),
                        ..Default::default()
                    };
                    let Ok(leased) = client.get_with(QUEUE, options) else {
                        return (taken, Vec::new());
                    };
                    let bodies: Vec<String> = leased
                        .iter()
                        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                        .collect();
                    let leases = leased.iter().filter_map(|m| m.lease).collect();
                    if client.ack(leases).is_err() {
                        return (taken, bodies);
                    }
                    taken.extend(bodies);
                }
            })
        };
        let (start, _) = newest_segment(&manager);
        let mut saw_spare = false;
        wait_until(
            "segments roll, die and are recycled under the stream",
            Duration::from_secs(120),
            || {
                let (newest, spare) = newest_segment(&manager);
                saw_spare |= spare;
                saw_spare && newest >= start + 6 && acked_total.load(Ordering::SeqCst) >= 2000
            },
        );
        manager.kill9();
        let acked = producer.join().unwrap();
        ledger.acked.insert(round, acked);
        ledger.in_flight.insert((round, acked));
        let (taken, in_flight) = consumer.join().unwrap();
        ledger.taken.extend(taken);
        ledger.maybe_taken.extend(in_flight);
        manager.restart();
        let survivors = drain(&manager.client(), QUEUE);
        check(&survivors, &ledger);
        // Taken for good now: the next round's crash must not bring them back either.
        ledger.taken.extend(
            survivors
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
        );
    }
}

#[test]
fn a_sigterm_as_soon_as_the_manager_listens_is_a_clean_stop() {
    // The signal handlers used to be installed after the socket was bound and the QUIC
    // endpoint started, so a SIGTERM in between killed a manager with links outright (about
    // one start in seven here; ten starts catch that four times in five).
    let mut network = Network::prepare(&Spec::line(&["alpha", "bravo"], "orders"));
    // With its neighbour up, a stop does not wait out a dial to nobody (up to a second).
    network.start_manager("bravo");
    network.start_manager("alpha");
    let alpha = network.manager("alpha");
    for start in 1..=10 {
        if start > 1 {
            alpha.restart();
        }
        let status = alpha.terminate();
        let log = alpha.log();
        assert!(
            status.success() && log.matches("INFO qmgr::daemon: stopped").count() == start,
            "start {start}: qmgr run exited with {status}:\n{log}"
        );
    }
}
