//! The Prometheus endpoint: a scrape shows queue depths, message counters and the journal's
//! commit and fsync figures.

mod support;

use std::time::Duration;

use hopmq::Message;
use support::{Manager, free_tcp_port, scrape, wait_until};

#[test]
fn a_scrape_shows_queues_counters_and_the_journal() {
    let port = free_tcp_port();
    let manager = Manager::builder()
        .arg("--metrics")
        .arg(&format!("127.0.0.1:{port}"))
        .start();
    let client = manager.client();
    for n in 0..3 {
        client
            .put("orders", Message::new(format!("m{n}")))
            .expect("put");
    }
    client
        .get("orders", Duration::from_secs(5))
        .expect("get")
        .expect("a message");
    let mut response = String::new();
    wait_until(
        "the metrics endpoint answers",
        Duration::from_secs(20),
        || {
            response = scrape(port).unwrap_or_default();
            !response.is_empty()
        },
    );
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    for line in [
        "hopmq_queue_depth{manager=\"local\",queue=\"orders\"} 2",
        "hopmq_messages_put_total{manager=\"local\"} 3",
        "hopmq_messages_delivered_total{manager=\"local\"} 1",
        "# TYPE hopmq_store_fsync_seconds histogram",
    ] {
        assert!(
            response.lines().any(|l| l == line),
            "no `{line}` in:\n{response}"
        );
    }
    let commits = response
        .lines()
        .find_map(|l| l.strip_prefix("hopmq_store_commits_total{manager=\"local\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("a commit counter");
    assert!(commits >= 4.0, "{commits} commits for 3 puts and a get");
}
