//! The manager's journal records: what a queue manager writes inside the store's opaque
//! payloads.
//!
//! Each payload is one format-version byte, then a postcard-encoded [`Record`]. Records borrow
//! from the payload when decoded, so replaying a journal copies no bodies.
//!
//! **API boundary:** this is an on-disk format. Variants and fields are only ever appended in a
//! new format version; a manager refuses a payload whose version it does not know.

use serde::{Deserialize, Serialize};

/// The record format this build writes and reads.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
    /// A message stored in a local queue (an application queue, a transmission queue, or the
    /// queue of messages held for lack of a route).
    #[serde(borrow)]
    Enqueue(StoredMessage<'a>),
    /// Messages removed for good, by seq: got, acked, expired, dead-lettered or moved.
    Remove(Vec<u64>),
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
    Malformed(#[from] postcard::Error),
}

/// Encodes `record` with its version byte.
pub fn encode(record: &Record<'_>) -> Vec<u8> {
    // A Vec sink cannot fail and every field type serialises; an error here is a bug.
    postcard::to_extend(record, vec![RECORD_FORMAT_VERSION])
        .unwrap_or_else(|e| unreachable!("records always serialise: {e}"))
}

/// Decodes a payload written by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Record<'_>, RecordError> {
    match payload.split_first() {
        None => Err(RecordError::Empty),
        Some((&RECORD_FORMAT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
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
        ] {
            assert_eq!(decode(&encode(&record)).unwrap(), record);
        }
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
