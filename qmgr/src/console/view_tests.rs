//! The JSON API's shapes: field names are the contract with the console's script and with
//! operators' scripts.

use std::collections::BTreeMap;

use hopmq::protocol::{
    Delivery, LinkStatus, NetworkLinkStatus, QueueStatus, RefusedTopology, RouteStatus, Status,
    TopologyStatus,
};
use hopmq::{MessageId, Trace};
use serde_json::{Value, json};

use super::*;

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn ring_status() -> Status {
    let link = |a: &str, b: &str, state: &str| NetworkLinkStatus {
        between: (a.to_owned(), b.to_owned()),
        cost: 1,
        state: state.to_owned(),
        reported_by: if state == "up" {
            vec![]
        } else {
            vec![a.to_owned()]
        },
    };
    let route = |d: &str, next: Option<&str>| RouteStatus {
        destination: d.to_owned(),
        next_hop: next.map(str::to_owned),
        cost: next.map(|_| 1),
    };
    Status {
        manager: "alpha".into(),
        version: "0.1.0".into(),
        queues: vec![
            QueueStatus {
                name: "DLQ".into(),
                depth: 1,
                ..QueueStatus::default()
            },
            QueueStatus {
                name: "orders".into(),
                depth: 3,
                bytes: 30,
                oldest_age_ms: Some(1500),
                ..QueueStatus::default()
            },
        ],
        links: vec![LinkStatus {
            neighbour: "bravo".into(),
            state: "up".into(),
            rtt_us: Some(250),
            transmission_depth: 4,
            ..LinkStatus::default()
        }],
        routes: vec![route("bravo", Some("bravo")), route("delta", None)],
        network: vec![
            link("alpha", "bravo", "up"),
            link("alpha", "delta", "down"),
            link("bravo", "charlie", "up"),
        ],
        topology: TopologyStatus {
            version: "abcd".into(),
            managers: vec![
                "alpha".into(),
                "bravo".into(),
                "charlie".into(),
                "delta".into(),
            ],
            refused: Some(RefusedTopology {
                version: "ef01".into(),
                error: "topology.toml:3:1: unknown key `linkz`".into(),
                at_ms: 7,
            }),
            ..TopologyStatus::default()
        },
        ..Status::default()
    }
}

#[test]
fn a_status_serializes_with_its_field_names() {
    let value = serde_json::to_value(ring_status()).unwrap();
    for key in [
        "manager",
        "version",
        "uptime_secs",
        "queues",
        "links",
        "routes",
        "network",
    ] {
        assert!(value.get(key).is_some(), "no `{key}` in {value}");
    }
    assert_eq!(value["queues"][1]["name"], "orders");
    assert_eq!(value["network"][0]["between"], json!(["alpha", "bravo"]));
    assert_eq!(
        value["topology"]["refused"]["error"],
        "topology.toml:3:1: unknown key `linkz`"
    );
}

#[test]
fn the_queue_listing_has_counters_rates_and_the_dead_letter_mark() {
    let counters = [QueueCounters {
        name: "orders".into(),
        entered: 5,
        taken: 2,
    }];
    let rates = BTreeMap::from([(
        "orders".to_owned(),
        Rates {
            put_per_sec: 1.5,
            get_per_sec: 0.5,
        },
    )]);
    let value = serde_json::to_value(queues(&ring_status(), &counters, &rates)).unwrap();
    assert_eq!(keys(&value), ["manager", "queues"]);
    let orders = &value["queues"][1];
    assert_eq!(
        keys(orders),
        [
            "bytes",
            "dead_letter",
            "depth",
            "entered_total",
            "get_rate",
            "leased",
            "max_depth",
            "name",
            "oldest_age_ms",
            "put_rate",
            "taken_total"
        ]
    );
    assert_eq!(orders["depth"], 3);
    assert_eq!(orders["put_rate"], 1.5);
    assert_eq!(orders["entered_total"], 5);
    assert_eq!(value["queues"][0]["dead_letter"], true);
    assert_eq!(value["queues"][0]["entered_total"], 0);
}

fn delivery(body: &[u8]) -> Delivery {
    Delivery {
        id: MessageId(0xab),
        body: body.to_vec(),
        headers: BTreeMap::from([(
            DEAD_LETTER_REASON_HEADER.to_owned(),
            "max_deliveries".to_owned(),
        )]),
        priority: 4,
        expires_at_ms: None,
        correlation_id: None,
        reply_to: None,
        persistent: true,
        origin: "bravo".into(),
        delivery_count: 5,
        trace: vec![Trace {
            manager: "bravo".into(),
            at_ms: 10,
        }],
        lease: None,
    }
}

#[test]
fn browsed_messages_show_text_or_hex_cut_and_their_dead_letter_reason() {
    let script = b"<script>document.title='pwned'</script>";
    let long = vec![b'x'; BODY_SHOWN_BYTES_MAX + 10];
    let deliveries = [delivery(script), delivery(&[0xff, 0x00]), delivery(&long)];
    let value = serde_json::to_value(messages("DLQ", 2, &deliveries)).unwrap();
    assert_eq!(keys(&value), ["limit", "messages", "queue"]);
    assert_eq!(
        value["messages"].as_array().unwrap().len(),
        2,
        "the limit holds"
    );
    let first = &value["messages"][0];
    assert_eq!(
        keys(first),
        [
            "body",
            "correlation_id",
            "dead_letter_reason",
            "delivery_count",
            "expires_at_ms",
            "headers",
            "id",
            "origin",
            "persistent",
            "priority",
            "reply_to",
            "trace"
        ]
    );
    assert_eq!(first["id"], "000000000000000000000000000000ab");
    assert_eq!(first["dead_letter_reason"], "max_deliveries");
    assert_eq!(first["trace"][0], json!({"manager": "bravo", "at_ms": 10}));
    assert_eq!(
        first["body"],
        json!({"encoding": "text", "shown": "<script>document.title='pwned'</script>",
               "length": script.len(), "truncated": false})
    );
    assert_eq!(value["messages"][1]["body"]["encoding"], "hex");
    assert_eq!(value["messages"][1]["body"]["shown"], "ff00");
    let cut = body(&long);
    assert_eq!(
        (cut.shown.len(), cut.length, cut.truncated),
        (BODY_SHOWN_BYTES_MAX, long.len(), true)
    );
    // A cut never splits a character.
    let accents = "é".repeat(BODY_SHOWN_BYTES_MAX);
    assert!(body(accents.as_bytes()).shown.len() <= BODY_SHOWN_BYTES_MAX);
    assert_eq!(browse_limit(None), BROWSE_LIMIT_DEFAULT);
    assert_eq!(browse_limit(Some(1_000_000)), BROWSE_LIMIT_MAX);
    assert_eq!(browse_limit(Some(0)), 1);
}

#[test]
fn the_network_lists_every_manager_and_link_with_states_and_the_tree() {
    let rates = BTreeMap::from([("bravo".to_owned(), 2.0)]);
    // What delta advertised it holds; bravo advertised nothing yet.
    let loads = BTreeMap::from([(
        "delta".to_owned(),
        hopmq_routing::linkstate::Load {
            queues: 5,
            depth: 17,
        },
    )]);
    let value = serde_json::to_value(network(&ring_status(), &rates, &loads)).unwrap();
    assert_eq!(
        keys(&value),
        [
            "links",
            "manager",
            "managers",
            "refused",
            "topology_version"
        ]
    );
    let managers = value["managers"].as_array().unwrap();
    let states: Vec<(&str, &str)> = managers
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("alpha", "up"),
            ("bravo", "up"),
            ("charlie", "unknown"),
            ("delta", "down")
        ]
    );
    assert_eq!(managers[0]["local"], true);
    assert_eq!(managers[0]["queues"], 2);
    assert_eq!(managers[0]["depth"], 4);
    assert_eq!(managers[1]["depth"], Value::Null);
    assert_eq!(managers[3]["queues"], 5);
    assert_eq!(managers[3]["depth"], 17);
    let ab = &value["links"][0];
    assert_eq!(
        keys(ab),
        [
            "between",
            "cost",
            "id",
            "in_route_tree",
            "reported_by",
            "rtt_us",
            "send_rate",
            "state",
            "waiting"
        ]
    );
    assert_eq!(ab["id"], "alpha-bravo");
    assert_eq!(ab["in_route_tree"], true);
    assert_eq!(ab["waiting"], 4);
    assert_eq!(ab["send_rate"], 2.0);
    assert_eq!(value["links"][1]["state"], "down");
    assert_eq!(value["links"][2]["waiting"], Value::Null);
    assert_eq!(
        value["refused"]["error"],
        "topology.toml:3:1: unknown key `linkz`"
    );
}

#[test]
fn the_manager_page_has_the_store_the_fsync_histogram_and_the_settings() {
    let mut buckets = [0u64; FSYNC_BUCKETS];
    buckets[3] = 7;
    let journal = JournalStats {
        active_segment: 2,
        segments: Vec::new(),
        bytes_on_disk: 4096,
        commits: 9,
        commits_inline: 1,
        records: 12,
        batch_records_last: 2,
        fsyncs: 7,
        fsync_nanos_total: 7_000_000,
        fsync_nanos_max: 2_000_000,
        fsync_micros_log2_buckets: buckets,
    };
    let settings = json!({"name": "alpha", "http_listen": "127.0.0.1:8080"});
    let value =
        serde_json::to_value(manager_page(&ring_status(), &journal, settings, true)).unwrap();
    assert_eq!(
        keys(&value),
        [
            "links",
            "manager",
            "messages_delivered",
            "messages_forwarded",
            "messages_put",
            "settings",
            "store",
            "token_required",
            "uptime_secs",
            "version"
        ]
    );
    let store = &value["store"];
    assert_eq!(
        (store["bytes"].as_u64(), store["commits"].as_u64()),
        (Some(4096), Some(9))
    );
    assert_eq!(store["last_batch_records"], 2);
    let histogram = store["fsync_histogram"].as_array().unwrap();
    assert_eq!(histogram.len(), FSYNC_BUCKETS);
    assert_eq!(histogram[3], json!({"below_us": 8, "count": 7}));
    assert_eq!(histogram[FSYNC_BUCKETS - 1]["below_us"], Value::Null);
    assert_eq!(value["links"][0]["rtt_us"], 250);
    assert_eq!(value["settings"]["http_listen"], "127.0.0.1:8080");
}
