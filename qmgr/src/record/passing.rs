//! An `Enqueue` payload read and rewritten without decoding it whole: what a manager does to
//! every message that arrives from a neighbour, most of which it only passes on.
//!
//! [`Passing::read`] walks the payload once with postcard, allocating nothing, and keeps the
//! byte ranges of the parts an arrival leaves as they are; [`Passing::rewrite`] copies those
//! ranges around the few fields it changes (the queue, the seq, one more trace entry).
//!
//! Invariant: `rewrite` produces exactly the bytes [`super::encode`] makes of the same message
//! with those changes (a property test holds it to that), so the journal and the wire never
//! see a second format.

use std::ops::Range;

use super::{
    RECORD_FORMAT_VERSION, RECORD_FORMAT_VERSION_2, RECORD_FORMAT_VERSION_MIN, RecordError,
};

/// `Record::Enqueue`'s variant index: postcard writes it as a varint, one byte for 0.
const ENQUEUE_VARIANT: u8 = 0;

/// What an arrival needs to know of a message, and where the rest of it lies in its payload.
#[derive(Debug, Clone)]
pub struct Passing<'a> {
    /// Its id, assigned at its origin.
    pub id: u128,
    /// Where it is going.
    pub destination: &'a str,
    /// The manager where it was first put.
    pub origin: &'a str,
    /// Its custody stamp's header value, if it has one (see `crate::custody`).
    pub stamp: Option<&'a str>,
    /// How many times it was copied around a failure (its `hopmq.resent` header; 0 if none).
    pub resent: u32,
    /// When it expires, in milliseconds since the epoch.
    pub expires_at_ms: Option<u64>,
    /// 0 to 9.
    pub priority: u8,
    /// As put.
    pub correlation_id: Option<&'a str>,
    /// As put.
    pub reply_to: Option<&'a str>,
    /// The reports its put asked for (its `hopmq.reports` header), unparsed.
    pub reports: Option<&'a str>,
    /// Managers it has passed through (its trace's length).
    pub hops: usize,
    /// Bytes of its body.
    pub body_bytes: usize,
    payload: &'a [u8],
    /// From the id through `reply_to`: copied as they are.
    middle: Range<usize>,
    /// The trace's entries, after its length.
    trace: Range<usize>,
    /// The body with its length, to the end of the message.
    body: Range<usize>,
}

/// Reads one postcard value from the front of `rest`, moving `rest` past it.
fn take<'a, T: serde::Deserialize<'a>>(rest: &mut &'a [u8]) -> Result<T, RecordError> {
    let (value, after) = postcard::take_from_bytes::<T>(rest)?;
    *rest = after;
    Ok(value)
}

impl<'a> Passing<'a> {
    /// Reads an `Enqueue` payload; any other record, or bytes that do not decode, is an error.
    pub fn read(payload: &'a [u8]) -> Result<Self, RecordError> {
        let offset = |rest: &[u8]| payload.len() - rest.len();
        let mut rest = past_queue(payload)?;
        let middle_start = offset(rest);
        let id: u128 = take(&mut rest)?;
        let destination: &str = take(&mut rest)?;
        let origin: &str = take(&mut rest)?;
        let _put_at_ms: u64 = take(&mut rest)?;
        let expires_at_ms: Option<u64> = take(&mut rest)?;
        let priority: u8 = take(&mut rest)?;
        // Counts come from the bytes: each entry read consumes some, so a false count ends in
        // an error, never in a long loop or an allocation.
        let headers: u64 = take(&mut rest)?;
        let mut stamp = None;
        let mut resent = 0;
        let mut reports = None;
        for _ in 0..headers {
            let (key, value): (&str, &str) = take(&mut rest)?;
            if key == crate::custody::STAMP_HEADER {
                stamp = Some(value);
            } else if key == crate::custody::RESENT_HEADER {
                resent = value.parse().unwrap_or(0);
            } else if key == hopmq::report::REPORTS_HEADER {
                reports = Some(value);
            }
        }
        let correlation_id: Option<&str> = take(&mut rest)?;
        let reply_to: Option<&str> = take(&mut rest)?;
        let middle = middle_start..offset(rest);
        let hops: u64 = take(&mut rest)?;
        let trace_start = offset(rest);
        for _ in 0..hops {
            let _hop: (&str, u64) = take(&mut rest)?;
        }
        let trace = trace_start..offset(rest);
        let body_start = offset(rest);
        let body: &[u8] = take(&mut rest)?;
        let body_end = offset(rest);
        Ok(Self {
            id,
            destination,
            origin,
            stamp,
            resent,
            expires_at_ms,
            priority,
            correlation_id,
            reply_to,
            reports,
            hops: hops as usize,
            body_bytes: body.len(),
            payload,
            middle,
            trace,
            body: body_start..body_end,
        })
    }

    /// Its [`dedup_key`] once it has passed `more` managers besides those of its trace.
    ///
    /// A publication's copies share an id and may cross one link twice, each with its own
    /// share of the managers to reach (routes changed between them): its destination is mixed
    /// in, so a receiver that deduplicates by key never takes one share for the other.
    pub fn key(&self, more: usize) -> u128 {
        let key = dedup_key(self.id, self.hops + more)
            ^ u128::from(self.resent).wrapping_mul(0xD6E8_FEB8_6659_FD93_A5B4_3B5D_C3F1_D2C7);
        if self.destination.starts_with('#') {
            let share = crc32c::crc32c(self.destination.as_bytes());
            key ^ u128::from(share).wrapping_mul(0xA076_1D64_78BD_642F_E703_7ED1_A0B4_28DB)
        } else {
            key
        }
    }

    /// The payload of this message stored in `queue` under `seq`, with `hop` (this manager,
    /// and when it arrived) joined to its trace.
    pub fn rewrite(&self, queue: &str, seq: u64, hop: (&str, u64)) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + 10
                + 5
                + queue.len()
                + self.middle.len()
                + 10
                + self.trace.len()
                + 5
                + hop.0.len()
                + 10
                + self.body.len(),
        );
        out.push(RECORD_FORMAT_VERSION_2);
        out.push(ENQUEUE_VARIANT);
        // A Vec sink cannot fail and these types always serialise.
        let written = postcard::to_io(&(seq, queue), &mut out)
            .and_then(|out| {
                out.extend_from_slice(&self.payload[self.middle.clone()]);
                postcard::to_io(&(self.hops as u64 + 1), out)
            })
            .and_then(|out| {
                out.extend_from_slice(&self.payload[self.trace.clone()]);
                postcard::to_io(&hop, out)
            });
        if let Err(e) = written {
            unreachable!("an arrival always serialises: {e}");
        }
        out.extend_from_slice(&self.payload[self.body.clone()]);
        out
    }
}

/// The id of the message in an `Enqueue` payload, reading no further than it.
pub fn enqueue_id(payload: &[u8]) -> Result<u128, RecordError> {
    take(&mut past_queue(payload)?)
}

/// Where the message in an `Enqueue` payload is going, read no further than that.
pub fn enqueue_destination(payload: &[u8]) -> Result<&str, RecordError> {
    let mut rest = past_queue(payload)?;
    let _id: u128 = take(&mut rest)?;
    take(&mut rest)
}

/// What a channel deduplicates a message by: its id, mixed with how many managers it has
/// passed through (and, by [`Passing::key`], how many times custody copied it). A resend of
/// one stored copy carries the same key; a copy that comes back through a routing loop while
/// routes converge has a longer trace, and a copy custody made around a failure has another
/// count, hence another key: each is a message to pass on, not a duplicate to drop (its
/// destination drops second copies by their stamp). At its origin (no hops, never copied)
/// the key is the id.
pub fn dedup_key(id: u128, hops: usize) -> u128 {
    // An odd multiplier spreads the hop count over all 128 bits.
    id ^ (hops as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

/// The [`dedup_key`] of the message in an `Enqueue` payload.
pub fn enqueue_dedup_key(payload: &[u8]) -> Result<u128, RecordError> {
    Passing::read(payload).map(|passing| passing.key(0))
}

/// The rest of an `Enqueue` payload after its version, variant, seq and queue (the fields an
/// arrival replaces), which are checked.
fn past_queue(payload: &[u8]) -> Result<&[u8], RecordError> {
    let Some((&version, mut rest)) = payload.split_first() else {
        return Err(RecordError::Empty);
    };
    if !(RECORD_FORMAT_VERSION_MIN..=RECORD_FORMAT_VERSION).contains(&version) {
        return Err(RecordError::UnknownVersion { found: version });
    }
    if take::<u32>(&mut rest)? != u32::from(ENQUEUE_VARIANT) {
        return Err(RecordError::Malformed(postcard::Error::DeserializeBadEnum));
    }
    let _seq: u64 = take(&mut rest)?;
    let _queue: &str = take(&mut rest)?;
    Ok(rest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::super::{Record, StoredMessage, decode, encode};
    use super::*;

    fn strings() -> impl Strategy<Value = String> {
        "[a-z.@-]{0,70}"
    }

    #[test]
    fn a_looped_copy_has_another_dedup_key_and_a_resend_the_same() {
        let message = StoredMessage {
            seq: 1,
            queue: "hopmq.xmit.bravo",
            id: 42,
            destination: "orders@charlie",
            origin: "alpha",
            put_at_ms: 5,
            expires_at_ms: None,
            priority: 0,
            headers: vec![("k", "v")],
            correlation_id: None,
            reply_to: None,
            trace: Vec::new(),
            body: b"body",
        };
        let at_origin = encode(&Record::Enqueue(message.clone()));
        assert_eq!(
            enqueue_dedup_key(&at_origin).unwrap(),
            42,
            "the id at the origin"
        );
        let passing = Passing::read(&at_origin).unwrap();
        let once = passing.rewrite("hopmq.xmit.alpha", 7, ("bravo", 9));
        let looped = Passing::read(&once)
            .unwrap()
            .rewrite("hopmq.xmit.bravo", 8, ("alpha", 10));
        let key = |payload: &[u8]| enqueue_dedup_key(payload).unwrap();
        assert_ne!(key(&once), key(&at_origin));
        assert_ne!(key(&looped), key(&once));
        assert_ne!(key(&looped), key(&at_origin));
        assert_eq!(key(&once), dedup_key(42, 1));
        assert_eq!(key(&once.clone()), key(&once), "a resend of one copy");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn rewrite_is_what_encode_makes(
            seq in any::<u64>(),
            queue in strings(),
            id in any::<u128>(),
            destination in strings(),
            origin in strings(),
            put_at_ms in any::<u64>(),
            expires_at_ms in any::<Option<u64>>(),
            priority in any::<u8>(),
            headers in proptest::collection::vec((strings(), strings()), 0..4),
            correlation_id in proptest::option::of(strings()),
            reply_to in proptest::option::of(strings()),
            trace in proptest::collection::vec((strings(), any::<u64>()), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            new_queue in strings(),
            new_seq in any::<u64>(),
            hop in (strings(), any::<u64>()),
        ) {
            let message = StoredMessage {
                seq,
                queue: &queue,
                id,
                destination: &destination,
                origin: &origin,
                put_at_ms,
                expires_at_ms,
                priority,
                headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                correlation_id: correlation_id.as_deref(),
                reply_to: reply_to.as_deref(),
                trace: trace.iter().map(|(m, at)| (m.as_str(), *at)).collect(),
                body: &body,
            };
            let payload = encode(&Record::Enqueue(message.clone()));
            let passing = Passing::read(&payload).unwrap();
            prop_assert_eq!(passing.id, id);
            prop_assert_eq!(passing.destination, destination.as_str());
            prop_assert_eq!(passing.expires_at_ms, expires_at_ms);
            prop_assert_eq!(passing.priority, priority);
            prop_assert_eq!(passing.correlation_id, correlation_id.as_deref());
            prop_assert_eq!(passing.hops, trace.len());
            prop_assert_eq!(passing.body_bytes, body.len());
            prop_assert_eq!(enqueue_id(&payload).unwrap(), id);

            let mut expected = message;
            expected.queue = &new_queue;
            expected.seq = new_seq;
            expected.trace.push((hop.0.as_str(), hop.1));
            let rewritten = passing.rewrite(&new_queue, new_seq, (&hop.0, hop.1));
            prop_assert_eq!(&rewritten, &encode(&Record::Enqueue(expected.clone())));
            prop_assert_eq!(decode(&rewritten).unwrap(), Record::Enqueue(expected));

            // Every cut of the payload is refused, never misread.
            for cut in 0..payload.len() {
                prop_assert!(Passing::read(&payload[..cut]).is_err(), "cut at {}", cut);
            }
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Passing::read(&bytes);
            let _ = enqueue_id(&bytes);
        }
    }

    #[test]
    fn other_records_are_refused() {
        let payload = encode(&Record::Remove(vec![1, 2]));
        assert!(Passing::read(&payload).is_err());
        assert!(enqueue_id(&payload).is_err());
    }
}
