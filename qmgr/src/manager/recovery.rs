//! Start-up: replays the journal into the queues' entries.
//!
//! Invariant: a message is live after replay exactly when an `Enqueue` for its seq survives
//! and no later `Remove` names it. The same seq may be enqueued twice (a message restored in
//! place); the later copy wins. Bodies are never held: an entry keeps only where its record
//! is.

use std::collections::HashMap;

use hopmq::QueueName;

use super::liveness::Liveness;
use crate::queue::local::{BodyRef, Entry, LocalQueue, correlation_hash};
use crate::record::{self, Record, RecordError};
use crate::store::{self, Journal, JournalConfig, RecoveryReport, StoreError};

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
    for (_, (index, entry)) in live {
        if let Some(location) = entry.body.location() {
            liveness.add(location.segment, location.len);
        }
        per_queue[index as usize].push(entry);
    }
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
    })
}
