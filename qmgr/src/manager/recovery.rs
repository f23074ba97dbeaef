//! Start-up: replays the journal into the queues' entries.
//!
//! Invariant: a message is live after replay exactly when an `Enqueue` for its seq survives
//! and no later `Remove` names it. The same seq may be enqueued twice (a message restored in
//! place); the later copy wins. Bodies are never held: an entry keeps only where its record
//! is.
//!
//! Channels: the last `ChannelSend` of each neighbour is its sender's state and the last
//! `ChannelReceive` its receiver's; a live message named in a `ChannelSend` was given a channel
//! sequence number, so it leaves its transmission queue and is handed back to that sender as
//! held (it must be resent under that number, never renumbered).

use std::collections::{BTreeSet, HashMap, VecDeque};

use hopmq::QueueName;

use super::liveness::Liveness;
use crate::channel::receiver::{RECENT_IDS_MAX, ReceiverState};
use crate::channel::sender::SenderState;
use crate::custody::{ACCEPTED_HEADER, Accepted, STAMP_HEADER, stamp_among};
use crate::manager::core::{HELD_QUEUE, TRANSMISSION_QUEUE_PREFIX};
use crate::queue::local::{BodyRef, Entry, LocalQueue, correlation_hash};
use crate::record::{self, Record, RecordError};
use crate::store::{self, Journal, JournalConfig, Location, RecoveryReport, StoreError};

/// A channel sender's durable state.
#[derive(Debug)]
pub struct RecoveredSender {
    /// The neighbour.
    pub to: String,
    /// From its last `ChannelSend`.
    pub state: SenderState,
    /// Where that record is (it pins its segment).
    pub location: Location,
    /// Live messages with a channel sequence number, in that order: `(channel seq, queue,
    /// entry)`.
    pub held: Vec<(u64, QueueName, Entry)>,
}

/// A channel receiver's durable state.
#[derive(Debug)]
pub struct RecoveredReceiver {
    /// The neighbour.
    pub from: String,
    /// From its last `ChannelReceive`.
    pub state: ReceiverState,
    /// Where that record is.
    pub location: Location,
    /// Ids stored through this channel, oldest first, at most `RECENT_IDS_MAX`.
    pub recent_ids: Vec<u128>,
}

/// What the journal held of custody (see `crate::custody`).
#[derive(Debug, Default)]
pub struct RecoveredCustody {
    /// The highest epoch an incarnation of this manager wrote.
    pub epoch: u64,
    /// Every stream's accepted numbers: the custody records' and those of stamped messages.
    pub(crate) accepted: Accepted,
    /// The last custody record.
    pub location: Option<Location>,
    /// Segments holding stamped messages (their acceptance is not yet in a custody record
    /// written after them: the manager writes one at start).
    pub pins: BTreeSet<u64>,
    /// This manager's own messages kept for their destination's confirmation, in seq order:
    /// `(destination, epoch, number, entry)`.
    pub kept: Vec<(String, u64, u64, Entry)>,
}

impl RecoveredCustody {
    /// What custody keeps live: the last custody record and the pinned segments.
    fn liveness(&self) -> Liveness {
        let mut liveness = Liveness::default();
        if let Some(location) = self.location {
            liveness.add(location.segment, location.len);
        }
        for &segment in &self.pins {
            liveness.add(segment, 0);
        }
        liveness
    }
}

/// The durable subscriptions the journal held: its last `Subscriptions` record.
#[derive(Debug, Default)]
pub struct RecoveredSubscriptions {
    /// Every durable subscription, by name.
    pub defs: Vec<crate::pubsub::SubscriptionDef>,
    /// Where that record is (it stays live until written again at the head).
    pub location: Option<Location>,
}

/// What the journal held.
pub struct Recovered {
    /// Each queue's entries.
    pub queues: Vec<(QueueName, LocalQueue)>,
    /// The seq the next message gets: above every seq the journal mentions.
    pub next_seq: u64,
    /// Which segments hold live messages.
    pub liveness: Liveness,
    /// What recovery found and did.
    pub report: RecoveryReport,
    /// Channel senders, by neighbour.
    pub senders: Vec<RecoveredSender>,
    /// Channel receivers, by neighbour.
    pub receivers: Vec<RecoveredReceiver>,
    /// Custody state.
    pub custody: RecoveredCustody,
    /// Durable subscriptions.
    pub subscriptions: RecoveredSubscriptions,
}

/// Why recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store refused to open (corruption, I/O).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record passed its checksum but does not decode: written by another build.
    #[error("journal record at segment {segment} offset {offset}: {error}")]
    Record {
        /// Its segment.
        segment: u64,
        /// Its offset.
        offset: u64,
        /// Why.
        error: RecordError,
    },
    /// A record names an invalid queue.
    #[error("journal record at segment {segment} offset {offset} names invalid queue `{queue}`")]
    QueueName {
        /// Its segment.
        segment: u64,
        /// Its offset.
        offset: u64,
        /// The name.
        queue: String,
    },
}

/// Opens the journal and rebuilds every queue's entries.
pub fn recover(config: JournalConfig) -> Result<(Journal, Recovered), RecoverError> {
    let mut replay = Replay::default();
    let (journal, report) =
        store::open(config, |location, payload| replay.record(location, payload))?;
    Ok((journal, replay.finish(report)))
}

/// The state records rebuild, fed one record at a time in journal order: what
/// [`recover`] does with the journal's records, and a simulated disk with its own.
#[derive(Default)]
pub struct Replay {
    // Queue names interned: replaying a million messages should not allocate a million names.
    names: Vec<QueueName>,
    name_index: HashMap<String, u32>,
    live: HashMap<u64, (u32, Entry)>,
    max_seq: u64,
    senders: HashMap<String, (SenderState, Location)>,
    /// Message seq -> (neighbour, channel seq).
    assigned: HashMap<u64, (String, u64)>,
    receivers: HashMap<String, (ReceiverState, Location, VecDeque<u128>)>,
    custody: RecoveredCustody,
    /// Message seq -> (destination, epoch, number) of kept messages: several for a
    /// publication's share kept for several destinations.
    kept: HashMap<u64, Vec<(String, u64, u64)>>,
    subscriptions: RecoveredSubscriptions,
}

impl Replay {
    /// Applies one intact record.
    pub fn record(&mut self, location: Location, payload: &[u8]) -> Result<(), RecoverError> {
        let at = |error| RecoverError::Record {
            segment: location.segment,
            offset: location.offset,
            error,
        };
        match record::decode(payload).map_err(at)? {
            Record::Enqueue(message) => self.enqueue(location, &message)?,
            Record::Remove(seqs) => {
                for seq in seqs {
                    self.max_seq = self.max_seq.max(seq);
                    self.live.remove(&seq);
                    self.assigned.remove(&seq);
                    self.kept.remove(&seq);
                }
            }
            Record::Kept(kept) => {
                for (seq, number) in kept.pairs {
                    // No longer the channel's: a neighbour has it.
                    self.assigned.remove(&seq);
                    let place = (kept.destination.to_owned(), kept.epoch, number);
                    let places = self.kept.entry(seq).or_default();
                    // Compaction writes the same records again with the message.
                    places.retain(|(destination, _, _)| *destination != place.0);
                    places.push(place);
                }
            }
            Record::ChannelSend(send) => {
                let first = send.next_seq.saturating_sub(send.assigned.len() as u64);
                for (i, &seq) in send.assigned.iter().enumerate() {
                    self.assigned
                        .insert(seq, (send.to.to_owned(), first + i as u64));
                }
                let state = SenderState {
                    epoch: send.epoch,
                    receiver_epoch: send.receiver_epoch,
                    next_seq: send.next_seq,
                };
                self.senders.insert(send.to.to_owned(), (state, location));
            }
            Record::ChannelAssigned(assigned_record) => {
                for (seq, channel_seq) in assigned_record.pairs {
                    self.assigned
                        .insert(seq, (assigned_record.to.to_owned(), channel_seq));
                }
            }
            Record::ChannelReceive(receive) => {
                let state = ReceiverState {
                    epoch: receive.epoch,
                    sender_epoch: receive.sender_epoch,
                    stored_up_to: receive.stored_up_to,
                    reconcile_until: receive.reconcile_until,
                };
                let slot = self
                    .receivers
                    .entry(receive.from.to_owned())
                    .or_insert_with(|| (state, location, VecDeque::new()));
                slot.0 = state;
                slot.1 = location;
                for id in receive.ids {
                    if slot.2.len() == RECENT_IDS_MAX {
                        slot.2.pop_front();
                    }
                    slot.2.push_back(id);
                }
            }
            Record::Custody(custody) => {
                self.custody.epoch = self.custody.epoch.max(custody.epoch);
                self.custody.accepted.merge(custody.accepted);
                self.custody.location = Some(location);
            }
            Record::Subscriptions(list) => {
                self.subscriptions = RecoveredSubscriptions {
                    defs: subscription_defs(&list),
                    location: Some(location),
                };
            }
        }
        Ok(())
    }

    /// An `Enqueue`: the message is live under its seq (a later copy of the same seq wins).
    fn enqueue(
        &mut self,
        location: Location,
        message: &record::StoredMessage<'_>,
    ) -> Result<(), RecoverError> {
        let index = match self.name_index.get(message.queue) {
            Some(&index) => index,
            None => {
                let name = QueueName::new(message.queue).map_err(|_| RecoverError::QueueName {
                    segment: location.segment,
                    offset: location.offset,
                    queue: message.queue.to_owned(),
                })?;
                self.names.push(name);
                let index = (self.names.len() - 1) as u32;
                self.name_index.insert(message.queue.to_owned(), index);
                index
            }
        };
        self.max_seq = self.max_seq.max(message.seq);
        self.stamped(location, message);
        let entry = Entry {
            seq: message.seq,
            body: BodyRef::journal(location),
            bytes: message.body.len() as u32,
            priority: message.priority,
            reports: reports_requested(message),
            expires_at_ms: message.expires_at_ms.unwrap_or(u64::MAX),
            put_at_ms: message.put_at_ms,
            correlation: correlation_hash(message.correlation_id),
            delivery_count: 0,
        };
        self.live.insert(message.seq, (index, entry));
        Ok(())
    }

    /// A stamped message stored for good here (not waiting to leave), or passed on to its
    /// queue's new home after it was accepted here, was accepted.
    fn stamped(&mut self, location: Location, message: &record::StoredMessage<'_>) {
        let waiting =
            message.queue.starts_with(TRANSMISSION_QUEUE_PREFIX) || message.queue == HELD_QUEUE;
        let key = if waiting {
            ACCEPTED_HEADER
        } else {
            STAMP_HEADER
        };
        if let Some(stamp) = stamp_among(&message.headers, key) {
            self.custody.accepted.recovered(stamp);
            self.custody.pins.insert(location.segment);
        }
    }

    /// The state the records left, with what the store's own recovery found.
    pub fn finish(self, report: RecoveryReport) -> Recovered {
        let Self {
            names,
            live,
            max_seq,
            senders,
            mut assigned,
            receivers,
            mut custody,
            mut kept,
            subscriptions,
            ..
        } = self;
        let mut liveness = custody.liveness();
        if let Some(location) = subscriptions.location {
            liveness.add(location.segment, location.len);
        }
        let mut sizes = vec![0usize; names.len()];
        for (index, _) in live.values() {
            sizes[*index as usize] += 1;
        }
        let mut per_queue: Vec<Vec<Entry>> = sizes.into_iter().map(Vec::with_capacity).collect();
        let mut held: HashMap<String, Vec<(u64, QueueName, Entry)>> = HashMap::new();
        for (seq, (index, entry)) in live {
            if let Some(location) = entry.body.location() {
                liveness.add(location.segment, location.len);
            }
            if let Some(places) = kept.remove(&seq) {
                for (destination, epoch, number) in places {
                    custody.kept.push((destination, epoch, number, entry));
                }
                continue;
            }
            match assigned.remove(&seq) {
                Some((to, channel_seq)) => held.entry(to).or_default().push((
                    channel_seq,
                    names[index as usize].clone(),
                    entry,
                )),
                None => per_queue[index as usize].push(entry),
            }
        }
        let mut senders: Vec<RecoveredSender> = senders
            .into_iter()
            .map(|(to, (state, location))| {
                liveness.add(location.segment, location.len);
                let mut held = held.remove(&to).unwrap_or_default();
                held.sort_unstable_by_key(|(channel_seq, _, _)| *channel_seq);
                RecoveredSender {
                    to,
                    state,
                    location,
                    held,
                }
            })
            .collect();
        custody
            .kept
            .sort_unstable_by(|a, b| (a.3.seq, &a.0).cmp(&(b.3.seq, &b.0)));
        // In name order, whatever the hash maps' order: a simulation must replay exactly.
        senders.sort_unstable_by(|a, b| a.to.cmp(&b.to));
        let receivers = recovered_receivers(receivers, &mut liveness);
        let mut queues: Vec<(QueueName, LocalQueue)> = names
            .into_iter()
            .zip(per_queue)
            .map(|(name, mut entries)| {
                entries.sort_unstable_by_key(|e| e.seq);
                (name, LocalQueue::from_sorted(entries))
            })
            .collect();
        queues.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Recovered {
            queues,
            next_seq: max_seq + 1,
            liveness,
            report,
            senders,
            receivers,
            custody,
            subscriptions,
        }
    }
}

/// The subscriptions of a record; one whose name or filter no longer validates (written by a
/// build with other rules) is left out, loudly.
fn subscription_defs(
    list: &[record::SubscriptionRecord<'_>],
) -> Vec<crate::pubsub::SubscriptionDef> {
    list.iter()
        .filter_map(|s| {
            let name = QueueName::new(s.name);
            let filter = hopmq_routing::topic::Filter::new(s.filter);
            match (name, filter) {
                (Ok(name), Ok(filter)) => Some(crate::pubsub::SubscriptionDef {
                    name,
                    filter,
                    max_depth: s.max_depth,
                }),
                (Err(e), _) => {
                    tracing::error!(name = s.name, error = %e, "a recorded subscription's name is invalid; it is dropped");
                    None
                }
                (_, Err(e)) => {
                    tracing::error!(name = s.name, error = %e, "a recorded subscription's filter is invalid; it is dropped");
                    None
                }
            }
        })
        .collect()
}

/// The receivers' states, in name order (whatever the hash map's), their records live.
fn recovered_receivers(
    receivers: HashMap<String, (ReceiverState, Location, VecDeque<u128>)>,
    liveness: &mut Liveness,
) -> Vec<RecoveredReceiver> {
    let mut receivers: Vec<RecoveredReceiver> = receivers
        .into_iter()
        .map(|(from, (state, location, ids))| {
            liveness.add(location.segment, location.len);
            RecoveredReceiver {
                from,
                state,
                location,
                recent_ids: ids.into(),
            }
        })
        .collect();
    receivers.sort_unstable_by(|a, b| a.from.cmp(&b.from));
    receivers
}

/// The reports a recovered message still owes, from its record's header.
fn reports_requested(message: &record::StoredMessage<'_>) -> hopmq::Reports {
    let header = message
        .headers
        .iter()
        .find(|(key, _)| *key == hopmq::report::REPORTS_HEADER)
        .map(|(_, value)| *value);
    super::core::reports_requested(header, message.queue)
}
