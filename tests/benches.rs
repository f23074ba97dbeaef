//! Every `qmgr bench` subcommand, run briefly as CI can afford: a bench that breaks fails here,
//! and so does one whose run lost, duplicated, reordered or got a message it never put. Tiny
//! counts: these runs prove the benches work and check what they carry; their figures mean
//! nothing and are not looked at.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use support::{Manager, Run, qmgr};

/// What a bench's `verify:` line says.
#[derive(Debug, PartialEq, Eq)]
struct Verified {
    sent: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    unexpected: u64,
}

/// Runs `qmgr bench ARGS...`, and panics with its output unless it succeeds.
#[track_caller]
fn bench(args: &[&str]) -> Run {
    let args: Vec<&str> = std::iter::once("bench")
        .chain(args.iter().copied())
        .collect();
    let run = qmgr(&args);
    run.expect_code(0);
    run
}

/// The figure after `word ` in `line`.
#[track_caller]
fn figure(line: &str, word: &str) -> u64 {
    let at = line
        .find(&format!("{word} "))
        .unwrap_or_else(|| panic!("no {word:?} in: {line}"));
    line[at + word.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure after {word:?} in: {line}"))
}

/// The run's `verify:` line, read.
#[track_caller]
fn verified(run: &Run) -> Verified {
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("verify: "))
        .unwrap_or_else(|| panic!("no verify line:\n{}\n{}", run.stdout, run.stderr));
    Verified {
        sent: line["verify: ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count sent in: {line}")),
        lost: figure(line, "lost"),
        duplicated: figure(line, "duplicated"),
        reordered: figure(line, "reordered"),
        unexpected: figure(line, "unexpected"),
    }
}

/// Panics unless the run sent some messages and got none lost, twice, or not put.
#[track_caller]
fn assert_exactly_once(run: &Run) {
    let verified = verified(run);
    assert!(verified.sent > 0, "{}", run.stdout);
    assert_eq!(
        (verified.lost, verified.duplicated, verified.unexpected),
        (0, 0, 0),
        "{}",
        run.stdout
    );
}

/// Panics unless the run sent `sent` messages and got each exactly once, in order.
#[track_caller]
fn assert_exact(run: &Run, sent: u64) {
    let expected = Verified {
        sent,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        unexpected: 0,
    };
    assert_eq!(verified(run), expected, "{}", run.stdout);
    assert!(!run.stdout.contains("VERIFY FAILED"), "{}", run.stdout);
}

/// The latency samples a put→get bench reported.
#[track_caller]
fn samples(run: &Run) -> u64 {
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("latency put->get:"))
        .unwrap_or_else(|| panic!("no latency line:\n{}", run.stdout));
    // "... (N samples)"
    line.rfind('(')
        .and_then(|at| line[at + 1..].split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no samples in: {line}"))
}

#[test]
fn local_gets_every_message_once_in_order_and_samples_each() {
    let run = bench(&[
        "local",
        "--count",
        "3000",
        "--size",
        "64",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--batch",
        "4",
        "--window",
        "4",
    ]);
    assert_exact(&run, 3000);
    // Every message's latency is in the histogram, none left behind with a consumer.
    assert_eq!(samples(&run), 3000, "{}", run.stdout);
    assert!(run.stdout.contains(", sync always"), "{}", run.stdout);
}

#[test]
fn local_with_single_gets_in_flight_gets_every_message_once() {
    let run = bench(&[
        "local",
        "--count",
        "3000",
        "--size",
        "64",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--single-gets",
        "32",
    ]);
    // Gets sent from tasks of their own take messages in no set order: order is not checked.
    assert_exact(&run, 3000);
    assert_eq!(samples(&run), 3000, "{}", run.stdout);
    assert!(
        run.stdout.contains("32 single gets in flight"),
        "{}",
        run.stdout
    );
}

#[test]
fn local_paced_samples_every_message() {
    let run = bench(&[
        "local",
        "--count",
        "300",
        "--size",
        "64",
        "--rate",
        "1000",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--window",
        "1",
    ]);
    assert_exact(&run, 300);
    assert_eq!(samples(&run), 300, "{}", run.stdout);
}

#[test]
fn local_without_sync_is_labelled_not_durable() {
    let run = bench(&["local", "--count", "500", "--size", "64", "--sync", "never"]);
    assert_exact(&run, 500);
    assert!(
        run.stdout.contains("sync never (NOT DURABLE"),
        "{}",
        run.stdout
    );
}

#[test]
fn local_fill_only_says_it_verified_nothing() {
    let run = bench(&[
        "local",
        "--count",
        "500",
        "--size",
        "64",
        "--consumers",
        "0",
    ]);
    assert!(
        run.stdout.contains("not verified: no consumers"),
        "{}",
        run.stdout
    );
}

#[test]
fn local_measures_a_given_manager_only_if_it_syncs_always() {
    let never = Manager::builder().arg("--sync").arg("never").start();
    let socket = never.socket().to_str().unwrap().to_owned();
    let args = [
        "bench", "local", "--socket", &socket, "--count", "200", "--size", "64",
    ];
    let refused = qmgr(&args);
    refused.expect_code(1);
    assert!(
        refused
            .stderr
            .contains("reports sync = \"never\", not \"always\""),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains("throughput"), "{}", refused.stdout);
    // Non-persistent messages claim no durability.
    let mut non_persistent = args.to_vec();
    non_persistent.push("--non-persistent");
    let run = qmgr(&non_persistent);
    run.expect_code(0);
    assert_exact(&run, 200);

    let always = Manager::start();
    let socket = always.socket().to_str().unwrap().to_owned();
    let run = qmgr(&[
        "bench", "local", "--socket", &socket, "--count", "200", "--size", "64",
    ]);
    run.expect_code(0);
    assert_exact(&run, 200);
    // A second run on the same queue: nothing of the first is left to be taken for its own.
    let run = qmgr(&[
        "bench", "local", "--socket", &socket, "--count", "200", "--size", "64",
    ]);
    run.expect_code(0);
    assert_exact(&run, 200);
}

#[test]
fn a_message_the_run_never_put_fails_it() {
    // Left in the queue before the run: the bench gets it, and must not count it as its own.
    let manager = Manager::start();
    manager.cli(&["put", "bench", "left over"]).expect_code(0);
    let socket = manager.socket().to_str().unwrap().to_owned();
    let run = qmgr(&[
        "bench", "local", "--socket", &socket, "--count", "100", "--size", "64",
    ]);
    run.expect_code(1);
    let verified = verified(&run);
    assert_eq!(
        (verified.sent, verified.unexpected),
        (100, 1),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("VERIFY FAILED: 0 lost, 0 duplicated, 0 reordered, 1 unexpected"),
        "{}",
        run.stdout
    );
}

#[test]
fn forward_gets_every_message_once_in_order() {
    let run = bench(&[
        "forward",
        "--hops",
        "1",
        "--count",
        "2000",
        "--size",
        "64",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--batch",
        "8",
        "--window",
        "4",
    ]);
    assert_exact(&run, 2000);
    assert_eq!(samples(&run), 2000, "{}", run.stdout);
    assert!(run.stdout.contains(", sync always"), "{}", run.stdout);
}

#[test]
fn forward_paced_across_two_hops() {
    let run = bench(&[
        "forward",
        "--hops",
        "2",
        "--count",
        "200",
        "--size",
        "64",
        "--rate",
        "500",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--batch",
        "1",
        "--window",
        "1",
        "--console",
        "watched",
    ]);
    assert_exact(&run, 200);
    assert_eq!(samples(&run), 200, "{}", run.stdout);
    // Each of the 3 managers served its console, and a page open on each read it.
    assert!(
        run.stdout
            .contains("on 3 managers during the run, every one 200 OK"),
        "{}",
        run.stdout
    );
}

/// Panics unless every subscription of a `bench pubsub` run got `sent` publications, each
/// once and in order, and each of alpha's links carried one copy per publication.
#[track_caller]
fn assert_pubsub_exact(run: &Run, sent: u64) {
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.contains(": verify: ") && !line.starts_with("queue:"))
        .collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    for line in lines {
        let verify = &line[line.find("verify: ").unwrap_or(0)..];
        let counts = [
            figure(verify, "verify:"),
            figure(verify, "lost"),
            figure(verify, "duplicated"),
            figure(verify, "reordered"),
            figure(verify, "unexpected"),
        ];
        assert_eq!(counts, [sent, 0, 0, 0, 0], "{}", run.stdout);
    }
    for neighbour in ["bravo", "charlie"] {
        let link = format!("link alpha->{neighbour}: 1.000 copies");
        assert!(run.stdout.contains(&link), "{}", run.stdout);
    }
}

#[test]
fn pubsub_delivers_each_publication_once_per_subscription_one_copy_per_link() {
    let args = [
        "pubsub",
        "--count",
        "2000",
        "--size",
        "64",
        "--producers",
        "2",
    ];
    assert_pubsub_exact(&bench(&args), 2000);
    let transient: Vec<&str> = args.iter().copied().chain(["--transient"]).collect();
    assert_pubsub_exact(&bench(&transient), 2000);
    // Non-persistent: nothing journaled, and still one copy per link; 2,000 small ones are
    // far below any buffer, so none is missed.
    let volatile: Vec<&str> = transient
        .iter()
        .copied()
        .chain(["--non-persistent"])
        .collect();
    let run = bench(&volatile);
    assert!(run.stdout.contains("non-persistent"), "{}", run.stdout);
    assert_pubsub_exact(&run, 2000);
}

#[test]
fn pubsub_paced_compares_with_a_queue_message() {
    let run = bench(&[
        "pubsub",
        "--count",
        "200",
        "--size",
        "64",
        "--rate",
        "500",
        "--producers",
        "1",
        "--batch",
        "1",
        "--compare-queue",
    ]);
    assert_pubsub_exact(&run, 200);
    assert!(
        run.stdout.contains("latency queue put->get"),
        "{}",
        run.stdout
    );
    let queue = run
        .stdout
        .lines()
        .find(|line| line.starts_with("queue: verify: "))
        .unwrap_or_else(|| panic!("no queue verify line:\n{}", run.stdout));
    assert_eq!(figure(queue, "lost"), 0, "{queue}");
}

#[test]
fn failover_loses_and_duplicates_nothing() {
    // Exit code 0 also says that traffic went via charlie while bravo was down.
    let run = bench(&[
        "failover",
        "--rate",
        "200",
        "--size",
        "64",
        "--warmup-secs",
        "1",
        "--down-secs",
        "3",
        "--after-secs",
        "1",
        "--dead-interval-ms",
        "1000",
    ]);
    // The bench itself fails a run that reorders.
    assert_exactly_once(&run);
    assert!(run.stdout.contains("reordered"), "{}", run.stdout);
}

#[test]
fn failover_with_a_relay_lost_for_good_strands_nothing() {
    // Bravo never returns: everything it held or had in flight comes from alpha's custody.
    let run = bench(&[
        "failover",
        "--for-good",
        "--rate",
        "500",
        "--size",
        "64",
        "--warmup-secs",
        "1",
        "--down-secs",
        "1",
        "--after-secs",
        "1",
        "--dead-interval-ms",
        "1000",
    ]);
    assert_exactly_once(&run);
    assert!(
        run.stdout.contains("stranded with bravo (never back)"),
        "{}",
        run.stdout
    );
}

#[test]
fn transport_gets_every_message_once_in_order() {
    let run = bench(&[
        "transport",
        "--hops",
        "2",
        "--count",
        "3000",
        "--size",
        "64",
    ]);
    assert_exact(&run, 3000);
}

#[test]
fn routes_runs() {
    let run = bench(&[
        "routes",
        "--managers",
        "30",
        "--links",
        "60",
        "--all-pairs-managers",
        "10",
        "--all-pairs-links",
        "20",
        "--runs",
        "3",
    ]);
    assert!(!run.stdout.is_empty());
}

#[test]
fn flooding_runs() {
    let run = bench(&["flooding", "--managers", "10", "--failures", "2"]);
    assert!(!run.stdout.is_empty());
}

#[test]
fn request_answers_every_request_once_at_zero_and_two_hops() {
    for hops in ["0", "2"] {
        let run = bench(&["request", "--hops", hops, "--count", "400", "--size", "64"]);
        let verify = run
            .stdout
            .lines()
            .find(|l| l.starts_with("verify:"))
            .unwrap_or_else(|| panic!("no verify line: {}", run.stdout));
        assert_eq!(
            verify, "verify: 400 replies, 0 wrong, 0 missing, 0 in the requesters' DLQ",
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("400 served"), "{}", run.stdout);
    }
    let run = bench(&["request", "--count", "100", "--rate", "500", "--size", "64"]);
    assert!(run.stdout.contains("paced at 500/s"), "{}", run.stdout);
    assert!(
        run.stdout.contains("latency request->reply: p50"),
        "{}",
        run.stdout
    );
}

#[test]
fn wan_measures_one_point_through_an_impaired_link() {
    let run = bench(&[
        "wan",
        "--rtt",
        "20",
        "--loss",
        "2",
        "--jitter",
        "2",
        "--reorder",
        "1",
        "--bandwidth",
        "50",
        "--duration",
        "0.5",
        "--count",
        "400",
        "--size",
        "64",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--batch",
        "4",
        "--ahead",
        "128",
        "--rate",
        "100",
        "--latency-duration",
        "0.5",
    ]);
    // One row, under the header: the point's round trip and loss first.
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.split_whitespace().take(2).eq(["20", "2"]))
        .collect();
    assert_eq!(rows.len(), 1, "{}", run.stdout);
    // Both phases checked every message: none lost, twice, out of order or not put.
    let verified: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.contains(" verify: "))
        .collect();
    assert_eq!(verified.len(), 2, "{}", run.stdout);
    for line in verified {
        for word in ["lost", "duplicated", "reordered", "unexpected"] {
            assert_eq!(figure(line, word), 0, "{line}");
        }
        assert!(figure(line, "verify:") > 0, "{line}");
    }
    assert!(!run.stdout.contains("VERIFY FAILED"), "{}", run.stdout);
}
