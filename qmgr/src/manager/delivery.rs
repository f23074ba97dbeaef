//! Conversions between what applications send and receive and what the journal stores.

use std::collections::BTreeMap;

use hopmq::MessageId;
use hopmq::protocol::{Delivery, DeliveryRef, FrameError, OutgoingMessage, encode_messages_reply};
use hopmq::report::REPORTS_HEADER;

use crate::queue::local::Entry;
use crate::record::{self, Record, RecordError, StoredMessage};

pub(crate) use hopmq::protocol::{DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER};

/// The prefix of the headers a manager adds to a dead letter.
const DEAD_LETTER_HEADER_PREFIX: &str = "hopmq.dead_letter_";

/// What is known about a new message besides the application's part.
pub(crate) struct Envelope<'a> {
    pub seq: u64,
    pub queue: &'a str,
    pub id: MessageId,
    pub destination: &'a str,
    pub origin: &'a str,
    pub put_at_ms: u64,
    /// The custody stamp of a message for another manager.
    pub stamp: Option<&'a str>,
}

/// The journal payload of a newly put message.
pub(crate) fn encode_put(envelope: &Envelope<'_>, message: &OutgoingMessage) -> Vec<u8> {
    let stored = StoredMessage {
        seq: envelope.seq,
        queue: envelope.queue,
        id: envelope.id.0,
        destination: envelope.destination,
        origin: envelope.origin,
        put_at_ms: envelope.put_at_ms,
        expires_at_ms: message
            .ttl_ms
            .map(|ttl| envelope.put_at_ms.saturating_add(ttl)),
        priority: message.priority,
        headers: headers(message, envelope.stamp),
        correlation_id: message.correlation_id.as_deref(),
        reply_to: message.reply_to.as_deref(),
        trace: vec![(envelope.origin, envelope.put_at_ms)],
        body: &message.body,
    };
    record::encode(&Record::Enqueue(stored))
}

/// A put message's headers, sorted by key, with its custody stamp among them.
fn headers<'a>(message: &'a OutgoingMessage, stamp: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut headers: Vec<(&str, &str)> = message
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(stamp) = stamp {
        crate::custody::insert_stamp(&mut headers, stamp);
    }
    headers
}

/// The payload of `payload`'s message moved to `queue` under `seq`, with extra headers.
pub(crate) fn encode_moved(
    payload: &[u8],
    queue: &str,
    seq: u64,
    extra_headers: &[(&str, &str)],
) -> Result<Vec<u8>, RecordError> {
    let mut stored = stored(payload)?;
    stored.queue = queue;
    stored.seq = seq;
    let mut headers: BTreeMap<&str, &str> = stored.headers.iter().copied().collect();
    headers.extend(extra_headers.iter().copied());
    stored.headers = headers.into_iter().collect();
    Ok(record::encode(&Record::Enqueue(stored)))
}

/// The payload of `payload`'s message asking for `reports` only (its `hopmq.reports` header
/// rewritten, or dropped if none is left), everything else unchanged.
pub(crate) fn encode_asking(
    payload: &[u8],
    reports: hopmq::Reports,
) -> Result<Vec<u8>, RecordError> {
    let mut stored = stored(payload)?;
    let asked = reports.to_string();
    stored.set_header(
        REPORTS_HEADER,
        (!reports.is_empty()).then_some(asked.as_str()),
    );
    Ok(record::encode(&Record::Enqueue(stored)))
}

/// The payload of `stored` moved by an operator to `queue` under `seq`, addressed to
/// `destination`; a `replay` leaves its dead-letter headers behind. Its custody headers are
/// replaced by `stamp` (a message leaving for another manager) or dropped.
pub(crate) fn encode_relocated(
    stored: &StoredMessage<'_>,
    (queue, seq): (&str, u64),
    destination: &str,
    replay: bool,
    stamp: Option<&str>,
) -> Vec<u8> {
    let mut stored = stored.clone();
    stored.queue = queue;
    stored.seq = seq;
    stored.destination = destination;
    stored.headers.retain(|(key, _)| {
        let dead_letter = replay && key.starts_with(DEAD_LETTER_HEADER_PREFIX);
        !dead_letter && !crate::custody::HEADERS.contains(key)
    });
    stored.set_header(crate::custody::STAMP_HEADER, stamp);
    record::encode(&Record::Enqueue(stored))
}

/// The payload of a message that arrived from a neighbour, stored in `queue` under `seq`: this
/// manager joins its trace, and `extra_headers` (a dead-letter reason) are added.
pub(crate) fn encode_arrived(
    stored: &StoredMessage<'_>,
    queue: &str,
    seq: u64,
    hop: (&str, u64),
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut stored = stored.clone();
    stored.queue = queue;
    stored.seq = seq;
    stored.trace.push(hop);
    if !extra_headers.is_empty() {
        let mut headers: BTreeMap<&str, &str> = stored.headers.iter().copied().collect();
        headers.extend(extra_headers.iter().copied());
        stored.headers = headers.into_iter().collect();
    }
    record::encode(&Record::Enqueue(stored))
}

/// The message in an enqueue payload.
pub(crate) fn stored(payload: &[u8]) -> Result<StoredMessage<'_>, RecordError> {
    match record::decode(payload)? {
        Record::Enqueue(stored) => Ok(stored),
        _ => Err(RecordError::Malformed(postcard::Error::DeserializeBadEnum)),
    }
}

/// Why a get's reply could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    #[error("cannot decode a queued message: {0}")]
    Decode(RecordError),
    #[error("the messages make too large a reply ({0}); ask for fewer")]
    TooLarge(FrameError),
}

// Not `#[from]`, which would make the cause the `source` too: the messages state it already.
impl From<RecordError> for ReplyError {
    fn from(error: RecordError) -> Self {
        Self::Decode(error)
    }
}

impl From<FrameError> for ReplyError {
    fn from(error: FrameError) -> Self {
        Self::TooLarge(error)
    }
}

/// The frame answering get request `request` with `messages`: each a payload, its entry, its
/// lease and whether it is persistent. What [`to_delivery`] would make of each, encoded
/// straight from the payloads' bytes instead of copied into owned values first.
pub(crate) fn messages_reply(
    request: u64,
    messages: &[(&[u8], &Entry, Option<u64>, bool)],
) -> Result<Vec<u8>, ReplyError> {
    let stored = messages
        .iter()
        .map(|(payload, ..)| stored(payload))
        .collect::<Result<Vec<_>, _>>()?;
    let deliveries: Vec<DeliveryRef<'_>> = stored
        .iter()
        .zip(messages)
        .map(|(stored, &(_, entry, lease, persistent))| DeliveryRef {
            id: MessageId(stored.id),
            body: stored.body,
            headers: &stored.headers,
            priority: stored.priority,
            expires_at_ms: stored.expires_at_ms,
            correlation_id: stored.correlation_id,
            reply_to: stored.reply_to,
            persistent,
            origin: stored.origin,
            delivery_count: entry.delivery_count,
            trace: &stored.trace,
            lease,
        })
        .collect();
    Ok(encode_messages_reply(request, &deliveries)?)
}

/// What an application receives for `entry`, whose payload is `payload`.
pub(crate) fn to_delivery(
    payload: &[u8],
    entry: &Entry,
    lease: Option<u64>,
    persistent: bool,
) -> Result<Delivery, RecordError> {
    Ok(delivery_of(
        &stored(payload)?,
        entry.delivery_count,
        lease,
        persistent,
    ))
}

/// What an application receives of `stored`, handed out for the `delivery_count`th time.
pub(crate) fn delivery_of(
    stored: &StoredMessage<'_>,
    delivery_count: u32,
    lease: Option<u64>,
    persistent: bool,
) -> Delivery {
    Delivery {
        id: MessageId(stored.id),
        body: stored.body.to_vec(),
        headers: stored
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        priority: stored.priority,
        expires_at_ms: stored.expires_at_ms,
        correlation_id: stored.correlation_id.map(str::to_owned),
        reply_to: stored.reply_to.map(str::to_owned),
        persistent,
        origin: stored.origin.to_owned(),
        delivery_count,
        trace: stored
            .trace
            .iter()
            .map(|(manager, at_ms)| hopmq::Trace {
                manager: manager.to_string(),
                at_ms: *at_ms,
            })
            .collect(),
        lease,
    }
}
