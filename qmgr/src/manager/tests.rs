//! The core driven directly, with a real journal in a temporary folder and the clock passed
//! in: commits are completed by hand, so the interleavings that matter (a getter leaving while
//! its messages are being written, a lease running out) happen exactly when a test says.

use std::path::Path;

use hopmq::protocol::{Delivery, Operation, OutgoingMessage, Reply, Selector, ServerFrame};
use hopmq::{ApiError, ManagerName};
use hopmq_routing::Topology;

use super::core::{COMPACT_AGE_MS, CoreLimits};
use super::outbox::{self, CONNECTION_BYTES_MAX, Outgoing};
use super::storage::{JournalStorage, JournalWork};
use super::{Command, Core, Now, ToClient, recover};
use crate::config::SyncMode;
use crate::store::{JournalConfig, SyncPolicy};

mod operator;
mod reads;

const NOW: u64 = 1_000_000;

/// The moment `ms` milliseconds into a test, on both clocks.
fn at(ms: u64) -> Now {
    static ORIGIN: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    Now::at(*ORIGIN, std::time::Duration::from_millis(ms), ms)
}

struct Harness {
    core: Core,
    commits: JournalWork,
    frames: Vec<Outgoing>,
}

pub(super) fn limits() -> CoreLimits {
    CoreLimits {
        max_message_bytes: 1024 * 1024,
        max_depth: 1000,
        max_deliveries: 2,
        auto_create_queues: true,
        cache_bytes: 1024 * 1024,
        sync: SyncMode::Never,
        segment_bytes: 1024 * 1024,
        max_hops: 32,
    }
}

impl Harness {
    /// A core over the journal in `dir` (recovered, if it holds one), with `connections`
    /// clients connected as 0, 1, ...
    fn open(dir: &Path, connections: usize) -> Self {
        let name = ManagerName::new("test").expect("name");
        Self::open_in(dir, connections, name.clone(), Topology::standalone(name))
    }

    /// Like `open`, as manager `name` of `topology`.
    fn open_in(dir: &Path, connections: usize, name: ManagerName, topology: Topology) -> Self {
        let mut config = JournalConfig::new(dir);
        config.sync = SyncPolicy::Never;
        config.segment_bytes = 1024 * 1024;
        let (journal, recovered) = recover(config).expect("recover");
        let (storage, commits) = JournalStorage::new(journal);
        let core = Core::new(
            name,
            topology,
            limits(),
            recovered,
            Box::new(storage),
            at(NOW),
            7,
        );
        let mut harness = Self {
            core,
            commits,
            frames: Vec::new(),
        };
        for connection in 0..connections {
            let (frames, outgoing) = outbox::bounded(1024, CONNECTION_BYTES_MAX);
            harness.core.on_command(
                Command::Connected {
                    connection: connection as u64,
                    frames,
                    uid: None,
                },
                at(NOW),
            );
            harness.frames.push(outgoing);
        }
        harness
    }

    fn request(&mut self, connection: u64, id: u64, operation: Operation) {
        self.core.on_command(
            Command::Request {
                connection,
                id,
                operation,
            },
            at(NOW),
        );
    }

    fn put(&mut self, connection: u64, id: u64, queue: &str, bodies: &[&str]) {
        let messages = bodies
            .iter()
            .map(|body| {
                let message = OutgoingMessage {
                    body: body.as_bytes().to_vec(),
                    persistent: true,
                    ..Default::default()
                };
                (queue.to_owned(), message)
            })
            .collect();
        self.request(connection, id, Operation::PutBatch { messages });
    }

    fn get(
        &mut self,
        connection: u64,
        id: u64,
        queue: &str,
        timeout_ms: u64,
        lease_ms: Option<u64>,
    ) {
        let operation = Operation::Get {
            queue: queue.into(),
            timeout_ms,
            max: 10,
            selector: Selector::default(),
            lease_ms,
        };
        self.request(connection, id, operation);
    }

    /// Completes every commit made so far, and those they lead to.
    async fn settle(&mut self) {
        while let Some(commit) = self.commits.next_commit() {
            let result = commit.await;
            self.core.on_commit(result, at(NOW));
        }
    }

    /// Everything connection `connection` was sent, as (request id, result) replies.
    fn replies(&mut self, connection: usize) -> Vec<(u64, Result<Reply, ApiError>)> {
        let mut replies = Vec::new();
        while let Ok(frame) = self.frames[connection].try_recv().map(ToClient::into_frame) {
            if let ServerFrame::Reply { id, result } = frame {
                replies.push((id, result));
            }
        }
        replies
    }

    fn messages(&mut self, connection: usize, request: u64) -> Vec<Delivery> {
        match self
            .replies(connection)
            .into_iter()
            .find(|(id, _)| *id == request)
        {
            Some((_, Ok(Reply::Messages(messages)))) => messages,
            other => panic!("no messages for request {request}: {other:?}"),
        }
    }

    async fn drain(&mut self, queue: &str) -> Vec<String> {
        self.get(0, 999, queue, 0, None);
        self.settle().await;
        self.messages(0, 999)
            .iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect()
    }
}

#[tokio::test]
async fn a_put_to_a_waiting_get_is_handed_over_in_one_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.get(0, 1, "q", 60_000, None);
    assert!(h.replies(0).is_empty(), "the get waits");
    h.put(1, 2, "q", &["a", "b", "c"]);
    // Put and removal are one group: one commit for the whole hand-over.
    let commit = h.commits.next_commit().expect("one commit");
    assert!(h.commits.next_commit().is_none());
    let result = commit.await;
    h.core.on_commit(result, at(NOW));
    let got: Vec<_> = h
        .messages(0, 1)
        .iter()
        .map(|d| (d.body.clone(), d.delivery_count))
        .collect();
    assert_eq!(
        got,
        [(b"a".to_vec(), 1), (b"b".to_vec(), 1), (b"c".to_vec(), 1)]
    );
    assert!(matches!(h.replies(1).as_slice(), [(2, Ok(Reply::Put(ids)))] if ids.len() == 3));
    // Nothing is left, now or after a restart.
    assert!(h.drain("q").await.is_empty());
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert!(h.drain("q").await.is_empty());
}

#[tokio::test]
async fn a_getter_that_leaves_during_a_hand_over_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 3);
    h.get(0, 1, "q", 60_000, None);
    h.put(1, 2, "q", &["kept"]);
    // The getter goes while the put and its removal are being written.
    h.core
        .on_command(Command::Disconnected { connection: 0 }, at(NOW));
    h.settle().await;
    assert!(matches!(h.replies(1).as_slice(), [(2, Ok(Reply::Put(_)))]));
    h.get(2, 3, "q", 0, None);
    h.settle().await;
    assert_eq!(
        h.messages(2, 3)
            .iter()
            .map(|d| d.body.clone())
            .collect::<Vec<_>>(),
        [b"kept".to_vec()]
    );
    // Got for good this time: not back after a restart.
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert!(h.drain("q").await.is_empty());
}

#[tokio::test]
async fn a_message_restored_after_a_hand_over_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.get(0, 1, "q", 60_000, None);
    h.put(1, 2, "q", &["first"]);
    h.core
        .on_command(Command::Disconnected { connection: 0 }, at(NOW));
    h.settle().await;
    h.put(1, 3, "q", &["second"]);
    h.settle().await;
    drop(h);
    // Replay sees Enqueue(first), Remove(first), Enqueue(first) again, Enqueue(second).
    let mut h = Harness::open(dir.path(), 1);
    assert_eq!(h.drain("q").await, ["first", "second"]);
}

#[tokio::test]
async fn a_destructive_get_whose_getter_left_restores_its_messages_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "q", &["a", "b", "c"]);
    h.settle().await;
    h.get(0, 2, "q", 0, None);
    h.core
        .on_command(Command::Disconnected { connection: 0 }, at(NOW));
    h.settle().await;
    h.put(1, 3, "q", &["d"]);
    h.settle().await;
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert_eq!(h.drain("q").await, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn an_expired_lease_returns_the_message_then_dead_letters_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.put(1, 1, "q", &["poison"]);
    h.settle().await;
    for (round, request) in [(1u32, 2u64), (2, 3)] {
        h.get(0, request, "q", 0, Some(100));
        let leased = h.messages(0, request);
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].delivery_count, round);
        assert_eq!(h.core.next_deadline_ms(), Some(NOW + 100));
        h.core.on_timer(at(NOW + 99));
        h.get(1, 100 + request, "q", 0, None);
        assert!(h.messages(1, 100 + request).is_empty(), "still leased");
        h.core.on_timer(at(NOW + 100));
        h.settle().await;
    }
    // Delivered max_deliveries (2) times without an ack: dead-lettered, not back in `q`.
    assert!(h.drain("q").await.is_empty());
    h.get(0, 7, "DLQ", 0, None);
    h.settle().await;
    let dead = h.messages(0, 7);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"poison");
    assert!(dead[0].headers["hopmq.dead_letter_reason"].contains("max_deliveries"));
    assert_eq!(dead[0].headers["hopmq.dead_letter_queue"], "q");
}

#[tokio::test]
async fn a_waiting_get_times_out_empty_and_a_full_queue_refuses_puts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 2);
    h.get(0, 1, "q", 500, None);
    h.core.on_timer(at(NOW + 499));
    assert!(h.replies(0).is_empty());
    h.core.on_timer(at(NOW + 500));
    assert!(h.messages(0, 1).is_empty());
    h.request(
        1,
        2,
        Operation::Declare {
            queue: "small".into(),
            max_depth: Some(2),
        },
    );
    h.put(1, 3, "small", &["1", "2", "3"]);
    let refused = h.replies(1).into_iter().find(|(id, _)| *id == 3);
    assert!(
        matches!(
            refused,
            Some((3, Err(ApiError::QueueFull { max_depth: 2, .. })))
        ),
        "{refused:?}"
    );
    h.put(1, 4, "small", &["1", "2"]);
    h.settle().await;
    h.put(1, 5, "small", &["3"]);
    assert!(matches!(
        h.replies(1).last(),
        Some((5, Err(ApiError::QueueFull { .. })))
    ));
}

#[tokio::test]
async fn transmission_queues_can_be_browsed_but_not_taken_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 1);
    h.request(
        0,
        1,
        Operation::Declare {
            queue: "hopmq.xmit.x".into(),
            max_depth: None,
        },
    );
    h.get(0, 2, "hopmq.held", 0, None);
    h.request(
        0,
        3,
        Operation::Subscribe {
            queue: "hopmq.held".into(),
        },
    );
    h.request(
        0,
        4,
        Operation::Delete {
            queue: "DLQ".into(),
        },
    );
    let replies = h.replies(0);
    assert_eq!(replies.len(), 4);
    assert!(
        replies
            .iter()
            .all(|(_, result)| matches!(result, Err(ApiError::BadRequest { .. }))),
        "{replies:?}"
    );
}

#[tokio::test]
async fn a_selective_waiter_behind_another_is_still_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 3);
    let selective = |queue: &str, correlation: &str| Operation::Get {
        queue: queue.into(),
        timeout_ms: 60_000,
        max: 1,
        selector: Selector {
            correlation_id: Some(correlation.into()),
        },
        lease_ms: None,
    };
    h.request(0, 1, selective("replies", "a"));
    h.request(1, 2, selective("replies", "b"));
    // An unmatched message first, so the next put is queued rather than handed over.
    h.put(2, 3, "replies", &["nobody's"]);
    h.settle().await;
    let reply = OutgoingMessage {
        body: b"for b".to_vec(),
        correlation_id: Some("b".into()),
        persistent: true,
        ..Default::default()
    };
    h.request(
        2,
        4,
        Operation::Put {
            address: "replies".into(),
            message: reply,
        },
    );
    h.settle().await;
    assert_eq!(
        h.messages(1, 2)
            .iter()
            .map(|d| d.body.clone())
            .collect::<Vec<_>>(),
        [b"for b".to_vec()]
    );
    assert!(h.replies(0).is_empty(), "a still waits");
}

#[tokio::test]
async fn a_segment_is_not_deleted_under_a_put_not_yet_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 1);
    h.put(0, 1, "q", &["early"]);
    // Enough to fill the first 1 MiB segment and move on, all written but none applied yet.
    let big = "x".repeat(100 * 1024);
    for n in 0..12 {
        h.put(0, 10 + n, "bulk", &[big.as_str()]);
    }
    let mut finished = Vec::new();
    while let Some(commit) = h.commits.next_commit() {
        finished.push(commit.await);
    }
    assert!(h.core.storage().active_segment() > 1, "the writer moved on");
    h.core.on_maintenance(at(NOW));
    for result in finished {
        h.core.on_commit(result, at(NOW));
    }
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert_eq!(h.drain("q").await, ["early"]);
}

#[tokio::test]
async fn a_mostly_dead_segment_is_compacted_only_once_it_stayed_the_oldest_for_a_while() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 1);
    h.put(0, 1, "pinned", &["old"]);
    // 3.6 MiB through another queue, each message consumed: the first 1 MiB segment holds
    // nothing live but "old".
    let big = "x".repeat(100 * 1024);
    for n in 0..36 {
        h.put(0, 10 + n, "bulk", &[big.as_str()]);
        h.settle().await;
        assert_eq!(h.drain("bulk").await.len(), 1);
    }
    let oldest = |h: &Harness| h.core.storage().stats().segments.first().map(|s| s.segment);
    assert!(h.core.storage().active_segment() >= 4, "segments rolled");
    // Until it has been the oldest for a while, a segment may still drain on its own.
    for now in [at(NOW), at(NOW + COMPACT_AGE_MS - 1)] {
        h.core.on_maintenance(now);
        h.settle().await;
        h.core.on_maintenance(now);
        assert_eq!(oldest(&h), Some(1), "not compacted yet");
    }
    h.core.on_maintenance(at(NOW + COMPACT_AGE_MS));
    h.settle().await;
    h.core.on_maintenance(at(NOW + COMPACT_AGE_MS));
    assert!(oldest(&h).is_some_and(|s| s > 1), "compacted and deleted");
    drop(h);
    let mut h = Harness::open(dir.path(), 1);
    assert_eq!(h.drain("pinned").await, ["old"]);
}

#[tokio::test]
async fn requests_of_a_connection_the_core_closed_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 1);
    h.put(0, 1, "q", &["a", "b"]);
    h.settle().await;
    // A client that stopped reading: its frame channel holds one frame.
    let (frames, _outgoing) = outbox::bounded(1, CONNECTION_BYTES_MAX);
    h.core.on_command(
        Command::Connected {
            connection: 7,
            frames,
            uid: None,
        },
        at(NOW),
    );
    h.request(7, 1, Operation::Status);
    h.request(7, 2, Operation::Status); // the channel is full: the core closes the connection
    h.get(7, 3, "q", 0, Some(60_000));
    h.core
        .on_command(Command::Disconnected { connection: 7 }, at(NOW));
    // Nothing was leased to the closed connection.
    assert_eq!(h.drain("q").await, ["a", "b"]);
}

#[tokio::test]
async fn puts_for_other_managers_wait_in_the_transmission_queue_of_their_next_hop() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../topology.toml"))
        .expect("topology.toml");
    let topology = hopmq_routing::parse(&text, "topology.toml")
        .expect("valid")
        .topology;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open_in(
        dir.path(),
        1,
        ManagerName::new("alpha").expect("name"),
        topology,
    );
    // `orders` is homed on delta, reached from alpha through bravo (cost 2 against 4).
    h.put(0, 1, "orders", &["to delta"]);
    h.put(0, 2, "anything@charlie", &["to charlie"]);
    h.put(0, 3, "replies", &["stays here"]);
    h.put(0, 4, "x@zulu", &["nowhere"]);
    h.settle().await;
    let refused = h.replies(0).into_iter().find(|(id, _)| *id == 4);
    assert!(
        matches!(refused, Some((4, Err(ApiError::NoRoute { .. })))),
        "{refused:?}"
    );
    h.request(
        0,
        5,
        Operation::Browse {
            queue: "hopmq.xmit.bravo".into(),
            max: 10,
        },
    );
    h.request(
        0,
        6,
        Operation::Browse {
            queue: "hopmq.xmit.charlie".into(),
            max: 10,
        },
    );
    let replies = h.replies(0);
    let bodies = |id| -> Vec<Vec<u8>> {
        match replies.iter().find(|(request, _)| *request == id) {
            Some((_, Ok(Reply::Messages(messages)))) => {
                messages.iter().map(|d| d.body.clone()).collect()
            }
            other => panic!("no messages for {id}: {other:?}"),
        }
    };
    assert_eq!(bodies(5), [b"to delta".to_vec()]);
    assert_eq!(bodies(6), [b"to charlie".to_vec()]);
    assert_eq!(h.drain("replies").await, ["stays here"]);
}

/// The moment `mono_ms` into a test while the wall clock reads `wall_ms`: the two apart, as
/// after a step of the wall clock.
fn stepped(mono_ms: u64, wall_ms: u64) -> Now {
    Now {
        wall_ms,
        ..at(mono_ms)
    }
}

#[tokio::test]
async fn a_stepped_wall_clock_neither_stretches_nor_cuts_leases_and_waiting_gets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 3);
    h.put(2, 1, "q", &["leased"]);
    h.settle().await;
    h.get(0, 2, "q", 0, Some(1_000));
    assert_eq!(h.messages(0, 2).len(), 1);
    h.get(1, 3, "empty", 2_000, None);
    const HOUR_MS: u64 = 3_600_000;
    // The wall clock jumps an hour ahead, then an hour behind: nothing may end early.
    for wall_ms in [NOW + HOUR_MS, 1, NOW + 24 * HOUR_MS] {
        h.core.on_timer(stepped(NOW + 999, wall_ms));
        h.core.on_maintenance(stepped(NOW + 999, wall_ms));
        h.settle().await;
        assert!(h.replies(1).is_empty(), "the waiting get ended early");
        h.get(2, 4, "q", 0, None);
        assert!(h.messages(2, 4).is_empty(), "the lease ended early");
    }
    // Nor late: the monotonic deadlines hold whatever the wall clock says.
    h.core.on_timer(stepped(NOW + 1_000, 1));
    h.settle().await;
    h.get(2, 5, "q", 0, None);
    h.settle().await;
    assert_eq!(h.messages(2, 5).len(), 1, "the lease did not end on time");
    h.core.on_timer(stepped(NOW + 2_000, 1));
    assert_eq!(h.replies(1).len(), 1, "the waiting get did not end on time");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_by_bytes_and_subscribers_share_each_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::open(dir.path(), 1);
    const LIMIT_BYTES: usize = 1024 * 1024;
    // Two watchers: one reads, one stopped (SIGSTOP) with a 1 MiB limit.
    let (reading, mut read) = outbox::channel();
    let (stopped, mut unread) = outbox::bounded(64 * 1024, LIMIT_BYTES);
    for (connection, frames) in [(1, reading), (2, stopped)] {
        h.core.on_command(
            Command::Connected {
                connection,
                frames,
                uid: None,
            },
            at(NOW),
        );
        let subscribe = Operation::Subscribe { queue: "q".into() };
        h.request(connection, 1, subscribe);
    }
    let body = "x".repeat(64 * 1024);
    for round in 0..40 {
        h.put(0, 10 + round, "q", &[body.as_str()]);
        h.settle().await;
    }
    let events = |outgoing: &mut Outgoing| {
        let mut events = Vec::new();
        while let Ok(frame) = outgoing.try_recv() {
            if let ToClient::Event { message, .. } = frame {
                events.push(message);
            }
        }
        events
    };
    let (read_events, unread_events) = (events(&mut read), events(&mut unread));
    assert_eq!(
        read_events.len(),
        40,
        "the reading watcher got every message"
    );
    assert!(
        unread_events.len() * 64 * 1024 <= LIMIT_BYTES && unread_events.len() >= 10,
        "the stopped one was cut off at its limit, not buffered: {} events",
        unread_events.len()
    );
    // One encoding per message, shared by both subscribers' frames.
    assert_eq!(read_events[0].as_ptr(), unread_events[0].as_ptr());
    // Cut off for good: the core dropped the connection's outbox with it.
    assert_eq!(
        unread.try_recv().err(),
        Some(tokio::sync::mpsc::error::TryRecvError::Disconnected)
    );
}
