//! The manager's journal records: what a queue manager writes inside the store's opaque
//! payloads.
//!
//! Each payload is one format-version byte, then a postcard-encoded [`Record`]. Records borrow
//! from the payload when decoded, so replaying a journal copies no bodies.
//!
//! **API boundary:** this is an on-disk format, and an `Enqueue` record is also how a message
//! crosses a channel (the wire payload of a message is its record, so the two formats are one).
//! Variants and fields are only ever appended in a new format version; a manager reads every
//! version up to its own and refuses a payload whose version it does not know.

use serde::{Deserialize, Serialize};

mod passing;

pub use passing::{Passing, dedup_key, enqueue_dedup_key, enqueue_destination, enqueue_id};

/// The newest record format this build reads and writes. Version 2 appended the channel
/// records, version 3 custody's summary and kept messages, version 4 the durable
/// subscriptions; older payloads decode unchanged.
pub const RECORD_FORMAT_VERSION: u8 = 4;

/// The version written on custody's records (see [`RECORD_FORMAT_VERSION`]).
pub const RECORD_FORMAT_VERSION_3: u8 = 3;

/// The version written on records that version 2 already had (a message's `Enqueue` is also
/// its wire form, so a neighbour running the previous release still reads it).
pub const RECORD_FORMAT_VERSION_2: u8 = 2;

/// The oldest record format this build reads.
pub const RECORD_FORMAT_VERSION_MIN: u8 = 1;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
    /// A message stored in a local queue (an application queue, a transmission queue, or the
    /// queue of messages held for lack of a route).
    #[serde(borrow)]
    Enqueue(StoredMessage<'a>),
    /// Messages removed for good, by seq: got, acked, expired, dead-lettered or moved.
    Remove(Vec<u64>),
    /// The sending side of the channel to one neighbour: its state, and the messages of that
    /// neighbour's transmission queue just given channel sequence numbers.
    #[serde(borrow)]
    ChannelSend(SendRecord<'a>),
    /// The receiving side of the channel from one neighbour, written in the same atomic group
    /// as the messages of the batch it accepts.
    #[serde(borrow)]
    ChannelReceive(ReceiveRecord<'a>),
    /// Channel sequence numbers of messages whose records were copied by compaction: written
    /// in the same group as the copies, so an assignment never depends on a segment that
    /// compaction lets go. Changes no sender state.
    #[serde(borrow)]
    ChannelAssigned(AssignedRecord<'a>),
    /// What this manager accepted of every custody stream that reached it (see
    /// `crate::custody`): written again at the journal's head before the records it covers
    /// may go. Version 3.
    Custody(crate::custody::CustodyRecord),
    /// This manager's own stamped messages that a neighbour acknowledged: no longer the
    /// channel's, they stay (live, out of every queue) until their destination confirms them,
    /// then a `Remove` names them. Version 3.
    #[serde(borrow)]
    Kept(KeptRecord<'a>),
    /// Every durable subscription of this manager, whole: the last one written is in force.
    /// Written again at the journal's head before its segment may go. Version 4.
    #[serde(borrow)]
    Subscriptions(Vec<SubscriptionRecord<'a>>),
}

/// One durable subscription (see [`Record::Subscriptions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord<'a> {
    /// Its name, also its queue's.
    pub name: &'a str,
    /// Its topic filter.
    pub filter: &'a str,
    /// Its queue's depth limit, if set.
    pub max_depth: Option<u64>,
}

/// Messages of one custody stream kept for their confirmation (see [`Record::Kept`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRecord<'a> {
    /// The stream's destination manager.
    pub destination: &'a str,
    /// The stream's epoch.
    pub epoch: u64,
    /// `(message seq, number in the stream)`.
    pub pairs: Vec<(u64, u64)>,
}

/// Assignments carried with relocated messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedRecord<'a> {
    /// The neighbour the channel goes to.
    pub to: &'a str,
    /// `(message seq, channel sequence number)`.
    pub pairs: Vec<(u64, u64)>,
}

/// The durable state of a channel's sender (see `channel::sender::SenderState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord<'a> {
    /// The neighbour the channel goes to.
    pub to: &'a str,
    /// This side's channel epoch.
    pub epoch: u64,
    /// The receiver's epoch last seen.
    pub receiver_epoch: Option<u64>,
    /// The next channel sequence number to assign.
    pub next_seq: u64,
    /// Message seqs (journal order) given the channel sequence numbers
    /// `next_seq - assigned.len() .. next_seq`, in that order.
    pub assigned: Vec<u64>,
}

/// The durable state of a channel's receiver (see `channel::receiver::ReceiverState`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiveRecord<'a> {
    /// The neighbour the channel comes from.
    pub from: &'a str,
    /// This side's channel epoch.
    pub epoch: u64,
    /// The sender's epoch last seen.
    pub sender_epoch: Option<u64>,
    /// Highest channel sequence number stored.
    pub stored_up_to: u64,
    /// The reconciliation bound (0 when not reconciling).
    pub reconcile_until: u64,
    /// The ids of the messages stored with this record, for dedup after a rollback.
    pub ids: Vec<u128>,
}

/// A message as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage<'a> {
    /// The manager-wide put order; identifies the message in later `Remove` records.
    pub seq: u64,
    /// The local queue holding it.
    pub queue: &'a str,
    /// Its id, assigned at its origin.
    pub id: u128,
    /// Where it is going, as an address (`QUEUE` or `QUEUE@MANAGER`).
    pub destination: &'a str,
    /// The manager where it was first put.
    pub origin: &'a str,
    /// When it was put at its origin, in milliseconds since the epoch.
    pub put_at_ms: u64,
    /// When it expires, in milliseconds since the epoch.
    pub expires_at_ms: Option<u64>,
    /// 0 to 9.
    pub priority: u8,
    /// Application headers plus `hopmq.*` ones, sorted by key.
    #[serde(borrow)]
    pub headers: Vec<(&'a str, &'a str)>,
    /// As put.
    pub correlation_id: Option<&'a str>,
    /// As put.
    pub reply_to: Option<&'a str>,
    /// Managers passed through, with arrival times.
    #[serde(borrow)]
    pub trace: Vec<(&'a str, u64)>,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub body: &'a [u8],
}

impl<'a> StoredMessage<'a> {
    /// The value of header `key`.
    pub fn header(&self, key: &str) -> Option<&'a str> {
        self.headers
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .map(|i| self.headers[i].1)
    }

    /// Sets header `key` to `value`, or drops it for `None`, keeping the headers sorted.
    pub fn set_header(&mut self, key: &'a str, value: Option<&'a str>) {
        match (self.headers.binary_search_by(|(k, _)| (*k).cmp(key)), value) {
            (Ok(i), Some(value)) => self.headers[i].1 = value,
            (Ok(i), None) => _ = self.headers.remove(i),
            (Err(i), Some(value)) => self.headers.insert(i, (key, value)),
            (Err(_), None) => {}
        }
    }
}

/// Why a payload is not a record this build understands.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Written by a newer (or unknown) format.
    #[error(
        "journal record format {found} is not supported (this build reads {RECORD_FORMAT_VERSION})"
    )]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// An empty payload.
    #[error("empty journal record")]
    Empty,
    /// The bytes do not decode.
    #[error("undecodable journal record: {0}")]
    Malformed(postcard::Error),
}

// Not `#[from]`, which would make the cause the `source` too: the message states it already.
impl From<postcard::Error> for RecordError {
    fn from(error: postcard::Error) -> Self {
        Self::Malformed(error)
    }
}

/// Encodes `record` with its version byte.
pub fn encode(record: &Record<'_>) -> Vec<u8> {
    // Sized up front: growing from one byte re-copied a message's body several times (a
    // tenth of a relay's CPU in a profile).
    let mut out = Vec::with_capacity(size_hint(record));
    out.push(match record {
        Record::Subscriptions(_) => RECORD_FORMAT_VERSION,
        Record::Custody(_) | Record::Kept(_) => RECORD_FORMAT_VERSION_3,
        _ => RECORD_FORMAT_VERSION_2,
    });
    // A Vec sink cannot fail and every field type serialises; an error here is a bug.
    // `to_io`: a Vec's `Write` copies a body with one memcpy, `Extend` byte by byte.
    postcard::to_io(record, out).unwrap_or_else(|e| unreachable!("records always serialise: {e}"))
}

/// At least the encoded size of `record`, for most records: varints take at most 10 bytes
/// (19 for a u128), strings and byte strings their length plus 5.
fn size_hint(record: &Record<'_>) -> usize {
    const FIELD: usize = 10;
    match record {
        Record::Enqueue(m) => {
            let strings = m.queue.len()
                + m.destination.len()
                + m.origin.len()
                + m.correlation_id.map_or(0, str::len)
                + m.reply_to.map_or(0, str::len);
            let headers: usize = m
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * FIELD)
                .sum();
            let trace: usize = m.trace.iter().map(|(name, _)| name.len() + 2 * FIELD).sum();
            16 * FIELD + strings + headers + trace + m.body.len()
        }
        Record::Remove(seqs) => 2 * FIELD + seqs.len() * FIELD,
        Record::ChannelSend(send) => 8 * FIELD + send.to.len() + send.assigned.len() * FIELD,
        Record::ChannelReceive(receive) => 8 * FIELD + receive.from.len() + receive.ids.len() * 19,
        Record::ChannelAssigned(assigned) => {
            4 * FIELD + assigned.to.len() + assigned.pairs.len() * 2 * FIELD
        }
        Record::Custody(custody) => custody
            .accepted
            .iter()
            .map(|(origin, destination, _)| origin.len() + destination.len() + 64 * FIELD)
            .sum(),
        Record::Kept(kept) => 4 * FIELD + kept.destination.len() + kept.pairs.len() * 2 * FIELD,
        Record::Subscriptions(list) => list
            .iter()
            .map(|s| s.name.len() + s.filter.len() + 3 * FIELD)
            .sum(),
    }
}

/// Decodes a payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Record<'_>, RecordError> {
    match payload.split_first() {
        None => Err(RecordError::Empty),
        Some((&version, rest))
            if (RECORD_FORMAT_VERSION_MIN..=RECORD_FORMAT_VERSION).contains(&version) =>
        {
            Ok(postcard::from_bytes(rest)?)
        }
        Some((&found, _)) => Err(RecordError::UnknownVersion { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage<'static> {
        StoredMessage {
            seq: 42,
            queue: "orders",
            id: 7 << 100,
            destination: "orders@charlie",
            origin: "alpha",
            put_at_ms: 1_700_000_000_000,
            expires_at_ms: Some(1_700_000_060_000),
            priority: 9,
            headers: vec![("customer", "c-17")],
            correlation_id: Some("req-1"),
            reply_to: None,
            trace: vec![("alpha", 1_700_000_000_000)],
            body: b"hello",
        }
    }

    #[test]
    fn records_round_trip() {
        for record in [
            Record::Enqueue(message()),
            Record::Remove(vec![1, 2, u64::MAX]),
            Record::ChannelSend(SendRecord {
                to: "bravo",
                epoch: 7,
                receiver_epoch: Some(9),
                next_seq: 12,
                assigned: vec![4, 5],
            }),
            Record::ChannelReceive(ReceiveRecord {
                from: "alpha",
                epoch: 3,
                sender_epoch: None,
                stored_up_to: 11,
                reconcile_until: 0,
                ids: vec![1, u128::MAX],
            }),
            Record::ChannelAssigned(AssignedRecord {
                to: "bravo",
                pairs: vec![(4, 9)],
            }),
        ] {
            assert_eq!(decode(&encode(&record)).unwrap(), record);
        }
    }

    #[test]
    fn version_1_payloads_still_decode() {
        let mut payload = encode(&Record::Enqueue(message()));
        payload[0] = 1;
        assert_eq!(decode(&payload).unwrap(), Record::Enqueue(message()));
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        let mut payload = encode(&Record::Remove(vec![1]));
        payload[0] = 9;
        assert!(matches!(
            decode(&payload),
            Err(RecordError::UnknownVersion { found: 9 })
        ));
        assert!(matches!(decode(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            decode(&[RECORD_FORMAT_VERSION, 0xff, 0xff]),
            Err(RecordError::Malformed(_))
        ));
        let full = encode(&Record::Enqueue(message()));
        for cut in 1..full.len() {
            assert!(
                decode(&full[..cut]).is_err(),
                "a record cut at {cut} decoded"
            );
        }
    }
}
