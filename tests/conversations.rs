//! Request/reply with real managers: requests across three hops answered exactly once through
//! the `kill -9` of the server's manager, a request that times out and whose late reply is
//! dead-lettered with why (as is one for a client that went away), two servers sharing a
//! queue where one dies mid-request, the errors of a reply that cannot be made, and a
//! multicast request gathering its subscribers' replies.

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use hopmq::{ApiError, ClientError, Message};
use support::network::{Network, Spec};
use support::{Manager, SOON, drain, wait_exit, wait_until};

const LEASE: Duration = Duration::from_secs(30);
const REASON: &str = "hopmq.dead_letter_reason";

/// The one message the dead-letter queue of `manager` holds, taken once it is there (a late
/// reply is dead-lettered by a write of its own after the one that stored it).
#[track_caller]
fn dead_letter(manager: &Manager) -> Message {
    wait_until("a dead letter", SOON, || manager.depth("DLQ") == Some(1));
    let mut dead = drain(&manager.client(), "DLQ");
    assert_eq!(dead.len(), 1, "{dead:?}");
    dead.remove(0)
}

/// Serves `queue` on `socket` until `stop`: each request leased, answered after `pace` with
/// `re: BODY` by `reply` (reply and ack in one write). Rides out its manager's restarts: a
/// failed call is tried again on a new connection.
fn serve(
    socket: std::path::PathBuf,
    queue: &'static str,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut answered = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(client) = hopmq::blocking::Client::connect_to(&socket) else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let request = match client.get_leased(queue, Duration::from_millis(200), LEASE) {
                Ok(Some(request)) => request,
                Ok(None) => continue,
                Err(_) => break,
            };
            let body = format!("re: {}", request.text().unwrap_or_default());
            thread::sleep(pace);
            if client.reply(&request, Message::new(body)).is_err() {
                break;
            }
            answered += 1;
        }
    }
    answered
}

#[test]
fn requests_across_three_hops_are_answered_exactly_once_through_a_kill_of_the_servers_manager() {
    let spec = Spec::line(&["alpha", "bravo", "charlie", "delta"], "service");
    let mut network = Network::start(&spec);
    network.wait_link_up("alpha", "bravo");
    network.wait_link_up("charlie", "delta");
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let socket = network.manager("delta").socket().to_owned();
        let stop = Arc::clone(&stop);
        // Slow enough that delta is killed with requests leased, queued and on their way.
        thread::spawn(move || serve(socket, "service", Duration::from_millis(10), stop))
    };

    // 60 requests outstanding at once on one client (deferred synchronous: each future is
    // held and collected later), with delta killed once the first replies came back.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = network.manager("alpha").socket().to_owned();
    let answered = Arc::new(AtomicUsize::new(0));
    let requests = {
        let answered = Arc::clone(&answered);
        runtime.spawn(async move {
            let client = hopmq::Client::connect_to(&socket).await.unwrap();
            let mut calls = Vec::new();
            for n in 0..60 {
                let client = client.clone();
                let answered = Arc::clone(&answered);
                calls.push(tokio::spawn(async move {
                    let question = Message::new(format!("q{n}"));
                    let reply = client.request("service", question, 4 * SOON).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                    (n, reply)
                }));
            }
            let mut replies = BTreeMap::new();
            for call in calls {
                let (n, reply) = call.await.unwrap();
                replies.insert(n, reply);
            }
            replies
        })
    };
    wait_until("the first replies", SOON, || {
        answered.load(Ordering::Relaxed) >= 5
    });
    let delta = network.manager("delta");
    delta.kill9();
    assert!(answered.load(Ordering::Relaxed) < 30, "killed mid-stream");
    delta.restart();
    let replies = runtime.block_on(requests).unwrap();
    for (n, reply) in &replies {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("request q{n}: {e}"));
        assert_eq!(reply.text(), Some(format!("re: q{n}").as_str()));
        assert!(reply.correlation_id.is_some(), "q{n}: {reply:?}");
        assert_eq!(reply.origin, "delta");
    }
    stop.store(true, Ordering::Relaxed);
    let served = server.join().unwrap();
    assert!(served >= 60, "every request was served ({served})");
    // No reply came twice: a second one would have found no request waiting and been
    // dead-lettered where the requests came from; none is left unanswered either.
    network.wait_drained();
    let alpha = network.manager("alpha").client();
    assert!(drain(&alpha, "DLQ").is_empty(), "a reply came twice");
    assert_eq!(network.manager("delta").depth("service"), Some(0));
}

#[test]
fn a_late_reply_is_dead_lettered_with_why_never_delivered() {
    let manager = Manager::start();
    let requester = manager.client();
    let server = manager.client();

    let waited = requester
        .request("slow", Message::new("q1"), Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(waited, ClientError::NoReply(_)), "{waited}");
    let request = server.get_leased("slow", SOON, LEASE).unwrap().unwrap();
    let reply_to = request.reply_to.clone().unwrap();
    assert!(reply_to.starts_with("hopmq.reply."), "{reply_to}");
    server.reply(&request, Message::new("late 1")).unwrap();
    let dead = dead_letter(&manager);
    assert_eq!(dead.text(), Some("late 1"));
    assert_eq!(dead.correlation_id, request.correlation_id);
    assert!(
        dead.headers[REASON].contains("no request waits"),
        "{:?}",
        dead.headers
    );
    // The request was acknowledged with its reply.
    assert_eq!(manager.depth("slow"), Some(0));
    // The same client's next request is answered in time, through the same reply queue.
    let answering = {
        let socket = manager.socket().to_owned();
        thread::spawn(move || {
            let server = hopmq::blocking::Client::connect_to(&socket).unwrap();
            let request = server.get_leased("slow", SOON, LEASE).unwrap().unwrap();
            server.reply(&request, Message::new("in time")).unwrap();
            request
        })
    };
    let reply = requester.request("slow", Message::new("q2"), SOON).unwrap();
    let request = answering.join().unwrap();
    assert_eq!(reply.text(), Some("in time"));
    assert_eq!(request.reply_to, Some(reply_to));
    assert_eq!(reply.correlation_id, request.correlation_id);

    // A requester that went away: its reply queue went with it.
    let gone = manager.client();
    let waited = gone
        .request("slow", Message::new("q3"), Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(waited, ClientError::NoReply(_)), "{waited}");
    let request = server.get_leased("slow", SOON, LEASE).unwrap().unwrap();
    let reply_to = request.reply_to.clone().unwrap();
    let queue = reply_to.split('@').next().unwrap();
    assert_eq!(
        manager.depth(queue),
        Some(0),
        "{reply_to} is there while its client is"
    );
    drop(gone);
    wait_until("the reply queue gone with its client", SOON, || {
        manager.depth(queue).is_none()
    });
    server.reply(&request, Message::new("late 2")).unwrap();
    let dead = dead_letter(&manager);
    assert!(
        dead.headers[REASON].contains("requester is gone"),
        "{:?}",
        dead.headers
    );
    // And through a restart: the reply queue of a client of the manager's previous life.
    let waited = requester
        .request("slow", Message::new("q4"), Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(waited, ClientError::NoReply(_)), "{waited}");
    let mut manager = manager;
    manager.kill9();
    manager.restart();
    let server = manager.client();
    let request = server.get_leased("slow", SOON, LEASE).unwrap().unwrap();
    server.reply(&request, Message::new("late 3")).unwrap();
    assert_eq!(dead_letter(&manager).text(), Some("late 3"));
}

#[test]
fn two_servers_share_requests_and_one_that_dies_mid_request_leaves_it_to_the_other() {
    let manager = Manager::start();
    // The first server takes a request and dies before replying (its connection ends).
    let asking = {
        let socket = manager.socket().to_owned();
        thread::spawn(move || {
            let requester = hopmq::blocking::Client::connect_to(&socket).unwrap();
            requester.request("work", Message::new("job"), 2 * SOON)
        })
    };
    let dying = manager.client();
    let taken = dying.get_leased("work", SOON, LEASE).unwrap().unwrap();
    assert_eq!(taken.text(), Some("job"));
    drop(dying);
    let other = manager.client();
    let again = other.get_leased("work", SOON, LEASE).unwrap().unwrap();
    assert_eq!(again.id, taken.id);
    assert_eq!(again.delivery_count, 2);
    other
        .reply(&again, Message::new("done by the other"))
        .unwrap();
    let reply = asking.join().unwrap().unwrap();
    assert_eq!(reply.text(), Some("done by the other"));

    // Two servers on one queue share a stream of requests, each answered once.
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = (0..2)
        .map(|_| {
            let socket = manager.socket().to_owned();
            let stop = Arc::clone(&stop);
            thread::spawn(move || serve(socket, "work", Duration::ZERO, stop))
        })
        .collect();
    let askers: Vec<_> = (0..8)
        .map(|n| {
            let socket = manager.socket().to_owned();
            thread::spawn(move || {
                let requester = hopmq::blocking::Client::connect_to(&socket).unwrap();
                (0..10)
                    .map(|i| {
                        let question = Message::new(format!("{n}.{i}"));
                        let reply = requester.request("work", question, SOON).unwrap();
                        assert_eq!(reply.text(), Some(format!("re: {n}.{i}").as_str()));
                    })
                    .count()
            })
        })
        .collect();
    let asked: usize = askers.into_iter().map(|a| a.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let served: Vec<usize> = servers.into_iter().map(|s| s.join().unwrap()).collect();
    assert_eq!(asked, 80);
    assert_eq!(served.iter().sum::<usize>(), 80, "{served:?}");
    assert!(
        served.iter().all(|&s| s > 0),
        "both servers answered: {served:?}"
    );
    assert!(drain(&manager.client(), "DLQ").is_empty());
}

#[test]
fn a_reply_that_cannot_be_made_is_refused_and_leaves_the_request_leased() {
    let manager = Manager::start();
    let client = manager.client();
    client.put("plain", Message::new("no reply_to")).unwrap();
    let request = client.get_leased("plain", SOON, LEASE).unwrap().unwrap();
    let refused = client.reply(&request, Message::new("x")).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Api(ApiError::BadRequest { reason }) if reason.contains("no reply_to")),
        "{refused}"
    );
    // Still leased to us: the ack settles it.
    client.ack(request.lease.into_iter().collect()).unwrap();
    assert_eq!(manager.depth("plain"), Some(0));

    // A reply to an address that cannot be resolved keeps the lease too.
    let message = Message::new("ask").reply_to("nowhere@nomanager");
    client.put("plain", message).unwrap();
    let request = client.get_leased("plain", SOON, LEASE).unwrap().unwrap();
    let refused = client.reply(&request, Message::new("x")).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Api(ApiError::NoRoute { .. })),
        "{refused}"
    );
    client.nack(request.lease.into_iter().collect()).unwrap();
    assert_eq!(manager.depth("plain"), Some(1));

    // Not leased: a put to its reply_to with its correlation id (its id, if it has none).
    let got = client.get("plain", SOON).unwrap().unwrap();
    let refused = client.reply(&got, Message::new("x")).unwrap_err();
    assert!(
        matches!(&refused, ClientError::Api(ApiError::NoRoute { .. })),
        "{refused}"
    );
    client
        .put("plain", Message::new("ask").reply_to("answers"))
        .unwrap();
    let got = client.get("plain", SOON).unwrap().unwrap();
    client.reply(&got, Message::new("told")).unwrap();
    let answer = client.get("answers", SOON).unwrap().unwrap();
    assert_eq!(answer.correlation_id, Some(got.id.to_string()));
    client.put("plain", Message::new("no reply_to")).unwrap();
    let got = client.get("plain", SOON).unwrap().unwrap();
    let refused = client.reply(&got, Message::new("x")).unwrap_err();
    assert!(
        matches!(refused, ClientError::InvalidArgument(_)),
        "{refused}"
    );
    let refused = client
        .request("plain", Message::new("x"), Duration::ZERO)
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::InvalidArgument(_)),
        "{refused}"
    );
    // Reply queues are the manager's: an application cannot read one.
    let taken = client.get("hopmq.reply.x", Duration::ZERO).unwrap_err();
    assert!(
        taken.to_string().contains("belongs to the manager"),
        "{taken}"
    );
}

#[test]
fn qmgr_reply_answers_with_a_commands_output_and_qmgr_request_prints_it() {
    let manager = Manager::start();
    let mut upper =
        manager.spawn_cli_then(&["reply", "upper", "--count", "2"], &["tr", "a-z", "A-Z"]);
    let run = manager.cli(&["request", "upper", "hello", "--timeout", "30s"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "HELLO\n");
    let run = manager.cli_with_stdin(&["request", "upper", "--json"], b"from stdin");
    run.expect_code(0);
    let reply = &run.json_lines()[0];
    assert_eq!(reply["body"], "FROM STDIN", "{reply}");
    assert_eq!(reply["origin"], manager.status()["manager"], "{reply}");
    assert!(wait_exit(&mut upper, "qmgr reply --count 2", SOON).success());

    // A command that fails still answers, flagged with why; the request is not served again.
    let script = "cat >/dev/null; echo \"half done, $HOPMQ_QUEUE\"; exit 3";
    let mut failing =
        manager.spawn_cli_then(&["reply", "broken", "--count", "1"], &["sh", "-c", script]);
    let run = manager.cli(&["request", "broken", "x"]);
    run.expect_code(1);
    assert_eq!(run.stdout, "half done, broken\n");
    assert!(run.stderr.contains("exited with 3"), "{}", run.stderr);
    assert!(wait_exit(&mut failing, "qmgr reply --count 1", SOON).success());
    assert_eq!(manager.depth("broken"), Some(0));

    // A request to a topic's subscribers, gathered: one serves, and says so.
    manager
        .cli(&["subscription", "create", "shouting", "ask.*"])
        .expect_code(0);
    let mut shouter = manager.spawn_cli_then(
        &["reply", "shouting", "--count", "1"],
        &["tr", "a-z", "A-Z"],
    );
    let run = manager.cli(&[
        "request",
        "ask.upper",
        "all",
        "--many",
        "5",
        "--timeout",
        "2s",
    ]);
    run.expect_code(0);
    assert_eq!(run.stdout, "ALL\n");
    assert!(
        run.stderr.contains("1 reply from subscribers of ask.upper"),
        "{}",
        run.stderr
    );
    assert!(wait_exit(&mut shouter, "qmgr reply --count 1", SOON).success());
    let run = manager.cli(&[
        "request",
        "ask.upper",
        "x",
        "--many",
        "5",
        "--timeout",
        "200ms",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("no reply to ask.upper within"),
        "{}",
        run.stderr
    );

    // Nobody serves: the request times out with a clear error.
    let run = manager.cli(&["request", "nobody", "x", "--timeout", "200ms"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("no reply from nobody within"),
        "{}",
        run.stderr
    );
    let run = manager.cli(&["request", "nobody", "x", "--reply-to", "elsewhere"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("leave out --reply-to"),
        "{}",
        run.stderr
    );
}

#[test]
fn qmgr_trace_shows_each_hop_or_where_and_why_the_probe_stopped() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::start(&spec);
    network.wait_link_up("alpha", "bravo");
    network.wait_link_up("bravo", "charlie");
    network.wait_link_up("charlie", "bravo");
    let alpha = network.manager("alpha");
    let mut run = alpha.cli(&["trace", "orders"]);
    // Until alpha's routes know of charlie's queue home.
    wait_until("a route to charlie", SOON, || {
        run = alpha.cli(&["trace", "orders", "--timeout", "5s"]);
        run.code == 0
    });
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0], "trace to orders: arrived at charlie after 2 hops",
        "{}",
        run.stdout
    );
    let managers: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(managers, ["alpha", "bravo", "charlie"], "{}", run.stdout);
    assert!(
        lines[1..].iter().all(|l| l.trim_end().ends_with(" ms")),
        "{}",
        run.stdout
    );
    let json = alpha.cli(&["trace", "orders", "--json"]);
    json.expect_code(0);
    let answer = &json.json_lines()[0];
    assert_eq!(answer["result"], "arrived", "{answer}");
    assert_eq!(answer["hops"].as_array().unwrap().len(), 3, "{answer}");
    let here = alpha.cli(&["trace", "anything@alpha"]);
    here.expect_code(0);
    assert!(
        here.stdout
            .starts_with("trace to anything@alpha: arrived at alpha after 0 hops"),
        "{}",
        here.stdout
    );
    // The probe is never enqueued.
    network.wait_drained();
    assert!(network.manager("charlie").depth("orders").unwrap_or(0) == 0);

    // Charlie dies: once bravo sees it, the probe stops there (or at alpha, once the news
    // reached it), saying why.
    network.manager("charlie").kill9();
    let alpha = network.manager("alpha");
    wait_until("the probe stopped, with why", SOON, || {
        run = alpha.cli(&["trace", "orders", "--timeout", "2s"]);
        run.stdout.contains("stopped after")
    });
    run.expect_code(1);
    assert!(
        run.stdout.contains("no route towards `orders`")
            || run.stdout.contains("the link to charlie is down"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("at bravo") || run.stdout.contains("at alpha"),
        "{}",
        run.stdout
    );
}

/// Answers requests from the durable subscription `queue` (leased, replied to in one write
/// with its ack) until `stop`.
fn serve_subscription(socket: std::path::PathBuf, queue: &'static str, stop: Arc<AtomicBool>) {
    let client = hopmq::blocking::Client::connect_to(&socket).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let wait = Duration::from_millis(200);
        if let Some(request) = client.get_leased(queue, wait, LEASE).unwrap() {
            client.reply(&request, Message::new("charlie")).unwrap();
        }
    }
}

/// Answers requests from a transient subscription to `filter` (replied to with a put) until
/// `stop`.
fn serve_topic(
    socket: std::path::PathBuf,
    filter: &'static str,
    name: &'static str,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicUsize>,
) {
    let client = hopmq::blocking::Client::connect_to(&socket).unwrap();
    let mut subscription = client.subscribe_topic(filter).unwrap();
    subscribed.fetch_add(1, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let wait = Duration::from_millis(200);
        if let Some(hopmq::Publication::Message(request)) = subscription.recv_timeout(wait).unwrap()
        {
            client.reply(&request, Message::new(name)).unwrap();
        }
    }
}

#[test]
fn a_multicast_request_gathers_every_servers_reply_within_its_timeout() {
    let spec = Spec::line(&["alpha", "bravo", "charlie"], "orders");
    let mut network = Network::start(&spec);
    network.wait_link_up("alpha", "bravo");
    network.wait_link_up("bravo", "charlie");
    network
        .manager("charlie")
        .client()
        .create_subscription("stock", "stock.*", None)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let mut servers = Vec::new();
    for name in ["alpha", "bravo"] {
        let socket = network.manager(name).socket().to_owned();
        let (stop, subscribed) = (Arc::clone(&stop), Arc::clone(&subscribed));
        servers.push(thread::spawn(move || {
            serve_topic(socket, "stock.*", name, stop, subscribed);
        }));
    }
    let socket = network.manager("charlie").socket().to_owned();
    let charlie_stop = Arc::clone(&stop);
    servers.push(thread::spawn(move || {
        serve_subscription(socket, "stock", charlie_stop);
    }));
    let alpha = network.manager("alpha").client();
    // Its own subscription, and the other two managers' interest.
    wait_until("alpha knows every server's interest", SOON, || {
        subscribed.load(Ordering::Relaxed) == 2
            && alpha.list_subscriptions().unwrap().interest.len() == 2
    });

    // Every server answers, once; the call returns as soon as the third reply came.
    let question = Message::new("who has 42?");
    let replies = alpha
        .request_many("stock.query", question, 4 * SOON, 3)
        .unwrap();
    let mut who: Vec<&str> = replies.iter().map(|r| r.text().unwrap()).collect();
    who.sort_unstable();
    assert_eq!(who, ["alpha", "bravo", "charlie"]);
    let correlation = replies[0].correlation_id.clone();
    assert!(replies.iter().all(|r| r.correlation_id == correlation));

    // Room for two: the third reply is dead-lettered once the request's time is up.
    let replies = alpha
        .request_many(
            "stock.query",
            Message::new("again"),
            Duration::from_secs(2),
            2,
        )
        .unwrap();
    assert_eq!(replies.len(), 2, "{replies:?}");
    let alpha_manager = network.manager("alpha");
    let late = dead_letter(alpha_manager);
    let reason = &late.headers[REASON];
    assert!(reason.contains("max_replies"), "{reason}");

    // Nobody subscribes: nothing comes, and the call ends at its timeout.
    let nobody = alpha
        .request_many(
            "weather.query",
            Message::new("?"),
            Duration::from_millis(300),
            5,
        )
        .unwrap();
    assert!(nobody.is_empty());
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().unwrap();
    }
}
