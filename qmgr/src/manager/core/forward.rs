//! Forwarding: the core's side of the channels to its neighbours.
//!
//! For each neighbour the core owns a [`Link`]: the channel [`Sender`] that drains that
//! neighbour's transmission queue, the [`Receiver`] that stores what the neighbour sends, and
//! the live connections the QUIC driver opened for them. The driver only moves frames; every
//! decision is made here or in the channel state machines, and every effect that must be
//! durable goes through the journal before anything is sent or acknowledged:
//!
//! - a message leaves its transmission queue only once the channel is up, and is transmitted
//!   only once its channel sequence number is durable (a `ChannelSend` record);
//! - a batch from a neighbour is resolved message by message (late binding: a local queue, the
//!   transmission queue of the next hop, the held messages, or the dead-letter queue) and
//!   written with the channel's new state in one atomic group (a `ChannelReceive` record
//!   last); only then is it acknowledged;
//! - an acked message is removed from the journal.
//!
//! Invariants: at most one `ChannelSend` and one `ChannelReceive` of a link is in flight at a
//! time (frames arriving meanwhile wait in the link's inbox, and are stored together when the
//! write completes, which batches them); the latest channel records of every link count as
//! live in [`super::Liveness`] and are written again at the journal's head when their segment
//! seals, so deleting old segments never loses a channel's state.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use hopmq::protocol::{LinkStatus, RouteStatus};
use hopmq::{ManagerName, QueueName};
use tracing::{debug, error, info, warn};

use super::{Core, DEAD_LETTER_QUEUE, Handoff, PutItem, dead_letter_queue};
use crate::channel::adjacency::Adjacency;
use crate::channel::connection::code;
use crate::channel::connection::{Channel, ChannelDirection};
use crate::channel::frame::ChannelFrame;
use crate::channel::receiver::{Receiver, ReceiverOutput, ReceiverState, Store};
use crate::channel::sender::{HeldMessage, Sender, SenderState};
use crate::manager::clock::Now;
use crate::manager::delivery::{self, DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER};
use crate::manager::recovery;
use crate::queue::local::{BodyRef, Entry, correlation_hash};
use crate::record::{self, AssignedRecord, ReceiveRecord, Record, SendRecord};
use crate::store::{Location, StoreError};

#[cfg(test)]
mod tests;

/// Frames a link's inbox holds while its store is being written. The sender's window
/// ([`crate::channel::sender::WINDOW_MESSAGES_MAX`]) bounds what an honest peer sends ahead;
/// past this the peer is misbehaving and its connection is closed.
pub(super) const INBOX_FRAMES_MAX: usize = 8 * 1024;

/// Payload bytes a link's inbox holds at most: what an honest sender can have unacknowledged
/// ([`crate::channel::sender::HELD_BYTES_MAX`]) plus one largest message.
pub(super) const INBOX_BYTES_MAX: usize =
    crate::channel::sender::HELD_BYTES_MAX + crate::channel::frame::WIRE_MESSAGE_BYTES_MAX;

/// Received batches stop being merged into one journal write past this many payload bytes, so
/// a write stays within the journal's group limit even with the smallest segments.
const RECEIVE_MERGE_BYTES_MAX: usize = crate::channel::frame::BATCH_BYTES_MAX;

/// Room kept in a journal group beside an arriving message's record (the channel records).
const ARRIVAL_GROUP_ROOM_BYTES: u64 = 64 * 1024;

/// The prefix of a transmission queue's name; the neighbour's name follows.
pub const TRANSMISSION_QUEUE_PREFIX: &str = "hopmq.xmit.";

/// The queue of messages waiting for a route.
pub const HELD_QUEUE: &str = "hopmq.held";

/// A link whose messages in flight have had no ack for this long takes no new ones: its
/// neighbour may have just died, and whatever it is given now can only be delivered once it
/// returns. A healthy neighbour acks within a sync or two.
pub(super) const ACK_STALL_MAX: std::time::Duration = std::time::Duration::from_millis(300);

/// Messages moved from a transmission queue to a sender per assignment record.
const ASSIGN_MESSAGES_MAX: usize = 1024;

const _: () = assert!(crate::channel::sender::WINDOW_MESSAGES_MAX <= INBOX_FRAMES_MAX);

/// The transmission queue of messages whose next hop is `neighbour`.
pub fn transmission_queue(neighbour: &ManagerName) -> QueueName {
    QueueName::new(format!("{TRANSMISSION_QUEUE_PREFIX}{neighbour}"))
        .unwrap_or_else(|e| unreachable!("a manager name makes a valid queue name: {e}"))
}

/// The neighbour a transmission queue drains to, if `queue` is one.
pub(super) fn transmission_neighbour(queue: &QueueName) -> Option<ManagerName> {
    let name = queue.as_str().strip_prefix(TRANSMISSION_QUEUE_PREFIX)?;
    ManagerName::new(name).ok()
}

pub(super) fn held_queue() -> QueueName {
    QueueName::new(HELD_QUEUE).unwrap_or_else(|e| unreachable!("`{HELD_QUEUE}` is valid: {e}"))
}

/// Counters of one link, for status and metrics.
#[derive(Debug, Default, Clone, Copy)]
struct LinkCounters {
    messages_sent: u64,
    bytes_sent: u64,
    messages_acked: u64,
    bytes_acked: u64,
    messages_received: u64,
    connects: u64,
}

/// Everything the core holds for one neighbour; see the module documentation.
pub(super) struct Link {
    sender: Option<Sender>,
    /// Why this link's sender cannot run (its restored state is inconsistent, or an assignment
    /// could not be written); messages for it wait in its transmission queue.
    sender_broken: Option<String>,
    /// Messages given to the sender and not yet acked, in channel-sequence order.
    assigned: VecDeque<(u64, QueueName, Entry)>,
    assigning: bool,
    persisted_sender: Option<SenderState>,
    send_record: Option<Location>,
    pub(super) outbound: Option<Channel>,
    receiver: Receiver,
    receiving: bool,
    durable_receiver: ReceiverState,
    receive_record: Option<Location>,
    inbox: VecDeque<(u64, ChannelFrame)>,
    /// Payload bytes of the batches in `inbox`.
    inbox_bytes: usize,
    pub(super) inbound: Option<Channel>,
    counters: LinkCounters,
    last_error: Option<String>,
    /// Whether routing may count on the neighbour (heard within the dead interval).
    pub(super) adjacency: Adjacency,
    /// When the messages in flight last made progress: the first was assigned, or an ack
    /// released some. See [`ACK_STALL_MAX`].
    progress_at: Instant,
}

/// Channel epochs, which only need to differ between incarnations of a channel's state: a
/// splitmix64 sequence seeded with the incarnation's entropy.
pub(super) struct EpochSource(crate::generate::SplitMix);

impl EpochSource {
    pub(super) fn new(entropy: u64) -> Self {
        Self(crate::generate::SplitMix(entropy))
    }

    /// The next epoch; never 0, which the protocol reads as none.
    pub(super) fn next(&mut self) -> u64 {
        self.0.next_u64().max(1)
    }
}

impl Link {
    /// Messages given to this link's channel and not yet acknowledged.
    pub(super) fn in_flight(&self) -> usize {
        self.assigned.len()
    }

    /// Whether messages are in flight and none was acked for [`ACK_STALL_MAX`] plus four
    /// round trips (a long link acks later, and must not pause for it).
    pub(super) fn stalled(&self, now: Instant) -> bool {
        let rtt = self
            .outbound
            .as_ref()
            .and_then(|c| c.quic.as_ref())
            .map_or(std::time::Duration::ZERO, quinn::Connection::rtt);
        !self.assigned.is_empty()
            && now.saturating_duration_since(self.progress_at) >= ACK_STALL_MAX + rtt * 4
    }

    fn new(
        receiver_state: Option<ReceiverState>,
        recent_ids: Vec<u128>,
        epoch: u64,
        now: Instant,
    ) -> Link {
        let state = receiver_state.unwrap_or(ReceiverState {
            epoch,
            sender_epoch: None,
            stored_up_to: 0,
            reconcile_until: 0,
        });
        Link {
            sender: None,
            sender_broken: None,
            assigned: VecDeque::new(),
            assigning: false,
            persisted_sender: None,
            send_record: None,
            outbound: None,
            receiver: Receiver::new(state, recent_ids),
            receiving: false,
            durable_receiver: state,
            receive_record: None,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            inbound: None,
            counters: LinkCounters::default(),
            last_error: None,
            adjacency: Adjacency::new(now),
            progress_at: now,
        }
    }
}

/// Messages given to an idle link's sender while a commit is being built (a put, a received
/// batch), their `ChannelSend` written in that same atomic group: a message for a link with
/// nothing waiting costs no sync of its own before it is sent. The link counts as assigning
/// until the group is durable, so its assignments stay one write at a time.
#[derive(Debug)]
pub struct DirectLink {
    neighbour: ManagerName,
    state: SenderState,
    /// Message seqs, in channel-sequence order.
    seqs: Vec<u64>,
    /// False once the sender refused one: later messages of the commit go to the queue.
    open: bool,
}

/// The `ChannelSend` records of direct assignments, in order.
pub(super) fn direct_records(direct: &[DirectLink]) -> Vec<Bytes> {
    direct
        .iter()
        .map(|d| {
            Bytes::from(record::encode(&Record::ChannelSend(SendRecord {
                to: d.neighbour.as_str(),
                epoch: d.state.epoch,
                receiver_epoch: d.state.receiver_epoch,
                next_seq: d.state.next_seq,
                assigned: d.seqs.clone(),
            })))
        })
        .collect()
}

/// The `ChannelAssigned` record that goes with a relocated copy of message `seq`, given to
/// `neighbour`'s channel as `channel_seq`.
pub(super) fn assignment_record(neighbour: &ManagerName, seq: u64, channel_seq: u64) -> Bytes {
    Bytes::from(record::encode(&Record::ChannelAssigned(AssignedRecord {
        to: neighbour.as_str(),
        pairs: vec![(seq, channel_seq)],
    })))
}

/// What a batch being received collects besides its messages.
#[derive(Default)]
struct Arrivals {
    handoffs: Vec<Handoff>,
    /// Per queue, the hand-off still taking this batch's messages.
    open: rustc_hash::FxHashMap<QueueName, usize>,
    handed_off: Vec<u64>,
    direct: Vec<DirectLink>,
}

/// What to do once a link's write is durable.
#[derive(Debug)]
pub enum LinkWrite {
    /// A `ChannelSend` of `state`: assignments below its `next_seq` are durable.
    Assigned {
        neighbour: ManagerName,
        state: SenderState,
    },
    /// A `ChannelReceive` with the messages it stored.
    Received {
        neighbour: ManagerName,
        items: Vec<PutItem>,
        state: ReceiverState,
        handoffs: Vec<Handoff>,
        direct: Vec<DirectLink>,
        /// The ids of the messages of the write, forgotten by the receiver if it fails.
        ids: Vec<u128>,
    },
    /// A `ChannelReceive` written again at the head (no messages).
    ReceiveState {
        neighbour: ManagerName,
        state: ReceiverState,
    },
}

impl Core {
    /// Builds the links of recovered channel state and of every neighbour in the topology.
    pub(super) fn restore_links(
        &mut self,
        senders: Vec<recovery::RecoveredSender>,
        receivers: Vec<recovery::RecoveredReceiver>,
        now: Now,
    ) {
        for receiver in receivers {
            let Ok(neighbour) = ManagerName::new(&receiver.from) else {
                continue;
            };
            let epoch = self.epochs.next();
            let mut link = Link::new(
                Some(receiver.state),
                receiver.recent_ids,
                epoch,
                now.instant,
            );
            link.receive_record = Some(receiver.location);
            self.links.insert(neighbour, link);
        }
        for sender in senders {
            let Ok(neighbour) = ManagerName::new(&sender.to) else {
                continue;
            };
            let mut held = Vec::with_capacity(sender.held.len());
            let mut broken = None;
            for (seq, _, entry) in &sender.held {
                match self.payloads.get(entry, &*self.storage) {
                    Ok(payload) => held.push(HeldMessage {
                        seq: *seq,
                        id: entry_id(&payload),
                        payload,
                    }),
                    Err(e) => {
                        broken = Some(format!("cannot read held message {}: {e}", entry.seq));
                        break;
                    }
                }
            }
            let epoch = self.epochs.next();
            let link = self
                .links
                .entry(neighbour.clone())
                .or_insert_with(|| Link::new(None, Vec::new(), epoch, now.instant));
            link.send_record = Some(sender.location);
            link.persisted_sender = Some(sender.state);
            link.assigned = sender.held.into_iter().collect();
            let restored = match broken {
                Some(reason) => Err(reason),
                None => Sender::new(
                    self.name.as_str(),
                    neighbour.as_str(),
                    sender.state,
                    held,
                    now.instant,
                )
                .map_err(|e| e.to_string()),
            };
            match restored {
                Ok(restored) => link.sender = Some(restored),
                Err(reason) => {
                    error!(%neighbour, %reason, "the channel's sender cannot start; its messages wait");
                    link.sender_broken = Some(reason);
                }
            }
        }
        let neighbours: Vec<ManagerName> = self.links.keys().cloned().collect();
        let neighbours = neighbours.into_iter().chain(
            self.topology
                .neighbours(&self.name)
                .cloned()
                .collect::<Vec<_>>(),
        );
        for neighbour in neighbours {
            self.ensure_link(&neighbour, now);
        }
    }

    /// The link to `neighbour`, created with a fresh sender if there is none (a neighbour new
    /// to the topology, or one the journal knew only as a receiver).
    pub(super) fn ensure_link(&mut self, neighbour: &ManagerName, now: Now) {
        let (receiver_epoch, sender_epoch) = (self.epochs.next(), self.epochs.next());
        let link = self
            .links
            .entry(neighbour.clone())
            .or_insert_with(|| Link::new(None, Vec::new(), receiver_epoch, now.instant));
        if link.sender.is_none() && link.sender_broken.is_none() {
            let state = SenderState {
                epoch: sender_epoch,
                receiver_epoch: None,
                next_seq: 1,
            };
            // Cannot fail: nothing is held.
            link.sender = Sender::new(
                self.name.as_str(),
                neighbour.as_str(),
                state,
                [],
                now.instant,
            )
            .ok();
        }
    }

    /// Closes both connections of the link to `neighbour` (removed from the topology). Its
    /// state stays: messages in flight on it are delivered if the link returns.
    pub(super) fn close_link(&mut self, neighbour: &ManagerName, why: &str) {
        for direction in [ChannelDirection::Outbound, ChannelDirection::Inbound] {
            self.close_channel_with(neighbour, direction, code::NORMAL, why);
        }
    }

    /// The driver opened a connection to or from `neighbour`.
    pub(super) fn on_channel_opened(
        &mut self,
        neighbour: ManagerName,
        direction: ChannelDirection,
        channel: Channel,
        now: Now,
    ) {
        // The driver takes a topology edit before the core does, so a new neighbour's
        // connection may come first: the link is made here then.
        self.ensure_link(&neighbour, now);
        let now = now.instant;
        self.channels
            .insert(channel.id, (neighbour.clone(), direction));
        let Some(link) = self.links.get_mut(&neighbour) else {
            return;
        };
        info!(%neighbour, ?direction, connection = channel.id, "channel connected");
        match direction {
            ChannelDirection::Outbound => {
                if let Some(old) = link.outbound.replace(channel) {
                    self.channels.remove(&old.id);
                    old.close(code::NORMAL, "replaced by a new connection");
                }
                link.counters.connects += 1;
                if let Some(sender) = &mut link.sender {
                    sender.handle_connecting(now);
                }
                self.flush(&neighbour, now);
            }
            ChannelDirection::Inbound => {
                if let Some(old) = link.inbound.replace(channel) {
                    self.channels.remove(&old.id);
                    old.close(code::NORMAL, "replaced by a new connection");
                }
                link.receiver.handle_disconnected();
                link.inbox.clear();
                link.inbox_bytes = 0;
            }
        }
        // A neighbour that connects may have restarted with an empty link-state database.
        self.send_database(&neighbour, direction);
    }

    /// The driver saw a connection end (or the core closed it).
    pub(super) fn on_channel_closed(&mut self, connection: u64, reason: &str) {
        let Some((neighbour, direction)) = self.channels.remove(&connection) else {
            return;
        };
        let Some(link) = self.links.get_mut(&neighbour) else {
            return;
        };
        info!(%neighbour, ?direction, connection, %reason, "channel disconnected");
        link.last_error = Some(reason.to_owned());
        match direction {
            ChannelDirection::Outbound => {
                if link.outbound.as_ref().is_some_and(|c| c.id == connection) {
                    link.outbound = None;
                    if let Some(sender) = &mut link.sender {
                        sender.handle_disconnected();
                    }
                }
            }
            ChannelDirection::Inbound => {
                if link.inbound.as_ref().is_some_and(|c| c.id == connection) {
                    link.inbound = None;
                    link.receiver.handle_disconnected();
                    link.inbox.clear();
                    link.inbox_bytes = 0;
                }
            }
        }
    }

    pub(super) fn close_channel(
        &mut self,
        neighbour: &ManagerName,
        direction: ChannelDirection,
        why: &str,
    ) {
        self.close_channel_with(neighbour, direction, code::PROTOCOL, why);
    }

    fn close_channel_with(
        &mut self,
        neighbour: &ManagerName,
        direction: ChannelDirection,
        code: u32,
        why: &str,
    ) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let channel = match direction {
            ChannelDirection::Outbound => link.outbound.take(),
            ChannelDirection::Inbound => link.inbound.take(),
        };
        link.last_error = Some(why.to_owned());
        match direction {
            ChannelDirection::Outbound => {
                if let Some(sender) = &mut link.sender {
                    sender.handle_disconnected();
                }
            }
            ChannelDirection::Inbound => {
                link.receiver.handle_disconnected();
                link.inbox.clear();
                link.inbox_bytes = 0;
            }
        }
        if let Some(channel) = channel {
            warn!(%neighbour, ?direction, connection = channel.id, reason = %why, "closing channel");
            self.channels.remove(&channel.id);
            channel.close(code, why);
        }
    }

    /// A frame from a channel connection.
    pub(super) fn on_channel_frame(&mut self, connection: u64, frame: ChannelFrame, now: Now) {
        let Some((neighbour, direction)) = self.channels.get(&connection).cloned() else {
            return; // a connection the core already closed
        };
        // Only frames on this manager's own connection prove that it can send to the
        // neighbour, which is what routing over the link needs: a neighbour that reaches us
        // while we cannot reach it must not attract traffic.
        if direction == ChannelDirection::Outbound {
            self.on_heard(&neighbour, now);
        }
        let frame = match frame {
            ChannelFrame::LinkState(advertisements) => {
                self.on_link_state(&neighbour, direction, advertisements, now);
                return;
            }
            frame => frame,
        };
        match direction {
            ChannelDirection::Outbound => self.on_sender_frame(&neighbour, frame, now),
            ChannelDirection::Inbound => {
                let Some(link) = self.links.get_mut(&neighbour) else {
                    return;
                };
                if link.receiving {
                    link.inbox_bytes += frame_bytes(&frame);
                    if link.inbox.len() >= INBOX_FRAMES_MAX || link.inbox_bytes > INBOX_BYTES_MAX {
                        self.close_channel(
                            &neighbour,
                            ChannelDirection::Inbound,
                            "peer sent past its window",
                        );
                        return;
                    }
                    link.inbox.push_back((connection, frame));
                    return;
                }
                self.receive(&neighbour, vec![frame], now);
            }
        }
    }

    fn on_sender_frame(&mut self, neighbour: &ManagerName, frame: ChannelFrame, now: Now) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let Some(sender) = &mut link.sender else {
            return;
        };
        let result = sender.handle_frame(now.instant, frame);
        let deletable = match result {
            Ok(deletable) => deletable,
            Err(error) => {
                let why = error.to_string();
                self.close_channel(neighbour, ChannelDirection::Outbound, &why);
                return;
            }
        };
        if !deletable.is_empty() {
            link.progress_at = now.instant;
            let mut entries = Vec::with_capacity(deletable.len());
            let mut seqs = Vec::with_capacity(deletable.len());
            for channel_seq in deletable {
                while let Some((seq, _, entry)) = link.assigned.front() {
                    if *seq > channel_seq {
                        break;
                    }
                    let entry = *entry;
                    link.assigned.pop_front();
                    link.counters.messages_acked += 1;
                    link.counters.bytes_acked += u64::from(entry.bytes);
                    if !matches!(entry.body, BodyRef::Memory) {
                        seqs.push(entry.seq);
                    }
                    entries.push(entry);
                }
            }
            self.messages_forwarded += entries.len() as u64;
            if seqs.is_empty() {
                for entry in &entries {
                    self.forget(entry);
                }
            } else {
                // Deferred: if a crash undoes it, the messages are held again at restart and
                // the neighbour's welcome (it stores them durably) deletes them at once.
                self.commit_deferred_removal(seqs, super::Continuation::Removed { entries });
            }
        }
        self.pump(neighbour, now);
        self.flush(neighbour, now.instant);
    }

    /// Moves waiting messages from `neighbour`'s transmission queue to its sender (only while
    /// the channel is up, so a message whose expiry passes while the link is down never
    /// leaves), and writes their channel sequence numbers.
    pub(super) fn pump(&mut self, neighbour: &ManagerName, now: Now) {
        // A dead or drained link takes nothing new: what waits for it is re-routed. Nor
        // does one gone quiet, which may be about to die.
        if !self.link_takes_new(neighbour, now) {
            return;
        }
        let queue = transmission_queue(neighbour);
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        if link.assigning || link.sender_broken.is_some() {
            return;
        }
        let Some(sender) = &mut link.sender else {
            return;
        };
        if !sender.is_connected() {
            return;
        }
        let mut assigned = Vec::new();
        let mut expired = Vec::new();
        if let Some(slot) = self.queues.get_mut(&queue) {
            while assigned.len() < ASSIGN_MESSAGES_MAX {
                let taken = slot.queue.take(now.wall_ms, 1, None, |_| true);
                expired.extend(taken.expired);
                let Some(entry) = taken.entries.first().copied() else {
                    break;
                };
                if !sender.can_push(entry.bytes as usize) {
                    slot.queue.insert(entry);
                    break;
                }
                let payload = match self.payloads.get(&entry, &*self.storage) {
                    Ok(payload) => payload,
                    Err(e) => {
                        error!(%queue, seq = entry.seq, error = %e, "cannot read a message to forward; it stays queued");
                        slot.queue.insert(entry);
                        break;
                    }
                };
                match sender.push(entry_id(&payload), payload) {
                    Ok(channel_seq) => {
                        if link.assigned.is_empty() {
                            link.progress_at = now.instant;
                        }
                        link.assigned.push_back((channel_seq, queue.clone(), entry));
                        assigned.push(entry.seq);
                    }
                    Err(e) => {
                        error!(%queue, seq = entry.seq, error = %e, "the sender refused a message; it stays queued");
                        slot.queue.insert(entry);
                        break;
                    }
                }
            }
        }
        let state = sender.state();
        let changed = link.persisted_sender != Some(state);
        if !expired.is_empty() {
            self.messages_expired += expired.len() as u64;
            self.remove_expired(expired);
        }
        if assigned.is_empty() && !changed {
            return;
        }
        self.write_sender_state(neighbour, state, assigned);
    }

    fn write_sender_state(
        &mut self,
        neighbour: &ManagerName,
        state: SenderState,
        assigned: Vec<u64>,
    ) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        link.assigning = true;
        let payload = record::encode(&Record::ChannelSend(SendRecord {
            to: neighbour.as_str(),
            epoch: state.epoch,
            receiver_epoch: state.receiver_epoch,
            next_seq: state.next_seq,
            assigned,
        }));
        // From the reserve, like a removal: a full disk must not stop a transmission queue
        // from draining (the assignment is small and lets messages leave).
        self.commit_freeing(
            vec![Bytes::from(payload)],
            super::Continuation::Link(LinkWrite::Assigned {
                neighbour: neighbour.clone(),
                state,
            }),
        );
    }

    /// Sends whatever the sender has for the wire.
    fn flush(&mut self, neighbour: &ManagerName, now: Instant) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let (Some(sender), Some(channel)) = (&mut link.sender, &link.outbound) else {
            return;
        };
        while let Some(frame) = sender.poll_transmit(now) {
            if let ChannelFrame::Batch(batch) = &frame {
                link.counters.messages_sent += batch.messages.len() as u64;
                link.counters.bytes_sent += frame_bytes(&frame) as u64;
            }
            if !channel.send(frame) {
                // Full (the neighbour stopped reading) or gone (its close reaches the core
                // next): either way this connection is done.
                self.close_channel(
                    neighbour,
                    ChannelDirection::Outbound,
                    "peer stopped reading",
                );
                return;
            }
        }
    }

    /// Handles frames from `neighbour`'s inbound connection, in order; the stores they ask for
    /// become one journal write.
    fn receive(&mut self, neighbour: &ManagerName, frames: Vec<ChannelFrame>, now: Now) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let mut merged: Option<Store> = None;
        let mut merged_bytes = 0;
        let mut frames = frames.into_iter();
        while let Some(frame) = frames.next() {
            let bytes = frame_bytes(&frame);
            if merged.is_some() && merged_bytes + bytes > RECEIVE_MERGE_BYTES_MAX {
                // The rest waits for the next write, so one group stays under the journal's
                // limit.
                let current = link.inbound.as_ref().map_or(0, |c| c.id);
                let rest: Vec<ChannelFrame> = std::iter::once(frame).chain(frames).collect();
                for frame in rest.into_iter().rev() {
                    link.inbox_bytes += frame_bytes(&frame);
                    link.inbox.push_front((current, frame));
                }
                break;
            }
            merged_bytes += bytes;
            match link.receiver.handle_frame(frame) {
                Ok(ReceiverOutput::Send(reply)) => {
                    if link.inbound.as_ref().is_some_and(|c| !c.send(reply)) {
                        self.close_channel(
                            neighbour,
                            ChannelDirection::Inbound,
                            "peer stopped reading",
                        );
                        break;
                    }
                }
                Ok(ReceiverOutput::Store(store)) => match &mut merged {
                    Some(merged) => {
                        merged.messages_to_store.extend(store.messages_to_store);
                        merged.state = store.state;
                    }
                    None => merged = Some(store),
                },
                Err(error) => {
                    let why = error.to_string();
                    // What was accepted before the bad frame is still stored below.
                    self.close_channel(neighbour, ChannelDirection::Inbound, &why);
                    break;
                }
            }
        }
        if let Some(store) = merged {
            self.store_received(neighbour, store, now);
        }
    }

    fn store_received(&mut self, neighbour: &ManagerName, store: Store, now: Now) {
        let mut items = Vec::with_capacity(store.messages_to_store.len());
        let mut ids = Vec::with_capacity(store.messages_to_store.len());
        let mut arrivals = Arrivals::default();
        for message in store.messages_to_store {
            ids.push(message.id);
            if let Some(item) = self.arrival(neighbour, &message.payload, now, &mut arrivals) {
                items.push(item);
            }
        }
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        link.counters.messages_received += ids.len() as u64;
        link.receiving = true;
        let state = store.state;
        // Messages, then direct assignments, then the channel state: `place` takes the
        // locations in that order. The removal of handed-off messages comes last.
        let mut payloads: Vec<Bytes> = items.iter().map(|item| item.payload.clone()).collect();
        payloads.extend(direct_records(&arrivals.direct));
        payloads.push(Bytes::from(record::encode(&Record::ChannelReceive(
            ReceiveRecord {
                from: neighbour.as_str(),
                epoch: state.epoch,
                sender_epoch: state.sender_epoch,
                stored_up_to: state.stored_up_to,
                reconcile_until: state.reconcile_until,
                ids: ids.clone(),
            },
        ))));
        if !arrivals.handed_off.is_empty() {
            payloads.push(Bytes::from(record::encode(&Record::Remove(
                arrivals.handed_off,
            ))));
        }
        self.commit(
            payloads,
            super::Continuation::Link(LinkWrite::Received {
                neighbour: neighbour.clone(),
                items,
                state,
                handoffs: arrivals.handoffs,
                direct: arrivals.direct,
                ids,
            }),
        );
    }

    /// Where a message arriving from `from` goes, re-encoded for this manager's journal; `None`
    /// when it is dropped (expired, or not a message at all).
    fn arrival(
        &mut self,
        from: &ManagerName,
        payload: &[u8],
        now: Now,
        arrivals: &mut Arrivals,
    ) -> Option<PutItem> {
        let passing = match record::Passing::read(payload) {
            Ok(passing) => passing,
            Err(e) => {
                error!(%from, error = %e, "a neighbour sent a message that does not decode; dropped");
                return None;
            }
        };
        if passing.expires_at_ms.is_some_and(|at| at <= now.wall_ms) {
            debug!(id = passing.id, "message expired in transit; dropped");
            self.messages_expired += 1;
            return None;
        }
        let hops = passing.hops;
        let (mut queue, reason) = if hops > self.limits.max_hops as usize {
            (
                dead_letter_queue(),
                Some(format!(
                    "hop limit of {} exceeded (after {hops} hops)",
                    self.limits.max_hops
                )),
            )
        } else {
            match self.resolve_arrival(passing.destination) {
                Ok(queue) => (queue, None),
                Err(reason) => (dead_letter_queue(), Some(reason)),
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let hop = (self.name.as_str(), now.wall_ms);
        let mut body_bytes = passing.body_bytes;
        let mut encoded = match &reason {
            // The common case, rewritten around the bytes it keeps.
            None => passing.rewrite(queue.as_str(), seq, hop),
            Some(reason) => {
                warn!(id = passing.id, destination = passing.destination, %reason, "message dead-lettered on arrival");
                dead_lettered(&whole(payload, from)?, seq, hop, reason)
            }
        };
        // A message grown on its way (its trace), or one from a manager with larger segments,
        // may not fit this journal's groups: storing it would fail its whole batch on every
        // resend and wedge the link. It is dead-lettered without its body and headers instead.
        if encoded.len() as u64 + ARRIVAL_GROUP_ROOM_BYTES > self.storage.group_bytes_max() {
            let reason = format!(
                "message of {} bytes is too large for this manager's journal (groups of at most \
                 {} bytes); its body and headers were dropped",
                encoded.len(),
                self.storage.group_bytes_max()
            );
            warn!(id = passing.id, destination = passing.destination, %reason, "message dead-lettered on arrival");
            queue = dead_letter_queue();
            let mut stored = whole(payload, from)?;
            stored.body = &[];
            stored.headers.clear();
            body_bytes = 0;
            encoded = dead_lettered(&stored, seq, hop, &reason);
        }
        let entry = Entry {
            seq,
            body: BodyRef::Memory,
            bytes: body_bytes as u32,
            priority: passing.priority,
            expires_at_ms: passing.expires_at_ms.unwrap_or(u64::MAX),
            put_at_ms: now.wall_ms,
            correlation: correlation_hash(passing.correlation_id),
            delivery_count: 0,
        };
        let payload = Bytes::from(encoded);
        let handoff = self.hand_off(
            &queue,
            passing.correlation_id,
            &mut arrivals.handoffs,
            &mut arrivals.open,
        );
        if handoff.is_none() && !arrivals.open.is_empty() {
            // A later message must not overtake this one through a hand-off.
            arrivals.open.remove(&queue);
        }
        let channel_seq = match handoff {
            Some(_) => None,
            None => {
                let key = record::dedup_key(passing.id, passing.hops + 1);
                self.assign_direct(&queue, seq, key, &payload, &mut arrivals.direct, now)
            }
        };
        let slot = self.ensure_slot(&queue);
        slot.pending += 1;
        slot.pending_handoffs += u64::from(handoff.is_some());
        if handoff.is_some() {
            arrivals.handed_off.push(seq);
        }
        Some(PutItem {
            queue,
            entry,
            payload,
            persistent: true,
            handoff,
            channel_seq,
        })
    }

    /// A link write finished.
    pub(super) fn on_link_write(
        &mut self,
        write: LinkWrite,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        match write {
            LinkWrite::Assigned { neighbour, state } => {
                let Some(link) = self.links.get_mut(&neighbour) else {
                    return;
                };
                link.assigning = false;
                match result {
                    Ok(locations) => {
                        let location = locations.last().copied();
                        let old = link.send_record.take();
                        link.send_record = location;
                        link.persisted_sender = Some(state);
                        if let Some(sender) = &mut link.sender {
                            if state.next_seq > 1 {
                                sender.handle_seq_durable(state.next_seq - 1);
                            }
                        }
                        self.swap_live(old, location);
                        self.flush(&neighbour, now.instant);
                        self.pump(&neighbour, now);
                    }
                    Err(error) => {
                        // The numbers handed out are not durable and were never sent: the
                        // messages go back to their queue and the numbers are reused.
                        warn!(%neighbour, %error, "writing channel sequence numbers failed; the messages wait");
                        self.unassign_lost(&neighbour);
                    }
                }
            }
            LinkWrite::ReceiveState { neighbour, state } => {
                let Some(link) = self.links.get_mut(&neighbour) else {
                    return;
                };
                link.receiving = false;
                match result {
                    Ok(locations) => {
                        let location = locations.first().copied();
                        let old = std::mem::replace(&mut link.receive_record, location);
                        link.durable_receiver = state;
                        self.swap_live(old, location);
                    }
                    // The old record stands; the next maintenance tick tries again.
                    Err(error) => warn!(%neighbour, %error, "rewriting a channel's state failed"),
                }
                self.receive_inbox(&neighbour, now);
            }
            LinkWrite::Received {
                neighbour,
                items,
                state,
                handoffs,
                direct,
                ids,
            } => {
                let locations = match result {
                    Ok(locations) => locations,
                    Err(error) => {
                        error!(%neighbour, %error, "storing a batch from a neighbour failed; it will be resent");
                        self.place_failed(items, handoffs, direct);
                        if let Some(link) = self.links.get_mut(&neighbour) {
                            link.receiving = false;
                            // Back to what is durable; the sender resends the rest.
                            link.receiver
                                .handle_store_failed(link.durable_receiver, &ids);
                        }
                        self.close_channel(
                            &neighbour,
                            ChannelDirection::Inbound,
                            "local storage error",
                        );
                        return;
                    }
                };
                let mut locations = locations.into_iter();
                let placed = self.place(items, &mut locations, handoffs, direct, now);
                let record_location = locations.next();
                let Some(link) = self.links.get_mut(&neighbour) else {
                    return;
                };
                link.receiving = false;
                link.durable_receiver = state;
                let old = link.receive_record.take();
                link.receive_record = record_location;
                let stalled = link
                    .receiver
                    .handle_stored(&state)
                    .is_some_and(|ack| link.inbound.as_ref().is_some_and(|c| !c.send(ack)));
                self.swap_live(old, record_location);
                if stalled {
                    self.close_channel(
                        &neighbour,
                        ChannelDirection::Inbound,
                        "peer stopped reading",
                    );
                }
                self.finish_placing(placed, now);
                self.receive_inbox(&neighbour, now);
            }
        }
    }

    /// Handles the frames that waited while a write of the link was in flight.
    fn receive_inbox(&mut self, neighbour: &ManagerName, now: Now) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let current = link.inbound.as_ref().map(|c| c.id);
        link.inbox_bytes = 0;
        let waiting: Vec<ChannelFrame> = link
            .inbox
            .drain(..)
            .filter(|(connection, _)| Some(*connection) == current)
            .map(|(_, frame)| frame)
            .collect();
        if !waiting.is_empty() {
            self.receive(neighbour, waiting, now);
        }
    }

    /// The neighbour a transmission queue drains to, if it has a link: its name shared with
    /// the link, not parsed and allocated again (this runs for every message).
    fn transmission_link(&self, queue: &QueueName) -> Option<ManagerName> {
        let name = queue.as_str().strip_prefix(TRANSMISSION_QUEUE_PREFIX)?;
        self.links
            .get_key_value(name)
            .map(|(neighbour, _)| neighbour.clone())
    }

    /// Gives a message for `queue` straight to its link's sender if the link is idle (up,
    /// nothing waiting in or on its way into the queue, no assignment being written), or if
    /// this commit already does so for it. Returns its channel sequence number.
    /// `dedup_key` is the message's [`record::dedup_key`].
    pub(super) fn assign_direct(
        &mut self,
        queue: &QueueName,
        seq: u64,
        dedup_key: u128,
        payload: &Bytes,
        direct: &mut Vec<DirectLink>,
        now: Now,
    ) -> Option<u64> {
        let neighbour = self.transmission_link(queue)?;
        let index = match direct.iter().position(|d| d.neighbour == neighbour) {
            Some(index) if direct[index].open => index,
            Some(_) => return None,
            None => {
                let slot = self.queues.get(queue);
                if slot.is_some_and(|s| s.queue.depth() > 0 || s.pending > 0) {
                    return None;
                }
                if !self.link_takes_new(&neighbour, now) {
                    return None;
                }
                let link = self.links.get_mut(&neighbour)?;
                if link.assigning || link.sender_broken.is_some() {
                    return None;
                }
                let sender = link.sender.as_ref()?;
                if !sender.is_connected() || !sender.can_push(payload.len()) {
                    return None;
                }
                link.assigning = true;
                direct.push(DirectLink {
                    neighbour: neighbour.clone(),
                    state: sender.state(),
                    seqs: Vec::new(),
                    open: true,
                });
                direct.len() - 1
            }
        };
        let link = self.links.get_mut(&neighbour)?;
        let sender = link.sender.as_mut()?;
        match sender.push(dedup_key, payload.clone()) {
            Ok(channel_seq) => {
                direct[index].seqs.push(seq);
                direct[index].state = sender.state();
                Some(channel_seq)
            }
            Err(_) => {
                direct[index].open = false;
                None
            }
        }
    }

    /// A message given its channel sequence number in the commit just made durable.
    pub(super) fn place_assigned(
        &mut self,
        queue: QueueName,
        entry: Entry,
        channel_seq: u64,
        now: Now,
    ) {
        let Some(neighbour) = self.transmission_link(&queue) else {
            return;
        };
        if let Some(link) = self.links.get_mut(&neighbour) {
            debug_assert!(
                link.assigned
                    .back()
                    .is_none_or(|(s, _, _)| *s < channel_seq)
            );
            if link.assigned.is_empty() {
                link.progress_at = now.instant;
            }
            link.assigned.push_back((channel_seq, queue, entry));
        }
    }

    /// The direct assignments of a durable commit: their records are the next `locations`.
    /// Returns the links, for [`Core::direct_finished`].
    pub(super) fn direct_placed(
        &mut self,
        direct: Vec<DirectLink>,
        locations: &mut impl Iterator<Item = Location>,
    ) -> Vec<ManagerName> {
        let mut names = Vec::with_capacity(direct.len());
        for d in direct {
            let location = locations.next();
            let Some(link) = self.links.get_mut(&d.neighbour) else {
                continue;
            };
            link.assigning = false;
            let old = std::mem::replace(&mut link.send_record, location);
            link.persisted_sender = Some(d.state);
            if let Some(sender) = &mut link.sender {
                if d.state.next_seq > 1 {
                    sender.handle_seq_durable(d.state.next_seq - 1);
                }
            }
            self.swap_live(old, location);
            names.push(d.neighbour);
        }
        names
    }

    /// Lets a link send what was just assigned to it, and assign what waits.
    pub(super) fn direct_finished(&mut self, neighbour: &ManagerName, now: Now) {
        self.flush(neighbour, now.instant);
        self.pump(neighbour, now);
    }

    /// The commit carrying direct assignments failed: their numbers are reused.
    pub(super) fn direct_failed(&mut self, direct: Vec<DirectLink>) {
        for d in direct {
            if let Some(link) = self.links.get_mut(&d.neighbour) {
                link.assigning = false;
                if let Some(sender) = &mut link.sender {
                    sender.handle_seq_lost();
                }
            }
        }
    }

    /// The sender's assignments above its durable point could not be written: its messages
    /// return to their transmission queue, in order, to be assigned again.
    fn unassign_lost(&mut self, neighbour: &ManagerName) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let Some(sender) = &mut link.sender else {
            return;
        };
        sender.handle_seq_lost();
        let next_seq = sender.state().next_seq;
        let mut returned = Vec::new();
        while link
            .assigned
            .back()
            .is_some_and(|(seq, _, _)| *seq >= next_seq)
        {
            if let Some((_, queue, entry)) = link.assigned.pop_back() {
                returned.push((queue, entry));
            }
        }
        for (queue, entry) in returned {
            self.insert(&queue, entry);
        }
    }

    /// Messages given to a channel and not yet acked, for compaction: each with its neighbour
    /// and channel sequence number, which its copy must carry (an [`assignment_record`]) so
    /// that the number survives the segment that first recorded it.
    pub(super) fn assigned_entries(&self) -> impl Iterator<Item = (&Entry, &ManagerName, u64)> {
        self.links.iter().flat_map(|(neighbour, link)| {
            // Numbers whose assignment is still being written may never become durable (the
            // write can fail and the numbers be reused): those messages wait for the next
            // compaction.
            let durable = link.sender.as_ref().map_or(0, Sender::durable_up_to);
            link.assigned
                .iter()
                .take_while(move |(seq, _, _)| *seq <= durable)
                .map(move |(channel_seq, _, entry)| (entry, neighbour, *channel_seq))
        })
    }

    /// Points the message `seq`, given to `neighbour`'s channel as `channel_seq`, at a new copy
    /// of its record; false if it is no longer there (acked meanwhile).
    pub(super) fn relocate_assigned(
        &mut self,
        neighbour: &ManagerName,
        channel_seq: u64,
        seq: u64,
        body: BodyRef,
    ) -> bool {
        let Some(link) = self.links.get_mut(neighbour) else {
            return false;
        };
        // `assigned` is in channel-sequence order.
        let Ok(i) = link
            .assigned
            .binary_search_by_key(&channel_seq, |(channel_seq, _, _)| *channel_seq)
        else {
            return false;
        };
        match link.assigned.get_mut(i) {
            Some((_, _, entry)) if entry.seq == seq => {
                entry.body = body;
                true
            }
            _ => false,
        }
    }

    /// A channel record moved: the new copy is live, the old one dead.
    fn swap_live(&mut self, old: Option<Location>, new: Option<Location>) {
        if let Some(new) = new {
            self.liveness.add(new.segment, new.len);
        }
        if let Some(old) = old {
            self.liveness.remove(old.segment, old.len);
        }
    }

    /// Periodic link work: keep-alive timers, and channel records whose segment sealed are
    /// written again at the head so old segments can go.
    pub(super) fn on_link_maintenance(&mut self, now: Now) {
        let active = self.storage.active_segment();
        let names: Vec<ManagerName> = self.links.keys().cloned().collect();
        for neighbour in names {
            let Some(link) = self.links.get_mut(&neighbour) else {
                continue;
            };
            if let Some(sender) = &mut link.sender {
                sender.handle_timeout(now.instant);
                if sender.is_dead() {
                    self.close_channel(
                        &neighbour,
                        ChannelDirection::Outbound,
                        "keep-alive: no frame from the peer",
                    );
                    continue;
                }
            }
            self.flush(&neighbour, now.instant);
            // Also retries messages handed back after a failed assignment write.
            self.pump(&neighbour, now);
            let Some(link) = self.links.get_mut(&neighbour) else {
                continue;
            };
            if !link.assigning && link.send_record.is_some_and(|l| l.segment < active) {
                if let Some(state) = link.persisted_sender {
                    self.write_sender_state(&neighbour, state, Vec::new());
                }
            }
            let Some(link) = self.links.get_mut(&neighbour) else {
                continue;
            };
            if !link.receiving && link.receive_record.is_some_and(|l| l.segment < active) {
                self.write_receiver_state(&neighbour);
            }
        }
    }

    /// Writes a link's durable receiver state again at the journal's head, with as much of
    /// the recent-id window as a group holds (the records that carried it may go with their
    /// segments), from the reserve like a removal: it frees the segment of the old record.
    fn write_receiver_state(&mut self, neighbour: &ManagerName) {
        let ids_max = (self.storage.group_bytes_max() / 2 / 20) as usize;
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let state = link.durable_receiver;
        let mut ids: Vec<u128> = link.receiver.recent_ids().collect();
        ids.drain(..ids.len().saturating_sub(ids_max));
        link.receiving = true;
        let payload = record::encode(&Record::ChannelReceive(ReceiveRecord {
            from: neighbour.as_str(),
            epoch: state.epoch,
            sender_epoch: state.sender_epoch,
            stored_up_to: state.stored_up_to,
            reconcile_until: state.reconcile_until,
            ids,
        }));
        self.commit_freeing(
            vec![Bytes::from(payload)],
            super::Continuation::Link(LinkWrite::ReceiveState {
                neighbour: neighbour.clone(),
                state,
            }),
        );
    }

    /// The links, for status.
    pub(super) fn link_status(&self, now: Now) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|(neighbour, link)| {
                let queue = transmission_queue(neighbour);
                let slot = self.queues.get(&queue);
                let queued = slot.map_or(0, |s| s.queue.depth());
                let oldest = slot
                    .and_then(|s| s.queue.oldest_put_at_ms())
                    .into_iter()
                    .chain(link.assigned.front().map(|(_, _, e)| e.put_at_ms))
                    .min();
                let connected = link
                    .sender
                    .as_ref()
                    .is_some_and(|s| s.is_connected() && link.outbound.is_some());
                let state = if link.sender_broken.is_some() {
                    "broken"
                } else if connected {
                    "up"
                } else if link.outbound.is_some() {
                    "handshaking"
                } else {
                    "down"
                };
                LinkStatus {
                    neighbour: neighbour.to_string(),
                    linked: self.topology.link(&self.name, neighbour).is_some(),
                    state: state.to_owned(),
                    inbound: link.inbound.is_some(),
                    rtt_us: link
                        .outbound
                        .as_ref()
                        .and_then(|c| c.quic.as_ref())
                        .map(|q| q.rtt().as_micros() as u64),
                    transmission_depth: queued + link.assigned.len() as u64,
                    transmission_oldest_age_ms: oldest.map(|at| now.wall_ms.saturating_sub(at)),
                    in_flight: link.assigned.len() as u64,
                    messages_sent: link.counters.messages_sent,
                    bytes_sent: link.counters.bytes_sent,
                    messages_acked: link.counters.messages_acked,
                    bytes_acked: link.counters.bytes_acked,
                    messages_received: link.counters.messages_received,
                    duplicates_dropped: link.receiver.duplicates_skipped_by_id(),
                    connects: link.counters.connects,
                    last_error: link
                        .sender_broken
                        .clone()
                        .or_else(|| link.last_error.clone()),
                    routing: self.link_routing_state(neighbour).to_owned(),
                    heard_ms_ago: link
                        .adjacency
                        .silent_for(now.instant)
                        .map(|d| d.as_millis() as u64),
                }
            })
            .collect()
    }

    /// The routes in force, for status.
    pub(super) fn route_status(&self) -> Vec<RouteStatus> {
        self.routes
            .routes
            .iter()
            .map(|route| RouteStatus {
                destination: route.destination.to_string(),
                next_hop: route.next_hop.as_ref().map(ToString::to_string),
                cost: route.cost,
            })
            .collect()
    }
}

/// Payload bytes of a frame (a batch's messages; nothing for the others).
fn frame_bytes(frame: &ChannelFrame) -> usize {
    match frame {
        ChannelFrame::Batch(batch) => batch.messages.iter().map(|m| m.payload.len()).sum(),
        _ => 0,
    }
}

/// The whole message of an arrival `record::Passing` already read, for the rare paths that
/// change more than its queue, seq and trace (a dead letter's headers, a dropped body).
fn whole<'a>(payload: &'a [u8], from: &ManagerName) -> Option<record::StoredMessage<'a>> {
    match delivery::stored(payload) {
        Ok(stored) => Some(stored),
        // `Passing::read` checked every field, so this is a bug rather than a peer's garbage.
        Err(e) => {
            error!(%from, error = %e, "an arrival read in part does not decode whole; dropped");
            None
        }
    }
}

/// An arrival stored in this manager's dead-letter queue under `seq`, with `hop` joined to its
/// trace and headers saying why and where it was going.
fn dead_lettered(
    stored: &record::StoredMessage<'_>,
    seq: u64,
    hop: (&str, u64),
    reason: &str,
) -> Vec<u8> {
    delivery::encode_arrived(
        stored,
        DEAD_LETTER_QUEUE,
        seq,
        hop,
        &[
            (DEAD_LETTER_REASON_HEADER, reason),
            (DEAD_LETTER_QUEUE_HEADER, stored.destination),
        ],
    )
}

/// What a channel deduplicates a message by, from its record (0 if it does not decode: the
/// receiver then skips it by sequence number only); see [`record::dedup_key`].
fn entry_id(payload: &[u8]) -> u128 {
    record::enqueue_dedup_key(payload).unwrap_or(0)
}
