//! Two cores wired back to back through in-memory channels, with real journals and commits
//! completed by hand: the exactly-once promises of forwarding at the core's level, where a
//! lost ack, a restart between store and ack, or a segment roll happen exactly when a test
//! says.

use std::path::Path;

use hopmq::ManagerName;
use hopmq::protocol::{Operation, OutgoingMessage, Reply, Selector, ServerFrame};
use tokio::sync::mpsc;

use crate::channel::connection::{CHANNEL_FRAMES_MAX, Channel, ChannelOut, UNWINDOWED_BYTES_MAX};
use crate::channel::frame::{Batch, ChannelFrame};
use crate::manager::core::COMPACT_AGE_MS;
use crate::manager::outbox::{self, Outgoing};
use crate::manager::storage::{JournalStorage, JournalWork};
use crate::manager::{ChannelDirection, Command, Core, Now, ToClient, recover};
use crate::store::{JournalConfig, SyncPolicy};

const NOW: u64 = 1_000_000;

/// The moment `ms` milliseconds into a test, on both clocks.
fn at(ms: u64) -> Now {
    static ORIGIN: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    Now::at(*ORIGIN, std::time::Duration::from_millis(ms), ms)
}

const TOPOLOGY: &str = r#"
[managers.alpha]
address = "127.0.0.1:1"
[managers.bravo]
address = "127.0.0.1:2"
[[links]]
between = ["alpha", "bravo"]
[queues.orders]
home = "bravo"
"#;

struct Node {
    core: Core,
    commits: JournalWork,
    client: Outgoing,
}

impl Node {
    fn open(dir: &Path, name: &str) -> Node {
        Node::open_with(dir, name, 1024 * 1024)
    }

    fn open_with(dir: &Path, name: &str, segment_bytes: u64) -> Node {
        Node::open_in(dir, name, segment_bytes, TOPOLOGY)
    }

    fn open_in(dir: &Path, name: &str, segment_bytes: u64, topology: &str) -> Node {
        let topology = hopmq_routing::parse(topology, "topology.toml")
            .expect("a valid topology")
            .topology;
        let mut config = JournalConfig::new(dir);
        config.sync = SyncPolicy::Never;
        config.segment_bytes = segment_bytes;
        let (journal, recovered) = recover(config).expect("recover");
        let (storage, commits) = JournalStorage::new(journal);
        let limits = crate::manager::tests::limits();
        let name = ManagerName::new(name).expect("name");
        let mut core = Core::new(
            name,
            topology,
            limits,
            recovered,
            Box::new(storage),
            at(NOW),
            7,
        );
        let (frames, client) = outbox::channel();
        core.on_command(
            Command::Connected {
                connection: 0,
                frames,
                uid: None,
            },
            at(NOW),
        );
        Node {
            core,
            commits,
            client,
        }
    }

    /// Completes every commit made so far, and those they lead to; true if there were any.
    async fn settle(&mut self) -> bool {
        let mut any = false;
        while let Some(commit) = self.commits.next_commit() {
            let result = commit.await;
            self.core.on_commit(result, at(NOW));
            any = true;
        }
        any
    }

    fn put(&mut self, bodies: impl IntoIterator<Item = String>) {
        self.put_to("orders", bodies);
    }

    fn put_to(&mut self, queue: &str, bodies: impl IntoIterator<Item = String>) {
        let messages = bodies
            .into_iter()
            .map(|body| {
                let message = OutgoingMessage {
                    body: body.into_bytes(),
                    persistent: true,
                    ..Default::default()
                };
                (queue.to_owned(), message)
            })
            .collect();
        self.core.on_command(
            Command::Request {
                connection: 0,
                id: 1,
                operation: Operation::PutBatch { messages },
            },
            at(NOW),
        );
    }

    /// Takes everything in `orders` (after settling), as bodies.
    async fn take_all(&mut self) -> Vec<String> {
        self.take_all_from("orders").await
    }

    async fn take_all_from(&mut self, queue: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            self.core.on_command(
                Command::Request {
                    connection: 0,
                    id: 2,
                    operation: Operation::Get {
                        queue: queue.into(),
                        timeout_ms: 0,
                        max: 256,
                        selector: Selector::default(),
                        lease_ms: None,
                    },
                },
                at(NOW),
            );
            self.settle().await;
            let mut got = 0;
            while let Ok(frame) = self.client.try_recv().map(ToClient::into_frame) {
                if let ServerFrame::Reply {
                    id: 2,
                    result: Ok(Reply::Messages(messages)),
                } = frame
                {
                    got += messages.len();
                    bodies.extend(
                        messages
                            .into_iter()
                            .map(|m| String::from_utf8(m.body).expect("text")),
                    );
                }
            }
            if got == 0 {
                return bodies;
            }
        }
    }

    fn transmission_depth(&self) -> u64 {
        self.core
            .link_status(at(NOW))
            .iter()
            .map(|l| l.transmission_depth)
            .sum()
    }
}

/// One connection each way between alpha (sender) and bravo (receiver).
struct Wire {
    /// Frames alpha sends, to bravo's inbound connection.
    to_bravo: mpsc::Receiver<ChannelOut>,
    /// Frames bravo sends back, to alpha's outbound connection.
    to_alpha: mpsc::Receiver<ChannelOut>,
    outbound: u64,
    inbound: u64,
}

fn connect(alpha: &mut Node, bravo: &mut Node, id: u64) -> Wire {
    let (a_tx, to_bravo) = mpsc::channel(CHANNEL_FRAMES_MAX);
    let (b_tx, to_alpha) = mpsc::channel(CHANNEL_FRAMES_MAX);
    let (outbound, inbound) = (2 * id, 2 * id + 1);
    bravo.core.on_command(
        Command::ChannelOpened {
            neighbour: ManagerName::new("alpha").expect("name"),
            direction: ChannelDirection::Inbound,
            channel: Channel::new(inbound, b_tx),
        },
        at(NOW),
    );
    alpha.core.on_command(
        Command::ChannelOpened {
            neighbour: ManagerName::new("bravo").expect("name"),
            direction: ChannelDirection::Outbound,
            channel: Channel::new(outbound, a_tx),
        },
        at(NOW),
    );
    Wire {
        to_bravo,
        to_alpha,
        outbound,
        inbound,
    }
}

impl Wire {
    /// Moves frames and completes commits until nothing moves. With `deliver_acks` false,
    /// bravo's answers after its welcome are lost on the way.
    async fn run(&mut self, alpha: &mut Node, bravo: &mut Node, deliver_acks: bool) {
        loop {
            let mut moved = alpha.settle().await | bravo.settle().await;
            while let Ok(frame) = self.to_bravo.try_recv().map(ChannelOut::into_frame) {
                moved = true;
                bravo.core.on_command(
                    Command::ChannelFrame {
                        connection: self.inbound,
                        frame,
                    },
                    at(NOW),
                );
            }
            while let Ok(frame) = self.to_alpha.try_recv().map(ChannelOut::into_frame) {
                moved = true;
                let is_ack = matches!(frame, ChannelFrame::Ack { .. });
                if is_ack && !deliver_acks {
                    continue;
                }
                alpha.core.on_command(
                    Command::ChannelFrame {
                        connection: self.outbound,
                        frame,
                    },
                    at(NOW),
                );
            }
            if !moved {
                return;
            }
        }
    }

    fn close(self, alpha: &mut Node, bravo: &mut Node) {
        alpha.core.on_command(
            Command::ChannelClosed {
                connection: self.outbound,
                reason: "test".into(),
            },
            at(NOW),
        );
        bravo.core.on_command(
            Command::ChannelClosed {
                connection: self.inbound,
                reason: "test".into(),
            },
            at(NOW),
        );
    }
}

/// alpha and bravo opened on their journals and connected, the handshake done.
async fn connected(alpha_dir: &Path, bravo_dir: &Path) -> (Node, Node, Wire) {
    let mut alpha = Node::open(alpha_dir, "alpha");
    let mut bravo = Node::open(bravo_dir, "bravo");
    let mut wire = connect(&mut alpha, &mut bravo, 1);
    wire.run(&mut alpha, &mut bravo, true).await;
    (alpha, bravo, wire)
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("m{n}")).collect()
}

#[tokio::test]
async fn messages_cross_once_and_in_order() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    alpha.put(numbered(0..100));
    alpha.put(numbered(100..300));
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all().await, numbered(0..300));
    assert_eq!(alpha.transmission_depth(), 0, "every message was acked");
}

#[tokio::test]
async fn lost_acks_make_resends_that_are_stored_once() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    alpha.put(numbered(0..50));
    wire.run(&mut alpha, &mut bravo, false).await;
    assert_eq!(alpha.transmission_depth(), 50, "nothing acked yet");
    wire.close(&mut alpha, &mut bravo);
    let mut wire = connect(&mut alpha, &mut bravo, 2);
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(alpha.transmission_depth(), 0);
    assert_eq!(bravo.take_all().await, numbered(0..50));
}

#[tokio::test]
async fn a_restart_of_either_end_between_store_and_ack_duplicates_nothing() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    alpha.put(numbered(0..40));
    wire.run(&mut alpha, &mut bravo, false).await;
    // Both restart from their journals: bravo holds the batch, alpha still holds it as sent
    // under its channel sequence numbers.
    drop(wire);
    drop(alpha);
    drop(bravo);
    let mut alpha = Node::open(dirs.0.path(), "alpha");
    let mut bravo = Node::open(dirs.1.path(), "bravo");
    assert_eq!(alpha.transmission_depth(), 40);
    alpha.put(numbered(40..60));
    let mut wire = connect(&mut alpha, &mut bravo, 1);
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all().await, numbered(0..60));
    assert_eq!(alpha.transmission_depth(), 0);
}

/// The topology after an edit took the link alpha–bravo away: charlie is the way.
const WITHOUT_THE_LINK: &str = r#"
[managers.alpha]
address = "127.0.0.1:1"
[managers.bravo]
address = "127.0.0.1:2"
[managers.charlie]
address = "127.0.0.1:3"
[[links]]
between = ["alpha", "charlie"]
[[links]]
between = ["charlie", "bravo"]
[queues.orders]
home = "bravo"
"#;

#[tokio::test]
async fn a_restart_with_a_link_gone_sends_what_was_in_flight_on_it_around() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    alpha.put(numbered(0..40));
    wire.run(&mut alpha, &mut bravo, false).await;
    assert_eq!(alpha.transmission_depth(), 40, "in flight, unacknowledged");
    drop(wire);
    drop(alpha);
    // alpha restarts with a topology that no longer links it to bravo: no change of routes
    // will ever come to move what its journal holds in flight on that link.
    let mut alpha = Node::open_in(dirs.0.path(), "alpha", 1024 * 1024, WITHOUT_THE_LINK);
    alpha.settle().await;
    let waiting = |neighbour: &str| {
        let links = alpha.core.link_status(at(NOW));
        let link = links.iter().find(|l| l.neighbour == neighbour);
        link.map(|l| (l.transmission_depth, l.in_flight))
    };
    assert_eq!(
        waiting("charlie"),
        Some((40, 0)),
        "copies wait for the new way to bravo"
    );
}

#[tokio::test]
async fn channel_state_survives_the_deletion_of_the_segments_that_held_it() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    alpha.put(numbered(0..10));
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all().await.len(), 10);
    // Then only local traffic at both ends, consumed as it comes: several 1 MiB segments
    // roll, and the ones holding the last channel records are left behind.
    let body = "x".repeat(8 * 1024);
    for round in 0..8 {
        for node in [&mut alpha, &mut bravo] {
            node.put_to("local", (0..64).map(|n| format!("{round}-{n}-{body}")));
            node.settle().await;
            assert_eq!(node.take_all_from("local").await.len(), 64);
            node.core.on_maintenance(at(NOW + round * COMPACT_AGE_MS));
            node.settle().await;
        }
    }
    for node in [&alpha, &bravo] {
        let segments = node.core.storage().stats().segments;
        assert!(
            segments.first().is_some_and(|s| s.segment > 1),
            "old segments were deleted: {segments:?}"
        );
    }
    let receiver_state = bravo
        .core
        .links
        .iter()
        .map(|(_, link)| link)
        .next()
        .expect("a link")
        .durable_receiver;
    let sender_state = alpha
        .core
        .links
        .iter()
        .map(|(_, link)| link)
        .next()
        .expect("a link")
        .persisted_sender;
    drop(wire);
    drop(alpha);
    drop(bravo);
    let alpha = Node::open(dirs.0.path(), "alpha");
    let bravo = Node::open(dirs.1.path(), "bravo");
    assert_eq!(
        bravo
            .core
            .links
            .iter()
            .map(|(_, link)| link)
            .next()
            .expect("a link")
            .durable_receiver,
        receiver_state,
        "the receiver's state was recovered, not reset"
    );
    assert_eq!(
        alpha
            .core
            .links
            .iter()
            .map(|(_, link)| link)
            .next()
            .expect("a link")
            .persisted_sender,
        sender_state
    );
}

#[tokio::test]
async fn messages_waiting_for_an_ack_do_not_pin_old_segments() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    alpha.put(numbered(0..10));
    // Sent, never acked: the link then goes down for a long time.
    wire.run(&mut alpha, &mut bravo, false).await;
    wire.close(&mut alpha, &mut bravo);
    assert_eq!(alpha.transmission_depth(), 10);
    let body = "x".repeat(8 * 1024);
    for round in 0..8 {
        alpha.put_to("local", (0..64).map(|n| format!("{round}-{n}-{body}")));
        alpha.settle().await;
        assert_eq!(alpha.take_all_from("local").await.len(), 64);
        // Each pass comes a compaction age after the last: a segment still pinned is copied.
        alpha.core.on_maintenance(at(NOW + round * COMPACT_AGE_MS));
        alpha.settle().await;
    }
    let segments = alpha.core.storage().stats().segments;
    assert!(
        segments.first().is_some_and(|s| s.segment > 2),
        "the in-flight messages were compacted, not left pinning: {segments:?}"
    );
    // They still arrive, once, after a restart too.
    drop(alpha);
    let mut alpha = Node::open(dirs.0.path(), "alpha");
    let mut wire = connect(&mut alpha, &mut bravo, 2);
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all().await, numbered(0..10));
    assert_eq!(alpha.transmission_depth(), 0);
}

#[tokio::test]
async fn a_message_too_large_for_the_receivers_journal_is_dead_lettered_not_wedged() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // alpha's segments take a 1000 KB message; bravo's (1 MiB) do not.
    let mut alpha = Node::open_with(dirs.0.path(), "alpha", 8 * 1024 * 1024);
    let mut bravo = Node::open(dirs.1.path(), "bravo");
    let mut wire = connect(&mut alpha, &mut bravo, 1);
    wire.run(&mut alpha, &mut bravo, true).await;
    alpha.put(["x".repeat(1000 * 1024)]);
    alpha.put(numbered(0..3));
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(
        bravo.take_all().await,
        numbered(0..3),
        "the link was not wedged"
    );
    let dead = bravo.take_all_from("DLQ").await;
    assert_eq!(dead, vec![String::new()], "a notice without the body");
    assert_eq!(alpha.transmission_depth(), 0);
}

impl Node {
    fn request(&mut self, id: u64, operation: Operation) {
        let request = Command::Request {
            connection: 0,
            id,
            operation,
        };
        self.core.on_command(request, at(NOW));
    }

    /// Publishes persistent `bodies` to topic `t.x`, in one request.
    fn publish(&mut self, bodies: impl IntoIterator<Item = String>) {
        self.publish_as(bodies, true);
    }

    /// Publishes `bodies` to topic `t.x`, persistent or not, in one request.
    fn publish_as(&mut self, bodies: impl IntoIterator<Item = String>, persistent: bool) {
        let publications = bodies
            .into_iter()
            .map(|body| {
                let message = OutgoingMessage {
                    body: body.into_bytes(),
                    persistent,
                    ..Default::default()
                };
                ("t.x".to_owned(), message)
            })
            .collect();
        let retain = false;
        self.request(
            3,
            Operation::Publish {
                publications,
                retain,
            },
        );
    }
}

/// Makes `count` durable subscriptions to `t.>` at bravo, and lets alpha hear of them.
async fn subscribed(alpha: &mut Node, bravo: &mut Node, wire: &mut Wire, count: u64) {
    for n in 0..count {
        let operation = Operation::CreateSubscription {
            name: format!("s{n}"),
            filter: "t.>".into(),
            max_depth: None,
        };
        bravo.request(10 + n, operation);
    }
    wire.run(alpha, bravo, true).await;
}

#[tokio::test]
async fn publications_that_wait_whole_for_room_in_a_received_batch_keep_their_order() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    // Four subscriptions at bravo: every publication arriving there makes four copies.
    subscribed(&mut alpha, &mut bravo, &mut wire, 4).await;
    // One batch: the copies of the first large publications fill the journal group of its
    // write at bravo (1 MiB segments), so the last large one waits whole with the held
    // messages; the small one after it fits, but must not pass it. Then a later batch.
    let large = "x".repeat(60 * 1024);
    let first = (0..4).map(|n| format!("p{n} {large}"));
    alpha.publish(first.chain(["p4".to_owned()]));
    wire.run(&mut alpha, &mut bravo, true).await;
    alpha.publish(["p5".to_owned()]);
    wire.run(&mut alpha, &mut bravo, true).await;
    let names = |bodies: Vec<String>| -> Vec<String> {
        bodies
            .iter()
            .map(|b| b.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    };
    let expected: Vec<String> = (0..6).map(|n| format!("p{n}")).collect();
    // Without a maintenance tick: nothing waits for one.
    for n in 0..4 {
        let got = names(bravo.take_all_from(&format!("s{n}")).await);
        assert_eq!(got, expected, "subscription s{n}");
    }
}

#[tokio::test]
async fn non_persistent_publications_for_a_peer_that_stops_reading_are_dropped_past_a_byte_budget()
{
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    subscribed(&mut alpha, &mut bravo, &mut wire, 1).await;
    // bravo stops reading: nothing carries alpha's frames any more. 40 MiB is published.
    let body = "x".repeat(64 * 1024);
    for _ in 0..160 {
        alpha.publish_as(vec![body.clone(); 4], false);
    }
    let mut queued = 0;
    while let Ok(frame) = wire.to_bravo.try_recv().map(ChannelOut::into_frame) {
        if let ChannelFrame::Publications(messages) = frame {
            queued += messages.iter().map(|m| m.payload.len()).sum::<usize>();
        }
    }
    assert!(queued > 0, "what the budget has room for is sent");
    assert!(
        queued <= UNWINDOWED_BYTES_MAX,
        "{queued} bytes queued for a peer that stopped reading"
    );
    let dropped = alpha.core.pubsub.totals.volatile_dropped;
    assert!(
        dropped >= 160 * 4 - (UNWINDOWED_BYTES_MAX / body.len()) as u64,
        "the rest is dropped and counted, not held: {dropped}"
    );
    // Taken by the writer, the budget is free again: the next publications go.
    alpha.publish_as(vec![body.clone(); 4], false);
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all_from("s0").await.len(), 4);
}

#[tokio::test]
async fn a_publication_for_an_idle_link_is_given_its_channel_in_the_write_that_stores_it() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    subscribed(&mut alpha, &mut bravo, &mut wire, 1).await;
    // The first stamp of an incarnation writes the custody record first, once.
    alpha.publish(["p0".to_owned()]);
    wire.run(&mut alpha, &mut bravo, true).await;
    alpha.publish(["p1".to_owned()]);
    let write = alpha
        .commits
        .next_commit()
        .expect("the publication's write");
    alpha.core.on_commit(write.await, at(NOW));
    assert!(
        alpha.commits.next_commit().is_none(),
        "a second write before the copy leaves: its channel assignment was not in the first"
    );
    let mut sent = 0;
    while let Ok(frame) = wire.to_bravo.try_recv().map(ChannelOut::into_frame) {
        if let ChannelFrame::Batch(batch) = &frame {
            sent += batch.messages.len();
        }
        let connection = wire.inbound;
        let frame = Command::ChannelFrame { connection, frame };
        bravo.core.on_command(frame, at(NOW));
    }
    assert_eq!(sent, 1, "the copy left with the write that stored it");
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all_from("s0").await, ["p0", "p1"]);
}

#[tokio::test]
async fn early_copies_are_taken_only_where_the_stream_would_go_on_and_store_nothing_twice() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut alpha, mut bravo, mut wire) = connected(dirs.0.path(), dirs.1.path()).await;
    let mut frames = Vec::new();
    for n in 0..3 {
        alpha.put(numbered(n..n + 1));
        alpha.settle().await;
        while let Ok(frame) = wire.to_bravo.try_recv().map(ChannelOut::into_frame) {
            frames.push(frame);
        }
    }
    let batches: Vec<Batch> = frames
        .iter()
        .filter_map(|frame| match frame {
            ChannelFrame::Batch(batch) => Some(batch.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(batches.len(), 3, "one batch a put: {frames:?}");
    // The third's copy would leave a gap: dropped. The first's is taken, and the second's
    // while the first is being written; then the third's again (a repeat), which follows on
    // from the second's waiting in the inbox.
    for batch in [&batches[2], &batches[0], &batches[1], &batches[2]] {
        let batch = batch.clone();
        let connection = wire.inbound;
        bravo
            .core
            .on_command(Command::EarlyBatch { connection, batch }, at(NOW));
    }
    // A copy on a connection this side sends on means nothing.
    let (connection, batch) = (wire.outbound, batches[0].clone());
    alpha
        .core
        .on_command(Command::EarlyBatch { connection, batch }, at(NOW));
    // Then the stream brings all three.
    for frame in frames {
        let connection = wire.inbound;
        bravo
            .core
            .on_command(Command::ChannelFrame { connection, frame }, at(NOW));
    }
    wire.run(&mut alpha, &mut bravo, true).await;
    assert_eq!(bravo.take_all().await, numbered(0..3));
    assert_eq!(alpha.transmission_depth(), 0, "every message was acked");
    let early: u64 = bravo
        .core
        .link_status(at(NOW))
        .iter()
        .map(|l| l.early_batches)
        .sum();
    assert_eq!(early, 3);
}
