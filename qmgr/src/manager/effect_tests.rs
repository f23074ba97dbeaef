//! Persist, then acknowledge, read off the core's effects: a storage that only records what it
//! is asked to write, commits completed by the test, and the frames the core queues for its
//! client, all in one log. Each test reads the order straight from that log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use hopmq::protocol::{Operation, OutgoingMessage, Reply, Selector, ServerFrame};
use hopmq::{ApiError, ManagerName};
use hopmq_routing::Topology;

use super::outbox::{self, CONNECTION_BYTES_MAX, Outgoing};
use super::storage::{Durability, Storage};
use super::tests::limits;
use super::{Command, Core, Now, ToClient, recover};
use crate::record::{self, Record};
use crate::store::{JournalConfig, JournalStats, Location, StoreError};

/// One effect of the core, as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    /// An append asked of the storage: its durability and the kinds of its records.
    Append(Durability, Vec<&'static str>),
    /// The test completed the oldest append, successfully or not.
    Durable,
    Failed,
    /// A reply queued for the client: its request id and what it says.
    Reply(u64, &'static str),
    /// A publication sent to a transient subscriber: its body.
    Published(String),
}

#[derive(Default)]
struct Log {
    effects: Vec<Effect>,
    /// Appends not yet completed, with the locations they will get.
    pending: VecDeque<Vec<Location>>,
    records: BTreeMap<(u64, u64), Vec<u8>>,
    next_offset: u64,
}

/// A storage that writes nothing anywhere: it logs the append and keeps the payloads for
/// reads. Whether and when an append is durable is the test's to say.
struct Recorder(Arc<Mutex<Log>>);

fn kind(payload: &[u8]) -> &'static str {
    match record::decode(payload) {
        Ok(Record::Enqueue(_)) => "enqueue",
        Ok(Record::Remove(_)) => "remove",
        Ok(Record::ChannelSend(_)) => "channel send",
        Ok(Record::ChannelReceive(_)) => "channel receive",
        Ok(Record::ChannelAssigned(_)) => "channel assigned",
        Ok(Record::Custody(_)) => "custody",
        Ok(Record::Subscriptions(_)) => "subscriptions",
        Ok(Record::Kept(_)) => "kept",
        Err(_) => "garbage",
    }
}

impl Storage for Recorder {
    fn append(&mut self, durability: Durability, payloads: Vec<Bytes>) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let kinds = payloads.iter().map(|p| kind(p)).collect();
        log.effects.push(Effect::Append(durability, kinds));
        let mut locations = Vec::new();
        for payload in payloads {
            let location = Location {
                segment: 1,
                offset: log.next_offset,
                len: payload.len() as u32,
            };
            log.next_offset += 1;
            log.records
                .insert((location.segment, location.offset), payload.to_vec());
            locations.push(location);
        }
        log.pending.push_back(locations);
    }

    fn read(&self, location: Location) -> Result<Vec<u8>, StoreError> {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.records
            .get(&(location.segment, location.offset))
            .cloned()
            .ok_or(StoreError::EmptyGroup)
    }

    fn active_segment(&self) -> u64 {
        1
    }

    fn group_bytes_max(&self) -> u64 {
        1 << 20
    }

    fn retire_segments_before(&mut self, _segment: u64) {}

    fn stats(&self) -> JournalStats {
        JournalStats {
            active_segment: 1,
            segments: Vec::new(),
            bytes_on_disk: 0,
            commits: 0,
            commits_inline: 0,
            records: 0,
            batch_records_last: 0,
            fsyncs: 0,
            fsync_nanos_total: 0,
            fsync_nanos_max: 0,
            fsync_micros_log2_buckets: Default::default(),
        }
    }

    fn save_drained(&mut self, _drained: BTreeSet<ManagerName>) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.effects
            .push(Effect::Append(Durability::Synced, vec!["drained links"]));
        log.pending.push_back(Vec::new());
    }
}

struct Bench {
    core: Core,
    log: Arc<Mutex<Log>>,
    client: Outgoing,
    /// The lease ids of the last messages handed over.
    leases: Vec<u64>,
    /// The last messages handed over.
    messages: Vec<hopmq::protocol::Delivery>,
    _dir: tempfile::TempDir,
}

fn now() -> Now {
    Now::at(std::time::Instant::now(), std::time::Duration::ZERO, 1_000)
}

const PAIR: &str = r#"
[managers.alpha]
address = "127.0.0.1:1"
[managers.bravo]
address = "127.0.0.1:2"
[[links]]
between = ["alpha", "bravo"]
"#;

impl Bench {
    /// A standalone manager.
    fn new() -> Self {
        let name = ManagerName::new("test").expect("name");
        Self::as_manager(name.clone(), Topology::standalone(name))
    }

    /// Manager `name` of `topology`.
    fn as_manager(name: ManagerName, topology: Topology) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Recovery of an empty folder gives the state a fresh manager starts from.
        let (_journal, recovered) = recover(JournalConfig::new(dir.path())).expect("recover");
        let log = Arc::new(Mutex::new(Log::default()));
        let storage = Box::new(Recorder(Arc::clone(&log)));
        let mut core = Core::new(name, topology, limits(), recovered, storage, now(), 7);
        let (frames, client) = outbox::bounded(1024, CONNECTION_BYTES_MAX);
        let connected = Command::Connected {
            connection: 0,
            frames,
            uid: None,
        };
        core.on_command(connected, now());
        Self {
            core,
            log,
            client,
            leases: Vec::new(),
            messages: Vec::new(),
            _dir: dir,
        }
    }

    fn request(&mut self, id: u64, operation: Operation) {
        let request = Command::Request {
            connection: 0,
            id,
            operation,
        };
        self.core.on_command(request, now());
        self.collect_replies();
    }

    /// Completes the oldest append: durable, or failed.
    fn complete(&mut self, durable: bool) {
        let locations = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let locations = log.pending.pop_front().expect("an append to complete");
            log.effects.push(if durable {
                Effect::Durable
            } else {
                Effect::Failed
            });
            locations
        };
        let result = if durable {
            Ok(locations)
        } else {
            Err(StoreError::EmptyGroup)
        };
        self.core.on_commit(result, now());
        self.collect_replies();
    }

    fn collect_replies(&mut self) {
        while let Ok(frame) = self.client.try_recv().map(ToClient::into_frame) {
            if let ServerFrame::Reply { id, result } = frame {
                let said = match result {
                    Ok(Reply::Put(_)) => "put",
                    Ok(Reply::Messages(m)) if m.is_empty() => "no messages",
                    Ok(Reply::Messages(m)) => {
                        self.leases = m.iter().filter_map(|d| d.lease).collect();
                        self.messages = m;
                        "messages"
                    }
                    Ok(Reply::Done) => "done",
                    Ok(Reply::Moved(outcome)) if outcome.stopped.is_some() => "stopped",
                    Ok(Reply::Moved(_)) => "moved",
                    Ok(_) => "other",
                    Err(ApiError::Storage { .. }) => "storage error",
                    Err(_) => "error",
                };
                self.effects_mut().effects.push(Effect::Reply(id, said));
            } else if let ServerFrame::Event { message, .. } = frame {
                let body = String::from_utf8_lossy(&message.body).into_owned();
                self.effects_mut().effects.push(Effect::Published(body));
            }
        }
    }

    fn effects_mut(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn effects(&self) -> Vec<Effect> {
        self.effects_mut().effects.clone()
    }

    fn clear(&self) {
        self.effects_mut().effects.clear();
    }

    fn put(&mut self, id: u64, body: &str) {
        let message = OutgoingMessage {
            body: body.as_bytes().to_vec(),
            persistent: true,
            ..Default::default()
        };
        let put = Operation::Put {
            address: "orders".into(),
            message,
        };
        self.request(id, put);
    }

    fn get(&mut self, id: u64, lease_ms: Option<u64>) {
        let get = Operation::Get {
            queue: "orders".into(),
            timeout_ms: 0,
            max: 10,
            selector: Selector::default(),
            lease_ms,
        };
        self.request(id, get);
    }
}

use Effect::{Append, Durable, Failed, Published, Reply as Replied};

mod coalesce;
mod reports;

#[test]
fn a_put_is_acknowledged_only_after_its_record_is_durable() {
    let mut bench = Bench::new();
    bench.put(1, "one");
    assert_eq!(
        bench.effects(),
        [Append(Durability::Synced, vec!["enqueue"])],
        "nothing is said to the client before the write is durable"
    );
    bench.complete(true);
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["enqueue"]),
            Durable,
            Replied(1, "put")
        ]
    );
}

#[test]
fn a_put_whose_write_failed_is_refused_and_never_delivered() {
    let mut bench = Bench::new();
    bench.put(1, "lost");
    bench.complete(false);
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["enqueue"]),
            Failed,
            Replied(1, "storage error")
        ]
    );
    bench.clear();
    bench.get(2, None);
    assert_eq!(bench.effects(), [Replied(2, "no messages")]);
}

#[test]
fn a_taken_message_is_handed_over_only_after_its_removal_is_durable() {
    let mut bench = Bench::new();
    bench.put(1, "one");
    bench.complete(true);
    bench.clear();
    bench.get(2, None);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Freeing, vec!["remove"])],
        "the message is not handed over before its removal is durable"
    );
    bench.complete(true);
    assert_eq!(&bench.effects()[1..], [Durable, Replied(2, "messages")]);
}

#[test]
fn a_lease_is_handed_out_at_once_and_its_ack_answered_after_the_removal_is_durable() {
    let mut bench = Bench::new();
    bench.put(1, "one");
    bench.complete(true);
    bench.clear();
    bench.get(2, Some(60_000));
    assert_eq!(
        bench.effects(),
        [Replied(2, "messages")],
        "a lease writes nothing: the message stays in the journal until acked"
    );
    assert_eq!(bench.leases.len(), 1);
    bench.clear();
    let ack = Operation::Ack {
        leases: bench.leases.clone(),
    };
    bench.request(3, ack);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Freeing, vec!["remove"])]
    );
    bench.complete(true);
    assert_eq!(&bench.effects()[1..], [Durable, Replied(3, "done")]);
}

#[test]
fn a_drain_is_answered_only_once_it_is_saved() {
    let topology = hopmq_routing::parse(PAIR, "topology.toml")
        .expect("a valid topology")
        .topology;
    let mut bench = Bench::as_manager(ManagerName::new("alpha").expect("name"), topology);
    let drain = |drained| Operation::SetLink {
        neighbour: "bravo".into(),
        drained,
    };
    bench.request(1, drain(true));
    bench.request(2, drain(true));
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["drained links"]),
            Append(Durability::Synced, vec!["drained links"]),
        ],
        "a repeated drain waits for the save in flight too"
    );
    bench.complete(true);
    bench.complete(true);
    assert_eq!(
        &bench.effects()[2..],
        [Durable, Replied(1, "done"), Durable, Replied(2, "done")]
    );
    bench.clear();
    bench.request(3, drain(true));
    assert_eq!(bench.effects(), [Replied(3, "done")], "nothing to save");
    bench.clear();
    bench.request(4, drain(false));
    bench.complete(false);
    assert_eq!(
        bench.effects(),
        [
            Append(Durability::Synced, vec!["drained links"]),
            Failed,
            Replied(4, "storage error")
        ]
    );
}

fn move_orders() -> Operation {
    Operation::MoveMessages(hopmq::protocol::MoveRequest {
        from: "orders".into(),
        selection: hopmq::protocol::Selection::All,
        to: hopmq::protocol::MoveTarget::Address("parked".into()),
        replay: false,
    })
}

#[test]
fn a_move_writes_copies_and_removals_in_one_group_and_answers_once_it_is_durable() {
    let mut bench = Bench::new();
    bench.put(1, "one");
    bench.put(2, "two");
    bench.complete(true);
    bench.complete(true);
    bench.clear();
    bench.request(3, move_orders());
    assert_eq!(
        bench.effects(),
        [Append(
            Durability::Synced,
            vec!["enqueue", "enqueue", "remove"]
        )],
        "the copies and the removal of the originals are one atomic group, answered later"
    );
    bench.complete(true);
    assert_eq!(&bench.effects()[1..], [Durable, Replied(3, "moved")]);
}

#[test]
fn a_move_whose_write_failed_leaves_every_message_where_it_was() {
    let mut bench = Bench::new();
    bench.put(1, "one");
    bench.complete(true);
    bench.clear();
    bench.request(2, move_orders());
    bench.complete(false);
    assert_eq!(&bench.effects()[1..], [Failed, Replied(2, "stopped")]);
    bench.clear();
    bench.get(3, Some(60_000));
    assert_eq!(
        bench.effects(),
        [Replied(3, "messages")],
        "still in its queue"
    );
}

/// A bench with a durable subscription and a transient one to `news.>`, then `news.a`
/// published persistent as request 3: its copy is written, nothing answered or sent yet.
fn published_to_both() -> Bench {
    let mut bench = Bench::new();
    let durable = Operation::CreateSubscription {
        name: "kept".into(),
        filter: "news.>".into(),
        max_depth: None,
    };
    bench.request(1, durable);
    bench.complete(true);
    let transient = Operation::SubscribeTopic {
        filter: "news.>".into(),
    };
    bench.request(2, transient);
    bench.clear();
    let message = OutgoingMessage {
        body: b"first".to_vec(),
        persistent: true,
        ..OutgoingMessage::default()
    };
    let publish = Operation::Publish {
        publications: vec![("news.a".into(), message)],
        retain: false,
    };
    bench.request(3, publish);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Synced, vec!["enqueue"])],
        "nothing answered or sent before the copy is durable"
    );
    bench
}

#[test]
fn a_transient_subscriber_is_sent_a_persistent_publication_once_it_is_durable() {
    let mut bench = published_to_both();
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [Durable, Replied(3, "put"), Published("first".into())]
    );
}

#[test]
fn a_publication_whose_write_failed_reaches_no_transient_subscriber() {
    let mut bench = published_to_both();
    bench.complete(false);
    assert_eq!(
        &bench.effects()[1..],
        [Failed, Replied(3, "storage error")],
        "a publish that fails and is repeated reaches its subscribers once"
    );
}

#[test]
fn a_new_subscription_and_its_retained_publications_are_written_in_one_group() {
    let mut bench = Bench::new();
    let message = OutgoingMessage {
        body: b"last".to_vec(),
        persistent: true,
        ..OutgoingMessage::default()
    };
    let publish = Operation::Publish {
        publications: vec![("news.a".into(), message)],
        retain: true,
    };
    bench.request(1, publish);
    bench.complete(true);
    bench.clear();
    let create = Operation::CreateSubscription {
        name: "kept".into(),
        filter: "news.>".into(),
        max_depth: None,
    };
    bench.request(2, create);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Synced, vec!["subscriptions", "enqueue"])],
        "a crash keeps both or neither: never a subscription without its retained copy"
    );
    bench.complete(true);
    assert_eq!(&bench.effects()[1..], [Durable, Replied(2, "done")]);
    bench.clear();
    let get = Operation::Get {
        queue: "kept".into(),
        timeout_ms: 0,
        max: 10,
        selector: Selector::default(),
        lease_ms: None,
    };
    bench.request(3, get);
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [Durable, Replied(3, "messages")],
        "the retained publication is in the subscription"
    );
}

/// Connection 0 asks (a request to `orders`, waiting 10 s for its reply) and serves: the
/// request is stored, then leased.
fn asked_and_leased() -> Bench {
    let mut bench = Bench::new();
    let message = OutgoingMessage {
        body: b"question".to_vec(),
        persistent: true,
        ..Default::default()
    };
    let request = Operation::Request {
        address: "orders".into(),
        message,
        timeout_ms: 10_000,
    };
    bench.request(1, request);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Synced, vec!["enqueue"])]
    );
    bench.complete(true);
    assert_eq!(
        bench.effects().last(),
        Some(&Durable),
        "no answer before the reply"
    );
    bench.get(2, Some(30_000));
    assert_eq!(bench.leases.len(), 1);
    bench.clear();
    bench
}

fn reply(bench: &mut Bench, id: u64) {
    let lease = bench.leases[0];
    let message = OutgoingMessage {
        body: b"answer".to_vec(),
        persistent: true,
        ..Default::default()
    };
    bench.request(id, Operation::Reply { lease, message });
}

#[test]
fn a_reply_and_the_removal_of_its_request_are_one_write() {
    let mut bench = asked_and_leased();
    reply(&mut bench, 3);
    assert_eq!(
        bench.effects(),
        [Append(Durability::Synced, vec!["enqueue", "remove"])],
        "the reply, handed to the waiting request, and the request's removal: both or neither"
    );
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [Durable, Replied(3, "put"), Replied(1, "messages")]
    );
}

#[test]
fn a_reply_whose_write_failed_leaves_its_request_to_be_answered_again() {
    let mut bench = asked_and_leased();
    reply(&mut bench, 3);
    bench.complete(false);
    assert_eq!(&bench.effects()[1..], [Failed, Replied(3, "storage error")]);
    // The request is back in its queue, and its asker still waits.
    bench.clear();
    bench.get(4, Some(30_000));
    assert_eq!(bench.effects(), [Replied(4, "messages")]);
    bench.clear();
    reply(&mut bench, 5);
    bench.complete(true);
    assert_eq!(
        &bench.effects()[1..],
        [Durable, Replied(5, "put"), Replied(1, "messages")]
    );
}
