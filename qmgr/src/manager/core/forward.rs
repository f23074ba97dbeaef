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
//! live in [`super::Retention`] and are written again at the journal's head when their segment
//! seals, so deleting old segments never loses a channel's state.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use hopmq::protocol::{LinkStatus, RouteStatus};
use hopmq::{ManagerName, QueueName};
use tracing::{debug, error, info, warn};

use super::custody::Admission;
use super::{Core, DEAD_LETTER_QUEUE, Handoff, PutItem, dead_letter_queue};
use crate::channel::adjacency::Adjacency;
use crate::channel::connection::code;
use crate::channel::connection::{Channel, ChannelDirection};
use crate::channel::frame::ChannelFrame;
use crate::channel::receiver::{Receiver, ReceiverOutput, ReceiverState, Store};
use crate::channel::sender::{HeldMessage, Sender, SenderState};
use crate::custody::{Admitted, Stamp, UNORDERED_HEADER, Waiting};
use crate::manager::clock::Now;
use crate::manager::delivery::{self, DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER};
use crate::manager::recovery;
use crate::queue::local::{BodyRef, Entry, correlation_hash};
use crate::record::{self, AssignedRecord, ReceiveRecord, Record, SendRecord};
use crate::store::{Location, StoreError};

mod hold;
mod links;
mod receive;
mod resend;
mod send;

pub(super) use self::links::Links;
pub(super) use self::resend::copies_made;
#[cfg(test)]
mod tests;

/// Frames a link's inbox holds while its store is being written. The sender's window
/// ([`crate::channel::sender::WINDOW_MESSAGES_MAX`]) bounds what an honest peer sends ahead;
/// past this the peer is misbehaving and its connection is closed.
pub(super) const INBOX_FRAMES_MAX: usize = 16 * 1024;

/// Payload bytes a link's inbox holds at most: what an honest sender can have unacknowledged
/// ([`crate::channel::sender::HELD_BYTES_MAX`]) plus one largest message.
pub(super) const INBOX_BYTES_MAX: usize =
    crate::channel::sender::HELD_BYTES_MAX + crate::channel::frame::WIRE_MESSAGE_BYTES_MAX;

/// Received batches stop being merged into one journal write past this many payload bytes, so
/// a write stays within the journal's group limit even with the smallest segments.
const RECEIVE_MERGE_BYTES_MAX: usize = crate::channel::frame::BATCH_BYTES_MAX;

/// Room kept in a journal group beside an arriving message's record (the channel records).
pub(super) const ARRIVAL_GROUP_ROOM_BYTES: u64 = 64 * 1024;

/// The prefix of a transmission queue's name; the neighbour's name follows.
pub(crate) const TRANSMISSION_QUEUE_PREFIX: &str = "hopmq.xmit.";

/// The queue of messages waiting for a route.
pub(crate) const HELD_QUEUE: &str = "hopmq.held";

/// A link whose messages in flight have had no ack for this long takes no new ones: its
/// neighbour may have just died, and whatever it is given now can only be delivered once it
/// returns. A healthy neighbour acks within a sync or two.
pub(super) const ACK_STALL_MAX: std::time::Duration = std::time::Duration::from_millis(300);

/// Messages moved from a transmission queue to a sender per assignment record.
const ASSIGN_MESSAGES_MAX: usize = 1024;

const _: () = assert!(crate::channel::sender::WINDOW_MESSAGES_MAX <= INBOX_FRAMES_MAX);

/// The transmission queue of messages whose next hop is `neighbour`.
pub(crate) fn transmission_queue(neighbour: &ManagerName) -> QueueName {
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
pub(super) struct LinkCounters {
    pub(super) messages_sent: u64,
    pub(super) bytes_sent: u64,
    messages_acked: u64,
    bytes_acked: u64,
    messages_received: u64,
    /// Batches taken from an early copy.
    early_batches: u64,
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
    /// Seqs of messages in `assigned` copied along another route (see `resend`).
    resent: rustc_hash::FxHashSet<u64>,
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
    /// The connection and last sequence number of the batches queued in `inbox`, if any:
    /// early copies that follow on from them are taken (see `on_early`). Kept as frames are
    /// queued rather than found by scanning the inbox, which holds up to `INBOX_FRAMES_MAX`
    /// frames, for each copy.
    inbox_up_to: Option<(u64, u64)>,
    pub(super) inbound: Option<Channel>,
    pub(super) counters: LinkCounters,
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
    /// Queues `frame` from `connection` behind the write in progress; false, queueing nothing,
    /// when the inbox is full.
    fn queue_in_inbox(&mut self, connection: u64, frame: ChannelFrame) -> bool {
        let bytes = frame_bytes(&frame);
        if self.inbox.len() >= INBOX_FRAMES_MAX || self.inbox_bytes + bytes > INBOX_BYTES_MAX {
            return false;
        }
        self.inbox_bytes += bytes;
        if let ChannelFrame::Batch(batch) = &frame {
            let last =
                (batch.first_seq.saturating_add(batch.messages.len() as u64)).saturating_sub(1);
            self.inbox_up_to = match self.inbox_up_to {
                Some((queued, up_to)) if queued == connection => Some((queued, up_to.max(last))),
                _ => Some((connection, last)),
            };
        }
        self.inbox.push_back((connection, frame));
        true
    }

    /// Empties the inbox.
    fn clear_inbox(&mut self) {
        self.inbox.clear();
        self.inbox_bytes = 0;
        self.inbox_up_to = None;
    }

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
            .and_then(Channel::rtt)
            .unwrap_or_default();
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
            resent: rustc_hash::FxHashSet::default(),
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
            inbox_up_to: None,
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
pub(crate) struct DirectLink {
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
    /// Stamped arrivals admitted by custody.
    admitted: Vec<Admitted>,
    /// Held arrivals released by what this batch admitted, still to be placed in it.
    released: Vec<Waiting>,
    /// The arrival being placed leaves its hold without what it waited for, for this reason.
    unordered: Option<String>,
    /// The arrival being placed was held since then (if held again, it keeps its deadline).
    held_since_ms: Option<u64>,
    /// Seqs of the publications waiting whole with the held messages, split once the batch
    /// is durable (see `publish::Placing::held_whole`).
    held_whole: Vec<u64>,
}

impl Arrivals {
    /// Where the copies of a publication arriving from `from` go (see `publish::Placing`):
    /// this batch's write, held for order if they must wait; `room` (the bytes left in the
    /// write) for a received batch, whose publications may then wait whole instead.
    fn placing<'a>(
        &'a mut self,
        from: &'a ManagerName,
        room: Option<u64>,
    ) -> super::publish::Placing<'a> {
        super::publish::Placing {
            direct: Some(&mut self.direct),
            handoffs: Some(super::publish::Handoffs {
                handoffs: &mut self.handoffs,
                open: &mut self.open,
                handed_off: &mut self.handed_off,
            }),
            hold: false,
            room,
            admitted: Some(&mut self.admitted),
            held_whole: room.map(|_| &mut self.held_whole),
            order: Some(super::publish::Order {
                from,
                held_since_ms: self.held_since_ms,
                unordered: self.unordered.clone(),
                released: &mut self.released,
            }),
        }
    }
}

/// What to do once a link's write is durable.
#[derive(Debug)]
pub(crate) enum LinkWrite {
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
        /// Its stamped arrivals, forgotten by custody if it fails.
        admitted: Vec<Admitted>,
        /// Its publications that wait whole with the held messages, to split once it is
        /// durable.
        held_whole: Vec<u64>,
    },
    /// Held arrivals released at their deadline (see `hold`).
    Released(hold::Released),
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
            let epoch = self.links.next_epoch();
            let mut link = Link::new(
                Some(receiver.state),
                receiver.recent_ids,
                epoch,
                now.instant,
            );
            link.receive_record = Some(receiver.location);
            self.links.get_or_insert_with(&neighbour, || link);
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
            let epoch = self.links.next_epoch();
            let link = self.links.get_or_insert_with(&neighbour, || {
                Link::new(None, Vec::new(), epoch, now.instant)
            });
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
            self.routing
                .topology()
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
        let (receiver_epoch, sender_epoch) = (self.links.next_epoch(), self.links.next_epoch());
        let link = self.links.get_or_insert_with(neighbour, || {
            Link::new(None, Vec::new(), receiver_epoch, now.instant)
        });
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
        let connection = channel.id;
        let old = match self.links.attach(&neighbour, direction, channel) {
            Ok(old) => old,
            Err(_dropped) => return,
        };
        if let Some(old) = old {
            old.close(code::NORMAL, "replaced by a new connection");
        }
        let Some(link) = self.links.get_mut(&neighbour) else {
            return;
        };
        info!(%neighbour, ?direction, connection, "channel connected");
        match direction {
            ChannelDirection::Outbound => {
                link.counters.connects += 1;
                if let Some(sender) = &mut link.sender {
                    sender.handle_connecting(now);
                }
                self.flush(&neighbour, now);
            }
            ChannelDirection::Inbound => {
                link.receiver.handle_disconnected();
                link.clear_inbox();
            }
        }
        // A neighbour that connects may have restarted with an empty link-state database.
        self.send_database(&neighbour, direction);
    }

    /// The driver saw a connection end (or the core closed it).
    pub(super) fn on_channel_closed(&mut self, connection: u64, reason: &str) {
        let Some((neighbour, direction)) = self.links.detach(connection) else {
            return;
        };
        let Some(link) = self.links.get_mut(&neighbour) else {
            return;
        };
        info!(%neighbour, ?direction, connection, %reason, "channel disconnected");
        link.last_error = Some(reason.to_owned());
        // The connection was the link's current one in that direction (see [`Links`]).
        match direction {
            ChannelDirection::Outbound => {
                if let Some(sender) = &mut link.sender {
                    sender.handle_disconnected();
                }
            }
            ChannelDirection::Inbound => {
                link.receiver.handle_disconnected();
                link.clear_inbox();
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
        let channel = self.links.take_channel(neighbour, direction);
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
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
                link.clear_inbox();
            }
        }
        if let Some(channel) = channel {
            warn!(%neighbour, ?direction, connection = channel.id, reason = %why, "closing channel");
            channel.close(code, why);
        }
    }

    /// A frame from a channel connection.
    pub(super) fn on_channel_frame(&mut self, connection: u64, frame: ChannelFrame, now: Now) {
        let Some((neighbour, direction)) = self.links.channel_of(connection) else {
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
            ChannelFrame::Custody(custody) => return self.on_custody_frame(custody, now),
            ChannelFrame::Publications(publications) => {
                return self.on_volatile_publications(&neighbour, publications, now);
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
                    if !link.queue_in_inbox(connection, frame) {
                        self.close_channel(
                            &neighbour,
                            ChannelDirection::Inbound,
                            "peer sent past its window",
                        );
                    }
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
            for channel_seq in deletable {
                while let Some((seq, _, entry)) = link.assigned.front() {
                    if *seq > channel_seq {
                        break;
                    }
                    let entry = *entry;
                    link.assigned.pop_front();
                    link.counters.messages_acked += 1;
                    link.counters.bytes_acked += u64::from(entry.bytes);
                    entries.push(entry);
                }
            }
            self.totals.forwarded += entries.len() as u64;
            let (entries, mut records) = self.keep_acknowledged(neighbour, entries, now);
            let seqs: Vec<u64> = entries
                .iter()
                .filter(|entry| !matches!(entry.body, BodyRef::Memory))
                .map(|entry| entry.seq)
                .collect();
            if seqs.is_empty() && records.is_empty() {
                for entry in &entries {
                    self.forget(entry);
                }
            } else {
                // One group: a crash keeps all or none of what the acknowledgement settled,
                // so the messages still assigned at restart run consecutively.
                if !seqs.is_empty() {
                    records.push(Bytes::from(record::encode(&Record::Remove(seqs))));
                }
                // Deferred: if a crash undoes it, the messages are held again at restart and
                // the neighbour's welcome (it stores them durably) settles them at once.
                self.append(
                    crate::manager::Durability::Deferred,
                    records,
                    super::Continuation::Removed { entries },
                );
            }
        }
        self.pump(neighbour, now);
        self.flush(neighbour, now.instant);
    }

    /// A channel record moved: the new copy is live, the old one dead.
    fn swap_live(&mut self, old: Option<Location>, new: Option<Location>) {
        if let Some(new) = new {
            self.retention.live(new.segment, new.len);
        }
        if let Some(old) = old {
            self.retention.dead(old.segment, old.len);
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
                    linked: self
                        .routing
                        .topology()
                        .link(&self.name, neighbour)
                        .is_some(),
                    state: state.to_owned(),
                    inbound: link.inbound.is_some(),
                    rtt_us: link
                        .outbound
                        .as_ref()
                        .and_then(Channel::rtt)
                        .map(|rtt| rtt.as_micros() as u64),
                    transmission_depth: queued + link.assigned.len() as u64,
                    transmission_oldest_age_ms: oldest.map(|at| now.wall_ms.saturating_sub(at)),
                    in_flight: link.assigned.len() as u64,
                    messages_sent: link.counters.messages_sent,
                    bytes_sent: link.counters.bytes_sent,
                    messages_acked: link.counters.messages_acked,
                    bytes_acked: link.counters.bytes_acked,
                    messages_received: link.counters.messages_received,
                    duplicates_dropped: link.receiver.duplicates_skipped_by_id(),
                    early_batches: link.counters.early_batches,
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
                    ..LinkStatus::default()
                }
            })
            .collect()
    }

    /// The routes in force, for status.
    pub(super) fn route_status(&self) -> Vec<RouteStatus> {
        self.routing
            .routes()
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

/// What a channel deduplicates a message by, from its record (0 if it does not decode: the
/// receiver then skips it by sequence number only); see [`record::dedup_key`].
fn entry_id(payload: &[u8]) -> u128 {
    record::enqueue_dedup_key(payload).unwrap_or(0)
}
