//! One manager's local queues as a user drives them with `qmgr put/get/poll/browse/watch/status`
//! and with the client library: bodies, every JSON field, order, priorities, expiry, limits,
//! errors and exit codes, blocking gets and notifications.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;

use support::{Manager, SOON, wait_exit, wait_until};

#[test]
fn put_then_get_prints_the_body() {
    let manager = Manager::start();
    let put = manager.cli(&["put", "greetings", "hello, world"]);
    put.expect_code(0);
    let id = put.stdout.trim();
    assert_eq!(id.len(), 32, "put prints the 32-hex-digit id: {id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");

    let get = manager.cli(&["get", "greetings", "--timeout", "5s"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "hello, world\n");
    // Taken for good.
    let again = manager.cli(&["poll", "greetings"]);
    again.expect_code(0);
    assert_eq!(again.stdout, "");
}

#[test]
fn get_json_shows_every_field() {
    let manager = Manager::builder().arg("--name").arg("alpha").start();
    let put = manager.cli(&[
        "put",
        "orders",
        "order 42",
        "-H",
        "customer=c-17",
        "-H",
        "region=eu=west",
        "--priority",
        "7",
        "--correlation-id",
        "req-1",
        "--reply-to",
        "replies@alpha",
    ]);
    put.expect_code(0);
    let get = manager.cli(&["get", "orders", "--json"]);
    get.expect_code(0);
    let lines = get.json_lines();
    assert_eq!(lines.len(), 1, "{}", get.stdout);
    let message = &lines[0];
    assert_eq!(message["id"], put.stdout.trim());
    assert_eq!(message["body"], "order 42");
    assert!(message.get("body_base64").is_none(), "{message}");
    assert_eq!(
        message["headers"],
        serde_json::json!({"customer": "c-17", "region": "eu=west"})
    );
    assert_eq!(message["priority"], 7);
    assert_eq!(message["correlation_id"], "req-1");
    assert_eq!(message["reply_to"], "replies@alpha");
    assert_eq!(message["origin"], "alpha");
    assert_eq!(message["delivery_count"], 1);
    let trace = message["trace"].as_array().unwrap();
    assert!(!trace.is_empty(), "{message}");
    assert_eq!(trace[0]["manager"], "alpha");
    assert!(trace[0]["at"].as_u64().unwrap() > 0, "{message}");
}

#[test]
fn a_binary_body_comes_back_as_base64() {
    let manager = Manager::start();
    let file = manager.scratch().join("body.bin");
    std::fs::write(&file, [0xff, 0x00, 0x80]).unwrap();
    manager
        .cli(&["put", "blobs", "--file", file.to_str().unwrap()])
        .expect_code(0);
    let get = manager.cli(&["get", "blobs", "--json"]);
    get.expect_code(0);
    let message = &get.json_lines()[0];
    assert_eq!(message["body_base64"], "/wCA");
    assert!(message.get("body").is_none(), "{message}");
}

#[test]
fn each_stdin_line_is_one_message_in_order() {
    let manager = Manager::start();
    let put = manager.cli_with_stdin(&["put", "lines"], b"one\ntwo\nthree\n");
    put.expect_code(0);
    assert!(
        put.stderr.contains("put 3 messages to lines"),
        "{}",
        put.stderr
    );
    assert_eq!(manager.depth("lines"), Some(3));
    let get = manager.cli(&["get", "lines", "--count", "10", "--timeout", "200ms"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "one\ntwo\nthree\n");
}

#[test]
fn get_and_poll_on_an_empty_queue_print_nothing_and_succeed() {
    let manager = Manager::start();
    manager.cli(&["declare", "empty"]).expect_code(0);
    let get = manager.cli(&["get", "empty", "--timeout", "200ms"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "");
    // poll has no timeout to give: it answers with what is there now.
    let poll = manager.cli(&["poll", "empty", "--json"]);
    poll.expect_code(0);
    assert_eq!(poll.stdout, "");
    manager.cli(&["put", "empty", "now"]).expect_code(0);
    let poll = manager.cli(&["poll", "empty"]);
    poll.expect_code(0);
    assert_eq!(poll.stdout, "now\n");
}

#[test]
fn browse_leaves_the_messages_and_status_shows_the_depth() {
    let manager = Manager::start();
    manager.cli(&["put", "shelf", "first"]).expect_code(0);
    manager.cli(&["put", "shelf", "second"]).expect_code(0);
    assert_eq!(manager.depth("shelf"), Some(2));

    let browse = manager.cli(&["browse", "shelf"]);
    browse.expect_code(0);
    assert_eq!(browse.stdout, "first\nsecond\n");
    let browse = manager.cli(&["browse", "shelf", "--json"]);
    assert_eq!(browse.json_lines().len(), 2);
    assert_eq!(manager.depth("shelf"), Some(2));

    let get = manager.cli(&["get", "shelf", "--count", "2"]);
    assert_eq!(get.stdout, "first\nsecond\n");
    assert_eq!(manager.depth("shelf"), Some(0));
}

#[test]
fn higher_priorities_come_first_and_each_priority_is_fifo() {
    let manager = Manager::start();
    for (body, priority) in [
        ("low-a", "0"),
        ("mid-a", "4"),
        ("high-a", "9"),
        ("low-b", "0"),
        ("mid-b", "4"),
        ("high-b", "9"),
    ] {
        manager
            .cli(&["put", "ranked", body, "--priority", priority])
            .expect_code(0);
    }
    let get = manager.cli(&["get", "ranked", "--count", "6", "--timeout", "1s"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "high-a\nhigh-b\nmid-a\nmid-b\nlow-a\nlow-b\n");
}

/// Many single puts in flight on one connection, each polled once when started and then left
/// to a task of a multi-threaded runtime (as an application keeping calls in flight does):
/// they are stored in the order they were started, even with far more in flight than the
/// client's writer takes at a time.
#[test]
fn single_puts_in_flight_are_stored_in_the_order_they_started() {
    const PUTS: usize = 3_000;
    let manager = Manager::start();
    let socket = manager.socket().to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = hopmq::Client::connect_to(&socket).await.unwrap();
        let mut calls = Vec::with_capacity(PUTS);
        for n in 0..PUTS {
            let client = client.clone();
            let mut put = Box::pin(async move {
                client
                    .put("in-order", hopmq::Message::new(format!("{n}")))
                    .await
            });
            // The first poll sends the request; the rest of the call runs anywhere. The answer
            // may even be back within that poll: the manager and the client's reader run on
            // other threads.
            let first = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(match put.as_mut().poll(cx) {
                    std::task::Poll::Ready(answer) => Some(answer),
                    std::task::Poll::Pending => None,
                })
            })
            .await;
            match first {
                Some(answer) => {
                    answer.unwrap();
                }
                None => calls.push(tokio::spawn(put)),
            }
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let mut got = Vec::with_capacity(PUTS);
        while got.len() < PUTS {
            let options = hopmq::GetOptions {
                max: 500,
                ..Default::default()
            };
            let messages = client.get_with("in-order", options).await.unwrap();
            assert!(!messages.is_empty(), "{} of {PUTS} got", got.len());
            got.extend(
                messages
                    .iter()
                    .map(|m| m.text().unwrap().parse::<usize>().unwrap()),
            );
        }
        let first_out_of_order = got.windows(2).position(|w| w[0] > w[1]);
        assert_eq!(first_out_of_order, None, "stored out of the order started");
    });
}

#[test]
fn an_expired_message_is_never_delivered() {
    let manager = Manager::start();
    manager
        .cli(&["put", "fresh", "ephemeral", "--ttl", "300ms"])
        .expect_code(0);
    manager.cli(&["put", "fresh", "durable"]).expect_code(0);
    // The manager sweeps expired messages on its maintenance tick; wait until it has.
    wait_until("the expired message is gone from the depth", SOON, || {
        manager.depth("fresh") == Some(1)
    });
    let browse = manager.cli(&["browse", "fresh"]);
    assert_eq!(browse.stdout, "durable\n");
    let get = manager.cli(&["get", "fresh", "--count", "2", "--timeout", "200ms"]);
    get.expect_code(0);
    assert_eq!(get.stdout, "durable\n");
}

#[test]
fn errors_exit_1_with_a_message_and_bad_usage_exits_2() {
    let manager = Manager::start();
    for (address, expected) in [
        ("not a queue!", "bad address `not a queue!`"),
        ("orders@nowhere", "cannot resolve address `orders@nowhere`"),
    ] {
        let run = manager.cli(&["put", address, "x"]);
        run.expect_code(1);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{}", run.stderr);
        assert_eq!(run.stdout, "");
    }
    let unreachable = support::qmgr(&["get", "q", "--socket", "/nonexistent/qmgr.sock"]);
    unreachable.expect_code(1);
    assert!(
        unreachable
            .stderr
            .contains("no manager is running at /nonexistent/qmgr.sock"),
        "{}",
        unreachable.stderr
    );

    for args in [
        &["put"][..],
        &["get", "q", "--timeout", "banana"],
        &["put", "q", "x", "--priority", "12"],
        &["put", "q", "x", "-H", "no-equals-sign"],
        &["frobnicate"],
    ] {
        manager.cli(args).expect_code(2);
    }
    // Nothing was stored by any of it.
    let queues = manager.status()["queues"].clone();
    for queue in queues.as_array().unwrap() {
        assert_eq!(queue["depth"], 0, "{queue}");
    }
}

#[test]
fn a_put_over_the_size_limit_fails_naming_the_limit() {
    let manager = Manager::builder()
        .env("QMGR_MAX_MESSAGE_BYTES", 1024)
        .start();
    let big = "x".repeat(2000);
    let run = manager.cli(&["put", "sized", &big]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("message of 2000 bytes exceeds the limit of 1024 bytes (max_message_bytes)"),
        "{}",
        run.stderr
    );
    assert_eq!(manager.depth("sized").unwrap_or(0), 0);
    manager
        .cli(&["put", "sized", &"y".repeat(1024)])
        .expect_code(0);
    assert_eq!(manager.depth("sized"), Some(1));
}

#[test]
fn a_blocked_get_returns_as_soon_as_another_client_puts() {
    let manager = Manager::start();
    let mut get = manager.spawn_cli(&["get", "later", "--timeout", "60s"]);
    // A get on an undeclared queue creates nothing: it waits for a put to create it.
    wait_until("the get is waiting", SOON, || {
        manager.status()["gets_waiting"] == 1
    });
    assert_eq!(manager.depth("later"), None);
    manager
        .client()
        .put("later", hopmq::Message::new("wake up"))
        .unwrap();
    // Well before the get's own 60 s timeout.
    let status = wait_exit(&mut get, "the blocked get", SOON);
    let output = get.wait_with_output().unwrap();
    assert!(status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "wake up\n");
}

#[test]
fn watch_prints_each_message_put_and_leaves_it_in_the_queue() {
    let manager = Manager::start();
    let mut watch = manager.spawn_cli(&["watch", "events", "--count", "3", "--json"]);
    let stderr = watch.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = line_tx.send(line.unwrap_or_default());
        }
    });
    let first = line_rx
        .recv_timeout(SOON)
        .expect("watch says it is watching");
    assert!(first.starts_with("watching events"), "{first}");
    for body in ["e1", "e2", "e3"] {
        manager.cli(&["put", "events", body]).expect_code(0);
    }
    let status = wait_exit(&mut watch, "watch --count 3", SOON);
    let output = watch.wait_with_output().unwrap();
    assert!(status.success(), "{output:?}");
    let bodies: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["body"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(bodies, ["e1", "e2", "e3"]);
    assert_eq!(manager.depth("events"), Some(3));
}

#[test]
fn a_notify_handler_runs_exactly_once_per_put() {
    let manager = Manager::start();
    let client = manager.client();
    let (seen_tx, seen_rx) = mpsc::channel();
    let handle = client
        .notify("bell", move |message| {
            let _ = seen_tx.send(String::from_utf8_lossy(&message.body).into_owned());
        })
        .unwrap();
    let producer = manager.client();
    for n in 0..20 {
        producer
            .put("bell", hopmq::Message::new(format!("ring-{n}")))
            .unwrap();
    }
    // A last message after the others: events come in put order on one connection, so if a
    // message were notified twice the duplicate would show up before this one.
    producer.put("bell", hopmq::Message::new("last")).unwrap();
    let mut seen = Vec::new();
    loop {
        let body = seen_rx
            .recv_timeout(SOON)
            .unwrap_or_else(|_| panic!("a notification; got only {seen:?}"));
        if body == "last" {
            break;
        }
        seen.push(body);
    }
    let expected: Vec<String> = (0..20).map(|n| format!("ring-{n}")).collect();
    assert_eq!(seen, expected);
    handle.cancel().unwrap();
    assert_eq!(manager.depth("bell"), Some(21));
}

/// Gets `count` messages from `queue` with `max: 10`, checking that each reply carries one or
/// two of them (32 MiB of records at most, and these are 12 MiB each), in put order.
fn get_in_replies_of_two(
    client: &hopmq::blocking::Client,
    queue: &str,
    count: usize,
) -> Vec<hopmq::Message> {
    let mut got = Vec::new();
    while got.len() < count {
        let batch = client
            .get_with(
                queue,
                hopmq::client::GetOptions {
                    max: 10,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            (1..=2).contains(&batch.len()),
            "one reply carries at most 32 MiB of records; got {} messages",
            batch.len()
        );
        got.extend(batch);
    }
    got
}

#[test]
fn a_get_or_browse_of_more_than_one_frame_holds_returns_what_fits_and_loses_nothing() {
    let manager = Manager::start();
    let client = manager.client();
    // 72 MiB in all, past the 64 MiB a reply frame may carry.
    const BODY_BYTES: usize = 12 * 1024 * 1024;
    for n in 0..6u8 {
        client
            .put("large", hopmq::Message::new(vec![n; BODY_BYTES]))
            .unwrap();
    }
    let browsed = client.browse("large", 10).unwrap();
    assert_eq!(browsed.len(), 2, "a browse is bounded the same way");
    let got = get_in_replies_of_two(&client, "large", 6);
    assert!(got.iter().all(|m| m.body.len() == BODY_BYTES));
    let order: Vec<u8> = got.iter().map(|m| m.body[0]).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    assert_eq!(manager.depth("large"), Some(0));
}

#[test]
fn messages_with_large_headers_are_got_and_browsed_a_frame_at_a_time() {
    let manager = Manager::start();
    let client = manager.client();
    // Small bodies, 72 MiB of headers in all: the reply budget counts whole records.
    const HEADER_BYTES: usize = 12 * 1024 * 1024;
    for n in 0..6u8 {
        let value = char::from(b'a' + n).to_string().repeat(HEADER_BYTES);
        client
            .put("headers", hopmq::Message::new(vec![n]).header("big", value))
            .unwrap();
    }
    let browsed = client.browse("headers", 10).unwrap();
    assert_eq!(browsed.len(), 2, "a browse stops at the reply's budget");
    let got = get_in_replies_of_two(&client, "headers", 6);
    for (n, message) in (0..6u8).zip(&got) {
        assert_eq!(message.body, [n]);
        assert_eq!(message.headers["big"].len(), HEADER_BYTES);
        assert!(message.headers["big"].starts_with(char::from(b'a' + n)));
    }
    assert_eq!(manager.depth("headers"), Some(0));
}

#[test]
fn a_non_persistent_message_skips_the_journal_and_is_lost_when_the_manager_stops() {
    let mut manager = Manager::start();
    let commits = || manager.status()["store"]["commits"].as_u64().unwrap();
    manager.cli(&["put", "notes", "kept"]).expect_code(0);
    let before = commits();
    manager
        .cli(&["put", "notes", "fleeting", "--non-persistent"])
        .expect_code(0);
    assert_eq!(commits(), before, "a non-persistent put writes nothing");
    manager.cli(&["put", "notes", "kept too"]).expect_code(0);
    assert!(commits() > before, "a persistent put is a commit");
    // Delivered like any other while the manager runs, and marked as what it is.
    let browse = manager.cli(&["browse", "notes", "--json"]);
    let listed = browse.json_lines();
    let persistent: Vec<_> = listed.iter().map(|m| m["persistent"].clone()).collect();
    assert_eq!(persistent, [true, false, true], "{}", browse.stdout);
    // Even a clean stop loses it.
    manager.terminate();
    manager.restart();
    let browse = manager.cli(&["browse", "notes"]);
    browse.expect_code(0);
    assert_eq!(browse.stdout, "kept\nkept too\n");
}

#[test]
fn the_cli_finds_the_manager_through_hopmq_socket() {
    let manager = Manager::start();
    // No `--socket`: the variable names the socket.
    let put = std::process::Command::new(support::qmgr_path())
        .args(["put", "mailbox", "found you"])
        .env("HOPMQ_SOCKET", manager.socket())
        .current_dir(manager.scratch())
        .output()
        .unwrap();
    support::Run::from(put).expect_code(0);
    assert_eq!(manager.depth("mailbox"), Some(1));
}
