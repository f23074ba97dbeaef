//! The operator's requests on a queue's messages: purge, delete by id, move, dead-letter
//! replay and listing, each answered once durable and each leaving every message in exactly
//! one place across a restart.

use hopmq::MessageId;
use hopmq::protocol::{Listing, MoveOutcome, MoveRequest, MoveTarget, Selection};

use super::*;

impl Harness {
    /// Runs the jobs in progress to their end: their writes completed, their next passes run.
    async fn finish_jobs(&mut self) {
        loop {
            self.settle().await;
            match self.core.next_deadline_ms() {
                // A job's next pass (leases and waits in these tests are far longer).
                Some(due) if due <= NOW + 1 => self.core.on_timer(at(due)),
                _ => return,
            }
        }
    }

    async fn outcome(&mut self, id: u64, operation: Operation) -> Result<MoveOutcome, ApiError> {
        self.request(0, id, operation);
        self.finish_jobs().await;
        match self.replies(0).into_iter().find(|(reply, _)| *reply == id) {
            Some((_, Ok(Reply::Moved(outcome)))) => Ok(outcome),
            Some((_, Err(error))) => Err(error),
            other => panic!("no outcome for request {id}: {other:?}"),
        }
    }

    async fn listing(&mut self, id: u64, queue: &str, selection: Selection) -> Listing {
        let operation = Operation::ListMessages {
            queue: queue.into(),
            selection,
            max: 100,
        };
        self.request(0, id, operation);
        self.finish_jobs().await;
        match self.replies(0).into_iter().find(|(reply, _)| *reply == id) {
            Some((_, Ok(Reply::Listing(listing)))) => listing,
            other => panic!("no listing for request {id}: {other:?}"),
        }
    }

    /// The ids of the messages put by request `id`.
    fn put_ids(&mut self, connection: usize, id: u64) -> Vec<MessageId> {
        match self.replies(connection).into_iter().find(|(r, _)| *r == id) {
            Some((_, Ok(Reply::Put(ids)))) => ids,
            other => panic!("no put {id}: {other:?}"),
        }
    }

    /// Dead-letters the one message of `queue` by leasing it `max_deliveries` (2) times.
    async fn poison(&mut self, queue: &str, request: u64) {
        for round in 0..2 {
            self.get(1, request + round, queue, 0, Some(60_000));
            let leased = self.messages(1, request + round);
            let lease = leased[0].lease.expect("leased");
            self.request(
                1,
                request + 10 + round,
                Operation::Nack {
                    leases: vec![lease],
                },
            );
            self.settle().await;
        }
    }
}

fn move_to(from: &str, to: &str) -> Operation {
    Operation::MoveMessages(MoveRequest {
        from: from.into(),
        selection: Selection::All,
        to: MoveTarget::Address(to.into()),
        replay: false,
    })
}

#[tokio::test]
async fn a_purge_removes_all_but_leased_messages_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "q", &["a", "b", "c", "d"]);
    h.settle().await;
    h.get(1, 2, "q", 0, Some(60_000));
    assert_eq!(h.messages(1, 2).len(), 4);
    h.request(
        1,
        3,
        Operation::Nack {
            leases: vec![1, 2, 3],
        },
    );
    let purge = Operation::RemoveMessages {
        queue: "q".into(),
        selection: Selection::All,
    };
    let outcome = h.outcome(4, purge).await.expect("purged");
    assert_eq!((outcome.done, outcome.leased), (3, 1), "{outcome:?}");
    assert!(h.drain("q").await.is_empty());
    drop(h);
    // The leased one comes back after a restart (its lease died with the manager); the
    // purged ones do not.
    let mut h = Harness::open(dir.path(), 1);
    assert_eq!(h.drain("q").await, ["d"]);
}

#[tokio::test]
async fn a_message_is_deleted_by_id_and_an_unknown_id_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "q", &["a", "b", "c"]);
    h.settle().await;
    let ids = h.put_ids(1, 1);
    let unknown = MessageId(42);
    let delete = Operation::RemoveMessages {
        queue: "q".into(),
        selection: Selection::Ids(vec![ids[1], unknown]),
    };
    let outcome = h.outcome(2, delete).await.expect("deleted");
    assert_eq!(outcome.done, 1);
    assert_eq!(outcome.missing, [unknown]);
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert_eq!(h.drain("q").await, ["a", "c"]);
}

#[tokio::test]
async fn a_move_keeps_order_and_leaves_each_message_in_one_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    for (id, queue) in [(20, "from"), (21, "to")] {
        let declare = Operation::Declare {
            queue: queue.into(),
            max_depth: Some(10_000),
        };
        h.request(1, id, declare);
    }
    // More than a pass moves: several groups, each atomic.
    let bodies: Vec<String> = (0..5000).map(|i| format!("m{i}")).collect();
    for (n, chunk) in bodies.chunks(1000).enumerate() {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        h.put(1, n as u64, "from", &chunk);
    }
    h.settle().await;
    let outcome = h.outcome(10, move_to("from", "to")).await.expect("moved");
    assert_eq!(outcome.done, 5000, "{outcome:?}");
    assert_eq!(outcome.stopped, None);
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert!(h.drain("from").await.is_empty());
    let listing = h.listing(11, "to", Selection::All).await;
    assert_eq!(listing.selected, 5000);
    let mut got = Vec::new();
    for request in 0..500 {
        got.extend(h.drain("to").await);
        if got.len() == 5000 || request == 499 {
            break;
        }
    }
    assert_eq!(got, bodies, "every message once, in put order");
}

#[tokio::test]
async fn a_move_to_a_full_queue_stops_there_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    let declare = Operation::Declare {
        queue: "small".into(),
        max_depth: Some(2),
    };
    h.request(1, 1, declare);
    h.put(1, 2, "from", &["a", "b", "c"]);
    h.settle().await;
    let outcome = h
        .outcome(3, move_to("from", "small"))
        .await
        .expect("answered");
    assert_eq!(outcome.done, 2);
    assert!(
        outcome
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("full")),
        "{outcome:?}"
    );
    assert_eq!(h.drain("from").await, ["c"]);
    assert_eq!(h.drain("small").await, ["a", "b"]);
}

#[tokio::test]
async fn what_cannot_be_moved_or_removed_is_refused_before_anything_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "q", &["a"]);
    h.settle().await;
    let cases = [
        (2, move_to("q", "q")),
        (3, move_to("nothing", "q")),
        (4, move_to("hopmq.held", "q")),
        (5, move_to("q", "hopmq.held")),
        (
            6,
            Operation::RemoveMessages {
                queue: "q".into(),
                selection: Selection::Ids(Vec::new()),
            },
        ),
    ];
    for (id, operation) in cases {
        let error = h.outcome(id, operation).await.expect_err("refused");
        assert!(
            matches!(
                error,
                ApiError::BadRequest { .. }
                    | ApiError::UnknownQueue { .. }
                    | ApiError::BadAddress { .. }
            ),
            "{id}: {error:?}"
        );
    }
    assert_eq!(h.drain("q").await, ["a"]);
}

#[tokio::test]
async fn dead_letters_are_listed_by_reason_and_replayed_to_their_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "orders", &["poison"]);
    h.settle().await;
    h.poison("orders", 100).await;
    h.put(1, 2, "DLQ", &["put straight to DLQ"]);
    h.settle().await;
    let listing = h.listing(3, "DLQ", Selection::All).await;
    assert_eq!(listing.selected, 2);
    assert_eq!(listing.reasons.len(), 2, "{listing:?}");
    let by_reason = h
        .listing(4, "DLQ", Selection::Reason("max_deliveries".into()))
        .await;
    assert_eq!(by_reason.selected, 1);
    assert_eq!(by_reason.messages[0].destination, "orders");
    // Replayed to where it was going, as a fresh delivery without its dead-letter headers;
    // the other one has no address but the dead-letter queue, and stays, with the reason.
    let replay = Operation::MoveMessages(MoveRequest {
        from: "DLQ".into(),
        selection: Selection::All,
        to: MoveTarget::Original,
        replay: true,
    });
    let outcome = h.outcome(5, replay).await.expect("replayed");
    assert_eq!(outcome.done, 1, "{outcome:?}");
    assert_eq!(outcome.left.len(), 1);
    assert!(outcome.left[0].reason.contains("leads back"), "{outcome:?}");
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    h.get(0, 6, "orders", 0, None);
    h.settle().await;
    let replayed = h.messages(0, 6);
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].body, b"poison");
    assert_eq!(replayed[0].delivery_count, 1);
    assert!(
        !replayed[0].headers.keys().any(|k| k.starts_with("hopmq.")),
        "{:?}",
        replayed[0].headers
    );
    assert_eq!(h.drain("DLQ").await, ["put straight to DLQ"]);
}

#[tokio::test]
async fn a_dead_letter_parked_elsewhere_keeps_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "orders", &["poison"]);
    h.settle().await;
    h.poison("orders", 100).await;
    let outcome = h.outcome(2, move_to("DLQ", "parked")).await.expect("moved");
    assert_eq!(outcome.done, 1);
    h.get(0, 3, "parked", 0, None);
    h.settle().await;
    let parked = h.messages(0, 3);
    assert!(parked[0].headers["hopmq.dead_letter_reason"].contains("max_deliveries"));
}
