//! A sender and a receiver driven through a simulated link, journal and crashes, by random
//! sequences of operations (proptest: a failing case shrinks and its seed replays exactly).
//!
//! The model keeps each side's durable state apart from its memory, the way the journal does:
//! a crash keeps only what was persisted. The link is one ordered stream per connection (as a
//! QUIC stream): loss is a connection reset, which drops everything in flight both ways.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::frame::{Batch, ChannelFrame, decode, encode};
use super::receiver::{
    RECENT_IDS_MAX, Receiver, ReceiverOutput, ReceiverState, Store, StoredMessage,
};
use super::sender::{HeldMessage, Sender, SenderState};

/// One entry of the sender's durable transmission queue.
#[derive(Debug, Clone)]
struct QueuedMessage {
    id: u128,
    payload: Vec<u8>,
    seq: Option<u64>,
}

/// Journal writes of the sender not yet durable.
#[derive(Debug, Clone)]
enum SenderWrite {
    Assign { id: u128, seq: u64 },
    Delete { seq: u64 },
    State(SenderState),
}

#[derive(Debug, Clone)]
enum Op {
    /// An application puts a message for the neighbour.
    Put,
    /// The driver hands waiting messages to the sender.
    Feed(usize),
    /// The sender's journal writes become durable.
    PersistSender,
    /// Open a connection if none.
    Connect,
    /// Send up to n frames from the sender.
    Transmit(usize),
    /// Deliver up to n frames to the receiver.
    DeliverToReceiver(usize),
    /// Deliver up to n frames to the sender.
    DeliverToSender(usize),
    /// Complete up to n receiver journal writes.
    PersistReceiver(usize),
    /// The frame at the head towards the receiver arrives twice (batches only: a duplicate
    /// handshake is not something a stream can produce).
    DuplicateBatch,
    /// The frame at the head towards the sender arrives twice (acks only).
    DuplicateAck,
    /// An early copy (a datagram) of the n-th batch in flight towards the receiver arrives
    /// ahead of the stream, which still carries the batch itself.
    Early(usize),
    /// The connection resets: everything in flight is lost.
    Reset,
    /// Time passes.
    Tick(u64),
    /// The receiver's process dies: unpersisted stores are lost.
    CrashReceiver,
    /// The sender's process dies: unpersisted assignments and deletions are lost.
    CrashSender,
    /// The receiver's channel state is rolled back to an earlier durable state under a new
    /// epoch (restored from a backup), while the messages it stored, and so their ids, remain.
    RollBackReceiver(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Put),
        4 => (1usize..8).prop_map(Op::Feed),
        4 => Just(Op::PersistSender),
        3 => Just(Op::Connect),
        6 => (1usize..4).prop_map(Op::Transmit),
        6 => (1usize..4).prop_map(Op::DeliverToReceiver),
        6 => (1usize..4).prop_map(Op::DeliverToSender),
        5 => (1usize..3).prop_map(Op::PersistReceiver),
        1 => Just(Op::DuplicateBatch),
        1 => Just(Op::DuplicateAck),
        3 => any::<usize>().prop_map(Op::Early),
        1 => Just(Op::Reset),
        2 => (0u64..20_000).prop_map(Op::Tick),
        1 => Just(Op::CrashReceiver),
        1 => Just(Op::CrashSender),
    ]
}

fn op_with_rollbacks() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => op(),
        1 => any::<usize>().prop_map(Op::RollBackReceiver),
    ]
}

/// Makes the frame at the head of `queue` arrive twice, if `duplicable` says it may.
fn duplicate_head(queue: &mut VecDeque<Vec<u8>>, duplicable: impl Fn(&ChannelFrame) -> bool) {
    if let Some(bytes) = queue.front().cloned() {
        if matches!(decode(&bytes), Ok(Some((frame, _))) if duplicable(&frame)) {
            queue.push_front(bytes);
        }
    }
}

const SENDER_EPOCH: u64 = 0x5e4d;

struct World {
    now: Instant,
    next_id: u128,
    put_order: Vec<u128>,

    sender: Sender,
    sender_queue: Vec<QueuedMessage>,
    sender_state: SenderState,
    sender_writes: Vec<SenderWrite>,
    unpushed: VecDeque<(u128, Vec<u8>)>,

    receiver: Receiver,
    receiver_stored: Vec<StoredMessage>,
    receiver_state: ReceiverState,
    receiver_history: Vec<ReceiverState>,
    receiver_writes: VecDeque<Store>,

    connected: bool,
    to_receiver: VecDeque<Vec<u8>>,
    to_sender: VecDeque<Vec<u8>>,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        let sender_state = SenderState {
            epoch: SENDER_EPOCH,
            receiver_epoch: None,
            next_seq: 1,
        };
        let receiver_state = ReceiverState {
            epoch: 1,
            sender_epoch: None,
            stored_up_to: 0,
            reconcile_until: 0,
        };
        World {
            now,
            next_id: 0,
            put_order: Vec::new(),
            sender: Sender::new("alpha", "bravo", sender_state, [], now).unwrap(),
            sender_queue: Vec::new(),
            sender_state,
            sender_writes: Vec::new(),
            unpushed: VecDeque::new(),
            receiver: Receiver::new(receiver_state, []),
            receiver_stored: Vec::new(),
            receiver_state,
            receiver_history: vec![receiver_state],
            receiver_writes: VecDeque::new(),
            connected: false,
            to_receiver: VecDeque::new(),
            to_sender: VecDeque::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Put => self.put(),
            Op::Feed(n) => self.feed(n),
            Op::PersistSender => self.persist_sender(),
            Op::Connect => self.connect(),
            Op::Transmit(n) => self.transmit(n),
            Op::DeliverToReceiver(n) => self.deliver_to_receiver(n),
            Op::DeliverToSender(n) => self.deliver_to_sender(n),
            Op::PersistReceiver(n) => {
                for _ in 0..n.min(self.receiver_writes.len()) {
                    self.persist_receiver_one();
                }
            }
            Op::DuplicateBatch => {
                duplicate_head(&mut self.to_receiver, |frame| {
                    matches!(frame, ChannelFrame::Batch(_))
                });
            }
            Op::DuplicateAck => {
                duplicate_head(&mut self.to_sender, |frame| {
                    matches!(frame, ChannelFrame::Ack { .. })
                });
            }
            Op::Early(pick) => self.deliver_early(pick),
            Op::Reset => self.reset(),
            Op::Tick(ms) => self.tick(ms),
            Op::CrashReceiver => {
                self.reset();
                self.receiver_writes.clear();
                self.restart_receiver(self.receiver_state);
            }
            Op::CrashSender => self.crash_sender(),
            Op::RollBackReceiver(pick) => self.roll_back_receiver(pick),
        }
    }

    fn put(&mut self) {
        self.next_id += 1;
        // Ids look like real ones: spread over the whole range.
        let id = self
            .next_id
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let payload = format!("message {}", self.next_id).into_bytes();
        self.put_order.push(id);
        self.sender_queue.push(QueuedMessage {
            id,
            payload: payload.clone(),
            seq: None,
        });
        self.unpushed.push_back((id, payload));
    }

    fn feed(&mut self, n: usize) {
        for _ in 0..n {
            let Some((id, payload)) = self.unpushed.front().cloned() else {
                break;
            };
            if !self.sender.can_push(payload.len()) {
                break;
            }
            let seq = self.sender.push(id, payload.into()).unwrap();
            self.unpushed.pop_front();
            self.sender_writes.push(SenderWrite::Assign { id, seq });
            self.sender_writes
                .push(SenderWrite::State(self.sender.state()));
        }
    }

    fn connect(&mut self) {
        if !self.connected {
            self.connected = true;
            self.sender.handle_connecting(self.now);
            self.receiver.handle_disconnected();
        }
    }

    fn transmit(&mut self, n: usize) {
        for _ in 0..n {
            let Some(frame) = self.sender.poll_transmit(self.now) else {
                break;
            };
            assert!(self.connected, "a frame without a connection: {frame:?}");
            self.to_receiver.push_back(encode(&frame).unwrap());
        }
    }

    fn deliver_to_receiver(&mut self, n: usize) {
        for _ in 0..n {
            let Some(bytes) = self.to_receiver.pop_front() else {
                break;
            };
            let (frame, used) = decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            match self.receiver.handle_frame(frame).unwrap() {
                ReceiverOutput::Send(reply) => {
                    self.to_sender.push_back(encode(&reply).unwrap());
                }
                ReceiverOutput::Store(store) => self.receiver_writes.push_back(store),
                ReceiverOutput::Nothing => {}
            }
        }
    }

    /// Takes an early copy of a batch in flight, as the driver does with a datagram: only if
    /// the receiver says it follows on, never as an error.
    fn deliver_early(&mut self, pick: usize) {
        let batches: Vec<Batch> = self
            .to_receiver
            .iter()
            .filter_map(|bytes| match decode(bytes) {
                Ok(Some((ChannelFrame::Batch(batch), _))) => Some(batch),
                _ => None,
            })
            .collect();
        if batches.is_empty() {
            return;
        }
        let batch = batches[pick % batches.len()].clone();
        if self
            .receiver
            .takes_early(batch.first_seq, batch.messages.len(), 0)
        {
            let store = self
                .receiver
                .handle_batch(batch.first_seq, batch.messages)
                .unwrap();
            self.receiver_writes.push_back(store);
        }
    }

    fn deliver_to_sender(&mut self, n: usize) {
        for _ in 0..n {
            let Some(bytes) = self.to_sender.pop_front() else {
                break;
            };
            let (frame, _) = decode(&bytes).unwrap().unwrap();
            let before = self.sender.state();
            let deletable = self.sender.handle_frame(self.now, frame).unwrap();
            for seq in deletable {
                self.sender_writes.push(SenderWrite::Delete { seq });
            }
            if self.sender.state() != before {
                self.sender_writes
                    .push(SenderWrite::State(self.sender.state()));
            }
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if let Some(at) = self.sender.poll_timeout() {
            if self.now >= at {
                self.sender.handle_timeout(self.now);
            }
        }
        if self.sender.is_dead() {
            self.reset();
        }
    }

    /// The sender restarts from its durable queue: what had a durable sequence number is
    /// held again, the rest waits to be fed.
    fn crash_sender(&mut self) {
        self.reset();
        self.sender_writes.clear();
        let mut held: Vec<HeldMessage> = self
            .sender_queue
            .iter()
            .filter_map(|m| {
                m.seq.map(|seq| HeldMessage {
                    seq,
                    id: m.id,
                    payload: m.payload.clone().into(),
                })
            })
            .collect();
        held.sort_by_key(|m| m.seq);
        self.sender = Sender::new("alpha", "bravo", self.sender_state, held, self.now).unwrap();
        self.unpushed = self
            .sender_queue
            .iter()
            .filter(|m| m.seq.is_none())
            .map(|m| (m.id, m.payload.clone()))
            .collect();
    }

    fn roll_back_receiver(&mut self, pick: usize) {
        self.reset();
        self.receiver_writes.clear();
        let old = self.receiver_history[pick % self.receiver_history.len()];
        let state = old.restored(self.receiver_state.epoch + 1);
        self.receiver_state = state;
        self.receiver_history.push(state);
        self.restart_receiver(state);
    }

    fn restart_receiver(&mut self, state: ReceiverState) {
        let skip = self.receiver_stored.len().saturating_sub(RECENT_IDS_MAX);
        self.receiver = Receiver::new(state, self.receiver_stored[skip..].iter().map(|m| m.id));
    }

    fn reset(&mut self) {
        self.connected = false;
        self.to_receiver.clear();
        self.to_sender.clear();
        self.sender.handle_disconnected();
        self.receiver.handle_disconnected();
    }

    fn persist_sender(&mut self) {
        for write in self.sender_writes.drain(..) {
            match write {
                SenderWrite::Assign { id, seq } => {
                    let entry = self.sender_queue.iter_mut().find(|m| m.id == id).unwrap();
                    entry.seq = Some(seq);
                }
                SenderWrite::Delete { seq } => {
                    let at = self
                        .sender_queue
                        .iter()
                        .position(|m| m.seq == Some(seq))
                        .unwrap();
                    self.sender_queue.remove(at);
                }
                SenderWrite::State(state) => self.sender_state = state,
            }
        }
        self.sender
            .handle_seq_durable(self.sender.state().next_seq - 1);
    }

    fn persist_receiver_one(&mut self) {
        let Some(store) = self.receiver_writes.pop_front() else {
            return;
        };
        self.receiver_stored.extend(store.messages_to_store);
        self.receiver_state = store.state;
        self.receiver_history.push(store.state);
        if let Some(ack) = self.receiver.handle_stored(&store.state) {
            if self.connected {
                self.to_sender.push_back(encode(&ack).unwrap());
            }
        }
    }

    /// A clean reconnect, then everything flows until the sender holds nothing.
    fn drain(&mut self) {
        self.reset();
        self.apply(&Op::Connect);
        for _round in 0..10_000 {
            self.apply(&Op::Feed(usize::MAX));
            self.persist_sender();
            self.apply(&Op::Transmit(usize::MAX));
            self.apply(&Op::DeliverToReceiver(usize::MAX));
            while !self.receiver_writes.is_empty() {
                self.persist_receiver_one();
            }
            self.apply(&Op::DeliverToSender(usize::MAX));
            self.persist_sender();
            if self.unpushed.is_empty()
                && self.sender.held_len() == 0
                && self.sender_queue.is_empty()
            {
                return;
            }
        }
        panic!(
            "the channel stalled: {} unpushed, {} held, {} queued",
            self.unpushed.len(),
            self.sender.held_len(),
            self.sender_queue.len()
        );
    }

    fn assert_exactly_once_in_order(&self) {
        let stored: Vec<u128> = self.receiver_stored.iter().map(|m| m.id).collect();
        assert_eq!(stored, self.put_order, "stored ids differ from put order");
        for (i, message) in self.receiver_stored.iter().enumerate() {
            assert_eq!(message.payload, format!("message {}", i + 1).into_bytes());
        }
        assert_eq!(self.sender.held_len(), 0);
        assert!(self.sender_queue.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lossy_link_and_crashes_deliver_exactly_once_in_order(
        ops in proptest::collection::vec(op(), 0..400),
    ) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
            // Nothing here rolls the receiver back, so no reconciliation may ever start.
            prop_assert!(!world.sender.is_reconciling());
            prop_assert!(!world.receiver.is_reconciling());
        }
        world.drain();
        world.assert_exactly_once_in_order();
        prop_assert_eq!(world.receiver.duplicates_skipped_by_id(), 0);
    }

    #[test]
    fn receiver_rollbacks_are_reconciled_by_id_without_duplicates_or_stalls(
        ops in proptest::collection::vec(op_with_rollbacks(), 0..400),
    ) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
        world.drain();
        world.assert_exactly_once_in_order();
    }
}

#[test]
fn a_long_run_with_every_fault_delivers_exactly_once() {
    // A fixed, long schedule, so a regression shows without waiting for proptest to find it.
    let schedule = [
        Op::Put,
        Op::Put,
        Op::Feed(8),
        Op::Connect,
        Op::Transmit(3),
        Op::PersistSender,
        Op::Transmit(3),
        Op::DeliverToReceiver(3),
        Op::DeliverToSender(3),
        Op::Transmit(3),
        Op::DuplicateBatch,
        Op::DeliverToReceiver(3),
        Op::PersistReceiver(1),
        Op::CrashReceiver,
        Op::Put,
        Op::Feed(8),
        Op::Connect,
        Op::Transmit(3),
        Op::DeliverToReceiver(3),
        Op::DeliverToSender(3),
        Op::CrashSender,
        Op::Put,
        Op::Tick(16_000),
        Op::RollBackReceiver(0),
    ];
    let mut world = World::new();
    for _ in 0..20 {
        for op in &schedule {
            world.apply(op);
        }
    }
    world.drain();
    world.assert_exactly_once_in_order();
}

/// 100 messages stored at the receiver, of which the sender saw acks for the first 90 only;
/// returns the receiver's durable state when it held exactly the first 50.
fn stored_100_acked_90(world: &mut World) -> ReceiverState {
    for round in [50, 40] {
        for _ in 0..round {
            world.apply(&Op::Put);
        }
        world.drain();
    }
    for _ in 0..10 {
        world.apply(&Op::Put);
    }
    for op in [
        Op::Feed(usize::MAX),
        Op::PersistSender,
        Op::Transmit(usize::MAX),
        Op::DeliverToReceiver(usize::MAX),
        Op::PersistReceiver(usize::MAX),
        Op::Reset, // the acks are lost
    ] {
        world.apply(&op);
    }
    assert_eq!(world.receiver_stored.len(), 100);
    assert_eq!(world.sender.held_len(), 10, "91..=100 await their ack");
    *world
        .receiver_history
        .iter()
        .find(|state| state.stored_up_to == 50)
        .unwrap()
}

fn stored_ids(world: &World) -> Vec<u128> {
    world.receiver_stored.iter().map(|m| m.id).collect()
}

#[test]
fn a_receiver_whose_channel_state_was_rolled_back_stores_nothing_twice() {
    // The brief's restored-from-backup receiver: its channel state is back at 50 under a new
    // epoch, while the messages it stored (so their ids) are still there.
    let mut world = World::new();
    let at_50 = stored_100_acked_90(&mut world);
    world.apply(&Op::CrashReceiver);
    world.receiver_state = at_50.restored(at_50.epoch + 1);
    world.restart_receiver(world.receiver_state);
    for _ in 0..10 {
        world.apply(&Op::Put);
    }
    world.drain();
    world.assert_exactly_once_in_order();
    assert_eq!(
        world.receiver.duplicates_skipped_by_id(),
        10,
        "91..=100 resent"
    );
    assert!(!world.receiver.is_reconciling());
    assert!(!world.sender.is_reconciling());
}

#[test]
fn a_receiver_restored_from_a_backup_gets_what_the_sender_still_holds_without_a_stall() {
    // A whole-manager restore: messages 51..=100 are gone from the receiver with its journal.
    // 51..=90 were acked and deleted at the sender before, so they are lost with the restore
    // (the operator's backup decided that); 91..=100 and everything later must arrive once.
    let mut world = World::new();
    let at_50 = stored_100_acked_90(&mut world);
    world.apply(&Op::CrashReceiver);
    world.receiver_stored.truncate(50);
    world.receiver_state = at_50.restored(at_50.epoch + 1);
    world.restart_receiver(world.receiver_state);
    for _ in 0..10 {
        world.apply(&Op::Put);
    }
    world.drain();
    let mut expected = world.put_order[..50].to_vec();
    expected.extend_from_slice(&world.put_order[90..]);
    assert_eq!(stored_ids(&world), expected);
    assert_eq!(world.sender.held_len(), 0);
}

#[test]
fn a_wiped_receiver_gets_what_the_sender_still_holds_without_a_stall() {
    let mut world = World::new();
    stored_100_acked_90(&mut world);
    world.apply(&Op::CrashReceiver);
    world.receiver_stored.clear();
    world.receiver_state = ReceiverState {
        epoch: 999,
        sender_epoch: None,
        stored_up_to: 0,
        reconcile_until: 0,
    };
    world.receiver_history.clear();
    world.restart_receiver(world.receiver_state);
    for _ in 0..10 {
        world.apply(&Op::Put);
    }
    world.drain();
    assert_eq!(stored_ids(&world), world.put_order[90..].to_vec());
    assert_eq!(world.sender.held_len(), 0);
}

#[test]
fn a_wiped_sender_starts_a_new_numbering_that_the_receiver_follows() {
    // The sender's channel state is lost (new epoch, counter back to 1) but its transmission
    // queue still holds 91..=100, which the receiver already has.
    let mut world = World::new();
    stored_100_acked_90(&mut world);
    world.apply(&Op::CrashSender);
    for message in &mut world.sender_queue {
        message.seq = None;
    }
    world.sender_state = SenderState {
        epoch: SENDER_EPOCH + 1,
        receiver_epoch: None,
        next_seq: 1,
    };
    world.apply(&Op::CrashSender);
    // Handshake before the old messages are pushed again: its next_seq is 1.
    world.apply(&Op::Connect);
    world.apply(&Op::Transmit(1));
    world.apply(&Op::DeliverToReceiver(1));
    world.apply(&Op::DeliverToSender(1));
    assert!(world.receiver.is_reconciling());
    for _ in 0..10 {
        world.apply(&Op::Put);
    }
    world.drain();
    world.assert_exactly_once_in_order();
    assert_eq!(
        world.receiver.duplicates_skipped_by_id(),
        10,
        "91..=100 pushed again"
    );
}
