//! Puts queued together share a write, and each is still answered as if alone: only once
//! that write is durable, refused alone when it fails its checks, in the order it came.
//! Destructive gets queued together share their removals' write likewise.

use super::*;

fn put(connection: u64, id: u64, address: &str, body: &str) -> Command {
    let message = OutgoingMessage {
        body: body.as_bytes().to_vec(),
        persistent: true,
        ..Default::default()
    };
    Command::Request {
        connection,
        id,
        operation: Operation::Put {
            address: address.into(),
            message,
        },
    }
}

fn get(id: u64) -> Command {
    get_up_to(id, 10)
}

/// A destructive get of at most `max` messages of `orders`, answered at once if it finds none.
fn get_up_to(id: u64, max: u32) -> Command {
    Command::Request {
        connection: 0,
        id,
        operation: Operation::Get {
            queue: "orders".into(),
            timeout_ms: 0,
            max,
            selector: Selector::default(),
            lease_ms: None,
        },
    }
}

impl Bench {
    /// Hands `commands` to the core in one turn, as the run loop does with what is queued.
    fn turn(&mut self, commands: Vec<Command>) {
        self.core.on_commands(commands, now());
        self.collect_replies();
    }

    /// The bodies a destructive get of `orders` takes now, once its removal is durable.
    fn take_all(&mut self) -> Vec<String> {
        self.clear();
        self.messages.clear();
        self.turn(vec![get(99)]);
        if !self.effects_mut().pending.is_empty() {
            self.complete(true);
        }
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }
}

#[test]
fn single_puts_queued_together_share_one_write_and_each_is_answered_once_it_is_durable() {
    let mut bench = Bench::new();
    let puts = (1..=3).map(|id| put(0, id, "orders", &format!("m{id}")));
    bench.turn(puts.collect());
    assert_eq!(
        bench.effects(),
        [Append(
            Durability::Synced,
            vec!["enqueue", "enqueue", "enqueue"]
        )],
        "one write for the three calls, and no answer before it is durable"
    );
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [
            Durable,
            Replied(1, "put"),
            Replied(2, "put"),
            Replied(3, "put")
        ]
    );
    assert_eq!(bench.take_all(), ["m1", "m2", "m3"], "stored in call order");
}

#[test]
fn a_put_that_fails_its_checks_is_refused_alone() {
    let mut bench = Bench::new();
    let declare = Operation::Declare {
        queue: "orders".into(),
        max_depth: Some(2),
    };
    bench.request(10, declare);
    bench.clear();
    bench.turn(vec![
        put(0, 1, "orders", "m1"),
        put(0, 2, "no such queue!", "bad"),
        put(0, 3, "orders", "m3"),
        put(0, 4, "orders", "over the depth"),
    ]);
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["enqueue", "enqueue"]),
            Replied(2, "error"),
            Replied(4, "error"),
        ],
        "the bad address and the third message for a queue of depth 2 are refused; the rest \
         is written"
    );
    bench.complete(true);
    assert_eq!(
        &bench.effects()[3..],
        [Durable, Replied(1, "put"), Replied(3, "put")]
    );
    assert_eq!(bench.take_all(), ["m1", "m3"]);
}

#[test]
fn a_failed_write_refuses_every_put_it_held() {
    let mut bench = Bench::new();
    bench.turn(vec![put(0, 1, "orders", "m1"), put(0, 2, "orders", "m2")]);
    bench.complete(false);
    assert_eq!(
        &bench.effects()[1..],
        [
            Failed,
            Replied(1, "storage error"),
            Replied(2, "storage error")
        ]
    );
    assert!(bench.take_all().is_empty(), "nothing refused is delivered");
}

#[test]
fn a_command_of_another_kind_ends_a_run_of_puts() {
    let mut bench = Bench::new();
    bench.turn(vec![
        put(0, 1, "orders", "m1"),
        get(2),
        put(0, 3, "orders", "m3"),
    ]);
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["enqueue"]),
            Append(Durability::Synced, vec!["enqueue"]),
            Replied(2, "no messages"),
        ],
        "a write for each put: the get came between them (its answer is read after the turn)"
    );
    bench.complete(true);
    bench.complete(true);
    assert_eq!(bench.take_all(), ["m1", "m3"]);
}

#[test]
fn puts_from_several_connections_share_a_write_and_are_answered_on_their_own() {
    let mut bench = Bench::new();
    let (frames, mut other) = outbox::bounded(1024, CONNECTION_BYTES_MAX);
    let connected = Command::Connected {
        connection: 1,
        frames,
        uid: None,
    };
    bench.core.on_command(connected, now());
    bench.turn(vec![
        put(0, 1, "orders", "a1"),
        put(1, 1, "orders", "b1"),
        put(0, 2, "orders", "a2"),
    ]);
    assert_eq!(
        bench.effects(),
        [Append(
            Durability::Synced,
            vec!["enqueue", "enqueue", "enqueue"]
        )]
    );
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [Durable, Replied(1, "put"), Replied(2, "put")],
        "connection 0 hears of its own two puts only"
    );
    let answered: Vec<u64> = std::iter::from_fn(|| other.try_recv().ok())
        .filter_map(|frame| match frame.into_frame() {
            ServerFrame::Reply {
                id,
                result: Ok(Reply::Put(ids)),
            } if ids.len() == 1 => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(answered, [1], "connection 1 hears of its put");
    assert_eq!(bench.take_all(), ["a1", "b1", "a2"]);
}

#[test]
fn a_run_is_cut_so_that_a_request_never_shares_more_than_half_a_group() {
    // The bench's storage takes groups of 1 MiB: requests share at most 512 KiB.
    let mut bench = Bench::new();
    let body = "x".repeat(200 * 1024);
    let puts = (1..=4).map(|id| put(0, id, "orders", &body));
    bench.turn(puts.collect());
    let twice = vec!["enqueue", "enqueue"];
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, twice.clone()),
            Append(Durability::Synced, twice)
        ]
    );
    bench.complete(true);
    bench.complete(true);
    let answered = bench
        .effects()
        .iter()
        .filter(|e| matches!(e, Replied(_, "put")))
        .count();
    assert_eq!(answered, 4);
}

/// `bodies` put to `orders`, durable, and the effects cleared.
fn stored(bodies: &[&str]) -> Bench {
    let mut bench = Bench::new();
    let puts = bodies
        .iter()
        .zip(1..)
        .map(|(body, id)| put(0, id, "orders", body));
    bench.turn(puts.collect());
    bench.complete(true);
    bench.clear();
    bench
}

#[test]
fn single_gets_queued_together_share_one_removal_and_each_is_answered_once_it_is_durable() {
    let mut bench = stored(&["m1", "m2", "m3"]);
    bench.turn((11..=13).map(|id| get_up_to(id, 1)).collect());
    assert_eq!(
        bench.effects(),
        [Append(Durability::Freeing, vec!["remove"])],
        "one removal for the three calls, and no answer before it is durable"
    );
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [
            Durable,
            Replied(11, "messages"),
            Replied(12, "messages"),
            Replied(13, "messages")
        ]
    );
    assert!(bench.take_all().is_empty(), "each message taken once");
}

#[test]
fn a_failed_removal_hands_back_every_get_it_held() {
    let mut bench = stored(&["m1", "m2"]);
    bench.turn(vec![get_up_to(11, 1), get_up_to(12, 1)]);
    bench.complete(false);
    assert_eq!(
        &bench.effects()[1..],
        [
            Failed,
            Replied(11, "storage error"),
            Replied(12, "storage error")
        ]
    );
    assert_eq!(bench.take_all(), ["m1", "m2"], "both back, in order");
}

#[test]
fn a_put_between_gets_has_their_removals_written_before_it() {
    let mut bench = stored(&["m1", "m2"]);
    bench.turn(vec![
        get_up_to(11, 1),
        put(0, 12, "orders", "m3"),
        get_up_to(13, 1),
    ]);
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Freeing, vec!["remove"]),
            Append(Durability::Synced, vec!["enqueue"]),
            Append(Durability::Freeing, vec!["remove"]),
        ],
        "each run in the order it came"
    );
    for _ in 0..3 {
        bench.complete(true);
    }
    assert_eq!(bench.take_all(), ["m3"]);
}
