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

use std::collections::{HashMap, VecDeque};

use hopmq::QueueName;

use super::liveness::Liveness;
use crate::channel::receiver::{RECENT_IDS_MAX, ReceiverState};
use crate::channel::sender::SenderState;
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

/// What the journal held.
pub struct Recovered {
    /// The open journal.
    pub journal: Journal,
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
}

/// Why recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store refused to open (corruption, I/O).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record passed its checksum but does not decode: written by another build.
    #[error("journal record at segment {segment} offset {offset}: {source}")]
    Record {
        /// Its segment.
        segment: u64,
        /// Its offset.
        offset: u64,
        /// Why.
        #[source]
        source: RecordError,
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
pub fn recover(config: JournalConfig) -> Result<Recovered, RecoverError> {
    // Queue names interned: replaying a million messages should not allocate a million names.
    let mut names: Vec<QueueName> = Vec::new();
    let mut name_index: HashMap<String, u32> = HashMap::new();
    let mut live: HashMap<u64, (u32, Entry)> = HashMap::new();
    let mut max_seq = 0u64;
    let mut senders: HashMap<String, (SenderState, Location)> = HashMap::new();
    // Message seq -> (neighbour, channel seq).
    let mut assigned: HashMap<u64, (String, u64)> = HashMap::new();
    let mut receivers: HashMap<String, (ReceiverState, Location, VecDeque<u128>)> = HashMap::new();
    let (journal, report) = store::open(config, |location, payload| {
        let at = |source| RecoverError::Record {
            segment: location.segment,
            offset: location.offset,
            source,
        };
        match record::decode(payload).map_err(at)? {
            Record::Enqueue(message) => {
                let index = match name_index.get(message.queue) {
                    Some(&index) => index,
                    None => {
                        let name =
                            QueueName::new(message.queue).map_err(|_| RecoverError::QueueName {
                                segment: location.segment,
                                offset: location.offset,
                                queue: message.queue.to_owned(),
                            })?;
                        names.push(name);
                        let index = (names.len() - 1) as u32;
                        name_index.insert(message.queue.to_owned(), index);
                        index
                    }
                };
                max_seq = max_seq.max(message.seq);
                let entry = Entry {
                    seq: message.seq,
                    body: BodyRef::journal(location),
                    bytes: message.body.len() as u32,
                    priority: message.priority,
                    expires_at_ms: message.expires_at_ms.unwrap_or(u64::MAX),
                    put_at_ms: message.put_at_ms,
                    correlation: correlation_hash(message.correlation_id),
                    delivery_count: 0,
                };
                live.insert(message.seq, (index, entry));
            }
            Record::Remove(seqs) => {
                for seq in seqs {
                    max_seq = max_seq.max(seq);
                    live.remove(&seq);
                    assigned.remove(&seq);
                }
            }
            Record::ChannelSend(send) => {
                let first = send.next_seq.saturating_sub(send.assigned.len() as u64);
                for (i, &seq) in send.assigned.iter().enumerate() {
                    assigned.insert(seq, (send.to.to_owned(), first + i as u64));
                }
                let state = SenderState {
                    epoch: send.epoch,
                    receiver_epoch: send.receiver_epoch,
                    next_seq: send.next_seq,
                };
                senders.insert(send.to.to_owned(), (state, location));
            }
            Record::ChannelAssigned(assigned_record) => {
                for (seq, channel_seq) in assigned_record.pairs {
                    assigned.insert(seq, (assigned_record.to.to_owned(), channel_seq));
                }
            }
            Record::ChannelReceive(receive) => {
                let state = ReceiverState {
                    epoch: receive.epoch,
                    sender_epoch: receive.sender_epoch,
                    stored_up_to: receive.stored_up_to,
                    reconcile_until: receive.reconcile_until,
                };
                let slot = receivers
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
        }
        Ok::<(), RecoverError>(())
    })?;
    let mut liveness = Liveness::default();
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
        match assigned.remove(&seq) {
            Some((to, channel_seq)) => held.entry(to).or_default().push((
                channel_seq,
                names[index as usize].clone(),
                entry,
            )),
            None => per_queue[index as usize].push(entry),
        }
    }
    let senders = senders
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
    let receivers = receivers
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
    let queues = names
        .into_iter()
        .zip(per_queue)
        .map(|(name, mut entries)| {
            entries.sort_unstable_by_key(|e| e.seq);
            (name, LocalQueue::from_sorted(entries))
        })
        .collect();
    Ok(Recovered {
        journal,
        queues,
        next_seq: max_seq + 1,
        liveness,
        report,
        senders,
        receivers,
    })
}
