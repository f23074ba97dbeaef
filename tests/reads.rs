//! Reads (`get`, `poll`, `browse`, `watch`) never create a queue. A queue that does not
//! exist is named in an error (exit code 1) once a read has found nothing; a `get` waits for a
//! put to create it first. A queue the topology homes on another manager, and another
//! manager's `QUEUE@MANAGER`, are refused at once, naming where to read.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::io::{BufRead, BufReader};

use support::network::{Network, Spec};
use support::{Manager, SOON, wait_exit};

#[track_caller]
fn assert_no_queue(run: &support::Run, queue: &str) {
    run.expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("error: no queue `{queue}` on this manager")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("qmgr declare"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

#[test]
fn reading_a_queue_that_does_not_exist_says_so_and_creates_nothing() {
    let manager = Manager::start();
    assert_no_queue(&manager.cli(&["poll", "nothing"]), "nothing");
    assert_no_queue(&manager.cli(&["browse", "nothing"]), "nothing");
    let get = manager.cli(&["get", "nothing", "--timeout", "200ms"]);
    assert_no_queue(&get, "nothing");
    assert!(
        get.stderr
            .contains("waiting up to 200ms for a put to create it"),
        "{}",
        get.stderr
    );
    assert_eq!(manager.depth("nothing"), None, "a read made the queue");
    // An existing empty queue is no error: a get that times out prints nothing.
    manager.cli(&["declare", "empty"]).expect_code(0);
    let poll = manager.cli(&["poll", "empty"]);
    poll.expect_code(0);
    assert_eq!((poll.stdout.as_str(), poll.stderr.as_str()), ("", ""));
    manager.cli(&["browse", "empty"]).expect_code(0);
}

#[test]
fn a_get_waits_for_the_put_that_creates_its_queue() {
    let manager = Manager::start();
    let mut get = manager.spawn_cli(&["get", "later", "--timeout", "30s"]);
    let mut stderr = BufReader::new(get.stderr.take().unwrap());
    let mut note = String::new();
    stderr.read_line(&mut note).unwrap();
    assert!(
        note.contains("no queue `later` on this manager yet"),
        "{note}"
    );
    assert_eq!(manager.depth("later"), None);
    manager.cli(&["put", "later", "made it"]).expect_code(0);
    let status = wait_exit(&mut get, "the waiting get", SOON);
    assert!(status.success());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut get.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "made it\n");
}

#[test]
fn a_watch_of_a_queue_that_does_not_exist_creates_nothing() {
    let manager = Manager::start();
    let mut watch = manager.spawn_cli(&["watch", "news", "--count", "1"]);
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("the first put creates it"), "{line}");
    assert_eq!(manager.depth("news"), None);
    manager.cli(&["put", "news", "extra"]).expect_code(0);
    assert!(wait_exit(&mut watch, "the watch", SOON).success());
}

#[test]
fn reads_of_another_managers_queue_say_where_to_read() {
    // alpha alone of a topology that homes `orders` on delta.
    let spec = Spec {
        managers: vec!["alpha", "delta"],
        links: vec![],
        queues: vec![("orders", "delta")],
    };
    let mut network = Network::prepare(&spec);
    let alpha = network.start_manager("alpha");
    for args in [
        &["get", "orders", "--timeout", "30s"][..],
        &["poll", "orders"],
        &["browse", "orders"],
        &["watch", "orders"],
    ] {
        let run = alpha.cli(args);
        run.expect_code(1);
        assert!(
            run.stderr
                .contains("error: `orders` lives on delta; get it there"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let run = alpha.cli(&["get", "orders@delta"]);
    run.expect_code(1);
    assert!(run.stderr.contains("gets are local"), "{}", run.stderr);
    assert!(run.stderr.contains("delta's manager"), "{}", run.stderr);
    assert!(!run.stderr.contains("bad request"), "{}", run.stderr);
    assert_eq!(alpha.depth("orders"), None, "a read made a local `orders`");
    // The manager's own name is its own queue.
    alpha.cli(&["put", "replies@alpha", "here"]).expect_code(0);
    let run = alpha.cli(&["get", "replies@alpha"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "here\n");
}
