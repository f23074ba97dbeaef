//! Delivery reports ride the write of the event they report: both or neither.

use hopmq::report::{REPORT_HEADER, REPORT_REASON_HEADER, REPORTS_HEADER};

use super::*;

/// A message for `orders` asking for `reports` to `acks`.
fn asking(reports: &str, persistent: bool) -> Operation {
    let mut message = OutgoingMessage {
        body: b"order".to_vec(),
        persistent,
        reply_to: Some("acks".into()),
        ..Default::default()
    };
    message
        .headers
        .insert(REPORTS_HEADER.into(), reports.into());
    Operation::Put {
        address: "orders".into(),
        message,
    }
}

/// The reports waiting in `acks`, as `kind correlation_id`.
fn reports(bench: &mut Bench) -> Vec<String> {
    let browse = Operation::Browse {
        queue: "acks".into(),
        max: 100,
    };
    bench.messages.clear();
    bench.request(900, browse);
    bench
        .messages
        .iter()
        .map(|m| {
            let kind = m.headers.get(REPORT_HEADER).cloned().unwrap_or_default();
            format!("{kind} {}", m.correlation_id.clone().unwrap_or_default())
        })
        .collect()
}

/// The id of the message put by the last put, as a report's correlation id names it.
fn put_id(bench: &mut Bench) -> String {
    bench.messages.clear();
    let browse = Operation::Browse {
        queue: "orders".into(),
        max: 1,
    };
    bench.request(901, browse);
    bench.messages[0].id.to_string()
}

#[test]
fn a_put_and_its_arrival_report_are_one_write() {
    let mut bench = Bench::new();
    bench.request(1, asking("arrival", true));
    assert_eq!(
        bench.effects(),
        [Append(Durability::Synced, vec!["enqueue", "enqueue"])],
        "the message and its report: both or neither"
    );
    bench.complete(true);
    let id = put_id(&mut bench);
    assert_eq!(reports(&mut bench), [format!("arrival {id}")]);
}

#[test]
fn a_put_whose_write_failed_reports_nothing() {
    let mut bench = Bench::new();
    bench.request(1, asking("arrival", true));
    bench.complete(false);
    assert!(reports(&mut bench).is_empty());
}

#[test]
fn a_get_and_its_delivery_report_are_one_write_and_a_failed_one_reports_once_done_again() {
    let mut bench = Bench::new();
    bench.request(1, asking("delivery", true));
    bench.complete(true);
    let id = put_id(&mut bench);
    assert!(reports(&mut bench).is_empty(), "not delivered yet");
    bench.clear();
    bench.get(2, None);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Freeing, vec!["remove", "enqueue"])]
    );
    bench.complete(false);
    assert!(
        reports(&mut bench).is_empty(),
        "the get failed, so did its report"
    );
    bench.clear();
    bench.get(3, None);
    bench.complete(true);
    assert_eq!(&bench.effects()[1..], [Durable, Replied(3, "messages")]);
    assert_eq!(reports(&mut bench), [format!("delivery {id}")]);
}

#[test]
fn an_ack_and_its_delivery_report_are_one_write_and_a_lease_alone_reports_nothing() {
    let mut bench = Bench::new();
    bench.request(1, asking("delivery", true));
    bench.complete(true);
    bench.clear();
    bench.get(2, Some(60_000));
    assert_eq!(bench.effects(), [Replied(2, "messages")]);
    bench.clear();
    let ack = Operation::Ack {
        leases: bench.leases.clone(),
    };
    bench.request(3, ack);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Freeing, vec!["remove", "enqueue"])]
    );
    bench.complete(true);
    assert_eq!(reports(&mut bench).len(), 1);
}

#[test]
fn a_dead_letter_and_its_exception_report_are_one_write_and_owe_nothing_more() {
    let mut bench = Bench::new();
    bench.request(1, asking("delivery,exception", true));
    bench.complete(true);
    let id = put_id(&mut bench);
    // Two deliveries without an ack: past max_deliveries, dead-lettered.
    for round in 0..2 {
        bench.get(10 + round, Some(60_000));
        let nack = Operation::Nack {
            leases: bench.leases.clone(),
        };
        bench.clear();
        bench.request(20 + round, nack);
    }
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["enqueue", "remove", "enqueue"]),
            Replied(21, "done")
        ],
        "the dead letter, the original's removal and the report: one write"
    );
    bench.complete(true);
    let browse = Operation::Browse {
        queue: "acks".into(),
        max: 10,
    };
    bench.request(30, browse);
    assert_eq!(bench.messages.len(), 1);
    let report = &bench.messages[0];
    assert_eq!(report.correlation_id.as_deref(), Some(id.as_str()));
    assert_eq!(report.headers[REPORT_HEADER], "exception");
    let reason = &report.headers[REPORT_REASON_HEADER];
    assert!(reason.contains("max_deliveries"), "{reason}");
    // The dead letter is got from the DLQ: no delivery report for it.
    let get = Operation::Get {
        queue: hopmq::protocol::DEAD_LETTER_QUEUE.into(),
        timeout_ms: 0,
        max: 10,
        selector: Selector::default(),
        lease_ms: None,
    };
    bench.request(31, get);
    bench.complete(true);
    assert_eq!(reports(&mut bench).len(), 1, "{:?}", reports(&mut bench));
}

#[test]
fn a_non_persistent_message_reports_in_a_write_of_its_own() {
    let mut bench = Bench::new();
    bench.request(1, asking("arrival", false));
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["enqueue"]),
            Replied(1, "put")
        ],
        "the put wrote nothing (its answer was sent at once); its report is persistent"
    );
    bench.complete(true);
    assert_eq!(reports(&mut bench).len(), 1);
}

#[test]
fn reports_need_a_reply_to_and_known_kinds_and_a_queue_message() {
    let mut bench = Bench::new();
    let Operation::Put {
        address,
        mut message,
    } = asking("arrival", true)
    else {
        unreachable!("a put");
    };
    message.reply_to = None;
    bench.request(1, Operation::Put { address, message });
    let Operation::Put {
        address,
        mut message,
    } = asking("arrival,read", true)
    else {
        unreachable!("a put");
    };
    bench.request(
        2,
        Operation::Put {
            address,
            message: message.clone(),
        },
    );
    message
        .headers
        .insert(REPORTS_HEADER.into(), "arrival".into());
    let publish = Operation::Publish {
        publications: vec![("news".into(), message)],
        retain: false,
    };
    bench.request(3, publish);
    assert_eq!(
        bench.effects(),
        [
            Replied(1, "error"),
            Replied(2, "error"),
            Replied(3, "error")
        ]
    );
}

impl Bench {
    /// Connects client connection `connection` besides the bench's own.
    fn connect(&mut self, connection: u64) {
        let (frames, _unread) = outbox::bounded(1024, CONNECTION_BYTES_MAX);
        let connected = Command::Connected {
            connection,
            frames,
            uid: None,
        };
        self.core.on_command(connected, now());
    }

    /// A get of `orders` from client connection `connection`, waiting up to `timeout_ms`.
    fn get_from(&mut self, connection: u64, timeout_ms: u64) {
        let get = Operation::Get {
            queue: "orders".into(),
            timeout_ms,
            max: 10,
            selector: Selector::default(),
            lease_ms: None,
        };
        let request = Command::Request {
            connection,
            id: 50,
            operation: get,
        };
        self.core.on_command(request, now());
    }

    fn leave(&mut self, connection: u64) {
        self.core
            .on_command(Command::Disconnected { connection }, now());
    }

    /// Completes every append made, and those they lead to.
    fn complete_all(&mut self) {
        while !self.effects_mut().pending.is_empty() {
            self.complete(true);
        }
    }

    /// Whether the message waiting in `orders` still asks for a delivery report.
    fn asks_for_delivery(&mut self) -> bool {
        self.messages.clear();
        let browse = Operation::Browse {
            queue: "orders".into(),
            max: 1,
        };
        self.request(902, browse);
        let headers = &self.messages[0].headers;
        headers
            .get(REPORTS_HEADER)
            .is_some_and(|asked| asked.contains("delivery"))
    }
}

#[test]
fn a_message_handed_to_a_getter_that_left_is_stored_again_and_reported_delivered_once() {
    let mut bench = Bench::new();
    bench.connect(1);
    bench.get_from(1, 60_000);
    // The put goes straight to the waiting get, its delivery report in the same write...
    bench.request(1, asking("arrival,delivery", true));
    // ...but the getter leaves before that write is durable: nobody has the message.
    bench.leave(1);
    taken_again_after_its_getter_left(&mut bench);
    let id = put_id_of_reports(&mut bench);
    assert_eq!(
        reports(&mut bench),
        [format!("arrival {id}"), format!("delivery {id}")]
    );
}

#[test]
fn a_message_got_by_a_getter_that_left_before_its_removal_was_durable_is_reported_once() {
    let mut bench = Bench::new();
    bench.request(1, asking("delivery", true));
    bench.complete_all();
    let id = put_id(&mut bench);
    bench.connect(1);
    bench.get_from(1, 0);
    bench.leave(1);
    taken_again_after_its_getter_left(&mut bench);
    assert_eq!(reports(&mut bench), [format!("delivery {id}")]);
}

/// Once the write its getter left during is durable, the message stored again no longer asks
/// for its delivery to be reported; a destructive get then takes it for good.
#[track_caller]
fn taken_again_after_its_getter_left(bench: &mut Bench) {
    bench.complete_all();
    assert!(
        !bench.asks_for_delivery(),
        "its delivery was reported already"
    );
    bench.get(2, None);
    bench.complete_all();
}

/// The correlation id of the reports made so far (they all name one message).
fn put_id_of_reports(bench: &mut Bench) -> String {
    let made = reports(bench);
    let first = made.first().expect("a report");
    first.split(' ').nth(1).unwrap_or_default().to_owned()
}

#[test]
fn gets_queued_together_write_their_delivery_reports_with_their_one_removal() {
    let mut bench = Bench::new();
    bench.request(1, asking("delivery", true));
    bench.request(2, asking("delivery", true));
    bench.complete(true);
    bench.complete(true);
    bench.clear();
    let get = |id| Command::Request {
        connection: 0,
        id,
        operation: Operation::Get {
            queue: "orders".into(),
            timeout_ms: 0,
            max: 1,
            selector: Selector::default(),
            lease_ms: None,
        },
    };
    bench.core.on_commands(vec![get(3), get(4)], now());
    assert_eq!(
        bench.effects(),
        [Append(
            Durability::Freeing,
            vec!["remove", "enqueue", "enqueue"]
        )],
        "both removals and both reports: all or none"
    );
    bench.complete(false);
    assert!(
        reports(&mut bench).is_empty(),
        "the gets failed, so did their reports"
    );
    bench.clear();
    bench.core.on_commands(vec![get(5), get(6)], now());
    bench.complete(true);
    assert_eq!(reports(&mut bench).len(), 2);
}
